"""The control plane's side of call recording: the spool directory, file
names, the metadata file and the ``record`` entries for the media engine.

Layout and names as rtpengine 10.5's pcap method (ng-spec §7, checked
against Debian's 10.5 on loopback)::

    <recording-dir>/pcaps/<call-id>-<16 hex>.pcap                  (media engine)
    <recording-dir>/tmp/rtpengine-meta-<call-id>-<16 hex>.tmp      (during the call)
    <recording-dir>/metadata/rtpengine-meta-<call-id>-<16 hex>.txt (renamed at the end)

``<call-id>`` is URL-escaped (everything but ``A-Za-z0-9-._~``).  The
metadata file holds the pcap path and two empty lines, then for every
offer/answer processed while recording a block ``Timestamp started ms:``,
``SDP mode:``, ``SDP before RTP packet:`` (packets in the pcap so far +
1), an empty line and the SDP that was sent out; at the end
``Timestamp terminated ms(first monologue):`` (0.000 when recording stops
before the call ends), an empty line, ``call start time:`` and ``call end
time:`` (local time), and the call's ``metadata`` string after two empty
lines when there is one.  It is written to ``tmp/`` while the call runs
and moved into ``metadata/`` with one ``rename`` when the recording ends,
so a reader of ``metadata/`` never sees a partial file.

A recording that cannot be written (no directory, no permission, a full
disk) is logged once with the call-id and counted (``errors``); the call
goes on unrecorded.
"""

import binascii
import os
import time
from urllib.parse import quote

from twisted.logger import Logger

from omnirtp.errors import ConfigError

SUBDIRS = ("metadata", "pcaps", "tmp")


def escape(call_id):
    """The call-id as it appears in file names."""
    return quote(call_id, safe="")


def _local(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))


class CallRecording:
    """One recording of one call (a new one after each stop)."""

    def __init__(self, pcap_path, meta_tmp, meta_final, fmt):
        self.pcap_path = pcap_path
        self.meta_tmp = meta_tmp
        self.meta_final = meta_final
        self.format = fmt
        self.paused = False
        self.failed = False

    def params(self):
        """The ``record`` value of the engine's configure entries."""
        return {"path": self.pcap_path, "format": self.format, "paused": self.paused}


class Spool:
    """Recordings of this daemon under ``directory`` (None: recording is
    not configured, requests for it are logged and ignored)."""

    log = Logger()

    def __init__(self, directory, fmt="raw", clock=None, random_bytes=os.urandom):
        self.directory = directory
        self.format = fmt
        self._clock = clock
        self._random = random_bytes
        #: recordings that failed in the control plane (metadata files)
        self.errors = 0

    def now(self):
        return self._clock.seconds() if self._clock is not None else time.time()

    def prepare(self):
        """Create the spool directory (mode 0700) and its ``metadata``,
        ``pcaps`` and ``tmp`` directories if missing (startup); ConfigError
        if that fails."""
        if self.directory is None:
            return
        for path in (self.directory,) + tuple(os.path.join(self.directory, d) for d in SUBDIRS):
            if os.path.isdir(path):
                continue
            try:
                os.mkdir(path, 0o700)
            except OSError as e:
                raise ConfigError("recording-dir: cannot create %s: %s" % (path, e.strerror))
            self.log.info("created recording directory {path}", path=path)

    # -- per call ----------------------------------------------------------

    def start(self, call):
        """Start (or resume) recording ``call``; returns its CallRecording,
        or None when recording is not possible (logged)."""
        rec = getattr(call, "recording", None)
        if rec is not None:
            rec.paused = False
            return rec
        if self.directory is None:
            self.log.error("call {call_id}: call recording requested, but no recording-dir "
                           "is configured", call_id=call.call_id)
            return None
        name = "%s-%s" % (escape(call.call_id), binascii.hexlify(self._random(8)).decode())
        d = self.directory
        rec = CallRecording(os.path.join(d, "pcaps", name + ".pcap"),
                            os.path.join(d, "tmp", "rtpengine-meta-%s.tmp" % name),
                            os.path.join(d, "metadata", "rtpengine-meta-%s.txt" % name),
                            self.format)
        call.recording = rec
        self.log.info("call {call_id}: recording to {path}", call_id=call.call_id,
                      path=rec.pcap_path)
        self._append(call, rec, "%s\n\n\n" % rec.pcap_path, "w")
        return rec

    def pause(self, call):
        rec = getattr(call, "recording", None)
        if rec is not None:
            rec.paused = True
        return rec

    def sdp(self, call, mode, sdp, packets_so_far):
        """Note the SDP sent out for an offer or answer (``mode``)."""
        rec = getattr(call, "recording", None)
        if rec is None:
            return
        self._append(call, rec, "Timestamp started ms: %.3f\nSDP mode: %s\n"
                     "SDP before RTP packet: %d\n\n%s\n"
                     % (self.now() * 1000.0, mode, packets_so_far + 1, sdp))

    def finish(self, call, terminated=False, discard=False):
        """End ``call``'s recording: complete the metadata file and move it
        to ``metadata/`` (or, with ``discard``, delete both files).  The
        caller stops the engine's recording (``record: None``) or releases
        the call's ports."""
        rec = getattr(call, "recording", None)
        if rec is None:
            return None
        call.recording = None
        if discard:
            for path in (rec.meta_tmp, rec.pcap_path):
                try:
                    os.unlink(path)
                except OSError:
                    pass
            self.log.info("call {call_id}: recording discarded", call_id=call.call_id)
            return rec
        now = self.now()
        tail = "Timestamp terminated ms(first monologue): %.3f\n\ncall start time: %s\n" \
               "call end time: %s\n" % (now * 1000.0 if terminated else 0.0,
                                        _local(call.created), _local(now))
        if call.metadata:
            tail += "\n\n%s\n" % (call.metadata,)
        if self._append(call, rec, tail):
            try:
                os.rename(rec.meta_tmp, rec.meta_final)
            except OSError as e:
                self._fail(call, rec, rec.meta_final, e)
        return rec

    def _append(self, call, rec, text, mode="a"):
        if rec.failed:
            return False
        try:
            with open(rec.meta_tmp, mode, encoding="utf-8", errors="surrogateescape",
                      newline="") as f:
                f.write(text)
        except OSError as e:
            self._fail(call, rec, rec.meta_tmp, e)
            return False
        return True

    def _fail(self, call, rec, path, error):
        rec.failed = True
        self.errors += 1
        self.log.error("call {call_id}: recording metadata {path} failed: {error}; the call "
                       "goes on", call_id=call.call_id, path=path, error=error.strerror or error)

    # -- the engine's side ---------------------------------------------------

    @staticmethod
    def entries(call, record):
        """Record-only configure entries (``local`` and ``record``) for
        every socket of ``call``."""
        out = []
        for ml in call.monologues:
            for m in ml.port_medias():
                out.append({"local": m.rtp_key, "record": record})
                out.append({"local": m.rtcp_key, "record": record})
        return out


def packets_recorded(stats):
    """Packets in the call's pcap so far (written or buffered), from the
    engine's ``stats()`` of one call (every recorded socket reports the
    call's recorder)."""
    for counters in stats.values():
        rec = counters.get("transforms", {}).get("record")
        if rec is not None:
            return rec.get("packets", 0) + rec.get("buffered", 0)
    return 0
