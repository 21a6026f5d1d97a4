"""The codec a medium's party sends, as ``query`` and ``list sessions`` name it.

rtpengine 10.5 counts a stream's RTP datagrams per payload type, for the
payload types of its medium's codec store only (a datagram of another one
is not counted there), and shows the payload type with the most packets on
the medium's first (RTP) stream, named ``encoding/clock rate`` (and
``/channels`` when not 1) from that store: media ``codec`` in ``query``,
``using PCMU/8000`` in ``list sessions``; none (``unknown codec``) before
the first counted datagram.  Checked on loopback: both stores hold the
offer's formats, the offerer's as it offered them, the answerer's as the
offer reached it (a payload type the answerer was offered but left out of
its answer is counted, one it answered but was not offered is not).

The media engine counts every payload type (``payload types`` in a
socket's counters, omnirtp.media.relay.RelaySocket._track); this module
names them, off the packet path: once per ``query``/``list sessions`` of a
call that carried media.  Read-only: a plain call's kept sections are
parsed here and dropped again, the call keeps what it kept.
"""

from omnirtp.call import codecstore
from omnirtp.sdp.codecs import codec_for


def _name(f):
    """``PCMU/8000``, ``opus/48000/2``; None for a format without a name."""
    if not f.encoding:
        return None
    if f.channels != 1:
        return "%s/%d/%d" % (f.encoding, f.clock_rate, f.channels)
    return "%s/%d" % (f.encoding, f.clock_rate)


def _own(m):
    """The formats of the party's own last SDP (PayloadType list), or None."""
    if m.codecs_in is not None:
        return m.codecs_in
    if m.codec_source is not None:
        return codecstore.from_section(m.codec_source.section(), {})
    return None


def _given(m):
    """The formats of the m= line we last gave the party (PayloadType
    list), or None."""
    if m.codecs_out is not None:
        return m.codecs_out
    if m.codec_out_source is not None:
        kept, ops = m.codec_out_source
        section = kept.section()
        rtpmaps = section.rtpmaps()
        keep = {int(c.pt) for c in ops.apply([codec_for(f, rtpmaps) for f in section.formats])
                if c.pt.isdigit()}
        return [f for f in codecstore.from_section(section, {}) if f.pt in keep]
    return None


def names(m):
    """``{payload type: name}`` of the medium's store: its codec store when
    the call handles codecs, else the offer's formats (the party's own when
    it offered, those we gave it when it answered)."""
    formats = None
    if m.codecs is not None:
        formats = list(m.codecs)
    elif m.codec_last == "in":
        # the party's own SDP is the latest: an answer if it had been
        # given an m= line before (else an offer)
        formats = _given(m)
    if formats is None:
        formats = _own(m) or ()
    out = {}
    for f in formats:
        name = _name(f)
        if name is not None and f.pt not in out:
            out[f.pt] = name
    return out


def codec(m, payload_types):
    """The name of the payload type of ``payload_types`` (``{pt: packets}``,
    a socket's counters) with the most packets among those of the medium's
    store, or None (nothing counted yet, or only unknown payload types).  A
    tie goes to the higher payload type number (10.5's pick among equals
    follows its hash table's order, which puts 8 before 0 and 101 before
    both)."""
    if not payload_types:
        return None
    known = names(m)
    best = None
    for pt, packets in payload_types.items():
        if pt in known and packets > 0 and (
                best is None or (packets, pt) > (payload_types[best], best)):
            best = pt
    return None if best is None else known[best]
