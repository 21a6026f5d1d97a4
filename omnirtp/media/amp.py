"""AMP commands between the control process and its media workers, and
the helpers of a new call's allocate + configure.

The engine calls themselves (:class:`omnirtp.interfaces.IMediaEngine`'s
methods, one round trip each) are not AMP commands: they are request and
reply frames of their own on the same pipes (:mod:`omnirtp.media.wire`),
which cost a fraction of an AMP box with JSON values and its Deferreds.
AMP, in frames of its own, carries what is not on the call path: the
certificate (:class:`SetCertificate`), the log level (:class:`SetLogLevel`),
:class:`Ping` and :class:`Shutdown`.
"""

import errno
import os

from twisted.protocols import amp

from omnirtp import sync
from omnirtp.errors import NGError, PortsExhausted

#: AMP error codes; PortsExhausted must come before its base class NGError
#: (the responder side picks the first listed class the error is an
#: instance of).
ERRORS = {PortsExhausted: b"PORTS_EXHAUSTED", NGError: b"NG_ERROR"}


def write_now(writer, data):
    """Write ``data`` to the pipe of ``writer`` (a twisted ``ProcessWriter``)
    at once when nothing is queued before it; what the pipe does not take
    (or everything, after an error) goes through ``writer.write`` as usual.

    ``writer.write`` alone queues the bytes and asks the reactor to say
    when the pipe is writable: two ``epoll_ctl`` calls and a reactor turn
    per frame, on both ends of every engine call."""
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


def placeholder(index):
    """The placeholder RTP port of the ``index``-th port pair a new call's
    allocate + configure (:func:`allocate_configure`) allocates (its RTCP port is one more):
    -2, -4, -6, ... (RTCP -1, -3, -5, ...), never a real port."""
    return -2 * index - 2


def fill_ports(entries, ports, copy=True):
    """``configure`` entries with placeholder socket keys (see
    :func:`placeholder`) turned into the real ones: ``ports`` are the RTP
    ports allocated, in placeholder order.  Entries are copied (not with
    ``copy`` False: changed in place, e.g. a worker's, just read from the
    pipe); keys with a real port stay as they are."""
    def real(key):
        if key is None or key[1] >= 0:
            return key
        index, rtp = divmod(-key[1] - 1, 2)
        if index >= len(ports):
            raise ValueError("placeholder port %d names no allocated port" % (key[1],))
        return (key[0], ports[index] + (0 if rtp else 1))

    out = []
    for entry in entries:
        if copy:
            entry = dict(entry)
        for key in PLACEHOLDER_KEYS:
            value = entry.get(key)
            if value is not None and value[1] < 0:
                entry[key] = real(value)
        out.append(entry)
    return out


#: the keys of a configure entry that name our own sockets (placeholders
#: may stand in them); ``endpoint`` is the party's address
PLACEHOLDER_KEYS = ("local", "peer", "rtcp_peer")


def allocate_configure(engine, call_id, groups, sockets, copy=True):
    """``engine.allocate`` for every ``(address, count)`` of ``groups``,
    then ``engine.configure`` of ``sockets`` with their placeholder keys
    filled (:func:`fill_ports`): the list of each group's ports, or the
    error, after which nothing of this allocation is held (all or
    nothing).  What a worker does for a new call's allocate + configure
    (:meth:`omnirtp.media.pool.WorkerPool.allocate_configure`); ``copy``
    is :func:`fill_ports`'s.  With an engine that answers at once
    (``allocate_now``, ``configure_now``, ``release_now``: the embedded
    engine) the same, with no Deferred."""
    allocate = getattr(engine, "allocate_now", None)
    configure = getattr(engine, "configure_now", None)
    release = getattr(engine, "release_now", None)
    if allocate is None or configure is None or release is None:
        return _allocate_configure(engine, call_id, groups, sockets, copy)
    taken = []
    try:
        for address, count in groups:
            taken.append((address, list(allocate(call_id, address, count))))
        flat = [port for _address, ports in taken for port in ports]
        configure(call_id, fill_ports(sockets, flat, copy))
    except BaseException:
        keys = [(address, port) for address, ports in taken for port in ports]
        if keys:
            release(call_id, keys)
        raise
    return [ports for _address, ports in taken]


@sync.steps
def _allocate_configure(engine, call_id, groups, sockets, copy=True):
    taken = []
    try:
        for address, count in groups:
            ports = yield engine.allocate(call_id, address, count)
            taken.append((address, list(ports)))
        flat = [port for _address, ports in taken for port in ports]
        yield engine.configure(call_id, fill_ports(sockets, flat, copy))
    except BaseException:
        keys = [(address, port) for address, ports in taken for port in ports]
        if keys:
            yield engine.release(call_id, keys)
        raise
    return [ports for _address, ports in taken]


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
