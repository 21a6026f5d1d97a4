#!/usr/bin/env python3
"""Soak: many concurrent calls through the whole daemon for minutes.

Starts omnirtp (twistd, from this checkout) on loopback, sets up ``--calls``
calls over ng (offer + answer, a few in flight at a time), and plays both
parties of every call: each sends 50 RTP packets/s (172 bytes; ``--pps``
for fewer, spread evenly over the 20 ms ticks) to the port the proxy
advertised to it and counts what arrives.  Every second
``--churn`` calls end (their parties stop sending, then ``delete``) and as
many new ones are set up, so set-up and teardown run all the time.  At the
end every call is deleted.  Run once per ``--threads`` value (num-threads 0
and 2 by default).

Reported per run:

  loss        packets the parties sent (successful sendto) and did not get,
              minus the datagrams the kernel dropped at the generator's own
              sockets (/proc/net/udp "drops" of its sockets): the relay's loss
              beyond the generator's.  Packets still in flight when a call
              ends are not lost: a party stops sending 0.3 s before its
              delete, its socket keeps counting for 3 s after it stopped,
              and the run drains for 3 s at the end.  Shown apart for the
              calls the churn ended and those that ran to the end.
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

It needs about 4 file descriptors per call in the daemon and 2 in this
process (the soft RLIMIT_NOFILE is raised to the hard one for both).
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
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from omnirtp.control import bencode  # noqa: E402
from omnirtp.test.integration.peers import free_port, free_port_range  # noqa: E402

HOST = "127.0.0.1"
PTIME = 0.02
PAYLOAD = b"\xd5" * 160
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


def rss_kib(pid):
    """VmRSS of ``pid`` and of its children (the media workers), in KiB."""
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
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total, len(pids) - 1


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


class Party:
    __slots__ = ("sock", "fd", "port", "target", "seq", "ssrc", "sent", "received", "inode")

    def __init__(self, ssrc):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        self.port = self.sock.getsockname()[1]
        self.inode = os.fstat(self.fd).st_ino
        self.target = None
        self.seq = 0
        self.ssrc = ssrc
        self.sent = 0
        self.received = 0

    def send(self):
        self.seq = (self.seq + 1) & 0xFFFF
        packet = struct.pack("!BBHII", 0x80, 0, self.seq, self.seq * 160, self.ssrc) + PAYLOAD
        try:
            self.sock.sendto(packet, self.target)
        except OSError:
            return
        self.sent += 1


class Call:
    __slots__ = ("call_id", "a", "b", "state", "t0", "stop_at", "initial", "phase", "at_end")

    def __init__(self, call_id, serial, initial, every=1):
        self.call_id = call_id
        # with --pps below 50 a call sends on every ``every``-th 20 ms tick,
        # the calls spread evenly over the ticks (no bursts)
        self.phase = serial % every
        self.at_end = False  # stopped by the end of the run, not by the churn
        self.a = Party(2 * serial + 1)
        self.b = Party(2 * serial + 2)
        self.state = "new"
        self.t0 = None
        self.stop_at = None
        self.initial = initial


class Soak:
    def __init__(self, args, threads):
        self.args = args
        self.threads = threads
        self.ng_port = free_port()
        span = args.calls * 4 + max(200, args.churn * 40)
        self.port_min, self.port_max = free_port_range(span)
        self.ng = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ng.bind((HOST, 0))
        self.ng.setblocking(False)
        self.ng.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.queue = collections.deque()  # (message, call, command) not sent yet
        self.epoll = select.epoll()
        self.epoll.register(self.ng.fileno(), select.EPOLLIN)
        self.by_fd = {}
        self.pending = {}  # cookie -> (call, command)
        self.replies = {}  # cookie -> decoded reply (synchronous requests)
        self.calls = {}
        self.serial = 0
        self.setup_initial = []
        self.setup_churn = []
        self.failures = []
        self.inodes = set()
        self.sent = self.received = 0
        self.retired = []
        self.lost_split = {"churn": 0, "end": 0}
        self.every = 50 // args.pps

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
            reply = _text(bencode.decode(body))
            entry = self.pending.pop(cookie, None)
            if entry is None:
                self.replies[cookie] = reply
            else:
                self.on_reply(entry[0], entry[1], reply)
            self.pump()

    # -- calls ----------------------------------------------------------------

    def new_call(self, initial):
        self.serial += 1
        call = Call("soak-%d-%d" % (self.threads, self.serial), self.serial, initial,
                    self.every)
        for party in (call.a, call.b):
            self.by_fd[party.fd] = party
            self.epoll.register(party.fd, select.EPOLLIN)
            self.inodes.add(party.inode)
        self.calls[call.call_id] = call
        call.t0 = time.monotonic()
        call.state = "offering"
        self.queue.append(({"command": "offer", "call-id": call.call_id,
                            "from-tag": "a", "sdp": sdp(call.a.port)}, call, "offer"))
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
            call.b.target = (HOST, int(_PORT.search(reply["sdp"]).group(1)))
            call.state = "answering"
            # the answer goes first: the offer's latency clock is running
            self.queue.appendleft(({"command": "answer", "call-id": call.call_id,
                                    "from-tag": "a", "to-tag": "b", "sdp": sdp(call.b.port)},
                                   call, "answer"))
        elif command == "answer":
            call.a.target = (HOST, int(_PORT.search(reply["sdp"]).group(1)))
            call.state = "up"
            latency = time.monotonic() - call.t0
            (self.setup_initial if call.initial else self.setup_churn).append(latency)

    def end_call(self, call, now, failed=False):
        """Stop sending now; the delete follows STOP_BEFORE_DELETE later."""
        call.state = "stopping"
        call.stop_at = now + (0 if failed else STOP_BEFORE_DELETE)

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
        CLOSE_AFTER ago (all of them when ``now`` is None), counting them;
        the loss of calls ended by the churn and of those that ran to the
        end apart."""
        keep = []
        for call in self.retired:
            if now is not None and now - call.stop_at < CLOSE_AFTER:
                keep.append(call)
                continue
            lost = 0
            for party in (call.a, call.b):
                self.sent += party.sent
                self.received += party.received
                lost += party.sent - party.received
                self.epoll.unregister(party.fd)
                del self.by_fd[party.fd]
                party.sock.close()
            self.lost_split["end" if call.at_end else "churn"] += lost
        self.retired = keep

    # -- the loop -------------------------------------------------------------

    def poll(self, timeout):
        for fd, _ in self.epoll.poll(timeout):
            party = self.by_fd.get(fd)
            if party is None:
                self._ng_datagrams()
                continue
            sock = party.sock
            while True:
                try:
                    sock.recv(2048)
                except BlockingIOError:
                    break
                party.received += 1

    def run(self):
        args = self.args
        raise_nofile()
        self.start_daemon()
        try:
            return self._run()
        finally:
            self.stop_daemon()

    def _run(self):
        args = self.args
        before = self.request({"command": "statistics"})["statistics"]["ports"]
        started = time.monotonic()
        cpu0 = time.process_time()
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
        next_tick = t_start
        tick = 0
        next_churn = t_start + 1
        next_rss = t_start
        samples = []
        churned = 0
        while True:
            now = time.monotonic()
            if now - t_start >= duration:
                break
            if now >= next_tick:
                phase = tick % self.every
                tick += 1
                for call in self.calls.values():
                    if call.state == "up" and call.phase == phase:
                        call.a.send()
                        call.b.send()
                next_tick += PTIME
                if next_tick < now:  # fell behind: do not burst
                    next_tick = now + PTIME
            if now >= next_churn:
                next_churn += 1
                ups = [c for c in self.calls.values() if c.state == "up" and c.initial is not None]
                for call in ups[:args.churn]:
                    self.end_call(call, now)
                    self.new_call(initial=False)
                    churned += 1
            self.finish_stopped(now)
            if now >= next_rss:
                next_rss += args.rss_every
                rss, workers = rss_kib(self.proc.pid)
                samples.append((round(now - t_start, 1), rss))
                print("  t=%5.0f s  rss %7.1f MiB  (%d workers)  calls up %d" % (
                    now - t_start, rss / 1024.0, workers,
                    sum(1 for c in self.calls.values() if c.state == "up")), flush=True)
            self.poll(max(0.0, min(next_tick, next_churn) - time.monotonic()))
            if len(self.retired) > 200:
                self.close_retired(now)

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
        gen_drops = udp_drops(self.inodes)
        self.close_retired()
        for call in self.calls.values():  # failed set-ups never sent
            self.sent += call.a.sent + call.b.sent
            self.received += call.a.received + call.b.received
        stats = self.request({"command": "statistics"})["statistics"]
        deadline = time.monotonic() + 10
        after = stats["ports"]
        while after["free"] != before["free"] and time.monotonic() < deadline:
            time.sleep(0.5)
            after = self.request({"command": "statistics"})["statistics"]["ports"]

        warm = [rss for t, rss in samples if t >= args.warmup]
        spread = (max(warm) / min(warm) - 1) if warm else float("nan")
        lost = self.sent - self.received - gen_drops
        result = {
            "threads": self.threads, "calls": args.calls, "minutes": args.minutes,
            "churn_per_s": args.churn, "churned": churned, "ramp_s": round(ramp, 1),
            "sent": self.sent, "received": self.received, "generator_drops": gen_drops,
            # the share of the planned --pps packets/s per party the generator managed
            "pps": args.pps,
            "pace": round(self.sent / (2.0 * args.calls * duration * args.pps), 3),
            "relay_loss": lost,
            # sent - received (before the generator's drops) of the calls the
            # churn ended and of those that ran to the end
            "loss_churned_calls": self.lost_split["churn"],
            "loss_calls_to_end": self.lost_split["end"],
            "relay_loss_pct": round(100.0 * lost / self.sent, 4)
            if self.sent else None,
            "relayed_by_daemon": stats["totalstatistics"]["relayedpackets"],
            "daemon_errors": stats["totalstatistics"]["relayedpacketerrors"],
            "rss_kib": samples, "rss_spread_after_warmup_pct": round(100 * spread, 2),
            "rss_flat": spread <= RSS_LIMIT,
            "ports_before": before, "ports_after": after,
            "ports_back": after["free"] == before["free"],
            "setup_initial_ms": _lat(self.setup_initial),
            "setup_churn_ms": _lat(self.setup_churn),
            "failures": self.failures[:10], "failure_count": len(self.failures),
            # this process's CPU time over the run: near the wall time, the
            # generator itself was the limit (pace)
            "generator_cpu_s": round(time.process_time() - cpu0, 1),
            "wall_s": round(time.monotonic() - started, 1),
            "ng_reply_drops": ng_drops,
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
    print("  packets: sent %d (pace %.0f%% of %d/s per party), received %d, generator drops %d"
          " -> relay loss %d (%s%%)" % (r["sent"], 100 * r["pace"], r["pps"], r["received"],
                                        r["generator_drops"], r["relay_loss"],
                                        r["relay_loss_pct"]))
    print("  sent - received: %d in calls the churn ended, %d in calls up to the end" % (
        r["loss_churned_calls"], r["loss_calls_to_end"]))
    print("  daemon: relayed %d, errors %d; generator CPU %.0f s in %.0f s" % (
        r["relayed_by_daemon"], r["daemon_errors"], r["generator_cpu_s"], r["wall_s"]))
    warm = [rss for t, rss in r["rss_kib"]]
    print("  RSS: %.1f -> %.1f MiB; spread after warm-up %.2f%% (%s)" % (
        warm[0] / 1024.0, warm[-1] / 1024.0, r["rss_spread_after_warmup_pct"],
        "flat" if r["rss_flat"] else "NOT FLAT"))
    print("  ports free: %d before, %d after (%s)" % (
        r["ports_before"]["free"], r["ports_after"]["free"],
        "back" if r["ports_back"] else "NOT BACK"))
    for name in ("setup_initial_ms", "setup_churn_ms"):
        lat = r[name]
        print("  %s: n=%d p50 %.2f ms, p99 %.2f ms, max %s ms" % (
            name[:-3].replace("_", " "), lat["n"], lat["p50"], lat["p99"], lat["max"]))
    if r["ng_reply_drops"]:
        print("  %d ng replies dropped at the generator's socket" % r["ng_reply_drops"])
    if r["failure_count"]:
        print("  %d failed requests, e.g. %s" % (r["failure_count"], r["failures"][:3]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", default="0,2", help="num-threads values, comma-separated")
    parser.add_argument("--churn", type=int, default=5, help="calls replaced per second")
    parser.add_argument("--pps", type=int, default=50,
                        help="RTP packets/s each party sends (a divisor of 50; 50 = 20 ms ptime)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before RSS must be flat (default: 20%% of the run)")
    parser.add_argument("--rss-every", type=float, default=10.0)
    parser.add_argument("--logdir", default="/tmp")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.pps < 1 or 50 % args.pps:
        parser.error("--pps must divide 50 (1, 2, 5, 10, 25, 50)")
    if args.warmup is None:
        args.warmup = 0.2 * args.minutes * 60
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        print("num-threads %d: setting up %d calls" % (threads, args.calls), flush=True)
        results.append(Soak(args, threads).run())
        report(results[-1])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    ok = all(r["rss_flat"] and r["ports_back"] and not r["failure_count"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
