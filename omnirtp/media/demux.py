"""The non-RTP datagrams of a media socket, routed by their first byte.

RFC 7983 (updating RFC 5764 §5.1.2) tells the protocols sharing a media
port apart by the first byte of a datagram:

    0-3      STUN (ICE connectivity checks, consent freshness)
    20-63    DTLS (the DTLS-SRTP handshake)
    128-191  RTP / RTCP (the relay handles these itself)

A :class:`Demux` is set as ``RelaySocket.other``, which the relay calls
with ``(relay, data, source)`` for every datagram that is not RTP/RTCP.  It
hands STUN to its ``stun`` handler and DTLS to its ``dtls`` handler
(``IDatagramHandler``: ``datagram(data, source)``), and counts everything
else, or a datagram whose handler is not set, as junk on the socket, as the
relay does without a demultiplexer.  No ICE or DTLS logic lives here
(``omnirtp.media.ice``, ``omnirtp.media.dtls``); the handlers send through
``RelaySocket.send(data, address)`` / ``send_endpoint(data)``, given to them
when they are built.

A handler must not raise; if one does, the datagram is counted in the
socket's ``errors`` and in :attr:`Demux.failures`, and only the first such
failure of a demultiplexer is logged (never one line per packet).
"""

from twisted.logger import Logger

#: first-byte ranges of RFC 7983 (inclusive)
STUN_FIRST = (0, 3)
DTLS_FIRST = (20, 63)

#: what :func:`classify` returns
STUN = "stun"
DTLS = "dtls"
OTHER = None


def classify(data):
    """``STUN``, ``DTLS`` or ``OTHER`` (None) for a datagram, by its first
    byte (RFC 7983).  An empty datagram is ``OTHER``."""
    if not data:
        return OTHER
    first = data[0]
    if first <= STUN_FIRST[1]:
        return STUN
    if DTLS_FIRST[0] <= first <= DTLS_FIRST[1]:
        return DTLS
    return OTHER


class Demux:
    """Routes a socket's STUN and DTLS datagrams to their handlers.

    ``stun`` and ``dtls`` are ``IDatagramHandler`` providers or None; they
    may be set or replaced at any time (off the packet path).  Counters:
    ``stun_packets``, ``dtls_packets`` (handed on), ``failures`` (a handler
    raised).
    """

    __slots__ = ("stun", "dtls", "stun_packets", "dtls_packets", "failures")

    log = Logger()

    def __init__(self, stun=None, dtls=None):
        self.stun = stun
        self.dtls = dtls
        self.stun_packets = 0
        self.dtls_packets = 0
        self.failures = 0

    def attach(self, relay):
        """Become ``relay.other``; returns self."""
        relay.other = self
        return self

    def __call__(self, relay, data, source):
        first = data[0] if data else 255
        if first < 4:
            handler = self.stun
            if handler is not None:
                self.stun_packets += 1
        elif 19 < first < 64:
            handler = self.dtls
            if handler is not None:
                self.dtls_packets += 1
        else:
            handler = None
        if handler is None:
            relay.junk += 1
            relay.errors += 1
            return
        try:
            handler.datagram(data, source)
        except Exception:
            relay.errors += 1
            self.failures += 1
            if self.failures == 1:
                self.log.failure(
                    "datagram handler {handler!r} failed on {local}; further failures "
                    "of this socket are only counted",
                    handler=handler,
                    local=relay.local,
                )

    def counters(self):
        """Plain-data counters."""
        return {
            "stun": self.stun_packets,
            "dtls": self.dtls_packets,
            "failures": self.failures,
        }
