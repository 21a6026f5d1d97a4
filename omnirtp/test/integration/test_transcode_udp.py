"""Transcoding through the EmbeddedEngine over real UDP on 127.0.0.1, with
the CODEC-CONTRACT keys configured by hand (the negotiator's side is
tested elsewhere).

A SIP-like phone (a UDP socket sending PCMU, 880 Hz) and an Opus party (a
UDP socket whose Opus comes from and goes to FFmpeg's codecs through
PyAV: FFmpeg's libopus encoder and its own native Opus decoder, another
implementation than omnirtp's) talk through omnirtp, which transcodes
PCMU <-> Opus both ways.  The phone must hear the Opus party's 440 Hz
within 15 Hz with a tone SNR of at least 20 dB (the G.711 leg), and the
Opus party the phone's 880 Hz within 15 Hz.  A second case meets PCMU and
PCMA the same way.
"""

import cmath
import math
import struct

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from omnirtp.codecs import g711
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.test.integration.peers import free_port_range, listen_party
from omnirtp.test.integration.test_daemon import wait_for
from omnirtp.test.test_codecs import tone, tone_fit
from omnirtp.test.test_transcode import OPUS, PCMA, PCMU, TE8, TE48, header, rtp

try:
    import av
except ImportError:  # pragma: no cover - aiortc's dependency, in the test extra
    av = None

HOST = "127.0.0.1"
PHONE_TONE = 880
OPUS_TONE = 440
TOLERANCE = 15
PACKETS = 60


def peak_frequency(samples, rate, low=100, high=3900):
    """Where the spectrum of ``samples`` peaks (a DFT on a 10 Hz grid,
    refined to 1 Hz around the best point)."""
    mean = sum(samples) / len(samples)
    samples = [s - mean for s in samples]

    def magnitude(f):
        step = cmath.exp(-2j * math.pi * f / rate)
        total, w = 0j, 1 + 0j
        for s in samples:
            total += s * w
            w *= step
        return abs(total)

    best = max(range(low, high + 1, 10), key=magnitude)
    return max(range(max(low, best - 10), min(high, best + 10) + 1), key=magnitude)


class OpusParty:
    """FFmpeg's Opus encoder and decoder (PyAV) at 48 kHz mono."""

    def __init__(self):
        self.encoder = av.CodecContext.create("libopus", "w")
        self.encoder.sample_rate = 48000
        self.encoder.layout = "mono"
        self.encoder.format = "s16"
        self.encoder.bit_rate = 32000
        self.encoder.open()
        self.decoder = av.CodecContext.create("opus", "r")
        self.decoder.sample_rate = 48000
        self.decoder.layout = "mono"
        self.decoder.open()
        # FFmpeg's Opus decoder gives planar float: converted to s16
        self.convert = av.AudioResampler(format="s16", layout="mono", rate=48000)
        self.pts = 0

    def packets(self, frequency, count):
        samples = tone(frequency, 48000, 960 * count, 12000)
        out = []
        for i in range(count):
            frame = av.AudioFrame(format="s16", layout="mono", samples=960)
            frame.planes[0].update(struct.pack("<960h", *samples[960 * i:960 * (i + 1)]))
            frame.sample_rate = 48000
            frame.pts = self.pts
            self.pts += 960
            out.extend(bytes(p) for p in self.encoder.encode(frame))
        return out

    def decode(self, payload):
        pcm = b""
        for frame in self.decoder.decode(av.Packet(payload)):
            for converted in self.convert.resample(frame):
                pcm += bytes(converted.planes[0])[:2 * converted.samples]
        return list(struct.unpack("<%dh" % (len(pcm) // 2), pcm))


class TranscodeUDPTests(TestCase):
    timeout = 30

    def setUp(self):
        self.engine = EmbeddedEngine(reactor, {HOST: free_port_range(100)})
        self.addCleanup(self.engine.close)

    @defer.inlineCallbacks
    def wire(self, phone, other, phone_fmts, other_fmts):
        a, b = yield self.engine.allocate("t1", HOST, 2)
        entries = []
        for local, peer, endpoint, fmts in ((a, b, phone.address, phone_fmts),
                                             (b, a, other.address, other_fmts)):
            entries.append({"local": (HOST, local), "peer": (HOST, peer), "endpoint": endpoint,
                            "learning": "delayed", "reset": True, "transcode": True,
                            "codecs_send": fmts, "codecs_recv": fmts})
        yield self.engine.configure("t1", entries)
        return a, b

    @defer.inlineCallbacks
    def pace(self, sends):
        """Send ``sends`` (a list of callables) one every 20 ms."""
        for send in sends:
            send()
            yield task.deferLater(reactor, 0.02, lambda: None)

    def phone_packets(self, party, port, frequency=PHONE_TONE, count=PACKETS):
        samples = tone(frequency, 8000, 160 * count, 12000)
        pcm = struct.pack("<%dh" % len(samples), *samples)
        return [lambda i=i: party.send(
            rtp(1000 + i, 160 * i, g711.ulaw_encode(pcm[320 * i:320 * (i + 1)]), pt=0,
                ssrc=0x11111111), port) for i in range(count)]

    def check_phone_heard(self, phone, decode, pt):
        audio = [d for d, _ in phone.received if header(d)["pt"] == pt]
        self.assertGreaterEqual(len(audio), PACKETS - 5)
        samples = []
        for d in audio[10:50]:
            samples.extend(decode(d[12:]))
        heard = peak_frequency(samples[:1600], 8000)
        self.assertTrue(abs(heard - OPUS_TONE) <= TOLERANCE,
                        "%d Hz arrived at the phone as %d Hz" % (OPUS_TONE, heard))
        value, level = tone_fit(samples, OPUS_TONE, 8000)
        self.assertGreaterEqual(value, 20.0)
        self.assertEqual({header(d)["ssrc"] for d in audio}, {self.engine.transcoder(
            (HOST, self.ports[1])).ssrc})

    @defer.inlineCallbacks
    def test_pcmu_opus_both_ways(self):
        if av is None:
            raise self.skipTest("PyAV (aiortc's dependency) is not installed")
        phone = listen_party(self)
        other = listen_party(self)
        self.ports = a, b = yield self.wire(phone, other, [PCMU, TE8], [OPUS, TE48])
        party = OpusParty()
        opus_payloads = party.packets(OPUS_TONE, PACKETS)
        to_engine = [lambda i=i: other.send(
            rtp(500 + i, 960 * i, opus_payloads[i], pt=111, ssrc=0x22222222), b)
            for i in range(len(opus_payloads))]
        sends = [s for pair in zip(self.phone_packets(phone, a), to_engine) for s in pair]
        yield self.pace(sends)
        yield wait_for(lambda: len(other.received) >= PACKETS - 5
                       and len(phone.received) >= PACKETS - 5, timeout=10)
        # the Opus party hears the phone's tone
        opus_in = [d for d, _ in other.received if header(d)["pt"] == 111]
        samples = []
        for d in opus_in[10:50]:
            samples.extend(party.decode(d[12:]))
        heard = peak_frequency(samples[:9600:6], 8000)
        self.assertTrue(abs(heard - PHONE_TONE) <= TOLERANCE,
                        "%d Hz arrived at the Opus party as %d Hz" % (PHONE_TONE, heard))
        # the phone hears the Opus party's tone, as PCMU
        self.check_phone_heard(phone, lambda p: list(struct.unpack(
            "<%dh" % len(p), g711.ulaw_decode(p))), 0)
        stats = yield self.engine.stats("t1")
        counters = stats["t1"][(HOST, a)]["transforms"]["transcode"]
        self.assertEqual(counters["transcoded"], PACKETS)

    @defer.inlineCallbacks
    def test_pcmu_pcma(self):
        phone = listen_party(self)
        other = listen_party(self)
        self.ports = a, b = yield self.wire(phone, other, [PCMU], [PCMA])
        samples = tone(OPUS_TONE, 8000, 160 * PACKETS, 12000)
        pcm = struct.pack("<%dh" % len(samples), *samples)
        to_engine = [lambda i=i: other.send(
            rtp(i, 160 * i, g711.alaw_encode(pcm[320 * i:320 * (i + 1)]), pt=8), b)
            for i in range(PACKETS)]
        sends = [s for pair in zip(self.phone_packets(phone, a), to_engine) for s in pair]
        yield self.pace(sends)
        yield wait_for(lambda: len(other.received) >= PACKETS - 5
                       and len(phone.received) >= PACKETS - 5, timeout=10)
        alaw = [d for d, _ in other.received if header(d)["pt"] == 8]
        heard = peak_frequency(list(struct.unpack(
            "<1600h", b"".join(g711.alaw_decode(d[12:]) for d in alaw[10:20]))), 8000)
        self.assertTrue(abs(heard - PHONE_TONE) <= TOLERANCE, heard)
        self.check_phone_heard(phone, lambda p: list(struct.unpack(
            "<%dh" % len(p), g711.ulaw_decode(p))), 0)


class TranscodeWorkerTests(TestCase):
    """The same keys through a WorkerPool (num-threads 1): the transcoder
    runs in the worker process that holds the call's sockets, and its
    counters come back with stats over AMP."""

    timeout = 60

    @defer.inlineCallbacks
    def test_pcmu_to_pcma_in_worker(self):
        from omnirtp.media.pool import WorkerPool

        pool = WorkerPool(reactor, {HOST: free_port_range(100)}, 1)
        pool.startService()
        self.addCleanup(pool.stopService)
        phone = listen_party(self)
        other = listen_party(self)
        a, b = yield pool.allocate("w1", HOST, 2)
        entries = []
        for local, peer, endpoint, fmts in ((a, b, phone.address, [PCMU]),
                                             (b, a, other.address, [PCMA])):
            entries.append({"local": (HOST, local), "peer": (HOST, peer), "endpoint": endpoint,
                            "learning": "delayed", "reset": True, "transcode": True,
                            "codecs_send": fmts, "codecs_recv": fmts})
        yield pool.configure("w1", entries)
        samples = tone(PHONE_TONE, 8000, 1600, 12000)
        pcm = struct.pack("<1600h", *samples)
        payloads = [g711.ulaw_encode(pcm[320 * i:320 * (i + 1)]) for i in range(10)]
        for i, payload in enumerate(payloads):
            phone.send(rtp(i, 160 * i, payload), a)
        yield wait_for(lambda: len(other.received) >= 10, timeout=10)
        got = [d for d, _ in other.received]
        self.assertEqual({header(d)["pt"] for d in got}, {8})
        self.assertEqual(sorted(d[12:] for d in got),
                         sorted(g711.alaw_encode(g711.ulaw_decode(p)) for p in payloads))
        stats = yield pool.stats("w1")
        counters = stats["w1"][(HOST, a)]["transforms"]["transcode"]
        self.assertEqual(counters["transcoded"], 10)
        yield pool.release("w1")
