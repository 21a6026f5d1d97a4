"""Call recording on the engine's fast path, over real UDP on 127.0.0.1 with
the real reactor: a recorded plain socket keeps the poller's inline path
(the poller hands each datagram it relays to the call's recorder, see
``RelaySocket._tap``), and the pcap holds exactly what was relayed, from
the address it came from, through pauses, an endpoint that moves and the
recording of one side stopping."""

import os

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from omnirtp.media.engine import EmbeddedEngine
from omnirtp.recording import pcap
from omnirtp.test.integration.peers import Party, free_port_range

HOST = "127.0.0.1"


def rtp(seq, ssrc=0xA0A0A0A0):
    return (bytes([0x80, 0x00, seq >> 8 & 0xFF, seq & 0xFF]) + b"\x00" * 4
            + ssrc.to_bytes(4, "big") + b"\xd5" * 160)


class InlineRecordingTests(TestCase):
    timeout = 20

    def setUp(self):
        self.engine = EmbeddedEngine(reactor, {HOST: free_port_range(100)})
        self.addCleanup(self.engine.close)
        self.path = os.path.abspath(self.mktemp()) + ".pcap"
        self.record = {"path": self.path, "format": "raw"}

    def party(self):
        p = Party()
        self.addCleanup(reactor.listenUDP(0, p, interface=HOST).stopListening)
        return p

    @defer.inlineCallbacks
    def talk(self, party, dest, seqs, receiver, ssrc=0xA0A0A0A0):
        """``party`` sends RTP ``seqs`` to port ``dest``; fires once
        ``receiver`` has them all."""
        want = len(receiver.received) + len(seqs)
        for seq in seqs:
            party.send(rtp(seq, ssrc), (HOST, dest))
        got = yield receiver.wait(want)
        self.assertEqual([d for d, _ in got[-len(seqs):]], [rtp(s, ssrc) for s in seqs])

    @defer.inlineCallbacks
    def test_recorded_socket_stays_inline(self):
        a_party, b_party, a_moved = self.party(), self.party(), self.party()
        a, b = yield self.engine.allocate("c", HOST, 2)
        B_SSRC = 0xB0B0B0B0

        def entry(local, peer, endpoint, **kw):
            return dict({"local": (HOST, local), "peer": (HOST, peer), "endpoint": endpoint,
                         "learning": "immediate", "record": self.record}, **kw)

        yield self.engine.configure("c", [entry(a, b, a_party.address, reset=True),
                                          entry(b, a, b_party.address, reset=True)])
        relay_a, relay_b = self.engine.socket((HOST, a)), self.engine.socket((HOST, b))
        poller = relay_a._poller
        # the first datagram each way confirms its endpoint (the full path,
        # whose pipeline runs the tap); from then on both are inline
        yield self.talk(a_party, a, [1], b_party)
        yield self.talk(b_party, b, [101], a_party, B_SSRC)
        self.assertIsNot(relay_a.pipeline, None)
        self.assertEqual((relay_a._out, relay_b._out), (relay_b._cfd, relay_a._cfd))
        self.assertIs(poller._conns[relay_a._cfd], relay_a)
        self.assertIs(poller._conns[relay_b._cfd], relay_b)
        yield self.talk(a_party, a, range(2, 21), b_party)
        yield self.talk(b_party, b, range(102, 121), a_party, B_SSRC)

        # paused: relayed, not recorded; resumed: recorded again
        paused = dict(self.record, paused=True)
        yield self.engine.configure("c", [{"local": (HOST, k), "record": paused} for k in (a, b)])
        yield self.talk(a_party, a, range(21, 26), b_party)
        yield self.engine.configure("c", [{"local": (HOST, k), "record": self.record}
                                          for k in (a, b)])
        yield self.talk(a_party, a, range(26, 31), b_party)

        # A moves (its SDP names another address; still confirmed): the
        # companion follows, and so does the source the recording names
        yield self.engine.configure("c", [entry(a, b, a_moved.address)])
        self.assertEqual(relay_a._conn.getpeername(), a_moved.address)
        self.assertEqual(relay_a._out, relay_b._cfd)
        yield self.talk(a_moved, a, range(31, 36), b_party)

        # A's recording stops: A is plain again (still inline), B recorded
        yield self.engine.configure("c", [{"local": (HOST, a), "record": None}])
        self.assertEqual((relay_a.pipeline, relay_a._tap), (None, None))
        self.assertIs(poller._conns[relay_a._cfd], relay_a)
        yield self.talk(a_moved, a, range(36, 41), b_party)
        yield self.talk(b_party, b, range(141, 146), a_moved, B_SSRC)
        self.assertEqual((relay_a.packets, relay_b.packets, relay_a.errors, relay_b.errors),
                         (40, 25, 0, 0))

        stats = yield self.engine.stats("c")
        counters = stats["c"][(HOST, b)]["transforms"]["record"]
        self.assertEqual(counters["dropped"] + counters["errors"], 0)
        yield self.engine.release("c")
        with open(self.path, "rb") as f:
            packets = list(pcap.PcapReader(f.read()))
        to_a = [(p.src, p.payload) for p in packets if p.dst == (HOST, a)]
        to_b = [(p.src, p.payload) for p in packets if p.dst == (HOST, b)]
        self.assertEqual(to_a, [(a_party.address, rtp(s)) for s in range(1, 21)]
                         + [(a_party.address, rtp(s)) for s in range(26, 31)]
                         + [(a_moved.address, rtp(s)) for s in range(31, 36)])
        self.assertEqual(to_b, [(b_party.address, rtp(s, B_SSRC))
                                for s in list(range(101, 121)) + list(range(141, 146))])
        self.assertEqual(len(packets), 30 + 25)
        times = [p.time for p in packets]
        self.assertEqual(times, sorted(times))
