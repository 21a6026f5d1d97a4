"""control-allow over real UDP on loopback: a refused source gets nothing."""

import socket

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, TestCase

from omnirtp.control.access import AccessList
from omnirtp.control.ng import NGProtocol, listen_ng
from omnirtp.test.integration.peers import NO_IPV6, have_ipv6_loopback
from omnirtp.test.integration.test_ng_udp import Client, _have_127_0_0_2, dispatch

PING = b"%s d7:command4:pinge"


class AccessOverUDPTests(TestCase):
    timeout = 10

    def listen(self, host, access):
        proto = NGProtocol(dispatch, clock=reactor, access=access)
        port = listen_ng(reactor, host, 0, proto)
        self.addCleanup(port.stopListening)
        return proto, port.getHost().port

    def raw(self, family, host):
        s = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind((host, 0))
        s.setblocking(False)
        return s

    @defer.inlineCallbacks
    def check_refused(self, server_host, access, refused_host, allowed_host, family):
        proto, port = self.listen(server_host, access)
        stranger = self.raw(family, refused_host)
        stranger.sendto(PING % b"no", (server_host if server_host not in ("0.0.0.0", "::")
                                       else allowed_host, port))
        client = Client()
        cport = reactor.listenUDP(0, client, interface=allowed_host, maxPacketSize=65536)
        self.addCleanup(cport.stopListening)
        target = server_host if server_host not in ("0.0.0.0", "::") else allowed_host
        cport.write(PING % b"yes", (target, port))
        data, addr = yield client.next()
        # the server reads its socket in order: the stranger's datagram was
        # handled before this pong was sent, and loopback delivers a reply
        # within sendto, so one would already be queued.
        self.assertEqual(data, b"yes d6:result4:ponge")
        self.assertRaises(BlockingIOError, stranger.recvfrom, 65536)
        self.assertEqual(proto.stats["denied"], 1)
        self.assertEqual(proto.stats["ping"], 1)
        self.assertEqual(access.denied["ng"], 1)

    def test_127_0_0_2_refused(self):
        """Only 127.0.0.1/32 allowed: a ping from 127.0.0.2 gets no answer
        and is counted; one from 127.0.0.1 is answered."""
        if not _have_127_0_0_2():
            raise SkipTest("127.0.0.2 is not usable on this host")
        access = AccessList(["127.0.0.1/32"], loopback=False)
        return self.check_refused("0.0.0.0", access, "127.0.0.2", "127.0.0.1",
                                  socket.AF_INET)

    def test_ipv6Refused(self):
        """Only ::1 allowed on a :: listener: an IPv4 ping from 127.0.0.1
        (seen as ::ffff:127.0.0.1) is refused, ::1 answered."""
        if not have_ipv6_loopback():
            raise SkipTest(NO_IPV6)
        access = AccessList(["::1/128"], loopback=False)
        proto, port = self.listen("::", access)
        stranger = self.raw(socket.AF_INET, "127.0.0.1")
        stranger.sendto(PING % b"no", ("127.0.0.1", port))
        client = Client()
        cport = reactor.listenUDP(0, client, interface="::1", maxPacketSize=65536)
        self.addCleanup(cport.stopListening)
        cport.write(PING % b"yes", ("::1", port))
        d = client.next()

        def check(result):
            self.assertEqual(result[0], b"yes d6:result4:ponge")
            self.assertRaises(BlockingIOError, stranger.recvfrom, 65536)
            self.assertEqual(proto.stats["denied"], 1)
            self.assertEqual(access.denied["ng"], 1)
        return d.addCallback(check)
