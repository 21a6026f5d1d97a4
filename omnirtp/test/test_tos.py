"""The TOS byte of media (option ``tos``, ng key ``TOS``), from the offer to
the socket options.

rtpengine 10.5 keeps one TOS value per call: a new call starts with the
``tos`` option (0 when unset); only an offer changes it (``TOS`` absent or
over 255: back to the option's value; negative: unchanged; else that
value); it applies to every RTP and RTCP socket of the call, IPv4
(``IP_TOS``) and IPv6 (``IPV6_TCLASS``).  ``integration/test_tos.py``
checks the same on the wire against both daemons.
"""

import random
import select
import socket

from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from omnirtp.call.negotiate import Interfaces, Negotiator
from omnirtp.call.registry import CallRegistry, Timeouts
from omnirtp.config.model import InterfaceSpec
from omnirtp.control.commands import Dispatcher
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.relay import MediaPoller, RelaySocket, bind_udp
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor
from omnirtp.test.integration.peers import NO_IPV6, have_ipv6_loopback
from omnirtp.test.test_commands import ANSWER, OFFER
from omnirtp.test.test_registry import CountingEngine

V4 = (socket.IPPROTO_IP, socket.IP_TOS)
V6 = (socket.IPPROTO_IPV6, socket.IPV6_TCLASS)


def sent_tos(sock, v6):
    """The TOS byte / traffic class the kernel puts on what ``sock`` sends."""
    return sock.getsockopt(*(V6 if v6 else V4))


class RealSocketTests(SynchronousTestCase):
    """RelaySocket on real sockets: getsockopt shows what the kernel uses."""

    def relay(self, address):
        reactor = MemoryUDPReactor()
        poller = MediaPoller(reactor)
        self.addCleanup(poller.close)
        sock = bind_udp(address, 0, reuse_port=True)
        port = sock.getsockname()[1]
        companions = []

        def companion(addr, at):
            self.assertEqual((addr, at), (address, port))
            conn = bind_udp(addr, at, reuse_port=True)
            companions.append(conn)
            return conn

        relay = RelaySocket(reactor, sock, (address, port), poller, companion)
        self.addCleanup(relay.close)
        relay.start()
        # the party the companion is connected to
        other = socket.socket(sock.family, socket.SOCK_DGRAM)
        self.addCleanup(other.close)
        other.bind((address, 0))
        return relay, sock, companions, other, poller

    def check(self, address, v6):
        relay, sock, companions, other, poller = self.relay(address)
        endpoint = other.getsockname()[:2]
        self.assertEqual((relay.tos, sent_tos(sock, v6)), (0, 0))
        # set before the companion exists: the companion gets it when bound
        relay.configure(endpoint=None, tos=184)
        self.assertEqual((relay.tos, sent_tos(sock, v6), companions), (184, 184, []))
        relay.configure(endpoint=endpoint, reset=True)
        self.assertEqual(companions, [])  # made by the party's first datagram
        other.sendto(bytes([0x80, 0]) + bytes(10), relay.local)
        for _ in range(100):
            select.select([poller.fileno()], [], [], 0.05)
            poller.doRead()
            if companions:
                break
        self.assertEqual(len(companions), 1)
        self.assertEqual(sent_tos(companions[0], v6), 184)
        # changed while the companion exists: both follow
        relay.configure(endpoint=endpoint, tos=46)
        self.assertEqual((sent_tos(sock, v6), sent_tos(companions[0], v6)), (46, 46))
        # None leaves it as it is; 0 is the kernel's default again
        relay.configure(endpoint=endpoint, tos=None)
        self.assertEqual((relay.tos, sent_tos(sock, v6), sent_tos(companions[0], v6)),
                         (46, 46, 46))
        relay.configure(endpoint=endpoint, tos=0)
        self.assertEqual((relay.tos, sent_tos(sock, v6), sent_tos(companions[0], v6)),
                         (0, 0, 0))
        self.assertEqual(len(companions), 1)

    def test_ipv4(self):
        """IP_TOS on an IPv4 media socket and its connected companion."""
        self.check("127.0.0.1", False)

    def test_ipv6(self):
        """IPV6_TCLASS on an IPv6 media socket and its connected companion
        (skipped only on a host without ::1, where a bind failure is a
        failure)."""
        if not have_ipv6_loopback():
            raise SkipTest(NO_IPV6)
        self.check("::1", True)


class EngineTests(SynchronousTestCase):
    """EmbeddedEngine.configure's ``tos`` key, on fake sockets."""

    def setUp(self):
        self.net = FakeNetwork()
        self.engine = EmbeddedEngine(MemoryUDPReactor(), {"127.0.0.1": (30000, 30009),
                                                          "::1": (32000, 32009)},
                                     bind=self.net.bind, rng=random.Random(1))

    def entries(self, address, port, **extra):
        return [dict(local=(address, p), **extra) for p in (port, port + 1)]

    def options(self, address, port):
        return [self.net.bound[(address, p)].options for p in (port, port + 1)]

    def test_setsRtpAndRtcp(self):
        """``tos`` goes to the RTP and the RTCP socket, per family."""
        [p4] = self.successResultOf(self.engine.allocate("c", "127.0.0.1", 1))
        [p6] = self.successResultOf(self.engine.allocate("c", "::1", 1))
        self.assertEqual(self.options("127.0.0.1", p4), [{}, {}])
        self.successResultOf(self.engine.configure(
            "c", self.entries("127.0.0.1", p4, tos=184) + self.entries("::1", p6, tos=184)))
        self.assertEqual(self.options("127.0.0.1", p4), [{V4: 184}, {V4: 184}])
        self.assertEqual(self.options("::1", p6), [{V6: 184}, {V6: 184}])
        # absent: unchanged
        self.successResultOf(self.engine.configure("c", self.entries("127.0.0.1", p4)))
        self.assertEqual(self.engine.socket(("127.0.0.1", p4)).tos, 184)

    def test_badValueChangesNothing(self):
        """A tos that is not an integer 0-255 fails the whole configure."""
        [port] = self.successResultOf(self.engine.allocate("c", "127.0.0.1", 1))
        for bad in (256, -1, "46", True, 4.0):
            entries = [dict(local=("127.0.0.1", port), tos=46),
                       dict(local=("127.0.0.1", port + 1), tos=bad)]
            f = self.failureResultOf(self.engine.configure("c", entries), ValueError)
            self.assertEqual(str(f.value),
                             "tos must be an integer from 0 to 255, got %r" % (bad,))
            self.assertEqual(self.options("127.0.0.1", port), [{}, {}])


class NegotiatorTests(SynchronousTestCase):
    """Which TOS the negotiator gives a call's sockets (rtpengine's rules)."""

    def setUp(self, tos=46):
        clock = Clock()
        self.engine = CountingEngine(clock, pairs=10)
        registry = CallRegistry(self.engine, clock, Timeouts(timeout=60), max_sessions=-1)
        interfaces = Interfaces([InterfaceSpec("default", "127.0.0.1", None)])
        self.dispatch = Dispatcher(registry, Negotiator(registry, interfaces, tos=tos))

    def request(self, command, call_id="c1", **extra):
        request = {"command": command, "call-id": call_id, "from-tag": "ft",
                   "sdp": OFFER if command == "offer" else ANSWER}
        if command == "answer":
            request["to-tag"] = "tt"
        request.update(extra)
        reply = self.successResultOf(self.dispatch(request))
        self.assertEqual(reply["result"], "ok")

    def tos(self, call_id="c1"):
        """The one TOS value of every socket the call's last configure set."""
        values = {s["tos"] for key, s in self.engine.configured.items()
                  if key[1] & ~1 in {k[1] for k in self.engine.held[call_id]}}
        self.assertEqual(len(values), 1, values)
        return values.pop()

    def test_defaultIsTheOption(self):
        """Without TOS a call's media (all 4 sockets) get the ``tos`` option."""
        self.request("offer")
        self.request("answer")
        self.assertEqual(len(self.engine.configured), 4)
        self.assertEqual(self.tos(), 46)

    def test_unsetOptionIsZero(self):
        self.setUp(tos=0)
        self.request("offer")
        self.assertEqual(self.tos(), 0)

    def test_offerSetsItAnswerDoesNot(self):
        """TOS in the offer applies to both directions; in an answer it is ignored."""
        self.request("offer", TOS=184)
        self.request("answer", TOS=32)
        self.assertEqual(len(self.engine.configured), 4)
        self.assertEqual(self.tos(), 184)

    def test_reofferRules(self):
        """A re-offer: negative keeps, absent or over 255 restores the option,
        a string is read as a number; other calls keep theirs."""
        self.request("offer", TOS=184)
        self.request("answer")
        self.request("offer", call_id="c2", TOS=8)
        steps = [({"TOS": -1}, 184), ({}, 46), ({"TOS": "32"}, 32), ({"TOS": 256}, 46),
                 ({"TOS": 0}, 0), ({"TOS": 255}, 255)]
        for extra, want in steps:
            self.request("offer", **dict(extra, **{"to-tag": "tt"}))
            self.assertEqual((extra, self.tos()), (extra, want))
        self.assertEqual(self.tos("c2"), 8)

    def test_rtppFlagsWord(self):
        """Kamailio's ``TOS=184`` flag word in ``rtpp-flags``."""
        self.request("offer", **{"rtpp-flags": "TOS=184"})
        self.assertEqual(self.tos(), 184)
