"""control-allow: AccessList, its use by NGProtocol, config and statistics."""

from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.config.model import parse_network
from omnirtp.control.access import AccessList
from omnirtp.control.ng import NGProtocol
from omnirtp.errors import ConfigError
from omnirtp.test.fakes import ControlStackTests
from omnirtp.test.test_config import build

PING = b"c1 d7:command4:pinge"
PONG = b"c1 d6:result4:ponge"


class AccessListTests(SynchronousTestCase):
    def test_loopbackByDefault(self):
        acl = AccessList()
        for host in ("127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"):
            self.assertTrue(acl.allows(host), host)
        for host in ("10.0.0.1", "192.0.2.1", "::2", "2001:db8::1", "::ffff:10.0.0.1"):
            self.assertFalse(acl.allows(host), host)

    def test_configuredNetworks(self):
        acl = AccessList(["10.0.0.0/8", "192.0.2.7", "[2001:db8::]/32"])
        self.assertEqual(
            [str(n) for n in acl.networks],
            ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"])
        for host in ("10.1.2.3", "192.0.2.7", "2001:db8:ffff::1", "::ffff:10.9.9.9",
                     "127.0.0.1"):
            self.assertTrue(acl.allows(host), host)
        for host in ("11.0.0.0", "192.0.2.8", "2001:db9::1"):
            self.assertFalse(acl.allows(host), host)

    def test_withoutLoopback(self):
        acl = AccessList(["127.0.0.1/32"], loopback=False)
        self.assertTrue(acl.allows("127.0.0.1"))
        self.assertFalse(acl.allows("127.0.0.2"))
        self.assertFalse(acl.allows("::1"))

    def test_allIPv4IsNotIPv6(self):
        acl = AccessList(["0.0.0.0/0"], loopback=False)
        self.assertTrue(acl.allows("203.0.113.5"))
        self.assertFalse(acl.allows("2001:db8::1"))

    def test_garbageRefused(self):
        acl = AccessList(["0.0.0.0/0", "::/0"])
        for host in ("", "localhost", "1.2.3", None, 7, b"127.0.0.1"):
            self.assertFalse(acl.allows(host), repr(host))

    def test_scopedIPv6(self):
        acl = AccessList(["fe80::/10"], loopback=False)
        self.assertTrue(acl.allows("fe80::1%eth0"))

    def test_admitCounts(self):
        acl = AccessList()
        self.assertTrue(acl.admit("127.0.0.1"))
        self.assertFalse(acl.admit("192.0.2.1"))
        self.assertFalse(acl.admit("192.0.2.1", "cli"))
        self.assertFalse(acl.admit("192.0.2.1", "http"))
        self.assertFalse(acl.admit("192.0.2.2", "http"))
        self.assertEqual(acl.denied, {"ng": 1, "cli": 1, "http": 2})

    def test_cacheBounded(self):
        """A flood from distinct sources never grows the cache past its bound
        and never changes an answer."""
        acl = AccessList(["10.0.0.0/8"])
        for i in range(5000):
            host = "10.%d.%d.1" % (i // 256, i % 256)
            self.assertTrue(acl.allows(host))
            self.assertFalse(acl.allows("11.%d.%d.1" % (i // 256, i % 256)))
        self.assertLessEqual(len(acl._cache), 1024)

    def test_parseNetworkErrors(self):
        for text in ("10.0.0.0/33", "nonsense", "[::1", "", "1.2.3.4/8/8"):
            self.assertRaises(ValueError, parse_network, text)
        self.assertEqual(str(parse_network(" 10.1.2.3/8 ")), "10.0.0.0/8")


class NGAccessTests(SynchronousTestCase):
    def setUp(self):
        self.calls = []
        self.access = AccessList(["192.0.2.0/24"])
        self.proto = NGProtocol(self.dispatch, Clock(), access=self.access)
        self.transport = FakeDatagramTransport()
        self.proto.makeConnection(self.transport)

    def dispatch(self, request, addr):
        self.calls.append(addr)
        return {"result": "pong"}

    def test_allowedAnswered(self):
        for addr in (("127.0.0.1", 5), ("192.0.2.200", 5060), ("::1", 9, 0, 0)):
            self.proto.datagramReceived(PING, addr)
        self.assertEqual([a for _, a in self.transport.written],
                         [("127.0.0.1", 5), ("192.0.2.200", 5060), ("::1", 9, 0, 0)])
        self.assertEqual(self.proto.stats["denied"], 0)

    def test_refusedGetsNothing(self):
        """A refused source: no reply (not even to garbage or a retransmission
        of a cookie someone else used), no dispatch, no cache entry; counted."""
        self.proto.datagramReceived(PING, ("127.0.0.1", 5))
        self.transport.written[:] = []
        for data in (PING, b"c2 d7:command5:offere", b"garbage", b"c3 xyz", b"c4 "):
            self.proto.datagramReceived(data, ("198.51.100.1", 5060))
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.calls, [("127.0.0.1", 5)])
        self.assertEqual(self.proto.cached_count(), 1)
        self.assertEqual(self.proto.stats["denied"], 5)
        self.assertEqual(self.access.denied["ng"], 5)
        self.assertEqual(self.proto.stats["errors"], 0)
        # the allowed client still gets its answer
        self.proto.datagramReceived(b"c9 d7:command4:pinge", ("192.0.2.9", 5060))
        self.assertEqual(self.transport.written,
                         [(b"c9 d6:result4:ponge", ("192.0.2.9", 5060))])

    def test_noAccessListAnswersEveryone(self):
        proto = NGProtocol(self.dispatch, Clock())
        transport = FakeDatagramTransport()
        proto.makeConnection(transport)
        proto.datagramReceived(PING, ("198.51.100.1", 5060))
        self.assertEqual(transport.written, [(PONG, ("198.51.100.1", 5060))])


class ConfigTests(SynchronousTestCase):
    def test_default(self):
        self.assertEqual(build().control_allow, ())

    def test_normalised(self):
        config = build({"control-allow": (("10.1.2.3/8", "192.0.2.7", "[2001:db8::1]"),
                                          "f: [rtpengine] control-allow = ...")})
        self.assertEqual(config.control_allow,
                         ("10.0.0.0/8", "192.0.2.7/32", "2001:db8::1/128"))
        self.assertEqual(config.unimplemented, ())

    def test_bad(self):
        e = self.assertRaises(
            ConfigError, build,
            {"control-allow": (("10.0.0.0/8", "10.0.0.0/40"), "f: [rtpengine] control-allow = x")})
        self.assertEqual(
            str(e), "f: [rtpengine] control-allow = x: '10.0.0.0/40' is not an IPv4 or "
            "IPv6 address or ADDRESS/PREFIX network")


class StatisticsTests(ControlStackTests, SynchronousTestCase):
    """statistics shows the refusals as controlstatistics.deniedcount."""

    def test_deniedCount(self):
        self.dispatch.access = AccessList()
        self.dispatch.access.admit("192.0.2.1")
        self.dispatch.access.admit("192.0.2.1", "cli")
        stats = self.call(command="statistics")["statistics"]["controlstatistics"]
        self.assertEqual(stats["deniedcount"], 1)
        self.dispatch.access = None
        stats = self.call(command="statistics")["statistics"]["controlstatistics"]
        self.assertNotIn("deniedcount", stats)
