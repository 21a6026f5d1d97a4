"""The media plane's side of call recording: the tap step and the pcap writer.

A recorded call has one :class:`PcapRecorder` (one pcap file) in the engine
that owns its sockets (the control process with ``num-threads = 0``, else
its media worker), and every socket of the call has a :class:`RecordTap` as
its first ``middle`` step (see docs/architecture.md, "The transform
pipeline").  A tap runs after the socket's ``inbound`` steps (SRTP undone)
and before anything that changes the packet (a transcoder, the peer's
``outbound`` SRTP protect), so each socket records what its party sent, in
the clear: both directions of every stream, as rtpengine records them.

The packet path only appends ``(time, flow, data)`` to the recorder's
list and, for the first packet after a flush, schedules the next flush on
the reactor.  A socket whose only step is its tap (a recorded plain call)
keeps the poller's inline path, which hands the item to the tap's
``sink`` (``RelaySocket._tap``; :meth:`PcapRecorder._sinks` points it at
the buffer's ``append``, at :meth:`PcapRecorder._first` or at nothing,
off the packet path), without a Python frame and without a bound check:
between two flushes that socket adds at most what it relays in one flush
interval.  Elsewhere the tap's :meth:`RecordTap.rtp` runs in the
pipeline, bounded (``limit`` packets; beyond that packets are not
recorded, counted in ``dropped``).  The flush, off the packet path, turns
the list into pcap records (:mod:`omnirtp.recording.pcap`) in one buffer
and writes it with one ``os.write``.  The file header is written when the file is
opened, and each batch is whole records, so a daemon killed mid-call
leaves a file that readers take as it is.

Failures (the directory missing, no permission, a full disk) stop the
call's recording and nothing else: the error is logged once with the
call-id, counted (``errors``), the file is cut back to its last whole
record, and the call goes on unrecorded.

The engine talks to :class:`Recordings` only: the ``record`` key of
``IMediaEngine.configure`` (``{"path", "format", "paused"}`` or None).
"""

import collections
import errno
import os

from twisted.logger import Logger
from zope.interface import implementer

from omnirtp.interfaces import IPacketTransform
from omnirtp.recording import pcap

#: packets a recorder holds between flushes before a tap's ``rtp`` drops
#: (does not record) more; the inline path's sink is bounded by the interval
BUFFER_LIMIT = 20000
#: seconds between the first packet buffered and the flush that writes it
FLUSH_INTERVAL = 0.25

RECORD_KEYS = ("path", "format", "paused")

#: a tap's ``sink`` while its recorder is not recording: takes an item, keeps nothing
_DISCARD = collections.deque(maxlen=0).append


def check_params(params):
    """ValueError unless ``params`` is a valid ``record`` value (or None)."""
    if params is None:
        return
    if not isinstance(params, dict):
        raise ValueError("record must be a dict or None, got %r" % (params,))
    unknown = set(params) - set(RECORD_KEYS)
    if unknown:
        raise ValueError("record: unknown keys %s" % ", ".join(sorted(unknown)))
    path = params.get("path")
    if not isinstance(path, str) or not path:
        raise ValueError("record: path must be a non-empty string, got %r" % (path,))
    if params.get("format", "raw") not in pcap.FORMATS:
        raise ValueError("record: format must be one of %s, got %r"
                         % (", ".join(pcap.FORMATS), params.get("format")))
    if not isinstance(params.get("paused", False), bool):
        raise ValueError("record: paused must be a boolean")


class PcapRecorder:
    """One call's pcap file, written off the packet path.

    ``active`` is what a tap tests per packet: False while paused, after a
    failure and once closed.  ``buffer`` is appended to by the taps;
    :meth:`flush` empties it into the file."""

    log = Logger()

    def __init__(self, call_id, path, fmt, reactor, limit=BUFFER_LIMIT,
                 interval=FLUSH_INTERVAL, on_error=None, opener=os.open, writer=os.write):
        self.call_id = call_id
        self.path = path
        self.format = fmt
        self.limit = limit
        self.interval = interval
        self.buffer = []
        self.active = False
        self.scheduled = False
        #: the RecordTaps that feed this file (their ``sink`` follows the
        #: recorder's state: see :meth:`_sinks`)
        self.taps = []
        self.paused = False
        self.failed = None  # the error text once recording failed
        self.packets = 0  # written to the file
        self.dropped = 0  # not recorded: the buffer was full
        self.errors = 0
        self._reactor = reactor
        self._on_error = on_error
        self._open = opener
        self._write = writer
        self._fd = -1
        self._size = 0  # bytes of whole records in the file
        self._call = None

    def open(self):
        """Create the file and write its header; on failure the recorder
        stays inactive (logged and counted)."""
        try:
            self._fd = self._open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                  0o644)
        except OSError as e:
            self._fail(e)
            return
        self._emit(pcap.global_header(self.format))
        if self.failed is None:
            self.log.info("call {call_id}: recording to {path}", call_id=self.call_id,
                          path=self.path)
            self.set_paused(self.paused)

    def set_paused(self, paused):
        self.paused = paused
        self.active = self._fd >= 0 and self.failed is None and not paused
        self._sinks()

    def schedule(self):
        """Called by a tap that buffered the first packet since a flush."""
        self.scheduled = True
        self._call = self._reactor.callLater(self.interval, self.flush)
        self._sinks()

    def _first(self, item):
        """A tap's ``sink`` until something is buffered: buffers the item
        and schedules the flush (then the sinks append straight to the
        buffer)."""
        self.buffer.append(item)
        if not self.scheduled:
            self.schedule()

    def _sinks(self):
        """Point every tap's ``sink`` (what the poller's inline path hands
        ``(time, flow, datagram)`` to, one C call per packet when
        recording) at what the state asks for: nothing kept while not
        active (paused, failed, closed); :meth:`_first` while nothing is
        buffered; else ``buffer.append``.  Off the packet path: on a state
        change, the first packet after a flush, and the flush."""
        if not self.active:
            sink = _DISCARD
        elif self.scheduled:
            sink = self.buffer.append
        else:
            sink = self._first
        for tap in self.taps:
            tap.sink = sink

    def counters(self):
        return {"packets": self.packets, "buffered": len(self.buffer),
                "dropped": self.dropped, "errors": self.errors}

    def flush(self):
        """Write the buffered packets (off the packet path)."""
        self.scheduled = False
        self._call = None
        buffered, self.buffer = self.buffer, []
        self._sinks()
        if not buffered or self._fd < 0 or self.failed is not None:
            return
        records = bytearray()
        # (an item without a party address, which a forwarded packet always
        # has, or with one of the other family is skipped and counted)
        skipped = pcap.encode(buffered, records)
        self.dropped += skipped
        if self._emit(records):
            self.packets += len(buffered) - skipped

    def _emit(self, data):
        """Write ``data`` (whole records) whole; True if it was."""
        start = self._size
        try:
            self._write_all(memoryview(data))
        except OSError as e:
            return self._emit_failed(start, e)
        self._size = start + len(data)
        return True

    def _write_all(self, view):
        while view:
            n = self._write(self._fd, view)
            view = view[n:]

    def _emit_failed(self, size, error):
        try:
            os.ftruncate(self._fd, size)  # whole records only
        except OSError:
            pass
        self._fail(error)
        return False

    def _fail(self, error):
        if self.failed is not None:
            return
        self.failed = "%s (%s)" % (os.strerror(error.errno), errno.errorcode.get(
            error.errno, error.errno)) if error.errno else str(error)
        self.errors += 1
        self.active = False
        self.buffer = []
        self._sinks()
        self.log.error("call {call_id}: recording to {path} failed: {error}; "
                       "the call goes on unrecorded",
                       call_id=self.call_id, path=self.path, error=self.failed)
        if self._fd >= 0:
            self._close_fd()
        if self._on_error is not None:
            self._on_error(self)

    def _close_fd(self):
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._fd = -1

    def close(self):
        """Flush what is buffered and close the file."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self.flush()
        self.active = False
        self._sinks()
        if self._fd >= 0:
            self._close_fd()
            self.log.info("call {call_id}: recording {path} closed, {packets} packets",
                          call_id=self.call_id, path=self.path, packets=self.packets)


@implementer(IPacketTransform)
class RecordTap:
    """The ``IPacketTransform`` step that records what one socket receives.

    Returns the packet unchanged; appends ``(time, flow, packet)`` to the
    call's recorder while it is active.  ``time`` is the socket's
    ``last_packet``, stamped with the reactor's clock for this packet just
    before the pipeline runs; ``flow`` (:class:`omnirtp.recording.pcap.Flow`)
    is from the socket's party (its ``endpoint``) to the socket, made anew
    when the endpoint changes (an identity test per packet)."""

    name = "record"

    #: a socket whose only step this is appends to the recorder itself
    #: (``RelaySocket._tap``: ``RelaySocket`` calls :meth:`follow` and
    #: the poller ``sink``; see :class:`RecordTap`)
    inline_record = True

    __slots__ = ("recorder", "relay", "local", "flow", "sink", "inline_flow")

    def __init__(self, recorder, relay):
        self.recorder = recorder
        self.relay = relay
        self.local = relay.local
        self.flow = pcap.Flow(relay.endpoint, relay.local, recorder.format)
        #: the flow of what the socket's companion reads (see :meth:`follow`)
        self.inline_flow = self.flow
        #: the recorder's (see PcapRecorder._sinks)
        self.sink = _DISCARD
        recorder.taps.append(self)
        recorder._sinks()

    def follow(self, address):
        """The socket's connected companion reads from ``address`` now
        (``RelaySocket`` calls this off the packet path): what the poller's
        inline path hands to ``sink`` is recorded as from there."""
        if address != self.inline_flow.src:
            flow = self.flow
            self.inline_flow = flow if address == flow.src else pcap.Flow(
                address, self.local, self.recorder.format)

    def detach(self):
        """The socket is not recorded any more (or is gone)."""
        taps = self.recorder.taps
        if self in taps:
            taps.remove(self)
        self.sink = _DISCARD

    def rtp(self, data):
        rec = self.recorder
        if rec.active:
            buf = rec.buffer
            if len(buf) < rec.limit:
                relay = self.relay
                flow = self.flow
                if flow.src is not relay.endpoint:
                    flow = self.flow = pcap.Flow(relay.endpoint, self.local, rec.format)
                buf.append((relay.last_packet, flow, data))
                if not rec.scheduled:
                    rec.schedule()
            else:
                rec.dropped += 1
        return data

    rtcp = rtp

    def counters(self):
        return self.recorder.counters()


class Recordings:
    """The engine's recorders (one per recorded call) and taps (one per
    recorded socket), driven by the ``record`` key of ``configure``."""

    def __init__(self, reactor, limit=BUFFER_LIMIT, interval=FLUSH_INTERVAL):
        self._reactor = reactor
        self._limit = limit
        self._interval = interval
        self.recorders = {}  # call_id -> PcapRecorder
        self.taps = {}  # socket key -> RecordTap
        #: recordings that failed since the engine started (totals)
        self.errors = 0

    check = staticmethod(check_params)

    def _count_error(self, recorder):
        self.errors += 1

    def apply(self, call_id, relay, params):
        """Record ``relay`` into the call's file named in ``params`` (None:
        stop recording it).  True if the socket's steps changed."""
        local = relay.local
        tap = self.taps.get(local)
        if params is None:
            if tap is None:
                return False
            del self.taps[local]
            tap.detach()
            self._close_if_unused(call_id)
            return True
        rec = self.recorders.get(call_id)
        fmt = params.get("format", "raw")
        if rec is None or rec.path != params["path"] or rec.format != fmt:
            if rec is not None:
                rec.close()
            rec = PcapRecorder(call_id, params["path"], fmt, self._reactor, self._limit,
                               self._interval, on_error=self._count_error)
            rec.paused = bool(params.get("paused", False))
            self.recorders[call_id] = rec
            rec.open()
        else:
            rec.set_paused(bool(params.get("paused", False)))
        if tap is not None:
            if tap.recorder is rec:
                return False
            tap.detach()
        self.taps[local] = RecordTap(rec, relay)
        return True

    def steps(self, local):
        """The ``middle`` steps recording puts on socket ``local``."""
        tap = self.taps.get(local)
        return (tap,) if tap is not None else ()

    def _close_if_unused(self, call_id):
        rec = self.recorders.get(call_id)
        if rec is not None and not any(t.recorder is rec for t in self.taps.values()):
            del self.recorders[call_id]
            rec.close()

    def drop(self, call_id, local):
        """Socket ``local`` was released."""
        tap = self.taps.pop(local, None)
        if tap is not None:
            tap.detach()
            self._close_if_unused(call_id)

    def release(self, call_id):
        """The call's last port went: close its file."""
        rec = self.recorders.pop(call_id, None)
        if rec is not None:
            for key in [k for k, t in self.taps.items() if t.recorder is rec]:
                self.taps.pop(key).detach()
            rec.close()
