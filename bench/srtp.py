#!/usr/bin/env python3
"""SRTP <-> RTP calls per core: omnirtp beside rtpengine 10.5, in one run.

    .venv/bin/python bench/srtp.py [--calls 300] [--rounds 5] [--seconds 4]
                                   [--warmup 3.5] [--modes srtp,plain]
                                   [--kinds omnirtp,rtpengine] [--json out.json]
                                   [--before CHECKOUT] [--instructions]

Both proxies run as daemons on CPU 0 and get their calls over ng, as a SIP
proxy would set them up:

  omnirtp    this checkout under twistd, ``--num-threads=0`` (the embedded
             engine: control and media in one process)
  rtpengine  Debian's rtpengine 10.5 in userspace (``--table=-1``),
             ``--num-threads=1``

Two modes, measured in the same run:

  srtp   caller A offers ``RTP/SAVP`` with one ``a=crypto``
         (AES_CM_128_HMAC_SHA1_80, its own key) and the flag
         ``transport-protocol=RTP/AVP``; callee B answers plain ``RTP/AVP``.
         The proxy unprotects A's SRTP towards B and protects B's RTP towards
         A with the key of its answer: one unprotect and one protect per
         pair of packets.
  plain  the same with ``RTP/AVP`` on both legs (no crypto): the plain
         relay path, for reference.

The generator (this process, CPU 1) sends 50 packets/s per direction per call:
real SRTP from A (pylibsrtp, each call with its own key, sequence numbers
from 1, protected before the run starts) and plain 172-byte RTP from B.  It
reads what comes back and checks the sizes (SRTP towards A is 10 bytes
longer: the HMAC-SHA1-80 tag).

Figure: the proxy's CPU time (utime + stime of all its threads, from
``/proc/<pid>/stat``) over a window of ``--seconds``, after ``--warmup``
seconds (longer than the 3 s learning window of both proxies), divided by
the packets the generator got back.  Calls per core = 1 / (CPU per packet x
100 packets/s per call): the calls one core could carry at that cost per
packet.  It is measured below saturation, so it includes the per-wakeup
costs of that load.  Rounds are interleaved (each configuration once per
round, in a rotating order) and the medians are reported, with the ratio
omnirtp / rtpengine of each mode.  The generator's own CPU share and its
pace are printed: a generator near 100% CPU or below 99% pace would be
the bottleneck, and the figure would not be the proxy's.

``--before CHECKOUT`` adds the omnirtp of another checkout (kind ``before``)
to the same run.  ``--instructions`` counts instead, per proxy and mode, the
user-space instructions per relayed packet under valgrind (callgrind,
instrumentation switched on only around 200 packets per flow of 20 calls):
a figure the load on the box does not move.

Ports: media 24000-27999 on 127.0.0.1 (below the kernel's ephemeral
range), ng 23311 (rtpengine) and 23312 (omnirtp); the generator's parties
on 127.0.0.254.  ``--port-base N`` moves all of them by N - 24000 (media
N to N + 3999), e.g. when a soak or a test holds that range.
"""

import argparse
import base64
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from relay import (  # noqa: E402  (bench/relay.py)
    GENERATOR_CPU, PPS_PER_FLOW, RELAY_CPU, Generator, NGClient, process_times, sdp_media)
from omnirtp.test.integration.peers import hold_port_range  # noqa: E402

PORT_MIN, PORT_MAX = 24000, 27999
NG_PORTS = {"rtpengine": 23311, "omnirtp": 23312, "before": 23313}
SUITE = "AES_CM_128_HMAC_SHA1_80"
TAG_LENGTH = 10  # the HMAC-SHA1-80 authentication tag
MAX_LOSS = 0.01  # a round with more loss (or less pace) is shown but not used
MIN_PACE = 0.99
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.exit(run())"


def sdp(party, session, key=None):
    host, port = party
    proto = "RTP/AVP" if key is None else "RTP/SAVP"
    lines = ["v=0", "o=- %d 1 IN IP4 %s" % (session, host), "s=-", "c=IN IP4 %s" % host,
             "t=0 0", "m=audio %d %s 0" % (port, proto), "a=rtpmap:0 PCMU/8000"]
    if key is not None:
        lines.append("a=crypto:1 %s inline:%s" % (SUITE, base64.b64encode(key).decode()))
    lines.append("a=sendrecv")
    return "".join(line + "\r\n" for line in lines)


def answer_crypto(body):
    found = re.findall(r"^a=crypto:\d+ (\S+) inline:([^|\s]+)", body, re.M)
    return [(suite, base64.b64decode(key)) for suite, key in found]


class Proxy:
    """A proxy daemon on CPU 0 with ``calls`` calls set up over ng."""

    def __init__(self, kind, mode, parties, keys, before=None, wrapper=None):
        port = NG_PORTS[kind]
        common = ["--config-file=none", "--interface=127.0.0.1",
                  "--listen-ng=127.0.0.1:%d" % port,
                  "--port-min=%d" % PORT_MIN, "--port-max=%d" % PORT_MAX, "--log-level=3"]
        if kind == "rtpengine":
            exe = shutil.which("rtpengine") or "/usr/sbin/rtpengine"
            cmd = [exe, "--table=-1", "--foreground", "--log-stderr", "--num-threads=1"] + common
            env = None
        else:
            profile = os.environ.get("SRTP_BENCH_PROFILE")  # development aid (slows it down)
            extra = ["--profile=" + profile, "--profiler=cprofile", "--savestats"] if profile else []
            cmd = [sys.executable, "-c", TWISTD, "-n", "--pidfile="] + extra + ["omnirtp",
                   "--num-threads=0"] + common
            env = dict(os.environ, PYTHONPATH=before if kind == "before" else ROOT)
        cwd = before if kind == "before" else ROOT
        self.log = tempfile.TemporaryFile()
        if wrapper is None:
            wrapper = ["taskset", "-c", str(RELAY_CPU)]
        self.proc = subprocess.Popen(wrapper + cmd, cwd=cwd, env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        ng = NGClient(port)
        slow = wrapper[0] == "valgrind"
        try:
            deadline = time.time() + (300 if slow else 30)
            while time.time() < deadline:
                try:
                    ng.request("ping")
                    break
                except (socket.timeout, ConnectionRefusedError):
                    if self.proc.poll() is not None:
                        self.log.seek(0)
                        raise RuntimeError("%s exited with %s: %s" % (
                            kind, self.proc.returncode, self.log.read()[-1000:]))
                    time.sleep(0.1)
            else:
                raise RuntimeError("%s does not answer ng ping" % kind)
            if slow:
                ng.sock.settimeout(120.0)
            self.sockets = []
            self.keys = []  # the proxy's key towards each caller (srtp mode)
            for i, (a, b) in enumerate(parties):
                cid = "srtp-bench-%d" % i
                offer_sdp = sdp(a, i, keys[i] if mode == "srtp" else None)
                extra = {"transport-protocol": "RTP/AVP"} if mode == "srtp" else {}
                offer = ng.request("offer", **{"call-id": cid, "from-tag": "a%d" % i,
                                               "sdp": offer_sdp, **extra})
                answer = ng.request("answer", **{"call-id": cid, "from-tag": "a%d" % i,
                                                 "to-tag": "b%d" % i, "sdp": sdp(b, i)})
                if mode == "srtp":
                    if answer_crypto(offer["sdp"]):
                        raise RuntimeError("%s offered crypto to the plain callee" % kind)
                    ours = answer_crypto(answer["sdp"])
                    if [s for s, _ in ours] != [SUITE]:
                        raise RuntimeError("%s answered %r" % (kind, ours))
                    self.keys.append(ours[0][1])
                # the answer goes to A: it names the socket A sends to
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
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_proxy(*args):
    """A :class:`Proxy`; a start that fails (a port someone else took
    meanwhile, on a shared box) is retried twice."""
    for attempt in range(3):
        try:
            return Proxy(*args)
        except RuntimeError as e:
            if attempt == 2:
                raise
            print("    (retrying: %s)" % (str(e).splitlines()[0][:200],), flush=True)
            time.sleep(1)


class SrtpGenerator(Generator):
    """bench/relay.py's generator, with per-flow packet lists (A's SRTP)."""

    def __init__(self):
        Generator.__init__(self)
        self.side_of = {}
        for n, side in enumerate(self.sides):
            for s in side:
                self.side_of[s.fileno()] = n

    def drain_sides(self, quiet):
        """Read until nothing arrived for ``quiet`` seconds; ``[from A's
        side, from B's side]`` (what A's and B's sockets received)."""
        got = [0, 0]
        poll, receivers, buf, side_of = self.poller.poll, self.receivers, self.buf, self.side_of
        while True:
            events = poll(quiet)
            if not events:
                return got
            for fd, _ in events:
                s = receivers[fd]
                while True:
                    try:
                        s.recv_into(buf)
                    except OSError:
                        break
                    got[side_of[fd]] += 1

    def srtp_packets(self, key, count, ssrc):
        """``count`` SRTP packets (sequence numbers from 1) of a new sender."""
        import pylibsrtp
        session = pylibsrtp.Session(pylibsrtp.Policy(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        protect = session.protect
        out = []
        for seq in range(1, count + 1):
            header = bytes([0x80, 0x00, seq >> 8 & 0xFF, seq & 0xFF])
            header += (seq * 160 & 0xFFFFFFFF).to_bytes(4, "big") + ssrc.to_bytes(4, "big")
            out.append(protect(header + b"\xff" * 160))
        return out

    def run_flows(self, relay_sockets, a_packets, seconds, marks=()):
        """Send 50 pps per flow for ``seconds``: A's flows from ``a_packets``
        (one list per call), B's the shared plain RTP list.  Returns
        ``(sent, received_a, received_b, bytes_a, bytes_b, cpu, wall, rate)``."""
        a, b = self.sides
        flows = []
        for i, (ra, rb) in enumerate(relay_sockets):
            flows.append((a[i % len(a)].sendto, ra, a_packets[i]))
            flows.append((b[i % len(b)].sendto, rb, self.packets))
        nflows = len(flows)
        rate = PPS_PER_FLOW * nflows
        poll, receivers, buf, side_of = self.poller.poll, self.receivers, self.buf, self.side_of
        clock = time.perf_counter
        marks = sorted(marks, key=lambda m: m[0])
        mi = 0
        sent = errors = 0
        got = [0, 0]
        nbytes = [0, 0]
        cpu0 = time.process_time()
        start = clock()
        end = start + seconds
        while True:
            now = clock()
            if mi < len(marks) and now >= start + marks[mi][0]:
                marks[mi][1](sent - errors, got[0] + got[1])
                mi += 1
                continue
            if now >= end:
                break
            due = int((now - start) * rate)
            while sent < due:
                send, dest, packets = flows[sent % nflows]
                try:
                    send(packets[sent // nflows], dest)
                except OSError:
                    errors += 1
                sent += 1
            for fd, _ in poll(0.0005):
                s = receivers[fd]
                side = side_of[fd]
                while True:
                    try:
                        n = s.recv_into(buf)
                    except OSError:
                        break
                    got[side] += 1
                    nbytes[side] += n
        wall = now - start
        cpu = time.process_time() - cpu0
        return sent - errors, got, nbytes, cpu, wall, rate


def measure(gen, kind, mode, calls, warmup, seconds, before=None):
    parties = gen.parties(calls)
    total = int((warmup + seconds + 1) * PPS_PER_FLOW) + 10
    keys = [os.urandom(30) for _ in range(calls)]
    if mode == "srtp":
        a_packets = [gen.srtp_packets(keys[i], total, 0x10000 + i) for i in range(calls)]
    else:
        a_packets = [gen.packets] * calls
    if total > len(gen.packets):
        raise SystemExit("a run longer than %d packets per flow" % len(gen.packets))
    gen.drain(0.05)
    proxy = start_proxy(kind, mode, parties, keys, before)
    snaps = []

    def mark(sent, received):
        snaps.append((sent, received, sum(process_times(proxy.pid)), time.process_time(),
                      time.perf_counter()))

    try:
        _, got, nbytes, _, _, rate = gen.run_flows(
            proxy.sockets, a_packets, warmup + seconds, marks=[(warmup, mark), (warmup + seconds, mark)])
    finally:
        proxy.stop()
    (s0, r0, c0, g0, t0), (s1, r1, c1, g1, t1) = snaps
    wall = t1 - t0
    received = r1 - r0
    # sizes over the whole run: A gets SRTP (longer by the tag), B plain RTP
    size_a = nbytes[0] / max(got[0], 1)
    size_b = nbytes[1] / max(got[1], 1)
    us = 1e6 * (c1 - c0) / max(received, 1)
    return {
        "us_per_packet": us,
        "calls_per_core": 1e6 / (us * 2 * PPS_PER_FLOW),
        "proxy_cpu": (c1 - c0) / wall,
        "loss": 1 - received / max(s1 - s0, 1),
        "generator_cpu": (g1 - g0) / wall,
        "pace": (s1 - s0) / wall / rate,
        "size_a": size_a,
        "size_b": size_b,
        "received_a": got[0],
        "received_b": got[1],
    }


def instructions(kinds, modes, calls, rounds, before, log):
    """User-space instructions per relayed packet of each proxy, counted by
    valgrind (callgrind): the daemon runs under callgrind with
    instrumentation off; after its calls are set up and a warm-up past the
    learning window, ``callgrind_control -i on``, ``rounds`` packets per
    flow at 50 packets/s, wait until all came back, ``-i off``.  Load on
    the box does not change the count (CPU time moves by 10-30% here)."""
    gen = SrtpGenerator()
    out = {}
    try:
        for mode in modes:
            for kind in kinds:
                parties = gen.parties(calls)
                keys = [os.urandom(30) for _ in range(calls)]
                warm = 12
                total = warm + rounds + 2
                if mode == "srtp":
                    a_packets = [gen.srtp_packets(keys[i], total, 0x10000 + i) for i in range(calls)]
                else:
                    a_packets = [gen.packets] * calls
                fd, path = tempfile.mkstemp(prefix="srtp-callgrind-")
                os.close(fd)
                wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                           "--callgrind-out-file=" + path]
                gen.drain(0.05)
                proxy = start_proxy(kind, mode, parties, keys, before, wrapper)
                try:
                    # warm-up: 12 rounds over 4.8 s (past the 3 s learning window)
                    sent, got = send_rounds(gen, proxy.sockets, a_packets, 0, warm, 0.4)
                    subprocess.run(["callgrind_control", "-i", "on", str(proxy.pid)],
                                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    sent, got = send_rounds(gen, proxy.sockets, a_packets, warm, warm + rounds,
                                            1.0 / PPS_PER_FLOW)
                    subprocess.run(["callgrind_control", "-i", "off", str(proxy.pid)],
                                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                finally:
                    proxy.stop()
                with open(path) as f:
                    text = f.read()
                os.unlink(path)
                found = re.findall(r"^(?:summary|totals): (\d+)", text, re.M)
                ir = max(int(n) for n in found)
                out[(kind, mode)] = ir / max(sum(got), 1)
                log("  %-9s %-5s %7.0f instructions per relayed packet  (%d sent, %d + %d back "
                    "to A + B)" % (kind, mode, out[(kind, mode)], sent, got[0], got[1]))
    finally:
        gen.close()
    return out


def send_rounds(gen, sockets, a_packets, first, last, gap):
    """Rounds ``first`` to ``last`` - 1: one packet per flow each, ``gap``
    seconds apart; then wait (up to 30 s) for everything to come back.
    Returns ``(sent, received)``."""
    a, b = gen.sides
    sent = 0
    got = [0, 0]

    def drain(quiet):
        for side, n in enumerate(gen.drain_sides(quiet)):
            got[side] += n

    start = time.perf_counter()
    for r in range(first, last):
        for i, (ra, rb) in enumerate(sockets):
            a[i % len(a)].sendto(a_packets[i][r], ra)
            b[i % len(b)].sendto(gen.packets[r], rb)
            sent += 2
        drain(0)
        delay = start + (r - first + 1) * gap - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    deadline = time.time() + 30
    while sum(got) < sent and time.time() < deadline:
        drain(0.5)
    return sent, got


def main(argv=None):
    global PORT_MIN, PORT_MAX
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=3.5)
    p.add_argument("--modes", default="srtp,plain")
    p.add_argument("--kinds", default="omnirtp,rtpengine")
    p.add_argument("--json")
    p.add_argument("--before", metavar="CHECKOUT",
                   help="also run the omnirtp of another checkout, as kind 'before'")
    p.add_argument("--instructions", action="store_true",
                   help="count user-space instructions per packet under valgrind instead")
    p.add_argument("--port-base", type=int, default=PORT_MIN,
                   help="first media port (ng ports move with it)")
    args = p.parse_args(argv)
    shift = args.port_base - PORT_MIN
    PORT_MIN, PORT_MAX = PORT_MIN + shift, PORT_MAX + shift
    for kind in NG_PORTS:
        NG_PORTS[kind] += shift
    # test processes on this machine keep out of the media range while we run
    # (rtpengine binds with SO_REUSEADDR: a test's rtpengine could share a port)
    hold_port_range(PORT_MIN, PORT_MAX)
    if os.cpu_count() < 2:
        sys.exit("needs 2 CPUs (proxy on CPU 0, generator on CPU 1)")
    if args.calls * 4 > 0.8 * (PORT_MAX - PORT_MIN + 1):
        sys.exit("at most %d calls" % (0.8 * (PORT_MAX - PORT_MIN + 1) // 4))
    os.sched_setaffinity(0, {GENERATOR_CPU})
    kinds = args.kinds.split(",")
    if args.before:
        args.before = os.path.abspath(args.before)
        kinds.insert(1, "before")
    configs = [(k, m) for m in args.modes.split(",") for k in kinds]
    if args.instructions:
        log = lambda msg: print(msg, flush=True)  # noqa: E731
        calls = min(args.calls, 20)
        log("user-space instructions per relayed packet under callgrind, %d calls, 200 rounds"
            % calls)
        counts = instructions(kinds, args.modes.split(","), calls, 200, args.before, log)
        for mode in args.modes.split(","):
            ref = counts.get(("rtpengine", mode))
            for kind in kinds:
                n = counts[(kind, mode)]
                log("%-10s %-6s %8.0f instructions  %s" % (
                    kind, mode, n, "x rtpengine %.2f" % (n / ref) if ref else ""))
        return 0
    gen = SrtpGenerator()
    samples = {c: [] for c in configs}
    started = time.time()

    def log(msg):
        print(msg, flush=True)

    log("%d calls (%d packets/s in), %d round(s): %.1f s warm-up + %.1f s window each"
        % (args.calls, args.calls * 2 * PPS_PER_FLOW, args.rounds, args.warmup, args.seconds))
    try:
        for r in range(args.rounds):
            order = configs[r % len(configs):] + configs[:r % len(configs)]
            for kind, mode in order:
                s = measure(gen, kind, mode, args.calls, args.warmup, args.seconds, args.before)
                samples[(kind, mode)].append(s)
                log("  round %d %-9s %-5s %6.2f us/packet  %5.0f calls/core  proxy cpu %3.0f%%  "
                    "loss %.3f%%  generator cpu %3.0f%%  pace %5.1f%%  sizes %.0f/%.0f  got %d/%d"
                    % (r + 1, kind, mode, s["us_per_packet"], s["calls_per_core"],
                       100 * s["proxy_cpu"], 100 * s["loss"], 100 * s["generator_cpu"],
                       100 * s["pace"], s["size_a"], s["size_b"], s["received_a"], s["received_b"]))
    finally:
        gen.close()
    def usable(s):  # the proxy kept up and the generator kept its pace
        return abs(s["loss"]) <= MAX_LOSS and s["pace"] >= MIN_PACE

    med, used = {}, {}
    for c, v in samples.items():
        good = [s for s in v if usable(s)]
        used[c] = "%d/%d" % (len(good), len(v)) if good else "all %d" % len(v)
        good = good or v
        med[c] = statistics.median(s["us_per_packet"] for s in good)
    log("")
    log("medians of the rounds with |loss| <= %.0f%% and pace >= %.0f%% (all rounds if none)"
        % (100 * MAX_LOSS, 100 * MIN_PACE))
    log("%-10s %-6s %10s %14s %12s %8s" % ("proxy", "mode", "us/packet", "calls/core", "x rtpengine",
                                            "rounds"))
    for kind, mode in configs:
        us = med[(kind, mode)]
        ref = med.get(("rtpengine", mode))
        ratio = "%.2f" % (ref / us) if ref else "-"
        log("%-10s %-6s %10.2f %14.0f %12s %8s" % (kind, mode, us, 1e6 / (us * 2 * PPS_PER_FLOW),
                                                  ratio, used[(kind, mode)]))
    for kind in kinds:
        if ("%s" % kind, "srtp") in med and (kind, "plain") in med:
            log("%s: SRTP costs %.2fx its plain CPU per packet"
                % (kind, med[(kind, "srtp")] / med[(kind, "plain")]))
    log("(%.0f s in all)" % (time.time() - started))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"%s/%s" % c: v for c, v in samples.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
