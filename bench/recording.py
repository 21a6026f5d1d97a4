"""What call recording costs: CPU per relayed datagram, recorded vs not.

    .venv/bin/python bench/recording.py [--sockets 200] [--queued 20] [--rounds 7]
                                        [--valgrind] [--base 52000]

``--sockets`` relay pairs on 127.0.0.1 (ports ``--base`` up) get ``--queued``
RTP datagrams (172 bytes) each from one sender; then the process (pinned
to CPU 0) relays them all and the CPU time it used (user + kernel,
``time.process_time``) is divided by the datagrams relayed.  Two variants,
alternated round by round in the same process so that the box's drift
hits both alike, median of ``--rounds``:

* ``plain``: the engine's usual path (MediaPoller, connected companions,
  relayed inline by the poller).
* ``pipeline``: the same with a middle step that does nothing: what
  leaving the inline path costs (the path every socket with a step takes).
* ``recorded``: the same sockets with a ``RecordTap`` (omnirtp.recording)
  on the receiving socket, as ``record`` in ``IMediaEngine.configure``
  puts there (a tap alone: the socket stays on the inline path, where the
  poller hands each datagram to the tap's sink); the pcap is written to a
  file in ``$TMPDIR``, and the flush that writes it is inside the measured
  time (it runs off the packet path but on the same CPU).

``--valgrind`` counts user-space instructions per datagram instead
(callgrind, the difference between 5 and 25 queued datagrams per socket,
as bench/instructions.py does): steadier than CPU time, but it misses the
kernel's share, which is most of a datagram's cost.

Not a test: it prints figures and never fails.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omnirtp.media.relay import (  # noqa: E402
    LEARN_HEURISTIC, MediaPoller, RelaySocket, bind_media, bind_udp)
from omnirtp.recording.writer import PcapRecorder, RecordTap  # noqa: E402

HOST = "127.0.0.1"
BASE = 52000
PACKET = bytes([0x80, 0]) + b"\x00" * 10 + b"\xd5" * 160


class Reactor:
    """The little of a reactor that MediaPoller, RelaySocket and the
    recorder use (the recorder's flush is called by hand, not scheduled)."""

    def seconds(self):
        return time.time()

    def addReader(self, reader):
        pass

    def removeReader(self, reader):
        pass

    def callLater(self, delay, f, *args):
        return None


class PassThrough:
    """A middle step that does nothing: the pipeline path without recording."""

    name = "pass"

    def rtp(self, data):
        return data

    rtcp = rtp

    def counters(self):
        return {}


class Relays:
    def __init__(self, n, sender, sink, recorder=None, step=False):
        self.reactor = Reactor()
        self.poller = MediaPoller(self.reactor)
        self.pairs = []
        for i in range(n):
            pa, pb = BASE + 2 * i, BASE + 2 * i + 1
            a = RelaySocket(self.reactor, bind_media(HOST, pa), (HOST, pa), self.poller,
                            lambda p=pa: bind_udp(HOST, p, reuse_port=True))
            b = RelaySocket(self.reactor, bind_media(HOST, pb), (HOST, pb), self.poller,
                            lambda p=pb: bind_udp(HOST, p, reuse_port=True))
            a.configure(peer=b, endpoint=sender.getsockname(), learning=LEARN_HEURISTIC,
                        reset=True)
            b.configure(peer=a, endpoint=sink.getsockname(), learning=LEARN_HEURISTIC,
                        reset=True)
            a.confirmed = b.confirmed = True
            if recorder is not None or step:
                a.set_transforms(middle=[RecordTap(recorder, a) if recorder else PassThrough()])
                a.update_pipeline()
            a._update_out()
            b._update_out()
            a.start()
            b.start()
            self.pairs.append((a, b))

    def packets(self):
        return sum(a.packets for a, _ in self.pairs)

    def close(self):
        for a, b in self.pairs:
            a.close()
            b.close()
        self.poller.close()


def measure(relays, sender, queued, recorder=None):
    before = relays.packets()
    for a, _ in relays.pairs:
        for _ in range(queued):
            sender.sendto(PACKET, a.local)
    want = before + len(relays.pairs) * queued
    t0 = time.process_time()
    deadline = time.monotonic() + 30
    done = before
    while done < want and time.monotonic() < deadline:
        relays.poller.doRead()
        done = relays.packets()
    if recorder is not None:
        recorder.flush()
    return (time.process_time() - t0) / max(1, done - before) * 1e6


def run(args, sender, sink, variant, rounds, queued):
    recorded = variant == "recorded"
    directory = tempfile.mkdtemp(prefix="omnirtp-bench-recording-")
    recorder = None
    if recorded:
        recorder = PcapRecorder("bench", os.path.join(directory, "bench.pcap"), "eth",
                                Reactor(), limit=10 ** 9)
        recorder.open()
    relays = Relays(args.sockets, sender, sink, recorder, step=variant == "pipeline")
    try:
        measure(relays, sender, 1, recorder)  # confirms, warms up
        return [measure(relays, sender, queued, recorder) for _ in range(rounds)]
    finally:
        relays.close()
        if recorder is not None:
            recorder.close()
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


def child(args):
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((HOST, 0))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    run(args, sender, sink, args.variant, 1, args.child)


def instructions(args, variant, queued):
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         os.path.abspath(__file__), "--sockets", str(args.sockets), "--base", str(args.base),
         "--child", str(queued),
         "--variant", variant], capture_output=True, text=True)
    if out.returncode:
        sys.exit("the relay under valgrind failed:\n" + out.stderr[-3000:])
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1))


def main(argv=None):
    global BASE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--queued", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--valgrind", action="store_true")
    parser.add_argument("--base", type=int, default=52000, help="first relay port")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    BASE = args.base
    if args.child is not None:
        child(args)
        return
    if args.valgrind:
        per = {}
        for variant in ("plain", "pipeline", "recorded"):
            few, many = instructions(args, variant, 5), instructions(args, variant, 25)
            per[variant] = (many - few) / (args.sockets * 20)
            print("%-9s %7d instructions (user space) per datagram" % (variant, per[variant]))
        print("recorded / plain: %.2f" % (per["recorded"] / per["plain"]))
        return
    os.sched_setaffinity(0, {0})
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((HOST, 0))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    samples = {"plain": [], "pipeline": [], "recorded": []}
    for _ in range(args.rounds):
        for variant in samples:
            samples[variant] += run(args, sender, sink, variant, 1, args.queued)
    print("%d sockets, %d datagrams queued on each, median of %d rounds (CPU 0)"
          % (args.sockets, args.queued, args.rounds))
    medians = {}
    for variant, values in samples.items():
        values.sort()
        medians[variant] = values[len(values) // 2]
        print("%-9s %6.2f us/datagram   (%s)" % (variant, medians[variant],
                                               " ".join("%.2f" % x for x in values)))
    print("recorded / plain: %.2f" % (medians["recorded"] / medians["plain"]))


if __name__ == "__main__":
    main()
