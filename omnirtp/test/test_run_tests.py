"""scripts/run-tests: reading trial's report and the skip allow-list.

``make test`` fails on any skipped test that is not on the reviewed
allow-list (omnirtp/test/allowed-skips.txt).  These tests feed the script's
functions real trial reports (produced here by the installed Twisted's own
reporter) and check the decision.
"""

import io
import os
import tempfile
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader

from twisted.trial import reporter, runner
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from omnirtp.test import corpus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIDE_BY_SIDE = "omnirtp.test.integration.test_side_by_side.SideBySideTests."


def load_script():
    loader = SourceFileLoader("omnirtp_run_tests", os.path.join(ROOT, "scripts", "run-tests"))
    module = module_from_spec(spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def trial_report(cls):
    """What trial prints for the tests of ``cls`` (TreeReporter, the default)."""
    stream = io.StringIO()
    result = reporter.TreeReporter(stream)
    runner.TestLoader().loadClass(cls).run(result)
    result.done()
    return stream.getvalue()


def sample_class():
    """Tests with two skips sharing a reason, one skip whose reason spans
    lines (like a log tail), a failure and a pass.  Built inside a function
    so that trial does not collect it as part of this module."""
    tail = "daemon did not start:\nline one\n\nline three"

    class Sample(SynchronousTestCase):
        def test_a(self):
            raise SkipTest("needs srtp: no crypto yet")

        def test_b(self):
            raise SkipTest("needs srtp: no crypto yet")

        def test_c(self):
            raise SkipTest(tail)

        def test_d(self):
            self.fail("boom")

        def test_e(self):
            pass
    Sample.__module__ = "sample.mod"
    Sample.__qualname__ = Sample.__name__ = "Sample"
    return Sample, tail


class ParseTests(SynchronousTestCase):

    def setUp(self):
        self.script = load_script()

    def test_summaryLine(self):
        """trial's closing line gives (passed, failed, skipped)."""
        cls, _ = sample_class()
        self.assertEqual(self.script.parse_summary(trial_report(cls)), (1, 1, 3))
        self.assertEqual(self.script.parse_summary("PASSED (successes=5)\n"), (5, 0, 0))
        self.assertIsNone(self.script.parse_summary("Traceback (most recent call last):\n"))

    def test_skipsFromTrialReport(self):
        """Every skipped test id with its reason, grouped reasons and
        multi-line reasons included; failures and passes are not skips."""
        cls, tail = sample_class()
        self.assertEqual(self.script.parse_skips(trial_report(cls)), {
            "sample.mod.Sample.test_a": "needs srtp: no crypto yet",
            "sample.mod.Sample.test_b": "needs srtp: no crypto yet",
            "sample.mod.Sample.test_c": tail,
        })

    def test_noSkips(self):
        self.assertEqual(self.script.parse_skips("PASSED (successes=5)\n"), {})


class AllowListTests(SynchronousTestCase):

    def setUp(self):
        self.script = load_script()

    def write(self, text):
        fd, path = tempfile.mkstemp(suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def test_entries(self):
        """``[<run>] <test id> <reason>`` a line; comments and blank lines ignored."""
        path = self.write("# header\n\nsample.mod.Sample.test_a  needs srtp: later issue\n"
                          "[debian] sample.mod.Sample.test_b old pyOpenSSL\n")
        self.assertEqual(self.script.load_allow_list(path),
                         {"sample.mod.Sample.test_a": (None, "needs srtp: later issue"),
                          "sample.mod.Sample.test_b": ("debian", "old pyOpenSSL")})

    def test_labelWithoutEntry(self):
        path = self.write("[debian] needs something\n")
        self.assertRaises(ValueError, self.script.load_allow_list, path)

    def test_entryWithoutReason(self):
        path = self.write("sample.mod.Sample.test_a\n")
        self.assertRaises(ValueError, self.script.load_allow_list, path)

    def test_entryListedTwice(self):
        path = self.write("a.B.test_a why\na.B.test_a why again\n")
        self.assertRaises(ValueError, self.script.load_allow_list, path)

    def test_shippedListMatchesCorpus(self):
        """The repository's allow-list holds exactly the side-by-side tests
        that wait for a later issue (corpus ``needs``), each with a reason,
        and each names a test that exists."""
        from omnirtp.test.integration.test_side_by_side import SideBySideTests
        allowed = self.script.load_allow_list(os.path.join(ROOT, self.script.ALLOW_LIST))
        waiting = set()
        for case in corpus.CASES:
            if case.needs and case.needs_lines:
                waiting.add("test_omnirtp_%s_%s" % (case.name, case.needs))
            elif case.needs:
                waiting.add("test_omnirtp_" + case.name)
        listed = {t for t in allowed if t.startswith(SIDE_BY_SIDE)}
        self.assertEqual(listed, {SIDE_BY_SIDE + name for name in waiting})
        for test_id in listed:
            run, reason = allowed[test_id]
            self.assertTrue(hasattr(SideBySideTests, test_id.rsplit(".", 1)[1]), test_id)
            self.assertTrue(reason.startswith("needs "), reason)
            self.assertIsNone(run)

    def test_shippedListNamesTests(self):
        """Every other entry names a class and a test method defined in its
        module's file (the side-by-side ones are generated: checked above),
        and has a reason."""
        allowed = self.script.load_allow_list(os.path.join(ROOT, self.script.ALLOW_LIST))
        for test_id, (run, reason) in allowed.items():
            if test_id.startswith(SIDE_BY_SIDE):
                continue
            parts = test_id.split(".")
            path = os.path.join(ROOT, *parts[:-2]) + ".py"
            with open(path) as f:
                source = f.read()
            self.assertIn("class %s(" % parts[-2], source, test_id)
            self.assertIn("def %s(" % parts[-1], source, test_id)
            self.assertIn(run, (None, "venv", "debian"))
            self.assertTrue(reason.strip())


class DecisionTests(SynchronousTestCase):

    def setUp(self):
        self.script = load_script()
        cls, self.tail = sample_class()
        self.report = trial_report(cls)
        self.skips = self.script.parse_skips(self.report)

    def test_unlistedSkipFails(self):
        """A skip not on the allow-list is refused and makes the run fail;
        the allowed one is printed with the list's reason."""
        allowed = {"sample.mod.Sample.test_a": (None, "reviewed: waits for srtp"),
                   "sample.mod.Sample.test_b": (None, "reviewed: waits for srtp")}
        ok, refused = self.script.judge_skips(self.skips, 3, allowed, "venv")
        self.assertEqual(ok, [("sample.mod.Sample.test_a", "reviewed: waits for srtp"),
                              ("sample.mod.Sample.test_b", "reviewed: waits for srtp")])
        self.assertEqual(refused, [("sample.mod.Sample.test_c", self.tail)])
        lines, status = self.script.finish(
            10, 0, [("venv",) + item for item in ok], [("venv",) + item for item in refused])
        self.assertEqual(status, 1)
        self.assertEqual(lines[-1], "10 passed, 1 failed")
        self.assertEqual(lines[-2], "3 skipped: 2 allowed, 1 not allowed (counted as failed)")
        self.assertIn("  [venv] sample.mod.Sample.test_a", lines)
        self.assertIn("      reviewed: waits for srtp", lines)
        self.assertIn("  [venv] sample.mod.Sample.test_c", lines)

    def test_allListedPasses(self):
        """Only allow-listed skips: exit 0, the reasons printed."""
        allowed = {"sample.mod.Sample.test_%s" % x: (None, "reason %s" % x) for x in "abc"}
        ok, refused = self.script.judge_skips(self.skips, 3, allowed, "venv")
        self.assertEqual(refused, [])
        lines, status = self.script.finish(5, 0, [("venv",) + item for item in ok], [])
        self.assertEqual(status, 0)
        self.assertEqual(lines[-1], "5 passed, 0 failed")
        self.assertEqual(lines[0], "Skipped, on the allow-list (%s):" % self.script.ALLOW_LIST)
        for x in "abc":
            self.assertIn("      reason %s" % x, lines)

    def test_entryForAnotherRun(self):
        """An entry limited to the debian run does not allow the skip in the venv run."""
        allowed = {"sample.mod.Sample.test_%s" % x: ("debian", "old library") for x in "abc"}
        ok, refused = self.script.judge_skips(self.skips, 3, allowed, "venv")
        self.assertEqual((len(ok), len(refused)), (0, 3))
        ok, refused = self.script.judge_skips(self.skips, 3, allowed, "debian")
        self.assertEqual((len(ok), len(refused)), (3, 0))

    def test_countedButUnreadableSkip(self):
        """trial counted more skips than its report names: refused too."""
        ok, refused = self.script.judge_skips({}, 2, {}, "debian")
        self.assertEqual(ok, [])
        self.assertEqual(len(refused), 1)
        self.assertIsNone(refused[0][0])
        lines, status = self.script.finish(0, 0, [], [("debian",) + refused[0]])
        self.assertEqual(status, 1)

    def test_noSkips(self):
        lines, status = self.script.finish(7, 0, [], [])
        self.assertEqual((lines, status), (["7 passed, 0 failed"], 0))

    def test_failuresStillFail(self):
        lines, status = self.script.finish(7, 2, [], [])
        self.assertEqual((lines[-1], status), ("7 passed, 2 failed", 1))
