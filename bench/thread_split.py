#!/usr/bin/env python3
"""CPU and context switches per thread of bench/workers.py's kinds.

    .venv/bin/python bench/thread_split.py [--kinds bare1s,bare2s,rtpengine1,rtpengine2]
        [--calls 300] [--seconds 4] [--warmup 1.5] [--relay-cpus 0]

bench/workers.py sums every thread of a relay; this shows how its threads
share the work: each kind in turn (bench/workers.py's daemons and bare
relays, with its set-up and its generator on CPU 1), at ``--calls`` calls,
and for every thread that ran in the window of ``--seconds`` after
``--warmup``: its name, its share of a core, its CPU and its voluntary
(went to sleep) and involuntary (preempted) context switches per relayed
packet.  Threads that neither ran 1 ms nor slept 10 times are left out.
One window per kind: a look at how the work is split, not a measurement
of its cost (that is bench/workers.py's, with rounds and medians).
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)  # before the checkout: bench/setup.py, not the package's setup.py

import relay  # noqa: E402  (bench/relay.py)
import workers  # noqa: E402  (bench/workers.py)


def threads(pids):
    """``{(pid, tid): (name, CPU seconds, voluntary, involuntary)}``."""
    out = {}
    for pid in pids:
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tids:
            base = "/proc/%d/task/%s/" % (pid, tid)
            try:
                with open(base + "schedstat") as f:
                    cpu = int(f.read().split()[0]) / 1e9
                with open(base + "comm") as f:
                    name = f.read().strip()
                voluntary = involuntary = 0
                with open(base + "status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches"):
                            voluntary = int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches"):
                            involuntary = int(line.split()[1])
            except OSError:
                continue
            out[(pid, int(tid))] = (name, cpu, voluntary, involuntary)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", default="bare1s,bare2s,rtpengine1,rtpengine2")
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--relay-cpus", default=str(relay.RELAY_CPU))
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {relay.GENERATOR_CPU})
    print("%s, load average %.2f, %d calls, relay on CPUs %s, generator on CPU %d" % (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()[0], args.calls,
        args.relay_cpus, relay.GENERATOR_CPU), flush=True)
    gen = relay.Generator()
    try:
        for kind in [k for k in args.kinds.split(",") if k]:
            gen.set_receive_buffer(8 << 20)
            gen.drain(0.05)
            r = workers.make_relay(kind, gen.parties(args.calls), args.relay_cpus,
                                   workers.PORT_RANGE)
            marks = []
            try:
                pids = r.pids()

                def mark(sent):
                    marks.append((sent, gen.received, threads(pids)))
                gen.run(r.sockets, args.warmup + args.seconds,
                        marks=[(args.warmup, mark), (args.warmup + args.seconds, mark)])
            finally:
                r.stop()
            (s0, r0, before), (s1, r1, after) = marks
            packets = max(r1 - r0, 1)
            rows = []
            for key, (name, cpu, vol, invol) in sorted(after.items()):
                if key not in before:
                    continue
                _, cpu0, vol0, invol0 = before[key]
                if cpu - cpu0 < 0.001 and vol - vol0 < 10:
                    continue
                rows.append((key, name, cpu - cpu0, vol - vol0, invol - invol0))
            total = sum(row[2] for row in rows)
            print("%s: %.2f us/packet in all, %.0f packets/s, loss %.3f%%" % (
                kind, 1e6 * total / packets, packets / args.seconds,
                100 * (1 - packets / max(s1 - s0, 1))), flush=True)
            for (pid, tid), name, cpu, vol, invol in rows:
                print("  %-15s pid %-7d tid %-7d %5.1f%% of a core  %5.2f us/packet  "
                      "sleeps %.4f  preempted %.4f per packet" % (
                          name, pid, tid, 100 * cpu / args.seconds, 1e6 * cpu / packets,
                          vol / packets, invol / packets), flush=True)
    finally:
        gen.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
