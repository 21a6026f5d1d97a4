"""aiortc offering or accepting Opus only <-> a SIP phone with only PCMU,
only PCMA or only G.722, through the whole omnirtp daemon, signalled over
ng with the flag strings Kamailio 5.6 sends (``test_webrtc_e2e``'s set-up
and flags, plus ``codec-transcode-<codec>`` on the offer).

(a) browser calls phone: aiortc's offer (Opus only) goes out with
    ``codec-transcode-PCMU`` (PCMA, G722); the phone answers its one codec
    (and telephone-event/8000 when offered).
(b) phone calls browser: the phone offers its one codec and
    telephone-event/8000 with ``codec-mask-<codec> codec-mask-telephone-event
    codec-transcode-opus codec-accept-telephone-event`` (aiortc is offered
    Opus alone; the phone keeps its telephone-event); aiortc answers Opus.
    (Without masking telephone-event, aiortc is offered telephone-event/48000
    and does not answer it, but the engine's ``codecs_send`` towards it is
    the offered list, so omnirtp takes aiortc for a sender of events and
    does not detect its in-band digits.)

aiortc sends a 440 Hz tone, the phone a 1 kHz tone.  The phone must get
440 Hz (+-15 Hz) with a tone SNR of at least 20 dB in its own codec (the
G.711 / G.722 leg), aiortc 1 kHz (+-15 Hz) out of its Opus decoder.

DTMF, as far as the real stacks allow: aiortc (1.16) has no telephone-event
at all (neither sends nor accepts RFC 4733), so no event can arrive at its
side as telephone-event RTP.  What is checked instead, both ways:
- phone -> browser: the phone sends digit 5 as telephone-event (PT 101);
  the browser leg has none, so omnirtp plays it as its DTMF tone pair in the
  Opus audio; libspandsp's detector finds exactly "5" in what aiortc
  decoded;
- browser -> phone: aiortc's track plays digit 7 as a tone pair in its
  audio (what a browser's RTCDTMFSender does when it has no telephone-event);
  omnirtp detects it in the decoded Opus and the phone receives digit 7 as
  telephone-event RTP on its telephone-event PT (marker on the first, the
  end bit on the last).  Not with G.722: the transcoder detects DTMF only
  in audio it decodes at 8 kHz, and Opus -> G.722 runs at 16 kHz.
Case (a) needs telephone-event offered to the phone although aiortc has
none: the offer also carries ``codec-transcode-telephone-event``.
"""

import math
import struct

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from omnirtp.codecs import g711
from omnirtp.codecs.dtmf import DtmfDetector
from omnirtp.test import corpus
from omnirtp.test.integration import aiortc_peer
from omnirtp.test.integration.aiortc_peer import PTIME, Browser, ToneTrack, attribute
from omnirtp.test.integration.peers import listen_party
from omnirtp.test.integration.test_daemon import wait_for
from omnirtp.test.integration.test_transcode_udp import peak_frequency
from omnirtp.test.integration import test_webrtc_e2e as e2e
from omnirtp.test.integration.test_webrtc_e2e import (
    HOST, SIP_TO_BROWSER_OFFER, formats, loopback_only, media)
from omnirtp.test.test_codecs import tone, tone_fit

try:
    import av
    from aiortc import RTCRtpSender
except ImportError:  # pragma: no cover - the test extra installs aiortc
    av = None

BROWSER_TONE = 440
PHONE_TONE = 1000
TOLERANCE = 15
TE = 101
PHONE_DIGIT = 5   # sent by the phone as telephone-event
BROWSER_DIGIT = 7  # played by aiortc as a tone pair
DTMF_PAIRS = {5: (770, 1336), 7: (852, 1209)}
# packets (20 ms) before the digits, of digits, in all
DIGIT_AT, DIGIT_PACKETS, TOTAL = 100, 10, 150


class DtmfToneTrack(ToneTrack):
    """aiortc's 440 Hz tone with ``digit``'s DTMF pair in its place for the
    frames DIGIT_AT .. DIGIT_AT + DIGIT_PACKETS (what a browser does with
    DTMF when the other side has no telephone-event)."""

    def __init__(self, frequency, digit):
        super().__init__(frequency)
        self.digit = digit

    async def recv(self):
        frame = await super().recv()
        index = frame.pts // aiortc_peer.SAMPLES
        if DIGIT_AT <= index < DIGIT_AT + DIGIT_PACKETS:
            low, high = DTMF_PAIRS[self.digit]
            rate = aiortc_peer.RATE
            samples = [int(5000 * math.sin(2 * math.pi * low * (frame.pts + i) / rate))
                       + int(5000 * math.sin(2 * math.pi * high * (frame.pts + i) / rate))
                       for i in range(aiortc_peer.SAMPLES)]
            frame.planes[0].update(struct.pack("<%dh" % len(samples), *samples))
        return frame


class OpusBrowser(Browser):
    """aiortc whose audio transceiver prefers Opus alone (offers and accepts
    nothing else) and whose tone carries a DTMF digit."""

    def __init__(self, frequency):
        super().__init__(frequency)
        self.track = DtmfToneTrack(frequency, BROWSER_DIGIT)

    def _prefer_pcmu(self, transceiver):
        transceiver.setCodecPreferences(
            [c for c in RTCRtpSender.getCapabilities("audio").codecs
             if c.mimeType.lower() == "audio/opus"])

    async def answer(self, offer):
        # Browser.answer with our track
        self._connection()
        from aiortc import RTCSessionDescription
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        self.pc.addTrack(self.track)
        for transceiver in self.pc.getTransceivers():
            self._prefer_pcmu(transceiver)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    async def offer(self):
        self._connection()
        transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
        self._prefer_pcmu(transceiver)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp


class G711:
    def __init__(self, name):
        self.name = name
        self.pt = {"PCMU": 0, "PCMA": 8}[name]
        self.rate = 8000
        self._encode = g711.ulaw_encode if name == "PCMU" else g711.alaw_encode
        self._decode = g711.ulaw_decode if name == "PCMU" else g711.alaw_decode

    def encode(self, samples):
        return self._encode(struct.pack("<%dh" % len(samples), *samples))

    def decode(self, payload):
        pcm = self._decode(payload)
        return list(struct.unpack("<%dh" % (len(pcm) // 2), pcm))


class G722:
    """FFmpeg's G.722 (PyAV): 16 kHz PCM, RTP clock 8000 (RFC 3551)."""
    name, pt, rate = "G722", 9, 16000

    def __init__(self):
        self.encoder = av.CodecContext.create("g722", "w")
        self.encoder.sample_rate = 16000
        self.encoder.layout = "mono"
        self.encoder.format = "s16"
        self.encoder.open()
        self.decoder = av.CodecContext.create("g722", "r")
        self.decoder.sample_rate = 16000
        self.decoder.layout = "mono"
        self.decoder.open()
        self.pts = 0

    def encode(self, samples):
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(samples))
        frame.sample_rate = 16000
        frame.pts = self.pts
        self.pts += len(samples)
        frame.planes[0].update(struct.pack("<%dh" % len(samples), *samples))
        return b"".join(bytes(p) for p in self.encoder.encode(frame))

    def decode(self, payload):
        out = []
        for frame in self.decoder.decode(av.Packet(payload)):
            data = bytes(frame.planes[0])[:frame.samples * 2]
            out.extend(struct.unpack("<%dh" % frame.samples, data))
        return out


def phone_sdp(port, codec, te=TE):
    rtpmap = "%s/8000" % codec.name
    return ("v=0\r\no=phone 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP %d %d\r\na=rtpmap:%d %s\r\n"
            "a=rtpmap:%d telephone-event/8000\r\na=fmtp:%d 0-16\r\n"
            "a=rtcp:%d\r\na=sendrecv\r\n"
            % (HOST, HOST, port, codec.pt, te, codec.pt, rtpmap, te, te, port))


def rtp(pt, seq, ts, payload, marker=False, ssrc=0x55005500):
    return (struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                        ts & 0xFFFFFFFF, ssrc) + payload)


class OpusCalls(TestCase):
    """The set-up and the two call flows; the tests are in the classes below."""
    timeout = 90
    num_threads = 0

    # the daemon and ng client of test_webrtc_e2e (not imported by name:
    # trial would run its tests here too)
    setUp = e2e.BrowserPhoneTests.setUp
    kamailio = e2e.BrowserPhoneTests.kamailio

    def codec(self, name):
        if av is None:
            raise AssertionError("aiortc/PyAV is not installed (setup.cfg's test extra)")
        return G722() if name == "G722" else G711(name)

    def phone_sender(self, phone, port, codec, te=TE):
        """The phone's 1 kHz tone in its codec every 20 ms, digit 5 as
        telephone-event (audio paused meanwhile) at packet DIGIT_AT."""
        samples = codec.rate // 50
        seq = [0]

        def send():
            i = seq[0]
            seq[0] += 1
            if DIGIT_AT <= i < DIGIT_AT + DIGIT_PACKETS + 2:
                k = min(i - DIGIT_AT, DIGIT_PACKETS - 1)
                end = i - DIGIT_AT >= DIGIT_PACKETS - 1
                payload = struct.pack("!BBH", PHONE_DIGIT, (0x80 if end else 0) | 10,
                                      160 * (k + 1))
                phone.send(rtp(te, i, 160 * DIGIT_AT, payload, marker=i == DIGIT_AT),
                           (HOST, port))
                return
            pcm = tone(PHONE_TONE, codec.rate, samples * (i + 1), 10000)[samples * i:]
            phone.send(rtp(codec.pt, i, 160 * i, codec.encode(pcm)), (HOST, port))

        sender = task.LoopingCall(send)
        sender.start(PTIME)
        self.addCleanup(lambda: sender.running and sender.stop())
        return sender

    @defer.inlineCallbacks
    def check(self, browser, phone, codec, te=TE):
        def received(pt):
            return [d for d, _ in phone.received if len(d) > 12 and d[1] & 0x7F == pt]

        # the phone: aiortc's 440 Hz in its own codec, then digit 7 as events
        yield wait_for(lambda: len(received(codec.pt)) >= 60, timeout=30, step=0.05)
        audio = received(codec.pt)
        # every packet through the decoder (G.722's state), the tone from the 20th on
        decoded = [codec.decode(packet[12:]) for packet in audio[:60]]
        samples = [s for block in decoded[20:] for s in block]
        step = codec.rate // 8000
        heard = peak_frequency(samples[:1600 * step:step], 8000)
        self.assertTrue(abs(heard - BROWSER_TONE) <= TOLERANCE,
                        "aiortc's %d Hz arrived as %d Hz" % (BROWSER_TONE, heard))
        snr, _ = tone_fit(samples, BROWSER_TONE, codec.rate)
        self.assertGreaterEqual(snr, 20.0, "tone SNR at the phone")

        if codec.rate == 8000:
            # (the transcoder detects DTMF only in audio decoded at 8 kHz:
            # Opus -> G.722 runs at 16 kHz, docs/codecs.md "Not done")
            yield wait_for(lambda: any(d[13] & 0x80 for d in received(te)), timeout=30,
                           step=0.05)
            events = received(te)
            self.assertEqual({d[12] for d in events}, {BROWSER_DIGIT})
            self.assertTrue(events[0][1] & 0x80, "marker on the first event")
            self.assertEqual(len({d[4:8] for d in events}), 1, "one timestamp for the event")
            self.assertEqual(events[-1][13] & 0x80, 0x80, "the end bit on the last")

        # aiortc: the phone's 1 kHz out of Opus (48 kHz), then digit 5 as tones
        yield wait_for(lambda: len(browser.samples) >= 48000 * (DIGIT_AT + 25) // 50,
                       timeout=30, step=0.05)
        window = browser.samples[9600:19200]
        heard = peak_frequency(window[::6], 8000)
        self.assertTrue(abs(heard - PHONE_TONE) <= TOLERANCE,
                        "the phone's %d Hz arrived in aiortc as %d Hz" % (PHONE_TONE, heard))
        detector = DtmfDetector()
        digits = []
        pcm = struct.pack("<%dh" % (len(browser.samples) // 6),
                          *browser.samples[:len(browser.samples) // 6 * 6:6])
        for i in range(0, len(pcm), 320):
            digits.extend(e for e in detector.process(pcm[i:i + 320]) if e is not None)
        detector.close()
        self.assertEqual(digits, [PHONE_DIGIT])

    @defer.inlineCallbacks
    def browser_calls_phone(self, name):
        codec = self.codec(name)
        call_id = "opus-browser-calls-%s-%d" % (name, self.num_threads)
        phone = listen_party(self)
        browser = OpusBrowser(BROWSER_TONE)
        self.addCleanup(lambda: self.loop.run(browser.close()))

        offer = yield self.loop.run(browser.offer())
        offer, removed = loopback_only(offer)
        self.assertEqual(removed, 0, offer)
        self.assertEqual(formats(offer), ["96"])
        self.assertEqual(attribute(offer, "rtpmap"), ["96 opus/48000/2"])
        flags = (corpus.KAMAILIO_BROWSER_TO_SIP[0] + " codec-transcode-%s"
                 " codec-transcode-telephone-event" % name)
        reply = yield self.kamailio(flags, "offer", call_id, sdp=offer)
        self.assertEqual(reply["result"], "ok", reply)
        to_phone = reply["sdp"]
        proto, port = media(to_phone)
        self.assertEqual(proto, "RTP/AVP")
        self.assertEqual(formats(to_phone)[:2], ["96", str(codec.pt)], to_phone)
        [te] = [int(line.split()[0]) for line in attribute(to_phone, "rtpmap")
                if line.endswith("telephone-event/8000")]

        reply = yield self.kamailio(corpus.KAMAILIO_BROWSER_TO_SIP[1], "answer", call_id,
                                    "tt-" + call_id, sdp=phone_sdp(phone.port, codec, te))
        self.assertEqual(reply["result"], "ok", reply)
        to_browser = reply["sdp"]
        self.assertEqual(media(to_browser)[0], "UDP/TLS/RTP/SAVPF")
        self.assertEqual(formats(to_browser), ["96"], to_browser)
        yield self.loop.run(browser.accept(to_browser))

        self.phone_sender(phone, port, codec, te)
        yield self.check(browser, phone, codec, te)

    @defer.inlineCallbacks
    def phone_calls_browser(self, name):
        codec = self.codec(name)
        call_id = "opus-phone-calls-%s-%d" % (name, self.num_threads)
        phone = listen_party(self)
        browser = OpusBrowser(BROWSER_TONE)
        self.addCleanup(lambda: self.loop.run(browser.close()))

        flags = (SIP_TO_BROWSER_OFFER + " codec-mask-%s codec-mask-telephone-event"
                 " codec-transcode-opus codec-accept-telephone-event" % name)
        offer = yield self.kamailio(flags, "offer", call_id, sdp=phone_sdp(phone.port, codec))
        self.assertEqual(offer["result"], "ok", offer)
        to_browser = offer["sdp"]
        self.assertEqual(media(to_browser)[0], "RTP/SAVPF")
        self.assertIn("opus/48000/2", to_browser)

        answer = yield self.loop.run(browser.answer(to_browser))
        answer, removed = loopback_only(answer)
        self.assertEqual(removed, 0, answer)
        [opus] = [line.split()[0] for line in attribute(answer, "rtpmap")
                  if line.endswith("opus/48000/2")]
        self.assertEqual(formats(answer), [opus])
        reply = yield self.kamailio(corpus.KAMAILIO_SIP_TO_BROWSER[1], "answer", call_id,
                                    "tt-" + call_id, sdp=answer)
        self.assertEqual(reply["result"], "ok", reply)
        to_phone = reply["sdp"]
        proto, port = media(to_phone)
        self.assertEqual(proto, "RTP/AVP")
        self.assertEqual(formats(to_phone), [str(codec.pt), str(TE)], to_phone)

        self.phone_sender(phone, port, codec)
        yield self.check(browser, phone, codec)



class PcmuTests(OpusCalls):
    def test_browser_calls_pcmu_phone(self):
        return self.browser_calls_phone("PCMU")

    def test_pcmu_phone_calls_browser(self):
        return self.phone_calls_browser("PCMU")


class WorkerPoolPcmuTests(PcmuTests):
    """The same with the media in two worker processes (``num-threads``)."""
    num_threads = 2


class OtherCodecTests(OpusCalls):
    def test_browser_calls_pcma_phone(self):
        return self.browser_calls_phone("PCMA")

    def test_browser_calls_g722_phone(self):
        return self.browser_calls_phone("G722")

    def test_pcma_phone_calls_browser(self):
        return self.phone_calls_browser("PCMA")

    def test_g722_phone_calls_browser(self):
        return self.phone_calls_browser("G722")

