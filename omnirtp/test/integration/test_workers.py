"""WorkerPool with real worker processes relaying real UDP on 127.0.0.1.

Two workers share a free 1000-port range outside the kernel's ephemeral ports.  Fake parties (DatagramProtocols on
ephemeral ports) talk through two calls, one per worker; one worker is
killed with SIGKILL mid-call.  Its call is reported lost and its ports are
closed, the other call keeps relaying, and the restarted worker takes a new
call.

Also read back from the processes themselves (pidfd_getfd, /proc): the
SO_INCOMING_CPU of ``socket-cpu-affinity`` on the workers' and the
daemon's media sockets, and the open files limit ``set maxopenfiles``
gives every worker.
"""

import ctypes
import os
import signal
import socket

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from omnirtp.errors import E_INTERNAL
from omnirtp.media.pool import READY, WorkerPool, WorkerUnavailable
from omnirtp.media.relay import SO_INCOMING_CPU
from omnirtp.test.integration.peers import Party, free_port_range

HOST = "127.0.0.1"
PORT_MIN, PORT_MAX = free_port_range(1000)
SLICES = [(PORT_MIN, PORT_MIN + 499), (PORT_MIN + 500, PORT_MAX)]


def rtp(seq, marker=0):
    """A minimal RTP packet (PCMU, 20 bytes of payload)."""
    return bytes([0x80, marker, seq >> 8 & 0xFF, seq & 0xFF]) + b"\x00" * 8 + b"\xff" * 20


def bindable(port):
    """True if nothing holds UDP ``HOST:port`` (we can bind it ourselves)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class WorkerPoolUDPTests(TestCase):
    timeout = 60
    #: the pool's lazy hand-off (LazyHandOffUDPTests)
    lazy = False

    def setUp(self):
        self.pool = WorkerPool(reactor, {HOST: (PORT_MIN, PORT_MAX)}, 2, lazy=self.lazy)
        self.lost = []
        self.lost_d = defer.Deferred()

        def calls_lost(call_ids, reason):
            self.lost.append((call_ids, reason))
            if not self.lost_d.called:
                self.lost_d.callback(None)

        self.pool.on_calls_lost = calls_lost
        self.pool.startService()
        self.addCleanup(self.pool.stopService)

    def party(self):
        p = Party()
        port = reactor.listenUDP(0, p, interface=HOST)
        self.addCleanup(port.stopListening)
        return p

    @defer.inlineCallbacks
    def call(self, call_id):
        """Allocate and wire a two-party call as the registry would.

        Fires with ``(a, b, port_a, port_b)``: A sends to ``port_a`` and
        hears B from it; B likewise with ``port_b``.
        """
        a, b = self.party(), self.party()
        port_a, port_b = yield self.pool.allocate(call_id, HOST, 2)
        entries = []
        for local, peer, endpoint in ((port_a, port_b, a.address), (port_b, port_a, b.address)):
            entries.append(
                {
                    "local": (HOST, local),
                    "peer": (HOST, peer),
                    "endpoint": endpoint,
                    "learning": "delayed",
                    "strict": False,
                    "handover": False,
                    "asymmetric": False,
                    "reset": True,
                }
            )
        yield self.pool.configure(call_id, entries)
        return a, b, port_a, port_b

    @defer.inlineCallbacks
    def relay_both_ways(self, a, b, port_a, port_b, first_seq, count=3):
        """A -> B and B -> A, ``count`` packets each; each hears the other
        from the port it was given."""
        seen_a, seen_b = len(a.received), len(b.received)
        for i in range(count):
            a.send(rtp(first_seq + i), port_a)
            b.send(rtp(first_seq + 1000 + i), port_b)
        got_b = yield b.wait(seen_b + count)
        got_a = yield a.wait(seen_a + count)
        self.assertEqual(
            got_b[seen_b:], [(rtp(first_seq + i), (HOST, port_b)) for i in range(count)]
        )
        self.assertEqual(
            got_a[seen_a:], [(rtp(first_seq + 1000 + i), (HOST, port_a)) for i in range(count)]
        )

    def assertInSlice(self, ports, index):
        lo, hi = SLICES[index]
        for port in ports:
            self.assertTrue(lo <= port <= hi - 1, "port %d is not in slice %d %r" % (port, index, SLICES[index]))

    @defer.inlineCallbacks
    def test_workerKilledMidCall(self):
        pids = yield self.pool.whenReady()
        self.assertEqual([w["slice"] for w in self.pool.workers], [{HOST: s} for s in SLICES])

        a1, b1, p1a, p1b = yield self.call("call-1")
        a2, b2, p2a, p2b = yield self.call("call-2")
        self.assertInSlice([p1a, p1b], 0)
        self.assertInSlice([p2a, p2b], 1)
        self.assertEqual([w["calls"] for w in self.pool.workers], [1, 1])
        yield self.relay_both_ways(a1, b1, p1a, p1b, 0)
        yield self.relay_both_ways(a2, b2, p2a, p2b, 0)

        # kill -9 the worker holding call-1, mid-call
        os.kill(pids[0], signal.SIGKILL)
        yield self.lost_d
        self.assertEqual(self.lost, [(["call-1"], "media worker 0 (pid %d) killed by signal 9" % pids[0])])
        self.assertEqual(self.pool.lost_calls, 1)

        # its ports are closed: A's packets go nowhere, we could bind them
        heard_by_b1 = len(b1.received)
        a1.send(rtp(50), p1a)
        for port in (p1a, p1a + 1, p1b, p1b + 1):
            self.assertTrue(bindable(port), "port %d still bound after the kill" % port)

        # the other call keeps relaying (its packets were sent after A's)
        yield self.relay_both_ways(a2, b2, p2a, p2b, 100)
        self.assertEqual(len(b1.received), heard_by_b1)
        stats = yield self.pool.stats()
        self.assertEqual(sorted(stats), ["call-2"])
        self.assertEqual(stats["call-2"][(HOST, p2a)]["packets"], 6)

        # a fresh worker comes up on slot 0 and takes the next call
        new_pid = yield self.pool.whenReady(0)
        self.assertNotEqual(new_pid, pids[0])
        self.assertEqual(self.pool.workers[0]["state"], READY)
        self.assertEqual(self.pool.workers[0]["restarts"], 1)
        a3, b3, p3a, p3b = yield self.call("call-3")
        self.assertInSlice([p3a, p3b], 0)
        self.assertEqual([w["calls"] for w in self.pool.workers], [1, 1])
        yield self.relay_both_ways(a3, b3, p3a, p3b, 200)
        yield self.relay_both_ways(a2, b2, p2a, p2b, 300)

        totals = yield self.pool.totals()
        self.assertEqual(totals["ports_used"], 8)
        # (a party's ephemeral port may fall in the range: that pair is
        # quarantined, counted neither used nor free)
        self.assertLessEqual(totals["ports_used"] + totals["ports_free"], PORT_MAX - PORT_MIN + 1)
        self.assertGreaterEqual(totals["ports_used"] + totals["ports_free"], PORT_MAX - PORT_MIN + 1 - 2 * 8)

        yield self.pool.release("call-3")
        self.assertTrue(bindable(p3a))

    @defer.inlineCallbacks
    def test_hungWorkerIsKilledAndReplaced(self):
        """A worker that stops answering (SIGSTOP) is killed after
        request_timeout; the caller gets an NGError, not a hang."""
        self.pool.request_timeout = 1.0
        pids = yield self.pool.whenReady()
        yield self.call("call-1")
        yield self.call("call-2")
        os.kill(pids[1], signal.SIGSTOP)
        try:
            yield self.pool.stats("call-2")
        except WorkerUnavailable as e:
            self.assertEqual(e.reason, E_INTERNAL)
            self.assertEqual(e.detail, "media worker 1 did not answer Stats in 1.0s")
        else:
            self.fail("stats of a call on a stopped worker did not fail")
        yield self.lost_d
        self.assertEqual(self.lost, [(["call-2"], "media worker 1 (pid %d) killed by signal 9" % pids[1])])
        new_pid = yield self.pool.whenReady(1)
        self.assertNotEqual(new_pid, pids[1])
        stats = yield self.pool.stats()
        self.assertEqual(sorted(stats), ["call-1"])

    @defer.inlineCallbacks
    def test_stopServiceEndsWorkers(self):
        """Workers exit on their own when the pool closes their pipe."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        pids = yield self.pool.whenReady()
        yield self.pool.stopService()
        ends = sorted(
            (e["worker"], e["pid"], e["how"]) for e in events if "how" in e and "worker" in e
        )
        self.assertEqual(ends, [(0, pids[0], "exited normally"), (1, pids[1], "exited normally")])
        for pid in pids:
            # the processes are reaped: signalling them fails
            self.assertRaises(ProcessLookupError, os.kill, pid, 0)
        self.assertEqual([w["state"] for w in self.pool.workers], ["stopped", "stopped"])
        self.assertEqual(self.lost, [])


SYS_PIDFD_OPEN, SYS_PIDFD_GETFD = 434, 438  # x86-64 and arm64 alike


def sockets_of(pid, ports):
    """``{port: socket}``: copies (pidfd_getfd) of process ``pid``'s UDP
    sockets bound to ``HOST:port`` for ``port`` in ``ports`` (the main
    media sockets, not their connected companions)."""
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    pidfd = syscall(SYS_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        raise OSError(ctypes.get_errno(), "pidfd_open(%d)" % pid)
    found = {}
    try:
        for name in os.listdir("/proc/%d/fd" % pid):
            try:
                if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "pidfd_getfd(%d, %s)" % (pid, name))
            sock = socket.socket(fileno=fd)
            try:
                here = sock.getsockname()
            except OSError:
                sock.close()
                continue
            if (sock.type == socket.SOCK_DGRAM and here[0] == HOST and here[1] in ports
                    and _peer(sock) is None):
                found[here[1]] = sock
            else:
                sock.close()
    finally:
        os.close(pidfd)
    return found


def _peer(sock):
    try:
        return sock.getpeername()
    except OSError:
        return None


class WorkerSocketCpuTests(TestCase):
    """``socket-cpu-affinity`` with worker processes: each worker gives
    its calls' sockets (RTP and RTCP) SO_INCOMING_CPU 0..N-1 in turn, one
    value per call; read back from the workers' own sockets."""

    timeout = 60

    def setUp(self):
        self.pool = WorkerPool(reactor, {HOST: (PORT_MIN, PORT_MAX)}, 2, socket_cpu_affinity=3)
        self.pool.startService()
        self.addCleanup(self.pool.stopService)

    @defer.inlineCallbacks
    def test_valuesPerCallInEachWorker(self):
        pids = yield self.pool.whenReady()
        ports = {}
        for n in range(1, 6):
            ports["call-%d" % n] = yield self.pool.allocate("call-%d" % n, HOST, 2)
        # the pool spreads new calls: 1, 3, 5 on worker 0; 2, 4 on worker 1
        want = {"call-1": 0, "call-3": 1, "call-5": 2, "call-2": 0, "call-4": 1}
        got = {}
        for call_id, call_ports in ports.items():
            index = self.pool._routes[call_id].index
            wanted = {p + i for p in call_ports for i in (0, 1)}
            socks = sockets_of(pids[index], wanted)
            self.addCleanup(lambda socks=socks: [s.close() for s in socks.values()])
            self.assertEqual(sorted(socks), sorted(wanted))
            values = {s.getsockopt(socket.SOL_SOCKET, SO_INCOMING_CPU) for s in socks.values()}
            self.assertEqual(len(values), 1, (call_id, values))
            got[call_id] = (index, values.pop())
        self.assertEqual(got, {c: (1 - int(c[-1]) % 2, v) for c, v in want.items()})


class WorkerOpenFilesTests(TestCase):
    """``set maxopenfiles`` with worker processes: Operations.set_open_files
    sets every running worker's RLIMIT_NOFILE too (read back from
    /proc/<pid>/limits).  This process's own limit is left alone (a fake
    for pid 0): a lowered hard limit could not be raised again."""

    timeout = 60

    def setUp(self):
        self.pool = WorkerPool(reactor, {HOST: (PORT_MIN, PORT_MAX)}, 2)
        self.pool.startService()
        self.addCleanup(self.pool.stopService)

    @defer.inlineCallbacks
    def test_everyWorker(self):
        import resource
        from types import SimpleNamespace

        from omnirtp.control.operations import Operations

        pids = yield self.pool.whenReady()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        value = min(soft, hard, 4096) - 1
        asked = []

        class OnlyWorkers:
            RLIMIT_NOFILE, RLIM_INFINITY = resource.RLIMIT_NOFILE, resource.RLIM_INFINITY

            def prlimit(self, pid, kind, limits):
                asked.append(pid)
                if pid:
                    return resource.prlimit(pid, kind, limits)

        ops = SimpleNamespace(engine=self.pool, log=Operations.log)
        Operations.set_open_files(ops, value, resource=OnlyWorkers())
        self.assertEqual(asked, [0] + pids)
        for pid in pids:
            with open("/proc/%d/limits" % pid) as f:
                line = [x for x in f if x.startswith("Max open files")][0]
            self.assertEqual(line.split()[3:5], [str(value), str(value)])


class DaemonSocketCpuTests(SynchronousTestCase):
    """``socket-cpu-affinity`` through the daemon's option (twistd, media in
    the control process; negative: the CPU cores online): the offers of
    two calls, their sockets read back from the daemon process."""

    def test_twoCalls(self):
        from omnirtp.sdp.model import SessionDescription, inspect
        from omnirtp.test.integration.peers import free_port, start_omnirtp

        cores = os.sysconf("SC_NPROCESSORS_ONLN")
        port_min, port_max = free_port_range(40)
        proxy = start_omnirtp(self, free_port(), port_min, port_max,
                              ["--socket-cpu-affinity=-1", "--num-threads=0"])
        values = []
        for n in range(3):
            offer = proxy.ng.request({
                "command": "offer", "call-id": "cpu-%d" % n, "from-tag": "ft",
                "sdp": "v=0\r\no=u 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                       "t=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"})
            port = inspect(SessionDescription.parse(offer["sdp"]))[0].rtp[1]
            socks = sockets_of(proxy.pid, {port, port + 1})
            self.addCleanup(lambda socks=socks: [s.close() for s in socks.values()])
            self.assertEqual(sorted(socks), [port, port + 1])
            values.append(sorted({s.getsockopt(socket.SOL_SOCKET, SO_INCOMING_CPU)
                                  for s in socks.values()}))
        self.assertEqual(values, [[0], [1 % cores], [2 % cores]])


def plain_entry(local, peer, endpoint, reset=True):
    """A plain call's socket entry, as the negotiator writes it."""
    return {"learning": "delayed", "strict": False, "handover": False, "asymmetric": False,
            "reset": reset, "tos": None, "local": local, "endpoint": endpoint, "peer": peer,
            "rtcp_peer": None, "ice": None, "dtls": None, "srtp_in": None, "srtp_out": None}


class LazyHandOffUDPTests(TestCase):
    """The lazy hand-off (omnirtp.media.park) with real worker processes:
    a plain call offered and answered is parked in this process; its
    first datagram hands its sockets to the worker (SCM_RIGHTS), which
    relays everything, the first datagrams included."""

    lazy = True
    setUp = WorkerPoolUDPTests.setUp

    @defer.inlineCallbacks
    def call(self, call_id):
        """Offer and answer a call as the negotiator would (one
        allocate_configure with placeholder ports, then a configure)."""
        a, b = self.party(), self.party()
        offer = [plain_entry((HOST, -2), (HOST, -4), a.address),
                 plain_entry((HOST, -1), (HOST, -3), None),
                 plain_entry((HOST, -4), (HOST, -2), None),
                 plain_entry((HOST, -3), (HOST, -1), None)]
        [[port_a, port_b]] = yield self.pool.allocate_configure(call_id, [(HOST, 2)], offer)
        yield self.pool.configure(call_id, self.answer(port_a, port_b, a.address, b.address))
        return a, b, port_a, port_b

    def answer(self, port_a, port_b, a, b, reset=True):
        return [plain_entry((HOST, port_a), (HOST, port_b), a, reset),
                plain_entry((HOST, port_a + 1), (HOST, port_b + 1), None, reset),
                plain_entry((HOST, port_b), (HOST, port_a), b, reset),
                plain_entry((HOST, port_b + 1), (HOST, port_a + 1), None, reset)]

    def requests(self):
        return [slot.process.requests._next for slot in self.pool.slots]

    timeout = WorkerPoolUDPTests.timeout
    party = WorkerPoolUDPTests.party
    relay_both_ways = WorkerPoolUDPTests.relay_both_ways

    @defer.inlineCallbacks
    def test_handOffReInviteDelete(self):
        """A parked call's first datagrams, sent in a burst both ways before
        any hand-off, all arrive; a re-INVITE after it moves B's media to
        a new address; delete gives the worker's counters and frees the
        ports."""
        yield self.pool.whenReady()
        a, b, pa, pb = yield self.call("c1")
        self.assertEqual(self.pool.parked(), {"c1"})
        before = self.requests()
        for i in range(5):
            a.send(rtp(i), pa)
            b.send(rtp(100 + i), pb)
        got_b = yield b.wait(5)
        got_a = yield a.wait(5)
        self.assertEqual(got_b, [(rtp(i), (HOST, pb)) for i in range(5)])
        self.assertEqual(got_a, [(rtp(100 + i), (HOST, pa)) for i in range(5)])
        self.assertEqual(self.pool.parked(), set())
        self.assertEqual(self.pool.park_counts["handed"], 1)
        index = self.pool._routes["c1"].index
        self.assertEqual(self.requests()[index], before[index] + 1)  # the adopt
        # re-INVITE: B moves to another address
        b2 = self.party()
        yield self.pool.configure("c1", self.answer(pa, pb, a.address, b2.address))
        a.send(rtp(10), pa)
        got = yield b2.wait(1)
        self.assertEqual(got, [(rtp(10), (HOST, pb))])
        stats = yield self.pool.stats_release("c1")
        self.assertEqual(stats["c1"][(HOST, pa)]["packets"], 6)
        self.assertEqual(stats["c1"][(HOST, pb)]["packets"], 5)
        for port in (pa, pa + 1, pb, pb + 1):
            self.assertTrue(bindable(port), port)

    @defer.inlineCallbacks
    def test_deleteBeforeMedia(self):
        """A call deleted before any media never reaches a worker; its
        ports are free at once."""
        yield self.pool.whenReady()
        before = self.requests()
        a, b, pa, pb = yield self.call("c1")
        for port in (pa, pa + 1, pb, pb + 1):
            self.assertFalse(bindable(port), port)
        stats = yield self.pool.stats_release("c1")
        self.assertEqual(self.requests(), before)
        self.assertEqual(sorted(stats["c1"]), [(HOST, p) for p in sorted((pa, pa + 1, pb, pb + 1))])
        self.assertEqual({s["packets"] for s in stats["c1"].values()}, {0})
        for port in (pa, pa + 1, pb, pb + 1):
            self.assertTrue(bindable(port), port)
        totals = yield self.pool.totals()
        self.assertEqual(totals["ports_used"], 0)

    @defer.inlineCallbacks
    def test_workerKilledAfterHandOff(self):
        """A handed-over call lives in its worker as any other: the
        worker's death loses it and closes its ports."""
        pids = yield self.pool.whenReady()
        a, b, pa, pb = yield self.call("c1")
        yield self.relay_both_ways(a, b, pa, pb, 0)
        index = self.pool._routes["c1"].index
        os.kill(pids[index], signal.SIGKILL)
        yield self.lost_d
        self.assertEqual(self.lost, [(["c1"], "media worker %d (pid %d) killed by signal 9"
                                      % (index, pids[index]))])
        for port in (pa, pa + 1, pb, pb + 1):
            self.assertTrue(bindable(port), port)

    @defer.inlineCallbacks
    def test_parkedCallOutlivesItsWorker(self):
        """The worker a parked call was meant for dies: the call is not
        lost (its sockets are here); its media goes to the other worker."""
        pids = yield self.pool.whenReady()
        a, b, pa, pb = yield self.call("c1")
        self.assertEqual(self.pool._parked["c1"].slot.index, 0)
        self.pool.restart_delay = 30  # (no new worker 0 meanwhile)
        os.kill(pids[0], signal.SIGKILL)
        while self.pool.slots[0].state == READY:
            yield deferLater(reactor, 0.05, lambda: None)
        yield self.relay_both_ways(a, b, pa, pb, 0)
        self.assertEqual(self.pool._routes["c1"].index, 1)
        self.assertEqual(self.lost, [])
        stats = yield self.pool.stats_release("c1")
        self.assertEqual(stats["c1"][(HOST, pa)]["packets"], 3)
        for port in (pa, pa + 1, pb, pb + 1):
            self.assertTrue(bindable(port), port)

    @defer.inlineCallbacks
    def test_stopServiceClosesParkedCalls(self):
        """Stopping the pool closes the parked calls' ports too."""
        yield self.pool.whenReady()
        a, b, pa, pb = yield self.call("c1")
        yield self.pool.stopService()
        for port in (pa, pa + 1, pb, pb + 1):
            self.assertTrue(bindable(port), port)
