"""The whole daemon in-process over real UDP on 127.0.0.1.

Each test builds the service from a ``Config`` (as ``twistd omnirtp`` does),
starts it on the real reactor, talks ng to it over UDP like Kamailio and
plays both call parties with UDP sockets.
"""

import json
import os
import signal

from twisted.internet import defer, protocol, reactor, task
from twisted.trial.unittest import TestCase

from omnirtp.config.model import Config, InterfaceSpec
from omnirtp.control import bencode
from omnirtp.sdp.model import SessionDescription, inspect
from omnirtp.test import corpus
from omnirtp.test.integration.peers import as_text, free_port_range, listen_party
from omnirtp.service import build

RTP = b"\x80\x00\x00\x01\x00\x00\x00\xa0\x12\x34\x56\x78" + b"\xd5" * 160
RTCP = b"\x81\xc8\x00\x06\x12\x34\x56\x78" + b"\x00" * 20


def sdp(port, addr="127.0.0.1", extra=""):
    return ("v=0\r\no=u 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0 8\r\n%s" % (addr, addr, port, extra))


def port_of(sdp_text):
    return inspect(SessionDescription.parse(sdp_text))[0].rtp[1]


@defer.inlineCallbacks
def wait_for(predicate, timeout=5.0, step=0.01):
    """Poll ``predicate`` on the reactor until true; fail after ``timeout``."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError("condition not met within %.1f s" % timeout)
        yield task.deferLater(reactor, step, lambda: None)
        waited += step


class NGClient(protocol.DatagramProtocol):
    """Kamailio's side of ng: one request at a time, matched by cookie."""

    def __init__(self, server):
        self.server = server
        self.pending = {}
        self.raw = []
        self.seq = 0

    def send_raw(self, datagram):
        d = defer.Deferred()
        cookie = datagram.split(b" ", 1)[0]
        self.pending.setdefault(cookie, []).append(d)
        self.transport.write(datagram, self.server)
        return d

    def request(self, **kw):
        self.seq += 1
        msg = {k.replace("_", "-"): v for k, v in kw.items()}
        cookie = b"%d_%d" % (os.getpid(), self.seq)
        d = self.send_raw(cookie + b" " + bencode.encode(msg))
        return d.addCallback(lambda raw: as_text(bencode.decode(raw.split(b" ", 1)[1])))

    def datagramReceived(self, data, addr):
        self.raw.append(data)
        cookie = data.split(b" ", 1)[0]
        waiters = self.pending.get(cookie)
        if waiters:
            waiters.pop(0).callback(data)
            if not waiters:
                del self.pending[cookie]


class DaemonTestCase(TestCase):
    """Starts one daemon per test with the given options."""

    timeout = 60
    options = {}

    def config(self, **overrides):
        # a free range outside the kernel's ephemeral ports
        self.ports = free_port_range(1000)
        values = dict(
            interfaces=(InterfaceSpec("default", "127.0.0.1", None),),
            listen_ng=(("127.0.0.1", 0),),
            port_min=self.ports[0], port_max=self.ports[1], num_threads=0,
            endpoint_learning="immediate")
        values.update(self.options)
        values.update(overrides)
        return Config(**values)

    @defer.inlineCallbacks
    def start(self, **overrides):
        self.service = build(self.config(**overrides), reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        ng_service = [s for s in self.service if hasattr(s, "ports")][0]
        yield wait_for(lambda: ng_service.ports)
        host = ng_service.ports[0].getHost()
        self.ng = NGClient((host.host, host.port))
        port = reactor.listenUDP(0, self.ng, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pong = yield self.ng.request(command="ping")
        self.assertEqual(pong, {"result": "pong"})

    def party(self):
        return listen_party(self)

    @defer.inlineCallbacks
    def setup_call(self, call_id="c1", offer_extra=None, answer_extra=None):
        """A and B with a negotiated call; returns (a, b, port_for_a, port_for_b)."""
        a, b = self.party(), self.party()
        offer = yield self.ng.request(command="offer", call_id=call_id, from_tag="ft",
                                      sdp=sdp(a.port), **(offer_extra or {}))
        self.assertEqual(offer["result"], "ok", offer)
        # B takes its RTCP on its RTP socket too (a=rtcp names the same port)
        answer = yield self.ng.request(command="answer", call_id=call_id, from_tag="ft",
                                       to_tag="tt", sdp=sdp(b.port, extra="a=rtcp:%d\r\n"
                                                            % b.port),
                                       **(answer_extra or {}))
        self.assertEqual(answer["result"], "ok", answer)
        return a, b, port_of(answer["sdp"]), port_of(offer["sdp"])

    def send(self, party, port, data=RTP, times=1):
        for _ in range(times):
            party.transport.write(data, ("127.0.0.1", port))


class RelayTests(DaemonTestCase):

    @defer.inlineCallbacks
    def test_offerAnswerRelayBothWaysWithRTCP(self):
        """RTP and RTCP flow A->B and B->A, each from the port advertised to the receiver."""
        yield self.start()
        a, b, to_a, to_b = yield self.setup_call()
        self.send(a, to_a, RTP, 3)
        self.send(a, to_a + 1, RTCP)
        yield wait_for(lambda: len(b.received) >= 4)
        self.assertEqual({d for d, _ in b.received}, {RTP, RTCP})
        self.assertEqual({addr for d, addr in b.received if d == RTP}, {("127.0.0.1", to_b)})
        self.send(b, to_b, RTP, 2)
        yield wait_for(lambda: len(a.received) >= 2)
        self.assertEqual(a.received[0], (RTP, ("127.0.0.1", to_a)))
        query = yield self.ng.request(command="query", call_id="c1")
        self.assertEqual(query["totals"]["RTP"]["packets"], 5)
        self.assertEqual(query["totals"]["RTCP"]["packets"], 1)
        self.assertEqual(query["totals"]["RTP"]["bytes"], 5 * len(RTP))

    @defer.inlineCallbacks
    def test_rtcpMuxOnOneSide(self):
        """A multiplexes RTCP on its RTP port (rtcp-mux, demux towards B); B
        does not: RTCP is split onto B's RTCP port and merged back onto A's."""
        yield self.start()
        a, b, b_rtcp = self.party(), self.party(), self.party()
        offer = yield self.ng.request(
            command="offer", call_id="mux", from_tag="ft",
            sdp=sdp(a.port, extra="a=rtcp:%d\r\na=rtcp-mux\r\n" % a.port),
            **{"rtcp-mux": ["demux"]})
        self.assertNotIn("a=rtcp-mux", offer["sdp"])
        answer = yield self.ng.request(
            command="answer", call_id="mux", from_tag="ft", to_tag="tt",
            sdp=sdp(b.port, extra="a=rtcp:%d\r\n" % b_rtcp.port))
        self.assertIn("a=rtcp-mux", answer["sdp"])
        to_a, to_b = port_of(answer["sdp"]), port_of(offer["sdp"])
        self.assertIn("a=rtcp:%d\r\n" % to_a, answer["sdp"])
        self.send(a, to_a, RTP)
        self.send(a, to_a, RTCP)
        yield wait_for(lambda: b.received and b_rtcp.received)
        self.assertEqual(b.received, [(RTP, ("127.0.0.1", to_b))])
        self.assertEqual(b_rtcp.received, [(RTCP, ("127.0.0.1", to_b + 1))])
        self.send(b, to_b, RTP)
        self.send(b_rtcp, to_b + 1, RTCP)
        yield wait_for(lambda: len(a.received) == 2)
        self.assertEqual(sorted(a.received), sorted([(RTP, ("127.0.0.1", to_a)),
                                                     (RTCP, ("127.0.0.1", to_a))]))

    @defer.inlineCallbacks
    def test_learnsRealSourcePort(self):
        """A behind NAT sends from another port: B's media reaches that port."""
        yield self.start()
        a, b, to_a, to_b = yield self.setup_call()
        nat = self.party()
        self.send(nat, to_a)
        yield wait_for(lambda: b.received)
        self.send(b, to_b)
        yield wait_for(lambda: nat.received)
        self.assertEqual(a.received, [])

    @defer.inlineCallbacks
    def test_strictSourceDrops(self):
        """With strict-source a confirmed endpoint is kept: other sources dropped, counted."""
        yield self.start()
        a, b, to_a, to_b = yield self.setup_call(offer_extra={"flags": ["strict-source"]},
                                                 answer_extra={"flags": ["strict source"]})
        self.send(a, to_a)
        yield wait_for(lambda: len(b.received) == 1)
        intruder = self.party()
        self.send(intruder, to_a, RTP, 3)
        self.send(a, to_a)
        yield wait_for(lambda: len(b.received) == 2)
        query = yield self.ng.request(command="query", call_id="c1")
        self.assertEqual(query["totals"]["RTP"]["errors"], 3)

    @defer.inlineCallbacks
    def test_junkDroppedCallKeepsRelaying(self):
        """Junk to a media port is dropped and counted; the call relays on."""
        yield self.start()
        a, b, to_a, to_b = yield self.setup_call()
        for junk in (b"", b"x", b"\x00" * 40, b"GET / HTTP/1.0\r\n\r\n",
                     b"\x01" + os.urandom(1400), b"\x16\xfe\xfd" + os.urandom(100)):
            a.transport.write(junk, ("127.0.0.1", to_a))
        self.send(a, to_a)
        yield wait_for(lambda: b.received)
        self.assertEqual([d for d, _ in b.received], [RTP])
        stats = yield self.ng.request(command="statistics")
        self.assertEqual(stats["statistics"]["totalstatistics"]["junkpackets"], 6)


class ControlTests(DaemonTestCase):

    @defer.inlineCallbacks
    def test_retransmittedCookie(self):
        """The same datagram twice: byte-identical replies, one call, ports taken once."""
        yield self.start()
        a = self.party()
        datagram = b"retrans_1 " + bencode.encode(
            {"command": "offer", "call-id": "r1", "from-tag": "f", "sdp": sdp(a.port)})
        first = yield self.ng.send_raw(datagram)
        before = yield self.ng.request(command="statistics")
        second = yield self.ng.send_raw(datagram)
        after = yield self.ng.request(command="statistics")
        self.assertEqual(first, second)
        self.assertEqual(before["statistics"]["ports"], after["statistics"]["ports"])
        self.assertEqual(after["statistics"]["currentstatistics"]["sessionsown"], 1)
        self.assertEqual(after["statistics"]["controlstatistics"]["offercount"], 1)

    @defer.inlineCallbacks
    def test_maxSessions(self):
        """Beyond max-sessions: 'load limit' when supported, else the error text."""
        yield self.start(max_sessions=1)
        yield self.setup_call("m1")
        limited = yield self.ng.request(command="offer", call_id="m2", from_tag="f",
                                        sdp=sdp(4000), supports=["load limit"])
        self.assertEqual(limited, {"result": "load limit",
                                   "message": "Parallel session limit reached"})
        plain = yield self.ng.request(command="offer", call_id="m2", from_tag="f",
                                      sdp=sdp(4000))
        self.assertEqual(plain, {"result": "error",
                                 "error-reason": "Parallel session limit reached"})
        again = yield self.ng.request(command="offer", call_id="m1", from_tag="ft",
                                      to_tag="tt", sdp=sdp(4000))
        self.assertEqual(again["result"], "ok")

    @defer.inlineCallbacks
    def test_portExhaustion(self):
        """Out of ports: rtpengine's error, nothing half-created, ports back."""
        low, high = free_port_range(4)
        yield self.start(port_min=low, port_max=high)
        yield self.setup_call("p1")
        before = yield self.ng.request(command="statistics")
        reply = yield self.ng.request(command="offer", call_id="p2", from_tag="f",
                                      sdp=sdp(4000))
        self.assertEqual(reply, {"result": "error", "error-reason": "Ran out of ports"})
        after = yield self.ng.request(command="statistics")
        self.assertEqual(before["statistics"]["ports"], after["statistics"]["ports"])
        listed = yield self.ng.request(command="list")
        self.assertEqual(listed["calls"], ["p1"])
        yield self.ng.request(command="delete", call_id="p1", delete_delay=0)
        reply = yield self.ng.request(command="offer", call_id="p2", from_tag="f",
                                      sdp=sdp(4000))
        self.assertEqual(reply["result"], "ok")

    @defer.inlineCallbacks
    def test_timeoutRemovesCall(self):
        """An answered call lives while media flows (longer than `timeout`)
        and for `timeout` seconds after its last packet, then goes and is
        counted.  Both bounds are behaviour, not speed: a slow host only
        makes the call go later."""
        timeout = 2
        yield self.start(timeout=timeout)
        a, b, to_a, to_b = yield self.setup_call("t1")
        started = reactor.seconds()
        while True:
            last_sent = reactor.seconds()
            self.send(a, to_a)
            if last_sent - started >= 1.5 * timeout:
                break
            yield task.deferLater(reactor, 0.2, lambda: None)
        yield wait_for(lambda: b.received)
        listed = yield self.ng.request(command="list")
        self.assertEqual(listed["calls"], ["t1"])
        stats = yield self.ng.request(command="statistics")
        self.assertEqual(stats["statistics"]["totalstatistics"]["timeoutsessions"], 0)
        yield wait_for(lambda: not self.service.registry.calls, timeout=15)
        self.assertGreaterEqual(reactor.seconds() - last_sent, timeout)
        stats = yield self.ng.request(command="statistics")
        self.assertEqual(stats["statistics"]["totalstatistics"]["timeoutsessions"], 1)

    @defer.inlineCallbacks
    def test_deleteDelayKeepsRelayingThenRemoves(self):
        """A delayed delete leaves the call relaying until the delay passes."""
        yield self.start()
        a, b, to_a, to_b = yield self.setup_call("d1")
        reply = yield self.ng.request(command="delete", call_id="d1", from_tag="ft",
                                      delete_delay="1")
        self.assertEqual(reply["result"], "ok")
        self.send(a, to_a)
        yield wait_for(lambda: b.received)
        yield wait_for(lambda: not self.service.registry.calls, timeout=10)
        stats = yield self.ng.request(command="statistics")
        self.assertEqual(
            stats["statistics"]["totalstatistics"]["regularterminatedsessions"], 1)

    @defer.inlineCallbacks
    def test_badInputKeepsDaemonAndCalls(self):
        """Garbage, truncated, oversized and deeply nested requests
        (corpus.BAD_INPUT) each get an error reply under their own cookie;
        ping and a live call keep working.  The exact error texts are
        compared with the live rtpengine 10.5's replies in
        test_side_by_side.BadInputTests."""
        yield self.start()
        a, b, to_a, to_b = yield self.setup_call("live")
        for i, case in enumerate(corpus.BAD_INPUT):
            cookie = b"g%d" % i
            datagram = cookie + b" " + case.payload
            self.assertLessEqual(len(datagram), 65507)
            reply = yield self.ng.send_raw(datagram)
            head, _, body = reply.partition(b" ")
            self.assertEqual(head, cookie)
            decoded = json.loads(body) if body.startswith(b"{") else \
                as_text(bencode.decode(body))
            self.assertEqual(sorted(decoded), ["error-reason", "result"], case.name)
            self.assertEqual(decoded["result"], "error", case.name)
            self.assertTrue(decoded["error-reason"], case.name)
        pong = yield self.ng.request(command="ping")
        self.assertEqual(pong, {"result": "pong"})
        self.send(a, to_a)
        yield wait_for(lambda: b.received)


class WorkerTests(DaemonTestCase):
    """num-threads = 2: media in worker processes."""

    @defer.inlineCallbacks
    def test_workerKilledMidCall(self):
        """Killing the worker of one call drops that call; the other relays on."""
        yield self.start(num_threads=2)
        pool = self.service.engine
        yield pool.whenReady()
        calls = []
        for cid in ("w1", "w2"):
            calls.append((yield self.setup_call(cid)))
        self.assertEqual(sorted(w["calls"] for w in pool.workers), [1, 1])
        victim = next(slot.pid for slot in pool.slots if "w1" in slot.calls)
        a1, b1, to_a1, to_b1 = calls[0]
        a2, b2, to_a2, to_b2 = calls[1]
        self.send(a1, to_a1)
        self.send(a2, to_a2)
        yield wait_for(lambda: b1.received and b2.received)
        os.kill(victim, signal.SIGKILL)
        yield wait_for(lambda: "w1" not in self.service.registry.calls, timeout=10)
        self.assertIn("w2", self.service.registry.calls)
        self.send(a2, to_a2, RTP, 3)
        yield wait_for(lambda: len(b2.received) == 4)
        query = yield self.ng.request(command="query", call_id="w1")
        self.assertEqual(query, {"result": "error", "error-reason": "Unknown call-id"})
        stats = yield self.ng.request(command="statistics")
        self.assertEqual(stats["statistics"]["totalstatistics"]["lostsessions"], 1)
        yield pool.whenReady()
        yield self.setup_call("w3")
