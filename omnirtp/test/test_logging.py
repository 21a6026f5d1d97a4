"""Tests for omnirtp.logging (levels, subsystems, rtpengine's line format,
stderr / syslog / twistd destinations) and omnirtp.signals (SIGUSR1/2,
SIGHUP reload)."""

import io
import os
import signal

from twisted.logger import FileLogObserver, LogLevel, LogPublisher, Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from omnirtp import logging as olog
from omnirtp.config import load
from omnirtp.config.model import Config, InterfaceSpec
from omnirtp.control.operations import Operations
from omnirtp.logging import LogLevels, format_event, install, subsystem_for
from omnirtp.signals import Reloader, SignalService, shift_levels
from omnirtp.test.fakes import ControlStack

T = 1700000000.25
#: the Logger's fast line as omnirtp.logging chose it (before any test patches it)
_FAST_LINE = olog._fast_line


def event(namespace="omnirtp.call.registry.CallRegistry", level=LogLevel.info,
          fmt="call {call_id} ended", **keys):
    e = {"log_namespace": namespace, "log_level": level, "log_format": fmt,
         "log_time": T}
    e.update(keys)
    return e


class LevelsTests(SynchronousTestCase):

    def test_fromConfig(self):
        """log-level for every subsystem, log-level-SUB for one, internals
        off unless named: what rtpengine 10.5's `get loglevel` showed for
        log-level = 5 and log-level-ice = 7."""
        config = Config(log_level=5, log_level_ice=7)
        levels = LogLevels.from_config(config)
        self.assertEqual([(n, levels.get(n)) for n in olog.SUBSYSTEM_NAMES], [
            ("core", 5), ("spandsp", 5), ("ffmpeg", 5), ("transcoding", 5), ("codec", 5),
            ("rtcp", 5), ("ice", 7), ("crypto", 5), ("srtp", 5), ("internals", -1),
            ("http", 5), ("control", 5), ("dtx", 5)])
        self.assertEqual(LogLevels.from_config(Config(log_level_internals=7)).get("internals"), 7)
        self.assertEqual(LogLevels.from_config(config, level=2).get("core"), 2)

    def test_unknownSubsystem(self):
        self.assertRaises(ValueError, LogLevels, 6, {"nope": 3})
        self.assertRaises(KeyError, LogLevels(6).set, 3, "nope")

    def test_setAndShift(self):
        levels = LogLevels(6, {"ice": 7})
        levels.set(4, "ice")
        self.assertEqual((levels.get("ice"), levels.get("core")), (4, 6))
        levels.set(3)
        self.assertEqual(set(levels.levels.values()), {3})
        levels.shift(-1)
        levels.shift(-1)
        levels.shift(-1)
        levels.shift(-1)
        self.assertEqual((levels.level, set(levels.levels.values())), (-1, {-1}))

    def test_watchersFollowEveryChange(self):
        """set, shift and update each tell the watchers (the media
        workers' level follows), which read the highest level."""
        levels = LogLevels(6, {"ice": 7})
        seen = []
        levels.watchers.append(lambda changed: seen.append(changed.highest()))
        self.assertEqual(levels.highest(), 7)
        levels.set(3)
        levels.set(5, "http")
        levels.shift(+1)
        levels.update(LogLevels(2))
        self.assertEqual(seen, [3, 5, 6, 2])

    def test_priorities(self):
        """twisted's levels as syslog priorities; log_priority wins."""
        self.assertEqual([olog.priority({"log_level": lv}) for lv in (
            LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical)],
            [7, 6, 4, 3, 2])
        self.assertEqual(olog.priority({"log_level": LogLevel.info, "log_priority": 5}), 5)
        self.assertEqual(olog.priority({}), 6)

    def test_subsystems(self):
        self.assertEqual(
            [subsystem_for(n) for n in (
                "omnirtp.control.ng.NGProtocol", "omnirtp.cli.commands.CliCommands",
                "omnirtp.http.site.Site", "omnirtp.media.ice.IceAgent",
                "omnirtp.media.dtls.DtlsEndpoint", "omnirtp.media.srtp",
                "omnirtp.call.negotiate.Negotiator", "omnirtp.call.registry.CallRegistry",
                "omnirtp.controlx", "twisted.internet.base", None, "")],
            ["control", "control", "http", "ice", "crypto", "srtp", "control", "core",
             "core", "core", "core", "core"])
        self.assertEqual(olog.subsystem(event(log_subsystem="dtx")), "dtx")

    def test_predicate(self):
        """An event passes when its priority is at most its subsystem's level."""
        levels = LogLevels(5, {"ice": 7})
        ice = "omnirtp.media.ice.IceAgent"
        self.assertEqual(
            [levels(event(ns, lv)) is olog.PredicateResult.maybe for ns, lv in (
                ("omnirtp.x", LogLevel.info), ("omnirtp.x", LogLevel.warn),
                (ice, LogLevel.debug), ("omnirtp.control.ng", LogLevel.debug))],
            [False, True, True, False])
        self.assertEqual(levels(event(log_priority=5)), olog.PredicateResult.maybe)
        self.assertEqual(levels(event()), olog.PredicateResult.no)

    def test_debugCalls(self):
        """A call in ``debug_calls`` (``debug <call-id>``): its events pass
        at debug level whatever the levels; other calls' do not."""
        levels = LogLevels(5)
        mine = event("omnirtp.x", LogLevel.debug)
        mine["call_id"] = "c1"
        other = event("omnirtp.x", LogLevel.debug)
        other["call_id"] = "c2"
        self.assertEqual((levels(mine), levels(other)),
                         (olog.PredicateResult.no, olog.PredicateResult.no))
        levels.debug_calls.add("c1")
        self.assertEqual((levels(mine), levels(other)),
                         (olog.PredicateResult.maybe, olog.PredicateResult.no))


class FormatTests(SynchronousTestCase):

    def test_line(self):
        """rtpengine's stderr line: time, priority name, [call-id]:, [subsystem]."""
        self.assertEqual(format_event(event(call_id="abc")),
                         "[1700000000.250000] INFO: [abc]: [core] call abc ended")
        self.assertEqual(
            format_event(event("omnirtp.control.ng.NGProtocol", LogLevel.warn,
                               "ng protocol error from {addr}", addr=("127.0.0.1", 5)),
                         timestamps=False),
            "WARNING: [control] ng protocol error from ('127.0.0.1', 5)")
        self.assertEqual(format_event(event(level=LogLevel.debug, fmt="started",
                                            log_priority=5), timestamps=False),
                         "NOTICE: [core] started")

    def test_ngCommandLogged(self):
        """Every ng command is one line in the control subsystem, named by
        its call-id when it has one (rtpengine's "Received command")."""
        stack = ControlStack()
        seen = []
        self.patch(stack.dispatch, "log", Logger(
            namespace="omnirtp.control.commands.Dispatcher", observer=seen.append))
        stack.dispatch({"command": "ping"}, ("127.0.0.1", 5060))
        d = stack.dispatch({"command": "query", "call-id": "q1"}, ("::1", 5061, 0, 0))
        self.failureResultOf(d)
        self.assertEqual([format_event(e, timestamps=False) for e in seen], [
            "INFO: [control] Received command 'ping' from 127.0.0.1:5060",
            "INFO: [q1]: [control] Received command 'query' from [::1]:5061"])

    def test_priorityNames(self):
        self.assertEqual(
            [format_event(event(fmt="x", log_priority=p), timestamps=False).split(":")[0]
             for p in range(8)],
            ["EMERG", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG"])

    def test_callIdOnce(self):
        """A text that starts with "[CALL-ID] " names the call once."""
        self.assertEqual(
            format_event(event("omnirtp.call.negotiate.Negotiator", LogLevel.warn,
                               "[{call_id}] refusing SDES with MKI (media {index})",
                               call_id="c-1", index=0), timestamps=False),
            "WARNING: [c-1]: [control] refusing SDES with MKI (media 0)")

    def test_failure(self):
        try:
            1 / 0
        except ZeroDivisionError:
            f = Failure()
        line = format_event(event(level=LogLevel.critical, fmt="it broke", log_failure=f),
                            timestamps=False)
        self.assertTrue(line.startswith("CRIT: [core] it broke\n"), line)
        self.assertIn("ZeroDivisionError", line)


class FakeSyslog:
    LOG_PID = 1
    LOG_DAEMON = 3 << 3
    LOG_LOCAL3 = 19 << 3

    def __init__(self):
        self.calls = []

    def openlog(self, ident, option, facility):
        self.calls.append(("openlog", ident, option, facility))

    def syslog(self, priority, message):
        self.calls.append(("syslog", priority, message))


class InstallTests(SynchronousTestCase):

    def setUp(self):
        self.publisher = LogPublisher()
        self.seen = []
        self.twistd = self.seen.append  # what twistd attached
        self.publisher.addObserver(self.twistd)
        self.log = Logger(namespace="omnirtp.control.ng.NGProtocol", observer=self.publisher)

    def test_stderr(self):
        """log-stderr: rtpengine's lines on the stream, twistd's observer gone."""
        stream = io.StringIO()
        levels = LogLevels(6)
        install(levels, log_stderr=True, timestamps=False, stream=stream,
                publisher=self.publisher)
        self.log.info("[{call_id}] offer", call_id="c1")
        self.log.debug("hidden at 6")
        levels.set(7, "control")
        self.log.debug("shown at 7")
        levels.set(3)
        self.log.warn("hidden at 3")
        self.log.error("an error")
        self.assertEqual(stream.getvalue(),
                         "INFO: [c1]: [control] offer\n"
                         "DEBUG: [control] shown at 7\n"
                         "ERR: [control] an error\n")
        self.assertEqual(self.seen, [])

    def test_timestamps(self):
        stream = io.StringIO()
        install(LogLevels(6), log_stderr=True, stream=stream, publisher=self.publisher)
        self.publisher(event(fmt="started"))
        self.assertEqual(stream.getvalue(), "[1700000000.250000] INFO: [core] started\n")

    def test_syslog(self):
        """log-facility: syslog with that facility, one message per line."""
        fake = FakeSyslog()
        install(LogLevels(4), facility="local3", syslog=fake, publisher=self.publisher)
        self.log.info("hidden at 4")
        self.log.warn("two\nlines")
        self.assertEqual(fake.calls, [
            ("openlog", "omnirtp", FakeSyslog.LOG_PID, FakeSyslog.LOG_LOCAL3),
            ("syslog", 4, "WARNING: [control] two"),
            ("syslog", 4, "lines")])
        self.assertEqual(self.seen, [])

    def test_unknownFacility(self):
        self.assertRaises(ValueError, olog.SyslogObserver, "nope", syslog=FakeSyslog())

    def test_twistdObserversFiltered(self):
        """Neither option: twistd's observers stay, behind the levels;
        installing again does not stack a second filter."""
        levels = LogLevels(6)
        install(levels, publisher=self.publisher)
        [added] = install(levels, publisher=self.publisher)
        self.assertIs(added.observer, self.twistd)
        self.assertEqual(len(self.publisher._observers), 1)
        self.log.info("shown")
        self.log.debug("hidden")
        self.assertEqual([e["log_format"] for e in self.seen], ["shown"])

    def test_installLevel(self):
        levels = olog.install_level(4, publisher=self.publisher)
        self.assertEqual(levels.get("core"), 4)
        self.log.info("hidden")
        self.log.warn("shown")
        self.assertEqual([e["log_format"] for e in self.seen], ["shown"])

    def test_workerLevel(self):
        """The media workers' plain twisted filter: notice lets info pass
        (the control process drops it again)."""
        self.assertEqual([olog.level_for(n) for n in range(8)],
                         [LogLevel.critical] * 3 + [LogLevel.error, LogLevel.warn]
                         + [LogLevel.info] * 2 + [LogLevel.debug])


class ImmediateReactor:
    def __init__(self):
        self.calls = []

    def callFromThread(self, f, *a, **kw):
        self.calls.append(f)
        f(*a, **kw)


class SignalTests(SynchronousTestCase):

    def setUp(self):
        self.installed = {signal.SIGHUP: "old-hup", signal.SIGUSR1: None,
                          signal.SIGUSR2: signal.SIG_DFL}

    def install(self, signum, handler):
        previous = self.installed.get(signum)
        self.installed[signum] = handler
        return previous

    def test_usr1usr2(self):
        """SIGUSR1 lowers every subsystem's level by one, SIGUSR2 raises it
        (rtpengine 10.5: no bound), each logged in rtpengine's words."""
        levels = LogLevels(6)
        svc = SignalService(ImmediateReactor(), levels, install=self.install)
        svc.startService()
        self.assertEqual(self.installed[signal.SIGHUP], "old-hup")  # no reloader: untouched
        self.installed[signal.SIGUSR1](signal.SIGUSR1, None)
        self.assertEqual((levels.get("core"), levels.get("internals")), (5, -2))
        self.installed[signal.SIGUSR2](signal.SIGUSR2, None)
        self.installed[signal.SIGUSR2](signal.SIGUSR2, None)
        self.assertEqual((levels.level, levels.get("ice")), (7, 7))
        svc.stopService()
        self.assertEqual((self.installed[signal.SIGUSR1], self.installed[signal.SIGUSR2]),
                         (signal.SIG_DFL, signal.SIG_DFL))

    def test_shiftLogged(self):
        seen = []
        levels = LogLevels(6)
        shift_levels(levels, -1, Logger(namespace="omnirtp.signals", observer=seen.append))
        self.assertEqual([format_event(e, timestamps=False) for e in seen[:2]],
                         ["NOTICE: [core] Decreased 'core' log level to 5",
                          "NOTICE: [spandsp] Decreased 'spandsp' log level to 5"])
        self.assertEqual(len(seen), 13)
        # shown at the new level (internals, at -2 now, shows nothing)
        self.assertEqual([e["log_subsystem"] for e in seen
                          if levels(e) is olog.PredicateResult.maybe],
                         [n for n in olog.SUBSYSTEM_NAMES if n != "internals"])

    def test_hupRuns(self):
        calls = []

        class R:
            def reload(self):
                calls.append("reload")

        svc = SignalService(ImmediateReactor(), LogLevels(6), R(), install=self.install)
        svc.startService()
        self.installed[signal.SIGHUP](signal.SIGHUP, None)
        self.assertEqual(calls, ["reload"])
        svc.stopService()
        self.assertEqual(self.installed[signal.SIGHUP], "old-hup")

    def test_realSignal(self):
        """The handler really is installed: os.kill reaches it."""
        reactor = ImmediateReactor()
        levels = LogLevels(6)
        svc = SignalService(reactor, levels)
        svc.startService()
        self.addCleanup(svc.stopService)
        os.kill(os.getpid(), signal.SIGUSR2)
        self.assertEqual(levels.get("core"), 7)


CONF = """[rtpengine]
interface = 127.0.0.1
listen-ng = 127.0.0.1:2223
log-level = {level}
timeout = {timeout}
max-sessions = {max}
delete-delay = 30
port-min = {pmin}
"""


class ReloadTests(SynchronousTestCase):

    def setUp(self):
        self.path = self.mktemp()
        self.write(level=6, timeout=60, max=-1, pmin=30000)
        self.config = self.load()
        stack = ControlStack()
        self.registry, self.dispatch = stack.registry, stack.dispatch
        self.levels = LogLevels.from_config(self.config)
        self.ops = Operations(self.dispatch, self.config, self.levels)
        self.seen = []
        self.reloader = Reloader(self.load, self.ops)
        self.reloader.log = Logger(namespace="omnirtp.signals", observer=self.seen.append)

    def write(self, **values):
        with open(self.path, "w") as f:
            f.write(CONF.format(**values))

    def load(self):
        return load({"config-file": (self.path, "cli"),
                     "port-max": ("30019", "command line: --port-max=30019")},
                    environ={}, default_files=())

    def messages(self):
        return [format_event(e, timestamps=False) for e in self.seen]

    def test_applies(self):
        self.write(level=7, timeout=90, max=5, pmin=30000)
        self.assertEqual(self.reloader.reload(), (["log-level", "max-sessions", "timeout"], []))
        self.assertEqual((self.levels.get("core"), self.levels.get("internals")), (7, -1))
        self.assertEqual((self.registry.max_sessions, self.registry.timeouts.timeout,
                          self.registry.timeouts.delete_delay), (5, 90, 30))
        self.assertEqual((self.ops.config.timeout, self.ops.config.max_sessions,
                          self.ops.config.port_max), (90, 5, 30019))
        self.assertEqual(self.messages(), [
            "INFO: [core] SIGHUP: configuration reloaded from %s; applied: "
            "log-level, max-sessions, timeout" % self.path])

    def test_loadLimits(self):
        """max-load, max-cpu and max-bandwidth are applied; taken out of the
        file, they are off again."""
        self.write(level=6, timeout=60, max=-1, pmin=30000)
        with open(self.path, "a") as f:
            f.write("max-load = 2.5\nmax-cpu = 90\nmax-bandwidth = 125000\n")
        self.assertEqual(self.reloader.reload(),
                         (["max-bandwidth", "max-cpu", "max-load"], []))
        limits = self.registry.limits
        self.addCleanup(limits.stop)
        self.assertEqual((limits.load_limit, limits.cpu_limit, limits.bw_limit),
                         (250, 9000, 125000))
        self.write(level=6, timeout=60, max=-1, pmin=30000)
        self.reloader.reload()
        self.assertEqual((limits.load_limit, limits.cpu_limit, limits.bw_limit), (0, 0, 0))

    def test_needsRestart(self):
        self.write(level=6, timeout=60, max=-1, pmin=30010)
        self.assertEqual(self.reloader.reload(), ([], ["port-min"]))
        self.assertEqual(self.ops.config.port_min, 30000)
        self.assertEqual(self.messages()[1],
                         "WARNING: [core] SIGHUP: changed options that need a restart, "
                         "not applied: port-min")

    def test_badFileChangesNothing(self):
        with open(self.path, "a") as f:
            f.write("timeout = soon\n")
        self.assertIsNone(self.reloader.reload())
        self.assertEqual(self.registry.timeouts.timeout, 60)
        [line] = self.messages()
        self.assertTrue(line.startswith("ERR: [core] SIGHUP: the configuration does not load ("),
                        line)
        self.assertTrue(line.endswith("); nothing changed"), line)

    def test_interfaceUnchanged(self):
        self.assertEqual(self.config.interfaces,
                         (InterfaceSpec("default", "127.0.0.1", None),))
        self.assertEqual(self.reloader.reload(), ([], []))


class Unformattable:
    def __format__(self, spec):
        raise RuntimeError("no text")

    def __repr__(self):
        return "<Unformattable>"


class Unrepresentable(Unformattable):
    def __repr__(self):
        raise RuntimeError("no repr")


class CheapTextTests(SynchronousTestCase):
    """The cheap log text (omnirtp.logging.event_text, ClassicText) is
    twisted's, byte for byte, whatever the event."""

    FORMATS = [
        "call {call_id} ended: {reason}", "no fields", "", "{{braces}} {a}",
        "{a!r} {a!s} {a!a} {b:>8} {c:.3f} {b:^{w}}", "{o.real} {l[1]} {f()}",
        "{missing}", "{a} {}", "{0}", "unbalanced {a", "{a!x}", "t\u00e9xt {a!a}",
        "{u}", "{u!r}", "line one\nline two {a}",
    ]
    VALUES = dict(call_id="c1", reason="deleted", a="v\u00e9", b=7, c=1.23456, w=12, o=3,
                  l=[1, 2], f=lambda: "called", u=Unformattable())

    def events(self):
        for fmt in self.FORMATS:
            yield event(fmt=fmt, **self.VALUES)
        yield event(fmt=b"bytes {a}", a=1)
        yield event(fmt=None)
        yield event(fmt=None, log_system="sys")
        yield event(log_system="pool")
        yield event(log_system=Unformattable(), fmt="x")
        yield {"log_format": "bare {a}", "a": 1}
        yield event(fmt="flat {a}", a=1, log_flattened={"a!:": "1"})
        try:
            1 / 0
        except ZeroDivisionError:
            yield event(fmt="failed {a}", a=1, log_failure=Failure())
        yield event(fmt="n", log_namespace=None)

    def test_eventText(self):
        from twisted.logger import formatEvent
        for e in self.events():
            self.assertEqual(olog.event_text(e), formatEvent(e), e.get("log_format"))
            self.assertEqual(olog.event_text(e), formatEvent(e))  # parsed once, same again

    def test_formatCacheBounded(self):
        """The parsed formats are kept in a bounded table: emptied when it
        holds _SIMPLE_CACHE_MAX formats and a new one comes, the new one
        kept; a format kept is not parsed again."""
        self.patch(olog, "_simple_cache", {})
        self.patch(olog, "_SIMPLE_CACHE_MAX", 3)
        for n in range(3):
            self.assertEqual(olog.event_text(event(fmt="f%d {a}" % n, a=n)), "f%d %d" % (n, n))
        self.assertEqual(sorted(olog._simple_cache), ["f0 {a}", "f1 {a}", "f2 {a}"])
        made = []
        self.patch(olog, "_simple", lambda fmt: made.append(fmt) or True)
        self.assertEqual(olog.event_text(event(fmt="f1 {a}", a=1)), "f1 1")
        self.assertEqual(made, [])
        self.assertEqual(olog.event_text(event(fmt="f3 {a}", a=3)), "f3 3")
        self.assertEqual((made, olog._simple_cache), (["f3 {a}"], {"f3 {a}": True}))
        cache, made = {"x": False}, object()
        self.assertIs(olog._remember(cache, "y", lambda key: made), made)
        self.assertEqual(cache, {"x": False, "y": made})

    def test_lostMessage(self):
        """An event that cannot even be shown: twisted's "MESSAGE LOST" text
        (twisted 22.4 adds the stack it was made on, which differs)."""
        from twisted.logger import formatEvent
        e = event(fmt="{u}", u=Unrepresentable())
        self.assertEqual(olog.event_text(e).splitlines()[0], formatEvent(e).splitlines()[0])
        self.assertIn("MESSAGE LOST", olog.event_text(e))

    def classic(self, e, time_format=olog.timeFormatRFC3339):
        from twisted.logger import formatEventAsClassicLogText, formatTime
        return formatEventAsClassicLogText(e, formatTime=lambda t: formatTime(t, time_format))

    def test_classicLine(self):
        text = olog.ClassicText()
        for e in self.events():
            self.assertEqual(text(e), self.classic(e), e.get("log_format"))

    def test_classicTimes(self):
        """The timestamp made once per second is the one twisted makes for
        every time: whole seconds, the half microsecond before the next
        (datetime rounds it up), before 1970, none; in a zone with an offset
        across a daylight saving change; other time formats."""
        import time
        old = os.environ.get("TZ")

        def restore():
            if old is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = old
            time.tzset()
        self.addCleanup(restore)
        dst = 1772953200  # 2026-03-08 07:00:00 UTC: New York's clocks go forward
        times = [T, T + 0.5, T + 0.75, 1700000000.0, 1700000000.9999996, 1700000000.9999994,
                 1700000001.0000001, 1700000000.9999996, -1.5, -0.25, 0.0, None,
                 dst - 1.5, dst - 0.0000002, dst - 0.5, dst, dst + 0.5, dst - 1]
        for zone in ("UTC", "America/New_York", "Asia/Kolkata"):
            os.environ["TZ"] = zone
            time.tzset()
            for time_format in (olog.timeFormatRFC3339, "%H:%M:%S.%f", "%s", None):
                text = olog.ClassicText(time_format)
                for when in times:
                    e = event(fmt="at {a}", a=1, log_time=when)
                    self.assertEqual(text(e), self.classic(e, time_format), (zone, when))

    def test_classicLineStarts(self):
        """The line's start kept per namespace and level within a second is
        the one twisted makes: namespaces and levels in turn, across second
        boundaries and back, namespaces with a newline, texts with one."""
        text = olog.ClassicText()
        whens = [T, T + 0.25, T + 1.0, T + 1.5, T + 0.5, T + 0.9999996, T + 1.0000001, T + 2.5]
        kinds = [("a.b", LogLevel.info), ("a.c", LogLevel.info), ("a.b", LogLevel.warn),
                 ("new\nline", LogLevel.error), ("a.b", None)]
        for when in whens:
            for namespace, level in kinds:
                for fmt in ("x {a}", "two\nlines {a}"):
                    e = event(fmt=fmt, a=1, log_time=when, log_namespace=namespace,
                              log_level=level)
                    self.assertEqual(text(e), self.classic(e), (when, namespace, level))
                    e.pop("log_namespace")
                    self.assertEqual(text(e), self.classic(e), (when, level))

    def test_twistdObserverCheapened(self):
        """install() gives twistd's text observer (textFileLogObserver) the
        cheap formatter, and its file gets the same bytes as before; other
        observers are left as they are."""
        from twisted.logger import FileLogObserver, textFileLogObserver
        plain, cheap = io.StringIO(), io.StringIO()
        twistd = textFileLogObserver(cheap, timeFormat="%Y %H:%M:%S")
        reference = textFileLogObserver(plain, timeFormat="%Y %H:%M:%S")
        other = FileLogObserver(io.StringIO(), lambda e: "own\n")
        own = other.formatEvent
        publisher = LogPublisher()
        publisher.addObserver(twistd)
        publisher.addObserver(other)
        filters = install(LogLevels(6), publisher=publisher)
        text = filters[0].observer
        self.assertIsInstance(text, olog.TextFile)
        self.assertIs(text.out, cheap)
        self.assertIsNone(text.encoding)  # (StringIO takes str)
        self.assertIsInstance(text.formatEvent, olog.ClassicText)
        self.assertEqual(text.formatEvent.time_format, "%Y %H:%M:%S")
        self.assertIs(filters[1].observer, other)
        self.assertIs(other.formatEvent, own)
        publisher.addObserver(reference)
        log = Logger(namespace="omnirtp.control.commands.Dispatcher", observer=publisher)
        log.info("Received command '{command}' from {source}", command="offer",
                 source="127.0.0.1:5060", call_id="c1")
        log.debug("hidden")
        log.warn("two\nlines")
        self.assertEqual(cheap.getvalue().count("\n"), 3)
        self.assertEqual(cheap.getvalue(), "".join(
            line for line in plain.getvalue().splitlines(True) if "#debug]" not in line))


class _Records:
    """A file that records its writes and flushes, in order (``log``:
    another record to put them in, beside a transport's sends)."""

    def __init__(self, log=None):
        super().__init__()
        self.log = [] if log is None else log

    def write(self, data):
        self.log.append(("write", data))
        return super().write(data)

    def flush(self):
        self.log.append(("flush",))


class Recording(_Records, io.StringIO):
    """A text file, recorded."""


class BytesRecording(_Records, io.BytesIO):
    """A binary file (twisted's observer writes UTF-8 to it), recorded."""


class BrokenFile(io.StringIO):
    def write(self, text):
        raise OSError(28, "No space left on device")


class HoldTests(SynchronousTestCase):
    """hold()/release(): the lines of twistd's text observer and of
    log-stderr are made when their events come and written, all at once
    and flushed once, at the outermost release; the same bytes in the same
    order as line by line.  Other observers see every event at once."""

    def setUp(self):
        self.addCleanup(setattr, olog, "_installed", olog._installed)
        self.assertEqual((olog._holding, olog._unflushed), (0, []))
        self.publisher = LogPublisher()
        self.log = Logger(namespace="omnirtp.control.commands.Dispatcher",
                          observer=self.publisher)

    def emit(self):
        self.log.info("Received command '{command}' from {source}", command="delete",
                      source="127.0.0.1:5060", call_id="c1")
        self.log.debug("hidden")
        self.log.info("call {call_id} ended ({n} streams, caf\xe9)", call_id="c1", n=4)
        self.log.warn("two\nlines")

    def twistd(self, out, reference):
        from twisted.logger import textFileLogObserver
        self.publisher.addObserver(textFileLogObserver(out, timeFormat="%Y %H:%M:%S"))
        install(LogLevels(6), publisher=self.publisher)
        self.publisher.addObserver(textFileLogObserver(reference, timeFormat="%Y %H:%M:%S"))

    def test_heldTwistdText(self):
        out, reference = Recording(), io.StringIO()
        self.twistd(out, reference)
        olog.hold()
        self.emit()
        self.assertEqual(out.log, [])  # nothing written yet
        olog.release()
        expected = "".join(line for line in reference.getvalue().splitlines(True)
                           if "#debug]" not in line)
        self.assertEqual(out.getvalue(), expected)
        self.assertEqual(out.log, [("write", expected), ("flush",)])
        self.assertEqual(olog._unflushed, [])
        # not held: a write and a flush per line, as twisted's observer
        del out.log[:]
        self.log.info("one")
        self.log.info("two")
        self.assertEqual([step[0] for step in out.log], ["write", "flush"] * 2)

    def test_heldBytes(self):
        """A binary file gets the held lines UTF-8 encoded, as twisted writes them."""
        out, reference = BytesRecording(), io.BytesIO()
        self.twistd(out, reference)
        olog.hold()
        self.emit()
        olog.release()
        self.assertEqual(out.getvalue(), b"".join(
            line for line in reference.getvalue().splitlines(True) if b"#debug]" not in line))
        self.assertEqual([step[0] for step in out.log], ["write", "flush"])
        self.assertIn("caf\xe9".encode("utf-8"), out.getvalue())

    def test_nested(self):
        """Only the outermost release writes."""
        out, reference = Recording(), io.StringIO()
        self.twistd(out, reference)
        olog.hold()
        self.log.info("first")
        olog.hold()
        self.log.info("second")
        olog.release()
        self.assertEqual(out.log, [])
        olog.release()
        self.assertEqual(out.getvalue(), reference.getvalue())
        self.assertEqual(len(out.log), 2)

    def test_nothingHeld(self):
        out, reference = Recording(), io.StringIO()
        self.twistd(out, reference)
        olog.hold()
        self.log.debug("hidden")
        olog.release()
        self.assertEqual(out.log, [])

    def test_stderr(self):
        stream = Recording()
        install(LogLevels(6), log_stderr=True, timestamps=False, stream=stream,
                publisher=self.publisher)
        olog.hold()
        self.emit()
        self.assertEqual(stream.log, [])
        olog.release()
        expected = ("INFO: [c1]: [control] Received command 'delete' from 127.0.0.1:5060\n"
                    "INFO: [c1]: [control] call c1 ended (4 streams, caf\xe9)\n"
                    "WARNING: [control] two\nlines\n")
        self.assertEqual(stream.log, [("write", expected), ("flush",)])
        del stream.log[:]
        self.log.info("now")
        self.assertEqual(stream.log, [("write", "INFO: [control] now\n"), ("flush",)])

    def test_otherObserversAtOnce(self):
        """An observer that is not a line writer of ours sees each event
        when it comes, held or not."""
        seen = []
        self.publisher.addObserver(seen.append)
        install(LogLevels(6), publisher=self.publisher)
        olog.hold()
        self.log.info("now")
        self.assertEqual([e["log_format"] for e in seen], ["now"])
        olog.release()

    def test_failedWriteReported(self):
        """A held write that fails is told to the other observers as
        twisted's publisher tells of an observer that raised."""
        from twisted.logger import textFileLogObserver
        seen = []
        self.publisher.addObserver(textFileLogObserver(BrokenFile()))
        self.publisher.addObserver(seen.append)
        filters = install(LogLevels(6), publisher=self.publisher)
        olog.hold()
        self.log.info("lost")
        olog.release()
        formats = [e["log_format"] for e in seen]
        self.assertEqual(formats[0], "lost")
        [report] = seen[1:]
        self.assertEqual(report["log_format"], olog.OBSERVER_DISABLED)
        self.assertIs(report["observer"], filters[0])
        self.assertTrue(report["log_failure"].check(OSError))
        self.assertEqual(olog._unflushed, [])
        # and unheld, the publisher's own report, the same words
        del seen[:]
        self.log.info("lost again")
        self.assertEqual(seen[1]["log_format"], olog.OBSERVER_DISABLED)
        self.assertIs(seen[1]["observer"], filters[0])


class LoggerTests(SynchronousTestCase):
    """omnirtp.logging.Logger: twisted's events, key for key, cheaper."""

    def test_sameEvents(self):
        seen = []

        class Owner:
            ours = olog.Logger(observer=seen.append)
            theirs = Logger(observer=seen.append)

        owner = Owner()
        self.assertIs(owner.ours, owner.ours)  # made once per instance
        self.assertIs(owner.ours.source, owner)
        self.assertIs(Owner.ours.source, Owner)
        owner.ours.info("call {call_id} ended", call_id="c1")
        owner.theirs.info("call {call_id} ended", call_id="c1")
        ours, theirs = seen
        self.assertEqual(set(ours), set(theirs))
        for key in ours:
            if key not in ("log_logger", "log_time"):
                self.assertEqual(ours[key], theirs[key], key)
        self.assertEqual(ours["log_namespace"], __name__ + ".Owner")
        self.assertIsInstance(ours["log_logger"], olog.Logger)
        self.assertLess(abs(ours["log_time"] - theirs["log_time"]), 5)

    def test_levelMethods(self):
        """Each level method (which makes the event itself, not through
        emit) gives twisted's event: the same keys in the same order, the
        same values, for every level, and a key given twice wins as there."""
        for name in ("debug", "info", "warn", "error", "critical"):
            seen = []
            ours = olog.Logger(namespace="n.s", source=self, observer=seen.append)
            theirs = Logger(namespace="n.s", source=self, observer=seen.append)
            for logger in (ours, theirs):
                getattr(logger, name)("x {a}", a=1, log_format="ignored", z=2)
            mine, twisted = seen
            self.assertEqual(list(mine), list(twisted), name)
            for key in mine:
                if key not in ("log_logger", "log_time"):
                    self.assertEqual(mine[key], twisted[key], (name, key))
            self.assertEqual(mine["log_level"], getattr(LogLevel, name))
            self.assertEqual(mine["log_format"], "x {a}")

    def test_badLevel(self):
        """A level that is not one: twisted's complaint, no event."""
        seen = []
        olog.Logger(observer=seen.append).emit("loud", "x")
        [event] = seen
        self.assertIn("invalid log level", event["log_format"])
        self.assertEqual(event["log_level"], LogLevel.critical)

    def test_trace(self):
        seen = []
        log = olog.Logger(observer=seen.append)
        log.info("traced", log_trace=[])
        self.assertEqual(seen[0]["log_trace"], [(log, seen.append)])


class DroppedDebugTests(SynchronousTestCase):
    """A debug event that install()'s filters would drop is not made at all;
    whenever anything could see it, it is made and delivered as before."""

    def setUp(self):
        self.addCleanup(setattr, olog, "_installed", olog._installed)
        self.publisher = LogPublisher()
        self.out = io.StringIO()
        self.publisher.addObserver(FileLogObserver(self.out, lambda e: e["log_format"] + "\n"))
        self.levels = LogLevels(6)
        install(self.levels, publisher=self.publisher)
        self.log = olog.Logger(namespace="omnirtp.control.x", observer=self.publisher)
        self.filtered = []
        real = olog.LevelFilter.__call__

        def counting(filter, event):
            self.filtered.append(event["log_format"])
            return real(filter, event)
        self.patch(olog.LevelFilter, "__call__", counting)

    def test_dropped(self):
        self.log.debug("hidden {a}", a=1)
        self.assertEqual(self.filtered, [])  # not made: no filter saw it
        self.log.info("shown")
        self.assertEqual((self.filtered, self.out.getvalue()), (["shown"], "shown\n"))

    def test_levelRaised(self):
        self.levels.set(7, "control")
        self.log.debug("seen")
        self.assertEqual(self.out.getvalue(), "seen\n")

    def test_otherSubsystem(self):
        self.levels.set(7, "ice")
        self.log.debug("hidden")
        olog.Logger(namespace="omnirtp.media.ice", observer=self.publisher).debug("ice")
        self.assertEqual(self.out.getvalue(), "ice\n")

    def test_ownPriorityOrSubsystem(self):
        self.log.debug("urgent", log_priority=3)
        self.log.debug("ice", log_subsystem="ice")
        self.assertEqual(self.filtered, ["urgent", "ice"])
        self.assertEqual(self.out.getvalue(), "urgent\n")

    def test_traced(self):
        trace = []
        self.log.debug("traced", log_trace=trace)
        self.assertEqual(trace[0], (self.log, self.publisher))

    def test_anotherObserver(self):
        seen = []
        self.publisher.addObserver(seen.append)
        self.log.debug("for all")
        self.assertEqual([e["log_format"] for e in seen], ["for all"])
        self.assertEqual(self.out.getvalue(), "")

    def test_debugDroppedAskedOnce(self):
        """debug_dropped(logger): what Logger.debug finds per event."""
        self.assertTrue(olog.debug_dropped(self.log))
        self.levels.set(7, "control")
        self.assertFalse(olog.debug_dropped(self.log))
        self.levels.set(6)
        self.assertTrue(olog.debug_dropped(self.log))
        ice = olog.Logger(namespace="omnirtp.media.ice", observer=self.publisher)
        self.levels.set(7, "ice")
        self.assertEqual((olog.debug_dropped(self.log), olog.debug_dropped(ice)), (True, False))
        other = olog.Logger(namespace="omnirtp.control.x", observer=[].append)
        self.assertFalse(olog.debug_dropped(other))
        self.publisher.addObserver([].append)
        self.assertFalse(olog.debug_dropped(self.log))
        olog._installed = None
        self.assertFalse(olog.debug_dropped(self.log))

    def test_anotherPublisher(self):
        seen = []
        olog.Logger(namespace="omnirtp.control.x", observer=seen.append).debug("direct")
        self.assertEqual([e["log_format"] for e in seen], ["direct"])


class _FastLine:
    """omnirtp's Logger makes the line of an event itself (no event dict,
    publisher, filter or observer call) when twistd's text observer is
    the one observer install() left; the bytes in the file are those the
    publisher, the filter and the observer write, whatever the event,
    held or not; anything else takes that way.  (``fast_line``: the
    implementation under test, omnirtp._fastlog's or the Python's.)"""

    fast_line = None

    NAMESPACES = ("omnirtp.control.commands.Dispatcher", "omnirtp.media.ice.Agent",
                  "new\nline", "omnirtp.call.registry.CallRegistry")
    LEVELS = (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical)
    EXTRA = ({}, {"call_id": "c1"}, {"call_id": None}, {"log_system": "pool"},
             {"log_priority": 5}, {"log_priority": 7}, {"log_subsystem": "ice"},
             {"log_flattened": {}}, {"log_source": "mine"}, {"log_namespace": "given"},
             {"log_failure": None})
    TIMES = (T, T + 0.25, T + 0.7499995, T + 0.75, T + 1.5, T + 0.5, T + 2.0, -1.5, 0.0,
             1700000000.9999996, T + 3)

    def setUp(self):
        self.addCleanup(setattr, olog, "_installed", olog._installed)
        self.clock = []
        self.patch(olog, "_now", lambda: self.clock[0])
        self.patch(olog, "_fast_line", self.fast_line)

    def stack(self, out, other=False, time_format=None, levels=None):
        """A publisher with twistd's text observer on ``out`` behind
        install()'s filter (and ``other``: a second observer, which keeps
        every event on the general way); loggers on it for each namespace."""
        from twisted.logger import textFileLogObserver
        publisher = LogPublisher()
        kw = {} if time_format is None else {"timeFormat": time_format}
        publisher.addObserver(textFileLogObserver(out, **kw))
        install(levels or LogLevels(6), publisher=publisher)
        if other:
            publisher.addObserver(lambda event: None)
            self.assertNotEqual(publisher._observers, olog._installed[1])
        else:
            self.assertIsInstance(olog._installed[3], olog.TextFile)
        return {ns: olog.Logger(namespace=ns, observer=publisher) for ns in self.NAMESPACES}

    def events(self):
        formats = CheapTextTests.FORMATS + [None, "{a!r:>12} {b!s:<3} {a!a}",
                                            "{log_namespace} {a}", "{log_level.name}",
                                            "{call_id} x", "{log_source} {a}"]
        for i, when in enumerate(self.TIMES):
            for namespace in self.NAMESPACES:
                for level in self.LEVELS:
                    for fmt in formats:
                        yield when, namespace, level, fmt, self.EXTRA[i % len(self.EXTRA)]
                for extra in self.EXTRA:
                    yield when, namespace, LogLevel.info, "extra {a}", extra

    def emit(self, loggers, events, held):
        for when, namespace, level, fmt, extra in events:
            self.clock[:] = [when]
            keys = dict(CheapTextTests.VALUES, **extra)
            if held:
                olog.hold()
            getattr(loggers[namespace], level.name)(fmt, **keys)
            if held:
                olog.release()

    def run_both(self, make, time_format=None, held=False, levels=None):
        fast, general = make(), make()
        events = list(self.events())
        self.emit(self.stack(general, other=True, time_format=time_format,
                             levels=levels and levels()), events, held)
        self.emit(self.stack(fast, time_format=time_format, levels=levels and levels()),
                  events, held)
        return fast, general

    def compare(self, make, **kw):
        fast, general = self.run_both(make, **kw)
        self.assertGreater(len(general.getvalue()), 10000)
        self.assertEqual(fast.getvalue(), general.getvalue())

    def test_sameBytes(self):
        self.compare(io.StringIO)

    def test_sameBytesHeld(self):
        """Held per event, and all held until the end."""
        self.compare(io.StringIO, held=True)
        olog.hold()
        try:
            fast, general = self.run_both(io.StringIO)
            self.assertEqual((fast.getvalue(), general.getvalue()), ("", ""))
        finally:
            olog.release()
        self.assertGreater(len(general.getvalue()), 10000)
        self.assertEqual(fast.getvalue(), general.getvalue())

    def test_sameBytesEncoded(self):
        self.compare(io.BytesIO)

    def test_sameBytesOtherTimeFormats(self):
        for time_format in ("%Y %H:%M:%S", "%H:%M:%S.%f", "%s"):
            self.compare(io.StringIO, time_format=time_format)

    def test_sameBytesOtherLevels(self):
        self.compare(io.StringIO, levels=lambda: LogLevels(4, {"control": 7}))
        self.compare(io.StringIO, levels=lambda: LogLevels(7))

    def taken(self):
        """The events that reached the filter (not the fast way)."""
        seen = []
        real = olog.LevelFilter.__call__

        def counting(filter, event):
            seen.append(event["log_format"])
            return real(filter, event)
        self.patch(olog.LevelFilter, "__call__", counting)
        return seen

    def test_fastWay(self):
        """The usual line does not reach the filter, once the levels have
        said that its namespace and level pass."""
        out = io.StringIO()
        log = self.stack(out)["omnirtp.control.commands.Dispatcher"]
        seen = self.taken()
        self.clock[:] = [T]
        for n in range(3):
            log.info("Received command '{command}' from {source}", command="offer",
                     source="127.0.0.1:5060", call_id="c1")
        log.info("{missing}")
        log.info("x {a}", a=1, log_system="s")
        self.assertEqual(seen, ["Received command '{command}' from {source}",
                                "{missing}", "x {a}"])
        self.assertEqual(out.getvalue().count("Received command 'offer' from 127.0.0.1:5060\n"), 3)

    def test_followsLevels(self):
        """A change of the levels, a call debugged, another observer: the
        next event sees them."""
        out = io.StringIO()
        levels = LogLevels(6)
        loggers = self.stack(out, levels=levels)
        log = loggers["omnirtp.control.commands.Dispatcher"]
        self.clock[:] = [T]
        log.info("one")
        log.info("two")
        levels.set(5, "control")
        log.info("hidden", call_id="c1")
        levels.debug_calls.add("c1")
        log.info("debugged", call_id="c1")
        log.info("not debugged", call_id="c2")
        levels.set(6)
        log.info("three")
        seen = []
        olog._installed[0].addObserver(seen.append)
        log.info("four")
        self.assertEqual([line.rpartition("] ")[2] for line in out.getvalue().splitlines()],
                         ["one", "two", "debugged", "three", "four"])
        self.assertEqual([e["log_format"] for e in seen], ["four"])

    def test_failedWrite(self):
        """A write that fails, not held: dropped, as the publisher drops an
        observer's failure when no other observer is there to hear it."""
        loggers = self.stack(BrokenFile())
        self.clock[:] = [T]
        log = loggers["omnirtp.control.commands.Dispatcher"]
        log.info("first")
        log.info("lost")
        olog.hold()
        log.info("held")
        olog.release()

    def test_heldOrder(self):
        """Held, the fast lines and the others keep their order, in one write."""
        out = Recording()
        log = self.stack(out)["omnirtp.control.commands.Dispatcher"]
        self.clock[:] = [T]
        olog.hold()
        log.info("a {x}", x=1)
        log.info("b", log_system="s")
        log.info("c {x}", x=2)
        olog.release()
        [(_, text), _] = out.log
        self.assertEqual([line.rpartition(" ")[2] for line in text.splitlines()],
                         ["1", "b", "2"])


class PythonFastLineTests(_FastLine, SynchronousTestCase):
    fast_line = staticmethod(olog._py_fast_line)


class CFastLineTests(_FastLine, SynchronousTestCase):
    """omnirtp._fastlog's fast_line: the same bytes as the general way,
    and no references or memory kept per line."""

    if olog._fastlog is None:
        skip = "omnirtp._fastlog is not built (make ext)"
    else:
        fast_line = staticmethod(olog._fastlog.fast_line)

    def test_inUse(self):
        """Built, it is the one the Logger calls (setUp patched the same in)."""
        self.assertIs(_FAST_LINE, olog._fastlog.fast_line)

    def test_nothingKept(self):
        """Lines of every kind (fast, general, failing to format), held
        and not: no memory left behind but the lines."""
        import gc
        import sys
        out = io.StringIO()
        log = self.stack(out)["omnirtp.control.commands.Dispatcher"]
        value = "v" * 10
        self.clock[:] = [T]

        def lines():
            for _ in range(200):
                olog.hold()
                log.info("Received command '{command}' from {source}", command="offer",
                         source=value, call_id="c1")
                log.info("{a!r} {b:>4} {missing}", a=value, b=1)
                log.info("{a!r} {b:>4} {c}", a=value, b=1, c=Unformattable())
                log.info("x {a}", a=1, log_system="s")
                olog.release()
                log.info("unheld {a!r}", a=value)
            out.seek(0)
            out.truncate()
        lines()
        lines()
        gc.collect()
        blocks, refs = sys.getallocatedblocks(), sys.getrefcount(value)
        lines()
        gc.collect()
        # (a block or a reference kept per line would be 200 or more)
        self.assertLess(abs(sys.getallocatedblocks() - blocks), 20)
        self.assertEqual(sys.getrefcount(value), refs)

    def test_badArguments(self):
        """Anything but what the Logger passes: not taken, no effect."""
        out = io.StringIO()
        loggers = self.stack(out)
        log = loggers["omnirtp.control.commands.Dispatcher"]
        self.clock[:] = [T]
        log.info("first")  # the levels' verdict made
        installed = olog._installed
        fast = olog._fastlog.fast_line
        for args in [(log, LogLevel.info, "x", {}, installed[:3]),
                     (log, LogLevel.info, "x", {}, list(installed)),
                     (log, LogLevel.info, b"x", {}, installed),
                     (log, LogLevel.info, "x", [], installed),
                     (object(), LogLevel.info, "x", {}, installed)]:
            if args[0].__class__ is object:
                self.assertRaises(AttributeError, fast, *args)
            else:
                self.assertIs(fast(*args), False)
        self.assertRaises(TypeError, fast, log, LogLevel.info, "x", {})
        self.assertIs(fast(log, LogLevel.info, "x {a}", {"a": 1}, installed), True)
        self.assertEqual(out.getvalue().count("\n"), 2)

    def test_levelMethodCalls(self):
        """Logger's level methods in C (omnirtp._fastlog.LevelMethod), called
        every way a method can be: the same lines and errors as the Python
        methods on the general way."""
        self.assertIsInstance(olog.Logger.__dict__["info"], olog._fastlog.LevelMethod)
        self.assertEqual(olog.Logger.info.__name__, "info")
        calls = [
            lambda log: log.info("fast {a}", a=1),
            lambda log: log.info(format="kw {a}", a=1),
            lambda log: log.info(),
            lambda log: log.info("none"),
            lambda log: log.warn("x {a}", **{"a": 2}),
            lambda log: log.error("{a} {b!r}", b="b", a=3),
            lambda log: log.critical("x {a}", a=1, log_system="s"),
            lambda log: olog.Logger.info(log, "unbound {a}", a=4),
            lambda log: getattr(log, "info")("got {a}", a=5),
            lambda log: log.info("x", format="y"),
            lambda log: log.info("x {self}", self=1),
            lambda log: log.info("{format}", format="z"),
            lambda log: log.info("x", "y"),
            lambda log: log.info("missing {a}"),
        ]

        def run(log, out):
            got = []
            for call in calls:
                try:
                    call(log)
                    got.append(None)
                except TypeError as e:
                    got.append(str(e))
            return got, out.getvalue()
        self.clock[:] = [T]
        general = io.StringIO()
        logs = self.stack(general, other=True)
        expected = run(logs["omnirtp.control.commands.Dispatcher"], general)
        fast = io.StringIO()
        logs = self.stack(fast)
        logs["omnirtp.control.commands.Dispatcher"].info("first")  # the levels' verdict
        fast.seek(0)
        fast.truncate()
        seen = self.taken()
        self.assertEqual(run(logs["omnirtp.control.commands.Dispatcher"], fast), expected)
        self.assertEqual(expected[1].count("\n"), 9)
        self.assertEqual(len([e for e in expected[0] if e]), 4)
        # the general way: no format, a level's first event (the levels'
        # verdict), log_system, a missing key; the others took the fast way
        self.assertEqual(seen, [None, "x {a}", "{a} {b!r}", "x {a}", "missing {a}"])
