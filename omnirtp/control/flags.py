"""Typed access to an ng request: rtpengine's keys, aliases and flag words.

``Flags.from_request(request)`` takes the request dict as
:class:`~omnirtp.control.ng.NGProtocol` hands it over (str keys and
values) and normalises what Kamailio's rtpengine module sends:

* keys are looked up in explicit alias tables (``call-id``/``call id``/
  ``call-ID``/``call ID``; ``ICE``/``ice`` but not ``Ice``), spelled as
  rtpengine 10.5 accepts them (``from tag`` and ``to tag`` are *not*
  keys there: verified against the daemon);
* list-valued keys also accept a single, possibly comma-separated string;
* integers may arrive as decimal strings;
* flag words are canonical: whitespace runs become ``-`` and case is
  ignored (``"strict source"`` == ``"Strict-Source"`` -> ``strict-source``);
  prefixed words (``replace-origin``, ``codec-strip-PCMA``, ``SDES-off``,
  ``rtcp-mux-demux``...) feed the matching field instead of ``flags``;
* ``rtpp-flags`` (Kamailio's 2-argument form) is parsed with the same word
  rules, bracket lists included, and merged in place.

Unknown keys and flag words never fail a request; they are collected in
``unknown`` (log them once at debug level).
"""

import dataclasses
import re
from typing import Optional

from twisted.logger import Logger

from omnirtp.config.model import ENDPOINT_LEARNING

LEARNING_MODES = frozenset(ENDPOINT_LEARNING)

log = Logger()

# -- rtpengine's literal key spellings ----------------------------------------

K_COMMAND = ("command",)
K_CALL_ID = ("call-id", "call-ID", "call id", "call ID")
K_FROM_TAG = ("from-tag",)
K_TO_TAG = ("to-tag",)
K_VIA_BRANCH = ("via-branch",)
K_SDP = ("sdp", "SDP")
K_LABEL = ("label", "from-label")
K_REPLACE = ("replace",)
K_ICE = ("ICE", "ice")
K_TRANSPORT = ("transport-protocol", "transport protocol")
K_RTCP_MUX = ("rtcp-mux", "RTCP-mux", "rtcp mux")
K_DIRECTION = ("direction",)
K_FROM_INTERFACE = ("from-interface",)
K_TO_INTERFACE = ("to-interface",)
K_FLAGS = ("flags",)
K_CODEC = ("codec",)
K_ADDRESS_FAMILY = ("address family", "address-family")
K_MEDIA_ADDRESS = ("media address", "media-address")
K_RECEIVED_FROM = ("received from", "received-from")
K_SUPPORTS = ("supports",)
K_DELETE_DELAY = ("delete delay", "delete-delay", "delete_delay")
K_RECORD_CALL = ("record call", "record-call")
K_METADATA = ("metadata",)
K_PTIME = ("ptime",)
K_PTIME_REVERSE = ("ptime-reverse", "ptime reverse", "reverse ptime", "reverse-ptime")
K_TOS = ("TOS", "tos")
K_ENDPOINT_LEARNING = ("endpoint-learning", "endpoint learning")
K_SDES = ("SDES", "sdes")
K_DTLS = ("DTLS", "dtls")
K_OSRTP = ("OSRTP", "osrtp")
K_DTLS_FINGERPRINT = ("DTLS-fingerprint", "DTLS fingerprint", "dtls-fingerprint",
                      "dtls fingerprint")
K_ICE_LITE = ("ICE-lite", "ice-lite", "ICE lite", "ice lite")
K_ALL = ("all",)
K_LIMIT = ("limit",)
K_RTPP_FLAGS = ("rtpp-flags", "rtpp_flags", "rtpp flags")
# Kamailio 5.6 sends "codec-accept=X" & co. as top-level string keys
K_CODEC_TOPLEVEL = {
    "codec-strip": "strip", "codec-offer": "offer", "codec-except": "except",
    "codec-mask": "mask", "codec-transcode": "transcode", "transcode": "transcode",
    "codec-accept": "accept", "codec-consume": "consume", "codec-set": "set",
    "codec-ignore": "ignore",
}
# keys accepted and ignored here (other modules read them from ``raw``)
K_KNOWN_OTHER = (
    "interface", "T.38", "T38",
    "t38", "t.38", "bundle", "BUNDLE", "sip-message-type",
    "SIP-message-type", "sip_message_type", "SIP_message_type", "sip-code",
    "SIP-code", "sip_code", "SIP_code", "to-label", "set-label", "template",
    "media echo", "media-echo", "drop-traffic", "drop traffic", "xmlrpc-callback",
    "XMLRPC-callback", "sdp-attr", "SDP-attr", "frequency", "frequencies",
    "volume", "duration", "pause", "code", "digit", "file", "blob", "db-id",
    "repeat-times", "repeat-duration", "start-pos", "from-tags", "to-call-id",
    "output-destination", "recording-file", "recording-dir", "recording-pattern",
    "generate RTCP", "generate-RTCP", "generate rtcp", "generate-rtcp", "address",
    "body", "trigger", "trigger-end", "DTMF-security", "dtmf-security",
    "delay-buffer", "moh", "MoH", "MOH", "passthrough", "passthru", "player",
    "audio-player",
    # keys the current upstream rtpengine added (docs/ng_control_protocol.md,
    # daemon/call_flags.c); 10.5 ignores them too.  Upstream's new spellings
    # of keys omnirtp reads ("from tag", "to tag", "to_tag", "from interface",
    # "to interface", "RTCP mux", "from label") stay unknown, as in 10.5:
    # docs/compat.md says why.
    "alias-key", "audio player", "blob64", "calls", "codecs", "DTLS-reverse",
    "dtls-reverse", "DTMF-delay", "DTMF delay", "dtmf-delay", "dtmf delay",
    "dtmf-log-dest", "DTMF-log-dest", "dtmf-log-destination", "DTMF-log-destination",
    "DTMF security", "dtmf security", "DTMF-security-trigger", "dtmf-security-trigger",
    "DTMF security trigger", "dtmf security trigger", "DTMF-security-trigger-end",
    "dtmf-security-trigger-end", "DTMF security trigger end", "dtmf security trigger end",
    "delay buffer", "extmap", "from tags", "inbound-peer", "inbound peer", "peer",
    "instance", "media", "medias", "outbound-peer", "outbound peer", "output-dest",
    "output-file", "recording-destination", "recording-dest", "output destination",
    "output dest", "output file", "recording destination", "recording dest",
    "recording file", "recording-media-slot-offer", "recording-media-slot-answer",
    "recording-media-slots", "recording path", "recording dir", "recording directory",
    "recording folder", "output path", "output dir", "output directory", "output folder",
    "recording-path", "recording-directory", "recording-folder", "output-path",
    "output-dir", "output-directory", "output-folder", "recording pattern",
    "output pattern", "output-pattern", "repeat times", "repeat duration", "sdp attr",
    "SDP attr", "sdp-media-remove", "SDP-media-remove", "sdp_media_remove",
    "SDP_media_remove", "sdp media remove", "SDP media remove", "set label",
    "sip-response-code", "sip_response_code", "SIP-response-code", "SIP_response_code",
    "sip code", "SIP code", "sip response code", "SIP response code", "sip message type",
    "SIP message type", "source-tag", "source tag", "source-call-id", "source call id",
    "source-call-ID", "source call ID", "start pos", "T38-version", "T.38-version",
    "t38-version", "t.38-version", "T38 version", "T.38 version", "t38 version",
    "t.38 version", "tags", "to label", "to call id", "trigger end", "end trigger",
    "end-trigger", "trigger-end-time", "trigger end time", "end-trigger-time",
    "end trigger time", "trigger-end-digits", "trigger end digits", "end-trigger-digits",
    "end trigger digits", "vsc-pause-rec", "VSC-pause-rec", "vsc-pause-recording",
    "VSC-pause-recording", "vsc-pause-resume-rec", "VSC-pause-resume-rec",
    "vsc-pause-resume-recording", "VSC-pause-resume-recording", "vsc-start-pause-resume-rec",
    "VSC-start-pause-resume-rec", "vsc-start-pause-resume-recording",
    "VSC-start-pause-resume-recording", "vsc-start-rec", "VSC-start-rec",
    "vsc-start-recording", "VSC-start-recording", "vsc-start-stop-rec", "VSC-start-stop-rec",
    "vsc-start-stop-recording", "VSC-start-stop-recording", "vsc-stop-rec", "VSC-stop-rec",
    "vsc-stop-recording", "VSC-stop-recording",
)

CODEC_PARTS = ("strip", "offer", "except", "mask", "transcode", "accept",
               "consume", "set", "ignore")
#: codec part -> its Flags attribute
_CODEC_ATTRS = {part: "codec_" + part for part in CODEC_PARTS}

TRANSPORTS = ("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF",
              "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF")
_SRTP, _AVPF, _DTLS = 1, 2, 4
_TRANSPORT_BITS = {
    "RTP/AVP": 0, "RTP/AVPF": _AVPF, "RTP/SAVP": _SRTP, "RTP/SAVPF": _SRTP | _AVPF,
    "UDP/TLS/RTP/SAVP": _DTLS | _SRTP, "UDP/TLS/RTP/SAVPF": _DTLS | _SRTP | _AVPF,
}
_BITS_TRANSPORT = {v: k for k, v in _TRANSPORT_BITS.items()}

# flag words (canonical form) rtpengine knows; others land in ``unknown``
KNOWN_FLAGS = frozenset("""
trust-address sip-source-address symmetric asymmetric unidirectional
strict-source media-handover port-latching no-port-latching nat-wait pierce-nat
no-rtcp-attribute full-rtcp-attribute original-sendrecv generate-mid
strip-extmap loop-protect trickle-ice reject-ice reset fragment single-codec
static-codecs static-codec allow-no-codec-media allow-asymmetric-codecs
reuse-codecs no-codec-renegotiation new-branch provisional pad-crypto recrypt
no-tls-id always-transcode force-transcoding allow-transcoding inject-dtmf
detect-dtmf block-dtmf block-short early-media player no-player passthrough
no-passthrough record-call exclude-recording discard-recording
skip-recording-db skip-recording-database recording-announcement siprec all
directional fatal fast to-tag debug bidirectional inactive mix rtcp-mirror
unsubscribe generate-rtcp no-redis-update egress block-egress
symmetric-codecs asymmetric-codecs reorder-codecs port-latching
no-jitter-buffer strip-extmap ice-reject no-codec-renegotiation
sip-source trickle-ice webrtc to_tag
audio-player no-audio-player recording-vsc
""".split())

# the current upstream rtpengine's other spellings of flag words (canonical
# form) -> the word they mean; 10.5 does not know them (it ignores them)
FLAG_ALIASES = {
    "allow-asymmetric-codec": "allow-asymmetric-codecs",
    "allow-no-codec-medias": "allow-no-codec-media",
    "allow-empty-codec-media": "allow-no-codec-media",
    "allow-empty-codec-medias": "allow-no-codec-media",
    "block-shorts": "block-short",
    "block-short-packets": "block-short",
    "debugging": "debug",
    "mirror-rtcp": "rtcp-mirror",
    "mixed": "mix",
}

_OBSOLETE_FLAGS = frozenset(("symmetric-codecs", "asymmetric-codecs", "reorder-codecs"))

# prefixed flag words: canonical prefix -> field
_LIST_PREFIXES = (
    ("replace-", "replace"),
    ("rtcp-mux-", "rtcp_mux"),
    ("sdes-", "sdes"),
    ("osrtp-", "osrtp"),
    ("endpoint-learning-", "endpoint_learning"),
)
_CODEC_PREFIXES = (
    ("codec-transcode-", "transcode"), ("transcode-", "transcode"),
    ("codec-strip-", "strip"), ("codec-offer-", "offer"),
    ("codec-except-", "except"), ("codec-mask-", "mask"),
    ("codec-accept-", "accept"), ("codec-consume-", "consume"),
    ("codec-set-", "set"), ("codec-ignore-", "ignore"),
)

#: every prefix of a prefixed flag word
_PREFIXES = tuple(p for p, _ in _CODEC_PREFIXES + _LIST_PREFIXES)

_TRUE = frozenset(("yes", "on", "true", "1", "force", "enable", "enabled"))
_FALSE = frozenset(("no", "off", "false", "0", "disable", "disabled"))
_DTLS_OFF = frozenset(("off", "no", "disable", "disabled"))
_WS = re.compile(r"\s+")


#: ``Flags.has`` arguments -> their canonical form
_HAS_WORDS = {}


#: canonical() of the words seen so far (bounded: words come from the network)
_CANONICAL = {}


def canonical(word):
    """Canonical flag word: whitespace runs -> "-", lower case."""
    c = _CANONICAL.get(word)
    if c is None:
        c = _WS.sub("-", word.strip()).lower()
        if len(_CANONICAL) < 1024:
            _CANONICAL[word] = c
    return c


def as_list(value):
    """A list-valued key as a list of non-empty str items.

    Accepts a list (items that are not strings are dropped) or a single
    string, which may hold several comma-separated items.
    """
    if isinstance(value, (list, tuple)):
        items = []
        for v in value:
            if type(v) is str and "," not in v:
                # the usual item: one word
                v = v.strip()
                if v:
                    items.append(v)
                continue
            if isinstance(v, bytes):
                v = v.decode("utf-8", "surrogateescape")
            if isinstance(v, str):
                items.extend(p for p in (p.strip() for p in v.split(",")) if p)
        return items
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return []


def as_int(value):
    """An integer option given as a bencode int or a decimal string, else None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
    return None


def _as_str(value):
    if type(value) is str:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


# -- rtpp-flags string ----------------------------------------------------------

def _split_words(text):
    """Split on whitespace, keeping [bracketed] groups (nested) together."""
    words = []
    current = []
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
        if ch.isspace() and depth == 0:
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


def _bracket_value(value):
    """``[a b c]`` -> list; ``[k=v k2=[x]]`` -> dict; else the string."""
    if not (value.startswith("[") and value.endswith("]")):
        return value
    inner = _split_words(value[1:-1])
    if inner and all("=" in w and not w.startswith("[") for w in inner):
        out = {}
        for w in inner:
            k, _, v = w.partition("=")
            v = _bracket_value(v)
            if k in out and isinstance(out[k], list):
                out[k].extend(v if isinstance(v, list) else [v])
            else:
                out[k] = v
        return out
    return [_bracket_value(w) for w in inner]


def parse_rtpp_flags(text):
    """Parse an ``rtpp-flags`` string into ``[(key, value)]`` request items.

    Bare words become ``("flags", word)`` except the transport words and
    modifiers (collapsed, last one wins) and ``internal``/``external``
    (``direction``); ``key=value`` becomes ``(key, value)`` with bracket
    values turned into lists/dicts; ``direction=X`` appends to direction.
    """
    items = []
    transport = None
    for word in _split_words(text or ""):
        if "=" in word and not word.startswith("["):
            key, _, value = word.partition("=")
            value = _bracket_value(value)
            items.append((key, value))
            continue
        if word in _TRANSPORT_BITS:
            transport = _TRANSPORT_BITS[word]
            continue
        if word in ("RTP", "AVP", "SRTP", "AVPF", "DTLS"):
            transport = _modify_transport(transport or 0, word)
            continue
        if word in ("internal", "external"):
            items.append(("direction", [word]))
            continue
        items.append(("flags", [word]))
    if transport is not None:
        items.append(("transport-protocol", _transport_name(transport)))
    return items


def _modify_transport(bits, word):
    if word == "RTP":
        return bits & ~_SRTP
    if word == "AVP":
        return bits & ~_AVPF
    if word == "SRTP":
        return bits | _SRTP
    if word == "AVPF":
        return bits | _AVPF
    return bits | _DTLS | _SRTP  # DTLS implies SRTP


def _transport_name(bits):
    if bits & _DTLS:
        bits |= _SRTP
    return _BITS_TRANSPORT[bits]


# -- the dataclass ------------------------------------------------------------

@dataclasses.dataclass
class Flags:
    """What an ng request asks for, normalised.  See the module docstring."""

    command: Optional[str] = None
    call_id: Optional[str] = None
    from_tag: Optional[str] = None
    to_tag: Optional[str] = None
    via_branch: Optional[str] = None
    sdp: Optional[str] = None
    label: Optional[str] = None
    replace: set = dataclasses.field(default_factory=set)
    ice: Optional[str] = None
    transport_protocol: Optional[str] = None
    rtcp_mux: set = dataclasses.field(default_factory=set)
    direction: tuple = ()
    flags: set = dataclasses.field(default_factory=set)
    codec_strip: tuple = ()
    codec_offer: tuple = ()
    codec_except: tuple = ()
    codec_mask: tuple = ()
    codec_transcode: tuple = ()
    codec_accept: tuple = ()
    codec_consume: tuple = ()
    codec_set: tuple = ()
    codec_ignore: tuple = ()
    address_family: Optional[str] = None
    media_address: Optional[str] = None
    received_from: Optional[tuple] = None
    supports: set = dataclasses.field(default_factory=set)
    delete_delay: Optional[int] = None
    record_call: Optional[bool] = None
    metadata: Optional[str] = None
    ptime: Optional[int] = None
    #: ``ptime-reverse``: the ptime towards the offerer (the answer's a=ptime)
    ptime_reverse: Optional[int] = None
    tos: Optional[int] = None
    endpoint_learning: Optional[str] = None
    sdes: set = dataclasses.field(default_factory=set)
    dtls: Optional[str] = None
    #: ``DTLS-fingerprint``: the hash of our a=fingerprint (sha-256 ...)
    dtls_fingerprint: Optional[str] = None
    #: ``ICE-lite``: forward, backward, both or off
    ice_lite: Optional[str] = None
    osrtp: set = dataclasses.field(default_factory=set)
    all: bool = False
    limit: Optional[int] = None
    raw: dict = dataclasses.field(default_factory=dict)
    unknown: list = dataclasses.field(default_factory=list)

    def has(self, word):
        """True if flag ``word`` (any spelling, upstream aliases too) was given."""
        c = _HAS_WORDS.get(word)
        if c is None:
            c = canonical(word)
            c = FLAG_ALIASES.get(c, c)
            if len(_HAS_WORDS) < 256:  # the code's own words: a handful
                _HAS_WORDS[word] = c
        return c in self.flags

    @classmethod
    def from_request(cls, request):
        """Build Flags from an ng request dict (str keys)."""
        fast = _fast_fields
        if fast is not None:
            # the usual request's fields in C (omnirtp.control._fastbencode:
            # str keys, lists of plain words, received-from, ICE): None
            # for anything else, which the Python below does
            fields = fast(request)
            if fields is not None:
                # (object.__new__ as a global: ``cls.__new__`` is a look-up
                # through the class that 3.11 does not specialise)
                self = _new(cls)
                self.__dict__ = fields
                return self
        # what cls(raw=request) makes, without the generated __init__'s
        # keyword handling for 42 fields (three requests per call)
        self = _new(cls)
        # the defaults in field order (a copy of the table), then a fresh
        # container for each field with a default factory (_FACTORIES,
        # written out: a loop of factory calls costs a third more)
        fields = _DEFAULTS.copy()
        fields["replace"] = set()
        fields["rtcp_mux"] = set()
        fields["flags"] = set()
        fields["supports"] = set()
        fields["sdes"] = set()
        fields["osrtp"] = set()
        fields["raw"] = request
        fields["unknown"] = []
        self.__dict__ = fields
        builder = _Builder(self)
        handlers = _HANDLERS
        str_keys = _STR_KEYS
        for key, value in request.items():  # (_Builder.apply, inlined)
            # a key of a plain str field with a str value (command, call-id,
            # tags, sdp ...): what its _str handler sets, set here
            attr = str_keys.get(key)
            if attr is not None and value.__class__ is str:
                fields[attr] = value
                continue
            handler = handlers.get(key)
            if handler is None:
                self.unknown.append(key)
            else:
                handler(builder, value)
        if builder.codecs is not None or builder.direction is not None \
                or builder.from_interface is not None or builder.to_interface is not None:
            builder.finish()  # (else it has nothing to set)
        if self.unknown:
            log.debug(
                "ng {command}: ignored unknown keys/flags {unknown}",
                command=self.command, unknown=self.unknown,
            )
        return self


#: object.__new__ (Flags has no __new__ of its own): from_request's
_new = object.__new__

#: Flags' fields with a plain default, in field order (the fields with a
#: default factory are in it too, as placeholders, so the order is kept)
_DEFAULTS = {f.name: (f.default if f.default is not dataclasses.MISSING else None)
             for f in dataclasses.fields(Flags)}
#: (name, factory) of the fields with a default factory, which
#: from_request fills in itself (raw: the request)
_FACTORIES = tuple((f.name, f.default_factory) for f in dataclasses.fields(Flags)
                   if f.default_factory is not dataclasses.MISSING)
assert _FACTORIES == (("replace", set), ("rtcp_mux", set), ("flags", set), ("supports", set),
                      ("sdes", set), ("osrtp", set), ("raw", dict), ("unknown", list)), \
    "Flags.from_request makes the containers of these fields"


class _Builder:
    """Applies request items to a Flags in order (later scalars win)."""

    __slots__ = ("f", "codecs", "direction", "from_interface", "to_interface")

    def __init__(self, flags):
        self.f = flags
        #: codec part -> its items, for the parts the request names (made
        #: when the first is named)
        self.codecs = None
        #: the direction key's items (a list once it is given)
        self.direction = None
        self.from_interface = None
        self.to_interface = None

    def codec(self, part):
        """The items of codec ``part`` so far (a list to add to)."""
        codecs = self.codecs
        if codecs is None:
            codecs = self.codecs = {}
        items = codecs.get(part)
        if items is None:
            items = codecs[part] = []
        return items

    def apply(self, key, value):
        handler = _HANDLERS.get(key)
        if handler is None:
            self.f.unknown.append(key)
            return
        handler(self, value)

    def finish(self):
        f = self.f
        if self.codecs is not None:
            for part, items in self.codecs.items():
                setattr(f, _CODEC_ATTRS[part], tuple(items))
        if not self.direction and self.from_interface is None and self.to_interface is None:
            return  # f.direction stays the default, ()
        direction = list((self.direction or ())[:2])
        if self.from_interface is not None or self.to_interface is not None:
            while len(direction) < 2:
                direction.append("")
            if self.from_interface is not None:
                direction[0] = self.from_interface
            if self.to_interface is not None:
                direction[1] = self.to_interface
        f.direction = tuple(direction)

    # specific keys
    def _ice(self, value):
        items = as_list(value)
        if items:
            self.f.ice = canonical(items[-1]).replace("_", "-")

    def _direction(self, value):
        if self.direction is None:
            self.direction = []
        self.direction.extend(as_list(value))

    def _from_interface(self, value):
        self.from_interface = _as_str(value)

    def _to_interface(self, value):
        self.to_interface = _as_str(value)

    def _address_family(self, value):
        s = _as_str(value)
        if s:
            self.f.address_family = s.upper()

    def _received_from(self, value):
        if type(value) is list and len(value) == 2 and type(value[0]) is str \
                and type(value[1]) is str:
            self.f.received_from = (value[0], value[1])  # the usual [family, address]
            return
        if isinstance(value, (list, tuple)):
            items = [_as_str(v) for v in value]
            if len(items) >= 2 and items[0] is not None and items[1] is not None:
                self.f.received_from = (items[0], items[1])
            return
        s = _as_str(value)
        if s:
            self.f.received_from = ("IP6" if ":" in s else "IP4", s)

    def _record_call(self, value):
        s = _as_str(value)
        if s is None:
            return
        s = s.strip().lower()
        if s in _TRUE:
            self.f.record_call = True
        elif s in _FALSE:
            self.f.record_call = False
        else:
            self.f.unknown.append("record call=%s" % (s,))

    def _learning(self, word):
        """A known endpoint-learning mode, or None; rtpengine 10.5 ignores
        any other value (the daemon's mode applies)."""
        mode = canonical(word)
        if mode in LEARNING_MODES:
            self.f.endpoint_learning = mode
        else:
            self.f.unknown.append("endpoint-learning=%s" % (word,))

    def _endpoint_learning(self, value):
        items = as_list(value)
        if items:
            self._learning(items[-1])

    def _dtls(self, value):
        items = as_list(value)
        for item in items:
            c = canonical(item)
            self.f.dtls = "off" if c in _DTLS_OFF else c

    def _ice_lite(self, value):
        items = as_list(value)
        if items:
            self.f.ice_lite = canonical(items[-1])

    def _all(self, value):
        s = _as_str(value)
        self.f.all = s is None or canonical(s) != "none"

    def _codec(self, value):
        if not isinstance(value, dict):
            self.f.unknown.append("codec")
            return
        for key, items in value.items():
            if key in _CODEC_ATTRS:
                self.codec(key).extend(as_list(items))
            else:
                self.f.unknown.append("codec.%s" % (key,))

    def _rtpp_flags(self, value):
        s = _as_str(value)
        if s is None:
            return
        for key, item in parse_rtpp_flags(s):
            self._rtpp_item(key, item)

    def _rtpp_item(self, key, value):
        # rtpp-flags specials: from-tag=x implies directional, to-tag=x the flag
        if key == "from-tag":
            self.f.flags.add("directional")
        elif key == "to-tag":
            self.f.flags.add("to-tag")
        elif key in ("delete-delay",):
            key = "delete delay"
        if key in _HANDLERS:
            self.apply(key, value)
            return
        lower = key.lower()
        # key=value forms of prefixed words: codec-strip=PCMA, replace=origin
        for prefix, part in _CODEC_PREFIXES:
            if lower + "-" == prefix:
                self.codec(part).extend(as_list(value))
                return
        for prefix, attr in _LIST_PREFIXES:
            if lower + "-" == prefix:
                self._flag_prefixed(attr, as_list(value))
                return
        self.apply(key, value)

    def _flags(self, value):
        for word in as_list(value):
            self._flag(word)

    def _flag_prefixed(self, attr, values):
        if attr == "endpoint_learning":
            if values:
                self._learning(values[-1])
            return
        target = getattr(self.f, attr)
        for v in values:
            target.add(canonical(v) if attr in ("replace", "rtcp_mux") else v)

    def _flag(self, word):
        c = canonical(word)
        c = FLAG_ALIASES.get(c, c)
        if c == "webrtc":
            self._webrtc()
            return
        if c == "dtls-passive":
            self.f.dtls = "passive"
            return
        if c in KNOWN_FLAGS and c not in _OBSOLETE_FLAGS and not c.startswith(_PREFIXES):
            if c == "all":
                self.f.all = True
            elif c == "record-call":
                self.f.record_call = True
            self.f.flags.add(c)
            return
        for prefix, part in _CODEC_PREFIXES:
            if c.startswith(prefix) and len(c) > len(prefix):
                self.codec(part).append(word.strip()[len(prefix):])
                return
        for prefix, attr in _LIST_PREFIXES:
            if c.startswith(prefix) and len(c) > len(prefix):
                rest = _WS.sub("-", word.strip())[len(prefix):]
                self._flag_prefixed(attr, [rest])
                return
        if c in ("all",):
            self.f.all = True
        if c == "record-call":
            self.f.record_call = True
        if c in _OBSOLETE_FLAGS:
            log.info("ignoring obsolete flag {flag}", flag=c)
            return
        if c in KNOWN_FLAGS or c.startswith(("from-tags-", "sdp-attr-", "t38-", "t.38-",
                                                     "bundle-")):
            self.f.flags.add(c)
        else:
            self.f.unknown.append(word)

    def _webrtc(self):
        f = self.f
        f.transport_protocol = "UDP/TLS/RTP/SAVPF"
        f.ice = "force"
        f.flags.update(("trickle-ice", "no-rtcp-attribute", "generate-mid"))
        f.rtcp_mux.update(("offer", "require"))
        f.sdes.add("off")



# -- the key table: key -> handler(builder, value), built once ----------------

# what _fastbencode.flags_fields does for a key (its FK_* kinds)
_FK_STR, _FK_CANON_SET, _FK_PLAIN_SET, _FK_RECEIVED_FROM, _FK_IGNORED, _FK_ICE = range(6)


def _str(attr):
    def handler(b, value):
        if type(value) is not str:
            value = _as_str(value)
            if value is None:
                return
        setattr(b.f, attr, value)
    handler.str_attr = attr  # (from_request's _STR_KEYS)
    return handler


def _int(attr):
    def handler(b, value):
        n = as_int(value)
        if n is not None:
            setattr(b.f, attr, n)
        else:
            b.f.unknown.append("%s=%r" % (attr, value))
    return handler


#: (canonical?, a list value as a tuple) -> the words it adds to a set
#: field (bounded: values come from the network); a request's ``replace``
#: and ``supports`` are nearly always the same few lists
_SET_WORDS = {}
_SET_WORDS_MAX = 256


def _set_words(value, canon):
    """The words a set field's handler adds for ``value``: ``as_list``'s
    items (``canonical`` of each if ``canon``), in order."""
    if value.__class__ is list:
        try:
            key = (canon, tuple(value))
            words = _SET_WORDS.get(key)
        except TypeError:  # an unhashable item (a dict or list in the list)
            key = words = None
        if words is not None:
            return words
    else:
        key = None
    items = as_list(value)
    words = tuple([canonical(v) for v in items] if canon else items)
    if key is not None and len(_SET_WORDS) < _SET_WORDS_MAX:
        _SET_WORDS[key] = words
    return words


def _canon_set(attr):
    def handler(b, value):
        getattr(b.f, attr).update(_set_words(value, True))
    handler.fast = (_FK_CANON_SET, attr)  # (_FAST_KINDS)
    return handler


def _plain_set(attr):
    def handler(b, value):
        getattr(b.f, attr).update(_set_words(value, False))
    handler.fast = (_FK_PLAIN_SET, attr)
    return handler


def _codec_part(part):
    def handler(b, value):
        b.codec(part).extend(as_list(value))
    return handler


def _ignored(b, value):
    return None


_HANDLERS = {}
for _keys, _handler in (
    (K_COMMAND, _str("command")),
    (K_CALL_ID, _str("call_id")),
    (K_FROM_TAG, _str("from_tag")),
    (K_TO_TAG, _str("to_tag")),
    (K_VIA_BRANCH, _str("via_branch")),
    (K_SDP, _str("sdp")),
    (K_LABEL, _str("label")),
    (K_METADATA, _str("metadata")),
    (K_MEDIA_ADDRESS, _str("media_address")),
    (K_REPLACE, _canon_set("replace")),
    (K_RTCP_MUX, _canon_set("rtcp_mux")),
    (K_SUPPORTS, _plain_set("supports")),
    (K_SDES, _plain_set("sdes")),
    (K_OSRTP, _plain_set("osrtp")),
    (K_ICE, _Builder._ice),
    (K_TRANSPORT, _str("transport_protocol")),
    (K_DIRECTION, _Builder._direction),
    (K_FROM_INTERFACE, _Builder._from_interface),
    (K_TO_INTERFACE, _Builder._to_interface),
    (K_FLAGS, _Builder._flags),
    (K_CODEC, _Builder._codec),
    (K_ADDRESS_FAMILY, _Builder._address_family),
    (K_RECEIVED_FROM, _Builder._received_from),
    (K_DELETE_DELAY, _int("delete_delay")),
    (K_PTIME, _int("ptime")),
    (K_PTIME_REVERSE, _int("ptime_reverse")),
    (K_TOS, _int("tos")),
    (K_LIMIT, _int("limit")),
    (K_RECORD_CALL, _Builder._record_call),
    (K_ENDPOINT_LEARNING, _Builder._endpoint_learning),
    (K_DTLS, _Builder._dtls),
    (K_DTLS_FINGERPRINT, _str("dtls_fingerprint")),
    (K_ICE_LITE, _Builder._ice_lite),
    (K_ALL, _Builder._all),
    (K_RTPP_FLAGS, _Builder._rtpp_flags),
):
    for _key in _keys:
        _HANDLERS[_key] = _handler
for _key, _part in K_CODEC_TOPLEVEL.items():
    _HANDLERS[_key] = _codec_part(_part)
for _key in K_KNOWN_OTHER:
    _HANDLERS.setdefault(_key, _ignored)
#: the keys whose handler is ``_str(attr)`` -> attr (from_request sets a
#: str value itself)
_STR_KEYS = {_key: _handler.str_attr for _key, _handler in _HANDLERS.items()
             if hasattr(_handler, "str_attr")}
#: key -> (kind, field) for the keys whose usual values
#: _fastbencode.flags_fields takes (the C module's header says which)
_FAST_KINDS = {}
for _key, _handler in _HANDLERS.items():
    if hasattr(_handler, "str_attr"):
        _FAST_KINDS[_key] = (_FK_STR, _handler.str_attr)
    elif hasattr(_handler, "fast"):
        _FAST_KINDS[_key] = _handler.fast
    elif _handler is _Builder._received_from:
        _FAST_KINDS[_key] = (_FK_RECEIVED_FROM, "received_from")
    elif _handler is _Builder._ice:
        _FAST_KINDS[_key] = (_FK_ICE, "ice")
    elif _handler is _ignored:
        _FAST_KINDS[_key] = (_FK_IGNORED, "")
del _keys, _handler, _key, _part

try:
    from omnirtp.control._fastbencode import flags_fields as _fast_fields
    from omnirtp.control._fastbencode import flags_setup as _fast_setup
except ImportError:  # not built (or built before flags_fields): the Python does it all
    _fast_fields = None
else:
    _fast_setup(_DEFAULTS, _FAST_KINDS, tuple(
        name for name, factory in _FACTORIES if factory is set))

__all__ = ["Flags", "canonical", "as_list", "as_int", "parse_rtpp_flags",
           "TRANSPORTS", "KNOWN_FLAGS", "FLAG_ALIASES"]
