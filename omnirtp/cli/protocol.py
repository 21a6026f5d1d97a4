"""rtpengine's CLI wire protocol over TCP.

As rtpengine 10.5 does it (and Debian's ``rtpengine-ctl`` expects): the
client connects, sends one command line ending in LF (CR LF is accepted),
the server writes the reply text and closes the connection; the client
reads until EOF.  Bytes after the first line are ignored.

Bad input and slow clients, which rtpengine leaves waiting:

* a line longer than :data:`MAX_LINE` bytes gets ``Command line too long``
  and the connection is closed;
* no complete line within ``timeout`` seconds of connecting closes the
  connection: a deadline, not an idle timer, so a client dribbling one byte
  a second is dropped as surely as a silent one (``control-timeout``);
* a client that half-closes its side after the command (``nc -N``,
  ``shutdown(SHUT_WR)``) without a final LF still gets its answer.
"""

from twisted.internet import interfaces
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

MAX_LINE = 8192
TIMEOUT = 10.0
E_TOO_LONG = "Command line too long (more than %d bytes)\n" % MAX_LINE


@implementer(interfaces.IHalfCloseableProtocol)
class CliProtocol(Protocol, TimeoutMixin):
    """One CLI connection: one command, one reply."""

    log = Logger()

    def __init__(self, commands, timeout=TIMEOUT, max_line=MAX_LINE):
        self.commands = commands
        self.timeout = timeout
        self.max_line = max_line
        self._buffer = b""
        self._started = False
        self._gone = False

    def connectionMade(self):
        self.setTimeout(self.timeout)

    def dataReceived(self, data):
        if self._started:
            return
        # no resetTimeout(): the deadline runs from the connection
        self._buffer += data
        end = self._buffer.find(b"\n")
        if end >= 0:
            self._start(self._buffer[:end])
        elif len(self._buffer) > self.max_line:
            self._started = True
            self._reply(E_TOO_LONG)

    def readConnectionLost(self):
        """The client finished sending: answer what it sent, if anything."""
        if not self._started:
            if self._buffer.strip():
                self._start(self._buffer)
            else:
                self._started = True
                self.transport.loseConnection()

    def writeConnectionLost(self):
        self.transport.loseConnection()

    def _start(self, raw):
        self._started = True
        self._buffer = b""
        if len(raw) > self.max_line:
            self._reply(E_TOO_LONG)
            return
        line = raw.rstrip(b"\r").decode("utf-8", "surrogateescape")
        # a command may take a moment (engine statistics, terminate): the
        # idle timer still bounds it
        self.commands.run(line).addCallback(self._reply)

    def _reply(self, text):
        self.setTimeout(None)
        if self._gone:
            return
        self.transport.write(text.encode("utf-8", "surrogateescape"))
        self.transport.loseConnection()

    def timeoutConnection(self):
        self.log.debug("CLI client {peer} timed out", peer=self.transport.getPeer())
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self._gone = True
        self.setTimeout(None)


class CliFactory(Factory):
    """Builds :class:`CliProtocol` for one ``CliCommands``."""

    noisy = False

    def __init__(self, commands, timeout=TIMEOUT):
        self.commands = commands
        self.timeout = timeout

    def buildProtocol(self, addr):
        p = CliProtocol(self.commands, self.timeout)
        p.factory = self
        return p
