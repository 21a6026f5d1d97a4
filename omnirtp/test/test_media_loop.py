"""``MediaPoller.run``: a media worker's main loop, which waits on the
poller's epoll (the reactor's epoll inside it) instead of the reactor's,
and ``omnirtp.media.worker.use_media_loop``, which installs it.

Each test runs a reactor of its own (a new ``EPollReactor``, not trial's)
to its end, with real sockets on 127.0.0.1 and a deadline that stops it."""

import os

from twisted.internet.epollreactor import EPollReactor
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.relay import MediaPoller, bind_udp
from omnirtp.media.worker import COALESCE_VARIABLE, LOOP_VARIABLE, use_media_loop
from omnirtp.test.realrelays import RealRelays

HOST = "127.0.0.1"


def rtp(seq):
    return bytes([0x80, 0, 0, seq]) + bytes(8) + b"payload"


class PipeReader:
    """A reader on the reactor itself (as AMP's pipe is in a worker)."""

    def __init__(self, fd, got):
        self.fd, self.got = fd, got

    def fileno(self):
        return self.fd

    def logPrefix(self):
        return "PipeReader"

    def doRead(self):
        self.got.append(os.read(self.fd, 100))

    def connectionLost(self, reason):
        pass


class RunTests(RealRelays, SynchronousTestCase):
    #: MediaPoller.run's coalescing delay (seconds)
    coalesce = 0.0

    def setUp(self):
        self.reactor = EPollReactor()
        self.poller = MediaPoller(self.reactor)
        self.addCleanup(self.poller.close)
        self.reactor.mainLoop = lambda: self.poller.run(self.reactor, self.coalesce)
        # a test that fails must not hang: stop after 10 s whatever happens
        self.reactor.callLater(10, self.reactor.stop)

    def run_reactor(self):
        self.reactor.run(installSignalHandlers=False)

    def test_relaysTimersAndReactorReaders(self):
        """In the loop, datagrams are relayed both ways (the first by the
        socket's handler, the next ones inline from the companions), timed
        calls run, a reader on the reactor is served, and ``stop`` ends
        it; the poller's epoll never becomes a reader of the reactor."""
        party_a, party_b = self.party(), self.party()
        a, b = self.pair(party_a, party_b)
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        piped = []
        self.reactor.addReader(PipeReader(r, piped))
        party_a.settimeout(5)
        party_b.settimeout(5)
        got = []
        timed = []
        # the parties act from timed calls, one step each: the relaying
        # happens in between, when the loop waits on the poller's epoll
        steps = []
        for seq in range(3):
            steps.append(lambda seq=seq: party_a.sendto(rtp(seq), a.local))
            steps.append(lambda: got.append(party_b.recv(100)))
            steps.append(lambda seq=seq: party_b.sendto(rtp(seq), b.local))
            steps.append(lambda: got.append(party_a.recv(100)))

        def step():
            if steps:
                steps.pop(0)()
                self.reactor.callLater(0.01, step)
            else:
                timed.append(True)
                os.write(w, b"amp")
                self.reactor.callLater(0.05, self.reactor.stop)

        self.reactor.callLater(0.01, step)
        self.run_reactor()
        self.assertEqual(got, [rtp(0), rtp(0), rtp(1), rtp(1), rtp(2), rtp(2)])
        self.assertEqual((a.packets, b.packets), (3, 3))
        self.assertEqual(timed, [True])
        self.assertEqual(piped, [b"amp"])
        self.assertFalse(self.poller.reading)
        self.assertNotIn(self.poller, self.reactor.getReaders())
        # the companions carried the later datagrams (the inline path)
        self.assertIsNotNone(a._companion)
        self.assertIsNotNone(b._companion)

    def test_closedPollerHandsOverToTheReactor(self):
        """Once the poller is closed (the engine stopped) the reactor's own
        loop runs: timed calls still fire and ``stop`` still ends it."""
        fired = []

        def later():
            fired.append(True)
            self.reactor.stop()

        def close():
            self.poller.close()
            self.reactor.callLater(0.02, later)

        self.reactor.callLater(0.01, close)
        self.run_reactor()
        self.assertEqual(fired, [True])

    def test_errorsAreLoggedAndTheLoopGoesOn(self):
        """A handler that raises is logged, as the reactor's loop logs
        errors, and the loop goes on."""
        party = self.party()
        sock = bind_udp(HOST, 0)
        self.addCleanup(sock.close)
        calls = []

        def broken(now):
            calls.append(now)
            sock.recv(100)
            raise ZeroDivisionError("handler")

        self.poller.add(sock.fileno(), broken)
        self.reactor.callLater(0.01, party.sendto, b"x", sock.getsockname())
        self.reactor.callLater(0.2, self.reactor.stop)
        self.run_reactor()
        self.assertEqual(len(calls), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


    def test_timersRunOnlyWhenDue(self):
        """A wake-up for datagrams does not run the reactor's timers when
        none is due: ``runUntilCurrent`` runs for the timed calls, not once
        per wake-up.  Each datagram is sent only when the one before it was
        relayed, so each needs a wake-up of its own."""
        party_a, party_b = self.party(), self.party()
        a, _ = self.pair(party_a, party_b)
        party_b.settimeout(5)
        runs = []
        real = self.reactor.runUntilCurrent

        def counted():
            runs.append(True)
            real()

        self.reactor.runUntilCurrent = counted
        got = []

        def sender():
            for seq in range(30):
                party_a.sendto(rtp(seq), a.local)
                got.append(party_b.recv(100))
            self.reactor.callFromThread(self.reactor.stop)

        self.reactor.callLater(0.01, self.reactor.callInThread, sender)
        self.run_reactor()
        self.reactor.getThreadPool().stop()
        self.assertEqual(got, [rtp(seq) for seq in range(30)])
        self.assertLess(len(runs), 15)

    def test_timerMovedSoonerFromAHandler(self):
        """A timed call moved sooner by a socket's handler (not by a timed
        call) runs at its new time: the loop reads the timers' heap on
        every wake-up, it does not keep an old deadline."""
        party = self.party()
        sock = bind_udp(HOST, 0)
        self.addCleanup(sock.close)
        fired = []
        late = self.reactor.callLater(5, fired.append, "late")

        def handler(now):
            sock.recv(100)
            late.reset(0.01)

        def check():
            fired.append("check")
            self.reactor.stop()

        self.poller.add(sock.fileno(), handler)
        self.reactor.callLater(0.01, party.sendto, b"x", sock.getsockname())
        self.reactor.callLater(1, check)
        self.run_reactor()
        self.assertEqual(fired, ["late", "check"])

    def test_callFromThreadRuns(self):
        """A call from another thread runs while the loop waits for media
        (the reactor's waker is in the reactor's epoll, inside the
        poller's)."""
        done = []

        def from_thread():
            done.append(True)
            self.reactor.stop()

        self.reactor.callLater(0.01, self.reactor.callInThread,
                               self.reactor.callFromThread, from_thread)
        self.run_reactor()
        self.reactor.getThreadPool().stop()
        self.assertEqual(done, [True])


class CoalescingRunTests(RunTests):
    """The same with a coalescing delay of 2 ms."""

    coalesce = 0.002


class UseMediaLoopTests(SynchronousTestCase):
    def engine(self, reactor):
        engine = EmbeddedEngine(reactor, {HOST: (40000, 40009)})
        self.addCleanup(engine.close)
        return engine

    def test_epollReactorAndOwnPoller(self):
        """An epoll reactor and an engine with its own poller: the reactor's
        ``mainLoop`` becomes the poller's loop."""
        reactor = EPollReactor()
        engine = self.engine(reactor)
        self.assertTrue(use_media_loop(reactor, engine, environ={}))
        self.assertIn("mainLoop", vars(reactor))

    def test_coalescingDelay(self):
        """``OMNIRTP_WORKER_COALESCE_US`` gives the loop its delay, in
        seconds; unset, empty or not a number: none."""
        seen = []

        class Poller:
            def run(self, reactor, coalesce):
                seen.append(coalesce)

        class Engine:
            def media_poller(self):
                return Poller()

        for value, expected in (("250", 0.00025), ("", 0.0), ("x", 0.0), (None, 0.0)):
            reactor = EPollReactor()
            environ = {} if value is None else {COALESCE_VARIABLE: value}
            self.assertTrue(use_media_loop(reactor, Engine(), environ=environ))
            reactor.mainLoop()
            self.assertEqual(seen.pop(), expected)

    def test_reactorLoopOnRequest(self):
        """``OMNIRTP_WORKER_LOOP=reactor`` keeps the reactor's own loop."""
        reactor = EPollReactor()
        engine = self.engine(reactor)
        self.assertFalse(use_media_loop(reactor, engine, environ={LOOP_VARIABLE: "reactor"}))
        self.assertNotIn("mainLoop", vars(reactor))

    def test_noPollerOfItsOwn(self):
        """An engine without a poller of its own (given one, or fake
        sockets) keeps the reactor's loop."""
        reactor = EPollReactor()
        engine = EmbeddedEngine(reactor, {HOST: (40000, 40009)}, poller=MediaPoller(reactor))
        self.addCleanup(engine.close)
        self.assertIsNone(engine.media_poller())
        self.assertFalse(use_media_loop(reactor, engine, environ={}))

    def test_otherReactor(self):
        """A reactor without an epoll (poll, select) keeps its own loop."""
        from twisted.internet.pollreactor import PollReactor
        reactor = PollReactor()
        engine = self.engine(reactor)
        self.assertFalse(use_media_loop(reactor, engine, environ={}))


class Recorder:
    """The protocol of a PipeIO: what it got, and how it ended."""

    def __init__(self):
        self.got = []
        self.lost = []

    def makeConnection(self, transport):
        self.transport = transport

    def dataReceived(self, data):
        self.got.append(data)
        if data == b"close":
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.lost.append(reason)


class PipeInLoopTests(RealRelays, SynchronousTestCase):
    """``use_media_loop(..., pipe=...)``: the worker's pipe from the control
    process is read by the media loop (after the round's datagrams), not
    by a reactor iteration; its end goes back to the reactor."""

    def setUp(self):
        from omnirtp.media.worker import PipeIO

        self.reactor = EPollReactor()
        self.reactor.callLater(10, self.reactor.stop)
        self.engine = EmbeddedEngine(self.reactor, {HOST: (40000, 40009)})
        self.addCleanup(self.engine.close)
        self.r, self.w = os.pipe()
        out_r, self.out_w = os.pipe()
        self.addCleanup(os.close, out_r)
        self.protocol = Recorder()
        self.pipe = PipeIO(self.protocol, stdin=self.r, stdout=self.out_w, reactor=self.reactor)
        self.reader = self.pipe._reader
        self.assertIn(self.reader, self.reactor.getReaders())
        self.assertTrue(use_media_loop(self.reactor, self.engine, environ={}, pipe=self.pipe))
        self.assertNotIn(self.reader, self.reactor.getReaders())

    def run_steps(self, *steps):
        steps = list(steps)

        def step():
            if steps:
                steps.pop(0)()
                self.reactor.callLater(0.01, step)
            else:
                self.reactor.stop()

        self.reactor.callLater(0.01, step)
        self.reactor.run(installSignalHandlers=False)

    def test_readInTheLoopThenEndedByTheReactor(self):
        """Bytes written to the pipe reach the protocol while the reactor
        does not read it; at its end the reactor reads it again and the
        protocol's connection is lost as usual."""
        seen = []
        self.run_steps(
            lambda: os.write(self.w, b"one"),
            lambda: seen.append(self.reader in self.reactor.getReaders()),
            lambda: os.write(self.w, b"two" * 15000),
            lambda: os.close(self.w),
            lambda: None,
        )
        self.assertEqual(seen, [False])
        self.assertEqual(b"".join(self.protocol.got), b"one" + b"two" * 15000)
        self.assertEqual(self.protocol.got[0], b"one")
        self.assertEqual(len(self.protocol.lost), 1)

    def test_notReadOnceTheProtocolClosedIt(self):
        """Once the protocol closed the connection (a broken frame), what
        comes on the pipe is not read any more."""
        self.addCleanup(os.close, self.w)
        self.run_steps(
            lambda: os.write(self.w, b"close"),
            lambda: os.write(self.w, b"more"),
            lambda: None,
        )
        self.assertEqual(self.protocol.got, [b"close"])


class AddAfterTests(SynchronousTestCase):
    """``MediaPoller.add_after`` outside the media loop: ``doRead`` (the
    reactor's reader) calls the handler once its rounds are served."""

    def test_doReadCallsTheHandlerAfterTheRounds(self):
        reactor = EPollReactor()
        poller = MediaPoller(reactor)
        self.addCleanup(poller.close)
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        seen = []
        poller.add_after(r, lambda: seen.append(os.read(r, 100)))
        self.assertIn(poller, reactor.getReaders())
        poller.doRead()
        self.assertEqual(seen, [])
        os.write(w, b"request")
        poller.doRead()
        self.assertEqual(seen, [b"request"])
        poller.doRead()
        self.assertEqual(seen, [b"request"])
