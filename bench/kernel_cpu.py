"""omnirtp's own CPU per relayed packet: userspace (table = -1) vs offloaded (table = 0).

Builds the caller <-> proxy <-> callee namespaces of
omnirtp/test/integration/test_kernel_netns.py (needs root), runs omnirtp in
the proxy namespace, sets up CALLS plain calls and sends PACKETS RTP packets
each way per call at a paced rate, then reads the daemon's CPU time
(utime + stime of its process, /proc) over the sending phase.  Packets the
kernel forwards cost softirq time that is not the daemon's: this measures
the proxy process, which is what the userspace relay spends and offload
saves.  Ratios only mean something within one run (shared machine).

    sudo python3 bench/kernel_cpu.py [--calls 20] [--packets 500]
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from omnirtp.test.integration import test_kernel_netns as k  # noqa: E402


class Shim:
    """What Namespaces/NetnsDaemon need of a test case."""

    def __init__(self):
        self.cleanups = []

    def addCleanup(self, f, *a, **kw):
        self.cleanups.append((f, a, kw))

    def fail(self, message):
        raise RuntimeError(message)

    def cleanup(self):
        while self.cleanups:
            f, a, kw = self.cleanups.pop()
            f(*a, **kw)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_pid(daemon):
    # `ip netns exec` execs the interpreter: the Popen pid is the daemon's
    return daemon.process.pid


def run(table, calls, packets):
    shim = Shim()
    try:
        nets = k.Namespaces(shim)
        daemon = k.NetnsDaemon(nets, ("--table=%d" % table,))
        shim.addCleanup(daemon.stop)
        daemon.start()
        case = k.KernelForwardingTests("test_offloaded_call")
        case.addCleanup = shim.addCleanup
        case.nets = nets
        legs = []
        for i in range(calls):
            legs.append(case.call(daemon, "bench-%d" % i))
        for s, to_a, to_b in legs:  # confirm both sides (userspace)
            s["a"].sendto(k.rtp(0), to_a)
            s["b"].sendto(k.rtp(0), to_b)
        time.sleep(2.5)  # one tick offloads (table = 0)
        for s, _a, _b in legs:
            k.receive(s["a"], 1, 0.5)
            k.receive(s["b"], 1, 0.5)
        pid = daemon_pid(daemon)
        before = cpu_seconds(pid)
        start = time.monotonic()
        for seq in range(1, packets + 1):
            for s, to_a, to_b in legs:
                s["a"].sendto(k.rtp(seq), to_a)
                s["b"].sendto(k.rtp(seq), to_b)
            if seq % 5 == 0:
                time.sleep(0.002)
            for s, _a, _b in legs:  # drain
                while k.select.select([s["a"], s["b"]], [], [], 0)[0]:
                    for sock in k.select.select([s["a"], s["b"]], [], [], 0)[0]:
                        sock.recv(2048)
        time.sleep(0.5)
        used = cpu_seconds(pid) - before
        elapsed = time.monotonic() - start
        sent = 2 * calls * packets
        query = daemon.request({"command": "statistics"})
        return used, elapsed, sent, query
    finally:
        shim.cleanup()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--packets", type=int, default=500)
    args = parser.parse_args()
    rows = []
    for table in (-1, 0):
        used, elapsed, sent, _stats = run(table, args.calls, args.packets)
        rows.append((table, used, elapsed, sent))
    print("%-6s %9s %10s %10s %14s" % ("table", "packets", "seconds", "daemon s", "daemon us/pkt"))
    for table, used, elapsed, sent in rows:
        print("%-6d %9d %10.2f %10.3f %14.2f" % (table, sent, elapsed, used, used / sent * 1e6))
    user, kern = rows[0][1] / rows[0][3], rows[1][1] / rows[1][3]
    print("offloaded / userspace daemon CPU per packet: %.3f" % (kern / user if user else float("nan")))


if __name__ == "__main__":
    main()
