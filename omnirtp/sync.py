"""Run Deferred-yielding generators synchronously while they can be.

``inlineCallbacks`` wraps every call in a Deferred and drives the generator
through Deferred callbacks, even when each Deferred it yields has fired
already, as the embedded media engine's always have.  :func:`steps` is the
decorator for such generators on the ng command path: the decorated
function runs the generator at once and

* returns its result (a plain value) when every Deferred it yielded had
  already fired;
* raises its exception the same way;
* returns a Deferred as soon as one yielded Deferred has not fired yet (a
  worker's answer): the rest runs when it fires, exactly as under
  ``inlineCallbacks``.

A yielded Deferred's failure is thrown into the generator as
``inlineCallbacks`` does; anything else yielded is sent back unchanged.
Callers that need a Deferred wrap the result with :func:`as_deferred`.

When such a generator yields the pending Deferred of another (a steps
function calling a steps function, as the ng commands do down to the
engine call that waits for a media worker) and nothing else listens to
it, the inner one resumes the outer one directly when it ends: no
Deferred callback per level (the Deferred still fires, with None, as
the outer one's ``inlineCallbacks`` callback would leave it).
"""

import functools

from twisted.internet import defer
from twisted.python.failure import Failure

__all__ = ["steps", "run", "as_deferred", "then", "is_deferred", "fired_with_value"]

_Deferred = defer.Deferred
#: types that are never Deferreds: ``isinstance(x, Deferred)`` is an ABC
#: check (Deferred is an Awaitable), several times the cost of this set's
_PLAIN = frozenset((str, bytes, int, bool, float, dict, list, tuple, type(None)))
#: the attribute holding a Deferred's pending callbacks: ``_callbacks``
#: since Twisted 25.5 (``callbacks`` is a deprecated property there, whose
#: warning machinery runs on every read), ``callbacks`` before
_CALLBACKS = "_callbacks" if hasattr(_Deferred(), "_callbacks") else "callbacks"


#: "nothing yielded yet" for _Driver.run
_NOTHING = object()


class _Out(_Deferred):
    """The Deferred a pending :class:`_Driver` hands out (``driver``)."""


def is_deferred(value):
    """``isinstance(value, Deferred)``, cheaper for the usual plain values."""
    t = type(value)
    return t is _Deferred or (t not in _PLAIN and (t is _Out or isinstance(value, _Deferred)))


def _fired_value(d, chain=_CALLBACKS):
    """True if Deferred ``d`` has fired with a value (not a failure) and
    nothing is chained to it: its result can be taken without a callback."""
    return (d.called and not d.paused and not getattr(d, chain)
            and not isinstance(d.result, Failure))


#: public name: a callback or errback added to such a Deferred runs at once
fired_with_value = _fired_value


class _Driver:
    __slots__ = ("gen", "out", "waiting", "box", "parent")

    def __init__(self, gen):
        self.gen = gen
        self.out = None       # the _Out handed out once we went asynchronous
        self.waiting = False  # a yielded Deferred has not fired yet
        self.box = None       # its result, when it fired while we looked
        self.parent = None    # the driver that yielded our out and waits for us

    def _fired(self, result):
        if self.waiting:
            self.waiting = False
            self._resume(result)
        else:
            self.box = (result,)
        return None

    def run(self, result=None, failure=None, yielded=_NOTHING):
        """Drive until done (a value / raise) or until a Deferred is pending
        (``yielded``: what the generator yielded last, not yet looked at)."""
        gen = self.gen
        while True:
            if yielded is _NOTHING:
                if failure is not None:
                    f, failure = failure, None
                    yielded = f.throwExceptionIntoGenerator(gen)
                else:
                    yielded = gen.send(result)
            t = type(yielded)
            if t is not _Deferred:
                if t in _PLAIN:
                    result, yielded = yielded, _NOTHING
                    continue
                if t is _Out:
                    if not yielded.called and yielded.driver.parent is None \
                            and not getattr(yielded, _CALLBACKS):
                        # another driver's pending result: it resumes us itself
                        yielded.driver.parent = self
                        self.waiting = True
                        return _PENDING
                elif not isinstance(yielded, _Deferred):
                    result, yielded = yielded, _NOTHING
                    continue
            if _fired_value(yielded):
                # the embedded engine's defer.succeed: take the value as
                # _fired would, with no callback run (a failure goes the
                # long way, which also marks it handled)
                result, yielded.result = yielded.result, None
                yielded = _NOTHING
                continue
            self.box = None
            yielded.addBoth(self._fired)
            yielded = _NOTHING
            if self.box is None:
                self.waiting = True
                return _PENDING
            result = self.box[0]
            self.box = None
            if isinstance(result, Failure):
                failure, result = result, None

    def _resume(self, result):
        try:
            if isinstance(result, Failure):
                self.run(None, result)
            else:
                self.run(result)
        except StopIteration as e:
            self._done(e.value)
            return
        except BaseException:
            self._done(Failure())
            return
        # else pending again: _fired (or the driver we wait for) resumes us

    def _done(self, result):
        out, parent = self.out, self.parent
        if parent is None:
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(result)
            return
        self.parent = None
        parent._fired(result)
        # as the parent's callback would have left it: fired, with None
        if getattr(out, _CALLBACKS):
            out.callback(None)
        else:
            out.called = True
            out.result = None


_PENDING = object()


def steps(fn):
    """Decorator: run the generator function ``fn`` with :func:`run`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        gen = fn(*args, **kwargs)
        # while what it yields is plain or a Deferred fired with a value
        # (the embedded engine's), no driver is made: _Driver.run's first
        # steps, here (this is run(), without a call)
        send = gen.send
        result = None
        try:
            while True:
                yielded = send(result)
                t = type(yielded)
                if t in _PLAIN:
                    result = yielded
                elif t is _Deferred and _fired_value(yielded):
                    result, yielded.result = yielded.result, None
                else:
                    break
            driver = _Driver(gen)
            value = driver.run(yielded=yielded)
        except StopIteration as e:
            return e.value
        if value is _PENDING:
            out = driver.out = _Out()
            out.driver = driver
            return out
        return value  # pragma: no cover - run() only ends by raising

    return wrapper


@steps
def run(gen):
    """Drive generator ``gen``: its result, its exception, or a Deferred."""
    return gen


def as_deferred(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` as a Deferred (like ``maybeDeferred``)."""
    try:
        result = fn(*args, **kwargs)
    except BaseException:
        return defer.fail(Failure())
    if is_deferred(result):
        return result
    return defer.succeed(result)


def then(result, fn, *args):
    """``fn(result, *args)`` now for a plain ``result``, or as a callback of a Deferred."""
    if is_deferred(result):
        return result.addCallback(fn, *args)
    return fn(result, *args)
