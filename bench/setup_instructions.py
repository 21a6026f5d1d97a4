"""User-space instructions per offer+answer+delete cycle, counted by valgrind.

    .venv/bin/python bench/setup_instructions.py [--root CHECKOUT] [--few 10] [--many 60]
                                                 [--profile OUT] [--cycles N]

CPU time on this shared box moves by 10-20% from run to run (and more when
other work runs); instruction counts do not.  This builds the daemon's
control plane in one process (``omnirtp.service.build``, ``num-threads = 0``,
real media sockets on 127.0.0.1, ports ``--port-min`` to ``+ 1999``) and hands
the ng datagrams of ``bench/setup.py``'s cycle (the seed's Kamailio flags, SIP
phone calls a browser) straight to ``NGProtocol.datagramReceived``; the replies
go to a fake transport and must all be ``result: ok``.  It runs under
``valgrind --tool=callgrind`` twice, with ``--few`` and ``--many`` cycles after
the same warm-up, and divides the difference in instructions by the
difference in cycles: start-up and imports cancel out.  The kernel's share
(socket calls) is not counted.  The runs under valgrind get ``PYTHONHASHSEED=0``
unless the environment names a seed (random seeds moved the plain cycle's
count by about 5% between runs of one checkout).

``--sample`` runs ``--cycles`` (2000) cycles under a SIGPROF sampler and
prints each module's share of the samples (self time) and the samples per
cycle (compare two checkouts run one after the other).
``--call plain`` measures the SIP-to-SIP cycle instead.  ``--twistd-log``
logs as the daemon under ``twistd -n`` does: twistd's text observer (on
``/dev/null`` here) behind ``omnirtp.logging.install``'s level filter;
without it the log lines only reach twisted's start-up buffer.
``--root`` measures another checkout's omnirtp with this script (before/after
pairs).  ``--workers``: ``num-threads = 2`` instead, its two workers in the
same process (``bench/same_output.py``'s ``PoolStack``, an embedded engine
each on a fake network, the pipes' frames moved after every datagram): the
control process's and the workers' Python together, without the kernel's
share (the pipes, the process switches); ``--lazy``: the same with the lazy
hand-off (``WorkerPool(lazy=True)``, as the daemon's pool: a plain call is
parked in the control process, its ports bound on the fake network, and
never reaches a worker); ``--twistd-log`` there is twistd's
text observer on ``/dev/null`` without the daemon's level filter (``--filtered``: behind it,
``omnirtp.logging.install`` at level 6, as in the daemon, where omnirtp's own lines then take
``omnirtp.logging``'s fast way).  After the warm-up the child calls ``gc.freeze()``, as the daemon
does once its reactor runs (``--no-gc-freeze``: not; a full collection over
start-up's objects then falls into some runs and not others).  ``--profile OUT`` instead runs ``--cycles`` cycles under cProfile
(no valgrind) and writes the stats to OUT; ``--cycles`` alone prints the CPU
time per cycle.  Needs Debian's ``valgrind``.
"""

import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WARM = 20


#: --sample: a module's share goes under these names (else its path)
SAMPLE_GROUPS = (("socket.py", "sockets (socket.py)"), ("twisted/internet/defer", "twisted Deferred"),
                 ("twisted/logger", "twisted.logger"), ("constantly/", "twisted.logger"),
                 ("<string>", "dataclass __init__"), ("<frozen abc>", "ABC isinstance"),
                 ("ipaddress.py", "ipaddress.py"))


class Sampler:
    """A statistical profiler: SIGPROF every ``interval`` s of CPU, the
    running Python function's module counted (no per-call overhead, unlike
    cProfile, whose clock is wall time and whose hooks cost most in code
    with many small calls)."""

    def __init__(self, root, interval=0.0005):
        import collections
        self.root = os.path.abspath(root) + "/"
        self.interval = interval
        self.counts = collections.Counter()
        self.on = False

    def _where(self, frame):
        name = frame.f_code.co_filename
        if name.startswith(self.root):
            return name[len(self.root):]
        for part, group in SAMPLE_GROUPS:
            if part in name:
                return group
        return "other"

    def _tick(self, signum, frame):
        if self.on and frame is not None:
            self.counts[self._where(frame)] += 1

    def start(self):
        import signal
        signal.signal(signal.SIGPROF, self._tick)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)
        self.on = True

    def stop(self):
        import signal
        self.on = False
        signal.setitimer(signal.ITIMER_PROF, 0, 0)

    def report(self, cycles):
        total = sum(self.counts.values()) or 1
        print("%d samples over %d cycles (%.2f per cycle), self time by module:"
              % (total, cycles, total / cycles))
        for where, n in self.counts.most_common():
            if n * 200 >= total:  # 0.5% and more
                print("  %5.1f%%  %s" % (100.0 * n / total, where))


def twistd_log(top):
    """Log as ``twistd -n`` and the started daemon would: twistd's text
    observer, then the daemon's filter (``_RegistryService.startService``)."""
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from omnirtp.logging import install

    out = open(os.devnull, "w")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(out)], redirectStandardIO=False)
    for svc in top:
        if getattr(svc, "logging", None) is not None:
            install(svc.levels, **svc.logging)
            # what startService does next (checkouts that have it): the
            # embedded engine's debug line follows the installed filters
            follow = getattr(svc, "_follow_engine_debug", None)
            if follow is not None:
                follow()


def _module(name, path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(root, cycles, port_min, profile=None, call="webrtc", sampler=None, log=False,
          freeze=True, workers=False):
    sys.path.insert(0, os.path.abspath(root))
    sys.path.insert(1, HERE)
    from twisted.internet import reactor

    from omnirtp.control.ng import NGProtocol
    from omnirtp.service import build
    from omnirtp.tap import Options

    # bench/setup.py: the cycle's templates (by path: the checkout's own
    # setup.py, which builds the C extension, is first on sys.path)
    bench_setup = _module("bench_setup", os.path.join(HERE, "setup.py"))
    replies = []

    class Transport:
        def write(self, datagram, addr):
            replies.append(datagram)

    if workers:
        # num-threads = 2 in one process: bench/same_output.py's PoolStack
        # (a WorkerPool whose two workers, WorkerProtocols over embedded
        # engines on a fake network, are in memory; every datagram's
        # frames moved to them and back before the next)
        # (--lazy: with the lazy hand-off, where the checkout has it)
        stack = _module("same_output", os.path.join(HERE, "same_output.py")).PoolStack(
            pairs=200, delete_delay=0, lazy=workers == "lazy")
        protocol = stack.proto
        pump = stack.pump
        if log:
            from twisted.logger import globalLogBeginner, textFileLogObserver
            globalLogBeginner.beginLoggingTo([textFileLogObserver(open(os.devnull, "w"))],
                                             redirectStandardIO=False)
            if log == "filtered":  # behind the daemon's level filter, as the daemon's
                from omnirtp.logging import LogLevels, install
                install(LogLevels(6))
        top = None
    else:
        options = Options()
        options.parseOptions([
            "--config-file=none", "--interface=127.0.0.1", "--listen-ng=127.0.0.1:1",
            "--port-min=%d" % port_min, "--port-max=%d" % (port_min + 1999),
            "--num-threads=0", "--delete-delay=0", "--log-level=6"])
        top = build(options.config, reactor, log_level=6 if log else None)
        if log:
            twistd_log(top)
        protocol = NGProtocol(top.dispatcher, reactor)
        pump = None
    protocol.transport = Transport()
    templates = bench_setup.templates(call)

    def datagrams(count, first):
        for call in range(first, first + count):
            for step, (head, tail) in enumerate(templates):
                yield b"%d_%d %s%s%s" % (call, step, head, bench_setup.CALL_ID % call, tail)

    addr = ("127.0.0.1", 5555)
    for d in datagrams(WARM, 10 ** 6):
        protocol.datagramReceived(d, addr)
        if pump is not None:
            pump()
    if freeze:
        # as the daemon does once its reactor runs (service.py): what
        # start-up made is never traversed again.  Without it a full
        # collection over every module's objects falls into some runs and
        # not others, and the few/many difference moves by up to 10%
        import gc
        gc.freeze()
    todo = list(datagrams(cycles, 0))
    if profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    if sampler is not None:
        sampler.start()
    started = time.process_time()
    if pump is None:
        for d in todo:
            protocol.datagramReceived(d, addr)
    else:
        for d in todo:
            protocol.datagramReceived(d, addr)
            pump()
    elapsed = time.process_time() - started
    if sampler is not None:
        sampler.stop()
    if profile:
        prof.disable()
        prof.dump_stats(profile)
    bad = [r for r in replies if b"6:result2:ok" not in r]
    if bad or len(replies) != 3 * (WARM + cycles):
        sys.exit("%d replies, %d not ok, e.g. %r" % (len(replies), len(bad), bad[:1]))
    if top is not None:
        top.engine.close()
    return elapsed


def count(root, cycles, port_min, call="webrtc", log=False, freeze=True, workers=False):
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, os.path.abspath(__file__), "--child", str(cycles),
         "--root", root, "--port-min", str(port_min), "--call", call]
        + (["--twistd-log"] if log else []) + (["--filtered"] if log == "filtered" else [])
        + ([] if freeze else ["--no-gc-freeze"])
        + (["--workers"] if workers else []) + (["--lazy"] if workers == "lazy" else []),
        capture_output=True, text=True,
        # one hash seed for every run (unless one is given): with random
        # ones the plain cycle's count moved by about 5% between runs of
        # the same checkout (bench/README.md, "Fifth pass")
        env=dict(os.environ, PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0")))
    if out.returncode:
        sys.exit("the cycles under valgrind failed:\n" + out.stderr[-3000:])
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=ROOT)
    p.add_argument("--few", type=int, default=10)
    p.add_argument("--many", type=int, default=60)
    p.add_argument("--port-min", type=int, default=50000)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--cycles", type=int)
    p.add_argument("--profile")
    p.add_argument("--sample", action="store_true",
                   help="a SIGPROF sampler instead: self time by module over --cycles")
    p.add_argument("--call", choices=("webrtc", "plain"), default="webrtc",
                   help="the cycle (bench/setup.py --call)")
    p.add_argument("--twistd-log", action="store_true",
                   help="log as the daemon under twistd -n does (text observer on /dev/null)")
    p.add_argument("--filtered", action="store_true",
                   help="with --workers --twistd-log: twistd's observer behind the daemon's level "
                        "filter (omnirtp.logging.install, log-level 6), as in the daemon")
    p.add_argument("--no-gc-freeze", action="store_true",
                   help="leave start-up's objects to the collector (the figures before "
                        "2026-12-04 were counted so; they move by up to 10%% between runs)")
    p.add_argument("--workers", action="store_true",
                   help="num-threads = 2 with the two workers in memory (bench/same_output.py's "
                        "PoolStack): the control process's and the workers' Python together")
    p.add_argument("--lazy", action="store_true",
                   help="--workers with the lazy hand-off (WorkerPool(lazy=True), the daemon's "
                        "way; a checkout without it: as --workers)")
    args = p.parse_args(argv)
    freeze = not args.no_gc_freeze
    log = "filtered" if args.twistd_log and args.filtered else args.twistd_log
    workers = "lazy" if args.lazy else args.workers
    if args.child is not None:
        child(args.root, args.child, args.port_min, call=args.call, log=log, freeze=freeze,
              workers=workers)
        return
    if args.sample:
        n = args.cycles or 2000
        sampler = Sampler(args.root)
        child(args.root, n, args.port_min, call=args.call, sampler=sampler, log=log,
              freeze=freeze, workers=workers)
        sampler.report(n)
        return
    if args.cycles or args.profile:
        n = args.cycles or 1000
        elapsed = child(args.root, n, args.port_min, args.profile, args.call, log=log,
                        freeze=freeze, workers=workers)
        print("%d cycles: %.0f us CPU per cycle (in-process, no socket I/O for ng)"
              % (n, elapsed / n * 1e6))
        return
    few = count(args.root, args.few, args.port_min, args.call, log, freeze, workers)
    many = count(args.root, args.many, args.port_min, args.call, log, freeze, workers)
    print("%s: %.0f instructions per offer+answer+delete cycle (%d vs %d cycles)"
          % (args.root, (many - few) / (args.many - args.few), args.many, args.few))


if __name__ == "__main__":
    main()
