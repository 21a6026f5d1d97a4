"""ICE + DTLS-SRTP on an engine socket over real UDP on 127.0.0.1.

The engine is configured directly through ``IMediaEngine`` with the
``ice`` and ``dtls`` keys (no SDP), once in-process (``EmbeddedEngine``)
and once through a worker pool of one worker process (the certificate
reaches the worker over AMP).  The "browser" is made of our own parts: a
full, controlling IceAgent, a DtlsEndpoint (client) and pylibsrtp sessions
from the keys it exported, on a real UDP socket; the engine's socket is the
controlled agent and the DTLS server.  The other side is a plain RTP party.
ICE selects, DTLS completes, then RTP flows both ways and every payload is
compared byte for byte.  With a wrong fingerprint the handshake fails: no
media either way, and the failure is in ``stats``.
"""

import pylibsrtp
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from omnirtp.media.dtls import Certificate, DtlsEndpoint
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.ice import IceAgent
from omnirtp.media.pool import WorkerPool
from omnirtp.media.srtp import SUITES, parse_crypto
from omnirtp.test.integration.peers import Party, free_port_range

HOST = "127.0.0.1"
OUR = ("ENGufrag", "ENGpassword0123456789xyz")
THEIR = ("BRWufrag", "BRWpassword0123456789xyz")
CALL = "webrtc-call"

_certs = {}


def cert(name):
    if name not in _certs:
        _certs[name] = Certificate.generate()
    return _certs[name]


def rtp(seq, ssrc, fill):
    payload = bytes((fill + i + seq) & 0xFF for i in range(160))
    return (bytes([0x80, 0x00, seq >> 8 & 0xFF, seq & 0xFF]) + (seq * 160).to_bytes(4, "big")
            + ssrc.to_bytes(4, "big") + payload)


def host_candidate(address):
    return "1 1 udp 2130706431 %s %d typ host" % address


def srtp_session(crypto, outbound):
    suite, master = parse_crypto(crypto)
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(master, kind, srtp_profile=SUITES[suite.name].profile))


class Browser(Party):
    """A WebRTC peer of our own parts: ICE (full, controlling), DTLS client,
    SRTP; what is not STUN or DTLS is recorded as media (``wait``)."""

    def __init__(self, engine_address, engine_fingerprint):
        Party.__init__(self)
        self.engine_address = engine_address
        self.engine_fingerprint = engine_fingerprint
        self.selected = None
        self.keys = defer.Deferred()
        self.agent = self.dtls = None

    def startProtocol(self):
        self.agent = IceAgent(reactor, self.transport.write, self._selected, THEIR[0], THEIR[1],
                              controlling=True)
        self.agent.set_remote_credentials(*OUR)
        self.agent.add_remote_candidate(host_candidate(self.engine_address))
        self.dtls = DtlsEndpoint("client", cert("browser"), self.engine_fingerprint,
                                 self._send_dtls,
                                 self._keys, self._failed, reactor)
        self.agent.start()

    def stopProtocol(self):
        self.agent.stop()
        self.dtls.close()

    def _send_dtls(self, data):
        if self.transport is not None:  # not after the port closed
            self.transport.write(data, self.selected)

    def _selected(self, address):
        self.selected = address
        self.dtls.start()

    def _keys(self, srtp_in, srtp_out):
        self.rx = srtp_session(srtp_in, outbound=False)
        self.tx = srtp_session(srtp_out, outbound=True)
        self.keys.callback((srtp_in, srtp_out))

    def _failed(self, reason):
        self.keys.errback(RuntimeError("browser DTLS failed: %s" % (reason,)))

    def datagramReceived(self, data, addr):
        if data[0] < 4:
            self.agent.datagram(data, addr)
        elif 19 < data[0] < 64:
            self.dtls.datagram(data, addr)
        else:
            Party.datagramReceived(self, data, addr)


class WebRtcEngineMixin:
    """The scenario; subclasses provide ``make_engine(certificate)``."""

    timeout = 60
    SSRC_BROWSER = 0x0A0A0A0A
    SSRC_PLAIN = 0x0B0B0B0B

    def listen(self, protocol):
        port = reactor.listenUDP(0, protocol, interface=HOST)
        self.addCleanup(port.stopListening)
        return protocol

    @defer.inlineCallbacks
    def until(self, engine, predicate, what, limit=20.0):
        """Poll the call's stats until ``predicate(stats)``; fail after ``limit`` s."""
        waited = 0.0
        while True:
            stats = (yield engine.stats(CALL)).get(CALL, {})
            if predicate(stats):
                return stats
            if waited >= limit:
                self.fail("%s did not happen; stats: %r" % (what, stats))
            yield task.deferLater(reactor, 0.05, lambda: None)
            waited += 0.05

    @defer.inlineCallbacks
    def setup_call(self, browser_fingerprint):
        engine = yield self.make_engine(cert("engine"))
        a, b = yield engine.allocate(CALL, HOST, 2)
        self.a, self.b = (HOST, a), (HOST, b)
        plain = self.listen(Party())
        browser = self.listen(Browser(self.a, cert("engine").fingerprint()))
        yield engine.configure(CALL, [
            {"local": self.a, "peer": self.b, "endpoint": browser.address, "learning": "delayed",
             "reset": True,
             "ice": {"ufrag": OUR[0], "pwd": OUR[1], "remote_ufrag": THEIR[0],
                     "remote_pwd": THEIR[1], "controlling": False, "lite": False,
                     "component": 1, "candidates": [host_candidate(browser.address)]},
             "dtls": {"role": "server", "fingerprint": browser_fingerprint}},
            {"local": (HOST, a + 1), "peer": (HOST, b + 1), "reset": True},
            {"local": self.b, "peer": self.a, "endpoint": plain.address, "reset": True},
            {"local": (HOST, b + 1), "peer": (HOST, a + 1), "reset": True},
        ])
        return engine, browser, plain

    @defer.inlineCallbacks
    def test_ice_dtls_srtp_both_ways(self):
        engine, browser, plain = yield self.setup_call(cert("browser").fingerprint())
        yield browser.keys
        self.assertEqual(browser.selected, self.a)
        stats = yield self.until(engine, lambda s: s[self.a].get("dtls", {}).get("state") == "connected",
                                 "the engine's DTLS connected")
        ice = stats[self.a]["ice"]
        self.assertEqual((ice["state"], ice["selected"]), ("completed", browser.address))
        self.assertEqual(stats[self.a]["endpoint"], browser.address)

        # browser -> plain: SRTP in, the exact RTP out
        count = 5
        sent = [rtp(i, self.SSRC_BROWSER, 0x10) for i in range(count)]
        for packet in sent:
            browser.send(browser.tx.protect(packet), self.a)
        got = yield plain.wait(count)
        self.assertEqual(got, [(packet, self.b) for packet in sent])

        # plain -> browser: RTP in, SRTP out that the browser opens to the exact bytes
        sent = [rtp(100 + i, self.SSRC_PLAIN, 0x80) for i in range(count)]
        for packet in sent:
            plain.send(packet, self.b)
        got = yield browser.wait(count)
        self.assertEqual([src for _, src in got], [self.a] * count)
        self.assertNotEqual(got[0][0], sent[0])
        self.assertEqual([browser.rx.unprotect(data) for data, _ in got], sent)

        stats = (yield engine.stats(CALL))[CALL]
        self.assertEqual(stats[self.a]["transforms"]["srtp-unprotect"],
                         {"auth-failures": 0, "replays": 0, "errors": 0})
        self.assertEqual(stats[self.a]["dtls"]["role"], "server")
        self.assertIn(stats[self.a]["dtls"]["profile"], SUITES)
        yield engine.release(CALL)

    @defer.inlineCallbacks
    def test_wrong_fingerprint_no_media(self):
        # the engine expects another certificate than the browser's
        engine, browser, plain = yield self.setup_call(cert("other").fingerprint())
        browser.keys.addErrback(lambda f: None)  # the browser may see an alert
        stats = yield self.until(engine, lambda s: s[self.a].get("dtls", {}).get("state") == "failed",
                                 "the engine's DTLS failed")
        self.assertEqual(stats[self.a]["dtls"]["failure"], "fingerprint mismatch")
        self.assertEqual(stats[self.a]["wire"]["dtls-failed"], 1)
        self.assertEqual(stats[self.a]["ice"]["state"], "completed")
        # plain -> browser: received, held back (counted), nothing reaches the browser
        plain.send(rtp(1, self.SSRC_PLAIN, 0x80), self.b)
        stats = yield self.until(engine, lambda s: s[self.b]["packets"] == 1, "the plain RTP arrived")
        self.assertEqual(stats[self.a]["transforms"]["dtls-hold-out"], {"dropped": 1})
        self.assertEqual(stats[self.b]["errors"], 1)
        self.assertEqual(browser.received, [])
        # browser -> plain: held back too
        browser.send(rtp(2, self.SSRC_BROWSER, 0x10), self.a)
        stats = yield self.until(engine, lambda s: s[self.a]["packets"] == 1, "the browser RTP arrived")
        self.assertEqual(stats[self.a]["transforms"]["dtls-hold-in"], {"dropped": 1})
        self.assertEqual(plain.received, [])
        yield engine.release(CALL)


class EmbeddedWebRtcTests(WebRtcEngineMixin, TestCase):
    """In the control process's reactor (num-threads = 0)."""

    def make_engine(self, certificate):
        engine = EmbeddedEngine(reactor, {HOST: free_port_range(100)}, certificate=certificate)
        self.addCleanup(engine.close)
        return defer.succeed(engine)


class WorkerWebRtcTests(WebRtcEngineMixin, TestCase):
    """Through a worker pool of one worker process (num-threads = 1): the
    certificate crosses AMP to the worker."""

    @defer.inlineCallbacks
    def make_engine(self, certificate):
        pool = WorkerPool(reactor, {HOST: free_port_range(100)}, 1, certificate=certificate)
        pool.startService()
        self.addCleanup(pool.stopService)
        yield pool.whenReady()
        return pool
