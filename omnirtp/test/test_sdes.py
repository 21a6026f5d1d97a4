"""SDES negotiation through the Dispatcher: a=crypto lines in offers and
answers, the SDES flags, re-INVITEs, MKI, and the srtp_in/srtp_out keys each
engine socket entry gets (on a Clock and an in-memory engine)."""

import base64

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test.fakes import ControlStackTests
from omnirtp.errors import E_MKI_UNSUPPORTED
from omnirtp.test.test_commands import ANSWER, OFFER, media_port

K_A = base64.b64encode(b"A" * 30).decode()       # the caller's keys
K_A2 = base64.b64encode(b"a" * 30).decode()
K_B = base64.b64encode(b"B" * 30).decode()       # the callee's key
PLAIN = None


def sdes_sdp(proto, *cryptos, origin="alice 1 1 IN IP4 192.0.2.10", address="192.0.2.10",
             port=49170):
    return "".join(line + "\r\n" for line in [
        "v=0", "o=" + origin, "s=-", "c=IN IP4 " + address, "t=0 0",
        "m=audio %d %s 0 8" % (port, proto)] + ["a=crypto:" + c for c in cryptos] +
        ["a=sendrecv"])


def crypto_lines(sdp):
    return [line[len("a=crypto:"):] for line in sdp.split("\r\n")
            if line.startswith("a=crypto:")]


def line_key(value):
    """The base64 key of an a=crypto value, padded as the engine dicts are."""
    text = value.split()[2][len("inline:"):].split("|")[0]
    return base64.b64encode(base64.b64decode(text + "=" * (-len(text) % 4))).decode()


def keys(entry):
    return entry["srtp_in"], entry["srtp_out"]


class SdesTests(ControlStackTests, SynchronousTestCase):

    def offer(self, sdp=OFFER, **kw):
        kw.setdefault("from_tag", "ft")
        return self.call(command="offer", call_id="c1", sdp=sdp, **kw)["sdp"]

    def answer(self, sdp=ANSWER, **kw):
        return self.call(command="answer", call_id="c1", from_tag="ft", to_tag="tt",
                         sdp=sdp, **kw)["sdp"]

    def entries(self, sdp):
        """The RTP and RTCP engine entries of the socket ``sdp`` advertises."""
        addr, port = media_port(sdp)
        return self.engine.configured[(addr, port)], self.engine.configured[(addr, port + 1)]

    # -- RTP/AVP -> RTP/SAVP ------------------------------------------------------

    def test_offerTowardsSavp(self):
        """Our three suites, tags 1-3, fresh unpadded keys, after a=rtcp and
        before DTLS's a=setup/a=fingerprint and a=ptime (as rtpengine 10.5
        lays them out)."""
        sdp = self.offer(**{"transport-protocol": "RTP/SAVP"})
        self.assertIn(" RTP/SAVP 0 8 101\r\n", sdp)
        lines = crypto_lines(sdp)
        self.assertEqual([line.split()[:2] for line in lines],
                         [["1", "AEAD_AES_128_GCM"], ["2", "AES_CM_128_HMAC_SHA1_80"],
                          ["3", "AES_CM_128_HMAC_SHA1_32"]])
        lengths = [len(base64.b64decode(line_key(line))) for line in lines]
        self.assertEqual(lengths, [28, 30, 30])
        self.assertNotIn("=", "".join(lines))
        self.assertEqual(len(set(line_key(line) for line in lines)), 3)
        tail = sdp.split("a=sendrecv\r\n")[1]
        self.assertTrue(tail.startswith("a=rtcp:"))
        self.assertEqual(tail.split("\r\n")[1:7],
                         ["a=crypto:" + v for v in lines] +
                         ["a=setup:actpass",
                          "a=fingerprint:" + self.negotiator.certificate.fingerprint(),
                          "a=ptime:20"])
        for entry in self.entries(sdp):
            self.assertEqual(keys(entry), (None, None))

    def test_savpfGetsCryptoToo(self):
        sdp = self.offer(**{"transport-protocol": "RTP/SAVPF"})
        self.assertEqual(len(crypto_lines(sdp)), 3)

    def test_answerFromSrtpSide(self):
        """The SRTP answerer's key unprotects what it sends; the key we
        offered under its tag protects what we send it; the caller stays plain."""
        offer = self.offer(**{"transport-protocol": "RTP/SAVP"})
        ours = {line.split()[0]: line for line in crypto_lines(offer)}
        answer = self.answer(sdes_sdp("RTP/SAVP", "2 AES_CM_128_HMAC_SHA1_80 inline:" + K_B,
                                      origin="bob 1 1 IN IP4 198.51.100.20",
                                      address="198.51.100.20", port=3456))
        self.assertIn(" RTP/AVP 0 8\r\n", answer)
        self.assertEqual(crypto_lines(answer), [])
        want = ({"suite": "AES_CM_128_HMAC_SHA1_80", "key": K_B},
                {"suite": "AES_CM_128_HMAC_SHA1_80", "key": line_key(ours["2"])})
        for entry in self.entries(offer):
            self.assertEqual(keys(entry), want)
        for entry in self.entries(answer):
            self.assertEqual(keys(entry), (None, None))

    def test_answerWithUnofferedTag(self):
        self.offer(**{"transport-protocol": "RTP/SAVP"})
        offer = self.offer(to_tag="tt", **{"transport-protocol": "RTP/SAVP"})
        self.answer(sdes_sdp("RTP/SAVP", "9 AES_CM_128_HMAC_SHA1_80 inline:" + K_B,
                             "1 AES_CM_128_HMAC_SHA1_80 inline:" + K_B))
        for entry in self.entries(offer):
            self.assertEqual(keys(entry), (None, None))

    def test_answerWithMkiRefused(self):
        self.offer(**{"transport-protocol": "RTP/SAVP"})
        error = self.fails(command="answer", call_id="c1", from_tag="ft", to_tag="tt",
                           sdp=sdes_sdp("RTP/SAVP",
                                        "2 AES_CM_128_HMAC_SHA1_80 inline:%s|1:4" % K_B))
        self.assertEqual(error.reason, E_MKI_UNSUPPORTED)

    def test_reinviteRepeatsNegotiatedLine(self):
        """A re-offer repeats the negotiated line (tag, key) first and gives
        the other suites new keys and the following tags; the answer that
        keeps its key keeps the engine keys."""
        first = crypto_lines(self.offer(**{"transport-protocol": "RTP/SAVP"}))
        answer = sdes_sdp("RTP/SAVP", "2 AES_CM_128_HMAC_SHA1_80 inline:" + K_B)
        self.answer(answer)
        again = self.offer(to_tag="tt", **{"transport-protocol": "RTP/SAVP"})
        lines = crypto_lines(again)
        self.assertEqual(lines[0], first[1])
        self.assertEqual([line.split()[:2] for line in lines[1:]],
                         [["3", "AEAD_AES_128_GCM"], ["4", "AES_CM_128_HMAC_SHA1_32"]])
        self.assertNotIn(line_key(lines[1]), [line_key(v) for v in first])
        self.answer(answer)
        self.assertEqual(keys(self.entries(again)[0]),
                         ({"suite": "AES_CM_128_HMAC_SHA1_80", "key": K_B},
                          {"suite": "AES_CM_128_HMAC_SHA1_80", "key": line_key(first[1])}))

    # -- RTP/SAVP -> RTP/AVP --------------------------------------------------------

    def sdes_call(self, *cryptos, **kw):
        offer = self.offer(sdes_sdp("RTP/SAVP", *cryptos), **dict(
            {"transport-protocol": "RTP/AVP"}, **kw))
        return offer, self.answer()

    def test_srtpOffererToPlain(self):
        """Crypto lines are not passed to the plain side; the answer to the
        offerer takes its first suite and tag with our key, no lifetime,
        and the offerer's key unprotects what it sends."""
        offer, answer = self.sdes_call("3 AES_CM_128_HMAC_SHA1_32 inline:%s|2^31" % K_A,
                                       "5 AES_CM_128_HMAC_SHA1_80 inline:" + K_A2)
        self.assertIn(" RTP/AVP 0 8\r\n", offer)
        self.assertEqual(crypto_lines(offer), [])
        self.assertIn(" RTP/SAVP 0\r\n", answer)
        [line] = crypto_lines(answer)
        self.assertEqual(line.split()[:2], ["3", "AES_CM_128_HMAC_SHA1_32"])
        self.assertNotIn("|", line)
        self.assertNotIn(line_key(line), (K_A, K_A2))
        for entry in self.entries(answer):
            self.assertEqual(keys(entry), ({"suite": "AES_CM_128_HMAC_SHA1_32", "key": K_A},
                                           {"suite": "AES_CM_128_HMAC_SHA1_32",
                                            "key": line_key(line)}))
        for entry in self.entries(offer):
            self.assertEqual(keys(entry), (None, None))

    def test_sessionParamsEchoed(self):
        _, answer = self.sdes_call("1 AES_CM_128_HMAC_SHA1_80 inline:%s WSH=64" % K_A)
        self.assertTrue(crypto_lines(answer)[0].endswith(" WSH=64"))

    def test_unusableLinesPassedOver(self):
        """Unsupported suites and session parameters, bad lines: the next
        line is taken; nothing usable: no crypto at all (as rtpengine)."""
        _, answer = self.sdes_call(
            "1 AES_256_CM_HMAC_SHA1_80 inline:" + base64.b64encode(b"x" * 46).decode(),
            "2 AES_CM_128_HMAC_SHA1_80 inline:%s UNENCRYPTED_SRTCP" % K_A,
            "3 AES_CM_128_HMAC_SHA1_80 inline:short",
            "4 NOT_A_SUITE inline:" + K_A,
            "6 AES_CM_128_HMAC_SHA1_80 inline:" + K_A2)
        self.assertEqual([line.split()[:2] for line in crypto_lines(answer)],
                         [["6", "AES_CM_128_HMAC_SHA1_80"]])
        self.assertEqual(keys(self.entries(answer)[0])[0],
                         {"suite": "AES_CM_128_HMAC_SHA1_80", "key": K_A2})

    def test_nothingUsable(self):
        _, answer = self.sdes_call("3 AES_CM_128_HMAC_SHA1_80 inline:short")
        self.assertIn(" RTP/SAVP 0\r\n", answer)
        self.assertEqual(crypto_lines(answer), [])
        self.assertEqual(keys(self.entries(answer)[0]), (None, None))

    def test_mkiOnlyRefused(self):
        """An offer keyed only with MKI lines fails with a clear error and
        leaves no call and no port behind."""
        error = self.fails(command="offer", call_id="c1", from_tag="ft",
                           sdp=sdes_sdp("RTP/SAVP",
                                        "1 AES_CM_128_HMAC_SHA1_80 inline:%s|2^20|1:4" % K_A))
        self.assertEqual(error.reason, E_MKI_UNSUPPORTED)
        self.assertIsNone(self.registry.get("c1"))
        self.assertEqual(self.engine.held, {})

    def test_mkiMixedTakesNext(self):
        _, answer = self.sdes_call("1 AES_CM_128_HMAC_SHA1_80 inline:%s|2^20|1:4" % K_A,
                                   "2 AES_CM_128_HMAC_SHA1_32 inline:" + K_A2)
        self.assertEqual(crypto_lines(answer)[0].split()[:2], ["2", "AES_CM_128_HMAC_SHA1_32"])

    def test_sdesNoOnOfferAppliesToAnswer(self):
        _, answer = self.sdes_call("3 AES_CM_128_HMAC_SHA1_32 inline:" + K_A,
                                   "5 AES_CM_128_HMAC_SHA1_80 inline:" + K_A2,
                                   SDES=["no-AES_CM_128_HMAC_SHA1_32"])
        self.assertEqual(crypto_lines(answer)[0].split()[:2], ["5", "AES_CM_128_HMAC_SHA1_80"])

    def test_reinviteWithNewKeys(self):
        """New keys of the offerer apply once answered; our key stays."""
        _, answer = self.sdes_call("1 AES_CM_128_HMAC_SHA1_80 inline:" + K_A)
        ours = line_key(crypto_lines(answer)[0])
        self.offer(sdes_sdp("RTP/SAVP", "1 AES_CM_128_HMAC_SHA1_80 inline:" + K_A2,
                            origin="alice 1 2 IN IP4 192.0.2.10"),
                   to_tag="tt", **{"transport-protocol": "RTP/AVP"})
        self.assertEqual(keys(self.entries(answer)[0])[0]["key"], K_A)   # not yet answered
        again = self.answer()
        self.assertEqual(crypto_lines(again), crypto_lines(answer))
        self.assertEqual(keys(self.entries(again)[0]),
                         ({"suite": "AES_CM_128_HMAC_SHA1_80", "key": K_A2},
                          {"suite": "AES_CM_128_HMAC_SHA1_80", "key": ours}))

    def test_reinviteOtherSuiteNewKey(self):
        _, answer = self.sdes_call("1 AES_CM_128_HMAC_SHA1_80 inline:" + K_A)
        self.offer(sdes_sdp("RTP/SAVP", "1 AES_CM_128_HMAC_SHA1_32 inline:" + K_A,
                            origin="alice 1 2 IN IP4 192.0.2.10"),
                   to_tag="tt", **{"transport-protocol": "RTP/AVP"})
        [line] = crypto_lines(self.answer())
        self.assertEqual(line.split()[:2], ["1", "AES_CM_128_HMAC_SHA1_32"])
        self.assertNotEqual(line_key(line), line_key(crypto_lines(answer)[0]))

    def test_offererGoesPlain(self):
        """A re-INVITE to plain RTP/AVP drops the SRTP keys of that side."""
        _, answer = self.sdes_call("1 AES_CM_128_HMAC_SHA1_80 inline:" + K_A)
        self.offer(to_tag="tt", **{"transport-protocol": "RTP/AVP"})
        again = self.answer()
        self.assertIn(" RTP/AVP 0", again)
        self.assertEqual(crypto_lines(again), [])
        self.assertEqual(keys(self.entries(again)[0]), (None, None))

    # -- RTP/SAVP on both sides -----------------------------------------------------

    def test_passthrough(self):
        """The offerer's lines go on with their tags and keys (lifetime
        dropped), then ours; when the answerer takes one of them, its key
        goes back to the offerer."""
        offer = self.offer(sdes_sdp("RTP/SAVP", "3 AES_CM_128_HMAC_SHA1_32 inline:%s|2^31" % K_A,
                                    "5 AES_CM_128_HMAC_SHA1_80 inline:" + K_A2))
        lines = crypto_lines(offer)
        self.assertEqual(lines[:2], ["3 AES_CM_128_HMAC_SHA1_32 inline:" + K_A,
                                     "5 AES_CM_128_HMAC_SHA1_80 inline:" + K_A2])
        self.assertEqual(lines[2].split()[:2], ["6", "AEAD_AES_128_GCM"])
        self.assertEqual(len(lines), 3)
        answer = self.answer(sdes_sdp("RTP/SAVP", "5 AES_CM_128_HMAC_SHA1_80 inline:" + K_B))
        self.assertEqual(crypto_lines(answer), ["5 AES_CM_128_HMAC_SHA1_80 inline:" + K_B])
        suite = "AES_CM_128_HMAC_SHA1_80"
        self.assertEqual(keys(self.entries(answer)[0]),
                         ({"suite": suite, "key": K_A2}, {"suite": suite, "key": K_B}))
        self.assertEqual(keys(self.entries(offer)[0]),
                         ({"suite": suite, "key": K_B}, {"suite": suite, "key": K_A2}))

    def test_answererTakesOurOwnLine(self):
        offer = self.offer(sdes_sdp("RTP/SAVP", "1 AES_CM_128_HMAC_SHA1_80 inline:" + K_A))
        ours = crypto_lines(offer)[1]
        self.assertEqual(ours.split()[:2], ["2", "AEAD_AES_128_GCM"])
        aead_b = base64.b64encode(b"G" * 28).decode()
        answer = self.answer(sdes_sdp("RTP/SAVP", "2 AEAD_AES_128_GCM inline:" + aead_b))
        [line] = crypto_lines(answer)
        self.assertEqual(line.split()[:2], ["1", "AES_CM_128_HMAC_SHA1_80"])
        self.assertNotIn(line_key(line), (K_A, K_B))
        self.assertEqual(keys(self.entries(offer)[0]),
                         ({"suite": "AEAD_AES_128_GCM", "key": aead_b},
                          {"suite": "AEAD_AES_128_GCM", "key": line_key(ours)}))

    # -- flags -------------------------------------------------------------------------

    def suites(self, **kw):
        sdp = self.offer(**dict({"transport-protocol": "RTP/SAVP"}, **kw))
        return [line.split()[:2] for line in crypto_lines(sdp)]

    def test_sdesOff(self):
        self.assertEqual(self.suites(flags=["SDES-off"]), [])

    def test_sdesOffKey(self):
        self.assertEqual(self.suites(SDES=["off"]), [])

    def test_webrtcFlagHasNoSdes(self):
        sdp = self.offer(flags=["WebRTC"])
        self.assertIn("UDP/TLS/RTP/SAVPF", sdp)
        self.assertEqual(crypto_lines(sdp), [])

    def test_udpTlsProfileOffersSdes(self):
        """As 10.5: without SDES-off a UDP/TLS profile gets a=crypto too."""
        self.assertEqual(len(self.suites(**{"transport-protocol": "UDP/TLS/RTP/SAVPF"})), 3)

    def test_sdesNo(self):
        self.assertEqual(self.suites(flags=["SDES-no-AEAD_AES_128_GCM"]),
                         [["1", "AES_CM_128_HMAC_SHA1_80"], ["2", "AES_CM_128_HMAC_SHA1_32"]])

    def test_sdesNoKeyList(self):
        self.assertEqual(self.suites(SDES="no-AEAD_AES_128_GCM,no-AES_CM_128_HMAC_SHA1_80"),
                         [["1", "AES_CM_128_HMAC_SHA1_32"]])

    def test_sdesOnly(self):
        self.assertEqual(self.suites(flags=["SDES-only-AES_CM_128_HMAC_SHA1_32"]),
                         [["1", "AES_CM_128_HMAC_SHA1_32"]])

    def test_sdesRtppFlags(self):
        self.assertEqual(self.suites(**{"rtpp-flags": "SDES-only-AES_CM_128_HMAC_SHA1_80"}),
                         [["1", "AES_CM_128_HMAC_SHA1_80"]])

    def test_plainOutputStripsCrypto(self):
        sdp = self.offer(sdes_sdp("RTP/SAVP", "1 AES_CM_128_HMAC_SHA1_80 inline:" + K_A),
                         **{"transport-protocol": "RTP/AVPF"})
        self.assertIn(" RTP/AVPF 0 8\r\n", sdp)
        self.assertEqual(crypto_lines(sdp), [])

    def test_sdesPadAndLifetime(self):
        sdp = self.offer(SDES=["pad", "lifetime"], **{"transport-protocol": "RTP/SAVP"})
        lines = crypto_lines(sdp)
        self.assertTrue(lines[0].endswith("==|2^31"))
        self.assertTrue(all(line.endswith("|2^31") for line in lines))

    def test_unknownSdesOptionLogged(self):
        from twisted.logger import globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.suites(SDES=["bogus"])
        self.assertIn(("c1", "bogus"), [(e.get("call_id"), e.get("word")) for e in events])

    def test_queryShowsSuite(self):
        """query: the SDES media flag and each stream's crypto suite (as 10.5)."""
        self.sdes_call("1 AES_CM_128_HMAC_SHA1_80 inline:" + K_A)
        reply = self.call(command="query", call_id="c1")
        caller = reply["tags"]["ft"]["medias"][0]
        callee = reply["tags"]["tt"]["medias"][0]
        self.assertIn("SDES", caller["flags"])
        self.assertEqual([s.get("crypto suite") for s in caller["streams"]],
                         ["AES_CM_128_HMAC_SHA1_80"] * 2)
        self.assertNotIn("SDES", callee["flags"])
        self.assertEqual([s.get("crypto suite") for s in callee["streams"]], [None, None])

    def test_reinviteFromSrtpCallee(self):
        """The SRTP callee re-offers without flags: the plain caller gets
        RTP/AVP; the callee's answer carries our key of the first answer."""
        offer = self.offer(**{"transport-protocol": "RTP/SAVP"})
        ours = crypto_lines(offer)[1]
        callee = sdes_sdp("RTP/SAVP", "2 AES_CM_128_HMAC_SHA1_80 inline:" + K_B,
                          origin="bob 1 1 IN IP4 198.51.100.20", address="198.51.100.20")
        self.answer(callee)
        reoffer = self.call(command="offer", call_id="c1", from_tag="tt", to_tag="ft",
                            sdp=callee.replace("bob 1 1", "bob 1 2"))["sdp"]
        self.assertIn(" RTP/AVP 0 8\r\n", reoffer)
        self.assertEqual(crypto_lines(reoffer), [])
        back = self.call(command="answer", call_id="c1", from_tag="tt", to_tag="ft",
                         sdp=OFFER)["sdp"]
        self.assertIn(" RTP/SAVP 0 8\r\n", back)
        self.assertEqual(crypto_lines(back), [ours])

    def test_mkiReinviteLeavesCallAlone(self):
        """A re-INVITE keyed only with MKI fails before anything changes: the
        call, its ports, endpoints and keys stay as they were."""
        offer, answer = self.sdes_call("1 AES_CM_128_HMAC_SHA1_80 inline:" + K_A)
        before = dict(self.engine.configured)
        held = list(self.engine.held["c1"])
        error = self.fails(command="offer", call_id="c1", from_tag="ft", to_tag="tt",
                           sdp=sdes_sdp("RTP/SAVP",
                                        "1 AES_CM_128_HMAC_SHA1_80 inline:%s|1:4" % K_A2,
                                        origin="alice 1 2 IN IP4 192.0.2.10",
                                        address="192.0.2.99", port=40000),
                           **{"transport-protocol": "RTP/AVP"})
        self.assertEqual(error.reason, E_MKI_UNSUPPORTED)
        self.assertEqual(self.engine.configured, before)
        self.assertEqual(self.engine.held["c1"], held)
        caller = self.registry.get("c1").find("ft").media(1)
        self.assertEqual(caller.rtp_endpoint, ("192.0.2.10", 49170))
        self.assertEqual(caller.srtp_in, {"suite": "AES_CM_128_HMAC_SHA1_80", "key": K_A})
        again = self.offer(sdes_sdp("RTP/SAVP", "1 AES_CM_128_HMAC_SHA1_80 inline:" + K_A,
                                    origin="alice 1 3 IN IP4 192.0.2.10"),
                           to_tag="tt", **{"transport-protocol": "RTP/AVP"})
        self.assertEqual(media_port(again), media_port(offer))
        self.assertEqual(self.entries(answer)[0]["endpoint"], ("192.0.2.10", 49170))
