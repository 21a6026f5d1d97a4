"""One relay at one fixed load: CPU per relayed packet, user and kernel.

    .venv/bin/python bench/saturate.py engine 2300 [--seconds 4] [--syscalls]
    .venv/bin/python bench/saturate.py rtpengine 2300

Uses bench/relay.py's relays, generator and CPU placement (relay on CPU 0,
generator on CPU 1).  After a 2 s warm-up it counts, over ``--seconds``,
what the generator sent, what reached the parties (their kernel drop
counters: the generator does not read) and the relay's utime and stime
from /proc, and prints packets/s and µs per delivered packet.  Above a
relay's capacity (2300 calls on the box of bench/README.md) that is its
cost per packet when saturated.  ``--syscalls`` also counts the relay's
epoll_wait / read / write / recvmsg / sendto calls with Linux's syscall
tracepoints (``perf stat``, Debian's linux-perf), which shows how many reads
found nothing; the tracepoints cost a little CPU themselves.
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import relay as bench  # noqa: E402  (bench/relay.py)

SYSCALLS = ("epoll_wait", "read", "write", "recvmsg", "recvfrom", "sendto", "sendmsg")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=bench.KINDS)
    parser.add_argument("calls", type=int)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--syscalls", action="store_true")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {bench.GENERATOR_CPU})
    gen = bench.Generator()
    gen.set_receive_buffer(0)
    parties = gen.keys()
    relay = bench.start_relay(args.kind, gen.parties(args.calls))
    marks = {}
    perf_out = "/tmp/omnirtp-saturate-%d.perf" % os.getpid()

    def dropped():
        table = bench.udp_table(parties)
        return sum(d for _, d in (table.get(k, (0, 0)) for k in parties))

    def start(sent):
        marks["start"] = (time.perf_counter(), sent, bench.process_times(relay.pid), dropped())
        if args.syscalls:
            events = ",".join("syscalls:sys_enter_" + name for name in SYSCALLS)
            marks["perf"] = subprocess.Popen(
                ["perf", "stat", "-e", events, "-p", str(relay.pid), "-o", perf_out,
                 "--", "sleep", str(args.seconds - 0.5)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def end(sent):
        marks["end"] = (time.perf_counter(), sent, bench.process_times(relay.pid), dropped())

    try:
        gen.run(relay.sockets, 2 + args.seconds, receive=False,
                marks=[(2, start), (2 + args.seconds, end)])
    finally:
        relay.stop()
        gen.close()
    (t0, s0, (u0, k0), d0), (t1, s1, (u1, k1), d1) = marks["start"], marks["end"]
    wall, delivered = t1 - t0, max(d1 - d0, 1)
    print("%s %d calls: sent %.0f/s delivered %.0f/s  relay cpu %.2f  us/packet %.2f "
          "(user %.2f kernel %.2f)" % (
              args.kind, args.calls, (s1 - s0) / wall, delivered / wall, (u1 + k1 - u0 - k0) / wall,
              1e6 * (u1 + k1 - u0 - k0) / delivered, 1e6 * (u1 - u0) / delivered,
              1e6 * (k1 - k0) / delivered))
    if "perf" in marks:
        marks["perf"].wait()
        with open(perf_out) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[1].startswith("syscalls:"):
                    print("  %12s %s" % (fields[0], fields[1].split("sys_enter_")[1]))
        os.unlink(perf_out)


if __name__ == "__main__":
    main()
