"""Hostile media through the whole daemon: real UDP on 127.0.0.1, calls set
up over ng as Kamailio does (issue 12, "Hostile media").

* a rogue source flooding a confirmed stream does not take it over: the
  endpoint stays, the party's return media keeps reaching the party, and
  with ``strict-source`` not one rogue packet reaches the other side;
* datagrams to ports no call holds (never allocated, or released by a
  delete) reach nobody and change no counter;
* a STUN Binding request with a wrong MESSAGE-INTEGRITY on an ICE stream
  gets only the unsigned 401 error (RFC 8489 9.1.3, as rtpengine answers):
  no success response, no pair, no latching; it is counted and ``query``
  shows the count;
* SRTP under a wrong key and replayed SRTP are dropped; ``query`` shows the
  stream's errors and the SRTP step's ``auth-failures`` / ``replays``;
* malformed datagrams are counted (``junkpackets``) and never logged one by
  one, in-process and with media workers.
"""

import base64
import os
import socket
import struct

from aioice import stun as aioice_stun
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import globalLogPublisher

from omnirtp.media import stun
from omnirtp.sdp import crypto
from omnirtp.test.integration.peers import free_port, free_port_range, listen_party
from omnirtp.test.integration.test_daemon import RTP, DaemonTestCase, port_of, sdp, wait_for

#: the rogue's address (Linux answers for all of 127.0.0.0/8 on lo)
ROGUE_HOST = "127.0.0.2"
ROGUE = b"\x80\x00\x00\x02\x00\x00\x01\x40\x66\x66\x66\x66" + b"\x99" * 160


def rtp(seq, ssrc=0x11223344, fill=0xD5):
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + bytes([fill]) * 160


def stream(query, tag, index=0):
    return query["tags"][tag]["medias"][0]["streams"][index]


def attribute(text, name):
    prefix = "a=%s:" % name
    return [line[len(prefix):] for line in text.split("\r\n") if line.startswith(prefix)]


class RogueSourceTests(DaemonTestCase):
    """A confirmed stream is not taken over by a flood from elsewhere."""

    FLOOD = 100

    @defer.inlineCallbacks
    def flood_after_confirmation(self, strict, learning):
        flags = {"flags": ["strict-source"]} if strict else {}
        yield self.start(endpoint_learning=learning)
        a, b, to_a, to_b = yield self.setup_call(offer_extra=flags, answer_extra=flags)
        self.send(a, to_a)
        yield wait_for(lambda: len(b.received) == 1)
        query = yield self.ng.request(command="query", call_id="c1")
        self.assertIn("confirmed", stream(query, "ft")["flags"])
        # from another address: on 127.0.0.1 it would share the party's
        # address, which an RTCP port that its party has not used yet accepts
        rogue = listen_party(self, ROGUE_HOST)
        self.send(rogue, to_a, ROGUE, self.FLOOD)
        # the rogue also tries the RTCP port of the same party
        self.send(rogue, to_a + 1, b"\x81\xc8\x00\x06" + b"\x66" * 24, 10)
        yield wait_for(lambda: self.service.engine.socket(("127.0.0.1", to_a)).packets
                       == 1 + self.FLOOD)
        self.send(b, to_b, RTP, 3)
        self.send(a, to_a)
        yield wait_for(lambda: len(a.received) == 3)
        yield wait_for(lambda: [d for d, _ in b.received].count(RTP) == 2)
        self.assertEqual(a.received, [(RTP, ("127.0.0.1", to_a))] * 3)
        self.assertEqual(rogue.received, [])
        query = yield self.ng.request(command="query", call_id="c1")
        ours = stream(query, "ft")
        self.assertEqual((ours["endpoint"]["address"], ours["endpoint"]["port"]),
                         ("127.0.0.1", a.port))
        self.assertIn("confirmed", ours["flags"])
        self.assertEqual(ours["stats"]["packets"], 2 + self.FLOOD)
        return b, ours

    @defer.inlineCallbacks
    def test_floodDoesNotMoveEndpoint(self):
        """Without strict-source the rogue's packets are relayed (as
        rtpengine does after confirmation) but the endpoint stays the party's."""
        b, ours = yield self.flood_after_confirmation(False, "immediate")
        self.assertEqual(ours["stats"]["errors"], 0)

    @defer.inlineCallbacks
    def test_floodHeuristicLearning(self):
        """The default learning (heuristic): the party's packet from its
        exact SDP address confirms at once; the flood moves nothing."""
        yield self.flood_after_confirmation(False, "heuristic")

    @defer.inlineCallbacks
    def test_floodStrictSourceDropsAll(self):
        """With strict-source not one rogue packet reaches B; each is an error."""
        b, ours = yield self.flood_after_confirmation(True, "immediate")
        self.assertEqual([d for d, _ in b.received], [RTP, RTP])
        self.assertEqual(ours["stats"]["errors"], self.FLOOD)


class UnallocatedPortTests(DaemonTestCase):

    @defer.inlineCallbacks
    def test_unallocatedAndReleasedPortsIgnored(self):
        """RTP to every port of the range that no call holds, and to the
        ports of a deleted call, reaches nobody and counts nothing."""
        low, high = free_port_range(40)
        yield self.start(port_min=low, port_max=high)
        a, b, to_a, to_b = yield self.setup_call("live")
        gone_a, gone_b, gone_to_a, gone_to_b = yield self.setup_call("gone")
        deleted = yield self.ng.request(command="delete", call_id="gone", delete_delay=0)
        self.assertEqual(deleted["result"], "ok")
        before = yield self.ng.request(command="statistics")
        held = {to_a, to_a + 1, to_b, to_b + 1}
        stranger = self.party()
        for port in range(low, high + 1):
            if port not in held:
                self.send(stranger, port, RTP, 2)
        self.send(gone_a, gone_to_a, RTP, 3)
        # the live call still relays, and nothing else arrived anywhere
        self.send(a, to_a)
        yield wait_for(lambda: b.received)
        after = yield self.ng.request(command="statistics")
        totals = ("relayedpackets", "relayedpacketerrors", "junkpackets")
        self.assertEqual(
            [after["statistics"]["totalstatistics"][k] - before["statistics"]["totalstatistics"][k]
             for k in totals], [1, 0, 0])
        self.assertEqual(after["statistics"]["ports"], before["statistics"]["ports"])
        self.assertEqual((gone_b.received, stranger.received), ([], []))
        self.assertEqual(b.received, [(RTP, ("127.0.0.1", to_b))])


class IceIntegrityTests(DaemonTestCase):
    """An ICE stream (ICE=force towards B, B answers with ICE)."""

    B_UFRAG, B_PWD = "bbbb", "bpasswordbpasswordbpassword"

    @defer.inlineCallbacks
    def ice_call(self):
        yield self.start()
        a, b = self.party(), self.party()
        offer = yield self.ng.request(command="offer", call_id="ice", from_tag="ft",
                                      sdp=sdp(a.port), ICE="force")
        self.assertEqual(offer["result"], "ok", offer)
        [ufrag], [pwd] = attribute(offer["sdp"], "ice-ufrag"), attribute(offer["sdp"], "ice-pwd")
        answer_sdp = sdp(b.port, extra=(
            "a=ice-ufrag:%s\r\na=ice-pwd:%s\r\n"
            "a=candidate:1 1 UDP 2130706431 127.0.0.1 %d typ host\r\n"
            "a=candidate:1 2 UDP 2130706430 127.0.0.1 %d typ host\r\n"
            % (self.B_UFRAG, self.B_PWD, b.port, b.port + 1)))
        answer = yield self.ng.request(command="answer", call_id="ice", from_tag="ft",
                                       to_tag="tt", sdp=answer_sdp, ICE="remove")
        self.assertEqual(answer["result"], "ok", answer)
        return a, b, port_of(answer["sdp"]), port_of(offer["sdp"]), ufrag, pwd

    def check(self, ufrag, key, tid):
        return stun.binding_request(tid, {
            "USERNAME": "%s:%s" % (ufrag, self.B_UFRAG), "PRIORITY": 1853824767,
            "ICE-CONTROLLED": 0x1234, "USE-CANDIDATE": None}, key)

    @staticmethod
    def responses(party, tid):
        out = []
        for data, _ in party.received:
            if stun.is_stun(data) and data[8:20] == tid:
                out.append(aioice_stun.parse_message(data))
        return out

    @defer.inlineCallbacks
    def test_badIntegrityRejectedAndCounted(self):
        a, b, to_a, to_b, ufrag, pwd = yield self.ice_call()
        rogue = listen_party(self, ROGUE_HOST)
        bad = os.urandom(12)
        # the right ufrag, a MESSAGE-INTEGRITY under the wrong password
        rogue.send(self.check(ufrag, b"not-the-password-at-all", bad), to_b)
        yield wait_for(lambda: self.responses(rogue, bad))
        [reply] = self.responses(rogue, bad)
        self.assertEqual(reply.message_class, aioice_stun.Class.ERROR)
        self.assertEqual(reply.attributes["ERROR-CODE"][0], 401)
        self.assertNotIn("XOR-MAPPED-ADDRESS", reply.attributes)
        self.assertNotIn("MESSAGE-INTEGRITY", reply.attributes)
        # the rogue is not authorised: its RTP goes nowhere
        self.send(rogue, to_b, ROGUE, 5)
        # B's good check, under our password, is answered with success
        good = os.urandom(12)
        b.send(self.check(ufrag, pwd.encode(), good), to_b)
        yield wait_for(lambda: self.responses(b, good))
        [reply] = self.responses(b, good)
        self.assertEqual(reply.message_class, aioice_stun.Class.RESPONSE)
        self.assertEqual(reply.attributes["XOR-MAPPED-ADDRESS"], ("127.0.0.1", b.port))
        query = yield self.ng.request(command="query", call_id="ice")
        ice = stream(query, "tt")["ICE"]
        self.assertEqual(ice["counters"]["bad-integrity"], 1)
        self.assertEqual(ice["counters"]["answered"], 1)
        self.assertEqual(a.received, [])
        self.assertEqual(stream(query, "tt")["stats"]["packets"], 5)


class SrtpDropTests(DaemonTestCase):
    """A SDES caller (RTP/SAVP) towards a plain callee."""

    SUITE = "AES_CM_128_HMAC_SHA1_80"

    @defer.inlineCallbacks
    def test_authFailuresAndReplaysDroppedAndShown(self):
        import pylibsrtp
        yield self.start()
        a, b = self.party(), self.party()
        key = os.urandom(crypto.SUITES[self.SUITE].length)
        offer = yield self.ng.request(
            command="offer", call_id="s1", from_tag="ft",
            sdp=sdp(a.port, extra="a=crypto:1 %s inline:%s\r\n" % (
                self.SUITE, base64.b64encode(key).decode())).replace("RTP/AVP", "RTP/SAVP"),
            **{"transport-protocol": "RTP/AVP"})
        self.assertEqual(offer["result"], "ok", offer)
        answer = yield self.ng.request(command="answer", call_id="s1", from_tag="ft",
                                       to_tag="tt", sdp=sdp(b.port))
        self.assertEqual(answer["result"], "ok", answer)
        to_a = port_of(answer["sdp"])

        def session(k):
            return pylibsrtp.Session(pylibsrtp.Policy(
                k, pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
        good, wrong = session(key), session(os.urandom(len(key)))
        first = good.protect(rtp(1))
        a.send(first, to_a)
        yield wait_for(lambda: len(b.received) == 1)
        a.send(wrong.protect(rtp(2)), to_a)   # auth failure
        a.send(first, to_a)                   # replay
        a.send(good.protect(rtp(3)), to_a)
        yield wait_for(lambda: len(b.received) == 2)
        self.assertEqual([d for d, _ in b.received], [rtp(1), rtp(3)])
        query = yield self.ng.request(command="query", call_id="s1")
        ours = stream(query, "ft")
        self.assertEqual(ours["stats"]["packets"], 4)
        self.assertEqual(ours["stats"]["errors"], 2)
        self.assertEqual(ours["transforms"]["srtp-unprotect"],
                         {"auth-failures": 1, "replays": 1, "errors": 0})


class JunkNotLoggedTests(DaemonTestCase):
    """Malformed datagrams: counted, dropped, not one log line each."""

    JUNK = (b"", b"x", b"\x00" * 40, b"GET / HTTP/1.0\r\n\r\n", b"\x01" + b"\xaa" * 300,
            b"\x16\xfe\xfd" + b"\x00" * 60, b"\x80", b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"\x00" * 12)
    # each datagram takes about 1 KiB of the socket's receive buffer (212 KiB)
    ROUNDS = 10

    @defer.inlineCallbacks
    def flood(self, **overrides):
        yield self.start(**overrides)
        if overrides.get("num_threads"):
            # every worker up and its start-up lines logged before we listen
            yield self.service.engine.whenReady()
        a, b, to_a, to_b = yield self.setup_call()
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for _ in range(self.ROUNDS):
            for junk in self.JUNK:
                a.transport.write(junk, ("127.0.0.1", to_a))
        total = self.ROUNDS * len(self.JUNK)
        self.send(a, to_a)
        yield wait_for(lambda: b.received)

        def junk():
            return self.ng.request(command="statistics").addCallback(
                lambda s: s["statistics"]["totalstatistics"]["junkpackets"])
        seen = yield junk()
        for _ in range(100):
            if seen == total:
                break
            yield wait_for(lambda: True)
            seen = yield junk()
        self.assertEqual(seen, total)
        self.assertEqual([d for d, _ in b.received], [RTP])
        # the ng statistics requests above may log; nothing else may
        media_events = [e for e in events
                        if not e.get("log_namespace", "").startswith("omnirtp.control")]
        self.assertEqual(media_events, [])

    def test_inProcess(self):
        return self.flood()

    @defer.inlineCallbacks
    def test_workers(self):
        yield self.flood(num_threads=2)


class _Client(protocol.Protocol):
    """A TCP client that records what it receives and when it is closed."""

    def __init__(self):
        self.data = b""
        self.closed = False

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.closed = True


class SlowControlClientTests(DaemonTestCase):
    """The CLI and HTTP on one port (as 9900): a silent client and one that
    sends a byte every 0.3 s neither block a normal client nor stay: both are
    dropped once control-timeout (here 1.5 s) has passed."""

    @defer.inlineCallbacks
    def test_slowClientsDroppedOthersServed(self):
        port = free_port(socket.SOCK_STREAM)
        yield self.start(listen_cli=(("127.0.0.1", port),),
                         listen_http=(("127.0.0.1", port),), control_timeout=1.5)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        silent = _Client()
        yield connectProtocol(endpoint, silent)
        trickler = _Client()
        yield connectProtocol(endpoint, trickler)
        sent = []

        def trickle():
            if trickler.closed:
                return
            sent.append(b"GET /ping HTTP/1.1\r\n"[len(sent):len(sent) + 1])
            trickler.transport.write(sent[-1])
        sender = task.LoopingCall(trickle)
        sender.start(0.3)
        self.addCleanup(lambda: sender.running and sender.stop())
        for request, reply in ((b"list timeout\n", b"TIMEOUT=60\n"),
                               (b"GET /ping HTTP/1.0\r\n\r\n", b"pong\n")):
            normal = _Client()
            yield connectProtocol(endpoint, normal)
            normal.transport.write(request)
            yield wait_for(lambda: normal.closed)
            self.assertTrue(normal.data.endswith(reply), normal.data)
        yield wait_for(lambda: silent.closed and trickler.closed, timeout=10)
        self.assertEqual((silent.data, trickler.data), (b"", b""))
        # the trickler got through less than its 20-byte request line
        self.assertLess(len(sent), 20)
