"""Shared helpers of the aiortc tests: G.711 µ-law, tones, their frequency,
and aiortc as a browser (a tone track out, the decoded audio it receives in).

Imported by ``test_webrtc_aiortc`` (engine configured directly) and
``test_webrtc_e2e`` (the whole daemon, signalled over ng).
"""

import asyncio
import cmath
import fractions
import math
import re
import time

try:
    import av
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack
except ImportError:  # pragma: no cover - setup.cfg's test extra installs it
    RTCPeerConnection = None
    AudioStreamTrack = object

RATE = 8000
PTIME = 0.02
SAMPLES = int(RATE * PTIME)


def ulaw_encode(sample):
    """G.711 µ-law of a 16-bit sample."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = 7
    for exponent in range(7, -1, -1):
        if magnitude & (0x4000 >> (7 - exponent)):
            break
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_decode(byte):
    byte = ~byte & 0xFF
    sign, exponent, mantissa = byte & 0x80, (byte >> 4) & 0x07, byte & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    magnitude -= 0x84
    return -magnitude if sign else magnitude


def tone(frequency, start, count, amplitude=8000):
    return [int(amplitude * math.sin(2 * math.pi * frequency * (start + i) / RATE))
            for i in range(count)]


def pcmu_packet(seq, frequency, ssrc=0x44004400):
    """One 20 ms RTP packet (PT 0) of a sine at ``frequency``, sequence ``seq``."""
    payload = bytes(ulaw_encode(s) for s in tone(frequency, seq * SAMPLES, SAMPLES))
    return (bytes([0x80, 0x00]) + (seq & 0xFFFF).to_bytes(2, "big")
            + (seq * SAMPLES & 0xFFFFFFFF).to_bytes(4, "big") + ssrc.to_bytes(4, "big")
            + payload)


def send_tone(test, sock, address, frequency, start=0):
    """Send ``pcmu_packet``s of ``frequency`` from ``sock`` (a Party) to
    ``address`` every 20 ms until ``test`` ends, sequence numbers from
    ``start``; return the LoopingCall."""
    from twisted.internet import task
    seq = [start]

    def send():
        sock.send(pcmu_packet(seq[0], frequency), address)
        seq[0] += 1

    sender = task.LoopingCall(send)
    sender.start(PTIME)
    test.addCleanup(lambda: sender.running and sender.stop())
    return sender


def frequency_of(samples):
    """The frequency of a pure tone from its zero crossings (rising edges)."""
    rising = [i for i in range(1, len(samples)) if samples[i - 1] < 0 <= samples[i]]
    if len(rising) < 2:
        return 0.0
    return (len(rising) - 1) * RATE / (rising[-1] - rising[0])


def _magnitude(samples, frequency):
    step = cmath.exp(-2j * math.pi * frequency / RATE)
    total, w = 0j, 1 + 0j
    for s in samples:
        total += s * w
        w *= step
    return abs(total)


def peak_frequency(samples, low=100, high=3900):
    """The frequency (Hz, 1 Hz resolution) where the spectrum of ``samples``
    (a Fourier transform evaluated on a 10 Hz grid, then refined to 1 Hz
    around the best point) peaks between ``low`` and ``high``."""
    samples = samples[:1600]
    mean = sum(samples) / len(samples)
    samples = [s - mean for s in samples]
    best = max(range(low, high + 1, 10), key=lambda f: _magnitude(samples, f))
    return max(range(max(low, best - 10), min(high, best + 10) + 1),
               key=lambda f: _magnitude(samples, f))


class ToneTrack(AudioStreamTrack):
    """aiortc's audio source: a sine, 20 ms frames, paced in real time."""

    def __init__(self, frequency):
        super().__init__()
        self.frequency = frequency
        self.sent = 0

    async def recv(self):
        if self.sent:
            wait = self._start + self.sent / RATE - time.time()
            await asyncio.sleep(wait)
        else:
            self._start = time.time()
        samples = tone(self.frequency, self.sent, SAMPLES)
        frame = av.AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        frame.planes[0].update(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))
        frame.pts = self.sent
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        self.sent += SAMPLES
        return frame


class Browser:
    """aiortc's side, all of it on the asyncio thread (run its coroutines with
    ``AsyncioThread.run``).  ``pcmu_only``: the audio transceiver's codec
    preferences hold PCMU alone, so aiortc offers and accepts nothing else."""

    def __init__(self, frequency, pcmu_only=False):
        self.frequency = frequency
        self.pcmu_only = pcmu_only
        self.samples = []  # what aiortc decoded from the track it received
        self.pc = None

    def _connection(self):
        # no ICE servers: host candidates only
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

        @self.pc.on("track")
        def on_track(track):
            asyncio.ensure_future(self._consume(track))

    def _prefer_pcmu(self, transceiver):
        if self.pcmu_only:
            codecs = [c for c in RTCRtpSender.getCapabilities("audio").codecs
                      if c.mimeType.lower() == "audio/pcmu"]
            transceiver.setCodecPreferences(codecs)

    async def answer(self, offer):
        self._connection()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        self.pc.addTrack(ToneTrack(self.frequency))
        for transceiver in self.pc.getTransceivers():
            self._prefer_pcmu(transceiver)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    async def offer(self):
        self._connection()
        transceiver = self.pc.addTransceiver(ToneTrack(self.frequency), direction="sendrecv")
        self._prefer_pcmu(transceiver)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer):
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def _consume(self, track):
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            data = bytes(frame.planes[0])[:frame.samples * 2 * len(frame.layout.channels)]
            step = 2 * len(frame.layout.channels)
            self.samples.extend(int.from_bytes(data[i:i + 2], "little", signed=True)
                                for i in range(0, len(data), step))

    async def state(self):
        return (self.pc.iceConnectionState, self.pc.connectionState)

    async def close(self):
        if self.pc is not None:
            await self.pc.close()


def attribute(sdp, name):
    """Every value of ``a=name:...`` in ``sdp``."""
    return re.findall(r"^a=%s:(.*?)\r?$" % re.escape(name), sdp, re.M)
