"""User-space instructions per relayed datagram, counted by valgrind.

    .venv/bin/python bench/instructions.py [--pairs 200]

CPU time on this shared box moves by 10-20% from run to run; instruction
counts do not.  This runs a small relay under ``valgrind --tool=callgrind``
twice, once relaying 5 and once 45 datagrams per socket, and divides the
difference in instructions by the difference in datagrams: what is left is
the user-space cost of one datagram on the engine's usual path (MediaPoller,
connected companions, confirmed endpoints), with the start-up cancelled
out.  The kernel's share is not counted (valgrind sees user space only).

The datagrams are queued by a separate process (not traced), then the relay
drains them through ``MediaPoller.doRead``.  Ports 52000 + 2 * pairs on
127.0.0.1 must be free.  Needs Debian's ``valgrind``.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
BASE = 52000
FEW, MANY = 5, 45

FILL = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
pkt = bytes([0x80, 0]) + bytes(170)
for i in range(int(sys.argv[2])):
    for _ in range(int(sys.argv[3])):
        s.sendto(pkt, ("127.0.0.1", %d + 2 * i))
""" % BASE


def relay(pairs, queued):
    """Child (under valgrind): wire ``pairs`` relays, relay ``queued`` each."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from drain import PACKET, Reactor  # bench/drain.py (which puts ROOT on sys.path)
    from omnirtp.media.relay import MediaPoller, RelaySocket, bind_media, bind_udp

    reactor = Reactor()
    poller = MediaPoller(reactor)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sender.bind((HOST, 0))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    relays = []
    for i in range(pairs):
        pa, pb = BASE + 2 * i, BASE + 2 * i + 1
        a = RelaySocket(reactor, bind_media(HOST, pa), (HOST, pa), poller,
                        lambda p=pa: bind_udp(HOST, p, reuse_port=True))
        b = RelaySocket(reactor, bind_media(HOST, pb), (HOST, pb), poller,
                        lambda p=pb: bind_udp(HOST, p, reuse_port=True))
        a.configure(peer=b, endpoint=sender.getsockname(), learning="immediate", reset=True)
        b.configure(peer=a, endpoint=sink.getsockname(), learning="immediate", reset=True)
        a.start()
        b.start()
        relays.append(a)
    # one datagram each confirms the endpoints (the full path), and warms up
    for a in relays:
        sender.sendto(PACKET, a.local)
    while sum(a.packets for a in relays) < pairs:
        poller.doRead()
    port = sender.getsockname()[1]
    sender.close()  # the filler takes its address: the companions are connected to it
    subprocess.run(["/usr/bin/python3", "-c", FILL, str(port), str(pairs), str(queued)], check=True)
    first, last = relays[0], relays[-1]
    while first.packets <= queued or last.packets <= queued:
        poller.doRead()
    while sum(a.packets for a in relays) < pairs * (queued + 1):
        poller.doRead()


def count(pairs, queued):
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, os.path.abspath(__file__), "--child", str(pairs), str(queued)],
        capture_output=True, text=True, check=True)
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        relay(*args.child)
        return
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    count(args.pairs, FEW)  # compiles what needs compiling
    few, many = count(args.pairs, FEW), count(args.pairs, MANY)
    per = (many - few) / (args.pairs * (MANY - FEW))
    print("%d instructions (user space) per relayed datagram  (%d pairs, %d vs %d queued each)"
          % (round(per), args.pairs, MANY, FEW))


if __name__ == "__main__":
    main()
