"""Tests for omnirtp-pcap2wav (omnirtp.recording.pcap2wav): streams,
placement by RTP timestamp, channels, WAV output."""

import io
import math
import os
import struct
import wave

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.codecs import registry
from omnirtp.recording import pcap
from omnirtp.recording.pcap2wav import (
    ConvertError, convert, main, parse_payload_type, rtp_streams, rtpmaps, write_wav)

A = ("10.0.0.1", 5000)
B = ("10.0.0.2", 6000)
A_SOCK = ("127.0.0.1", 30000)  # where A sends: the socket facing A
B_SOCK = ("127.0.0.1", 30002)


class _Codec:
    """Each payload byte b decodes to one sample of value b (exact checks)."""

    def decode(self, payload):
        return b"".join(struct.pack("<h", b) for b in payload)


class _Factory:
    def __init__(self, encoding, clock_rate, sample_rate):
        self.encoding = encoding
        self.clock_rate = clock_rate
        self.sample_rate = sample_rate

    def build(self, fmtp):
        return _Codec()


BYTES = {("pcmu", 8000, 1): _Factory("pcmu", 8000, 8000),
         ("g722", 8000, 1): _Factory("g722", 8000, 16000)}


def packet(seq, ts, payload, pt=0, ssrc=0x1111, marker=False):
    return (bytes([0x80, (0x80 if marker else 0) | pt]) + struct.pack("!HII", seq, ts, ssrc)
            + payload)


def capture(records, fmt="raw"):
    """A pcap of ``(time, src, dst, data)``."""
    return pcap.global_header(fmt) + b"".join(pcap.record(*r, fmt) for r in records)


def peak(samples, rate, step=1):
    """The strongest of 400, 410, ... 1100 Hz in every ``step``-th of
    ``samples`` (a DFT at those frequencies only: enough to place the test
    tones within 10 Hz, and quick)."""
    samples = list(samples)[::step]
    rate /= step

    def power(f):
        w = 2 * math.pi * f / rate
        re_ = sum(v * math.cos(w * n) for n, v in enumerate(samples))
        im = sum(v * math.sin(w * n) for n, v in enumerate(samples))
        return re_ * re_ + im * im

    return max(range(400, 1101, 10), key=power)


class ConvertTests(SynchronousTestCase):

    def test_placement_by_timestamp(self):
        """Reordered packets land at their timestamps, a lost one is
        silence, a duplicate is written once; the other direction starts
        where its first packet arrived."""
        t = 100.0
        records = [
            (t, A, A_SOCK, packet(1, 1000, b"\x01" * 4)),
            (t + 0.001, A, A_SOCK, packet(3, 1008, b"\x03" * 4)),  # before 2
            (t + 0.002, A, A_SOCK, packet(2, 1004, b"\x02" * 4)),
            (t + 0.003, A, A_SOCK, packet(2, 1004, b"\x02" * 4)),  # duplicate
            # seq 4 (ts 1012) lost
            (t + 0.004, A, A_SOCK, packet(5, 1016, b"\x05" * 4)),
            (t + 0.0015, B, B_SOCK, packet(70, 5000, b"\x07" * 4, ssrc=0x2222)),
            (t + 0.0025, B, B_SOCK, packet(71, 5004, b"\x08" * 4, ssrc=0x2222)),
            (t + 0.003, B, B_SOCK, packet(0, 0, b"", pt=201)[:8]),  # RTCP RR
        ]
        rate, (left, right) = convert(capture(records), BYTES)
        self.assertEqual(rate, 8000)
        self.assertEqual(list(left), [1] * 4 + [2] * 4 + [3] * 4 + [0] * 4 + [5] * 4)
        # B's first packet arrived 1.5 ms (12 samples) after A's
        self.assertEqual(list(right), [0] * 12 + [7] * 4 + [8] * 4)

    def test_mix(self):
        records = [(1.0, A, A_SOCK, packet(1, 0, b"\x01\x02")),
                   (1.0, B, B_SOCK, packet(1, 80, b"\x10\x20", ssrc=2))]
        rate, [mono] = convert(capture(records, "eth"), BYTES, mix=True)
        self.assertEqual(list(mono), [0x11, 0x22])

    def test_timestamp_wrap(self):
        records = [(1.0, A, A_SOCK, packet(1, 0xFFFFFFFE, b"\x01\x01")),
                   (1.0, A, A_SOCK, packet(2, 0, b"\x02\x02"))]
        rate, (left, right) = convert(capture(records), BYTES)
        self.assertEqual((list(left), list(right)), ([1, 1, 2, 2], [0, 0, 0, 0]))

    def test_sample_rate_differs_from_clock(self):
        """G.722: 8000 in RTP timestamps, 16000 audio; PCMU is resampled up."""
        records = [(1.0, A, A_SOCK, packet(1, 0, b"\x01\x01\x01\x01", pt=9)),
                   (1.0, A, A_SOCK, packet(2, 2, b"\x02\x02\x02\x02", pt=9)),
                   (1.0, B, B_SOCK, packet(1, 0, b"\x04\x08", ssrc=2))]
        rate, (left, right) = convert(capture(records), BYTES)
        self.assertEqual(rate, 16000)
        self.assertEqual(list(left), [1, 1, 1, 1, 2, 2, 2, 2])
        self.assertEqual(list(right), [4, 6, 8, 8, 0, 0, 0, 0])

    def test_dynamic_and_skipped(self):
        records = [(1.0, A, A_SOCK, packet(1, 0, b"\x01", pt=96)),
                   (1.0, A, A_SOCK, packet(2, 1, b"\x01", pt=101)),
                   (1.0, A, A_SOCK, packet(3, 1, b"\x03", pt=96))]
        said = []
        self.assertRaises(ConvertError, convert, capture(records), BYTES, log=said.append)
        rate, (left, _) = convert(capture(records), BYTES,
                                  rtpmaps("a=rtpmap:96 PCMU/8000\r\n"
                                          "a=rtpmap:101 telephone-event/8000\r\n"),
                                  log=said.append)
        self.assertEqual(list(left), [1, 3])
        self.assertEqual(said[-1], "skipped 1 packets of payload type 101 (telephone-event): "
                                   "no codec to decode them")

    def test_errors(self):
        self.assertRaises(ConvertError, convert, b"junk" * 10, BYTES)
        self.assertRaises(ConvertError, convert, capture([]), BYTES)

    def test_streams(self):
        data = capture([(1.0, A, A_SOCK, packet(1, 0, b"\x01")),
                        (1.0, A, A_SOCK, packet(1, 0, b"\x01", ssrc=9)),
                        (1.0, A, A_SOCK, b"\x00\x01" * 10)])
        streams, counts = rtp_streams(pcap.PcapReader(data))
        self.assertEqual([(s.direction, s.ssrc) for s in streams],
                         [(A_SOCK, 0x1111), (A_SOCK, 9)])
        self.assertEqual(counts, {"rtp": 2, "rtcp": 0, "other": 1})

    def test_parse_payload_type(self):
        self.assertEqual(parse_payload_type("96=OPUS/48000/2"), (96, ("opus", 48000, 2)))
        self.assertEqual(parse_payload_type("97=pcma/8000"), (97, ("pcma", 8000, 1)))
        self.assertRaises(ValueError, parse_payload_type, "opus")


class Pcap2WavMainTests(SynchronousTestCase):
    """The console script with the real G.711 plugins."""

    def test_pcmu_pcma_stereo(self):
        """PCMU from A on the left, PCMA from B on the right, decoded by
        the codec plugins (omnirtp.codecs.registry)."""
        records = []
        for i in range(3):
            records.append((10 + i * 0.02, A, A_SOCK, packet(i, i * 160, bytes([0x80]) * 160)))
            records.append((10 + i * 0.02, B, B_SOCK,
                            packet(i, i * 160, bytes([0x2A]) * 160, pt=8, ssrc=2)))
        d = self.mktemp()
        os.mkdir(d)
        src, out = os.path.join(d, "c.pcap"), os.path.join(d, "c.wav")
        with open(src, "wb") as f:
            f.write(capture(records, "eth"))
        self.assertEqual(main([src, out], stderr=io.StringIO()), 0)
        with wave.open(out) as w:
            self.assertEqual((w.getnchannels(), w.getsampwidth(), w.getframerate(),
                              w.getnframes()), (2, 2, 8000, 480))
            frames = struct.unpack("<960h", w.readframes(480))
        codecs = registry()
        [ulaw] = struct.unpack("<h", codecs[("pcmu", 8000, 1)].build("").decode(b"\x80"))
        [alaw] = struct.unpack("<h", codecs[("pcma", 8000, 1)].build("").decode(b"\x2a"))
        self.assertEqual((ulaw, alaw), (32124, -32256))
        self.assertEqual(frames[0::2], (ulaw,) * 480)
        self.assertEqual(frames[1::2], (alaw,) * 480)

    def coded_stream(self, key, pt, frequency, count=25):
        """``count`` 20 ms packets of a tone encoded by the plugin ``key``."""
        factory = registry()[key]
        codec = factory.build("")
        rate = factory.sample_rate
        per = rate // 50
        packets = []
        for i in range(count):
            pcm = struct.pack("<%dh" % per, *(
                int(10000 * math.sin(2 * math.pi * frequency * (i * per + n) / rate))
                for n in range(per)))
            ts = i * factory.clock_rate // 50
            packets.append((10 + i * 0.02, packet(i, ts, codec.encode(pcm), pt=pt)))
        return packets

    def test_g722_and_opus(self):
        """G.722 (16 kHz audio on an 8 kHz RTP clock) from A and Opus
        (dynamic payload type, 48 kHz) from B through the plugins: a 48 kHz
        WAV with A's tone on the left and B's on the right."""
        records = [(t, A, A_SOCK, p) for t, p in self.coded_stream(("g722", 8000, 1), 9, 440)]
        records += [(t, B, B_SOCK, p)
                    for t, p in self.coded_stream(("opus", 48000, 2), 111, 1000)]
        rate, (left, right) = convert(capture(sorted(records, key=lambda r: r[0])), registry(),
                                      rtpmaps("a=rtpmap:111 opus/48000/2\r\n"))
        self.assertEqual(rate, 48000)
        self.assertEqual(len(left), len(right))
        self.assertEqual(len(left), 25 * 960)
        self.assertEqual(peak(left[9600:19200], rate, step=6), 440)
        self.assertEqual(peak(right[9600:19200], rate, step=6), 1000)

    def test_mono_mix_and_errors(self):
        d = self.mktemp()
        os.mkdir(d)
        src, out = os.path.join(d, "c.pcap"), os.path.join(d, "c.wav")
        with open(src, "wb") as f:
            f.write(b"not a pcap at all, not at all......")
        err = io.StringIO()
        self.assertEqual(main([src, out], stderr=err), 1)
        self.assertIn("not a libpcap file", err.getvalue())
        with open(src, "wb") as f:
            f.write(capture([(1.0, A, A_SOCK, packet(1, 0, b"\xff" * 8))]))
        self.assertEqual(main([src, out, "--mix", "--rate", "16000"], stderr=err), 0)
        with wave.open(out) as w:
            self.assertEqual((w.getnchannels(), w.getframerate(), w.getnframes()), (1, 16000, 16))

    def test_metadata_in_the_spool_names_payload_types(self):
        """A recording in its spool: the metadata file's SDPs name the
        dynamic payload type (here PCMA as 97), without --sdp."""
        spool = os.path.abspath(self.mktemp())
        for d in ("pcaps", "metadata"):
            os.makedirs(os.path.join(spool, d))
        src = os.path.join(spool, "pcaps", "c%40x-0011223344556677.pcap")
        with open(src, "wb") as f:
            f.write(capture([(1.0, A, A_SOCK, packet(1, 0, b"\x2a" * 4, pt=97))]))
        out = os.path.join(spool, "c.wav")
        err = io.StringIO()
        self.assertEqual(main([src, out], stderr=err), 1)
        self.assertIn("no RTP stream with a payload type a codec plugin decodes", err.getvalue())
        with open(os.path.join(spool, "metadata",
                               "rtpengine-meta-c%40x-0011223344556677.txt"), "w") as f:
            f.write("%s\n\n\nSDP mode: offer\n\nv=0\r\nm=audio 4 RTP/AVP 97\r\n"
                    "a=rtpmap:97 PCMA/8000\r\n\n" % src)
        self.assertEqual(main([src, out], stderr=err), 0)
        with wave.open(out) as w:
            frames = struct.unpack("<8h", w.readframes(4))
        self.assertEqual(frames[0::2], (-32256,) * 4)

    def test_write_wav_interleaves(self):
        import array
        path = os.path.join(self.mktemp())
        write_wav(path, 8000, [array.array("h", [1, 2]), array.array("h", [-1, -2])])
        with wave.open(path) as w:
            self.assertEqual(struct.unpack("<4h", w.readframes(2)), (1, -1, 2, -2))
