"""The operator listeners: CLI (``listen-cli``), HTTP (``listen-http``) and
HTTPS (``listen-https``), and one port serving both CLI and HTTP.

rtpengine-ctl connects to 127.0.0.1:9900 by default, and the seed
deployment expects HTTP on 9900 too.  When ``listen-cli`` and
``listen-http`` name the same address, one TCP port serves both: the first
line a client sends decides.  An HTTP request line is ``METHOD SP TARGET SP
HTTP/x.y`` with an upper-case method; rtpengine's CLI commands are
lower-case words (``list``, ``get``, ``terminate``, ``set``) and never end
in ``HTTP/x.y``, so nothing a CLI client sends is taken for HTTP.

Every listener counts its open connections; beyond ``max_connections`` a
new connection is closed at once, so slow or idle clients cannot take all
the daemon's file descriptors.  Timeouts are the protocols' own, and they
are deadlines (``control-timeout``), not idle timers: a client that sends one
byte a second cannot keep a connection open by trickling.
"""

import re

from twisted.application import service
from twisted.internet import interfaces
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer, providedBy

MAX_CONNECTIONS = 64
SNIFF_MAX = 8192
SNIFF_TIMEOUT = 10.0
_HTTP_REQUEST_LINE = re.compile(rb"^[A-Z]+ \S+ HTTP/\d\.\d\r?$")


def is_http_request_line(line):
    """True if ``line`` (without its LF) is an HTTP/1.x request line."""
    return _HTTP_REQUEST_LINE.match(line) is not None


@implementer(interfaces.IHalfCloseableProtocol)
class SharedPortProtocol(Protocol, TimeoutMixin):
    """Reads up to the first LF, then hands the connection (and the bytes
    read so far) to an HTTP channel or a CLI protocol, and forwards from
    then on."""

    def __init__(self, http_factory, cli_factory, timeout=SNIFF_TIMEOUT,
                 max_line=SNIFF_MAX):
        self.http_factory = http_factory
        self.cli_factory = cli_factory
        self.timeout = timeout
        self.max_line = max_line
        self.inner = None
        self._buffer = b""
        self._addr = None

    def makeConnection(self, transport):
        self._addr = transport.getPeer()
        Protocol.makeConnection(self, transport)

    def connectionMade(self):
        self.setTimeout(self.timeout)

    def dataReceived(self, data):
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        # a deadline from the connection, not an idle timer (slow clients)
        self._buffer += data
        end = self._buffer.find(b"\n")
        if end >= 0:
            http = is_http_request_line(self._buffer[:end])
            self._hand_over(self.http_factory if http else self.cli_factory)
        elif len(self._buffer) > self.max_line:
            # too long for either; the CLI protocol says so
            self._hand_over(self.cli_factory)

    def _hand_over(self, factory):
        self.setTimeout(None)
        self.inner = factory.buildProtocol(self._addr)
        self.inner.makeConnection(self.transport)
        data, self._buffer = self._buffer, b""
        if data:
            self.inner.dataReceived(data)

    def readConnectionLost(self):
        if self.inner is None and self._buffer:
            self._hand_over(self.cli_factory)
        if self.inner is not None and interfaces.IHalfCloseableProtocol in providedBy(self.inner):
            self.inner.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self):
        if self.inner is not None and interfaces.IHalfCloseableProtocol in providedBy(self.inner):
            self.inner.writeConnectionLost()
        else:
            self.transport.loseConnection()

    def timeoutConnection(self):
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self.setTimeout(None)
        if self.inner is not None:
            self.inner.connectionLost(reason)


class SharedPortFactory(Factory):
    noisy = False

    def __init__(self, http_factory, cli_factory, timeout=SNIFF_TIMEOUT):
        self.http_factory = http_factory
        self.cli_factory = cli_factory
        self.timeout = timeout

    def buildProtocol(self, addr):
        p = SharedPortProtocol(self.http_factory, self.cli_factory, self.timeout)
        p.factory = self
        return p


class LimitedFactory(Factory):
    """Wraps a factory: at most ``limit`` open connections; more are
    closed on accept (nothing is written to them).  With ``access`` (an
    ``omnirtp.control.access.AccessList``), a connection from a source it
    does not allow is closed on accept too, and counted under ``kind``."""

    noisy = False
    log = Logger()

    def __init__(self, wrapped, limit=MAX_CONNECTIONS, access=None, kind="http"):
        self.wrapped = wrapped
        self.limit = limit
        self.access = access
        self.kind = kind
        self.open = 0
        self.refused = 0

    def doStart(self):
        self.wrapped.doStart()

    def doStop(self):
        self.wrapped.doStop()

    def buildProtocol(self, addr):
        access = self.access
        if access is not None and not access.admit(getattr(addr, "host", None), self.kind):
            return None
        if self.open >= self.limit:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                self.log.warn("operator listener full ({limit} connections); "
                              "{refused} refused so far", limit=self.limit,
                              refused=self.refused)
            return None
        p = self.wrapped.buildProtocol(addr)
        if p is None:
            return None
        self.open += 1
        lost = p.connectionLost

        def connectionLost(reason, lost=lost):
            self.open -= 1
            return lost(reason)

        p.connectionLost = connectionLost
        return p


def plan(cli, http):
    """``{(host, port): "cli" | "http" | "both"}`` from the two address lists."""
    kinds = {}
    for addr in cli:
        kinds[tuple(addr)] = "cli"
    for addr in http:
        kinds[tuple(addr)] = "both" if kinds.get(tuple(addr)) == "cli" else "http"
    return kinds


class OperatorListeners(service.Service):
    """Binds the CLI, HTTP and HTTPS listeners on start, closes them on stop.

    ``https`` is a list of addresses served with ``tls_context`` (an
    OpenSSL context factory) when given.
    """

    def __init__(self, reactor, cli, http, cli_factory, http_factory, https=(),
                 tls_context=None, max_connections=MAX_CONNECTIONS, access=None,
                 timeout=SNIFF_TIMEOUT):
        self.reactor = reactor
        #: seconds a shared-port client has to send its first line
        self.timeout = timeout
        self.cli = tuple(cli)
        self.http = tuple(http)
        self.https = tuple(https)
        self.cli_factory = cli_factory
        self.http_factory = http_factory
        self.tls_context = tls_context
        self.max_connections = max_connections
        #: the daemon's control AccessList (None: anyone who reaches the port)
        self.access = access
        self.ports = []

    def startService(self):
        service.Service.startService(self)
        try:
            for (host, port), kind in plan(self.cli, self.http).items():
                if kind == "both":
                    factory = SharedPortFactory(self.http_factory, self.cli_factory,
                                                self.timeout)
                elif kind == "cli":
                    factory = self.cli_factory
                else:
                    factory = self.http_factory
                # a shared port's refusals count as HTTP: the protocol is
                # only known from the first line, and nothing is read
                self.ports.append(self.reactor.listenTCP(
                    port, LimitedFactory(factory, self.max_connections, self.access,
                                         "cli" if kind == "cli" else "http"),
                    interface=host))
            for host, port in self.https:
                self.ports.append(self.reactor.listenSSL(
                    port, LimitedFactory(self.http_factory, self.max_connections,
                                         self.access, "http"),
                    self.tls_context, interface=host))
        except Exception:
            self._close()
            raise

    def _close(self):
        ports, self.ports = self.ports, []
        for p in ports:
            p.stopListening()

    def stopService(self):
        service.Service.stopService(self)
        self._close()
