"""Compose the daemon: media engine, call registry, ng listeners.

``makeService(config, reactor=None)`` is the one place that resolves the
global reactor; everything below takes it as an argument.
"""

import gc
import os
import socket
import uuid

from twisted.application import service
from twisted.logger import Logger
from twisted.python.failure import Failure

from omnirtp.call.negotiate import Interfaces, Negotiator
from omnirtp.call.registry import CallRegistry, Timeouts
from omnirtp.control.access import AccessList
from omnirtp.control.commands import Dispatcher
from omnirtp.errors import ConfigError

_log = Logger()


class _RegistryService(service.Service):
    """Starts and stops the registry's timeout sweeper with the daemon."""

    log = Logger()

    def __init__(self, registry, warnings=(), logging=None, summary=None, levels=None):
        self.registry = registry
        self.warnings = warnings
        #: None, or omnirtp.logging.install's keywords (the real daemon)
        self.logging = logging
        self.summary = summary
        self.levels = levels

    def startService(self):
        service.Service.startService(self)
        if self.logging is not None:
            from omnirtp.logging import install
            install(self.levels, **self.logging)
            self._follow_engine_debug()
            # the real daemon: once running, what start-up made (modules,
            # config, services) stays for good; the garbage collector's
            # full passes need not look at it again (gc.freeze)
            self.registry.clock.callLater(0, gc.freeze)
        if self.summary:
            self.log.info("{summary}", summary=self.summary)
        for text in self.warnings:
            self.log.warn("{warning}", warning=text)
        # the codecs' libraries are looked for once, now: a missing one is
        # logged here and never offered
        from omnirtp.codecs import report
        report()
        from omnirtp.media import relay
        if relay.FAST_MISSING:
            self.log.warn("{text}", text=relay.FAST_MISSING)
        self.registry.start()
        limits = getattr(self.registry, "limits", None)
        if limits is not None:
            limits.start()

    def stopService(self):
        self.registry.stop()
        limits = getattr(self.registry, "limits", None)
        if limits is not None:
            limits.stop()
        return service.Service.stopService(self)

    def _follow_engine_debug(self):
        """An embedded media engine (``num-threads = 0``) makes its
        allocate's debug line only while the installed filters would let
        it through (``log_debug``), from now on and after every change of
        the levels (``set loglevel``, SIGUSR1/SIGUSR2, SIGHUP); a worker
        pool's workers follow their own filter (``set_log_level``)."""
        engine = getattr(self.registry, "engine", None)
        if getattr(engine, "log_debug", None) is None \
                or getattr(engine, "set_log_level", None) is not None:
            return
        from omnirtp.logging import debug_dropped

        def follow(_levels=None):
            engine.log_debug = not debug_dropped(engine.log)

        follow()
        if self.levels is not None:
            self.levels.watchers.append(follow)


class _NGService(service.Service):
    """Binds the ng listeners on start, closes them on stop.

    With media workers (``num-threads`` > 0), ``ready`` is a callable that
    returns a Deferred firing when the workers answer.  The ports are bound
    at start (a port in use still fails the start), but they are not read
    until then, or until ``ready_timeout`` seconds have passed: requests
    (and Kamailio's ping) wait in the socket's receive queue instead of being
    answered by a daemon that cannot allocate media yet.  Kamailio's
    retransmissions of a waiting request carry its cookie and are answered
    from the ng cache once it has been handled.
    """

    log = Logger()

    def __init__(self, reactor, addresses, protocol_factory, ready=None, ready_timeout=30.0,
                 tos=None):
        self.reactor = reactor
        self.addresses = addresses
        self.protocol_factory = protocol_factory
        self.ports = []
        #: ``control-tos``: the TOS byte of the ng replies (None: the system's)
        self.tos = tos
        self.ready = ready
        self.ready_timeout = ready_timeout
        self.reading = False
        self._gate = None

    def startService(self):
        from omnirtp.control import ng
        service.Service.startService(self)
        for host, port in self.addresses:
            self.ports.append(ng.listen_ng(self.reactor, host, port, self.protocol_factory()))
        if self.tos is not None:
            self.set_tos(self.tos)
        if self.ready is None:
            self.reading = True
            return
        for p in self.ports:
            p.stopReading()
        self.log.info("ng waits for the media workers before it answers")
        d = self.ready()
        self._gate = self.reactor.callLater(self.ready_timeout, self._open, None, "timeout")
        d.addBoth(self._open, "ready")

    def set_tos(self, tos):
        """The TOS byte (IPv6: traffic class) of the ng replies from now on."""
        from omnirtp.media.relay import apply_tos
        self.tos = tos
        for p in self.ports:
            apply_tos(p.socket, tos, p.socket.family == socket.AF_INET6)

    def _open(self, result, why):
        if self.reading or not self.running:
            return None
        self.reading = True
        if self._gate is not None and self._gate.active():
            self._gate.cancel()
        self._gate = None
        if why == "timeout":
            self.log.warn("the media workers did not answer within {seconds:g} s: "
                          "ng answers anyway", seconds=self.ready_timeout)
        elif isinstance(result, Failure):
            self.log.warn("the media workers failed to start ({reason}): ng answers anyway",
                          reason=result.getErrorMessage())
        for p in self.ports:
            p.startReading()
        return None

    def stopService(self):
        service.Service.stopService(self)
        if self._gate is not None and self._gate.active():
            self._gate.cancel()
        self._gate = None
        ports, self.ports = self.ports, []
        for p in ports:
            p.stopListening()


class _EngineService(service.Service):
    """Closes the embedded engine's sockets on shutdown."""

    def __init__(self, engine):
        self.engine = engine

    def stopService(self):
        service.Service.stopService(self)
        self.engine.close()


class _RecordingService(service.Service):
    """Completes the metadata of every call still recorded at shutdown
    (their pcap files are flushed and closed when the engine closes)."""

    def __init__(self, registry, spool):
        self.registry = registry
        self.spool = spool

    def stopService(self):
        service.Service.stopService(self)
        for call in list(self.registry.calls.values()):
            self.spool.finish(call, terminated=True)


def build_recording(config, registry):
    """The recording Spool (omnirtp.recording.spool) of ``recording-dir``,
    its directories created (ConfigError if they cannot be); hooked to the
    end of every call."""
    from omnirtp.recording.spool import Spool
    spool = Spool(getattr(config, "recording_dir", None),
                  getattr(config, "recording_format", None) or "raw", clock=registry.clock)
    spool.prepare()
    registry.on_end.append(lambda call: spool.finish(call, terminated=True))
    return spool


def startup_warnings(config):
    """One sentence per config warning and per unimplemented option; and
    one when ng listens beyond loopback while control-allow names nothing
    (an rtpengine setup moved over unchanged: its SIP proxy is refused)."""
    lines = list(getattr(config, "warnings", ()))
    if getattr(config, "recording_method", "pcap") == "proc":
        lines.append("recording-method = proc needs rtpengine's kernel module; omnirtp "
                     "records with the pcap method")
    for name in getattr(config, "unimplemented", ()):
        lines.append("option '{}' is not implemented by omnirtp yet; ignored".format(name))
    if not getattr(config, "control_allow", ()):
        outside = [hp for hp in getattr(config, "listen_ng", ())
                   if not AccessList().allows(hp[0])]
        if outside:
            lines.append(
                "listen-ng {} is reachable from other hosts, but control-allow names no "
                "network: only loopback sources are answered".format(
                    ", ".join("%s:%d" % hp for hp in outside)))
    return lines


def summary(config):
    """One line for the log at start: what this instance serves."""
    from omnirtp import __version__
    listen = ", ".join("%s:%d" % hp for hp in config.listen_ng)
    for name, addrs in (("CLI", config.listen_cli), ("HTTP", config.listen_http),
                        ("HTTPS", config.listen_https)):
        if addrs:
            listen += "; %s on %s" % (name, ", ".join("%s:%d" % hp for hp in addrs))
    ifaces = ", ".join(str(i) for i in config.interfaces)
    media = ("%d media worker processes" % config.num_threads if config.num_threads > 0
             else "media in the control process")
    allowed = ", ".join(("loopback",) + tuple(getattr(config, "control_allow", ())))
    return ("omnirtp %s: ng on %s (from %s); interfaces %s; ports %d-%d; %s; max-sessions %d"
            % (__version__, listen, allowed, ifaces, config.port_min, config.port_max, media,
               config.max_sessions))


def build_engine(config, reactor, interfaces, certificate=None):
    """The media engine: embedded for num-threads 0, else a worker pool.

    ``certificate``: the daemon's one DTLS certificate, whose fingerprint
    the negotiator writes (None: made here from the ``dtls-*`` options).
    The engine keeps it as ``engine.certificate``; a pool hands it to its
    workers."""
    if certificate is None:
        from omnirtp.media.dtls import Certificate
        certificate = Certificate.from_config(config)
    addresses = interfaces.engine_map(config.port_min, config.port_max)
    if config.num_threads and config.num_threads > 0:
        from omnirtp.media.pool import WorkerPool
        # the control process checks that the kernel can forward and drops
        # what a crash left; then each worker owns a table (omnirtp-N-wK)
        forwarder = build_forwarder(config)
        table = -1
        if forwarder is not None:
            forwarder.stop()
            table = forwarder.number
        pool = WorkerPool(reactor, addresses, config.num_threads,
                          log_level=config.log_level, certificate=certificate, table=table,
                          socket_cpu_affinity=socket_cpu_affinity(config), lazy=True)
        return pool, pool
    from omnirtp.media.engine import EmbeddedEngine
    engine = EmbeddedEngine(reactor, addresses, certificate=certificate,
                            forwarder=build_forwarder(config),
                            socket_cpu_affinity=socket_cpu_affinity(config))
    return engine, _EngineService(engine)


def socket_cpu_affinity(config, cores=None):
    """The number of SO_INCOMING_CPU values for the calls' media sockets
    (option ``socket-cpu-affinity``): 0 (the default) off, a positive value
    as given, a negative one the number of CPU cores online (``cores()``,
    default ``sysconf(SC_NPROCESSORS_ONLN)``; ConfigError when unknown, as
    rtpengine 10.5 refuses to start then)."""
    value = getattr(config, "socket_cpu_affinity", None) or 0
    if value >= 0:
        return value
    if cores is None:
        def cores():
            return os.sysconf("SC_NPROCESSORS_ONLN")
    try:
        value = cores()
    except (OSError, ValueError):
        value = 0
    if value <= 0:
        raise ConfigError("Number of CPU cores is unknown, cannot auto-set socket CPU affinity")
    return value


def build_forwarder(config, make=None, drop_orphans=None):
    """The started kernel forwarder for ``table = N`` (N >= 0), or None:
    ``table = -1``, or kernel forwarding impossible here (one log line,
    media in userspace, as rtpengine falls back).  With ``no-fallback``
    the impossible case raises ``ConfigError`` (the daemon does not start).
    ``table = -1`` deletes the nftables tables of omnirtp processes that are
    gone (``omnirtp.media.kernel.drop_orphans``; quietly nothing without
    libnftables or the privileges).  ``make``, ``drop_orphans``: the
    forwarder factory and the cleanup (tests)."""
    number = getattr(config, "table", -1)
    if number is None or number < 0:
        from omnirtp.media.kernel import KernelUnavailable, NftError
        if drop_orphans is None:
            from omnirtp.media.kernel import drop_orphans
        try:
            dropped = drop_orphans()
        except (KernelUnavailable, NftError):
            dropped = ()  # no nftables here, or not ours to touch
        if dropped:
            _log.info("table = -1: deleted the nftables tables a stopped omnirtp left: "
                      "{tables}", tables=", ".join(dropped))
        return None
    from omnirtp.errors import ConfigError
    from omnirtp.media.kernel import KernelUnavailable, NftForwarder
    try:
        forwarder = (make or NftForwarder)(number)
        forwarder.start()
    except KernelUnavailable as e:
        if getattr(config, "no_fallback", False):
            raise ConfigError("table = %d: %s, and no-fallback is set" % (number, e)) from None
        _log.warn("table = {table}: {reason}; media is relayed in userspace",
                  table=number, reason=str(e))
        return None
    _log.info("table = {table}: plain RTP is forwarded in the kernel (nftables table "
              "inet {name})", table=number, name=forwarder.table)
    return forwarder


class _StateService(service.Service):
    """The state store (``redis`` / ``redis-write``): connects on start,
    rebuilds the kept calls (``restore``), stops the stores on stop."""

    log = Logger()
    restore_timeout = 60.0

    def __init__(self, read_store, write_store, registry, negotiator, interfaces):
        self.read_store = read_store
        self.write_store = write_store
        #: each store once (``redis-write`` may name the same database)
        self.stores = _distinct(read_store, write_store)
        self.registry = registry
        self.negotiator = negotiator
        self.interfaces = interfaces
        self.restored = None

    def startService(self):
        from omnirtp.state.keyspace import HEARTBEAT, OWNER_TTL
        service.Service.startService(self)
        for store in self.stores:
            store.start().addErrback(lambda f: None)  # logged by the store, retried
        # "this instance is alive", for the instances following its database
        # (subscribe-keyspace): they take its calls over when it stops
        self.write_store.heartbeat(getattr(self.negotiator, "instance_id", None) or "omnirtp",
                                   HEARTBEAT, OWNER_TTL)

    def stopService(self):
        from twisted.internet import defer
        service.Service.stopService(self)
        return defer.gatherResults([store.stop() for store in self.stores])

    def after(self, ready):
        """A ``ready`` callable for the ng gate: ``ready`` (the workers), then
        the restore."""
        from twisted.internet import defer

        def gate():
            d = defer.succeed(None) if ready is None else defer.maybeDeferred(ready)
            d.addBoth(lambda _: self.restore())
            return d
        return gate

    def restore(self):
        from omnirtp.state.restore import restore_calls
        d = restore_calls(self.read_store, self.registry, self.negotiator, self.interfaces)

        def done(result):
            self.restored = result
            return result

        def failed(f):
            self.log.warn("no calls restored from redis {address}: {reason}",
                          address=str(self.read_store.address), reason=f.getErrorMessage())
            self.restored = (0, 0)
        return d.addCallbacks(done, failed)


def _distinct(read, write):
    return [read] if write is read else [read, write]


def _redis_reachable(address, timeout):
    import socket
    try:
        socket.create_connection((address.host, address.port), timeout=timeout).close()
    except OSError as e:
        return e.strerror or str(e)
    return None


def build_state(config, reactor, registry, negotiator, interfaces):
    """The state service for ``redis`` / ``redis-write`` (None without).

    As rtpengine: calls are restored from ``redis`` and written to
    ``redis-write`` (``redis`` when not given); a ``redis`` that does not
    answer at start stops the start unless ``no-redis-required``."""
    if not config.redis and not config.redis_write:
        return None
    from omnirtp.state.store import RedisAddress, RedisStore

    def store(text):
        return RedisStore(reactor, RedisAddress.parse(text), expires=config.redis_expires or 0,
                          connect_timeout=(config.redis_connect_timeout or 1000) / 1000.0,
                          cmd_timeout=(config.redis_cmd_timeout or 0) / 1000.0,
                          disable_time=float(config.redis_disable_time or 10))
    read = store(config.redis or config.redis_write)
    write = store(config.redis_write) if config.redis_write and config.redis else read
    if not config.no_redis_required:
        for s in _distinct(read, write):
            why = _redis_reachable(s.address, s.connect_timeout)
            if why is not None:
                raise ConfigError("redis %s is unreachable (%s); start with no-redis-required "
                                  "to run without it" % (s.address, why))
    registry.store = write
    write.snapshot_all = registry.snapshots
    state = _StateService(read, write, registry, negotiator, interfaces)
    # the databases followed: subscribe-keyspace at start, ksadd / ksrm at
    # run time, our own while in standby (omnirtp.state.keyspace)
    from omnirtp.state.keyspace import KeyspaceFollower, parse_keyspaces
    state.follower = KeyspaceFollower(
        reactor, RedisAddress.parse(config.redis_subscribe or config.redis
                                    or config.redis_write),
        parse_keyspaces(config.subscribe_keyspace or ()), registry, negotiator, interfaces,
        connect_timeout=read.connect_timeout, disable_time=read.disable_time,
        own=write.address, switchover=bool(getattr(config, "active_switchover", False)))
    return state


def build(config, reactor, log_level=None, reload=None, file_limit=None):
    """The parts of a daemon, for makeService and for tests.

    ``log_level`` given (makeService): the daemon's log is routed and
    filtered at start, and the signal handlers are installed; ``reload``:
    a no-argument callable that loads the config again (for SIGHUP);
    ``file_limit``: what :func:`omnirtp.limits.apply` said, for the log at
    start."""
    from omnirtp.control.ng import NGProtocol
    from omnirtp.media.dtls import Certificate
    interfaces = Interfaces(config.interfaces)
    # one DTLS certificate per daemon: its fingerprint goes into the SDP
    # (Negotiator) and the engine makes the handshakes with it
    certificate = Certificate.from_config(config)
    engine, engine_service = build_engine(config, reactor, interfaces, certificate)
    registry = CallRegistry(
        engine, reactor,
        Timeouts(config.timeout, config.silent_timeout, config.offer_timeout,
                 config.final_timeout, config.delete_delay),
        max_sessions=config.max_sessions)
    from omnirtp.control.load import LoadLimits
    registry.limits = LoadLimits(reactor, engine.totals, config.max_load, config.max_cpu,
                                 config.max_bandwidth)
    negotiator = Negotiator(registry, interfaces,
                            endpoint_learning=config.endpoint_learning,
                            instance_id=uuid.uuid4().hex[:12],
                            tos=config.tos or 0, certificate=certificate)
    access = AccessList(getattr(config, "control_allow", ()))
    spool = build_recording(config, registry)
    dispatcher = Dispatcher(registry, negotiator, delete_delay=config.delete_delay,
                            access=access, recording=spool)
    from omnirtp.control.operations import Operations
    from omnirtp.logging import LogLevels
    levels = LogLevels.from_config(config, log_level)
    set_worker_level = getattr(engine, "set_log_level", None)
    if set_worker_level is not None:
        # media workers log what the most verbose subsystem wants (the
        # records they send are filtered here per subsystem), and follow
        # every change: set loglevel, SIGUSR1/SIGUSR2, SIGHUP
        set_worker_level(levels.highest())
        levels.watchers.append(lambda changed: set_worker_level(changed.highest()))
    operations = Operations(dispatcher, config, levels)
    top = service.MultiService()
    engine_service.setServiceParent(top)
    _RecordingService(registry, spool).setServiceParent(top)
    logging = None
    if log_level is not None:
        logging = dict(log_stderr=config.log_stderr, facility=config.log_facility,
                       timestamps=not config.no_log_timestamps)
    warnings, line = startup_warnings(config), summary(config)
    if file_limit is not None:
        line += "; " + file_limit[0]
        if file_limit[1]:
            warnings.append(file_limit[1])
    _RegistryService(registry, warnings, logging, line, levels).setServiceParent(top)
    state = build_state(config, reactor, registry, negotiator, interfaces)
    ready = getattr(engine, "whenReady", None)
    ready_timeout = getattr(engine, "start_timeout", 30.0)
    if state is not None:
        state.setServiceParent(top)
        if state.follower is not None:
            state.follower.setServiceParent(top)
        # ng answers once the kept calls are back (and the workers, if any,
        # answered): Kamailio's next request for a call finds it
        ready = state.after(ready)
        ready_timeout += state.restore_timeout
    ng_service = _NGService(reactor, config.listen_ng,
                            lambda: NGProtocol(dispatcher, reactor, access=access),
                            ready=ready, ready_timeout=ready_timeout, tos=config.control_tos)
    ng_service.setServiceParent(top)
    operations.ng_service = ng_service
    top.state = state
    operations.follower = state.follower if state is not None else None
    operations.state = state
    dispatcher.follower = operations.follower
    operator = build_operator_listeners(config, reactor, operations, access)
    if operator is not None:
        operator.setServiceParent(top)
    if log_level is not None:
        from omnirtp.signals import Reloader, SignalService
        reloader = Reloader(reload, operations) if reload is not None else None
        SignalService(reactor, levels, reloader).setServiceParent(top)
    top.registry = registry
    top.dispatcher = dispatcher
    top.engine = engine
    top.operations = operations
    top.operator = operator
    top.access = access
    top.certificate = engine.certificate
    return top


def build_operator_listeners(config, reactor, operations, access=None):
    """The CLI / HTTP / HTTPS listeners (None when none is configured);
    ``access`` (the daemon's control AccessList) closes connections from
    sources it does not allow."""
    cli, http, https = config.listen_cli, config.listen_http, config.listen_https
    if not (cli or http or https):
        return None
    from omnirtp.cli.commands import CliCommands
    from omnirtp.cli.protocol import CliFactory
    from omnirtp.http.listen import OperatorListeners
    from omnirtp.http.site import build_site
    commands = CliCommands(operations)
    deadline = getattr(config, "control_timeout", 10.0)
    idle = getattr(config, "http_idle_timeout", None)
    extra = {"timeout": idle} if idle and idle > 0 else {}
    site = build_site(operations, commands, operations.dispatcher, reactor, reactor=reactor,
                      request_timeout=deadline, **extra)
    tls = None
    if https:
        from twisted.internet import ssl
        tls = ssl.DefaultOpenSSLContextFactory(
            config.https_key or config.https_cert, config.https_cert)
    return OperatorListeners(reactor, cli, http, CliFactory(commands, timeout=deadline), site,
                             https=https, tls_context=tls, access=access, timeout=deadline)


def makeService(config, reactor=None, reload=None):
    if reactor is None:
        from twisted.internet import reactor
    from omnirtp import limits
    # every media port a socket (and a companion once media flows): the
    # open files limit raised before any worker starts (they inherit it)
    file_limit = limits.apply(Interfaces(config.interfaces).engine_map(
        config.port_min, config.port_max), max(0, config.num_threads or 0))
    return build(config, reactor, log_level=config.log_level, reload=reload,
                 file_limit=file_limit)
