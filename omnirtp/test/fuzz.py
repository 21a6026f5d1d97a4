"""Fuzz targets for every parser omnirtp has, and their Hypothesis strategies.

Each target is a function ``check(data)`` that takes one ``bytes`` input and
asserts the target's properties (it raises ``AssertionError`` or an
unexpected exception when one does not hold).  ``data`` is the whole input,
so any failure can be kept as a regression fixture: a file under
``omnirtp/test/fixtures/fuzz/<target>/`` that ``test_fuzz`` replays.
Targets whose input is a sequence (ng datagrams, relay events, ICE events,
DTLS datagrams) frame it as a bencoded list.

The strategies build mostly well-formed input (bencode dictionaries with
real ng keys and SDP, STUN messages with valid FINGERPRINT and
MESSAGE-INTEGRITY, config files with real option names), then mutate a
part of it, so that the fuzzing reaches past the first sanity check.

``TARGETS`` maps a name to ``(check, strategy)``.  ``test_fuzz`` runs each
a few hundred times with a fixed seed; ``scripts/fuzz`` (``make fuzz``) runs
each for a million cases and saves what fails.
"""

import json
import random
import struct

from hypothesis import strategies as st
from twisted.internet.testing import FakeDatagramTransport

from omnirtp import errors
from omnirtp.call.negotiate import Interfaces, Negotiator
from omnirtp.call.registry import CallRegistry, Timeouts
from omnirtp.config.ini import parse_config
from omnirtp.config.model import build_config
from omnirtp.config.options import OPTIONS
from omnirtp.control import bencode
from omnirtp.control.commands import Dispatcher
from omnirtp.control.flags import KNOWN_FLAGS
from omnirtp.control.ng import NGProtocol
from omnirtp.media import dtls, stun
from omnirtp.media import rtcp as rtcp_parser
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.ice import IceAgent, parse_candidate
from omnirtp.media.relay import LEARNING_MODES, RelaySocket
from omnirtp.config.model import InterfaceSpec
from omnirtp.sdp.model import SessionDescription, inspect
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor

# --- generic mutation ----------------------------------------------------------


@st.composite
def mutated(draw, base, max_mutations=3):
    """``base`` (a strategy of bytes), then 0 to ``max_mutations`` byte-level
    changes: flip, insert, delete, truncate, duplicate a slice."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, max_mutations))):
        kind = draw(st.integers(0, 4))
        n = len(data)
        if kind == 0 and n:
            i = draw(st.integers(0, n - 1))
            data[i] = draw(st.integers(0, 255))
        elif kind == 1:
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == 2 and n:
            i = draw(st.integers(0, n - 1))
            del data[i:i + draw(st.integers(1, 8))]
        elif kind == 3 and n:
            del data[draw(st.integers(0, n - 1)):]
        elif kind == 4 and n:
            i = draw(st.integers(0, n - 1))
            j = draw(st.integers(i, min(n, i + 32)))
            data[j:j] = data[i:j]
    return bytes(data)


def framed(items):
    """A sequence input as bytes (a bencoded list)."""
    return bencode.encode(list(items))


def unframe(data):
    """The list a sequence target's fixture holds ([] for anything else).
    A list is taken as already decoded (``scripts/fuzz`` mutates decoded
    lists and encodes only the inputs it saves); the targets only read it."""
    if isinstance(data, list):
        return data
    try:
        value = bencode.decode(data)
    except bencode.BencodeError:
        return []
    return value if isinstance(value, list) else []


# --- bencode -------------------------------------------------------------------

_scalars = st.one_of(
    st.binary(max_size=20),
    st.integers(bencode.INT_MIN, bencode.INT_MAX),
)
bencode_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.binary(max_size=10), inner, max_size=5),
    ),
    max_leaves=20,
)


def check_bencode(data):
    """decode() returns a value or raises BencodeError; a value re-encodes
    to what decodes to the same value.  The C extension's fast paths (when
    built) give what the Python code gives: decode_text_prefix the same
    value and end or NotFast, encode the same bytes."""
    same_fast_decode(data)
    try:
        value = bencode.decode(data)
    except bencode.BencodeError:
        return
    again = bencode.encode(value)
    assert again == bencode.encode_py(value), (again, bencode.encode_py(value))
    assert bencode.decode(again) == value
    try:
        text, _ = bencode.decode_text_prefix_py(again)
    except bencode.NotFast:
        return
    assert bencode.encode(text) == bencode.encode_py(text)


def same_fast_decode(data):
    """bencode._c.decode_text_prefix(data) is what the Python fast path
    gives (None where it raises NotFast), types and key order included."""
    if bencode._c is None:
        return
    fast = bencode._c.decode_text_prefix(data)
    try:
        slow = bencode.decode_text_prefix_py(data)
    except bencode.NotFast:
        assert fast is None, (data, fast)
        return
    assert fast is not None and ascii(fast) == ascii(slow), (data, fast, slow)


bencode_inputs = st.one_of(
    st.binary(max_size=200),
    mutated(bencode_values.map(bencode.encode)),
    # deep nesting and long integers: the decoder's limits
    st.integers(1, 200).map(lambda n: b"l" * n + b"e" * n),
    st.integers(1, 40).map(lambda n: b"i" + b"9" * n + b"e"),
)


# --- SDP -----------------------------------------------------------------------

_addr4 = st.sampled_from(["192.0.2.10", "198.51.100.20", "0.0.0.0", "127.0.0.1", "10.0.0.1"])
_addr6 = st.sampled_from(["2001:db8::1", "::", "::1"])
_protos = st.sampled_from(["RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF",
                           "UDP/TLS/RTP/SAVPF", "udp", "TCP/MRCPv2", "UDP/BFCP"])
_attr_lines = st.one_of(
    st.sampled_from([
        "a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive", "a=rtcp-mux",
        "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000",
        "a=rtpmap:111 opus/48000/2", "a=fmtp:101 0-16", "a=fmtp:111 useinbandfec=1",
        "a=ptime:20", "a=ptime:0", "a=maxptime:40", "a=ice-ufrag:abcd", "a=ice-pwd:0123456789abcdef0123",
        "a=ice-lite", "a=ice-options:trickle", "a=end-of-candidates",
        "a=candidate:1 1 UDP 2130706431 192.0.2.10 49170 typ host",
        "a=candidate:2 1 udp 1694498815 203.0.113.1 5000 typ srflx raddr 192.0.2.10 rport 49170",
        "a=candidate:x 1 tcp 1 ::1 9 typ host tcptype active",
        "a=rtcp:49171", "a=rtcp:49171 IN IP4 192.0.2.10", "a=rtcp:0", "a=rtcp:70000",
        "a=rtcp:x IN IP7 1", "a=rtpengine:abc", "a=mid:0", "a=group:BUNDLE 0 1",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "a=fingerprint:sha-256 00:11", "a=setup:actpass", "a=rtcp-fb:* nack", "a=ssrc:1 cname:x",
        "b=AS:64", "i=info", "a=", "a=rtpmap:", "a=rtpmap:96", "a=fmtp:", "a=ptime:abc",
    ]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:=/ .-*", max_size=30).map(
        lambda t: "a=" + t),
)


@st.composite
def _media(draw):
    lines = ["m=%s %d %s %s" % (
        draw(st.sampled_from(["audio", "video", "application", "image", "text"])),
        draw(st.sampled_from([0, 9, 49170, 49172, 65535, 65536, 5004])),
        draw(_protos),
        " ".join(str(p) for p in draw(st.lists(
            st.sampled_from([0, 8, 9, 18, 96, 101, 111, 127, 128]), min_size=0, max_size=5)))
        or draw(st.sampled_from(["", "*", "webrtc-datachannel"])),
    )]
    if draw(st.booleans()):
        fam = draw(st.sampled_from(["IP4", "IP6"]))
        addr = draw(_addr4 if fam == "IP4" else _addr6)
        lines.append("c=IN %s %s" % (fam, addr))
    lines.extend(draw(st.lists(_attr_lines, max_size=8)))
    return lines


@st.composite
def sdp_documents(draw):
    """An SDP offer or answer (bytes), mostly valid, sometimes broken."""
    lines = ["v=0",
             "o=- %d %d IN IP4 %s" % (draw(st.integers(0, 2**40)), draw(st.integers(0, 9)),
                                      draw(_addr4)),
             "s=-"]
    if draw(st.booleans()):
        lines.append("c=IN IP4 %s" % draw(_addr4))
    lines.append("t=0 0")
    lines.extend(draw(st.lists(_attr_lines, max_size=3)))
    for m in draw(st.lists(_media(), min_size=0, max_size=3)):
        lines.extend(m)
    eol = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    text = eol.join(lines) + draw(st.sampled_from([eol, "", eol + eol]))
    return text.encode("utf-8")


sdp_inputs = st.one_of(mutated(sdp_documents(), max_mutations=2), st.binary(max_size=100))


def check_sdp(data):
    """parse() returns a description or raises SDPError; a parsed one writes
    back byte-exact, and inspect() returns one MediaInfo per m= line or
    raises SDPError.  A complete one then goes through an offer and an
    answer (the rewrite), whose SDP parses again with as many m= lines."""
    try:
        sd = SessionDescription.parse(data)
    except errors.SDPError:
        return
    assert sd.to_bytes() == data, (sd.to_bytes(), data)
    try:
        infos = inspect(sd)
    except errors.SDPError:
        return
    assert len(infos) == len(sd.media)
    stack = NGStack(pairs=8)
    sdp = data.decode("utf-8", "surrogateescape")
    for command, tags in (("offer", {}), ("answer", {"to-tag": "tt"})):
        request = {"command": command, "call-id": "sdp-fuzz", "from-tag": "ft", "sdp": sdp}
        request.update(tags)
        reply = stack.request(request)
        if reply.get("result") != "ok":
            assert reply.get("result") == "error", reply
            assert reply.get("error-reason") != errors.E_INTERNAL, reply
            break
        out = SessionDescription.parse(reply["sdp"])
        assert len(out.media) == len(sd.media), (reply["sdp"], data)
    stack.finish()


# --- ng end to end ------------------------------------------------------------

NG_ADDR = ("127.0.0.1", 5060)
KEEP_CALL = "unrelated-call-kept-by-the-fuzzer"
KEEP_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    "m=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n")
KEEP_ANSWER = KEEP_OFFER.replace("192.0.2.10", "198.51.100.20").replace("49170", "3456")
NG_RESULTS = ("ok", "pong", "error", "load limit")


class NGStack:
    """The control plane over an in-memory engine: NGProtocol, Dispatcher,
    Negotiator, CallRegistry, EmbeddedEngine on FakeNetwork sockets, one
    clock.  Holds one established call (``KEEP_CALL``) that the fuzz input
    never names; :meth:`finish` checks it survived and that every port
    came back."""

    #: one DTLS certificate for every harness (making one costs a key
    #: generation); the negotiator and the engine share it, as in the daemon
    _certificate = None

    def __init__(self, pairs=20, max_sessions=-1, timeouts=None):
        if NGStack._certificate is None:
            NGStack._certificate = dtls.Certificate.generate()
        certificate = NGStack._certificate
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(1700000000)
        self.net = FakeNetwork()
        self.engine = EmbeddedEngine(self.reactor, {"127.0.0.1": (30000, 30000 + 2 * pairs - 1)},
                                     bind=self.net.bind, rng=random.Random(1),
                                     certificate=certificate)
        self.registry = CallRegistry(self.engine, self.reactor,
                                     timeouts or Timeouts(timeout=60, delete_delay=30),
                                     max_sessions=max_sessions)
        negotiator = Negotiator(self.registry, Interfaces([InterfaceSpec("default", "127.0.0.1", None)]),
                                instance_id="fuzz", certificate=certificate)
        self.dispatch = Dispatcher(self.registry, negotiator, delete_delay=30)
        self.proto = NGProtocol(self.dispatch, self.reactor)
        self.transport = FakeDatagramTransport()
        self.proto.makeConnection(self.transport)
        self.ports_free = self._totals()["ports_free"]
        self.keep = None
        self._cookies = 0

    def _totals(self):
        result = []
        self.engine.totals().addCallback(result.append)
        assert result, "engine totals did not fire synchronously"
        return result[0]

    def request(self, request):
        """Send ``request`` (a dict) as bencode; return the decoded reply."""
        self._cookies += 1
        cookie = b"s%d" % self._cookies
        before = len(self.transport.written)
        self.proto.datagramReceived(cookie + b" " + bencode.encode(request), NG_ADDR)
        assert len(self.transport.written) == before + 1, "no reply to %r" % (request,)
        data, addr = self.transport.written[-1]
        assert data.startswith(cookie + b" ")
        return _str(bencode.decode(data[len(cookie) + 1:]))

    def establish(self):
        for command, extra in (("offer", {"sdp": KEEP_OFFER}),
                               ("answer", {"sdp": KEEP_ANSWER, "to-tag": "kt"})):
            request = {"command": command, "call-id": KEEP_CALL, "from-tag": "kf"}
            request.update(extra)
            reply = self.request(request)
            assert reply["result"] == "ok", reply
        self.keep = self._snapshot()
        self.ports_kept = self._totals()["ports_free"]

    def reset(self):
        """Between two inputs on one stack (:class:`NGBatch`): the unrelated
        call is intact and ping answers; pending delayed deletes run, every
        other call goes, and exactly the ports the unrelated call holds are
        taken.  A fresh NGProtocol (an empty cookie cache) for the next input."""
        assert self._snapshot() == self.keep, "the unrelated call changed"
        assert self.request({"command": "ping"}) == {"result": "pong"}
        self.reactor.advance(3600)
        for call in list(self.registry.calls.values()):
            if call.call_id != KEEP_CALL:
                self.registry.destroy(call, "terminated")
        assert self._snapshot() == self.keep, "the unrelated call changed"
        totals = self._totals()
        assert totals["ports_free"] == self.ports_kept, (totals, self.ports_kept)
        self.proto = NGProtocol(self.dispatch, self.reactor)
        self.transport = FakeDatagramTransport()
        self.proto.makeConnection(self.transport)

    def _snapshot(self):
        call = self.registry.get(KEEP_CALL)
        assert call is not None, "the unrelated call is gone"
        keys = sorted((m.rtp_key, m.rtcp_key) for ml in call.monologues for m in ml.medias
                      if m.has_ports)
        wiring = []
        for rtp, rtcp in keys:
            for key in (rtp, rtcp):
                relay = self.engine.socket(key)
                assert relay is not None, "socket %r of the unrelated call is gone" % (key,)
                wiring.append((key, relay.peer.local if relay.peer else None, relay.sdp_endpoint))
        return ([(ml.tag, ml.peer.tag if ml.peer else None) for ml in call.monologues],
                keys, wiring)

    def finish(self):
        """The unrelated call is intact, ping answers, and once every other
        call is gone every port is free again."""
        if self.keep is not None:
            assert self._snapshot() == self.keep, "the unrelated call changed"
        assert self.request({"command": "ping"}) == {"result": "pong"}
        # pending deletions (delete-delay) and then everything but KEEP_CALL
        self.reactor.advance(3600)
        for call in list(self.registry.calls.values()):
            if call.call_id != KEEP_CALL:
                self.registry.destroy(call, "terminated")
        if self.keep is not None:
            self.registry.destroy(self.registry.get(KEEP_CALL), "terminated")
        totals = self._totals()
        assert totals["ports_free"] == self.ports_free, (totals, self.ports_free)
        assert not self.registry.calls


def _str(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, dict):
        return {_str(k): _str(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_str(v) for v in value]
    return value


def _reply_body(body):
    if body[:1] == b"{":
        return json.loads(body.decode("utf-8", "surrogateescape"))
    return _str(bencode.decode(body))


def check_ng(data):
    """Every datagram with a cookie gets exactly one reply, with that cookie,
    a known result and (for errors) an error-reason that is not "Internal
    error"; afterwards the unrelated call is intact, ping answers, and no
    port is leaked."""
    stack = NGStack(pairs=12, max_sessions=6)
    stack.establish()
    _feed_ng(stack, data, 1)
    stack.finish()


def _feed_ng(stack, data, step):
    """check_ng's per-datagram properties; the clock moves ``step`` seconds
    after each datagram."""
    datagrams = [d for d in unframe(data) if isinstance(d, bytes)]
    written = stack.transport.written
    replies = {}  # cookie -> the reply it got (a retransmission gets it again)
    for datagram in datagrams:
        if KEEP_CALL.encode() in datagram:
            continue  # the fuzzer may not touch the unrelated call
        before = len(written)
        stack.proto.datagramReceived(datagram, NG_ADDR)
        space = datagram.find(b" ")
        if space <= 0:
            assert len(written) == before, datagram
            continue
        assert len(written) == before + 1, ("no reply", datagram)
        reply, addr = written[-1]
        assert addr == NG_ADDR
        cookie = datagram[:space]
        assert reply.startswith(cookie + b" "), (reply, datagram)
        if cookie in replies and datagram[space + 1:]:
            assert reply == replies[cookie], (reply, replies[cookie])
        replies[cookie] = reply
        body = _reply_body(reply[space + 1:])
        assert isinstance(body, dict), body
        assert body.get("result") in NG_RESULTS, body
        if body["result"] == "error":
            assert isinstance(body.get("error-reason"), str), body
            assert body["error-reason"] != errors.E_INTERNAL, (body, datagram)
        # the clock moves a little between requests (timeouts, delete-delay)
        stack.reactor.advance(step)


class NGBatch:
    """check_ng for long runs: one stack (and one established unrelated
    call) serves ``per_stack`` inputs, each with a fresh NGProtocol, instead
    of a new stack per input (making a stack and establishing its call is
    most of check_ng's time).  The properties are check_ng's, checked after
    every input (:meth:`NGStack.reset`); the call timeouts are out of reach
    here (they are 10**9 s long, so the unrelated call outlives the batch):
    check_ng, the fixtures and ``make test`` cover them.  A stack that saw a
    failure is never reused."""

    def __init__(self, per_stack=500):
        self.per_stack = per_stack
        self.stack = None
        self.used = 0

    def check(self, data):
        if self.stack is None or self.used >= self.per_stack:
            # reset() moves the clock an hour per input: the timeouts must outlast the batch
            never = 10 ** 9
            self.stack = NGStack(pairs=12, max_sessions=6, timeouts=Timeouts(
                timeout=never, silent_timeout=never, offer_timeout=never, delete_delay=30))
            self.stack.establish()
            self.used = 0
        self.used += 1
        stack, self.stack = self.stack, None
        _feed_ng(stack, data, 0.05)
        stack.reset()
        self.stack = stack


_call_ids = st.sampled_from(["c1", "c2", "c3", "", "c1 "])
_tags = st.sampled_from(["ft", "tt", "t3", "", "ft2"])
_flag_words = st.sampled_from(sorted(KNOWN_FLAGS) + ["codec-strip-PCMU", "codec-mask-all",
                                                     "codec-offer-opus", "bogus-flag", ""])
_ng_values = st.one_of(st.text(max_size=12), st.integers(-3, 300),
                       st.lists(st.text(max_size=6), max_size=3))


@st.composite
def ng_requests(draw):
    """One ng request dictionary (str keys, str/int/list/dict values)."""
    command = draw(st.sampled_from(["offer", "offer", "answer", "answer", "delete", "query",
                                    "list", "ping", "statistics", "bogus", "OFFER"]))
    request = {"command": command}
    if draw(st.integers(0, 9)):
        request["call-id"] = draw(_call_ids)
    if draw(st.integers(0, 9)):
        request["from-tag"] = draw(_tags)
    if command != "offer" and draw(st.booleans()):
        request["to-tag"] = draw(_tags)
    if command in ("offer", "answer") and draw(st.integers(0, 9)):
        request["sdp"] = draw(sdp_documents()).decode("utf-8")
    if draw(st.booleans()):
        request["flags"] = draw(st.lists(_flag_words, max_size=4))
    for key, values in (
        ("replace", st.lists(st.sampled_from(["origin", "session-connection", "x"]), max_size=2)),
        ("direction", st.lists(st.sampled_from(["internal", "external", "default", "x"]),
                               max_size=3)),
        ("rtcp-mux", st.lists(st.sampled_from(["offer", "demux", "accept", "reject", "require"]),
                              max_size=2)),
        ("ICE", st.sampled_from(["remove", "force", "default", "force-relay", "x"])),
        ("transport-protocol", _protos),
        ("codec", st.dictionaries(st.sampled_from(["strip", "offer", "mask", "except",
                                                   "transcode"]),
                                  st.lists(st.sampled_from(["PCMU", "PCMA", "opus", "all",
                                                            "telephone-event", "8"]),
                                           max_size=3), max_size=3)),
        ("TOS", st.integers(-2, 300)),
        ("delete-delay", st.one_of(st.integers(-2, 100), st.text(max_size=4))),
        ("ptime", st.integers(-1, 200)),
        ("via-branch", st.sampled_from(["b1", "b2"])),
        ("supports", st.lists(st.sampled_from(["load limit", "x"]), max_size=2)),
        ("limit", st.integers(-2, 5)),
        ("received-from", st.lists(st.sampled_from(["IP4", "192.0.2.1", "IP6", "x"]),
                                   max_size=2)),
        ("media-address", st.sampled_from(["192.0.2.5", "2001:db8::5", "bad"])),
        ("address-family", st.sampled_from(["IP4", "IP6", "IP5"])),
        ("endpoint-learning", st.sampled_from(["off", "immediate", "delayed", "heuristic", "x"])),
        ("rtpp-flags", st.text(alphabet="abcdefghijklmnopqrstuvwxyz-=[] ", max_size=30)),
        ("label", st.text(max_size=5)),
        ("all", st.sampled_from(["all", "none", "offer-answer", "except-offer-answer"])),
    ):
        if draw(st.integers(0, 5)) == 0:
            request[key] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        request[draw(st.sampled_from(["SDP", "call id", "from tag", "sdp"]))] = draw(_ng_values)
    return request


def _json_safe_request(request):
    return json.dumps(request).encode("utf-8")


@st.composite
def ng_datagrams(draw):
    cookie = draw(st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f"])) + \
        b"%d" % draw(st.integers(0, 3))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=60))
    request = draw(ng_requests())
    if kind == 1:
        payload = _json_safe_request(request)
    else:
        payload = bencode.encode(request)
    if kind in (2, 3):
        payload = draw(mutated(st.just(payload), max_mutations=2))
    return cookie + b" " + payload


ng_inputs = st.lists(ng_datagrams(), min_size=1, max_size=8).map(framed)


# --- relay (RTP/RTCP on RelaySocket) ------------------------------------------

RELAY_HOST = "127.0.0.1"
RELAY_LOCAL = [(RELAY_HOST, 30000), (RELAY_HOST, 30001), (RELAY_HOST, 30002), (RELAY_HOST, 30003)]
RELAY_SOURCES = [("10.0.0.1", 5000), ("10.0.0.1", 5001), ("10.0.0.2", 6000),
                 ("10.0.0.2", 6001), ("10.0.0.1", 7777), ("203.0.113.66", 5000)]
_MODES = sorted(LEARNING_MODES)


def check_relay(data):
    """Two parties, RTP and RTCP sockets each; configuration and datagrams
    from parties and strangers in any order: nothing raises; every datagram
    is counted once (packets or junk); what leaves is an unchanged copy of
    a counted packet, sent from a relay socket to an address it was told or
    learnt; a socket never sends more than its peers received."""
    reactor = MemoryUDPReactor()
    reactor.advance(1000.0)
    net = FakeNetwork()
    socks = [RelaySocket(reactor, net.bind(*key), key) for key in RELAY_LOCAL]
    for s in socks:
        s.start()
    # each RTCP socket knows its party's RTP socket, as the engine wires them
    socks[1].rtp_sibling = socks[0]
    socks[3].rtp_sibling = socks[2]
    # A's RTP/RTCP (0, 1) <-> B's RTP/RTCP (2, 3)
    for i, (peer, ep) in enumerate(((2, RELAY_SOURCES[0]), (3, RELAY_SOURCES[1]),
                                    (0, RELAY_SOURCES[2]), (1, RELAY_SOURCES[3]))):
        socks[i].configure(peer=socks[peer], endpoint=ep, reset=True)
    received = [0] * 4
    valid = set()
    for event in unframe(data):
        if not isinstance(event, list) or not event or not isinstance(event[0], int):
            continue
        args = [a if isinstance(a, (int, bytes)) else 0 for a in event[1:]] + [0] * 8
        kind = event[0] % 3
        if kind == 0:
            i = args[0] % 4 if isinstance(args[0], int) else 0
            src = RELAY_SOURCES[args[1] % len(RELAY_SOURCES)] if isinstance(args[1], int) \
                else RELAY_SOURCES[0]
            payload = args[2] if isinstance(args[2], bytes) else b""
            net.inject(RELAY_LOCAL[i], payload, src)
            received[i] += 1
            valid.add(payload)
            net.pump(reactor)
        elif kind == 1:
            ms = args[0] if isinstance(args[0], int) else 0
            reactor.advance(min(abs(ms), 10**7) / 1000.0)
        else:
            ints = [a if isinstance(a, int) else 0 for a in args]
            i = ints[0] % 4
            peer = ints[1] % 5
            ep = ints[2] % (len(RELAY_SOURCES) + 1)
            rtcp_peer = ints[7] % 5
            socks[i].configure(
                peer=socks[peer] if peer < 4 and peer != i else None,
                endpoint=RELAY_SOURCES[ep] if ep < len(RELAY_SOURCES) else None,
                rtcp_peer=socks[rtcp_peer] if rtcp_peer < 4 and rtcp_peer != i else None,
                learning=_MODES[ints[3] % len(_MODES)],
                strict=bool(ints[4] & 1), handover=bool(ints[4] & 2),
                asymmetric=bool(ints[4] & 4), reset=bool(ints[5] & 1))
    for i, s in enumerate(socks):
        assert s.packets + s.junk == received[i], (i, s.packets, s.junk, received[i])
        assert s.errors >= s.junk
    local = set(RELAY_LOCAL)
    sent_from = {}
    for payload, source, dest in net.sent:
        assert source in local, source
        assert payload in valid, payload
        sent_from[source] = sent_from.get(source, 0) + 1
    forwarded = sum(sent_from.values())
    assert forwarded <= sum(s.packets for s in socks)
    for s in socks:
        s.close()
    assert not net.bound


@st.composite
def _rtp_like(draw):
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(max_size=40))
    pt = draw(st.sampled_from([0, 8, 96, 101, 200, 201, 202, 203, 204, 72, 77, 192, 223, 224]))
    first = draw(st.sampled_from([0x80, 0x81, 0x90, 0xA0, 0x00, 0x40, 0xC0, 0x16, 0x14]))
    body = draw(st.binary(max_size=30))
    return bytes([first, pt]) + body


@st.composite
def relay_events(draw):
    kind = draw(st.integers(0, 9))
    if kind < 7:
        return [0, draw(st.integers(0, 3)), draw(st.integers(0, 5)), draw(_rtp_like())]
    if kind < 9:
        return [1, draw(st.integers(0, 4000))]
    return [2] + draw(st.lists(st.integers(0, 7), min_size=8, max_size=8))


relay_inputs = st.lists(relay_events(), min_size=1, max_size=25).map(framed)


# --- STUN ----------------------------------------------------------------------

ICE_LOCAL = ("AAAAufrg", "AAAApassword0123456789xx")
ICE_REMOTE = ("BBBBufrg", "BBBBpassword0123456789yy")
_ATTR_TYPES = [0x0006, 0x0024, 0x0025, 0x8029, 0x802A, 0x0020, 0x0009, 0x000A, 0x0001,
               0x8022, 0x0014, 0x0015, 0x0003, 0x7FFF, 0xC001]


@st.composite
def _attribute(draw):
    atype = draw(st.sampled_from(_ATTR_TYPES))
    if atype == 0x0006:
        value = draw(st.sampled_from([
            b"AAAAufrg:BBBBufrg", b"BBBBufrg:AAAAufrg", b"AAAAufrg", b":", b"", b"\xff\xfe"]))
    elif atype == 0x0024:
        value = struct.pack("!I", draw(st.integers(0, 2**32 - 1)))
    elif atype in (0x8029, 0x802A):
        value = struct.pack("!Q", draw(st.integers(0, 2**64 - 1)))
    elif atype == 0x0025:
        value = b""
    elif atype in (0x0020, 0x0001):
        family = draw(st.sampled_from([1, 2, 3]))
        value = bytes([0, family]) + struct.pack("!H", draw(st.integers(0, 65535))) + \
            draw(st.binary(min_size=0, max_size=16))
    elif atype == 0x0009:
        value = b"\x00\x00" + bytes([draw(st.integers(0, 7)), draw(st.integers(0, 255))]) + \
            draw(st.binary(max_size=8))
    else:
        value = draw(st.binary(max_size=12))
    return atype, value


@st.composite
def stun_messages(draw, tid=None):
    """A STUN message: type, attributes, then (usually) MESSAGE-INTEGRITY
    with one of the agents' keys and FINGERPRINT, computed properly."""
    mtype = draw(st.sampled_from([0x0001, 0x0001, 0x0101, 0x0111, 0x0011, 0x0002, 0x0003]))
    if tid is None:
        tid = draw(st.binary(min_size=12, max_size=12))
    body = b""
    for atype, value in draw(st.lists(_attribute(), max_size=6)):
        body += struct.pack("!HH", atype, len(value)) + value + bytes(-len(value) & 3)
    data = struct.pack("!HHI", mtype, len(body), stun.COOKIE) + tid + body
    seal = draw(st.integers(0, 4))
    if seal == 0:
        return data
    key = draw(st.sampled_from([ICE_LOCAL[1], ICE_REMOTE[1], "wrong"])).encode()
    return stun._seal(data, key if seal > 1 else None)


stun_inputs = st.one_of(
    mutated(stun_messages(), max_mutations=2),
    stun_messages(),
    st.binary(max_size=60),
)


def check_stun(data):
    """decode() returns a Decoded or raises StunError (BadFingerprint
    included); integrity_ok() on a decoded message answers a bool."""
    try:
        decoded = stun.decode(data)
    except stun.StunError:
        return
    for key in (ICE_LOCAL[1].encode(), ICE_REMOTE[1].encode()):
        assert stun.integrity_ok(decoded.message, data, key) in (True, False)
    assert isinstance(decoded.unknown, tuple)


# --- ICE agent -----------------------------------------------------------------

ICE_SOURCES = [("127.0.0.1", 40002), ("127.0.0.1", 40004), ("203.0.113.9", 1234),
               ("::1", 40002)]


def check_ice(data):
    """An agent (full controlling, full controlled or lite) gets STUN
    datagrams, answers to its own checks and time: nothing raises out of
    datagram(), internal-errors stays 0, and everything it sends goes to an
    address that sent to it or is a remote candidate."""
    events = unframe(data)
    mode = events[0] % 3 if events and isinstance(events[0], int) else 0
    from twisted.internet.task import Clock
    clock = Clock()
    sent = []
    agent = IceAgent(clock, lambda d, a: sent.append((d, a)), lambda a: None,
                     ICE_LOCAL[0], ICE_LOCAL[1], controlling=(mode == 0), lite=(mode == 2),
                     local_address=("127.0.0.1", 40000), tie_breaker=5, random=random.Random(3))
    agent.set_remote_credentials(*ICE_REMOTE)
    agent.add_remote_candidate("1 1 udp 2130706431 127.0.0.1 40002 typ host")
    agent.add_remote_candidate(parse_candidate("2 1 udp 1694498815 127.0.0.1 40004 typ srflx"))
    agent.start()
    allowed = {("127.0.0.1", 40002), ("127.0.0.1", 40004)}
    for event in events[1:]:
        if not isinstance(event, list) or len(event) < 2:
            continue
        kind, arg = event[0], event[1]
        if kind == 0 and isinstance(arg, bytes):
            src = ICE_SOURCES[event[2] % len(ICE_SOURCES)] if len(event) > 2 and \
                isinstance(event[2], int) else ICE_SOURCES[0]
            allowed.add(src)
            agent.datagram(arg, src)
        elif kind == 1 and isinstance(arg, int):
            clock.advance(min(abs(arg), 100000) / 1000.0)
        elif kind == 2 and isinstance(arg, bytes) and len(event) > 2 and isinstance(event[2], int):
            # a response to the agent's k-th request: its transaction id
            requests = [d for d, _ in sent if d[:2] == b"\x00\x01" and len(d) >= 20]
            if requests:
                request, addr = next((d, a) for d, a in sent
                                     if d is requests[event[2] % len(requests)])
                tid = request[8:20]
                message = arg[:2] + struct.pack("!H", 0) + arg[4:8] + tid + arg[20:]
                body = message[20:]
                body = body[:len(body) - len(body) % 4]
                message = message[:2] + struct.pack("!H", len(body)) + \
                    struct.pack("!I", stun.COOKIE) + tid + body
                if len(event) > 3 and event[3]:
                    message = stun._seal(message, ICE_REMOTE[1].encode())
                agent.datagram(message, addr)
    assert agent.counters()["internal-errors"] == 0, agent.counters()
    for _, addr in sent:
        assert addr in allowed, addr
    agent.stop()


@st.composite
def ice_events(draw):
    kind = draw(st.integers(0, 9))
    if kind < 5:
        return [0, draw(stun_inputs), draw(st.integers(0, 3))]
    if kind < 7:
        return [1, draw(st.integers(0, 5000))]
    response = draw(stun_messages(tid=b"\x00" * 12))
    return [2, response, draw(st.integers(0, 10)), draw(st.integers(0, 1))]


ice_inputs = st.tuples(st.integers(0, 2), st.lists(ice_events(), max_size=12)).map(
    lambda t: framed([t[0]] + t[1]))


# --- config file ---------------------------------------------------------------

_option_names = [o.name for o in OPTIONS]
_config_values = st.one_of(
    st.sampled_from(["127.0.0.1", "::1", "[::1]", "127.0.0.1:22222", "22222", "[::1]:2",
                     "30000", "40000", "0", "-1", "70000", "true", "false", "yes", "1",
                     "internal/127.0.0.1!203.0.113.1", "a/b/c", "PRIVATE_IP", "${PRIVATE_IP}",
                     "${UNDEFINED}", "$$", "$", "off", "heuristic", "10.0.0.0/8",
                     "10.0.0.0/40", "127.0.0.1;::1", ";;", "x" * 50, "0.5", "1e3",
                     "pw@10.0.0.9:6379/1", "local1", "host.invalid"]),
    st.text(max_size=15),
)


@st.composite
def config_files(draw):
    lines = []
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["[rtpengine]", "[other]", "[rtpengine", "[]"])))
    lines.append("[rtpengine]")
    for _ in range(draw(st.integers(0, 10))):
        key = draw(st.one_of(st.sampled_from(_option_names + ["interfaces", "port_min"]),
                             st.text(alphabet="abcdefghij-_ ", min_size=1, max_size=8)))
        sep = draw(st.sampled_from([" = ", "=", ": ", " "]))
        lines.append(key + sep + draw(_config_values))
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["# comment", "; comment", "  indented = 1", "=x"])))
    return "\n".join(lines).encode("utf-8")


config_inputs = st.one_of(mutated(config_files(), max_mutations=2), st.binary(max_size=80))


def _no_dns(host):
    raise OSError("no DNS while fuzzing")


def check_config(data):
    """parse_config and build_config return or raise ConfigError, nothing
    else (no DNS: names fail to resolve)."""
    environ = {"PRIVATE_IP": "192.0.2.1"}
    try:
        parsed = parse_config(data, "fuzz.conf", "rtpengine", environ, {}, None)
        values = dict(parsed.values)
        values.setdefault("interface", (("127.0.0.1",), "default"))
        values.setdefault("listen-ng", (("127.0.0.1:22222",), "default"))
        build_config(values, config_file="fuzz.conf", warnings=parsed.warnings,
                     resolve=_no_dns, variables=environ)
    except errors.ConfigError:
        return


# --- DTLS records and the DTLS endpoint ------------------------------------------

#: a fingerprint no certificate has: the fuzzer can never complete a verified handshake
_NO_FINGERPRINT = "sha-256 " + ":".join(["00"] * 32)
_dtls_flights = []


def _real_flights():
    """Datagrams of a real handshake (a ClientHello, the server's answer),
    made once: seeds that reach past the record checks into OpenSSL."""
    if not _dtls_flights:
        from twisted.internet.task import Clock
        certificate = NGStack._certificate or dtls.Certificate.generate()
        NGStack._certificate = certificate
        client_out, server_out = [], []
        client = dtls.DtlsEndpoint(dtls.CLIENT, certificate, None, client_out.append,
                                   lambda *a: None, lambda r: None, Clock())
        server = dtls.DtlsEndpoint(dtls.SERVER, certificate, None, server_out.append,
                                   lambda *a: None, lambda r: None, Clock())
        client.start()
        for datagram in client_out:
            server.datagram(datagram)
        _dtls_flights.extend(client_out + server_out)
        client.close()
        server.close()
    return _dtls_flights


@st.composite
def dtls_record(draw):
    """One DTLS record: mostly well-formed headers, handshake bodies with
    plausible message headers, lengths sometimes wrong."""
    ctype = draw(st.sampled_from([20, 21, 22, 22, 22, 23, 24, 19]))
    version = draw(st.sampled_from([b"\xfe\xfd", b"\xfe\xff", b"\x03\x03"]))
    epoch = draw(st.sampled_from([0, 0, 0, 1, 2, 65535]))
    seq = draw(st.integers(0, (1 << 48) - 1))
    if ctype == 22:
        body = b""
        for _ in range(draw(st.integers(1, 3))):
            fragment = draw(st.binary(max_size=40))
            total = draw(st.sampled_from([len(fragment), len(fragment) + 10, 0, 1 << 20]))
            offset = draw(st.sampled_from([0, 0, 5, total]))
            body += struct.pack("!B", draw(st.integers(0, 24))) + total.to_bytes(3, "big") + \
                struct.pack("!H", draw(st.integers(0, 3))) + offset.to_bytes(3, "big") + \
                len(fragment).to_bytes(3, "big") + fragment
    elif ctype == 20:
        body = draw(st.sampled_from([b"\x01", b"\x02", b"", b"\x01\x01"]))
    else:
        body = draw(st.binary(max_size=48))
    length = draw(st.sampled_from([len(body)] * 4 + [len(body) + 1, max(0, len(body) - 1),
                                                    0xFFFF]))
    return (struct.pack("!B", ctype) + version + struct.pack("!H", epoch) +
            seq.to_bytes(6, "big") + struct.pack("!H", length) + body)


_flight = st.integers(0, 1 << 16).map(lambda i: _real_flights()[i % len(_real_flights())])

dtls_datagrams = st.one_of(
    mutated(_flight, max_mutations=3),
    _flight,
    st.lists(dtls_record(), min_size=1, max_size=3).map(b"".join),
    mutated(st.lists(dtls_record(), min_size=1, max_size=3).map(b"".join), max_mutations=2),
    st.binary(max_size=40).map(lambda b: bytes([22, 0xFE, 0xFD]) + b),
)


def check_dtls(data):
    """The record checks (``dtls_records``, ``plausible_handshake``) answer
    for any bytes; a DTLS endpoint (server or client) fed datagrams and time
    never raises, counts no internal error, sends nothing larger than its
    MTU, never hands out keys (no peer can match its fingerprint) and leaves
    no timer behind once closed."""
    events = unframe(data)
    role = dtls.CLIENT if events and isinstance(events[0], int) and events[0] % 2 else dtls.SERVER
    from twisted.internet.task import Clock
    clock = Clock()
    sent, keys, failures = [], [], []
    certificate = NGStack._certificate or dtls.Certificate.generate()
    NGStack._certificate = certificate
    endpoint = dtls.DtlsEndpoint(role, certificate, _NO_FINGERPRINT, sent.append,
                                 lambda *k: keys.append(k), failures.append, clock)
    endpoint.start()
    for event in events[1:]:
        if not isinstance(event, list) or len(event) < 2:
            continue
        kind, arg = event[0], event[1]
        if kind == 0 and isinstance(arg, bytes):
            types = dtls.dtls_records(arg)
            assert types is None or (types and all(20 <= t <= 23 for t in types)), types
            if types is not None:
                assert dtls.plausible_handshake(arg, dtls._FROM_CLIENT) in (True, False)
                assert dtls.plausible_handshake(arg, dtls._FROM_SERVER) in (True, False)
            endpoint.datagram(arg, ("127.0.0.1", 40000))
        elif kind == 1 and isinstance(arg, int):
            clock.advance(min(abs(arg), 100000) / 1000.0)
    counters = endpoint.counters()
    assert counters["errors"] == 0, counters
    assert keys == [], keys
    assert endpoint.state in (dtls.NEW, dtls.HANDSHAKING, dtls.VERIFYING, dtls.CONNECTED,
                              dtls.FAILED, dtls.CLOSED), endpoint.state
    assert len(failures) <= 1, failures
    for datagram in sent:
        assert isinstance(datagram, bytes) and len(datagram) <= endpoint.mtu, len(datagram)
    endpoint.close()
    assert clock.getDelayedCalls() == [], clock.getDelayedCalls()


@st.composite
def dtls_events(draw):
    if draw(st.integers(0, 4)) < 4:
        return [0, draw(dtls_datagrams)]
    return [1, draw(st.integers(0, 70000))]


dtls_inputs = st.tuples(st.integers(0, 1), st.lists(dtls_events(), max_size=8)).map(
    lambda t: framed([t[0]] + t[1]))


# --- RTCP reports ----------------------------------------------------------------


@st.composite
def rtcp_compounds(draw):
    """A compound RTCP datagram: SR/RR with 0-3 report blocks, SDES, BYE,
    feedback; well-formed before mutation."""
    out = b""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from((rtcp_parser.SR, rtcp_parser.RR, 202, 203, 205, 206)))
        count = draw(st.integers(0, 3)) if kind in (rtcp_parser.SR, rtcp_parser.RR) else draw(
            st.integers(0, 31))
        body = struct.pack("!I", draw(st.integers(0, 0xFFFFFFFF)))
        if kind == rtcp_parser.SR:
            body += draw(st.binary(min_size=20, max_size=20))
        if kind in (rtcp_parser.SR, rtcp_parser.RR):
            body += draw(st.binary(min_size=24 * count, max_size=24 * count))
        else:
            body += draw(st.binary(max_size=12)).ljust(12, b"\0")
        out += struct.pack("!BBH", 0x80 | count, kind, len(body) // 4) + body
    return out


def check_rtcp(data):
    """reports() returns Report tuples or raises RtcpError; every block's
    figures are within their fields' ranges."""
    try:
        found = rtcp_parser.reports(data)
    except rtcp_parser.RtcpError:
        return
    assert isinstance(found, tuple)
    for report in found:
        assert report.kind in (rtcp_parser.SR, rtcp_parser.RR)
        assert (report.sender is None) == (report.kind == rtcp_parser.RR)
        for block in report.blocks:
            assert 0 <= block.fraction_lost <= 255
            assert -0x800000 <= block.cumulative_lost <= 0x7FFFFF
            assert 0 <= rtcp_parser.loss_percent(block.fraction_lost) <= 100


rtcp_inputs = st.one_of(mutated(rtcp_compounds(), max_mutations=2), st.binary(max_size=80))


TARGETS = {
    "bencode": (check_bencode, bencode_inputs),
    "ng": (check_ng, ng_inputs),
    "sdp": (check_sdp, sdp_inputs),
    "relay": (check_relay, relay_inputs),
    "stun": (check_stun, stun_inputs),
    "ice": (check_ice, ice_inputs),
    "config": (check_config, config_inputs),
    "dtls": (check_dtls, dtls_inputs),
    "rtcp": (check_rtcp, rtcp_inputs),
}
