"""DTLS-SRTP legs across a restart: the registry keeps the keys the
engine's handshake exported (``Media.dtls_srtp``, from the engine's stats),
writes the call again, and a restored call's browser leg is configured with
those keys and no DTLS endpoint (no new handshake), until the browser's
fingerprint changes (a new association: a handshake again)."""

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.state import snapshot
from omnirtp.state.restore import bind_call
from omnirtp.state.store import MemoryStore
from omnirtp.test import corpus
from omnirtp.test.fakes import ControlStack

PHONE = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
IN = {"suite": "AES_CM_128_HMAC_SHA1_80", "key": "A" * 40}
OUT = {"suite": "AES_CM_128_HMAC_SHA1_80", "key": "B" * 40}


class DtlsKeysTests(SynchronousTestCase):

    def setUp(self):
        self.stack = ControlStack()
        self.registry = self.stack.registry
        self.registry.store = self.store = MemoryStore()
        offer = self.stack.dispatch({"command": "offer", "call-id": "d1", "from-tag": "web",
                                     "sdp": corpus.WEBRTC_OFFER, "ICE": "remove", "rtcp-mux": ["accept"],
                                     "transport-protocol": "RTP/AVP"})
        self.assertEqual(self.successResultOf(offer)["result"], "ok")
        answer = self.stack.dispatch({"command": "answer", "call-id": "d1", "from-tag": "web",
                                      "to-tag": "phone", "sdp": PHONE})
        self.assertEqual(self.successResultOf(answer)["result"], "ok")
        self.call = self.registry.get("d1")
        [self.web] = [m for ml, m in self.call.all_medias() if m.dtls_role is not None]
        self.assertTrue(self.web.mux)

    def engine_stats(self, role=None):
        return {self.web.rtp_key: {"dtls_srtp": {"in": IN, "out": OUT,
                                                 "role": role or self.web.dtls_role}}}

    def sockets(self, call):
        return {s["local"]: s for s in self.stack.negotiator.restored_sockets(call)}

    def test_keptWrittenAndRestoredWithoutHandshake(self):
        before = self.store.calls["d1"]
        self.registry.keep_dtls(self.call, {})  # no handshake yet: nothing
        self.assertIsNone(self.web.dtls_srtp)
        self.registry.keep_dtls(self.call, self.engine_stats(role="other"))  # not this role
        self.assertIsNone(self.web.dtls_srtp)
        self.registry.keep_dtls(self.call, self.engine_stats())
        self.assertEqual(self.web.dtls_srtp, {
            "role": self.web.dtls_role, "fingerprint": self.web.dtls_fingerprint,
            "rtp": {"in": IN, "out": OUT}, "rtcp": None})
        self.assertNotEqual(self.store.calls["d1"], before)  # written again
        written = self.store.calls["d1"]
        self.registry.keep_dtls(self.call, self.engine_stats())  # once per association
        self.assertIs(self.store.calls["d1"], written)
        # this process still has the handshake: DTLS as before
        live = self.sockets(self.call)[self.web.rtp_key]
        self.assertEqual(live["dtls"], {"role": self.web.dtls_role,
                                        "fingerprint": self.web.dtls_fingerprint})
        self.assertIsNone(live["srtp_in"])

        # a restarted daemon: the kept keys, no DTLS endpoint
        restored = snapshot.decode(written, self.stack.interfaces)
        self.registry.forget(self.call)
        self.successResultOf(self.stack.engine.release("d1"))
        self.successResultOf(bind_call(self.stack.engine, self.stack.negotiator, restored))
        [web] = [m for ml, m in restored.all_medias() if m.dtls_role is not None]
        socket = self.sockets(restored)[web.rtp_key]
        self.assertIsNone(socket["dtls"])
        self.assertEqual((socket["srtp_in"], socket["srtp_out"]), (IN, OUT))
        # rtcp-mux: the RTCP socket carries the same keys
        rtcp = self.sockets(restored)[web.rtcp_key]
        self.assertEqual((rtcp["dtls"], rtcp["srtp_in"], rtcp["srtp_out"]), (None, IN, OUT))
        self.assertEqual(self.stack.engine.configured[web.rtp_key]["srtp_in"], IN)
        # a new fingerprint from the browser is a new association: a handshake
        web.dtls_fingerprint = "sha-256 " + ":".join(["00"] * 32)
        socket = self.sockets(restored)[web.rtp_key]
        self.assertEqual(socket["dtls"]["fingerprint"], web.dtls_fingerprint)
        self.assertIsNone(socket["srtp_in"])

    def test_noStoreNoKeys(self):
        self.registry.store = None
        self.successResultOf(self.registry.sweep())
        self.assertIsNone(self.web.dtls_srtp)


class DtlsKeysNoMuxTests(SynchronousTestCase):
    """Without rtcp-mux the RTCP socket has its own handshake: both sockets'
    keys are needed, and each restored socket gets its own."""

    def test_rtcpKeysToo(self):
        stack = ControlStack()
        stack.registry.store = MemoryStore()
        for request in ({"command": "offer", "call-id": "d2", "from-tag": "web",
                         "sdp": corpus.WEBRTC_OFFER, "ICE": "remove",
                         "transport-protocol": "RTP/AVP"},
                        {"command": "answer", "call-id": "d2", "from-tag": "web",
                         "to-tag": "phone", "sdp": PHONE}):
            self.assertEqual(self.successResultOf(stack.dispatch(request))["result"], "ok")
        call = stack.registry.get("d2")
        [web] = [m for ml, m in call.all_medias() if m.dtls_role is not None]
        self.assertFalse(web.mux)
        role = web.dtls_role
        rtcp_in = dict(IN, key="C" * 40)
        rtcp_out = dict(OUT, key="D" * 40)
        stack.registry.keep_dtls(call, {web.rtp_key: {"dtls_srtp": {
            "in": IN, "out": OUT, "role": role}}})
        self.assertIsNone(web.dtls_srtp)  # the RTCP socket's handshake is not done
        stack.registry.keep_dtls(call, {
            web.rtp_key: {"dtls_srtp": {"in": IN, "out": OUT, "role": role}},
            web.rtcp_key: {"dtls_srtp": {"in": rtcp_in, "out": rtcp_out, "role": role}}})
        self.assertEqual(web.dtls_srtp["rtcp"], {"in": rtcp_in, "out": rtcp_out})
        restored = snapshot.decode(snapshot.encode(call), stack.interfaces)
        for _ml, m in restored.all_medias():
            if m.dtls_srtp is not None:
                m.dtls_srtp["restored"] = True
        sockets = {s["local"]: s for s in stack.negotiator.restored_sockets(restored)}
        self.assertEqual((sockets[web.rtp_key]["srtp_in"], sockets[web.rtp_key]["dtls"]),
                         (IN, None))
        self.assertEqual((sockets[web.rtcp_key]["srtp_in"], sockets[web.rtcp_key]["srtp_out"],
                          sockets[web.rtcp_key]["dtls"]), (rtcp_in, rtcp_out, None))
