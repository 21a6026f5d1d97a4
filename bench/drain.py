"""Microbenchmark: CPU per datagram of omnirtp's relay path, draining queued sockets.

    .venv/bin/python bench/drain.py [--sockets 1000] [--queued 10] [--rounds 5]

For each variant, ``--sockets`` relay sockets on 127.0.0.1 get ``--queued``
RTP datagrams each from one sender; then the process (pinned to CPU 0)
relays them all, and the CPU time it used (user + kernel, from
``time.process_time``) is divided by the datagrams relayed.  Median of
``--rounds``.  The variants:

* ``floor``: bare ``recv`` on a socket connected to the sender and ``send``
  on a socket connected to the sink: the syscalls alone.
* ``poller``: ``MediaPoller`` + ``RelaySocket.read`` (``recvfrom`` /
  ``sendto``), companions off.
* ``companion``: ``MediaPoller`` + ``RelaySocket`` with connected companions
  (relayed inline by the poller: ``os.read`` / ``os.write``), as the engine runs.

Not a test: it prints figures and never fails.  Ports 50000 + 2 * sockets
on 127.0.0.1 must be free.
"""

import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omnirtp.media.relay import (  # noqa: E402
    LEARN_HEURISTIC, MediaPoller, RelaySocket, bind_media, bind_udp)

try:
    from omnirtp.media.relay import allow_companions  # noqa: E402
except ImportError:  # (a checkout whose bind_media sets SO_REUSEPORT itself)
    def allow_companions(sock):
        pass

HOST = "127.0.0.1"
BASE = 50000
PACKET = bytes([0x80, 0]) + b"\x00" * 10 + b"\xd5" * 160


class Reactor:
    """The little of a reactor that MediaPoller and RelaySocket use (also bench/instructions.py)."""

    def seconds(self):
        return time.time()

    def addReader(self, reader):
        pass

    def removeReader(self, reader):
        pass


def _sink():
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sink


def _fill(sender, ports, queued):
    for port in ports:
        for _ in range(queued):
            sender.sendto(PACKET, (HOST, port))


def floor(n, queued, rounds, sender, sink):
    socks = []
    ins, outs = [], []
    for i in range(n):
        port = BASE + 2 * i
        main = bind_media(HOST, port)
        allow_companions(main)  # (as RelaySocket does before its first companion)
        conn = bind_udp(HOST, port, reuse_port=True)
        conn.connect(sender.getsockname())
        out = bind_udp(HOST, port + 1)
        out.connect(sink.getsockname())
        socks += [main, conn, out]
        ins.append(conn)
        outs.append(out)
    results = []
    try:
        for _ in range(rounds):
            _fill(sender, [BASE + 2 * i for i in range(n)], queued)
            t0 = time.process_time()
            count = 0
            for a, b in zip(ins, outs):
                recv, send = a.recv, b.send
                for _ in range(queued):
                    send(recv(8192))
                    count += 1
            results.append((time.process_time() - t0) / count * 1e6)
    finally:
        for s in socks:
            s.close()
    return results


def relay(n, queued, rounds, sender, sink, companions):
    reactor = Reactor()
    poller = MediaPoller(reactor)
    relays = []
    for i in range(n):
        pa, pb = BASE + 2 * i, BASE + 2 * i + 1
        comp_a = (lambda p=pa: bind_udp(HOST, p, reuse_port=True)) if companions else None
        comp_b = (lambda p=pb: bind_udp(HOST, p, reuse_port=True)) if companions else None
        a = RelaySocket(reactor, bind_media(HOST, pa), (HOST, pa), poller, comp_a)
        b = RelaySocket(reactor, bind_media(HOST, pb), (HOST, pb), poller, comp_b)
        a.configure(peer=b, endpoint=sender.getsockname(), learning=LEARN_HEURISTIC, reset=True)
        b.configure(peer=a, endpoint=sink.getsockname(), learning=LEARN_HEURISTIC, reset=True)
        a.confirmed = b.confirmed = True
        a._update_out()
        b._update_out()
        a.start()
        b.start()
        relays.append((a, b))
    results = []
    try:
        for _ in range(rounds):
            before = sum(a.packets for a, _ in relays)
            _fill(sender, [a.local[1] for a, _ in relays], queued)
            want = before + n * queued
            t0 = time.process_time()
            deadline = time.monotonic() + 30
            done = before
            while done < want and time.monotonic() < deadline:
                poller.doRead()
                done = sum(a.packets for a, _ in relays)
            results.append((time.process_time() - t0) / max(1, done - before) * 1e6)
    finally:
        for a, b in relays:
            a.close()
            b.close()
        poller.close()
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--queued", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {0})
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((HOST, 0))
    sink = _sink()
    print("%d sockets, %d datagrams queued on each, median of %d rounds (CPU 0)"
          % (args.sockets, args.queued, args.rounds))
    for name, run in (("floor", lambda: floor(args.sockets, args.queued, args.rounds, sender, sink)),
                      ("poller", lambda: relay(args.sockets, args.queued, args.rounds, sender,
                                               sink, False)),
                      ("companion", lambda: relay(args.sockets, args.queued, args.rounds,
                                                  sender, sink, True))):
        samples = sorted(run())
        print("%-10s %6.2f us/datagram   (%s)" % (name, samples[len(samples) // 2],
                                                " ".join("%.2f" % x for x in samples)))


if __name__ == "__main__":
    main()
