#!/usr/bin/env python3
"""Wall time per cycle of the set-up cycle's pure data pieces, in one process.

    .venv/bin/python bench/setup_parts.py [--root CHECKOUT] [--call plain|webrtc]
                                          [--cycles N] [--repeat N] [--engine]

Runs ``bench/setup_instructions.py``'s in-process cycle (omnirtp's
``NGProtocol`` fed the datagrams of ``bench/setup.py``'s client, the
daemon's logging, ``num-threads = 0``) with four functions wrapped by a
timer: the SDP parse (``SessionDescription.parse``), the SDP rewrite
(``rewrite.rewrite``), ``Flags.from_request`` and the delete's statistics
tree (``Dispatcher.call_tree``).  Prints each one's time per cycle (all its
calls in a cycle; the wrapper's own cost, about 0.3 us a call, included)
and the cycle's CPU time, the median of ``--repeat`` runs.  Also how the
three ``NGProtocol.datagramReceived`` calls of a cycle divide between the
time until the reply is handed to the transport (``until reply``: what a
client waits for, the socket I/O aside) and the time after it (``after
reply``: the cache entry, the log lines' write, freeing the request).
``--cpu`` times with the thread's CPU clock instead of ``perf_counter``
(each reading a system call, about 0.3 us more per timed call, but the
figures do not grow when other work takes the CPU away: for a loaded box).  The pieces are
what a C fast path could take (docs/performance.md, "Tenth pass"); the
figures are wall time on a shared box: compare checkouts in the same run.
``--engine`` times the call/engine side instead: the embedded engine's
``allocate_now``, ``configure_now``, ``stats_now`` and ``release_now``
(its sockets' system calls included) and the negotiator's ``_plan`` and
``_sockets`` (docs/performance.md, "Eleventh pass").
"""

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PIECES = ("parse", "rewrite", "from_request", "call_tree", "until reply", "after reply")
ENGINE_PIECES = ("allocate", "configure", "stats", "release", "_plan", "_sockets")


def _module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(root, cycles, call, engine=False, cpu=False):
    sys.path.insert(0, os.path.abspath(root))
    instructions = _module("setup_instructions", os.path.join(HERE, "setup_instructions.py"))
    model = importlib.import_module("omnirtp.sdp.model")
    rewrite = importlib.import_module("omnirtp.sdp.rewrite")
    negotiate = importlib.import_module("omnirtp.call.negotiate")
    flags = importlib.import_module("omnirtp.control.flags")
    commands = importlib.import_module("omnirtp.control.commands")
    pieces = ENGINE_PIECES if engine else PIECES
    spent = dict.fromkeys(pieces, 0.0)
    clock = time.thread_time if cpu else time.perf_counter

    def timed(function, label):
        def wrapper(*args, **kwargs):
            started = clock()
            try:
                return function(*args, **kwargs)
            finally:
                spent[label] += clock() - started
        return wrapper

    if engine:
        em = importlib.import_module("omnirtp.media.engine").EmbeddedEngine
        for name, label in (("allocate_now", "allocate"), ("configure_now", "configure"),
                            ("stats_now", "stats"), ("release_now", "release")):
            setattr(em, name, timed(getattr(em, name), label))
        for name in ("_plan", "_sockets"):
            setattr(negotiate.Negotiator, name, timed(getattr(negotiate.Negotiator, name), name))
    else:
        sd = model.SessionDescription
        sd.parse = classmethod(timed(sd.parse.__func__, "parse"))
        negotiate.rewrite = timed(rewrite.rewrite, "rewrite")
        flags.Flags.from_request = classmethod(timed(flags.Flags.from_request.__func__,
                                                     "from_request"))
        commands.Dispatcher.call_tree = timed(commands.Dispatcher.call_tree, "call_tree")
        ng = importlib.import_module("omnirtp.control.ng")
        received, send = ng.NGProtocol.datagramReceived, ng.NGProtocol._send
        marks_now = {}

        def datagram(self, data, addr):
            started = marks_now["start"] = clock()
            marks_now["sent"] = None
            received(self, data, addr)
            ended = clock()
            sent = marks_now["sent"] or ended
            spent["until reply"] += sent - started
            spent["after reply"] += ended - sent

        def sending(self, datagram, addr):
            send(self, datagram, addr)
            marks_now["sent"] = clock()
        ng.NGProtocol.datagramReceived = datagram
        ng.NGProtocol._send = sending
    # (the warm-up's calls are timed too: counted from the measured run's start)
    marks = {}

    class Mark:
        def start(self):
            marks.update(spent)

        def stop(self):
            pass
    elapsed = instructions.child(root, cycles, 30000, call=call, log=True, sampler=Mark())
    out = {label: (spent[label] - marks[label]) / cycles * 1e6 for label in pieces}
    out["cycle CPU"] = elapsed / cycles * 1e6
    print(json.dumps(out))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=os.path.dirname(HERE))
    p.add_argument("--call", choices=("plain", "webrtc"), default="plain")
    p.add_argument("--cycles", type=int, default=3000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--engine", action="store_true",
                   help="the engine's calls and the negotiator's plan instead")
    p.add_argument("--cpu", action="store_true",
                   help="time with the thread's CPU clock (a loaded box) instead of perf_counter")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.root, args.cycles, args.call, args.engine, args.cpu)
        return
    runs = []
    for _ in range(args.repeat):
        env = dict(os.environ, PYTHONPATH=os.path.abspath(args.root))
        text = subprocess.run([sys.executable, __file__, "--child", "--root", args.root,
                               "--call", args.call, "--cycles", str(args.cycles)]
                              + (["--engine"] if args.engine else [])
                              + (["--cpu"] if args.cpu else []),
                              env=env, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(text.strip().splitlines()[-1]))
    print("%s, %s cycle, %d cycles, median of %d runs (us per cycle%s):"
          % (os.path.abspath(args.root), args.call, args.cycles, args.repeat,
             ", thread CPU time" if args.cpu else ""))
    for label in (ENGINE_PIECES if args.engine else PIECES) + ("cycle CPU",):
        print("  %-13s %7.1f   (%s)" % (label, statistics.median(r[label] for r in runs),
                                       " ".join("%.1f" % r[label] for r in runs)))


if __name__ == "__main__":
    main()
