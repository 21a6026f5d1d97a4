"""What a media worker's wake-up costs in Python and in system calls, on this box.

    .venv/bin/python bench/wakeup_cost.py [--loops 200000] [--cpu 1]

In one process pinned to ``--cpu``, the median of 5 timed loops each of:
the epoll reactor's ``runUntilCurrent`` + ``timeout`` (what
``MediaPoller.run`` did on every wake-up before it ran the timers only
when due; two timed calls pending, none due), ``runUntilCurrent`` alone,
an empty ``epoll.poll(0)``, ``reactor.seconds()``, and a loopback UDP
``os.write`` + ``os.read`` of a 172-byte datagram (a quarter of the loops).
Figures in microseconds per call; docs/scaling.md ("Timers only when due").

``--switch``: what a bare process switch costs on this box.  Two processes
pinned to ``--cpu`` pass a byte back and forth over two pipes (a round trip:
2 writes, 2 reads, 2 switches), against the same 4 system calls in one
process (no switch); half the difference is one switch with its wake-up.
(docs/scaling.md, "What a switch costs".)
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
    p.add_argument("--switch", action="store_true",
                   help="only this: the cost of a process switch (two processes, one CPU)")
    args = p.parse_args(argv)
    if hasattr(os, "sched_setaffinity") and args.cpu < os.cpu_count():
        os.sched_setaffinity(0, {args.cpu})
    if args.switch:
        return switch_cost(args.loops)
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


def switch_cost(loops):
    """Two processes on one CPU ping-pong a byte: per switch, less the
    system calls' own cost measured in one process."""
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    read, write = os.read, os.write

    def alone(n):
        for _ in range(n):
            write(a_w, b"x")
            read(a_r, 1)
            write(b_w, b"x")
            read(b_r, 1)

    def echo(n):
        for _ in range(n):
            write(b_w, read(a_r, 1))

    def ping(n):
        for _ in range(n):
            write(a_w, b"x")
            read(b_r, 1)

    syscalls = timed(alone, loops)
    runs = []
    for _ in range(5):
        pid = os.fork()
        if pid == 0:
            try:
                echo(loops)
            finally:
                os._exit(0)
        start = time.perf_counter()
        ping(loops)
        runs.append((time.perf_counter() - start) / loops * 1e6)
        os.waitpid(pid, 0)
    trip = statistics.median(runs)
    print("round trip between two processes on one CPU   %.2f us" % trip)
    print("the same 4 system calls in one process        %.2f us" % syscalls)
    print("one process switch (with its wake-up)         %.2f us" % ((trip - syscalls) / 2))
    for fd in (a_r, a_w, b_r, b_w):
        os.close(fd)


if __name__ == "__main__":
    main()
