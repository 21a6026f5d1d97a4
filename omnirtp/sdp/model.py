"""SDP model: parse a body into ordered lines, write it back byte-exact.

``SessionDescription.parse(data)`` keeps every line with its original text
and line ending, so ``to_bytes()`` of an untouched description returns the
input unchanged (CRLF, LF-only or mixed endings alike; a missing final line
ending stays missing).  The rewrite step (:mod:`omnirtp.sdp.rewrite`) always
emits CRLF.

Parsing is strict about what the proxy needs to understand (``v=`` first,
``m=``, ``c=`` and ``a=rtcp`` syntax, port numbers) and lenient about the
rest: unknown line types and attributes are kept verbatim.  Blank lines are
kept too.  Errors are :class:`omnirtp.errors.SDPError` with the line number
and the offending text.
"""

import ipaddress
import re
from dataclasses import dataclass

from omnirtp.errors import SDPError

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
ICE_ATTRIBUTES = frozenset((
    "ice-ufrag", "ice-pwd", "ice-options", "ice-lite", "ice-mismatch", "candidate",
    "remote-candidates", "end-of-candidates", "ice-pacing", "ice2",
))
LOOP_PROTECT_ATTRIBUTE = "rtpengine"
FAMILIES = ("IP4", "IP6")
ZERO_ADDRESSES = frozenset(("0.0.0.0", "::"))

_LINE = re.compile(r"([^\r\n]*)(\r\n|\n|\r|)")


def _split_lines(data):
    """``[(text, eol)]`` of every line of ``data``, as :data:`_LINE` finds
    them (CRLF, LF or CR endings; the last line may have none)."""
    texts, ends = _split_texts(data)
    if type(ends) is not str:
        return list(zip(texts, ends))
    out = [(text, ends) for text in texts]
    if out and not data.endswith(ends):
        out[-1] = (out[-1][0], "")
    return out


def _split_texts(data):
    """``(texts, ends)``: the lines of ``data`` without their endings, and
    their endings: one str when every line but perhaps an unterminated last
    one ends in it (the usual SDP: CRLF only or LF only, split with
    ``str.split``), else a list of each line's (:data:`_LINE`)."""
    crlf = data.count("\r\n")
    if data.count("\r") == crlf and data.count("\n") == crlf:
        eol = "\r\n"
    elif "\r" not in data:
        eol = "\n"
    else:
        texts, ends = [], []
        for match in _LINE.finditer(data):
            text, end = match.groups()
            if not text and not end:
                break
            texts.append(text)
            ends.append(end)
        return texts, ends
    texts = data.split(eol)
    if not texts[-1]:
        texts.pop()
    return texts, eol


class SDPIncomplete(SDPError):
    """The SDP parses but lacks something a media proxy needs (no address
    for a media section).  rtpengine answers ``Incomplete SDP specification``."""


class Line:
    """One SDP line: ``kind`` (the letter, or ``""`` for a blank line),
    ``value`` (text after ``=``), ``text`` (the line without its ending)
    and ``eol`` (the original line ending)."""

    __slots__ = ("kind", "value", "text", "eol", "number", "attribute", "connection")

    def __init__(self, kind, value, eol="\r\n", number=0):
        self.kind = kind
        self.value = value
        self.text = kind + "=" + value if kind else value
        self.eol = eol
        self.number = number
        #: ``(name, value)`` for an ``a=`` line (value None without ``:``),
        #: else None; split once here (lines are not changed after parsing)
        if kind == "a":
            name, colon, rest = value.partition(":")
            self.attribute = (name, rest if colon else None)
        else:
            self.attribute = None
        #: the :class:`Connection` of a ``c=`` line once parsed
        #: (:func:`parse_connection`), else None
        self.connection = None

    def __repr__(self):
        return "Line(%r)" % (self.text,)


@dataclass(frozen=True)
class Connection:
    """A ``c=`` line: ``family`` is ``IP4`` or ``IP6``; ``ttl``/``count`` are
    the multicast suffix as text (or None)."""

    family: str
    address: str
    suffix: str = ""

    @property
    def zero(self):
        return self.address in ZERO_ADDRESSES


@dataclass(frozen=True)
class Rtcp:
    """An ``a=rtcp:`` attribute (RFC 3605): port and optional connection."""

    port: int
    family: str = None
    address: str = None


@dataclass(frozen=True)
class RtpMap:
    encoding: str
    clock_rate: int
    channels: str = None   # kept as text ("2"), None when absent

    @property
    def spec(self):
        """``name/rate[/channels]`` as written in ``a=rtpmap``."""
        base = "%s/%d" % (self.encoding, self.clock_rate)
        return base + "/" + self.channels if self.channels else base


def _line_error(line, message):
    return SDPError("SDP line %d (%r): %s" % (line.number, line.text, message))


def parse_connection(line):
    """Parse a ``c=`` line into a :class:`Connection` (once per line: the
    line keeps it)."""
    conn = line.connection
    if conn is not None:
        return conn
    conn = _CONNECTIONS.get(line.value)
    if conn is not None:
        line.connection = conn
        return conn
    fields = line.value.split()
    if len(fields) != 3:
        raise _line_error(line, "c= needs network type, address type and address")
    nettype, family, address = fields
    if nettype != "IN":
        raise _line_error(line, "c= network type must be IN")
    conn = line.connection = Connection(family, *_check_address(line, family, address, "c="))
    if len(_CONNECTIONS) < _VALID_MAX:
        _CONNECTIONS[line.value] = conn
    return conn


#: the value of a parseable a=rtpmap line -> (pt, its RtpMap), immutable,
#: so shared (bounded: rtpmap lines come from the network)
_RTPMAPS = {}

#: the value of a valid c= line -> its Connection (immutable, so shared;
#: bounded: c= lines come from the network)
_CONNECTIONS = {}


#: (family, address) pairs found valid (bounded: addresses come from the network)
_VALID = set()
_VALID_MAX = 4096


def _check_address(line, family, address, what):
    addr, slash, suffix = address.partition("/")
    if (family, addr) in _VALID:
        return addr, slash + suffix
    if family == "IP4":
        try:
            ipaddress.IPv4Address(addr)
        except ValueError:
            raise _line_error(line, "%s address %r is not an IPv4 address" % (what, addr)) from None
    elif family == "IP6":
        try:
            ipaddress.IPv6Address(addr)
        except ValueError:
            raise _line_error(line, "%s address %r is not an IPv6 address" % (what, addr)) from None
    else:
        raise _line_error(line, "%s address type must be IP4 or IP6, not %r" % (what, family))
    if len(_VALID) < _VALID_MAX:
        _VALID.add((family, addr))
    return addr, slash + suffix


def _port(line, text, what):
    if not text.isdigit():
        raise _line_error(line, "%s port %r is not a number" % (what, text))
    port = int(text)
    if port > 65535:
        raise _line_error(line, "%s port %d is out of range" % (what, port))
    return port


def parse_rtcp(line):
    """Parse the value of an ``a=rtcp:`` line into :class:`Rtcp`."""
    value = line.attribute[1] or ""
    fields = value.split()
    if not fields:
        raise _line_error(line, "a=rtcp has no port")
    port = _port(line, fields[0], "a=rtcp")
    if len(fields) == 1:
        return Rtcp(port)
    if len(fields) != 4 or fields[1] != "IN":
        raise _line_error(line, "a=rtcp address must be 'IN IP4|IP6 <address>'")
    address, _ = _check_address(line, fields[2], fields[3], "a=rtcp")
    return Rtcp(port, fields[2], address)


_DIRECTION_SET = frozenset(DIRECTIONS)


def _scan(lines):
    """``(index, direction, specials)`` of a part's ``lines``: the attribute
    index (name -> its values in order), the last direction attribute
    (None: none), and its ``c=`` and ``a=rtcp`` lines in order."""
    index = {}
    direction = None
    specials = []
    for ln in lines:
        kind = ln.kind
        if kind == "c":
            specials.append(ln)
        elif kind == "a":
            name, value = ln.attribute
            index.setdefault(name, []).append(value)
            if name == "rtcp":
                specials.append(ln)
            elif value is None and name in _DIRECTION_SET:
                direction = name
    return index, direction, specials


class _Part:
    """Shared accessors of the session part and of a media section.

    What a request asks of a part is gathered in one pass over its lines
    when it is made: the attribute index (name -> its values in order),
    the last direction attribute and the :class:`Connection` of the first
    ``c=`` line (each ``c=`` line is checked; in a media section each
    ``a=rtcp`` line too).  Parts live for one request: a call keeps a
    section's text (:class:`KeptSection`), not its parsed lines."""

    def __init__(self, lines, media=False, scan=None):
        self.lines = lines
        # (SessionDescription.parse's pass over the lines gathers ``scan``
        # as it goes; a part made of lines alone scans them here)
        self._attrs, direction, specials = _scan(lines) if scan is None else scan
        connection = rtcp = None
        for ln in specials:
            if ln.kind == "c":
                parsed = parse_connection(ln)
                if connection is None:
                    connection = parsed
            elif media:
                parsed = parse_rtcp(ln)
                if rtcp is None:
                    rtcp = parsed
        #: the last direction attribute of this part, or None
        self.direction = direction
        #: the :class:`Connection` of this part's own ``c=`` line, or None
        self.connection = connection
        self._rtcp = rtcp
        self._rtpmaps = None
        #: (the parsed text, where this part starts in it, where it ends):
        #: its text is that slice (set by parse when it knows them)
        self._span = None

    def _cached_rtpmaps(self):
        rtpmaps = self._rtpmaps
        if rtpmaps is None:
            rtpmaps = self._rtpmaps = self._parse_rtpmaps()
        return rtpmaps

    def attributes(self, name=None):
        """``(name, value)`` of every ``a=`` line, or the values of ``name``."""
        if name is None:
            return [ln.attribute for ln in self.lines if ln.kind == "a"]
        return list(self._attrs.get(name, ()))

    def has_attribute(self, name):
        return name in self._attrs

    def has_any(self, names):
        """True if an ``a=`` line of this part has one of ``names`` (a set)."""
        return not names.isdisjoint(self._attrs)

    def attribute(self, name):
        """Value of the first ``a=name`` (``""`` for a flag attribute), or None."""
        values = self._attrs.get(name)
        if values is None:
            return None
        return values[0] if values[0] is not None else ""

    def first(self, kind):
        for ln in self.lines:
            if ln.kind == kind:
                return ln
        return None

    @property
    def has_ice(self):
        return not ICE_ATTRIBUTES.isdisjoint(self._attrs)

    def text(self):
        span = self._span
        if span is not None:
            data, start, end = span
            return data[start:end]
        return "".join([ln.text + ln.eol for ln in self.lines])


class MediaSection(_Part):
    """One ``m=`` line and the lines after it up to the next ``m=``."""

    def __init__(self, lines, index, scan=None):
        self.index = index
        line = lines[0]
        fields = line.value.split(" ")
        if len(fields) < 3 or not (fields[0] and fields[1] and fields[2]):
            raise _line_error(line, "m= needs media type, port and protocol")
        self.media = fields[0]
        port, slash, count = fields[1].partition("/")
        if slash or not port.isdigit() or len(port) > 5:
            self.port = _port(line, port, "m=")
            self.port_count = _port(line, count, "m= port count") if slash else 1
        else:  # (_port's checks: digits, at most 65535)
            self.port = int(port)
            if self.port > 65535:
                _port(line, port, "m=")  # raises
            self.port_count = 1
        self.proto = fields[2]
        formats = fields[3:]
        self.formats = formats if "" not in formats else [f for f in formats if f]
        self._kept = None
        _Part.__init__(self, lines, True, scan)

    @property
    def rejected(self):
        return self.port == 0

    @property
    def rtcp(self):
        """The :class:`Rtcp` of the first ``a=rtcp:`` line, or None."""
        return self._rtcp

    @property
    def rtcp_mux(self):
        return "rtcp-mux" in self._attrs

    def rtpmap(self, pt):
        """The :class:`RtpMap` of payload type ``pt`` (int or str), or None."""
        return self.rtpmaps().get(str(pt))

    def rtpmaps(self):
        """``{pt (str): RtpMap}`` for every parseable ``a=rtpmap`` line."""
        return dict(self._cached_rtpmaps())

    def _parse_rtpmaps(self):
        result = {}
        for value in self._attrs.get("rtpmap", ()):
            parsed = _RTPMAPS.get(value)
            if parsed is None:
                pt, _, spec = (value or "").partition(" ")
                parts = spec.strip().split("/")
                if not pt or len(parts) < 2 or not parts[1].isdigit():
                    continue
                parsed = pt, RtpMap(parts[0], int(parts[1]),
                                    parts[2] if len(parts) > 2 and parts[2] else None)
                if len(_RTPMAPS) < _VALID_MAX:
                    _RTPMAPS[value] = parsed
            result.setdefault(*parsed)
        return result

    def fmtp(self, pt):
        """The parameters of ``a=fmtp:<pt>``, or None."""
        prefix = str(pt)
        for value in self.attributes("fmtp"):
            head, _, params = (value or "").partition(" ")
            if head == prefix:
                return params
        return None

    @property
    def payload_types(self):
        """The numeric formats of the m= line, as ints, in order."""
        return [int(f) for f in self.formats if f.isdigit()]

    def __repr__(self):
        return "MediaSection(%d, %r)" % (self.index, self.lines[0].text)

    def kept(self):
        """This section as a call keeps it (:class:`KeptSection`), the same
        one however often a request asks."""
        kept = self._kept
        if kept is None:
            kept = self._kept = KeptSection(self.text(), self.index)
        return kept


class KeptSection:
    """A media section a call keeps for its lifetime in case a later
    request needs its formats (codec handling that starts mid-call): its
    text, parsed again by :meth:`section` when asked.  The parsed lines of
    an idle call's sections would take about 2 KB."""

    __slots__ = ("text", "index")

    def __init__(self, text, index):
        self.text = text
        self.index = index

    def section(self):
        """The :class:`MediaSection` again (the text parsed once before)."""
        lines = []
        for number, (text, eol) in enumerate(_split_lines(self.text), 1):
            lines.append(Line(text[0], text[2:], eol, number) if text
                         else Line("", "", eol, number))
        return MediaSection(lines, self.index)

    def __repr__(self):
        return "KeptSection(%d, %r)" % (self.index, self.text.partition("\r")[0])


class Session(_Part):
    """The session part: every line before the first ``m=``."""

    @property
    def origin(self):
        """``(username, sess-id, sess-version, nettype, addrtype, address)`` or None."""
        line = self.first("o")
        if line is None:
            return None
        fields = line.value.split()
        if len(fields) != 6:
            raise _line_error(line, "o= needs six fields")
        return tuple(fields)


def _line_pass(data):
    """``(session_lines, sections, scans, ends)``: the lines of ``data`` as
    :class:`Line` objects, the session's list and one list per m= line (from
    it to the next); per part what :class:`_Part` gathers of it, ``(index,
    direction, specials)`` (its attribute index, last direction attribute,
    c= and a=rtcp lines); ``ends`` the one line ending of every line (the
    last may lack it: its ``eol`` is then ""), or None when they differ.
    ``omnirtp.sdp._fastsdp.split`` gives the same for the usual text."""
    # the session's lines, then one list per m= line and what follows it
    # (each Line made here without its __init__: the same slots)
    session_lines = current = []
    sections = []
    number = 0
    new = _new
    texts, ends = _split_texts(data)
    uniform = type(ends) is str
    # what _Part.__init__ gathers of each part, gathered here: its
    # attribute index, last direction attribute, c= and a=rtcp lines
    index = {}
    direction = None
    specials = []
    scans = []
    directions = _DIRECTION_SET
    for text in texts:
        number += 1
        eol = ends if uniform else ends[number - 1]
        if not text:
            current.append(Line("", "", eol, number))
            continue
        kind = text[0]
        if text[1:2] != "=" or not kind.isalpha():
            raise _line_error(Line("", text, eol, number), "not a '<type>=<value>' line")
        line = new(Line)
        line.kind = kind
        value = line.value = text[2:]
        line.text = text
        line.eol = eol
        line.number = number
        line.connection = None
        if kind == "a":
            name, colon, rest = value.partition(":")
            if not colon:
                rest = None
            line.attribute = (name, rest)
            current.append(line)
            values = index.get(name)
            if values is None:
                index[name] = [rest]
            else:
                values.append(rest)
            if name == "rtcp":
                specials.append(line)
            elif rest is None and name in directions:
                direction = name
        else:
            line.attribute = None
            if kind == "m":
                scans.append((index, direction, specials))
                index = {}
                direction = None
                specials = []
                current = [line]
                sections.append(current)
            else:
                if kind == "c":
                    specials.append(line)
                current.append(line)
    scans.append((index, direction, specials))
    if uniform and texts and not data.endswith(ends):
        current[-1].eol = ""  # the last line, unterminated
    return session_lines, sections, scans, ends if uniform else None


class SessionDescription:
    """A parsed SDP body: ``session`` and the list ``media`` of sections."""

    def __init__(self, session, media):
        self.session = session
        self.media = media

    @classmethod
    def parse(cls, data):
        """Parse ``data`` (str or bytes; bytes are UTF-8, invalid bytes kept
        as they are) into a :class:`SessionDescription`."""
        if isinstance(data, (bytes, bytearray)):
            data = bytes(data).decode("utf-8", "surrogateescape")
        elif not isinstance(data, str):
            raise TypeError("SDP must be str or bytes, not %s" % (type(data).__name__,))
        # the whole of it by the C extension (when it is built and takes
        # the text: _fastsdp.parts), else: the session's lines, one list
        # per m= line and what follows it, each part's scan (by the C
        # extension's line pass when it takes the text, else _line_pass),
        # and the parts from them here
        if _fast_parts is not None:
            parts = _fast_parts(data)
            if parts is not None:
                return cls(*parts)
        passed = _fast_split(data) if _fast_split is not None else None
        if passed is None:
            passed = _line_pass(data)
        session_lines, sections, scans, ends = passed
        first = None
        for line in session_lines:
            if line.kind:
                first = line
                break
        else:
            if sections:
                first = sections[0][0]
        if first is None:
            raise SDPError("SDP is empty")
        if first.kind != "v":
            raise SDPError("SDP must start with a v= line, not %r (line %d)"
                           % (first.text, first.number))
        session = Session(session_lines, False, scans[0])
        session.origin  # validates o=
        media = [MediaSection(sec, i, scans[i]) for i, sec in enumerate(sections, 1)]
        if ends is not None and media:
            # every line ends in ``ends`` (but perhaps the last): each
            # section's text runs from its m= line to the next one's
            mark = ends + "m="
            skip = len(ends)
            start = data.find(mark) + skip
            for m in media:
                end = data.find(mark, start)
                end = len(data) if end < 0 else end + skip
                m._span = (data, start, end)
                start = end
        return cls(session, media)

    def lines(self):
        out = list(self.session.lines)
        for m in self.media:
            out.extend(m.lines)
        return out

    def to_bytes(self):
        return str(self).encode("utf-8", "surrogateescape")

    def __str__(self):
        return "".join(ln.text + ln.eol for ln in self.lines())

    def connection(self, media):
        """The effective :class:`Connection` of ``media`` (its own c=, else the
        session's), or None."""
        return media.connection or self.session.connection

    @property
    def loop_protect_id(self):
        """The id of the first ``a=rtpengine:<id>`` (session or media level), or None."""
        for part in [self.session] + self.media:
            value = part.attribute(LOOP_PROTECT_ATTRIBUTE)
            if value is not None:
                return value
        return None

    @property
    def has_ice(self):
        return self.session.has_ice or any(m.has_ice for m in self.media)

    def direction(self, media):
        """The effective direction of ``media`` (own, else session's), or None."""
        return media.direction or self.session.direction


@dataclass(frozen=True)
class MediaInfo:
    """What the command layer needs to know about one m= line.

    ``rtp`` and ``rtcp`` are ``(address, port)``; ``rtcp`` is the
    ``a=rtcp`` port (and address, else the RTP address) or RTP port + 1.
    ``family`` is ``IP4``/``IP6``.  ``direction`` is the effective direction
    attribute or None.  ``formats`` are the m= formats as written;
    ``payload_types`` the numeric ones as ints.
    """

    index: int
    type: str
    proto: str
    family: str
    rtp: tuple
    rtcp: tuple
    rtcp_mux: bool
    direction: str
    rejected: bool
    zero_address: bool
    formats: tuple
    payload_types: tuple
    port_count: int = 1
    ice: bool = False


def inspect(sd):
    """Return one :class:`MediaInfo` per m= line of ``sd``.

    Raises :class:`SDPIncomplete` when a media section that is not rejected
    has no c= line and the session has none either.
    (``omnirtp.sdp._fastsdp.inspect`` answers for a description parse
    made, when it is built; it leaves the rest and every error to
    :func:`_inspect`.)
    """
    if _fast_inspect is not None:
        infos = _fast_inspect(sd)
        if infos is not None:
            return infos
    return _inspect(sd)


def _inspect(sd):
    """:func:`inspect` in Python."""
    infos = []
    session = sd.session
    session_conn = session.connection
    session_direction = session.direction
    session_ice = None
    for m in sd.media:
        conn = m.connection or session_conn
        port = m.port
        if conn is None:
            if port:
                raise SDPIncomplete("media %d (%s) has no c= line and the session has none"
                                    % (m.index, m.media))
            family = address = None
            zero = False
        else:
            family = conn.family
            address = conn.address
            zero = address in ZERO_ADDRESSES
        rtcp = m._rtcp
        if rtcp is None:
            rtcp_ep = (address, port + 1 if port else 0)
        else:
            rtcp_ep = (rtcp.address or address, rtcp.port)
        attrs = m._attrs
        ice = not ICE_ATTRIBUTES.isdisjoint(attrs)
        if not ice:
            if session_ice is None:
                session_ice = session.has_ice
            ice = session_ice
        formats = tuple(m.formats)
        # (MediaInfo(**fields) but for the frozen dataclass's __init__,
        # which sets each of the 14 fields through object.__setattr__)
        info = _new(MediaInfo)
        info.__dict__.update(
            index=m.index, type=m.media, proto=m.proto, family=family,
            rtp=(address, port), rtcp=rtcp_ep, rtcp_mux="rtcp-mux" in attrs,
            direction=m.direction or session_direction, rejected=port == 0,
            zero_address=zero, formats=formats,
            payload_types=_payload_types(formats),
            port_count=m.port_count, ice=ice)
        infos.append(info)
    return infos


#: an m= line's formats -> the numeric ones as ints (bounded: formats
#: come from the network; a proxy sees the same few lists)
_PAYLOAD_TYPES = {}


def _payload_types(formats):
    """``MediaInfo.payload_types`` of ``formats`` (a tuple of str)."""
    pts = _PAYLOAD_TYPES.get(formats)
    if pts is None:
        pts = tuple([int(f) for f in formats if f.isdigit()])
        if len(_PAYLOAD_TYPES) < _VALID_MAX:
            _PAYLOAD_TYPES[formats] = pts
    return pts


_new = object.__new__

try:
    from omnirtp.sdp import _fastsdp
except ImportError:  # not built: _line_pass does all the work
    _fastsdp = None
    _fast_split = _fast_parts = _fast_inspect = None
else:
    _fastsdp.setup(Line, _DIRECTION_SET)
    _fastsdp.setup_parts(Session, MediaSection, _CONNECTIONS, parse_connection, parse_rtcp,
                         SDPError)
    _fastsdp.setup_inspect(SessionDescription, Session, MediaSection, Connection, Rtcp,
                           MediaInfo, ICE_ATTRIBUTES, _PAYLOAD_TYPES, _payload_types)
    _fast_split = _fastsdp.split
    _fast_parts = _fastsdp.parts
    _fast_inspect = _fastsdp.inspect
