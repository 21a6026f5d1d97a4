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

DTMF as telephone-event on both legs (``*_events``: PCMU, also in two
worker processes, and G.722, both call directions): aiortc (1.16) has no
telephone-event codec, so the test does what a browser's RTCDTMFSender does
on its behalf: its SDP (aiortc's offer, or its answer) gets
telephone-event/48000 added to the text aiortc produced (PT 110 in its
offer; in its answer the PT omnirtp offered it), and the phone's SDP has
telephone-event/8000 at PT 101 (or, answering, the PT omnirtp offered it):
two different numbers, so the mapping shows.  The phone sends digits 1, 5
and # as RFC 4733 events (marker on the first packet, growing durations,
the end bit three times, one timestamp per event, audio paused meanwhile);
aiortc's DTLS transport is wrapped on the test's side only: its outgoing
Opus packets in the same places are replaced by the same events at 48 kHz
(same SSRC, sequence numbers and header extensions; the timestamp of the
event's first packet), encrypted by aiortc's own SRTP, and every RTP packet
it decrypts is recorded before aiortc drops the payload type it does not
know.  Each side must get every event on its own PT with the end bits, the
durations and the timestamps between the events in its clock (x6 or /6),
in the sequence numbers and SSRC of the audio around them.

DTMF with telephone-event on the phone's leg only (the other tests), both
ways:
- phone -> browser: the phone sends digit 5 as telephone-event (PT 101);
  the browser leg has none, so omnirtp plays it as its DTMF tone pair in the
  Opus audio; libspandsp's detector finds exactly "5" in what aiortc
  decoded;
- browser -> phone: aiortc's track plays digit 7 as a tone pair in its
  audio (what a browser's RTCDTMFSender does when it has no telephone-event);
  omnirtp detects it in the decoded Opus and the phone receives digit 7 as
  telephone-event RTP on its telephone-event PT (marker on the first, the
  end bit on the last).  With G.722 too: Opus -> G.722 is decoded at
  16 kHz, and the detector runs on an 8 kHz copy of it (libsoxr;
  docs/codecs.md).
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

# telephone-event on both legs: the browser's PT at 48 kHz (Chrome's number),
# the phone's at 8 kHz; digits 1, 5, # (event 11), each EVENT_SLOTS packets
# (EVENT_SLOTS - 3 growing durations, then the end three times), GAP audio
# packets between them, from packet DIGIT_AT of each sender on
BROWSER_TE = 110
PHONE_TE = 101
EVENTS = (1, 5, 11)
EVENT_SLOTS, GAP = 7, 5


def event_plan(start=DIGIT_AT):
    """packet index -> (event, its first index, duration in packets, end)"""
    plan = {}
    for n, event in enumerate(EVENTS):
        first = start + n * (EVENT_SLOTS + GAP)
        for k in range(EVENT_SLOTS):
            end = k >= EVENT_SLOTS - 3
            plan[first + k] = (event, first, EVENT_SLOTS - 2 if end else k + 1, end)
    return plan


def event_payload(event, units, end, samples):
    """RFC 4733 payload: ``units`` packets of ``samples`` each, volume 10."""
    return struct.pack("!BBH", event, (0x80 if end else 0) | 10, units * samples)


def with_telephone_event(sdp, pt, rate):
    """``sdp`` with telephone-event/``rate`` at ``pt`` added to its audio
    m= line (what a browser puts in the SDP it sends)."""
    lines = sdp.split("\r\n")
    [m] = [i for i, line in enumerate(lines) if line.startswith("m=audio ")]
    lines[m] += " %d" % pt
    end = m + 1
    while end < len(lines) and not lines[end].startswith("m="):
        end += 1
    last = max(i for i in range(m, end) if lines[i].startswith(("a=rtpmap:", "a=fmtp:")))
    lines[last + 1:last + 1] = ["a=rtpmap:%d telephone-event/%d" % (pt, rate),
                                "a=fmtp:%d 0-16" % pt]
    return "\r\n".join(lines)


def rtp_payload(data):
    """The payload of RTP packet ``data`` (after CSRCs and an extension)."""
    offset = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
    return data[offset:]


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
    nothing else) and whose tone carries a DTMF digit.

    With ``events``, its tone carries none; instead the browser sends
    EVENTS as telephone-event at ``te_pt`` (48 kHz) in place of its Opus
    packets DIGIT_AT on (same SSRC and sequence numbers, the timestamp of
    the event's first packet, as a browser's RTCDTMFSender does), through
    aiortc's own SRTP transport; and it keeps every RTP packet it receives
    (decrypted, before aiortc drops the telephone-event PT it does not
    know) in ``rtp_in``."""

    def __init__(self, frequency, events=False):
        super().__init__(frequency)
        self.events = events
        self.track = ToneTrack(frequency) if events else DtmfToneTrack(frequency, BROWSER_DIGIT)
        self.rtp_in = []
        self.rtp_out = []  # the telephone-event packets sent
        self.te_pt = BROWSER_TE  # the payload type of its telephone-event/48000
        self._hooked = False

    def _hook(self):
        """Wrap the DTLS transport's RTP entry and exit (this test's side only)."""
        if not self.events or self._hooked:
            return
        self._hooked = True
        transport = self.pc.getTransceivers()[0].receiver.transport
        handle, send = transport._handle_rtp_data, transport._send_rtp
        plan, state = event_plan(), {"sent": 0}

        async def handle_rtp_data(data, arrival_time_ms):
            self.rtp_in.append(data)
            await handle(data, arrival_time_ms)

        async def send_rtp(data):
            if not 192 <= data[1] <= 223:  # not RTCP
                index = state["sent"]
                state["sent"] += 1
                if index in plan:
                    event, first, units, end = plan[index]
                    if index == first:
                        state["ts"] = data[4:8]
                    payload = rtp_payload(data)
                    header = data[:len(data) - len(payload)]
                    data = (header[:1] + bytes([(0x80 if index == first else 0) | self.te_pt])
                            + header[2:4] + state["ts"] + header[8:]
                            + event_payload(event, units, end, 960))
                    self.rtp_out.append(data)
            await send(data)

        transport._handle_rtp_data = handle_rtp_data
        transport._send_rtp = send_rtp

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
        self._hook()
        return self.pc.localDescription.sdp

    async def offer(self):
        self._connection()
        transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
        self._prefer_pcmu(transceiver)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self._hook()
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

    def phone_sender(self, phone, port, codec, te=TE, events=False):
        """The phone's 1 kHz tone in its codec every 20 ms, digit 5 as
        telephone-event (audio paused meanwhile) at packet DIGIT_AT; with
        ``events``, EVENTS as event_plan says instead."""
        samples = codec.rate // 50
        seq = [0]
        plan = event_plan() if events else {}

        def send():
            i = seq[0]
            seq[0] += 1
            if i in plan:
                event, first, units, end = plan[i]
                phone.send(rtp(te, i, 160 * first, event_payload(event, units, end, 160),
                               marker=i == first), (HOST, port))
                return
            if not events and DIGIT_AT <= i < DIGIT_AT + DIGIT_PACKETS + 2:
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

        # digit 7: found in the decoded Opus (at 8 kHz, or in an 8 kHz copy of
        # audio decoded at 16 kHz for G.722), sent as events
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

    def check_events(self, packets, pt, audio_pt, samples, who):
        """``packets`` (RTP, in arrival order) hold EVENTS as event_plan sent
        them, on ``pt``, with durations and timestamps in units of
        ``samples`` per 20 ms, in the audio's sequence numbers and SSRC."""
        packets = [d for d in packets if not 192 <= d[1] <= 223]  # RTP, not RTCP
        events = [d for d in packets if d[1] & 0x7F == pt]
        self.assertEqual(len(events), len(EVENTS) * EVENT_SLOTS,
                         "%s: telephone-event packets on PT %d" % (who, pt))
        self.assertEqual({d[8:12] for d in packets}, {events[0][8:12]}, who + ": one SSRC")
        got, expected, starts = [], [], []
        for event in EVENTS:
            for k in range(EVENT_SLOTS):
                end = k >= EVENT_SLOTS - 3
                expected.append((event, end, (EVENT_SLOTS - 2 if end else k + 1) * samples,
                                 k == 0))
        for d in events:
            payload = rtp_payload(d)
            got.append((payload[0], bool(payload[1] & 0x80),
                        int.from_bytes(payload[2:4], "big"), bool(d[1] & 0x80)))
            timestamp = int.from_bytes(d[4:8], "big")
            if d[1] & 0x80:
                starts.append(timestamp)
            else:
                self.assertEqual(timestamp, starts[-1], who + ": one timestamp per event")
        self.assertEqual(got, expected, who + ": (event, end, duration, marker)")
        self.assertEqual([(b - a) & 0xFFFFFFFF for a, b in zip(starts, starts[1:])],
                         [(EVENT_SLOTS + GAP) * samples] * (len(EVENTS) - 1),
                         who + ": the events' timestamps")
        if audio_pt is None:
            return
        # the events in the audio's sequence numbers: nothing lost or doubled
        # from the first audio packet before them to the first after them
        stream = [d for d in packets if d[1] & 0x7F in (pt, audio_pt)]
        first = stream.index(events[0]) - 1
        last = stream.index(events[-1]) + 1
        self.assertGreaterEqual(first, 0, who + ": audio before the events")
        numbers = [int.from_bytes(d[2:4], "big") for d in stream[first:last + 1]]
        self.assertEqual([(b - a) & 0xFFFF for a, b in zip(numbers, numbers[1:])],
                         [1] * (len(numbers) - 1), who + ": sequence numbers")
        before = int.from_bytes(stream[first][4:8], "big")
        self.assertEqual((starts[0] - before) & 0xFFFFFFFF, samples,
                         who + ": the first event 20 ms after the audio before it")

    @defer.inlineCallbacks
    def check_both_events(self, browser, phone, codec, phone_te, browser_te):
        """telephone-event on both legs: the browser's EVENTS reach the
        phone on ``phone_te`` at 8 kHz, the phone's reach aiortc on
        ``browser_te`` at 48 kHz."""
        def received():
            return [d for d, _ in phone.received if len(d) > 12]

        def ends(packets, pt):
            return sum(1 for d in packets if d[1] & 0x7F == pt and rtp_payload(d)[1] & 0x80)

        # both ways, then one more audio packet after the last event
        yield wait_for(lambda: (ends(received(), phone_te) == 3 * len(EVENTS)
                                and received()[-1][1] & 0x7F == codec.pt), timeout=30, step=0.05)
        self.check_events(received(), phone_te, codec.pt, 160, "at the phone")

        def arrived():
            return list(browser.rtp_in)

        [opus] = {d[1] & 0x7F for d in arrived() if d[1] & 0x7F != browser_te}
        yield wait_for(lambda: (ends(arrived(), browser_te) == 3 * len(EVENTS)
                                and arrived()[-1][1] & 0x7F == opus), timeout=30, step=0.05)
        self.check_events(arrived(), browser_te, opus, 960, "at aiortc")
        # and what the browser sent was what check_events expects
        self.check_events(browser.rtp_out, browser_te, None, 960, "sent by aiortc")

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


    @defer.inlineCallbacks
    def browser_calls_phone_events(self, name):
        """(a) with telephone-event/48000 in the browser's offer."""
        codec = self.codec(name)
        call_id = "opus-te-browser-calls-%s-%d" % (name, self.num_threads)
        phone = listen_party(self)
        browser = OpusBrowser(BROWSER_TONE, events=True)
        self.addCleanup(lambda: self.loop.run(browser.close()))

        offer = yield self.loop.run(browser.offer())
        offer, removed = loopback_only(offer)
        offer = with_telephone_event(offer, BROWSER_TE, 48000)
        self.assertEqual(formats(offer), ["96", str(BROWSER_TE)])
        flags = corpus.KAMAILIO_BROWSER_TO_SIP[0] + " codec-transcode-%s" % name
        reply = yield self.kamailio(flags, "offer", call_id, sdp=offer)
        self.assertEqual(reply["result"], "ok", reply)
        to_phone = reply["sdp"]
        proto, port = media(to_phone)
        [te] = [int(line.split()[0]) for line in attribute(to_phone, "rtpmap")
                if line.endswith("telephone-event/8000")]
        self.assertNotEqual(te, BROWSER_TE)

        reply = yield self.kamailio(corpus.KAMAILIO_BROWSER_TO_SIP[1], "answer", call_id,
                                    "tt-" + call_id, sdp=phone_sdp(phone.port, codec, te))
        self.assertEqual(reply["result"], "ok", reply)
        to_browser = reply["sdp"]
        self.assertEqual(formats(to_browser), ["96", str(BROWSER_TE)], to_browser)
        self.assertIn("a=rtpmap:%d telephone-event/48000" % BROWSER_TE, to_browser)
        yield self.loop.run(browser.accept(to_browser))

        self.phone_sender(phone, port, codec, te, events=True)
        yield self.check_both_events(browser, phone, codec, te, BROWSER_TE)

    @defer.inlineCallbacks
    def phone_calls_browser_events(self, name):
        """(b) with telephone-event/8000 in the phone's offer and
        telephone-event/48000 in the browser's answer."""
        codec = self.codec(name)
        call_id = "opus-te-phone-calls-%s-%d" % (name, self.num_threads)
        phone = listen_party(self)
        browser = OpusBrowser(BROWSER_TONE, events=True)
        self.addCleanup(lambda: self.loop.run(browser.close()))

        flags = SIP_TO_BROWSER_OFFER + " codec-mask-%s codec-transcode-opus" % name
        offer = yield self.kamailio(flags, "offer", call_id,
                                    sdp=phone_sdp(phone.port, codec, PHONE_TE))
        self.assertEqual(offer["result"], "ok", offer)
        to_browser = offer["sdp"]

        answer = yield self.loop.run(browser.answer(to_browser))
        answer, removed = loopback_only(answer)
        [opus] = [line.split()[0] for line in attribute(answer, "rtpmap")
                  if line.endswith("opus/48000/2")]
        [te] = [int(line.split()[0]) for line in attribute(to_browser, "rtpmap")
                if line.endswith("telephone-event/48000")]
        self.assertNotEqual(te, PHONE_TE)
        browser.te_pt = te
        answer = with_telephone_event(answer, te, 48000)
        reply = yield self.kamailio(corpus.KAMAILIO_SIP_TO_BROWSER[1], "answer", call_id,
                                    "tt-" + call_id, sdp=answer)
        self.assertEqual(reply["result"], "ok", reply)
        to_phone = reply["sdp"]
        proto, port = media(to_phone)
        self.assertEqual(formats(to_phone), [str(codec.pt), str(PHONE_TE)], to_phone)

        self.phone_sender(phone, port, codec, PHONE_TE, events=True)
        yield self.check_both_events(browser, phone, codec, PHONE_TE, te)


class PcmuTests(OpusCalls):
    def test_browser_calls_pcmu_phone(self):
        return self.browser_calls_phone("PCMU")

    def test_pcmu_phone_calls_browser(self):
        return self.phone_calls_browser("PCMU")

    def test_browser_calls_pcmu_phone_events(self):
        return self.browser_calls_phone_events("PCMU")

    def test_pcmu_phone_calls_browser_events(self):
        return self.phone_calls_browser_events("PCMU")


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

    def test_browser_calls_g722_phone_events(self):
        """G.722: audio at 16 kHz, RTP clock (and its events) at 8000."""
        return self.browser_calls_phone_events("G722")

    def test_g722_phone_calls_browser_events(self):
        return self.phone_calls_browser_events("G722")

