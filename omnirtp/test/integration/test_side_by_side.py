"""Side by side: every corpus case against Debian's rtpengine 10.5 and against omnirtp.

For each case (omnirtp.test.corpus) two tests exist:

* ``test_rtpengine_<case>`` runs the case against a live rtpengine 10.5 on
  127.0.0.1 and checks that its normalised replies still equal the stored
  fixture (omnirtp/test/fixtures/corpus/<case>.json).  Skipped only when the
  rtpengine binary is not installed.
* ``test_omnirtp_<case>`` runs the same requests against an omnirtp daemon
  (twistd, from this checkout) and compares its normalised replies with the
  fixture.  Cases that need a later issue (``case.needs``) are skipped with
  the case's reason; these skips are on the allow-list
  (omnirtp/test/allowed-skips.txt) and ``scripts/run-tests`` fails on any
  other.  When only some lines need the issue (``case.needs_lines``), this
  test compares the rest today and ``test_omnirtp_<case>_<needs>``, the
  whole replies, is the one skipped.

A daemon that does not start or answer ping fails every test of its setup,
with its log tail in the failure.

Both daemons are started once per interface setup and shared by the cases;
ports are chosen free on 127.0.0.1 by the test.
"""

import os

from twisted.trial.unittest import FailTest, SkipTest, SynchronousTestCase

from omnirtp.test import corpus
from omnirtp.test.integration.reference import (
    DaemonFailed, find_rtpengine, free_port_range, free_udp_port, omnirtp_daemon,
    rtpengine_daemon)

MEDIA_PORTS = 2000
# generous: a slow start on a loaded machine is not what these tests check
START_WAIT = 60.0


class _Daemons:
    """Lazily started daemons, one per (kind, setup), stopped at interpreter exit."""

    running = {}
    failures = {}

    @classmethod
    def get(cls, kind, setup):
        key = (kind, setup)
        if key in cls.failures:
            raise FailTest(cls.failures[key])
        if key not in cls.running:
            port_min, port_max = free_port_range(MEDIA_PORTS)
            factory = rtpengine_daemon if kind == "rtpengine" else omnirtp_daemon
            daemon = factory(free_udp_port(), port_min, port_max, corpus.SETUPS[setup])
            try:
                daemon.start(wait=START_WAIT)
            except DaemonFailed as e:
                cls.failures[key] = "%s (%s) did not start: %s" % (kind, setup, e)
                raise FailTest(cls.failures[key])
            cls.running[key] = daemon
            import atexit
            atexit.register(daemon.stop)
        return cls.running[key]


def _prefix():
    return "sbs%d" % os.getpid()


class SideBySideTests(SynchronousTestCase):
    """Generated per corpus case (see the module docstring)."""

    def run_against(self, kind, case):
        daemon = _Daemons.get(kind, case.setup)
        return corpus.run_case(case, daemon.request, "%s-%s" % (_prefix(), kind))

    def check_rtpengine(self, case):
        if find_rtpengine() is None:
            raise SkipTest("Debian's rtpengine 10.5 is not installed (/usr/sbin or /usr/bin)")
        want = corpus.load_expected(case.name)
        if want is None:
            self.fail("no fixture for %s: run 'python -m omnirtp.test.corpus record %s'"
                      % (case.name, case.name))
        self.assertEqual(self.run_against("rtpengine", case), want)

    def check_omnirtp(self, case, whole=False):
        if case.needs and (whole or not case.needs_lines):
            raise SkipTest("needs %s: %s" % (case.needs, case.reason))
        want = corpus.load_expected(case.name)
        if want is None:
            self.fail("no fixture for %s" % (case.name,))
        self.assertEqual(self.run_against("omnirtp", case),
                         case.expected_for_omnirtp(want) if whole else case.expected_today(want))


def _add_tests():
    for case in corpus.CASES:
        def rtpengine_test(self, case=case):
            self.check_rtpengine(case)

        def omnirtp_test(self, case=case):
            self.check_omnirtp(case)
        rtpengine_test.__doc__ = "rtpengine 10.5 still answers %s as recorded." % (case.name,)
        omnirtp_test.__doc__ = "omnirtp answers %s as rtpengine 10.5 does." % (case.name,)
        if case.differs:
            omnirtp_test.__doc__ += " Differs on purpose: " + case.reason
        setattr(SideBySideTests, "test_rtpengine_" + case.name, rtpengine_test)
        setattr(SideBySideTests, "test_omnirtp_" + case.name, omnirtp_test)
        if case.needs_lines:
            omnirtp_test.__doc__ = ("omnirtp answers %s as rtpengine 10.5 does, without the "
                                    "lines that need %s." % (case.name, case.needs))

            def whole_test(self, case=case):
                self.check_omnirtp(case, whole=True)
            whole_test.__doc__ = ("omnirtp answers %s as rtpengine 10.5 does, %s lines "
                                  "included." % (case.name, case.needs))
            setattr(SideBySideTests, "test_omnirtp_%s_%s" % (case.name, case.needs), whole_test)


_add_tests()
