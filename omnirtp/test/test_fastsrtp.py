"""omnirtp's own SRTP code (``omnirtp.media._fastsrtp``) against libsrtp.

Every packet ours protects is compared byte for byte with what a pylibsrtp
session of the same key makes, and unprotected by pylibsrtp; every packet
pylibsrtp protects is unprotected by ours; the replay and rollover
decisions of both are compared over the same sequences, both suites.  The
module needs the C extension built (``setup.py build_ext --inplace``;
scripts/run-tests does it): without it these tests fail, they do not skip.
"""

import random

import pylibsrtp
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.media import _fastsrtp, srtp
from omnirtp.media.srtp import (
    AEAD_AES_128_GCM,
    AES_CM_128_HMAC_SHA1_32,
    AES_CM_128_HMAC_SHA1_80,
    SUITES,
    SrtpProtect,
    SrtpUnprotect,
    make_crypto,
    native_buffer,
    suite_unavailable,
)


def rtp(seq, ssrc=0x5EED0001, size=160, cc=0, ext=None, marker=0):
    """An RTP packet with ``cc`` CSRCs and an optional header extension
    (``ext``: number of 32-bit words)."""
    first = 0x80 | cc | (0x10 if ext is not None else 0)
    head = bytes([first, 0x00 | (marker << 7), (seq >> 8) & 0xFF, seq & 0xFF])
    head += ((seq * 160) & 0xFFFFFFFF).to_bytes(4, "big") + ssrc.to_bytes(4, "big")
    head += b"".join((0xC0000000 + i).to_bytes(4, "big") for i in range(cc))
    if ext is not None:
        head += b"\xbe\xde" + ext.to_bytes(2, "big") + bytes(range(4 * ext))
    return head + bytes((seq * 7 + i) & 0xFF for i in range(size))


def master(seed):
    return bytes((seed * 29 + 3 * i) & 0xFF for i in range(30))


def libsrtp(suite, key, outbound):
    """A pylibsrtp session of ``suite`` with ``key`` cut to its length."""
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    policy = pylibsrtp.Policy(key[:SUITES[suite].master_length], kind,
                              srtp_profile=SUITES[suite].profile)
    if outbound:
        policy.allow_repeat_tx = True
    return pylibsrtp.Session(policy)


TAGS = {AES_CM_128_HMAC_SHA1_80: 10, AES_CM_128_HMAC_SHA1_32: 4, AEAD_AES_128_GCM: 16}


def ours(suite, key, outbound):
    """Ours for ``suite`` with ``key`` cut to its length."""
    return _fastsrtp.Session(key[:16], key[16:SUITES[suite].master_length], TAGS[suite],
                             outbound)


def libsrtp_verdict(session, packet):
    """What libsrtp did with ``packet``: the plaintext, or our status."""
    try:
        return session.unprotect(packet)
    except pylibsrtp.Error as e:
        return {"authentication failure": _fastsrtp.AUTH,
                "replay check failed (bad index)": _fastsrtp.REPLAY,
                "replay check failed (index too old)": _fastsrtp.OLD}.get(e.args[0], -1)


def our_verdict(session, packet):
    try:
        return session.unprotect(packet)
    except _fastsrtp.Error as e:
        return e.args[0]


class AgainstLibsrtp80(SynchronousTestCase):
    suite = AES_CM_128_HMAC_SHA1_80

    def setUp(self):
        self.key = master(1)
        self.tag = TAGS[self.suite]

    def test_protect_identical_across_rollover(self):
        """Ours protects exactly as libsrtp does, through a rollover of the
        sequence number (ROC 0 -> 1), and libsrtp unprotects it."""
        mine, theirs = ours(self.suite, self.key, True), libsrtp(self.suite, self.key, True)
        rx = libsrtp(self.suite, self.key, False)
        seqs = list(range(65500, 65536)) + list(range(0, 40))
        for seq in seqs:
            packet = rtp(seq)
            protected = mine.protect(packet)
            self.assertEqual(protected, theirs.protect(packet))
            self.assertEqual(len(protected), len(packet) + self.tag)
            self.assertEqual(rx.unprotect(protected), packet)
        self.assertEqual(mine.streams(), {0x5EED0001: (1, 39)})

    def test_unprotect_libsrtp_across_rollover(self):
        """Ours unprotects what libsrtp protects, through a rollover, with
        late packets of the previous ROC in between."""
        tx = libsrtp(self.suite, self.key, True)
        mine = ours(self.suite, self.key, False)
        order = [65530, 65531, 65533, 0, 65532, 1, 65535, 2, 65534, 3]
        protected = {seq: tx.protect(rtp(seq)) for seq in sorted(order, key=lambda s: (s < 100, s))}
        for seq in order:
            self.assertEqual(mine.unprotect(protected[seq]), rtp(seq))
        self.assertEqual(mine.streams(), {0x5EED0001: (1, 3)})

    def test_csrc_and_extension(self):
        """The payload starts after CSRCs and the header extension: ours
        encrypts exactly what libsrtp encrypts."""
        mine, theirs = ours(self.suite, self.key, True), libsrtp(self.suite, self.key, True)
        rx = ours(self.suite, self.key, False)
        for seq, packet in enumerate([rtp(1, cc=2), rtp(2, ext=3), rtp(3, cc=1, ext=0),
                                      rtp(4, size=0), rtp(5, cc=15, ext=2, size=1)], 1):
            protected = mine.protect(packet)
            self.assertEqual(protected, theirs.protect(packet))
            self.assertEqual(rx.unprotect(protected), packet)

    def test_replay_and_old(self):
        """A repeated index is a replay, one older than the 128-packet
        window is too old; an unseen index inside the window is accepted:
        as libsrtp decides."""
        tx = libsrtp(self.suite, self.key, True)
        packets = {seq: tx.protect(rtp(seq)) for seq in range(1, 400)}
        mine, theirs = ours(self.suite, self.key, False), libsrtp(self.suite, self.key, False)
        expected = []
        for seq in (10, 10, 300, 173, 172, 299, 300, 9, 301):
            got = our_verdict(mine, packets[seq])
            self.assertEqual(got, libsrtp_verdict(theirs, packets[seq]), seq)
            expected.append(got if isinstance(got, int) else "ok")
        self.assertEqual(expected, ["ok", _fastsrtp.REPLAY, "ok", "ok", _fastsrtp.OLD, "ok",
                                    _fastsrtp.REPLAY, _fastsrtp.OLD, "ok"])

    def test_random_sequences_decided_as_libsrtp(self):
        """Reordered, repeated, lost and jumping sequence numbers (with
        rollovers): ours and libsrtp accept and refuse the same packets and
        give the same plaintext."""
        rnd = random.Random(6)
        tx = libsrtp(self.suite, self.key, True)
        seq = 65000
        sent = []
        for _ in range(1500):
            seq = (seq + rnd.choice([1, 1, 1, 2, 5, 70, 200])) & 0xFFFF
            sent.append((seq, tx.protect(rtp(seq, size=rnd.randrange(0, 200)))))
        mine, theirs = ours(self.suite, self.key, False), libsrtp(self.suite, self.key, False)
        stream = []
        for i, item in enumerate(sent):
            stream.append(item)
            if rnd.random() < 0.2:
                stream.append(sent[max(0, i - rnd.randrange(0, 300))])
        for i in range(0, len(stream) - 1):
            if rnd.random() < 0.1:  # reordered by the network
                stream[i], stream[i + 1] = stream[i + 1], stream[i]
        outcomes = set()
        for seq, packet in stream:
            got = our_verdict(mine, packet)
            self.assertEqual(got, libsrtp_verdict(theirs, packet), seq)
            outcomes.add(got if isinstance(got, int) else "ok")
        self.assertEqual(outcomes, {"ok", _fastsrtp.REPLAY, _fastsrtp.OLD})

    def test_authentication_failures(self):
        """A flipped bit anywhere, or another key: an authentication failure,
        and the index is not taken (the genuine packet still passes)."""
        tx = libsrtp(self.suite, self.key, True)
        mine = ours(self.suite, self.key, False)
        packet = tx.protect(rtp(7))
        for i in (0, 5, 12, 100, len(packet) - 1):
            bad = bytearray(packet)
            bad[i] ^= 0x01
            self.assertEqual(our_verdict(mine, bytes(bad)), _fastsrtp.AUTH)
        other = libsrtp(self.suite, master(2), True).protect(rtp(8))
        self.assertEqual(our_verdict(mine, other), _fastsrtp.AUTH)
        self.assertEqual(mine.streams(), {})
        self.assertEqual(mine.unprotect(packet), rtp(7))

    def test_unusable(self):
        """Shorter than a header, a header longer than the packet, no room
        for the tag, longer than libsrtp takes: PARSE / LENGTH errors."""
        mine = ours(self.suite, self.key, False)
        for packet in (b"\x80\x00\x00", rtp(1, size=0)[:11], rtp(1, cc=3, size=0)[:20],
                       rtp(1, ext=4, size=0)[:20], rtp(1, size=0)[:12] + b"\0" * (self.tag - 1)):
            self.assertEqual(our_verdict(mine, packet), _fastsrtp.PARSE, packet)
        self.assertEqual(our_verdict(mine, rtp(1, size=2000)), _fastsrtp.LENGTH)
        with self.assertRaises(_fastsrtp.Error) as e:
            ours(self.suite, self.key, True).protect(rtp(1, size=2000))
        self.assertEqual(e.exception.args, (_fastsrtp.LENGTH, "packet too long"))

    def test_protect_repeat_and_old(self):
        """A repeated index is protected again identically (allow_repeat_tx);
        one older than the window is refused, as libsrtp refuses it."""
        mine, theirs = ours(self.suite, self.key, True), libsrtp(self.suite, self.key, True)
        for seq in (5, 5, 500, 400, 400):
            self.assertEqual(mine.protect(rtp(seq)), theirs.protect(rtp(seq)))
        with self.assertRaises(_fastsrtp.Error) as e:
            mine.protect(rtp(300))
        self.assertEqual(e.exception.args[0], _fastsrtp.OLD)
        self.assertRaises(pylibsrtp.Error, theirs.protect, rtp(300))

    def test_ssrcs_apart(self):
        """Each SSRC has its own rollover counter and window; past
        MAX_STREAMS SSRCs the least recently used one is forgotten."""
        tx = libsrtp(self.suite, self.key, True)
        mine = ours(self.suite, self.key, False)
        a, b = 0xAAAA0000, 0xBBBB0000
        for seq in (65535, 0):
            self.assertEqual(mine.unprotect(tx.protect(rtp(seq, ssrc=a))), rtp(seq, ssrc=a))
        self.assertEqual(mine.unprotect(tx.protect(rtp(65535, ssrc=b))), rtp(65535, ssrc=b))
        self.assertEqual(mine.streams(), {a: (1, 0), b: (0, 65535)})
        for n in range(1, _fastsrtp.MAX_STREAMS):
            mine.unprotect(tx.protect(rtp(1, ssrc=n)))
        streams = mine.streams()
        self.assertEqual(len(streams), _fastsrtp.MAX_STREAMS)
        self.assertNotIn(a, streams)
        self.assertIn(b, streams)

    def test_native_in_place(self):
        """``unprotect_into`` / ``protect_into`` work in the shared native
        buffer and update its length; a status, never an exception, for a
        refused packet; the wrong buffer is a TypeError."""
        cdata, length, view = native_buffer()
        tx, rx = ours(self.suite, self.key, True), ours(self.suite, self.key, False)
        packet = rtp(9)
        view[:len(packet)] = packet
        length[0] = len(packet)
        self.assertEqual(_fastsrtp.protect_into(tx, cdata, length), 0)
        protected = bytes(view[:length[0]])
        self.assertEqual(protected, libsrtp(self.suite, self.key, True).protect(packet))
        self.assertEqual(_fastsrtp.unprotect_into(rx, cdata, length), 0)
        self.assertEqual(bytes(view[:length[0]]), packet)
        view[:len(protected)] = protected
        length[0] = len(protected)
        self.assertEqual(_fastsrtp.unprotect_into(rx, cdata, length), _fastsrtp.REPLAY)
        self.assertEqual(length[0], len(protected))
        self.assertRaises(TypeError, _fastsrtp.unprotect_into, rx, bytearray(10), length)
        self.assertRaises(TypeError, _fastsrtp.unprotect_into, rx, cdata)

    def test_uninitialised(self):
        """A Session whose __init__ never ran refuses to work, cleanly."""
        cdata, length, view = native_buffer()
        bare = _fastsrtp.Session.__new__(_fastsrtp.Session)
        length[0] = 20
        self.assertEqual(_fastsrtp.protect_into(bare, cdata, length), _fastsrtp.CRYPTO)
        self.assertRaises(ValueError, bare.protect, rtp(1))

    def test_bad_keys(self):
        self.assertRaises(ValueError, _fastsrtp.Session, b"k" * 15, b"s" * 14, 10, False)
        self.assertRaises(ValueError, _fastsrtp.Session, b"k" * 16, b"s" * 14, 8, False)
        self.assertRaises(ValueError, _fastsrtp.Session, b"k" * 16, b"s" * 14, 16, False)
        self.assertRaises(ValueError, _fastsrtp.Session, b"k" * 16, b"s" * 12, 10, False)


class AgainstLibsrtp32(AgainstLibsrtp80):
    suite = AES_CM_128_HMAC_SHA1_32


class AgainstLibsrtpGcm(AgainstLibsrtp80):
    """AEAD_AES_128_GCM (RFC 7714): the libsrtp of both supported version
    sets has it (checked: it fails, not skips, where it does not)."""
    suite = AEAD_AES_128_GCM


class StepTests(SynchronousTestCase):
    """The SRTP steps choose ours for RTP of the AES_CM suites."""

    def test_aes_cm_steps_use_ours(self):
        for suite in (AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32):
            params = make_crypto(suite, master(3))
            rx, tx = SrtpUnprotect(params), SrtpProtect(params)
            self.assertIsInstance(rx.fast, _fastsrtp.Session)
            self.assertEqual(rx.native_rtp, (_fastsrtp.unprotect_into, rx.fast))
            self.assertEqual(tx.native_rtp, (_fastsrtp.protect_into, tx.fast))
            # RTP through ours, RTCP through libsrtp, both right
            sender = libsrtp(suite, master(3), True)
            self.assertEqual(rx.rtp(sender.protect(rtp(1))), rtp(1))
            report = bytes([0x80, 200, 0, 6]) + (7).to_bytes(4, "big") + bytes(20)
            self.assertEqual(rx.rtcp(sender.protect_rtcp(report)), report)
            self.assertEqual(libsrtp(suite, master(3), False).unprotect(tx.rtp(rtp(2))), rtp(2))

    def test_native_status_counted(self):
        """A status from ours is counted by cause like libsrtp's."""
        step = SrtpUnprotect(make_crypto(AES_CM_128_HMAC_SHA1_80, master(4)))
        for status in (_fastsrtp.AUTH, _fastsrtp.REPLAY, _fastsrtp.OLD, _fastsrtp.PARSE,
                       _fastsrtp.LENGTH):
            step.failed_status(status)
        self.assertEqual(step.counters(), {"auth-failures": 1, "replays": 2, "errors": 2})

    def test_gcm_steps_use_ours(self):
        """AEAD_AES_128_GCM's RTP through ours too, its SRTCP through
        libsrtp."""
        if suite_unavailable(AEAD_AES_128_GCM) is not None:
            # a libsrtp2 without GCM: then the step cannot exist (SRTCP)
            self.assertRaises(pylibsrtp.Error, SrtpUnprotect,
                              make_crypto(AEAD_AES_128_GCM, bytes(28)))
            return
        key = master(3)[:28]
        rx = SrtpUnprotect(make_crypto(AEAD_AES_128_GCM, key))
        self.assertIsInstance(rx.fast, _fastsrtp.Session)
        self.assertEqual(rx.native_rtp, (_fastsrtp.unprotect_into, rx.fast))
        sender = libsrtp(AEAD_AES_128_GCM, key, True)
        self.assertEqual(rx.rtp(sender.protect(rtp(1))), rtp(1))
        report = bytes([0x80, 200, 0, 6]) + (7).to_bytes(4, "big") + bytes(20)
        self.assertEqual(rx.rtcp(sender.protect_rtcp(report)), report)

    def test_missing_extension_falls_back_once(self):
        """Without the extension the AES_CM steps use pylibsrtp and the
        log says so once."""
        events = []
        self.patch(srtp, "_fastsrtp", None)
        self.patch(srtp, "_FAST_MISSING", "omnirtp.media._fastsrtp is not built (test)")
        self.patch(srtp, "_fast_reported", False)
        self.patch(srtp, "log", Logger(observer=events.append))
        params = make_crypto(AES_CM_128_HMAC_SHA1_80, master(5))
        rx, tx = SrtpUnprotect(params), SrtpProtect(params)
        self.assertIsNone(rx.fast)
        self.assertIsNone(tx.fast)
        self.assertEqual(rx.native_rtp[1], rx.session._srtp[0])
        self.assertEqual(rx.rtp(libsrtp(AES_CM_128_HMAC_SHA1_80, master(5), True)
                                .protect(rtp(1))), rtp(1))
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["reason"], "omnirtp.media._fastsrtp is not built (test)")
        self.assertEqual(srtp.fast_unavailable(), "omnirtp.media._fastsrtp is not built (test)")


class ResumeTests(SynchronousTestCase):
    """``Session.resume``: a stream starts at a kept extended index."""

    def test_resumeSetsTheIndexOnce(self):
        s = ours(AES_CM_128_HMAC_SHA1_80, master(6), False)
        s.resume(7, (2 << 16) | 100)
        self.assertEqual(s.streams(), {7: (2, 100)})
        self.assertEqual(s.indexes(), {7: (2 << 16) | 100})
        # never backwards
        s.resume(7, (1 << 16) | 5)
        self.assertEqual(s.streams(), {7: (2, 100)})
        s.resume(7, (2 << 16) | 200)
        self.assertEqual(s.streams(), {7: (2, 200)})

    def test_resumedIndexIsAReplay(self):
        """The kept index was used: that packet again is refused, the next
        ones (with the kept ROC) are taken."""
        sender = libsrtp(AES_CM_128_HMAC_SHA1_80, master(6), True)
        packets = {}
        for i in range(0xFFF0, 0x10000 + 20):
            packets[i] = sender.protect(rtp(i & 0xFFFF))
        s = ours(AES_CM_128_HMAC_SHA1_80, master(6), False)
        s.resume(0x5EED0001, 0x10000 + 10)
        self.assertEqual(our_verdict(s, packets[0x10000 + 10]), _fastsrtp.REPLAY)
        self.assertEqual(our_verdict(s, packets[0x10000 + 11]), rtp(11))
        self.assertEqual(our_verdict(s, packets[0x10000 + 9]), rtp(9))

    def test_bounds(self):
        s = ours(AES_CM_128_HMAC_SHA1_80, master(6), True)
        self.assertRaises(ValueError, s.resume, 1, 1 << 48)
        self.assertRaises((ValueError, OverflowError), s.resume, 1 << 32, 1)
        self.assertRaises((ValueError, OverflowError), s.resume, -1, 1)
