"""The floor under an ng request: what the I/O alone costs, beside omnirtp's whole cycle.

    .venv/bin/python bench/ng_floor.py [--rounds 5] [--seconds 2] [--call plain]
                                       [--kinds pyloop,twisted,ngproto,omnirtp0,rtpengine]

Every server runs at the same time, pinned to CPU 0, and is driven by
``bench/setup.py``'s client on CPU 1 (the same offer + answer + delete
datagrams, one outstanding, then 8; ``bench/setup.py``'s ``measure``): the
figures are per *cycle*, i.e. per three requests, and the servers take turns
phase by phase in an order that rotates each round.

* ``pyloop``: a plain Python loop, no Twisted: ``select.epoll``'s ``poll``,
  then ``recvfrom`` until ``EAGAIN``, each datagram answered by ``sendto``
  with a fixed reply.
* ``twisted``: a ``DatagramProtocol`` on Twisted's epoll reactor (the one
  twistd runs) whose ``datagramReceived`` answers with the same fixed reply
  (``transport.socket.sendto``, as ``NGProtocol._send`` does): the reactor's
  turn and ``udp.Port.doRead`` for each request.
* ``ngproto``: omnirtp's ``NGProtocol`` on that reactor with a dispatcher
  that answers every request with the fixed reply's dictionary: the ng
  framing, the C bencode both ways, the reply cache, the stats count.
* ``omnirtp0``: the omnirtp daemon under twistd, ``num-threads = 0``, as
  ``bench/setup.py`` runs it (``--root``): the whole cycle.
* ``rtpengine``: Debian's rtpengine 10.5, as ``bench/setup.py`` runs it.

The fixed replies are the ones omnirtp0 gave to one cycle at start-up (the
offer's and the answer's with their SDP, the delete's with its statistics),
picked per request by its command word; a ``ping`` gets ``pong``.  The
floor servers do not log.  Prints each server's rates and median CPU per
cycle (user + system, ``/proc``) in both phases (``bench/setup.py`` measures
CPU only with 8 outstanding, where a wake-up may read several requests), and
its ratio to omnirtp0's CPU in the same round.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

FLOOR_KINDS = ("pyloop", "twisted", "ngproto")
DEFAULT_KINDS = "pyloop,twisted,ngproto,omnirtp0,rtpengine"
PONG = b"d6:result4:ponge"


def _replies(path):
    """{command word (bytes): reply body} from the file ``capture`` wrote."""
    out = {}
    with open(path, "rb") as f:
        for line in f.read().split(b"\n"):
            if line:
                word, _, body = line.partition(b" ")
                out[word] = bytes.fromhex(body.decode())
    return out


def _picker(replies):
    """``reply_for(payload)``: the fixed reply body for a request."""
    offer, answer, delete = replies[b"offer"], replies[b"answer"], replies[b"delete"]

    def reply_for(payload):
        if b"7:command5:offer" in payload:
            return offer
        if b"7:command6:answer" in payload:
            return answer
        if b"7:command6:delete" in payload:
            return delete
        return PONG
    return reply_for


def serve_pyloop(port, replies):
    import select
    import socket

    reply_for = _picker(replies)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN)
    recvfrom, sendto, poll = sock.recvfrom, sock.sendto, ep.poll
    while True:
        poll()
        while True:
            try:
                data, addr = recvfrom(65536)
            except BlockingIOError:
                break
            space = data.find(b" ")
            sendto(data[:space + 1] + reply_for(data[space + 1:]), addr)


def serve_twisted(port, replies):
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    reply_for = _picker(replies)

    class Answer(DatagramProtocol):
        noisy = False

        def datagramReceived(self, data, addr):
            space = data.find(b" ")
            self.transport.socket.sendto(data[:space + 1] + reply_for(data[space + 1:]), addr)

    reactor.listenUDP(port, Answer(), interface="127.0.0.1", maxPacketSize=65536)
    reactor.run()


def serve_ngproto(port, replies):
    from twisted.internet import reactor

    from omnirtp.control import bencode
    from omnirtp.control.ng import NGProtocol, to_str

    dicts = {word: to_str(bencode.decode(body)) for word, body in replies.items()}
    pong = {"result": "pong"}

    def dispatch(request, addr):
        return dicts.get(request.get("command", "").encode(), pong)

    reactor.listenUDP(port, NGProtocol(dispatch, reactor), interface="127.0.0.1",
                      maxPacketSize=65536)
    reactor.run()


def measure(setup, kind, daemon, client, seconds, results):
    """``bench/setup.py``'s phases, with the CPU of both: one request
    outstanding (a wake-up per request) and 8."""
    pids = setup.descendants(daemon.process.pid)
    r = results.setdefault(kind, {})
    client.run(0.2, 1)  # warm-up
    for phase, outstanding in (("seq", 1), ("par", setup.OUTSTANDING)):
        if outstanding > 1:
            client.run(0.2, outstanding)
        u0, s0 = setup.user_system_seconds(pids)
        c0 = setup.cpu_seconds(pids)
        t0 = time.perf_counter()
        n = client.run(seconds, outstanding)
        elapsed = time.perf_counter() - t0
        cpu = setup.cpu_seconds(pids) - c0
        u1, s1 = setup.user_system_seconds(pids)
        for key, value in ((phase, n / elapsed), (phase + "_cpu", cpu / n * 1e6),
                           (phase + "_user", (u1 - u0) / n * 1e6),
                           (phase + "_system", (s1 - s0) / n * 1e6)):
            r.setdefault(key, []).append(value)
    print("  %-10s seq %6.0f/s cpu %4.0f us/cycle (user %3.0f + system %3.0f)   "
          "8 out %6.0f/s cpu %4.0f us/cycle (user %3.0f + system %3.0f)"
          % (kind, r["seq"][-1], r["seq_cpu"][-1], r["seq_user"][-1], r["seq_system"][-1],
             r["par"][-1], r["par_cpu"][-1], r["par_user"][-1], r["par_system"][-1]),
          flush=True)


def capture(port, call, path):
    """One cycle on the daemon at ``port``; writes its three reply bodies."""
    import socket

    from bench_setup import CALL_ID, templates  # noqa: F401 (see main)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    lines = []
    try:
        for n, (word, (head, tail)) in enumerate(zip((b"offer", b"answer", b"delete"),
                                                    templates(call))):
            cookie = b"floor%d_%d" % (os.getpid(), n)
            sock.sendto(b"%s %s%s%s" % (cookie, head, CALL_ID % 999999999, tail),
                        ("127.0.0.1", port))
            reply = sock.recv(65536)
            body = reply.partition(b" ")[2]
            if b"6:result2:ok" not in body:
                sys.exit("omnirtp0 answered %r to the %s" % (body[:200], word.decode()))
            lines.append(word + b" " + body.hex().encode())
    finally:
        sock.close()
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--kinds", default=DEFAULT_KINDS)
    p.add_argument("--call", choices=("plain", "webrtc"), default="plain")
    p.add_argument("--root", default=ROOT, help="the omnirtp checkout omnirtp0 runs")
    p.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "REPLIES"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        kind, port, path = args.serve
        {"pyloop": serve_pyloop, "twisted": serve_twisted,
         "ngproto": serve_ngproto}[kind](int(port), _replies(path))
        return
    kinds = [k for k in args.kinds.split(",") if k]

    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_setup", os.path.join(HERE, "setup.py"))
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    sys.modules["bench_setup"] = setup
    from omnirtp.test.integration.reference import Daemon, free_udp_port

    os.sched_setaffinity(0, {1})
    daemons, clients = {}, {}
    fd, replies = tempfile.mkstemp(prefix="ng-floor-", suffix=".txt")
    os.close(fd)
    try:
        port = free_udp_port()
        daemons["omnirtp0"] = setup.start("omnirtp0", os.path.abspath(args.root), port)
        capture(port, args.call, replies)
        if "omnirtp0" in kinds:
            clients["omnirtp0"] = setup.Client(port, args.call)
        else:
            daemons.pop("omnirtp0").stop()
        for kind in kinds:
            if kind == "omnirtp0":
                continue
            port = free_udp_port()
            if kind in FLOOR_KINDS:
                argv = ["taskset", "-c", "0", sys.executable, os.path.abspath(__file__),
                        "--serve", kind, str(port), replies]
                env = dict(os.environ, PYTHONPATH=ROOT)
                daemons[kind] = Daemon(argv, port, env=env, name=kind).start(wait=30)
            else:
                daemons[kind] = setup.start(kind, os.path.abspath(args.root), port)
            clients[kind] = setup.Client(port, args.call)
        print("ng floor, %s call, daemons on CPU 0, client on CPU 1, %s UTC, load %s"
              % (args.call, time.strftime("%H:%M", time.gmtime()),
                 " ".join("%.1f" % x for x in os.getloadavg())), flush=True)
        results = {}
        for rnd in range(args.rounds):
            print("round %d" % (rnd + 1), flush=True)
            order = kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]
            for kind in order:
                measure(setup, kind, daemons[kind], clients[kind], args.seconds, results)
        print()
        print("median of %d rounds (%s UTC, load %s)" % (
            args.rounds, time.strftime("%H:%M", time.gmtime()),
            " ".join("%.1f" % x for x in os.getloadavg())))
        ref = results.get("omnirtp0")
        print("| server | cycles/s seq | CPU us/cycle seq (user + system) | x omnirtp0 "
              "| cycles/s 8 out | CPU us/cycle 8 out (user + system) | x omnirtp0 |")
        print("|---|---|---|---|---|---|---|")
        med = statistics.median
        for kind in kinds:
            r = results[kind]
            row = [kind]
            for phase in ("seq", "par"):
                row.append("%.0f" % med(r[phase]))
                row.append("%.0f (%.0f + %.0f)" % (med(r[phase + "_cpu"]), med(r[phase + "_user"]),
                                                   med(r[phase + "_system"])))
                # the median of the rounds' own ratios
                row.append("%.2f" % med(x / y for x, y in zip(r[phase + "_cpu"],
                                                              ref[phase + "_cpu"]))
                           if ref else "")
            print("| " + " | ".join(row) + " |")
        for kind in kinds:
            if clients[kind].errors:
                print("%s: %d replies were not ok, e.g. %r"
                      % (kind, len(clients[kind].errors), clients[kind].errors[0]))
    finally:
        for c in clients.values():
            c.close()
        for d in daemons.values():
            d.stop()
        os.unlink(replies)


if __name__ == "__main__":
    main()
