"""CallRegistry: the calls, max-sessions, deletion and timeouts.

Time comes from an injected clock (``IReactorTime``); media activity comes
from the engine's ``stats()``, read once per sweep (once a second), never
per packet.
"""

from twisted.internet import defer, task

from omnirtp import sync
from omnirtp.call.model import Call
from omnirtp.control.load import refusal
from omnirtp.errors import LoadLimit
from omnirtp.logging import Logger

# reasons a call ends, as rtpengine counts them
REASON_TIMEOUT = "timeout"
REASON_SILENT = "silent_timeout"
REASON_FINAL = "final_timeout"
REASON_OFFER = "offer_timeout"
REASON_TERMINATED = "terminated"
REASON_FORCED = "force_terminated"
REASON_LOST = "worker_lost"
REASONS = (REASON_TIMEOUT, REASON_SILENT, REASON_FINAL, REASON_OFFER,
           REASON_TERMINATED, REASON_FORCED, REASON_LOST)


#: CallRegistry._locks's entry for a call whose signalling holds its lock
#: with no other waiting for it (run_locked_now): no DeferredLock made
_HELD = "held"


class Timeouts:
    """The timeout options, in seconds (0 disables final-timeout)."""

    def __init__(self, timeout=60, silent_timeout=3600, offer_timeout=3600,
                 final_timeout=0, delete_delay=30):
        self.timeout = timeout if timeout > 0 else 60
        self.silent_timeout = silent_timeout
        self.offer_timeout = offer_timeout
        self.final_timeout = final_timeout
        self.delete_delay = delete_delay


def newest_packet(sockets):
    """The newest ``last_packet`` of a call's socket counters, or None."""
    newest = None
    for counters in sockets.values():
        if newest is None or counters["last_packet"] > newest:
            newest = counters["last_packet"]
    return newest


class CallRegistry:
    """All calls of this instance, keyed by call-id."""

    log = Logger()

    def __init__(self, engine, clock, timeouts=None, max_sessions=-1):
        self.engine = engine
        self.clock = clock
        self.timeouts = timeouts or Timeouts()
        self.max_sessions = max_sessions
        self.calls = {}
        #: other instances' calls followed through Redis (``subscribe-keyspace``,
        #: ``omnirtp.state.keyspace``): call-id -> Call; not ours until taken over
        self.foreign = {}
        self.started = clock.seconds()
        self.closed = dict.fromkeys(REASONS, 0)
        self.managed = 0
        self.rejected = 0
        self.call_durations = 0.0
        self.relayed = {"packets": 0, "bytes": 0, "errors": 0}
        self._locks = {}
        self._sweeper = None
        #: calls that had a deletion mark set (the call's or a monologue's):
        #: the sweep looks at these for marks, not at every call
        self._marked = set()
        #: callables called with each call that ends (destroyed or lost),
        #: before its ports are released (call recording closes its files)
        self.on_end = []
        # the class's defaults as the instance's own: an attribute the
        # instance holds is a specialised read in 3.11, a class attribute
        # read through the instance is not (store: three reads a call)
        self.store = None
        self.limits = None
        if hasattr(engine, "on_calls_lost"):
            engine.on_calls_lost = self.calls_lost

    # -- lookup and life cycle ------------------------------------------

    def get(self, call_id):
        return self.calls.get(call_id)

    #: ``max-load``, ``max-cpu``, ``max-bandwidth`` and their samplers
    #: (:class:`omnirtp.control.load.LoadLimits`), or None: no such limits
    limits = None

    def create(self, call_id):
        """A new call, unless max-sessions or a load limit forbids it
        (raises LoadLimit; only max-sessions counts as rejected, as in
        rtpengine 10.5)."""
        if 0 <= self.max_sessions <= len(self.calls):
            self.rejected += 1
            raise LoadLimit()
        limits = self.limits
        if limits is not None and (limits.load_limit or limits.cpu_limit or limits.bw_limit):
            refusal(limits, self.log)
        call = Call(call_id, self.clock.seconds())
        self.calls[call_id] = call
        self.managed += 1
        return call

    def adopt(self, call):
        """Take ``call`` (rebuilt from the state store, its ports bound) as a
        managed session, as :meth:`create` would have made it."""
        self.calls[call.call_id] = call
        self.managed += 1
        if call.deletion_at is not None or _monologue_marked(call):
            self._marked.add(call)

    def forget(self, call):
        """Undo ``create`` for a call whose first request failed: it was
        never a managed session (its ports are the caller's to release)."""
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
            self.managed -= 1
            if self.store is not None:
                self.store.delete(call.call_id)

    # -- state store -------------------------------------------------------

    #: an :class:`omnirtp.interfaces.IStateStore` (``redis``/``redis-write``)
    #: that keeps every call's snapshot, or None (nothing kept: the default)
    store = None
    #: calls whose snapshot could not be written (a bug: logged once each)
    persist_errors = 0

    def snapshots(self):
        """(call_id, blob) of every call that can be encoded: what a state
        store writes again after an outage."""
        from omnirtp.state import snapshot
        for call_id, call in list(self.calls.items()):
            try:
                yield call_id, snapshot.encode(call)
            except Exception:
                self.persist_errors += 1

    def persist(self, call_id):
        """Write the call's snapshot to the store (after a signalling
        request changed it), or remove it if the call is gone.  Never
        raises: a call that cannot be kept goes on in memory."""
        store = self.store
        if store is None:
            return
        call = self.calls.get(call_id)
        if call is None:
            if call_id not in self.foreign:  # another instance's (or held in standby)
                store.delete(call_id)
            return
        from omnirtp.state import snapshot
        try:
            blob = snapshot.encode(call)
        except Exception:
            self.persist_errors += 1
            self.log.failure("call {call_id} cannot be kept in the state store",
                             call_id=call_id)
            return
        store.save(call_id, blob)

    def lock(self, call_id):
        """A DeferredLock serialising signalling for one call-id."""
        lock = self._locks.get(call_id)
        if lock is None or lock is _HELD:
            held = lock is _HELD
            lock = self._locks[call_id] = defer.DeferredLock()
            if held:
                lock.acquire()  # for the request run_locked_now left pending
        return lock

    def is_locked(self, call_id):
        """True while signalling of ``call_id`` holds its lock (a media
        worker's answer pending): :meth:`run_locked_now` would wait."""
        return call_id in self._locks

    def run_locked_now(self, call_id, fn, *args):
        """``fn(*args)`` serialised with the other signalling of ``call_id``.

        When nothing else of that call is in progress, ``fn`` runs at once:
        its plain result is returned and its exception raised, with no lock
        made.  If it returns a Deferred (a media worker's answer is
        pending), the call's lock is held until that fires, so later
        signalling of the call waits for it.  While the lock is held, this
        waits in turn and returns a Deferred (:meth:`run_locked`).
        """
        locks = self._locks
        if call_id in locks:
            return self.run_locked(call_id, fn, *args)
        result = fn(*args)
        if not sync.is_deferred(result) or result.called:
            return result
        # held, with no DeferredLock made until other signalling of the
        # call has to wait for it (run_locked makes one, taken)
        locks[call_id] = _HELD
        return sync.on(result, self._release_held, call_id)

    def _release_held(self, value, call_id):
        lock = self._locks.get(call_id)
        if lock is _HELD:
            del self._locks[call_id]
            return value
        if lock is None:  # (forgotten meanwhile)
            return value
        lock.release()
        if not lock.locked and not lock.waiting:
            self._locks.pop(call_id, None)
        return value

    def run_locked(self, call_id, fn, *args):
        """As :meth:`run_locked_now`, always through the call's lock, and
        always a Deferred."""
        lock = self.lock(call_id)
        d = lock.run(fn, *args)

        def cleanup(result):
            if not lock.locked and not lock.waiting:
                self._locks.pop(call_id, None)
            return result

        return d.addBoth(cleanup)

    def destroy(self, call, reason, stats=False):
        """Remove ``call`` now, give its ports back, count why it ended.

        A Deferred that fires when the ports are released.  With
        ``stats``: the call's last counters (``engine.stats``, read before
        the ports go), a Deferred of them: one engine call with
        an engine that has ``stats_release`` (a worker pool: one round
        trip), else the stats request and the release one after the other;
        with an engine that answers at once (``stats_now``, the embedded
        engine) the counters themselves (for a ``sync.steps`` caller)."""
        if self.calls.get(call.call_id) is not call:
            return defer.succeed({} if stats else None)
        del self.calls[call.call_id]
        if self.store is not None:
            self.store.delete(call.call_id)
        self.closed[reason] = self.closed.get(reason, 0) + 1
        self.call_durations += self.clock.seconds() - call.created
        self.log.info("call {call_id} ended: {reason}", call_id=call.call_id, reason=reason)
        self._ended(call)
        if stats:
            engine = self.engine
            stats_release = getattr(engine, "stats_release", None)
            if stats_release is not None:
                return stats_release(call.call_id)
            stats_now = getattr(engine, "stats_now", None)
            if stats_now is not None:
                counters = stats_now(call.call_id)
                if engine.recording(call.call_id):
                    self._release_now(call, engine.release_now)
                else:
                    # the ports go once the delete's reply has been sent,
                    # still before the next datagram is read
                    # (sync.after_reply); a recording is finished first
                    sync.after_reply(self._release_now, call, engine.release_now)
                return counters
            stats_d = engine.stats(call.call_id)
            released = self._release(call)
            if released.called:  # the embedded engine's have fired
                return stats_d
            return self._stats_when_released(stats_d, released)
        return self._release(call)

    def unlink(self, call):
        """After the last use of a call :meth:`destroy` removed: break its
        monologues' ``peer`` links, the one reference cycle of a call, so
        that it is freed at once (refcounting), not by the garbage
        collector with everything it holds (medias, SDP sections).  Not
        while other signalling of the call is still in progress (a media
        worker's answer pending: its lock is held), which may read them."""
        if call.call_id in self._locks or self.calls.get(call.call_id) is call:
            return
        for ml in call.monologues:
            ml.peer = None

    @sync.steps
    def _stats_when_released(self, stats, released):
        yield released
        return (yield stats)

    def _release_now(self, call, release_now):
        """:meth:`_release` with an engine's ``release_now``: a failure
        is logged as :meth:`_release` logs it."""
        try:
            release_now(call.call_id)
        except Exception:
            self.log.failure("releasing {call_id}", call_id=call.call_id)

    def _release(self, call):
        d = self.engine.release(call.call_id)
        if not sync.fired_with_value(d):  # (else there is no failure to log)
            d.addErrback(lambda f: self.log.failure("releasing {call_id}", f,
                                                    call_id=call.call_id))
        return d

    def schedule_deletion(self, call, delay, monologues=None):
        """Delete ``call``, or only its ``monologues``, after ``delay``
        seconds; they relay until then (offer or answer cancels it)."""
        at = self.clock.seconds() + delay
        self._marked.add(call)
        if monologues is None:
            call.deletion_at = at
        for ml in monologues or ():
            ml.deletion_at = at

    def remove_monologues(self, call, gone):
        """Remove the monologues ``gone`` from ``call`` now and release their
        ports; whoever talked to one of them talks to another monologue
        still associated with it.  The whole call goes (terminated) when
        no association is left.  Returns a Deferred."""
        remaining = [m for m in call.monologues if m not in gone]
        if not any(m.peer in remaining for m in remaining):
            return self.destroy(call, REASON_TERMINATED)
        for m in remaining:
            if m.peer in gone:
                m.peer = next((r for r in remaining if r.peer is m), None)
        keys = [m.rtp_key for ml in gone for m in ml.port_medias()]
        call.monologues = remaining
        return self.engine.release(call.call_id, keys)

    def calls_lost(self, call_ids, reason="worker died"):
        """The media engine lost these calls (a worker died): drop them."""
        for call_id in call_ids:
            call = self.calls.pop(call_id, None)
            if call is not None:
                self._ended(call)
                self.closed[REASON_LOST] += 1
                self.log.warn("call {call_id} dropped: {reason}", call_id=call_id, reason=reason)

    def _ended(self, call):
        for hook in self.on_end:
            try:
                hook(call)
            except Exception:
                self.log.failure("call {call_id}: end hook {hook!r}", call_id=call.call_id,
                                 hook=hook)

    # -- timeouts --------------------------------------------------------

    def start(self, interval=1.0):
        self._sweeper = task.LoopingCall(self.sweep)
        self._sweeper.clock = self.clock
        self._sweeper.start(interval, now=False).addErrback(
            lambda f: self.log.failure("timeout sweeper stopped", f))

    def stop(self):
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None

    #: a sweep with more calls to look at than this asks the engine for all
    #: calls' counters in one request (as it was read last), fewer are asked
    #: for one by one (read now)
    BULK = 64

    @defer.inlineCallbacks
    def sweep(self):
        """One pass of deletion marks and timeouts.

        Only the calls that may be due are looked at with the engine's
        counters: a deletion mark or ``final-timeout`` reached, or no
        signalling and no media (as far as the last look saw) for as long
        as the shortest timeout that applies (``Call.last_media`` can only
        lag the engine, so no call that is due is missed); with a state
        store, also the calls with SRTP (DTLS keys to keep, SRTP indexes to
        follow: ``keep_dtls``, ``keep_srtp``).  The rest
        cost one test each: 100k calls with media or within their
        timeouts do not make the engine build 400k counter dicts a
        second."""
        calls = self.calls
        if not calls:
            return
        now = self.clock.seconds()
        t = self.timeouts
        # quiet (no signalling, no media seen) since these times at least
        quiet = now - min(t.timeout, t.silent_timeout)
        unanswered = now - t.offer_timeout
        look = [call for call in calls.values()
                if call.last_signal <= (quiet if call.answered else unanswered)
                >= call.last_media]
        more = []
        if t.final_timeout > 0:
            final = now - t.final_timeout
            more.extend(call for call in calls.values() if call.created <= final)
        if self.store is not None:
            more.extend(_srtp_calls(calls.values()))
        for call in list(self._marked):
            if calls.get(call.call_id) is not call or not (
                    call.deletion_at is not None or _monologue_marked(call)):
                self._marked.discard(call)  # gone, or signalling cancelled its marks
            elif ((call.deletion_at is not None and now >= call.deletion_at)
                  or _monologue_due(call, now)):
                more.append(call)
        if more:
            seen = set(look)
            for call in more:
                if call not in seen:
                    seen.add(call)
                    look.append(call)
        if not look:
            return
        bulk = len(look) > self.BULK
        newest = None
        stats = {}
        if bulk:
            # without a state store (which keeps the DTLS keys and SRTP
            # indexes of the counters) only each call's newest packet
            # matters until a call ends: the counters of all sockets are
            # read only for what ends
            last_packets = (getattr(self.engine, "last_packets", None)
                            if self.store is None else None)
            if last_packets is not None:
                newest = yield last_packets()
            else:
                stats = yield self.engine.stats(None)
        for call in look:
            if calls.get(call.call_id) is not call:
                continue  # gone while the sweep waited
            fresh = not bulk
            if fresh:
                own = (yield self.engine.stats(call.call_id)).get(call.call_id)
                if calls.get(call.call_id) is not call:
                    continue
                stats[call.call_id] = own if own is not None else {}
            if newest is None:
                counters = stats.get(call.call_id, {})
                last = newest_packet(counters)
            else:
                counters = {}
                last = newest.get(call.call_id)
            _seen(call, last)
            if self.store is not None:
                self.keep_dtls(call, counters)
                self.keep_srtp(call, counters)
            reason = None
            if call.deletion_at is not None and now >= call.deletion_at:
                reason = REASON_TERMINATED
            elif t.final_timeout > 0 and now - call.created >= t.final_timeout:
                reason = REASON_FINAL
            else:
                reason = self._idle_reason(call, last, now)
                if reason is not None and not fresh:
                    # idle as far as all calls' counters tell: the call's own,
                    # read now (the kernel's, table = N, are read on demand)
                    own = (yield self.engine.stats(call.call_id)).get(call.call_id)
                    if calls.get(call.call_id) is not call:
                        continue
                    if own is not None:
                        stats[call.call_id] = own
                        last = newest_packet(own)
                        _seen(call, last)
                        reason = self._idle_reason(call, last, now)
            due = [ml for ml in call.monologues
                   if ml.deletion_at is not None and now >= ml.deletion_at]
            if newest is not None and (reason is not None or due) \
                    and call.call_id not in stats:
                # the counters of a call that ends, for the totals (account)
                own = (yield self.engine.stats(call.call_id)).get(call.call_id)
                if self.calls.get(call.call_id) is not call:
                    continue
                if own is not None:
                    stats[call.call_id] = own
            if reason is None and due:
                yield self.remove_monologues(call, due)
                if calls.get(call.call_id) is not call:
                    self.account(call, stats.get(call.call_id, {}))
                continue
            if reason is not None:
                self.account(call, stats.get(call.call_id, {}))
                yield self.destroy(call, reason)

    def keep_dtls(self, call, stats):
        """Keep the SRTP keys the engine's DTLS handshakes exported in the
        call (``Media.dtls_srtp``) and write the call to the store, once per
        association: a restarted daemon or a standby relays the leg on with
        them (``omnirtp.state.restore``)."""
        changed = False
        for _ml, m in call.all_medias():
            if m.dtls_role is None or not m.has_ports:
                continue
            if m.dtls_keys_current():
                continue
            rtp = (stats.get(m.rtp_key) or {}).get("dtls_srtp")
            rtcp = None if m.mux else (stats.get(m.rtcp_key) or {}).get("dtls_srtp")
            if rtp is None or rtp.get("role") != m.dtls_role or (not m.mux and rtcp is None):
                continue
            m.dtls_srtp = {"role": m.dtls_role, "fingerprint": m.dtls_fingerprint,
                           "rtp": {"in": rtp["in"], "out": rtp["out"]},
                           "rtcp": None if rtcp is None else {"in": rtcp["in"],
                                                              "out": rtcp["out"]}}
            changed = True
        if changed:
            self.persist(call.call_id)

    def keep_srtp(self, call, stats):
        """Keep where the call's SRTP contexts are (the engine's
        ``srtp_index``, ``Media.srtp_index``) and write the call to the
        store when that moved in a way a restart or a takeover needs
        (:meth:`Media.keep_srtp_index`: a rollover counter, a new SSRC,
        a quarter of the sequence space, 64 SRTCP packets)."""
        changed = False
        for _ml, m in call.all_medias():
            if not m.has_ports or m.rtp_key not in stats:
                continue  # no counters this time (a worker that did not answer)
            rtp = stats[m.rtp_key].get("srtp_index")
            rtcp = (stats.get(m.rtcp_key) or {}).get("srtp_index")
            if m.keep_srtp_index(rtp, rtcp):
                changed = True
        if changed:
            self.persist(call.call_id)

    def _idle_reason(self, call, newest, now):
        """Why ``call`` ends now for want of media (``newest``: its newest
        packet time, None if none), or None."""
        last = call.last_signal
        if newest is not None and newest > last:
            last = newest
        idle = now - last
        t = self.timeouts
        if not call.answered:
            return REASON_OFFER if idle >= t.offer_timeout else None
        if idle < t.timeout and idle < t.silent_timeout:
            return None  # as below, without a look at every media (each second, every call)
        medias = [m for _, m in call.all_medias() if m.has_ports]
        if medias and all(m.receiving for m in medias) and idle >= t.timeout:
            return REASON_TIMEOUT
        if idle >= t.silent_timeout:
            return REASON_SILENT
        return None

    def account(self, call, stats):
        """Add a finished call's counters to the totals."""
        packets = octets = errors = 0
        for counters in stats.values():
            packets += counters["packets"]
            octets += counters["bytes"]
            errors += counters["errors"]
        relayed = self.relayed
        relayed["packets"] += packets
        relayed["bytes"] += octets
        relayed["errors"] += errors


def _seen(call, last):
    """Keep ``last``, the newest packet time of a call's sockets as the
    engine told it (None: none), in the call."""
    if last is not None and last > call.last_media:
        call.last_media = last


def _monologue_marked(call):
    for ml in call.monologues:
        if ml.deletion_at is not None:
            return True
    return False


def _monologue_due(call, now):
    for ml in call.monologues:
        if ml.deletion_at is not None and now >= ml.deletion_at:
            return True
    return False


def _srtp_calls(calls):
    """The ``calls`` with a medium with SRTP (SDES, or DTLS whatever its keys
    are): those whose counters :meth:`CallRegistry.keep_dtls` (exported keys
    not kept yet) and :meth:`CallRegistry.keep_srtp` (rollover counters,
    SRTCP indexes) read; plain loops, each second over every call when a
    state store is set."""
    out = []
    for call in calls:
        for ml in call.monologues:
            for m in ml.medias:
                if m.has_ports and (m.dtls_role is not None or m.crypto_local is not None
                                    or m.crypto_remote is not None):
                    out.append(call)
                    break
            else:
                continue
            break
    return out
