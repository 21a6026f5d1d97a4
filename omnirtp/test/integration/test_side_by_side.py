"""Side by side: every corpus case against Debian's rtpengine 10.5 and against omnirtp.

For each case (omnirtp.test.corpus) two tests exist:

* ``test_rtpengine_<case>`` runs the case against a live rtpengine 10.5 on
  127.0.0.1 and checks that its normalised replies still equal the stored
  fixture (omnirtp/test/fixtures/corpus/<case>.json).  Skipped only when the
  rtpengine binary is not installed.
* ``test_omnirtp_<case>`` runs the same requests against an omnirtp daemon
  (twistd, from this checkout) and compares its normalised replies with the
  fixture.  Cases that need a later issue (``case.needs``) are skipped with
  the case's reason; these skips are on the allow-list
  (omnirtp/test/allowed-skips.txt) and ``scripts/run-tests`` fails on any
  other.  When only some lines need the issue (``case.needs_lines``), this
  test compares the rest today and ``test_omnirtp_<case>_<needs>``, the
  whole replies, is the one skipped.

A daemon that does not start or answer ping fails every test of its setup,
with its log tail in the failure.

``LiveCallTests`` sends the same call (offer, answer, RTP and RTCP from the
test's own sockets) through a fresh rtpengine and a fresh omnirtp and
compares their query, list, statistics and delete replies key by key
(``LIVE_DIFFERENCES`` states each difference and why).  ``BadInputTests``
sends the malformed datagrams of ``corpus.BAD_INPUT`` to both and compares
the replies byte for byte.

Both daemons are started once per interface setup and shared by the cases;
ports are chosen free on 127.0.0.1 by the test.
"""

import os
import re
import socket
import sys
import time

from twisted.trial.unittest import FailTest, SkipTest, SynchronousTestCase

from omnirtp.test import corpus
from omnirtp.test.integration.reference import (
    DaemonFailed, find_rtpengine, free_port_range, omnirtp_daemon, rtpengine_daemon)

# media ports per daemon: the whole corpus keeps about 230 ports of rtpengine's
# "single" daemon in use (most calls are never deleted), "named" about 20 and
# the live call 8.  Small blocks are easier to find free on a busy machine.
MEDIA_PORTS = {"single": 600, "named": 200, "multi": 100, "live": 100}
# generous: a slow start on a loaded machine is not what these tests check
START_WAIT = 60.0
START_ATTEMPTS = 3


class _Daemons:
    """Lazily started daemons, one per (kind, setup), stopped at interpreter exit."""

    running = {}
    failures = {}

    @classmethod
    def get(cls, kind, setup, interfaces=None):
        """The running daemon of ``kind`` for corpus setup ``setup`` (or, with
        ``interfaces``, for a setup of that name used only by its caller)."""
        key = (kind, setup)
        if key in cls.failures:
            raise FailTest(cls.failures[key])
        if key not in cls.running:
            factory = rtpengine_daemon if kind == "rtpengine" else omnirtp_daemon
            for attempt in range(START_ATTEMPTS):
                # ng port and media ports from one block outside the kernel's
                # ephemeral range, where other programs' sockets rarely land
                first, last = free_port_range(MEDIA_PORTS.get(setup, 600) + 2)
                daemon = factory(first, first + 2, last, interfaces or corpus.SETUPS[setup])
                try:
                    daemon.start(wait=START_WAIT)
                    break
                except DaemonFailed as e:
                    # a port taken between picking and binding is a race with
                    # another process, not the daemon's fault: pick again
                    if "Address already in use" in str(e) and attempt + 1 < START_ATTEMPTS:
                        continue
                    cls.failures[key] = "%s (%s) did not start: %s" % (kind, setup, e)
                    raise FailTest(cls.failures[key])
            cls.running[key] = daemon
            import atexit
            atexit.register(daemon.stop)
        return cls.running[key]


def _prefix():
    return "sbs%d" % os.getpid()


class SideBySideTests(SynchronousTestCase):
    """Generated per corpus case (see the module docstring)."""

    def run_against(self, kind, case):
        daemon = _Daemons.get(kind, case.setup)
        return corpus.run_case(case, daemon.request, "%s-%s" % (_prefix(), kind))

    def check_rtpengine(self, case):
        if find_rtpengine() is None:
            raise SkipTest("Debian's rtpengine 10.5 is not installed (/usr/sbin or /usr/bin)")
        want = corpus.load_expected(case.name)
        if want is None:
            self.fail("no fixture for %s: run 'python -m omnirtp.test.corpus record %s'"
                      % (case.name, case.name))
        self.assertEqual(self.run_against("rtpengine", case), want)

    def check_omnirtp(self, case, whole=False):
        if case.needs and (whole or not case.needs_lines):
            raise SkipTest("needs %s: %s" % (case.needs, case.reason))
        want = corpus.load_expected(case.name)
        if want is None:
            self.fail("no fixture for %s" % (case.name,))
        self.assertEqual(self.run_against("omnirtp", case),
                         case.expected_for_omnirtp(want) if whole else case.expected_today(want))


def _add_tests():
    for case in corpus.CASES:
        def rtpengine_test(self, case=case):
            self.check_rtpengine(case)

        def omnirtp_test(self, case=case):
            self.check_omnirtp(case)
        rtpengine_test.__doc__ = "rtpengine 10.5 still answers %s as recorded." % (case.name,)
        omnirtp_test.__doc__ = "omnirtp answers %s as rtpengine 10.5 does." % (case.name,)
        if case.differs:
            omnirtp_test.__doc__ += " Differs on purpose: " + case.reason
        setattr(SideBySideTests, "test_rtpengine_" + case.name, rtpengine_test)
        setattr(SideBySideTests, "test_omnirtp_" + case.name, omnirtp_test)
        if case.needs_lines:
            omnirtp_test.__doc__ = ("omnirtp answers %s as rtpengine 10.5 does, without the "
                                    "lines that need %s." % (case.name, case.needs))

            def whole_test(self, case=case):
                self.check_omnirtp(case, whole=True)
            whole_test.__doc__ = ("omnirtp answers %s as rtpengine 10.5 does, %s lines "
                                  "included." % (case.name, case.needs))
            setattr(SideBySideTests, "test_omnirtp_%s_%s" % (case.name, case.needs), whole_test)


_add_tests()


# -- query, list and statistics after a live call -------------------------------------

RTP = b"\x80\x00\x00\x01\x00\x00\x00\xa0\x12\x34\x56\x78" + b"\xd5" * 160
RTCP = b"\x81\xc8\x00\x06\x12\x34\x56\x78" + b"\x00" * 20

#: Where omnirtp's query/list/statistics replies differ from rtpengine 10.5's
#: on purpose or until a named later issue: (path pattern, kind, reason).
#: ``kind`` is "rtpengine only" (a key omnirtp does not send), "omnirtp only"
#: or "value".  Paths are "/"-joined keys and list indexes; a list of strings
#: (flags, call-ids) becomes one key per string.  In a pattern ``*`` stands
#: for any text within one path element; a pattern also covers every path
#: below it.  Every entry must match a difference the live comparison finds,
#: and every difference an entry.
LIVE_DIFFERENCES = [
    # query, and the statistics in delete's reply (same layout)
    ("*/SSRC", "rtpengine only",
     "per-SSRC statistics (RTCP reports, MOS) are not computed: the MOS/RTCP issue (10.5 "
     "sends an empty dictionary here without ssrc-reporting)"),
    ("*/tags/*/medias/*/flags/ICE controlling", "rtpengine only",
     "10.5 marks the answerer's media 'ICE controlling' although no ICE was negotiated; "
     "omnirtp has no ICE agent before the WebRTC issue"),
    ("*/tags/*/medias/*/streams/*/flags/confirmed", "omnirtp only",
     "endpoint learning: omnirtp confirms an endpoint when a packet arrives from the "
     "advertised address (ng-spec 3.10); 10.5 had not confirmed it yet right after the "
     "packets (it confirms after its learning window)"),
    ("*/tags/*/in dialogue with", "omnirtp only",
     "the key of rtpengine before 10.x, kept next to 10.5's subscriptions/subscribers for "
     "scripts written against older versions"),
    ("delete-now", "omnirtp only",
     "a delete that ends the call at once ('delete delay' 0): 10.5 replies with the result "
     "only; omnirtp sends the call's final statistics as for every delete without 'fast' "
     "(ng-spec 2.5), so Kamailio can read them either way"),
    # statistics
    ("statistics*/statistics/intervalstatistics", "rtpengine only",
     "per-interval min/avg/max request delays and rates are not measured"),
    ("statistics*/statistics/mos", "rtpengine only",
     "MOS needs RTCP parsing (the MOS/RTCP issue)"),
    ("statistics*/statistics/transcoders", "rtpengine only",
     "the running transcoders per codec chain are not listed (omnirtp's 'codecs' shows "
     "what it can transcode; each transcoded stream's counters are in query)"),
    ("statistics*/statistics/interfaces", "rtpengine only",
     "per-interface port usage is not reported by the media engine yet; the sum over all "
     "interfaces is in omnirtp's 'ports'"),
    ("statistics*/statistics/codecs", "omnirtp only",
     "the codecs this process can transcode and the unusable ones with their reason "
     "(10.5 shows its codecs only in its log and --codecs output)"),
    ("statistics*/statistics/ports", "omnirtp only",
     "used and free media ports over all interfaces (10.5 reports them per interface)"),
    ("statistics*/statistics/totalstatistics/junkpackets", "omnirtp only",
     "datagrams dropped on media ports that are neither RTP nor RTCP"),
    ("statistics*/statistics/totalstatistics/lostsessions", "omnirtp only",
     "calls lost with a crashed media worker process (num-threads > 0)"),
    ("statistics*/statistics/totalstatistics/totalcallsduration2", "rtpengine only",
     "the sum of squared call durations (for the standard deviation) is not kept"),
    ("statistics*/statistics/totalstatistics/totalcallsduration_stddev", "rtpengine only",
     "the standard deviation of call durations is not kept"),
    ("statistics*/statistics/totalstatistics/zerowaystreams", "rtpengine only",
     "streams without media in either direction are not counted at call end"),
    ("statistics*/statistics/totalstatistics/onewaystreams", "rtpengine only",
     "streams with media in one direction only are not counted at call end"),
    ("statistics*/statistics/controlstatistics/proxies/*/*duration", "rtpengine only",
     "how long each command took is not measured"),
    ("statistics*/statistics/controlstatistics/proxies/*/*count", "rtpengine only",
     "counts of commands omnirtp does not implement yet (recording, forwarding, media "
     "playback, DTMF, publish/subscribe)"),
    ("statistics*/statistics/controlstatistics/total*count", "rtpengine only",
     "totals of commands omnirtp does not implement yet"),
    ("statistics*/statistics/controlstatistics/*count", "omnirtp only",
     "omnirtp's flat per-command counts (the request being answered included), kept next "
     "to 10.5's proxies and total*count"),
]

#: differences that depend on how long the test takes (rtpengine confirms an
#: endpoint after a few seconds): stated, but absent on a slow run
TIMING_DIFFERENCES = {"*/tags/*/medias/*/streams/*/flags/confirmed"}


def _flatten(value, path, out):
    if value == {}:
        out[path] = {}
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, "%s/%s" % (path, key), out)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value) and value:
        for item in value:
            out["%s/%s" % (path, item)] = True
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _flatten(item, "%s/%d" % (path, i), out)
        if not value:
            out[path] = []
    else:
        out[path] = value
    return out


TIME_KEYS = ("created", "last signal", "last packet")
SAMPLED_KEYS = ("media_userspace", "packetrate", "byterate", "errorrate",
                "packetrate_user", "byterate_user", "errorrate_user")
DURATION_KEYS = ("avgcallduration", "totalcallsduration")


class LiveCall:
    """One call through one daemon: offer/answer, RTP and RTCP both ways from
    the test's own UDP sockets, then query, list, statistics and delete."""

    A_TO_B = 3      # RTP packets A sends
    B_TO_A = 2
    A_RTCP = 1      # RTCP packets from A's RTCP socket

    def __init__(self, daemon, call_id):
        self.daemon = daemon
        self.call_id = call_id
        self.sockets = {}
        self.names = {}     # port -> symbolic name, for comparing replies

    def _socket(self, name):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(5.0)
        self.sockets[name] = s
        self.names[s.getsockname()[1]] = "{%s}" % name
        return s.getsockname()[1]

    @staticmethod
    def _sdp(rtp, rtcp):
        return ("v=0\r\no=u 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                "m=audio %d RTP/AVP 0 8\r\na=rtcp:%d\r\n" % (rtp, rtcp))

    @staticmethod
    def _port(sdp):
        return int(next(line for line in sdp.split("\r\n") if line.startswith("m=")).split()[1])

    def _receive(self, name, count):
        s = self.sockets[name]
        got = []
        for _ in range(count):
            got.append(s.recvfrom(2048))
        return got

    def run(self):
        """Returns the replies to query (whole call and one tag), list,
        statistics, delete, delete now, statistics again; ``t0``/``t1``
        bracket their times."""
        a, a_rtcp = self._socket("A"), self._socket("A_RTCP")
        b, b_rtcp = self._socket("B"), self._socket("B_RTCP")
        self.t0 = int(time.time())
        req = self.daemon.request
        offer = req({"command": "offer", "call-id": self.call_id, "from-tag": "ft",
                     "sdp": self._sdp(a, a_rtcp)})
        answer = req({"command": "answer", "call-id": self.call_id, "from-tag": "ft",
                      "to-tag": "tt", "sdp": self._sdp(b, b_rtcp)})
        to_a, to_b = self._port(answer["sdp"]), self._port(offer["sdp"])
        for port, name in ((to_a, "TO_A"), (to_a + 1, "TO_A+1"), (to_b, "TO_B"),
                           (to_b + 1, "TO_B+1")):
            self.names[port] = "{%s}" % name
        for _ in range(self.A_TO_B):
            self.sockets["A"].sendto(RTP, ("127.0.0.1", to_a))
        for _ in range(self.A_RTCP):
            self.sockets["A_RTCP"].sendto(RTCP, ("127.0.0.1", to_a + 1))
        for _ in range(self.B_TO_A):
            self.sockets["B"].sendto(RTP, ("127.0.0.1", to_b))
        # every packet arrives, from the port advertised to its receiver
        self.received = {
            "B": self._receive("B", self.A_TO_B),
            "B_RTCP": self._receive("B_RTCP", self.A_RTCP),
            "A": self._receive("A", self.B_TO_A),
        }
        self.ports = {"TO_A": to_a, "TO_B": to_b}
        replies = {
            "query": req({"command": "query", "call-id": self.call_id}),
            "query-from-tag": req({"command": "query", "call-id": self.call_id,
                                   "from-tag": "ft"}),
            "list": req({"command": "list"}),
            "statistics": req({"command": "statistics"}),
            # Kamailio's delete: the call lingers for delete-delay (30 s)
            "delete": req({"command": "delete", "call-id": self.call_id, "from-tag": "ft"}),
        }
        replies["delete-now"] = req({"command": "delete", "call-id": self.call_id,
                                     "delete delay": 0})
        replies["statistics-after"] = req({"command": "statistics"})
        self.t1 = int(time.time()) + 1
        for s in self.sockets.values():
            s.close()
        return replies

    def normalise(self, replies):
        """Flattened replies with ports named, times and durations checked
        (the test's own clock brackets them) and replaced by placeholders."""
        flat = {}
        for name, reply in replies.items():
            _flatten(reply, name, flat)
        for path, value in list(flat.items()):
            key = path.rsplit("/", 1)[1]
            if key in TIME_KEYS and isinstance(value, int):
                flat[path] = "{TIME}" if self.t0 <= value <= self.t1 else ("bad time", value)
            elif key == "created_us":
                flat[path] = "{US}" if 0 <= value < 1000000 else ("bad us", value)
            elif key in ("port", "local port"):
                flat[path] = self.names.get(value, ("unknown port", value))
            elif key == "uptime":
                # the daemons may have been started minutes ago in this run
                flat[path] = ("{UPTIME}", type(value).__name__) if 0 <= int(value) <= 3600 \
                    else ("bad uptime", value)
            elif key in SAMPLED_KEYS:
                # 10.5 samples these once a second (how many streams saw
                # media lately, packets in the last second): timing, so only
                # the type is compared.  omnirtp's rates are 0 (not measured;
                # docs/compat.md)
                ok = isinstance(value, int) and value >= 0
                flat[path] = "{SAMPLED}" if ok else ("bad sample", value)
            elif key == "pingcount" or key == "totalpingcount":
                # Daemon.start pings until the daemon answers: how many of
                # those pings arrived is timing, not behaviour
                flat[path] = "{PINGS}" if value >= 1 else ("bad pings", value)
            elif key in DURATION_KEYS or key.endswith("duration"):
                ok = isinstance(value, str) and re.match(r"^\d+\.\d{6}$", value)
                flat[path] = "{DURATION}" if ok else ("bad duration", value)
        return flat


def live_differences(want, got):
    """``{(path, kind)}`` where ``got`` (omnirtp) differs from ``want`` (rtpengine)."""
    found = set()
    for path in set(want) | set(got):
        if path not in got:
            found.add((path, "rtpengine only"))
        elif path not in want:
            found.add((path, "omnirtp only"))
        elif want[path] != got[path] or type(want[path]) is not type(got[path]):
            found.add((path, "value"))
    return found


def _pattern(pattern):
    """A LIVE_DIFFERENCES path pattern as a regular expression."""
    parts = (re.escape(part) for part in pattern.split("*"))
    return re.compile("[^/]*".join(parts) + "(/.*)?$")


def explain(difference):
    """The LIVE_DIFFERENCES entry for one difference, or None."""
    path, kind = difference
    for pattern, entry_kind, reason in LIVE_DIFFERENCES:
        if entry_kind == kind and _pattern(pattern).match(path):
            return pattern, entry_kind, reason
    return None


class LiveCallTests(SynchronousTestCase):
    """query, list and statistics after the same live call through both
    daemons (each started for this class only, so the counters are this
    call's)."""

    results = {}

    def live(self, kind):
        if kind == "rtpengine" and find_rtpengine() is None:
            raise SkipTest("Debian's rtpengine 10.5 is not installed (/usr/sbin or /usr/bin)")
        if kind not in self.results:
            daemon = _Daemons.get(kind, "live", ["127.0.0.1"])
            call = LiveCall(daemon, "%s-live" % (_prefix(),))
            replies = call.run()
            self.results[kind] = (call, replies, call.normalise(replies))
        return self.results[kind]

    def test_relayed(self):
        """Both daemons relay every packet, each from the port advertised to its receiver."""
        for kind in ("rtpengine", "omnirtp"):
            call = self.live(kind)[0]
            to_a, to_b = call.ports["TO_A"], call.ports["TO_B"]
            self.assertEqual(call.received, {
                "B": [(RTP, ("127.0.0.1", to_b))] * LiveCall.A_TO_B,
                "B_RTCP": [(RTCP, ("127.0.0.1", to_b + 1))] * LiveCall.A_RTCP,
                "A": [(RTP, ("127.0.0.1", to_a))] * LiveCall.B_TO_A,
            }, kind)

    def test_counts(self):
        """Per-stream packet and byte counts, totals and the relayed totals in
        statistics: the values both daemons must give, exactly."""
        rtp, rtcp = len(RTP), len(RTCP)
        want = {
            "query/tags/ft/medias/0/streams/0/stats": {
                "packets": LiveCall.A_TO_B, "bytes": LiveCall.A_TO_B * rtp, "errors": 0},
            "query/tags/ft/medias/0/streams/1/stats": {
                "packets": LiveCall.A_RTCP, "bytes": LiveCall.A_RTCP * rtcp, "errors": 0},
            "query/tags/tt/medias/0/streams/0/stats": {
                "packets": LiveCall.B_TO_A, "bytes": LiveCall.B_TO_A * rtp, "errors": 0},
            "query/tags/tt/medias/0/streams/1/stats": {"packets": 0, "bytes": 0, "errors": 0},
            "query/totals/RTP": {"packets": LiveCall.A_TO_B + LiveCall.B_TO_A,
                                 "bytes": (LiveCall.A_TO_B + LiveCall.B_TO_A) * rtp,
                                 "errors": 0},
            "query/totals/RTCP": {"packets": LiveCall.A_RTCP, "bytes": LiveCall.A_RTCP * rtcp,
                                  "errors": 0},
        }
        relayed = LiveCall.A_TO_B + LiveCall.B_TO_A + LiveCall.A_RTCP
        relayed_bytes = (LiveCall.A_TO_B + LiveCall.B_TO_A) * rtp + LiveCall.A_RTCP * rtcp
        for kind in ("rtpengine", "omnirtp"):
            flat = self.live(kind)[2]
            for prefix, counts in want.items():
                for key, value in counts.items():
                    self.assertEqual(flat[prefix + "/" + key], value, (kind, prefix, key))
            for name in ("statistics", "statistics-after"):
                total = name + "/statistics/totalstatistics/"
                self.assertEqual((flat[total + "relayedpackets"], flat[total + "relayedbytes"]),
                                 (relayed, relayed_bytes), (kind, name))
            self.assertEqual(flat["list/calls/" + _prefix() + "-live"], True, kind)

    def test_replies(self):
        """Every key and value of the normalised query (whole call and one
        tag), list, statistics (during and after the call) and delete replies
        is the same in both daemons, except the differences LIVE_DIFFERENCES
        states with their reasons; and each stated difference still occurs."""
        want = self.live("rtpengine")[2]
        got = self.live("omnirtp")[2]
        found = live_differences(want, got)
        unexplained = sorted("%s (%s): rtpengine %r, omnirtp %r"
                             % (path, kind, want.get(path), got.get(path))
                             for path, kind in found if explain((path, kind)) is None)
        self.assertEqual(unexplained, [])
        used = {explain(d)[0:2] for d in found}
        stale = [(p, k) for p, k, _ in LIVE_DIFFERENCES
                 if (p, k) not in used and p not in TIMING_DIFFERENCES]
        self.assertEqual(stale, [])


# -- error texts for malformed requests ---------------------------------------------

class BadInputTests(SynchronousTestCase):
    """Each malformed datagram of corpus.BAD_INPUT asked of the live
    rtpengine 10.5 and of omnirtp: byte-identical replies, except the stated
    differences (docs/compat.md).  Both daemons answer ping afterwards."""

    rtpengine_replies = {}

    @staticmethod
    def ask(daemon, name, payload):
        cookie = ("%s_%s" % (_prefix(), name)).encode()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", 0))
            s.settimeout(5.0)
            datagram = cookie + b" " + payload
            assert len(datagram) <= 65507, name
            s.sendto(datagram, ("127.0.0.1", daemon.ng_port))
            reply, _ = s.recvfrom(65536)
        finally:
            s.close()
        head, _, body = reply.partition(b" ")
        if head != cookie:
            raise AssertionError("%s: reply with cookie %r" % (name, head))
        return body

    def rtpengine_reply(self, name):
        if find_rtpengine() is None:
            raise SkipTest("Debian's rtpengine 10.5 is not installed (/usr/sbin or /usr/bin)")
        case = corpus.BAD_INPUT_BY_NAME[name]
        assert not case.rtpengine_crashes, name
        if name not in self.rtpengine_replies:
            daemon = _Daemons.get("rtpengine", "single")
            self.rtpengine_replies[name] = self.ask(daemon, name, case.payload)
            self.assertTrue(daemon.client.ping(), "rtpengine died on %s" % (name,))
        return self.rtpengine_replies[name]

    def check(self, case):
        want = self.rtpengine_reply(case.like or case.name)
        if case.like and not case.rtpengine_crashes:
            # the stated difference still exists: 10.5 answers otherwise
            self.assertNotEqual(self.rtpengine_reply(case.name), want)
        daemon = _Daemons.get("omnirtp", "single")
        self.assertEqual(self.ask(daemon, case.name, case.payload), want)
        self.assertTrue(daemon.client.ping(), "omnirtp died on %s" % (case.name,))


def _add_bad_input_tests():
    for case in corpus.BAD_INPUT:
        def test(self, case=case):
            self.check(case)
        test.__doc__ = "omnirtp answers the malformed request %s as rtpengine 10.5 does" % (
            case.name,)
        if case.like:
            test.__doc__ += (" to %s, on purpose: %s" % (case.like, case.reason))
        setattr(BadInputTests, "test_" + case.name, test)


_add_bad_input_tests()


class DaemonStartTests(SynchronousTestCase):
    """A side-by-side daemon that does not start fails its tests (never a
    skip), with the end of its log in the failure."""

    def test_notStartingFailsWithLogTail(self):
        from omnirtp.test.integration.reference import Daemon
        module = sys.modules[__name__]

        def broken(ng_port, port_min, port_max, interfaces):
            code = "import sys; sys.stderr.write('bad option --nope\\n'); sys.exit(3)"
            return Daemon([sys.executable, "-c", code], ng_port, name="omnirtp")
        self.patch(module, "omnirtp_daemon", broken)
        key = ("omnirtp", "broken-for-test")
        self.addCleanup(_Daemons.failures.pop, key, None)
        for _ in range(2):  # the first start's failure, then the remembered one
            e = self.assertRaises(FailTest, _Daemons.get, "omnirtp", "broken-for-test",
                                  ["127.0.0.1"])
            self.assertIn("omnirtp (broken-for-test) did not start: omnirtp exited with 3: "
                          "bad option --nope", str(e))
        self.assertNotIn(key, _Daemons.running)
