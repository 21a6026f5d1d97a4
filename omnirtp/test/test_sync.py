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
