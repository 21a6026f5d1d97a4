"""The media-port reactor pool: ``num-threads = N`` worker processes.

:class:`WorkerPool` implements :class:`omnirtp.interfaces.IMediaEngine` for
the control process by driving N worker processes
(:mod:`omnirtp.media.worker`) over pipes: each engine call is one request
frame and one reply frame (:mod:`omnirtp.media.wire`), the rest (certificate,
log level, Ping, Shutdown) AMP commands (:mod:`omnirtp.media.amp`) in frames
of their own.  Each worker runs its own reactor and an engine over its slice
of every interface's port range (:func:`omnirtp.media.ports.slice_range`).

Routing: a call goes to one worker at its first ``allocate`` (the ready
worker with the fewest calls) and stays there until ``release(call_id)``
of the whole call, so relaying never crosses a process.  If that first
allocation fails because the worker's slice is full (or the worker died),
the next worker is tried before ``PortsExhausted`` is reported.

The lazy hand-off (``lazy=True``, the daemon's pool; :mod:`omnirtp.media.park`):
a new plain call is parked in this process, its ports bound here from the
slice of the worker it goes to, until its first datagram hands its sockets
to that worker (``SCM_RIGHTS`` over a socketpair per worker, then an
``adopt`` request); its engine calls until then are answered here.

Failure: when a worker process ends, the calls it held are forgotten,
counted in :attr:`WorkerPool.lost_calls` and reported through
``on_calls_lost(call_ids, reason)`` (the call registry sets it); a fresh
worker is started on the same slice after :attr:`WorkerPool.restart_delay`
seconds, doubling up to :attr:`WorkerPool.restart_max` while workers keep
dying within :attr:`WorkerPool.stable_after` seconds of their start.
Requests that reach a dead, hung or restarting worker fail with
:class:`WorkerUnavailable` (an ``NGError``); a worker that does not answer
within :attr:`WorkerPool.request_timeout` seconds is killed.
"""

import os
import site
import socket
import sys
from resource import RLIM_INFINITY

from twisted.application import service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IAddress, ITransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel, eventFromJSON, formatEvent
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

import omnirtp
from omnirtp import sync
from omnirtp.logging import priority, subsystem
from omnirtp.errors import E_INTERNAL, E_UNKNOWN_CALL, ConfigError, NGError, PortsExhausted
from omnirtp.interfaces import IMediaEngine
from omnirtp.media import amp as commands
from omnirtp.media import park, wire
from omnirtp.media.amp import placeholder
from omnirtp.limits import SPARE, soft_limit
from omnirtp.media.ports import NO_FILES_ERRNOS, PortPool, slice_range
from omnirtp.media.relay import bind_media
from omnirtp.media.relay import bind_pair as bind_both
from omnirtp.media.worker import (
    DEFAULT_ENGINE,
    FD_FROM_CONTROL,
    FD_SOCKETS,
    FD_TO_CONTROL,
    format_slice,
)

#: the worker module run with ``python -m``
WORKER_MODULE = "omnirtp.media.worker"

#: the control process's view of the worker's pipes: it writes AMP to the
#: worker's FD_FROM_CONTROL and reads the worker's FD_TO_CONTROL.
CHILD_FDS = {0: "w", 1: "r", 2: "r", FD_FROM_CONTROL: "w", FD_TO_CONTROL: "r"}

#: worker states
STARTING = "starting"  # spawned, Ping not answered yet
READY = "ready"  # answered Ping
DOWN = "down"  # ended; a restart is scheduled
STOPPED = "stopped"  # the pool is not running

#: the counters totals() sums (IMediaEngine.totals)
TOTAL_KEYS = ("packets", "bytes", "errors", "junk", "ports_used", "ports_free")

#: longest stderr line kept before it is logged anyway
MAX_LOG_LINE = 65536


class WorkerError(NGError):
    """A media worker could not carry out a request (an unexpected error
    in its engine).

    The ng reply says ``Internal error`` (``reason``); ``detail`` says what
    happened, for the log.
    """

    def __init__(self, detail="media worker failed", reason=E_INTERNAL):
        NGError.__init__(self, reason)
        self.detail = detail

    def __str__(self):
        return "%s (%s)" % (self.reason, self.detail)


class WorkerUnavailable(WorkerError):
    """The media worker that holds (or would hold) a call is not running,
    died during the request or did not answer in time."""


@implementer(IAddress)
class WorkerAddress:
    """The far end of a worker's AMP pipes (for AMP's log messages)."""

    def __init__(self, index, pid):
        self.index = index
        self.pid = pid

    def __repr__(self):
        return "<media worker %d pid %s>" % (self.index, self.pid)


@implementer(ITransport)
class PipeTransport:
    """The AMP connection's transport over the worker's pipes: each AMP
    write goes out as one :data:`~omnirtp.media.wire.AMP` frame;
    :meth:`write_frame` writes a frame as it is.

    With a ``clock`` (``callLater``), frames are gathered and written
    together once the reactor's turn that made them is over (a
    ``callLater(0)``; :meth:`flush`): the ng requests one read of the ng
    socket brings make one pipe write, one wake-up of the worker, which
    answers them in one write too, instead of two process switches per
    engine call.  Without one, each frame is written at once."""

    disconnecting = False

    def __init__(self, process, address, clock=None):
        self.process = process
        self.address = address
        self.clock = clock
        self._queued = []
        self._flush_call = None

    def write(self, data):
        self.write_frame(wire.frame(wire.AMP, data))

    def write_frame(self, data):
        if self.clock is None:
            self._write(data)
            return
        self._queued.append(data)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

    def flush(self):
        """Write the frames gathered so far, in order, at once."""
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        if self._queued:
            data = b"".join(self._queued)
            del self._queued[:]
            self._write(data)

    def _write(self, data):
        try:
            pipes = getattr(self.process, "pipes", None)  # a twisted Process
            if pipes is None:
                self.process.writeToChild(FD_FROM_CONTROL, data)
            else:
                commands.write_now(pipes[FD_FROM_CONTROL], data)
        except (KeyError, OSError):
            # the pipe is gone: processEnded follows and fails the requests
            pass

    def writeSequence(self, data):
        self.write(b"".join(data))

    def loseConnection(self):
        if not self.disconnecting:
            self.flush()
            self.disconnecting = True
            try:
                self.process.closeChildFD(FD_FROM_CONTROL)
            except (KeyError, OSError):
                pass

    def abortConnection(self):
        self.loseConnection()

    def getPeer(self):
        return self.address

    def getHost(self):
        return self.address


class WorkerProcess(ProcessProtocol):
    """One spawned worker: its engine calls in flight (``requests``, a
    :class:`omnirtp.media.wire.Requests`), its AMP client and its
    stderr/stdout relay."""

    log = Logger()

    def __init__(self, pool, slot):
        self.pool = pool
        self.slot = slot
        self.amp = amp.AMP()
        self.pipe = None
        self.requests = None
        self.reader = wire.FrameReader({wire.REPLY: self._reply,
                                        wire.AMP: self.amp.dataReceived})
        #: the pool's time-out check for this worker's requests (one at a time)
        self.timer = None
        self.pid = None
        self._lines = {}
        #: the control process's end of the Unix socket parked calls'
        #: sockets go to this worker over (None: none)
        self.channel = None

    def connectionMade(self):
        self.pid = getattr(self.transport, "pid", None)
        try:
            self.transport.closeChildFD(0)
        except (KeyError, OSError):
            pass
        address = WorkerAddress(self.slot.index, self.pid)
        self.pipe = PipeTransport(self.transport, address, self.pool.reactor)
        self.requests = wire.Requests(self.pipe.write_frame, self.pool.reactor,
                                      self._remoteError)
        self.amp.makeConnection(self.pipe)

    def _reply(self, body):
        self.requests.received(body)

    def _remoteError(self, command, text):
        """The exception for an engine call that failed in the worker with
        an error the engine did not expect (the worker logged it)."""
        self.log.debug("media worker {worker}: {command} failed: {text}",
                       worker=self.slot.index, command=command, text=text)
        return WorkerError("media worker %d: %s failed: %s" % (self.slot.index, command, text))

    def childDataReceived(self, childFD, data):
        if childFD == FD_TO_CONTROL:
            try:
                self.reader.feed(data)
            except wire.FrameError as e:
                self.pool._kill(self.slot, "it broke the pipe protocol: %s" % (e,))
            return
        buf = self._lines.get(childFD, b"") + data
        *lines, rest = buf.split(b"\n")
        if len(rest) > MAX_LOG_LINE:
            lines.append(rest)
            rest = b""
        self._lines[childFD] = rest
        for line in lines:
            self._relay(line)

    def childConnectionLost(self, childFD):
        rest = self._lines.pop(childFD, b"")
        if rest:
            self._relay(rest)

    def _relay(self, line):
        """Re-emit one line of worker output in the control process's log."""
        text = line.decode("utf-8", "replace").strip("\x1e\r\n ")
        if not text:
            return
        level = LogLevel.warn
        origin = {}
        if text.startswith("{"):
            try:
                event = eventFromJSON(text)
                level = event.get("log_level") or LogLevel.info
                text = formatEvent(event)
                failure = event.get("log_failure")
                if failure is not None:
                    text = "%s\n%s" % (text, failure.getTraceback())
                # the worker's subsystem and priority, so that the daemon's
                # per-subsystem levels (LogLevels) apply to its records
                origin = {"log_subsystem": subsystem(event), "log_priority": priority(event)}
            except Exception:
                pass
        self.log.emit(
            level,
            "worker {worker} (pid {pid}): {text}",
            worker=self.slot.index,
            pid=self.pid,
            text=text,
            **origin
        )

    def processEnded(self, reason):
        if self.channel is not None:
            self.channel.close()
        self.pool._workerEnded(self.slot, self, reason)
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self.requests is not None:
            how = describe_exit(reason)
            self.requests.fail_all(lambda command: WorkerUnavailable(
                "media worker %d: %s failed: the worker ended (%s)" % (self.slot.index, command, how)))
        self.amp.connectionLost(reason)


class _Slot:
    """One worker position: its port slices and the process filling it."""

    def __init__(self, index, slices):
        self.index = index
        self.slices = slices
        self.state = STOPPED
        self.process = None
        self.pid = None
        self.calls = set()
        self.started_at = None
        self.failures = 0
        self.restarts = 0
        self.restart_call = None
        self.kill_call = None
        self.ready_waiters = []
        self.stop_waiters = []
        #: the control process's own port pools over this slot's slices
        #: (address -> PortPool): the ports of the calls it parks for
        #: this worker (omnirtp.media.park), made when first needed
        self.park_pools = {}

    def info(self):
        return {
            "index": self.index,
            "pid": self.pid,
            "state": self.state,
            "slice": dict(self.slices),
            "calls": len(self.calls),
            "restarts": self.restarts,
        }


def _fire(waiters, result):
    for d in waiters:
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)


def _site_directories():
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return dirs


def worker_environment(base=None, site_dirs=None):
    """The environment for workers: ``base`` (default ``os.environ``).

    Unless omnirtp is installed in one of ``site_dirs`` (default: the
    interpreter's site-packages, which a worker searches anyway), the
    directory it was imported from (a checkout) is put in front of
    ``PYTHONPATH`` so that ``python -m omnirtp.media.worker`` runs the same
    code wherever the control process was started from.
    """
    env = dict(os.environ if base is None else base)
    root = os.path.dirname(os.path.dirname(os.path.abspath(omnirtp.__file__)))
    dirs = _site_directories() if site_dirs is None else site_dirs
    known = {os.path.abspath(p) for p in dirs}
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in known and root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([root] + paths)
    return env


def describe_exit(reason):
    """A one-line account of how a worker process ended."""
    value = getattr(reason, "value", reason)
    if isinstance(value, ProcessDone):
        return "exited normally"
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            return "killed by signal %d" % (value.signal,)
        return "exited with status %s" % (value.exitCode,)
    return "ended (%s)" % (value,)


@implementer(IMediaEngine)
class WorkerPool(service.Service):
    """``IMediaEngine`` over ``n`` worker processes (see the module docstring).

    ``reactor`` provides ``spawnProcess`` and ``callLater``/``seconds``;
    ``interfaces`` is ``{address: (port_min, port_max)}``; ``engine`` is the
    ``MODULE:NAME`` factory workers build (``factory(reactor, slices)``).
    """

    log = Logger()

    #: seconds before the first restart of a worker that died
    restart_delay = 0.5
    #: the restart delay doubles up to this while workers keep dying early
    restart_max = 30.0
    #: a worker that lived this long resets the back-off
    stable_after = 10.0
    #: a worker that leaves a request unanswered this long is killed
    request_timeout = 10.0
    #: a new worker that has not answered its first Ping this long is
    #: killed (it imports Twisted and omnirtp first: seconds on a busy host)
    start_timeout = 30.0
    #: stopService kills workers still running after this long
    stop_timeout = 5.0

    def __init__(
        self,
        reactor,
        interfaces,
        n,
        executable=sys.executable,
        engine=DEFAULT_ENGINE,
        log_level=6,
        env=None,
        certificate=None,
        table=-1,
        drop_table=None,
        socket_cpu_affinity=0,
        lazy=False,
        bind=None,
    ):
        if not isinstance(n, int) or n < 1:
            raise ConfigError("num-threads for a worker pool must be at least 1, got %r" % (n,))
        self.reactor = reactor
        self.interfaces = dict(interfaces)
        self.executable = executable
        self.engine = engine
        self.log_level = log_level
        #: the daemon's DTLS certificate (omnirtp.media.dtls.Certificate),
        #: handed to every worker when it starts (SetCertificate); None: none
        self.certificate = certificate
        self.env = worker_environment(env)
        #: ``table = N``: each worker forwards plain streams in the kernel
        #: in its own nftables table (``omnirtp-N-wK``), which this process
        #: deletes when the worker ends (a killed worker leaves it)
        self.table = table
        self._drop_table = drop_table
        #: ``socket-cpu-affinity`` N (> 0): each worker gives its calls'
        #: sockets the values 0..N-1 in turn (its own round, not one over
        #: all workers: the value is chosen where the sockets are bound)
        self.socket_cpu_affinity = socket_cpu_affinity
        self.slots = []
        for index in range(n):
            slices = {}
            for address, (port_min, port_max) in sorted(self.interfaces.items()):
                try:
                    slices[address] = slice_range(port_min, port_max, index, n)
                except ValueError as e:
                    raise ConfigError("interface %s, num-threads %d: %s" % (address, n, e))
            self.slots.append(_Slot(index, slices))
        self.lost_calls = 0
        self.on_calls_lost = lambda call_ids, reason: None
        self._routes = {}  # call_id -> _Slot
        self._held = set()  # call_ids with at least one successful allocate
        self._pending = {}  # call_id -> allocate requests in flight
        #: the lazy hand-off (omnirtp.media.park): new plain calls are
        #: parked in this process until media arrives.  The daemon's pool
        #: has it (service.build_engine); off, every call goes to a worker
        #: at once (benchmarks' and tests' comparison).  Not with ``table``:
        #: kernel forwarding stays where it always was.
        self.lazy = bool(lazy) and table < 0
        #: ``bind(address, port)``: a parked call's bound socket (default
        #: omnirtp.media.relay.bind_media; tests pass a fake network's)
        self._bind = bind
        #: what watches the parked calls' sockets (made with the first one
        #: parked): one epoll for them all (park.Poller), or a reactor
        #: reader per socket for a test's fake sockets (park.Readers)
        self._watcher = None
        self._parked = {}  # call_id -> park.ParkedCall
        self._handoffs = 0  # tags of the hand-off messages
        #: sockets the parked calls hold (at most :attr:`park_limit`)
        self._parked_sockets = 0
        self._park_limit = None
        #: this process's open files limit as last read (None: not read
        #: since the start or since :meth:`open_files_changed`)
        self._open_files = None
        #: parked calls: handed to a worker, released while parked, and
        #: lost because no worker could take them
        self.park_counts = {"parked": 0, "handed": 0, "released": 0, "failed": 0}

    # -- service ---------------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        for slot in self.slots:
            slot.failures = 0
            self._spawn(slot)

    def stopService(self):
        service.Service.stopService(self)
        waits = []
        for slot in self.slots:
            if slot.restart_call is not None and slot.restart_call.active():
                slot.restart_call.cancel()
            slot.restart_call = None
            _fire(slot.ready_waiters, Failure(WorkerUnavailable("the worker pool is stopping")))
            slot.ready_waiters = []
            if slot.process is None:
                slot.state = STOPPED
                continue
            d = Deferred()
            slot.stop_waiters.append(d)
            waits.append(d)
            slot.process.amp.transport.loseConnection()  # EOF: the worker exits
            slot.kill_call = self.reactor.callLater(
                self.stop_timeout, self._kill, slot, "did not stop"
            )
        self._routes.clear()
        self._held.clear()
        for call_id in list(self._parked):
            self._unpark(call_id, None)
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        for slot in self.slots:
            slot.calls.clear()
        return DeferredList(waits)

    def _spawn(self, slot):
        slot.restart_call = None
        if not self.running:
            return
        process = WorkerProcess(self, slot)
        args = [
            self.executable,
            "-m",
            WORKER_MODULE,
            "--index",
            str(slot.index),
            "--engine",
            self.engine,
            "--log-level",
            str(self.log_level),
        ]
        for address, port_range in sorted(slot.slices.items()):
            args += ["--slice", format_slice(address, port_range)]
        if self.table >= 0:
            args += ["--table", str(self.table)]
        if self.socket_cpu_affinity:
            args += ["--socket-cpu-affinity", str(self.socket_cpu_affinity)]
        slot.started_at = self.reactor.seconds()
        child_fds = CHILD_FDS
        theirs = None
        if self.lazy:
            try:
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                ours.setblocking(False)
                process.channel = ours
                child_fds = dict(CHILD_FDS)
                child_fds[FD_SOCKETS] = theirs.fileno()
            except OSError as e:
                self.log.warn("media worker {worker}: no hand-off socket ({error}): "
                              "its calls are not parked", worker=slot.index, error=str(e))
        try:
            self.reactor.spawnProcess(
                process, self.executable, args, env=self.env, childFDs=child_fds
            )
        except Exception:
            self.log.failure("cannot start media worker {worker}", worker=slot.index)
            slot.state = DOWN
            if process.channel is not None:
                process.channel.close()
                process.channel = None
            self._scheduleRestart(slot)
            return
        finally:
            if theirs is not None:
                theirs.close()
        slot.process = process
        slot.pid = process.pid
        slot.state = STARTING
        self.log.info(
            "media worker {worker} started (pid {pid}) on {slices}",
            worker=slot.index,
            pid=slot.pid,
            slices=slot.slices,
        )
        if self.certificate is not None:
            # before Ping: the worker is ready only with its certificate
            cert_pem, key_pem = self.certificate.pem()
            d = self._call(slot, commands.SetCertificate, timeout=self.start_timeout,
                           certificate=cert_pem, key=key_pem)
            d.addErrback(self._noCertificate, slot)
        d = self._call(slot, commands.Ping, timeout=self.start_timeout)
        d.addCallbacks(self._pinged, lambda f: None, callbackArgs=(slot, process))

    def _noCertificate(self, failure, slot):
        self.log.error("media worker {worker} did not take the DTLS certificate: {why}",
                       worker=slot.index, why=failure.getErrorMessage())

    def _pinged(self, result, slot, process):
        if slot.process is process and slot.state == STARTING:
            slot.state = READY
            waiters, slot.ready_waiters = slot.ready_waiters, []
            _fire(waiters, slot.pid)

    def _scheduleRestart(self, slot):
        lived = self.reactor.seconds() - slot.started_at if slot.started_at is not None else 0.0
        if lived >= self.stable_after:
            slot.failures = 0
        delay = min(self.restart_max, self.restart_delay * 2**slot.failures)
        slot.failures += 1
        slot.restarts += 1
        self.log.info("media worker {worker} restarts in {delay}s", worker=slot.index, delay=delay)
        slot.restart_call = self.reactor.callLater(delay, self._spawn, slot)

    def _kill(self, slot, why):
        slot.kill_call = None
        if slot.process is None:
            return
        self.log.warn(
            "killing media worker {worker} (pid {pid}): {why}",
            worker=slot.index,
            pid=slot.pid,
            why=why,
        )
        try:
            slot.process.transport.signalProcess("KILL")
        except Exception:
            pass

    def _dropKernelTable(self, slot):
        """The ended worker's rules go: they would forward to ports nobody
        holds (and that its next process hands out again)."""
        from omnirtp.media.kernel import KernelUnavailable, NftError, drop_table, table_name

        name = table_name(self.table, slot.index)
        try:
            (self._drop_table or drop_table)(name)
        except (KernelUnavailable, NftError) as e:
            self.log.warn("media worker {worker}: cannot delete nftables table {name}: {error}",
                          worker=slot.index, name=name, error=str(e))

    def _workerEnded(self, slot, process, reason):
        if slot.process is not process:
            return
        how = describe_exit(reason)
        slot.process = None
        if self.table >= 0:
            self._dropKernelTable(slot)
        if slot.kill_call is not None and slot.kill_call.active():
            slot.kill_call.cancel()
        slot.kill_call = None
        if not self.running:
            slot.state = STOPPED
            self.log.info(
                "media worker {worker} (pid {pid}) {how}", worker=slot.index, pid=slot.pid, how=how
            )
            waiters, slot.stop_waiters = slot.stop_waiters, []
            _fire(waiters, None)
            return
        slot.state = DOWN
        text = "media worker %d (pid %s) %s" % (slot.index, slot.pid, how)
        lost = sorted(c for c in slot.calls if c in self._held)
        for call_id in list(slot.calls):
            self._unroute(call_id)
        self.lost_calls += len(lost)
        self.log.error("{text}; {count} calls lost", text=text, count=len(lost))
        if lost:
            try:
                self.on_calls_lost(lost, text)
            except Exception:
                self.log.failure("on_calls_lost failed")
        self._scheduleRestart(slot)

    # -- statistics ------------------------------------------------------

    def set_log_level(self, level):
        """Log at syslog level ``level`` in every worker from now on (sent
        over AMP to the running ones; a worker started later gets it on its
        command line).  The control process's :class:`LogLevels` filter
        the re-emitted records per subsystem, so the level given is the
        highest of them (``LogLevels.highest``).  Returns a Deferred that
        fires when every running worker answered (a worker that cannot
        answer is logged, not an error: it restarts with the new level)."""
        self.log_level = level
        waits = []
        for slot in self.slots:
            if slot.process is None or slot.state not in (STARTING, READY):
                continue
            d = self._call(slot, commands.SetLogLevel, level=level)
            d.addErrback(lambda f, slot=slot: self.log.warn(
                "media worker {worker} did not take log level {level}: {why}",
                worker=slot.index, level=level, why=f.getErrorMessage()))
            waits.append(d)
        return DeferredList(waits)

    @property
    def workers(self):
        """One dict per worker: index, pid, state, slice, calls, restarts."""
        return [slot.info() for slot in self.slots]

    def whenReady(self, index=None):
        """Fire (with the pid) when worker ``index`` answers, or with the
        list of pids when every worker does; fails if the pool stops."""
        if index is None:
            return gatherResults([self.whenReady(slot.index) for slot in self.slots])
        slot = self.slots[index]
        if slot.state == READY:
            return succeed(slot.pid)
        if not self.running:
            return fail(WorkerUnavailable("the worker pool is not running"))
        d = Deferred()
        slot.ready_waiters.append(d)
        return d

    # -- requests --------------------------------------------------------

    def _call(self, slot, command, timeout=None, **kwargs):
        """``callRemote`` on the slot's worker, failing with WorkerUnavailable
        (never hanging) if the worker is gone, dies or does not answer within
        ``timeout`` seconds (default :attr:`request_timeout`)."""
        process = slot.process
        if process is None or slot.state not in (STARTING, READY):
            return fail(WorkerUnavailable("media worker %d is %s" % (slot.index, slot.state)))
        result = Deferred()
        if timeout is None:
            timeout = self.request_timeout
        timer = self.reactor.callLater(
            timeout, self._timedOut, slot, process, result, command, timeout
        )

        def answered(value):
            if timer.active():
                timer.cancel()
            if result.called:
                return None
            if isinstance(value, Failure) and not value.check(NGError):
                self.log.debug(
                    "media worker {worker}: {command} failed: {failure}",
                    worker=slot.index,
                    command=command.__name__,
                    failure=value.getErrorMessage(),
                )
                # an error the engine did not expect arrives as an AMP
                # remote error; anything else means the worker went away
                if value.check(amp.RemoteAmpError, amp.UnhandledCommand):
                    kind = WorkerError
                else:
                    kind = WorkerUnavailable
                value = Failure(
                    kind(
                        "media worker %d: %s failed: %s"
                        % (slot.index, command.__name__, value.getErrorMessage())
                    )
                )
            if isinstance(value, Failure):
                result.errback(value)
            else:
                result.callback(value)
            return None

        try:
            d = process.amp.callRemote(command, **kwargs)
        except Exception:
            # the request could not even be encoded: our bug, not the worker's
            if timer.active():
                timer.cancel()
            self.log.failure("cannot send {command} to media worker", command=command.__name__)
            return fail(WorkerError("%s could not be sent" % (command.__name__,)))
        d.addBoth(answered)
        return result

    def _timedOut(self, slot, process, result, command, timeout):
        if not result.called:
            result.errback(
                WorkerUnavailable(
                    "media worker %d did not answer %s in %ss"
                    % (slot.index, command.__name__, timeout)
                )
            )
        if slot.process is process:
            self._kill(slot, "a %s request timed out" % (command.__name__,))

    def _request(self, slot, op, *args):
        """Engine call ``op(*args)`` (:data:`omnirtp.media.wire.OPERATIONS`)
        in the slot's worker: a Deferred firing with its value, failing
        with the engine's ``NGError`` / ``PortsExhausted``, a
        :class:`WorkerError` (an error the engine did not expect, or a value
        that cannot be sent) or :class:`WorkerUnavailable` (the worker is
        gone, dies or does not answer within :attr:`request_timeout`)."""
        process = slot.process
        if process is None or slot.state not in (STARTING, READY):
            return fail(WorkerUnavailable("media worker %d is %s" % (slot.index, slot.state)))
        try:
            d = process.requests.send(op, *args)
        except Exception:
            # the request could not even be encoded: our bug, not the worker's
            name = wire.OPERATIONS[op][0]
            self.log.failure("cannot send {command} to media worker", command=name)
            return fail(WorkerError("%s could not be sent" % (name,)))
        if process.timer is None:
            process.timer = self.reactor.callLater(
                self.request_timeout, self._checkRequests, slot, process)
        return d

    def _checkRequests(self, slot, process):
        """The time-out check of a worker's engine calls: one timer per
        worker, not one per request; it runs again when the oldest request
        left would time out, and stops when none is left."""
        process.timer = None
        oldest = process.requests.oldest()
        if oldest is None or slot.process is not process:
            return
        rid, op, sent = oldest
        late = sent + self.request_timeout - self.reactor.seconds()
        if late > 1e-9:
            process.timer = self.reactor.callLater(late, self._checkRequests, slot, process)
            return
        name = wire.OPERATIONS[op][0]
        process.requests.fail(rid, WorkerUnavailable(
            "media worker %d did not answer %s in %ss" % (slot.index, name, self.request_timeout)))
        self._kill(slot, "a %s request timed out" % (name,))

    def _route(self, call_id, slot):
        self._routes[call_id] = slot
        slot.calls.add(call_id)

    def _unroute(self, call_id):
        slot = self._routes.pop(call_id, None)
        if slot is not None:
            slot.calls.discard(call_id)
        self._held.discard(call_id)

    def _candidates(self):
        live = [s for s in self.slots if s.process is not None and s.state in (READY, STARTING)]
        return sorted(live, key=lambda s: (s.state != READY, len(s.calls), s.index))

    def _pick(self, tried):
        """The first of :meth:`_candidates` whose index is not in
        ``tried`` (None if none): a ready worker before a starting one,
        then the one with the fewest calls, then the lowest index; one
        pass, no sort (once per new call)."""
        best = best_key = None
        for s in self.slots:
            if s.process is None or s.state not in (READY, STARTING) or s.index in tried:
                continue
            key = (s.state != READY, len(s.calls), s.index)
            if best is None or key < best_key:
                best, best_key = s, key
        return best

    def allocate(self, call_id, address, count):
        parked = self._parked.get(call_id)
        if parked is not None:
            return self._after_handoff(parked, True, self.allocate, call_id, address, count)
        return self._allocate(call_id, address, count, set(), None)

    def allocate_configure(self, call_id, groups, sockets):
        """A new call's ``allocate`` of every ``(address, count)`` of
        ``groups`` and its ``configure`` in one round trip to its worker
        (:func:`omnirtp.media.amp.allocate_configure` there; the sockets'
        keys name the new ports by placeholders): fires with each group's
        ports, or fails with nothing of them held.  Routed and retried on
        another worker as :meth:`allocate` is."""
        if self.lazy and call_id not in self._routes and call_id not in self._parked:
            if sockets.__class__ is not list:
                sockets = list(sockets)
            ports = self._park(call_id, groups, sockets)
            if ports is not None:
                return succeed(ports)
        parked = self._parked.get(call_id)
        if parked is not None:
            return self._after_handoff(parked, True, self.allocate_configure, call_id, groups,
                                       sockets)
        batch = ([(address, count) for address, count in groups], list(sockets))
        return self._allocate(call_id, None, None, set(), None, batch)

    def _allocate(self, call_id, address, count, tried, last, batch=None):
        slot = self._routes.get(call_id)
        if slot is None:
            slot = self._pick(tried)
            if slot is None:
                if last is not None:
                    return last
                self.log.warn("no media worker is running: call {call_id} refused", call_id=call_id)
                return fail(PortsExhausted())
            self._route(call_id, slot)
        tried.add(slot.index)
        self._pending[call_id] = self._pending.get(call_id, 0) + 1
        if batch is None:
            d = self._request(slot, "allocate", call_id, address, count)
        else:
            d = self._request(slot, "allocate_configure", call_id, batch[0], batch[1])
        args = (slot, call_id, address, count, tried, batch)
        return sync.listen(d, self._allocated, args, self._allocated, args)

    def _allocated(self, result, slot, call_id, address, count, tried, batch=None):
        pending = self._pending.pop(call_id, 1) - 1
        if pending > 0:
            self._pending[call_id] = pending
        if not isinstance(result, Failure):
            if self._routes.get(call_id) is slot:
                self._held.add(call_id)
            return result
        retry = (
            result.check(PortsExhausted, WorkerUnavailable)
            and call_id not in self._held
            and pending == 0
            and self._routes.get(call_id) in (slot, None)
        )
        if retry:
            # a new call: nothing of it lives anywhere yet, try another worker
            self._unroute(call_id)
            return self._allocate(call_id, address, count, tried, result, batch)
        return result

    def claim(self, call_id, address, ports):
        """Bind exactly ``ports`` in the worker whose slice holds them (a
        restored call; all ports of one call live in one worker)."""
        if not ports:
            return succeed([])
        parked = self._parked.get(call_id)
        if parked is not None:
            return self._after_handoff(parked, True, self.claim, call_id, address, ports)
        slot = self._routes.get(call_id)
        if slot is None:
            owners = [s for s in self.slots
                      if address in s.slices
                      and all(s.slices[address][0] <= p <= s.slices[address][1] for p in ports)]
            if not owners:
                return fail(PortsExhausted())
            slot = owners[0]
            self._route(call_id, slot)
        d = self._request(slot, "claim", call_id, address, list(ports))

        def done(result):
            if isinstance(result, Failure):
                if call_id not in self._held:
                    self._unroute(call_id)
                return result
            self._held.add(call_id)
            return result
        return d.addBoth(done)

    def configure(self, call_id, sockets):
        slot = self._routes.get(call_id)
        if slot is None:
            parked = self._parked.get(call_id)
            if parked is not None:
                if parked.state is park.PARKED:
                    sockets = list(sockets)
                    entries = park.checked(sockets, parked.keys)
                    if entries is not None:
                        parked.keep_checked(entries, self.reactor.seconds())
                        return succeed(None)
                # not for this process (a transform, a recording, a socket
                # it does not hold): the worker takes the call now
                return self._after_handoff(parked, True, self.configure, call_id, sockets)
            return fail(NGError(E_UNKNOWN_CALL))
        return self._request(slot, "configure", call_id, list(sockets))

    def release(self, call_id, sockets=None):
        slot = self._routes.get(call_id)
        if slot is None:
            parked = self._parked.get(call_id)
            if parked is not None:
                if parked.state is park.PARKED:
                    self._unpark(call_id, None if sockets is None else list(sockets))
                    return succeed(None)
                return self._after_handoff(parked, False, self.release, call_id, sockets)
            return succeed(None)
        if sockets is None:
            self._unroute(call_id)
        else:
            sockets = list(sockets)
        d = self._request(slot, "release", call_id, sockets)

        def done(result):
            if isinstance(result, Failure) and not result.check(WorkerUnavailable):
                return result
            return None  # released, or the worker and the ports with it are gone

        return d.addBoth(done)

    def stats_release(self, call_id):
        """A deleted call's :meth:`stats`, then the :meth:`release` of all
        its ports, in one round trip: fires with its stats (``{}`` for a
        call no worker holds); the call is forgotten at once."""
        slot = self._routes.get(call_id)
        if slot is None:
            parked = self._parked.get(call_id)
            if parked is not None:
                if parked.state is park.PARKED:
                    stats = {call_id: parked.stats()}
                    # (its ports go once the delete's reply has been sent;
                    # sync.after_reply)
                    sync.after_reply(self._unpark, call_id, None)
                    return succeed(stats)
                return self._after_handoff(parked, False, self.stats_release, call_id)
            return succeed({})
        self._unroute(call_id)
        return self._request(slot, "stats_release", call_id)

    def stats(self, call_id=None):
        if call_id is not None:
            slot = self._routes.get(call_id)
            if slot is None:
                parked = self._parked.get(call_id)
                if parked is not None:
                    if parked.state is park.PARKED:
                        return succeed({call_id: parked.stats()})
                    return self._after_handoff(parked, False, self.stats, call_id)
                return succeed({})
            return self._request(slot, "stats", call_id)
        return self._merged("stats", None)

    def last_packets(self):
        """``{call_id: the newest last_packet of its sockets}`` of every
        worker's calls (``EmbeddedEngine.last_packets``: the timeout
        sweep's figure, without every socket's counters crossing the
        pipes); a worker that cannot answer is left out, as in
        :meth:`stats`."""
        return self._merged("last_packets")

    def transcoders(self):
        """``EmbeddedEngine.transcoders`` of every live worker, added up
        per chain (a worker that cannot answer is left out)."""
        ds = [self._request(slot, "transcoders") for slot in self._candidates()]

        def add(results):
            out = {}
            for ok, value in results:
                if not ok:
                    continue
                for chain, (count, rates) in value.items():
                    have, have_rates = out.get(chain, (0, None))
                    if rates is not None and have_rates is not None:
                        rates = tuple(a + b for a, b in zip(rates, have_rates))
                    out[chain] = (have + count, rates if rates is not None else have_rates)
            return out

        return DeferredList(ds, consumeErrors=True).addCallback(add)

    def _merged(self, op, *args):
        """``op(*args)`` in every live worker: their dicts merged (a worker
        that cannot answer is left out)."""
        ds = [self._request(slot, op, *args) for slot in self._candidates()]

        def merge(results):
            out = {}
            for ok, value in results:
                if ok:
                    out.update(value)
            if self._parked:
                # calls parked here (or in the middle of their hand-off,
                # if the worker did not count them yet)
                for call_id, parked in self._parked.items():
                    if call_id not in out:
                        out[call_id] = parked.stats() if op == "stats" else parked.newest()
            return out

        return DeferredList(ds, consumeErrors=True).addCallback(merge)

    def totals(self):
        ds = [self._request(slot, "totals") for slot in self._candidates()]

        def add(results):
            out = dict.fromkeys(TOTAL_KEYS, 0)
            for ok, value in results:
                if not ok:
                    continue
                for key, number in value.items():
                    if isinstance(number, (int, float)) and not isinstance(number, bool):
                        out[key] = out.get(key, 0) + number
            if self._parked:
                # the parked calls' ports: bound here, free in the workers' pools
                parked = 2 * sum(len(p.pairs) for p in self._parked.values())
                out["ports_used"] += parked
                out["ports_free"] = max(0, out["ports_free"] - parked)
            return out

        return DeferredList(ds, consumeErrors=True).addCallback(add)

    # -- the lazy hand-off (omnirtp.media.park) ---------------------------

    @property
    def park_limit(self):
        """At most this many sockets are parked at once: this process's
        open files limit less twice :data:`omnirtp.limits.SPARE`, which
        its listeners, connections and logs keep.  The limit is read once
        (at the first park) and again after :meth:`open_files_changed`
        (``set maxopenfiles``), not on every park.  With more than two
        workers that limit, raised for one worker's slice, is below all
        the ports: the calls beyond it go to their workers at once, as
        without parking.  (Settable: tests.)"""
        if self._park_limit is not None:
            return self._park_limit
        if not self.lazy:
            return 0
        limit = self._open_files
        if limit is None:
            limit = self._open_files = soft_limit()
        if limit == RLIM_INFINITY:
            return park.MAX_PARKED
        return max(0, limit - 2 * SPARE)

    @park_limit.setter
    def park_limit(self, value):
        self._park_limit = value

    def open_files_changed(self):
        """This process's open files limit was changed (``set
        maxopenfiles``: :meth:`omnirtp.control.operations.Operations.set_open_files`):
        :attr:`park_limit` reads it again."""
        self._open_files = None

    def _park(self, call_id, groups, sockets):
        """Park a new call here if it can be (its entries all plain, its
        ports bound from the slice of the worker it would go to): the
        ports of each group, or None (it goes to a worker as always;
        nothing of it is held here)."""
        sockets_needed = 2 * sum(count for _address, count in groups)
        if not sockets_needed or sockets_needed > park.MAX_SOCKETS:
            return None
        # the entries first (with the placeholder ports: the same keys):
        # a call that is not for this process (a transform, ICE, DTLS or
        # SRTP: a WebRTC one) binds nothing here
        held = set()
        index = 0
        for address, count in groups:
            for _ in range(count):
                port = placeholder(index)
                held.add((address, port))
                held.add((address, port + 1))
                index += 1
        entries = park.checked(sockets, held)
        if entries is None:
            return None
        slot = self._pick(set())
        if slot is None or self._parked_sockets + sockets_needed > self.park_limit:
            return None
        parked = park.ParkedCall(call_id, slot)
        bind = self._bind
        if bind is None:
            self._bind = bind = bind_media
        watcher = self._watcher
        if watcher is None:
            # (real sockets in one epoll; a test's fake ones, its bind
            # given, with a reactor reader each)
            kind = park.Poller if bind is bind_media else park.Readers
            self._watcher = watcher = kind(self.reactor, self._wake)
        now = self.reactor.seconds()
        got = []
        real = {}  # placeholder key -> the key bound for it
        index = 0
        try:
            for address, count in groups:
                pool = slot.park_pools.get(address)
                if pool is None:
                    if address not in slot.slices:
                        self._close_pairs(slot, parked.pairs.items())
                        return None
                    lo, hi = slot.slices[address]
                    pool = slot.park_pools[address] = PortPool(lo, hi)
                ports = []

                def bind_pair(port, address=address):
                    return bind_both(bind, address, port)

                for _ in range(count):
                    port, (rtp, rtcp) = pool.acquire(bind_pair)
                    parked.add(address, port, rtp, rtcp, now)
                    ports.append(port)
                    key = placeholder(index)
                    real[(address, key)] = (address, port)
                    real[(address, key + 1)] = (address, port + 1)
                    index += 1
                got.append(ports)
        except (PortsExhausted, OSError, ValueError) as e:
            # the slice is full here, no file is left: the worker
            # decides, as it always did
            if isinstance(e, OSError) and e.errno in NO_FILES_ERRNOS:
                self.log.debug("call {call_id}: not parked: {error}", call_id=call_id,
                               error=str(e))
            self._close_pairs(slot, parked.pairs.items())
            return None
        try:
            watcher.watch(call_id, parked.pairs.values())
        except OSError as e:
            self.log.debug("call {call_id}: not parked: {error}", call_id=call_id, error=str(e))
            self._close_pairs(slot, parked.pairs.items())
            return None
        parked.keep_checked(entries, now, real)
        self._parked[call_id] = parked
        self._parked_sockets += sockets_needed
        slot.calls.add(call_id)
        self.park_counts["parked"] += 1
        return got

    @staticmethod
    def _close_pairs(slot, pairs):
        """Close the sockets of ``pairs`` (``((address, rtp port), (rtp,
        rtcp))`` each) and return their ports to ``slot``'s park pools."""
        for (address, port), (rtp, rtcp) in pairs:
            rtp.close()
            rtcp.close()
            slot.park_pools[address].release(port)

    def _unpark(self, call_id, keys):
        """Release a parked call's ports (``keys``: the RTP keys of some;
        None: all, and the call is forgotten)."""
        parked = self._parked.get(call_id)
        if parked is None:
            return
        if keys is None:
            # (the usual way, a delete's: no entry is left to look at)
            self._watcher.closing(parked.pairs.values())
            gone = parked.drop_all()
        else:
            gone = parked.drop([(str(k[0]), int(k[1]) & ~1) for k in keys])
            if gone:
                self._watcher.closing([pair for _key, pair in gone])
        if gone:
            # (closed without leaving the epoll first: their close takes
            # them out; park.Poller)
            self._close_pairs(parked.slot, gone)
            self._parked_sockets -= 2 * len(gone)
        if not parked.pairs:
            del self._parked[call_id]
            parked.slot.calls.discard(call_id)
            self.park_counts["released"] += 1

    def _wake(self, call_id):
        """Media arrived on a parked call's socket: hand it over."""
        parked = self._parked.get(call_id)
        if parked is not None and parked.state is park.PARKED:
            try:
                self._hand_off(parked, set())
            except Exception:
                # (a bug: the call must not stay half-moved, its requests waiting)
                self.log.failure("call {call_id}: the hand-off failed", call_id=call_id)
                if self._parked.get(call_id) is parked:
                    self._handoff_failed(parked, "its hand-off failed")

    def _after_handoff(self, parked, start, method, *args):
        """``method(*args)`` once the parked call's hand-off is over (a
        Deferred with its result): a call's requests keep their order.
        ``start``: hand the call over now if it is still parked (a
        request only its worker can carry out)."""
        d = Deferred()
        parked.waiting.append((method, args, d))
        if start and parked.state is park.PARKED:
            self._hand_off(parked, set())
        return d

    def _live(self, slot):
        return slot.process is not None and slot.state in (READY, STARTING)

    def _hand_off(self, parked, tried):
        """Send the parked call to its worker (or, if it cannot take it,
        another one): its sockets over the hand-off socket, then the
        ``adopt`` request on the pipe."""
        if parked.state is park.PARKED:
            # (out of the epoll before the files go: they stay open in the
            # worker, so their close here would leave them in it)
            self._watcher.unwatch(parked.pairs.values())
        parked.state = park.MOVING
        call_id = parked.call_id
        while True:
            slot = parked.slot
            if slot.index in tried or not self._live(slot):
                slot = self._pick(tried)
            if slot is None:
                # (on the next turn: not inside the request that started it)
                self.reactor.callLater(0, self._handoff_failed, parked,
                                       "no media worker could take its media")
                return
            tried.add(slot.index)
            process = slot.process
            self._handoffs += 1
            tag = b"%d" % (self._handoffs,)
            socks = parked.sockets()
            send = getattr(process.transport, "send_sockets", None)
            try:
                if send is not None:
                    send(tag, socks)  # an in-memory worker (tests)
                elif process.channel is None:
                    raise OSError("the worker has no hand-off socket")
                else:
                    park.send_sockets(process.channel, tag, socks)
            except OSError as e:
                self.log.warn("call {call_id}: cannot hand its sockets to media worker "
                              "{worker}: {error}", call_id=call_id, worker=slot.index,
                              error=str(e))
                continue
            d = self._request(slot, "adopt", call_id, tag, parked.groups(),
                              parked.entry_list(), list(parked.since.items()))
            args = (parked, slot, tried)
            sync.listen(d, self._adopted, args, self._adopt_failed, args)
            return

    def _adopted(self, result, parked, slot, tried):
        call_id = parked.call_id
        if self._parked.get(call_id) is not parked:
            return None  # the pool stopped meanwhile
        del self._parked[call_id]
        parked.slot.calls.discard(call_id)
        # the worker holds them now: this process's copies go
        self._parked_sockets -= 2 * len(parked.pairs)
        self._close_pairs(parked.slot, parked.pairs.items())
        self._route(call_id, slot)
        self._held.add(call_id)
        self.park_counts["handed"] += 1
        self._run_waiting(parked)
        return None

    def _adopt_failed(self, failure, parked, slot, tried):
        if self._parked.get(parked.call_id) is not parked:
            return None
        self.log.warn("call {call_id}: media worker {worker} did not take its media: {why}",
                      call_id=parked.call_id, worker=slot.index, why=failure.getErrorMessage())
        self._hand_off(parked, tried)
        return None

    def _handoff_failed(self, parked, why):
        """No worker took the parked call: its ports are closed here and
        the call is reported lost (``on_calls_lost``)."""
        call_id = parked.call_id
        if self._parked.get(call_id) is not parked:
            return  # the pool stopped meanwhile
        text = "call %s: %s; its ports are closed" % (call_id, why)
        self.log.error("{text}", text=text)
        self._unpark(call_id, None)
        self.park_counts["released"] -= 1
        self.park_counts["failed"] += 1
        self.lost_calls += 1
        try:
            self.on_calls_lost([call_id], text)
        except Exception:
            self.log.failure("on_calls_lost failed")
        self._run_waiting(parked)

    def _run_waiting(self, parked):
        waiting, parked.waiting = parked.waiting, []
        for method, args, d in waiting:
            try:
                result = method(*args)
            except Exception:
                d.errback(Failure())
                continue
            result.addCallbacks(d.callback, d.errback)

    def parked(self):
        """The call-ids parked in this process (not handed to a worker)."""
        return set(self._parked)
