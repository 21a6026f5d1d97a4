"""State stores: where the call registry keeps each call's serialised state.

:class:`MemoryStore` is the default (nothing survives the process);
:class:`RedisStore` keeps the calls in Redis, so that a restarted daemon
or a standby on the same Redis rebuilds them (rtpengine's ``redis`` /
``redis-write`` options, ``[PASSWORD@]HOST:PORT/DB``).

Writes never wait: :meth:`RedisStore.save` and :meth:`RedisStore.delete`
return at once.  While Redis is unreachable the latest state of every call
is kept in memory (one entry per call, so the backlog is bounded by the
calls themselves), one line is logged, ``errors`` counts the failures, and
when the connection is back every call still waiting is written again (the
resync).
"""

import re

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.logger import Logger
from zope.interface import implementer

from omnirtp.interfaces import IStateStore
from omnirtp.state.resp import RespProtocol

_ADDRESS = re.compile(
    r"^(?:(?P<password>[^@]*)@)?"
    r"(?:\[(?P<host6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:/@\[\]]+))"
    r":(?P<port>\d{1,5})(?:/(?P<db>\d{1,4}))?$"
)


class RedisAddress:
    """``[PASSWORD@]HOST:PORT/DB`` as rtpengine's ``redis`` option writes it
    (an IPv6 host in brackets; ``/DB`` may be left out: database 0)."""

    __slots__ = ("password", "host", "port", "db")

    def __init__(self, host, port, db=0, password=None):
        self.host = host
        self.port = port
        self.db = db
        self.password = password

    @classmethod
    def parse(cls, text):
        m = _ADDRESS.match(text.strip())
        if m is None:
            raise ValueError("%r is not [PASSWORD@]HOST:PORT/DB" % (text,))
        port = int(m.group("port"))
        if not 0 < port < 65536:
            raise ValueError("%r: port %d out of range" % (text, port))
        password = m.group("password")
        return cls(m.group("host6") or m.group("host"), port,
                   int(m.group("db") or 0), password if password else None)

    def __str__(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%d/%d" % (host, self.port, self.db)

    def __eq__(self, other):
        return (isinstance(other, RedisAddress)
                and (self.host, self.port, self.db, self.password)
                == (other.host, other.port, other.db, other.password))

    def __repr__(self):
        return "RedisAddress(%r, %d, db=%d%s)" % (
            self.host, self.port, self.db, ", password=..." if self.password else "")


@implementer(IStateStore)
class MemoryStore:
    """Keeps the blobs in a dict: the default, and the store of the tests."""

    def __init__(self):
        self.calls = {}

    def save(self, call_id, blob):
        self.calls[call_id] = blob

    def delete(self, call_id):
        self.calls.pop(call_id, None)

    def load_all(self):
        return defer.succeed(dict(self.calls))

    def stats(self):
        return {"state": "memory", "calls": len(self.calls), "writes": 0, "deletes": 0,
                "errors": 0, "resyncs": 0, "backlog": 0}


def send_now(protocol):
    """Give what ``protocol`` has written to the kernel now, instead of at
    the reactor's next turn: Twisted's TCP transport keeps a write until the
    reactor finds the socket writable and calls its ``doWrite``; this calls
    it at once (the same ``send`` and the same two ``epoll_ctl``, earlier).
    What the socket cannot take stays queued for the reactor, and an error
    is left to it (the socket stays watched for writing, so the reactor
    meets the error and closes the connection).  A transport without
    ``doWrite`` (a test's, a TLS wrapper) is left to the reactor."""
    transport = getattr(protocol, "transport", None)
    do_write = getattr(transport, "doWrite", None)
    if do_write is None or not getattr(transport, "connected", False) \
            or getattr(transport, "disconnecting", False):
        return
    do_write()


def _connect_tcp(reactor, address, timeout):
    endpoint = HostnameEndpoint(reactor, address.host, address.port, timeout=timeout)
    return connectProtocol(endpoint, RespProtocol())


@implementer(IStateStore)
class RedisStore:
    """Calls in Redis, one string key per call (``omnirtp:call:<call-id>``,
    expiring after ``expires`` seconds, as rtpengine's ``redis-expires``).

    :param connect: ``connect(reactor, address, timeout)`` -> Deferred
        firing with a connected :class:`RespProtocol` (tests give their own).
    """

    prefix = b"omnirtp:call:"
    log = Logger()

    def __init__(self, reactor, address, expires=86400, connect_timeout=1.0,
                 cmd_timeout=0.0, disable_time=10.0, connect=_connect_tcp):
        if isinstance(address, str):
            address = RedisAddress.parse(address)
        self.reactor = reactor
        self.address = address
        self.expires = expires
        self.connect_timeout = connect_timeout
        self.cmd_timeout = cmd_timeout
        self.disable_time = disable_time
        self._connect = connect
        self.state = "stopped"  # stopped | connecting | up | down
        self.protocol = None
        self._want = {}  # call_id -> blob (save) or None (delete), not acknowledged yet
        self._seq = {}  # call_id -> the sequence number of the op in _want
        self._next_seq = 0
        self._retry = None
        self._ready_waiters = []
        self.writes = 0
        self.deletes = 0
        self.errors = 0
        self.resyncs = 0
        self._down_logged = False
        #: ``snapshot_all()`` -> iterable of (call_id, blob) of every live
        #: call (the registry's), written again when Redis is back
        self.snapshot_all = None
        self._beat = None
        self._beat_now = None

    # -- lifecycle -------------------------------------------------------

    def start(self):
        """Connect (and keep reconnecting every ``disable_time`` seconds while
        Redis is unreachable).  Returns a Deferred that fires once connected
        the first time (or fails if that first attempt fails: the caller
        decides whether to start without Redis, as ``no-redis-required``)."""
        d = defer.Deferred()
        self._ready_waiters.append(d)
        if self.state == "stopped":
            self._dial()
        return d

    def stop(self, timeout=2.0):
        """Close the connection once what was written to it is sent; fires
        when it is closed (at most ``timeout`` seconds later), so that a
        daemon's shutdown does not cut off its last writes."""
        self.state = "stopped"
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        protocol, self.protocol = self.protocol, None
        if protocol is None or protocol.transport is None or protocol.lost_d is None:
            return defer.succeed(None)
        closed = defer.Deferred()
        protocol.lost_d.addBoth(lambda _: closed.called or closed.callback(None))
        protocol.transport.loseConnection()

        def abort():
            if not closed.called:
                abort_connection = getattr(protocol.transport, "abortConnection", None)
                if abort_connection is not None:
                    abort_connection()
                if not closed.called:
                    closed.callback(None)
        timer = self.reactor.callLater(timeout, abort)

        def done(result):
            if timer.active():
                timer.cancel()
            return result
        return closed.addBoth(done)

    def _dial(self):
        self.state = "connecting"
        d = defer.maybeDeferred(self._connect, self.reactor, self.address, self.connect_timeout)
        d.addCallback(self._handshake)
        d.addCallbacks(self._up, self._connect_failed)

    @defer.inlineCallbacks
    def _handshake(self, protocol):
        if self.state == "stopped":
            protocol.transport.loseConnection()
            raise _Stopped()
        self.protocol = protocol
        protocol.lost_d.addCallback(self._lost, protocol)
        if self.address.password is not None:
            yield self._command("AUTH", self.address.password)
        if self.address.db:
            yield self._command("SELECT", self.address.db)
        return protocol

    def _up(self, protocol):
        if self.state == "stopped":
            return
        if self._down_logged:
            # Redis may have lost what it had (restarted without persistence,
            # or failed over): write every live call again, not only what
            # changed during the outage (queued while not yet "up": sent once,
            # below)
            if self.snapshot_all is not None:
                for call_id, blob in self.snapshot_all():
                    self._queue(call_id, blob)
            self.log.info("redis {address} is back: writing {n} calls again",
                          address=str(self.address), n=len(self._want))
            self._down_logged = False
        self.state = "up"
        if self._beat_now is not None:
            self._beat_now()
        if self._want:
            self.resyncs += 1
            for call_id in list(self._want):
                self._send(call_id)
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(self)

    def _connect_failed(self, failure):
        if failure.check(_Stopped) or self.state == "stopped":
            return
        self.errors += 1
        self._went_down(failure.getErrorMessage())
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.errback(failure)

    def _lost(self, _ignored, protocol):
        if protocol is not self.protocol:
            return
        self.protocol = None
        if self.state in ("up", "connecting"):
            self.errors += 1
            self._went_down("connection lost")

    def _went_down(self, why):
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.loseConnection()
        self.protocol = None
        self.state = "down"
        if not self._down_logged:
            self._down_logged = True
            self.log.warn("redis {address} is unreachable ({why}): calls go on in memory, "
                          "retrying every {seconds:g} s",
                          address=str(self.address), why=why, seconds=self.disable_time)
        if self._retry is None or not self._retry.active():
            self._retry = self.reactor.callLater(self.disable_time, self._dial)

    # -- commands --------------------------------------------------------

    def _command(self, *args):
        protocol = self.protocol
        if protocol is None:
            return defer.fail(ConnectionError("redis is not connected"))
        d = protocol.execute(*args)
        if self.cmd_timeout:
            timer = self.reactor.callLater(self.cmd_timeout, self._timed_out, protocol)

            def cancel(result):
                if timer.active():
                    timer.cancel()
                return result
            d.addBoth(cancel)
        return d

    def _timed_out(self, protocol):
        if protocol is self.protocol:
            self.errors += 1
            self._went_down("no answer within %g s" % self.cmd_timeout)

    # -- IStateStore -----------------------------------------------------

    def _key(self, call_id):
        if isinstance(call_id, str):
            call_id = call_id.encode("utf-8", "surrogateescape")
        return self.prefix + call_id

    def save(self, call_id, blob):
        self._queue(call_id, blob)

    def delete(self, call_id):
        self._queue(call_id, None)

    def _queue(self, call_id, blob):
        self._next_seq += 1
        self._want[call_id] = blob
        self._seq[call_id] = self._next_seq
        if self.state == "up":
            self._send(call_id)

    def _send(self, call_id):
        blob = self._want[call_id]
        seq = self._seq[call_id]
        if blob is None:
            d = self._command("DEL", self._key(call_id))
        elif self.expires:
            d = self._command("SET", self._key(call_id), blob, "EX", self.expires)
        else:
            d = self._command("SET", self._key(call_id), blob)
        d.addCallbacks(self._acked, self._failed, callbackArgs=(call_id, seq, blob is None))
        # the ng reply of the request that changed the call is sent after
        # this returns: the command must be with the kernel before it, so
        # that a daemon killed once it has replied has written the change
        send_now(self.protocol)

    def _acked(self, _reply, call_id, seq, deleted):
        if deleted:
            self.deletes += 1
        else:
            self.writes += 1
        if self._seq.get(call_id) == seq:
            del self._want[call_id]
            del self._seq[call_id]

    def _failed(self, failure):
        # the op stays in _want: written again at the resync
        self.errors += 1
        if self.state == "up":
            self._went_down(failure.getErrorMessage())

    @defer.inlineCallbacks
    def load_all(self):
        """``{call_id (str): blob (bytes)}`` of every call in the database."""
        if self.state in ("stopped", "connecting"):
            yield self.start()
        elif self.state != "up":
            raise ConnectionError("redis %s is %s" % (self.address, self.state))
        keys = []
        cursor = b"0"
        while True:
            reply = yield self._command("SCAN", cursor, "MATCH", self.prefix + b"*",
                                        "COUNT", 1000)
            cursor, batch = reply
            keys.extend(batch)
            if cursor == b"0":
                break
        calls = {}
        keys = sorted(set(keys))
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            values = yield self._command("MGET", *chunk)
            for key, value in zip(chunk, values):
                if value is not None:
                    calls[key[len(self.prefix):].decode("utf-8", "surrogateescape")] = value
        return calls

    def command(self, *args):
        """One Redis command (a Deferred), failing while not connected."""
        if self.state != "up":
            return defer.fail(ConnectionError("redis %s is %s" % (self.address, self.state)))
        return self._command(*args)

    def get(self, call_id):
        """The blob of one call in the database (None if it has none): a
        Deferred, failing while Redis is not reachable."""
        if self.state != "up":
            return defer.fail(ConnectionError("redis %s is %s" % (self.address, self.state)))
        return self._command("GET", self._key(call_id))

    # -- the owner's heartbeat ---------------------------------------------

    #: the key that says "the instance writing this database is alive"
    alive_key = b"omnirtp:alive"

    def heartbeat(self, instance_id, interval, ttl):
        """Every ``interval`` seconds (while connected) set :attr:`alive_key`
        to ``instance_id``, expiring after ``ttl`` seconds: an instance
        following this database (``subscribe-keyspace``) takes the calls
        over when the key expires (``omnirtp.state.keyspace``)."""
        from twisted.internet import task

        def beat():
            if self.state == "up":
                d = self._command("SET", self.alive_key, instance_id, "PX", int(ttl * 1000))
                d.addErrback(self._failed)
        self._beat = task.LoopingCall(beat)
        self._beat.clock = self.reactor
        self._beat.start(interval, now=False)
        self._beat_now = beat
        return self._beat

    def stats(self):
        return {"state": self.state, "writes": self.writes, "deletes": self.deletes,
                "errors": self.errors, "resyncs": self.resyncs, "backlog": len(self._want)}


class _Stopped(Exception):
    pass


__all__ = ["RedisAddress", "MemoryStore", "RedisStore"]
