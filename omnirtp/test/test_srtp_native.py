"""The native SRTP path (``RelaySocket._piped``) on real sockets on 127.0.0.1.

A socket whose RTP chain is all libsrtp steps has its connected companion
served by ``_piped``: the datagram is read into the shared native buffer,
the steps' libsrtp calls run on it in place, and it is written to the
peer's companion.  These tests drive a ``MediaPoller`` by hand
(``doRead``) and compare every datagram byte for byte with what
independent pylibsrtp sessions of the same keys produce, so the native
path must give exactly what the generic pipeline gives; and they check
what must still take the generic path (the first datagram, RTCP, junk,
too long) and the counters of both.
"""

import select

import pylibsrtp
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from omnirtp.media.relay import NATIVE_MAX, MediaPoller
from omnirtp.media.srtp import (
    AEAD_AES_128_GCM,
    AES_CM_128_HMAC_SHA1_32,
    AES_CM_128_HMAC_SHA1_80,
    NATIVE_MAX as SRTP_NATIVE_MAX,
    SUITES,
    SrtpFactory,
    make_crypto,
    suite_unavailable,
)
from omnirtp.test.fakes import MemoryUDPReactor
from omnirtp.test.realrelays import RealRelays

#: bytes SRTP adds to an RTP packet, per suite (the authentication tag)
TAG = {AES_CM_128_HMAC_SHA1_80: 10, AES_CM_128_HMAC_SHA1_32: 4, AEAD_AES_128_GCM: 16}


def rtp(seq, ssrc=0xA1A2A3A4, size=160):
    payload = bytes((seq + i) & 0xFF for i in range(size))
    return (bytes([0x80, 0, seq >> 8, seq & 0xFF]) + (seq * 160).to_bytes(4, "big")
            + ssrc.to_bytes(4, "big") + payload)


def rtcp_sr(ssrc):
    return bytes([0x80, 200, 0, 6]) + ssrc.to_bytes(4, "big") + bytes(20)


def key(suite, seed):
    return bytes((seed * 13 + i) & 0xFF for i in range(SUITES[suite].master_length))


def session(suite, master, outbound):
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(master, kind, srtp_profile=SUITES[suite].profile))


class NativeTests(RealRelays, SynchronousTestCase):
    """Relay sockets ``a`` (facing party A, SRTP) and ``b`` (facing party B)."""

    suite = AES_CM_128_HMAC_SHA1_80

    def setUp(self):
        reason = suite_unavailable(self.suite)
        if reason is not None:
            raise SkipTest(reason)
        self.reactor = MemoryUDPReactor()
        self.poller = MediaPoller(self.reactor)
        self.addCleanup(self.poller.close)
        self.party_a = self.party()
        self.party_b = self.party()
        self.a, self.b = self.pair(self.party_a, self.party_b)
        self.key_a = key(self.suite, 1)      # A protects with it, a unprotects
        self.key_to_a = key(self.suite, 2)   # a protects towards A with it
        self.a_tx = session(self.suite, self.key_a, True)
        self.a_rx = session(self.suite, self.key_to_a, False)

    def srtp_on_a(self, inbound=True, outbound=True):
        factory = SrtpFactory()
        self.a.set_transforms(
            inbound=[factory.inbound(make_crypto(self.suite, self.key_a))] if inbound else [],
            outbound=[factory.outbound(make_crypto(self.suite, self.key_to_a))] if outbound else [])

    def steps(self):
        return {name: counters for name, counters in self.a.transform_counters().items()}

    def settle(self):
        """Serve whatever is queued (for datagrams that must not arrive)."""
        for _ in range(3):
            self.poller.doRead()
            select.select([self.poller.fileno()], [], [], 0.02)
        self.poller.doRead()

    def test_srtp_to_plain(self):
        """A's SRTP reaches B as the exact RTP; from the second datagram on
        (the first confirms A) by the native path."""
        self.srtp_on_a()
        self.assertIsNotNone(self.a._chain)
        self.assertEqual(self.a._sout, -1)   # not confirmed yet
        sent = [rtp(i) for i in range(1, 6)]
        for packet in sent:
            self.party_a.sendto(self.a_tx.protect(packet), self.a.local)
        self.assertEqual(self.relay_until(self.party_b, 5), sent)
        self.assertEqual(self.a._sout, self.b._cfd)
        self.assertEqual((self.a.packets, self.a.errors), (5, 0))
        self.assertEqual(self.a.bytes, 5 * (len(sent[0]) + TAG[self.suite]))

    def test_plain_to_srtp(self):
        """B's RTP reaches A protected exactly as a pylibsrtp session of
        the key we gave A protects it."""
        self.srtp_on_a()
        self.assertIsNotNone(self.b._chain)
        reference = session(self.suite, self.key_to_a, True)
        sent = [rtp(i, ssrc=0xB0B0B0B0) for i in range(1, 6)]
        for packet in sent:
            self.party_b.sendto(packet, self.b.local)
        got = self.relay_until(self.party_a, 5)
        self.assertEqual(got, [reference.protect(p) for p in sent])
        self.assertEqual([self.a_rx.unprotect(d) for d in got], sent)
        self.assertEqual(self.b._sout, self.a._cfd)
        self.assertEqual((self.b.packets, self.b.errors, self.b.bytes), (5, 0, 5 * len(sent[0])))

    def test_failures_counted(self):
        """A wrong key and a replay are dropped on the native path and
        counted by cause; the next good datagram passes."""
        self.srtp_on_a()
        first = rtp(1)
        self.party_a.sendto(self.a_tx.protect(first), self.a.local)
        self.assertEqual(self.relay_until(self.party_b, 1), [first])   # confirms A
        self.assertEqual(self.a._sout, self.b._cfd)
        intruder = session(self.suite, key(self.suite, 9), True)
        replayed = self.a_tx.protect(rtp(2))
        self.party_a.sendto(intruder.protect(rtp(3)), self.a.local)
        self.party_a.sendto(replayed, self.a.local)
        self.party_a.sendto(replayed, self.a.local)
        self.assertEqual(self.relay_until(self.party_b, 1), [rtp(2)])
        self.settle()
        self.party_a.sendto(self.a_tx.protect(rtp(4)), self.a.local)
        self.assertEqual(self.relay_until(self.party_b, 1), [rtp(4)])
        self.assertEqual((self.a.packets, self.a.errors), (5, 2))
        self.assertEqual(self.steps()["srtp-unprotect"],
                         {"auth-failures": 1, "replays": 1, "errors": 0})

    def test_rtcp_and_junk_take_the_generic_path(self):
        """SRTCP on the RTP port (rtcp-mux) is unprotected by the generic
        chain; junk is counted as junk; both read from the native buffer."""
        self.srtp_on_a()
        self.party_a.sendto(self.a_tx.protect(rtp(1)), self.a.local)
        self.relay_until(self.party_b, 1)
        report = rtcp_sr(0xA1A2A3A4)
        self.party_a.sendto(self.a_tx.protect_rtcp(report), self.a.local)
        self.assertEqual(self.relay_until(self.party_b, 1), [report])
        self.party_a.sendto(b"\x00\x01junk", self.a.local)
        self.settle()
        self.assertEqual((self.a.packets, self.a.junk, self.a.errors), (2, 1, 1))
        seen = []
        self.a.other = lambda relay, data, source: seen.append((data, source))
        self.party_a.sendto(b"\x16\xfe\xfd-dtls", self.a.local)
        self.settle()
        self.assertEqual(seen, [(b"\x16\xfe\xfd-dtls", self.party_a.getsockname())])

    def test_too_long_takes_the_generic_path(self):
        """A datagram longer than libsrtp's buffer allows is refused as
        pylibsrtp refuses it (the step's ``errors``), not overrun."""
        self.srtp_on_a()
        self.assertEqual(NATIVE_MAX, SRTP_NATIVE_MAX)
        self.party_b.sendto(rtp(1, ssrc=0xB0B0B0B0), self.b.local)
        self.relay_until(self.party_a, 1)
        self.party_b.sendto(rtp(2, ssrc=0xB0B0B0B0, size=1500 - 12), self.b.local)
        self.party_b.sendto(rtp(3, ssrc=0xB0B0B0B0, size=NATIVE_MAX - 12), self.b.local)
        [got] = self.relay_until(self.party_a, 1)
        self.assertEqual(self.a_rx.unprotect(got), rtp(3, ssrc=0xB0B0B0B0, size=NATIVE_MAX - 12))
        self.assertEqual((self.b.packets, self.b.errors), (3, 1))
        self.assertEqual(self.a.transform_counters()["srtp-protect"]["errors"], 1)

    def test_srtp_to_srtp(self):
        """Two libsrtp steps in one chain (unprotect, then protect with the
        other party's key) run in the one buffer."""
        factory = SrtpFactory()
        key_b, key_to_b = key(self.suite, 3), key(self.suite, 4)
        self.srtp_on_a()
        self.b.set_transforms(inbound=[factory.inbound(make_crypto(self.suite, key_b))],
                              outbound=[factory.outbound(make_crypto(self.suite, key_to_b))])
        self.assertEqual(len(self.a._chain[-1]), 2)
        b_rx = session(self.suite, key_to_b, False)
        sent = [rtp(i) for i in range(1, 4)]
        for packet in sent:
            self.party_a.sendto(self.a_tx.protect(packet), self.a.local)
        got = self.relay_until(self.party_b, 3)
        self.assertEqual([b_rx.unprotect(d) for d in got], sent)

    def test_registration_follows_the_pipeline(self):
        """The companion is served inline while plain, by ``_piped`` with
        a pipeline, and inline again once the steps are gone.  (The
        companions are made by the first datagram.)"""
        conns = self.poller._conns
        self.assertEqual((self.a._cfd, self.b._cfd), (-1, -1))
        self.party_a.sendto(rtp(6), self.a.local)
        self.assertEqual(self.relay_until(self.party_b, 1), [rtp(6)])
        self.assertIs(conns[self.a._cfd], self.a)
        self.srtp_on_a()
        self.assertIsNone(conns[self.a._cfd])
        self.assertEqual(self.poller._handlers[self.a._cfd], self.a._piped)
        self.assertIsNone(conns[self.b._cfd])   # b runs a's outbound step
        self.a.set_transforms(inbound=[], outbound=[])
        self.assertIs(conns[self.a._cfd], self.a)
        self.assertIs(conns[self.b._cfd], self.b)
        self.assertNotIn(self.a._cfd, self.poller._handlers)
        self.assertIsNone(self.a._chain)
        sent = rtp(7)
        self.party_a.sendto(sent, self.a.local)
        self.assertEqual(self.relay_until(self.party_b, 1), [sent])

    def test_non_native_step_takes_the_generic_path(self):
        """A chain with a step that has no libsrtp call has no native chain:
        every datagram runs the generic pipeline."""
        from omnirtp.test.test_pipeline import Mark
        mark = Mark("M")
        self.srtp_on_a(outbound=False)
        self.a.set_transforms(middle=[mark])
        self.assertIsNone(self.a._chain)
        for seq in (1, 2):
            self.party_a.sendto(self.a_tx.protect(rtp(seq)), self.a.local)
        self.assertEqual(self.relay_until(self.party_b, 2), [rtp(1) + b"M", rtp(2) + b"M"])
        self.assertEqual(self.a._sout, -1)


class Native32Tests(NativeTests):
    suite = AES_CM_128_HMAC_SHA1_32


class NativeGcmTests(NativeTests):
    suite = AEAD_AES_128_GCM
