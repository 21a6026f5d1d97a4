"""The HTTP listener on a StringTransport and a Clock: paths, JSON shapes,
/metrics parsed by prometheus_client, ng over HTTP, limits and timeouts."""

import json

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.control import bencode
from omnirtp.http import metrics
from omnirtp.http.listen import SharedPortFactory
from omnirtp.http.site import build_site
from omnirtp.cli.protocol import CliFactory
from omnirtp.test.test_cli import T0, Daemon

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def parse_response(raw):
    """``(status, headers dict (lower-case names), body)`` of one response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode()
    if "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return status, headers, body


class HTTPTestCase(SynchronousTestCase):

    def setUp(self):
        self.d = Daemon(self)
        self.site = build_site(self.d.ops, self.d.commands, self.d.dispatcher, self.d.clock,
                               timeout=30, reactor=self.d.clock)

    def connect(self):
        channel = self.site.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, Failure(ConnectionDone()))
        return channel, transport

    def request(self, method, path, body=b"", headers=()):
        channel, transport = self.connect()
        lines = [b"%s %s HTTP/1.1" % (method, path), b"Host: omnirtp"]
        lines += list(headers)
        if body or method == b"POST":
            lines.append(b"Content-Length: %d" % len(body))
        channel.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        return parse_response(transport.value())

    def get(self, path):
        return self.request(b"GET", path)


class PathTests(HTTPTestCase):

    def test_ping(self):
        self.assertEqual(self.get(b"/ping")[::2], (200, b"pong\n"))
        status, headers, _ = self.get(b"/ping?x=1")
        self.assertEqual((status, headers["content-type"]), (200, "text/plain"))

    def test_notFound(self):
        for path in (b"/nope", b"/ping/x", b"/stats/x", b"/%00"):
            status, headers, body = self.get(path)
            self.assertEqual((status, headers["content-type"], body),
                             (404, "text/plain", b"not found\n"), path)
        # a method a path does not serve: 404, as rtpengine 10.5
        self.assertEqual(self.request(b"POST", b"/ping")[0], 404)

    def test_sessions(self):
        self.d.call("c1")
        self.d.clock.advance(3)
        self.d.call("c2", answer=False)
        status, headers, body = self.get(b"/sessions")
        self.assertEqual((status, headers["content-type"]), (200, "application/json"))
        self.assertEqual(json.loads(body), {"count": 2, "sessions": [
            {"call-id": "c1", "created": T0, "last-signal": T0, "answered": True,
             "deleting": False, "tags": ["ft-c1", "tt-c1"], "packets": 0, "bytes": 0,
             "errors": 0},
            {"call-id": "c2", "created": T0 + 3, "last-signal": T0 + 3, "answered": False,
             "deleting": False, "tags": ["ft-c2", ""], "packets": 0, "bytes": 0,
             "errors": 0}]})
        self.assertEqual(json.loads(self.get(b"/sessions/")[2])["count"], 2)

    def test_noSessions(self):
        self.assertEqual(json.loads(self.get(b"/sessions")[2]), {"count": 0, "sessions": []})

    def test_oneSession(self):
        """/sessions/<call-id>: what ng query answers, plus the call-id;
        the call-id is percent-decoded and may contain '/'."""
        self.d.call("a/b@host")
        status, _, body = self.get(b"/sessions/a%2Fb%40host")
        self.assertEqual(status, 200)
        reply = json.loads(body)
        query = self.d.ng(command="query", call_id="a/b@host")
        del query["result"]
        query["call-id"] = "a/b@host"
        self.assertEqual(reply, query)
        self.assertEqual(sorted(reply["tags"]), ["ft-a/b@host", "tt-a/b@host"])
        self.assertEqual(self.get(b"/sessions/a/b@host")[0], 200)
        status, _, body = self.get(b"/sessions/nope")
        self.assertEqual((status, json.loads(body)),
                         (404, {"error": "Unknown call-id", "call-id": "nope"}))

    def test_stats(self):
        self.d.call("c1")
        self.d.clock.advance(4)
        # the ng command first: it is counted in what both show
        ng = self.d.ng(command="statistics")["statistics"]
        status, headers, body = self.get(b"/stats")
        self.assertEqual((status, headers["content-type"]), (200, "application/json"))
        stats = json.loads(body)
        # the ng command has completed since its reply was made: 10.5's
        # total...count counters count completed requests
        ng["controlstatistics"]["totalstatscount"] += 1
        self.assertEqual(stats, json.loads(json.dumps(ng)))
        self.assertEqual(stats["currentstatistics"]["sessionsown"], 1)

    def test_cli(self):
        self.d.call("c1")
        for path in (b"/cli/list/numsessions", b"/cli/list%20numsessions"):
            status, headers, body = self.get(path)
            self.assertEqual((status, headers["content-type"]), (200, "text/plain"))
            self.assertTrue(body.startswith(b"Current sessions own: 1\n"), body)
        self.assertEqual(self.get(b"/cli/foo")[2], b"Unknown or incomplete command::foo\n")

    def test_failureIs500(self):
        def broken():
            raise RuntimeError("boom")
        self.d.ops.statistics = broken
        self.assertEqual(self.get(b"/stats")[::2], (500, b"internal error\n"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class MetricsTests(HTTPTestCase):

    def families(self):
        status, headers, body = self.get(b"/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain; version=0.0.4"))
        return list(text_string_to_metric_families(body.decode()))

    def samples(self, families):
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in families for s in f.samples}

    def test_names(self):
        """rtpengine 10.5's series names, types and labels."""
        self.d.call("c1")
        self.d.call("c2", answer=False)
        self.d.clock.advance(9)
        self.d.cli("terminate c2")
        families = self.families()
        expected = [
            ("rtpengine_sessions", "gauge"),
            ("rtpengine_transcoded_media", "gauge"),
            ("rtpengine_mediastreams", "gauge"),
            ("rtpengine_uptime_seconds", "gauge"),
            ("rtpengine_sessions", "counter"),  # rtpengine_sessions_total
            ("rtpengine_closed_sessions", "counter"),
            ("rtpengine_packets", "counter"),
            ("rtpengine_packet_errors", "counter"),
            ("rtpengine_bytes", "counter"),
            ("rtpengine_call_duration_avg", "gauge"),
            ("rtpengine_call_duration", "counter"),
            ("rtpengine_ports_used", "gauge"),
            ("rtpengine_ports_free", "gauge"),
            ("rtpengine_ports", "gauge"),
        ]
        got = [(f.name, f.type) for f in families]
        # the per-proxy series come with the Dispatcher's per-proxy counts
        if ("rtpengine_requests", "counter") in got:
            expected[11:11] = [("rtpengine_requests", "counter"),
                               ("rtpengine_errors", "counter")]
        self.assertEqual(got, expected)
        s = self.samples(families)
        self.assertEqual(s[("rtpengine_sessions", (("type", "own"),))], 1)
        self.assertEqual(s[("rtpengine_sessions", (("type", "foreign"),))], 0)
        self.assertEqual(s[("rtpengine_closed_sessions_total",
                            (("reason", "force_terminated"),))], 1)
        self.assertEqual(s[("rtpengine_uptime_seconds", ())], 9)
        self.assertEqual(s[("rtpengine_call_duration_total", ())], 9)
        self.assertEqual(s[("rtpengine_mediastreams", (("type", "userspace"),))], 2)
        self.assertEqual(s[("rtpengine_packets_total", (("type", "kernel"),))], 0)
        key = (("address", "127.0.0.1"), ("name", "default"))
        self.assertEqual((s[("rtpengine_ports_used", key)], s[("rtpengine_ports_free", key)],
                          s[("rtpengine_ports", key)]), (4, 16, 20))

    def test_perProxyRequests(self):
        """The per-proxy request series, from statistics' controlstatistics
        proxies (rtpengine_requests_total{proxy,request}, rtpengine_errors_total)."""
        stats = {"controlstatistics": {"proxies": [
            {"proxy": "10.0.0.1", "pingcount": 2, "offercount": 5, "answercount": 4,
             "deletecount": 1, "querycount": 0, "listcount": 0, "statscount": 3,
             "errorcount": 7}]}}
        text = metrics.render(stats, [], 0).decode()
        s = {(x.name, tuple(sorted(x.labels.items()))): x.value
             for f in text_string_to_metric_families(text) for x in f.samples}
        self.assertEqual(s[("rtpengine_requests_total",
                            (("proxy", "10.0.0.1"), ("request", "offer")))], 5)
        self.assertEqual(s[("rtpengine_requests_total",
                            (("proxy", "10.0.0.1"), ("request", "statistics")))], 3)
        self.assertEqual(s[("rtpengine_errors_total", (("proxy", "10.0.0.1"),))], 7)
        self.assertIn("# TYPE rtpengine_requests_total counter\n", text)

    def test_textMatchesRtpengineLines(self):
        """The TYPE lines are rtpengine's own (``..._total counter``)."""
        text = self.get(b"/metrics")[2].decode()
        for line in ("# TYPE rtpengine_sessions gauge",
                     "# TYPE rtpengine_sessions_total counter",
                     "# TYPE rtpengine_closed_sessions_total counter",
                     "# TYPE rtpengine_packets_total counter",
                     "# TYPE rtpengine_call_duration_avg gauge"):
            self.assertIn(line + "\n", text)


class NGTests(HTTPTestCase):

    def ng(self, body, ctype=b"application/x-rtpengine-ng"):
        return self.request(b"POST", b"/ng", body, [b"Content-Type: " + ctype])

    def test_ping(self):
        status, headers, body = self.ng(b"k1 d7:command4:pinge")
        self.assertEqual((status, headers["content-type"], body),
                         (200, "application/x-rtpengine-ng", b"k1 d6:result4:ponge"))
        self.assertEqual(self.ng(b'k2 {"command":"ping"}')[2], b'k2 {"result":"pong"}')

    def test_offer(self):
        from omnirtp.test.test_commands import OFFER
        status, _, body = self.ng(b"k3 " + bencode.encode(
            {"command": "offer", "call-id": "h1", "from-tag": "f", "sdp": OFFER}))
        self.assertEqual(status, 200)
        cookie, _, reply = body.partition(b" ")
        self.assertEqual(cookie, b"k3")
        self.assertEqual(bencode.decode(reply)[b"result"], b"ok")
        self.assertEqual(list(self.d.registry.calls), ["h1"])
        # the Dispatcher counted it
        self.assertEqual(self.d.dispatcher.counts["offer"], 1)

    def test_errors(self):
        """rtpengine 10.5's texts, as over UDP."""
        self.assertEqual(self.ng(b"k4 garbage")[2],
                         b"k4 d6:result5:error12:error-reason22:Invalid NG data formate")
        self.assertEqual(self.ng(b"k5 d7:command3:fooe")[2],
                         b"k5 d6:result5:error12:error-reason20:Unrecognized commande")
        self.assertEqual(self.ng(b"k6 ")[2],
                         b"k6 d6:result5:error12:error-reason25:Invalid data (no payload)e")

    def test_noCookie(self):
        """No cookie: status 600 and "error", as 10.5."""
        for body in (b"k7", b" d7:command4:pinge", b""):
            self.assertEqual(self.ng(body)[::2], (600, b"error\n"), body)

    def test_cookieCache(self):
        """A resent cookie gets the first reply; the command runs once."""
        first = self.ng(b"same d7:command4:pinge")[2]
        second = self.ng(b"same d7:command4:liste")[2]
        self.assertEqual(first, second)
        self.assertEqual(self.d.dispatcher.counts["list"], 0)

    def test_wrongContentTypeOrMethod(self):
        self.assertEqual(self.ng(b"k8 d7:command4:pinge", b"application/json")[0], 404)
        self.assertEqual(self.request(b"GET", b"/ng", headers=[
            b"Content-Type: application/x-rtpengine-ng"])[0], 404)

    def test_clientGoneBeforeReply(self):
        """The reply of a request whose client went away is dropped."""
        from twisted.internet import defer
        pending = defer.Deferred()
        ng = self.site.resource.children[b"ng"]
        ng.protocol.dispatch = lambda request, addr: pending
        channel, transport = self.connect()
        body = b"k9 d7:command4:pinge"
        channel.dataReceived(b"POST /ng HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             b"application/x-rtpengine-ng\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
        channel.connectionLost(Failure(ConnectionDone()))
        pending.callback({"result": "pong"})
        self.assertEqual(transport.value(), b"")
        self.assertEqual(ng.protocol.transport.waiting, {})


class LimitTests(HTTPTestCase):

    def test_bodyTooLarge(self):
        """A declared length over the limit: 413, closed, nothing run."""
        channel, transport = self.connect()
        channel.dataReceived(b"POST /ng HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             b"application/x-rtpengine-ng\r\nContent-Length: 2000000\r\n\r\n"
                             b"k1 d7:command4:pinge")
        status, _, body = parse_response(transport.value())
        self.assertEqual((status, body), (413, b"request body too large\n"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.d.dispatcher.counts["ping"], 0)

    def test_chunkedBodyTooLarge(self):
        channel, transport = self.connect()
        channel.dataReceived(b"POST /ng HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             b"application/x-rtpengine-ng\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        for _ in range(17):
            channel.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        channel.dataReceived(b"0\r\n\r\n")
        status, _, _ = parse_response(transport.value())
        self.assertEqual(status, 413)
        self.assertTrue(transport.disconnecting)

    def test_headersTooLarge(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET /ping HTTP/1.1\r\n" + b"X-A: " + b"a" * 20000 + b"\r\n\r\n")
        # twisted.web closes without a response
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_garbage(self):
        channel, transport = self.connect()
        channel.dataReceived(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        self.assertEqual(parse_response(transport.value())[0], 400)
        self.assertTrue(transport.disconnecting)

    def test_requestDeadline(self):
        """A request that has not arrived whole 10 s (control-timeout) after
        the connection is aborted, however steadily its bytes trickle in."""
        channel, transport = self.connect()
        for byte in b"GET /ping HTTP/1.1\r\nHost: x\r\n":
            if self.d.clock.seconds() >= T0 + 9:
                break
            channel.dataReceived(bytes([byte]))
            self.d.clock.advance(1)
        self.assertFalse(transport.disconnecting or transport.disconnected)
        self.d.clock.advance(1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")

    def test_silentClientDropped(self):
        channel, transport = self.connect()
        self.d.clock.advance(9.9)
        self.assertFalse(transport.disconnected)
        self.d.clock.advance(0.1)
        self.assertTrue(transport.disconnected)

    def test_deadlineRearmedAfterEachResponse(self):
        """Keep-alive: each request gets its own 10 s from the previous response."""
        channel, transport = self.connect()
        self.d.clock.advance(8)
        channel.dataReceived(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(parse_response(transport.value())[2], b"pong\n")
        self.d.clock.advance(8)
        self.assertFalse(transport.disconnected)
        transport.clear()
        channel.dataReceived(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(parse_response(transport.value())[2], b"pong\n")
        self.d.clock.advance(9.9)
        self.assertFalse(transport.disconnected)
        self.d.clock.advance(0.1)
        self.assertTrue(transport.disconnected)

    def test_configuredDeadline(self):
        site = build_site(self.d.ops, self.d.commands, self.d.dispatcher, self.d.clock,
                          timeout=30, reactor=self.d.clock, request_timeout=2)
        channel = site.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        channel.makeConnection(transport)
        self.d.clock.advance(2)
        self.assertTrue(transport.disconnected)


class SharedPortHTTPTests(HTTPTestCase):
    """HTTP and the CLI through one SharedPortFactory (as on port 9900)."""

    def connect_shared(self):
        factory = SharedPortFactory(self.site, CliFactory(self.d.commands))
        proto = factory.buildProtocol(PEER)
        proto.callLater = self.d.clock.callLater
        transport = StringTransport(peerAddress=PEER)
        proto.makeConnection(transport)
        return proto, transport

    def test_http(self):
        proto, transport = self.connect_shared()
        proto.dataReceived(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(parse_response(transport.value())[::2], (200, b"pong\n"))
        proto.connectionLost(Failure(ConnectionDone()))

    def test_cli(self):
        proto, transport = self.connect_shared()
        proto.dataReceived(b"list maxsessions\n")
        self.assertEqual(transport.value(), b"Maximum sessions configured on rtpengine: -1\n")
        self.assertTrue(transport.disconnecting)


def self_signed(path):
    """A throwaway self-signed certificate and key in one PEM file."""
    from OpenSSL import crypto
    key = crypto.PKey()
    key.generate_key(crypto.TYPE_RSA, 2048)
    cert = crypto.X509()
    cert.get_subject().CN = "localhost"
    cert.set_serial_number(1)
    cert.gmtime_adj_notBefore(0)
    cert.gmtime_adj_notAfter(3600)
    cert.set_issuer(cert.get_subject())
    cert.set_pubkey(key)
    cert.sign(key, "sha256")
    with open(path, "wb") as f:
        f.write(crypto.dump_privatekey(crypto.FILETYPE_PEM, key))
        f.write(crypto.dump_certificate(crypto.FILETYPE_PEM, cert))


class ServiceTests(SynchronousTestCase):
    """omnirtp.service composes the listeners from the config."""

    def build(self, **kw):
        from omnirtp.config.model import Config, InterfaceSpec
        from omnirtp.service import build
        from omnirtp.test.fakes import MemoryUDPReactor
        values = dict(interfaces=(InterfaceSpec("default", "127.0.0.1", None),),
                      listen_ng=(("127.0.0.1", 22222),))
        values.update(kw)
        reactor = MemoryUDPReactor()
        top = build(Config(**values), reactor)
        return top, reactor

    def test_noneByDefault(self):
        top, reactor = self.build()
        self.assertIsNone(top.operator)
        top.startService()
        self.assertEqual(reactor.tcpServers, [])
        top.stopService()

    def test_listeners(self):
        from omnirtp.http.listen import LimitedFactory
        from omnirtp.http.site import Site
        from omnirtp.cli.protocol import CliFactory
        top, reactor = self.build(
            listen_cli=(("127.0.0.1", 9900), ("::1", 9901)),
            listen_http=(("127.0.0.1", 9900), ("127.0.0.1", 8080)))
        top.startService()
        servers = {(host, port): factory for port, factory, _, host in reactor.tcpServers}
        self.assertEqual(sorted(servers), [("127.0.0.1", 8080), ("127.0.0.1", 9900),
                                          ("::1", 9901)])
        for factory in servers.values():
            self.assertIsInstance(factory, LimitedFactory)
        self.assertIsInstance(servers[("127.0.0.1", 9900)].wrapped, SharedPortFactory)
        self.assertIsInstance(servers[("::1", 9901)].wrapped, CliFactory)
        self.assertIsInstance(servers[("127.0.0.1", 8080)].wrapped, Site)
        # every listener answers to the daemon's control-allow list
        for factory in servers.values():
            self.assertIs(factory.access, top.access)
        self.assertEqual((servers[("::1", 9901)].kind, servers[("127.0.0.1", 9900)].kind,
                          servers[("127.0.0.1", 8080)].kind), ("cli", "http", "http"))
        stopped = []
        for p in top.operator.ports:
            p.stopListening = lambda p=p: stopped.append(p)
        self.assertEqual(len(top.operator.ports), 3)
        top.stopService()
        self.assertEqual(top.operator.ports, [])
        self.assertEqual(len(stopped), 3)

    def test_https(self):
        from omnirtp.http.site import Site
        path = self.mktemp()
        self_signed(path)
        top, reactor = self.build(listen_https=(("127.0.0.1", 9443),), https_cert=path)
        top.startService()
        self.assertEqual(len(reactor.sslServers), 1)
        port, factory, context, _, host = reactor.sslServers[0]
        self.assertEqual((host, port), ("127.0.0.1", 9443))
        self.assertIsInstance(factory.wrapped, Site)
        self.assertIsNotNone(context.getContext())
        top.stopService()
