"""SDES-SRTP media end to end: a pylibsrtp RTP/SAVP party <-> a plain RTP party.

Both directions of the bridge, with the keys exactly as the proxy's SDP
gives them: the plain side sends RTP and the SRTP side must unprotect what
arrives with the key the proxy offered (or answered) it; the SRTP side
sends SRTP protected with its own key and the plain side must receive the
original RTP.

The same flows run against Debian's rtpengine 10.5 (the reference, which
shows the test itself is right) and against omnirtp, in-process engine and
with media workers (the keys cross AMP).  omnirtp's half needs the SRTP
transform of the media pipeline (``omnirtp.media.srtp``, WEBRTC-CONTRACT);
on a tree without it the omnirtp tests are skipped with that reason.
"""

import base64
import importlib.util
import os
import struct

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase

from omnirtp.sdp import crypto
from omnirtp.test.integration.peers import (
    find_program, free_port, free_port_range, listen_party, start_omnirtp, start_rtpengine)

SUITE = "AES_CM_128_HMAC_SHA1_80"
#: rtpengine 10.5 offers twelve suites; these options leave omnirtp's three
NO_OTHER_SUITES = ["no-" + s for s in crypto.SUITES if s not in crypto.SUPPORTED]


def rtp(seq, ssrc=0x11223344):
    header = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc)
    return header + bytes([seq & 0xFF]) * 160


def sdp(port, proto="RTP/AVP", *cryptos):
    lines = ["v=0", "o=u 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             "m=audio %d %s 0" % (port, proto), "a=rtpmap:0 PCMU/8000"]
    lines += ["a=crypto:" + c for c in cryptos]
    lines.append("a=sendrecv")
    return "".join(line + "\r\n" for line in lines)


def media_port(text):
    for line in text.split("\r\n"):
        if line.startswith("m="):
            return int(line.split()[1])
    raise AssertionError("no m= line in %r" % (text,))


def crypto_lines(text):
    return [crypto.parse(line[len("a=crypto:"):]) for line in text.split("\r\n")
            if line.startswith("a=crypto:")]


def sessions(key):
    """(protect, unprotect) pylibsrtp sessions for ``key`` (bytes) and SUITE."""
    import pylibsrtp
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80

    def session(direction):
        return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=direction,
                                                  srtp_profile=profile))
    return (session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND),
            session(pylibsrtp.Policy.SSRC_ANY_INBOUND))


class SdesFlows:
    """The two flows; a subclass provides ``start()`` -> ng request callable."""

    timeout = 60
    packets = 5

    def ng(self, **kw):
        reply = self.request({k.replace("_", "-"): v for k, v in kw.items()})
        self.assertEqual(reply.get("result"), "ok", reply)
        return reply["sdp"]

    @defer.inlineCallbacks
    def exchange(self, plain, plain_dest, srtp, srtp_dest, our_key, their_key):
        """The plain party and the SRTP party send to each other; check what arrives."""
        protect, _ = sessions(their_key)
        _, unprotect = sessions(our_key)
        sent = [rtp(i) for i in range(1, self.packets + 1)]
        back = [rtp(100 + i, ssrc=0x55667788) for i in range(1, self.packets + 1)]
        for packet in sent:
            plain.send(packet, plain_dest)
        for packet in back:
            srtp.send(protect.protect(packet), srtp_dest)
        got_srtp = yield srtp.wait(self.packets)
        got_plain = yield plain.wait(self.packets)
        self.assertEqual([unprotect.unprotect(data) for data, _ in got_srtp], sent)
        self.assertEqual([data for data, _ in got_plain], back)
        self.assertTrue(all(data not in sent for data, _ in got_srtp))   # really protected

    @defer.inlineCallbacks
    def test_plainCallerSrtpCallee(self):
        """RTP/AVP caller, RTP/SAVP callee keyed by our offer and its answer."""
        self.request = self.start()
        a, b = listen_party(self), listen_party(self)
        offer = self.ng(command="offer", call_id="sdes1", from_tag="ft", sdp=sdp(a.port),
                        DTLS="off", SDES=NO_OTHER_SUITES,
                        **{"transport-protocol": "RTP/SAVP"})
        ours = [c for c in crypto_lines(offer) if c.suite == SUITE][0]
        their_key = os.urandom(30)
        answer = self.ng(command="answer", call_id="sdes1", from_tag="ft", to_tag="tt",
                         sdp=sdp(b.port, "RTP/SAVP", "%d %s inline:%s" % (
                             ours.tag, SUITE, base64.b64encode(their_key).decode())))
        self.assertEqual(crypto_lines(answer), [])
        yield self.exchange(a, media_port(answer), b, media_port(offer), ours.key, their_key)

    @defer.inlineCallbacks
    def test_srtpCallerPlainCallee(self):
        """RTP/SAVP caller keyed by its offer and our answer, RTP/AVP callee."""
        self.request = self.start()
        a, b = listen_party(self), listen_party(self)
        their_key = os.urandom(30)
        offer = self.ng(command="offer", call_id="sdes2", from_tag="ft",
                        sdp=sdp(a.port, "RTP/SAVP", "1 %s inline:%s|2^31" % (
                            SUITE, base64.b64encode(their_key).decode())),
                        **{"transport-protocol": "RTP/AVP"})
        self.assertEqual(crypto_lines(offer), [])
        answer = self.ng(command="answer", call_id="sdes2", from_tag="ft", to_tag="tt",
                         sdp=sdp(b.port))
        [ours] = crypto_lines(answer)
        self.assertEqual((ours.tag, ours.suite), (1, SUITE))
        yield self.exchange(b, media_port(offer), a, media_port(answer), ours.key, their_key)


def _ports(test):
    import socket
    return free_port(socket.SOCK_DGRAM), free_port_range(100)


class RtpengineSdesTests(SdesFlows, TestCase):
    """The reference: Debian's rtpengine 10.5, userspace SRTP."""

    def start(self):
        find_program("rtpengine")   # SkipTest naming the package when absent
        ng_port, (low, high) = _ports(self)
        peer = start_rtpengine(self, ng_port, low, high)
        return peer.ng.request


class OmnirtpSdesTests(SdesFlows, TestCase):
    """omnirtp with the in-process engine."""

    extra_args = ()

    def start(self):
        if importlib.util.find_spec("omnirtp.media.srtp") is None:
            raise SkipTest("needs the SRTP transform of the media pipeline "
                           "(omnirtp.media.srtp, webrtc-pipeline)")
        ng_port, (low, high) = _ports(self)
        peer = start_omnirtp(self, ng_port, low, high, extra_args=self.extra_args)
        return peer.ng.request


class OmnirtpWorkersSdesTests(OmnirtpSdesTests):
    """omnirtp with two media workers: the keys cross AMP."""

    extra_args = ("--num-threads=2",)
