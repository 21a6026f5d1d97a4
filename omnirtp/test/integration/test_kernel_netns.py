"""Kernel forwarding (``table = 0``, nftables) across three network namespaces.

The test makes a caller namespace, a proxy namespace and a callee namespace
joined by two veth pairs (caller 10.77.1.2 <-> 10.77.1.1 proxy 10.77.2.1 <->
10.77.2.2 callee, forwarding on in the proxy only), runs omnirtp (twistd,
this checkout) in the proxy namespace with ``--table=0``, sets a plain call
up over ng and sends RTP and RTCP both ways from sockets it opens inside the
party namespaces (a thread that enters the namespace with setns(2) opens
them; a socket stays in the namespace it was made in).

Checked: after the first packets (userspace: learning, confirmation), the
next ones are forwarded by the kernel only: each party receives every packet
from the address and port it was told about, the kernel's counters equal
what was sent after the offload, and ng ``query`` counts exactly everything
(the userspace packets plus the kernel's).  ``delete`` takes every rule out,
a clean stop deletes the table, and a restart after a crash (SIGKILL with
streams in the kernel) starts from an empty table.

Needs root (``ip netns``) and nftables; it fails, never skips, without them.
"""

import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test.integration.peers import NGClient, ROOT, free_port
from omnirtp.test.integration.reference import TWISTD, Daemon, DaemonFailed

CALLER, PROXY_A, PROXY_B, CALLEE = "10.77.1.2", "10.77.1.1", "10.77.2.1", "10.77.2.2"
CLONE_NEWNET = 0x40000000
NG_PORT = 22222  # inside the proxy namespace: nothing else listens there
PORT_MIN, PORT_MAX = 30000, 30099
#: packets each party sends before (userspace) and after the offload.  One
#: before: a stream's first packet confirms its sender and is necessarily
#: relayed in userspace; a second one could meet the engine's once-a-second
#: offload check in between (it then goes through the kernel and overtakes
#: the first one, still queued on the socket: seen under load).
BEFORE, AFTER = 1, 40


def rtp(seq, ssrc=0x1234):
    return bytes([0x80, 0x00]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big") \
        + ssrc.to_bytes(4, "big") + bytes(160)


def rtcp(seq):
    # a receiver report with no blocks, the SSRC carrying the sequence
    return bytes([0x80, 201, 0, 1]) + seq.to_bytes(4, "big")


_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(name, function):
    """``function()`` run by a thread inside network namespace ``name``."""
    result, error = [], []

    def run():
        try:
            fd = os.open("/run/netns/" + name, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, "setns(%s): %s" % (name, os.strerror(err)))
            finally:
                os.close(fd)
            result.append(function())
        except BaseException as e:  # handed to the caller
            error.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class Namespaces:
    """caller <-> proxy <-> callee; deleted (with their veths) on cleanup."""

    def __init__(self, test):
        tag = "%d-%s" % (os.getpid(), uuid.uuid4().hex[:6])
        self.caller, self.proxy, self.callee = ("ork-%s-%s" % (n, tag) for n in "cpe")
        for name in (self.caller, self.proxy, self.callee):
            made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
            if made.returncode:
                test.fail("`ip netns add %s` failed (it needs root): %s"
                          % (name, made.stderr.strip()))
            test.addCleanup(subprocess.run, ["ip", "netns", "delete", name],
                            capture_output=True)
        c, p, e = self.caller, self.proxy, self.callee
        veth_a, veth_b = "ka%s" % tag[-6:], "kb%s" % tag[-6:]
        steps = [
            ["link", "add", veth_a + "c", "netns", c, "type", "veth", "peer", "name",
             veth_a + "p", "netns", p],
            ["link", "add", veth_b + "e", "netns", e, "type", "veth", "peer", "name",
             veth_b + "p", "netns", p],
            ["-n", c, "addr", "add", CALLER + "/24", "dev", veth_a + "c"],
            ["-n", p, "addr", "add", PROXY_A + "/24", "dev", veth_a + "p"],
            ["-n", p, "addr", "add", PROXY_B + "/24", "dev", veth_b + "p"],
            ["-n", e, "addr", "add", CALLEE + "/24", "dev", veth_b + "e"],
        ]
        for ns, dev in ((c, veth_a + "c"), (p, veth_a + "p"), (p, veth_b + "p"),
                        (e, veth_b + "e"), (c, "lo"), (p, "lo"), (e, "lo")):
            steps.append(["-n", ns, "link", "set", dev, "up"])
        steps += [["-n", c, "route", "add", "default", "via", PROXY_A],
                  ["-n", e, "route", "add", "default", "via", PROXY_B]]
        for step in steps:
            done = subprocess.run(["ip"] + step, capture_output=True, text=True)
            if done.returncode:
                test.fail("ip %s: %s" % (" ".join(step), done.stderr.strip()))
        self.sh(p, "echo 1 > /proc/sys/net/ipv4/ip_forward")

    def sh(self, ns, command):
        return subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", command],
                              capture_output=True, text=True, check=True).stdout

    def nft(self, *args):
        """``nft -j ARGS`` in the proxy namespace, parsed (None: it failed)."""
        done = subprocess.run(["ip", "netns", "exec", self.proxy, "nft", "-j"] + list(args),
                              capture_output=True, text=True)
        if done.returncode:
            return None
        return json.loads(done.stdout)["nftables"]


class NetnsDaemon(Daemon):
    """omnirtp in the proxy namespace; its ng client is made in there too."""

    def __init__(self, nets, extra=(), threads=0):
        env = dict(os.environ, PYTHONPATH=ROOT)
        argv = ["ip", "netns", "exec", nets.proxy, sys.executable, "-c", TWISTD, "-n",
                "--pidfile=", "omnirtp", "--config-file=none",
                "--listen-ng=127.0.0.1:%d" % NG_PORT, "--port-min=%d" % PORT_MIN,
                "--port-max=%d" % PORT_MAX, "--num-threads=%d" % threads,
                "--interface=%s" % PROXY_A,
                "--endpoint-learning=immediate", "--delete-delay=0", "--table=0"] + list(extra)
        Daemon.__init__(self, argv, NG_PORT, cwd=ROOT, env=env, name="omnirtp-kernel")
        self.nets = nets

    def start(self, wait=20.0):
        import tempfile
        fd, self.stderr_path = tempfile.mkstemp(prefix="omnirtp-kernel-", suffix=".log")
        with os.fdopen(fd, "wb") as log:
            self.process = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.client = in_netns(self.nets.proxy, lambda: NGClient(NG_PORT, timeout=0.2, tries=1))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DaemonFailed("omnirtp exited with %s: %s"
                                   % (self.process.returncode, self.log_tail()))
            if self.client.ping():
                self.client.timeout, self.client.tries = 2.0, 2
                return self
        raise DaemonFailed("omnirtp did not answer ping: %s" % self.log_tail())

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)

    def workers(self):
        """``{index: pid}`` of the media worker processes (the daemon's
        children, ``--index K`` on their command line)."""
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    stat = f.read()
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    argv = f.read().decode("utf-8", "replace").split("\0")
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == self.process.pid \
                    and "--index" in argv:
                found[int(argv[argv.index("--index") + 1])] = int(entry)
        return found

    def kill_all(self):
        """SIGKILL for the daemon and its workers at once (a crash that
        leaves no process to clean up)."""
        os.kill(self.process.pid, signal.SIGSTOP)  # no restart in between
        for pid in self.workers().values():
            os.kill(pid, signal.SIGKILL)
        self.kill()


def party_socket(test, ns, address, port=0):
    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((address, port))
        return s
    s = in_netns(ns, make)
    test.addCleanup(s.close)
    return s


def sdp(address, port):
    return ("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" % (address, address, port))


def media_of(sdp_text):
    address = port = None
    for line in sdp_text.split("\r\n"):
        if line.startswith("c=IN IP4 "):
            address = line.split()[2]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    return address, port


def receive(sock, count, timeout=3.0):
    """Up to ``count`` datagrams as ``[(data, source)]``."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            break
        got.append(sock.recvfrom(2048))
    return got


class KernelForwardingTests(SynchronousTestCase):
    maxDiff = None

    def setUp(self):
        self.nets = Namespaces(self)

    #: media worker processes (num-threads)
    threads = 0

    def daemon(self, *extra):
        daemon = NetnsDaemon(self.nets, extra, threads=self.threads)
        self.addCleanup(daemon.stop)
        # ng answers once the media workers are up: on a loaded machine
        # their start (Twisted and omnirtp imported again) takes a while
        daemon.start(wait=60.0 if self.threads else 20.0)
        self.wait_ready()
        return daemon

    def wait_ready(self):
        """The media plane is up (its table made)."""

    def call(self, daemon, call_id="k1", s=None):
        """A plain call; returns the parties' RTP and RTCP sockets (new ones,
        or ``s``'s) and the proxy's address/port each party sends to."""
        if s is None:
            s = {"a": party_socket(self, self.nets.caller, CALLER),
                 "b": party_socket(self, self.nets.callee, CALLEE)}
            for name, ns, addr in (("a", self.nets.caller, CALLER),
                                   ("b", self.nets.callee, CALLEE)):
                s[name + "c"] = party_socket(self, ns, addr, s[name].getsockname()[1] + 1)
        offer = daemon.request({"command": "offer", "call-id": call_id, "from-tag": "ft",
                                "sdp": sdp(CALLER, s["a"].getsockname()[1])})
        self.assertEqual(offer["result"], "ok", offer)
        answer = daemon.request({"command": "answer", "call-id": call_id, "from-tag": "ft",
                                 "to-tag": "tt", "sdp": sdp(CALLEE, s["b"].getsockname()[1])})
        self.assertEqual(answer["result"], "ok", answer)
        to_b = media_of(offer["sdp"])  # where the callee sends
        to_a = media_of(answer["sdp"])  # where the caller sends
        self.assertEqual((to_a[0], to_b[0]), (PROXY_A, PROXY_A))
        return s, to_a, to_b

    def exchange(self, s, to_a, to_b, first, count):
        """``count`` RTP and RTCP packets each way (sequence numbers from
        ``first``), interleaved; asserts each arrives exactly once, in
        order, from the port the receiver was told about."""
        for seq in range(first, first + count):
            s["a"].sendto(rtp(seq), to_a)
            s["b"].sendto(rtp(seq), to_b)
            s["ac"].sendto(rtcp(seq), (to_a[0], to_a[1] + 1))
            s["bc"].sendto(rtcp(seq), (to_b[0], to_b[1] + 1))
            if seq % 10 == 9:
                time.sleep(0.01)  # no burst beyond the socket buffers
        expect_rtp = [rtp(q) for q in range(first, first + count)]
        expect_rtcp = [rtcp(q) for q in range(first, first + count)]
        self.assertEqual(receive(s["b"], count), [(p, to_b) for p in expect_rtp])
        self.assertEqual(receive(s["a"], count), [(p, to_a) for p in expect_rtp])
        self.assertEqual(receive(s["bc"], count),
                         [(p, (to_b[0], to_b[1] + 1)) for p in expect_rtcp])
        self.assertEqual(receive(s["ac"], count),
                         [(p, (to_a[0], to_a[1] + 1)) for p in expect_rtcp])

    def tables(self):
        """Our tables in the proxy namespace: ``omnirtp-0`` (num-threads 0)
        or ``omnirtp-0-wK`` (one per media worker)."""
        listed = self.nets.nft("list", "tables", "inet") or []
        return sorted(item["table"]["name"] for item in listed
                      if "table" in item and item["table"]["name"].startswith("omnirtp-0"))

    def kernel_counters(self):
        """``{(sender's port, receiver's port): packets}`` of the kernel's
        per-stream counters: the elements of the maps ``dport4`` (keyed by
        our sockets: O, Y's address, L's port; counted; Y's port), joined
        on L's port with those of ``daddr4`` (X's address and port, L)."""
        found = {}
        for table in self.tables():
            senders, counted = {}, {}
            for name in ("daddr4", "dport4"):
                listed = self.nets.nft("list", "map", "inet", table, name) or []
                for item in listed:
                    for elem in item.get("map", {}).get("elem", ()):
                        key, value = elem
                        if name == "daddr4":
                            x, xp, la, lp = key["concat"]
                            senders[lp] = xp
                        else:
                            oa, op, ya, lp = key["elem"]["val"]["concat"]
                            counted[lp] = (value, key["elem"]["counter"]["packets"])
            for lp, (yp, packets) in counted.items():
                found[(senders.get(lp), yp)] = packets
        return found

    def stream_objects(self, table="omnirtp-0"):
        """``{map: elements}`` of our table's maps that hold any (None: no
        table)."""
        listed = self.nets.nft("list", "table", "inet", table)
        if listed is None:
            return None
        return {item["map"]["name"]: len(item["map"]["elem"])
                for item in listed if "map" in item and item["map"].get("elem")}

    def wait_offloaded(self, count):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if len(self.kernel_counters()) == count:
                return
            time.sleep(0.2)
        self.fail("not offloaded within 5 s: %r" % (self.stream_objects(),))

    def test_offloaded_call(self):
        daemon = self.daemon()
        self.assertEqual(self.stream_objects(), {})  # our empty table
        s, to_a, to_b = self.call(daemon)
        # the first packets confirm both parties (userspace)
        self.exchange(s, to_a, to_b, 1, BEFORE)
        self.wait_offloaded(4)  # RTP and RTCP, both ways
        self.assertEqual(self.stream_objects(),
                         {"dport4": 4, "daddr4": 4, "sport4": 4, "saddr4": 4})
        self.exchange(s, to_a, to_b, 1 + BEFORE, AFTER)
        # the kernel forwarded every packet sent after the offload
        pa, pb = s["a"].getsockname()[1], s["b"].getsockname()[1]
        self.assertEqual(self.kernel_counters(), {
            (pa, pb): AFTER, (pb, pa): AFTER, (pa + 1, pb + 1): AFTER, (pb + 1, pa + 1): AFTER})
        # ng counts all of them: omnirtp's own (the first ones) + the kernel's
        query = daemon.request({"command": "query", "call-id": "k1"})
        self.assertEqual(query["result"], "ok", query)
        self.assertEqual(query["totals"]["RTP"]["packets"], 2 * (BEFORE + AFTER))
        self.assertEqual(query["totals"]["RTCP"]["packets"], 2 * (BEFORE + AFTER))
        # bytes as userspace counts them (UDP payload; the kernel's counter
        # sees IP packets)
        self.assertEqual(query["totals"]["RTP"]["bytes"], 2 * (BEFORE + AFTER) * len(rtp(1)))
        # statistics split them as rtpengine does its kernel module's
        stats = daemon.request({"command": "statistics"})["statistics"]
        current, total = stats["currentstatistics"], stats["totalstatistics"]
        self.assertEqual((current["media_userspace"], current["media_kernel"],
                          current["media_mixed"]), (0, 2, 0))
        self.assertEqual((total["relayedpackets_user"], total["relayedpackets_kernel"],
                          total["relayedpackets"]), (4 * BEFORE, 4 * AFTER, 4 * (BEFORE + AFTER)))
        self.assertEqual(total["relayedbytes_kernel"], 2 * AFTER * (len(rtp(1)) + len(rtcp(1))))
        deleted = daemon.request({"command": "delete", "call-id": "k1", "from-tag": "ft"})
        self.assertEqual(deleted["result"], "ok", deleted)
        self.assertEqual(self.stream_objects(), {})
        daemon.stop()
        self.assertIsNone(self.nets.nft("list", "table", "inet", "omnirtp-0"))

    def test_same_parties_two_calls(self):
        """Two calls between the same two party sockets (one address pair
        each way): all eight streams in the kernel, each packet arriving
        once from its own call's port, each call counted exactly."""
        daemon = self.daemon()
        s, to_a1, to_b1 = self.call(daemon, "k1")
        _s, to_a2, to_b2 = self.call(daemon, "k2", s)
        self.assertNotEqual(to_a1, to_a2)
        calls = ((to_a1, to_b1), (to_a2, to_b2))
        for to_a, to_b in calls:
            self.exchange(s, to_a, to_b, 1, BEFORE)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.stream_objects() != {
                "dport4": 8, "daddr4": 8, "sport4": 8, "saddr4": 8}:
            time.sleep(0.2)
        self.assertEqual(self.stream_objects(),
                         {"dport4": 8, "daddr4": 8, "sport4": 8, "saddr4": 8})
        for to_a, to_b in calls:
            self.exchange(s, to_a, to_b, 1 + BEFORE, AFTER)
        for call_id in ("k1", "k2"):
            query = daemon.request({"command": "query", "call-id": call_id})
            self.assertEqual(query["totals"]["RTP"]["packets"], 2 * (BEFORE + AFTER))
            self.assertEqual(query["totals"]["RTCP"]["packets"], 2 * (BEFORE + AFTER))
        total = daemon.request({"command": "statistics"})["statistics"]["totalstatistics"]
        self.assertEqual((total["relayedpackets_user"], total["relayedpackets_kernel"]),
                         (8 * BEFORE, 8 * AFTER))
        for call_id in ("k1", "k2"):
            deleted = daemon.request({"command": "delete", "call-id": call_id, "from-tag": "ft"})
            self.assertEqual(deleted["result"], "ok", deleted)
        self.assertEqual(self.stream_objects(), {})

    def test_restart_after_crash(self):
        """A SIGKILL leaves the rules; the next start removes them."""
        daemon = self.daemon()
        s, to_a, to_b = self.call(daemon)
        self.exchange(s, to_a, to_b, 1, BEFORE)
        self.wait_offloaded(4)
        daemon.kill()
        self.assertEqual(len(self.kernel_counters()), 4)
        daemon = self.daemon()
        self.assertEqual(self.stream_objects(), {})

    def test_table_off_after_crash(self):
        """A SIGKILL leaves the rules; a start with ``table = -1`` deletes
        them (their process is gone) and relays in userspace."""
        daemon = self.daemon()
        s, to_a, to_b = self.call(daemon)
        self.exchange(s, to_a, to_b, 1, BEFORE)
        self.wait_offloaded(4)
        if self.threads:
            daemon.kill_all()
        else:
            daemon.kill()
        self.assertEqual(len(self.kernel_counters()), 4)
        off = NetnsDaemon(self.nets, ("--table=-1",), threads=self.threads)
        self.addCleanup(off.stop)
        off.start(wait=60.0 if self.threads else 20.0)
        self.assertEqual(self.tables(), [])
        s, to_a, to_b = self.call(off, "k2")
        self.exchange(s, to_a, to_b, 1, BEFORE)
        query = off.request({"command": "query", "call-id": "k2"})
        self.assertEqual(query["totals"]["RTP"]["packets"], 2 * BEFORE)
        self.assertEqual(self.tables(), [])

    def test_timeout(self):
        """Packets the kernel forwards keep the call alive past ``timeout``
        (its counters stand for the socket's); once both parties fall
        silent the call times out and its elements are gone."""
        daemon = self.daemon("--timeout=2")
        s, to_a, to_b = self.call(daemon)
        self.exchange(s, to_a, to_b, 1, BEFORE)
        self.wait_offloaded(4)
        pa, pb = s["a"].getsockname()[1], s["b"].getsockname()[1]
        sent = 0
        deadline = time.monotonic() + 5  # 2.5 timeouts
        while time.monotonic() < deadline:
            s["a"].sendto(rtp(100 + sent), to_a)
            s["b"].sendto(rtp(100 + sent), to_b)
            sent += 1
            time.sleep(0.2)
        counters = self.kernel_counters()
        self.assertEqual((counters[(pa, pb)], counters[(pb, pa)]), (sent, sent))
        self.assertEqual(daemon.request({"command": "query", "call-id": "k1"})["result"], "ok")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            reply = daemon.request({"command": "query", "call-id": "k1"})
            if reply["result"] != "ok":
                break
            time.sleep(0.25)
        self.assertEqual(reply, {"result": "error", "error-reason": "Unknown call-id"})
        self.assertEqual(self.stream_objects(), {})

    def test_reinvite_moves_caller(self):
        """A re-INVITE from a new caller port: the streams leave the kernel
        with the new offer, the new source is learnt in userspace, then the
        kernel forwards for the new port; nothing goes to the old one."""
        daemon = self.daemon()
        s, to_a, to_b = self.call(daemon)
        self.exchange(s, to_a, to_b, 1, BEFORE)
        self.wait_offloaded(4)
        old = s["a"]
        s["a"] = party_socket(self, self.nets.caller, CALLER)
        s["ac"] = party_socket(self, self.nets.caller, CALLER, s["a"].getsockname()[1] + 1)
        pa, pb = s["a"].getsockname()[1], s["b"].getsockname()[1]
        offer = daemon.request({"command": "offer", "call-id": "k1", "from-tag": "ft",
                                "sdp": sdp(CALLER, pa)})
        answer = daemon.request({"command": "answer", "call-id": "k1", "from-tag": "ft",
                                 "to-tag": "tt", "sdp": sdp(CALLEE, pb)})
        self.assertEqual((media_of(answer["sdp"]), media_of(offer["sdp"])), (to_a, to_b))
        self.assertEqual(self.kernel_counters(), {})  # out with the new offer
        self.exchange(s, to_a, to_b, 100, BEFORE)
        self.wait_offloaded(4)
        self.exchange(s, to_a, to_b, 200, AFTER)
        self.assertEqual(self.kernel_counters(), {
            (pa, pb): AFTER, (pb, pa): AFTER, (pa + 1, pb + 1): AFTER, (pb + 1, pa + 1): AFTER})
        self.assertEqual(receive(old, 1, timeout=0.2), [])


class WorkerKernelForwardingTests(KernelForwardingTests):
    """The same with two media worker processes (``num-threads = 2``): each
    worker forwards its calls' streams in its own table ``omnirtp-0-wK``;
    the control process deletes a killed worker's table and, at start,
    whatever a crash of the whole daemon left."""

    threads = 2
    WORKER_TABLES = ["omnirtp-0-w0", "omnirtp-0-w1"]

    def wait_ready(self):
        """Each worker made its table (ng answers before they started)."""
        deadline = time.monotonic() + 60  # a restarted worker on a loaded machine
        while time.monotonic() < deadline and self.tables() != self.WORKER_TABLES:
            time.sleep(0.1)
        self.assertEqual(self.tables(), self.WORKER_TABLES)

    def stream_objects(self, table=None):
        """``{map: elements}`` over the workers' tables (None: no table)."""
        found = None
        for name in self.tables():
            # (a table listed a moment ago may be gone: a worker ended)
            for key, count in (KernelForwardingTests.stream_objects(self, name) or {}).items():
                found = found or {}
                found[key] = found.get(key, 0) + count
            found = found or {}
        return found

    def test_offloaded_call(self):
        """As without workers; a clean stop deletes the workers' tables."""
        KernelForwardingTests.test_offloaded_call(self)
        self.assertEqual(self.tables(), [])

    def test_calls_on_both_workers(self):
        """Two calls, one per worker: both offloaded in their worker's
        table, counted exactly; a killed worker's table goes at once (its
        call is lost) and its next process starts from an empty one."""
        daemon = self.daemon()
        self.assertEqual(self.tables(), self.WORKER_TABLES)
        s1, to_a1, to_b1 = self.call(daemon, "k1")
        s2, to_a2, to_b2 = self.call(daemon, "k2")
        for s, to_a, to_b in ((s1, to_a1, to_b1), (s2, to_a2, to_b2)):
            self.exchange(s, to_a, to_b, 1, BEFORE)
        self.wait_offloaded(8)
        for name in self.WORKER_TABLES:
            self.assertEqual(KernelForwardingTests.stream_objects(self, name),
                             {"dport4": 4, "daddr4": 4, "sport4": 4, "saddr4": 4})
        for s, to_a, to_b in ((s1, to_a1, to_b1), (s2, to_a2, to_b2)):
            self.exchange(s, to_a, to_b, 1 + BEFORE, AFTER)
        expected = {}
        for s in (s1, s2):
            pa, pb = s["a"].getsockname()[1], s["b"].getsockname()[1]
            expected.update({(pa, pb): AFTER, (pb, pa): AFTER, (pa + 1, pb + 1): AFTER,
                             (pb + 1, pa + 1): AFTER})
        self.assertEqual(self.kernel_counters(), expected)
        for call_id in ("k1", "k2"):
            query = daemon.request({"command": "query", "call-id": call_id})
            self.assertEqual(query["totals"]["RTP"]["packets"], 2 * (BEFORE + AFTER))
            self.assertEqual(query["totals"]["RTCP"]["packets"], 2 * (BEFORE + AFTER))
        # the worker that holds k2 dies with its streams in the kernel
        workers = daemon.workers()
        self.assertEqual(sorted(workers), [0, 1])
        owner = self.owner_of(s2)
        self.assertNotEqual(owner, self.owner_of(s1))
        os.kill(workers[int(owner[-1])], signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.stream_objects() != {
                "dport4": 4, "daddr4": 4, "sport4": 4, "saddr4": 4}:
            time.sleep(0.1)
        self.assertEqual(KernelForwardingTests.stream_objects(self, owner) or {}, {})
        self.assertEqual(daemon.request({"command": "query", "call-id": "k2"}),
                         {"result": "error", "error-reason": "Unknown call-id"})
        # the other worker's call is still forwarded by the kernel
        self.exchange(s1, to_a1, to_b1, 100, AFTER)
        self.wait_ready()  # restarted, its table empty
        self.assertEqual(KernelForwardingTests.stream_objects(self, owner), {})
        deleted = daemon.request({"command": "delete", "call-id": "k1", "from-tag": "ft"})
        self.assertEqual(deleted["result"], "ok", deleted)
        self.assertEqual(self.stream_objects(), {})

    def owner_of(self, s):
        """The worker table that forwards what party ``a`` of ``s`` sends."""
        pa = s["a"].getsockname()[1]
        for name in self.tables():
            listed = self.nets.nft("list", "map", "inet", name, "daddr4") or []
            for item in listed:
                for elem in item.get("map", {}).get("elem", ()):
                    if elem[0]["concat"][1] == pa:
                        return name
        self.fail("no table forwards port %d" % pa)

    def test_restart_after_crash(self):
        """The daemon and its workers all killed at once leave the workers'
        tables; the next start deletes them."""
        daemon = self.daemon()
        s, to_a, to_b = self.call(daemon)
        self.exchange(s, to_a, to_b, 1, BEFORE)
        self.wait_offloaded(4)
        daemon.kill_all()
        self.assertEqual(len(self.kernel_counters()), 4)
        daemon = self.daemon()
        self.assertEqual(self.stream_objects(), {})
        self.assertEqual(self.kernel_counters(), {})
