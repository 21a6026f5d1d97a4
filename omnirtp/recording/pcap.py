"""The pcap files of call recording, as rtpengine 10.5 writes them.

Classic libpcap (magic 0xa1b2c3d4 in the host's byte order, which is little
endian on every platform Debian's rtpengine runs on; version 2.4, time zone
and accuracy 0, snaplen 65535), microsecond time stamps.  Two link types,
the ``recording-format`` option:

``raw``  link type 101 (LINKTYPE_RAW): each frame starts with its IP header.
``eth``  link type 1 (Ethernet): a 14-byte header of two all-zero MAC
         addresses and the ethertype (0x0800 IPv4, 0x86dd IPv6) first.

Each recorded packet gets a synthetic IP and UDP header: from the party
that sent it to the local media socket it arrived on.  IPv4: version 4,
IHL 5, TOS 0, ID 0, no fragment bits, TTL 64, protocol 17, header checksum
0; IPv6: traffic class and flow label 0, next header 17, hop limit 64;
UDP checksum 0.  (Observed on 10.5: a 172-byte RTP packet is a 214-byte
``eth`` frame, 200 bytes ``raw``.)

Plain functions over bytes; :class:`PcapReader` reads these files back
(and others: Linux cooked captures, IPv6, big-endian files), for
``omnirtp-pcap2wav``.
"""

import socket
import struct

MAGIC = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
SNAPLEN = 65535
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NULL = 0

#: recording-format -> link type
FORMATS = {"raw": LINKTYPE_RAW, "eth": LINKTYPE_ETHERNET}

TTL = 64
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD

_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_ETH_V4 = b"\x00" * 12 + struct.pack("!H", ETHERTYPE_IPV4)
_ETH_V6 = b"\x00" * 12 + struct.pack("!H", ETHERTYPE_IPV6)


def global_header(fmt):
    """The 24-byte file header for ``recording-format`` ``fmt`` (raw/eth)."""
    return _GLOBAL.pack(MAGIC, 2, 4, 0, 0, SNAPLEN, FORMATS[fmt])


def frame(src, dst, payload, fmt):
    """The link-layer frame of ``payload`` (a UDP payload) sent from
    ``src`` to ``dst`` ((address, port), IPv4 or IPv6 text addresses)."""
    udp = _UDP.pack(src[1], dst[1], 8 + len(payload), 0)
    if ":" in src[0]:
        ip = _IPV6.pack(6 << 28, 8 + len(payload), 17, TTL,
                        socket.inet_pton(socket.AF_INET6, src[0]),
                        socket.inet_pton(socket.AF_INET6, dst[0]))
        eth = _ETH_V6
    else:
        ip = _IPV4.pack(0x45, 0, 28 + len(payload), 0, 0, TTL, 17, 0,
                        socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
        eth = _ETH_V4
    if fmt == "eth":
        return b"".join((eth, ip, udp, payload))
    return b"".join((ip, udp, payload))


def record(when, src, dst, payload, fmt):
    """One pcap record (16-byte header and frame) of ``payload`` at unix
    time ``when`` (float seconds)."""
    data = frame(src, dst, payload, fmt)
    seconds, micros = divmod(int(when * 1000000.0 + 0.5), 1000000)
    return _RECORD.pack(seconds, micros, len(data), len(data)) + data


class Flow:
    """The packets from ``src`` to ``dst`` (a party to a local socket), for
    writing many records fast: the rest of the record header (``caplen``,
    ``len``) and the link, IP and UDP headers of each payload length are
    built once (:meth:`head`), and :func:`encode` turns ``(time, flow,
    payload)`` items into records."""

    __slots__ = ("src", "dst", "format", "heads", "usable")

    #: distinct payload lengths whose headers are kept
    MAX_HEADS = 2048

    def __init__(self, src, dst, fmt):
        self.src = src
        self.dst = dst
        self.format = fmt
        self.heads = {}
        try:
            frame(src, dst, b"", fmt)
            self.usable = True
        except (OSError, ValueError, TypeError, IndexError, struct.error):
            self.usable = False  # no address yet, or one of another family

    def head(self, n):
        """The bytes of a record of an ``n``-byte payload between its time
        stamp and its payload: ``caplen``, ``len`` and the frame's headers."""
        heads = self.heads
        if len(heads) >= self.MAX_HEADS:
            heads.clear()
        data = bytearray(frame(self.src, self.dst, b"", self.format))
        ip = 14 if self.format == "eth" else 0
        if ":" in self.src[0]:
            struct.pack_into("!H", data, ip + 4, 8 + n)
            struct.pack_into("!H", data, ip + 44, 8 + n)
        else:
            struct.pack_into("!H", data, ip + 2, 28 + n)
            struct.pack_into("!H", data, ip + 24, 8 + n)
        head = heads[n] = _STAMP.pack(len(data) + n, len(data) + n) + bytes(data)
        return head


#: half a record header: its time stamp, or its caplen and len
_STAMP = struct.Struct("<II")


def encode(items, out):
    """Append the records of ``(time, flow, payload)`` items to the
    bytearray ``out``: each its time stamp (packed once per distinct time:
    the packets of one poller wakeup share theirs), the rest of its headers
    (built once per flow and payload length) and the payload, three
    in-place copies (one contiguous buffer: the file gets it in one write,
    cheaper for the kernel than a writev of three pieces per record).
    Returns how many items were skipped (a flow without usable addresses)."""
    pack_stamp = _STAMP.pack
    skipped = 0
    last = None
    stamp = b""
    for when, flow, payload in items:
        head = flow.heads.get(len(payload))
        if head is None:
            if not flow.usable:
                skipped += 1
                continue
            head = flow.head(len(payload))
        if when != last:
            last = when
            stamp = pack_stamp(*divmod(int(when * 1000000.0 + 0.5), 1000000))
        out += stamp
        out += head
        out += payload
    return skipped


class PcapError(ValueError):
    """Not a pcap file this reader understands."""


class Packet:
    """One UDP datagram of a pcap file."""

    __slots__ = ("time", "src", "dst", "payload")

    def __init__(self, time, src, dst, payload):
        self.time = time
        self.src = src
        self.dst = dst
        self.payload = payload

    def __repr__(self):
        return "Packet(%r, %r, %r, %d bytes)" % (self.time, self.src, self.dst, len(self.payload))


def _ip_udp(data):
    """(src, dst, payload) of an IPv4/IPv6 UDP packet, or None."""
    if not data:
        return None
    version = data[0] >> 4
    if version == 4:
        if len(data) < 28:
            return None
        ihl = (data[0] & 0x0F) * 4
        if data[9] != 17 or len(data) < ihl + 8:
            return None
        frag = struct.unpack_from("!H", data, 6)[0]
        if frag & 0x3FFF:  # a fragment: not reassembled
            return None
        src_ip, dst_ip = socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20])
        total = struct.unpack_from("!H", data, 2)[0]
        body = data[ihl:total] if ihl <= total <= len(data) else data[ihl:]
    elif version == 6:
        if len(data) < 48 or data[6] != 17:
            return None
        src_ip = socket.inet_ntop(socket.AF_INET6, data[8:24])
        dst_ip = socket.inet_ntop(socket.AF_INET6, data[24:40])
        body = data[40:40 + struct.unpack_from("!H", data, 4)[0]]
    else:
        return None
    if len(body) < 8:
        return None
    sport, dport, length = struct.unpack_from("!HHH", body)
    payload = body[8:length] if 8 <= length <= len(body) else body[8:]
    return (src_ip, sport), (dst_ip, dport), payload


def _network(linktype, data):
    """The network-layer bytes of a frame, or None."""
    if linktype == LINKTYPE_ETHERNET:
        offset, ethertype = 12, None
        while len(data) >= offset + 2:
            ethertype = struct.unpack_from("!H", data, offset)[0]
            if ethertype in (0x8100, 0x88A8):  # VLAN tags
                offset += 4
                continue
            break
        if ethertype not in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
            return None
        return data[offset + 2:]
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return data
    if linktype == LINKTYPE_LINUX_SLL:
        return data[16:] if len(data) >= 16 else None
    if linktype == LINKTYPE_LINUX_SLL2:
        return data[20:] if len(data) >= 20 else None
    if linktype == LINKTYPE_NULL:
        return data[4:] if len(data) >= 4 else None
    return None


class PcapReader:
    """The UDP datagrams of a libpcap file (bytes given).

    ``linktype``; iterating yields :class:`Packet` in file order.  A
    truncated last record (a file whose writer was killed) ends the
    iteration quietly; ``truncated`` tells."""

    def __init__(self, data):
        if len(data) < 24:
            raise PcapError("%d bytes, shorter than a pcap file header" % len(data))
        magic = struct.unpack_from("<I", data)[0]
        if magic in (MAGIC, MAGIC_NS):
            endian = "<"
        else:
            magic = struct.unpack_from(">I", data)[0]
            if magic not in (MAGIC, MAGIC_NS):
                raise PcapError("not a libpcap file (magic %s)" % data[:4].hex())
            endian = ">"
        self._scale = 1e-9 if magic == MAGIC_NS else 1e-6
        self._endian = endian
        self._data = data
        self.linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
        if _network(self.linktype, b"") is None and self.linktype not in (
                LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6,
                LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_NULL):
            raise PcapError("unsupported link type %d" % self.linktype)
        self.truncated = False

    def __iter__(self):
        data, header = self._data, struct.Struct(self._endian + "IIII")
        pos, end = 24, len(self._data)
        while pos < end:
            if pos + 16 > end:
                self.truncated = True
                return
            sec, frac, caplen, _ = header.unpack_from(data, pos)
            if pos + 16 + caplen > end:
                self.truncated = True
                return
            frame_ = data[pos + 16:pos + 16 + caplen]
            pos += 16 + caplen
            network = _network(self.linktype, frame_)
            if network is None:
                continue
            parsed = _ip_udp(network)
            if parsed is None:
                continue
            yield Packet(sec + frac * self._scale, parsed[0], parsed[1], parsed[2])
