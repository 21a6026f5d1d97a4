"""Tests for call recording in the media plane: the pcap format
(omnirtp.recording.pcap), the buffered writer and the tap step
(omnirtp.recording.writer), and the engine's ``record`` key."""

import errno
import os
import random
import struct

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from omnirtp.interfaces import IPacketTransform
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.srtp import AES_CM_128_HMAC_SHA1_80, SrtpFactory, make_crypto
from omnirtp.recording import pcap
from omnirtp.recording.writer import PcapRecorder, RecordTap, check_params
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor
from omnirtp.test.test_pipeline import key, rtcp_rr, rtp, session

HOST = "127.0.0.1"
A = ("10.0.0.1", 5000)
B = ("10.0.0.2", 6000)

# What rtpengine 10.5 wrote (recording-format = eth) for a 172-byte RTP
# packet (PT 0, seq 0, ts 0, SSRC 0x1111, 160 bytes 0xff) from
# 127.0.0.1:53395 to its socket 127.0.0.1:31430, at 1796298763.052600:
# the record header, the fake Ethernet header, IPv4, UDP.
REFERENCE_RECORD_HEAD = bytes.fromhex(
    "0b58116b78cd0000d6000000d6000000"
    "0000000000000000000000000800"
    "450000c800000000401100007f0000017f000001"
    "d0937ac600b40000")
REFERENCE_PAYLOAD = struct.pack("!BBHII", 0x80, 0, 0, 0, 0x1111) + b"\xff" * 160


class PcapFormatTests(SynchronousTestCase):
    """Byte-exact headers, as rtpengine 10.5 writes them."""

    def test_global_header(self):
        self.assertEqual(pcap.global_header("eth"),
                         bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
        self.assertEqual(pcap.global_header("raw"),
                         bytes.fromhex("d4c3b2a1020004000000000000000000ffff000065000000"))

    def test_eth_record_matches_rtpengine(self):
        data = pcap.record(1796298763.0526, ("127.0.0.1", 53395), ("127.0.0.1", 31430),
                           REFERENCE_PAYLOAD, "eth")
        self.assertEqual(len(data), 16 + 214)
        self.assertEqual(data, REFERENCE_RECORD_HEAD + REFERENCE_PAYLOAD)

    def test_raw_record(self):
        data = pcap.record(1796298763.0526, ("127.0.0.1", 53395), ("127.0.0.1", 31430),
                           REFERENCE_PAYLOAD, "raw")
        self.assertEqual(data, bytes.fromhex("0b58116b78cd0000c8000000c8000000")
                         + REFERENCE_RECORD_HEAD[16 + 14:] + REFERENCE_PAYLOAD)

    def test_ipv6_frame(self):
        frame = pcap.frame(("::1", 5000), ("fd00::2", 30000), b"\x80" * 12, "eth")
        self.assertEqual(frame, (
            b"\x00" * 12 + b"\x86\xdd"
            + bytes.fromhex("60000000" "0014" "11" "40")
            + b"\x00" * 15 + b"\x01" + bytes.fromhex("fd00") + b"\x00" * 13 + b"\x02"
            + struct.pack("!HHHH", 5000, 30000, 20, 0) + b"\x80" * 12))

    def test_microsecond_rounding(self):
        data = pcap.record(10.9999996, ("10.0.0.1", 1), ("10.0.0.2", 2), b"", "raw")
        self.assertEqual(struct.unpack_from("<II", data), (11, 0))

    def test_reader_round_trip(self):
        records = [(100.25, A, (HOST, 30000), rtp(1)), (100.5, B, (HOST, 30002), rtp(2)),
                   (101.0, ("::1", 7), ("::1", 30004), rtcp_rr())]
        for fmt in ("eth", "raw"):
            data = pcap.global_header(fmt) + b"".join(pcap.record(*r, fmt) for r in records)
            reader = pcap.PcapReader(data)
            self.assertEqual(reader.linktype, pcap.FORMATS[fmt])
            self.assertEqual([(p.time, p.src, p.dst, p.payload) for p in reader], records)
            self.assertFalse(reader.truncated)

    def test_reader_truncated(self):
        """A file whose last record was cut off (a writer killed) reads up
        to its last whole record."""
        data = pcap.global_header("raw") + pcap.record(1.0, A, B, rtp(1), "raw")
        reader = pcap.PcapReader(data + pcap.record(2.0, A, B, rtp(2), "raw")[:-5])
        self.assertEqual([p.payload for p in reader], [rtp(1)])
        self.assertTrue(reader.truncated)

    def test_reader_rejects(self):
        self.assertRaises(pcap.PcapError, pcap.PcapReader, b"\x00" * 10)
        self.assertRaises(pcap.PcapError, pcap.PcapReader, b"\x0a\x0d\x0d\x0a" + b"\x00" * 30)

    def test_reader_big_endian_linux_cooked(self):
        body = pcap.frame(A, B, rtp(3), "raw")
        data = (struct.pack(">IHHiIII", pcap.MAGIC, 2, 4, 0, 0, 65535, pcap.LINKTYPE_LINUX_SLL)
                + struct.pack(">IIII", 5, 500000, 16 + len(body), 16 + len(body))
                + b"\x00" * 14 + b"\x08\x00" + body)
        [packet] = pcap.PcapReader(data)
        self.assertEqual((packet.time, packet.src, packet.dst, packet.payload),
                         (5.5, A, B, rtp(3)))


class _Relay:
    """What a tap reads of its socket."""

    def __init__(self, local, endpoint, now):
        self.local = local
        self.endpoint = endpoint
        self.last_packet = now


class RecorderTests(SynchronousTestCase):
    """PcapRecorder and RecordTap without an engine."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.dir = self.mktemp()
        os.mkdir(self.dir)
        self.path = os.path.join(self.dir, "c.pcap")
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def errors_logged(self):
        return [e for e in self.logged if e.get("log_level") is not None
                and e["log_level"].name == "error"]

    def read(self):
        with open(self.path, "rb") as f:
            return f.read()

    def test_tap_is_a_step(self):
        rec = PcapRecorder("c1", self.path, "raw", self.clock)
        tap = RecordTap(rec, _Relay((HOST, 30000), A, 0.0))
        self.assertTrue(verifyObject(IPacketTransform, tap))
        self.assertEqual(tap.counters(), {"packets": 0, "buffered": 0, "dropped": 0, "errors": 0})

    def test_buffered_then_flushed(self):
        rec = PcapRecorder("c1", self.path, "eth", self.clock, interval=0.25)
        rec.open()
        self.assertEqual(self.read(), pcap.global_header("eth"))
        relay = _Relay((HOST, 30000), A, 1000.0)
        tap = RecordTap(rec, relay)
        data = rtp(1)
        self.assertIs(tap.rtp(data), data)
        self.assertIs(tap.rtp(data), data)
        relay.last_packet = 1000.02
        self.assertEqual(tap.rtcp(rtcp_rr()), rtcp_rr())
        # nothing written on the packet path
        self.assertEqual(self.read(), pcap.global_header("eth"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.25)
        self.assertEqual(self.read(), pcap.global_header("eth")
                         + pcap.record(1000.0, A, (HOST, 30000), rtp(1), "eth")
                         + pcap.record(1000.0, A, (HOST, 30000), rtp(1), "eth")
                         + pcap.record(1000.02, A, (HOST, 30000), rtcp_rr(), "eth"))
        self.assertEqual(rec.counters(), {"packets": 3, "buffered": 0, "dropped": 0, "errors": 0})
        rec.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_many_packets_batched(self):
        """More records than one writev takes: the file is all of them, in order."""
        rec = PcapRecorder("c1", self.path, "raw", self.clock)
        rec.open()
        relay = _Relay((HOST, 30000), A, 1000.0)
        tap = RecordTap(rec, relay)
        for n in range(1000):
            relay.last_packet = 1000.0 + n * 0.02
            tap.rtp(rtp(n, payload=b"\x01" * (n % 7)))
        rec.close()
        self.assertEqual(self.read(), pcap.global_header("raw") + b"".join(
            pcap.record(1000.0 + n * 0.02, A, (HOST, 30000), rtp(n, payload=b"\x01" * (n % 7)),
                        "raw") for n in range(1000)))
        self.assertEqual(rec.counters(), {"packets": 1000, "buffered": 0, "dropped": 0,
                                          "errors": 0})

    def test_endpoint_change(self):
        """A socket that learns a new endpoint records the new source."""
        rec = PcapRecorder("c1", self.path, "raw", self.clock)
        rec.open()
        relay = _Relay((HOST, 30000), A, 1000.0)
        tap = RecordTap(rec, relay)
        tap.rtp(rtp(1))
        relay.endpoint = B
        tap.rtp(rtp(2))
        rec.close()
        self.assertEqual([(p.src, p.dst) for p in pcap.PcapReader(self.read())],
                         [(A, (HOST, 30000)), (B, (HOST, 30000))])

    def test_bounded(self):
        rec = PcapRecorder("c1", self.path, "raw", self.clock, limit=2)
        rec.open()
        tap = RecordTap(rec, _Relay((HOST, 30000), A, 1000.0))
        for n in range(5):
            tap.rtp(rtp(n))
        self.assertEqual((len(rec.buffer), rec.dropped), (2, 3))
        rec.close()
        self.assertEqual([p.payload for p in pcap.PcapReader(self.read())], [rtp(0), rtp(1)])

    def test_paused(self):
        rec = PcapRecorder("c1", self.path, "raw", self.clock)
        rec.paused = True
        rec.open()
        tap = RecordTap(rec, _Relay((HOST, 30000), A, 1000.0))
        tap.rtp(rtp(1))
        rec.set_paused(False)
        tap.rtp(rtp(2))
        rec.close()
        self.assertEqual([p.payload for p in pcap.PcapReader(self.read())], [rtp(2)])

    def test_sink_follows_the_recorder(self):
        """A tap's ``sink`` (what the poller's inline path hands items to):
        keeps nothing until the file is open; buffers and schedules the
        flush for the first item; then appends straight to the buffer,
        until the flush; keeps nothing while paused or once closed."""
        rec = PcapRecorder("c1", self.path, "raw", self.clock, interval=0.25)
        relay = _Relay((HOST, 30000), A, 1000.0)
        tap = RecordTap(rec, relay)
        flow = tap.inline_flow
        tap.sink((1000.0, flow, rtp(0)))
        self.assertEqual((rec.buffer, self.clock.getDelayedCalls()), ([], []))
        rec.open()
        self.assertEqual(tap.sink, rec._first)
        tap.sink((1000.0, flow, rtp(1)))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(tap.sink, rec.buffer.append)
        tap.sink((1000.0, flow, rtp(2)))
        self.assertEqual(len(rec.buffer), 2)
        self.clock.advance(0.25)
        self.assertEqual((rec.buffer, rec.packets, tap.sink), ([], 2, rec._first))
        rec.set_paused(True)
        tap.sink((1000.5, flow, rtp(3)))
        self.assertEqual((rec.buffer, self.clock.getDelayedCalls()), ([], []))
        rec.set_paused(False)
        tap.sink((1000.6, flow, rtp(4)))
        second = RecordTap(rec, _Relay((HOST, 30002), B, 1000.0))
        self.assertEqual(second.sink, rec.buffer.append)
        second.sink((1000.6, second.inline_flow, rtp(5)))
        second.detach()
        second.sink((1000.7, second.inline_flow, rtp(6)))
        self.assertEqual(rec.taps, [tap])
        rec.close()
        tap.sink((1000.8, flow, rtp(7)))
        self.assertEqual(rec.buffer, [])
        self.assertEqual([(p.time, p.src, p.payload) for p in pcap.PcapReader(self.read())],
                         [(1000.0, A, rtp(1)), (1000.0, A, rtp(2)), (1000.6, A, rtp(4)),
                          (1000.6, B, rtp(5))])

    def test_follow(self):
        """``follow(address)``: items handed to the sink with the tap's
        ``inline_flow`` are recorded from ``address`` (the flow of the full
        path is reused when it names the same address)."""
        rec = PcapRecorder("c1", self.path, "raw", self.clock)
        rec.open()
        tap = RecordTap(rec, _Relay((HOST, 30000), A, 1000.0))
        tap.follow(A)
        self.assertIs(tap.inline_flow, tap.flow)
        tap.sink((1000.0, tap.inline_flow, rtp(1)))
        tap.follow(B)
        self.assertEqual((tap.inline_flow.src, tap.inline_flow.dst), (B, (HOST, 30000)))
        tap.sink((1000.1, tap.inline_flow, rtp(2)))
        tap.follow(None)  # the companion went: nothing inline is recorded
        tap.sink((1000.2, tap.inline_flow, rtp(3)))
        rec.close()
        self.assertEqual([(p.src, p.payload) for p in pcap.PcapReader(self.read())],
                         [(A, rtp(1)), (B, rtp(2))])
        self.assertEqual(rec.dropped, 1)

    def test_missing_directory(self):
        errors = []
        rec = PcapRecorder("call-x", os.path.join(self.dir, "nope", "c.pcap"), "raw", self.clock,
                           on_error=errors.append)
        rec.open()
        self.assertFalse(rec.active)
        self.assertEqual((errors, rec.errors), ([rec], 1))
        [event] = self.errors_logged()
        self.assertEqual((event["call_id"], event["error"]),
                         ("call-x", "No such file or directory (ENOENT)"))
        tap = RecordTap(rec, _Relay((HOST, 30000), A, 1000.0))
        self.assertEqual(tap.rtp(rtp(1)), rtp(1))
        self.assertEqual((rec.buffer, self.clock.getDelayedCalls()), ([], []))

    def test_disk_full(self):
        """ENOSPC: the file keeps its whole records, the error is logged once."""
        budget = [24 + 2 * (16 + 28 + 172) + 100]

        def writer(fd, data):
            if budget[0] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = min(len(data), budget[0])
            budget[0] -= n
            return os.write(fd, data[:n])

        errors = []
        rec = PcapRecorder("c1", self.path, "raw", self.clock, writer=writer,
                           on_error=errors.append)
        rec.open()
        tap = RecordTap(rec, _Relay((HOST, 30000), A, 1000.0))
        tap.rtp(rtp(1))
        tap.rtp(rtp(2))
        self.clock.advance(1)
        for n in range(3, 10):
            tap.rtp(rtp(n))
        self.clock.advance(1)
        tap.rtp(rtp(11))
        self.clock.advance(1)
        rec.close()
        self.assertEqual((rec.errors, len(errors), rec.packets, rec.active), (1, 1, 2, False))
        self.assertEqual(len(self.errors_logged()), 1)
        self.assertEqual(self.errors_logged()[0]["error"], "No space left on device (ENOSPC)")
        reader = pcap.PcapReader(self.read())
        self.assertEqual([p.payload for p in reader], [rtp(1), rtp(2)])
        self.assertFalse(reader.truncated)

    def test_check_params(self):
        check_params(None)
        check_params({"path": "/x.pcap", "format": "eth", "paused": False})
        for bad in ("x", {"path": ""}, {"path": "/x", "format": "pcapng"},
                    {"path": "/x", "paused": "yes"}, {"path": "/x", "other": 1}):
            self.assertRaises(ValueError, check_params, bad)


class EngineRecordTests(SynchronousTestCase):
    """The ``record`` key of EmbeddedEngine.configure."""

    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(500.0)
        self.net = FakeNetwork()
        self.engine = EmbeddedEngine(self.reactor, {HOST: (30000, 30009)}, bind=self.net.bind,
                                     rng=random.Random(4), transforms={"srtp": SrtpFactory()})
        self.a, self.b = self.successResultOf(self.engine.allocate("c1", HOST, 2))
        self.dir = self.mktemp()
        os.mkdir(self.dir)
        self.path = os.path.join(self.dir, "c1.pcap")

    def entries(self, a_extra=None, **extra):
        a, b = self.a, self.b
        base = dict({"learning": "off", "reset": True}, **extra)
        a_extra = a_extra or {}
        return [
            dict(base, local=(HOST, a), peer=(HOST, b), endpoint=A, **a_extra),
            dict(base, local=(HOST, a + 1), peer=(HOST, b + 1), endpoint=(A[0], A[1] + 1),
                 **a_extra),
            dict(base, local=(HOST, b), peer=(HOST, a), endpoint=B),
            dict(base, local=(HOST, b + 1), peer=(HOST, a + 1), endpoint=(B[0], B[1] + 1)),
        ]

    def configure(self, entries):
        return self.successResultOf(self.engine.configure("c1", entries))

    def deliver(self, sock, data, src, at=0.0):
        self.reactor.advance(at)
        self.net.inject(sock, data, src)
        self.net.pump(self.reactor)

    def recorded(self):
        with open(self.path, "rb") as f:
            return [(p.time, p.src, p.dst, p.payload) for p in pcap.PcapReader(f.read())]

    def test_srtp_leg_recorded_in_the_clear(self):
        """A on SRTP, B plain: both directions recorded as plain RTP/RTCP,
        from the party to the socket it sent to; relaying unchanged."""
        suite = AES_CM_128_HMAC_SHA1_80
        crypto_a, crypto_to_a = make_crypto(suite, key(suite, 1)), make_crypto(suite, key(suite, 2))
        record = {"path": self.path, "format": "eth"}
        self.configure(self.entries({"srtp_in": crypto_a, "srtp_out": crypto_to_a},
                                    record=record))
        a_tx = session(suite, key(suite, 1), outbound=True)
        a, b = self.a, self.b
        self.deliver((HOST, a), a_tx.protect(rtp(1)), A, at=0.5)
        self.deliver((HOST, b), rtp(7, ssrc=0xB0B0B0B0), B, at=0.02)
        self.deliver((HOST, a + 1), a_tx.protect_rtcp(rtcp_rr()), (A[0], A[1] + 1), at=0.01)
        self.assertEqual(self.net.sent_to(B), [(rtp(1), (HOST, b))])
        self.assertEqual(len(self.net.sent_to(A)), 1)
        self.reactor.advance(1.0)
        self.assertEqual(self.recorded(), [
            (500.5, A, (HOST, a), rtp(1)),
            (500.52, B, (HOST, b), rtp(7, ssrc=0xB0B0B0B0)),
            (500.53, (A[0], A[1] + 1), (HOST, a + 1), rtcp_rr()),
        ])
        stats = self.successResultOf(self.engine.stats("c1"))["c1"]
        self.assertEqual(stats[(HOST, b)]["transforms"]["record"],
                         {"packets": 3, "buffered": 0, "dropped": 0, "errors": 0})

    def test_record_only_entry_keeps_the_rest(self):
        self.configure(self.entries())
        a, b = self.a, self.b
        self.deliver((HOST, a), rtp(1), A)
        self.configure([{"local": (HOST, k), "record": {"path": self.path, "format": "raw"}}
                        for k in (a, a + 1, b, b + 1)])
        self.deliver((HOST, a), rtp(2), A, at=1.0)
        self.assertEqual([d for d, _ in self.net.sent_to(B)], [rtp(1), rtp(2)])
        # stop: record None everywhere closes the file with what was buffered
        self.configure([{"local": (HOST, k), "record": None} for k in (a, a + 1, b, b + 1)])
        self.assertEqual(self.recorded(), [(501.0, A, (HOST, a), rtp(2))])
        self.assertIsNone(self.engine.socket((HOST, a)).pipeline)
        self.deliver((HOST, a), rtp(3), A, at=1.0)
        self.assertEqual([d for d, _ in self.net.sent_to(B)], [rtp(1), rtp(2), rtp(3)])
        self.assertEqual(self.engine._recordings.recorders, {})

    def test_pause_and_resume(self):
        a = self.a
        self.configure(self.entries(record={"path": self.path, "format": "raw"}))
        self.deliver((HOST, a), rtp(1), A)
        self.configure(self.entries(record={"path": self.path, "format": "raw", "paused": True}))
        self.deliver((HOST, a), rtp(2), A)
        self.configure(self.entries(record={"path": self.path, "format": "raw"}))
        self.deliver((HOST, a), rtp(3), A)
        self.successResultOf(self.engine.release("c1"))
        self.assertEqual([r[3] for r in self.recorded()], [rtp(1), rtp(3)])

    def test_release_flushes(self):
        self.configure(self.entries(record={"path": self.path, "format": "raw"}))
        self.deliver((HOST, self.a), rtp(1), A)
        self.successResultOf(self.engine.release("c1"))
        self.assertEqual([r[3] for r in self.recorded()], [rtp(1)])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_unwritable_directory_call_goes_on(self):
        bad = os.path.join(self.dir, "missing", "c1.pcap")
        self.configure(self.entries(record={"path": bad, "format": "raw"}))
        self.deliver((HOST, self.a), rtp(1), A)
        self.assertEqual([d for d, _ in self.net.sent_to(B)], [rtp(1)])
        totals = self.successResultOf(self.engine.totals())
        self.assertEqual(totals["recording_errors"], 1)
        self.assertFalse(os.path.exists(bad))
        self.flushLoggedErrors()

    def test_bad_record_changes_nothing(self):
        entries = self.entries(record={"path": self.path, "format": "pcapng"})
        self.failureResultOf(self.engine.configure("c1", entries), ValueError)
        self.assertIsNone(self.engine.socket((HOST, self.a)).peer)
        self.assertFalse(os.path.exists(self.path))


class EncoderTests(SynchronousTestCase):

    def test_same_as_record(self):
        """pcap.encode over Flows gives what pcap.record gives, for IPv4 and
        IPv6, both formats, a payload length seen again, an empty one, and
        runs of items with the same time (one poller wakeup's packets)."""
        items = [(1796298763.0526, ("127.0.0.1", 53395), ("127.0.0.1", 31430), b"x" * 172),
                 (1796298763.0526, B, A, b"v" * 172),
                 (5.9999999, ("::1", 5), ("fd00::2", 7), b"y" * 20),
                 (7.25, A, B, b""), (8.0, A, B, b"z"), (8.5, A, B, b"w"), (8.5, B, A, b"u"),
                 (8.5, A, B, b"t"), (8.0, A, B, b"s")]
        for fmt in ("eth", "raw"):
            flows = {}
            encoded = []
            for when, src, dst, payload in items:
                flow = flows.setdefault((src, dst), pcap.Flow(src, dst, fmt))
                encoded.append((when, flow, payload))
            bad = [(9.0, pcap.Flow(None, B, fmt), b"q"), (9.0, pcap.Flow(("::1", 5), B, fmt), b"q")]
            out = bytearray()
            self.assertEqual(pcap.encode(encoded + bad, out), 2)
            self.assertEqual(bytes(out), b"".join(pcap.record(*i, fmt) for i in items))
