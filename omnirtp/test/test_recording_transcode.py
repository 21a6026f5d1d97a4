"""Recording a transcoded call: the tap runs before the transcoder in the
``middle`` slot, so each leg is recorded as it was on the wire."""

import os

from omnirtp.codecs import g711
from omnirtp.recording import pcap
from omnirtp.test.test_codecs import pack, tone
from omnirtp.test.test_engine import A, B, HOST, EngineTestBase
from omnirtp.test import test_engine_transcode
from omnirtp.test.test_transcode import PCMA, PCMU, header, rtp


class RecordedTranscodeTests(EngineTestBase):
    # the call set-up of the transcoding engine tests (not their tests)
    wire = test_engine_transcode.TranscodeEngineTests.wire
    send = test_engine_transcode.TranscodeEngineTests.send

    def setUp(self):
        EngineTestBase.setUp(self)
        self.dir = self.mktemp()
        os.mkdir(self.dir)
        self.path = os.path.join(self.dir, "c1.pcap")

    def test_each_leg_as_on_the_wire(self):
        a, b = self.wire([PCMU], [PCMU], [PCMA], [PCMA])
        record = {"path": self.path, "format": "raw"}
        self.value(self.engine.configure("c1", [{"local": (HOST, k), "record": record}
                                                for k in (a, a + 1, b, b + 1)]))
        # the tap sits before the transcoder, which stays
        self.assertEqual([s.name for s in self.engine.socket((HOST, a)).middle],
                         ["record", "transcode"])
        ulaw = rtp(1, 0, g711.ulaw_encode(pack(tone(440, 8000, 160, 10000))), pt=0)
        alaw = rtp(9, 0, g711.alaw_encode(pack(tone(1000, 8000, 160, 10000))), pt=8)
        self.send(a, [ulaw], A)
        self.send(b, [alaw], B)
        [(to_b, _)] = self.net.sent_to(B)
        self.assertEqual(header(to_b)["pt"], 8)
        self.value(self.engine.release("c1"))
        with open(self.path, "rb") as f:
            recorded = [(p.src, p.dst, p.payload) for p in pcap.PcapReader(f.read())]
        self.assertEqual(recorded, [(A, (HOST, a), ulaw), (B, (HOST, b), alaw)])

    def test_stop_recording_keeps_transcoder(self):
        a, b = self.wire([PCMU], [PCMU], [PCMA], [PCMA])
        step = self.engine.transcoder((HOST, a))
        for record in ({"path": self.path, "format": "raw"}, None):
            self.value(self.engine.configure("c1", [{"local": (HOST, k), "record": record}
                                                    for k in (a, a + 1, b, b + 1)]))
        self.assertEqual(self.engine.socket((HOST, a)).middle, (step,))
