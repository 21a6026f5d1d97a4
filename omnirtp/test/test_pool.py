"""Unit tests for the worker pool, its AMP commands and the worker's server.

No processes are started: :class:`FakeProcessReactor` hands the pool fake
process transports whose "child" is a :class:`WorkerProtocol` over a fake
engine in memory, and :meth:`FakeProcessReactor.pump` moves the AMP bytes.
"""

import fcntl
import json
import os

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IReactorProcess, ITransport
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, eventAsJSON, globalLogPublisher
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyClass, verifyObject

from omnirtp.errors import E_INTERNAL, E_NO_PORTS, E_UNKNOWN_CALL, ConfigError, NGError, PortsExhausted
from omnirtp.interfaces import IMediaEngine
from omnirtp.logging import level_for
from omnirtp.media import amp as commands
from omnirtp.media.pool import (
    CHILD_FDS,
    DOWN,
    READY,
    STARTING,
    STOPPED,
    PipeTransport,
    WorkerAddress,
    WorkerError,
    WorkerPool,
    WorkerUnavailable,
    describe_exit,
    worker_environment,
)
from omnirtp.media.worker import (
    FD_FROM_CONTROL,
    FD_TO_CONTROL,
    WorkerProtocol,
    build_parser,
    format_slice,
    load_factory,
    main,
    parse_slice,
    stopper,
)

IP = "127.0.0.1"


@implementer(IMediaEngine)
class FakeEngine:
    """An in-memory engine: hands out even ports of its slice, records calls.

    ``exhausted`` makes allocate fail; ``hold`` makes every method return a
    Deferred the test fires itself (kept in ``held``).
    """

    def __init__(self, reactor=None, interfaces=None):
        self.interfaces = interfaces or {IP: (40000, 40099)}
        self.next = {a: lo for a, (lo, hi) in self.interfaces.items()}
        self.calls = {}
        self.configured = []
        self.released = []
        self.exhausted = False
        self.error = None
        self.stats_value = None
        self.certificate = None

    def set_certificate(self, certificate):
        self.certificate = certificate

    def allocate(self, call_id, address, count):
        if self.error is not None:
            return fail(self.error)
        if self.exhausted:
            return fail(PortsExhausted())
        ports = []
        for _ in range(count):
            ports.append(self.next[address])
            self.next[address] += 2
        self.calls.setdefault(call_id, []).extend((address, p) for p in ports)
        return succeed(ports)

    def configure(self, call_id, sockets):
        self.configured.append((call_id, sockets))
        return succeed(None)

    def release(self, call_id, sockets=None):
        self.released.append((call_id, sockets))
        if sockets is None:
            self.calls.pop(call_id, None)
        return succeed(None)

    def stats(self, call_id=None):
        if self.stats_value is not None:
            return succeed(self.stats_value)
        out = {}
        for cid, socks in self.calls.items():
            if call_id is None or cid == call_id:
                out[cid] = {
                    key: {"packets": 1, "bytes": 10, "endpoint": None, "confirmed": False}
                    for key in socks
                }
        return succeed(out)

    def totals(self):
        used = 2 * sum(len(s) for s in self.calls.values())
        return succeed(
            {"packets": 5, "bytes": 50, "errors": 1, "junk": 0, "ports_used": used, "ports_free": 100 - used}
        )


class MemoryAMP:
    """An AMP client and a WorkerProtocol connected in memory."""

    def __init__(self, engine, clock=None):
        self.clock = clock or Clock()
        self.closed = []
        self.server = WorkerProtocol(engine, self.clock, on_close=lambda: self.closed.append(True), pid=4242)
        self.client = amp.AMP()
        self.server_transport = StringTransport()
        self.client_transport = StringTransport()
        self.server.makeConnection(self.server_transport)
        self.client.makeConnection(self.client_transport)

    def pump(self):
        moved = True
        while moved:
            moved = False
            for src, dst in (
                (self.client_transport, self.server),
                (self.server_transport, self.client),
            ):
                data = src.value()
                if data:
                    src.clear()
                    dst.dataReceived(data)
                    moved = True

    def call(self, command, **kw):
        """callRemote, pumped; the result is handed over before the answer
        arrives (as any real caller does), so AMP never sees it unhandled."""
        out = Deferred()

        def hand_over(result):
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(result)

        self.client.callRemote(command, **kw).addBoth(hand_over)
        self.pump()
        return out


class CommandTests(SynchronousTestCase):
    """The AMP commands carry the interface's exact types and errors."""

    def setUp(self):
        self.engine = FakeEngine()
        self.link = MemoryAMP(self.engine)

    def test_allocate(self):
        result = self.successResultOf(
            self.link.call(commands.Allocate, call_id="c1", address=IP, count=2)
        )
        self.assertEqual(result, {"ports": [40000, 40002]})

    def test_portsExhaustedArrivesAsPortsExhausted(self):
        self.engine.exhausted = True
        f = self.failureResultOf(
            self.link.call(commands.Allocate, call_id="c1", address=IP, count=1), PortsExhausted
        )
        self.assertIs(f.type, PortsExhausted)
        self.assertEqual(f.value.reason, E_NO_PORTS)

    def test_ngErrorArrivesAsNGError(self):
        self.engine.error = NGError("Something specific")
        f = self.failureResultOf(
            self.link.call(commands.Allocate, call_id="c1", address=IP, count=1), NGError
        )
        self.assertIs(f.type, NGError)
        self.assertEqual(f.value.reason, "Something specific")

    def test_unexpectedErrorIsNotAnNGError(self):
        self.engine.error = KeyError("bug")
        f = self.failureResultOf(self.link.call(commands.Allocate, call_id="c1", address=IP, count=1))
        self.assertFalse(f.check(NGError))
        self.flushLoggedErrors(KeyError)

    def test_allocateConfigure(self):
        """One round trip: the ports of each group, and the entries with
        their placeholder keys filled (RTP and RTCP of each pair)."""
        a, b = commands.placeholder(0), commands.placeholder(1)
        sockets = [
            {"local": (IP, a), "peer": (IP, b), "endpoint": ("10.0.0.1", 5000)},
            {"local": (IP, a + 1), "peer": (IP, b + 1), "rtcp_peer": None,
             "endpoint": ("10.0.0.1", 5001)},
            {"local": (IP, b), "peer": (IP, a), "endpoint": None},
        ]
        result = self.successResultOf(self.link.call(
            commands.AllocateConfigure, call_id="c1", groups=[[IP, 2]], sockets=sockets))
        self.assertEqual(result, {"ports": [[40000, 40002]]})
        self.assertEqual(self.engine.configured, [("c1", [
            {"local": (IP, 40000), "peer": (IP, 40002), "endpoint": ("10.0.0.1", 5000)},
            {"local": (IP, 40001), "peer": (IP, 40003), "rtcp_peer": None,
             "endpoint": ("10.0.0.1", 5001)},
            {"local": (IP, 40002), "peer": (IP, 40000), "endpoint": None},
        ])])
        self.assertEqual(self.engine.released, [])

    def test_allocateConfigureFailureHoldsNothing(self):
        """A configuration the engine refuses: the ports just allocated are
        released before the error goes back; no allocation, no release."""
        def refuse(call_id, sockets):
            return fail(NGError("refused"))
        self.engine.configure = refuse
        sockets = [{"local": (IP, commands.placeholder(0)), "peer": None}]
        f = self.failureResultOf(self.link.call(
            commands.AllocateConfigure, call_id="c1", groups=[[IP, 1]], sockets=sockets),
            NGError)
        self.assertEqual(f.value.reason, "refused")
        self.assertEqual(self.engine.released, [("c1", [(IP, 40000)])])
        self.engine.exhausted = True
        self.failureResultOf(self.link.call(
            commands.AllocateConfigure, call_id="c2", groups=[[IP, 1]], sockets=sockets),
            PortsExhausted)
        self.assertEqual(self.engine.released, [("c1", [(IP, 40000)])])

    def test_fillPorts(self):
        entries = [{"local": (IP, -2), "peer": (IP, -3), "rtcp_peer": (IP, 40100),
                    "endpoint": ("10.0.0.1", 6000), "learning": "off"},
                   {"local": (IP, -5), "peer": None}]
        self.assertEqual(commands.fill_ports(entries, [30000, 30010, 30020]), [
            {"local": (IP, 30000), "peer": (IP, 30011), "rtcp_peer": (IP, 40100),
             "endpoint": ("10.0.0.1", 6000), "learning": "off"},
            {"local": (IP, 30021), "peer": None}])
        self.assertEqual(entries[0]["local"], (IP, -2))  # copies
        self.assertRaises(ValueError, commands.fill_ports, entries, [30000])

    def test_configureRestoresTuples(self):
        sockets = [
            {
                "local": (IP, 40000),
                "peer": (IP, 40002),
                "endpoint": ("10.0.0.1", 5000),
                "learning": "delayed",
                "strict": False,
                "handover": False,
                "asymmetric": False,
                "reset": True,
                "tos": 184,
            },
            {"local": (IP, 40002), "peer": None, "endpoint": None, "learning": "off"},
        ]
        self.assertEqual(
            self.successResultOf(self.link.call(commands.Configure, call_id="c1", sockets=sockets)), {}
        )
        [(call_id, got)] = self.engine.configured
        self.assertEqual(call_id, "c1")
        self.assertEqual(got, sockets)
        self.assertIsInstance(got[0]["local"], tuple)
        self.assertIsInstance(got[0]["endpoint"], tuple)
        self.assertIsNone(got[1]["peer"])

    def test_configureCarriesSrtpKeys(self):
        """srtp_in / srtp_out crypto dicts (and None) cross AMP unchanged;
        an entry without them arrives without them (absent != None)."""
        crypto = {"suite": "AEAD_AES_128_GCM", "key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw=="}
        sockets = [
            {"local": (IP, 40000), "peer": (IP, 40002), "srtp_in": crypto, "srtp_out": None},
            {"local": (IP, 40002), "peer": (IP, 40000)},
        ]
        self.successResultOf(self.link.call(commands.Configure, call_id="c1", sockets=sockets))
        [(_, got)] = self.engine.configured
        self.assertEqual(got, sockets)
        self.assertNotIn("srtp_in", got[1])

    def test_statsCarryTransformCounters(self):
        """A socket's ``transforms`` counters cross AMP as plain data."""
        counters = {"packets": 3, "bytes": 300, "errors": 2, "last_packet": 1.5,
                    "endpoint": ("10.0.0.1", 5000), "confirmed": True,
                    "transforms": {"srtp-unprotect": {"auth-failures": 1, "replays": 1,
                                                      "errors": 0}}}
        self.engine.stats_value = {"c1": {(IP, 40000): counters}}
        result = self.successResultOf(self.link.call(commands.Stats, call_id="c1"))
        self.assertEqual(result["stats"], {"c1": {(IP, 40000): counters}})

    def test_statsCarryIceAndDtls(self):
        """ICE and DTLS counters cross AMP; the selected address is a tuple again."""
        counters = {"packets": 0, "bytes": 0, "errors": 0, "last_packet": 1.5,
                    "endpoint": ("10.0.0.1", 5000), "confirmed": True,
                    "ice": {"state": "completed", "selected": ("10.0.0.1", 5000),
                            "controlling": False, "lite": False, "component": 1, "pairs": 1,
                            "counters": {"requests": 3}},
                    "dtls": {"state": "failed", "role": "server", "profile": None,
                             "failure": "fingerprint mismatch", "counters": {"received": 2}}}
        self.engine.stats_value = {"c1": {(IP, 40000): counters}}
        result = self.successResultOf(self.link.call(commands.Stats, call_id="c1"))
        self.assertEqual(result["stats"], {"c1": {(IP, 40000): counters}})

    def test_setCertificate(self):
        """The certificate and its key arrive as a dtls.Certificate."""
        from omnirtp.media.dtls import Certificate

        cert = Certificate.generate()
        pem, key = cert.pem()
        self.successResultOf(self.link.call(commands.SetCertificate, certificate=pem, key=key))
        self.assertEqual(self.engine.certificate.der, cert.der)
        self.assertEqual(self.engine.certificate.pem(), (pem, key))

    def test_releaseWholeCallAndSomeSockets(self):
        self.successResultOf(self.link.call(commands.Release, call_id="c1", sockets=None))
        self.successResultOf(
            self.link.call(commands.Release, call_id="c2", sockets=[(IP, 40000), (IP, 40004)])
        )
        self.assertEqual(self.engine.released, [("c1", None), ("c2", [(IP, 40000), (IP, 40004)])])
        self.assertIsInstance(self.engine.released[1][1][0], tuple)

    def test_statsOfManyCallsAreChunked(self):
        stats = {}
        for i in range(800):
            stats["call-%d-%s" % (i, "x" * 40)] = {
                (IP, 40000 + 4 * i): {
                    "packets": i,
                    "bytes": 172 * i,
                    "errors": 0,
                    "last_packet": 1700000000.125 + i,
                    "endpoint": ("10.1.%d.%d" % (i // 256, i % 256), 30000 + i),
                    "confirmed": True,
                },
                (IP, 40001 + 4 * i): {
                    "packets": 0,
                    "bytes": 0,
                    "errors": 2,
                    "last_packet": 0.0,
                    "endpoint": None,
                    "confirmed": False,
                },
            }
        self.engine.stats_value = stats
        self.assertGreater(len(json.dumps(list(map(str, stats.values())))), 3 * amp.MAX_VALUE_LENGTH)
        result = self.successResultOf(self.link.call(commands.Stats, call_id=None))
        self.assertEqual(result["stats"], stats)
        some = result["stats"]["call-7-" + "x" * 40]
        self.assertIsInstance(list(some)[0], tuple)
        self.assertIsInstance(some[(IP, 40028)]["endpoint"], tuple)

    def test_chunkedValueUsesSeveralKeys(self):
        box = {}
        commands.ChunkedJSON().toBox(b"v", box, {"v": "a" * (2 * commands.CHUNK_SIZE)}, None)
        self.assertEqual(box[b"v"], b"3")
        self.assertEqual(sorted(box), [b"v", b"v.0", b"v.1", b"v.2"])
        out = {}
        commands.ChunkedJSON().fromBox(b"v", box, out, None)
        self.assertEqual(out, {"v": "a" * (2 * commands.CHUNK_SIZE)})

    def test_chunkedValueMissingChunk(self):
        box = {b"v": b"2", b"v.0": b'"ab'}
        e = self.assertRaises(ValueError, commands.ChunkedJSON().fromBox, b"v", box, {}, None)
        self.assertEqual(str(e), "b'v' is missing chunk b'v.1'")

    def test_callIdWithUndecodableBytes(self):
        call_id = b"abc\xff\xfe@host".decode("utf-8", "surrogateescape")
        self.successResultOf(self.link.call(commands.Allocate, call_id=call_id, address=IP, count=1))
        self.assertEqual(list(self.engine.calls), [call_id])
        result = self.successResultOf(self.link.call(commands.Stats, call_id=call_id))
        self.assertEqual(list(result["stats"]), [call_id])
        self.successResultOf(self.link.call(commands.Release, call_id=call_id, sockets=None))
        self.assertEqual(self.engine.released, [(call_id, None)])

    def test_statsOfOneCall(self):
        self.successResultOf(self.link.call(commands.Allocate, call_id="c1", address=IP, count=1))
        self.successResultOf(self.link.call(commands.Allocate, call_id="c2", address=IP, count=1))
        result = self.successResultOf(self.link.call(commands.Stats, call_id="c2"))
        self.assertEqual(list(result["stats"]), ["c2"])

    def test_totals(self):
        result = self.successResultOf(self.link.call(commands.Totals))
        self.assertEqual(result["totals"]["ports_free"], 100)
        self.assertEqual(result["totals"]["packets"], 5)

    def test_ping(self):
        self.assertEqual(self.successResultOf(self.link.call(commands.Ping)), {"pid": 4242})

    def test_setLogLevel(self):
        got = []
        self.link.server.on_log_level = got.append
        self.assertEqual(self.successResultOf(self.link.call(commands.SetLogLevel, level=7)), {})
        self.assertEqual(got, [7])

    def test_shutdownAnswersThenCloses(self):
        d = self.link.call(commands.Shutdown)
        self.assertEqual(self.successResultOf(d), {})
        self.assertEqual(self.link.closed, [])
        self.link.clock.advance(0)
        self.assertEqual(self.link.closed, [True])

    def test_connectionLostCloses(self):
        self.link.server.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.link.closed, [True])
        self.link.server._close()
        self.assertEqual(self.link.closed, [True])


class WorkerCommandLineTests(SynchronousTestCase):
    def test_sliceRoundTrip(self):
        self.assertEqual(parse_slice("127.0.0.1=40000-40499"), ("127.0.0.1", (40000, 40499)))
        self.assertEqual(parse_slice("::1=40000-40499"), ("::1", (40000, 40499)))
        self.assertEqual(format_slice("::1", (40000, 40499)), "::1=40000-40499")

    def test_badSlice(self):
        e = self.assertRaises(ValueError, parse_slice, "127.0.0.1:40000-40499")
        self.assertEqual(str(e), "slice must be ADDRESS=MIN-MAX, got '127.0.0.1:40000-40499'")
        e = self.assertRaises(ValueError, parse_slice, "127.0.0.1=a-b")
        self.assertEqual(str(e), "slice ports must be integers, got '127.0.0.1=a-b'")

    def test_loadFactory(self):
        self.assertIs(load_factory("omnirtp.test.test_pool:FakeEngine"), FakeEngine)
        e = self.assertRaises(ValueError, load_factory, "omnirtp.test.test_pool")
        self.assertEqual(str(e), "engine must be MODULE:NAME, got 'omnirtp.test.test_pool'")

    def test_parser(self):
        args = build_parser().parse_args(
            ["--index", "1", "--slice", "127.0.0.1=1000-1099", "--slice", "::1=2000-2099"]
        )
        self.assertEqual(args.index, 1)
        self.assertEqual(args.slice, ["127.0.0.1=1000-1099", "::1=2000-2099"])

    def test_mainRefusesABadSlice(self):
        import io
        import sys

        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(main(["--slice", "127.0.0.1"]), 2)
        self.assertEqual(err.getvalue(), "omnirtp worker: slice must be ADDRESS=MIN-MAX, got '127.0.0.1'\n")

    def test_stopperClosesEngineAndStopsOnce(self):
        from twisted.internet.error import ReactorNotRunning

        class Reactor:
            stops = 0

            def stop(self):
                self.stops += 1
                if self.stops > 1:
                    raise ReactorNotRunning()

        class Engine:
            closed = 0

            def close(self):
                self.closed += 1

        reactor, engine = Reactor(), Engine()
        stop = stopper(reactor, engine)
        stop()
        stop()  # e.g. SIGTERM already stopped it: no error
        self.assertEqual((reactor.stops, engine.closed), (2, 2))
        stopper(reactor, FakeEngine())()  # an engine without close()

    def test_logLevel(self):
        self.assertEqual(
            [level_for(n) for n in range(8)],
            [LogLevel.critical] * 3 + [LogLevel.error, LogLevel.warn] + [LogLevel.info] * 2 + [LogLevel.debug],
        )


class FakeProcess:
    """A process transport whose worker is a WorkerProtocol in memory."""

    def __init__(self, reactor, proto, args, pid, engine):
        self.reactor = reactor
        self.proto = proto
        self.args = args
        self.pid = pid
        self.engine = engine
        self.signals = []
        self.closed = []
        self.to_worker = []
        self.ended = False
        self.worker_out = StringTransport()
        self.worker = WorkerProtocol(engine, reactor, on_close=lambda: None, pid=pid)
        self.worker.makeConnection(self.worker_out)

    def writeToChild(self, fd, data):
        if fd in self.closed or self.ended:
            raise KeyError(fd)
        assert fd == FD_FROM_CONTROL, fd
        self.to_worker.append(data)

    def closeChildFD(self, fd):
        self.closed.append(fd)

    def signalProcess(self, signal):
        self.signals.append(signal)

    def pump(self):
        moved = False
        while self.to_worker and not self.ended:
            data = b"".join(self.to_worker)
            del self.to_worker[:]
            self.worker.dataReceived(data)
            moved = True
        out = self.worker_out.value()
        if out and not self.ended:
            self.worker_out.clear()
            self.proto.childDataReceived(FD_TO_CONTROL, out)
            moved = True
        return moved

    def end(self, signal=None, status=None):
        self.ended = True
        if signal is None and not status:
            reason = ProcessDone(0)
        else:
            reason = ProcessTerminated(status, signal)
        self.proto.processEnded(Failure(reason))


@implementer(IReactorProcess)
class FakeProcessReactor(Clock):
    """A Clock whose spawnProcess starts a FakeProcess (fresh FakeEngine)."""

    def __init__(self):
        Clock.__init__(self)
        self.spawned = []
        self.fail_spawn = False
        self.engine_setup = None

    def spawnProcess(
        self, processProtocol, executable, args=(), env={}, path=None, uid=None, gid=None, usePTY=0, childFDs=None
    ):
        if self.fail_spawn:
            raise OSError("no such executable")
        slices = dict(parse_slice(a) for i, a in enumerate(args) if i and args[i - 1] == "--slice")
        engine = FakeEngine(self, slices)
        if self.engine_setup is not None:
            self.engine_setup(len(self.spawned), engine)
        process = FakeProcess(self, processProtocol, list(args), 1000 + len(self.spawned), engine)
        process.executable = executable
        process.env = env
        process.childFDs = childFDs
        self.spawned.append(process)
        processProtocol.makeConnection(process)
        return process

    def pump(self):
        while any([p.pump() for p in self.spawned]):
            pass


verifyClass(IReactorProcess, FakeProcessReactor)


class PoolTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = FakeProcessReactor()
        self.pool = WorkerPool(self.reactor, {IP: (40000, 40099)}, 2, executable="/usr/bin/python3")
        self.lost = []
        self.pool.on_calls_lost = lambda call_ids, reason: self.lost.append((call_ids, reason))

    def start(self):
        self.pool.startService()
        ready = self.pool.whenReady()
        self.reactor.pump()
        return self.successResultOf(ready)

    def engine(self, index):
        """The engine of the live process in slot ``index``."""
        return self.pool.slots[index].process.transport.engine

    def process(self, index):
        return self.pool.slots[index].process.transport

    def pumped(self, d):
        self.reactor.pump()
        return d

    def allocate(self, call_id, count=1):
        return self.successResultOf(self.pumped(self.pool.allocate(call_id, IP, count)))

    def test_providesIMediaEngine(self):
        self.assertTrue(verifyObject(IMediaEngine, self.pool))

    def test_spawnsWorkersOnPairAlignedSlices(self):
        self.assertEqual(self.start(), [1000, 1001])
        args = [p.args for p in self.reactor.spawned]
        self.assertEqual(
            args[0],
            ["/usr/bin/python3", "-m", "omnirtp.media.worker", "--index", "0",
             "--engine", "omnirtp.media.engine:EmbeddedEngine", "--log-level", "6",
             "--slice", "127.0.0.1=40000-40049"],
        )
        self.assertEqual(args[1][-1], "127.0.0.1=40050-40099")
        self.assertEqual(self.reactor.spawned[0].childFDs, CHILD_FDS)
        self.assertEqual(self.reactor.spawned[0].executable, "/usr/bin/python3")
        self.assertEqual(self.reactor.spawned[0].closed, [0])
        self.assertEqual(
            self.pool.workers,
            [
                {"index": 0, "pid": 1000, "state": READY, "slice": {IP: (40000, 40049)}, "calls": 0, "restarts": 0},
                {"index": 1, "pid": 1001, "state": READY, "slice": {IP: (40050, 40099)}, "calls": 0, "restarts": 0},
            ],
        )

    def test_startingUntilPingAnswered(self):
        self.pool.startService()
        self.assertEqual([w["state"] for w in self.pool.workers], [STARTING, STARTING])
        self.reactor.pump()
        self.assertEqual([w["state"] for w in self.pool.workers], [READY, READY])

    def test_tooFewPairs(self):
        e = self.assertRaises(ConfigError, WorkerPool, self.reactor, {IP: (40000, 40003)}, 3)
        self.assertEqual(
            str(e), "interface 127.0.0.1, num-threads 3: port range [40000, 40003] has 2 pairs, too few for 3 slices"
        )

    def test_zeroWorkers(self):
        e = self.assertRaises(ConfigError, WorkerPool, self.reactor, {IP: (40000, 40099)}, 0)
        self.assertEqual(str(e), "num-threads for a worker pool must be at least 1, got 0")

    def test_environmentMakesOmnirtpImportable(self):
        import os

        import omnirtp

        root = os.path.dirname(os.path.dirname(os.path.abspath(omnirtp.__file__)))
        env = worker_environment({"PYTHONPATH": "/x", "A": "b"}, site_dirs=["/usr/lib/python3/dist-packages"])
        self.assertEqual(env, {"PYTHONPATH": root + os.pathsep + "/x", "A": "b"})
        self.assertEqual(worker_environment(env, site_dirs=[]), env)
        # installed in site-packages: left alone
        self.assertEqual(
            worker_environment({"A": "b"}, site_dirs=["/usr/lib/python3/dist-packages", root]), {"A": "b"}
        )

    def test_whenReadyOfAStoppedPool(self):
        f = self.failureResultOf(self.pool.whenReady(0), WorkerUnavailable)
        self.assertEqual(f.value.detail, "the worker pool is not running")

    def test_routesNewCallsToTheWorkerWithFewestCalls(self):
        self.start()
        self.assertEqual(self.allocate("a", 2), [40000, 40002])
        self.assertEqual(self.allocate("b"), [40050])
        self.assertEqual(self.allocate("a"), [40004])
        self.assertEqual(self.allocate("c"), [40006])
        self.assertEqual([w["calls"] for w in self.pool.workers], [2, 1])
        self.assertEqual(sorted(self.engine(0).calls), ["a", "c"])
        self.assertEqual(sorted(self.engine(1).calls), ["b"])

    def test_releaseOfWholeCallForgetsTheRoute(self):
        self.start()
        self.allocate("a")
        self.allocate("b")
        self.assertIsNone(self.successResultOf(self.pumped(self.pool.release("a"))))
        self.assertEqual(self.engine(0).released, [("a", None)])
        self.assertEqual([w["calls"] for w in self.pool.workers], [0, 1])
        self.assertEqual(self.allocate("c"), [40002])  # worker 0 again: fewest calls

    def test_releaseOfSomeSocketsKeepsTheRoute(self):
        self.start()
        self.allocate("a", 2)
        self.successResultOf(self.pumped(self.pool.release("a", [(IP, 40000)])))
        self.assertEqual(self.engine(0).released, [("a", [(IP, 40000)])])
        self.assertEqual(self.allocate("a"), [40004])

    def test_releaseOfUnknownCallIsNotAnError(self):
        self.start()
        self.assertIsNone(self.successResultOf(self.pool.release("nope")))

    def test_configureGoesToTheCallsWorker(self):
        self.start()
        self.allocate("a")
        self.allocate("b")
        sockets = [{"local": (IP, 40050), "peer": None, "endpoint": ("10.0.0.1", 4000), "learning": "off"}]
        self.assertIsNone(self.successResultOf(self.pumped(self.pool.configure("b", sockets))))
        self.assertEqual(self.engine(1).configured, [("b", sockets)])
        self.assertEqual(self.engine(0).configured, [])

    def test_allocateConfigureRoutesAndRetries(self):
        """A new call's allocate + configure goes to the worker with the
        fewest calls, and to the next when that one's slice is full."""
        self.start()
        self.allocate("a")
        sockets = [{"local": (IP, commands.placeholder(0)), "peer": None}]
        d = self.pool.allocate_configure("b", [(IP, 1)], sockets)
        self.assertEqual(self.successResultOf(self.pumped(d)), [[40050]])
        self.assertEqual(self.engine(1).configured, [("b", [{"local": (IP, 40050),
                                                            "peer": None}])])
        self.engine(0).exhausted = True  # first choice (a tie, lower index): full
        d = self.pool.allocate_configure("c", [(IP, 1)], sockets)
        self.assertEqual(self.successResultOf(self.pumped(d)), [[40052]])
        self.assertEqual([w["calls"] for w in self.pool.workers], [1, 2])

    def test_configureOfUnknownCall(self):
        self.start()
        f = self.failureResultOf(self.pool.configure("nope", []), NGError)
        self.assertEqual(f.value.reason, E_UNKNOWN_CALL)

    def test_exhaustedWorkerPassesNewCallOn(self):
        self.start()
        self.engine(0).exhausted = True
        self.assertEqual(self.allocate("a"), [40050])
        self.assertEqual([w["calls"] for w in self.pool.workers], [0, 1])

    def test_allExhausted(self):
        self.start()
        self.engine(0).exhausted = True
        self.engine(1).exhausted = True
        f = self.failureResultOf(self.pumped(self.pool.allocate("a", IP, 1)), PortsExhausted)
        self.assertEqual(f.value.reason, E_NO_PORTS)
        self.assertEqual([w["calls"] for w in self.pool.workers], [0, 0])

    def test_callWithPortsStaysOnItsWorkerWhenExhausted(self):
        self.start()
        self.allocate("a")
        self.engine(0).exhausted = True
        self.failureResultOf(self.pumped(self.pool.allocate("a", IP, 1)), PortsExhausted)
        self.assertEqual(self.engine(1).calls, {})
        self.assertEqual([w["calls"] for w in self.pool.workers], [1, 0])

    def test_noWorkerRunning(self):
        f = self.failureResultOf(self.pool.allocate("a", IP, 1), PortsExhausted)
        self.assertEqual(f.value.reason, E_NO_PORTS)

    def test_statsOfOneCallAndOfAll(self):
        self.start()
        self.allocate("a")
        self.allocate("b")
        one = self.successResultOf(self.pumped(self.pool.stats("b")))
        self.assertEqual(list(one), ["b"])
        self.assertEqual(list(one["b"]), [(IP, 40050)])
        every = self.successResultOf(self.pumped(self.pool.stats()))
        self.assertEqual(sorted(every), ["a", "b"])
        self.assertEqual(self.successResultOf(self.pool.stats("nope")), {})

    def test_totalsAreSummed(self):
        self.start()
        self.allocate("a", 2)
        self.allocate("b")
        totals = self.successResultOf(self.pumped(self.pool.totals()))
        self.assertEqual(
            totals,
            {"packets": 10, "bytes": 100, "errors": 2, "junk": 0, "ports_used": 6, "ports_free": 194},
        )

    def test_workerDeathLosesItsCallsOnly(self):
        self.start()
        self.allocate("a")
        self.allocate("b")
        self.allocate("c")
        self.process(0).end(signal=9)
        self.assertEqual(self.lost, [(["a", "c"], "media worker 0 (pid 1000) killed by signal 9")])
        self.assertEqual(self.pool.lost_calls, 2)
        self.assertEqual([w["state"] for w in self.pool.workers], [DOWN, READY])
        self.assertEqual([w["calls"] for w in self.pool.workers], [0, 1])
        f = self.failureResultOf(self.pool.configure("a", []), NGError)
        self.assertEqual(f.value.reason, E_UNKNOWN_CALL)
        self.assertIsNone(self.successResultOf(self.pool.release("a")))
        # the other worker's call keeps working; totals/stats skip the dead one
        self.assertEqual(self.allocate("b"), [40052])
        self.assertEqual(sorted(self.successResultOf(self.pumped(self.pool.stats()))), ["b"])

    def test_deadWorkerIsRestartedOnItsSlice(self):
        self.start()
        self.allocate("a")
        self.process(0).end(status=1)
        self.assertEqual(len(self.reactor.spawned), 2)
        ready = self.pool.whenReady(0)
        self.reactor.advance(self.pool.restart_delay)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertEqual(self.reactor.spawned[2].args, self.reactor.spawned[0].args)
        self.reactor.pump()
        self.assertEqual(self.successResultOf(ready), 1002)
        self.assertEqual(self.pool.workers[0]["pid"], 1002)
        self.assertEqual(self.pool.workers[0]["restarts"], 1)
        self.assertEqual(self.allocate("new"), [40000])  # fresh engine on slot 0

    def test_certificateToEveryWorkerAlsoAfterARestart(self):
        from omnirtp.media.dtls import Certificate

        cert = Certificate.generate()
        self.pool.certificate = cert
        self.start()
        self.assertEqual([self.engine(i).certificate.der for i in (0, 1)], [cert.der] * 2)
        self.process(0).end(status=1)
        self.reactor.advance(self.pool.restart_delay)
        self.reactor.pump()
        self.assertEqual(self.pool.workers[0]["pid"], 1002)
        self.assertEqual(self.engine(0).certificate.der, cert.der)

    def test_noCertificateNoCommand(self):
        self.start()
        self.assertEqual([self.engine(i).certificate for i in (0, 1)], [None, None])

    def test_restartBacksOffWhileWorkersDieEarly(self):
        self.start()
        delays = []
        for _ in range(9):
            before = self.reactor.seconds()
            self.pool.slots[0].process.transport.end(status=1)
            spawned = len(self.reactor.spawned)
            while len(self.reactor.spawned) == spawned:
                self.reactor.advance(0.25)
            delays.append(self.reactor.seconds() - before)
        self.assertEqual(delays, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])
        # a worker that lived long enough resets the back-off
        self.reactor.advance(self.pool.stable_after)
        spawned = len(self.reactor.spawned)
        self.pool.slots[0].process.transport.end(status=1)
        self.reactor.advance(0.25)
        self.assertEqual(len(self.reactor.spawned), spawned)
        self.reactor.advance(0.25)
        self.assertEqual(len(self.reactor.spawned), spawned + 1)

    def test_failedSpawnIsRetried(self):
        self.reactor.fail_spawn = True
        self.pool.startService()
        self.assertEqual([w["state"] for w in self.pool.workers], [DOWN, DOWN])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)
        self.reactor.fail_spawn = False
        self.reactor.advance(self.pool.restart_delay)
        self.reactor.pump()
        self.assertEqual([w["state"] for w in self.pool.workers], [READY, READY])

    def test_requestInFlightFailsWhenWorkerDies(self):
        self.start()
        self.allocate("a")
        d = self.pool.configure("a", [])
        self.process(0).end(signal=9)
        f = self.failureResultOf(d, WorkerUnavailable)
        self.assertIsInstance(f.value, NGError)
        self.assertEqual(f.value.reason, E_INTERNAL)

    def test_newCallMovesOnWhenItsWorkerDiesDuringAllocate(self):
        self.start()
        d = self.pool.allocate("a", IP, 1)
        self.process(0).end(signal=9)
        self.reactor.pump()
        self.assertEqual(self.successResultOf(d), [40050])
        self.assertEqual(self.lost, [])
        self.assertEqual([w["calls"] for w in self.pool.workers], [0, 1])

    def test_unexpectedEngineErrorIsAWorkerError(self):
        self.start()
        self.allocate("a")
        self.engine(0).error = ValueError("address '10.9.9.9' is not a media interface")
        f = self.failureResultOf(self.pumped(self.pool.allocate("a", "10.9.9.9", 1)), WorkerError)
        self.assertNotIsInstance(f.value, WorkerUnavailable)
        self.assertEqual(f.value.reason, E_INTERNAL)
        self.assertEqual(
            str(f.value), "Internal error (media worker 0: Allocate failed: Code<UNKNOWN>: Unknown Error)"
        )
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        # the worker is fine: the call stays, nothing is lost
        self.engine(0).error = None
        self.assertEqual(self.allocate("a"), [40002])
        self.assertEqual(self.lost, [])

    def test_requestThatCannotBeEncoded(self):
        self.start()
        self.allocate("a")
        f = self.failureResultOf(self.pool.configure("a", [{"local": object()}]), WorkerError)
        self.assertNotIsInstance(f.value, WorkerUnavailable)
        self.assertEqual(f.value.detail, "Configure could not be sent")
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_unansweredRequestTimesOutAndKillsTheWorker(self):
        self.start()
        self.allocate("a")
        d = self.pool.stats("a")  # never pumped: the worker "hangs"
        self.reactor.advance(self.pool.request_timeout)
        f = self.failureResultOf(d, WorkerUnavailable)
        self.assertEqual(f.value.detail, "media worker 0 did not answer Stats in 10.0s")
        self.assertEqual(self.process(0).signals, ["KILL"])
        self.process(0).end(signal=9)
        self.assertEqual(self.lost[0][0], ["a"])

    def test_slowStartingWorkerIsNotKilled(self):
        """A new worker gets start_timeout, not request_timeout, to answer
        its first Ping: importing Twisted takes seconds on a busy host, and
        killing it then only starts a crash loop."""
        self.pool.startService()
        ready = self.pool.whenReady(0)
        self.reactor.advance(self.pool.request_timeout + 1)  # no answer yet
        self.assertEqual(self.process(0).signals, [])
        self.reactor.pump()
        self.assertEqual(self.successResultOf(ready), 1000)
        self.assertEqual(self.pool.workers[0]["restarts"], 0)

    def test_workerSilentPastStartTimeoutIsKilled(self):
        """A new worker that never answers its first Ping is killed after
        start_timeout."""
        self.pool.startService()
        self.reactor.advance(self.pool.start_timeout - 0.5)
        self.assertEqual(self.process(0).signals, [])
        self.reactor.advance(0.5)
        self.assertEqual(self.process(0).signals, ["KILL"])

    def test_lateAnswerAfterTimeoutIsIgnored(self):
        self.start()
        self.allocate("a")
        d = self.pool.stats("a")
        self.reactor.advance(self.pool.request_timeout)
        self.failureResultOf(d, WorkerUnavailable)
        self.reactor.pump()  # the answer arrives after all: nothing breaks

    def test_onCallsLostErrorIsLogged(self):
        self.start()
        self.allocate("a")

        def broken(call_ids, reason):
            raise RuntimeError("registry bug")

        self.pool.on_calls_lost = broken
        self.process(0).end(signal=9)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.pool.lost_calls, 1)

    def test_stopServiceClosesPipesAndWaits(self):
        self.start()
        self.allocate("a")
        d = self.pool.stopService()
        self.assertNoResult(d)
        self.assertEqual(self.reactor.spawned[0].closed, [0, FD_FROM_CONTROL])
        self.reactor.spawned[0].end()
        self.assertNoResult(d)
        self.reactor.spawned[1].end()
        self.successResultOf(d)
        self.assertEqual(self.lost, [])
        self.assertEqual([w["state"] for w in self.pool.workers], [STOPPED, STOPPED])
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_stopServiceKillsStragglers(self):
        self.start()
        d = self.pool.stopService()
        self.reactor.spawned[0].end()
        self.reactor.advance(self.pool.stop_timeout)
        self.assertEqual(self.reactor.spawned[0].signals, [])
        self.assertEqual(self.reactor.spawned[1].signals, ["KILL"])
        self.reactor.spawned[1].end(signal=9)
        self.successResultOf(d)

    def test_stopServiceCancelsRestart(self):
        self.start()
        self.process(0).end(signal=9)
        d = self.pool.stopService()
        self.reactor.spawned[1].end()
        self.successResultOf(d)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_workerLogIsRelayed(self):
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start()
        record = eventAsJSON(
            {"log_format": "bound {n} ports", "n": 4, "log_level": LogLevel.warn, "log_namespace": "x"}
        )
        proto = self.pool.slots[1].process
        proto.childDataReceived(2, b"\x1e" + record.encode("utf-8")[:20])
        proto.childDataReceived(2, record.encode("utf-8")[20:] + b"\nTraceback (most recent call last):\n")
        relayed = [e for e in events if e.get("log_format", "").startswith("worker {worker}")]
        self.assertEqual(
            [(e["log_level"], e["worker"], e["pid"], e["text"]) for e in relayed],
            [(LogLevel.warn, 1, 1001, "bound 4 ports"), (LogLevel.warn, 1, 1001, "Traceback (most recent call last):")],
        )

    def test_logLevelToEveryWorkerAndAfterARestart(self):
        """set_log_level reaches each running worker over AMP; a worker
        started later gets the new level on its command line."""
        self.start()
        got = []
        for process in self.reactor.spawned:
            process.worker.on_log_level = lambda level, pid=process.pid: got.append((pid, level))
        d = self.pool.set_log_level(7)
        self.reactor.pump()
        self.successResultOf(d)
        self.assertEqual(got, [(1000, 7), (1001, 7)])
        self.process(0).end(status=1)
        self.reactor.advance(self.pool.restart_delay)
        args = self.reactor.spawned[2].args
        self.assertEqual(args[args.index("--log-level") + 1], "7")

    def test_workerLogKeepsItsSubsystem(self):
        """A worker's record keeps its subsystem and priority, so the
        daemon's per-subsystem levels apply to it."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start()
        record = eventAsJSON({"log_format": "check sent", "log_level": LogLevel.debug,
                              "log_namespace": "omnirtp.media.ice"})
        self.pool.slots[0].process.childDataReceived(2, b"\x1e" + record.encode("utf-8") + b"\n")
        [relayed] = [e for e in events if e.get("log_format", "").startswith("worker {worker}")]
        self.assertEqual((relayed["log_level"], relayed["log_subsystem"], relayed["log_priority"]),
                         (LogLevel.debug, "ice", 7))

    def test_workerFailureIsRelayedWithItsTraceback(self):
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start()
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        record = eventAsJSON(
            {"log_format": "oops", "log_level": LogLevel.critical, "log_failure": failure, "log_namespace": "x"}
        )
        self.pool.slots[0].process.childDataReceived(2, b"\x1e" + record.encode("utf-8") + b"\n")
        [relayed] = [e for e in events if e.get("log_format", "").startswith("worker {worker}")]
        self.assertEqual(relayed["log_level"], LogLevel.critical)
        self.assertTrue(relayed["text"].startswith("oops\nTraceback"), relayed["text"])
        self.assertIn("ZeroDivisionError", relayed["text"])
        self.assertNotIn("log_failure", relayed)

    def test_describeExit(self):
        self.assertEqual(describe_exit(Failure(ProcessDone(0))), "exited normally")
        self.assertEqual(describe_exit(Failure(ProcessTerminated(3))), "exited with status 3")
        self.assertEqual(describe_exit(Failure(ProcessTerminated(None, 9))), "killed by signal 9")


class PipeTransportTests(SynchronousTestCase):
    def test_writesToTheWorkersPipe(self):
        reactor = FakeProcessReactor()
        process = FakeProcess(reactor, None, [], 7, FakeEngine())
        transport = PipeTransport(process, WorkerAddress(0, 7))
        self.assertTrue(verifyObject(ITransport, transport))
        transport.writeSequence([b"a", b"b"])
        self.assertEqual(process.to_worker, [b"ab"])
        transport.loseConnection()
        transport.loseConnection()
        self.assertEqual(process.closed, [FD_FROM_CONTROL])
        transport.write(b"late")  # the pipe is closed: dropped, no error
        self.assertEqual(process.to_worker, [b"ab"])
        self.assertEqual(repr(transport.getPeer()), "<media worker 0 pid 7>")


class QueueingWriter:
    """What write_now reads of a twisted ProcessWriter: its pipe, its queue."""

    def __init__(self, fd):
        self.fd = fd
        self.dataBuffer = b""
        self._tempDataBuffer = []
        self.disconnecting = False
        self.connected = True
        self.queued = []

    def write(self, data):
        self.queued.append(data)


class WriteNowTests(SynchronousTestCase):
    """omnirtp.media.amp.write_now: AMP bytes go to the pipe at once."""

    def pipe(self):
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        os.set_blocking(w, False)
        return r, w

    def test_empty_queue_writes_at_once(self):
        r, w = self.pipe()
        writer = QueueingWriter(w)
        commands.write_now(writer, b"box")
        self.assertEqual((os.read(r, 100), writer.queued), (b"box", []))

    def test_queued_data_keeps_its_place(self):
        r, w = self.pipe()
        for pending in ({"dataBuffer": b"x"}, {"_tempDataBuffer": [b"x"]},
                        {"disconnecting": True}, {"connected": False}):
            writer = QueueingWriter(w)
            writer.__dict__.update(pending)
            commands.write_now(writer, b"box")
            self.assertEqual(writer.queued, [b"box"])
        os.write(w, b"-")
        self.assertEqual(os.read(r, 100), b"-")  # nothing was written directly

    def test_what_the_pipe_does_not_take_is_queued(self):
        r, w = self.pipe()
        size = fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ: the smallest pipe
        writer = QueueingWriter(w)
        data = bytes(range(256)) * ((size * 2) // 256)
        commands.write_now(writer, data)
        written = os.read(r, len(data))
        self.assertEqual(written + b"".join(writer.queued), data)
        self.assertEqual(len(written), size)

    def test_error_goes_to_the_writer(self):
        r, w = os.pipe()
        os.close(r)
        self.addCleanup(os.close, w)
        writer = QueueingWriter(w)
        commands.write_now(writer, b"box")  # EPIPE: the writer reports it
        self.assertEqual(writer.queued, [b"box"])
