"""Tests for the port blocks omnirtp.test.integration.peers hands to test processes.

A block handed out is held machine-wide (the registry file), so that a
second test process, e.g. one starting another rtpengine (which binds its
media ports with SO_REUSEADDR and so takes over the first one's datagrams),
never gets a block the first still uses.  The "other process" here is a
real child process that sleeps; the registry is a file of the test's own.
"""

import socket
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test.integration import peers

SIZE = 4


class PortRegistryTests(SynchronousTestCase):

    def setUp(self):
        self.patch(peers, "PORT_REGISTRY", self.mktemp())
        # four blocks of SIZE ports, all free right now
        first, last = peers.free_port_range(4 * SIZE)
        peers.release_port_range(first, last)
        self.assertEqual(self.entries(), [])
        self.blocks = [(first + n * SIZE, first + n * SIZE + SIZE - 1) for n in range(4)]
        self.low, self.high = first, last + 1

    def pick(self, wait=0.0):
        return peers.free_port_range(SIZE, low=self.low, high=self.high, wait=wait)

    def picks(self, count=24):
        """``count`` picks, each given back before the next."""
        got = []
        for _ in range(count):
            got.append(self.pick())
            peers.release_port_range(*got[-1])
        return got

    def entries(self):
        try:
            with open(peers.PORT_REGISTRY) as f:
                return [line.split() for line in f.read().splitlines()]
        except FileNotFoundError:
            return []

    def other_process(self):
        """The pid of a live process that is not this one."""
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        return child.pid

    def held_by(self, pid, block, until=0.0):
        with open(peers.PORT_REGISTRY, "a") as f:
            f.write("%d %.3f %d %d\n" % (pid, until, block[0], block[1]))

    def test_block_another_process_holds_is_never_picked(self):
        other = self.other_process()
        for block in self.blocks[:3]:
            self.held_by(other, block)
        self.assertEqual(set(self.picks()), {self.blocks[3]})
        # the other process's entries are kept
        self.assertEqual(len(self.entries()), 3)

    def test_picked_block_is_held_until_released(self):
        got = [self.pick() for _ in range(4)]
        self.assertEqual(sorted(got), self.blocks)
        with self.assertRaises(RuntimeError):
            self.pick()
        peers.release_port_range(*got[2])
        self.assertEqual(self.pick(), got[2])

    def test_hold_lapses(self):
        now = [1000.0]
        self.patch(peers, "_now", lambda: now[0])
        got = [self.pick() for _ in range(4)]
        self.assertEqual(sorted(got), self.blocks)
        now[0] += peers.PORT_HOLD - 1
        with self.assertRaises(RuntimeError):
            self.pick()
        now[0] += 1.5
        self.assertIn(self.pick(), self.blocks)

    def test_wait_for_a_block_to_come_free(self):
        other = self.other_process()
        start = time.monotonic()
        for block in self.blocks:
            self.held_by(other, block, until=time.time() + 1.0)
        self.assertIn(self.pick(wait=10.0), self.blocks)
        self.assertGreater(time.monotonic() - start, 0.9)

    def test_hold_port_range_keeps_the_block_until_released(self):
        now = [1000.0]
        self.patch(peers, "_now", lambda: now[0])
        block = self.pick()
        peers.hold_port_range(*block)       # a proxy was started on it
        now[0] += peers.PORT_HOLD + 1
        self.assertNotIn(block, self.picks(8))
        peers.release_port_range(*block)    # the proxy stopped
        self.assertEqual(self.entries(), [])

    def test_hold_port_range_of_a_range_not_picked_here(self):
        peers.hold_port_range(self.blocks[0][0], self.blocks[1][1])
        self.assertEqual(set(self.picks()), set(self.blocks[2:]))

    def test_entries_of_processes_that_are_gone_are_dropped(self):
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        for block in self.blocks:
            self.held_by(gone.pid, block)
        self.assertIn(self.pick(), self.blocks)
        self.assertEqual(len(self.entries()), 1)

    def test_lapsed_entries_of_live_processes_are_dropped(self):
        other = self.other_process()
        for block in self.blocks:
            self.held_by(other, block, until=time.time() - 1)
        self.assertIn(self.pick(), self.blocks)
        self.assertEqual(len(self.entries()), 1)

    def test_bound_block_is_never_picked(self):
        sockets = []
        for block in self.blocks[:3]:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(s.close)
            s.bind((peers.LOOPBACK, block[1]))
            sockets.append(s)
        self.assertEqual(set(self.picks()), {self.blocks[3]})

    def test_picks_spread_over_the_free_blocks(self):
        """Not the first free block after some start: at random among the free ones."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind((peers.LOOPBACK, self.blocks[0][0]))
        got = self.picks(60)
        for block in self.blocks[1:]:
            self.assertGreater(got.count(block), 5, got)

    def test_default_blocks_both_sides_of_the_ephemeral_range(self):
        """Without ``low``/``high`` a block is looked for below the kernel's
        ephemeral port range and above it: with every port below it held
        by another process (benchmarks' daemons, bench/setup.py's ranges)
        the block comes from above, and the other way round; with both
        held, none (after ``wait``)."""
        self.patch(peers, "_ephemeral_range", lambda: (32768, 60999))  # (Linux's default)
        below, above = (10000, 32767), (61000, 65535)
        self.assertEqual(peers._outside_ephemeral(), [below, above])
        other = self.other_process()

        def pick_with_held(held):
            with open(peers.PORT_REGISTRY, "w") as f:
                f.write("".join("%d 0 %d %d\n" % (other, lo, hi) for lo, hi in held))
            picked = [peers.free_port_range(40, wait=0) for _ in range(3)]
            for block in picked:
                peers.release_port_range(*block)
            return picked

        for held, free in (([below], above), ([above], below)):
            for first, last in pick_with_held(held):
                self.assertEqual((last - first, first % 2), (39, 0))
                self.assertTrue(free[0] <= first and last <= free[1], (first, last, free))
        with self.assertRaises(RuntimeError):
            pick_with_held([below, above])

    def test_garbage_lines_are_dropped(self):
        with open(peers.PORT_REGISTRY, "w") as f:
            f.write("not a line\n1 2\n\n")
        self.pick()
        self.assertEqual(len(self.entries()), 1)


class PartyTests(SynchronousTestCase):

    def test_wait_counts_everything(self):
        party = peers.Party()
        d = party.wait(2)
        party.datagramReceived(b"a", ("127.0.0.1", 1000))
        self.assertNoResult(d)
        party.datagramReceived(b"x", ("127.0.0.1", 9999))
        self.assertEqual(self.successResultOf(d),
                         [(b"a", ("127.0.0.1", 1000)), (b"x", ("127.0.0.1", 9999))])

    def test_wait_from_sources(self):
        """A stray datagram (another test's proxy still sending to a port
        that was its party's) neither counts nor is listed."""
        party = peers.Party()
        sources = {("127.0.0.1", 1000), ("127.0.0.1", 1001)}
        d = party.wait(2, sources=sources)
        party.datagramReceived(b"a", ("127.0.0.1", 1000))
        party.datagramReceived(b"x", ("127.0.0.1", 9999))
        self.assertNoResult(d)
        party.datagramReceived(b"b", ("127.0.0.1", 1001))
        self.assertEqual(self.successResultOf(d),
                         [(b"a", ("127.0.0.1", 1000)), (b"b", ("127.0.0.1", 1001))])
        self.assertEqual(self.successResultOf(party.wait(1, sources={("127.0.0.1", 9999)})),
                         [(b"x", ("127.0.0.1", 9999))])


class PrivateLoopbackTests(SynchronousTestCase):

    def test_in_127_64_0_0_10_and_bindable(self):
        import ipaddress
        seen = set()
        for _ in range(20):
            address = peers.private_loopback()
            self.assertIn(ipaddress.ip_address(address), ipaddress.ip_network("127.64.0.0/10"))
            seen.add(address)
        self.assertGreater(len(seen), 10)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind((address, 0))
        self.assertEqual(s.getsockname()[0], address)
