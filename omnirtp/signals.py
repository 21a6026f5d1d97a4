"""The daemon's signals: SIGUSR1 / SIGUSR2 lower / raise the log level,
SIGHUP reloads the config file.

* SIGUSR1 and SIGUSR2 move every subsystem's level down / up by one, as
  rtpengine 10.5 does (without a bound), and log one line per subsystem
  ("Decreased 'core' log level to 5").
* SIGHUP: rtpengine 10.5 ignores it.  omnirtp reads the config file again
  (with the same command line, whose values still win) and applies what
  it can change on the fly: the log levels, ``max-sessions``, ``max-load``,
  ``max-cpu``, ``max-bandwidth``, the timeouts
  and ``delete-delay`` (:data:`RELOADABLE`).  Any other changed option is
  named in a warning (it takes effect at the next restart); a file that
  no longer loads is an error in the log and changes nothing.

A signal handler only schedules the work on the reactor
(``callFromThread``, safe from a handler); the work itself is plain code
that the tests call directly.
"""

import dataclasses
import signal

from twisted.application import service
from twisted.logger import Logger

from omnirtp.errors import ConfigError
from omnirtp.logging import SUBSYSTEM_NAMES, LogLevels

_LOG_LEVELS = ("log-level",) + tuple("log-level-" + s for s in SUBSYSTEM_NAMES)
_TIMEOUTS = ("timeout", "silent-timeout", "offer-timeout", "final-timeout", "delete-delay")

#: the options a SIGHUP applies to the running daemon
_LIMITS = ("max-load", "max-cpu", "max-bandwidth")
RELOADABLE = _LOG_LEVELS + ("max-sessions",) + _LIMITS + _TIMEOUTS

# Config fields that are not options (or are derived) and never "change"
_NOT_OPTIONS = ("config_file", "config_section", "unimplemented", "warnings")


def _attr(name):
    return name.replace("-", "_")


class Reloader:
    """Applies a freshly loaded ``Config`` to a running daemon.

    :param load: no-argument callable returning the new ``Config`` (raises
        ``ConfigError``)
    :param operations: the daemon's ``Operations`` (its registry,
        dispatcher, levels and current config)
    """

    log = Logger()

    def __init__(self, load, operations):
        self.load = load
        self.ops = operations

    def reload(self):
        """Reload; returns ``(applied, restart)``: the option names applied
        now and those that need a restart (None when the file failed)."""
        old = self.ops.config
        try:
            new = self.load()
        except ConfigError as e:
            self.log.error("SIGHUP: the configuration does not load ({error}); "
                           "nothing changed", error=str(e))
            return None
        fields = [f.name for f in dataclasses.fields(old) if f.name not in _NOT_OPTIONS]
        changed = [f for f in fields if getattr(old, f) != getattr(new, f)]
        reloadable = {_attr(n): n for n in RELOADABLE}
        applied = sorted(reloadable[f] for f in changed if f in reloadable)
        restart = sorted(f.replace("_", "-") for f in changed if f not in reloadable)
        if any(n in _LOG_LEVELS for n in applied):
            self.ops.levels.update(LogLevels.from_config(new))
        registry = self.ops.registry
        if "max-sessions" in applied:
            registry.max_sessions = new.max_sessions
        if "max-load" in applied:
            self.ops.limits.set_max_load(new.max_load or 0.0)
        if "max-cpu" in applied:
            self.ops.limits.set_max_cpu(new.max_cpu or 0.0)
        if "max-bandwidth" in applied:
            self.ops.limits.set_max_bandwidth(new.max_bandwidth or 0)
        if any(n in _TIMEOUTS for n in applied):
            from omnirtp.call.registry import Timeouts
            registry.timeouts = Timeouts(new.timeout, new.silent_timeout, new.offer_timeout,
                                         new.final_timeout, new.delete_delay)
            self.ops.dispatcher.delete_delay = new.delete_delay
        self.ops.config = dataclasses.replace(
            old, **{_attr(n): getattr(new, _attr(n)) for n in applied})
        self.log.info("SIGHUP: configuration reloaded from {file}; applied: {applied}",
                      file=new.config_file or "no config file",
                      applied=", ".join(applied) or "nothing changed")
        if restart:
            self.log.warn("SIGHUP: changed options that need a restart, not applied: "
                          "{names}", names=", ".join(restart))
        return applied, restart


def shift_levels(levels, delta, log=None):
    """SIGUSR2 (+1) / SIGUSR1 (-1): every subsystem one level up or down,
    logged per subsystem in rtpengine's words."""
    levels.shift(delta)
    if log is not None:
        word = "Increased" if delta > 0 else "Decreased"
        for name in SUBSYSTEM_NAMES:
            level = levels.get(name)
            log.emit(_twisted_level(level), "{word} '{subsystem}' log level to {new_level}",
                     word=word, subsystem=name, new_level=level, log_subsystem=name,
                     log_priority=max(min(level, 7), 0))


def _twisted_level(prio):
    from twisted.logger import LogLevel
    if prio <= 2:
        return LogLevel.critical
    if prio == 3:
        return LogLevel.error
    if prio <= 5:
        return LogLevel.warn
    if prio == 6:
        return LogLevel.info
    return LogLevel.debug


class SignalService(service.Service):
    """Installs the handlers on start and puts the previous ones back on
    stop.  ``install``: ``signal.signal`` or a test's stand-in."""

    log = Logger(namespace="omnirtp.signals")

    def __init__(self, reactor, levels, reloader=None, install=signal.signal):
        self.reactor = reactor
        self.levels = levels
        self.reloader = reloader
        self.install = install
        self.previous = {}

    def handlers(self):
        table = {
            signal.SIGUSR1: lambda: shift_levels(self.levels, -1, self.log),
            signal.SIGUSR2: lambda: shift_levels(self.levels, +1, self.log),
        }
        if self.reloader is not None:
            table[signal.SIGHUP] = self.reloader.reload
        return table

    def startService(self):
        service.Service.startService(self)
        for signum, work in self.handlers().items():
            self.previous[signum] = self.install(signum, self._handler(work))

    def _handler(self, work):
        def handler(signum, frame):
            self.reactor.callFromThread(work)
        return handler

    def stopService(self):
        previous, self.previous = self.previous, {}
        for signum, handler in previous.items():
            self.install(signum, handler if handler is not None else signal.SIG_DFL)
        return service.Service.stopService(self)
