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
  this instance's timeouts.  Its ports are bound when they can be (another
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
"""

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from omnirtp.state.restore import bind_call
from omnirtp.state.snapshot import SnapshotError, decode
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

    def __init__(self, follower, db):
        self.follower = follower
        self.db = db
        a = follower.address
        self.address = RedisAddress(a.host, a.port, db, a.password)
        self.reader = RedisStore(follower.reactor, self.address, expires=0,
                                 connect_timeout=follower.connect_timeout,
                                 disable_time=follower.disable_time,
                                 connect=follower.connect)
        self.calls = {}  # call_id -> (blob, bound)
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
        if kind != b"pmessage" or len(items) != 3:
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
        if kept is None:
            return
        self.follower.registry.foreign.pop(call_id, None)
        if kept[1]:
            yield self.follower.registry.engine.release(call_id)

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

    @defer.inlineCallbacks
    def _take(self, call_id):
        f = self.follower
        registry = f.registry
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
        del registry.foreign[call_id]
        call.last_signal = registry.clock.seconds()
        registry.adopt(call)
        registry.persist(call_id)
        self.reader.delete(call_id)
        self.taken += 1
        return 1


class KeyspaceFollower(service.Service):
    """The ``subscribe-keyspace`` databases of one daemon."""

    log = Logger()

    def __init__(self, reactor, address, databases, registry, negotiator, interfaces,
                 connect_timeout=1.0, disable_time=10.0, connect=_connect_tcp):
        self.reactor = reactor
        self.address = address
        self.registry = registry
        self.negotiator = negotiator
        self.interfaces = interfaces
        self.connect_timeout = connect_timeout
        self.disable_time = disable_time
        self.connect = connect
        self.keyspaces = {db: Keyspace(self, db) for db in databases}

    def startService(self):
        service.Service.startService(self)
        for ks in self.keyspaces.values():
            ks.start()

    def stopService(self):
        service.Service.stopService(self)
        return defer.gatherResults([ks.stop() for ks in self.keyspaces.values()])

    def take_over_all(self, why="the operator said so (active)"):
        """Every foreign call becomes ours (the CLI's ``active``); fires with
        how many were taken."""
        ds = [ks.lock.run(ks.owner_gone, why) for ks in self.keyspaces.values()]
        return defer.gatherResults(ds).addCallback(sum)

    def stats(self):
        return {db: {"state": ks.state, "foreign": len(ks.calls), "taken": ks.taken,
                     "failed": ks.failed}
                for db, ks in sorted(self.keyspaces.items())}


__all__ = ["HEARTBEAT", "OWNER_TTL", "parse_keyspaces", "Keyspace", "KeyspaceFollower"]
