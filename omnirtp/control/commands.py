"""ng commands: ``Dispatcher(request, addr)`` -> reply dict (or Deferred).

One method per command.  Failures raise ``NGError`` with rtpengine's text;
``omnirtp.control.ng`` turns them into ``result: error`` replies.
"""

from twisted.internet import defer
from twisted.python.failure import Failure

from omnirtp import codecs, sync
from omnirtp.call import codecnames
from omnirtp.call.model import Media
from omnirtp.call.registry import REASON_TERMINATED
from omnirtp.control.flags import K_CALL_ID, Flags
from omnirtp.control.load import Rates
from omnirtp.errors import (
    E_FOREIGN_CALL, E_INVALID_LIMIT, E_NO_CALL_ID, E_NO_FROM_TAG, E_NO_SDP, E_NO_TO_TAG,
    E_NOT_FOUND, E_UNKNOWN_CALL, E_UNKNOWN_COMMAND, NGError)
from omnirtp.logging import Logger

try:
    from omnirtp.control import _fasttree
except ImportError:  # not built: _call_tree does all the work
    _fasttree = None
    _fast_tree = None
else:
    _fasttree.setup(Media)
    _fast_tree = _fasttree.call_tree

#: ``Flags.from_request`` (a class method's look-up through its class is
#: not specialised in 3.11: a module global is)
_from_request = Flags.from_request

LIST_DEFAULT_LIMIT = 32
#: the statistics reply's rates without a LoadLimits (the unit tests' registries)
_NO_RATES = dict.fromkeys(Rates.KEYS, 0)
COMMANDS = ("ping", "offer", "answer", "delete", "query", "list", "statistics",
            "start recording", "stop recording", "pause recording")
# rtpengine's names in controlstatistics (``<name>count``); ``pause
# recording`` (not a 10.5 command: 10.5 pauses with ``stop recording`` and
# ``pause=yes``) counts as the stop it is
STAT_NAMES = {"ping": "ping", "offer": "offer", "answer": "answer", "delete": "delete",
              "query": "query", "list": "list", "statistics": "stats",
              "start recording": "startrec", "stop recording": "stoprec",
              "pause recording": "stoprec"}
PROXY_KEYS = tuple(dict.fromkeys(n + "count" for n in STAT_NAMES.values())) + ("errorcount",)
#: a command's method name
_HANDLER_NAMES = {c: "cmd_" + c.replace(" ", "_") for c in COMMANDS}
#: the ``done`` counters a command's reply adds to, and a failed one's
_DONE_KEYS = {c: (name + "count",) for c, name in STAT_NAMES.items()}
_ERROR_KEY = ("errorcount",)
_FAILED_KEYS = {c: _ERROR_KEY + keys for c, keys in _DONE_KEYS.items()}
# the commands after which a call's snapshot is written to the state store
CHANGING = frozenset(("offer", "answer", "delete", "start recording", "stop recording",
                      "pause recording"))


def _yes(value):
    """A ``yes``/``on``/``true`` key value (bytes or str), as rtpengine reads ``pause``."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return isinstance(value, str) and value.strip().lower() in ("yes", "on", "true", "1")


def _call_id(request):
    for key in K_CALL_ID:
        if key in request:
            return request[key]
    return None


def _sdp_reply(sdp):
    """An offer's or answer's reply (no recording)."""
    return {"result": "ok", "sdp": sdp}


def _reply_after(_result, reply):
    """``reply``, once the step before it is done."""
    return reply


def _family(addr):
    return "IPv6" if ":" in addr else "IPv4"


def _endpoint(ep):
    if not ep:
        return {}
    return {"family": _family(ep[0]), "address": ep[0], "port": ep[1]}


#: a client's address -> its text in the "Received command" line (bounded:
#: addresses come from the network; a proxy sends from one or a few)
_SOURCES = {}
_SOURCES_MAX = 256


def _source(addr):
    """``addr`` as the "Received command" line writes it."""
    keep = addr.__class__ is tuple
    if keep:
        try:
            text = _SOURCES.get(addr)
        except TypeError:  # (an unhashable part: not kept)
            text = keep = None
        if text is not None:
            return text
    text = ("[%s]:%s" if ":" in str(addr[0]) else "%s:%s") % addr[:2] if addr else "?"
    if keep and len(_SOURCES) < _SOURCES_MAX:
        _SOURCES[addr] = text
    return text


def _call_tree(call, stats):
    """Dispatcher.call_tree in Python: what the C tree (``_fast_tree``,
    omnirtp.control._fasttree) gives when it takes the call, and everything
    it leaves (SDES in use, counters of other types, errors)."""
    rtp_totals = {"packets": 0, "bytes": 0, "errors": 0}
    rtcp_totals = {"packets": 0, "bytes": 0, "errors": 0}
    totals = {"RTP": rtp_totals, "RTCP": rtcp_totals}
    tags = {}
    untagged = 0
    monologues = call.monologues
    get = stats.get
    for ml in monologues:
        medias = []
        for m in ml.medias:
            streams = []
            mflags = []
            srtp_in = m.srtp_in
            mux = m.mux
            port = m.rtp_port
            codec = None
            if port is not None:  # (m.has_ports; its rtp_key and rtcp_key inline)
                suite = srtp_in["suite"] if srtp_in else None
                address = m.interface.address
                rtp_c = get((address, port))
                for kind, key, adv, t in (("RTP", (address, port), m.rtp_endpoint,
                                           rtp_totals),
                                          ("RTCP", (address, port + 1), m.rtcp_endpoint,
                                           rtcp_totals)):
                    c = get(key) or {"packets": 0, "bytes": 0, "errors": 0,
                                     "last_packet": call.last_signal,
                                     "endpoint": None, "confirmed": False}
                    c_get = c.get
                    sflags = [kind]
                    if mux and kind == "RTCP":
                        sflags.append("fallback RTCP")
                    endpoint = c_get("endpoint")
                    if endpoint:
                        sflags.append("filled")
                    if c_get("confirmed"):
                        sflags.append("confirmed")
                    packets, nbytes, errors = c["packets"], c["bytes"], c["errors"]
                    local = key[0]
                    if adv:  # (_endpoint(adv), inline)
                        a0 = adv[0]
                        advertised = {"family": "IPv6" if ":" in a0 else "IPv4",
                                      "address": a0, "port": adv[1]}
                    else:
                        advertised = {}
                    stream = {
                        "local port": key[1],
                        "local address": local,
                        "family": "IPv6" if ":" in local else "IPv4",  # (_family)
                        # where media comes from, or else the advertised one
                        "endpoint": _endpoint(endpoint) if endpoint else dict(advertised),
                        "advertised endpoint": advertised,
                        "last packet": int(c["last_packet"]),
                        "flags": sflags,
                        "stats": {"packets": packets, "bytes": nbytes, "errors": errors},
                    }
                    if suite:
                        stream["crypto suite"] = suite
                    # the SSRC of the last RTP datagram (RTCP: sender SSRC;
                    # with rtcp-mux, of the RTCP that came on the RTP port)
                    if kind == "RTP":
                        ssrc = c_get("ssrc")
                        pts = c_get("payload types")
                        if pts:
                            codec = codecnames.codec(m, pts)
                    elif mux:
                        ssrc = rtp_c.get("rtcp ssrc") if rtp_c else None
                    else:
                        ssrc = c_get("ssrc")
                    if ssrc is not None:
                        stream["SSRC"] = ssrc
                    # omnirtp's own keys, only on streams that have them:
                    # what the SRTP steps and the ICE agent dropped, and why
                    extra = c_get("transforms")
                    if extra:
                        stream["transforms"] = extra
                    extra = c_get("ice")
                    if extra:
                        stream["ICE"] = {"state": extra["state"],
                                         "counters": extra["counters"]}
                    # the latest RTCP SR/RR the party sent here (its
                    # report blocks: what it receives, loss and jitter)
                    extra = c_get("rtcp")
                    if extra:
                        stream["RTCP report"] = extra
                    streams.append(stream)
                    t["packets"] += packets
                    t["bytes"] += nbytes
                    t["errors"] += errors
                mflags.append("initialized")
            direction = m.direction or "sendrecv"
            if direction == "sendrecv":
                mflags.append("send")
                mflags.append("recv")
            elif direction == "sendonly":
                mflags.append("send")
            elif direction == "recvonly":
                mflags.append("recv")
            if mux:
                mflags.append("rtcp-mux")
            if srtp_in:
                mflags.append("SDES")
            media = {"index": m.index, "type": m.type, "protocol": m.protocol or ""}
            if codec is not None:
                media["codec"] = codec
            media["flags"] = mflags
            media["streams"] = streams
            medias.append(media)
        entry = {"tag": ml.tag or "", "created": int(ml.created)}
        if ml.via_branch:
            entry["via-branch"] = ml.via_branch
        if ml.aliases:
            entry["tag-aliases"] = list(ml.aliases)
        peer = ml.peer
        if peer is not None:
            # the key of rtpengine before 10.x; 10.5 has the two lists
            entry["in dialogue with"] = peer.tag or ""
            entry["subscriptions"] = [{"tag": peer.tag or "", "type": "offer/answer"}]
        else:
            entry["subscriptions"] = []
        entry["subscribers"] = [{"tag": other.tag or "", "type": "offer/answer"}
                                for other in monologues if other.peer is ml]
        entry["medias"] = medias
        if ml.tag:
            key = ml.tag
        else:
            key = "<untagged %d>" % untagged
            untagged += 1
        tags[key] = entry
    created = call.created
    return {
        "created": int(created),
        "created_us": int((created % 1) * 1000000),
        "last signal": int(call.last_signal),
        "tags": tags,
        "totals": totals,
    }


class Dispatcher:
    """Maps ``command`` to a method; counts what it served."""

    log = Logger()

    def __init__(self, registry, negotiator, delete_delay=30, access=None, recording=None):
        self.registry = registry
        #: the recording Spool (omnirtp.recording.spool), None: not configured
        self.recording = recording
        #: the daemon's control AccessList (statistics shows its refusals)
        self.access = access
        self.negotiator = negotiator
        self.engine = registry.engine
        self.delete_delay = delete_delay
        self.counts = dict.fromkeys(COMMANDS, 0)
        self.counts["errors"] = 0
        # requests answered, as rtpengine counts them: in total and per
        # proxy (the client's address), each once its reply is built
        self.done = dict.fromkeys(PROXY_KEYS, 0)
        self.proxies = {}
        #: the keyspace follower (omnirtp.state.keyspace), whose foreign
        #: calls are another instance's: None without redis
        self.follower = None

    def __call__(self, request, addr=None):
        """The reply dict of ``request`` as a Deferred (failing with NGError)."""
        return sync.as_deferred(self.now, request, addr)

    def now(self, request, addr=None, logged=False):
        """The reply dict of ``request``, or a Deferred when the engine's
        work is asynchronous (media workers); raises NGError & co.
        :class:`omnirtp.control.ng.NGProtocol` calls this.  With a state
        store, a request that may change a call leaves its snapshot there
        (failed or not: a failed offer may have changed or removed it)."""
        # one log line per command, as rtpengine (the call-id, when there
        # is one, becomes the line's [CALL-ID] prefix; omnirtp.logging)
        command = request.get("command")
        if not logged:
            call_id = request.get("call-id")
            self.log.info("Received command '{command}' from {source}",
                          command=command, source=_source(addr),
                          call_id=call_id if isinstance(call_id, str) else None)
        registry = self.registry
        if command in CHANGING and registry.foreign:
            foreign = self._foreign(request, command, addr)
            if foreign is not None:
                return foreign
        persist = registry.store is not None and command in CHANGING
        try:
            # (a dict look-up: commands come as str, anything else is unknown)
            name = _HANDLER_NAMES.get(command) if isinstance(command, str) else None
            handler = getattr(self, name, None) if name is not None else None
            if handler is None:
                raise NGError(E_UNKNOWN_COMMAND)
            self.counts[command] += 1
            result = handler(_from_request(request))
        except BaseException:
            self.counts["errors"] += 1
            self._count_done(Failure(), command, addr)
            if persist:
                self._persist(None, _call_id(request))
            raise
        if result.__class__ is not dict and sync.is_deferred(result):
            sync.on(result, self._count_later, command, addr)
            if persist:
                sync.on(result, self._persist, _call_id(request))
            return result
        result = self._count_done(result, command, addr)
        if persist:
            self._persist(result, _call_id(request))
        return result

    def _foreign(self, request, command, addr):
        """A request that would change another instance's call (a foreign
        one, omnirtp.state.keyspace): with active-switchover, a Deferred
        that takes the call over first and then handles the request;
        without, refused (NGError).  None: the call is not foreign."""
        call_id = _call_id(request)
        if isinstance(call_id, bytes):
            call_id = call_id.decode("utf-8", "surrogateescape")
        if call_id not in self.registry.foreign:
            return None
        follower = self.follower
        if follower is None or not follower.switchover:
            return self._refuse_foreign(command, addr)

        def taken(_count):
            if call_id in self.registry.foreign:  # its ports could not be bound
                return self._refuse_foreign(command, addr)
            return self.now(request, addr, logged=True)
        return follower.claim(call_id).addCallback(taken)

    def _refuse_foreign(self, command, addr):
        self.counts["errors"] += 1
        self._count_done(Failure(NGError(E_FOREIGN_CALL)), command, addr)
        raise NGError(E_FOREIGN_CALL)

    def _persist(self, result, call_id):
        # after the request, failed or not: a failed offer may have changed
        # (or removed) the call as much as a good one
        if isinstance(call_id, bytes):
            call_id = call_id.decode("utf-8", "surrogateescape")
        if isinstance(call_id, str):
            self.registry.persist(call_id)
        return result

    def _count_done(self, result, command, addr):
        if isinstance(result, Failure):
            keys = _FAILED_KEYS.get(command, _ERROR_KEY)
        else:
            keys = _DONE_KEYS.get(command, ())
        proxy = None
        if addr:
            proxy = self.proxies.get(addr[0])
            if proxy is None:
                proxy = self.proxies[addr[0]] = dict.fromkeys(PROXY_KEYS, 0)
        for key in keys:
            self.done[key] += 1
            if proxy is not None:
                proxy[key] += 1
        return result

    def _count_later(self, result, command, addr):
        # a pending command's end: an error counted, then as _count_done
        if isinstance(result, Failure):
            self.counts["errors"] += 1
        return self._count_done(result, command, addr)

    # -- commands ----------------------------------------------------------

    def cmd_ping(self, flags):
        return {"result": "pong"}

    def _require(self, flags, to_tag=False):
        if flags.sdp is None:
            raise NGError(E_NO_SDP)
        if not flags.call_id:
            raise NGError(E_NO_CALL_ID)
        if not flags.from_tag:
            raise NGError(E_NO_FROM_TAG)
        if to_tag and not flags.to_tag:
            raise NGError(E_NO_TO_TAG)

    def cmd_offer(self, flags):
        self._require(flags)
        if self.recording is not None:
            if flags.metadata is not None or flags.record_call is not None:
                return self._sdp_recorded(self.negotiator.offer, flags, "offer")
            return sync.then(self.negotiator.offer(flags), self._sdp_reply_recorded,
                             flags, "offer")
        # (else _record_sdp has nothing to do: the reply, now or when the
        # negotiator's Deferred fires, with no steps driver)
        return sync.then(self.negotiator.offer(flags), _sdp_reply)

    def cmd_answer(self, flags):
        self._require(flags, to_tag=True)
        if self.recording is not None:
            if flags.metadata is not None or flags.record_call is not None:
                return self._sdp_recorded(self.negotiator.answer, flags, "answer")
            return sync.then(self.negotiator.answer(flags), self._sdp_reply_recorded,
                             flags, "answer")
        return sync.then(self.negotiator.answer(flags), _sdp_reply)

    def _sdp_reply_recorded(self, sdp, flags, mode):
        """:meth:`_sdp_recorded`'s reply for a request without ``metadata``
        or ``record call`` (the usual one): when nothing else of its call is
        in progress and the call is not being recorded, :meth:`_record_sdp`
        would do nothing, and is not run."""
        reply = {"result": "ok", "sdp": sdp}
        registry = self.registry
        if not registry.is_locked(flags.call_id):
            call = registry.get(flags.call_id)
            if call is None or getattr(call, "recording", None) is None:
                return reply
        return sync.then(
            registry.run_locked_now(flags.call_id, self._record_sdp, flags, mode, reply),
            _reply_after, reply)

    @sync.steps
    def _sdp_recorded(self, negotiate, flags, mode):
        """An offer's or answer's reply with recording configured."""
        sdp = yield negotiate(flags)
        reply = {"result": "ok", "sdp": sdp}
        yield self.registry.run_locked_now(flags.call_id, self._record_sdp, flags, mode, reply)
        return reply

    @sync.steps
    def cmd_delete(self, flags):
        if not flags.call_id:
            raise NGError(E_NO_CALL_ID)
        registry = self.registry
        call = registry.get(flags.call_id)
        targets = self._delete_targets(call, flags) if call is not None else None
        if targets is None:
            if flags.has("fatal"):
                raise NGError(E_NOT_FOUND)
            return {"result": "ok", "warning": E_NOT_FOUND}
        delay = flags.delete_delay
        if delay is None or delay < 0:
            delay = self.delete_delay
        now = targets == "all" and delay <= 0
        # (no flag word at all, the usual request: no look-up)
        fast = bool(flags.flags) and flags.has("fast")
        reply = {"result": "ok"}
        if now:
            # the counters are read before the ports go, in one engine call
            # where the engine has one (a media worker: one round trip)
            stats = (yield registry.destroy(call, REASON_TERMINATED, stats=True))
            stats = stats.get(call.call_id, {})
            if not fast:
                reply.update(self.call_tree(call, stats))
            registry.account(call, stats)
            registry.unlink(call)
            return reply
        if not fast:
            engine = self.engine
            now = getattr(engine, "stats_now", None)  # (an engine that answers at once)
            stats = (now(call.call_id) if now is not None
                     else (yield engine.stats(call.call_id))).get(call.call_id, {})
            reply.update(self.call_tree(call, stats))
        if targets == "all":
            registry.schedule_deletion(call, delay)
        elif delay > 0:
            registry.schedule_deletion(call, delay, targets)
        else:
            yield registry.remove_monologues(call, targets)
        return reply

    def _delete_targets(self, call, flags):
        """"all", a list of monologues to remove, or None (no match).

        As rtpengine 10.5 picks them: without a from-tag the whole call;
        else the via-branch's monologue when no to-tag is given, the
        to-tag's when one is (10.5 needs no ``to-tag`` flag for that), else
        the from-tag's.  The monologues associated with it that keep no
        other association go with it (now, or after the delete delay); when
        no association is left at all, the whole call goes."""
        if not flags.from_tag:
            return "all"
        ml = None
        if flags.via_branch and not flags.to_tag:
            ml = call.find_branch(flags.via_branch)
        if ml is None:
            ml = call.find(flags.to_tag or flags.from_tag)
        if ml is None and flags.via_branch:
            ml = call.find_branch(flags.via_branch)
        if ml is None:
            if flags.to_tag:
                other = call.find(flags.from_tag)
                if other is not None and other.peer is not None and not other.peer.tagged:
                    return "all"
            return None
        monologues = call.monologues
        if len(monologues) == 2:
            # the usual call, two parties: with the other associated both
            # go, else the other stays alone; either way the whole call
            # (what the sets below find; only a monologue that is its own
            # peer would stay)
            other = monologues[1] if monologues[0] is ml else monologues[0]
            if other is not ml and (ml.peer is other or other.peer is ml
                                    or other.peer is not other):
                return "all"

        def associates(x):
            return {m for m in call.monologues if m is not x and (m.peer is x or x.peer is m)}

        gone = {ml}
        for other in associates(ml):
            if not associates(other) - {ml}:
                gone.add(other)
        remaining = [m for m in call.monologues if m not in gone]
        if not any(m.peer in remaining for m in remaining):
            return "all"
        return list(gone)

    @sync.steps
    def cmd_query(self, flags):
        if not flags.call_id:
            raise NGError(E_NO_CALL_ID)
        # a foreign call is answered too (read only, as rtpengine)
        call = self.registry.get(flags.call_id) or self.registry.foreign.get(flags.call_id)
        if call is None:
            raise NGError(E_UNKNOWN_CALL)
        stats = yield self.engine.stats(call.call_id)
        reply = {"result": "ok"}
        reply.update(self.call_tree(call, stats.get(call.call_id, {})))
        return reply

    # -- recording (omnirtp.recording; ng-spec 2.9 and 7) -------------------

    @sync.steps
    def _record_sdp(self, flags, mode, reply):
        """After an offer/answer: ``record call`` starts (yes) or stops (no)
        the call's recording; a recorded call notes the SDP sent out in its
        metadata and the reply names the pcap (``recordings``)."""
        call = self.registry.get(flags.call_id)
        if call is None or self.recording is None:
            return
        if flags.metadata is not None:
            call.metadata = flags.metadata
        if flags.record_call is True:
            yield self._start_recording(call)
        elif flags.record_call is False:
            yield self._stop_recording(call, flags)
        rec = getattr(call, "recording", None)
        if rec is None:
            return
        # sockets a re-INVITE added are recorded too (the same value
        # leaves the others as they are)
        yield self.engine.configure(call.call_id, self.recording.entries(call, rec.params()))
        stats = yield self.engine.stats(call.call_id)
        from omnirtp.recording.spool import packets_recorded
        self.recording.sdp(call, mode, reply["sdp"],
                           packets_recorded(stats.get(call.call_id, {})))
        reply["recordings"] = [rec.pcap_path]

    def _start_recording(self, call):
        rec = self.recording.start(call)
        if rec is None:
            return defer.succeed(None)
        entries = self.recording.entries(call, rec.params())
        return self.engine.configure(call.call_id, entries) if entries else defer.succeed(None)

    def _stop_recording(self, call, flags, pause=False):
        if pause or _yes(flags.raw.get("pause")) or "pause" in flags.unknown:
            rec = self.recording.pause(call)
            if rec is None:
                return defer.succeed(None)
            record = rec.params()
        else:
            if self.recording.finish(call, discard=flags.has("discard-recording")) is None:
                return defer.succeed(None)
            record = None
        entries = self.recording.entries(call, record)
        return self.engine.configure(call.call_id, entries) if entries else defer.succeed(None)

    def _recording_call(self, flags):
        if not flags.call_id:
            raise NGError(E_NO_CALL_ID)
        call = self.registry.get(flags.call_id)
        if call is None:
            raise NGError(E_UNKNOWN_CALL)
        if flags.metadata is not None:
            call.metadata = flags.metadata
        return call

    @defer.inlineCallbacks
    def cmd_start_recording(self, flags):
        call = self._recording_call(flags)
        if self.recording is None:
            self.log.error("call {call_id}: call recording requested, but no recording-dir "
                           "is configured", call_id=call.call_id)
        else:
            yield self.registry.run_locked(call.call_id, self._start_recording, call)
        return {"result": "ok"}

    @defer.inlineCallbacks
    def cmd_stop_recording(self, flags):
        call = self._recording_call(flags)
        if self.recording is not None:
            yield self.registry.run_locked(call.call_id, self._stop_recording, call, flags)
        return {"result": "ok"}

    @defer.inlineCallbacks
    def cmd_pause_recording(self, flags):
        """omnirtp's spelling of ``stop recording`` with ``pause=yes``."""
        call = self._recording_call(flags)
        if self.recording is not None:
            yield self.registry.run_locked(call.call_id, self._stop_recording, call, flags,
                                           True)
        return {"result": "ok"}

    def cmd_list(self, flags):
        limit = LIST_DEFAULT_LIMIT if flags.limit is None else flags.limit
        if limit < 0:
            raise NGError(E_INVALID_LIMIT)
        return {"calls": list(self.registry.calls)[:limit], "result": "ok"}

    @sync.steps
    def cmd_statistics(self, flags):
        totals = yield self.engine.totals()
        return {"statistics": self.statistics(totals), "result": "ok"}

    # -- reply builders ----------------------------------------------------

    def call_tree(self, call, stats):
        """query/delete statistics of one call (ng-spec §2.6)."""
        if _fast_tree is not None:
            tree = _fast_tree(call, stats)
            if tree is not None:
                return tree
        return _call_tree(call, stats)

    def statistics(self, engine_totals):
        r = self.registry
        closed = r.closed
        own = len(r.calls)
        foreign = len(getattr(r, "foreign", ()))
        ended = sum(closed.values())
        # every call's medias with ports: one flat pass, no list per
        # monologue (1.8x faster; 50 ms -> about 27 ms at 100k calls)
        every = [m for call in r.calls.values() for ml in call.monologues for m in ml.medias]
        medias = sum([m.rtp_port is not None for m in every])
        # as rtpengine 10.5 counts them: each party's medium whose media
        # towards the other party is transcoded
        transcoded = sum([m.transcoding for m in every])
        packets = engine_totals.get("packets", 0)
        errors = engine_totals.get("errors", 0)
        relayed_bytes = engine_totals.get("bytes", 0)
        # of those, forwarded by the kernel (table = N); kernel forwarding
        # has no errors of its own (what it cannot forward goes to userspace)
        kernel_packets = engine_totals.get("kernel_packets", 0)
        kernel_bytes = engine_totals.get("kernel_bytes", 0)
        media_kernel = engine_totals.get("media_kernel", 0)
        media_mixed = engine_totals.get("media_mixed", 0)
        control = {
            "offercount": self.counts["offer"],
            "answercount": self.counts["answer"],
            "deletecount": self.counts["delete"],
            "querycount": self.counts["query"],
            "listcount": self.counts["list"],
            "pingcount": self.counts["ping"],
            "statisticscount": self.counts["statistics"],
            "errorcount": self.counts["errors"],
            "proxies": [dict(proxy=host, **counts)
                        for host, counts in sorted(self.proxies.items())],
        }
        for key in PROXY_KEYS:
            if key != "errorcount":
                control["total" + key] = self.done[key]
        limits = r.limits
        if limits is not None:
            # per second: the last second's, from the rate sampler (which
            # this request keeps running: omnirtp.control.load)
            rates = limits.statistics_rates(engine_totals, r.clock.seconds())
        else:
            rates = _NO_RATES
        reply = {
            "currentstatistics": {
                "sessionsown": own, "sessionsforeign": foreign,
                "sessionstotal": own + foreign,
                "transcodedmedia": transcoded,
                "packetrate_user": rates["packetrate_user"],
                "byterate_user": rates["byterate_user"],
                "errorrate_user": rates["errorrate_user"],
                "packetrate_kernel": rates["packetrate_kernel"],
                "byterate_kernel": rates["byterate_kernel"],
                "errorrate_kernel": rates["errorrate_kernel"],
                "packetrate": rates["packetrate"], "byterate": rates["byterate"],
                "errorrate": rates["errorrate"],
                "media_userspace": max(0, medias - media_kernel - media_mixed),
                "media_kernel": media_kernel,
                "media_mixed": media_mixed,
            },
            "totalstatistics": {
                # rtpengine 10.5 sends uptime as a decimal string
                "uptime": str(int(r.clock.seconds() - r.started)),
                # sessions that have ended, as 10.5 counts them
                "managedsessions": ended,
                "rejectedsessions": r.rejected,
                "timeoutsessions": closed["timeout"],
                "silenttimeoutsessions": closed["silent_timeout"],
                "finaltimeoutsessions": closed["final_timeout"],
                "offertimeoutsessions": closed["offer_timeout"],
                "regularterminatedsessions": closed["terminated"],
                "forcedterminatedsessions": closed["force_terminated"],
                "lostsessions": closed["worker_lost"],
                "relayedpackets_user": packets - kernel_packets,
                "relayedpacketerrors_user": errors,
                "relayedbytes_user": relayed_bytes - kernel_bytes,
                "relayedpackets_kernel": kernel_packets,
                "relayedpacketerrors_kernel": 0,
                "relayedbytes_kernel": kernel_bytes,
                "relayedpackets": packets,
                "relayedpacketerrors": errors,
                "relayedbytes": relayed_bytes,
                "junkpackets": engine_totals.get("junk", 0),
                "avgcallduration": "%.6f" % (r.call_durations / ended if ended else 0.0),
                "totalcallsduration": "%.6f" % r.call_durations,
            },
            "controlstatistics": control,
            "ports": {"used": engine_totals.get("ports_used", 0),
                      "free": engine_totals.get("ports_free", 0)},
            # omnirtp's own key (10.5 has none such): the codecs this
            # process can transcode, and why the others are unusable
            "codecs": codecs.statistics(),
        }
        if self.recording is not None and self.recording.directory is not None:
            # omnirtp's own counter: call recordings that failed (a file that
            # could not be opened or written: the call went on unrecorded)
            reply["totalstatistics"]["recordingerrors"] = (
                self.recording.errors + engine_totals.get("recording_errors", 0))
        if self.access is not None:
            # omnirtp's own counter: ng requests refused by control-allow
            reply["controlstatistics"]["deniedcount"] = self.access.denied.get("ng", 0)
        return reply
