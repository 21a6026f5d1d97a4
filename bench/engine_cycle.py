#!/usr/bin/env python3
"""The embedded media engine's part of a plain cycle, alone, in one process.

    .venv/bin/python bench/engine_cycle.py [--root CHECKOUT] [--cycles N] [--parts a,c,s]
    .venv/bin/python bench/engine_cycle.py --instructions [--root CHECKOUT]

What ``num-threads = 0`` asks of ``EmbeddedEngine`` for one plain SIP call
(bench/setup.py --call plain): ``allocate_now`` of 2 port pairs (real
sockets on 127.0.0.1, ports 32000-33999), the offer's ``configure_now`` of
4 entries (the negotiator's keys and order, the callee's endpoint not
known yet), the answer's (both endpoints), ``stats_now`` and
``release_now``.  Prints each step's CPU time per cycle (``process_time``
around it: its system calls included; the entries are built inside the
configure steps' time, about 2 us each).  ``--parts``: ``a`` (allocate and
release, always), ``c`` (the configures), ``s`` (stats).
``--instructions``: valgrind (callgrind) runs of ``--few`` and ``--many``
cycles after the same 200 of warm-up, the difference divided by the
difference in cycles: user-space instructions per cycle, as
bench/setup_instructions.py counts a whole cycle (docs/performance.md,
"Eleventh pass").  Needs Debian's ``valgrind``.
"""

import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WARM = 200


def entries(a, b, endpoints):
    """The negotiator's entries (Negotiator._sockets) of a plain two-party
    call whose RTP ports are ``a`` (the caller's side) and ``b``."""
    out = []
    for local, peer, endpoint in ((a, b, endpoints[0]), (b, a, endpoints[1])):
        for k in (0, 1):
            e = {"learning": "heuristic", "strict": False, "handover": False,
                 "asymmetric": False, "reset": True, "tos": 0, "local": ("127.0.0.1", local + k),
                 "endpoint": None if endpoint is None else (endpoint[0], endpoint[1] + k),
                 "peer": ("127.0.0.1", peer + k)}
            if k == 0:
                e["rtcp_peer"] = None
            e.update({"ice": None, "dtls": None, "srtp_in": None, "srtp_out": None})
            out.append(e)
    return out


def child(root, cycles, parts):
    sys.path.insert(0, os.path.abspath(root))
    from twisted.internet import reactor

    from omnirtp.media.engine import EmbeddedEngine

    engine = EmbeddedEngine(reactor, {"127.0.0.1": (32000, 33999)})
    clock = time.process_time
    spent = dict.fromkeys(("allocate", "configure1", "configure2", "stats", "release"), 0.0)
    caller, callee = ("192.0.2.10", 49170), ("198.51.100.20", 30000)
    for i in range(cycles + WARM):
        if i == WARM:
            spent = dict.fromkeys(spent, 0.0)
        call_id = "bench-%010d" % i
        t0 = clock()
        ports = engine.allocate_now(call_id, "127.0.0.1", 2)
        t1 = clock()
        if "c" in parts:
            engine.configure_now(call_id, entries(ports[0], ports[1], (caller, None)))
        t2 = clock()
        if "c" in parts:
            engine.configure_now(call_id, entries(ports[0], ports[1], (caller, callee)))
        t3 = clock()
        if "s" in parts:
            engine.stats_now(call_id)
        t4 = clock()
        engine.release_now(call_id)
        t5 = clock()
        spent["allocate"] += t1 - t0
        spent["configure1"] += t2 - t1
        spent["configure2"] += t3 - t2
        spent["stats"] += t4 - t3
        spent["release"] += t5 - t4
    steps = " ".join("%s %.1f" % (k, v / cycles * 1e6) for k, v in spent.items())
    print("%s: %s, total %.1f us per cycle (CPU, %d cycles)" % (
        os.path.abspath(root), steps, sum(spent.values()) / cycles * 1e6, cycles))


def instructions(root, few, many, parts):
    counts = []
    for n in (few, many):
        env = dict(os.environ)
        env.setdefault("PYTHONHASHSEED", "0")
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             __file__, "--child", "--root", root, "--cycles", str(n), "--parts", parts],
            env=env, capture_output=True, text=True, check=True)
        found = re.search(r"Collected : (\d+)", proc.stderr)
        counts.append(int(found.group(1)))
    print("%s: %d instructions per engine cycle (%d vs %d cycles, parts %s)" % (
        os.path.abspath(root), (counts[1] - counts[0]) // (many - few), many, few, parts))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=os.path.dirname(HERE))
    p.add_argument("--cycles", type=int, default=10000)
    p.add_argument("--parts", default="a,c,s")
    p.add_argument("--instructions", action="store_true")
    p.add_argument("--few", type=int, default=50)
    p.add_argument("--many", type=int, default=300)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    if args.instructions:
        instructions(args.root, args.few, args.many, args.parts)
    else:
        child(args.root, args.cycles, parts)


if __name__ == "__main__":
    main()
