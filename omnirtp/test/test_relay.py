"""Tests for omnirtp.media.relay: packet checks, forwarding, source policy."""

import errno

from twisted.internet.interfaces import IReadDescriptor
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from omnirtp.media.relay import (
    LEARN_DELAYED,
    LEARN_HEURISTIC,
    LEARN_IMMEDIATE,
    LEARN_OFF,
    LEARNING_WINDOW,
    READ_BATCH,
    RelaySocket,
)
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor

HOST = "127.0.0.1"
A_SDP = ("10.0.0.1", 5000)  # party A as its SDP says
B_SDP = ("10.0.0.2", 6000)  # party B as its SDP says
A_SOCK = (HOST, 30000)  # our socket facing A (advertised to A)
B_SOCK = (HOST, 30002)  # our socket facing B


def rtp(seq=1, payload=b"\x00" * 160):
    """A minimal RTP packet: V=2, PT 0."""
    return bytes([0x80, 0x00, seq >> 8 & 0xFF, seq & 0xFF]) + b"\x00" * 8 + payload


RTCP_RR = bytes([0x80, 201, 0x00, 0x01]) + b"\x00\x00\x00\x01"  # 8 bytes


class RelayTestBase(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(1000.0)
        self.net = FakeNetwork()
        self.a = RelaySocket(self.reactor, self.net.bind(*A_SOCK), A_SOCK)
        self.b = RelaySocket(self.reactor, self.net.bind(*B_SOCK), B_SOCK)
        self.a.start()
        self.b.start()

    def wire(self, learning=LEARN_DELAYED, **flags):
        """A's socket forwards to B and back, both reset now."""
        self.a.configure(peer=self.b, endpoint=A_SDP, learning=learning, reset=True, **flags)
        self.b.configure(peer=self.a, endpoint=B_SDP, learning=learning, reset=True, **flags)

    def from_a(self, data, src=A_SDP):
        self.net.inject(A_SOCK, data, src)
        self.net.pump(self.reactor)

    def from_b(self, data, src=B_SDP):
        self.net.inject(B_SOCK, data, src)
        self.net.pump(self.reactor)

    def to_b(self):
        return self.net.sent_to(self.b.endpoint)

    def delivered(self, dest):
        return [(data, src) for data, src in self.net.sent_to(dest)]


class ReadDescriptorTests(RelayTestBase):
    def test_interface(self):
        """RelaySocket provides IReadDescriptor and is registered as a reader."""
        verifyObject(IReadDescriptor, self.a)
        self.assertIn(self.a, self.reactor.getReaders())
        self.assertEqual(self.a.logPrefix(), "RelaySocket")
        self.assertEqual(self.a.fileno(), self.net.bound[A_SOCK].fileno())

    def test_close(self):
        """close() unregisters the reader, closes the socket and forgets the peer."""
        self.wire()
        self.a.close()
        self.assertNotIn(self.a, self.reactor.getReaders())
        self.assertNotIn(A_SOCK, self.net.bound)
        self.assertEqual(self.a.fileno(), -1)
        self.assertIsNone(self.a.peer)
        self.a.close()  # twice is harmless

    def test_connection_lost(self):
        """connectionLost (reactor shutdown) closes the socket."""
        self.a.connectionLost(None)
        self.assertEqual(self.a.fileno(), -1)
        self.assertNotIn(A_SOCK, self.net.bound)

    def test_single_read_then_batch(self):
        """A wakeup reads one datagram; after a backlog it reads up to READ_BATCH."""
        self.wire()
        for i in range(READ_BATCH + 3):
            self.net.inject(A_SOCK, rtp(i), A_SDP)
        self.a.doRead()
        self.assertEqual(self.a.packets, 1)
        self.a.doRead()
        self.assertEqual(self.a.packets, 1 + READ_BATCH)
        self.a.doRead()  # empties the queue: back to one read per wakeup
        self.assertEqual(self.a.packets, READ_BATCH + 3)
        self.net.inject(A_SOCK, rtp(), A_SDP)
        self.net.inject(A_SOCK, rtp(), A_SDP)
        self.a.doRead()
        self.assertEqual(self.a.packets, READ_BATCH + 4)

    def test_failing_reads_bounded(self):
        """With one datagram per wakeup, at most every other wakeup tries a second read."""
        self.wire()
        calls = []
        sock = self.net.bound[A_SOCK]
        real = sock.recvfrom

        def counting(size):
            calls.append(size)
            return real(size)

        # RelaySocket keeps the bound method: swap it before the socket is wrapped
        relay = RelaySocket(self.reactor, _Wrapped(sock, counting), (HOST, 30000))
        relay.configure(peer=self.b, endpoint=A_SDP, reset=True)
        for i in range(3):
            self.net.inject(A_SOCK, rtp(i), A_SDP)
            relay.doRead()
        self.assertEqual(relay.packets, 3)
        # 1st wakeup: one read; 2nd: batch mode, finds the queue empty after one
        # (a failing read); 3rd: back to a single read
        self.assertEqual(len(calls), 4)


class _Wrapped:
    """A socket whose recvfrom is replaced (to count calls)."""

    def __init__(self, sock, recvfrom):
        self._sock = sock
        self.recvfrom = recvfrom

    def __getattr__(self, name):
        return getattr(self._sock, name)


class ForwardTests(RelayTestBase):
    def test_both_ways(self):
        """RTP from A leaves B's socket towards B, and the other way round."""
        self.wire()
        self.from_a(rtp(1))
        self.from_b(rtp(2))
        self.assertEqual(self.delivered(B_SDP), [(rtp(1), B_SOCK)])
        self.assertEqual(self.delivered(A_SDP), [(rtp(2), A_SOCK)])
        self.assertEqual((self.a.packets, self.a.bytes, self.a.errors), (1, 172, 0))
        self.assertEqual((self.b.packets, self.b.bytes, self.b.errors), (1, 172, 0))

    def test_rtcp_forwarded(self):
        """An 8-byte RTCP receiver report is relayed."""
        self.wire()
        self.from_a(RTCP_RR)
        self.assertEqual(self.delivered(B_SDP), [(RTCP_RR, B_SOCK)])

    def test_rtcp_peer_demultiplexes(self):
        """With rtcp_peer set (rtcp-mux on this side only), RTCP received on
        the RTP socket leaves the other side's RTCP socket; RTP is unchanged."""
        b_rtcp_sock = (HOST, 30003)
        b_rtcp_sdp = (B_SDP[0], B_SDP[1] + 1)
        b_rtcp = RelaySocket(self.reactor, self.net.bind(*b_rtcp_sock), b_rtcp_sock)
        b_rtcp.start()
        self.wire()
        b_rtcp.configure(peer=self.a, endpoint=b_rtcp_sdp, reset=True)
        self.a.configure(peer=self.b, rtcp_peer=b_rtcp, endpoint=A_SDP, reset=True)
        self.from_a(rtp(1))
        self.from_a(RTCP_RR)
        self.assertEqual(self.delivered(B_SDP), [(rtp(1), B_SOCK)])
        self.assertEqual(self.delivered(b_rtcp_sdp), [(RTCP_RR, b_rtcp_sock)])
        self.assertEqual((self.a.packets, self.a.errors), (2, 0))

    def test_last_packet_stamped(self):
        """last_packet is the clock time of the latest ingress packet."""
        self.wire()
        self.reactor.advance(7.5)
        self.from_a(rtp())
        self.assertEqual(self.a.last_packet, 1007.5)

    def test_no_peer_endpoint_dropped(self):
        """Until the peer socket has an endpoint, packets are dropped and counted."""
        self.a.configure(peer=self.b, endpoint=A_SDP, reset=True)
        self.b.configure(peer=self.a, endpoint=None, reset=True)
        self.from_a(rtp())
        self.assertEqual(self.net.sent, [])
        self.assertEqual((self.a.packets, self.a.errors), (1, 1))

    def test_no_peer_dropped(self):
        """A socket without a peer drops what it receives."""
        self.a.configure(peer=None, endpoint=A_SDP, reset=True)
        self.from_a(rtp())
        self.assertEqual(self.net.sent, [])
        self.assertEqual(self.a.errors, 1)

    def test_send_error_counted(self):
        """EAGAIN on send is counted as an error, never raised."""
        self.wire()
        self.net.bound[B_SOCK].send_error = errno.EAGAIN
        self.from_a(rtp())
        self.assertEqual((self.a.packets, self.a.errors), (1, 1))
        self.assertEqual(self.delivered(B_SDP), [])

    def test_junk(self):
        """Garbage, truncated, STUN and DTLS datagrams are dropped as junk."""
        self.wire()
        stun = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"\x00" * 12
        dtls = b"\x16\xfe\xfd" + b"\x00" * 20
        for junk in (b"", b"\x80", b"hello world!", stun, dtls, rtp()[:11], bytes([0x80, 0, 0, 0, 0, 0, 0, 0])):
            self.from_a(junk)
        self.from_a(rtp())
        self.assertEqual(self.delivered(B_SDP), [(rtp(), B_SOCK)])
        self.assertEqual((self.a.junk, self.a.errors, self.a.packets), (7, 7, 1))

    def test_other_hook(self):
        """With an ``other`` handler, non-RTP datagrams go there instead of junk."""
        seen = []
        self.wire()
        self.a.other = lambda relay, data, src: seen.append((relay, data, src))
        self.from_a(b"\x00\x01\x00\x00")
        self.assertEqual(seen, [(self.a, b"\x00\x01\x00\x00", A_SDP)])
        self.assertEqual(self.a.junk, 0)

    def test_bad_learning_mode(self):
        e = self.assertRaises(ValueError, self.a.configure, learning="sometimes")
        self.assertEqual(str(e), "learning mode 'sometimes' is not one of delayed, heuristic, immediate, off")


class DelayedLearningTests(RelayTestBase):
    NAT = ("192.0.2.9", 41000)
    OTHER = ("192.0.2.77", 42000)

    def test_follows_source_in_window(self):
        """During the window the endpoint follows the latest source (NAT)."""
        self.wire()
        self.from_a(rtp(), src=self.NAT)
        self.assertEqual(self.a.endpoint, self.NAT)
        self.assertFalse(self.a.confirmed)
        self.from_b(rtp(9))
        self.assertEqual(self.delivered(self.NAT), [(rtp(9), A_SOCK)])
        self.from_a(rtp(), src=self.OTHER)
        self.assertEqual(self.a.endpoint, self.OTHER)

    def test_confirms_after_window(self):
        """The first packet after the window confirms its source; others then do not move it."""
        self.wire()
        self.from_a(rtp(), src=self.NAT)
        self.reactor.advance(LEARNING_WINDOW)
        self.from_a(rtp(), src=self.NAT)
        self.assertTrue(self.a.confirmed)
        self.from_a(rtp(5), src=self.OTHER)
        self.assertEqual(self.a.endpoint, self.NAT)
        # still relayed, not an error
        self.assertEqual(self.a.errors, 0)
        self.assertIn((rtp(5), B_SOCK), self.delivered(B_SDP))

    def test_reset_restarts_learning(self):
        """A reset (signalling) goes back to the SDP endpoint with a new window."""
        self.wire()
        self.reactor.advance(LEARNING_WINDOW + 1)
        self.from_a(rtp(), src=self.NAT)
        self.assertTrue(self.a.confirmed)
        self.reactor.advance(10)
        self.a.configure(peer=self.b, endpoint=A_SDP, reset=True)
        self.assertEqual((self.a.endpoint, self.a.confirmed), (A_SDP, False))
        self.assertEqual(self.a.last_packet, self.reactor.seconds())
        self.from_a(rtp(), src=self.OTHER)
        self.assertEqual((self.a.endpoint, self.a.confirmed), (self.OTHER, False))

    def test_configure_without_reset_keeps_learned(self):
        """Re-configuring with the same SDP endpoint and no reset keeps what was learned."""
        self.wire()
        self.reactor.advance(LEARNING_WINDOW)
        self.from_a(rtp(), src=self.NAT)
        self.a.configure(peer=self.b, endpoint=A_SDP)
        self.assertEqual((self.a.endpoint, self.a.confirmed), (self.NAT, True))

    def test_strict_drops_others(self):
        """strict: after confirmation other sources are dropped and counted."""
        self.wire(strict=True)
        self.reactor.advance(LEARNING_WINDOW)
        self.from_a(rtp(1))
        self.from_a(rtp(2), src=self.OTHER)
        self.assertEqual(self.delivered(B_SDP), [(rtp(1), B_SOCK)])
        self.assertEqual((self.a.packets, self.a.errors, self.a.endpoint), (2, 1, A_SDP))

    def test_handover_relearns(self):
        """handover: a new source after confirmation becomes the endpoint."""
        self.wire(handover=True)
        self.reactor.advance(LEARNING_WINDOW)
        self.from_a(rtp(1))
        self.from_a(rtp(2), src=self.OTHER)
        self.assertEqual(self.a.endpoint, self.OTHER)
        self.from_b(rtp(3))
        self.assertEqual(self.delivered(self.OTHER), [(rtp(3), A_SOCK)])


class OtherModesTests(RelayTestBase):
    NAT = ("192.0.2.9", 41000)
    OTHER = ("192.0.2.77", 42000)

    def test_immediate(self):
        """immediate: the first packet's source is confirmed at once."""
        self.wire(learning=LEARN_IMMEDIATE)
        self.from_a(rtp(), src=self.NAT)
        self.from_a(rtp(), src=self.OTHER)
        self.assertEqual((self.a.endpoint, self.a.confirmed), (self.NAT, True))

    def test_off(self):
        """off: the endpoint stays the SDP address whatever the source."""
        self.wire(learning=LEARN_OFF)
        self.from_a(rtp(), src=self.NAT)
        self.assertEqual(self.a.endpoint, A_SDP)
        self.from_b(rtp(4))
        self.assertEqual(self.delivered(A_SDP), [(rtp(4), A_SOCK)])
        self.assertEqual(self.a.errors, 0)

    def test_off_strict(self):
        """off + strict: only the SDP source is accepted."""
        self.wire(learning=LEARN_OFF, strict=True)
        self.from_a(rtp(1), src=self.NAT)
        self.from_a(rtp(2))
        self.assertEqual(self.delivered(B_SDP), [(rtp(2), B_SOCK)])
        self.assertEqual(self.a.errors, 1)

    def test_asymmetric(self):
        """asymmetric: never learn, even in delayed mode."""
        self.wire(asymmetric=True)
        self.from_a(rtp(), src=self.NAT)
        self.reactor.advance(LEARNING_WINDOW)
        self.from_a(rtp(), src=self.NAT)
        self.assertEqual(self.a.endpoint, A_SDP)

    def test_heuristic_ranks(self):
        """heuristic: a better-ranked source wins, a worse one does not move it."""
        self.wire(learning=LEARN_HEURISTIC)
        same_port = ("192.0.2.5", A_SDP[1])
        same_addr = (A_SDP[0], 5999)
        self.from_a(rtp(), src=self.OTHER)
        self.assertEqual(self.a.endpoint, self.OTHER)
        self.from_a(rtp(), src=same_port)
        self.assertEqual(self.a.endpoint, same_port)
        self.from_a(rtp(), src=same_addr)
        self.assertEqual(self.a.endpoint, same_addr)
        self.from_a(rtp(), src=self.OTHER)
        self.assertEqual(self.a.endpoint, same_addr)
        self.assertFalse(self.a.confirmed)
        self.assertEqual(self.a.errors, 0)
        self.reactor.advance(LEARNING_WINDOW)
        self.from_a(rtp(), src=self.OTHER)
        self.assertEqual((self.a.endpoint, self.a.confirmed), (same_addr, True))

    def test_heuristic_exact_confirms(self):
        """heuristic: the exact SDP address confirms at once."""
        self.wire(learning=LEARN_HEURISTIC)
        self.from_a(rtp(), src=(A_SDP[0], 5999))
        self.from_a(rtp())
        self.assertEqual((self.a.endpoint, self.a.confirmed), (A_SDP, True))

    def test_heuristic_strict_drops_worse(self):
        """heuristic + strict drops a worse-ranked source even during the window."""
        self.wire(learning=LEARN_HEURISTIC, strict=True)
        self.from_a(rtp(1), src=(A_SDP[0], 5999))
        self.from_a(rtp(2), src=self.OTHER)
        self.assertEqual(self.delivered(B_SDP), [(rtp(1), B_SOCK)])
        self.assertEqual(self.a.errors, 1)


class IPv6Tests(SynchronousTestCase):
    def test_v6_source_trimmed(self):
        """IPv6 sources (4-tuples from recvfrom) are compared as (host, port)."""
        reactor = MemoryUDPReactor()
        net = FakeNetwork()
        a = RelaySocket(reactor, net.bind("::1", 30000), ("::1", 30000))
        b = RelaySocket(reactor, net.bind("::1", 30002), ("::1", 30002))
        a.configure(peer=b, endpoint=("::1", 5000), learning=LEARN_OFF, strict=True, reset=True)
        b.configure(peer=a, endpoint=("::1", 6000), reset=True)
        net.inject(("::1", 30000), rtp(), ("::1", 5000, 0, 0))
        a.doRead()
        self.assertEqual(a.errors, 0)
        self.assertEqual(net.sent_to(("::1", 6000)), [(rtp(), ("::1", 30002))])


class AuthorityTests(RelayTestBase):
    """``authorise`` / ``select``: an outside authority (ICE) over a socket's
    sources; the socket never learns."""

    OK = ("192.0.2.9", 41000)
    OTHER = ("192.0.2.77", 42000)

    def setUp(self):
        RelayTestBase.setUp(self)
        self.asked = []

        def authorise(address):
            self.asked.append(address)
            return address == self.OK

        self.a.authorise = authorise
        self.a.select(None)
        self.wire(learning=LEARN_DELAYED)

    def test_configure_keeps_authority(self):
        """configure neither learns nor takes the SDP endpoint."""
        self.assertEqual((self.a.endpoint, self.a.confirmed, self.a.learning), (None, False, LEARN_OFF))
        self.assertEqual(self.a.sdp_endpoint, A_SDP)

    def test_only_authorised_sources_forwarded_never_learnt(self):
        self.from_a(rtp(1), src=self.OTHER)
        self.from_a(rtp(2), src=self.OK)
        self.assertEqual(self.delivered(B_SDP), [(rtp(2), B_SOCK)])
        self.assertEqual(self.asked, [self.OTHER, self.OK])
        self.assertEqual((self.a.endpoint, self.a.errors), (None, 1))
        # nothing goes towards A before an address is selected
        self.from_b(rtp(3))
        self.assertEqual(self.delivered(self.OK), [])

    def test_select(self):
        self.a.select(self.OK)
        self.assertEqual((self.a.endpoint, self.a.confirmed), (self.OK, True))
        self.from_a(rtp(1), src=self.OK)
        self.assertEqual(self.asked, [])  # the selected endpoint pays no policy call
        self.from_b(rtp(2))
        self.assertEqual(self.delivered(self.OK), [(rtp(2), A_SOCK)])
        self.a.configure(peer=self.b, endpoint=A_SDP, reset=True)
        self.assertEqual(self.a.endpoint, self.OK)
        self.a.select(None)
        self.from_b(rtp(3))
        self.assertEqual(self.delivered(self.OK), [(rtp(2), A_SOCK)])

    def test_removed_authority_learns_again(self):
        self.a.authorise = None
        self.a.configure(peer=self.b, endpoint=A_SDP, learning=LEARN_DELAYED, reset=True)
        self.from_a(rtp(1), src=self.OTHER)
        self.assertEqual((self.a.endpoint, self.a.learning), (self.OTHER, LEARN_DELAYED))

    def test_close_forgets(self):
        self.a.close()
        self.assertIsNone(self.a.authorise)
