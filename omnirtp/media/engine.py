"""``EmbeddedEngine``: the media plane in the caller's reactor.

It owns one :class:`~omnirtp.media.ports.PortPool` per local address and a
:class:`~omnirtp.media.relay.RelaySocket` per bound port (RTP and RTCP).
It implements :class:`omnirtp.interfaces.IMediaEngine`; every method
returns an already-fired ``Deferred``.  The worker processes of
``num-threads = N`` run one of these each, behind AMP.

ICE and DTLS (the ``ice`` / ``dtls`` configure keys, see
``IMediaEngine.configure``): a socket with either gets a
:class:`~omnirtp.media.demux.Demux` as ``RelaySocket.other`` that hands
its STUN to an :class:`~omnirtp.media.ice.IceAgent` and its DTLS to a
:class:`~omnirtp.media.dtls.DtlsEndpoint` (both on this engine's reactor
clock, sending out of the socket).  ICE is the socket's source authority
(``RelaySocket.authorise``): the endpoint is the address the agent
selected, nothing is learnt, and consent loss leaves the party without
media.  DTLS holds the socket's media back (a step that drops everything
in both directions) until the handshake's keys are in; they then take the
place of ``srtp_in`` / ``srtp_out`` for that socket.  A failed handshake
keeps the media held back.  One log line per such event, with the call-id;
nothing per packet.

Transcoding (the ``codecs_send`` / ``codecs_recv`` / ``transcode`` keys of
CODEC-CONTRACT): a socket S whose latest entry has ``"transcode": True``
gets an :class:`omnirtp.codecs.transcode.Transcoder` as its ``middle``
step, built from S's ``codecs_send`` and the ``codecs_recv`` of S's peer
(the last lists given for each socket; absent: unchanged); an RTCP socket
with ``transcode`` gets a step that stops the party's RTCP.  The step is
kept (its stream state, SSRC and sequence go on) while those lists stay
the same, rebuilt when they change, and removed by an entry without
``transcode`` (absent or False).  The ``ptime`` of the peer's entry (the
packet duration, in ms, the party the peer faces takes; absent:
unchanged, None: as the sender sends) is what the transcoder packetises
its output at (``Transcoder.set_ptime``; a change keeps the step).  A
socket without a transcoder whose peer's entry has ``repacketise`` (ms;
absent: none) gets an :class:`omnirtp.media.repacketise.Repacketiser` as
its ``middle`` step instead: its G.711/G.722 packets are cut and joined to
that ptime (the ng ``ptime`` / ``ptime-reverse`` of a call that is not
transcoded, as rtpengine 10.5 does).  See docs/codecs.md.
"""

from types import MappingProxyType

from twisted.internet import defer, task
from zope.interface import implementer

from omnirtp.errors import FilesExhausted
from omnirtp.interfaces import (
    PTIME_MAX, PTIME_MIN, IDatagramHandler, IMediaEngine, IPacketTransform)
from omnirtp.limits import soft_limit as _file_limit
from omnirtp.logging import Logger
from omnirtp.media.demux import Demux
from omnirtp.media.ice import IceAgent, parse_candidate
from omnirtp.media.ports import NO_FILES_ERRNOS, PortPool
from omnirtp.media.relay import (
    LEARN_DELAYED, LEARNING_MODES, LEARNING_WINDOW, MediaPoller, RelaySocket,
    bind_companion, bind_media)
from omnirtp.media.relay import bind_pair as bind_both  # (_allocate has its own bind_pair)
from omnirtp.media.park import PLAIN_KEYS


# keys of IMediaEngine.configure entries
K_LOCAL = "local"
K_PEER = "peer"
K_RTCP_PEER = "rtcp_peer"
K_ENDPOINT = "endpoint"
K_LEARNING = "learning"
K_STRICT = "strict"
K_HANDOVER = "handover"
K_ASYMMETRIC = "asymmetric"
K_RESET = "reset"
K_TOS = "tos"
K_SRTP_IN = "srtp_in"
K_SRTP_OUT = "srtp_out"
K_SRTP_RESUME = "srtp_resume"
K_ICE = "ice"
K_DTLS = "dtls"
K_RECORD = "record"
K_CODECS_SEND = "codecs_send"
K_CODECS_RECV = "codecs_recv"
K_TRANSCODE = "transcode"
K_PTIME = "ptime"
K_REPACKETISE = "repacketise"

#: seconds between the RTCP sender reports of transcoded streams
RTCP_INTERVAL = 5.0

#: DTLS roles (as in omnirtp.media.dtls; not imported: it pulls in OpenSSL)
DTLS_CLIENT = "client"
DTLS_SERVER = "server"

#: configure keys that name transform parameters: key -> (factory kind,
#: which of the socket's step lists it fills, the factory method building it)
#: seconds between the offload checks (``table``): each looks at the calls
#: whose sockets saw packets since the one before (or that were refused)
KERNEL_TICK = 1.0
#: seconds between full reads of the kernel's counters (the per-call counts
#: of ``stats()`` of all calls are at most this old; ``stats(call_id)``
#: reads its call's afresh, and the call registry does so for a call before
#: it times out)
KERNEL_REFRESH = 10.0
#: ``totals()`` reads every counter afresh unless it did less than this ago
KERNEL_CACHE = 0.5

#: the codec state of a socket that transcodes, repacketises and
#: filters nothing: what ``_plan_codecs`` returns for it, one object for
#: all; such a socket keeps no codec state (``_configure``)
_NO_CODECS = MappingProxyType(
    {"send": None, "recv": None, "ptime": None, "transcode": False, "repacketise": None})

#: the keys of an entry that only changes the recording
_RECORD_ONLY = frozenset((K_LOCAL, K_RECORD))
#: the keys a plain call's entries have (``_configure``'s short way; the
#: keys a parked call's entries may have, omnirtp.media.park)
_PLAIN_KEYS = PLAIN_KEYS
#: the keys of the negotiator's entries for a call without codec handling
#: (``Negotiator._sockets``), in their order -> True for an RTP socket's
#: (with ``rtcp_peer``), False for an RTCP socket's: ``_configure`` reads
#: such an entry's values in one step
_ORDERED = {
    (K_LEARNING, K_STRICT, K_HANDOVER, K_ASYMMETRIC, K_RESET, K_TOS, K_LOCAL, K_ENDPOINT,
     K_PEER, K_RTCP_PEER, K_ICE, K_DTLS, K_SRTP_IN, K_SRTP_OUT): True,
    (K_LEARNING, K_STRICT, K_HANDOVER, K_ASYMMETRIC, K_RESET, K_TOS, K_LOCAL, K_ENDPOINT,
     K_PEER, K_ICE, K_DTLS, K_SRTP_IN, K_SRTP_OUT): False,
}
#: the (ice, dtls) of a plain entry (both None)
_NO_WIRE = (None, None)

TRANSFORM_KEYS = {
    K_SRTP_IN: ("srtp", "inbound", "inbound"),
    K_SRTP_OUT: ("srtp", "outbound", "outbound"),
}

#: the direction words of ``srtp_resume`` / the ``srtp_index`` stats key,
#: by step list
RESUME_WORDS = {"inbound": "in", "outbound": "out"}


def srtp_indexes(relay):
    """``{"in": indexes, "out": indexes}`` of the steps of ``relay`` that
    keep indexes (``omnirtp.media.srtp``: what a restarted daemon resumes
    its SRTP from), only the directions that have some; None if neither."""
    out = None
    for steps, word in ((relay.inbound, "in"), (relay.outbound, "out")):
        for step in steps:
            get = getattr(step, "indexes", None)
            if get is not None:
                kept = get()
                if kept:
                    if out is None:
                        out = {}
                    out[word] = kept
    return out


def _key(value, what):
    """``(addr, port)`` from a 2-sequence, or ValueError naming ``what``."""
    try:
        address, port = value
        return (str(address), int(port))
    except (TypeError, ValueError):
        raise ValueError("%s must be an (address, port) pair, got %r" % (what, value)) from None


def _text(value, what, optional=False):
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError("%s must be a non-empty string, got %r" % (what, value))
    return value


def check_ice(value, where="ice"):
    """The normalised ``ice`` entry of a configure entry (a dict), or
    ValueError naming what is wrong.  ``candidates`` come back parsed as
    ``(text, Candidate)`` pairs."""
    if not isinstance(value, dict):
        raise ValueError("%s must be a dict or None, got %r" % (where, value))
    out = {
        "ufrag": _text(value.get("ufrag"), where + " ufrag"),
        "pwd": _text(value.get("pwd"), where + " pwd"),
        "remote_ufrag": _text(value.get("remote_ufrag"), where + " remote_ufrag", True),
        "remote_pwd": _text(value.get("remote_pwd"), where + " remote_pwd", True),
    }
    for name in ("controlling", "lite"):
        flag = value.get(name, False)
        if not isinstance(flag, bool):
            raise ValueError("%s %s must be true or false, got %r" % (where, name, flag))
        out[name] = flag
    component = value.get("component", 1)
    if component not in (1, 2) or isinstance(component, bool):
        raise ValueError("%s component must be 1 or 2, got %r" % (where, component))
    out["component"] = component
    candidates = value.get("candidates") or []
    if not isinstance(candidates, (list, tuple)):
        raise ValueError("%s candidates must be a list, got %r" % (where, candidates))
    parsed = []
    for text in candidates:
        try:
            parsed.append((text, parse_candidate(text)))
        except ValueError as e:
            raise ValueError("%s candidate %r: %s" % (where, text, e)) from None
    out["candidates"] = parsed
    bases = value.get("bases") or []
    if not isinstance(bases, (list, tuple)):
        raise ValueError("%s bases must be a list, got %r" % (where, bases))
    out["bases"] = tuple(_key(base, where + " base") for base in bases)
    return out


def _refuse(address):
    """The source authority of a socket that relays nothing (an ICE base
    other than the one selected): no source is accepted."""
    return False


class _BaseStun:
    """The STUN handler of one socket of an ICE agent with several local
    bases (the interface's addresses): hands the agent each datagram with
    the base of the address the socket is bound to now."""

    __slots__ = ("wire", "relay")

    def __init__(self, wire, relay):
        self.wire = wire
        self.relay = relay

    def datagram(self, data, source):
        wire = self.wire
        agent = wire.ice
        if agent is not None:
            agent.datagram(data, source, wire.base_keys.index(self.relay.bound))


def check_dtls(value, where="dtls"):
    """The normalised ``dtls`` entry (a dict), or ValueError."""
    if not isinstance(value, dict):
        raise ValueError("%s must be a dict or None, got %r" % (where, value))
    role = value.get("role")
    if role not in (DTLS_CLIENT, DTLS_SERVER):
        raise ValueError("%s role must be %r or %r, got %r" % (where, DTLS_CLIENT, DTLS_SERVER, role))
    fingerprint = value.get("fingerprint")
    if fingerprint is not None:
        from omnirtp.media.dtls import parse_fingerprint

        texts = [fingerprint] if isinstance(fingerprint, str) else fingerprint
        if not isinstance(texts, (list, tuple)) or not texts:
            raise ValueError("%s fingerprint must be a string, got %r" % (where, fingerprint))
        for text in texts:
            if not isinstance(text, str):
                raise ValueError("%s fingerprint must be a string, got %r" % (where, text))
            try:
                parse_fingerprint(text)
            except ValueError as e:
                raise ValueError("%s fingerprint: %s" % (where, e)) from None
        fingerprint = texts[0] if len(texts) == 1 else list(texts)
    return {"role": role, "fingerprint": fingerprint}


@implementer(IPacketTransform)
class HoldMedia:
    """A step that drops every packet: a DTLS socket's media while it has
    no keys (handshake pending or failed).  Counts what it dropped."""

    __slots__ = ("name", "dropped")

    def __init__(self, name):
        self.name = name
        self.dropped = 0

    def rtp(self, data):
        self.dropped += 1
        return None

    rtcp = rtp

    def counters(self):
        return {"dropped": self.dropped}


@implementer(IDatagramHandler)
class _Wire:
    """The ICE agent and DTLS endpoint of one socket (engine bookkeeping).

    It is the DTLS handler of the socket's demultiplexer: on a socket with
    ICE, DTLS is taken only from an address the agent authorised; the
    endpoint's records go to the socket's endpoint, or before there is one
    to the address the last accepted DTLS datagram came from.
    """

    def __init__(self, call_id, relay):
        self.call_id = call_id
        self.relay = relay
        self.demux = Demux().attach(relay)
        self.ice = None  # IceAgent
        self.ice_params = None  # the normalised entry in force
        self.dtls = None  # DtlsEndpoint
        self.dtls_params = None
        #: the steps DTLS puts in place of srtp_in / srtp_out (HoldMedia
        #: until the keys are in)
        self.dtls_in = None
        self.dtls_out = None
        self.dtls_source = None
        self.counts = {"consent-lost": 0, "ice-failed": 0, "ice-restarts": 0,
                       "dtls-unauthorised": 0, "dtls-failed": 0}
        #: ICE on several addresses of the interface: the local keys of the
        #: bases (this socket's first, then the ``bases`` of its entry) and
        #: the sockets bound to them at the start (relay first); the
        #: selected base's socket is the one ``relay`` reads and writes
        #: (RelaySocket.rebase).  One base: (relay.local,), (relay,)
        self.base_keys = (relay.local,)
        self.base_relays = (relay,)

    def base_send(self, index):
        """``send(data, address)`` out of the socket bound to base ``index``
        (:meth:`holder`; False when none is)."""
        key = self.base_keys[index]

        def send(data, address):
            relay = self.holder(key)
            return False if relay is None else relay.send(data, address)
        return send

    def holder(self, key):
        """The socket (of :attr:`base_relays`) bound to ``key`` now."""
        for relay in self.base_relays:
            if relay.bound == key:
                return relay
        return None

    def drop_bases(self):
        """Back to one base: the relay reads its own socket again and the
        other sockets go quiet."""
        relay = self.relay
        if relay.bound != relay.local:
            holder = self.holder(relay.local)
            # (a socket closed already, by a release, keeps what it closed)
            if holder is not None and holder.fileno() >= 0 and relay.fileno() >= 0:
                relay.rebase(holder)
        for other in self.base_relays[1:]:
            other.other = None
            other.authorise = None
        self.base_keys = (relay.local,)
        self.base_relays = (relay,)
        self.demux.stun = None

    def datagram(self, data, source):
        dtls = self.dtls
        if dtls is None:
            return
        ice = self.ice
        if ice is not None and source != self.relay.endpoint and not ice.authorised(source):
            self.counts["dtls-unauthorised"] += 1
            return
        self.dtls_source = source
        dtls.datagram(data, source)

    def dtls_send(self, data):
        relay = self.relay
        if relay.endpoint is not None:
            relay.send_endpoint(data)
            return
        source = self.dtls_source
        if source is not None and (self.ice is None or self.ice.authorised(source)):
            relay.send(data, source)
        else:
            relay.errors += 1

    def stop_ice(self):
        if self.ice is not None:
            self.ice.stop()
        self.ice = self.ice_params = None
        if len(self.base_relays) > 1:
            self.drop_bases()
        self.demux.stun = None

    def stop_dtls(self, notify=True):
        if self.dtls is not None:
            self.dtls.close(notify)
        self.dtls = self.dtls_params = self.dtls_in = self.dtls_out = None
        self.dtls_source = None
        self.demux.dtls = None

    def close(self, notify=True):
        self.stop_ice()
        self.stop_dtls(notify)

    def counters(self):
        """``{"ice": {...}, "dtls": {...}}`` (plain data) for stats."""
        out = {"datagrams": self.demux.counters(), "wire": dict(self.counts)}
        ice = self.ice
        if ice is not None:
            out["ice"] = {
                "state": ice.state,
                "selected": ice.selected,
                "selected_base": (self.base_keys[ice.selected_base]
                                  if ice.selected_base is not None else None),
                "controlling": ice.controlling,
                "lite": ice.lite,
                "component": ice.component,
                "pairs": len(ice.pairs()),
                "counters": ice.counters(),
            }
        dtls = self.dtls
        if dtls is not None:
            out["dtls"] = {
                "state": dtls.state,
                "role": dtls.role,
                "profile": dtls.profile.suite if dtls.profile is not None else None,
                "failure": dtls.failure,
                "counters": dtls.counters(),
            }
            if dtls.srtp_in is not None:
                # the keys the handshake exported (key material: for the state
                # store, so that a restarted daemon relays the leg on)
                out["dtls_srtp"] = {"in": dtls.srtp_in, "out": dtls.srtp_out,
                                    "role": dtls.role}
        return out


class _Totals:
    """Counters of sockets already released (so totals never go down)."""

    __slots__ = ("packets", "bytes", "errors", "junk", "kernel_packets", "kernel_bytes")

    def __init__(self):
        self.packets = self.bytes = self.errors = self.junk = 0
        #: of ``packets`` / ``bytes``: what the kernel forwarded (table = N)
        self.kernel_packets = self.kernel_bytes = 0

    def add(self, relay):
        self.packets += relay.packets
        self.bytes += relay.bytes
        self.errors += relay.errors
        self.junk += relay.junk


@implementer(IMediaEngine)
class EmbeddedEngine:
    """The media plane in this process.

    ``reactor`` provides ``IReactorFDSet`` and ``IReactorTime``;
    ``interfaces`` maps each local address it may bind to a
    ``(port_min, port_max)`` range.  ``bind(address, port)`` returns a
    bound non-blocking UDP socket (default :func:`omnirtp.media.relay.bind_udp`;
    tests pass a fake); ``rng`` shuffles the port pools.  ``transforms``
    maps a kind (``"srtp"``) to its ``ITransformFactory``; None: the
    plugins of ``omnirtp.plugins``, found when a configuration first asks
    for a transform.  ``socket_cpu_affinity`` N > 0 gives each call's
    media sockets SO_INCOMING_CPU 0, 1, ..., N-1, 0, ... (one value per
    call, the next call the next value; option ``socket-cpu-affinity``);
    0: not set.  ``certificate``: the daemon's DTLS
    :class:`omnirtp.media.dtls.Certificate` (the one whose fingerprint the
    negotiator writes), needed for ``dtls`` entries; a worker gets it later
    through :meth:`set_certificate`.
    """

    log = Logger()

    #: False: the debug line of each allocate is not emitted (set by a
    #: media worker whose log filter drops debug events: the event would
    #: only be built and dropped)
    log_debug = True

    def __init__(self, reactor, interfaces, bind=None, rng=None, poller=None, transforms=None,
                 certificate=None, codecs=None, forwarder=None, socket_cpu_affinity=0):
        self._reactor = reactor
        if not isinstance(socket_cpu_affinity, int) or socket_cpu_affinity < 0:
            raise ValueError("socket_cpu_affinity must be 0 or more, got %r"
                             % (socket_cpu_affinity,))
        #: socket-cpu-affinity: the number of values, the next call's value
        #: and each call's (call_id -> value; while it holds ports)
        self._cpus = socket_cpu_affinity
        self._cpu_next = 0
        self._call_cpu = {}
        self._cpu_failed = False
        #: an IForwarder (``table = N``, already started) or None
        self.forwarder = forwarder
        self._kernel_seen = {}  # local -> kernel packets at the last read
        self._kernel_stale = set()  # released calls whose streams the kernel refused to drop
        self._kernel_marks = {}  # call_id -> its sockets' packets at its last offload check
        self._kernel_retry = set()  # calls whose streams the kernel refused: checked again
        self._kernel_read_at = None  # the last full read of the counters (reactor seconds)
        self._kernel_totals_at = None  # the last full read for totals()
        self._kernel_loop = None
        if forwarder is not None:
            from twisted.internet.task import LoopingCall
            self._kernel_loop = LoopingCall(self._kernel_tick)
            self._kernel_loop.clock = reactor
            self._kernel_loop.start(KERNEL_TICK, now=False)
        #: {(encoding, clock, channels): ICodecFactory}; None: the plugins'
        #: (omnirtp.codecs.registry()) when a transcoder is first built
        self._codecs = codecs
        #: (addr, port) -> {"send", "recv", "transcode"} as last configured
        self._codec_state = {}
        #: (addr, port) -> (what it was built from, the middle step)
        self._transcoders = {}
        #: "PCMU/8000 -> PCMA/8000" -> ChainStats: every chain a
        #: transcoder of this engine ever had (``transcoders``)
        self._chain_stats = {}
        #: the LoopingCall sending RTCP for transcoded streams (while any),
        #: and the one ending each second of the chains' figures
        self._rtcp_timer = None
        self._chain_tick = None
        self.certificate = certificate
        #: (addr, port) -> _Wire of sockets with ICE or DTLS
        self._wires = {}
        #: RTP key of a port pair -> the RTP keys of the pairs on the
        #: interface's other addresses that were ICE bases of its sockets:
        #: released with it (kept after ICE is dropped, until the release)
        self._base_pairs = {}
        self._factories = transforms
        self._unusable = {}
        #: (addr, port) -> {configure key: (params, step)} of sockets with steps
        self._steps = {}
        self._bind = bind if bind is not None else bind_media
        self._real = bind is None
        # real sockets are read through one epoll (MediaPoller); a test's
        # fake sockets (``bind`` given) register with its reactor directly
        self._own_poller = poller is None and bind is None
        #: shutting down (close): DTLS sessions end without close_notify
        self._closing = False
        if self._own_poller:
            poller = MediaPoller(reactor)
        self._poller = poller
        if not interfaces:
            raise ValueError("the media engine needs at least one interface address")
        self._pools = {}
        for address, (port_min, port_max) in interfaces.items():
            self._pools[str(address)] = PortPool(port_min, port_max, rng=rng)
        self._sockets = {}  # (addr, port) -> RelaySocket, RTP and RTCP
        self._calls = {}  # call_id -> {rtp key: (rtp RelaySocket, rtcp RelaySocket)}
        self._released = _Totals()
        from omnirtp.recording.writer import Recordings

        #: call recording: per-call pcap writers and per-socket taps
        self._recordings = Recordings(reactor)

    # -- IMediaEngine -----------------------------------------------------

    def allocate(self, call_id, address, count):
        try:
            return defer.succeed(self._allocate(call_id, address, count))
        except Exception:
            return defer.fail()

    def claim(self, call_id, address, ports):
        try:
            return defer.succeed(self._allocate(call_id, address, len(ports), wanted=ports))
        except Exception:
            return defer.fail()

    def configure(self, call_id, sockets):
        try:
            self._configure(call_id, sockets)
        except Exception:
            return defer.fail()
        return defer.succeed(None)

    def release(self, call_id, sockets=None):
        try:
            self._release(call_id, sockets)
        except Exception:
            return defer.fail()
        return defer.succeed(None)

    def stats(self, call_id=None):
        return defer.succeed(self.stats_now(call_id))

    # -- the same, answered at once ---------------------------------------
    # The control plane's steps (``omnirtp.sync.steps``) take a plain value
    # as they take a fired Deferred: with this engine (``num-threads = 0``)
    # the negotiator, the dispatcher and the registry call these instead of
    # allocate, configure, release and stats (no Deferred per engine call).
    # Each returns what the Deferred would fire with, or raises what it
    # would fail with.

    def allocate_now(self, call_id, address, count):
        """:meth:`allocate`'s ports, or its exception raised."""
        return self._allocate(call_id, address, count)

    def configure_now(self, call_id, sockets):
        """:meth:`configure`, done (None), or its exception raised."""
        self._configure(call_id, sockets)

    def release_now(self, call_id, sockets=None):
        """:meth:`release`, done (None), or its exception raised."""
        self._release(call_id, sockets)

    def recording(self, call_id):
        """True while ``call_id`` has a recording open here, which its
        release finishes (its file is complete once the delete is
        answered, so that release is not put off past the reply)."""
        return call_id in self._recordings.recorders

    def stats_now(self, call_id=None):
        """:meth:`stats`'s counters."""
        if call_id is None:
            ids = list(self._calls)
        elif call_id in self._calls:
            ids = [call_id]
        else:
            ids = []
        result = {}
        kernel = {}
        if ids and self.forwarder is not None:
            if call_id is None:
                # all calls (the timeout sweep, once a second): as last read
                kernel = self._kernel_counters(fresh=False)
            else:
                # one call (query, delete, a timeout about to happen): now
                kernel = self._kernel_counters(fresh=True, locals=[
                    relay.local for pair in self._calls[call_id].values() for relay in pair])
        wires = self._wires
        for cid in ids:
            per = result[cid] = {}
            for rtp, rtcp in self._calls[cid].values():
                for relay in (rtp, rtcp):
                    counters = per[relay.local] = relay.counters()
                    if relay.inbound or relay.outbound:
                        kept = srtp_indexes(relay)
                        if kept is not None:
                            counters["srtp_index"] = kept
                    if kernel:
                        _merge_kernel(counters, kernel.get(relay.local))
                    if wires:
                        wire = wires.get(relay.local)
                        if wire is not None:
                            counters.update(wire.counters())
        return result

    def last_packets(self):
        """Fire with ``{call_id: the newest last_packet of its sockets}``
        for every call holding ports: what the registry's once-a-second
        timeout sweep needs of :meth:`stats` (None), without a dict of
        counters per socket (``stats`` gives the same ``last_packet``s; a
        socket's kept RTCP report is parsed here as ``stats`` parses it)."""
        out = {}
        for call_id, pairs in self._calls.items():
            newest = None
            for rtp, rtcp in pairs.values():
                for relay in (rtp, rtcp):
                    if relay.rtcp_last is not None:
                        relay.latest_report()
                    if newest is None or relay.last_packet > newest:
                        newest = relay.last_packet
            if newest is not None:
                out[call_id] = newest
        return defer.succeed(out)

    def totals(self):
        done = self._released
        packets, octets, errors, junk = done.packets, done.bytes, done.errors, done.junk
        kernel_packets, kernel_bytes = done.kernel_packets, done.kernel_bytes
        kernel = {}
        if self.forwarder is not None:
            now = self._reactor.seconds()
            at = self._kernel_totals_at
            fresh = at is None or not 0 <= now - at < KERNEL_CACHE
            if fresh:
                self._kernel_totals_at = now
            kernel = self._kernel_counters(fresh=fresh)
        for local, (kp, kb) in kernel.items():
            if local in self._sockets:
                kernel_packets += kp
                kernel_bytes += kb
        packets += kernel_packets - done.kernel_packets
        octets += kernel_bytes - done.kernel_bytes
        for relay in self._sockets.values():
            packets += relay.packets
            octets += relay.bytes
            errors += relay.errors
            junk += relay.junk
        kernel_media = mixed_media = 0
        if self.forwarder is not None:
            offloaded = self.forwarder.offloaded()
            for pairs in self._calls.values():
                for rtp, rtcp in pairs.values():
                    if rtp.local not in offloaded and rtcp.local not in offloaded:
                        continue
                    # an RTCP socket that never saw a packet is nobody's
                    if rtp.local in offloaded and (rtcp.local in offloaded
                                                   or rtcp.packets == 0):
                        kernel_media += 1
                    else:
                        mixed_media += 1
        return defer.succeed(
            {
                "packets": packets,
                "bytes": octets,
                "errors": errors,
                "junk": junk,
                "ports_used": sum(p.used for p in self._pools.values()),
                "ports_free": sum(p.free for p in self._pools.values()),
                "recording_errors": self._recordings.errors,
                # of packets / bytes: forwarded by the kernel (table = N)
                "kernel_packets": kernel_packets,
                "kernel_bytes": kernel_bytes,
                # media (a socket pair: RTP and its RTCP) relayed by the
                # kernel only, or partly (rtpengine's media_kernel/_mixed)
                "media_kernel": kernel_media,
                "media_mixed": mixed_media,
            }
        )

    def transcoders(self):
        """``list transcoders``: ``{chain: (transcoders now, (packets,
        octets, samples) decoded in the last whole second or None)}`` for
        every chain a transcoder of this engine ever had (a chain stays,
        with 0 transcoders, once its calls are gone)."""
        counts = dict.fromkeys(self._chain_stats, 0)
        for want, step in self._transcoders.values():
            if want[0] == "rtp":
                for chain in step.chains():
                    counts[chain] = counts.get(chain, 0) + 1
        stats = self._chain_stats
        return defer.succeed({chain: (n, stats[chain].last if chain in stats else None)
                              for chain, n in counts.items()})

    # -- not in the interface ---------------------------------------------

    def close(self):
        """Release every port of every call, synchronously (shutdown), and
        stop reading (the engine's own poller leaves the reactor).  DTLS
        sessions end without close_notify: the process stopping is not the
        calls ending (a restarted daemon or a standby relays them on with
        the kept keys, docs/scaling.md), and the peer would tear down its
        DTLS transport on the alert."""
        self._closing = True
        for call_id in list(self._calls):
            self._release(call_id, None)
        self._rtcp_schedule()
        if self._kernel_loop is not None:
            if self._kernel_loop.running:
                self._kernel_loop.stop()
            self.forwarder.stop()
        if self._own_poller:
            self._poller.close()

    def media_poller(self):
        """The engine's own :class:`~omnirtp.media.relay.MediaPoller`, or
        None (a poller given by the caller, or fake sockets): a media
        worker runs its loop (omnirtp.media.worker.use_media_loop)."""
        return self._poller if self._own_poller else None

    def set_certificate(self, certificate):
        """Use ``certificate`` (a :class:`omnirtp.media.dtls.Certificate`)
        for DTLS endpoints made from now on (a worker gets the control
        process's one after it started)."""
        self.certificate = certificate

    def wire(self, key):
        """The ICE/DTLS bookkeeping of socket ``key`` (``.ice``: the
        IceAgent, ``.dtls``: the DtlsEndpoint), or None."""
        return self._wires.get(key)

    def pool(self, address):
        """The :class:`PortPool` of a local ``address`` (KeyError if none)."""
        return self._pools[address]

    def socket(self, key):
        """The :class:`RelaySocket` bound to ``key`` or None."""
        return self._sockets.get(key)

    # -- implementation ---------------------------------------------------

    def _companion(self):
        """The factory of the media sockets' connected companions (real
        sockets only): one function for all (no closure per socket, which
        an idle call would keep)."""
        return bind_companion if self._real else None

    def adopt_now(self, call_id, groups, socks, entries, since):
        """Take over a call the control process parked
        (:mod:`omnirtp.media.park`): ``socks`` are its bound sockets (RTP
        and RTCP of each pair) of the ports of ``groups`` (``[(address,
        [rtp ports])]``), in order; they become this engine's as if it had
        bound them (ports of its own range are claimed in its pool), then
        ``entries`` are configured and each socket's learning window and
        ``last_packet`` start at its ``since`` (``{key: seconds}``): the
        state the sockets would have had here since they were bound.  On
        failure nothing of the call stays and every socket given is
        closed."""
        if call_id in self._calls:
            raise ValueError("call %r holds media ports already" % (call_id,))
        given = iter(socks)
        left = list(socks)
        try:
            for address, ports in groups:
                pairs = {}
                for port in ports:
                    pairs[port] = (next(given), next(given))
                self._allocate(call_id, address, len(ports), wanted=list(ports), given=pairs)
                for port in ports:
                    for sock in pairs[port]:
                        left.remove(sock)
            self._configure(call_id, entries)
        except BaseException:
            for sock in left:
                sock.close()
            self._release(call_id, None)
            raise
        sockets = self._sockets
        for key, at in since.items():
            relay = sockets.get(tuple(key))
            if relay is not None:
                relay.window_end = at + LEARNING_WINDOW
                relay.last_packet = at

    def _allocate(self, call_id, address, count, wanted=None, given=None):
        pool = self._pools.get(address)
        if pool is None:
            raise ValueError(
                "address %r is not a media interface (known: %s)"
                % (address, ", ".join(sorted(self._pools)))
            )
        if not isinstance(count, int) or count < 0:
            raise ValueError("count must be a non-negative integer, got %r" % (count,))
        bind = self._bind

        def bind_pair(port):
            if given is not None:
                return given[port]
            try:
                return bind_both(bind, address, port)
            except OSError as e:
                if e.errno in NO_FILES_ERRNOS:
                    raise FilesExhausted() from e  # not a port to skip: no port binds now
                raise

        taken = []
        try:
            if wanted is None:
                for _ in range(count):
                    taken.append(pool.acquire(bind_pair))
            else:
                for port in wanted:
                    if given is not None and not pool.port_min <= port <= pool.port_max:
                        # (adopted from another worker's slice: not this pool's)
                        taken.append((port, bind_pair(port)))
                        continue
                    pool.claim(port)
                    try:
                        taken.append((port, bind_pair(port)))
                    except BaseException:
                        pool.release(port)
                        raise
        except BaseException as e:
            for port, (rtp, rtcp) in taken:
                rtp.close()
                rtcp.close()
                pool.release(port)
            if isinstance(e, FilesExhausted):
                self.log.warn("call {call_id}: no open file left for its ports on {address} "
                              "(open files limit {limit}): answered 'Ran out of ports'; "
                              "raise the limit (LimitNOFILE, ulimit -n)", call_id=call_id,
                              address=address, limit=_file_limit())
            raise
        if not taken:
            return []
        pairs = self._calls.setdefault(call_id, {})
        ports = []
        companion = self._companion()
        cpu = self._cpu_of(call_id) if self._cpus else -1
        for port, (rtp_sock, rtcp_sock) in taken:
            rtp = RelaySocket(self._reactor, rtp_sock, (address, port), self._poller, companion)
            rtcp = RelaySocket(self._reactor, rtcp_sock, (address, port + 1), self._poller,
                               companion, True)
            rtcp.rtp_sibling = rtp
            if cpu >= 0:
                self._set_cpu(call_id, (rtp, rtcp), cpu)
            self._sockets[rtp.local] = rtp
            self._sockets[rtcp.local] = rtcp
            pairs[rtp.local] = (rtp, rtcp)
            rtp.start()
            rtcp.start()
            ports.append(port)
        if self.log_debug:
            self.log.debug(
                "allocated {count} port pairs on {address} for {call_id}: {ports}",
                count=count,
                address=address,
                call_id=call_id,
                ports=ports,
            )
        return ports

    def _cpu_of(self, call_id):
        """The call's SO_INCOMING_CPU value: its own, or the next one."""
        cpu = self._call_cpu.get(call_id)
        if cpu is None:
            cpu = self._call_cpu[call_id] = self._cpu_next
            self._cpu_next = (cpu + 1) % self._cpus
        return cpu

    def _set_cpu(self, call_id, relays, cpu):
        try:
            for relay in relays:
                relay.set_cpu(cpu)
        except (OSError, AttributeError) as e:
            # as rtpengine: logged (once here, not per call), the call goes on
            if not self._cpu_failed:
                self._cpu_failed = True
                self.log.error("call {call_id}: cannot set the socket CPU affinity "
                               "(socket-cpu-affinity): {error}", call_id=call_id, error=e)

    def _bound(self, key, name):
        """The bound RelaySocket of ``key``, the value of ``entry[name]``
        (not None)."""
        if not (type(key) is tuple and len(key) == 2
                and type(key[0]) is str and type(key[1]) is int):
            key = _key(key, name)
        relay = self._sockets.get(key)
        if relay is None:
            raise ValueError("%s socket %s:%d is not bound here" % ((name,) + key))
        return relay

    def _factory(self, key, kind):
        """The ``ITransformFactory`` of ``kind`` (ValueError if none here)."""
        if self._factories is None:
            from omnirtp.media.transforms import discover

            self._factories, self._unusable = discover()
        factory = self._factories.get(kind)
        if factory is None:
            reason = self._unusable.get(kind, "no %r transform plugin found" % (kind,))
            raise ValueError("%s: %s" % (key, reason))
        return factory

    def _plan_steps(self, relay, entry):
        """The step changes an entry asks for: ``{configure key: (params,
        step) or None}`` for the keys it names whose parameters differ from
        those in force (None: remove).  Steps are built here, so a bad entry
        fails before anything is applied."""
        resume = entry.get(K_SRTP_RESUME)
        if resume is not None and not isinstance(resume, dict):
            raise ValueError("%s of %s:%d must be a dict" % ((K_SRTP_RESUME,) + relay.local))
        current = self._steps.get(relay.local)
        if current is None:
            if entry.get(K_SRTP_IN) is None and entry.get(K_SRTP_OUT) is None:
                return {}  # no step now and none asked for (TRANSFORM_KEYS)
            current = {}
        changes = {}
        for key, (kind, slot, method) in TRANSFORM_KEYS.items():
            if key not in entry:
                continue  # absent: unchanged
            params = entry[key]
            old = current.get(key)
            if params is None:
                if old is not None:
                    changes[key] = None
                continue
            factory = self._factory(key, kind)
            try:
                factory.check(params)
            except ValueError as e:
                raise ValueError("%s of %s:%d: %s" % ((key,) + relay.local + (e,))) from None
            if old is not None and old[0] == params:
                continue  # the same key: keep the running context
            step = getattr(factory, method)(params)
            kept = resume.get(RESUME_WORDS[slot]) if resume is not None else None
            if kept is not None and getattr(step, "resume", None) is not None:
                # a new context with a key counted before (a restart, a
                # takeover): on from where that one was
                try:
                    step.resume(kept)
                except ValueError as e:
                    raise ValueError("%s of %s:%d: %s"
                                     % ((K_SRTP_RESUME,) + relay.local + (e,))) from None
            changes[key] = (dict(params), step)
        return changes

    def _apply_steps(self, relay, changes, update=True):
        current = self._steps.setdefault(relay.local, {})
        for key, value in changes.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        if not current:
            del self._steps[relay.local]
        self._install_steps(relay, update)

    def _install_steps(self, relay, update=True):
        """Give ``relay`` its steps: DTLS's (keys or HoldMedia) on a socket
        with DTLS, else those of srtp_in / srtp_out.  ``update`` False:
        the pipelines are left to the caller (``_configure``'s
        :meth:`_refresh`)."""
        wire = self._wires.get(relay.local)
        middle = self._middle(relay.local)
        if wire is not None and wire.dtls is not None:
            relay.set_transforms(inbound=[wire.dtls_in], middle=middle, outbound=[wire.dtls_out],
                                 update=update)
            return
        current = self._steps.get(relay.local, {})
        lists = {"inbound": [], "outbound": []}
        for key, (_kind, slot, _method) in TRANSFORM_KEYS.items():
            if key in current:
                lists[slot].append(current[key][1])
        relay.set_transforms(inbound=lists["inbound"], middle=middle, outbound=lists["outbound"],
                             update=update)

    def _middle(self, local):
        """The ``middle`` steps of socket ``local``: the recording tap
        first (it records the leg as it was on the wire, decrypted), then
        the transcoder."""
        current = self._transcoders.get(local)
        return self._recordings.steps(local) + ((current[1],) if current else ())

    def _refresh(self, call_id, installed=()):
        """Recompute every pipeline of a call (chains follow peers and
        rtcp_peers across the call), and those of the sockets outside it
        that send out of a socket of ``installed`` (whose steps were set
        without an update)."""
        pairs = self._calls.get(call_id, {})
        for rtp, rtcp in pairs.values():
            rtp.update_pipeline()
            rtcp.update_pipeline()
        for relay in installed:
            for feeder in relay._feeders:
                held = pairs.get((feeder.local[0], feeder.local[1] & ~1))
                if held is None or feeder not in held:
                    feeder.update_pipeline()

    # -- transcoding (off the per-packet path) ----------------------------

    def _plan_codecs(self, relay, entry):
        """The codec state an entry leaves ``relay`` with (validated):
        ``codecs_send`` / ``codecs_recv`` as given (absent: as before),
        ``transcode`` as given (absent: False).  A socket that neither
        has nor is given any of it (a plain call) gets :data:`_NO_CODECS`,
        no dict made."""
        old = self._codec_state.get(relay.local)
        if (old is None and K_PTIME not in entry
                and K_CODECS_SEND not in entry and K_CODECS_RECV not in entry
                and not entry.get(K_TRANSCODE) and entry.get(K_REPACKETISE) is None):
            return _NO_CODECS
        state = dict(old or {"send": None, "recv": None, "ptime": None})
        if K_PTIME in entry:
            ptime = entry[K_PTIME]
            if ptime is not None and (type(ptime) is not int
                                      or not PTIME_MIN <= ptime <= PTIME_MAX):
                raise ValueError("ptime of %s:%d must be %d-%d (ms) or None, got %r"
                                 % (relay.local + (PTIME_MIN, PTIME_MAX, ptime)))
            state["ptime"] = ptime
        for key, name in ((K_CODECS_SEND, "send"), (K_CODECS_RECV, "recv")):
            if key in entry:
                value = entry[key]
                if value is None:
                    state[name] = None
                    continue
                # (imported here: a call that transcodes nothing never loads it)
                from omnirtp.codecs.transcode import normalise_formats

                where = "%s of %s:%d" % ((key,) + relay.local)
                state[name] = normalise_formats(value, where)
        state["transcode"] = bool(entry.get(K_TRANSCODE, False))
        repacketise = entry.get(K_REPACKETISE)
        if repacketise is not None and (type(repacketise) is not int
                                        or not PTIME_MIN <= repacketise <= PTIME_MAX):
            raise ValueError("repacketise of %s:%d must be %d-%d (ms) or None, got %r"
                             % (relay.local + (PTIME_MIN, PTIME_MAX, repacketise)))
        state["repacketise"] = repacketise
        return _NO_CODECS if state == _NO_CODECS else state

    def _registry(self):
        if self._codecs is None:
            from omnirtp.codecs import registry

            self._codecs = registry()
        return self._codecs

    def _update_transcoders(self, call_id):
        """Give every socket of the call the middle step its codec state
        asks for; True if any changed.  A step whose inputs are unchanged
        is kept."""
        if not self._codec_state and not self._transcoders:
            # no socket transcodes or repacketises (plain calls): the loop
            # below would find nothing to change
            if self._rtcp_timer is not None:
                self._rtcp_schedule()
            return False
        changed = False
        for rtp, rtcp in self._calls.get(call_id, {}).values():
            for relay in (rtp, rtcp):
                local = relay.local
                state = self._codec_state.get(local)
                want = None
                peer = relay.peer
                peer_state = self._codec_state.get(peer.local) if peer else None
                if state is not None and state["transcode"]:
                    if relay is rtcp:
                        want = ("rtcp",)
                    else:
                        recv = peer_state["recv"] if peer_state else None
                        ptime = peer_state.get("ptime") if peer_state else None
                        if state["send"] and recv:
                            want = ("rtp", repr(state["send"]), repr(recv))
                if (want is None and relay is rtp and peer_state is not None
                        and peer_state.get("repacketise")):
                    want = ("repacketise", peer_state["repacketise"])
                current = self._transcoders.get(local)
                if (current[0] if current else None) == want:
                    if want is not None and want[0] == "rtp" and current[1].ptime_asked != ptime:
                        current[1].set_ptime(ptime)
                    continue
                if want is None:
                    del self._transcoders[local]
                    relay.set_transforms(middle=self._middle(local))
                else:
                    if want[0] == "rtcp":
                        from omnirtp.codecs.transcode import RtcpTerminator

                        step = RtcpTerminator()
                    elif want[0] == "repacketise":
                        from omnirtp.media.repacketise import Repacketiser

                        step = Repacketiser(want[1])
                    else:
                        from omnirtp.codecs.transcode import Transcoder

                        step = Transcoder(state["send"], recv, self._registry(), ptime=ptime,
                                          chains=self._chain_stats)
                    self._transcoders[local] = (want, step)
                    relay.set_transforms(middle=self._middle(local))
                changed = True
        self._rtcp_schedule()
        return changed

    def _rtcp_schedule(self):
        """Run the RTCP timer and the transcoding chains' one-second tick
        (``transcoders``) while some transcoder exists, else stop them
        (the chains' figures then end too)."""
        timer = self._rtcp_timer
        if self._transcoders:
            if timer is None:
                timer = self._rtcp_timer = task.LoopingCall(self._send_reports)
                timer.clock = self._reactor
                timer.start(RTCP_INTERVAL, now=False)
                tick = self._chain_tick = task.LoopingCall(self._tick_chains)
                tick.clock = self._reactor
                tick.start(1.0, now=False)
        elif timer is not None:
            self._rtcp_timer = None
            if timer.running:
                timer.stop()
            tick, self._chain_tick = self._chain_tick, None
            if tick is not None and tick.running:
                tick.stop()
            for stats in self._chain_stats.values():
                stats.end()

    def _tick_chains(self):
        for stats in self._chain_stats.values():
            stats.tick()

    def _send_reports(self):
        """Every :data:`RTCP_INTERVAL`: for each transcoded stream that has
        sent something, an SR (with a report block for the reverse
        stream) to the party it goes to, out of the socket the party's own
        RTCP would have been relayed through (its RTCP socket, or its RTP
        socket with rtcp-mux) and that socket's outbound steps (SRTCP).  Failures are counted, never
        raised."""
        now = self._reactor.seconds()
        for local, (want, step) in list(self._transcoders.items()):
            if want[0] != "rtp" or not step.sent:
                continue
            relay = self._sockets.get(local)
            peer = relay.peer if relay is not None else None
            if peer is None:
                continue
            try:
                reverse = self._transcoders.get(peer.local)
                block = reverse[1].report_block() if reverse and reverse[0][0] == "rtp" else b""
                elapsed = max(0.0, now - relay.last_packet)
                data = step.sender_report(
                    now, step.last_ts + int(elapsed * step.out_clock), block)
                # where the party's own RTCP would have gone: the RTCP
                # split of this socket, else the peer of its RTCP sibling
                # (Y's RTP socket when Y multiplexes), else the RTP peer
                out = relay.rtcp_peer
                if out is None:
                    sibling = self._sockets.get((local[0], local[1] + 1))
                    out = sibling.peer if sibling is not None else None
                if out is None:
                    out = peer
                for transform in out.outbound:
                    data = transform.rtcp(data)
                    if data is None:
                        break
                if data is not None:
                    out.send_endpoint(data)
            except Exception:
                relay.errors += 1

    def transcoder(self, key):
        """The transcoding step of socket ``key``, or None."""
        current = self._transcoders.get(key)
        return current[1] if current else None

    # -- ICE and DTLS (off the per-packet path) ---------------------------

    _ABSENT = object()

    def _plan_wire(self, relay, entry):
        """``(ice, dtls)`` changes of an entry: ``_ABSENT`` (unchanged),
        None (remove) or the normalised dict; ValueError for a bad one."""
        ice = dtls = self._ABSENT
        if K_ICE in entry:
            ice = entry[K_ICE]
            if ice is not None:
                ice = check_ice(ice, "%s of %s:%d" % ((K_ICE,) + relay.local))
                for base in ice["bases"]:
                    other = self._sockets.get(base)
                    if other is None or other is relay or other.is_rtcp != relay.is_rtcp:
                        raise ValueError("%s of %s:%d: base %s:%d is not a socket of the call"
                                         % ((K_ICE,) + relay.local + base))
        if K_DTLS in entry:
            dtls = entry[K_DTLS]
            if dtls is not None:
                where = "%%s of %s:%d" % relay.local
                dtls = check_dtls(dtls, where % K_DTLS)
                if self.certificate is None:
                    raise ValueError("%s: this media engine has no DTLS certificate"
                                     % (where % K_DTLS,))
                self._factory(K_DTLS, "srtp")
        return ice, dtls

    def _wire_for(self, call_id, relay):
        wire = self._wires.get(relay.local)
        if wire is None:
            wire = self._wires[relay.local] = _Wire(call_id, relay)
        return wire

    def _drop_wire_if_idle(self, wire):
        if wire.ice is None and wire.dtls is None:
            if self._wires.get(wire.relay.local) is wire:
                del self._wires[wire.relay.local]
            wire.relay.authorise = None
            if wire.relay.other is wire.demux:
                wire.relay.other = None

    def _apply_ice(self, call_id, relay, params):
        """Before ``relay.configure``: the socket's authority follows."""
        wire = self._wires.get(relay.local)
        if params is None:
            if wire is not None and wire.ice is not None:
                wire.stop_ice()
                relay.authorise = None
                self._drop_wire_if_idle(wire)
            return
        wire = self._wire_for(call_id, relay)
        old = wire.ice_params
        agent = wire.ice
        old_remote = (old["remote_ufrag"], old["remote_pwd"]) if old is not None else None
        new_remote = (params["remote_ufrag"], params["remote_pwd"])
        if None in new_remote:
            new_remote = None  # not known (yet): not a change
        # the same local credentials, and remote ones that do not differ
        # from known ones (unknown on either side is no restart)
        same = (
            agent is not None
            and old["ufrag"] == params["ufrag"]
            and old["pwd"] == params["pwd"]
            and old["component"] == params["component"]
            and (new_remote is None or None in old_remote or new_remote == old_remote)
        )
        keep = same and old["bases"] == params["bases"]
        if keep:
            if new_remote is not None and None in old_remote:
                agent.set_remote_credentials(*new_remote)
            elif new_remote is None:
                params = dict(params, remote_ufrag=old["remote_ufrag"], remote_pwd=old["remote_pwd"])
            known = {text for text, _cand in old["candidates"]}
            merged = list(old["candidates"])
            for text, candidate in params["candidates"]:
                if text not in known:
                    known.add(text)
                    merged.append((text, candidate))
                    agent.add_remote_candidate(candidate)
            wire.ice_params = dict(params, candidates=merged)
            return
        if agent is not None:
            # ICE restart: media stays on the old address until the new
            # agent selects one (RFC 8445 9); new local bases alone (the
            # other addresses' ports, bound after a worker's first
            # configure of a new call) are no restart
            if not same:
                wire.counts["ice-restarts"] += 1
            agent.stop()
        else:
            relay.select(None)  # nothing is authorised yet
        if len(wire.base_relays) > 1 and wire.base_keys[1:] != params["bases"]:
            wire.drop_bases()
        if params["bases"] and len(wire.base_relays) == 1:
            others = tuple(self._sockets[base] for base in params["bases"])
            wire.base_keys = (relay.local,) + params["bases"]
            wire.base_relays = (relay,) + others
            kept = self._base_pairs.setdefault((relay.local[0], relay.local[1] & ~1), set())
            kept.update((base[0], base[1] & ~1) for base in params["bases"])
            for other in others:
                Demux(_BaseStun(wire, other), wire).attach(other)
                other.authorise = _refuse
        made = []  # the callbacks know which agent calls them (a restart replaces it)
        agent = IceAgent(
            self._reactor,
            wire.base_send(0) if params["bases"] else relay.send,
            lambda address: self._ice_selected(wire, made[0], address),
            params["ufrag"],
            params["pwd"],
            controlling=params["controlling"],
            lite=params["lite"],
            component=params["component"],
            local_address=relay.local,
            on_consent_lost=lambda: self._ice_consent_lost(wire, made[0]),
            on_failed=lambda: self._ice_failed(wire, made[0]),
            bases=[(key, wire.base_send(index)) for index, key in enumerate(params["bases"], 1)],
        )
        made.append(agent)
        if params["remote_ufrag"] is not None and params["remote_pwd"] is not None:
            agent.set_remote_credentials(params["remote_ufrag"], params["remote_pwd"])
        for _text_, candidate in params["candidates"]:
            agent.add_remote_candidate(candidate)
        wire.ice = agent
        wire.ice_params = params
        wire.demux.stun = _BaseStun(wire, relay) if params["bases"] else agent
        relay.authorise = agent.authorised

    def _apply_dtls(self, call_id, relay, params):
        """After ``relay.configure``; True if the socket's steps changed."""
        wire = self._wires.get(relay.local)
        if params is None:
            if wire is None or wire.dtls is None:
                return False
            wire.stop_dtls()
            self._drop_wire_if_idle(wire)
            return True
        wire = self._wire_for(call_id, relay)
        old = wire.dtls_params
        if old is not None and old["role"] == params["role"]:
            if params["fingerprint"] is None or old["fingerprint"] == params["fingerprint"]:
                return False  # the same, or not known in this entry: unchanged
            if old["fingerprint"] is None:
                wire.dtls.set_remote_fingerprint(params["fingerprint"])
                wire.dtls_params = params
                return False
        from omnirtp.media.dtls import DtlsEndpoint

        if wire.dtls is not None:
            wire.stop_dtls()
        made = []
        endpoint = DtlsEndpoint(
            params["role"], self.certificate, params["fingerprint"], wire.dtls_send,
            lambda srtp_in, srtp_out: self._dtls_keys(wire, made[0], srtp_in, srtp_out),
            lambda reason: self._dtls_failed(wire, made[0], reason),
            self._reactor)
        made.append(endpoint)
        wire.dtls = endpoint
        wire.dtls_params = params
        wire.dtls_in = HoldMedia("dtls-hold-in")
        wire.dtls_out = HoldMedia("dtls-hold-out")
        wire.demux.dtls = wire
        return True

    def _start_wire(self, wire):
        """Start what can start: the ICE agent; a DTLS client once the
        socket has an endpoint (ICE selected one, or the SDP's without ICE)."""
        if wire.ice is not None:
            wire.ice.start()
        dtls = wire.dtls
        if (dtls is not None and dtls.role == DTLS_CLIENT and dtls.state == "new"
                and wire.relay.endpoint is not None):
            dtls.start()

    def _ice_selected(self, wire, agent, address):
        if wire.ice is not agent:
            return
        relay = wire.relay
        if len(wire.base_keys) > 1:
            # media goes out of (and comes in on) the selected pair's base
            key = wire.base_keys[agent.selected_base]
            if relay.bound != key:
                holder = wire.holder(key)
                if holder is not None:
                    relay.rebase(holder)
        relay.select(address)
        self.log.debug("call {call_id}: ICE selected {address} on {local}",
                       call_id=wire.call_id, address=address, local=wire.relay.local)
        self._start_wire(wire)

    def _ice_consent_lost(self, wire, agent):
        if wire.ice is not agent:
            return
        wire.counts["consent-lost"] += 1
        address = wire.relay.endpoint
        wire.relay.select(None)
        self.log.warn("call {call_id}: ICE consent lost on {local}; no more media to {address}",
                      call_id=wire.call_id, local=wire.relay.local, address=address)

    def _ice_failed(self, wire, agent):
        if wire.ice is not agent:
            return
        wire.counts["ice-failed"] += 1
        self.log.warn("call {call_id}: ICE checks failed on {local}; no media for this party",
                      call_id=wire.call_id, local=wire.relay.local)

    def _dtls_keys(self, wire, endpoint, srtp_in, srtp_out):
        if wire.dtls is not endpoint:
            return
        factory = self._factory(K_DTLS, "srtp")
        try:
            step_in, step_out = factory.inbound(srtp_in), factory.outbound(srtp_out)
        except Exception as e:
            self._dtls_failed(wire, endpoint, "SRTP with the exported keys: %s" % (e,))
            return
        wire.dtls_in, wire.dtls_out = step_in, step_out
        self._install_steps(wire.relay)
        self._refresh(wire.call_id)
        self.log.info("call {call_id}: DTLS-SRTP ({suite}) established on {local}",
                      call_id=wire.call_id, suite=srtp_in.get("suite"), local=wire.relay.local)

    def _dtls_failed(self, wire, endpoint, reason):
        if wire.dtls is not endpoint:
            return
        wire.counts["dtls-failed"] += 1
        self.log.warn("call {call_id}: DTLS on {local} failed: {reason}; no media for this party",
                      call_id=wire.call_id, local=wire.relay.local, reason=reason)

    def _configure(self, call_id, entries):
        pairs = self._calls.get(call_id)
        if pairs is None:
            raise ValueError("call %r holds no media ports" % (call_id,))
        sockets = self._sockets
        steps = self._steps
        codec_state = self._codec_state
        absent = self._ABSENT
        plan = []
        # validate everything first so a bad entry changes nothing
        for entry in entries:
            # the negotiator's entries with the keys of a plain call in
            # their order (RTP, RTCP): their values read at once (the same
            # values the look-ups below find), else each looked up
            order = _ORDERED.get(tuple(entry)) if entry.__class__ is dict else None
            if order is not None:
                if order:
                    (learning, strict, handover, asymmetric, reset, tos, local, endpoint,
                     peer_relay, rtcp_peer_relay, ice, dtls, srtp_in,
                     srtp_out) = entry.values()
                else:
                    (learning, strict, handover, asymmetric, reset, tos, local, endpoint,
                     peer_relay, ice, dtls, srtp_in, srtp_out) = entry.values()
                    rtcp_peer_relay = None
                learning = learning or LEARN_DELAYED
                record = absent
            else:
                # (a dict's bound get, made only for an entry read key by
                # key: an attribute look-up 3.11 does not specialise)
                get = entry.get
                local = get(K_LOCAL)
                peer_relay = get(K_PEER)
                rtcp_peer_relay = get(K_RTCP_PEER)
                endpoint = get(K_ENDPOINT)
                learning = get(K_LEARNING) or LEARN_DELAYED
                tos = get(K_TOS)
                record = get(K_RECORD, absent)
            if not (type(local) is tuple and len(local) == 2
                    and type(local[0]) is str and type(local[1]) is int):
                local = _key(local, "local")
            relay = sockets.get(local)
            if relay is None or (local[0], local[1] & ~1) not in pairs:
                raise ValueError("socket %s:%d is not held by call %r" % (local[0], local[1], call_id))
            if peer_relay is not None:
                # (_bound's look-up of a well-formed key, inline; else _bound)
                bound = sockets.get(peer_relay) if (
                    type(peer_relay) is tuple and len(peer_relay) == 2
                    and type(peer_relay[0]) is str and type(peer_relay[1]) is int) else None
                peer_relay = self._bound(peer_relay, K_PEER) if bound is None else bound
            if rtcp_peer_relay is not None:
                rtcp_peer_relay = self._bound(rtcp_peer_relay, K_RTCP_PEER)
            if endpoint is not None and not (type(endpoint) is tuple and len(endpoint) == 2
                                             and type(endpoint[0]) is str
                                             and type(endpoint[1]) is int):
                endpoint = _key(endpoint, "endpoint")
            if learning not in LEARNING_MODES:
                raise ValueError(
                    "learning mode %r is not one of %s"
                    % (learning, ", ".join(sorted(LEARNING_MODES)))
                )
            if tos is not None and (type(tos) is not int or not 0 <= tos <= 255):
                raise ValueError("tos must be an integer from 0 to 255, got %r" % (tos,))
            if order is None:
                if record is not absent:
                    self._recordings.check(record)
                if len(entry) <= 2 and set(entry) <= _RECORD_ONLY:
                    # only the recording changes (start/stop/pause recording)
                    plan.append((relay, None, {}, (absent, absent), absent, record))
                    continue
                strict, handover = get(K_STRICT), get(K_HANDOVER)
                asymmetric, reset = get(K_ASYMMETRIC), get(K_RESET)
            # RelaySocket.apply's arguments, in its order (update: False)
            args = (peer_relay, endpoint, rtcp_peer_relay, learning,
                    True if strict else False, True if handover else False,
                    True if asymmetric else False, True if reset else False, tos, False)
            # a plain entry for a socket with no steps and no codec state
            # (a plain call): what the three plans below give for it,
            # without them
            if order is not None:
                # (the tables looked up only while they hold anything: a
                # plain call's engine has neither steps nor codec state)
                if (ice is None and dtls is None and srtp_in is None and srtp_out is None
                        and (not steps or local not in steps)
                        and (not codec_state or local not in codec_state)):
                    plan.append((relay, args, None, _NO_WIRE, _NO_CODECS, absent))
                    continue
            elif (entry.keys() <= _PLAIN_KEYS and local not in steps
                    and local not in codec_state
                    and get(K_SRTP_IN) is None and get(K_SRTP_OUT) is None
                    and get(K_ICE) is None and get(K_DTLS) is None):
                plan.append((relay, args, {}, (get(K_ICE, absent), get(K_DTLS, absent)),
                             _NO_CODECS, absent))
                continue
            plan.append((
                relay,
                args,
                self._plan_steps(relay, entry),
                self._plan_wire(relay, entry),
                self._plan_codecs(relay, entry),
                record,
            ))
        changed = False
        wires = self._wires
        # the pipelines are recomputed once, at the end: the sockets whose
        # apply needs it and, when steps changed, every socket of the call
        waiting = []
        installed = []
        for relay, args, changes, wire, codecs, record in plan:
            if wire is _NO_WIRE and codecs is _NO_CODECS and not wires:
                # a plain entry while no socket has a wire (a plain call):
                # what the steps below do for it
                if codec_state:
                    codec_state.pop(relay.local, None)
                if relay.apply(*args):
                    waiting.append(relay)
                continue
            ice, dtls = wire
            if codecs is _NO_CODECS:
                # as good as none (a plain call): nothing kept per socket
                if codec_state:
                    codec_state.pop(relay.local, None)
            elif codecs is not absent:
                codec_state[relay.local] = codecs
            # (None for a socket without a wire: nothing to stop)
            if ice is not absent and (ice is not None or relay.local in wires):
                self._apply_ice(call_id, relay, ice)
            if args is not None and relay.apply(*args):
                waiting.append(relay)
            if record is not absent and self._recordings.apply(call_id, relay, record):
                self._install_steps(relay, False)
                installed.append(relay)
                changed = True
            if (dtls is not absent and (dtls is not None or relay.local in wires)
                    and self._apply_dtls(call_id, relay, dtls)):
                self._install_steps(relay, False)
                installed.append(relay)
                changed = True
            if changes:
                self._apply_steps(relay, changes, False)
                installed.append(relay)
                changed = True
        # (no transcoder, no codec state, no RTCP timer, a plain call's
        # engine: _update_transcoders would change nothing)
        if ((codec_state or self._transcoders or self._rtcp_timer is not None)
                and self._update_transcoders(call_id)):
            changed = True
        if changed:
            # the chains follow peers and rtcp_peers across the whole call
            self._refresh(call_id, installed)
        else:
            for relay in waiting:
                relay.update_pipeline()
        if wires:
            for relay, _args, _changes, _wire, _codecs, _record in plan:
                wire = wires.get(relay.local)
                if wire is not None:
                    self._start_wire(wire)
        if self.forwarder is not None:
            # handed over now: the next check waits for new packets
            self._kernel_marks[call_id] = self._kernel_mark(call_id)
            if self._kernel_sync(call_id):
                self._kernel_retry.discard(call_id)
            else:
                self._kernel_retry.add(call_id)

    def _release(self, call_id, keys):
        pairs = self._calls.get(call_id)
        if pairs is None:
            return
        if keys is None:
            targets = list(pairs)
        else:
            targets = []
            for key in keys:
                key = _key(key, "socket")
                key = (key[0], key[1] & ~1)
                if key in pairs:
                    targets.append(key)
        if self._base_pairs and targets:
            # the pairs of an ICE agent's other bases go with their pair
            for key in list(targets):
                for base in self._base_pairs.pop(key, ()):
                    if base in pairs and base not in targets:
                        targets.append(base)
        kernel = {}
        if self.forwarder is not None and targets:
            # out of the kernel first, while the sockets still hold the port
            if not self._kernel_sync(call_id, without=set(targets)):
                self._kernel_stale.add(call_id)  # the tick tries again
            # the leaving streams' counts were read as they left
            kernel = self._kernel_counters(fresh=False, locals=[
                relay.local for key in targets for relay in pairs[key]])
        gone = set()
        released = self._released
        sockets = self._sockets
        wires = self._wires
        recordings = self._recordings
        # what only some sockets have (steps, codecs, ICE/DTLS, a recording,
        # the kernel's counts): looked up only while someone has any (the
        # tables that hold something now; a plain call's engine: none)
        kept = [table for table in (self._kernel_seen, self._steps, self._codec_state,
                                    self._transcoders) if table]
        for key in targets:
            rtp, rtcp = pairs.pop(key)
            for relay in (rtp, rtcp):
                local = relay.local
                gone.add(relay)
                released.add(relay)
                if kernel and local in kernel:
                    kp, kb = kernel[local]
                    released.packets += kp
                    released.bytes += kb
                    released.kernel_packets += kp
                    released.kernel_bytes += kb
                    self.forwarder.forget(local)
                del sockets[local]
                for table in kept:
                    table.pop(local, None)
                if recordings.taps:
                    recordings.drop(call_id, local)
                if wires:
                    wire = wires.pop(local, None)
                    if wire is not None:
                        # timers cancelled (DTLS says close_notify, unless shutting down)
                        wire.close(not self._closing)
                relay.close()
            self._pools[key[0]].release(key[1])
        if gone:
            # nothing keeps sending out of a closed socket
            for rtp, rtcp in pairs.values():
                for relay in (rtp, rtcp):
                    if relay.peer in gone:
                        relay.peer = None
                    if relay.rtcp_peer in gone:
                        relay.rtcp_peer = None
                    if relay.pipeline is not None:
                        relay.update_pipeline()
        if not pairs:
            del self._calls[call_id]
            if self._call_cpu:
                self._call_cpu.pop(call_id, None)
            self._kernel_marks.pop(call_id, None)
            self._kernel_retry.discard(call_id)
            self._recordings.release(call_id)
        if self._transcoders or self._rtcp_timer is not None:
            self._rtcp_schedule()  # (else it has nothing to start or stop)

    # -- kernel forwarding (table = N; off the per-packet path) -----------

    def _kernel_streams(self, call_id, without=()):
        """The call's streams the kernel may forward now: a plain socket
        (no steps, no ICE/DTLS, no RTCP split off) whose party and whose
        peer's party are both confirmed."""
        from omnirtp.media.kernel import Stream

        streams = []
        for key, (rtp, rtcp) in self._calls.get(call_id, {}).items():
            if key in without:
                continue
            for relay in (rtp, rtcp):
                peer = relay.peer
                if (peer is None or not relay.confirmed or relay.endpoint is None
                        or relay.pipeline is not None or relay.rtcp_peer is not None
                        or not peer.confirmed or peer.endpoint is None
                        or relay.local in self._wires or peer.local in self._wires
                        or (peer.local[0], peer.local[1] & ~1) in without):
                    continue
                streams.append(Stream(relay.local, relay.endpoint, peer.local, peer.endpoint))
        return streams

    def _kernel_sync(self, call_id, without=()):
        """Give the forwarder the call's offloadable streams; True if done."""
        from omnirtp.media.kernel import NftError

        try:
            self.forwarder.offload(call_id, self._kernel_streams(call_id, without))
        except NftError as e:
            self.log.warn("call {call_id}: kernel forwarding refused ({error}); "
                          "media stays in userspace", call_id=call_id, error=e)
            return False
        return True

    def _kernel_counters(self, fresh=True, locals=None):
        """The forwarder's counters (``IForwarder.counters``); a fresh read
        whose counter moved stamps the socket's ``last_packet``: kernel
        traffic is traffic for the media timeout."""
        from omnirtp.media.kernel import NftError

        try:
            counts = self.forwarder.counters(fresh, locals)
        except NftError as e:
            self.log.warn("kernel forwarding: cannot read counters: {error}", error=e)
            return {}
        if fresh:
            now = self._reactor.seconds()
            if locals is None:
                self._kernel_read_at = now
            seen = self._kernel_seen
            for local, (packets, _octets) in counts.items():
                if packets != seen.get(local, 0):
                    seen[local] = packets
                    relay = self._sockets.get(local)
                    if relay is not None:
                        relay.last_packet = now
        return counts

    def _kernel_mark(self, call_id):
        """Packets the call's sockets received in userspace: until it
        changes, nothing of the call can have become offloadable (a party
        is confirmed by a packet) unless a configuration changed it."""
        seen = 0
        for rtp, rtcp in self._calls[call_id].values():
            seen += rtp.packets + rtcp.packets
        return seen

    def _kernel_tick(self):
        """Offload what became offloadable: a call whose sockets saw packets
        since the last check may have a party confirmed now (a configuration
        hands its call over itself).  Every :data:`KERNEL_REFRESH` seconds,
        one read of every counter (stamps kernel traffic for ``stats()`` of
        all calls)."""
        from omnirtp.media.kernel import NftError

        marks, retry, mark = self._kernel_marks, self._kernel_retry, self._kernel_mark
        calls = {}
        for call_id in self._calls:
            seen = mark(call_id)
            if marks.get(call_id) != seen or call_id in retry:
                marks[call_id] = seen
                calls[call_id] = self._kernel_streams(call_id)
        stale = [c for c in self._kernel_stale if c not in self._calls]
        for call_id in stale:
            calls[call_id] = []
        refused = {}
        if calls:
            try:
                refused = self.forwarder.offload_calls(calls)
            except NftError as e:  # the first step (streams leaving) failed
                refused = dict.fromkeys(calls, e)
        for call_id, error in refused.items():
            self.log.warn("call {call_id}: kernel forwarding refused ({error}); "
                          "media stays in userspace", call_id=call_id, error=error)
        self._kernel_stale.difference_update(c for c in stale if c not in refused)
        self._kernel_retry = {c for c in refused if c in self._calls}
        now = self._reactor.seconds()
        at = self._kernel_read_at
        if at is None or not 0 <= now - at < KERNEL_REFRESH:
            self._kernel_read_at = now
            self._kernel_counters()


def _merge_kernel(counters, kernel):
    """Add what the kernel forwarded for a socket to its counters."""
    if kernel is None:
        return
    packets, octets = kernel
    counters["packets"] += packets
    counters["bytes"] += octets
    counters["kernel"] = {"packets": packets, "bytes": octets}
