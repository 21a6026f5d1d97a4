"""A media worker process: one engine on its own reactor, driven over a pipe.

Started by :class:`omnirtp.media.pool.WorkerPool` as::

    python -m omnirtp.media.worker --index 0 --slice 127.0.0.1=40000-40499

The control process talks to it on two dedicated pipes, the worker reading
file descriptor :data:`FD_FROM_CONTROL` and writing :data:`FD_TO_CONTROL`,
so nothing that prints to stdout can corrupt the protocol: frames
(:mod:`omnirtp.media.wire`) carrying the engine calls (answered by
:class:`WorkerChannel`) and an AMP connection for the rest
(:class:`WorkerProtocol`).  Log events go to stderr as JSON
records (``twisted.logger.jsonFileLogObserver``) which the control process
turns back into its own log events.  The worker exits when the control
process goes away (EOF on its pipe) or sends :class:`~omnirtp.media.amp.Shutdown`;
SIGINT is ignored so that a Ctrl-C on the terminal leaves the decision to
the control process.
"""

import argparse
import importlib
import os
import signal
import sys

from twisted.internet.error import ReactorNotRunning
from twisted.internet.protocol import Protocol
from twisted.internet.stdio import StandardIO
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    PredicateResult,
    globalLogBeginner,
    jsonFileLogObserver,
)
from twisted.protocols import amp

from omnirtp.logging import level_for
from omnirtp.media import amp as commands
from omnirtp.media import wire

#: the worker's end of the pipes (the pool's spawnProcess childFDs)
FD_FROM_CONTROL = 3
FD_TO_CONTROL = 4
#: the worker's end of the Unix socket the control process hands parked
#: calls' sockets over (SCM_RIGHTS, omnirtp.media.park)
FD_SOCKETS = 5

#: the engine a worker runs unless --engine says otherwise
DEFAULT_ENGINE = "omnirtp.media.engine:EmbeddedEngine"


def parse_slice(text):
    """``"ADDRESS=MIN-MAX"`` -> ``(address, (min, max))``.

    The address may be IPv6 (it is everything before the last ``=``).
    """
    address, sep, ports = text.rpartition("=")
    lo, dash, hi = ports.partition("-")
    if not sep or not address or not dash:
        raise ValueError("slice must be ADDRESS=MIN-MAX, got %r" % (text,))
    try:
        return address, (int(lo), int(hi))
    except ValueError:
        raise ValueError("slice ports must be integers, got %r" % (text,))


def format_slice(address, port_range):
    """The inverse of :func:`parse_slice`."""
    return "%s=%d-%d" % (address, port_range[0], port_range[1])


def load_factory(spec):
    """``"package.module:name"`` -> the named object."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError("engine must be MODULE:NAME, got %r" % (spec,))
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


class LevelPredicate:
    """The worker's log filter (for ``FilteringLogObserver``): what
    twisted's ``LogLevelFilterPredicate`` with only a default level
    decides (no level or no namespace: no; below ``level``: no; else
    maybe), from a set of the levels below, without its look-up of the
    event's namespace and its parents (most of what a filtered debug
    line cost a worker per allocate)."""

    def __init__(self, level):
        self.set(level)

    def set(self, level):
        """Let events at ``level`` (a ``LogLevel``) and above through."""
        self.level = level
        self._below = frozenset(lv for lv in LogLevel.iterconstants() if lv < level)

    def passes(self, level):
        """True if events at ``level`` (a ``LogLevel``) get through."""
        return level not in self._below

    def __call__(self, event):
        level = event.get("log_level")
        if level is None or level in self._below or not event.get("log_namespace"):
            return PredicateResult.no
        return PredicateResult.maybe


def set_log_level(levels, engine, log_level):
    """Filter the worker's log at the syslog ``log_level`` (``levels``: its
    :class:`LevelPredicate`); an engine with ``log_debug`` (the embedded
    one) skips its debug events while they would be dropped."""
    levels.set(level_for(log_level))
    if getattr(engine, "log_debug", None) is not None:
        engine.log_debug = levels.passes(LogLevel.debug)


class WorkerProtocol(amp.AMP):
    """The worker's AMP server: the certificate, the log level, Ping and
    Shutdown (the engine calls come in :class:`WorkerChannel`'s frames).

    ``clock`` provides ``callLater`` (the worker's reactor).
    ``on_close`` is called once when the connection to the control process
    is lost or a Shutdown was answered (the worker stops its reactor).
    """

    log = Logger()

    def __init__(self, engine, clock, on_close=None, pid=None, on_log_level=None):
        amp.AMP.__init__(self)
        self.engine = engine
        self.clock = clock
        self.on_close = on_close
        #: called with the syslog level a SetLogLevel names
        self.on_log_level = on_log_level
        self.pid = os.getpid() if pid is None else pid
        self._closed = False

    def _close(self):
        if not self._closed:
            self._closed = True
            if self.on_close is not None:
                self.on_close()

    def connectionLost(self, reason):
        amp.AMP.connectionLost(self, reason)
        self._close()

    @commands.SetCertificate.responder
    def set_certificate(self, certificate, key):
        from omnirtp.media.dtls import Certificate
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        cert = Certificate(x509.load_pem_x509_certificate(certificate),
                           serialization.load_pem_private_key(key, password=None))
        self.engine.set_certificate(cert)
        return {}

    @commands.SetLogLevel.responder
    def set_log_level(self, level):
        if self.on_log_level is not None:
            self.on_log_level(level)
        return {}

    @commands.Ping.responder
    def ping(self):
        return {"pid": self.pid}

    @commands.Shutdown.responder
    def shutdown(self):
        self.log.info("shutdown requested by the control process")
        # answer first: on_close runs on the next reactor turn
        self.clock.callLater(0, self._close)
        return {}


class AmpFrames:
    """The transport :class:`WorkerProtocol` writes to: each AMP write
    goes out as one :data:`~omnirtp.media.wire.AMP` frame on ``transport``
    (through ``write(frame)`` if given: the channel's, which gathers what
    one read answers); everything else is ``transport``'s."""

    def __init__(self, transport, write=None):
        self._transport = transport
        self._write = write or transport.write

    def write(self, data):
        self._write(wire.frame(wire.AMP, data))

    def writeSequence(self, data):
        self.write(b"".join(data))

    def __getattr__(self, name):
        return getattr(self._transport, name)


class WorkerChannel(Protocol):
    """The worker's end of the pipes: cuts what comes in into frames
    (:mod:`omnirtp.media.wire`), answers the engine calls on ``server``'s
    engine itself and hands the AMP bytes to ``server`` (a
    :class:`WorkerProtocol`), whose writes it frames."""

    log = Logger()

    def __init__(self, server, sockets=None):
        self.server = server
        #: ``sockets(tag, count)``: the sockets of a parked call handed
        #: over (omnirtp.media.park.receive_sockets on FD_SOCKETS); None:
        #: this worker takes none
        self.sockets = sockets
        self.reader = wire.FrameReader({wire.REQUEST: self._request,
                                        wire.AMP: server.dataReceived})
        # once: each read of the class's Logger makes a new one
        self._log = self.log
        #: the answers of the read being handled (None: none is)
        self._gathered = None

    def connectionMade(self):
        self.server.makeConnection(AmpFrames(self.transport, self._write))

    def _write(self, data):
        if self._gathered is None:
            self.transport.write(data)
        else:
            self._gathered.append(data)

    def dataReceived(self, data):
        # the answers to what one read brought go out in one write: one
        # wake-up of the control process for all of them
        self._gathered = gathered = []
        try:
            self.reader.feed(data)
        except wire.FrameError as e:
            self.log.error("the control process broke the pipe protocol: {error}",
                           error=str(e))
            self.transport.loseConnection()
        finally:
            self._gathered = None
            if gathered:
                self.transport.write(b"".join(gathered))

    def connectionLost(self, reason):
        self.server.connectionLost(reason)

    def _request(self, body):
        wire.answer(self.server.engine, body, self._write, self._log, self.sockets)


class PipeIO(StandardIO):
    """The worker's end of the AMP pipes: ``StandardIO`` whose writes go to
    the pipe at once (:func:`omnirtp.media.amp.write_now`)."""

    def write(self, data):
        if self._writer is not None:
            commands.write_now(self._writer, data)


def stopper(reactor, engine):
    """What a worker does when the control process goes away: close the
    engine's sockets (if it can) and stop the reactor (if not stopping)."""
    log = Logger(namespace="omnirtp.media.worker")

    def stop():
        close = getattr(engine, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                log.failure("closing the media engine failed")
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass  # already stopping (SIGTERM), or never started

    return stop


def handoff_receiver(fd):
    """``sockets(tag, count)`` reading the parked calls' sockets from the
    Unix socket ``fd`` (the control process sends them before the adopt
    request that names them: the message is there when it is read), or
    None when ``fd`` is not an open Unix socket (a worker started by hand)."""
    import socket

    from omnirtp.media.park import receive_sockets

    try:
        channel = socket.socket(fileno=fd)
    except OSError:
        return None
    if channel.family != socket.AF_UNIX:
        channel.detach()
        return None
    channel.setblocking(False)

    def sockets(tag, count):
        return receive_sockets(channel, tag, count)

    return sockets


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m omnirtp.media.worker",
        description="omnirtp media worker (started by the control process)",
    )
    parser.add_argument("--index", type=int, default=0, help="worker number (for logs)")
    parser.add_argument(
        "--slice",
        action="append",
        default=[],
        metavar="ADDRESS=MIN-MAX",
        help="this worker's part of an interface's port range (repeat per interface)",
    )
    parser.add_argument("--engine", default=DEFAULT_ENGINE, metavar="MODULE:NAME")
    parser.add_argument("--log-level", type=int, default=6, help="syslog level 0-7")
    parser.add_argument("--table", type=int, default=-1,
                        help="forward plain streams in the kernel (nftables table "
                             "omnirtp-TABLE-wINDEX); -1: no")
    parser.add_argument("--socket-cpu-affinity", type=int, default=0, metavar="N",
                        help="SO_INCOMING_CPU 0..N-1 for the calls' sockets in turn; 0: off")
    return parser


def build_forwarder(table, index, log, make=None):
    """The worker's started kernel forwarder (``--table`` >= 0), or None
    (off, or impossible here: one log line, media in userspace; the control
    process already checked, so this is rare).  ``make``: the factory."""
    if table < 0:
        return None
    from omnirtp.media.kernel import KernelUnavailable, NftForwarder

    try:
        forwarder = (make or NftForwarder)(table, worker=index)
        forwarder.start()
    except KernelUnavailable as e:
        log.warn("table = {table}: {reason}; this worker relays media in userspace",
                 table=table, reason=str(e))
        return None
    return forwarder


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        interfaces = dict(parse_slice(s) for s in args.slice)
    except ValueError as e:
        sys.stderr.write("omnirtp worker: %s\n" % (e,))
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    levels = LevelPredicate(level_for(args.log_level))
    observer = FilteringLogObserver(jsonFileLogObserver(sys.stderr), [levels])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    from twisted.internet import reactor

    log = Logger(namespace="omnirtp.media.worker")
    factory = load_factory(args.engine)
    forwarder = build_forwarder(args.table, args.index, log)
    options = {}
    if forwarder is not None:
        options["forwarder"] = forwarder
    if args.socket_cpu_affinity:
        options["socket_cpu_affinity"] = args.socket_cpu_affinity
    engine = factory(reactor, interfaces, **options)

    set_log_level(levels, engine, args.log_level)

    def set_level(level):
        set_log_level(levels, engine, level)

    protocol = WorkerProtocol(engine, reactor, on_close=stopper(reactor, engine),
                              on_log_level=set_level)
    pipe = PipeIO(WorkerChannel(protocol, handoff_receiver(FD_SOCKETS)), stdin=FD_FROM_CONTROL,
                  stdout=FD_TO_CONTROL, reactor=reactor)
    log.info(
        "worker {index} (pid {pid}) serving {interfaces}",
        index=args.index,
        pid=os.getpid(),
        interfaces=interfaces,
    )
    use_media_loop(reactor, engine, pipe=pipe)
    reactor.run()
    return 0


#: the environment variable that keeps a worker on the reactor's own loop
#: (``OMNIRTP_WORKER_LOOP=reactor``): bench/workers.py's comparison
LOOP_VARIABLE = "OMNIRTP_WORKER_LOOP"
#: microseconds of MediaPoller.run's optional coalescing delay (off unless
#: set; an experiment of bench/workers.py, see docs/scaling.md)
COALESCE_VARIABLE = "OMNIRTP_WORKER_COALESCE_US"


def use_media_loop(reactor, engine, environ=None, pipe=None):
    """Make ``reactor.run()`` run the engine's media poller's loop
    (:meth:`omnirtp.media.relay.MediaPoller.run`: one ``epoll_wait`` per
    wake-up for media, no Twisted dispatch per wake-up) instead of the
    reactor's own loop, where it can: an epoll reactor and an engine with a
    poller of its own.  Returns True if it did; then ``pipe`` (the
    :class:`PipeIO` from the control process, if given) is read by that
    loop too (:func:`read_in_loop`)."""
    environ = os.environ if environ is None else environ
    if environ.get(LOOP_VARIABLE, "media") == "reactor":
        return False
    poller = getattr(engine, "media_poller", lambda: None)()
    inner = getattr(reactor, "_poller", None)
    if poller is None or not hasattr(inner, "fileno") or not hasattr(reactor, "_started"):
        return False
    try:
        coalesce = max(0.0, float(environ.get(COALESCE_VARIABLE) or 0) / 1e6)
    except ValueError:
        coalesce = 0.0
    reactor.mainLoop = lambda: poller.run(reactor, coalesce)
    if pipe is not None:
        read_in_loop(poller, pipe)
    return True


#: bytes read from the control process's pipe at once (Twisted reads 8 KB)
PIPE_READ = 65536


def read_in_loop(poller, pipe):
    """Read the pipe from the control process (``pipe``: a
    :class:`PipeIO`) in the media loop (``poller``'s
    :meth:`~omnirtp.media.relay.MediaPoller.add_after`, after the round's
    datagrams) instead of through a reactor iteration (its ``epoll_wait``,
    the logging context and the process reader per request): what is read
    goes to the pipe's protocol (a :class:`WorkerChannel`) as Twisted would
    hand it.  At the end of the pipe, or on an error, the reactor reads it
    again and ends the connection as usual; once the worker closed the
    connection (``loseConnection``) the pipe is not read any more."""
    reader = pipe._reader
    fd = reader.fileno()
    protocol = pipe.protocol
    reader.stopReading()
    read = os.read

    def ready():
        if pipe.disconnecting or pipe.disconnected:
            poller.remove(fd)  # the worker closes the pipe (a broken frame)
            return
        try:
            data = read(fd, PIPE_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            poller.remove(fd)
            reader.startReading()
            return
        protocol.dataReceived(data)

    poller.add_after(fd, ready)


if __name__ == "__main__":
    sys.exit(main())
