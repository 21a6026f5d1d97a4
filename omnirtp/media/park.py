"""The lazy hand-off of ``num-threads >= 1``: a new plain call's sockets
wait in the control process until media arrives.

With media workers (:class:`omnirtp.media.pool.WorkerPool`) every engine
call would be a round trip to a worker process: a call offered, answered
and deleted without media (a failed or cancelled call, most of a set-up
benchmark) would pay three.  Instead, a new call whose entries are all
*plain* (:func:`checked`: no ICE, no DTLS, no SRTP, no codec, recording
or other transform key) is *parked*: the control process binds its ports
itself (from the slice of the worker chosen for it, with a port pool of
its own: :class:`ParkedCall`), keeps the configure entries, and watches
its sockets for the first readable event, reading nothing: all parked
sockets in one epoll of the pool's (:class:`Poller`, the reactor's single
reader for them all), or, on a test's fake network, a reactor reader per
socket (:class:`Readers`, :class:`Watch`).  Configure, stats, release of a parked call are
answered here, at once.  The first datagram on any of its sockets hands
the call over: the pool sends the sockets' file descriptors to the worker
over a Unix socket (``SCM_RIGHTS``: :func:`send_sockets` /
:func:`receive_sockets`) and the call's state in an ``adopt`` request on
the worker's pipe, right behind them; the worker makes its relay sockets
from them (``EmbeddedEngine.adopt_now``) and answers, then the control
process closes its copies.  The datagrams that arrived meanwhile wait in
the kernel's queue and are read by the worker.

Nothing here is on a packet's path: the worker relays a handed-off call
with the sockets and code of a call it bound itself.
"""

import array
import errno
import select
import socket

from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

from omnirtp.media.relay import LEARNING_MODES

try:  # (make ext: the entries' test in C, the same result)
    from omnirtp.media import _fastpark
except ImportError:  # pragma: no cover - the pure-Python checked
    _fastpark = None

#: the keys a parked call's entries may have (a plain call's, as the
#: negotiator writes them); the transform keys among them must be None
PLAIN_KEYS = frozenset(("local", "peer", "rtcp_peer", "endpoint", "learning", "strict",
                        "handover", "asymmetric", "reset", "tos", "ice", "dtls", "srtp_in",
                        "srtp_out"))
#: keys of PLAIN_KEYS that must be None (or absent) in a parked call's entry
NONE_KEYS = ("ice", "dtls", "srtp_in", "srtp_out")

#: at most this many sockets are handed over in one message (the kernel's
#: SCM_MAX_FD is 253): a call with more is not parked
MAX_SOCKETS = 250

#: at most this many sockets are parked at once when the open files limit
#: is unlimited (RLIM_INFINITY)
MAX_PARKED = 1 << 30

#: parked call states
PARKED = "parked"  # its sockets are watched
MOVING = "moving"  # handed to a worker, no answer yet


def _is_key(value):
    return (type(value) is tuple and len(value) == 2 and type(value[0]) is str
            and type(value[1]) is int)


#: the key tuples of the entries kept, one object per distinct tuple (a
#: plain call's entries all have the negotiator's keys, in its order)
_NAMES = {}


def pack(entry):
    """``entry`` (a dict) as a parked call keeps it: ``(keys, values)``,
    the keys' tuple shared by every entry with those keys (smaller than
    a dict per socket of every idle parked call: docs/performance.md,
    "Ninth pass: the lazy hand-off", idle calls)."""
    return _shared(tuple(entry)), tuple(entry.values())


def _shared(names):
    """The one tuple kept for the key tuple ``names``."""
    shared = _NAMES.get(names)
    if shared is not None:
        return shared
    if len(_NAMES) < 64:  # (our negotiator's few; never a growing table)
        _NAMES[names] = names
    return names


class _Form:
    """What is known of every entry with the key tuple ``names`` (made
    once per distinct tuple: the negotiator writes two): whether its keys
    are plain (only :data:`PLAIN_KEYS`), where each key checked or
    changed sits among its values, and for an entry with "reset" and
    "tos" the key tuple kept (:func:`pack`'s shared one, without
    "reset"), so :func:`checked` and :meth:`ParkedCall.keep_checked` read
    an entry's values by position, without a dict lookup or copy."""

    __slots__ = ("names", "plain", "none_at", "at_local", "at_peers", "at_endpoint",
                 "at_learning", "at_tos", "at_reset", "kept", "kept_tos")

    def __init__(self, names):
        at = {name: index for index, name in enumerate(names)}
        self.names = names
        self.plain = at.keys() <= PLAIN_KEYS
        self.none_at = tuple(at[key] for key in NONE_KEYS if key in at)
        self.at_local = at.get("local", -1)
        self.at_peers = tuple(at[key] for key in ("peer", "rtcp_peer") if key in at)
        self.at_endpoint = at.get("endpoint", -1)
        self.at_learning = at.get("learning", -1)
        self.at_tos = at.get("tos", -1)
        if "reset" in at and "tos" in at:
            self.at_reset = at["reset"]
            self.kept = _shared(names[:self.at_reset] + names[self.at_reset + 1:])
            self.kept_tos = self.kept.index("tos")
        else:
            # (kept through a dict, as pack() keeps it)
            self.at_reset = self.kept_tos = -1
            self.kept = None


#: the key tuple of an entry -> its _Form
_FORMS = {}


def _form(names):
    """``_FORMS[names]``, made."""
    form = _Form(names)
    if len(_FORMS) < 64:  # (our negotiator's few; never a growing table)
        _FORMS[names] = form
    return form


if _fastpark is not None:
    # each plain key's kind, the K_ values of _fastpark.c
    _fastpark.setup({"strict": 0, "handover": 0, "asymmetric": 0, "reset": 0,
                     "ice": 1, "dtls": 1, "srtp_in": 1, "srtp_out": 1, "local": 2,
                     "peer": 3, "rtcp_peer": 4, "endpoint": 5, "learning": 6, "tos": 7},
                    _FORMS, LEARNING_MODES)


def checked(entries, held):
    """``entries`` (configure entries) as :meth:`ParkedCall.keep_checked`
    takes them, ``[(form, values)]`` (each entry's :class:`_Form` and a
    list of its values), if every one is plain for the call's socket
    keys ``held``; None if any is not.  Plain: a dict of only the keys of
    :data:`PLAIN_KEYS`, those of :data:`NONE_KEYS` None (or absent), its
    ``local`` one of ``held``, its ``peer`` and ``rtcp_peer`` None or in
    ``held``, its ``endpoint`` None or an ``(address, port)`` key, its
    ``learning`` None or one of ``LEARNING_MODES``, its ``tos`` None or
    an int 0-255 (anything else, even an error the engine would report,
    goes to a worker, which answers as it always did).  One pass over
    each entry's values by position: in C (``omnirtp.media._fastpark``,
    ``make ext``) for an exact list and set whose entries' key tuples
    have been seen before, else :func:`_checked`.  (The same tests one
    dict at a time, ``plain_entry``, are the reference in
    ``omnirtp/test/test_park.py``.)"""
    if _fastpark is not None:
        out = _fastpark.checked(entries, held)
        if out is not None:
            return out if out is not False else None
    return _checked(entries, held)


def _checked(entries, held):
    """:func:`checked` in Python (the reference the C one is tested
    against; it makes the forms of new key tuples)."""
    out = []
    forms = _FORMS
    for entry in entries:
        if entry.__class__ is not dict:
            return None
        names = tuple(entry)
        form = forms.get(names)
        if form is None:
            form = _form(names)
        if not form.plain:
            return None
        values = list(entry.values())
        for at in form.none_at:
            if values[at] is not None:
                return None
        at = form.at_local
        if at < 0 or values[at] not in held:
            return None
        for at in form.at_peers:
            value = values[at]
            if value is not None and value not in held:
                return None
        at = form.at_endpoint
        if at >= 0:
            value = values[at]
            if value is not None and not _is_key(value):
                return None
        at = form.at_learning
        if at >= 0:
            value = values[at]
            if value is not None and value not in LEARNING_MODES:
                return None
        at = form.at_tos
        if at >= 0:
            value = values[at]
            if value is not None and (type(value) is not int or not 0 <= value <= 255):
                return None
        out.append((form, values))
    return out


def unpack(packed):
    """The dict :func:`pack` was given (the same keys, in order)."""
    return dict(zip(packed[0], packed[1]))


def field(packed, name):
    """``unpack(packed).get(name)`` without the dict."""
    names, values = packed
    try:
        return values[names.index(name)]
    except ValueError:
        return None


class ParkedCall:
    """A parked call: its sockets bound here, its configuration kept.

    ``slot``: the pool's worker slot whose slice the ports came from (and
    which is asked first to adopt the call); ``pairs``: ``{(address, rtp
    port): (rtp socket, rtcp socket)}`` in allocation order; ``entries``:
    each configured socket's latest entry (``{key: packed entry}``,
    :func:`pack`; its ``tos`` the latest one given); ``since``: each socket's last signalling reset
    (or its binding), what the relay's learning window and
    ``last_packet`` start from; ``keys``: the set of its sockets' keys
    (RTP and RTCP: what its entries may name); ``waiting``: the requests
    that came during the hand-off, ``(function, args, Deferred)``, run in
    order after it.  Its sockets are watched (the pool's :class:`Poller`)
    while its state is :data:`PARKED`."""

    __slots__ = ("call_id", "slot", "pairs", "entries", "since", "state", "keys",
                 "waiting", "tag")

    def __init__(self, call_id, slot):
        self.call_id = call_id
        self.slot = slot
        self.pairs = {}
        self.entries = {}
        self.since = {}
        self.state = PARKED
        self.keys = set()
        self.waiting = []
        self.tag = None

    def add(self, address, port, rtp, rtcp, now):
        """Keep the bound pair ``rtp``, ``rtcp`` of RTP port ``port``."""
        rtp_key = (address, port)
        rtcp_key = (address, port + 1)
        self.pairs[rtp_key] = (rtp, rtcp)
        self.since[rtp_key] = self.since[rtcp_key] = now
        self.keys.add(rtp_key)
        self.keys.add(rtcp_key)

    def keep_checked(self, entries, now, real=None):
        """Keep the entries :func:`checked` passed (``[(form, values)]``;
        their value lists are used up): the latest entry of a socket
        replaces the one before (a plain entry says all), a ``tos`` of
        None keeps the one given before, a ``reset`` restarts the
        socket's learning window and ``last_packet`` at ``now``.  ``real``:
        ``{placeholder socket key: the socket key bound for it}``, a new
        call's (its entries name only placeholders: every socket key in
        them is one of ``real``'s)."""
        kept = self.entries
        for form, values in entries:
            at = form.at_local
            if real is not None:
                values[at] = real[values[at]]
                for at_peer in form.at_peers:
                    value = values[at_peer]
                    if value is not None:
                        values[at_peer] = real[value]
            local = values[at]
            names = form.kept
            if names is not None:
                # (the negotiator's entries: the reset taken out, the
                # same (keys, values) as pack() gives below)
                if values.pop(form.at_reset):
                    self.since[local] = now
                at = form.kept_tos
                if values[at] is None:
                    before = kept.get(local)
                    if before is not None:
                        # (the tos kept before: at the same place when
                        # kept with the same keys)
                        tos = before[1][at] if before[0] is names else field(before, "tos")
                        if tos is not None:
                            values[at] = tos
                kept[local] = (names, tuple(values))
                continue
            entry = dict(zip(form.names, values))
            if entry.get("tos") is None:
                tos = self._tos_before(local)
                if tos is not None:
                    entry["tos"] = tos
            if entry.pop("reset", False):
                self.since[local] = now
            kept[local] = pack(entry)

    def _tos_before(self, local):
        """The ``tos`` of the entry kept for socket ``local``, or None."""
        before = self.entries.get(local)
        return None if before is None else field(before, "tos")

    def entry(self, key):
        """The entry kept for socket ``key`` (a new dict), or None."""
        packed = self.entries.get(key)
        return None if packed is None else unpack(packed)

    def entry_list(self):
        """The entries kept, as dicts (what the worker is to apply)."""
        return [unpack(packed) for packed in self.entries.values()]

    def sockets_keys(self):
        for address, port in self.pairs:
            yield (address, port)
            yield (address, port + 1)

    def sockets(self):
        """The bound sockets, RTP and RTCP of each pair, in order."""
        out = []
        for rtp, rtcp in self.pairs.values():
            out.append(rtp)
            out.append(rtcp)
        return out

    def groups(self):
        """``[(address, [rtp ports])]`` in allocation order."""
        groups = {}
        for address, port in self.pairs:
            groups.setdefault(address, []).append(port)
        return list(groups.items())

    def drop(self, keys):
        """Forget the pairs of the RTP ``keys`` (released; keys the call
        does not hold are left out): their entries go, and entries that
        send out of them send nowhere (as the engine does to the peers of
        closed sockets).  Returns ``[(rtp key, (rtp socket, rtcp
        socket))]`` of the pairs dropped."""
        gone = []
        gone_keys = set()
        for key in keys:
            pair = self.pairs.pop(key, None)
            if pair is None:
                continue
            gone.append((key, pair))
            for k in (key, (key[0], key[1] + 1)):
                gone_keys.add(k)
                self.keys.discard(k)
                self.entries.pop(k, None)
                self.since.pop(k, None)
        if gone_keys:
            entries = self.entries
            for local, packed in list(entries.items()):
                entry = unpack(packed)
                changed = False
                for name in ("peer", "rtcp_peer"):
                    if entry.get(name) in gone_keys:
                        entry[name] = None
                        changed = True
                if changed:
                    entries[local] = pack(entry)
        return gone

    def drop_all(self):
        """:meth:`drop` of every pair (the call holds nothing after it),
        without looking at entries left: returns what :meth:`drop` does."""
        gone = list(self.pairs.items())
        self.pairs.clear()
        self.entries.clear()
        self.since.clear()
        self.keys.clear()
        return gone

    def stats(self):
        """``{key: counters}`` as the engine's ``stats`` gives them for
        sockets that never saw a packet (``RelaySocket.counters``)."""
        out = {}
        entries = self.entries
        since = self.since
        for address, port in self.pairs:
            for key in ((address, port), (address, port + 1)):
                packed = entries.get(key)
                out[key] = {
                    "packets": 0,
                    "bytes": 0,
                    "errors": 0,
                    "last_packet": since[key],
                    "endpoint": None if packed is None else field(packed, "endpoint"),
                    "confirmed": False,
                }
        return out

    def newest(self):
        """The newest ``last_packet`` of its sockets (``last_packets``)."""
        return max(self.since.values()) if self.since else None


class Watch:
    """The reactor reader of a parked socket (:class:`Readers`): ``doRead``
    calls ``wake(call_id)`` on the first readable event, reading nothing
    (the worker will)."""

    __slots__ = ("_fd", "call_id", "wake")

    def __init__(self, sock, call_id, wake):
        self._fd = sock.fileno()
        self.call_id = call_id
        self.wake = wake

    def fileno(self):
        return self._fd

    def doRead(self):
        self.wake(self.call_id)

    def connectionLost(self, reason):
        pass

    def logPrefix(self):
        return "parked call"


@implementer(IReadDescriptor)
class Poller:
    """The parked calls' sockets behind one epoll of their own; the
    reactor reads only the epoll's file descriptor, readable while any
    parked socket is.

    :meth:`watch` registers a call's sockets (an ``epoll_ctl`` each, no
    reactor bookkeeping); ``doRead`` asks the epoll which sockets have a
    datagram and calls ``wake(call_id)`` for each, reading nothing (the
    worker will).  A socket leaves the epoll in one of two ways:
    :meth:`unwatch` (``epoll_ctl`` delete) for sockets that stay open,
    the ones handed to a worker (their files live on there); and
    :meth:`closing` for sockets about to be closed here, which only
    forgets them: closing a socket's last descriptor takes it out of the
    epoll (the kernel does so for every epoll that watches a file it
    releases), so a call released while parked costs no ``epoll_ctl``.
    Level-triggered: a socket whose call did not leave the epoll after
    its ``wake`` is taken out (a safety net: the pool's ``wake`` always
    moves the call or finds it gone).
    """

    __slots__ = ("_reactor", "_wake", "_epoll", "_register", "_unregister", "_poll", "_fd",
                 "_calls", "reading")

    #: sockets reported per reactor wakeup at most
    MAX_EVENTS = 256

    def __init__(self, reactor, wake):
        self._reactor = reactor
        self._wake = wake
        self._epoll = epoll = select.epoll()
        self._register = epoll.register
        self._unregister = epoll.unregister
        self._poll = epoll.poll
        self._fd = epoll.fileno()
        #: socket's file descriptor -> the call_id of the parked call
        self._calls = {}
        self.reading = False

    def watch(self, call_id, pairs):
        """Watch the sockets of ``pairs`` (``(rtp, rtcp)`` each) for
        ``call_id``; an OSError (the kernel's watch limit) leaves none of
        them watched."""
        register = self._register
        calls = self._calls
        try:
            for rtp, rtcp in pairs:
                fd = rtp.fileno()
                register(fd, _EPOLLIN)
                calls[fd] = call_id
                fd = rtcp.fileno()
                register(fd, _EPOLLIN)
                calls[fd] = call_id
        except OSError:
            self.unwatch(pairs)
            raise
        if not self.reading:
            self.reading = True
            self._reactor.addReader(self)

    def unwatch(self, pairs):
        """Stop watching the sockets of ``pairs``, which stay open."""
        pop = self._calls.pop
        unregister = self._unregister
        for pair in pairs:
            for sock in pair:
                fd = sock.fileno()
                if pop(fd, None) is not None:
                    unregister(fd)

    def closing(self, pairs):
        """Forget the sockets of ``pairs``, about to be closed (and with
        them, their last descriptor: they leave the epoll then)."""
        pop = self._calls.pop
        for rtp, rtcp in pairs:
            pop(rtp.fileno(), None)
            pop(rtcp.fileno(), None)

    def __len__(self):
        return len(self._calls)

    def fileno(self):
        return self._fd

    def doRead(self):
        try:
            events = self._poll(0, self.MAX_EVENTS)
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        calls = self._calls
        for fd, _event in events:
            call_id = calls.get(fd)
            if call_id is not None:
                self._wake(call_id)
                if calls.get(fd) is not call_id:
                    continue  # the call left the epoll (handed over)
                del calls[fd]
            try:
                self._unregister(fd)
            except OSError:
                pass

    def connectionLost(self, reason):
        pass

    def logPrefix(self):
        return "parked calls"

    def close(self):
        """Leave the reactor and close the epoll (no call is parked)."""
        if self.reading:
            self.reading = False
            self._reactor.removeReader(self)
        self._calls.clear()
        self._epoll.close()


_EPOLLIN = select.EPOLLIN


class Readers:
    """:class:`Poller`'s calls over a reactor reader per socket
    (:class:`Watch`): the parked sockets of a test's fake network, which
    have no file to put in an epoll."""

    __slots__ = ("_reactor", "_wake", "_watches")

    def __init__(self, reactor, wake):
        self._reactor = reactor
        self._wake = wake
        self._watches = {}  # fd -> Watch

    def watch(self, call_id, pairs):
        add = self._reactor.addReader
        for pair in pairs:
            for sock in pair:
                watch = Watch(sock, call_id, self._wake)
                add(watch)
                self._watches[watch.fileno()] = watch

    def unwatch(self, pairs):
        remove = self._reactor.removeReader
        for pair in pairs:
            for sock in pair:
                watch = self._watches.pop(sock.fileno(), None)
                if watch is not None:
                    remove(watch)

    #: (a reader leaves the reactor before its socket is closed)
    closing = unwatch

    def __len__(self):
        return len(self._watches)

    def close(self):
        remove = self._reactor.removeReader
        for watch in self._watches.values():
            remove(watch)
        self._watches.clear()


def send_sockets(channel, tag, socks):
    """Send the file descriptors of ``socks`` over the Unix socket
    ``channel`` in one message whose bytes are ``tag``; raises OSError
    (``EAGAIN``: the worker is not reading) if it cannot."""
    fds = array.array("i", [s.fileno() for s in socks])
    channel.sendmsg([tag], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])


def receive_sockets(channel, tag, count):
    """The ``count`` sockets of the next message on ``channel`` (the
    worker's end), which must carry ``tag``; ValueError if it does not
    (every descriptor it carried closed)."""
    size = socket.CMSG_SPACE(count * array.array("i").itemsize)
    data, ancillary, flags, _addr = channel.recvmsg(64, size)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if data != tag or len(fds) != count or flags & socket.MSG_CTRUNC:
        for fd in fds:
            try:
                socket.socket(fileno=fd).close()
            except OSError:
                pass
        raise ValueError("hand-off message %r with %d sockets, expected %r with %d"
                         % (data, len(fds), tag, count))
    return [_adopted(fd) for fd in fds]


def _adopted(fd):
    """The socket object of a descriptor received: the ``_socket.socket``
    type the engine binds its own with, non-blocking as they are (the
    descriptor's O_NONBLOCK came with it; the object's own timeout is set
    to match, as SOCK_NONBLOCK sets it for a socket made here)."""
    import _socket

    sock = _socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock
