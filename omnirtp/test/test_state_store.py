"""omnirtp.state.store: the address syntax, the memory store, and the Redis
store's write-behind, outage and resync on a Clock with scripted
connections (the real Redis is in integration/test_redis.py)."""

import socket

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from omnirtp.interfaces import IStateStore
from omnirtp.state.resp import RespProtocol, encode_command
from omnirtp.state.store import MemoryStore, RedisAddress, RedisStore


class AddressTests(SynchronousTestCase):

    def test_forms(self):
        self.assertEqual(RedisAddress.parse("127.0.0.1:6379/5"),
                         RedisAddress("127.0.0.1", 6379, 5))
        self.assertEqual(RedisAddress.parse("s3cret@redis.example:6380/1"),
                         RedisAddress("redis.example", 6380, 1, "s3cret"))
        self.assertEqual(RedisAddress.parse("[::1]:6379/2"), RedisAddress("::1", 6379, 2))
        self.assertEqual(RedisAddress.parse("localhost:6379"), RedisAddress("localhost", 6379, 0))
        self.assertEqual(str(RedisAddress.parse("pw@[::1]:6379/2")), "[::1]:6379/2")
        self.assertNotIn("pw", repr(RedisAddress.parse("pw@h:1/0")))

    def test_bad(self):
        for text in ("", "host", "host:", ":6379/0", "host:6379/x", "host:0/1",
                     "host:70000/1", "a:b:6379/1", "[::1/0"):
            self.assertRaises(ValueError, RedisAddress.parse, text)


class MemoryStoreTests(SynchronousTestCase):

    def test_store(self):
        store = MemoryStore()
        verifyObject(IStateStore, store)
        store.save("a", b"1")
        store.save("b", b"2")
        store.save("a", b"3")
        store.delete("b")
        store.delete("nothing")
        self.assertEqual(self.successResultOf(store.load_all()), {"a": b"3"})


class _Server:
    """Scripted connections: each connect attempt takes the next outcome."""

    def __init__(self):
        self.outcomes = []
        self.connections = []

    def connect(self, reactor, address, timeout):
        outcome = self.outcomes.pop(0)
        if outcome == "refuse":
            return defer.fail(ConnectionRefusedError())
        proto = RespProtocol()
        transport = StringTransport()
        proto.makeConnection(transport)
        self.connections.append((proto, transport))
        return defer.succeed(proto)


class RedisStoreTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.server = _Server()

    def store(self, address="127.0.0.1:6379/0", **kw):
        return RedisStore(self.clock, address, connect=self.server.connect, **kw)

    def test_interface(self):
        verifyObject(IStateStore, self.store())

    def test_authSelectThenWrites(self):
        self.server.outcomes = ["ok"]
        store = self.store("pw@127.0.0.1:6379/3", expires=60)
        d = store.start()
        proto, transport = self.server.connections[0]
        self.assertEqual(transport.value(), encode_command("AUTH", "pw"))
        transport.clear()
        proto.dataReceived(b"+OK\r\n")
        self.assertEqual(transport.value(), encode_command("SELECT", 3))
        transport.clear()
        self.assertNoResult(d)
        proto.dataReceived(b"+OK\r\n")
        self.assertIs(self.successResultOf(d), store)
        self.assertEqual(store.state, "up")
        store.save("call-1", b"{json}")
        store.delete("call-2")
        self.assertEqual(transport.value(),
                         encode_command("SET", b"omnirtp:call:call-1", b"{json}", "EX", 60)
                         + encode_command("DEL", b"omnirtp:call:call-2"))
        self.assertEqual(store.stats()["backlog"], 2)
        proto.dataReceived(b"+OK\r\n:0\r\n")
        self.assertEqual(store.stats(), {"state": "up", "writes": 1, "deletes": 1, "errors": 0,
                                         "resyncs": 0, "backlog": 0})

    def test_downKeepsLatestAndResyncs(self):
        """Redis unreachable: calls go on, the latest state of each call is
        kept (one entry per call), and written when Redis is back."""
        self.server.outcomes = ["refuse", "refuse", "ok"]
        store = self.store(disable_time=10)
        self.failureResultOf(store.start(), ConnectionRefusedError)
        self.assertEqual(store.state, "down")
        for i in range(5):
            store.save("c1", b"v%d" % i)
        store.save("c2", b"x")
        store.delete("c3")
        self.assertEqual(store.stats()["backlog"], 3)
        self.clock.advance(10)  # second attempt refused too
        self.assertEqual(store.state, "down")
        self.assertEqual(store.errors, 2)
        self.clock.advance(10)
        self.assertEqual(store.state, "up")
        proto, transport = self.server.connections[0]
        self.assertEqual(transport.value(),
                         encode_command("SET", b"omnirtp:call:c1", b"v4", "EX", 86400)
                         + encode_command("SET", b"omnirtp:call:c2", b"x", "EX", 86400)
                         + encode_command("DEL", b"omnirtp:call:c3"))
        proto.dataReceived(b"+OK\r\n+OK\r\n:1\r\n")
        self.assertEqual(store.stats()["backlog"], 0)
        self.assertEqual(store.resyncs, 1)

    def test_backWritesEveryLiveCall(self):
        """After an outage every live call is written again (Redis may have
        lost them all), not only what changed meanwhile."""
        self.server.outcomes = ["ok", "refuse", "ok"]
        store = self.store(disable_time=1)
        store.snapshot_all = lambda: [("old", b"O"), ("changed", b"C2")]
        store.start()
        proto, transport = self.server.connections[0]
        proto.connectionLost(None)
        store.save("changed", b"C2")
        store.delete("gone")
        self.clock.advance(1)  # refused
        self.clock.advance(1)
        proto2, transport2 = self.server.connections[1]
        self.assertEqual(transport2.value(),
                         encode_command("SET", b"omnirtp:call:changed", b"C2", "EX", 86400)
                         + encode_command("DEL", b"omnirtp:call:gone")
                         + encode_command("SET", b"omnirtp:call:old", b"O", "EX", 86400))
        self.assertEqual(store.resyncs, 1)

    def test_lostMidWrite(self):
        """A write whose connection drops stays in the backlog; a newer
        write of the same call replaces it."""
        self.server.outcomes = ["ok", "ok"]
        store = self.store(disable_time=2)
        store.start()
        proto, transport = self.server.connections[0]
        store.save("c1", b"old")
        proto.connectionLost(None)
        self.assertEqual(store.state, "down")
        store.save("c1", b"new")
        self.clock.advance(2)
        proto2, transport2 = self.server.connections[1]
        self.assertEqual(transport2.value(),
                         encode_command("SET", b"omnirtp:call:c1", b"new", "EX", 86400))
        proto2.dataReceived(b"+OK\r\n")
        self.assertEqual(store.stats()["backlog"], 0)

    def test_commandTimeout(self):
        """A Redis that stops answering counts as down (redis-cmd-timeout)."""
        self.server.outcomes = ["ok", "ok"]
        store = self.store(cmd_timeout=0.5, disable_time=3)
        store.start()
        proto, transport = self.server.connections[0]
        store.save("c1", b"v")
        self.clock.advance(0.5)
        self.assertEqual(store.state, "down")
        self.assertTrue(transport.disconnecting)
        self.clock.advance(3)
        self.assertEqual(store.state, "up")
        self.assertEqual(self.server.connections[1][1].value(),
                         encode_command("SET", b"omnirtp:call:c1", b"v", "EX", 86400))

    def test_ackOfOlderWriteKeepsNewer(self):
        self.server.outcomes = ["ok"]
        store = self.store()
        store.start()
        proto, transport = self.server.connections[0]
        store.save("c1", b"a")
        store.save("c1", b"b")
        proto.dataReceived(b"+OK\r\n")
        self.assertEqual(store.stats()["backlog"], 1)
        proto.dataReceived(b"+OK\r\n")
        self.assertEqual(store.stats()["backlog"], 0)

    def test_loadAll(self):
        self.server.outcomes = ["ok"]
        store = self.store()
        d = store.load_all()
        proto, transport = self.server.connections[0]
        self.assertEqual(transport.value(),
                         encode_command("SCAN", b"0", "MATCH", b"omnirtp:call:*", "COUNT", 1000))
        transport.clear()
        proto.dataReceived(b"*2\r\n$2\r\n17\r\n*1\r\n$14\r\nomnirtp:call:a\r\n")
        transport.clear()
        proto.dataReceived(b"*2\r\n$1\r\n0\r\n*2\r\n$14\r\nomnirtp:call:b\r\n"
                           b"$14\r\nomnirtp:call:a\r\n")
        self.assertEqual(transport.value(),
                         encode_command("MGET", b"omnirtp:call:a", b"omnirtp:call:b"))
        proto.dataReceived(b"*2\r\n$1\r\n1\r\n$-1\r\n")  # b expired meanwhile
        self.assertEqual(self.successResultOf(d), {"a": b"1"})

    def test_stopCancelsRetry(self):
        self.server.outcomes = ["refuse"]
        store = self.store()
        self.failureResultOf(store.start())
        store.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(store.state, "stopped")


class SentBeforeReplyTests(TestCase):
    """A write leaves for Redis before ``save`` returns, i.e. before the ng
    reply of the request that changed the call: a daemon killed once it
    has replied has written the change.  A real TCP connection on
    loopback (Twisted's transport keeps a write until the reactor's next
    turn; the reactor does not run between ``save`` and the check)."""

    def setUp(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.addCleanup(self.listener.close)

    @defer.inlineCallbacks
    def test_writeIsSentBeforeSaveReturns(self):
        from twisted.internet import reactor
        port = self.listener.getsockname()[1]
        store = RedisStore(reactor, "127.0.0.1:%d/0" % port, expires=0)
        self.addCleanup(store.stop, 0.1)
        yield store.start()
        peer, _ = self.listener.accept()
        self.addCleanup(peer.close)
        peer.settimeout(0.5)
        store.save("call-1", b"{json}")
        # no reactor turn since save: the bytes are there only if sent now
        expected = encode_command("SET", b"omnirtp:call:call-1", b"{json}")
        self.assertEqual(peer.recv(4096), expected)
        store.delete("call-1")
        self.assertEqual(peer.recv(4096), encode_command("DEL", b"omnirtp:call:call-1"))
