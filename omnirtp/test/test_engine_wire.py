"""The engine side of ICE and DTLS wiring: EmbeddedEngine's ``ice`` and
``dtls`` configure keys, on fake sockets and a fake clock.

The "browser" is our own IceAgent (full, controlling) and DtlsEndpoint on a
fake socket of the in-memory network, with pylibsrtp sessions made from the
keys its DtlsEndpoint exported; the plain party B is an address nobody
listens on (what the engine sends there is recorded by the network).
"""

import random

import pylibsrtp
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.media.demux import Demux
from omnirtp.media.dtls import Certificate, DtlsEndpoint
from omnirtp.media.engine import EmbeddedEngine, HoldMedia, check_dtls, check_ice
from omnirtp.media.ice import IceAgent
from omnirtp.media.srtp import SUITES, SrtpFactory, parse_crypto
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor

HOST = "127.0.0.1"
BROWSER = ("10.0.0.1", 5000)
INTRUDER = ("10.0.0.9", 5000)
B = ("10.0.0.2", 6000)
OUR = ("OURufrag", "OURpassword0123456789xyz")
THEIR = ("THEIRufr", "THEIRpassword0123456789")
STEP = 0.02

_certs = {}


def cert(name):
    if name not in _certs:
        _certs[name] = Certificate.generate()
    return _certs[name]


def rtp(seq, ssrc=0xA1A2A3A4, fill=0x33):
    return (bytes([0x80, 0, seq >> 8, seq & 0xFF]) + (seq * 160).to_bytes(4, "big")
            + ssrc.to_bytes(4, "big") + bytes((fill + i) & 0xFF for i in range(160)))


def host_candidate(address, foundation="1", component=1):
    return "%s %d udp 2130706431 %s %d typ host" % (foundation, component, address[0], address[1])


def srtp_session(crypto, outbound):
    suite, master = parse_crypto(crypto)
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(master, kind, srtp_profile=SUITES[suite.name].profile))


class Browser:
    """A WebRTC peer made of our own parts on a fake socket."""

    def __init__(self, net, clock, address, engine_address, engine_fingerprint,
                 certificate=None, role="client", use_dtls=True):
        self.use_dtls = use_dtls
        self.sock = net.bind(*address)
        self.address = address
        self.selected = None
        self.keys = None
        self.failure = None
        self.media = []
        self.agent = IceAgent(clock, self.sock.sendto, self._selected, THEIR[0], THEIR[1],
                              controlling=True, random=random.Random(7))
        self.agent.set_remote_credentials(*OUR)
        self.agent.add_remote_candidate(host_candidate(engine_address))
        self.certificate = certificate or cert("browser")
        self.dtls = DtlsEndpoint(role, self.certificate, engine_fingerprint,
                                 lambda data: self.sock.sendto(data, self.selected),
                                 self._keys, self._failed, clock)
        self.agent.start()

    def _selected(self, address):
        self.selected = address
        if self.use_dtls:
            self.dtls.start()

    def _keys(self, srtp_in, srtp_out):
        self.keys = (srtp_in, srtp_out)
        self.rx = srtp_session(srtp_in, outbound=False)
        self.tx = srtp_session(srtp_out, outbound=True)

    def _failed(self, reason):
        self.failure = reason

    def flush(self):
        while self.sock.inbox:
            data, src = self.sock.inbox.pop(0)
            if data[0] < 4:
                self.agent.datagram(data, src)
            elif 19 < data[0] < 64:
                self.dtls.datagram(data, src)
            else:
                self.media.append((data, src))

    def close(self):
        self.agent.stop()
        self.dtls.close()


class WireTestBase(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(500.0)
        self.net = FakeNetwork()
        self.engine = EmbeddedEngine(
            self.reactor, {HOST: (30000, 30009)}, bind=self.net.bind, rng=random.Random(4),
            transforms={"srtp": SrtpFactory()}, certificate=cert("engine"))
        self.a, self.b = self.successResultOf(self.engine.allocate("c1", HOST, 2))
        self.A = (HOST, self.a)
        self.B = (HOST, self.b)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def ice(self, **extra):
        value = {"ufrag": OUR[0], "pwd": OUR[1], "remote_ufrag": THEIR[0],
                 "remote_pwd": THEIR[1], "controlling": False, "lite": False,
                 "component": 1, "candidates": [host_candidate(BROWSER)]}
        value.update(extra)
        return value

    def entries(self, **a_extra):
        a, b = self.a, self.b
        base = {"learning": "delayed", "reset": True}
        return [
            dict(base, local=(HOST, a), peer=(HOST, b), endpoint=BROWSER, **a_extra),
            dict(base, local=(HOST, a + 1), peer=(HOST, b + 1)),
            dict(base, local=(HOST, b), peer=(HOST, a), endpoint=B),
            dict(base, local=(HOST, b + 1), peer=(HOST, a + 1), endpoint=(B[0], B[1] + 1)),
        ]

    def configure(self, entries):
        return self.successResultOf(self.engine.configure("c1", entries))

    def browser(self, **kw):
        browser = Browser(self.net, self.reactor, BROWSER, self.A,
                          kw.pop("fingerprint", cert("engine").fingerprint()), **kw)
        self.addCleanup(browser.close)
        return browser

    def exchange(self, browser, seconds):
        for _ in range(int(round(seconds / STEP))):
            self.net.pump(self.reactor)
            browser.flush()
            self.net.pump(self.reactor)
            self.reactor.advance(STEP)

    def relay(self):
        return self.engine.socket(self.A)

    def stats(self):
        return self.successResultOf(self.engine.stats("c1"))["c1"]

    def logged(self, word):
        return [e for e in self.events
                if "call_id" in e and word in e.get("log_format", "")]


class IceTests(WireTestBase):
    def browser(self, **kw):
        return WireTestBase.browser(self, use_dtls=False, **kw)

    def test_selected_address_becomes_endpoint(self):
        """Nothing goes to the party before ICE selects an address; then the
        endpoint is the selected address and media flows both ways."""
        self.configure(self.entries(ice=self.ice()))
        relay = self.relay()
        self.assertEqual((relay.endpoint, relay.confirmed), (None, False))
        self.assertIsInstance(relay.other, Demux)
        # B's media has nowhere to go yet (the SDP endpoint is not authorised)
        self.net.inject(self.B, rtp(1, 0xB0B0B0B0), B)
        self.net.pump(self.reactor)
        self.assertEqual(self.net.sent_to(BROWSER), [])
        browser = self.browser()
        self.exchange(browser, 3.0)
        self.assertEqual(browser.selected, self.A)
        self.assertEqual((relay.endpoint, relay.confirmed), (BROWSER, True))
        self.net.inject(self.B, rtp(2, 0xB0B0B0B0), B)
        self.net.pump(self.reactor)
        browser.flush()
        self.assertEqual(browser.media, [(rtp(2, 0xB0B0B0B0), self.A)])
        self.net.inject(self.A, rtp(3), BROWSER)
        self.net.pump(self.reactor)
        self.assertEqual(self.net.sent_to(B), [(rtp(3), self.B)])
        counters = self.stats()[self.A]
        self.assertEqual(counters["ice"]["state"], "completed")
        self.assertEqual(counters["ice"]["selected"], BROWSER)
        self.assertEqual(counters["ice"]["controlling"], False)
        self.assertGreater(counters["ice"]["counters"]["answered"], 0)
        self.assertEqual(counters["datagrams"]["failures"], 0)
        self.assertEqual(counters["endpoint"], BROWSER)

    def test_lite(self):
        """As an ICE-lite agent the engine only answers; the browser's
        nomination selects the address."""
        self.configure(self.entries(ice=self.ice(lite=True)))
        browser = self.browser()
        self.exchange(browser, 3.0)
        relay = self.relay()
        self.assertEqual((relay.endpoint, relay.confirmed), (BROWSER, True))
        ice = self.stats()[self.A]["ice"]
        self.assertEqual((ice["state"], ice["lite"], ice["counters"]["checks"]), ("completed", True, 0))

    def test_unauthorised_source_not_learnt(self):
        """RTP from an address ICE did not authorise is dropped and never
        becomes the endpoint, before and after selection."""
        self.configure(self.entries(ice=self.ice()))
        relay = self.relay()
        self.net.inject(self.A, rtp(1), INTRUDER)
        self.net.pump(self.reactor)
        self.assertEqual((relay.endpoint, relay.errors), (None, 1))
        browser = self.browser()
        self.exchange(browser, 3.0)
        self.net.inject(self.A, rtp(2), INTRUDER)
        self.net.pump(self.reactor)
        self.assertEqual(relay.endpoint, BROWSER)
        self.assertEqual(self.net.sent_to(B), [])
        self.assertEqual((relay.errors, relay.junk), (2, 0))

    def test_consent_lost_stops_media(self):
        """The browser stops answering consent checks: after 30 s the
        engine sends the party nothing more; counted and logged once."""
        self.configure(self.entries(ice=self.ice()))
        browser = self.browser()
        self.exchange(browser, 3.0)
        relay = self.relay()
        self.assertEqual(relay.endpoint, BROWSER)
        browser.agent.stop()
        self.exchange(browser, 31.0)
        self.assertEqual((relay.endpoint, relay.confirmed), (None, False))
        counters = self.stats()[self.A]
        self.assertEqual(counters["wire"]["consent-lost"], 1)
        self.assertEqual(counters["ice"]["state"], "failed")
        browser.media.clear()
        self.net.inject(self.B, rtp(5, 0xB0B0B0B0), B)
        self.net.pump(self.reactor)
        browser.flush()
        self.assertEqual(browser.media, [])
        # nor is anything accepted from it
        self.net.inject(self.A, rtp(6), BROWSER)
        self.net.pump(self.reactor)
        self.assertEqual(self.net.sent_to(B), [])
        [event] = self.logged("consent lost")
        self.assertEqual(event["call_id"], "c1")

    def test_same_credentials_keep_agent_new_candidates_added(self):
        self.configure(self.entries(ice=self.ice()))
        agent = self.engine.wire(self.A).ice
        other = host_candidate(("10.0.0.1", 5002), foundation="2")
        self.configure([{"local": self.A, "peer": self.B,
                         "ice": self.ice(candidates=[host_candidate(BROWSER), other])}])
        self.assertIs(self.engine.wire(self.A).ice, agent)
        self.assertEqual(sorted(p[0] for p in agent.pairs()), [BROWSER, ("10.0.0.1", 5002)])
        # an entry without "ice" leaves it alone
        self.configure([{"local": self.A, "peer": self.B}])
        self.assertIs(self.engine.wire(self.A).ice, agent)

    def test_remote_credentials_later_keep_agent(self):
        self.configure(self.entries(ice=self.ice(remote_ufrag=None, remote_pwd=None)))
        agent = self.engine.wire(self.A).ice
        self.assertIsNone(agent.remote_ufrag)
        self.configure([{"local": self.A, "peer": self.B, "ice": self.ice()}])
        self.assertIs(self.engine.wire(self.A).ice, agent)
        self.assertEqual(agent.remote_ufrag, THEIR[0])

    def test_unknown_remote_credentials_keep_agent(self):
        """A re-offer that does not know the party's credentials yet is no restart."""
        self.configure(self.entries(ice=self.ice()))
        agent = self.engine.wire(self.A).ice
        self.configure([{"local": self.A, "peer": self.B,
                         "ice": self.ice(remote_ufrag=None, remote_pwd=None)}])
        self.assertIs(self.engine.wire(self.A).ice, agent)
        self.assertEqual(self.engine.wire(self.A).ice_params["remote_ufrag"], THEIR[0])
        # the party's new credentials are a restart
        self.configure([{"local": self.A, "peer": self.B,
                         "ice": self.ice(remote_ufrag="NEWufrag", remote_pwd="NEWpassword0123456789")}])
        self.assertIsNot(self.engine.wire(self.A).ice, agent)
        self.assertEqual(agent.state, "closed")

    def test_restart_replaces_agent(self):
        self.configure(self.entries(ice=self.ice()))
        browser = self.browser()
        self.exchange(browser, 3.0)
        old = self.engine.wire(self.A).ice
        self.configure([{"local": self.A, "peer": self.B,
                         "ice": self.ice(ufrag="NEWufrag", pwd="NEWpassword0123456789xyz")}])
        new = self.engine.wire(self.A).ice
        self.assertIsNot(new, old)
        self.assertEqual((old.state, new.local_ufrag), ("closed", "NEWufrag"))
        # media stays on the old address until the new agent selects one
        self.assertEqual(self.relay().endpoint, BROWSER)
        self.assertEqual(self.stats()[self.A]["wire"]["ice-restarts"], 1)
        self.assertIs(self.relay().other.stun, new)

    def test_none_removes(self):
        self.configure(self.entries(ice=self.ice()))
        agent = self.engine.wire(self.A).ice
        self.configure([{"local": self.A, "peer": self.B, "endpoint": BROWSER, "ice": None}])
        self.assertEqual(agent.state, "closed")
        self.assertIsNone(self.engine.wire(self.A))
        relay = self.relay()
        self.assertEqual((relay.other, relay.authorise, relay.learning), (None, None, "delayed"))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertNotIn("ice", self.stats()[self.A])
        # plain learning again
        self.net.inject(self.A, rtp(1), INTRUDER)
        self.net.pump(self.reactor)
        self.assertEqual(relay.endpoint, INTRUDER)

    def test_plain_socket_untouched(self):
        """A configuration without ice/dtls leaves sockets as they were."""
        self.configure(self.entries())
        relay = self.relay()
        self.assertEqual((relay.other, relay.authorise, relay.pipeline), (None, None, None))
        self.assertIsNone(self.engine.wire(self.A))
        self.assertNotIn("ice", self.stats()[self.A])


class ValidationTests(WireTestBase):
    def assertRejected(self, entries, words):
        failure = self.failureResultOf(self.engine.configure("c1", entries), ValueError)
        self.assertIn(words, str(failure.value))
        self.assertEqual(self.engine._wires, {})
        relay = self.relay()
        self.assertEqual((relay.other, relay.peer, relay.endpoint), (None, None, None))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_bad_entries_change_nothing(self):
        good = self.ice()
        cases = [
            (dict(good, candidates=["1 1 udp x 10.0.0.1 5000 typ host"]), "candidate"),
            (dict(good, component=3), "component must be 1 or 2"),
            (dict(good, ufrag=""), "ufrag must be a non-empty string"),
            (dict(good, controlling="yes"), "controlling must be true or false"),
            (dict(good, candidates="1 1 udp 1 10.0.0.1 5000 typ host"), "candidates must be a list"),
            ("ice", "must be a dict or None"),
        ]
        for value, words in cases:
            entries = self.entries(ice=good)
            entries[2]["ice"] = value  # the B socket's entry is the bad one
            self.assertRejected(entries, words)
        for value, words in [
            ({"role": "actpass"}, "role must be"),
            ({"role": "server", "fingerprint": "sha-256 AB:CD"}, "fingerprint"),
            ({"role": "server", "fingerprint": "md5 AB:CD"}, "unsupported fingerprint hash"),
        ]:
            entries = self.entries(dtls={"role": "server", "fingerprint": None})
            entries[2]["dtls"] = value
            self.assertRejected(entries, words)

    def test_dtls_needs_certificate(self):
        self.engine.set_certificate(None)
        self.assertRejected(self.entries(dtls={"role": "server", "fingerprint": None}),
                            "no DTLS certificate")

    def test_checks_normalise(self):
        value = check_ice({"ufrag": "u", "pwd": "p", "candidates": [host_candidate(BROWSER)]})
        self.assertEqual((value["remote_ufrag"], value["controlling"], value["lite"],
                          value["component"]), (None, False, False, 1))
        self.assertEqual(value["candidates"][0][1].port, 5000)
        fp = cert("engine").fingerprint()
        self.assertEqual(check_dtls({"role": "client", "fingerprint": fp}),
                         {"role": "client", "fingerprint": fp})


class DtlsTests(WireTestBase):
    def dtls_entries(self, fingerprint=None, role="server"):
        fingerprint = fingerprint or cert("browser").fingerprint()
        return self.entries(ice=self.ice(), dtls={"role": role, "fingerprint": fingerprint})

    def test_handshake_installs_srtp(self):
        """ICE selects, the browser's DTLS client completes with the engine's
        server, and the exported keys carry SRTP both ways."""
        self.configure(self.dtls_entries())
        relay = self.relay()
        # held back until the keys are in: both directions dropped, counted
        self.assertEqual([type(s) for s in relay.inbound + relay.outbound], [HoldMedia, HoldMedia])
        browser = self.browser()
        self.exchange(browser, 3.0)
        self.assertIsNotNone(browser.keys)
        counters = self.stats()[self.A]
        self.assertEqual(counters["dtls"]["state"], "connected")
        self.assertEqual(counters["dtls"]["role"], "server")
        self.assertEqual(counters["dtls"]["failure"], None)
        self.assertEqual(sorted(counters["transforms"]), ["srtp-protect", "srtp-unprotect"])
        wire = self.engine.wire(self.A)
        # the engine's keys are the browser's, the other way round
        self.assertEqual((wire.dtls.srtp_in, wire.dtls.srtp_out), (browser.keys[1], browser.keys[0]))
        # and the state store gets them (a restarted daemon relays on with them)
        self.assertEqual(counters["dtls_srtp"], {"in": browser.keys[1], "out": browser.keys[0],
                                                 "role": "server"})
        self.net.inject(self.A, browser.tx.protect(rtp(1)), BROWSER)
        self.net.pump(self.reactor)
        self.assertEqual(self.net.sent_to(B), [(rtp(1), self.B)])
        self.net.inject(self.B, rtp(2, 0xB0B0B0B0), B)
        self.net.pump(self.reactor)
        browser.flush()
        [(data, src)] = browser.media
        self.assertEqual((browser.rx.unprotect(data), src), (rtp(2, 0xB0B0B0B0), self.A))
        self.assertNotEqual(data, rtp(2, 0xB0B0B0B0))
        [event] = self.logged("established")
        self.assertEqual(event["call_id"], "c1")

    def test_media_held_before_keys(self):
        self.configure(self.dtls_entries())
        relay = self.engine.socket(self.B)
        browser = self.browser()
        # ICE only: the browser's DTLS is not answered yet
        browser.dtls.start = lambda: None
        self.exchange(browser, 3.0)
        self.assertEqual(self.relay().endpoint, BROWSER)
        self.net.inject(self.B, rtp(2, 0xB0B0B0B0), B)
        self.net.inject(self.A, rtp(3), BROWSER)
        self.net.pump(self.reactor)
        browser.flush()
        self.assertEqual((browser.media, self.net.sent_to(B)), ([], []))
        transforms = self.stats()[self.A]["transforms"]
        self.assertEqual(transforms, {"dtls-hold-in": {"dropped": 1}, "dtls-hold-out": {"dropped": 1}})
        self.assertEqual(relay.errors, 1)

    def test_wrong_fingerprint_no_media(self):
        self.configure(self.dtls_entries(fingerprint=cert("engine").fingerprint()))
        browser = self.browser()
        self.exchange(browser, 3.0)
        counters = self.stats()[self.A]
        self.assertEqual(counters["dtls"]["state"], "failed")
        self.assertEqual(counters["dtls"]["failure"], "fingerprint mismatch")
        self.assertEqual(counters["wire"]["dtls-failed"], 1)
        self.assertIsNone(browser.keys)
        self.net.inject(self.B, rtp(2, 0xB0B0B0B0), B)
        self.net.pump(self.reactor)
        browser.flush()
        self.assertEqual(browser.media, [])
        [event] = self.logged("DTLS on")
        self.assertEqual(event["call_id"], "c1")
        self.assertEqual(event["reason"], "fingerprint mismatch")

    def test_client_starts_with_sdp_endpoint_without_ice(self):
        """Without ICE the DTLS client starts at once towards the SDP
        endpoint: its ClientHello goes there, and its retransmission and
        give-up timers run."""
        entries = self.entries(dtls={"role": "client", "fingerprint": cert("browser").fingerprint()})
        entries[0]["learning"] = "off"
        self.configure(entries)
        sent = self.net.sent_to(BROWSER)
        self.assertEqual(len(sent), 1)
        self.assertEqual(sent[0][0][0], 22)  # a DTLS handshake record: the ClientHello
        self.assertEqual(len(self.reactor.getDelayedCalls()), 2)
        self.assertEqual(self.stats()[self.A]["dtls"]["state"], "handshaking")

    def test_fingerprint_later_keeps_endpoint(self):
        self.configure(self.entries(ice=self.ice(), dtls={"role": "server", "fingerprint": None}))
        endpoint = self.engine.wire(self.A).dtls
        self.configure([{"local": self.A, "peer": self.B,
                         "dtls": {"role": "server", "fingerprint": cert("browser").fingerprint()}}])
        self.assertIs(self.engine.wire(self.A).dtls, endpoint)
        browser = self.browser()
        self.exchange(browser, 3.0)
        self.assertEqual(endpoint.state, "connected")
        # an entry that does not know the fingerprint changes nothing
        self.configure([{"local": self.A, "peer": self.B,
                         "dtls": {"role": "server", "fingerprint": None}}])
        self.assertIs(self.engine.wire(self.A).dtls, endpoint)
        self.assertEqual(sorted(self.stats()[self.A]["transforms"]), ["srtp-protect", "srtp-unprotect"])
        # another fingerprint: a new endpoint, media held again
        self.configure([{"local": self.A, "peer": self.B,
                         "dtls": {"role": "server", "fingerprint": cert("engine").fingerprint()}}])
        self.assertIsNot(self.engine.wire(self.A).dtls, endpoint)
        self.assertEqual(sorted(self.stats()[self.A]["transforms"]), ["dtls-hold-in", "dtls-hold-out"])

    def test_dtls_none_restores_srtp_keys(self):
        """srtp_in/srtp_out in force come back when DTLS is removed."""
        from omnirtp.media.srtp import make_crypto

        crypto = make_crypto("AES_CM_128_HMAC_SHA1_80", bytes(range(30)))
        self.configure(self.entries(srtp_in=crypto, srtp_out=crypto,
                                    dtls={"role": "server", "fingerprint": None}))
        self.assertEqual(sorted(self.stats()[self.A]["transforms"]), ["dtls-hold-in", "dtls-hold-out"])
        self.configure([{"local": self.A, "peer": self.B, "dtls": None}])
        self.assertEqual(sorted(self.stats()[self.A]["transforms"]), ["srtp-protect", "srtp-unprotect"])
        self.assertIsNone(self.engine.wire(self.A))


class LifecycleTests(WireTestBase):
    def test_release_stops_timers_and_closes(self):
        self.configure(self.entries(ice=self.ice(), dtls={"role": "client", "fingerprint": None}))
        browser = self.browser()
        self.exchange(browser, 3.0)  # ICE selected, the engine's DTLS client started
        browser.close()
        wire = self.engine.wire(self.A)
        agent, endpoint = wire.ice, wire.dtls
        self.assertNotEqual(self.reactor.getDelayedCalls(), [])
        self.successResultOf(self.engine.release("c1"))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual((agent.state, endpoint.state), ("closed", "closed"))
        self.assertEqual(self.engine._wires, {})
        self.assertEqual(sorted(self.net.bound), [BROWSER])  # the engine's sockets are gone

    def test_close_stops_timers(self):
        self.configure(self.entries(ice=self.ice(), dtls={"role": "server", "fingerprint": None}))
        browser = self.browser()
        self.exchange(browser, 1.0)
        browser.close()
        self.assertNotEqual(self.reactor.getDelayedCalls(), [])
        self.engine.close()
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(sorted(self.net.bound), [BROWSER])

    def test_release_notifies_close_does_not(self):
        """A call's end says close_notify to the browser; the engine's
        shutdown does not (the call may go on in a restarted daemon)."""
        for end in ("release", "close"):
            self.setUp()
            self.configure(self.entries(
                ice=self.ice(), dtls={"role": "server", "fingerprint": cert("browser").fingerprint()}))
            browser = self.browser()
            self.exchange(browser, 3.0)
            self.assertIsNotNone(browser.keys)
            before = len(self.net.sent_to(BROWSER))
            if end == "release":
                self.successResultOf(self.engine.release("c1"))
            else:
                self.engine.close()
            alerts = [d for d, _ in self.net.sent_to(BROWSER)[before:] if d[:1] == b"\x15"]
            self.assertEqual(len(alerts), 1 if end == "release" else 0, end)
            browser.close()

    def test_release_some_sockets(self):
        c, = self.successResultOf(self.engine.allocate("c1", HOST, 1))
        self.configure([{"local": (HOST, c), "ice": self.ice()}])
        self.configure(self.entries(ice=self.ice()))
        self.successResultOf(self.engine.release("c1", [(HOST, c)]))
        self.assertIsNone(self.engine.wire((HOST, c)))
        self.assertIsNotNone(self.engine.wire(self.A))


HOST6 = "::1"
BROWSER6 = ("fd00::1", 5000)


class IceBasesTests(WireTestBase):
    """ICE with ``bases``: the socket's port on the interface's other
    address (here ::1) is a further local base of the agent.  The browser
    (on IPv6) is given only our ::1 candidate, as its own family allows."""

    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(500.0)
        self.net = FakeNetwork()
        self.engine = EmbeddedEngine(
            self.reactor, {HOST: (30000, 30009), HOST6: (30000, 30009)}, bind=self.net.bind,
            rng=random.Random(4), transforms={"srtp": SrtpFactory()}, certificate=cert("engine"))
        self.a, self.b = self.successResultOf(self.engine.allocate("c1", HOST, 2))
        self.A = (HOST, self.a)
        self.B = (HOST, self.b)
        # the same port on ::1, as the negotiator claims it
        self.assertEqual(self.successResultOf(self.engine.claim("c1", HOST6, [self.a])), [self.a])
        self.A6 = (HOST6, self.a)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def ice(self, **extra):
        value = WireTestBase.ice(self, candidates=[host_candidate(BROWSER6)], bases=[self.A6])
        value.update(extra)
        return value

    def entries(self, **a_extra):
        out = WireTestBase.entries(self, **a_extra)
        out[0]["endpoint"] = BROWSER6
        return out

    def browser(self, **kw):
        browser = Browser(self.net, self.reactor, BROWSER6, self.A6,
                          kw.pop("fingerprint", cert("engine").fingerprint()), **kw)
        self.addCleanup(browser.close)
        return browser

    def test_media_on_the_second_address(self):
        self.configure(self.entries(ice=self.ice()))
        relay = self.relay()
        browser = self.browser(use_dtls=False)
        self.exchange(browser, 3.0)
        # the browser's checks were answered out of the ::1 socket
        self.assertEqual(browser.selected, self.A6)
        self.assertEqual((relay.endpoint, relay.confirmed, relay.bound), (BROWSER6, True, self.A6))
        self.assertEqual(relay.local, self.A)  # the key stays
        self.net.inject(self.B, rtp(2, 0xB0B0B0B0), B)
        self.net.pump(self.reactor)
        browser.flush()
        self.assertEqual(browser.media, [(rtp(2, 0xB0B0B0B0), self.A6)])
        self.net.inject(self.A6, rtp(3), BROWSER6)
        self.net.pump(self.reactor)
        self.assertEqual(self.net.sent_to(B), [(rtp(3), self.B)])
        counters = self.stats()[self.A]
        self.assertEqual(counters["ice"]["selected"], BROWSER6)
        self.assertEqual(counters["ice"]["selected_base"], self.A6)
        self.assertEqual(counters["ice"]["counters"]["internal-errors"], 0)
        # the IPv4 socket still answers checks (now read by the ::1 socket's relay)
        other = IceAgent(self.reactor, self.net.bind("10.0.0.7", 7000).sendto, lambda a: None,
                         THEIR[0], THEIR[1], controlling=True, random=random.Random(3))
        self.assertIsNot(self.engine.socket(self.A6), relay)
        answered = counters["ice"]["counters"]["answered"]
        other.set_remote_credentials(*OUR)
        other.add_remote_candidate(host_candidate(self.A))
        other.start()
        self.addCleanup(other.stop)
        self.reactor.advance(0)
        self.net.pump(self.reactor)
        self.assertGreater(self.stats()[self.A]["ice"]["counters"]["answered"], answered)
        self.assertTrue([1 for d, src in self.net.sent_to(("10.0.0.7", 7000)) if src == self.A])

    def test_dtls_on_the_second_address(self):
        self.configure(self.entries(
            ice=self.ice(), dtls={"role": "server", "fingerprint": cert("browser").fingerprint()}))
        browser = self.browser()
        self.exchange(browser, 3.0)
        self.assertIsNone(browser.failure)
        self.assertIsNotNone(browser.keys)
        self.net.inject(self.B, rtp(5, 0xB0B0B0B0), B)
        self.net.pump(self.reactor)
        browser.flush()
        [(data, source)] = browser.media
        self.assertEqual(source, self.A6)
        self.assertEqual(browser.rx.unprotect(data), rtp(5, 0xB0B0B0B0))

    def test_unselected_base_relays_nothing(self):
        """RTP arriving on a base that is not the selected one is dropped."""
        self.configure(self.entries(ice=self.ice()))
        browser = self.browser(use_dtls=False)
        self.exchange(browser, 3.0)
        self.net.inject(self.A, rtp(9), BROWSER6)  # (the IPv4 socket: not selected)
        self.net.pump(self.reactor)
        self.assertEqual(self.net.sent_to(B), [])

    def test_release_frees_every_address(self):
        self.configure(self.entries(ice=self.ice()))
        browser = self.browser(use_dtls=False)
        self.exchange(browser, 3.0)
        browser.close()
        self.successResultOf(self.engine.release("c1", [self.A]))
        for key in (self.A, (HOST, self.a + 1), self.A6, (HOST6, self.a + 1)):
            self.assertNotIn(key, self.net.bound)
            self.assertIsNone(self.engine.socket(key))
        self.assertFalse(self.engine.pool(HOST).holds(self.a))
        self.assertFalse(self.engine.pool(HOST6).holds(self.a))
        self.assertTrue(self.engine.pool(HOST).holds(self.b))
        self.successResultOf(self.engine.release("c1"))
        self.assertEqual(sorted(self.net.bound), [BROWSER6])

    def test_release_before_selection(self):
        self.configure(self.entries(ice=self.ice()))
        self.successResultOf(self.engine.release("c1"))
        self.assertEqual(sorted(self.net.bound), [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_ice_removed_goes_back_to_one_base(self):
        self.configure(self.entries(ice=self.ice()))
        browser = self.browser(use_dtls=False)
        self.exchange(browser, 3.0)
        relay = self.relay()
        self.assertEqual(relay.bound, self.A6)
        self.configure([{"local": self.A, "ice": None}])
        self.assertEqual(relay.bound, self.A)
        self.assertIsNone(self.engine.socket(self.A6).other)
        self.assertEqual(self.engine.socket(self.A6).bound, self.A6)

    def test_release_after_ice_dropped(self):
        """The other addresses' pairs go with their pair even once ICE is
        gone from it (they stay bound until then: a later ICE offer uses them)."""
        self.configure(self.entries(ice=self.ice()))
        self.configure([{"local": self.A, "ice": None}])
        self.assertIsNone(self.engine.wire(self.A))
        self.assertIn(self.A6, self.net.bound)
        self.successResultOf(self.engine.release("c1", [self.A]))
        self.assertNotIn(self.A6, self.net.bound)
        self.assertFalse(self.engine.pool(HOST6).holds(self.a))

    def test_bases_added_later_are_no_restart(self):
        """A worker configures a new call before its other addresses' ports
        are bound, then again with them: a new agent, not an ICE restart."""
        self.configure(self.entries(ice=self.ice(bases=[])))
        self.configure(self.entries(ice=self.ice()))
        self.assertEqual(self.engine.wire(self.A).base_keys, (self.A, self.A6))
        self.assertEqual(self.stats()[self.A]["wire"]["ice-restarts"], 0)
        browser = self.browser(use_dtls=False)
        self.exchange(browser, 3.0)
        self.assertEqual(browser.selected, self.A6)

    def test_bad_base(self):
        for bases in ([(HOST6, 30008)], [self.A], [(HOST6, self.a + 1)], ["x"]):
            failure = self.failureResultOf(self.engine.configure("c1", self.entries(ice=self.ice(bases=bases))))
            failure.trap(ValueError)
            self.assertIsNone(self.engine.wire(self.A))

    def test_check_ice_bases(self):
        self.assertEqual(check_ice(self.ice())["bases"], (self.A6,))
        self.assertEqual(check_ice(WireTestBase.ice(self))["bases"], ())
