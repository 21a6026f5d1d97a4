"""The rewrite step: a parsed SDP plus a plan -> the SDP text rtpengine would send.

``rewrite(sd, plan)`` is a pure function.  The command layer decides
everything (addresses, ports, rtcp-mux outcome, direction, ICE credentials,
codec operations, ptime) and puts it in a :class:`SessionPlan`; this module
only lays the lines out the way Debian's rtpengine 10.5 does for plain RTP
(learned from the corpus in omnirtp/test/fixtures/corpus/):

Session part, in input order: ``v=``, ``o=`` (address replaced with
``replace_origin``), ``s=``, ``c=`` (rewritten; a zero hold address is kept),
``t=`` and the other lines; dropped: ``a=group:BUNDLE``, ICE, DTLS and crypto
attributes, direction attributes (each m= gets its own), an old
``a=rtpengine:``.  Then ``a=ice-lite`` (if planned) and
``a=rtpengine:<id>`` (loop protect).

Media section (not rejected)::

    m=<media> <port> <proto> <formats after codec filtering>
    c=...                        only where the input had a media-level c=
    <other attributes, input order>   (extmap, msid, ssrc, rtcp-fb:* ...)
    a=mid:...                    (if present and keep_mid)
    a=rtpmap / a=fmtp / a=rtcp-fb per kept payload type, in m= order;
                                 rtpmap added for static payload types
    a=<direction>                (None: the input's direction lines stay
                                  among the other attributes)
    a=rtcp:<port>[ IN IP4 <addr>]
    a=rtcp-mux
    a=crypto:...                 (the planned SDES lines, in order)
    a=setup, a=fingerprint       (DTLS-SRTP, planned)
    a=ptime:<n>
    a=ice-ufrag, a=ice-pwd, [a=ice-options:trickle], a=candidate..., [a=end-of-candidates]

A rejected section (port 0) is its ``m=`` line, plus (as 10.5 writes it) its
``a=mid`` with ``keep_mid`` and ``a=end-of-candidates`` towards a trickle ICE
peer.  The input's crypto,
fingerprint, setup and tls-id lines are always dropped; ``a=crypto``, ``a=setup`` and
``a=fingerprint`` lines come only from the plan (after ``a=rtcp-mux``, in
that order, as 10.5 writes them).
Output lines end in CRLF.
"""

import string
from dataclasses import dataclass, field

from omnirtp.sdp.codecs import CodecOps, codec_for
from omnirtp.sdp.model import DIRECTIONS, ICE_ATTRIBUTES, LOOP_PROTECT_ATTRIBUTE, parse_connection
from omnirtp.tokens import token

CRLF = "\r\n"
ICE_REMOVE = "remove"
UFRAG_LENGTH = 8
PWD_LENGTH = 26
FOUNDATION_LENGTH = 16
HOST_TYPE_PREFERENCE = 126
PRIMARY_LOCAL_PREFERENCE = 65535

#: attributes this proxy owns: consumed from the input, regenerated or dropped
SECURITY_ATTRIBUTES = frozenset(("crypto", "fingerprint", "setup", "tls-id"))
CODEC_ATTRIBUTES = frozenset(("rtpmap", "fmtp", "rtcp-fb"))
SESSION_DROPPED = frozenset(("group",)) | SECURITY_ATTRIBUTES
#: media attributes always dropped from the input (regenerated from the plan)
_MEDIA_OWNED = frozenset(("rtcp", "rtcp-mux", "ptime", LOOP_PROTECT_ATTRIBUTE)) \
    | SECURITY_ATTRIBUTES


@dataclass
class IcePlan:
    """rtpengine's own ICE data for one m= line.  ``candidates`` are the
    values after ``a=candidate:`` (see :func:`host_candidates`)."""

    ufrag: str
    pwd: str
    candidates: list = field(default_factory=list)
    trickle: bool = False


@dataclass
class MediaPlan:
    """What to emit for one m= line (same order as the input's m= lines).

    ``port`` 0 rejects the media.  ``rtcp_port`` None omits ``a=rtcp``
    (``no rtcp attribute``); with rtcp-mux rtpengine puts the RTP port there.
    ``protocol`` None keeps the input's.  ``direction`` None keeps the input's
    direction lines unchanged (``original sendrecv``).  ``ice``: ``"remove"``
    strips ICE lines, an :class:`IcePlan` replaces them, None keeps them.
    ``crypto``: the ``a=crypto`` values to write (SDES), after ``a=rtcp-mux``.
    """

    port: int
    rtcp_port: int = None
    rtcp_mux: bool = False
    full_rtcp_attribute: bool = False
    protocol: str = None
    direction: str = "sendrecv"
    ice: object = ICE_REMOVE
    codecs: CodecOps = field(default_factory=CodecOps)
    ptime: int = None
    keep_mid: bool = True
    keep_zero_address: bool = True
    crypto: list = field(default_factory=list)   # values after "a=crypto:"
    #: DTLS-SRTP: ``(setup, fingerprint)``, the values of ``a=setup`` and
    #: ``a=fingerprint`` written after the a=crypto lines; None: neither
    dtls: tuple = None
    #: the a=mid value to write (with ``keep_mid``) when the input section
    #: has none: an answer to an offer that had one carries the offer's
    mid: str = None
    #: the formats to write instead of filtering the input's with ``codecs``
    #: (None: filter): objects with ``pt``, ``rtpmap`` (write a=rtpmap),
    #: ``rtpmap_value()``, ``fmtp`` and ``rtcp_fb`` (see
    #: omnirtp.call.codecstore.PayloadType).  An empty list writes an m=
    #: line without formats and keeps the input's rtpmap/fmtp/rtcp-fb lines,
    #: as rtpengine 10.5 does when nothing of an answer can be used.
    formats: list = None


@dataclass
class SessionPlan:
    """What to emit for a whole SDP: ``family``/``address`` advertised in c=
    (and o= with ``replace_origin``), one :class:`MediaPlan` per m= line."""

    family: str
    address: str
    media: list
    replace_origin: bool = False
    loop_protect: str = None
    ice_lite: bool = False
    keep_zero_address: bool = True


def host_candidates(foundation, address, rtp_port, rtcp_port=None, local_preference=None,
                    family="IP4"):
    """Host candidate values for one local address, rtpengine style:
    ``<foundation> <component> UDP <priority> <address> <port> typ host``
    with priority 126·2^24 + localpref·2^8 + (256 − component)."""
    pref = PRIMARY_LOCAL_PREFERENCE if local_preference is None else local_preference
    ports = [rtp_port] if rtcp_port is None else [rtp_port, rtcp_port]
    result = []
    for component, port in enumerate(ports, 1):
        priority = (HOST_TYPE_PREFERENCE << 24) + (pref << 8) + (256 - component)
        result.append("%s %d UDP %d %s %d typ host" % (foundation, component, priority,
                                                       address, port))
    return result


_ICE_CHARS = string.ascii_letters + string.digits


def random_token(length, rng=None):
    """A random alphanumeric token (ICE ufrag 8, pwd 26, foundation 16)."""
    if rng is None:
        return token(length)
    return "".join(rng.choice(_ICE_CHARS) for _ in range(length))


def new_ice_credentials(rng=None):
    """``(ufrag, pwd)`` of rtpengine's lengths."""
    return random_token(UFRAG_LENGTH, rng), random_token(PWD_LENGTH, rng)


def _attr(line):
    return line.attribute[0] if line.kind == "a" else None


def _rewrite_connection(line, plan, keep_zero=True):
    conn = parse_connection(line)
    if conn.zero and keep_zero:
        return line.text
    return "c=IN %s %s" % (plan.family, plan.address)


def _session_lines(sd, plan):
    out = []
    all_directed = bool(plan.media)
    for m in plan.media:
        if m.direction is None:
            all_directed = False
            break
    for line in sd.session.lines:
        kind = line.kind
        if not kind:
            continue
        if kind != "a":
            if kind == "o" and plan.replace_origin:
                fields = line.value.split()
                out.append("o=%s IN %s %s" % (" ".join(fields[:3]), plan.family, plan.address))
            elif kind == "c":
                out.append(_rewrite_connection(line, plan, plan.keep_zero_address))
            else:
                out.append(line.text)
            continue
        name = line.attribute[0]
        if name in SESSION_DROPPED or name == LOOP_PROTECT_ATTRIBUTE:
            continue
        elif name in ICE_ATTRIBUTES and any(m.ice is not None for m in plan.media):
            continue
        elif name in DIRECTIONS and all_directed:
            continue
        else:
            out.append(line.text)
    if plan.ice_lite:
        out.append("a=ice-lite")
    if plan.loop_protect:
        out.append("a=%s:%s" % (LOOP_PROTECT_ATTRIBUTE, plan.loop_protect))
    return out


#: (pt, encoding, clock rate, channels) -> the a=rtpmap line _codec_lines
#: makes for a format the input gave none (bounded: from the network)
_RTPMAP_LINES = {}
_RTPMAP_LINES_MAX = 1024


def _rtpmap_line(pt, codec):
    """The a=rtpmap line _codec_lines makes for format ``pt`` from its
    :class:`Codec` (one with an encoding)."""
    spec = "%s/%d" % (codec.encoding, codec.clock_rate)
    if codec.channels:
        spec += "/" + codec.channels
    return "a=rtpmap:%s %s" % (pt, spec)


def _codec_lines(by_pt, pts, codecs, rtpmaps):
    """The a=rtpmap, a=fmtp and a=rtcp-fb lines of the formats ``pts``
    (str) in that order, from ``by_pt`` (``(name, pt)`` -> the input's
    lines); an a=rtpmap is made from the format's :class:`Codec` (of
    ``codecs``, in the order of ``pts``, or None: ``codec_for`` it) when
    the input has none."""
    out = []
    for i, pt in enumerate(pts):
        rtpmap = by_pt.get(("rtpmap", pt))
        if rtpmap:
            out.append(rtpmap[0])
        else:
            codec = codec_for(pt, rtpmaps) if codecs is None else codecs[i]
            if codec.encoding is not None:
                key = (pt, codec.encoding, codec.clock_rate, codec.channels)
                text = _RTPMAP_LINES.get(key)
                if text is None:
                    text = _rtpmap_line(pt, codec)
                    if len(_RTPMAP_LINES) < _RTPMAP_LINES_MAX:
                        _RTPMAP_LINES[key] = text
                out.append(text)
        texts = by_pt.get(("fmtp", pt))
        if texts:
            out.extend(texts)
        texts = by_pt.get(("rtcp-fb", pt))
        if texts:
            out.extend(texts)
    return out


def _format_lines(formats):
    out = []
    for f in formats:
        if f.rtpmap:
            out.append("a=rtpmap:" + f.rtpmap_value())
        if f.fmtp:
            out.append("a=fmtp:%d %s" % (f.pt, f.fmtp))
        out.extend("a=rtcp-fb:%d %s" % (f.pt, fb) for fb in f.rtcp_fb)
    return out


def _mids(media, mplan):
    mids = [line.text for line in media.lines[1:] if _attr(line) == "mid"]
    if not mids and mplan.mid:
        mids = ["a=mid:" + mplan.mid]
    return mids


def _media_lines(sd, media, mplan, plan):
    proto = mplan.protocol or media.proto
    if mplan.port == 0:
        out = [("m=%s 0 %s %s" % (media.media, proto, " ".join(media.formats))).rstrip()]
        if mplan.keep_mid:
            # as 10.5: a rejected section keeps its a=mid (BUNDLE peers
            # need it) and, towards a trickle ICE peer, a=end-of-candidates
            out.extend(_mids(media, mplan))
        if isinstance(mplan.ice, IcePlan) and mplan.ice.trickle:
            out.append("a=end-of-candidates")
        return out
    formats = mplan.formats
    codecs = rtpmaps = None
    if formats is None:
        rtpmaps = media._cached_rtpmaps()  # read only
        if mplan.codecs:
            codecs = mplan.codecs.apply([codec_for(f, rtpmaps) for f in media.formats])
            pts = [c.pt for c in codecs]
        else:
            # nothing filtered: every format (a Codec's pt is its format)
            pts = media.formats
    else:
        pts = [str(f.pt) for f in formats]
    out = ["m=%s %d %s %s" % (media.media, mplan.port, proto, " ".join(pts))]
    keep_codec_lines = formats is not None and not formats
    mids = []
    #: (name, pt) -> the input's a=rtpmap/fmtp/rtcp-fb lines (not rtcp-fb:*),
    #: for _codec_lines
    by_pt = {}
    direction = mplan.direction
    ice = mplan.ice
    for line in media.lines[1:]:
        kind = line.kind
        if kind != "a":
            if kind == "c":
                out.append(_rewrite_connection(line, plan, mplan.keep_zero_address))
            elif kind:
                out.append(line.text)
            continue
        name, value = line.attribute
        if name in _MEDIA_OWNED:
            continue
        if name == "mid":
            mids.append(line.text)
        elif name in CODEC_ATTRIBUTES:
            value = value or ""
            if keep_codec_lines or (name == "rtcp-fb" and value.startswith("* ")):
                out.append(line.text)
            if formats is None:
                pt = value.split(" ", 1)[0]
                if name != "rtcp-fb" or pt != "*":
                    key = (name, pt)
                    texts = by_pt.get(key)
                    if texts is None:
                        by_pt[key] = [line.text]
                    else:
                        texts.append(line.text)
        elif name in DIRECTIONS:
            if direction is None:
                out.append(line.text)
        elif name in ICE_ATTRIBUTES:
            if ice is None:
                out.append(line.text)
        else:
            out.append(line.text)
    if mplan.keep_mid:
        # (the section's own a=mid lines, else the planned one: _mids)
        if mids:
            out.extend(mids)
        elif mplan.mid:
            out.append("a=mid:" + mplan.mid)
    if formats is None:
        out.extend(_codec_lines(by_pt, pts, codecs, rtpmaps))
    else:
        out.extend(_format_lines(formats))
    if mplan.direction is not None:
        out.append("a=" + mplan.direction)
    if mplan.rtcp_port is not None:
        if mplan.full_rtcp_attribute:
            out.append("a=rtcp:%d IN %s %s" % (mplan.rtcp_port, plan.family, plan.address))
        else:
            out.append("a=rtcp:%d" % mplan.rtcp_port)
    if mplan.rtcp_mux:
        out.append("a=rtcp-mux")
    out.extend("a=crypto:" + c for c in mplan.crypto)
    if mplan.dtls is not None:
        out.append("a=setup:" + mplan.dtls[0])
        out.append("a=fingerprint:" + mplan.dtls[1])
    if mplan.ptime:
        out.append("a=ptime:%d" % mplan.ptime)
    ice = mplan.ice
    if isinstance(ice, IcePlan):
        out.append("a=ice-ufrag:" + ice.ufrag)
        out.append("a=ice-pwd:" + ice.pwd)
        if ice.trickle:
            out.append("a=ice-options:trickle")
        out.extend("a=candidate:" + c for c in ice.candidates)
        if ice.trickle:
            out.append("a=end-of-candidates")
    return out


def rewrite(sd, plan):
    """Return the SDP text (CRLF line endings) for ``sd`` rewritten by ``plan``.

    ``omnirtp.sdp._fastsdp.rewrite`` writes the usual plans (when it is
    built); it gives None for the rest (a rejected section, codec
    filtering, planned formats, values of other types), and for any
    error: :func:`_rewrite` writes those and says the error."""
    if _fast_rewrite is not None:
        out = _fast_rewrite(sd, plan)
        if out is not None:
            return out
    return _rewrite(sd, plan)


def _rewrite(sd, plan):
    """:func:`rewrite` in Python."""
    if len(plan.media) != len(sd.media):
        raise ValueError("plan has %d media plans for %d m= lines"
                         % (len(plan.media), len(sd.media)))
    lines = _session_lines(sd, plan)
    for media, mplan in zip(sd.media, plan.media):
        lines.extend(_media_lines(sd, media, mplan, plan))
    return CRLF.join(lines) + CRLF if lines else ""


try:
    from omnirtp.sdp import _fastsdp
except ImportError:  # not built: _rewrite does all the work
    _fast_rewrite = None
else:
    from omnirtp.sdp.codecs import STATIC_PAYLOAD_TYPES, Codec
    from omnirtp.sdp.model import Connection, Line, MediaSection, Session, SessionDescription

    _fastsdp.setup_rewrite(
        Line, SessionDescription, Session, MediaSection, Connection, SessionPlan, MediaPlan,
        IcePlan, CodecOps, SESSION_DROPPED | {LOOP_PROTECT_ATTRIBUTE}, ICE_ATTRIBUTES,
        _MEDIA_OWNED,
        # the a=rtpmap line of each static payload type (its format as
        # str(int)), for a format the input gave none
        {str(pt): _rtpmap_line(str(pt), Codec(str(pt), *spec))
         for pt, spec in STATIC_PAYLOAD_TYPES.items()})
    _fast_rewrite = _fastsdp.rewrite
