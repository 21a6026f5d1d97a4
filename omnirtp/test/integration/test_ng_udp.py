"""ng over real UDP sockets on loopback: listen_ng and the wildcard reply source."""

import socket

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SkipTest, TestCase

from omnirtp.control.ng import NGProtocol, PktInfoPort, listen_ng
from omnirtp.test.integration.peers import NO_IPV6, have_ipv6_loopback

PING = b"c1 d7:command4:pinge"
PONG = b"c1 d6:result4:ponge"


def dispatch(request, addr):
    if request["command"] == "ping":
        return {"result": "pong"}
    return {"result": "ok", "echo": request.get("sdp", "")}


class Client(DatagramProtocol):
    """Collects datagrams; ``next()`` fires with the next (data, addr)."""

    def __init__(self):
        self.waiting = []
        self.received = []

    def datagramReceived(self, data, addr):
        if self.waiting:
            self.waiting.pop(0).callback((data, addr))
        else:
            self.received.append((data, addr))

    def next(self):
        if self.received:
            return defer.succeed(self.received.pop(0))
        d = defer.Deferred()
        self.waiting.append(d)
        return d


def _have_127_0_0_2():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.2", 0))
    except OSError:
        return False
    finally:
        s.close()
    return True


class ListenNGTests(TestCase):
    timeout = 10

    def listen(self, host):
        proto = NGProtocol(dispatch, clock=reactor)
        port = listen_ng(reactor, host, 0, proto)
        self.addCleanup(port.stopListening)
        return port

    def client(self, host="127.0.0.1"):
        client = Client()
        port = reactor.listenUDP(0, client, interface=host, maxPacketSize=65536)
        self.addCleanup(port.stopListening)
        return client, port

    @defer.inlineCallbacks
    def test_specificAddress(self):
        """Bound to 127.0.0.1, a connected client gets its pong."""
        server = self.listen("127.0.0.1")
        self.assertNotIsInstance(server, PktInfoPort)
        client, cport = self.client()
        cport.connect("127.0.0.1", server.getHost().port)
        cport.write(PING)
        data, addr = yield client.next()
        self.assertEqual(data, PONG)

    @defer.inlineCallbacks
    def test_wildcardRepliesFromDestination(self):
        """Bound to 0.0.0.0, a request sent to 127.0.0.2 is answered from
        127.0.0.2, so a client connect()ed to 127.0.0.2 receives it."""
        if not _have_127_0_0_2():
            raise self.skipTest("127.0.0.2 is not usable on this host")
        server = self.listen("0.0.0.0")
        self.assertIsInstance(server, PktInfoPort)
        port = server.getHost().port
        client, cport = self.client()
        cport.connect("127.0.0.2", port)
        cport.write(PING)
        data, addr = yield client.next()
        self.assertEqual(data, PONG)
        self.assertEqual(addr, ("127.0.0.2", port))

    @defer.inlineCallbacks
    def test_wildcardSourceAddress(self):
        """An unconnected client sees 127.0.0.2 and 127.0.0.1 as the reply
        sources for requests sent to those addresses."""
        if not _have_127_0_0_2():
            raise self.skipTest("127.0.0.2 is not usable on this host")
        server = self.listen("0.0.0.0")
        port = server.getHost().port
        client, cport = self.client()
        for target in ("127.0.0.2", "127.0.0.1", "127.0.0.2"):
            cport.write(PING.replace(b"c1", target.encode()), (target, port))
            data, addr = yield client.next()
            self.assertEqual(addr, (target, port))
            self.assertEqual(data, PONG.replace(b"c1", target.encode()))

    @defer.inlineCallbacks
    def test_largeRequest(self):
        """A 60 KB request (large SDP) is read whole on the wildcard port."""
        server = self.listen("0.0.0.0")
        port = server.getHost().port
        client, cport = self.client()
        sdp = b"a" * 60000
        cport.write(b"big d7:command5:offer3:sdp60000:" + sdp + b"e", ("127.0.0.1", port))
        data, addr = yield client.next()
        self.assertEqual(data, b"big d6:result2:ok4:echo60000:" + sdp + b"e")

    @defer.inlineCallbacks
    def test_ipv6Wildcard(self):
        """Bound to ::, a request to ::1 is answered from ::1.  Skipped only
        on a host without ::1; there, any bind failure is a test failure."""
        if not have_ipv6_loopback():
            raise SkipTest(NO_IPV6)
        server = self.listen("::")
        self.assertIsInstance(server, PktInfoPort)
        port = server.getHost().port
        client = Client()
        cport = reactor.listenUDP(0, client, interface="::1", maxPacketSize=65536)
        self.addCleanup(cport.stopListening)
        cport.connect("::1", port)
        cport.write(PING)
        data, addr = yield client.next()
        self.assertEqual(data, PONG)
        self.assertEqual(addr[:2], ("::1", port))
