"""Real relay sockets on 127.0.0.1 for tests that drive a ``MediaPoller``
themselves (by hand, or through a reactor of their own)."""

import select
import socket

from omnirtp.media.relay import RelaySocket, bind_companion, bind_udp

HOST = "127.0.0.1"


class RealRelays:
    """Mixin for a test case that has ``self.reactor`` and ``self.poller``:
    parties' sockets, relay sockets with companions, and a pair of relay
    sockets that face two parties and relay to each other."""

    #: the RelaySocket class :meth:`relay` makes
    relay_class = RelaySocket

    def party(self):
        """A non-blocking UDP socket of a party on HOST."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind((HOST, 0))
        s.setblocking(False)
        return s

    def relay(self):
        """A started relay socket on a free port of HOST whose companions
        bind the same port."""
        sock = bind_udp(HOST, 0, reuse_port=True)
        port = sock.getsockname()[1]
        relay = self.relay_class(self.reactor, sock, (HOST, port), self.poller,
                                 bind_companion)
        self.addCleanup(relay.close)
        relay.start()
        return relay

    def pair(self, party_a, party_b):
        """Relay sockets (a, b), a facing ``party_a`` and b ``party_b``,
        each the other's peer, learning ``immediate``."""
        a, b = self.relay(), self.relay()
        a.configure(peer=b, endpoint=party_a.getsockname(), learning="immediate", reset=True)
        b.configure(peer=a, endpoint=party_b.getsockname(), learning="immediate", reset=True)
        return a, b

    def relay_until(self, party, count):
        """Serve the poller (``doRead``) until ``party`` has ``count``
        datagrams; return them."""
        got = []
        for _ in range(200):
            self.poller.doRead()
            while True:
                try:
                    got.append(party.recv(65536))
                except BlockingIOError:
                    break
            if len(got) >= count:
                break
            select.select([self.poller.fileno(), party], [], [], 0.05)
        self.assertEqual(len(got), count)
        return got
