"""zope interfaces for the pluggable and process-crossing parts of omnirtp."""

from zope.interface import Attribute, Interface


class IMediaEngine(Interface):
    """The media plane as the control plane sees it.

    Implemented in-process by ``omnirtp.media.engine.EmbeddedEngine``
    (``num-threads = 0``) and across processes by
    ``omnirtp.media.pool.WorkerPool`` (``num-threads = N``), which runs one
    ``EmbeddedEngine`` per worker behind AMP.  Every method returns a
    ``Deferred``; values are plain data (str, int, bool, tuples, lists,
    dicts) so that they can cross a process boundary.

    A *socket key* is ``(local_address, local_port)``.  Ports come in pairs:
    an even RTP port ``p`` and the RTCP port ``p + 1``; both are bound.
    """

    def allocate(call_id, address, count):
        """Bind ``count`` RTP/RTCP port pairs on ``address`` for ``call_id``.

        Fires with a list of ``count`` even RTP ports.  Fails with
        ``omnirtp.errors.PortsExhausted`` if not enough pairs are free, in
        which case nothing of this request stays bound.  All ports of one
        call live in the same engine (worker).
        """

    def configure(call_id, sockets):
        """Set the forwarding of some of the call's sockets.

        ``sockets`` is a list of dicts, one per local socket::

            {"local": (addr, port),        # the socket this entry configures
             "peer": (addr, port) | None,  # local socket that packets received
                                           #   here are sent out of (None: drop)
             "rtcp_peer": (addr, port) | None,  # optional: where RTCP (PT
                                           #   192-223) received here goes
                                           #   instead (rtcp-mux on this side
                                           #   only)
             "endpoint": (addr, port) | None,  # where packets sent *from* this
                                           #   socket go: the party it faces,
                                           #   from that party's SDP
             "learning": "delayed" | "immediate" | "off" | "heuristic",
             "strict": bool,               # strict-source: drop other sources
             "handover": bool,             # media-handover: re-learn always
             "asymmetric": bool,           # never learn, always send to SDP
             "reset": bool,                # a signalling event: restart the
                                           #   learning window, last_packet=now
             "tos": int | None}            # optional: the TOS byte (IPv4) or
                                           #   traffic class (IPv6), 0-255, the
                                           #   socket and its companion send
                                           #   with (absent/None: unchanged)

        Fires with None.
        """

    def release(call_id, sockets=None):
        """Close and return to the pool the given RTP socket keys (each pair
        goes together) or, when ``sockets`` is None, every port of the call.
        Fires with None; releasing what is not held is not an error."""

    def stats(call_id=None):
        """Fire with ``{call_id: {(addr, port): counters}}`` for one call
        (or all calls when None).  ``counters`` is a dict with ``packets``,
        ``bytes``, ``errors`` (ingress, as rtpengine counts a stream;
        datagrams not forwarded are counted in errors), ``last_packet`` (unix time float of
        the last ingress packet, or of the last reset), ``endpoint``
        ((addr, port) currently sent to, or None) and ``confirmed`` (bool)."""

    def totals():
        """Fire with engine-wide counters: ``{"packets", "bytes", "errors",
        "junk", "ports_used", "ports_free"}`` (``junk``: datagrams dropped on
        media ports because they were not RTP/RTCP or came from nowhere
        known)."""


class IStateStore(Interface):
    """Where the call registry keeps serialised calls (memory, Redis)."""

    def save(call_id, blob):
        """Store ``blob`` (bytes) for ``call_id``."""

    def delete(call_id):
        """Forget ``call_id``."""

    def load_all():
        """Fire with ``{call_id: blob}``."""


class ICodecFactory(Interface):
    """A codec the transcoder can build (a later issue fills this in)."""

    encoding = Attribute("rtpmap encoding name, lower-case, e.g. 'pcmu'")
    clock_rate = Attribute("RTP clock rate in Hz")

    def available():
        """Return None if usable, else a one-line reason."""

    def build(fmtp):
        """Return a fresh codec object for one stream."""
