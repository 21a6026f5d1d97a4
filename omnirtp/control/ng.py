"""The ng control protocol over UDP: framing, decoding, replies, retransmissions.

A request datagram is ``COOKIE SP PAYLOAD``; the reply is ``COOKIE SP REPLY``
in the payload's encoding (bencode dictionary, or JSON object).  Requests are
handed to ``dispatch(request, addr)`` as a ``dict`` whose keys and string
values are ``str`` (UTF-8 with ``surrogateescape``, so any byte string, SDP
included, round-trips exactly when the reply is encoded back).

Every failure becomes ``{"result": "error", "error-reason": TEXT}`` with
rtpengine's texts (:mod:`omnirtp.errors`).  Replies are cached by cookie so a
retransmitted request is answered with the byte-identical reply without
running the command again.

:func:`listen_ng` binds the UDP socket; on a wildcard address it uses
:class:`PktInfoPort`, which answers from the local address each request was
sent to (Kamailio's connect()ed socket drops replies from any other source).
"""

import errno
import json
import socket
import struct

from twisted.internet import udp
from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from omnirtp import errors, sync
from omnirtp.control import bencode
from omnirtp.logging import hold, release

MAX_UDP_PAYLOAD = 65507
"""Largest UDP datagram (IPv4) a reply may be."""

E_REPLY_TOO_LARGE = "Reply too large for a UDP datagram"
"""omnirtp's own text: rtpengine 10.5 fails to send such a reply at all."""

RESULT = "result"
ERROR_REASON = "error-reason"
MESSAGE = "message"
RESULT_ERROR = "error"
RESULT_LOAD_LIMIT = "load limit"
KEY_COMMAND = "command"
KEY_SUPPORTS = "supports"
SUPPORTS_LOAD_LIMIT = "load limit"
STATS_ERRORS = "errors"
#: requests refused by the access list (never answered, never decoded)
STATS_DENIED = "denied"

COUNTED_COMMANDS = ("ping", "offer", "answer", "delete", "query", "list", "statistics")
#: where requests with any other command word are counted (a bounded dict:
#: command words come from the network)
STATS_OTHER = "other"

#: the reply cache holds at most this many bytes (cookies and replies)
CACHE_BYTES = 64 << 20
#: what a pending entry is charged (its cookie aside) until its reply is known
PENDING_COST = 128
#: copies of a pending request answered at most (a retransmission storm
#: cannot make one reply go out without bound)
MAX_WAITERS = 16
#: seconds between two warnings about undecodable ng datagrams
WARN_INTERVAL = 10.0

_BENCODE, _JSON = "bencode", "json"
_JSON_OPEN = frozenset(b"[{")
_JSON_CLOSE = frozenset(b"]}")


class _DecodeError(Exception):
    """Internal: the payload is not a request; ``reason`` is rtpengine's text."""

    def __init__(self, reason, detail):
        Exception.__init__(self, reason, detail)
        self.reason = reason
        self.detail = detail


def to_str(value):
    """Turn decoded bencode (bytes strings) into the same structure with str.

    Bytes become ``str`` through UTF-8 + ``surrogateescape``; nesting is
    bounded by the decoder's limit.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, dict):
        return {to_str(k): to_str(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_str(v) for v in value]
    return value


def _json_depth_ok(payload, limit):
    """Return False if brackets in ``payload`` nest deeper than ``limit``.

    A conservative scan that skips JSON strings, run before ``json.loads``
    so hostile nesting never reaches the recursive parser.
    """
    depth = 0
    in_string = False
    escaped = False
    opens, closes = _JSON_OPEN, _JSON_CLOSE
    for c in payload:
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in opens:
            depth += 1
            if depth > limit:
                return False
        elif c in closes:
            depth -= 1
    return True


def _reject_constant(name):
    raise ValueError("JSON constant %s is not allowed" % (name,))


def _from_json(value):
    """Map a parsed JSON value onto what a bencode request could carry.

    ``true``/``false`` become 1/0; ``null`` and floats cannot be expressed
    in bencode (rtpengine 10.5 answers "Could not decode bencode
    dictionary" for them).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    raise _DecodeError(
        errors.E_BENCODE, "JSON value %r has no bencode equivalent" % (value,)
    )


def decode_payload(payload):
    """Decode an ng payload into ``(request_dict, encoding)``.

    ``encoding`` is ``"bencode"`` or ``"json"``.  Raises ``_DecodeError``
    carrying rtpengine's error text and a precise detail.
    """
    if not payload:
        raise _DecodeError(errors.E_NO_PAYLOAD, "empty payload")
    first = payload[:1]
    if first == b"d":
        try:
            # rtpengine ignores whatever follows the dictionary
            return bencode.decode_text_prefix(payload)[0], _BENCODE
        except bencode.NotFast:
            pass
        try:
            value, _ = bencode.decode_prefix(payload)
        except bencode.BencodeError as e:
            raise _DecodeError(errors.E_BENCODE, str(e))
        return to_str(value), _BENCODE
    if first == b"{":
        if not _json_depth_ok(payload, bencode.MAX_DEPTH):
            raise _DecodeError(
                errors.E_JSON_PARSE,
                "JSON nesting deeper than %d levels" % (bencode.MAX_DEPTH,),
            )
        try:
            text = payload.decode("utf-8")
            value = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            raise _DecodeError(errors.E_JSON_PARSE, str(e))
        if not isinstance(value, dict):  # pragma: no cover - '{' guarantees it
            raise _DecodeError(errors.E_JSON_DICT, "JSON document is not an object")
        return _from_json(value), _JSON
    raise _DecodeError(
        errors.E_BAD_FORMAT, "payload starts with %r" % (payload[:1],)
    )


def encode_reply(reply, encoding):
    """Encode a reply dict as bencode or compact JSON (bytes)."""
    if encoding == _JSON:
        return json.dumps(
            _json_safe(reply), ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8", "surrogateescape")
    return bencode.encode(reply)


def _json_safe(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "surrogateescape")
    if isinstance(value, dict):
        return {
            (k.decode("utf-8", "surrogateescape") if isinstance(k, bytes) else k):
            _json_safe(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def error_reply(reason):
    """The reply dictionary for a failed request."""
    return {RESULT: RESULT_ERROR, ERROR_REASON: reason}


def supports_load_limit(request):
    """True if the request's ``supports`` list names "load limit"."""
    value = request.get(KEY_SUPPORTS)
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return False
    return any(
        isinstance(v, str) and v.strip() == SUPPORTS_LOAD_LIMIT for v in value
    )


class _Pending:
    """A request still being processed: the addresses waiting for its reply."""

    __slots__ = ("waiters",)

    def __init__(self, addr):
        self.waiters = [addr]


class NGProtocol(DatagramProtocol):
    """rtpengine's ng protocol on a datagram transport.

    :param dispatch: ``dispatch(request, addr)`` returning the reply dict or
        a Deferred firing with it; raising/failing with ``NGError`` gives an
        error reply, ``LoadLimit`` a load-limit reply.
    :param clock: an ``IReactorTime`` (``seconds()`` is all that is used).
    :param cache_ttl: seconds between rotations of the two cache generations
        (a reply stays cached for ``cache_ttl`` to ``2 * cache_ttl`` seconds).
    :param cache_max: most cookies held over both generations.
    :param cache_bytes: most bytes (cookies and reply datagrams) held over
        both generations; a flood of unique cookies, or of long ones, rotates
        the generations sooner instead of growing memory.
    :param access: an :class:`omnirtp.control.access.AccessList`, or None
        (everyone may send).  A datagram from a source it refuses is dropped
        before anything else: no reply, no decoding, no cache entry.

    ``stats`` counts executed requests per command, error replies and
    refused datagrams (``denied``).
    """

    # the start-up summary names the listeners; no per-port chatter
    noisy = False

    log = Logger()

    def __init__(self, dispatch, clock, cache_ttl=30, cache_max=20000, access=None,
                 cache_bytes=CACHE_BYTES):
        self.dispatch = dispatch
        self.access = access
        self.clock = clock
        self.cache_ttl = cache_ttl
        self.cache_max = max(2, cache_max)
        self._generation_max = self.cache_max // 2
        self.cache_bytes = max(2, cache_bytes)
        self._generation_bytes = self.cache_bytes // 2
        self._cache_new = {}
        self._cache_old = {}
        self._bytes_new = 0
        self._bytes_old = 0
        self._rotated_at = clock.seconds()
        #: undecodable datagrams not logged since the last warning
        self._unlogged = 0
        self._warned_at = None
        self._failures_logged = set()
        self.stats = dict.fromkeys(COUNTED_COMMANDS, 0)
        self.stats[STATS_OTHER] = 0
        self.stats[STATS_ERRORS] = 0
        self.stats[STATS_DENIED] = 0

    # -- cache ---------------------------------------------------------

    def _maybe_rotate(self, now):
        elapsed = now - self._rotated_at
        if elapsed >= 2 * self.cache_ttl:
            self._cache_old = {}
            self._cache_new = {}
            self._bytes_old = self._bytes_new = 0
            self._rotated_at = now
        elif elapsed >= self.cache_ttl:
            self._rotate()
            self._rotated_at = now

    def _rotate(self):
        self._cache_old, self._bytes_old = self._cache_new, self._bytes_new
        self._cache_new, self._bytes_new = {}, 0

    def _cache_put(self, cookie, entry, after_pending=False):
        # what an entry is charged: its cookie, and its datagram or
        # PENDING_COST; a cookie is in one generation at most (put here,
        # moved whole by _rotate): the old one is looked at only when the
        # new one lacks it.  ``after_pending``: a reply made before anyone
        # could look at the cache (a synchronous dispatch), put as if its
        # pending entry had been put first and replaced now (the same
        # rotations, the same charges), without that entry
        key_cost = len(cookie)
        previous = self._cache_new.pop(cookie, None)
        if previous is not None:
            self._bytes_new -= key_cost + (
                PENDING_COST if type(previous) is _Pending else len(previous))
        else:
            previous = self._cache_old.pop(cookie, None)
            if previous is not None:
                self._bytes_old -= key_cost + (
                    PENDING_COST if type(previous) is _Pending else len(previous))
        if after_pending and (
                len(self._cache_new) >= self._generation_max
                or self._bytes_new + key_cost + PENDING_COST > self._generation_bytes):
            self._rotate()  # (what the pending entry's put did)
        cost = key_cost + (PENDING_COST if type(entry) is _Pending else len(entry))
        if (len(self._cache_new) >= self._generation_max
                or self._bytes_new + cost > self._generation_bytes):
            self._rotate()
        self._cache_new[cookie] = entry
        self._bytes_new += cost

    def cached_count(self):
        """Number of cookies currently remembered (replies and pending)."""
        return len(self._cache_new) + len(self._cache_old)

    def cached_bytes(self):
        """Bytes charged to the cache (cookies, replies, pending entries)."""
        return self._bytes_new + self._bytes_old

    # -- receive -------------------------------------------------------

    def datagramReceived(self, data, addr):
        if self.access is not None and not self.access.admit(addr[0], "ng"):
            self.stats[STATS_DENIED] += 1
            return
        # the request's log lines are made as they come and reach the log
        # file (one write) once its reply has gone out, after any work put
        # off until then (sync.after_reply): the client waits for the
        # reply, not for them; a command answered later (media workers)
        # writes the rest of its lines as they come
        hold()
        # (sync.after_reply's list for this datagram, what was there kept)
        outer = sync.after_reply_work
        work = sync.after_reply_work = []
        try:
            space = data.find(b" ")
            if space <= 0:
                self.log.debug(
                    "ng datagram from {addr} without cookie; ignored", addr=addr
                )
                return
            cookie = data[:space]
            payload = data[space + 1:]
            now = self.clock.seconds()
            if now - self._rotated_at >= self.cache_ttl:
                self._maybe_rotate(now)
            if payload:
                entry = self._cache_new.get(cookie)
                if entry is None:
                    entry = self._cache_old.get(cookie)
                if entry is not None:
                    if type(entry) is _Pending:
                        if len(entry.waiters) < MAX_WAITERS:
                            entry.waiters.append(addr)
                    else:
                        self._send(entry, addr)
                    return
            # (decode_payload's first step for a bencode dictionary, by the C
            # extension when it is built, inline)
            fast = bencode._c
            decoded = fast.decode_text_prefix(payload) \
                if fast is not None and payload[:1] == b"d" else None
            if decoded is not None:
                request, encoding = decoded[0], _BENCODE
            else:
                try:
                    request, encoding = decode_payload(payload)
                except _DecodeError as e:
                    self._warn_undecodable(addr, e)
                    self._finish(cookie, _Pending(addr), error_reply(e.reason), _BENCODE
                                 if payload[:1] != b"{" else _JSON)
                    return
            command = request.get(KEY_COMMAND)
            if not isinstance(command, str):
                self._finish(cookie, _Pending(addr), error_reply(errors.E_NO_COMMAND),
                             encoding)
                return
            self.stats[command if command in COUNTED_COMMANDS else STATS_OTHER] += 1
            dispatch = self.dispatch
            # a Dispatcher answers synchronously when it can (``now``)
            dispatch = getattr(dispatch, "now", dispatch)
            # the cookie's pending entry is put only for a reply that is not
            # there yet: nothing reads the cache while dispatch runs, and a
            # reply made at once is put as if it had replaced one
            # (_cache_put's after_pending)
            try:
                result = dispatch(request, addr)
            except Exception:
                reply = self._reply_for_failure(Failure(), request, command)
                self._finish_now(cookie, addr, reply, encoding)
                return
            if result.__class__ is not dict and sync.is_deferred(result):
                pending = _Pending(addr)
                self._cache_put(cookie, pending)
                sync.listen(result, self._finish_later, (cookie, pending, encoding),
                            self._fail_later, (cookie, pending, encoding, request, command))
                sync.listen(result, None, (), self._log_bug)
            else:
                self._finish_now(cookie, addr, result, encoding)
        finally:
            sync.after_reply_work = outer
            if work:
                self._after_reply(work)
            release()

    def _after_reply(self, work):
        for function, args in work:
            try:
                function(*args)
            except Exception:
                self.log.failure("work after an ng reply failed")

    def _warn_undecodable(self, addr, error):
        """One warning per :data:`WARN_INTERVAL` seconds at most, with the
        number of undecodable datagrams since the previous one: garbage
        floods are counted (``stats["errors"]``), never logged one by one."""
        now = self.clock.seconds()
        if self._warned_at is not None and now - self._warned_at < WARN_INTERVAL:
            self._unlogged += 1
            return
        self.log.warn(
            "ng protocol error from {addr}: {reason} ({detail}); "
            "{more} more undecodable requests since the last warning",
            addr=addr, reason=error.reason, detail=error.detail, more=self._unlogged,
        )
        self._warned_at = now
        self._unlogged = 0

    def _finish_later(self, reply, cookie, pending, encoding):
        self._finish(cookie, pending, reply, encoding)

    def _fail_later(self, failure, cookie, pending, encoding, request, command):
        self._finish(cookie, pending,
                     self._reply_for_failure(failure, request, command), encoding)

    def _log_bug(self, failure):
        self.log.failure("ng reply could not be completed", failure)

    def _reply_for_failure(self, failure, request, command):
        if failure.check(errors.LoadLimit):
            if supports_load_limit(request):
                return {RESULT: RESULT_LOAD_LIMIT, MESSAGE: failure.value.reason}
            return error_reply(failure.value.legacy)
        if failure.check(errors.NGError):
            return error_reply(failure.value.reason)
        key = (command, failure.type)
        if key not in self._failures_logged and len(self._failures_logged) < 256:
            self._failures_logged.add(key)
            self.log.failure(
                "ng command {command} failed unexpectedly", failure, command=command
            )
        else:
            self.log.error(
                "ng command {command} failed unexpectedly: {error} "
                "(traceback logged before)",
                command=command, error=failure.getErrorMessage(),
            )
        return error_reply(errors.E_INTERNAL)

    def _finish(self, cookie, pending, reply, encoding):
        """Encode ``reply``, cache it and send it to everyone waiting."""
        datagram = self._encode(cookie, reply, encoding)
        self._cache_put(cookie, datagram)
        for addr in pending.waiters:
            self._send(datagram, addr)
        pending.waiters = []

    def _finish_now(self, cookie, addr, reply, encoding):
        """:meth:`_finish` of a request answered before its pending entry
        was put (``addr``: the one waiting).  The reply goes out before it
        is cached: nothing reads the cache before this datagram's
        ``datagramReceived`` returns, and the client need not wait."""
        datagram = self._encode(cookie, reply, encoding)
        self._send(datagram, addr)
        self._cache_put(cookie, datagram, after_pending=True)

    def _encode(self, cookie, reply, encoding):
        try:
            if not isinstance(reply, dict):
                raise TypeError("dispatch returned %r, not a dict" % (type(reply),))
            # (encode_reply's bencode step by the C extension, inline)
            fast = bencode._c
            body = fast.encode(reply) if fast is not None and encoding is _BENCODE else None
            if body is None:
                body = encode_reply(reply, encoding)
        except Exception:
            self.log.failure("ng reply cannot be encoded")
            reply = error_reply(errors.E_INTERNAL)
            body = encode_reply(reply, encoding)
        if len(cookie) + 1 + len(body) > MAX_UDP_PAYLOAD:
            self.log.error(
                "ng reply of {size} bytes is too large for UDP", size=len(body)
            )
            reply = error_reply(E_REPLY_TOO_LARGE)
            body = encode_reply(reply, encoding)
        if reply.get(RESULT) in (RESULT_ERROR, RESULT_LOAD_LIMIT):
            self.stats[STATS_ERRORS] += 1
        return cookie + b" " + body

    def _send(self, datagram, addr):
        transport = self.transport
        if type(addr) is tuple and type(transport) is udp.Port:
            # a reply to where a request came from on a plain UDP port:
            # straight to its socket (Port.write first checks the form of
            # an address the kernel gave); an error goes to write below,
            # which tries again and says what the error means
            try:
                transport.socket.sendto(datagram, addr)
                return
            except OSError:
                pass
        try:
            transport.write(datagram, addr)
        except Exception as e:
            self.log.error("ng reply to {addr} not sent: {error}", addr=addr, error=e)


# -- listening -----------------------------------------------------------

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python < 3.13 lacks it
_IN_PKTINFO = struct.Struct("=I4s4s")  # ifindex, spec_dst, addr
_IN6_PKTINFO = struct.Struct("=16sI")  # addr, ifindex
_CMSG_SPACE = socket.CMSG_SPACE(max(_IN_PKTINFO.size, _IN6_PKTINFO.size))

WILDCARDS = ("", "0.0.0.0", "::")
_READ_STOP = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED,
              errno.EMSGSIZE, errno.ENOBUFS, errno.ECONNRESET)


class _Addr(tuple):
    """``(host, port)`` with the local destination address as ``local``."""

    def __new__(cls, host, port, local, ifindex=0):
        self = tuple.__new__(cls, (host, port))
        self.local = local
        self.ifindex = ifindex
        return self

    def __getnewargs__(self):
        return (self[0], self[1], self.local, self.ifindex)


class PktInfoPort(udp.Port):
    """A UDP port bound to a wildcard address that replies from the right IP.

    Reads with ``recvmsg`` and ``IP_PKTINFO``/``IPV6_RECVPKTINFO``; the
    protocol receives ``addr`` as a ``(host, port)`` tuple that also carries
    ``addr.local``.  ``write(data, addr)`` with such an address sends with
    ``sendmsg`` and the matching ``*_PKTINFO`` so the source address is the
    one the request was sent to.  Plain tuples are sent as usual.
    """

    _log = Logger()

    def _bindSocket(self):
        udp.Port._bindSocket(self)
        if self.addressFamily == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            self.socket.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)

    def doRead(self):
        read = 0
        while read < self.maxThroughput:
            try:
                data, ancdata, _flags, addr = self.socket.recvmsg(
                    self.maxPacketSize, _CMSG_SPACE
                )
            except OSError as se:
                if se.args[0] in _READ_STOP:
                    return
                raise
            read += len(data)
            local, ifindex = self._local_from(ancdata)
            addr = _Addr(addr[0], addr[1], local, ifindex)
            try:
                self.protocol.datagramReceived(data, addr)
            except BaseException:
                self._log.failure("ng protocol raised on a datagram")

    def _local_from(self, ancdata):
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                ifindex, _spec, dest = _IN_PKTINFO.unpack_from(value)
                return socket.inet_ntop(socket.AF_INET, dest), ifindex
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                dest, ifindex = _IN6_PKTINFO.unpack_from(value)
                return socket.inet_ntop(socket.AF_INET6, dest), ifindex
        return None, 0

    def write(self, datagram, addr=None):
        local = getattr(addr, "local", None)
        if local is None:
            return udp.Port.write(self, datagram, addr)
        if self.addressFamily == socket.AF_INET6:
            info = _IN6_PKTINFO.pack(
                socket.inet_pton(socket.AF_INET6, local), addr.ifindex
            )
            cmsg = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)]
        else:
            info = _IN_PKTINFO.pack(
                0, socket.inet_pton(socket.AF_INET, local), b"\0\0\0\0"
            )
            cmsg = [(socket.IPPROTO_IP, IP_PKTINFO, info)]
        try:
            return self.socket.sendmsg([datagram], cmsg, 0, (addr[0], addr[1]))
        except OSError as se:
            if se.args[0] == errno.EINTR:
                return self.write(datagram, addr)
            if se.args[0] == errno.EMSGSIZE:
                raise MessageLengthError("message too long")
            if se.args[0] == errno.ECONNREFUSED:
                return None
            raise


def listen_ng(reactor, host, port, protocol, max_packet_size=65536):
    """Listen for ng requests on UDP ``host:port`` and return the port.

    A specific address uses the reactor's ``listenUDP``; a wildcard
    (``0.0.0.0``, ``::`` or empty) uses :class:`PktInfoPort` so every reply
    leaves from the address its request arrived on.
    """
    if host not in WILDCARDS:
        return reactor.listenUDP(
            port, protocol, interface=host, maxPacketSize=max_packet_size
        )
    p = PktInfoPort(
        port, protocol, interface=host or "0.0.0.0",
        maxPacketSize=max_packet_size, reactor=reactor,
    )
    p.startListening()
    return p


__all__ = [
    "NGProtocol", "PktInfoPort", "listen_ng", "decode_payload", "encode_reply",
    "error_reply", "to_str", "supports_load_limit", "E_REPLY_TOO_LARGE",
    "MAX_UDP_PAYLOAD",
]
