"""Calls through Kamailio outlive a restart of omnirtp (issue 10).

The deployment of the seed, as an operator runs it: Kamailio 5.6 with its
``rtpengine`` module (the recommended modparams of docs/scaling.md, in the
fixture ``kamailio/kamailio.cfg``), SIPp calls, omnirtp with ``redis`` on a
real redis-server.  ``RESTART_CALLS`` calls are set up through Kamailio and
talk (RTP both ways, through omnirtp); then omnirtp is SIGKILLed.  While it
is down a new call's INVITE reaches Kamailio: its offer fails at once (the
ng port refuses it) and the module marks the node disabled.  omnirtp is
started again (same options, same Redis) and restores the calls; then:

* each call's endpoints talk again, to the same proxy ports their SDPs gave
  them before the kill, and each must get all its peer's new packets from
  those addresses (the harness's exact per-call media verdict);
* each caller then (on an INFO the test sends it) puts its call on hold and
  resumes it (re-INVITEs: offers and answers through Kamailio to the
  restarted omnirtp, with media in each phase) and hangs up (the BYE's
  delete): every call succeeds and Kamailio logs no rtpengine error after
  the restart, although the window's failure marked the node disabled
  (``rtpengine_allow_op = 1`` sends a call's requests to its node all the
  same; without it they get "no available proxies" and the re-INVITEs a
  503), and no session is left, neither in omnirtp nor in Redis.

Beyond that, every check of ``test_kamailio`` holds; the proxy's RTP
counters of a call count what it relayed since the restart (counters are
not restored, see omnirtp/state/restore.py).
"""

import os
import signal
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test.integration import peers
from omnirtp.test.integration.test_kamailio import (
    HOLD_PACKETS, PACKETS, UAC, UAS, KamailioCallsMixin, expected_sent, wait_until_serving)

RESTART_CALLS = 4
RESTART_WAIT = 60.0       # bound on omnirtp's exit and its start again (not a timed check)
REDIS_DB = 1

#: talk, [SIGKILL, restart], talk again ("restarted", a test event), hold, resume
FLOWS = {
    "restart": [("talk", "answer", "offer", {UAC: PACKETS, UAS: PACKETS}),
                ("restarted", "restarted", "restarted", {UAC: PACKETS, UAS: PACKETS}),
                ("hold", "hold", "hold", {UAC: HOLD_PACKETS}),
                ("resume", "resume", "resume", {UAC: PACKETS, UAS: PACKETS})],
}
CALLERS = {"restart": ("uac_restart.xml", RESTART_CALLS)}

SDP = ("v=0\r\no=probe 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def sip_request(method, uri, local_port, call_id, body="", content_type=None):
    """A SIP request from the test's socket on 127.0.0.1:``local_port``."""
    lines = ["%s %s SIP/2.0" % (method, uri),
             "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK-%s" % (peers.LOOPBACK, local_port, call_id),
             "From: <sip:test@%s>;tag=test" % (peers.LOOPBACK,),
             "To: <%s>" % (uri,),
             "Call-ID: %s" % (call_id,),
             "CSeq: 1 %s" % (method,),
             "Contact: <sip:test@%s:%d>" % (peers.LOOPBACK, local_port),
             "Max-Forwards: 70"]
    if content_type:
        lines.append("Content-Type: %s" % (content_type,))
    lines.append("Content-Length: %d" % (len(body),))
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("ascii")


def redis_call_keys(port, db):
    """The ``omnirtp:call:*`` keys in database ``db`` of the redis-server
    on 127.0.0.1:``port``."""
    with socket.create_connection((peers.LOOPBACK, port), timeout=5) as s:
        f = s.makefile("rb")
        s.sendall(b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%d\r\n" % (len(str(db)), db))
        assert f.readline().startswith(b"+OK")
        s.sendall(b"*2\r\n$4\r\nKEYS\r\n$14\r\nomnirtp:call:*\r\n")
        count = int(f.readline()[1:])
        keys = []
        for _ in range(max(count, 0)):
            size = int(f.readline()[1:])
            keys.append(f.read(size + 2)[:-2].decode())
        return sorted(keys)


class Current:
    """The proxy the run queries: ``ng`` is the ng client of whichever
    omnirtp process is the current one."""

    def __init__(self, peer):
        self.peer = peer

    @property
    def ng(self):
        return self.peer.ng


class OmnirtpKamailioRestartTests(KamailioCallsMixin, SynchronousTestCase):
    """The calls against omnirtp with num-threads = 0, SIGKILLed mid-call
    and started again."""

    FLOWS = FLOWS
    CALLERS = CALLERS

    def setUp(self):
        KamailioCallsMixin.setUp(self)
        self.redis = peers.start_redis(self)
        self.proxy_argv = None
        self.current = None
        self.window_reply = None      # Kamailio's answer to the INVITE while down
        self.restarted = None         # the omnirtp started again
        self.kamailio_mark = None     # Kamailio's log length once omnirtp is back
        self.gated = set()            # calls whose caller got the INFO

    def start_proxy(self, ng_port, port_min, port_max, extra_args):
        self.proxy_argv = (ng_port, port_min, port_max, list(extra_args) + [
            "--redis=%s:%d/%d" % (peers.LOOPBACK, self.redis.port, REDIS_DB)])
        return peers.start_omnirtp(self, *self.proxy_argv)

    def start_proxies(self, ng_ports, port_min, port_max, extra_args):
        proxy, sock = KamailioCallsMixin.start_proxies(self, ng_ports, port_min, port_max,
                                                       extra_args)
        self.current = Current(proxy)
        return self.current, sock

    def sent_through(self, run, call, phases):
        """True once both sides of ``call`` sent and received all the media
        of its first ``phases`` phases."""
        if run.phase[call] < phases:
            return False
        sends = {UAC: 0, UAS: 0}
        for _, _, _, phase_sends in self.FLOWS[run.calls[call]][:phases]:
            for side, count in phase_sends.items():
                sends[side] += count
        for side, other in ((UAC, UAS), (UAS, UAC)):
            endpoint = run.by_key.get((call, side))
            if endpoint is None or len(endpoint.sent) < sends[side] or \
                    len(endpoint.received) < sends[other]:
                return False
        return True

    def during_calls(self, run, callers, sip_port, now):
        if self.kamailio_mark is None:
            if len(run.calls) == len(run.call_ids) and \
                    all(self.sent_through(run, call, 1) for call in run.calls):
                self.restart(run, sip_port)
            return
        caller_port = callers["restart"].sip_port
        for call in run.calls:
            if call not in self.gated and self.sent_through(run, call, 2):
                self.gated.add(call)
                self.sock.sendto(sip_request(
                    "INFO", "sip:uac@%s:%d" % (peers.LOOPBACK, caller_port),
                    self.sock.getsockname()[1], run.call_ids[call]),
                    (peers.LOOPBACK, caller_port))

    def restart(self, run, sip_port):
        """SIGKILL omnirtp, send a new call's INVITE to Kamailio while it is
        down, start omnirtp again and let the calls talk again."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.sock.close)
        self.sock.bind((peers.LOOPBACK, 0))
        old = self.current.peer
        old.signal(signal.SIGKILL)
        old.wait(RESTART_WAIT)

        self.sock.sendto(sip_request(
            "INVITE", "sip:window@%s:%d" % (peers.LOOPBACK, sip_port),
            self.sock.getsockname()[1], "restart-window-call", SDP, "application/sdp"),
            (peers.LOOPBACK, sip_port))
        self.sock.settimeout(RESTART_WAIT)
        while True:
            status = self.sock.recv(4096).split(b"\r\n", 1)[0].decode("ascii", "replace")
            if not status.startswith("SIP/2.0 1"):
                break
        self.window_reply = status
        self.sock.setblocking(False)

        new = peers.start_omnirtp(self, *self.proxy_argv, wait=RESTART_WAIT)
        self.current.peer = self.restarted = new
        wait_until_serving(self, new)
        self.kamailio_mark = len(self.kamailio.log())
        now = time.monotonic()
        for call in run.calls:
            run.mark(call, "restarted", now)

    def proxy_counted(self, flow, ingress):
        # counters start again at the restart: what came after it
        after = {UAC: 0, UAS: 0}
        for _, _, _, sends in self.FLOWS[flow][1:]:
            for side, count in sends.items():
                after[side] += count
        self.assertEqual(ingress, sum(expected_sent(flow, self.FLOWS).values()))
        return after[UAC] + after[UAS]

    def check_calls(self, mode):
        seen = KamailioCallsMixin.check_calls(self, mode)
        run = seen["run"]
        self.assertIsNot(self.kamailio_mark, None, "omnirtp was never restarted")
        self.assertEqual(sorted(self.gated), sorted(run.calls))
        self.assertIn("restored %d calls from the state store" % (RESTART_CALLS,),
                      self.restarted.log())
        # the request while omnirtp was down failed (at once: its ng port
        # refused), and disabled the node
        self.assertEqual(self.window_reply, "SIP/2.0 503 Media proxy offer failed")
        log = self.kamailio.log()
        self.assertIn("failed for restart-window-call", log[:self.kamailio_mark])
        # after the restart: the calls' re-INVITEs and BYEs went to the
        # restarted omnirtp and succeeded (checked above); Kamailio saw no
        # rtpengine error
        after = [line for line in log[self.kamailio_mark:].splitlines()
                 if "ERROR" in line or "failed for" in line]
        self.assertEqual(after, [], "Kamailio's errors after the restart")
        # every call deleted in Redis too (the writes follow the deletes)
        deadline = time.monotonic() + 30
        while redis_call_keys(self.redis.port, REDIS_DB) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(redis_call_keys(self.redis.port, REDIS_DB), [])
        return seen


class OmnirtpKamailioRestartWorkersTests(OmnirtpKamailioRestartTests):
    """The same with num-threads = 2 (the restored calls' ports claimed in
    the worker whose slice holds them)."""

    NUM_THREADS = 2


class RestartHarnessTests(SynchronousTestCase):
    """The restart test's own parts, without peers."""

    def test_caller_waits_for_the_info(self):
        """uac_restart.xml renders; its caller waits for the INFO after the
        call is set up (ACK of CSeq 1) and before the hold re-INVITE."""
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        path = peers.render(os.path.join(peers.FIXTURES, "sipp", "uac_restart.xml"), work,
                            EVENTS="/x/events", PAUSE_MS=10)
        with open(path) as f:
            text = f.read()
        ack, info, hold = (text.index(mark) for mark in (
            "CSeq: 1 ACK", '<recv request="INFO"/>', "CSeq: 2 INVITE"))
        self.assertLess(ack, info)
        self.assertLess(info, hold)
        self.assertIn("X-Flow: restart hold", text)   # the UAS's hold branch

    def test_sip_request(self):
        """The test's INVITE and INFO: headers SIPp and Kamailio match on,
        and the body's length."""
        message = sip_request("INVITE", "sip:w@127.0.0.1:5060", 4000, "c-1", SDP,
                              "application/sdp").decode("ascii")
        head, body = message.split("\r\n\r\n", 1)
        lines = head.split("\r\n")
        self.assertEqual(lines[0], "INVITE sip:w@127.0.0.1:5060 SIP/2.0")
        self.assertIn("Via: SIP/2.0/UDP 127.0.0.1:4000;branch=z9hG4bK-c-1", lines)
        self.assertIn("Call-ID: c-1", lines)
        self.assertIn("CSeq: 1 INVITE", lines)
        self.assertIn("Content-Length: %d" % len(SDP), lines)
        self.assertEqual(body, SDP)
        info = sip_request("INFO", "sip:uac@127.0.0.1:5070", 4000, "c-2").decode("ascii")
        self.assertTrue(info.endswith("Content-Length: 0\r\n\r\n"))
        self.assertNotIn("Content-Type", info)
