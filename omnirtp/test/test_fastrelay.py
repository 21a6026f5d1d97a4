"""``omnirtp.media._fastrelay``: MediaPoller's wait and inline relay in C,
against the same poller without it (``relay._fastrelay`` None, as where
the extension is not built), on real sockets on 127.0.0.1 and ::1.

Each scenario runs once with the C loop and once on the Python path; both
must forward the same datagrams and leave the same counters.  The modules
that drive a poller (test_media_loop, test_relay_stepped) run again here
without the extension."""

import os
import select
import socket

from twisted.internet.epollreactor import EPollReactor
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.media import relay as relay_module
from omnirtp.media.relay import MediaPoller, bind_companion, bind_udp
from omnirtp.test import test_media_loop, test_relay_stepped
from omnirtp.test.fakes import MemoryUDPReactor
from omnirtp.test.realrelays import RealRelays
from omnirtp.test.test_relay_stepped import CountingRelay

HOST = "127.0.0.1"


def rtp(seq, size=20):
    return bytes([0x80, 0, 0, seq]) + bytes(8) + bytes(range(size))


def rtp_with(pt, ssrc, seq, marker=False, size=20):
    return (bytes([0x80, pt | (0x80 if marker else 0), 0, seq]) + bytes(4)
            + ssrc.to_bytes(4, "big") + bytes(range(size)))


def without_extension(case):
    """Make the pollers ``case`` creates from now on run without the C loop."""
    case.patch(relay_module, "_fastrelay", None)


class Tap:
    """A recording tap as the inline path sees it (``sink``, ``inline_flow``)
    that notes each item and the socket's counters when it got it."""

    inline_flow = "flow"

    def __init__(self, relay):
        self.relay = relay
        self.items = []

    def sink(self, item):
        self.items.append((item, self.relay.packets, self.relay.bytes))


class Scenarios(RealRelays):
    """The scenarios, run by a subclass with (``fast``) or without the
    extension.  The poller is driven by hand (``doRead``: the C loop's
    ``rounds``), as in test_relay_stepped."""

    relay_class = CountingRelay
    host = HOST
    fast = True

    def setUp(self):
        if self.fast:
            self.assertIsNotNone(relay_module._fastrelay, "not built: make ext")
        else:
            without_extension(self)
        self.reactor = MemoryUDPReactor()
        self.poller = MediaPoller(self.reactor)
        self.addCleanup(self.poller.close)
        self.assertEqual(self.poller._loop is not None, self.fast)

    def party(self):
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind((self.host, 0))
        s.setblocking(False)
        return s

    def relay(self):
        sock = bind_udp(self.host, 0, reuse_port=True)
        port = sock.getsockname()[1]
        relay = self.relay_class(self.reactor, sock, (self.host, port), self.poller,
                                 bind_companion)
        self.addCleanup(relay.close)
        relay.start()
        return relay

    def pump(self, party=None, count=0):
        """Serve until ``party`` got ``count`` datagrams (returned), then
        what is left ready."""
        got = self.relay_until(party, count) if party is not None else []
        for _ in range(3):
            select.select([self.poller.fileno()], [], [], 0.01)
            self.poller.doRead()
        return got

    def confirmed_pair(self):
        """A pair whose companions carry the traffic both ways: the
        first datagram each way took the main socket."""
        party_a, party_b = self.party(), self.party()
        a, b = self.pair(party_a, party_b)
        party_a.sendto(rtp(0), a.local)
        self.pump(party_b, 1)
        party_b.sendto(rtp(0), b.local)
        self.pump(party_a, 1)
        self.assertGreaterEqual(a._out, 0)
        self.assertGreaterEqual(b._out, 0)
        return party_a, party_b, a, b

    def state(self, *relays):
        return [(r.packets, r.bytes, r.errors, r.junk, r.full) for r in relays]

    def test_inlineCountsAndForwards(self):
        """RTP and RTCP from the confirmed endpoints are relayed both ways
        by the inline path (no full path), in order, and counted."""
        party_a, party_b, a, b = self.confirmed_pair()
        full = (a.full, b.full)
        before = a.last_packet
        sent = [rtp(seq, size=seq) for seq in range(1, 6)]
        sent.append(bytes([0x81, 200]) + bytes(26))  # an RTCP SR
        for data in sent:
            party_a.sendto(data, a.local)
        self.assertEqual(self.pump(party_b, len(sent)), sent)
        party_b.sendto(rtp(9), b.local)
        self.assertEqual(self.pump(party_a, 1), [rtp(9)])
        self.assertEqual((a.full, b.full), full)
        self.assertEqual(self.state(a, b), [
            (1 + len(sent), len(rtp(0)) + sum(map(len, sent)), 0, 0, 1),
            (2, 2 * len(rtp(0)), 0, 0, 1)])
        self.assertGreaterEqual(a.last_packet, before)
        self.assertEqual(a.counters()["packets"], 1 + len(sent))

    def test_fullPathForJunkAndUnconfirmed(self):
        """Junk and what comes while ``_out`` is -1 go to ``connected``:
        counted there (junk, the learning policy), as without the loop."""
        party_a, party_b, a, b = self.confirmed_pair()
        party_a.sendto(b"junk", a.local)
        self.pump()
        self.assertEqual((a.junk, a.errors, a.full), (1, 1, 2))
        b._cfd, cfd = -1, b._cfd  # the peer has no companion: a's full path
        a._update_out()
        self.assertEqual(a._out, -1)
        party_a.sendto(rtp(1), a.local)
        self.pump()
        b._cfd = cfd
        self.assertEqual(self.state(a), [(2, 2 * len(rtp(0)), 1, 1, 3)])

    def test_writeErrorCounted(self):
        """A failing write to the peer's companion counts an error and the
        datagram as received."""
        party_a, party_b, a, b = self.confirmed_pair()
        unconnected = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                                    socket.SOCK_DGRAM)
        self.addCleanup(unconnected.close)
        a._out = unconnected.fileno()  # no destination: EDESTADDRREQ
        party_a.sendto(rtp(1), a.local)
        party_a.sendto(rtp(2), a.local)
        self.pump()
        self.assertEqual(self.state(a), [(3, 3 * len(rtp(0)), 2, 0, 1)])

    def test_icmpErrorConsumed(self):
        """A party gone (ICMP port unreachable on the peer's connected
        companion): the error is consumed by a read or fails a write, and
        relaying goes on."""
        party_a, party_b, a, b = self.confirmed_pair()
        party_b.close()
        for seq in range(1, 4):
            party_a.sendto(rtp(seq), a.local)
            self.pump()
        # three received; whichever way each ICMP error was met, no more
        # than the two writes after the first can have failed
        self.assertEqual(a.packets, 4)
        self.assertLessEqual(a.errors, 2)
        self.assertEqual((b.packets, b.full), (1, 1))

    def test_socketClosedMidRound(self):
        """A handler earlier in a round closes a relay whose companion is
        ready later in the same round: the companion is not read, nothing
        is relayed or counted for it."""
        party_a, party_b, a, b = self.confirmed_pair()
        other = bind_udp(self.host, 0)
        self.addCleanup(other.close)
        closed = []

        def handler(now):
            other.recv(100)
            a.close()
            closed.append(now)

        self.poller.add(other.fileno(), handler)
        poke = self.party()
        poke.sendto(b"x", other.getsockname())  # ready first
        party_a.sendto(rtp(1), a.local)
        select.select([party_a], [], [], 0.05)
        self.poller.doRead()
        self.assertEqual(len(closed), 1)
        self.assertEqual(self.state(a), [(1, len(rtp(0)), 0, 0, 1)])
        select.select([party_b], [], [], 0.05)
        self.assertRaises(BlockingIOError, party_b.recv, 100)
        self.assertEqual(len(self.poller), 3)  # b's socket, companion; other

    def test_tappedRelay(self):
        """A recorded socket: its tap gets (time, flow, datagram), with the
        socket's counters already counting it, and the datagram goes on."""
        party_a, party_b, a, b = self.confirmed_pair()
        a._tap = tap = Tap(a)
        party_a.sendto(rtp(1), a.local)
        party_a.sendto(rtp(2), a.local)
        self.assertEqual(self.pump(party_b, 2), [rtp(1), rtp(2)])
        self.assertEqual([(flow, data, packets, size)
                          for (now, flow, data), packets, size in tap.items],
                         [("flow", rtp(1), 2, 2 * len(rtp(0))),
                          ("flow", rtp(2), 3, 3 * len(rtp(0)))])
        self.assertEqual(self.state(a), [(3, 3 * len(rtp(0)), 0, 0, 1)])


    def test_ssrcAndPayloadTypes(self):
        """The inline path keeps the SSRC of the last RTP datagram, the
        sender SSRC of the last RTCP one and packets per payload type
        (three types between two folds included: the third folds first),
        as the Python path does; the counters show them."""
        party_a, party_b, a, b = self.confirmed_pair()
        full = (a.full, b.full)
        sent = ([rtp_with(0, 0x11111111, seq) for seq in range(3)]
                + [rtp_with(101, 0x11111111, seq, marker=True) for seq in range(3, 5)]
                + [rtp_with(8, 0xB0B0B0B1, 5)]
                + [bytes([0x81, 200, 0, 6]) + bytes.fromhex("feedface") + bytes(20)]
                + [rtp_with(0, 0x22222222, 6)])
        for data in sent:
            party_a.sendto(data, a.local)
        self.assertEqual(self.pump(party_b, len(sent)), sent)
        self.assertEqual((a.full, b.full), full)  # all inline
        self.assertEqual((a.ssrc, a.rtcp_ssrc), (0x22222222, 0xFEEDFACE))
        self.assertEqual(a.payload_types, {0: 1 + 3 + 1, 101: 2, 8: 1})
        counters = a.counters()
        self.assertEqual((counters["ssrc"], counters["rtcp ssrc"], counters["payload types"]),
                         (0x22222222, 0xFEEDFACE, {0: 5, 101: 2, 8: 1}))
        # b got its first datagram only (rtp(0): SSRC 0, PT 0), no RTCP
        self.assertEqual((b.ssrc, b.rtcp_ssrc, b.payload_types), (0, None, {0: 1}))
        self.assertNotIn("rtcp ssrc", b.counters())

    def test_nothingSeenNothingShown(self):
        """A socket that received nothing, or junk only, has no SSRC or
        payload type, and its counters no such keys."""
        party_a, party_b = self.party(), self.party()
        a, b = self.pair(party_a, party_b)
        party_a.sendto(b"junk", a.local)
        party_a.sendto(bytes([0x80, 0, 0, 1]), a.local)  # too short for RTP
        self.pump()
        self.assertEqual(a.junk, 2)
        for relay in (a, b):
            self.assertEqual((relay.ssrc, relay.rtcp_ssrc, relay.payload_types),
                             (None, None, None))
            counters = relay.counters()
            for key in ("ssrc", "rtcp ssrc", "payload types"):
                self.assertNotIn(key, counters)

    def test_rtcpSocketSenderSsrc(self):
        """A pair's RTCP socket (full path) shows the sender SSRC of its
        last RTCP datagram as its ``ssrc`` and counts no payload type."""
        party_a, party_b = self.party(), self.party()
        a, b = self.pair(party_a, party_b)
        a.is_rtcp = b.is_rtcp = True
        a.rtp_sibling, b.rtp_sibling = self.relay(), self.relay()
        for sender in (0x01020304, 0xF1F2F3F4):
            party_a.sendto(bytes([0x81, 201, 0, 7]) + sender.to_bytes(4, "big") + bytes(24),
                           a.local)
            self.pump(party_b, 1)
        self.assertEqual((a.ssrc, a.rtcp_ssrc, a.payload_types), (0xF1F2F3F4, None, {}))
        self.assertNotIn("payload types", a.counters())
        self.assertEqual(a.counters()["ssrc"], 0xF1F2F3F4)

    def test_tappedRelayTracks(self):
        """A recorded socket's datagrams (the tap's call folds mid-round)
        are tracked once each."""
        party_a, party_b, a, b = self.confirmed_pair()
        a._tap = Tap(a)
        for seq in range(1, 4):
            party_a.sendto(rtp_with(8, 0xABCDEF01, seq), a.local)
        self.pump(party_b, 3)
        self.assertEqual((a.ssrc, a.payload_types), (0xABCDEF01, {0: 1, 8: 3}))


class FastScenarios(Scenarios, SynchronousTestCase):
    pass


class PythonScenarios(Scenarios, SynchronousTestCase):
    fast = False


class FastScenariosV6(Scenarios, SynchronousTestCase):
    host = "::1"


class PythonScenariosV6(Scenarios, SynchronousTestCase):
    host = "::1"
    fast = False


class WaitTests(RealRelays, SynchronousTestCase):
    """``Loop.wait`` itself: rounds that need no Python do not return."""

    def setUp(self):
        self.assertIsNotNone(relay_module._fastrelay, "not built: make ext")
        self.reactor = EPollReactor()
        self.poller = MediaPoller(self.reactor)
        self.addCleanup(self.poller.close)
        self.loop = self.poller._loop

    def confirmed_pair(self):
        party_a, party_b = self.party(), self.party()
        a, b = self.pair(party_a, party_b)
        for party, relay, other in ((party_a, a, party_b), (party_b, b, party_a)):
            party.sendto(rtp(0), relay.local)
            self.loop.wait(1.0, -1.0, 0.0)  # the main socket's handler: Python
            self.assertEqual(self.loop.called, 1)
            select.select([other], [], [], 1)
            self.assertEqual(other.recv(100), rtp(0))
        self.assertGreaterEqual(a._out, 0)
        return party_a, party_b, a, b

    def test_inlineRoundsStayInC(self):
        """Datagrams queued on a companion are served round after round
        by one call, which returns when the deadline passed, counters
        folded; ``called`` says no Python ran."""
        party_a, party_b, a, b = self.confirmed_pair()
        for seq in range(1, 6):
            party_a.sendto(rtp(seq), a.local)
        start = self.reactor.seconds()
        now = self.loop.wait(5.0, start + 0.1, 0.0)
        self.assertEqual(self.loop.called, 0)
        self.assertGreaterEqual(now, start + 0.1)
        self.assertEqual((a.packets, a.bytes), (6, 6 * len(rtp(0))))
        self.assertLess(start, a.last_packet)
        self.assertLess(a.last_packet, now)
        self.assertEqual([party_b.recv(100) for _ in range(5)], [rtp(s) for s in range(1, 6)])

    def test_handlerErrorFoldsAndRaises(self):
        """A handler that raises ends the wait with its exception; what the
        round counted before it was folded before it ran."""
        party_a, party_b, a, b = self.confirmed_pair()
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)

        def broken(now):
            raise ZeroDivisionError(a.packets)

        self.poller.add(r, broken)
        party_a.sendto(rtp(1), a.local)
        os.write(w, b"x")
        select.select([self.poller.fileno()], [], [], 1)
        e = self.assertRaises(ZeroDivisionError, self.loop.wait, 1.0, -1.0, 0.0)
        self.assertEqual(e.args[0], a.packets)
        self.assertIn(a.packets, (1, 2))  # the order of the round decides
        self.poller.remove(r)
        self.loop.wait(0.05, -1.0, 0.0)
        self.assertEqual(a.packets, 2)
        self.assertEqual(party_b.recv(100), rtp(1))


class RunTestsWithoutExtension(test_media_loop.RunTests):
    def setUp(self):
        without_extension(self)
        super().setUp()
        self.assertIsNone(self.poller._loop)


class CoalescingRunTestsWithoutExtension(test_media_loop.CoalescingRunTests):
    def setUp(self):
        without_extension(self)
        super().setUp()


class AddAfterTestsWithoutExtension(test_media_loop.AddAfterTests):
    def setUp(self):
        without_extension(self)
        super().setUp()


class SteppedTestsWithoutExtension(test_relay_stepped.SteppedTests):
    def setUp(self):
        without_extension(self)
        super().setUp()


class FanOutTestsWithoutExtension(test_relay_stepped.FanOutTests):
    def setUp(self):
        without_extension(self)
        super().setUp()


class CollectTests(SynchronousTestCase):
    def test_cycleThroughTheLoopIsCollected(self):
        """A poller dropped without ``close`` while a handler refers back to
        it (as a RelaySocket's bound ``read`` does) is collected: the
        collector sees through the C loop's references."""
        import gc
        import weakref

        class Handler:
            def __call__(self, now):
                pass

        reactor = MemoryUDPReactor()
        poller = MediaPoller(reactor)
        self.assertIsNotNone(poller._loop)
        sock = bind_udp(HOST, 0)
        self.addCleanup(sock.close)
        handler = Handler()
        handler.poller = poller
        poller.add(sock.fileno(), handler)
        gone = weakref.ref(handler)
        del handler, poller, reactor  # the reactor reads the poller
        gc.collect()
        self.assertIsNone(gone())


class TrackTests(SynchronousTestCase):
    """``_fastrelay.Track`` and ``relay.PyTrack`` keep the same state from
    the same datagrams."""

    DATAGRAMS = ([rtp_with(pt, 0x1000 + pt, pt) for pt in (0, 8, 101, 0, 9, 10, 11, 12, 13, 14)]
                 + [bytes([0x81, 200, 0, 6]) + bytes.fromhex("a1b2c3d4") + bytes(20),
                    bytes([0x80, 0, 0, 1]),  # short: nothing
                    bytes([0x80, 72, 0, 1, 0, 0, 0, 0, 0xEE, 0xEE, 0xEE, 0xEE]),
                    memoryview(rtp_with(8, 0xFFFFFFFF, 1)),
                    bytearray(rtp_with(8, 0xFFFFFFFE, 2))])

    def states(self, rtcp_socket):
        out = []
        for make in (relay_module._fastrelay.Track, relay_module.PyTrack):
            track = make(rtcp_socket)
            self.assertEqual(track.state(), (None, None, {}))
            for data in self.DATAGRAMS:
                track.note(data)
            out.append(track.state())
        return out

    def test_rtpSocket(self):
        fast, python = self.states(False)
        self.assertEqual(fast, python)
        # the last RTP SSRC, the RTCP sender's apart, the first 8 types only
        self.assertEqual(fast, (0xFFFFFFFE, 0xA1B2C3D4,
                                {0: 2, 8: 3, 101: 1, 9: 1, 10: 1, 11: 1, 12: 1, 13: 1}))

    def test_rtcpSocket(self):
        fast, python = self.states(True)
        self.assertEqual(fast, python)
        # every datagram of 8 bytes or more read as RTCP: bytes 4-7
        self.assertEqual(fast, (int.from_bytes(rtp_with(8, 0xFFFFFFFE, 2)[4:8], "big"), None, {}))
