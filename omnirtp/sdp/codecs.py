"""Codec facts and codec-list filtering (ng ``codec`` strip/offer/except/mask).

Pure SDP filtering, no media processing.  Behaviour follows rtpengine 10.5
as observed on loopback (see omnirtp/test/fixtures/corpus/codec_*.json):

* a codec spec is ``name``, ``name/rate`` or ``name/rate/channels``, matched
  case-insensitively; a missing channel count means 1 on both sides
  (``opus/48000`` does not match ``opus/48000/2``; ``g722/8000/1`` matches
  ``G722/8000``); ``all`` (or ``full``) matches everything;
* a bare payload-type number is matched only with ``match_numbers=True``
  (10.5 ignores it; newer rtpengine accepts it);
* ``strip`` and ``mask`` remove codecs from the output; ``except`` keeps
  listed codecs after ``strip``/``mask`` ``all``; ``offer`` does the same and
  moves the listed codecs to the front, in the order given;
* if nothing would be left the original list is kept.
"""

from dataclasses import dataclass

#: RFC 3551 static payload types: pt -> (encoding, clock rate, channels or None)
STATIC_PAYLOAD_TYPES = {
    0: ("PCMU", 8000, None), 3: ("GSM", 8000, None), 4: ("G723", 8000, None),
    5: ("DVI4", 8000, None), 6: ("DVI4", 16000, None), 7: ("LPC", 8000, None),
    8: ("PCMA", 8000, None), 9: ("G722", 8000, None), 10: ("L16", 44100, "2"),
    11: ("L16", 44100, None), 12: ("QCELP", 8000, None), 13: ("CN", 8000, None),
    14: ("MPA", 90000, None), 15: ("G728", 8000, None), 16: ("DVI4", 11025, None),
    17: ("DVI4", 22050, None), 18: ("G729", 8000, None), 25: ("CelB", 90000, None),
    26: ("JPEG", 90000, None), 28: ("nv", 90000, None), 31: ("H261", 90000, None),
    32: ("MPV", 90000, None), 33: ("MP2T", 90000, None), 34: ("H263", 90000, None),
}

ALL = ("all", "full")


@dataclass(frozen=True)
class Codec:
    """One payload type of an m= line as the filter sees it."""

    pt: str
    encoding: str = None
    clock_rate: int = None
    channels: str = None

    def matches(self, spec, match_numbers=False):
        spec = spec.strip()
        if spec.lower() in ALL:
            return True
        if spec.isdigit():
            return match_numbers and spec == self.pt
        if self.encoding is None:
            return False
        parts = spec.split("/")
        if parts[0].lower() != self.encoding.lower():
            return False
        if len(parts) > 1 and parts[1]:
            if not parts[1].isdigit() or int(parts[1]) != self.clock_rate:
                return False
            want = parts[2] if len(parts) > 2 and parts[2] else "1"
            if want != (self.channels or "1"):
                return False
        return True


def codec_for(pt, rtpmaps):
    """The :class:`Codec` of format ``pt`` (str) from ``{pt: RtpMap}`` or
    the static table.  Codecs are immutable: the ones made are kept
    (:data:`_CODECS`) and handed out again."""
    rtpmap = rtpmaps.get(pt)
    if rtpmap is not None:
        key = (pt, rtpmap.encoding, rtpmap.clock_rate, rtpmap.channels)
    else:
        key = pt
    codec = _CODECS.get(key)
    if codec is not None:
        return codec
    if rtpmap is not None:
        codec = Codec(pt, rtpmap.encoding, rtpmap.clock_rate, rtpmap.channels)
    elif pt.isdigit() and int(pt) in STATIC_PAYLOAD_TYPES:
        name, rate, channels = STATIC_PAYLOAD_TYPES[int(pt)]
        codec = Codec(pt, name, rate, channels)
    else:
        codec = Codec(pt)
    if len(_CODECS) < _CODECS_MAX:
        _CODECS[key] = codec
    return codec


#: (pt, encoding, rate, channels) or pt (no rtpmap) -> its Codec (bounded:
#: payload types and encodings come from the network)
_CODECS = {}
_CODECS_MAX = 4096


@dataclass(frozen=True)
class CodecOps:
    """The ng ``codec`` dictionary's filtering parts (lists of specs)."""

    strip: tuple = ()
    mask: tuple = ()
    offer: tuple = ()
    except_: tuple = ()
    match_numbers: bool = False

    @classmethod
    def from_dict(cls, codec, flags=()):
        """Build from an ng ``codec`` dict and ``codec-strip-X``-style flag words."""
        lists = {"strip": [], "mask": [], "offer": [], "except": []}
        for key in lists:
            value = (codec or {}).get(key) or []
            if isinstance(value, (str, bytes)):
                value = [value]
            for item in value:
                item = item.decode() if isinstance(item, bytes) else item
                lists[key].extend(s for s in item.split(",") if s)
        for word in flags or ():
            for key in lists:
                prefix = "codec-%s-" % key
                if word.startswith(prefix) and len(word) > len(prefix):
                    lists[key].append(word[len(prefix):])
        return cls(tuple(lists["strip"]), tuple(lists["mask"]), tuple(lists["offer"]),
                   tuple(lists["except"]))

    def __bool__(self):
        return bool(self.strip or self.mask or self.offer or self.except_)

    def apply(self, codecs):
        """Return the filtered, reordered list of :class:`Codec`."""
        if not self:
            return list(codecs)
        removing = self.strip + self.mask
        keep_specs = self.except_ + self.offer

        def listed(codec, specs):
            return any(codec.matches(s, self.match_numbers) for s in specs)

        kept = [c for c in codecs
                if not listed(c, removing) or listed(c, keep_specs)]
        if self.offer and any(s.lower() in ALL for s in removing):
            front = []
            for spec in self.offer:
                for c in kept:
                    if c not in front and c.matches(spec, self.match_numbers):
                        front.append(c)
            kept = front + [c for c in kept if c not in front]
        if not kept:
            return list(codecs)
        return kept
