"""SRTP contexts across a restart or a takeover (issue 10): the registry
keeps where the engine's SRTP steps are (``srtp_index`` in its stats,
``Media.srtp_index``), writes the call when that moved in a way that
matters (a new SSRC, a rollover counter, a quarter of the sequence space,
64 SRTCP packets), a snapshot carries it, and a restored call's sockets are
configured with it (``srtp_resume``), which the engine gives its new SRTP
steps."""

import base64
import random

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.control.flags import Flags
from omnirtp.media import srtp
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.srtp import AES_CM_128_HMAC_SHA1_80, make_crypto
from omnirtp.state import snapshot
from omnirtp.state.restore import bind_call
from omnirtp.state.store import MemoryStore
from omnirtp.test.fakes import ControlStack, FakeNetwork, MemoryUDPReactor

KEY = bytes(range(30))
CRYPTO = "1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(KEY).decode()


def _sdp(port, proto="RTP/AVP", crypto=None):
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             "m=audio %d %s 0" % (port, proto), "a=rtpmap:0 PCMU/8000"]
    if crypto:
        lines.append("a=crypto:" + crypto)
    return "\r\n".join(lines) + "\r\n"


def _indexes(tag, rtp=None, rtcp=None):
    out = {"key": tag}
    if rtp:
        out["rtp"] = rtp
    if rtcp:
        out["rtcp"] = rtcp
    return out


class RegistryTests(SynchronousTestCase):

    def setUp(self):
        self.stack = ControlStack()
        self.registry = self.stack.registry
        self.registry.store = self.store = MemoryStore()
        offer = self.stack.dispatch({
            "command": "offer", "call-id": "s1", "from-tag": "alice",
            "sdp": _sdp(6000, "RTP/SAVP", CRYPTO), "transport-protocol": "RTP/AVP"})
        self.assertEqual(self.successResultOf(offer)["result"], "ok")
        answer = self.stack.dispatch({
            "command": "answer", "call-id": "s1", "from-tag": "alice", "to-tag": "bob",
            "sdp": _sdp(7000), "transport-protocol": "RTP/SAVP"})
        self.assertEqual(self.successResultOf(answer)["result"], "ok")
        self.call = self.registry.get("s1")
        [self.alice] = [m for _ml, m in self.call.all_medias() if m.srtp_in is not None]
        self.tag_in = srtp.key_tag(self.alice.srtp_in)
        self.tag_out = srtp.key_tag(self.alice.srtp_out)

    def stats(self, rtp_in, rtp_out, rtcp_out=None):
        return {self.alice.rtp_key: {"srtp_index": {
            "in": _indexes(self.tag_in, rtp={0xA: rtp_in}),
            "out": _indexes(self.tag_out, rtp={0xB: rtp_out}, rtcp=rtcp_out)}}}

    def keep(self, stats):
        """Whether keep_srtp wrote the call."""
        before = self.store.calls["s1"]
        self.registry.keep_srtp(self.call, stats)
        return self.store.calls["s1"] is not before

    def test_writtenWhenItMatters(self):
        self.assertFalse(self.keep({}))  # nothing yet
        self.assertTrue(self.keep(self.stats(0xFFF0, 100)))  # new SSRCs
        self.assertFalse(self.keep(self.stats(0xFFFF, 200)))  # the same quarter
        self.assertTrue(self.keep(self.stats(0x10005, 200)))  # ROC 1
        self.assertFalse(self.keep(self.stats(0x13FFF, 300)))
        self.assertTrue(self.keep(self.stats(0x14000, 300)))  # the next quarter
        self.assertTrue(self.keep(self.stats(0x14000, 300, {0xB: 1})))  # SRTCP
        self.assertFalse(self.keep(self.stats(0x14000, 300, {0xB: 63})))
        self.assertTrue(self.keep(self.stats(0x14000, 300, {0xB: 64})))
        self.assertEqual(self.alice.srtp_index["rtp"]["in"]["rtp"], {0xA: 0x14000})
        self.assertIsNone(self.alice.srtp_index["rtcp"])
        # another key (a re-key): written
        stats = self.stats(0x14000, 300, {0xB: 64})
        stats[self.alice.rtp_key]["srtp_index"]["in"]["key"] = "other"
        self.assertTrue(self.keep(stats))
        # no counters for the socket (a worker that did not answer): kept
        self.assertFalse(self.keep({}))
        self.assertIsNotNone(self.alice.srtp_index)
        # the SRTP gone (plain again): forgotten
        self.assertTrue(self.keep({self.alice.rtp_key: {"packets": 0}}))
        self.assertIsNone(self.alice.srtp_index)

    def test_restoredWithTheKeptIndexes(self):
        self.keep(self.stats(0x10005, 0x10007, {0xB: 3}))
        written = self.store.calls["s1"]
        restored = snapshot.decode(written, self.stack.interfaces)
        [alice] = [m for _ml, m in restored.all_medias() if m.srtp_in is not None]
        self.assertEqual(alice.srtp_index, self.alice.srtp_index)
        self.registry.forget(self.call)
        self.successResultOf(self.stack.engine.release("s1"))
        self.successResultOf(bind_call(self.stack.engine, self.stack.negotiator, restored))
        configured = self.stack.engine.configured
        self.assertEqual(configured[alice.rtp_key]["srtp_resume"],
                         self.alice.srtp_index["rtp"])
        self.assertNotIn("srtp_resume", configured[alice.rtcp_key])  # nothing kept there
        [bob] = [m for _ml, m in restored.all_medias() if m is not alice]
        self.assertNotIn("srtp_resume", configured[bob.rtp_key])
        # a call's own requests never carry it
        offer = Flags.from_request({"command": "offer"})
        for entry in self.stack.negotiator._sockets(restored, offer):
            self.assertNotIn("srtp_resume", entry)


class EngineTests(SynchronousTestCase):
    """``srtp_resume`` in a configure entry, ``srtp_index`` in the stats."""

    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.engine = EmbeddedEngine(self.reactor, {"127.0.0.1": (30000, 30009)},
                                     bind=FakeNetwork().bind, rng=random.Random(4))
        self.a, self.b = self.successResultOf(self.engine.allocate("c1", "127.0.0.1", 2))
        self.params_in = make_crypto(AES_CM_128_HMAC_SHA1_80, bytes(30))
        self.params_out = make_crypto(AES_CM_128_HMAC_SHA1_80, bytes(range(30)))

    def configure(self, **keys):
        entry = dict({"local": ("127.0.0.1", self.a), "peer": ("127.0.0.1", self.b),
                      "srtp_in": self.params_in, "srtp_out": self.params_out}, **keys)
        return self.engine.configure("c1", [entry])

    def kept(self):
        stats = self.successResultOf(self.engine.stats("c1"))["c1"]
        return stats[("127.0.0.1", self.a)].get("srtp_index")

    def test_resumedStepsAndStats(self):
        resume = {"in": _indexes(srtp.key_tag(self.params_in), rtp={7: 0x10005}),
                  "out": _indexes(srtp.key_tag(self.params_out), rtp={8: 0x20001},
                                  rtcp={8: 10})}
        self.successResultOf(self.configure(srtp_resume=resume))
        self.assertEqual(self.kept(), {
            "in": resume["in"],
            "out": _indexes(srtp.key_tag(self.params_out), rtp={8: 0x20001},
                            rtcp={8: 10 + srtp.SRTCP_LEAP})})
        # the same keys again: the running contexts stay (nothing resumed)
        self.successResultOf(self.configure(srtp_resume={
            "in": _indexes(srtp.key_tag(self.params_in), rtp={7: 0x30000})}))
        self.assertEqual(self.kept()["in"]["rtp"], {7: 0x10005})
        # no SRTP, no srtp_index
        self.successResultOf(self.configure(srtp_in=None, srtp_out=None))
        self.assertIsNone(self.kept())

    def test_otherKeyIgnored(self):
        self.successResultOf(self.configure(srtp_resume={
            "in": _indexes("0" * 16, rtp={7: 0x10005})}))
        self.assertIsNone(self.kept())

    def test_badResumeChangesNothing(self):
        for bad in ("x", {"in": {"key": srtp.key_tag(self.params_in), "rtp": {7: -1}}}):
            f = self.failureResultOf(self.configure(srtp_resume=bad), ValueError)
            self.assertIn("srtp_resume", str(f.value))
        self.assertNotIn(("127.0.0.1", self.a), self.engine._steps)
