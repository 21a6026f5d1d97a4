"""aiortc as the browser, through the whole omnirtp daemon, signalled over ng
exactly as Kamailio 5.6 does for the seed's deployment.

The daemon runs in this process (as in ``test_daemon``) on 127.0.0.1, once
with the embedded engine (``num-threads`` 0) and once with two media
worker processes (``num-threads`` 2).  The ng requests are the dicts
``omnirtp.test.kamailio.kamailio_dict`` builds from the flag strings of
README.md's "WebRTC <-> SIP with Kamailio" (``corpus.KAMAILIO_*``):

(a) SIP phone calls browser: a plain RTP/AVP party (a UDP socket of the
    test sending PCMU) offers; aiortc answers omnirtp's ICE + DTLS +
    RTP/SAVPF offer; the SIP side gets a plain RTP/AVP answer.
(b) browser calls SIP phone: aiortc offers (UDP/TLS/RTP/SAVPF, ICE, DTLS,
    rtcp-mux, BUNDLE); the SIP side sees RTP/AVP and answers plainly;
    aiortc gets ICE, DTLS and rtcp-mux back.

Each side sends a tone (aiortc 440 Hz, the plain party 880 Hz PCMU) and
the other side's received audio must peak within 15 Hz of it.  aiortc's
codec preferences hold PCMU only (no transcoding yet).

Everything stays on loopback: aiortc gets no ICE servers, and the test
replaces aioice's host-address lookup (``aioice.ice.get_host_addresses``)
so that aiortc gathers its host candidate on 127.0.0.1 only (by default
aioice leaves 127.0.0.1 out and uses every other interface).  As a second
guard, any a=candidate line of aiortc's SDP not on 127.0.0.1 would be
stripped before the SDP goes to omnirtp (the test asserts none was there).
"""

import array
import os
import re
import subprocess
import sys
import wave

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from omnirtp.config.model import Config, InterfaceSpec
from omnirtp.control import bencode
from omnirtp.sdp.model import SessionDescription, inspect
from omnirtp.service import build
from omnirtp.test import corpus
from omnirtp.test.integration import aiortc_peer
from omnirtp.test.integration.aiortc_peer import (
    Browser, attribute, peak_frequency, send_tone, ulaw_decode)
from omnirtp.test.integration.peers import ROOT, as_text, free_port_range, listen_party
from omnirtp.test.integration.test_daemon import NGClient, wait_for
from omnirtp.test.integration.test_ice_aioice import AsyncioThread
from omnirtp.test.kamailio import kamailio_dict

try:
    import aioice.ice
except ImportError:  # pragma: no cover - aiortc's dependency
    aioice = None

HOST = "127.0.0.1"
BROWSER_TONE = 440
PHONE_TONE = 880
TOLERANCE = 15
# the seed's INVITE flags plus rtcp-mux-offer: a browser requires rtcp-mux
SIP_TO_BROWSER_OFFER = corpus.KAMAILIO_SIP_TO_BROWSER[0] + " rtcp-mux-offer"


def phone_sdp(port):
    """The SIP phone's plain RTP/AVP PCMU SDP; RTCP on the RTP port."""
    return ("v=0\r\no=phone 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp:%d\r\na=sendrecv\r\n"
            % (HOST, HOST, port, port))


def loopback_only(sdp):
    """``sdp`` without a=candidate lines whose address is not 127.0.0.1;
    returns (sdp, number of lines removed)."""
    kept, removed = [], 0
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:") and line.split()[4] != HOST:
            removed += 1
            continue
        kept.append(line)
    return "\r\n".join(kept), removed


def media(sdp):
    """(transport protocol, port) of the SDP's first m= line."""
    stream = inspect(SessionDescription.parse(sdp))[0]
    proto = re.search(r"^m=audio \d+ (\S+)", sdp, re.M).group(1)
    return proto, stream.rtp[1]


def formats(sdp):
    """The payload types of the SDP's first m= line."""
    return re.search(r"^m=audio \d+ \S+ (.*?)\r?$", sdp, re.M).group(1).split()


class BrowserPhoneTests(TestCase):
    timeout = 90
    num_threads = 0

    @defer.inlineCallbacks
    def setUp(self):
        if aiortc_peer.RTCPeerConnection is None or aioice is None:
            raise AssertionError("aiortc is not installed (setup.cfg's test extra)")
        self.patch(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [HOST])
        self.loop = AsyncioThread()
        self.addCleanup(self.loop.stop)
        ports = free_port_range(200)
        self.spool = os.path.abspath(self.mktemp())
        config = Config(interfaces=(InterfaceSpec("default", HOST, None),),
                        listen_ng=((HOST, 0),), port_min=ports[0], port_max=ports[1],
                        num_threads=self.num_threads, recording_dir=self.spool,
                        recording_format="eth")
        self.service = build(config, reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        ng_service = [s for s in self.service if hasattr(s, "ports")][0]
        yield wait_for(lambda: ng_service.ports)
        host = ng_service.ports[0].getHost()
        self.ng = NGClient((host.host, host.port))
        port = reactor.listenUDP(0, self.ng, interface=HOST)
        self.addCleanup(port.stopListening)

    def kamailio(self, flags, command, call_id, to_tag=None, sdp=None):
        request = kamailio_dict(flags, command, call_id, "ft-" + call_id, to_tag, sdp=sdp)
        # a fresh cookie each time: ng answers a repeated cookie from its cache
        self.ng.seq += 1
        cookie = b"k%d_%d" % (os.getpid(), self.ng.seq)
        d = self.ng.send_raw(cookie + b" " + bencode.encode(request))
        return d.addCallback(lambda raw: as_text(bencode.decode(raw.split(b" ", 1)[1])))

    def phone_sender(self, phone, port):
        """The phone's 880 Hz PCMU towards omnirtp's ``port``, every 20 ms."""
        return send_tone(self, phone, (HOST, port), PHONE_TONE)

    def check_query(self, query, browser_tag, phone_tag, browser_sdp, phone_port):
        """What ng ``query`` shows of the call.  It has no ICE or DTLS state
        (no "ICE"/"DTLS-SRTP" media flags, nothing in the stream stats): the
        browser leg is seen through its protocol, rtcp-mux and an endpoint
        that is aiortc's (only) candidate, confirmed by media."""
        [candidate] = attribute(browser_sdp, "candidate")
        aiortc_rtp = (candidate.split()[4], int(candidate.split()[5]))
        [web] = query["tags"][browser_tag]["medias"]
        # the protocol aiortc itself wrote (it answers RTP/SAVPF with UDP/TLS/RTP/SAVPF)
        self.assertEqual(web["protocol"], "UDP/TLS/RTP/SAVPF")
        self.assertEqual(media(browser_sdp)[0], "UDP/TLS/RTP/SAVPF")
        self.assertIn("rtcp-mux", web["flags"])
        rtp = web["streams"][0]
        self.assertEqual((rtp["endpoint"]["address"], rtp["endpoint"]["port"]), aiortc_rtp)
        self.assertIn("confirmed", rtp["flags"])
        self.assertGreater(rtp["stats"]["packets"], 0)
        [sip] = query["tags"][phone_tag]["medias"]
        self.assertEqual(sip["protocol"], "RTP/AVP")
        self.assertNotIn("rtcp-mux", sip["flags"])
        rtp = sip["streams"][0]
        self.assertEqual((rtp["endpoint"]["address"], rtp["endpoint"]["port"]), (HOST, phone_port))
        self.assertGreater(rtp["stats"]["packets"], 0)

    @defer.inlineCallbacks
    def check_tones(self, browser, phone, call_id):
        def phone_audio():
            return [d for d, _ in phone.received if len(d) > 12 and d[1] & 0x7F == 0]

        yield wait_for(lambda: len(phone_audio()) >= 60, timeout=30)
        samples = [ulaw_decode(x) for packet in phone_audio()[20:60] for x in packet[12:]]
        heard = peak_frequency(samples)
        self.assertTrue(abs(heard - BROWSER_TONE) <= TOLERANCE,
                        "aiortc's %d Hz arrived at the phone as %d Hz" % (BROWSER_TONE, heard))

        yield wait_for(lambda: len(browser.samples) >= 8000, timeout=30)
        heard = peak_frequency(browser.samples[4000:8000])
        self.assertTrue(abs(heard - PHONE_TONE) <= TOLERANCE,
                        "the phone's %d Hz arrived in aiortc as %d Hz" % (PHONE_TONE, heard))
        state = yield self.loop.run(browser.state())
        self.assertEqual(state, ("completed", "connected"))
        query = yield self.ng.request(command="query", call_id=call_id)
        self.assertEqual(query["result"], "ok", query)
        return query

    @defer.inlineCallbacks
    def test_phone_calls_browser(self):
        call_id = "e2e-phone-calls-browser-%d" % self.num_threads
        phone = listen_party(self)
        browser = Browser(BROWSER_TONE, pcmu_only=True)
        self.addCleanup(lambda: self.loop.run(browser.close()))

        # The seed's INVITE flags exactly: no rtcp-mux in the offer towards the
        # browser (as rtpengine 10.5 does, ng-spec.md note 13), which aiortc,
        # like Chrome, refuses.
        probe = call_id + "-seed"
        offer = yield self.kamailio(corpus.KAMAILIO_SIP_TO_BROWSER[0], "offer", probe,
                                    sdp=phone_sdp(phone.port))
        self.assertEqual(offer["result"], "ok", offer)
        self.assertEqual(media(offer["sdp"])[0], "RTP/SAVPF")
        self.assertNotIn("a=rtcp-mux", offer["sdp"])
        refused = Browser(BROWSER_TONE, pcmu_only=True)
        self.addCleanup(lambda: self.loop.run(refused.close()))
        error = yield self.assertFailure(self.loop.run(refused.answer(offer["sdp"])), ValueError)
        self.assertEqual(str(error), "RTCP mux is not enabled")
        deleted = yield self.ng.request(command="delete", call_id=probe, from_tag="ft-" + probe)
        self.assertEqual(deleted["result"], "ok", deleted)

        # so the INVITE flags get rtcp-mux-offer (rtpengine's own WebRTC flag
        # set has rtcp-mux offer+require); the reply flags are the seed's
        offer = yield self.kamailio(SIP_TO_BROWSER_OFFER, "offer", call_id,
                                    sdp=phone_sdp(phone.port))
        self.assertEqual(offer["result"], "ok", offer)
        to_browser = offer["sdp"]
        self.assertEqual(media(to_browser)[0], "RTP/SAVPF")
        self.assertTrue(attribute(to_browser, "ice-ufrag"), to_browser)
        self.assertTrue(attribute(to_browser, "fingerprint"), to_browser)
        self.assertEqual(attribute(to_browser, "setup"), ["actpass"])
        self.assertIn("a=rtcp-mux", to_browser)

        answer = yield self.loop.run(browser.answer(to_browser))
        answer, removed = loopback_only(answer)
        self.assertEqual(removed, 0, answer)
        self.assertEqual(attribute(answer, "setup"), ["active"])
        self.assertEqual(formats(answer), ["0"])
        reply = yield self.kamailio(corpus.KAMAILIO_SIP_TO_BROWSER[1], "answer", call_id,
                                    "tt-" + call_id, sdp=answer)
        self.assertEqual(reply["result"], "ok", reply)
        to_phone = reply["sdp"]
        proto, port = media(to_phone)
        self.assertEqual(proto, "RTP/AVP")
        for name in ("ice-ufrag", "ice-pwd", "candidate", "fingerprint", "setup", "crypto"):
            self.assertEqual(attribute(to_phone, name), [], to_phone)

        self.phone_sender(phone, port)
        query = yield self.check_tones(browser, phone, call_id)
        self.check_query(query, "tt-" + call_id, "ft-" + call_id, answer,
                         phone.port)

    @defer.inlineCallbacks
    def test_browser_calls_phone(self):
        call_id = "e2e-browser-calls-phone-%d" % self.num_threads
        phone = listen_party(self)
        browser = Browser(BROWSER_TONE, pcmu_only=True)
        self.addCleanup(lambda: self.loop.run(browser.close()))

        offer = yield self.loop.run(browser.offer())
        offer, removed = loopback_only(offer)
        self.assertEqual(removed, 0, offer)
        self.assertEqual(media(offer)[0], "UDP/TLS/RTP/SAVPF")
        self.assertIn("a=group:BUNDLE", offer)
        self.assertEqual(formats(offer), ["0"])
        self.assertEqual(attribute(offer, "setup"), ["actpass"])
        self.assertIn("a=rtcp-mux", offer)
        reply = yield self.kamailio(corpus.KAMAILIO_BROWSER_TO_SIP[0], "offer", call_id,
                                    sdp=offer)
        self.assertEqual(reply["result"], "ok", reply)
        to_phone = reply["sdp"]
        proto, port = media(to_phone)
        self.assertEqual(proto, "RTP/AVP")
        for name in ("ice-ufrag", "ice-pwd", "candidate", "fingerprint", "setup", "crypto"):
            self.assertEqual(attribute(to_phone, name), [], to_phone)
        self.assertNotIn("a=rtcp-mux", to_phone)

        reply = yield self.kamailio(corpus.KAMAILIO_BROWSER_TO_SIP[1], "answer", call_id,
                                    "tt-" + call_id, sdp=phone_sdp(phone.port))
        self.assertEqual(reply["result"], "ok", reply)
        to_browser = reply["sdp"]
        self.assertEqual(media(to_browser)[0], "UDP/TLS/RTP/SAVPF")
        self.assertTrue(attribute(to_browser, "ice-ufrag"), to_browser)
        self.assertTrue(attribute(to_browser, "fingerprint"), to_browser)
        self.assertIn("a=rtcp-mux", to_browser)
        self.assertEqual(attribute(to_browser, "setup"), ["active"])
        self.assertEqual(attribute(to_browser, "mid"), ["0"])
        self.assertEqual(formats(to_browser), ["0"])
        [ours] = attribute(to_browser, "candidate")  # rtcp-mux: component 1 only
        parts = ours.split()
        self.assertEqual((parts[1], parts[2].upper(), parts[4], parts[5], parts[6:8]),
                         ("1", "UDP", HOST, str(media(to_browser)[1]), ["typ", "host"]))
        yield self.loop.run(browser.accept(to_browser))
        started = yield self.ng.request(command="start recording", call_id=call_id)
        self.assertEqual(started, {"result": "ok"})

        self.phone_sender(phone, port)
        query = yield self.check_tones(browser, phone, call_id)
        self.check_query(query, "ft-" + call_id, "tt-" + call_id, offer,
                         phone.port)
        yield self.check_recording(call_id)

    @defer.inlineCallbacks
    def check_recording(self, call_id):
        """The call recorded since its answer (``start recording``): the pcap
        holds the browser's DTLS-SRTP leg decrypted and the phone's RTP, two
        PCMU streams that omnirtp-pcap2wav turns into the two tones."""
        from omnirtp.test.integration.test_recording import TSHARK_RTP, peak_frequency, tshark
        stopped = yield self.ng.request(command="stop recording", call_id=call_id)
        self.assertEqual(stopped, {"result": "ok"})
        yield wait_for(lambda: os.listdir(os.path.join(self.spool, "metadata")), timeout=10)
        [name] = os.listdir(os.path.join(self.spool, "pcaps"))
        path = os.path.join(self.spool, "pcaps", name)
        result = yield threads.deferToThread(
            tshark, "-r", path, *TSHARK_RTP, "-q", "-z", "rtp,streams")
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = [line for line in result.stdout.decode().splitlines() if " 0x" in line]
        self.assertEqual((len(rows), all("g711U" in row for row in rows)), (2, True),
                         result.stdout.decode())
        out = path + ".wav"
        result = yield threads.deferToThread(
            subprocess.run, [sys.executable, "-m", "omnirtp.recording.pcap2wav", path, out],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
            env=dict(os.environ, PYTHONPATH=ROOT))
        self.assertEqual(result.returncode, 0, result.stdout)
        with wave.open(out) as w:
            self.assertEqual((w.getnchannels(), w.getframerate()), (2, 8000))
            frames = array.array("h", w.readframes(w.getnframes()))
        heard = []
        for channel in (frames[0::2], frames[1::2]):
            start = next(i for i, v in enumerate(channel) if v) + 800
            heard.append(peak_frequency(list(channel[start:start + 1600]), 8000))
        heard.sort()
        self.assertTrue(abs(heard[0] - BROWSER_TONE) <= TOLERANCE
                        and abs(heard[1] - PHONE_TONE) <= TOLERANCE,
                        "recorded tones %r, played %d and %d" % (heard, BROWSER_TONE, PHONE_TONE))


class WorkerPoolBrowserPhoneTests(BrowserPhoneTests):
    num_threads = 2
