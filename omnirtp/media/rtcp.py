"""RTCP (RFC 3550 section 6) as far as the relay reads it: the reports.

A party's sender reports (SR, payload type 200) and receiver reports (RR,
201) carry one report block per source it receives: the fraction lost
since the last report, the cumulative number of packets lost, the
extended highest sequence number received and the interarrival jitter (in
RTP timestamp units).  That is where the live page's loss and jitter come
from (docs/architecture.md, "The path of a packet"): the relay hands a
received RTCP datagram here only when RTCP arrives (a few per second per
stream at most), never per RTP packet.

Plain functions over bytes:

* :func:`split` checks a compound datagram and returns its packets,
  ``(packet type, count, body)`` each, ``body`` being what follows the
  4-byte common header (padding removed);
* :func:`reports` returns the SR/RR packets of a compound as
  :class:`Report` values (other packets, SDES, BYE, APP, feedback, are
  checked and skipped);
* :func:`loss_percent` and :func:`jitter_ms` turn a block's fixed-point
  fraction and timestamp-unit jitter into what an operator reads.

Malformed input raises :class:`RtcpError` (a ``ValueError``) naming what
is wrong; nothing else escapes.  SRTCP must be unprotected first: the
report blocks of an SRTCP packet are encrypted.
"""

import struct
from collections import namedtuple

SR = 200
RR = 201

#: the common header, and what an SR adds before its report blocks
HEADER = 4
SENDER_INFO = 20
BLOCK = 24

_I = struct.Struct("!I")
_SENDER = struct.Struct("!IQIII")  # SSRC, NTP timestamp, RTP timestamp, packets, octets
_BLOCK = struct.Struct("!IIIIII")  # SSRC, lost word, highest seq, jitter, LSR, DLSR


class RtcpError(ValueError):
    """A datagram that is not a well-formed RTCP compound packet."""


#: the sender information of an SR (``ntp`` is the 64-bit NTP timestamp)
SenderInfo = namedtuple("SenderInfo", "ntp rtp_timestamp packets octets")

#: one report block: about source ``ssrc``, as its receiver saw it.
#: ``fraction_lost`` is the 8-bit fixed-point fraction (lost / 256) since
#: the previous report; ``cumulative_lost`` is signed (duplicates can make
#: it negative); ``jitter`` is in RTP timestamp units
ReportBlock = namedtuple(
    "ReportBlock", "ssrc fraction_lost cumulative_lost highest_seq jitter lsr dlsr")

#: an SR or RR: ``kind`` is :data:`SR` or :data:`RR`, ``ssrc`` the
#: reporter's, ``sender`` a :class:`SenderInfo` (None for an RR),
#: ``blocks`` a tuple of :class:`ReportBlock`
Report = namedtuple("Report", "kind ssrc sender blocks")


def split(data):
    """The packets of the compound RTCP datagram ``data``: a tuple of
    ``(packet_type, count, body)``, ``count`` being the 5-bit field of the
    common header (report count, source count or subtype) and ``body`` the
    bytes after the common header, without padding.  Raises
    :class:`RtcpError` for anything that does not parse."""
    data = bytes(data)
    total = len(data)
    if total < HEADER:
        raise RtcpError("RTCP packet is shorter than its header (%d bytes)" % total)
    packets = []
    offset = 0
    while offset < total:
        if total - offset < HEADER:
            raise RtcpError("RTCP packet at byte %d is shorter than its header" % offset)
        first, kind, words = data[offset], data[offset + 1], (data[offset + 2] << 8) | data[offset + 3]
        if first >> 6 != 2:
            raise RtcpError("RTCP packet at byte %d has version %d, not 2" % (offset, first >> 6))
        if not 192 <= kind <= 223:
            raise RtcpError("RTCP packet at byte %d has type %d, not 192-223" % (offset, kind))
        end = offset + HEADER + 4 * words
        if end > total:
            raise RtcpError("RTCP packet at byte %d claims %d bytes, %d are left" % (
                offset, HEADER + 4 * words, total - offset))
        body_end = end
        if first & 0x20:
            if end != total:
                raise RtcpError("RTCP packet at byte %d has padding but is not the last" % offset)
            pad = data[end - 1] if end > offset + HEADER else 0
            if pad == 0 or pad > 4 * words:
                raise RtcpError("RTCP packet at byte %d has a padding count of %d" % (offset, pad))
            body_end = end - pad
        packets.append((kind, first & 0x1F, data[offset + HEADER:body_end]))
        offset = end
    return tuple(packets)


def _blocks(body, start, count, kind):
    need = start + count * BLOCK
    if len(body) < need:
        raise RtcpError("RTCP %s with %d report blocks needs %d bytes after its header, has %d"
                        % ("SR" if kind == SR else "RR", count, need, len(body)))
    blocks = []
    for i in range(count):
        ssrc, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(body, start + i * BLOCK)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        blocks.append(ReportBlock(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr))
    return tuple(blocks)


def reports(data):
    """The sender and receiver reports in the compound RTCP datagram
    ``data``, in order, as :class:`Report` values (a tuple, possibly
    empty).  Raises :class:`RtcpError` when the datagram or one of its
    reports is malformed."""
    out = []
    for kind, count, body in split(data):
        if kind == SR:
            if len(body) < 4 + SENDER_INFO:
                raise RtcpError("RTCP SR needs 24 bytes after its header, has %d" % len(body))
            ssrc, ntp, rtp_ts, packets, octets = _SENDER.unpack_from(body, 0)
            blocks = _blocks(body, 4 + SENDER_INFO, count, kind)
            out.append(Report(SR, ssrc, SenderInfo(ntp, rtp_ts, packets, octets), blocks))
        elif kind == RR:
            if len(body) < 4:
                raise RtcpError("RTCP RR needs 4 bytes after its header, has %d" % len(body))
            (ssrc,) = _I.unpack_from(body, 0)
            out.append(Report(RR, ssrc, None, _blocks(body, 4, count, kind)))
    return tuple(out)


def loss_percent(fraction_lost):
    """A block's fraction lost (``lost / 256``) in percent, one decimal."""
    return round(fraction_lost * 100.0 / 256, 1)


def jitter_ms(jitter, clock_rate):
    """A block's jitter (RTP timestamp units) in milliseconds, one decimal,
    at ``clock_rate`` Hz; None when the clock rate is unknown."""
    if not clock_rate:
        return None
    return round(jitter * 1000.0 / clock_rate, 1)
