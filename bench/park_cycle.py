#!/usr/bin/env python3
"""A parked call's part of a plain cycle, alone, in one process.

    .venv/bin/python bench/park_cycle.py [--root CHECKOUT] [--cycles N] [--rounds R]

What ``num-threads = 2`` (the lazy hand-off, docs/architecture.md) asks of
the control process's ``WorkerPool`` for one plain SIP call that carries no
media (bench/setup.py --call plain): the offer's ``allocate_configure`` of
2 port pairs (the call parked: real sockets on 127.0.0.1, ports
34000-35999, watched as the daemon watches them), the answer's
``configure`` of 4 entries, the delete's ``stats_release`` and the release
of its ports (what ``sync.after_reply`` runs after the delete's reply).
The entries are bench/engine_cycle.py's (the negotiator's keys and order),
built outside the timed steps.  The pool runs on an epoll reactor that is
never started (its readers are registered as in the daemon); its two
workers are test_pool's in-memory ``FakeProcess`` (no request reaches them
while the call is parked).  Prints each step's CPU time per cycle
(``process_time`` around it: its system calls included), the median of
``--rounds`` rounds; bench/engine_cycle.py is the embedded engine's
counterpart (``num-threads = 0``).
"""

import argparse
import gc
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = ("park", "configure", "stats_release", "release")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=os.path.dirname(HERE))
    p.add_argument("--cycles", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    sys.path.insert(0, HERE)
    sys.path.insert(0, os.path.abspath(args.root))
    from engine_cycle import entries
    from twisted.internet import epollreactor

    from omnirtp.media.amp import placeholder
    from omnirtp.media.engine import EmbeddedEngine
    from omnirtp.media.pool import WorkerPool
    from omnirtp.media.worker import parse_slice
    from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor
    from omnirtp.test.test_pool import FakeProcess

    reactor = epollreactor.EPollReactor()
    memory = MemoryUDPReactor()
    net = FakeNetwork()

    def spawnProcess(proto, executable, args=(), env={}, path=None, uid=None, gid=None,
                     usePTY=0, childFDs=None):
        args = list(args)
        slices = dict(parse_slice(a) for i, a in enumerate(args)
                      if i and args[i - 1] == "--slice")
        engine = EmbeddedEngine(memory, slices, bind=net.bind, rng=random.Random(1))
        process = FakeProcess(memory, proto, args, 1000, engine)
        proto.makeConnection(process)
        return process

    reactor.spawnProcess = spawnProcess
    pool = WorkerPool(reactor, {"127.0.0.1": (34000, 35999)}, 2, executable="python3",
                      lazy=True)
    pool.startService()
    caller, callee = ("192.0.2.10", 49170), ("198.51.100.20", 30000)
    offer = entries(placeholder(0), placeholder(1), (caller, None))
    clock = time.process_time

    def run(cycles, spent):
        for i in range(cycles):
            call_id = "c%d" % i
            t0 = clock()
            d = pool.allocate_configure(call_id, [("127.0.0.1", 2)], offer)
            t1 = clock()
            [[a, b]] = d.result
            answer = entries(a, b, (caller, callee))
            t2 = clock()
            pool.configure(call_id, answer)
            t3 = clock()
            pool.stats_release(call_id)  # (no ng request: its release runs at once)
            t4 = clock()
            pool.release(call_id)  # (nothing left)
            t5 = clock()
            spent["park"] += t1 - t0
            spent["configure"] += t3 - t2
            spent["stats_release"] += t4 - t3
            spent["release"] += t5 - t4
        if pool.parked():
            raise SystemExit("calls left parked: %r" % (sorted(pool.parked())[:5],))

    run(200, dict.fromkeys(STEPS, 0.0))
    rounds = []
    gc.collect()
    gc.disable()
    for _ in range(args.rounds):
        spent = dict.fromkeys(STEPS, 0.0)
        run(args.cycles, spent)
        rounds.append(spent)
    gc.enable()
    print("%s: %d cycles x %d rounds, us per cycle (median of the rounds)"
          % (os.path.abspath(args.root), args.cycles, args.rounds))
    total = []
    for r in rounds:
        total.append(sum(r.values()))
    for step in STEPS:
        values = sorted(r[step] / args.cycles * 1e6 for r in rounds)
        print("  %-14s %7.2f" % (step, values[len(values) // 2]))
    values = sorted(t / args.cycles * 1e6 for t in total)
    print("  %-14s %7.2f  (rounds %s)" % ("total", values[len(values) // 2],
                                          " ".join("%.1f" % v for v in values)))


if __name__ == "__main__":
    main()
