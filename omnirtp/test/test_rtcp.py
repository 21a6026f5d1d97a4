"""omnirtp.media.rtcp: the SR/RR report parser."""

from twisted.trial import unittest

from omnirtp.media import rtcp

#: an RR from SSRC 0x11111111 with one block about 0x22222222: 51/256
#: lost since the last report, 10 in all, highest sequence 0x0001_0032,
#: jitter 123, LSR 0xAABBCCDD, DLSR 0x00010000
RR_ONE = bytes.fromhex(
    "81c90007" "11111111"
    "22222222" "3300000a" "00010032" "0000007b" "aabbccdd" "00010000")

#: an SR from 0x22222222 (NTP 0x83aa7e80_00000000, RTP 160, 50 packets,
#: 8000 octets) with one block about 0x11111111 (nothing lost, jitter 7),
#: then an SDES with the CNAME "ab" (padded to a word with zeros)
SR_COMPOUND = bytes.fromhex(
    "81c8000c" "22222222" "83aa7e8000000000" "000000a0" "00000032" "00001f40"
    "11111111" "00000000" "00000032" "00000007" "00000000" "00000000"
    "81ca0003" "22222222" "01026162" "00000000")


class SplitTests(unittest.TestCase):

    def test_compound(self):
        packets = rtcp.split(SR_COMPOUND)
        self.assertEqual([(kind, count, len(body)) for kind, count, body in packets],
                         [(200, 1, 48), (202, 1, 12)])
        self.assertEqual(packets[1][2], bytes.fromhex("22222222" "01026162" "00000000"))

    def test_padding_is_removed_from_the_last_packet(self):
        # a BYE from 0x33333333 with 4 bytes of padding (P bit, count 4)
        bye = bytes.fromhex("a1cb0002" "33333333" "00000004")
        self.assertEqual(rtcp.split(bye), ((203, 1, bytes.fromhex("33333333")),))

    def test_accepts_memoryview(self):
        self.assertEqual(rtcp.split(memoryview(RR_ONE)), rtcp.split(RR_ONE))


class ReportTests(unittest.TestCase):

    def test_receiver_report(self):
        self.assertEqual(rtcp.reports(RR_ONE), (
            rtcp.Report(rtcp.RR, 0x11111111, None, (
                rtcp.ReportBlock(0x22222222, 51, 10, 0x10032, 123, 0xAABBCCDD, 0x10000),)),))

    def test_sender_report_in_a_compound(self):
        (report,) = rtcp.reports(SR_COMPOUND)
        self.assertEqual(report.kind, rtcp.SR)
        self.assertEqual(report.ssrc, 0x22222222)
        self.assertEqual(report.sender, rtcp.SenderInfo(0x83AA7E8000000000, 160, 50, 8000))
        self.assertEqual(report.blocks, (rtcp.ReportBlock(0x11111111, 0, 0, 50, 7, 0, 0),))

    def test_sender_report_without_blocks(self):
        sr = bytes.fromhex("80c80006" "22222222" "0000000100000002" "00000003" "00000004"
                           "00000005")
        self.assertEqual(rtcp.reports(sr), (
            rtcp.Report(rtcp.SR, 0x22222222, rtcp.SenderInfo(0x100000002, 3, 4, 5), ()),))

    def test_two_blocks_and_negative_cumulative_loss(self):
        rr = bytes.fromhex(
            "82c9000d" "01020304"
            "0000000a" "80ffffff" "00000064" "00000001" "00000000" "00000000"
            "0000000b" "ff7fffff" "000000c8" "00000002" "00000000" "00000000")
        (report,) = rtcp.reports(rr)
        self.assertEqual([(b.ssrc, b.fraction_lost, b.cumulative_lost) for b in report.blocks],
                         [(10, 128, -1), (11, 255, 0x7FFFFF)])

    def test_receiver_report_in_a_compound_after_feedback(self):
        # reduced-size RTCP (RFC 5506): a PLI (PSFB 206, FMT 1), then an RR
        # with no block: both are read, only the RR is a report
        pli = bytes.fromhex("81ce0002" "11111111" "22222222")
        empty_rr = bytes.fromhex("80c90001" "11111111")
        self.assertEqual(rtcp.reports(pli + empty_rr),
                         (rtcp.Report(rtcp.RR, 0x11111111, None, ()),))
        self.assertEqual(rtcp.reports(pli), ())

    def test_figures(self):
        self.assertEqual(rtcp.loss_percent(51), 19.9)
        self.assertEqual(rtcp.loss_percent(0), 0.0)
        self.assertEqual(rtcp.loss_percent(256 // 4), 25.0)
        self.assertEqual(rtcp.jitter_ms(123, 8000), 15.4)
        self.assertEqual(rtcp.jitter_ms(480, 48000), 10.0)
        self.assertIsNone(rtcp.jitter_ms(123, None))


class MalformedTests(unittest.TestCase):

    def assertRefused(self, data, message):
        e = self.assertRaises(rtcp.RtcpError, rtcp.reports, data)
        self.assertEqual(str(e), message)
        self.assertIsInstance(e, ValueError)

    def test_empty_and_short(self):
        self.assertRefused(b"", "RTCP packet is shorter than its header (0 bytes)")
        self.assertRefused(b"\x81\xc9", "RTCP packet is shorter than its header (2 bytes)")
        self.assertRefused(RR_ONE + b"\x80\xc9",
                           "RTCP packet at byte 32 is shorter than its header")

    def test_wrong_version(self):
        self.assertRefused(b"\x41" + RR_ONE[1:], "RTCP packet at byte 0 has version 1, not 2")

    def test_not_rtcp(self):
        # an RTP header (PT 0) is no RTCP packet type
        self.assertRefused(bytes.fromhex("80000001" "00000000" "00000000"),
                           "RTCP packet at byte 0 has type 0, not 192-223")

    def test_length_beyond_the_datagram(self):
        self.assertRefused(RR_ONE[:-4], "RTCP packet at byte 0 claims 32 bytes, 28 are left")
        # the second packet of a compound
        self.assertRefused(RR_ONE + bytes.fromhex("81ca0005" "22222222"),
                           "RTCP packet at byte 32 claims 24 bytes, 8 are left")

    def test_more_blocks_than_the_length(self):
        # report count 2, one block's worth of words
        self.assertRefused(b"\x82" + RR_ONE[1:],
                           "RTCP RR with 2 report blocks needs 52 bytes after its header, has 28")
        sr = bytes.fromhex("81c80006" "22222222" "0000000100000002" "00000003" "00000004"
                           "00000005")
        self.assertRefused(sr, "RTCP SR with 1 report blocks needs 48 bytes after its header, "
                               "has 24")

    def test_short_sender_report(self):
        self.assertRefused(bytes.fromhex("80c80001" "22222222"),
                           "RTCP SR needs 24 bytes after its header, has 4")
        self.assertRefused(bytes.fromhex("80c90000"), "RTCP RR needs 4 bytes after its header, has 0")

    def test_bad_padding(self):
        # padding on a packet that is not the last
        self.assertRefused(b"\xa1" + RR_ONE[1:] + RR_ONE,
                           "RTCP packet at byte 0 has padding but is not the last")
        # a padding count of 0, and one larger than the packet
        self.assertRefused(bytes.fromhex("a1cb0002" "33333333" "00000000"),
                           "RTCP packet at byte 0 has a padding count of 0")
        self.assertRefused(bytes.fromhex("a1cb0002" "33333333" "000000ff"),
                           "RTCP packet at byte 0 has a padding count of 255")
