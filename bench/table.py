#!/usr/bin/env python3
"""One table: omnirtp beside Debian's rtpengine 10.5, every figure from the same run.

    sudo .venv/bin/python bench/table.py [--quick] [--json out.json]     # root: netns + nftables

It runs the other benchmarks of this directory (imported, or as child
processes with ``--json``) one after the other, then prints one table of
ratios (higher is better for omnirtp in the ratio column):

* relay (``bench/relay.py``'s generator, ``cpu_run``, ``load_step`` and
  ``Search``, in a network namespace made for the run, so that the
  nftables table of the offloaded relay and its loopback traffic are the
  run's own): CPU µs per relayed packet of the proxy process and max calls
  at < 0.1% loss with the proxy on one core, for omnirtp's engine in
  userspace (``engine``), omnirtp's engine with kernel forwarding
  (``offload``: ``table = 0``, nftables) and rtpengine 10.5 in userspace;
* the kernel's CPU per offloaded packet (``bench/kernel_share.py``: a
  party's send + receive through an offloaded stream less the same
  directly), added to the offloaded proxy's for calls per core;
* p99 added latency at half load: while the generator runs half of
  rtpengine's max calls through each proxy, a probe process sends one more
  call's packets (50/s each way) carrying their send time and takes the
  time each one arrives through the proxy; the p99 of those times;
* call set-up rate (cycles/s, 8 outstanding) and memory per idle call:
  ``bench/setup.py --call plain --kinds omnirtp0,rtpengine``;
* SRTP calls per core: ``bench/srtp.py --modes srtp``;
* transcoded (Opus <-> PCMU) calls per core: ``bench/transcode.py``.

Each part compares the daemons in the same minutes, rounds interleaved;
the box is shared, so only the ratios of one run mean anything.  The
method of each part is that benchmark's (its docstring).  Benchmarks print
figures; they never fail a build.
"""

import argparse
import json
import os
import resource
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import relay  # noqa: E402  (bench/relay.py)
from omnirtp.media.engine import KERNEL_REFRESH  # noqa: E402

RELAY_KINDS = ("engine", "offload", "rtpengine")
PROBE_ADDRESS = "127.0.0.253"
#: calls the offloaded relay hands to the kernel per second of warm-up (its
#: check runs once a second and adds every confirmed call in one batch)
OFFLOAD_PER_SECOND = 2000.0


def log(msg):
    print(msg, flush=True)


# -- relay part (inside the run's network namespace) -------------------------------


class Search(relay.Search):
    """relay.Search whose offloaded steps warm up long enough for every
    call to be in the kernel before the window."""

    def step(self, calls):
        warmup = self.warmup
        if self.kind == "offload":
            warmup += calls / OFFLOAD_PER_SECOND
        s = relay.load_step(self.gen, self.kind, calls, self.seconds, warmup, self.size)
        s["verdict"] = relay.verdict(s)
        self.steps.append(s)
        relay.log_step(self.log, self.kind, s)
        return s["verdict"]


def probe(relay_pair, sockets, start, warmup, seconds, out):
    """Child process: one call's packets both ways, 50/s, each carrying its
    send time (ns); writes the one-way times through the proxy (after the
    warm-up) to ``out`` as JSON."""
    a, b = sockets
    (to_a, to_b) = relay_pair  # where A sends, where B sends
    poll = select.epoll()
    for s in (a, b):
        s.setblocking(False)
        poll.register(s.fileno(), select.EPOLLIN)
    by_fd = {a.fileno(): a, b.fileno(): b}
    header = relay.rtp_packets(1)[0][:12]
    times = []
    clock = time.perf_counter_ns
    end = start + int((warmup + seconds) * 1e9)
    measure_from = start + int(warmup * 1e9)
    next_send = clock()
    while True:
        now = clock()
        if now >= end:
            break
        if now >= next_send:
            stamp = struct.pack("!q", now)
            a.sendto(header + stamp + bytes(152), to_a)
            b.sendto(header + stamp + bytes(152), to_b)
            next_send += 20_000_000
        for fd, _ in poll.poll(max(0.0, (next_send - clock()) / 1e9)):
            while True:
                try:
                    data = by_fd[fd].recv(2048)
                except OSError:
                    break
                t = clock()
                sent = struct.unpack("!q", data[12:20])[0]
                if sent >= measure_from:
                    times.append((t - sent) / 1000.0)
    with open(out, "w") as f:
        json.dump(times, f)


def latency_run(gen, kind, calls, warmup, seconds):
    """p50/p99/max µs through ``kind`` while ``calls`` other calls run."""
    gen.set_receive_buffer(8 << 20)
    gen.drain(0.05)
    pair = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((PROBE_ADDRESS, 0))
        pair.append(s)
    parties = gen.parties(calls) + [(pair[0].getsockname(), pair[1].getsockname())]
    if kind == "offload":
        warmup += calls / OFFLOAD_PER_SECOND
    proxy = relay.start_relay(kind, parties)
    fd, out = tempfile.mkstemp(prefix="omnirtp-latency-", suffix=".json")
    os.close(fd)
    try:
        start = time.perf_counter_ns()
        child = os.fork()
        if child == 0:
            try:
                probe(proxy.sockets[-1], pair, start, warmup, seconds, out)
            finally:
                os._exit(0)
        gen.run(proxy.sockets[:-1], warmup + seconds + 0.2)
        os.waitpid(child, 0)
        with open(out) as f:
            times = sorted(json.load(f))
    finally:
        proxy.stop()
        os.unlink(out)
        for s in pair:
            s.close()
    if not times:
        return {"n": 0}
    expected = int(seconds * 2 * relay.PPS_PER_FLOW)
    return {"n": len(times), "expected": expected,
            "p50": times[len(times) // 2], "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
            "max": times[-1]}


def relay_part(args):
    """The relay figures (run in the namespace): writes ``args.relay_part``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # two party sockets per call, and some descriptors to spare
    if 2 * args.offload_max_calls + 1000 > hard:
        args.offload_max_calls = (hard - 1000) // 2
        log("relay: at most %d offloaded calls (%d file descriptors)"
            % (args.offload_max_calls, hard))
    os.sched_setaffinity(0, {relay.GENERATOR_CPU})
    if args.quick:
        runs, warmup, seconds = 2, 1.0, 2.0
        step_warmup, step_seconds, repeat, rounds = 1.0, 2.0, 1, 3
        lat_seconds = 6.0
    else:
        runs, warmup, seconds = 5, 1.0, 3.0
        step_warmup, step_seconds, repeat, rounds = 1.0, 4.0, 3, 5
        lat_seconds = 15.0
    results = {k: {"cpu_samples": []} for k in RELAY_KINDS}
    # first, while this process has few descriptors: libnftables watches its
    # netlink socket with select(), which aborts the process (FD_SETSIZE)
    # when the socket's descriptor is 1024 or more
    log("relay: the kernel's CPU per offloaded packet (bench/kernel_share.py), %d rounds"
        % (2 * runs + 1))
    import kernel_share

    results["kernel_share"] = kernel_share.measure(
        50000 if args.quick else 200000, 2 * runs + 1,
        log=lambda line: log("    " + line.strip()))
    log("    the kernel's share: %.2f us/packet" % results["kernel_share"]["kernel"])
    # a party socket per call, as real calls have
    gen = relay.Generator(sockets_per_side=args.offload_max_calls)
    size = relay.truesize()
    try:
        log("relay: CPU per relayed packet, %d calls, %d run(s) of %.0f s (offloaded: %.1f s), "
            "interleaved" % (args.cpu_calls, runs, seconds, max(seconds, KERNEL_REFRESH + 0.5)))
        for i in range(runs):
            for kind in relay.rotated(list(RELAY_KINDS), i):
                warm, window = warmup, seconds
                if kind == "offload":
                    # every call in the kernel first; a window that holds one
                    # of the engine's full counter reads (every KERNEL_REFRESH
                    # seconds), so that their cost is in the figure
                    warm, window = warmup + 2.0, max(seconds, KERNEL_REFRESH + 0.5)
                r = relay.cpu_run(gen, kind, args.cpu_calls, warm, window)
                results[kind]["cpu_samples"].append(r)
                log("    %-9s %6.2f us/packet  relay cpu %3.0f%%  generator cpu %3.0f%%  "
                    "loss %.3f%%" % (kind, r["us_per_packet"], 100 * r["relay_cpu"],
                                     100 * r["generator_cpu"], 100 * r["loss"]))
        for kind in RELAY_KINDS:
            results[kind]["us_per_packet"] = statistics.median(
                s["us_per_packet"] for s in results[kind]["cpu_samples"])
        log("relay: max calls at < %.1f%% loss (steps of %.1f s)"
            % (100 * relay.LOSS_LIMIT, step_seconds))
        searches = {}
        for kind in ("rtpengine", "engine"):
            searches[kind] = Search(gen, kind, step_seconds, step_warmup, size, log)
            searches[kind].coarse(args.start, args.max_calls)
        for i in range(repeat):
            for kind in relay.rotated(["rtpengine", "engine"], i):
                searches[kind].bisect(rounds)
        reference = searches["rtpengine"].answer()[0]
        # the offloaded relay: up to 6x rtpengine's (the goal is 5x)
        limit = min(args.offload_max_calls, max(args.max_calls, 6 * reference))
        searches["offload"] = Search(gen, "offload", step_seconds, step_warmup, size, log)
        searches["offload"].coarse(max(args.start, reference), limit)
        for _ in range(repeat):
            searches["offload"].bisect(rounds)
        for kind, search in searches.items():
            calls, lower = search.answer()
            results[kind].update(max_calls=calls, max_calls_lower_bound=lower,
                                 max_calls_samples=search.results, steps=search.steps)
        half = max(1, reference // 2)
        log("relay: latency through each proxy at half of rtpengine's max calls (%d calls)" % half)
        for kind in RELAY_KINDS:
            lat = latency_run(gen, kind, half, step_warmup + 1.0, lat_seconds)
            results[kind]["latency"] = dict(lat, calls=half)
            if lat["n"]:
                log("    %-9s p50 %7.1f us  p99 %7.1f us  max %8.1f us  (%d of %d probes back)"
                    % (kind, lat["p50"], lat["p99"], lat["max"], lat["n"], lat["expected"]))
            else:
                log("    %-9s no probe came back" % kind)
    finally:
        gen.close()
    results["cpu_calls"] = args.cpu_calls
    with open(args.relay_part, "w") as f:
        json.dump(results, f, indent=1)


class Namespace:
    """A network namespace for the relay part: loopback up, forwarding on
    (kernel forwarding refuses to start without it)."""

    def __init__(self):
        self.name = "omnirtp-bench-%s" % uuid.uuid4().hex[:8]
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.exec(["ip", "link", "set", "lo", "up"])
        self.exec(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])

    def exec(self, argv, **kwargs):
        return subprocess.run(["ip", "netns", "exec", self.name] + argv, check=True, **kwargs)

    def delete(self):
        subprocess.run(["ip", "netns", "delete", self.name])


# -- the other parts (child processes) ---------------------------------------------


def run_json(argv, name):
    """Run a benchmark with ``--json FILE``; its output goes to ours."""
    fd, out = tempfile.mkstemp(prefix="omnirtp-%s-" % name, suffix=".json")
    os.close(fd)
    try:
        env = dict(os.environ, PYTHONPATH=ROOT)
        log("$ " + " ".join(argv[1:] + ["--json", out]))
        subprocess.run(argv + ["--json", out], check=True, env=env, cwd=ROOT)
        with open(out) as f:
            return json.load(f)
    finally:
        os.unlink(out)


def srtp_medians(samples):
    import srtp

    med = {}
    for config, values in samples.items():
        good = [s for s in values if abs(s["loss"]) <= srtp.MAX_LOSS and s["pace"] >= srtp.MIN_PACE]
        med[config] = statistics.median(s["calls_per_core"] for s in (good or values))
    return med


# -- the table -----------------------------------------------------------------------


def rows(r):
    """``[(figure, omnirtp, rtpengine, ratio, goal, note)]`` from the results."""
    out = []
    rel = r.get("relay")
    if rel:
        e, o, x = rel["engine"], rel["offload"], rel["rtpengine"]
        out.append(("relay CPU us/packet, userspace", "%.2f" % e["us_per_packet"],
                    "%.2f" % x["us_per_packet"], x["us_per_packet"] / e["us_per_packet"], None,
                    "proxy process CPU per relayed packet"))
        out.append(("relay CPU us/packet, offloaded", "%.2f" % o["us_per_packet"],
                    "%.2f" % x["us_per_packet"],
                    x["us_per_packet"] / max(o["us_per_packet"], 1e-3), None,
                    "omnirtp's process only; the kernel's forwarding is softirq time"))

        def system(k):
            """µs per packet of the proxy and the sender together: on
            loopback the kernel's forwarding runs in the sender's sendto
            (softirq in its context), and a userspace proxy's sendto
            delivers to the receiver as the kernel does when offloaded."""
            return statistics.median(
                s["us_per_packet"] + 1e6 * s["generator_cpu"]
                / (s["achieved"] * 2 * relay.PPS_PER_FLOW * rel["cpu_calls"])
                for s in k["cpu_samples"])

        if "cpu_calls" in rel:
            out.append(("proxy + sender CPU us/packet, offloaded", "%.2f" % system(o),
                        "%.2f" % system(x), system(x) / system(o), None,
                        "userspace omnirtp: %.2f; the kernel's share is in the sender's"
                        % system(e)))

        # calls per core as srtp.py and transcode.py count them: one core's
        # second over the CPU of a call's 100 packets (a busy box starves
        # the searches below; CPU per packet is the steadier figure)
        def per_core(us):
            return 1e6 / (us * 2 * relay.PPS_PER_FLOW)

        out.append(("calls per core from CPU, userspace", "%.0f" % per_core(e["us_per_packet"]),
                    "%.0f" % per_core(x["us_per_packet"]),
                    x["us_per_packet"] / e["us_per_packet"], 1.0, ""))
        if "kernel_share" in rel:
            # the kernel's work for an offloaded packet, measured by itself:
            # a party's send + receive through the rules less the same
            # without them (bench/kernel_share.py)
            kernel = max(rel["kernel_share"]["kernel"], 0.01)
            how = "measured: bench/kernel_share.py"
        elif "cpu_calls" in rel:
            # older runs: what the sender spent beyond its rtpengine runs
            kernel = max(system(o) - system(x) + x["us_per_packet"] - o["us_per_packet"], 0.01)
            how = "the sender's extra"
        if "kernel_share" in rel or "cpu_calls" in rel:
            offloaded = o["us_per_packet"] + kernel
            out.append(("calls per core from CPU, offloaded (proxy + kernel)",
                        "%.0f" % per_core(offloaded), "%.0f" % per_core(x["us_per_packet"]),
                        x["us_per_packet"] / offloaded, 5.0,
                        "kernel %.2f us/packet (%s); the proxy process alone: %.0f"
                        % (kernel, how, per_core(max(o["us_per_packet"], 1e-3)))))

        def calls(k):
            return "%s%d" % (">=" if k["max_calls_lower_bound"] else "", k["max_calls"])

        ref = x["max_calls"]
        out.append(("max calls < 0.1% loss, userspace", calls(e), calls(x),
                    e["max_calls"] / ref, 1.0, ""))
        out.append(("max calls < 0.1% loss, offloaded", calls(o), calls(x),
                    o["max_calls"] / ref, 5.0,
                    "lower bound: the sender's limit" if o["max_calls_lower_bound"] else ""))
        for kind, label in (("engine", "userspace"), ("offload", "offloaded")):
            lat, ref_lat = rel[kind].get("latency", {}), x.get("latency", {})
            if lat.get("n") and ref_lat.get("n"):
                out.append(("p99 latency us at half load, %s" % label, "%.0f" % lat["p99"],
                            "%.0f" % ref_lat["p99"], ref_lat["p99"] / lat["p99"], None,
                            "%d calls" % lat["calls"]))
    setup = r.get("setup")
    if setup:
        o, x = setup["omnirtp0"], setup["rtpengine"]
        out.append(("call set-up cycles/s (8 outstanding)", "%.0f" % o["par"], "%.0f" % x["par"],
                    o["par"] / x["par"], None, "plain SIP calls, offer+answer+delete"))
        if o.get("kb_per_idle_call") and x.get("kb_per_idle_call"):
            out.append(("memory KB per idle call", "%.1f" % o["kb_per_idle_call"],
                        "%.1f" % x["kb_per_idle_call"],
                        x["kb_per_idle_call"] / o["kb_per_idle_call"], None, ""))
    srtp = r.get("srtp")
    if srtp:
        med = srtp_medians(srtp)
        o, x = med["omnirtp/srtp"], med["rtpengine/srtp"]
        out.append(("SRTP calls per core", "%.0f" % o, "%.0f" % x, o / x, None, ""))
    tr = r.get("transcode")
    if tr:
        o, x = tr["summary"]["omnirtp"]["calls_per_core"], tr["summary"]["rtpengine"]["calls_per_core"]
        out.append(("transcoded calls per core", "%.0f" % o, "%.0f" % x, o / x, None,
                    "Opus <-> PCMU"))
    return out


def print_table(results):
    log("")
    log("| figure | omnirtp | rtpengine 10.5 | omnirtp / rtpengine (higher is better) | goal |")
    log("|---|---|---|---|---|")
    for figure, ours, theirs, ratio, goal, note in rows(results):
        verdict = ""
        if goal is not None:
            verdict = ">= %.1fx: %s" % (goal, "met" if ratio >= goal else
                                        "missed by %.0f%%" % (100 * (1 - ratio / goal)))
        log("| %s | %s | %s | %.2fx%s | %s |" % (figure, ours, theirs, ratio,
                                                 " (%s)" % note if note else "", verdict))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer and shorter rounds everywhere")
    p.add_argument("--parts", default="relay,setup,srtp,transcode")
    p.add_argument("--cpu-calls", type=int, default=200, help="calls in the relay CPU runs")
    p.add_argument("--start", type=int, default=400, help="first load of the capacity searches")
    p.add_argument("--max-calls", type=int, default=4000, help="userspace searches stop here")
    p.add_argument("--offload-max-calls", type=int, default=12000,
                   help="the offloaded search stops here (a party socket per call)")
    p.add_argument("--json", help="also write every part's results here")
    p.add_argument("--table", metavar="JSON", help="print the table of an earlier --json")
    p.add_argument("--relay-part", help=argparse.SUPPRESS)  # inside the namespace
    args = p.parse_args(argv)
    if args.relay_part:
        return relay_part(args)
    if args.table:
        with open(args.table) as f:
            results = json.load(f)
        if "relay" in results:
            results["relay"].setdefault("cpu_calls", args.cpu_calls)
        print_table(results)
        return 0
    if os.geteuid() != 0:
        sys.exit("needs root (a network namespace and nftables for the offloaded relay)")
    parts = args.parts.split(",")
    quick = ["--quick"] if args.quick else []
    py = sys.executable
    results = {}
    started = time.time()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    log("omnirtp %s, Python %s, rtpengine %s; load average %s" % (
        commit, sys.version.split()[0],
        subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "rtpengine-daemon"],
                       capture_output=True, text=True).stdout.strip() or "?",
        " ".join(open("/proc/loadavg").read().split()[:3])))
    if "relay" in parts:
        ns = Namespace()
        fd, out = tempfile.mkstemp(prefix="omnirtp-relay-", suffix=".json")
        os.close(fd)
        try:
            env = dict(os.environ, PYTHONPATH=ROOT)
            ns.exec([py, os.path.abspath(__file__), "--relay-part", out,
                     "--cpu-calls", str(args.cpu_calls), "--start", str(args.start),
                     "--max-calls", str(args.max_calls),
                     "--offload-max-calls", str(args.offload_max_calls)] + quick, env=env)
            with open(out) as f:
                results["relay"] = json.load(f)
        except (subprocess.CalledProcessError, ValueError) as e:
            log("relay failed: %s" % (e,))
            results.setdefault("failed", []).append("relay")
        finally:
            os.unlink(out)
            ns.delete()

    def part(name, argv):
        """One child benchmark; a failure (a busy box: ``Ran out of
        ports``) is noted and the table goes on without it."""
        try:
            results[name] = run_json(argv, name)
        except (subprocess.CalledProcessError, OSError, ValueError) as e:
            log("%s failed: %s" % (name, e))
            results.setdefault("failed", []).append(name)
        save()

    def save():
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)

    save()
    if "setup" in parts:
        rounds = ["--rounds", "2", "--seconds", "1.5", "--idle-calls", "1000"] if args.quick \
            else ["--rounds", "5", "--seconds", "2", "--idle-calls", "2000"]
        part("setup", [py, os.path.join(HERE, "setup.py"), "--call", "plain",
                       "--kinds", "omnirtp0,rtpengine"] + rounds)
    if "srtp" in parts:
        rounds = ["--rounds", "2", "--calls", "200"] if args.quick else ["--rounds", "5",
                                                                       "--calls", "300"]
        part("srtp", [py, os.path.join(HERE, "srtp.py"), "--modes", "srtp",
                      "--kinds", "omnirtp,rtpengine"] + rounds)
    if "transcode" in parts:
        rounds = ["--rounds", "2", "--window", "5"] if args.quick else ["--rounds", "4"]
        part("transcode", [py, os.path.join(HERE, "transcode.py")] + rounds)
    print_table(results)
    if results.get("failed"):
        log("not in the table (failed): %s" % ", ".join(results["failed"]))
    log("(%.0f s in all; load average now %s)" % (
        time.time() - started, " ".join(open("/proc/loadavg").read().split()[:3])))
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
