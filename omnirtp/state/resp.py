"""RESP, the Redis wire protocol: a command encoder and an incremental reply
parser (plain functions and objects, bytes in, values out), and a small
Twisted protocol that pipelines commands over one TCP connection.

Why our own and not txredisapi: the Debian 12 package (the daemon's
deployment) has no python3-txredisapi, the few commands the state store
needs (AUTH, SELECT, SET, DEL, SCAN, MGET, PING) are a page of code, and
the parser below is bounded (bulk length, nesting depth) so that a broken
or hostile server cannot make the daemon allocate without limit.

Replies map to Python values: simple string -> ``str``, integer -> ``int``,
bulk string -> ``bytes`` (``None`` for the null bulk), array -> ``list``
(``None`` for the null array), error -> a :class:`RespError` instance (the
parser returns it; :class:`RespProtocol` errbacks the command's Deferred
with it).
"""

from collections import deque

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

#: the largest bulk string the parser accepts (a call's state is a few KB)
MAX_BULK = 64 * 1024 * 1024
#: the largest array and the deepest nesting the parser accepts
MAX_ARRAY = 1024 * 1024
MAX_DEPTH = 8
#: the longest line (simple string, error, integer, length) accepted
MAX_LINE = 64 * 1024


class RespError(Exception):
    """An error reply from the server (``-ERR ...``); ``str()`` is its text."""


class ProtocolError(ValueError):
    """The byte stream is not RESP (or breaks one of the parser's bounds)."""


def _arg(value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):
        raise TypeError("RESP argument cannot be a bool")
    if isinstance(value, int):
        return b"%d" % value
    raise TypeError("RESP argument must be bytes, str or int, not %s" % type(value).__name__)


def encode_command(*args):
    """One command as a RESP array of bulk strings."""
    if not args:
        raise ValueError("a command needs at least its name")
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = _arg(a)
        parts.append(b"$%d\r\n" % len(a))
        parts.append(a)
        parts.append(b"\r\n")
    return b"".join(parts)


class _Incomplete(Exception):
    pass


class ReplyParser:
    """Incremental: :meth:`feed` bytes, get the complete replies so far.

    A reply split over several reads is kept until it is whole; after a
    :class:`ProtocolError` the parser is unusable (the connection must go).
    """

    def __init__(self):
        self._buf = b""

    def feed(self, data):
        buf = self._buf + data if self._buf else data
        replies = []
        pos = 0
        end = len(buf)
        while pos < end:
            try:
                value, pos = self._parse(buf, pos, 0)
            except _Incomplete:
                break
            replies.append(value)
        self._buf = buf[pos:]
        if len(self._buf) > MAX_BULK + MAX_LINE:
            raise ProtocolError("reply larger than %d bytes" % (MAX_BULK + MAX_LINE))
        return replies

    def pending(self):
        """Bytes held for a reply that is not whole yet."""
        return len(self._buf)

    @staticmethod
    def _line(buf, pos):
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            if len(buf) - pos > MAX_LINE:
                raise ProtocolError("line longer than %d bytes" % MAX_LINE)
            raise _Incomplete()
        if nl - pos > MAX_LINE:
            raise ProtocolError("line longer than %d bytes" % MAX_LINE)
        return buf[pos:nl], nl + 2

    @staticmethod
    def _int(text, what):
        try:
            if not text or text.strip() != text:
                raise ValueError(text)
            return int(text)
        except ValueError:
            raise ProtocolError("bad %s %r" % (what, text[:40]))

    def _parse(self, buf, pos, depth):
        if pos >= len(buf):
            raise _Incomplete()
        kind = buf[pos:pos + 1]
        line, after = self._line(buf, pos + 1)
        if kind == b"+":
            return line.decode("utf-8", "replace"), after
        if kind == b"-":
            return RespError(line.decode("utf-8", "replace")), after
        if kind == b":":
            return self._int(line, "integer"), after
        if kind == b"$":
            n = self._int(line, "bulk length")
            if n == -1:
                return None, after
            if n < 0 or n > MAX_BULK:
                raise ProtocolError("bulk length %d out of range" % n)
            stop = after + n
            if len(buf) < stop + 2:
                raise _Incomplete()
            if buf[stop:stop + 2] != b"\r\n":
                raise ProtocolError("bulk string not followed by CRLF")
            return buf[after:stop], stop + 2
        if kind == b"*":
            n = self._int(line, "array length")
            if n == -1:
                return None, after
            if n < 0 or n > MAX_ARRAY:
                raise ProtocolError("array length %d out of range" % n)
            if depth >= MAX_DEPTH:
                raise ProtocolError("arrays nested deeper than %d" % MAX_DEPTH)
            items = []
            for _ in range(n):
                item, after = self._parse(buf, after, depth + 1)
                items.append(item)
            return items, after
        raise ProtocolError("unknown reply type %r" % kind)


class RespProtocol(Protocol):
    """Pipelined commands: each :meth:`execute` writes at once and returns a
    Deferred that fires with the reply (or fails with :class:`RespError`);
    replies come back in order.  A protocol error or a lost connection fails
    every command still waiting."""

    def __init__(self):
        self.parser = ReplyParser()
        self.waiting = deque()
        self.connected_d = Deferred()
        self.lost_d = Deferred()
        self.closed = False
        #: ``on_push(kind, items)`` for the messages a subscribed connection
        #: gets unasked (``message`` / ``pmessage`` arrays); None: such a
        #: reply is a protocol error like any reply nobody asked for
        self.on_push = None

    def connectionMade(self):
        d, self.connected_d = self.connected_d, None
        d.callback(self)

    def execute(self, *args):
        if self.closed:
            return _failed(ConnectionDone("connection to redis is closed"))
        d = Deferred()
        self.waiting.append(d)
        self.transport.write(encode_command(*args))
        return d

    def dataReceived(self, data):
        try:
            replies = self.parser.feed(data)
        except ProtocolError as e:
            self.transport.loseConnection()
            self._fail_all(Failure(e))
            return
        for reply in replies:
            if (self.on_push is not None and isinstance(reply, list) and reply
                    and reply[0] in (b"message", b"pmessage")):
                self.on_push(reply[0], reply[1:])
                continue
            if not self.waiting:
                # a reply nobody asked for: the stream is out of step
                self.transport.loseConnection()
                self._fail_all(Failure(ProtocolError("unexpected reply from redis")))
                return
            d = self.waiting.popleft()
            if isinstance(reply, RespError):
                d.errback(reply)
            else:
                d.callback(reply)

    def _fail_all(self, failure):
        self.closed = True
        waiting, self.waiting = self.waiting, deque()
        for d in waiting:
            d.errback(failure)

    def connectionLost(self, reason=None):
        self._fail_all(reason if reason is not None else Failure(ConnectionDone()))
        d, self.lost_d = self.lost_d, None
        if d is not None:
            d.callback(None)


def _failed(exc):
    d = Deferred()
    d.errback(Failure(exc))
    return d


__all__ = ["RespError", "ProtocolError", "encode_command", "ReplyParser", "RespProtocol",
           "MAX_BULK", "MAX_ARRAY", "MAX_DEPTH", "MAX_LINE"]
