"""Self time by category of bench/setup.py --sample's stack files.

    .venv/bin/python bench/sample_report.py [--us N] PREFIX.PID.txt ...

Sums the files given (e.g. a control process, or both media workers) and
prints each category's share of the samples; with ``--us N`` (the CPU per
cycle those processes used, from bench/setup.py's per-process figures)
also the microseconds per cycle.  A sample's category is the file of its
innermost frame (see CATEGORIES).
"""

import argparse
import collections

#: (part of the file name, category), the first that matches wins
CATEGORIES = (
    ("twisted/logger", "twisted.logger"), ("_tzhelper", "twisted.logger"),
    ("constantly/", "twisted.logger"), ("string.py", "twisted.logger"),
    ("twisted/python/log", "twisted callWithLogger/context"),
    ("twisted/python/context", "twisted callWithLogger/context"),
    ("twisted/protocols/amp", "AMP (twisted)"), ("twisted/protocols/basic", "AMP (twisted)"),
    ("json/", "JSON"), ("omnirtp/media/amp.py", "omnirtp/media/amp.py (pipe writes)"),
    ("omnirtp/media/wire.py", "omnirtp/media/wire.py"),
    ("twisted/internet/defer", "twisted Deferred"), ("omnirtp/sync", "omnirtp/sync.py"),
    ("omnirtp/media/pool", "omnirtp/media/pool.py"),
    ("omnirtp/media/worker", "omnirtp/media/worker.py"),
    ("twisted/internet/process", "reactor: pipes, epoll"),
    ("_posixstdio", "reactor: pipes, epoll"), ("fdesc", "reactor: pipes, epoll"),
    ("epollreactor", "reactor: pipes, epoll"), ("posixbase", "reactor: pipes, epoll"),
    ("twisted/internet/base", "reactor: timers"), ("twisted/internet/udp", "ng socket (udp.py)"),
    ("socket.py", "media sockets (socket.py)"), ("omnirtp/media/relay", "omnirtp/media/relay.py"),
    ("omnirtp/media/engine", "omnirtp/media/engine.py"),
    ("omnirtp/media/ports", "omnirtp/media/engine.py"),
    ("omnirtp/control/bencode", "omnirtp/control/bencode.py"), ("omnirtp/sdp/", "omnirtp/sdp"),
    ("omnirtp/control/", "omnirtp/control (ng, flags, commands)"),
    ("omnirtp/call/", "omnirtp/call (negotiate, model, registry)"),
    ("<string>", "dataclass __init__"),
)


def category(frame):
    for part, name in CATEGORIES:
        if part in frame:
            return name
    return "other"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--us", type=float, help="CPU per cycle of these processes (us)")
    p.add_argument("files", nargs="+")
    args = p.parse_args(argv)
    counts = collections.Counter()
    for name in args.files:
        with open(name) as f:
            for line in f:
                stack, _, n = line.rstrip("\n").rpartition(" ")
                if n.isdigit():
                    counts[category(stack.rsplit(";", 1)[-1])] += int(n)
    total = sum(counts.values()) or 1
    print("%d samples" % total)
    for name, n in counts.most_common():
        share = n / total
        if args.us:
            print("  %5.1f%%  %6.0f us/cycle  %s" % (100 * share, share * args.us, name))
        else:
            print("  %5.1f%%  %s" % (100 * share, name))


if __name__ == "__main__":
    main()
