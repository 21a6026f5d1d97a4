"""Tests for omnirtp.codecs: the registry of ICodecFactory plugins and the
G.711 codecs (PCMU, PCMA)."""

import math
import os
import struct
import sys

from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import omnirtp.codecs
import omnirtp.plugins
from omnirtp.codecs import discover, g711
from omnirtp.interfaces import ICodec, ICodecFactory


def tone(freq, rate, count, amplitude=32767, phase=0.3):
    """A sine as a list of ints (rounded, clipped to 16 bits)."""
    out = []
    for i in range(count):
        v = round(amplitude * math.sin(2 * math.pi * freq * i / rate + phase))
        out.append(max(-32768, min(32767, v)))
    return out


def pack(samples):
    return struct.pack("<%dh" % len(samples), *samples)


def unpack(pcm):
    return list(struct.unpack("<%dh" % (len(pcm) // 2), pcm))


def snr(reference, received):
    """Signal-to-noise ratio in dB of ``received`` against ``reference``."""
    signal = sum(x * x for x in reference)
    noise = sum((x - y) ** 2 for x, y in zip(reference, received))
    return 10 * math.log10(signal / noise)


class MuLawTests(SynchronousTestCase):
    """PCMU against the values of ITU-T G.711 table 2a (14-bit units there,
    times 4 here)."""

    def test_decode_known_codes(self):
        """Decoder outputs of G.711: 0xFF and 0x7F are +0 and -0, 0xFE the
        first step (2 * 4), 0xEF the first value of segment 2 (33 * 4),
        0xCF the first of segment 4 (231 * 4), 0x80 / 0x00 the largest
        magnitude (8031 * 4)."""
        table = {0xFF: 0, 0x7F: 0, 0xFE: 8, 0x7E: -8, 0xEF: 132, 0xF0: 120,
                 0x80: 32124, 0x00: -32124, 0x8F: 16764, 0xCF: 924}
        for code, value in table.items():
            self.assertEqual(g711.ulaw_to_linear(code), value, hex(code))
        self.assertEqual(unpack(g711.ulaw_decode(bytes(table))), list(table.values()))

    def test_encode_decision_values(self):
        """Encoding follows G.711's decision values: 14-bit 1 (16-bit 4) is
        the first boundary, 3 (12) the next, the same for negative samples;
        beyond 8158 (32635) clips."""
        cases = {0: 0xFF, 3: 0xFF, 4: 0xFE, 11: 0xFE, 12: 0xFD, -1: 0x7F, -3: 0x7F,
                 -4: 0x7E, -12: 0x7D, 32767: 0x80, -32768: 0x00, 32124: 0x80, 1000: 0xCE}
        for sample, code in cases.items():
            self.assertEqual(g711.linear_to_ulaw(sample), code, sample)
        self.assertEqual(g711.ulaw_encode(pack(list(cases))), bytes(cases.values()))

    def test_every_code_round_trips(self):
        """Every code's value encodes back to the code (0x7F, negative
        zero, becomes positive zero 0xFF)."""
        codes = bytes(range(256))
        expected = bytes(c if c != 0x7F else 0xFF for c in range(256))
        self.assertEqual(g711.ulaw_encode(g711.ulaw_decode(codes)), expected)

    def test_table_matches_function(self):
        """The 64k encode table is the function, for every 16-bit sample."""
        pcm = struct.pack("<65536h", *range(-32768, 32768))
        self.assertEqual(g711.ulaw_encode(pcm),
                         bytes(g711.linear_to_ulaw(s) for s in range(-32768, 32768)))


class ALawTests(SynchronousTestCase):
    """PCMA against ITU-T G.711 table 1a (13-bit units there, times 8)."""

    def test_decode_known_codes(self):
        """0xD5 / 0x55 are the smallest positive / negative outputs (1 * 8),
        0xAA / 0x2A the largest (4032 * 8), 0xC5 the first value of
        segment 2 (33 * 8), 0xFA the last of segment 3 (126 * 8)."""
        table = {0xD5: 8, 0x55: -8, 0xD4: 24, 0xAA: 32256, 0x2A: -32256, 0xC5: 264,
                 0xFA: 1008}
        for code, value in table.items():
            self.assertEqual(g711.alaw_to_linear(code), value, hex(code))
        self.assertEqual(unpack(g711.alaw_decode(bytes(table))), list(table.values()))

    def test_encode_known_samples(self):
        cases = {0: 0xD5, 15: 0xD5, 16: 0xD4, -1: 0x55, -16: 0x55, -17: 0x54,
                 32767: 0xAA, -32768: 0x2A, 1000: 0xFA, 1024: 0xE5}
        for sample, code in cases.items():
            self.assertEqual(g711.linear_to_alaw(sample), code, sample)
        self.assertEqual(g711.alaw_encode(pack(list(cases))), bytes(cases.values()))

    def test_every_code_round_trips(self):
        codes = bytes(range(256))
        self.assertEqual(g711.alaw_encode(g711.alaw_decode(codes)), codes)

    def test_table_matches_function(self):
        pcm = struct.pack("<65536h", *range(-32768, 32768))
        self.assertEqual(g711.alaw_encode(pcm),
                         bytes(g711.linear_to_alaw(s) for s in range(-32768, 32768)))


class G711QualityTests(SynchronousTestCase):
    """Round-trip SNR of a tone: G.711 quantisation gives about 37-39 dB
    for a full-scale sine and stays above 33 dB down to -40 dBFS."""

    def check(self, factory, amplitude, minimum):
        codec = factory.build("")
        reference = tone(1004, 8000, 8000, amplitude)
        pcm = pack(reference)
        payloads = [codec.encode(pcm[i:i + 320]) for i in range(0, len(pcm), 320)]
        self.assertEqual({len(p) for p in payloads}, {160})
        out = unpack(b"".join(codec.decode(p) for p in payloads))
        self.assertEqual(len(out), len(reference))
        self.assertGreaterEqual(snr(reference, out), minimum)

    def test_pcmu_full_scale(self):
        self.check(g711.pcmu, 32767, 37.0)

    def test_pcma_full_scale(self):
        self.check(g711.pcma, 32767, 37.0)

    def test_pcmu_quiet(self):
        self.check(g711.pcmu, 300, 33.0)

    def test_pcma_quiet(self):
        self.check(g711.pcma, 300, 33.0)

    def test_odd_and_empty_input(self):
        """An odd trailing byte is ignored; nothing in, nothing out."""
        codec = g711.pcmu.build("")
        self.assertEqual(codec.encode(b""), b"")
        self.assertEqual(codec.encode(b"\x00"), b"")
        self.assertEqual(codec.encode(b"\x00\x00\x01"), b"\xff")
        self.assertEqual(codec.encode(bytearray(b"\x00\x80")), b"\x00")
        self.assertEqual(codec.decode(b""), b"")

    def test_conceal_is_silence(self):
        self.assertEqual(g711.pcma.build("").conceal(160), bytes(320))


class G711NativeTests(SynchronousTestCase):
    """The codec a stream gets encodes with libspandsp (libspandsp2 is
    installed with the test packages), bit-identical to the tables; without
    libspandsp the tables encode."""

    def test_identical_for_every_sample(self):
        every = struct.pack("<65536h", *range(-32768, 32768))
        for factory, table in ((g711.pcmu, g711.ulaw_encode), (g711.pcma, g711.alaw_encode)):
            codec = factory.build("")
            self.assertIsInstance(codec.encode, g711.NativeEncoder)
            self.assertEqual(codec.encode(every), table(every), factory.encoding)
            # a longer input than the buffer held before
            self.assertEqual(len(codec.encode(every + every)), 131072)
            self.assertEqual(codec.encode(every[:320]), table(every[:320]))

    def test_without_libspandsp(self):
        self.patch(g711, "library", omnirtp.codecs._native.Library(
            "nosuch", ["libomnirtp-nosuch.so.9"], [], lambda lib: None))
        factory = g711.G711Factory("pcmu", 0, g711.ulaw_decode, g711.ulaw_encode, g711.G711_ULAW)
        codec = factory.build("")
        self.assertIs(codec.encode, g711.ulaw_encode)
        self.assertIs(factory.build(""), codec)
        self.assertEqual(codec.encode(pack([0, 32767, -32768])), b"\xff\x80\x00")


class FactoryTests(SynchronousTestCase):
    def test_plugins_verify(self):
        """The G.711 factories are plugins that pass verifyObject, and so
        do the codecs they build."""
        factories = {f.encoding: f for f in getPlugins(ICodecFactory, omnirtp.plugins)}
        self.assertIs(factories["pcmu"], g711.pcmu)
        self.assertIs(factories["pcma"], g711.pcma)
        for name in ("pcmu", "pcma"):
            factory = factories[name]
            self.assertTrue(IPlugin.providedBy(factory))
            self.assertTrue(verifyObject(ICodecFactory, factory))
            self.assertTrue(verifyObject(ICodec, factory.build("")))
            self.assertEqual((factory.clock_rate, factory.sample_rate, factory.channels),
                             (8000, 8000, 1))
            self.assertEqual(factory.samples(b"\x00" * 160), 160)
        self.assertEqual((g711.pcmu.payload_type, g711.pcma.payload_type), (0, 8))

    def test_registry(self):
        """registry() keys the usable factories by (encoding, clock, channels)."""
        reg = omnirtp.codecs.registry()
        self.assertIs(reg[("pcmu", 8000, 1)], g711.pcmu)
        self.assertIs(reg[("pcma", 8000, 1)], g711.pcma)
        self.assertIs(omnirtp.codecs.lookup("PCMU", 8000), g711.pcmu)
        self.assertIsNone(omnirtp.codecs.lookup("pcmu", 16000))
        for name in omnirtp.codecs.unavailable():
            self.assertNotIn(name, {key[0] for key in reg})


PLUGIN_SOURCE = '''
from twisted.plugin import IPlugin
from zope.interface import implementer
from omnirtp.interfaces import ICodecFactory
from omnirtp.codecs.g711 import pcmu


@implementer(IPlugin, ICodecFactory)
class Missing:
    encoding = "foo"
    clock_rate = 8000
    channels = 1
    sample_rate = 8000
    payload_type = None
    ptime = 20
    default_fmtp = ""

    def available(self):
        return "libfoo not installed"

    def build(self, fmtp):
        raise AssertionError("never built")

    def samples(self, payload):
        return 0


class Broken(Missing):
    encoding = "bar"

    def available(self):
        raise OSError("cannot load libbar.so")


missing = Missing()
broken = Broken()
again = pcmu
'''


class DiscoverTests(SynchronousTestCase):
    def test_unavailable_reported(self):
        """A plugin whose library is missing is not in the registry and is
        reported with its reason (an exception from available() too); a
        second factory for a key already provided is ignored."""
        base = self.mktemp()
        package = os.path.join(base, "codecplugins_under_test")
        os.makedirs(package)
        with open(os.path.join(package, "__init__.py"), "w") as f:
            f.write("")
        with open(os.path.join(package, "extra.py"), "w") as f:
            f.write(PLUGIN_SOURCE)
        sys.path.insert(0, base)
        self.addCleanup(sys.path.remove, base)
        self.addCleanup(sys.modules.pop, "codecplugins_under_test", None)
        self.addCleanup(sys.modules.pop, "codecplugins_under_test.extra", None)
        import codecplugins_under_test

        usable, unusable = discover(codecplugins_under_test)
        self.assertEqual(usable, {("pcmu", 8000, 1): g711.pcmu})
        self.assertEqual(unusable, {"foo": "libfoo not installed",
                                    "bar": "OSError: cannot load libbar.so"})


def tone_fit(samples, freq, rate):
    """``(snr, amplitude)`` of the ``freq`` tone in ``samples``: the sine
    of that frequency (any phase) that fits best by least squares, and the
    power of the fit against what is left (noise and distortion)."""
    n = len(samples)
    w = 2 * math.pi * freq / rate
    s = [math.sin(w * i) for i in range(n)]
    c = [math.cos(w * i) for i in range(n)]
    ss = sum(a * a for a in s)
    cc = sum(a * a for a in c)
    sc = sum(a * b for a, b in zip(s, c))
    xs = sum(a * b for a, b in zip(samples, s))
    xc = sum(a * b for a, b in zip(samples, c))
    det = ss * cc - sc * sc
    a = (xs * cc - xc * sc) / det
    b = (xc * ss - xs * sc) / det
    fit = [a * u + b * v for u, v in zip(s, c)]
    residual = sum((x - y) ** 2 for x, y in zip(samples, fit))
    power = sum(y * y for y in fit)
    return 10 * math.log10(power / max(residual, 1e-9)), math.hypot(a, b)


def aligned_snr(reference, received, max_lag, start=0):
    """SNR of ``received`` against ``reference`` delayed by the lag (0 ..
    ``max_lag`` samples) that fits best (codecs and filters delay), from
    sample ``start`` of the reference on."""
    end = len(reference) - max_lag
    window = range(start, min(end, start + 800))
    best = max(range(max_lag + 1),
               key=lambda lag: sum(reference[i] * received[i + lag] for i in window))
    ref = reference[start:end]
    return snr(ref, received[start + best:end + best]), best


def frames(pcm, samples):
    return [pcm[i:i + 2 * samples] for i in range(0, len(pcm), 2 * samples)]


def two_tones(rate, count):
    """The known-answer signal: 700 Hz and 2900 Hz."""
    return pack([round(12000 * math.sin(2 * math.pi * 700 * i / rate)
                       + 5000 * math.sin(2 * math.pi * 2900 * i / rate + 1))
                 for i in range(count)])


class G722Tests(SynchronousTestCase):
    """G.722 at 64 kbit/s.  The ITU-T test vectors are not redistributable;
    instead the encoding of a fixed signal is checked against the one that
    three independent builds of the algorithm agree on (libspandsp,
    sippy's libg722 = PyPI g722, FFmpeg's adpcm_g722 through PyAV)."""

    #: SHA-256 of 200 ms of two_tones(16000) encoded in 20 ms packets, and
    #: of those packets decoded; the same at 8 kHz (low band only)
    KNOWN = {
        16000: ("9b2e86218520a02420a837728c0a918a",
                "b32de6e4e5e8e12de12f09d2493cc70b3d34115794e17570dc17a2b597166d7d",
                "1491d31feac8a36e9636ee0f6290612b9f4ee03a6884cebc633af7a60dcc96d9"),
        8000: ("e0e0e0e0e0e7f2c4cdcfcbf0f0efe4f0",
               "088623590949de0de7a82b906460f724af7a41073a572779a9c773ef618929ae",
               "b12ff496b335314a5d9045eddfd926ffc3e13368b2a4c0518eaba4bc83b0564d"),
    }

    def setUp(self):
        from omnirtp.codecs.g722 import g722
        self.factory = g722

    def known_answer(self, codec, rate):
        import hashlib
        head, encoded, decoded = self.KNOWN[rate]
        packets = [codec.encode(f) for f in frames(two_tones(rate, rate // 5), rate // 50)]
        self.assertEqual({len(p) for p in packets}, {160})
        data = b"".join(packets)
        self.assertEqual(data[:16].hex(), head)
        self.assertEqual(hashlib.sha256(data).hexdigest(), encoded)
        out = b"".join(codec.decode(p) for p in packets)
        self.assertEqual(len(out), 2 * rate // 5)
        self.assertEqual(hashlib.sha256(out).hexdigest(), decoded)

    def test_known_answer_16k(self):
        self.known_answer(self.factory.build("", 16000), 16000)

    def test_known_answer_8k(self):
        """At 8 kHz PCM (the low sub-band alone) the packets are the same
        size: G.722's bit rate does not change."""
        self.known_answer(self.factory.build("", 8000), 8000)

    def test_pypi_backend_identical(self):
        """The fallback backend (PyPI g722) gives the same bits."""
        from omnirtp.codecs._native import Missing
        from omnirtp.codecs.g722 import _PyPI
        try:
            backend = _PyPI()
        except Missing as e:
            raise self.skipTest(str(e))
        for rate in (16000, 8000):
            self.known_answer(backend.codec(rate), rate)

    def test_pyav_encodes_the_same(self):
        """libavcodec's G.722 encoder (PyAV) gives the same packets."""
        try:
            import av
        except ImportError as e:
            raise self.skipTest(str(e))
        import hashlib
        context = av.CodecContext.create("g722", "w")
        context.sample_rate = 16000
        context.format = "s16"
        context.layout = "mono"
        context.open()
        data = b""
        for i, chunk in enumerate(frames(two_tones(16000, 3200), 320)):
            frame = av.AudioFrame(format="s16", layout="mono", samples=320)
            frame.planes[0].update(chunk)
            frame.sample_rate = 16000
            frame.pts = 320 * i
            data += b"".join(bytes(p) for p in context.encode(frame))
        data += b"".join(bytes(p) for p in context.encode(None))
        self.assertEqual(hashlib.sha256(data).hexdigest(), self.KNOWN[16000][1])

    def test_tone_snr(self):
        """700 Hz + 2900 Hz come back with about 38 dB SNR, after G.722's
        22-sample QMF delay."""
        codec = self.factory.build("")
        reference = unpack(two_tones(16000, 8000))
        out = unpack(b"".join(codec.decode(codec.encode(f)) for f in frames(pack(reference), 320)))
        value, lag = aligned_snr(reference, out, 40, start=400)
        self.assertEqual(lag, 22)
        self.assertGreaterEqual(value, 35.0)

    def test_8k_mode_meets_16k_peers(self):
        """The transcoder runs G.722 at 8 kHz next to G.711: what a 16 kHz
        peer encodes decodes at 8 kHz to the tone (1 kHz: 47.7 dB here),
        and what it encodes at 8 kHz a 16 kHz peer decodes (32 dB: the
        QMF image of the empty high band)."""
        ref16 = tone(1000, 16000, 16000, 12000)
        encoder = self.factory.build("", 16000)
        packets = [encoder.encode(f) for f in frames(pack(ref16), 320)]
        decoder = self.factory.build("", 8000)
        out = unpack(b"".join(decoder.decode(p) for p in packets))
        value, level = tone_fit(out[800:], 1000, 8000)
        self.assertGreaterEqual(value, 45.0)
        self.assertLess(abs(level - 12000), 120)
        encoder = self.factory.build("", 8000)
        packets = [encoder.encode(f) for f in frames(pack(tone(1000, 8000, 8000, 12000)), 160)]
        decoder = self.factory.build("", 16000)
        out = unpack(b"".join(decoder.decode(p) for p in packets))
        value, level = tone_fit(out[1600:], 1000, 16000)
        self.assertGreaterEqual(value, 30.0)
        self.assertLess(abs(level - 12000), 240)

    def test_factory(self):
        factory = self.factory
        self.assertIsNone(factory.available())
        self.assertTrue(verifyObject(ICodecFactory, factory))
        self.assertTrue(verifyObject(ICodec, factory.build("")))
        self.assertEqual((factory.encoding, factory.clock_rate, factory.sample_rate,
                          factory.channels, factory.payload_type), ("g722", 8000, 16000, 1, 9))
        self.assertEqual(factory.samples(bytes(160)), 160)
        self.assertEqual(factory.build("").sample_rate, 16000)
        self.assertRaises(ValueError, factory.build, "", 48000)
        self.assertIs(omnirtp.codecs.lookup("G722", 8000), factory)


class OpusTests(SynchronousTestCase):
    def setUp(self):
        from omnirtp.codecs import opus
        self.opus = opus
        self.factory = opus.opus

    def test_factory(self):
        factory = self.factory
        self.assertIsNone(factory.available())
        self.assertTrue(verifyObject(ICodecFactory, factory))
        self.assertTrue(verifyObject(ICodec, factory.build("")))
        self.assertEqual((factory.encoding, factory.clock_rate, factory.channels,
                          factory.payload_type), ("opus", 48000, 2, None))
        self.assertIs(omnirtp.codecs.lookup("opus", 48000, 2), factory)
        self.assertRaises(ValueError, factory.build, "", 44100)
        self.assertTrue(self.opus.version().startswith("libopus "))

    def test_packet_samples(self):
        """Durations from the TOC byte (RFC 6716 3.1, table 2) and frame
        count: config 0 SILK NB 10 ms, 1 20 ms, 3 60 ms, 12/13 hybrid SWB
        10/20 ms, 16 CELT NB 2.5 ms, 31 CELT FB 20 ms; code 1 two frames,
        code 3 M frames (M=0 and more than 120 ms are invalid)."""
        cases = {b"\x00": 480, b"\x08": 960, b"\x18": 2880, b"\x60": 480, b"\x68": 960,
                 b"\x80": 120, b"\xf8": 960, b"\xf9\x00": 1920, b"\xfb\x05": 4800,
                 b"\xfb\x00": 0, b"\xfb\x07": 0}
        for packet, samples in cases.items():
            self.assertEqual(self.factory.samples(packet + bytes(4)), samples, packet.hex())
        self.assertEqual(self.factory.samples(b""), 0)

    def test_decode_known_packet(self):
        """F8 FF FE, the usual Opus silence packet (CELT FB 20 ms, a frame
        that decodes to nothing), is 20 ms of digital silence at any rate."""
        for rate in (48000, 16000, 8000):
            codec = self.factory.build("", rate)
            self.assertEqual(codec.decode(b"\xf8\xff\xfe"), bytes(2 * rate // 50))

    def test_bad_payloads(self):
        """An invalid or empty packet decodes to None, never raises."""
        codec = self.factory.build("", 8000)
        self.assertIsNone(codec.decode(b"\xfb\x00"))
        self.assertIsNone(codec.decode(b""))
        self.assertIsNone(codec.decode(b"\xfb\x07" + bytes(20)))
        self.assertEqual(len(codec.decode(b"\xf8\xff\xfe")), 320)

    def test_tone_snr(self):
        """A 440 Hz tone through encoder and decoder (32 kbit/s) at each
        rate the transcoder uses: better than 20 dB waveform SNR after the
        encoder's look-ahead delay."""
        for rate in (8000, 16000, 48000):
            encoder = self.factory.build("", rate)
            decoder = self.factory.build("", rate)
            reference = tone(440, rate, rate, 16000)
            packets = [encoder.encode(f) for f in frames(pack(reference), rate // 50)]
            self.assertEqual({self.factory.samples(p) for p in packets}, {960})
            out = unpack(b"".join(decoder.decode(p) for p in packets))
            self.assertEqual(len(out), len(reference))
            value, lag = aligned_snr(reference, out, rate // 100, start=rate // 10)
            self.assertGreaterEqual(value, 20.0, rate)

    def test_odd_durations(self):
        """30 ms (a common G.711 ptime) and 50 ms are no single Opus frame:
        they go out as one packet of 10 ms frames (code 3), which decodes
        to the whole duration and the tone; 130 ms is more than a packet
        holds."""
        rate = 8000
        encoder = self.factory.build("", rate)
        decoder = self.factory.build("", rate)
        reference = tone(440, rate, 7200, 12000)
        packets = [encoder.encode(f) for f in frames(pack(reference), 240)]
        self.assertEqual({p[0] & 3 for p in packets}, {3})
        self.assertEqual({self.factory.samples(p) for p in packets}, {1440})
        out = unpack(b"".join(decoder.decode(p) for p in packets))
        value, level = tone_fit(out[800:], 440, rate)
        self.assertGreaterEqual(value, 20.0)
        self.assertEqual(self.factory.samples(encoder.encode(bytes(800))), 2400)
        self.assertIsNone(encoder.encode(bytes(2080)))
        self.assertIsNone(encoder.encode(bytes(2 * 85)))

    def test_fmtp_settings(self):
        o = self.opus
        self.assertEqual(self.factory.settings(""),
                         [(o.OPUS_SET_BITRATE, 32000), (o.OPUS_SET_COMPLEXITY, 0)])
        self.assertEqual(self.factory.application(""), o.OPUS_APPLICATION_AUDIO)
        # FEC asked for, or a bitrate where libopus runs SILK: "voip", complexity 5
        self.assertEqual(self.factory.settings("useinbandfec=1"),
                         [(o.OPUS_SET_BITRATE, 32000), (o.OPUS_SET_COMPLEXITY, 5),
                          (o.OPUS_SET_INBAND_FEC, 1), (o.OPUS_SET_PACKET_LOSS_PERC, 10)])
        self.assertEqual(self.factory.application("useinbandfec=1"), o.OPUS_APPLICATION_VOIP)
        self.assertEqual(self.factory.settings("maxaveragebitrate=16000"),
                         [(o.OPUS_SET_BITRATE, 16000), (o.OPUS_SET_COMPLEXITY, 5)])
        self.assertEqual(self.factory.application("maxaveragebitrate=16000"),
                         o.OPUS_APPLICATION_VOIP)
        self.assertEqual(self.factory.application("useinbandfec=0; maxaveragebitrate=20000"),
                         o.OPUS_APPLICATION_AUDIO)
        self.assertEqual(
            self.factory.settings("maxplaybackrate=16000; stereo=1; useinbandfec=1;"
                                  " maxaveragebitrate=20000; cbr=1; usedtx=1; ptime=40"),
            [(o.OPUS_SET_BITRATE, 20000), (o.OPUS_SET_COMPLEXITY, 5),
             (o.OPUS_SET_MAX_BANDWIDTH, o.OPUS_BANDWIDTH_WIDEBAND),
             (o.OPUS_SET_INBAND_FEC, 1), (o.OPUS_SET_PACKET_LOSS_PERC, 10),
             (o.OPUS_SET_VBR, 0), (o.OPUS_SET_DTX, 1)])
        # nonsense values are ignored
        self.assertEqual(self.factory.settings("maxaveragebitrate=12; maxplaybackrate=x"),
                         [(o.OPUS_SET_BITRATE, 32000), (o.OPUS_SET_COMPLEXITY, 0)])
        self.assertEqual([o.max_bandwidth(r) for r in (8000, 12000, 16000, 24000, 48000)],
                         [1101, 1102, 1103, 1104, 1105])

    def test_modes(self):
        """From 8 kHz PCM the encoder sends CELT narrowband 20 ms frames
        (TOC config 19) by default, SILK narrowband ones (config 1) when
        the receiver asked for in-band FEC (which only SILK carries) or
        for 16 kbit/s; each decodes to the tone (tone SNR here: CELT 41,
        SILK 29 and 24 dB)."""
        pcm = pack(tone(1000, 8000, 8000, 12000))
        for fmtp, config, snr in (("", 19, 35.0), ("useinbandfec=1", 1, 25.0),
                                  ("maxaveragebitrate=16000", 1, 20.0)):
            encoder = self.factory.build(fmtp, 8000)
            decoder = self.factory.build("", 8000)
            packets = [encoder.encode(f) for f in frames(pcm, 160)]
            self.assertEqual({p[0] >> 3 for p in packets[10:]}, {config}, fmtp)
            out = unpack(b"".join(decoder.decode(p) for p in packets))
            value, level = tone_fit(out[4000:], 1000, 8000)
            self.assertGreaterEqual(value, snr, fmtp)

    def test_maxplaybackrate_narrows_bandwidth(self):
        """maxplaybackrate=8000 makes the encoder send narrowband (the TOC
        byte's config 0-3 for SILK, 16-19 for CELT)."""
        encoder = self.factory.build("maxplaybackrate=8000", 48000)
        pcm = pack(tone(440, 48000, 9600, 16000))
        configs = {encoder.encode(f)[0] >> 3 for f in frames(pcm, 960)}
        self.assertTrue(configs <= {0, 1, 2, 3, 16, 17, 18, 19}, configs)

    def test_fec_recovers_a_lost_packet(self):
        """With useinbandfec=1 the packet after a loss carries the lost
        one at lower quality: conceal() with it gives the 440 Hz tone back
        at its level (SILK keeps no waveform phase, so the tone is fitted),
        where plain concealment fades it and adds noise."""
        rate = 8000
        encoder = self.factory.build("useinbandfec=1", rate)
        reference = tone(440, rate, rate, 16000)
        packets = [encoder.encode(f) for f in frames(pack(reference), 160)]
        lost = 25

        def receive(fec):
            decoder = self.factory.build("", rate)
            out = b""
            for i, p in enumerate(packets):
                if i == lost:
                    out += decoder.conceal(160, packets[i + 1] if fec else None)
                else:
                    out += decoder.decode(p)
            return unpack(out)

        with_fec = receive(True)
        without = receive(False)
        span = slice(lost * 160, lost * 160 + 160)
        self.assertEqual(len(with_fec), len(reference))
        fec_snr, fec_level = tone_fit(with_fec[span], 440, rate)
        plc_snr, plc_level = tone_fit(without[span], 440, rate)
        self.assertGreaterEqual(fec_snr, 30.0)
        self.assertLess(abs(fec_level - 16000), 1600)
        self.assertLess(plc_snr, fec_snr - 10)

    def test_conceal_without_fec(self):
        """PLC: the right number of samples, and for a codec that has seen
        nothing yet, silence."""
        codec = self.factory.build("", 16000)
        self.assertEqual(codec.conceal(320), bytes(640))
        self.assertEqual(len(codec.conceal(100)), 200)


class ResampleTests(SynchronousTestCase):
    def setUp(self):
        from omnirtp.codecs import resample
        self.resample = resample

    def test_available(self):
        self.assertIsNone(self.resample.available())
        self.assertTrue(self.resample.version().startswith("libsoxr-"))

    def test_block_sizes_and_quality(self):
        """Between 8, 16 and 48 kHz every 20 ms block in gives exactly its
        20 ms out (primed: no packet waits), and a 1 kHz tone comes out as
        the same tone at the new rate: SNR above 60 dB, level kept."""
        for rin, rout in ((8000, 16000), (16000, 8000), (8000, 48000), (48000, 8000),
                          (16000, 48000), (48000, 16000)):
            r = self.resample.Resampler(rin, rout)
            reference_in = tone(1000, rin, rin // 2, 16000)
            outs = [r.process(f) for f in frames(pack(reference_in), rin // 50)]
            self.assertEqual({len(o) for o in outs}, {2 * rout // 50}, (rin, rout))
            out = unpack(b"".join(outs))
            value, level = tone_fit(out[rout // 20:], 1000, rout)
            self.assertGreaterEqual(value, 60.0, (rin, rout))
            self.assertLess(abs(level - 16000), 160, (rin, rout))
            r.close()

    def test_other_rates(self):
        r = self.resample.Resampler(44100, 8000, block=441)
        self.assertEqual(len(r.process(bytes(882))), 160)
        self.assertRaises(ValueError, self.resample.Resampler, 0, 8000)


class StatisticsTests(SynchronousTestCase):
    def test_rtpmap(self):
        self.assertEqual(omnirtp.codecs.rtpmap(("opus", 48000, 2)), "opus/48000/2")
        self.assertEqual(omnirtp.codecs.rtpmap(("pcmu", 8000, 1)), "pcmu/8000")

    def test_statistics_and_report(self):
        """statistics() lists what registry() has, as rtpmap strings;
        report() logs that once and returns the same."""
        from twisted.logger import globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        stats = omnirtp.codecs.statistics()
        self.assertEqual(stats["available"],
                         sorted(omnirtp.codecs.rtpmap(k) for k in omnirtp.codecs.registry()))
        self.assertIn("pcmu/8000", stats["available"])
        self.assertEqual(stats["unavailable"], omnirtp.codecs.unavailable())
        self.assertEqual(omnirtp.codecs.report(), stats)
        lines = [e for e in events if e.get("log_format", "").startswith("codecs for")]
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["available"], ", ".join(stats["available"]))
