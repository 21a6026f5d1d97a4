"""A DTLS-SRTP leg survives SIGKILL and restart (issue 10): aiortc as the
browser, a plain RTP phone, omnirtp (this checkout, twistd) on one
redis-server, signalled over ng with the seed's Kamailio flags for a SIP
phone calling a browser (plus rtcp-mux-offer).

Both sides' RTP sequence numbers start near 65535 (aiortc's patched), so
both SRTP streams are past a rollover (ROC 1) before the kill.  Before it
both tones flow (the phone's 880 Hz heard in aiortc, aiortc's 440 Hz at
the phone) and the daemon has written the SRTP keys its DTLS handshake
exported, and both streams' indexes at ROC 1, to Redis.  After SIGKILL and
a restart on the same ports, the restored call relays both ways again,
with those keys and indexes and no new DTLS handshake (the restarted
daemon logs none; aiortc's DTLS transport stays connected, its ICE
consent checks are answered by the restored agent; its libsrtp takes
what omnirtp protects with ROC 1): each side hears the other's tone
again."""

import json
import signal

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from omnirtp.test import corpus
from omnirtp.test.integration import aiortc_peer
from omnirtp.test.integration.aiortc_peer import (
    Browser, attribute, peak_frequency, send_tone, ulaw_decode)
from omnirtp.test.integration.peers import (
    as_text, free_port, free_port_range, listen_party, start_omnirtp, start_redis)
from omnirtp.test.integration.test_active_active import redis_command
from omnirtp.test.integration.test_daemon import wait_for
from omnirtp.test.integration.test_ice_aioice import AsyncioThread
from omnirtp.test.integration.test_restart import srtp_indexes_of
from omnirtp.test.integration.test_webrtc_e2e import (
    BROWSER_TONE, HOST, PHONE_TONE, SIP_TO_BROWSER_OFFER, TOLERANCE, loopback_only, media,
    phone_sdp)
from omnirtp.test.kamailio import kamailio_dict

try:
    import aioice.ice
except ImportError:  # pragma: no cover - aiortc's dependency
    aioice = None

CALL = "restart-dtls-1"
DB = 6
#: the first RTP sequence number of both sides: past 65535 after 64 packets
START = 0xFFC0


class DtlsRestartTests(TestCase):
    timeout = 120
    extra = ()

    def setUp(self):
        if aiortc_peer.RTCPeerConnection is None or aioice is None:
            raise AssertionError("aiortc is not installed (setup.cfg's test extra)")
        self.patch(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [HOST])
        import aiortc.rtcrtpsender
        self.patch(aiortc.rtcrtpsender, "random_sequence_number", lambda: START)
        self.loop = AsyncioThread()
        self.addCleanup(self.loop.stop)

    def daemon(self):
        return start_omnirtp(self, self.ng_port, self.ports[0], self.ports[1], extra_args=[
            "--redis=127.0.0.1:%d/%d" % (self.redis.port, DB)] + list(self.extra))

    def ng(self, daemon, flags, command, to_tag=None, sdp=None):
        request = kamailio_dict(flags, command, CALL, "ft-" + CALL, to_tag, sdp=sdp)
        return as_text(daemon.ng.request(request))

    def kept(self):
        blob = redis_command(self.redis.port, "EVAL", "redis.call('SELECT', ARGV[1]); "
                             "return redis.call('GET', KEYS[1])", 1, "omnirtp:call:" + CALL, DB)
        if blob is None or b'"dtls_srtp"' not in blob or b'"rtp"' not in blob \
                or json.loads(blob) is None:
            return False
        # and the browser leg's SRTP both ways past the rollover
        for kept in srtp_indexes_of(blob):
            rtp = (kept or {}).get("rtp") or {}
            if (rtp.get("in") and rtp.get("out")
                    and min(rtp["in"].get("rtp", {0: 0}).values()) >= 0x10000
                    and min(rtp["out"].get("rtp", {0: 0}).values()) >= 0x10000):
                return True
        return False

    @defer.inlineCallbacks
    def test_dtlsLegRelaysAfterSigkill(self):
        self.redis = start_redis(self)
        self.ng_port, self.ports = free_port(), free_port_range(40)
        first = self.daemon()
        phone = listen_party(self)
        browser = Browser(BROWSER_TONE, pcmu_only=True)
        self.addCleanup(lambda: self.loop.run(browser.close()))

        offer = self.ng(first, SIP_TO_BROWSER_OFFER, "offer", sdp=phone_sdp(phone.port))
        self.assertEqual(offer["result"], "ok", offer)
        answer = yield self.loop.run(browser.answer(offer["sdp"]))
        answer, removed = loopback_only(answer)
        self.assertEqual(removed, 0, answer)
        self.assertEqual(attribute(answer, "setup"), ["active"])
        reply = self.ng(first, corpus.KAMAILIO_SIP_TO_BROWSER[1], "answer", "tt-" + CALL,
                        sdp=answer)
        self.assertEqual(reply["result"], "ok", reply)
        send_tone(self, phone, (HOST, media(reply["sdp"])[1]), PHONE_TONE, start=START)

        def phone_audio():
            return [d for d, _ in phone.received if len(d) > 12 and d[1] & 0x7F == 0]

        @defer.inlineCallbacks
        def both_hear(audio_from, samples_from):
            yield wait_for(lambda: len(phone_audio()) >= audio_from + 60, timeout=30)
            samples = [ulaw_decode(x) for packet in phone_audio()[audio_from + 20:audio_from + 60]
                       for x in packet[12:]]
            heard = peak_frequency(samples)
            self.assertTrue(abs(heard - BROWSER_TONE) <= TOLERANCE,
                            "aiortc's tone at the phone: %d Hz" % heard)
            yield wait_for(lambda: len(browser.samples) >= samples_from + 8000, timeout=30)
            heard = peak_frequency(browser.samples[samples_from + 4000:samples_from + 8000])
            self.assertTrue(abs(heard - PHONE_TONE) <= TOLERANCE,
                            "the phone's tone in aiortc: %d Hz" % heard)

        yield both_hear(0, 0)
        self.assertIn("DTLS-SRTP", first.log())
        # the registry writes the exported keys with its next sweep (once a
        # second), the indexes once past 65535 (64 packets, 1.3 s)
        yield wait_for(self.kept, timeout=15)

        first.signal(signal.SIGKILL)
        first.wait(10)
        second = yield threads.deferToThread(self.daemon)
        self.assertIn("restored 1 calls from the state store", second.log())
        yield both_hear(len(phone_audio()), len(browser.samples))
        self.assertNotIn("DTLS-SRTP", second.log())  # no handshake: the kept keys
        self.assertNotIn("DTLS on", second.log())  # and no failed one
        state = yield self.loop.run(browser.state())
        self.assertEqual(state, ("completed", "connected"))
        deleted = as_text(second.ng.request({"command": "delete", "call-id": CALL}))
        self.assertEqual(deleted["result"], "ok", deleted)


class DtlsRestartWorkersTests(DtlsRestartTests):
    """The same with two media workers: the keys come to the control
    process with the workers' statistics (AMP), and the workers, left
    without their control process, end their DTLS sessions without
    close_notify (aiortc would close its transport on the alert)."""
    extra = ("--num-threads=2",)
