"""max-load, max-cpu, max-bandwidth (omnirtp.control.load) and the relay's
per-second rates in the ``statistics`` reply."""

import os

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.control.load import (
    E_BANDWIDTH_LIMIT, E_CPU_LIMIT, E_LOAD_LIMIT, RATE_LINGER, LoadLimits, Rates, cpu_times,
    hundredths)
from omnirtp.errors import E_SESSION_LIMIT, LoadLimit
from omnirtp.test.test_cli import Daemon
from omnirtp.test.test_commands import OFFER


class StatFile:
    """A /proc/stat stand-in whose first line the test writes."""

    def __init__(self, test):
        self.path = test.mktemp()

    def write(self, user, nice, system, idle):
        with open(self.path, "w") as f:
            f.write("cpu  %d %d %d %d 7 0 3 0 0 0\ncpu0 1 2 3 4\n" % (user, nice, system, idle))


class Totals:
    """An engine's ``totals``: fires with what the test set."""

    def __init__(self):
        self.value = {}
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return defer.succeed(dict(self.value))


class HundredthsTests(SynchronousTestCase):

    def test_truncated(self):
        self.assertEqual([hundredths(x) for x in (0.019, 1.5, 80.25, 0.001, -1.0, 0.0)],
                         [1, 150, 8025, 0, -100, 0])


class CpuTimesTests(SynchronousTestCase):

    def test_read(self):
        stat = StatFile(self)
        stat.write(100, 5, 20, 1000)
        self.assertEqual(cpu_times(stat.path), (125, 1000))

    def test_unreadable(self):
        self.assertIsNone(cpu_times(self.mktemp()))
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("intr 1 2 3\n")
        self.assertIsNone(cpu_times(path))
        with open(path, "w") as f:
            f.write("cpu  a b c d\n")
        self.assertIsNone(cpu_times(path))

    def test_thisMachine(self):
        """The real /proc/stat of this Linux machine reads."""
        used, idle = cpu_times()
        self.assertGreater(used + idle, 0)


class SamplerTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.load = [0.5]
        self.stat = StatFile(self)
        self.stat.write(0, 0, 0, 0)
        self.totals = Totals()

    def limits(self, **kw):
        limits = LoadLimits(self.clock, self.totals, loadavg=lambda: (self.load[0], 0.0, 0.0),
                            stat_path=self.stat.path, **kw)
        limits.start()
        self.addCleanup(limits.stop)
        return limits

    def test_nothingSampledWithoutLimits(self):
        limits = self.limits()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(limits.exceeded())
        self.assertEqual(self.totals.calls, 0)

    def test_load(self):
        limits = self.limits(max_load=1.5)
        self.assertEqual(limits.load_average, 50)  # sampled at start
        self.assertIsNone(limits.exceeded())
        self.load[0] = 1.5
        self.clock.advance(0.5)
        self.assertEqual(limits.exceeded(), (E_LOAD_LIMIT, "Load limit exceeded (1.50 > 1.50)"))
        self.load[0] = 1.49
        self.clock.advance(0.5)
        self.assertIsNone(limits.exceeded())

    def test_cpu(self):
        self.stat.write(1000, 0, 0, 9000)
        limits = self.limits(max_cpu=75)
        self.assertEqual(limits.cpu_usage, 0)  # one sample: no share yet
        # 80 of 100 ticks used (user + nice + system) since the last sample
        self.stat.write(1050, 10, 20, 9020)
        self.clock.advance(0.5)
        self.assertEqual(limits.cpu_usage, 8000)
        self.assertEqual(limits.exceeded(),
                         (E_CPU_LIMIT, "CPU usage limit exceeded (80.0% > 75.0%)"))
        self.stat.write(1060, 10, 20, 9110)
        self.clock.advance(0.5)
        self.assertEqual(limits.cpu_usage, 1000)
        self.assertIsNone(limits.exceeded())

    def test_bandwidth(self):
        limits = self.limits(max_bandwidth=1000)
        self.assertEqual(self.totals.calls, 1)
        self.totals.value = {"packets": 10, "bytes": 1500, "errors": 1}
        self.clock.advance(1)
        self.assertEqual(limits.rates.current["byterate"], 1500)
        self.assertEqual(limits.exceeded(),
                         (E_BANDWIDTH_LIMIT, "Bandwidth limit exceeded (1500 > 1000)"))
        self.totals.value = {"packets": 20, "bytes": 2400, "errors": 1}
        self.clock.advance(1)
        self.assertEqual(limits.rates.current["byterate"], 900)
        self.assertIsNone(limits.exceeded())

    def test_setLaterStartsAndStopsSampling(self):
        """A limit set on the fly (CLI, SIGHUP) starts its sampler; one
        turned off stops it (rtpengine 10.5 samples only what was set at
        its start)."""
        limits = self.limits()
        limits.set_max_load(0.2)
        self.assertEqual(limits.load_average, 50)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        limits.set_max_bandwidth(10)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        limits.set_max_load(0.0)
        limits.set_max_bandwidth(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failedReadingKeepsSampling(self):
        limits = self.limits(max_bandwidth=1000)
        self.totals.value = {"bytes": 5000}
        self.clock.advance(1)
        broken = [True]

        def totals():
            if broken[0]:
                return defer.fail(RuntimeError("worker gone"))
            return defer.succeed({"bytes": 5100})
        limits._totals = totals
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(limits.rates.current["byterate"], 5000)
        broken[0] = False
        self.clock.advance(1)
        self.assertEqual(limits.rates.current["byterate"], 50)  # over 2 s

    def test_stopped(self):
        limits = self.limits(max_load=1, max_bandwidth=1)
        limits.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RatesTests(SynchronousTestCase):

    def test_rates(self):
        r = Rates()
        self.assertEqual(r.observe({"packets": 100, "bytes": 10000}, 10.0)["packetrate"], 0)
        got = r.observe({"packets": 300, "bytes": 30000, "errors": 4, "kernel_packets": 100,
                         "kernel_bytes": 10000}, 12.0)
        self.assertEqual(got, {
            "packetrate_user": 50, "byterate_user": 5000, "errorrate_user": 2,
            "packetrate_kernel": 50, "byterate_kernel": 5000, "errorrate_kernel": 0,
            "packetrate": 100, "byterate": 10000, "errorrate": 2})

    def test_tooSoonKeepsTheRates(self):
        r = Rates()
        r.observe({"packets": 0}, 10.0)
        r.observe({"packets": 100}, 11.0)
        self.assertEqual(r.observe({"packets": 150}, 11.1)["packetrate"], 100)
        # measured from the reading kept (11.0), not the one skipped
        self.assertEqual(r.observe({"packets": 200}, 12.0)["packetrate"], 100)

    def test_countersStartingAgain(self):
        """A restarted worker's counters start from 0: no negative rate."""
        r = Rates()
        r.observe({"packets": 1000, "bytes": 9000}, 1.0)
        self.assertEqual(r.observe({"packets": 10, "bytes": 900}, 2.0)["packetrate"], 0)


class NewCallTests(SynchronousTestCase):
    """A limit reached refuses new calls through the ng offer."""

    def setUp(self):
        self.d = Daemon(self)
        self.load = [3.0]
        self.d.registry.limits = LoadLimits(self.d.clock, loadavg=lambda: (self.load[0], 0, 0),
                                            max_load=2.0)
        self.d.registry.limits.start()
        self.addCleanup(self.d.registry.limits.stop)

    def offer(self, call_id):
        return self.d.dispatcher({"command": "offer", "call-id": call_id, "from-tag": "x",
                                  "sdp": OFFER})

    def test_refused(self):
        f = self.failureResultOf(self.offer("c1"), LoadLimit)
        self.assertEqual((f.value.reason, f.value.legacy), ("Load limit exceeded",
                                                            E_SESSION_LIMIT))
        self.assertEqual(self.d.registry.calls, {})
        self.assertEqual(self.d.engine.calls if hasattr(self.d.engine, "calls") else {}, {})
        self.load[0] = 1.0
        self.d.clock.advance(0.5)
        self.successResultOf(self.offer("c1"))

    def test_maxSessionsFirst(self):
        """max-sessions is checked first, and only it counts as rejected."""
        self.d.registry.max_sessions = 0
        f = self.failureResultOf(self.offer("c1"), LoadLimit)
        self.assertEqual(f.value.reason, E_SESSION_LIMIT)
        self.assertEqual(self.d.registry.rejected, 1)
        self.d.registry.max_sessions = -1
        f = self.failureResultOf(self.offer("c1"), LoadLimit)
        self.assertEqual(f.value.reason, "Load limit exceeded")
        self.assertEqual(self.d.registry.rejected, 1)


class StatisticsRatesTests(SynchronousTestCase):
    """The ``statistics`` reply's rates: no longer always 0."""

    def test_sinceThePreviousRequest(self):
        d = Daemon(self)
        d.registry.limits = LoadLimits(d.clock)
        stats = d.dispatcher.statistics
        first = stats({"packets": 100, "bytes": 17200, "errors": 0})["currentstatistics"]
        self.assertEqual((first["packetrate"], first["byterate"]), (0, 0))
        d.clock.advance(10)
        cur = stats({"packets": 600, "bytes": 103200, "errors": 10, "kernel_packets": 100,
                     "kernel_bytes": 17200})["currentstatistics"]
        self.assertEqual(
            [cur[k] for k in Rates.KEYS], [40, 6880, 1, 10, 1720, 0, 50, 8600, 1])

    def test_lastSecondWhileAsked(self):
        """Without a bandwidth limit: nothing is sampled until a request;
        the first answers 0 and starts the one-second sampler, so the next
        ones get the last second's rates (rtpengine 10.5's figures), not
        those since the previous request; RATE_LINGER seconds after the
        last request the sampler stops (no per-second work while nobody
        asks), and the next request starts it again."""
        d = Daemon(self)
        totals = Totals()
        d.registry.limits = limits = LoadLimits(d.clock, totals)
        limits.start()
        self.addCleanup(limits.stop)
        d.clock.advance(30)
        self.assertEqual((totals.calls, d.clock.getDelayedCalls()), (0, []))

        def rates(packets, octets):
            cur = d.dispatcher.statistics({"packets": packets, "bytes": octets})
            return cur["currentstatistics"]["packetrate"], cur["currentstatistics"]["byterate"]
        self.assertEqual(rates(0, 0), (0, 0))
        self.assertEqual(totals.calls, 0)  # the request's own reading is the first
        for second in range(1, 11):  # 50 packets of 172 bytes a second, then 100
            totals.value = {"packets": 50 * min(second, 5) + 100 * max(0, second - 5),
                            "bytes": 8600 * min(second, 5) + 17200 * max(0, second - 5)}
            d.clock.advance(1)
        self.assertEqual(totals.calls, 10)
        # since the first request: 750 packets in 10 s (75/s); the last second: 100
        self.assertEqual(rates(750, 129000), (100, 17200))
        d.clock.advance(0.5)
        self.assertEqual(rates(800, 137600), (100, 17200))
        for _ in range(int(RATE_LINGER)):  # the last reading at t = 190.5
            d.clock.advance(1)
        self.assertEqual(totals.calls, 160)
        d.clock.advance(1)
        self.assertEqual((totals.calls, d.clock.getDelayedCalls()), (160, []))
        d.clock.advance(60)
        self.assertEqual(totals.calls, 160)
        # after the pause (t = 251.5): the rates since the sampler's last
        # reading (250 packets, 43000 bytes in 61 s), then the last second again
        totals.value = {"packets": 1000, "bytes": 172000}
        self.assertEqual(rates(1000, 172000), (4, 704))
        totals.value = {"packets": 1020, "bytes": 175440}
        d.clock.advance(1)
        self.assertEqual(rates(1020, 175440), (20, 3440))

    def test_fromTheSampler(self):
        d = Daemon(self)
        totals = Totals()
        d.registry.limits = limits = LoadLimits(d.clock, totals, max_bandwidth=10 ** 9)
        limits.start()
        self.addCleanup(limits.stop)
        totals.value = {"packets": 50, "bytes": 8600}
        d.clock.advance(1)
        cur = d.dispatcher.statistics({"packets": 5000, "bytes": 1})["currentstatistics"]
        self.assertEqual((cur["packetrate"], cur["byterate"]), (50, 8600))


class ThisMachineTests(SynchronousTestCase):

    def test_realLoadAverage(self):
        """Without a stand-in the sampler reads os.getloadavg()."""
        limits = LoadLimits(Clock(), max_load=1000)
        before = hundredths(os.getloadavg()[0])
        limits.sample_load()
        # the kernel updates it every 5 s: one of the readings around it
        self.assertIn(limits.load_average, (before, hundredths(os.getloadavg()[0])))
