"""The pipe between the control process and a media worker: frames.

Every message on the two pipes is a *frame*: a 4-byte big-endian length,
then that many bytes, the first of which says what the rest is:

* :data:`AMP` (``A``): bytes of the AMP connection (:mod:`omnirtp.media.amp`:
  the certificate, the log level, Ping and Shutdown, none of them on the
  call path), handed to the AMP protocol on the other end as they came;
* :data:`REQUEST` (``Q``, control process to worker): an engine call,
  ``(request id, operation, arguments)``;
* :data:`REPLY` (``R``, worker to control process): its answer,
  ``(request id, status, value)``.

Requests and replies are :mod:`marshal` data: the two ends are the same
Python (a worker is started with the control process's interpreter), and
marshal writes and reads the interface's plain values (str with lone
surrogates included, int, float, bool, None, tuples, lists, dicts) in C,
tuples staying tuples, so both ends see exactly what the embedded engine
sees with ``num-threads = 0``.  Values of subclasses (an ``IntEnum``, a
``str`` subclass) are passed as their base type (:func:`plain`), as JSON
did over AMP; anything else cannot be sent (``TypeError``).

One request is one engine call of :data:`OPERATIONS`; the worker answers
each as soon as the engine's result is there (at once, so in order, for the
embedded engine; a reply names its request, so a later one may come first).
Statuses: :data:`OK` (the value),
:data:`NG_ERROR` and :data:`PORTS_EXHAUSTED` (the ``NGError`` /
``PortsExhausted`` reason: the same class and text arrive), :data:`FAILED`
(an error the engine did not expect: its type and text, for the log).
"""

import marshal
import struct

from twisted.python.failure import Failure

from omnirtp import sync
from omnirtp.errors import NGError, PortsExhausted
from omnirtp.sync import Later

#: frame kinds (the first byte of a frame's body)
AMP = 0x41  # b"A"
REQUEST = 0x51  # b"Q"
REPLY = 0x52  # b"R"

#: reply statuses
OK, NG_ERROR, PORTS_EXHAUSTED, FAILED = 0, 1, 2, 3

#: a frame's length prefix
LENGTH_BYTES = 4


#: a frame's length prefix and kind
_HEAD = struct.Struct(">IB")
_LENGTH = struct.Struct(">I")


def frame(kind, body, _pack=_HEAD.pack):
    """One frame of ``kind`` holding the bytes ``body``."""
    return _pack(len(body) + 1, kind) + body


class FrameError(ValueError):
    """The bytes on a pipe are not frames of a known kind."""


class FrameReader:
    """Cuts the bytes of a pipe into frames: ``handlers[kind](body)`` for
    each, in order; a frame split over reads waits for its rest."""

    def __init__(self, handlers):
        self.handlers = handlers
        self._rest = b""

    def feed(self, data):
        if self._rest:
            data = self._rest + data
            self._rest = b""
        pos, end = 0, len(data)
        handlers = self.handlers
        length = _LENGTH.unpack_from
        while end - pos > LENGTH_BYTES:
            stop = pos + LENGTH_BYTES + length(data, pos)[0]
            if stop > end:
                break
            kind = data[pos + LENGTH_BYTES]
            handler = handlers.get(kind) if stop > pos + LENGTH_BYTES else None
            if handler is None:
                raise FrameError("frame of unknown kind %r (%d bytes)"
                                 % (chr(kind), stop - pos - LENGTH_BYTES))
            handler(data[pos + LENGTH_BYTES + 1:stop])
            pos = stop
        if pos < end:
            self._rest = data[pos:]


# -- values ---------------------------------------------------------------------

_BASES = (bool, int, float, str, bytes)
#: a subclass's value as its base type (``str(x)`` of a str enum is its name)
_CONVERT = ((str, str.__str__), (int, int), (float, float), (bytes, bytes))


def plain(value):
    """``value`` with subclasses of the plain types turned into the base
    type (containers copied); ``TypeError`` for anything else."""
    t = type(value)
    if value is None or t in _BASES:
        return value
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    for base, convert in _CONVERT:
        if isinstance(value, base):
            return convert(value)
    raise TypeError("%s cannot cross to a media worker: %r" % (t.__name__, value))


def dumps(value):
    """``value`` as marshal bytes (:func:`plain` first when marshal alone
    cannot write it)."""
    try:
        return marshal.dumps(value)
    except ValueError:
        return marshal.dumps(plain(value))


loads = marshal.loads


# -- the worker's end ---------------------------------------------------------------

def _stats_release(engine, call_id):
    """A deleted call's last counters, then its ports go (also when the
    counters fail: the control process has forgotten the call already)."""
    stats_now = getattr(engine, "stats_now", None)
    release_now = getattr(engine, "release_now", None)
    if stats_now is None or release_now is None:
        return _stats_release_steps(engine, call_id)
    # (the embedded engine's, answered at once: no Deferred)
    try:
        stats = stats_now(call_id)
    finally:
        release_now(call_id, None)
    return stats


@sync.steps
def _stats_release_steps(engine, call_id):
    try:
        stats = yield engine.stats(call_id)
    finally:
        yield engine.release(call_id, None)
    return stats


#: omnirtp.media.amp.allocate_configure, imported at the first use:
#: omnirtp.media.amp imports Twisted's AMP, which a control process
#: without workers does not need
_batch = None


def _allocate_configure(engine, call_id, groups, sockets):
    global _batch
    if _batch is None:
        from omnirtp.media.amp import allocate_configure as _batch
    # (the entries were just read from the pipe: filled in place)
    return _batch(engine, call_id, [tuple(g) for g in groups], sockets, False)


def _allocate(engine, call_id, address, count):
    now = getattr(engine, "allocate_now", None)
    if now is None:
        return sync.then(engine.allocate(call_id, address, count), list)
    return list(now(call_id, address, count))


def _answered_now(name):
    """What the worker does for ``name``: the engine's ``<name>_now`` when
    it has one, else ``<name>`` (its Deferred)."""
    now_name = name + "_now"

    def operation(engine, *args):
        now = getattr(engine, now_name, None)
        if now is None:
            return getattr(engine, name)(*args)
        return now(*args)
    operation.__name__ = "_" + name
    return operation


def _last_packets(engine):
    """The engine's ``last_packets()``, or the same from its ``stats(None)``
    (an engine of ``--engine`` without it)."""
    last_packets = getattr(engine, "last_packets", None)
    if last_packets is not None:
        return last_packets()
    return sync.then(engine.stats(None), _newest_packets)


def _newest_packets(stats):
    """``{call_id: the newest last_packet of its sockets}`` of ``stats(None)``'s
    answer (calls without sockets left out)."""
    from omnirtp.call.registry import newest_packet

    return {call_id: newest_packet(sockets) for call_id, sockets in stats.items() if sockets}


def _transcoders(engine):
    """The engine's ``transcoders()`` ({} from an engine without it)."""
    transcoders = getattr(engine, "transcoders", None)
    return transcoders() if transcoders is not None else {}


def _adopt(engine, call_id, tag, groups, entries, since, sockets=None):
    """A parked call handed over (:mod:`omnirtp.media.park`): its sockets
    are the next message on the worker's hand-off socket (``sockets(tag,
    count)``), sent before this request."""
    if sockets is None:
        raise ValueError("this worker cannot take sockets")
    count = 2 * sum(len(ports) for _address, ports in groups)
    socks = sockets(tag, count)
    adopt = getattr(engine, "adopt_now", None)
    if adopt is None:
        for sock in socks:
            sock.close()
        raise ValueError("the engine cannot adopt sockets")
    adopt(call_id, [(address, list(ports)) for address, ports in groups], socks, entries,
          {tuple(key): at for key, at in since})
    return None


#: operation -> (its name in logs, what the worker does: fn(engine, *args))
OPERATIONS = {
    # (an engine's allocate_now, configure_now, release_now, stats_now
    # when it has them: the same answers, or exceptions, with no Deferred)
    "allocate": ("Allocate", _allocate),
    "claim": ("Claim", lambda e, call_id, address, ports:
              sync.then(e.claim(call_id, address, ports), list)),
    "configure": ("Configure", _answered_now("configure")),
    "allocate_configure": ("AllocateConfigure", _allocate_configure),
    "release": ("Release", _answered_now("release")),
    "stats": ("Stats", _answered_now("stats")),
    "stats_release": ("StatsRelease", _stats_release),
    "totals": ("Totals", lambda e: e.totals()),
    "last_packets": ("LastPackets", _last_packets),
    "transcoders": ("Transcoders", _transcoders),
    "adopt": ("Adopt", _adopt),
}


def answer(engine, body, reply, log, sockets=None):
    """Carry out the request ``body`` (a :data:`REQUEST` frame's) on
    ``engine`` and call ``reply(frame bytes)`` with the answer, at once
    when the engine's Deferred has fired (as the embedded engine's have),
    else when it fires.  An error the engine did not expect is logged
    (``log.failure``) and answered :data:`FAILED`.  ``sockets(tag,
    count)``: the sockets handed over with an ``adopt`` request."""
    rid, op, args = loads(body)
    try:
        if op == "adopt":
            result = _adopt(engine, *args, sockets=sockets)
        else:
            result = OPERATIONS[op][1](engine, *args)
    except Exception:
        result = Failure()
    if sync.is_deferred(result):
        if sync._fired_value(result):
            d = result
            result, d.result = d.result, None
        else:
            result.addBoth(_answered, rid, op, reply, log)
            return
    _answered(result, rid, op, reply, log)


def _answered(result, rid, op, reply, log):
    if isinstance(result, Failure):
        if result.check(PortsExhausted):
            body = dumps((rid, PORTS_EXHAUSTED, result.value.reason))
        elif result.check(NGError):
            body = dumps((rid, NG_ERROR, result.value.reason))
        else:
            body = _failed(rid, op, result, log)
    else:
        try:
            body = dumps((rid, OK, result))
        except Exception:
            body = _failed(rid, op, Failure(), log)
    reply(frame(REPLY, body))
    return None


def _failed(rid, op, failure, log):
    name = OPERATIONS[op][0] if op in OPERATIONS else repr(op)
    log.failure("media engine: {command} failed", failure, command=name)
    return dumps((rid, FAILED, "%s: %s" % (failure.type.__name__, failure.getErrorMessage())))


# -- the control process's end ---------------------------------------------------------

class Requests:
    """The engine calls sent to one worker and not answered yet.

    ``write(bytes)`` puts a frame on the pipe to the worker; ``clock``
    (``seconds()``) dates each request for the pool's timeout;
    ``remote_error(command, text)`` makes the exception for a
    :data:`FAILED` answer (default :class:`RemoteFailure`)."""

    def __init__(self, write, clock, remote_error=None):
        self.write = write
        self.clock = clock
        self.remote_error = remote_error or RemoteFailure
        #: request id -> [Deferred, operation, sent at], oldest first
        self.pending = {}
        self._next = 0

    def send(self, op, *args):
        """A Deferred (a :class:`omnirtp.sync.Later`: a steps generator that
        yields it is resumed directly) that fires with the worker's answer to ``op(*args)``:
        the value, or fails with ``NGError`` / ``PortsExhausted`` (the
        engine's reason) or ``remote_error``'s exception.  Raises ``TypeError``
        (nothing is sent) for a value that cannot cross."""
        rid = self._next
        data = frame(REQUEST, dumps((rid, op, args)))
        self._next = rid + 1
        d = Later()
        self.pending[rid] = [d, op, self.clock.seconds()]
        self.write(data)
        return d

    def received(self, body):
        """A :data:`REPLY` frame's body arrived: fire its request's Deferred
        (a reply nobody waits for any more, after a time-out, is dropped)."""
        rid, status, value = loads(body)
        entry = self.pending.pop(rid, None)
        if entry is None:
            return
        d = entry[0]
        if status == OK:
            d.callback(value)
        elif status == PORTS_EXHAUSTED:
            d.errback(PortsExhausted(value))
        elif status == NG_ERROR:
            d.errback(NGError(value))
        else:
            d.errback(self.remote_error(OPERATIONS[entry[1]][0], value))

    def oldest(self):
        """``(request id, operation, sent at)`` of the oldest unanswered
        request, or None."""
        for rid, (_d, op, sent) in self.pending.items():
            return rid, op, sent
        return None

    def fail(self, rid, error):
        """Fail request ``rid`` with the exception ``error`` (if pending)."""
        entry = self.pending.pop(rid, None)
        if entry is not None:
            entry[0].errback(error)

    def fail_all(self, make_error):
        """Fail every pending request with ``make_error(operation name)``."""
        pending, self.pending = self.pending, {}
        for d, op, _sent in pending.values():
            d.errback(make_error(OPERATIONS[op][0]))


class RemoteFailure(Exception):
    """An engine call failed in the worker with an error it did not
    expect (``command``: the operation's name; ``text``: type and message)."""

    def __init__(self, command, text):
        Exception.__init__(self, "%s failed: %s" % (command, text))
        self.command = command
        self.text = text
