"""Opus <-> PCMU transcoded calls per core: omnirtp beside Debian's rtpengine 10.5.

    cd /work/main && .venv/bin/python bench/transcode.py                 # 20 calls, 2 rounds of 8 s
    options: --calls N  --window S  --warmup S  --rounds N  --json out.json
             --workers 1,2  (also omnirtp with num-threads 1 and 2)
             --fmtp "useinbandfec=1"  (party A's Opus fmtp, e.g. a browser's)

Each daemon runs as its own process on loopback (``omnirtp.test.integration.
reference``: omnirtp through twistd with ``--num-threads=0``, everything in
one process; rtpengine in userspace, ``--table=-1 --num-threads=1``).  A call
is set up over ng the same way on both: party A offers Opus only (PT 111,
``opus/48000/2``) with ``codec: {transcode: [PCMU]}``, party B answers PCMU
only, so every packet is transcoded, both ways.  A sends a 440 Hz tone as
20 ms Opus packets (FFmpeg's libopus through PyAV, 32 kbit/s, encoded once
before the run), B a 1 kHz tone as PCMU (omnirtp's G.711 tables), every
20 ms: 100 packets/s in and 100 out per call.  The generator is this
process.

``--ptime N`` adds the ng ``ptime`` and ``ptime-reverse`` N to the offer:
both parties get N ms packets (the transcoders repacketise); the CPU is then
also given per 20 ms of audio delivered (per packet back x 20 / N), which
calls per core use (100 such per call and second).

Loss: 1 - packets back / packets sent in the window (packets still on
their way at its edges make it approximate: a figure near 0 may be slightly
negative).  CPU: utime + stime of the daemon process (all threads) from /proc/<pid>/stat
over the window, divided by the transcoded packets the parties got back.
With ``--workers N`` omnirtp also runs with ``--num-threads=N`` (kind
``omnirtp-wN``): the media runs in N worker processes the daemon spawns,
and the CPU is summed over the daemon and all its descendants (read from
/proc at both ends of the window).  The user and system parts are printed
too.
Calls per core = 1 s / (CPU per packet x 100 packets/s).  The daemons take
turns (rtpengine, omnirtp, omnirtp, rtpengine, ...) and the medians over the
rounds are reported, with the ratio; the machine is shared, so only figures
from the same run compare.

SNR: of call 0's output in the window, against the ideal tone: the peak of
the spectrum (a DFT, 1 Hz resolution) must be the tone's frequency, then
the least-squares sine at that frequency is fitted and its power compared
with the rest (``omnirtp.test.test_codecs.tone_fit``).  PCMU at B (440 Hz,
8 kHz) and Opus at A (1 kHz, decoded by FFmpeg's Opus decoder at 48 kHz).
Benchmarks print figures; they never fail a build.
"""

import argparse
import json
import os
import select
import socket
import statistics
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omnirtp.codecs import g711  # noqa: E402
from omnirtp.test.integration import reference  # noqa: E402
from omnirtp.test.integration.peers import free_port_range  # noqa: E402
from omnirtp.test.integration.test_transcode_udp import OpusParty, peak_frequency  # noqa: E402
from omnirtp.test.test_codecs import tone, tone_fit  # noqa: E402

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
OPUS_TONE, PCMU_TONE = 440, 1000


def _stat(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rpartition(")")[2].split()


def descendants(pid):
    """``pid`` and the processes below it (workers), from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pid):
    """(user, system) CPU seconds of ``pid`` and its descendants."""
    user = system = 0
    for p in descendants(pid):
        try:
            fields = _stat(p)
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def rtp(pt, seq, ts, ssrc, payload):
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def sdp(port, opus, fmtp=""):
    media = ("m=audio %d RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n" % port if opus
             else "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" % port)
    if opus and fmtp:
        media += "a=fmtp:111 %s\r\n" % fmtp
    return ("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n%sa=sendrecv\r\n"
            % (HOST, HOST, media))


def port_of(sdp_text):
    for line in sdp_text.split("\r\n"):
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise ValueError("no m=audio in %r" % sdp_text)


def media_payloads(count):
    """(Opus payloads of the 440 Hz tone, PCMU payloads of the 1 kHz tone)."""
    opus = OpusParty().packets(OPUS_TONE, count)
    samples = tone(PCMU_TONE, 8000, 160 * count, 12000)
    pcm = struct.pack("<%dh" % len(samples), *samples)
    pcmu = [g711.ulaw_encode(pcm[320 * i:320 * (i + 1)]) for i in range(count)]
    return opus, pcmu


def start(kind, ports):
    ng = reference.free_udp_port()
    if kind == "rtpengine":
        daemon = reference.rtpengine_daemon(ng, ports[0], ports[1],
                                            extra=["--num-threads=1", "--log-level=3"])
    else:
        daemon = reference.omnirtp_daemon(ng, ports[0], ports[1])
        if kind.startswith("omnirtp-w"):
            daemon.argv = [a if a != "--num-threads=0" else "--num-threads=%s" % kind[9:]
                           for a in daemon.argv]
    return daemon.start()


def set_up(daemon, calls, tag, fmtp="", ptime=None):
    """Sockets of A and B per call and where each sends to (``ptime``: the
    offer's ng ``ptime`` and ``ptime-reverse``, both sides repacketised)."""
    extra = {} if not ptime else {"ptime": ptime, "ptime-reverse": ptime}
    legs = []
    for i in range(calls):
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (a, b):
            s.bind((HOST, 0))
            s.setblocking(False)
        call_id = "%s-%d" % (tag, i)
        offer = daemon.request({"command": "offer", "call-id": call_id, "from-tag": "a",
                                "sdp": sdp(a.getsockname()[1], True, fmtp),
                                "codec": {"transcode": ["PCMU"]}, **extra})
        if offer.get("result") != "ok":
            raise RuntimeError("offer: %r" % offer)
        answer = daemon.request({"command": "answer", "call-id": call_id, "from-tag": "a",
                                 "to-tag": "b", "sdp": sdp(b.getsockname()[1], False)})
        if answer.get("result") != "ok":
            raise RuntimeError("answer: %r" % answer)
        if " 0\r\n" not in offer["sdp"] or "RTP/AVP 111\r\n" not in answer["sdp"]:
            raise RuntimeError("not a transcoded call: %r %r" % (offer["sdp"], answer["sdp"]))
        legs.append((a, (HOST, port_of(answer["sdp"])), b, (HOST, port_of(offer["sdp"]))))
    return legs


def run(kind, calls, warmup, window, opus, pcmu, tag, fmtp="", ptime=None):
    ports = free_port_range(4 * calls + 40)
    daemon = start(kind, ports)
    sockets = []
    try:
        legs = set_up(daemon, calls, tag, fmtp, ptime)
        sockets = [s for leg in legs for s in (leg[0], leg[2])]
        owner = {}
        for i, (a, _, b, _) in enumerate(legs):
            owner[a.fileno()] = (i, "A")
            owner[b.fileno()] = (i, "B")
        received = {"A": 0, "B": 0}
        at_a, at_b = [], []
        pid = daemon.process.pid
        start_at = time.monotonic()
        begin = start_at + warmup
        end = begin + window
        cpu0 = None
        seq = 0
        next_tick = start_at
        while True:
            now = time.monotonic()
            if cpu0 is None and now >= begin:
                cpu0 = cpu_seconds(pid)
                received = {"A": 0, "B": 0}
                at_a, at_b = [], []
                sent = 0
            if now >= end:
                cpu1 = cpu_seconds(pid)
                break
            if now >= next_tick:
                k = seq % len(opus)
                for i, (a, to_b_side, b, to_a_side) in enumerate(legs):
                    a.sendto(rtp(111, seq, 960 * seq, 0xA000 + i, opus[k]), to_b_side)
                    b.sendto(rtp(0, seq, 160 * seq, 0xB000 + i, pcmu[k]), to_a_side)
                seq += 1
                if cpu0 is not None:
                    sent += 2 * len(legs)
                next_tick += 0.02
                continue
            readable, _, _ = select.select(sockets, [], [], max(0.0, next_tick - now))
            for s in readable:
                while True:
                    try:
                        data = s.recv(2048)
                    except BlockingIOError:
                        break
                    i, side = owner[s.fileno()]
                    received[side] += 1
                    if i == 0 and cpu0 is not None:
                        (at_a if side == "A" else at_b).append(data)
        packets = received["A"] + received["B"]
        user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        return {"kind": kind, "cpu_s": user + system, "packets": packets,
                "sent": sent, "processes": len(descendants(pid)),
                "us_per_packet": 1e6 * (user + system) / max(packets, 1),
                # per 20 ms of audio delivered (= per packet back without --ptime)
                "us_per_20ms": 1e6 * (user + system) / max(packets * (ptime or 20) / 20, 1),
                "user_us": 1e6 * user / max(packets, 1),
                "system_us": 1e6 * system / max(packets, 1),
                "snr_pcmu": snr_pcmu(at_b), "snr_opus": snr_opus(at_a)}
    finally:
        for s in sockets:
            s.close()
        daemon.stop()


def in_order(packets):
    return [p for _, p in sorted((struct.unpack("!H", p[2:4])[0], p) for p in packets)]


def fit(samples, frequency, rate):
    """(peak frequency, SNR dB) of ``samples`` against the ideal tone."""
    step = rate // 8000
    peak = peak_frequency(samples[:1600 * step:step], 8000)
    try:
        return peak, round(tone_fit(samples, frequency, rate)[0], 1)
    except ValueError:  # no tone at all in the window (silence): no SNR
        return peak, None


def snr_pcmu(packets):
    packets = in_order(packets)[10:60]  # 1 s of call 0's PCMU at B
    if len(packets) < 40:
        return None
    pcm = b"".join(g711.ulaw_decode(p[12:]) for p in packets)
    return fit(list(struct.unpack("<%dh" % (len(pcm) // 2), pcm)), OPUS_TONE, 8000)


def snr_opus(packets):
    packets = in_order(packets)[:60]
    if len(packets) < 50:
        return None
    party = OpusParty()
    samples = []
    for p in packets:
        samples.extend(party.decode(p[12 + 4 * (p[0] & 0x0F):]))
    return fit(samples[9600:9600 + 48000], PCMU_TONE, 48000)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json")
    parser.add_argument("--workers", default="",
                        help="comma-separated num-threads values to run omnirtp with too")
    parser.add_argument("--fmtp", default="", help="fmtp of party A's Opus (default none)")
    parser.add_argument("--ptime", type=int, help="ng ptime and ptime-reverse of the offer: both"
                        " sides get packets of that many ms (default: as sent, 20)")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if reference.find_rtpengine() is None:
        sys.exit("rtpengine is not installed")
    total = int((args.warmup + args.window) / 0.02) + 100
    opus, pcmu = media_payloads(total)
    kinds = ["rtpengine", "omnirtp"] + ["omnirtp-w%d" % w for w in workers]
    results = {kind: [] for kind in kinds}
    order = []
    for r in range(args.rounds):
        order += kinds if r % 2 == 0 else kinds[::-1]
    for n, kind in enumerate(order):
        result = run(kind, args.calls, args.warmup, args.window, opus, pcmu, "b%d" % n,
                     args.fmtp, args.ptime)
        results[kind].append(result)
        print("%-12s %6.1f us/packet (user %5.1f sys %5.1f, %d processes)  %6d packets back"
              " of %6d  SNR PCMU %s  Opus %s" % (
                  kind, result["us_per_packet"], result["user_us"], result["system_us"],
                  result["processes"], result["packets"], result["sent"],
                  result["snr_pcmu"], result["snr_opus"]), flush=True)
    summary = {}
    per_in = (args.ptime or 20) / 20  # packets in per packet back
    for kind, runs in results.items():
        us = statistics.median(r["us_per_packet"] for r in runs)
        # CPU per call and second: per 20 ms of audio delivered x 100 (with
        # --ptime fewer or more packets carry it)
        us_20 = statistics.median(r["us_per_20ms"] for r in runs)
        summary[kind] = {"us_per_packet": round(us, 1), "us_per_20ms": round(us_20, 1),
                         "user_us": round(statistics.median(r["user_us"] for r in runs), 1),
                         "system_us": round(statistics.median(r["system_us"] for r in runs), 1),
                         "calls_per_core": round(1e6 / (us_20 * 100), 1),
                         "loss": round(1 - statistics.median(r["packets"] * per_in / r["sent"]
                                                             for r in runs), 4),
                         "snr_pcmu": [r["snr_pcmu"] for r in runs],
                         "snr_opus": [r["snr_opus"] for r in runs]}
    ratio = summary["omnirtp"]["calls_per_core"] / summary["rtpengine"]["calls_per_core"]
    print("\n%d calls, %d rounds of %.0f s (after %.0f s warm-up), Opus fmtp %r, ptime %s,"
          " medians:" % (args.calls, args.rounds, args.window, args.warmup, args.fmtp,
                         args.ptime or "as sent"))
    for kind in kinds[1:] + kinds[:1]:
        s = summary[kind]
        print("%-12s %6.1f us CPU per transcoded packet (user %5.1f, sys %5.1f; %5.1f per 20"
              " ms delivered)  %6.1f calls per core  loss %.2f%%  SNR (peak Hz, dB) PCMU %s Opus %s"
              % (kind, s["us_per_packet"], s["user_us"], s["system_us"], s["us_per_20ms"],
                 s["calls_per_core"], 100 * s["loss"], s["snr_pcmu"], s["snr_opus"]))
    print("ratio omnirtp / rtpengine calls per core: %.2f" % ratio)
    ratios = {}
    for w in workers:
        kind = "omnirtp-w%d" % w
        ratios[kind] = summary[kind]["us_per_packet"] / summary["omnirtp"]["us_per_packet"]
        print("%s CPU per packet / omnirtp (num-threads 0): %.2f" % (kind, ratios[kind]))
    if 1 in workers and 2 in workers:
        ratios["w2/w1"] = (summary["omnirtp-w2"]["us_per_packet"]
                           / summary["omnirtp-w1"]["us_per_packet"])
        print("omnirtp-w2 CPU per packet / omnirtp-w1: %.2f" % ratios["w2/w1"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "ratio": ratio, "workers": ratios,
                       "fmtp": args.fmtp, "ptime": args.ptime, "runs": results}, f, indent=1)


if __name__ == "__main__":
    main()
