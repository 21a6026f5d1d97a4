"""``max-bandwidth`` against running daemons, side by side with rtpengine 10.5.

omnirtp (twistd, ``num-threads`` 0 and 2) and Debian's rtpengine 10.5 each
get ``max-bandwidth = 2000`` (bytes per second) and one answered call; RTP
flows through it both ways at about 7 KB/s.  While it flows, a new call is
refused by both with ``result: load limit`` / "Bandwidth limit exceeded"
(and rtpengine's legacy error without ``supports``), the known call's
re-offer goes through, and omnirtp's ``statistics`` reports the byte rate
that refused it; two seconds after the media stopped, new calls are taken
again.  (``max-load`` and ``max-cpu`` are driven the same way, with a
negative CPU limit that refuses every call in both, by
``test_operations``; their samplers by the unit tests, ``test_load``.)
"""

import socket
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.sdp.model import SessionDescription, inspect
from omnirtp.test.integration.peers import (
    LOOPBACK, free_port, free_port_range, start_omnirtp, start_rtpengine)

RTP = b"\x80\x00\x00\x01\x00\x00\x00\xa0\x12\x34\x56\x78" + b"\xd5" * 160
LIMIT = 2000
#: packets per second each way (172 bytes each: about 3.4 KB/s a side)
RATE = 20


def sdp(port):
    return ("v=0\r\no=u 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\n" % port)


def udp(test):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOPBACK, 0))
    s.settimeout(5)
    test.addCleanup(s.close)
    return s


class BandwidthLimitTests(SynchronousTestCase):

    def start(self, which, threads=0):
        ng_port = free_port()
        port_min, port_max = free_port_range(40)
        extra = ["--max-bandwidth=%d" % LIMIT]
        if which == "omnirtp":
            return start_omnirtp(self, ng_port, port_min, port_max,
                                 extra + ["--num-threads=%d" % threads])
        return start_rtpengine(self, ng_port, port_min, port_max, extra)

    def call(self, proxy):
        """One answered call; returns a function that sends one packet each
        way (and reads them)."""
        a, b = udp(self), udp(self)
        self.busy_offer = {"command": "offer", "call-id": "busy", "from-tag": "fa",
                           "sdp": sdp(a.getsockname()[1])}
        offer = proxy.ng.request(self.busy_offer)
        to_b = inspect(SessionDescription.parse(offer["sdp"]))[0].rtp[1]
        answer = proxy.ng.request({"command": "answer", "call-id": "busy", "from-tag": "fa",
                                   "to-tag": "tb", "sdp": sdp(b.getsockname()[1])})
        to_a = inspect(SessionDescription.parse(answer["sdp"]))[0].rtp[1]

        def both_ways():
            a.sendto(RTP, (LOOPBACK, to_a))
            b.sendto(RTP, (LOOPBACK, to_b))
            self.assertEqual(b.recv(2048), RTP)
            self.assertEqual(a.recv(2048), RTP)
        return both_ways

    def flowing(self, send, seconds):
        """Send at RATE packets/s each way for ``seconds`` in a thread;
        returns the thread (joined by the caller)."""
        failures = []

        def run():
            try:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    send()
                    time.sleep(1.0 / RATE)
            except Exception as e:  # reported by the caller
                failures.append(e)
        t = threading.Thread(target=run)
        t.start()
        return t, failures

    def check(self, proxy):
        send = self.call(proxy)
        new = {"command": "offer", "call-id": "new", "from-tag": "fn", "sdp": sdp(40000)}
        # nothing flows yet: taken
        self.assertEqual(proxy.ng.request(new)["result"], "ok", proxy.name)
        thread, failures = self.flowing(send, 4.0)
        try:
            time.sleep(2.5)  # two samples of a full second at least
            self.assertEqual(
                proxy.ng.request(dict(new, **{"call-id": "new2",
                                              "supports": ["load limit"]})),
                {"result": "load limit", "message": "Bandwidth limit exceeded"}, proxy.name)
            self.assertEqual(
                proxy.ng.request(dict(new, **{"call-id": "new3"})),
                {"result": "error", "error-reason": "Parallel session limit reached"},
                proxy.name)
            again = proxy.ng.request(dict(self.busy_offer, **{"to-tag": "tb"}))
            self.assertEqual(again["result"], "ok", proxy.name)
            rate = proxy.ng.request({"command": "statistics"})["statistics"][
                "currentstatistics"]["byterate"]
        finally:
            thread.join()
        self.assertEqual(failures, [])
        self.assertGreaterEqual(rate, LIMIT, proxy.name)
        self.assertLess(rate, 4 * RATE * len(RTP), proxy.name)
        time.sleep(2.5)  # quiet for two full samples
        reply = proxy.ng.request(dict(new, **{"call-id": "new4"}))
        self.assertEqual(reply["result"], "ok", (proxy.name, reply))
        listed = proxy.ng.request({"command": "list"})["calls"]
        self.assertEqual(sorted(listed), ["busy", "new", "new4"], proxy.name)

    def test_rtpengine(self):
        """The reference: Debian's rtpengine 10.5 answers as the test says."""
        self.check(self.start("rtpengine"))

    def test_omnirtp(self):
        self.check(self.start("omnirtp"))

    def test_omnirtpWorkers(self):
        self.check(self.start("omnirtp", threads=2))
