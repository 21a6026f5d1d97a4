"""EmbeddedEngine over real UDP sockets on 127.0.0.1 with the real reactor.

Two fake parties (plain DatagramProtocols on ephemeral ports) exchange RTP
and RTCP through engine sockets bound in a free range outside the kernel's
ephemeral ports (so other programs' sockets do not land in it).
"""

import os
import socket

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from omnirtp.media.engine import EmbeddedEngine
from omnirtp.test.integration.peers import Party, free_port_range

HOST = "127.0.0.1"


def rtp(seq):
    return bytes([0x80, 0x00, seq >> 8 & 0xFF, seq & 0xFF]) + b"\x00" * 8 + b"\xd5" * 160


def rtcp(ssrc):
    return bytes([0x80, 201, 0x00, 0x01]) + ssrc.to_bytes(4, "big")


class RelayUDPTests(TestCase):
    timeout = 15

    def setUp(self):
        self.engine = EmbeddedEngine(reactor, {HOST: free_port_range(1000)})
        self.addCleanup(self.engine.close)

    def party(self):
        p = Party()
        port = reactor.listenUDP(0, p, interface=HOST)
        self.addCleanup(port.stopListening)
        return p

    def totals(self):
        return self.successResultOf(self.engine.totals())

    @defer.inlineCallbacks
    def wire(self, call_id, a_rtp, a_rtcp, b_rtp, b_rtcp, **policy):
        """Allocate two pairs, configure A <-> B; fire with (a_port, b_port)."""
        a, b = yield self.engine.allocate(call_id, HOST, 2)
        entries = []
        for local, peer, endpoint in (
            (a, b, a_rtp.address),
            (a + 1, b + 1, a_rtcp.address),
            (b, a, b_rtp.address),
            (b + 1, a + 1, b_rtcp.address),
        ):
            entry = {"local": (HOST, local), "peer": (HOST, peer), "endpoint": endpoint,
                     "learning": "delayed", "strict": False, "handover": False,
                     "asymmetric": False, "reset": True}
            entry.update(policy)
            entries.append(entry)
        yield self.engine.configure(call_id, entries)
        return a, b

    @defer.inlineCallbacks
    def test_rtp_and_rtcp_both_ways(self):
        """RTP and RTCP flow both ways; each side sees the port it was given as source."""
        a_rtp, a_rtcp, b_rtp, b_rtcp = self.party(), self.party(), self.party(), self.party()
        a, b = yield self.wire("c1", a_rtp, a_rtcp, b_rtp, b_rtcp)
        for i in range(5):
            a_rtp.send(rtp(i), (HOST, a))
            b_rtp.send(rtp(100 + i), (HOST, b))
        a_rtcp.send(rtcp(1), (HOST, a + 1))
        b_rtcp.send(rtcp(2), (HOST, b + 1))
        got_b = yield b_rtp.wait(5)
        got_a = yield a_rtp.wait(5)
        got_b_rtcp = yield b_rtcp.wait(1)
        got_a_rtcp = yield a_rtcp.wait(1)
        self.assertEqual(got_b, [(rtp(i), (HOST, b)) for i in range(5)])
        self.assertEqual(got_a, [(rtp(100 + i), (HOST, a)) for i in range(5)])
        self.assertEqual(got_b_rtcp, [(rtcp(1), (HOST, b + 1))])
        self.assertEqual(got_a_rtcp, [(rtcp(2), (HOST, a + 1))])
        stats = yield self.engine.stats("c1")
        self.assertEqual(stats["c1"][(HOST, a)]["packets"], 5)
        self.assertEqual(stats["c1"][(HOST, b)]["packets"], 5)
        self.assertEqual(self.totals()["packets"], 12)

    @defer.inlineCallbacks
    def test_learns_other_source_port(self):
        """A party behind NAT sends from another port; the reply follows that port."""
        a_sdp, a_rtcp, b_rtp, b_rtcp = self.party(), self.party(), self.party(), self.party()
        a_nat = self.party()
        a, b = yield self.wire("c1", a_sdp, a_rtcp, b_rtp, b_rtcp)
        a_nat.send(rtp(1), (HOST, a))
        yield b_rtp.wait(1)
        b_rtp.send(rtp(2), (HOST, b))
        got = yield a_nat.wait(1)
        self.assertEqual(got, [(rtp(2), (HOST, a))])
        self.assertEqual(a_sdp.received, [])
        stats = yield self.engine.stats("c1")
        self.assertEqual(stats["c1"][(HOST, a)]["endpoint"], a_nat.address)

    @defer.inlineCallbacks
    def test_strict_source_drops(self):
        """strict with learning off: packets from an unknown source are dropped and counted."""
        a_rtp, a_rtcp, b_rtp, b_rtcp = self.party(), self.party(), self.party(), self.party()
        intruder = self.party()
        a, b = yield self.wire("c1", a_rtp, a_rtcp, b_rtp, b_rtcp, learning="off", strict=True)
        intruder.send(rtp(66), (HOST, a))
        a_rtp.send(rtp(1), (HOST, a))
        got = yield b_rtp.wait(1)
        self.assertEqual(got, [(rtp(1), (HOST, b))])
        stats = yield self.engine.stats("c1")
        self.assertEqual((stats["c1"][(HOST, a)]["packets"], stats["c1"][(HOST, a)]["errors"]), (2, 1))

    @defer.inlineCallbacks
    def test_junk_dropped_relay_continues(self):
        """Garbage, truncated, STUN and DTLS datagrams are counted; RTP still flows."""
        a_rtp, a_rtcp, b_rtp, b_rtcp = self.party(), self.party(), self.party(), self.party()
        a, b = yield self.wire("c1", a_rtp, a_rtcp, b_rtp, b_rtcp)
        stun = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"\x01" * 12
        dtls = b"\x16\xfe\xfd\x00\x00" + b"\x00" * 20
        for junk in (b"GET / HTTP/1.0\r\n\r\n", b"\x80\x00", stun, dtls, b""):
            a_rtp.send(junk, (HOST, a))
        a_rtp.send(rtp(7), (HOST, a))
        got = yield b_rtp.wait(1)
        self.assertEqual(got, [(rtp(7), (HOST, b))])
        t = self.totals()
        self.assertEqual((t["junk"], t["errors"], t["packets"]), (5, 5, 1))

    @defer.inlineCallbacks
    def test_release_returns_ports(self):
        """After release the ports count as free again and can be bound by anyone."""
        before = self.totals()
        a, b = yield self.engine.allocate("c1", HOST, 2)
        during = self.totals()
        self.assertEqual(during["ports_used"], before["ports_used"] + 4)
        self.assertEqual(during["ports_free"], before["ports_free"] - 4)
        yield self.engine.release("c1")
        after = self.totals()
        self.assertEqual((after["ports_used"], after["ports_free"]), (before["ports_used"], before["ports_free"]))
        for port in (a, a + 1, b, b + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((HOST, port))
            finally:
                s.close()


class CompanionTests(TestCase):
    """The connected companion socket that carries an endpoint's traffic."""

    timeout = 15

    def setUp(self):
        self.engine = EmbeddedEngine(reactor, {HOST: free_port_range(100)})
        self.addCleanup(self.engine.close)

    def parties(self, n):
        """``n`` parties on real sockets of HOST."""
        parties = [Party() for _ in range(n)]
        for p in parties:
            self.addCleanup(reactor.listenUDP(0, p, interface=HOST).stopListening)
        return parties

    @defer.inlineCallbacks
    def call(self, a_party, b_party, **kw):
        """A call "c" of two relay sockets, A's facing ``a_party`` and B's
        ``b_party``, both entries reset and with ``kw`` (``learning``):
        their ports (a, b)."""
        a, b = yield self.engine.allocate("c", HOST, 2)
        yield self.engine.configure("c", [
            dict(local=(HOST, a), peer=(HOST, b), endpoint=a_party.address, reset=True, **kw),
            dict(local=(HOST, b), peer=(HOST, a), endpoint=b_party.address, reset=True, **kw)])
        return a, b

    @defer.inlineCallbacks
    def test_endpointTrafficUsesConnectedCompanion(self):
        """A relay socket gets a companion connected to its endpoint with
        the endpoint's first datagram (none at set-up: a call without
        media costs no socket more than its ports), and its peer gets one
        with it; later datagrams from the endpoint arrive there and leave
        the peer's companion; another source still reaches the main
        socket."""
        a_party, b_party, stranger = self.parties(3)
        a, b = yield self.call(a_party, b_party, learning="delayed")
        relay_a, relay_b = self.engine.socket((HOST, a)), self.engine.socket((HOST, b))
        self.assertEqual((relay_a._conn, relay_b._conn), (None, None))
        a_party.send(rtp(1), (HOST, a))
        got = yield b_party.wait(1)
        self.assertEqual(got, [(rtp(1), (HOST, b))])
        self.assertEqual(relay_a._conn.getpeername(), a_party.address)
        self.assertEqual(relay_a._conn.getsockname(), (HOST, a))
        self.assertEqual(relay_b._conn.getpeername(), b_party.address)
        a_party.send(rtp(4), (HOST, a))  # to a's companion now
        got = yield b_party.wait(2)
        self.assertEqual(got[-1], (rtp(4), (HOST, b)))
        self.assertEqual(relay_a.packets, 2)
        stranger.send(rtp(2), (HOST, a))  # learning window: forwarded, endpoint follows
        yield b_party.wait(3)
        self.assertEqual(relay_a.endpoint, stranger.address)
        self.assertEqual(relay_a._conn.getpeername(), stranger.address)
        b_party.send(rtp(3), (HOST, b))
        got = yield stranger.wait(1)
        self.assertEqual(got, [(rtp(3), (HOST, a))])
        self.assertEqual(a_party.received, [])

    @defer.inlineCallbacks
    def test_reusePortSetWithTheFirstCompanion(self):
        """A media socket is bound without SO_REUSEPORT and keeps it off
        while it has no companion (a call set up and torn down without media
        costs no setsockopt per socket, and no other SO_REUSEPORT socket can
        join its port meanwhile); the first companion sets it, on the socket
        it joins, and both sockets share the port from then on."""
        a_party, b_party = self.parties(2)
        a, b = yield self.call(a_party, b_party, learning="delayed")
        relay_a, relay_b = self.engine.socket((HOST, a)), self.engine.socket((HOST, b))
        reuse = lambda sock: sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)  # noqa: E731
        self.assertEqual((reuse(relay_a._sock), reuse(relay_b._sock)), (0, 0))
        from omnirtp.media.relay import bind_udp
        self.assertRaises(OSError, bind_udp, HOST, a, reuse_port=True)
        a_party.send(rtp(1), (HOST, a))
        got = yield b_party.wait(1)
        self.assertEqual(got, [(rtp(1), (HOST, b))])
        self.assertEqual((reuse(relay_a._sock), reuse(relay_b._sock)), (1, 1))
        self.assertEqual((reuse(relay_a._conn), reuse(relay_b._conn)), (1, 1))
        self.assertEqual(relay_a._conn.getsockname(), (HOST, a))
        self.assertEqual(relay_b._conn.getsockname(), (HOST, b))
        # the RTCP sockets saw nothing: no companion, no SO_REUSEPORT
        self.assertEqual(reuse(self.engine.socket((HOST, a + 1))._sock), 0)

    @defer.inlineCallbacks
    def test_queuedBeforeCompanionRelayedFirst(self):
        """Datagrams queued at the main socket when the endpoint's first one
        makes the companion are relayed in the same read, so none of them
        can come after what the companion reads (a burst at the start of a
        stream keeps its order)."""
        a_party, b_party = self.parties(2)
        a, b = yield self.call(a_party, b_party, learning="immediate")
        relay_a = self.engine.socket((HOST, a))
        for i in range(1, 6):
            a_party.send(rtp(i), (HOST, a))
        relay_a.read(reactor.seconds())  # the first makes the companion
        self.assertIsNotNone(relay_a._conn)
        self.assertEqual(relay_a.packets, 5)
        for i in range(6, 9):
            a_party.send(rtp(i), (HOST, a))  # to the companion
        got = yield b_party.wait(8)
        self.assertEqual([d for d, _ in got], [rtp(i) for i in range(1, 9)])

    @defer.inlineCallbacks
    def test_setUpMakesOneSocketPerPort(self):
        """An offer/answer's allocate and configure make one socket per
        port (the companions wait for media); release closes them all."""
        fds = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
        a_party, b_party = self.parties(2)
        before = fds()
        a, b = yield self.call(a_party, b_party)
        self.assertEqual(fds() - before, 4)  # RTP and RTCP of a and b
        yield self.engine.release("c", [(HOST, a), (HOST, b)])
        self.assertEqual(fds(), before)

    @defer.inlineCallbacks
    def test_oneWayMediaInline(self):
        """Media one way only (B's party never sends): A's first datagram
        makes B's companion too, and A's datagrams take the inline path."""
        a_party, b_party = self.parties(2)
        a, b = yield self.call(a_party, b_party, learning="immediate")
        relay_a, relay_b = self.engine.socket((HOST, a)), self.engine.socket((HOST, b))
        a_party.send(rtp(1), (HOST, a))
        yield b_party.wait(1)
        self.assertNotEqual(relay_b._cfd, -1)
        self.assertEqual(relay_b._conn.getpeername(), b_party.address)
        self.assertEqual(relay_a._out, relay_b._cfd)
        for i in range(2, 5):
            a_party.send(rtp(i), (HOST, a))
        got = yield b_party.wait(4)
        self.assertEqual(got, [(rtp(i), (HOST, b)) for i in range(1, 5)])
        self.assertEqual((relay_a.packets, relay_b.packets), (4, 0))

    @defer.inlineCallbacks
    def test_inlinePathFollowsState(self):
        """The poller relays a companion's datagram inline only while the
        endpoint is confirmed, no RTCP is split off and the peer has a
        companion; whenever one of these changes (a reset, the peer losing
        or regaining its endpoint, an RTCP split) traffic takes the full
        path and is still relayed and counted as before."""
        a_party, b_party, b_rtcp_party = self.parties(3)
        a, b = yield self.engine.allocate("c", HOST, 2)

        def entry(local, peer, endpoint, **kw):
            e = {"local": (HOST, local), "peer": (HOST, peer), "endpoint": endpoint,
                 "learning": "immediate"}
            e.update(kw)
            return e

        yield self.engine.configure("c", [entry(a, b, a_party.address, reset=True),
                                          entry(b, a, b_party.address, reset=True)])
        relay_a, relay_b = self.engine.socket((HOST, a)), self.engine.socket((HOST, b))
        self.assertEqual(relay_a._out, -1)  # not confirmed yet: full path
        a_party.send(rtp(1), (HOST, a))
        got = yield b_party.wait(1)
        self.assertEqual(got, [(rtp(1), (HOST, b))])
        self.assertEqual(relay_a._out, relay_b._cfd)  # confirmed: inline
        for i in range(2, 6):
            a_party.send(rtp(i), (HOST, a))
        got = yield b_party.wait(5)
        self.assertEqual(got[1:], [(rtp(i), (HOST, b)) for i in range(2, 6)])
        self.assertEqual((relay_a.packets, relay_a.bytes, relay_a.errors), (5, 5 * 172, 0))

        # the peer loses its endpoint: its companion goes, ours falls back
        yield self.engine.configure("c", [entry(b, a, None)])
        self.assertEqual((relay_b._cfd, relay_a._out), (-1, -1))
        a_party.send(rtp(6), (HOST, a))
        a_party.send(rtp(7), (HOST, a))
        yield self._settle(lambda: relay_a.packets == 7)
        self.assertEqual(relay_a.errors, 2)  # nowhere to send: dropped, counted
        self.assertEqual(len(b_party.received), 5)

        # the peer gets an endpoint again: the inline path comes back
        yield self.engine.configure("c", [entry(b, a, b_party.address)])
        self.assertNotEqual(relay_b._cfd, -1)
        self.assertEqual(relay_a._out, relay_b._cfd)
        a_party.send(rtp(8), (HOST, a))
        got = yield b_party.wait(6)
        self.assertEqual(got[-1], (rtp(8), (HOST, b)))

        # RTCP split off (rtcp-mux on A's side only): full path, RTCP goes
        # out of B's RTCP socket, RTP still to B
        yield self.engine.configure("c", [
            entry(a, b, a_party.address, rtcp_peer=(HOST, b + 1)),
            entry(b + 1, a, b_rtcp_party.address)])
        self.assertEqual(relay_a._out, -1)
        a_party.send(rtcp(7), (HOST, a))
        a_party.send(rtp(9), (HOST, a))
        got_rtcp = yield b_rtcp_party.wait(1)
        got = yield b_party.wait(7)
        self.assertEqual(got_rtcp, [(rtcp(7), (HOST, b + 1))])
        self.assertEqual(got[-1], (rtp(9), (HOST, b)))

        # a signalling reset unconfirms: full path until the next packet
        yield self.engine.configure("c", [entry(a, b, a_party.address, reset=True)])
        self.assertEqual(relay_a._out, -1)
        a_party.send(rtp(10), (HOST, a))
        got = yield b_party.wait(8)
        self.assertEqual(got[-1], (rtp(10), (HOST, b)))
        self.assertEqual(relay_a._out, relay_b._cfd)

        # the peer is released: nothing is written to its closed companion
        yield self.engine.release("c", [(HOST, b)])
        self.assertEqual(relay_a._out, -1)

    def _settle(self, done, timeout=2.0):
        """Fire once ``done()`` is true (polled on the reactor)."""
        d = defer.Deferred()
        deadline = reactor.seconds() + timeout

        def check():
            if done() or reactor.seconds() > deadline:
                d.callback(None)
            else:
                reactor.callLater(0.01, check)

        check()
        return d

    def test_portHeldElsewhereIsRefused(self):
        """A port another SO_REUSEPORT socket holds (e.g. another omnirtp on
        the same range) is not shared: binding it fails as for any port."""
        from omnirtp.media.relay import bind_media, bind_udp
        low, _ = free_port_range(2)
        other = bind_udp(HOST, low, reuse_port=True)
        self.addCleanup(other.close)
        self.assertRaises(OSError, bind_media, HOST, low)
