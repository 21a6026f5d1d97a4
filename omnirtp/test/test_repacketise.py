"""Tests for omnirtp.media.repacketise: G.711/G.722 packets cut and joined
to the receiver's ptime without transcoding."""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from omnirtp.interfaces import IPacketTransform
from omnirtp.media.repacketise import Repacketiser
from omnirtp.test.test_transcode import header, packets_of, rtp

SSRC = 0x01020304


def stream(count, ms, first_seq=65534, first_ts=0xFFFFFF00, pt=0, lose=()):
    """``count`` packets of ``ms`` ms (8 bytes per ms), the payload bytes
    counting up so that joins and cuts show."""
    n = 8 * ms
    return [rtp(first_seq + i, first_ts + n * i, bytes((n * i + j) & 0xFF for j in range(n)),
                pt=pt, ssrc=SSRC)
            for i in range(count) if i not in lose]


class RepacketiserTests(SynchronousTestCase):
    def run_stream(self, step, packets):
        return [packets_of(step.rtp(p)) for p in packets]

    def check(self, out, ticks, first_seq=65534, first_ts=0xFFFFFF00):
        heads = [header(o) for o in out]
        self.assertEqual([h["seq"] for h in heads],
                         [(first_seq + i) & 0xFFFF for i in range(len(out))])
        self.assertEqual([h["ts"] for h in heads],
                         [(first_ts + ticks * i) & 0xFFFFFFFF for i in range(len(out))])
        self.assertEqual({h["ssrc"] for h in heads}, {SSRC})
        self.assertEqual({len(o) - 12 for o in out}, {ticks})

    def test_interface(self):
        self.assertTrue(verifyObject(IPacketTransform, Repacketiser(20)))
        self.assertTrue(Repacketiser.fan_out)

    def test_20_to_40(self):
        """Two 20 ms packets joined into one of 40 ms (only the first
        held), payload bytes in order, the sender's SSRC and first
        timestamp, sequence numbers from the sender's first, one apart."""
        step = Repacketiser(40)
        packets = stream(10, 20)
        results = self.run_stream(step, packets)
        self.assertEqual([len(r) for r in results], [0, 1] * 5)
        out = [o for r in results for o in r]
        self.check(out, 320)
        self.assertEqual(b"".join(o[12:] for o in out), b"".join(p[12:] for p in packets))
        self.assertEqual(step.counters(), {"joined": 5, "split": 0, "passed": 0, "sent": 5})

    def test_40_to_20(self):
        step = Repacketiser(20)
        results = self.run_stream(step, stream(5, 40))
        self.assertEqual([len(r) for r in results], [2] * 5)
        self.check([o for r in results for o in r], 160)

    def test_20_to_30(self):
        step = Repacketiser(30)
        packets = stream(9, 20)
        results = self.run_stream(step, packets)
        self.assertEqual([len(r) for r in results], [0, 1, 1] * 3)
        out = [o for r in results for o in r]
        self.check(out, 240)
        self.assertEqual(b"".join(o[12:] for o in out), b"".join(p[12:] for p in packets))

    def test_same_ptime_only_renumbered(self):
        step = Repacketiser(20)
        packets = stream(3, 20, first_seq=7)
        out = [step.rtp(p) for p in packets]
        self.assertEqual(out, packets)

    def test_loss_sends_the_held_audio_short(self):
        """A lost packet: the held 20 ms leave as a 20 ms packet at their
        own timestamp, the next packet starts afresh; the sequence numbers
        stay continuous (the step's own)."""
        step = Repacketiser(40)
        out = [o for r in self.run_stream(step, stream(8, 20, first_seq=0, first_ts=0,
                                                          lose=(3,))) for o in r]
        self.assertEqual([(header(o)["seq"], header(o)["ts"], len(o) - 12) for o in out],
                         [(0, 0, 320), (1, 320, 160), (2, 640, 320), (3, 960, 320)])

    def test_other_payloads_pass_after_the_held_audio(self):
        """An RFC 4733 event (dynamic payload type) passes as it came, with
        our sequence number, after the held audio; so does a header with
        a CSRC."""
        step = Repacketiser(40)
        audio = stream(1, 20, first_seq=10, first_ts=0)[0]
        self.assertEqual(packets_of(step.rtp(audio)), [])
        event = rtp(11, 160, b"\x05\x0a\x00\xa0", pt=101, marker=True, ssrc=SSRC)
        first, second = step.rtp(event)
        self.assertEqual((header(first)["seq"], len(first) - 12), (10, 160))
        self.assertEqual(second, event)
        csrc = b"\x81" + event[1:12] + b"\x00\x00\x00\x09" + bytes(160)
        self.assertEqual(header(step.rtp(csrc))["seq"], 12)
        self.assertEqual(step.counters()["passed"], 2)

    def test_g722_and_pcma_and_marker(self):
        """G.722 (one byte per 8 kHz tick) and PCMA are cut the same way;
        a payload type change flushes; the marker stays on the first."""
        step = Repacketiser(40)
        out = []
        for p in stream(2, 20, first_seq=0, first_ts=0, pt=9) + stream(2, 20, first_seq=2,
                                                                       first_ts=320, pt=8):
            out += packets_of(step.rtp(p))
        marked = rtp(4, 5000, bytes(160), pt=8, marker=True, ssrc=SSRC)
        out += packets_of(step.rtp(marked))
        out += packets_of(step.rtp(rtp(5, 5160, bytes(160), pt=8, ssrc=SSRC)))
        self.assertEqual([(header(o)["pt"], header(o)["ts"], header(o)["marker"]) for o in out],
                         [(9, 0, False), (8, 320, False), (8, 5000, True)])

    def test_short_and_rtcp(self):
        step = Repacketiser(40)
        self.assertIsNone(step.rtp(b"\x80\x00"))
        sr = b"\x80\xc8\x00\x06" + bytes(24)
        self.assertEqual(step.rtcp(sr), sr)
