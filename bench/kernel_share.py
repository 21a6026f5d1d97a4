"""The kernel's CPU per offloaded packet: what nftables forwarding adds.

Offloaded (``table = N``), a packet costs the proxy process nothing: the
kernel rewrites and forwards it in softirq, on loopback inside the sender's
``sendto``.  This measures that share directly, in one process pinned to
one CPU, in a network namespace made for the run (needs root):

* ``direct``     party X sends to party Y's socket (127.0.0.3), Y reads;
* ``offloaded``  X sends to our socket L instead, and an ``NftForwarder``
                 stream (X -> L, out of O to Y) makes the kernel deliver it
                 to Y from O (every packet checked to arrive from O).

Both loops send the same datagrams in bursts of BURST and read them all
back; the CPU time (user + system) of the process per packet, median of
ROUNDS alternating rounds.  ``offloaded - direct`` is the kernel's share of
an offloaded packet: the four map lookups, the rewrites and the second
routing decision.  (What a userspace relay spends instead is its own
receive and send: rtpengine's µs per packet in ``bench/table.py``.)  On
a loaded box softirq work may move to ksoftirqd and leave both loops'
figures; the difference is the steadier number.

    sudo python3 bench/kernel_share.py [--packets 100000] [--rounds 5]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BURST = 32
PAYLOAD = bytes(172)


def _bound(address):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((address, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return s


def _loop(x, y, to, expect, packets):
    """CPU seconds to send ``packets`` datagrams from ``x`` to ``to`` and
    read them at ``y`` (each from ``expect``)."""
    sent = 0
    start = time.process_time()
    while sent < packets:
        for _ in range(BURST):
            x.sendto(PAYLOAD, to)
        sent += BURST
        for _ in range(BURST):
            _data, source = y.recvfrom(2048)
            if source != expect:
                raise RuntimeError("from %r, not %r" % (source, expect))
    return time.process_time() - start


def measure(packets=100000, rounds=5, log=print):
    """``{"direct": µs, "offloaded": µs, "kernel": µs}`` per packet (medians);
    run inside a network namespace with forwarding on."""
    from omnirtp.media.kernel import NftForwarder, Stream

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    fw = NftForwarder(0)
    fw.start()
    x, y = _bound("127.0.0.2"), _bound("127.0.0.3")
    ours = [_bound("127.0.0.1") for _ in range(2)]  # L and O: ports of our own
    for s in (x, y):
        s.settimeout(2.0)
    local, out = ours[0].getsockname(), ours[1].getsockname()
    try:
        fw.offload("bench", [Stream(local, x.getsockname(), out, y.getsockname())])
        _loop(x, y, local, out, 2000)  # warm both paths
        _loop(x, y, y.getsockname(), x.getsockname(), 2000)
        samples = {"direct": [], "offloaded": []}
        for i in range(rounds):
            for kind in (("direct", "offloaded") if i % 2 == 0 else ("offloaded", "direct")):
                if kind == "direct":
                    cpu = _loop(x, y, y.getsockname(), x.getsockname(), packets)
                else:
                    cpu = _loop(x, y, local, out, packets)
                samples[kind].append(1e6 * cpu / packets)
                log("    %-9s %6.2f us/packet (send + receive)" % (kind, samples[kind][-1]))
        counted = fw.counters(locals=[local])[local][0]
        if counted < rounds * packets:
            raise RuntimeError("the kernel counted %d packets, not %d or more"
                               % (counted, rounds * packets))
        direct = statistics.median(samples["direct"])
        offloaded = statistics.median(samples["offloaded"])
        kernel = statistics.median(o - d for o, d in zip(samples["offloaded"],
                                                         samples["direct"]))
        return {"direct": direct, "offloaded": offloaded, "kernel": kernel,
                "samples": samples, "packets": packets}
    finally:
        fw.stop()
        for s in [x, y] + ours:
            s.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--packets", type=int, default=100000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        r = measure(args.packets, args.rounds)
        print("direct %.2f, offloaded %.2f us/packet: the kernel's share %.2f us/packet"
              % (r["direct"], r["offloaded"], r["kernel"]))
        return
    name = "omnirtp-share-%s" % uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        run = ["ip", "netns", "exec", name]
        subprocess.run(run + ["ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(run + ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], check=True)
        subprocess.run(run + [sys.executable, os.path.abspath(__file__), "--child",
                              "--packets", str(args.packets), "--rounds", str(args.rounds)],
                       check=True, env=dict(os.environ, PYTHONPATH=ROOT))
    finally:
        subprocess.run(["ip", "netns", "delete", name])


if __name__ == "__main__":
    main()
