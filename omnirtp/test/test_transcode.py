"""Tests for omnirtp.codecs.transcode: the transcoding step on its own."""

import math
import random
import struct

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import omnirtp.codecs
from omnirtp.codecs import g711
from omnirtp.codecs.opus import opus
from omnirtp.codecs.transcode import (
    RtcpTerminator, Transcoder, needs_transcoding, normalise_formats)
from omnirtp.interfaces import IPacketTransform
from omnirtp.test.test_codecs import frames, pack, tone, tone_fit, unpack

SSRC_IN = 0x01020304
SSRC_OUT = 0xCAFEBABE


def fmt(pt, encoding, clock=8000, channels=1, fmtp=""):
    return {"pt": pt, "encoding": encoding, "clock_rate": clock, "channels": channels,
            "fmtp": fmtp}


PCMU = fmt(0, "pcmu")
PCMA = fmt(8, "pcma")
G722 = fmt(9, "g722")
OPUS = fmt(111, "opus", 48000, 2, "useinbandfec=1")
TE8 = fmt(101, "telephone-event", fmtp="0-16")
TE48 = fmt(110, "telephone-event", 48000, fmtp="0-16")
CN8 = fmt(13, "cn")


def rtp(seq, ts, payload, pt=0, marker=False, ssrc=SSRC_IN):
    return struct.pack(">BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload


def header(packet):
    b0, b1, seq, ts, ssrc = struct.unpack(">BBHII", packet[:12])
    return {"v": b0 >> 6, "marker": bool(b1 & 0x80), "pt": b1 & 0x7F, "seq": seq, "ts": ts,
            "ssrc": ssrc}


def packets_of(result):
    """What one ``Transcoder.rtp`` call gave, as a list of packets (bytes:
    one; None: none; a tuple: 0..N)."""
    if result is None:
        return []
    if isinstance(result, bytes):
        return [result]
    return list(result)


class TranscoderTestBase(SynchronousTestCase):
    def make(self, send, recv, seed=1, ptime=None):
        step = Transcoder(normalise_formats(send, "send"), normalise_formats(recv, "recv"),
                          omnirtp.codecs.registry(), ssrc=SSRC_OUT, rng=random.Random(seed),
                          ptime=ptime)
        self.assertTrue(verifyObject(IPacketTransform, step))
        return step

    def pcmu_stream(self, freq=440, seconds=1, amplitude=12000, first_seq=65530,
                    first_ts=0xFFFFF000):
        """PCMU packets (20 ms) of a tone; the reference samples."""
        reference = tone(freq, 8000, 8000 * seconds, amplitude)
        packets = [rtp(first_seq + i, first_ts + 160 * i, g711.ulaw_encode(f))
                   for i, f in enumerate(frames(pack(reference), 160))]
        return packets, reference


class PassAndMapTests(TranscoderTestBase):
    def test_pcmu_to_pcma(self):
        """PCMU becomes PCMA: exactly what G.711 decode/encode gives, our
        SSRC, continuous sequence numbers (across the wrap), timestamps
        moving with the sender's, the marker on the first packet only."""
        step = self.make([PCMU, TE8], [PCMA, TE8])
        packets, _ = self.pcmu_stream(seconds=1)
        out = [step.rtp(p) for p in packets[:10]]
        heads = [header(o) for o in out]
        self.assertEqual({h["pt"] for h in heads}, {8})
        self.assertEqual({h["ssrc"] for h in heads}, {SSRC_OUT})
        self.assertEqual([h["marker"] for h in heads], [True] + [False] * 9)
        first = heads[0]
        self.assertEqual([h["seq"] for h in heads], [(first["seq"] + i) & 0xFFFF for i in range(10)])
        self.assertEqual([h["ts"] for h in heads],
                         [(first["ts"] + 160 * i) & 0xFFFFFFFF for i in range(10)])
        for packet, o in zip(packets, out):
            self.assertEqual(o[12:], g711.alaw_encode(g711.ulaw_decode(packet[12:])))
        self.assertEqual(step.counters()["transcoded"], 10)

    def test_accepted_codec_passes(self):
        """A format the receiver accepts passes untouched but for the
        header: PT mapped (PCMA 8 -> 8, G.722 9 -> 9) and our stream's
        SSRC/sequence."""
        step = self.make([PCMU, PCMA], [PCMA, PCMU])
        payload = bytes(range(160))
        out = step.rtp(rtp(7, 1000, payload, pt=8, marker=True))
        self.assertEqual(out[12:], payload)
        self.assertEqual(header(out)["pt"], 8)
        out = step.rtp(rtp(8, 1160, payload, pt=0))
        self.assertEqual((header(out)["pt"], out[12:]), (0, payload))
        self.assertEqual(step.counters()["passed"], 2)

    def test_payload_type_renumbered(self):
        """Dynamic numbers differ between the sides: Opus 96 on X's side
        is Opus 111 on Y's."""
        step = self.make([fmt(96, "opus", 48000, 2), PCMU], [OPUS, PCMU])
        out = step.rtp(rtp(1, 0, b"\xf8\xff\xfe", pt=96))
        self.assertEqual((header(out)["pt"], out[12:]), (111, b"\xf8\xff\xfe"))

    def test_telephone_event_mapped(self):
        """telephone-event 101 -> the receiver's 100, payload unchanged,
        marker kept, timestamp in the stream's timeline."""
        step = self.make([PCMU, TE8], [PCMA, fmt(100, "telephone-event")])
        packets, _ = self.pcmu_stream(first_seq=10, first_ts=8000)
        first = header(step.rtp(packets[0]))
        event = b"\x05\x0a\x00\xa0"  # digit 5, volume 10, 160 ticks
        out = step.rtp(rtp(11, 8160, event, pt=101, marker=True))
        h = header(out)
        self.assertEqual((h["pt"], h["marker"], h["seq"], h["ts"], out[12:]),
                         (100, True, (first["seq"] + 1) & 0xFFFF, first["ts"] + 160, event))
        self.assertEqual(step.counters()["dtmf"], 1)

    def test_telephone_event_rescaled(self):
        """To a receiver whose events run at 48 kHz (with Opus) the
        duration field is rescaled and the timestamp follows the clock."""
        step = self.make([PCMU, TE8], [OPUS, TE48])
        packets, _ = self.pcmu_stream(first_seq=10, first_ts=8000)
        first = header(step.rtp(packets[0]))
        out = step.rtp(rtp(11, 8160, b"\x01\x8a\x01\x40", pt=101))
        h = header(out)
        self.assertEqual((h["pt"], h["ts"], out[12:]),
                         (110, (first["ts"] + 960) & 0xFFFFFFFF, b"\x01\x8a\x07\x80"))

    def test_telephone_event_consumed(self):
        """Without audio to play it in (no codec X sends can be decoded),
        an event for a receiver without telephone-event is dropped, counted."""
        step = self.make([fmt(96, "foo"), TE8], [PCMA])
        self.assertIsNone(step.rtp(rtp(1, 0, b"\x05\x0a\x00\xa0", pt=101)))
        self.assertEqual(step.counters()["dtmf-consumed"], 1)

    def test_telephone_event_played_as_tones(self):
        """A receiver without telephone-event hears the digit: each event
        packet's new duration becomes that much of the DTMF pair (digit 5:
        770 + 1336 Hz) in its audio, continuing the stream's timeline; the
        repeated end packets add nothing."""
        step = self.make([PCMU, TE8], [PCMA])
        packets, _ = self.pcmu_stream(first_seq=10, first_ts=8000)
        first = header(step.rtp(packets[0]))
        out = []
        for i, (flags, duration) in enumerate(((0x0a, 160), (0x0a, 320), (0x0a, 480),
                                                (0x8a, 480), (0x8a, 480), (0x8a, 480))):
            out.append(step.rtp(rtp(11 + i, 8160, bytes([5, flags]) + duration.to_bytes(2, "big"),
                                    pt=101, marker=(i == 0))))
        self.assertEqual(out[3:], [None, None, None])
        heads = [header(o) for o in out[:3]]
        self.assertEqual([(h["pt"], h["marker"]) for h in heads],
                         [(8, True), (8, False), (8, False)])
        self.assertEqual([h["ts"] - first["ts"] for h in heads], [160, 320, 480])
        self.assertEqual([h["seq"] - first["seq"] for h in heads], [1, 2, 3])
        pcm = unpack(b"".join(g711.alaw_decode(o[12:]) for o in out[:3]))
        self.assertEqual(len(pcm), 480)
        low = tone_fit(pcm, 770, 8000)[1]
        high = tone_fit(pcm, 1336, 8000)[1]
        expected = 32767 * 10 ** (-13.14 / 20)  # -10 dBm0 each
        self.assertLess(abs(low - expected), expected * 0.05)
        self.assertLess(abs(high - expected), expected * 0.05)
        self.assertLess(tone_fit(pcm, 697, 8000)[1], expected * 0.1)
        counters = step.counters()
        self.assertEqual((counters["dtmf-tones"], counters["dtmf-consumed"]), (3, 3))

    def test_comfort_noise(self):
        """CN passes as the receiver's CN; without one it becomes noise at
        the announced level (-40 dBov here), encoded like the audio."""
        step = self.make([PCMU, CN8], [PCMA, CN8])
        self.assertEqual(step.rtp(rtp(1, 0, b"\x28", pt=13))[12:], b"\x28")
        step = self.make([PCMU, CN8], [PCMA])
        out = step.rtp(rtp(1, 0, b"\x28", pt=13))
        self.assertEqual(header(out)["pt"], 8)
        noise = unpack(g711.alaw_decode(out[12:]))
        self.assertEqual(len(noise), 160)
        rms = math.sqrt(sum(x * x for x in noise) / len(noise))
        self.assertTrue(150 < rms < 450, rms)  # -40 dBov: 232
        self.assertEqual(step.counters()["comfort-noise"], 1)

    def test_rtcp_not_passed(self):
        step = self.make([PCMU], [PCMA])
        self.assertIsNone(step.rtcp(b"\x80\xc8\x00\x06" + bytes(24)))
        self.assertEqual(step.counters()["rtcp-dropped"], 1)
        term = RtcpTerminator()
        self.assertTrue(verifyObject(IPacketTransform, term))
        self.assertIsNone(term.rtcp(b"\x80\xc9\x00\x01abcd"))
        self.assertIsNone(term.rtp(b"\x80\xc9\x00\x01abcd"))
        self.assertEqual(term.counters(), {"rtcp-dropped": 2})


class OpusLegTests(TranscoderTestBase):
    def test_pcmu_to_opus_and_back(self):
        """PCMU -> Opus (48 kHz clock: timestamps step 960) -> PCMU: the
        440 Hz tone arrives with tone SNR above 20 dB."""
        to_opus = self.make([PCMU, TE8], [OPUS, TE48])
        back = self.make([OPUS, TE48], [PCMU, TE8], seed=2)
        packets, reference = self.pcmu_stream(seconds=1)
        middle = [to_opus.rtp(p) for p in packets]
        heads = [header(m) for m in middle]
        self.assertEqual({h["pt"] for h in heads}, {111})
        self.assertEqual({(heads[i + 1]["ts"] - heads[i]["ts"]) & 0xFFFFFFFF
                          for i in range(len(heads) - 1)}, {960})
        self.assertEqual({opus.samples(m[12:]) for m in middle}, {960})
        out = [back.rtp(m) for m in middle]
        self.assertEqual({header(o)["pt"] for o in out}, {0})
        self.assertEqual({len(o) - 12 for o in out}, {160})
        pcm = unpack(b"".join(g711.ulaw_decode(o[12:]) for o in out))
        value, level = tone_fit(pcm[1600:], 440, 8000)
        self.assertGreaterEqual(value, 20.0)
        self.assertLess(abs(level - 12000), 1800)

    def test_loss_concealed_in_next_packet(self):
        """A lost packet is concealed (with the next one's FEC) and sent
        in front of it: one 40 ms packet that starts at the lost one's
        timestamp, no gap in the output's sequence numbers."""
        to_opus = self.make([PCMU], [OPUS])
        packets, _ = self.pcmu_stream(seconds=1)
        middle = [to_opus.rtp(p) for p in packets]
        back = self.make([OPUS], [PCMA], seed=3)
        out = [back.rtp(m) for i, m in enumerate(middle) if i != 20]
        heads = [header(o) for o in out]
        self.assertEqual([len(o) - 12 for o in out[19:22]], [160, 320, 160])
        self.assertEqual([(h["seq"] - heads[0]["seq"]) & 0xFFFF for h in heads],
                         list(range(len(out))))
        self.assertEqual((heads[20]["ts"] - heads[19]["ts"]) & 0xFFFFFFFF, 160)
        self.assertEqual((heads[21]["ts"] - heads[20]["ts"]) & 0xFFFFFFFF, 320)
        self.assertEqual(back.counters()["concealed"], 1)
        pcm = unpack(g711.alaw_decode(out[20][12:]))
        value, level = tone_fit(pcm[:160], 440, 8000)
        self.assertGreaterEqual(value, 30.0)
        self.assertLess(abs(level - 12000), 1200)

    def test_corrupt_payload_concealed(self):
        """A corrupt Opus payload after good ones is concealed (PLC) and
        counted; before any good one it is dropped."""
        back = self.make([OPUS], [PCMU])
        self.assertIsNone(back.rtp(rtp(1, 0, b"\xfb\x00", pt=111)))
        to_opus = self.make([PCMU], [OPUS])
        packets, _ = self.pcmu_stream(first_seq=2, first_ts=960)
        good = [to_opus.rtp(p) for p in packets[:5]]
        for g in good:
            self.assertIsNotNone(back.rtp(g))
        bad = rtp(header(good[-1])["seq"] + 1, header(good[-1])["ts"] + 960, b"\xfb\x00", pt=111)
        out = back.rtp(bad)
        self.assertEqual(len(out) - 12, 160)
        self.assertEqual(back.counters()["corrupt"], 2)

    def test_late_and_duplicate_dropped(self):
        step = self.make([PCMU], [PCMA])
        packets, _ = self.pcmu_stream(first_seq=100, first_ts=0)
        for p in packets[:3]:
            self.assertIsNotNone(step.rtp(p))
        self.assertIsNone(step.rtp(packets[2]))
        self.assertIsNone(step.rtp(packets[0]))
        self.assertEqual(step.counters()["late"], 2)

    def test_g722_to_opus_needs_no_resampler(self):
        """G.722 and Opus meet at 16 kHz; PCMU and G.722 at 8 kHz."""
        step = self.make([G722], [OPUS])
        step.rtp(rtp(1, 0, bytes(160), pt=9))
        slot = step._table[9]
        self.assertEqual((slot.rate, slot.resampler, step._encoder_rate), (16000, None, 16000))
        step = self.make([PCMU], [G722])
        out = step.rtp(rtp(1, 0, bytes(160), pt=0))
        self.assertEqual(len(out) - 12, 160)
        self.assertEqual(step._encoder_rate, 8000)


class BadInputTests(TranscoderTestBase):
    def test_malformed_and_unknown(self):
        step = self.make([PCMU], [PCMA])
        self.assertIsNone(step.rtp(b"\x80\x00\x00"))
        self.assertIsNone(step.rtp(b"\x90" + bytes(11)))  # extension, no room
        self.assertIsNone(step.rtp(b"\xa0" + bytes(11) + b"\x00"))  # padding 0
        self.assertIsNone(step.rtp(b"\x8f" + bytes(20)))  # 15 CSRCs, 20 bytes
        self.assertIsNone(step.rtp(rtp(1, 0, bytes(160), pt=96)))
        counters = step.counters()
        self.assertEqual((counters["malformed"], counters["unknown-pt"]), (4, 1))

    def test_header_extension_and_padding_skipped(self):
        step = self.make([PCMU], [PCMA])
        payload = bytes([0xFF] * 160)
        packet = (struct.pack(">BBHII", 0xB1, 0, 1, 0, SSRC_IN) + b"\x01\x02\x03\x04"
                  + b"\xbe\xde\x00\x01" + b"\x10\xaa\x00\x00" + payload + b"\x00\x00\x03")
        out = step.rtp(packet)
        self.assertEqual(out[12:], g711.alaw_encode(g711.ulaw_decode(payload)))

    def test_random_input_never_raises(self):
        rng = random.Random(7)
        steps = [self.make([PCMU, OPUS, G722, TE8, CN8], [OPUS, PCMA, TE48]),
                 self.make([PCMU, CN8], [OPUS, TE48]), self.make([OPUS, TE48], [PCMU])]
        for _ in range(3000):
            n = rng.randrange(0, 200)
            data = bytes(rng.getrandbits(8) for _ in range(n))
            if n > 2 and rng.random() < 0.7:
                data = bytes([0x80, rng.choice([0, 8, 9, 13, 101, 110, 111, 96])]) + data[2:]
            for step in steps:
                result = step.rtp(data)
                self.assertTrue(result is None or isinstance(result, bytes))

    def test_absurd_timestamps(self):
        """Timestamps that jump anywhere map without error, and the
        stream goes on from there."""
        step = self.make([PCMU], [OPUS])
        heads = []
        for seq, ts in ((1, 0), (2, 160), (3, 0x7FFFFFFF), (4, 0x7FFFFFFF + 160), (5, 3)):
            heads.append(header(step.rtp(rtp(seq, ts, bytes(160)))))
        self.assertEqual((heads[1]["ts"] - heads[0]["ts"]) & 0xFFFFFFFF, 960)
        self.assertEqual((heads[3]["ts"] - heads[2]["ts"]) & 0xFFFFFFFF, 960)


class FormatTests(SynchronousTestCase):
    def test_normalise(self):
        self.assertEqual(normalise_formats([{"pt": 0, "encoding": "PCMU", "clock_rate": 8000}], "x"),
                         [PCMU])
        for bad in ([{"pt": 128, "encoding": "pcmu", "clock_rate": 8000}],
                    [{"pt": 0, "encoding": "", "clock_rate": 8000}],
                    [{"pt": 0, "encoding": "pcmu", "clock_rate": 0}],
                    [{"pt": 0, "encoding": "pcmu", "clock_rate": 8000, "channels": 0}],
                    [{"pt": 0, "encoding": "pcmu", "clock_rate": 8000, "fmtp": 3}],
                    ["pcmu"], "pcmu"):
            self.assertRaises(ValueError, normalise_formats, bad, "codecs_send")

    def test_needs_transcoding(self):
        reg = omnirtp.codecs.registry()
        self.assertTrue(needs_transcoding([PCMU, TE8], [OPUS, TE48], reg))
        self.assertFalse(needs_transcoding([PCMU, TE8], [PCMA, PCMU], reg))
        self.assertFalse(needs_transcoding([PCMU], [fmt(96, "foo")], reg))


class RtcpReportTests(TranscoderTestBase):
    def test_sender_report(self):
        """The SR carries our SSRC, the NTP time, the given RTP timestamp
        and what went out (packets, payload octets)."""
        step = self.make([PCMU], [PCMA])
        packets, _ = self.pcmu_stream(first_seq=1, first_ts=0)
        for p in packets[:3]:
            step.rtp(p)
        sr = step.sender_report(1700000000.5, 12345)
        self.assertEqual(struct.unpack(">BBHIIIIII", sr),
                         (0x80, 200, 6, SSRC_OUT, 1700000000 + 2208988800, 0x80000000, 12345,
                          3, 480))
        self.assertEqual(step.counters()["rtcp-sent"], 1)

    def test_report_block_counts_loss(self):
        """Reception of the input: 10 packets expected (sequence 65530 ..
        3, across the wrap), 2 lost; the next block reports the interval."""
        step = self.make([PCMU], [PCMA])
        self.assertEqual(step.report_block(), b"")
        packets, _ = self.pcmu_stream(first_seq=65530, first_ts=0)
        for i, p in enumerate(packets[:10]):
            if i not in (3, 7):
                step.rtp(p)
        block = struct.unpack(">IIIIII", step.report_block())
        self.assertEqual(block, (SSRC_IN, (51 << 24) | 2, 0x10000 + 3, 0, 0, 0))
        for p in packets[10:14]:
            step.rtp(p)
        block = struct.unpack(">IIIIII", step.report_block())
        self.assertEqual(block, (SSRC_IN, 2, 0x10000 + 7, 0, 0, 0))
        sr = step.sender_report(0.0, 0, step.report_block())
        self.assertEqual(sr[:4], b"\x81\xc8\x00\x0c")
        self.assertEqual(len(sr), 52)


class PtimeTests(TranscoderTestBase):
    def test_30ms_pcmu_to_opus(self):
        """A 30 ms PCMU packet becomes one 30 ms Opus packet (timestamps
        step 1440 at 48 kHz): the output keeps the sender's ptime, and no
        packet waits for another."""
        step = self.make([PCMU], [OPUS])
        reference = tone(440, 8000, 2400, 12000)
        out = [step.rtp(rtp(i, 240 * i, g711.ulaw_encode(f)))
               for i, f in enumerate(frames(pack(reference), 240))]
        self.assertEqual(len(out), 10)
        self.assertEqual({opus.samples(o[12:]) for o in out}, {1440})
        heads = [header(o) for o in out]
        self.assertEqual({(heads[i + 1]["ts"] - heads[i]["ts"]) & 0xFFFFFFFF
                          for i in range(9)}, {1440})


class RepacketiseTests(TranscoderTestBase):
    """The receiver's ptime (``ptime``, the engine's socket-entry key):
    the transcoded audio is cut into packets of that duration; whole
    packets leave as soon as their last sample is in, only the rest is
    held; timestamps step by the packet duration from the first sample,
    sequence numbers by one, the marker on the first packet."""

    def run_stream(self, step, ptime_in, count, first_seq=65530, first_ts=0xFFFFF000,
                   lose=(), pcm=None):
        """``count`` PCMU packets of ``ptime_in`` ms of a 440 Hz tone
        (input indices in ``lose`` never sent); per input, what came out."""
        n = 8 * ptime_in
        if pcm is None:
            pcm = pack(tone(440, 8000, n * count, 12000))
        self.pcm_in = pcm
        results = []
        for i, f in enumerate(frames(pcm, n)):
            if i in lose:
                results.append(None)
                continue
            results.append(packets_of(step.rtp(rtp(first_seq + i, first_ts + n * i,
                                                   g711.ulaw_encode(f)))))
        return results

    def check_stream(self, out, ticks):
        heads = [header(o) for o in out]
        self.assertEqual({h["ssrc"] for h in heads}, {SSRC_OUT})
        self.assertEqual([h["seq"] for h in heads],
                         [(heads[0]["seq"] + i) & 0xFFFF for i in range(len(heads))])
        self.assertEqual([h["ts"] for h in heads],
                         [(heads[0]["ts"] + ticks * i) & 0xFFFFFFFF for i in range(len(heads))])
        self.assertEqual([h["marker"] for h in heads], [True] + [False] * (len(heads) - 1))
        return heads

    def test_g711_20_to_40(self):
        """20 ms PCMU -> 40 ms PCMA: every second packet in gives one
        packet out at once (the first is held: all that is needed), the
        bytes exactly G.711's of the two packets' audio."""
        step = self.make([PCMU], [PCMA], ptime=40)
        results = self.run_stream(step, 20, 10)
        self.assertEqual([len(r) for r in results], [0, 1] * 5)
        out = [o for r in results for o in r]
        self.check_stream(out, 320)
        pcm = g711.ulaw_decode(g711.ulaw_encode(self.pcm_in))
        self.assertEqual([o[12:] for o in out],
                         [g711.alaw_encode(f) for f in frames(pcm, 320)])
        self.assertEqual(step._pending, b"")
        self.assertEqual(step.counters()["transcoded"], 10)

    def test_g711_40_to_20(self):
        """40 ms in, 20 ms out: two packets per packet, both at once,
        nothing held."""
        step = self.make([PCMU], [PCMA], ptime=20)
        results = self.run_stream(step, 40, 5)
        self.assertEqual([len(r) for r in results], [2] * 5)
        out = [o for r in results for o in r]
        self.check_stream(out, 160)
        self.assertEqual({len(o) - 12 for o in out}, {160})
        self.assertEqual(step._pending, b"")

    def test_g711_20_to_30(self):
        """20 -> 30 ms: two packets out per three in (held: 20, 10, 0 ms),
        timestamps 240 apart, the audio continuous."""
        step = self.make([PCMU], [PCMA], ptime=30)
        results = self.run_stream(step, 20, 9)
        self.assertEqual([len(r) for r in results], [0, 1, 1] * 3)
        out = [o for r in results for o in r]
        self.check_stream(out, 240)
        pcm = g711.ulaw_decode(g711.ulaw_encode(self.pcm_in))
        self.assertEqual(b"".join(g711.alaw_decode(o[12:]) for o in out),
                         g711.alaw_decode(g711.alaw_encode(pcm)))

    def test_timestamps_follow_the_input(self):
        """The first packet's timestamp is the output base of the first
        sample; later ones step by the output ptime (the input's wrapped
        around 2^32 and its sequence around 2^16 on the way)."""
        step = self.make([PCMU], [PCMA], ptime=40)
        base = step._out_base
        out = [o for r in self.run_stream(step, 20, 8) for o in r]
        self.assertEqual([header(o)["ts"] for o in out],
                         [(base + 320 * i) & 0xFFFFFFFF for i in range(4)])

    def test_opus_20_to_40_from_pcmu(self):
        """PCMU 20 ms -> Opus at 40 ms: one Opus packet of 1920 samples
        (48 kHz) per two in, timestamps 1920 apart; the tone comes back."""
        step = self.make([PCMU], [fmt(111, "opus", 48000, 2)], ptime=40)
        results = self.run_stream(step, 20, 50)
        self.assertEqual([len(r) for r in results], [0, 1] * 25)
        out = [o for r in results for o in r]
        self.check_stream(out, 1920)
        self.assertEqual({opus.samples(o[12:]) for o in out}, {1920})
        decoder = opus.build("", 8000)
        pcm = b"".join(decoder.decode(o[12:]) for o in out)
        quality, _ = tone_fit(unpack(pcm)[1600:], 440, 8000)
        self.assertGreater(quality, 25)

    def test_opus_60_to_20_pcmu(self):
        """Opus 60 ms in (one packet of three 20 ms frames) -> PCMU 20 ms:
        three packets per packet, 160 apart, at once; then 20 -> 20 ms
        Opus in the same stream goes out as it comes."""
        encoder = opus.build("", 8000)
        step = self.make([OPUS], [PCMU], ptime=20)
        pcm = pack(tone(1000, 8000, 480 * 6, 12000))
        out = []
        for i, f in enumerate(frames(pcm, 480)):
            got = packets_of(step.rtp(rtp(i, 2880 * i, encoder.encode(f), pt=111)))
            self.assertEqual(len(got), 3)
            out += got
        for i in range(5):
            got = packets_of(step.rtp(rtp(6 + i, 2880 * 6 + 960 * i,
                                          encoder.encode(bytes(320)), pt=111)))
            self.assertEqual(len(got), 1)
            out += got
        self.check_stream(out, 160)
        self.assertEqual({len(o) - 12 for o in out}, {160})

    def test_opus_ptime_rounded_to_10ms(self):
        """Opus takes 10 ms frames: 25 ms becomes 30; over 120 ms, 120."""
        step = self.make([PCMU], [OPUS], ptime=25)
        self.assertEqual(step.ptime, 30)
        step.set_ptime(200)
        self.assertEqual(step.ptime, 120)
        step = self.make([PCMU], [PCMA], ptime=25)
        self.assertEqual(step.ptime, 25)

    def test_fmtp_ptime(self):
        """Without a ptime from the engine the target's fmtp ``ptime``
        counts; neither: the sender's packets keep their duration."""
        step = self.make([PCMU], [fmt(111, "opus", 48000, 2, "ptime=40;useinbandfec=1")])
        self.assertEqual(step.ptime, 40)
        step.set_ptime(20)
        self.assertEqual(step.ptime, 20)
        self.assertEqual(self.make([PCMU], [OPUS]).ptime, None)

    def test_loss_concealed_in_the_middle(self):
        """One 20 ms packet lost (G.711: silence concealed in front of the
        next one): the 40 ms packets go on without a gap in their
        timestamps or sequence numbers, the lost 20 ms silent."""
        step = self.make([PCMU], [PCMA], ptime=40)
        results = self.run_stream(step, 20, 10, lose=(4,))
        self.assertEqual([len(r) if r is not None else None for r in results],
                         [0, 1, 0, 1, None, 1, 0, 1, 0, 1])
        out = [o for r in results if r for o in r]
        self.check_stream(out, 320)
        self.assertEqual(out[2][12:172], g711.alaw_encode(bytes(320)))
        self.assertEqual(step.counters()["concealed"], 1)

    def test_long_loss_flushes_the_held_audio(self):
        """Five packets lost (beyond concealment) while 20 ms are held:
        the held audio leaves padded with silence to 40 ms at its own
        timestamp, the audio after the gap starts a packet at its own
        (input) timestamp; sequence numbers stay continuous."""
        step = self.make([PCMU], [PCMA], ptime=40)
        base = step._out_base
        results = self.run_stream(step, 20, 14, lose=(3, 4, 5, 6, 7))
        self.assertEqual([len(r) if r is not None else None for r in results],
                         [0, 1, 0] + [None] * 5 + [1, 1, 0, 1, 0, 1])
        out = [o for r in results if r for o in r]
        heads = [header(o) for o in out]
        self.assertEqual([h["ts"] - base for h in heads],
                         [0, 320, 8 * 160, 10 * 160, 12 * 160])
        self.assertEqual([h["seq"] for h in heads],
                         [(heads[0]["seq"] + i) & 0xFFFF for i in range(5)])
        self.assertEqual(out[1][172:], g711.alaw_encode(bytes(320)))

    def test_talkspurt_marker(self):
        """A new talkspurt (timestamp jump, marker): the held audio is sent
        padded, and the marker goes on the first packet of the new one."""
        step = self.make([PCMU], [PCMA], ptime=40)
        base = step._out_base
        pcm = pack(tone(440, 8000, 160, 12000))
        got = []
        for seq, ts, marker in ((1, 0, True), (2, 160, False), (3, 320, False),
                                (4, 8000, True), (5, 8160, False)):
            got += packets_of(step.rtp(rtp(seq, ts, g711.ulaw_encode(pcm), marker=marker)))
        self.assertEqual([(header(o)["ts"] - base, header(o)["marker"]) for o in got],
                         [(0, True), (320, False), (8000, True)])

    def test_short_gap_filled_with_silence(self):
        """The sender's timestamps skip 10 ms (less than the held packet
        still needs): silence fills it in the same packet."""
        step = self.make([PCMU], [PCMA], ptime=40)
        base = step._out_base
        pcm = pack(tone(440, 8000, 160, 12000))
        got = []
        for seq, ts in ((1, 0), (2, 240)):
            got += packets_of(step.rtp(rtp(seq, ts, g711.ulaw_encode(pcm))))
        self.assertEqual(len(got), 1)
        self.assertEqual(header(got[0])["ts"], base)
        self.assertEqual(got[0][172:252], g711.alaw_encode(bytes(160)))
        self.assertEqual(len(step._pending), 160)  # 10 ms of the second held

    def test_dtmf_tones_repacketised(self):
        """An event played as tones for a receiver without
        telephone-event goes into the same packets as the audio."""
        step = self.make([PCMU, TE8], [PCMA], ptime=40)
        pcm = pack(tone(440, 8000, 160, 12000))
        got = packets_of(step.rtp(rtp(1, 0, g711.ulaw_encode(pcm))))
        self.assertEqual(got, [])
        event = bytes((5, 10)) + (160).to_bytes(2, "big")
        got = packets_of(step.rtp(rtp(2, 160, event, pt=101, marker=True)))
        self.assertEqual(len(got), 1)
        self.assertEqual(len(got[0]) - 12, 320)
        self.assertEqual(step.counters()["dtmf-tones"], 1)


class DtmfDetectionTests(TranscoderTestBase):
    def test_inband_digits_become_events(self):
        """X sends PCMU without telephone-event, Y takes Opus with
        telephone-event/48000: the digits in X's audio (5 for 100 ms, then
        # for 80 ms) reach Y as events, in the place of the audio packets
        they sound in: marker on the first, growing duration, the end bit
        on the last; the audio around them is transcoded as usual."""
        from omnirtp.codecs.transcode import dtmf_tone
        step = self.make([PCMU], [OPUS, TE48])
        pcm = (bytes(1600) + dtmf_tone(5, 10, 0, 800, 8000) + bytes(1600)
               + dtmf_tone(11, 10, 0, 640, 8000) + bytes(1600))
        results = [packets_of(step.rtp(rtp(i, 160 * i, g711.ulaw_encode(f))))
                   for i, f in enumerate(frames(pcm, 160))]
        self.assert_ends_tripled(results)
        out = [r[0] for r in results]
        kinds = [header(o)["pt"] for o in out]
        events = [(i, o[12], o[13], int.from_bytes(o[14:16], "big"), header(o)["marker"])
                  for i, o in enumerate(out) if header(o)["pt"] == 110]
        self.assertEqual([e[1] for e in events], [5] * 5 + [11] * 4)
        self.assertEqual([e[2] & 0x80 for e in events], [0, 0, 0, 0, 0x80, 0, 0, 0, 0x80])
        self.assertEqual([e[4] for e in events],
                         [True, False, False, False, False, True, False, False, False])
        self.assertEqual([e[3] for e in events[:5]], [960, 1920, 2880, 3840, 4800])
        starts = {header(o)["ts"] for o in out if header(o)["pt"] == 110 and o[12] == 5}
        self.assertEqual(len(starts), 1)
        # 100 ms silence (5 packets), the digit found from its second
        # packet on (the first sounds as audio), the end seen in the
        # silence after it
        self.assertEqual(kinds, [111] * 6 + [110] * 5 + [111] * 5 + [110] * 4 + [111] * 4)
        self.assertEqual(step.counters()["dtmf-detected"], 2)

    def assert_ends_tripled(self, results):
        """Each packet in gave one packet out, except those whose output
        is the end of a digit: that end event three times, the same
        timestamp and payload, consecutive sequence numbers, the marker
        on none; every output's sequence number one more than the last."""
        seqs = [header(o)["seq"] for r in results for o in r]
        self.assertEqual(seqs, [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))])
        for r in results:
            if len(r) == 1:
                self.assertFalse(r[0][12:] and header(r[0])["pt"] == 110 and r[0][13] & 0x80)
                continue
            self.assertEqual(len(r), 3)
            self.assertEqual({(header(o)["ts"], header(o)["pt"], o[12:]) for o in r},
                             {(header(r[0])["ts"], 110, r[0][12:])})
            self.assertTrue(r[0][13] & 0x80)
            self.assertEqual([header(o)["marker"] for o in r], [False] * 3)

    def test_no_detection_when_x_has_events(self):
        step = self.make([PCMU, TE8], [OPUS, TE48])
        self.assertIsNone(step._te_detect)
        step = self.make([PCMU], [OPUS])
        self.assertIsNone(step._te_detect)

    def test_inband_digits_at_16k(self):
        """X sends G.722 (decoded at 16 kHz to meet Opus) without
        telephone-event, Y takes Opus with telephone-event/48000: the
        detector gets an 8 kHz copy (libsoxr) and the digits reach Y as
        events as at 8 kHz, with durations in Y's clock."""
        from omnirtp.codecs.g722 import g722
        from omnirtp.codecs.transcode import dtmf_tone
        step = self.make([G722], [OPUS, TE48])
        encoder = g722.build("", 16000)
        pcm = (bytes(3200) + dtmf_tone(5, 10, 0, 1600, 16000) + bytes(3200)
               + dtmf_tone(11, 10, 0, 1280, 16000) + bytes(3200))
        results = [packets_of(step.rtp(rtp(i, 160 * i, encoder.encode(f), pt=9)))
                   for i, f in enumerate(frames(pcm, 320))]
        self.assert_ends_tripled(results)
        out = [r[0] for r in results]
        kinds = [header(o)["pt"] for o in out]
        events = [(o[12], o[13] & 0x80, int.from_bytes(o[14:16], "big"), header(o)["marker"])
                  for o in out if header(o)["pt"] == 110]
        # one packet later than at 8 kHz (G.722's QMF and the resampler
        # delay the tone by about 14 ms), so the end is seen one packet
        # later too
        self.assertEqual(kinds, [111] * 7 + [110] * 6 + [111] * 4 + [110] * 5 + [111] * 2)
        self.assertEqual(events[:6], [(5, 0, 960, True), (5, 0, 1920, False),
                                      (5, 0, 2880, False), (5, 0, 3840, False),
                                      (5, 0, 4800, False), (5, 0x80, 5760, False)])
        self.assertEqual([e[0] for e in events[6:]], [11] * 5)
        self.assertEqual([e[1] for e in events[6:]], [0, 0, 0, 0, 0x80])
        self.assertEqual([e[3] for e in events[6:]], [True, False, False, False, False])
        self.assertEqual(step.counters()["dtmf-detected"], 2)
        self.assertEqual(step._detect_resampler.in_rate, 16000)
