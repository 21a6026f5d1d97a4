"""Tests for omnirtp.sdp.model: parsing, byte-exact writing, accessors, inspect()."""

import os

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.errors import SDPError
from omnirtp.sdp.model import (
    Connection, MediaInfo, Rtcp, RtpMap, SDPIncomplete, SessionDescription, inspect)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "sdp")


def fixture(name):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def parse(name):
    return SessionDescription.parse(fixture(name))


class RoundTripTests(SynchronousTestCase):
    """An untouched description writes back exactly as it came in."""

    def test_crlf(self):
        """A CRLF body round-trips byte for byte."""
        data = fixture("sip_offer.sdp")
        self.assertEqual(SessionDescription.parse(data).to_bytes(), data)

    def test_lf_only(self):
        """An LF-only body keeps its LF endings."""
        data = fixture("sip_offer_lf.sdp")
        self.assertNotIn(b"\r", data)
        self.assertEqual(SessionDescription.parse(data).to_bytes(), data)

    def test_mixed_without_final_newline(self):
        """Mixed endings and a missing final line ending are kept as they are."""
        data = fixture("sip_offer_mixed.sdp")
        sd = SessionDescription.parse(data)
        self.assertEqual(sd.to_bytes(), data)
        self.assertEqual(sd.media[0].lines[-1].eol, "")
        self.assertEqual(sd.media[0].lines[-1].text, "a=ptime:20")

    def test_str_input_and_str_output(self):
        """parse() takes str too; str() gives the same text back."""
        text = fixture("webrtc_answer.sdp").decode("ascii")
        self.assertEqual(str(SessionDescription.parse(text)), text)

    def test_every_fixture_round_trips(self):
        """Every valid fixture round-trips."""
        for name in sorted(os.listdir(FIXTURES)):
            if name.endswith("_invalid.sdp"):
                continue
            data = fixture(name)
            self.assertEqual(SessionDescription.parse(data).to_bytes(), data, name)

    def test_non_utf8_bytes_kept(self):
        """Bytes that are not UTF-8 (e.g. Latin-1 in s=) survive the round trip."""
        data = fixture("sip_offer.sdp").replace(b"s=-", b"s=caf\xe9")
        self.assertEqual(SessionDescription.parse(data).to_bytes(), data)

    def test_blank_lines_kept(self):
        """A blank line is kept as a line of its own."""
        data = fixture("sip_offer.sdp") + b"\r\n"
        sd = SessionDescription.parse(data)
        self.assertEqual(sd.to_bytes(), data)
        self.assertEqual(sd.media[0].lines[-1].kind, "")


class StructureTests(SynchronousTestCase):
    def test_session_and_media(self):
        """Lines before the first m= are the session; each m= starts a section."""
        sd = parse("two_media_ipv6.sdp")
        self.assertEqual([ln.kind for ln in sd.session.lines], ["v", "o", "s", "t"])
        self.assertEqual(len(sd.media), 2)
        audio, video = sd.media
        self.assertEqual((audio.index, audio.media, audio.port, audio.port_count, audio.proto,
                          audio.formats), (1, "audio", 50000, 1, "RTP/AVP", ["8", "0"]))
        self.assertEqual((video.index, video.media, video.port, video.formats),
                         (2, "video", 0, ["96"]))
        self.assertEqual(audio.lines[0].text, "m=audio 50000 RTP/AVP 8 0")

    def test_port_count(self):
        """m=audio 5000/2 gives port 5000 and port count 2."""
        sd = SessionDescription.parse(fixture("sip_offer.sdp").replace(b"49170 ", b"49170/2 "))
        self.assertEqual((sd.media[0].port, sd.media[0].port_count), (49170, 2))

    def test_origin(self):
        sd = parse("sip_offer.sdp")
        self.assertEqual(sd.session.origin,
                         ("alice", "2890844526", "2890844526", "IN", "IP4", "192.0.2.10"))

    def test_connections(self):
        """Session c= and media c= are both available; media c= wins."""
        sd = parse("sip_offer.sdp")
        self.assertEqual(sd.session.connection, Connection("IP4", "192.0.2.10"))
        self.assertIsNone(sd.media[0].connection)
        self.assertEqual(sd.connection(sd.media[0]), Connection("IP4", "192.0.2.10"))
        v6 = parse("two_media_ipv6.sdp")
        self.assertIsNone(v6.session.connection)
        self.assertEqual(v6.connection(v6.media[0]), Connection("IP6", "2001:db8::10"))

    def test_connection_ttl_suffix(self):
        """A multicast /ttl suffix is split off the address."""
        sd = SessionDescription.parse(
            fixture("sip_offer.sdp").replace(b"c=IN IP4 192.0.2.10", b"c=IN IP4 233.252.0.1/127"))
        self.assertEqual(sd.session.connection, Connection("IP4", "233.252.0.1", "/127"))

    def test_rtcp(self):
        """a=rtcp with and without an address."""
        v6 = parse("two_media_ipv6.sdp")
        self.assertEqual(v6.media[0].rtcp, Rtcp(50011, "IP6", "2001:db8::11"))
        self.assertIsNone(v6.media[1].rtcp)
        web = parse("webrtc_answer.sdp")
        self.assertEqual(web.media[0].rtcp, Rtcp(9, "IP4", "0.0.0.0"))
        sd = SessionDescription.parse(fixture("sip_offer.sdp") + b"a=rtcp:49171\r\n")
        self.assertEqual(sd.media[0].rtcp, Rtcp(49171))

    def test_rtcp_mux(self):
        self.assertTrue(parse("webrtc_answer.sdp").media[0].rtcp_mux)
        self.assertFalse(parse("sip_offer.sdp").media[0].rtcp_mux)

    def test_direction(self):
        """Direction: media attribute, else the session's, else None."""
        self.assertEqual(parse("two_media_ipv6.sdp").media[0].direction, "sendonly")
        self.assertIsNone(parse("sip_offer.sdp").media[0].direction)
        sd = parse("sip_offer.sdp")
        self.assertIsNone(sd.direction(sd.media[0]))
        hold = parse("hold_zero.sdp")
        self.assertIsNone(hold.media[0].direction)
        self.assertEqual(hold.direction(hold.media[0]), "recvonly")

    def test_rtpmap_and_fmtp(self):
        sd = parse("sip_offer.sdp")
        m = sd.media[0]
        self.assertEqual(m.rtpmap(101), RtpMap("telephone-event", 8000))
        self.assertEqual(m.rtpmap("101").spec, "telephone-event/8000")
        self.assertIsNone(m.rtpmap(0))
        self.assertEqual(m.fmtp(101), "0-16")
        self.assertIsNone(m.fmtp(0))
        self.assertEqual(m.payload_types, [0, 8, 101])
        opus = SessionDescription.parse(
            fixture("sip_offer.sdp") + b"a=rtpmap:111 opus/48000/2\r\n").media[0]
        self.assertEqual(opus.rtpmap(111), RtpMap("opus", 48000, "2"))
        self.assertEqual(opus.rtpmap(111).spec, "opus/48000/2")

    def test_ice(self):
        self.assertTrue(parse("webrtc_answer.sdp").has_ice)
        self.assertTrue(parse("webrtc_answer.sdp").media[0].has_ice)
        self.assertFalse(parse("sip_offer.sdp").has_ice)

    def test_rejected(self):
        v6 = parse("two_media_ipv6.sdp")
        self.assertEqual([m.rejected for m in v6.media], [False, True])

    def test_zero_address(self):
        self.assertTrue(parse("hold_zero.sdp").session.connection.zero)
        self.assertFalse(parse("sip_offer.sdp").session.connection.zero)

    def test_loop_protect_id(self):
        self.assertEqual(parse("hold_zero.sdp").loop_protect_id, "abc123XYZ")
        self.assertIsNone(parse("sip_offer.sdp").loop_protect_id)

    def test_attributes(self):
        m = parse("webrtc_answer.sdp").media[0]
        self.assertEqual(m.attributes("rtpmap"), ["0 PCMU/8000", "101 telephone-event/8000"])
        self.assertEqual(m.attribute("rtcp-mux"), "")
        self.assertIsNone(m.attribute("crypto"))
        self.assertTrue(m.has_attribute("setup"))


class ErrorTests(SynchronousTestCase):
    """Bad input raises SDPError with a message saying where and why."""

    def assertSDPError(self, data, expected, cls=SDPError):
        exc = self.assertRaises(cls, SessionDescription.parse, data)
        self.assertEqual(str(exc), expected)

    def test_no_version(self):
        self.assertSDPError(fixture("no_version_invalid.sdp"),
                            "SDP must start with a v= line, not 'o=- 1 1 IN IP4 192.0.2.10' (line 1)")

    def test_empty(self):
        self.assertSDPError(b"", "SDP is empty")
        self.assertSDPError(b"\r\n\r\n", "SDP is empty")

    def test_bad_port(self):
        self.assertSDPError(fixture("bad_port_invalid.sdp"),
                            "SDP line 6 ('m=audio abc RTP/AVP 0'): m= port 'abc' is not a number")

    def test_port_out_of_range(self):
        self.assertSDPError(fixture("sip_offer.sdp").replace(b"49170", b"70000"),
                            "SDP line 6 ('m=audio 70000 RTP/AVP 0 8 101'): m= port 70000 is out of range")

    def test_rtcp_without_value(self):
        """An a=rtcp line without a port (with or without its colon) is an
        error in a media section, and none at session level."""
        for line in (b"a=rtcp", b"a=rtcp:"):
            self.assertSDPError(fixture("sip_offer.sdp").replace(b"a=ptime:20", line),
                                "SDP line 9 (%r): a=rtcp has no port" % (line.decode(),))
            data = fixture("sip_offer.sdp").replace(b"t=0 0\r\n", b"t=0 0\r\n" + line + b"\r\n")
            self.assertEqual(SessionDescription.parse(data).to_bytes(), data)

    def test_port_digits(self):
        """An m= port of plain digits is read as _port reads it: leading
        zeros are fine, 65535 is the last, 65536 out of range."""
        data = fixture("sip_offer.sdp")
        self.assertEqual(SessionDescription.parse(data.replace(b"49170", b"0049170"))
                         .media[0].port, 49170)
        self.assertEqual(SessionDescription.parse(data.replace(b"49170", b"65535"))
                         .media[0].port, 65535)
        self.assertSDPError(data.replace(b"49170", b"65536"),
                            "SDP line 6 ('m=audio 65536 RTP/AVP 0 8 101'): "
                            "m= port 65536 is out of range")

    def test_empty_formats_dropped(self):
        """Empty fields between an m= line's formats are no formats."""
        data = fixture("sip_offer.sdp").replace(b"RTP/AVP 0 8 101", b"RTP/AVP 0  8 101 ")
        media = SessionDescription.parse(data).media[0]
        self.assertEqual(media.formats, ["0", "8", "101"])
        self.assertEqual(inspect(SessionDescription.parse(data))[0].payload_types, (0, 8, 101))

    def test_kept_section_scanned_alike(self):
        """A section parsed again from its kept text has the index,
        direction, c= and a=rtcp that parse gave it."""
        data = fixture("sip_offer.sdp").replace(
            b"a=ptime:20", b"a=ptime:20\r\nc=IN IP4 192.0.2.99\r\na=rtcp:5000\r\na=recvonly")
        parsed = SessionDescription.parse(data).media[0]
        again = parsed.kept().section()
        for m in (parsed, again):
            self.assertEqual(m.direction, "recvonly")
            self.assertEqual(m.connection.address, "192.0.2.99")
            self.assertEqual(m.rtcp.port, 5000)
        self.assertEqual(again._attrs, parsed._attrs)

    def test_bad_port_count(self):
        self.assertSDPError(fixture("sip_offer.sdp").replace(b"49170", b"49170/x"),
                            "SDP line 6 ('m=audio 49170/x RTP/AVP 0 8 101'): "
                            "m= port count port 'x' is not a number")

    def test_bad_media(self):
        self.assertSDPError(fixture("bad_media_invalid.sdp"),
                            "SDP line 6 ('m=audio 4000'): m= needs media type, port and protocol")

    def test_bad_connection_address(self):
        self.assertSDPError(fixture("bad_connection_invalid.sdp"),
                            "SDP line 4 ('c=IN IP4 host.example.com'): "
                            "c= address 'host.example.com' is not an IPv4 address")

    def test_bad_connection_fields(self):
        self.assertSDPError(fixture("sip_offer.sdp").replace(b"c=IN IP4 192.0.2.10", b"c=IN IP4"),
                            "SDP line 4 ('c=IN IP4'): c= needs network type, address type and address")
        self.assertSDPError(fixture("sip_offer.sdp").replace(b"c=IN IP4", b"c=XX IP4"),
                            "SDP line 4 ('c=XX IP4 192.0.2.10'): c= network type must be IN")
        self.assertSDPError(fixture("sip_offer.sdp").replace(b"c=IN IP4", b"c=IN IP5"),
                            "SDP line 4 ('c=IN IP5 192.0.2.10'): c= address type must be IP4 or IP6, "
                            "not 'IP5'")

    def test_ipv6_address_checked(self):
        self.assertSDPError(fixture("two_media_ipv6.sdp").replace(b"c=IN IP6 2001:db8::10\r\na=rtcp",
                                                                   b"c=IN IP6 192.0.2.1\r\na=rtcp"),
                            "SDP line 6 ('c=IN IP6 192.0.2.1'): c= address '192.0.2.1' is not an IPv6 "
                            "address")

    def test_media_connection_checked(self):
        """A bad media-level c= is found at parse time."""
        self.assertSDPError(fixture("sip_offer.sdp") + b"c=IN IP4 nowhere\r\n",
                            "SDP line 10 ('c=IN IP4 nowhere'): c= address 'nowhere' is not an IPv4 address")

    def test_bad_rtcp(self):
        self.assertSDPError(fixture("sip_offer.sdp") + b"a=rtcp:x\r\n",
                            "SDP line 10 ('a=rtcp:x'): a=rtcp port 'x' is not a number")
        self.assertSDPError(fixture("sip_offer.sdp") + b"a=rtcp:5 IN IP4\r\n",
                            "SDP line 10 ('a=rtcp:5 IN IP4'): a=rtcp address must be "
                            "'IN IP4|IP6 <address>'")

    def test_garbage_line(self):
        self.assertSDPError(fixture("sip_offer.sdp").replace(b"t=0 0", b"garbage"),
                            "SDP line 5 ('garbage'): not a '<type>=<value>' line")

    def test_bad_origin(self):
        self.assertSDPError(fixture("sip_offer.sdp").replace(b"o=alice ", b"o="),
                            "SDP line 2 ('o=2890844526 2890844526 IN IP4 192.0.2.10'): o= needs six fields")

    def test_type_error(self):
        self.assertRaises(TypeError, SessionDescription.parse, 42)


class InspectTests(SynchronousTestCase):
    def test_plain_offer(self):
        (info,) = inspect(parse("sip_offer.sdp"))
        made = MediaInfo(
            index=1, type="audio", proto="RTP/AVP", family="IP4", rtp=("192.0.2.10", 49170),
            rtcp=("192.0.2.10", 49171), rtcp_mux=False, direction=None, rejected=False,
            zero_address=False, formats=("0", "8", "101"), payload_types=(0, 8, 101))
        self.assertEqual(info, made)
        # made without the dataclass's __init__: the same value in every way
        self.assertEqual((repr(info), hash(info), vars(info)), (repr(made), hash(made), vars(made)))
        import dataclasses
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, info, "index", 2)

    def test_ipv6_two_media(self):
        audio, video = inspect(parse("two_media_ipv6.sdp"))
        self.assertEqual((audio.family, audio.rtp, audio.rtcp, audio.direction),
                         ("IP6", ("2001:db8::10", 50000), ("2001:db8::11", 50011), "sendonly"))
        self.assertEqual((video.index, video.type, video.rejected, video.rtp, video.rtcp),
                         (2, "video", True, ("2001:db8::10", 0), ("2001:db8::10", 0)))

    def test_webrtc(self):
        (info,) = inspect(parse("webrtc_answer.sdp"))
        self.assertEqual((info.proto, info.rtp, info.rtcp, info.rtcp_mux, info.direction,
                          info.zero_address, info.ice, info.payload_types),
                         ("UDP/TLS/RTP/SAVPF", ("0.0.0.0", 9), ("0.0.0.0", 9), True, "sendrecv",
                          True, True, (0, 101)))

    def test_hold(self):
        (info,) = inspect(parse("hold_zero.sdp"))
        self.assertEqual((info.zero_address, info.direction, info.rtcp_mux),
                         (True, "recvonly", True))

    def test_rtcp_port_without_address(self):
        """a=rtcp:<port> without address takes the RTP address."""
        (info,) = inspect(SessionDescription.parse(fixture("sip_offer.sdp") + b"a=rtcp:40001\r\n"))
        self.assertEqual(info.rtcp, ("192.0.2.10", 40001))

    def test_non_numeric_formats(self):
        """Non-RTP formats are listed in formats but not in payload_types."""
        sd = SessionDescription.parse(fixture("sip_offer.sdp") +
                                      b"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n")
        info = inspect(sd)[1]
        self.assertEqual((info.formats, info.payload_types), (("webrtc-datachannel",), ()))

    def test_incomplete(self):
        """No c= anywhere for a live m= raises SDPIncomplete (an SDPError)."""
        exc = self.assertRaises(SDPIncomplete, inspect, parse("no_connection.sdp"))
        self.assertIsInstance(exc, SDPError)
        self.assertEqual(str(exc), "media 1 (audio) has no c= line and the session has none")

    def test_incomplete_but_rejected(self):
        """A rejected m= without any c= is fine."""
        sd = SessionDescription.parse(fixture("no_connection.sdp").replace(b"4000", b"0"))
        self.assertEqual(inspect(sd)[0].rtp, (None, 0))


class SplitLinesTests(SynchronousTestCase):
    """model._split_lines (str.split for CRLF-only and LF-only text) finds
    the lines the general regular expression finds."""

    def regex(self, data):
        from omnirtp.sdp import model
        out = []
        for match in model._LINE.finditer(data):
            text, eol = match.groups()
            if not text and not eol:
                break
            out.append((text, eol))
        return out

    def test_sameAsRegex(self):
        from omnirtp.sdp import model
        pieces = ("v=0", "a=x", "", " ", "m=audio 1 RTP/AVP 0", "\u00e9", "\udcff")
        ends = ("\r\n", "\n", "\r", "\n\r", "\r\r\n", "")
        cases = ["", "\r\n", "\n", "\r", "\r\n\r\n", "\n\n", "v=0", "v=0\r\n\r\n\r\n"]
        for i, a in enumerate(pieces):
            for j, b in enumerate(pieces):
                for e1 in ends:
                    for e2 in ends:
                        cases.append(a + e1 + b + e2)
                        cases.append(a + e1 + b + e2 + "c=IN IP4 1.2.3.4" + e1)
        for data in cases:
            self.assertEqual(model._split_lines(data), self.regex(data), repr(data))

    def test_sectionTextIsItsLines(self):
        """A parsed section's text (a slice of the parsed text when every
        line ends alike) is its lines with their endings, for CRLF, LF,
        mixed endings, blank lines and an unterminated last line."""
        body = ["v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "c=IN IP4 1.2.3.4", "t=0 0",
                "m=audio 1 RTP/AVP 0", "a=x", "", "m=video 3 RTP/AVP 96",
                "a=rtpmap:96 VP8/90000", "m=audio 5 RTP/AVP 8"]
        for eol in ("\r\n", "\n", "\r"):
            for tail in (eol, "", eol + eol):
                data = eol.join(body) + tail
                for mixed in (data, data.replace(eol + "a=x", "\r\na=x", 1)):
                    sd = SessionDescription.parse(mixed)
                    texts = [m.text() for m in sd.media]
                    self.assertEqual(texts, ["".join(ln.text + ln.eol for ln in m.lines)
                                             for m in sd.media], repr(mixed))
                    self.assertEqual(sd.session.text() + "".join(texts), mixed)
                    self.assertEqual([m.kept().text for m in sd.media], texts)

    def test_mixedEndingsRoundTrip(self):
        data = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\ns=-\rc=IN IP4 1.2.3.4\r\nt=0 0"
        self.assertEqual(str(SessionDescription.parse(data)), data)
        data = data.replace("\r\n", "\n").replace("\r", "\n") + "\n"
        self.assertEqual(str(SessionDescription.parse(data)), data)


class KeptSectionTests(SynchronousTestCase):
    """What a call keeps of a media section: its text, parsed on demand."""

    SDP = ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
           "m=audio 4000 RTP/AVP 0 96 101\r\na=rtpmap:96 opus/48000/2\r\n"
           "a=fmtp:96 useinbandfec=1\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
           "m=video 0 RTP/AVP 31\n")

    def test_same_section_again(self):
        """section() gives back the formats, rtpmaps, attributes and text."""
        sd = SessionDescription.parse(self.SDP)
        for original in sd.media:
            kept = original.kept()
            again = kept.section()
            self.assertEqual(again.text(), original.text())
            self.assertEqual((again.index, again.media, again.port, again.proto, again.formats),
                             (original.index, original.media, original.port, original.proto,
                              original.formats))
            self.assertEqual(again.rtpmaps(), original.rtpmaps())
            self.assertEqual(again.attributes(), original.attributes())
        self.assertEqual(sd.media[0].kept().section().fmtp(96), "useinbandfec=1")
        self.assertEqual(sd.media[1].kept().text, "m=video 0 RTP/AVP 31\n")

    def test_one_per_section(self):
        """A request that keeps a section twice keeps one text."""
        section = SessionDescription.parse(self.SDP).media[0]
        self.assertIs(section.kept(), section.kept())
        self.assertEqual(repr(section.kept()), "KeptSection(1, 'm=audio 4000 RTP/AVP 0 96 101')")

    def test_no_lines_kept(self):
        """The kept form holds no parsed lines (only the text and index)."""
        from omnirtp.sdp.model import KeptSection
        self.assertEqual(KeptSection.__slots__, ("text", "index"))
