"""Tests for the corpus SDP normaliser (omnirtp.test.sdpnorm)."""

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test.sdpnorm import Normaliser, normalise

OUT = ("v=0\r\no=a 1 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "a=rtpengine:0af4c5a4b851\r\nm=audio 41100 RTP/AVP 0\r\na=rtcp:41101\r\n"
       "a=ice-ufrag:xDRyXIQ4\r\na=ice-pwd:0GKqyAMrIPkfweEehBU2mxiwcx\r\n"
       "a=candidate:DNz8WF5mx1R9p0FJ 1 UDP 2130706431 127.0.0.1 41100 typ host\r\n"
       "a=candidate:DNz8WF5mx1R9p0FJ 2 UDP 2130706430 127.0.0.1 41101 typ host\r\n"
       "m=video 0 RTP/AVP 96\r\n")


class NormaliserTests(SynchronousTestCase):
    def test_placeholders(self):
        self.assertEqual(normalise(OUT).splitlines(), [
            "v=0", "o=a 1 {VERSION1} IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
            "a=rtpengine:{LOOPID1}", "m=audio {PORT1} RTP/AVP 0", "a=rtcp:{PORT1+1}",
            "a=ice-ufrag:{UFRAG1}", "a=ice-pwd:{PWD1}",
            "a=candidate:{FOUNDATION1} 1 UDP 2130706431 127.0.0.1 {PORT1} typ host",
            "a=candidate:{FOUNDATION1} 2 UDP 2130706430 127.0.0.1 {PORT1+1} typ host",
            "m=video 0 RTP/AVP 96"])

    def test_two_daemons_compare_equal(self):
        """Different random values, same structure: equal after normalising."""
        other = (OUT.replace("41100", "30010").replace("41101", "30011")
                 .replace("xDRyXIQ4", "abcdefgh").replace("DNz8WF5mx1R9p0FJ", "Q" * 16))
        self.assertEqual(normalise(other), normalise(OUT))

    def test_state_across_a_call(self):
        """A port seen again keeps its placeholder; a new one gets the next."""
        n = Normaliser()
        first = n.normalise("m=audio 5000 RTP/AVP 0\r\n")
        self.assertEqual(n.normalise("m=audio 5000 RTP/AVP 0\r\n"), first)
        self.assertEqual(n.normalise("m=audio 6000 RTP/AVP 0\r\n"), "m=audio {PORT2} RTP/AVP 0\n")

    def test_same_number_other_address(self):
        """Equal port numbers on different addresses are different sockets."""
        n = Normaliser()
        n.normalise("c=IN IP4 127.0.0.1\r\nm=audio 5000 RTP/AVP 0\r\n")
        self.assertEqual(n.normalise("c=IN IP4 127.0.0.2\r\nm=audio 5000 RTP/AVP 0\r\n"),
                         "c=IN IP4 127.0.0.2\nm=audio {PORT2} RTP/AVP 0\n")

    def test_hold_address_reuses_port(self):
        n = Normaliser()
        n.normalise("c=IN IP4 127.0.0.1\r\nm=audio 5000 RTP/AVP 0\r\na=rtcp:5001\r\n")
        self.assertEqual(n.normalise("c=IN IP4 0.0.0.0\r\nm=audio 5000 RTP/AVP 0\r\na=rtcp:5001\r\n"),
                         "c=IN IP4 0.0.0.0\nm=audio {PORT1} RTP/AVP 0\na=rtcp:{PORT1+1}\n")

    def test_stream_port_never_plus_one(self):
        """An m= line's port is a stream's own socket, even when it is an
        earlier stream's unused RTCP port (rtcp-mux, rtpengine's random
        pick): its own placeholder, as when it is any other port."""
        n = Normaliser()
        self.assertEqual(
            n.normalise("m=audio 5000 RTP/AVP 0\r\na=rtcp-mux\r\nm=video 5001 RTP/AVP 96\r\n"
                        "a=rtcp:5001\r\n"),
            "m=audio {PORT1} RTP/AVP 0\na=rtcp-mux\nm=video {PORT2} RTP/AVP 96\n"
            "a=rtcp:{PORT2}\n")
        self.assertEqual(Normaliser().normalise("m=audio 5000 RTP/AVP 0\r\na=rtcp:5001\r\n"),
                         "m=audio {PORT1} RTP/AVP 0\na=rtcp:{PORT1+1}\n")

    def test_crypto_and_fingerprint(self):
        self.assertEqual(
            normalise("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abcd|2^20\r\n"
                      "a=fingerprint:sha-256 AB:CD\r\n"),
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY1}|2^20\n"
            "a=fingerprint:sha-256 {FINGERPRINT1}\n")

    def test_peer_keys_kept(self):
        """Keys a peer sent stay literal: passing them on differs from new ones."""
        n = Normaliser()
        n.keep_input("v=0\r\na=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:PEERKEY|2^20\r\n")
        n.keep_input(None)
        self.assertEqual(
            n.normalise("a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:PEERKEY\r\n"
                        "a=crypto:6 AEAD_AES_128_GCM inline:OURKEY\r\n"),
            "a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:PEERKEY\n"
            "a=crypto:6 AEAD_AES_128_GCM inline:{KEY1}\n")

    def test_crypto_padding_visible(self):
        self.assertEqual(normalise("a=crypto:1 AEAD_AES_128_GCM inline:abcdef==|2^31\r\n"),
                         "a=crypto:1 AEAD_AES_128_GCM inline:{KEY1}==|2^31\n")


class CorpusDiffersTests(SynchronousTestCase):
    """corpus.Case.expected_for_omnirtp: replaced, dropped and whole steps."""

    def test_changes(self):
        from omnirtp.test.corpus import Case
        want = [{"result": "ok", "sdp": ["m=audio {PORT1} RTP/SAVP 0", "a=crypto:1 A",
                                         "a=crypto:2 B inline:{KEY2}", "a=crypto:10 C"]},
                {"result": "ok", "sdp": ["v=0"]}]
        case = Case("x", [], differs={
            0: [("a=crypto:1 ", None), ("crypto:2 B inline:{KEY2}", "crypto:1 B inline:{KEY1}")],
            1: {"result": "error", "error-reason": "why"}})
        self.assertEqual(case.expected_for_omnirtp(want), [
            {"result": "ok", "sdp": ["m=audio {PORT1} RTP/SAVP 0", "a=crypto:1 B inline:{KEY1}",
                                     "a=crypto:10 C"]},
            {"result": "error", "error-reason": "why"}])
        self.assertEqual(want[0]["sdp"][1], "a=crypto:1 A")   # the fixture is untouched
        with self.assertRaises(ValueError):
            Case("x", [], differs={1: [("nothing", None)]}).expected_for_omnirtp(want)
