"""Codec negotiation with transcoding, as rtpengine 10.5 answers it.

Plain data and functions, no I/O.  Each party's media keeps a
:class:`CodecStore`: the ordered payload types of the m= line omnirtp
gives that party (what the party may send us), with per-entry marks:

* ``for_transcoding``: we added it (``transcode``) or it needs a
  transcoder (``accept``/``consume``, supplemental codecs we synthesised);
* ``accepted``: ``accept``/``consume``/``always-transcode``: media from the
  other side is transcoded to the first accepted codec;
* the store's *touched* clock rates (or all of them): codecs of that clock
  rate were stripped, masked, added or accepted, so the supplemental codecs
  (telephone-event, CN) of that clock rate are the proxy's to manage.

The steps follow what Debian's rtpengine 10.5 answers on loopback (the
corpus cases ``codec_*`` and ``transcode_*`` in omnirtp/test/corpus.py):

offer (A offers to B; ``a`` is A's store, ``b`` B's):
    ``a`` = A's codecs, minus ``strip``, plus ``offer``/``transcode`` codecs
    A listed, ``accept``/``consume`` marked, ``mask`` touched;
    ``b`` = A's codecs minus ``strip``/``consume``/``mask``, reordered by
    ``offer``, plus ``transcode`` codecs new to A (an RFC 3551 number if the
    codec has one, else the first free number from 96), with a
    telephone-event for each new clock rate; the handlers B -> A decide
    whether B's media is transcoded; when it is, B's codecs that we cannot
    decode are dropped.
answer (B answers):
    ``b`` = B's answer codecs that were offered to B (by payload type);
    the answer to A lists, in B's order, each passthrough codec of B, or
    for a transcoded one A's codec it is transcoded to, then the
    telephone-event of that codec's clock rate from A's offer.  A
    supplemental codec of a touched clock rate is not passed through.  When
    nothing is left, the m= line has no formats (10.5 writes an empty list).

A codec is *supported* (rtpengine: has a codec definition) when a codec
factory is available for it (:func:`omnirtp.codecs.registry`), or it is
telephone-event or CN.  Only supported codecs are ever added.
"""

from dataclasses import dataclass, field, replace

from omnirtp.sdp.codecs import STATIC_PAYLOAD_TYPES

SUPPLEMENTAL = ("telephone-event", "cn")
FIRST_DYNAMIC = 96

#: how a codec named in ``transcode`` is written when added:
#: encoding (lower case) -> (rtpmap name, clock rate, channels, RFC 3551
#: payload type or None, default fmtp or None)
CODEC_DEFAULTS = {
    "pcmu": ("PCMU", 8000, 1, 0, None),
    "pcma": ("PCMA", 8000, 1, 8, None),
    "g722": ("G722", 8000, 1, 9, None),
    "opus": ("opus", 48000, 2, None, None),
    "telephone-event": ("telephone-event", 8000, 1, None, "0-15"),
    "cn": ("CN", 8000, 1, 13, None),
}


@dataclass
class PayloadType:
    """One format of an m= line."""

    pt: int
    encoding: str = None          # as written in a=rtpmap (None: unknown)
    clock_rate: int = 0
    channels: int = 1
    fmtp: str = None
    rtcp_fb: tuple = ()           # values after "a=rtcp-fb:<pt> "
    rtpmap: bool = True           # write a=rtpmap (False: unknown dynamic type)
    supported: bool = False
    for_transcoding: bool = False
    accepted: bool = False

    @property
    def key(self):
        return ((self.encoding or "").lower(), self.clock_rate, self.channels)

    @property
    def supplemental(self):
        return self.supported and (self.encoding or "").lower() in SUPPLEMENTAL

    @property
    def dtmf(self):
        return (self.encoding or "").lower() == "telephone-event"

    def names(self):
        """The lower-case names ``strip``/``offer``/... match: encoding,
        encoding/rate (/channels unless 1), encoding/rate/channels."""
        if self.encoding is None:
            return ()
        enc = self.encoding.lower()
        with_params = "%s/%d" % (enc, self.clock_rate)
        full = "%s/%d" % (with_params, self.channels)
        return (enc, full if self.channels != 1 else with_params, full)

    def same_nf(self, other):
        """rtpengine's comparison without format parameters (the payload type
        number counts)."""
        return (self.pt == other.pt and self.clock_rate == other.clock_rate
                and self.channels == other.channels
                and (self.encoding or "").lower() == (other.encoding or "").lower())

    def same(self, other):
        if not self.same_nf(other):
            return False
        if not self.supported:
            return True
        return (self.fmtp or "") == (other.fmtp or "")

    def as_dict(self):
        """The engine's format entry (CODEC-CONTRACT.md)."""
        return {"pt": self.pt, "encoding": (self.encoding or "").lower(),
                "clock_rate": self.clock_rate, "channels": self.channels,
                "fmtp": self.fmtp or ""}

    def rtpmap_value(self):
        spec = "%s/%d" % (self.encoding, self.clock_rate)
        if self.channels != 1:
            spec += "/%d" % self.channels
        return "%d %s" % (self.pt, spec)


def is_supported(encoding, clock_rate, channels, available):
    """True if ``available`` ({(enc, clock, channels): factory}) has a
    factory for the codec, or it is a supplemental one."""
    enc = (encoding or "").lower()
    if not enc:
        return False
    if enc in SUPPLEMENTAL:
        return True
    if (enc, clock_rate, channels) in available:
        return True
    # opus is one codec whatever the SDP's channel count
    return enc == "opus" and any(k[0] == "opus" and k[1] == clock_rate for k in available)


def from_section(section, available):
    """The :class:`PayloadType` list of a parsed m= section, in m= order."""
    rtpmaps = section.rtpmaps()
    fmtps = {}
    for value in section.attributes("fmtp"):
        head, _, params = (value or "").partition(" ")
        fmtps.setdefault(head, params)
    fbs = {}
    for value in section.attributes("rtcp-fb"):
        head, _, rest = (value or "").partition(" ")
        if head != "*":
            fbs.setdefault(head, []).append(rest)
    out = []
    seen = set()
    for f in section.formats:
        if not f.isdigit() or int(f) > 127 or int(f) in seen:
            continue
        seen.add(int(f))
        rtpmap = rtpmaps.get(f)
        if rtpmap is not None:
            enc, rate = rtpmap.encoding, rtpmap.clock_rate
            ch = int(rtpmap.channels) if (rtpmap.channels or "").isdigit() else 1
            has_map = True
        elif int(f) in STATIC_PAYLOAD_TYPES:
            enc, rate, chs = STATIC_PAYLOAD_TYPES[int(f)]
            ch, has_map = int(chs or 1), True
        else:
            enc, rate, ch, has_map = None, 0, 1, False
        out.append(PayloadType(int(f), enc, rate, ch, fmtps.get(f), tuple(fbs.get(f, ())),
                               has_map, is_supported(enc, rate, ch, available)))
    return out


def parse_spec(spec, available):
    """A codec named in ``transcode`` (``name[/rate[/channels[/bitrate[/ptime
    [/fmtp]]]]]``) as a new :class:`PayloadType` (pt -1), or None when the
    codec is unknown or no factory is available for it."""
    parts = spec.split("/")
    defaults = CODEC_DEFAULTS.get(parts[0].lower())
    if defaults is None:
        return None
    name, rate, channels, _, fmtp = defaults
    try:
        if len(parts) > 1 and parts[1]:
            rate = int(parts[1])
            channels = 1
        if len(parts) > 2 and parts[2]:
            channels = int(parts[2])
    except ValueError:
        return None
    if len(parts) > 5 and parts[5]:
        fmtp = parts[5]
    if not is_supported(name, rate, channels, available):
        return None
    return PayloadType(-1, name, rate, channels, fmtp, supported=True)


class CodecStore:
    """The ordered payload types of one party's m= line (see the module
    docstring), with the touched clock rates."""

    def __init__(self, codecs=()):
        self.codecs = []
        #: where added codecs go: before the first supplemental codec the
        #: store ever had (or its successor once removed), as 10.5 keeps it
        self.supp_anchor = None
        self.touched = set()
        self.all_touched = False
        self.strip_full = False
        for c in codecs:
            self.add(c)

    def __iter__(self):
        return iter(self.codecs)

    def __len__(self):
        return len(self.codecs)

    def get(self, pt):
        for c in self.codecs:
            if c.pt == pt:
                return c
        return None

    def named(self, name):
        name = name.lower()
        return [c for c in self.codecs if name in c.names()]

    def add(self, pt):
        """Append ``pt`` (a copy) at the end."""
        pt = replace(pt)
        self.codecs.append(pt)
        if self.supp_anchor is None and pt.supplemental:
            self.supp_anchor = pt

    def add_before_supplemental(self, pt):
        """Insert ``pt`` (a copy) before the supplemental codecs (the
        anchor, see ``supp_anchor``)."""
        if self.supp_anchor is None:
            self.add(pt)
            return
        for i, c in enumerate(self.codecs):
            if c is self.supp_anchor:
                self.codecs.insert(i, replace(pt))
                return

    def remove(self, pt):
        for i, c in enumerate(self.codecs):
            if c is pt:
                del self.codecs[i]
                if self.supp_anchor is pt:
                    self.supp_anchor = self.codecs[i] if i < len(self.codecs) else None
                return

    def touch(self, pt):
        if pt.supplemental:
            self.all_touched = True
        else:
            self.touched.add(pt.clock_rate)

    def is_touched(self, pt):
        return self.all_touched or pt.clock_rate in self.touched

    def copy(self):
        other = CodecStore(self.codecs)
        if self.supp_anchor is not None:
            other.supp_anchor = other.codecs[self.codecs.index(self.supp_anchor)]
        other.touched = set(self.touched)
        other.all_touched = self.all_touched
        other.strip_full = self.strip_full
        return other


# -- the store operations (rtpengine's order, see the module docstring) ------------

def populate(store, codecs, answer_only=False):
    """A fresh store from ``codecs`` (a party's SDP), carrying over the marks
    of the same payload types in ``store`` (None: a new media); with
    ``answer_only`` only payload types ``store`` had are kept."""
    new = CodecStore()
    for c in codecs:
        old = store.get(c.pt) if store is not None else None
        if answer_only and old is None:
            continue
        c = replace(c)
        if old is not None:
            c.for_transcoding, c.accepted = old.for_transcoding, old.accepted
            if c.for_transcoding:
                new.touch(c)
        new.add(c)
    return new


def populate_reuse(store, codecs, answer_only=False):
    """``reuse-codecs`` / ``no-codec-renegotiation``: the party's store keeps
    its entries (and marks, in its order) for payload types ``codecs`` still
    has, gains the new ones at the end (not with ``answer_only``) and loses
    the others."""
    new = store.copy() if store is not None else CodecStore()
    for c in codecs:
        if new.get(c.pt) is None and not answer_only:
            new.add(c)
    keep = {c.pt for c in codecs}
    for c in list(new.codecs):
        if c.pt not in keep:
            new.remove(c)
    return new


def strip(store, specs, except_=()):
    excepted = {e.lower() for e in except_}
    for spec in specs:
        low = spec.lower()
        if low in ("all", "full"):
            if low == "full":
                store.strip_full = True
            for c in list(store.codecs):
                if excepted & set(c.names()):
                    continue
                store.touch(c)
                store.remove(c)
            continue
        for c in store.named(spec):
            store.touch(c)
            store.remove(c)


def offer(store, specs, orig):
    """Re-add codecs of ``orig`` (the party's own list) that were stripped,
    in the order named, before the supplemental codecs."""
    for spec in specs:
        if store.named(spec):
            continue
        for c in orig.named(spec):
            if store.get(c.pt) is None:
                store.touch(c)
                store.add_before_supplemental(c)


def transcode(store, specs, orig, available, others=()):
    """``offer`` for codecs the party listed; codecs it did not list are
    added for transcoding (a supported one only)."""
    for spec in specs:
        if store.named(spec):
            continue
        if orig.named(spec) and not store.strip_full:
            offer(store, [spec], orig)
            continue
        pt = parse_spec(spec, available)
        if pt is None:
            continue
        pt.pt = unused_pt(pt, store, others + (orig,))
        if pt.pt is None:
            continue
        pt.for_transcoding = True
        store.touch(pt)
        store.add_before_supplemental(pt)


def unused_pt(pt, store, others=()):
    """The payload type number for a new ``pt``: its RFC 3551 number if
    free, else the first free number from 96 (a number the same codec has
    already is reused); None when 96-127 are all taken."""
    defaults = CODEC_DEFAULTS.get((pt.encoding or "").lower())
    num = defaults[3] if defaults and defaults[3] is not None else None
    if num is not None:
        static = STATIC_PAYLOAD_TYPES.get(num)
        if static is None or static[1] != pt.clock_rate or int(static[2] or 1) != pt.channels:
            num = None
    static_num = num
    if num is None:
        num = FIRST_DYNAMIC
    while True:
        match = store.get(num)
        for other in others:
            if match is None and other is not None:
                match = other.get(num)
        if match is None:
            return num
        if num == static_num and match.key == pt.key:
            return num      # the codec already has its RFC 3551 number
        num += 1
        if num < FIRST_DYNAMIC:
            num = FIRST_DYNAMIC
        elif num > 127:
            return None


def check_empty(store, codecs):
    """As 10.5: an operation that leaves no codec restores the party's list."""
    if not store.codecs:
        for c in codecs:
            store.add(c)


def accept(store, specs, orig=None):
    """Mark codecs accepted (``accept``; ``consume`` with ``orig`` re-adds
    them first)."""
    for spec in specs:
        low = spec.lower()
        if low in ("all", "full"):
            targets = list(store.codecs)
        else:
            targets = store.named(spec)
            if not targets and orig is not None:
                offer(store, [spec], orig)
                targets = store.named(spec)
        for c in targets:
            c.for_transcoding = c.accepted = True
            store.touch(c)


def track(store, specs):
    """``mask``: the codecs stay (A may still send them) but are touched."""
    for spec in specs:
        if spec.lower() in ("all", "full"):
            store.all_touched = True
            continue
        for c in store.named(spec):
            store.touch(c)


def tracker_update(store):
    """Supplemental codecs follow the audio clock rates: one telephone-event
    (CN) per touched clock rate where the party has one at another rate,
    and none of a touched clock rate without audio codecs."""
    rates = sorted({c.clock_rate for c in store.codecs if not c.supplemental})
    kinds = []
    for c in store.codecs:
        if c.supplemental and c.encoding.lower() not in kinds:
            kinds.append(c.encoding.lower())
    for kind in kinds:
        have = {c.clock_rate for c in store.codecs
                if c.supplemental and c.encoding.lower() == kind}
        for rate in rates:
            if rate in have:
                have.discard(rate)
                continue
            if not store.all_touched and rate not in store.touched:
                continue
            spec = "%s/%d" % (kind, rate)
            pt = parse_spec(spec, {})
            if pt is None:
                continue
            pt.pt = unused_pt(pt, store)
            if pt.pt is None:
                continue
            pt.for_transcoding = True
            store.add_before_supplemental(pt)
        for rate in have:
            if not store.all_touched and rate not in store.touched:
                continue
            for c in list(store.codecs):
                if c.supplemental and c.encoding.lower() == kind and c.clock_rate == rate:
                    store.remove(c)


# -- handlers: what media from one party becomes towards the other ----------------

@dataclass
class Handler:
    """For one payload type the receiver may send: ``dest`` is the sink's
    payload type it leaves as; ``passthrough`` when no transcoder is needed;
    ``dtmf`` the sink's telephone-event number for it (None: none)."""

    source: PayloadType
    dest: PayloadType = None
    passthrough: bool = True
    dtmf: int = None


@dataclass
class Handlers:
    by_pt: dict = field(default_factory=dict)
    transcoding: bool = False


def _supp(store, kind, rate):
    for c in store.codecs:
        if c.supplemental and c.encoding.lower() == kind and c.clock_rate == rate:
            return c
    return None


def handlers(receiver, sink, second_pass=False):
    """rtpengine's codec handlers for media from ``receiver``'s party to
    ``sink``'s party (both :class:`CodecStore`).  When something is
    transcoded, codecs we cannot decode are dropped from ``receiver``."""
    pref = None
    first_accepted = None
    for c in sink.codecs:
        if not c.supported or c.supplemental:
            continue
        if pref is None:
            pref = c
        if c.accepted and first_accepted is None:
            first_accepted = c
    if first_accepted is not None:
        pref = first_accepted
    result = Handlers()
    for pt in receiver.codecs:
        h = Handler(pt)
        result.by_pt[pt.pt] = h
        if not pt.supported:
            h.dest = pt
            continue
        recv_dtmf = _supp(receiver, "telephone-event", pt.clock_rate)
        sink_pt = sink.get(pt.pt)
        if sink_pt is not None and not pt.same(sink_pt):
            sink_pt = None
        if sink_pt is None:
            for c in sink.named(pt.encoding):
                if c.clock_rate == pt.clock_rate and c.channels == pt.channels:
                    sink_pt = c
                    break
        if sink_pt is not None and not pt.supplemental and pref is not None \
                and pref.for_transcoding:
            sink_pt = pref
        if sink_pt is None:
            sink_pt = pref
        if sink_pt is None:
            h.dest = pt
            h.dtmf = recv_dtmf.pt if recv_dtmf else None
            continue
        sink_dtmf = _supp(sink, "telephone-event", sink_pt.clock_rate)
        if second_pass and sink_dtmf is not None and recv_dtmf is None \
                and not sink_dtmf.for_transcoding:
            sink_dtmf = None
        dtmf_detect = (not pt.supplemental and recv_dtmf is None and sink_dtmf is not None
                       and sink_dtmf.for_transcoding)
        transcoded = not pt.same_nf(sink_pt)
        if not transcoded and not pt.supplemental:
            if dtmf_detect:
                transcoded = True
            elif recv_dtmf is not None and recv_dtmf.for_transcoding and sink_dtmf is None:
                transcoded = True
        h.dest = sink_pt
        h.dtmf = sink_dtmf.pt if sink_dtmf is not None else None
        if transcoded:
            h.passthrough = False
            result.transcoding = True
    if result.transcoding:
        for c in list(receiver.codecs):
            if not c.supported:
                receiver.touch(c)
                receiver.remove(c)
    return result


def answer(offerer, answerer, hs, single_codec=False):
    """The store of the answer to the offerer: from ``answerer``'s codecs
    and the handlers ``hs`` (answerer -> offerer, second pass), with the
    offerer's own ``offerer`` store as it was after the offer."""
    out = CodecStore()
    count = 0
    supp = []
    for pt in answerer.codecs:
        h = hs.by_pt.get(pt.pt)
        add = not (single_codec and count >= 1)
        if h is None or h.dest is None:
            if not pt.for_transcoding and add:
                if not pt.supplemental:
                    count += 1
                out.add(pt)
            continue
        if pt.supplemental:
            if pt.for_transcoding or out.is_touched(pt) or answerer.is_touched(pt) \
                    or offerer.is_touched(pt):
                continue
        elif not add:
            continue
        if out.get(h.dest.pt) is None:
            out.add(pt if h.passthrough else h.dest)
            if not pt.supplemental:
                count += 1
        if h.dtmf is not None:
            dtmf = offerer.get(h.dtmf)
            if dtmf is not None:
                supp.append(dtmf)
    for pt in supp:
        if out.get(pt.pt) is None:
            out.add(pt)
    return out
