"""In-kernel forwarding of plain RTP with nftables (``table = N``).

A *stream* is one direction of one socket pair: what party X sends to the
socket advertised to it (``local``), forwarded out of the peer socket
(``out``) to party Y (``dest``).  Offloaded, the kernel does what
``RelaySocket`` does in userspace, statelessly, in one table of our own,
``inet omnirtp-N`` (nothing else is ever touched):

* ``pre`` (hook prerouting, priority raw, before conntrack): the packet's
  destination ``daddr . dport`` is looked up in the verdict map ``in4`` /
  ``in6``; a stream's element jumps to its chain ``s-…``, whose one rule
  matches the learned source of X, rewrites the destination to Y, counts in
  the named counter ``c-…`` and sets ``notrack`` (no conntrack entry, so no
  NAT, no conntrack table growth).  A packet from anybody else returns and
  goes on to the socket, where learning and strict-source apply as before.
* The kernel then routes the packet to Y: forwarded (``ip_forward``) or, for
  a Y on this host, delivered locally.
* ``post`` (hook postrouting) and ``in`` (hook input, for a local Y) look
  up ``saddr . sport . daddr . dport`` in ``out4`` / ``out6``; the stream's
  element jumps to ``o-…``, which sets the source to ``out`` (the port Y was
  told about).  The kernel fixes the IP and UDP checksums.

Everything here but :class:`Nft` (the libnftables binding, ctypes) and
:class:`NftForwarder` (which runs batches) is a pure function from stream
descriptions to libnftables JSON commands, tested without a kernel.
"""

import ctypes
import ctypes.util
import json
import os
from collections import namedtuple

from twisted.logger import Logger
from zope.interface import implementer

from omnirtp.interfaces import IForwarder

FAMILY = "inet"
PRE_PRIORITY = -300  # raw: before conntrack (-200), so notrack applies
POST_PRIORITY = 300  # after srcnat (100); our packets are untracked anyway
IN_PRIORITY = -300


class KernelUnavailable(Exception):
    """Kernel forwarding cannot work here; the message says why."""


class NftError(Exception):
    """libnftables refused a batch; the message is its error text."""


def table_name(number):
    """Our table for ``table = number``."""
    return "omnirtp-%d" % number


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


def _slug(key):
    return "%s-%d" % (key[0].replace(":", "_"), key[1])


def names(local):
    """``(in chain, out chain, counter)`` of the stream received on ``local``."""
    slug = _slug(local)
    return "s-" + slug, "o-" + slug, "c-" + slug


def _proto(v6):
    return "ip6" if v6 else "ip"


def _field(protocol, field):
    return {"payload": {"protocol": protocol, "field": field}}


def _match(protocol, field, value):
    return {"match": {"op": "==", "left": _field(protocol, field), "right": value}}


def _mangle(protocol, field, value):
    return {"mangle": {"key": _field(protocol, field), "value": value}}


def _obj(kind, table, **fields):
    body = {"family": FAMILY, "table": table}
    body.update(fields)
    return {kind: body}


def setup_commands(table):
    """The commands that create our table, its maps and base chains
    (after :func:`drop_commands`)."""
    cmds = [{"add": {"table": {"family": FAMILY, "name": table}}}]
    for v6 in (False, True):
        addr = "ipv6_addr" if v6 else "ipv4_addr"
        suffix = "6" if v6 else "4"
        cmds.append({"add": _obj("map", table, name="in" + suffix,
                                 type=[addr, "inet_service"], map="verdict")})
        cmds.append({"add": _obj("map", table, name="out" + suffix,
                                 type=[addr, "inet_service", addr, "inet_service"],
                                 map="verdict")})
    for chain, hook, prio in (("pre", "prerouting", PRE_PRIORITY),
                              ("post", "postrouting", POST_PRIORITY),
                              ("in", "input", IN_PRIORITY)):
        cmds.append({"add": _obj("chain", table, name=chain, type="filter", hook=hook,
                                 prio=prio, policy="accept")})
        for v6 in (False, True):
            p = _proto(v6)
            suffix = "6" if v6 else "4"
            if chain == "pre":
                key = [_field(p, "daddr"), _field("udp", "dport")]
                data = "@in" + suffix
            else:
                key = [_field(p, "saddr"), _field("udp", "sport"),
                       _field(p, "daddr"), _field("udp", "dport")]
                data = "@out" + suffix
            cmds.append({"add": _obj("rule", table, chain=chain, expr=[
                {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}},
                {"vmap": {"key": {"concat": key}, "data": data}}])})
    return cmds


def drop_commands(table):
    """Delete our table (everything in it) if it exists: ``add`` first, so
    that the batch never fails on a missing table."""
    return [{"add": {"table": {"family": FAMILY, "name": table}}},
            {"delete": {"table": {"family": FAMILY, "name": table}}}]


def _rules(table, stream):
    chain_in, chain_out, counter = names(stream.local)
    p = _proto(stream.v6)
    rule_in = _obj("rule", table, chain=chain_in, expr=[
        _match(p, "saddr", stream.source[0]),
        _match("udp", "sport", stream.source[1]),
        _mangle(p, "daddr", stream.dest[0]),
        _mangle("udp", "dport", stream.dest[1]),
        {"counter": counter},
        {"notrack": None},
        {"accept": None}])
    rule_out = _obj("rule", table, chain=chain_out, expr=[
        _mangle(p, "saddr", stream.out[0]),
        _mangle("udp", "sport", stream.out[1]),
        {"accept": None}])
    return [{"add": rule_in}, {"add": rule_out}]


def _elements(table, stream):
    chain_in, chain_out, _counter = names(stream.local)
    suffix = "6" if stream.v6 else "4"
    key_in = {"concat": [stream.local[0], stream.local[1]]}
    key_out = {"concat": [stream.source[0], stream.source[1], stream.dest[0], stream.dest[1]]}
    return (_obj("element", table, name="in" + suffix,
                 elem=[[key_in, {"jump": {"target": chain_in}}]]),
            _obj("element", table, name="out" + suffix,
                 elem=[[key_out, {"jump": {"target": chain_out}}]]))


def add_commands(table, stream):
    """Commands that start forwarding ``stream`` (its counter at zero)."""
    chain_in, chain_out, counter = names(stream.local)
    cmds = [{"add": _obj("counter", table, name=counter)},
            {"add": _obj("chain", table, name=chain_in)},
            {"add": _obj("chain", table, name=chain_out)}]
    cmds += _rules(table, stream)
    # the elements last: nothing jumps to a chain before it has its rule
    cmds += [{"add": e} for e in _elements(table, stream)]
    return cmds


def remove_commands(table, stream):
    """Commands that stop forwarding ``stream``; its counter stays (read it,
    then :func:`forget_commands`)."""
    chain_in, chain_out, _counter = names(stream.local)
    cmds = [{"delete": e} for e in _elements(table, stream)]
    for chain in (chain_in, chain_out):
        cmds.append({"flush": _obj("chain", table, name=chain)})
        cmds.append({"delete": _obj("chain", table, name=chain)})
    return cmds


def forget_commands(table, local):
    """Delete the counter of the stream once received on ``local``."""
    return [{"delete": _obj("counter", table, name=names(local)[2])}]


def replace_commands(table, old, new):
    """Commands that change a forwarded stream on the same ``local`` socket
    (a party moved, the peer changed) in one step; the counter goes on."""
    assert old.local == new.local
    chain_in, chain_out, _counter = names(old.local)
    cmds = [{"delete": e} for e in _elements(table, old)]
    cmds += [{"flush": _obj("chain", table, name=chain_in)},
             {"flush": _obj("chain", table, name=chain_out)}]
    cmds += _rules(table, new)
    cmds += [{"add": e} for e in _elements(table, new)]
    return cmds


def diff_commands(table, installed, wanted):
    """``(commands, removed locals)`` that take the streams ``installed``
    (``{local: Stream}``) to ``wanted`` (the same), in one batch."""
    cmds = []
    removed = []
    for local, stream in installed.items():
        if local not in wanted:
            cmds += remove_commands(table, stream)
            removed.append(local)
    for local, stream in wanted.items():
        old = installed.get(local)
        if old is None:
            cmds += add_commands(table, stream)
        elif old != stream:
            cmds += replace_commands(table, old, stream)
    return cmds, removed


def batch(cmds):
    """The libnftables JSON document of a list of commands."""
    return json.dumps({"nftables": cmds}, separators=(",", ":"))


def list_counters_command(table):
    return batch([{"list": {"counters": {"family": FAMILY, "table": table}}}])


def parse_counters(output, table):
    """``{counter name: (packets, bytes)}`` from the JSON output of
    :func:`list_counters_command` (other tables' counters ignored)."""
    if not output:
        return {}
    found = {}
    for item in json.loads(output).get("nftables", ()):
        counter = item.get("counter")
        if counter is None or counter.get("table") != table:
            continue
        found[counter["name"]] = (int(counter.get("packets", 0)), int(counter.get("bytes", 0)))
    return found


# -- libnftables --------------------------------------------------------------

#: nft_ctx_output_set_flags bits (libnftables.h)
OUTPUT_HANDLE = 1 << 3
OUTPUT_JSON = 1 << 4


class Nft:
    """A libnftables context through ctypes (libnftables1; no Python
    binding needed, so the same code runs in a venv and under Debian's
    python3).  ``run(text)`` runs one batch (JSON or nft syntax) and returns
    its JSON output; :class:`NftError` carries libnftables' message."""

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

    def run(self, text):
        if self._ctx is None:
            raise NftError("libnftables context closed")
        lib = self._lib
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

    ``nft`` is an :class:`Nft` (or a fake with ``run``).  :meth:`start`
    replaces whatever our table holds (a crash's leftovers) with an empty
    one and raises :class:`KernelUnavailable` when that is impossible.
    Counters are cumulative per local socket across its offloads until
    :meth:`forget`."""

    log = Logger()

    def __init__(self, number, nft=None, proc="/proc/sys"):
        if number < 0:
            raise ValueError("table must be 0 or more, got %r" % (number,))
        self.table = table_name(number)
        self._nft = nft
        self._proc = proc
        self.ipv4 = self.ipv6 = False
        #: call_id -> {local: Stream} in the kernel now
        self._calls = {}
        #: local -> [packets, bytes] of offloads that ended
        self._done = {}
        #: counter name -> (packets, bytes) at the last read
        self._last = {}
        self.batches = 0

    def start(self):
        if self._nft is None:
            self._nft = Nft()
        self.ipv4, self.ipv6 = forwarding_enabled(self._proc)
        try:
            self._nft.run(batch(drop_commands(self.table) + setup_commands(self.table)))
        except NftError as e:
            raise KernelUnavailable("nftables refused our table %s: %s" % (self.table, e)) from None
        if not (self.ipv4 or self.ipv6):
            self.log.warn("kernel forwarding: IP forwarding is off here (net.ipv4.ip_forward = 0, "
                          "net.ipv6.conf.all.forwarding = 0): only parties on this host are "
                          "offloaded")

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

    def offload(self, call_id, streams):
        installed = self._calls.get(call_id, {})
        wanted = {s.local: s for s in streams if offloadable(s)}
        cmds, removed = diff_commands(self.table, installed, wanted)
        if not cmds:
            return
        self._nft.run(batch(cmds))
        self.batches += 1
        if wanted:
            self._calls[call_id] = wanted
        else:
            self._calls.pop(call_id, None)
        if removed:
            # the counters of removed streams no longer move: read, keep, delete
            counts = self._read()
            forget = []
            for local in removed:
                name = names(local)[2]
                packets, octets = counts.get(name, (0, 0))
                done = self._done.setdefault(local, [0, 0])
                done[0] += packets
                done[1] += octets
                self._last.pop(name, None)
                forget += forget_commands(self.table, local)
            self._nft.run(batch(forget))

    def offloaded(self, call_id=None):
        if call_id is not None:
            return dict(self._calls.get(call_id, {}))
        out = {}
        for streams in self._calls.values():
            out.update(streams)
        return out

    def _read(self):
        return parse_counters(self._nft.run(list_counters_command(self.table)), self.table)

    def counters(self):
        if any(self._calls.values()):
            self._last = self._read()
        out = {local: tuple(v) for local, v in self._done.items()}
        for streams in self._calls.values():
            for local in streams:
                packets, octets = self._last.get(names(local)[2], (0, 0))
                base = self._done.get(local, (0, 0))
                out[local] = (base[0] + packets, base[1] + octets)
        return out

    def forget(self, local):
        self._done.pop(local, None)
