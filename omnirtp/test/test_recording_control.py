"""Call recording through ng: ``record call`` in offer/answer, ``start /
stop / pause recording``, the spool's names and metadata file; the control
plane over a real EmbeddedEngine on fake sockets (omnirtp.test.fakes)."""

import os
import random
import re
import time

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.call.negotiate import Interfaces, Negotiator
from omnirtp.call.registry import CallRegistry, Timeouts
from omnirtp.config.model import InterfaceSpec
from omnirtp.control.commands import Dispatcher
from omnirtp.errors import E_NO_CALL_ID, E_UNKNOWN_CALL, ConfigError, NGError
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.recording import pcap
from omnirtp.recording.spool import Spool, escape
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor
from omnirtp.test.test_pipeline import rtp

HOST = "127.0.0.1"
A = ("10.0.0.1", 5000)
B = ("10.0.0.2", 6000)
START = 1700000000.0


def sdp(party, session):
    return ("v=0\r\no=- %d 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\na=sendrecv\r\n" % (session, party[0], party[0], party[1]))


def local(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))


class RecordingControlTests(SynchronousTestCase):

    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(START)
        self.net = FakeNetwork()
        self.engine = EmbeddedEngine(self.reactor, {HOST: (30000, 30019)}, bind=self.net.bind,
                                     rng=random.Random(3), transforms={})
        self.registry = CallRegistry(self.engine, self.reactor,
                                     Timeouts(timeout=60, delete_delay=0))
        self.negotiator = Negotiator(self.registry, Interfaces([InterfaceSpec("d", HOST, None)]))
        self.dir = os.path.abspath(self.mktemp())
        counter = iter(range(1, 100))
        self.spool = Spool(self.dir, "eth", clock=self.reactor,
                           random_bytes=lambda n: bytes([next(counter)] * n))
        self.spool.prepare()
        self.registry.on_end.append(lambda call: self.spool.finish(call, terminated=True))
        self.dispatch = Dispatcher(self.registry, self.negotiator, delete_delay=0,
                                   recording=self.spool)
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def call(self, **request):
        request = {k.replace("_", "-"): v for k, v in request.items()}
        return self.successResultOf(self.dispatch(request))

    def fails(self, **request):
        request = {k.replace("_", "-"): v for k, v in request.items()}
        return self.failureResultOf(self.dispatch(request), NGError).value

    def setup_call(self, call_id="rec call/1@x", offer_extra=None, answer_extra=None):
        offer = self.call(command="offer", call_id=call_id, from_tag="ft", sdp=sdp(A, 1),
                          **(offer_extra or {}))
        answer = self.call(command="answer", call_id=call_id, from_tag="ft", to_tag="tt",
                           sdp=sdp(B, 2), **(answer_extra or {}))
        # the port advertised to B (B sends to it) and to A
        self.to_b = (HOST, int(re.search(r"m=audio (\d+)", offer["sdp"]).group(1)))
        self.to_a = (HOST, int(re.search(r"m=audio (\d+)", answer["sdp"]).group(1)))
        return offer, answer

    def media(self, seq, at=0.02):
        """A sends RTP to the socket it was told about (to_a), B to to_b."""
        self.reactor.advance(at)
        self.net.inject(self.to_a, rtp(seq, ssrc=0xAAAA), A)
        self.net.inject(self.to_b, rtp(seq, ssrc=0xBBBB), B)
        self.net.pump(self.reactor)

    def name(self, call_id, n):
        return "%s-%s" % (escape(call_id), ("%02x" % n) * 8)

    def pcap_path(self, call_id="rec call/1@x", n=1):
        return os.path.join(self.dir, "pcaps", self.name(call_id, n) + ".pcap")

    def meta_path(self, call_id="rec call/1@x", n=1):
        return os.path.join(self.dir, "metadata", "rtpengine-meta-%s.txt" % self.name(call_id, n))

    def packets(self, path):
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(data[:24], pcap.global_header("eth"))
        return [(p.time, p.src, p.dst, p.payload) for p in pcap.PcapReader(data)]

    def errors_logged(self):
        return [e for e in self.logged if e.get("log_level") is not None
                and e["log_level"].name == "error"]

    def test_dirs_and_names(self):
        self.assertEqual(sorted(os.listdir(self.dir)), ["metadata", "pcaps", "tmp"])
        self.assertEqual(os.stat(os.path.join(self.dir, "pcaps")).st_mode & 0o777, 0o700)
        self.assertEqual(escape("rec call/1@x"), "rec%20call%2F1%40x")
        self.assertEqual(escape("a-b_c.d~e"), "a-b_c.d~e")

    def test_prepare_fails(self):
        blocker = self.mktemp()
        open(blocker, "w").close()
        spool = Spool(os.path.join(blocker, "spool"))
        self.assertRaises(ConfigError, spool.prepare)

    def test_record_call_flag(self):
        """offer with the record-call flag: both directions in one pcap, the
        metadata file (offer and answer SDPs) moved to metadata/ at the end."""
        offer, answer = self.setup_call(offer_extra={"flags": ["record-call"],
                                                     "metadata": "k:v|x:y"})
        path = self.pcap_path()
        self.assertEqual((offer["recordings"], answer["recordings"]), ([path], [path]))
        tmp = os.path.join(self.dir, "tmp", "rtpengine-meta-%s.tmp" % self.name("rec call/1@x", 1))
        self.assertTrue(os.path.exists(tmp))
        self.media(0)
        self.media(1)
        self.reactor.advance(1)
        self.call(command="delete", call_id="rec call/1@x")
        # (the fake network reads the two sockets in either order)
        self.assertEqual(sorted(self.packets(path)), [
            (START + 0.02, A, self.to_a, rtp(0, ssrc=0xAAAA)),
            (START + 0.02, B, self.to_b, rtp(0, ssrc=0xBBBB)),
            (START + 0.04, A, self.to_a, rtp(1, ssrc=0xAAAA)),
            (START + 0.04, B, self.to_b, rtp(1, ssrc=0xBBBB)),
        ])
        self.assertEqual(os.listdir(os.path.join(self.dir, "tmp")), [])
        with open(self.meta_path(), newline="") as f:
            meta = f.read()
        self.assertEqual(meta, (
            "%s\n\n\n"
            "Timestamp started ms: %.3f\nSDP mode: offer\nSDP before RTP packet: 1\n\n%s\n"
            "Timestamp started ms: %.3f\nSDP mode: answer\nSDP before RTP packet: 1\n\n%s\n"
            "Timestamp terminated ms(first monologue): %.3f\n\n"
            "call start time: %s\ncall end time: %s\n\n\nk:v|x:y\n"
            % (path, START * 1000, offer["sdp"], START * 1000, answer["sdp"],
               (START + 1.04) * 1000, local(START), local(START + 1.04))))

    def test_record_call_key_in_answer(self):
        offer, answer = self.setup_call(answer_extra={"record call": "yes"})
        self.assertNotIn("recordings", offer)
        self.assertEqual(answer["recordings"], [self.pcap_path()])
        self.media(0)
        self.call(command="offer", call_id="rec call/1@x", from_tag="ft", sdp=sdp(A, 1))
        self.reactor.advance(1)
        self.call(command="delete", call_id="rec call/1@x")
        with open(self.meta_path(), newline="") as f:
            meta = f.read()
        self.assertEqual(meta.count("SDP mode: "), 2)
        self.assertIn("SDP mode: offer\nSDP before RTP packet: 3\n", meta)
        self.assertTrue(meta.endswith("call end time: %s\n" % local(START + 1.02)))

    def test_start_pause_stop(self):
        """start/pause/stop recording on a running call; stop writes the
        metadata (terminated 0.000), a new start makes a new file."""
        self.setup_call()
        self.media(0)
        self.assertEqual(self.call(command="start recording", call_id="rec call/1@x"),
                         {"result": "ok"})
        self.media(1)
        self.assertEqual(self.call(command="pause recording", call_id="rec call/1@x"),
                         {"result": "ok"})
        self.media(2)
        self.call(command="start recording", call_id="rec call/1@x")
        self.media(3)
        self.call(command="stop recording", call_id="rec call/1@x", pause="yes")
        self.media(4)
        self.call(command="start recording", call_id="rec call/1@x")
        self.media(5)
        self.call(command="stop recording", call_id="rec call/1@x")
        self.media(6)
        self.assertEqual([(p[0], p[3][2:4]) for p in self.packets(self.pcap_path())],
                         [(START + t, bytes([0, n])) for t, n in
                          ((0.04, 1), (0.04, 1), (0.08, 3), (0.08, 3), (0.12, 5), (0.12, 5))])
        with open(self.meta_path(), newline="") as f:
            self.assertEqual(f.read(), (
                "%s\n\n\nTimestamp terminated ms(first monologue): 0.000\n\n"
                "call start time: %s\ncall end time: %s\n"
                % (self.pcap_path(), local(START), local(START + 0.12))))
        # every socket's pipeline is gone with the recording
        for key in (self.to_a, self.to_b):
            self.assertIsNone(self.engine.socket(key).pipeline)
        offer = self.call(command="start recording", call_id="rec call/1@x")
        self.media(7)
        self.call(command="delete", call_id="rec call/1@x")
        self.assertEqual([p[3][2:4] for p in self.packets(self.pcap_path(n=2))],
                         [b"\x00\x07", b"\x00\x07"])
        self.assertEqual(offer, {"result": "ok"})
        self.assertTrue(os.path.exists(self.meta_path(n=2)))

    def test_discard(self):
        self.setup_call(offer_extra={"flags": ["record-call"]})
        self.media(0)
        self.call(command="stop recording", call_id="rec call/1@x", flags=["discard-recording"])
        self.assertEqual([os.listdir(os.path.join(self.dir, d)) for d in ("metadata", "pcaps",
                                                                          "tmp")], [[], [], []])

    def test_record_call_no(self):
        self.setup_call(offer_extra={"flags": ["record-call"]})
        answer = self.call(command="answer", call_id="rec call/1@x", from_tag="ft", to_tag="tt",
                           sdp=sdp(B, 2), record_call="no")
        self.assertNotIn("recordings", answer)
        self.assertTrue(os.path.exists(self.meta_path()))

    def test_errors(self):
        self.assertEqual(self.fails(command="start recording").args[0], E_NO_CALL_ID)
        self.assertEqual(self.fails(command="stop recording", call_id="zz").args[0],
                         E_UNKNOWN_CALL)
        self.assertEqual(self.fails(command="pause recording", call_id="zz").args[0],
                         E_UNKNOWN_CALL)

    def test_statistics_counts(self):
        self.setup_call()
        self.call(command="start recording", call_id="rec call/1@x")
        self.call(command="stop recording", call_id="rec call/1@x")
        stats = self.call(command="statistics")["statistics"]
        control = stats["controlstatistics"]
        self.assertEqual((control["totalstartreccount"], control["totalstopreccount"]), (1, 1))
        self.assertEqual(stats["totalstatistics"]["recordingerrors"], 0)

    def test_missing_pcaps_directory(self):
        """pcaps/ gone: the call goes on unrecorded, logged once with the
        call-id, counted in statistics; another call is not affected."""
        os.rmdir(os.path.join(self.dir, "pcaps"))
        self.setup_call(offer_extra={"flags": ["record-call"]})
        self.media(0)
        self.media(1)
        self.assertEqual(len([d for d, _ in self.net.sent_to(B)]), 2)
        [event] = self.errors_logged()
        self.assertEqual(event["call_id"], "rec call/1@x")
        stats = self.call(command="statistics")["statistics"]
        self.assertEqual(stats["totalstatistics"]["recordingerrors"], 1)
        self.call(command="delete", call_id="rec call/1@x")
        # the metadata file still names the pcap that could not be written
        self.assertTrue(os.path.exists(self.meta_path()))

    def test_metadata_unwritable(self):
        os.rmdir(os.path.join(self.dir, "tmp"))
        self.setup_call(offer_extra={"flags": ["record-call"]})
        self.media(0)
        self.call(command="delete", call_id="rec call/1@x")
        self.assertEqual(len(self.errors_logged()), 1)
        self.assertEqual(self.spool.errors, 1)
        self.assertEqual(len(self.packets(self.pcap_path())), 2)

    def test_not_configured(self):
        self.dispatch.recording = None
        offer, answer = self.setup_call(offer_extra={"flags": ["record-call"]})
        self.assertNotIn("recordings", offer)
        self.call(command="start recording", call_id="rec call/1@x")
        self.assertEqual(len(self.errors_logged()), 1)
        stats = self.call(command="statistics")["statistics"]
        self.assertNotIn("recordingerrors", stats["totalstatistics"])

    def test_state_store_keeps_the_recording(self):
        """With a state store, a recorded call's snapshot holds its
        recording (paths, format, paused) and decodes to an equal one."""
        from omnirtp.state import snapshot
        from omnirtp.state.store import MemoryStore

        store = self.registry.store = MemoryStore()
        self.setup_call(offer_extra={"flags": ["record-call"]})
        self.call(command="pause recording", call_id="rec call/1@x")
        kept = snapshot.decode(store.calls["rec call/1@x"], self.negotiator.interfaces)
        rec = self.registry.get("rec call/1@x").recording
        self.assertEqual(vars(kept.recording), vars(rec))
        self.assertEqual((kept.recording.pcap_path, kept.recording.paused),
                         (self.pcap_path(), True))
        self.assertEqual(self.registry.persist_errors, 0)

    def test_spool_without_directory(self):
        spool = Spool(None)
        spool.prepare()

        class _Call:
            call_id = "x"
            recording = None

        self.assertIsNone(spool.start(_Call()))
        self.assertEqual(len(self.errors_logged()), 1)
