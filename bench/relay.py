#!/usr/bin/env python3
"""Relay benchmark: CPU per relayed packet and max concurrent calls.

Compares, in one run and on the same packet generator:

  stock      a bare relay on Twisted's stock ``udp.Port`` (DatagramProtocol
             whose datagramReceived writes to the other leg)
  engine     omnirtp's ``EmbeddedEngine`` (RelaySocket readers)
  rtpengine  Debian's rtpengine 10.5 in userspace (--table=-1), calls set
             up over ng with offer/answer

A *call* is a pair of relay sockets, each fed 50 packets/s (172-byte RTP)
by the generator, so a call is 100 packets/s in and 100 out.  The relay
runs on CPU 0, the generator (this process) on CPU 1.

  cpu    process CPU time of the relay (utime + stime from /proc/<pid>/stat)
         divided by the packets it relayed back to the generator, at a fixed
         load; the median of several runs.
  calls  the largest number of calls with < 0.1% loss, found by growing the
         load and then bisecting.  When the generator cannot keep its pace
         the result is reported as a lower bound ('>=').

Run from the repository root:  .venv/bin/python bench/relay.py [--quick]
This is a benchmark, not a test; it binds 127.0.0.x ports 42000-42999
(ours), 43000-43999 and 23301 (rtpengine) only, plus ephemeral ports for
the generator.
"""

import argparse
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

OWN_MIN, OWN_MAX = 42000, 42999
RTPENGINE_MIN, RTPENGINE_MAX = 43000, 43999
NG_PORT = 23301
PPS_PER_FLOW = 50
LOSS_LIMIT = 0.001
RELAY_CPU = 0
GENERATOR_CPU = 1
GENERATOR_ADDRESS = "127.0.0.254"  # apart from the relays' 127.0.0.1, .2, ...
CLK_TCK = os.sysconf("SC_CLK_TCK")
PACKETS = 4096  # distinct sequence numbers the generator cycles through
KINDS = ("stock", "engine", "rtpengine")


def address(i):
    """The i-th loopback address used for media: 127.0.0.1, 127.0.0.2, ..."""
    return "127.0.0.%d" % (i + 1)


def calls_per_address(kind):
    # stock binds 2 ports per call; engine and rtpengine bind RTP+RTCP pairs.
    # Use 80% of a range: rtpengine picks ports at random and gives up
    # ("Ran out of ports") before a range is completely used.
    return int(0.8 * (OWN_MAX - OWN_MIN + 1)) // (2 if kind == "stock" else 4)


# -- the relay processes (stock and engine) ------------------------------


def serve(kind):
    """Child process: read the call list on stdin, print the relay sockets."""
    os.sched_setaffinity(0, {RELAY_CPU})
    from twisted.internet import reactor

    spec = json.loads(sys.stdin.readline())
    calls = [((a[0], a[1]), (b[0], b[1])) for a, b in spec["calls"]]
    per = calls_per_address(kind)
    addresses = [address(i) for i in range((len(calls) + per - 1) // per)]
    out = []
    if kind == "stock":
        from twisted.internet.protocol import DatagramProtocol

        class Forward(DatagramProtocol):
            other = None
            dest = None

            def datagramReceived(self, data, addr):
                self.other.transport.write(data, self.dest)

        from twisted.internet.error import CannotListenError

        next_port = {}

        def listen(host, proto):
            # skip ports someone else holds (ephemeral ports may fall in our range)
            port = next_port.get(host, OWN_MIN)
            while True:
                if port > OWN_MAX:
                    raise RuntimeError("no free port left on %s" % (host,))
                try:
                    reactor.listenUDP(port, proto, interface=host)
                    break
                except CannotListenError:
                    port += 1
            next_port[host] = port + 1
            return (host, port)

        for i, (a, b) in enumerate(calls):
            host = addresses[i // per]
            fa, fb = Forward(), Forward()
            fa.other, fa.dest = fb, b
            fb.other, fb.dest = fa, a
            out.append((listen(host, fa), listen(host, fb)))
    else:
        from omnirtp.media import relay
        from omnirtp.media.engine import EmbeddedEngine

        if os.environ.get("RELAY_BENCH_BATCH"):  # compare read-loop sizes
            relay.READ_BATCH = int(os.environ["RELAY_BENCH_BATCH"])

        engine = EmbeddedEngine(reactor, {h: (OWN_MIN, OWN_MAX) for h in addresses})
        for i, (a, b) in enumerate(calls):
            host = addresses[i // per]
            d = engine.allocate("call%d" % i, host, 2)
            pa, pb = d.result
            common = {"learning": "heuristic", "reset": True}
            engine.configure(
                "call%d" % i,
                [
                    dict(common, local=(host, pa), peer=(host, pb), endpoint=a),
                    dict(common, local=(host, pb), peer=(host, pa), endpoint=b),
                ],
            )
            out.append(((host, pa), (host, pb)))
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    profile = os.environ.get("RELAY_BENCH_PROFILE")
    if profile:  # development aid: cProfile the relay (slows it down)
        import cProfile

        cProfile.runctx("reactor.run()", globals(), {"reactor": reactor}, profile)
    else:
        reactor.run()


class PythonRelay:
    def __init__(self, kind, calls):
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.proc.stdin.write(json.dumps({"calls": calls}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("%s relay failed to start" % (kind,))
        self.sockets = [(tuple(a), tuple(b)) for a, b in json.loads(line)]
        self.pid = self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- rtpengine over ng ---------------------------------------------------


def bencode(value):
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(value[k]) for k in sorted(value)) + b"e"
    raise TypeError("cannot bencode %r" % (value,))


def bdecode(data, i=0):
    """Decode one value at ``data[i:]``; return (value, next index)."""
    c = data[i : i + 1]
    if c == b"i":
        j = data.index(b"e", i)
        return int(data[i + 1 : j]), j + 1
    if c in (b"l", b"d"):
        items, i = [], i + 1
        while data[i : i + 1] != b"e":
            v, i = bdecode(data, i)
            items.append(v)
        if c == b"l":
            return items, i + 1
        return {items[k].decode(): items[k + 1] for k in range(0, len(items), 2)}, i + 1
    j = data.index(b":", i)
    n = int(data[i:j])
    return data[j + 1 : j + 1 + n], j + 1 + n


class NGClient:
    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2.0)
        self.dest = ("127.0.0.1", port)
        self.n = 0

    def request(self, command, **kw):
        self.n += 1
        cookie = b"b%d" % self.n
        kw["command"] = command
        self.sock.sendto(cookie + b" " + bencode(kw), self.dest)
        while True:
            data = self.sock.recv(65536)
            if data.startswith(cookie + b" "):
                reply, _ = bdecode(data, len(cookie) + 1)
                if reply.get("result") not in (b"ok", b"pong"):
                    raise RuntimeError("ng %s failed: %r" % (command, reply))
                return reply

    def close(self):
        self.sock.close()


def sdp(party, session):
    host, port = party
    return (
        "v=0\r\no=- %d 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
        "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n" % (session, host, host, port)
    )


def sdp_media(reply):
    body = reply["sdp"].decode()
    port = int(re.search(r"^m=audio (\d+)", body, re.M).group(1))
    host = re.search(r"^c=IN IP4 (\S+)", body, re.M).group(1)
    return host, port


class RtpEngine:
    def __init__(self, calls):
        exe = shutil.which("rtpengine") or "/usr/sbin/rtpengine"
        per = calls_per_address("rtpengine")
        n_addr = (len(calls) + per - 1) // per
        if n_addr == 1:
            interfaces = ["--interface=127.0.0.1"]
        else:  # one named interface (and port pool) per loopback address
            interfaces = ["--interface=i%d/%s" % (i, address(i)) for i in range(n_addr)]
        cmd = [
            "taskset", "-c", str(RELAY_CPU), exe, "--table=-1", "--foreground",
            "--config-file=none", *interfaces, "--listen-ng=127.0.0.1:%d" % NG_PORT,
            "--port-min=%d" % RTPENGINE_MIN, "--port-max=%d" % RTPENGINE_MAX,
            "--num-threads=1", "--log-stderr", "--log-level=3",
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        ng = NGClient(NG_PORT)
        try:
            for _ in range(50):
                try:
                    ng.request("ping")
                    break
                except (socket.timeout, ConnectionRefusedError):
                    if self.proc.poll() is not None:
                        raise RuntimeError("rtpengine exited with %s" % self.proc.returncode)
                    time.sleep(0.1)
            else:
                raise RuntimeError("rtpengine does not answer ng ping")
            self.sockets = []
            for i, (a, b) in enumerate(calls):
                cid = "bench-%d" % i
                extra = {} if n_addr == 1 else {"direction": ["i%d" % (i // per)] * 2}
                offer = ng.request("offer", **{"call-id": cid, "from-tag": "a%d" % i,
                                               "sdp": sdp(a, i), **extra})
                answer = ng.request("answer", **{"call-id": cid, "from-tag": "a%d" % i,
                                                 "to-tag": "b%d" % i, "sdp": sdp(b, i)})
                # the offer goes to B: it names the socket B sends to
                self.sockets.append((sdp_media(answer), sdp_media(offer)))
        except BaseException:
            self.stop()
            raise
        finally:
            ng.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- the generator -------------------------------------------------------


def process_times(pid):
    """(utime, stime) of ``pid`` (all threads) in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def process_cpu(pid):
    """utime + stime of ``pid`` (all threads) in seconds."""
    return sum(process_times(pid))


def rtp_packets(n):
    out = []
    for seq in range(n):
        header = bytes([0x80, 0x00, seq >> 8 & 0xFF, seq & 0xFF])
        header += (seq * 160 & 0xFFFFFFFF).to_bytes(4, "big") + b"\x12\x34\x56\x78"
        out.append(header + b"\xff" * 160)
    return out


class Generator:
    """Party sockets on both sides and a paced sender/receiver."""

    def __init__(self, sockets_per_side=32):
        self.sides = []
        self.poller = select.epoll()
        self.receivers = {}
        for _ in range(2):
            side = []
            for _ in range(sockets_per_side):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
                except OSError:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
                s.bind((GENERATOR_ADDRESS, 0))
                s.setblocking(False)
                side.append(s)
                self.poller.register(s.fileno(), select.EPOLLIN)
                self.receivers[s.fileno()] = s
            self.sides.append(side)
        self.packets = rtp_packets(PACKETS)
        self.buf = bytearray(2048)

    def parties(self, calls):
        a, b = self.sides
        return [(a[i % len(a)].getsockname(), b[i % len(b)].getsockname()) for i in range(calls)]

    def close(self):
        for side in self.sides:
            for s in side:
                s.close()
        self.poller.close()

    def drain(self, quiet=0.2):
        """Read (and count) until nothing arrived for ``quiet`` seconds."""
        poll, receivers, buf = self.poller.poll, self.receivers, self.buf
        received = 0
        while True:
            events = poll(quiet)
            if not events:
                return received
            for fd, _ in events:
                s = receivers[fd]
                while True:
                    try:
                        s.recv_into(buf)
                    except OSError:
                        break
                    received += 1

    def set_receive_buffer(self, size):
        for side in self.sides:
            for s in side:
                try:
                    s.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE
                except OSError:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def keys(self):
        return [s.getsockname() for side in self.sides for s in side]

    def run(self, relay_sockets, seconds, receive=True, mark_at=None, on_mark=None):
        """Send 50 pps per flow for ``seconds``.

        Returns ``(sent, received, cpu, wall, rate)``; with ``receive`` False
        nothing is read (``received`` is 0) and the party sockets drop what
        the relay sends them (see :func:`udp_drops`).  ``on_mark(sent)`` is
        called once, ``mark_at`` seconds after the start.
        """
        a, b = self.sides
        flows = []
        for i, (ra, rb) in enumerate(relay_sockets):
            flows.append((a[i % len(a)].sendto, ra))
            flows.append((b[i % len(b)].sendto, rb))
        nflows = len(flows)
        rate = PPS_PER_FLOW * nflows
        packets, npk = self.packets, len(self.packets)
        poll, receivers, buf = self.poller.poll, self.receivers, self.buf
        sleep = time.sleep
        sent = received = 0
        cpu0 = time.process_time()
        start = time.perf_counter()
        end = start + seconds
        mark = start + mark_at if on_mark is not None else end + 1
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if now >= mark:
                on_mark(sent)
                mark = end + 1
            due = int((now - start) * rate)
            while sent < due:
                send, dest = flows[sent % nflows]
                try:
                    send(packets[(sent // nflows) % npk], dest)
                except OSError:
                    pass
                sent += 1
            if not receive:
                sleep(0.0003)
                continue
            for fd, _ in poll(0.0005):
                s = receivers[fd]
                while True:
                    try:
                        s.recv_into(buf)
                    except OSError:
                        break
                    received += 1
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        if receive:
            received += self.drain(0.3)
        return sent, received, cpu, wall, rate


def udp_drops(*key_sets):
    """Kernel receive drops of the UDP sockets bound to each set of keys.

    Returns one total per set (IPv4 ``(host, port)`` keys); reads
    /proc/net/udp once.
    """
    wanted = [set(keys) for keys in key_sets]
    totals = [0] * len(wanted)
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            hexaddr, hexport = fields[1].split(":")
            key = (socket.inet_ntoa(struct.pack("<I", int(hexaddr, 16))), int(hexport, 16))
            for i, keys in enumerate(wanted):
                if key in keys:
                    totals[i] += int(fields[-1])
    return totals


def start_relay(kind, parties):
    if kind == "rtpengine":
        return RtpEngine(parties)
    return PythonRelay(kind, parties)


def cpu_run(gen, kind, calls, warmup, seconds):
    """One CPU measurement: µs of relay CPU per relayed packet."""
    gen.set_receive_buffer(8 << 20)
    gen.drain(0.05)
    relay = start_relay(kind, gen.parties(calls))
    try:
        gen.run(relay.sockets, warmup)
        u0, s0 = process_times(relay.pid)
        sent, received, gcpu, wall, rate = gen.run(relay.sockets, seconds)
        u1, s1 = process_times(relay.pid)
    finally:
        relay.stop()
    c0, c1 = u0 + s0, u1 + s1
    return {
        "us_per_packet": 1e6 * (c1 - c0) / max(received, 1),
        "user_share": (u1 - u0) / max(c1 - c0, 1e-9),
        "relay_cpu": (c1 - c0) / wall,
        "loss": 1 - received / max(sent, 1),
        "generator_cpu": gcpu / wall,
        "achieved": sent / wall / rate,
    }


def load_step(gen, kind, calls, seconds, warmup=1.0):
    """Run ``calls`` calls without reading the replies; measure throughput.

    The party sockets get a minimal receive buffer and are not read, so the
    kernel drops what the relay sends them and counts it in /proc/net/udp.
    After ``warmup`` seconds, for ``seconds``: loss = 1 - (packets that
    reached the parties) / (packets sent).  Counting a window in the steady
    state (rather than until the relay has emptied its queues) makes a relay
    that falls behind show as loss even while its socket buffers still hold
    the backlog.
    """
    gen.set_receive_buffer(0)
    gen.drain(0.05)
    parties = gen.keys()
    relay = start_relay(kind, gen.parties(calls))
    relay_keys = [k for pair in relay.sockets for k in pair]
    first = {}

    def mark(sent):
        t, gcpu = time.perf_counter(), time.process_time()
        delivered, drops = udp_drops(parties, relay_keys)
        first.update(sent=sent, delivered=delivered, cpu=process_cpu(relay.pid), drops=drops,
                     t=t, gcpu=gcpu)

    try:
        sent, _, _, _, rate = gen.run(relay.sockets, warmup + seconds, receive=False,
                                      mark_at=warmup, on_mark=mark)
        wall = time.perf_counter() - first["t"]
        gcpu = time.process_time() - first["gcpu"]
        cpu = process_cpu(relay.pid) - first["cpu"]
        delivered, drops = udp_drops(parties, relay_keys)
        delivered -= first["delivered"]
        drops -= first["drops"]
    finally:
        relay.stop()
    sent -= first["sent"]
    return {
        "calls": calls,
        "loss": 1 - delivered / max(sent, 1),
        "relay_drops": drops,
        "relay_cpu": cpu / wall,
        "generator_cpu": gcpu / wall,
        "achieved": sent / wall / rate,
    }


def log_step(log, kind, s):
    log("    %-9s %5d calls: loss %.3f%% (relay socket drops %d)  relay cpu %3.0f%%  "
        "generator cpu %3.0f%%  pace %.1f%%"
        % (kind, s["calls"], 100 * s["loss"], s["relay_drops"], 100 * s["relay_cpu"],
           100 * s["generator_cpu"], 100 * s["achieved"]))


def capacity(gen, kind, start, seconds, limit, refine, log, warmup=1.0):
    """Largest call count with loss < 0.1%; (calls, bound_is_lower, steps)."""
    good, bad, steps = 0, None, []
    n = start
    lower_bound = False
    while n <= limit:
        s = load_step(gen, kind, n, seconds, warmup)
        steps.append(s)
        log_step(log, kind, s)
        if s["achieved"] < 0.99:
            lower_bound = True  # the generator, not the relay, is the limit
            break
        if s["loss"] < LOSS_LIMIT:
            good = n
            n = int(n * 1.6)
        else:
            bad = n
            break
    else:
        lower_bound = True
    if bad is not None:
        for _ in range(refine):
            if bad - good <= max(10, good // 20):
                break
            n = (good + bad) // 2
            s = load_step(gen, kind, n, seconds, warmup)
            steps.append(s)
            log_step(log, kind, s)
            if s["achieved"] < 0.99:
                lower_bound = True
                break
            if s["loss"] < LOSS_LIMIT:
                good = n
            else:
                bad = n
    return good, lower_bound, steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one short run each, coarse capacity search")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of %s" % (KINDS,))
    p.add_argument("--cpu-calls", type=int, default=200, help="calls during the CPU measurement")
    p.add_argument("--no-capacity", action="store_true", help="skip the max-calls search")
    p.add_argument("--max-calls", type=int, default=4000, help="stop the search here")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--serve", choices=("stock", "engine"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve(args.serve)

    kinds = [k for k in args.kinds.split(",") if k]
    runs, warmup, seconds, step_seconds, refine = (
        (1, 0.5, 2.0, 2.0, 1) if args.quick else (5, 1.0, 4.0, 3.0, 3)
    )
    if os.cpu_count() < 2:
        sys.exit("needs 2 CPUs (relay on CPU 0, generator on CPU 1)")
    os.sched_setaffinity(0, {GENERATOR_CPU})

    def log(msg):
        print(msg, flush=True)

    gen = Generator()
    results = {}
    t0 = time.time()
    try:
        log("CPU per relayed packet, %d calls (%d packets/s in), %d run(s) of %.0f s"
            % (args.cpu_calls, args.cpu_calls * 2 * PPS_PER_FLOW, runs, seconds))
        for kind in kinds:
            samples = []
            for _ in range(runs):
                r = cpu_run(gen, kind, args.cpu_calls, warmup, seconds)
                samples.append(r)
                log("    %-9s %6.2f us/packet (%2.0f%% user)  relay cpu %3.0f%%  loss %.3f%%"
                    % (kind, r["us_per_packet"], 100 * r["user_share"], 100 * r["relay_cpu"],
                       100 * r["loss"]))
            results[kind] = {
                "us_per_packet": statistics.median(s["us_per_packet"] for s in samples),
                "cpu_samples": samples,
            }
        if not args.no_capacity:
            log("Max concurrent calls at < %.1f%% loss (50 pps each way per call), %.0f s steps"
                % (100 * LOSS_LIMIT, step_seconds))
            for kind in kinds:
                calls, lower, steps = capacity(gen, kind, 200, step_seconds, args.max_calls, refine, log,
                                              warmup)
                results[kind].update(max_calls=calls, max_calls_lower_bound=lower, steps=steps)
    finally:
        gen.close()

    ref = results.get("rtpengine")
    log("")
    log("%-10s %14s %10s %12s %10s" % ("relay", "us/packet", "x rtpengine", "max calls", "x rtpengine"))
    for kind in kinds:
        r = results[kind]
        ratio = "%.2f" % (r["us_per_packet"] / ref["us_per_packet"]) if ref else "-"
        if "max_calls" in r:
            calls = ("%s%d" % (">=" if r["max_calls_lower_bound"] else "", r["max_calls"]))
            cratio = "%.2f" % (r["max_calls"] / ref["max_calls"]) if ref and ref.get("max_calls") else "-"
        else:
            calls = cratio = "-"
        log("%-10s %14.2f %10s %12s %10s" % (kind, r["us_per_packet"], ratio, calls, cratio))
    log("(%.0f s in all)" % (time.time() - t0))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
