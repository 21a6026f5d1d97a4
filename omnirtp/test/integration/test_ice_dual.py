"""ICE on one interface name with an IPv4 and an IPv6 address, over real UDP.

The daemon runs in this process (as in ``test_webrtc_e2e``) with
``interface = 127.0.0.1;::1`` (one name, two addresses), once with the
embedded engine and once with two media worker processes.  A plain SIP
party on 127.0.0.1 offers with ``ICE=force``; omnirtp offers a host
candidate on each address (the same port where it is free on both,
rtpengine 10.5's order and priorities); the callee is aioice's ICE agent
gathering on ::1 only, so the only pair that can work is on omnirtp's
second address.  ICE selects it (omnirtp controls and nominates), then RTP
flows both ways between the SIP party and aioice, through omnirtp's socket
on ::1, and after the delete every port on both addresses is free again.

``SideBySideTests`` sends the same offers and answers (an IPv4 and an IPv6
SIP party, with ``ICE=force``, with and without rtcp-mux) to Debian's
rtpengine 10.5 and to an omnirtp daemon (twistd, from this checkout), both
with ``--interface=127.0.0.1 --interface=::1``, and compares the replies as
the side-by-side corpus does (``omnirtp.test.sdpnorm``; ports are named per
address, so whether both candidates share a number is checked above, not
there).

It needs a usable ::1: when the host has none each test runs itself again
in a network namespace it makes (``test_ipv6.needs_ipv6``); it never skips.
"""

import asyncio
import os
import re
import socket

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from omnirtp.config.model import Config, InterfaceSpec
from omnirtp.control import bencode
from omnirtp.service import build
from omnirtp.test import corpus
from omnirtp.test.integration.peers import (
    ROOT, as_text, find_program, free_port, free_port_range, listen_party)
from omnirtp.test.integration.reference import omnirtp_daemon, rtpengine_daemon
from omnirtp.test.integration.test_daemon import NGClient, wait_for
from omnirtp.test.integration.test_ice_aioice import AsyncioThread, with_timeout
from omnirtp.test.integration.test_ipv6 import needs_ipv6

try:
    import aioice
    import aioice.ice
except ImportError:  # pragma: no cover - setup.cfg installs it
    aioice = None

V4 = "127.0.0.1"
V6 = "::1"
CALL = "ice-dual"


def phone_sdp(port):
    return ("v=0\r\no=phone 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n" % (V4, V4, port))


def rtp(seq, fill):
    return (bytes([0x80, 0x00, seq >> 8, seq & 0xFF]) + (seq * 160).to_bytes(4, "big")
            + (0x1234 + fill).to_bytes(4, "big") + bytes([fill]) * 160)


def attribute(sdp, name):
    return [line[len(name) + 3:] for line in sdp.split("\r\n") if line.startswith("a=%s:" % name)]


def media_port(sdp):
    return int(re.search(r"^m=audio (\d+) ", sdp, re.M).group(1))


def bindable(address, port):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.bind((address, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class DualStackIceTests(TestCase):
    timeout = 60
    num_threads = 0

    @defer.inlineCallbacks
    def setUp(self):
        if aioice is None:
            raise AssertionError("aioice is not installed (setup.cfg lists it)")
        # aioice gathers on ::1 only: omnirtp's IPv4 candidate cannot pair
        self.patch(aioice.ice, "get_host_addresses", lambda use_ipv4=True, use_ipv6=True: [V6])
        self.loop = AsyncioThread()
        self.addCleanup(self.loop.stop)
        self.ports = free_port_range(100)
        config = Config(interfaces=(InterfaceSpec("default", V4, None), InterfaceSpec("default", V6, None)),
                        listen_ng=((V4, 0),), port_min=self.ports[0], port_max=self.ports[1],
                        num_threads=self.num_threads)
        self.service = build(config, reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        ng_service = [s for s in self.service if hasattr(s, "ports")][0]
        yield wait_for(lambda: ng_service.ports)
        host = ng_service.ports[0].getHost()
        self.ng = NGClient((host.host, host.port))
        port = reactor.listenUDP(0, self.ng, interface=V4)
        self.addCleanup(port.stopListening)

    def request(self, **request):
        self.ng.seq += 1
        cookie = b"d%d_%d" % (os.getpid(), self.ng.seq)
        d = self.ng.send_raw(cookie + b" " + bencode.encode(request))
        return d.addCallback(lambda raw: as_text(bencode.decode(raw.split(b" ", 1)[1])))

    @needs_ipv6
    @defer.inlineCallbacks
    def test_aioice_reaches_the_second_address(self):
        phone = listen_party(self, V4)
        phone_port = phone.transport.getHost().port
        offer = yield self.request(command="offer", **{"call-id": CALL, "from-tag": "phone",
                                                      "sdp": phone_sdp(phone_port), "ICE": "force"})
        self.assertEqual(offer["result"], "ok", offer)
        sdp = offer["sdp"]
        port = media_port(sdp)
        self.assertIn("c=IN IP4 %s\r\n" % V4, sdp)
        candidates = [c.split() for c in attribute(sdp, "candidate")]
        # rtpengine 10.5's order: component 1 on each address, then component 2;
        # local preference 65535 for the c= line's address, 65534 for the next
        self.assertEqual([(c[1], c[4]) for c in candidates], [("1", V4), ("1", V6), ("2", V4), ("2", V6)])
        self.assertEqual([int(c[3]) for c in candidates], [2130706431, 2130706175, 2130706430, 2130706174])
        self.assertEqual(candidates[0][0], candidates[2][0])
        self.assertEqual(candidates[1][0], candidates[3][0])
        self.assertNotEqual(candidates[0][0], candidates[1][0])
        self.assertEqual(int(candidates[0][5]), port)
        v6_port = int(candidates[1][5])
        # the same port where it is free on ::1 too (test_ice_bases checks
        # that; here another program may hold it: the range was chosen free
        # on 127.0.0.1), else another of the range
        self.assertTrue(self.ports[0] <= v6_port < self.ports[1] and v6_port % 2 == 0, v6_port)
        self.assertEqual([int(c[5]) for c in candidates[2:]], [port + 1, v6_port + 1])
        for address, p in ((V4, port), (V6, v6_port), (V4, port + 1), (V6, v6_port + 1)):
            self.assertFalse(bindable(address, p), "%s %d not bound" % (address, p))
        [ufrag] = attribute(sdp, "ice-ufrag")
        [pwd] = attribute(sdp, "ice-pwd")

        async def gather():
            conn = aioice.Connection(ice_controlling=False, components=1, use_ipv4=False, use_ipv6=True)
            await conn.gather_candidates()
            return conn

        conn = yield self.loop.run(gather())
        self.addCleanup(lambda: self.loop.run(conn.close()))
        [mine] = conn.local_candidates
        self.assertEqual(mine.host, V6)
        answer_sdp = ("v=0\r\no=callee 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
                      "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
                      "a=ice-ufrag:%s\r\na=ice-pwd:%s\r\na=candidate:%s\r\na=sendrecv\r\n"
                      % (mine.port, conn.local_username, conn.local_password, mine.to_sdp()))
        # (ICE=remove towards the SIP party, as Kamailio's answer flags say)
        answer = yield self.request(command="answer", **{"call-id": CALL, "from-tag": "phone",
                                                        "to-tag": "callee", "sdp": answer_sdp,
                                                        "ICE": "remove"})
        self.assertEqual(answer["result"], "ok", answer)
        phone_side = media_port(answer["sdp"])

        async def connect():
            conn.remote_username = ufrag
            conn.remote_password = pwd
            for c in attribute(sdp, "candidate"):
                if c.split()[1] == "1":
                    await conn.add_remote_candidate(aioice.Candidate.from_sdp(c))
            await conn.add_remote_candidate(None)
            await conn.connect()

        yield with_timeout(self.loop.run(connect()), 30, "aioice's connect()")

        # aioice -> omnirtp (::1) -> the phone, from omnirtp's phone-side port
        got = phone.wait(3)
        for seq in range(5):
            yield self.loop.run(conn.send(rtp(seq, 1)))
        received = yield with_timeout(got, 15, "aioice's RTP at the phone")
        self.assertEqual(received[0][0], rtp(0, 1))
        self.assertEqual(received[0][1], (V4, phone_side))

        # the phone -> omnirtp -> aioice, out of omnirtp's socket on ::1
        async def receive(n):
            out = []
            while len(out) < n:
                out.append(await asyncio.wait_for(conn.recv(), 10))
            return out

        incoming = self.loop.run(receive(3))
        sends = [reactor.callLater(0.02 * i, phone.transport.write, rtp(100 + i, 2), (V4, phone_side))
                 for i in range(10)]
        self.addCleanup(lambda: [c.cancel() for c in sends if c.active()])
        back = yield with_timeout(incoming, 15, "the phone's RTP at aioice")
        self.assertIn(rtp(100, 2), back)

        # the delete frees every port on both addresses
        deleted = yield self.request(command="delete", **{"call-id": CALL, "delete-delay": 0})
        self.assertEqual(deleted["result"], "ok", deleted)
        keys = [(V4, port), (V4, port + 1), (V6, v6_port), (V6, v6_port + 1)]
        yield wait_for(lambda: all(bindable(*key) for key in keys), timeout=10)


    @needs_ipv6
    @defer.inlineCallbacks
    def test_aioice_offers_from_the_second_address(self):
        """aioice (controlling) offers from ::1; the SIP party answers; our
        answer to aioice carries a candidate on each address (bound at the
        answer: with num-threads 2 the call may be parked until then), and
        media flows through the ::1 socket."""
        phone = listen_party(self, V4)
        phone_port = phone.transport.getHost().port

        async def gather():
            conn = aioice.Connection(ice_controlling=True, components=1, use_ipv4=False, use_ipv6=True)
            await conn.gather_candidates()
            return conn

        conn = yield self.loop.run(gather())
        self.addCleanup(lambda: self.loop.run(conn.close()))
        [mine] = conn.local_candidates
        offer_sdp = ("v=0\r\no=browser 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
                     "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
                     "a=ice-ufrag:%s\r\na=ice-pwd:%s\r\na=candidate:%s\r\na=sendrecv\r\n"
                     % (mine.port, conn.local_username, conn.local_password, mine.to_sdp()))
        # (the SIP party is on IPv4: `address family` says so, as for any
        # IPv6 offerer calling an IPv4 party)
        offer = yield self.request(command="offer", **{"call-id": CALL, "from-tag": "browser",
                                                      "sdp": offer_sdp, "ICE": "remove",
                                                      "address family": "IP4"})
        self.assertEqual(offer["result"], "ok", offer)
        self.assertEqual(attribute(offer["sdp"], "candidate"), [])
        phone_side = media_port(offer["sdp"])
        if self.num_threads:
            # nothing but plain sockets so far: parked in the control process
            self.assertEqual(self.service.engine.parked(), {CALL})
        answer = yield self.request(command="answer", **{"call-id": CALL, "from-tag": "browser",
                                                        "to-tag": "phone", "sdp": phone_sdp(phone_port),
                                                        "ICE": "force"})
        self.assertEqual(answer["result"], "ok", answer)
        if self.num_threads:
            self.assertEqual(self.service.engine.parked(), set())
            self.assertEqual(self.service.engine.park_counts["handed"], 1)
        sdp = answer["sdp"]
        port = media_port(sdp)
        candidates = [c.split() for c in attribute(sdp, "candidate")]
        # the offer's family first (as rtpengine 10.5: SideBySideTests.dual_answer)
        self.assertEqual([(c[1], c[3], c[4]) for c in candidates],
                         [("1", "2130706431", V6), ("1", "2130706175", V4),
                          ("2", "2130706430", V6), ("2", "2130706174", V4)])
        self.assertIn("c=IN IP6 ::1\r\n", sdp)
        self.assertEqual(int(candidates[0][5]), port)
        v4_port = int(candidates[1][5])
        [ufrag] = attribute(sdp, "ice-ufrag")
        [pwd] = attribute(sdp, "ice-pwd")

        async def connect():
            conn.remote_username = ufrag
            conn.remote_password = pwd
            for c in attribute(sdp, "candidate"):
                await conn.add_remote_candidate(aioice.Candidate.from_sdp(c))
            await conn.add_remote_candidate(None)
            await conn.connect()

        yield with_timeout(self.loop.run(connect()), 30, "aioice's connect()")
        got = phone.wait(3)
        for seq in range(5):
            yield self.loop.run(conn.send(rtp(seq, 3)))
        received = yield with_timeout(got, 15, "aioice's RTP at the phone")
        self.assertEqual(received[0], (rtp(0, 3), (V4, phone_side)))
        incoming = self.loop.run(asyncio.wait_for(conn.recv(), 10))
        sends = [reactor.callLater(0.02 * i, phone.transport.write, rtp(200 + i, 4), (V4, phone_side))
                 for i in range(10)]
        self.addCleanup(lambda: [c.cancel() for c in sends if c.active()])
        back = yield with_timeout(incoming, 15, "the phone's RTP at aioice")
        self.assertEqual(back[:2], rtp(200, 4)[:2])
        deleted = yield self.request(command="delete", **{"call-id": CALL, "delete-delay": 0})
        self.assertEqual(deleted["result"], "ok", deleted)
        keys = [(V6, port), (V6, port + 1), (V4, v4_port), (V4, v4_port + 1)]
        yield wait_for(lambda: all(bindable(*key) for key in keys), timeout=10)


class WorkerDualStackIceTests(DualStackIceTests):
    """The same with ``num-threads = 2``: the call's ports on both addresses
    are bound in its media worker."""

    num_threads = 2


SIP_OFFER6 = corpus.SIP_OFFER.replace("IN IP4 192.0.2.10", "IN IP6 2001:db8::10")
SIP_ANSWER6 = corpus.SIP_ANSWER.replace("IN IP4 198.51.100.20", "IN IP6 2001:db8::20")
BROWSER_OFFER6 = ("v=0\r\no=browser 1 1 IN IP6 2001:db8::30\r\ns=-\r\nc=IN IP6 2001:db8::30\r\n"
                  "t=0 0\r\nm=audio 50000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
                  "a=ice-ufrag:Br0w\r\na=ice-pwd:Br0wserPassword0123456789\r\n"
                  "a=candidate:1 1 udp 2130706431 2001:db8::30 50000 typ host\r\na=sendrecv\r\n")


class SideBySideTests(SynchronousTestCase):
    """rtpengine 10.5 and omnirtp with one interface name on 127.0.0.1 and ::1."""

    maxDiff = None

    CASES = [
        corpus.Case("dual_ice_ip4", [corpus.offer(corpus.SIP_OFFER, ICE="force"),
                                     corpus.answer(corpus.SIP_ANSWER), corpus.delete()]),
        corpus.Case("dual_ice_ip6", [corpus.offer(SIP_OFFER6, ICE="force"),
                                     corpus.answer(SIP_ANSWER6), corpus.delete()]),
        corpus.Case("dual_ice_mux", [corpus.offer(corpus.SIP_OFFER, ICE="force",
                                                  **{"rtcp-mux": ["require"]}),
                                     corpus.answer(corpus.SIP_ANSWER)]),
        corpus.Case("dual_plain", [corpus.offer(corpus.SIP_OFFER), corpus.answer(corpus.SIP_ANSWER)]),
        # an ICE offerer on IPv6 (its candidates stripped towards the SIP
        # side), answered with ICE=force: the candidates go into the answer
        corpus.Case("dual_answer", [
            corpus.offer(BROWSER_OFFER6, ICE="remove"),
            corpus.answer(corpus.SIP_ANSWER, ICE="force")]),
    ]

    def replies(self, kind):
        port_min, port_max = free_port_range(60)
        if kind == "rtpengine":
            daemon = rtpengine_daemon(free_port(), port_min, port_max, [V4, V6],
                                      binary=find_program("rtpengine"))
        else:
            daemon = omnirtp_daemon(free_port(), port_min, port_max, [V4, V6], root=ROOT)
        self.addCleanup(daemon.stop)
        daemon.start()
        return {case.name: corpus.run_case(case, daemon.request, "dual%d-%s" % (os.getpid(), kind))
                for case in self.CASES}

    @needs_ipv6
    def test_same_replies(self):
        want = self.replies("rtpengine")
        got = self.replies("omnirtp")
        # what both must say (so that two wrong answers cannot agree)
        cands = [line for line in want["dual_ice_ip4"][0]["sdp"] if line.startswith("a=candidate:")]
        self.assertEqual([line.split()[1:5] for line in cands], [
            ["1", "UDP", "2130706431", V4], ["1", "UDP", "2130706175", V6],
            ["2", "UDP", "2130706430", V4], ["2", "UDP", "2130706174", V6]])
        cands = [line for line in want["dual_ice_ip6"][0]["sdp"] if line.startswith("a=candidate:")]
        self.assertEqual([line.split()[4] for line in cands], [V6, V4, V6, V4])
        self.assertIn("c=IN IP6 ::1", want["dual_ice_ip6"][0]["sdp"])
        self.assertFalse([line for line in want["dual_plain"][0]["sdp"] if line.startswith("a=candidate:")])
        cands = [line for line in want["dual_answer"][1]["sdp"] if line.startswith("a=candidate:")]
        self.assertEqual([line.split()[4] for line in cands], [V6, V4, V6, V4])
        for case in self.CASES:
            self.assertEqual(got[case.name], want[case.name], case.name)
