"""WebRTC negotiation through the Dispatcher: DTLS-SRTP and ICE in the SDP
(a=setup, a=fingerprint, a=mid, trickle, ICE-lite) and the ``ice``/``dtls``
keys of the engine's socket entries (on a Clock and an in-memory engine).
The SDP bodies are the side-by-side corpus's; what rtpengine 10.5 writes for
them is checked there, here the values the negotiator decides."""

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test.fakes import ControlStack
from omnirtp.media.dtls import Certificate
from omnirtp.test import corpus
from omnirtp.test.test_commands import media_port

BROWSER_UFRAG, BROWSER_PWD = "Yk3d", "Pq0wR4mZc7nLs2vT8kJx1hBf"
BROWSER_FINGERPRINT = ("sha-256 7A:1C:44:0B:93:5E:D2:6F:08:AA:31:C9:5D:E4:72:19:B6:0F:"
                       "8E:23:DD:41:9A:57:C0:3E:6B:F1:28:84:A5:0D")
OFFER_CANDIDATE = "3471623853 1 udp 2122260223 198.51.100.7 53871 typ host generation 0"
ANSWER_CANDIDATE = "1467250027 1 udp 2122260223 198.51.100.7 53871 typ host generation 0"

SEED_OFFER = {"ICE": "force", "replace": ["origin", "session-connection"],
              "transport-protocol": "RTP/SAVPF"}
SEED_ANSWER = {"ICE": "remove", "replace": ["origin", "session-connection"],
               "transport-protocol": "RTP/AVP"}
BROWSER_OFFER = {"ICE": "remove", "transport-protocol": "RTP/AVP", "rtcp-mux": ["demux"]}
BROWSER_ANSWER = {"ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF",
                  "rtcp-mux": ["require"]}


def attribute(sdp, name):
    """The values of every ``a=<name>:`` line of ``sdp``, in order."""
    prefix = "a=%s:" % name
    return [line[len(prefix):] for line in sdp.split("\r\n") if line.startswith(prefix)]


class WebrtcNegotiationTests(SynchronousTestCase):

    def setUp(self):
        self.certificate = Certificate.generate()
        stack = ControlStack(certificate=self.certificate)
        self.clock, self.engine, self.registry = stack.clock, stack.engine, stack.registry
        self.negotiator, self.dispatch = stack.negotiator, stack.dispatch

    def call(self, request):
        return self.successResultOf(self.dispatch(request))

    def offer(self, sdp, **kw):
        return self.call(dict(kw, command="offer", sdp=sdp, **{"call-id": "c1",
                                                               "from-tag": "ft"}))["sdp"]

    def answer(self, sdp, **kw):
        return self.call(dict(kw, command="answer", sdp=sdp, **{
            "call-id": "c1", "from-tag": "ft", "to-tag": "tt"}))["sdp"]

    def entries(self, sdp, index=0):
        """The RTP and RTCP engine entries of the socket ``sdp`` advertises
        in its m= line ``index``."""
        ports = [int(line.split()[1]) for line in sdp.split("\r\n") if line.startswith("m=")]
        addr, _ = media_port(sdp)
        port = ports[index]
        return self.engine.configured[(addr, port)], self.engine.configured[(addr, port + 1)]

    def ice(self, sdp, remote_ufrag, remote_pwd, controlling, component, candidates,
            lite=False):
        return {"ufrag": attribute(sdp, "ice-ufrag")[0], "pwd": attribute(sdp, "ice-pwd")[0],
                "remote_ufrag": remote_ufrag, "remote_pwd": remote_pwd,
                "controlling": controlling, "lite": lite, "component": component,
                "candidates": candidates}

    # -- SIP phone calls a browser (the seed's flags) ---------------------------------

    def test_seedOfferTowardsBrowser(self):
        """RTP/SAVPF with ICE=force: a=setup:actpass and our certificate's
        sha-256 fingerprint; until the answer we wait as the DTLS server,
        controlling ICE agent on both components with no remote data."""
        out = self.offer(corpus.SIP_OFFER, **SEED_OFFER)
        self.assertEqual(attribute(out, "setup"), ["actpass"])
        self.assertEqual(attribute(out, "fingerprint"),
                         [self.certificate.fingerprint("sha-256")])
        rtp, rtcp = self.entries(out)
        self.assertEqual(rtp["dtls"], {"role": "server", "fingerprint": None})
        self.assertEqual(rtcp["dtls"], {"role": "server", "fingerprint": None})
        self.assertEqual(rtp["ice"], self.ice(out, None, None, True, 1, []))
        self.assertEqual(rtcp["ice"], self.ice(out, None, None, True, 2, []))

    def test_seedAnswerFromBrowser(self):
        """The browser answers a=setup:active: we are the DTLS server with its
        fingerprint, ICE controlling with its credentials and candidate; it
        multiplexes, so the RTCP socket has neither; SDES keys are unused.
        The SIP phone's sockets have no ICE and no DTLS."""
        out = self.offer(corpus.SIP_OFFER, **SEED_OFFER)
        back = self.answer(corpus.WEBRTC_ANSWER, **SEED_ANSWER)
        rtp, rtcp = self.entries(out)
        self.assertEqual(rtp["dtls"], {"role": "server", "fingerprint": BROWSER_FINGERPRINT})
        self.assertEqual(rtp["ice"], self.ice(out, BROWSER_UFRAG, BROWSER_PWD, True, 1,
                                              [ANSWER_CANDIDATE]))
        self.assertEqual((rtp["srtp_in"], rtp["srtp_out"]), (None, None))
        self.assertEqual((rtcp["ice"], rtcp["dtls"]), (None, None))
        for entry in self.entries(back):
            self.assertEqual((entry["ice"], entry["dtls"], entry["srtp_in"]), (None, None, None))
        self.assertEqual(attribute(back, "setup") + attribute(back, "fingerprint")
                         + attribute(back, "ice-ufrag") + attribute(back, "mid"), [])

    def test_answerSetupPassiveMakesUsClient(self):
        out = self.offer(corpus.SIP_OFFER, **SEED_OFFER)
        self.answer(corpus.WEBRTC_ANSWER.replace("a=setup:active", "a=setup:passive"),
                    **SEED_ANSWER)
        self.assertEqual(self.entries(out)[0]["dtls"],
                         {"role": "client", "fingerprint": BROWSER_FINGERPRINT})

    def test_plainAnswerEndsDtlsAndIce(self):
        """A SIP phone answering our DTLS+ICE offer with plain RTP/AVP does
        neither: no DTLS endpoint, no ICE agent on its sockets."""
        out = self.offer(corpus.SIP_OFFER, **SEED_OFFER)
        self.answer(corpus.SIP_ANSWER, **SEED_ANSWER)
        for entry in self.entries(out):
            self.assertEqual((entry["ice"], entry["dtls"]), (None, None))

    def test_dtlsOffOnOffer(self):
        out = self.offer(corpus.SIP_OFFER, DTLS="off", **SEED_OFFER)
        self.assertEqual(attribute(out, "setup") + attribute(out, "fingerprint"), [])
        self.assertEqual(len(attribute(out, "crypto")), 3)
        self.assertIsNone(self.entries(out)[0]["dtls"])

    def test_dtlsPassiveOfferStillActpass(self):
        out = self.offer(corpus.SIP_OFFER, DTLS="passive", **SEED_OFFER)
        self.assertEqual(attribute(out, "setup"), ["actpass"])

    def test_fingerprintHashFlag(self):
        out = self.offer(corpus.SIP_OFFER, **dict(SEED_OFFER, **{"DTLS-fingerprint": "SHA-1"}))
        self.assertEqual(attribute(out, "fingerprint"), [self.certificate.fingerprint("sha-1")])
        self.assertTrue(attribute(out, "fingerprint")[0].startswith("sha-1 "))

    def test_fingerprintPerHashOnOneNegotiator(self):
        """Our a=fingerprint is made once per hash (the negotiator keeps
        it): one negotiator's offers with sha-256, sha-1, sha-256 again
        each carry the certificate's fingerprint of that hash."""
        for call_id, name in (("c1", "sha-256"), ("c2", "SHA-1"), ("c3", "sha-256")):
            out = self.call(dict(SEED_OFFER, command="offer", sdp=corpus.SIP_OFFER,
                                 **{"call-id": call_id, "from-tag": "ft",
                                    "DTLS-fingerprint": name}))["sdp"]
            self.assertEqual(attribute(out, "fingerprint"),
                             [self.certificate.fingerprint(name.lower())])

    def test_plainProfileHasNoDtls(self):
        out = self.offer(corpus.SIP_OFFER, ICE="force", **{"transport-protocol": "RTP/AVP"})
        self.assertEqual(attribute(out, "setup"), [])
        self.assertIsNone(self.entries(out)[0]["dtls"])
        self.assertEqual(self.entries(out)[0]["ice"]["controlling"], True)

    # -- a browser calls a SIP phone -------------------------------------------------

    def browser_call(self, offer=corpus.WEBRTC_OFFER, answer_flags=None):
        out = self.offer(offer, **BROWSER_OFFER)
        back = self.answer(corpus.SIP_ANSWER, **dict(BROWSER_ANSWER, **(answer_flags or {})))
        return out, back

    def test_browserOfferTowardsSip(self):
        """Towards the SIP phone: no ICE, no DTLS, no crypto; the browser's
        sockets get nothing until we answer it."""
        out = self.offer(corpus.WEBRTC_OFFER, **BROWSER_OFFER)
        for name in ("setup", "fingerprint", "crypto", "ice-ufrag", "candidate"):
            self.assertEqual(attribute(out, name), [], name)
        self.assertEqual(attribute(out, "mid"), ["0"])
        for entry in self.entries(out):
            self.assertEqual((entry["ice"], entry["dtls"]), (None, None))

    def test_answerTowardsBrowser(self):
        """The answer to the browser: its a=mid, rtcp-mux, a=setup:active (we
        are the DTLS client), our fingerprint, trickle ICE with one host
        candidate and a=end-of-candidates; we are the controlled agent."""
        out, back = self.browser_call()
        self.assertEqual(attribute(back, "mid"), ["0"])
        self.assertEqual(attribute(back, "setup"), ["active"])
        self.assertEqual(attribute(back, "fingerprint"),
                         [self.certificate.fingerprint("sha-256")])
        self.assertEqual(attribute(back, "ice-options"), ["trickle"])
        self.assertIn("a=rtcp-mux\r\n", back)
        self.assertTrue(back.endswith("typ host\r\na=end-of-candidates\r\n"))
        self.assertEqual(len(attribute(back, "candidate")), 1)
        rtp, rtcp = self.entries(back)
        self.assertEqual(rtp["dtls"], {"role": "client", "fingerprint": BROWSER_FINGERPRINT})
        self.assertEqual(rtp["ice"], self.ice(back, BROWSER_UFRAG, BROWSER_PWD, False, 1,
                                              [OFFER_CANDIDATE]))
        self.assertEqual((rtcp["ice"], rtcp["dtls"]), (None, None))
        for entry in self.entries(out):
            self.assertEqual((entry["ice"], entry["dtls"]), (None, None))

    def test_dtlsPassiveAnswer(self):
        _, back = self.browser_call(answer_flags={"DTLS": "passive"})
        self.assertEqual(attribute(back, "setup"), ["passive"])
        self.assertEqual(self.entries(back)[0]["dtls"]["role"], "server")

    def test_dtlsOffOnAnswerIgnored(self):
        """10.5 answers a DTLS offerer with DTLS even with DTLS=off."""
        _, back = self.browser_call(answer_flags={"DTLS": "off"})
        self.assertEqual(attribute(back, "setup"), ["active"])

    def test_offerSetupActive(self):
        _, back = self.browser_call(
            corpus.WEBRTC_OFFER.replace("a=setup:actpass", "a=setup:active"))
        self.assertEqual(attribute(back, "setup"), ["passive"])
        self.assertEqual(self.entries(back)[0]["dtls"]["role"], "server")

    def test_offerSetupPassiveWinsOverDtlsPassive(self):
        _, back = self.browser_call(
            corpus.WEBRTC_OFFER.replace("a=setup:actpass", "a=setup:passive"),
            {"DTLS": "passive"})
        self.assertEqual(attribute(back, "setup"), ["active"])
        self.assertEqual(self.entries(back)[0]["dtls"]["role"], "client")

    def test_offerWithoutSetupGetsNoDtls(self):
        _, back = self.browser_call(corpus.WEBRTC_OFFER.replace("a=setup:actpass\r\n", ""))
        self.assertEqual(attribute(back, "setup") + attribute(back, "fingerprint"), [])
        self.assertIsNone(self.entries(back)[0]["dtls"])

    def test_offerWithoutValidFingerprintGetsNoDtls(self):
        """As 10.5: a=setup without a usable a=fingerprint (none, a hash it
        does not know, a digest of the wrong length) means no DTLS."""
        for offer in (corpus.WEBRTC_OFFER_NO_FINGERPRINT, corpus.WEBRTC_OFFER_BAD_FINGERPRINT,
                      corpus.WEBRTC_OFFER.replace("a=fingerprint:sha-256 ", "a=fingerprint:md5 ")):
            self.call({"command": "delete", "call-id": "c1", "from-tag": "ft",
                       "delete-delay": 0})
            _, back = self.browser_call(offer)
            self.assertEqual(attribute(back, "setup") + attribute(back, "fingerprint"), [])
            self.assertIsNone(self.entries(back)[0]["dtls"])

    def test_sdesAndDtlsOfferAnsweredWithDtls(self):
        """An offer with a=crypto and a=setup/a=fingerprint: DTLS wins, no
        a=crypto in the answer and no SDES keys on the socket."""
        _, back = self.browser_call(corpus.WEBRTC_OFFER_SDES,
                                    {"transport-protocol": "RTP/SAVPF"})
        self.assertEqual(attribute(back, "crypto"), [])
        self.assertEqual(attribute(back, "setup"), ["active"])
        rtp = self.entries(back)[0]
        self.assertEqual((rtp["srtp_in"], rtp["srtp_out"]), (None, None))
        self.assertEqual(rtp["dtls"]["role"], "client")

    def test_badCandidateIgnored(self):
        bad = corpus.WEBRTC_OFFER.replace(
            "a=ice-ufrag:", "a=candidate:x 1 udp notanumber 198.51.100.7 1 typ host\r\n"
            "a=candidate:2 1 udp 1686052607 203.0.113.9 40000 typ srflx raddr 0.0.0.0 "
            "rport 0\r\na=ice-ufrag:")
        _, back = self.browser_call(bad)
        self.assertEqual(self.entries(back)[0]["ice"]["candidates"], [
            OFFER_CANDIDATE,
            "2 1 udp 1686052607 203.0.113.9 40000 typ srflx raddr 0.0.0.0 rport 0"])

    def test_sessionLevelCredentials(self):
        """ICE credentials at session level count for every m= line; without
        rtcp-mux the RTCP socket's agent gets the component 2 candidates."""
        _, back = self.browser_call(corpus.SIP_OFFER_ICE, {"transport-protocol": "RTP/AVP",
                                                           "rtcp-mux": []})
        rtp, rtcp = self.entries(back)
        self.assertEqual((rtp["ice"]["remote_ufrag"], rtp["ice"]["remote_pwd"]),
                         ("F7gI", "x9cml/YzichV2+XlhiMu8g"))
        self.assertEqual(rtp["ice"]["candidates"], [
            "1 1 UDP 2130706431 192.0.2.10 49170 typ host",
            "2 1 UDP 1694498815 203.0.113.77 45664 typ srflx raddr 192.0.2.10 rport 49170"])
        self.assertEqual(rtcp["ice"]["component"], 2)
        self.assertEqual(rtcp["ice"]["candidates"],
                         ["1 2 UDP 2130706430 192.0.2.10 49171 typ host"])

    def test_reinviteKeepsIceCredentials(self):
        _, back = self.browser_call()
        again = self.offer(corpus.WEBRTC_OFFER.replace(" 2 IN IP4", " 3 IN IP4"),
                           **BROWSER_OFFER)
        back2 = self.answer(corpus.SIP_ANSWER, **BROWSER_ANSWER)
        self.assertEqual(attribute(back2, "ice-ufrag"), attribute(back, "ice-ufrag"))
        self.assertEqual(attribute(back2, "ice-pwd"), attribute(back, "ice-pwd"))
        self.assertEqual(self.entries(back2)[0]["ice"], self.entries(back)[0]["ice"])
        self.assertIsNotNone(again)

    def test_plainCallMakesNoIceCredentials(self):
        """A party that never gets ICE data from us has no ICE credentials
        of ours (nothing drawn, nothing kept per idle plain call)."""
        self.offer(corpus.SIP_OFFER)
        self.answer(corpus.SIP_ANSWER)
        call = self.registry.get("c1")
        medias = [m for ml in call.monologues for m in ml.medias]
        self.assertTrue(medias)
        self.assertEqual({(m.ice_ufrag, m.ice_pwd) for m in medias}, {(None, None)})

    def test_iceCredentialsMadeWhenAdvertised(self):
        """Our ICE credentials towards the browser are made when the answer
        to it carries ICE, and are what it carries."""
        _, back = self.browser_call()
        browser = [m for ml in self.registry.get("c1").monologues for m in ml.medias
                   if m.ice_used]
        self.assertTrue(browser)
        for m in browser:
            self.assertEqual(attribute(back, "ice-ufrag")[:1], [m.ice_ufrag])
            self.assertEqual(attribute(back, "ice-pwd")[:1], [m.ice_pwd])

    def test_iceRestartChangesOurCredentials(self):
        _, back = self.browser_call()
        self.offer(corpus.WEBRTC_OFFER.replace("a=ice-ufrag:Yk3d", "a=ice-ufrag:Nw5r")
                   .replace(BROWSER_PWD, "Zz0wR4mZc7nLs2vT8kJx1hBf"), **BROWSER_OFFER)
        back2 = self.answer(corpus.SIP_ANSWER, **BROWSER_ANSWER)
        self.assertNotEqual(attribute(back2, "ice-ufrag"), attribute(back, "ice-ufrag"))
        self.assertNotEqual(attribute(back2, "ice-pwd"), attribute(back, "ice-pwd"))
        entry = self.entries(back2)[0]["ice"]
        self.assertEqual((entry["ufrag"], entry["remote_ufrag"], entry["remote_pwd"]),
                         (attribute(back2, "ice-ufrag")[0], "Nw5r", "Zz0wR4mZc7nLs2vT8kJx1hBf"))

    def test_videoRejectedTowardsBrowser(self):
        """The SIP side has no video: port 0 towards the browser with its
        a=mid and a=end-of-candidates; the audio keeps ICE and DTLS."""
        self.offer(corpus.WEBRTC_OFFER_AV, **BROWSER_OFFER)
        back = self.answer(corpus.SIP_ANSWER_AV_NO_VIDEO, **BROWSER_ANSWER)
        self.assertIn("\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n"
                      "a=end-of-candidates\r\n", back)
        self.assertEqual(attribute(back, "mid"), ["0", "1"])
        self.assertEqual(self.entries(back)[0]["dtls"]["role"], "client")

    def test_videoPassesThrough(self):
        """Both sides have video: each m= line has its own sockets, ICE
        credentials and DTLS endpoint towards the browser."""
        self.offer(corpus.WEBRTC_OFFER_AV, **BROWSER_OFFER)
        back = self.answer(corpus.SIP_ANSWER_AV, **BROWSER_ANSWER)
        self.assertEqual(attribute(back, "mid"), ["0", "1"])
        audio, video = self.entries(back, 0)[0], self.entries(back, 1)[0]
        self.assertEqual(video["dtls"]["role"], "client")
        self.assertNotEqual(audio["ice"]["ufrag"], video["ice"]["ufrag"])
        self.assertEqual(video["ice"]["ufrag"], attribute(back, "ice-ufrag")[1])
        self.assertEqual(video["ice"]["remote_ufrag"], "Zq9k")

    # -- ICE-lite ----------------------------------------------------------------------

    def test_iceLiteForward(self):
        out = self.offer(corpus.SIP_OFFER, **dict(SEED_OFFER, **{"ICE-lite": "forward"}))
        self.assertIn("\r\nt=0 0\r\na=ice-lite\r\nm=audio", out)
        ice = self.entries(out)[0]["ice"]
        self.assertEqual((ice["lite"], ice["controlling"]), (True, False))

    def test_iceLiteBackward(self):
        self.offer(corpus.WEBRTC_OFFER, **dict(BROWSER_OFFER, **{"ICE-lite": "backward"}))
        back = self.answer(corpus.SIP_ANSWER, **BROWSER_ANSWER)
        self.assertIn("\r\na=ice-lite\r\nm=audio", back)
        ice = self.entries(back)[0]["ice"]
        self.assertEqual((ice["lite"], ice["controlling"]), (True, False))

    def test_iceLiteOnAnswerChangesNothing(self):
        self.offer(corpus.WEBRTC_OFFER, **BROWSER_OFFER)
        back = self.answer(corpus.SIP_ANSWER, **dict(BROWSER_ANSWER, **{"ICE-lite": "both"}))
        self.assertNotIn("a=ice-lite", back)
        self.assertEqual(self.entries(back)[0]["ice"]["lite"], False)

    # -- a browser calls a browser -------------------------------------------------------

    def test_browserToBrowser(self):
        """ICE and DTLS on both legs: controlling towards the callee, controlled
        towards the caller; the callee answered passive, so we are its client,
        and we answer the caller's actpass as active (its client too).  The
        caller's trickle option is not passed on in the offer."""
        flags = {"ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF", "SDES": ["off"]}
        out = self.offer(corpus.WEBRTC_OFFER, **flags)
        self.assertEqual(attribute(out, "ice-options"), [])
        self.assertNotIn("a=end-of-candidates", out)
        callee_answer = corpus.WEBRTC_ANSWER.replace("a=setup:active", "a=setup:passive")
        back = self.answer(callee_answer, **flags)
        callee, caller = self.entries(out)[0], self.entries(back)[0]
        self.assertEqual(callee["dtls"], {"role": "client", "fingerprint": BROWSER_FINGERPRINT})
        self.assertEqual(caller["dtls"], {"role": "client", "fingerprint": BROWSER_FINGERPRINT})
        self.assertEqual((callee["ice"]["controlling"], caller["ice"]["controlling"]),
                         (True, False))
        self.assertEqual(callee["ice"]["candidates"], [ANSWER_CANDIDATE])
        self.assertEqual(caller["ice"]["candidates"], [OFFER_CANDIDATE])
        self.assertEqual(attribute(back, "ice-options"), ["trickle"])


class LearnTransportPlainTests(SynchronousTestCase):
    """Negotiator._learn_transport on a section without any ICE or DTLS
    attribute (the plain call's short way) leaves what the general way
    leaves: the party's earlier ICE and DTLS data cleared, our own ICE
    credentials kept."""

    PLAIN = ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
             "m=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")

    def learn(self, offer):
        from omnirtp.call.model import Media
        from omnirtp.sdp.model import SessionDescription, inspect

        negotiator = ControlStack().negotiator
        sd = SessionDescription.parse(self.PLAIN)
        info = inspect(sd)[0]
        m = Media(1, "audio", None)
        own = (m.ice_ufrag, m.ice_pwd)
        m.ice_seen = m.ice_trickle = m.ice_remote_lite = m.ice_used = True
        m.ice_remote_ufrag, m.ice_remote_pwd = "ru", "rp"
        m.ice_candidates = ("1 1 UDP 1 192.0.2.1 4000 typ host",)
        m.dtls_setup, m.dtls_fingerprint, m.dtls_role = "active", "sha-256 AB", "server"

        class Flags:
            call_id = "c1"

        negotiator._learn_transport(m, info, sd.media[0], sd, Flags, offer)
        return m, own

    def test_answer(self):
        m, own = self.learn(offer=False)
        self.assertEqual((m.ice_ufrag, m.ice_pwd), own)
        self.assertEqual((m.ice_seen, m.ice_remote_ufrag, m.ice_remote_pwd, m.ice_candidates,
                          m.ice_trickle, m.ice_remote_lite, m.ice_used),
                         (False, None, None, (), False, False, False))
        self.assertEqual((m.dtls_setup, m.dtls_fingerprint, m.dtls_role), (None, None, None))

    def test_offer(self):
        """An offer leaves ice_used and the DTLS role to the plan."""
        m, own = self.learn(offer=True)
        self.assertEqual((m.ice_ufrag, m.ice_pwd), own)
        self.assertEqual((m.ice_remote_ufrag, m.ice_candidates, m.ice_used, m.dtls_role),
                         (None, (), True, "server"))
        self.assertEqual((m.dtls_setup, m.dtls_fingerprint), (None, None))
