"""The real-client check: Kamailio 5.6 + SIPp calls through the media proxy.

A SIPp UAC places calls through Kamailio (its ``rtpengine`` module pointed at
the proxy's ng port) to a SIPp UAS.  Both ends send a PCMU stream (SIPp's
``play_pcap_audio``) to the address the proxy put into the SDP.  A call
passes when SIPp counts it successful; the run passes when every call did
and the RTP datagrams that dumpcap saw going into and out of the proxy's
port range agree with each other, with what the two ends sent, and with the
proxy's own ng counters (``query`` ``totals``).

Two Kamailio routes are exercised: ``rtpengine_manage()`` on every message,
and ``rtpengine_offer()``/``rtpengine_answer()``/``rtpengine_delete()``
(chosen per call by an ``X-RTP-Mode`` header, see the fixture
``kamailio/kamailio.cfg``).

:class:`OmnirtpKamailioTests` is the test that matters;
:class:`RtpengineKamailioTests` runs the same calls against Debian's
rtpengine 10.5, which proves the harness itself (if only the omnirtp class
fails, omnirtp is at fault).
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test.integration import peers

CALLS = 20
PACKETS = 50          # RTP packets each end sends per call (20 ms apart: 1 s)
PTIME_MS = 20
CALL_RATE = 10        # calls started per second
CONCURRENT = 10       # calls up at once at most
HOLD_MS = 2500        # UAC stays in the call this long after its ACK
PROXY_PORTS = 200     # size of the proxy's media port range
DELETE_DELAY = 600    # keep deleted calls queryable until the test is done
SIPP_TIMEOUT = 120.0


class KamailioCallsMixin:
    """Place ``CALLS`` calls per Kamailio route through the proxy that
    :meth:`start_proxy` starts, and check calls and media."""

    def start_proxy(self, ng_port, port_min, port_max):
        raise NotImplementedError()

    def setUp(self):
        for program in ("kamailio", "sipp", "dumpcap"):
            peers.find_program(program)  # skip early, naming what is missing

    def place_calls(self, mode):
        """Run the calls with Kamailio's ``mode`` route; return a dict of what
        was observed (for the assertions)."""
        ng_port, sip_port, uac_port, uas_port = peers.free_ports(4)
        port_min, port_max = peers.free_port_range(PROXY_PORTS)
        proxy = self.start_proxy(ng_port, port_min, port_max)

        media_first, _ = peers.free_port_range(8)
        uac_media, uas_media = media_first, media_first + 4

        peers.start_kamailio(self, sip_port, {
            "NG_SOCK": '"udp:%s:%d"' % (peers.LOOPBACK, ng_port),
            "UAS": '"sip:%s:%d"' % (peers.LOOPBACK, uas_port),
        })

        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        pcap = peers.write_rtp_pcap(os.path.join(work, "pcmu.pcap"), packets=PACKETS,
                                    ptime_ms=PTIME_MS)
        fixtures = os.path.join(peers.FIXTURES, "sipp")
        uac_xml = peers.render(os.path.join(fixtures, "uac.xml"), work, PCAP=pcap,
                               PAUSE_MS=HOLD_MS)
        uas_xml = peers.render(os.path.join(fixtures, "uas.xml"), work, PCAP=pcap)

        sniffer = peers.capture(self, port_min, port_max)
        uas = peers.start_sipp(self, "uas", uas_xml, uas_port, uas_media, calls=CALLS)
        uac = peers.start_sipp(
            self, "uac", uac_xml, uac_port, uac_media,
            "%s:%d" % (peers.LOOPBACK, sip_port), calls=CALLS, keys={"mode": mode},
            extra_args=["-r", str(CALL_RATE), "-l", str(CONCURRENT)])
        uac_code = uac.wait(SIPP_TIMEOUT)
        uac_stats = uac.stats()
        # the UAS ends after CALLS calls; when some never reached it, it
        # would wait for its -timeout: stop it soon instead
        try:
            uas_code = uas.wait(SIPP_TIMEOUT if uac_stats.failed == 0 else 5.0)
        except peers.PeerFailed:
            uas_code = None
        datagrams = sniffer.stop()

        # Only datagrams between the two SIPp media sockets and the proxy's
        # range count: on a shared machine other programs' traffic may
        # touch a port of the range too.
        in_range = lambda port: port_min <= port <= port_max  # noqa: E731
        sipp_ports = {uac_media, uas_media}
        ingress = [d for d in datagrams if d[1] in sipp_ports and in_range(d[3])]
        egress = [d for d in datagrams if in_range(d[1]) and d[3] in sipp_ports]
        return {
            "uac": (uac_code, uac_stats, uac),
            "uas": (uas_code, uas.stats() if uas_code is not None else None),
            "ingress": ingress,
            "egress": egress,
            "uac_media": uac_media,
            "uas_media": uas_media,
            "proxy": proxy,
            "proxy_totals": self.proxy_rtp_totals(proxy),
        }

    def proxy_rtp_totals(self, proxy):
        """``(calls, packets, ports)``: the calls the proxy still lists
        (deleted calls linger for ``delete-delay`` seconds), the sum of
        their ``totals.RTP.packets`` and the local ports of their streams."""
        listed = proxy.ng.request({"command": "list", "limit": 1000})
        self.assertEqual(listed.get("result"), "ok", listed)
        packets, ports = 0, set()
        for call_id in listed["calls"]:
            reply = proxy.ng.request({"command": "query", "call-id": call_id})
            self.assertEqual(reply.get("result"), "ok", reply)
            packets += reply["totals"]["RTP"]["packets"]
            for tag in reply["tags"].values():
                for media in tag.get("medias", ()):
                    for stream in media.get("streams", ()):
                        ports.add(stream["local port"])
        return len(listed["calls"]), packets, ports

    def check_calls(self, mode):
        seen = self.place_calls(mode)
        uac_code, uac_stats, uac = seen["uac"]
        uas_code, uas_stats = seen["uas"]
        self.assertEqual((uac_code, uac_stats.successful, uac_stats.failed), (0, CALLS, 0),
                         "UAC: exit code, successful, failed calls\n%s" % (
                             uac.errors(),))
        self.assertIsNot(uas_stats, None, "the UAS did not finish")
        self.assertEqual((uas_code, uas_stats.successful, uas_stats.failed), (0, CALLS, 0),
                         "UAS: exit code, successful, failed calls")

        expected = CALLS * PACKETS * 2  # both directions of every call
        ingress, egress = seen["ingress"], seen["egress"]
        for port in (seen["uac_media"], seen["uas_media"]):
            self.assertEqual(sum(1 for d in ingress if d[1] == port), CALLS * PACKETS,
                             "RTP datagrams from SIPp port %d into the proxy" % (port,))
            self.assertEqual(sum(1 for d in egress if d[3] == port), CALLS * PACKETS,
                             "RTP datagrams from the proxy to SIPp port %d" % (port,))
        self.assertEqual(len(ingress), expected, "RTP datagrams into the proxy (capture)")
        self.assertEqual(len(egress), expected, "RTP datagrams out of the proxy (capture)")
        calls, counted, ports = seen["proxy_totals"]
        self.assertEqual(calls, CALLS, "calls the proxy lists")
        self.assertEqual(counted, len(ingress), "proxy's RTP packet count vs capture")
        used = {d[3] for d in ingress} | {d[1] for d in egress}
        self.assertEqual(used - ports, set(), "captured ports the proxy's query does not list")
        # one RTP port per party per call carried the media
        self.assertEqual(len({d[3] for d in ingress}), 2 * CALLS, "proxy RTP ports used")

    def test_rtpengine_manage(self):
        """20 calls with rtpengine_manage() on INVITE, 200 and BYE all complete
        and their RTP goes through the proxy's ports, counted the same by the
        proxy and by the capture."""
        self.check_calls("manage")

    def test_rtpengine_offer_answer_delete(self):
        """The same with rtpengine_offer(), rtpengine_answer() and
        rtpengine_delete()."""
        self.check_calls("explicit")


class RtpengineKamailioTests(KamailioCallsMixin, SynchronousTestCase):
    """The calls against Debian's rtpengine 10.5: proves the harness."""

    def start_proxy(self, ng_port, port_min, port_max):
        return peers.start_rtpengine(self, ng_port, port_min, port_max,
                                     ["--delete-delay=%d" % DELETE_DELAY])


class OmnirtpKamailioTests(KamailioCallsMixin, SynchronousTestCase):
    """The calls against omnirtp."""

    def start_proxy(self, ng_port, port_min, port_max):
        return peers.start_omnirtp(self, ng_port, port_min, port_max,
                                   ["--delete-delay=%d" % DELETE_DELAY])


class HarnessTests(SynchronousTestCase):
    """The harness's pure parts: what the call tests' verdicts rest on."""

    def test_pcap_round_trip(self):
        """write_rtp_pcap writes PACKETS RTP datagrams that read_udp_pcap
        reads back with their ports and lengths (12-byte header + 160 bytes
        of PCMU for 20 ms)."""
        path = os.path.join(os.path.abspath(self.mktemp()))
        peers.write_rtp_pcap(path, packets=7, ptime_ms=20, src=("10.1.2.3", 4000),
                             dst=("10.3.2.1", 5000))
        self.assertEqual(peers.read_udp_pcap(path),
                         [("10.1.2.3", 4000, "10.3.2.1", 5000, 172)] * 7)

    def test_read_udp_pcap_rejects_other_files(self):
        """A file that is not libpcap (e.g. pcapng) is refused by name."""
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(b"\x0a\x0d\x0d\x0a" + b"\x00" * 28)
        error = self.assertRaises(ValueError, peers.read_udp_pcap, path)
        self.assertIn("not a libpcap file", str(error))

    def test_ulaw(self):
        """G.711 mu-law codes of silence and of both clipping ends."""
        self.assertEqual([peers._ulaw(s) for s in (0, -1, 32767, -32768)],
                         [0xFF, 0x7F, 0x80, 0x00])

    def test_render_refuses_missing_value(self):
        """A fixture placeholder without a value is an error, not a file
        SIPp would choke on later."""
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        template = os.path.join(peers.FIXTURES, "sipp", "uac.xml")
        self.assertRaises(KeyError, peers.render, template, work, PCAP="/x.pcap")
        rendered = peers.render(template, work, PCAP="/x.pcap", PAUSE_MS=10)
        with open(rendered) as f:
            text = f.read()
        self.assertIn('play_pcap_audio="/x.pcap"', text)
        self.assertIn('<pause milliseconds="10"/>', text)

    def test_free_ports_distinct(self):
        """free_ports never hands out the same port twice in one call."""
        ports = peers.free_ports(20)
        self.assertEqual(len(set(ports)), 20)

    def test_run_tests_summary(self):
        """scripts/run-tests reads trial's closing line into passed/failed
        counts (CI's reader depends on the total it prints)."""
        from importlib.machinery import SourceFileLoader
        from importlib.util import module_from_spec, spec_from_loader
        loader = SourceFileLoader("omnirtp_run_tests",
                                  os.path.join(peers.ROOT, "scripts", "run-tests"))
        module = module_from_spec(spec_from_loader(loader.name, loader))
        loader.exec_module(module)
        self.assertEqual(module.parse_summary(
            "...\nFAILED (skips=1, failures=2, errors=1, successes=10)\n"), (10, 3, 1))
        self.assertEqual(module.parse_summary("PASSED (successes=5)\n"), (5, 0, 0))
        self.assertIsNone(module.parse_summary("Traceback (most recent call last):\n"))
        self.assertNotIn("omnirtp.test.integration.test_kamailio", module.unit_modules())
