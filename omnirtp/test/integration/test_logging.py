"""A running omnirtp's log and signals, driven as an operator does.

omnirtp runs under twistd from this checkout with a config file,
``--log-stderr`` and a CLI listener; Debian's ``rtpengine-ctl`` reads and
sets the levels.  Checked: rtpengine's stderr line format with the call-id,
the per-subsystem levels filtering what is written, SIGUSR1 / SIGUSR2
moving the levels, SIGHUP applying a changed file (and naming what needs a
restart), and the daemon relaying calls all along.
"""

import os
import re
import signal
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test.integration.peers import (
    LOOPBACK, find_program, free_port, free_port_range, start_omnirtp)

CONF = """[rtpengine]
interface = 127.0.0.1
log-level = 6
log-level-http = 3
timeout = {timeout}
max-sessions = {max}
listen-cli = 127.0.0.1:{cli}
"""

SDP = ("v=0\r\no=u 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 40000 RTP/AVP 0\r\n")

LINE = re.compile(r"^\[\d{10}\.\d{6}\] (EMERG|ALERT|CRIT|ERR|WARNING|NOTICE|INFO|DEBUG): "
                  r"(\[[^\]]+\]: )?\[[a-z]+\] ")


class DaemonLogTests(SynchronousTestCase):

    def setUp(self):
        import socket
        self.ctl = find_program("rtpengine-ctl")
        self.cli = free_port(socket.SOCK_STREAM, LOOPBACK)
        self.conf = os.path.abspath(self.mktemp())
        self.write(timeout=60, max=-1)
        ng = free_port(socket.SOCK_DGRAM, LOOPBACK)
        low, high = free_port_range(10)
        self.daemon = start_omnirtp(self, ng, low, high, extra_args=[
            "--config-file=" + self.conf, "--log-stderr"])

    def write(self, **values):
        with open(self.conf, "w") as f:
            f.write(CONF.format(cli=self.cli, **values))

    def run_ctl(self, *words):
        done = subprocess.run([self.ctl, "--config-file=/nonexistent", "-ip", LOOPBACK,
                               "-port", str(self.cli)] + list(words),
                              capture_output=True, timeout=20)
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout.decode()

    def until(self, words, expected, wait=10.0):
        """Ask the CLI until it answers ``expected`` (a signal is handled
        asynchronously)."""
        deadline = time.monotonic() + wait
        while True:
            got = self.run_ctl(*words)
            if got == expected or time.monotonic() > deadline:
                self.assertEqual(got, expected, self.daemon.log_tail())
                return
            time.sleep(0.1)

    def log_until(self, text, wait=10.0):
        deadline = time.monotonic() + wait
        while text not in self.daemon.log():
            if time.monotonic() > deadline:
                self.fail("%r not in the log:\n%s" % (text, self.daemon.log_tail()))
            time.sleep(0.1)

    def lines(self):
        return [ln for ln in self.daemon.log().splitlines() if LINE.match(ln)]

    def test_formatAndCallId(self):
        """rtpengine's stderr lines; a call's events carry its call-id."""
        reply = self.daemon.ng.request({"command": "offer", "call-id": "log-call-1",
                                        "from-tag": "ft", "sdp": SDP})
        self.assertEqual(reply["result"], "ok")
        self.assertEqual(self.run_ctl("terminate", "log-call-1"),
                         "\nCall Id (log-call-1) successfully terminated by operator.\n\n")
        self.log_until("INFO: [log-call-1]: [core] call log-call-1 ended: ")
        self.log_until("INFO: [log-call-1]: [control] Received command 'offer' from 127.0.0.1:")
        self.log_until("INFO: [core] omnirtp ")  # the summary at start
        # from the summary on (twistd writes its two start-up lines before
        # the service starts), every record is one of rtpengine's lines
        text = self.daemon.log()
        text = text[text.index("INFO: [core] omnirtp "):]
        self.assertEqual([ln for ln in text.splitlines()[1:]
                          if ln and not LINE.match(ln)], [])

    def test_noKeysInTheLog(self):
        """At debug level, an SDES call (a usable a=crypto line, one with a
        bad key, one with an unknown suite) logs its events but never the
        key material."""
        key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
        bad = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo"
        self.assertEqual(self.run_ctl("set", "loglevel", "7"), "Success setting loglevel to 7\n")
        offer = (SDP.replace("RTP/AVP", "RTP/SAVP")
                 + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s\r\n" % key
                 + "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:%s\r\n" % bad
                 + "a=crypto:3 NOT_A_SUITE inline:%s\r\n" % key)
        reply = self.daemon.ng.request({"command": "offer", "call-id": "sdes-log",
                                        "from-tag": "ft", "sdp": offer,
                                        "transport-protocol": "RTP/AVP"})
        self.assertEqual(reply["result"], "ok")
        reply = self.daemon.ng.request({"command": "answer", "call-id": "sdes-log",
                                        "from-tag": "ft", "to-tag": "tt", "sdp": SDP})
        self.assertEqual(reply["result"], "ok")
        self.run_ctl("terminate", "sdes-log")
        self.log_until("[sdes-log]: [core] call sdes-log ended")
        self.log_until("WARNING: [sdes-log]: [control] Failed to parse a=crypto attribute")
        text = self.daemon.log()
        self.assertNotIn(key, text)
        self.assertNotIn(bad, text)
        self.assertNotIn("inline:", text)

    def test_levelsAndSignals(self):
        self.assertEqual(self.run_ctl("get", "loglevel", "core"), "6\n")
        self.assertEqual(self.run_ctl("get", "loglevel", "http"), "3\n")
        self.assertEqual(self.run_ctl("get", "loglevel", "internals"), "-1\n")
        # set loglevel for one subsystem: control at 3 hides the info record
        # that the next `set loglevel` command writes
        self.assertEqual(self.run_ctl("set", "loglevel", "control", "3"),
                         "Success setting loglevel to 3\n")
        self.assertEqual(self.run_ctl("set", "loglevel", "ice", "7"),
                         "Success setting loglevel to 7\n")
        self.assertNotIn("[control] log level of ice set to 7", self.daemon.log())
        self.assertEqual(self.run_ctl("get", "loglevel", "ice"), "7\n")
        self.assertEqual(self.run_ctl("set", "loglevel", "control", "6"),
                         "Success setting loglevel to 6\n")
        self.log_until("INFO: [control] log level of control set to 6 by operator")

        self.daemon.signal(signal.SIGUSR1)
        self.until(("get", "loglevel", "core"), "5\n")
        self.log_until("NOTICE: [core] Decreased 'core' log level to 5")
        self.assertEqual(self.run_ctl("get", "loglevel", "ice"), "6\n")
        # one at a time: two pending signals of one kind merge into one
        self.daemon.signal(signal.SIGUSR2)
        self.until(("get", "loglevel", "core"), "6\n")
        self.daemon.signal(signal.SIGUSR2)
        self.until(("get", "loglevel", "core"), "7\n")
        self.log_until("DEBUG: [ice] Increased 'ice' log level to 8")

    def test_hupReloads(self):
        self.assertEqual(self.run_ctl("list", "timeout"), "TIMEOUT=60\n")
        self.write(timeout=77, max=3)
        with open(self.conf, "a") as f:
            f.write("port-min = 20000\n")  # needs a restart (the command line wins anyway)
            f.write("tos = 184\n")         # needs a restart
        self.daemon.signal(signal.SIGHUP)
        self.until(("list", "timeout"), "TIMEOUT=77\n")
        self.assertEqual(self.run_ctl("list", "maxsessions"),
                         "Maximum sessions configured on rtpengine: 3\n")
        self.log_until("INFO: [core] SIGHUP: configuration reloaded from %s; applied: "
                       "max-sessions, timeout" % self.conf)
        self.log_until("WARNING: [core] SIGHUP: changed options that need a restart, "
                       "not applied: tos")
        # a broken file changes nothing and the daemon keeps going
        with open(self.conf, "a") as f:
            f.write("timeout = soon\n")
        self.daemon.signal(signal.SIGHUP)
        self.log_until("ERR: [core] SIGHUP: the configuration does not load (")
        self.assertEqual(self.run_ctl("list", "timeout"), "TIMEOUT=77\n")
        self.assertTrue(self.daemon.ng.ping())


class WorkerLogTests(DaemonLogTests):
    """The same daemon with a media worker (``num-threads = 1``): ``set
    loglevel`` reaches the worker, whose debug records then appear."""

    def write(self, **values):
        DaemonLogTests.write(self, **values)
        with open(self.conf, "a") as f:
            f.write("num-threads = 1\n")

    def offer(self, call_id):
        """Offer a call (its ports are allocated in the worker: an ICE
        offer, which is not parked in the control process as a plain call
        would be, omnirtp.media.park), then delete it (the test's ten
        ports are enough for two calls)."""
        reply = self.daemon.ng.request({"command": "offer", "call-id": call_id,
                                        "from-tag": "ft", "sdp": SDP, "ICE": "force"})
        self.assertEqual(reply["result"], "ok")
        reply = self.daemon.ng.request({"command": "delete", "call-id": call_id,
                                        "from-tag": "ft", "delete-delay": 0})
        self.assertEqual(reply["result"], "ok")

    def test_setLoglevelReachesTheWorker(self):
        """At level 6 the worker's port allocation (a debug record) is not
        logged; after ``set loglevel 7`` it is.  The worker writes its
        records in order on one pipe, so once the second call's record is
        in the log, the first call's would be before it had it been
        written."""
        self.offer("worker-quiet")
        self.log_until("[worker-quiet]: [control] Received command 'offer'")
        self.assertEqual(self.run_ctl("set", "loglevel", "7"), "Success setting loglevel to 7\n")
        self.offer("worker-debug")
        self.log_until("for worker-debug: [")
        text = self.daemon.log()
        self.assertRegex(text, r"DEBUG: \[core\] worker 0 \(pid \d+\): allocated \d+ port pairs "
                               r"on 127\.0\.0\.1 for worker-debug: \[\d+(, \d+)*\]")
        self.assertNotIn("for worker-quiet: [", text)
        # and down again: at 6 no debug record of the worker is logged
        self.assertEqual(self.run_ctl("set", "loglevel", "6"), "Success setting loglevel to 6\n")
        self.offer("worker-info")
        self.assertEqual(self.run_ctl("set", "loglevel", "7"), "Success setting loglevel to 7\n")
        self.offer("worker-last")
        self.log_until("for worker-last: [")
        self.assertNotIn("for worker-info: [", self.daemon.log())
