"""The live web page (omnirtp.http.live) on a StringTransport and a Clock:
the page, the event stream's snapshots, its bounds."""

import json

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from omnirtp.http import live
from omnirtp.test.test_cli import T0
from omnirtp.test.test_http import HTTPTestCase, parse_response

SDES_OFFER = (
    "v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    "m=audio 49170 RTP/SAVP 0\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n")


def events(raw):
    """The ``snapshot`` events' JSON in a raw HTTP response stream."""
    _, _, body = raw.partition(b"\r\n\r\n")
    found = []
    for block in body.split(b"\n\n"):
        lines = block.split(b"\n")
        # chunked transfer encoding puts a size line before each write
        lines = [ln for ln in lines if ln.startswith((b"event:", b"data:", b"retry:"))]
        if lines and lines[0] == b"event: snapshot":
            found.append(json.loads(lines[1][len(b"data: "):]))
    return found


class PageTests(HTTPTestCase):

    def test_page(self):
        status, headers, body = self.get(b"/")
        self.assertEqual((status, headers["content-type"]), (200, "text/html; charset=utf-8"))
        self.assertIn(b'new EventSource("live")', body)
        self.assertIn(b'<meta name="viewport" content="width=device-width', body)
        self.assertEqual(self.request(b"POST", b"/")[0], 404)

    def test_otherPathsStillNotFound(self):
        for path in (b"/nope", b"/live/x", b"/index.html"):
            self.assertEqual(self.get(path)[0], 404, path)


class EventTests(HTTPTestCase):

    def open(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET /live HTTP/1.1\r\nHost: omnirtp\r\n\r\n")
        return channel, transport

    def test_snapshots(self):
        """A snapshot at once and one every second, with every stream's
        endpoints and counters; the next one shows the change."""
        self.d.call("c1")
        channel, transport = self.open()
        status, headers, _ = parse_response(transport.value())
        self.assertEqual((status, headers["content-type"], headers["cache-control"]),
                         (200, "text/event-stream; charset=utf-8", "no-cache"))
        self.assertIn(b"retry: 2000\n\n", transport.value())
        [first] = events(transport.value())
        self.assertEqual(first["count"], 1)
        [call] = first["calls"]
        self.assertEqual((call["call-id"], call["created"], call["duration"], call["answered"],
                          call["deleting"]), ("c1", T0, 0, True, False))
        self.assertEqual([(p["tag"], p["peer"]) for p in call["parties"]],
                         [("ft-c1", "tt-c1"), ("tt-c1", "ft-c1")])
        media = call["parties"][0]["medias"][0]
        self.assertEqual(
            {k: media[k] for k in ("index", "type", "protocol", "codecs", "crypto", "ice",
                                   "rtcp-mux")},
            {"index": 1, "type": "audio", "protocol": "RTP/AVP",
             "codecs": ["PCMU/8000", "PCMA/8000", "telephone-event/8000"], "crypto": "none",
             "ice": False, "rtcp-mux": False})
        # the answerer's codecs are its own SDP's, in its order
        self.assertEqual(call["parties"][1]["medias"][0]["codecs"],
                         ["PCMU/8000", "telephone-event/8000"])
        none = {"loss": None, "lost": None, "jitter": None}
        self.assertEqual(media["streams"], [
            dict(none, kind="RTP", local="127.0.0.1:30000", endpoint="192.0.2.10:49170",
                 packets=0, bytes=0, errors=0, **{"last-packet": 0}),
            dict(none, kind="RTCP", local="127.0.0.1:30001", endpoint="192.0.2.10:49171",
                 packets=0, bytes=0, errors=0, **{"last-packet": 0})])

        # media flows on the first party's RTP socket
        stats = self.d.engine.stats

        def flowing(call_id=None):
            def add(out):
                if "c1" in out:
                    out["c1"][("127.0.0.1", 30000)].update(packets=7, bytes=1204)
                return out
            return stats(call_id).addCallback(add)
        self.patch(self.d.engine, "stats", flowing)
        self.d.clock.advance(1)
        second = events(transport.value())[1]
        self.assertEqual(
            [(s["packets"], s["bytes"])
             for s in second["calls"][0]["parties"][0]["medias"][0]["streams"]],
            [(7, 1204), (0, 0)])
        self.d.call("c2", answer=False)
        self.d.clock.advance(1)
        third = events(transport.value())[2]
        self.assertEqual((third["count"], third["calls"][0]["duration"],
                          [c["call-id"] for c in third["calls"]]), (2, 2, ["c1", "c2"]))
        self.assertEqual(third["calls"][1]["parties"][1]["tag"], "<untagged 0>")

        # the client goes: its loop stops, nothing more is built
        channel.connectionLost(Failure(ConnectionDone()))
        resource = self.site.resource.children[b"live"]
        self.assertEqual(resource.clients, set())
        self.assertEqual(self.d.clock.getDelayedCalls(), [])

    def test_lossAndJitterFromTheReceiversReport(self):
        """The answerer's RTCP port got an RR about the offerer's stream:
        the offerer's RTP row shows its loss and jitter (ms at PCMU's 8000
        Hz), every other row none; the query tree (/sessions/<id>) carries
        the report on the stream where it arrived."""
        self.d.call("c1")
        report = {"type": "RR", "SSRC": 0x22222222, "blocks": [
            {"SSRC": 0x11111111, "fraction lost": 64, "cumulative lost": 12,
             "highest seq": 1050, "jitter": 123}]}
        stats = self.d.engine.stats

        def reporting(call_id=None):
            def add(out):
                if "c1" in out:
                    # the second party's RTCP socket (offered to tt-c1)
                    out["c1"][("127.0.0.1", 30003)]["rtcp"] = report
                return out
            return stats(call_id).addCallback(add)
        self.patch(self.d.engine, "stats", reporting)
        channel, transport = self.open()
        [snap] = events(transport.value())
        rows = [[(s["kind"], s["loss"], s["lost"], s["jitter"]) for s in p["medias"][0]["streams"]]
                for p in snap["calls"][0]["parties"]]
        self.assertEqual(rows, [[("RTP", 25.0, 12, 15.4), ("RTCP", None, None, None)],
                                [("RTP", None, None, None), ("RTCP", None, None, None)]])
        channel.connectionLost(Failure(ConnectionDone()))
        status, _, body = self.get(b"/sessions/c1")
        streams = json.loads(body)["tags"]["tt-c1"]["medias"][0]["streams"]
        self.assertEqual([s.get("RTCP report") for s in streams], [None, report])

    def test_sdesCrypto(self):
        # an SDES phone calls a plain one: SDES is in use with the caller
        from omnirtp.test.test_commands import ANSWER
        self.d.ng(command="offer", call_id="s1", from_tag="a", sdp=SDES_OFFER,
                  transport_protocol="RTP/AVP")
        self.d.ng(command="answer", call_id="s1", from_tag="a", to_tag="b", sdp=ANSWER)
        channel, transport = self.open()
        [snap] = events(transport.value())
        self.assertEqual([(p["tag"], p["medias"][0]["protocol"], p["medias"][0]["crypto"])
                          for p in snap["calls"][0]["parties"]],
                         [("a", "RTP/SAVP", "SDES AES_CM_128_HMAC_SHA1_80"),
                          ("b", "RTP/AVP", "none")])
        # no key material reaches the page
        self.assertNotIn(b"WVNfX19zZW1jdGwg", transport.value())
        channel.connectionLost(Failure(ConnectionDone()))

    def test_noIdleTimeout(self):
        """The site's 30 s idle timeout does not cut an event stream."""
        channel, transport = self.open()
        for _ in range(45):
            self.d.clock.advance(1)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(events(transport.value())), 46)
        channel.connectionLost(Failure(ConnectionDone()))

    def test_tooManyClients(self):
        resource = self.site.resource.children[b"live"]
        opened = [self.open() for _ in range(live.MAX_CLIENTS)]
        self.assertEqual(len(resource.clients), live.MAX_CLIENTS)
        status, _, body = self.get(b"/live")
        self.assertEqual((status, body), (503, b"too many live clients\n"))
        for channel, _ in opened:
            channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.get(b"/ping")[0], 200)

    def test_stalledClientDropped(self):
        """A client that stops reading (the transport pauses the stream)
        gets nothing more and is cut after STALL_LIMIT seconds."""
        channel, transport = self.open()
        resource = self.site.resource.children[b"live"]
        [subscriber] = resource.clients
        subscriber.pauseProducing()
        before = len(transport.value())
        self.d.clock.advance(live.STALL_LIMIT - 1)
        self.assertEqual(len(transport.value()), before)
        self.assertFalse(transport.disconnecting)
        self.d.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(resource.clients, set())
        channel.connectionLost(Failure(ConnectionDone()))

    def test_resumed(self):
        channel, transport = self.open()
        [subscriber] = list(self.site.resource.children[b"live"].clients)
        subscriber.pauseProducing()
        self.d.clock.advance(5)
        subscriber.resumeProducing()
        self.d.clock.advance(1)
        self.assertEqual(len(events(transport.value())), 2)
        channel.connectionLost(Failure(ConnectionDone()))


class ViewTests(HTTPTestCase):

    def test_ipv6Endpoint(self):
        self.assertEqual(live._endpoint({"address": "::1", "port": 5}), "[::1]:5")
        self.assertEqual(live._endpoint(None), "")
