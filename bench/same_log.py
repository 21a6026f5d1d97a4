"""Do two checkouts write the same log?  The daemon's own log of one scripted run, side by side.

    .venv/bin/python bench/same_log.py --before CHECKOUT [--root CHECKOUT] [--modes a,b]
                                       [--keep DIR]

For work on the log lines' cost (``omnirtp/logging.py``), which must not
change a byte of what is written.  Each checkout's daemon runs under
``twistd -n`` (as ``bench/setup.py`` runs it) once per mode, is sent the same
ng datagrams one at a time, each after the reply to the one before (plain
and webrtc offer/answer/delete cycles with the same call-ids, pings, a
re-offer, a query, a list, statistics, an unknown command, a delete and a
query of no call, a datagram that is not bencode, an offer without SDP and
one with bad SDP), and is stopped with SIGTERM; its log (the file twistd's
text observer writes: ``--logfile``; with ``stderr`` the ``--log-stderr``
lines) is then compared line by line with the other checkout's, with the
timestamps masked (twistd's ``2026-12-04T23:00:00+0000`` at a line's start,
``--log-stderr``'s ``[1733353200.123456]``), and the process ids (``pid N``,
``[N]``), objects' addresses (``at 0x...>``) and media ports (36000-36999,
drawn at random by the daemon, as rtpengine does) too; both daemons get the
same ng port and are sent from the same client port.  Modes:

* ``six``: ``num-threads = 0``, ``log-level = 6`` (the benches' daemon);
* ``seven``: the same at ``log-level = 7`` (the debug lines too);
* ``control5``: ``log-level = 6``, ``log-level-control = 5`` (the ng
  dispatcher's lines dropped by their subsystem's level);
* ``workers``: ``num-threads = 2``, ``log-level = 6`` (the lazy hand-off, the
  media workers' start and stop);
* ``stderr``: ``--log-stderr``, ``log-level = 7`` (rtpengine's line format).

The lines of the media workers' start and stop (``num-threads = 2``; in
either order) are compared as a set, after the others.  It prints, per
mode, the number of lines and of lines that differ (and the first few), and
exits 1 if any differ.  ``--keep DIR`` leaves the logs there.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from omnirtp.control import bencode  # noqa: E402
from omnirtp.test.integration.reference import TWISTD, free_udp_port  # noqa: E402


def _module(name, path):
    # bench/setup.py by path (the checkout's own setup.py is first on sys.path)
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_setup = _module("bench_setup", os.path.join(HERE, "setup.py"))

MODES = {
    "six": ["--num-threads=0", "--log-level=6"],
    "seven": ["--num-threads=0", "--log-level=7"],
    "control5": ["--num-threads=0", "--log-level=6", "--log-level-control=5"],
    "workers": ["--num-threads=2", "--log-level=6"],
    "stderr": ["--num-threads=0", "--log-level=7", "--log-stderr"],
}
PORTS = (36000, 36999)

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} ", re.M)
STDERR_STAMP = re.compile(r"^\[\d+\.\d{6}\] ", re.M)
#: the lines of the media workers' start and stop (in either order)
WORKER = re.compile(r"\[omnirtp\.media\.pool\.WorkerProcess#|media worker \d+ \(pid|AMP connection")
PID = re.compile(r"(pid |\[)\d{3,}\b")
ADDRESS = re.compile(r" at 0x[0-9a-f]+>")
#: the media ports (PORTS), which the daemon draws at random
MEDIA_PORT = re.compile(r"\b36\d\d\d\b")


def datagrams():
    """The scripted run: (cookie, body) pairs."""
    out = []
    n = [0]

    def add(body):
        n[0] += 1
        out.append(b"%d_log %s" % (n[0], body))

    def cycle(call, number, steps=(0, 1, 2)):
        templates = bench_setup.templates(call)
        for step in steps:
            head, tail = templates[step]
            add(head + bench_setup.CALL_ID % number + tail)

    add(bencode.encode({"command": "ping"}))
    for i in range(5):
        cycle("plain", i)
    cycle("webrtc", 100)
    cycle("plain", 200, steps=(0, 1))
    cycle("plain", 200, steps=(0, 1))   # a re-offer and answer of a live call
    add(bencode.encode({"command": "query", "call-id": (bench_setup.CALL_ID % 200).decode()}))
    add(bencode.encode({"command": "list"}))
    add(bencode.encode({"command": "statistics"}))
    cycle("plain", 200, steps=(2,))
    add(bencode.encode({"command": "delete", "call-id": "no-such-call", "from-tag": "x"}))
    add(bencode.encode({"command": "query", "call-id": "no-such-call"}))
    add(bencode.encode({"command": "frobnicate", "call-id": "c-unknown"}))
    add(bencode.encode({"command": "offer", "call-id": "c-nosdp", "from-tag": "f"}))
    add(b"d7:command4:pin")   # not bencode
    add(bencode.encode({"command": "offer", "call-id": "c-bad", "from-tag": "f",
                        "sdp": "v=0\r\nnot sdp\r\n"}))
    for i in range(300, 303):
        cycle("webrtc", i)
    add(bencode.encode({"command": "ping"}))
    return out


def run(root, mode, log_path, ng_port, client_port):
    env = dict(os.environ)
    env["PYTHONPATH"] = root
    stderr_mode = "--log-stderr" in MODES[mode]
    argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile="]
    if not stderr_mode:
        argv.append("--logfile=%s" % log_path)
    argv += ["omnirtp", "--config-file=none", "--interface=127.0.0.1",
             "--listen-ng=127.0.0.1:%d" % ng_port, "--port-min=%d" % PORTS[0],
             "--port-max=%d" % PORTS[1], "--delete-delay=0"] + MODES[mode]
    if os.path.exists(log_path):
        os.unlink(log_path)  # (twistd appends)
    out = open(log_path + ".out", "wb")
    proc = subprocess.Popen(argv, cwd=root, env=env, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=out)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", client_port))
    server = ("127.0.0.1", ng_port)
    try:
        deadline = time.monotonic() + 30
        sock.settimeout(0.2)
        while True:  # started: a ping answered (its line is in the log: masked below)
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("%s %s did not start: see %s.out" % (root, mode, log_path))
            sock.sendto(b"0_start d7:command4:pinge", server)
            try:
                if sock.recv(65536).startswith(b"0_start "):
                    break
            except socket.timeout:
                pass
        sock.settimeout(5.0)
        replies = []
        for datagram in datagrams():
            cookie = datagram.partition(b" ")[0]
            sock.sendto(datagram, server)
            while True:
                reply = sock.recv(65536)
                if reply.startswith(cookie + b" "):
                    break
            replies.append(reply)
        time.sleep(0.2)
    finally:
        sock.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
    with open(log_path + ".out" if stderr_mode else log_path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    return text, replies


def masked(text):
    text = STAMP.sub("TIME ", text)
    text = STDERR_STAMP.sub("[TIME] ", text)
    text = ADDRESS.sub(" at 0xADDRESS>", text)
    text = MEDIA_PORT.sub("PORT", text)
    return PID.sub(lambda m: m.group(1) + "PID", text).splitlines()


def order(lines):
    """The lines, those of the media worker processes (which start and
    stop beside each other, in either order) sorted after the others."""
    theirs = [line for line in lines if WORKER.search(line)]
    return [line for line in lines if not WORKER.search(line)] + sorted(theirs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", required=True)
    p.add_argument("--root", default=ROOT)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--keep", default=None)
    args = p.parse_args(argv)
    keep = args.keep or tempfile.mkdtemp(prefix="same-log-")
    os.makedirs(keep, exist_ok=True)
    differ = 0
    for mode in args.modes.split(","):
        logs = {}
        # the same ng port and client port for both (both are in the log)
        ng_port, client_port = free_udp_port(), free_udp_port()
        for name, root in (("before", args.before), ("after", args.root)):
            text, replies = run(os.path.abspath(root), mode, os.path.join(keep, "%s-%s.log" % (
                mode, name)), ng_port, client_port)
            logs[name] = masked(text)
        a, b = (order(logs["before"]), order(logs["after"]))
        bad = [(i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y]
        n = len(bad) + abs(len(a) - len(b))
        differ += n
        print("%-9s %d lines before, %d after, %d differ" % (mode, len(a), len(b), n))
        for i, x, y in bad[:5]:
            print("   line %d:\n     before: %s\n     after:  %s" % (i + 1, x[:300], y[:300]))
    if not args.keep:
        import shutil
        shutil.rmtree(keep)
    print("%d lines differ" % differ)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
