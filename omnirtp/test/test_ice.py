"""Tests for omnirtp.media.ice: candidates, priorities and the agent's state machine on a Clock."""

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.media import ice, stun
from omnirtp.media.ice import (
    CHECKING,
    CLOSED,
    COMPLETED,
    COUNTERS,
    FAILED,
    FROZEN,
    IN_PROGRESS,
    NEW,
    SUCCEEDED,
    WAITING,
    Candidate,
    IceAgent,
    candidate_priority,
    pair_priority,
    parse_candidate,
)

A_ADDR = ("127.0.0.1", 40000)
B_ADDR = ("127.0.0.1", 40002)
A_CRED = ("AAAAufrg", "AAAApassword0123456789xx")
B_CRED = ("BBBBufrg", "BBBBpassword0123456789yy")
DELAY = 0.01  # one-way latency of the in-memory wire
HOST_PRIORITY = 2130706431  # candidate_priority("host", 1)


class FixedRandom(random.Random):
    """A seeded Random whose random() cycles through given values (consent jitter)."""

    def __init__(self, seed, values=(0.5,)):
        super().__init__(seed)
        self.values = list(values)
        self.i = 0

    def random(self):
        value = self.values[self.i % len(self.values)]
        self.i += 1
        return value


def run(clock, until):
    """Advance ``clock`` to ``until``, stopping exactly at each scheduled call
    (so callbacks see the time they were scheduled for)."""
    while True:
        due = [c.getTime() for c in clock.getDelayedCalls()]
        nxt = min(due) if due else None
        if nxt is None or nxt > until:
            clock.rightNow = max(clock.rightNow, until)
            clock.advance(0)
            return
        clock.rightNow = max(clock.rightNow, nxt)
        clock.advance(0)


class Wire:
    """In-memory UDP: what an agent sends reaches the agent at the destination
    address DELAY later, unless ``drop`` says to lose it.  Logs everything."""

    def __init__(self, clock):
        self.clock = clock
        self.agents = {}
        self.drop = None  # drop(source, destination, data) -> True to lose a datagram
        self.sent = []  # (time, source, destination, bytes)
        self.delivered = []  # (time, source, destination, bytes)

    def sender(self, source):
        def send(data, destination):
            assert isinstance(data, bytes)
            self.sent.append((self.clock.seconds(), source, destination, data))
            if destination in self.agents and not (self.drop and self.drop(source, destination, data)):
                self.clock.callLater(DELAY, self._deliver, source, destination, data)

        return send

    def _deliver(self, source, destination, data):
        agent = self.agents.get(destination)
        if agent is not None:
            self.delivered.append((self.clock.seconds(), source, destination, data))
            agent.datagram(data, source)

    def requests(self, source, destination=None):
        """Times and decoded messages of the requests ``source`` sent."""
        out = []
        for t, s, d, data in self.sent:
            if s == source and (destination is None or d == destination):
                m = stun.decode(data).message
                if m.message_class == stun.Class.REQUEST:
                    out.append((t, d, m))
        return out


class Peer:
    """An agent on the wire with its callbacks recorded."""

    def __init__(self, test, wire, address, cred, **kw):
        self.selected = []
        self.failed = []
        self.consent_lost = []
        clock = wire.clock
        kw.setdefault("random", FixedRandom(address[1]))
        self.agent = IceAgent(
            clock,
            wire.sender(address),
            lambda a: self.selected.append((clock.seconds(), a)),
            cred[0],
            cred[1],
            local_address=address,
            on_failed=lambda: self.failed.append(clock.seconds()),
            on_consent_lost=lambda: self.consent_lost.append(clock.seconds()),
            **kw,
        )
        self.address = address
        self.cred = cred
        wire.agents[address] = self.agent
        test.addCleanup(self.agent.stop)
        test.addCleanup(lambda: test.assertEqual(self.agent.counters()["internal-errors"], 0))

    def knows(self, other, candidates=None):
        """Learn the other's credentials and candidates (default: its host address)."""
        self.agent.set_remote_credentials(*other.cred)
        if candidates is None:
            candidates = ["1 1 udp %d %s %d typ host" % (other.agent.local_priority, other.address[0], other.address[1])]
        for c in candidates:
            self.agent.add_remote_candidate(c)


# --- candidates and priorities ------------------------------------------------


class PriorityTests(SynchronousTestCase):
    def test_candidate_priority(self):
        self.assertEqual(candidate_priority("host"), 2130706431)
        self.assertEqual(candidate_priority("host", 2), 2130706430)
        self.assertEqual(candidate_priority("prflx"), 1862270975)
        self.assertEqual(candidate_priority("srflx"), 1694498815)
        self.assertEqual(candidate_priority("relay"), 16777215)
        self.assertEqual(candidate_priority("host", 1, 0), 2113929471)

    def test_candidate_priority_range(self):
        self.assertRaises(ValueError, candidate_priority, "host", 0)
        self.assertRaises(ValueError, candidate_priority, "host", 257)
        self.assertRaises(ValueError, candidate_priority, "host", 1, 65536)

    def test_pair_priority(self):
        g, d = 2130706431, 1694498815
        self.assertEqual(pair_priority(g, d), (d << 32) + 2 * g + 1)
        self.assertEqual(pair_priority(d, g), (d << 32) + 2 * g)
        self.assertEqual(pair_priority(g, g), (g << 32) + 2 * g)


class ParseCandidateTests(SynchronousTestCase):
    def test_chrome_host(self):
        c = parse_candidate(
            "candidate:842163049 1 udp 2122260223 192.168.1.5 54400 typ host generation 0 ufrag EsAw network-id 1 network-cost 10"
        )
        self.assertEqual(
            (c.foundation, c.component, c.transport, c.priority, c.address, c.port, c.type),
            ("842163049", 1, "udp", 2122260223, "192.168.1.5", 54400, "host"),
        )
        self.assertEqual((c.related_address, c.related_port), (None, None))
        self.assertEqual(c.extensions, (("generation", "0"), ("ufrag", "EsAw"), ("network-id", "1"), ("network-cost", "10")))

    def test_srflx_and_relay(self):
        c = parse_candidate("a=candidate:4 1 UDP 1686052607 203.0.113.7 61000 typ srflx raddr 10.0.0.5 rport 54400")
        self.assertEqual((c.transport, c.type, c.related_address, c.related_port), ("udp", "srflx", "10.0.0.5", 54400))
        c = parse_candidate("1 1 udp 41885439 198.51.100.9 3478 typ relay raddr 0.0.0.0 rport 0 generation 0")
        self.assertEqual((c.type, c.priority, c.related_address, c.related_port, c.extensions), ("relay", 41885439, "0.0.0.0", 0, (("generation", "0"),)))

    def test_ipv6_normalised_and_mdns(self):
        c = parse_candidate("1 1 udp 2122262783 2001:DB8:0:0::1 9 typ host")
        self.assertEqual(c.address, "2001:db8::1")
        c = parse_candidate("candidate:1 1 udp 2113937151 0c8f1bbf-4e3a-4e5c-9a9c-5a3c3d6b0a11.local 51888 typ host")
        self.assertEqual(c.address, "0c8f1bbf-4e3a-4e5c-9a9c-5a3c3d6b0a11.local")
        self.assertIsNone(c.ip)

    def test_addressParsedOncePerText(self):
        """A candidate's address text goes through ipaddress once (the
        negotiator checks a candidate, the engine's agent parses it again):
        the same normalised address, the same errors."""
        seen = []
        real = ice.ipaddress.ip_address

        def counting(text):
            seen.append(text)
            return real(text)
        self.patch(ice.ipaddress, "ip_address", counting)
        self.patch(ice, "_ADDRESSES", {})
        for _ in range(3):
            self.assertEqual(parse_candidate("1 1 udp 5 2001:DB8:0:0::7 9 typ host").address,
                             "2001:db8::7")
            self.assertEqual(parse_candidate("1 1 udp 5 203.0.113.7 9 typ host").address,
                             "203.0.113.7")
            self.assertEqual(parse_candidate("1 1 udp 5 host-1.local 9 typ host").address,
                             "host-1.local")
            with self.assertRaises(ValueError) as caught:
                parse_candidate("1 1 udp 5 10.0.0.1/8 9 typ host")
            self.assertEqual(str(caught.exception), "a=candidate: address '10.0.0.1/8' is "
                             "neither an IP address nor a host name")
        self.assertEqual(seen, ["2001:DB8:0:0::7", "203.0.113.7", "host-1.local",
                                "10.0.0.1/8", "10.0.0.1/8", "10.0.0.1/8"])

    def test_tcp(self):
        c = parse_candidate("2 1 tcp 1518280447 192.168.1.5 9 typ host tcptype active")
        self.assertEqual((c.transport, c.extensions), ("tcp", (("tcptype", "active"),)))

    def test_equality(self):
        text = "1 1 udp 5 10.0.0.1 9 typ host"
        self.assertEqual(parse_candidate(text), parse_candidate("candidate:" + text))
        self.assertEqual(hash(parse_candidate(text)), hash(Candidate("1", 1, "udp", 5, "10.0.0.1", 9, "host")))

    def test_errors(self):
        cases = [
            ("1 1 udp 5 10.0.0.1 9 typ", "a=candidate: 7 fields, at least 8 needed"),
            ("f@o 1 udp 5 10.0.0.1 9 typ host", "a=candidate: foundation 'f@o' is not 1-32 ice-chars"),
            ("1 0 udp 5 10.0.0.1 9 typ host", "a=candidate: component 0 outside 1-256"),
            ("1 x udp 5 10.0.0.1 9 typ host", "a=candidate: component 'x' is not a number"),
            ("1 1 udp 0 10.0.0.1 9 typ host", "a=candidate: priority 0 outside 1-2147483647"),
            ("1 1 udp 2147483648 10.0.0.1 9 typ host", "a=candidate: priority 2147483648 outside 1-2147483647"),
            ("1 1 udp -5 10.0.0.1 9 typ host", "a=candidate: priority '-5' is not a number"),
            ("1 1 udp 5 10.0.0.1 65536 typ host", "a=candidate: port 65536 outside 0-65535"),
            ("1 1 udp 5 10.0.0.1 9 type host", "a=candidate: 'typ' expected, got 'type'"),
            ("1 1 udp 5 10.0.0.1 9 typ host raddr", "a=candidate: extension 'raddr' without a value"),
            ("1 1 udp 5 10.0.0.1 9 typ host rport x1", "a=candidate: rport 'x1' is not a number"),
            ("1 1 udp 5 10.0.0.1:9 9 typ host", "a=candidate: address '10.0.0.1:9' is neither an IP address nor a host name"),
            ("1 1 u(p 5 10.0.0.1 9 typ host", "a=candidate: transport 'u(p' is not a token"),
        ]
        for text, reason in cases:
            e = self.assertRaises(ValueError, parse_candidate, text)
            self.assertEqual(str(e), reason, text)
        self.assertRaises(ValueError, parse_candidate, None)

    def test_new_credentials(self):
        ufrag, pwd = ice.new_credentials(random.Random(1))
        self.assertEqual((len(ufrag), len(pwd)), (8, 24))
        self.assertTrue((ufrag + pwd).isalnum())
        self.assertNotEqual(ice.new_credentials(random.Random(2)), (ufrag, pwd))


# --- two agents ---------------------------------------------------------------


class AgentTestBase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.wire = Wire(self.clock)

    def pair_up(self, a_kw=None, b_kw=None, start=True):
        a = Peer(self, self.wire, A_ADDR, A_CRED, **(a_kw or {}))
        b = Peer(self, self.wire, B_ADDR, B_CRED, **(b_kw or {}))
        a.knows(b)
        b.knows(a)
        if start:
            a.agent.start()
            b.agent.start()
        return a, b


class TwoAgentTests(AgentTestBase):
    def test_controlling_controlled(self):
        a, b = self.pair_up({"controlling": True}, {"controlling": False})
        self.assertEqual((a.agent.state, b.agent.state), (CHECKING, CHECKING))
        run(self.clock, 1.0)
        # A checks at 0, answer at 0.02, nominates at the next tick (0.05); B selects
        # when the USE-CANDIDATE request arrives (0.06), A on its answer (0.07)
        self.assertEqual([addr for _, addr in a.selected], [B_ADDR])
        self.assertEqual([addr for _, addr in b.selected], [A_ADDR])
        self.assertAlmostEqual(a.selected[0][0], 0.07, places=9)
        self.assertAlmostEqual(b.selected[0][0], 0.06, places=9)
        self.assertEqual((a.agent.state, b.agent.state), (COMPLETED, COMPLETED))
        self.assertEqual((a.agent.selected, b.agent.selected), (B_ADDR, A_ADDR))
        self.assertEqual(a.agent.pairs(), [(B_ADDR, SUCCEEDED, pair_priority(HOST_PRIORITY, HOST_PRIORITY), True)])
        nominations = [m for _, _, m in self.wire.requests(A_ADDR) if "USE-CANDIDATE" in m.attributes]
        self.assertEqual(len(nominations), 1)
        self.assertEqual([m for _, _, m in self.wire.requests(B_ADDR) if "USE-CANDIDATE" in m.attributes], [])
        ca, cb = a.agent.counters(), b.agent.counters()
        self.assertEqual((ca["checks"], ca["requests"], ca["answered"], ca["responses"]), (2, 1, 1, 2))
        self.assertEqual((cb["checks"], cb["requests"], cb["answered"], cb["responses"]), (1, 2, 2, 1))
        for c in (ca, cb):
            self.assertEqual(sorted(c), sorted(COUNTERS))
            for key in ("malformed", "bad-integrity", "retransmissions", "role-conflicts", "internal-errors", "stray"):
                self.assertEqual(c[key], 0, key)
        self.assertEqual((a.failed, b.failed, a.consent_lost, b.consent_lost), ([], [], [], []))

    def test_authorised(self):
        a, b = self.pair_up({"controlling": True}, {"controlling": False})
        self.assertFalse(a.agent.authorised(B_ADDR))
        run(self.clock, 1.0)
        self.assertTrue(a.agent.authorised(B_ADDR))
        self.assertTrue(b.agent.authorised(A_ADDR))
        self.assertTrue(b.agent.authorised(("127.0.0.1", 40000, 0, 0)[:2]))
        self.assertFalse(a.agent.authorised(("127.0.0.1", 40004)))
        self.assertFalse(a.agent.authorised(("127.0.0.2", 40002)))

    def test_controlled_learns_peer_reflexive(self):
        # B was given only an mDNS name for A (ignored): it learns A from A's check
        a = Peer(self, self.wire, A_ADDR, A_CRED, controlling=True)
        b = Peer(self, self.wire, B_ADDR, B_CRED, controlling=False)
        a.knows(b)
        b.knows(a, ["1 1 udp 2113937151 6f2d0b47-9a3a-4e21-8a4f-1c1e2b3d4f50.local 40000 typ host"])
        self.assertEqual(b.agent.counters()["candidates-ignored"], 1)
        self.assertEqual(b.agent.pairs(), [])
        a.agent.start()
        b.agent.start()
        run(self.clock, 1.0)
        self.assertEqual([addr for _, addr in a.selected], [B_ADDR])
        self.assertEqual([addr for _, addr in b.selected], [A_ADDR])
        # B's pair for A has the priority A's PRIORITY attribute gave (prflx)
        prflx = candidate_priority("prflx")
        self.assertEqual(b.agent.pairs(), [(A_ADDR, SUCCEEDED, pair_priority(prflx, HOST_PRIORITY), True)])
        # B's only check was the triggered one, sent after A's request arrived
        checks = self.wire.requests(B_ADDR)
        self.assertEqual(len(checks), 1)
        self.assertAlmostEqual(checks[0][0], 0.01, places=9)

    def test_checks_wait_for_start(self):
        # B (controlled) answers early checks; its triggered check waits for start()
        a, b = self.pair_up({"controlling": True}, {"controlling": False}, start=False)
        a.agent.start()
        run(self.clock, 0.5)
        self.assertEqual(self.wire.requests(B_ADDR), [])
        # A's check and A's nomination, both answered; A selects on the answer
        self.assertEqual(b.agent.counters()["answered"], 2)
        self.assertEqual(b.agent.state, NEW)
        self.assertEqual([addr for _, addr in a.selected], [B_ADDR])
        self.assertEqual(b.selected, [])
        self.assertFalse(b.agent.authorised(A_ADDR))
        b.agent.start()
        run(self.clock, 1.5)
        # B's triggered check, then the nomination it had seen selects A
        checks = self.wire.requests(B_ADDR)
        self.assertEqual([(t, d) for t, d, m in checks], [(0.5, A_ADDR)])
        self.assertEqual(b.selected, [(0.52, A_ADDR)])
        self.assertTrue(b.agent.authorised(A_ADDR))

    def test_unreachable_candidates(self):
        # B advertises an unreachable host candidate first and its real address as relay
        a = Peer(self, self.wire, A_ADDR, A_CRED, controlling=True)
        b = Peer(self, self.wire, B_ADDR, B_CRED)
        a.knows(
            b,
            [
                "1 1 udp 2130706431 10.9.9.9 5000 typ host",
                "2 1 udp 1694498815 192.0.2.50 6000 typ srflx raddr 10.9.9.9 rport 5000",
                "3 1 udp 16777215 127.0.0.1 40002 typ relay raddr 192.0.2.50 rport 6000",
            ],
        )
        b.knows(a)
        a.agent.start()
        b.agent.start()
        run(self.clock, 5.0)
        first = [(t, d) for t, d, m in self.wire.requests(A_ADDR)][:3]
        # B's check reached A at 0.01: A's check back to B is triggered, so it
        # goes before the srflx pair
        self.assertEqual([d for _, d in first], [("10.9.9.9", 5000), B_ADDR, ("192.0.2.50", 6000)])
        self.assertAlmostEqual(first[1][0], 0.05, places=9)
        self.assertAlmostEqual(first[2][0], 0.10, places=9)
        # the relay pair is valid at 0.07; better pairs are still pending, so A
        # nominates it NOMINATION_DELAY later (1.07) and selects it at 1.09
        self.assertEqual([addr for _, addr in a.selected], [B_ADDR])
        self.assertAlmostEqual(a.selected[0][0], 1.09, places=9)
        self.assertEqual([addr for _, addr in b.selected], [A_ADDR])
        # selecting cancelled the checks still in flight
        self.assertEqual([p[:2] for p in a.agent.pairs()], [(("10.9.9.9", 5000), FAILED), (("192.0.2.50", 6000), FAILED), (B_ADDR, SUCCEEDED)])
        sent_after = [t for t, d, m in self.wire.requests(A_ADDR) if t > 1.2 and d != B_ADDR]
        self.assertEqual(sent_after, [])
        self.assertFalse(a.agent.authorised(("10.9.9.9", 5000)))

    def test_triggered_check_replaces_one_in_progress(self):
        # A's checks are lost until B opens the way (as a NAT does) by checking A at 2.0:
        # A checks again at once instead of waiting for its retransmission at 3.5
        a, b = self.pair_up({"controlling": True}, {}, start=False)
        self.wire.drop = lambda s, d, data: s == A_ADDR and self.clock.seconds() < 2.0
        a.agent.start()
        run(self.clock, 2.0)
        b.agent.start()
        run(self.clock, 10.0)
        times = [t for t, d, m in self.wire.requests(A_ADDR) if t < 2.5]
        self.assertEqual(len(times), 5)
        for got, want in zip(times, [0.0, 0.5, 1.5, 2.01, 2.06]):
            self.assertAlmostEqual(got, want, places=9)
        self.assertAlmostEqual(a.selected[0][0], 2.08, places=9)
        self.assertEqual([addr for _, addr in b.selected], [A_ADDR])
        # the first check was not retransmitted after 2.01, and never timed out
        self.assertEqual(a.agent.counters()["retransmissions"], 2)
        self.assertEqual(a.agent.counters()["check-timeouts"], 0)
        self.assertEqual(a.failed, [])

    def test_both_controlling(self):
        a, b = self.pair_up({"controlling": True, "tie_breaker": 10}, {"controlling": True, "tie_breaker": 20})
        run(self.clock, 2.0)
        # A (smaller tie-breaker) gives way on B's request; B answers A's check with 487
        self.assertEqual((a.agent.controlling, b.agent.controlling), (False, True))
        self.assertEqual([addr for _, addr in a.selected], [B_ADDR])
        self.assertEqual([addr for _, addr in b.selected], [A_ADDR])
        self.assertEqual((a.agent.counters()["role-conflicts"], b.agent.counters()["role-conflicts"]), (2, 1))
        self.assertEqual(a.agent.counters()["errors"], 1)
        nominators = {s for t, s, d, data in self.wire.sent if "USE-CANDIDATE" in stun.decode(data).message.attributes}
        self.assertEqual(nominators, {B_ADDR})

    def test_both_controlled(self):
        a, b = self.pair_up({"controlling": False, "tie_breaker": 10}, {"controlling": False, "tie_breaker": 20})
        run(self.clock, 2.0)
        # B (larger tie-breaker) takes control on A's request; A answers B's check with 487
        self.assertEqual((a.agent.controlling, b.agent.controlling), (False, True))
        self.assertEqual([addr for _, addr in a.selected], [B_ADDR])
        self.assertEqual([addr for _, addr in b.selected], [A_ADDR])
        self.assertEqual((a.agent.counters()["role-conflicts"], b.agent.counters()["role-conflicts"]), (1, 2))
        self.assertEqual(b.agent.counters()["errors"], 1)

    def test_lite(self):
        # B is ICE-lite: it never sends a request, even when told it is controlling
        a, b = self.pair_up({"controlling": True}, {"lite": True, "controlling": True})
        self.assertFalse(b.agent.controlling)
        run(self.clock, 0.015)
        # A's first (non-nominating) check authorises A at B before any nomination
        self.assertTrue(b.agent.authorised(A_ADDR))
        self.assertEqual(b.selected, [])
        run(self.clock, 60.0)
        self.assertEqual([addr for _, addr in a.selected], [B_ADDR])
        self.assertEqual([addr for _, addr in b.selected], [A_ADDR])
        self.assertEqual(self.wire.requests(B_ADDR), [])
        self.assertEqual(b.agent.pairs(), [])
        self.assertEqual(b.agent.counters()["checks"], 0)
        self.assertEqual(b.agent.counters()["consent-checks"], 0)
        # A's consent checks (60 s) are all answered
        self.assertEqual(b.agent.counters()["answered"], b.agent.counters()["requests"])
        self.assertEqual(a.consent_lost, [])

    def test_lite_makes_controlled_peer_control(self):
        a, b = self.pair_up({"controlling": False}, {"lite": True})
        run(self.clock, 2.0)
        self.assertTrue(a.agent.controlling)
        self.assertEqual(b.agent.counters()["role-conflicts"], 1)
        self.assertEqual([addr for _, addr in a.selected], [B_ADDR])
        self.assertEqual([addr for _, addr in b.selected], [A_ADDR])


class TimingTests(AgentTestBase):
    def test_retransmission_and_failure(self):
        a = Peer(self, self.wire, A_ADDR, A_CRED, controlling=True)
        a.agent.set_remote_credentials(*B_CRED)
        a.agent.add_remote_candidate("1 1 udp 2130706431 10.9.9.9 5000 typ host")
        a.agent.start()
        run(self.clock, 39.4)
        times = [t for t, s, d, data in self.wire.sent]
        # RFC 5389 7.2.1: RTO 0.5 s doubling, 7 transmissions, then 16 x RTO
        self.assertEqual(times, [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
        self.assertEqual(len({data for _, _, _, data in self.wire.sent}), 1)
        self.assertEqual(a.failed, [])
        self.assertEqual(a.agent.pairs()[0][1], IN_PROGRESS)
        run(self.clock, 100.0)
        self.assertEqual(a.failed, [39.5])
        self.assertEqual(a.agent.state, FAILED)
        self.assertEqual(a.agent.pairs()[0][1], FAILED)
        c = a.agent.counters()
        self.assertEqual((c["checks"], c["retransmissions"], c["check-timeouts"]), (1, 6, 1))
        self.assertEqual(len(self.wire.sent), 7)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_new_candidate_after_failure(self):
        a = Peer(self, self.wire, A_ADDR, A_CRED, controlling=True)
        b = Peer(self, self.wire, B_ADDR, B_CRED)
        a.agent.set_remote_credentials(*B_CRED)
        a.agent.add_remote_candidate("1 1 udp 2130706431 10.9.9.9 5000 typ host")
        a.agent.start()
        run(self.clock, 40.0)
        self.assertEqual(a.agent.state, FAILED)
        b.knows(a)
        b.agent.start()
        # a trickled candidate reopens the checks
        self.assertTrue(a.agent.add_remote_candidate("2 1 udp 2130706430 127.0.0.1 40002 typ host"))
        self.assertEqual(a.agent.state, CHECKING)
        run(self.clock, 42.0)
        self.assertEqual([addr for _, addr in a.selected], [B_ADDR])
        self.assertEqual(a.failed, [40.0 - 0.5])

    def test_pacing_and_freezing(self):
        a = Peer(self, self.wire, A_ADDR, A_CRED, controlling=True)
        a.agent.set_remote_credentials(*B_CRED)
        for c in (
            "f1 1 udp 2130706431 10.9.9.1 5000 typ host",
            "f1 1 udp 2130706430 10.9.9.2 5000 typ host",
            "f2 1 udp 1694498815 10.9.9.3 5000 typ srflx",
        ):
            self.assertTrue(a.agent.add_remote_candidate(c))
        self.assertFalse(a.agent.add_remote_candidate("f3 1 udp 5 10.9.9.1 5000 typ host"))  # known address
        self.assertEqual([p[1] for p in a.agent.pairs()], [FROZEN, FROZEN, FROZEN])
        a.agent.start()
        # RFC 8445 6.1.2.6: the best pair of each foundation starts Waiting
        self.assertEqual([p[1] for p in a.agent.pairs()], [WAITING, FROZEN, WAITING])
        run(self.clock, 0.12)
        firsts = [(t, d) for t, s, d, data in self.wire.sent]
        self.assertEqual([d for _, d in firsts], [("10.9.9.1", 5000), ("10.9.9.3", 5000), ("10.9.9.2", 5000)])
        self.assertEqual([t for t, _ in firsts], [0.0, 0.05, 0.1])
        self.assertEqual([p[1] for p in a.agent.pairs()], [IN_PROGRESS, IN_PROGRESS, IN_PROGRESS])

    def test_ignored_candidates(self):
        a = Peer(self, self.wire, A_ADDR, A_CRED)
        for c in (
            "1 2 udp 2130706430 10.9.9.1 5001 typ host",  # component 2
            "1 1 tcp 2130706431 10.9.9.1 9 typ host tcptype active",
            "1 1 udp 2130706431 2001:db8::1 5000 typ host",  # IPv6 for an IPv4 socket
            "1 1 udp 2130706431 a.local 5000 typ host",
            "1 1 udp 2130706431 10.9.9.1 0 typ host",
        ):
            self.assertFalse(a.agent.add_remote_candidate(c))
        self.assertEqual(a.agent.counters()["candidates-ignored"], 5)
        self.assertEqual(a.agent.pairs(), [])
        self.assertRaises(ValueError, a.agent.add_remote_candidate, "garbage")


class ConsentTests(AgentTestBase):
    def test_consent_freshness(self):
        # jitter values 0.0, 0.5, 0.75: intervals 4.0, 5.0, 5.5 s in turn
        a, b = self.pair_up(
            {"controlling": True, "random": FixedRandom(1, (0.0, 0.5, 0.75))},
            {"random": FixedRandom(2, (0.5,))},
        )
        run(self.clock, 45.0)
        selected_at = a.selected[0][0]
        consent = [t for t, d, m in self.wire.requests(A_ADDR) if t > selected_at]
        expected = []
        t = selected_at
        for interval in (4.0, 5.0, 5.5) * 3:
            t += interval
            if t <= 45.0:
                expected.append(t)
        self.assertEqual(len(consent), len(expected))
        for got, want in zip(consent, expected):
            self.assertAlmostEqual(got, want, places=9)
        self.assertEqual(a.agent.counters()["consent-checks"], len(expected))
        self.assertEqual(b.agent.counters()["consent-checks"], 8)  # every 5.0 s after 0.06
        # no retransmissions, no nomination in consent checks
        self.assertEqual([m for t, d, m in self.wire.requests(A_ADDR) if t > selected_at and "USE-CANDIDATE" in m.attributes], [])
        self.assertEqual((a.agent.state, b.agent.state), (COMPLETED, COMPLETED))
        self.assertEqual((a.consent_lost, b.consent_lost), ([], []))
        self.assertEqual([addr for _, addr in a.selected], [B_ADDR])
        # B's answers stop reaching A: A loses consent 30 s after the last answer
        self.wire.drop = lambda s, d, data: s == B_ADDR and stun.decode(data).message.message_class != stun.Class.REQUEST
        run(self.clock, 100.0)
        last = max(
            t
            for t, s, d, data in self.wire.delivered
            if d == A_ADDR and s == B_ADDR and stun.decode(data).message.message_class == stun.Class.RESPONSE
        )
        self.assertLess(last, 45.0)
        self.assertEqual(len(a.consent_lost), 1)
        self.assertAlmostEqual(a.consent_lost[0], last + 30.0, places=9)
        self.assertEqual(a.agent.state, FAILED)
        self.assertFalse(a.agent.authorised(B_ADDR))
        self.assertEqual(a.agent.counters()["consent-lost"], 1)
        # A sends nothing after the loss, but keeps answering B
        self.assertEqual([t for t, d, m in self.wire.requests(A_ADDR) if t > a.consent_lost[0]], [])
        self.assertEqual(b.consent_lost, [])
        self.assertEqual(b.agent.state, COMPLETED)
        self.assertEqual(a.agent.counters()["answered"], a.agent.counters()["requests"])

    def test_long_call(self):
        # a whole 10-minute call: consent never lost on either side
        a, b = self.pair_up({"controlling": True}, {})
        run(self.clock, 600.0)
        self.assertEqual((a.consent_lost, b.consent_lost), ([], []))
        self.assertEqual((a.agent.state, b.agent.state), (COMPLETED, COMPLETED))
        self.assertEqual(a.agent.counters()["consent-checks"], 119)
        self.assertEqual(b.agent.counters()["answered"], 1 + 1 + 119)
        self.assertTrue(a.agent.authorised(B_ADDR))

    def test_answers_browser_checks_indefinitely(self):
        # a lite agent (as towards a browser) answers a check every 5 s for 10 minutes
        sent = []
        agent = IceAgent(self.clock, lambda d, a: sent.append(d), lambda a: None, B_CRED[0], B_CRED[1], lite=True)
        agent.set_remote_credentials(*A_CRED)
        agent.start()
        for i in range(121):
            run(self.clock, i * 5.0)
            request = stun.binding_request(
                bytes([i]) * 12,
                {"USERNAME": "%s:%s" % (B_CRED[0], A_CRED[0]), "PRIORITY": 1, "ICE-CONTROLLING": 1, "USE-CANDIDATE": None},
                B_CRED[1].encode(),
            )
            agent.datagram(request, A_ADDR)
        self.assertEqual(len(sent), 121)
        for i, data in enumerate(sent):
            m = stun.decode(data).message
            self.assertEqual((m.message_class, m.transaction_id), (stun.Class.RESPONSE, bytes([i]) * 12))
        self.assertEqual(agent.selected, A_ADDR)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop(self):
        a, b = self.pair_up({"controlling": True}, {})
        run(self.clock, 10.0)
        a.agent.stop()
        b.agent.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(a.agent.state, CLOSED)
        self.assertFalse(a.agent.authorised(B_ADDR))
        n = len(self.wire.sent)
        a.agent.datagram(self.wire.sent[-1][3], B_ADDR)
        self.assertEqual(len(self.wire.sent), n)
        self.assertFalse(a.agent.add_remote_candidate("9 1 udp 5 10.0.0.9 9 typ host"))


# --- one agent, crafted input ---------------------------------------------------

LOCAL = B_CRED  # the agent under test
REMOTE = A_CRED  # the peer whose messages we craft
SRC = ("192.0.2.10", 50000)


class InputTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.sent = []
        self.selected = []
        self.agent = IceAgent(
            self.clock,
            lambda d, a: self.sent.append((d, a)),
            self.selected.append,
            LOCAL[0],
            LOCAL[1],
            controlling=False,
            tie_breaker=100,
            random=random.Random(7),
        )
        self.agent.set_remote_credentials(*REMOTE)

    def request(self, username=None, key=None, tid=b"t" * 12, extra=None, **attributes):
        attrs = {"USERNAME": username or "%s:%s" % (LOCAL[0], REMOTE[0]), "PRIORITY": 1862270975, "ICE-CONTROLLING": 50}
        attrs.update(attributes)
        attrs = {k: v for k, v in attrs.items() if v is not False}
        data = bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, tid, attrs))
        for atype, value in extra or ():
            data = stun._append(data, atype, value)
        return stun._seal(data, LOCAL[1].encode() if key is None else key)

    def answer(self, data, source=SRC):
        """Feed ``data``; return the decoded reply (or None) and whether it is signed with our password."""
        n = len(self.sent)
        self.assertIsNone(self.agent.datagram(data, source))
        if len(self.sent) == n:
            return None, None
        self.assertEqual(len(self.sent), n + 1)
        reply, dest = self.sent[-1]
        self.assertEqual(dest, source[:2])
        decoded = stun.decode(reply)
        self.assertTrue(decoded.fingerprint)
        signed = decoded.integrity and stun.integrity_ok(decoded.message, reply, LOCAL[1].encode())
        self.assertEqual(decoded.integrity, signed)
        return decoded.message, signed

    def assertError(self, data, code, signed, counter):
        before = self.agent.counters()
        reply, is_signed = self.answer(data)
        self.assertEqual(reply.message_class, stun.Class.ERROR)
        self.assertEqual(reply.attributes["ERROR-CODE"][0], code)
        self.assertEqual(is_signed, signed)
        after = self.agent.counters()
        self.assertEqual(after[counter], before[counter] + 1)
        self.assertEqual(after["answered"], before["answered"])
        return reply

    def assertDropped(self, data, counter):
        before = self.agent.counters()
        self.assertEqual(self.answer(data), (None, None))
        self.assertEqual(self.agent.counters()[counter], before[counter] + 1)

    def test_success(self):
        reply, signed = self.answer(self.request())
        self.assertEqual(reply.message_class, stun.Class.RESPONSE)
        self.assertEqual(reply.transaction_id, b"t" * 12)
        self.assertEqual(reply.attributes["XOR-MAPPED-ADDRESS"], SRC)
        self.assertTrue(signed)
        self.assertEqual(self.agent.counters()["answered"], 1)
        self.assertTrue(self.agent.authorised(SRC) is False)  # answered, but not yet proven by our own check

    def test_ipv6_source(self):
        reply, signed = self.answer(self.request(), ("2001:db8::7", 5004, 0, 0))
        self.assertEqual(reply.attributes["XOR-MAPPED-ADDRESS"], ("2001:db8::7", 5004))

    def test_missing_username(self):
        self.assertError(self.request(USERNAME=False), 400, False, "bad-requests")

    def test_missing_integrity(self):
        data = stun._seal(bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, b"x" * 12, {"USERNAME": "%s:%s" % (LOCAL[0], REMOTE[0])})), None)
        self.assertError(data, 400, False, "bad-requests")

    def test_wrong_ufrag(self):
        self.assertError(self.request(username="nobody:%s" % REMOTE[0]), 401, False, "unauthorised")
        self.assertError(self.request(username="%s:other" % LOCAL[0]), 401, False, "unauthorised")
        self.assertError(self.request(username=LOCAL[0]), 401, False, "unauthorised")

    def test_bad_integrity(self):
        self.assertError(self.request(key=b"not the password"), 401, False, "bad-integrity")
        self.assertEqual(self.agent.counters()["answered"], 0)

    def test_unknown_comprehension_required(self):
        reply = self.assertError(self.request(extra=[(0x0777, b"abcd"), (0x8777, b"ab")]), 420, True, "unknown-attributes")
        data = self.sent[-1][0]
        # UNKNOWN-ATTRIBUTES lists 0x0777 only (0x8777 is comprehension-optional)
        self.assertIn(bytes.fromhex("000a0002077700 00".replace(" ", "")), data)
        self.assertEqual(reply.attributes["ERROR-CODE"], (420, "Unknown Attribute"))

    def test_unknown_optional(self):
        reply, signed = self.answer(self.request(extra=[(0x8777, b"abcd")]))
        self.assertEqual(reply.message_class, stun.Class.RESPONSE)

    def test_missing_priority(self):
        self.assertError(self.request(PRIORITY=False), 400, True, "bad-requests")

    def test_no_fingerprint(self):
        data = self.request()[:-8]
        data = data[:2] + (len(data) - 20).to_bytes(2, "big") + data[4:]
        self.assertDropped(data, "bad-fingerprint")

    def test_bad_fingerprint(self):
        data = self.request()
        self.assertDropped(data[:-1] + bytes([data[-1] ^ 1]), "bad-fingerprint")

    def test_malformed(self):
        good = self.request()
        for data in (
            b"",
            b"\x00",
            good[:19],
            good[:-4],  # length field no longer matches
            good[:2] + b"\x00\x05" + good[4:],  # length not a multiple of 4
            good[:4] + b"\x00\x00\x00\x00" + good[8:],  # no magic cookie
            good[:22] + b"\x0f\xff" + good[24:],  # USERNAME overruns the message
            stun._seal(b"\x03\xff\x00\x00" + good[4:20], None),  # unknown method
            b"\x00\x01\x00\x04!\x12\xa4B" + b"x" * 12 + b"\x00\x24\x00\x00",  # PRIORITY of length 0
        ):
            self.assertDropped(data, "malformed")
        self.assertEqual(self.agent.counters()["malformed"], 9)
        self.assertEqual(self.agent.counters()["requests"], 0)

    def test_other_method(self):
        # an Allocate request (TURN) on a media socket: 400
        data = stun._seal(bytes(stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST, b"a" * 12)), None)
        self.assertError(data, 400, False, "unsupported")
        # an Allocate response: dropped
        data = stun._seal(bytes(stun.Message(stun.Method.ALLOCATE, stun.Class.RESPONSE, b"a" * 12)), None)
        self.assertDropped(data, "unsupported")

    def test_indication(self):
        data = stun._seal(bytes(stun.Message(stun.Method.BINDING, stun.Class.INDICATION, b"i" * 12)), None)
        self.assertDropped(data, "indications")

    def test_stray_response(self):
        data = stun.binding_success(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, b"s" * 12), SRC, REMOTE[1].encode())
        self.assertDropped(data, "stray")

    def test_response_with_bad_integrity(self):
        self.agent.add_remote_candidate("1 1 udp 2130706431 %s %d typ host" % SRC)
        self.agent.start()
        self.clock.advance(0)
        request = stun.decode(self.sent[0][0]).message
        self.assertEqual(request.attributes["USERNAME"], "%s:%s" % (REMOTE[0], LOCAL[0]))
        forged = stun.binding_success(request, SRC, b"wrong")
        self.assertDropped(forged, "bad-integrity")
        # the check goes on: retransmitted at RTO
        self.clock.advance(0.5)
        self.assertEqual(len(self.sent), 2)
        self.assertEqual(self.sent[1][0], self.sent[0][0])
        good = stun.binding_success(request, SRC, REMOTE[1].encode())
        self.assertDropped(good, "responses")
        self.assertEqual(self.agent.pairs()[0][1], SUCCEEDED)
        self.assertTrue(self.agent.authorised(SRC))

    def test_response_from_elsewhere(self):
        # 7.2.5.2.1: a response from another address than the check went to fails the pair
        self.agent.add_remote_candidate("1 1 udp 2130706431 %s %d typ host" % SRC)
        self.agent.start()
        self.clock.advance(0)
        request = stun.decode(self.sent[0][0]).message
        self.agent.datagram(stun.binding_success(request, SRC, REMOTE[1].encode()), ("192.0.2.11", 50000))
        self.assertEqual(self.agent.pairs()[0][1], FAILED)
        self.assertFalse(self.agent.authorised(SRC))

    def test_role_conflict_controlled(self):
        # we are controlled (tie-breaker 100); the peer claims controlled too
        self.assertError(self.request(**{"ICE-CONTROLLING": False, "ICE-CONTROLLED": 200}), 487, True, "role-conflicts")
        self.assertFalse(self.agent.controlling)
        reply, _ = self.answer(self.request(**{"ICE-CONTROLLING": False, "ICE-CONTROLLED": 99}))
        self.assertEqual(reply.message_class, stun.Class.RESPONSE)
        self.assertTrue(self.agent.controlling)
        self.assertEqual(self.agent.counters()["role-conflicts"], 2)

    def test_role_conflict_controlling(self):
        self.agent.controlling = True
        for theirs in (99, 100):  # ours >= theirs: 487
            self.assertError(self.request(**{"ICE-CONTROLLING": theirs}), 487, True, "role-conflicts")
            self.assertTrue(self.agent.controlling)
        reply, _ = self.answer(self.request(**{"ICE-CONTROLLING": 101}))
        self.assertEqual(reply.message_class, stun.Class.RESPONSE)
        self.assertFalse(self.agent.controlling)

    def test_response_with_unknown_attribute(self):
        self.agent.add_remote_candidate("1 1 udp 2130706431 %s %d typ host" % SRC)
        self.agent.start()
        self.clock.advance(0)
        check = stun.decode(self.sent[0][0]).message
        reply = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, check.transaction_id, {"XOR-MAPPED-ADDRESS": SRC})
        data = stun._seal(stun._append(bytes(reply), 0x0777, b"abcd"), REMOTE[1].encode())
        self.assertDropped(data, "unknown-attributes")
        self.assertEqual(self.agent.pairs()[0][1], FAILED)
        self.assertFalse(self.agent.authorised(SRC))

    def test_switch_to_controlling_nominates(self):
        # our check to SRC already succeeded; a conflict makes us controlling: we nominate SRC
        self.agent.add_remote_candidate("1 1 udp 2130706431 %s %d typ host" % SRC)
        self.agent.start()
        self.clock.advance(0)
        check = stun.decode(self.sent[0][0]).message
        self.assertIn("ICE-CONTROLLED", check.attributes)
        self.agent.datagram(stun.binding_success(check, SRC, REMOTE[1].encode()), SRC)
        self.clock.advance(5)
        self.assertEqual(len(self.sent), 1)  # nothing more while controlled
        reply, _ = self.answer(self.request(**{"ICE-CONTROLLING": False, "ICE-CONTROLLED": 1}))
        self.assertEqual(reply.message_class, stun.Class.RESPONSE)
        self.assertTrue(self.agent.controlling)
        self.clock.advance(0)
        nomination = stun.decode(self.sent[-1][0]).message
        self.assertEqual(self.sent[-1][1], SRC)
        self.assertEqual(nomination.attributes["ICE-CONTROLLING"], 100)
        self.assertIn("USE-CANDIDATE", nomination.attributes)
        self.agent.datagram(stun.binding_success(nomination, SRC, REMOTE[1].encode()), SRC)
        self.assertEqual(self.selected, [SRC])

    def test_no_role_conflict(self):
        reply, _ = self.answer(self.request())
        self.assertEqual(self.agent.counters()["role-conflicts"], 0)
        self.assertFalse(self.agent.controlling)

    def test_lite_selects_on_use_candidate(self):
        lite = IceAgent(self.clock, lambda d, a: self.sent.append((d, a)), self.selected.append, LOCAL[0], LOCAL[1], lite=True)
        self.agent = lite
        self.answer(self.request(tid=b"1" * 12))
        self.assertEqual(self.selected, [])
        self.assertTrue(lite.authorised(SRC))
        self.answer(self.request(tid=b"2" * 12, **{"USE-CANDIDATE": None}))
        self.answer(self.request(tid=b"3" * 12, **{"USE-CANDIDATE": None}))
        other = ("192.0.2.20", 50002)
        self.answer(self.request(tid=b"4" * 12, **{"USE-CANDIDATE": None}), other)
        # called again only when the selection changes
        self.assertEqual(self.selected, [SRC, other])
        self.assertEqual(lite.selected, other)
        self.assertEqual(lite.state, COMPLETED)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_send_errors_counted(self):
        def refuse(data, address):
            raise OSError(101, "Network is unreachable")

        agent = IceAgent(self.clock, refuse, self.selected.append, LOCAL[0], LOCAL[1], controlling=True)
        agent.set_remote_credentials(*REMOTE)
        agent.add_remote_candidate("1 1 udp 2130706431 %s %d typ host" % SRC)
        agent.start()
        agent.datagram(self.request(**{"ICE-CONTROLLING": False, "ICE-CONTROLLED": 1}), SRC)
        self.clock.advance(0)
        self.clock.advance(0.5)
        c = agent.counters()
        # the answer, the check and its first retransmission
        self.assertEqual((c["send-errors"], c["checks"], c["retransmissions"], c["internal-errors"]), (3, 1, 1, 0))
        agent.stop()

    def test_callback_error_does_not_escape(self):
        def boom(address):
            raise ZeroDivisionError("callback bug")

        lite = IceAgent(self.clock, lambda d, a: None, boom, LOCAL[0], LOCAL[1], lite=True)
        lite.datagram(self.request(**{"USE-CANDIDATE": None}), SRC)
        self.assertEqual(lite.counters()["internal-errors"], 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_fuzz(self):
        # bit flips, truncations and splices of valid messages: never an exception
        rng = random.Random(1234)
        self.agent.add_remote_candidate("1 1 udp 2130706431 %s %d typ host" % SRC)
        self.agent.start()
        self.clock.advance(0)
        check = stun.decode(self.sent[0][0]).message
        seeds = [
            self.request(),
            self.request(extra=[(0x0777, b"abcd")]),
            stun.binding_success(check, SRC, REMOTE[1].encode()),
            stun.error_response(check, 487, REMOTE[1].encode()),
        ]
        for i in range(3000):
            data = bytearray(rng.choice(seeds))
            op = i % 3
            if op == 0:
                for _ in range(rng.randint(1, 4)):
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            elif op == 1:
                del data[rng.randrange(len(data)) :]
            else:
                pos = rng.randrange(20, len(data))
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            self.agent.datagram(bytes(data), SRC)
            self.clock.advance(0.01)
        self.assertEqual(self.agent.counters()["internal-errors"], 0)
        c = self.agent.counters()
        self.assertGreater(c["malformed"] + c["bad-fingerprint"], 2500)


# --- several local bases (one interface name, several addresses) --------------


class BasesWire(Wire):
    """A :class:`Wire` whose addresses may be further bases of one agent:
    what reaches such an address is handed to that agent with its base."""

    def __init__(self, clock):
        Wire.__init__(self, clock)
        self.bases = {}  # address -> (agent, base)

    def _deliver(self, source, destination, data):
        target = self.bases.get(destination)
        if target is None:
            return Wire._deliver(self, source, destination, data)
        self.delivered.append((self.clock.seconds(), source, destination, data))
        agent, base = target
        agent.datagram(data, source, base)


class MultiBaseTests(SynchronousTestCase):
    """An agent whose component has a socket on each address of the
    interface: pairs per base and family, checks and answers out of the
    base they belong to, the selected pair's base reported."""

    V4 = ("127.0.0.1", 40000)
    V6 = ("::1", 40000)
    PEER6 = ("::1", 50000)

    def setUp(self):
        self.clock = Clock()
        self.wire = BasesWire(self.clock)

    def ours(self, addresses, **kw):
        """Our agent on ``addresses`` (base 0 first)."""
        self.selected = []
        first, rest = addresses[0], addresses[1:]
        agent = IceAgent(
            self.clock, self.wire.sender(first), lambda a: self.selected.append((a, agent.selected_base)),
            A_CRED[0], A_CRED[1], local_address=first, random=FixedRandom(1),
            bases=[(address, self.wire.sender(address)) for address in rest], **kw)
        for base, address in enumerate(addresses):
            self.wire.bases[address] = (agent, base)
            self.wire.agents[address] = agent  # (Wire delivers to known addresses only)
        self.addCleanup(agent.stop)
        self.addCleanup(lambda: self.assertEqual(agent.counters()["internal-errors"], 0))
        return agent

    def candidates(self, addresses):
        """Our a=candidate values (component 1): local preference 65535, 65534, ..."""
        return ["%d 1 udp %d %s %d typ host" % (i, candidate_priority("host", 1, ice.local_preference(i)), a[0], a[1])
                for i, a in enumerate(addresses)]

    def test_local_preference(self):
        self.assertEqual([ice.local_preference(i) for i in range(3)], [65535, 65534, 65533])
        # rtpengine 10.5's figures for the second address
        self.assertEqual(candidate_priority("host", 1, ice.local_preference(1)), 2130706175)
        self.assertEqual(candidate_priority("host", 2, ice.local_preference(1)), 2130706174)

    def test_pairs_by_family(self):
        """A remote IPv6 candidate pairs with the IPv6 base only, an IPv4 one
        with the IPv4 base; the pair's priority uses its base's."""
        agent = self.ours([self.V4, self.V6], controlling=True)
        agent.set_remote_credentials(*B_CRED)
        self.assertTrue(agent.add_remote_candidate("1 1 udp %d ::1 50000 typ host" % HOST_PRIORITY))
        self.assertTrue(agent.add_remote_candidate("2 1 udp %d 127.0.0.1 50000 typ host" % HOST_PRIORITY))
        base6 = candidate_priority("host", 1, 65534)
        self.assertEqual(sorted((p.base, p.address, p.priority) for p in agent._checklist), [
            (0, ("127.0.0.1", 50000), pair_priority(HOST_PRIORITY, HOST_PRIORITY)),
            (1, self.PEER6, pair_priority(base6, HOST_PRIORITY)),
        ])
        self.assertEqual(agent.counters()["candidates-ignored"], 0)

    def test_same_family_pairs_with_every_base(self):
        agent = self.ours([("127.0.0.1", 40000), ("127.0.0.2", 40000)], controlling=True)
        agent.set_remote_credentials(*B_CRED)
        self.assertTrue(agent.add_remote_candidate("1 1 udp %d 127.0.0.9 50000 typ host" % HOST_PRIORITY))
        self.assertEqual([p.base for p in agent._checklist], [0, 1])  # base 0 first: the higher priority
        self.assertEqual(len(agent.pairs()), 2)

    def connect(self, controlling):
        """Us on 127.0.0.1 and ::1, the peer on ::1 only: the pair on our
        second base is the one that works."""
        agent = self.ours([self.V4, self.V6], controlling=controlling)
        peer = Peer(self, self.wire, self.PEER6, B_CRED, controlling=not controlling)
        peer.agent.set_remote_credentials(*A_CRED)
        for c in self.candidates([self.V4, self.V6]):
            peer.agent.add_remote_candidate(c)
        self.assertEqual(peer.agent.counters()["candidates-ignored"], 1)  # our IPv4 one
        agent.set_remote_credentials(*B_CRED)
        agent.add_remote_candidate("1 1 udp %d ::1 50000 typ host" % HOST_PRIORITY)
        agent.start()
        peer.agent.start()
        run(self.clock, 5)
        return agent, peer

    def test_controlling_selects_second_base(self):
        agent, peer = self.connect(controlling=True)
        self.assertEqual(self.selected, [(self.PEER6, 1)])
        self.assertEqual((agent.selected, agent.selected_base, agent.state), (self.PEER6, 1, COMPLETED))
        self.assertEqual([a for _t, a in peer.selected], [self.V6])
        # every request of ours went out of the ::1 socket (the only pair)
        self.assertTrue(self.wire.requests(self.V6))
        self.assertEqual(self.wire.requests(self.V4), [])
        # PRIORITY of our checks: a peer-reflexive candidate with base 1's local preference
        self.assertEqual({m.attributes["PRIORITY"] for _t, _d, m in self.wire.requests(self.V6)},
                         {candidate_priority("prflx", 1, 65534)})
        # consent freshness on the selected pair, from its base
        sent = len(self.wire.requests(self.V6))
        run(self.clock, 20)
        self.assertGreater(len(self.wire.requests(self.V6)), sent)
        self.assertEqual(self.wire.requests(self.V4), [])
        self.assertTrue(agent.authorised(self.PEER6))

    def test_controlled_answers_on_the_base_it_was_asked(self):
        agent, peer = self.connect(controlling=False)
        self.assertEqual(self.selected, [(self.PEER6, 1)])
        answers = [(s, d) for _t, s, d, data in self.wire.sent
                   if stun.decode(data).message.message_class == stun.Class.RESPONSE and d == self.PEER6]
        self.assertTrue(answers)
        self.assertEqual({s for s, _d in answers}, {self.V6})

    def two_bases_one_peer(self):
        """Our controlling agent on two IPv4 bases, and a controlled peer on
        one address that knows both our candidates and we its one."""
        one, two = ("127.0.0.1", 40000), ("127.0.0.2", 40000)
        agent = self.ours([one, two], controlling=True)
        peer_address = ("127.0.0.9", 50000)
        peer = Peer(self, self.wire, peer_address, B_CRED, controlling=False)
        peer.agent.set_remote_credentials(*A_CRED)
        for c in self.candidates([one, two]):
            peer.agent.add_remote_candidate(c)
        agent.set_remote_credentials(*B_CRED)
        agent.add_remote_candidate("1 1 udp %d 127.0.0.9 50000 typ host" % HOST_PRIORITY)
        return one, two, peer_address, agent, peer

    def test_falls_back_to_the_base_that_works(self):
        """Same family on both bases: base 0's pair is better, but when
        nothing gets through from it the pair on base 1 is selected."""
        one, two, peer_address, agent, peer = self.two_bases_one_peer()
        self.wire.drop = lambda source, destination, data: one in (source, destination)
        agent.start()
        peer.agent.start()
        run(self.clock, 60)
        self.assertEqual((agent.selected, agent.selected_base), (peer_address, 1))
        self.assertEqual([a for _t, a in peer.selected], [two])

    def test_prefers_base_zero_when_both_work(self):
        one, two, peer_address, agent, peer = self.two_bases_one_peer()
        agent.start()
        peer.agent.start()
        run(self.clock, 10)
        self.assertEqual((agent.selected, agent.selected_base), (peer_address, 0))
        self.assertEqual([a for _t, a in peer.selected], [one])

    def test_one_base_is_unchanged(self):
        """Without bases: base 0 only, selected_base 0 once selected."""
        agent = self.ours([self.V4], controlling=True)
        self.assertIsNone(agent.selected_base)
        agent.set_remote_credentials(*B_CRED)
        self.assertFalse(agent.add_remote_candidate("1 1 udp %d ::1 50000 typ host" % HOST_PRIORITY))
        self.assertEqual(agent.counters()["candidates-ignored"], 1)
