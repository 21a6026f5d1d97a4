"""The relay keeps each party's latest RTCP report (loss, jitter) where
RTCP arrives: the RTCP socket (``is_rtcp``), RTCP split off an rtcp-mux
port (rtcp_peer), and RTCP through a pipeline once SRTCP is undone; the
engine's stats carry it as ``rtcp``."""

import random

import pylibsrtp
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.media import rtcp
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.relay import RelaySocket
from omnirtp.media.srtp import AES_CM_128_HMAC_SHA1_80, SUITES, SrtpFactory, make_crypto
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor
from omnirtp.test.test_rtcp import RR_ONE, SR_COMPOUND

HOST = "127.0.0.1"
A = ("10.0.0.1", 5000)
B = ("10.0.0.2", 6000)
A_RTCP = (A[0], A[1] + 1)
B_RTCP = (B[0], B[1] + 1)
RTP = bytes([0x80, 0, 0, 1]) + bytes(8) + bytes(160)

#: what stats() shows for RR_ONE (A's report on B's stream)
RR_ONE_STATS = {"type": "RR", "SSRC": 0x11111111, "blocks": [
    {"SSRC": 0x22222222, "fraction lost": 51, "cumulative lost": 10,
     "highest seq": 0x10032, "jitter": 123}]}


class EngineReportTests(SynchronousTestCase):

    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(100.0)
        self.net = FakeNetwork()
        self.engine = EmbeddedEngine(self.reactor, {HOST: (30000, 30009)}, bind=self.net.bind,
                                     rng=random.Random(3), transforms={"srtp": SrtpFactory()})
        self.a, self.b = self.successResultOf(self.engine.allocate("c", HOST, 2))

    def configure(self, a_extra=None, mux=False):
        a, b = self.a, self.b
        base = {"learning": "off", "reset": True}
        a_extra = a_extra or {}
        entries = [dict(base, local=(HOST, a), peer=(HOST, b), endpoint=A, **a_extra),
                   dict(base, local=(HOST, a + 1), peer=(HOST, b + 1), endpoint=A_RTCP,
                        **a_extra),
                   dict(base, local=(HOST, b), peer=(HOST, a), endpoint=B),
                   dict(base, local=(HOST, b + 1), peer=(HOST, a + 1), endpoint=B_RTCP)]
        if mux:  # A multiplexes RTCP on its RTP port, B does not
            entries[0]["rtcp_peer"] = (HOST, b + 1)
            entries[3]["peer"] = (HOST, a)
        self.successResultOf(self.engine.configure("c", entries))

    def deliver(self, local, data, src):
        self.net.inject(local, data, src)
        self.net.pump(self.reactor)

    def stats(self):
        return self.successResultOf(self.engine.stats("c"))["c"]

    def test_rtcp_sockets(self):
        """The engine makes the pair's odd socket an RTCP socket
        (``is_rtcp``), which never takes the poller's inline path; both
        sockets of a pair are of one class (their attribute accesses stay
        specialised to one type)."""
        rtp_sock, rtcp_sock = self.engine.socket((HOST, self.a)), self.engine.socket(
            (HOST, self.a + 1))
        self.assertIs(type(rtp_sock), RelaySocket)
        self.assertIs(type(rtcp_sock), RelaySocket)
        self.assertEqual((rtp_sock.is_rtcp, rtcp_sock.is_rtcp), (False, True))
        self.configure()
        self.assertEqual(rtcp_sock._out, -1)
        # confirmed, its peer with a companion: an RTP socket would go
        # inline there, the RTCP socket does not
        for relay in (rtp_sock, rtcp_sock):
            relay.confirmed = True
            relay.peer._cfd = 1000 + relay.peer.local[1]
            relay._update_out()
        self.assertEqual((rtp_sock._out, rtcp_sock._out), (1000 + self.b, -1))
        for relay in (rtp_sock, rtcp_sock):
            relay.peer._cfd = -1

    def test_plain_report_on_the_rtcp_port(self):
        self.configure()
        self.deliver((HOST, self.a), RTP, A)
        self.deliver((HOST, self.a + 1), RR_ONE, A_RTCP)
        self.deliver((HOST, self.b + 1), SR_COMPOUND, B_RTCP)
        # forwarded unchanged
        self.assertEqual(self.net.sent_to(B_RTCP), [(RR_ONE, (HOST, self.b + 1))])
        self.assertEqual(self.net.sent_to(A_RTCP), [(SR_COMPOUND, (HOST, self.a + 1))])
        stats = self.stats()
        self.assertEqual(stats[(HOST, self.a + 1)]["rtcp"], RR_ONE_STATS)
        self.assertEqual(stats[(HOST, self.b + 1)]["rtcp"], {
            "type": "SR", "SSRC": 0x22222222, "blocks": [
                {"SSRC": 0x11111111, "fraction lost": 0, "cumulative lost": 0,
                 "highest seq": 50, "jitter": 7}]})
        # RTP sockets have seen no RTCP: no key at all
        self.assertNotIn("rtcp", stats[(HOST, self.a)])
        self.assertNotIn("rtcp", stats[(HOST, self.b)])

    def test_latest_report_with_blocks_wins(self):
        self.configure()
        self.deliver((HOST, self.a + 1), RR_ONE, A_RTCP)
        later = bytearray(RR_ONE)
        later[12] = 0  # nothing lost this time
        self.deliver((HOST, self.a + 1), bytes(later), A_RTCP)
        report = self.stats()[(HOST, self.a + 1)]["rtcp"]
        self.assertEqual(report["blocks"][0]["fraction lost"], 0)
        # an RR without blocks and a malformed one (read by the next stats,
        # as the once-a-second sweep does) are forwarded; the report stays
        self.deliver((HOST, self.a + 1), bytes.fromhex("80c90001" "11111111"), A_RTCP)
        self.deliver((HOST, self.a + 1), RR_ONE[:-4], A_RTCP)
        self.assertEqual(len(self.net.sent_to(B_RTCP)), 4)
        self.assertEqual(self.stats()[(HOST, self.a + 1)]["rtcp"], report)
        self.assertEqual(report["blocks"][0]["cumulative lost"], 10)

    def test_sweep_parses_the_kept_report(self):
        """The timeout sweep's last_packets parses a socket's kept RTCP as
        stats() did in its place: a malformed datagram after it leaves
        the report it read."""
        self.configure()
        self.deliver((HOST, self.a + 1), RR_ONE, A_RTCP)
        self.successResultOf(self.engine.last_packets())
        self.deliver((HOST, self.a + 1), RR_ONE[:-4], A_RTCP)
        self.assertEqual(self.stats()[(HOST, self.a + 1)]["rtcp"], RR_ONE_STATS)

    def test_rtcp_split_off_a_mux_port(self):
        """A multiplexes, B does not: A's RTCP arrives on A's RTP socket and
        leaves B's RTCP socket; the report is kept on A's RTP socket."""
        self.configure(mux=True)
        self.deliver((HOST, self.a), RR_ONE, A)
        self.assertEqual(self.net.sent_to(B_RTCP), [(RR_ONE, (HOST, self.b + 1))])
        self.assertEqual(self.stats()[(HOST, self.a)]["rtcp"], RR_ONE_STATS)

    def test_srtcp_observed_once_unprotected(self):
        suite = AES_CM_128_HMAC_SHA1_80
        master = bytes(range(SUITES[suite].master_length))
        self.configure({"srtp_in": make_crypto(suite, master)})
        sender = pylibsrtp.Session(pylibsrtp.Policy(
            master, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=SUITES[suite].profile))
        self.deliver((HOST, self.a + 1), sender.protect_rtcp(RR_ONE), A_RTCP)
        self.assertEqual(self.net.sent_to(B_RTCP), [(RR_ONE, (HOST, self.b + 1))])
        self.assertEqual(self.stats()[(HOST, self.a + 1)]["rtcp"], RR_ONE_STATS)
        # a forged SRTCP packet fails authentication: dropped, nothing kept
        self.engine.socket((HOST, self.a + 1)).rtcp_report = None
        self.engine.socket((HOST, self.a + 1)).rtcp_last = None
        forged = bytearray(sender.protect_rtcp(RR_ONE))
        forged[12] ^= 0xFF
        self.deliver((HOST, self.a + 1), bytes(forged), A_RTCP)
        self.assertNotIn("rtcp", self.stats()[(HOST, self.a + 1)])


class ObserveTests(SynchronousTestCase):
    """RelaySocket.observe_rtcp and latest_report by themselves."""

    def setUp(self):
        reactor = MemoryUDPReactor()
        self.relay = RelaySocket(reactor, FakeNetwork().bind(HOST, 30000), (HOST, 30000))

    def test_kept_then_parsed_once(self):
        self.relay.observe_rtcp(SR_COMPOUND)
        self.assertIs(self.relay.rtcp_last, SR_COMPOUND)  # nothing parsed yet
        self.assertEqual(self.relay.latest_report(), rtcp.reports(SR_COMPOUND)[0])
        self.assertIsNone(self.relay.rtcp_last)
        self.assertEqual(self.relay.latest_report(), rtcp.reports(SR_COMPOUND)[0])

    def test_only_reports_with_blocks_are_kept(self):
        self.relay.observe_rtcp(RR_ONE)
        # an empty RR, a feedback packet, junk: not kept at all
        for other in (bytes.fromhex("80c90001" "33333333"),
                      bytes.fromhex("81ce0002" "11111111" "22222222"), b"", b"\x81", RTP):
            self.relay.observe_rtcp(other)
        self.assertIs(self.relay.rtcp_last, RR_ONE)
        self.assertEqual(self.relay.latest_report(), rtcp.reports(RR_ONE)[0])

    def test_malformed_keeps_the_previous_report(self):
        self.relay.observe_rtcp(RR_ONE)
        self.relay.latest_report()
        self.relay.observe_rtcp(RR_ONE[:30])  # opens like an RR, is cut short
        self.assertEqual(self.relay.latest_report(), rtcp.reports(RR_ONE)[0])
