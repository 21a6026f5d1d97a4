"""``EmbeddedEngine``: the media plane in the caller's reactor.

It owns one :class:`~omnirtp.media.ports.PortPool` per local address and a
:class:`~omnirtp.media.relay.RelaySocket` per bound port (RTP and RTCP).
It implements :class:`omnirtp.interfaces.IMediaEngine`; every method
returns an already-fired ``Deferred``.  The worker processes of
``num-threads = N`` run one of these each, behind AMP.
"""

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from omnirtp.interfaces import IMediaEngine
from omnirtp.media.ports import PortPool
from omnirtp.media.relay import (
    LEARN_DELAYED, LEARNING_MODES, MediaPoller, RelaySocket, bind_media, bind_udp)

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

#: configure keys that name transform parameters: key -> (factory kind,
#: which of the socket's step lists it fills, the factory method building it)
TRANSFORM_KEYS = {
    K_SRTP_IN: ("srtp", "inbound", "inbound"),
    K_SRTP_OUT: ("srtp", "outbound", "outbound"),
}


def _key(value, what):
    """``(addr, port)`` from a 2-sequence, or ValueError naming ``what``."""
    try:
        address, port = value
        return (str(address), int(port))
    except (TypeError, ValueError):
        raise ValueError("%s must be an (address, port) pair, got %r" % (what, value)) from None


class _Totals:
    """Counters of sockets already released (so totals never go down)."""

    __slots__ = ("packets", "bytes", "errors", "junk")

    def __init__(self):
        self.packets = self.bytes = self.errors = self.junk = 0

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
    for a transform.
    """

    log = Logger()

    def __init__(self, reactor, interfaces, bind=None, rng=None, poller=None, transforms=None):
        self._reactor = reactor
        self._factories = transforms
        self._unusable = {}
        #: (addr, port) -> {configure key: (params, step)} of sockets with steps
        self._steps = {}
        self._bind = bind if bind is not None else bind_media
        self._real = bind is None
        # real sockets are read through one epoll (MediaPoller); a test's
        # fake sockets (``bind`` given) register with its reactor directly
        self._own_poller = poller is None and bind is None
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

    # -- IMediaEngine -----------------------------------------------------

    def allocate(self, call_id, address, count):
        try:
            return defer.succeed(self._allocate(call_id, address, count))
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
        if call_id is None:
            ids = list(self._calls)
        elif call_id in self._calls:
            ids = [call_id]
        else:
            ids = []
        result = {}
        for cid in ids:
            per = result[cid] = {}
            for rtp, rtcp in self._calls[cid].values():
                per[rtp.local] = rtp.counters()
                per[rtcp.local] = rtcp.counters()
        return defer.succeed(result)

    def totals(self):
        done = self._released
        packets, octets, errors, junk = done.packets, done.bytes, done.errors, done.junk
        for relay in self._sockets.values():
            packets += relay.packets
            octets += relay.bytes
            errors += relay.errors
            junk += relay.junk
        return defer.succeed(
            {
                "packets": packets,
                "bytes": octets,
                "errors": errors,
                "junk": junk,
                "ports_used": sum(p.used for p in self._pools.values()),
                "ports_free": sum(p.free for p in self._pools.values()),
            }
        )

    # -- not in the interface ---------------------------------------------

    def close(self):
        """Release every port of every call, synchronously (shutdown), and
        stop reading (the engine's own poller leaves the reactor)."""
        for call_id in list(self._calls):
            self._release(call_id, None)
        if self._own_poller:
            self._poller.close()

    def pool(self, address):
        """The :class:`PortPool` of a local ``address`` (KeyError if none)."""
        return self._pools[address]

    def socket(self, key):
        """The :class:`RelaySocket` bound to ``key`` or None."""
        return self._sockets.get(key)

    # -- implementation ---------------------------------------------------

    def _companion(self, address, port):
        """The factory of a media socket's connected companion (real sockets only)."""
        if not self._real:
            return None
        return lambda: bind_udp(address, port, reuse_port=True)

    def _allocate(self, call_id, address, count):
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
            rtp = bind(address, port)
            try:
                rtcp = bind(address, port + 1)
            except BaseException:
                rtp.close()
                raise
            return rtp, rtcp

        taken = []
        try:
            for _ in range(count):
                taken.append(pool.acquire(bind_pair))
        except BaseException:
            for port, (rtp, rtcp) in taken:
                rtp.close()
                rtcp.close()
                pool.release(port)
            raise
        if not taken:
            return []
        pairs = self._calls.setdefault(call_id, {})
        ports = []
        for port, (rtp_sock, rtcp_sock) in taken:
            rtp = RelaySocket(self._reactor, rtp_sock, (address, port), self._poller,
                              self._companion(address, port))
            rtcp = RelaySocket(self._reactor, rtcp_sock, (address, port + 1), self._poller,
                               self._companion(address, port + 1))
            rtcp.rtp_sibling = rtp
            self._sockets[rtp.local] = rtp
            self._sockets[rtcp.local] = rtcp
            pairs[rtp.local] = (rtp, rtcp)
            rtp.start()
            rtcp.start()
            ports.append(port)
        self.log.debug(
            "allocated {count} port pairs on {address} for {call_id}: {ports}",
            count=count,
            address=address,
            call_id=call_id,
            ports=ports,
        )
        return ports

    def _peer(self, entry, name):
        """The bound RelaySocket named by ``entry[name]``, or None."""
        key = entry.get(name)
        if key is None:
            return None
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
        changes = {}
        current = self._steps.get(relay.local, {})
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
            changes[key] = (dict(params), getattr(factory, method)(params))
        return changes

    def _apply_steps(self, relay, changes):
        current = self._steps.setdefault(relay.local, {})
        for key, value in changes.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        if not current:
            del self._steps[relay.local]
        lists = {"inbound": [], "outbound": []}
        for key, (_kind, slot, _method) in TRANSFORM_KEYS.items():
            if key in current:
                lists[slot].append(current[key][1])
        relay.set_transforms(inbound=lists["inbound"], outbound=lists["outbound"])

    def _configure(self, call_id, entries):
        pairs = self._calls.get(call_id)
        if pairs is None:
            raise ValueError("call %r holds no media ports" % (call_id,))
        plan = []
        # validate everything first so a bad entry changes nothing
        for entry in entries:
            local = _key(entry.get(K_LOCAL), "local")
            relay = self._sockets.get(local)
            rtp_key = (local[0], local[1] & ~1)
            if relay is None or rtp_key not in pairs:
                raise ValueError("socket %s:%d is not held by call %r" % (local[0], local[1], call_id))
            peer_relay = self._peer(entry, K_PEER)
            rtcp_peer_relay = self._peer(entry, K_RTCP_PEER)
            endpoint = entry.get(K_ENDPOINT)
            if endpoint is not None:
                endpoint = _key(endpoint, "endpoint")
            learning = entry.get(K_LEARNING) or LEARN_DELAYED
            if learning not in LEARNING_MODES:
                raise ValueError(
                    "learning mode %r is not one of %s"
                    % (learning, ", ".join(sorted(LEARNING_MODES)))
                )
            tos = entry.get(K_TOS)
            if tos is not None and (type(tos) is not int or not 0 <= tos <= 255):
                raise ValueError("tos must be an integer from 0 to 255, got %r" % (tos,))
            plan.append(
                (
                    relay,
                    dict(
                        peer=peer_relay,
                        rtcp_peer=rtcp_peer_relay,
                        endpoint=endpoint,
                        learning=learning,
                        strict=bool(entry.get(K_STRICT, False)),
                        handover=bool(entry.get(K_HANDOVER, False)),
                        asymmetric=bool(entry.get(K_ASYMMETRIC, False)),
                        reset=bool(entry.get(K_RESET, False)),
                        tos=tos,
                    ),
                    self._plan_steps(relay, entry),
                )
            )
        for relay, kwargs, changes in plan:
            relay.configure(**kwargs)
            if changes:
                self._apply_steps(relay, changes)
        if any(changes for _relay, _kwargs, changes in plan):
            # the chains follow peers and rtcp_peers across the whole call
            for rtp, rtcp in pairs.values():
                rtp.update_pipeline()
                rtcp.update_pipeline()

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
        gone = set()
        for key in targets:
            rtp, rtcp = pairs.pop(key)
            for relay in (rtp, rtcp):
                gone.add(relay)
                self._released.add(relay)
                del self._sockets[relay.local]
                self._steps.pop(relay.local, None)
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
