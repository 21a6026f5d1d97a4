"""Headless Chromium (Debian's ``chromium``) as the WebRTC browser through
omnirtp, both directions, and one call held for 40 s (consent freshness).

Chromium gathers no ICE candidate on a loopback interface, so each test makes
a network namespace of its own (``ip netns add``; it needs root, as CI has)
with its loopback up and a real interface: a dummy interface where the kernel
has them, else a veth pair with both ends in the namespace; its address is
``chromium_peer.NETNS_ADDRESS``.  The test then runs the matching test of
``chromium_peer.ChromiumCalls`` in a child trial inside the namespace (omnirtp,
the SIP phone, the page's web server and Chromium all live there; nothing is
added to the host's network) and passes only if the child passed it.  The
namespace is deleted afterwards, after killing whatever still runs in it (the
child trial and its Chromium), also when the child failed or timed out.

Nothing here skips: no Chromium, no ``ip`` or no permission for namespaces is
a failure (``make test`` installs chromium and iproute2 and runs as root).
What the calls check is in ``chromium_peer``'s docstring.
"""

import os
import signal
import subprocess
import sys
import uuid

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from omnirtp.test.integration import chromium_peer
from omnirtp.test.integration.peers import ROOT, find_program

INTERFACE = "omnirtp0"
# a child trial: interpreter start, imports, Chromium's start, the call
# (and the 40 s hold); generous, the machine may be loaded
CHILD_TIMEOUT = 420


class Namespace:
    """A network namespace with loopback and one real interface up."""

    def __init__(self, test):
        if os.environ.get(chromium_peer.IN_NETNS):
            test.fail("already inside the network namespace %s"
                      % os.environ[chromium_peer.IN_NETNS])
        try:
            self.ip = find_program("ip")
        except SkipTest:
            test.fail("`ip` is not installed (Debian package iproute2; `make test` installs it)")
        chromium_peer.chromium_binary()
        self.name = "omnirtp-chromium-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
        made = self.run("netns", "add", self.name)
        if made.returncode:
            test.fail("`ip netns add %s` failed (it needs root): %s"
                      % (self.name, made.stderr.strip()))
        test.addCleanup(self.delete)
        self.check(test, "-n", self.name, "link", "set", "lo", "up")
        if self.run("-n", self.name, "link", "add", INTERFACE, "type", "dummy").returncode:
            # no dummy module here: a veth pair, both ends in the namespace
            self.check(test, "-n", self.name, "link", "add", INTERFACE, "type", "veth",
                       "peer", "name", INTERFACE + "p")
            self.check(test, "-n", self.name, "link", "set", INTERFACE + "p", "up")
        self.check(test, "-n", self.name, "addr", "add", chromium_peer.NETNS_ADDRESS + "/24",
                   "dev", INTERFACE)
        self.check(test, "-n", self.name, "link", "set", INTERFACE, "up")

    def run(self, *args):
        return subprocess.run([self.ip] + list(args), capture_output=True, text=True)

    def check(self, test, *args):
        done = self.run(*args)
        if done.returncode:
            test.fail("`ip %s` failed: %s" % (" ".join(args), done.stderr.strip()))

    def delete(self):
        """Kill what still runs in the namespace (only the child trial and
        its Chromium can), then delete it."""
        pids = self.run("netns", "pids", self.name).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        self.run("netns", "delete", self.name)


def run_in_namespace(test, name, case="ChromiumCalls"):
    """Run ``chromium_peer.<case>.<name>`` in a child trial inside a new
    namespace; fail with the child's output unless it passed."""
    namespace = Namespace(test)
    env = dict(os.environ)
    env[chromium_peer.IN_NETNS] = namespace.name
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    child_id = "%s.%s.%s" % (chromium_peer.__name__, case, name)
    try:
        child = subprocess.run(
            [namespace.ip, "netns", "exec", namespace.name, sys.executable, "-m",
             "twisted.trial", "--temp-directory", os.path.abspath(test.mktemp()), child_id],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"") + (expired.stderr or b"")
        if isinstance(output, bytes):
            output = output.decode("utf-8", "replace")
        test.fail("%s did not finish within %d s in network namespace %s: %s"
                  % (child_id, CHILD_TIMEOUT, namespace.name, output[-4000:]))
    output = child.stdout + child.stderr
    if child.returncode or "PASSED (successes=1)" not in output:
        test.fail("%s in network namespace %s: %s" % (child_id, namespace.name, output[-6000:]))


class ChromiumTests(SynchronousTestCase):
    """Each test: one call with Chromium, run in its own network namespace."""

    def test_phone_calls_browser(self):
        """The seed's INVITE flags (plus rtcp-mux-offer) towards Chromium,
        which answers; Chromium's answer goes back to the phone as plain RTP."""
        run_in_namespace(self, "test_phone_calls_browser")

    def test_browser_calls_phone(self):
        """Chromium offers (BUNDLE, rtcp-mux, DTLS actpass); the phone gets
        plain RTP/AVP, Chromium an answer with ICE, DTLS active, rtcp-mux."""
        run_in_namespace(self, "test_browser_calls_phone")

    def test_consent_freshness(self):
        """A call Chromium makes, held 40 s: consent checks answered, both
        tones still arriving at the end."""
        run_in_namespace(self, "test_consent_freshness")

    def test_browser_calls_phone_workers(self):
        """Chromium calls the phone through a daemon with two media worker
        processes (``num-threads`` 2)."""
        run_in_namespace(self, "test_browser_calls_phone", "WorkerPoolChromiumCalls")
