"""omnirtp.state.keyspace: foreign calls followed through keyspace
notifications and taken over, on a Clock, against an in-memory Redis that
speaks RESP (commands parsed, replies and notifications encoded) and two
control stacks: A makes the calls, B follows A's database."""

from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.cli.commands import CliCommands
from omnirtp.config.model import Config, InterfaceSpec
from omnirtp.errors import E_FOREIGN_CALL, NGError
from omnirtp.logging import LogLevels
from omnirtp.control.operations import Operations
from omnirtp.state import snapshot
from omnirtp.state.keyspace import OWNER_TTL, KeyspaceFollower, parse_keyspaces
from omnirtp.state.resp import ReplyParser, RespProtocol
from omnirtp.state.store import MemoryStore, RedisAddress
from omnirtp.test.fakes import ControlStack


def encode_reply(value):
    if isinstance(value, str):
        return b"+%s\r\n" % value.encode()
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(encode_reply(v) for v in value)


class FakeRedis:
    """The few commands omnirtp sends, over RespProtocol connections, and
    keyspace notifications to the PSUBSCRIBEd ones."""

    def __init__(self):
        self.dbs = {}
        self.subscribers = []  # (protocol, pattern)
        self.notify_flags = b"KA"
        self.commands = []

    def connect(self, reactor, address, timeout):
        proto = RespProtocol()
        proto.makeConnection(_Wire(self, proto))
        return defer.succeed(proto)

    def db(self, n):
        return self.dbs.setdefault(n, {})

    def notify(self, db, key, event):
        channel = b"__keyspace@%d__:%s" % (db, key)
        for proto, pattern in list(self.subscribers):
            if channel.startswith(pattern.rstrip(b"*")):
                proto.dataReceived(encode_reply([b"pmessage", pattern, channel, event]))

    # what another instance (or Redis itself) does to a database
    def set(self, db, key, value):
        self.db(db)[key] = value
        self.notify(db, key, b"set")

    def delete(self, db, key, event=b"del"):
        if self.db(db).pop(key, None) is not None:
            self.notify(db, key, event)

    def run(self, wire, args):
        name = args[0].upper()
        self.commands.append((wire.selected, args))
        data = self.db(wire.selected)
        if name in (b"AUTH", b"PING"):
            return "OK"
        if name == b"SELECT":
            wire.selected = int(args[1])
            return "OK"
        if name == b"SET":
            self.set(wire.selected, args[1], args[2])
            return "OK"
        if name == b"GET":
            return data.get(args[1])
        if name == b"DEL":
            n = int(args[1] in data)
            self.delete(wire.selected, args[1])
            return n
        if name == b"EXISTS":
            return int(args[1] in data)
        if name == b"MGET":
            return [data.get(k) for k in args[1:]]
        if name == b"SCAN":
            prefix = args[3].rstrip(b"*")
            return [b"0", sorted(k for k in data if k.startswith(prefix))]
        if name == b"CONFIG":
            return [args[2], self.notify_flags]
        if name == b"PSUBSCRIBE":
            self.subscribers.append((wire.protocol, args[1]))
            return [b"psubscribe", args[1], 1]
        raise AssertionError("unexpected command %r" % (args,))


class _Wire(StringTransport):
    """A connection's transport: each command written is answered at once."""

    def __init__(self, server, protocol):
        StringTransport.__init__(self)
        self.server, self.protocol = server, protocol
        self.selected = 0
        self.parser = ReplyParser()  # a command is a RESP array of bulk strings

    def write(self, data):
        for args in self.parser.feed(data):
            self.protocol.dataReceived(encode_reply(self.server.run(self, args)))

    def loseConnection(self):
        self.server.subscribers = [s for s in self.server.subscribers
                                   if s[0] is not self.protocol]
        self.protocol.connectionLost(None)


def make_call(stack, call_id):
    offer = stack.dispatch({"command": "offer", "call-id": call_id, "from-tag": "a",
                            "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
                                   "c=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                                   "m=audio 5000 RTP/AVP 0\r\n"})
    answer = stack.dispatch({"command": "answer", "call-id": call_id, "from-tag": "a",
                             "to-tag": "b", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
                                                   "c=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                                                   "m=audio 6000 RTP/AVP 0\r\n"})
    return offer, answer


KEY = b"omnirtp:call:"


class FollowerTests(SynchronousTestCase):

    def setUp(self):
        self.redis = FakeRedis()
        self.a = ControlStack()
        self.b = ControlStack()
        self.b.clock = self.b.registry.clock
        self.b.registry.store = self.own = MemoryStore()
        self.follower = KeyspaceFollower(
            self.b.clock, RedisAddress("127.0.0.1", 6379, 2), [1], self.b.registry,
            self.b.negotiator, self.b.interfaces, connect=self.redis.connect)
        self.addCleanup(self.follower.stopService)
        self.cli = CliCommands(Operations(self.b.dispatch, Config(
            interfaces=(InterfaceSpec("default", "127.0.0.1", None),)), LogLevels(6)))
        self.cli.ops.follower = self.follower

    def blob_of_a(self, call_id):
        self.successResultOf(make_call(self.a, call_id)[1])
        return snapshot.encode(self.a.registry.get(call_id))

    def ports_of_a(self, call_id):
        return sorted(p for _, p in self.a.engine.held[call_id])

    def run_cli(self, line):
        return self.successResultOf(self.cli.run(line))

    # a followed call's SRTP contexts start from the indexes its owner last
    # wrote (Media.srtp_index, srtp_resume), and from the newer ones of each
    # update, so a takeover goes on with the owner's rollover counters

    def blob_with_index(self, call_id, index):
        call = self.a.registry.get(call_id)
        if call is None:
            self.successResultOf(make_call(self.a, call_id)[1])
            call = self.a.registry.get(call_id)
        media = next(m for _ml, m in call.all_medias() if m.has_ports)
        media.srtp_index = {"rtp": {"in": {"key": "k", "rtp": {7: index}}}, "rtcp": None}
        return snapshot.encode(call), media.rtp_key

    def test_followedAndTakenOverWithTheIndexes(self):
        self.redis.set(1, b"omnirtp:alive", b"a")
        self.follower.startService()
        blob, key = self.blob_with_index("c1", 0x10005)
        self.redis.set(1, KEY + b"c1", blob)
        self.assertEqual(self.b.engine.configured[key]["srtp_resume"],
                         {"in": {"key": "k", "rtp": {7: 0x10005}}})
        blob, key = self.blob_with_index("c1", 0x14000)  # the owner wrote again
        self.redis.set(1, KEY + b"c1", blob)
        self.assertEqual(self.b.engine.configured[key]["srtp_resume"],
                         {"in": {"key": "k", "rtp": {7: 0x14000}}})
        self.redis.delete(1, b"omnirtp:alive", event=b"expired")
        self.assertEqual(list(self.b.registry.calls), ["c1"])
        taken = snapshot.decode(self.own.calls["c1"], self.b.interfaces)
        self.assertIn({"rtp": {"in": {"key": "k", "rtp": {7: 0x14000}}}, "rtcp": None},
                      [m.srtp_index for _ml, m in taken.all_medias()])

    def test_parseKeyspaces(self):
        self.assertEqual(parse_keyspaces(["2;3", "1", "3"]), (2, 3, 1))
        self.assertEqual(parse_keyspaces(["4, 5"]), (4, 5))
        self.assertEqual(parse_keyspaces([]), ())
        self.assertRaises(ValueError, parse_keyspaces, ["x"])
        self.assertRaises(ValueError, parse_keyspaces, ["-1"])

    def test_followSetAndDelete(self):
        self.redis.set(1, b"omnirtp:alive", b"a")
        self.follower.startService()
        self.assertEqual(self.follower.stats(), {1: {"state": "up", "foreign": 0, "taken": 0,
                                                     "failed": 0}})
        blob = self.blob_of_a("c1")
        self.redis.set(1, KEY + b"c1", blob)
        self.assertEqual(list(self.b.registry.foreign), ["c1"])
        self.assertEqual(self.b.registry.calls, {})
        # bound on B: the same ports as on A, forwarding given to B's engine
        self.assertEqual(sorted(p for _, p in self.b.engine.held["c1"]), self.ports_of_a("c1"))
        self.assertEqual(len(self.b.engine.configured), 4)
        self.assertEqual(self.own.calls, {})  # not written to B's database
        self.assertIn("foreign:yes", self.run_cli("list sessions foreign"))
        self.assertEqual(self.run_cli("list sessions own"),
                         "No own sessions on this media relay.\n")
        # an update (a re-INVITE on A) is followed; the same blob again is nothing new
        self.redis.set(1, KEY + b"c1", blob)
        self.assertEqual(self.follower.stats()[1]["foreign"], 1)
        # A deletes the call
        self.redis.delete(1, KEY + b"c1")
        self.assertEqual(self.b.registry.foreign, {})
        self.assertEqual(self.b.engine.held, {})
        self.assertEqual(self.run_cli("list sessions all"), "No sessions on this media relay.\n")

    def test_existingCallsReadAtSubscribeAndTakenOverWithoutOwner(self):
        """Calls already in the database are read when the subscription is
        made; with no heartbeat within OWNER_TTL they are taken over."""
        self.redis.db(1)[KEY + b"c1"] = self.blob_of_a("c1")
        self.redis.db(1)[KEY + b"c2"] = self.blob_of_a("c2")
        self.follower.startService()
        self.assertEqual(sorted(self.b.registry.foreign), ["c1", "c2"])
        self.b.clock.advance(OWNER_TTL - 0.1)
        self.assertEqual(sorted(self.b.registry.foreign), ["c1", "c2"])
        self.b.clock.advance(0.1)
        self.assertEqual(self.b.registry.foreign, {})
        self.assertEqual(sorted(self.b.registry.calls), ["c1", "c2"])
        self.assertEqual(sorted(self.own.calls), ["c1", "c2"])  # written to B's database
        self.assertEqual(self.redis.db(1), {})  # gone from A's
        self.assertEqual(self.follower.stats()[1]["taken"], 2)

    def test_heartbeatKeepsThenExpiryTakesOver(self):
        self.redis.set(1, b"omnirtp:alive", b"a")
        self.follower.startService()
        self.redis.set(1, KEY + b"c1", self.blob_of_a("c1"))
        self.b.clock.advance(OWNER_TTL * 3)
        self.assertEqual(list(self.b.registry.foreign), ["c1"])  # the owner beats
        self.redis.delete(1, b"omnirtp:alive", event=b"expired")
        self.assertEqual(list(self.b.registry.calls), ["c1"])
        call = self.b.registry.get("c1")
        self.assertEqual(call.last_signal, self.b.clock.seconds())
        # ng on B knows it now
        reply = self.successResultOf(self.b.dispatch({"command": "query", "call-id": "c1"}))
        self.assertEqual(reply["result"], "ok")

    def test_portsBusyWaitUntilTakeover(self):
        """Ports B cannot bind now (the owner holds them on this host) are
        bound when the call is taken over (the CLI's ``active``)."""
        self.redis.set(1, b"omnirtp:alive", b"a")
        self.follower.startService()
        blob = self.blob_of_a("c1")
        ports = self.ports_of_a("c1")
        self.successResultOf(make_call(self.b, "mine")[1])  # takes the same two pairs on B
        self.assertEqual(sorted(p for _, p in self.b.engine.held["mine"]), ports)
        self.redis.set(1, KEY + b"c1", blob)
        self.assertEqual(list(self.b.registry.foreign), ["c1"])
        self.assertNotIn("c1", self.b.engine.held)
        # taking it over while the ports are still busy fails and is counted
        self.assertEqual(self.run_cli("active"), "Ok, all calls set to 'owned (active)'\n")
        self.assertEqual(self.follower.stats()[1]["failed"], 1)
        self.assertNotIn("c1", self.b.registry.calls)
        self.assertEqual(list(self.b.registry.foreign), ["c1"])  # still followed
        # B's own call ends: the next active binds it
        self.successResultOf(self.b.registry.destroy(self.b.registry.get("mine"), "terminated"))
        self.assertEqual(self.run_cli("active"), "Ok, all calls set to 'owned (active)'\n")
        self.assertEqual(list(self.b.registry.calls), ["c1"])
        self.assertEqual(sorted(p for _, p in self.b.engine.held["c1"]), ports)

    def test_kslistAndNumsessions(self):
        self.redis.set(1, b"omnirtp:alive", b"a")
        self.follower.startService()
        self.redis.set(1, KEY + b"c1", self.blob_of_a("c1"))
        self.assertEqual(self.run_cli("kslist"), "\nSubscribed-on keyspaces:\n1 \n")
        stats = self.successResultOf(self.b.dispatch({"command": "statistics"}))
        current = stats["statistics"]["currentstatistics"]
        self.assertEqual((current["sessionsown"], current["sessionsforeign"],
                          current["sessionstotal"]), (0, 1, 1))

    def test_warnsWithoutNotifications(self):
        self.redis.notify_flags = b""
        logged = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.follower.startService()
        self.assertTrue(any("does not publish keyspace notifications" in
                            e.get("log_format", "") for e in logged))

    def test_undecodableIgnored(self):
        self.redis.set(1, b"omnirtp:alive", b"a")
        self.follower.startService()
        self.redis.set(1, KEY + b"bad", b"{not json")
        self.assertEqual(self.b.registry.foreign, {})


class PushTests(SynchronousTestCase):

    def test_pushRoutedNotAnswered(self):
        proto = RespProtocol()
        transport = StringTransport()
        proto.makeConnection(transport)
        pushed = []
        proto.on_push = lambda kind, items: pushed.append((kind, items))
        d = proto.execute("PSUBSCRIBE", "x*")
        proto.dataReceived(b"*3\r\n$10\r\npsubscribe\r\n$2\r\nx*\r\n:1\r\n"
                           b"*4\r\n$8\r\npmessage\r\n$2\r\nx*\r\n$2\r\nxy\r\n$3\r\nset\r\n")
        self.assertEqual(self.successResultOf(d), [b"psubscribe", b"x*", 1])
        self.assertEqual(pushed, [(b"pmessage", [b"x*", b"xy", b"set"])])
        self.assertTrue(transport.connected)

    def test_pushWithoutHandlerDrops(self):
        proto = RespProtocol()
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n")
        self.assertTrue(transport.disconnecting)


class HeartbeatTests(SynchronousTestCase):

    def test_beatsWhileUpStopsOnStop(self):
        from twisted.internet.task import Clock

        from omnirtp.state.store import RedisStore
        clock, redis = Clock(), FakeRedis()
        store = RedisStore(clock, "127.0.0.1:6379/1", connect=redis.connect)
        store.heartbeat("inst-a", 1.0, 3.0)
        self.successResultOf(store.start())

        def beats():
            return [args for db, args in redis.commands if args[0] == b"SET"]
        # at once when connected, then every second
        self.assertEqual(beats(), [[b"SET", b"omnirtp:alive", b"inst-a", b"PX", b"3000"]])
        self.assertEqual(redis.db(1)[b"omnirtp:alive"], b"inst-a")
        clock.advance(1.0)
        clock.advance(1.0)
        self.assertEqual(len(beats()), 3)
        self.successResultOf(store.stop())
        clock.advance(5.0)
        self.assertEqual(len(beats()), 3)


class ResyncFailureTests(SynchronousTestCase):

    def test_unreadableDatabaseClosesTheSubscription(self):
        """The database cannot be read after PSUBSCRIBE: that subscription
        is closed and a new one made later (never two at once)."""
        from twisted.internet.task import Clock
        redis = FakeRedis()
        stack = ControlStack()
        clock = Clock()
        follower = KeyspaceFollower(clock, RedisAddress("127.0.0.1", 6379, 2), [1],
                                    stack.registry, stack.negotiator, stack.interfaces,
                                    disable_time=5.0, connect=redis.connect)
        self.addCleanup(follower.stopService)
        run = redis.run

        def broken(wire, args):
            if args[0] == b"SCAN":
                from omnirtp.state.resp import RespError
                return RespError("ERR broken")
            return run(wire, args)
        redis.run = broken
        ks = follower.keyspaces[1]
        follower.startService()
        self.assertEqual(ks.state, "down")
        self.assertEqual(len(redis.subscribers), 0)
        redis.run = run
        clock.advance(5.0)
        self.assertEqual(ks.state, "up")
        self.assertEqual(len(redis.subscribers), 1)


REINVITE = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 5000 RTP/AVP 0\r\n")


class RunTimeTests(SynchronousTestCase):
    """ksadd / ksrm / standby / terminate foreign / active-switchover: B
    writes its calls to database 2 of the fake Redis (a RedisStore) and
    follows what it is told to; A writes to database 1."""

    def setUp(self):
        from omnirtp.state.store import RedisStore
        self.redis = FakeRedis()
        self.a = ControlStack()
        self.b = ControlStack()
        self.b.clock = self.b.registry.clock
        # B's own database (2), as the daemon's state store writes it
        self.store = RedisStore(self.b.clock, "127.0.0.1:6379/2", connect=self.redis.connect)
        self.successResultOf(self.store.start())
        self.addCleanup(self.store.stop)
        self.b.registry.store = self.store
        # both owners beat (the fake Redis never expires the keys)
        self.redis.set(1, b"omnirtp:alive", b"a")
        self.redis.set(2, b"omnirtp:alive", b"b")

    def follower(self, stack, databases, own_db=None, switchover=False):
        follower = KeyspaceFollower(
            stack.registry.clock, RedisAddress("127.0.0.1", 6379, 0), databases,
            stack.registry, stack.negotiator, stack.interfaces, connect=self.redis.connect,
            own=None if own_db is None else RedisAddress("127.0.0.1", 6379, own_db),
            switchover=switchover)
        stack.dispatch.follower = follower
        follower.startService()
        self.addCleanup(follower.stopService)
        cli = CliCommands(Operations(stack.dispatch, Config(
            interfaces=(InterfaceSpec("default", "127.0.0.1", None),)), LogLevels(6)))
        cli.ops.follower = follower
        return follower, lambda line: self.successResultOf(cli.run(line))

    def call_of_a(self, call_id):
        self.successResultOf(make_call(self.a, call_id)[1])
        self.redis.set(1, KEY + call_id.encode(), snapshot.encode(self.a.registry.get(call_id)))

    def test_ksaddFollowsExistingAndNewCallsKsrmDropsThem(self):
        self.call_of_a("c1")
        _follower, cli = self.follower(self.b, [], own_db=2)
        self.assertEqual(cli("kslist"), "\nSubscribed-on keyspaces:\n\n")
        self.assertEqual(self.b.registry.foreign, {})
        self.assertEqual(cli("ksadd 1"), "Success adding keyspace 1 to redis notifications.\n")
        # the call already there is read at once, the next one when it is set
        self.assertEqual(list(self.b.registry.foreign), ["c1"])
        self.call_of_a("c2")
        self.assertEqual(sorted(self.b.registry.foreign), ["c1", "c2"])
        self.assertEqual(sorted(self.b.engine.held), ["c1", "c2"])
        self.assertEqual(cli("ksadd 1"), "Keyspace 1 is already among redis notifications.\n")
        self.assertEqual(cli("ksadd 3x"), "Success adding keyspace 3 to redis notifications.\n")
        self.assertEqual(cli("kslist"), "\nSubscribed-on keyspaces:\n1 3 \n")
        self.assertIn("redis_keyspace:1 | foreign:yes", cli("list sessions foreign"))
        self.assertIn("redis_keyspace: 1\nforeign: yes\n", cli("list sessions c1"))
        self.assertEqual(cli("ksrm 1"), "Successfully unsubscribed from keyspace 1.\n"
                                        "Successfully removed all foreign calls for keyspace 1.\n")
        self.assertEqual(self.b.registry.foreign, {})
        self.assertEqual(self.b.engine.held, {})
        # A's keys are A's: left alone
        self.assertEqual(sorted(self.redis.db(1)), [b"omnirtp:alive", KEY + b"c1", KEY + b"c2"])
        # no longer followed
        self.call_of_a("c3")
        self.assertEqual(self.b.registry.foreign, {})
        self.assertEqual(cli("ksrm 1"), "Keyspace 1 is not among redis notifications.\n")
        self.assertEqual(cli("kslist"), "\nSubscribed-on keyspaces:\n3 \n")
        # and again
        self.assertEqual(cli("ksadd 1"), "Success adding keyspace 1 to redis notifications.\n")
        self.assertEqual(sorted(self.b.registry.foreign), ["c1", "c2", "c3"])

    def test_terminateForeign(self):
        self.call_of_a("c1")
        _follower, cli = self.follower(self.b, [1], own_db=2)
        self.successResultOf(make_call(self.b, "mine")[1])
        self.assertEqual(list(self.b.registry.foreign), ["c1"])
        self.assertEqual(cli("terminate foreign"), "All foreign calls terminated by operator.\n")
        self.assertEqual(self.b.registry.foreign, {})
        self.assertEqual(list(self.b.engine.held), ["mine"])
        self.assertEqual(list(self.b.registry.calls), ["mine"])
        # deleted from the owner's database, as rtpengine does
        self.assertNotIn(KEY + b"c1", self.redis.db(1))

    def test_standbyThenThePeerTakesOver(self):
        """standby: B's calls become foreign, kept in B's database; A, which
        follows it, takes them over with active, and B drops them."""
        _fb, cli_b = self.follower(self.b, [1], own_db=2)
        _fa, cli_a = self.follower(self.a, [2], own_db=1)
        self.successResultOf(make_call(self.b, "b1")[1])
        self.assertIn(KEY + b"b1", self.redis.db(2))
        self.assertEqual(list(self.a.registry.foreign), ["b1"])
        self.assertEqual(cli_b("standby"), "Ok, all calls set to 'foreign (standby)'\n")
        self.assertEqual(self.b.registry.calls, {})
        self.assertEqual(list(self.b.registry.foreign), ["b1"])
        self.assertIn("b1", self.b.engine.held)  # still relaying
        self.assertIn("redis_keyspace:2 | foreign:yes", cli_b("list sessions foreign"))
        self.assertEqual(cli_b("kslist"), "\nSubscribed-on keyspaces:\n1 \n")
        # not B's any more: no ng change, no timeout, not deleted from its database
        error = self.failureResultOf(self.b.dispatch({
            "command": "offer", "call-id": "b1", "from-tag": "a", "sdp": REINVITE}), NGError)
        self.assertEqual(error.value.reason, E_FOREIGN_CALL)
        self.assertEqual(self.successResultOf(self.b.dispatch(
            {"command": "query", "call-id": "b1"}))["result"], "ok")
        self.b.clock.advance(200)
        self.b.registry.persist("b1")  # as after a request for it: not deleted
        self.assertEqual(list(self.b.registry.foreign), ["b1"])
        self.assertIn(KEY + b"b1", self.redis.db(2))
        # A takes it: written to A's database, gone from B's, dropped on B
        self.assertEqual(cli_a("active"), "Ok, all calls set to 'owned (active)'\n")
        self.assertEqual(list(self.a.registry.calls), ["b1"])
        self.assertNotIn(KEY + b"b1", self.redis.db(2))
        self.assertEqual(self.b.registry.foreign, {})
        self.assertNotIn("b1", self.b.engine.held)

    def test_standbyThenActiveTakesThemBack(self):
        follower, cli = self.follower(self.b, [1], own_db=2)
        self.successResultOf(make_call(self.b, "b1")[1])
        self.assertEqual(cli("standby"), "Ok, all calls set to 'foreign (standby)'\n")
        self.assertEqual(list(self.b.registry.foreign), ["b1"])
        self.assertEqual(cli("active"), "Ok, all calls set to 'owned (active)'\n")
        self.assertEqual(list(self.b.registry.calls), ["b1"])
        self.assertEqual(self.b.registry.foreign, {})
        self.assertIn(KEY + b"b1", self.redis.db(2))  # ours: kept
        self.assertIsNone(follower.standby_keyspace)
        reply = self.successResultOf(self.b.dispatch({
            "command": "offer", "call-id": "b1", "from-tag": "a", "sdp": REINVITE}))
        self.assertEqual(reply["result"], "ok")

    def test_foreignCallRefusedWithoutSwitchover(self):
        self.call_of_a("c1")
        self.follower(self.b, [1], own_db=2)
        for request in ({"command": "offer", "call-id": "c1", "from-tag": "a",
                         "sdp": REINVITE},
                        {"command": "delete", "call-id": "c1"}):
            error = self.failureResultOf(self.b.dispatch(request), NGError)
            self.assertEqual(error.value.reason, E_FOREIGN_CALL)
        self.assertEqual(list(self.b.registry.foreign), ["c1"])
        self.assertIn("c1", self.b.engine.held)
        self.assertIn(KEY + b"c1", self.redis.db(1))
        self.assertEqual(self.b.dispatch.counts["errors"], 2)
        query = self.successResultOf(self.b.dispatch({"command": "query", "call-id": "c1"}))
        self.assertEqual(sorted(query["tags"]), ["a", "b"])

    def test_switchoverOnSignalling(self):
        self.call_of_a("c1")
        self.call_of_a("c2")
        self.follower(self.b, [1], own_db=2, switchover=True)
        # query reads, it does not take over (as rtpengine)
        self.successResultOf(self.b.dispatch({"command": "query", "call-id": "c1"}))
        self.assertEqual(sorted(self.b.registry.foreign), ["c1", "c2"])
        reply = self.successResultOf(self.b.dispatch({
            "command": "offer", "call-id": "c1", "from-tag": "a", "sdp": REINVITE}))
        self.assertEqual(reply["result"], "ok")
        self.assertEqual(list(self.b.registry.calls), ["c1"])
        self.assertEqual(list(self.b.registry.foreign), ["c2"])
        self.assertIn(KEY + b"c1", self.redis.db(2))  # B's now
        self.assertNotIn(KEY + b"c1", self.redis.db(1))
        # a delete takes over too, then deletes
        reply = self.successResultOf(self.b.dispatch({"command": "delete", "call-id": "c2"}))
        self.assertEqual(reply["result"], "ok")
        self.assertEqual(self.b.registry.foreign, {})
        self.assertEqual(self.b.dispatch.counts["errors"], 0)

    def test_switchoverOnMedia(self):
        self.call_of_a("c1")
        self.call_of_a("c2")
        follower, _cli = self.follower(self.b, [1], own_db=2, switchover=True)
        self.b.clock.advance(follower.activity_interval * 3)
        self.assertEqual(sorted(self.b.registry.foreign), ["c1", "c2"])  # no media yet
        self.b.engine.last_packet["c2"] = self.b.clock.seconds() + 0.5
        self.b.clock.advance(follower.activity_interval)
        self.assertEqual(list(self.b.registry.calls), ["c2"])
        self.assertEqual(list(self.b.registry.foreign), ["c1"])
        self.assertIn(KEY + b"c2", self.redis.db(2))

    def test_switchoverOnMediaFromLastPackets(self):
        """With an engine that tells each call's newest packet
        (``last_packets``, as the embedded engine and the worker pool do),
        the media check asks for that, not for every socket's counters."""
        engine = self.b.engine
        asked = []

        def last_packets():
            asked.append(True)
            return defer.succeed({cid: engine.last_packet.get(cid, 0.0) for cid in engine.held})
        engine.last_packets = last_packets
        self.call_of_a("c1")
        self.call_of_a("c2")
        follower, _cli = self.follower(self.b, [1], own_db=2, switchover=True)
        self.b.clock.advance(follower.activity_interval * 3)
        self.assertEqual(sorted(self.b.registry.foreign), ["c1", "c2"])
        engine.last_packet["c2"] = self.b.clock.seconds() + 0.5
        self.b.clock.advance(follower.activity_interval)
        self.assertEqual(list(self.b.registry.calls), ["c2"])
        self.assertEqual(list(self.b.registry.foreign), ["c1"])
        self.assertTrue(asked)
        self.assertEqual(engine.asked_all, 0)  # stats(None) never asked

    def test_noSwitchoverWithoutTheOption(self):
        self.call_of_a("c1")
        follower, _cli = self.follower(self.b, [1], own_db=2)
        self.b.engine.last_packet["c1"] = self.b.clock.seconds() + 0.5
        self.b.clock.advance(follower.activity_interval * 3)
        self.assertEqual(list(self.b.registry.foreign), ["c1"])
