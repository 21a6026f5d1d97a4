#!/usr/bin/env python3
"""One-way latency through the relay of a probe call beside bench/workers.py's load.

    .venv/bin/python bench/worker_latency.py KIND CALLS SECONDS [COALESCE_US]
    e.g. omnirtp2 300 8; omnirtp2c 300 8 500   (kinds: bench/workers.py's)

Starts the daemon of KIND on CPU 0 with CALLS calls of bench/relay.py's
generator (this process, CPU 1) plus one probe call, whose two parties
live in a child process (CPU 1 too): it sends one 172-byte RTP packet
every 3 ms carrying its send time and reads it back from the other party,
so both times come from one clock.  Prints the probe's one-way p50, p90,
p99 and maximum in microseconds, and the load's loss, CPU per packet and
context switches per packet.  docs/scaling.md ("Cheaper and rarer
wake-ups") has the figures for the media loop's coalescing delay.
"""
import os
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import relay  # noqa: E402  (bench/relay.py)
import workers  # noqa: E402  (bench/workers.py)
#: the probe's two parties (run by a child process: file descriptors in argv)
PROBE = r'''
import socket, struct, sys, time
a = socket.socket(fileno=int(sys.argv[1])); b = socket.socket(fileno=int(sys.argv[2]))
dest = (sys.argv[3], int(sys.argv[4])); seconds = float(sys.argv[5])
b.settimeout(0.5)
lat = []; lost = 0; seq = 0
end = time.perf_counter() + seconds
while time.perf_counter() < end:
    seq = (seq + 1) & 0xFFFF
    t = time.perf_counter_ns()
    a.sendto(bytes([0x80, 0, seq >> 8, seq & 0xFF]) + bytes(8) + struct.pack("!Q", t) + bytes(152), dest)
    try:
        d = b.recv(2048)
        lat.append((time.perf_counter_ns() - struct.unpack("!Q", d[12:20])[0]) / 1000)
    except socket.timeout:
        lost += 1
    time.sleep(0.003)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print("probe: %d samples, lost %d, one-way us p50 %.0f p90 %.0f p99 %.0f max %.0f" % (len(lat), lost, q(.5), q(.9), q(.99), lat[-1]))
'''


def main():
    kind, calls, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if len(sys.argv) > 4:
        workers.COALESCE_US = int(sys.argv[4])
    os.sched_setaffinity(0, {relay.GENERATOR_CPU})
    gen = relay.Generator()
    gen.set_receive_buffer(8 << 20)
    pa = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); pa.bind(("127.0.0.1", 0))
    pb = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); pb.bind(("127.0.0.1", 0))
    parties = gen.parties(calls) + [(pa.getsockname(), pb.getsockname())]
    r = workers.Relay(kind, parties, "0", workers.PORT_RANGE)
    try:
        dest_a = r.sockets[-1][0]
        # warm the probe call (learning) before the load
        pa.sendto(relay.rtp_packets(1)[0], dest_a); pb.settimeout(2); pb.recv(2048)
        pb.sendto(relay.rtp_packets(1)[0], r.sockets[-1][1]); pa.settimeout(2); pa.recv(2048)
        probe = subprocess.Popen([sys.executable, "-c", PROBE, str(pa.fileno()), str(pb.fileno()), dest_a[0], str(dest_a[1]), str(seconds)], pass_fds=(pa.fileno(), pb.fileno()))
        pids = r.pids()
        s0 = workers.snapshot(pids)
        sent, received, cpu, wall, rate = gen.run(r.sockets[:-1], seconds + 0.5)
        s1 = workers.snapshot(pids)
        probe.wait()
        d = workers.difference(s0, s1)
        print("%s: load sent %d loss %.3f%% us/packet %.2f switches/packet %.3f" % (
            kind, sent, 100 * (1 - received / sent), 1e6 * sum(d["cpu"].values()) / received,
            sum(d["switches"].values()) / received))
    finally:
        r.stop()
        gen.close()


if __name__ == "__main__":
    main()
