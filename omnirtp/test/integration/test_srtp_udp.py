"""SRTP <-> plain RTP through the media plane over real UDP on 127.0.0.1.

Party A speaks SRTP/SRTCP (its own pylibsrtp sessions: it protects with
its key, and unprotects with the key we gave it); party B speaks plain
RTP/RTCP.  The engine is configured directly through ``IMediaEngine``
with ``srtp_in`` / ``srtp_out`` on A's sockets, once in-process
(``EmbeddedEngine``) and once through a worker pool of one worker process
(the crypto dicts cross AMP).  Every payload is compared byte for byte;
a packet under a wrong key and a replayed one are dropped and counted.
"""

import pylibsrtp
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.pool import WorkerPool
from omnirtp.media.srtp import (
    AEAD_AES_128_GCM,
    AES_CM_128_HMAC_SHA1_32,
    AES_CM_128_HMAC_SHA1_80,
    SUITES,
    make_crypto,
)
from omnirtp.test.integration.peers import Party, free_port_range

HOST = "127.0.0.1"


def rtp(seq, ssrc, payload_byte):
    """RTP, PCMU, 160 bytes of payload that differ per packet."""
    payload = bytes((payload_byte + i + seq) & 0xFF for i in range(160))
    return (bytes([0x80, 0x00, seq >> 8 & 0xFF, seq & 0xFF]) + (seq * 160).to_bytes(4, "big")
            + ssrc.to_bytes(4, "big") + payload)


def rtcp_sr(ssrc, octets):
    """An RTCP sender report without report blocks (28 bytes)."""
    return (bytes([0x80, 200, 0x00, 0x06]) + ssrc.to_bytes(4, "big") + b"\x00" * 12
            + (3).to_bytes(4, "big") + octets.to_bytes(4, "big"))


def master(suite, seed):
    return bytes((seed * 31 + 3 * i) & 0xFF for i in range(SUITES[suite].master_length))


def session(suite, key, outbound):
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key, kind, srtp_profile=SUITES[suite].profile))


class SrtpRelayMixin:
    """The scenario; subclasses provide ``make_engine``."""

    timeout = 60
    SSRC_A = 0x0A0A0A0A
    SSRC_B = 0x0B0B0B0B

    def party(self):
        p = Party()
        port = reactor.listenUDP(0, p, interface=HOST)
        self.addCleanup(port.stopListening)
        return p

    @defer.inlineCallbacks
    def run_call(self, suite, count=5):
        engine = yield self.make_engine()
        a_rtp, a_rtcp, b_rtp, b_rtcp = self.party(), self.party(), self.party(), self.party()
        key_a = master(suite, 1)  # A's key: A protects with it, we unprotect
        key_to_a = master(suite, 2)  # the key we gave A: we protect, A unprotects
        a_tx, a_rx = session(suite, key_a, True), session(suite, key_to_a, False)
        a, b = yield engine.allocate("srtp-call", HOST, 2)
        srtp = {"srtp_in": make_crypto(suite, key_a), "srtp_out": make_crypto(suite, key_to_a)}
        entries = []
        for local, peer, endpoint, keys in (
            (a, b, a_rtp.address, srtp),
            (a + 1, b + 1, a_rtcp.address, srtp),
            (b, a, b_rtp.address, {}),
            (b + 1, a + 1, b_rtcp.address, {}),
        ):
            entry = {"local": (HOST, local), "peer": (HOST, peer), "endpoint": endpoint,
                     "learning": "delayed", "strict": False, "handover": False,
                     "asymmetric": False, "reset": True}
            entry.update(keys)
            entries.append(entry)
        yield engine.configure("srtp-call", entries)

        # A -> B: SRTP in, plain RTP out, exact bytes
        sent_a = [rtp(i, self.SSRC_A, 0x10) for i in range(count)]
        srtp_a = [a_tx.protect(packet) for packet in sent_a]
        for packet in srtp_a:
            a_rtp.send(packet, (HOST, a))
        got = yield b_rtp.wait(count)
        self.assertEqual(got, [(packet, (HOST, b)) for packet in sent_a])

        # B -> A: plain in, SRTP out that A's session opens to the exact bytes
        sent_b = [rtp(100 + i, self.SSRC_B, 0x80) for i in range(count)]
        for packet in sent_b:
            b_rtp.send(packet, (HOST, b))
        got = yield a_rtp.wait(count)
        self.assertEqual([src for _, src in got], [(HOST, a)] * count)
        self.assertNotEqual(got[0][0][12:], sent_b[0][12:])
        self.assertEqual([a_rx.unprotect(data) for data, _ in got], sent_b)

        # RTCP both ways on the RTCP ports
        report_a, report_b = rtcp_sr(self.SSRC_A, 800), rtcp_sr(self.SSRC_B, 1600)
        a_rtcp.send(a_tx.protect_rtcp(report_a), (HOST, a + 1))
        b_rtcp.send(report_b, (HOST, b + 1))
        got = yield b_rtcp.wait(1)
        self.assertEqual(got, [(report_a, (HOST, b + 1))])
        got = yield a_rtcp.wait(1)
        self.assertEqual(got[0][1], (HOST, a + 1))
        self.assertEqual(a_rx.unprotect_rtcp(got[0][0]), report_b)

        # a wrong key and a replay are dropped; the next good packet passes
        intruder_tx = session(suite, master(suite, 9), True)
        a_rtp.send(intruder_tx.protect(rtp(50, self.SSRC_A, 0x20)), (HOST, a))
        a_rtp.send(srtp_a[0], (HOST, a))  # replayed
        last = rtp(count, self.SSRC_A, 0x10)
        a_rtp.send(a_tx.protect(last), (HOST, a))
        got = yield b_rtp.wait(count + 1)
        self.assertEqual(got[count:], [(last, (HOST, b))])

        stats = (yield engine.stats("srtp-call"))["srtp-call"]
        a_stats = stats[(HOST, a)]
        self.assertEqual((a_stats["packets"], a_stats["errors"]), (count + 3, 2))
        self.assertEqual(a_stats["transforms"], {
            "srtp-unprotect": {"auth-failures": 1, "replays": 1, "errors": 0},
            "srtp-protect": {"auth-failures": 0, "replays": 0, "errors": 0},
        })
        self.assertEqual(stats[(HOST, a + 1)]["transforms"]["srtp-unprotect"],
                         {"auth-failures": 0, "replays": 0, "errors": 0})
        self.assertEqual((stats[(HOST, b)]["packets"], stats[(HOST, b)]["errors"]), (count, 0))
        self.assertNotIn("transforms", stats[(HOST, b)])
        yield engine.release("srtp-call")

    @defer.inlineCallbacks
    def test_aes_cm_80(self):
        yield self.run_call(AES_CM_128_HMAC_SHA1_80)

    @defer.inlineCallbacks
    def test_aes_cm_32(self):
        yield self.run_call(AES_CM_128_HMAC_SHA1_32)

    @defer.inlineCallbacks
    def test_aead_gcm(self):
        yield self.run_call(AEAD_AES_128_GCM)


class EmbeddedSrtpTests(SrtpRelayMixin, TestCase):
    """In the control process's reactor (num-threads = 0)."""

    def make_engine(self):
        engine = EmbeddedEngine(reactor, {HOST: free_port_range(100)})
        self.addCleanup(engine.close)
        return defer.succeed(engine)


class WorkerSrtpTests(SrtpRelayMixin, TestCase):
    """Through a worker pool of one worker process (num-threads = 1)."""

    @defer.inlineCallbacks
    def make_engine(self):
        pool = WorkerPool(reactor, {HOST: free_port_range(100)}, 1)
        pool.startService()
        self.addCleanup(pool.stopService)
        yield pool.whenReady()
        return pool
