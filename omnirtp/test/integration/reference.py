"""Run Debian's rtpengine 10.5 (or an omnirtp daemon) on loopback and talk ng to it.

Used by the side-by-side integration tests and by the corpus tool
(``python -m omnirtp.test.corpus``).  Everything here binds 127.0.0.1 only.

* :func:`find_rtpengine` locates the reference binary (``None`` when absent).
* :class:`Daemon` starts a process, waits until it answers ``ping`` and
  stops it again; :func:`rtpengine_daemon` and :func:`omnirtp_daemon` build
  the two command lines.
* The ng client, port pickers and bencode are the ones in
  :mod:`omnirtp.test.integration.peers` and :mod:`omnirtp.control.bencode`.
"""

import os
import shutil
import socket
import subprocess
import sys
import time

from omnirtp.test.integration.peers import (  # noqa: F401 (re-exported)
    NGClient, NGTimeout, free_port, free_port_range, hold_port_range, release_port_range)

RTPENGINE_PATHS = ("/usr/sbin/rtpengine", "/usr/bin/rtpengine")
LOOPBACK = "127.0.0.1"


def find_rtpengine():
    """Return the path of the rtpengine binary, or None if it is not installed."""
    for path in RTPENGINE_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("rtpengine")


def free_udp_port(address=LOOPBACK):
    """Return a UDP port that was free on ``address`` a moment ago."""
    return free_port(socket.SOCK_DGRAM, address)


# -- daemons ---------------------------------------------------------------------

class DaemonFailed(Exception):
    """The daemon exited or never answered ping."""


class Daemon:
    """A daemon process on loopback that speaks ng on ``ng_port``."""

    def __init__(self, argv, ng_port, cwd=None, env=None, name="daemon", ports=None):
        self.argv = argv
        self.ng_port = ng_port
        self.ports = ports      # (port_min, port_max): held while it runs (free_port_range)
        self.cwd = cwd
        self.env = env
        self.name = name
        self.process = None
        self.client = None
        self.stderr_path = None

    def start(self, wait=15.0):
        import tempfile
        if self.ports is not None:
            hold_port_range(*self.ports)
        fd, self.stderr_path = tempfile.mkstemp(prefix="omnirtp-%s-" % self.name, suffix=".log")
        with os.fdopen(fd, "wb") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=log)
        self.client = NGClient(self.ng_port, timeout=0.2, tries=1)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()  # before stop() removes the log
                self.stop()
                raise DaemonFailed("%s exited with %s: %s" % (
                    self.name, self.process.returncode, tail))
            if self.client.ping():
                self.client.timeout = 2.0
                self.client.tries = 2
                return self
        tail = self.log_tail()
        self.stop()
        raise DaemonFailed("%s did not answer ping within %.0fs: %s" % (self.name, wait, tail))

    def log_tail(self, size=2000):
        if not self.stderr_path or not os.path.exists(self.stderr_path):
            return ""
        with open(self.stderr_path, "rb") as f:
            return f.read()[-size:].decode("utf-8", "replace")

    def request(self, message):
        return self.client.request(message)

    def stop(self):
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.stderr_path and os.path.exists(self.stderr_path):
            os.unlink(self.stderr_path)
            self.stderr_path = None
        if self.ports is not None:
            release_port_range(*self.ports)


def rtpengine_daemon(ng_port, port_min, port_max, interfaces=(LOOPBACK,), binary=None,
                     extra=()):
    """A :class:`Daemon` for Debian's rtpengine in userspace mode on loopback."""
    binary = binary or find_rtpengine()
    argv = [binary, "--foreground", "--log-stderr", "--table=-1", "--config-file=none",
            "--listen-ng=%s:%d" % (LOOPBACK, ng_port),
            "--port-min=%d" % port_min, "--port-max=%d" % port_max, "--log-level=6"]
    argv += ["--interface=%s" % i for i in interfaces]
    argv += list(extra)
    return Daemon(argv, ng_port, name="rtpengine", ports=(port_min, port_max))


# ``python -m twisted.scripts.twistd`` has no __main__ block and runs nothing;
# call the same entry point the twistd console script uses.
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.exit(run())"


def omnirtp_daemon(ng_port, port_min, port_max, interfaces=(LOOPBACK,), root=None):
    """A :class:`Daemon` for omnirtp run through twistd from a checkout."""
    root = root or os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    env = dict(os.environ)
    env["PYTHONPATH"] = root
    argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "omnirtp",
            "--config-file=none", "--listen-ng=%s:%d" % (LOOPBACK, ng_port),
            "--port-min=%d" % port_min, "--port-max=%d" % port_max, "--num-threads=0"]
    argv += ["--interface=%s" % i for i in interfaces]
    return Daemon(argv, ng_port, cwd=root, env=env, name="omnirtp", ports=(port_min, port_max))
