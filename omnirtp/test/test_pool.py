"""Unit tests for the worker pool, the pipe between it and a worker (frames:
engine calls and AMP commands) and the worker's end.

No processes are started: :class:`FakeProcessReactor` hands the pool fake
process transports whose "child" is a :class:`WorkerChannel` over a fake
engine in memory, and :meth:`FakeProcessReactor.pump` moves the bytes.
"""

import errno
import enum
import fcntl
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

from omnirtp import sync
from omnirtp.errors import E_INTERNAL, E_NO_PORTS, E_UNKNOWN_CALL, ConfigError, NGError, PortsExhausted
from omnirtp.interfaces import IMediaEngine
from omnirtp.logging import level_for
from omnirtp.media import amp as commands
from omnirtp.media import wire
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
    AmpFrames,
    LevelPredicate,
    WorkerChannel,
    WorkerProtocol,
    build_parser,
    format_slice,
    load_factory,
    main,
    parse_slice,
    set_log_level,
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
                    key: {"packets": 1, "bytes": 10, "endpoint": None, "confirmed": False,
                          "last_packet": 1000.0 + key[1]}
                    for key in socks
                }
        return succeed(out)

    def totals(self):
        used = 2 * sum(len(s) for s in self.calls.values())
        return succeed(
            {"packets": 5, "bytes": 50, "errors": 1, "junk": 0, "ports_used": used, "ports_free": 100 - used}
        )


class MemoryLink:
    """The control process's end (engine requests and an AMP client) and a
    worker's :class:`WorkerChannel` connected in memory."""

    def __init__(self, engine, clock=None):
        self.clock = clock or Clock()
        self.closed = []
        self.server = WorkerProtocol(engine, self.clock, on_close=lambda: self.closed.append(True), pid=4242)
        self.channel = WorkerChannel(self.server)
        self.server_transport = StringTransport()
        self.channel.makeConnection(self.server_transport)
        self.client_transport = StringTransport()
        self.requests = wire.Requests(self.client_transport.write, self.clock)
        self.client = amp.AMP()
        self.client.makeConnection(AmpFrames(self.client_transport))
        self.reader = wire.FrameReader({wire.REPLY: self.requests.received,
                                        wire.AMP: self.client.dataReceived})

    def pump(self):
        moved = True
        while moved:
            moved = False
            for src, dst in (
                (self.client_transport, self.channel.dataReceived),
                (self.server_transport, self.reader.feed),
            ):
                data = src.value()
                if data:
                    src.clear()
                    dst(data)
                    moved = True

    def request(self, op, *args):
        """An engine call, pumped."""
        d = self.requests.send(op, *args)
        self.pump()
        return d

    def call(self, command, **kw):
        """An AMP callRemote, pumped; the result is handed over before the
        answer arrives (as any real caller does), so AMP never sees it
        unhandled."""
        out = Deferred()

        def hand_over(result):
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(result)

        self.client.callRemote(command, **kw).addBoth(hand_over)
        self.pump()
        return out


class Flavour(str, enum.Enum):
    """A str subclass, as a value of an engine call may be one."""

    PLAIN = "plain"


class Size(enum.IntEnum):
    SMALL = 3


class EngineCallTests(SynchronousTestCase):
    """Engine calls cross the pipe with the interface's exact types and errors."""

    def setUp(self):
        self.engine = FakeEngine()
        self.link = MemoryLink(self.engine)

    def test_allocate(self):
        self.assertEqual(self.successResultOf(self.link.request("allocate", "c1", IP, 2)),
                         [40000, 40002])

    def test_portsExhaustedArrivesAsPortsExhausted(self):
        self.engine.exhausted = True
        f = self.failureResultOf(self.link.request("allocate", "c1", IP, 1), PortsExhausted)
        self.assertIs(f.type, PortsExhausted)
        self.assertEqual(f.value.reason, E_NO_PORTS)

    def test_ngErrorArrivesAsNGError(self):
        self.engine.error = NGError("Something specific")
        f = self.failureResultOf(self.link.request("allocate", "c1", IP, 1), NGError)
        self.assertIs(f.type, NGError)
        self.assertEqual(f.value.reason, "Something specific")

    def test_unexpectedErrorIsNotAnNGError(self):
        """The worker logs it; the control process gets its type and text."""
        self.engine.error = KeyError("bug")
        f = self.failureResultOf(self.link.request("allocate", "c1", IP, 1), wire.RemoteFailure)
        self.assertFalse(f.check(NGError))
        self.assertEqual(str(f.value), "Allocate failed: KeyError: 'bug'")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

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
        result = self.successResultOf(
            self.link.request("allocate_configure", "c1", [(IP, 2)], sockets))
        self.assertEqual(result, [[40000, 40002]])
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
        f = self.failureResultOf(
            self.link.request("allocate_configure", "c1", [(IP, 1)], sockets), NGError)
        self.assertEqual(f.value.reason, "refused")
        self.assertEqual(self.engine.released, [("c1", [(IP, 40000)])])
        self.engine.exhausted = True
        self.failureResultOf(
            self.link.request("allocate_configure", "c2", [(IP, 1)], sockets), PortsExhausted)
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
        # a worker's entries, just read from the pipe: filled in place
        filled = commands.fill_ports(entries, [30000, 30010, 30020], copy=False)
        self.assertIs(filled[0], entries[0])
        self.assertEqual(entries, [
            {"local": (IP, 30000), "peer": (IP, 30011), "rtcp_peer": (IP, 40100),
             "endpoint": ("10.0.0.1", 6000), "learning": "off"},
            {"local": (IP, 30021), "peer": None}])

    def test_configureKeepsTuples(self):
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
                "ptime": 20.5,
            },
            {"local": (IP, 40002), "peer": None, "endpoint": None, "learning": "off",
             "codecs": [(0, "PCMU")]},
        ]
        self.assertIsNone(self.successResultOf(self.link.request("configure", "c1", sockets)))
        [(call_id, got)] = self.engine.configured
        self.assertEqual(call_id, "c1")
        self.assertEqual(got, sockets)
        self.assertIsInstance(got[0]["local"], tuple)
        self.assertIsInstance(got[0]["endpoint"], tuple)
        self.assertIsInstance(got[1]["codecs"][0], tuple)
        self.assertIsNone(got[1]["peer"])

    def test_configureCarriesSrtpKeys(self):
        """srtp_in / srtp_out crypto dicts (and None) cross unchanged; an
        entry without them arrives without them (absent != None)."""
        crypto = {"suite": "AEAD_AES_128_GCM", "key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw=="}
        sockets = [
            {"local": (IP, 40000), "peer": (IP, 40002), "srtp_in": crypto, "srtp_out": None},
            {"local": (IP, 40002), "peer": (IP, 40000)},
        ]
        self.successResultOf(self.link.request("configure", "c1", sockets))
        [(_, got)] = self.engine.configured
        self.assertEqual(got, sockets)
        self.assertNotIn("srtp_in", got[1])

    def test_subclassesCrossAsTheirBase(self):
        """A str or int subclass (an enum) arrives as a plain str / int,
        as JSON sent it over AMP."""
        sockets = [{"local": (IP, 40000), "learning": Flavour.PLAIN, "tos": Size.SMALL}]
        self.successResultOf(self.link.request("configure", "c1", sockets))
        [(_, [got])] = self.engine.configured
        self.assertEqual(got, {"local": (IP, 40000), "learning": "plain", "tos": 3})
        self.assertIs(type(got["learning"]), str)
        self.assertIs(type(got["tos"]), int)

    def test_valueThatCannotCross(self):
        """Nothing is sent; the caller gets the TypeError."""
        e = self.assertRaises(TypeError, self.link.requests.send, "configure", "c1",
                              [{"local": object()}])
        self.assertIn("object cannot cross to a media worker", str(e))
        self.assertEqual(self.link.client_transport.value(), b"")
        self.assertEqual(self.link.requests.pending, {})

    def test_answerThatCannotCross(self):
        """The worker logs it and answers FAILED: the caller never hangs."""
        self.engine.stats_value = {"c1": {(IP, 40000): {"packets": object()}}}
        f = self.failureResultOf(self.link.request("stats", "c1"), wire.RemoteFailure)
        self.assertTrue(str(f.value).startswith("Stats failed: TypeError: object cannot cross"),
                        str(f.value))
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_statsCarryTransformCounters(self):
        """A socket's ``transforms`` counters cross as plain data."""
        counters = {"packets": 3, "bytes": 300, "errors": 2, "last_packet": 1.5,
                    "endpoint": ("10.0.0.1", 5000), "confirmed": True,
                    "transforms": {"srtp-unprotect": {"auth-failures": 1, "replays": 1,
                                                      "errors": 0}}}
        self.engine.stats_value = {"c1": {(IP, 40000): counters}}
        result = self.successResultOf(self.link.request("stats", "c1"))
        self.assertEqual(result, {"c1": {(IP, 40000): counters}})

    def test_statsCarryIceAndDtls(self):
        """ICE and DTLS counters cross; the selected address is a tuple."""
        counters = {"packets": 0, "bytes": 0, "errors": 0, "last_packet": 1.5,
                    "endpoint": ("10.0.0.1", 5000), "confirmed": True,
                    "ice": {"state": "completed", "selected": ("10.0.0.1", 5000),
                            "controlling": False, "lite": False, "component": 1, "pairs": 1,
                            "counters": {"requests": 3}},
                    "dtls": {"state": "failed", "role": "server", "profile": None,
                             "failure": "fingerprint mismatch", "counters": {"received": 2}}}
        self.engine.stats_value = {"c1": {(IP, 40000): counters}}
        result = self.successResultOf(self.link.request("stats", "c1"))
        self.assertEqual(result, {"c1": {(IP, 40000): counters}})
        self.assertIsInstance(result["c1"][(IP, 40000)]["ice"]["selected"], tuple)

    def test_releaseWholeCallAndSomeSockets(self):
        self.successResultOf(self.link.request("release", "c1", None))
        self.successResultOf(self.link.request("release", "c2", [(IP, 40000), (IP, 40004)]))
        self.assertEqual(self.engine.released, [("c1", None), ("c2", [(IP, 40000), (IP, 40004)])])
        self.assertIsInstance(self.engine.released[1][1][0], tuple)

    def test_statsRelease(self):
        """A deleted call's counters, read before its ports go."""
        self.successResultOf(self.link.request("allocate", "c1", IP, 1))
        result = self.successResultOf(self.link.request("stats_release", "c1"))
        self.assertEqual(list(result), ["c1"])
        self.assertEqual(self.engine.released, [("c1", None)])
        self.assertEqual(self.engine.calls, {})

    def test_statsReleaseReleasesAlsoWhenStatsFail(self):
        self.engine.stats = lambda call_id: fail(KeyError("stats bug"))
        self.failureResultOf(self.link.request("stats_release", "c1"), wire.RemoteFailure)
        self.assertEqual(self.engine.released, [("c1", None)])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_statsOfManyCalls(self):
        """No size limit: a reply of several pipe reads' worth arrives whole."""
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
        d = self.link.requests.send("stats", None)
        self.link.channel.dataReceived(self.link.client_transport.value())
        reply = self.link.server_transport.value()
        self.assertGreater(len(reply), 2 * 65536)  # more than a pipe holds
        for i in range(0, len(reply), 4096):  # as a pipe hands it over
            self.assertNoResult(d)
            self.link.reader.feed(reply[i:i + 4096])
        result = self.successResultOf(d)
        self.assertEqual(result, stats)
        some = result["call-7-" + "x" * 40]
        self.assertIsInstance(list(some)[0], tuple)
        self.assertIsInstance(some[(IP, 40028)]["endpoint"], tuple)

    def test_callIdWithUndecodableBytes(self):
        call_id = b"abc\xff\xfe@host".decode("utf-8", "surrogateescape")
        self.successResultOf(self.link.request("allocate", call_id, IP, 1))
        self.assertEqual(list(self.engine.calls), [call_id])
        result = self.successResultOf(self.link.request("stats", call_id))
        self.assertEqual(list(result), [call_id])
        self.successResultOf(self.link.request("release", call_id, None))
        self.assertEqual(self.engine.released, [(call_id, None)])

    def test_statsOfOneCall(self):
        self.successResultOf(self.link.request("allocate", "c1", IP, 1))
        self.successResultOf(self.link.request("allocate", "c2", IP, 1))
        result = self.successResultOf(self.link.request("stats", "c2"))
        self.assertEqual(list(result), ["c2"])

    def test_lastPacketsFromStats(self):
        """An engine without ``last_packets``: the worker answers it from
        ``stats(None)``, each call's newest ``last_packet``."""
        self.successResultOf(self.link.request("allocate", "c1", IP, 2))
        self.successResultOf(self.link.request("allocate", "c2", IP, 1))
        result = self.successResultOf(self.link.request("last_packets"))
        self.assertEqual(result, {"c1": 1000.0 + 40002, "c2": 1000.0 + 40004})

    def test_lastPacketsOfTheEngine(self):
        self.engine.last_packets = lambda: succeed({"c1": 12.5})
        self.assertEqual(self.successResultOf(self.link.request("last_packets")), {"c1": 12.5})

    def test_totals(self):
        result = self.successResultOf(self.link.request("totals"))
        self.assertEqual(result["ports_free"], 100)
        self.assertEqual(result["packets"], 5)

    def test_answerWhenTheEngineWaits(self):
        """An engine Deferred that fires later: its answer goes then (after
        the next request's); the frames of two requests sent at once are
        read from one chunk."""
        held = Deferred()
        self.engine.configure = lambda call_id, sockets: held
        first = self.link.requests.send("configure", "c1", [])
        second = self.link.requests.send("totals")
        self.link.pump()
        self.assertNoResult(first)
        self.assertEqual(self.successResultOf(second)["packets"], 5)
        held.callback(None)
        self.link.pump()
        self.assertIsNone(self.successResultOf(first))

    def test_answersOfOneReadGoInOneWrite(self):
        """The answers to the requests one read brings (and AMP's) go out
        in one write; one that the engine gives later, when it does."""
        writes = []
        self.patch(self.link.server_transport, "write", writes.append)
        held = Deferred()
        self.engine.configure = lambda call_id, sockets: held
        self.link.requests.send("totals")
        self.link.requests.send("configure", "c1", [])
        self.link.requests.send("totals")
        self.link.channel.dataReceived(self.link.client_transport.value())
        self.assertEqual(len(writes), 1)
        frames = []
        wire.FrameReader({wire.REPLY: frames.append}).feed(writes[0])
        self.assertEqual([wire.loads(f)[0] for f in frames], [0, 2])
        held.callback(None)
        self.assertEqual(len(writes), 2)
        self.assertEqual(wire.loads(writes[1][5:])[:2], (1, wire.OK))

    def test_replyForNobodyIsDropped(self):
        d = self.link.requests.send("totals")
        self.link.requests.fail(0, WorkerUnavailable("timed out"))
        self.failureResultOf(d, WorkerUnavailable)
        self.link.pump()  # the late answer: nothing breaks
        self.assertEqual(self.link.requests.pending, {})

    def test_oldestAndFailAll(self):
        self.clock = self.link.clock
        self.link.requests.send("totals")
        self.clock.advance(2)
        d = self.link.requests.send("stats", "c1")
        self.assertEqual(self.link.requests.oldest(), (0, "totals", 0.0))
        self.link.requests.fail(0, WorkerUnavailable("x"))
        self.assertEqual(self.link.requests.oldest(), (1, "stats", 2.0))
        self.link.requests.fail_all(lambda command: WorkerUnavailable(command + " lost"))
        f = self.failureResultOf(d, WorkerUnavailable)
        self.assertEqual(f.value.detail, "Stats lost")
        self.assertIsNone(self.link.requests.oldest())
        self.flushLoggedErrors(WorkerUnavailable)


class FrameTests(SynchronousTestCase):
    """omnirtp.media.wire.FrameReader: a pipe's bytes back into frames."""

    def reader(self):
        got = []
        reader = wire.FrameReader({wire.AMP: lambda b: got.append(("A", b)),
                                   wire.REPLY: lambda b: got.append(("R", b))})
        return reader, got

    def test_framesSplitAndJoinedAnyhow(self):
        data = wire.frame(wire.AMP, b"one") + wire.frame(wire.REPLY, b"") + \
            wire.frame(wire.REPLY, b"three" * 1000)
        for step in (1, 2, 3, 5, 7, 4096, len(data)):
            reader, got = self.reader()
            for i in range(0, len(data), step):
                reader.feed(data[i:i + step])
            self.assertEqual(got, [("A", b"one"), ("R", b""), ("R", b"three" * 1000)], step)

    def test_unknownKind(self):
        reader, got = self.reader()
        e = self.assertRaises(wire.FrameError, reader.feed, wire.frame(wire.AMP, b"x") +
                              wire.frame(wire.REQUEST, b"yz"))
        self.assertEqual(str(e), "frame of unknown kind 'Q' (3 bytes)")
        self.assertEqual(got, [("A", b"x")])
        e = self.assertRaises(wire.FrameError, self.reader()[0].feed, b"\0\0\0\0A")
        self.assertEqual(str(e), "frame of unknown kind 'A' (0 bytes)")

    def test_workerClosesOnGarbage(self):
        link = MemoryLink(FakeEngine())
        link.channel.dataReceived(b"\0\0\0\x02Zz")
        self.assertTrue(link.server_transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_plain(self):
        self.assertEqual(wire.plain({Flavour.PLAIN: [Size.SMALL, (True, None, 1.5, b"b")]}),
                         {"plain": [3, (True, None, 1.5, b"b")]})
        self.assertRaises(TypeError, wire.plain, {1: {2}})


class AmpCommandTests(SynchronousTestCase):
    """The AMP commands, in frames of their own on the same pipes."""

    def setUp(self):
        self.engine = FakeEngine()
        self.link = MemoryLink(self.engine)

    def test_setCertificate(self):
        """The certificate and its key arrive as a dtls.Certificate."""
        from omnirtp.media.dtls import Certificate

        cert = Certificate.generate()
        pem, key = cert.pem()
        self.successResultOf(self.link.call(commands.SetCertificate, certificate=pem, key=key))
        self.assertEqual(self.engine.certificate.der, cert.der)
        self.assertEqual(self.engine.certificate.pem(), (pem, key))

    def test_ping(self):
        self.assertEqual(self.successResultOf(self.link.call(commands.Ping)), {"pid": 4242})

    def test_pingBetweenEngineCalls(self):
        """AMP frames and engine frames share the pipe in order."""
        first = self.link.requests.send("allocate", "c1", IP, 1)
        ping = self.link.call(commands.Ping)
        self.assertEqual(self.successResultOf(first), [40000])
        self.assertEqual(self.successResultOf(ping), {"pid": 4242})

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
        self.link.channel.connectionLost(Failure(ConnectionDone()))
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

    def test_levelPredicateDecidesAsTwistedsWithADefaultLevel(self):
        """The worker's log filter answers what twisted's predicate with
        only a default level answers, for every level, also after the
        level changed (SetLogLevel), and for events without a level or a
        namespace."""
        from twisted.logger import LogLevelFilterPredicate, PredicateResult

        events = [{}, {"log_namespace": "omnirtp.media.engine.EmbeddedEngine"},
                  {"log_level": LogLevel.error}, {"log_level": LogLevel.error, "log_namespace": ""}]
        events += [{"log_level": lv, "log_namespace": ns} for lv in LogLevel.iterconstants()
                   for ns in ("omnirtp.media.engine.EmbeddedEngine", "x")]
        ours = LevelPredicate(LogLevel.debug)
        for first in (True, False):
            for level in LogLevel.iterconstants():
                if first:
                    ours = LevelPredicate(level)
                else:
                    ours.set(level)
                twisteds = LogLevelFilterPredicate(defaultLogLevel=level)
                for event in events:
                    self.assertIs(ours(event), twisteds(event), (level, event))
                for lv in LogLevel.iterconstants():
                    self.assertEqual(ours.passes(lv), ours({"log_level": lv, "log_namespace": "x"})
                                     is not PredicateResult.no, (level, lv))

    def test_engineSkipsTheDebugLinesItsWorkerDrops(self):
        """Below log level 7 a worker's embedded engine emits no allocate
        debug line (the filter would drop it); at 7 and after a change back
        it does, as before; an engine without ``log_debug`` is left alone."""
        from omnirtp.media.engine import EmbeddedEngine
        from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        engine = EmbeddedEngine(MemoryUDPReactor(), {IP: (41000, 41009)}, bind=FakeNetwork().bind)
        levels = LevelPredicate(LogLevel.info)

        def allocated(call_id):
            self.successResultOf(engine.allocate(call_id, IP, 1))
            return [e for e in events if e.get("call_id") == call_id
                    and e["log_level"] == LogLevel.debug]

        for log_level, emitted in ((6, False), (7, True), (5, False), (8, True)):
            set_log_level(levels, engine, log_level)
            self.assertEqual(engine.log_debug, emitted)
            self.assertEqual(len(allocated("c%d" % log_level)), 1 if emitted else 0, log_level)
        other = object()
        set_log_level(levels, other, 6)
        self.assertFalse(hasattr(other, "log_debug"))


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
        self.channel = WorkerChannel(self.worker, self._receive_sockets)
        self.channel.makeConnection(self.worker_out)
        #: the parked calls' sockets sent to this worker and not read yet:
        #: ``(tag, sockets)`` (omnirtp.media.park, in memory)
        self.handed = []

    def send_sockets(self, tag, socks):
        """The pool's hand-off of a parked call's sockets, in memory: each
        socket's duplicate (``dup``, as SCM_RIGHTS gives) waits for the
        worker's adopt request."""
        if self.ended:
            raise OSError(errno.EPIPE, "the worker is gone")
        self.handed.append((tag, [sock.dup() for sock in socks]))

    def _receive_sockets(self, tag, count):
        if not self.handed:
            raise ValueError("no hand-off message")
        got, socks = self.handed.pop(0)
        if got != tag or len(socks) != count:
            raise ValueError("hand-off message %r with %d sockets, expected %r with %d"
                             % (got, len(socks), tag, count))
        return socks

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
            self.channel.dataReceived(data)
            moved = True
        out = self.worker_out.value()
        if out and not self.ended:
            self.worker_out.clear()
            self.proto.childDataReceived(FD_TO_CONTROL, out)
            moved = True
        return moved

    def end(self, signal=None, status=None):
        self.ended = True
        # the sockets on their way to it go with it (as the descriptors
        # in flight on a closed Unix socket do)
        for _tag, socks in self.handed:
            for sock in socks:
                sock.close()
        del self.handed[:]
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
        # the pool writes what a turn gathered at its end (callLater(0))
        self.advance(0)
        while any([p.pump() for p in self.spawned]):
            self.advance(0)


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

    def test_pickIsTheFirstCandidateNotTried(self):
        """_pick (one pass) chooses what the first of _candidates (sorted)
        not tried would be: ready before starting, fewest calls, lowest
        index; nothing down or without a process."""
        import itertools
        import types

        pool = types.SimpleNamespace()
        for states in itertools.product((READY, STARTING, DOWN), repeat=3):
            for counts in itertools.product((0, 1, 2), repeat=3):
                pool.slots = [types.SimpleNamespace(index=i, state=state, calls=set(range(n)),
                                                    process=None if i == 2 and n == 2 else 1)
                              for i, (state, n) in enumerate(zip(states, counts))]
                for tried in (set(), {0}, {1, 2}, {0, 1, 2}):
                    first = [s for s in WorkerPool._candidates(pool) if s.index not in tried]
                    self.assertIs(WorkerPool._pick(pool, tried), first[0] if first else None,
                                  (states, counts, tried))

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

    def test_lastPacketsOfAllWorkers(self):
        self.start()
        self.allocate("a")
        self.allocate("b")
        every = self.successResultOf(self.pumped(self.pool.last_packets()))
        self.assertEqual(every, {"a": 1000.0 + 40000, "b": 1000.0 + 40050})

    def test_totalsAreSummed(self):
        self.start()
        self.allocate("a", 2)
        self.allocate("b")
        totals = self.successResultOf(self.pumped(self.pool.totals()))
        self.assertEqual(
            totals,
            {"packets": 10, "bytes": 100, "errors": 2, "junk": 0, "ports_used": 6, "ports_free": 194},
        )

    def test_transcodersAreAddedPerChain(self):
        """``transcoders()``: per chain the workers' transcoders added up,
        and their last second's figures where any has some."""
        self.start()
        self.engine(0).transcoders = lambda: succeed({
            "PCMU/8000 -> PCMA/8000": (2, (50, 8000, 8000)), "PCMA/8000 -> PCMU/8000": (1, None)})
        self.engine(1).transcoders = lambda: succeed({
            "PCMU/8000 -> PCMA/8000": (1, (25, 4000, 4000)),
            "PCMA/8000 -> PCMU/8000": (0, (5, 800, 800)), "opus/48000/2 -> PCMU/8000": (0, None)})
        self.assertEqual(self.successResultOf(self.pumped(self.pool.transcoders())), {
            "PCMU/8000 -> PCMA/8000": (3, (75, 12000, 12000)),
            "PCMA/8000 -> PCMU/8000": (1, (5, 800, 800)), "opus/48000/2 -> PCMU/8000": (0, None)})

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
            str(f.value), "Internal error (media worker 0: Allocate failed: ValueError: "
                          "address '10.9.9.9' is not a media interface)"
        )
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        # the worker is fine: the call stays, nothing is lost
        self.engine(0).error = None
        self.assertEqual(self.allocate("a"), [40002])
        self.assertEqual(self.lost, [])

    def test_requestThatCannotBeEncoded(self):
        self.start()
        self.allocate("a")
        sent = len(self.process(0).to_worker)
        f = self.failureResultOf(self.pool.configure("a", [{"local": object()}]), WorkerError)
        self.assertNotIsInstance(f.value, WorkerUnavailable)
        self.assertEqual(f.value.detail, "Configure could not be sent")
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        self.assertEqual(len(self.process(0).to_worker), sent)  # nothing sent
        self.reactor.advance(self.pool.request_timeout)  # nothing waits for an answer
        self.assertEqual(self.process(0).signals, [])
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

    def test_oneTimerForAllRequests(self):
        """The time-out check is one timer per worker, not one per request:
        it finds each request's own deadline."""
        self.start()
        self.allocate("a")
        timers = len(self.reactor.getDelayedCalls())
        for _ in range(5):
            self.allocate("a")
        self.assertEqual(len(self.reactor.getDelayedCalls()), timers)
        self.reactor.advance(4)
        d = self.pool.stats("a")  # never pumped: due at 14 s
        self.reactor.advance(self.pool.request_timeout - 4)  # the first check, at 10 s
        self.assertNoResult(d)
        self.assertEqual(self.process(0).signals, [])
        self.reactor.advance(3.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        f = self.failureResultOf(d, WorkerUnavailable)
        self.assertEqual(f.value.detail, "media worker 0 did not answer Stats in 10.0s")
        self.assertEqual(self.process(0).signals, ["KILL"])

    def test_timerStopsWhenNothingWaits(self):
        self.start()
        self.allocate("a")
        self.reactor.advance(self.pool.request_timeout)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.process(0).signals, [])

    def test_statsReleaseIsOneRequest(self):
        """A deleted call's counters and the release of its ports: one
        request to its worker; the route goes at once."""
        self.start()
        self.allocate("a", 2)
        sent = len(self.process(0).to_worker)
        d = self.pool.stats_release("a")
        self.reactor.advance(0)  # the end of the turn: what it gathered is written
        self.assertEqual(len(self.process(0).to_worker), sent + 1)
        self.assertEqual([w["calls"] for w in self.pool.workers], [0, 0])
        stats = self.successResultOf(self.pumped(d))
        self.assertEqual(sorted(stats["a"]), [(IP, 40000), (IP, 40002)])
        self.assertEqual(self.engine(0).released, [("a", None)])
        self.assertEqual(self.successResultOf(self.pool.stats_release("a")), {})

    def test_statsReleaseOfADeadWorkersCall(self):
        self.start()
        self.allocate("a")
        d = self.pool.stats_release("a")
        self.process(0).end(signal=9)
        f = self.failureResultOf(d, WorkerUnavailable)
        self.assertEqual(f.value.detail,
                         "media worker 0: StatsRelease failed: the worker ended (killed by signal 9)")
        self.assertEqual(self.lost, [])  # forgotten before: not a lost call

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


@sync.steps
def _waiting(d, log):
    """A command's steps waiting for a worker's answer (as the negotiator's)."""
    try:
        value = yield d
    except Exception as e:
        log.append(type(e).__name__)
        raise
    log.append(value)
    return value


class StepsOverThePoolTests(SynchronousTestCase):
    """The ng command's steps suspended over a worker's answer (a
    sync.Later: resumed directly, or by the pool's light callback) get
    the answer, a lost worker's or a time-out's error, and a new call
    moves on to the other worker as with Deferred callbacks."""

    def setUp(self):
        self.reactor = FakeProcessReactor()
        self.pool = WorkerPool(self.reactor, {IP: (40000, 40099)}, 2, executable="/usr/bin/python3")
        self.pool.startService()
        self.reactor.pump()

    def process(self, index):
        return self.pool.slots[index].process.transport

    def test_answer(self):
        log = []
        out = _waiting(self.pool.allocate_configure("a", [(IP, 1)], []), log)
        self.assertNoResult(out)
        self.reactor.pump()
        self.assertEqual(self.successResultOf(out), [[40000]])
        out = _waiting(self.pool.configure("a", []), log)
        self.reactor.pump()
        self.assertIsNone(self.successResultOf(out))
        self.assertEqual(log, [[[40000]], None])

    def test_refused(self):
        log = []
        self.successResultOf(self.pumped(self.pool.allocate("a", IP, 1)))
        self.process(0).engine.configure = lambda call_id, sockets: fail(NGError("refused"))
        out = _waiting(self.pool.configure("a", []), log)
        self.reactor.pump()
        self.assertEqual(self.failureResultOf(out, NGError).value.reason, "refused")
        self.assertEqual(log, ["NGError"])

    def pumped(self, d):
        self.reactor.pump()
        return d

    def test_worker_dies_mid_command(self):
        log = []
        self.successResultOf(self.pumped(self.pool.allocate("a", IP, 1)))
        out = _waiting(self.pool.configure("a", []), log)
        self.reactor.advance(0)  # written, not answered
        self.process(0).end(signal=9)
        f = self.failureResultOf(out, WorkerUnavailable)
        self.assertIn("the worker ended (killed by signal 9)", f.value.detail)
        self.assertEqual(log, ["WorkerUnavailable"])

    def test_new_call_moves_on_when_its_worker_dies(self):
        log = []
        out = _waiting(self.pool.allocate_configure("a", [(IP, 1)], []), log)
        self.reactor.advance(0)
        self.process(0).end(signal=9)
        self.assertNoResult(out)  # tried again on worker 1
        self.reactor.pump()
        self.assertEqual(self.successResultOf(out), [[40050]])
        self.assertEqual(log, [[[40050]]])

    def test_timed_out(self):
        log = []
        self.successResultOf(self.pumped(self.pool.allocate("a", IP, 1)))
        out = _waiting(self.pool.stats_release("a"), log)  # never answered
        self.reactor.advance(self.pool.request_timeout)
        f = self.failureResultOf(out, WorkerUnavailable)
        self.assertEqual(f.value.detail, "media worker 0 did not answer StatsRelease in 10.0s")
        self.assertEqual(self.process(0).signals, ["KILL"])
        self.assertEqual(log, ["WorkerUnavailable"])


class PipeTransportTests(SynchronousTestCase):
    def test_writesToTheWorkersPipe(self):
        reactor = FakeProcessReactor()
        process = FakeProcess(reactor, None, [], 7, FakeEngine())
        transport = PipeTransport(process, WorkerAddress(0, 7))
        self.assertTrue(verifyObject(ITransport, transport))
        transport.writeSequence([b"a", b"b"])
        self.assertEqual(process.to_worker, [b"\0\0\0\x03Aab"])  # one AMP frame
        transport.write_frame(b"\0\0\0\x02Rx")
        self.assertEqual(process.to_worker, [b"\0\0\0\x03Aab", b"\0\0\0\x02Rx"])
        del process.to_worker[1]
        transport.loseConnection()
        transport.loseConnection()
        self.assertEqual(process.closed, [FD_FROM_CONTROL])
        transport.write(b"late")  # the pipe is closed: dropped, no error
        self.assertEqual(process.to_worker, [b"\0\0\0\x03Aab"])
        self.assertEqual(repr(transport.getPeer()), "<media worker 0 pid 7>")

    def test_framesOfATurnGoInOneWrite(self):
        """With a clock, the frames of a turn (AMP and requests) are
        written in order in one write once it is over; closing writes
        what is gathered first."""
        reactor = FakeProcessReactor()
        process = FakeProcess(reactor, None, [], 7, FakeEngine())
        transport = PipeTransport(process, WorkerAddress(0, 7), reactor)
        transport.write_frame(b"\0\0\0\x02Q1")
        transport.write(b"a")
        transport.write_frame(b"\0\0\0\x02Q2")
        self.assertEqual(process.to_worker, [])
        self.assertEqual(len(reactor.getDelayedCalls()), 1)
        reactor.advance(0)
        self.assertEqual(process.to_worker, [b"\0\0\0\x02Q1\0\0\0\x02Aa\0\0\0\x02Q2"])
        transport.write_frame(b"\0\0\0\x02Q3")
        transport.loseConnection()
        self.assertEqual(process.to_worker[1:], [b"\0\0\0\x02Q3"])
        self.assertEqual(process.closed, [FD_FROM_CONTROL])
        self.assertEqual(reactor.getDelayedCalls(), [])


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
