"""The CLI: commands on a Clock and an in-memory engine, the wire protocol on
a StringTransport, the shared CLI/HTTP port, and omnirtp-ctl's arguments."""

import os

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test.fakes import ControlStack
from omnirtp.cli import ctl
from omnirtp.cli.commands import CliCommands
from omnirtp.cli.protocol import E_TOO_LONG, MAX_LINE, CliFactory
from omnirtp.config.model import Config, InterfaceSpec
from omnirtp.control.load import LoadLimits
from omnirtp.control.operations import Operations
from omnirtp.logging import LogLevels
from omnirtp.http.listen import (
    LimitedFactory, SharedPortFactory, is_http_request_line, plan)
from omnirtp.sdp.model import SessionDescription, inspect
from omnirtp.test.test_commands import ANSWER, OFFER

T0 = 1700000000


class Daemon:
    """A Dispatcher, registry and Operations on a Clock (no sockets)."""

    def __init__(self, test, **config):
        stack = ControlStack(instance_id="abc123")
        self.clock, self.engine, self.registry = stack.clock, stack.engine, stack.registry
        self.dispatcher = stack.dispatch
        values = dict(interfaces=(InterfaceSpec("default", "127.0.0.1", None),),
                      port_min=30000, port_max=30019)
        values.update(config)
        self.config = Config(**values)
        self.levels = LogLevels(6)
        self.ops = Operations(self.dispatcher, self.config, self.levels)
        self.commands = CliCommands(self.ops)
        self.test = test

    def ng(self, **request):
        request = {k.replace("_", "-"): v for k, v in request.items()}
        return self.test.successResultOf(self.dispatcher(request))

    def call(self, call_id, answer=True):
        """Offer (and answer) ``call_id``; returns (port for B, port for A)."""
        offer = self.ng(command="offer", call_id=call_id, from_tag="ft-" + call_id, sdp=OFFER)
        b_port = inspect(SessionDescription.parse(offer["sdp"]))[0].rtp[1]
        if not answer:
            return b_port, None
        reply = self.ng(command="answer", call_id=call_id, from_tag="ft-" + call_id,
                        to_tag="tt-" + call_id, sdp=ANSWER)
        return b_port, inspect(SessionDescription.parse(reply["sdp"]))[0].rtp[1]

    def cli(self, line):
        return self.test.successResultOf(self.commands.run(line))


class CommandTests(SynchronousTestCase):

    def setUp(self):
        self.d = Daemon(self)

    def test_numsessions(self):
        self.d.call("c1")
        self.d.call("c2", answer=False)
        self.assertEqual(self.d.cli("list numsessions"),
                         "Current sessions own: 2\n"
                         "Current sessions foreign: 0\n"
                         "Current sessions total: 2\n"
                         "Current transcoded media: 0\n"
                         "Current sessions ipv4 only media: 1\n"
                         "Current sessions ipv6 only media: 0\n"
                         "Current sessions ip mixed  media: 0\n")
        self.assertEqual(self.d.cli("get numsessions"), self.d.cli("list numsessions"))

    def test_sessionsAll(self):
        self.assertEqual(self.d.cli("list sessions all"), "No sessions on this media relay.\n")
        self.assertEqual(self.d.cli("list sessions own"),
                         "No own sessions on this media relay.\n")
        self.d.call("c1")
        self.d.clock.advance(5)
        self.d.call("c2")
        line = ("callid: %60s | deletionmark:  no | created:  %d | proxy: | "
                "redis_keyspace:0 | foreign:no\n")
        self.assertEqual(self.d.cli("list sessions all"),
                         line % ("c1", T0) + line % ("c2", T0 + 5))
        self.assertEqual(self.d.cli("list sessions own"), self.d.cli("list sessions all"))
        self.assertEqual(self.d.cli("list sessions foreign"),
                         "No foreign sessions on this media relay.\n")

    def test_sessionDetail(self):
        b_port, a_port = self.d.call("c1")
        self.d.clock.advance(2.5)
        self.assertEqual(self.d.cli("list sessions c1"), (
            "\n"
            "callid: c1\n"
            "deletionmark: no\n"
            "created: %(t0)d\n"
            "proxy: \n"
            "tos: 0\n"
            "last_signal: %(t0)d\n"
            "redis_keyspace: 0\n"
            "foreign: no\n"
            "\n"
            "--- Tag 'ft-c1', type: FROM_TAG, label '', branch '', callduration 2.500000\n"
            "---     subscribed to 'tt-c1'\n"
            "---     subscription of 'tt-c1'\n"
            "------ Media #1 (audio over RTP/AVP) using unknown codec\n"
            "-------- Port       127.0.0.1:%(a)d <>      192.0.2.10:49170, SSRC 0, 0 p, 0 b, "
            "0 e, %(t0)d ts\n"
            "-------- Port       127.0.0.1:%(a1)d <>      192.0.2.10:49171 (RTCP), SSRC 0, 0 p, "
            "0 b, 0 e, %(t0)d ts\n"
            "--- Tag 'tt-c1', type: TO_TAG, label '', branch '', callduration 2.500000\n"
            "---     subscribed to 'ft-c1'\n"
            "---     subscription of 'ft-c1'\n"
            "------ Media #1 (audio over RTP/AVP) using unknown codec\n"
            "-------- Port       127.0.0.1:%(b)d <>   198.51.100.20:3456 , SSRC 0, 0 p, 0 b, "
            "0 e, %(t0)d ts\n"
            "-------- Port       127.0.0.1:%(b1)d <>   198.51.100.20:3457  (RTCP), SSRC 0, 0 p, "
            "0 b, 0 e, %(t0)d ts\n"
            "\n") % {"t0": T0, "a": a_port, "a1": a_port + 1, "b": b_port, "b1": b_port + 1})

    def test_sessionDetailSsrcAndCodec(self):
        """A stream that received media shows its SSRC (hex, as 10.5), the
        RTCP stream its sender's, and each medium the payload type with the
        most packets among the offer's formats (the answerer's: as it was
        offered them), named as 10.5 names it."""
        b_port, a_port = self.d.call("c1")
        extra = self.d.engine.extra
        extra[("127.0.0.1", a_port)] = {"ssrc": 0x11111111, "payload types": {0: 5, 101: 7}}
        extra[("127.0.0.1", a_port + 1)] = {"ssrc": 0xFEEDFACE}
        # tt was offered 0 8 101 (it answered 0 101): its 96 is not
        # counted, and of the others PCMA has the most packets
        extra[("127.0.0.1", b_port)] = {"ssrc": 0xB0B0B0B1,
                                        "payload types": {96: 20, 8: 9, 0: 2}}
        text = self.d.cli("list sessions c1")
        self.assertIn(
            "------ Media #1 (audio over RTP/AVP) using telephone-event/8000\n"
            "-------- Port       127.0.0.1:%d <>      192.0.2.10:49170, SSRC 11111111, 0 p, 0 b, "
            "0 e, %d ts\n"
            "-------- Port       127.0.0.1:%d <>      192.0.2.10:49171 (RTCP), SSRC feedface, "
            "0 p, 0 b, 0 e, %d ts\n" % (a_port, T0, a_port + 1, T0), text)
        self.assertIn(
            "------ Media #1 (audio over RTP/AVP) using PCMA/8000\n"
            "-------- Port       127.0.0.1:%d <>   198.51.100.20:3456 , SSRC b0b0b0b1, 0 p, 0 b, "
            "0 e, %d ts\n"
            "-------- Port       127.0.0.1:%d <>   198.51.100.20:3457  (RTCP), SSRC 0, 0 p, "
            "0 b, 0 e, %d ts\n" % (b_port, T0, b_port + 1, T0), text)
        # only payload types outside the formats: unknown codec, SSRC shown
        extra[("127.0.0.1", b_port)] = {"ssrc": 0x2A, "payload types": {97: 9, 96: 1}}
        self.assertIn("using unknown codec\n-------- Port       127.0.0.1:%d <>   "
                      "198.51.100.20:3456 , SSRC 2a, " % b_port, self.d.cli("list sessions c1"))

    def test_sessionDetailRtcpMux(self):
        """An rtcp-mux medium's RTCP stream (``fallback RTCP`` in query) is
        left out of the lines, as 10.5 leaves it out."""
        d = self.d
        d.ng(command="offer", call_id="m1", from_tag="ft", sdp=OFFER + "a=rtcp-mux\r\n")
        d.ng(command="answer", call_id="m1", from_tag="ft", to_tag="tt",
             sdp=ANSWER + "a=rtcp-mux\r\n")
        streams = [s["flags"] for t in d.ng(command="query", call_id="m1")["tags"].values()
                   for m in t["medias"] for s in m["streams"]]
        self.assertEqual(sum("fallback RTCP" in f for f in streams), 2)
        text = d.cli("list sessions m1")
        self.assertEqual(text.count("-------- Port"), 2)
        self.assertNotIn("(RTCP)", text)

    def test_callSubcommands(self):
        """``call <call-id> ...`` and ``debug <call-id>`` in rtpengine 10.5's
        words (taken live); ``info`` is ``list sessions <call-id>``, a
        tag's ``info`` its block of it; ``terminate`` ends the call."""
        d = self.d
        d.call("c1")
        detail = d.cli("list sessions c1")
        tt = detail.index("--- Tag 'tt-c1'")
        for line, reply in [
                ("call", "More parameters required.\n"),
                ("call nope info", "No such call 'nope'\n"),
                ("call c1", "Unknown or incomplete command::\n"),
                ("call c1 foo bar", "Unknown or incomplete command::foo bar\n"),
                ("call c1 help", "Available sub-commands at this level:\n\tinfo\n"
                                 "\tterminate\n\tdebug\n\ttag\n"),
                ("call c1 info", detail),
                ("call c1 tag", "More parameters required.\n"),
                ("call c1 tag xx info", "No such tag 'xx'\n"),
                ("call c1 tag tt-c1", "Unknown or incomplete command::\n"),
                ("call c1 tag tt-c1 delay 20", "Unknown or incomplete command::delay 20\n"),
                ("call c1 tag tt-c1 info", detail[tt:-1]),
                ("call c1 tag ft-c1 info", detail[detail.index("--- Tag 'ft-c1'"):tt]),
                ("debug", "No call ID specified\n"),
                ("debug nope", "Call ID 'nope' not found\n"),
                ("debug nope maybe", "Invalid on/off flag ('maybe') specified\n"),
                ("debug c1 on x", "Invalid on/off flag ('on x') specified\n"),
                ("debug c1", "Enabled debugging for call 'c1'\n"),
                ("call c1 debug off", "Disabled debugging for call 'c1'\n"),
                ("call c1 debug enable", "Enabled debugging for call 'c1'\n")]:
            self.assertEqual(d.cli(line), reply, line)
        self.assertEqual(d.levels.debug_calls, {"c1"})
        self.assertEqual(d.cli("call c1 terminate"), "\nCall 'c1' terminated.\n\n")
        self.assertEqual((d.registry.calls, d.levels.debug_calls), ({}, set()))
        self.assertEqual(d.cli("debug c1"), "Call ID 'c1' not found\n")

    def test_sessionDetailUnanswered(self):
        """The side not answered yet: UNKNOWN, no endpoint, the offered protocol."""
        b_port, _ = self.d.call("c1", answer=False)
        text = self.d.cli("list sessions c1")
        self.assertIn("--- Tag '', type: UNKNOWN, label '', branch '', callduration 0.000000\n"
                      "---     subscribed to 'ft-c1'\n"
                      "---     subscription of 'ft-c1'\n"
                      "------ Media #1 (audio over RTP/AVP) using unknown codec\n"
                      "-------- Port       127.0.0.1:%d <>                :0    , SSRC 0, "
                      "0 p, 0 b, 0 e, %d ts\n" % (b_port, T0), text)

    def test_sessionNotFound(self):
        self.assertEqual(self.d.cli("list sessions nope"), "\nCall ID not found (nope).\n\n")
        # the rest of the line is the call-id, as in rtpengine
        self.assertEqual(self.d.cli("list sessions a b"), "\nCall ID not found (a b).\n\n")

    def test_totals(self):
        self.d.call("c1")
        self.d.call("c2", answer=False)
        self.d.clock.advance(7)
        text = self.d.cli("list totals")
        self.assertTrue(text.startswith(
            "\nStatistics over currently running sessions:\n\n"
            " Owned sessions                                  :2\n"
            " Foreign sessions                                :0\n"
            " Total sessions                                  :2\n"), text)
        self.assertIn(" Userspace-only media streams                    :", text)
        self.assertIn("\nTotal statistics (does not include current running sessions):\n\n"
                      " Uptime of rtpengine                             :7 seconds\n", text)
        self.assertIn(" Total relayed packets (kernel)                  :0\n", text)
        self.assertIn(" Average call duration                           :0.000000 seconds\n",
                      text)

    def test_totalsAfterTermination(self):
        self.d.call("c1")
        self.d.clock.advance(10)
        self.d.cli("terminate c1")
        text = self.d.cli("list totals")
        self.assertIn(" Total forced terminated sessions                :1\n", text)
        self.assertIn(" Total calls duration                            :10.000000 seconds\n",
                      text)

    def test_jsonstats(self):
        import json
        self.d.call("c1")
        stats = json.loads(self.d.cli("list jsonstats"))
        self.assertEqual(stats["currentstatistics"]["sessionsown"], 1)
        self.assertEqual(stats["ports"], {"used": 4, "free": 16})

    def test_maxsessions(self):
        self.assertEqual(self.d.cli("list maxsessions"),
                         "Maximum sessions configured on rtpengine: -1\n")
        self.assertEqual(self.d.cli("set maxsessions"), "More parameters required.\n")
        self.assertEqual(self.d.cli("set maxsessions abc"),
                         "Fail setting maxsessions to abc; no digists found\n")
        self.assertEqual(self.d.cli("set maxsessions -5"),
                         "Fail setting maxsessions to -5; either positive or -1 values "
                         "allowed\n")
        self.assertEqual(self.d.registry.max_sessions, -1)
        self.assertEqual(self.d.cli("set maxsessions 1"), "Success setting maxsessions to 1\n")
        self.assertEqual(self.d.cli("list maxsessions"),
                         "Maximum sessions configured on rtpengine: 1\n")
        self.d.call("c1")
        reply = self.failureResultOf(self.d.dispatcher(
            {"command": "offer", "call-id": "c2", "from-tag": "x", "sdp": OFFER}))
        self.assertEqual(reply.value.reason, "Parallel session limit reached")
        self.assertEqual(self.d.cli("set maxsessions -1"),
                         "Success setting maxsessions to -1; disable feature\n")
        self.d.call("c2")

    def test_loadLimits(self):
        """list / set maxcpu, maxload, maxbw in rtpengine 10.5's words (the
        texts taken from it live), and what a limit reached does to a new
        call (and not to a known one)."""
        d = self.d
        self.assertEqual(d.cli("list maxcpu"), "Maximum CPU usage configured on rtpengine: 0.0\n")
        self.assertEqual(d.cli("list maxload"),
                         "Maximum load average configured on rtpengine: 0.00\n")
        self.assertEqual(d.cli("get maxbw"), "Maximum bandwidth configured on rtpengine: 0\n")
        for line, reply in [
                ("set maxcpu", "More parameters required.\n"),
                ("set maxload abc", "Fail setting maxload to abc; no digists found\n"),
                ("set maxcpu inf", "Fail setting maxcpu to inf; errno=0\n"),
                ("set maxcpu nan", "Fail setting maxcpu to nan; errno=0\n"),
                ("set maxload 1e999", "Fail setting maxload to 1e999; errno=34\n"),
                ("set maxload 1e-999", "Fail setting maxload to 1e-999; errno=34\n"),
                ("set maxbw abc", "Fail setting maxbw to abc; no digists found\n"),
                ("set maxbw 99999999999999999999", "Fail setting maxbw to "
                 "99999999999999999999; errno=34\n")]:
            self.assertEqual(d.cli(line), reply, line)
        limits = d.registry.limits
        self.assertEqual((limits.load_limit, limits.cpu_limit, limits.bw_limit), (0, 0, 0))
        self.assertEqual(d.cli("set maxload 0.019x"), "Success setting maxload to 0.02\n")
        # kept in whole hundredths, as rtpengine keeps it
        self.assertEqual(d.cli("list maxload"),
                         "Maximum load average configured on rtpengine: 0.01\n")
        self.assertEqual(d.cli("set maxcpu 80.25"), "Success setting maxcpu to 80.2\n")
        self.assertEqual(d.cli("list maxcpu"),
                         "Maximum CPU usage configured on rtpengine: 80.2\n")
        self.assertEqual(d.cli("set maxbw -5"),
                         "Success setting maxbw to 18446744073709551611\n")
        self.assertEqual(d.cli("set maxbw 1000"), "Success setting maxbw to 1000\n")
        self.assertEqual(d.cli("list maxbw"),
                         "Maximum bandwidth configured on rtpengine: 1000\n")
        self.assertEqual((limits.load_limit, limits.cpu_limit, limits.bw_limit), (1, 8025, 1000))
        for line in ("set maxload 0", "set maxcpu 0", "set maxbw 0"):
            d.cli(line)
        d.call("c1", answer=False)
        # a negative limit refuses every new call (rtpengine 10.5 does so)
        self.assertEqual(d.cli("set maxcpu -1"), "Success setting maxcpu to -1.0\n")
        offer = {"command": "offer", "call-id": "c2", "from-tag": "x", "sdp": OFFER}
        f = self.failureResultOf(d.dispatcher(offer))
        self.assertEqual((f.value.reason, f.value.legacy),
                         ("CPU usage limit exceeded", "Parallel session limit reached"))
        self.assertNotIn("c2", d.registry.calls)
        self.assertEqual(d.registry.rejected, 0)  # only max-sessions counts
        # the known call goes on: an answer, a second offer
        d.ng(command="answer", call_id="c1", from_tag="ft-c1", to_tag="tt-c1", sdp=ANSWER)
        d.ng(command="offer", call_id="c1", from_tag="ft-c1", to_tag="tt-c1", sdp=OFFER)
        self.assertEqual(d.cli("set maxcpu 0"), "Success setting maxcpu to 0.0\n")
        d.call("c2")

    def test_redisTimersAndControlTos(self):
        """list / set redisdisabletime, redisconnecttimeout, rediscmdtimeout
        and controltos in rtpengine 10.5's words (N read as strtol); the
        values reach the Redis stores and the ng listeners."""
        d = self.d

        class Store:
            connect_timeout = cmd_timeout = disable_time = None

        class State:
            stores = [Store(), Store()]

        class NG:
            tos = None

            def set_tos(self, tos):
                self.tos = tos
        d.ops.state, d.ops.ng_service = State(), NG()
        for line, reply in [
                ("list redisdisabletime", "10\n"), ("list redisconnecttimeout", "1000\n"),
                ("list rediscmdtimeout", "0\n"), ("get controltos", "0\n"),
                ("set redisconnecttimeout", "More parameters required.\n"),
                ("set redisconnecttimeout 0",
                 "Invalid redis-connect-timeout value 0, must be > 0\n"),
                ("set redisconnecttimeout abc",
                 "Invalid redis-connect-timeout value 0, must be > 0\n"),
                ("set rediscmdtimeout -3", "Invalid redis-cmd-timeout value -3, must be >= 0\n"),
                ("set redisdisabletime -1",
                 "Invalid redis-disable-time value -1, must be >= 0\n"),
                ("set controltos 256",
                 "Invalid control-tos value 256, must be between 0 and 255\n"),
                ("set controltos 99999999999999999999", "Invalid control-tos value "
                 "9223372036854775807, must be between 0 and 255\n"),
                ("set redisconnecttimeout 250x", "Success setting redis-connect-timeout to 250\n"),
                ("set rediscmdtimeout 1500", "Success setting redis-cmd-timeout to 1500\n"),
                ("set redisdisabletime 3", "Success setting redis-disable-time to 3\n"),
                ("set controltos 184", "Success setting control-tos to 184\n"),
                ("list redisconnecttimeout", "250\n"), ("list rediscmdtimeout", "1500\n"),
                ("list redisdisabletime", "3\n"), ("list controltos", "184\n")]:
            self.assertEqual(d.cli(line), reply, line)
        for store in State.stores:
            self.assertEqual((store.connect_timeout, store.cmd_timeout, store.disable_time),
                             (0.25, 1.5, 3.0))
        self.assertEqual(d.ops.ng_service.tos, 184)
        self.assertEqual(d.ops.config.control_tos, 184)

    def test_params(self):
        """params start / current / diff / revert (10.5's layout and words,
        taken live: a diff line is ``name: start => now``, the limits in
        hundredths as 10.5 keeps them; revert answers nothing)."""
        d = self.d
        self.assertEqual(d.cli("params"), "More parameters required.\n")
        self.assertEqual(d.cli("params help"), "Available sub-commands at this level:\n"
                         "\tstart\n\tcurrent\n\tdiff\n\trevert\n")
        self.assertEqual(d.cli("params nope"), "Unknown or incomplete command::params nope\n")
        start = d.cli("params start")
        self.assertEqual(d.cli("params current"), start.replace("max-bandwidth", "max-bw"))
        self.assertEqual(start.splitlines()[13:16],
                         ["table = -1", "max-sessions = -1", "timeout = 60"])
        self.assertIn("interface[0] = default\\127.0.0.1 \nrecording-dir = (null)\n", start)
        self.assertEqual(d.cli("params diff"), "")
        for line in ("set maxsessions 5", "set loglevel core 7", "set maxcpu 50.5",
                     "set maxbw 9000", "set timeout 90", "set deletedelay 3",
                     "set controltos 46", "set redisdisabletime 4"):
            d.cli(line)
        self.assertEqual(d.cli("params diff"), (
            "log-level-core: 6 => 7\nmax-sessions: -1 => 5\nmax-cpu: 0 => 5050\n"
            "max-bw: 0 => 9000\ntimeout: 60 => 90\ndelete-delay: 30 => 3\n"
            "control-tos: 0 => 46\nredis_disable_time: 10 => 4\n"))
        self.assertIn("max-sessions = 5\ntimeout = 90\n", d.cli("params current"))
        self.assertEqual(d.cli("params start"), start)
        self.assertEqual(d.cli("params revert"), "")
        self.assertEqual(d.cli("params diff"), "")
        self.assertEqual((d.registry.max_sessions, d.registry.timeouts.timeout,
                          d.dispatcher.delete_delay, d.levels.get("core"),
                          d.registry.limits.cpu_limit, d.registry.limits.bw_limit,
                          d.ops.control_tos, d.ops.redis_setting("redisdisabletime")),
                         (-1, 60, 30, 6, 0, 0, 0, 10))

    def test_maxOpenFiles(self):
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.assertEqual(self.d.cli("list maxopenfiles"),
                         "Maximum open-files configured on rtpengine: %d; cat /proc/%d/limits\n"
                         % (soft, os.getpid()))

    def test_setMaxOpenFiles(self):
        """``set maxopenfiles N`` in rtpengine 10.5's words (taken live): N
        as strtoul reads it, at least 65536, the kernel's refusal with its
        errno; what it asks of Operations.set_open_files."""
        asked = []

        def set_open_files(value):
            asked.append(value)
            if value > 1000000:
                raise OSError(1, "Operation not permitted")
        self.d.ops.set_open_files = set_open_files
        pid = os.getpid()
        for line, reply in [
                ("set maxopenfiles", "More parameters required.\n"),
                ("set maxopenfiles abc", "Fail setting open_files to abc; no digists found\n"),
                ("set maxopenfiles 65535",
                 "Fail setting open_files to 65535; can't set it under 65536\n"),
                ("set maxopenfiles 99999999999999999999999",
                 "Fail setting open_files to 99999999999999999999999; errno=34\n"),
                ("set maxopenfiles -1",
                 "Fail setting open_files to 18446744073709551615; errno = 1\n"),
                ("set maxopenfiles 70000x",
                 "Success setting open_files to 70000; cat /proc/%d/limits\n" % pid)]:
            self.assertEqual(self.d.cli(line), reply, line)
        self.assertEqual(asked, [2 ** 64 - 1, 70000])

    def test_setOpenFilesEverywhere(self):
        """Operations.set_open_files: soft and hard limit of this process,
        then of every running media worker; a worker's refusal is logged,
        this process's raised (EINVAL as OSError too)."""
        calls = []

        class Resource:
            RLIMIT_NOFILE, RLIM_INFINITY = 7, -1

            def prlimit(self, pid, kind, limits):
                calls.append((pid, kind, limits))
                if pid == 12 or limits[0] == 5:
                    raise OSError(1, "Operation not permitted")
                if limits[0] == 6:
                    raise ValueError("current limit exceeds maximum limit")

        class Pool:
            workers = [{"index": 0, "pid": 11, "state": "ready"},
                       {"index": 1, "pid": 12, "state": "starting"},
                       {"index": 2, "pid": None, "state": "down"}]
        self.d.ops.engine = Pool()
        self.d.ops.set_open_files(70000, resource=Resource())
        self.assertEqual(calls, [(0, 7, (70000, 70000)), (11, 7, (70000, 70000)),
                                 (12, 7, (70000, 70000))])
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        del calls[:]
        self.d.ops.set_open_files(2 ** 64 - 1, resource=Resource())
        self.assertEqual(calls[0], (0, 7, (-1, -1)))
        e = self.assertRaises(OSError, self.d.ops.set_open_files, 5, resource=Resource())
        self.assertEqual(e.errno, 1)
        e = self.assertRaises(OSError, self.d.ops.set_open_files, 6, resource=Resource())
        self.assertEqual(e.errno, 22)

    def test_redisAllowedErrors(self):
        """list / set redisallowederrors as rtpengine 10.5 (taken live): N
        as strtol reads it, any value, kept as a C int; in params."""
        d = self.d
        for line, reply in [
                ("list redisallowederrors", "-1\n"),
                ("set redisallowederrors", "More parameters required.\n"),
                ("set redisallowederrors abc", "Success setting redis-allowed-errors to 0\n"),
                ("set redisallowederrors -5", "Success setting redis-allowed-errors to -5\n"),
                ("list redisallowederrors", "-5\n"),
                ("set redisallowederrors 3x", "Success setting redis-allowed-errors to 3\n"),
                ("list redisallowederrors", "3\n"),
                ("set redisallowederrors 99999999999999999999",
                 "Success setting redis-allowed-errors to 9223372036854775807\n"),
                ("list redisallowederrors", "-1\n"),
                ("set redisallowederrors 4", "Success setting redis-allowed-errors to 4\n")]:
            self.assertEqual(d.cli(line), reply, line)
        self.assertIn("redis_allowed_errors = -1\nredis_disable_time = 10\n",
                      d.cli("params start"))
        self.assertIn("redis_allowed_errors = 4\n", d.cli("params current"))
        self.assertEqual(d.cli("params diff"), "redis_allowed_errors: -1 => 4\n")
        d.cli("params revert")
        self.assertEqual(d.cli("list redisallowederrors"), "-1\n")

    def test_transcoders(self):
        """``list transcoders`` in rtpengine 10.5's layout (taken live)."""
        self.assertEqual(self.d.cli("list transcoders"), "No stats entries\n")
        self.d.engine.transcoders = lambda: defer.succeed({
            "PCMU/8000 -> PCMA/8000": (1, (27, 4320, 4320)),
            "PCMA/8000 -> PCMU/8000": (0, None)})
        self.assertEqual(self.d.cli("list transcoders"),
                         "PCMU/8000 -> PCMA/8000: 1 transcoders\n     27 packets/s\n"
                         "     4320 bytes/s\n     4320 samples/s\n"
                         "PCMA/8000 -> PCMU/8000: 0 transcoders\n")

    def test_counters(self):
        d = self.d
        d.registry.limits = LoadLimits(d.clock)
        d.cli("list counters")
        d.clock.advance(2)
        d.engine.totals = lambda: defer.succeed({"packets": 400, "bytes": 68800, "errors": 2})
        self.assertEqual(d.cli("list counters"), (
            "\nCurrent per-second counters:\n\n"
            " Packets per second (userspace)                  :200\n"
            " Bytes per second (userspace)                    :34400\n"
            " Errors per second (userspace)                   :1\n"
            " Packets per second (kernel)                     :0\n"
            " Bytes per second (kernel)                       :0\n"
            " Errors per second (kernel)                      :0\n"
            " Packets per second (total)                      :200\n"
            " Bytes per second (total)                        :34400\n"
            " Errors per second (total)                       :1\n"))
        self.assertIn(" Bytes per second (total)                        :34400\n",
                      d.cli("list totals"))

    def test_timeouts(self):
        self.assertEqual(self.d.cli("list timeout"), "TIMEOUT=60\n")
        self.assertEqual(self.d.cli("list silenttimeout"), "SILENT_TIMEOUT=3600\n")
        self.assertEqual(self.d.cli("list offertimeout"), "OFFER_TIMEOUT=3600\n")
        self.assertEqual(self.d.cli("list finaltimeout"), "FINAL_TIMEOUT=0\n")
        self.assertEqual(self.d.cli("list deletedelay"), "30\n")

    def test_setTimeouts(self):
        """set timeout / silenttimeout / offertimeout / finaltimeout, read
        and answered as rtpengine 10.5 does (its replies taken from the live
        daemon), applied to the running registry and config."""
        cases = [
            ("set timeout", "More parameters required.\n"),
            ("set timeout abc", "Fail setting timeout to abc; no digists found\n"),
            ("set timeout -5", "Fail setting timeout to -5; errno=0\n"),
            ("set timeout 4294967296", "Fail setting timeout to 4294967296; errno=0\n"),
            ("set timeout 99999999999999999999",
             "Fail setting timeout to 99999999999999999999; errno=34\n"),
            ("set silenttimeout -1", "Fail setting timeout to -1; errno=0\n"),
        ]
        for line, expected in cases:
            self.assertEqual(self.d.cli(line), expected, line)
        self.assertEqual(self.d.cli("list timeout"), "TIMEOUT=60\n")
        self.assertEqual(self.d.cli("set timeout 5x"), "Success setting timeout to 5\n")
        self.assertEqual(self.d.cli("set silenttimeout +100"), "Success setting timeout to 100\n")
        self.assertEqual(self.d.cli("set offertimeout 50"), "Success setting timeout to 50\n")
        self.assertEqual(self.d.cli("set finaltimeout 7200"), "Success setting timeout to 7200\n")
        self.assertEqual([self.d.cli("list " + w) for w in
                          ("timeout", "silenttimeout", "offertimeout", "finaltimeout")],
                         ["TIMEOUT=5\n", "SILENT_TIMEOUT=100\n", "OFFER_TIMEOUT=50\n",
                          "FINAL_TIMEOUT=7200\n"])
        config = self.d.ops.config
        self.assertEqual((config.timeout, config.silent_timeout, config.offer_timeout,
                          config.final_timeout), (5, 100, 50, 7200))
        # 0 means the default, as in the config file (rtpengine 10.5 would
        # end every call without media at once)
        self.assertEqual(self.d.cli("set timeout 0"), "Success setting timeout to 0\n")
        self.assertEqual(self.d.cli("list timeout"), "TIMEOUT=60\n")
        self.assertEqual(self.d.cli("set timeout 4294967295"),
                         "Success setting timeout to 4294967295\n")

    def test_setTimeoutEndsCalls(self):
        """The sweep takes a timeout set by the CLI at its next pass."""
        self.d.call("c1")
        self.d.clock.advance(10)
        self.d.registry.sweep()
        self.assertIn("c1", self.d.registry.calls)
        self.assertEqual(self.d.cli("set timeout 5"), "Success setting timeout to 5\n")
        self.d.clock.advance(1)
        self.d.registry.sweep()
        self.assertNotIn("c1", self.d.registry.calls)

    def test_setDeleteDelay(self):
        cases = [
            ("set deletedelay", "More parameters required.\n"),
            ("set deletedelay abc", "Invalid delete-delay value\n"),
            ("set deletedelay 99999999999", "Invalid delete-delay value\n"),
            ("set deletedelay 5x", "Success setting delete-delay to 5\n"),
            ("list deletedelay", "5\n"),
            ("set deletedelay -5", "Success setting delete-delay to -5\n"),
            ("list deletedelay", "-5\n"),
            ("set deletedelay 0", "Success setting delete-delay to 0\n"),
        ]
        for line, expected in cases:
            self.assertEqual(self.d.cli(line), expected, line)
        self.assertEqual(self.d.ops.config.delete_delay, 0)
        # a delete now ends the call at once (it was 30 s)
        self.d.call("c1")
        self.d.ng(command="delete", call_id="c1", from_tag="ft-c1")
        self.assertNotIn("c1", self.d.registry.calls)
        self.assertEqual(self.d.cli("set deletedelay 30"), "Success setting delete-delay to 30\n")
        self.d.call("c2")
        self.d.ng(command="delete", call_id="c2", from_tag="ft-c2")
        self.assertIn("c2", self.d.registry.calls)
        self.d.clock.advance(31)
        self.d.registry.sweep()
        self.assertNotIn("c2", self.d.registry.calls)

    def test_interfaces(self):
        self.d.call("c1")
        self.assertEqual(self.d.cli("list interfaces"),
                         "Interface 'default' address '127.0.0.1' (IPv4)\n"
                         " Port range: 30000 - 30019\n"
                         " Ports used:     4 /    20 ( 20.0%)\n")

    def test_loglevel(self):
        """get / set loglevel, every subsystem or one, parsed as rtpengine
        10.5 parses them (its replies taken from the live daemon)."""
        levels = self.d.levels
        text = self.d.cli("get loglevel")
        self.assertEqual(text.splitlines(), [
            "core = 6", "spandsp = 6", "ffmpeg = 6", "transcoding = 6", "codec = 6",
            "rtcp = 6", "ice = 6", "crypto = 6", "srtp = 6", "internals = -1",
            "http = 6", "control = 6", "dtx = 6"])
        self.assertEqual(self.d.cli("list loglevel core"), "6\n")
        self.assertEqual(self.d.cli("set loglevel 7"), "Success setting loglevel to 7\n")
        self.assertEqual(self.d.cli("list loglevel http"), "7\n")
        self.assertEqual(self.d.cli("get loglevel internals"), "7\n")
        self.assertEqual(self.d.cli("set loglevel 3x"), "Success setting loglevel to 3\n")
        self.assertEqual(levels.levels, dict.fromkeys(levels.levels, 3))
        self.assertEqual(self.d.cli("set loglevel abc"), "More parameters required.\n")
        self.assertEqual(self.d.cli("set loglevel -1"), "More parameters required.\n")
        self.assertEqual(self.d.cli("set loglevel ice"), "More parameters required.\n")
        self.assertEqual(self.d.cli("set loglevel ice 7"), "Success setting loglevel to 7\n")
        self.assertEqual(self.d.cli("set loglevel core abc"), "Success setting loglevel to 0\n")
        self.assertEqual(self.d.cli("set loglevel http -1"), "Success setting loglevel to -1\n")
        self.assertEqual(self.d.cli("get loglevel ice"), "7\n")
        self.assertEqual(self.d.cli("get loglevel core"), "0\n")
        self.assertEqual(self.d.cli("get loglevel http"), "-1\n")
        self.assertEqual(self.d.cli("get loglevel control"), "3\n")
        # an unknown subsystem: rtpengine says Success and changes nothing
        before = dict(levels.levels)
        self.assertEqual(self.d.cli("set loglevel foo 5"), "Success setting loglevel to 5\n")
        self.assertEqual(levels.levels, before)
        self.assertEqual(self.d.cli("get loglevel foo"), "")
        # the levels are the log filter: ice passes debug, http nothing
        self.assertTrue(levels.allows("ice", 7))
        self.assertFalse(levels.allows("control", 4))
        self.assertFalse(levels.allows("http", 0))
        self.assertEqual(self.d.cli("list loglevels").splitlines()[0],
                         "core - Everything that isn't part of another subsystem")

    def test_terminate(self):
        self.d.call("c1")
        self.d.call("c2")
        self.d.call("c3")
        self.assertEqual(self.d.cli("terminate c2"),
                         "\nCall Id (c2) successfully terminated by operator.\n\n")
        self.assertEqual(list(self.d.registry.calls), ["c1", "c3"])
        self.assertNotIn("c2", self.d.engine.held)
        self.assertEqual(self.d.cli("terminate c2"), "\nCall Id not found (c2).\n\n")
        self.assertEqual(self.d.cli("terminate foreign"),
                         "All foreign calls terminated by operator.\n")
        self.assertEqual(len(self.d.registry.calls), 2)
        self.assertEqual(self.d.cli("terminate all"), "All calls terminated by operator.\n")
        self.assertEqual(self.d.registry.calls, {})
        self.assertEqual(self.d.engine.held, {})
        self.assertEqual(self.d.registry.closed["force_terminated"], 3)
        self.assertEqual(self.d.cli("terminate"), "More parameters required.\n")

    def test_unknownAndIncomplete(self):
        self.assertEqual(self.d.cli("foo"), "Unknown or incomplete command::foo\n")
        self.assertEqual(self.d.cli("LIST numsessions"),
                         "Unknown or incomplete command::LIST numsessions\n")
        self.assertEqual(self.d.cli("list nothing"),
                         "Unknown or incomplete command::list nothing\n")
        self.assertEqual(self.d.cli(""), "Unknown or incomplete command::\n")
        self.assertEqual(self.d.cli("list"), "More parameters required.\n")
        self.assertEqual(self.d.cli("list sessions"), "More parameters required.\n")
        self.assertEqual(self.d.cli("set"), "More parameters required.\n")
        self.assertEqual(self.d.cli("\x00\xff garbage"),
                         "Unknown or incomplete command::\x00\xff garbage\n")

    def test_keyspaceCommandsWithoutRedis(self):
        """ksadd / ksrm / kslist / standby / active on a daemon without redis:
        rtpengine 10.5's texts (its ksadd crashes there: omnirtp says why it
        cannot); the bad arguments are read as C's strtoul reads them."""
        self.d.call("c1")
        self.assertEqual(self.d.cli("kslist"), "\nSubscribed-on keyspaces:\n\n")
        self.assertEqual(self.d.cli("kslist x"), "\nSubscribed-on keyspaces:\n\n")
        self.assertEqual(self.d.cli("ksadd 3"), "Fail adding keyspace 3 to redis "
                                                "notifications; no redis configured\n")
        self.assertEqual(self.d.cli("ksadd"), "More parameters required.\n")
        self.assertEqual(self.d.cli("ksrm"), "More parameters required.\n")
        self.assertEqual(self.d.cli("ksadd abc"), "Fail adding keyspace abc to redis "
                                                  "notifications; no digists found\n")
        self.assertEqual(self.d.cli("ksrm abc"), "Fail removing keyspace abc to redis "
                                                 "notifications; no digists found\n")
        self.assertEqual(self.d.cli("ksadd 18446744073709551616"),
                         "Fail adding keyspace 18446744073709551616 to redis notifications; "
                         "errono=34\n")
        self.assertEqual(self.d.cli("ksadd -1"), "Fail adding keyspace -1 to redis "
                                                 "notifications; errono=34\n")
        self.assertEqual(self.d.cli("ksrm 3"), "Keyspace 3 is not among redis notifications.\n")
        self.assertEqual(self.d.cli("ksrm 3x"), "Keyspace 3 is not among redis notifications.\n")
        self.assertEqual(self.d.cli("standby"), "Ok, all calls set to 'foreign (standby)'\n")
        self.assertEqual(self.d.cli("active x"), "Ok, all calls set to 'owned (active)'\n")
        # nobody could take them over: they stay ours
        self.assertEqual(list(self.d.registry.calls), ["c1"])

    def test_help(self):
        self.assertEqual(self.d.cli("help"),
                         "Available sub-commands at this level:\n\tlist\n\tterminate\n"
                         "\tset\n\tget\n\tparams\n\tksadd\n\tksrm\n\tkslist\n\tactive\n"
                         "\tstandby\n\tdebug\n\tcall\n")
        # rtpengine 10.5's own lists (taken live), in its order
        head = "Available sub-commands at this level:\n"
        self.assertEqual(self.d.cli("set help"), head + "".join(
            "\t%s\n" % w for w in (
                "maxopenfiles maxsessions maxcpu maxload maxbw timeout silenttimeout "
                "offertimeout finaltimeout loglevel redisallowederrors redisdisabletime "
                "redisconnecttimeout rediscmdtimeout controltos deletedelay").split()))
        self.assertEqual(self.d.cli("list help"), head + "".join(
            "\t%s\n" % w for w in (
                "numsessions sessions totals counters maxopenfiles maxsessions maxcpu maxload "
                "maxbw timeout silenttimeout offertimeout finaltimeout loglevels loglevel "
                "redisallowederrors redisdisabletime redisconnecttimeout rediscmdtimeout "
                "controltos deletedelay interfaces jsonstats transcoders").split()))

    def test_internalErrorIsAReply(self):
        """A command that fails unexpectedly answers one line and is logged."""
        def broken():
            raise RuntimeError("boom")
        self.d.ops.timeouts = broken
        self.assertEqual(self.d.cli("list timeout"), "Internal error: boom\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ProtocolTests(SynchronousTestCase):

    def setUp(self):
        self.d = Daemon(self)
        self.clock = Clock()

    def connect(self, timeout=10.0):
        factory = CliFactory(self.d.commands, timeout=timeout)
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        proto.callLater = self.clock.callLater
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def test_oneLineOneReply(self):
        proto, transport = self.connect()
        proto.dataReceived(b"list max")
        self.assertEqual(transport.value(), b"")
        proto.dataReceived(b"sessions\nlist totals\n")
        self.assertEqual(transport.value(), b"Maximum sessions configured on rtpengine: -1\n")
        self.assertTrue(transport.disconnecting)
        proto.dataReceived(b"list totals\n")
        self.assertEqual(transport.value(), b"Maximum sessions configured on rtpengine: -1\n")

    def test_crlf(self):
        proto, transport = self.connect()
        proto.dataReceived(b"list timeout\r\n")
        self.assertEqual(transport.value(), b"TIMEOUT=60\n")

    def test_tooLong(self):
        proto, transport = self.connect()
        proto.dataReceived(b"x" * (MAX_LINE + 1))
        self.assertEqual(transport.value(), E_TOO_LONG.encode())
        self.assertTrue(transport.disconnecting)

    def test_deadline(self):
        """The line must be complete ``timeout`` seconds after connecting;
        bytes trickling in (one a second) do not move the deadline."""
        proto, transport = self.connect(timeout=10)
        for byte in b"list totals"[:9]:
            proto.dataReceived(bytes([byte]))
            self.clock.advance(1)
        self.assertFalse(transport.disconnecting or transport.disconnected)
        proto.dataReceived(b"t")
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")

    def test_silentClientDropped(self):
        proto, transport = self.connect(timeout=3)
        self.clock.advance(2.9)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)

    def test_slowClientDoesNotBlockOthers(self):
        """While one client trickles, another connects and is answered at once."""
        slow, slow_transport = self.connect(timeout=10)
        slow.dataReceived(b"li")
        self.clock.advance(5)
        fast, fast_transport = self.connect(timeout=10)
        fast.dataReceived(b"list timeout\n")
        self.assertEqual(fast_transport.value(), b"TIMEOUT=60\n")
        self.assertTrue(fast_transport.disconnecting)
        self.assertFalse(slow_transport.disconnecting or slow_transport.disconnected)
        self.clock.advance(5)
        self.assertTrue(slow_transport.disconnected)

    def test_halfClose(self):
        """A client that shuts down its sending side gets its answer."""
        proto, transport = self.connect()
        proto.dataReceived(b"list deletedelay")
        proto.readConnectionLost()
        self.assertEqual(transport.value(), b"30\n")
        self.assertTrue(transport.disconnecting)

    def test_halfCloseEmpty(self):
        proto, transport = self.connect()
        proto.readConnectionLost()
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_goneBeforeReply(self):
        """A reply for a client that has gone is dropped."""
        from twisted.internet import defer
        pending = defer.Deferred()
        self.d.commands.run = lambda line: pending
        proto, transport = self.connect()
        proto.dataReceived(b"list totals\n")
        proto.connectionLost(None)
        pending.callback("late\n")
        self.assertEqual(transport.value(), b"")


class _Recorder(Protocol):
    def __init__(self, name, log):
        self.name = name
        self.log = log

    def connectionMade(self):
        self.log.append((self.name, "made"))

    def dataReceived(self, data):
        self.log.append((self.name, data))

    def connectionLost(self, reason):
        self.log.append((self.name, "lost"))


class SharedPortTests(SynchronousTestCase):

    def test_requestLines(self):
        self.assertTrue(is_http_request_line(b"GET /ping HTTP/1.1\r"))
        self.assertTrue(is_http_request_line(b"POST /ng HTTP/1.0"))
        self.assertFalse(is_http_request_line(b"get loglevel"))
        self.assertFalse(is_http_request_line(b"list sessions GET HTTP/1.1"))
        self.assertFalse(is_http_request_line(b"GET /ping"))
        self.assertFalse(is_http_request_line(b"list sessions x HTTP/1.1"))

    def build(self):
        log = []
        http = Factory.forProtocol(lambda: _Recorder("http", log))
        cli = Factory.forProtocol(lambda: _Recorder("cli", log))
        proto = SharedPortFactory(http, cli).buildProtocol(None)
        clock = Clock()
        proto.callLater = clock.callLater
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport, log, clock

    def test_http(self):
        proto, transport, log, _ = self.build()
        proto.dataReceived(b"GET /pi")
        self.assertEqual(log, [])
        proto.dataReceived(b"ng HTTP/1.1\r\nHost: x\r\n")
        proto.dataReceived(b"\r\n")
        proto.connectionLost(None)
        self.assertEqual(log, [("http", "made"), ("http", b"GET /ping HTTP/1.1\r\nHost: x\r\n"),
                               ("http", b"\r\n"), ("http", "lost")])

    def test_cli(self):
        proto, transport, log, _ = self.build()
        proto.dataReceived(b"get loglevel\n")
        self.assertEqual(log, [("cli", "made"), ("cli", b"get loglevel\n")])

    def test_silentClientTimesOut(self):
        proto, transport, log, clock = self.build()
        proto.dataReceived(b"GE")
        clock.advance(10)
        self.assertTrue(transport.disconnected)
        self.assertEqual(log, [])

    def test_tricklingClientTimesOut(self):
        """The first line must arrive within the deadline, however it trickles."""
        proto, transport, log, clock = self.build()
        for byte in b"GET /ping HTTP/1.1":
            proto.dataReceived(bytes([byte]))
            clock.advance(0.8)
            if transport.disconnected:
                break
        self.assertTrue(transport.disconnected)
        self.assertAlmostEqual(clock.seconds(), 10.4)
        self.assertEqual(log, [])

    def test_endlessLineGoesToCli(self):
        proto, transport, log, _ = self.build()
        proto.dataReceived(b"A" * 9000)
        self.assertEqual(log, [("cli", "made"), ("cli", b"A" * 9000)])

    def test_plan(self):
        self.assertEqual(plan([("127.0.0.1", 9900), ("::1", 9900)],
                              [("127.0.0.1", 9900), ("127.0.0.1", 8080)]),
                         {("127.0.0.1", 9900): "both", ("::1", 9900): "cli",
                          ("127.0.0.1", 8080): "http"})


class LimitTests(SynchronousTestCase):

    def test_limit(self):
        factory = LimitedFactory(Factory.forProtocol(Protocol), limit=2)
        a = factory.buildProtocol(None)
        b = factory.buildProtocol(None)
        self.assertIsNone(factory.buildProtocol(None))
        self.assertEqual(factory.refused, 1)
        self.flushLoggedErrors()
        a.makeConnection(StringTransport())
        a.connectionLost(None)
        c = factory.buildProtocol(None)
        self.assertIsNotNone(c)
        self.assertIsNotNone(b)
        self.assertEqual(factory.open, 2)


    def test_accessList(self):
        """A connection from a source the control AccessList refuses is
        closed on accept (no protocol) and counted under the listener's
        kind; loopback and the listed networks get one."""
        from twisted.internet.address import IPv4Address, IPv6Address
        from omnirtp.control.access import AccessList
        access = AccessList(["10.0.0.0/8"])
        factory = LimitedFactory(Factory.forProtocol(Protocol), limit=5, access=access,
                                 kind="cli")
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000)))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "10.1.2.3", 5000)))
        self.assertIsNotNone(factory.buildProtocol(IPv6Address("TCP", "::1", 5000)))
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 5000)))
        self.assertIsNone(factory.buildProtocol(IPv6Address("TCP", "2001:db8::1", 5000)))
        self.assertEqual(access.denied, {"ng": 0, "cli": 2, "http": 0})
        self.assertEqual(factory.open, 3)


class CtlTests(SynchronousTestCase):

    def test_seedWords(self):
        self.assertEqual(ctl.translate(["list"]), "list sessions all")
        self.assertEqual(ctl.translate(["list", "abc@host"]), "list sessions abc@host")
        self.assertEqual(ctl.translate(["list", "numsessions"]), "list numsessions")
        self.assertEqual(ctl.translate(["list", "sessions", "all"]), "list sessions all")
        self.assertEqual(ctl.translate(["query"]), "list totals")
        self.assertEqual(ctl.translate(["query", "abc"]), "list sessions abc")
        self.assertEqual(ctl.translate(["delete", "abc"]), "terminate abc")
        self.assertEqual(ctl.translate(["terminate", "all"]), "terminate all")
        self.assertEqual(ctl.translate(["set", "maxsessions", "5"]), "set maxsessions 5")

    def test_address(self):
        none = ("/nonexistent",)
        self.assertEqual(ctl.parse_args(["list"], none), ("127.0.0.1", 9900, "list sessions all"))
        self.assertEqual(ctl.parse_args(["-ip", "127.0.0.2:1234", "list", "totals"], none),
                         ("127.0.0.2", 1234, "list totals"))
        self.assertEqual(ctl.parse_args(["-ip", "127.0.0.2", "-port", "99", "help"], none),
                         ("127.0.0.2", 99, "help"))
        self.assertEqual(ctl.parse_args(["--ip=[::1]:5", "help"], none), ("::1", 5, "help"))
        self.assertRaises(ctl.UsageError, ctl.parse_args, [], none)
        self.assertRaises(ctl.UsageError, ctl.parse_args, ["-x", "list"], none)
        self.assertRaises(ctl.UsageError, ctl.parse_args, ["-port", "abc", "list"], none)
        self.assertRaises(ctl.UsageError, ctl.parse_args, ["-port", "70000", "list"], none)

    def test_configFile(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[rtpengine]\ninterface = ${PRIVATE_IP}\nlisten-cli = 127.0.0.3:9901;"
                    "[::1]:9901\n")
        self.assertEqual(ctl.parse_args(["--config-file", path, "help"]),
                         ("127.0.0.3", 9901, "help"))
        self.assertEqual(ctl.parse_args(["help"], (path,)), ("127.0.0.3", 9901, "help"))
        # the command line wins
        self.assertEqual(ctl.parse_args(["-port", "7", "help"], (path,)),
                         ("127.0.0.3", 7, "help"))
        with open(path, "w") as f:
            f.write("[rtpengine]\nlisten-cli = 9902\n")
        self.assertEqual(ctl.parse_args(["help"], (path,)), ("127.0.0.1", 9902, "help"))

    def test_cannotConnect(self):
        import io
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        err = io.StringIO()
        code = ctl.main(["-ip", "127.0.0.1", "-port", str(port), "--config-file",
                         os.devnull, "list"], stdout=io.BytesIO(), stderr=err)
        self.assertEqual(code, 1)
        self.assertIn("omnirtp-ctl: cannot talk to 127.0.0.1 port %d" % port, err.getvalue())
