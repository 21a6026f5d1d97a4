"""Tests for omnirtp.sdp.rewrite and omnirtp.sdp.codecs.

Most expectations are rtpengine 10.5's own outputs for the corpus cases
(omnirtp/test/fixtures/corpus/<case>.json, normalised by sdpnorm): the test
builds the plan the command layer would build for that step, rewrites the
same input SDP and compares the normalised result.
"""

import json
import re

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.sdp.codecs import Codec, CodecOps, codec_for
from omnirtp.sdp.model import SessionDescription
from omnirtp.sdp.rewrite import (
    IcePlan, MediaPlan, SessionPlan, host_candidates, new_ice_credentials, random_token,
    rewrite)
from omnirtp.test import corpus
from omnirtp.test.sdpnorm import Normaliser

LOCAL = ("IP4", "127.0.0.1")
_PLACEHOLDER = re.compile(r"\{([A-Z]+)(\d+)(\+1)?\}")


def canonical(lines):
    """Renumber placeholders by first appearance within one SDP."""
    tables = {}

    def sub(match):
        kind, num, plus = match.groups()
        table = tables.setdefault(kind, {})
        table.setdefault(num, str(len(table) + 1))
        return "{%s%s%s}" % (kind, table[num], plus or "")
    return [_PLACEHOLDER.sub(sub, line) for line in lines]


def expected(case, step):
    with open(corpus.fixture_path(case)) as f:
        return canonical(json.load(f)["steps"][step]["sdp"])


def request_sdp(case, step):
    return corpus.CASES_BY_NAME[case].requests[step]["sdp"]


def run(case, step, plan):
    sd = SessionDescription.parse(request_sdp(case, step))
    return canonical(Normaliser().normalise(rewrite(sd, plan)).splitlines())


def audio(port=40000, **kw):
    kw.setdefault("rtcp_port", port + 1)
    return MediaPlan(port=port, **kw)


def session(*media, address=LOCAL, **kw):
    return SessionPlan(family=address[0], address=address[1], media=list(media), **kw)


def ice_force(port, mux=False, trickle=False, address="127.0.0.1", foundation="F" * 16):
    ufrag, pwd = new_ice_credentials()
    return IcePlan(ufrag, pwd, host_candidates(foundation, address, port,
                                               None if mux else port + 1), trickle)


class CorpusLayoutTests(SynchronousTestCase):
    """rewrite() reproduces rtpengine 10.5's layout for plain RTP."""

    def check(self, case, step, plan):
        self.assertEqual(run(case, step, plan), expected(case, step))

    def test_plain_offer(self):
        self.check("plain_offer_answer", 0, session(audio(ptime=20)))

    def test_plain_answer(self):
        """ptime towards the offerer comes from the offer (the plan says 20)."""
        self.check("plain_offer_answer", 1, session(audio(ptime=20)))

    def test_replace_origin(self):
        self.check("replace_origin", 0, session(audio(ptime=20), replace_origin=True))

    def test_ice_force_offer(self):
        self.check("seed_flags_avp", 0, session(audio(ptime=20, ice=ice_force(40000)),
                                                replace_origin=True))

    def test_ice_remove_answer(self):
        self.check("seed_flags_avp", 1, session(audio(ptime=20), replace_origin=True))

    def test_ice_force_with_rtcp_mux(self):
        """With mux accepted: a=rtcp carries the RTP port, one candidate."""
        self.check("ice_force_rtcp_mux", 1, session(audio(
            rtcp_port=40000, rtcp_mux=True, ice=ice_force(40000, mux=True))))

    def test_ice_force_mux_offered(self):
        """Mux offered: a=rtcp:<p+1> plus a=rtcp-mux, two candidates."""
        self.check("ice_force_rtcp_mux", 0, session(audio(rtcp_mux=True, ice=ice_force(40000))))

    def test_peer_ice_replaced(self):
        self.check("ice_default_input_ice", 0, session(audio(ice=ice_force(40000))))

    def test_peer_ice_removed(self):
        self.check("ice_remove_input_ice", 0, session(audio()))

    def test_webrtc_offer_to_plain(self):
        """WebRTC offer out as RTP/AVP: BUNDLE, ICE, DTLS lines dropped; extmap,
        msid, ssrc kept before a=mid and the codec lines; zero c= replaced."""
        self.check("webrtc_offer_plain_out", 0, session(
            audio(protocol="RTP/AVP", rtcp_mux=True, keep_zero_address=False),
            keep_zero_address=False))

    def test_webrtc_answer_to_plain(self):
        """The seed 200 OK: a=mid dropped (the offer had none)."""
        self.check("seed_offer_answer", 1, session(
            audio(protocol="RTP/AVP", ptime=20, keep_mid=False, keep_zero_address=False),
            replace_origin=True, keep_zero_address=False))

    def test_seed_offer_without_srtp_lines(self):
        """The seed offer matches rtpengine's except for the SRTP lines (a later issue)."""
        plan = session(audio(protocol="RTP/SAVPF", ptime=20, ice=ice_force(40000)),
                       replace_origin=True)
        want = [line for line in expected("seed_offer_answer", 0)
                if not line.startswith(("a=crypto:", "a=setup:", "a=fingerprint:"))]
        self.assertEqual(run("seed_offer_answer", 0, plan), want)

    def test_rtcp_mux_require(self):
        self.check("rtcp_mux_require", 0, session(audio(rtcp_port=40000, rtcp_mux=True,
                                                        ptime=20)))

    def test_rtcp_mux_demux(self):
        self.check("rtcp_mux_demux", 0, session(audio()))

    def test_no_rtcp_attribute(self):
        self.check("no_rtcp_attribute", 0, session(audio(rtcp_port=None, ptime=20)))

    def test_full_rtcp_attribute(self):
        self.check("full_rtcp_attribute", 0, session(audio(full_rtcp_attribute=True, ptime=20)))

    def test_original_sendrecv(self):
        """direction None keeps the input's direction lines (here: none)."""
        self.check("original_sendrecv", 0, session(audio(direction=None, ptime=20)))

    def test_hold_sendonly(self):
        self.check("hold_sendonly_reinvite", 2, session(audio(direction="sendonly", ptime=20)))

    def test_hold_zero_address(self):
        """c=0.0.0.0 stays, direction sendonly."""
        self.check("hold_zero_address", 2, session(audio(direction="sendonly", ptime=20)))

    def test_inactive(self):
        self.check("hold_inactive", 2, session(audio(direction="inactive", ptime=20)))

    def test_ipv6_to_ipv4(self):
        """IPv6 input, IPv4 interface: o= and c= become IP4; a=rtcp loses its address."""
        self.check("ipv6_input", 0, session(audio(), replace_origin=True))

    def test_media_level_connection(self):
        self.check("media_level_connection", 0, session(audio()))

    def test_rejected_in_offer(self):
        """A rejected m= is the bare m= line with its formats."""
        self.check("rejected_video_in_offer", 0, session(audio(), MediaPlan(port=0)))

    def test_rejected_in_answer(self):
        self.check("rejected_video_in_answer", 1, session(audio(), MediaPlan(port=0)))

    def test_two_media(self):
        self.check("two_media", 0, session(audio(40000), audio(40002),
                                           replace_origin=True))

    def test_three_media_ice(self):
        """One ufrag/pwd per m= line; one foundation per local address."""
        plan = session(audio(40000, ice=ice_force(40000)),
                       audio(40002, direction="recvonly", ice=ice_force(40002)),
                       audio(40004, direction="sendonly", ice=ice_force(40004)))
        self.check("three_media", 0, plan)

    def test_named_interface_address(self):
        self.check("direction_priv_pub", 0, session(audio(ptime=20), replace_origin=True,
                                                    address=("IP4", "203.0.113.1")))

    def test_loop_protect(self):
        self.check("loop_protect", 0, session(audio(ptime=20), loop_protect="0af4c5a4b851"))

    def test_ptime_rewritten(self):
        self.check("ptime_string", 0, session(audio(ptime=30)))


class CodecLayoutTests(SynchronousTestCase):
    """Codec filtering against rtpengine 10.5's outputs."""

    def check(self, case, codec, flags=(), ptime=None):
        ops = CodecOps.from_dict(codec, flags)
        self.assertEqual(run(case, 0, session(audio(codecs=ops, ptime=ptime))),
                         expected(case, 0))

    def test_strip(self):
        self.check("codec_strip_dict_offer", {"strip": ["PCMU"]}, ptime=20)

    def test_strip_word(self):
        self.check("codec_strip_word", None, ["codec-strip-PCMA"], ptime=20)

    def test_strip_case_insensitive(self):
        self.check("codec_strip_case", {"strip": ["OPUS", "pcma"]})

    def test_strip_name_rate_channels(self):
        """opus/48000 does not match opus/48000/2; g722/8000/1 matches G722/8000."""
        self.check("codec_strip_name_rate", {"strip": ["opus/48000", "g722/8000/1"]})

    def test_strip_numbers_ignored(self):
        """rtpengine 10.5 does not match bare payload-type numbers."""
        self.check("codec_strip_pt_number", {"strip": ["9", "101"]})

    def test_strip_all_reverts(self):
        self.check("codec_strip_all_reverts", {"strip": ["all"]}, ptime=20)

    def test_except(self):
        self.check("codec_except", {"strip": ["all"], "except": ["PCMA", "telephone-event"]})

    def test_except_word(self):
        self.check("codec_except_word", None, ["codec-strip-all", "codec-except-G722"])

    def test_offer_alone_keeps_order(self):
        self.check("codec_offer_reorder", {"offer": ["PCMA", "opus"]})

    def test_offer_after_strip_all_reorders(self):
        self.check("codec_strip_all_offer", {"strip": ["all"], "offer": ["PCMA", "opus"]})

    def test_mask(self):
        self.check("codec_mask", {"mask": ["opus"]})


class RewriteTests(SynchronousTestCase):
    def test_crlf_output(self):
        """Output always uses CRLF, also for LF-only input."""
        sd = SessionDescription.parse(corpus.SIP_OFFER.replace("\r\n", "\n"))
        out = rewrite(sd, session(audio()))
        self.assertTrue(out.endswith("\r\n"))
        self.assertNotIn("\n", out.replace("\r\n", ""))

    def test_exact_text(self):
        """The full text for a plain offer (no normaliser involved)."""
        sd = SessionDescription.parse(corpus.SIP_OFFER)
        self.assertEqual(rewrite(sd, session(audio(41100, ptime=20), replace_origin=True)), (
            "v=0\r\no=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\n"
            "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41100 RTP/AVP 0 8 101\r\n"
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
            "a=rtcp:41101\r\na=ptime:20\r\n"))

    def test_plan_length_checked(self):
        sd = SessionDescription.parse(corpus.SIP_OFFER)
        exc = self.assertRaises(ValueError, rewrite, sd, session(audio(), audio()))
        self.assertEqual(str(exc), "plan has 2 media plans for 1 m= lines")

    def test_ice_keep(self):
        """ice=None keeps the peer's ICE lines where they were."""
        sd = SessionDescription.parse(corpus.SIP_OFFER_ICE)
        out = rewrite(sd, session(audio(ice=None)))
        self.assertIn("a=ice-ufrag:F7gI\r\n", out)
        self.assertIn("a=candidate:1 1 UDP 2130706431 192.0.2.10 49170 typ host\r\n", out)

    def test_trickle_and_lite(self):
        sd = SessionDescription.parse(corpus.SIP_OFFER)
        ice = IcePlan("u" * 8, "p" * 26, host_candidates("f", "127.0.0.1", 40000), True)
        out = rewrite(sd, session(audio(rtcp_port=40000, rtcp_mux=True, ice=ice), ice_lite=True))
        self.assertIn("t=0 0\r\na=ice-lite\r\nm=audio", out)
        self.assertTrue(out.endswith(
            "a=ice-ufrag:uuuuuuuu\r\na=ice-pwd:" + "p" * 26 + "\r\na=ice-options:trickle\r\n"
            "a=candidate:f 1 UDP 2130706431 127.0.0.1 40000 typ host\r\n"
            "a=end-of-candidates\r\n"))

    def test_old_loop_protect_id_replaced(self):
        sd = SessionDescription.parse(corpus.SIP_OFFER.replace("t=0 0\r\n",
                                                               "t=0 0\r\na=rtpengine:old\r\n"))
        out = rewrite(sd, session(audio(), loop_protect="new"))
        self.assertNotIn("a=rtpengine:old", out)
        self.assertEqual(out.count("a=rtpengine:new\r\n"), 1)


class HelperTests(SynchronousTestCase):
    def test_candidate_priorities(self):
        """126·2^24 + 65535·2^8 + 255/254, as rtpengine writes them."""
        self.assertEqual(host_candidates("abc", "127.0.0.1", 40000, 40001), [
            "abc 1 UDP 2130706431 127.0.0.1 40000 typ host",
            "abc 2 UDP 2130706430 127.0.0.1 40001 typ host"])
        self.assertEqual(host_candidates("x", "10.0.0.1", 5, local_preference=65534),
                         ["x 1 UDP 2130706175 10.0.0.1 5 typ host"])

    def test_credentials(self):
        ufrag, pwd = new_ice_credentials()
        self.assertEqual((len(ufrag), len(pwd)), (8, 26))
        self.assertTrue((ufrag + pwd).isalnum())
        self.assertEqual(len(random_token(16)), 16)

    def test_codec_for_static(self):
        self.assertEqual(codec_for("0", {}), Codec("0", "PCMU", 8000, None))
        self.assertEqual(codec_for("96", {}), Codec("96"))

    def test_codec_spec_matching(self):
        opus = Codec("111", "opus", 48000, "2")
        self.assertTrue(opus.matches("OPUS"))
        self.assertTrue(opus.matches("opus/48000/2"))
        self.assertFalse(opus.matches("opus/48000"))
        self.assertFalse(opus.matches("111"))
        self.assertTrue(opus.matches("111", match_numbers=True))
        self.assertTrue(opus.matches("all"))

    def test_ops_from_flags_and_strings(self):
        ops = CodecOps.from_dict({"strip": "PCMU,PCMA", "except": [b"G722"]},
                                 ["codec-mask-opus", "codec-offer-x", "codec-strip-"])
        self.assertEqual((ops.strip, ops.mask, ops.offer, ops.except_),
                         (("PCMU", "PCMA"), ("opus",), ("x",), ("G722",)))
        self.assertFalse(CodecOps())


class CryptoLayoutTests(SynchronousTestCase):
    """a=crypto lines where rtpengine 10.5 writes them (SDES corpus cases)."""

    def check(self, case, step, plan):
        self.assertEqual(run(case, step, plan), expected(case, step))

    def crypto(self, *suites):
        from omnirtp.sdp import crypto
        return [crypto.generate(i, s).format() for i, s in enumerate(suites, 1)]

    def test_offer_towards_savp(self):
        """After a=rtcp (and a=rtcp-mux), before a=ptime; the input's have gone."""
        self.check("sdes_avp_to_savp", 0, session(audio(
            ptime=20, protocol="RTP/SAVP", crypto=self.crypto(
                "AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"))))

    def test_offer_with_ice_and_mux(self):
        self.check("sdes_savpf_ice_mux", 0, session(audio(
            ptime=20, protocol="RTP/SAVPF", rtcp_mux=True, ice=ice_force(40000),
            crypto=self.crypto("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80",
                               "AES_CM_128_HMAC_SHA1_32"))))

    def test_input_crypto_dropped(self):
        self.check("sdes_offer_plain_out", 0, session(audio(protocol="RTP/AVP")))


class DtlsLayoutTests(SynchronousTestCase):
    """a=setup/a=fingerprint, a=mid from the offer and rejected sections
    where rtpengine 10.5 writes them (DTLS corpus cases)."""

    FINGERPRINT = "sha-256 " + ":".join(["AB"] * 32)

    def check(self, case, step, plan):
        self.assertEqual(run(case, step, plan), expected(case, step))

    def browser_audio(self, **kw):
        return audio(protocol="UDP/TLS/RTP/SAVPF", rtcp_port=40000, rtcp_mux=True,
                     dtls=("active", self.FINGERPRINT), mid="0",
                     ice=ice_force(40000, mux=True, trickle=True), **kw)

    def test_seed_offer(self):
        """After the a=crypto lines, before a=ptime and the ICE lines."""
        suites = ["AEAD_AES_256_GCM", "AEAD_AES_128_GCM", "AES_256_CM_HMAC_SHA1_80",
                  "AES_256_CM_HMAC_SHA1_32", "AES_192_CM_HMAC_SHA1_80",
                  "AES_192_CM_HMAC_SHA1_32", "AES_CM_128_HMAC_SHA1_80",
                  "AES_CM_128_HMAC_SHA1_32", "F8_128_HMAC_SHA1_80", "F8_128_HMAC_SHA1_32",
                  "NULL_HMAC_SHA1_80", "NULL_HMAC_SHA1_32"]
        lines = ["%d %s inline:%s" % (i, s, "K%dxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" % i)
                 for i, s in enumerate(suites, 1)]
        self.check("seed_offer_answer", 0, session(audio(
            protocol="RTP/SAVPF", ptime=20, ice=ice_force(40000), crypto=lines,
            dtls=("actpass", self.FINGERPRINT)), replace_origin=True))

    def test_answer_towards_browser(self):
        """The offer's a=mid (the SIP answer has none) right after m=; setup
        and fingerprint after a=rtcp-mux; trickle ICE."""
        self.check("webrtc_to_sip", 1, session(self.browser_audio(), replace_origin=True))

    def test_rejected_video_keeps_mid(self):
        self.check("webrtc_video_rejected", 1, session(
            self.browser_audio(),
            MediaPlan(port=0, protocol="UDP/TLS/RTP/SAVPF", mid="1",
                      ice=IcePlan("", "", trickle=True)), replace_origin=True))

    def test_rejected_without_mid_or_trickle_is_bare(self):
        self.check("rejected_video_in_answer", 1, session(
            audio(port=40000, rtcp_port=40001), MediaPlan(port=0, keep_mid=False)))
