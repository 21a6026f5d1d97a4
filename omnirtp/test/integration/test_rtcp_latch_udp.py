"""A stranger racing a party to its fresh RTCP port, over real UDP.

Debian's rtpengine 10.5 latches the RTCP port to whoever sends first and
then sends the other side's RTCP there: the stranger gets it.  omnirtp's
RTCP port learns only its party's address (the SDP's, or where its RTP
comes from), so the other side's RTCP still goes to the party
(docs/compat.md, "Media").  The same steps run against both daemons; the
rtpengine test pins 10.5's behaviour.
"""

import select
import socket

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from omnirtp.sdp.model import SessionDescription, inspect
from omnirtp.test.integration.peers import (
    free_port, free_port_range, start_omnirtp, start_rtpengine)
from omnirtp.test.integration.test_ng_udp import _have_127_0_0_2

RTCP_RR = bytes([0x80, 201, 0x00, 0x01]) + b"\x00\x00\x00\x01"
RTCP_SR = bytes([0x80, 200, 0x00, 0x06]) + b"\x00" * 24
STRANGER_HOST = "127.0.0.2"


def _sdp(port):
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\n" % port)


class RtcpLatchTests(SynchronousTestCase):

    def socket(self, host, port=0):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind((host, port))
        s.settimeout(5.0)
        return s

    def party(self):
        """``(rtp, rtcp)`` sockets on 127.0.0.1, RTCP on the RTP port + 1."""
        for _ in range(50):
            rtp = self.socket("127.0.0.1")
            port = rtp.getsockname()[1]
            if port % 2 == 0:
                try:
                    return rtp, self.socket("127.0.0.1", port + 1)
                except OSError:
                    pass
        self.fail("no even/odd port pair free on 127.0.0.1")

    def race(self, proxy):
        """Returns who received B's RTCP: "party" or "stranger"."""
        if not _have_127_0_0_2():
            raise SkipTest("127.0.0.2 is not usable on this host")
        a_rtp, a_rtcp = self.party()
        b_rtp, b_rtcp = self.party()
        stranger = self.socket(STRANGER_HOST)
        offer = proxy.ng.request({"command": "offer", "call-id": "latch", "from-tag": "a",
                                  "sdp": _sdp(a_rtp.getsockname()[1])})
        answer = proxy.ng.request({"command": "answer", "call-id": "latch", "from-tag": "a",
                                   "to-tag": "b", "sdp": _sdp(b_rtp.getsockname()[1])})
        to_a = inspect(SessionDescription.parse(answer["sdp"]))[0]  # A sends here
        to_b = inspect(SessionDescription.parse(offer["sdp"]))[0]  # B sends here
        # the stranger is first on A's RTCP port; its packet is relayed to B
        stranger.sendto(RTCP_RR, ("127.0.0.1", to_a.rtcp[1]))
        self.assertEqual(b_rtcp.recvfrom(100), (RTCP_RR, ("127.0.0.1", to_b.rtcp[1])))
        # B's RTCP goes out of A's RTCP port to whatever it latched
        b_rtcp.sendto(RTCP_SR, ("127.0.0.1", to_b.rtcp[1]))
        ready, _, _ = select.select([a_rtcp, stranger], [], [], 10.0)
        self.assertEqual(len(ready), 1, "B's RTCP reached neither A nor the stranger, or both")
        data, source = ready[0].recvfrom(100)
        self.assertEqual((data, source), (RTCP_SR, ("127.0.0.1", to_a.rtcp[1])))
        return "party" if ready[0] is a_rtcp else "stranger"

    def test_rtpengine(self):
        """10.5 reflects B's RTCP to the stranger."""
        port_min, port_max = free_port_range(10)
        proxy = start_rtpengine(self, free_port(), port_min, port_max)
        self.assertEqual(self.race(proxy), "stranger")

    def test_omnirtp(self):
        """omnirtp sends it to A, where A's SDP says."""
        port_min, port_max = free_port_range(10)
        proxy = start_omnirtp(self, free_port(), port_min, port_max)
        self.assertEqual(self.race(proxy), "party")
