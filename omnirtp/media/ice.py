"""An ICE agent for one component on one media socket (RFC 8445, RFC 7675).

Pure and reactor-free: the agent gets datagrams through :meth:`IceAgent.datagram`
(the pipeline's RFC 7983 demultiplexer hands it those whose first byte is
0-3), sends through the ``send(data, address)`` callable it was built with
(out of that same socket), and runs its timers on the ``IReactorTime`` it was
given (``twisted.internet.task.Clock`` in tests).

What it does, as rtpengine does for a browser leg:

- answers Binding requests: USERNAME ``<local ufrag>:<remote ufrag>``,
  MESSAGE-INTEGRITY with our password, FINGERPRINT; success responses carry
  XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and FINGERPRINT.  A request without
  USERNAME, MESSAGE-INTEGRITY or PRIORITY gets 400, a wrong ufrag or integrity
  401 (both unsigned, RFC 5389 10.1.2), an unknown comprehension-required
  attribute 420 with UNKNOWN-ATTRIBUTES, a role conflict 487 or a role switch
  (RFC 8445 7.3.1.1).  Anything malformed (framing, FINGERPRINT) is dropped.
  Every case is counted; nothing raises out of :meth:`~IceAgent.datagram`;
- full mode: connectivity checks from our socket to every remote candidate
  (host, srflx, relay and learnt peer-reflexive addresses alike), paced one
  per ``TA`` with retransmissions (``RTO`` doubling, ``RC`` transmissions, then
  ``RM`` x RTO), pair states Frozen/Waiting/In-Progress/Succeeded/Failed by
  foundation, triggered checks, regular nomination (the controlling agent
  nominates the best valid pair with USE-CANDIDATE; the controlled agent
  follows the USE-CANDIDATE it receives);
- lite mode (RFC 8445 2.5): answers only, never checks, always controlled; the
  full peer's USE-CANDIDATE selects the address;
- the selected address is reported through ``on_selected(address)`` (again if
  it changes); :meth:`~IceAgent.authorised` says whether media may go to, or
  come from, an address;
- consent freshness (RFC 7675): requests are answered for as long as the agent
  lives; a full agent sends a consent check on the selected pair every
  ``CONSENT_INTERVAL`` (randomised 0.8-1.2) and calls ``on_consent_lost()``
  after ``CONSENT_TIMEOUT`` without a response.

A pair is a local base (a socket: base 0, the one the agent is built for,
and the ``bases`` given, one per further local address of the interface: the
host candidates of one component) and a remote address; each base pairs
with the remote candidates of its address family.  Its local candidate's
priority is the ``local_priority`` written in our ``a=candidate`` (base 0) or
the one :func:`local_preference` gives base N.  A request is answered out of
the base it arrived on (``datagram(data, source, base)``), and
``selected_base`` says which base the selected pair has.  One agent per
component: with rtcp-mux off, component 2 is a second agent on the RTCP
sockets.

Not handled here: ICE restarts (new credentials need a new agent), aggressive
nomination, end-of-candidates (the agent reports failure once every known pair
failed; a candidate added later reopens the checks), consent tracking in lite
mode (a lite agent never sends, so it has nothing to time out; the media
timeouts cover a vanished peer).
"""

import ipaddress
import random as _random
import re
from collections import deque

from twisted.logger import Logger

from omnirtp.media import stun
from omnirtp.tokens import token

# --- candidates -------------------------------------------------------------

#: RFC 8445 5.1.2.2 recommended type preferences
TYPE_PREFERENCE = {"host": 126, "prflx": 110, "srflx": 100, "relay": 0}

_FOUNDATION = re.compile(r"^[A-Za-z0-9+/]{1,32}$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+$")


def candidate_priority(type_, component=1, local_preference=65535):
    """RFC 8445 5.1.2.1: ``2^24 * type preference + 2^8 * local preference + (256 - component)``."""
    if not 1 <= component <= 256:
        raise ValueError("ICE component %r outside 1-256" % (component,))
    if not 0 <= local_preference <= 65535:
        raise ValueError("ICE local preference %r outside 0-65535" % (local_preference,))
    return (TYPE_PREFERENCE[type_] << 24) | (local_preference << 8) | (256 - component)


def local_preference(base):
    """The local preference of our host candidate on the ``base``-th local
    address of an interface (0: the one the SDP's c= line names): 65535,
    65534, ... as rtpengine 10.5 writes them."""
    return 65535 - base


def pair_priority(controlling, controlled):
    """RFC 8445 6.1.2.3: the priority of a pair from the controlling agent's
    candidate priority ``controlling`` (G) and the controlled agent's (D)."""
    g, d = controlling, controlled
    return (min(g, d) << 32) + 2 * max(g, d) + (1 if g > d else 0)


class Candidate:
    """One remote candidate: the value of an ``a=candidate`` attribute."""

    __slots__ = (
        "foundation",
        "component",
        "transport",
        "priority",
        "address",
        "port",
        "type",
        "related_address",
        "related_port",
        "extensions",
    )

    def __init__(
        self,
        foundation,
        component,
        transport,
        priority,
        address,
        port,
        type,
        related_address=None,
        related_port=None,
        extensions=(),
    ):
        self.foundation = foundation
        self.component = component
        self.transport = transport
        self.priority = priority
        self.address = address
        self.port = port
        self.type = type
        self.related_address = related_address
        self.related_port = related_port
        #: the other ``name value`` pairs in order, e.g. (("generation", "0"),)
        self.extensions = tuple(extensions)

    def _key(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        return isinstance(other, Candidate) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return "Candidate(%s)" % ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.__slots__)

    @property
    def ip(self):
        """The address as an ``ipaddress`` object, or None for a host name
        (e.g. a browser's mDNS ``<uuid>.local``)."""
        try:
            return ipaddress.ip_address(self.address)
        except ValueError:
            return None


def _integer(text, what, low, high):
    if not text.isdigit() or len(text) > 10:
        raise ValueError("a=candidate: %s %r is not a number" % (what, text))
    value = int(text)
    if not low <= value <= high:
        raise ValueError("a=candidate: %s %d outside %d-%d" % (what, value, low, high))
    return value


#: a candidate's address text -> its normalised form (an IP address) or
#: itself (a host name), for the texts seen so far (bounded: they come
#: from the network).  A candidate is parsed when the negotiator checks it
#: and again when the engine's agent takes it: ``ipaddress`` once per text
_ADDRESSES = {}
_ADDRESSES_MAX = 4096


def _candidate_address(address):
    """``address`` normalised (``::1``), a host name as written; ValueError
    for anything else."""
    known = _ADDRESSES.get(address)
    if known is not None:
        return known
    try:
        known = str(ipaddress.ip_address(address))
    except ValueError:
        if not re.match(r"^[A-Za-z0-9.\-_]+$", address):
            raise ValueError("a=candidate: address %r is neither an IP address nor a host name" % address) from None
        known = address
    if len(_ADDRESSES) < _ADDRESSES_MAX:
        _ADDRESSES[address] = known
    return known


def parse_candidate(value):
    """Parse an ``a=candidate`` value (RFC 8839 5.1) into a :class:`Candidate`.

    Accepts ``foundation component transport priority address port typ type
    [raddr A] [rport P] [name value]...`` with or without a leading ``a=`` and
    ``candidate:``.  Raises ``ValueError`` with the reason for anything else.
    The transport is lower-cased; an IP address is normalised (``::1``), a
    host name (mDNS) is kept as written.
    """
    if not isinstance(value, str):
        raise ValueError("a=candidate: not text")
    text = value.strip()
    if text.startswith("a="):
        text = text[2:]
    if text[:10].lower() == "candidate:":
        text = text[10:]
    fields = text.split()
    if len(fields) < 8:
        raise ValueError("a=candidate: %d fields, at least 8 needed" % len(fields))
    foundation, component, transport, priority, address, port, typ, type_ = fields[:8]
    if not _FOUNDATION.match(foundation):
        raise ValueError("a=candidate: foundation %r is not 1-32 ice-chars" % foundation)
    component = _integer(component, "component", 1, 256)
    if not _TOKEN.match(transport):
        raise ValueError("a=candidate: transport %r is not a token" % transport)
    priority = _integer(priority, "priority", 1, 2**31 - 1)
    address = _candidate_address(address)
    port = _integer(port, "port", 0, 65535)
    if typ != "typ":
        raise ValueError("a=candidate: 'typ' expected, got %r" % typ)
    if not _TOKEN.match(type_):
        raise ValueError("a=candidate: type %r is not a token" % type_)
    rest = fields[8:]
    if len(rest) % 2:
        raise ValueError("a=candidate: extension %r without a value" % rest[-1])
    raddr = rport = None
    extensions = []
    for i in range(0, len(rest), 2):
        name, val = rest[i], rest[i + 1]
        if name == "raddr" and raddr is None:
            raddr = val
        elif name == "rport" and rport is None:
            rport = _integer(val, "rport", 0, 65535)
        else:
            extensions.append((name, val))
    return Candidate(foundation, component, transport.lower(), priority, address, port, type_, raddr, rport, extensions)


_ICE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def new_credentials(random=None):
    """A fresh ``(ufrag, password)``: 8 and 24 ice-chars (RFC 8445 5.3 asks for
    at least 4 and 22, with 24 and 128 bits of randomness)."""
    if random is None:
        return token(8), token(24)
    rng = random
    return (
        "".join(rng.choice(_ICE_CHARS) for _ in range(8)),
        "".join(rng.choice(_ICE_CHARS) for _ in range(24)),
    )


# --- the agent --------------------------------------------------------------

FROZEN = "frozen"
WAITING = "waiting"
IN_PROGRESS = "in-progress"
SUCCEEDED = "succeeded"
FAILED = "failed"

#: agent states
NEW = "new"
CHECKING = "checking"
COMPLETED = "completed"
# FAILED as above: all checks failed, or consent was lost
CLOSED = "closed"

_CHECK = 0
_NOMINATE = 1
_CONSENT = 2

COUNTERS = (
    "requests",  # Binding requests received
    "answered",  # success responses sent
    "responses",  # success responses received (to our checks)
    "errors",  # error responses received
    "indications",  # Binding indications received (keepalives, ignored)
    "checks",  # checks sent (first transmissions, nominations included)
    "retransmissions",
    "check-timeouts",  # checks that got no response
    "consent-checks",  # consent freshness requests sent
    "consent-lost",
    "bad-requests",  # 400 sent
    "unauthorised",  # 401 sent for a wrong USERNAME
    "bad-integrity",  # 401 sent for a wrong MESSAGE-INTEGRITY, or a response that failed it
    "unknown-attributes",  # 420 sent, or a response with one failed its check
    "role-conflicts",  # conflicts seen (487 sent, 487 received or role switched)
    "malformed",  # dropped: not decodable STUN
    "bad-fingerprint",  # dropped: FINGERPRINT wrong or missing
    "stray",  # dropped: a response to no transaction of ours
    "unsupported",  # other methods and classes (requests of them get 400)
    "send-errors",  # the socket refused a datagram (OSError)
    "candidates-ignored",  # remote candidates not paired (other component/transport/family, host name)
    "internal-errors",  # bugs caught by the guard in datagram()
)


class _Pair:
    __slots__ = ("base", "address", "foundation", "remote_priority", "priority", "state", "remote_nominated",
                 "queued")

    def __init__(self, base, address, foundation, remote_priority):
        self.base = base
        self.address = address
        self.foundation = foundation
        self.remote_priority = remote_priority
        self.priority = 0
        self.state = FROZEN
        self.remote_nominated = False
        self.queued = False


class _Transaction:
    __slots__ = ("tid", "pair", "address", "kind", "controlling", "data", "sent", "delay", "timer")

    def __init__(self, tid, pair, address, kind, controlling, data):
        self.tid = tid
        self.pair = pair
        self.address = address
        self.kind = kind
        self.controlling = controlling
        self.data = data
        self.sent = 1
        self.delay = 0.0
        self.timer = None


class IceAgent:
    """The ICE agent of one component on one socket.

    :param clock: an ``IReactorTime``
    :param send: ``send(data, address)``: a datagram out of this socket
    :param on_selected: ``on_selected(address)``: the pair ICE selected, again when it
        changes (its base: :attr:`selected_base`)
    :param local_ufrag: our ``a=ice-ufrag``; :param local_password: our ``a=ice-pwd``
    :param controlling: our initial role (ignored for ``lite``: always controlled)
    :param lite: answer checks only, never send any (RFC 8445 ICE-lite)
    :param component: 1 (RTP) or 2 (RTCP without rtcp-mux)
    :param local_address: ``(host, port)`` of the socket: only candidates of its
        address family are paired (None: all)
    :param local_priority: priority of our host candidate (default: RFC 8445's
        formula for a host candidate of ``component``)
    :param on_consent_lost: ``on_consent_lost()`` after ``CONSENT_TIMEOUT`` without
        a response to our consent checks (full mode)
    :param on_failed: ``on_failed()`` when every pair failed and none is valid
    :param bases: further local bases ``[(local_address, send), ...]``, base 1, 2, ...:
        the same port on the interface's other addresses (their priorities:
        :func:`local_preference`)
    :param tie_breaker: 64-bit role tie-breaker (random by default)
    :param random: a ``random.Random`` (transaction ids, tie-breaker, jitter)
    """

    #: seconds between two new checks (RFC 8445 14.2 pacing)
    TA = 0.05
    #: initial retransmission timeout; RFC 8445 14.3: max(RTO, TA x active pairs)
    RTO = 0.5
    #: transmissions of one check, and the wait after the last one in RTOs (RFC 5389 7.2.1)
    RC = 7
    RM = 16
    #: the controlling agent nominates the best valid pair once no better pair
    #: is pending, or this long after the first valid pair
    NOMINATION_DELAY = 1.0
    #: RFC 7675: a consent check every 5 s (x 0.8-1.2); consent lost after 30 s
    CONSENT_INTERVAL = 5.0
    CONSENT_TIMEOUT = 30.0
    #: unanswered consent checks whose late response is still accepted
    CONSENT_REMEMBERED = 8
    #: at most this many pairs (remote candidates plus learnt peer-reflexive ones)
    MAX_PAIRS = 100

    log = Logger()

    def __init__(
        self,
        clock,
        send,
        on_selected,
        local_ufrag,
        local_password,
        controlling=False,
        lite=False,
        component=1,
        local_address=None,
        local_priority=None,
        on_consent_lost=None,
        on_failed=None,
        tie_breaker=None,
        random=None,
        bases=(),
    ):
        self._clock = clock
        self._send = send
        self._on_selected = on_selected
        self._on_consent_lost = on_consent_lost
        self._on_failed = on_failed
        self._rng = random or _random.SystemRandom()
        self.local_ufrag = local_ufrag
        self._local_key = local_password.encode("utf-8")
        self.lite = lite
        self.controlling = bool(controlling) and not lite
        self.component = component
        self._family = None
        if local_address is not None:
            self._family = ipaddress.ip_address(local_address[0]).version
        if local_priority is None:
            local_priority = candidate_priority("host", component)
        self.local_priority = local_priority
        # PRIORITY of our checks: a peer-reflexive candidate with our local preference
        self._prflx_priority = candidate_priority("prflx", component, (local_priority >> 8) & 0xFFFF)
        #: per base: (address family or None, send, host priority, prflx priority)
        self._bases = [(self._family, send, local_priority, self._prflx_priority)]
        for index, (address, base_send) in enumerate(bases, 1):
            priority = candidate_priority("host", component, local_preference(index))
            self._bases.append((ipaddress.ip_address(address[0]).version, base_send, priority,
                                candidate_priority("prflx", component, local_preference(index))))
        #: the base of the selected pair (None: none selected)
        self.selected_base = None
        self.tie_breaker = self._rng.getrandbits(64) if tie_breaker is None else tie_breaker
        self.remote_ufrag = None
        self._remote_key = None
        self.state = NEW
        self.selected = None
        self._started = False
        self._pairs = {}  # (base, remote address) -> _Pair
        self._checklist = []  # pairs, highest priority first
        self._triggered = deque()  # (pair, kind)
        self._transactions = {}  # transaction id -> _Transaction
        self._valid = set()  # remote addresses proven by a check (or, lite, by an authenticated request)
        self._first_valid = None
        self._nominating = None
        self._tick_call = None
        self._nomination_call = None
        self._consent_call = None
        self._expiry_call = None
        self._consent_lost = False
        self._consent_tids = deque()
        self._counters = dict.fromkeys(COUNTERS, 0)

    # --- configuration ------------------------------------------------------
    def set_remote_credentials(self, ufrag, password):
        """The peer's ``a=ice-ufrag`` and ``a=ice-pwd``."""
        self.remote_ufrag = ufrag
        self._remote_key = password.encode("utf-8")
        self._schedule_tick()

    def add_remote_candidate(self, candidate):
        """Add a remote candidate (a :class:`Candidate` or an ``a=candidate``
        value); return True if it became a pair to check (never for a lite
        agent).  Raises ``ValueError`` for an unparsable value.  Candidates of another
        component, a non-UDP transport, another address family or with a host
        name for an address are counted in ``candidates-ignored``."""
        if not isinstance(candidate, Candidate):
            candidate = parse_candidate(candidate)
        if self.state == CLOSED or self.lite:
            return False  # a lite agent checks nothing: it pairs nothing
        ip = candidate.ip
        if (
            candidate.component != self.component
            or candidate.transport != "udp"
            or ip is None
            or candidate.port == 0
        ):
            self._counters["candidates-ignored"] += 1
            return False
        bases = [b for b, (family, _s, _p, _x) in enumerate(self._bases) if family is None or family == ip.version]
        if not bases:
            self._counters["candidates-ignored"] += 1
            return False
        address = (str(ip), candidate.port)
        added = False
        for base in bases:
            pair = self._pairs.get((base, address))
            if pair is not None:
                # known already (e.g. learnt as peer-reflexive): take the signalled values
                if candidate.priority > pair.remote_priority or pair.foundation.startswith("~"):
                    pair.foundation = candidate.foundation
                    pair.remote_priority = candidate.priority
                    self._sort()
                continue
            if self._new_pair(base, address, candidate.foundation, candidate.priority) is not None:
                added = True
        if not added:
            if not any((base, address) in self._pairs for base in bases):
                self._counters["candidates-ignored"] += 1
            return False
        if self._started and self.state == FAILED and not self._consent_lost:
            self.state = CHECKING
        self._schedule_tick()
        return True

    def start(self):
        """Begin the connectivity checks (full mode) once the remote
        credentials are known; checks triggered by early requests wait for
        this.  Lite agents only answer: this changes nothing for them."""
        if self.state == CLOSED or self._started:
            return
        self._started = True
        if self.lite:
            return
        if self.state == NEW:
            self.state = CHECKING
        # RFC 8445 6.1.2.6: per foundation, the best pair starts Waiting
        seen = set()
        for pair in self._checklist:
            if pair.state == FROZEN and (pair.base, pair.foundation) not in seen:
                pair.state = WAITING
            seen.add((pair.base, pair.foundation))
        self._schedule_tick()

    def stop(self):
        """Cancel every timer and forget the pairs; nothing is sent after this.
        Requests are no longer answered."""
        self.state = CLOSED
        for call in (self._tick_call, self._nomination_call, self._consent_call, self._expiry_call):
            if call is not None and call.active():
                call.cancel()
        self._tick_call = self._nomination_call = self._consent_call = self._expiry_call = None
        for tx in self._transactions.values():
            if tx.timer is not None and tx.timer.active():
                tx.timer.cancel()
        self._transactions.clear()
        self._triggered.clear()

    # --- queries ------------------------------------------------------------
    def authorised(self, address):
        """True if media may be exchanged with ``address``: the selected
        address, or one a check proved (in lite mode: one that sent an
        authenticated request).  False for everything once consent is lost."""
        if self._consent_lost or self.state == CLOSED:
            return False
        address = (address[0], address[1])
        return address == self.selected or address in self._valid

    def counters(self):
        """A plain-data copy of the counters."""
        return dict(self._counters)

    def pairs(self):
        """``[(address, state, priority, selected)]``, best first (for query and tests)."""
        return [(p.address, p.state, p.priority, p.address == self.selected) for p in self._checklist]

    # --- input --------------------------------------------------------------
    def datagram(self, data, source, base=0):
        """Handle one STUN datagram from ``source`` that arrived on local
        ``base``.  Never raises: what is not acceptable is dropped or
        answered with an error, and counted."""
        if self.state == CLOSED:
            return
        try:
            if not 0 <= base < len(self._bases):
                raise ValueError("no local base %r" % (base,))
            self._datagram(data, (source[0], source[1]), base)
        except Exception:
            self._counters["internal-errors"] += 1
            self.log.failure("ICE agent: unexpected error on a STUN datagram from {source}", source=source)

    def _datagram(self, data, source, base):
        counters = self._counters
        try:
            decoded = stun.decode(data)
        except stun.BadFingerprint:
            counters["bad-fingerprint"] += 1
            return
        except stun.StunError:
            counters["malformed"] += 1
            return
        message = decoded.message
        cls = message.message_class
        if message.message_method != stun.Method.BINDING:
            counters["unsupported"] += 1
            if cls == stun.Class.REQUEST and decoded.fingerprint:
                self._transmit(stun.error_response(message, 400), source, base)
                counters["bad-requests"] += 1
            return
        if not decoded.fingerprint:
            # RFC 8445 7: every ICE STUN message carries FINGERPRINT
            counters["bad-fingerprint"] += 1
            return
        if cls == stun.Class.REQUEST:
            self._request(decoded, data, source, base)
        elif cls == stun.Class.INDICATION:
            counters["indications"] += 1
        else:
            self._response(decoded, data, source, base)

    def _request(self, decoded, data, source, base):
        counters = self._counters
        message = decoded.message
        attributes = message.attributes
        counters["requests"] += 1
        # RFC 5389 10.1.2 short-term credentials
        username = attributes.get("USERNAME")
        if username is None or not decoded.integrity:
            counters["bad-requests"] += 1
            self._transmit(stun.error_response(message, 400), source, base)
            return
        local, colon, remote = username.partition(":")
        if (
            not colon
            or local != self.local_ufrag
            or (self.remote_ufrag is not None and remote != self.remote_ufrag)
        ):
            counters["unauthorised"] += 1
            self._transmit(stun.error_response(message, 401), source, base)
            return
        if not stun.integrity_ok(message, data, self._local_key):
            counters["bad-integrity"] += 1
            self._transmit(stun.error_response(message, 401), source, base)
            return
        if decoded.unknown:
            counters["unknown-attributes"] += 1
            self._transmit(stun.error_response(message, 420, self._local_key, decoded.unknown), source, base)
            return
        priority = attributes.get("PRIORITY")
        if not priority:
            counters["bad-requests"] += 1
            self._transmit(stun.error_response(message, 400, self._local_key), source, base)
            return
        # RFC 8445 7.3.1.1 role conflicts
        if self.controlling and "ICE-CONTROLLING" in attributes:
            counters["role-conflicts"] += 1
            if self.tie_breaker >= attributes["ICE-CONTROLLING"]:
                self._transmit(stun.error_response(message, 487, self._local_key), source, base)
                return
            self._switch_role(False)
        elif not self.controlling and "ICE-CONTROLLED" in attributes:
            counters["role-conflicts"] += 1
            if self.lite or self.tie_breaker < attributes["ICE-CONTROLLED"]:
                self._transmit(stun.error_response(message, 487, self._local_key), source, base)
                return
            self._switch_role(True)
        self._transmit(stun.binding_success(message, source, self._local_key), source, base)
        counters["answered"] += 1
        self._incoming_check(base, source, priority, "USE-CANDIDATE" in attributes)
        if self.controlling:
            # e.g. just switched roles with valid pairs already: nominate one
            self._consider_nomination()

    def _incoming_check(self, base, address, priority, use_candidate):
        """RFC 8445 7.3.1.3-7.3.1.5 after a valid request was answered."""
        if self.lite:
            self._valid.add(address)
            if use_candidate:
                self._select(address, base)
            return
        pair = self._pairs.get((base, address))
        if pair is None:
            # a peer-reflexive remote candidate (7.3.1.3); '~' marks the foundation as ours
            pair = self._new_pair(base, address, "~%s:%d" % address, priority)
            if pair is None:
                return
            if self.state == FAILED and not self._consent_lost:
                self.state = CHECKING
        if use_candidate and not self.controlling:
            pair.remote_nominated = True
        if pair.state == SUCCEEDED:
            if pair.remote_nominated and not self.controlling:
                self._select(address, base)
        elif self.selected is None or pair.remote_nominated:
            # 7.3.1.4 triggered check; a check in progress stops retransmitting
            # (its answer still counts) and a fresh one goes out now
            if pair.state == IN_PROGRESS:
                self._stop_checks(pair, self.RM * self.RTO)
            pair.state = WAITING
            self._trigger(pair, _CHECK)

    def _response(self, decoded, data, source, base):
        counters = self._counters
        message = decoded.message
        tx = self._transactions.get(message.transaction_id)
        if tx is None:
            counters["stray"] += 1
            return
        if not stun.integrity_ok(message, data, self._remote_key):
            # not from the peer: keep retransmitting (RFC 5389 10.1.3)
            counters["bad-integrity"] += 1
            return
        del self._transactions[tx.tid]
        if tx.timer is not None and tx.timer.active():
            tx.timer.cancel()
        success = message.message_class == stun.Class.RESPONSE
        counters["responses" if success else "errors"] += 1
        pair = tx.pair
        if decoded.unknown:
            # RFC 5389 7.3.3/7.3.4: a response we cannot understand fails the transaction
            counters["unknown-attributes"] += 1
            success = False
            if tx.kind != _CONSENT:
                self._pair_failed(pair, tx)
                return
        if tx.kind == _CONSENT:
            if (success and source == tx.address and tx.address == self.selected and not self._consent_lost
                    and base == self.selected_base):
                if self._expiry_call is not None and self._expiry_call.active():
                    self._expiry_call.reset(self.CONSENT_TIMEOUT)
            return
        if not success:
            code = message.attributes.get("ERROR-CODE", (0, ""))[0]
            if code == 487:
                # 7.2.5.1: take the other role than the one we claimed, and check again
                counters["role-conflicts"] += 1
                if tx.controlling == self.controlling and not self.lite:
                    self._switch_role(not tx.controlling)
                if tx.kind == _NOMINATE:
                    self._nominating = None
                if pair.state != SUCCEEDED:
                    pair.state = WAITING
                    self._trigger(pair, _CHECK)
                else:
                    self._consider_nomination()
                return
            self._pair_failed(pair, tx)
            return
        if source != tx.address or base != pair.base:
            # 7.2.5.2.1 non-symmetric addresses
            self._pair_failed(pair, tx)
            return
        if "XOR-MAPPED-ADDRESS" not in message.attributes:
            self._pair_failed(pair, tx)
            return
        pair.state = SUCCEEDED
        self._stop_checks(pair, None)
        self._valid.add(pair.address)
        if self._first_valid is None:
            self._first_valid = self._clock.seconds()
        # 7.2.5.3.3: unfreeze the pairs of the same foundation
        for other in self._checklist:
            if other.state == FROZEN and other.foundation == pair.foundation and other.base == pair.base:
                other.state = WAITING
        if tx.kind == _NOMINATE:
            self._nominating = None
            if self.controlling:
                self._select(pair.address, pair.base)
                return
        if not self.controlling and pair.remote_nominated:
            self._select(pair.address, pair.base)
            return
        self._consider_nomination()
        self._schedule_tick()

    def _transmit(self, data, address, base=0):
        """Send out of ``base``'s socket; a send error (ICMP, no route) is counted, not raised."""
        try:
            self._bases[base][1](data, address)
        except OSError:
            self._counters["send-errors"] += 1

    # --- pairs and checks ---------------------------------------------------
    def _new_pair(self, base, address, foundation, remote_priority):
        if len(self._pairs) >= self.MAX_PAIRS:
            return None
        pair = _Pair(base, address, foundation, remote_priority)
        self._pairs[(base, address)] = pair
        self._checklist.append(pair)
        if self._started and not any(
            p.foundation == foundation and p.base == base for p in self._checklist if p is not pair
        ):
            pair.state = WAITING
        self._sort()
        return pair

    def _sort(self):
        bases = self._bases
        for pair in self._checklist:
            local = bases[pair.base][2]
            if self.controlling:
                pair.priority = pair_priority(local, pair.remote_priority)
            else:
                pair.priority = pair_priority(pair.remote_priority, local)
        self._checklist.sort(key=lambda p: -p.priority)

    def _switch_role(self, controlling):
        self.controlling = controlling
        if not controlling and self._nomination_call is not None and self._nomination_call.active():
            self._nomination_call.cancel()
        self._sort()

    def _trigger(self, pair, kind):
        if pair.queued and kind == _CHECK:
            return
        pair.queued = True
        self._triggered.append((pair, kind))
        self._schedule_tick()

    def _schedule_tick(self):
        if self._tick_call is None and self._started and not self.lite and self.state != CLOSED:
            self._tick_call = self._clock.callLater(0, self._tick)

    def _tick(self):
        """Send one check (triggered first, 6.1.4.2), then wait TA."""
        self._tick_call = None
        if self._remote_key is None or self.state == CLOSED:
            return
        pair = None
        while self._triggered:
            pair, kind = self._triggered.popleft()
            pair.queued = False
            if kind == _NOMINATE or pair.state not in (SUCCEEDED, IN_PROGRESS):
                break
            pair = None
        else:
            kind = _CHECK
            if self.selected is None:
                pair = self._next_ordinary()
        if pair is None:
            self._check_failed()
            return
        # scheduled before sending: a synchronous answer must not start a second tick
        self._tick_call = self._clock.callLater(self.TA, self._tick)
        self._check(pair, kind)

    def _next_ordinary(self):
        frozen = None
        for pair in self._checklist:
            if pair.state == WAITING:
                return pair
            if pair.state == FROZEN and frozen is None:
                frozen = pair
        return frozen

    def _request_attributes(self, kind, base=0):
        attributes = {
            "USERNAME": "%s:%s" % (self.remote_ufrag, self.local_ufrag),
            "PRIORITY": self._bases[base][3],
        }
        if self.controlling:
            attributes["ICE-CONTROLLING"] = self.tie_breaker
            if kind == _NOMINATE:
                attributes["USE-CANDIDATE"] = None
        else:
            attributes["ICE-CONTROLLED"] = self.tie_breaker
        return attributes

    def _new_tid(self):
        while True:
            tid = self._rng.getrandbits(96).to_bytes(12, "big")
            if tid not in self._transactions:
                return tid

    def _check(self, pair, kind):
        tid = self._new_tid()
        data = stun.binding_request(tid, self._request_attributes(kind, pair.base), self._remote_key)
        tx = _Transaction(tid, pair, pair.address, kind, self.controlling, data)
        if kind == _CHECK:
            pair.state = IN_PROGRESS
        else:
            self._nominating = pair
        self._transactions[tid] = tx
        active = sum(1 for p in self._checklist if p.state in (WAITING, IN_PROGRESS))
        tx.delay = max(self.RTO, self.TA * active)
        tx.timer = self._clock.callLater(tx.delay, self._retransmit, tx)
        self._counters["checks"] += 1
        self._transmit(data, pair.address, pair.base)

    def _stop_checks(self, pair, grace):
        """End the retransmissions of ``pair``'s ordinary checks: forget them
        now (``grace`` None) or after ``grace`` seconds, answers still welcome."""
        for tx in [t for t in self._transactions.values() if t.pair is pair and t.kind == _CHECK]:
            if tx.timer is not None and tx.timer.active():
                tx.timer.cancel()
            tx.timer = None
            if grace is None:
                del self._transactions[tx.tid]
            else:
                tx.timer = self._clock.callLater(grace, self._forget, tx)

    def _forget(self, tx):
        tx.timer = None
        self._transactions.pop(tx.tid, None)
        self._schedule_tick()

    def _retransmit(self, tx):
        if tx.sent < self.RC:
            tx.sent += 1
            tx.delay *= 2
            wait = tx.delay if tx.sent < self.RC else self.RM * (tx.delay / 2 ** (self.RC - 1))
            tx.timer = self._clock.callLater(wait, self._retransmit, tx)
            self._counters["retransmissions"] += 1
            self._transmit(tx.data, tx.address, tx.pair.base)
            return
        tx.timer = None
        self._transactions.pop(tx.tid, None)
        self._counters["check-timeouts"] += 1
        self._pair_failed(tx.pair, tx)

    def _pair_failed(self, pair, tx):
        if tx.kind == _NOMINATE:
            self._nominating = None
        pair.state = FAILED
        self._valid.discard(pair.address)
        self._consider_nomination()
        self._schedule_tick()

    def _check_failed(self):
        """Every pair failed, none valid, nothing pending: the checks failed."""
        if self.state != CHECKING or self.selected is not None or self._valid or self._triggered:
            return
        if self._nominating is not None or any(p.state != FAILED for p in self._checklist):
            return
        if self._remote_key is None:
            return
        self.state = FAILED
        if self._on_failed is not None:
            self._on_failed()

    def _consider_nomination(self):
        """Regular nomination (8.1.1) by the controlling agent."""
        if not self.controlling or self.selected is not None or self._nominating is not None:
            return
        best = None
        for pair in self._checklist:
            if pair.state == SUCCEEDED:
                best = pair
                break
        if best is None:
            return
        pending = any(
            p.state in (FROZEN, WAITING, IN_PROGRESS) for p in self._checklist if p.priority > best.priority
        )
        wait = self._first_valid + self.NOMINATION_DELAY - self._clock.seconds()
        if pending and wait > 0:
            if self._nomination_call is None or not self._nomination_call.active():
                self._nomination_call = self._clock.callLater(wait, self._consider_nomination)
            return
        if self._nomination_call is not None and self._nomination_call.active():
            self._nomination_call.cancel()
        self._nomination_call = None
        self._nominating = best
        self._trigger(best, _NOMINATE)

    # --- selection and consent ----------------------------------------------
    def _select(self, address, base=0):
        if (self.selected == address and self.selected_base == base) or self._consent_lost:
            return
        self.selected = address
        self.selected_base = base
        self._valid.add(address)
        self.state = COMPLETED
        if self._nomination_call is not None and self._nomination_call.active():
            self._nomination_call.cancel()
        self._nomination_call = None
        # 8.1.2: no more ordinary checks; cancel those in flight
        for tid in [t for t, tx in self._transactions.items() if tx.kind == _CHECK]:
            tx = self._transactions.pop(tid)
            if tx.timer is not None and tx.timer.active():
                tx.timer.cancel()
            if tx.pair.state == IN_PROGRESS:
                tx.pair.state = FAILED
        if not self.lite:
            self._start_consent()
        self._on_selected(address)

    def _start_consent(self):
        # the nominating exchange is the first consent; checks every ~5 s from now
        if self._expiry_call is not None and self._expiry_call.active():
            self._expiry_call.reset(self.CONSENT_TIMEOUT)
        else:
            self._expiry_call = self._clock.callLater(self.CONSENT_TIMEOUT, self._consent_expired)
        if self._consent_call is None or not self._consent_call.active():
            self._consent_call = self._clock.callLater(self._consent_wait(), self._consent_check)

    def _consent_wait(self):
        return self.CONSENT_INTERVAL * (0.8 + 0.4 * self._rng.random())

    def _consent_check(self):
        self._consent_call = None
        if self.selected is None or self.state == CLOSED or self._consent_lost:
            return
        # a late answer to any of the last few checks still counts; older ones are forgotten
        if len(self._consent_tids) >= self.CONSENT_REMEMBERED:
            self._transactions.pop(self._consent_tids.popleft(), None)
        tid = self._new_tid()
        base = self.selected_base
        data = stun.binding_request(tid, self._request_attributes(_CONSENT, base), self._remote_key)
        pair = self._pairs.get((base, self.selected))
        self._transactions[tid] = _Transaction(tid, pair, self.selected, _CONSENT, self.controlling, data)
        self._consent_tids.append(tid)
        self._counters["consent-checks"] += 1
        self._consent_call = self._clock.callLater(self._consent_wait(), self._consent_check)
        self._transmit(data, self.selected, base)

    def _consent_expired(self):
        self._expiry_call = None
        if self.state == CLOSED:
            return
        self._consent_lost = True
        self.state = FAILED
        self._counters["consent-lost"] += 1
        if self._consent_call is not None and self._consent_call.active():
            self._consent_call.cancel()
        self._consent_call = None
        while self._consent_tids:
            self._transactions.pop(self._consent_tids.popleft(), None)
        if self._on_consent_lost is not None:
            self._on_consent_lost()
