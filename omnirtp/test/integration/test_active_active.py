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
follows B's calls, the taken one included, as foreign."""

import signal
import socket
import time

from twisted.trial.unittest import TestCase

from omnirtp.state.resp import ReplyParser, encode_command
from omnirtp.test.integration.peers import (
    LOOPBACK, as_text, free_port, free_port_range, start_omnirtp, start_redis)
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
        self.assertEqual(cli(cli_b, "kslist"), "\nSubscribed-on keyspaces:\n1\n\n")
        # a foreign call is not B's to answer for over ng
        query = as_text(b.ng.request({"command": "query", "call-id": "aa-on-a"}))
        self.assertEqual(query["result"], "error", query)
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
