"""What a second relay worker costs as a process and as a thread, in C.

    .venv/bin/python bench/switch_relay.py [--calls 300] [--rounds 5] [--seconds 4]

bench/workers.py measures omnirtp's ``num-threads = 2`` (two worker
processes) at about 1.08-1.16x the CPU per relayed packet of one worker, and
rtpengine 10.5's second thread at about 1.01-1.07x (docs/scaling.md).  Now
that omnirtp's media loop runs no Python per wake-up (``_fastrelay``), is
the rest the price of a second *process* (its own address space, switched
on every wake-up) against a second *thread*?  This takes omnirtp and
rtpengine out of it: bench/switchrelay.c is the same minimal epoll relay in
three shapes (one worker; two processes; two threads of one process; the
calls divided between the workers, each with an epoll of its own), all
pinned to CPU 0 like bench/workers.py's CPU rounds, fed on CPU 1 with
``--calls`` calls of 50 packets/s each way by ``--generator``: ``python``
(default), bench/relay.py's generator, the one bench/workers.py uses (sends
what is due, then polls its 64 party sockets for up to 0.5 ms), or ``rtpgen``
(bench/rtpgen.c: a socket per party, each sending in its 1 ms slot of 20).
Two more shapes, not by default (``--shapes``), are rtpengine 10.5's own
(``--num-threads`` without ``--poller-per-thread``): ``one-shared`` and
``two-shared``, every socket in one edge-triggered epoll that 1 or 2
threads wait on, each socket read until EAGAIN (docs/scaling.md, "One
epoll for every thread").

Each round runs every shape (in a rotating order) for ``--warmup`` +
``--seconds``: CPU time of the relay's processes and threads
(``/proc/.../schedstat``) per packet that reached a party, and voluntary +
involuntary context switches per packet.  Prints per-round figures, the
medians, and the medians of each round's ratios to one worker.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import relay as relaybench  # noqa: E402  (bench/relay.py)
import rtpgen  # noqa: E402  (bench/rtpgen.py)
from setup import _task_files, cpu_seconds  # noqa: E402  (bench/setup.py)

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "switchrelay.c")
RELAY_CPU, GENERATOR_CPU = 0, 1
HOST = "127.0.0.1"
SHAPES = {"one": ("procs", 1), "two-procs": ("procs", 2), "two-threads": ("threads", 2)}
#: not by default (``--shapes``): rtpengine's shape, every socket in one
#: edge-triggered epoll that all the threads wait on (switchrelay's MODE "shared")
SHARED_SHAPES = {"one-shared": ("shared", 1), "two-shared": ("shared", 2)}


def build(directory=rtpgen.BUILD):
    binary = os.path.join(directory, "switchrelay")
    if os.path.exists(binary) and os.path.getmtime(binary) >= os.path.getmtime(SOURCE):
        return binary
    os.makedirs(directory, exist_ok=True)
    partial = "%s.%d" % (binary, os.getpid())
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", partial,
                    SOURCE], check=True)
    os.replace(partial, binary)
    return binary


def switches(pids):
    n = 0
    for text in _task_files(pids, "status"):
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                n += int(line.split()[1])
    return n


class RtpgenFeed:
    """bench/rtpgen.c's parties: a socket each."""

    def __init__(self, calls):
        self.gen = rtpgen.Generator(rtpgen.build())
        self.parties = []
        for i in range(calls):
            a = self.gen.open(2 * i, 2 * i + 1)
            b = self.gen.open(2 * i + 1, 2 * i)
            self.parties.append((a, b))
        self.host = HOST

    def measure(self, base, warmup, seconds, sample):
        """Feed the relay at ``base``; ``sample()`` before and after the
        window; the packets that reached a party in it."""
        for i, _ in enumerate(self.parties):
            self.gen.send(2 * i, base + 2 * i)
            self.gen.send(2 * i + 1, base + 2 * i + 1)
        time.sleep(warmup)
        r0, before = self.gen.stats()["received"], sample()
        time.sleep(seconds)
        after, r1 = sample(), self.gen.stats()["received"]
        for i, _ in enumerate(self.parties):
            self.gen.stop(2 * i)
            self.gen.stop(2 * i + 1)
        return before, after, r1 - r0

    def close(self):
        self.gen.kill()


class PythonFeed:
    """bench/relay.py's Generator, as bench/workers.py drives it."""

    def __init__(self, calls):
        self.gen = relaybench.Generator()
        self.parties = [(a[1], b[1]) for a, b in self.gen.parties(calls)]
        self.host = relaybench.GENERATOR_ADDRESS

    def measure(self, base, warmup, seconds, sample):
        targets = [((HOST, base + 2 * i), (HOST, base + 2 * i + 1))
                   for i, _ in enumerate(self.parties)]
        self.gen.set_receive_buffer(8 << 20)
        self.gen.run(targets, warmup)
        before = sample()
        _, received, _, _, _ = self.gen.run(targets, seconds)
        return before, sample(), received

    def close(self):
        self.gen.close()


def one_round(binary, feed, shape, base, warmup, seconds):
    mode, workers = dict(SHAPES, **SHARED_SHAPES)[shape]
    parties = feed.parties
    relay = subprocess.Popen(
        ["taskset", "-c", str(RELAY_CPU), binary, mode, str(workers), HOST, str(base),
         feed.host],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        relay.stdin.write("".join("%d %d\n" % pair for pair in parties))
        relay.stdin.close()
        line = relay.stdout.readline().split()
        if not line or line[0] != "ready":
            raise RuntimeError("switchrelay did not start: %r" % (line,))
        pids = [int(p) for p in line[1:]]

        def sample():
            return cpu_seconds(pids), switches(pids), time.monotonic()

        (c0, s0, t0), (c1, s1, t1), packets = feed.measure(base, warmup, seconds, sample)
        packets = max(packets, 1)
        return {"us": 1e6 * (c1 - c0) / packets, "switches": (s1 - s0) / packets,
                "pps": packets / (t1 - t0), "cpu": (c1 - c0) / (t1 - t0)}
    finally:
        try:
            os.killpg(relay.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        relay.wait()
        relay.stdout.close()
        time.sleep(0.3)  # the generator's last sends meet closed ports, then stop


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=4)
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--base-port", type=int, default=24000)
    p.add_argument("--shapes", default=",".join(SHAPES),
                   help="of %s" % ", ".join(list(SHAPES) + list(SHARED_SHAPES)))
    p.add_argument("--generator", choices=("python", "rtpgen"), default="python")
    args = p.parse_args(argv)
    from omnirtp.test.integration.peers import hold_port_range
    # the relay's ports, held in the test port registry while this runs:
    # test processes on this machine keep out of them (peers.free_port_range)
    hold_port_range(args.base_port, args.base_port + 2 * args.calls + 1)
    shapes = args.shapes.split(",")
    os.sched_setaffinity(0, {GENERATOR_CPU})
    binary = build()
    feed = (PythonFeed if args.generator == "python" else RtpgenFeed)(args.calls)
    try:
        print("%s UTC, load %.2f, %d calls (%d packets/s offered), relay on CPU %d, "
              "generator (%s) on CPU %d" % (
                  time.strftime("%Y-%m-%d %H:%M", time.gmtime()), os.getloadavg()[0],
                  args.calls, 100 * args.calls, RELAY_CPU, args.generator, GENERATOR_CPU))
        results = {s: [] for s in shapes}
        for r in range(args.rounds):
            order = shapes[r % len(shapes):] + shapes[:r % len(shapes)]
            for shape in order:
                res = one_round(binary, feed, shape, args.base_port, args.warmup,
                                args.seconds)
                results[shape].append(res)
                print("round %d %-12s %6.2f us/packet  %.3f switches/packet  %6.0f packets/s  "
                      "relay CPU %4.1f%%" % (r + 1, shape, res["us"], res["switches"],
                                             res["pps"], 100 * res["cpu"]), flush=True)
        print("\n| shape | us/packet | switches/packet | / one worker (median of rounds) |")
        print("|---|---|---|---|")
        for shape in shapes:
            rows = results[shape]
            ratio = ""
            if "one" in results and shape != "one":
                ratio = "%.3f (%s)" % (
                    statistics.median(x["us"] / o["us"] for x, o in zip(rows, results["one"])),
                    " ".join("%.2f" % (x["us"] / o["us"]) for x, o in zip(rows, results["one"])))
            print("| %s | %.2f | %.3f | %s |" % (
                shape, statistics.median(x["us"] for x in rows),
                statistics.median(x["switches"] for x in rows), ratio))
    finally:
        feed.close()


if __name__ == "__main__":
    main()
