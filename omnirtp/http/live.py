"""The live web page: ``GET /`` (HTML) and ``GET /live`` (server-sent events).

``/`` is one self-contained page (no build step, no external files,
readable on a phone): the current calls, each party's media with its
protocol, codecs, crypto, ICE and rtcp-mux, and per stream (RTP, RTCP) the
local and remote endpoints, packets, bytes, errors, the packet rate and a
small graph of it.  It subscribes to ``/live``: an ``EventSource`` stream
whose ``snapshot`` events carry the whole picture as JSON every
:data:`INTERVAL` seconds (the page computes rates and graphs from
consecutive snapshots).

Codecs: the formats of each party's own last SDP (offerer and answerer),
in its order, as the call model keeps them.

Loss and jitter: from RTCP, as the receiving party reports them.  The
relay keeps each party's latest SR/RR (``RTCP report`` on the stream
where it arrived: the RTCP port, or the RTP port with rtcp-mux); the
report blocks a party sends describe the media it receives, i.e. what its
peer sends through us.  So a party's RTP row shows the loss (the block's
fraction lost since the previous report, in percent, and the cumulative
count) and the jitter (in ms at the party's first codec's clock rate)
that its peer reported about it; None (shown as "-") until its peer sent
a report with a block.  The relay reads no RTP sequence numbers (the
packet path stays allocation-free), so a peer that sends no RTCP shows no
figures rather than invented ones.

Bounds: at most :data:`MAX_CLIENTS` event streams at once (more get 503);
a client that stops reading (the transport pauses us) is skipped and, after
:data:`STALL_LIMIT` seconds, disconnected; snapshots are built only while
someone listens, never on the packet path.
"""

import json

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.web import resource, server

from omnirtp.media import rtcp
from omnirtp.sdp.codecs import codec_for

INTERVAL = 1.0
MAX_CLIENTS = 16
STALL_LIMIT = 30.0


def _endpoint(value):
    if not value:
        return ""
    address, port = value.get("address", ""), value.get("port", 0)
    if ":" in address:
        return "[%s]:%s" % (address, port)
    return "%s:%s" % (address, port)


def party_codecs(media):
    """``[(encoding, clock rate)]`` of the formats of the party's own last
    SDP for ``media``, in its order (clock rate 0 when unknown): parsed
    (``codecs_in``) once its call handles codecs, else its m= section as
    kept (``codec_source``), else the offer's codec keys."""
    if media.codecs_in is not None:
        return [(pt.encoding or str(pt.pt), pt.clock_rate or 0) for pt in media.codecs_in]
    kept = media.codec_source
    if kept is not None:
        section = kept.section()
        rtpmaps = section.rtpmaps()
        out = []
        for f in section.formats:
            codec = codec_for(f, rtpmaps)
            out.append((codec.encoding or f, codec.clock_rate or 0))
        return out
    return sorted((k[0], k[1]) if isinstance(k, tuple) else (str(k), 0)
                  for k in media.codec_keys)


def _codecs(media):
    return ["%s/%s" % (name, rate) if rate else name for name, rate in party_codecs(media)]


def _report(entry, index):
    """The first report block of the latest RTCP report among the streams
    of media ``index`` in a party's query ``entry`` (RTCP port first, then
    the RTP port for rtcp-mux), or None."""
    for media in (entry or {}).get("medias", ()):
        if media.get("index") != index:
            continue
        for s in sorted(media.get("streams", ()), key=lambda s: "RTCP" not in s.get("flags", ())):
            report = s.get("RTCP report")
            if report and report.get("blocks"):
                return report["blocks"][0]
    return None


def _quality(block, clock_rate):
    """loss / lost / jitter of a stream from its receiver's report block."""
    if block is None:
        return {"loss": None, "lost": None, "jitter": None}
    return {"loss": rtcp.loss_percent(block["fraction lost"]),
            "lost": block["cumulative lost"],
            "jitter": rtcp.jitter_ms(block["jitter"], clock_rate)}


def _crypto(media):
    if media.dtls_role is not None:
        return "DTLS-SRTP (%s)" % media.dtls_role
    if media.crypto_remote is not None and media.crypto_local is not None:
        return "SDES %s" % media.crypto_local.suite
    return "none"


def call_view(call, tree, now):
    """One call for the page: the ng ``query`` tree (``tree``) with each
    medium's codecs, crypto, ICE and rtcp-mux from the call model, and
    each RTP stream's loss and jitter from its receiver's RTCP reports."""
    parties = []
    # the tree lists the call's monologues in order, one entry each
    entries = list(zip(call.monologues, tree.get("tags", {}).items()))
    by_party = {id(ml): entry for ml, (_, entry) in entries}
    for ml, (tag, entry) in entries:
        models = {m.index: m for m in ml.medias}
        receiver = by_party.get(id(ml.peer)) if ml.peer is not None else None
        medias = []
        for media in entry.get("medias", ()):
            model = models.get(media.get("index"))
            codecs = party_codecs(model) if model is not None else []
            clock_rate = next((rate for _, rate in codecs if rate), 0)
            streams = []
            for s in media.get("streams", ()):
                stats = s.get("stats", {})
                kind = "RTCP" if "RTCP" in s.get("flags", ()) else "RTP"
                block = _report(receiver, media.get("index")) if kind == "RTP" else None
                stream = {
                    "kind": kind,
                    "local": _endpoint({"address": s.get("local address", ""),
                                        "port": s.get("local port", 0)}),
                    "endpoint": _endpoint(s.get("endpoint")),
                    "packets": stats.get("packets", 0),
                    "bytes": stats.get("bytes", 0),
                    "errors": stats.get("errors", 0),
                    "last-packet": s.get("last packet", 0),
                }
                stream.update(_quality(block, clock_rate))
                streams.append(stream)
            medias.append({
                "index": media.get("index"),
                "type": media.get("type", ""),
                "protocol": media.get("protocol") or "",
                "codecs": _codecs(model) if model is not None else [],
                "crypto": _crypto(model) if model is not None else "none",
                "ice": bool(model is not None and model.ice_used),
                "rtcp-mux": bool(model is not None and model.mux),
                "streams": streams,
            })
        parties.append({"tag": tag, "peer": entry.get("in dialogue with", ""),
                        "medias": medias})
    return {
        "call-id": call.call_id,
        "created": int(call.created),
        "duration": max(0, int(now - call.created)),
        "answered": bool(call.answered),
        "deleting": call.deletion_at is not None,
        "parties": parties,
    }


@defer.inlineCallbacks
def snapshot(ops):
    """Everything the page shows, as one JSON-ready dict."""
    calls = ops.calls()
    stats = (yield ops.engine.stats(None)) if calls else {}
    now = ops.clock.seconds()
    views = []
    for call in calls:
        tree = ops.dispatcher.call_tree(call, stats.get(call.call_id, {}))
        views.append(call_view(call, tree, now))
    return {"time": now, "count": len(views), "calls": views}


class _Subscriber:
    """One event-stream client: a snapshot now and every ``interval``."""

    log = Logger()

    def __init__(self, events, request):
        self.events = events
        self.request = request
        self.paused_at = None
        self.busy = False
        self.loop = task.LoopingCall(self.tick)
        self.loop.clock = events.clock

    # IPushProducer: the transport pauses us while the client does not read
    def pauseProducing(self):
        if self.paused_at is None:
            self.paused_at = self.events.clock.seconds()

    def resumeProducing(self):
        self.paused_at = None

    def stopProducing(self):
        self.stop()

    def start(self):
        self.request.registerProducer(self, True)
        self.loop.start(self.events.interval, now=True)

    def stop(self):
        if self.loop.running:
            self.loop.stop()
        self.events.clients.discard(self)

    def tick(self):
        if self.paused_at is not None:
            if self.events.clock.seconds() - self.paused_at >= self.events.stall_limit:
                self.stop()
                self.request.channel.transport.abortConnection()
            return
        if self.busy:
            return
        self.busy = True
        d = snapshot(self.events.ops)
        d.addCallback(self.send)
        d.addErrback(lambda f: self.log.failure("live snapshot failed", f))
        d.addBoth(self._idle)

    def _idle(self, _):
        self.busy = False

    def send(self, view):
        if self not in self.events.clients:
            return
        data = json.dumps(view, ensure_ascii=False, separators=(",", ":"))
        self.request.write(b"event: snapshot\ndata: " + data.encode("utf-8", "surrogateescape")
                           + b"\n\n")


class LiveEvents(resource.Resource):
    """``GET /live``: ``text/event-stream`` of ``snapshot`` events."""

    isLeaf = True

    def __init__(self, ops, clock, interval=INTERVAL, max_clients=MAX_CLIENTS,
                 stall_limit=STALL_LIMIT):
        resource.Resource.__init__(self)
        self.ops = ops
        self.clock = clock
        self.interval = interval
        self.max_clients = max_clients
        self.stall_limit = stall_limit
        self.clients = set()

    def render(self, request):
        if request.method not in (b"GET", b"HEAD") or any(request.postpath):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain")
            return b"not found\n"
        if len(self.clients) >= self.max_clients:
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/plain")
            return b"too many live clients\n"
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        if request.method == b"HEAD":
            return b""
        # an event stream is quiet on the client's side: no idle timeout
        request.channel.setTimeout(None)
        subscriber = _Subscriber(self, request)
        self.clients.add(subscriber)
        request.notifyFinish().addBoth(lambda _: subscriber.stop())
        request.write(b"retry: 2000\n\n")
        subscriber.start()
        return server.NOT_DONE_YET


class LivePage(resource.Resource):
    """``GET /``: the page."""

    isLeaf = True

    def render(self, request):
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain")
            return b"not found\n"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return PAGE.encode("utf-8")


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>omnirtp: live calls</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #222; }
 header { background: #1d3557; color: #fff; padding: .6em 1em; display: flex;
          flex-wrap: wrap; gap: .3em 1.5em; align-items: baseline; }
 header h1 { font-size: 1.1em; margin: 0; }
 #status.down { color: #ffb4b4; }
 main { padding: .5em; }
 .call { background: #fff; border-radius: 6px; margin: .5em 0; padding: .5em .8em;
         box-shadow: 0 1px 2px rgba(0,0,0,.1); }
 .call h2 { font-size: 1em; margin: .2em 0; word-break: break-all; }
 .meta { color: #666; font-size: .9em; }
 .party { margin: .4em 0 .2em; }
 .media { border-left: 3px solid #457b9d; padding-left: .6em; margin: .3em 0; }
 .tags span { display: inline-block; background: #e8eef4; border-radius: 3px;
              padding: 0 .4em; margin: 0 .3em .2em 0; font-size: .85em; }
 table { border-collapse: collapse; width: 100%; font-size: .9em; }
 th, td { text-align: left; padding: .15em .4em; border-bottom: 1px solid #eee;
          white-space: nowrap; }
 td.num { text-align: right; font-variant-numeric: tabular-nums; }
 td.ends { font-size: .9em; }
 .scroll { overflow-x: auto; }
 canvas { width: 80px; height: 20px; vertical-align: middle; }
 #empty { color: #666; padding: 1em; }
</style>
</head>
<body>
<header><h1>omnirtp</h1><span id="count">-</span><span id="status">connecting</span></header>
<main><div id="empty">No calls.</div><div id="calls"></div></main>
<script>
"use strict";
const HISTORY = 60;
const previous = {};   // stream key -> {packets, time}
const history = {};    // stream key -> [packets per second]
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function duration(s) {
  const m = Math.floor(s / 60), h = Math.floor(m / 60);
  return (h ? h + "h " : "") + (m % 60) + "m " + (s % 60) + "s";
}
function draw(canvas, points) {
  const w = canvas.width = 80, h = canvas.height = 20, ctx = canvas.getContext("2d");
  const max = Math.max(1, ...points);
  ctx.strokeStyle = "#457b9d"; ctx.beginPath();
  points.forEach((v, i) => {
    const x = w - (points.length - 1 - i) * (w / (HISTORY - 1)), y = h - 1 - (v / max) * (h - 2);
    if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
  });
  ctx.stroke();
}
function render(view) {
  document.getElementById("count").textContent =
    view.count + (view.count === 1 ? " call" : " calls");
  document.getElementById("empty").style.display = view.count ? "none" : "";
  const root = document.getElementById("calls");
  root.replaceChildren();
  const seen = {};
  for (const call of view.calls) {
    const box = el("section", {"class": "call", "data-call-id": call["call-id"]});
    box.appendChild(el("h2", {}, call["call-id"]));
    box.appendChild(el("div", {"class": "meta"},
      (call.answered ? "answered" : "offered") + (call.deleting ? ", deleting" : "") +
      " \\u00b7 " + duration(call.duration)));
    for (const party of call.parties) {
      const p = el("div", {"class": "party"});
      p.appendChild(el("strong", {}, party.tag || "(no tag)"));
      if (party.peer) p.appendChild(el("span", {"class": "meta"}, " \\u2192 " + party.peer));
      for (const media of party.medias) {
        const m = el("div", {"class": "media"});
        const tags = el("div", {"class": "tags"});
        tags.appendChild(el("span", {"class": "type"}, media.type + " #" + media.index));
        tags.appendChild(el("span", {"class": "protocol"}, media.protocol || "-"));
        tags.appendChild(el("span", {"class": "codecs"}, media.codecs.join(" ") || "codecs not recorded"));
        tags.appendChild(el("span", {"class": "crypto"}, media.crypto));
        if (media.ice) tags.appendChild(el("span", {"class": "ice"}, "ICE"));
        if (media["rtcp-mux"]) tags.appendChild(el("span", {"class": "mux"}, "rtcp-mux"));
        m.appendChild(tags);
        const wrap = el("div", {"class": "scroll"}), table = el("table");
        const head = el("tr");
        for (const t of ["", "local \\u2194 remote", "packets", "loss", "jitter", "errors",
                         "bytes", "pkt/s", ""])
          head.appendChild(el("th", t === "loss" || t === "jitter" ?
            {"title": "as the other party reports it (RTCP)"} : {}, t));
        table.appendChild(head);
        for (const s of media.streams) {
          const key = call["call-id"] + "|" + party.tag + "|" + media.index + "|" + s.kind;
          seen[key] = true;
          const before = previous[key];
          let rate = 0;
          if (before && view.time > before.time)
            rate = Math.max(0, (s.packets - before.packets) / (view.time - before.time));
          previous[key] = {packets: s.packets, time: view.time};
          const points = history[key] = (history[key] || []).concat([rate]).slice(-HISTORY);
          const row = el("tr", {"class": "stream", "data-kind": s.kind});
          row.appendChild(el("td", {}, s.kind));
          const ends = el("td", {"class": "ends"});
          ends.appendChild(el("div", {"class": "local"}, s.local));
          ends.appendChild(el("div", {"class": "endpoint"}, s.endpoint || "-"));
          row.appendChild(ends);
          row.appendChild(el("td", {"class": "num packets"}, String(s.packets)));
          row.appendChild(el("td", {"class": "num loss"},
            s.loss === null ? "-" : s.loss.toFixed(1) + "% (" + s.lost + ")"));
          row.appendChild(el("td", {"class": "num jitter"},
            s.jitter === null ? "-" : s.jitter.toFixed(1) + " ms"));
          row.appendChild(el("td", {"class": "num errors"}, String(s.errors)));
          row.appendChild(el("td", {"class": "num bytes"}, String(s.bytes)));
          row.appendChild(el("td", {"class": "num rate"}, rate.toFixed(1)));
          const cell = el("td"), canvas = el("canvas", {"class": "graph"});
          cell.appendChild(canvas); row.appendChild(cell);
          draw(canvas, points);
          table.appendChild(row);
        }
        wrap.appendChild(table); m.appendChild(wrap); p.appendChild(m);
      }
      box.appendChild(p);
    }
    root.appendChild(box);
  }
  for (const key in previous) if (!seen[key]) { delete previous[key]; delete history[key]; }
  document.body.setAttribute("data-updates",
    String(Number(document.body.getAttribute("data-updates") || 0) + 1));
}
const status = document.getElementById("status");
const source = new EventSource("live");
source.addEventListener("snapshot", e => {
  status.textContent = "live"; status.className = "";
  render(JSON.parse(e.data));
});
source.onerror = () => { status.textContent = "reconnecting"; status.className = "down"; };
</script>
</body>
</html>
"""
