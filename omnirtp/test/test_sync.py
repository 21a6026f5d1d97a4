"""omnirtp.sync: generators run synchronously while their Deferreds have fired."""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from omnirtp import sync


class Boom(Exception):
    pass


@sync.steps
def add(a, b):
    x = yield defer.succeed(a)
    y = yield b
    return x + y


@sync.steps
def recovers(d):
    try:
        yield d
    except Boom:
        got = yield defer.succeed("caught")
        return got
    return "not raised"


class StepsTests(SynchronousTestCase):

    def test_fired_deferreds_give_a_plain_value(self):
        self.assertEqual(add(1, 2), 3)
        self.assertEqual(add(1, defer.succeed(5)), 6)

    def test_failure_raised_synchronously(self):
        self.assertRaises(Boom, add, 1, defer.fail(Boom()))

    def test_failure_thrown_into_generator(self):
        self.assertEqual(recovers(defer.fail(Boom())), "caught")

    def test_pending_deferred_gives_a_deferred(self):
        d = defer.Deferred()
        result = add(1, d)
        self.assertIsInstance(result, defer.Deferred)
        self.assertNoResult(result)
        d.callback(10)
        self.assertEqual(self.successResultOf(result), 11)

    def test_pending_failure(self):
        d = defer.Deferred()
        result = add(1, d)
        d.errback(Boom())
        self.failureResultOf(result, Boom)

    def test_pending_failure_caught(self):
        d = defer.Deferred()
        result = recovers(d)
        d.errback(Boom())
        self.assertEqual(self.successResultOf(result), "caught")

    def test_two_pending_in_a_row(self):
        first, second = defer.Deferred(), defer.Deferred()

        @sync.steps
        def two():
            a = yield first
            b = yield second
            return a * b

        result = two()
        first.callback(3)
        self.assertNoResult(result)
        second.callback(4)
        self.assertEqual(self.successResultOf(result), 12)

    def test_exception_before_any_yield(self):
        @sync.steps
        def fails():
            raise Boom()
            yield

        self.assertRaises(Boom, fails)

    def test_as_deferred_and_then(self):
        self.assertEqual(self.successResultOf(sync.as_deferred(lambda: 7)), 7)
        self.failureResultOf(sync.as_deferred(add, 1, defer.fail(Boom())), Boom)
        self.assertEqual(sync.then(2, lambda r, k: r * k, 5), 10)
        d = defer.Deferred()
        chained = sync.then(d, lambda r, k: r * k, 5)
        d.callback(3)
        self.assertEqual(self.successResultOf(chained), 15)

    def test_fired_value_taken_as_a_callback_would(self):
        """A yielded Deferred that fired with a value is consumed: its result
        becomes None, as after the callback that takes it; one with callbacks
        of its own still pending (paused on another) is waited for."""
        fired = defer.succeed(4)
        self.assertEqual(add(1, fired), 5)
        self.assertIsNone(self.successResultOf(fired))
        inner = defer.Deferred()
        outer = defer.succeed(None)
        outer.addCallback(lambda _: inner)  # paused on inner
        result = add(1, outer)
        self.assertNoResult(result)
        inner.callback(6)
        self.assertEqual(self.successResultOf(result), 7)

    def test_yielded_plain_values_come_back(self):
        @sync.steps
        def plain():
            a = yield "x"
            b = yield {"k": 1}
            c = yield None
            return (a, b, c)

        self.assertEqual(plain(), ("x", {"k": 1}, None))

    def test_is_deferred(self):
        class Sub(defer.Deferred):
            pass

        for value in (defer.Deferred(), Sub()):
            self.assertTrue(sync.is_deferred(value))
        for value in ("x", b"x", 1, True, 1.5, {}, [], (), None, object()):
            self.assertFalse(sync.is_deferred(value))


@sync.steps
def outer(inner_result, log):
    log.append("outer starts")
    value = yield inner_result
    log.append(("outer got", value))
    return ("outer", value)


@sync.steps
def inner(d, log):
    value = yield d
    log.append(("inner got", value))
    if isinstance(value, Boom):
        raise value
    return value + 1


class NestedStepsTests(SynchronousTestCase):
    """A steps generator waiting for another's pending result is resumed by
    it directly, with what a Deferred callback would have given it."""

    def test_value_goes_straight_up(self):
        log, leaf = [], defer.Deferred()
        inner_d = inner(leaf, log)
        self.assertIsInstance(inner_d, defer.Deferred)
        outer_d = outer(inner_d, log)
        self.assertIsInstance(inner_d._waiter, sync._Driver)
        self.assertIs(inner_d._waiter.out, outer_d)
        self.assertEqual(sync._CALLBACKS and getattr(inner_d, sync._CALLBACKS), [])
        leaf.callback(1)
        self.assertEqual(log, ["outer starts", ("inner got", 1), ("outer got", 2)])
        self.assertEqual(self.successResultOf(outer_d), ("outer", 2))
        # the inner Deferred is fired, with None, as outer's callback leaves it
        self.assertTrue(inner_d.called)
        self.assertIsNone(self.successResultOf(inner_d))

    def test_failure_goes_straight_up(self):
        log, leaf = [], defer.Deferred()
        outer_d = outer(inner(leaf, log), log)
        leaf.callback(Boom("no"))
        f = self.failureResultOf(outer_d, Boom)
        self.assertEqual(str(f.value), "no")
        self.assertEqual(log, ["outer starts", ("inner got", f.value)])

    def test_caught_failure(self):
        leaf = defer.Deferred()
        d = recovers(inner(leaf, []))
        leaf.callback(Boom())
        self.assertEqual(self.successResultOf(d), "caught")

    def test_someone_else_listening_gets_none_after_the_parent(self):
        log, leaf = [], defer.Deferred()
        inner_d = inner(leaf, log)
        outer_d = outer(inner_d, log)
        inner_d.addCallback(lambda value: log.append(("other got", value)))
        leaf.callback(1)
        self.assertEqual(log, ["outer starts", ("inner got", 1), ("outer got", 2),
                               ("other got", None)])
        self.assertEqual(self.successResultOf(outer_d), ("outer", 2))

    def test_listened_to_before_it_is_yielded(self):
        """A pending result with callbacks already goes the Deferred way."""
        log, leaf = [], defer.Deferred()
        inner_d = inner(leaf, log)
        inner_d.addCallback(lambda value: log.append(("first", value)) or value)
        outer_d = outer(inner_d, log)
        self.assertIsNone(inner_d._waiter)
        leaf.callback(1)
        self.assertEqual(log, ["outer starts", ("inner got", 1), ("first", 2),
                               ("outer got", 2)])
        self.assertEqual(self.successResultOf(outer_d), ("outer", 2))

    def test_three_levels(self):
        log, leaf = [], defer.Deferred()
        d = outer(outer(inner(leaf, log), log), log)
        leaf.callback(5)
        self.assertEqual(self.successResultOf(d), ("outer", ("outer", 6)))

    def test_is_deferred(self):
        leaf = defer.Deferred()
        self.assertTrue(sync.is_deferred(inner(leaf, [])))


@sync.steps
def waits(d, log):
    try:
        value = yield d
    except Exception as e:
        log.append(("failed", type(e).__name__))
        raise
    log.append(("got", value))
    return value


class LaterTests(SynchronousTestCase):
    """sync.Later: a steps driver that waits for one is resumed by a direct
    call; light callbacks (sync.listen) run as a Deferred's chain would;
    anything else makes it an ordinary Deferred first."""

    def test_waiter_resumed_directly(self):
        log, d = [], sync.Later()
        out = waits(d, log)
        self.assertIs(d._waiter.out, out)
        self.assertEqual(getattr(d, sync._CALLBACKS), [])
        d.callback(5)
        self.assertEqual(log, [("got", 5)])
        self.assertEqual(self.successResultOf(out), 5)
        # fired, with None, as the driver's callback would leave it
        self.assertTrue(d.called)
        self.assertIsNone(self.successResultOf(d))

    def test_waiter_gets_the_failure(self):
        log, d = [], sync.Later()
        out = waits(d, log)
        d.errback(Boom("no"))
        self.assertEqual(log, [("failed", "Boom")])
        self.failureResultOf(out, Boom)
        self.assertIsNone(self.successResultOf(d))  # handled: nothing logged

    def test_light_chain_as_a_deferred_runs_it(self):
        seen = []
        for make in (defer.Deferred, sync.Later):
            d, log = make(), []
            sync.listen(d, lambda r: log.append(("cb", r)) or r * 2)
            sync.on(d, lambda r, k: log.append(("both", r, k)) or 1 / 0, "k")
            sync.listen(d, lambda r: log.append("skipped"), (), lambda f: log.append(
                ("eb", f.type.__name__)) or "recovered")
            sync.then(d, lambda r, x: log.append(("then", r, x)) or r + x, "!")
            d.callback(3)
            log.append(self.successResultOf(d))
            seen.append(log)
        self.assertEqual(seen[0], seen[1])
        self.assertEqual(seen[1], [("cb", 3), ("both", 6, "k"), ("eb", "ZeroDivisionError"),
                                   ("then", "recovered", "!"), "recovered!"])

    def test_failure_left_at_the_end_goes_the_deferred_way(self):
        d = sync.Later()
        sync.on(d, lambda r: r)
        d.errback(Boom())
        self.failureResultOf(d, Boom)

    def test_unhandled_failure_is_logged(self):
        d = sync.Later()
        sync.listen(d, lambda r: r)
        d.errback(Boom())
        del d
        import gc
        gc.collect()
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)

    def test_light_callback_returning_a_deferred_is_waited_for(self):
        d, inner_d, log = sync.Later(), sync.Later(), []
        sync.listen(d, lambda r: inner_d)
        sync.listen(d, lambda r: log.append(("after", r)) or r)
        d.callback(1)
        self.assertEqual(log, [])
        self.assertNoResult(d)
        inner_d.callback("inner")
        self.assertEqual(log, [("after", "inner")])
        self.assertEqual(self.successResultOf(d), "inner")

    def test_deferred_callbacks_after_light_ones_keep_the_order(self):
        log, d = [], sync.Later()
        out = waits(d, log)
        sync.listen(d, lambda r: log.append(("light", r)) or "l")
        d.addCallback(lambda r: log.append(("deferred", r)) or "d")
        self.assertIsNone(d._waiter)
        self.assertIsNone(d._light)
        d.callback(7)
        self.assertEqual(log, [("got", 7), ("light", None), ("deferred", "l")])
        self.assertEqual(self.successResultOf(out), 7)
        self.assertEqual(self.successResultOf(d), "d")

    def test_cancel_fails_the_waiter(self):
        log, d = [], sync.Later()
        out = waits(d, log)
        d.cancel()
        self.assertEqual(log, [("failed", "CancelledError")])
        self.failureResultOf(out, defer.CancelledError)
        d.callback("too late")  # suppressed, as for any Deferred cancelled without a canceller
        self.assertEqual(log, [("failed", "CancelledError")])

    def test_canceller_that_fires(self):
        log = []
        d = sync.Later(lambda d: d.callback("cancelled, with a value"))
        out = waits(d, log)
        d.cancel()
        self.assertEqual(self.successResultOf(out), "cancelled, with a value")

    def test_timeout_on_the_clock(self):
        from twisted.internet.task import Clock

        clock, log, d = Clock(), [], sync.Later()
        out = waits(d, log)
        d.addTimeout(2, clock)  # an ordinary Deferred's callback now, after the driver
        clock.advance(1)
        self.assertEqual(log, [])
        clock.advance(1)
        self.assertEqual(log, [("failed", "CancelledError")])
        self.failureResultOf(out, defer.CancelledError)

    def test_paused(self):
        log, d = [], sync.Later()
        out = waits(d, log)
        d.pause()
        d.callback(1)
        self.assertEqual(log, [])
        d.unpause()
        self.assertEqual(log, [("got", 1)])
        self.assertEqual(self.successResultOf(out), 1)

    def test_fired_twice(self):
        d = sync.Later()
        waits(d, [])
        d.callback(1)
        self.assertRaises(defer.AlreadyCalledError, d.callback, 2)

    def test_is_a_deferred_to_inline_callbacks(self):
        d = sync.Later()

        @defer.inlineCallbacks
        def ic():
            value = yield d
            return value + 1

        out = ic()
        d.callback(1)
        self.assertEqual(self.successResultOf(out), 2)
        self.assertTrue(sync.is_deferred(d))


class WorkerAnswerTests(SynchronousTestCase):
    """A media worker's answer (omnirtp.media.wire.Requests: a Later per
    request) resumes the steps waiting for it, with its value, the
    engine's error, a time-out's or a lost worker's."""

    def setUp(self):
        from twisted.internet.task import Clock

        from omnirtp.media import wire

        self.wire = wire
        self.sent = []
        self.requests = wire.Requests(self.sent.append, Clock())

    def test_answer(self):
        log = []
        out = waits(self.requests.send("stats", "c"), log)
        self.requests.received(self.wire.dumps((0, self.wire.OK, {"c": {}})))
        self.assertEqual(self.successResultOf(out), {"c": {}})

    def test_engine_error(self):
        from omnirtp.errors import NGError

        log = []
        out = waits(self.requests.send("configure", "c", []), log)
        self.requests.received(self.wire.dumps((0, self.wire.NG_ERROR, "Unknown call-id")))
        self.assertEqual(self.failureResultOf(out, NGError).value.reason, "Unknown call-id")
        self.assertEqual(log, [("failed", "NGError")])

    def test_timed_out_and_lost(self):
        log = []
        first = waits(self.requests.send("stats", "a"), log)
        second = waits(self.requests.send("stats", "b"), log)
        self.requests.fail(0, Boom("timed out"))
        self.failureResultOf(first, Boom)
        self.assertNoResult(second)
        self.requests.fail_all(lambda command: Boom("%s: the worker ended" % command))
        self.assertEqual(str(self.failureResultOf(second, Boom).value), "Stats: the worker ended")
        # a late answer is dropped
        self.requests.received(self.wire.dumps((1, self.wire.OK, {})))
        self.assertEqual(log, [("failed", "Boom"), ("failed", "Boom")])


class AfterReplyTests(SynchronousTestCase):
    """sync.after_reply: at once, unless an ng datagram is being handled
    (``after_reply_work`` a list), whose handler runs the work put there."""

    def test_atOnce(self):
        done = []
        self.assertIsNone(sync.after_reply_work)
        sync.after_reply(done.append, 1)
        self.assertEqual(done, [1])

    def test_collected(self):
        done = []
        self.addCleanup(setattr, sync, "after_reply_work", None)
        work = sync.after_reply_work = []
        sync.after_reply(done.append, 1)
        sync.after_reply(done.extend, (2, 3))
        self.assertEqual(done, [])
        self.assertEqual(work, [(done.append, (1,)), (done.extend, ((2, 3),))])
