"""Tests for omnirtp.control.flags and the Kamailio dict helper."""

import dataclasses

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.control.flags import Flags, as_int, as_list, canonical, parse_rtpp_flags
from omnirtp.test.kamailio import kamailio_dict

SDP = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nt=0 0\r\n"

SEED_INVITE = "ICE=force RTP/AVP RTP/SAVPF replace-origin replace-session-connection"
SEED_200 = "ICE=remove RTP/SAVPF RTP/AVP replace-origin replace-session-connection"


def fields(flags):
    """Every field except raw/unknown, for comparing two Flags."""
    d = dataclasses.asdict(flags)
    d.pop("raw")
    d.pop("unknown")
    return d


class KamailioDictTests(SynchronousTestCase):
    def test_seedInvite(self):
        """The seed INVITE gives spec §2.2's dictionary, key order included."""
        d = kamailio_dict(SEED_INVITE, "offer", "c1", "ft1", sdp=SDP,
                          received_from="192.0.2.10")
        self.assertEqual(list(d.items()), [
            ("supports", ["load limit"]), ("sdp", SDP), ("ICE", "force"),
            ("replace", ["origin", "session-connection"]),
            ("transport-protocol", "RTP/SAVPF"), ("call-id", "c1"),
            ("received-from", ["IP4", "192.0.2.10"]), ("from-tag", "ft1"),
            ("command", "offer"),
        ])

    def test_seedAnswerAndDelete(self):
        """200 OK: last transport wins and to-tag is sent; delete has no to-tag."""
        d = kamailio_dict(SEED_200, "answer", "c1", "ft1", "tt1", sdp=SDP)
        self.assertEqual(d["transport-protocol"], "RTP/AVP")
        self.assertEqual(list(d)[-3:], ["from-tag", "to-tag", "command"])
        d = kamailio_dict("", "delete", "c1", "ft1", "tt1")
        self.assertEqual(list(d), ["supports", "call-id", "received-from",
                                   "from-tag", "command"])

    def test_words(self):
        """Prefix lists, codec dict, direction, ints and plain flags."""
        d = kamailio_dict(
            "trust-address internal direction=pub SDES-off rtcp-mux=require "
            "codec-strip-PCMA codec-offer=G722 TOS=184 delete-delay=5 label=x "
            "strict-source AVPF DTLS", "offer", "c", "f", sdp=SDP)
        self.assertEqual(d["direction"], ["internal", "pub"])
        self.assertEqual(d["flags"], ["trust-address", "strict-source"])
        self.assertEqual(d["SDES"], ["off"])
        self.assertEqual(d["rtcp-mux"], ["require"])
        self.assertEqual(d["codec"], {"strip": ["PCMA"], "offer": ["G722"]})
        self.assertEqual(d["TOS"], 184)
        self.assertEqual(d["delete delay"], 5)
        self.assertEqual(d["label"], "x")
        self.assertEqual(d["transport-protocol"], "UDP/TLS/RTP/SAVPF")


class HelperTests(SynchronousTestCase):
    def test_canonical(self):
        self.assertEqual(canonical("strict source"), "strict-source")
        self.assertEqual(canonical(" Strict-Source "), "strict-source")
        self.assertEqual(canonical("SIP  source\taddress"), "sip-source-address")

    def test_asList(self):
        self.assertEqual(as_list("a, b,,c"), ["a", "b", "c"])
        self.assertEqual(as_list(["a", "b,c", 5]), ["a", "b", "c"])
        self.assertEqual(as_list(None), [])

    def test_asInt(self):
        self.assertEqual(as_int("20"), 20)
        self.assertEqual(as_int(20), 20)
        self.assertEqual(as_int(" -3 "), -3)
        self.assertIsNone(as_int("2x"))
        self.assertIsNone(as_int(None))

    def test_parseRtppFlags(self):
        """Brackets become lists/dicts; transport words collapse."""
        self.assertEqual(parse_rtpp_flags(
            "rtcp-mux=[offer require] codec=[strip=[all] offer=[PCMA G722]] "
            "RTP/AVP SRTP trust-address external"), [
            ("rtcp-mux", ["offer", "require"]),
            ("codec", {"strip": ["all"], "offer": ["PCMA", "G722"]}),
            ("flags", ["trust-address"]),
            ("direction", ["external"]),
            ("transport-protocol", "RTP/SAVP"),
        ])


class FromRequestTests(SynchronousTestCase):
    def test_fieldsAsTheConstructorMakesThem(self):
        """from_request fills the fields without the dataclass __init__:
        the same values, order and fresh containers per request."""
        request = {"nonsense": 1}
        made = Flags.from_request(request)
        expected = Flags(raw=request, unknown=["nonsense"])
        self.assertEqual(made, expected)
        self.assertEqual(list(vars(made)), list(vars(expected)))
        self.assertIs(made.raw, request)
        other = Flags.from_request({})
        for field in dataclasses.fields(Flags):
            value = getattr(made, field.name)
            if isinstance(value, (set, list, dict)):
                self.assertIsNot(value, getattr(other, field.name), field.name)

    def test_setWordsKeptPerList(self):
        """A list-valued set key gives the same words every time, its
        items as as_list and canonical make them (the kept words are a
        copy: a request's set is its own); a list with an unhashable item
        is read as before and not kept."""
        for _ in range(2):
            f = Flags.from_request({"replace": ["Origin", " session connection", "a,b"],
                                    "supports": ["load limit"]})
            self.assertEqual(f.replace, {"origin", "session-connection", "a", "b"})
            self.assertEqual(f.supports, {"load limit"})
            f.replace.add("mine")
        self.assertNotIn("mine", Flags.from_request(
            {"replace": ["Origin", " session connection", "a,b"]}).replace)
        f = Flags.from_request({"replace": ["origin", {"x": 1}, ["y"]], "rtcp-mux": "offer"})
        self.assertEqual(f.replace, {"origin"})
        self.assertEqual(f.rtcp_mux, {"offer"})

    def test_strKeysSetAsTheirHandlerWould(self):
        """A str value of a plain string key is set as given; any other
        value goes through the key's handler (bytes decoded, an int as text)."""
        f = Flags.from_request({"call-id": "c", "from-tag": b"f", "to-tag": 5, "sdp": "v=0"})
        self.assertEqual((f.call_id, f.from_tag, f.to_tag, f.sdp), ("c", "f", "5", "v=0"))
        self.assertEqual(Flags.from_request({"call ID": "a", "call-id": "b"}).call_id, "b")

    def test_seedOffer(self):
        """The seed INVITE dict, typed."""
        f = Flags.from_request(kamailio_dict(
            SEED_INVITE, "offer", "c1", "ft1", sdp=SDP, received_from="192.0.2.10"))
        self.assertEqual(f.command, "offer")
        self.assertEqual(f.call_id, "c1")
        self.assertEqual(f.from_tag, "ft1")
        self.assertIsNone(f.to_tag)
        self.assertEqual(f.sdp, SDP)
        self.assertEqual(f.ice, "force")
        self.assertEqual(f.replace, {"origin", "session-connection"})
        self.assertEqual(f.transport_protocol, "RTP/SAVPF")
        self.assertEqual(f.received_from, ("IP4", "192.0.2.10"))
        self.assertEqual(f.supports, {"load limit"})
        self.assertEqual(f.unknown, [])

    def test_callIdAliases(self):
        """rtpengine 10.5 takes exactly these spellings (probed on the daemon)."""
        for key in ("call-id", "call-ID", "call id", "call ID"):
            self.assertEqual(Flags.from_request({key: "x"}).call_id, "x")
        for key in ("call_id", "Call-ID"):
            f = Flags.from_request({key: "x"})
            self.assertIsNone(f.call_id)
            self.assertEqual(f.unknown, [key])

    def test_tagKeys(self):
        """from-tag/to-tag only with a hyphen, as in rtpengine 10.5."""
        f = Flags.from_request({"from-tag": "a", "to-tag": "b"})
        self.assertEqual((f.from_tag, f.to_tag), ("a", "b"))
        f = Flags.from_request({"from tag": "a", "to tag": "b", "to_tag": "c"})
        self.assertEqual((f.from_tag, f.to_tag), (None, None))

    def test_iceSpellings(self):
        """ICE and ice work, Ice does not."""
        self.assertEqual(Flags.from_request({"ICE": "remove"}).ice, "remove")
        self.assertEqual(Flags.from_request({"ice": "Force_Relay"}).ice, "force-relay")
        self.assertIsNone(Flags.from_request({"Ice": "remove"}).ice)

    def test_otherAliases(self):
        f = Flags.from_request({
            "SDP": "v=0", "transport protocol": "RTP/AVP", "RTCP-mux": "demux",
            "address family": "ip6", "media address": "203.0.113.1",
            "received from": "2001:db8::1", "delete_delay": "0",
            "record call": "yes", "TOS": "184", "DTLS": "disable", "sdes": "off",
            "endpoint learning": "heuristic", "from-label": "caller",
        })
        self.assertEqual(f.sdp, "v=0")
        self.assertEqual(f.transport_protocol, "RTP/AVP")
        self.assertEqual(f.rtcp_mux, {"demux"})
        self.assertEqual(f.address_family, "IP6")
        self.assertEqual(f.media_address, "203.0.113.1")
        self.assertEqual(f.received_from, ("IP6", "2001:db8::1"))
        self.assertEqual(f.delete_delay, 0)
        self.assertTrue(f.record_call)
        self.assertEqual(f.tos, 184)
        self.assertEqual(f.dtls, "off")
        self.assertEqual(f.sdes, {"off"})
        self.assertEqual(f.endpoint_learning, "heuristic")
        self.assertEqual(f.label, "caller")
        self.assertEqual(f.unknown, [])

    def test_intsAsStrings(self):
        """Integers arrive as bencode ints or strings; junk is ignored."""
        f = Flags.from_request({"ptime": "20", "limit": 5, "delete delay": "x"})
        self.assertEqual((f.ptime, f.limit, f.delete_delay), (20, 5, None))
        for key in ("ptime-reverse", "ptime reverse", "reverse ptime", "reverse-ptime"):
            rev = Flags.from_request({key: "40"})
            self.assertEqual((rev.ptime_reverse, rev.unknown), (40, []))
        self.assertEqual(len(f.unknown), 1)

    def test_listsAsStrings(self):
        """List keys accept one comma-separated string."""
        f = Flags.from_request({"flags": "trust address, strict source",
                                "replace": "origin,session connection",
                                "rtcp-mux": ["offer", "require"]})
        self.assertEqual(f.flags, {"trust-address", "strict-source"})
        self.assertEqual(f.replace, {"origin", "session-connection"})
        self.assertEqual(f.rtcp_mux, {"offer", "require"})

    def test_flagWords(self):
        """Hyphen/space and case do not matter; has() takes any spelling."""
        f = Flags.from_request({"flags": ["strict source", "Media-Handover",
                                          "SIP source address", "no such flag"]})
        self.assertTrue(f.has("strict-source"))
        self.assertTrue(f.has("STRICT SOURCE"))
        self.assertTrue(f.has("media handover"))
        self.assertTrue(f.has("sip-source-address"))
        self.assertFalse(f.has("asymmetric"))
        self.assertNotIn("no-such-flag", f.flags)
        self.assertEqual(f.unknown, ["no such flag"])

    def test_unknownEndpointLearning(self):
        """An unknown endpoint-learning value (key or flag word) is ignored
        and listed, as rtpengine 10.5 ignores it (the offer succeeds); a
        known one in any case is taken (found by fuzzing: "x" reached the
        engine and the offer failed with "Internal error")."""
        f = Flags.from_request({"endpoint-learning": "x"})
        self.assertIsNone(f.endpoint_learning)
        self.assertEqual(f.unknown, ["endpoint-learning=x"])
        f = Flags.from_request({"flags": ["endpoint-learning-bogus"]})
        self.assertIsNone(f.endpoint_learning)
        self.assertEqual(f.unknown, ["endpoint-learning=bogus"])
        f = Flags.from_request({"endpoint-learning": "OFF"})
        self.assertEqual(f.endpoint_learning, "off")
        f = Flags.from_request({"endpoint-learning": "heuristic",
                                "flags": ["endpoint-learning-nope"]})
        self.assertEqual(f.endpoint_learning, "heuristic")

    def test_prefixedFlags(self):
        """Prefixed words feed their fields, keeping the value's case."""
        f = Flags.from_request({"flags": [
            "replace-origin", "rtcp-mux-demux", "SDES-no-AES_CM_128_HMAC_SHA1_32",
            "OSRTP-offer", "endpoint-learning-immediate", "codec-strip-PCMA",
            "codec-offer-G722", "codec-except-opus", "codec-mask-PCMU",
            "transcode-G729", "codec-transcode-AMR", "codec-accept-PCMA",
            "codec-consume-telephone-event"]})
        self.assertEqual(f.replace, {"origin"})
        self.assertEqual(f.rtcp_mux, {"demux"})
        self.assertEqual(f.sdes, {"no-AES_CM_128_HMAC_SHA1_32"})
        self.assertEqual(f.osrtp, {"offer"})
        self.assertEqual(f.endpoint_learning, "immediate")
        self.assertEqual(f.codec_strip, ("PCMA",))
        self.assertEqual(f.codec_offer, ("G722",))
        self.assertEqual(f.codec_except, ("opus",))
        self.assertEqual(f.codec_mask, ("PCMU",))
        self.assertEqual(f.codec_transcode, ("G729", "AMR"))
        self.assertEqual(f.codec_accept, ("PCMA",))
        self.assertEqual(f.codec_consume, ("telephone-event",))
        self.assertEqual(f.flags, set())

    def test_codecSources(self):
        """codec dict, flag words and 5.6's top-level keys all add up, in order."""
        f = Flags.from_request({
            "codec": {"strip": ["PCMU", "G729"], "offer": "opus", "bogus": ["x"]},
            "flags": ["codec-strip-PCMA"],
            "codec-accept": "G722", "codec-consume": "PCMA,PCMU",
        })
        self.assertEqual(f.codec_strip, ("PCMU", "G729", "PCMA"))
        self.assertEqual(f.codec_offer, ("opus",))
        self.assertEqual(f.codec_accept, ("G722",))
        self.assertEqual(f.codec_consume, ("PCMA", "PCMU"))
        self.assertEqual(f.unknown, ["codec.bogus"])

    def test_direction(self):
        """direction list, overridden per side by from-/to-interface."""
        self.assertEqual(Flags.from_request({"direction": ["int", "ext"]}).direction,
                         ("int", "ext"))
        self.assertEqual(Flags.from_request({"direction": "int,ext"}).direction,
                         ("int", "ext"))
        self.assertEqual(Flags.from_request({"to-interface": "ext"}).direction,
                         ("", "ext"))
        self.assertEqual(Flags.from_request(
            {"direction": ["a", "b"], "from-interface": "c"}).direction, ("c", "b"))
        self.assertEqual(Flags.from_request({}).direction, ())

    def test_receivedFrom(self):
        self.assertEqual(Flags.from_request(
            {"received-from": ["IP4", "192.0.2.1"]}).received_from, ("IP4", "192.0.2.1"))
        self.assertIsNone(Flags.from_request({"received-from": ["IP4"]}).received_from)

    def test_all(self):
        self.assertTrue(Flags.from_request({"flags": ["all"]}).all)
        self.assertTrue(Flags.from_request({"all": "offer-answer"}).all)
        self.assertFalse(Flags.from_request({"all": "none"}).all)
        self.assertFalse(Flags.from_request({}).all)

    def test_webrtcAlias(self):
        """WebRTC expands to rtpengine's template."""
        f = Flags.from_request({"flags": ["WebRTC"]})
        self.assertEqual(f.transport_protocol, "UDP/TLS/RTP/SAVPF")
        self.assertEqual(f.ice, "force")
        self.assertEqual(f.rtcp_mux, {"offer", "require"})
        self.assertEqual(f.sdes, {"off"})
        for word in ("trickle ICE", "no rtcp attribute", "generate mid"):
            self.assertTrue(f.has(word), word)

    def test_unknownKeysIgnored(self):
        """Unknown keys never fail; they are listed."""
        f = Flags.from_request({"command": "offer", "whatever": 1, "interface": "x"})
        self.assertEqual(f.command, "offer")
        self.assertEqual(f.unknown, ["whatever"])
        self.assertEqual(f.raw["whatever"], 1)

    def test_obsoleteFlagIgnored(self):
        f = Flags.from_request({"flags": ["symmetric codecs"]})
        self.assertEqual(f.flags, set())


class RtppFlagsTests(SynchronousTestCase):
    """rtpp-flags (2-argument form) gives the same Flags as the module dict."""

    STRINGS = [
        SEED_INVITE,
        SEED_200,
        "trust-address replace-origin replace-session-connection ICE=remove "
        "RTP/AVP direction=internal direction=external",
        "strict-source media-handover rtcp-mux-offer rtcp-mux-require SDES-off "
        "codec-strip-PCMU codec-offer-PCMA codec-mask-G722 transcode-opus "
        "label=caller TOS=184 delete-delay=5 address-family=IP4 "
        "media-address=203.0.113.5 record-call=yes metadata=a:b ptime=20",
        "RTP/AVP AVPF DTLS SIP-source-address DTLS=passive OSRTP-offer "
        "endpoint-learning=heuristic codec-except=PCMA",
        "internal external loop-protect",
    ]

    def compare(self, flag_string, command="offer", to_tag=None):
        module = kamailio_dict(flag_string, command, "c1", "ft1", to_tag=to_tag,
                               sdp=SDP, received_from="192.0.2.10")
        daemon = {"supports": ["load limit"], "sdp": SDP, "call-id": "c1",
                  "received-from": ["IP4", "192.0.2.10"], "from-tag": "ft1",
                  "rtpp-flags": flag_string, "command": command}
        if to_tag is not None:
            daemon["to-tag"] = to_tag
        a = Flags.from_request(module)
        b = Flags.from_request(daemon)
        self.assertEqual(fields(a), fields(b), flag_string)
        return b

    def test_equivalence(self):
        for s in self.STRINGS:
            self.compare(s)
        self.compare(SEED_200, "answer", "tt1")

    def test_values(self):
        """Spot-check what the rtpp-flags form produced."""
        f = self.compare(self.STRINGS[3])
        self.assertEqual(f.rtcp_mux, {"offer", "require"})
        self.assertEqual(f.codec_transcode, ("opus",))
        self.assertEqual((f.tos, f.delete_delay, f.ptime), (184, 5, 20))
        self.assertTrue(f.record_call)
        self.assertEqual(f.metadata, "a:b")
        f = self.compare(self.STRINGS[4])
        self.assertEqual(f.transport_protocol, "UDP/TLS/RTP/SAVPF")
        self.assertEqual(f.dtls, "passive")
        self.assertEqual(f.endpoint_learning, "heuristic")
        self.assertEqual(f.codec_except, ("PCMA",))
        self.assertEqual(self.compare(self.STRINGS[5]).direction, ("internal", "external"))

    def test_brackets(self):
        """rtpp-flags bracket lists and codec dict (daemon-side extension)."""
        f = Flags.from_request({"rtpp-flags":
                                "rtcp-mux=[offer require] codec=[strip=[all] offer=[PCMA]] "
                                "OSRTP=[accept] WebRTC"})
        self.assertEqual(f.rtcp_mux, {"offer", "require"})
        self.assertEqual(f.codec_strip, ("all",))
        self.assertEqual(f.codec_offer, ("PCMA",))
        self.assertEqual(f.osrtp, {"accept"})
        self.assertEqual(f.transport_protocol, "UDP/TLS/RTP/SAVPF")

    def test_tagWords(self):
        """from-tag=x implies directional, to-tag=x the to-tag flag; aliases work."""
        f = Flags.from_request({"from-tag": "z", "rtpp_flags": "from-tag=a to-tag=b"})
        self.assertEqual((f.from_tag, f.to_tag), ("a", "b"))
        self.assertTrue(f.has("directional"))
        self.assertTrue(f.has("to-tag"))
        self.assertEqual(Flags.from_request({"rtpp flags": "fatal"}).flags, {"fatal"})


class DtlsIceKeyTests(SynchronousTestCase):
    """DTLS-fingerprint, ICE-lite and dtls-passive (ng-spec 3.5-3.7)."""

    def test_dtlsFingerprintSpellings(self):
        for key in ("DTLS-fingerprint", "DTLS fingerprint", "dtls-fingerprint",
                    "dtls fingerprint"):
            f = Flags.from_request({key: "SHA-1"})
            self.assertEqual((f.dtls_fingerprint, f.unknown), ("SHA-1", []), key)

    def test_iceLite(self):
        for key in ("ICE-lite", "ice-lite", "ICE lite", "ice lite"):
            f = Flags.from_request({key: "Forward"})
            self.assertEqual((f.ice_lite, f.unknown), ("forward", []), key)
        self.assertIsNone(Flags.from_request({"ICE": "force"}).ice_lite)

    def test_dtlsPassiveFlag(self):
        f = Flags.from_request({"flags": ["DTLS-passive"]})
        self.assertEqual((f.dtls, f.unknown), ("passive", []))


class UpstreamWordsTests(SynchronousTestCase):
    """The current upstream rtpengine's newer flag words and keys are parsed
    (aliases of known words) or ignored as upstream ignores what it does not
    act on; none is left unknown.  The key spellings that would change 10.5's
    answers stay unknown (docs/compat.md)."""

    def test_flagAliases(self):
        f = Flags.from_request({"flags": [
            "allow asymmetric codec", "allow-empty-codec-medias", "block short packets",
            "debugging", "mirror-RTCP", "mixed", "audio player", "no-audio-player",
            "recording-vsc", "T.38-decode"]})
        self.assertEqual(f.unknown, [])
        self.assertEqual(f.flags, {"allow-asymmetric-codecs", "allow-no-codec-media",
                                   "block-short", "debug", "rtcp-mirror", "mix",
                                   "audio-player", "no-audio-player", "recording-vsc",
                                   "t.38-decode"})
        self.assertTrue(f.has("Mirror RTCP"))

    def test_newKeysIgnored(self):
        request = {"command": "offer", "from-tag": "a"}
        for key in ("alias-key", "DTLS-reverse", "DTMF-delay", "extmap", "inbound-peer",
                    "outbound-peer", "instance", "recording-media-slots", "output-path",
                    "sdp-media-remove", "sip-response-code", "source-tag", "source-call-id",
                    "T.38-version", "trigger-end-time", "trigger-end-digits", "vsc-start-rec",
                    "blob64", "medias"):
            request[key] = "x"
        f = Flags.from_request(request)
        self.assertEqual(f.unknown, [])
        self.assertEqual((f.command, f.from_tag), ("offer", "a"))

    def test_respellingsStayAs105(self):
        f = Flags.from_request({"from tag": "a", "to tag": "b", "from interface": "pub",
                                "RTCP mux": ["demux"]})
        self.assertEqual((f.from_tag, f.to_tag, f.direction, f.rtcp_mux),
                         (None, None, (), set()))
        self.assertEqual(f.unknown, ["from tag", "to tag", "from interface", "RTCP mux"])
