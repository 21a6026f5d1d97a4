#!/usr/bin/env python3
"""Worker scaling: omnirtp with num-threads 0, 1 and 2 beside rtpengine 10.5
with --num-threads 1 and 2, in one run (issue 10, "workers on every core").

    .venv/bin/python bench/workers.py              # 15-20 minutes on a loaded box
    options: --kinds omnirtp0,omnirtp1,omnirtp2,rtpengine1,rtpengine2
             --rounds 5 (0: the max-calls search only)  --cpu-calls 300,800
             --seconds 4  --warmup 1.5  --idle 2  --relay-cpus 0  --no-capacity
             --capacity-cpus 0,1  --repeat 2  --bisect-steps 4  --start 400
             --max-calls 2200  --port-min 10000 --port-max 23999  --json out.json

Kinds, each a daemon that gets its calls over ng (offer + answer, plain
RTP/AVP, PCMU), one at a time, in an order that rotates from round to
round (drift on the shared box hits them alike):

  omnirtp0    this checkout under twistd, ``num-threads = 0``: control and
              media in one process (the in-process reference)
  omnirtp1    ``num-threads = 1``: a control process and one media worker
  omnirtp2    ``num-threads = 2``: a control process and two media workers
  rtpengine1  Debian's rtpengine 10.5 in userspace (``--table=-1``),
              ``--num-threads=1``
  rtpengine2  the same with ``--num-threads=2``
  omnirtp1r, omnirtp2r  (not by default) omnirtp1 and omnirtp2 with the
              workers on Twisted's own reactor loop instead of the media
              poller's loop (``OMNIRTP_WORKER_LOOP=reactor``): the loop
              before docs/scaling.md's "wake-ups" change, in the same run
  omnirtp1c, omnirtp2c  (not by default) omnirtp1 and omnirtp2 with the
              media loop's coalescing delay (``--coalesce-us``, 500;
              ``OMNIRTP_WORKER_COALESCE_US``), off in the other kinds
  before0, before1, before2  (not by default) omnirtp of the checkout
              ``--before`` names, with ``num-threads`` 0, 1 and 2: a change's
              before and after in the same run
  bare1, bare2, bare2t  (not by default) bench/switchrelay.c, a bare epoll
              relay in C with no control plane (its calls given on stdin):
              one worker, two processes, two threads of one process, the
              calls divided between the workers, each with its own epoll;
              the floor under both daemons (bench/switch_relay.py)
  bare1s, bare2s  (not by default) the same relay in rtpengine's shape
              (switchrelay's MODE "shared"): every socket in one
              edge-triggered epoll, 1 or 2 threads of one process all
              waiting on it, a socket read until EAGAIN

The load is bench/relay.py's: its generator (this process, on CPU 1), 50
packets/s of 172-byte RTP per party, two parties per call (100 packets/s
in and 100 out per call).

**CPU per relayed packet** (rounds at each load of ``--cpu-calls``, relay
on ``--relay-cpus``, CPU 0 like every relay in bench/relay.py): the time on CPU of every thread
of every process of the daemon (omnirtp: the control process and each media
worker; rtpengine: all its threads), from ``/proc/PID/task/TID/schedstat``,
over a window of ``--seconds`` after ``--warmup``, divided by the packets
the generator got back.  Printed per process too.  Medians over the rounds;
the ratios 2 workers / 1 worker (goal: within 10%) and omnirtp / rtpengine
with the same number of threads.

**Spread of calls over workers**: which process holds each call's sockets,
from the socket inodes in ``/proc/PID/fd`` and ``/proc/net/udp`` (every
call's two relay ports must be in one process); each worker's share of the
calls and of the CPU, against the mean.

**Nothing crosses a process per packet**: the control process's CPU and
its I/O (``/proc/PID/io``: bytes and read/write system calls, which
include the AMP pipes to the workers) over an idle window (calls set up,
no media) and over the window with media, against the packets relayed.

**Max calls at < 0.1% loss** (bench/relay.py's ``Search`` and
``load_step``, the daemon restarted with the step's calls for every step):
here the relay may run on both CPUs (``--capacity-cpus 0,1``), the
generator stays on CPU 1.  The box has two cores and the generator needs
one of them, so two workers can only use what the generator leaves of
CPU 1: the generator's CPU share is printed beside every figure.
"""

import argparse
import json
import signal
import os
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)  # before ROOT: bench/setup.py, not the package's setup.py

import relay  # noqa: E402  (bench/relay.py)
from setup import cpu_seconds, descendants  # noqa: E402  (bench/setup.py)
# after bench/setup.py: bench/srtp.py puts the checkout in front of sys.path
from srtp import MAX_LOSS, MIN_PACE  # noqa: E402  (bench/srtp.py's rule for a usable round)

from omnirtp.control import bencode  # noqa: E402
from omnirtp.control.ng import decode_payload  # noqa: E402
from omnirtp.test.integration.peers import hold_port_range  # noqa: E402
from omnirtp.test.integration.reference import (  # noqa: E402
    TWISTD, Daemon, find_rtpengine, free_udp_port)

KINDS = ("omnirtp0", "omnirtp1", "omnirtp2", "rtpengine1", "rtpengine2")
HOST = "127.0.0.1"
IN_FLIGHT = 16  # ng requests outstanding while calls are set up


def threads_of(kind):
    """``num-threads`` of a kind: its digit."""
    return int(kind.rstrip("rcts")[-1])


#: --coalesce-us: the media workers' coalescing delay of the kinds
#: omnirtp1c and omnirtp2c
COALESCE_US = 500


#: --before: the checkout the kinds before0, before1 and before2 run
BEFORE = None


def is_omnirtp(kind):
    """omnirtp of this checkout or of --before's."""
    return kind.startswith(("omnirtp", "before"))


def root_of(kind):
    """The checkout a kind's daemon runs from."""
    return BEFORE if kind.startswith("before") else ROOT


def environment(kind):
    """The daemon's environment: ``omnirtp1r``/``omnirtp2r`` keep the media
    workers on Twisted's own reactor loop (``OMNIRTP_WORKER_LOOP=reactor``,
    omnirtp.media.worker.use_media_loop), for a before/after in one run."""
    env = dict(os.environ, PYTHONPATH=root_of(kind))
    env.pop("OMNIRTP_WORKER_LOOP", None)
    env.pop("OMNIRTP_WORKER_COALESCE_US", None)
    if kind.startswith("omnirtp") and kind.endswith("r"):
        env["OMNIRTP_WORKER_LOOP"] = "reactor"
    if kind.startswith("omnirtp") and kind.endswith("c"):
        env["OMNIRTP_WORKER_COALESCE_US"] = str(COALESCE_US)
    return env


def command(kind, ng_port, port_min, port_max):
    """The daemon's argv (without the CPU pinning)."""
    common = ["--config-file=none", "--interface=%s" % HOST,
              "--listen-ng=%s:%d" % (HOST, ng_port), "--port-min=%d" % port_min,
              "--port-max=%d" % port_max, "--num-threads=%d" % threads_of(kind),
              "--timeout=86400", "--log-level=3"]
    if kind.startswith("rtpengine"):
        binary = find_rtpengine()
        if binary is None:
            raise SystemExit("rtpengine is not installed (Debian package rtpengine-daemon)")
        return [binary, "--foreground", "--log-stderr", "--table=-1"] + common
    return [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "omnirtp"] + common


def set_up(ng_port, parties, tag):
    """Offer + answer for each ``(a, b)`` of ``parties`` with up to
    IN_FLIGHT requests outstanding; ``[(socket A sends to, socket B sends
    to)]``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(5.0)
    server = (HOST, ng_port)
    pending = {}  # cookie -> (call, step, datagram)
    replies = [[None, None] for _ in parties]
    seq = [0]

    def send(i, step):
        a, b = parties[i]
        msg = {"command": ("offer", "answer")[step], "call-id": "%s-%d" % (tag, i),
               "from-tag": "a%d" % i, "sdp": relay.sdp(a if step == 0 else b, i)}
        if step:
            msg["to-tag"] = "b%d" % i
        seq[0] += 1
        cookie = b"w%d" % seq[0]
        datagram = cookie + b" " + bencode.encode(msg)
        pending[cookie] = (i, step, datagram)
        sock.sendto(datagram, server)

    try:
        started = done = 0
        while done < len(parties):
            while started < len(parties) and len(pending) < IN_FLIGHT:
                send(started, 0)
                started += 1
            try:
                data = sock.recv(65536)
            except socket.timeout:
                for _, _, datagram in pending.values():  # same cookie: a resend
                    sock.sendto(datagram, server)
                continue
            cookie, _, body = data.partition(b" ")
            if cookie not in pending:
                continue
            i, step, _ = pending.pop(cookie)
            reply = decode_payload(body)[0]
            if reply.get("result") != "ok":
                raise RuntimeError("ng %s of call %d: %r" % (("offer", "answer")[step], i, reply))
            replies[i][step] = reply
            if step == 0:
                send(i, 1)
            else:
                done += 1
    finally:
        sock.close()
    # the answer goes to A: it names the socket A sends to
    return [(relay.sdp_media(answer), relay.sdp_media(offer)) for offer, answer in replies]


class Relay:
    """A daemon of ``kind`` on ``cpus`` with one call per ``(a, b)`` of
    ``parties``: the ``relay`` objects bench/relay.py's load_step takes."""

    def __init__(self, kind, parties, cpus, port_range):
        self.kind = kind
        ng_port = free_udp_port()
        argv = ["taskset", "-c", cpus] + command(kind, ng_port, *port_range)
        env = environment(kind)
        self.daemon = Daemon(argv, ng_port, cwd=root_of(kind), env=env, name=kind).start(wait=60)
        self.pid = self.daemon.process.pid
        try:
            if threads_of(kind) and is_omnirtp(kind):
                self._wait_for_workers(threads_of(kind))
            self.sockets = set_up(ng_port, parties, "w%d" % os.getpid())
        except BaseException:
            self.stop()
            raise

    def _wait_for_workers(self, n, wait=60.0):
        deadline = time.monotonic() + wait
        while len(self.pids()) < n + 1:
            if time.monotonic() > deadline:
                raise RuntimeError("%s: %d media workers did not start" % (self.kind, n))
            time.sleep(0.1)

    def pids(self):
        """The control process first, then its media workers (for rtpengine:
        its one process)."""
        return descendants(self.pid)

    def stop(self):
        self.daemon.stop()


class BareRelay:
    """bench/switchrelay.c on ``cpus``, ``parties``' calls on the ports from
    ``port_range[0]`` up (kinds bare1, bare2, bare2t, bare1s, bare2s)."""

    def __init__(self, kind, parties, cpus, port_range):
        import switch_relay  # bench/switch_relay.py
        self.kind = kind
        mode = {"t": "threads", "s": "shared"}.get(kind[-1], "procs")
        base = port_range[0]
        party_host = parties[0][0][0] if parties else HOST
        self.process = subprocess.Popen(
            ["taskset", "-c", cpus, switch_relay.build(), mode, str(threads_of(kind)), HOST,
             str(base), party_host], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True)
        self.process.stdin.write("".join("%d %d\n" % (a[1], b[1]) for a, b in parties))
        self.process.stdin.close()
        line = self.process.stdout.readline().split()
        if not line or line[0] != "ready":
            self.stop()
            raise RuntimeError("%s did not start: %r" % (kind, line))
        self.pid = int(line[1])
        self.sockets = [((HOST, base + 2 * i), (HOST, base + 2 * i + 1))
                        for i in range(len(parties))]

    def pids(self):
        return descendants(self.pid)

    def stop(self):
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process.stdout.close()


def make_relay(kind, parties, cpus, port_range):
    if kind.startswith("bare"):
        return BareRelay(kind, parties, cpus, port_range)
    return Relay(kind, parties, cpus, port_range)


def start_relay(cpus, port_range):
    """bench/relay.py's ``start(kind, parties)`` for load_step."""
    def start(kind, parties):
        for attempt in range(3):  # a port someone else took meanwhile on a shared box
            try:
                return make_relay(kind, parties, cpus, port_range)
            except Exception as e:
                if attempt == 2:
                    raise
                print("    (%s: retrying: %s)" % (kind, str(e).splitlines()[0][:200]), flush=True)
                time.sleep(1)
    return start


# -- what the processes hold and do ---------------------------------------------


def socket_inodes(pid):
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def port_owners(pids):
    """``{local UDP port: pid}`` of the sockets the processes ``pids`` hold
    (bench/relay.py's :func:`relay.udp_sockets`, which reads /proc/net/udp
    three times)."""
    owner_of_inode = {}
    for pid in pids:
        for inode in socket_inodes(pid):
            owner_of_inode[inode] = pid
    return {key[1]: owner_of_inode[inode] for inode, (key, _, _) in relay.udp_sockets().items()
            if inode in owner_of_inode}


def calls_per_process(pids, sockets):
    """``{pid: calls}``: the process that holds both relay ports of each
    call (a call split over two processes counts under ``"split"``)."""
    owners = port_owners(pids)
    out = dict.fromkeys(pids, 0)
    for (_, pa), (_, pb) in sockets:
        a, b = owners.get(pa), owners.get(pb)
        key = a if a == b and a is not None else "split"
        out[key] = out.get(key, 0) + 1
    return out


def process_io(pid):
    """``(bytes read, bytes written, read calls, write calls)`` of ``pid``
    (every file descriptor: the AMP pipes, ng, logs)."""
    values = {}
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            values[key] = int(value)
    return values["rchar"], values["wchar"], values["syscr"], values["syscw"]


def context_switches(pid):
    """Voluntary and involuntary context switches of every thread of ``pid``
    (a voluntary one is a sleep: in a relay, mostly an epoll_wait that had
    to wait for the next datagram)."""
    total = 0
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.endswith("ctxt_switches:" + line.partition(":")[2]):
                        total += int(line.partition(":")[2])
        except OSError:
            pass
    return total


def snapshot(pids):
    return {"t": time.perf_counter(), "g": time.process_time(),
            "cpu": {pid: cpu_seconds([pid]) for pid in pids},
            "switches": {pid: context_switches(pid) for pid in pids},
            "io": process_io(pids[0])}


def difference(before, after):
    wall = after["t"] - before["t"]
    return {
        "wall": wall,
        "cpu": {pid: after["cpu"][pid] - before["cpu"][pid] for pid in before["cpu"]},
        "switches": {pid: after["switches"][pid] - before["switches"][pid]
                     for pid in before["switches"]},
        "io": [b - a for a, b in zip(before["io"], after["io"])],
        "generator_cpu": (after["g"] - before["g"]) / wall,
    }


def cpu_round(gen, kind, calls, warmup, seconds, idle, cpus):
    """One CPU measurement of ``kind`` (relay on ``cpus``)."""
    gen.set_receive_buffer(8 << 20)
    gen.drain(0.05)
    r = make_relay(kind, gen.parties(calls), cpus, PORT_RANGE)
    try:
        pids = r.pids()
        s0 = snapshot(pids)
        time.sleep(idle)
        quiet = difference(s0, snapshot(pids))
        marks = []

        def mark(sent):
            marks.append((sent, gen.received, snapshot(pids)))
        _, _, _, _, rate = gen.run(r.sockets, warmup + seconds,
                                   marks=[(warmup, mark), (warmup + seconds, mark)])
        spread = calls_per_process(pids, r.sockets)
    finally:
        r.stop()
    (sent0, received0, s1), (sent1, received1, s2) = marks
    busy = difference(s1, s2)
    sent, received = sent1 - sent0, received1 - received0
    cpu = busy["cpu"]
    total = sum(cpu.values())
    return {
        "us_per_packet": 1e6 * total / max(received, 1),
        "per_process_us": [1e6 * cpu[pid] / max(received, 1) for pid in pids],
        "per_process_cpu": [cpu[pid] / busy["wall"] for pid in pids],
        "idle_cpu": [quiet["cpu"][pid] / quiet["wall"] for pid in pids],
        "switches_per_packet": [busy["switches"][pid] / max(received, 1) for pid in pids],
        "calls": [spread.get(pid, 0) for pid in pids],
        "split_calls": spread.get("split", 0),
        "control_cpu_idle": quiet["cpu"][pids[0]] / quiet["wall"],
        "control_cpu_busy": cpu[pids[0]] / busy["wall"],
        "control_io_idle": [x / quiet["wall"] for x in quiet["io"]],
        "control_io_busy": [x / busy["wall"] for x in busy["io"]],
        "packets_per_s": received / busy["wall"],
        "loss": 1 - received / max(sent, 1),
        "generator_cpu": busy["generator_cpu"],
        "pace": sent / busy["wall"] / rate,
    }


def worker_spread(values):
    """Largest deviation of one worker's value from the workers' mean."""
    mean = statistics.mean(values)
    return max(abs(v - mean) for v in values) / mean if mean else 0.0


PORT_RANGE = (10000, 23999)


def main(argv=None):
    global PORT_RANGE, COALESCE_US, BEFORE
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cpu-calls", default="300,800", help="loads of the CPU rounds (calls)")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--idle", type=float, default=2.0, help="idle window before the media")
    p.add_argument("--relay-cpus", default=str(relay.RELAY_CPU),
                   help="CPUs the relay may use in the CPU rounds")
    p.add_argument("--no-capacity", action="store_true")
    p.add_argument("--capacity-kinds", default="omnirtp1,omnirtp2,rtpengine1,rtpengine2")
    p.add_argument("--capacity-cpus", default="0,1", help="CPUs the relay may use in the search")
    p.add_argument("--repeat", type=int, default=2, help="bisections per kind")
    p.add_argument("--bisect-steps", type=int, default=4)
    p.add_argument("--start", type=int, default=400)
    p.add_argument("--max-calls", type=int, default=2200)
    p.add_argument("--step-seconds", type=float, default=3.0)
    p.add_argument("--step-warmup", type=float, default=1.0)
    p.add_argument("--port-min", type=int, default=PORT_RANGE[0])
    p.add_argument("--port-max", type=int, default=PORT_RANGE[1])
    p.add_argument("--coalesce-us", type=int, default=COALESCE_US,
                   help="the coalescing delay of the kinds omnirtp1c, omnirtp2c")
    p.add_argument("--before", metavar="CHECKOUT",
                   help="the checkout the kinds before0, before1 and before2 run")
    p.add_argument("--json")
    p.add_argument("--report", metavar="JSON", help="print the report of a saved run again")
    args = p.parse_args(argv)
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        for calls, results in sorted(saved["cpu"].items(), key=lambda item: int(item[0])):
            report_cpu(results, list(results), int(calls), print)
        report_capacity(saved["capacity"], print)
        return 0
    PORT_RANGE = (args.port_min, args.port_max)
    # held in the test port registry while this runs (until this process
    # ends), so that test processes on this machine keep out of the range:
    # its daemons bind it full, and a test's proxy given a block in it
    # finds every port taken ("Ran out of ports": an offer without SDP)
    hold_port_range(*PORT_RANGE)
    COALESCE_US = args.coalesce_us
    kinds = [k for k in args.kinds.split(",") if k]
    if any(k.startswith("before") for k in kinds) and not args.before:
        p.error("the kinds before0, before1, before2 need --before CHECKOUT")
    BEFORE = args.before and os.path.abspath(args.before)
    if os.cpu_count() < 2:
        sys.exit("needs 2 CPUs (relay on CPU 0, generator on CPU 1)")
    os.sched_setaffinity(0, {relay.GENERATOR_CPU})
    # omnirtp0 with 2200 calls holds about 8 sockets a call, the generator 64
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def log(msg):
        print(msg, flush=True)

    t_start = time.time()
    log("bench/workers.py: %s, %d cores, load average %s at the start" % (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count(),
        " ".join("%.1f" % x for x in os.getloadavg())))
    gen = relay.Generator()
    loads = [int(n) for n in args.cpu_calls.split(",") if n]
    results = {calls: {kind: {"rounds": []} for kind in kinds} for calls in loads}
    try:
        log("CPU per relayed packet at %s calls (x 100 packets/s in), relay on CPUs %s, generator "
            "on CPU %d; %d rounds, kinds rotating" % (
                " and ".join(str(n) for n in loads), args.relay_cpus, relay.GENERATOR_CPU,
                args.rounds))
        for i in range(args.rounds):
            for calls in loads:
                log("  round %d, %d calls (load average %.1f)" % (
                    i + 1, calls, os.getloadavg()[0]))
                for kind in relay.rotated(kinds, i):
                    r = cpu_round(gen, kind, calls, args.warmup, args.seconds, args.idle,
                                  args.relay_cpus)
                    results[calls][kind]["rounds"].append(r)
                    log_round(kind, r, log)
        capacity = {}
        if not args.no_capacity:
            ckinds = [k for k in args.capacity_kinds.split(",") if k]
            size = relay.truesize()
            log("Max calls at < %.1f%% loss; relay on CPUs %s, generator on CPU %d; steps of "
                "%.1f s after %.1f s" % (100 * relay.LOSS_LIMIT, args.capacity_cpus,
                                         relay.GENERATOR_CPU, args.step_seconds, args.step_warmup))
            if str(relay.GENERATOR_CPU) in args.capacity_cpus.split(","):
                # a relay on the generator's CPU has datagrams in flight for
                # tens of ms after it stopped (its loopback deliveries wait
                # for that CPU): 2 ms showed 0.3-7% "loss" at 100 calls that
                # a 50 ms pause shows to be none
                relay.FREEZE_SETTLE = 0.05
            starter = start_relay(args.capacity_cpus, PORT_RANGE)
            searches = {k: relay.Search(gen, k, args.step_seconds, args.step_warmup, size, log,
                                        start=starter) for k in ckinds}
            for k in ckinds:
                searches[k].coarse(args.start, args.max_calls)
            for i in range(args.repeat):
                log("  bisection %d of %d (load average %.1f)" % (
                    i + 1, args.repeat, os.getloadavg()[0]))
                for k in relay.rotated(ckinds, i):
                    searches[k].bisect(args.bisect_steps)
            for k in ckinds:
                calls, lower = searches[k].answer()
                passing = [s for s in searches[k].steps if s["verdict"] == "pass"]
                top = max(passing, key=lambda s: s["calls"]) if passing else None
                capacity[k] = {
                    "max_calls": calls, "lower_bound": lower,
                    "samples": searches[k].results,
                    "generator_cpu": top["generator_cpu"] if top else None,
                    "relay_cpu": top["relay_cpu"] if top else None,
                    "steps": searches[k].steps,
                }
    finally:
        gen.close()
    for calls in loads:
        report_cpu(results[calls], kinds, calls, log)
    report_capacity(capacity, log)
    log("(%.0f s in all; load average %s at the end)" % (
        time.time() - t_start, " ".join("%.1f" % x for x in os.getloadavg())))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": {str(n): r for n, r in results.items()}, "capacity": capacity},
                      f, indent=1)
    return 0


def log_round(kind, r, log):
    extra = ""
    if len(r["calls"]) > 1:
        extra = ("  control %4.1f%% cpu idle / %4.1f%% with media, read %.0f/%.0f B/s"
                 "  workers: calls %s us %s" % (
                     100 * r["control_cpu_idle"], 100 * r["control_cpu_busy"],
                     r["control_io_idle"][0], r["control_io_busy"][0],
                     "/".join(str(c) for c in r["calls"][1:]),
                     "/".join("%.2f" % u for u in r["per_process_us"][1:])))
    log("    %-10s %6.2f us/packet  loss %.3f%%  pace %5.1f%%  generator cpu %3.0f%%"
        "  sleeps/packet %s%s"
        % (kind, r["us_per_packet"], 100 * r["loss"], 100 * r["pace"],
           100 * r["generator_cpu"],
           "/".join("%.3f" % x for x in r["switches_per_packet"]), extra))


def usable(r):
    """A round at the planned load: the relay kept up (|loss| <= 1%) and
    the generator its pace (>= 99%), as bench/srtp.py counts a round."""
    return abs(r["loss"]) <= MAX_LOSS and r["pace"] >= MIN_PACE


def report_cpu(results, kinds, calls, log):
    if not results[kinds[0]]["rounds"]:
        return  # --rounds 0: the capacity search only
    med = {}
    log("")
    log("%d calls (%d packets/s in): medians of the usable rounds (loss within %.0f%%, the "
        "generator at >= %.0f%% of its pace; the others in parentheses)" % (
            calls, calls * 2 * relay.PPS_PER_FLOW, 100 * MAX_LOSS, 100 * MIN_PACE))
    log("%-10s %9s %28s %8s %10s %s" % ("kind", "us/packet", "per process (control, workers)",
                                         "sleeps", "generator", "rounds"))
    for kind in kinds:
        every = results[kind]["rounds"]
        rounds = [r for r in every if usable(r)]
        shown = " ".join(("%.2f" if usable(r) else "(%.2f)") % r["us_per_packet"] for r in every)
        if not rounds:
            log("%-10s %9s   no usable round: %s" % (kind, "-", shown))
            continue
        med[kind] = statistics.median(r["us_per_packet"] for r in rounds)
        per = [statistics.median(r["per_process_us"][j] for r in rounds)
               for j in range(len(rounds[0]["per_process_us"]))]
        log("%-10s %9.2f %28s %8.3f %9.0f%% %s" % (
            kind, med[kind], " + ".join("%.2f" % u for u in per) if len(per) > 1 else "-",
            statistics.median(sum(r["switches_per_packet"]) for r in rounds),
            100 * statistics.median(r["generator_cpu"] for r in rounds), shown))
    log("(sleeps: context switches per relayed packet, all processes; a relay that sleeps "
        "less often serves more datagrams per wakeup)")

    def ratio(a, b):
        if a in med and b in med:
            log("  %-24s %.3f   (per round: %s)" % (
                "%s / %s" % (a, b), med[a] / med[b],
                " ".join("%.2f" % (x["us_per_packet"] / y["us_per_packet"])
                         if usable(x) and usable(y) else "-"
                         for x, y in zip(results[a]["rounds"], results[b]["rounds"]))))
    log("CPU per packet ratios (medians; goal for omnirtp2 / omnirtp1: <= 1.10)")
    for a, b in (("omnirtp2", "omnirtp1"), ("rtpengine2", "rtpengine1"), ("omnirtp1", "omnirtp0"),
                 ("omnirtp1", "rtpengine1"), ("omnirtp2", "rtpengine2"),
                 ("omnirtp2r", "omnirtp1r"), ("omnirtp2", "omnirtp2r"), ("omnirtp1", "omnirtp1r"),
                 ("omnirtp2c", "omnirtp1c"), ("omnirtp2c", "omnirtp1"), ("omnirtp2c", "omnirtp2"),
                 ("omnirtp1c", "omnirtp1"), ("before2", "before1"), ("omnirtp1", "before1"),
                 ("omnirtp2", "before2"), ("bare2", "bare1"), ("bare2t", "bare1"),
                 ("bare2s", "bare1"), ("bare2s", "bare1s"), ("bare1s", "bare1"),
                 ("bare2s", "bare2")):
        ratio(a, b)
    for kind in kinds:
        rounds = results[kind]["rounds"]
        if len(rounds[0]["calls"]) < 3:
            continue
        log("%s: spread over workers (largest deviation from the workers' mean, per round): "
            "calls %s; CPU %s; calls with sockets in two processes: %d" % (
                kind,
                " ".join("%.1f%%" % (100 * worker_spread(r["calls"][1:])) for r in rounds),
                " ".join("%.1f%%" % (100 * worker_spread(r["per_process_cpu"][1:])) for r in rounds),
                sum(r["split_calls"] for r in rounds)))
    for kind in kinds:
        rounds = results[kind]["rounds"]
        if len(rounds[0]["calls"]) < 2 or not is_omnirtp(kind):
            continue

        def m(key, j=None):
            return statistics.median(r[key] if j is None else r[key][j] for r in rounds)
        log("%s control process: cpu %.2f%% idle, %.2f%% with %.0f packets/s; per second idle / "
            "with media: read %.0f / %.0f B in %.1f / %.1f calls, wrote %.0f / %.0f B in "
            "%.1f / %.1f calls" % (
                kind, 100 * m("control_cpu_idle"), 100 * m("control_cpu_busy"),
                m("packets_per_s"), m("control_io_idle", 0), m("control_io_busy", 0),
                m("control_io_idle", 2), m("control_io_busy", 2), m("control_io_idle", 1),
                m("control_io_busy", 1), m("control_io_idle", 3), m("control_io_busy", 3)))


def report_capacity(capacity, log):
    if not capacity:
        return
    log("")
    log("max calls at < 0.1%% loss (median of the bisections; relay on CPUs 0-1, generator on "
        "CPU %d: the box has 2 cores and the generator needs one of them)" % relay.GENERATOR_CPU)
    for kind, c in capacity.items():
        log("  %-10s %s%d  samples %s  at the top passing step: relay cpu %s, generator cpu %s"
            % (kind, ">=" if c["lower_bound"] else "", c["max_calls"],
               " ".join("%s%d" % (">=" if lo else "", n) for n, lo in c["samples"]),
               "%.0f%%" % (100 * c["relay_cpu"]) if c["relay_cpu"] is not None else "-",
               "%.0f%%" % (100 * c["generator_cpu"]) if c["generator_cpu"] is not None else "-"))
    for a, b in (("omnirtp2", "omnirtp1"), ("rtpengine2", "rtpengine1"),
                 ("omnirtp1", "rtpengine1"), ("omnirtp2", "rtpengine2")):
        if a in capacity and b in capacity and capacity[b]["max_calls"]:
            log("  %-24s %.2f" % ("%s / %s" % (a, b),
                                  capacity[a]["max_calls"] / capacity[b]["max_calls"]))

if __name__ == "__main__":
    sys.exit(main())
