"""ICE host candidates on every address of an interface name (as Debian's
rtpengine 10.5 does), through the Dispatcher, the Negotiator and an
EmbeddedEngine on fake sockets and a memory reactor.

rtpengine 10.5 on loopback (checked 2026-12-05, docs/compat.md): with
``interface = 127.0.0.1;::1`` and an offer with ``ICE=force`` it binds a port
pair on each address (each address's next free pair from a pool of its own:
the same number while the pools are in step) and offers component 1 on each
address, then component 2 on each, the c= line's address first with local
preference 65535, the next with 65534; one foundation per address.  Without
ICE a call gets the first address only.  omnirtp claims the same number on
the other addresses wherever it is free there, else takes any free pair.
"""

import random

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.call.negotiate import Interfaces, Negotiator
from omnirtp.call.registry import CallRegistry, Timeouts
from omnirtp.config.model import InterfaceSpec
from omnirtp.control.commands import Dispatcher
from omnirtp.errors import NGError
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor

V4 = "127.0.0.1"
V6 = "::1"
LOW, HIGH = 30000, 30019
SIP = ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
       "m=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def attribute(sdp, name):
    prefix = "a=%s:" % name
    return [line[len(prefix):] for line in sdp.split("\r\n") if line.startswith(prefix)]


def media_port(sdp):
    return [int(line.split()[1]) for line in sdp.split("\r\n") if line.startswith("m=")][0]


class StackTestCase(SynchronousTestCase):
    """The Dispatcher, Negotiator and an EmbeddedEngine on fake sockets,
    with one interface name on ``addresses``."""

    addresses = (V4, V6)

    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(1700000000)
        self.net = FakeNetwork()
        self.engine = EmbeddedEngine(self.reactor, {a: (LOW, HIGH) for a in self.addresses},
                                     bind=self.net.bind, rng=random.Random(5))
        self.configured = []
        real = self.engine.configure_now

        def configure_now(call_id, sockets):
            self.configured.append(sockets)
            return real(call_id, sockets)
        self.engine.configure_now = configure_now
        self.registry = CallRegistry(self.engine, self.reactor,
                                     Timeouts(timeout=60, delete_delay=30), max_sessions=-1)
        self.interfaces = Interfaces([InterfaceSpec("default", a, None) for a in self.addresses])
        self.negotiator = Negotiator(self.registry, self.interfaces)
        self.dispatch = Dispatcher(self.registry, self.negotiator, delete_delay=30)

    def call(self, **request):
        request = {k.replace("_", "-"): v for k, v in request.items()}
        return self.successResultOf(self.dispatch(request))

    def fails(self, **request):
        request = {k.replace("_", "-"): v for k, v in request.items()}
        return self.failureResultOf(self.dispatch(request), NGError).value

    def offer(self, call_id="c1", **kw):
        return self.call(command="offer", call_id=call_id, from_tag="ft", sdp=SIP, **kw)

    def bound(self, address):
        return sorted(port for a, port in self.net.bound if a == address)

    def entry(self, key):
        for sockets in reversed(self.configured):
            for entry in sockets:
                if tuple(entry["local"]) == key:
                    return entry
        raise AssertionError("no entry for %r" % (key,))

    def foundation(self, address):
        [iface] = [i for i in self.interfaces.by_name["default"] if i.address == address]
        return iface.ice_foundation


class IceBasesTests(StackTestCase):

    def test_candidate_on_each_address(self):
        sdp = self.offer(ICE="force")["sdp"]
        port = media_port(sdp)
        self.assertIn("c=IN IP4 %s\r\n" % V4, sdp)
        self.assertEqual(attribute(sdp, "rtcp"), [str(port + 1)])
        f4, f6 = self.foundation(V4), self.foundation(V6)
        self.assertNotEqual(f4, f6)
        self.assertEqual(attribute(sdp, "candidate"), [
            "%s 1 UDP 2130706431 %s %d typ host" % (f4, V4, port),
            "%s 1 UDP 2130706175 %s %d typ host" % (f6, V6, port),
            "%s 2 UDP 2130706430 %s %d typ host" % (f4, V4, port + 1),
            "%s 2 UDP 2130706174 %s %d typ host" % (f6, V6, port + 1),
        ])
        self.assertEqual(self.bound(V6), [port, port + 1])
        self.assertIn(port, self.bound(V4))
        rtp, rtcp = self.entry((V4, port)), self.entry((V4, port + 1))
        self.assertEqual(rtp["ice"]["bases"], [(V6, port)])
        self.assertEqual(rtcp["ice"]["bases"], [(V6, port + 1)])
        self.assertEqual(self.engine.wire((V4, port)).base_keys, ((V4, port), (V6, port)))
        # the offerer (no ICE) faces one address, without bases
        offerer = [e for e in self.configured[-1] if tuple(e["local"])[1] not in (port, port + 1)]
        self.assertTrue(offerer)
        self.assertTrue(all(e["local"][0] == V4 and e.get("ice") is None for e in offerer))

    def test_reoffer_keeps_the_ports(self):
        sdp = self.offer(ICE="force")["sdp"]
        again = self.offer(ICE="force")["sdp"]
        self.assertEqual(attribute(again, "candidate"), attribute(sdp, "candidate"))
        self.assertEqual(len(self.bound(V6)), 2)

    def test_rtcp_mux_only(self):
        """With rtcp-mux required towards the party: component 1 only, on each address."""
        sdp = self.offer(ICE="force", rtcp_mux=["require"])["sdp"]
        port = media_port(sdp)
        self.assertEqual([c.split()[:6] for c in attribute(sdp, "candidate")], [
            [self.foundation(V4), "1", "UDP", "2130706431", V4, str(port)],
            [self.foundation(V6), "1", "UDP", "2130706175", V6, str(port)],
        ])

    def test_without_ice_one_address(self):
        sdp = self.offer()["sdp"]
        self.assertEqual(attribute(sdp, "candidate"), [])
        self.assertEqual(self.bound(V6), [])
        for sockets in self.configured:
            for entry in sockets:
                self.assertEqual(entry["local"][0], V4)

    def test_port_taken_on_the_other_address(self):
        """A port the other address cannot have: that address's next free
        pair (rtpengine 10.5 gave 42002 where 42000 was taken on ::1)."""
        for port in range(LOW, HIGH + 1):
            if port < HIGH - 1:
                self.net.taken.add((V6, port))
        sdp = self.offer(ICE="force")["sdp"]
        port = media_port(sdp)
        cands = [c.split() for c in attribute(sdp, "candidate")]
        self.assertEqual([(c[4], int(c[5])) for c in cands],
                         [(V4, port), (V6, HIGH - 1), (V4, port + 1), (V6, HIGH)])
        self.assertEqual(self.bound(V6), [HIGH - 1, HIGH])
        self.assertEqual(self.entry((V4, port))["ice"]["bases"], [(V6, HIGH - 1)])

    def test_exhausted_on_the_other_address(self):
        """No port left on ::1: the offer fails as an exhausted range does,
        and the new call holds nothing on either address."""
        self.net.taken.update((V6, port) for port in range(LOW, HIGH + 1))
        error = self.fails(command="offer", call_id="c1", from_tag="ft", sdp=SIP, ICE="force")
        self.assertEqual(str(error), "Ran out of ports")
        self.assertEqual(sorted(self.net.bound), [])
        self.assertIsNone(self.registry.get("c1"))
        for address in self.addresses:
            self.assertEqual(self.engine.pool(address).used, 0)

    def test_delete_frees_every_address(self):
        self.offer(ICE="force")
        self.assertTrue(self.bound(V6))
        self.call(command="delete", call_id="c1", delete_delay=0)
        self.assertEqual(sorted(self.net.bound), [])
        for address in self.addresses:
            self.assertEqual(self.engine.pool(address).used, 0)

    def test_many_calls_no_leak(self):
        for i in range(4):
            self.offer(call_id="c%d" % i, ICE="force")
        self.assertEqual(len(self.bound(V6)), 8)
        for i in range(4):
            self.call(command="delete", call_id="c%d" % i, delete_delay=0)
        self.assertEqual(sorted(self.net.bound), [])


class SameFamilyTests(IceBasesTests):
    """``interface = 127.0.0.1;127.0.0.2``: the same with both addresses IPv4."""

    addresses = (V4, "127.0.0.2")

    def test_candidate_on_each_address(self):
        sdp = self.offer(ICE="force")["sdp"]
        port = media_port(sdp)
        two = self.addresses[1]
        self.assertEqual([c.split()[1:6] for c in attribute(sdp, "candidate")], [
            ["1", "UDP", "2130706431", V4, str(port)],
            ["1", "UDP", "2130706175", two, str(port)],
            ["2", "UDP", "2130706430", V4, str(port + 1)],
            ["2", "UDP", "2130706174", two, str(port + 1)],
        ])

    def bound(self, address):
        return StackTestCase.bound(self, self.addresses[1] if address == V6 else address)

    def test_port_taken_on_the_other_address(self):
        for port in range(LOW, HIGH - 1):
            self.net.taken.add((self.addresses[1], port))
        sdp = self.offer(ICE="force")["sdp"]
        self.assertEqual([int(c.split()[5]) for c in attribute(sdp, "candidate")][1::2], [HIGH - 1, HIGH])

    def test_exhausted_on_the_other_address(self):
        self.net.taken.update((self.addresses[1], port) for port in range(LOW, HIGH + 1))
        error = self.fails(command="offer", call_id="c1", from_tag="ft", sdp=SIP, ICE="force")
        self.assertEqual(str(error), "Ran out of ports")
        self.assertEqual(sorted(self.net.bound), [])

    def test_rtcp_mux_only(self):
        sdp = self.offer(ICE="force", rtcp_mux=["require"])["sdp"]
        self.assertEqual([c.split()[4] for c in attribute(sdp, "candidate")], [V4, self.addresses[1]])


class RestoreTests(StackTestCase):
    """A call written to the state store and restored (a restarted daemon,
    a standby taking over) binds its ports on both addresses again."""

    def setUp(self):
        StackTestCase.setUp(self)
        from omnirtp.state.store import MemoryStore
        self.registry.store = self.store = MemoryStore()

    def test_restored_with_every_address(self):
        from omnirtp.state import snapshot
        from omnirtp.state.restore import bind_call
        sdp = self.offer(ICE="force")["sdp"]
        port = media_port(sdp)
        call = self.registry.get("c1")
        [m] = [m for _ml, m in call.all_medias() if m.ice_bases]
        self.assertEqual(m.ice_bases, ((V6, port),))
        restored = snapshot.decode(self.store.calls["c1"], self.interfaces)
        self.registry.forget(call)
        self.successResultOf(self.engine.release("c1"))
        self.assertEqual(sorted(self.net.bound), [])
        self.successResultOf(bind_call(self.engine, self.negotiator, restored))
        self.assertEqual(self.bound(V6), [port, port + 1])
        self.assertEqual(self.engine.wire((V4, port)).base_keys, ((V4, port), (V6, port)))
        self.assertEqual(self.engine.wire((V4, port + 1)).base_keys,
                         ((V4, port + 1), (V6, port + 1)))
        self.successResultOf(self.engine.release("c1"))
        self.assertEqual(sorted(self.net.bound), [])
