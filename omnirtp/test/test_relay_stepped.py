"""``RelaySocket._stepped``: the poller's path for a connected companion
whose pipeline has a step in Python (a transcoder, a recording tap), on
real sockets on 127.0.0.1 with a ``MediaPoller`` driven by hand.

Once the endpoint is confirmed an RTP datagram runs the RTP chain and goes
straight to the peer's companion; the first datagram (it confirms the
endpoint), RTCP and junk take :meth:`RelaySocket.connected` as before.
Results and counters are those of the generic pipeline."""

import select

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.media.relay import MediaPoller, RelaySocket
from omnirtp.test.fakes import MemoryUDPReactor
from omnirtp.test.realrelays import RealRelays
from omnirtp.test.test_pipeline import Broken, Mark


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


class SteppedBase(RealRelays, SynchronousTestCase):
    """Two relays on 127.0.0.1 with companions, a party each."""

    relay_class = CountingRelay

    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.poller = MediaPoller(self.reactor)
        self.addCleanup(self.poller.close)
        self.party_a = self.party()
        self.party_b = self.party()
        self.a, self.b = self.pair(self.party_a, self.party_b)

    def settle(self):
        for _ in range(3):
            self.poller.doRead()
            select.select([self.poller.fileno()], [], [], 0.02)
        self.poller.doRead()


class SteppedTests(SteppedBase):
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
        # what query shows: the stepped path tracks as the others do
        self.party_a.sendto(rtp(5, pt=8)[:8] + b"\xca\xfe\xba\xbe" + rtp(5)[12:], self.a.local)
        self.relay_until(self.party_b, 1)
        self.assertEqual(self.a.full, 1)
        self.assertEqual((self.a.ssrc, self.a.payload_types), (0xCAFEBABE, {0: 4, 8: 1}))

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
        # read made the companion: that read() relayed both, in order
        self.assertEqual(self.a.full, 1)
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


class Fan(Mark):
    """A fan-out step: the n-th packet it sees (from 1) gives ``plan[n-1]``
    packets (0: held; each tagged with its index), or is dropped (None)."""

    fan_out = True

    def __init__(self, plan):
        super().__init__("F")
        self.plan = list(plan)

    def rtp(self, data):
        self.seen.append(("rtp", data))
        count = self.plan.pop(0)
        if count is None:
            return None
        if count == 1:
            return data + b"F"  # one packet may come as bytes
        return tuple(data + b"F%d" % i for i in range(count))


class FanOutTests(SteppedBase):
    """A chain with a fan-out step (``fan_out``): 0..N packets per packet,
    each through the steps after it; the companion is served by
    ``_stepped_fan``, the full path by ``_forward_fan``."""

    def test_fan_out_companion_and_full_path(self):
        fan = Fan([2, 0, 3, 1, None, 0])
        self.a.set_transforms(middle=[fan])
        self.b.set_transforms(outbound=[Mark("O")])
        self.assertIsNotNone(self.a._fan)
        self.assertIsNone(self.b._fan)  # b's own chain has no fan-out step
        # the first packet confirms A: the full path (_forward_fan)
        self.party_a.sendto(rtp(1), self.a.local)
        self.assertEqual(self.relay_until(self.party_b, 2),
                         [rtp(1) + b"F0O", rtp(1) + b"F1O"])
        self.assertEqual(self.a.full, 1)
        # then the companion (_stepped_fan): held, three, one, dropped, held
        for seq in (2, 3, 4):
            self.party_a.sendto(rtp(seq), self.a.local)
        self.assertEqual(self.relay_until(self.party_b, 4),
                         [rtp(3) + b"F0O", rtp(3) + b"F1O", rtp(3) + b"F2O", rtp(4) + b"FO"])
        for seq in (5, 6):
            self.party_a.sendto(rtp(seq), self.a.local)
        self.settle()
        self.assertRaises(BlockingIOError, self.party_b.recv, 2048)
        self.assertEqual(self.a.full, 1)
        # held audio is no error; the dropped packet is one
        self.assertEqual((self.a.packets, self.a.errors), (6, 1))

    def test_tail_drop_counted_per_packet(self):
        self.a.set_transforms(middle=[Fan([1, 3])])
        self.b.set_transforms(outbound=[Mark("O", drop=True)])
        for seq in (1, 2):
            self.party_a.sendto(rtp(seq), self.a.local)
        self.settle()
        self.assertRaises(BlockingIOError, self.party_b.recv, 2048)
        self.assertEqual((self.a.packets, self.a.errors), (2, 4))

    def test_serving_follows_the_chain(self):
        """The companion's handler follows the chain: inline, fan-out,
        piped, inline again; a 1:1 chain never gets ``_fan``."""
        self.party_a.sendto(rtp(1), self.a.local)
        self.relay_until(self.party_b, 1)
        handlers = self.poller._handlers
        self.assertIs(self.poller._conns[self.a._cfd], self.a)
        self.a.set_transforms(middle=[Fan([1])])
        self.assertEqual(handlers[self.a._cfd], self.a._stepped_fan)
        self.a.set_transforms(middle=[Mark("M")])
        self.assertIsNone(self.a._fan)
        self.assertEqual(handlers[self.a._cfd], self.a._piped)
        self.a.set_transforms(middle=[])
        self.assertNotIn(self.a._cfd, handlers)
        self.assertIs(self.poller._conns[self.a._cfd], self.a)
        # no step left: the plain state, as a socket never given any
        self.assertEqual((self.a.pipeline, self.a._fan, self.a._chain, self.a._tap),
                         (None, None, None, None))
        self.assertEqual(self.a._out, self.b._cfd)

    def test_steps_before_the_fan_out(self):
        """A step before the fan-out one (SRTP unprotect, a recording
        tap): it runs once per packet in, the fan-out step after it."""
        self.a.set_transforms(inbound=[Mark("I")], middle=[Fan([1, 1, 2, 0, 1])])
        self.b.set_transforms(outbound=[Mark("O")])
        for seq in (1, 2, 3):
            self.party_a.sendto(rtp(seq), self.a.local)
            self.relay_until(self.party_b, 1 if seq < 3 else 2)
        for seq in (4, 5):
            self.party_a.sendto(rtp(seq), self.a.local)
        self.assertEqual(self.relay_until(self.party_b, 1), [rtp(5) + b"IFO"])
        self.assertEqual((self.a.packets, self.a.errors, self.a.full), (5, 0, 1))
