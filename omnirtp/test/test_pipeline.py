"""Tests for the per-socket transform pipeline: RelaySocket's chains and
the engine's srtp_in / srtp_out configuration."""

import random

import pylibsrtp
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from omnirtp.interfaces import IPacketTransform
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.relay import RelaySocket
from omnirtp.media.srtp import (
    AEAD_AES_128_GCM,
    AES_CM_128_HMAC_SHA1_32,
    AES_CM_128_HMAC_SHA1_80,
    SUITES,
    SrtpFactory,
    make_crypto,
)
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor

HOST = "127.0.0.1"
A = ("10.0.0.1", 5000)  # party A (e.g. a browser, SRTP)
B = ("10.0.0.2", 6000)  # party B (e.g. a SIP phone, plain RTP)
A_SOCK = (HOST, 30000)
B_SOCK = (HOST, 30002)


def rtp(seq, ssrc=0xA1A2A3A4, payload=b"\x33" * 160):
    return (bytes([0x80, 0, seq >> 8, seq & 0xFF]) + (seq * 160).to_bytes(4, "big")
            + ssrc.to_bytes(4, "big") + payload)


def rtcp_rr(ssrc=0xA1A2A3A4):
    """An RTCP receiver report (PT 201) with no blocks: 8 bytes."""
    return bytes([0x80, 201, 0, 1]) + ssrc.to_bytes(4, "big")


def key(suite, seed):
    return bytes((seed * 13 + i) & 0xFF for i in range(SUITES[suite].master_length))


def session(suite, master, outbound):
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(master, kind, srtp_profile=SUITES[suite].profile))


@implementer(IPacketTransform)
class Mark:
    """A step that appends its tag to a packet (or drops it), recording
    what it saw: shows the order a chain runs in."""

    def __init__(self, tag, drop=False):
        self.name = "mark-" + tag
        self.tag = tag.encode("ascii")
        self.drop = drop
        self.seen = []

    def rtp(self, data):
        self.seen.append(("rtp", data))
        return None if self.drop else data + self.tag

    def rtcp(self, data):
        self.seen.append(("rtcp", data))
        return None if self.drop else data + b"C" + self.tag

    def counters(self):
        return {"seen": len(self.seen)}


@implementer(IPacketTransform)
class Broken(Mark):
    def rtp(self, data):
        raise RuntimeError("a step must not raise")


class RelayPipelineTests(SynchronousTestCase):
    """RelaySocket chains with stand-in steps."""

    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(100.0)
        self.net = FakeNetwork()
        self.a = RelaySocket(self.reactor, self.net.bind(*A_SOCK), A_SOCK)
        self.b = RelaySocket(self.reactor, self.net.bind(*B_SOCK), B_SOCK)
        self.a.start()
        self.b.start()
        self.a.configure(peer=self.b, endpoint=A, learning="off", reset=True)
        self.b.configure(peer=self.a, endpoint=B, learning="off", reset=True)

    def send(self, sock, data, src):
        self.net.inject(sock, data, src)
        self.net.pump(self.reactor)

    def test_plain_has_no_pipeline(self):
        """Sockets without steps have no pipeline and report no transforms."""
        self.assertIsNone(self.a.pipeline)
        self.assertIsNone(self.b.pipeline)
        self.assertNotIn("transforms", self.a.counters())
        self.send(A_SOCK, rtp(1), A)
        self.assertEqual(self.net.sent_to(B), [(rtp(1), B_SOCK)])

    def test_order(self):
        """A packet received on a runs a's inbound, a's middle, then the
        peer b's outbound; b's own inbound is not a's business."""
        a_in, a_mid, b_out, b_in = Mark("1"), Mark("2"), Mark("3"), Mark("x")
        self.a.set_transforms(inbound=[a_in], middle=[a_mid])
        self.b.set_transforms(inbound=[b_in], outbound=[b_out])
        self.send(A_SOCK, rtp(1), A)
        self.assertEqual(self.net.sent_to(B), [(rtp(1) + b"123", B_SOCK)])
        self.assertEqual(b_in.seen, [])
        self.send(A_SOCK, rtcp_rr(), A)
        self.assertEqual(self.net.sent_to(B)[1], (rtcp_rr() + b"C1C2C3", B_SOCK))
        self.assertEqual([kind for kind, _ in a_in.seen], ["rtp", "rtcp"])

    def test_outbound_of_peer_applies_to_feeder(self):
        """Setting b's outbound gives a (which sends out of b) a pipeline,
        even though a owns no step; removing it makes a plain again."""
        b_out = Mark("P")
        self.b.set_transforms(outbound=[b_out])
        self.assertIsNotNone(self.a.pipeline)
        self.assertIsNone(self.b.pipeline)
        self.send(A_SOCK, rtp(2), A)
        self.send(B_SOCK, rtp(3), B)
        self.assertEqual(self.net.sent_to(B), [(rtp(2) + b"P", B_SOCK)])
        self.assertEqual(self.net.sent_to(A), [(rtp(3), A_SOCK)])
        self.b.set_transforms(outbound=[])
        self.assertIsNone(self.a.pipeline)

    def test_pipeline_socket_never_inline(self):
        """A confirmed socket with a pipeline keeps _out at -1 (the inline
        path would skip the chain); without it, _out is the peer's companion."""
        self.b._cfd = 77  # as if b had a connected companion
        self.a._update_out()
        self.assertEqual((self.a.confirmed, self.a._out), (False, -1))
        self.a.confirmed = True
        self.a._update_out()
        self.assertEqual(self.a._out, 77)
        self.b.set_transforms(outbound=[Mark("P")])
        self.assertEqual(self.a._out, -1)
        self.a._update_out()  # e.g. learning again: still -1
        self.assertEqual(self.a._out, -1)
        self.b.set_transforms(outbound=[])
        self.assertEqual(self.a._out, 77)
        self.b._cfd = -1

    def test_drop_counted(self):
        """A step that returns None drops the packet: counted in the
        socket's errors, nothing sent, later steps not run."""
        a_in, b_out = Mark("1", drop=True), Mark("2")
        self.a.set_transforms(inbound=[a_in])
        self.b.set_transforms(outbound=[b_out])
        self.send(A_SOCK, rtp(1), A)
        self.assertEqual(self.net.sent_to(B), [])
        self.assertEqual(b_out.seen, [])
        self.assertEqual((self.a.packets, self.a.errors), (1, 1))
        self.assertEqual(self.a.counters()["transforms"], {"mark-1": {"seen": 1}})
        self.assertEqual(self.b.counters()["transforms"], {"mark-2": {"seen": 0}})

    def test_raising_step_counted(self):
        """A step that raises is counted in errors and nothing escapes."""
        self.a.set_transforms(inbound=[Broken("z")])
        self.send(A_SOCK, rtp(1), A)
        self.assertEqual(self.net.sent_to(B), [])
        self.assertEqual(self.a.errors, 1)

    def test_rtcp_split_uses_rtcp_peer_outbound(self):
        """With rtcp-mux on a's side only, RTCP received on a goes out of
        rtcp_peer and runs that socket's outbound steps, RTP runs b's."""
        b_rtcp_sock = (HOST, 30003)
        b_rtcp = RelaySocket(self.reactor, self.net.bind(*b_rtcp_sock), b_rtcp_sock)
        b_rtcp.configure(peer=self.a, endpoint=(B[0], B[1] + 1), learning="off", reset=True)
        b_rtcp.set_transforms(outbound=[Mark("R")])
        self.b.set_transforms(outbound=[Mark("P")])
        self.a.configure(peer=self.b, rtcp_peer=b_rtcp, endpoint=A, learning="off")
        self.send(A_SOCK, rtp(1), A)
        self.send(A_SOCK, rtcp_rr(), A)
        self.assertEqual(self.net.sent_to(B), [(rtp(1) + b"P", B_SOCK)])
        self.assertEqual(self.net.sent_to((B[0], B[1] + 1)), [(rtcp_rr() + b"CR", b_rtcp_sock)])

    def test_no_peer(self):
        """A pipeline socket without a peer counts the packet, runs nothing."""
        a_in = Mark("1")
        self.a.set_transforms(inbound=[a_in])
        self.a.configure(peer=None, endpoint=A, learning="off")
        self.send(A_SOCK, rtp(1), A)
        self.assertEqual((a_in.seen, self.a.errors), ([], 1))

    def test_close_forgets_steps(self):
        self.a.set_transforms(inbound=[Mark("1")])
        self.a.close()
        self.assertEqual((self.a.inbound, self.a.pipeline), ((), None))


class EngineSrtpTests(SynchronousTestCase):
    """srtp_in / srtp_out through EmbeddedEngine.configure."""

    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(500.0)
        self.net = FakeNetwork()
        self.engine = EmbeddedEngine(self.reactor, {HOST: (30000, 30009)}, bind=self.net.bind,
                                     rng=random.Random(4), transforms={"srtp": SrtpFactory()})
        self.a, self.b = self.successResultOf(self.engine.allocate("c1", HOST, 2))
        self.suite = AES_CM_128_HMAC_SHA1_80
        self.key_a = key(self.suite, 1)  # A's own key (A protects with it)
        self.key_to_a = key(self.suite, 2)  # the key we gave A
        self.crypto_a = make_crypto(self.suite, self.key_a)
        self.crypto_to_a = make_crypto(self.suite, self.key_to_a)

    def entries(self, **a_extra):
        a, b = self.a, self.b
        base = {"learning": "off", "reset": True}
        return [
            dict(base, local=(HOST, a), peer=(HOST, b), endpoint=A, **a_extra),
            dict(base, local=(HOST, a + 1), peer=(HOST, b + 1), endpoint=(A[0], A[1] + 1),
                 **a_extra),
            dict(base, local=(HOST, b), peer=(HOST, a), endpoint=B),
            dict(base, local=(HOST, b + 1), peer=(HOST, a + 1), endpoint=(B[0], B[1] + 1)),
        ]

    def configure(self, entries):
        return self.successResultOf(self.engine.configure("c1", entries))

    def deliver(self, sock, data, src):
        self.net.inject(sock, data, src)
        self.net.pump(self.reactor)

    def test_srtp_to_plain_and_back(self):
        """A (SRTP) <-> B (plain): A's SRTP/SRTCP arrive at B as the exact
        RTP/RTCP, B's arrive at A protected with the key we gave A."""
        self.configure(self.entries(srtp_in=self.crypto_a, srtp_out=self.crypto_to_a))
        a_tx = session(self.suite, self.key_a, outbound=True)
        a_rx = session(self.suite, self.key_to_a, outbound=False)
        a, b = self.a, self.b
        self.deliver((HOST, a), a_tx.protect(rtp(1)), A)
        self.deliver((HOST, a + 1), a_tx.protect_rtcp(rtcp_rr()), (A[0], A[1] + 1))
        self.assertEqual(self.net.sent_to(B), [(rtp(1), (HOST, b))])
        self.assertEqual(self.net.sent_to((B[0], B[1] + 1)), [(rtcp_rr(), (HOST, b + 1))])
        self.deliver((HOST, b), rtp(9, ssrc=0xB0B0B0B0), B)
        self.deliver((HOST, b + 1), rtcp_rr(0xB0B0B0B0), (B[0], B[1] + 1))
        [(data, src)] = self.net.sent_to(A)
        self.assertEqual((a_rx.unprotect(data), src), (rtp(9, ssrc=0xB0B0B0B0), (HOST, a)))
        [(data, src)] = self.net.sent_to((A[0], A[1] + 1))
        self.assertEqual((a_rx.unprotect_rtcp(data), src), (rtcp_rr(0xB0B0B0B0), (HOST, a + 1)))

    def test_selection(self):
        """Which sockets get a pipeline for each protocol pair."""
        engine, a, b = self.engine, self.a, self.b
        cases = [
            # (a's keys, b's keys) -> (a has pipeline, b has pipeline)
            (({}, {}), (False, False)),
            (({"srtp_in": self.crypto_a}, {}), (True, False)),
            (({"srtp_out": self.crypto_to_a}, {}), (False, True)),
            (({"srtp_in": self.crypto_a, "srtp_out": self.crypto_to_a}, {}), (True, True)),
            (({"srtp_in": self.crypto_a, "srtp_out": self.crypto_to_a},
              {"srtp_in": self.crypto_to_a, "srtp_out": self.crypto_a}), (True, True)),
            (({}, {}), (False, False)),
        ]
        none = {"srtp_in": None, "srtp_out": None}
        for (a_keys, b_keys), (a_pipe, b_pipe) in cases:
            entries = self.entries(**dict(none, **a_keys))
            entries[2].update(none, **b_keys)
            entries[3].update(none, **b_keys)
            self.configure(entries)
            for port, expected in ((a, a_pipe), (a + 1, a_pipe), (b, b_pipe), (b + 1, b_pipe)):
                relay = engine.socket((HOST, port))
                self.assertEqual(relay.pipeline is not None, expected, (a_keys, b_keys, port))
                if expected:
                    self.assertEqual(relay._out, -1)

    def test_chain_steps(self):
        """SRTP both sides (different keys): a's chain is [unprotect with a's
        srtp_in, protect with b's srtp_out]."""
        self.configure(self.entries(srtp_in=self.crypto_a))
        entries = self.entries()
        entries[2]["srtp_out"] = make_crypto(AEAD_AES_128_GCM, key(AEAD_AES_128_GCM, 3))
        self.configure(entries)
        relay_a = self.engine.socket((HOST, self.a))
        relay_b = self.engine.socket((HOST, self.b))
        self.assertEqual([t.name for t in relay_a.inbound], ["srtp-unprotect"])
        self.assertEqual([t.name for t in relay_b.outbound], ["srtp-protect"])
        unprotect, protect = relay_a.inbound[0], relay_b.outbound[0]
        self.assertEqual(relay_a.pipeline, ((unprotect.rtp, protect.rtp),
                                            (unprotect.rtcp, protect.rtcp)))
        a_tx = session(self.suite, self.key_a, outbound=True)
        b_rx = session(AEAD_AES_128_GCM, key(AEAD_AES_128_GCM, 3), outbound=False)
        self.deliver((HOST, self.a), a_tx.protect(rtp(4)), A)
        [(data, _)] = self.net.sent_to(B)
        self.assertEqual(b_rx.unprotect(data), rtp(4))

    def test_feeder_of_another_call_follows(self):
        """A socket of another call that sends out of one of this call's
        sockets gets that socket's new outbound step in its chain (the
        configure recomputes the pipelines once, at its end, and not only
        its own call's)."""
        c, d = self.successResultOf(self.engine.allocate("c2", HOST, 2))
        self.successResultOf(self.engine.configure("c2", [
            {"local": (HOST, c), "peer": (HOST, self.b), "endpoint": A, "learning": "off"}]))
        feeder = self.engine.socket((HOST, c))
        self.assertIsNone(feeder.pipeline)
        entries = self.entries()
        entries[2]["srtp_out"] = self.crypto_to_a
        self.configure(entries)
        protect = self.engine.socket((HOST, self.b)).outbound[0]
        self.assertEqual(feeder.pipeline, ((protect.rtp,), (protect.rtcp,)))

    def test_absent_keeps_same_keeps_context(self):
        """An entry without srtp keys leaves them; the same dict again keeps
        the running context (its replay window); a new key replaces it."""
        self.configure(self.entries(srtp_in=self.crypto_a))
        relay = self.engine.socket((HOST, self.a))
        step = relay.inbound[0]
        self.configure(self.entries())
        self.assertIs(relay.inbound[0], step)
        self.configure(self.entries(srtp_in=dict(self.crypto_a)))
        self.assertIs(relay.inbound[0], step)
        a_tx = session(self.suite, self.key_a, outbound=True)
        packet = a_tx.protect(rtp(1))
        self.deliver((HOST, self.a), packet, A)
        self.deliver((HOST, self.a), packet, A)  # replayed: dropped
        self.assertEqual(len(self.net.sent_to(B)), 1)
        self.configure(self.entries(srtp_in=make_crypto(AES_CM_128_HMAC_SHA1_32, key(
            AES_CM_128_HMAC_SHA1_32, 5))))
        self.assertIsNot(relay.inbound[0], step)
        self.assertEqual(relay.inbound[0].suite, AES_CM_128_HMAC_SHA1_32)

    def test_counters_in_stats(self):
        """Wrong-key and replayed packets are dropped and show in stats()
        under the socket's transforms, and in its errors."""
        self.configure(self.entries(srtp_in=self.crypto_a, srtp_out=self.crypto_to_a))
        good = session(self.suite, self.key_a, outbound=True)
        wrong = session(self.suite, key(self.suite, 9), outbound=True)
        first = good.protect(rtp(1))
        for packet in (first, wrong.protect(rtp(2)), first, good.protect(rtp(3))):
            self.deliver((HOST, self.a), packet, A)
        self.assertEqual(self.net.sent_to(B), [(rtp(1), (HOST, self.b)), (rtp(3), (HOST, self.b))])
        stats = self.successResultOf(self.engine.stats("c1"))["c1"]
        a_stats = stats[(HOST, self.a)]
        self.assertEqual((a_stats["packets"], a_stats["errors"]), (4, 2))
        self.assertEqual(a_stats["transforms"], {
            "srtp-unprotect": {"auth-failures": 1, "replays": 1, "errors": 0},
            "srtp-protect": {"auth-failures": 0, "replays": 0, "errors": 0},
        })
        self.assertNotIn("transforms", stats[(HOST, self.b)])

    def test_bad_entry_changes_nothing(self):
        """A bad crypto dict in one entry fails configure with its reason
        and applies none of the entries."""
        self.configure(self.entries())
        entries = self.entries(srtp_in=self.crypto_a)
        entries[2]["srtp_out"] = {"suite": "AES_CM_128_HMAC_SHA1_80", "key": "c2hvcnQ="}
        entries[0]["endpoint"] = ("10.9.9.9", 1)
        failure = self.failureResultOf(self.engine.configure("c1", entries), ValueError)
        self.assertEqual(
            str(failure.value),
            "srtp_out of 127.0.0.1:%d: SRTP key for AES_CM_128_HMAC_SHA1_80 must be 30 bytes "
            "(key and salt), got 5" % (self.b,))
        relay = self.engine.socket((HOST, self.a))
        self.assertEqual((relay.inbound, relay.pipeline, relay.sdp_endpoint), ((), None, A))

    def test_no_factory(self):
        """Without an srtp transform, asking for one is a clear error."""
        engine = EmbeddedEngine(self.reactor, {HOST: (30010, 30013)}, bind=self.net.bind,
                                transforms={})
        [port] = self.successResultOf(engine.allocate("c2", HOST, 1))
        failure = self.failureResultOf(engine.configure("c2", [
            {"local": (HOST, port), "srtp_in": self.crypto_a}]), ValueError)
        self.assertEqual(str(failure.value), "srtp_in: no 'srtp' transform plugin found")

    def test_discovers_plugins(self):
        """An engine given no transforms finds the srtp plugin itself."""
        engine = EmbeddedEngine(self.reactor, {HOST: (30010, 30013)}, bind=self.net.bind)
        [port] = self.successResultOf(engine.allocate("c2", HOST, 1))
        self.successResultOf(engine.configure("c2", [
            {"local": (HOST, port), "srtp_in": self.crypto_a}]))
        self.assertEqual([t.name for t in engine.socket((HOST, port)).inbound], ["srtp-unprotect"])

    def test_release_forgets(self):
        """Released sockets' steps are gone, and a feeder of a released
        socket loses the released socket's protect step."""
        self.configure(self.entries(srtp_out=self.crypto_to_a))
        relay_b = self.engine.socket((HOST, self.b))
        self.assertIsNotNone(relay_b.pipeline)
        self.successResultOf(self.engine.release("c1", [(HOST, self.a)]))
        self.assertEqual(self.engine._steps, {})
        self.assertIsNone(relay_b.pipeline)

    def test_steps_verify(self):
        self.configure(self.entries(srtp_in=self.crypto_a, srtp_out=self.crypto_to_a))
        relay = self.engine.socket((HOST, self.a))
        for step in relay.inbound + relay.outbound:
            self.assertTrue(verifyObject(IPacketTransform, step))
