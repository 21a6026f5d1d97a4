"""The lazy hand-off of ``num-threads >= 1`` (omnirtp.media.park): a
WorkerPool with ``lazy=True`` whose two workers (test_pool's
``FakeProcess``, a ``WorkerChannel`` over an ``EmbeddedEngine``) and the
parties live on one fake network and one clock; the sockets handed over
are the fake sockets' duplicates (``FakeUDPSocket.dup``, as SCM_RIGHTS
gives), the pipes' bytes moved by :meth:`LazyTests.pump`."""

import os
import random
import select
import socket

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.errors import E_UNKNOWN_CALL, NGError
from omnirtp.media import park
from omnirtp.media.amp import placeholder
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.pool import WorkerPool
from omnirtp.media.relay import LEARNING_MODES, LEARNING_WINDOW, bind_media
from omnirtp.media.worker import parse_slice
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor
from omnirtp.test.test_pool import FakeProcess

IP = "127.0.0.1"
A = ("192.0.2.1", 5000)  # the caller's RTP address
B = ("192.0.2.2", 6000)  # the callee's
T0 = 1700000000.0


# The dict-by-dict reference park.checked and ParkedCall.keep_checked are
# tested against (what the daemon used before they ran by position).

def plain_entry(entry, held):
    """True if ``entry`` (a configure entry) can be kept by the control
    process for a parked call whose socket keys are ``held`` (a set):
    :func:`plain_keys` and :func:`plain_values`."""
    return plain_keys(entry) and plain_values(entry, held)


def plain_keys(entry):
    """True if ``entry`` is a dict of only the keys of park.PLAIN_KEYS,
    the transform ones (park.NONE_KEYS) None."""
    if entry.__class__ is not dict or not entry.keys() <= park.PLAIN_KEYS:
        return False
    get = entry.get
    for key in park.NONE_KEYS:
        if get(key) is not None:
            return False
    return True


def plain_values(entry, held):
    """For an entry of :func:`plain_keys`: True if its sockets are the
    call's own (in ``held``) and every value is one the engine takes."""
    get = entry.get
    if get("local") not in held:
        return False
    for key in ("peer", "rtcp_peer"):
        value = get(key)
        if value is not None and value not in held:
            return False
    endpoint = get("endpoint")
    if endpoint is not None and not park._is_key(endpoint):
        return False
    learning = get("learning")
    if learning is not None and learning not in LEARNING_MODES:
        return False
    tos = get("tos")
    if tos is not None and (type(tos) is not int or not 0 <= tos <= 255):
        return False
    return True


def keep(call, entries, now):
    """``call.keep_checked`` of ``entries`` (each :func:`plain_entry`)
    given as dicts: each entry's form and a list of its values, with no
    check."""
    forms = park._FORMS
    call.keep_checked([(forms.get(names) or park._form(names), list(entry.values()))
                       for entry, names in ((e, tuple(e)) for e in entries)], now)


def rtp(seq):
    return bytes([0x80, 0, seq >> 8 & 0xFF, seq & 0xFF]) + b"\x00" * 8 + b"\xff" * 20


def entry(local, peer, endpoint, reset=True, **more):
    """A plain call's socket entry, as the negotiator writes it."""
    e = {"learning": "delayed", "strict": False, "handover": False, "asymmetric": False,
         "reset": reset, "tos": None, "local": local, "endpoint": endpoint, "peer": peer,
         "rtcp_peer": None, "ice": None, "dtls": None, "srtp_in": None, "srtp_out": None}
    e.update(more)
    return e


def offer_entries(**more):
    """A new two-party call's entries with placeholder ports (pair 0 the
    caller's, pair 1 the callee's): the offer's (the callee's address
    not known yet)."""
    a, b = placeholder(0), placeholder(1)
    return [entry((IP, a), (IP, b), A, **more), entry((IP, a + 1), (IP, b + 1), None),
            entry((IP, b), (IP, a), None), entry((IP, b + 1), (IP, a + 1), None)]


def answer_entries(pa, pb, reset=True, **more):
    return [entry((IP, pa), (IP, pb), A, reset), entry((IP, pa + 1), (IP, pb + 1), None, reset),
            entry((IP, pb), (IP, pa), B, reset, **more),
            entry((IP, pb + 1), (IP, pa + 1), None, reset)]


class LazyTests(SynchronousTestCase):

    def setUp(self):
        self.reactor = reactor = MemoryUDPReactor()
        reactor.advance(T0)
        self.net = net = FakeNetwork()
        self.processes = processes = []

        def spawnProcess(proto, executable, args=(), env={}, path=None, uid=None, gid=None,
                         usePTY=0, childFDs=None):
            args = list(args)
            slices = dict(parse_slice(a) for i, a in enumerate(args)
                          if i and args[i - 1] == "--slice")
            engine = EmbeddedEngine(reactor, slices, bind=net.bind,
                                    rng=random.Random(len(processes) + 1))
            process = FakeProcess(reactor, proto, args, 1000 + len(processes), engine)
            process.childFDs = childFDs
            processes.append(process)
            proto.makeConnection(process)
            return process

        reactor.spawnProcess = spawnProcess
        self.pool = WorkerPool(reactor, {IP: (40000, 40099)}, 2, executable="python3",
                               lazy=True, bind=net.bind)
        self.lost = []
        self.pool.on_calls_lost = lambda call_ids, reason: self.lost.append((call_ids, reason))
        self.pool.startService()
        self.pump()
        self.addCleanup(self.pool.stopService)

    # -- helpers --------------------------------------------------------

    def pump(self):
        """Move what the pool and the workers wrote, and the datagrams,
        until nothing moves."""
        for _ in range(100):
            self.reactor.advance(0)
            moved = any([p.pump() for p in list(self.processes)])
            self.net.pump(self.reactor)
            self.reactor.advance(0)
            if not moved and not any([p.to_worker or p.worker_out.value()
                                      for p in self.processes]):
                return
        raise RuntimeError("still moving")

    def requests(self):
        """Engine requests sent to each live worker so far."""
        return [slot.process.requests._next if slot.process is not None else None
                for slot in self.pool.slots]

    def engine(self, index):
        return self.pool.slots[index].process.transport.engine

    def done(self, d):
        self.pump()
        return self.successResultOf(d)

    def offer_answer(self, call_id="c1"):
        """A parked call, offered and answered: its two RTP ports."""
        [[pa, pb]] = self.done(self.pool.allocate_configure(call_id, [(IP, 2)], offer_entries()))
        self.assertIsNone(self.done(self.pool.configure(call_id, answer_entries(pa, pb))))
        return pa, pb

    def media(self, port, data, source):
        """A party's datagram to our ``port``, then everything moved."""
        self.net.inject((IP, port), data, source)
        self.pump()

    # -- parking ----------------------------------------------------------

    def test_plainCallIsParked(self):
        """A new plain call's ports are bound in the control process, from
        the slice of the worker it goes to, with a reader on each of its
        sockets; no worker hears of it."""
        before = self.requests()
        pa, pb = self.offer_answer()
        self.assertEqual(self.requests(), before)
        self.assertEqual(self.pool.parked(), {"c1"})
        lo, hi = self.pool.slots[0].slices[IP]
        for port in (pa, pb):
            self.assertTrue(lo <= port < hi, port)
            for key in ((IP, port), (IP, port + 1)):
                self.assertIn(key, self.net.bound)
        watched = {r.fileno() for r in self.reactor.getReaders() if isinstance(r, park.Watch)}
        self.assertEqual(watched, {self.net.bound[(IP, p)].fileno()
                                   for p in (pa, pa + 1, pb, pb + 1)})
        self.assertEqual(self.engine(0)._calls, {})
        self.assertEqual(self.engine(1)._calls, {})
        # counted for the balance: the next call goes to the other worker
        self.assertEqual([w["calls"] for w in self.pool.workers], [1, 0])
        [[qa, _qb]] = self.done(self.pool.allocate_configure("c2", [(IP, 2)], offer_entries()))
        lo, hi = self.pool.slots[1].slices[IP]
        self.assertTrue(lo <= qa < hi, qa)

    def test_notEligible(self):
        """A call with ICE, DTLS, SRTP, codec, recording or any key the
        control process does not keep goes to its worker at once, as
        before."""
        crypto = {"suite": "AES_CM_128_HMAC_SHA1_80", "key": "A" * 40}
        for n, more in enumerate([{"srtp_in": crypto}, {"srtp_out": crypto},
                                  {"ice": {"ufrag": "x"}}, {"dtls": {"role": "client"}},
                                  {"transcode": True}, {"record": {"path": "/tmp/x"}},
                                  {"codecs_send": []}, {"ptime": 20}, {"srtp_resume": {}},
                                  {"learning": "sometimes"}, {"tos": 256}]):
            call_id = "x%d" % n
            before = self.requests()
            binds = len(self.net.binds)
            d = self.pool.allocate_configure(call_id, [(IP, 2)], offer_entries(**more))
            self.pump()
            self.assertNotIn(call_id, self.pool.parked(), more)
            self.assertNotEqual(self.requests(), before, more)
            # the worker's binds only: nothing was bound here first
            self.assertEqual(len(self.net.binds) - binds, 4, more)
            d.addErrback(lambda f: None)  # (some are refused by the worker's engine)
            self.pool.release(call_id)
            self.pump()
        # (the worker's engine logged what it refused)
        self.flushLoggedErrors(ValueError)

    def test_noLazyWithTable(self):
        """Kernel forwarding (``table``) keeps every call in its worker."""
        pool = WorkerPool(self.reactor, {IP: (40000, 40099)}, 2, lazy=True, table=0)
        self.assertFalse(pool.lazy)
        self.assertTrue(self.pool.lazy)
        self.assertFalse(WorkerPool(self.reactor, {IP: (40000, 40099)}, 2).lazy)

    def test_configureWhileParked(self):
        """A parked call's plain configure is kept; its stats are those of
        sockets that saw nothing (the reset's time, the SDP's endpoint)."""
        [[pa, pb]] = self.done(self.pool.allocate_configure("c1", [(IP, 2)], offer_entries()))
        self.reactor.advance(5)
        before = self.requests()
        self.assertIsNone(self.done(self.pool.configure("c1", answer_entries(pa, pb))))
        stats = self.done(self.pool.stats("c1"))
        self.assertEqual(self.requests(), before)
        self.assertEqual(list(stats["c1"]), [(IP, pa), (IP, pa + 1), (IP, pb), (IP, pb + 1)])
        self.assertEqual(stats["c1"][(IP, pb)], {
            "packets": 0, "bytes": 0, "errors": 0, "last_packet": T0 + 5, "endpoint": B,
            "confirmed": False})
        # a re-INVITE without reset keeps the time
        self.reactor.advance(5)
        self.done(self.pool.configure("c1", answer_entries(pa, pb, reset=False)))
        stats = self.done(self.pool.stats("c1"))
        self.assertEqual(stats["c1"][(IP, pb)]["last_packet"], T0 + 5)
        self.assertEqual(self.done(self.pool.last_packets()), {"c1": T0 + 5})

    def test_sameStatsAsAWorker(self):
        """What a parked call's stats say is what the worker says of the
        same call before any media (lazy off)."""
        [[pa, pb]] = self.done(self.pool.allocate_configure("c1", [(IP, 2)], offer_entries()))
        self.pool.lazy = False
        [[qa, qb]] = self.done(self.pool.allocate_configure("c2", [(IP, 2)], offer_entries()))
        self.assertEqual(self.pool.parked(), {"c1"})
        self.reactor.advance(2)
        self.done(self.pool.configure("c1", answer_entries(pa, pb)))
        self.done(self.pool.configure("c2", answer_entries(qa, qb)))
        self.reactor.advance(1)
        lazy = self.done(self.pool.stats("c1"))["c1"]
        worker = self.done(self.pool.stats("c2"))["c2"]
        rename = {(IP, pa): (IP, qa), (IP, pa + 1): (IP, qa + 1), (IP, pb): (IP, qb),
                  (IP, pb + 1): (IP, qb + 1)}
        self.assertEqual({rename[k]: v for k, v in lazy.items()}, worker)
        self.assertEqual(list(lazy.values()), list(worker.values()))

    # -- the hand-off -------------------------------------------------------

    def test_firstDatagramHandsOver(self):
        """The first datagram moves the call to its worker, which reads and
        relays it; the control process stops watching and closes its
        copies; the ports are the same."""
        pa, pb = self.offer_answer()
        self.reactor.advance(1)
        before = self.requests()
        self.media(pa, rtp(1), A)
        self.assertEqual(self.pool.parked(), set())
        self.assertEqual(self.requests(), [before[0] + 1, before[1]])  # the adopt
        self.assertEqual([r for r in self.reactor.getReaders() if isinstance(r, park.Watch)], [])
        self.assertEqual(self.net.sent_to(B), [(rtp(1), (IP, pb))])
        engine = self.engine(0)
        self.assertEqual(list(engine._calls["c1"]), [(IP, pa), (IP, pb)])
        for key in ((IP, pa), (IP, pa + 1), (IP, pb), (IP, pb + 1)):
            self.assertEqual(len(self.net.bound[key].copies), 1)  # the worker's
            self.assertIs(self.net.bound[key], engine.socket(key)._sock)
        # the worker's pool holds the ports now
        self.assertTrue(engine.pool(IP).holds(pa))
        self.assertEqual(self.pool.park_counts["handed"], 1)
        # the learning window started at the answer's reset, not now
        self.assertEqual(engine.socket((IP, pb)).window_end, T0 + LEARNING_WINDOW)
        self.media(pb, rtp(2), B)
        self.assertEqual(self.net.sent_to(A), [(rtp(2), (IP, pa))])
        stats = self.done(self.pool.stats_release("c1"))
        self.assertEqual(stats["c1"][(IP, pa)]["packets"], 1)
        self.assertEqual(stats["c1"][(IP, pb)]["packets"], 1)
        self.assertEqual(engine._calls, {})
        for key in ((IP, pa), (IP, pa + 1), (IP, pb), (IP, pb + 1)):
            self.assertNotIn(key, self.net.bound)

    def test_datagramsDuringHandOff(self):
        """Datagrams that arrive while the call moves wait and are relayed
        by the worker, none lost."""
        pa, pb = self.offer_answer()
        for seq in range(3):
            self.net.inject((IP, pa), rtp(seq), A)
        # the watch fires once; nothing is read here
        self.pool._wake("c1")
        self.pool._wake("c1")
        for seq in range(3, 6):
            self.net.inject((IP, pa), rtp(seq), A)
        self.pump()
        self.assertEqual([d for d, _src in self.net.sent_to(B)], [rtp(s) for s in range(6)])

    def test_requestsWaitForTheHandOff(self):
        """Requests for a call being handed over wait for it, then run in
        their order in the worker."""
        pa, pb = self.offer_answer()
        self.pool._wake("c1")  # the adopt is on its way
        results = []
        crypto = {"suite": "AES_CM_128_HMAC_SHA1_80",
                  "key": "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"}
        d1 = self.pool.configure("c1", answer_entries(pa, pb, srtp_out=crypto))
        d2 = self.pool.stats("c1")
        d3 = self.pool.stats_release("c1")
        for d in (d1, d2, d3):
            d.addBoth(results.append)
        self.assertEqual(results, [])
        self.pump()
        self.assertEqual(len(results), 3)
        self.assertIsNone(results[0])
        self.assertIn("transforms", results[1]["c1"][(IP, pb)])
        self.assertIn("transforms", results[2]["c1"][(IP, pb)])
        self.assertEqual(self.engine(0)._calls, {})

    def test_transformHandsOverAtOnce(self):
        """A configure the control process cannot keep (SRTP here) hands the
        call over first, then goes to the worker."""
        pa, pb = self.offer_answer()
        crypto = {"suite": "AES_CM_128_HMAC_SHA1_80",
                  "key": "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"}
        d = self.pool.configure("c1", answer_entries(pa, pb, srtp_out=crypto))
        self.assertIsNone(self.done(d))
        self.assertEqual(self.pool.parked(), set())
        self.assertTrue(self.engine(0).socket((IP, pb)).outbound)

    def test_newMediaHandsOver(self):
        """An allocate for a parked call (a re-INVITE adding a stream) is
        made by the worker, after the hand-off."""
        pa, pb = self.offer_answer()
        ports = self.done(self.pool.allocate("c1", IP, 1))
        self.assertEqual(self.pool.parked(), set())
        self.assertEqual(sorted(self.engine(0)._calls["c1"]),
                         sorted([(IP, pa), (IP, pb), (IP, ports[0])]))

    # -- release ----------------------------------------------------------

    def test_deleteBeforeMedia(self):
        """A parked call deleted before any media: zero counters, its ports
        closed and free again, no worker asked."""
        before = self.requests()
        pa, pb = self.offer_answer()
        stats = self.done(self.pool.stats_release("c1"))
        self.assertEqual(self.requests(), before)
        self.assertEqual(list(stats["c1"]), [(IP, pa), (IP, pa + 1), (IP, pb), (IP, pb + 1)])
        self.assertEqual({c["packets"] for c in stats["c1"].values()}, {0})
        for key in stats["c1"]:
            self.assertNotIn(key, self.net.bound)
        self.assertEqual(self.pool.parked(), set())
        self.assertEqual([r for r in self.reactor.getReaders() if isinstance(r, park.Watch)], [])
        self.assertEqual(self.pool.slots[0].park_pools[IP].used, 0)
        self.assertEqual([w["calls"] for w in self.pool.workers], [0, 0])
        self.assertEqual(self.done(self.pool.stats("c1")), {})
        self.assertEqual(self.done(self.pool.totals())["ports_used"], 0)
        self.assertEqual(self.pool.park_counts["released"], 1)

    def test_deleteReleasesAfterTheReply(self):
        """Within an ng datagram (sync.after_reply), a parked call's delete
        answers its counters at once and closes its ports only after the
        reply has been sent."""
        from omnirtp import sync
        pa, pb = self.offer_answer()
        self.addCleanup(setattr, sync, "after_reply_work", None)
        work = sync.after_reply_work = []
        stats = self.done(self.pool.stats_release("c1"))
        self.assertEqual(list(stats["c1"]), [(IP, pa), (IP, pa + 1), (IP, pb), (IP, pb + 1)])
        for key in stats["c1"]:
            self.assertIn(key, self.net.bound)
        self.assertEqual(len(work), 1)
        sync.after_reply_work = None
        for function, args in work:
            function(*args)
        for key in stats["c1"]:
            self.assertNotIn(key, self.net.bound)
        self.assertEqual(self.pool.parked(), set())
        self.assertEqual(self.pool.park_counts["released"], 1)

    def test_releaseSomeWhileParked(self):
        """Releasing some pairs of a parked call closes them; the entries
        that sent out of them send nowhere when the call moves."""
        pa, pb = self.offer_answer()
        qa, qb = self.offer_answer("c2")
        pool = self.pool.slots[0].park_pools[IP]
        # another call's key: not c1's, nothing happens to it
        self.assertIsNone(self.done(self.pool.release("c1", [(IP, qa)])))
        self.assertIn((IP, qa), self.net.bound)
        self.assertTrue(self.pool.slots[1].park_pools[IP].holds(qa))
        self.assertIsNone(self.done(self.pool.release("c1", [(IP, pb)])))
        self.assertFalse(pool.holds(pb))
        self.assertTrue(pool.holds(pa))
        self.assertNotIn((IP, pb), self.net.bound)
        self.assertNotIn((IP, pb + 1), self.net.bound)
        self.assertEqual(self.done(self.pool.totals())["ports_used"], 2 + 4)
        self.media(pa, rtp(1), A)
        self.assertEqual(sorted(self.engine(0)._calls["c1"]), [(IP, pa)])
        self.assertIsNone(self.engine(0).socket((IP, pa)).peer)

    def test_totals(self):
        """Parked calls' ports are counted used (and not free)."""
        base = self.done(self.pool.totals())
        self.offer_answer("c1")
        self.offer_answer("c2")
        totals = self.done(self.pool.totals())
        self.assertEqual(totals["ports_used"], 8)
        self.assertEqual(totals["ports_free"], base["ports_free"] - 8)
        self.assertEqual(sorted(self.done(self.pool.stats())), ["c1", "c2"])

    def test_stopServiceClosesParked(self):
        """Stopping the pool closes the parked calls' sockets."""
        pa, pb = self.offer_answer()
        self.pool.stopService()
        for key in ((IP, pa), (IP, pa + 1), (IP, pb), (IP, pb + 1)):
            self.assertNotIn(key, self.net.bound)
        self.assertEqual([r for r in self.reactor.getReaders() if isinstance(r, park.Watch)], [])

    # -- failures ---------------------------------------------------------

    def test_workerDeadTriesAnother(self):
        """If the worker whose slice the ports came from is gone, the other
        worker takes the call (ports of another slice: not in its pool)."""
        pa, pb = self.offer_answer()
        self.processes[0].end(signal=9)
        self.assertEqual(self.lost, [])  # a parked call is not lost
        self.media(pa, rtp(1), A)
        self.assertEqual(self.net.sent_to(B), [(rtp(1), (IP, pb))])
        engine = self.engine(1)
        self.assertIn("c1", engine._calls)
        self.assertFalse(engine.pool(IP).holds(pa))
        stats = self.done(self.pool.stats_release("c1"))
        self.assertEqual(stats["c1"][(IP, pa)]["packets"], 1)
        self.assertNotIn((IP, pa), self.net.bound)

    def test_adoptRefusedTriesAnother(self):
        """A worker that fails the adopt (its engine raises) closes what it
        got; the call goes to the next worker."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        pa, pb = self.offer_answer()

        def refuse(*args):
            raise RuntimeError("no")
        self.engine(0).adopt_now = refuse
        self.media(pa, rtp(1), A)
        self.assertIn("c1", self.engine(1)._calls)
        self.assertEqual(self.net.sent_to(B), [(rtp(1), (IP, pb))])
        warned = [e for e in events if e.get("call_id") == "c1" and "why" in e]
        self.assertEqual(len(warned), 1)
        self.assertEqual(warned[0]["worker"], 0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)  # the worker's log

    def test_adoptTimesOut(self):
        """A worker that does not answer the adopt in time is killed; the
        sockets, still held here, go to the other worker."""
        pa, pb = self.offer_answer()
        self.pool._wake("c1")
        self.reactor.advance(0)  # the frames written
        hung = self.processes[0]
        del hung.to_worker[:]  # (it never reads them)
        for _tag, socks in hung.handed:
            for sock in socks:
                sock.close()
        del hung.handed[:]
        self.reactor.advance(self.pool.request_timeout + 1)
        self.assertEqual(hung.signals, ["KILL"])
        self.pump()
        self.assertIn("c1", self.engine(1)._calls)
        self.assertEqual(self.pool._routes["c1"].index, 1)
        self.media(pa, rtp(1), A)
        self.assertEqual(self.net.sent_to(B), [(rtp(1), (IP, pb))])
        self.assertEqual(self.lost, [])

    def test_noWorkerTakesIt(self):
        """No worker left: the parked call's ports are closed, the call is
        reported lost, what waited for it finds no call."""
        pa, pb = self.offer_answer()
        for p in self.processes:
            p.end(signal=9)
        self.pool._wake("c1")
        d = self.pool.configure("c1", answer_entries(pa, pb))
        # reported on the next turn, not inside the request that found it
        self.assertEqual(self.lost, [])
        self.assertNoResult(d)
        self.reactor.advance(0)
        self.assertEqual(self.lost, [(["c1"], "call c1: no media worker could take its media; "
                                               "its ports are closed")])
        self.assertEqual(self.pool.lost_calls, 1)
        self.assertEqual(self.pool.park_counts["failed"], 1)
        for key in ((IP, pa), (IP, pa + 1), (IP, pb), (IP, pb + 1)):
            self.assertNotIn(key, self.net.bound)
        # (the configure waited for the hand-off, which failed)
        self.assertEqual(self.failureResultOf(d, NGError).value.reason, E_UNKNOWN_CALL)

    def test_waitingRequestsAfterFailure(self):
        """Requests that waited for a hand-off that failed everywhere
        answer as for an unknown call."""
        pa, pb = self.offer_answer()
        self.pool._wake("c1")
        d1 = self.pool.configure("c1", answer_entries(pa, pb))
        d2 = self.pool.stats_release("c1")
        for p in self.processes:
            p.end(signal=9)
        self.pump()
        self.assertEqual(self.failureResultOf(d1, NGError).value.reason, E_UNKNOWN_CALL)
        self.assertEqual(self.successResultOf(d2), {})
        self.assertEqual(self.lost[0][0], ["c1"])
        self.assertNotIn((IP, pa), self.net.bound)


class AdoptTests(SynchronousTestCase):
    """EmbeddedEngine.adopt_now on its own."""

    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(T0)
        self.net = FakeNetwork()
        self.engine = EmbeddedEngine(self.reactor, {IP: (40000, 40019)}, bind=self.net.bind)

    def socks(self, *ports):
        out = []
        for port in ports:
            out += [self.net.bind(IP, port), self.net.bind(IP, port + 1)]
        return out

    def test_adopt(self):
        socks = self.socks(40000, 50000)
        self.engine.adopt_now("c", [(IP, [40000, 50000])], socks,
                              answer_entries(40000, 50000, reset=False),
                              {(IP, 40000): T0 - 1, (IP, 50000): T0 - 2})
        relay = self.engine.socket((IP, 40000))
        self.assertIs(relay._sock, socks[0])
        self.assertEqual(relay.last_packet, T0 - 1)
        self.assertEqual(relay.window_end, T0 - 1 + LEARNING_WINDOW)
        self.assertEqual(self.engine.socket((IP, 50000)).endpoint, B)
        self.assertIs(self.engine.socket((IP, 50000)).peer, relay)
        # 40000 is the engine's (claimed); 50000 is not in its range
        self.assertTrue(self.engine.pool(IP).holds(40000))
        self.assertEqual(self.engine.pool(IP).used, 2)
        self.engine.release_now("c")
        self.assertEqual(self.net.bound, {})

    def test_adoptFailsClosesEverything(self):
        socks = self.socks(40000, 40002)
        bad = answer_entries(40000, 40002)
        bad[0]["learning"] = "sometimes"
        self.assertRaises(ValueError, self.engine.adopt_now, "c", [(IP, [40000, 40002])], socks,
                          bad, {})
        self.assertEqual(self.net.bound, {})
        self.assertEqual(self.engine.pool(IP).used, 0)
        self.assertNotIn("c", self.engine._calls)


def loopback_pair():
    """Two bound loopback sockets (kernel-chosen ports), as a pair."""
    return (bind_media(IP, 0), bind_media(IP, 0))


def send_to(sock, data=b"x"):
    """A datagram from a fresh loopback socket to ``sock``."""
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.sendto(data, sock.getsockname())
    finally:
        sender.close()


class PollerTests(SynchronousTestCase):
    """park.Poller on real loopback sockets: one epoll for every parked
    socket, read by the reactor as one reader."""

    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.woken = []
        self.poller = park.Poller(self.reactor, self.wake)
        self.addCleanup(self.poller.close)
        self.pairs = []

    def wake(self, call_id):
        self.woken.append(call_id)

    def pair(self):
        pair = loopback_pair()
        self.pairs.append(pair)
        for sock in pair:
            self.addCleanup(sock.close)
        return pair

    def ready(self):
        """The file descriptors the poller's epoll reports, now."""
        probe = select.epoll()
        try:
            probe.register(self.poller.fileno(), select.EPOLLIN)
            return probe.poll(0)
        finally:
            probe.close()

    def test_oneReaderForAll(self):
        """The reactor gets the epoll's descriptor once, however many
        sockets are watched; close takes it out again."""
        self.poller.watch("c1", [self.pair(), self.pair()])
        self.poller.watch("c2", [self.pair()])
        self.assertEqual(list(self.reactor.getReaders()), [self.poller])
        self.assertEqual(len(self.poller), 6)
        self.poller.close()
        self.assertEqual(list(self.reactor.getReaders()), [])

    def test_wakeOnFirstDatagram(self):
        """A datagram on any socket of a call wakes that call; nothing is
        read from the socket (its datagram waits for the worker)."""
        self.poller.watch("c1", [self.pair()])
        rtp2, rtcp2 = self.pair()
        self.poller.watch("c2", [(rtp2, rtcp2)])
        self.poller.doRead()
        self.assertEqual(self.woken, [])
        send_to(rtcp2, b"first")

        def hand_over(call_id):
            self.woken.append(call_id)
            self.poller.unwatch([(rtp2, rtcp2)])

        self.poller._wake = hand_over
        self.poller.doRead()
        self.assertEqual(self.woken, ["c2"])
        self.assertEqual(rtcp2.recvfrom(100)[0], b"first")
        self.assertEqual(len(self.poller), 2)
        self.assertEqual(self.ready(), [])

    def test_unwatchedSocketsStayOpenAndSilent(self):
        """unwatch (the hand-off) takes open sockets out of the epoll:
        their datagrams wake nothing."""
        rtp, rtcp = self.pair()
        self.poller.watch("c1", [(rtp, rtcp)])
        self.poller.unwatch([(rtp, rtcp)])
        send_to(rtp)
        self.assertEqual(self.ready(), [])
        self.poller.doRead()
        self.assertEqual(self.woken, [])
        self.assertEqual(len(self.poller), 0)

    def test_closedSocketsLeaveTheEpoll(self):
        """closing only forgets the sockets; closing them takes them out
        of the epoll (a socket bound on the same descriptor number next
        registers anew, which epoll refuses for one still in it)."""
        rtp, rtcp = self.pair()
        self.poller.watch("c1", [(rtp, rtcp)])
        fds = (rtp.fileno(), rtcp.fileno())
        self.poller.closing([(rtp, rtcp)])
        self.assertEqual(len(self.poller), 0)
        rtp.close()
        rtcp.close()
        again = self.pair()
        self.assertEqual(tuple(sorted(s.fileno() for s in again)), tuple(sorted(fds)))
        self.poller.watch("c2", [again])
        send_to(again[0])
        self.poller.doRead()
        self.assertEqual(self.woken, ["c2"])

    def test_notMovedIsNotWatchedAgain(self):
        """A socket whose call stays in the epoll after its wake is taken
        out (level-triggered: it would wake the reactor at once again)."""
        rtp, rtcp = self.pair()
        self.poller.watch("c1", [(rtp, rtcp)])
        send_to(rtp)
        self.poller.doRead()
        self.assertEqual(self.woken, ["c1"])
        self.assertEqual(self.ready(), [])
        self.poller.doRead()
        self.assertEqual(self.woken, ["c1"])
        self.assertEqual(len(self.poller), 1)  # (its RTCP socket)


class RealSocketTests(SynchronousTestCase):
    """The lazy pool's parked calls on real loopback sockets (no ``bind``
    given: park.Poller), its workers in memory."""

    pump = LazyTests.pump
    done = LazyTests.done
    offer_answer = LazyTests.offer_answer
    engine = LazyTests.engine

    def setUp(self):
        LazyTests.setUp(self)
        self.pool.stopService()
        self.pool = WorkerPool(self.reactor, {IP: (46100, 46199)}, 2, executable="python3",
                               lazy=True)
        self.pool.startService()
        self.pump()
        self.addCleanup(self.pool.stopService)

    def test_parkedInTheEpoll(self):
        """A parked call's four sockets are in the pool's epoll, the
        reactor reads only that; the delete closes them."""
        pa, pb = self.offer_answer()
        self.assertEqual(self.pool.parked(), {"c1"})
        poller = self.pool._watcher
        self.assertIsInstance(poller, park.Poller)
        self.assertEqual(len(poller), 4)
        self.assertIn(poller, self.reactor.getReaders())
        stats = self.done(self.pool.stats_release("c1"))
        self.assertEqual(sorted(stats["c1"]), [(IP, p) for p in sorted((pa, pa + 1, pb, pb + 1))])
        self.pool._unpark("c1", None)  # (what sync.after_reply does)
        self.assertEqual(self.pool.parked(), set())
        self.assertEqual(len(poller), 0)
        for port in (pa, pa + 1, pb, pb + 1):
            bind_media(IP, port).close()  # free again

    def test_handOffLeavesTheEpoll(self):
        """The first datagram hands the call over; its sockets leave the
        epoll before they go (the worker's copies keep them open: a
        datagram after the hand-off must not wake this process)."""
        for process in self.processes:
            # (SCM_RIGHTS's duplicates of real sockets: os.dup)
            process.send_sockets = lambda tag, socks, process=process: process.handed.append(
                (tag, [park._adopted(os.dup(sock.fileno())) for sock in socks]))
        pa, pb = self.offer_answer()
        poller = self.pool._watcher
        sock = self.pool._parked["c1"].pairs[(IP, pa)][0]
        send_to(sock, b"\x80" + b"\x00" * 11)
        poller.doRead()
        self.pump()
        self.assertEqual(self.pool.parked(), set())
        self.assertEqual(self.pool.park_counts["handed"], 1)
        self.assertEqual(len(poller), 0)
        self.assertIn("c1", self.engine(0)._calls)
        ready = select.epoll()
        self.addCleanup(ready.close)
        ready.register(poller.fileno(), select.EPOLLIN)
        send_to(self.engine(0).socket((IP, pb))._sock)
        self.assertEqual(ready.poll(0), [])


class LimitTests(SynchronousTestCase):
    """Parking stops at the pool's ``park_limit`` (this process's open
    files, less what it keeps for itself)."""

    setUp = LazyTests.setUp
    pump = LazyTests.pump
    done = LazyTests.done
    offer_answer = LazyTests.offer_answer
    media = LazyTests.media

    def test_parkLimit(self):
        self.pool.park_limit = 8
        self.offer_answer("c1")
        self.offer_answer("c2")
        [[pa, _pb]] = self.done(self.pool.allocate_configure("c3", [(IP, 2)], offer_entries()))
        self.assertEqual(self.pool.parked(), {"c1", "c2"})
        self.assertIn("c3", self.pool._routes)  # in its worker, as without parking
        self.done(self.pool.stats_release("c1"))
        self.assertEqual(self.pool._parked_sockets, 4)
        self.offer_answer("c4")
        self.assertEqual(self.pool.parked(), {"c2", "c4"})
        self.media(self.pool._parked["c4"].groups()[0][1][0], rtp(1), A)
        self.assertEqual(self.pool._parked_sockets, 4)

    def test_limitFollowsTheOpenFilesLimit(self):
        """Without a limit set, parking follows this process's open files
        limit (read again after ``set maxopenfiles``: open_files_changed),
        less twice SPARE; unlimited: no limit of its own."""
        from resource import RLIM_INFINITY

        from omnirtp.limits import SPARE
        from omnirtp.media import pool as pool_module

        self.pool._park_limit = None
        self.patch(pool_module, "soft_limit", lambda: 4096)
        self.assertEqual(self.pool.park_limit, 4096 - 2 * SPARE)
        self.patch(pool_module, "soft_limit", lambda: 100)
        self.assertEqual(self.pool.park_limit, 4096 - 2 * SPARE)  # (not read again)
        self.pool.open_files_changed()
        self.assertEqual(self.pool.park_limit, 0)
        self.patch(pool_module, "soft_limit", lambda: RLIM_INFINITY)
        self.pool.open_files_changed()
        self.assertEqual(self.pool.park_limit, park.MAX_PARKED)
        self.pool.lazy = False
        self.assertEqual(self.pool.park_limit, 0)

    def test_limitReadOnceAndAfterSetMaxOpenFiles(self):
        """The open files limit is read at the first park, not at every
        one, and again after ``set maxopenfiles``
        (Operations.set_open_files) changed it."""
        from omnirtp.config.model import Config
        from omnirtp.control.operations import Operations
        from omnirtp.limits import SPARE
        from omnirtp.logging import LogLevels
        from omnirtp.media import pool as pool_module
        from omnirtp.test.fakes import ControlStack

        limit = [4096]
        reads = []
        self.patch(pool_module, "soft_limit", lambda: reads.append(limit[0]) or limit[0])
        self.pool._park_limit = None
        self.offer_answer("c1")
        self.offer_answer("c2")
        self.assertEqual(self.pool.parked(), {"c1", "c2"})
        self.assertEqual(self.pool.park_limit, 4096 - 2 * SPARE)
        self.assertEqual(reads, [4096])

        class Resource:
            RLIMIT_NOFILE, RLIM_INFINITY = 7, -1

            def prlimit(self, pid, kind, limits):
                if pid == 0:
                    limit[0] = limits[0]

        ops = Operations(ControlStack().dispatch, Config(), LogLevels(6))
        ops.engine = self.pool
        ops.set_open_files(2 * SPARE + 4, resource=Resource())
        self.assertEqual(self.pool.park_limit, 4)
        self.assertEqual(reads, [4096, 2 * SPARE + 4])
        # room for the 4 sockets parked now, no more: the next call goes
        # to its worker at once
        self.done(self.pool.allocate_configure("c3", [(IP, 2)], offer_entries()))
        self.assertEqual(self.pool.parked(), {"c1", "c2"})
        self.assertIn("c3", self.pool._routes)
        self.assertEqual(len(reads), 2)


class PackTests(SynchronousTestCase):
    """A parked call keeps each entry as ``(keys, values)`` tuples: the
    same dict comes back, and calls share the keys' tuple."""

    def test_roundTrip(self):
        e = entry((IP, 40000), (IP, 40002), A, tos=184)
        packed = park.pack(e)
        back = park.unpack(packed)
        self.assertEqual(back, e)
        self.assertEqual(list(back), list(e))  # the same order
        self.assertIsNot(back, e)
        self.assertEqual(park.field(packed, "tos"), 184)
        self.assertIsNone(park.field(packed, "no such key"))

    def test_keysShared(self):
        one = park.pack(entry((IP, 40000), (IP, 40002), A))
        two = park.pack(entry((IP, 40004), (IP, 40006), B))
        self.assertIs(one[0], two[0])

    def test_keepWithoutACopy(self):
        """An entry with "reset" and "tos" (the negotiator's) is kept from
        its values (no copy of the dict): the same ``(keys, values)``, the
        keys' tuple the one :func:`park.pack` shares, the same tos carried
        over and the same reset times as an entry kept through a copy
        (one without "tos", or in another key order)."""
        def kept(entries_seq):
            call = park.ParkedCall("c", None)
            call.add(IP, 40000, object(), object(), T0)
            for at, entries in enumerate(entries_seq):
                keep(call, entries, T0 + at)
            return call
        shaped = entry((IP, 40000), (IP, 40002), A, tos=184)
        no_tos = dict(shaped)
        del no_tos["tos"]
        reordered = dict(reversed(list(shaped.items())))
        for first in (shaped, no_tos, reordered):
            for later in ({"tos": None, "reset": False}, {"tos": None, "reset": True},
                          {"tos": 46, "reset": False}):
                second = dict(shaped, **later)
                call = kept([[first], [second]])
                reference = park.pack({k: v for k, v in second.items() if k != "reset"})
                if first.get("tos") is not None and later["tos"] is None:
                    values = dict(zip(*reference))
                    values["tos"] = first["tos"]
                    reference = (reference[0], tuple(values.values()))
                self.assertEqual(call.entries[(IP, 40000)], reference)
                self.assertIs(call.entries[(IP, 40000)][0], reference[0])
                self.assertEqual(call.since[(IP, 40000)], T0 + 1 if later["reset"] else T0)
                self.assertEqual(call.since[(IP, 40001)], T0)
        # kept through a copy: the tos added after the other keys
        call = kept([[shaped], [no_tos]])
        self.assertEqual(list(call.entry((IP, 40000)))[-1], "tos")
        self.assertEqual(call.entry((IP, 40000))["tos"], 184)

    def test_keepAndDrop(self):
        """keep: a later entry without tos keeps the earlier tos; drop: the
        entries sending out of a dropped pair send nowhere."""
        call = park.ParkedCall("c", None)
        call.add(IP, 40000, object(), object(), T0)
        call.add(IP, 40002, object(), object(), T0)
        keep(call, [entry((IP, 40000), (IP, 40002), A, tos=184)], T0 + 1)
        keep(call, [entry((IP, 40000), (IP, 40002), A, reset=False)], T0 + 2)
        self.assertEqual(call.entry((IP, 40000))["tos"], 184)
        self.assertEqual(call.since[(IP, 40000)], T0 + 1)
        call.drop([(IP, 40002)])
        expected = entry((IP, 40000), None, A, tos=184)
        del expected["reset"]  # (applied when kept)
        self.assertEqual(call.entry_list(), [expected])


class CheckedTests(SynchronousTestCase):
    """park.checked (the tests of plain_keys and plain_values, above, in
    one pass by position) and ParkedCall.keep_checked (the placeholders filled and
    the entries kept without a dict copy)."""

    HELD = {(IP, 40000), (IP, 40001), (IP, 40002), (IP, 40003)}

    def variants(self):
        """Entries that are and are not plain for HELD, each alone."""
        rtp_entry = entry((IP, 40000), (IP, 40002), A)
        rtcp_entry = {k: v for k, v in entry((IP, 40001), (IP, 40003), None).items()
                      if k != "rtcp_peer"}
        out = [rtp_entry, rtcp_entry, dict(rtp_entry, rtcp_peer=(IP, 40003)),
               dict(reversed(list(rtp_entry.items()))), {"local": (IP, 40000)},
               dict(rtp_entry, learning="off"), dict(rtp_entry, tos=0), dict(rtp_entry, tos=255),
               dict(rtp_entry, endpoint=None)]
        plain = len(out)
        out += [[("local", (IP, 40000))], dict(rtp_entry, codec="PCMU"),
                dict(rtp_entry, ice={"ufrag": "x"}), dict(rtp_entry, dtls=True),
                dict(rtp_entry, srtp_in=b"k"), dict(rtp_entry, srtp_out=b"k"),
                dict(rtp_entry, local=(IP, 40004)), dict(rtp_entry, peer=(IP, 40004)),
                dict(rtp_entry, rtcp_peer=(IP, 40004)), dict(rtp_entry, endpoint=("x", "y")),
                dict(rtp_entry, endpoint=("x", 1, 2)), dict(rtp_entry, learning="sometimes"),
                dict(rtp_entry, tos=256), dict(rtp_entry, tos=-1), dict(rtp_entry, tos=True),
                dict(rtp_entry, tos="46"), {k: v for k, v in rtp_entry.items() if k != "local"}]
        return out, plain

    def test_sameAsPlainEntry(self):
        entries, plain = self.variants()
        for index, e in enumerate(entries):
            expected = index < plain
            self.assertEqual(plain_entry(e, self.HELD), expected, e)
            self.assertEqual(park.checked([e], self.HELD) is not None, expected, e)
        # all or nothing
        self.assertIsNone(park.checked(entries, self.HELD))
        self.assertEqual(len(park.checked(entries[:plain], self.HELD)), plain)

    def test_keepCheckedFillsPlaceholders(self):
        """A new call's entries with placeholder keys are kept as
        fill_ports + keep kept them."""
        from omnirtp.media.amp import fill_ports

        a, b = placeholder(0), placeholder(1)
        held = {(IP, a), (IP, a + 1), (IP, b), (IP, b + 1)}
        offer = offer_entries(tos=46)
        offer[1] = {k: v for k, v in offer[1].items() if k != "rtcp_peer"}  # an RTCP entry
        offer[2] = dict(offer[2], rtcp_peer=(IP, b + 1))
        del offer[3]["reset"]  # (kept through a dict)
        real = {(IP, a): (IP, 40000), (IP, a + 1): (IP, 40001),
                (IP, b): (IP, 40002), (IP, b + 1): (IP, 40003)}

        def call():
            c = park.ParkedCall("c", None)
            c.add(IP, 40000, object(), object(), T0)
            c.add(IP, 40002, object(), object(), T0)
            return c

        reference = call()
        keep(reference, fill_ports(offer, [40000, 40002]), T0 + 1)
        fused = call()
        fused.keep_checked(park.checked(offer, held), T0 + 1, real)
        self.assertEqual(fused.entries, reference.entries)
        self.assertEqual(fused.since, reference.since)
        self.assertEqual(list(fused.entries), list(reference.entries))
        self.assertEqual(fused.entry((IP, 40002))["rtcp_peer"], (IP, 40003))
        self.assertEqual(fused.since[(IP, 40000)], T0 + 1)
        self.assertEqual(fused.since[(IP, 40003)], T0)
        # the offer's dicts are left as they were
        self.assertEqual(offer[0]["local"], (IP, a))


class FastCheckedTests(SynchronousTestCase):
    """omnirtp.media._fastpark (make ext): checked in C gives what
    park._checked gives, or leaves the entries to it (None)."""

    HELD = CheckedTests.HELD
    variants = CheckedTests.variants

    def setUp(self):
        from omnirtp.media import _fastpark  # (built by make ext: required)

        self.fast = _fastpark.checked
        self.assertIs(park._fastpark, _fastpark)

    def same(self, entries, held):
        expected = park._checked(entries, held)  # (makes the forms)
        got = self.fast(entries, held)
        if expected is None:
            self.assertIs(got, False, entries)
            return
        self.assertEqual(len(got), len(expected))
        for (form, values), (form_py, values_py) in zip(got, expected):
            self.assertIs(form, form_py)
            self.assertIs(type(values), list)
            self.assertEqual(values, values_py)
            for a, b in zip(values, values_py):
                self.assertIs(a, b)

    def test_sameAsPython(self):
        entries, plain = self.variants()
        for e in entries:
            self.same([e], self.HELD)
        self.same(entries[:plain], self.HELD)
        self.same(entries, self.HELD)
        self.same([], self.HELD)
        self.same(offer_entries(), {(IP, placeholder(0)), (IP, placeholder(0) + 1),
                                    (IP, placeholder(1)), (IP, placeholder(1) + 1)})
        self.assertIsInstance(park.checked(entries[:plain], self.HELD), list)
        self.assertIsNone(park.checked(entries, self.HELD))

    def test_notMine(self):
        """What it leaves to park._checked: a new key tuple, another type
        of list or set, a key that is not an exact str, an error (which
        park.checked then raises as _checked does)."""
        e = dict(entry((IP, 40000), (IP, 40002), A), strict=True)
        fresh = dict(reversed(list(dict(e, handover=True).items())))
        park._FORMS.pop(tuple(fresh), None)
        self.assertIsNone(self.fast([fresh], self.HELD))
        self.assertEqual(len(park.checked([fresh], self.HELD)), 1)  # (its form made)
        self.assertEqual(len(self.fast([fresh], self.HELD)), 1)
        self.assertIsNone(self.fast((e,), self.HELD))
        self.assertIsNone(self.fast([e], frozenset(self.HELD)))

        class Key(str):
            pass

        odd = {Key(k) if k == "local" else k: v for k, v in e.items()}
        self.assertIsNone(self.fast([odd], self.HELD))
        unhashable = dict(e, local=[IP, 40000])
        self.assertIsNone(self.fast([unhashable], self.HELD))
        self.assertRaises(TypeError, park.checked, [unhashable], self.HELD)
        # (a tos that fails comes after the local in checked's order: the
        # unhashable local's error is met first, as in _checked)
        self.assertRaises(TypeError, park.checked, [dict(unhashable, tos=300)], self.HELD)

    def test_noLeak(self):
        from omnirtp.test.test_fasttree import assert_no_leak

        entries, plain = self.variants()
        good = entries[:plain]
        park._checked(good, self.HELD)
        assert_no_leak(self, [self.HELD] + good + list(park._FORMS.values()),
                       lambda: (self.fast(good, self.HELD), self.fast(entries, self.HELD),
                                self.fast([dict(good[0], local=[1])], self.HELD)),
                       100, 2000)


class WatchRefusedTests(SynchronousTestCase):
    """A parked call's sockets that cannot be watched (the kernel's epoll
    watch limit): nothing of the call stays here, it goes to a worker."""

    setUp = RealSocketTests.setUp
    pump = LazyTests.pump
    done = LazyTests.done
    requests = LazyTests.requests

    def test_watchRefused(self):
        self.done(self.pool.allocate_configure("c0", [(IP, 2)], offer_entries()))
        poller = self.pool._watcher
        self.assertIsInstance(poller, park.Poller)
        real_register = poller._register
        calls = []

        def register(fd, events):
            calls.append(fd)
            if len(calls) == 3:
                raise OSError(28, "No space left on device")
            real_register(fd, events)

        poller._register = register
        before = self.requests()
        [[pa, pb]] = self.done(self.pool.allocate_configure("c1", [(IP, 2)], offer_entries()))
        self.assertEqual(self.pool.parked(), {"c0"})
        self.assertEqual(len(poller), 4)  # (c0's)
        self.assertNotEqual(self.requests(), before)  # a worker took it
        self.assertEqual(self.pool._parked_sockets, 4)
        self.assertEqual(len(calls), 3)
        # the pairs it bound here were closed and their ports given back
        self.assertEqual(sum(s.park_pools[IP].used for s in self.pool.slots
                             if IP in s.park_pools), 4)  # (c0's two pairs)
