"""In-kernel forwarding of plain RTP with nftables (``table = N``).

A *stream* is one direction of one socket pair: what party X sends to the
socket advertised to it (``local``, L), forwarded out of the peer socket
(``out``, O) to party Y (``dest``).  Offloaded, the kernel does what
``RelaySocket`` does in userspace, statelessly, in one table of our own,
``inet omnirtp-N`` (nothing else is ever touched).  The table has a fixed
set of rules; a stream is four map elements (per address family ``4`` /
``6``), so adding one costs the same however many there are and a packet
costs four hash lookups:

* ``pre`` (hook prerouting, priority raw, before conntrack)::

      ip daddr set   saddr . sport . daddr . dport  map @daddr4   (X, L -> Y's address)
      notrack accept

  A packet from anybody but X misses the lookup, the rule stops, and it
  goes on to the socket, where learning and strict-source apply as before.
  ``notrack``: no conntrack entry, no NAT, no table growth.
* The kernel then routes the packet to Y: forwarded (``ip_forward``) or,
  for a Y on this host, delivered locally.
* ``post`` (hook postrouting) and ``in`` (hook input, for a local Y)::

      udp sport set  saddr . sport . daddr . dport  map @sport4   (X, Y.addr, L.port -> O's port)
      ip saddr set   saddr . sport . daddr . dport  map @saddr4   (X.addr, O.port, Y.addr, L.port -> O's address)
      udp dport set  saddr . sport . daddr . dport  map @dport4   (O, Y.addr, L.port -> Y's port; counted)

  so Y sees the address and port it was told about.  The kernel fixes the
  checksums.

L's port stays in the packet until the last lookup, so every key holds L's
or O's port: streams between the same two parties in several calls (the
same address pair each way) have keys of their own and all go to the
kernel.  Two streams whose keys would meet (:func:`keys`: the same X
sending to two of our sockets with one port number on two addresses, towards
one Y address) cannot both be in the kernel; the second stays in userspace.
The per-element counter of ``dport`` counts a stream's packets.  A stream
leaves in two steps: its ``daddr`` element first (packets go to the socket
again, the counter stops), then, after the counter was read, the rest.

Everything here but :class:`Nft` (the libnftables binding, ctypes) and
:class:`NftForwarder` (which runs batches) is a pure function from stream
descriptions to libnftables JSON commands, tested without a kernel.
"""

import ctypes
import ctypes.util
import json
import os
import re
from collections import namedtuple

from twisted.logger import Logger
from zope.interface import implementer

from omnirtp.interfaces import IForwarder
from omnirtp.media.nfnetlink import CounterReader, NetlinkError, key_bytes

FAMILY = "inet"
PRE_PRIORITY = -300  # raw: before conntrack (-200), so notrack applies
POST_PRIORITY = 300  # after srcnat (100); our packets are untracked anyway
IN_PRIORITY = -300
#: the maps of one family, in the order a packet meets them
MAPS = ("daddr", "sport", "saddr", "dport")
#: the map whose elements count packets (the last lookup)
COUNTED = "dport"


class KernelUnavailable(Exception):
    """Kernel forwarding cannot work here; the message says why."""


class NftError(Exception):
    """libnftables refused a batch; the message is its error text."""


def table_name(number, worker=None):
    """Our table for ``table = number``: ``omnirtp-N`` for the media engine
    of the control process, ``omnirtp-N-wK`` for media worker ``K``
    (``num-threads`` > 0: each worker process owns its table)."""
    if worker is None:
        return "omnirtp-%d" % number
    return "omnirtp-%d-w%d" % (number, worker)


def ours(name, number):
    """True if table ``name`` is one of ``table = number``'s (the control
    process's or a worker's)."""
    base = table_name(number)
    return name == base or re.fullmatch(re.escape(base) + r"-w\d+", name) is not None


def list_tables_command():
    return "list tables %s" % FAMILY


def parse_tables(text):
    """Table names of ``list tables inet`` text output."""
    return re.findall(r"^table %s (\S+)" % FAMILY, text, re.M)


class Stream(namedtuple("Stream", "local source out dest")):
    """One forwarded direction: datagrams from ``source`` (X's learned
    endpoint) to ``local`` (our socket facing X) leave from ``out`` (our
    socket facing Y) to ``dest`` (Y).  Each is an ``(address, port)``."""

    __slots__ = ()

    @property
    def v6(self):
        return ":" in self.local[0]


def offloadable(stream):
    """True if the kernel can forward ``stream`` statelessly: one address
    family throughout, no wildcard local address, real ports."""
    families = {":" in address for address, _port in stream}
    if len(families) != 1:
        return False
    if stream.local[0] in ("0.0.0.0", "::") or stream.out[0] in ("0.0.0.0", "::"):
        return False
    return all(0 < port < 65536 for _address, port in stream)


def _suffix(stream):
    return "6" if stream.v6 else "4"


def elements(stream):
    """``[(map name, key, value)]`` of a stream, in :data:`MAPS` order."""
    (x, xp), (la, lp), (oa, op), (ya, yp) = stream.source, stream.local, stream.out, stream.dest
    f = _suffix(stream)
    return [("daddr" + f, (x, xp, la, lp), ya),
            ("sport" + f, (x, xp, ya, lp), op),
            ("saddr" + f, (x, op, ya, lp), oa),
            ("dport" + f, (oa, op, ya, lp), yp)]


def keys(stream):
    """The ``(map, key)`` pairs a stream occupies (two streams that share
    one cannot both be offloaded)."""
    return [(name, key) for name, key, _value in elements(stream)]


def _obj(kind, table, **fields):
    body = {"family": FAMILY, "table": table}
    body.update(fields)
    return {kind: body}


def _field(protocol, field):
    return {"payload": {"protocol": protocol, "field": field}}


def _lookup(v6, maps, names):
    """``mangle`` statements: each field set from a map keyed by the 4-tuple."""
    ip = "ip6" if v6 else "ip"
    key = {"concat": [_field(ip, "saddr"), _field("udp", "sport"),
                      _field(ip, "daddr"), _field("udp", "dport")]}
    out = []
    for name, (protocol, field) in zip(maps, names):
        out.append({"mangle": {"key": _field(ip if protocol == "ip" else protocol, field),
                               "value": {"map": {"key": key, "data": "@" + name}}}})
    return out


def setup_commands(table, owner=None):
    """The commands that create our table, its maps and base chains
    (after :func:`drop_commands`); ``owner``: the name of an empty chain
    that says which process owns the table (:func:`owner_chain`)."""
    cmds = [{"add": {"table": {"family": FAMILY, "name": table}}}]
    if owner is not None:
        cmds.append({"add": _obj("chain", table, name=owner)})
    for v6 in (False, True):
        addr = "ipv6_addr" if v6 else "ipv4_addr"
        f = "6" if v6 else "4"
        for name in MAPS:
            body = dict(name=name + f, type=[addr, "inet_service", addr, "inet_service"],
                        map="inet_service" if name.endswith("port") else addr)
            if name == COUNTED:
                body["stmt"] = [{"counter": None}]
            cmds.append({"add": _obj("map", table, **body)})
    udp = {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}}
    for chain, hook, prio in (("pre", "prerouting", PRE_PRIORITY),
                              ("post", "postrouting", POST_PRIORITY),
                              ("in", "input", IN_PRIORITY)):
        cmds.append({"add": _obj("chain", table, name=chain, type="filter", hook=hook,
                                 prio=prio, policy="accept")})
        for v6 in (False, True):
            f = "6" if v6 else "4"
            if chain == "pre":
                expr = _lookup(v6, ("daddr" + f,), (("ip", "daddr"),))
                expr += [{"notrack": None}, {"accept": None}]
            else:
                expr = _lookup(
                    v6, ("sport" + f, "saddr" + f, "dport" + f),
                    (("udp", "sport"), ("ip", "saddr"), ("udp", "dport")))
                expr += [{"accept": None}]
            cmds.append({"add": _obj("rule", table, chain=chain, expr=[udp] + expr)})
    return cmds


def drop_commands(table):
    """Delete our table (everything in it) if it exists: ``add`` first, so
    that the batch never fails on a missing table."""
    return [{"add": {"table": {"family": FAMILY, "name": table}}},
            {"delete": {"table": {"family": FAMILY, "name": table}}}]


def _element(table, name, key, value):
    return _obj("element", table, name=name, elem=[[{"concat": list(key)}, value]])


def add_commands(table, stream):
    """Commands that start forwarding ``stream`` (its counter at zero); the
    first lookup's element last, so nothing is half there."""
    return [{"add": _element(table, *e)} for e in reversed(elements(stream))]


def stop_commands(table, stream):
    """First step out of the kernel: packets go to the socket again and the
    stream's counter stops."""
    return [{"delete": _element(table, *elements(stream)[0])}]


def remove_commands(table, stream):
    """Second step: the rest of the stream's elements (counter read first)."""
    return [{"delete": _element(table, *e)} for e in elements(stream)[1:]]


def plan(installed, wanted, owners):
    """Which streams change: ``(leaving, arriving, refused)``.

    ``installed`` / ``wanted``: ``{local: Stream}`` of one call; ``owners``:
    ``{(map, key): local}`` over every stream in the kernel (all calls).
    A stream that changed leaves and arrives again.  An arriving stream
    whose keys another stream holds (after the leaving ones are gone), or
    another arriving one took first, is ``refused`` (stays in userspace)."""
    leaving = [s for local, s in installed.items() if wanted.get(local) != s]
    freed = {k for s in leaving for k in keys(s)}
    taken = set()  # by arriving streams
    arriving, refused = [], []
    for local, stream in wanted.items():
        if installed.get(local) == stream:
            continue
        mine = keys(stream)
        if len(set(mine)) != len(mine) or any(
                k in taken or (k in owners and k not in freed) for k in mine):
            refused.append(stream)
            continue
        taken.update(mine)
        arriving.append(stream)
    return leaving, arriving, refused


def batch(cmds):
    """The libnftables JSON document of a list of commands."""
    return json.dumps({"nftables": cmds}, separators=(",", ":"))


#: what a kernel counter counts beyond the UDP payload per packet (it sees
#: the IP packet): IPv4 and UDP headers, IPv6 and UDP headers
HEADERS = {False: 20 + 8, True: 40 + 8}


def counted_key(stream):
    """The key of a stream's counted element as the kernel holds it
    (bytes, :func:`omnirtp.media.nfnetlink.key_bytes`)."""
    return key_bytes(elements(stream)[MAPS.index(COUNTED)][1])


def _map_of(key):
    """The counted map that holds counted key ``key`` (bytes)."""
    return COUNTED + ("6" if len(key) > 16 else "4")


def payload_counts(counts):
    """``{key: (packets, payload bytes)}`` from the kernel's ``{key:
    (packets, IP bytes)}`` (keys as the kernel holds them: 16 bytes for
    IPv4, 40 for IPv6): userspace counts UDP payloads, so must we."""
    return {key: (packets, max(0, octets - packets * HEADERS[len(key) > 16]))
            for key, (packets, octets) in counts.items()}


# -- libnftables --------------------------------------------------------------

#: nft_ctx_output_set_flags bits (libnftables.h)
OUTPUT_HANDLE = 1 << 3
OUTPUT_JSON = 1 << 4


class Nft:
    """A libnftables context through ctypes (libnftables1; no Python
    binding needed, so the same code runs in a venv and under Debian's
    python3).  ``run(text)`` runs one batch (JSON, or nft syntax) and
    returns its output, JSON unless ``text_output``; :class:`NftError`
    carries libnftables' message."""

    def __init__(self, library=None):
        path = library or ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(path, use_errno=True)
        except OSError as e:
            raise KernelUnavailable("libnftables is not installed (%s)" % (e,)) from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        if not self._ctx:
            raise KernelUnavailable("libnftables could not make a context")
        lib.nft_ctx_output_set_flags(self._ctx, OUTPUT_JSON)
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def run(self, text, text_output=False):
        if self._ctx is None:
            raise NftError("libnftables context closed")
        lib = self._lib
        # JSON output also makes libnftables read JSON input (1.0.6)
        lib.nft_ctx_output_set_flags(self._ctx, 0 if text_output else OUTPUT_JSON)
        rc = lib.nft_run_cmd_from_buffer(self._ctx, text.encode("utf-8"))
        out = lib.nft_ctx_get_output_buffer(self._ctx) or b""
        err = lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            raise NftError(err.decode("utf-8", "replace").strip() or "libnftables failed (%d)" % rc)
        return out.decode("utf-8", "replace")

    def close(self):
        if self._ctx is not None:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


def forwarding_enabled(proc="/proc/sys"):
    """``(ipv4, ipv6)``: whether this namespace forwards packets."""
    def read(path):
        try:
            with open(os.path.join(proc, path)) as f:
                return f.read().strip() == "1"
        except OSError:
            return False
    return read("net/ipv4/ip_forward"), read("net/ipv6/conf/all/forwarding")


@implementer(IForwarder)
class NftForwarder:
    """Streams forwarded by the kernel in ``inet omnirtp-N``.

    ``nft`` is an :class:`Nft` (or a fake with ``run``) that changes the
    table; ``reader`` a :class:`omnirtp.media.nfnetlink.CounterReader` (or
    a fake with ``dump`` and ``get``) that reads the counters.  :meth:`start`
    replaces whatever our table holds (a crash's leftovers) with an empty
    one and raises :class:`KernelUnavailable` when that is impossible or IP
    forwarding is off (``proc``: where ``/proc/sys`` is); a family whose
    forwarding is off stays in userspace.  Counters are cumulative per
    local socket across its offloads until :meth:`forget`."""

    log = Logger()

    def __init__(self, number, nft=None, proc="/proc/sys", reader=None, worker=None,
                 procfs="/proc"):
        if number < 0:
            raise ValueError("table must be 0 or more, got %r" % (number,))
        self.number, self.worker = number, worker
        self.table = table_name(number, worker)
        self._nft = nft
        #: counter reads go over netlink, not through libnftables: a
        #: ``list map`` or ``get element`` there fills its cache and prints
        #: text first (2-3x the CPU, bench/nft_read.py), and a ``get`` of
        #: more than about 130 keys crashes libnftables 1.0.6
        self._reader = reader
        self._proc, self._procfs = proc, procfs
        self.ipv4 = self.ipv6 = False
        #: call_id -> {local: Stream} in the kernel now
        self._calls = {}
        #: local -> the key of its stream's counted element (bytes), of
        #: every stream in the kernel now
        self._counted = {}
        #: (map, key) -> local, over every stream in the kernel
        self._owners = {}
        #: local -> [packets, bytes] of offloads that ended
        self._done = {}
        #: counted key (bytes) -> (packets, bytes) at its last read
        self._last = {}
        #: streams refused because another one holds their keys
        self.refused = 0
        self.batches = 0

    def start(self):
        if self._nft is None:
            self._nft = Nft()
        try:
            # a crash's leftovers go first, even when we cannot go on: they
            # would keep rewriting packets to ports we now relay in userspace;
            # the control process's forwarder also drops the workers' tables
            # (a previous run with num-threads > 0)
            leftovers = [self.table]
            if self.worker is None:
                listed = parse_tables(self._nft.run(list_tables_command(), text_output=True))
                leftovers += [name for name in listed
                              if name != self.table and ours(name, self.number)]
            self._nft.run(batch([c for name in leftovers for c in drop_commands(name)]))
        except NftError as e:
            raise KernelUnavailable("nftables refused our table %s: %s" % (self.table, e)) from None
        self.ipv4, self.ipv6 = forwarding_enabled(self._proc)
        if not (self.ipv4 or self.ipv6):
            raise KernelUnavailable("IP forwarding is off (net.ipv4.ip_forward = 0, "
                                    "net.ipv6.conf.all.forwarding = 0)")
        try:
            self._nft.run(batch(setup_commands(self.table, owner_chain(proc=self._procfs))))
        except NftError as e:
            raise KernelUnavailable("nftables refused our table %s: %s" % (self.table, e)) from None

    def stop(self):
        """Delete our table (a clean stop leaves nothing behind)."""
        if self._nft is None:
            return
        try:
            self._nft.run(batch(drop_commands(self.table)))
        except NftError as e:
            self.log.warn("kernel forwarding: could not delete table {table}: {error}",
                          table=self.table, error=e)
        self._calls.clear()
        self._counted.clear()
        self._owners.clear()
        for nft in {id(self._nft): self._nft, id(self._reader): self._reader}.values():
            close = getattr(nft, "close", None)
            if close is not None:
                close()
        self._nft = self._reader = None

    def _run(self, cmds):
        self._nft.run(batch(cmds))
        self.batches += 1

    def offload(self, call_id, streams):
        refused = self.offload_calls({call_id: streams})
        if refused:
            raise refused[call_id]

    def offload_calls(self, calls):
        """:meth:`offload` for several calls (``{call_id: streams}``) with
        as few batches as one call needs: the engine's tick hands over
        every call at once (a batch costs milliseconds whatever its size).
        Returns ``{call_id: NftError}`` of the calls whose streams the
        kernel refused (their new streams stay in userspace)."""
        owners = dict(self._owners)
        work = []  # (call_id, now, leaving, arriving)
        for call_id, streams in calls.items():
            installed = self._calls.get(call_id, {})
            wanted = {s.local: s for s in streams
                      if offloadable(s) and (self.ipv6 if s.v6 else self.ipv4)}
            leaving, arriving, refused = plan(installed, wanted, owners)
            self.refused += len(refused)
            if not leaving and not arriving:
                continue
            # a later call of this batch must not take these keys
            for stream in arriving:
                for k in keys(stream):
                    owners[k] = stream.local
            now = {local: s for local, s in installed.items() if wanted.get(local) == s}
            work.append((call_id, now, leaving, arriving))
        if not work:
            return {}
        leaving = [s for _c, _n, out, _a in work for s in out]
        if leaving:
            # step one: packets go back to the sockets, counters stop
            self._run([c for s in leaving for c in stop_commands(self.table, s)])
            counts = self._read([s.local for s in leaving])
            for stream in leaving:
                key = self._counted.pop(stream.local)
                packets, octets = counts.get(key, (0, 0))
                done = self._done.setdefault(stream.local, [0, 0])
                done[0] += packets
                done[1] += octets
                self._last.pop(key, None)
                for k in keys(stream):
                    self._owners.pop(k, None)
        batches = [(call_id, now, arriving,
                    [c for s in out for c in remove_commands(self.table, s)]
                    + [c for s in arriving for c in add_commands(self.table, s)])
                   for call_id, now, out, arriving in work]
        failed = {}
        try:
            self._run([c for _c, _n, _a, cmds in batches for c in cmds])
        except NftError as e:
            if len(batches) == 1:
                failed[batches[0][0]] = e
            else:
                # one call spoilt the batch: each call by itself
                for call_id, now, arriving, cmds in batches:
                    try:
                        self._run(cmds)
                    except NftError as e:
                        failed[call_id] = e
        for call_id, now, arriving, _cmds in batches:
            if call_id not in failed:
                for stream in arriving:
                    now[stream.local] = stream
                    self._counted[stream.local] = counted_key(stream)
                    for k in keys(stream):
                        self._owners[k] = stream.local
            # a refused call: its leaving streams are out of the forwarding
            # path already, its arriving ones are forgotten (userspace)
            self._store(call_id, now)
        return failed

    def _store(self, call_id, streams):
        if streams:
            self._calls[call_id] = streams
        else:
            self._calls.pop(call_id, None)

    def offloaded(self, call_id=None):
        if call_id is not None:
            return dict(self._calls.get(call_id, {}))
        out = {}
        for streams in self._calls.values():
            out.update(streams)
        return out

    def _read(self, locals=None):
        """``{counted key: (packets, bytes)}`` of the streams of sockets
        ``locals`` in the kernel (a lookup of their elements), or of every
        stream (None: a dump of the counted maps)."""
        counts = {}
        try:
            if self._reader is None:
                self._reader = CounterReader()
            if locals is not None:
                wanted = {}
                for local in locals:
                    key = self._counted.get(local)
                    if key is not None:
                        wanted.setdefault(_map_of(key), []).append(key)
                try:
                    for name, found in sorted(wanted.items()):
                        counts.update(self._reader.get(self.table, name, found))
                    return payload_counts(counts)
                except NetlinkError:
                    # an element missing fails the lookup: dump the maps
                    counts = {}
            for name in sorted({_map_of(key) for key in self._counted.values()}):
                counts.update(self._reader.dump(self.table, name))
        except NetlinkError as e:
            raise NftError(str(e)) from None
        return payload_counts(counts)

    def counters(self, fresh=True, locals=None):
        if locals is None:
            if fresh and self._counted:
                self._last = self._read()
            locals = set(self._done) | set(self._counted)
        elif fresh:
            self._last.update(self._read(locals))
        out = {}
        for local in locals:
            base = self._done.get(local)
            key = self._counted.get(local)
            if key is not None:
                packets, octets = self._last.get(key, (0, 0))
                if base is not None:
                    packets, octets = packets + base[0], octets + base[1]
                out[local] = (packets, octets)
            elif base is not None:
                out[local] = tuple(base)
        return out

    def forget(self, local):
        self._done.pop(local, None)


# -- the owner of a table, and what table = -1 deletes -------------------------

_OWNER = re.compile(r"owner-(\d+)-(\d+)")


def process_start(pid, proc="/proc"):
    """When process ``pid`` started (clock ticks since boot, /proc's
    ``starttime``), or None if there is no such process or it has ended
    (a zombie nobody reaped yet: a killed worker whose parent died too)."""
    try:
        with open(os.path.join(proc, str(pid), "stat")) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):
            return None
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def owner_chain(pid=None, proc="/proc"):
    """The name of the empty chain that marks our table as process
    ``pid``'s (None: this one): its pid and start time, so that a pid used
    again by another process is not taken for the owner."""
    pid = os.getpid() if pid is None else pid
    return "owner-%d-%d" % (pid, process_start(pid, proc) or 0)


def parse_owners(text):
    """``{table: owner chain or None}`` from ``list chains inet`` text output."""
    owners, table = {}, None
    for line in text.splitlines():
        m = re.match(r"table %s (\S+) \{" % FAMILY, line)
        if m:
            table = m.group(1)
            owners[table] = None
            continue
        m = re.match(r"\s+chain (owner-\d+-\d+) \{", line)
        if m and table is not None:
            owners[table] = m.group(1)
    return owners


def orphans(text, proc="/proc"):
    """The tables of ``list chains inet`` output that an omnirtp process
    made (any ``table`` number, a worker's too) and whose process is gone.
    A table without an owner chain is left alone: nothing says its process
    is gone."""
    gone = []
    for name, owner in parse_owners(text).items():
        if owner is None or not re.fullmatch(r"omnirtp-\d+(-w\d+)?", name):
            continue
        pid, start = (int(n) for n in _OWNER.fullmatch(owner).groups())
        if process_start(pid, proc) != start:
            gone.append(name)
    return gone


def drop_orphans(nft=None, proc="/proc"):
    """``table = -1``: delete the tables whose omnirtp process is gone (a
    crash with ``table = N``: their rules would keep forwarding to ports
    now relayed in userspace); a live process's tables stay.  Returns the
    names deleted.  Raises :class:`KernelUnavailable` without libnftables,
    :class:`NftError` without the privileges."""
    own = nft is None
    if own:
        nft = Nft()
    try:
        names = orphans(nft.run("list chains %s" % FAMILY, text_output=True), proc)
        if names:
            nft.run(batch([c for name in names for c in drop_commands(name)]))
        return names
    finally:
        if own:
            nft.close()


def drop_table(name, nft=None):
    """Delete table ``name`` if it exists (a worker that died leaves its
    table behind); ``nft``: an :class:`Nft` (None: a new one, closed after)."""
    own = nft is None
    if own:
        nft = Nft()
    try:
        nft.run(batch(drop_commands(name)))
    finally:
        if own:
            nft.close()
