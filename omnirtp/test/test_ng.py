"""Tests for omnirtp.control.ng.NGProtocol (no sockets: FakeDatagramTransport)."""

import json

from twisted.internet import defer
from twisted.internet.testing import FakeDatagramTransport
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

try:
    from twisted.internet.testing import EventLoggingObserver
except ImportError:  # pragma: no cover
    from twisted.test.proto_helpers import EventLoggingObserver

from omnirtp import errors
from omnirtp.control import bencode, ng
from omnirtp.control.ng import E_REPLY_TOO_LARGE, NGProtocol

ADDR = ("192.0.2.1", 5060)
OTHER = ("192.0.2.2", 5061)
PING = b"c1 d7:command4:pinge"
PONG = b"c1 d6:result4:ponge"


def err(cookie, reason):
    return cookie + b" " + bencode.encode({"result": "error", "error-reason": reason})


def jerr(cookie, reason):
    return cookie + b" " + json.dumps(
        {"result": "error", "error-reason": reason}, separators=(",", ":")
    ).encode()


class FakeDispatch:
    """Records requests; answers ping with pong and echoes other requests
    according to ``self.behaviour``."""

    def __init__(self):
        self.calls = []
        self.behaviour = None
        self.pending = []

    def __call__(self, request, addr):
        self.calls.append((request, addr))
        if request.get("command") == "ping":
            return {"result": "pong"}
        if self.behaviour is not None:
            return self.behaviour(request)
        return {"result": "ok"}


class NGTestBase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.dispatch = FakeDispatch()
        self.proto = NGProtocol(self.dispatch, clock=self.clock, cache_ttl=30)
        self.transport = FakeDatagramTransport()
        self.proto.makeConnection(self.transport)

    def send(self, data, addr=ADDR):
        self.proto.datagramReceived(data, addr)

    def replies(self):
        return [packet for packet, _ in self.transport.written]

    def assertPingStillWorks(self):
        self.transport.written[:] = []
        self.send(b"after d7:command4:pinge")
        self.assertEqual(self.transport.written, [(b"after d6:result4:ponge", ADDR)])


class FramingTests(NGTestBase):
    def test_ping(self):
        """A bencode ping gets a bencode pong with the cookie, sent to addr."""
        self.send(PING)
        self.assertEqual(self.transport.written, [(PONG, ADDR)])
        self.assertEqual(self.dispatch.calls, [({"command": "ping"}, ADDR)])

    def test_noSpaceNoReply(self):
        """Without a space after the cookie, or with a space first, nothing is sent."""
        self.send(b"c1d7:command4:pinge")
        self.send(b" d7:command4:pinge")
        self.send(b"")
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.dispatch.calls, [])

    def test_emptyPayload(self):
        """Cookie and space only: "Invalid data (no payload)"."""
        self.send(b"c1 ")
        self.assertEqual(self.replies(), [err(b"c1", errors.E_NO_PAYLOAD)])

    def test_badFormat(self):
        """A payload that is neither 'd' nor '{' is "Invalid NG data format"."""
        for i, payload in enumerate([b"xyz", b"l7:commande", b"i5e", b'["command"]']):
            cookie = b"f%d" % i
            self.send(cookie + b" " + payload)
            self.assertEqual(self.replies()[-1], err(cookie, errors.E_BAD_FORMAT))

    def test_requestIsStr(self):
        """Keys and string values reach dispatch as str, nested ones too."""
        self.send(b"c1 d7:command5:offer5:flagsl6:trust.e5:codecd5:stripl4:PCMUeee")
        request = self.dispatch.calls[0][0]
        self.assertEqual(
            request,
            {"command": "offer", "flags": ["trust."], "codec": {"strip": ["PCMU"]}},
        )

    def test_sdpBytesRoundTrip(self):
        """Arbitrary SDP bytes (invalid UTF-8 included) come back byte-exact."""
        sdp = b"v=0\r\ns=\xff\xfe caf\xc3\xa9\r\n"
        self.dispatch.behaviour = lambda r: {"result": "ok", "sdp": r["sdp"]}
        self.send(b"c1 " + bencode.encode({"command": "offer", "sdp": sdp}))
        self.assertEqual(
            self.replies(), [b"c1 " + bencode.encode({"result": "ok", "sdp": sdp})]
        )

    def test_trailingDataIgnored(self):
        """Bytes after the request dictionary are ignored, as rtpengine does."""
        self.send(b"c1 d7:command4:pingexyz")
        self.assertEqual(self.replies(), [PONG])

    def test_missingFinalE(self):
        """A request missing its final 'e' is still answered."""
        self.send(b"c1 d7:command4:ping")
        self.assertEqual(self.replies(), [PONG])

    def test_missingCommand(self):
        """No command key, or a non-string command: rtpengine's text."""
        self.send(b"c1 d1:x1:ye")
        self.send(b"c2 d7:commandi1ee")
        self.send(b"c3 de")
        self.assertEqual(self.replies(), [
            err(b"c1", errors.E_NO_COMMAND),
            err(b"c2", errors.E_NO_COMMAND),
            err(b"c3", errors.E_NO_COMMAND),
        ])
        self.assertEqual(self.dispatch.calls, [])


class BadInputTests(NGTestBase):
    """The bad-input list: each gets rtpengine's error reply and the protocol
    keeps answering ping afterwards."""

    def check(self, payload, expected_reason, json_reply=False):
        self.send(b"bad " + payload)
        make = jerr if json_reply else err
        self.assertEqual(self.replies(), [make(b"bad", expected_reason)])
        self.assertEqual(self.dispatch.calls, [])
        self.assertPingStillWorks()

    def test_garbage(self):
        self.check(b"\x00\xff garbage", errors.E_BAD_FORMAT)

    def test_truncatedBencode(self):
        self.check(b"d7:command4:pin", errors.E_BENCODE)

    def test_bencodeLeadingZero(self):
        self.check(b"d7:command4:ping1:xi01ee", errors.E_BENCODE)

    def test_bencodeIntKey(self):
        self.check(b"di1ei2e7:command4:pinge", errors.E_BENCODE)

    def test_bencodeKeyWithoutValue(self):
        self.check(b"d7:command4:ping1:x", errors.E_BENCODE)

    def test_oversizedTruncatedBencode(self):
        """A 64 KB datagram whose string claims more bytes than there are."""
        self.check(b"d7:command4:ping1:x70000:" + b"a" * 65400, errors.E_BENCODE)

    def test_deepBencode(self):
        self.check(b"d1:x" + b"l" * 50000 + b"e" * 50000 + b"e", errors.E_BENCODE)

    def test_truncatedJSON(self):
        self.check(b'{"command":"ping"', errors.E_JSON_PARSE, json_reply=True)

    def test_JSONTrailing(self):
        self.check(b'{"command":"ping"} x', errors.E_JSON_PARSE, json_reply=True)

    def test_JSONInvalidUTF8(self):
        self.check(b'{"command":"\xff"}', errors.E_JSON_PARSE, json_reply=True)

    def test_JSONNaN(self):
        self.check(b'{"command":"ping","x":NaN}', errors.E_JSON_PARSE, json_reply=True)

    def test_deepJSON(self):
        self.check(
            b'{"command":"ping","x":' + b"[" * 50000 + b"]" * 50000 + b"}",
            errors.E_JSON_PARSE, json_reply=True,
        )

    def test_oversizedJSON(self):
        self.check(b'{"x":"' + b"a" * 65500, errors.E_JSON_PARSE, json_reply=True)

    def test_JSONNullAndFloat(self):
        """rtpengine 10.5 cannot convert null or floats into its bencode tree."""
        self.check(b'{"command":"ping","x":null}', errors.E_BENCODE, json_reply=True)

    def test_JSONFloat(self):
        self.check(b'{"command":"ping","x":1.5}', errors.E_BENCODE, json_reply=True)


class JSONTests(NGTestBase):
    def test_ping(self):
        """JSON in, JSON out, cookie framing kept."""
        self.send(b'j1 { "command" : "ping" }  ')
        self.assertEqual(self.replies(), [b'j1 {"result":"pong"}'])

    def test_typesMapped(self):
        """true becomes 1, nested values are kept."""
        self.send(b'j1 {"command":"offer","a":true,"b":{"c":[1,"d"]},"e":"\\u00e9"}')
        self.assertEqual(
            self.dispatch.calls[0][0],
            {"command": "offer", "a": 1, "b": {"c": [1, "d"]}, "e": "\u00e9"},
        )

    def test_errorInJSON(self):
        """An NGError for a JSON request is answered in JSON."""
        def fail(request):
            raise errors.NGError(errors.E_NO_SDP)
        self.dispatch.behaviour = fail
        self.send(b'j1 {"command":"offer"}')
        self.assertEqual(self.replies(), [jerr(b"j1", errors.E_NO_SDP)])

    def test_replyBytesAndUnicode(self):
        """Reply bytes/str become UTF-8 JSON strings (no \\u escapes)."""
        self.dispatch.behaviour = lambda r: {"result": "ok", "sdp": b"caf\xc3\xa9"}
        self.send(b'j1 {"command":"offer"}')
        self.assertEqual(
            self.replies(), [b'j1 {"result":"ok","sdp":"caf\xc3\xa9"}']
        )


class ErrorTests(NGTestBase):
    def test_ngErrorSync(self):
        """NGError raised by dispatch becomes an error reply with its reason."""
        def fail(request):
            raise errors.NGError(errors.E_NO_CALL_ID)
        self.dispatch.behaviour = fail
        self.send(b"c1 d7:command5:offere")
        self.assertEqual(self.replies(), [err(b"c1", errors.E_NO_CALL_ID)])

    def test_ngErrorSubclassDeferred(self):
        """A Deferred failing with PortsExhausted gives "Ran out of ports"."""
        self.dispatch.behaviour = lambda r: defer.fail(errors.PortsExhausted())
        self.send(b"c1 d7:command5:offere")
        self.assertEqual(self.replies(), [err(b"c1", errors.E_NO_PORTS)])

    def test_loadLimitSupported(self):
        """LoadLimit with supports ["load limit"]: result "load limit"."""
        def fail(request):
            raise errors.LoadLimit()
        self.dispatch.behaviour = fail
        self.send(b"c1 " + bencode.encode(
            {"supports": ["load limit"], "command": "offer"}))
        self.send(b"c2 " + bencode.encode(
            {"supports": "other,load limit", "command": "offer"}))
        expected = bencode.encode(
            {"result": "load limit", "message": "Parallel session limit reached"})
        self.assertEqual(self.replies(), [b"c1 " + expected, b"c2 " + expected])

    def test_loadLimitUnsupported(self):
        """LoadLimit without supports: a plain error with the same text."""
        self.dispatch.behaviour = lambda r: defer.fail(errors.LoadLimit())
        self.send(b"c1 d7:command5:offere")
        self.assertEqual(self.replies(), [err(b"c1", errors.E_SESSION_LIMIT)])

    def test_loadLimitLegacyText(self):
        """A load limit other than max-sessions: its own text as the "load
        limit" message, and rtpengine 10.5's legacy text as the error of a
        request that does not name the feature."""
        def fail(request):
            raise errors.LoadLimit("CPU usage limit exceeded", legacy=errors.E_SESSION_LIMIT)
        self.dispatch.behaviour = fail
        self.send(b"c1 " + bencode.encode({"supports": ["load limit"], "command": "offer"}))
        self.send(b"c2 d7:command5:offere")
        self.assertEqual(self.replies(), [
            b"c1 " + bencode.encode({"result": "load limit",
                                     "message": "CPU usage limit exceeded"}),
            err(b"c2", errors.E_SESSION_LIMIT)])

    def test_unexpectedException(self):
        """Any other exception: "Internal error", one traceback per kind."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.dispatch.behaviour = lambda r: 1 // 0
        for i in range(3):
            self.send(b"c%d d7:command5:offere" % i)
        self.assertEqual(
            self.replies(), [err(b"c%d" % i, errors.E_INTERNAL) for i in range(3)]
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        failures = [e for e in events if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0]["command"], "offer")
        self.assertPingStillWorks()

    def test_unexpectedDeferredFailure(self):
        """An unexpected Deferred failure is also "Internal error"."""
        self.dispatch.behaviour = lambda r: defer.fail(KeyError("x"))
        self.send(b"c1 d7:command5:offere")
        self.assertEqual(self.replies(), [err(b"c1", errors.E_INTERNAL)])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_notADict(self):
        """A dispatch result that cannot be encoded is "Internal error"."""
        self.dispatch.behaviour = lambda r: {"result": "ok", "x": 1.5}
        self.send(b"c1 d7:command5:offere")
        self.dispatch.behaviour = lambda r: None
        self.send(b"c2 d7:command5:offere")
        self.assertEqual(self.replies(), [
            err(b"c1", errors.E_INTERNAL), err(b"c2", errors.E_INTERNAL)])
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 2)

    def test_oversizedReply(self):
        """A reply larger than a UDP datagram becomes an error reply."""
        self.dispatch.behaviour = lambda r: {"result": "ok", "sdp": "a" * 65500}
        self.send(b"c1 d7:command5:querye")
        self.assertEqual(self.replies(), [err(b"c1", E_REPLY_TOO_LARGE)])
        self.dispatch.behaviour = lambda r: {"result": "ok", "sdp": "a" * 65400}
        self.send(b"c2 d7:command5:querye")
        self.assertEqual(len(self.replies()[1]), 65400 + len(b"c2 d6:result2:ok3:sdp65400:e"))

    def test_writeFailureSwallowed(self):
        """A transport error while sending is logged, not raised."""
        def broken(packet, addr=None):
            raise OSError("network is unreachable")
        self.transport.write = broken
        self.send(PING)
        self.assertEqual(len(self.dispatch.calls), 1)


class CacheTests(NGTestBase):
    def test_retransmitFromCache(self):
        """A repeated cookie gets the identical reply without a new dispatch."""
        self.dispatch.behaviour = lambda r: {"result": "ok", "n": len(self.dispatch.calls)}
        self.send(b"c1 d7:command5:offere")
        self.send(b"c1 d7:command5:offere", OTHER)
        self.assertEqual(len(self.dispatch.calls), 1)
        self.assertEqual(self.transport.written, [
            (b"c1 d6:result2:ok1:ni1ee", ADDR), (b"c1 d6:result2:ok1:ni1ee", OTHER)])

    def test_cacheIsByCookieOnly(self):
        """A different payload under a cached cookie still gets the cached reply."""
        self.send(PING)
        self.send(b"c1 d7:command5:offere")
        self.assertEqual(self.replies(), [PONG, PONG])
        self.assertEqual(len(self.dispatch.calls), 1)

    def test_errorsCached(self):
        """Error replies are cached too."""
        self.send(b"c1 xx")
        self.send(PING)
        self.assertEqual(self.replies(), [err(b"c1", errors.E_BAD_FORMAT)] * 2)
        self.assertEqual(self.dispatch.calls, [])

    def test_emptyPayloadNotLookedUp(self):
        """As in rtpengine, an empty payload is refused before the cache lookup
        and its error replaces the cached reply."""
        self.send(PING)
        self.send(b"c1 ")
        self.send(b"c1 xx")
        self.assertEqual(self.replies(), [PONG] + [err(b"c1", errors.E_NO_PAYLOAD)] * 2)

    def test_expiry(self):
        """Entries survive one rotation and are gone after two."""
        self.send(PING)
        self.clock.advance(30)
        self.send(PING)
        self.assertEqual(len(self.dispatch.calls), 1)
        self.clock.advance(30)
        self.send(b"c2 d7:command4:pinge")  # rotates; c1 was in the old generation
        self.send(PING)
        self.assertEqual(len(self.dispatch.calls), 3)

    def test_longIdleClearsAll(self):
        """After two TTLs with no traffic both generations are dropped."""
        self.send(PING)
        self.clock.advance(60)
        self.send(PING)
        self.assertEqual(len(self.dispatch.calls), 2)

    def test_bounded(self):
        """No more than cache_max cookies are held; the oldest go first."""
        self.proto = NGProtocol(self.dispatch, clock=self.clock, cache_max=4)
        self.proto.makeConnection(self.transport)
        for i in range(10):
            self.send(b"k%d d7:command4:pinge" % i)
            self.assertLessEqual(self.proto.cached_count(), 4)
        self.send(b"k9 d7:command4:pinge")
        self.assertEqual(len(self.dispatch.calls), 10)
        self.send(b"k0 d7:command4:pinge")
        self.assertEqual(len(self.dispatch.calls), 11)

    def test_pendingDuplicates(self):
        """Copies arriving while the first is pending are answered once each,
        when it completes, without dispatching again."""
        d = defer.Deferred()
        self.dispatch.behaviour = lambda r: d
        self.send(b"c1 d7:command5:offere")
        self.send(b"c1 d7:command5:offere", OTHER)
        self.send(b"c1 d7:command5:offere")
        self.assertEqual(self.transport.written, [])
        d.callback({"result": "ok"})
        reply = b"c1 d6:result2:oke"
        self.assertEqual(self.transport.written, [(reply, ADDR), (reply, OTHER), (reply, ADDR)])
        self.assertEqual(len(self.dispatch.calls), 1)
        self.send(b"c1 d7:command5:offere")
        self.assertEqual(self.transport.written[-1], (reply, ADDR))
        self.assertEqual(len(self.dispatch.calls), 1)

    def test_pendingFailure(self):
        """A pending request that fails answers every waiting copy with the error."""
        d = defer.Deferred()
        self.dispatch.behaviour = lambda r: d
        self.send(b"c1 d7:command5:offere")
        self.send(b"c1 d7:command5:offere", OTHER)
        d.errback(errors.NGError(errors.E_NO_SDP))
        self.assertEqual(self.transport.written, [
            (err(b"c1", errors.E_NO_SDP), ADDR), (err(b"c1", errors.E_NO_SDP), OTHER)])

    def test_answeredAtOnce(self):
        """A request its dispatch answers at once puts no pending entry
        (nothing reads the cache meanwhile); the cache ends as with one
        put first and replaced by the reply (a dispatch answering with a
        fired Deferred): the same entries in the same order, the same
        charges and rotations, near the bounds of entries and bytes."""
        import random
        rng = random.Random(7)
        looked = []

        def at_once(request, addr):
            looked.append(request["n"] in [c.split(b"_")[0].decode()
                                           for c in list(fast._cache_new)
                                           + list(fast._cache_old)])
            return {"result": "ok", "pad": "x" * request["size"]}

        def fired(request, addr):
            return defer.succeed({"result": "ok", "pad": "x" * request["size"]})
        fast = NGProtocol(at_once, clock=self.clock, cache_max=8, cache_bytes=2000)
        slow = NGProtocol(fired, clock=self.clock, cache_max=8, cache_bytes=2000)
        for proto in (fast, slow):
            proto.makeConnection(FakeDatagramTransport())
        for i in range(400):
            cookie = b"%d_%s" % (i, b"k" * rng.randrange(0, 300))
            if rng.random() < 0.2 and i > 1:
                cookie = b"%d_again" % rng.randrange(i)  # seen before, perhaps cached
            size = rng.choice([0, 10, 200, 700, 1200])
            data = cookie + b" " + bencode.encode({"command": "offer", "n": str(i),
                                                   "size": size})
            for proto in (fast, slow):
                proto.datagramReceived(data, ADDR)
            self.assertEqual(
                (list(fast._cache_new.items()), list(fast._cache_old.items()),
                 fast._bytes_new, fast._bytes_old),
                (list(slow._cache_new.items()), list(slow._cache_old.items()),
                 slow._bytes_new, slow._bytes_old))
            self.clock.advance(rng.choice([0, 0, 0, 1, 20]))
        self.assertEqual(fast.transport.written, slow.transport.written)
        self.assertEqual(len(fast.transport.written), 400)
        self.assertNotIn(True, looked)


class FloodTests(NGTestBase):
    """The cookie cache under floods: bounded in entries and bytes, in time."""

    def test_uniqueCookiesBoundedInCount(self):
        """50,000 unique cookies within one TTL: never more than cache_max held."""
        self.proto = NGProtocol(self.dispatch, clock=self.clock, cache_max=1000)
        self.proto.makeConnection(self.transport)
        peak = 0
        for i in range(50000):
            self.send(b"u%d d7:command4:pinge" % i)
            peak = max(peak, self.proto.cached_count())
        self.assertEqual(peak, 1000)
        self.assertEqual(len(self.dispatch.calls), 50000)
        # the newest are still answered from the cache
        self.send(b"u49999 d7:command4:pinge")
        self.assertEqual(len(self.dispatch.calls), 50000)

    def test_longCookiesBoundedInBytes(self):
        """Unique 4 KiB cookies with 8 KiB replies: the byte bound holds
        long before the entry bound would."""
        self.proto = NGProtocol(self.dispatch, clock=self.clock, cache_bytes=1 << 20)
        self.proto.makeConnection(self.transport)
        self.dispatch.behaviour = lambda r: {"result": "ok", "pad": "x" * 8192}
        peak = 0
        for i in range(2000):
            self.send(b"%04d" % i + b"c" * 4092 + b" d7:command5:offere")
            peak = max(peak, self.proto.cached_bytes())
        self.assertLessEqual(peak, 1 << 20)
        self.assertGreater(peak, (1 << 20) // 2)
        self.assertLess(self.proto.cached_count(), 100)

    def test_bytesReleasedWithTime(self):
        for i in range(100):
            self.send(b"t%d d7:command4:pinge" % i)
        self.assertEqual(self.proto.cached_count(), 100)
        self.assertGreater(self.proto.cached_bytes(), 0)
        self.clock.advance(60)
        self.send(PING)
        self.assertEqual(self.proto.cached_count(), 1)
        self.assertEqual(self.proto.cached_bytes(), len(b"c1") + len(PONG))

    def test_pendingRequestAnsweredAtMostSixteenTimes(self):
        """A retransmission storm while a request is pending: the reply goes
        out to at most MAX_WAITERS copies, the command runs once."""
        d = defer.Deferred()
        self.dispatch.behaviour = lambda r: d
        for _ in range(1000):
            self.send(b"c1 d7:command5:offere")
        d.callback({"result": "ok"})
        self.assertEqual(len(self.transport.written), ng.MAX_WAITERS)
        self.assertEqual(ng.MAX_WAITERS, 16)
        self.assertEqual(len(self.dispatch.calls), 1)

    def test_garbageWarnedOncePerInterval(self):
        """Undecodable datagrams are each answered and counted, but warned
        about once per 10 s with the number left unlogged."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for i in range(500):
            self.send(b"g%d xx" % i)
            self.clock.advance(0.01)
        self.assertEqual(len(self.transport.written), 500)
        self.assertEqual(self.proto.stats["errors"], 500)
        warnings = [e for e in events if e.get("log_namespace") == "omnirtp.control.ng.NGProtocol"]
        self.assertEqual([e["more"] for e in warnings], [0])
        self.clock.advance(10)
        self.send(b"last xx")
        warnings = [e for e in events if e.get("log_namespace") == "omnirtp.control.ng.NGProtocol"]
        self.assertEqual([e["more"] for e in warnings], [0, 499])
        self.assertPingStillWorks()


class StatsTests(NGTestBase):
    def test_counts(self):
        """Executed requests per command and error replies are counted;
        retransmissions are not."""
        def behave(request):
            if request["command"] == "delete":
                raise errors.NGError(errors.E_NO_CALL_ID)
            return {"result": "ok"}
        self.dispatch.behaviour = behave
        self.send(b"a d7:command5:offere")
        self.send(b"a d7:command5:offere")
        self.send(b"b d7:command5:offere")
        self.send(b"c d7:command6:deletee")
        self.send(b"d d7:command10:play mediae")
        self.send(b"e garbage")
        self.send(PING)
        self.assertEqual(self.proto.stats["offer"], 2)
        self.assertEqual(self.proto.stats["delete"], 1)
        self.assertEqual(self.proto.stats["other"], 1)  # "play media"
        self.assertEqual(self.proto.stats["ping"], 1)
        self.assertEqual(self.proto.stats["answer"], 0)
        self.assertEqual(self.proto.stats["errors"], 2)


class RecordingTransport(FakeDatagramTransport):
    """Its sends go into ``log`` beside a file's writes (test_logging.Recording)."""

    def __init__(self, log):
        FakeDatagramTransport.__init__(self)
        self.log = log

    def write(self, packet, addr=None):
        self.log.append(("send", packet))
        return FakeDatagramTransport.write(self, packet, addr)


class LogAfterReplyTests(SynchronousTestCase):
    """The log lines of a request reach the log (twistd's text observer
    behind install()'s filter) once its reply has been sent, all in one
    write and the same text as line by line; those of a request answered
    later are written as they come."""

    def setUp(self):
        from twisted.logger import LogPublisher, Logger, textFileLogObserver

        from omnirtp import logging as olog
        from omnirtp.test.test_logging import Recording
        self.addCleanup(setattr, olog, "_installed", olog._installed)
        self.log = []
        self.out = Recording(self.log)
        publisher = LogPublisher(textFileLogObserver(self.out))
        olog.install(olog.LogLevels(6), publisher=publisher)
        self.logger = logger = Logger(namespace="omnirtp.control.commands.Dispatcher",
                                      observer=publisher)
        self.pending = defer.Deferred()

        def dispatch(request, addr):
            logger.info("Received command '{command}'", command=request["command"])
            if request["command"] == "query":
                return self.pending
            if request["command"] == "delete":
                logger.info("call {call_id} ended", call_id="c1")
            return {"result": "ok"}
        self.proto = NGProtocol(dispatch, clock=Clock())
        self.proto.makeConnection(RecordingTransport(self.log))

    def steps(self):
        return [(step[0], step[1][-30:]) if step[0] == "write" else step
                for step in self.log]

    def test_afterReply(self):
        self.proto.datagramReceived(b"c1 d7:command6:deletee", ADDR)
        steps = self.steps()
        self.assertEqual([s[0] for s in steps], ["send", "write", "flush"])
        self.assertEqual(steps[0][1], b"c1 d6:result2:oke")
        lines = self.out.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[0].endswith("Received command 'delete'"), lines[0])
        self.assertTrue(lines[1].endswith("call c1 ended"), lines[1])
        # the next request's after it
        self.proto.datagramReceived(b"c2 d7:command5:offere", ADDR)
        self.assertEqual([s[0] for s in self.log], ["send", "write", "flush"] * 2)

    def test_answeredLater(self):
        self.proto.datagramReceived(b"c1 d7:command5:querye", ADDR)
        self.assertEqual([s[0] for s in self.log], ["write", "flush"])  # its line
        self.pending.callback({"result": "ok"})
        self.assertEqual([s[0] for s in self.log], ["write", "flush", "send"])

    def test_workAfterReply(self):
        """sync.after_reply's work runs after the reply is sent and before
        the lines are written (its own lines with them, in order); work
        that raises is logged and the rest still runs."""
        from omnirtp import sync
        done = []

        def freeing(name):
            self.log.append(("work", name))
            self.logger.info("freed {name}", name=name)

        def broken():
            raise ValueError("x")

        def dispatch(request, addr):
            self.logger.info("Received command '{command}'", command=request["command"])
            sync.after_reply(freeing, "a")
            sync.after_reply(broken)
            sync.after_reply(freeing, "b")
            return {"result": "ok"}
        self.proto.dispatch = dispatch
        self.proto.datagramReceived(b"c1 d7:command6:deletee", ADDR)
        self.assertEqual([s[0] for s in self.log], ["send", "work", "work", "write", "flush"])
        self.assertEqual([s[1] for s in self.log if s[0] == "work"], ["a", "b"])
        lines = self.out.getvalue().splitlines()
        self.assertEqual([line.split("] ", 1)[1] for line in lines],
                         ["Received command 'delete'", "freed a", "freed b"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        # outside a datagram: at once
        sync.after_reply(done.append, 1)
        self.assertEqual(done, [1])
        self.assertIsNone(sync.after_reply_work)

    def test_raisingDispatchReleases(self):
        """A dispatch that raises: the error reply, its lines, nothing held."""
        from omnirtp import logging as olog

        def broken(request, addr):
            raise KeyError("x")
        self.proto.dispatch = broken
        self.proto.datagramReceived(b"c1 d7:command5:offere", ADDR)
        self.assertEqual(self.log, [("send", err(b"c1", errors.E_INTERNAL))])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)  # (the global log's)
        self.assertEqual((olog._holding, olog._unflushed), (0, []))
        self.proto.dispatch = None  # (not callable: raises TypeError, logged too)
        self.proto.datagramReceived(b"c2 d7:command5:offere", ADDR)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        self.assertEqual((olog._holding, olog._unflushed), (0, []))


class HelperTests(SynchronousTestCase):
    def test_supportsLoadLimit(self):
        self.assertTrue(ng.supports_load_limit({"supports": ["load limit"]}))
        self.assertTrue(ng.supports_load_limit({"supports": "load limit"}))
        self.assertFalse(ng.supports_load_limit({"supports": ["x"]}))
        self.assertFalse(ng.supports_load_limit({}))
        self.assertFalse(ng.supports_load_limit({"supports": 1}))

    def test_toStr(self):
        self.assertEqual(
            ng.to_str({b"a": [b"\xff", 1, {b"b": b"c"}]}),
            {"a": ["\udcff", 1, {"b": "c"}]},
        )


class FixtureTests(NGTestBase):
    """fixtures/ng/*_invalid.ng: each gets the reply rtpengine 10.5 gave
    (compared byte for byte against the daemon when the fixtures were made)."""

    EXPECTED = {
        "no_payload_invalid.ng": errors.E_NO_PAYLOAD,
        "garbage_invalid.ng": errors.E_BAD_FORMAT,
        "truncated_invalid.ng": errors.E_BENCODE,
        "leading_zero_invalid.ng": errors.E_BENCODE,
        "int_key_invalid.ng": errors.E_BENCODE,
        "no_command_invalid.ng": errors.E_NO_COMMAND,
        "json_list_invalid.ng": errors.E_BAD_FORMAT,
        "json_truncated_invalid.ng": errors.E_JSON_PARSE,
        "json_null_invalid.ng": errors.E_BENCODE,
    }

    def load(self, name):
        from twisted.python.filepath import FilePath
        return FilePath(__file__).sibling("fixtures").child("ng").child(name).getContent()

    def test_invalid(self):
        for name, reason in sorted(self.EXPECTED.items()):
            data = self.load(name)
            cookie = data.split(b" ", 1)[0]
            make = jerr if data[len(cookie) + 1:][:1] == b"{" else err
            self.transport.written[:] = []
            self.send(data)
            self.assertEqual(self.replies(), [make(cookie, reason)], name)
        self.assertEqual(self.dispatch.calls, [])
        self.assertPingStillWorks()

    def test_valid(self):
        self.send(self.load("ping.ng"))
        self.send(self.load("ping_json.ng"))
        self.assertEqual(self.replies(), [b"5323_1 d6:result4:ponge",
                                          b'5323_2 {"result":"pong"}'])
        self.send(self.load("seed_offer.ng"))
        request = self.dispatch.calls[-1][0]
        self.assertEqual(request["command"], "offer")
        self.assertEqual(request["transport-protocol"], "RTP/SAVPF")
        self.assertTrue(request["sdp"].startswith("v=0\r\n"))


class StatsBoundTests(SynchronousTestCase):
    """Command words come from the network: counting them must not grow."""

    def test_unknownCommandsShareOneCounter(self):
        from twisted.internet.task import Clock
        from twisted.internet.testing import FakeDatagramTransport
        from omnirtp.control.ng import NGProtocol
        proto = NGProtocol(lambda request, addr: {"result": "ok"}, Clock())
        proto.makeConnection(FakeDatagramTransport())
        for i in range(100):
            proto.datagramReceived(b"c%d d7:command5:x%04de" % (i, i), ("127.0.0.1", 5))
        proto.datagramReceived(b"p d7:command4:pinge", ("127.0.0.1", 5))
        self.assertEqual(proto.stats["other"], 100)
        self.assertEqual(proto.stats["ping"], 1)
        self.assertEqual(len(proto.stats), 10)  # 7 commands, other, errors, denied


class _PythonBencode:
    """The same tests with bencode.py alone (the C extension set aside):
    replies and error texts do not depend on it."""

    def setUp(self):
        self.patch(bencode, "_c", None)
        super().setUp()


class PythonBencodeFramingTests(_PythonBencode, FramingTests):
    pass


class PythonBencodeBadInputTests(_PythonBencode, BadInputTests):
    pass


class PythonBencodeErrorTests(_PythonBencode, ErrorTests):
    pass


class PythonBencodeCacheTests(_PythonBencode, CacheTests):
    pass


class PythonBencodeFixtureTests(_PythonBencode, FixtureTests):
    pass

class RealPortTests(SynchronousTestCase):
    """Replies on a real UDP port (twisted's udp.Port): sent straight to
    its socket; a send that fails goes through Port.write, which says what
    the error means (logged, the protocol keeps working)."""

    def setUp(self):
        import socket
        from twisted.internet import reactor, udp
        self.proto = NGProtocol(FakeDispatch(), clock=Clock(), cache_ttl=30)
        self.port = udp.Port(0, self.proto, interface="127.0.0.1", reactor=reactor)
        self.port.startListening()
        self.addCleanup(self.port.stopListening)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.client.close)
        self.client.bind(("127.0.0.1", 0))
        self.client.settimeout(5)
        self.addr = self.client.getsockname()

    def test_reply(self):
        self.proto.datagramReceived(PING, self.addr)
        self.assertEqual(self.client.recv(100), PONG)

    def test_failedSend(self):
        import errno

        class Failing:
            def __init__(self, sock, error):
                self.sock, self.error, self.sends = sock, error, 0

            def sendto(self, data, addr):
                self.sends += 1
                raise OSError(self.error, "refused")

            def __getattr__(self, name):
                return getattr(self.sock, name)

        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        real = self.port.socket
        self.port.socket = Failing(real, errno.EMSGSIZE)
        self.addCleanup(setattr, self.port, "socket", real)
        self.proto.datagramReceived(PING, self.addr)
        self.assertEqual(self.port.socket.sends, 2)  # ours, then Port.write's
        [event] = [e for e in logged if "not sent" in e["log_format"]]
        self.assertIn("message too long", str(event["error"]))
        self.port.socket = real
        self.proto.datagramReceived(b"c2 d7:command4:pinge", self.addr)
        self.assertEqual(self.client.recv(100), b"c2 d6:result4:ponge")
