"""CallRegistry: max-sessions, deletion marks and the timeout sweep."""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from omnirtp.call.model import Interface, Media, Monologue
from omnirtp.call.registry import CallRegistry, Timeouts
from omnirtp.errors import LoadLimit, PortsExhausted
from omnirtp.interfaces import IMediaEngine


@implementer(IMediaEngine)
class CountingEngine:
    """An in-memory IMediaEngine: hands out ports, records what it was told.

    ``last_packet`` per call can be set by a test to simulate media.
    """

    def __init__(self, clock, pairs=100, base=30000):
        self.clock = clock
        self.free = [base + 2 * i for i in range(pairs)]
        self.held = {}
        self.configured = {}
        self.last_packet = {}
        #: what only a call's own stats show (counters read on demand, as
        #: the kernel's are with table = N), and the calls asked for alone
        self.own_last_packet = {}
        self.asked = []
        #: packets per socket of a call (its counters), by call
        self.packets = {}
        #: how often all calls' stats were asked for (stats(None))
        self.asked_all = 0
        #: more counters of a socket, by its key (``ssrc``, ``payload
        #: types``: what a socket that received media shows)
        self.extra = {}

    def allocate(self, call_id, address, count):
        if count > len(self.free):
            return defer.fail(PortsExhausted())
        ports, self.free = self.free[:count], self.free[count:]
        self.held.setdefault(call_id, []).extend((address, p) for p in ports)
        return defer.succeed(ports)

    def claim(self, call_id, address, ports):
        if any(p not in self.free for p in ports):
            return defer.fail(PortsExhausted())
        self.free = [p for p in self.free if p not in ports]
        self.held.setdefault(call_id, []).extend((address, p) for p in ports)
        return defer.succeed(list(ports))

    def configure(self, call_id, sockets):
        for s in sockets:
            self.configured[s["local"]] = s
        return defer.succeed(None)

    def release(self, call_id, sockets=None):
        held = self.held.get(call_id, [])
        gone = list(held) if sockets is None else [k for k in held if k in sockets]
        for key in gone:
            held.remove(key)
            self.free.append(key[1])
            self.configured.pop(key, None)
            self.configured.pop((key[0], key[1] + 1), None)
        if not held:
            self.held.pop(call_id, None)
        return defer.succeed(None)

    def stats(self, call_id=None):
        ids = [call_id] if call_id is not None else list(self.held)
        if call_id is not None:
            self.asked.append(call_id)
        else:
            self.asked_all += 1
        out = {}
        for cid in ids:
            last = self.last_packet.get(cid, 0.0)
            if call_id is not None:
                last = max(last, self.own_last_packet.get(cid, 0.0))
            out[cid] = {}
            for addr, port in self.held.get(cid, []):
                for key in ((addr, port), (addr, port + 1)):
                    out[cid][key] = {"packets": self.packets.get(cid, 0), "bytes": 0, "errors": 0,
                                     "last_packet": last, "endpoint": None,
                                     "confirmed": False}
                    out[cid][key].update(self.extra.get(key, {}))
        return defer.succeed(out)

    def totals(self):
        return defer.succeed({"packets": 0, "bytes": 0, "errors": 0, "junk": 0,
                              "ports_used": 2 * sum(map(len, self.held.values())),
                              "ports_free": 2 * len(self.free)})


def answered_call(registry, engine, call_id, direction="sendrecv"):
    """A call with two monologues, one medium each, ports held, answered."""
    call = registry.create(call_id)
    iface = Interface("default", "127.0.0.1")
    for tag in ("a", "b"):
        ml = Monologue(tag, registry.clock.seconds())
        m = Media(1, "audio", iface)
        m.rtp_port = engine.allocate(call_id, "127.0.0.1", 1).result[0]
        m.direction = direction
        ml.medias.append(m)
        call.monologues.append(ml)
    call.monologues[0].peer, call.monologues[1].peer = call.monologues[1], call.monologues[0]
    call.answered = True
    return call


class LastPacketsEngine(CountingEngine):
    """A CountingEngine that also answers ``last_packets`` (as the embedded
    engine and the worker pool do): each call's newest packet time."""

    #: how often every call's newest packet was asked for
    asked_last = 0

    def last_packets(self):
        self.asked_last += 1
        return defer.succeed({cid: self.last_packet.get(cid, 0.0) for cid in self.held})


class RegistryTests(SynchronousTestCase):
    engine_class = CountingEngine

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.engine = self.engine_class(self.clock)
        self.registry = CallRegistry(
            self.engine, self.clock,
            Timeouts(timeout=2, silent_timeout=6, offer_timeout=10, final_timeout=0),
            max_sessions=2)

    def assertSweptAfter(self, call_id, seconds, reason):
        """A sweep now keeps ``call_id``; one ``seconds`` later ends it for
        ``reason``."""
        self.registry.sweep()
        self.assertIn(call_id, self.registry.calls)
        self.clock.advance(seconds)
        self.registry.sweep()
        self.assertNotIn(call_id, self.registry.calls)
        self.assertEqual(self.registry.closed[reason], 1)

    def test_engineFake(self):
        """The test double honours the interface it stands in for."""
        verifyObject(IMediaEngine, self.engine)

    def test_destroyWithStats(self):
        """The call's last counters, read before its ports go (the engine's
        stats, then its release)."""
        call = answered_call(self.registry, self.engine, "c1")
        stats = self.successResultOf(self.registry.destroy(call, "terminated", stats=True))
        self.assertEqual(sorted(stats["c1"]), [("127.0.0.1", 30000), ("127.0.0.1", 30001),
                                               ("127.0.0.1", 30002), ("127.0.0.1", 30003)])
        self.assertEqual(self.engine.held, {})
        self.assertEqual(self.registry.closed["terminated"], 1)
        self.assertEqual(
            self.successResultOf(self.registry.destroy(call, "terminated", stats=True)), {})

    def test_destroyWithStatsWaitsForTheRelease(self):
        """An engine whose release is pending: the counters come after it."""
        released = defer.Deferred()
        self.engine.release = lambda call_id, sockets=None: released
        call = answered_call(self.registry, self.engine, "c1")
        d = self.registry.destroy(call, "terminated", stats=True)
        self.assertNoResult(d)
        released.callback(None)
        self.assertEqual(len(self.successResultOf(d)["c1"]), 4)

    def test_destroyWithStatsInOneEngineCall(self):
        """An engine with stats_release (a worker pool) gets one call."""
        told = []
        self.engine.stats_release = lambda call_id: told.append(call_id) or defer.succeed(
            {call_id: {}})
        call = answered_call(self.registry, self.engine, "c1")
        d = self.registry.destroy(call, "terminated", stats=True)
        self.assertEqual(self.successResultOf(d), {"c1": {}})
        self.assertEqual(told, ["c1"])
        self.assertEqual(len(self.engine.held["c1"]), 2)  # the fake's own release: not called
        self.assertNotIn("c1", self.registry.calls)

    def test_destroyReleasesAfterTheReply(self):
        """Inside an ng datagram (sync.after_reply) the release waits for
        the reply, unless the call has a recording, which it finishes."""
        from omnirtp import sync
        engine = self.engine
        engine.stats_now = lambda call_id: self.successResultOf(engine.stats(call_id))
        released = []

        def release_now(call_id, sockets=None):
            released.append(call_id)
            self.successResultOf(engine.release(call_id, sockets))
        engine.release_now = release_now
        recorded = {"c2"}
        engine.recording = recorded.__contains__
        self.addCleanup(setattr, sync, "after_reply_work", None)
        work = sync.after_reply_work = []
        for call_id in ("c1", "c2"):
            call = answered_call(self.registry, engine, call_id)
            self.assertEqual(len(self.registry.destroy(call, "terminated", stats=True)[call_id]), 4)
        self.assertEqual(released, ["c2"])
        self.assertEqual(list(engine.held), ["c1"])
        sync.after_reply_work = None
        for function, args in work:
            function(*args)
        self.assertEqual(released, ["c2", "c1"])
        self.assertEqual(engine.held, {})

    def test_destroyWithStatsAtOnce(self):
        """An engine that answers at once (stats_now and release_now, the
        embedded one): the counters themselves, read before the release;
        a failing release is logged as a failed Deferred's was."""
        calls = []
        engine = self.engine

        def stats_now(call_id):
            calls.append("stats")
            return self.successResultOf(engine.stats(call_id))

        def release_now(call_id, sockets=None):
            calls.append("release")
            self.successResultOf(engine.release(call_id, sockets))
        engine.stats_now, engine.release_now = stats_now, release_now
        engine.recording = lambda call_id: False
        call = answered_call(self.registry, engine, "c1")
        stats = self.registry.destroy(call, "terminated", stats=True)
        self.assertEqual(sorted(stats["c1"]), [("127.0.0.1", 30000), ("127.0.0.1", 30001),
                                               ("127.0.0.1", 30002), ("127.0.0.1", 30003)])
        self.assertEqual(calls, ["stats", "release"])
        self.assertEqual(engine.held, {})
        self.assertEqual(self.registry.closed["terminated"], 1)
        logged = []
        self.registry.log = type(self.registry.log)(observer=logged.append)

        def refuse(call_id, sockets=None):
            raise RuntimeError("gone")
        engine.release_now = refuse
        call = answered_call(self.registry, engine, "c2")
        self.assertEqual(len(self.registry.destroy(call, "terminated", stats=True)["c2"]), 4)
        [event] = [e for e in logged if "log_failure" in e]
        self.assertEqual(event["log_format"], "releasing {call_id}")
        self.assertEqual(event["call_id"], "c2")
        self.assertIsInstance(event["log_failure"].value, RuntimeError)

    def test_maxSessions(self):
        """A new call beyond max-sessions raises LoadLimit and is counted."""
        self.registry.create("c1")
        self.registry.create("c2")
        self.assertRaises(LoadLimit, self.registry.create, "c3")
        self.assertEqual(self.registry.rejected, 1)
        self.assertEqual(sorted(self.registry.calls), ["c1", "c2"])

    def test_maxSessionsOff(self):
        """-1 disables the limit."""
        self.registry.max_sessions = -1
        for i in range(10):
            self.registry.create("c%d" % i)
        self.assertEqual(len(self.registry.calls), 10)

    def test_timeoutRemovesAnsweredCall(self):
        """An answered call without media goes after `timeout` seconds."""
        answered_call(self.registry, self.engine, "c1")
        self.engine.last_packet["c1"] = self.clock.seconds()
        self.registry.sweep()
        self.assertIn("c1", self.registry.calls)
        self.clock.advance(2)
        self.registry.sweep()
        self.assertNotIn("c1", self.registry.calls)
        self.assertEqual(self.registry.closed["timeout"], 1)
        self.assertNotIn("c1", self.engine.held)

    def test_idleCallReadAlone(self):
        """A call that may be due (quiet for ``timeout`` as far as the
        sweep saw) is asked for by itself, its counters read now (the
        kernel's with table = N): its own stats keep it, and the media
        they show spare it the next sweeps' questions; a call within its
        timeouts costs the engine nothing."""
        answered_call(self.registry, self.engine, "c1")
        answered_call(self.registry, self.engine, "c2")
        self.clock.advance(1)
        self.registry.sweep()
        self.assertEqual((self.engine.asked, self.engine.asked_all), ([], 0))
        self.clock.advance(1)
        self.engine.own_last_packet["c1"] = self.clock.seconds() - 0.5
        self.engine.own_last_packet["c2"] = self.clock.seconds()
        self.registry.sweep()
        self.assertEqual(self.engine.asked, ["c1", "c2"])
        self.assertEqual(sorted(self.registry.calls), ["c1", "c2"])
        self.clock.advance(1.5)  # c1 quiet for 2 s, c2 for 1.5 s: not asked
        self.registry.sweep()
        self.assertEqual(self.engine.asked, ["c1", "c2", "c1"])
        self.assertEqual(sorted(self.registry.calls), ["c2"])
        self.assertEqual(self.registry.closed["timeout"], 1)
        self.assertEqual(self.engine.asked_all, 0)

    #: the requests for all calls that one bulk sweep makes:
    #: (``stats(None)``, ``last_packets()``)
    bulk_requests = (1, 0)

    def test_manyDueCallsReadTogether(self):
        """More calls that may be due than ``BULK``: one request for all
        calls (their stats, or their newest packets where the engine tells
        them), then a call's own only where that says it timed out."""
        self.registry.max_sessions = -1
        self.registry.BULK = 2
        for cid in ("c1", "c2", "c3"):
            answered_call(self.registry, self.engine, cid)
        self.clock.advance(2)
        self.engine.last_packet["c2"] = self.clock.seconds()
        self.engine.own_last_packet["c3"] = self.clock.seconds()
        self.registry.sweep()
        bulk = (self.engine.asked_all, getattr(self.engine, "asked_last", 0))
        self.assertEqual(bulk, self.bulk_requests)
        self.assertEqual(self.engine.asked, ["c1", "c3"])
        self.assertEqual(sorted(self.registry.calls), ["c2", "c3"])
        self.clock.advance(1)  # both seen with media a second ago: nothing to ask
        self.registry.sweep()
        self.assertEqual((self.engine.asked_all, getattr(self.engine, "asked_last", 0)), bulk)
        self.assertEqual(self.engine.asked, ["c1", "c3"])

    def test_adoptedMarkIsSwept(self):
        """A call restored with a deletion mark (adopt) goes when it is due."""
        from omnirtp.call.model import Call
        call = Call("r1", self.clock.seconds())
        call.deletion_at = self.clock.seconds() + 1
        self.registry.adopt(call)
        self.assertSweptAfter("r1", 1, "terminated")

    def test_cancelledMarkIsForgotten(self):
        """Marks that signalling cleared (an offer or answer after a delayed
        delete) are dropped from the sweep's marked calls, the call stays."""
        call = answered_call(self.registry, self.engine, "c1")
        self.engine.own_last_packet["c1"] = 10 ** 9  # media: never idle here
        self.registry.schedule_deletion(call, 1, monologues=call.monologues[:1])
        call.monologues[0].deletion_at = None
        self.clock.advance(1)
        self.registry.sweep()
        self.assertIn("c1", self.registry.calls)
        self.assertEqual(self.registry._marked, set())

    def test_quietCallsAreNotAsked(self):
        """Thousands of calls within their timeouts: a sweep asks the engine
        for nothing (no counters of every socket each second)."""
        self.registry.max_sessions = -1
        self.engine.free = [30000 + 2 * i for i in range(4000)]
        for n in range(1000):
            answered_call(self.registry, self.engine, "c%d" % n)
        for _ in range(3):
            self.clock.advance(0.5)
            self.registry.sweep()
        self.assertEqual((self.engine.asked_all, self.engine.asked), (0, []))
        self.assertEqual(len(self.registry.calls), 1000)

    def test_mediaKeepsCallAlive(self):
        """Packets within the window keep the call."""
        answered_call(self.registry, self.engine, "c1")
        for _ in range(5):
            self.clock.advance(1.5)
            self.engine.last_packet["c1"] = self.clock.seconds()
            self.registry.sweep()
        self.assertIn("c1", self.registry.calls)

    def test_heldCallUsesSilentTimeout(self):
        """A call on hold survives `timeout` and goes after `silent-timeout`."""
        answered_call(self.registry, self.engine, "c1", direction="sendonly")
        self.clock.advance(3)
        self.assertSweptAfter("c1", 3, "silent_timeout")

    def test_offerOnlyUsesOfferTimeout(self):
        """An unanswered call lives until `offer-timeout`."""
        call = answered_call(self.registry, self.engine, "c1")
        call.answered = False
        self.clock.advance(9)
        self.registry.sweep()
        self.assertIn("c1", self.registry.calls)
        self.clock.advance(1)
        self.registry.sweep()
        self.assertEqual(self.registry.closed["offer_timeout"], 1)

    def test_finalTimeout(self):
        """final-timeout ends a call however busy it is."""
        self.registry.timeouts.final_timeout = 5
        answered_call(self.registry, self.engine, "c1")
        for _ in range(5):
            self.clock.advance(1)
            self.engine.last_packet["c1"] = self.clock.seconds()
            self.registry.sweep()
        self.assertNotIn("c1", self.registry.calls)
        self.assertEqual(self.registry.closed["final_timeout"], 1)

    def test_deleteDelay(self):
        """A scheduled deletion happens when its delay has passed."""
        call = answered_call(self.registry, self.engine, "c1")
        self.registry.schedule_deletion(call, 1.5)
        self.engine.last_packet["c1"] = self.clock.seconds()
        self.clock.advance(1)
        self.registry.sweep()
        self.assertIn("c1", self.registry.calls)
        self.clock.advance(1)
        self.registry.sweep()
        self.assertNotIn("c1", self.registry.calls)
        self.assertEqual(self.registry.closed["terminated"], 1)

    def test_endedCallsCounted(self):
        """The counters of a call the sweep ends (a deletion due, a
        timeout) go into the totals."""
        call = answered_call(self.registry, self.engine, "c1")
        answered_call(self.registry, self.engine, "c2")
        self.engine.packets.update(c1=5, c2=7)
        self.registry.schedule_deletion(call, 0.5)
        self.engine.last_packet["c2"] = self.clock.seconds()
        self.clock.advance(1)
        self.registry.sweep()
        self.assertEqual(sorted(self.registry.calls), ["c2"])
        self.assertEqual(self.registry.relayed["packets"], 4 * 5)
        self.clock.advance(2)
        self.registry.sweep()
        self.assertEqual(self.registry.calls, {})
        self.assertEqual(self.registry.relayed["packets"], 4 * 5 + 4 * 7)
        self.assertEqual(self.registry.closed["timeout"], 1)

    def forked_call(self, call_id):
        """A caller ``a`` whose offer forked to ``b1`` and ``b2``; ``b2``
        answered last (``a`` talks to ``b2``)."""
        call = answered_call(self.registry, self.engine, call_id)
        caller, b1 = call.monologues
        b2 = Monologue("b2", self.clock.seconds())
        m = Media(1, "audio", Interface("default", "127.0.0.1"))
        m.rtp_port = self.engine.allocate(call_id, "127.0.0.1", 1).result[0]
        b2.medias.append(m)
        call.monologues.append(b2)
        caller.peer, b2.peer = b2, caller
        return call, caller, b1, b2

    def test_delayedBranchDeletion(self):
        """A branch scheduled for deletion relays until its delay has passed,
        then only its ports go; the call and the other branch stay."""
        call, caller, b1, b2 = self.forked_call("c1")
        self.registry.schedule_deletion(call, 1.5, [b1])
        self.engine.last_packet["c1"] = self.clock.seconds()
        self.clock.advance(1)
        self.registry.sweep()
        self.assertEqual(call.monologues, [caller, b1, b2])
        self.clock.advance(1)
        self.engine.last_packet["c1"] = self.clock.seconds()
        self.registry.sweep()
        self.assertEqual(call.monologues, [caller, b2])
        self.assertEqual(self.engine.held["c1"],
                         [("127.0.0.1", m.rtp_port) for m in caller.medias + b2.medias])
        self.assertEqual(self.registry.closed["terminated"], 0)

    def test_delayedDeletionOfLastAssociation(self):
        """When the monologues scheduled for deletion leave no association,
        the whole call goes, counted as terminated; whoever talked to a
        removed monologue is pointed at one that remains."""
        call, caller, b1, b2 = self.forked_call("c1")
        self.registry.schedule_deletion(call, 1, [b2])
        self.clock.advance(1)
        self.engine.last_packet["c1"] = self.clock.seconds()
        self.registry.sweep()
        self.assertEqual((call.monologues, caller.peer), ([caller, b1], b1))
        self.registry.schedule_deletion(call, 1, [caller, b1])
        self.clock.advance(1)
        self.engine.last_packet["c1"] = self.clock.seconds()
        self.registry.sweep()
        self.assertNotIn("c1", self.registry.calls)
        self.assertNotIn("c1", self.engine.held)
        self.assertEqual(self.registry.closed["terminated"], 1)

    def test_loopingSweep(self):
        """start() sweeps once a second on the injected clock."""
        answered_call(self.registry, self.engine, "c1")
        self.registry.start()
        self.addCleanup(self.registry.stop)
        self.clock.advance(1)
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertNotIn("c1", self.registry.calls)

    def test_callsLost(self):
        """Calls a dead worker held are dropped and counted."""
        answered_call(self.registry, self.engine, "c1")
        answered_call(self.registry, self.engine, "c2")
        self.registry.calls_lost(["c1", "nope"])
        self.assertEqual(list(self.registry.calls), ["c2"])
        self.assertEqual(self.registry.closed["worker_lost"], 1)


class LastPacketsRegistryTests(RegistryTests):
    """The same with an engine that has ``last_packets``: the sweep asks
    it, not every socket's counters (``stats(None)``), unless a state
    store keeps the DTLS keys those counters carry."""
    engine_class = LastPacketsEngine
    bulk_requests = (0, 1)

    def test_allCallsCountersNotRead(self):
        answered_call(self.registry, self.engine, "c1")
        self.engine.last_packet["c1"] = self.clock.seconds()
        for _ in range(3):
            self.clock.advance(1)
            self.registry.sweep()
        self.assertEqual(self.registry.closed["timeout"], 1)
        self.assertEqual(self.engine.asked_all, 0)
        self.assertEqual(self.engine.asked, ["c1"])

    def test_withStoreSrtpCallsCountersRead(self):
        """With a state store, a call with SRTP is looked at every sweep
        (its counters carry the DTLS keys and the SRTP indexes to keep),
        a plain call with media is not."""
        self.registry.store = object()  # nothing to keep in these counters
        self.patch(self.registry, "persist", lambda call_id: None)
        self.registry.max_sessions = -1
        srtp = answered_call(self.registry, self.engine, "s1")
        srtp.monologues[0].medias[0].crypto_local = object()
        answered_call(self.registry, self.engine, "p1")
        for cid in ("s1", "p1"):
            self.engine.last_packet[cid] = self.clock.seconds()
        self.clock.advance(1)
        self.registry.sweep()
        self.assertEqual((self.engine.asked_all, self.engine.asked), (0, ["s1"]))
        self.clock.advance(0.5)
        self.registry.sweep()
        self.assertEqual(self.engine.asked, ["s1", "s1"])


class RunLockedNowTests(SynchronousTestCase):
    """run_locked_now: synchronous while nothing of the call is pending."""

    def setUp(self):
        clock = Clock()
        self.registry = CallRegistry(CountingEngine(clock), clock, Timeouts())

    def test_plain_result_and_no_lock_left(self):
        self.assertEqual(self.registry.run_locked_now("c", lambda x: x + 1, 1), 2)
        self.assertEqual(self.registry._locks, {})

    def test_exception_raised_and_no_lock_left(self):
        def fails():
            raise LoadLimit()
        self.assertRaises(LoadLimit, self.registry.run_locked_now, "c", fails)
        self.assertEqual(self.registry._locks, {})

    def test_pending_holds_the_lock_for_later_signalling(self):
        first = defer.Deferred()
        order = []
        d1 = self.registry.run_locked_now("c", lambda: first)
        d2 = self.registry.run_locked_now("c", lambda: order.append("second") or "two")
        d3 = self.registry.run_locked_now("other", lambda: "elsewhere")
        self.assertEqual(d3, "elsewhere")
        self.assertEqual(order, [])
        self.assertNoResult(d2)
        first.callback("one")
        self.assertEqual(self.successResultOf(d1), "one")
        self.assertEqual(self.successResultOf(d2), "two")
        self.assertEqual(order, ["second"])
        self.assertEqual(self.registry._locks, {})
        self.assertEqual(self.registry.run_locked_now("c", lambda: 3), 3)


class ReleaseFailureTests(SynchronousTestCase):
    """A release that fails is logged (and handled), whether its Deferred
    failed before destroy() looked at it or later; one that succeeded
    has nothing added to it."""

    def setUp(self):
        self.clock = Clock()
        self.engine = CountingEngine(self.clock)
        self.registry = CallRegistry(self.engine, self.clock)
        self.logged = []
        self.registry.log = type(self.registry.log)(observer=self.logged.append)

    def destroy(self, released):
        self.engine.release = lambda call_id, sockets=None: released
        call = answered_call(self.registry, self.engine, "c1")
        return self.registry.destroy(call, "terminated")

    def failures(self):
        return [e for e in self.logged if "log_failure" in e]

    def test_failedAlready(self):
        d = self.destroy(defer.fail(RuntimeError("gone")))
        [event] = self.failures()
        self.assertEqual(event["log_format"], "releasing {call_id}")
        self.assertEqual(event["call_id"], "c1")
        self.assertIsNone(self.successResultOf(d))

    def test_failsLater(self):
        released = defer.Deferred()
        d = self.destroy(released)
        self.assertEqual(self.failures(), [])
        released.errback(RuntimeError("gone"))
        [event] = self.failures()
        self.assertEqual(event["call_id"], "c1")
        self.assertIsNone(self.successResultOf(d))

    def test_succeeded(self):
        released = defer.succeed(None)
        d = self.destroy(released)
        self.assertIs(d, released)
        self.assertEqual(self.failures(), [])
        self.assertIsNone(self.successResultOf(d))
