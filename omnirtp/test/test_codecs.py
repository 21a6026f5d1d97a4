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
