"""Cost of driving nftables for kernel forwarding (docs/kernel.md).

Runs itself inside a network namespace it creates (needs root) and times,
with libnftables' JSON API through omnirtp.media.kernel: one batch per call
that adds a call's 4 streams (RTP and RTCP, both ways), one that removes
them (plus the counter read and delete that follows), and one counter read
with N streams installed.

    python3 bench/nft_batch.py [--calls 500]
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def streams(i):
    from omnirtp.media.kernel import Stream
    base = 20000 + 4 * i
    a, b = ("10.1.%d.%d" % (i // 250, i % 250 + 1), 4000), ("10.2.%d.%d" % (i // 250, i % 250 + 1), 5000)
    out = []
    for k in (0, 1):
        out.append(Stream(("10.0.0.1", base + k), (a[0], a[1] + k), ("10.0.0.1", base + 2 + k), (b[0], b[1] + k)))
        out.append(Stream(("10.0.0.1", base + 2 + k), (b[0], b[1] + k), ("10.0.0.1", base + k), (a[0], a[1] + k)))
    return out


def measure(calls):
    from omnirtp.media.kernel import NftForwarder
    fw = NftForwarder(0)
    fw.start()
    t = time.perf_counter()
    for i in range(calls):
        fw.offload("call-%d" % i, streams(i))
    add = (time.perf_counter() - t) / calls
    reads = []
    for _ in range(5):
        t = time.perf_counter()
        counts = fw.counters()
        reads.append(time.perf_counter() - t)
    assert len(counts) == 4 * calls
    t = time.perf_counter()
    for i in range(calls):
        fw.offload("call-%d" % i, [])
    remove = (time.perf_counter() - t) / calls
    t = time.perf_counter()
    fw.counters()
    empty = time.perf_counter() - t
    fw.stop()
    print("calls %d (streams %d)" % (calls, 4 * calls))
    print("add a call (1 batch, 4 streams):        %.2f ms (mean, growing table)" % (add * 1e3))
    print("remove a call (batch, read, batch):     %.2f ms (mean, shrinking table)" % (remove * 1e3))
    print("batches %d" % fw.batches)
    print("read all counters, %5d streams:       %.2f ms (best of 5)" % (4 * calls, min(reads) * 1e3))
    print("read counters, none offloaded:          %.3f ms" % (empty * 1e3))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_netns:
        measure(args.calls)
        return
    name = "omnirtp-nftbench-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "sh", "-c",
                        "echo 1 > /proc/sys/net/ipv4/ip_forward"], check=True)
        subprocess.run(["ip", "netns", "exec", name, sys.executable, os.path.abspath(__file__),
                        "--in-netns", "--calls", str(args.calls)], check=True)
    finally:
        subprocess.run(["ip", "netns", "delete", name])


if __name__ == "__main__":
    main()
