"""Kernel counters of our nftables maps read straight over netlink.

libnftables is the way to *change* our table (JSON batches, validated and
atomic: :mod:`omnirtp.media.kernel`), but reading counters through it is
slow: every ``list map`` or ``get element`` first fills libnftables' cache
(tables, sets, chains) and then prints text that we parse again.  Here one
``NFT_MSG_GETSETELEM`` request goes to the kernel on a netlink socket of our
own, a dump of the whole map or a lookup of given keys, and the answer's
attributes are read with :mod:`struct`: a key's bytes and its element's
counter, nothing else.

Everything but :class:`CounterReader` (the socket) is a pure function of
bytes, tested without a kernel.
"""

import errno
import os
import socket
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWSETELEM = 12
NFT_MSG_GETSETELEM = 13
NFPROTO_INET = 1

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

# enum nft_set_elem_list_attributes
LIST_TABLE, LIST_SET, LIST_ELEMENTS = 1, 2, 3
# enum nft_list_attributes
LIST_ELEM = 1
# enum nft_set_elem_attributes
ELEM_KEY, ELEM_EXPR, ELEM_EXPRESSIONS = 1, 7, 11
# enum nft_data_attributes
DATA_VALUE = 1
# enum nft_expr_attributes
EXPR_NAME, EXPR_DATA = 1, 2
# enum nft_counter_attributes
COUNTER_BYTES, COUNTER_PACKETS = 1, 2

#: keys per lookup request (its answer, a message per element, must fit
#: the socket's receive buffer before we read it)
GET_CHUNK = 64
#: seconds to wait for the kernel's answer (it answers at once; this only
#: bounds a wait that should never happen)
TIMEOUT = 5.0

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_ATTR = struct.Struct("=HH")  # nlattr: len, type
_U64 = struct.Struct(">Q")
_INT = struct.Struct("=i")
SETELEM = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM


class NetlinkError(Exception):
    """The kernel refused a request; ``errno`` says why."""

    def __init__(self, code):
        Exception.__init__(self, "netlink: %s" % os.strerror(code))
        self.errno = code


def _attr(kind, payload):
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (-size & 3)


def _nested(kind, payload):
    return _attr(kind | NLA_F_NESTED, payload)


def key_bytes(key):
    """The kernel's form of a counted key ``(address, port, address, port)``
    (a concatenation: each field in 4-byte registers, network order)."""
    x, xp, la, yp = key
    family = socket.AF_INET6 if ":" in x else socket.AF_INET
    return (socket.inet_pton(family, x) + struct.pack(">H2x", xp)
            + socket.inet_pton(family, la) + struct.pack(">H2x", yp))


def request(seq, table, name, keys=None):
    """A GETSETELEM message: a dump of map ``name`` of ``table`` (``keys``
    None), or a lookup of the elements whose keys are ``keys`` (bytes, as
    :func:`key_bytes` makes them)."""
    body = struct.pack("=BBH", NFPROTO_INET, 0, 0)
    body += _attr(LIST_TABLE, table.encode() + b"\0") + _attr(LIST_SET, name.encode() + b"\0")
    if keys is None:
        flags = NLM_F_REQUEST | NLM_F_DUMP
    else:
        flags = NLM_F_REQUEST | NLM_F_ACK
        body += _nested(LIST_ELEMENTS, b"".join(
            _nested(LIST_ELEM, _nested(ELEM_KEY, _attr(DATA_VALUE, k))) for k in keys))
    return _HEADER.pack(_HEADER.size + len(body), (NFNL_SUBSYS_NFTABLES << 8)
                        | NFT_MSG_GETSETELEM, flags, seq, 0) + body


def _attrs(data, start, end):
    """``(type, payload start, payload end)`` of the attributes in
    ``data[start:end]``."""
    while start + 4 <= end:
        size, kind = _ATTR.unpack_from(data, start)
        if size < 4 or start + size > end:
            break
        yield kind & NLA_TYPE_MASK, start + 4, start + size
        start += (size + 3) & ~3


def _counter(data, start, end):
    """``(packets, bytes)`` of an expression if it is a counter."""
    name = counts = None
    for kind, a, b in _attrs(data, start, end):
        if kind == EXPR_NAME:
            name = data[a:b].rstrip(b"\0")
        elif kind == EXPR_DATA:
            packets = octets = 0
            for k, c, d in _attrs(data, a, b):
                if d - c != 8:
                    continue
                if k == COUNTER_PACKETS:
                    packets = _U64.unpack_from(data, c)[0]
                elif k == COUNTER_BYTES:
                    octets = _U64.unpack_from(data, c)[0]
            counts = (packets, octets)
    return counts if name == b"counter" else None


def parse(data, into, seq=None):
    """Read the netlink messages of ``data``: every set element with a
    counter goes to ``into`` as ``{key bytes: (packets, bytes)}``.  Returns
    True once the answer is complete (the dump's end, or the lookup's
    acknowledgement); raises :class:`NetlinkError` on an error.  Messages
    of another request than ``seq`` (None: any) are skipped."""
    offset, done = 0, False
    while offset + _HEADER.size <= len(data):
        size, kind, _flags, number, _pid = _HEADER.unpack_from(data, offset)
        end = offset + size
        if size < _HEADER.size or end > len(data):
            break
        if seq is not None and number != seq:
            pass
        elif kind == NLMSG_DONE:
            done = True
        elif kind == NLMSG_ERROR and size >= _HEADER.size + 4:
            code = -_INT.unpack_from(data, offset + _HEADER.size)[0]
            if code:
                raise NetlinkError(code)
            done = True
        elif kind == SETELEM:
            for k, a, b in _attrs(data, offset + _HEADER.size + 4, end):
                if k != LIST_ELEMENTS:
                    continue
                for _e, c, d in _attrs(data, a, b):
                    key = counts = None
                    for t, x, y in _attrs(data, c, d):
                        if t == ELEM_KEY:
                            for v, p, q in _attrs(data, x, y):
                                if v == DATA_VALUE:
                                    key = data[p:q]
                        elif t == ELEM_EXPR:
                            counts = _counter(data, x, y)
                        elif t == ELEM_EXPRESSIONS:
                            for _l, p, q in _attrs(data, x, y):
                                counts = _counter(data, p, q) or counts
                    if key is not None and counts is not None:
                        into[key] = counts
        offset = (end + 3) & ~3
    return done


class CounterReader:
    """A netlink socket (of this process's network namespace) that reads
    our maps' counted elements: :meth:`dump` a whole map, :meth:`get` some
    elements by key."""

    def __init__(self):
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            self._sock.bind((0, 0))
            self._sock.settimeout(TIMEOUT)
        except OSError as e:
            raise NetlinkError(e.errno or errno.EPERM) from None
        self._seq = 0

    def _ask(self, message_of):
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        found = {}
        try:
            self._sock.send(message_of(seq))
            while not parse(self._sock.recv(1 << 17), found, seq):
                pass
        except socket.timeout:
            raise NetlinkError(errno.ETIMEDOUT) from None
        except OSError as e:
            raise NetlinkError(e.errno or errno.EIO) from None
        return found

    def dump(self, table, name):
        """``{key bytes: (packets, IP bytes)}`` of every element of the map."""
        return self._ask(lambda seq: request(seq, table, name))

    def get(self, table, name, keys):
        """The same for the elements with these ``keys`` (bytes); a key not
        in the map raises :class:`NetlinkError` (ENOENT).  The kernel
        answers a lookup with one message per element, all before we read
        any: :data:`GET_CHUNK` keys per request fit the socket's buffer."""
        keys = list(keys)
        found = {}
        for i in range(0, len(keys), GET_CHUNK):
            chunk = keys[i:i + GET_CHUNK]
            found.update(self._ask(lambda seq: request(seq, table, name, chunk)))
        return found

    def close(self):
        self._sock.close()
