"""``RelaySocket._stepped``: the poller's path for a connected companion
whose pipeline has a step in Python (a transcoder, a recording tap), on
real sockets on 127.0.0.1 with a ``MediaPoller`` driven by hand.

Once the endpoint is confirmed an RTP datagram runs the RTP chain and goes
straight to the peer's companion; the first datagram (it confirms the
endpoint), RTCP and junk take :meth:`RelaySocket.connected` as before.
Results and counters are those of the generic pipeline."""

import select
import socket

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.media.relay import MediaPoller, RelaySocket, bind_udp
from omnirtp.test.fakes import MemoryUDPReactor
from omnirtp.test.test_pipeline import Broken, Mark

HOST = "127.0.0.1"


def rtp(seq, pt=0, size=20):
    return bytes([0x80, pt, 0, seq]) + bytes(8) + bytes(range(size))


class CountingRelay(RelaySocket):
    """A RelaySocket that counts the datagrams the full path gets: the
    companion's (:meth:`connected`) and the main socket's (:meth:`read`,
    where the first datagram arrives: the companion is made then)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.full = 0

    def connected(self, data, now):
        self.full += 1
        return super().connected(data, now)

    def read(self, now):
        self.full += 1
        return super().read(now)


class SteppedTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.poller = MediaPoller(self.reactor)
        self.addCleanup(self.poller.close)
        self.party_a = self.party()
        self.party_b = self.party()
        self.a = self.relay()
        self.b = self.relay()
        self.a.configure(peer=self.b, endpoint=self.party_a.getsockname(), learning="immediate",
                         reset=True)
        self.b.configure(peer=self.a, endpoint=self.party_b.getsockname(), learning="immediate",
                         reset=True)

    def party(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind((HOST, 0))
        s.setblocking(False)
        return s

    def relay(self):
        sock = bind_udp(HOST, 0, reuse_port=True)
        port = sock.getsockname()[1]
        relay = CountingRelay(self.reactor, sock, (HOST, port), self.poller,
                              lambda: bind_udp(HOST, port, reuse_port=True))
        self.addCleanup(relay.close)
        relay.start()
        return relay

    def relay_until(self, party, count):
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

    def settle(self):
        for _ in range(3):
            self.poller.doRead()
            select.select([self.poller.fileno()], [], [], 0.02)
        self.poller.doRead()

    def test_rtp_after_confirmation(self):
        """The first datagram confirms A (full path); the next ones take
        the stepped path: marked by the step, written to b's companion,
        counted as before."""
        mark = Mark("M")
        self.a.set_transforms(middle=[mark])
        self.assertIsNone(self.a._chain)
        self.assertEqual(self.a._pout, -1)  # not confirmed yet
        self.party_a.sendto(rtp(1), self.a.local)
        self.assertEqual(self.relay_until(self.party_b, 1), [rtp(1) + b"M"])
        self.assertEqual(self.a.full, 1)
        self.assertEqual(self.a._pout, self.b._cfd)
        for seq in (2, 3, 4):
            self.party_a.sendto(rtp(seq), self.a.local)
        self.assertEqual(self.relay_until(self.party_b, 3),
                         [rtp(2) + b"M", rtp(3) + b"M", rtp(4) + b"M"])
        self.assertEqual(self.a.full, 1)
        self.assertEqual((self.a.packets, self.a.bytes, self.a.errors), (4, 4 * 32, 0))
        self.assertEqual([kind for kind, _ in mark.seen], ["rtp"] * 4)

    def test_rtcp_and_junk_take_the_full_path(self):
        mark = Mark("M")
        self.a.set_transforms(middle=[mark])
        self.party_a.sendto(rtp(1), self.a.local)
        self.relay_until(self.party_b, 1)
        sr = bytes([0x80, 200, 0, 1]) + bytes(4)
        self.party_a.sendto(sr, self.a.local)
        self.assertEqual(self.relay_until(self.party_b, 1), [sr + b"CM"])
        self.party_a.sendto(b"\x00\x01junk", self.a.local)
        self.settle()
        self.assertEqual(self.a.full, 3)
        self.assertEqual((self.a.junk, self.a.errors), (1, 1))

    def test_drop_and_raise_counted(self):
        """A step that drops or raises: nothing sent, counted in errors."""
        self.a.set_transforms(middle=[Mark("M", drop=True)])
        for seq in (1, 2):
            self.party_a.sendto(rtp(seq), self.a.local)
        self.settle()
        self.assertEqual(self.a._pout, self.b._cfd)
        self.a.set_transforms(middle=[Broken("B")])
        self.party_a.sendto(rtp(3), self.a.local)
        self.settle()
        self.assertEqual((self.a.packets, self.a.errors), (3, 3))
        # 1 and 2 were both queued on the main socket before the first
        # read made the companion: both took read()
        self.assertEqual(self.a.full, 2)
        self.assertRaises(BlockingIOError, self.party_b.recv, 2048)

    def test_no_pipeline_no_stepped_path(self):
        """Without steps the plain inline path serves the companion."""
        self.party_a.sendto(rtp(1), self.a.local)
        self.relay_until(self.party_b, 1)
        self.assertEqual(self.a._pout, -1)
        self.a.set_transforms(middle=[Mark("M")])
        self.assertEqual(self.a._pout, self.b._cfd)
        self.a.set_transforms(middle=[])
        self.assertEqual(self.a._pout, -1)
