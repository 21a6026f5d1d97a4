"""Run Debian's rtpengine 10.5 (or an omnirtp daemon) on loopback and talk ng to it.

Used by the side-by-side integration tests and by the corpus tool
(``python -m omnirtp.test.corpus``).  Everything here binds 127.0.0.1 only.

* :func:`find_rtpengine` locates the reference binary (``None`` when absent).
* :class:`Daemon` starts a process, waits until it answers ``ping`` and
  stops it again; :func:`rtpengine_daemon` and :func:`omnirtp_daemon` build
  the two command lines.
* :class:`NGClient` is a small blocking ng client over UDP (cookie framing,
  bencode dictionaries, retries on timeout).
"""

import os
import shutil
import socket
import subprocess
import sys
import time

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
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((address, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def free_port_range(size, address=LOOPBACK, low=20000, high=60000):
    """Return ``(port_min, port_max)``, an even-aligned block of ``size`` ports
    none of which is bound on ``address`` right now (best effort)."""
    start = low + (os.getpid() * 2 % ((high - low) // size)) * size
    for attempt in range((high - low) // size):
        first = low + (start - low + attempt * size) % (high - low)
        first -= first % 2
        if _range_free(address, first, first + size - 1):
            return first, first + size - 1
    raise RuntimeError("no free block of %d UDP ports on %s" % (size, address))


def _range_free(address, first, last):
    held = []
    try:
        for port in range(first, last + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held.append(s)
            try:
                s.bind((address, port))
            except OSError:
                return False
        return True
    finally:
        for s in held:
            s.close()


# -- bencode (tiny; omnirtp.control.bencode is the real one) ---------------

def bencode(value):
    """Encode str/bytes/int/list/dict (keys in insertion order, as Kamailio does)."""
    out = []
    _encode(value, out)
    return b"".join(out)


def _encode(value, out):
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (str, bytes)):
        data = value.encode("utf-8") if isinstance(value, str) else value
        out.append(b"%d:" % len(data))
        out.append(data)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        for key, item in value.items():
            _encode(key, out)
            _encode(item, out)
        out.append(b"e")
    else:
        raise TypeError("cannot bencode %r" % (type(value),))


def bdecode(data):
    """Decode one bencode value; byte strings come back as str when they are
    UTF-8, else as bytes.  Raises ValueError on malformed or trailing data."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError("trailing data after bencode value at offset %d" % end)
    return value


def _decode(data, i):
    if i >= len(data):
        raise ValueError("bencode truncated at offset %d" % i)
    lead = data[i:i + 1]
    if lead == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if lead == b"l":
        items, i = [], i + 1
        while data[i:i + 1] != b"e":
            item, i = _decode(data, i)
            items.append(item)
        return items, i + 1
    if lead == b"d":
        result, i = {}, i + 1
        while data[i:i + 1] != b"e":
            key, i = _decode(data, i)
            result[key], i = _decode(data, i)
        return result, i + 1
    if lead.isdigit():
        colon = data.index(b":", i)
        size = int(data[i:colon])
        raw = data[colon + 1:colon + 1 + size]
        if len(raw) != size:
            raise ValueError("bencode string truncated at offset %d" % i)
        try:
            return raw.decode("utf-8"), colon + 1 + size
        except UnicodeDecodeError:
            return raw, colon + 1 + size
    raise ValueError("bad bencode byte %r at offset %d" % (lead, i))


# -- ng client -----------------------------------------------------------------

class NGTimeout(Exception):
    """The daemon did not answer an ng request."""


class NGClient:
    """Blocking ng client: ``request(dict) -> dict``."""

    def __init__(self, port, address=LOOPBACK, timeout=1.0, retries=3):
        self.address = (address, port)
        self.timeout = timeout
        self.retries = retries
        self._seq = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((LOOPBACK, 0))
        self._sock.settimeout(timeout)

    def close(self):
        self._sock.close()

    def request_raw(self, payload, retries=None):
        """Send one already-encoded payload; return the reply payload bytes."""
        self._seq += 1
        cookie = b"%d_%d" % (os.getpid(), self._seq)
        datagram = cookie + b" " + payload
        for _ in range(self.retries if retries is None else retries):
            self._sock.sendto(datagram, self.address)
            try:
                while True:
                    reply, _ = self._sock.recvfrom(65536)
                    head, _, body = reply.partition(b" ")
                    if head == cookie:
                        return body
            except socket.timeout:
                continue
        raise NGTimeout("no ng reply from %s:%d" % self.address)

    def request(self, message, retries=None):
        return bdecode(self.request_raw(bencode(message), retries))

    def ping(self, retries=None):
        return self.request({"command": "ping"}, retries).get("result") == "pong"


# -- daemons ---------------------------------------------------------------------

class DaemonFailed(Exception):
    """The daemon exited or never answered ping."""


class Daemon:
    """A daemon process on loopback that speaks ng on ``ng_port``."""

    def __init__(self, argv, ng_port, cwd=None, env=None, name="daemon"):
        self.argv = argv
        self.ng_port = ng_port
        self.cwd = cwd
        self.env = env
        self.name = name
        self.process = None
        self.client = None
        self.stderr_path = None

    def start(self, wait=15.0):
        import tempfile
        fd, self.stderr_path = tempfile.mkstemp(prefix="omnirtp-%s-" % self.name, suffix=".log")
        with os.fdopen(fd, "wb") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=log)
        self.client = NGClient(self.ng_port, timeout=0.2, retries=1)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise DaemonFailed("%s exited with %s: %s" % (
                    self.name, self.process.returncode, self.log_tail()))
            try:
                if self.client.ping():
                    self.client.timeout = 2.0
                    self.client._sock.settimeout(2.0)
                    self.client.retries = 2
                    return self
            except NGTimeout:
                pass
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


def rtpengine_daemon(ng_port, port_min, port_max, interfaces=(LOOPBACK,), binary=None,
                     extra=()):
    """A :class:`Daemon` for Debian's rtpengine in userspace mode on loopback."""
    binary = binary or find_rtpengine()
    argv = [binary, "--foreground", "--log-stderr", "--table=-1", "--config-file=none",
            "--listen-ng=%s:%d" % (LOOPBACK, ng_port),
            "--port-min=%d" % port_min, "--port-max=%d" % port_max, "--log-level=6"]
    argv += ["--interface=%s" % i for i in interfaces]
    argv += list(extra)
    return Daemon(argv, ng_port, name="rtpengine")


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
    return Daemon(argv, ng_port, cwd=root, env=env, name="omnirtp")
