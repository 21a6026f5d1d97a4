"""User-space instructions per call of a few ng control-path pieces, counted by valgrind.

Each piece runs in a loop of ``--few`` and of ``--many`` calls under
``valgrind --tool=callgrind``; the difference divided by the difference of
the counts is one call's instructions (start-up cancels out).  ``--root``
measures another checkout (before/after pairs); set ``PYTHONHASHSEED=0`` for
both to drop most of the spread between runs.

* ``info``: one info line (the dispatcher's "Received command") into twistd's
  text observer on ``/dev/null`` behind ``omnirtp.logging.install``'s filter;
* ``debug``: one debug line that filter drops;
* ``ping``: one ng request through ``NGProtocol`` with a dispatch that answers
  a constant dict (framing, decoding, the reply cache, encoding, sending);
* ``flags``: ``Flags.from_request`` of a plain delete and of an offer;
* ``sync``: a ``sync.steps`` function yielding another one, which yields a
  fired Deferred.
"""

import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIECES = ("info", "debug", "ping", "flags", "sync")

OFFER = {"supports": ["load limit"], "sdp": "v=0", "replace": ["origin", "session-connection"],
         "call-id": "bench-0000000007", "received-from": ["IP4", "192.0.2.10"],
         "from-tag": "ft1", "command": "offer"}
DELETE = {"supports": ["load limit"], "call-id": "bench-0000000007",
          "received-from": ["IP4", "192.0.2.10"], "from-tag": "ft1", "command": "delete"}


def loop(piece, n):
    """``piece`` ``n`` times (in the child, under valgrind)."""
    if piece in ("info", "debug"):
        from twisted.logger import globalLogBeginner, textFileLogObserver

        from omnirtp import logging as olog
        globalLogBeginner.beginLoggingTo([textFileLogObserver(open(os.devnull, "w"))],
                                         redirectStandardIO=False)
        olog.install(olog.LogLevels(6))

        class Dispatcher:
            log = olog.Logger(namespace="omnirtp.control.commands.Dispatcher")
        emit = getattr(Dispatcher().log, piece)
        for _ in range(n):
            emit("Received command '{command}' from {source}", command="offer",
                 source="127.0.0.1:5555", call_id="bench-0000000007")
    elif piece == "ping":
        from twisted.internet.task import Clock

        from omnirtp.control.ng import NGProtocol

        class Transport:
            def write(self, datagram, addr):
                pass
        protocol = NGProtocol(lambda request, addr: {"result": "pong"}, Clock())
        protocol.transport = Transport()
        addr = ("127.0.0.1", 5555)
        for i in range(n):
            protocol.datagramReceived(b"%d d7:command4:pinge" % i, addr)
    elif piece == "flags":
        from omnirtp.control.flags import Flags
        for _ in range(n):
            Flags.from_request(DELETE)
            Flags.from_request(OFFER)
    else:
        from twisted.internet import defer

        from omnirtp import sync

        @sync.steps
        def inner():
            return (yield defer.succeed(3))

        @sync.steps
        def outer():
            return (yield inner())
        for _ in range(n):
            outer()


def count(root, piece, n):
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         os.path.abspath(__file__), "--child", str(n), "--root", root, piece],
        capture_output=True, text=True)
    if out.returncode:
        sys.exit("%s under valgrind failed:\n%s" % (piece, out.stderr[-3000:]))
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pieces", nargs="*", help="of %s (default: all)" % ", ".join(PIECES))
    p.add_argument("--root", default=ROOT)
    p.add_argument("--few", type=int, default=500)
    p.add_argument("--many", type=int, default=3000)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.pieces) - set(PIECES)
    if unknown:
        p.error("unknown piece(s): %s" % ", ".join(sorted(unknown)))
    root = os.path.abspath(args.root)
    if args.child is not None:
        sys.path.insert(0, root)
        loop(args.pieces[0], args.child)
        return
    for piece in args.pieces or PIECES:
        few, many = count(root, piece, args.few), count(root, piece, args.many)
        print("%-6s %8d instructions per call (%s)" % (
            piece, (many - few) // (args.many - args.few), root))


if __name__ == "__main__":
    main()
