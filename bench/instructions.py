"""User-space instructions per relayed datagram, counted by valgrind.

    .venv/bin/python bench/instructions.py [--pairs 200] [--base 61100] [--no-companion]
                                           [--root CHECKOUT] [--srtp]

CPU time on this shared box moves by 10-20% from run to run; instruction
counts do not.  This runs a small relay under ``valgrind --tool=callgrind``
twice, once relaying 5 and once 45 datagrams per socket, and divides the
difference in instructions by the difference in datagrams: what is left is
the user-space cost of one datagram on the engine's usual path (MediaPoller,
connected companions, confirmed endpoints), with the start-up cancelled
out.  The kernel's share is not counted (valgrind sees user space only).

The datagrams are queued by a separate process (not traced), then the relay
drains them through ``MediaPoller.doRead``.  Ports ``base`` to
``base + 2 * pairs`` on 127.0.0.1 must be free (the default lies above the
kernel's ephemeral range, where other programs' sockets do not land).
``--no-companion`` relays without connected companions: the full path
(``RelaySocket.read``: ``recvfrom``, ``_forward``, ``sendto``) instead of
the poller's inline one.  ``--srtp`` makes the queued datagrams SRTP
(AES_CM_128_HMAC_SHA1_80) and gives each relay socket an SRTP unprotect
step: the cost of an SRTP -> RTP datagram (the pipeline path), beside the
plain figure.  ``--root`` measures the omnirtp of another
checkout (e.g. a worktree of main for a before/after pair) with this
script.  Needs Debian's ``valgrind``.
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
BASE = 61100
FEW, MANY = 5, 45

#: the SRTP master key || salt of --srtp (AES_CM_128_HMAC_SHA1_80)
SRTP_KEY = bytes(range(30))

FILL = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
pkt = bytes([0x80, 0]) + bytes(170)
srtp = len(sys.argv) > 5
if srtp:
    import pylibsrtp
    policy = pylibsrtp.Policy(bytes.fromhex(sys.argv[5]), pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
for i in range(int(sys.argv[2])):
    if srtp:  # one sender session per relay socket: sequence numbers from 1
        session = pylibsrtp.Session(policy)
    for seq in range(1, int(sys.argv[3]) + 1):
        if srtp:
            data = session.protect(bytes([0x80, 0, 0, seq]) + bytes(168))
        else:
            data = pkt
        s.sendto(data, ("127.0.0.1", int(sys.argv[4]) + 2 * i))
"""


def relay(pairs, queued, base=BASE, companion=True, root=None, srtp=False):
    """Child (under valgrind): wire ``pairs`` relays, relay ``queued`` each."""
    if root is not None:
        # imported first, so drain.py's own checkout (put on sys.path by it) is not used
        sys.path.insert(0, os.path.abspath(root))
        import omnirtp.media.relay  # noqa: F401
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from drain import PACKET, Reactor  # bench/drain.py (which puts ROOT on sys.path)
    from omnirtp.media.relay import MediaPoller, RelaySocket, bind_companion, bind_media

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
        pa, pb = base + 2 * i, base + 2 * i + 1
        # the companion factory takes the socket's (address, port)
        a = RelaySocket(reactor, bind_media(HOST, pa), (HOST, pa), poller,
                        bind_companion if companion else None)
        b = RelaySocket(reactor, bind_media(HOST, pb), (HOST, pb), poller,
                        bind_companion if companion else None)
        a.configure(peer=b, endpoint=sender.getsockname(), learning="immediate", reset=True)
        b.configure(peer=a, endpoint=sink.getsockname(), learning="immediate", reset=True)
        if srtp:
            from omnirtp.media.srtp import SrtpFactory, make_crypto
            a.set_transforms(inbound=[SrtpFactory().inbound(
                make_crypto("AES_CM_128_HMAC_SHA1_80", SRTP_KEY))])
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
    fill = ["/usr/bin/python3", "-c", FILL, str(port), str(pairs), str(queued), str(base)]
    if srtp:
        fill.append(SRTP_KEY.hex())
    subprocess.run(fill, check=True)
    first, last = relays[0], relays[-1]
    while first.packets <= queued or last.packets <= queued:
        poller.doRead()
    while sum(a.packets for a in relays) < pairs * (queued + 1):
        poller.doRead()
    if srtp:  # every SRTP datagram was decrypted (only the plain warm-up ones failed)
        failed = sum(a.errors for a in relays)
        if failed != pairs:
            sys.exit("%d datagrams failed, expected %d (the warm-up ones)" % (failed, pairs))


def count(pairs, queued, options):
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, os.path.abspath(__file__), "--child", str(pairs), str(queued)] + options,
        capture_output=True, text=True)
    if out.returncode:
        sys.exit("the relay under valgrind failed:\n" + out.stderr[-3000:])
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--base", type=int, default=BASE, help="first relay port")
    parser.add_argument("--no-companion", action="store_true",
                        help="no connected companions: measure the full path")
    parser.add_argument("--root", help="the omnirtp checkout to measure (default: this one)")
    parser.add_argument("--srtp", action="store_true",
                        help="SRTP datagrams and an unprotect step on each relay socket")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        relay(*args.child, base=args.base, companion=not args.no_companion, root=args.root,
              srtp=args.srtp)
        return
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    sys.path.insert(0, ROOT)
    from omnirtp.test.integration.peers import hold_port_range
    # the relay's ports, held in the test port registry while this runs:
    # test processes on this machine keep out of them (peers.free_port_range
    # also takes blocks above the ephemeral range, where they lie)
    hold_port_range(args.base, args.base + 2 * args.pairs + 1)
    options = ["--base", str(args.base)]
    if args.no_companion:
        options.append("--no-companion")
    if args.root:
        options += ["--root", os.path.abspath(args.root)]
    if args.srtp:
        options.append("--srtp")
    count(args.pairs, FEW, options)  # compiles what needs compiling
    few, many = count(args.pairs, FEW, options), count(args.pairs, MANY, options)
    per = (many - few) / (args.pairs * (MANY - FEW))
    print("%d instructions (user space) per relayed datagram  (%d pairs, %d vs %d queued each, %s)"
          % (round(per), args.pairs, MANY, FEW,
             ("SRTP -> RTP through the pipeline, " if args.srtp else "")
             + ("full path" if args.no_companion else
                "companions" if args.srtp else "inline companion path")))


if __name__ == "__main__":
    main()
