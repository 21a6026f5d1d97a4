"""What a media worker's wake-up costs in Python and in system calls, on this box.

    .venv/bin/python bench/wakeup_cost.py [--loops 200000] [--cpu 1]

In one process pinned to ``--cpu``, the median of 5 timed loops each of:
the epoll reactor's ``runUntilCurrent`` + ``timeout`` (what
``MediaPoller.run`` did on every wake-up before it ran the timers only
when due; two timed calls pending, none due), ``runUntilCurrent`` alone,
an empty ``epoll.poll(0)``, ``reactor.seconds()``, and a loopback UDP
``os.write`` + ``os.read`` of a 172-byte datagram (a quarter of the loops).
Figures in microseconds per call; docs/scaling.md ("Timers only when due").
"""

import argparse
import os
import select
import socket
import statistics
import time


def timed(fn, loops, rounds=5):
    runs = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn(loops)
        runs.append((time.perf_counter() - start) / loops * 1e6)
    return statistics.median(runs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loops", type=int, default=200000)
    p.add_argument("--cpu", type=int, default=1)
    args = p.parse_args(argv)
    if hasattr(os, "sched_setaffinity") and args.cpu < os.cpu_count():
        os.sched_setaffinity(0, {args.cpu})
    from twisted.internet import epollreactor
    r = epollreactor.EPollReactor()
    r.callLater(1000, lambda: None)
    r.callLater(500, lambda: None)
    run_until_current, timeout, seconds = r.runUntilCurrent, r.timeout, r.seconds
    ep = select.epoll()
    poll = ep.poll
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    b.connect(a.getsockname())
    data = b"\x80" + bytes(171)
    afd, bfd = a.fileno(), b.fileno()

    def both(n):
        for _ in range(n):
            run_until_current()
            timeout()

    def ruc(n):
        for _ in range(n):
            run_until_current()

    def empty_poll(n):
        for _ in range(n):
            poll(0, 512)

    def clock(n):
        for _ in range(n):
            seconds()

    def write_read(n):
        for _ in range(n):
            os.write(bfd, data)
            os.read(afd, 8192)

    print("runUntilCurrent + timeout  %.2f us" % timed(both, args.loops))
    print("runUntilCurrent            %.2f us" % timed(ruc, args.loops))
    print("epoll.poll(0), empty       %.2f us" % timed(empty_poll, args.loops))
    print("reactor.seconds()          %.2f us" % timed(clock, args.loops))
    print("loopback write + read      %.2f us" % timed(write_read, max(1, args.loops // 4)))
    a.close()
    b.close()
    ep.close()


if __name__ == "__main__":
    main()
