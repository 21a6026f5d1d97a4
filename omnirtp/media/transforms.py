"""Finding the packet transforms (``ITransformFactory`` plugins).

The factories are plugins in the ``omnirtp.plugins`` package, found with
``twisted.plugin.getPlugins`` once per engine, when it first needs one (a
plain-RTP engine never looks).  :func:`discover` returns them as a plain
dict keyed by ``kind``; the engine builds each socket's steps from it (see
``EmbeddedEngine`` and ``RelaySocket.update_pipeline``).
"""

from twisted.logger import Logger
from twisted.plugin import getPlugins

from omnirtp.interfaces import ITransformFactory

log = Logger()


def discover(package=None):
    """``(usable, unusable)``: ``{kind: factory}`` of the available
    ``ITransformFactory`` plugins in ``package`` (default
    ``omnirtp.plugins``) and ``{kind: reason}`` of those that are not
    (``available()`` gave a reason).  The first factory of a kind wins; a
    duplicate is logged once and ignored."""
    if package is None:
        import omnirtp.plugins as package
    usable = {}
    unusable = {}
    for factory in getPlugins(ITransformFactory, package):
        kind = factory.kind
        if kind in usable or kind in unusable:
            log.info("transform plugin {factory!r}: kind {kind} is already provided; ignored",
                     factory=factory, kind=kind)
            continue
        reason = factory.available()
        if reason is None:
            usable[kind] = factory
        else:
            unusable[kind] = reason
            log.info("transform {kind}: unavailable ({reason})", kind=kind, reason=reason)
    return usable, unusable
