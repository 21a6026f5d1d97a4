"""Following other instances' calls through Redis keyspace notifications
(rtpengine's ``subscribe-keyspace``): "foreign" calls, and taking them over.

Each instance writes its own calls to its own database (``redis =
HOST:PORT/1``) and follows the databases of the others (``subscribe-keyspace
= 2``).  Redis publishes every change of a key on the channel
``__keyspace@<db>__:<key>`` when its ``notify-keyspace-events`` setting asks
for it (``K`` and the generic and string classes, e.g. ``KA`` or ``Kg$x``);
the follower subscribes to ``__keyspace@<db>__:omnirtp:*`` of each database
it follows and:

- on ``set`` of ``omnirtp:call:<id>`` reads the key and builds the call as a
  restart would (``omnirtp.state.restore``): the same ports on the same
  interface, the same forwarding.  The call is *foreign*: listed by ``list
  sessions foreign``, not written to this instance's database, not ended by
  this instance's timeouts; ng ``query`` reads it, requests that would
  change it are refused (``omnirtp.control.commands``).  Its ports are bound when they can be (another
  host's service address, bindable with ``net.ipv4.ip_nonlocal_bind = 1``,
  as keepalived setups configure it): media that reaches this instance
  once the address moved here is relayed at once.  When they cannot be
  (the owner runs on this host and holds them), the call waits unbound and
  its ports are bound when it is taken over;
- on ``del`` or ``expired`` of a call's key drops the call (its owner
  deleted it);
- on ``expired`` (or ``del``) of ``omnirtp:alive``, the key the owner of
  that database refreshes every second (:meth:`RedisStore.heartbeat`), takes
  every foreign call of that database over: binds what is not bound yet,
  makes the call its own (written to its own database, ended by its own
  timeouts, answering ng) and deletes it from the dead owner's database, so
  that the owner, started again, does not restore it a second time.  The
  CLI's ``active`` takes every foreign call over at once (what keepalived's
  ``notify_master`` script runs), as rtpengine's.

On every (re)connection the follower reads the whole database, so that
calls set up while it was not subscribed are not missed, and calls deleted
meanwhile are dropped.

At run time (the CLI, as rtpengine's): ``ksadd N`` follows database N too,
``ksrm N`` stops following it and drops its foreign calls (their ports
released; the owner's keys are left alone), ``standby`` makes every own
call foreign again: kept in this instance's own database, which it then
follows like the others', so that the instance that takes them over
(``active`` or ``active-switchover``: this one still beats) deletes them
there and they are dropped here; its own ``active`` takes them back.  ``terminate foreign`` drops every
foreign call and deletes it from its owner's database, as rtpengine.
With ``active-switchover`` the first ng request that changes a foreign
call (offer, answer, delete, recording) takes it over before it is
handled, and so does its first media: once a second the engine tells each
call's newest packet, and a foreign call that received one since it was
bound is taken over.
"""

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from omnirtp.call.registry import newest_packet
from omnirtp.state.restore import bind_call
from omnirtp.state.snapshot import SnapshotError, decode, encode
from omnirtp.state.store import RedisAddress, RedisStore, _connect_tcp

#: the owner's heartbeat: refreshed every HEARTBEAT seconds, expiring after
#: OWNER_TTL seconds (a follower takes the calls over that much after the
#: owner's last beat, plus up to Redis's expiry cycle, 100 ms)
HEARTBEAT = 1.0
OWNER_TTL = 3.0


def parse_keyspaces(values):
    """``subscribe-keyspace`` values (``"2;3"``, ``"2"``, ...) -> database
    numbers; raises ValueError for anything else."""
    out = []
    for value in values:
        for part in str(value).replace(",", ";").split(";"):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit():
                raise ValueError("%r is not a database number" % part)
            if int(part) not in out:
                out.append(int(part))
    return tuple(out)


class Keyspace:
    """One followed database: its reader, its subscription, its calls."""

    log = Logger()

    def __init__(self, follower, db, address=None, own=False):
        self.follower = follower
        self.db = db
        #: this instance's own database, followed while in standby: its
        #: calls are not deleted there when taken back (they are ours)
        self.own = own
        a = follower.address if address is None else address
        self.address = RedisAddress(a.host, a.port, db, a.password)
        self.reader = RedisStore(follower.reactor, self.address, expires=0,
                                 connect_timeout=follower.connect_timeout,
                                 disable_time=follower.disable_time,
                                 connect=follower.connect)
        self.calls = {}  # call_id -> (blob, bound)
        #: call_id -> when its ports were bound here (media after that is
        #: activity, for active-switchover)
        self.bound_at = {}
        self.subscriber = None
        self.state = "stopped"
        self.lock = defer.DeferredLock()
        self._retry = None
        self._owner_check = None
        self.taken = 0
        self.failed = 0

    # -- the subscription ------------------------------------------------

    def start(self):
        self.state = "connecting"
        self.reader.start().addErrback(lambda f: None)  # retried by the store
        self._dial()

    def stop(self):
        self.state = "stopped"
        for timer in (self._retry, self._owner_check):
            if timer is not None and timer.active():
                timer.cancel()
        subscriber, self.subscriber = self.subscriber, None
        if subscriber is not None and subscriber.transport is not None:
            subscriber.transport.loseConnection()
        return self.reader.stop()

    def _dial(self):
        f = self.follower
        d = defer.maybeDeferred(f.connect, f.reactor, self.address, f.connect_timeout)
        d.addCallback(self._subscribe)
        d.addErrback(self._down)

    @defer.inlineCallbacks
    def _subscribe(self, protocol):
        if self.state == "stopped":
            protocol.transport.loseConnection()
            return
        self.subscriber = protocol
        protocol.lost_d.addCallback(self._lost, protocol)
        if self.address.password is not None:
            yield protocol.execute("AUTH", self.address.password)
        protocol.on_push = self._push
        yield protocol.execute("PSUBSCRIBE", b"__keyspace@%d__:omnirtp:*" % self.db)
        self.state = "up"
        self.log.info("following the calls of redis {address}", address=str(self.address))
        yield self._check_notifications()
        yield self.lock.run(self._resync)

    def _down(self, failure):
        if self.state == "stopped":
            return
        # a subscription made before the failure (the database could not be
        # read): closed, so that the next one is the only one
        subscriber, self.subscriber = self.subscriber, None
        if subscriber is not None and subscriber.transport is not None:
            subscriber.transport.loseConnection()
        self.state = "down"
        self.log.warn("cannot follow redis {address}: {why}; retrying in {seconds:g} s",
                      address=str(self.address), why=failure.getErrorMessage(),
                      seconds=self.follower.disable_time)
        self._schedule_dial()

    def _lost(self, _ignored, protocol):
        if protocol is not self.subscriber or self.state == "stopped":
            return
        self.subscriber = None
        self.state = "down"
        self.log.warn("lost the subscription to redis {address}; retrying in {seconds:g} s",
                      address=str(self.address), seconds=self.follower.disable_time)
        self._schedule_dial()

    def _schedule_dial(self):
        if self._retry is None or not self._retry.active():
            self._retry = self.follower.reactor.callLater(self.follower.disable_time,
                                                          self._dial)

    @defer.inlineCallbacks
    def _check_notifications(self):
        try:
            reply = yield self.reader.command("CONFIG", "GET", "notify-keyspace-events")
        except Exception:
            return  # CONFIG may be renamed or forbidden: nothing to say
        flags = reply[1].decode("ascii", "replace") if isinstance(reply, list) and \
            len(reply) == 2 else ""
        classes = set(flags)
        if "K" not in classes or not ("A" in classes or {"g", "$", "x"} <= classes):
            self.log.warn("redis {address} does not publish keyspace notifications "
                          "(notify-keyspace-events is {flags!r}; set it to KA or Kg$x): "
                          "the calls of database {db} are read only when the connection "
                          "is made", address=str(self.address), flags=flags, db=self.db)

    # -- notifications ---------------------------------------------------

    def _push(self, kind, items):
        if kind != b"pmessage" or len(items) != 3 or self.state == "stopped":
            return
        _pattern, channel, event = items
        if not isinstance(channel, bytes) or b"__:" not in channel:
            return
        key = channel.split(b"__:", 1)[1]
        if key.startswith(RedisStore.prefix):
            call_id = key[len(RedisStore.prefix):].decode("utf-8", "surrogateescape")
            if event == b"set":
                self._run(self._fetch, call_id)
            elif event in (b"del", b"expired"):
                self._run(self._drop, call_id)
        elif key == RedisStore.alive_key:
            if event in (b"del", b"expired"):
                self._run(self.owner_gone)
            elif event == b"set" and self._owner_check is not None \
                    and self._owner_check.active():
                self._owner_check.cancel()

    def _run(self, fn, *args):
        d = self.lock.run(fn, *args)
        d.addErrback(lambda f: self.log.failure("keyspace {db}", f, db=self.db))
        return d

    @defer.inlineCallbacks
    def _fetch(self, call_id):
        try:
            blob = yield self.reader.get(call_id)
        except Exception as e:
            self.log.warn("foreign call {call_id} not read: {error}", call_id=call_id,
                          error=str(e))
            return
        if blob is None:
            yield self._drop(call_id)
        else:
            yield self._add(call_id, blob)

    @defer.inlineCallbacks
    def _resync(self):
        blobs = yield self.reader.load_all()
        for call_id in sorted(blobs):
            yield self._add(call_id, blobs[call_id])
        for call_id in [c for c in self.calls if c not in blobs]:
            yield self._drop(call_id)
        alive = yield self.reader.command("EXISTS", RedisStore.alive_key)
        if not alive and self.calls and not (
                self._owner_check is not None and self._owner_check.active()):
            # no owner beating: gone already, or not beating yet (started a
            # moment ago); wait one expiry period before taking over
            self._owner_check = self.follower.reactor.callLater(
                OWNER_TTL, self._check_owner)

    @defer.inlineCallbacks
    def _check_owner(self):
        try:
            alive = yield self.reader.command("EXISTS", RedisStore.alive_key)
        except Exception:
            return
        if not alive:
            yield self._run(self.owner_gone)

    @defer.inlineCallbacks
    def _add(self, call_id, blob):
        f = self.follower
        registry = f.registry
        if registry.get(call_id) is not None:
            return  # a call of ours (taken over already, or the same call-id)
        for other in f.all_keyspaces():
            if other is not self and call_id in other.calls:
                # followed from another database already (our standby
                # calls, taken over by the instance that writes here now):
                # it moves to this one
                yield other._drop(call_id)
        kept = self.calls.get(call_id)
        if kept is not None and kept[0] == blob:
            return
        try:
            call = decode(blob, f.interfaces)
        except SnapshotError as e:
            self.log.warn("foreign call {call_id} not kept: {error}", call_id=call_id,
                          error=str(e))
            return
        if kept is not None and kept[1]:
            yield registry.engine.release(call_id)
        try:
            yield bind_call(registry.engine, f.negotiator, call)
            bound = True
            self.bound_at[call_id] = registry.clock.seconds()
        except Exception as e:
            bound = False
            if kept is None:
                self.log.info("foreign call {call_id}: ports not bound yet ({error})",
                              call_id=call_id, error=str(e) or repr(e))
        self.calls[call_id] = (blob, bound)
        registry.foreign[call_id] = call

    @defer.inlineCallbacks
    def _drop(self, call_id):
        kept = self.calls.pop(call_id, None)
        self.bound_at.pop(call_id, None)
        if kept is None:
            return
        self.follower.registry.foreign.pop(call_id, None)
        if kept[1]:
            yield self.follower.registry.engine.release(call_id)

    @defer.inlineCallbacks
    def drop_all(self, delete=False):
        """Drop every foreign call of this database (``ksrm``; with
        ``delete``: ``terminate foreign``, their keys deleted in the
        owner's database too); fires with how many."""
        call_ids = sorted(self.calls)
        for call_id in call_ids:
            yield self._drop(call_id)
            if delete:
                self.reader.delete(call_id)
        return len(call_ids)

    def hold(self, call):
        """Keep one of this instance's own calls as foreign (``standby``):
        its ports stay bound, it is no longer written or timed out here."""
        registry = self.follower.registry
        del registry.calls[call.call_id]
        try:
            blob = encode(call)
        except Exception:
            blob = b""  # the next set of its key replaces it
        self.calls[call.call_id] = (blob, True)
        self.bound_at[call.call_id] = registry.clock.seconds()
        registry.foreign[call.call_id] = call

    @defer.inlineCallbacks
    def owner_gone(self, why="its owner is gone"):
        """Take every foreign call of this database over; fires with how
        many were taken."""
        if self._owner_check is not None and self._owner_check.active():
            self._owner_check.cancel()
        if not self.calls:
            return 0
        self.log.warn("redis {address}: {why}, taking over its {n} calls",
                      address=str(self.address), why=why, n=len(self.calls))
        taken = 0
        for call_id in sorted(self.calls):
            ok = yield self._take(call_id)
            taken += ok
        return taken

    def take(self, call_id, why):
        """Take one foreign call over now (active-switchover); fires with 1
        when it is ours, 0 when it is not (not followed here any more, or
        its ports could not be bound)."""
        if call_id not in self.calls:
            return defer.succeed(0)
        self.log.info("foreign call {call_id} taken over: {why}", call_id=call_id, why=why)
        return self._take(call_id)

    @defer.inlineCallbacks
    def _take(self, call_id):
        f = self.follower
        registry = f.registry
        if call_id not in self.calls:
            return 0  # dropped meanwhile
        blob, bound = self.calls[call_id]
        call = registry.foreign[call_id]
        if not bound:
            try:
                yield bind_call(registry.engine, f.negotiator, call)
            except Exception as e:
                # stays foreign (unbound): the next takeover tries again
                self.failed += 1
                self.log.warn("foreign call {call_id} not taken over: {error!r}",
                              call_id=call_id, error=e)
                return 0
        del self.calls[call_id]
        self.bound_at.pop(call_id, None)
        del registry.foreign[call_id]
        call.last_signal = registry.clock.seconds()
        registry.adopt(call)
        registry.persist(call_id)
        if not self.own:
            self.reader.delete(call_id)
        self.taken += 1
        return 1


class KeyspaceFollower(service.Service):
    """The followed databases of one daemon: ``subscribe-keyspace`` at
    start, ``ksadd`` / ``ksrm`` at run time, and this instance's own
    database while its calls are held in ``standby``.

    ``own``: the RedisAddress this instance writes its calls to (its
    ``redis-write`` / ``redis``), needed by :meth:`standby`.
    ``switchover``: ``active-switchover`` (see :meth:`claim`)."""

    log = Logger()

    #: seconds between the looks at the foreign calls' media (active-switchover)
    activity_interval = 1.0

    def __init__(self, reactor, address, databases, registry, negotiator, interfaces,
                 connect_timeout=1.0, disable_time=10.0, connect=_connect_tcp, own=None,
                 switchover=False):
        self.reactor = reactor
        self.address = address
        self.registry = registry
        self.negotiator = negotiator
        self.interfaces = interfaces
        self.connect_timeout = connect_timeout
        self.disable_time = disable_time
        self.connect = connect
        self.own_address = own
        self.switchover = switchover
        #: followed databases, in the order they were added (``kslist``)
        self.keyspaces = {db: Keyspace(self, db) for db in databases}
        #: our own database while own calls are held as foreign (standby)
        self.standby_keyspace = None
        self._activity = None

    def all_keyspaces(self):
        out = list(self.keyspaces.values())
        if self.standby_keyspace is not None:
            out.append(self.standby_keyspace)
        return out

    def startService(self):
        service.Service.startService(self)
        for ks in self.all_keyspaces():
            ks.start()
        if self.switchover:
            from twisted.internet import task
            self._activity = task.LoopingCall(self.check_activity)
            self._activity.clock = self.reactor
            self._activity.start(self.activity_interval, now=False).addErrback(
                lambda f: self.log.failure("active-switchover media check stopped", f))

    def stopService(self):
        service.Service.stopService(self)
        if self._activity is not None and self._activity.running:
            self._activity.stop()
        self._activity = None
        return defer.gatherResults([ks.stop() for ks in self.all_keyspaces()])

    # -- run time: ksadd / ksrm --------------------------------------------

    def add(self, db):
        """Follow database ``db`` too (``ksadd``); False when it is
        followed already."""
        if db in self.keyspaces:
            return False
        ks = self.keyspaces[db] = Keyspace(self, db)
        if self.running:
            ks.start()
        self.log.info("keyspace {db} added to the followed databases", db=db)
        return True

    def remove(self, db):
        """Stop following database ``db`` and drop its foreign calls
        (``ksrm``): a Deferred firing with how many calls were dropped,
        None when ``db`` is not followed."""
        ks = self.keyspaces.pop(db, None)
        if ks is None:
            return defer.succeed(None)

        @defer.inlineCallbacks
        def gone():
            yield ks.stop()
            dropped = yield ks.drop_all()
            self.log.info("keyspace {db} removed from the followed databases; {n} foreign "
                          "calls dropped", db=db, n=dropped)
            return dropped
        return ks.lock.run(gone)

    # -- the operator's takeovers ----------------------------------------------

    def take_over_all(self, why="the operator said so (active)"):
        """Every foreign call becomes ours (the CLI's ``active``); fires with
        how many were taken."""
        ds = [ks.lock.run(ks.owner_gone, why) for ks in self.all_keyspaces()]
        d = defer.gatherResults(ds).addCallback(sum)
        return d.addCallback(self._standby_over)

    def _standby_over(self, taken):
        # our own calls are ours again: no need to follow our database
        ks = self.standby_keyspace
        if ks is not None and not ks.calls:
            self.standby_keyspace = None
            ks.stop()
        return taken

    def standby(self):
        """Every own call becomes foreign (the CLI's ``standby``): kept in our
        own database (not written again, not timed out, not answering ng)
        for the instance that takes them over; fires with how many."""
        registry = self.registry
        calls = list(registry.calls.values())
        if self.own_address is None:
            return defer.succeed(0)
        ks = self.standby_keyspace
        if ks is None:
            a = self.own_address
            ks = self.standby_keyspace = Keyspace(self, a.db, address=a, own=True)
            if self.running:
                ks.start()

        def hold_one(call):
            if registry.calls.get(call.call_id) is call:
                ks.hold(call)

        @defer.inlineCallbacks
        def hold():
            # each under its signalling lock: a request in progress ends first
            for call in calls:
                yield registry.run_locked(call.call_id, hold_one, call)
            self.log.warn("standby: {n} own calls are foreign now (kept in redis "
                          "{address} for the instance that takes them over)",
                          n=len(calls), address=str(ks.address))
            return len(calls)
        return ks.lock.run(hold)

    def terminate_all(self):
        """Drop every foreign call and delete it from its owner's database
        (``terminate foreign``); fires with how many."""
        ds = [ks.lock.run(ks.drop_all, True) for ks in self.all_keyspaces()]
        return defer.gatherResults(ds).addCallback(sum)

    # -- active-switchover -------------------------------------------------------

    def keyspace_of(self, call_id):
        for ks in self.all_keyspaces():
            if call_id in ks.calls:
                return ks
        return None

    def claim(self, call_id, why="signalling for it (active-switchover)"):
        """Take the foreign call ``call_id`` over before a request handles
        it: a Deferred firing with 1 (ours now) or 0."""
        ks = self.keyspace_of(call_id)
        if ks is None:
            return defer.succeed(0)
        return ks.lock.run(ks.take, call_id, why)

    @defer.inlineCallbacks
    def check_activity(self):
        """active-switchover: take over every foreign call that received
        media since its ports were bound here (once a second)."""
        if not self.registry.foreign:
            return 0
        engine = self.registry.engine
        # each call's newest packet: what the timeout sweep asks for too
        last_packets = getattr(engine, "last_packets", None)
        if last_packets is not None:
            newest = yield last_packets()
        else:
            stats = yield engine.stats(None)
            newest = {call_id: newest_packet(sockets) for call_id, sockets in stats.items()}
        active = []
        for ks in self.all_keyspaces():
            for call_id, since in list(ks.bound_at.items()):
                last = newest.get(call_id)
                if last is not None and last > since:
                    active.append((ks, call_id))
        taken = 0
        for ks, call_id in active:
            n = yield ks.lock.run(ks.take, call_id, "media for it (active-switchover)")
            taken += n
        return taken

    def listed(self):
        """The followed databases as ``kslist`` shows them."""
        return list(self.keyspaces)

    def stats(self):
        return {db: {"state": ks.state, "foreign": len(ks.calls), "taken": ks.taken,
                     "failed": ks.failed}
                for db, ks in sorted(self.keyspaces.items())}


__all__ = ["HEARTBEAT", "OWNER_TTL", "parse_keyspaces", "Keyspace", "KeyspaceFollower"]
