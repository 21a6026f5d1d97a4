"""omnirtp.limits: the open files limit raised for the media port ranges."""

import errno

from twisted.trial.unittest import SynchronousTestCase

from omnirtp import limits
from omnirtp.errors import E_NO_PORTS, FilesExhausted


class FakeResource:
    """The parts of the ``resource`` module the limits use; ``privileged``:
    the hard limit may be raised (CAP_SYS_RESOURCE), up to ``ceiling``."""

    RLIMIT_NOFILE = 7
    RLIM_INFINITY = -1

    def __init__(self, soft, hard, privileged=False, ceiling=1048576):
        self.limit = (soft, hard)
        self.privileged = privileged
        self.ceiling = ceiling
        self.calls = []

    def getrlimit(self, kind):
        assert kind == self.RLIMIT_NOFILE
        return self.limit

    def setrlimit(self, kind, value):
        assert kind == self.RLIMIT_NOFILE
        self.calls.append(value)
        inf = float("inf")
        soft, hard, old = (inf if v == self.RLIM_INFINITY else v
                           for v in value + (self.limit[1],))
        if soft > hard:
            raise ValueError("current limit exceeds maximum limit")
        if hard > old and (not self.privileged or hard > self.ceiling):
            raise ValueError("not allowed to raise maximum limit")
        self.limit = value


class FilesNeededTests(SynchronousTestCase):

    def test_every_port_twice(self):
        """Two files per port of every address (socket and companion), and
        the spare ones."""
        self.assertEqual(limits.files_needed({"127.0.0.1": (30000, 39999)}),
                         20000 + limits.SPARE)
        self.assertEqual(limits.files_needed({"a": (20000, 20099), "b": (20000, 20099)}),
                         400 + limits.SPARE)

    def test_per_worker(self):
        """A media worker binds its slice only: the ranges' share."""
        self.assertEqual(limits.files_needed({"a": (30000, 39999)}, workers=4),
                         5000 + limits.SPARE)
        self.assertEqual(limits.files_needed({"a": (1, 3)}, workers=2), 4 + limits.SPARE)


class RaiseTests(SynchronousTestCase):

    def test_soft_up_to_hard(self):
        """Unprivileged: the soft limit goes up as far as the hard one."""
        res = FakeResource(1024, 20000)
        self.assertEqual(limits.raise_file_limit(50000, res, lambda: 1048576), (20000, 20000))
        self.assertEqual(res.limit, (20000, 20000))

    def test_soft_to_what_is_needed(self):
        """A hard limit above the need: the soft one goes to the need, the
        hard one stays."""
        res = FakeResource(1024, 500000)
        self.assertEqual(limits.raise_file_limit(40000, res, lambda: 1048576), (40000, 500000))
        self.assertEqual(res.calls, [(40000, 500000)])

    def test_hard_raised_when_allowed(self):
        """With CAP_SYS_RESOURCE both limits go to the need."""
        res = FakeResource(1024, 20000, privileged=True)
        self.assertEqual(limits.raise_file_limit(320256, res, lambda: 1048576),
                         (320256, 320256))

    def test_hard_not_beyond_nr_open(self):
        """fs.nr_open caps what even a privileged process gets."""
        res = FakeResource(1024, 20000, privileged=True, ceiling=100000)
        self.assertEqual(limits.raise_file_limit(320256, res, lambda: 100000),
                         (100000, 100000))

    def test_nr_open_unknown(self):
        """Without /proc the need itself is tried, then the hard limit."""
        res = FakeResource(1024, 20000, privileged=True, ceiling=100000)
        self.assertEqual(limits.raise_file_limit(320256, res, lambda: None), (20000, 20000))
        self.assertEqual(res.calls, [(320256, 320256), (20000, 20000)])

    def test_never_lowered(self):
        """A limit above the need stays as it is, untouched."""
        res = FakeResource(65536, 65536)
        self.assertEqual(limits.raise_file_limit(20256, res, lambda: 1048576), (65536, 65536))
        res = FakeResource(res.RLIM_INFINITY, res.RLIM_INFINITY)
        self.assertEqual(limits.raise_file_limit(20256, res, lambda: 1048576),
                         (res.RLIM_INFINITY, res.RLIM_INFINITY))
        self.assertEqual(res.calls, [])

    def test_unlimited_hard(self):
        res = FakeResource(1024, FakeResource.RLIM_INFINITY)
        self.assertEqual(limits.raise_file_limit(20256, res, lambda: 1048576),
                         (20256, res.RLIM_INFINITY))

    def test_refused_soft_keeps_the_old(self):
        """A setrlimit that fails for another reason leaves the limit."""
        res = FakeResource(1024, 20000)

        def refuse(kind, value):
            raise OSError(errno.EINVAL, "no")
        res.setrlimit = refuse
        self.assertEqual(limits.raise_file_limit(50000, res, lambda: 1048576), (1024, 20000))

    def test_nr_open_read(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("1048576\n")
        self.assertEqual(limits._nr_open(path), 1048576)
        self.assertIsNone(limits._nr_open(path + ".missing"))


class ApplyTests(SynchronousTestCase):

    def test_enough(self):
        """The start-up line names the limit; no warning."""
        res = FakeResource(1024, 1048576)
        summary, warning = limits.apply({"127.0.0.1": (30000, 39999)}, 0, res, lambda: 1048576)
        self.assertEqual(summary, "open files %d" % (20000 + limits.SPARE))
        self.assertIsNone(warning)

    def test_short(self):
        """Below the need: a warning with the figures and what to do."""
        res = FakeResource(1024, 20000)
        summary, warning = limits.apply(
            {"127.0.0.%d" % n: (20000, 59999) for n in range(1, 5)}, 0, res, lambda: 1048576)
        self.assertEqual(summary, "open files 20000 of %d needed" % (320000 + limits.SPARE))
        self.assertIn("open files limit 20000 (hard limit 20000) is below the %d"
                      % (320000 + limits.SPARE), warning)
        # (20000 - SPARE) / 8 calls with media, / 4 idle
        self.assertIn("at most about %d answered calls with media (%d idle)"
                      % ((20000 - limits.SPARE) // 8, (20000 - limits.SPARE) // 4), warning)
        self.assertIn("LimitNOFILE", warning)

    def test_short_per_worker(self):
        """With media workers the limit is each worker's; the calls all of
        them hold."""
        res = FakeResource(20000, 20000)
        summary, warning = limits.apply({"a": (20000, 59999)}, 2, res, lambda: 1048576)
        self.assertIn("open files limit 20000 per media worker (hard limit 20000) is below "
                      "the %d" % (40000 + limits.SPARE), warning)
        self.assertIn("(%d idle)" % ((20000 - limits.SPARE) // 4 * 2), warning)

    def test_unlimited(self):
        res = FakeResource(FakeResource.RLIM_INFINITY, FakeResource.RLIM_INFINITY)
        self.assertEqual(limits.apply({"a": (1, 10)}, 0, res, lambda: None),
                         ("open files unlimited", None))


class FilesExhaustedTests(SynchronousTestCase):
    """A bind that fails for want of a file: 'Ran out of ports', logged,
    the port not quarantined (it is free; the process is full)."""

    def test_engine(self):
        from twisted.internet.task import Clock

        from omnirtp.media.engine import EmbeddedEngine

        class FakeReactor(Clock):
            def addReader(self, reader):
                pass

            def removeReader(self, reader):
                pass

        def bind(address, port):
            raise OSError(errno.EMFILE, "Too many open files")

        engine = EmbeddedEngine(FakeReactor(), {"127.0.0.1": (30000, 30009)}, bind=bind)
        logged = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        failure = self.failureResultOf(engine.allocate("c1", "127.0.0.1", 1), FilesExhausted)
        self.assertEqual(failure.value.reason, E_NO_PORTS)
        [event] = [e for e in logged if "no open file left" in e.get("log_format", "")]
        self.assertEqual(event["call_id"], "c1")
        # the pair went back to the pool: all 5 pairs still free
        self.assertEqual(len(engine._pools["127.0.0.1"]._free), 5)
