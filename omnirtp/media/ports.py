"""RTP/RTCP port pairs for one local address.

A pair is an even RTP port ``p`` and the RTCP port ``p + 1``; both must lie
in ``[port_min, port_max]``.  Free pairs are handed out in a shuffled order
and released pairs go to the back of the queue, so a port that was just
freed is not reused at once (late packets of the old call must not reach a
new one).  Pairs that cannot be bound (another process holds one of the two
ports) are set aside in a quarantine and retried only when the queue runs
dry.

The pool does no I/O itself: :meth:`PortPool.acquire` takes a ``bind``
callable from the caller, so tests can pass fakes.
"""

import errno
import random
from collections import deque

from omnirtp.errors import PortsExhausted

PORT_LOWEST = 1
PORT_HIGHEST = 65535

# bind() errors that mean "this port is not usable right now", not "the
# address is wrong": the pair is quarantined and the next one is tried.
UNBINDABLE_ERRNOS = frozenset((errno.EADDRINUSE, errno.EACCES))
#: errnos of a bind that failed for want of a file, not of the port: the
#: process (EMFILE) or the system (ENFILE) is at its open files limit
NO_FILES_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE))


def _first_pair(port_min):
    return port_min + (port_min & 1)


def count_pairs(port_min, port_max):
    """The number of even/odd pairs that fit in ``[port_min, port_max]``."""
    first = _first_pair(port_min)
    if first + 1 > port_max:
        return 0
    return (port_max - first + 1) // 2


def check_range(port_min, port_max):
    """Raise ``ValueError`` unless the range holds at least one whole pair."""
    for name, value in (("port_min", port_min), ("port_max", port_max)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("%s must be an integer, got %r" % (name, value))
        if not PORT_LOWEST <= value <= PORT_HIGHEST:
            raise ValueError(
                "%s (%d) must be in the range [%d, %d]"
                % (name, value, PORT_LOWEST, PORT_HIGHEST)
            )
    if port_min > port_max:
        raise ValueError(
            "port_min (%d) must not be greater than port_max (%d)" % (port_min, port_max)
        )
    if count_pairs(port_min, port_max) == 0:
        raise ValueError(
            "port range [%d, %d] holds no even RTP port with its RTCP port" % (port_min, port_max)
        )


def slice_range(port_min, port_max, index, count):
    """Return ``(lo, hi)``: part ``index`` of ``count`` of a port range.

    Every part is made of whole pairs (``lo`` even, ``hi`` odd); the sizes
    differ by at most one pair and the parts do not overlap.  Raises
    ``ValueError`` if there are fewer pairs than parts.
    """
    check_range(port_min, port_max)
    if not isinstance(count, int) or count < 1:
        raise ValueError("the number of slices must be a positive integer, got %r" % (count,))
    if not isinstance(index, int) or not 0 <= index < count:
        raise ValueError("slice index %r is not in [0, %d)" % (index, count))
    pairs = count_pairs(port_min, port_max)
    if pairs < count:
        raise ValueError(
            "port range [%d, %d] has %d pairs, too few for %d slices"
            % (port_min, port_max, pairs, count)
        )
    base, extra = divmod(pairs, count)
    start = index * base + min(index, extra)
    size = base + (1 if index < extra else 0)
    lo = _first_pair(port_min) + 2 * start
    return lo, lo + 2 * size - 1


class PortPool:
    """Even RTP ports (RTCP = RTP + 1) of ``[port_min, port_max]``.

    Counts (:attr:`used`, :attr:`free`, :attr:`quarantined`) are in ports,
    two per pair, as rtpengine reports them.
    """

    def __init__(self, port_min, port_max, rng=None):
        check_range(port_min, port_max)
        self.port_min = port_min
        self.port_max = port_max
        evens = list(range(_first_pair(port_min), port_max, 2))
        (rng if rng is not None else random.SystemRandom()).shuffle(evens)
        self._free = deque(evens)
        self._used = set()
        self._quarantine = deque()

    def __repr__(self):
        return "<PortPool [%d, %d] used=%d free=%d quarantined=%d>" % (
            self.port_min,
            self.port_max,
            self.used,
            self.free,
            self.quarantined,
        )

    @property
    def used(self):
        """Ports (RTP and RTCP) handed out and not yet released."""
        return 2 * len(self._used)

    @property
    def free(self):
        """Ports waiting in the queue (quarantined ones not included)."""
        return 2 * len(self._free)

    @property
    def quarantined(self):
        """Ports set aside because they could not be bound."""
        return 2 * len(self._quarantine)

    def slice(self, index, count):
        """A new pool over part ``index`` of ``count`` of this pool's range."""
        lo, hi = slice_range(self.port_min, self.port_max, index, count)
        return PortPool(lo, hi)

    def holds(self, port):
        """True if the even ``port`` is handed out by this pool."""
        return port in self._used

    def take(self):
        """Hand out the next free even RTP port (no binding is tried).

        Quarantined pairs are given another chance when the queue is empty.
        Raises :class:`omnirtp.errors.PortsExhausted` when nothing is left.
        """
        if not self._free:
            self._recycle()
            if not self._free:
                raise PortsExhausted()
        port = self._free.popleft()
        self._used.add(port)
        return port

    def claim(self, port):
        """Hand out exactly the even ``port`` (a restored call's), wherever
        it waits (queue or quarantine).  Raises
        :class:`omnirtp.errors.PortsExhausted` if it is handed out already
        or is not one of this pool's RTP ports."""
        if port in self._used:
            raise PortsExhausted()
        for queue in (self._free, self._quarantine):
            try:
                queue.remove(port)
            except ValueError:
                continue
            self._used.add(port)
            return port
        raise PortsExhausted()

    def release(self, port):
        """Return ``port`` (the even RTP port) to the back of the queue.

        Releasing a port this pool did not hand out does nothing.
        """
        if port in self._used:
            self._used.discard(port)
            self._free.append(port)

    def quarantine(self, port):
        """Set a handed-out ``port`` aside: it could not be bound."""
        if port in self._used:
            self._used.discard(port)
            self._quarantine.append(port)

    def acquire(self, bind):
        """Take a pair and bind it: return ``(port, bind(port))``.

        ``bind(port)`` binds both ``port`` and ``port + 1`` and returns
        whatever the caller needs (sockets).  If it raises ``OSError`` with
        ``EADDRINUSE`` or ``EACCES`` the pair is quarantined and the next is
        tried; other errors are raised after the pair is put back.  Raises
        :class:`omnirtp.errors.PortsExhausted` when no pair can be bound.
        """
        attempts = len(self._free) + len(self._quarantine)
        for _ in range(attempts):
            port = self.take()
            try:
                value = bind(port)
            except OSError as e:
                if e.errno in UNBINDABLE_ERRNOS:
                    self.quarantine(port)
                    continue
                self.release(port)
                raise
            except BaseException:
                self.release(port)
                raise
            return port, value
        raise PortsExhausted()

    def _recycle(self):
        self._free.extend(self._quarantine)
        self._quarantine.clear()
