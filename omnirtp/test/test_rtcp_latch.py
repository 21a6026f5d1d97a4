"""An RTCP port latches only to its own party (issue 12, hostile media).

rtpengine 10.5 lets whoever sends first to a fresh RTCP port become its
endpoint, and then sends the other side's RTCP there: a stranger gets the
call's RTCP reflected to it.  omnirtp's RTCP socket learns only a source
on the address its party's SDP names, or the address its party's RTP
already comes from (RelaySocket._party); other packets are still relayed
unless strict-source, but never learnt.
"""

import random

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.relay import LEARN_DELAYED, LEARN_HEURISTIC, LEARN_IMMEDIATE, LEARNING_WINDOW
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor

HOST = "127.0.0.1"
A_SDP = ("192.168.1.10", 5000)  # A's SDP (behind NAT)
B_SDP = ("10.0.0.2", 6000)
A_NAT = ("198.51.100.7", 40000)  # where A's RTP really comes from
STRANGER = ("203.0.113.66", 9999)
RTP = b"\x80\x00\x00\x01" + b"\x00" * 8 + b"rtp-payload"
RTCP_RR = bytes([0x80, 201, 0x00, 0x01]) + b"\x00\x00\x00\x01"
RTCP_SR = bytes([0x80, 200, 0x00, 0x06]) + b"\x00" * 24


class RtcpLatchTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(100.0)
        self.net = FakeNetwork()
        self.engine = EmbeddedEngine(self.reactor, {HOST: (30000, 30003)}, bind=self.net.bind,
                                     rng=random.Random(1))

    def wire(self, learning=LEARN_HEURISTIC, strict=False):
        a, b = self.successResultOf(self.engine.allocate("c", HOST, 2))
        self.a, self.b = (HOST, a), (HOST, b)
        self.a_rtcp, self.b_rtcp = (HOST, a + 1), (HOST, b + 1)
        common = {"learning": learning, "strict": strict, "reset": True}
        self.successResultOf(self.engine.configure("c", [
            dict(common, local=self.a, peer=self.b, endpoint=A_SDP),
            dict(common, local=self.a_rtcp, peer=self.b_rtcp, endpoint=(A_SDP[0], A_SDP[1] + 1)),
            dict(common, local=self.b, peer=self.a, endpoint=B_SDP),
            dict(common, local=self.b_rtcp, peer=self.a_rtcp, endpoint=(B_SDP[0], B_SDP[1] + 1)),
        ]))

    def send(self, local, data, src):
        self.net.inject(local, data, src)
        self.net.pump(self.reactor)

    def sent_to(self, dest):
        return [(data, src) for data, src in self.net.sent_to(dest)]

    def test_strangerFirstIsNotLatched(self):
        """A stranger's RTCP reaches A's fresh RTCP port first: relayed to B
        (not strict) but not learnt; B's RTCP then goes to A's SDP RTCP
        address, nothing to the stranger."""
        self.wire()
        self.send(self.a_rtcp, RTCP_RR, STRANGER)
        self.assertEqual(self.sent_to((B_SDP[0], B_SDP[1] + 1)), [(RTCP_RR, self.b_rtcp)])
        self.send(self.b_rtcp, RTCP_SR, (B_SDP[0], B_SDP[1] + 1))
        self.assertEqual(self.sent_to(STRANGER), [])
        self.assertEqual(self.sent_to((A_SDP[0], A_SDP[1] + 1)), [(RTCP_SR, self.a_rtcp)])
        relay = self.engine.socket(self.a_rtcp)
        self.assertEqual((relay.endpoint, relay.confirmed), ((A_SDP[0], A_SDP[1] + 1), False))

    def test_strangerAfterWindowNotLatched(self):
        """Past the learning window a stranger still cannot take the port."""
        self.wire()
        self.reactor.advance(LEARNING_WINDOW + 1)
        self.send(self.a_rtcp, RTCP_RR, STRANGER)
        self.send(self.b_rtcp, RTCP_SR, (B_SDP[0], B_SDP[1] + 1))
        self.assertEqual(self.sent_to(STRANGER), [])

    def test_followsPartyRtpBehindNat(self):
        """A's RTP comes from its NAT address: A's RTCP from that address
        (another port) latches, and B's RTCP goes there."""
        self.wire()
        self.send(self.a, RTP, A_NAT)
        self.send(self.a_rtcp, RTCP_RR, STRANGER)
        a_nat_rtcp = (A_NAT[0], A_NAT[1] + 1)
        self.send(self.a_rtcp, RTCP_RR, a_nat_rtcp)
        self.send(self.b_rtcp, RTCP_SR, (B_SDP[0], B_SDP[1] + 1))
        self.assertEqual(self.sent_to(a_nat_rtcp), [(RTCP_SR, self.a_rtcp)])
        self.assertEqual(self.sent_to(STRANGER), [])
        self.assertEqual(self.engine.socket(self.a_rtcp).endpoint, a_nat_rtcp)

    def test_sdpAddressOtherPortLatches(self):
        """RTCP from A's SDP address on another port (a=rtcp lied) latches."""
        self.wire(learning=LEARN_IMMEDIATE)
        self.send(self.a_rtcp, RTCP_RR, (A_SDP[0], 7001))
        self.send(self.b_rtcp, RTCP_SR, (B_SDP[0], B_SDP[1] + 1))
        self.assertEqual(self.sent_to((A_SDP[0], 7001)), [(RTCP_SR, self.a_rtcp)])

    def test_strictDropsStranger(self):
        """With strict-source the stranger's RTCP is not even relayed."""
        self.wire(learning=LEARN_DELAYED, strict=True)
        self.send(self.a_rtcp, RTCP_RR, STRANGER)
        self.assertEqual(self.sent_to((B_SDP[0], B_SDP[1] + 1)), [])
        relay = self.engine.socket(self.a_rtcp)
        self.assertEqual((relay.packets, relay.errors), (1, 1))

    def test_rtpSocketUnchanged(self):
        """The RTP socket itself still learns any source (NAT), as before."""
        self.wire(learning=LEARN_DELAYED)
        self.send(self.a, RTP, STRANGER)
        self.assertEqual(self.engine.socket(self.a).endpoint, STRANGER)
        self.assertIsNone(self.engine.socket(self.a).rtp_sibling)
        self.assertIs(self.engine.socket(self.a_rtcp).rtp_sibling, self.engine.socket(self.a))
