"""Tests for omnirtp.media.srtp: the SRTP/SRTCP steps against pylibsrtp
directly, the crypto dict, the factory and its plugin."""

import base64

import pylibsrtp
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import omnirtp.plugins
from omnirtp.interfaces import IPacketTransform, ITransformFactory
from omnirtp.media import srtp
from omnirtp.media.srtp import (
    AEAD_AES_128_GCM,
    AES_CM_128_HMAC_SHA1_32,
    AES_CM_128_HMAC_SHA1_80,
    SUITES,
    SrtpFactory,
    SrtpProtect,
    SrtpUnprotect,
    make_crypto,
    parse_crypto,
)
from omnirtp.media.transforms import discover

#: tag lengths of SRTP (RTP) and the SRTCP trailer (index + tag) per suite
RTP_TAG = {AES_CM_128_HMAC_SHA1_80: 10, AES_CM_128_HMAC_SHA1_32: 4, AEAD_AES_128_GCM: 16}
RTCP_TRAILER = {AES_CM_128_HMAC_SHA1_80: 14, AES_CM_128_HMAC_SHA1_32: 14, AEAD_AES_128_GCM: 20}


def master(suite, seed=1):
    """A deterministic master key || salt of the right length."""
    return bytes((seed * 7 + i) & 0xFF for i in range(SUITES[suite].master_length))


def rtp(seq, ssrc=0x11223344, payload=b"\x55" * 160, pt=0):
    return (bytes([0x80, pt, seq >> 8, seq & 0xFF]) + (seq * 160).to_bytes(4, "big")
            + ssrc.to_bytes(4, "big") + payload)


def rtcp_sr(ssrc=0x11223344):
    """An RTCP sender report (PT 200) with no report blocks: 28 bytes."""
    return bytes([0x80, 200, 0, 6]) + ssrc.to_bytes(4, "big") + bytes(range(20))


def peer(suite, key, outbound):
    """A pylibsrtp session as the far end would have it."""
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key, kind, srtp_profile=SUITES[suite].profile))


class SuiteCases:
    """Round trips for one suite (mixed into a TestCase per suite)."""

    suite = None

    def setUp(self):
        self.key = master(self.suite)
        self.params = make_crypto(self.suite, self.key)

    def test_unprotect_rtp(self):
        """SRTP protected by the far end comes out as the exact RTP it sent."""
        sender = peer(self.suite, self.key, outbound=True)
        step = SrtpUnprotect(self.params)
        for seq in (1, 2, 3):
            packet = rtp(seq)
            protected = sender.protect(packet)
            self.assertEqual(len(protected), len(packet) + RTP_TAG[self.suite])
            self.assertEqual(step.rtp(protected), packet)
        self.assertEqual(step.counters(), {"auth-failures": 0, "replays": 0, "errors": 0})

    def test_protect_rtp(self):
        """What the step protects the far end unprotects to the exact RTP."""
        receiver = peer(self.suite, self.key, outbound=False)
        step = SrtpProtect(self.params)
        for seq in (7, 8):
            packet = rtp(seq)
            protected = step.rtp(packet)
            self.assertEqual(len(protected), len(packet) + RTP_TAG[self.suite])
            self.assertNotEqual(protected[12:172], packet[12:])
            self.assertEqual(receiver.unprotect(protected), packet)

    def test_rtcp_both_ways(self):
        """SRTCP: protect and unprotect round trips, with the suite's trailer."""
        far_out = peer(self.suite, self.key, outbound=True)
        far_in = peer(self.suite, self.key, outbound=False)
        unprotect = SrtpUnprotect(self.params)
        protect = SrtpProtect(self.params)
        report = rtcp_sr()
        srtcp = far_out.protect_rtcp(report)
        self.assertEqual(len(srtcp), len(report) + RTCP_TRAILER[self.suite])
        self.assertEqual(unprotect.rtcp(srtcp), report)
        mine = protect.rtcp(report)
        self.assertEqual(len(mine), len(report) + RTCP_TRAILER[self.suite])
        self.assertEqual(far_in.unprotect_rtcp(mine), report)

    def test_tampered_counted(self):
        """A packet with one bit flipped is dropped and counted as an
        authentication failure; the next good one still passes."""
        sender = peer(self.suite, self.key, outbound=True)
        step = SrtpUnprotect(self.params)
        bad = bytearray(sender.protect(rtp(1)))
        bad[20] ^= 0x01
        self.assertIsNone(step.rtp(bytes(bad)))
        self.assertEqual(step.counters(), {"auth-failures": 1, "replays": 0, "errors": 0})
        self.assertEqual(step.rtp(sender.protect(rtp(2))), rtp(2))
        self.assertEqual(step.counters(), {"auth-failures": 1, "replays": 0, "errors": 0})

    def test_wrong_key_counted(self):
        """SRTP and SRTCP under another key fail authentication."""
        other = peer(self.suite, master(self.suite, seed=2), outbound=True)
        step = SrtpUnprotect(self.params)
        self.assertIsNone(step.rtp(other.protect(rtp(1))))
        self.assertIsNone(step.rtcp(other.protect_rtcp(rtcp_sr())))
        self.assertEqual(step.counters(), {"auth-failures": 2, "replays": 0, "errors": 0})

    def test_replay_counted(self):
        """The same SRTP packet twice: the second is a replay, dropped."""
        sender = peer(self.suite, self.key, outbound=True)
        step = SrtpUnprotect(self.params)
        packet = sender.protect(rtp(5))
        self.assertEqual(step.rtp(packet), rtp(5))
        self.assertIsNone(step.rtp(packet))
        report = sender.protect_rtcp(rtcp_sr())
        self.assertEqual(step.rtcp(report), rtcp_sr())
        self.assertIsNone(step.rtcp(report))
        self.assertEqual(step.counters(), {"auth-failures": 0, "replays": 2, "errors": 0})

    def test_unusable_counted(self):
        """Too short or too long for libsrtp: dropped and counted as errors."""
        step = SrtpUnprotect(self.params)
        self.assertIsNone(step.rtp(b"\x80\x00\x00"))
        self.assertIsNone(step.rtp(rtp(1, payload=b"\0" * 4000)))
        protect = SrtpProtect(self.params)
        self.assertIsNone(protect.rtp(rtp(1, payload=b"\0" * 4000)))
        self.assertEqual(step.counters(), {"auth-failures": 0, "replays": 0, "errors": 2})
        self.assertEqual(protect.counters(), {"auth-failures": 0, "replays": 0, "errors": 1})

    def test_repeat_protected(self):
        """A datagram repeated by the network is protected again, identically."""
        step = SrtpProtect(self.params)
        first = step.rtp(rtp(3))
        self.assertEqual(step.rtp(rtp(3)), first)
        self.assertEqual(step.counters()["replays"], 0)

    def test_interface(self):
        """Both steps provide IPacketTransform and carry their names."""
        unprotect, protect = SrtpUnprotect(self.params), SrtpProtect(self.params)
        self.assertTrue(verifyObject(IPacketTransform, unprotect))
        self.assertTrue(verifyObject(IPacketTransform, protect))
        self.assertEqual((unprotect.name, protect.name), ("srtp-unprotect", "srtp-protect"))

    def test_available(self):
        """This suite works with the installed libsrtp."""
        self.assertIsNone(srtp.suite_unavailable(self.suite))


class AesCm80Tests(SuiteCases, SynchronousTestCase):
    suite = AES_CM_128_HMAC_SHA1_80


class AesCm32Tests(SuiteCases, SynchronousTestCase):
    suite = AES_CM_128_HMAC_SHA1_32


class AeadGcmTests(SuiteCases, SynchronousTestCase):
    suite = AEAD_AES_128_GCM


class CryptoDictTests(SynchronousTestCase):
    def test_lengths(self):
        """Master key || salt: 30 bytes for AES-CM-128, 28 for AEAD-AES-128-GCM."""
        self.assertEqual(
            {name: suite.master_length for name, suite in SUITES.items()},
            {AES_CM_128_HMAC_SHA1_80: 30, AES_CM_128_HMAC_SHA1_32: 30, AEAD_AES_128_GCM: 28},
        )

    def test_round_trip(self):
        """make_crypto and parse_crypto are inverse."""
        key = master(AES_CM_128_HMAC_SHA1_80)
        params = make_crypto(AES_CM_128_HMAC_SHA1_80, key)
        self.assertEqual(params, {"suite": "AES_CM_128_HMAC_SHA1_80",
                                  "key": base64.b64encode(key).decode("ascii")})
        suite, raw = parse_crypto(params)
        self.assertEqual((suite.name, raw), (AES_CM_128_HMAC_SHA1_80, key))

    def test_bad_params(self):
        """Each kind of bad crypto dict has its own clear error."""
        good = base64.b64encode(master(AES_CM_128_HMAC_SHA1_80)).decode("ascii")
        cases = [
            ("x", "SRTP parameters must be a dict with 'suite' and 'key', got str"),
            ({"suite": "F8_128_HMAC_SHA1_80", "key": good},
             "unknown SRTP suite 'F8_128_HMAC_SHA1_80' (known: AEAD_AES_128_GCM, "
             "AES_CM_128_HMAC_SHA1_32, AES_CM_128_HMAC_SHA1_80)"),
            ({"suite": AES_CM_128_HMAC_SHA1_80}, "SRTP key must be a base64 string"),
            ({"suite": AES_CM_128_HMAC_SHA1_80, "key": "not base64!"},
             "SRTP key is not valid base64"),
            ({"suite": AEAD_AES_128_GCM, "key": good},
             "SRTP key for AEAD_AES_128_GCM must be 28 bytes (key and salt), got 30"),
        ]
        for params, text in cases:
            e = self.assertRaises(ValueError, parse_crypto, params)
            self.assertEqual(str(e), text)
            e = self.assertRaises(ValueError, SrtpFactory().check, params)
            self.assertEqual(str(e), text)

    def test_unknown_suite_unavailable(self):
        self.assertEqual(srtp.suite_unavailable("NULL_HMAC_SHA1_80"),
                         "unknown SRTP suite 'NULL_HMAC_SHA1_80'")


class PluginTests(SynchronousTestCase):
    def test_every_factory_verifies(self):
        """Every ITransformFactory plugin in omnirtp.plugins passes
        verifyObject, and so does what it builds for its kind."""
        factories = list(getPlugins(ITransformFactory, omnirtp.plugins))
        self.assertEqual([f.kind for f in factories], ["srtp"])
        params = make_crypto(AES_CM_128_HMAC_SHA1_80, master(AES_CM_128_HMAC_SHA1_80))
        for factory in factories:
            self.assertTrue(verifyObject(ITransformFactory, factory))
            self.assertTrue(IPlugin.providedBy(factory))
            self.assertIsNone(factory.available())
            self.assertIsNone(factory.check(params))
            self.assertTrue(verifyObject(IPacketTransform, factory.inbound(params)))
            self.assertTrue(verifyObject(IPacketTransform, factory.outbound(params)))

    def test_discover(self):
        """discover() keys the available factories by kind."""
        usable, unusable = discover()
        self.assertEqual(set(usable), {"srtp"})
        self.assertIsInstance(usable["srtp"], SrtpFactory)
        self.assertEqual(unusable, {})

    def test_factory_builds_directions(self):
        """inbound builds the unprotect step, outbound the protect step."""
        params = make_crypto(AEAD_AES_128_GCM, master(AEAD_AES_128_GCM))
        factory = SrtpFactory()
        self.assertIsInstance(factory.inbound(params), SrtpUnprotect)
        self.assertIsInstance(factory.outbound(params), SrtpProtect)


def _wrapping(start=0xFFF0, count=40):
    """Sequence numbers from ``start`` past 65535: the rollover counter
    becomes 1 on the way."""
    return [(start + i) & 0xFFFF for i in range(count)]


class ResumeCases:
    """A stream whose sequence numbers wrapped (ROC 1), then a new step with
    the same key (a restart, a takeover): with what the first one kept,
    the far end and the new step understand each other; without it they
    do not."""

    suite = None

    def setUp(self):
        self.key = master(self.suite)
        self.params = make_crypto(self.suite, self.key)

    def test_unprotectResumes(self):
        far = peer(self.suite, self.key, outbound=True)
        first = SrtpUnprotect(self.params)
        for seq in _wrapping():
            self.assertEqual(first.rtp(far.protect(rtp(seq))), rtp(seq))
        kept = first.indexes()
        self.assertEqual(kept["rtp"], {0x11223344: (1 << 16) | 23})
        after = [far.protect(rtp(seq)) for seq in range(24, 30)]
        second = SrtpUnprotect(self.params)
        self.assertTrue(second.resume(kept))
        self.assertEqual([second.rtp(p) for p in after], [rtp(seq) for seq in range(24, 30)])
        self.assertEqual(second.counters()["auth-failures"], 0)
        # without: the ROC is taken to be 0, nothing authenticates
        fresh = SrtpUnprotect(self.params)
        self.assertEqual([fresh.rtp(p) for p in after], [None] * 6)
        self.assertEqual(fresh.counters()["auth-failures"], 6)

    def test_protectResumes(self):
        far = peer(self.suite, self.key, outbound=False)
        first = SrtpProtect(self.params)
        for seq in _wrapping():
            self.assertEqual(far.unprotect(first.rtp(rtp(seq))), rtp(seq))
        kept = first.indexes()
        second = SrtpProtect(self.params)
        self.assertTrue(second.resume(kept))
        for seq in range(24, 30):
            self.assertEqual(far.unprotect(second.rtp(rtp(seq))), rtp(seq))
        fresh = SrtpProtect(self.params)
        self.assertRaises(pylibsrtp.Error, far.unprotect, fresh.rtp(rtp(30)))

    def test_srtcpSenderGoesOnPastTheKeptIndex(self):
        far = peer(self.suite, self.key, outbound=False)
        first = SrtpProtect(self.params)
        for _ in range(5):
            self.assertEqual(far.unprotect_rtcp(first.rtcp(rtcp_sr())), rtcp_sr())
        kept = first.indexes()
        self.assertEqual(kept["rtcp"], {0x11223344: 5})
        second = SrtpProtect(self.params)
        self.assertTrue(second.resume(kept))
        self.assertEqual(second.indexes()["rtcp"], {0x11223344: 5 + srtp.SRTCP_LEAP})
        self.assertEqual(far.unprotect_rtcp(second.rtcp(rtcp_sr())), rtcp_sr())
        # without: index 1 again, which the far end had (a replay)
        fresh = SrtpProtect(self.params)
        self.assertRaises(pylibsrtp.Error, far.unprotect_rtcp, fresh.rtcp(rtcp_sr()))

    def test_anotherKeyIsNotResumed(self):
        first = SrtpProtect(self.params)
        first.rtp(rtp(5))
        first.rtcp(rtcp_sr())
        other = SrtpProtect(make_crypto(self.suite, master(self.suite, seed=2)))
        self.assertFalse(other.resume(first.indexes()))
        self.assertIsNone(other.indexes())
        self.assertFalse(other.resume(None))

    def test_badShapes(self):
        step = SrtpUnprotect(self.params)
        tag = srtp.key_tag(self.params)
        for bad in ([], {"rtp": {}}, {"key": tag, "rtp": []},
                    {"key": tag, "rtp": {1: 1 << 48}}, {"key": tag, "rtcp": {1: -1}},
                    {"key": tag, "rtp": {1 << 32: 1}}, {"key": tag, "rtp": {"1": 1}}):
            self.assertRaises(ValueError, step.resume, bad)


class ResumeAesCm80Tests(ResumeCases, SynchronousTestCase):
    suite = AES_CM_128_HMAC_SHA1_80


class ResumeAesCm32Tests(ResumeCases, SynchronousTestCase):
    suite = AES_CM_128_HMAC_SHA1_32


class ResumeAeadGcmTests(ResumeCases, SynchronousTestCase):
    suite = AEAD_AES_128_GCM
