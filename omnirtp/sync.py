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
the outer one's ``inlineCallbacks`` callback would leave it).  The same
holds for a media worker's answer (:class:`Later`, the pool's), and the
callbacks the ng path adds to a pending command's result (:func:`listen`)
run without a Deferred's machinery.
"""

import functools

from twisted.internet import defer
from twisted.python.failure import Failure

__all__ = ["steps", "run", "as_deferred", "then", "is_deferred", "fired_with_value", "Later",
           "listen", "on", "after_reply"]

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


_passthru = defer.passthru


def _give(_result, value):
    return value


def _after_materializing(method):
    """``method`` of Deferred for :class:`Later`: its waiter and light
    callbacks become ordinary callbacks first (Twisted 22.4's addCallback
    calls addCallbacks, 26.10's does not: each is wrapped)."""
    @functools.wraps(method)
    def add(self, *args, **kwargs):
        if self._waiter is not None or self._light is not None:
            self._materialize()
        return method(self, *args, **kwargs)
    return add


class Later(_Deferred):
    """A Deferred with two cheaper ways of being waited for, for the answers
    the control process waits for (a media worker's reply, a pending ng
    command's result) whose every listener is known:

    * a steps driver (:func:`steps`) that yields it while nothing else
      listens becomes its *waiter*: resumed by a direct call when it fires,
      as the first callback would be (its result is None afterwards);
    * :func:`listen` (and :func:`then`, :func:`on`) adds a *light* callback
      pair while it has no Deferred callbacks: run in order, a
      ``callback(result, *args)`` or ``errback(failure, *args)`` each, as a
      Deferred runs its chain (an exception becomes a Failure for the next,
      a Deferred returned is waited for, a Failure left at the end goes the
      Deferred way: logged if nobody takes it).

    Anything else (``addCallbacks`` and its kin, ``pause``, a second
    ``callback``) first turns the waiter and the light callbacks into
    ordinary callbacks, in order: it is a Deferred like any other then.
    ``cancel`` without a canceller fails the waiter and the light callbacks
    with ``CancelledError`` as a Deferred's callbacks would be."""

    _waiter = None  # a _Driver, resumed first
    _light = None  # [(callback, args, errback, errback args)], before the Deferred's own

    def callback(self, result):
        if (self._waiter is None and self._light is None) or self.called or self.paused:
            self._materialize()
            _Deferred.callback(self, result)
            return
        self._fire(result)

    def errback(self, fail=None):
        if fail is None:
            fail = Failure(captureVars=self.debug)
        elif not isinstance(fail, Failure):
            fail = Failure(fail)
        self.callback(fail)

    addCallbacks = _after_materializing(_Deferred.addCallbacks)
    addCallback = _after_materializing(_Deferred.addCallback)
    addErrback = _after_materializing(_Deferred.addErrback)
    addBoth = _after_materializing(_Deferred.addBoth)

    def pause(self):
        self._materialize()
        _Deferred.pause(self)

    def _materialize(self):
        """The waiter and the light callbacks as the Deferred's first callbacks."""
        waiter, light = self._waiter, self._light
        if waiter is None and light is None:
            return
        self._waiter = self._light = None
        first = []
        if waiter is not None:
            both = (waiter._fired, (), {})
            first.append((both, both))
        for cb, args, eb, eargs in light or ():
            first.append(((cb, args, {}) if cb is not None else (_passthru, (), {}),
                          (eb, eargs, {}) if eb is not None else (_passthru, (), {})))
        getattr(self, _CALLBACKS)[:0] = first

    def _fire(self, result):
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter._fired(result)
            result = None
        while self._light is not None:
            light, self._light = self._light, None
            for i, (cb, args, eb, eargs) in enumerate(light):
                if isinstance(result, Failure):
                    cb, args = eb, eargs
                if cb is None:
                    continue
                try:
                    result = cb(result, *args)
                except BaseException:
                    result = Failure(captureVars=self.debug)
                t = type(result)
                if t not in _PLAIN and (t is _Deferred or t is Later or t is _Out
                                        or isinstance(result, _Deferred)):
                    # the rest waits for it, as in a Deferred's chain
                    rest = light[i + 1:]
                    if self._light is not None:
                        rest += self._light
                    self._light = rest or None
                    self._materialize()
                    getattr(self, _CALLBACKS).insert(0, ((_give, (result,), {}),
                                                         (_give, (result,), {})))
                    _Deferred.callback(self, None)
                    return
        if getattr(self, _CALLBACKS) or self.paused or isinstance(result, Failure):
            _Deferred.callback(self, result)
        else:
            self.called = True
            self._canceller = None
            self.result = result


class _Out(Later):
    """The Deferred a pending :class:`_Driver` hands out."""


def is_deferred(value):
    """``isinstance(value, Deferred)``, cheaper for the usual plain values."""
    t = type(value)
    return t is _Deferred or (t not in _PLAIN and (t is _Out or t is Later
                                                   or isinstance(value, _Deferred)))


def listen(d, callback, args=(), errback=None, errback_args=()):
    """``d.addCallbacks(callback, errback, args, {}, errback_args, {})``
    (either may be None: passed through), as a light callback pair of a
    pending :class:`Later` that has no Deferred callbacks yet (the same
    order, results and failures, without the Deferred's machinery).
    Returns ``d``."""
    if type(d) in _LIGHT and not d.called and not d.paused and not getattr(d, _CALLBACKS):
        light = d._light
        if light is None:
            d._light = [(callback, args, errback, errback_args)]
        else:
            light.append((callback, args, errback, errback_args))
        return d
    return d.addCallbacks(callback if callback is not None else _passthru,
                          errback if errback is not None else _passthru,
                          callbackArgs=args, errbackArgs=errback_args)


def on(d, fn, *args):
    """``d.addBoth(fn, *args)`` by :func:`listen`."""
    return listen(d, fn, args, fn, args)


def _fired_value(d, chain=_CALLBACKS):
    """True if Deferred ``d`` has fired with a value (not a failure) and
    nothing is chained to it: its result can be taken without a callback."""
    return (d.called and not d.paused and not getattr(d, chain)
            and not isinstance(d.result, Failure))


#: public name: a callback or errback added to such a Deferred runs at once
fired_with_value = _fired_value


class _Driver:
    __slots__ = ("gen", "out", "waiting", "box")

    def __init__(self, gen):
        self.gen = gen
        self.out = None       # the _Out handed out once we went asynchronous
        self.waiting = False  # a yielded Deferred has not fired yet
        self.box = None       # its result, when it fired while we looked

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
                if t is _Out or t is Later:
                    if not yielded.called:
                        # another driver's pending result, a media worker's
                        # answer: it resumes us itself, or a light callback
                        # does when something else listened first
                        if yielded._waiter is None and yielded._light is None \
                                and not yielded.paused and not getattr(yielded, _CALLBACKS):
                            yielded._waiter = self
                        else:
                            fired = self._fired
                            listen(yielded, fired, (), fired, ())
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
        # (a driver waiting for out is its waiter: resumed directly)
        if isinstance(result, Failure):
            self.out.errback(result)
        else:
            self.out.callback(result)


_PENDING = object()
#: the types :func:`listen` gives light callbacks
_LIGHT = frozenset((Later, _Out))


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
            # (the driver is not kept on out: no reference cycle for the
            # garbage collector per pending command, all freed at once)
            driver.out = out = _Out()
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
        return listen(result, fn, args)
    return fn(result, *args)


# -- work a client does not wait for --------------------------------------------

#: the work waiting for the reply to the ng request being handled, as
#: ``(function, args)`` pairs (:func:`after_reply`), or None while no ng
#: datagram is being handled.  ``NGProtocol.datagramReceived`` sets it to
#: a new list as it starts on a datagram (keeping what was there), runs
#: what it holds once the reply has been sent, and puts back what was there
#: (no function call either way: it costs a few attribute accesses per
#: request)
after_reply_work = None


def after_reply(function, *args):
    """Call ``function(*args)`` once the reply to the ng request being
    handled has been sent, or at once when no ng datagram is being handled
    (a timer, the CLI, the HTTP side).

    "Once sent" is still within the same ``NGProtocol.datagramReceived``
    call, right after the reply's ``sendto`` (and before the request's log
    lines are written): nothing else of the reactor (another datagram, a
    timer, a media socket) runs in between, so work that frees what nobody
    can look at before then (a deleted call's sockets and ports) can wait
    there while the client gets its reply.  For work whose result the reply
    does not need and whose failure it does not report: ``function`` logs
    its own errors (an exception it lets out there is logged, not raised).
    Work put off by a request answered later (media workers) runs when its
    ``datagramReceived`` returns, before that reply."""
    queue = after_reply_work
    if queue is None:
        function(*args)
    else:
        queue.append((function, args))
