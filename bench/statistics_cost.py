"""What the control plane's walks over all calls cost: ``statistics``,
``interfaces`` and ``media_families`` (ng ``statistics``, ``/metrics``,
the CLI's ``list numsessions`` / ``list interfaces``), in one process;
and ``EmbeddedEngine.totals`` over the same calls' sockets (fake ones),
the one reading the rate sampler takes each second while someone asks for
``statistics`` (omnirtp.control.load).

    .venv/bin/python bench/statistics_cost.py [--calls 7000]

``--calls`` answered plain calls are set up on the unit tests' control
stack (``omnirtp.test.test_cli.Daemon``: a Dispatcher, registry and
Operations on a Clock over the counting engine, no sockets); each walk is
timed as the median of 5 runs of 20.  Figures in milliseconds per walk
(docs/performance.md, "Requests whose work grows with the calls").
"""

import argparse
import os
import statistics
import sys
import timeit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=7000)
    args = p.parse_args(argv)

    from twisted.trial.unittest import SynchronousTestCase

    import omnirtp.test.test_registry as test_registry
    from omnirtp.test.test_cli import Daemon

    # room for the calls: 2 port pairs each (the counting engine's default is 10 pairs)
    counting_init = test_registry.CountingEngine.__init__

    def init(self, clock, pairs=10, **kw):
        counting_init(self, clock, pairs=2 * args.calls + 2, **kw)
    test_registry.CountingEngine.__init__ = init

    class Case(SynchronousTestCase):
        def runTest(self):
            pass

    d = Daemon(Case(), port_min=20000, port_max=59999)
    for i in range(args.calls):
        d.call("c%d" % i)
    from omnirtp.media.engine import EmbeddedEngine
    from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor

    # the same calls' media in an engine: 2 port pairs (4 sockets) each
    engine = EmbeddedEngine(MemoryUDPReactor(), {"127.0.0.1": (2000, 2000 + 4 * args.calls + 3)},
                            bind=FakeNetwork().bind)
    for i in range(args.calls):
        engine.allocate_now("c%d" % i, "127.0.0.1", 2)
    walks = [("Dispatcher.statistics", lambda: d.dispatcher.statistics({})),
             ("Operations.interfaces", d.ops.interfaces),
             ("Operations.media_families", d.ops.media_families),
             ("EmbeddedEngine.totals", engine.totals)]
    for name, walk in walks:
        runs = [timeit.timeit(walk, number=20) / 20 * 1e3 for _ in range(5)]
        print("%-28s %7.2f ms  (%d calls)" % (name, statistics.median(runs), args.calls))


if __name__ == "__main__":
    main()
