"""aiortc (a real WebRTC stack) against an engine socket with ICE + DTLS-SRTP.

No negotiator yet: the test writes the offer aiortc answers (our ICE
credentials, our host candidate, the engine certificate's fingerprint,
``a=setup:actpass``, rtcp-mux, PCMU) and configures the engine directly
with the ``ice`` / ``dtls`` keys from aiortc's answer.  aiortc runs on an
asyncio loop in a thread of its own.  The other side is a plain RTP party.
Each side sends a tone (aiortc 880 Hz, the plain party 440 Hz, PCMU) and
the other side must receive it at that frequency (within 15 Hz); the
engine's socket shows ICE completed and DTLS connected.
"""

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from omnirtp.media.dtls import Certificate
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.test.integration.aiortc_peer import (
    PTIME, SAMPLES, Browser, RTCPeerConnection, attribute, frequency_of, tone, ulaw_decode,
    ulaw_encode)
from omnirtp.test.integration.peers import Party, free_port_range
from omnirtp.test.integration.test_ice_aioice import AsyncioThread

try:
    import aioice.ice
except ImportError:  # the setUp check names the missing package
    aioice = None

HOST = "127.0.0.1"
OUR = ("ENGufrag", "ENGpassword0123456789xyz")
CALL = "aiortc-call"


def offer_sdp(port, fingerprint):
    return "\r\n".join([
        "v=0", "o=- 1 1 IN IP4 %s" % HOST, "s=-", "t=0 0",
        "m=audio %d UDP/TLS/RTP/SAVPF 0" % port,
        "c=IN IP4 %s" % HOST,
        "a=mid:0", "a=sendrecv", "a=rtcp-mux", "a=rtpmap:0 PCMU/8000",
        "a=ice-ufrag:%s" % OUR[0], "a=ice-pwd:%s" % OUR[1],
        "a=fingerprint:%s" % fingerprint, "a=setup:actpass",
        "a=candidate:1 1 udp 2130706431 %s %d typ host" % (HOST, port),
        "a=end-of-candidates", ""])


class AiortcTests(TestCase):
    timeout = 60

    def setUp(self):
        if RTCPeerConnection is None or aioice is None:
            raise AssertionError("aiortc is not installed (setup.cfg's test extra)")
        # aioice gathers on every interface but loopback by default: keep
        # aiortc's candidates (and so the engine's checks) on 127.0.0.1
        self.patch(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [HOST])
        self.loop = AsyncioThread()
        self.addCleanup(self.loop.stop)

    @defer.inlineCallbacks
    def until(self, check, what, limit=20.0):
        waited = 0.0
        while True:
            value = yield check()
            if value:
                return value
            if waited >= limit:
                self.fail("%s did not happen" % (what,))
            yield task.deferLater(reactor, 0.1, lambda: None)
            waited += 0.1

    @defer.inlineCallbacks
    def test_tones_both_ways(self):
        cert = Certificate.generate()
        engine = EmbeddedEngine(reactor, {HOST: free_port_range(100)}, certificate=cert)
        self.addCleanup(engine.close)
        a, b = yield engine.allocate(CALL, HOST, 2)
        plain = Party()
        port = reactor.listenUDP(0, plain, interface=HOST)
        self.addCleanup(port.stopListening)

        browser = Browser(880)
        self.addCleanup(lambda: self.loop.run(browser.close()))
        answer = yield self.loop.run(browser.answer(offer_sdp(a, cert.fingerprint())))
        [setup] = attribute(answer, "setup")
        self.assertEqual(setup, "active")  # aiortc answers as the DTLS client
        candidates = [c for c in attribute(answer, "candidate") if " udp " in c.lower()]
        self.assertTrue(candidates, answer)
        yield engine.configure(CALL, [
            {"local": (HOST, a), "peer": (HOST, b), "learning": "delayed", "reset": True,
             "ice": {"ufrag": OUR[0], "pwd": OUR[1],
                     "remote_ufrag": attribute(answer, "ice-ufrag")[0],
                     "remote_pwd": attribute(answer, "ice-pwd")[0],
                     # the offerer controls (RFC 8445 6.1.1); aiortc answered
                     "controlling": True, "lite": False, "component": 1,
                     "candidates": candidates},
             "dtls": {"role": "server", "fingerprint": attribute(answer, "fingerprint")[0]}},
            {"local": (HOST, a + 1), "peer": (HOST, b + 1), "reset": True},
            {"local": (HOST, b), "peer": (HOST, a), "endpoint": plain.address, "reset": True},
            {"local": (HOST, b + 1), "peer": (HOST, a + 1), "reset": True},
        ])

        def dtls_connected():
            def check(stats):
                counters = stats.get(CALL, {}).get((HOST, a), {})
                return counters if counters.get("dtls", {}).get("state") == "connected" else None
            return engine.stats(CALL).addCallback(check)

        counters = yield self.until(dtls_connected, "DTLS connected on the engine's socket")
        self.assertEqual(counters["ice"]["state"], "completed")
        self.assertEqual(counters["endpoint"], counters["ice"]["selected"])

        # the plain party sends 440 Hz PCMU, 20 ms apart, for 2 s
        sent = [0]

        def send_tone():
            seq = sent[0]
            payload = bytes(ulaw_encode(s) for s in tone(440, seq * SAMPLES, SAMPLES))
            header = (bytes([0x80, 0x00]) + seq.to_bytes(2, "big")
                      + (seq * SAMPLES).to_bytes(4, "big") + (0x44004400).to_bytes(4, "big"))
            plain.send(header + payload, (HOST, b))
            sent[0] += 1

        sender = task.LoopingCall(send_tone)
        sender.start(PTIME)
        self.addCleanup(lambda: sender.running and sender.stop())

        def plain_heard():
            audio = [d for d, _ in plain.received if len(d) > 12 and d[1] & 0x7F == 0]
            return defer.succeed(audio if len(audio) >= 50 else None)

        audio = yield self.until(plain_heard, "aiortc's RTP at the plain party")
        samples = [ulaw_decode(x) for packet in audio[10:50] for x in packet[12:]]
        heard = frequency_of(samples)
        self.assertTrue(abs(heard - 880) <= 15, "aiortc's tone arrived at %.1f Hz" % heard)

        def browser_heard():
            return defer.succeed(len(browser.samples) >= 8000 or None)

        yield self.until(browser_heard, "the plain party's tone in aiortc")
        heard = frequency_of(browser.samples[1600:8000])
        self.assertTrue(abs(heard - 440) <= 15, "the plain tone arrived at %.1f Hz" % heard)
        sender.stop()
        stats = (yield engine.stats(CALL))[CALL][(HOST, a)]
        self.assertEqual(stats["transforms"]["srtp-unprotect"]["auth-failures"], 0)
        yield engine.release(CALL)
