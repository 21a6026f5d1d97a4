"""The TOS byte of relayed media on the wire, omnirtp beside rtpengine 10.5.

Each test starts a daemon with ``--tos=46`` on loopback, captures its media
port range with dumpcap on ``lo`` and makes two calls whose parties send
RTP and RTCP both ways, in three rounds separated by re-offers that change
the calls' ``TOS`` (rtpengine's rules: only an offer sets it; absent or
over 255 restores the option, negative keeps it).  tshark reads the IPv4
``ip.dsfield`` / IPv6 ``ipv6.tclass`` of every captured datagram: each
datagram a party sent must appear once going in with 0 (the parties set
nothing) and once coming out of the proxy with the call's value of that
round.  The rtpengine tests run the same check against Debian's rtpengine
10.5, which proves the method and pins the rules; the omnirtp tests run it
with media in the control process and in two worker processes (the value
crosses the AMP seam), over IPv4 and IPv6 (``::1``).
"""

import os
import signal
import socket
import subprocess
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from omnirtp.test.integration.peers import (
    NO_IPV6, Peer, find_program, free_port, free_port_range, have_ipv6_loopback,
    start_omnirtp, start_rtpengine)

OPTION_TOS = 46
V4 = "127.0.0.1"
V6 = "::1"

# round -> {call: (keys of the offer that starts the round, TOS expected)}
ROUNDS = [
    # a new call: the option; TOS in an answer is ignored
    {"c1": ({}, OPTION_TOS), "c2": ({"TOS": 184}, 184)},
    # a re-offer with a new value; a negative one keeps the last
    {"c1": ({"TOS": 8}, 8), "c2": ({"TOS": -1}, 184)},
    # over 255, or absent: the option again
    {"c1": ({"TOS": 256}, OPTION_TOS), "c2": ({}, OPTION_TOS)},
]
ANSWER_KEYS = {"TOS": 32}


def sdp(address, port):
    family = "IP6" if ":" in address else "IP4"
    return ("v=0\r\no=- 1 1 IN %s %s\r\ns=-\r\nc=IN %s %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\n" % (family, address, family, address, port))


def media_port(text):
    for line in text.splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise AssertionError("no m=audio line in %r" % (text,))


class Party:
    """A call party: an RTP socket on an even port and RTCP on the next."""

    def __init__(self, test, address):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.address = address
        for _ in range(100):
            rtp = socket.socket(family, socket.SOCK_DGRAM)
            rtp.bind((address, 0))
            port = rtp.getsockname()[1]
            rtcp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                if port % 2:
                    raise OSError("odd port")
                rtcp.bind((address, port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            break
        else:
            raise AssertionError("no even/odd port pair free on %s" % (address,))
        for s in (rtp, rtcp):
            s.settimeout(3.0)
            test.addCleanup(s.close)
        self.rtp, self.rtcp, self.port = rtp, rtcp, port
        self.proxy_port = None  # the proxy's RTP port this party sends to

    def sdp(self):
        return sdp(self.address, self.port)

    def send(self, marker):
        """RTP and RTCP, each with ``marker`` after its header; returns both."""
        rtp = b"\x80\x00\x00\x01" + b"\x00" * 8 + marker + b" rtp"
        rtcp = b"\x80\xc8\x00\x06" + b"\x00" * 4 + marker + b" rtcp"
        self.rtp.sendto(rtp, (self.address, self.proxy_port))
        self.rtcp.sendto(rtcp, (self.address, self.proxy_port + 1))
        return rtp, rtcp

    def expect(self, rtp, rtcp):
        for sock, want in ((self.rtp, rtp), (self.rtcp, rtcp)):
            data, source = sock.recvfrom(2048)
            if data != want:
                raise AssertionError("%r received %r, expected %r" % (
                    sock.getsockname(), data, want))


class Capture:
    """dumpcap on ``lo`` for a UDP port range, with no datagram lost at
    either end.

    dumpcap says "Capturing on" before its capture is open and hands
    datagrams to its file in batches (about every 0.75 s here); SIGINT drops
    a batch not yet written.  So the capture also takes a probe port of its
    own: :meth:`sync` sends a datagram with a fresh token from that port to
    itself and waits until the token is in the file.  Once after the start
    (everything sent later is captured) and once before the stop
    (everything sent earlier is in the file).  Rows of the probe port are
    not in :meth:`stop`'s result."""

    def __init__(self, test, port_min, port_max, wait=15.0):
        self.wait = wait
        self.probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        test.addCleanup(self.probe.close)
        self.probe.bind(("127.0.0.1", 0))
        self.probe.settimeout(5.0)
        self.probe_port = self.probe.getsockname()[1]
        directory = os.path.abspath(test.mktemp())
        os.makedirs(directory)
        self.path = os.path.join(directory, "capture.pcap")
        argv = [find_program("dumpcap"), "-i", "lo", "-P", "-w", self.path, "-B", "16",
                "-f", "udp and (portrange %d-%d or port %d)" % (
                    port_min, port_max, self.probe_port)]
        self.peer = Peer("dumpcap", argv, os.path.join(directory, "dumpcap.log"))
        test.addCleanup(self.peer.stop)
        self.tokens = 0
        self.sync()

    def sync(self):
        self.tokens += 1
        token = b"omnirtp capture sync %d %d" % (os.getpid(), self.tokens)
        deadline = time.monotonic() + self.wait
        while time.monotonic() < deadline:
            if not self.peer.running():
                raise self.peer.failed("exited with %s" % (self.peer.process.returncode,))
            self.probe.sendto(token, ("127.0.0.1", self.probe_port))
            self.probe.recvfrom(100)
            try:
                with open(self.path, "rb") as f:
                    if token in f.read():
                        return
            except FileNotFoundError:
                pass
            time.sleep(0.05)  # waiting for another process, not a timed assertion
        raise self.peer.failed("did not write a probe datagram to its file within %.0f s"
                               % (self.wait,))

    def stop(self):
        """Stop dumpcap once everything sent so far is in its file; return
        ``[(src port, dst port, tos, payload)]`` without the probe's rows."""
        self.sync()
        self.peer.signal(signal.SIGINT)
        self.peer.wait(15)
        self.peer.stop()
        return [row for row in read_tos(self.path) if self.probe_port not in row[:2]]


def read_tos(path):
    """``[(src port, dst port, tos, payload bytes)]`` of a capture, by tshark."""
    fields = ["udp.srcport", "udp.dstport", "ip.dsfield", "ipv6.tclass", "udp.payload"]
    argv = [find_program("tshark"), "-r", path, "-T", "fields", "-E", "separator=,"]
    for name in fields:
        argv += ["-e", name]
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, check=True).stdout.decode("ascii")
    rows = []
    for line in out.splitlines():
        src, dst, dsfield, tclass, payload = line.split(",")
        rows.append((int(src), int(dst), int(dsfield or tclass, 16),
                     bytes.fromhex(payload.replace(":", ""))))
    return rows


class TOSOnTheWireTests(SynchronousTestCase):

    def run_calls(self, kind, address, threads=0):
        port_min, port_max = free_port_range(40)
        ng_port = free_port()
        extra = ["--tos=%d" % OPTION_TOS]
        if address == V6:
            if not have_ipv6_loopback():
                raise SkipTest(NO_IPV6)
            extra.append("--interface=%s" % V6)
        if kind == "omnirtp":
            proxy = start_omnirtp(self, ng_port, port_min, port_max,
                                  extra + ["--num-threads=%d" % threads])
        else:
            proxy = start_rtpengine(self, ng_port, port_min, port_max, extra)
        cap = Capture(self, port_min, port_max)
        parties = {c: (Party(self, address), Party(self, address)) for c in ROUNDS[0]}

        def offer(call, keys, **more):
            a, b = parties[call]
            request = {"command": "offer", "call-id": call, "from-tag": "ft",
                       "sdp": a.sdp()}
            request.update(keys, **more)
            reply = proxy.ng.request(request)
            self.assertEqual(reply.get("result"), "ok", reply)
            b.proxy_port = media_port(reply["sdp"])

        expected = {}  # datagram sent -> the TOS it must leave the proxy with
        for number, calls in enumerate(ROUNDS):
            for call, (keys, tos) in sorted(calls.items()):
                if number == 0:
                    offer(call, keys)
                    a, b = parties[call]
                    reply = proxy.ng.request(dict(
                        ANSWER_KEYS, command="answer", sdp=b.sdp(),
                        **{"call-id": call, "from-tag": "ft", "to-tag": "tt"}))
                    self.assertEqual(reply.get("result"), "ok", reply)
                    a.proxy_port = media_port(reply["sdp"])
                else:
                    offer(call, keys, **{"to-tag": "tt"})
            for call, (keys, tos) in sorted(calls.items()):
                a, b = parties[call]
                for sender, receiver, name in ((a, b, "a"), (b, a, "b")):
                    marker = ("%s round %d from %s" % (call, number, name)).encode()
                    sent = sender.send(marker)
                    receiver.expect(*sent)
                    for datagram in sent:
                        expected[datagram] = tos
        going_in, coming_out = {}, {}
        for src, dst, tos, payload in cap.stop():
            if port_min <= src <= port_max:
                coming_out.setdefault(payload, []).append(tos)
            elif port_min <= dst <= port_max:
                going_in.setdefault(payload, []).append(tos)
        self.assertEqual(len(expected), 2 * 2 * 2 * len(ROUNDS))
        self.assertEqual(going_in, {datagram: [0] for datagram in expected})
        self.assertEqual(coming_out, {datagram: [tos] for datagram, tos in expected.items()})

    def test_rtpengineIPv4(self):
        self.run_calls("rtpengine", V4)

    def test_rtpengineIPv6(self):
        self.run_calls("rtpengine", V6)

    def test_omnirtpIPv4(self):
        self.run_calls("omnirtp", V4)

    def test_omnirtpIPv6(self):
        self.run_calls("omnirtp", V6)

    def test_omnirtpWorkersIPv4(self):
        self.run_calls("omnirtp", V4, threads=2)

    def test_omnirtpWorkersIPv6(self):
        self.run_calls("omnirtp", V6, threads=2)
