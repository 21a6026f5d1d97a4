#!/usr/bin/env python3
"""Soak: many concurrent calls through the whole daemon for minutes.

Starts omnirtp (twistd, from this checkout) on loopback, sets up ``--calls``
calls over ng (offer + answer, a few in flight at a time), and has
bench/rtpgen.c (compiled with gcc into build/ on first use) play both
parties of every call: each party has its own UDP socket and sends 50 RTP
packets/s (172 bytes, 20 ms ptime; the parties spread evenly over 1 ms slots
of the 20 ms tick) to the port the proxy advertised to it, and counts the
packets that arrive with its peer's SSRC.  Every second ``--churn`` calls end
(their parties stop sending, then ``delete``) and as many new ones are set up,
so set-up and teardown run all the time.  At the end every call is deleted.
Run once per ``--threads`` value (num-threads 0 and 2 by default).

Reported per run:

  loss        packets the parties sent (the kernel accepted the send) and
              did not get, minus the datagrams the kernel dropped at the
              generator's own sockets (SO_MEMINFO drops of each socket): the
              relay's loss beyond the generator's.  Packets still in flight
              when a call ends are not lost: a party stops sending 0.3 s
              before its delete, its socket keeps counting for 3 s after it
              stopped, and the run drains for 3 s at the end.  Shown apart for
              the calls the churn ended and those that ran to the end.
  pace        packets sent / packets due: the generator skips (and counts) a
              send that is over 20 ms late; the packets/s sent and received
              over the steady phase beside the planned 100 per call.
  CPU, load   the daemon's (control process plus its media workers) and the
              generator's CPU time over the steady phase in % of one core,
              and the 1-minute load average at every sample.
  RSS         the daemon's resident set (control process plus its media
              workers, /proc/<pid>/status VmRSS), sampled every --rss-every
              seconds; after the warm-up (the first --warmup seconds) the
              spread (max / min - 1) must stay within 5%.
  ports       ng statistics ports.free before the first call and after the
              last delete (waited for up to 10 s); they must be equal.
  set-up      latency from sending the offer to the answer's reply, p50 /
              p99 / max, for the initial ramp and for the churn.

Run from the repository root (not part of make test):

  .venv/bin/python bench/soak.py                        # 1000 calls, 10 min, threads 0 and 2
  .venv/bin/python bench/soak.py --calls 100 --minutes 1 --threads 0
  make soak SOAK_ARGS="--calls 200 --minutes 2"

It needs about 4 file descriptors per call in the daemon and 2 in the
generator (both raise the soft RLIMIT_NOFILE to the hard one).
"""

import argparse
import collections
import json
import os
import re
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from omnirtp.control import bencode  # noqa: E402
from omnirtp.test.integration.peers import (  # noqa: E402
    free_port, free_port_range, hold_port_range, release_port_range)

sys.path.insert(0, HERE)
import rtpgen  # noqa: E402

HOST = "127.0.0.1"
PPS = 50  # packets/s per party (rtpgen.c: 20 ms ptime)
STOP_BEFORE_DELETE = 0.3
#: a deleted call's sockets stay open (counting) this long after its parties
#: stopped: a loaded daemon may still be relaying their last packets
CLOSE_AFTER = 3.0
#: ng requests in flight at most (as a SIP proxy's few worker processes);
#: a burst of 200 delete replies (each with the call's statistics) would
#: overflow a UDP socket's receive buffer
MAX_IN_FLIGHT = 20
RSS_LIMIT = 0.05
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.exit(run())"
_PORT = re.compile(r"^m=audio (\d+) ", re.M)


def sdp(port):
    return ("v=0\r\no=soak 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\na=rtcp:%d\r\n" % (HOST, HOST, port, port))


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def port_block(size, step=100):
    """A free block of ``size`` UDP ports for the daemon, outside the
    ephemeral range: above it if it fits there (test runs on a shared box
    pick most of their blocks below it: free_port_range's default takes
    either stretch, block by block, and the one below is five times larger;
    a port one of them holds when the daemon wants it is quarantined: not
    free, not used), else below it.  free_port_range's blocks are aligned to their
    size, and a stray socket in each of the few 4,200-port blocks leaves
    none; this slides the block in ``step``-port steps."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        first, last = (int(x) for x in f.read().split())
    stretches = [(last + 1, 65535), (10000, first - 1)]
    for low, high in stretches:
        for start in range(low + low % 2, high - size + 2, step):
            try:
                block = free_port_range(size, low=start, high=start + size, wait=0)
            except RuntimeError:
                continue
            # held in the test port registry until this process ends, so
            # that test runs on this machine keep out of it
            hold_port_range(*block)
            return block
    raise SystemExit("no free block of %d UDP ports outside %d-%d" % (size, first, last))


def daemon_pids(pid):
    """``pid`` and its children (the media workers)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                pids.append(int(entry))
    return pids


def rss_kib(pids):
    """Summed VmRSS of these processes, in KiB."""
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pids):
    """Summed user + system CPU time of these processes, in seconds."""
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / float(TICKS)


def udp_drops(inodes):
    """Sum of /proc/net/udp 'drops' over the sockets with these inodes."""
    drops = 0
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[9]) in inodes:
                drops += int(fields[12])
    return drops


def port_drops(low, high):
    """{inode: drops} of the UDP sockets bound to a port in [low, high]
    (/proc/net/udp: the datagrams the kernel dropped because the socket's
    receive buffer was full, i.e. its owner did not read fast enough)."""
    drops = {}
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if low <= int(fields[1].rsplit(":", 1)[1], 16) <= high:
                drops[int(fields[9])] = int(fields[12])
    return drops


def socket_inodes(pids):
    """Inodes of the sockets these processes hold."""
    inodes = set()
    for p in pids:
        try:
            fds = os.listdir("/proc/%d/fd" % p)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink("/proc/%d/fd/%s" % (p, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class Call:
    __slots__ = ("call_id", "a", "b", "a_port", "b_port", "state", "t0", "stop_at",
                 "initial", "at_end")

    def __init__(self, call_id, serial, initial, generator):
        self.call_id = call_id
        self.at_end = False  # stopped by the end of the run, not by the churn
        # the parties' generator IDs; consecutive IDs send in consecutive
        # 1 ms slots of the 20 ms tick (rtpgen.c), so the calls spread evenly
        self.a = 2 * serial + 1
        self.b = 2 * serial + 2
        self.a_port = generator.open(self.a, peer=self.b)
        self.b_port = generator.open(self.b, peer=self.a)
        self.state = "new"
        self.t0 = None
        self.stop_at = None
        self.initial = initial


class Soak:
    def __init__(self, args, threads, binary):
        self.args = args
        self.threads = threads
        self.binary = binary
        self.ng_port = free_port()
        self.port_min, self.port_max = port_block(args.calls * 4 + max(200, args.churn * 40))
        self.ng = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ng.bind((HOST, 0))
        self.ng.setblocking(False)
        self.ng.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.queue = collections.deque()  # (message, call, command) not sent yet
        self.epoll = select.epoll()
        self.epoll.register(self.ng.fileno(), select.EPOLLIN)
        self.pending = {}  # cookie -> (call, command)
        self.replies = {}  # cookie -> decoded reply (synchronous requests)
        self.calls = {}
        self.serial = 0
        self.call_serial = 0
        self.setup_initial = []
        self.setup_churn = []
        self.failures = []
        self.retired = []
        self.at_end = set()  # generator IDs of the parties of calls that ran to the end
        self.generator = None
        # inode -> drops of the daemon's media sockets, the highest seen at a
        # sample (a socket's count goes with it when its call ends)
        self.relay_drops = {}
        self.foreign_sockets = set()  # inodes
        self.ng_strays = 0  # datagrams at the ng socket that were no reply

    # -- the daemon ---------------------------------------------------------

    def start_daemon(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "omnirtp",
                "--config-file=none", "--interface=%s" % HOST,
                "--listen-ng=%s:%d" % (HOST, self.ng_port),
                "--port-min=%d" % self.port_min, "--port-max=%d" % self.port_max,
                "--num-threads=%d" % self.threads, "--log-level=5",
                "--endpoint-learning=heuristic", "--timeout=60"]
        self.log = open(os.path.join(self.args.logdir, "soak-omnirtp-%d.log" % self.threads), "w")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=raise_nofile)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.request({"command": "ping"}, timeout=0.5).get("result") == "pong":
                    break
            except TimeoutError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit("omnirtp exited (%s); see %s" % (self.proc.returncode,
                                                                  self.log.name))
        else:
            raise SystemExit("omnirtp did not answer ping; see %s" % self.log.name)
        if self.threads:
            time.sleep(2)  # the workers' start-up

    def stop_daemon(self):
        release_port_range(self.port_min, self.port_max)
        self.generator.kill()  # when the run failed before its report
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    # -- ng -------------------------------------------------------------------

    def _send_ng(self, message):
        self.serial += 1
        cookie = b"soak%d" % self.serial
        self.ng.sendto(cookie + b" " + bencode.encode(message), (HOST, self.ng_port))
        return cookie

    def request(self, message, timeout=10.0):
        """A synchronous request (start and end of a run, not in the loop)."""
        cookie = self._send_ng(message)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll(0.05)
            if cookie in self.replies:
                return self.replies.pop(cookie)
        raise TimeoutError(message.get("command"))

    def _ng_datagrams(self):
        while True:
            try:
                data = self.ng.recv(65535)
            except BlockingIOError:
                return
            cookie, _, body = data.partition(b" ")
            try:
                reply = _text(bencode.decode(body))
            except bencode.BencodeError:
                reply = None
            if not isinstance(reply, dict) or not cookie.startswith(b"soak"):
                # not a reply: something else on the shared box sent to
                # this port (seen once at 18:40 UTC, 3 December)
                self.ng_strays += 1
                continue
            entry = self.pending.pop(cookie, None)
            if entry is None:
                self.replies[cookie] = reply
            else:
                self.on_reply(entry[0], entry[1], reply)
            self.pump()

    # -- calls ----------------------------------------------------------------

    def new_call(self, initial):
        self.call_serial += 1
        call = Call("soak-%d-%d" % (self.threads, self.call_serial), self.call_serial,
                    initial, self.generator)
        self.calls[call.call_id] = call
        call.t0 = time.monotonic()
        call.state = "offering"
        self.queue.append(({"command": "offer", "call-id": call.call_id,
                            "from-tag": "a", "sdp": sdp(call.a_port)}, call, "offer"))
        self.pump()
        return call

    def pump(self):
        """Send queued requests while fewer than MAX_IN_FLIGHT are pending."""
        while self.queue and len(self.pending) < MAX_IN_FLIGHT:
            message, call, command = self.queue.popleft()
            self.pending[self._send_ng(message)] = (call, command)

    def on_reply(self, call, command, reply):
        if reply.get("result") != "ok":
            self.failures.append("%s %s: %s" % (command, call.call_id, reply))
            if command != "delete":
                self.end_call(call, now=time.monotonic(), failed=True)
            return
        if command == "offer":
            # b sends to the port the offer's SDP names for it
            self.generator.send(call.b, int(_PORT.search(reply["sdp"]).group(1)))
            call.state = "answering"
            # the answer goes first: the offer's latency clock is running
            self.queue.appendleft(({"command": "answer", "call-id": call.call_id,
                                    "from-tag": "a", "to-tag": "b", "sdp": sdp(call.b_port)},
                                   call, "answer"))
        elif command == "answer":
            self.generator.send(call.a, int(_PORT.search(reply["sdp"]).group(1)))
            call.state = "up"
            latency = time.monotonic() - call.t0
            (self.setup_initial if call.initial else self.setup_churn).append(latency)

    def end_call(self, call, now, failed=False):
        """Stop sending now; the delete follows STOP_BEFORE_DELETE later."""
        call.state = "stopping"
        call.stop_at = now + (0 if failed else STOP_BEFORE_DELETE)
        self.generator.stop(call.a)
        self.generator.stop(call.b)

    def finish_stopped(self, now):
        for call in [c for c in self.calls.values()
                     if c.state == "stopping" and c.stop_at <= now]:
            self.queue.append(({"command": "delete", "call-id": call.call_id,
                                "delete-delay": 0}, call, "delete"))
            del self.calls[call.call_id]
            call.state = "deleted"
            self.retired.append(call)
        # nothing else may be in flight to send them when a reply comes
        self.pump()

    def close_retired(self, now=None):
        """Close the sockets of deleted calls whose parties stopped
        CLOSE_AFTER ago (all of them when ``now`` is None); the generator
        keeps their counts for its report."""
        keep = []
        for call in self.retired:
            if now is not None and now - call.stop_at < CLOSE_AFTER:
                keep.append(call)
                continue
            if call.at_end:
                self.at_end.update((call.a, call.b))
            self.generator.close(call.a)
            self.generator.close(call.b)
        self.retired = keep

    # -- the loop -------------------------------------------------------------

    def poll(self, timeout):
        if self.epoll.poll(timeout):
            self._ng_datagrams()

    def run(self):
        raise_nofile()
        self.generator = rtpgen.Generator(self.binary, HOST)
        try:
            self.start_daemon()
            try:
                return self._run()
            finally:
                self.stop_daemon()
        finally:
            self.generator.kill()

    def sample(self, t):
        """RSS, CPU and load now, printed as a progress line."""
        pids = daemon_pids(self.proc.pid)
        gen = self.generator.stats()
        held = socket_inodes(pids)
        in_range = port_drops(self.port_min, self.port_max)
        self.relay_drops.update(in_range)
        # sockets of other processes in the daemon's range (its binds there
        # fail); the daemon's are read before and after /proc/net/udp, as
        # the churn opens and closes them meanwhile
        self.foreign_sockets.update(set(in_range) - held - socket_inodes(pids))
        row = {"t": round(t, 1), "rss_kib": rss_kib(pids), "daemon_cpu_s": round(cpu_s(pids), 2),
               "generator_cpu_s": round(gen["cpu_user_s"] + gen["cpu_sys_s"], 2),
               "sent": gen["sent"], "received": gen["received"], "load1": loadavg()}
        last = self.samples[-1] if self.samples else None
        if last and t > last["t"]:
            dt = t - last["t"]
            print("  t=%5.0f s  rss %6.1f MiB  sent %6.0f/s  received %6.0f/s  CPU daemon %3.0f%%"
                  "  generator %3.0f%%  load %.1f  calls up %d" % (
                      t, row["rss_kib"] / 1024.0, (row["sent"] - last["sent"]) / dt,
                      (row["received"] - last["received"]) / dt,
                      100 * (row["daemon_cpu_s"] - last["daemon_cpu_s"]) / dt,
                      100 * (row["generator_cpu_s"] - last["generator_cpu_s"]) / dt,
                      row["load1"], sum(1 for c in self.calls.values() if c.state == "up")),
                  flush=True)
        self.samples.append(row)

    def _run(self):
        args = self.args
        before = self.request({"command": "statistics"})["statistics"]["ports"]
        started = time.monotonic()
        # ramp: MAX_IN_FLIGHT set-ups at a time
        while len(self.setup_initial) + len(self.failures) < args.calls:
            in_flight = sum(1 for c in self.calls.values() if c.state in ("offering", "answering"))
            if len(self.calls) < args.calls and in_flight < MAX_IN_FLIGHT:
                self.new_call(initial=True)
            else:
                self.poll(0.01)
            if time.monotonic() - started > 300:
                raise SystemExit("ramp took over 5 minutes")
        ramp = time.monotonic() - started
        print("  %d calls up in %.1f s" % (len(self.calls), ramp), flush=True)

        duration = args.minutes * 60
        t_start = time.monotonic()
        next_churn = t_start + 1
        next_sample = t_start
        self.samples = []
        churned = 0
        while True:
            now = time.monotonic()
            if now - t_start >= duration:
                break
            if now >= next_churn:
                next_churn += 1
                ups = [c for c in self.calls.values() if c.state == "up"]
                for call in ups[:args.churn]:
                    self.end_call(call, now)
                    self.new_call(initial=False)
                    churned += 1
            self.finish_stopped(now)
            if now >= next_sample:
                next_sample += args.rss_every
                self.sample(now - t_start)
            self.poll(max(0.0, min(next_churn, next_sample, t_start + duration)
                          - time.monotonic()))
            self.close_retired(now)
        self.sample(time.monotonic() - t_start)

        # end: stop all, drain, delete all
        now = time.monotonic()
        for call in list(self.calls.values()):
            if call.state != "stopping":
                call.at_end = True
                self.end_call(call, now)
        drain_end = time.monotonic() + CLOSE_AFTER
        while time.monotonic() < drain_end:
            self.finish_stopped(time.monotonic())
            self.poll(0.05)
        deadline = time.monotonic() + 30
        while (self.pending or self.queue) and time.monotonic() < deadline:
            self.poll(0.05)
        ng_drops = udp_drops({os.fstat(self.ng.fileno()).st_ino})
        for call, command in self.pending.values():
            self.failures.append("%s %s: no reply within 30 s" % (command, call.call_id))
        for message, call, command in self.queue:
            self.failures.append("%s %s: never sent within 30 s" % (command, call.call_id))
        self.relay_drops.update(port_drops(self.port_min, self.port_max))
        self.close_retired()
        gen = self.generator.quit()  # closes what is still open (failed set-ups)
        self.failures.extend("rtpgen: " + e for e in self.generator.errors)
        stats = self.request({"command": "statistics"})["statistics"]
        deadline = time.monotonic() + 10
        after = stats["ports"]
        while after["free"] != before["free"] and time.monotonic() < deadline:
            time.sleep(0.5)
            after = self.request({"command": "statistics"})["statistics"]["ports"]
        # what the daemon still holds in its range (a leak whatever ng says)
        daemon_sockets = len(set(port_drops(self.port_min, self.port_max))
                             & socket_inodes(daemon_pids(self.proc.pid)))

        # per party: (sent, send_errors, missed, received, foreign, drops)
        split = {"churn": 0, "end": 0}
        for party, (sent, _, _, received, _, _) in gen["parties"].items():
            split["end" if party in self.at_end else "churn"] += sent - received
        warm = [row["rss_kib"] for row in self.samples if row["t"] >= args.warmup]
        spread = (max(warm) / min(warm) - 1) if warm else float("nan")
        lost = gen["sent"] - gen["received"] - gen["drops"]
        first, last = self.samples[0], self.samples[-1]
        wall = last["t"] - first["t"]
        loads = [row["load1"] for row in self.samples]
        result = {
            "threads": self.threads, "calls": args.calls, "minutes": args.minutes,
            "churn_per_s": args.churn, "churned": churned, "ramp_s": round(ramp, 1),
            "sent": gen["sent"], "received": gen["received"], "generator_drops": gen["drops"],
            "send_errors": gen["send_errors"], "foreign": gen["foreign"],
            # sends the generator skipped because it was over 20 ms late, and
            # its pace: packets sent / packets due (sent + skipped + refused)
            "missed": gen["missed"],
            "pace": round(gen["sent"] / float(gen["sent"] + gen["missed"] + gen["send_errors"]), 4)
            if gen["sent"] else None,
            "planned_pps": 2 * PPS * args.calls,
            "sent_pps": round((last["sent"] - first["sent"]) / wall) if wall else None,
            "received_pps": round((last["received"] - first["received"]) / wall) if wall else None,
            "max_lag_ms": gen["max_lag_ms"], "late_slots": gen["late_slots"],
            "skipped_slots": gen["skipped_slots"],
            "relay_loss": lost,
            # sent - received (before the generator's drops) of the calls the
            # churn ended and of those that ran to the end
            "loss_churned_calls": split["churn"],
            "loss_calls_to_end": split["end"],
            "relay_loss_pct": round(100.0 * lost / gen["sent"], 4) if gen["sent"] else None,
            # of the loss: datagrams the kernel dropped at the daemon's own
            # sockets (their receive buffers full: the daemon did not read
            # fast enough), as seen at the samples
            "relay_socket_drops": sum(self.relay_drops.values()),
            "relayed_by_daemon": stats["totalstatistics"]["relayedpackets"],
            "daemon_errors": stats["totalstatistics"]["relayedpacketerrors"],
            # CPU over the steady phase, in % of one core
            "daemon_cpu_pct": round(100 * (last["daemon_cpu_s"] - first["daemon_cpu_s"]) / wall, 1)
            if wall else None,
            "generator_cpu_pct": round(100 * (last["generator_cpu_s"] - first["generator_cpu_s"])
                                       / wall, 1) if wall else None,
            "load1_min_median_max": [min(loads), statistics.median(loads), max(loads)],
            "samples": self.samples,
            "rss_spread_after_warmup_pct": round(100 * spread, 2),
            "rss_flat": spread <= RSS_LIMIT,
            "ports_before": before, "ports_after": after,
            "ports_back": after["free"] == before["free"],
            "daemon_sockets_in_range_after": daemon_sockets,
            "foreign_sockets_in_range_seen": len(self.foreign_sockets),
            "setup_initial_ms": _lat(self.setup_initial),
            "setup_churn_ms": _lat(self.setup_churn),
            "failures": self.failures[:10], "failure_count": len(self.failures),
            "wall_s": round(time.monotonic() - started, 1),
            "ng_reply_drops": ng_drops,
            "ng_strays": self.ng_strays,
        }
        return result


def _lat(values):
    return {"n": len(values), "p50": round(1000 * percentile(values, 50), 2),
            "p99": round(1000 * percentile(values, 99), 2),
            "max": round(1000 * max(values), 2) if values else None}


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


def report(r):
    print("num-threads %d: %d calls for %g min, %d churned (%d/s)" % (
        r["threads"], r["calls"], r["minutes"], r["churned"], r["churn_per_s"]))
    print("  packets: sent %d (%d/s of %d/s planned; pace %.2f%%, %d sends skipped over 20 ms"
          " late, max lag %.0f ms), received %d, generator drops %d -> relay loss %d (%s%%)" % (
              r["sent"], r["sent_pps"], r["planned_pps"], 100 * r["pace"], r["missed"],
              r["max_lag_ms"], r["received"], r["generator_drops"], r["relay_loss"],
              r["relay_loss_pct"]))
    print("  of the loss, dropped by the kernel at the daemon's sockets (receive buffer full):"
          " %d (sampled every --rss-every s)" % r["relay_socket_drops"])
    print("  sent - received: %d in calls the churn ended, %d in calls up to the end;"
          " %d foreign datagrams, %d send errors" % (
              r["loss_churned_calls"], r["loss_calls_to_end"], r["foreign"], r["send_errors"]))
    print("  daemon: relayed %d, errors %d; CPU (%% of a core) daemon %.0f%%, generator %.0f%%;"
          " load average %.1f / %.1f / %.1f (min / median / max)" % (
              r["relayed_by_daemon"], r["daemon_errors"], r["daemon_cpu_pct"],
              r["generator_cpu_pct"], *r["load1_min_median_max"]))
    rss = [row["rss_kib"] for row in r["samples"]]
    print("  RSS: %.1f -> %.1f MiB; spread after warm-up %.2f%% (%s)" % (
        rss[0] / 1024.0, rss[-1] / 1024.0, r["rss_spread_after_warmup_pct"],
        "flat" if r["rss_flat"] else "NOT FLAT"))
    print("  ports free: %d before, %d after (%s); the daemon's sockets in its port range"
          " after: %d; other processes' sockets seen there: %d" % (
              r["ports_before"]["free"], r["ports_after"]["free"],
              "back" if r["ports_back"] else "NOT BACK", r["daemon_sockets_in_range_after"],
              r["foreign_sockets_in_range_seen"]))
    for name in ("setup_initial_ms", "setup_churn_ms"):
        lat = r[name]
        print("  %s: n=%d p50 %.2f ms, p99 %.2f ms, max %s ms" % (
            name[:-3].replace("_", " "), lat["n"], lat["p50"], lat["p99"], lat["max"]))
    if r["ng_reply_drops"]:
        print("  %d ng replies dropped at the generator's socket" % r["ng_reply_drops"])
    if r["ng_strays"]:
        print("  %d datagrams at the ng socket were no reply (ignored)" % r["ng_strays"])
    if r["failure_count"]:
        print("  %d failed requests, e.g. %s" % (r["failure_count"], r["failures"][:3]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", default="0,2", help="num-threads values, comma-separated")
    parser.add_argument("--churn", type=int, default=5, help="calls replaced per second")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before RSS must be flat (default: 20%% of the run)")
    parser.add_argument("--rss-every", type=float, default=10.0)
    parser.add_argument("--logdir", default="/tmp")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = 0.2 * args.minutes * 60
    binary = rtpgen.build()
    print("%s; %d CPUs, load average %s" % (
        os.uname().release, os.cpu_count(), open("/proc/loadavg").read().split()[:3]), flush=True)
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        print("num-threads %d: setting up %d calls" % (threads, args.calls), flush=True)
        results.append(Soak(args, threads, binary).run())
        report(results[-1])
        if args.json:  # after every run: a later one may fail
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    ok = all(r["rss_flat"] and r["ports_back"] and not r["failure_count"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
