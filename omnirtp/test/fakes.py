"""Test doubles shared by omnirtp's unit tests.

- :class:`MemoryUDPReactor`: Twisted's ``MemoryReactorClock`` (fd sets,
  TCP, time) plus ``listenUDP``, which Twisted's own fake lacks; ports a
  test marks as taken raise ``CannotListenError``.  It is checked against
  ``IReactorUDP``, ``IReactorFDSet`` and ``IReactorTime`` below.
- :class:`FakeNetwork` and :class:`FakeUDPSocket`: in-memory UDP sockets
  for code that binds its own sockets (the media relay): ``network.bind``
  has the signature of :func:`omnirtp.media.relay.bind_udp`, datagrams sent
  between bound fake sockets are queued in the receiver's inbox, and
  :meth:`FakeNetwork.pump` runs ``doRead`` of the reactor's readers until
  every inbox is empty.
"""

import errno
import itertools

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorFDSet,
    IReactorTime,
    IReactorUDP,
    IUDPTransport,
)
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer
from zope.interface.verify import verifyClass

_fds = itertools.count(1000)


@implementer(IUDPTransport, IListeningPort)
class MemoryUDPPort:
    """What :meth:`MemoryUDPReactor.listenUDP` returns: records writes."""

    def __init__(self, reactor, port, protocol, interface, maxPacketSize):
        self.reactor = reactor
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self.maxPacketSize = maxPacketSize
        self.written = []
        self.connected = None
        self.listening = True
        self.broadcast = False

    def getHost(self):
        cls = IPv6Address if ":" in self.interface else IPv4Address
        return cls("UDP", self.interface or "0.0.0.0", self.port)

    def write(self, packet, addr=None):
        self.written.append((packet, addr))

    def connect(self, host, port):
        self.connected = (host, port)

    def startListening(self):
        self.listening = True

    def stopListening(self):
        self.listening = False
        if self in self.reactor.udpPorts.get(self.port, ()):
            self.reactor.udpPorts[self.port].remove(self)
        self.protocol.doStop()
        return None

    loseConnection = stopListening

    def setBroadcastAllowed(self, enabled):
        self.broadcast = bool(enabled)

    def getBroadcastAllowed(self):
        return self.broadcast


@implementer(IReactorUDP)
class MemoryUDPReactor(MemoryReactorClock):
    """``MemoryReactorClock`` with ``listenUDP``.

    ``udpPorts`` maps a port number to the list of :class:`MemoryUDPPort`
    listening on it; port 0 gets the next number from 40000 up.  Ports in
    ``taken`` (a set a test fills) raise ``CannotListenError``.
    """

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.udpPorts = {}
        self.taken = set()
        self._ephemeral = itertools.count(40000)

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        if port in self.taken:
            raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "Address already in use"))
        if port == 0:
            port = next(self._ephemeral)
        udp = MemoryUDPPort(self, port, protocol, interface, maxPacketSize)
        self.udpPorts.setdefault(port, []).append(udp)
        protocol.makeConnection(udp)
        return udp


verifyClass(IReactorUDP, MemoryUDPReactor)
verifyClass(IReactorFDSet, MemoryUDPReactor)
verifyClass(IReactorTime, MemoryUDPReactor)
verifyClass(IUDPTransport, MemoryUDPPort)


class FakeUDPSocket:
    """An in-memory stand-in for a bound non-blocking UDP ``socket``."""

    def __init__(self, network, address, port):
        self.network = network
        self.key = (address, port)
        self._fd = next(_fds)
        self.inbox = []
        self.closed = False
        #: errno that sendto raises (e.g. errno.EAGAIN), or None
        self.send_error = None
        #: ``{(level, option): value}`` set by ``setsockopt``
        self.options = {}
        #: this socket and its duplicates (:meth:`dup`): the port is
        #: unbound when the last of them is closed
        self.copies = [self]

    def fileno(self):
        return -1 if self.closed else self._fd

    def getsockname(self):
        return self.key

    def setblocking(self, flag):
        pass

    def setsockopt(self, level, option, value):
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        self.options[(level, option)] = value

    def recvfrom(self, size):
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if not self.inbox:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        data, src = self.inbox.pop(0)
        return data[:size], src

    def sendto(self, data, dest):
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if self.send_error is not None:
            raise OSError(self.send_error, "fake send error")
        self.network.route(bytes(data), self.key, (dest[0], dest[1]))
        return len(data)

    def dup(self):
        """Another handle on the same bound socket (as ``dup(2)`` or a
        descriptor sent with SCM_RIGHTS gives): the same inbox and file
        number; the port stays bound until every handle is closed."""
        twin = FakeUDPSocket.__new__(FakeUDPSocket)
        twin.__dict__.update(self.__dict__)
        twin.closed = False
        self.copies.append(twin)
        return twin

    def close(self):
        if not self.closed:
            self.closed = True
            self.copies.remove(self)
            if self.copies:
                if self.network.bound.get(self.key) is self:
                    self.network.bound[self.key] = self.copies[0]
            else:
                self.network.unbind(self)


class FakeNetwork:
    """A loopback-only world of :class:`FakeUDPSocket`.

    ``bound`` maps ``(address, port)`` to the socket bound there; ``taken``
    holds keys that ``bind`` refuses with ``EADDRINUSE`` (another process);
    ``sent`` lists every ``(data, source, destination)`` sent by a fake socket,
    whether or not a fake socket listens at the destination.
    """

    def __init__(self):
        self.bound = {}
        self.taken = set()
        self.sent = []
        self.binds = []

    def bind(self, address, port):
        """Same signature as :func:`omnirtp.media.relay.bind_udp`."""
        key = (address, port)
        self.binds.append(key)
        if key in self.taken or key in self.bound:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        sock = FakeUDPSocket(self, address, port)
        self.bound[key] = sock
        return sock

    def unbind(self, sock):
        if self.bound.get(sock.key) is sock:
            del self.bound[sock.key]

    def route(self, data, source, dest):
        self.sent.append((data, source, dest))
        sock = self.bound.get(dest)
        if sock is not None:
            sock.inbox.append((data, source))

    def inject(self, dest, data, source):
        """A datagram from the outside world ``source`` to a bound ``dest``."""
        self.bound[dest].inbox.append((data, source))

    def sent_to(self, dest):
        """The ``(data, source)`` of every datagram sent to ``dest``."""
        return [(data, src) for data, src, to in self.sent if to == dest]

    def pump(self, reactor, limit=10000):
        """Call ``doRead`` on readers with queued datagrams until none are left."""
        for _ in range(limit):
            by_fd = {sock.fileno(): sock for sock in self.bound.values()}
            busy = [
                r
                for r in list(reactor.getReaders())
                if r.fileno() in by_fd and by_fd[r.fileno()].inbox
            ]
            if not busy:
                return
            for reader in busy:
                reader.doRead()
        raise RuntimeError("FakeNetwork.pump: still busy after %d rounds" % (limit,))


class ControlStack:
    """The control plane on a Clock over a counting engine, as the unit tests
    of commands, SDES, WebRTC negotiation and the CLI build it: ``clock``
    (at 1,700,000,000 s), ``engine`` (test_registry's CountingEngine, 10
    port pairs), ``registry`` (timeout 60 s, delete-delay 30 s, no session
    limit), ``negotiator`` (one interface on 127.0.0.1; keyword arguments go
    to :class:`Negotiator`) and ``dispatch`` (the ng :class:`Dispatcher`)."""

    def __init__(self, **negotiator_args):
        from twisted.internet.task import Clock

        from omnirtp.call.negotiate import Interfaces, Negotiator
        from omnirtp.call.registry import CallRegistry, Timeouts
        from omnirtp.config.model import InterfaceSpec
        from omnirtp.control.commands import Dispatcher
        from omnirtp.test.test_registry import CountingEngine

        self.clock = Clock()
        self.clock.advance(1700000000)
        self.engine = CountingEngine(self.clock, pairs=10)
        self.registry = CallRegistry(self.engine, self.clock,
                                     Timeouts(timeout=60, delete_delay=30), max_sessions=-1)
        self.interfaces = Interfaces([InterfaceSpec("default", "127.0.0.1", None)])
        self.negotiator = Negotiator(self.registry, self.interfaces, **negotiator_args)
        self.dispatch = Dispatcher(self.registry, self.negotiator, delete_delay=30)


class ControlStackTests:
    """Mixin for a SynchronousTestCase on a :class:`ControlStack`: setUp
    builds one (``negotiator_args`` go to the Negotiator) and exposes its
    parts; ``call`` / ``fails`` dispatch an ng request given as keyword
    arguments (``_`` in a key stands for ``-``) and return its reply or
    the NGError it failed with."""

    negotiator_args = {}

    def setUp(self):
        stack = ControlStack(**self.negotiator_args)
        self.clock, self.engine, self.registry = stack.clock, stack.engine, stack.registry
        self.negotiator, self.dispatch = stack.negotiator, stack.dispatch

    def call(self, **request):
        request = {k.replace("_", "-"): v for k, v in request.items()}
        return self.successResultOf(self.dispatch(request))

    def fails(self, **request):
        from omnirtp.errors import NGError

        request = {k.replace("_", "-"): v for k, v in request.items()}
        return self.failureResultOf(self.dispatch(request), NGError).value
