"""Headless Chromium as the browser, through the whole omnirtp daemon; the
calls that ``test_webrtc_chromium`` runs inside a network namespace.

Not a test module of its own (trial collects ``test_*`` modules only):
``test_webrtc_chromium`` makes a network namespace with a real (non-loopback)
interface, because Chromium gathers no ICE candidate on loopback, and runs
one test of ``ChromiumCalls`` there in a child trial.  ``ChromiumCalls``
refuses to run anywhere else.

Inside the namespace: omnirtp (in this process, as in ``test_webrtc_e2e``)
has its media on the namespace's interface address ``NETNS_ADDRESS``, ng on
127.0.0.1; the SIP phone is a UDP socket of the test on 127.0.0.1 sending a
880 Hz PCMU tone; a Twisted web server on 127.0.0.1 serves the page
(``fixtures/chromium/peer.html``) and its signalling; Chromium runs headless
with the fake audio device playing a 440 Hz WAV the test writes.  The ng
requests are the Kamailio 5.6 flag strings of README.md (``corpus.KAMAILIO_*``)
built by ``kamailio_dict``, as in ``test_webrtc_e2e``.

Each test checks what the aiortc test checks: ICE + DTLS-SRTP (Chromium's
own getStats: ICE connected, DTLS connected, an SRTP cipher), plain RTP/AVP on
the SIP leg, and each side hearing the other's tone within 15 Hz.
``test_consent_freshness`` then holds the call for 40 s (longer than RFC
7675's 30 s consent lifetime) and checks that Chromium's consent checks were
answered and that both tones still arrive at the end.  ``WorkerPoolChromiumCalls``
runs the same calls with two media worker processes.

The page keeps RTCPeerConnection's default bundlePolicy ("balanced"): like
rtpengine 10.5, omnirtp writes no a=group:BUNDLE towards the browser, and
Chromium refuses such an offer or answer under "max-bundle".
"""

import json
import math
import os
import signal
import subprocess
import wave

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from omnirtp.config.model import Config, InterfaceSpec
from omnirtp.control import bencode
from omnirtp.service import build
from omnirtp.test import corpus
from omnirtp.test.integration.aiortc_peer import (
    attribute, peak_frequency, send_tone, ulaw_decode)
from omnirtp.test.integration.peers import (
    FIXTURES, LOOPBACK, as_text, free_port_range, listen_party)
from omnirtp.test.integration.test_daemon import NGClient
from omnirtp.test.integration.test_webrtc_e2e import formats, media
from omnirtp.test.kamailio import kamailio_dict

#: set by test_webrtc_chromium in the child trial's environment: the namespace's name
IN_NETNS = "OMNIRTP_TEST_CHROMIUM_NETNS"
#: the address of the namespace's interface (a veth end, or a dummy interface)
NETNS_ADDRESS = "10.200.0.1"
PAGE = os.path.join(FIXTURES, "chromium", "peer.html")
BROWSER_TONE = 440
PHONE_TONE = 880
TOLERANCE = 15
WAV_RATE = 48000
HOLD = 40.0
# Chromium is slow on a loaded machine: generous waits for each event
EVENT_TIMEOUT = 90.0
SIP_TO_BROWSER_OFFER = corpus.KAMAILIO_SIP_TO_BROWSER[0] + " rtcp-mux-offer"
SIP_LEG_ATTRIBUTES = ("ice-ufrag", "ice-pwd", "candidate", "fingerprint", "setup", "crypto")
# the use_srtp profiles omnirtp offers (omnirtp.media.dtls.PROFILES), as getStats names them
SRTP_PROFILES = ("SRTP_AEAD_AES_128_GCM", "SRTP_AES128_CM_HMAC_SHA1_80",
                 "SRTP_AES128_CM_HMAC_SHA1_32")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    # host candidates with their address, not an mDNS name
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--enable-logging=stderr", "--v=0",
)


def write_tone_wav(path, frequency, seconds=1, amplitude=8000):
    """A mono 16-bit WAV of a sine that loops seamlessly (whole periods)."""
    count = WAV_RATE * seconds
    frames = b"".join(
        int(amplitude * math.sin(2 * math.pi * frequency * i / WAV_RATE)).to_bytes(
            2, "little", signed=True) for i in range(count))
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(WAV_RATE)
        out.writeframes(frames)


def phone_sdp(port):
    """The SIP phone's plain RTP/AVP PCMU SDP on 127.0.0.1."""
    return ("v=0\r\no=phone 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp:%d\r\na=sendrecv\r\n"
            % (LOOPBACK, LOOPBACK, port, port))


def udp_candidates(sdp):
    """``(component, address, port, type)`` of each UDP a=candidate line."""
    found = []
    for value in attribute(sdp, "candidate"):
        parts = value.split()
        if parts[2].upper() == "UDP":
            found.append((parts[1], parts[4], int(parts[5]), parts[7]))
    return found


class Signalling(resource.Resource):
    """The page and its signalling (see the comment at the top of peer.html)."""

    isLeaf = True

    def __init__(self):
        resource.Resource.__init__(self)
        self.reset()

    def reset(self):
        self.remote = None  # the SDP for the page
        self.local = None  # the page's SDP
        self.refused = None  # why the page could not take the remote SDP
        self.reports = []
        self.errors = []

    def render_GET(self, request):
        if request.path == b"/":
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            with open(PAGE, "rb") as page:
                return page.read()
        if request.path == b"/remote":
            if self.remote is None:
                request.setResponseCode(204)
                return b""
            request.setHeader(b"content-type", b"text/plain")
            return self.remote.encode()
        request.setResponseCode(404)
        return b""

    def render_POST(self, request):
        body = request.content.read().decode("utf-8", "replace")
        if request.path == b"/local":
            self.local = body
        elif request.path == b"/report":
            self.reports.append(json.loads(body))
        elif request.path == b"/refused":
            self.refused = body
        elif request.path == b"/error":
            self.errors.append(body)
        else:
            request.setResponseCode(404)
        return b""

    def latest(self):
        return self.reports[-1] if self.reports else None


class Site(server.Site):
    """A site that can drop its connections (Chromium keeps them alive)."""

    def __init__(self, *args, **kwargs):
        server.Site.__init__(self, *args, **kwargs)
        self.connections = []

    def buildProtocol(self, addr):
        protocol = server.Site.buildProtocol(self, addr)
        self.connections.append(protocol)
        return protocol

    def close(self):
        for protocol in self.connections:
            if getattr(protocol, "transport", None) is not None:
                protocol.transport.abortConnection()
        return task.deferLater(reactor, 0.1, lambda: None)


class Chromium:
    """One headless Chromium process (and its children, one process group)."""

    def __init__(self, test, url, wav):
        self.test = test
        directory = os.path.abspath(test.mktemp())
        os.makedirs(directory)
        self.log_path = os.path.join(directory, "chromium.log")
        argv = [chromium_binary()] + list(CHROMIUM_FLAGS) + [
            "--user-data-dir=" + os.path.join(directory, "profile"),
            "--use-file-for-fake-audio-capture=" + wav, url]
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        test.addCleanup(self.stop)

    def exited(self):
        return self.process.poll() is not None

    def log_tail(self, size=3000):
        with open(self.log_path, "rb") as log:
            return log.read()[-size:].decode("utf-8", "replace")

    def stop(self):
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        self.log.close()


def chromium_binary():
    for path in ("/usr/bin/chromium", "/usr/lib/chromium/chromium"):
        if os.access(path, os.X_OK):
            return path
    raise AssertionError("chromium is not installed (Debian package chromium; "
                         "`make test` installs it)")


class ChromiumCalls(TestCase):
    """Run by ``test_webrtc_chromium`` inside its network namespace only."""

    timeout = 300
    num_threads = 0

    @defer.inlineCallbacks
    def setUp(self):
        if not os.environ.get(IN_NETNS):
            raise AssertionError("ChromiumCalls runs inside the network namespace that "
                                 "test_webrtc_chromium makes; run that module instead")
        chromium_binary()
        ports = free_port_range(200, address=NETNS_ADDRESS)
        config = Config(interfaces=(InterfaceSpec("default", NETNS_ADDRESS, None),),
                        listen_ng=((LOOPBACK, 0),), port_min=ports[0], port_max=ports[1],
                        num_threads=self.num_threads)
        self.service = build(config, reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        ng_service = [s for s in self.service if hasattr(s, "ports")][0]
        yield self.until(lambda: ng_service.ports, 30, "the ng port")
        host = ng_service.ports[0].getHost()
        self.ng = NGClient((host.host, host.port))
        port = reactor.listenUDP(0, self.ng, interface=LOOPBACK)
        self.addCleanup(port.stopListening)
        self.signalling = Signalling()
        site = Site(self.signalling)
        web = reactor.listenTCP(0, site, interface=LOOPBACK)
        self.addCleanup(site.close)
        self.addCleanup(web.stopListening)
        self.url = "http://localhost:%d/" % web.getHost().port
        self.wav = os.path.abspath(self.mktemp() + ".wav")
        write_tone_wav(self.wav, BROWSER_TONE)
        self.chromium = None

    def launch(self, role):
        self.chromium = Chromium(self, self.url + "?role=" + role, self.wav)

    def until(self, predicate, timeout, what):
        """Wait (polling on the reactor) until ``predicate()`` is true; fail
        early, with the page's error or Chromium's log, if either gave up."""
        return self._until(predicate, timeout, what)

    @defer.inlineCallbacks
    def _until(self, predicate, timeout, what):
        waited = 0.0
        step = 0.1
        while True:
            value = predicate()
            if value:
                return value
            errors = getattr(self, "signalling", None) and self.signalling.errors
            if errors:
                self.fail("the page failed while waiting for %s: %s" % (what, errors[0]))
            if self.chromium is not None and self.chromium.exited():
                self.fail("chromium exited while waiting for %s:\n%s"
                          % (what, self.chromium.log_tail()))
            if waited >= timeout:
                tail = self.chromium.log_tail() if self.chromium else ""
                self.fail("no %s within %.0f s; last report %s\nchromium log:\n%s"
                          % (what, timeout, self.short_report(), tail))
            yield task.deferLater(reactor, step, lambda: None)
            waited += step

    def short_report(self):
        latest = getattr(self, "signalling", None) and self.signalling.latest()
        if not latest:
            return None
        return {k: v for k, v in latest.items() if k != "samples"}

    def kamailio(self, flags, command, call_id, to_tag=None, sdp=None):
        request = kamailio_dict(flags, command, call_id, "ft-" + call_id, to_tag, sdp=sdp)
        self.ng.seq += 1
        cookie = b"c%d_%d" % (os.getpid(), self.ng.seq)
        d = self.ng.send_raw(cookie + b" " + bencode.encode(request))
        return d.addCallback(lambda raw: as_text(bencode.decode(raw.split(b" ", 1)[1])))

    def phone_sender(self, phone, port):
        """The phone's 880 Hz PCMU towards omnirtp's ``port`` (on the
        namespace's address), every 20 ms."""
        send_tone(self, phone, (NETNS_ADDRESS, port), PHONE_TONE)

    def check_sip_leg(self, sdp):
        proto, _ = media(sdp)
        self.assertEqual(proto, "RTP/AVP")
        self.assertEqual(formats(sdp), ["0"])
        for name in SIP_LEG_ATTRIBUTES:
            self.assertEqual(attribute(sdp, name), [], sdp)
        self.assertNotIn("a=rtcp-mux", sdp)

    def check_browser_sdp(self, sdp, proto, setup):
        """Chromium's own SDP: DTLS, ICE, rtcp-mux, PCMU only, one UDP host
        candidate on the namespace's address; returns that (address, port)."""
        self.assertEqual(media(sdp)[0], proto)
        self.assertEqual(formats(sdp), ["0"])
        self.assertEqual(attribute(sdp, "setup"), [setup])
        self.assertIn("a=rtcp-mux", sdp)
        self.assertTrue(attribute(sdp, "ice-ufrag"), sdp)
        self.assertTrue(attribute(sdp, "fingerprint"), sdp)
        hosts = [c for c in udp_candidates(sdp) if c[3] == "host"]
        self.assertEqual([c[:2] for c in hosts], [("1", NETNS_ADDRESS)], sdp)
        return hosts[0][1:3]

    def phone_audio(self, phone):
        return [d for d, _ in phone.received if len(d) > 12 and d[1] & 0x7F == 0]

    def browser_heard(self, report):
        samples = [int(s * 32767) for s in report["samples"]]
        return peak_frequency(samples)

    @defer.inlineCallbacks
    def check_tones(self, phone, after=0, captured_after=0):
        """Both tones arrive: the phone hears 440 Hz in PCMU packets beyond
        the first ``after``, Chromium hears 880 Hz in the audio it captured
        beyond its first ``captured_after`` samples.  Returns Chromium's
        report that showed it."""
        yield self.until(lambda: len(self.phone_audio(phone)) >= after + 60,
                         EVENT_TIMEOUT, "Chromium's audio at the phone")
        audio = self.phone_audio(phone)[after + 20:after + 60]
        heard = peak_frequency([ulaw_decode(x) for packet in audio for x in packet[12:]])
        self.assertTrue(abs(heard - BROWSER_TONE) <= TOLERANCE,
                        "Chromium's %d Hz arrived at the phone as %d Hz" % (BROWSER_TONE, heard))

        # 4000 samples (0.5 s) beyond the start, so the window holds no silence
        # from before the first packet
        def fresh():
            latest = self.signalling.latest()
            if latest and latest["capturedTotal"] >= captured_after + 4000 + 2000 \
                    and len(latest["samples"]) >= 1600:
                return latest
        report = yield self.until(fresh, EVENT_TIMEOUT, "the phone's audio in Chromium")
        heard = self.browser_heard(report)
        self.assertTrue(abs(heard - PHONE_TONE) <= TOLERANCE,
                        "the phone's %d Hz arrived in Chromium as %d Hz" % (PHONE_TONE, heard))
        return report

    def check_secure(self, report, browser_endpoint, port):
        """What Chromium's getStats says of the browser leg: ICE and DTLS
        connected with an SRTP cipher, on its host candidate and omnirtp's
        port; audio sent and received."""
        self.assertEqual((report["ice"], report["connection"]), ("connected", "connected"),
                         self.short_report())
        stats = report["stats"]
        self.assertEqual(stats["transport"]["dtlsState"], "connected")
        # Chromium names the use_srtp profile as RFC 5764 does
        self.assertIn(stats["transport"]["srtpCipher"], SRTP_PROFILES)
        self.assertEqual((stats["local"]["address"], stats["local"]["port"]), browser_endpoint)
        self.assertEqual((stats["remote"]["address"], stats["remote"]["port"]),
                         (NETNS_ADDRESS, port))
        self.assertEqual(stats["pair"]["state"], "succeeded")
        self.assertGreater(stats["inbound"]["packetsReceived"], 0)
        self.assertGreater(stats["outbound"]["packetsSent"], 0)

    @defer.inlineCallbacks
    def check_query(self, call_id, browser_tag, phone_tag, browser_proto, browser_endpoint,
                    phone_port):
        """What ng ``query`` shows: the protocol Chromium wrote, rtcp-mux and
        Chromium's host candidate, confirmed, on the browser leg; plain RTP/AVP
        from the phone's address on the SIP leg; packets on both."""
        query = yield self.ng.request(command="query", call_id=call_id)
        self.assertEqual(query["result"], "ok", query)
        [web] = query["tags"][browser_tag]["medias"]
        self.assertEqual(web["protocol"], browser_proto)
        self.assertIn("rtcp-mux", web["flags"])
        rtp = web["streams"][0]
        self.assertEqual((rtp["endpoint"]["address"], rtp["endpoint"]["port"]), browser_endpoint)
        self.assertIn("confirmed", rtp["flags"])
        self.assertGreater(rtp["stats"]["packets"], 0)
        [sip] = query["tags"][phone_tag]["medias"]
        self.assertEqual(sip["protocol"], "RTP/AVP")
        self.assertNotIn("rtcp-mux", sip["flags"])
        rtp = sip["streams"][0]
        self.assertEqual((rtp["endpoint"]["address"], rtp["endpoint"]["port"]),
                         (LOOPBACK, phone_port))
        self.assertGreater(rtp["stats"]["packets"], 0)

    @defer.inlineCallbacks
    def browser_calls_phone(self, call_id):
        """Chromium offers, the phone answers; returns (phone, report,
        omnirtp's port towards Chromium, Chromium's endpoint)."""
        phone = listen_party(self)
        self.launch("offer")
        offer = yield self.until(lambda: self.signalling.local, EVENT_TIMEOUT,
                                 "Chromium's offer")
        browser_endpoint = self.check_browser_sdp(offer, "UDP/TLS/RTP/SAVPF", "actpass")
        self.assertIn("a=group:BUNDLE", offer)
        reply = yield self.kamailio(corpus.KAMAILIO_BROWSER_TO_SIP[0], "offer", call_id,
                                    sdp=offer)
        self.assertEqual(reply["result"], "ok", reply)
        to_phone = reply["sdp"]
        self.check_sip_leg(to_phone)
        reply = yield self.kamailio(corpus.KAMAILIO_BROWSER_TO_SIP[1], "answer", call_id,
                                    "tt-" + call_id, sdp=phone_sdp(phone.port))
        self.assertEqual(reply["result"], "ok", reply)
        to_browser = reply["sdp"]
        self.assertEqual(media(to_browser)[0], "UDP/TLS/RTP/SAVPF")
        self.assertIn("a=rtcp-mux", to_browser)
        self.assertEqual(attribute(to_browser, "setup"), ["active"])
        self.assertEqual(formats(to_browser), ["0"])
        port = media(to_browser)[1]
        self.assertEqual(udp_candidates(to_browser), [("1", NETNS_ADDRESS, port, "host")])
        self.signalling.remote = to_browser

        self.phone_sender(phone, media(to_phone)[1])
        report = yield self.check_tones(phone)
        self.check_secure(report, browser_endpoint, port)
        yield self.check_query(call_id, "ft-" + call_id, "tt-" + call_id, "UDP/TLS/RTP/SAVPF",
                               browser_endpoint, phone.port)
        return phone, report, port, browser_endpoint

    @defer.inlineCallbacks
    def test_phone_calls_browser(self):
        call_id = "chromium-phone-calls-browser"
        phone = listen_party(self)

        # The seed's INVITE flags exactly: no rtcp-mux in the offer towards the
        # browser (as rtpengine 10.5 does, ng-spec.md note 13), which Chromium
        # refuses, as README.md says.
        probe = call_id + "-seed"
        offer = yield self.kamailio(corpus.KAMAILIO_SIP_TO_BROWSER[0], "offer", probe,
                                    sdp=phone_sdp(phone.port))
        self.assertEqual(offer["result"], "ok", offer)
        self.assertEqual(media(offer["sdp"])[0], "RTP/SAVPF")
        self.assertNotIn("a=rtcp-mux", offer["sdp"])
        self.signalling.remote = offer["sdp"]
        self.launch("answer")
        refused = yield self.until(lambda: self.signalling.refused, EVENT_TIMEOUT,
                                   "Chromium's verdict on an offer without rtcp-mux")
        self.assertIn("RTCP-MUX is not enabled when it is required", refused)
        self.chromium.stop()
        self.chromium = None
        self.signalling.reset()
        deleted = yield self.ng.request(command="delete", call_id=probe, from_tag="ft-" + probe)
        self.assertEqual(deleted["result"], "ok", deleted)

        # so the INVITE flags get rtcp-mux-offer; the reply flags are the seed's
        offer = yield self.kamailio(SIP_TO_BROWSER_OFFER, "offer", call_id,
                                    sdp=phone_sdp(phone.port))
        self.assertEqual(offer["result"], "ok", offer)
        to_browser = offer["sdp"]
        self.assertEqual(media(to_browser)[0], "RTP/SAVPF")
        self.assertEqual(attribute(to_browser, "setup"), ["actpass"])
        self.assertIn("a=rtcp-mux", to_browser)
        port = media(to_browser)[1]
        # rtcp-mux offered, not yet accepted: an RTCP candidate too
        self.assertEqual(udp_candidates(to_browser), [("1", NETNS_ADDRESS, port, "host"),
                                                      ("2", NETNS_ADDRESS, port + 1, "host")])
        self.signalling.remote = to_browser
        self.launch("answer")

        answer = yield self.until(lambda: self.signalling.local, EVENT_TIMEOUT,
                                  "Chromium's answer")
        # Chromium answers with the protocol of the offer (JSEP 5.3.1)
        browser_endpoint = self.check_browser_sdp(answer, "RTP/SAVPF", "active")
        reply = yield self.kamailio(corpus.KAMAILIO_SIP_TO_BROWSER[1], "answer", call_id,
                                    "tt-" + call_id, sdp=answer)
        self.assertEqual(reply["result"], "ok", reply)
        to_phone = reply["sdp"]
        self.check_sip_leg(to_phone)

        self.phone_sender(phone, media(to_phone)[1])
        report = yield self.check_tones(phone)
        self.check_secure(report, browser_endpoint, port)
        yield self.check_query(call_id, "tt-" + call_id, "ft-" + call_id, "RTP/SAVPF",
                               browser_endpoint, phone.port)

    def test_browser_calls_phone(self):
        return self.browser_calls_phone("chromium-browser-calls-phone")

    @defer.inlineCallbacks
    def test_consent_freshness(self):
        """A call held for 40 s, longer than the 30 s for which a consent
        check's answer lets a browser send (RFC 7675 section 5.1)."""
        call_id = "chromium-consent"
        phone, before, port, browser_endpoint = yield self.browser_calls_phone(call_id)
        heard_by_phone = len(self.phone_audio(phone))
        yield task.deferLater(reactor, HOLD, lambda: None)
        first = len(self.signalling.reports)
        # a report made after the hold
        yield self.until(lambda: len(self.signalling.reports) > first, EVENT_TIMEOUT,
                         "a report after the hold")
        after_hold = self.signalling.latest()
        self.assertGreaterEqual(after_hold["time"] - before["time"], HOLD * 1000)
        # a browser whose consent expired says disconnected (then failed)
        self.assertEqual((after_hold["ice"], after_hold["connection"]),
                         ("connected", "connected"), self.short_report())
        report = yield self.check_tones(phone, after=len(self.phone_audio(phone)),
                                        captured_after=after_hold["capturedTotal"])
        self.check_secure(report, browser_endpoint, port)
        self.assertGreater(len(self.phone_audio(phone)), heard_by_phone)
        pair_before, pair_after = before["stats"]["pair"], report["stats"]["pair"]
        # Chromium kept checking consent on the pair, and omnirtp kept answering
        self.assertGreater(pair_after["requestsSent"], pair_before["requestsSent"])
        self.assertGreater(pair_after["responsesReceived"], pair_before["responsesReceived"])
        if "consentRequestsSent" in pair_after:
            self.assertGreater(pair_after["consentRequestsSent"],
                               pair_before.get("consentRequestsSent", 0))
        self.assertGreater(report["stats"]["inbound"]["packetsReceived"],
                           before["stats"]["inbound"]["packetsReceived"])


class WorkerPoolChromiumCalls(ChromiumCalls):
    """The same calls with two media worker processes (``num-threads`` 2):
    ICE, DTLS and SRTP run in a worker."""

    num_threads = 2
