"""``omnirtp-pcap2wav FILE.pcap OUT.wav``: a call recording as a WAV file.

Reads a libpcap file (omnirtp's or rtpengine's recordings, or a capture:
Ethernet, raw IP, Linux cooked), finds the RTP streams in it, decodes
each through the codec plugins (``omnirtp.codecs.registry()``) and places
its audio by RTP timestamp: a stream starts where its first packet arrived
(relative to the first packet of the file), each packet at its timestamp's
offset from the stream's lowest one, so packets that arrived out of order
land where they belong, duplicates are written once and missing packets
are silence.  Streams are grouped by direction, the local socket they were
sent to (a recording holds what each party sent to its socket): the first
direction seen is the left channel, the second the right one.  ``--mix``
writes one channel with both.  Output: 16-bit PCM at the highest sample
rate of the streams (or ``--rate``).

Payload types: the static ones of RFC 3551 (0 PCMU, 8 PCMA, 9 G.722);
dynamic ones from ``a=rtpmap`` lines of ``--sdp FILE`` (an SDP or
rtpengine's metadata file, which holds the call's SDPs; without ``--sdp``
the recording's own metadata file in its spool directory is read when it
exists) or ``--payload-type 96=opus/48000/2``.  RTCP, DTMF events, comfort noise and
payload types without a codec are skipped and counted.

The work is plain functions over bytes (:func:`convert`); :func:`main` is
the console script.
"""

import argparse
import array
import os
import re
import sys
import wave

from omnirtp.recording.pcap import PcapError, PcapReader

#: RFC 3551 static payload types -> (encoding, clock rate, channels)
STATIC = {0: ("pcmu", 8000, 1), 3: ("gsm", 8000, 1), 4: ("g723", 8000, 1),
          8: ("pcma", 8000, 1), 9: ("g722", 8000, 1), 13: ("cn", 8000, 1),
          18: ("g729", 8000, 1)}
SKIPPED_ENCODINGS = ("telephone-event", "cn")
#: a stream longer than this (a timestamp jump) is cut there
MAX_SECONDS = 4 * 3600

_RTPMAP = re.compile(r"a=rtpmap:(\d+)\s+([^/\s]+)/(\d+)(?:/(\d+))?")


class ConvertError(Exception):
    """The input cannot be converted (not a pcap, no RTP, no codec)."""


def rtpmaps(text):
    """``{pt: (encoding, clock_rate, channels)}`` of the a=rtpmap lines in ``text``."""
    out = {}
    for pt, enc, rate, ch in _RTPMAP.findall(text):
        out[int(pt)] = (enc.lower(), int(rate), int(ch) if ch else 1)
    return out


def metadata_files(pcap_path):
    """The metadata files a recording's pcap has in its spool (rtpengine's
    and omnirtp's layout: ``<dir>/pcaps/NAME.pcap`` beside
    ``<dir>/metadata/rtpengine-meta-NAME.txt``, or ``tmp/…tmp`` while the
    call runs) that exist."""
    directory = os.path.dirname(os.path.dirname(os.path.abspath(pcap_path)))
    name = os.path.basename(pcap_path)
    if name.endswith(".pcap"):
        name = name[:-len(".pcap")]
    candidates = (os.path.join(directory, "metadata", "rtpengine-meta-%s.txt" % name),
                  os.path.join(directory, "tmp", "rtpengine-meta-%s.tmp" % name))
    return [path for path in candidates if os.path.isfile(path)]


def parse_payload_type(text):
    """``96=opus/48000/2`` -> (96, ("opus", 48000, 2))."""
    m = re.fullmatch(r"(\d+)=([^/\s]+)/(\d+)(?:/(\d+))?", text.strip())
    if m is None:
        raise ValueError("payload type %r is not PT=encoding/rate[/channels]" % (text,))
    return int(m.group(1)), (m.group(2).lower(), int(m.group(3)),
                             int(m.group(4)) if m.group(4) else 1)


class Stream:
    """One RTP stream: a direction (``dst``), its source and SSRC."""

    def __init__(self, direction, ssrc, first_time):
        self.direction = direction
        self.ssrc = ssrc
        self.first_time = first_time
        self.packets = []  # (extended timestamp, seq, payload type, payload)
        self._last_ts = None
        self._ext = 0

    def add(self, ts, seq, pt, payload):
        # extend the 32-bit timestamp across wraps (relative to the previous one)
        if self._last_ts is None:
            self._ext = ts
        else:
            delta = (ts - self._last_ts) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 0x100000000
            self._ext += delta
        self._last_ts = ts
        self.packets.append((self._ext, seq, pt, payload))


def rtp_streams(packets):
    """Group the RTP packets of an iterable of pcap ``Packet`` into
    streams; returns ``(streams, counts)``, streams in order of first
    appearance, ``counts`` of what was skipped (``rtcp``, ``other``)."""
    streams = {}
    counts = {"rtp": 0, "rtcp": 0, "other": 0}
    for p in packets:
        data = p.payload
        if len(data) < 12 or data[0] >> 6 != 2:
            counts["other"] += 1
            continue
        if 192 <= data[1] <= 223:
            counts["rtcp"] += 1
            continue
        cc = data[0] & 0x0F
        offset = 12 + 4 * cc
        if data[0] & 0x10:  # header extension
            if len(data) < offset + 4:
                counts["other"] += 1
                continue
            offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
        end = len(data)
        if data[0] & 0x20:  # padding
            end -= data[-1]
        if end < offset:
            counts["other"] += 1
            continue
        counts["rtp"] += 1
        pt = data[1] & 0x7F
        seq = int.from_bytes(data[2:4], "big")
        ts = int.from_bytes(data[4:8], "big")
        ssrc = int.from_bytes(data[8:12], "big")
        key = (p.dst, p.src, ssrc)
        stream = streams.get(key)
        if stream is None:
            stream = streams[key] = Stream(p.dst, ssrc, p.time)
        stream.add(ts, seq, pt, data[offset:end])
    return list(streams.values()), counts


def _resample(samples, factor):
    """``samples`` (array of int) at ``factor`` times the rate (linear
    interpolation; factor 1: unchanged)."""
    if factor == 1:
        return samples
    n = len(samples)
    out = array.array("i", bytes(4 * int(n * factor)))
    for i in range(len(out)):
        x = i / factor
        j = int(x)
        a = samples[j] if j < n else 0
        b = samples[j + 1] if j + 1 < n else a
        out[i] = int(a + (b - a) * (x - j))
    return out


def convert(data, codecs, payload_types=None, mix=False, rate=None, log=None):
    """Decode the RTP streams of pcap ``data`` (bytes).

    ``codecs``: ``{(encoding, clock_rate, channels): ICodecFactory}`` (as
    ``omnirtp.codecs.registry()``); ``payload_types``: ``{pt: (encoding,
    clock_rate, channels)}`` for dynamic payload types.  Returns
    ``(rate, channels)``: the sample rate and a list of one (``mix``) or
    two arrays of 16-bit samples of equal length.  ``log(text)`` hears
    about skipped packets."""
    log = log or (lambda text: None)
    try:
        reader = PcapReader(data)
        streams, counts = rtp_streams(reader)
    except PcapError as e:
        raise ConvertError(str(e))
    if reader.truncated:
        log("the file ends within a packet (its writer stopped): read up to there")
    if not streams:
        raise ConvertError("no RTP packets in the file")
    pts = dict(STATIC)
    pts.update(payload_types or {})

    def factory_for(pt):
        key = pts.get(pt)
        if key is None or key[0] in SKIPPED_ENCODINGS:
            return None
        return codecs.get(key) or codecs.get((key[0], key[1], 1))

    decoded = []  # (stream, factory, {sample offset: pcm bytes})
    skipped = {}
    for stream in streams:
        by_pt = {}
        for packet in stream.packets:
            by_pt.setdefault(packet[2], []).append(packet)
        usable = [pt for pt in by_pt if factory_for(pt) is not None]
        for pt in by_pt:
            if pt not in usable:
                skipped[pt] = skipped.get(pt, 0) + len(by_pt[pt])
        if not usable:
            continue
        # the stream's audio codec: the payload type with most packets
        pt = max(usable, key=lambda p: len(by_pt[p]))
        for other in usable:
            if other != pt:
                skipped[other] = skipped.get(other, 0) + len(by_pt[other])
        factory = factory_for(pt)
        decoded.append((stream, factory, by_pt[pt]))
    for pt, n in sorted(skipped.items()):
        name = pts.get(pt, ("unknown",))[0]
        log("skipped %d packets of payload type %d (%s): no codec to decode them"
            % (n, pt, name))
    if not decoded:
        raise ConvertError("no RTP stream with a payload type a codec plugin decodes")
    out_rate = rate or max(f.sample_rate for _, f, _ in decoded)
    t0 = min(s.first_time for s in streams)
    directions = []
    for stream, _, _ in decoded:
        if stream.direction not in directions:
            directions.append(stream.direction)
    if len(directions) > 2 and not mix:
        log("%d directions in the file: the third and later are mixed into the two channels"
            % len(directions))
    nchannels = 1 if mix else 2
    tracks = [array.array("i") for _ in range(nchannels)]
    limit = MAX_SECONDS * out_rate
    for stream, factory, packets in decoded:
        channel = 0 if mix else directions.index(stream.direction) % 2
        track = tracks[channel]
        codec = factory.build("")
        scale = factory.sample_rate / float(factory.clock_rate)
        factor = out_rate / float(factory.sample_rate)
        base_ts = min(p[0] for p in packets)
        start = int(round((stream.first_time - t0) * out_rate))
        # the earliest packet by timestamp may have arrived after the first one
        first_ts = packets[0][0]
        start -= int(round((first_ts - base_ts) * scale * factor))
        start = max(start, 0)
        seen = set()
        for ext_ts, _seq, _pt, payload in sorted(packets, key=lambda p: p[0]):
            if ext_ts in seen:
                continue  # a duplicate
            seen.add(ext_ts)
            pcm = codec.decode(payload)
            if not pcm:
                continue
            samples = array.array("h")
            samples.frombytes(pcm[:len(pcm) // 2 * 2])
            if sys.byteorder == "big":
                samples.byteswap()
            samples = _resample(array.array("i", samples), factor)
            at = start + int(round((ext_ts - base_ts) * scale * factor))
            if at < 0 or at + len(samples) > limit:
                continue
            if len(track) < at + len(samples):
                track.extend(array.array("i", bytes(4 * (at + len(samples) - len(track)))))
            for i, v in enumerate(samples):
                track[at + i] += v
    length = max(len(t) for t in tracks)
    channels = []
    for track in tracks:
        if len(track) < length:
            track.extend(array.array("i", bytes(4 * (length - len(track)))))
        channels.append(array.array("h", (32767 if v > 32767 else -32768 if v < -32768 else v
                                          for v in track)))
    return out_rate, channels


def write_wav(path, rate, channels):
    """A 16-bit PCM WAV file of ``channels`` (arrays of equal length)."""
    frames = array.array("h")
    if len(channels) == 1:
        frames = channels[0]
    else:
        frames = array.array("h", bytes(2 * len(channels[0]) * len(channels)))
        for c, samples in enumerate(channels):
            frames[c::len(channels)] = samples
    if sys.byteorder == "big":
        frames = array.array("h", frames)
        frames.byteswap()
    with wave.open(path, "wb") as w:
        w.setnchannels(len(channels))
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames.tobytes())


def main(argv=None, codecs=None, stderr=None):
    stderr = stderr or sys.stderr
    parser = argparse.ArgumentParser(
        prog="omnirtp-pcap2wav",
        description="Decode the RTP streams of a call recording (pcap) into a WAV file: "
                    "one channel per direction, or one mixed channel.")
    parser.add_argument("pcap", help="the pcap file (omnirtp's, rtpengine's or a capture)")
    parser.add_argument("wav", help="the WAV file to write")
    parser.add_argument("--mix", action="store_true", help="one channel with both directions")
    parser.add_argument("--rate", type=int, default=None,
                        help="output sample rate (default: the highest of the streams)")
    parser.add_argument("--sdp", action="append", default=[], metavar="FILE",
                        help="an SDP or rtpengine metadata file: its a=rtpmap lines name "
                             "dynamic payload types (default: the recording's metadata "
                             "file in its spool, when there is one)")
    parser.add_argument("--payload-type", action="append", default=[], metavar="PT=ENC/RATE[/CH]",
                        help="a dynamic payload type, e.g. 96=opus/48000/2")
    args = parser.parse_args(argv)
    try:
        payload_types = {}
        for path in args.sdp or metadata_files(args.pcap):
            with open(path, encoding="utf-8", errors="replace") as f:
                payload_types.update(rtpmaps(f.read()))
        for text in args.payload_type:
            pt, key = parse_payload_type(text)
            payload_types[pt] = key
        if codecs is None:
            from omnirtp.codecs import registry
            codecs = registry()
        with open(args.pcap, "rb") as f:
            data = f.read()
        rate, channels = convert(data, codecs, payload_types, mix=args.mix, rate=args.rate,
                                 log=lambda text: print("omnirtp-pcap2wav: " + text, file=stderr))
        write_wav(args.wav, rate, channels)
    except (OSError, ValueError, ConvertError) as e:
        print("omnirtp-pcap2wav: %s" % (e,), file=stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
