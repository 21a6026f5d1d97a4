"""Active-active through Redis keyspace notifications (issue 10), as
rtpengine's ``subscribe-keyspace``: two omnirtp daemons on loopback and one
redis-server (``notify-keyspace-events KA``).  A writes its calls to
database 1 and follows database 2; B the other way round.

Checked: each daemon lists the other's call as foreign (``list sessions
foreign``, not ``own``; ``list numsessions`` counts one of each); when A is
killed (SIGKILL), B takes A's call over once A's heartbeat key expires: the
call is B's own, relays on the same ports (counted at the endpoints), is
written to B's database and gone from A's, and takes ng requests (query,
delete) on B.  A started again restores nothing (B took the call) and
follows B's calls, the taken one included, as foreign.

RunTimeTests: the operator's commands, sent with Debian's rtpengine-ctl and
with omnirtp-ctl: ``ksadd`` picks up the calls A has and makes, ``ksrm``
drops them (A's keys left alone); ``standby`` makes A's call foreign
(still relaying, answering query, refusing changes, kept in A's
database), ``active`` makes it A's again, and with ``active-switchover`` a
standby A takes its calls back on their first offer or media.  (One host:
B cannot bind the ports A holds, so the takeover by the other instance
while A lives is test_failover_netns's.)"""

import signal
import socket
import time

from twisted.trial.unittest import TestCase

from omnirtp.state.resp import ReplyParser, encode_command
from omnirtp.test.integration.peers import (
    LOOPBACK, as_text, free_port, free_port_range, start_omnirtp, start_redis)
from omnirtp.test.integration.test_operations import omnirtp_ctl, rtpengine_ctl
from omnirtp.test.integration.test_restart import _media_port, _relays, _sdp, _udp


def redis_command(port, *args):
    """One command over a plain socket: the test's own view of the server."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as s:
        s.sendall(encode_command(*args))
        parser = ReplyParser()
        while True:
            data = s.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            replies = parser.feed(data)
            if replies:
                return replies[0]


def redis_keys(port, db):
    """The call keys of database ``db``."""
    reply = redis_command(port, "EVAL", "redis.call('SELECT', ARGV[1]); "
                          "return redis.call('KEYS', 'omnirtp:call:*')", 0, db)
    return sorted(k.decode()[len("omnirtp:call:"):] for k in reply)


def cli(port, line):
    """One CLI command, the whole reply text."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as s:
        s.sendall(line.encode() + b"\n")
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode()


def wait_until(predicate, wait=20.0):
    """Poll ``predicate`` until it holds (a bound on waiting, not a timed
    assertion); return its last value."""
    deadline = time.monotonic() + wait
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def session_ids(text):
    return sorted(line.split("|")[0].split(":", 1)[1].strip()
                  for line in text.splitlines() if line.startswith("callid:"))


class ActiveActiveTests(TestCase):

    timeout = 180

    def start(self, redis, own_db, follow_db, ng_port, cli_port, ports):
        return start_omnirtp(self, ng_port, ports[0], ports[1], extra_args=[
            "--redis=127.0.0.1:%d/%d" % (redis.port, own_db),
            "--subscribe-keyspace=%d" % follow_db,
            "--listen-cli=%s:%d" % (LOOPBACK, cli_port), "--delete-delay=0"])

    def call(self, daemon, call_id):
        caller, callee = _udp(), _udp()
        self.addCleanup(caller.close)
        self.addCleanup(callee.close)
        offer = as_text(daemon.ng.request({
            "command": "offer", "call-id": call_id, "from-tag": "caller",
            "sdp": _sdp(caller.getsockname()[1])}))
        self.assertEqual(offer["result"], "ok", offer)
        answer = as_text(daemon.ng.request({
            "command": "answer", "call-id": call_id, "from-tag": "caller",
            "to-tag": "callee", "sdp": _sdp(callee.getsockname()[1])}))
        self.assertEqual(answer["result"], "ok", answer)
        return caller, callee, _media_port(answer["sdp"]), _media_port(offer["sdp"])

    def test_foreignCallsAndTakeover(self):
        redis = start_redis(self)
        self.assertEqual(redis_command(redis.port, "CONFIG", "SET",
                                       "notify-keyspace-events", "KA"), "OK")
        # one port range for both (a call taken over keeps its ports, so they
        # must be in the taker's range); each binds only what is free
        ports = free_port_range(40)
        ng_a, ng_b = free_port(), free_port()
        cli_a, cli_b = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
        a = self.start(redis, 1, 2, ng_a, cli_a, ports)
        b = self.start(redis, 2, 1, ng_b, cli_b, ports)

        caller, callee, to_callee, to_caller = self.call(a, "aa-on-a")
        self.call(b, "aa-on-b")
        self.assertEqual(len(_relays(caller, callee, to_callee, 0xA, 1)), 1)
        self.assertEqual(len(_relays(callee, caller, to_caller, 0xB, 1)), 1)

        # each sees the other's call as foreign
        self.assertEqual(session_ids(wait_until(
            lambda: cli(cli_b, "list sessions foreign") if "aa-on-a" in
            cli(cli_b, "list sessions foreign") else None)), ["aa-on-a"])
        self.assertEqual(session_ids(cli(cli_b, "list sessions own")), ["aa-on-b"])
        self.assertEqual(session_ids(cli(cli_b, "list sessions all")), ["aa-on-a", "aa-on-b"])
        self.assertIn("foreign:yes", cli(cli_b, "list sessions foreign"))
        self.assertEqual(session_ids(wait_until(
            lambda: cli(cli_a, "list sessions foreign") if "aa-on-b" in
            cli(cli_a, "list sessions foreign") else None)), ["aa-on-b"])
        numsessions = cli(cli_b, "list numsessions")
        self.assertIn("Current sessions own: 1\n", numsessions)
        self.assertIn("Current sessions foreign: 1\n", numsessions)
        self.assertIn("Current sessions total: 2\n", numsessions)
        self.assertEqual(cli(cli_b, "kslist"), "\nSubscribed-on keyspaces:\n1 \n")
        # a foreign call is not B's to change over ng (without
        # active-switchover); query reads it, as rtpengine's
        query = as_text(b.ng.request({"command": "query", "call-id": "aa-on-a"}))
        self.assertEqual(query["result"], "ok", query)
        offer = as_text(b.ng.request({"command": "offer", "call-id": "aa-on-a",
                                      "from-tag": "caller", "sdp": _sdp(5000, "2")}))
        self.assertEqual(offer["result"], "error", offer)
        self.assertIn("foreign", offer["error-reason"])
        self.assertEqual(redis_keys(redis.port, 1), ["aa-on-a"])
        self.assertEqual(redis_keys(redis.port, 2), ["aa-on-b"])

        # A dies: B takes its call over when A's heartbeat expires
        a.signal(signal.SIGKILL)
        a.wait(10)
        own = wait_until(lambda: "aa-on-a" in cli(cli_b, "list sessions own"), wait=30.0)
        self.assertTrue(own, b.log_tail())
        self.assertEqual(session_ids(cli(cli_b, "list sessions own")), ["aa-on-a", "aa-on-b"])
        self.assertEqual(cli(cli_b, "list sessions foreign"),
                         "No foreign sessions on this media relay.\n")
        # media on the same ports, now through B
        got = _relays(caller, callee, to_callee, 0xA, 100, wait=5.0)
        self.assertEqual(len(got), 1, b.log_tail())
        self.assertEqual(got[0][8:12], (0xA).to_bytes(4, "big"))
        got = _relays(callee, caller, to_caller, 0xB, 100, wait=5.0)
        self.assertEqual(len(got), 1, b.log_tail())
        query = as_text(b.ng.request({"command": "query", "call-id": "aa-on-a"}))
        self.assertEqual(query["result"], "ok", query)
        self.assertEqual(sorted(query["tags"]), ["callee", "caller"])
        self.assertTrue(wait_until(lambda: redis_keys(redis.port, 2) == ["aa-on-a", "aa-on-b"]
                                   and redis_keys(redis.port, 1) == []))
        self.assertIn("taking over its 1 calls", b.log())

        # A again: nothing of its own left to restore; B's calls are foreign to it
        a = self.start(redis, 1, 2, ng_a, cli_a, ports)
        self.assertIn("restored 0 calls", a.log())
        self.assertEqual(session_ids(wait_until(
            lambda: cli(cli_a, "list sessions foreign") if "aa-on-a" in
            cli(cli_a, "list sessions foreign") else None)), ["aa-on-a", "aa-on-b"])
        self.assertEqual(cli(cli_a, "list sessions own"), "No own sessions on this media relay.\n")

        # B deletes the taken call: gone from Redis, and from A's foreign calls
        deleted = as_text(b.ng.request({"command": "delete", "call-id": "aa-on-a"}))
        self.assertEqual(deleted["result"], "ok", deleted)
        self.assertTrue(wait_until(lambda: redis_keys(redis.port, 2) == ["aa-on-b"]))
        self.assertEqual(session_ids(wait_until(
            lambda: cli(cli_a, "list sessions foreign") if "aa-on-a" not in
            cli(cli_a, "list sessions foreign") else None)), ["aa-on-b"])


class RunTimeTests(TestCase):

    timeout = 180

    def setUp(self):
        self.redis = start_redis(self)
        self.assertEqual(redis_command(self.redis.port, "CONFIG", "SET",
                                       "notify-keyspace-events", "KA"), "OK")
        self.ports = free_port_range(40)

    def start(self, own_db, follow_db=None, extra=()):
        ng, cli_port = free_port(), free_port(socket.SOCK_STREAM)
        args = ["--redis=127.0.0.1:%d/%d" % (self.redis.port, own_db),
                "--listen-cli=%s:%d" % (LOOPBACK, cli_port), "--delete-delay=0"]
        if follow_db is not None:
            args.append("--subscribe-keyspace=%d" % follow_db)
        daemon = start_omnirtp(self, ng, self.ports[0], self.ports[1],
                               extra_args=args + list(extra))
        daemon.cli_port = cli_port
        return daemon

    call = ActiveActiveTests.call

    def ctl(self, tool, daemon, *words):
        code, out = tool(daemon.cli_port, *words)
        self.assertEqual(code, 0, out)
        return out

    def listed(self, daemon, which, wanted):
        """Wait until ``list sessions WHICH`` lists ``wanted``; the ids listed."""
        def ids():
            return session_ids(cli(daemon.cli_port, "list sessions " + which))
        wait_until(lambda: ids() == wanted)
        return ids()

    def test_ksaddAndKsrm(self):
        a = self.start(1)
        b = self.start(2)
        self.call(a, "ks-1")
        self.assertEqual(self.ctl(rtpengine_ctl, b, "kslist"), "\nSubscribed-on keyspaces:\n\n")
        self.assertEqual(self.ctl(rtpengine_ctl, b, "ksadd", "1"),
                         "Success adding keyspace 1 to redis notifications.\n")
        # the call A has already, then the one it makes now
        self.assertEqual(self.listed(b, "foreign", ["ks-1"]), ["ks-1"])
        self.call(a, "ks-2")
        self.assertEqual(self.listed(b, "foreign", ["ks-1", "ks-2"]), ["ks-1", "ks-2"])
        self.assertIn("redis_keyspace:1 | foreign:yes", cli(b.cli_port, "list sessions foreign"))
        self.assertEqual(self.ctl(omnirtp_ctl, b, "ksadd", "1"),
                         "Keyspace 1 is already among redis notifications.\n")
        self.assertEqual(self.ctl(omnirtp_ctl, b, "ksadd", "abc"),
                         "Fail adding keyspace abc to redis notifications; no digists found\n")
        self.assertEqual(self.ctl(omnirtp_ctl, b, "kslist"), "\nSubscribed-on keyspaces:\n1 \n")
        self.assertEqual(self.ctl(omnirtp_ctl, b, "ksrm", "1"),
                         "Successfully unsubscribed from keyspace 1.\n"
                         "Successfully removed all foreign calls for keyspace 1.\n")
        self.assertEqual(cli(b.cli_port, "list sessions all"), "No sessions on this media relay.\n")
        self.assertEqual(redis_keys(self.redis.port, 1), ["ks-1", "ks-2"])  # A's, kept
        self.assertEqual(self.ctl(rtpengine_ctl, b, "ksrm", "1"),
                         "Keyspace 1 is not among redis notifications.\n")
        # not followed any more: A's next call stays A's alone
        self.call(a, "ks-3")
        self.assertEqual(cli(b.cli_port, "ksadd 5"),
                         "Success adding keyspace 5 to redis notifications.\n")
        self.assertEqual(self.ctl(omnirtp_ctl, b, "kslist"), "\nSubscribed-on keyspaces:\n5 \n")
        self.assertEqual(cli(b.cli_port, "list sessions all"), "No sessions on this media relay.\n")
        self.assertEqual(session_ids(cli(a.cli_port, "list sessions own")),
                         ["ks-1", "ks-2", "ks-3"])

    def test_standbyThenActive(self):
        a = self.start(1)
        caller, callee, to_callee, _to_caller = self.call(a, "sb-1")
        self.assertEqual(len(_relays(caller, callee, to_callee, 0xA, 1)), 1)
        self.assertEqual(self.ctl(rtpengine_ctl, a, "standby"),
                         "Ok, all calls set to 'foreign (standby)'\n")
        self.assertEqual(cli(a.cli_port, "list sessions own"),
                         "No own sessions on this media relay.\n")
        self.assertIn("redis_keyspace:1 | foreign:yes", cli(a.cli_port, "list sessions foreign"))
        self.assertEqual(cli(a.cli_port, "kslist"), "\nSubscribed-on keyspaces:\n\n")
        # relays still, answers query, refuses changes; kept in A's database
        self.assertEqual(len(_relays(caller, callee, to_callee, 0xA, 10)), 1)
        self.assertEqual(as_text(a.ng.request({"command": "query", "call-id": "sb-1"}))
                         ["result"], "ok")
        refused = as_text(a.ng.request({"command": "delete", "call-id": "sb-1"}))
        self.assertEqual(refused["result"], "error", refused)
        self.assertIn("foreign", refused["error-reason"])
        self.assertEqual(redis_keys(self.redis.port, 1), ["sb-1"])
        # active: A's own again
        self.assertEqual(self.ctl(omnirtp_ctl, a, "active"),
                         "Ok, all calls set to 'owned (active)'\n")
        self.assertEqual(session_ids(cli(a.cli_port, "list sessions own")), ["sb-1"])
        self.assertEqual(len(_relays(caller, callee, to_callee, 0xA, 20)), 1)
        deleted = as_text(a.ng.request({"command": "delete", "call-id": "sb-1"}))
        self.assertEqual(deleted["result"], "ok", deleted)
        self.assertTrue(wait_until(lambda: redis_keys(self.redis.port, 1) == []))

    def test_activeSwitchover(self):
        """A standby instance with active-switchover takes its calls back:
        one on its first offer, the other on its first media."""
        a = self.start(1, extra=["--active-switchover"])
        self.call(a, "sw-offer")
        caller, callee, to_callee, _to_caller = self.call(a, "sw-media")
        self.assertEqual(self.ctl(rtpengine_ctl, a, "standby"),
                         "Ok, all calls set to 'foreign (standby)'\n")
        self.assertEqual(session_ids(cli(a.cli_port, "list sessions foreign")),
                         ["sw-media", "sw-offer"])
        # query reads, it does not take over
        self.assertEqual(as_text(a.ng.request({"command": "query", "call-id": "sw-offer"}))
                         ["result"], "ok")
        self.assertEqual(cli(a.cli_port, "list sessions own"),
                         "No own sessions on this media relay.\n")
        # the first offer takes the call over
        caller2 = _udp()
        self.addCleanup(caller2.close)
        offer = as_text(a.ng.request({"command": "offer", "call-id": "sw-offer",
                                      "from-tag": "caller",
                                      "sdp": _sdp(caller2.getsockname()[1], "2")}))
        self.assertEqual(offer["result"], "ok", offer)
        self.assertEqual(session_ids(cli(a.cli_port, "list sessions own")), ["sw-offer"])
        self.assertEqual(session_ids(cli(a.cli_port, "list sessions foreign")), ["sw-media"])
        # the first media takes the other over (looked at once a second)
        self.assertEqual(len(_relays(caller, callee, to_callee, 0xE, 1)), 1)
        self.assertEqual(self.listed(a, "own", ["sw-media", "sw-offer"]),
                         ["sw-media", "sw-offer"], a.log_tail())
        self.assertIn("taken over: media for it (active-switchover)", a.log())
        self.assertEqual(redis_keys(self.redis.port, 1), ["sw-media", "sw-offer"])
