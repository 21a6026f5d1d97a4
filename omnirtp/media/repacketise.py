"""Repacketising a stream that is not transcoded to the ptime its receiver
was given by the ng ``ptime`` / ``ptime-reverse`` keys, as rtpengine 10.5
does for such calls (asked of it on loopback: ``ptime: 40`` on the offer of
a PCMU call without any codec operation gives the answerer 40 ms packets
for the offerer's 20 ms).

Only codecs whose payload is one byte per RTP clock tick can be cut and
joined without decoding: PCMU (0), PCMA (8) and G.722 (9), by their
static payload types.  Their payloads are joined into packets of the
receiver's ptime (or a longer packet cut into several); anything else (a
dynamic payload type such as Opus or telephone-event, a header with CSRC,
an extension or padding) passes as it came, after what is held.  The
stream keeps the sender's SSRC and timestamps (a packet's timestamp is
that of its first byte); sequence numbers are the step's own, from the
sender's first one, one per packet sent.  What is held is less than one
packet; a change of payload type or SSRC, or a timestamp that does not
follow on (loss, a new talkspurt), sends it first as a shorter packet.
Nothing here raises or logs; the RTCP passes.
"""

import struct

from zope.interface import implementer

from omnirtp.interfaces import IPacketTransform

_HEADER = struct.Struct(">BBHII")
_SEQ = struct.Struct(">H")

#: static payload types whose payload is one byte per clock tick, and
#: their ticks per millisecond (RFC 3551: PCMU, PCMA, G.722)
BYTE_CODECS = {0: 8, 8: 8, 9: 8}


@implementer(IPacketTransform)
class Repacketiser:
    """The ``middle`` step of a socket whose media goes, untranscoded, to a
    party that takes ``ptime`` ms packets (see the module docstring)."""

    name = "repacketise"
    #: several packets (or none) for one: see IPacketTransform
    fan_out = True

    def __init__(self, ptime):
        self.ptime = ptime
        self._seq = None
        self._held = b""
        self._pt = 0
        self._marker = 0
        self._ts = 0
        self._ssrc = 0
        self._next_ts = 0
        self.joined = 0
        self.split = 0
        self.passed = 0
        self.sent = 0

    def _packet(self, payload):
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        ts = self._ts
        self._ts = (ts + len(payload)) & 0xFFFFFFFF
        marker = self._marker
        self._marker = 0
        self.sent += 1
        return _HEADER.pack(0x80, marker | self._pt, seq, ts, self._ssrc) + payload

    def rtp(self, data):
        if len(data) < 12:
            return None
        b0 = data[0]
        b1 = data[1]
        pt = b1 & 0x7F
        if self._seq is None:
            self._seq = (data[2] << 8) | data[3]
        per_ms = BYTE_CODECS.get(pt) if b0 == 0x80 else None
        held = self._held
        if per_ms is None:
            # not ours to cut: after what is held, as it came (our sequence)
            self.passed += 1
            first = None
            if held:
                self._held = b""
                first = self._packet(held)
            seq = self._seq
            self._seq = (seq + 1) & 0xFFFF
            self.sent += 1
            packet = data[:2] + _SEQ.pack(seq) + data[4:]
            return packet if first is None else (first, packet)
        _, _, _, ts, ssrc = _HEADER.unpack_from(data)
        payload = data[12:]
        frame = self.ptime * per_ms
        out = []
        if held and (pt != self._pt or ssrc != self._ssrc or ts != self._next_ts):
            out.append(self._packet(held))
            held = b""
        if held:
            held += payload
            self.joined += 1
        else:
            self._pt = pt
            self._ssrc = ssrc
            self._ts = ts
            self._marker = b1 & 0x80
            if len(payload) == frame and not out:
                # already the receiver's ptime: our sequence number only
                self._next_ts = (ts + frame) & 0xFFFFFFFF
                return self._packet(payload)
            held = payload
        self._next_ts = (ts + len(payload)) & 0xFFFFFFFF
        if len(held) > frame:
            self.split += 1
        while len(held) >= frame:
            out.append(self._packet(held[:frame]))
            held = held[frame:]
        self._held = held
        return tuple(out)

    def rtcp(self, data):
        return data

    def counters(self):
        return {"joined": self.joined, "split": self.split, "passed": self.passed,
                "sent": self.sent}
