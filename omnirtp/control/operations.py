"""What an operator reads and changes at run time, for the CLI and HTTP listeners.

:class:`Operations` is a thin read/act layer over the daemon's own objects:
the :class:`~omnirtp.call.registry.CallRegistry` (calls, max-sessions,
deletion) and the ng :class:`~omnirtp.control.commands.Dispatcher`, whose
``statistics()`` and ``call_tree()`` build the same data that the ng
``statistics`` and ``query`` commands answer.  Nothing here is on the packet
path; every figure is read when an operator asks.

:class:`~omnirtp.logging.LogLevels` holds the daemon's log levels (one per
rtpengine subsystem) and is the filter of the daemon's log observers.
"""

import copy
import dataclasses

from twisted.internet import defer
from twisted.logger import Logger

from omnirtp.call.registry import REASON_FORCED
from omnirtp.config.model import timer_value
from omnirtp.logging import SUBSYSTEMS, LogLevels  # noqa: F401 (re-exported)


def _family(address):
    return "IPv6" if ":" in address else "IPv4"


class Operations:
    """The operator's view of one daemon.

    :param dispatcher: the ng ``Dispatcher`` (its registry and engine are used)
    :param config: the daemon's ``Config`` (timeouts, interfaces, port range)
    :param levels: a :class:`LogLevels`
    """

    log = Logger()

    def __init__(self, dispatcher, config, levels=None):
        self.dispatcher = dispatcher
        self.registry = dispatcher.registry
        self.engine = dispatcher.engine
        self.config = config
        self.levels = levels if levels is not None else LogLevels.from_config(config)
        #: what ``params start`` shows and ``params revert`` goes back to
        self.initial = self.settings()

    @property
    def clock(self):
        return self.registry.clock

    # -- calls -------------------------------------------------------------

    def calls(self):
        """The current calls, oldest first."""
        return list(self.registry.calls.values())

    def call(self, call_id):
        return self.registry.get(call_id)

    #: the ``subscribe-keyspace`` follower (``omnirtp.state.keyspace``), or None
    follower = None

    def foreign_calls(self):
        """Other instances' calls followed through Redis, oldest first."""
        return sorted(getattr(self.registry, "foreign", {}).values(), key=lambda c: c.created)

    def take_over(self):
        """Every foreign call becomes ours (the CLI's ``active``): a Deferred
        firing with how many were taken over."""
        if self.follower is None:
            return defer.succeed(0)
        return self.follower.take_over_all()

    def keyspaces(self):
        """The databases followed (``subscribe-keyspace``, ``ksadd``), in the
        order they were added."""
        return self.follower.listed() if self.follower is not None else []

    def redis_keyspace(self, call_id):
        """The Redis database a call is kept in (``redis_keyspace`` of
        ``list sessions``): a foreign call's owner's, an own call's ours;
        0 without redis."""
        f = self.follower
        if f is None:
            return 0
        ks = f.keyspace_of(call_id)
        if ks is not None:
            return ks.db
        return f.own_address.db if f.own_address is not None else 0

    def add_keyspace(self, db):
        """Follow database ``db`` (``ksadd``): True, False when it is
        followed already; None without redis."""
        if self.follower is None:
            return None
        return self.follower.add(db)

    def remove_keyspace(self, db):
        """Stop following ``db`` and drop its foreign calls (``ksrm``): a
        Deferred firing with how many, None when it was not followed."""
        if self.follower is None:
            return defer.succeed(None)
        return self.follower.remove(db)

    def standby(self):
        """Every own call becomes foreign (``standby``): a Deferred firing
        with how many (0 without redis: no other instance can take them)."""
        if self.follower is None:
            return defer.succeed(0)
        return self.follower.standby()

    def terminate_foreign(self):
        """Drop every foreign call, deleted from its owner's database too
        (``terminate foreign``): a Deferred firing with how many."""
        if self.follower is None:
            return defer.succeed(0)
        return self.follower.terminate_all()

    @defer.inlineCallbacks
    def call_tree(self, call):
        """``query``'s statistics of one call (what the ng reply carries)."""
        stats = yield self.engine.stats(call.call_id)
        return self.dispatcher.call_tree(call, stats.get(call.call_id, {}))

    def set_call_debug(self, call, on):
        """``debug <call-id>``: the call's log events pass at debug level
        whatever the levels, until it ends or this is turned off."""
        debug = self.levels.debug_calls
        if on:
            if not self._debug_hooked:
                self._debug_hooked = True
                self.registry.on_end.append(lambda ended: debug.discard(ended.call_id))
            debug.add(call.call_id)
        else:
            debug.discard(call.call_id)

    _debug_hooked = False

    def terminate(self, call):
        """End ``call`` now, counted as forced termination (its counters go
        to the totals first), under the call's signalling lock."""
        return self.registry.run_locked(call.call_id, self._terminate, call)

    @defer.inlineCallbacks
    def _terminate(self, call):
        if self.registry.get(call.call_id) is not call:
            return False
        stats = yield self.engine.stats(call.call_id)
        self.registry.account(call, stats.get(call.call_id, {}))
        yield self.registry.destroy(call, REASON_FORCED)
        return True

    @defer.inlineCallbacks
    def terminate_all(self):
        count = 0
        for call in self.calls():
            ended = yield self.terminate(call)
            count += bool(ended)
        return count

    # -- figures -----------------------------------------------------------

    @defer.inlineCallbacks
    def statistics(self):
        """The ng ``statistics`` reply's ``statistics`` dictionary."""
        totals = yield self.engine.totals()
        return self.dispatcher.statistics(totals)

    def media_families(self):
        """``(ipv4_only, ipv6_only, mixed)``: answered calls by the address
        families of their local media addresses."""
        v4 = v6 = mixed = 0
        for call in self.calls():
            if not call.answered:
                continue
            families = {_family(m.interface.address)
                        for _, m in call.all_medias() if m.has_ports}
            if families == {"IPv4"}:
                v4 += 1
            elif families == {"IPv6"}:
                v6 += 1
            elif families:
                mixed += 1
        return v4, v6, mixed

    def interfaces(self):
        """One dict per local interface address: name, address, family, the
        port range, ports held by calls (an RTP and an RTCP port per
        medium) and the range's size."""
        used = {}
        for call in self.registry.calls.values():
            for ml in call.monologues:
                for m in ml.medias:
                    if m.rtp_port is not None:
                        address = m.interface.address
                        used[address] = used.get(address, 0) + 2
        port_min, port_max = self.config.port_min, self.config.port_max
        return [{"name": spec.name, "address": spec.address,
                 "family": _family(spec.address),
                 "port_min": port_min, "port_max": port_max,
                 "used": used.get(spec.address, 0),
                 "total": port_max - port_min + 1}
                for spec in self.config.interfaces]

    @property
    def limits(self):
        """The registry's :class:`omnirtp.control.load.LoadLimits` (made and
        started here for a registry without: all limits off)."""
        limits = self.registry.limits
        if limits is None:
            from omnirtp.control.load import LoadLimits
            limits = self.registry.limits = LoadLimits(
                self.clock, getattr(self.registry.engine, "totals", None))
            limits.start()
        return limits

    @property
    def max_sessions(self):
        return self.registry.max_sessions

    def set_max_sessions(self, value):
        """-1 (no limit) or a number of calls; new calls only."""
        if value < -1:
            raise ValueError("max-sessions %r is below -1" % (value,))
        self.registry.max_sessions = value

    #: the CLI's ``set`` words for the timers, and their config options
    TIMER_OPTIONS = {"timeout": "timeout", "silenttimeout": "silent-timeout",
                     "offertimeout": "offer-timeout", "finaltimeout": "final-timeout",
                     "deletedelay": "delete-delay"}

    def set_timer(self, option, value):
        """Set one timer option (``timeout``, ``silent-timeout``,
        ``offer-timeout``, ``final-timeout``, ``delete-delay``) in the
        running daemon, as a SIGHUP that changed only it would: the timeout
        sweep reads the new value at its next pass, a later delete takes
        the new delay.  A timeout is taken as the config file's is
        (``config.model.timer_value``: 0 means the default); a negative
        ``delete-delay``, which the file refuses, is taken as rtpengine
        10.5's CLI takes it (deletes at once).  The daemon's config keeps
        the value, so a later SIGHUP applies the file's value again if it
        differs.  Returns the value now in force."""
        value = timer_value(option, value)
        attr = option.replace("-", "_")
        timeouts = copy.copy(self.registry.timeouts)
        setattr(timeouts, attr, value)
        self.registry.timeouts = timeouts
        if option == "delete-delay":
            self.dispatcher.delete_delay = value
        self.config = dataclasses.replace(self.config, **{attr: value})
        return value

    # -- control-tos, redis timers, open files -----------------------------

    #: the ng listeners (``service._NGService``) and the state service
    #: (``service._StateService``, None without redis): set by the daemon
    ng_service = None
    state = None

    #: the CLI's words for the Redis timers, their options and defaults
    REDIS_OPTIONS = {"redisallowederrors": ("redis-allowed-errors", -1),
                     "redisconnecttimeout": ("redis-connect-timeout", 1000),
                     "rediscmdtimeout": ("redis-cmd-timeout", 0),
                     "redisdisabletime": ("redis-disable-time", 10)}

    def redis_setting(self, word):
        """``redis-connect-timeout`` / ``redis-cmd-timeout`` (ms) or
        ``redis-disable-time`` (s) in force, by its CLI word."""
        option, default = self.REDIS_OPTIONS[word]
        value = getattr(self.config, option.replace("-", "_"))
        return default if value is None else value

    def set_redis_setting(self, word, value):
        """Set one of the Redis timers in the running daemon: the stores
        (``redis``, ``redis-write``) and the keyspace follower use it from
        their next connection attempt or command on."""
        option, _ = self.REDIS_OPTIONS[word]
        self.config = dataclasses.replace(self.config, **{option.replace("-", "_"): value})
        if option == "redis-allowed-errors":
            return  # shown and kept, not acted on (docs/compat.md)
        stores = list(self.state.stores) if self.state is not None else []
        for target in stores + ([self.follower] if self.follower is not None else []):
            if option == "redis-connect-timeout":
                target.connect_timeout = value / 1000.0
            elif option == "redis-disable-time":
                target.disable_time = float(value)
            elif hasattr(target, "cmd_timeout"):
                target.cmd_timeout = value / 1000.0

    def set_open_files(self, value, resource=None):
        """``set maxopenfiles``: RLIMIT_NOFILE soft and hard = ``value``, in
        this process (OSError with the kernel's errno if refused; else the
        engine's ``open_files_changed``, if it has one: the media pool's
        cached limit for parked calls) and then in every running media
        worker (a worker that refuses is logged; a worker started later
        inherits this process's limit)."""
        if resource is None:
            import resource
        limit = value if value < 2 ** 63 else resource.RLIM_INFINITY
        try:
            resource.prlimit(0, resource.RLIMIT_NOFILE, (limit, limit))
        except ValueError as e:  # glibc's EINVAL, as Python words it
            raise OSError(22, str(e))
        changed = getattr(self.engine, "open_files_changed", None)
        if changed is not None:
            changed()
        for worker in getattr(self.engine, "workers", ()):
            pid = worker.get("pid")
            if pid is None or worker.get("state") not in ("starting", "ready"):
                continue
            try:
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
            except (OSError, ValueError) as e:
                self.log.warn("media worker {worker} (pid {pid}): open files limit not set "
                              "to {value}: {error}", worker=worker.get("index"), pid=pid,
                              value=value, error=e)

    def transcoders(self):
        """``list transcoders``: a Deferred firing with the engine's
        ``{chain: (transcoders, last second's (packets, octets, samples)
        or None)}`` ({} from an engine without transcoding)."""
        read = getattr(self.engine, "transcoders", None)
        return read() if read is not None else defer.succeed({})

    @property
    def control_tos(self):
        return self.config.control_tos or 0

    def set_control_tos(self, tos):
        """The TOS byte of the ng replies (``control-tos``), from now on."""
        self.config = dataclasses.replace(self.config, control_tos=tos)
        if self.ng_service is not None:
            self.ng_service.set_tos(tos)

    # -- params start | current | diff | revert ---------------------------

    #: the settings that change at run time, in ``params diff``'s order
    #: (rtpengine 10.5's names and, for the limits, its units)
    CHANGEABLE = ("max-sessions", "max-cpu", "max-load", "max-bw", "timeout",
                  "silent-timeout", "final-timeout", "offer-timeout", "delete-delay",
                  "control-tos", "redis_allowed_errors", "redis_disable_time",
                  "redis_cmd_timeout", "redis_connect_timeout")

    def settings(self):
        """The settings in force that change at run time: the log levels
        (``log-level-<subsystem>``) and :data:`CHANGEABLE`, as a dict."""
        out = {"log-level-" + name: self.levels.get(name) for name, _ in SUBSYSTEMS}
        t = self.registry.timeouts
        limits = self.registry.limits
        out.update({
            "max-sessions": self.registry.max_sessions,
            "max-cpu": limits.cpu_limit if limits is not None else 0,
            "max-load": limits.load_limit if limits is not None else 0,
            "max-bw": limits.bw_limit if limits is not None else 0,
            "timeout": t.timeout, "silent-timeout": t.silent_timeout,
            "final-timeout": t.final_timeout, "offer-timeout": t.offer_timeout,
            "delete-delay": self.dispatcher.delete_delay,
            "control-tos": self.control_tos,
            "redis_allowed_errors": self.redis_setting("redisallowederrors"),
            "redis_disable_time": self.redis_setting("redisdisabletime"),
            "redis_cmd_timeout": self.redis_setting("rediscmdtimeout"),
            "redis_connect_timeout": self.redis_setting("redisconnecttimeout"),
        })
        return out

    def revert(self):
        """``params revert``: every setting changed since the start back to
        its start value."""
        start, now = self.initial, self.settings()
        for name, _ in SUBSYSTEMS:
            key = "log-level-" + name
            if now[key] != start[key]:
                self.levels.set(start[key], name)
        if now["max-sessions"] != start["max-sessions"]:
            self.set_max_sessions(start["max-sessions"])
        if (now["max-cpu"], now["max-load"], now["max-bw"]) != (
                start["max-cpu"], start["max-load"], start["max-bw"]):
            self.limits.set_max_cpu(start["max-cpu"] / 100.0)
            self.limits.set_max_load(start["max-load"] / 100.0)
            self.limits.set_max_bandwidth(start["max-bw"])
        for option in ("timeout", "silent-timeout", "final-timeout", "offer-timeout",
                       "delete-delay"):
            if now[option] != start[option]:
                self.set_timer(option, start[option])
        if now["control-tos"] != start["control-tos"]:
            self.set_control_tos(start["control-tos"])
        for word, (option, _) in self.REDIS_OPTIONS.items():
            key = option.replace("-", "_")
            if now[key] != start[key]:
                self.set_redis_setting(word, start[key])

    def timeouts(self):
        t = self.registry.timeouts
        return {"timeout": t.timeout, "silent-timeout": t.silent_timeout,
                "offer-timeout": t.offer_timeout, "final-timeout": t.final_timeout,
                "delete-delay": self.dispatcher.delete_delay}
