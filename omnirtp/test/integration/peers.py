"""Start real peers (omnirtp, rtpengine, Kamailio, SIPp, dumpcap) from trial tests.

Everything binds 127.0.0.1.  Each ``start_*``/``capture`` helper registers its own
clean-up on the test (``test.addCleanup``), so a failing test leaves no process
behind.  A helper raises :class:`twisted.trial.unittest.SkipTest` only when the
peer's program is not installed (``make test`` installs them all).

The helpers block (subprocess waits, blocking sockets): use them from
``SynchronousTestCase`` tests, never from code that runs on the reactor.

* :func:`start_omnirtp` / :func:`start_rtpengine`: a media proxy answering ng
  ``ping``, with an :class:`NGClient` as ``.ng``;
* :func:`start_kamailio`: Kamailio with a config file from the fixtures;
* :func:`start_sipp` / :func:`run_sipp`: a SIPp scenario, with its statistics;
* :func:`capture`: dumpcap on ``lo`` for a UDP port range; ``stop()`` returns
  the UDP datagrams seen (parsed from the pcap file here, no tshark needed);
* :func:`write_rtp_pcap`: a PCMU RTP stream as a pcap file for SIPp's
  ``play_pcap_audio``.
"""

import csv
import fcntl
import math
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SkipTest

from omnirtp.control import bencode

LOOPBACK = "127.0.0.1"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
FIXTURES = os.path.join(ROOT, "omnirtp", "test", "fixtures")

# which Debian package ships each program (for the skip message)
PACKAGES = {
    "rtpengine": "rtpengine-daemon",
    "rtpengine-ctl": "rtpengine-utils",
    "kamailio": "kamailio",
    "sipp": "sip-tester",
    "dumpcap": "tshark",
    "tshark": "tshark",
    "redis-server": "redis-server",
}
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


class PeerFailed(Exception):
    """A peer exited early or never became ready; the message has its log tail."""


def find_program(name):
    """Return the path of ``name``, or raise SkipTest naming its package."""
    path = shutil.which(name)
    if path is None:
        for directory in SBIN:
            candidate = os.path.join(directory, name)
            if os.access(candidate, os.X_OK):
                path = candidate
                break
    if path is None:
        raise SkipTest("%s is not installed (Debian package %s; `make test` installs it)"
                       % (name, PACKAGES.get(name, name)))
    return path


# -- ports ------------------------------------------------------------------------

def free_port(kind=socket.SOCK_DGRAM, address=LOOPBACK):
    """A port that was free on ``address`` a moment ago (the OS picks it)."""
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind((address, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def free_ports(count, kind=socket.SOCK_DGRAM, address=LOOPBACK):
    """``count`` distinct ports that were free a moment ago (held together
    while they are picked, so no port is returned twice)."""
    held = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, kind)
            held.append(s)
            s.bind((address, 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def _ephemeral_range():
    """``(first, last)``: the ports the kernel hands out for port-0 binds
    (ip_local_port_range; Linux's default if it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            first, last = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        first, last = 32768, 60999
    return first, last


def _outside_ephemeral(minimum=10000):
    """``[(low, high)]``: the stretches of ports above ``minimum`` that the
    kernel does not hand out for port-0 binds (:func:`_ephemeral_range`),
    below it and above it (those not empty), so that other programs'
    sockets rarely land in a range a test picks."""
    first, last = _ephemeral_range()
    return [(low, high) for low, high in ((minimum, first - 1), (last + 1, 65535))
            if high > low]


def free_ng_port_and_range(size, address=LOOPBACK):
    """``(ng_port, (first, last))``: a media block of ``size`` ports as
    :func:`free_port_range` gives it, and an ng port held with it, outside
    the ephemeral range: a daemon restarted on the same ng port finds it
    free (an ephemeral port can be taken meanwhile by any socket on the
    machine)."""
    size += size % 2
    first, last = free_port_range(size + 2, address)
    return last, (first, first + size - 1)


def free_port_range(size, address=LOOPBACK, low=None, high=None, wait=30.0):
    """``(first, last)``: ``size`` consecutive UDP ports, ``first`` even, none
    bound on ``address`` right now and none in a block another test process
    on this machine holds (see :data:`PORT_REGISTRY`).  By default the block
    lies outside the kernel's ephemeral port range, below or above it (both
    stretches are searched: benchmarks' daemons hold most of the one below,
    e.g. bench/setup.py's ranges, 10000-59999, all held while it runs).

    The block is picked at random among the free ones (not the first free
    one after some start: on a machine whose port space is mostly taken
    that sends every process to the same few blocks), and recorded as held
    by this process for :data:`PORT_HOLD` seconds, or until the proxy
    started on it stops (:func:`start_rtpengine`, :func:`start_omnirtp`
    and ``reference.Daemon`` hold it that long).  rtpengine binds its media
    ports with SO_REUSEADDR, so a second rtpengine given an overlapping
    range binds the same ports and gets the datagrams meant for the first;
    a free-now check alone cannot see that coming, since rtpengine binds a
    port only when a call needs it.  When every free block is held, this
    waits up to ``wait`` seconds for one."""
    stretches = _outside_ephemeral() if low is None or high is None else [(low, high)]
    size += size % 2
    starts = []
    for low, high in stretches:
        low += low % 2
        starts += [low + n * size for n in range((high - low) // size)]
    deadline = time.monotonic() + wait
    while True:
        picked = _registry(lambda entries: _take_block(entries, starts, size, address))
        if picked is not None:
            return picked
        if time.monotonic() >= deadline:
            raise RuntimeError("no free block of %d UDP ports on %s" % (size, address))
        time.sleep(0.2)  # another test process holds every free block


#: the machine-wide record of the port blocks test processes hold: one
#: ``pid until first last`` line per block (``until`` a time.time(), 0 for
#: held until released), rewritten under an exclusive flock; lines of
#: processes that are gone, and lapsed holds, are dropped on the way
PORT_REGISTRY = os.path.join(tempfile.gettempdir(), "omnirtp-test-ports")
#: seconds a block handed out by free_port_range stays held when no proxy takes it over
PORT_HOLD = 30.0
_now = time.time


def hold_port_range(first, last):
    """Hold ports ``first``..``last`` for this process until
    :func:`release_port_range` (or its exit): the blocks it has there are
    held without a time limit, or a new entry is made."""
    def hold(entries):
        pid = os.getpid()
        mine = [e for e in entries if e[0] == pid and _overlap(e, first, last)]
        for e in mine:
            e[1] = 0.0
        if not mine:
            entries.append([pid, 0.0, first, last])
    _registry(hold)


def release_port_range(first, last):
    """Give back what this process holds of ports ``first``..``last``."""
    def release(entries):
        pid = os.getpid()
        entries[:] = [e for e in entries if not (e[0] == pid and _overlap(e, first, last))]
    _registry(release)


def _overlap(entry, first, last):
    return entry[2] <= last and first <= entry[3]


def _take_block(entries, starts, size, address):
    # a random order of the blocks nobody holds; the first that binds is
    # free, so each free block is as likely as another
    free = [first for first in starts
            if not any(_overlap(e, first, first + size - 1) for e in entries)]
    random.SystemRandom().shuffle(free)
    for first in free:
        if _udp_range_free(address, first, first + size - 1):
            entries.append([os.getpid(), _now() + PORT_HOLD, first, first + size - 1])
            return first, first + size - 1
    return None


def _registry(change):
    """Run ``change(entries)`` on the registry's live entries (a list of
    ``[pid, until, first, last]`` it may edit) under the lock; write it back."""
    fd = os.open(PORT_REGISTRY, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "r") as f:
            text = f.read()
        now = _now()
        entries = []
        for line in text.splitlines():
            try:
                pid, until, first, last = line.split()
                entry = [int(pid), float(until), int(first), int(last)]
            except ValueError:
                continue
            if (entry[1] == 0 or entry[1] > now) and _alive(entry[0]):
                entries.append(entry)
        result = change(entries)
        data = "".join("%d %.3f %d %d\n" % tuple(e) for e in entries).encode("ascii")
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, data)
        return result
    finally:
        os.close(fd)    # drops the flock


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _udp_range_free(address, first, last):
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


def private_loopback():
    """A loopback address of 127.64.0.0/10 picked at random (Linux answers
    on all of 127.0.0.0/8 without configuration).

    A proxy whose media ports are there gets no datagram meant for a socket
    on 127.0.0.1, where other programs on the machine work: no stray
    packets for a port another test or benchmark used a moment ago, and no
    sharing of a port with another rtpengine (SO_REUSEADDR) that picked its
    range without :func:`free_port_range`'s registry."""
    rng = random.SystemRandom()
    return "127.%d.%d.%d" % (rng.randint(64, 127), rng.randint(0, 255), rng.randint(1, 254))


def udp_bound(port, address=LOOPBACK):
    """True if some process has a UDP socket bound to ``address:port`` (or
    to the IPv4 wildcard and ``port``), asked of the kernel without binding
    anything: ``ss`` (a sock_diag query filtered in the kernel), else
    /proc/net/udp, which lists every UDP socket of the machine as text and
    takes seconds to read when other processes hold a hundred thousand."""
    ss = shutil.which("ss") or shutil.which("ss", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if ss:
        try:
            out = subprocess.run([ss, "-4Huan", "sport = :%d" % port], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 timeout=30, check=True).stdout.decode("ascii", "replace")
        except (OSError, subprocess.SubprocessError):
            pass
        else:
            wanted = {"%s:%d" % (address, port), "0.0.0.0:%d" % port, "*:%d" % port}
            return any(len(fields) > 3 and fields[3] in wanted
                       for fields in (line.split() for line in out.splitlines()))
    want = "%s:%04X" % ("".join("%02X" % int(b) for b in reversed(address.split("."))), port)
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) > 1 and fields[1] in (want, "00000000:%04X" % port):
                    return True
    except OSError:
        pass
    return False


def have_ipv6_loopback():
    """True if the kernel has ::1 on an interface (``/proc/net/if_inet6``).
    A test may skip IPv6 only when this is false; on a host with ::1, a
    failure to bind or reach it is a test failure."""
    try:
        with open("/proc/net/if_inet6") as f:
            return any(line.split()[0] == "0" * 31 + "1" for line in f if line.strip())
    except OSError:
        return False


NO_IPV6 = "this host has no IPv6 loopback address ::1 (/proc/net/if_inet6)"


# -- media parties (in-process, on the real reactor) --------------------------------

class Party(DatagramProtocol):
    """One call party's UDP socket: records ``(data, addr)`` as it arrives;
    ``wait(n)`` fires with the list once ``n`` datagrams are in."""

    def __init__(self):
        self.received = []
        self._waiters = []

    def datagramReceived(self, data, addr):
        self.received.append((data, addr))
        for waiter in list(self._waiters):
            n, sources, d = waiter
            got = self._from(sources)
            if len(got) >= n:
                self._waiters.remove(waiter)
                d.callback(got)

    def wait(self, n, sources=None):
        """Fires with what arrived once ``n`` datagrams are in; with
        ``sources`` (addresses), only what came from one of them counts and
        is listed: on a busy machine a port of ours may have been another
        test's a moment ago, and a proxy there may still send to it."""
        got = self._from(sources)
        if len(got) >= n:
            return defer.succeed(got)
        d = defer.Deferred()
        self._waiters.append((n, sources, d))
        return d

    def _from(self, sources):
        if sources is None:
            return list(self.received)
        return [(data, addr) for data, addr in self.received if addr in sources]

    def send(self, data, dest):
        """Send to ``dest``: ``(host, port)``, or a port on 127.0.0.1."""
        if isinstance(dest, int):
            dest = (LOOPBACK, dest)
        self.transport.write(data, dest)

    @property
    def address(self):
        h = self.transport.getHost()
        return (h.host, h.port)

    @property
    def port(self):
        return self.transport.getHost().port


def listen_party(test, address=LOOPBACK):
    """A :class:`Party` listening on ``address`` (an ephemeral port), closed
    when ``test`` ends."""
    from twisted.internet import reactor
    party = Party()
    port = reactor.listenUDP(0, party, interface=address)
    test.addCleanup(port.stopListening)
    return party


# -- ng client ----------------------------------------------------------------------

def as_text(value):
    """Decoded bencode with every bytes value turned into str (UTF-8)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [as_text(v) for v in value]
    if isinstance(value, dict):
        return {as_text(k): as_text(v) for k, v in value.items()}
    return value


class NGTimeout(Exception):
    """No ng reply arrived."""


class NGClient:
    """A blocking ng client over UDP: ``request(dict) -> dict`` (strings as str).

    Like Kamailio it resends the same datagram (same cookie) when no reply
    comes within ``timeout`` seconds, ``tries`` times in all."""

    def __init__(self, port, address=LOOPBACK, timeout=2.0, tries=3):
        self.server = (address, port)
        self.timeout = timeout
        self.tries = tries
        self._seq = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((LOOPBACK, 0))

    def close(self):
        self._sock.close()

    def request(self, message, timeout=None, tries=None):
        self._seq += 1
        cookie = b"%d_%d" % (os.getpid(), self._seq)
        datagram = cookie + b" " + bencode.encode(message)
        self._sock.settimeout(self.timeout if timeout is None else timeout)
        for _ in range(self.tries if tries is None else tries):
            self._sock.sendto(datagram, self.server)
            try:
                while True:
                    reply, source = self._sock.recvfrom(65536)
                    head, _, body = reply.partition(b" ")
                    if head == cookie and source == self.server:
                        return as_text(bencode.decode(body))
            except socket.timeout:
                continue
        raise NGTimeout("no ng reply from %s:%d to %r" % (
            self.server + (message.get("command"),)))

    def ping(self, timeout=None, tries=None):
        try:
            reply = self.request({"command": "ping"}, timeout, tries)
        except NGTimeout:
            return False
        return reply.get("result") == "pong"


# -- processes -------------------------------------------------------------------------

class Peer:
    """A subprocess whose stdout+stderr go to a log file in the test's temp dir."""

    def __init__(self, name, argv, log_path, cwd=None, env=None):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            self.argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.ng = None

    @property
    def pid(self):
        return self.process.pid

    def running(self):
        return self.process.poll() is None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_tail(self, size=3000):
        return self.log()[-size:]

    def failed(self, why):
        return PeerFailed("%s %s; command: %s\n--- log tail (%s) ---\n%s" % (
            self.name, why, " ".join(self.argv), self.log_path, self.log_tail()))

    def wait(self, timeout):
        """Wait for the process to exit; return its exit code.  Raises
        PeerFailed (after killing it) if it is still running after ``timeout``."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise self.failed("still running after %.0f s" % (timeout,))

    def signal(self, signum):
        if self.running():
            self.process.send_signal(signum)

    def stop(self, grace=5.0):
        """Terminate (SIGTERM, then SIGKILL after ``grace`` seconds) the process
        and the process group it leads (Kamailio forks children)."""
        if self.ng is not None:
            self.ng.close()
            self.ng = None
        if self.running():
            self._kill_group(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self._kill_group(signal.SIGKILL)
                self.process.wait(grace)
        else:
            # the leader is gone; children it left in its group must go too
            self._kill_group(signal.SIGKILL)
        if not self._log.closed:
            self._log.close()
        return self.process.returncode

    def _kill_group(self, signum):
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _tempdir(test, name):
    """A fresh directory for one peer's files, under the test's temp dir."""
    base = test.mktemp()
    path = os.path.join(os.path.abspath(base), name)
    os.makedirs(path)
    return path


def _wait_for(peer, ready, wait, what):
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not peer.running():
            raise peer.failed("exited with %s before %s" % (peer.process.returncode, what))
        if ready():
            return
        time.sleep(0.05)  # polling a child process, not a unit test
    peer.stop()
    raise peer.failed("did not get to %s within %.0f s" % (what, wait))


def _start_proxy(test, name, argv, ng_port, wait, cwd=None, env=None, ports=None):
    """``ports``: the proxy's ``(port_min, port_max)``, held for this process
    until the proxy has stopped (see :func:`free_port_range`)."""
    if ports is not None:
        hold_port_range(*ports)
        test.addCleanup(release_port_range, *ports)   # runs after peer.stop
    directory = _tempdir(test, name)
    peer = Peer(name, argv, os.path.join(directory, name + ".log"), cwd=cwd, env=env)
    test.addCleanup(peer.stop)
    peer.ng = NGClient(ng_port)
    _wait_for(peer, lambda: peer.ng.ping(timeout=0.2, tries=1), wait, "answering ng ping")
    return peer


# `python -m twisted.scripts.twistd` runs nothing (the module has no __main__
# block) and exits 0; this is what the twistd console script does.
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.exit(run())"


def start_omnirtp(test, ng_port, port_min, port_max, extra_args=(), wait=30.0):
    """Run omnirtp from this checkout with twistd (``sys.executable -c
    TWISTD -n --pidfile= omnirtp --config-file=none ...``) on loopback; return the :class:`Peer` once it answers ``ping``.
    ``peer.ng`` is an :class:`NGClient` for it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ROOT
    argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "omnirtp",
            "--config-file=none", "--interface=%s" % LOOPBACK,
            "--listen-ng=%s:%d" % (LOOPBACK, ng_port),
            "--port-min=%d" % port_min, "--port-max=%d" % port_max]
    argv += list(extra_args)
    return _start_proxy(test, "omnirtp", argv, ng_port, wait, cwd=ROOT, env=env,
                        ports=(port_min, port_max))


def start_rtpengine(test, ng_port, port_min, port_max, extra_args=(), wait=15.0,
                    interface=LOOPBACK):
    """Run Debian's rtpengine (the reference) in userspace mode on loopback.

    ``interface``: the address of its media ports (ng stays on 127.0.0.1),
    e.g. a :func:`private_loopback` one."""
    argv = [find_program("rtpengine"), "--foreground", "--log-stderr", "--table=-1",
            "--config-file=none", "--interface=%s" % interface,
            "--listen-ng=%s:%d" % (LOOPBACK, ng_port),
            "--port-min=%d" % port_min, "--port-max=%d" % port_max, "--log-level=6"]
    argv += list(extra_args)
    return _start_proxy(test, "rtpengine", argv, ng_port, wait, ports=(port_min, port_max))


def _redis_ping(port, password=None):
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as s:
            if password is not None:
                s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n"
                          % (len(password), password.encode()))
                if not s.recv(64).startswith(b"+OK"):
                    return False
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(test, port=None, password=None, wait=15.0, directory=None):
    """Run Debian's redis-server on 127.0.0.1:``port`` (a free one unless
    given) with no persistence, in a directory of the test's (or
    ``directory``, so a restarted server can reuse it); return the
    :class:`Peer` once it answers PING.  ``peer.port`` is its port."""
    if port is None:
        port = free_port(socket.SOCK_STREAM)
    if directory is None:
        directory = _tempdir(test, "redis")
    argv = [find_program("redis-server"), "--port", str(port), "--bind", LOOPBACK,
            "--save", "", "--appendonly", "no", "--dir", directory,
            "--daemonize", "no", "--protected-mode", "no"]
    if password is not None:
        argv += ["--requirepass", password]
    peer = Peer("redis-server", argv, os.path.join(directory, "redis-%d.log" % port),
                cwd=directory)
    test.addCleanup(peer.stop)
    peer.port, peer.directory = port, directory
    _wait_for(peer, lambda: _redis_ping(port, password), wait, "answering PING")
    return peer


def start_kamailio(test, sip_port, defines, cfg=None, wait=15.0):
    """Run Kamailio in the foreground listening on udp 127.0.0.1:``sip_port``.

    ``cfg`` defaults to the fixture ``kamailio/kamailio.cfg``; ``defines`` is a
    dict of preprocessor defines for it (``-A NAME=VALUE``; give string values
    with their double quotes, e.g. ``{"NG_SOCK": '"udp:127.0.0.1:22222"'}``)."""
    binary = find_program("kamailio")
    cfg = cfg or os.path.join(FIXTURES, "kamailio", "kamailio.cfg")
    directory = _tempdir(test, "kamailio")
    argv = [binary, "-DD", "-E", "-f", cfg, "-l", "udp:%s:%d" % (LOOPBACK, sip_port),
            "-Y", directory, "-w", directory, "-P", os.path.join(directory, "kamailio.pid"),
            "-m", "64", "-M", "8"]
    for key, value in sorted(defines.items()):
        argv += ["-A", "%s=%s" % (key, value)]
    check = subprocess.run([binary, "-c"] + argv[2:], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if check.returncode != 0:
        raise PeerFailed("kamailio -c rejected %s: %s" % (
            cfg, check.stdout.decode("utf-8", "replace")[-3000:]))
    peer = Peer("kamailio", argv, os.path.join(directory, "kamailio.log"))
    test.addCleanup(peer.stop)
    _wait_for(peer, lambda: udp_bound(sip_port), wait, "listening on udp port %d" % sip_port)
    return peer


# -- SIPp ------------------------------------------------------------------------------------

class SippStats:
    """The last row of a SIPp ``-trace_stat`` CSV file, keyed by column name."""

    def __init__(self, row):
        self.row = row

    def get(self, name):
        """An integer counter, e.g. ``SuccessfulCall(C)``, ``FailedCall(C)``."""
        return int(self.row[name])

    @property
    def successful(self):
        return self.get("SuccessfulCall(C)")

    @property
    def failed(self):
        return self.get("FailedCall(C)")

    def __repr__(self):
        return "<SippStats successful=%s failed=%s>" % (
            self.row.get("SuccessfulCall(C)"), self.row.get("FailedCall(C)"))


class Sipp(Peer):
    """A SIPp run; :meth:`stats` reads its statistics file once it has exited."""

    def __init__(self, name, argv, directory):
        self.directory = directory
        self.stats_path = os.path.join(directory, "stats.csv")
        self.errors_path = os.path.join(directory, "errors.log")
        argv = list(argv) + ["-trace_stat", "-stf", self.stats_path,
                             "-trace_err", "-error_file", self.errors_path]
        Peer.__init__(self, name, argv, os.path.join(directory, "sipp.log"), cwd=directory)

    def stats(self):
        with open(self.stats_path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";"))
        if not rows:
            raise PeerFailed("%s wrote no statistics to %s" % (self.name, self.stats_path))
        return SippStats(rows[-1])

    def errors(self, size=3000):
        if not os.path.exists(self.errors_path):
            return ""
        with open(self.errors_path, "rb") as f:
            return f.read()[-size:].decode("utf-8", "replace")

    def failed(self, why):
        base = Peer.failed(self, why)
        return PeerFailed("%s\n--- SIPp errors ---\n%s" % (base, self.errors()))


def start_sipp(test, name, scenario, local_port, media_port, remote=None, calls=1,
               keys=None, extra_args=(), wait=10.0):
    """Start SIPp with the scenario file ``scenario`` on 127.0.0.1:``local_port``
    (RTP from/to 127.0.0.1:``media_port``, which SIPp also binds) and return a
    :class:`Sipp` (``.sip_port``: ``local_port``) once it listens.  It stops
    after ``calls`` calls.  ``remote`` is the ``host:port`` a UAC calls;
    ``keys`` become ``-key NAME VALUE``."""
    binary = find_program("sipp")
    directory = _tempdir(test, name)
    argv = [binary, "-sf", scenario, "-i", LOOPBACK, "-p", str(local_port),
            "-mi", LOOPBACK, "-mp", str(media_port), "-m", str(calls), "-nostdin",
            "-timeout", "120", "-timeout_error"]
    for key, value in sorted((keys or {}).items()):
        argv += ["-key", key, str(value)]
    argv += list(extra_args)
    if remote:
        argv.append(remote)
    peer = Sipp(name, argv, directory)
    peer.sip_port = local_port
    test.addCleanup(peer.stop)
    _wait_for(peer, lambda: udp_bound(local_port), wait, "listening on udp port %d" % local_port)
    return peer


def run_sipp(test, name, scenario, local_port, media_port, remote, calls=1, keys=None,
             extra_args=(), timeout=120.0):
    """Run a SIPp UAC to completion; return ``(exit_code, SippStats)``."""
    peer = start_sipp(test, name, scenario, local_port, media_port, remote, calls, keys,
                      extra_args)
    code = peer.wait(timeout)
    return code, peer.stats()


def render(template_path, directory, **values):
    """Copy a fixture to ``directory`` with each ``@NAME@`` replaced by
    ``values[NAME]``; return the new path.  Raises KeyError for a placeholder
    without a value."""
    with open(template_path) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace("@%s@" % key, str(value))
    if "@" in text:
        leftover = [w for w in text.split("@")[1::2] if w.isupper() and w.isidentifier()]
        if leftover:
            raise KeyError("no value for @%s@ in %s" % (leftover[0], template_path))
    path = os.path.join(directory, os.path.basename(template_path))
    with open(path, "w") as f:
        f.write(text)
    return path


# -- RTP as a pcap file -------------------------------------------------------------------------

PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1


def _ulaw(sample):
    """G.711 mu-law code of one 16-bit linear sample (ITU-T G.711, bias 0x84)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _ipv4_checksum(header):
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_rtp_pcap(path, packets=50, ptime_ms=20, payload_type=0, ssrc=0x0A0B0C0D,
                   tone_hz=440, src=("10.0.0.1", 40000), dst=("10.0.0.2", 40000)):
    """Write a pcap (Ethernet/IPv4/UDP) of one RTP stream of ``packets``
    packets, ``ptime_ms`` apart, PCMU payload (a sine tone), for SIPp's
    ``play_pcap_audio`` (which keeps only the timing and the RTP bytes: it
    sends from its media port to the address in the peer's SDP)."""
    samples = 8 * ptime_ms
    tone = bytes(_ulaw(int(8000 * math.sin(2 * math.pi * tone_hz * n / 8000)))
                 for n in range(samples * packets))
    out = [struct.pack("<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET)]
    src_ip, dst_ip = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
    for i in range(packets):
        rtp = struct.pack("!BBHII", 0x80, (0x80 if i == 0 else 0) | payload_type,
                          i & 0xFFFF, (i * samples) & 0xFFFFFFFF, ssrc)
        rtp += tone[i * samples:(i + 1) * samples]
        udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                         src_ip, dst_ip)
        ip = ip[:10] + struct.pack("!H", _ipv4_checksum(ip)) + ip[12:]
        frame = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + udp
        usec = i * ptime_ms * 1000
        out.append(struct.pack("<IIII", usec // 1000000, usec % 1000000, len(frame), len(frame)))
        out.append(frame)
    with open(path, "wb") as f:
        f.write(b"".join(out))
    return path


def read_udp_pcap(path):
    """The UDP/IPv4 datagrams of a libpcap file (Ethernet or Linux cooked
    link type): a list of ``(src, sport, dst, dport, payload_length)``."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise ValueError("%s: %d bytes, shorter than a pcap header" % (path, len(data)))
    magic = struct.unpack_from("<I", data)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        endian = ">"
    else:
        raise ValueError("%s: not a libpcap file (magic %#x)" % (path, magic))
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    link_header = {1: 14, 113: 16, 0: 4, 101: 0}.get(linktype)
    if link_header is None:
        raise ValueError("%s: unsupported link type %d" % (path, linktype))
    result, pos = [], 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from(endian + "I", data, pos + 8)[0]
        frame = data[pos + 16:pos + 16 + caplen]
        pos += 16 + caplen
        ip = frame[link_header:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport, length = struct.unpack_from("!HHH", ip, ihl)
        result.append((socket.inet_ntoa(ip[12:16]), sport, socket.inet_ntoa(ip[16:20]),
                       dport, length - 8))
    return result


# -- capture -------------------------------------------------------------------------------

class Capture:
    """dumpcap on an interface with a capture filter, writing a libpcap file."""

    def __init__(self, peer, path):
        self.peer = peer
        self.path = path
        self.packets = None

    def stop(self):
        """Stop dumpcap (SIGINT: it flushes the file) and return the UDP
        datagrams captured, as :func:`read_udp_pcap` does."""
        if self.packets is None:
            self.peer.signal(signal.SIGINT)
            self.peer.wait(15)
            self.peer.stop()
            self.packets = read_udp_pcap(self.path)
        return self.packets


def capture(test, port_min, port_max, interface="lo", wait=15.0):
    """Start capturing UDP datagrams to or from ports ``port_min..port_max``
    on ``interface``; return a :class:`Capture` once dumpcap is capturing."""
    binary = find_program("dumpcap")
    directory = _tempdir(test, "capture")
    path = os.path.join(directory, "capture.pcap")
    argv = [binary, "-i", interface, "-P", "-w", path, "-B", "16",
            "-f", "udp and portrange %d-%d" % (port_min, port_max)]
    peer = Peer("dumpcap", argv, os.path.join(directory, "dumpcap.log"))
    test.addCleanup(peer.stop)
    _wait_for(peer, lambda: "Capturing on" in peer.log(), wait, "capturing")
    return Capture(peer, path)
