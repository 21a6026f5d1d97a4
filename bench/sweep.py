"""CPU time of the call registry's once-a-second timeout sweep over N quiet calls.

    .venv/bin/python bench/sweep.py [--calls 100000] [--sweeps 10] [--root CHECKOUT]

In one process: a ``CallRegistry`` over the unit tests' in-memory engine
(``CountingEngine``: counters of 4 sockets per call, no real sockets) holds
``--calls`` answered calls, none of them near a timeout (``timeout`` and
``silent-timeout`` one day), as the daemon holds idle calls; the median CPU
time of ``--sweeps`` sweeps, a second of clock apart, is printed, with how
often the engine was asked for counters.  ``--root`` measures another
checkout's registry (before/after pairs).  The daemon's own figure (the
whole control process while the calls are held) comes from
``bench/setup.py --idle-only N``.
"""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=100000)
    p.add_argument("--sweeps", type=int, default=10)
    p.add_argument("--root", default=ROOT, help="the omnirtp checkout to measure")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.root))
    from twisted.internet.task import Clock

    from omnirtp.call.registry import CallRegistry, Timeouts
    from omnirtp.test.test_registry import CountingEngine, answered_call

    clock = Clock()
    clock.advance(1000)
    engine = CountingEngine(clock, pairs=2 * args.calls)
    registry = CallRegistry(engine, clock, Timeouts(timeout=86400, silent_timeout=86400),
                            max_sessions=-1)
    for n in range(args.calls):
        answered_call(registry, engine, "c%d" % n)
    asked = []
    engine_stats = engine.stats

    def stats(call_id=None):
        asked.append(call_id)
        return engine_stats(call_id)

    engine.stats = stats
    times = []
    for _ in range(args.sweeps):
        clock.advance(1)
        t0 = time.process_time()
        registry.sweep()
        times.append(time.process_time() - t0)
    print("%s: %d quiet calls, sweep %.1f ms CPU (median of %d; %.1f%% of a core at one a "
          "second); engine asked %d times for all calls' counters, %d times for one call's"
          % (os.path.abspath(args.root), args.calls, statistics.median(times) * 1e3, args.sweeps,
             statistics.median(times) * 100, asked.count(None),
             len(asked) - asked.count(None)))


if __name__ == "__main__":
    main()
