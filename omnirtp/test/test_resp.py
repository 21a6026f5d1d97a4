"""omnirtp.state.resp: the RESP encoder, the incremental parser, the
pipelining protocol."""

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.state import resp
from omnirtp.state.resp import ProtocolError, ReplyParser, RespError, RespProtocol, encode_command


class EncodeTests(SynchronousTestCase):

    def test_command(self):
        self.assertEqual(encode_command("SET", b"k\r\n", 42),
                         b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n42\r\n")

    def test_utf8AndEmpty(self):
        self.assertEqual(encode_command("GET", "\u00e9", b""),
                         b"*3\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n$0\r\n\r\n")

    def test_badArguments(self):
        self.assertRaises(ValueError, encode_command)
        self.assertRaises(TypeError, encode_command, "SET", 1.5)
        self.assertRaises(TypeError, encode_command, "SET", True)
        self.assertRaises(TypeError, encode_command, "SET", None)


class ParserTests(SynchronousTestCase):

    def test_everyType(self):
        p = ReplyParser()
        replies = p.feed(b"+OK\r\n:-12\r\n$5\r\nhe\r\no\r\n$-1\r\n*-1\r\n*0\r\n"
                         b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n-ERR wrong type\r\n")
        self.assertEqual(replies[:7], ["OK", -12, b"he\r\no", None, None, [], [b"a", [1]]])
        self.assertIsInstance(replies[7], RespError)
        self.assertEqual(str(replies[7]), "ERR wrong type")
        self.assertEqual(p.pending(), 0)

    def test_byteByByte(self):
        """A reply split anywhere is returned once, whole."""
        data = b"*3\r\n$3\r\nfoo\r\n:7\r\n*1\r\n+x\r\n+next\r\n"
        p = ReplyParser()
        got = []
        for i in range(len(data)):
            got.extend(p.feed(data[i:i + 1]))
        self.assertEqual(got, [[b"foo", 7, ["x"]], "next"])
        self.assertEqual(p.pending(), 0)

    def test_partialKept(self):
        p = ReplyParser()
        self.assertEqual(p.feed(b"$10\r\n01234"), [])
        self.assertEqual(p.pending(), 10)
        self.assertEqual(p.feed(b"56789\r\n"), [b"0123456789"])

    def test_bad(self):
        for data in (b"?x\r\n", b":12a\r\n", b": 1\r\n", b"$-2\r\n", b"$3\r\nabcd\r\n",
                     b"*-5\r\n", b"$%d\r\n" % (resp.MAX_BULK + 1),
                     b"*%d\r\n" % (resp.MAX_ARRAY + 1), b"*1\r\n" * (resp.MAX_DEPTH + 1)):
            self.assertRaises(ProtocolError, ReplyParser().feed, data)

    def test_longLine(self):
        p = ReplyParser()
        self.assertRaises(ProtocolError, p.feed, b"+" + b"a" * (resp.MAX_LINE + 2))


class ProtocolTests(SynchronousTestCase):

    def connected(self):
        proto = RespProtocol()
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def test_pipelined(self):
        proto, transport = self.connected()
        results = []
        proto.execute("SET", "a", "1").addBoth(results.append)
        proto.execute("GET", "a").addBoth(results.append)
        proto.execute("INCR", "a").addBoth(results.append)
        self.assertEqual(transport.value(), encode_command("SET", "a", "1")
                         + encode_command("GET", "a") + encode_command("INCR", "a"))
        proto.dataReceived(b"+OK\r\n$1\r")
        self.assertEqual(results, ["OK"])
        proto.dataReceived(b"\n1\r\n-ERR not an integer\r\n")
        self.assertEqual(results[:2], ["OK", b"1"])
        self.assertIsInstance(results[2], Failure)
        self.assertTrue(results[2].check(RespError))

    def test_lostFailsWaiting(self):
        proto, transport = self.connected()
        results = []
        proto.execute("PING").addBoth(results.append)
        lost = []
        proto.lost_d.addCallback(lost.append)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(results[0].check(ConnectionDone))
        self.assertEqual(lost, [None])
        after = []
        proto.execute("PING").addBoth(after.append)
        self.assertTrue(after[0].check(ConnectionDone))

    def test_garbageDrops(self):
        proto, transport = self.connected()
        results = []
        proto.execute("PING").addBoth(results.append)
        proto.dataReceived(b"!!!\r\n")
        self.assertTrue(results[0].check(ProtocolError))
        self.assertTrue(transport.disconnecting)

    def test_unaskedReplyDrops(self):
        proto, transport = self.connected()
        proto.dataReceived(b"+OK\r\n")
        self.assertTrue(transport.disconnecting)
