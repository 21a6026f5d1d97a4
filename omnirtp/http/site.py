"""The HTTP listener (``listen-http``, ``listen-https``): twisted.web resources.

rtpengine 10.5's paths, with its behaviour (asked of the live daemon):

``GET /ping``
    ``pong`` (text/plain).
``GET /metrics``
    Prometheus text (:mod:`omnirtp.http.metrics`).
``GET /cli/<command>``
    a CLI command (words separated by ``/`` or spaces), the CLI's reply as
    text/plain.
``POST /ng`` with ``Content-Type: application/x-rtpengine-ng``
    the ng protocol: the body is ``COOKIE SP PAYLOAD`` (bencode or JSON),
    the reply ``COOKIE SP REPLY`` with the same content type; the same
    framing, error texts and cookie cache as ng over UDP (one
    :class:`~omnirtp.control.ng.NGProtocol` serves this listener).  A body
    without a cookie gets status 600 and ``error``, as 10.5.  Another
    content type is a 404.

omnirtp's own additions, for the seed deployment's ``curl :9900/sessions``:

``GET /sessions``
    JSON ``{"count": N, "sessions": [{"call-id", "created", "last-signal",
    "deleting", "answered", "tags", "packets", "bytes", "errors"}]}``.
``GET /sessions/<call-id>``
    JSON: ``call-id`` plus what ng ``query`` answers for the call; 404 with
    ``{"error": "Unknown call-id"}``.
``GET /stats``
    JSON: what ng ``statistics`` answers (its ``statistics`` dictionary).
``GET /`` and ``GET /live``
    the live web page and its server-sent events (:mod:`omnirtp.http.live`).

Anything else: 404 ``not found`` (text/plain), as 10.5.

Limits: a request body over :data:`MAX_BODY` bytes is answered 413 and the
connection closed before the body is read; headers are bounded by
twisted.web (16 KiB); an idle connection is closed after the site's
``timeout``, and a request (line, headers and body) must arrive whole
within ``request_timeout`` seconds (``control-timeout``) of the connection
or of the previous response: a deadline that trickled bytes do not move, so
a client sending one byte a second is dropped.  Requests are not logged one
by one.
"""

import json
from urllib.parse import unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import http, resource, server

from omnirtp.cli.commands import media_streams
from omnirtp.control.ng import NGProtocol
from omnirtp.http import metrics

MAX_BODY = 1 << 20
TIMEOUT = 30.0
#: seconds a client has to send a whole request (``control-timeout``)
REQUEST_TIMEOUT = 10.0
NG_CONTENT_TYPE = b"application/x-rtpengine-ng"
TEXT = b"text/plain"
JSON = b"application/json"


def _text(request, body, code=200, content_type=TEXT):
    request.setResponseCode(code)
    request.setHeader(b"content-type", content_type)
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogateescape")
    return body


def _json(request, value, code=200):
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
    return _text(request, body.encode("utf-8", "surrogateescape") + b"\n", code, JSON)


def _deferred(request, fn, log):
    """Render the bytes that ``fn()`` returns (or a Deferred of them) into
    ``request``; an exception is a 500 and a log entry."""
    d = defer.maybeDeferred(fn)
    gone = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))

    def done(body):
        if not gone:
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()

    def failed(failure):
        log.failure("HTTP {path} failed", failure, path=request.path)
        if not gone:
            body = _text(request, "internal error\n", 500)
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()

    d.addCallbacks(done, failed)
    return server.NOT_DONE_YET


class NotFound(resource.Resource):
    isLeaf = True

    def render(self, request):
        return _text(request, "not found\n", 404)


class _Leaf(resource.Resource):
    isLeaf = True
    log = Logger()
    #: serves paths below its own (``/sessions/<call-id>``, ``/cli/...``)
    subpaths = False

    def __init__(self, ops):
        resource.Resource.__init__(self)
        self.ops = ops

    def render(self, request):
        # rtpengine answers a method it does not serve with 404, not 405
        if request.method not in (b"GET", b"HEAD"):
            return NotFound().render(request)
        if not self.subpaths and any(request.postpath):
            return NotFound().render(request)
        return self.render_GET(request)


class Ping(_Leaf):
    def render_GET(self, request):
        return _text(request, "pong\n")


class Metrics(_Leaf):
    def render_GET(self, request):
        ops = self.ops

        def body(stats):
            request.setHeader(b"content-type", metrics.CONTENT_TYPE.encode("ascii"))
            return metrics.render(stats, ops.interfaces(),
                                  media_streams(stats, ops.calls()))

        return _deferred(request, lambda: ops.statistics().addCallback(body), self.log)


class Stats(_Leaf):
    def render_GET(self, request):
        return _deferred(
            request, lambda: self.ops.statistics().addCallback(lambda s: _json(request, s)),
            self.log)


class Sessions(_Leaf):
    """``/sessions`` and ``/sessions/<call-id>`` (the rest of the path,
    percent-decoded, is the call-id)."""

    subpaths = True

    def render_GET(self, request):
        if request.postpath and any(request.postpath):
            call_id = unquote(b"/".join(request.postpath).decode("utf-8", "surrogateescape"),
                              errors="surrogateescape")
            return self._one(request, call_id)
        return _deferred(request, lambda: self._all(request), self.log)

    @defer.inlineCallbacks
    def _all(self, request):
        ops = self.ops
        calls = ops.calls()
        stats = (yield ops.engine.stats(None)) if calls else {}
        sessions = []
        for call in calls:
            per = stats.get(call.call_id, {})
            sessions.append({
                "call-id": call.call_id,
                "created": int(call.created),
                "last-signal": int(call.last_signal),
                "answered": bool(call.answered),
                "deleting": call.deletion_at is not None,
                "tags": [ml.tag or "" for ml in call.monologues],
                "packets": sum(c.get("packets", 0) for c in per.values()),
                "bytes": sum(c.get("bytes", 0) for c in per.values()),
                "errors": sum(c.get("errors", 0) for c in per.values()),
            })
        return _json(request, {"count": len(sessions), "sessions": sessions})

    def _one(self, request, call_id):
        call = self.ops.call(call_id)
        if call is None:
            return _json(request, {"error": "Unknown call-id", "call-id": call_id}, 404)

        def body(tree):
            reply = {"call-id": call_id}
            reply.update(tree)
            return _json(request, reply)

        return _deferred(request, lambda: self.ops.call_tree(call).addCallback(body),
                         self.log)


class Cli(_Leaf):
    """``/cli/list/numsessions`` or ``/cli/list%20numsessions``."""

    subpaths = True

    def __init__(self, ops, commands):
        _Leaf.__init__(self, ops)
        self.commands = commands

    def render_GET(self, request):
        words = [unquote(p.decode("utf-8", "surrogateescape"), errors="surrogateescape")
                 for p in request.postpath]
        line = " ".join(w for w in words if w)
        return _deferred(
            request, lambda: self.commands.run(line).addCallback(
                lambda text: _text(request, text)), self.log)


class _ReplyTransport:
    """NGProtocol's transport for HTTP: a reply "datagram" finishes the
    request registered under its address token."""

    def __init__(self):
        self.waiting = {}

    def write(self, datagram, addr):
        request = self.waiting.pop(addr, None)
        if request is None:
            return
        request.setResponseCode(200)
        request.setHeader(b"content-type", NG_CONTENT_TYPE)
        request.setHeader(b"content-length", b"%d" % len(datagram))
        request.write(datagram)
        request.finish()


class NG(resource.Resource):
    """``POST /ng``: ng over HTTP through an NGProtocol of its own."""

    isLeaf = True

    def __init__(self, dispatch, clock):
        resource.Resource.__init__(self)
        self.protocol = NGProtocol(dispatch, clock)
        self.protocol.transport = _ReplyTransport()
        self._serial = 0

    def render(self, request):
        ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if request.method != b"POST" or ctype != NG_CONTENT_TYPE:
            return NotFound().render(request)
        body = request.content.read()
        if body.find(b" ") <= 0:
            return _text(request, "error\n", 600)
        self._serial += 1
        # (client address, serial): unique per request; [0] is the proxy
        # the Dispatcher counts requests under
        addr = (request.getClientAddress().host, self._serial)
        waiting = self.protocol.transport.waiting
        waiting[addr] = request
        request.notifyFinish().addErrback(lambda _: waiting.pop(addr, None))
        self.protocol.datagramReceived(body, addr)
        return server.NOT_DONE_YET


class Root(resource.Resource):
    """The path table; unknown paths are a text 404."""

    def __init__(self, ops, commands, dispatch, clock):
        resource.Resource.__init__(self)
        self.putChild(b"ping", Ping(ops))
        self.putChild(b"metrics", Metrics(ops))
        self.putChild(b"stats", Stats(ops))
        self.putChild(b"sessions", Sessions(ops))
        self.putChild(b"cli", Cli(ops, commands))
        self.putChild(b"ng", NG(dispatch, clock))
        from omnirtp.http.live import LiveEvents, LivePage
        self.putChild(b"", LivePage())
        self.putChild(b"live", LiveEvents(ops, clock))

    def getChild(self, path, request):
        return NotFound()

    def render(self, request):
        return NotFound().render(request)


class LimitedRequest(server.Request):
    """A request whose body may not exceed ``max_body`` bytes: a larger one
    gets 413 and the connection is closed; the resource never runs."""

    max_body = MAX_BODY
    refused = False
    _received = 0

    def gotLength(self, length):
        if length is not None and length > self.max_body:
            self._refuse()
            length = 0
        server.Request.gotLength(self, length)

    def handleContentChunk(self, data):
        if self.refused:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._refuse()
            return
        server.Request.handleContentChunk(self, data)

    def _refuse(self):
        if self.refused:
            return
        self.refused = True
        body = b"request body too large\n"
        self.channel.transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\ncontent-type: text/plain\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        self.channel.transport.loseConnection()

    def requestReceived(self, command, path, version):
        if self.refused:
            return
        server.Request.requestReceived(self, command, path, version)


class DeadlineChannel(http.HTTPChannel):
    """An HTTP channel that aborts the connection when a request has not
    arrived whole ``request_timeout`` seconds after the connection was made
    or the previous response was done.  twisted.web's own ``timeOut`` is an
    idle timer that every byte resets; this one is not."""

    request_timeout = REQUEST_TIMEOUT
    _deadline = None

    def connectionMade(self):
        http.HTTPChannel.connectionMade(self)
        self._arm()

    def _arm(self):
        self._disarm()
        if self.request_timeout:
            self._deadline = self.callLater(self.request_timeout, self._expired)

    def _disarm(self):
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _expired(self):
        self._deadline = None
        self.transport.abortConnection()

    def allContentReceived(self):
        self._disarm()
        http.HTTPChannel.allContentReceived(self)

    def requestDone(self, request):
        # armed first: a pipelined request replayed by requestDone disarms it
        self._arm()
        http.HTTPChannel.requestDone(self, request)

    def connectionLost(self, reason):
        self._disarm()
        http.HTTPChannel.connectionLost(self, reason)


class Site(server.Site):
    """twisted.web's Site with omnirtp's limits and no per-request log."""

    noisy = False
    requestFactory = LimitedRequest
    protocol = DeadlineChannel

    def __init__(self, root, timeout=TIMEOUT, reactor=None, max_body=MAX_BODY,
                 request_timeout=REQUEST_TIMEOUT):
        kwargs = {"timeout": timeout}
        if reactor is not None:
            kwargs["reactor"] = reactor
        server.Site.__init__(self, root, **kwargs)
        self.max_body = max_body
        self.request_timeout = request_timeout

        def request_factory(*args, **kw):
            r = LimitedRequest(*args, **kw)
            r.max_body = self.max_body
            return r

        self.requestFactory = request_factory

    def buildProtocol(self, addr):
        channel = server.Site.buildProtocol(self, addr)
        channel.request_timeout = self.request_timeout
        return channel

    def log(self, request):
        pass


def build_site(ops, commands, dispatch, clock, timeout=TIMEOUT, reactor=None,
               request_timeout=REQUEST_TIMEOUT):
    return Site(Root(ops, commands, dispatch, clock), timeout=timeout, reactor=reactor,
                request_timeout=request_timeout)
