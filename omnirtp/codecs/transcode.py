"""The transcoding step: an ``IPacketTransform`` a socket owns as a
``middle`` step when its media needs transcoding (``"transcode": True`` in
``IMediaEngine.configure``; see CODEC-CONTRACT and docs/codecs.md).

A packet that party X sent (payload type looked up in X's ``codecs_send``)
leaves towards party Y, whose ``codecs_recv`` says what it accepts:

* a format Y accepts too (same encoding, clock rate, channels) passes with
  its payload type rewritten to Y's number;
* telephone-event (RFC 4733) is mapped to Y's telephone-event (the
  duration field rescaled if the clock rates differ), or, when Y has none,
  played as DTMF tones in Y's audio (consumed when there is no audio);
* comfort noise (RFC 3389) passes as Y's CN when Y has one, else becomes
  noise at the level it announces, encoded like the audio;
* audio Y does not accept is decoded, resampled if the two codecs share no
  PCM rate (usually they do: the codec is built at the other side's rate),
  and encoded with the first codec of Y's list that is available here;
* anything else (an unknown payload type, a malformed header) is dropped
  and counted.

Every packet out carries this step's own SSRC, a sequence number one more
than the previous one, a timestamp mapped from the sender's (in the output
clock rate, so silences and jumps keep their length) and the sender's
marker bit (also set on the first packet).  Loss of up to
:data:`MAX_CONCEAL` packets before a decoded packet is concealed (Opus:
in-band FEC from the packet that arrived, else PLC) and sent in front of
it, in the same packet; a corrupt payload is concealed (or dropped when
its length is not known) and counted.  Each packet in gives at most one
packet out, at once, unless the receiver asked for another ptime
(:meth:`Transcoder.set_ptime`): then the audio is repacketised, every
whole packet of the receiver's ptime sent as soon as its last sample has
arrived (a 40 ms packet in gives two of 20 ms, at once) and only the rest,
less than one packet, held for the next (20 ms in, 40 ms out: every
other packet in gives one out; 20 -> 30 ms: 10 ms held on average).  The
end of a DTMF digit found in the audio is sent three times.  RTCP of the transcoded leg is
not passed (its SSRCs and counts describe another stream): dropped and
counted.  In its place the engine sends, every few seconds, a sender
report for the stream this step sends (:meth:`Transcoder.sender_report`)
with a reception report block for the stream the reverse step receives
(:meth:`Transcoder.report_block`).  Nothing here raises: a failure is
counted and the packet dropped.
"""

import math
import os
import random
import struct

from zope.interface import implementer

from omnirtp.codecs._native import fmtp_int, parse_fmtp
from omnirtp.interfaces import IPacketTransform

#: most packets in a row whose loss is concealed before the next one
MAX_CONCEAL = 3

TELEPHONE_EVENT = "telephone-event"
CN = "cn"

_HEADER = struct.Struct(">BBHII")
_SR = struct.Struct(">BBHIIIIII")
_BLOCK = struct.Struct(">IIIIII")
#: seconds from 1900 (NTP) to 1970 (unix)
NTP_EPOCH = 2208988800

# per payload type actions
_PASS = 1
_DECODE = 2
_TE = 3
_TE_DROP = 4
_CN_PASS = 5
_CN_NOISE = 6
_TE_TONE = 7

#: RFC 4733 events 0-15 as DTMF frequency pairs (low, high) in Hz
DTMF = {0: (941, 1336), 1: (697, 1209), 2: (697, 1336), 3: (697, 1477), 4: (770, 1209),
        5: (770, 1336), 6: (770, 1477), 7: (852, 1209), 8: (852, 1336), 9: (852, 1477),
        10: (941, 1209), 11: (941, 1477), 12: (697, 1633), 13: (770, 1633),
        14: (852, 1633), 15: (941, 1633)}


def dtmf_tone(event, volume, start, count, rate):
    """``count`` samples (s16le) from sample ``start`` on of the DTMF tone
    of RFC 4733 ``event`` at ``volume`` (-dBm0, each of the two tones;
    0 dBm0 is 3.14 dB below a full-scale sine, G.711's reference)."""
    pair = DTMF.get(event)
    if pair is None:
        return bytes(2 * count)
    amplitude = 32767 * 10 ** ((-volume - 3.14) / 20)
    w1 = 2 * math.pi * pair[0] / rate
    w2 = 2 * math.pi * pair[1] / rate
    sin = math.sin
    values = [max(-32768, min(32767, round(amplitude * (sin(w1 * i) + sin(w2 * i)))))
              for i in range(start, start + count)]
    return struct.pack("<%dh" % count, *values)


def normalise_formats(formats, where):
    """Check a ``codecs_send`` / ``codecs_recv`` list; return it as a list
    of ``{"pt", "encoding", "clock_rate", "channels", "fmtp"}`` dicts
    (encoding lower-case, channels 1 and fmtp "" when absent).  ValueError
    for anything else."""
    if not isinstance(formats, (list, tuple)):
        raise ValueError("%s must be a list of formats, got %r" % (where, formats))
    out = []
    for fmt in formats:
        if not isinstance(fmt, dict):
            raise ValueError("%s: a format must be a dict, got %r" % (where, fmt))
        pt = fmt.get("pt")
        encoding = fmt.get("encoding")
        clock = fmt.get("clock_rate")
        channels = fmt.get("channels", 1)
        fmtp = fmt.get("fmtp", "")
        if type(pt) is not int or not 0 <= pt <= 127:
            raise ValueError("%s: payload type must be 0-127, got %r" % (where, pt))
        if not isinstance(encoding, str) or not encoding:
            raise ValueError("%s: bad encoding %r" % (where, encoding))
        if type(clock) is not int or clock <= 0:
            raise ValueError("%s: bad clock rate %r" % (where, clock))
        if channels is None:
            channels = 1
        if type(channels) is not int or channels <= 0:
            raise ValueError("%s: bad channel count %r" % (where, channels))
        if fmtp is None:
            fmtp = ""
        if not isinstance(fmtp, str):
            raise ValueError("%s: bad fmtp %r" % (where, fmtp))
        out.append({"pt": pt, "encoding": encoding.lower(), "clock_rate": clock,
                    "channels": channels, "fmtp": fmtp})
    return out


def _key(fmt):
    return (fmt["encoding"], fmt["clock_rate"], fmt["channels"])


def target_format(recv, registry):
    """The first format of ``recv`` with a usable codec (not
    telephone-event / CN), and its factory; ``(None, None)`` if none."""
    for fmt in recv:
        if fmt["encoding"] in (TELEPHONE_EVENT, CN):
            continue
        factory = registry.get(_key(fmt))
        if factory is not None:
            return fmt, factory
    return None, None


def needs_transcoding(send, recv, registry):
    """Whether some audio format of ``send`` is not in ``recv`` but could
    be transcoded to it (a helper for callers; the engine follows the
    contract's ``transcode`` key)."""
    accepted = {_key(f) for f in recv}
    target, _ = target_format(recv, registry)
    if target is None:
        return False
    return any(_key(f) not in accepted and f["encoding"] not in (TELEPHONE_EVENT, CN)
               for f in send)


def common_rate(decoder_factory, encoder_factory):
    """The highest PCM rate both factories can run at, or None."""
    rates = set(getattr(decoder_factory, "sample_rates", (decoder_factory.sample_rate,)))
    rates &= set(getattr(encoder_factory, "sample_rates", (encoder_factory.sample_rate,)))
    return max(rates) if rates else None


#: the usual spelling of encodings (formats keep them lower-case)
_SPELLING = {"opus": "opus", "speex": "speex", "ilbc": "iLBC", "telephone-event":
             "telephone-event", "amr-wb": "AMR-WB"}


def format_name(fmt):
    """``PCMU/8000``, ``opus/48000/2``: a format as rtpengine names the
    ends of a transcoding chain (the channels only when not 1)."""
    encoding = fmt["encoding"]
    encoding = _SPELLING.get(encoding) or encoding.upper()
    channels = fmt.get("channels") or 1
    if channels != 1:
        return "%s/%d/%d" % (encoding, fmt["clock_rate"], channels)
    return "%s/%d" % (encoding, fmt["clock_rate"])


class ChainStats:
    """What the transcoders of one chain (``PCMU/8000 -> PCMA/8000``) took
    in (``list transcoders``, as rtpengine 10.5 counts it): the packets
    and payload octets decoded and the samples they decoded to, since the
    engine's last one-second tick, and over the second before it.  Shared
    by every transcoder of that chain in an engine; three additions per
    decoded packet, no clock read."""

    __slots__ = ("packets", "octets", "samples", "last")

    def __init__(self):
        self.packets = self.octets = self.samples = 0
        #: (packets, octets, samples) of the last whole second, or None
        #: if nothing was decoded in it
        self.last = None

    def tick(self):
        """A second is over (the engine's timer, while it transcodes)."""
        self.last = (self.packets, self.octets, self.samples) if self.packets else None
        self.packets = self.octets = self.samples = 0

    def end(self):
        """The engine stopped transcoding: no figures, now or for the last second."""
        self.last = None
        self.packets = self.octets = self.samples = 0


class _Input:
    """What to do with one payload type X sends (a slot of the table)."""

    __slots__ = ("action", "pt", "in_clock", "out_clock", "factory", "fmt", "decoder",
                 "resampler", "rate", "frame", "stats")

    def __init__(self, action, pt=0, in_clock=8000, out_clock=8000, factory=None, fmt=None):
        self.action = action
        self.pt = pt
        self.in_clock = in_clock
        self.out_clock = out_clock
        self.factory = factory
        self.fmt = fmt
        self.decoder = None
        self.resampler = None
        self.rate = 0
        #: samples (at ``rate``) the last good packet decoded to
        self.frame = 0
        #: the ChainStats of a decoded format (None: not counted)
        self.stats = None


@implementer(IPacketTransform)
class Transcoder:
    """The step for packets X sends (``send``: X's ``codecs_send``) towards
    Y (``recv``: Y's ``codecs_recv``), both as :func:`normalise_formats`
    returns them; ``registry`` is ``omnirtp.codecs.registry()``.  ``ssrc``
    (None: random) is the SSRC of what it sends."""

    name = "transcode"

    #: its ``rtp`` may give several packets for one (a tuple: the
    #: repacketiser, the end of a detected DTMF digit sent three times) or
    #: none while it holds audio for a longer packet (see IPacketTransform)
    fan_out = True

    def __init__(self, send, recv, registry, ssrc=None, rng=None, ptime=None, chains=None):
        rng = rng if rng is not None else random.Random(os.urandom(8))
        #: ``{chain name: ChainStats}`` the decoded formats count into
        #: (the engine's, shared by its transcoders); None: not counted
        self._chains = chains
        self.send = send
        self.recv = recv
        self.ssrc = ssrc if ssrc is not None else rng.getrandbits(32)
        self._registry = registry
        self._rng = rng
        self.target, self._target_factory = target_format(recv, registry)
        #: the clock of what it sends (the target's; 8000 without one)
        self.out_clock = self.target["clock_rate"] if self.target is not None else 8000
        self._encoder = None
        self._encoder_rate = None
        self._noise = {}
        self._te_detect = None
        self._detector = None
        #: the detector's 8 kHz copy of audio decoded at another rate
        self._detect_resampler = None
        self._digit = None
        self._digit_ts = 0
        self._digit_new = False
        self._digit_end = False
        self._table = [None] * 128
        self._build_table()
        # the repacketiser (set_ptime): the receiver's ptime in ms (None:
        # each packet keeps the sender's duration), the bytes of PCM at the
        # encoder's rate one packet out holds (0: not repacketising), and
        # the audio held for the next packet: its PCM, the output timestamp
        # of its first sample, its marker bit
        self.ptime = None
        self._frame_bytes = 0
        self._frame_ticks = 0
        self._pending = b""
        self._pend_ts = 0
        self._pend_marker = 0
        self.set_ptime(ptime)
        # the output stream
        self._seq = rng.getrandbits(16)
        self._first = True
        self._in_base = None
        self._out_base = rng.getrandbits(32)
        #: what went out: packets, payload octets, the last timestamp
        self.sent = 0
        self.sent_octets = 0
        self.last_ts = self._out_base
        # the input stream: loss detection and reception statistics
        self._last_seq = None
        self._next_ts = None
        self.in_ssrc = None
        self.received = 0
        self._base_seq = 0
        self._cycles = 0
        self._expected_prior = 0
        self._received_prior = 0
        # counters
        self.passed = 0
        self.transcoded = 0
        self.concealed = 0
        self.corrupt = 0
        self.dtmf = 0
        self.dtmf_consumed = 0
        self.dtmf_tones = 0
        self.dtmf_detected = 0
        # the event being played as tones (RFC 4733 start timestamp) and
        # how much of it (in its clock) is played
        self._event_ts = None
        self._event_done = 0
        self.comfort_noise = 0
        self.unknown_pt = 0
        self.malformed = 0
        self.late = 0
        self.encode_errors = 0
        self.rtcp_dropped = 0
        self.rtcp_sent = 0

    # -- set-up (off the per-packet path) ---------------------------------

    def _build_table(self):
        recv = self.recv
        by_key = {}
        te_out = {}
        cn_out = {}
        for fmt in recv:
            by_key.setdefault(_key(fmt), fmt)
            if fmt["encoding"] == TELEPHONE_EVENT:
                te_out.setdefault(fmt["clock_rate"], fmt)
            elif fmt["encoding"] == CN:
                cn_out.setdefault(fmt["clock_rate"], fmt)
        target = self.target
        out_clock = target["clock_rate"] if target is not None else None
        # X sends no events but Y takes them (at the clock of Y's audio):
        # digits found in X's audio go to Y as events
        if target is not None and out_clock in te_out and not any(
                f["encoding"] == TELEPHONE_EVENT for f in self.send):
            self._te_detect = te_out[out_clock]
        for fmt in self.send:
            pt = fmt["pt"]
            if self._table[pt] is not None:
                continue
            encoding = fmt["encoding"]
            clock = fmt["clock_rate"]
            if encoding == TELEPHONE_EVENT:
                # prefer Y's event format at the clock of Y's audio
                out = te_out.get(out_clock) or te_out.get(clock) or next(iter(te_out.values()), None)
                if out is None:
                    # no events on Y's side: played as tones in Y's audio
                    # when there is audio to play them in
                    if target is not None and any(
                            self._registry.get(_key(f)) is not None for f in self.send
                            if f["encoding"] not in (TELEPHONE_EVENT, CN)):
                        self._table[pt] = _Input(_TE_TONE, target["pt"], clock, out_clock)
                    else:
                        self._table[pt] = _Input(_TE_DROP)
                else:
                    self._table[pt] = _Input(_TE, out["pt"], clock, out["clock_rate"])
            elif encoding == CN:
                out = cn_out.get(out_clock) or cn_out.get(clock) or next(iter(cn_out.values()), None)
                if out is not None:
                    self._table[pt] = _Input(_CN_PASS, out["pt"], clock, out["clock_rate"])
                elif target is not None:
                    self._table[pt] = _Input(_CN_NOISE, target["pt"], clock, out_clock)
            elif _key(fmt) in by_key:
                out = by_key[_key(fmt)]
                self._table[pt] = _Input(_PASS, out["pt"], clock, clock)
            elif target is not None:
                factory = self._registry.get(_key(fmt))
                if factory is not None:
                    slot = self._table[pt] = _Input(_DECODE, target["pt"], clock, out_clock,
                                                    factory, fmt)
                    if self._chains is not None:
                        name = "%s -> %s" % (format_name(fmt), format_name(target))
                        slot.stats = self._chains.get(name)
                        if slot.stats is None:
                            slot.stats = self._chains[name] = ChainStats()

    def chains(self):
        """The names of the chains this step transcodes (one per format
        of X's it decodes): ``["PCMU/8000 -> PCMA/8000"]``."""
        return ["%s -> %s" % (format_name(slot.fmt), format_name(self.target))
                for slot in self._table if slot is not None and slot.action == _DECODE]

    def _encoder_for(self, slot):
        """The encoder (built on first use, at a rate the first decoded
        format shares with it if there is one) and its rate."""
        if self._encoder is None:
            factory = self._target_factory
            rate = common_rate(slot.factory, factory) or factory.sample_rate
            self._encoder = factory.build(self.target["fmtp"], rate)
            self._encoder_rate = rate
            self._frame_setup()
        return self._encoder

    def set_ptime(self, ptime):
        """Packetise what is encoded at ``ptime`` ms (the receiver's; None
        or 0: the target format's fmtp ``ptime`` if it has one, else each
        packet keeps the sender's duration).  Opus takes multiples of
        10 ms up to 120 (rounded up to one); the others 1-120 ms.  Audio
        held for the old ptime goes out with the next packet.  Off the
        per-packet path (the engine calls it when the SDP changes)."""
        #: what was asked (the engine compares it, not the rounded ptime)
        self.ptime_asked = ptime
        if not ptime and self.target is not None:
            ptime = fmtp_int(parse_fmtp(self.target["fmtp"]), "ptime", None)
        if not ptime or type(ptime) is not int or ptime <= 0:
            ptime = None
        elif self.target is not None and self.target["encoding"] == "opus":
            ptime = min(120, -(-ptime // 10) * 10)
        else:
            ptime = min(120, ptime)
        self.ptime = ptime
        self._frame_setup()

    def _frame_setup(self):
        rate = self._encoder_rate
        if self.ptime is None or rate is None:
            self._frame_bytes = 0
            return
        self._frame_bytes = 2 * (self.ptime * rate // 1000)
        self._frame_ticks = self.ptime * self.out_clock // 1000

    def _prepare(self, slot):
        """Build the decoder (and resampler) of a payload type on its
        first packet; False if that fails (the payload type is dropped
        from then on)."""
        try:
            self._encoder_for(slot)
            rate = self._encoder_rate
            factory = slot.factory
            if rate in getattr(factory, "sample_rates", (factory.sample_rate,)):
                slot.decoder = factory.build(slot.fmt["fmtp"], rate)
                slot.rate = rate
            else:
                from omnirtp.codecs.resample import Resampler

                slot.decoder = factory.build(slot.fmt["fmtp"])
                slot.rate = slot.decoder.sample_rate
                slot.resampler = Resampler(slot.rate, rate, block=slot.rate // 50)
        except Exception:
            self._table = [None if s is slot else s for s in self._table]
            return False
        return True

    # -- the per-packet path ----------------------------------------------

    def _out_ts(self, ts, in_clock, out_clock):
        # _decode has a written-out copy of this and of _emit: keep them alike
        in_base = self._in_base
        if in_base is None:
            self._in_base = ts
            return self._out_base
        delta = (ts - in_base) & 0xFFFFFFFF
        if delta & 0x80000000:
            delta -= 0x100000000
        if in_clock != out_clock:
            delta = delta * out_clock // in_clock
        out = (self._out_base + delta) & 0xFFFFFFFF
        if not -0x10000000 < delta < 0x10000000:
            # far from the base: move it (no wrap-around errors, any jump)
            self._in_base = ts
            self._out_base = out
        return out

    def _emit(self, marker, pt, ts, payload):
        seq = self._seq = (self._seq + 1) & 0xFFFF
        if self._first:
            self._first = False
            marker = 0x80
        self.sent += 1
        self.sent_octets += len(payload)
        self.last_ts = ts
        return _HEADER.pack(0x80, marker | pt, seq, ts, self.ssrc) + payload

    def rtp(self, data):
        n = len(data)
        if n < 12:
            self.malformed += 1
            return None
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        start = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            if n < start + 4:
                self.malformed += 1
                return None
            start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
        end = n
        if b0 & 0x20:
            end -= data[-1]
        if start > end or (b0 & 0x20 and data[-1] == 0):
            self.malformed += 1
            return None
        # the input's sequence: how many packets were lost before this one
        # (-1: a duplicate or older than the newest seen)
        last = self._last_seq
        self.received += 1
        if last is None:
            lost = 0
            self._last_seq = self._base_seq = seq
            self.in_ssrc = ssrc
        else:
            lost = ((seq - last) & 0xFFFF) - 1
            if lost >= 0x7FFF:
                lost = -1
            else:
                if seq < last:
                    self._cycles += 0x10000
                self._last_seq = seq
        slot = self._table[b1 & 0x7F]
        if slot is None:
            self.unknown_pt += 1
            return None
        action = slot.action
        if action == _DECODE:
            return self._decode(slot, data, start, end, b1 & 0x80, ts, lost)
        payload = data[start:end]
        if action == _PASS:
            self.passed += 1
        elif action == _TE:
            self.dtmf += 1
            if slot.in_clock != slot.out_clock and len(payload) >= 4:
                duration = ((payload[2] << 8) | payload[3]) * slot.out_clock // slot.in_clock
                payload = payload[:2] + min(duration, 0xFFFF).to_bytes(2, "big") + payload[4:]
        elif action == _TE_DROP:
            self.dtmf_consumed += 1
            return None
        elif action == _TE_TONE:
            return self._tone_packet(slot, payload, b1 & 0x80, ts)
        elif action == _CN_PASS:
            self.comfort_noise += 1
        else:  # _CN_NOISE
            return self._noise_packet(slot, payload, b1 & 0x80, ts)
        return self._emit(b1 & 0x80, slot.pt, self._out_ts(ts, slot.in_clock, slot.out_clock),
                          payload)

    def _decode(self, slot, data, start, end, marker, ts, lost):
        if lost < 0:
            self.late += 1  # a duplicate, or older than what went out
            return None
        decoder = slot.decoder
        if decoder is None:
            if not self._prepare(slot):
                self.unknown_pt += 1
                return None
            decoder = slot.decoder
        payload = data[start:end]
        in_clock = slot.in_clock
        rate = slot.rate
        frame = slot.frame
        start_ts = ts
        hidden = None
        next_ts = self._next_ts
        if (lost and lost <= MAX_CONCEAL and next_ts is not None and frame
                and slot.resampler is None):
            samples = ((ts - next_ts) & 0xFFFFFFFF) * rate // in_clock
            if 0 < samples <= MAX_CONCEAL * frame:
                # before this packet is decoded: FEC comes from it
                hidden = decoder.conceal(samples, payload)
                start_ts = next_ts
                self.concealed += lost
        current = decoder.decode(payload)
        if not current:
            self.corrupt += 1
            if not frame:
                return None
            current = decoder.conceal(frame)
        else:
            samples = slot.frame = len(current) >> 1
            stats = slot.stats
            if stats is not None:
                stats.packets += 1
                stats.octets += end - start
                stats.samples += samples
        pcm = current if hidden is None else hidden + current
        self._next_ts = (start_ts + (len(pcm) >> 1) * in_clock // rate) & 0xFFFFFFFF
        if self._te_detect is not None:
            event = self._detect(current, rate, ts, in_clock)
            if event is not None:
                return event
        if slot.resampler is not None:
            pcm = slot.resampler.process(pcm)
        frame = self._frame_bytes
        if frame and (self._pending or len(pcm) != frame):
            # another ptime than the sender's (equal: nothing to hold, the
            # packet goes out as below)
            self.transcoded += 1
            return self._repacketise(slot.pt, start_ts, in_clock, marker, pcm)
        encoder = self._encoder
        out = encoder.encode(pcm)
        if out is None and pcm is not current:
            # the encoder takes no frame that long: this packet alone
            out = encoder.encode(current)
            start_ts = ts
        if out is None:
            self.encode_errors += 1
            return None
        self.transcoded += 1
        # self._emit(marker, slot.pt, self._out_ts(start_ts, in_clock, slot.out_clock), out)
        # written out: the per-packet path, two Python calls less
        in_base = self._in_base
        if in_base is None:
            self._in_base = start_ts
            out_ts = self._out_base
        else:
            delta = (start_ts - in_base) & 0xFFFFFFFF
            if delta & 0x80000000:
                delta -= 0x100000000
            out_clock = slot.out_clock
            if in_clock != out_clock:
                delta = delta * out_clock // in_clock
            out_ts = (self._out_base + delta) & 0xFFFFFFFF
            if not -0x10000000 < delta < 0x10000000:
                self._in_base = start_ts
                self._out_base = out_ts
        seq = self._seq = (self._seq + 1) & 0xFFFF
        if self._first:
            self._first = False
            marker = 0x80
        self.sent += 1
        self.sent_octets += len(out)
        self.last_ts = out_ts
        return _HEADER.pack(0x80, marker | slot.pt, seq, out_ts, self.ssrc) + out

    def _repacketise(self, pt, ts, in_clock, marker, pcm):
        """Audio ``pcm`` (at the encoder's rate) that starts at input
        timestamp ``ts``, packetised at the receiver's ptime: appended to
        what is held, every whole packet encoded and sent (a tuple of 0..N
        packets, or one as bytes), the rest held for the next, less than
        one packet.  A gap before ``pcm`` shorter than what the packet
        still needs is filled with silence; a longer one (or a jump back)
        sends what is held padded with silence first.  Timestamps advance
        by the packet duration from the first sample held; the marker of
        the packet that started what is held goes on its first packet."""
        out_clock = self.out_clock
        rate = self._encoder_rate
        frame = self._frame_bytes
        ts = self._out_ts(ts, in_clock, out_clock)
        pending = self._pending
        packets = []
        if pending:
            held = (len(pending) >> 1) * out_clock // rate
            gap = (ts - self._pend_ts - held) & 0xFFFFFFFF
            if gap:
                fill = 2 * (gap * rate // out_clock) if gap < 0x80000000 else frame
                if len(pending) + fill < frame:
                    pending += bytes(fill)
                else:
                    self._flush(pt, pending + bytes(frame - len(pending)), packets)
                    pending = b""
        if pending:
            self._pend_marker |= marker
            pending += pcm
        else:
            self._pend_ts = ts
            self._pend_marker = marker
            pending = pcm
        while len(pending) >= frame:
            self._flush(pt, pending[:frame], packets)
            pending = pending[frame:]
        self._pending = pending
        if len(packets) == 1:
            return packets[0]
        return tuple(packets)

    def _flush(self, pt, pcm, packets):
        """Encode one packet's worth of held audio (``pcm``) and append it
        to ``packets``; the held audio's timestamp moves on by a packet."""
        out = self._encoder.encode(pcm)
        ts = self._pend_ts
        self._pend_ts = (ts + self._frame_ticks) & 0xFFFFFFFF
        marker = self._pend_marker
        self._pend_marker = 0
        if out is None:
            self.encode_errors += 1
            return
        packets.append(self._emit(marker, pt, ts, out))

    def _detect(self, pcm, rate, ts, in_clock):
        """Run the DTMF detector over a decoded packet (``rate`` Hz; the
        detector works at 8 kHz, so other rates are resampled for it with
        libsoxr, about 12 ms of latency); while a digit sounds, an RFC 4733
        event packet for Y takes the audio packet's place (start: marker;
        the last one: the end bit).  Without libspandsp (or libsoxr when
        needed) detection is off."""
        detector = self._detector
        samples = len(pcm) >> 1
        try:
            if detector is None:
                from omnirtp.codecs.dtmf import DtmfDetector

                detector = self._detector = DtmfDetector()
            if rate != 8000:
                down = self._detect_resampler
                if down is None:
                    from omnirtp.codecs.resample import Resampler

                    down = self._detect_resampler = Resampler(rate, 8000, block=samples)
                pcm = down.process(pcm)
        except Exception:
            self._te_detect = None
            return None
        for event in detector.process(pcm):
            if event is not None:
                self._digit = event
                self._digit_ts = ts
                self._digit_new = True
                self._digit_end = False
                self.dtmf_detected += 1
            elif self._digit is not None:
                self._digit_end = True
        digit = self._digit
        if digit is None:
            return None
        te = self._te_detect
        clock = te["clock_rate"]
        duration = ((ts - self._digit_ts) & 0xFFFFFFFF) + samples * in_clock // rate
        duration = min(0xFFFF, duration * clock // in_clock)
        end = self._digit_end
        payload = bytes((digit, 0x8A if end else 0x0A)) + duration.to_bytes(2, "big")
        marker = 0x80 if self._digit_new else 0
        self._digit_new = False
        out_ts = self._out_ts(self._digit_ts, in_clock, clock)
        if end:
            # the end packet three times (RFC 4733 2.5.1.4), at once
            self._digit = None
            return (self._emit(marker, te["pt"], out_ts, payload),
                    self._emit(0, te["pt"], out_ts, payload),
                    self._emit(0, te["pt"], out_ts, payload))
        return self._emit(marker, te["pt"], out_ts, payload)

    def _any_encoder(self):
        """The encoder, built for the first decodable format if no audio
        has come yet; None if there is none."""
        encoder = self._encoder
        if encoder is None:
            for other in self._table:
                if other is not None and other.action == _DECODE:
                    try:
                        encoder = self._encoder_for(other)
                    except Exception:
                        encoder = None
                    break
        return encoder

    def _tone_packet(self, slot, payload, marker, ts):
        """An RFC 4733 event for a receiver without telephone-event: the
        part of its duration not played yet, as the DTMF tone pair in the
        receiver's audio (events above 15: silence).  Repeated packets
        (the end is sent three times) add nothing and are dropped."""
        encoder = self._any_encoder()
        if encoder is None or len(payload) < 4:
            self.dtmf_consumed += 1
            return None
        duration = (payload[2] << 8) | payload[3]
        if ts != self._event_ts:
            self._event_ts = ts
            self._event_done = 0
        done = self._event_done
        rate = self._encoder_rate
        in_clock = slot.in_clock
        first = done * rate // in_clock
        count = duration * rate // in_clock - first
        if count <= 0:
            self.dtmf_consumed += 1
            return None
        self._event_done = duration
        pcm = dtmf_tone(payload[0], payload[1] & 0x3F, first, count, rate)
        if self._frame_bytes:
            self.dtmf_tones += 1
            return self._repacketise(slot.pt, (ts + done) & 0xFFFFFFFF, in_clock,
                                     marker if not done else 0, pcm)
        out = encoder.encode(pcm)
        if out is None:
            self.encode_errors += 1
            return None
        self.dtmf_tones += 1
        return self._emit(marker if not done else 0, slot.pt,
                          self._out_ts((ts + done) & 0xFFFFFFFF, in_clock, slot.out_clock), out)

    def _noise_packet(self, slot, payload, marker, ts):
        """20 ms of noise at the level a CN packet announces, encoded."""
        encoder = self._any_encoder()
        if encoder is None:
            self.unknown_pt += 1
            return None
        level = payload[0] & 0x7F if payload else 127
        pcm = self._noise.get(level)
        if pcm is None:
            pcm = self._noise[level] = self._make_noise(level, self._encoder_rate // 50)
        if self._frame_bytes:
            self.comfort_noise += 1
            return self._repacketise(slot.pt, ts, slot.in_clock, marker, pcm)
        out = encoder.encode(pcm)
        if out is None:
            self.encode_errors += 1
            return None
        self.comfort_noise += 1
        return self._emit(marker, slot.pt, self._out_ts(ts, slot.in_clock, slot.out_clock), out)

    def _make_noise(self, level, samples):
        # uniform noise with the RMS of -level dBov (0 dBov: full-scale sine RMS)
        rms = 32767 / 2 ** 0.5 * 10 ** (-level / 20)
        peak = min(32767, int(rms * 3 ** 0.5))
        rng = self._rng
        values = [rng.randint(-peak, peak) for _ in range(samples)]
        return struct.pack("<%dh" % samples, *values)

    def rtcp(self, data):
        self.rtcp_dropped += 1
        return None

    # -- RTCP generated in place of the party's (off the per-packet path) --

    def report_block(self):
        """A reception report block (RFC 3550 6.4.1) for the stream this
        step receives, or b"" before any packet: loss since the last block
        and in all, the extended highest sequence number; jitter, LSR and
        DLSR 0 (not measured)."""
        if self.in_ssrc is None:
            return b""
        highest = self._cycles + self._last_seq
        expected = highest - self._base_seq + 1
        lost = max(-0x800000, min(0x7FFFFF, expected - self.received))
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        return _BLOCK.pack(self.in_ssrc, (fraction << 24) | (lost & 0xFFFFFF),
                           highest & 0xFFFFFFFF, 0, 0, 0)

    def sender_report(self, now, rtp_ts, block=b""):
        """An RTCP SR (RFC 3550 6.4.1) for the stream this step sends:
        ``now`` unix time, ``rtp_ts`` the RTP timestamp of that instant,
        ``block`` one report block (:meth:`report_block`) or b""."""
        ntp = now + NTP_EPOCH
        seconds = int(ntp)
        fraction = int((ntp - seconds) * 4294967296.0) & 0xFFFFFFFF
        count = 1 if block else 0
        self.rtcp_sent += 1
        return _SR.pack(0x80 | count, 200, 6 + 6 * count, self.ssrc, seconds & 0xFFFFFFFF,
                        fraction, rtp_ts & 0xFFFFFFFF, self.sent & 0xFFFFFFFF,
                        self.sent_octets & 0xFFFFFFFF) + block

    def counters(self):
        return {
            "passed": self.passed,
            "transcoded": self.transcoded,
            "concealed": self.concealed,
            "corrupt": self.corrupt,
            "dtmf": self.dtmf,
            "dtmf-consumed": self.dtmf_consumed,
            "dtmf-tones": self.dtmf_tones,
            "dtmf-detected": self.dtmf_detected,
            "comfort-noise": self.comfort_noise,
            "unknown-pt": self.unknown_pt,
            "malformed": self.malformed,
            "late": self.late,
            "encode-errors": self.encode_errors,
            "rtcp-dropped": self.rtcp_dropped,
            "rtcp-sent": self.rtcp_sent,
        }


@implementer(IPacketTransform)
class RtcpTerminator:
    """The middle step of the RTCP socket of a transcoded leg: the RTCP
    the party sends describes a stream that does not reach the other party
    as it was sent, so it is not passed (dropped and counted)."""

    name = "transcode-rtcp"

    def __init__(self):
        self.rtcp_dropped = 0

    def rtp(self, data):
        self.rtcp_dropped += 1
        return None

    rtcp = rtp

    def counters(self):
        return {"rtcp-dropped": self.rtcp_dropped}
