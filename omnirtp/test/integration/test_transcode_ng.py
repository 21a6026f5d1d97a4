"""Transcoding set up by ng alone: the whole daemon in-process over real UDP.

A caller that offers PCMU only, ``codec: {transcode: [PCMA]}`` on the offer
and a callee that answers PCMA only: the negotiator tells the engine to
transcode (CODEC-CONTRACT.md) and each party hears the other's tone in its
own codec: a 440 Hz tone sent as PCMU arrives as PCMA (payload type 8) and
an 880 Hz tone sent as PCMA arrives as PCMU (payload type 0), each within
15 Hz and with a tone SNR of at least 20 dB.  The browser's case: a caller
offering Opus only (FFmpeg's Opus through PyAV, as in test_transcode_udp)
with ``transcode-PCMU`` and a PCMU-only callee.  Both again with
different ptimes on the two sides (ng ``ptime`` / ``ptime-reverse``): each
party gets packets of its own ptime, with the tone.  The same call without
codec flags (both PCMU) is relayed byte for byte.
"""

import struct

from twisted.internet import defer, reactor, task

from omnirtp.codecs import g711
from omnirtp.test.integration.test_daemon import DaemonTestCase, port_of, sdp, wait_for
from omnirtp.test.integration.test_transcode_udp import OpusParty, av, peak_frequency
from omnirtp.test.test_codecs import tone, tone_fit
from omnirtp.test.test_transcode import header, rtp

PACKETS = 50
TOLERANCE = 15


def g711_packets(encode, frequency, pt, ssrc):
    samples = tone(frequency, 8000, 160 * PACKETS, 12000)
    pcm = struct.pack("<%dh" % len(samples), *samples)
    return [rtp(100 + i, 160 * i, encode(pcm[320 * i:320 * (i + 1)]), pt=pt, ssrc=ssrc)
            for i in range(PACKETS)]


def decoded(packets, decode):
    out = []
    for d in packets:
        pcm = decode(d[12:])
        out.extend(struct.unpack("<%dh" % (len(pcm) // 2), pcm))
    return out


class TranscodeByNgTests(DaemonTestCase):

    @defer.inlineCallbacks
    def call(self, offer_extra, answer_formats):
        a, b = self.party(), self.party()
        offer = yield self.ng.request(
            command="offer", call_id="t1", from_tag="ft",
            sdp=sdp(a.port).replace("RTP/AVP 0 8", "RTP/AVP 0"), **offer_extra)
        self.assertEqual(offer["result"], "ok", offer)
        answer = yield self.ng.request(
            command="answer", call_id="t1", from_tag="ft", to_tag="tt",
            sdp=sdp(b.port).replace("RTP/AVP 0 8", "RTP/AVP " + answer_formats))
        self.assertEqual(answer["result"], "ok", answer)
        return a, b, offer["sdp"], answer["sdp"]

    def play_opus_pcmu(self, party, a, b, offer, answer):
        """A's 440 Hz Opus (PT 111, encoded by ``party``) and B's 880 Hz
        PCMU, paced in turns to the ports the offer and the answer gave
        them."""
        from_a = [rtp(100 + i, 960 * i, p, pt=111, ssrc=0x0A0A0A0A)
                  for i, p in enumerate(party.packets(440, PACKETS))]
        from_b = g711_packets(g711.ulaw_encode, 880, 0, 0x0B0B0B0B)
        sends = []
        for pa, pb in zip(from_a, from_b):
            sends.append(lambda pa=pa: a.transport.write(
                pa, ("127.0.0.1", port_of(answer["sdp"]))))
            sends.append(lambda pb=pb: b.transport.write(
                pb, ("127.0.0.1", port_of(offer["sdp"]))))
        return self.pace(sends)

    @defer.inlineCallbacks
    def pace(self, sends):
        for send in sends:
            send()
            yield task.deferLater(reactor, 0.02, lambda: None)

    def assertTone(self, samples, frequency):
        heard = peak_frequency(samples[:1600], 8000)
        self.assertTrue(abs(heard - frequency) <= TOLERANCE,
                        "%d Hz arrived as %d Hz" % (frequency, heard))
        snr, _ = tone_fit(samples, frequency, 8000)
        self.assertGreaterEqual(snr, 20.0)

    @defer.inlineCallbacks
    def test_pcmu_caller_pcma_callee(self):
        yield self.start()
        a, b, offer_sdp, answer_sdp = yield self.call({"codec": {"transcode": ["PCMA"]}}, "8")
        self.assertIn("m=audio %d RTP/AVP 0 8\r\n" % port_of(offer_sdp), offer_sdp)
        self.assertIn("m=audio %d RTP/AVP 0\r\n" % port_of(answer_sdp), answer_sdp)
        to_b_side, to_a_side = port_of(answer_sdp), port_of(offer_sdp)
        from_a = g711_packets(g711.ulaw_encode, 440, 0, 0x0A0A0A0A)
        from_b = g711_packets(g711.alaw_encode, 880, 8, 0x0B0B0B0B)
        sends = []
        for pa, pb in zip(from_a, from_b):
            sends.append(lambda pa=pa: a.transport.write(pa, ("127.0.0.1", to_b_side)))
            sends.append(lambda pb=pb: b.transport.write(pb, ("127.0.0.1", to_a_side)))
        yield self.pace(sends)
        yield wait_for(lambda: len(a.received) >= PACKETS - 5
                       and len(b.received) >= PACKETS - 5, timeout=10)
        at_b = [d for d, _ in b.received if header(d)["pt"] == 8]
        at_a = [d for d, _ in a.received if header(d)["pt"] == 0]
        self.assertGreaterEqual(len(at_b), PACKETS - 5)
        self.assertGreaterEqual(len(at_a), PACKETS - 5)
        self.assertEqual([d for d, _ in b.received if header(d)["pt"] != 8], [])
        self.assertEqual([d for d, _ in a.received if header(d)["pt"] != 0], [])
        self.assertTone(decoded(at_b[10:], g711.alaw_decode), 440)
        self.assertTone(decoded(at_a[10:], g711.ulaw_decode), 880)

    @defer.inlineCallbacks
    def test_opus_caller_pcmu_callee(self):
        if av is None:
            raise self.skipTest("PyAV (aiortc's dependency) is not installed")
        yield self.start()
        a, b = self.party(), self.party()
        offer = yield self.ng.request(
            command="offer", call_id="t2", from_tag="ft",
            sdp=sdp(a.port).replace("RTP/AVP 0 8", "RTP/AVP 111")
            + "a=rtpmap:111 opus/48000/2\r\n", flags=["codec-transcode-PCMU"])
        self.assertIn("m=audio %d RTP/AVP 111 0\r\n" % port_of(offer["sdp"]), offer["sdp"])
        answer = yield self.ng.request(
            command="answer", call_id="t2", from_tag="ft", to_tag="tt",
            sdp=sdp(b.port).replace("RTP/AVP 0 8", "RTP/AVP 0"))
        self.assertIn("m=audio %d RTP/AVP 111\r\n" % port_of(answer["sdp"]), answer["sdp"])
        party = OpusParty()
        yield self.play_opus_pcmu(party, a, b, offer, answer)
        yield wait_for(lambda: len(a.received) >= PACKETS - 5
                       and len(b.received) >= PACKETS - 5, timeout=10)
        at_b = [d for d, _ in b.received if header(d)["pt"] == 0]
        at_a = [d for d, _ in a.received if header(d)["pt"] == 111]
        self.assertGreaterEqual(len(at_b), PACKETS - 5)
        self.assertGreaterEqual(len(at_a), PACKETS - 5)
        self.assertTone(decoded(at_b[10:], g711.ulaw_decode), 440)
        samples = []
        for d in at_a[10:]:
            samples.extend(party.decode(d[12:]))
        heard = peak_frequency(samples[:9600:6], 8000)
        self.assertTrue(abs(heard - 880) <= TOLERANCE, "880 Hz arrived as %d Hz" % heard)

    def assertPacketised(self, packets, payload, ticks):
        """Every packet ``payload`` bytes long (Opus: ``ticks`` long), the
        timestamps ``ticks`` apart, the sequence numbers one apart."""
        heads = [header(d) for d in packets]
        if payload is not None:
            self.assertEqual({len(d) - 12 for d in packets}, {payload})
        self.assertEqual({(h2["ts"] - h1["ts"]) & 0xFFFFFFFF for h1, h2 in zip(heads, heads[1:])},
                         {ticks})
        self.assertEqual({(h2["seq"] - h1["seq"]) & 0xFFFF for h1, h2 in zip(heads, heads[1:])},
                         {1})

    @defer.inlineCallbacks
    def test_pcmu_caller_pcma_callee_ptime(self):
        """Different ptimes: the offer's ng ``ptime`` 40 towards the callee,
        the caller's own a=ptime:20; the caller sends 20 ms PCMU, the
        callee 40 ms PCMA.  Each gets its ptime (PCMA 320 bytes 320 apart,
        PCMU 160 bytes 160 apart), with the other's tone."""
        yield self.start()
        a, b = self.party(), self.party()
        offer = yield self.ng.request(
            command="offer", call_id="t3", from_tag="ft", ptime=40,
            sdp=sdp(a.port, extra="a=ptime:20\r\n").replace("RTP/AVP 0 8", "RTP/AVP 0"),
            codec={"transcode": ["PCMA"]})
        self.assertIn("a=ptime:40\r\n", offer["sdp"])
        answer = yield self.ng.request(
            command="answer", call_id="t3", from_tag="ft", to_tag="tt",
            sdp=sdp(b.port).replace("RTP/AVP 0 8", "RTP/AVP 8"))
        self.assertIn("a=ptime:20\r\n", answer["sdp"])
        from_a = g711_packets(g711.ulaw_encode, 440, 0, 0x0A0A0A0A)
        samples = tone(880, 8000, 320 * PACKETS // 2, 12000)
        pcm = struct.pack("<%dh" % len(samples), *samples)
        from_b = [rtp(300 + i, 320 * i, g711.alaw_encode(pcm[640 * i:640 * (i + 1)]), pt=8,
                      ssrc=0x0B0B0B0B) for i in range(PACKETS // 2)]
        sends = []
        for i, pa in enumerate(from_a):
            sends.append(lambda pa=pa: a.transport.write(pa, ("127.0.0.1", port_of(answer["sdp"]))))
            if i % 2:
                pb = from_b[i // 2]
                sends.append(lambda pb=pb: b.transport.write(pb, ("127.0.0.1",
                                                                 port_of(offer["sdp"]))))
        yield self.pace(sends)
        yield wait_for(lambda: len(a.received) >= PACKETS - 5
                       and len(b.received) >= PACKETS // 2 - 3, timeout=10)
        at_b = [d for d, _ in b.received]
        at_a = [d for d, _ in a.received]
        self.assertEqual({header(d)["pt"] for d in at_b}, {8})
        self.assertEqual({header(d)["pt"] for d in at_a}, {0})
        self.assertPacketised(at_b, 320, 320)
        self.assertPacketised(at_a, 160, 160)
        self.assertTone(decoded(at_b[5:], g711.alaw_decode), 440)
        self.assertTone(decoded(at_a[10:], g711.ulaw_decode), 880)

    @defer.inlineCallbacks
    def test_opus_caller_pcmu_callee_ptime(self):
        """The browser's case with ptimes: the caller sends 20 ms Opus and
        takes 40 ms (``ptime-reverse``), the callee sends 20 ms PCMU and
        takes 30 ms (``ptime``): 40 ms Opus (1920 samples, FFmpeg decodes
        the 880 Hz tone) and 30 ms PCMU (240 bytes, the 440 Hz tone at
        20 dB or better)."""
        if av is None:
            raise self.skipTest("PyAV (aiortc's dependency) is not installed")
        yield self.start()
        a, b = self.party(), self.party()
        offer = yield self.ng.request(
            command="offer", call_id="t4", from_tag="ft", ptime=30,
            sdp=sdp(a.port).replace("RTP/AVP 0 8", "RTP/AVP 111")
            + "a=rtpmap:111 opus/48000/2\r\n", flags=["codec-transcode-PCMU"],
            **{"ptime-reverse": 40})
        self.assertIn("a=ptime:30\r\n", offer["sdp"])
        answer = yield self.ng.request(
            command="answer", call_id="t4", from_tag="ft", to_tag="tt",
            sdp=sdp(b.port).replace("RTP/AVP 0 8", "RTP/AVP 0"))
        self.assertIn("a=ptime:40\r\n", answer["sdp"])
        party = OpusParty()
        yield self.play_opus_pcmu(party, a, b, offer, answer)
        yield wait_for(lambda: len(a.received) >= PACKETS // 2 - 3
                       and len(b.received) >= PACKETS * 2 // 3 - 3, timeout=10)
        at_b = [d for d, _ in b.received]
        at_a = [d for d, _ in a.received]
        self.assertEqual({header(d)["pt"] for d in at_b}, {0})
        self.assertEqual({header(d)["pt"] for d in at_a}, {111})
        self.assertPacketised(at_b, 240, 240)
        self.assertPacketised(at_a, None, 1920)
        self.assertTone(decoded(at_b[7:], g711.ulaw_decode), 440)
        samples = []
        for d in at_a[5:]:
            pcm = party.decode(d[12:])
            self.assertEqual(len(pcm), 1920)
            samples.extend(pcm)
        heard = peak_frequency(samples[:9600:6], 8000)
        self.assertTrue(abs(heard - 880) <= TOLERANCE, "880 Hz arrived as %d Hz" % heard)

    @defer.inlineCallbacks
    def test_plain_call_relayed_unchanged(self):
        """No codec flags, a shared codec: the packets arrive as they were sent."""
        yield self.start()
        a, b, offer_sdp, answer_sdp = yield self.call({}, "0")
        packets = g711_packets(g711.ulaw_encode, 440, 0, 0x0A0A0A0A)[:5]
        for p in packets:
            a.transport.write(p, ("127.0.0.1", port_of(answer_sdp)))
        yield wait_for(lambda: len(b.received) >= 5)
        self.assertEqual([d for d, _ in b.received], packets)


    @defer.inlineCallbacks
    def test_plain_call_ptime_repacketised(self):
        """No codec flags, ng ``ptime`` 40 on the offer: the caller's 20 ms
        PCMU reaches the callee as 40 ms packets of the same bytes (as
        rtpengine 10.5 does); the callee's reach the caller as sent."""
        yield self.start()
        a, b, offer_sdp, answer_sdp = yield self.call({"ptime": 40}, "0")
        self.assertIn("a=ptime:40\r\n", offer_sdp)
        packets = g711_packets(g711.ulaw_encode, 440, 0, 0x0A0A0A0A)[:10]
        for p in packets:
            a.transport.write(p, ("127.0.0.1", port_of(answer_sdp)))
        back = g711_packets(g711.ulaw_encode, 880, 0, 0x0B0B0B0B)[:3]
        for p in back:
            b.transport.write(p, ("127.0.0.1", port_of(offer_sdp)))
        yield wait_for(lambda: len(b.received) >= 5 and len(a.received) >= 3)
        at_b = [d for d, _ in b.received]
        self.assertPacketised(at_b, 320, 320)
        self.assertEqual({header(d)["ssrc"] for d in at_b}, {0x0A0A0A0A})
        self.assertEqual(b"".join(d[12:] for d in at_b), b"".join(p[12:] for p in packets))
        self.assertEqual([d for d, _ in a.received], back)


class TranscodeByNgWorkerTests(TranscodeByNgTests):
    """The same with the media in two worker processes (``num-threads``)."""

    options = {"num_threads": 2}
