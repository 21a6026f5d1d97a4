"""Tests for omnirtp.media.ports."""

import errno
import random

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.errors import E_NO_PORTS, PortsExhausted
from omnirtp.media.ports import PortPool, count_pairs, slice_range
from omnirtp.test.fakes import FakeNetwork


class PortPoolTests(SynchronousTestCase):
    def test_pairs_inside_range(self):
        """Only even ports whose RTCP port also lies in the range are handed out."""
        pool = PortPool(30001, 30010, rng=random.Random(1))
        ports = sorted(pool.take() for _ in range(4))
        self.assertEqual(ports, [30002, 30004, 30006, 30008])
        self.assertRaises(PortsExhausted, pool.take)

    def test_exhaustion_error_text(self):
        """Exhaustion raises PortsExhausted with rtpengine's text."""
        pool = PortPool(30000, 30001)
        pool.take()
        e = self.assertRaises(PortsExhausted, pool.take)
        self.assertEqual(e.reason, E_NO_PORTS)

    def test_counts(self):
        """used and free count ports (two per pair)."""
        pool = PortPool(30000, 30009)
        self.assertEqual((pool.used, pool.free), (0, 10))
        port = pool.take()
        self.assertEqual((pool.used, pool.free), (2, 8))
        pool.release(port)
        self.assertEqual((pool.used, pool.free), (0, 10))

    def test_shuffled(self):
        """Ports come out in a shuffled order, not ascending."""
        pool = PortPool(30000, 39999, rng=random.Random(7))
        first = [pool.take() for _ in range(20)]
        self.assertNotEqual(first, sorted(first))

    def test_release_goes_to_back(self):
        """A released port is handed out only after every other free port."""
        pool = PortPool(30000, 30007, rng=random.Random(3))
        a = pool.take()
        pool.release(a)
        others = [pool.take() for _ in range(3)]
        self.assertNotIn(a, others)
        self.assertEqual(pool.take(), a)

    def test_release_unknown_ignored(self):
        """Releasing a port the pool did not hand out changes nothing."""
        pool = PortPool(30000, 30003)
        pool.release(30000)
        pool.release(12345)
        self.assertEqual((pool.used, pool.free), (0, 4))

    def test_bad_ranges(self):
        """Ranges without a whole pair or out of bounds are refused with a reason."""
        e = self.assertRaises(ValueError, PortPool, 30001, 30002)
        self.assertEqual(str(e), "port range [30001, 30002] holds no even RTP port with its RTCP port")
        e = self.assertRaises(ValueError, PortPool, 40000, 30000)
        self.assertEqual(str(e), "port_min (40000) must not be greater than port_max (30000)")
        e = self.assertRaises(ValueError, PortPool, 0, 100)
        self.assertEqual(str(e), "port_min (0) must be in the range [1, 65535]")


class AcquireTests(SynchronousTestCase):
    def setUp(self):
        self.net = FakeNetwork()

    def bind_pair(self, port):
        rtp = self.net.bind("127.0.0.1", port)
        try:
            rtcp = self.net.bind("127.0.0.1", port + 1)
        except OSError:
            rtp.close()
            raise
        return rtp, rtcp

    def test_busy_ports_quarantined(self):
        """A pair whose RTCP port is in use elsewhere is skipped and quarantined."""
        pool = PortPool(30000, 30003, rng=random.Random(0))
        self.net.taken.add(("127.0.0.1", 30001))
        port, (rtp, rtcp) = pool.acquire(self.bind_pair)
        self.assertEqual(port, 30002)
        self.assertEqual((rtp.key, rtcp.key), (("127.0.0.1", 30002), ("127.0.0.1", 30003)))
        self.assertEqual((pool.used, pool.free, pool.quarantined), (2, 0, 2))
        self.assertNotIn(("127.0.0.1", 30000), self.net.bound)

    def test_all_busy_exhausts(self):
        """If no pair can be bound, acquire raises PortsExhausted (not OSError)."""
        pool = PortPool(30000, 30003)
        self.net.taken.update({("127.0.0.1", 30000), ("127.0.0.1", 30003)})
        self.assertRaises(PortsExhausted, pool.acquire, self.bind_pair)
        self.assertEqual((pool.used, pool.quarantined), (0, 4))

    def test_quarantine_retried_when_empty(self):
        """Quarantined pairs are tried again once the queue is empty."""
        pool = PortPool(30000, 30001)
        self.net.taken.add(("127.0.0.1", 30000))
        self.assertRaises(PortsExhausted, pool.acquire, self.bind_pair)
        self.net.taken.clear()
        port, _ = pool.acquire(self.bind_pair)
        self.assertEqual(port, 30000)
        self.assertEqual(pool.quarantined, 0)

    def test_other_errors_raise(self):
        """An unexpected bind error propagates and the pair goes back to the pool."""
        pool = PortPool(30000, 30001)

        def bind(port):
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

        e = self.assertRaises(OSError, pool.acquire, bind)
        self.assertEqual(e.errno, errno.EADDRNOTAVAIL)
        self.assertEqual((pool.used, pool.free), (0, 2))


class SliceTests(SynchronousTestCase):
    def test_slices_cover_range(self):
        """Slices are disjoint runs of whole pairs that together cover the range."""
        parts = [slice_range(30000, 30099, i, 3) for i in range(3)]
        self.assertEqual(parts, [(30000, 30033), (30034, 30067), (30068, 30099)])
        self.assertEqual(sum(count_pairs(lo, hi) for lo, hi in parts), 50)
        for lo, hi in parts:
            self.assertEqual((lo % 2, hi % 2), (0, 1))

    def test_odd_bounds(self):
        """An odd port_min starts at the next even port; a lone port_max is unused."""
        self.assertEqual(slice_range(30001, 30010, 0, 2), (30002, 30005))
        self.assertEqual(slice_range(30001, 30010, 1, 2), (30006, 30009))

    def test_too_many_slices(self):
        """More slices than pairs is refused with the numbers in the message."""
        e = self.assertRaises(ValueError, slice_range, 30000, 30003, 0, 3)
        self.assertEqual(str(e), "port range [30000, 30003] has 2 pairs, too few for 3 slices")

    def test_bad_index(self):
        self.assertRaises(ValueError, slice_range, 30000, 30099, 3, 3)
        self.assertRaises(ValueError, slice_range, 30000, 30099, 0, 0)

    def test_pool_slice(self):
        """PortPool.slice gives a pool over one worker's part only."""
        pool = PortPool(30000, 30099).slice(1, 2)
        self.assertEqual((pool.port_min, pool.port_max), (30050, 30099))
        self.assertEqual(pool.free, 50)
        ports = {pool.take() for _ in range(25)}
        self.assertEqual(ports, set(range(30050, 30099, 2)))


class ClaimTests(SynchronousTestCase):
    """PortPool.claim: a restored call takes exactly its old ports."""

    def test_claim(self):
        from omnirtp.errors import PortsExhausted
        from omnirtp.media.ports import PortPool
        pool = PortPool(30000, 30009)
        self.assertEqual(pool.claim(30004), 30004)
        self.assertTrue(pool.holds(30004))
        self.assertEqual(pool.used, 2)
        self.assertRaises(PortsExhausted, pool.claim, 30004)   # taken
        self.assertRaises(PortsExhausted, pool.claim, 30005)   # odd: not a pair
        self.assertRaises(PortsExhausted, pool.claim, 40000)   # not ours
        taken = {pool.take() for _ in range(4)}
        self.assertNotIn(30004, taken)
        pool.quarantine(taken.pop())
        self.assertEqual(pool.quarantined, 2)
        (q,) = list(pool._quarantine)
        self.assertEqual(pool.claim(q), q)
        self.assertEqual(pool.quarantined, 0)
