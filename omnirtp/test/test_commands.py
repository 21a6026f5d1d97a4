"""ng commands through the Dispatcher, on a Clock and an in-memory engine."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test.fakes import ControlStackTests
from omnirtp.call.negotiate import Interfaces, Negotiator
from omnirtp.call.registry import CallRegistry, Timeouts
from omnirtp.config.model import InterfaceSpec
from omnirtp.control.commands import Dispatcher
from omnirtp.errors import LoadLimit, NGError
from omnirtp.sdp.model import SessionDescription, inspect
from omnirtp.test.test_registry import CountingEngine

OFFER = (
    "v=0\r\n"
    "o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=ptime:20\r\n"
)

ANSWER = (
    "v=0\r\n"
    "o=bob 2808844564 2808844564 IN IP4 198.51.100.20\r\n"
    "s=-\r\n"
    "c=IN IP4 198.51.100.20\r\n"
    "t=0 0\r\n"
    "m=audio 3456 RTP/AVP 0 101\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
)


def media_port(sdp, index=0):
    return inspect(SessionDescription.parse(sdp))[index].rtp


class DispatcherTests(ControlStackTests, SynchronousTestCase):

    negotiator_args = {"instance_id": "abc123"}

    def offer(self, call_id="c1", from_tag="ft", **kw):
        return self.call(command="offer", call_id=call_id, from_tag=from_tag,
                         sdp=kw.pop("sdp", OFFER), **kw)

    def answer(self, call_id="c1", from_tag="ft", to_tag="tt", **kw):
        return self.call(command="answer", call_id=call_id, from_tag=from_tag,
                         to_tag=to_tag, sdp=kw.pop("sdp", ANSWER), **kw)

    def test_ping(self):
        self.assertEqual(self.call(command="ping"), {"result": "pong"})

    def test_unknownCommand(self):
        self.assertEqual(self.fails(command="bogus").reason, "Unrecognized command")

    def test_offerChecksInRtpengineOrder(self):
        """sdp, then call-id, then from-tag are required, in that order."""
        self.assertEqual(self.fails(command="offer").reason, "No SDP body in message")
        self.assertEqual(self.fails(command="offer", sdp=OFFER).reason,
                         "No call-id in message")
        self.assertEqual(self.fails(command="offer", sdp=OFFER, call_id="x").reason,
                         "No from-tag in message")
        self.assertEqual(self.fails(command="answer", sdp=OFFER, call_id="x",
                                    from_tag="f").reason, "No to-tag in message")

    def test_offerRewritesAddressAndPort(self):
        """The offer towards B carries our address and one of our even ports."""
        reply = self.offer(replace=["origin"])
        self.assertEqual(reply["result"], "ok")
        addr, port = media_port(reply["sdp"])
        self.assertEqual(addr, "127.0.0.1")
        self.assertEqual(port % 2, 0)
        self.assertTrue(30000 <= port < 30020)
        self.assertIn("o=alice 2890844526 2890844526 IN IP4 127.0.0.1", reply["sdp"])
        self.assertIn("a=rtcp:%d" % (port + 1), reply["sdp"])

    def test_answerGoesBackThroughOtherPorts(self):
        """The answer to A names A's own ports, different from B's."""
        b_port = media_port(self.offer()["sdp"])[1]
        a_port = media_port(self.answer()["sdp"])[1]
        self.assertNotEqual(a_port, b_port)
        a_sock = self.engine.configured[("127.0.0.1", a_port)]
        b_sock = self.engine.configured[("127.0.0.1", b_port)]
        self.assertEqual(a_sock["endpoint"], ("192.0.2.10", 49170))
        self.assertEqual(a_sock["peer"], ("127.0.0.1", b_port))
        self.assertEqual(b_sock["endpoint"], ("198.51.100.20", 3456))
        self.assertEqual(b_sock["peer"], ("127.0.0.1", a_port))
        rtcp = self.engine.configured[("127.0.0.1", b_port + 1)]
        self.assertEqual(rtcp["endpoint"], ("198.51.100.20", 3457))

    def test_reinviteKeepsPorts(self):
        """A re-offer with both tags keeps every port, in either direction."""
        b_port = media_port(self.offer()["sdp"])[1]
        a_port = media_port(self.answer()["sdp"])[1]
        again = media_port(self.offer(to_tag="tt")["sdp"])[1]
        self.assertEqual(again, b_port)
        # callee re-INVITEs: from-tag is the callee's
        reverse = media_port(self.offer(from_tag="tt", to_tag="ft", sdp=ANSWER)["sdp"])[1]
        self.assertEqual(reverse, a_port)
        self.assertEqual(len(self.engine.held["c1"]), 2)

    def test_repeatedAnswerAndFork(self):
        """183 then 200 (same or another to-tag) both succeed on the same ports."""
        self.offer()
        first = media_port(self.answer()["sdp"])[1]
        second = media_port(self.answer()["sdp"])[1]
        forked = media_port(self.answer(to_tag="other")["sdp"])[1]
        self.assertEqual(first, second)
        self.assertEqual(first, forked)

    def test_lateOffer(self):
        """Offer in the 200 OK (tags swapped by Kamailio), answer in the ACK."""
        reply = self.offer(from_tag="callee", to_tag="caller")
        self.assertEqual(reply["result"], "ok")
        reply = self.answer(from_tag="callee", to_tag="caller")
        self.assertEqual(reply["result"], "ok")
        self.assertEqual(len(self.registry.calls), 1)

    def test_answerUnknownCall(self):
        self.assertEqual(self.fails(command="answer", call_id="nope", from_tag="a",
                                    to_tag="b", sdp=ANSWER).reason, "Unknown call-id")

    def test_portExhaustionLeavesNothing(self):
        """Ran out of ports: error, no call, every port back in the pool."""
        self.engine.free = self.engine.free[:1]
        err = self.fails(command="offer", call_id="c1", from_tag="ft", sdp=OFFER)
        self.assertEqual(err.reason, "Ran out of ports")
        self.assertEqual(self.registry.calls, {})
        self.assertEqual(len(self.engine.free), 1)

    def test_loadLimit(self):
        """max-sessions refuses new calls but not re-offers of existing ones."""
        self.registry.max_sessions = 1
        self.offer()
        f = self.failureResultOf(self.dispatch(
            {"command": "offer", "call-id": "c2", "from-tag": "x", "sdp": OFFER,
             "supports": ["load limit"]}), LoadLimit)
        self.assertEqual(f.value.reason, "Parallel session limit reached")
        self.assertEqual(self.offer()["result"], "ok")

    def test_deleteDelayKeepsCallThenRemoves(self):
        """delete with the default delay marks the call; the sweep removes it."""
        self.offer()
        self.answer()
        reply = self.call(command="delete", call_id="c1", from_tag="ft")
        self.assertEqual(reply["result"], "ok")
        self.assertIn("totals", reply)
        self.assertIn("c1", self.registry.calls)
        self.clock.advance(31)
        self.registry.sweep()
        self.assertNotIn("c1", self.registry.calls)
        self.assertEqual(len(self.engine.free), 10)

    def test_deleteImmediate(self):
        self.offer()
        self.answer()
        self.call(command="delete", call_id="c1", from_tag="ft", delete_delay=0)
        self.assertNotIn("c1", self.registry.calls)
        self.assertEqual(len(self.engine.free), 10)

    def test_deleteImmediateFreesTheCall(self):
        """A call deleted now is freed by refcounting once its reply is
        built (its monologues' peer links, its one reference cycle, are
        broken), not left to the garbage collector; the reply still names
        each monologue's partner."""
        import gc
        import weakref

        self.offer()
        self.answer()
        ref = weakref.ref(self.registry.calls["c1"].monologues[0])
        enabled = gc.isenabled()
        gc.disable()
        try:
            reply = self.call(command="delete", call_id="c1", from_tag="ft", delete_delay=0)
            self.assertIsNone(ref())
        finally:
            if enabled:
                gc.enable()
        self.assertEqual(reply["tags"]["ft"]["in dialogue with"], "tt")
        self.assertEqual(reply["tags"]["tt"]["in dialogue with"], "ft")

    def test_unlinkWaitsForPendingSignalling(self):
        """CallRegistry.unlink leaves the links of a call whose signalling
        is still in progress (its lock held), and of a call still known."""
        self.offer()
        self.answer()
        call = self.registry.calls["c1"]
        a, b = call.monologues
        self.registry.unlink(call)  # still in the registry
        self.assertIs(a.peer, b)
        del self.registry.calls["c1"]
        self.registry.lock("c1").acquire()
        self.registry.unlink(call)  # its lock is held
        self.assertIs(a.peer, b)
        self.registry.lock("c1").release()
        self.registry._locks.pop("c1")
        self.registry.unlink(call)
        self.assertIsNone(a.peer)
        self.assertIsNone(b.peer)

    def test_deleteUnknown(self):
        """Unknown call: ok + warning; with the fatal flag an error."""
        self.assertEqual(self.call(command="delete", call_id="zz"),
                         {"result": "ok", "warning": "Call-ID not found or tags didn't match"})
        self.assertEqual(self.fails(command="delete", call_id="zz", flags=["fatal"]).reason,
                         "Call-ID not found or tags didn't match")

    def test_queryCounters(self):
        """query shows tags, streams and totals."""
        self.offer()
        self.answer()
        reply = self.call(command="query", call_id="c1")
        self.assertEqual(sorted(reply["tags"]), ["ft", "tt"])
        media = reply["tags"]["ft"]["medias"][0]
        self.assertEqual(media["streams"][0]["endpoint"],
                         {"family": "IPv4", "address": "192.0.2.10", "port": 49170})
        self.assertEqual(reply["totals"]["RTP"], {"packets": 0, "bytes": 0, "errors": 0})
        self.assertEqual(self.fails(command="query", call_id="zz").reason, "Unknown call-id")

    def test_queryUntagged(self):
        """Before the answer the other side shows as <untagged 0>."""
        self.offer()
        reply = self.call(command="query", call_id="c1")
        self.assertEqual(sorted(reply["tags"]), ["<untagged 0>", "ft"])
        self.assertEqual(reply["tags"]["<untagged 0>"]["tag"], "")

    def test_list(self):
        for i in range(3):
            self.offer(call_id="c%d" % i)
        self.assertEqual(sorted(self.call(command="list")["calls"]), ["c0", "c1", "c2"])
        self.assertEqual(len(self.call(command="list", limit="2")["calls"]), 2)
        self.assertEqual(self.fails(command="list", limit=-1).reason,
                         "invalid limit, must be >= 0")

    def test_statistics_codecs(self):
        """statistics shows the codecs usable for transcoding and the
        unusable ones with their reason, under omnirtp's own key "codecs"."""
        from omnirtp import codecs
        stats = self.call(command="statistics")["statistics"]
        self.assertEqual(stats["codecs"], codecs.statistics())
        self.assertIn("pcmu/8000", stats["codecs"]["available"])
        self.assertIn("pcma/8000", stats["codecs"]["available"])
        missing = {"available": ["pcma/8000", "pcmu/8000"],
                   "unavailable": {"opus": "libopus.so.0: not found"}}
        self.patch(codecs, "statistics", lambda: missing)
        stats = self.call(command="statistics")["statistics"]
        self.assertEqual(stats["codecs"], missing)

    def test_statistics(self):
        """managedsessions counts sessions that ended (as 10.5); the control
        counts per proxy and in total count answered requests, so the
        statistics request being answered is not in them yet."""
        self.offer()
        stats = self.call(command="statistics")["statistics"]
        self.assertEqual(stats["currentstatistics"]["sessionstotal"], 1)
        self.assertEqual(stats["currentstatistics"]["media_userspace"], 2)
        self.assertEqual(stats["totalstatistics"]["managedsessions"], 0)
        self.assertEqual(stats["totalstatistics"]["uptime"], "0")
        self.assertEqual(stats["controlstatistics"]["offercount"], 1)
        self.assertEqual(stats["controlstatistics"]["totaloffercount"], 1)
        self.assertEqual(stats["controlstatistics"]["totalstatscount"], 0)
        self.assertEqual(stats["controlstatistics"]["proxies"], [])
        self.call(command="delete", call_id="c1", delete_delay=0)
        self.clock.advance(5)
        self.successResultOf(self.dispatch({"command": "ping"}, ("192.0.2.1", 5060)))
        self.failureResultOf(self.dispatch({"command": "query", "call-id": "zz"},
                                           ("192.0.2.1", 5060)), NGError)
        stats = self.call(command="statistics")["statistics"]
        self.assertEqual(stats["totalstatistics"]["managedsessions"], 1)
        self.assertEqual(stats["totalstatistics"]["uptime"], "5")
        self.assertEqual(stats["currentstatistics"]["media_userspace"], 0)
        self.assertEqual(stats["controlstatistics"]["totalstatscount"], 1)
        self.assertEqual(stats["controlstatistics"]["totalpingcount"], 1)
        self.assertEqual(stats["controlstatistics"]["totalquerycount"], 1)
        proxy = dict.fromkeys(("pingcount", "offercount", "answercount", "deletecount",
                               "querycount", "listcount", "statscount", "startreccount",
                               "stopreccount", "errorcount"), 0)
        proxy.update(proxy="192.0.2.1", pingcount=1, querycount=1, errorcount=1)
        self.assertEqual(stats["controlstatistics"]["proxies"], [proxy])

    def test_queryDirectionAndSubscriptions(self):
        """Media flags send/recv follow the party's direction; each answered
        tag lists the other in subscriptions and subscribers (10.5's keys)."""
        self.offer(sdp=OFFER + "a=sendonly\r\n")
        self.answer()
        tags = self.call(command="query", call_id="c1")["tags"]
        self.assertEqual(tags["ft"]["medias"][0]["flags"], ["initialized", "send"])
        self.assertEqual(tags["tt"]["medias"][0]["flags"], ["initialized", "send", "recv"])
        self.assertEqual(tags["ft"]["subscriptions"], [{"tag": "tt", "type": "offer/answer"}])
        self.assertEqual(tags["ft"]["subscribers"], [{"tag": "tt", "type": "offer/answer"}])
        self.assertEqual(tags["tt"]["subscriptions"], [{"tag": "ft", "type": "offer/answer"}])

    def test_badSdp(self):
        self.assertEqual(self.fails(command="offer", call_id="c", from_tag="f",
                                    sdp="garbage").reason, "Failed to parse SDP")
        self.assertEqual(self.registry.calls, {})

    def test_loopProtect(self):
        """An SDP carrying our own a=rtpengine id comes back unchanged."""
        first = self.offer(flags=["loop-protect"])["sdp"]
        self.assertIn("a=rtpengine:abc123", first)
        again = self.offer(call_id="c2", flags=["loop-protect"], sdp=first)["sdp"]
        self.assertEqual(again, first)


class DualStackTests(SynchronousTestCase):
    """Address family selection with an interface that has IPv4 and IPv6."""

    def setUp(self):
        clock = Clock()
        self.engine = CountingEngine(clock, pairs=10)
        registry = CallRegistry(self.engine, clock)
        interfaces = Interfaces([InterfaceSpec("default", "127.0.0.1", None),
                                 InterfaceSpec("default", "::1", None)])
        self.dispatch = Dispatcher(registry, Negotiator(registry, interfaces))

    def offer(self, sdp, **kw):
        request = {"command": "offer", "call-id": "c1", "from-tag": "f", "sdp": sdp}
        request.update(kw)
        return self.successResultOf(self.dispatch(request))["sdp"]

    def test_followsInputFamily(self):
        """An IPv6 SDP is answered from the interface's IPv6 address."""
        v6 = OFFER.replace("IN IP4 192.0.2.10", "IN IP6 2001:db8::10")
        self.assertIn("c=IN IP6 ::1", self.offer(v6))

    def test_addressFamilyKey(self):
        """`address family` switches an IPv4 SDP to IPv6."""
        self.assertIn("c=IN IP6 ::1", self.offer(OFFER, **{"address family": "IP6"}))
        self.assertIn("c=IN IP4 127.0.0.1", self.offer(OFFER, **{"call-id": "c2"}))


def embedded_stack(test, ports=(30000, 30009), **dispatcher_args):
    """The control plane on an EmbeddedEngine with fake sockets (``ports``
    on 127.0.0.1), as ``test``'s clock, engine, registry and dispatch."""
    import random
    from omnirtp.media.engine import EmbeddedEngine
    from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor
    test.clock = MemoryUDPReactor()
    test.engine = EmbeddedEngine(test.clock, {"127.0.0.1": ports},
                                 bind=FakeNetwork().bind, rng=random.Random(1))
    test.registry = CallRegistry(test.engine, test.clock, Timeouts(), max_sessions=-1)
    negotiator = Negotiator(test.registry,
                            Interfaces([InterfaceSpec("default", "127.0.0.1", None)]),
                            instance_id="abc123")
    test.dispatch = Dispatcher(test.registry, negotiator, **dispatcher_args)


class RejectedMediaOnlyTests(SynchronousTestCase):
    """An offer whose every m= line is rejected (port 0) holds no port: the
    engine is not configured for it (found by fuzzing: the EmbeddedEngine
    refused to configure a call without ports, answered "Internal error")."""

    SDP = ("v=0\r\no=- 0 0 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
           "m=audio 0 RTP/AVP 0\r\n")

    def setUp(self):
        embedded_stack(self)

    def test_offerAndAnswer(self):
        """Both answered as rtpengine 10.5 answers (checked on loopback):
        the SDP with our address and the port still 0; no port taken."""
        expected = self.SDP.replace("c=IN IP4 192.0.2.10", "c=IN IP4 127.0.0.1")
        for request in ({"command": "offer", "call-id": "x", "from-tag": "f", "sdp": self.SDP},
                        {"command": "answer", "call-id": "x", "from-tag": "f", "to-tag": "t",
                         "sdp": self.SDP}):
            self.assertEqual(self.successResultOf(self.dispatch(request)),
                             {"result": "ok", "sdp": expected})
        totals = self.successResultOf(self.engine.totals())
        self.assertEqual((totals["ports_used"], totals["ports_free"]), (0, 10))


class EmbeddedEngineNowTests(SynchronousTestCase):
    """With the embedded engine (``num-threads = 0``) an offer, an answer
    and a delete call the engine's plain-value methods (``allocate_now``
    & co.), not the ones that answer with a Deferred; the replies are
    those of the Deferred path, and a failing engine call fails the
    request as a failed Deferred did."""

    def setUp(self):
        embedded_stack(self, delete_delay=0)

    def ban_deferreds(self):
        def banned(*args, **kwargs):
            raise AssertionError("a Deferred engine call with an engine that answers at once")
        for name in ("allocate", "configure", "release", "stats"):
            self.patch(self.engine, name, banned)

    def cycle(self):
        replies = []
        for request in ({"command": "offer", "call-id": "x", "from-tag": "f", "sdp": OFFER},
                        {"command": "answer", "call-id": "x", "from-tag": "f", "to-tag": "t",
                         "sdp": ANSWER},
                        {"command": "delete", "call-id": "x", "from-tag": "f"}):
            replies.append(self.dispatch.now(request, ("192.0.2.1", 5060)))
        return replies

    def test_cycle(self):
        """The same replies with and without the plain-value calls."""
        with_deferreds = self.cycle()
        self.ban_deferreds()
        without = self.cycle()
        self.assertEqual([r["result"] for r in without], ["ok", "ok", "ok"])
        import re

        def ports_out(sdp):  # (the second call gets other ports of the pool)
            return re.sub(r"\b300\d\d\b", "PORT", sdp)
        self.assertEqual(ports_out(without[0]["sdp"]), ports_out(with_deferreds[0]["sdp"]))
        self.assertEqual(ports_out(without[1]["sdp"]), ports_out(with_deferreds[1]["sdp"]))
        self.assertIn("m=audio 300", without[0]["sdp"])
        self.assertEqual(sorted(without[2]["tags"]), ["f", "t"])
        self.assertEqual(without[2]["totals"], with_deferreds[2]["totals"])
        totals = self.successResultOf(self.engine.totals())
        self.assertEqual((totals["ports_used"], totals["ports_free"]), (0, 10))

    def test_deleteReleasesAfterItsReply(self):
        """Over the ng socket, a delete's ports are released once its reply
        has been sent (sync.after_reply), before datagramReceived returns:
        the client does not wait for the sockets' close."""
        from omnirtp.control import bencode
        from omnirtp.control.ng import NGProtocol
        proto = NGProtocol(self.dispatch, self.clock)
        used_at_send = []
        engine = self.engine

        class Transport:
            def write(self, datagram, addr):
                totals = engine.totals()
                used_at_send.append(totals.result["ports_used"])
        proto.transport = Transport()
        for n, request in enumerate((
                {"command": "offer", "call-id": "x", "from-tag": "f", "sdp": OFFER},
                {"command": "answer", "call-id": "x", "from-tag": "f", "to-tag": "t",
                 "sdp": ANSWER},
                {"command": "delete", "call-id": "x", "from-tag": "f"})):
            proto.datagramReceived(b"c%d %s" % (n, bencode.encode(request)), ("192.0.2.1", 5060))
        # the call's 4 ports from the offer on, still held as the delete's
        # reply left
        self.assertEqual(used_at_send, [4, 4, 4])
        totals = self.successResultOf(self.engine.totals())
        self.assertEqual((totals["ports_used"], totals["ports_free"]), (0, 10))
        self.assertIsNone(self.registry.get("x"))

    def test_failed_configure(self):
        """A configure that fails fails a new call's offer, which holds no
        port afterwards (released as before)."""
        self.ban_deferreds()

        def refuse(call_id, sockets):
            raise ValueError("refused")
        self.patch(self.engine, "configure_now", refuse)
        with self.assertRaises(ValueError):
            self.dispatch.now({"command": "offer", "call-id": "x", "from-tag": "f",
                               "sdp": OFFER}, None)
        self.assertIsNone(self.registry.get("x"))
        totals = self.successResultOf(self.engine.totals())
        self.assertEqual((totals["ports_used"], totals["ports_free"]), (0, 10))


class DeleteTargetsTests(SynchronousTestCase):
    """Dispatcher._delete_targets of a two-party call (its short way)
    gives what the association sets give."""

    def targets(self, link):
        from omnirtp.call.model import Call, Monologue
        from omnirtp.control.flags import Flags
        call = Call("c", 0.0)
        a, b = Monologue("a", 0.0), Monologue("b", 0.0)
        call.monologues = [a, b]
        link(a, b)
        flags = Flags.from_request({"call-id": "c", "from-tag": "a"})
        return Dispatcher._delete_targets(None, call, flags), a, b

    def test_associated(self):
        def both(a, b):
            a.peer, b.peer = b, a

        def one_way(a, b):
            b.peer = a
        for link in (both, one_way):
            self.assertEqual(self.targets(link)[0], "all")

    def test_not_associated(self):
        """No link: the other party would stay alone, so the whole call
        goes; unless it is its own peer: then only the from-tag's goes."""
        self.assertEqual(self.targets(lambda a, b: None)[0], "all")

        def own_peer(a, b):
            b.peer = b
        got, a, _b = self.targets(own_peer)
        self.assertEqual(got, [a])
