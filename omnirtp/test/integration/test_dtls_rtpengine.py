"""Our DtlsEndpoint as the browser's DTLS-SRTP against Debian's rtpengine 10.5 on loopback.

rtpengine's media ports are on an address of their own (``private_loopback``),
our sockets and its ng port on 127.0.0.1.

rtpengine bridges a plain RTP/AVP party (a :class:`Party`) and a
UDP/TLS/RTP/SAVPF party, which is our endpoint on a real UDP socket.  The
roles come from our helpers (``negotiate_role``) applied to the a=setup
rtpengine wrote; the a=fingerprint we give it comes from
``Certificate.fingerprint``.  The keys are proven by media through
rtpengine both ways: what we protect with ``srtp_out`` reaches the plain
party as the RTP we sent, and the plain party's RTP reaches us protected
with the key we unprotect with ``srtp_in``.  Media flows as it does in a
call, a packet every 20 ms until enough came through (:func:`stream`), not
as a burst of exactly the packets waited for.
"""

import base64
import re
import struct

import pylibsrtp
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from omnirtp.media import dtls
from omnirtp.media.dtls import Certificate, DtlsEndpoint
from omnirtp.test.integration.peers import (
    Party, free_port_range, private_loopback, start_rtpengine)

HOST = "127.0.0.1"
PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
}


def sdp(port, proto, extra=""):
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio %d %s 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n%s" % (port, proto, extra))


def media_port(body):
    return int(re.search(r"^m=audio (\d+) ", body, re.M).group(1))


def attribute(body, name):
    m = re.search(r"^a=%s:(.*?)\r?$" % name, body, re.M)
    return m.group(1) if m else None


def rtp(seq, ssrc, payload):
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + payload


def session(crypto, outbound):
    return pylibsrtp.Session(policy=pylibsrtp.Policy(
        key=base64.b64decode(crypto["key"]), srtp_profile=PROFILES[crypto["suite"]],
        ssrc_type=(pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound
                   else pylibsrtp.Policy.SSRC_ANY_INBOUND)))


class Browser(DatagramProtocol):
    """Our DTLS side's socket: DTLS (first byte 20-63) to the endpoint; the
    rest from rtpengine (``peer``) kept, from anywhere else dropped, as a
    browser drops what does not come from its selected candidate pair."""

    def __init__(self):
        self.endpoint = None
        self.peer = None
        self.media = []
        self.hold_final = None      # seconds our final flight (ChangeCipherSpec, Finished) waits
        self.final_at = None        # when that held flight went out (reactor.seconds())

    def datagramReceived(self, data, addr):
        if 20 <= data[0] <= 63:
            if self.endpoint is not None:
                self.endpoint.datagram(data, addr)
            return
        if addr == self.peer:
            self.media.append(data)

    def send(self, data):
        if data[0] == 20 and self.hold_final is not None:
            reactor.callLater(self.hold_final, self._send_final, data)
            return
        self.transport.write(data, self.peer)

    def _send_final(self, data):
        self.final_at = reactor.seconds()
        self.transport.write(data, self.peer)


#: RTP packets a media check sends at most (20 ms apart: 5 s), and how many
#: must come through
STREAM_LIMIT = 250
STREAM_WANT = 5


@defer.inlineCallbacks
def stream(send, packets, arrived):
    """Send ``packets`` 20 ms apart, as a phone does from the moment it has
    keys, until ``arrived()`` holds STREAM_WANT datagrams; return those sent.

    A one-shot burst is not how media flows, and fails when the first
    packets meet a peer that is still finishing its side: as DTLS client
    rtpengine has its keys only once our Finished is in, and drops SRTP that
    comes before.
    """
    sent = []
    for packet in packets:
        if len(arrived()) >= STREAM_WANT:
            break
        send(packet)
        sent.append(packet)
        yield task.deferLater(reactor, 0.02, lambda: None)
    return sent


class RtpengineDtlsTests(TestCase):
    timeout = 30

    def setUp(self):
        # media ports low..high-1 on an address of their own (see
        # private_loopback), ng on 127.0.0.1:high: the block is held for us
        low, high = free_port_range(100)
        self.host = private_loopback()
        self.rtpengine = start_rtpengine(self, high, low, high - 1, interface=self.host)
        self.certificate = Certificate.generate()
        self.browser = Browser()
        port = reactor.listenUDP(0, self.browser, interface=HOST)
        self.addCleanup(port.stopListening)
        self.plain = Party()
        port = reactor.listenUDP(0, self.plain, interface=HOST)
        self.addCleanup(port.stopListening)
        self.keys = defer.Deferred()
        self.failures = []

    def ng(self, message):
        reply = self.rtpengine.ng.request(message)
        self.assertEqual(reply.get("result"), "ok", reply)
        return reply

    def start_endpoint(self, role, remote_fingerprint, rtpengine_port, **kw):
        def on_failure(reason):
            self.failures.append(reason)
            if not self.keys.called:
                self.keys.errback(AssertionError("DTLS with rtpengine failed: %s" % reason))

        self.browser.peer = (self.host, rtpengine_port)
        ep = DtlsEndpoint(role, self.certificate, remote_fingerprint, self.browser.send,
                          lambda i, o: self.keys.callback((i, o)), on_failure, reactor, **kw)
        self.browser.endpoint = ep
        self.addCleanup(ep.close)
        ep.start()
        return ep

    @defer.inlineCallbacks
    def check_media(self, ep, to_browser_port, to_plain_port):
        srtp_in, srtp_out = yield self.keys
        self.assertEqual(ep.state, dtls.CONNECTED)
        self.assertEqual(self.failures, [])
        # rtpengine prefers AEAD_AES_128_GCM of what we offer (AEAD_AES_256_GCM is not offered)
        self.assertEqual(srtp_out["suite"], "AEAD_AES_128_GCM")
        self.assertEqual(srtp_in["suite"], "AEAD_AES_128_GCM")

        # browser -> rtpengine -> plain party: rtpengine decrypts with our srtp_out
        # (rtpengine's threads may reorder packets: compared as sets)
        protect = session(srtp_out, outbound=True)
        from_rtpengine = (self.host, to_plain_port)
        self.sent_at = {}       # clear packet -> when we sent it protected

        def to_rtpengine(packet):
            self.sent_at[packet] = reactor.seconds()
            self.browser.transport.write(protect.protect(packet), (self.host, to_browser_port))

        def at_plain():
            return [data for data, addr in self.plain.received if addr == from_rtpengine]
        clear = [rtp(seq, 0x0BADCAFE, bytes([seq % 256]) * 160)
                 for seq in range(1, STREAM_LIMIT + 1)]
        sent = yield stream(to_rtpengine, clear, at_plain)
        got = at_plain()
        self.assertGreaterEqual(len(got), STREAM_WANT, "rtpengine passed on %d of %d packets"
                                % (len(got), len(sent)))
        self.assertEqual(len(set(got)), len(got))
        self.assertLessEqual(set(got), set(sent))
        passed = got

        # plain party -> rtpengine -> browser: we decrypt with srtp_in
        unprotect = session(srtp_in, outbound=False)
        back = [rtp(seq, 0x12345678, bytes([(0x40 + seq) % 256]) * 160)
                for seq in range(1, STREAM_LIMIT + 1)]
        sent = yield stream(lambda packet: self.plain.send(packet, (self.host, to_plain_port)),
                            back, lambda: self.browser.media)
        media = list(self.browser.media)
        self.assertGreaterEqual(len(media), STREAM_WANT, "rtpengine passed on %d of %d packets"
                                % (len(media), len(sent)))
        self.assertTrue(all(packet not in sent for packet in media))   # protected
        clear = [unprotect.unprotect(packet) for packet in media]
        self.assertEqual(len(set(clear)), len(clear))
        self.assertLessEqual(set(clear), set(sent))
        return passed

    @defer.inlineCallbacks
    def test_sip_calls_browser_browser_answers_active(self):
        """rtpengine offers actpass; we answer active (as browsers do) and are the client."""
        offer = self.ng({"command": "offer", "call-id": "dtls-1", "from-tag": "sip",
                         "sdp": sdp(self.plain.port, "RTP/AVP"),
                         "transport-protocol": "UDP/TLS/RTP/SAVPF"})
        body = offer["sdp"]
        self.assertEqual(attribute(body, "setup"), dtls.offer_setup())
        their_fp = attribute(body, "fingerprint")
        self.assertEqual(their_fp.split()[0], "sha-256")
        our_setup = dtls.answer_setup(attribute(body, "setup"))
        self.assertEqual(our_setup, "active")
        answer = self.ng({"command": "answer", "call-id": "dtls-1", "from-tag": "sip",
                          "to-tag": "browser",
                          "sdp": sdp(self.browser.transport.getHost().port, "UDP/TLS/RTP/SAVPF",
                                     "a=setup:%s\r\na=fingerprint:%s\r\n"
                                     % (our_setup, self.certificate.fingerprint()))})
        ep = self.start_endpoint(dtls.role_of(our_setup), their_fp, media_port(body))
        self.assertEqual(ep.role, dtls.CLIENT)
        yield self.check_media(ep, media_port(body), media_port(answer["sdp"]))

    @defer.inlineCallbacks
    def test_sip_calls_browser_browser_answers_passive(self):
        """We answer passive: rtpengine is the client and sends the ClientHello."""
        offer = self.ng({"command": "offer", "call-id": "dtls-2", "from-tag": "sip",
                         "sdp": sdp(self.plain.port, "RTP/AVP"),
                         "transport-protocol": "UDP/TLS/RTP/SAVPF"})
        body = offer["sdp"]
        self.assertIn("\r\nc=IN IP4 %s\r\n" % self.host, body)
        their_fp = attribute(body, "fingerprint")
        ep = self.start_endpoint(dtls.SERVER, their_fp, media_port(body))
        answer = self.ng({"command": "answer", "call-id": "dtls-2", "from-tag": "sip",
                          "to-tag": "browser",
                          "sdp": sdp(self.browser.transport.getHost().port, "UDP/TLS/RTP/SAVPF",
                                     "a=setup:passive\r\na=fingerprint:%s\r\n"
                                     % (self.certificate.fingerprint(),))})
        yield self.check_media(ep, media_port(body), media_port(answer["sdp"]))

    @defer.inlineCallbacks
    def test_media_before_rtpengine_has_its_keys(self):
        """We are the server, so our keys come first: our SRTP starts while
        our Finished is still on its way (held back 200 ms here); rtpengine,
        the client, drops the SRTP it gets before it, and the stream goes
        on and gets through."""
        offer = self.ng({"command": "offer", "call-id": "dtls-5", "from-tag": "sip",
                         "sdp": sdp(self.plain.port, "RTP/AVP"),
                         "transport-protocol": "UDP/TLS/RTP/SAVPF"})
        body = offer["sdp"]
        self.browser.hold_final = 0.2
        ep = self.start_endpoint(dtls.SERVER, attribute(body, "fingerprint"), media_port(body))
        answer = self.ng({"command": "answer", "call-id": "dtls-5", "from-tag": "sip",
                          "to-tag": "browser",
                          "sdp": sdp(self.browser.transport.getHost().port, "UDP/TLS/RTP/SAVPF",
                                     "a=setup:passive\r\na=fingerprint:%s\r\n"
                                     % (self.certificate.fingerprint(),))})
        passed = yield self.check_media(ep, media_port(body), media_port(answer["sdp"]))
        # what we sent well before our Finished went out (the first packet at
        # least, 200 ms before) was dropped, however the reactor's ticks fell
        early = [packet for packet, at in self.sent_at.items()
                 if at < self.browser.final_at - 0.01]
        self.assertTrue(early)
        self.assertEqual(set(early) & set(passed), set())

    @defer.inlineCallbacks
    def test_browser_calls_sip(self):
        """We offer actpass, fingerprint in sha-1; rtpengine answers active, in sha-1: we serve."""
        offer = self.ng({"command": "offer", "call-id": "dtls-3", "from-tag": "browser",
                         "sdp": sdp(self.browser.transport.getHost().port, "UDP/TLS/RTP/SAVPF",
                                    "a=setup:actpass\r\na=fingerprint:%s\r\n"
                                    % (self.certificate.fingerprint("sha-1"),)),
                         "transport-protocol": "RTP/AVP"})
        answer = self.ng({"command": "answer", "call-id": "dtls-3", "from-tag": "browser",
                          "to-tag": "sip", "sdp": sdp(self.plain.port, "RTP/AVP")})
        body = answer["sdp"]
        self.assertEqual(attribute(body, "setup"), "active")
        their_fp = attribute(body, "fingerprint")
        self.assertEqual(their_fp.split()[0], "sha-1")
        role = dtls.negotiate_role(attribute(body, "setup"), we_offered=True)
        self.assertEqual(role, dtls.SERVER)
        ep = self.start_endpoint(role, their_fp, media_port(body))
        yield self.check_media(ep, media_port(body), media_port(offer["sdp"]))

    @defer.inlineCallbacks
    def test_rtpengine_refuses_a_wrong_fingerprint(self):
        """Our answer names another certificate: rtpengine refuses ours, we get no keys."""
        offer = self.ng({"command": "offer", "call-id": "dtls-4", "from-tag": "sip",
                         "sdp": sdp(self.plain.port, "RTP/AVP"),
                         "transport-protocol": "UDP/TLS/RTP/SAVPF"})
        body = offer["sdp"]
        self.ng({"command": "answer", "call-id": "dtls-4", "from-tag": "sip", "to-tag": "browser",
                 "sdp": sdp(self.browser.transport.getHost().port, "UDP/TLS/RTP/SAVPF",
                            "a=setup:active\r\na=fingerprint:%s\r\n"
                            % (Certificate.generate().fingerprint(),))})
        ep = self.start_endpoint(dtls.CLIENT, attribute(body, "fingerprint"), media_port(body),
                                 handshake_timeout=3.0)
        yield self.assertFailure(self.keys, AssertionError)
        # rtpengine sends no alert: it logs the mismatch and stops answering
        self.assertIn("DTLS: Peer certificate rejected - fingerprint mismatch",
                      self.rtpengine.log())
        self.assertEqual(self.failures, [dtls.R_TIMEOUT])
        self.assertEqual(ep.state, dtls.FAILED)
        self.assertEqual((ep.srtp_in, ep.srtp_out), (None, None))
