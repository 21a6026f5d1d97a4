"""AMP commands between the control process and its media workers.

One command per :class:`omnirtp.interfaces.IMediaEngine` method (plus
:class:`Ping` and :class:`Shutdown`, and :class:`AllocateConfigure`: a new
call's allocate and configure in one round trip).  The argument types here do the
conversions the interface needs, so both ends see exactly the interface's
Python types: socket keys are tuples again after the trip (JSON turns them
into lists), and ``PortsExhausted`` / ``NGError`` raised in a worker arrive
as the same classes, with the same reason text, in the control process.

AMP limits one value to 65,535 bytes.  Structured values (stats of many
calls, long socket lists) travel as JSON split over as many box keys as
needed (``name`` holds the chunk count, ``name.0``, ``name.1``, ... the
chunks), so there is no size limit on them.
"""

import errno
import json
import os

from twisted.protocols import amp

from omnirtp import sync
from omnirtp.errors import NGError, PortsExhausted

#: bytes of JSON per AMP value (below amp.MAX_VALUE_LENGTH)
CHUNK_SIZE = 60000

#: AMP error codes; PortsExhausted must come before its base class NGError
#: (the responder side picks the first listed class the error is an
#: instance of).
ERRORS = {PortsExhausted: b"PORTS_EXHAUSTED", NGError: b"NG_ERROR"}

#: keys of a socket configuration entry that hold socket addresses
ADDRESS_KEYS = ("local", "peer", "rtcp_peer", "endpoint")


def _address(value):
    """A JSON ``[addr, port]`` (or None) back to an ``(addr, port)`` tuple."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError("socket address must be [address, port], got %r" % (value,))
    return (value[0], value[1])


def write_now(writer, data):
    """Write ``data`` to the pipe of ``writer`` (a twisted ``ProcessWriter``)
    at once when nothing is queued before it; what the pipe does not take
    (or everything, after an error) goes through ``writer.write`` as usual.

    ``writer.write`` alone queues the bytes and asks the reactor to say
    when the pipe is writable: two ``epoll_ctl`` calls and a reactor turn
    per AMP message, on both ends of every engine call."""
    if writer.dataBuffer or writer._tempDataBuffer or writer.disconnecting \
            or not writer.connected:
        writer.write(data)
        return
    try:
        n = os.write(writer.fd, data)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EINTR):
            writer.write(data)  # the writer meets the error and reports it
            return
        n = 0
    if n < len(data):
        writer.write(data[n:])


class Text(amp.Argument):
    """A ``str`` that may hold lone surrogates: ng strings (call-ids, tags)
    are decoded with ``surrogateescape`` so that any bytes Kamailio sends
    survive; AMP's own ``Unicode`` would refuse them."""

    def toString(self, inObject):
        return inObject.encode("utf-8", "surrogateescape")

    def fromString(self, inString):
        return inString.decode("utf-8", "surrogateescape")


class ChunkedJSON(amp.Argument):
    """A JSON-serialisable value of any size, spread over several AMP keys.

    Subclasses convert between the Python value the interface promises and
    its JSON form with :meth:`toJSON` and :meth:`fromJSON`.
    """

    def toJSON(self, value):
        return value

    def fromJSON(self, value):
        return value

    def toBox(self, name, strings, objects, proto):
        pyname = name.decode("ascii")
        value = objects.get(pyname)
        if value is None and self.optional:
            return
        data = json.dumps(self.toJSON(value), separators=(",", ":")).encode("utf-8")
        chunks = [data[i:i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)] or [b""]
        strings[name] = b"%d" % (len(chunks),)
        for i, chunk in enumerate(chunks):
            strings[name + b".%d" % (i,)] = chunk

    def fromBox(self, name, strings, objects, proto):
        pyname = name.decode("ascii")
        count = strings.get(name)
        if count is None:
            if self.optional:
                objects[pyname] = None
                return
            raise KeyError(name)
        try:
            n = int(count)
        except ValueError:
            raise ValueError("chunk count of %r is not an integer: %r" % (name, count))
        try:
            data = b"".join(strings[name + b".%d" % (i,)] for i in range(n))
        except KeyError as e:
            raise ValueError("%r is missing chunk %r" % (name, e.args[0]))
        objects[pyname] = self.fromJSON(json.loads(data.decode("utf-8")))


class SocketConfigs(ChunkedJSON):
    """``configure``'s list of socket dicts (address tuples restored).

    Every other key travels as JSON unchanged, the ``srtp_in`` /
    ``srtp_out`` crypto dicts included; a key that is absent stays absent
    (for those two, absent and None mean different things)."""

    def fromJSON(self, value):
        out = []
        for entry in value:
            entry = dict(entry)
            for key in ADDRESS_KEYS:
                if key in entry:
                    entry[key] = _address(entry[key])
            out.append(entry)
        return out


class SocketKeys(ChunkedJSON):
    """A list of ``(addr, port)`` socket keys."""

    def fromJSON(self, value):
        return [_address(v) for v in value]


class StatsMap(ChunkedJSON):
    """``{call_id: {(addr, port): counters}}``.

    JSON objects cannot be keyed by tuples, so each call maps to a list of
    ``[addr, port, counters]``; ``counters["endpoint"]`` is a tuple again.
    """

    def toJSON(self, value):
        return {
            call_id: [[key[0], key[1], counters] for key, counters in sockets.items()]
            for call_id, sockets in value.items()
        }

    def fromJSON(self, value):
        out = {}
        for call_id, entries in value.items():
            sockets = {}
            for addr, port, counters in entries:
                if "endpoint" in counters:
                    counters["endpoint"] = _address(counters["endpoint"])
                ice = counters.get("ice")
                if isinstance(ice, dict) and ice.get("selected") is not None:
                    ice["selected"] = _address(ice["selected"])
                sockets[(addr, port)] = counters
            out[call_id] = sockets
        return out


def placeholder(index):
    """The placeholder RTP port of the ``index``-th port pair an
    :class:`AllocateConfigure` allocates (its RTCP port is one more):
    -2, -4, -6, ... (RTCP -1, -3, -5, ...), never a real port."""
    return -2 * index - 2


def fill_ports(entries, ports):
    """``configure`` entries with placeholder socket keys (see
    :func:`placeholder`) turned into the real ones: ``ports`` are the RTP
    ports allocated, in placeholder order.  Entries are copied; keys with
    a real port stay as they are."""
    def real(key):
        if key is None or key[1] >= 0:
            return key
        index, rtp = divmod(-key[1] - 1, 2)
        if index >= len(ports):
            raise ValueError("placeholder port %d names no allocated port" % (key[1],))
        return (key[0], ports[index] + (0 if rtp else 1))

    out = []
    for entry in entries:
        entry = dict(entry)
        for key in PLACEHOLDER_KEYS:
            if key in entry:
                entry[key] = real(entry[key])
        out.append(entry)
    return out


#: the keys of a configure entry that name our own sockets (placeholders
#: may stand in them); ``endpoint`` is the party's address
PLACEHOLDER_KEYS = ("local", "peer", "rtcp_peer")


@sync.steps
def allocate_configure(engine, call_id, groups, sockets):
    """``engine.allocate`` for every ``(address, count)`` of ``groups``,
    then ``engine.configure`` of ``sockets`` with their placeholder keys
    filled (:func:`fill_ports`): the list of each group's ports, or the
    error, after which nothing of this allocation is held (all or
    nothing).  What a worker does for :class:`AllocateConfigure`."""
    taken = []
    try:
        for address, count in groups:
            ports = yield engine.allocate(call_id, address, count)
            taken.append((address, list(ports)))
        flat = [port for _address, ports in taken for port in ports]
        yield engine.configure(call_id, fill_ports(sockets, flat))
    except BaseException:
        keys = [(address, port) for address, ports in taken for port in ports]
        if keys:
            yield engine.release(call_id, keys)
        raise
    return [ports for _address, ports in taken]


class Allocate(amp.Command):
    """``IMediaEngine.allocate``."""

    arguments = [
        (b"call_id", Text()),
        (b"address", Text()),
        (b"count", amp.Integer()),
    ]
    response = [(b"ports", amp.ListOf(amp.Integer()))]
    errors = ERRORS


class Claim(amp.Command):
    """``IMediaEngine.claim``."""

    arguments = [
        (b"call_id", Text()),
        (b"address", Text()),
        (b"ports", amp.ListOf(amp.Integer())),
    ]
    response = [(b"ports", amp.ListOf(amp.Integer()))]
    errors = ERRORS


class Configure(amp.Command):
    """``IMediaEngine.configure``."""

    arguments = [(b"call_id", Text()), (b"sockets", SocketConfigs())]
    response = []
    errors = ERRORS


class AllocateConfigure(amp.Command):
    """A new call's ``allocate`` (every ``[address, count]`` of ``groups``)
    and ``configure`` in one round trip: the sockets' keys name the ports
    to be allocated by placeholders (:func:`placeholder`), filled in by
    the worker (:func:`allocate_configure`); the answer is each group's
    ports."""

    arguments = [(b"call_id", Text()), (b"groups", ChunkedJSON()),
                 (b"sockets", SocketConfigs())]
    response = [(b"ports", ChunkedJSON())]
    errors = ERRORS


class Release(amp.Command):
    """``IMediaEngine.release``; ``sockets`` None releases the whole call."""

    arguments = [(b"call_id", Text()), (b"sockets", SocketKeys(optional=True))]
    response = []
    errors = ERRORS


class Stats(amp.Command):
    """``IMediaEngine.stats``; ``call_id`` None means every call."""

    arguments = [(b"call_id", Text(optional=True))]
    response = [(b"stats", StatsMap())]
    errors = ERRORS


class Totals(amp.Command):
    """``IMediaEngine.totals`` (a JSON dict: extra counters survive)."""

    arguments = []
    response = [(b"totals", ChunkedJSON())]
    errors = ERRORS


class SetCertificate(amp.Command):
    """The daemon's DTLS certificate for the worker's engine (sent before
    anything else, after every start): PEM certificate and PEM
    (unencrypted PKCS#8) private key.  Over the AMP pipe, never on a
    command line, where any local user could read the key."""

    arguments = [(b"certificate", amp.String()), (b"key", amp.String())]
    response = []
    errors = ERRORS


class SetLogLevel(amp.Command):
    """The worker's log level from now on (syslog 0-7; above 7 logs
    everything, below 0 nothing): the highest of the daemon's subsystem
    levels, sent whenever the operator changes them (``set loglevel``,
    SIGUSR1/SIGUSR2, SIGHUP).  The control process filters the records it
    re-emits per subsystem."""

    arguments = [(b"level", amp.Integer())]
    response = []


class Ping(amp.Command):
    """Is the worker up?  Answers with its process id."""

    arguments = []
    response = [(b"pid", amp.Integer())]


class Shutdown(amp.Command):
    """Stop the worker (it answers first, then stops its reactor)."""

    arguments = []
    response = []
