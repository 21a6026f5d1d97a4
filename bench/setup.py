"""Call set-up cost: offer + answer + delete cycles, omnirtp beside rtpengine 10.5.

    .venv/bin/python bench/setup.py [--rounds 5] [--seconds 2] [--idle-calls 2000]
                                    [--kinds omnirtp0,omnirtp2,rtpengine] [--root CHECKOUT]
    .venv/bin/python bench/setup.py --long 1000000 [--kinds omnirtp0]

Every daemon runs at the same time, each on its own ng port and port range, all
pinned to CPU 0; the client (this process) runs on CPU 1.  The daemons take
turns, one phase at a time, in an order that rotates from round to round, so
drift on the shared box hits them alike:

* ``omnirtp0``: omnirtp with ``num-threads = 0`` (the engine in the control process)
* ``omnirtp2``: omnirtp with ``num-threads = 2`` (two media workers)
* ``rtpengine``: Debian's rtpengine 10.5, ``--num-threads=1 --table=-1``
* ``rtpengine2``: the same with ``--num-threads=2`` (not run unless ``--kinds``
  names it): the reference for ``omnirtp2``
* ``before0``, ``before2``: omnirtp of the checkout ``--before`` names, with
  ``num-threads`` 0 and 2 (only when ``--kinds`` names them): a change's
  before and after in the same run

All get ``delete-delay = 0`` (a deleted call frees its ports at once) and log
level 6.  One *cycle* is (default, ``--call webrtc``) the seed's Kamailio 5.6 flag strings, a SIP phone
calling a browser (``kamailio_sip_calls_browser`` in omnirtp/test/corpus.py):
an offer (``replace-origin replace-session-connection ICE=force RTP/AVP
RTP/SAVPF``), the browser's answer (``... ICE=remove RTP/SAVPF RTP/AVP``), and
a delete, each with a new call-id.  ``--call plain`` is a SIP-to-SIP call
with ``replace-origin replace-session-connection`` both ways (SIP_OFFER,
SIP_ANSWER).  A reply must be ``result: ok``; anything
else is counted and printed.

Per daemon and phase it measures:

* **cycles/s sequential**: one request outstanding at a time;
* **cycles/s with 8 outstanding**: eight calls in flight, each sending its next
  request when the previous reply arrives;
* **CPU per cycle**: the time on CPU of every thread of the daemon and of its
  child processes (the media workers), from ``/proc/PID/task/TID/schedstat``,
  over the 8-outstanding phase, divided by the cycles;
* **p50 / p99 latency** of single requests, sequential phase;
* **KB per idle call**: after all rounds, ``--idle-calls`` calls get an offer and an
  answer and stay; the growth of the summed RSS of the daemon's processes,
  divided by the calls.  Then they are deleted.

The table gives the median of the rounds and each figure's ratio to rtpengine's
(for rates: omnirtp / rtpengine, higher is better; for CPU and latency also
omnirtp / rtpengine, lower is better).

``--long N`` runs N cycles with 8 outstanding on each daemon of ``--kinds`` (one
after the other) and prints the rate and RSS of every tenth part: is it flat?

``--idle-only N`` only puts N idle calls (offer and answer, then nothing) on
each daemon of ``--kinds`` in turn: a plain call holds 4 media ports, so the
calls are spread over media interfaces ``i0``, ``i1``, ... on 127.0.x.y
(each with ports 20000-59999, at most 9000 calls each; the calls name
theirs with ``direction``), the daemon runs with as many open files as the
hard limit allows (omnirtp raises its own soft limit, as rtpengine does)
and no media timeout.  It prints RSS per call, the open files of each
process, the daemon's CPU while the calls are held (the timeout sweep), and
the RSS and open files after they are deleted.  With ``--idle-only`` the
kinds may name any number of media workers: ``omnirtp24`` is omnirtp with
``num-threads = 24`` (each process has its own open files limit: 100k idle
calls need 400k sockets).  ``make bench-idle`` runs 100k (not part of
``make test``).
"""

import argparse
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from omnirtp.control import bencode  # noqa: E402
from omnirtp.test.corpus import (  # noqa: E402
    KAMAILIO_SIP_TO_BROWSER, SIP_ANSWER, SIP_OFFER, WEBRTC_ANSWER)
from omnirtp.test.integration.reference import (  # noqa: E402
    TWISTD, Daemon, find_rtpengine, free_udp_port)
from omnirtp.test.kamailio import kamailio_dict  # noqa: E402

HOST = "127.0.0.1"
KINDS = ("omnirtp0", "omnirtp2", "rtpengine", "rtpengine2", "before0", "before2")
#: --idle-only also takes omnirtpN / beforeN: num-threads N
IDLE_KIND = re.compile(r"^(omnirtp|before)\d+$")
#: the kinds run unless --kinds says otherwise
DEFAULT_KINDS = ("omnirtp0", "omnirtp2", "rtpengine")
#: media port ranges (10 000 ports each; --idle-calls takes 4 per call)
RANGES = {"omnirtp0": (20000, 29999), "omnirtp2": (30000, 39999),
          "rtpengine": (40000, 49999), "rtpengine2": (10000, 19999),
          "before0": (50000, 54999), "before2": (55000, 59999)}
OUTSTANDING = 8
#: --idle-only: each interface's ports; the daemon's open files limit (soft:
#: up to the hard limit a process may raise its own, and no further)
IDLE_RANGE = (20000, 59999)
IDLE_FILES = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
#: --idle-only: plain calls per interface (4 ports each, some ports taken by others)
IDLE_PER_INTERFACE = 9000
CALL_ID = b"bench-%010d"


# -- requests -----------------------------------------------------------------

def _template(message):
    """The bencoded ``message`` split around its call-id (fixed width)."""
    marker = CALL_ID % 0
    body = bencode.encode(message)
    head, sep, tail = body.partition(b"%d:%s" % (len(marker), marker))
    assert sep and marker not in tail, "call-id must occur once"
    return head + b"%d:" % len(marker), tail


#: --call: the flag strings and SDP of the offer and the answer
CALLS = {
    # the seed's Kamailio 5.6 flags: a SIP phone calls a browser
    "webrtc": (KAMAILIO_SIP_TO_BROWSER[0], SIP_OFFER, KAMAILIO_SIP_TO_BROWSER[1], WEBRTC_ANSWER),
    # SIP to SIP, plain RTP both ways
    "plain": ("replace-origin replace-session-connection", SIP_OFFER,
              "replace-origin replace-session-connection", SIP_ANSWER),
}


def templates(call="webrtc", extra=""):
    """(offer, answer, delete) templates of one cycle (``extra``: more flags
    for the offer and the answer)."""
    offer_flags, offer_sdp, answer_flags, answer_sdp = CALLS[call]
    offer_flags = (offer_flags + " " + extra).strip()
    answer_flags = (answer_flags + " " + extra).strip()
    cid = (CALL_ID % 0).decode()
    offer = kamailio_dict(offer_flags, "offer", cid, "ft1", sdp=offer_sdp,
                          received_from="192.0.2.10")
    answer = kamailio_dict(answer_flags, "answer", cid, "ft1", "tt1",
                           sdp=answer_sdp, received_from="198.51.100.20")
    delete = kamailio_dict("", "delete", cid, "ft1", received_from="192.0.2.10")
    return [_template(m) for m in (offer, answer, delete)]


class Client:
    """A UDP ng client driving cycles; cookies say which slot a reply is for.

    Every client of a run numbers its cookies from its own start (the
    daemon's reply cache is keyed by cookie alone, as rtpengine's is: two
    clients that both sent cookie ``1_0`` within a minute would get each
    other's cached replies)."""

    made = 0

    def __init__(self, port, call="webrtc", extra=""):
        self.server = (HOST, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(1.0)
        self.templates = templates(call, extra)
        self.next_call = 0
        Client.made += 1
        self.seq = Client.made * 10 ** 9
        self.errors = []
        #: replies not ok per step (0 offer, 1 answer, 2 delete)
        self.failed = [0, 0, 0]

    def close(self):
        self.sock.close()

    def _datagram(self, slot, step, call):
        self.seq += 1
        head, tail = self.templates[step]
        return b"%d_%d %s%s%s" % (self.seq, slot, head, CALL_ID % call, tail)

    def _check(self, reply, step=0):
        body = reply.partition(b" ")[2]
        if b"6:result2:ok" in body:
            return
        self.failed[step] += 1
        if len(self.errors) < 5:
            self.errors.append(body[:200])
        else:
            self.errors.append(None)

    def run(self, seconds, outstanding, steps=(0, 1, 2), max_cycles=None, latencies=None,
            on_cycle=None):
        """Run cycles for ``seconds`` (or ``max_cycles``); return the cycles done."""
        sock = self.sock
        server = self.server
        now = time.perf_counter
        slots = []   # per slot: [step index, call, datagram, sent at]
        done = 0
        started = 0
        end = now() + seconds
        for slot in range(outstanding):
            call = self.next_call
            self.next_call += 1
            started += 1
            dgram = self._datagram(slot, steps[0], call)
            slots.append([0, call, dgram, now()])
            sock.sendto(dgram, server)
        active = outstanding
        while active:
            try:
                reply = sock.recv(65536)
            except socket.timeout:  # resend what is outstanding (same cookie)
                for s in slots:
                    if s is not None:
                        sock.sendto(s[2], server)
                continue
            t = now()
            cookie = reply[:reply.index(b" ")]
            slot = int(cookie[cookie.index(b"_") + 1:])
            s = slots[slot]
            if (s is None or not reply.startswith(s[2][:len(cookie) + 1])
                    or b"6:result4:pong" in reply):
                continue  # a late duplicate (or the late reply to the start's ping)
            if latencies is not None:
                latencies.append(t - s[3])
            self._check(reply, steps[s[0]])
            s[0] += 1
            if s[0] == len(steps):
                done += 1
                if on_cycle is not None:
                    on_cycle(done)
                if t >= end or (max_cycles is not None and started >= max_cycles):
                    slots[slot] = None
                    active -= 1
                    continue
                s[0] = 0
                s[1] = self.next_call
                self.next_call += 1
                started += 1
            s[2] = self._datagram(slot, steps[s[0]], s[1])
            s[3] = now()
            sock.sendto(s[2], server)
        return done


# -- processes ----------------------------------------------------------------

def descendants(pid):
    """``pid`` and all its descendant processes."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _task_files(pids, name):
    """The text of ``/proc/PID/task/TID/<name>`` of every thread of
    ``pids`` (threads gone meanwhile are skipped)."""
    for pid in pids:
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/%s" % (pid, tid, name)) as f:
                    yield f.read()
            except OSError:
                pass


def cpu_seconds(pids):
    """Time on CPU of every thread of ``pids`` (schedstat, ns -> s)."""
    return sum(int(text.split()[0]) for text in _task_files(pids, "schedstat")) / 1e9


def user_system_seconds(pids):
    """User and system time of every thread of ``pids`` (``/proc/.../stat``
    utime and stime: clock ticks, 10 ms each; over a round's seconds of CPU
    about 1% of the total)."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for text in _task_files(pids, "stat"):
        fields = text.rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    return user / tick, system / tick


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def start(kind, root, ng_port, before=None, interfaces=None, sample=None):
    """Start daemon ``kind``; ``interfaces``: ``[(name, address)]`` media
    interfaces with ports 20000-59999 each and no media timeout (--idle-only),
    instead of 127.0.0.1 and the kind's range of RANGES."""
    lo, hi = RANGES.get(kind, IDLE_RANGE)
    iface_args = ["--interface=%s" % HOST]
    if interfaces:
        lo, hi = IDLE_RANGE
        iface_args = ["--interface=%s/%s" % pair for pair in interfaces] + [
            "--timeout=86400", "--silent-timeout=86400"]
    if kind.startswith("rtpengine"):
        threads = int(kind[len("rtpengine"):] or 1)
        binary = find_rtpengine()
        if binary is None:
            raise SystemExit("rtpengine is not installed (Debian package rtpengine-daemon)")
        argv = [binary, "--foreground", "--log-stderr", "--table=-1", "--config-file=none",
                "--listen-ng=%s:%d" % (HOST, ng_port)] + iface_args + [
                "--port-min=%d" % lo, "--port-max=%d" % hi, "--log-level=6",
                "--num-threads=%d" % threads, "--delete-delay=0"]
        env, cwd = None, None
    else:
        threads = int(re.sub(r"^[a-z]+", "", kind))
        if kind.startswith("before"):
            root = before
        env = dict(os.environ)
        env["PYTHONPATH"] = root
        if sample:  # bench/sample/sitecustomize.py: a SIGPROF sampler
            env["PYTHONPATH"] += os.pathsep + os.path.join(ROOT, "bench", "sample")
            env["OMNIRTP_SAMPLE"] = "%s-%s" % (sample, kind)
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "omnirtp",
                "--config-file=none", "--listen-ng=%s:%d" % (HOST, ng_port)] + iface_args + [
                "--port-min=%d" % lo, "--port-max=%d" % hi,
                "--num-threads=%d" % threads, "--delete-delay=0", "--log-level=6"]
        cwd = root
    argv = ["taskset", "-c", "0"] + argv
    if interfaces:  # 8 sockets per call (4 media sockets, 4 companions)
        argv = ["prlimit", "--nofile=%d" % (IDLE_FILES,)] + argv
    # ports=: held in the test port registry while it runs, so that test
    # processes on this machine keep out of the range (peers.free_port_range)
    daemon = Daemon(argv, ng_port, cwd=cwd, env=env, name=kind, ports=(lo, hi)).start(wait=30)
    return daemon


# -- the benchmark --------------------------------------------------------------

def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(kind, daemon, client, seconds, results, sample=None):
    pids = descendants(daemon.process.pid)
    switch = "%s-%s.on" % (sample, kind) if sample and not kind.startswith("rtpengine") else None
    lat = []
    client.run(0.2, 1)  # warm-up
    t0 = time.perf_counter()
    n = client.run(seconds, 1, latencies=lat)
    seq_rate = n / (time.perf_counter() - t0)
    client.run(0.2, OUTSTANDING)
    if switch:
        open(switch, "w").close()
    each = [cpu_seconds([pid]) for pid in pids]
    u0, s0 = user_system_seconds(pids)
    c0 = cpu_seconds(pids)
    t0 = time.perf_counter()
    n = client.run(seconds, OUTSTANDING)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(pids) - c0
    u1, s1 = user_system_seconds(pids)
    if switch:
        each = [cpu_seconds([pid]) - c for pid, c in zip(pids, each)]
        os.unlink(switch)
        client.run(1, 1)  # a tick in each process: the sampler writes its file
        print("  %-10s sampled: %s" % (kind, ", ".join(
            "pid %d %.0f us/cycle" % (pid, c / n * 1e6) for pid, c in zip(pids, each))))
    r = results.setdefault(kind, {"seq": [], "par": [], "cpu": [], "p50": [], "p99": [],
                                  "user": [], "system": []})
    r["seq"].append(seq_rate)
    r["par"].append(n / elapsed)
    r["cpu"].append(cpu / n * 1e6)
    r["user"].append((u1 - u0) / n * 1e6)
    r["system"].append((s1 - s0) / n * 1e6)
    r["p50"].append(pct(lat, 0.5) * 1e3)
    r["p99"].append(pct(lat, 0.99) * 1e3)
    print("  %-10s seq %7.0f/s  8 out %7.0f/s  cpu %6.0f us/cycle (user %.0f + system %.0f)"
          "  p50 %.3f ms  p99 %.3f ms"
          % (kind, seq_rate, n / elapsed, cpu / n * 1e6, r["user"][-1], r["system"][-1],
             pct(lat, 0.5) * 1e3, pct(lat, 0.99) * 1e3), flush=True)


def idle_memory(kind, daemon, client, calls):
    """KB of RSS per call that got an offer and an answer and stays."""
    pids = descendants(daemon.process.pid)
    time.sleep(0.5)
    before = rss_kb(pids)
    first = client.next_call
    client.run(3600, OUTSTANDING, steps=(0, 1), max_cycles=calls)
    time.sleep(0.5)
    after = rss_kb(pids)
    # delete them again
    last = client.next_call
    for call in range(first, last):
        client.seq += 1
        head, tail = client.templates[2]
        client.sock.sendto(b"%d_0 %s%s%s" % (client.seq, head, CALL_ID % call, tail),
                           client.server)
        try:
            client.sock.recv(65536)
        except socket.timeout:
            pass
    return (after - before) / (last - first), before, after


#: (a, b): the median over rounds of a's CPU per cycle over b's, same round
CPU_PAIRS = (("omnirtp0", "rtpengine"), ("omnirtp2", "rtpengine2"), ("omnirtp2", "omnirtp0"),
             ("omnirtp2", "rtpengine"), ("rtpengine2", "rtpengine"), ("omnirtp0", "before0"),
             ("omnirtp2", "before2"), ("before0", "rtpengine"), ("before2", "rtpengine2"),
             ("before2", "before0"))


def table(results, memory):
    ref = results.get("rtpengine") or results.get("rtpengine2")
    print()
    print("median of %d rounds" % len(next(iter(results.values()))["seq"]))
    head = ("daemon", "cycles/s seq", "x", "cycles/s 8 out", "x", "CPU us/cycle", "x",
            "p50 ms", "x", "p99 ms", "x", "KB/idle call")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for kind, r in results.items():
        row = [kind]
        for key, fmt in (("seq", "%.0f"), ("par", "%.0f"), ("cpu", "%.0f"),
                         ("p50", "%.3f"), ("p99", "%.3f")):
            m = statistics.median(r[key])
            row.append(fmt % m)
            row.append("%.2f" % (m / statistics.median(ref[key])) if ref else "")
        row.append("%.1f" % memory[kind] if kind in memory else "")
        print("| " + " | ".join(row) + " |")
    print()
    for kind, r in results.items():
        if r.get("user"):
            print("CPU per cycle of %s: user %.0f + system %.0f us (medians; /proc stat ticks)"
                  % (kind, statistics.median(r["user"]), statistics.median(r["system"])))
    for a, b in CPU_PAIRS:
        if a in results and b in results:
            ratios = [x / y for x, y in zip(results[a]["cpu"], results[b]["cpu"])]
            print("CPU per cycle %s / %s: median %.2f of the rounds' ratios (%s)"
                  % (a, b, statistics.median(ratios), " ".join("%.2f" % r for r in ratios)))


def open_files(pids):
    """Open files of each of ``pids`` (gone: 0)."""
    out = []
    for pid in pids:
        try:
            out.append(len(os.listdir("/proc/%d/fd" % pid)))
        except OSError:
            out.append(0)
    return out


def idle_only(kind, daemon, port, calls, interfaces, call, hold=10):
    """--idle-only: ``calls`` calls get an offer and an answer and stay,
    spread over ``interfaces`` (one client each, its calls' ``direction``
    naming it); prints the RSS growth per call held, the open files, the
    daemon's CPU while they are held (``hold`` seconds: no requests, no
    media, the timeout sweep), then deletes them and prints the RSS and
    open files after."""
    pids = descendants(daemon.process.pid)
    clients = []
    for k, (name, _address) in enumerate(interfaces):
        c = Client(port, call, "direction=%s direction=%s" % (name, name))
        c.next_call = c.first_call = k * 10 ** 8
        clients.append(c)
    time.sleep(1)
    before = rss_kb(pids)
    files_before = open_files(pids)
    t0 = time.perf_counter()
    left = calls
    for k, c in enumerate(clients):
        n = min(left, -(-calls // len(clients)))
        c.run(10 ** 9, OUTSTANDING, steps=(0, 1), max_cycles=n)
        left -= n
        print("  %-10s %7d calls up (%s)  RSS %d KB  %.0f s" % (
            kind, calls - left, interfaces[k][0], rss_kb(pids), time.perf_counter() - t0),
            flush=True)
    made = time.perf_counter() - t0
    time.sleep(2)
    after = rss_kb(pids)
    files = open_files(pids)
    c0 = cpu_seconds(pids)
    c0_control = cpu_seconds(pids[:1])
    time.sleep(hold)
    idle_cpu = (cpu_seconds(pids) - c0) / hold
    idle_control = (cpu_seconds(pids[:1]) - c0_control) / hold
    errors = sum(len(c.errors) for c in clients)
    held = calls - sum(c.failed[0] for c in clients)  # an offer that was ok holds ports
    scans = scan_requests(port)
    print("  %-10s (%s) %d calls offered in %.0f s (%.0f offer+answer/s), %d held: RSS %d -> %d KB, "
          "%.2f KB per call held; open files %d (%d processes, the most in one %d); "
          "CPU while idle %.2f%% of a core (control process %.2f%%); %d replies not ok%s"
          % (kind, time.strftime("%H:%M:%S UTC", time.gmtime()), calls, made, calls / made, held, before, after,
             (after - before) / max(1, held), sum(files), len(pids), max(files),
             100 * idle_cpu, 100 * idle_control, errors,
             (" e.g. %r" % (next(e for c in clients for e in c.errors),)) if errors else ""),
          flush=True)
    print("  %-10s while held, one request each (ms, median of 3; what holds the control "
          "process's reactor): %s" % (kind, ", ".join("%s %.1f" % kv for kv in scans)), flush=True)
    t0 = time.perf_counter()
    for c in clients:
        n = c.next_call - c.first_call
        c.next_call = c.first_call
        if n:
            c.run(10 ** 9, OUTSTANDING, steps=(2,), max_cycles=n)
    deleted = time.perf_counter() - t0
    time.sleep(2)
    left = open_files(pids)
    print("  %-10s deleted in %.0f s: RSS %d KB (%d before the calls), open files %d (%d "
          "before); replies not ok: %d offers, %d answers, %d deletes"
          % (kind, deleted, rss_kb(pids), before, sum(left), sum(files_before),
             *(sum(c.failed[step] for c in clients) for step in range(3))), flush=True)
    grown = [(pid, a, b) for pid, a, b in zip(pids, files_before, left) if b > a + 8]
    if grown:
        print("  %-10s processes holding files after the deletes: %s" % (kind, ", ".join(
            "pid %d %d -> %d" % g for g in grown)), flush=True)
    log_summary(kind, daemon)
    for c in clients:
        c.close()


def scan_requests(port):
    """``[(command, ms)]``: the reply time of the ng requests whose work
    grows with the calls held (``statistics`` counts every call's media and
    every socket's packets; ``list`` names up to 1000 calls), median of 3 each;
    a ``ping`` for the round trip alone."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(30)
    out = []
    try:
        for n, request in enumerate(({"command": "ping"}, {"command": "statistics"},
                                     {"command": "list", "limit": 1000})):
            times = []
            for k in range(3):
                cookie = b"scan%d_%d_%d" % (os.getpid(), n, k)
                t0 = time.perf_counter()
                sock.sendto(cookie + b" " + bencode.encode(request), (HOST, port))
                while not sock.recv(1 << 22).startswith(cookie + b" "):
                    pass
                times.append((time.perf_counter() - t0) * 1e3)
            out.append((request["command"], statistics.median(times)))
    finally:
        sock.close()
    return out


def log_summary(kind, daemon):
    """The daemon's warnings and errors (its log is removed when it stops):
    how many, and the first few."""
    try:
        with open(daemon.stderr_path, errors="replace") as f:
            lines = f.readlines()
    except (OSError, TypeError):
        return
    bad = [ln.rstrip() for ln in lines
           if any(w in ln for w in ("WARN", "ERR", "CRIT", "Traceback", "warn]", "error]"))]
    print("  %-10s log: %d lines, %d warnings/errors%s" % (
        kind, len(lines), len(bad), "".join("\n      " + ln[:300] for ln in bad[:6])),
        flush=True)


def long_run(kind, daemon, client, cycles):
    pids = descendants(daemon.process.pid)
    part = max(1, cycles // 10)
    marks = [(time.perf_counter(), rss_kb(pids), cpu_seconds(pids))]

    def on_cycle(done):
        if done % part == 0:
            marks.append((time.perf_counter(), rss_kb(pids), cpu_seconds(pids)))
            t, rss, cpu = marks[-1]
            t0, _, cpu0 = marks[-2]
            print("  %-10s %8d cycles  %7.0f cycles/s  cpu %5.0f us/cycle  RSS %7d KB"
                  % (kind, done, part / (t - t0), (cpu - cpu0) / part * 1e6, rss), flush=True)

    client.run(10 ** 9, OUTSTANDING, max_cycles=cycles, on_cycle=on_cycle)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--idle-calls", type=int, default=2000)
    p.add_argument("--kinds", default=",".join(DEFAULT_KINDS),
                   help="of %s" % ",".join(KINDS))
    p.add_argument("--root", default=ROOT, help="the omnirtp checkout to run (default: this one)")
    p.add_argument("--before", metavar="CHECKOUT",
                   help="the checkout the kinds before0 and before2 run (omnirtp with "
                        "num-threads 0 and 2): before/after in the same run")
    p.add_argument("--long", type=int, default=0, metavar="N")
    p.add_argument("--idle-only", type=int, default=0, metavar="N",
                   help="only this: N idle calls on each daemon, spread over enough media "
                        "interfaces (127.0.x.y, ports 20000-59999 each)")
    p.add_argument("--idle-rounds", type=int, default=1, metavar="N",
                   help="--idle-only: set up, hold and delete the calls N times on the "
                        "same daemon (does a second round reuse the memory of the first?)")
    p.add_argument("--idle-hold", type=float, default=10, metavar="SECONDS",
                   help="--idle-only: how long the daemon's CPU is measured while the "
                        "calls are held (default 10)")
    p.add_argument("--call", choices=sorted(CALLS), default="webrtc",
                   help="webrtc (default): the seed's flags, SIP phone calls a browser; "
                        "plain: SIP to SIP, plain RTP")
    p.add_argument("--json", help="also write the results (medians, KB per idle call) here")
    p.add_argument("--sample", metavar="PREFIX",
                   help="sample the omnirtp daemons' stacks in the 8-outstanding phases "
                        "(bench/sample/sitecustomize.py): PREFIX-KIND.PID.txt per process, "
                        "read by bench/sample_report.py")
    args = p.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    for k in kinds:
        if k not in KINDS and not (args.idle_only and IDLE_KIND.match(k)):
            p.error("unknown kind %r" % (k,))
        if k.startswith("before") and not args.before:
            p.error("kind %s needs --before CHECKOUT" % (k,))
    os.sched_setaffinity(0, {1})
    daemons, clients = {}, {}
    if args.idle_only:
        count = -(-args.idle_only // IDLE_PER_INTERFACE)
        interfaces = {kind: [("i%d" % k, "127.0.%d.%d" % (100 + n, 1 + k)) for k in range(count)]
                      for n, kind in enumerate(kinds)}
    try:
        for kind in kinds:
            port = free_udp_port()
            if args.idle_only:
                daemons[kind] = start(kind, os.path.abspath(args.root), port,
                                      args.before and os.path.abspath(args.before),
                                      interfaces[kind])
                for rnd in range(args.idle_rounds):
                    if rnd:
                        print("  %-10s round %d: the same calls again" % (kind, rnd + 1))
                    idle_only(kind, daemons[kind], port, args.idle_only, interfaces[kind],
                              args.call, args.idle_hold)
                daemons.pop(kind).stop()
                continue
            daemons[kind] = start(kind, os.path.abspath(args.root), port,
                                  args.before and os.path.abspath(args.before),
                                  sample=args.sample and os.path.abspath(args.sample))
            clients[kind] = Client(port, args.call)
        if args.idle_only:
            return
        try:
            commit = subprocess.run(["git", "-C", args.root, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()
        except OSError:
            commit = "?"
        print("omnirtp %s (%s), Python %s, daemons on CPU 0, client on CPU 1, %s call"
              % (commit, os.path.abspath(args.root), sys.version.split()[0], args.call),
              flush=True)
        if args.long:
            for kind in kinds:
                long_run(kind, daemons[kind], clients[kind], args.long)
            return
        results = {}
        for rnd in range(args.rounds):
            print("round %d" % (rnd + 1), flush=True)
            order = kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]
            for kind in order:
                measure(kind, daemons[kind], clients[kind], args.seconds, results,
                        args.sample and os.path.abspath(args.sample))
        results = {k: results[k] for k in kinds}
        memory = {}
        if args.idle_calls:
            for kind in kinds:
                per, before, after = idle_memory(kind, daemons[kind], clients[kind],
                                                 args.idle_calls)
                memory[kind] = per
                print("  %-10s %d idle calls: RSS %d -> %d KB, %.1f KB per call"
                      % (kind, args.idle_calls, before, after, per), flush=True)
        table(results, memory)
        if args.json:
            import json

            with open(args.json, "w") as f:
                json.dump({kind: dict({key: statistics.median(values)
                                       for key, values in results[kind].items()},
                                      kb_per_idle_call=memory.get(kind), rounds=results[kind])
                           for kind in kinds}, f, indent=1)
        for kind in kinds:
            errs = clients[kind].errors
            if errs:
                print("%s: %d replies were not ok, e.g. %r" % (kind, len(errs), errs[0]))
    finally:
        for c in clients.values():
            c.close()
        for d in daemons.values():
            d.stop()


if __name__ == "__main__":
    main()
