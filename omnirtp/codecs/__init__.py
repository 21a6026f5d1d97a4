"""The codecs the transcoder can use: ``ICodecFactory`` plugins.

Factories are module-level instances in modules of ``omnirtp.plugins``
(``omnirtp/plugins/g711.py``, ...), found with
``twisted.plugin.getPlugins(ICodecFactory, omnirtp.plugins)``, so a third
party adds a codec by dropping a module into an ``omnirtp/plugins``
directory on ``sys.path``.  Discovery runs once per process, when
:func:`registry` or :func:`unavailable` is first called; a codec whose
library is missing is logged once then and never offered.

* :func:`registry` ``{(encoding, clock_rate, channels): factory}`` of the
  usable codecs (encoding lower-case, as in the rtpmap; G.722 is
  ``("g722", 8000, 1)``, Opus ``("opus", 48000, 2)``);
* :func:`unavailable` ``{encoding: reason}`` of the others.
"""

from twisted.logger import Logger
from twisted.plugin import getPlugins

from omnirtp.interfaces import ICodecFactory

log = Logger()

_found = None


def discover(package=None):
    """``(usable, unusable)`` as :func:`registry` and :func:`unavailable`
    give them, for the plugins of ``package`` (default ``omnirtp.plugins``),
    looked up now (not cached).  The first factory of a key wins; later
    ones are logged and ignored.  A factory whose ``available()`` raises
    counts as unavailable with that error as its reason."""
    if package is None:
        import omnirtp.plugins as package
    usable = {}
    unusable = {}
    for factory in getPlugins(ICodecFactory, package):
        try:
            key = (str(factory.encoding).lower(), int(factory.clock_rate), int(factory.channels))
        except Exception as e:
            log.warn("codec plugin {factory!r} ignored: {error}", factory=factory, error=e)
            continue
        if key in usable:
            log.info("codec plugin {factory!r}: {key} is already provided; ignored",
                     factory=factory, key=key)
            continue
        try:
            reason = factory.available()
        except Exception as e:
            reason = "%s: %s" % (type(e).__name__, e)
        if reason is None:
            usable[key] = factory
            unusable.pop(key[0], None)
        elif not any(k[0] == key[0] for k in usable):
            unusable[key[0]] = str(reason)
    for name, reason in sorted(unusable.items()):
        log.info("codec {name}: unavailable ({reason}); it is not offered",
                 name=name, reason=reason)
    return usable, unusable


def _discovered():
    global _found
    if _found is None:
        _found = discover()
    return _found


def registry():
    """``{(encoding, clock_rate, channels): ICodecFactory}`` of the codecs
    usable in this process (discovered once; a copy)."""
    return dict(_discovered()[0])


def unavailable():
    """``{encoding: reason}`` of the codec plugins that cannot be used here
    (their library is missing); discovered once, a copy."""
    return dict(_discovered()[1])


def lookup(encoding, clock_rate, channels=1):
    """The usable factory for an rtpmap, or None."""
    return _discovered()[0].get((encoding.lower(), clock_rate, channels))


def rtpmap(key):
    """``("opus", 48000, 2)`` -> ``"opus/48000/2"``; ``("pcmu", 8000, 1)`` -> ``"pcmu/8000"``."""
    encoding, clock, channels = key
    text = "%s/%d" % (encoding, clock)
    return text + ("/%d" % channels if channels != 1 else "")


def statistics():
    """Plain data for the ng ``statistics`` reply: ``{"available":
    [rtpmap, ...], "unavailable": {encoding: reason}}`` (sorted)."""
    return {"available": sorted(rtpmap(key) for key in registry()),
            "unavailable": unavailable()}


def report():
    """Discover the codecs now (the daemon calls this at start, so a
    missing library is logged once then) and log one line of what is
    usable; returns :func:`statistics`."""
    stats = statistics()
    log.info("codecs for transcoding: {available}",
             available=", ".join(stats["available"]) or "none")
    return stats
