"""SDES-SRTP media end to end: a pylibsrtp RTP/SAVP party <-> a plain RTP party.

Both directions of the bridge, for each suite omnirtp offers, with the keys
exactly as the proxy's SDP gives them: the plain side sends RTP and RTCP and
the SRTP side must unprotect what arrives with the key the proxy offered (or
answered) it; the SRTP side sends SRTP and SRTCP protected with its own key
and the plain side must receive the original packets.  Each party takes its
RTCP on its RTP socket (``a=rtcp:<its RTP port>``).

The same flows run against Debian's rtpengine 10.5 (the reference, which
shows the test itself is right) and against omnirtp, in-process engine and
with media workers (the keys cross AMP), through the SRTP transform of the
media pipeline (``omnirtp.media.srtp``).
"""

import base64
import os
import struct

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from omnirtp.sdp import crypto
from omnirtp.test.integration.peers import (
    LOOPBACK, find_program, free_port_range, listen_party, private_loopback, start_omnirtp,
    start_rtpengine)

#: rtpengine 10.5 offers twelve suites; these options leave omnirtp's three
NO_OTHER_SUITES = ["no-" + s for s in crypto.SUITES if s not in crypto.SUPPORTED]


def rtp(seq, ssrc=0x11223344):
    header = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc)
    return header + bytes([seq & 0xFF]) * 160


def rtcp(ssrc):
    """A sender report without report blocks."""
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 1, 2, 3, 4, 5)


def is_rtcp(data):
    return 200 <= data[1] <= 204


def sdp(port, proto="RTP/AVP", *cryptos):
    lines = ["v=0", "o=u 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             "m=audio %d %s 0" % (port, proto), "a=rtpmap:0 PCMU/8000", "a=rtcp:%d" % port]
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


def rtcp_port(text):
    for line in text.split("\r\n"):
        if line.startswith("a=rtcp:"):
            return int(line[len("a=rtcp:"):].split()[0])
    return media_port(text) + 1


PROFILES = {"AES_CM_128_HMAC_SHA1_80": "SRTP_PROFILE_AES128_CM_SHA1_80",
            "AES_CM_128_HMAC_SHA1_32": "SRTP_PROFILE_AES128_CM_SHA1_32",
            "AEAD_AES_128_GCM": "SRTP_PROFILE_AEAD_AES_128_GCM"}


def sessions(suite, key):
    """(protect, unprotect) pylibsrtp sessions for ``suite`` and ``key`` (bytes)."""
    import pylibsrtp
    profile = getattr(pylibsrtp.Policy, PROFILES[suite])

    def session(direction):
        return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=direction,
                                                  srtp_profile=profile))
    return (session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND),
            session(pylibsrtp.Policy.SSRC_ANY_INBOUND))


class SdesFlows:
    """The two flows; a subclass provides ``start()`` -> ng request callable."""

    timeout = 60
    packets = 5
    host = LOOPBACK     # the address of the proxy's media ports

    def ng(self, **kw):
        reply = self.request({k.replace("_", "-"): v for k, v in kw.items()})
        self.assertEqual(reply.get("result"), "ok", reply)
        return reply["sdp"]

    @defer.inlineCallbacks
    def exchange(self, suite, plain, plain_to, srtp, srtp_to, our_key, their_key):
        """The parties send to each other (``*_to``: the proxy's (RTP, RTCP)
        ports for them); check what arrives."""
        protect, _ = sessions(suite, their_key)
        _, unprotect = sessions(suite, our_key)
        sent = [rtp(i) for i in range(1, self.packets + 1)] + [rtcp(0x11223344)]
        back = [rtp(100 + i, ssrc=0x55667788) for i in range(1, self.packets + 1)]
        back.append(rtcp(0x55667788))
        for packet in sent:
            plain.send(packet, (self.host, plain_to[is_rtcp(packet)]))
        for packet in back:
            data = protect.protect_rtcp(packet) if is_rtcp(packet) else protect.protect(packet)
            srtp.send(data, (self.host, srtp_to[is_rtcp(packet)]))
        # what the proxy sends them comes from its ports for them
        got_srtp = yield srtp.wait(len(sent), sources={(self.host, p) for p in srtp_to})
        got_plain = yield plain.wait(len(back), sources={(self.host, p) for p in plain_to})
        srtp.received[:] = []
        plain.received[:] = []
        clear = [unprotect.unprotect_rtcp(d) if is_rtcp(d) else unprotect.unprotect(d)
                 for d, _ in got_srtp]
        self.assertEqual(sorted(clear), sorted(sent))
        self.assertEqual(sorted(d for d, _ in got_plain), sorted(back))
        self.assertTrue(all(d not in sent for d, _ in got_srtp))   # really protected

    @defer.inlineCallbacks
    def test_plainCallerSrtpCallee(self):
        """RTP/AVP caller, RTP/SAVP callee keyed by our offer and its answer,
        once per suite."""
        request = self.start()
        for n, suite in enumerate(crypto.SUPPORTED):
            self.request = request
            a, b = listen_party(self), listen_party(self)
            call = "sdes1-%d" % n
            offer = self.ng(command="offer", call_id=call, from_tag="ft", sdp=sdp(a.port),
                            DTLS="off", SDES=NO_OTHER_SUITES,
                            **{"transport-protocol": "RTP/SAVP"})
            ours = [c for c in crypto_lines(offer) if c.suite == suite][0]
            their_key = os.urandom(crypto.SUITES[suite].length)
            answer = self.ng(command="answer", call_id=call, from_tag="ft", to_tag="tt",
                             sdp=sdp(b.port, "RTP/SAVP", "%d %s inline:%s" % (
                                 ours.tag, suite, base64.b64encode(their_key).decode())))
            self.assertEqual(crypto_lines(answer), [])
            yield self.exchange(suite, a, (media_port(answer), rtcp_port(answer)),
                                b, (media_port(offer), rtcp_port(offer)), ours.key, their_key)

    @defer.inlineCallbacks
    def test_srtpCallerPlainCallee(self):
        """RTP/SAVP caller keyed by its offer and our answer, RTP/AVP callee,
        once per suite."""
        request = self.start()
        for n, suite in enumerate(crypto.SUPPORTED):
            self.request = request
            a, b = listen_party(self), listen_party(self)
            call = "sdes2-%d" % n
            their_key = os.urandom(crypto.SUITES[suite].length)
            offer = self.ng(command="offer", call_id=call, from_tag="ft",
                            sdp=sdp(a.port, "RTP/SAVP", "1 %s inline:%s|2^31" % (
                                suite, base64.b64encode(their_key).decode())),
                            **{"transport-protocol": "RTP/AVP"})
            self.assertEqual(crypto_lines(offer), [])
            answer = self.ng(command="answer", call_id=call, from_tag="ft", to_tag="tt",
                             sdp=sdp(b.port))
            [ours] = crypto_lines(answer)
            self.assertEqual((ours.tag, ours.suite), (1, suite))
            yield self.exchange(suite, b, (media_port(offer), rtcp_port(offer)),
                                a, (media_port(answer), rtcp_port(answer)), ours.key, their_key)


def _ports(test):
    """The ng port and the media range, from one block held for us: an
    ephemeral ng port (free_port) may be another process's by the time the
    proxy binds it."""
    low, high = free_port_range(102)
    return high, (low, high - 1)


class RtpengineSdesTests(SdesFlows, TestCase):
    """The reference: Debian's rtpengine 10.5, userspace SRTP."""

    def start(self):
        find_program("rtpengine")   # SkipTest naming the package when absent
        ng_port, (low, high) = _ports(self)
        # media on an address of its own: no port shared with another
        # rtpengine on 127.0.0.1, no stray datagrams for it
        self.host = private_loopback()
        peer = start_rtpengine(self, ng_port, low, high, interface=self.host)
        return peer.ng.request


class OmnirtpSdesTests(SdesFlows, TestCase):
    """omnirtp with the in-process engine."""

    extra_args = ()

    def start(self):
        ng_port, (low, high) = _ports(self)
        peer = start_omnirtp(self, ng_port, low, high, extra_args=self.extra_args)
        return peer.ng.request


class OmnirtpWorkersSdesTests(OmnirtpSdesTests):
    """omnirtp with two media workers: the keys cross AMP."""

    extra_args = ("--num-threads=2",)
