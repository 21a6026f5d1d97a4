"""The media hot path: UDP sockets that read datagrams and forward them.

Not ``twisted.internet.udp.Port``: the stock port loops ``recvfrom`` until
``EAGAIN`` (a failing syscall plus an exception on every wakeup, while a
media socket at 50 packets/s almost never has a second datagram waiting)
and wraps every datagram in ``try/except`` and a protocol call.  In the
engine, all :class:`RelaySocket` objects are read through one
:class:`MediaPoller` (an epoll of their own, a single reader on the
reactor): one read per readiness event, each datagram handled in place (a
constant-time RTP/RTCP check, the source policy, plain integer counters,
one send, with no Twisted dispatch in between).  A socket whose endpoint carries media also has a
connected companion socket (SO_REUSEPORT; made at the endpoint's first
datagram, not at set-up) that carries the endpoint's traffic (``os.read`` and
``os.write``); the poller relays its datagrams inline while the endpoint is
confirmed (see :class:`MediaPoller`).  Without a poller (the unit tests'
fake sockets) a RelaySocket is itself an ``IReadDescriptor`` on the reactor
and reads one datagram, or up to :data:`READ_BATCH` once it showed a
backlog.  No logging, dicts, string formatting or control-plane work
happens per packet.

A socket faces one party.  ``endpoint`` is that party's address: packets
*from* it arrive here and packets *to* it are sent from here.  A packet
received here is sent out of ``peer`` (the socket facing the other party)
to ``peer.endpoint``.  How ``endpoint`` follows the source of received
packets is the learning policy (ng-spec §3.10); see :meth:`RelaySocket._learn`.

Transforms (SRTP, a recording tap, a transcoder) are steps a socket
owns (``inbound``, ``middle``, ``outbound``); a socket whose packets run any
step has a ``pipeline`` and leaves the plain fast paths: ``_out`` stays -1
and its companion is served by :meth:`RelaySocket._piped` instead (the
native SRTP path: libsrtp on one shared buffer, everything else to
:meth:`RelaySocket.connected`), and ``_forward`` tests that one slot before
its plain code, so a plain socket pays a single attribute test on the full
path.  The one exception is a recording tap alone (``_tap``): that socket
keeps the inline path, where the poller hands each datagram to the tap's
``sink`` (omnirtp.recording.writer); a plain socket pays one slot test for
it there.  A chain with a fan-out step (``fan_out``: a transcoder or
repacketiser that gives 0..N packets for one, to the receiver's ptime) is
served by :meth:`RelaySocket._stepped_fan` / :meth:`RelaySocket._forward_fan`
instead; no other path changes for it.  See
:meth:`RelaySocket.update_pipeline` and docs/architecture.md.
"""

import _socket
import os
import select
import socket
import struct
import time

from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from omnirtp.media.rtcp import reports as rtcp_reports

# ng / rtpengine learning mode names
LEARN_DELAYED = "delayed"
LEARN_IMMEDIATE = "immediate"
LEARN_OFF = "off"
LEARN_HEURISTIC = "heuristic"
LEARNING_MODES = frozenset((LEARN_DELAYED, LEARN_IMMEDIATE, LEARN_OFF, LEARN_HEURISTIC))

#: seconds after a signalling reset during which the endpoint follows sources
LEARNING_WINDOW = 3.0

#: source ranks for heuristic learning
RANK_NONE = -1  # nothing seen since the last reset
RANK_ANY = 0  # unrelated address and port
RANK_PORT = 1  # the SDP port on another address
RANK_ADDRESS = 2  # the SDP address on another port
RANK_EXACT = 3  # exactly the SDP address and port

_log = Logger(namespace="omnirtp.media.relay")

#: largest datagram read; longer ones are truncated by the kernel
RECV_SIZE = 8192

#: the longest wait of a media worker's loop, in seconds: epoll_wait's
#: timeout is a C int of milliseconds (the reactor's own limit)
TIMEOUT_MAX = 2147483
#: datagrams read per wakeup at most when a socket has a backlog
#: (see RelaySocket.doRead and bench/README.md for the choice)
READ_BATCH = 8

#: datagrams a socket reads at most, in the same call, after it connected a
#: companion to a new endpoint: those queued before the connect
DRAIN_BATCH = 64

#: minimum lengths: RTP fixed header, RTCP common header + SSRC
RTP_MIN = 12
RTCP_MIN = 8

#: a 32-bit SSRC at an offset (RTP: 8, RTCP: 4)
_ssrc_at = struct.Struct("!I").unpack_from

#: payload types a Track counts (the first ones seen; more are not counted)
TRACK_PTS = 8

# a connected companion is read and written with os.read / os.write: one
# datagram each, like recv / send, with cheaper argument handling
_read = os.read
_write = os.write
_readv = os.readv

# the wait and the inline path of MediaPoller in C (see MediaPoller); where
# it is not built, MediaPoller does the same in Python
try:
    from omnirtp.media import _fastrelay
except ImportError as e:  # pragma: no cover - built by `make ext`
    _fastrelay = None
    #: logged once at the daemon's start (service._RegistryService)
    FAST_MISSING = ("omnirtp.media._fastrelay is not built (%s): the media loop runs in "
                    "Python, at several times the CPU per datagram (build it: python3 "
                    "setup.py build_ext --inplace, with gcc and python3-dev)" % (e,))
else:
    FAST_MISSING = None

#: the longest datagram the native SRTP path (RelaySocket._piped) takes;
#: longer ones take the generic pipeline (the same as srtp.NATIVE_MAX)
NATIVE_MAX = 1500 - 148


def socket_family(address):
    """``AF_INET6`` if ``address`` is an IPv6 literal, else ``AF_INET``."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


_SOCK_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)
_MEDIA_TYPE = socket.SOCK_DGRAM | _SOCK_NONBLOCK
_socket_type = _socket.socket


def bind_udp(address, port, reuse_port=False):
    """Return a non-blocking UDP socket bound to ``(address, port)``."""
    # non-blocking from the start (SOCK_NONBLOCK: no ioctl after socket())
    sock = socket.socket(socket_family(address), socket.SOCK_DGRAM | _SOCK_NONBLOCK)
    try:
        if not _SOCK_NONBLOCK:
            sock.setblocking(False)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def apply_tos(sock, tos, v6):
    """Set the TOS byte (IPv4 ``IP_TOS``) or traffic class (IPv6
    ``IPV6_TCLASS``) of the datagrams ``sock`` sends to ``tos`` (0-255)."""
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)


#: SO_INCOMING_CPU (Linux 3.19; Python names it from 3.11 on)
SO_INCOMING_CPU = getattr(socket, "SO_INCOMING_CPU", 49)


def apply_cpu(sock, cpu):
    """Set ``sock``'s SO_INCOMING_CPU to ``cpu`` (``socket-cpu-affinity``)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_INCOMING_CPU, cpu)


def bind_media(address, port):
    """A media socket for ``(address, port)`` that a connected companion can
    join (SO_REUSEPORT).  The socket is bound without SO_REUSEPORT, so a
    port that anyone else holds, another omnirtp included, fails as usual;
    SO_REUSEPORT is set on it only when its first companion is bound
    (:func:`allow_companions`, from :meth:`RelaySocket._sync_companion`:
    Linux lets a later socket with SO_REUSEPORT join a bound one that has
    it set), so each port is bound once and a call that never carries media
    costs no ``setsockopt`` per socket.  A ``_socket.socket``, the C type
    ``socket.socket`` wraps (the same calls; no Python ``__init__`` and
    ``close`` per socket), made non-blocking by ``socket()`` itself."""
    sock = _socket_type(socket.AF_INET6 if ":" in address else socket.AF_INET, _MEDIA_TYPE)
    try:
        if not _SOCK_NONBLOCK:
            sock.setblocking(False)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def allow_companions(sock):
    """Set SO_REUSEPORT on ``sock``, a bound media socket
    (:func:`bind_media`), so that a companion (:func:`bind_companion`) can
    bind its address: once per companion made, never per packet."""
    sock.setsockopt(_SOL_SOCKET, _SO_REUSEPORT, 1)


_SOL_SOCKET = socket.SOL_SOCKET
_SO_REUSEPORT = socket.SO_REUSEPORT


def bind_pair(bind, address, port):
    """``(rtp, rtcp)``: ``bind(address, port)`` and ``bind(address, port +
    1)``, the first closed again if the second fails."""
    rtp = bind(address, port)
    try:
        rtcp = bind(address, port + 1)
    except BaseException:
        rtp.close()
        raise
    return rtp, rtcp


def bind_companion(address, port):
    """A companion for the media socket of ``(address, port)``: another
    socket bound there with SO_REUSEPORT (see :func:`bind_media`)."""
    return bind_udp(address, port, reuse_port=True)


class PyTrack:
    """``omnirtp.media._fastrelay.Track`` in Python, where the extension is
    not built: what query and ``list sessions`` show of a stream (see
    :attr:`RelaySocket.track`)."""

    __slots__ = ("ssrc", "rtcp_ssrc", "counts", "rtcp_socket")

    def __init__(self, rtcp_socket=False):
        self.ssrc = None
        self.rtcp_ssrc = None
        self.counts = {}
        self.rtcp_socket = rtcp_socket

    def note(self, data):
        """Keep a counted datagram's SSRC and payload type: RTCP (an RTCP
        socket's datagrams, or PT 192-223) its sender SSRC (an RTCP
        socket's as ``ssrc``), RTP its SSRC and a packet of its payload
        type (the first :data:`TRACK_PTS` types seen are counted)."""
        n = len(data)
        pt = data[1]
        rtcp_socket = self.rtcp_socket
        if n >= RTCP_MIN and (rtcp_socket or 191 < pt < 224):
            if rtcp_socket:
                self.ssrc = _ssrc_at(data, 4)[0]
            else:
                self.rtcp_ssrc = _ssrc_at(data, 4)[0]
        elif n >= RTP_MIN:
            self.ssrc = _ssrc_at(data, 8)[0]
            counts = self.counts
            pt &= 127
            if pt in counts:
                counts[pt] += 1
            elif len(counts) < TRACK_PTS:
                counts[pt] = 1

    def state(self):
        """``(ssrc or None, rtcp_ssrc or None, {payload type: packets})``."""
        return self.ssrc, self.rtcp_ssrc, dict(self.counts)


@implementer(IReadDescriptor)
class RelaySocket:
    """A bound UDP socket that relays RTP or RTCP to its peer socket.

    ``reactor`` must provide ``addReader``/``removeReader`` and ``seconds``
    (the clock for the learning window and ``last_packet``); ``sock`` is a
    bound, non-blocking socket (or a fake with ``fileno``, ``recvfrom``,
    ``sendto`` and ``close``); ``local`` is its ``(address, port)`` key.

    ``rtcp`` True makes it the RTCP socket of a port pair (``p + 1``; the
    engine sets its ``rtp_sibling``): its datagrams never take the
    poller's inline path (``_out`` stays -1), so that each is seen in
    :meth:`_forward`, where the party's reports are kept
    (:meth:`observe_rtcp`).  RTCP is a few datagrams per second per
    stream, so the Python call it costs is nothing beside the RTP it
    describes.  With a pipeline (SRTCP) the reports are observed in the
    pipeline, once unprotected.  One class for both sockets of a pair, not
    a subclass for RTCP: each attribute access of the methods both run
    (set-up, configure, close, the Python paths) stays specialised to one
    type (CPython 3.11+ specialises per type; RTP and RTCP sockets taking
    turns at one site cost about 1.7x: docs/performance.md, "Eleventh
    pass").
    """

    __slots__ = (
        # wiring
        "local",
        "bound",
        "peer",
        "rtcp_peer",
        "other",
        "_sock",
        "_fd",
        "_recvfrom",
        "_sendto",
        "_reactor",
        "_poller",
        "_companion",
        "_conn",
        "_conn_ep",
        "_cfd",
        "_out",
        "_sout",
        "_pout",
        "_chain",
        "_fan",
        "_tap",
        "_feeders",
        "_seconds",
        "_v6",
        "_more",
        "reading",
        "tos",
        "cpu",
        # transforms (see update_pipeline)
        "inbound",
        "middle",
        "outbound",
        "pipeline",
        # source policy
        "endpoint",
        "sdp_endpoint",
        "learning",
        "strict",
        "handover",
        "asymmetric",
        "confirmed",
        "window_end",
        "best_rank",
        "authorise",
        "rtp_sibling",
        "is_rtcp",
        # counters
        "packets",
        "bytes",
        "errors",
        "junk",
        "last_packet",
        # what query and list sessions show of the stream (track.note, _new_track)
        "track",
        # the party's latest RTCP report with blocks (observe_rtcp)
        "rtcp_last",
        "rtcp_report",
    )

    def __init__(self, reactor, sock, local, poller=None, companion=None, rtcp=False):
        self.local = local
        #: the ``(address, port)`` the socket read and written is bound to:
        #: ``local`` unless :meth:`rebase` gave this socket another's (ICE
        #: on an interface's other address); its companion binds this
        self.bound = local
        #: the RTCP socket of a port pair (see the class docstring)
        self.is_rtcp = rtcp
        #: a :class:`MediaPoller` to read through instead of registering
        #: with the reactor directly (None: ``reactor.addReader``)
        self._poller = poller
        #: ``companion(address, port)`` binds another SO_REUSEPORT socket
        #: to ``local`` (one function for all sockets, e.g.
        #: :func:`bind_companion`, not a closure each); connected to the
        #: endpoint it carries the endpoint's traffic both ways (see
        #: :meth:`_sync_companion`).  None: no companion.
        self._companion = companion if poller is not None else None
        self._conn = None
        self._conn_ep = None
        #: the connected companion's file descriptor, -1 without one
        self._cfd = -1
        #: where the poller's inline path writes what the companion reads:
        #: the peer's companion while this endpoint is confirmed, no RTCP is
        #: split off, the peer has a companion and there is no pipeline (or
        #: only a recording tap, ``_tap``); else -1 (the full path,
        #: :meth:`connected`).  Kept by :meth:`_update_out`.
        self._out = -1
        #: the native path of a socket with a pipeline (see :meth:`_piped`):
        #: ``_chain`` is None or ``(cdata, length, view, [view[:RECV_SIZE]],
        #: calls)`` (the shared native buffer of ``omnirtp.media.srtp``, the
        #: list ``os.readv`` reads into) when every
        #: step of the RTP chain has a native libsrtp call (``calls``:
        #: ``((function, srtp_t, step), ...)``, the steps' ``native_rtp``);
        #: ``_sout`` is the peer's companion while the endpoint is confirmed
        #: and there is a ``_chain``, else -1.  Kept by :meth:`_update_out`.
        self._sout = -1
        self._chain = None
        #: the same for a pipeline without a native chain (a step in
        #: Python, e.g. a transcoder): the peer's companion while the
        #: endpoint is confirmed, else -1 (:meth:`_stepped`)
        self._pout = -1
        #: None, or for an RTP chain with a fan-out step (one that may give
        #: 0..N packets for one, a transcoder repacketising):
        #: ``(head, fan, tail)``, the bound ``rtp`` methods of the steps
        #: before it, its own, and those after it (the peer's outbound
        #: steps).  Such a socket's companion is served by
        #: :meth:`_stepped_fan` and its full path goes through
        #: :meth:`_forward_fan`; every other socket keeps its paths as they
        #: are.  Kept by :meth:`update_pipeline`.
        self._fan = None
        #: the recording tap when it is the only step of both chains (a
        #: recorded plain socket), else None: such a socket keeps the
        #: inline path (``_out``), where the poller hands what it relays to
        #: the tap's ``sink`` with the tap's ``inline_flow`` (kept by
        #: ``tap.follow(address)`` whenever the companion's address
        #: changes); see :meth:`MediaPoller.doRead`
        self._tap = None
        #: the sockets whose ``peer`` this is (their ``_out`` follows ours)
        self._feeders = []
        self.peer = None
        #: where RTCP (PT 192-223) received here goes instead of ``peer``:
        #: set when this side multiplexes RTCP on its RTP port (rtcp-mux)
        #: and the other side does not
        self.rtcp_peer = None
        #: called as ``other(relay, data, source)`` for datagrams that are not
        #: RTP/RTCP (STUN, DTLS) instead of counting them as junk; None: junk
        self.other = None
        #: IPacketTransform steps this socket owns: ``inbound`` for what it
        #: receives from its party (SRTP unprotect), ``middle`` for what it
        #: receives once plain (a recording tap, a transcoder), ``outbound``
        #: for what it sends to its party (SRTP protect)
        self.inbound = ()
        self.middle = ()
        self.outbound = ()
        #: None (plain: the fast paths) or the chains a received packet runs,
        #: ``(rtp_steps, rtcp_steps)``: tuples of the steps' bound ``rtp`` /
        #: ``rtcp`` methods.  Kept by :meth:`update_pipeline`.
        self.pipeline = None
        self._sock = sock
        self._fd = sock.fileno()
        self._recvfrom = sock.recvfrom
        self._sendto = sock.sendto
        self._reactor = reactor
        self._seconds = reactor.seconds
        self._v6 = ":" in local[0]
        self._more = False
        self.reading = False
        #: the TOS byte / traffic class this socket and its companion send
        #: with (:meth:`set_tos`); 0, the kernel's default, until set
        self.tos = 0
        #: the SO_INCOMING_CPU this socket and its companion were given
        #: (:meth:`set_cpu`, option ``socket-cpu-affinity``); -1: none
        self.cpu = -1
        # (the clock read as a slot and called: ``self._seconds()`` is a
        # method call's look-up, which 3.11 does not specialise for a slot)
        seconds = self._seconds
        now = seconds()
        self.endpoint = None
        self.sdp_endpoint = None
        self.learning = LEARN_DELAYED
        self.strict = False
        self.handover = False
        self.asymmetric = False
        self.confirmed = False
        self.window_end = now + LEARNING_WINDOW
        self.best_rank = RANK_NONE
        #: None (the learning policy decides) or an outside authority over
        #: the sources this socket accepts, ``authorise(address) -> bool``
        #: (ICE): then the socket never learns, its endpoint is what
        #: :meth:`select` sets, and a packet from any other source is
        #: forwarded only if ``authorise`` accepts it.  Set by the engine.
        self.authorise = None
        #: for an RTCP socket: the RTP socket of the same party (same pair),
        #: whose learnt source it may latch to (see :meth:`_party`); None
        #: for an RTP socket
        self.rtp_sibling = None
        self.packets = 0
        self.bytes = 0
        self.errors = 0
        self.junk = 0
        self.last_packet = now
        #: None until the first counted datagram, then a Track (the C
        #: loop's ``_fastrelay.Track``, else :class:`PyTrack`): the SSRC of
        #: the last RTP datagram received here (an RTCP socket's: the
        #: sender SSRC of its last RTCP datagram), the sender SSRC of the
        #: last RTCP datagram an RTP socket received (rtcp-mux), RTP
        #: datagrams per payload type (:meth:`_new_track`; the C inline path
        #: writes into the same object)
        self.track = None
        #: the party's latest RTCP compound that opens with an SR/RR with
        #: report blocks, not parsed yet (:meth:`observe_rtcp`), and the
        #: latest such report parsed (an ``omnirtp.media.rtcp.Report``;
        #: None: none yet; :meth:`latest_report`)
        self.rtcp_last = None
        self.rtcp_report = None

    def __repr__(self):
        return "<RelaySocket %s:%d endpoint=%r confirmed=%r>" % (
            self.local[0],
            self.local[1],
            self.endpoint,
            self.confirmed,
        )

    # -- control side -----------------------------------------------------

    def configure(
        self,
        peer=None,
        endpoint=None,
        rtcp_peer=None,
        learning=LEARN_DELAYED,
        strict=False,
        handover=False,
        asymmetric=False,
        reset=False,
        tos=None,
    ):
        """Set forwarding and source policy (off the hot path).

        ``peer`` is the :class:`RelaySocket` packets received here are sent
        out of (None: drop them); ``endpoint`` the party's address from its
        SDP.  ``reset`` marks a signalling event: learning starts over with a
        new window and ``last_packet`` becomes now.  ``tos`` (0-255, None:
        unchanged) is passed to :meth:`set_tos`.
        """
        if learning not in LEARNING_MODES:
            raise ValueError(
                "learning mode %r is not one of %s" % (learning, ", ".join(sorted(LEARNING_MODES)))
            )
        if endpoint is not None:
            endpoint = (str(endpoint[0]), int(endpoint[1]))
        self.apply(peer, endpoint, rtcp_peer, learning, bool(strict), bool(handover),
                   bool(asymmetric), reset, tos)

    def apply(self, peer, endpoint, rtcp_peer, learning, strict, handover, asymmetric, reset,
              tos, update=True):
        """:meth:`configure` with its arguments checked and in their
        final form already (all given, in its order: ``endpoint`` None or
        an ``(str, int)`` tuple, ``learning`` one of
        :data:`LEARNING_MODES`, the flags bools, ``tos`` None or 0-255):
        what the engine calls for each entry it validated.  With
        ``update`` False the pipeline is not recomputed: True is returned
        if it needs to be (the caller calls :meth:`update_pipeline` once
        it has set every socket's steps)."""
        skipped = False
        if tos is not None and tos != self.tos:
            self.set_tos(tos)
        if self.peer is not peer:
            self._set_peer(peer)
        self.rtcp_peer = rtcp_peer
        # no step on either chain and none before (a plain call): what
        # update_pipeline would do comes down to _update_out, done below
        # (RTCP goes out of rtcp_peer when there is one, else out of peer)
        if (self.pipeline is not None or self.inbound or self.middle
                or (peer is not None and peer.outbound)
                or (rtcp_peer is not None and rtcp_peer.outbound)):
            if update:
                self.update_pipeline()
            else:
                skipped = True
        ice = self.authorise is not None
        # under an authority (ICE) the socket never learns: see _policy
        self.learning = LEARN_OFF if ice else learning
        self.strict = strict
        self.handover = handover
        self.asymmetric = asymmetric
        changed = endpoint != self.sdp_endpoint
        self.sdp_endpoint = endpoint
        if reset:
            seconds = self._seconds  # (a slot read, then called: see __init__)
            now = seconds()
            self.window_end = now + LEARNING_WINDOW
            self.last_packet = now
        if ice:
            pass  # the endpoint is the one the authority selected (select)
        elif reset:
            self.confirmed = False
            self.best_rank = RANK_NONE
            self.endpoint = endpoint
        elif changed or self.endpoint is None or asymmetric or learning == LEARN_OFF:
            self.endpoint = endpoint
        # a companion that exists follows the endpoint; a new one is made
        # when it is first needed (see _sync_companion): now if the
        # endpoint is confirmed already (its packets skip the learning
        # that would make it) or a socket that sends out of this one has
        # its companion (media flows towards this endpoint)
        if (self._companion is not None and self._conn_ep != self.endpoint
                and (self._conn is not None or self.confirmed or self._feeder_connected())):
            self._sync_companion()
        self._update_out()
        return skipped

    def _feeder_connected(self):
        """True if a socket that sends out of this one has its companion."""
        for feeder in self._feeders:
            if feeder._conn is not None:
                return True
        return False

    def select(self, address):
        """Send to and accept from ``address`` (None: nobody) from now on,
        as an outside authority (ICE) decided: the endpoint, confirmed, and
        its companion follow.  Off the per-packet path."""
        if address is not None:
            address = (str(address[0]), int(address[1]))
        self.endpoint = address
        self.confirmed = address is not None
        if self._companion is not None and self._conn_ep != address:
            self._sync_companion()
        self._update_out()

    def set_tos(self, tos):
        """Send with TOS byte (IPv4) / traffic class (IPv6) ``tos`` from now
        on: one ``setsockopt`` on the socket and one on its companion, only
        when the value changes (a companion bound later gets it when it is
        bound).  Nothing per packet."""
        if tos == self.tos:
            return
        apply_tos(self._sock, tos, self._v6)
        if self._conn is not None:
            apply_tos(self._conn, tos, self._v6)
        self.tos = tos

    def set_cpu(self, cpu):
        """Give this socket (and its companion, now or when it is bound)
        SO_INCOMING_CPU ``cpu`` (option ``socket-cpu-affinity``): at
        set-up, never per packet.  Raises OSError if the kernel refuses."""
        apply_cpu(self._sock, cpu)
        if self._conn is not None:
            apply_cpu(self._conn, cpu)
        self.cpu = cpu

    def _set_peer(self, peer):
        old = self.peer
        if old is not peer:
            if old is not None and self in old._feeders:
                old._feeders.remove(self)
            if peer is not None:
                peer._feeders.append(self)
            self.peer = peer

    def _update_out(self):
        """Recompute ``_out`` (see ``__init__``); called whenever the
        endpoint's confirmation, ``peer``, ``rtcp_peer``, the peer's
        companion or the pipeline changes.  A socket with a pipeline never
        takes the inline path, unless its pipeline is a recording tap alone
        (``_tap``)."""
        peer = self.peer
        if (peer is not None and self.confirmed and self.rtcp_peer is None
                and (self.pipeline is None or self._tap is not None) and not self.is_rtcp):
            self._out = peer._cfd
        else:
            self._out = -1
        if peer is not None and self.confirmed and self._chain is not None:
            self._sout = peer._cfd
        else:
            self._sout = -1
        if peer is not None and self.confirmed and self.pipeline is not None:
            self._pout = peer._cfd
        else:
            self._pout = -1

    # -- transforms (off the per-packet path) -----------------------------

    def set_transforms(self, inbound=None, middle=None, outbound=None, update=True):
        """Set the steps this socket owns (``None``: leave that list as it
        is; see ``__init__``), then recompute this socket's pipeline and
        that of every socket that sends out of this one (not with
        ``update`` False: the caller does, once it has set all steps)."""
        if inbound is not None:
            self.inbound = tuple(inbound)
        if middle is not None:
            self.middle = tuple(middle)
        if outbound is not None:
            self.outbound = tuple(outbound)
        if not update:
            return
        self.update_pipeline()
        for feeder in self._feeders:
            feeder.update_pipeline()

    def update_pipeline(self):
        """Recompute :attr:`pipeline` from the steps of this socket and of
        the sockets it sends out of.

        A packet received here (from this socket's party X) and sent out of
        the peer P (to party Y) runs this socket's ``inbound`` steps (X's
        SRTP undone), its ``middle`` steps, then P's ``outbound`` steps (Y's
        SRTP applied).  RTCP split off to ``rtcp_peer`` runs that socket's
        ``outbound`` steps instead of P's.  No step at all: ``pipeline`` is
        None and the plain fast paths apply.  Called by :meth:`configure`
        and :meth:`set_transforms`; the engine calls it for every socket of
        a call after a configuration (an ``rtcp_peer``'s steps are not
        followed otherwise)."""
        head = self.inbound + self.middle
        peer = self.peer
        rtcp_peer = self.rtcp_peer if self.rtcp_peer is not None else peer
        rtp_steps = head + (peer.outbound if peer is not None else ())
        rtcp_steps = head + (rtcp_peer.outbound if rtcp_peer is not None else ())
        was = self._serving()
        if not rtp_steps and not rtcp_steps:
            # no step at all (a plain call): what the general case below
            # gives for empty chains, without its loops
            self.pipeline = self._chain = self._fan = self._tap = None
            self._update_out()
            if was and self.reading and self._conn is not None:
                self._serve_companion()
            return
        # one pass over the RTP chain: its methods, the first fan-out
        # step, and whether every step has a native call
        rtp = []
        fan = -1
        natives = []
        for step in rtp_steps:
            rtp.append(step.rtp)
            if fan < 0 and getattr(step, "fan_out", False):
                fan = len(rtp) - 1
            if natives is not None:
                native = getattr(step, "native_rtp", None)
                if native is None:
                    natives = None
                else:
                    natives.append((native[0], native[1], step))
        self.pipeline = (tuple(rtp), tuple([t.rtcp for t in rtcp_steps]))
        self._chain = None
        self._fan = None
        if fan >= 0:
            self._fan = (tuple(rtp[:fan]), rtp[fan], tuple(rtp[fan + 1:]))
        if natives:
            buffer = getattr(rtp_steps[0], "buffer", None)
            if buffer is not None:
                cdata, length, view = buffer
                self._chain = (cdata, length, view, [view[:RECV_SIZE]], tuple(natives))
        # a recording tap alone: the inline path records (MediaPoller.doRead)
        self._tap = None
        if (len(rtp_steps) == 1 and rtp_steps == rtcp_steps
                and getattr(rtp_steps[0], "inline_record", False)):
            self._tap = rtp_steps[0]
            self._tap.follow(self._conn_ep)
        self._update_out()
        if was != self._serving() and self.reading and self._conn is not None:
            self._serve_companion()

    def _serving(self):
        """How the companion is served: 0 inline (plain, or a recording
        tap alone), 1 :meth:`_piped`, 2 :meth:`_stepped_fan`."""
        if self.pipeline is None or self._tap is not None:
            return 0
        return 1 if self._fan is None else 2

    def _serve_companion(self):
        """(Re)register the connected companion with the poller: served
        inline (plain, or a recording tap alone), by :meth:`_stepped_fan`
        (an RTP chain with a fan-out step) or by :meth:`_piped` (a socket
        with any other pipeline)."""
        poller = self._poller
        poller.remove(self._cfd)
        serving = self._serving()
        if serving == 0:
            poller.add_connected(self._cfd, self)
        elif serving == 1:
            poller.add(self._cfd, self._piped)
        else:
            poller.add(self._cfd, self._stepped_fan)

    def transform_counters(self):
        """``{name: counters}`` of the steps this socket owns (plain data)."""
        out = {}
        for step in self.inbound + self.middle + self.outbound:
            out[step.name] = step.counters()
        return out

    def counters(self):
        """The socket's counters as plain data (see ``IMediaEngine.stats``)."""
        counters = {
            "packets": self.packets,
            "bytes": self.bytes,
            "errors": self.errors,
            "last_packet": self.last_packet,
            "endpoint": self.endpoint,
            "confirmed": self.confirmed,
        }
        if self.inbound or self.middle or self.outbound:
            counters["transforms"] = self.transform_counters()
        track = self.track
        if track is not None:
            ssrc, rtcp_ssrc, payload_types = track.state()
            if ssrc is not None:
                counters["ssrc"] = ssrc
            if rtcp_ssrc is not None:
                counters["rtcp ssrc"] = rtcp_ssrc
            if payload_types:
                counters["payload types"] = payload_types
        if self.rtcp_last is None and self.rtcp_report is None:
            return counters  # no RTCP report yet (what latest_report says)
        report = self.latest_report()
        if report is not None:
            counters["rtcp"] = {
                "type": "SR" if report.kind == 200 else "RR",
                "SSRC": report.ssrc,
                "blocks": [{"SSRC": b.ssrc, "fraction lost": b.fraction_lost,
                            "cumulative lost": b.cumulative_lost,
                            "highest seq": b.highest_seq, "jitter": b.jitter}
                           for b in report.blocks],
            }
        return counters

    def _new_track(self):
        """The socket's Track, made at its first counted datagram (the C
        loop's ``_fastrelay.Track``, else :class:`PyTrack`).  The Python
        paths then note each counted datagram in it (``track.note(data)``,
        one C call: an RTP datagram's SSRC and payload type, an RTCP one's
        sender SSRC), as the C inline path does (omnirtp/media/_fastrelay.c)."""
        track = self.track = (PyTrack if _fastrelay is None else _fastrelay.Track)(self.is_rtcp)
        return track

    # (read-only views of the Track, for tests and tools; off the path)
    @property
    def ssrc(self):
        return None if self.track is None else self.track.state()[0]

    @property
    def rtcp_ssrc(self):
        return None if self.track is None else self.track.state()[1]

    @property
    def payload_types(self):
        return None if self.track is None else self.track.state()[2]

    def observe_rtcp(self, data):
        """Keep ``data``, a plain (not SRTCP) RTCP datagram this socket's
        party sent, when it opens with an SR or RR with report blocks (as
        RFC 3550 compounds do once the party receives media; feedback-only
        and empty reports are skipped): a test of two bytes and a
        reference, so the RTCP path pays no parsing.  Called only for
        RTCP (on a pair's RTCP socket, ``is_rtcp``, and for RTCP split off or run
        through a pipeline).  :meth:`latest_report` parses it, off the
        packet path."""
        if len(data) > 1 and data[0] & 0x1F and (data[1] == 200 or data[1] == 201):
            self.rtcp_last = data

    def latest_report(self):
        """The party's latest SR/RR with report blocks (an
        ``omnirtp.media.rtcp.Report``), None before the first: parses what
        :meth:`observe_rtcp` kept since the last call (``stats()``, once a
        second at most per sweep or page); a malformed datagram leaves the
        previous report in place (it was forwarded all the same)."""
        data = self.rtcp_last
        if data is not None:
            self.rtcp_last = None
            try:
                found = rtcp_reports(data)
            except ValueError:
                found = ()
            for report in found:
                if report.blocks:
                    self.rtcp_report = report
                    break
        return self.rtcp_report

    def start(self):
        """Start reading (through the poller, else ``reactor.addReader``)."""
        if not self.reading and self._fd >= 0:
            self.reading = True
            if self._poller is not None:
                self._poller.add(self._fd, self.read)
                if self._conn is not None:
                    self._serve_companion()
            else:
                self._reactor.addReader(self)

    def stop(self):
        """Stop reading."""
        if self.reading:
            self.reading = False
            if self._poller is not None:
                self._poller.remove(self._fd)
                if self._conn is not None:
                    self._poller.remove(self._cfd)
            else:
                self._reactor.removeReader(self)

    def close(self):
        """Stop reading and close the socket; later sends from it fail."""
        if self.reading:
            self.stop()
        if self._conn is not None:
            self._drop_companion()
        self._companion = None
        if self.peer is not None:
            self._set_peer(None)
        self.rtcp_peer = None
        self._out = -1
        self._sout = -1
        self._pout = -1
        self._chain = None
        self._fan = None
        self._tap = None
        self.other = None
        self.authorise = None
        self.inbound = self.middle = self.outbound = ()
        self.pipeline = None
        if self._fd >= 0:
            self._fd = -1
            self._sock.close()

    # -- IReadDescriptor --------------------------------------------------

    def fileno(self):
        return self._fd

    def logPrefix(self):
        return "RelaySocket"

    def connectionLost(self, reason):
        """The reactor dropped us (shutdown): close the socket."""
        self.reading = False
        if self._fd >= 0:
            self._fd = -1
            self._sock.close()

    def doRead(self):
        """Read and relay (``IReadDescriptor``): :meth:`read` at the reactor's time."""
        return self.read(self._seconds())

    def read(self, now):
        """Read and relay one datagram, or up to :data:`READ_BATCH` of them.

        A media socket usually has a single datagram waiting per wakeup, and
        trying a second read then costs a failing syscall and an exception.
        So a wakeup reads one datagram, unless the previous wakeup of this
        socket read its whole quota without emptying the queue (a backlog:
        the relay is busy), in which case it reads up to READ_BATCH.
        ``now`` is the clock, read once by the caller for a whole batch.
        """
        recvfrom = self._recvfrom
        v6 = self._v6
        if self._poller is not None:
            # level-triggered epoll reports the socket again while
            # datagrams are left: one read per event, never a failing one
            limit = 1
        else:
            limit = READ_BATCH if self._more else 1
            self._more = True
        while limit:
            limit -= 1
            try:
                data, src = recvfrom(RECV_SIZE)
            except OSError:
                # EAGAIN: the queue is empty; anything else (a queued ICMP
                # error) is consumed by this failed read.
                self._more = False
                return None
            if v6:
                src = src[:2]
            n = len(data)
            # version 2, and an RTP header or an RTCP header (PT 192-223)
            if n < RTCP_MIN or (data[0] & 0xC0) != 0x80 or (n < RTP_MIN and not 191 < data[1] < 224):
                if self.other is not None:
                    self.other(self, data, src)
                else:
                    self.junk += 1
                    self.errors += 1
                continue
            self.packets += 1
            self.bytes += n
            self.last_packet = now
            track = self.track
            if track is None:
                track = self._new_track()
            track.note(data)
            if src != self.endpoint or not self.confirmed:
                forward = self._learn(src, now)
                if self._companion is not None and self._conn_ep != self.endpoint:
                    self._sync_companion()
                    # what waits here arrived before the companion was
                    # connected, so it is older than anything the companion
                    # will read: relay it now, in order, before the poller
                    # turns to the companion (once per endpoint change)
                    limit = DRAIN_BATCH
                if not forward:
                    self.errors += 1
                    continue
            self._forward(data)
        return None

    def connected(self, data, now):
        """Relay ``data``, read by the poller from the connected companion:
        it comes from the endpoint (the kernel delivers the endpoint's
        datagrams to the connected socket), so no source address is built
        or compared.  The poller relays the common case itself (see
        :meth:`MediaPoller.doRead`); this is the full path: junk, an
        unconfirmed endpoint, an RTCP split, a peer without a companion."""
        n = len(data)
        if n < RTCP_MIN or (data[0] & 0xC0) != 0x80 or (n < RTP_MIN and not 191 < data[1] < 224):
            if self.other is not None:
                self.other(self, data, self._conn_ep)
            else:
                self.junk += 1
                self.errors += 1
            return None
        self.packets += 1
        self.bytes += n
        self.last_packet = now
        track = self.track
        if track is None:
            track = self._new_track()
        track.note(data)
        if not self.confirmed and not self._learn(self._conn_ep, now):
            self.errors += 1
            return None
        self._forward(data)
        return None

    def _piped(self, now):
        """The poller's handler for the companion of a socket with a
        pipeline: the native SRTP path.  Reads the datagram straight into
        the shared native buffer (``os.readv``), runs the RTP chain's
        libsrtp calls on it in place and writes the result to the peer's
        companion: no bytes object in, no Python frame per step.  Anything
        else (RTCP, junk, STUN/DTLS, an unconfirmed endpoint, a peer
        without a companion, a chain with a non-native step, a datagram too
        long for libsrtp's limits) goes, as bytes, to :meth:`connected`:
        the generic pipeline, with the same results and counters.  A
        pipeline without a native chain takes :meth:`_stepped`."""
        chain = self._chain
        if chain is None:
            self._stepped(now)
            return
        cdata, length, view, into, calls = chain
        try:
            n = _readv(self._cfd, into)
        except OSError:
            return  # EAGAIN, or an ICMP error consumed by the read
        out = self._sout
        if (out < 0 or n < RTP_MIN or n > NATIVE_MAX or (view[0] & 0xC0) != 0x80
                or 191 < view[1] < 224):
            self.connected(view[:n].tobytes(), now)
            return
        self.packets += 1
        self.bytes += n
        self.last_packet = now
        track = self.track
        if track is None:
            track = self._new_track()
        track.note(view)
        length[0] = n
        for function, ctx, step in calls:
            status = function(ctx, cdata, length)
            if status:
                step.failed_status(status)
                self.errors += 1
                return
        try:
            _write(out, view[:length[0]])
        except OSError:
            self.errors += 1

    def _stepped(self, now):
        """:meth:`_piped` for a pipeline with a step in Python (a
        transcoder, a recording tap): an RTP datagram from the confirmed
        endpoint runs the RTP chain and goes straight to the peer's
        companion, as :meth:`_forward_pipeline` would send it but without
        the calls in between; anything else goes to :meth:`connected`."""
        try:
            data = _read(self._cfd, RECV_SIZE)
        except OSError:
            return  # EAGAIN, or an ICMP error consumed by the read
        out = self._pout
        n = len(data)
        if out < 0 or n < RTP_MIN or (data[0] & 0xC0) != 0x80 or 191 < data[1] < 224:
            self.connected(data, now)
            return
        self.packets += 1
        self.bytes += n
        self.last_packet = now
        track = self.track
        if track is None:
            track = self._new_track()
        track.note(data)
        try:
            for step in self.pipeline[0]:
                data = step(data)
                if data is None:
                    self.errors += 1
                    return
            _write(out, data)
        except Exception:
            self.errors += 1

    def _stepped_fan(self, now):
        """:meth:`_stepped` for an RTP chain with a fan-out step (see
        ``_fan``): the packets it gives (none while it holds audio for a
        longer packet, several when it splits one) run the steps after it
        and go to the peer's companion in order; anything else goes to
        :meth:`connected`, as in :meth:`_stepped`."""
        try:
            data = _read(self._cfd, RECV_SIZE)
        except OSError:
            return  # EAGAIN, or an ICMP error consumed by the read
        out = self._pout
        n = len(data)
        if out < 0 or n < RTP_MIN or (data[0] & 0xC0) != 0x80 or 191 < data[1] < 224:
            self.connected(data, now)
            return
        self.packets += 1
        self.bytes += n
        self.last_packet = now
        track = self.track
        if track is None:
            track = self._new_track()
        track.note(data)
        try:
            head, fan, tail = self._fan
            if not head:
                # the usual chain (a transcoder first): one packet out is
                # written as _stepped writes it, no tuple in between
                data = fan(data)
                if data.__class__ is bytes:
                    for step in tail:
                        data = step(data)
                        if data is None:
                            self.errors += 1
                            return
                    _write(out, data)
                    return
                if data is None:
                    self.errors += 1
                    return
                data = self._fan_tail(data, tail)
            else:
                data = self._fan_out(data)
            for packet in data:
                _write(out, packet)
        except Exception:
            self.errors += 1

    def _forward_fan(self, data):
        """:meth:`_forward_pipeline` for an RTP chain with a fan-out step:
        each packet it gives goes out of ``peer`` (its companion, else
        ``sendto`` its endpoint)."""
        peer = self.peer
        if peer is None:
            self.errors += 1
            return
        try:
            for packet in self._fan_out(data):
                if peer._cfd >= 0:
                    _write(peer._cfd, packet)
                elif peer.endpoint is not None:
                    peer._sendto(packet, peer.endpoint)
                else:
                    self.errors += 1
        except Exception:
            self.errors += 1

    def _fan_out(self, data):
        """The packets an RTP datagram becomes through a chain with a
        fan-out step (``_fan``): the steps before it, then it (bytes: one
        packet; None: dropped; a tuple: 0..N packets, () while it holds
        audio back, which is no error), then each packet through the steps
        after it.  A drop is counted in ``errors``, per packet."""
        head, fan, tail = self._fan
        for step in head:
            data = step(data)
            if data is None:
                self.errors += 1
                return ()
        data = fan(data)
        if data is None:
            self.errors += 1
            return ()
        if data.__class__ is bytes:
            data = (data,)
        return self._fan_tail(data, tail)

    def _fan_tail(self, data, tail):
        """The packets a fan-out step gave (a tuple), each through the
        steps after it (``tail``); a drop counted in ``errors``."""
        if not tail:
            return data
        done = []
        for packet in data:
            for step in tail:
                packet = step(packet)
                if packet is None:
                    self.errors += 1
                    break
            else:
                done.append(packet)
        return done

    def _forward(self, data):
        """Send on a received, counted datagram: RTCP (PT 192-223) out of
        ``rtcp_peer`` when one is set, anything else out of ``peer``; through
        that socket's companion, else ``sendto`` its endpoint.  What cannot
        be sent (no peer, no endpoint, a send error) is counted in
        ``errors``.  The paths of :meth:`read` and :meth:`connected`; the
        poller's inline path does the common case itself.  A socket with a
        pipeline goes to :meth:`_forward_pipeline` (one slot test here: the
        plain path pays nothing more)."""
        if self.pipeline is not None:
            self._forward_pipeline(data)
            return
        peer = self.peer
        if self.rtcp_peer is not None and 191 < data[1] < 224:
            peer = self.rtcp_peer
            self.observe_rtcp(data)
        elif self.is_rtcp:
            self.observe_rtcp(data)  # (a pair's RTCP socket: its party's reports)
        if peer is None:
            self.errors += 1
            return
        try:
            if peer._cfd >= 0:
                _write(peer._cfd, data)
            elif peer.endpoint is not None:
                sendto = peer._sendto
                sendto(data, peer.endpoint)
            else:
                self.errors += 1
        except OSError:
            self.errors += 1

    def _forward_pipeline(self, data):
        """:meth:`_forward` for a socket with a pipeline: the packet runs
        the RTP or RTCP chain (by payload type, 192-223 is RTCP), then goes
        out as in :meth:`_forward`.  A step that returns None dropped the
        packet and counted why; the socket counts it in ``errors`` as every
        datagram it does not forward.  A step that raises (it must not) is
        counted the same way, so nothing escapes to the poller."""
        rtp_steps, rtcp_steps = self.pipeline
        if 191 < data[1] < 224:
            self._forward_rtcp_pipeline(data, rtcp_steps)
            return
        if self._fan is not None:
            self._forward_fan(data)
            return
        peer = self.peer
        if peer is None:
            self.errors += 1
            return
        try:
            for step in rtp_steps:
                data = step(data)
                if data is None:
                    self.errors += 1
                    return
            if peer._cfd >= 0:
                _write(peer._cfd, data)
            elif peer.endpoint is not None:
                peer._sendto(data, peer.endpoint)
            else:
                self.errors += 1
        except Exception:
            self.errors += 1

    def _forward_rtcp_pipeline(self, data, steps):
        """The RTCP half of :meth:`_forward_pipeline` (out of ``rtcp_peer``
        when one is set): the same steps and counting, and the party's
        reports observed (:meth:`observe_rtcp`) once its SRTCP is undone,
        after the ``inbound`` steps, which come first in the chain."""
        peer = self.rtcp_peer
        if peer is None:
            peer = self.peer
        if peer is None:
            self.errors += 1
            return
        plain = len(self.inbound)
        try:
            for i, step in enumerate(steps):
                if i == plain:
                    self.observe_rtcp(data)
                data = step(data)
                if data is None:
                    self.errors += 1
                    return
            if plain >= len(steps):
                self.observe_rtcp(data)
            if peer._cfd >= 0:
                _write(peer._cfd, data)
            elif peer.endpoint is not None:
                peer._sendto(data, peer.endpoint)
            else:
                self.errors += 1
        except Exception:
            self.errors += 1

    # -- another local address (ICE; off the per-packet path) ---------------

    def rebase(self, other):
        """Trade sockets with ``other`` (a socket of the same port on
        another address of the interface, that relays nothing itself):
        from now on this one reads and writes ``other``'s socket, whose
        address ICE selected, and ``other`` this one's.  Each keeps its
        ``local`` key, configuration and counters; the companion of each
        is dropped (the next one binds the new :attr:`bound` address)."""
        if other is self:
            return
        reading, other_reading = self.reading, other.reading
        for relay in (self, other):
            if relay.reading:
                relay.stop()
            relay._drop_companion()
        for name in ("_sock", "_fd", "_recvfrom", "_sendto", "_v6", "bound"):
            mine = getattr(self, name)
            setattr(self, name, getattr(other, name))
            setattr(other, name, mine)
        for relay in (self, other):
            if relay.tos and relay._fd >= 0:
                try:
                    apply_tos(relay._sock, relay.tos, relay._v6)
                except OSError:
                    pass
        if reading:
            self.start()
        if other_reading:
            other.start()
        if self._companion is not None and self.endpoint is not None:
            self._sync_companion()

    # -- sending for the non-RTP handlers (STUN, DTLS) ---------------------

    def send(self, data, address):
        """Send ``data`` from this socket to ``address`` (the handlers of
        :attr:`other`, e.g. an ICE agent's STUN).  Returns False if it
        could not be sent (counted in ``errors``), else True."""
        try:
            if self._cfd >= 0 and address == self._conn_ep:
                _write(self._cfd, data)
            else:
                self._sendto(data, address)
        except (OSError, TypeError, ValueError):
            self.errors += 1
            return False
        return True

    def send_endpoint(self, data):
        """Send ``data`` from this socket to its current endpoint (e.g. a
        DTLS endpoint's records); False if there is none or it failed."""
        endpoint = self.endpoint
        if endpoint is None:
            self.errors += 1
            return False
        return self.send(data, endpoint)

    # -- the connected companion (off the per-packet path) ------------------

    def _sync_companion(self):
        """Connect the companion socket to the current endpoint (or drop it).

        A UDP socket connected to the endpoint, bound to the same local
        address with SO_REUSEPORT, receives the endpoint's datagrams (the
        kernel prefers the connected socket) and sends to it with ``send``:
        the kernel keeps its route, and Python builds no address per
        datagram.  Datagrams from anyone else still reach the main socket.

        Made when first needed, not at set-up (a call that never carries
        media costs no socket more than its ports): by the first datagram
        the main socket reads while the endpoint is not confirmed (the
        learning path of :meth:`read`), by an endpoint that is confirmed
        already when it is set (:meth:`configure`, :meth:`select`), or with
        the companion of a socket that sends out of this one (made with
        it, or when this endpoint is set while it has one: one-way media
        takes the inline path too).  Once per stream, never per packet.
        """
        endpoint = self.endpoint
        if endpoint is None:
            self._drop_companion()
            return
        conn = self._conn
        if conn is None:
            try:
                # (bind_media left SO_REUSEPORT off until now)
                allow_companions(self._sock)
                conn = self._companion(*self.bound)
            except OSError:
                self._companion = None  # cannot bind one: do without
                return
            if self.tos or self.cpu >= 0:
                try:
                    if self.tos:
                        apply_tos(conn, self.tos, self._v6)
                    if self.cpu >= 0:
                        apply_cpu(conn, self.cpu)
                except OSError:
                    conn.close()
                    self._companion = None
                    return
        try:
            conn.connect(endpoint)
        except OSError:
            if conn is not self._conn:
                conn.close()
            self._drop_companion()
            return
        made = conn is not self._conn
        if made:
            self._conn = conn
            self._cfd = conn.fileno()
            if self.reading:
                self._serve_companion()
            for feeder in self._feeders:
                feeder._update_out()
        self._conn_ep = endpoint
        if self._tap is not None:
            self._tap.follow(endpoint)  # the source of what the companion reads
        peer = self.peer
        if (made and peer is not None and peer._conn is None and peer._companion is not None
                and peer.endpoint is not None):
            # what this socket's party sends leaves through the peer's
            # companion: make it now, not at the peer's own first datagram
            peer._sync_companion()

    def _drop_companion(self):
        conn = self._conn
        if conn is None:
            return
        if self.reading and self._poller is not None:
            self._poller.remove(self._cfd)
        self._conn = None
        self._conn_ep = None
        self._cfd = -1
        for feeder in self._feeders:
            feeder._update_out()
        conn.close()

    # -- source policy ----------------------------------------------------

    def _rank(self, src):
        sdp = self.sdp_endpoint
        if sdp is None:
            return RANK_ANY
        if src == sdp:
            return RANK_EXACT
        if src[0] == sdp[0]:
            return RANK_ADDRESS
        if src[1] == sdp[1]:
            return RANK_PORT
        return RANK_ANY

    def _learn(self, src, now):
        """Apply the source policy to a packet from ``src``.

        Called only when ``src`` is not the confirmed endpoint.  Returns
        True to forward the packet, False to drop it (strict source).
        """
        forward = self._policy(src, now)
        if self._out < 0:
            self._update_out()
        return forward

    def _party(self, src):
        """For an RTCP socket: may ``src`` be its party?  Only the address
        the party's SDP names (for RTCP or RTP), or the address its RTP
        already comes from (the RTP socket has received and learnt it).  A
        stranger racing the party to an RTCP port that has seen nothing yet
        would otherwise get the other side's RTCP reflected to it."""
        ip = src[0]
        sdp = self.sdp_endpoint
        if sdp is not None and sdp[0] == ip:
            return True
        rtp = self.rtp_sibling
        sdp = rtp.sdp_endpoint
        if sdp is not None and sdp[0] == ip:
            return True
        ep = rtp.endpoint
        return rtp.packets > 0 and ep is not None and ep[0] == ip

    def _policy(self, src, now):
        if self.asymmetric or self.learning == LEARN_OFF:
            authorise = self.authorise
            if authorise is not None:
                # ICE: the endpoint is what it selected (select); another
                # source only if it authorised that one too, never learnt
                return authorise(src)
            # never move: the endpoint stays the SDP address
            self.confirmed = True
            sdp = self.sdp_endpoint
            return not (self.strict and sdp is not None and src != sdp)
        if self.confirmed:
            if self.handover:
                self.endpoint = src
                return True
            return not self.strict
        if self.rtp_sibling is not None and not self._party(src):
            # an RTCP port latches only to its party (forwarded, not learnt)
            return not self.strict
        learning = self.learning
        if learning == LEARN_HEURISTIC:
            rank = self._rank(src)
            if rank == RANK_EXACT or now >= self.window_end:
                if rank > self.best_rank:
                    self.endpoint = src
                    self.best_rank = rank
                self.confirmed = True
                return src == self.endpoint or not self.strict
            if rank >= self.best_rank:
                self.endpoint = src
                self.best_rank = rank
                return True
            return not self.strict
        # delayed follows the latest source until the window is over;
        # immediate confirms the first one
        self.endpoint = src
        if learning == LEARN_IMMEDIATE or now >= self.window_end:
            self.confirmed = True
        return True



# the C loop reads RelaySocket's _out, _tap and track slots at their offsets
if _fastrelay is not None:
    _fastrelay.setup(RelaySocket)


@implementer(IReadDescriptor)
class MediaPoller:
    """All media sockets of an engine behind one epoll, read by the reactor.

    The reactor sees a single reader: this epoll's file descriptor, which is
    readable while any media socket is.  One ``doRead`` reads the clock once,
    asks the epoll which sockets have datagrams and serves them directly.
    That keeps Twisted's per-event dispatch (a logging context and exception
    guard around every ``doRead``) off the per-packet path, and batches many
    sockets into one reactor wakeup under load.  Level-triggered: a socket
    with datagrams left is reported again by the next poll.

    A connected companion (:meth:`add_connected`) is served inline: the
    poller reads its datagram and, in the common case (an RTP/RTCP header,
    a confirmed endpoint, no RTCP split, a peer with a companion of its
    own), counts it and writes it to the peer's companion itself, without
    a Python call per packet (a recorded socket's ``_tap`` also gets it, one
    C call); anything else goes to :meth:`RelaySocket.connected`.  Other
    sockets get their handler called.

    With ``omnirtp.media._fastrelay`` built (``make ext``), :meth:`doRead`
    and :meth:`run` hand the poll and the serving to its ``Loop``: the same
    rounds and the same calls, but the inline path in C, and :meth:`run`'s
    wait goes on in C while its rounds call no Python (no handler, no full
    path, no tap) until the next timed call is due.  Its counts are folded
    into the sockets' counters before any Python code runs and before it
    returns, so Python always reads exact counters.  Without it
    :meth:`_serve` does that work (and is the reference the C loop is
    tested against, omnirtp/test/test_fastrelay.py).
    """

    __slots__ = ("_reactor", "_seconds", "_epoll", "_poll", "_handlers", "_conns", "_fd",
                 "reading", "_looping", "_after", "_loop")

    #: sockets served per reactor wakeup at most
    MAX_EVENTS = 512

    def __init__(self, reactor):
        self._reactor = reactor
        self._seconds = reactor.seconds
        self._epoll = select.epoll()
        self._poll = self._epoll.poll
        self._fd = self._epoll.fileno()
        self._handlers = {}
        #: indexed by file descriptor: the RelaySocket whose connected
        #: companion it is, else None (a list: cheaper than a dict lookup)
        self._conns = []
        self.reading = False
        #: waited on directly by :meth:`run` (a media worker's main loop),
        #: not through the reactor
        self._looping = False
        #: handlers of :meth:`add_after` whose file was readable this round
        self._after = []
        #: the C loop (``omnirtp.media._fastrelay.Loop``) over this epoll,
        #: these tables and this clock (None: the wall clock, read in C),
        #: or None without the extension: then :meth:`_serve` does its work
        self._loop = None
        if _fastrelay is not None:
            seconds = None if self._seconds is time.time else self._seconds
            self._loop = _fastrelay.Loop(self._fd, self._conns, self._handlers, seconds,
                                         self.MAX_EVENTS)

    def _register(self, fd):
        self._epoll.register(fd, select.EPOLLIN)
        conns = self._conns
        if fd >= len(conns):
            conns.extend([None] * (fd + 1 - len(conns)))
        if not self.reading and self._fd >= 0 and not self._looping:
            self.reading = True
            self._reactor.addReader(self)

    def add(self, fd, handler):
        """Call ``handler(now)`` whenever socket ``fd`` is readable."""
        self._register(fd)
        self._handlers[fd] = handler

    def add_after(self, fd, handler):
        """Call ``handler()`` when ``fd`` is readable, once the round of
        datagrams it was found in has been served (as :meth:`run` gives the
        reactor its turn): a media worker's pipe from the control process,
        whose requests may release or bind sockets."""
        after = self._after

        def ready(now):
            if handler not in after:  # once, however many rounds saw it
                after.append(handler)

        self.add(fd, ready)

    def add_connected(self, fd, relay):
        """Serve ``fd``, the connected companion of ``relay``, inline."""
        self._register(fd)
        self._conns[fd] = relay

    def remove(self, fd):
        """Stop serving ``fd`` (before its socket is closed)."""
        found = self._handlers.pop(fd, None) is not None
        if 0 <= fd < len(self._conns) and self._conns[fd] is not None:
            self._conns[fd] = None
            found = True
        if found and self._fd >= 0:
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass

    def __len__(self):
        return len(self._handlers) + sum(1 for r in self._conns if r is not None)

    def fileno(self):
        return self._fd

    def logPrefix(self):
        return "MediaPoller"

    #: epoll rounds per reactor wakeup at most.  The poller polls again
    #: (without waiting) until a round finds nothing ready: datagrams that
    #: arrived meanwhile are served without another reactor iteration,
    #: whose fixed cost (the reactor's own epoll_wait, timers, Twisted's
    #: logging context) is paid once per wakeup rather than per burst.
    #: Bounded, so the control plane is never starved for long.
    MAX_ROUNDS = 4

    def doRead(self):
        now = self._seconds()
        if self._loop is not None:
            self._loop.rounds(now, self.MAX_ROUNDS)
            if self._after:
                self._run_after()
            return
        poll = self._poll
        serve = self._serve
        limit = self.MAX_EVENTS
        for _ in range(self.MAX_ROUNDS):
            events = poll(0, limit)
            if not events:
                break
            serve(events, now)
        if self._after:
            self._run_after()

    def _run_after(self):
        after = self._after
        todo = after[:]
        del after[:]
        for handler in todo:
            handler()

    def _serve(self, events, now):
        """Serve the sockets of one epoll round (``[(fd, mask)]``); what
        ``_fastrelay.Loop`` does in C where it is built."""
        handlers = self._handlers
        conns = self._conns
        for fd, _ in events:
            relay = conns[fd]
            if relay is None:
                handler = handlers.get(fd)
                if handler is not None:
                    handler(now)
                continue
            # a companion's datagram: the common case inline,
            # the rest through RelaySocket.connected
            try:
                data = _read(fd, RECV_SIZE)
            except OSError:
                continue  # EAGAIN, or an ICMP error consumed by the read
            out = relay._out
            n = len(data)
            if out < 0 or n < RTP_MIN or (data[0] & 0xC0) != 0x80:
                relay.connected(data, now)
                continue
            relay.packets += 1
            relay.bytes += n
            relay.last_packet = now
            track = relay.track
            if track is None:
                track = relay._new_track()
            track.note(data)
            tap = relay._tap
            if tap is not None:
                # a recorded socket: (time, flow, datagram) to the
                # call's recorder and nothing else, one C call (its
                # flush builds the pcap records off the packet path)
                tap.sink((now, tap.inline_flow, data))
            try:
                _write(out, data)
            except OSError:
                relay.errors += 1

    def run(self, reactor, coalesce=0.0):
        """A media worker's main loop, in place of ``reactor.mainLoop``
        (``reactor``: an epoll reactor, started).

        The reactor's own loop waits on its epoll, which holds this
        poller's epoll; a datagram then costs a wake-up of the reactor's
        ``epoll_wait``, a Twisted dispatch (logging context, exception
        guard) and this poller's rounds, the last of which finds nothing.
        Here it is the other way round: this epoll holds the reactor's
        epoll (its file descriptor, which is readable while any of the
        reactor's readers or writers is ready), and the loop blocks in
        *this* epoll, with the timeout of the reactor's next timed call.
        A wake-up for media is one ``epoll_wait`` that returns the ready
        sockets, served at once; the loop then runs the reactor's due
        timed calls and waits again (that wait is the next wake-up's, or
        returns at once when datagrams arrived meanwhile).  When the
        reactor's epoll is ready (AMP from the control process, a log
        write, a signal's waker) the reactor runs one iteration without
        waiting (``doIteration(0)``), after the round's datagrams.  Errors are logged as the reactor's
        loop logs them; once the poller is closed (the engine stopped) the
        reactor's own loop takes over until it stops.

        ``coalesce`` (seconds, 0: off) is an optional delay after each
        round that served datagrams: the loop sleeps that long before it
        polls again, so that datagrams arriving meanwhile are served by one
        wake-up instead of waking the worker each (fewer wake-ups per
        packet under a steady load), at the cost of up to ``coalesce``
        (plus the kernel's timer slack) of added latency for them; the
        first datagram after a quiet spell is served at once.  Off by
        default: see docs/scaling.md for what it costs and saves.

        With the C loop (``_loop``) one ``wait`` call replaces the poll
        and :meth:`_serve`: it returns when a round called Python, when
        the next timed call is due, or on a signal, so the timer rules
        above are applied exactly as often as they can change.
        """
        inner = reactor._poller.fileno()
        if self.reading:
            self.reading = False
            reactor.removeReader(self)
        self._looping = True
        iterate = reactor.doIteration
        # the reactor's turn comes after the round's datagrams: what it
        # runs (AMP: release, shutdown) may remove or close sockets
        self.add_after(inner, lambda: iterate(0))
        after = self._after
        run_after = self._run_after
        poll = self._poll
        serve = self._serve
        seconds = self._seconds
        limit = self.MAX_EVENTS
        run_until_current = reactor.runUntilCurrent
        timeout = reactor.timeout
        sleep = time.sleep
        loop = self._loop
        while reactor._started and self._fd >= 0:
            try:
                now = seconds()
                while reactor._started and self._fd >= 0:
                    # The reactor's timers run only when one is due or
                    # something was scheduled (a new timed call, a call
                    # from a thread, a stop): runUntilCurrent and timeout
                    # cost several microseconds, and a worker under a
                    # steady load wakes for nearly every datagram.  The
                    # heap's head is read each time, so a call moved
                    # sooner or cancelled is seen; ``now`` is the time of
                    # the last wake-up, so a timer may run late by what
                    # that wake-up's datagrams took to serve.
                    pending = reactor._pendingTimedCalls
                    if (reactor._newTimedCalls or reactor.threadCallQueue
                            or reactor._justStopped
                            or (pending and pending[0].time <= now)):
                        run_until_current()
                        if self._fd < 0:
                            break  # closed by a timed call
                        t = timeout()
                        if t is None:
                            t = -1
                    elif pending:
                        t = pending[0].time - now
                        if t > TIMEOUT_MAX:
                            t = TIMEOUT_MAX
                    else:
                        t = -1
                    if not reactor.running:
                        t = 0
                    if loop is not None:
                        # the C loop waits and serves, and keeps waiting
                        # while its rounds need no Python, until the next
                        # timed call is due (the head of the heap, read
                        # again: runUntilCurrent may have rebuilt it)
                        pending = reactor._pendingTimedCalls
                        now = loop.wait(t, pending[0].time if pending else -1.0, coalesce)
                        if after:
                            run_after()
                        if coalesce and loop.called:
                            sleep(coalesce)
                        continue
                    events = poll(t, limit)
                    now = seconds()
                    if events:
                        serve(events, now)
                        if after:
                            run_after()
                        if coalesce:
                            sleep(coalesce)
            except Exception:
                _log.failure("Unexpected error in the media worker's main loop")
        if reactor._started:
            type(reactor).mainLoop(reactor)

    def close(self):
        """Stop reading and close the epoll (the sockets stay as they are)."""
        if self.reading:
            self.reading = False
            self._reactor.removeReader(self)
        if self._fd >= 0:
            self._fd = -1
            self._loop = None
            self._handlers.clear()
            self._conns.clear()
            self._epoll.close()

    def connectionLost(self, reason):
        """The reactor dropped us (shutdown)."""
        self.reading = False
        if self._fd >= 0:
            self._fd = -1
            self._loop = None
            self._handlers.clear()
            self._conns.clear()
            self._epoll.close()
