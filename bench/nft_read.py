"""What reading the kernel's per-stream counters costs, by read path.

Makes a network namespace, starts an ``NftForwarder`` there (table
``omnirtp-0``) with STREAMS offloaded streams (no traffic: reading costs the
same whatever the counters hold) and times, median of ROUNDS, in this
process's CPU time (what the proxy process would spend):

* ``libnftables list``   ``list map inet omnirtp-0 daddr4`` (and daddr6),
                         text output parsed (the once-a-second tick before)
* ``libnftables get``    ``get element ... { keys }`` of one call (4 streams)
                         and of every stream
* ``netlink dump``       one NFT_MSG_GETSETELEM dump per map over our own
                         netlink socket (``omnirtp.media.nfnetlink``)
* ``netlink get``        a GETSETELEM lookup of one call's keys, of every key

    sudo python3 bench/nft_read.py [--streams 800,4000] [--rounds 20]

Needs root.  Ratios only mean something within one run (shared machine).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def streams(count):
    from omnirtp.media.kernel import Stream

    out = []
    for i in range(count):
        a = "10.%d.%d.%d" % (1 + i // 62500, (i // 250) % 250, 1 + i % 250)
        local = ("10.200.0.1", 20000 + 2 * (i % 20000))
        peer = ("10.200.0.1", 20001 + 2 * (i % 20000))
        out.append(Stream(local, (a, 4000 + i % 1000), peer, ("10.201.0.%d" % (1 + i % 250),
                                                               5000 + i % 1000)))
    return out


def timed(fn, rounds):
    samples = []
    for _ in range(rounds):
        t = time.process_time()
        fn()
        samples.append(time.process_time() - t)
    return 1000 * statistics.median(samples)


def child(counts, rounds):
    from omnirtp.media import kernel, nfnetlink

    print("%-8s %-28s %10s" % ("streams", "read", "ms (CPU)"))
    for count in counts:
        fw = kernel.NftForwarder(0)
        fw.start()
        all_streams = streams(count)
        for i in range(0, count, 4):
            fw.offload("c%d" % i, all_streams[i:i + 4])
        one = all_streams[:4]
        reader = nfnetlink.CounterReader()
        keys_one = [nfnetlink.key_bytes(kernel.elements(s)[1][1]) for s in one]
        keys_all = [nfnetlink.key_bytes(kernel.elements(s)[1][1]) for s in all_streams]
        assert len(reader.dump(fw.table, "daddr4")) == count
        assert len(reader.get(fw.table, "daddr4", keys_all)) == count
        assert len(fw._read(None)) == count
        rows = [
            ("libnftables list (text)", lambda: fw._read(None)),
            ("libnftables get, 1 call", lambda: fw._read(one)),
            ("netlink dump", lambda: (reader.dump(fw.table, "daddr4"),
                                      reader.dump(fw.table, "daddr6"))),
            ("netlink get, 1 call", lambda: reader.get(fw.table, "daddr4", keys_one)),
            ("netlink get, all", lambda: reader.get(fw.table, "daddr4", keys_all)),
        ]
        for name, fn in rows:
            print("%-8d %-28s %10.3f" % (count, name, timed(fn, rounds)), flush=True)
        reader.close()
        fw.stop()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--streams", default="800,4000")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    counts = [int(c) for c in args.streams.split(",")]
    if args.child:
        return child(counts, args.rounds)
    name = "omnirtp-read-%s" % uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        run = ["ip", "netns", "exec", name]
        subprocess.run(run + ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], check=True)
        env = dict(os.environ, PYTHONPATH=ROOT)
        subprocess.run(run + [sys.executable, os.path.abspath(__file__), "--child",
                              "--streams", args.streams, "--rounds", str(args.rounds)],
                       check=True, env=env)
    finally:
        subprocess.run(["ip", "netns", "delete", name])


if __name__ == "__main__":
    main()
