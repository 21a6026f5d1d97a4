"""The live web page in headless Chromium during a live call.

omnirtp (twistd, this checkout) serves ``/`` on its HTTP listener; a call
is set up over ng and RTP flows both ways through it.  Chromium (Debian's
``chromium``, headless) loads the page and is driven over the DevTools
protocol on a pipe (``--remote-debugging-pipe``: no extra library, no
port).  Checked in the DOM, without reloading the page: the call and its
parties appear with protocol, codecs, crypto and endpoints; the packet
counters show exactly what was sent; more packets sent later appear by
themselves (server-sent events); a new call appears and a deleted one
goes.  Each party also sends RTCP receiver reports (RFC 3550 RR packets
built here) about the other's stream: each RTP row shows the loss and
jitter its receiver reported, and a later report changes them.  A screenshot (phone-sized window) is kept with the test output:
``_trial_temp/.../live-page.png``.
"""

import base64
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import time
import urllib.request

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from omnirtp.sdp.model import SessionDescription, inspect
from omnirtp.test.integration.peers import (
    LOOPBACK, free_port, free_port_range, start_omnirtp)

RTP = b"\x80\x00\x00\x01\x00\x00\x00\xa0\x12\x34\x56\x78" + b"\xd5" * 160


def receiver_report(ssrc, source, fraction, cumulative, highest, jitter):
    """An RTCP RR from ``ssrc`` with one report block about ``source``."""
    return (struct.pack("!BBHI", 0x81, 201, 7, ssrc)
            + struct.pack("!II", source, (fraction << 24) | cumulative)
            + struct.pack("!IIII", highest, jitter, 0, 0))


def sdp(port):
    return ("v=0\r\no=u 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0 8\r\n" % port)


class BrowserFailed(Exception):
    pass


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe
    (Chromium reads commands on fd 3 and writes replies on fd 4, each a
    JSON text ended by NUL)."""

    def __init__(self, test, binary):
        self.profile = os.path.abspath(test.mktemp())
        os.makedirs(self.profile)
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        argv = [binary, "--headless=new", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--remote-debugging-pipe",
                "--user-data-dir=" + self.profile, "--window-size=412,900", "about:blank"]
        # bash moves our pipe ends to fds 3 and 4, then runs chromium (bash:
        # dash takes one-digit fd numbers only, and ours may be 10 or more)
        script = 'exec "$0" "$@" 3<&%d 4>&%d %d<&- %d>&-' % (
            to_chrome_r, from_chrome_w, to_chrome_r, from_chrome_w)
        self.log_path = os.path.join(self.profile, "chromium.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["/bin/bash", "-c", script] + argv, pass_fds=(to_chrome_r, from_chrome_w),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buffer = b""
        self.serial = 0
        self.session = None
        test.addCleanup(self.close)

    def close(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for fd in (self.to_chrome, self.from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass

    def log_tail(self):
        with open(self.log_path, "rb") as f:
            return f.read()[-2000:].decode("utf-8", "replace")

    def send(self, method, params=None, session=True, timeout=30.0):
        """One command; returns its ``result`` (events are skipped)."""
        self.serial += 1
        message = {"id": self.serial, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        try:
            os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserFailed("chromium is gone (%s):\n%s" % (
                self.process.poll(), self.log_tail()))
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.serial:
                    if "error" in reply:
                        raise BrowserFailed("%s: %s" % (method, reply["error"]))
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserFailed("no reply to %s; chromium log:\n%s" % (
                    method, self.log_tail()))
            ready, _, _ = select.select([self.from_chrome], [], [], left)
            if ready:
                data = os.read(self.from_chrome, 1 << 16)
                if not data:
                    raise BrowserFailed("chromium closed the pipe:\n" + self.log_tail())
                self.buffer += data

    def open(self, url):
        targets = self.send("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": page["targetId"], "flatten": True},
                                 session=False)["sessionId"]
        self.send("Page.enable")
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", {"expression": expression,
                                                "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserFailed("%s: %s" % (expression, result["exceptionDetails"]))
        return result["result"].get("value")

    def wait_for(self, expression, wait=20.0):
        """Evaluate until the value is truthy; return it."""
        deadline = time.monotonic() + wait
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserFailed("still false after %.0f s: %s\nDOM: %s" % (
                    wait, expression, self.evaluate("document.body.outerHTML")[:3000]))
            time.sleep(0.2)

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))


#: the page's rows as JS: [call-id, party tag, kind, local, remote, packets, bytes]
ROWS = """JSON.stringify(Array.from(document.querySelectorAll("section.call tr.stream")).map(r => [
  r.closest("section").dataset.callId,
  r.closest(".party").querySelector("strong").textContent,
  r.dataset.kind, r.querySelector(".local").textContent,
  r.querySelector(".endpoint").textContent,
  Number(r.querySelector(".packets").textContent),
  Number(r.querySelector(".bytes").textContent)]))"""

#: the page's loss and jitter cells as JS: [party tag, kind, loss, jitter]
QUALITY = """JSON.stringify(Array.from(document.querySelectorAll("section.call tr.stream")).map(r => [
  r.closest(".party").querySelector("strong").textContent, r.dataset.kind,
  r.querySelector(".loss").textContent, r.querySelector(".jitter").textContent]))"""

#: each medium's labels as JS: [call-id, party, type, protocol, codecs, crypto]
MEDIAS = """JSON.stringify(Array.from(document.querySelectorAll("section.call .media")).map(m => [
  m.closest("section").dataset.callId,
  m.closest(".party").querySelector("strong").textContent,
  m.querySelector(".type").textContent, m.querySelector(".protocol").textContent,
  m.querySelector(".codecs").textContent, m.querySelector(".crypto").textContent]))"""


class CallMixin:
    """A call between two local socket pairs through the daemon (``self.daemon``),
    RTP and RTCP sent and received."""

    def udp(self, port=0):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((LOOPBACK, port))
        s.settimeout(5)
        self.addCleanup(s.close)
        return s

    def pair(self):
        """A party's RTP socket and its RTCP socket on the next port."""
        for _ in range(50):
            rtp = self.udp()
            try:
                return rtp, self.udp(rtp.getsockname()[1] + 1)
            except OSError:
                continue
        self.fail("no free port pair on %s" % LOOPBACK)

    def call(self, call_id):
        """A call whose parties are two local socket pairs; returns
        (a, b, port to reach a, port to reach b); ``self.rtcp`` maps a and
        b to their RTCP sockets."""
        (a, a_rtcp), (b, b_rtcp) = self.pair(), self.pair()
        self.rtcp = {a: a_rtcp, b: b_rtcp}
        ng = self.daemon.ng
        offer = ng.request({"command": "offer", "call-id": call_id, "from-tag": "alice",
                            "sdp": sdp(a.getsockname()[1])})
        to_b = inspect(SessionDescription.parse(offer["sdp"]))[0].rtp[1]
        answer = ng.request({"command": "answer", "call-id": call_id, "from-tag": "alice",
                             "to-tag": "bob", "sdp": sdp(b.getsockname()[1])})
        to_a = inspect(SessionDescription.parse(answer["sdp"]))[0].rtp[1]
        return a, b, to_a, to_b

    def send(self, sender, port, receiver, count):
        for _ in range(count):
            sender.sendto(RTP, (LOOPBACK, port))
            self.assertEqual(receiver.recv(2048), RTP)

    def report(self, sender, port, receiver, rr):
        """``sender``'s RTCP socket sends ``rr`` to omnirtp's RTCP port
        ``port + 1``; it reaches ``receiver``'s RTCP socket unchanged."""
        self.rtcp[sender].sendto(rr, (LOOPBACK, port + 1))
        self.assertEqual(self.rtcp[receiver].recv(2048), rr)


class LivePageTests(CallMixin, SynchronousTestCase):

    def setUp(self):
        binary = shutil.which("chromium")
        if binary is None:
            raise SkipTest("chromium is not installed (Debian package chromium)")
        ng = free_port(socket.SOCK_DGRAM, LOOPBACK)
        self.http = free_port(socket.SOCK_STREAM, LOOPBACK)
        low, high = free_port_range(20)
        self.daemon = start_omnirtp(self, ng, low, high, extra_args=[
            "--listen-http=%s:%d" % (LOOPBACK, self.http)])
        self.browser = Chromium(self, binary)

    def rows(self):
        return json.loads(self.browser.evaluate(ROWS))

    def test_liveCall(self):
        a, b, to_a, to_b = self.call("live-1")
        self.send(a, to_a, b, 5)   # alice -> omnirtp -> bob
        self.send(b, to_b, a, 3)   # bob -> omnirtp -> alice
        # bob reports on alice's stream (SSRC 0x12345678): 64/256 lost
        # since his last report, 3 in all, jitter 80 (10 ms at 8000 Hz);
        # alice on bob's: nothing lost, jitter 16 (2 ms)
        self.report(b, to_b, a, receiver_report(0xB0B, 0x12345678, 64, 3, 5, 80))
        self.report(a, to_a, b, receiver_report(0xA1A, 0x12345678, 0, 0, 3, 16))
        self.browser.open("http://%s:%d/" % (LOOPBACK, self.http))
        self.browser.wait_for('document.querySelector("section.call") !== null')
        rows = self.rows()
        # alice's RTP socket received her 5 packets, bob's his 3, and each
        # RTCP socket one report of 32 bytes
        self.assertEqual(
            [(r[0], r[1], r[2], r[4], r[5], r[6]) for r in rows],
            [("live-1", "alice", "RTP", "127.0.0.1:%d" % a.getsockname()[1], 5, 5 * len(RTP)),
             ("live-1", "alice", "RTCP", "127.0.0.1:%d" % (a.getsockname()[1] + 1), 1, 32),
             ("live-1", "bob", "RTP", "127.0.0.1:%d" % b.getsockname()[1], 3, 3 * len(RTP)),
             ("live-1", "bob", "RTCP", "127.0.0.1:%d" % (b.getsockname()[1] + 1), 1, 32)])
        self.assertEqual([r[3] for r in rows if r[2] == "RTP"],
                         ["127.0.0.1:%d" % to_a, "127.0.0.1:%d" % to_b])
        # each party's own codecs, the answerer's too, in SDP order
        self.assertEqual(json.loads(self.browser.evaluate(MEDIAS)), [
            ["live-1", "alice", "audio #1", "RTP/AVP", "PCMU/8000 PCMA/8000", "none"],
            ["live-1", "bob", "audio #1", "RTP/AVP", "PCMU/8000 PCMA/8000", "none"]])
        # loss and jitter of each RTP stream, as its receiver reported them
        self.assertEqual(json.loads(self.browser.evaluate(QUALITY)), [
            ["alice", "RTP", "25.0% (3)", "10.0 ms"], ["alice", "RTCP", "-", "-"],
            ["bob", "RTP", "0.0% (0)", "2.0 ms"], ["bob", "RTCP", "-", "-"]])
        # a later report changes them on the same page
        self.report(b, to_b, a, receiver_report(0xB0B, 0x12345678, 0, 3, 12, 40))
        self.browser.wait_for('document.querySelector("tr.stream .jitter").textContent'
                              ' === "5.0 ms"')
        self.assertEqual(json.loads(self.browser.evaluate(QUALITY))[0],
                         ["alice", "RTP", "0.0% (3)", "5.0 ms"])
        updates = int(self.browser.evaluate("document.body.dataset.updates"))

        # more media: the same page shows it, without a reload
        self.send(a, to_a, b, 7)
        self.browser.wait_for(
            'Number(document.querySelector("tr.stream .packets").textContent) === 12')
        self.assertEqual([(r[2], r[5]) for r in self.rows()],
                         [("RTP", 12), ("RTCP", 1), ("RTP", 3), ("RTCP", 2)])
        self.assertGreater(int(self.browser.evaluate("document.body.dataset.updates")),
                           updates)
        self.assertEqual(self.browser.evaluate('document.getElementById("status").textContent'),
                         "live")
        self.browser.evaluate("window.scrollTo(0, 0)")
        shot = os.path.abspath("live-page.png")
        self.browser.screenshot(shot)
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

        # a second call appears, the first one goes when it is deleted
        self.call("live-2")
        self.browser.wait_for('document.querySelectorAll("section.call").length === 2')
        self.assertEqual(self.browser.evaluate('document.getElementById("count").textContent'),
                         "2 calls")
        reply = self.daemon.ng.request({"command": "delete", "call-id": "live-1",
                                        "from-tag": "alice", "delete-delay": 0})
        self.assertEqual(reply["result"], "ok")
        self.browser.wait_for('document.querySelectorAll("section.call").length === 1')
        self.assertEqual(
            self.browser.evaluate('document.querySelector("section.call").dataset.callId'),
            "live-2")


class WorkerReportTests(CallMixin, SynchronousTestCase):
    """With a media worker (``num-threads = 1``) the reports travel from
    the worker's sockets over AMP: ``/sessions/<call-id>`` carries each
    ``RTCP report`` where it arrived and ``/live`` the loss and jitter.
    No browser here (the page itself is tested above)."""

    def setUp(self):
        ng = free_port(socket.SOCK_DGRAM, LOOPBACK)
        self.http = free_port(socket.SOCK_STREAM, LOOPBACK)
        low, high = free_port_range(20)
        self.daemon = start_omnirtp(self, ng, low, high, extra_args=[
            "--listen-http=%s:%d" % (LOOPBACK, self.http), "--num-threads=1"])

    def get(self, path):
        with urllib.request.urlopen("http://%s:%d%s" % (LOOPBACK, self.http, path),
                                    timeout=10) as reply:
            return reply.read()

    def test_reportsThroughAWorker(self):
        a, b, to_a, to_b = self.call("worker-1")
        self.send(a, to_a, b, 5)
        # bob's report on alice's stream, as an SR with one block
        sr = (struct.pack("!BBHIQIII", 0x81, 200, 12, 0xB0B, 0x83AA7E8000000000, 160, 3, 516)
              + struct.pack("!II", 0x12345678, (26 << 24) | 2)
              + struct.pack("!IIII", 5, 480, 0, 0))
        self.report(b, to_b, a, sr)
        tree = json.loads(self.get("/sessions/worker-1"))
        reports = [(tag, s["flags"][0], s.get("RTCP report"))
                   for tag, entry in tree["tags"].items()
                   for s in entry["medias"][0]["streams"]]
        self.assertEqual(reports, [
            ("alice", "RTP", None), ("alice", "RTCP", None), ("bob", "RTP", None),
            ("bob", "RTCP", {"type": "SR", "SSRC": 0xB0B, "blocks": [
                {"SSRC": 0x12345678, "fraction lost": 26, "cumulative lost": 2,
                 "highest seq": 5, "jitter": 480}]})])
        with urllib.request.urlopen("http://%s:%d/live" % (LOOPBACK, self.http),
                                    timeout=10) as stream:
            data = b""
            while b"\n\n" not in data.partition(b"data: ")[2]:
                data += stream.read1(65536)
        view = json.loads(data.partition(b"data: ")[2].partition(b"\n\n")[0])
        self.assertEqual(
            [[(s["kind"], s["loss"], s["lost"], s["jitter"]) for s in p["medias"][0]["streams"]]
             for p in view["calls"][0]["parties"]],
            [[("RTP", 10.2, 2, 60.0), ("RTCP", None, None, None)],
             [("RTP", None, None, None), ("RTCP", None, None, None)]])
