"""Short, deterministic fuzz runs of every parser, and the fuzz regressions.

Each target of :mod:`omnirtp.test.fuzz` runs here for a few hundred
Hypothesis cases with ``derandomize=True`` (the same cases on every run and
machine, no example database), so ``make test`` stays stable; ``make fuzz``
(``scripts/fuzz``) runs each for a million cases.  Every input that ever
failed is a file under ``fixtures/fuzz/<target>/`` and is replayed here.
"""

import os

from hypothesis import HealthCheck, Phase, given, settings
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test import fuzz

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "fuzz")

#: cases per target in make test: a few seconds each on one core
EXAMPLES = {"bencode": 300, "stun": 300, "config": 200, "relay": 150, "sdp": 100,
            "ice": 80, "ng": 40, "dtls": 60,
            "rtcp": 300}


def _run(name):
    check, strategy = fuzz.TARGETS[name]
    test = settings(
        max_examples=EXAMPLES[name], derandomize=True, database=None, deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )(given(strategy)(lambda data: check(data)))
    test()


def fixtures(name):
    """``[(file name, bytes)]`` of the regression inputs of target ``name``."""
    folder = os.path.join(FIXTURES, name)
    if not os.path.isdir(folder):
        return []
    out = []
    for entry in sorted(os.listdir(folder)):
        with open(os.path.join(folder, entry), "rb") as f:
            out.append((entry, f.read()))
    return out


class FuzzTargetTests(SynchronousTestCase):
    """No uncaught exception beyond the documented error types; ng always
    answers and still answers ping; no port leaked; the unrelated call kept."""

    def test_targets(self):
        self.assertEqual(sorted(fuzz.TARGETS), sorted(EXAMPLES))

    def test_bencode(self):
        _run("bencode")

    def test_ng(self):
        _run("ng")

    def test_sdp(self):
        _run("sdp")

    def test_relay(self):
        _run("relay")

    def test_stun(self):
        _run("stun")

    def test_ice(self):
        _run("ice")

    def test_config(self):
        _run("config")

    def test_dtls(self):
        _run("dtls")

    def test_rtcp(self):
        _run("rtcp")


class RegressionTests(SynchronousTestCase):
    """Every input a fuzzer once failed on passes its target now."""

    def test_fixtureFolders(self):
        """Fixtures live in a folder named after an existing target."""
        for name in os.listdir(FIXTURES):
            self.assertIn(name, fuzz.TARGETS)

    def test_replay(self):
        count = 0
        for name, (check, _) in sorted(fuzz.TARGETS.items()):
            for entry, data in fixtures(name):
                check(data)
                count += 1
        self.assertEqual(count, len([1 for name in os.listdir(FIXTURES)
                                     for _ in os.listdir(os.path.join(FIXTURES, name))]))
        self.assertGreater(count, 0)

    def test_rejectedMediaOnly(self):
        """The first fuzz find: an offer whose only m= line is rejected
        (and no c= anywhere) was answered "Internal error"; now an offer and
        an answer both succeed and keep port 0."""
        (entry, data), = [f for f in fixtures("sdp") if f[0] == "rejected-media-only-no-c.bin"]
        stack = fuzz.NGStack()
        sdp = data.decode()
        reply = stack.request({"command": "offer", "call-id": "x", "from-tag": "f", "sdp": sdp})
        self.assertEqual(reply, {"result": "ok", "sdp": sdp.replace("RTP/AVP \r\n", "RTP/AVP\r\n")})
        fuzz.check_sdp(data)
        stack.finish()

    def test_codecFlagsWithUnknownPayloadType(self):
        """Found by make fuzz (fixtures/fuzz/ng/codec-mask-pt-without-rtpmap.bin):
        an offer with a codec flag whose m= line has a dynamic payload type
        without a=rtpmap was answered "Internal error" (the engine refused
        a format with no encoding name).  Now the offer and the answer go
        through and keep the type on the m= line."""
        (entry, data), = [f for f in fixtures("ng")
                          if f[0] == "codec-mask-pt-without-rtpmap.bin"]
        fuzz.check_ng(data)
        stack = fuzz.NGStack()
        sdp = ("v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
               "m=audio 49170 RTP/AVP 8 96\r\n")
        out = ("v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               "m=audio %d RTP/AVP 8 96\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\na=rtcp:%d\r\n")
        reply = stack.request({"command": "offer", "call-id": "x", "from-tag": "f", "sdp": sdp,
                               "codec": {"mask": ["PCMU"]}})
        self.assertEqual(reply, {"result": "ok", "sdp": out % (30010, 30011)})
        reply = stack.request({"command": "answer", "call-id": "x", "from-tag": "f",
                               "to-tag": "t", "sdp": sdp.replace("49170", "5000")})
        self.assertEqual(reply, {"result": "ok", "sdp": out % (30022, 30023)})
        stack.finish()

    def test_ptimeBeyondTheEngine(self):
        """Found by the i13-pipe helper's check of what configure refuses:
        an ng ``ptime`` of 5000 on a transcoded call, an answer's
        a=ptime:5000, or an ng ``ptime`` of -5 were answered "Internal error"
        (the engine packetises 1-1000 ms).  rtpengine 10.5 answers ok,
        writes a=ptime:5000 as given and ignores -5 (the side-by-side
        corpus has both: ptime_out_of_range_transcode, ptime_negative)."""
        stack = fuzz.NGStack()
        sdp = ("v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
               "m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        reply = stack.request({"command": "offer", "call-id": "x", "from-tag": "f", "sdp": sdp,
                               "ptime": 5000, "codec": {"transcode": ["PCMA"]}})
        self.assertEqual(reply["result"], "ok", reply)
        self.assertIn("a=ptime:5000\r\n", reply["sdp"])
        answer = sdp.replace("49170 RTP/AVP 0", "5000 RTP/AVP 8").replace(
            "0 PCMU/8000", "8 PCMA/8000") + "a=ptime:5000\r\n"
        reply = stack.request({"command": "answer", "call-id": "x", "from-tag": "f",
                               "to-tag": "t", "sdp": answer})
        self.assertEqual(reply["result"], "ok", reply)
        reply = stack.request({"command": "offer", "call-id": "y", "from-tag": "f", "sdp": sdp,
                               "ptime": -5, "ptime-reverse": 0})
        self.assertEqual(reply["result"], "ok", reply)
        self.assertNotIn("a=ptime", reply["sdp"])
        stack.finish()

    def test_framedListsPassThrough(self):
        """scripts/fuzz hands the sequence targets decoded lists:
        unframe passes a list through and decodes bytes to the same list."""
        items = [[0, 1, 2, b"\x80\x00"], [1, 20]]
        self.assertIs(fuzz.unframe(items), items)
        self.assertEqual(fuzz.unframe(fuzz.framed(items)), items)
        self.assertEqual(fuzz.unframe(b"not bencode"), [])


class NGBatchTests(SynchronousTestCase):
    """The batch harness of make fuzz checks what check_ng checks."""

    def test_inputsOnOneStack(self):
        batch = fuzz.NGBatch(per_stack=3)
        offer = {"command": "offer", "call-id": "c1", "from-tag": "ft", "sdp": fuzz.KEEP_OFFER}
        datagrams = [b"a1 " + fuzz.bencode.encode(offer),
                     b"a2 " + fuzz.bencode.encode({"command": "delete", "call-id": "c1",
                                                   "delete-delay": 30})]
        for _ in range(7):
            batch.check(fuzz.framed(datagrams))
        self.assertEqual(batch.used, 1)
        self.assertEqual(list(batch.stack.registry.calls), [fuzz.KEEP_CALL])

    def test_leakIsCaught(self):
        """A call the input leaves behind that still holds ports after the
        reset would fail the batch; a stack that failed is dropped."""
        batch = fuzz.NGBatch()
        batch.check(fuzz.framed([]))
        stack = batch.stack
        stack.engine.allocate("leak", "127.0.0.1", 1)
        self.assertRaises(AssertionError, batch.check, fuzz.framed([]))
        self.assertIsNone(batch.stack)
