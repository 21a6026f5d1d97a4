#!/usr/bin/env python3
"""Relay benchmark: CPU per relayed packet and max concurrent calls.

Compares, in one run and on the same packet generator:

  stock      a bare relay on Twisted's stock ``udp.Port`` (DatagramProtocol
             whose datagramReceived writes to the other leg)
  engine     omnirtp's ``EmbeddedEngine`` (RelaySocket readers)
  rtpengine  Debian's rtpengine 10.5 in userspace (--table=-1), calls set
             up over ng with offer/answer
  offload    omnirtp's ``EmbeddedEngine`` with kernel forwarding
             (``table = 0``, nftables): the streams go to the kernel once
             both parties were seen (needs root and net.ipv4.ip_forward = 1;
             run it in a network namespace of its own, as bench/table.py
             does; not in the default --kinds)

A *call* is a pair of relay sockets, each fed 50 packets/s (172-byte RTP)
by the generator, so a call is 100 packets/s in and 100 out.  The relay
runs on CPU 0, the generator (this process) on CPU 1.

  cpu    process CPU time of the relay (utime + stime from /proc/<pid>/stat)
         divided by the packets it relayed back to the generator, at a fixed
         load; the median of several runs.
  calls  the largest number of calls with < 0.1% loss.  Loss is measured
         over a window in which the replies are not read: the relay is
         briefly stopped (SIGSTOP) at the window's start and end for a
         consistent snapshot of /proc/net/udp, and the datagrams still queued
         in the relay's sockets at the end count as lost (see load_step).
         A coarse search (x1.6) brackets the capacity, then independent
         bisections, interleaved across relays, are repeated; the median is
         reported.  It is a lower bound ('>=') only when the generator could
         not keep its pace at the step just above the answer.

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

from omnirtp.control import bencode
from omnirtp.control.ng import decode_payload

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

OWN_MIN, OWN_MAX = 42000, 42999
RTPENGINE_MIN, RTPENGINE_MAX = 43000, 43999
NG_PORT = 23301
PPS_PER_FLOW = 50
LOSS_LIMIT = 0.001
PACE_MIN = 0.99  # a step below 99% of the planned send rate cannot show a pass
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

        forwarder = None
        if kind == "offload":
            from omnirtp.media.kernel import NftForwarder

            forwarder = NftForwarder(0)
            forwarder.start()
        engine = EmbeddedEngine(reactor, {h: (OWN_MIN, OWN_MAX) for h in addresses},
                                forwarder=forwarder)
        if forwarder is not None:
            # offload as soon as both parties were seen (the engine's own
            # check runs once a second): the warm-up is shorter than that
            for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7):
                reactor.callLater(t, engine._kernel_tick)
            reactor.addSystemEventTrigger("before", "shutdown", engine.close)
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
        self.sock.sendto(cookie + b" " + bencode.encode(kw), self.dest)
        while True:
            data = self.sock.recv(65536)
            if data.startswith(cookie + b" "):
                reply, _ = decode_payload(data[len(cookie) + 1:])
                if reply.get("result") not in ("ok", "pong"):
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
    body = reply["sdp"]
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

    def run(self, relay_sockets, seconds, receive=True, marks=()):
        """Send 50 pps per flow for ``seconds``.

        Returns ``(sent, received, cpu, wall, rate)``; ``sent`` counts the
        datagrams the kernel accepted (failed ``sendto`` calls are not
        counted).  With ``receive`` False nothing is read (``received`` is
        0) and the party sockets drop what the relay sends them (see
        :func:`udp_table`).  ``marks`` is a sequence of ``(offset,
        callback)``: ``callback(sent)`` is called once the schedule reaches
        ``offset`` seconds.  The schedule stands still while a callback
        runs, so the time it takes causes no burst and ``wall`` excludes it;
        ``self.received`` is then what was read so far in this run.
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
        sleep, clock = time.sleep, time.perf_counter
        marks = sorted(marks, key=lambda m: m[0])
        mi = 0
        sent = received = errors = 0
        cpu0 = time.process_time()
        start = clock()
        end = start + seconds
        while True:
            now = clock()
            if mi < len(marks) and now >= start + marks[mi][0]:
                self.received = received  # read so far in this run, for the mark
                marks[mi][1](sent - errors)
                mi += 1
                shift = clock() - now
                start, end = start + shift, end + shift
                continue
            if now >= end:
                break
            due = int((now - start) * rate)
            while sent < due:
                send, dest = flows[sent % nflows]
                try:
                    send(packets[(sent // nflows) % npk], dest)
                except OSError:
                    errors += 1
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
        wall = now - start  # ``start`` moved on by the time spent in marks
        cpu = time.process_time() - cpu0
        if receive:
            received += self.drain(0.3)
        return sent - errors, received, cpu, wall, rate


V4_MAPPED = "0000000000000000FFFF0000"  # ::ffff:0:0/96 in /proc/net/udp6


def udp_sockets(reads=3):
    """``{inode: ((host, port), queued bytes, drops)}`` of every IPv4 UDP
    socket (and IPv4-mapped IPv6 one) in /proc/net/udp and /proc/net/udp6.

    The files are read ``reads`` times and the sockets found united (by
    inode, so no socket counts twice): a read of /proc/net/udp while other
    programs open and close sockets can skip lines, and on a shared box with
    thousands of sockets it does (a party socket missing from one snapshot
    made a capacity step's "loss" 4000%).  Meant for sockets whose figures
    stand still meanwhile (a frozen relay, a paused generator).
    """
    out = {}
    for _ in range(reads):
        for name in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                f = open(name)
            except OSError:
                continue
            with f:
                next(f)
                for line in f:
                    fields = line.split()
                    hexaddr, hexport = fields[1].split(":")
                    if len(hexaddr) == 32:
                        if not hexaddr.startswith(V4_MAPPED):
                            continue
                        hexaddr = hexaddr[24:]
                    key = (socket.inet_ntoa(struct.pack("<I", int(hexaddr, 16))), int(hexport, 16))
                    out[int(fields[9])] = (key, int(fields[4].split(":")[1], 16), int(fields[-1]))
    return out


def udp_table(keys):
    """``{(host, port): (queued bytes, drops)}`` of the UDP sockets in ``keys``
    (summed over every socket bound to that address and port), from
    :func:`udp_sockets`.

    ``queued bytes`` is the rx_queue column: the receive-buffer memory the
    socket's queued datagrams hold (their truesize, see :func:`truesize`).
    ``drops`` counts datagrams the kernel dropped for that socket.
    """
    wanted = set(keys)
    out = {}
    for key, queued, drops in udp_sockets().values():
        if key in wanted:
            # several sockets can share a local address (omnirtp's
            # connected companions, SO_REUSEPORT): add them up
            q, d = out.get(key, (0, 0))
            out[key] = (q + queued, d + drops)
    return out


def truesize(payload=172, count=16):
    """Receive-buffer bytes one queued ``payload``-byte datagram holds.

    rx_queue in /proc/net/udp is in these units (the skb's truesize, not
    the payload), so a backlog in bytes divided by this is in datagrams.
    Measured once with datagrams sent over loopback, as in the benchmark.
    """
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind((GENERATOR_ADDRESS, 0))
        tx.bind((GENERATOR_ADDRESS, 0))
        for _ in range(count):
            tx.sendto(b"\x80" * payload, rx.getsockname())
        queued, _ = udp_table([rx.getsockname()])[rx.getsockname()]
    finally:
        rx.close()
        tx.close()
    if queued <= 0:
        raise RuntimeError("cannot read rx_queue from /proc/net/udp")
    return queued / count


def task_states(pid):
    """Scheduler state letter of every thread of ``pid``."""
    states = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                states.append(f.read().rpartition(")")[2].split()[0])
        except OSError:  # the thread just exited
            pass
    return states


#: seconds freeze() waits once the relay stopped, for its datagrams in flight
FREEZE_SETTLE = 0.002


def freeze(pids, timeout=1.0):
    """SIGSTOP every process of ``pids`` (a pid or a list) and wait until
    all their threads have stopped (and then FREEZE_SETTLE seconds)."""
    pids = [pids] if isinstance(pids, int) else list(pids)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    deadline = time.perf_counter() + timeout
    while not all(state in "tT" for pid in pids for state in task_states(pid)):
        if time.perf_counter() > deadline:
            raise RuntimeError("relay %s does not stop" % (pids,))
        time.sleep(0.0002)
    # loopback delivery left to ksoftirqd (if any) finishes while it is stopped
    time.sleep(FREEZE_SETTLE)


def thaw(pids):
    for pid in [pids] if isinstance(pids, int) else pids:
        os.kill(pid, signal.SIGCONT)


def relay_pids(relay):
    """Every process of ``relay``: ``relay.pids()`` where it has several
    (a control process and media workers), else ``[relay.pid]``."""
    pids = getattr(relay, "pids", None)
    return pids() if pids is not None else [relay.pid]


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


def load_step(gen, kind, calls, seconds, warmup, size, start=start_relay):
    """Run ``calls`` calls without reading the replies; measure the loss.

    The party sockets get a minimal receive buffer and are not read, so the
    kernel drops what the relay sends them and counts it in /proc/net/udp.
    At the start and the end of a window of ``seconds`` (after ``warmup``)
    the relay is stopped (SIGSTOP) while the generator pauses, and a
    consistent snapshot is taken: the datagrams sent, the datagrams that
    reached the parties (their drop counters plus their queues), the
    datagrams queued in the relay's receive sockets (rx_queue / ``size``)
    and the relay's CPU time.  Then::

        deficit = sent - delivered + max(0, backlog_start - backlog_end)
        loss    = deficit / sent

    Datagrams still queued in the relay at the end were not relayed within
    the window and count as lost: a relay that falls behind shows as loss
    even though its 200 KB socket buffers would hold seconds of backlog.
    Backlog left from the warm-up and relayed in the window is subtracted
    again, so catching up earns no credit and the loss is never negative.
    Datagrams the kernel dropped at the relay's sockets (buffers full) are
    part of the deficit and are shown separately as ``relay_drops``.
    ``start(kind, parties)`` starts the relay (default :func:`start_relay`);
    a relay of several processes is frozen and its CPU summed over all of
    them (:func:`relay_pids`).
    """
    gen.set_receive_buffer(0)
    gen.drain(0.05)
    parties = gen.keys()
    relay = start(kind, gen.parties(calls))
    relay_keys = [k for pair in relay.sockets for k in pair]
    pids = relay_pids(relay)
    snaps = []

    def snapshot(sent):
        t0, g0 = time.perf_counter(), time.process_time()
        freeze(pids)
        try:
            table = udp_table(parties + relay_keys)
            cpu = sum(process_cpu(pid) for pid in pids)
        finally:
            thaw(pids)
        party = [table.get(k, (0, 0)) for k in parties]
        own = [table.get(k, (0, 0)) for k in relay_keys]
        snaps.append({
            "sent": sent,
            "delivered": sum(d + round(q / size) for q, d in party),
            "backlog": sum(round(q / size) for q, _ in own),
            "relay_drops": sum(d for _, d in own),
            "cpu": cpu,
            "t0": t0, "t1": time.perf_counter(),
            "g0": g0, "g1": time.process_time(),
        })

    try:
        _, _, _, _, rate = gen.run(relay.sockets, warmup + seconds, receive=False,
                                   marks=[(warmup, snapshot), (warmup + seconds, snapshot)])
    finally:
        relay.stop()
    first, last = snaps
    wall = last["t0"] - first["t1"]
    sent = last["sent"] - first["sent"]
    delivered = last["delivered"] - first["delivered"]
    shrink = max(0, first["backlog"] - last["backlog"])
    # the few datagrams the relay holds between read and send at a snapshot
    # (at most one read batch) can make the deficit a little negative
    deficit = sent - delivered + shrink
    return {
        "calls": calls,
        "loss": max(0, deficit) / max(sent, 1),
        "deficit": deficit,
        "backlog_start": first["backlog"],
        "backlog_end": last["backlog"],
        # how long the datagrams queued at the end wait, at the planned rate
        "queue_ms": 1000.0 * last["backlog"] / rate,
        "relay_drops": last["relay_drops"] - first["relay_drops"],
        "relay_cpu": (last["cpu"] - first["cpu"]) / wall,
        "generator_cpu": (last["g0"] - first["g1"]) / wall,
        "achieved": sent / wall / rate,
    }


def verdict(step):
    """'fail' (loss >= 0.1%), 'capped' (the generator fell short) or 'pass'."""
    if step["loss"] >= LOSS_LIMIT:
        return "fail"  # lost even at less than the planned load
    if step["achieved"] < PACE_MIN:
        return "capped"  # no loss, but at less than the planned load
    return "pass"


def log_step(log, kind, s):
    log("    %-9s %5d calls: loss %6.3f%%  backlog %5d -> %5d (%3.0f ms)  relay drops %d  "
        "relay cpu %3.0f%%  generator cpu %3.0f%%  pace %5.1f%%  %s"
        % (kind, s["calls"], 100 * s["loss"], s["backlog_start"], s["backlog_end"], s["queue_ms"],
           s["relay_drops"], 100 * s["relay_cpu"], 100 * s["generator_cpu"], 100 * s["achieved"],
           verdict(s)))


class Search:
    """Capacity search of one relay: a coarse bracket, then bisections.

    ``coarse`` grows the load by x1.6 from ``start`` until a step fails or
    the generator cannot keep the pace.  Each ``bisect`` is an independent
    repetition: it starts from the coarse bracket widened by 25% down and
    15% up (so a lucky or unlucky coarse step does not trap every
    repetition) and halves it (geometrically) ``rounds`` times.  A step the
    generator could not pace without loss caps the bracket: a repetition
    whose answer ends below such a step is a lower bound.
    """

    def __init__(self, gen, kind, seconds, warmup, size, log, start=start_relay):
        self.gen, self.kind, self.seconds, self.warmup, self.size = gen, kind, seconds, warmup, size
        self.log = log
        self.start = start  # load_step's relay starter
        self.steps = []
        self.results = []  # (calls, is_lower_bound) per repetition
        self.good = self.bad = None
        self.bad_capped = False

    def step(self, calls):
        s = load_step(self.gen, self.kind, calls, self.seconds, self.warmup, self.size, self.start)
        s["verdict"] = verdict(s)
        self.steps.append(s)
        log_step(self.log, self.kind, s)
        return s["verdict"]

    def coarse(self, start, limit):
        good, n = 0, start
        while n <= limit:
            v = self.step(n)
            if v != "pass":
                self.good, self.bad, self.bad_capped = good, n, v == "capped"
                return
            good, n = n, int(n * 1.6)
        self.good = good  # never failed up to the limit: a lower bound
        self.results.append((good, True))

    def bisect(self, rounds):
        if self.bad is None:
            return
        lo = max(1, int(self.good / 1.25))
        hi, capped = (self.bad, True) if self.bad_capped else (int(self.bad * 1.15), False)
        for _ in range(rounds):
            if hi - lo <= max(2, lo // 100):
                break
            n = int(round((lo * hi) ** 0.5))
            v = self.step(n)
            if v == "pass":
                lo = n
            else:
                hi, capped = n, v == "capped"
        self.results.append((lo, capped))

    def answer(self):
        """(median calls, is_lower_bound)."""
        ordered = sorted(self.results)
        m = (len(ordered) - 1) // 2
        # if a result at or below the median is only a lower bound, so is the median
        return ordered[m][0], any(lower for _, lower in ordered[: m + 1])


def rotated(kinds, r):
    """``kinds`` starting at position ``r``: each round has another order."""
    r %= len(kinds)
    return kinds[r:] + kinds[:r]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer and shorter runs, one capacity search")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of %s" % (KINDS,))
    p.add_argument("--cpu-calls", type=int, default=200, help="calls during the CPU measurement")
    p.add_argument("--no-capacity", action="store_true", help="skip the max-calls search")
    p.add_argument("--start", type=int, default=400, help="first load of the capacity search")
    p.add_argument("--max-calls", type=int, default=4000, help="stop the search here")
    p.add_argument("--repeat", type=int, help="bisections per relay (median reported)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--serve", choices=("stock", "engine", "offload"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve(args.serve)

    kinds = [k for k in args.kinds.split(",") if k]
    if args.quick:
        runs, warmup, seconds = 1, 0.5, 2.0
        step_warmup, step_seconds, repeat, rounds = 0.75, 2.0, 1, 3
    else:
        runs, warmup, seconds = 5, 1.0, 3.0
        step_warmup, step_seconds, repeat, rounds = 1.0, 4.0, 3, 5
    if args.repeat:
        repeat = args.repeat
    if os.cpu_count() < 2:
        sys.exit("needs 2 CPUs (relay on CPU 0, generator on CPU 1)")
    os.sched_setaffinity(0, {GENERATOR_CPU})

    def log(msg):
        print(msg, flush=True)

    size = truesize()
    gen = Generator()
    results = {kind: {"cpu_samples": []} for kind in kinds}
    searches = {}
    t0 = time.time()
    try:
        log("CPU per relayed packet, %d calls (%d packets/s in), %d run(s) of %.0f s each, interleaved"
            % (args.cpu_calls, args.cpu_calls * 2 * PPS_PER_FLOW, runs, seconds))
        for i in range(runs):
            for kind in rotated(kinds, i):
                r = cpu_run(gen, kind, args.cpu_calls, warmup, seconds)
                results[kind]["cpu_samples"].append(r)
                log("    %-9s %6.2f us/packet (%2.0f%% user)  relay cpu %3.0f%%  loss %.3f%%"
                    % (kind, r["us_per_packet"], 100 * r["user_share"], 100 * r["relay_cpu"],
                       100 * r["loss"]))
        for kind in kinds:
            results[kind]["us_per_packet"] = statistics.median(
                s["us_per_packet"] for s in results[kind]["cpu_samples"])
        if not args.no_capacity:
            log("Max concurrent calls at < %.1f%% loss (50 pps each way per call); steps of %.1f s "
                "after %.2f s warm-up; a datagram is %.0f bytes of receive buffer"
                % (100 * LOSS_LIMIT, step_seconds, step_warmup, size))
            for kind in kinds:
                searches[kind] = Search(gen, kind, step_seconds, step_warmup, size, log)
            log("  coarse bracket (x1.6 from %d)" % args.start)
            for kind in kinds:
                searches[kind].coarse(args.start, args.max_calls)
            for i in range(repeat):
                log("  bisection %d of %d" % (i + 1, repeat))
                for kind in rotated(kinds, i):
                    searches[kind].bisect(rounds)
            for kind in kinds:
                calls, lower = searches[kind].answer()
                results[kind].update(max_calls=calls, max_calls_lower_bound=lower,
                                     max_calls_samples=searches[kind].results,
                                     steps=searches[kind].steps)
    finally:
        gen.close()

    ref = results.get("rtpengine")
    log("")
    log("%-10s %10s %11s %12s %11s   %s"
        % ("relay", "us/packet", "x rtpengine", "max calls", "x rtpengine", "capacity samples"))
    for kind in kinds:
        r = results[kind]
        ratio = "%.2f" % (r["us_per_packet"] / ref["us_per_packet"]) if ref else "-"
        samples = ""
        if "max_calls" in r:
            calls = "%s%d" % (">=" if r["max_calls_lower_bound"] else "", r["max_calls"])
            cratio = "%.2f" % (r["max_calls"] / ref["max_calls"]) if ref and ref.get("max_calls") else "-"
            samples = " ".join("%s%d" % (">=" if lower else "", n) for n, lower in r["max_calls_samples"])
        else:
            calls = cratio = "-"
        log("%-10s %10.2f %11s %12s %11s   %s" % (kind, r["us_per_packet"], ratio, calls, cratio, samples))
    log("(%.0f s in all)" % (time.time() - t0))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
