"""RedisStore against a real redis-server (Debian's, started by the test on
127.0.0.1): writes, deletes, database and password, expiry, an outage in
the middle of the writes and the resync when the server is back."""

import socket

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import TestCase

from omnirtp.state.resp import RespError
from omnirtp.state.store import RedisStore
from omnirtp.test.integration.peers import start_redis
from omnirtp.test.integration.test_daemon import wait_for

#: how long to wait for the store's asynchronous writes and retries (a bound
#: on waiting, not a timed assertion)
WAIT = dict(timeout=15.0, step=0.05)


def _raw(port, *args, password=None, db=None):
    """One command over a plain socket (the test's own view of the server),
    in database ``db`` if given."""
    from omnirtp.state.resp import ReplyParser, encode_command
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        parser = ReplyParser()
        commands = []
        if password is not None:
            commands.append(encode_command("AUTH", password))
        if db is not None:
            commands.append(encode_command("SELECT", str(db)))
        commands.append(encode_command(*args))
        s.sendall(b"".join(commands))
        replies = []
        while len(replies) < len(commands):
            data = s.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            replies.extend(parser.feed(data))
        return replies[-1]


class RedisStoreTests(TestCase):

    timeout = 120

    @defer.inlineCallbacks
    def test_writeDeleteLoad(self):
        server = start_redis(self)
        store = RedisStore(reactor, "127.0.0.1:%d/4" % server.port, expires=300)
        self.addCleanup(store.stop)
        yield store.start()
        store.save("call-a", b'{"tag":"a"}')
        store.save("call-b", b"\x00\xffbinary")
        store.save("call-a", b'{"tag":"a2"}')
        store.save("gone", b"x")
        store.delete("gone")
        yield wait_for(lambda: store.stats()["backlog"] == 0, **WAIT)
        calls = yield store.load_all()
        self.assertEqual(calls, {"call-a": b'{"tag":"a2"}', "call-b": b"\x00\xffbinary"})
        # in database 4, with the expiry rtpengine's redis-expires sets
        self.assertEqual(_raw(server.port, "SELECT", 4), "OK")
        self.assertEqual(_raw(server.port, "DBSIZE"), 0)  # a fresh connection is on db 0
        ttl = _raw(server.port, "EVAL", "redis.call('SELECT', 4); "
                   "return redis.call('TTL', KEYS[1])", 1, "omnirtp:call:call-a")
        self.assertTrue(0 < ttl <= 300, ttl)
        self.assertEqual(store.stats(), {"state": "up", "writes": 4, "deletes": 1, "errors": 0,
                                         "resyncs": 0, "backlog": 0})

    @defer.inlineCallbacks
    def test_password(self):
        server = start_redis(self, password="s3cret")
        store = RedisStore(reactor, "s3cret@127.0.0.1:%d/0" % server.port)
        self.addCleanup(store.stop)
        yield store.start()
        store.save("c", b"v")
        yield wait_for(lambda: store.stats()["backlog"] == 0, **WAIT)
        self.assertEqual(_raw(server.port, "GET", "omnirtp:call:c", password="s3cret"), b"v")
        wrong = RedisStore(reactor, "nope@127.0.0.1:%d/0" % server.port)
        self.addCleanup(wrong.stop)
        failure = yield self.assertFailure(wrong.start(), RespError)
        self.assertIn("WRONGPASS", str(failure))

    @defer.inlineCallbacks
    def test_outageAndResync(self):
        """The server dies mid-call: writes go on in memory (the latest per
        call), and land in Redis once a server answers on the port again."""
        server = start_redis(self)
        port, directory = server.port, server.directory
        store = RedisStore(reactor, "127.0.0.1:%d/0" % port, disable_time=0.5)
        self.addCleanup(store.stop)
        yield store.start()
        store.save("before", b"1")
        yield wait_for(lambda: store.stats()["backlog"] == 0, **WAIT)
        server.stop()
        yield wait_for(lambda: store.state == "down", **WAIT)
        for i in range(50):
            store.save("during", b"%d" % i)
        store.delete("before")
        self.assertEqual(store.stats()["backlog"], 2)
        start_redis(self, port=port, directory=directory)
        yield wait_for(lambda: store.state == "up" and store.stats()["backlog"] == 0, **WAIT)
        calls = yield store.load_all()
        self.assertEqual(calls, {"during": b"49"})
        self.assertEqual(store.resyncs, 1)
        self.assertGreaterEqual(store.errors, 1)

    @defer.inlineCallbacks
    def test_unreachableAtStart(self):
        from omnirtp.test.integration.peers import free_port
        port = free_port(socket.SOCK_STREAM)
        store = RedisStore(reactor, "127.0.0.1:%d/0" % port, disable_time=0.3)
        self.addCleanup(store.stop)
        yield self.assertFailure(store.start(), ConnectionRefusedError)
        store.save("c", b"kept")
        start_redis(self, port=port)
        yield wait_for(lambda: store.state == "up" and store.stats()["backlog"] == 0, **WAIT)
        self.assertEqual(_raw(port, "GET", "omnirtp:call:c"), b"kept")
