"""Tests for omnirtp.media.engine.EmbeddedEngine (the IMediaEngine contract)."""

import random

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from omnirtp.errors import PortsExhausted
from omnirtp.interfaces import IMediaEngine
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor

HOST = "127.0.0.1"
HOST2 = "127.0.0.2"
A = ("10.0.0.1", 5000)
B = ("10.0.0.2", 6000)
RTP = b"\x80\x00\x00\x01" + b"\x00" * 8 + b"x" * 20


class EngineTestBase(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(500.0)
        self.net = FakeNetwork()
        self.engine = EmbeddedEngine(
            self.reactor,
            {HOST: (30000, 30009), HOST2: (31000, 31003)},
            bind=self.net.bind,
            rng=random.Random(4),
        )

    def value(self, d):
        return self.successResultOf(d)

    def totals(self):
        return self.value(self.engine.totals())

    def call(self, call_id="c1"):
        """Two pairs for call_id, wired A <-> B; returns (a_port, b_port)."""
        a, b = self.value(self.engine.allocate(call_id, HOST, 2))
        self.value(
            self.engine.configure(
                call_id,
                [
                    {"local": (HOST, a), "peer": (HOST, b), "endpoint": A, "learning": "delayed",
                     "strict": False, "handover": False, "asymmetric": False, "reset": True},
                    {"local": (HOST, a + 1), "peer": (HOST, b + 1), "endpoint": (A[0], A[1] + 1),
                     "learning": "delayed", "strict": False, "handover": False,
                     "asymmetric": False, "reset": True},
                    {"local": (HOST, b), "peer": (HOST, a), "endpoint": B, "reset": True},
                    {"local": (HOST, b + 1), "peer": (HOST, a + 1), "endpoint": (B[0], B[1] + 1),
                     "reset": True},
                ],
            )
        )
        return a, b


class ContractTests(EngineTestBase):
    def test_verify(self):
        """EmbeddedEngine provides IMediaEngine."""
        self.assertTrue(verifyObject(IMediaEngine, self.engine))

    def test_allocate_binds_pairs(self):
        """allocate fires with even ports; RTP and RTCP are bound and read."""
        ports = self.value(self.engine.allocate("c1", HOST, 2))
        self.assertEqual(len(ports), 2)
        for p in ports:
            self.assertEqual(p % 2, 0)
            self.assertIn((HOST, p), self.net.bound)
            self.assertIn((HOST, p + 1), self.net.bound)
        self.assertEqual(len(self.reactor.getReaders()), 4)
        t = self.totals()
        self.assertEqual((t["ports_used"], t["ports_free"]), (4, 6 + 4))

    def test_plain_sockets_keep_no_codec_state(self):
        """A configuration without codec keys leaves nothing per socket in
        the codec state (an idle call's memory); one with codecs keeps it,
        and configuring it back to plain drops it."""
        a, b = self.call()
        self.assertEqual(self.engine._codec_state, {})
        pcmu = [{"pt": 0, "encoding": "pcmu", "clock_rate": 8000, "channels": 1, "fmtp": ""}]
        self.value(self.engine.configure("c1", [{"local": (HOST, a), "codecs_send": pcmu}]))
        self.assertEqual(list(self.engine._codec_state), [(HOST, a)])
        self.value(self.engine.configure("c1", [{"local": (HOST, a), "codecs_send": None}]))
        self.assertEqual(self.engine._codec_state, {})

    def test_companions_one_factory(self):
        """Real sockets' companions come from one shared function that is
        given the socket's address and port (no closure per socket)."""
        from omnirtp.media.relay import bind_companion
        real = EmbeddedEngine(self.reactor, {HOST: (30000, 30009)}, poller=object())
        self.assertIs(real._companion(), bind_companion)
        self.assertIsNone(self.engine._companion())

    def test_allocate_unknown_address(self):
        f = self.failureResultOf(self.engine.allocate("c1", "10.9.9.9", 1), ValueError)
        self.assertEqual(
            str(f.value), "address '10.9.9.9' is not a media interface (known: 127.0.0.1, 127.0.0.2)"
        )

    def test_allocate_all_or_nothing(self):
        """Asking for more pairs than are free fails and keeps nothing bound."""
        self.value(self.engine.allocate("c0", HOST, 3))
        before = self.totals()
        self.failureResultOf(self.engine.allocate("c1", HOST, 3), PortsExhausted)
        self.assertEqual(self.totals(), before)
        self.assertEqual(len(self.net.bound), 6)
        self.assertEqual(self.value(self.engine.stats("c1")), {})

    def test_allocate_skips_busy(self):
        """Ports bound by someone else are skipped, not fatal."""
        self.net.taken.update({(HOST2, 31001)})
        ports = self.value(self.engine.allocate("c1", HOST2, 1))
        self.assertEqual(ports, [31002])
        self.failureResultOf(self.engine.allocate("c2", HOST2, 1), PortsExhausted)

    def test_relay_through_engine(self):
        """Configured sockets relay RTP and RTCP both ways."""
        a, b = self.call()
        self.net.inject((HOST, a), RTP, A)
        self.net.inject((HOST, b + 1), b"\x81\xc9\x00\x01abcd", (B[0], B[1] + 1))
        self.net.pump(self.reactor)
        self.assertEqual(self.net.sent_to(B), [(RTP, (HOST, b))])
        self.assertEqual(self.net.sent_to((A[0], A[1] + 1)), [(b"\x81\xc9\x00\x01abcd", (HOST, a + 1))])

    def test_stats(self):
        """stats reports every socket of the call with the contract's keys."""
        a, b = self.call()
        self.reactor.advance(2)
        self.net.inject((HOST, a), RTP, A)
        self.net.pump(self.reactor)
        stats = self.value(self.engine.stats("c1"))
        self.assertEqual(set(stats), {"c1"})
        self.assertEqual(set(stats["c1"]), {(HOST, a), (HOST, a + 1), (HOST, b), (HOST, b + 1)})
        self.assertEqual(
            stats["c1"][(HOST, a)],
            {"packets": 1, "bytes": len(RTP), "errors": 0,
             "last_packet": 502.0, "endpoint": A, "confirmed": False,
             "ssrc": int.from_bytes(RTP[8:12], "big"), "payload types": {RTP[1] & 127: 1}},
        )
        # a socket that received nothing has none of the media keys
        self.assertEqual(set(stats["c1"][(HOST, b)]),
                         {"packets", "bytes", "errors", "last_packet", "endpoint", "confirmed"})
        self.assertEqual(self.net.sent_to(B), [(RTP, (HOST, b))])
        self.assertEqual(stats["c1"][(HOST, b + 1)]["last_packet"], 500.0)
        self.assertEqual(set(self.value(self.engine.stats())), {"c1"})

    def test_last_packets(self):
        """last_packets: each call's newest last_packet of stats()."""
        a, b = self.call("c1")
        self.call("c2")
        self.value(self.engine.allocate("c3", HOST2, 1))
        self.reactor.advance(2)
        self.net.inject((HOST, b + 1), b"\x81\xc9\x00\x01abcd", (B[0], B[1] + 1))
        self.net.pump(self.reactor)
        newest = self.value(self.engine.last_packets())
        stats = self.value(self.engine.stats())
        self.assertEqual(newest, {cid: max(c["last_packet"] for c in sockets.values())
                                  for cid, sockets in stats.items()})
        self.assertEqual(newest, {"c1": 502.0, "c2": 500.0, "c3": 500.0})
        self.value(self.engine.release("c2"))
        self.assertEqual(sorted(self.value(self.engine.last_packets())), ["c1", "c3"])

    def test_now_methods(self):
        """allocate_now, configure_now, release_now and stats_now: what
        allocate, configure, release and stats fire with, as plain values,
        and their failures raised (the control plane's steps take either)."""
        a, b = self.engine.allocate_now("c1", HOST, 2)
        (c,) = self.value(self.engine.allocate("c2", HOST, 1))
        self.assertEqual(len({a, b, c}), 3)
        self.assertEqual(sorted(self.engine.stats_now("c1")["c1"]),
                         [(HOST, a), (HOST, a + 1), (HOST, b), (HOST, b + 1)])
        self.assertRaises(ValueError, self.engine.allocate_now, "c3", "10.9.9.9", 1)
        self.assertRaises(PortsExhausted, self.engine.allocate_now, "c3", HOST, 9)
        entry = {"local": (HOST, a), "peer": (HOST, b), "endpoint": A}
        self.assertIsNone(self.engine.configure_now("c1", [entry]))
        self.assertEqual(self.engine.socket((HOST, a)).endpoint, A)
        with self.assertRaises(ValueError) as caught:
            self.engine.configure_now("c1", [dict(entry, local=(HOST, c))])
        self.assertEqual(str(caught.exception),
                         "socket 127.0.0.1:%d is not held by call 'c1'" % (c,))
        self.assertRaises(ValueError, self.engine.configure_now, "nope", [])
        self.net.inject((HOST, a), RTP, A)
        self.net.pump(self.reactor)
        self.assertEqual(self.engine.stats_now("c1"), self.value(self.engine.stats("c1")))
        self.assertEqual(self.engine.stats_now(), self.value(self.engine.stats()))
        self.assertEqual(self.engine.stats_now("c1")["c1"][(HOST, a)]["packets"], 1)
        self.assertEqual(self.engine.stats_now("nope"), {})
        self.assertIsNone(self.engine.release_now("c1", [(HOST, b)]))
        self.assertEqual(sorted(self.engine.stats_now("c1")["c1"]), [(HOST, a), (HOST, a + 1)])
        self.assertIsNone(self.engine.release_now("c1"))
        self.assertIsNone(self.engine.release_now("c1"))  # unknown: fine, as release
        self.assertEqual(self.engine.stats_now("c1"), {})

    def test_configure_rejects_foreign_socket(self):
        """configure fails, changing nothing, for a socket the call does not hold."""
        a, b = self.call("c1")
        (c,) = self.value(self.engine.allocate("c2", HOST, 1))
        f = self.failureResultOf(
            self.engine.configure("c1", [{"local": (HOST, a), "peer": None, "endpoint": None},
                                         {"local": (HOST, c), "peer": None}]),
            ValueError,
        )
        self.assertEqual(str(f.value), "socket 127.0.0.1:%d is not held by call 'c1'" % (c,))
        self.assertEqual(self.engine.socket((HOST, a)).endpoint, A)

    def test_configure_bad_learning(self):
        a, b = self.call()
        self.failureResultOf(
            self.engine.configure("c1", [{"local": (HOST, a), "learning": "maybe"}]), ValueError
        )

    def test_configure_unknown_call(self):
        self.failureResultOf(self.engine.configure("nope", []), ValueError)

    def test_junk_counted(self):
        """Junk on media ports is dropped and counted in totals."""
        a, b = self.call()
        for junk in (b"\x00\x01\x00\x00" + b"\x00" * 16, b"\x16\xfe\xfd\x00", b"abc"):
            self.net.inject((HOST, a), junk, A)
        self.net.inject((HOST, a), RTP, A)
        self.net.pump(self.reactor)
        t = self.totals()
        self.assertEqual((t["junk"], t["errors"], t["packets"]), (3, 3, 1))
        self.assertEqual(self.net.sent_to(B), [(RTP, (HOST, b))])


class ReleaseTests(EngineTestBase):
    def test_release_all(self):
        """release(call_id) closes every socket and returns the ports."""
        free = self.totals()["ports_free"]
        self.call()
        self.value(self.engine.release("c1"))
        self.assertEqual(self.net.bound, {})
        self.assertEqual(self.reactor.getReaders(), [])
        t = self.totals()
        self.assertEqual((t["ports_used"], t["ports_free"]), (0, free))
        self.assertEqual(self.value(self.engine.stats()), {})

    def test_release_some(self):
        """release with keys frees those pairs; the rest stops sending to them."""
        a, b = self.call()
        self.value(self.engine.release("c1", [(HOST, b)]))
        self.assertNotIn((HOST, b), self.net.bound)
        self.assertNotIn((HOST, b + 1), self.net.bound)
        self.assertIsNone(self.engine.socket((HOST, a)).peer)
        self.assertIsNone(self.engine.socket((HOST, a + 1)).peer)
        self.assertEqual(set(self.value(self.engine.stats("c1"))["c1"]), {(HOST, a), (HOST, a + 1)})

    def test_release_unknown_is_fine(self):
        """Releasing what is not held is not an error."""
        a, b = self.call()
        self.value(self.engine.release("other"))
        self.value(self.engine.release("c1", [(HOST, 1234)]))
        self.assertEqual(self.totals()["ports_used"], 4)

    def test_totals_survive_release(self):
        """Engine totals keep the counters of released sockets."""
        a, b = self.call()
        self.net.inject((HOST, a), RTP, A)
        self.net.inject((HOST, a), b"junk", A)
        self.net.pump(self.reactor)
        self.value(self.engine.release("c1"))
        t = self.totals()
        self.assertEqual((t["packets"], t["bytes"], t["junk"], t["errors"]), (1, len(RTP), 1, 1))

    def test_close(self):
        """close() releases everything synchronously."""
        self.call("c1")
        self.value(self.engine.allocate("c2", HOST2, 1))
        self.engine.close()
        self.assertEqual(self.net.bound, {})
        self.assertEqual(self.totals()["ports_used"], 0)

    def test_released_ports_reused_last(self):
        """Released ports go to the back of the queue."""
        (p,) = self.value(self.engine.allocate("c1", HOST2, 1))
        self.value(self.engine.release("c1"))
        (q,) = self.value(self.engine.allocate("c2", HOST2, 1))
        self.assertNotEqual(p, q)
