"""Active-passive takeover (issue 10) in network namespaces the test makes.

One LAN (a bridge in its own namespace, where redis-server runs on
10.98.0.254 with ``notify-keyspace-events KA``) joins five namespaces, each
over its own veth pair:

- ``caller`` 10.98.0.1 and ``callee`` 10.98.0.2: the phones, whose sockets
  count every packet;
- ``sip`` 10.98.0.5: the SIP proxy's host, which sends ng to the service
  address (the "VIP") 10.98.0.100 port 22222, as Kamailio would;
- ``active`` 10.98.0.11, holding the VIP at first, and ``standby``
  10.98.0.12: one omnirtp each, both configured the same way (media
  interface, ng and the same port range on the VIP) but each with its own
  database: active ``redis = .../1`` following database 2, standby
  ``redis = .../2`` following database 1.  The standby can bind the VIP
  while it is not its own (``net.ipv4.ip_nonlocal_bind = 1`` in its
  namespace, as keepalived setups configure it).

What keepalived would do is done by the test, step by step: when the
active omnirtp dies (SIGKILL), the VIP leaves the active host and is added
on the standby, which announces it with gratuitous ARP (three, 0.6 s apart,
as keepalived repeats them); keepalived's ``notify_master`` script then
runs ``omnirtp-ctl active``.  (The standby also takes the calls over by
itself when the active's heartbeat key expires, 3 s after its last beat:
whichever comes first.)

Checked: the standby follows the active's calls as foreign ones with their
ports bound; after the move, media of every call flows again through the
standby (counted at the phones: every packet sent after the flow resumed
arrives, both ways) and still after ``active``; then the calls are the
standby's own (written to its database, gone from the active's) and the SIP
proxy's next ng requests for them, sent to the VIP as before, reach the
standby and succeed (query, delete).

PlannedSwitchTests: the switch keepalived makes while both hosts live (a
priority change, maintenance): ``notify_backup`` runs ``omnirtp-ctl
standby`` on the active host (its calls become foreign there, kept in its
database, still bound), the VIP moves, and the standby takes the calls:
by ``omnirtp-ctl active`` (``notify_master``), or, started with
``active-switchover``, by itself on their first media and signalling.
Checked: media flows through the new active host, the calls are its own
(moved to its database), the old active host drops them (and follows them
again from the new owner's database), and ng to the VIP reaches the new
active host.

Needs root (``ip netns``); it fails, never skips, without it.
"""

import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test.integration.peers import NGClient, ROOT, find_program
from omnirtp.test.integration.reference import TWISTD
from omnirtp.test.integration.test_active_active import session_ids, wait_until
from omnirtp.test.integration.test_kernel_netns import in_netns, receive, rtp

NET = "10.98.0."
CALLER, CALLEE, SIP, ACTIVE, STANDBY = NET + "1", NET + "2", NET + "5", NET + "11", NET + "12"
VIP, REDIS = NET + "100", NET + "254"
NG_PORT, CLI_PORT, REDIS_PORT = 22222, 9900, 6379
PORT_MIN, PORT_MAX = 30000, 30199
CALLS = 10
#: packets each phone sends per call once the flow is established (counted)
COUNT = 20


class Lan:
    """The bridge and the five hosts; deleted (with the veths) on cleanup."""

    def __init__(self, test):
        tag = "%d-%s" % (os.getpid(), uuid.uuid4().hex[:6])
        short = tag[-5:]
        self.names = {role: "orf-%s-%s" % (role, tag)
                      for role in ("lan", "caller", "callee", "sip", "active", "standby")}
        for name in self.names.values():
            made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
            if made.returncode:
                test.fail("`ip netns add %s` failed (it needs root): %s"
                          % (name, made.stderr.strip()))
            test.addCleanup(subprocess.run, ["ip", "netns", "delete", name],
                            capture_output=True)
        lan = self.names["lan"]
        steps = [["-n", lan, "link", "add", "br0", "type", "bridge"],
                 ["-n", lan, "addr", "add", REDIS + "/24", "dev", "br0"],
                 ["-n", lan, "link", "set", "br0", "up"],
                 ["-n", lan, "link", "set", "lo", "up"]]
        self.dev = {}
        for i, (role, address) in enumerate((("caller", CALLER), ("callee", CALLEE),
                                             ("sip", SIP), ("active", ACTIVE),
                                             ("standby", STANDBY))):
            ns = self.names[role]
            node, port = "fn%d%s" % (i, short), "fb%d%s" % (i, short)
            self.dev[role] = node
            steps += [["link", "add", node, "netns", ns, "type", "veth", "peer", "name", port,
                       "netns", lan],
                      ["-n", lan, "link", "set", port, "master", "br0"],
                      ["-n", lan, "link", "set", port, "up"],
                      ["-n", ns, "addr", "add", address + "/24", "dev", node],
                      ["-n", ns, "link", "set", node, "up"],
                      ["-n", ns, "link", "set", "lo", "up"]]
        steps.append(["-n", self.names["active"], "addr", "add", VIP + "/24", "dev",
                      self.dev["active"]])
        for step in steps:
            self.ip(test, *step)
        self.sh("standby", "sysctl -qw net.ipv4.ip_nonlocal_bind=1")

    @staticmethod
    def ip(test, *step):
        done = subprocess.run(["ip"] + list(step), capture_output=True, text=True)
        if done.returncode:
            test.fail("ip %s: %s" % (" ".join(step), done.stderr.strip()))

    def sh(self, role, command):
        return subprocess.run(["ip", "netns", "exec", self.names[role], "sh", "-c", command],
                              capture_output=True, text=True, check=True).stdout

    def run(self, role, function):
        """``function()`` run inside ``role``'s namespace (sockets made there stay)."""
        return in_netns(self.names[role], function)

    def move_vip(self, test):
        """keepalived's part: the VIP leaves the active host for the standby,
        which announces it with gratuitous ARP."""
        self.ip(test, "-n", self.names["active"], "addr", "del", VIP + "/24", "dev",
                self.dev["active"])
        self.ip(test, "-n", self.names["standby"], "addr", "add", VIP + "/24", "dev",
                self.dev["standby"])
        for i in range(3):
            if i:
                time.sleep(0.6)  # keepalived's repeated announcements, not a timing check
            self.run("standby", lambda: gratuitous_arp(self.dev["standby"], VIP))


def gratuitous_arp(device, address):
    """One gratuitous ARP request for ``address`` out of ``device``."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        s.bind((device, 0))
        mac = s.getsockname()[4]
        ip = socket.inet_aton(address)
        arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\x00" * 6 + ip
        frame = b"\xff" * 6 + mac + b"\x08\x06" + arp
        s.send(frame + b"\x00" * (60 - len(frame)))
    finally:
        s.close()


class NodeDaemon:
    """omnirtp (twistd, this checkout) in one host's namespace."""

    def __init__(self, test, lan, role, own_db, follow_db, extra=()):
        self.lan, self.role = lan, role
        fd, self.log_path = tempfile.mkstemp(prefix="omnirtp-%s-" % role, suffix=".log")
        test.addCleanup(os.unlink, self.log_path)
        argv = ["ip", "netns", "exec", lan.names[role], sys.executable, "-c", TWISTD, "-n",
                "--pidfile=", "omnirtp", "--config-file=none",
                "--interface=%s" % VIP, "--listen-ng=%s:%d" % (VIP, NG_PORT),
                "--listen-cli=127.0.0.1:%d" % CLI_PORT,
                "--port-min=%d" % PORT_MIN, "--port-max=%d" % PORT_MAX, "--num-threads=0",
                "--delete-delay=0", "--control-allow=%s" % SIP, "--redis=%s:%d/%d" % (REDIS, REDIS_PORT, own_db),
                "--subscribe-keyspace=%d" % follow_db] + list(extra)
        env = dict(os.environ, PYTHONPATH=ROOT)
        with os.fdopen(fd, "wb") as log:
            self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log)
        test.addCleanup(self.stop)
        ready = wait_until(lambda: self.process.poll() is not None or self.cli_ok(), wait=30.0)
        if not ready or self.process.poll() is not None:
            test.fail("omnirtp (%s) did not start: %s" % (role, self.log()[-3000:]))

    def cli_ok(self):
        try:
            return "Current sessions own: 0\n" in self.cli("list numsessions")
        except OSError:
            return False

    def cli(self, line):
        def ask():
            with socket.create_connection(("127.0.0.1", CLI_PORT), timeout=10) as s:
                s.sendall(line.encode() + b"\n")
                chunks = []
                while True:
                    data = s.recv(65536)
                    if not data:
                        return b"".join(chunks).decode()
                    chunks.append(data)
        return self.lan.run(self.role, ask)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def sdp(address, port):
    return ("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
            % (address, address, port))


def media_port(text):
    for line in text.splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise AssertionError("no m=audio in %r" % text)


class Call:
    """One call: a socket in the caller's and one in the callee's namespace."""

    def __init__(self, test, lan, n):
        self.n = n
        self.call_id = "failover-%d" % n

        def bound(address):
            def make():
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((address, 0))
                return s
            return make
        self.caller = lan.run("caller", bound(CALLER))
        self.callee = lan.run("callee", bound(CALLEE))
        test.addCleanup(self.caller.close)
        test.addCleanup(self.callee.close)
        self.seq = 0

    def sdp(self, who):
        sock, address = (self.caller, CALLER) if who == "caller" else (self.callee, CALLEE)
        return sdp(address, sock.getsockname()[1])

    def ssrc(self, who):
        return (0xCA000000 if who == "caller" else 0xCE000000) + self.n

    def send(self, who):
        """One packet from ``who`` towards the other phone, through the VIP."""
        self.seq += 1
        if who == "caller":
            self.caller.sendto(rtp(self.seq, self.ssrc("caller")), (VIP, self.to_callee))
        else:
            self.callee.sendto(rtp(self.seq, self.ssrc("callee")), (VIP, self.to_caller))

    def flows(self, who, wait=10.0):
        """Send from ``who`` every 20 ms until the other phone gets one (a
        bound on waiting, not a timed assertion); then drain the rest."""
        other = self.callee if who == "caller" else self.caller
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            self.send(who)
            if receive(other, 1, timeout=0.02):
                receive(other, 1000, timeout=0.2)  # late ones of the probing
                return True
        return False

    def count(self, who):
        """Send COUNT packets from ``who``; the ones of it the other phone got."""
        other = self.callee if who == "caller" else self.caller
        first = self.seq + 1
        for _ in range(COUNT):
            self.send(who)
            time.sleep(0.002)  # paced like a phone, not a timing check
        got = receive(other, COUNT, timeout=5.0)
        return sorted(int.from_bytes(d[2:4], "big") for d, _ in got
                      if d[8:12] == self.ssrc(who).to_bytes(4, "big")
                      and int.from_bytes(d[2:4], "big") >= first)


def sip_client():
    """An ng client on the SIP proxy's address, sending to the VIP."""
    client = NGClient(NG_PORT, address=VIP, timeout=1.0, tries=3)
    client.close()
    client._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client._sock.bind((SIP, 0))
    return client


class LanTestCase(SynchronousTestCase):
    """The LAN, redis-server on it and the SIP proxy's ng client."""

    def setUp(self):
        self.lan = Lan(self)
        self.redis()
        self.ng = self.lan.run("sip", sip_client)
        self.addCleanup(self.ng.close)

    def redis(self):
        directory = tempfile.mkdtemp(prefix="omnirtp-redis-")
        self.addCleanup(subprocess.run, ["rm", "-rf", directory])
        log = open(os.path.join(directory, "redis.log"), "wb")
        self.addCleanup(log.close)
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.lan.names["lan"], find_program("redis-server"),
             "--port", str(REDIS_PORT), "--bind", REDIS, "--save", "", "--appendonly", "no",
             "--dir", directory, "--protected-mode", "no", "--notify-keyspace-events", "KA"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

        def stop():
            process.terminate()
            process.wait(10)
        self.addCleanup(stop)

        def ping():
            try:
                with socket.create_connection((REDIS, REDIS_PORT), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        self.assertTrue(wait_until(lambda: self.lan.run("lan", ping), wait=15.0))

    def calls(self, count):
        """``count`` calls offered and answered through the VIP (as the SIP
        proxy would), their media ports noted."""
        calls = [Call(self, self.lan, n) for n in range(count)]
        for call in calls:
            offer = self.ng.request({"command": "offer", "call-id": call.call_id,
                                     "from-tag": "caller", "sdp": call.sdp("caller")})
            self.assertEqual(offer["result"], "ok", offer)
            answer = self.ng.request({"command": "answer", "call-id": call.call_id,
                                      "from-tag": "caller", "to-tag": "callee",
                                      "sdp": call.sdp("callee")})
            self.assertEqual(answer["result"], "ok", answer)
            call.to_callee, call.to_caller = media_port(answer["sdp"]), media_port(offer["sdp"])
        return calls

    def redis_keys(self, db):
        def keys():
            from omnirtp.state.resp import ReplyParser, encode_command
            with socket.create_connection((REDIS, REDIS_PORT), timeout=5) as s:
                s.sendall(encode_command("SELECT", db) + encode_command("KEYS", "omnirtp:call:*"))
                parser, replies = ReplyParser(), []
                while len(replies) < 2:
                    replies.extend(parser.feed(s.recv(65536)))
                return sorted(k.decode()[len("omnirtp:call:"):] for k in replies[1])
        return self.lan.run("lan", keys)



class ActivePassiveTakeoverTests(LanTestCase):

    def test_callsContinueThroughTheStandby(self):
        active = NodeDaemon(self, self.lan, "active", own_db=1, follow_db=2)
        standby = NodeDaemon(self, self.lan, "standby", own_db=2, follow_db=1)
        calls = self.calls(CALLS)
        ids = sorted(c.call_id for c in calls)
        for call in calls:
            self.assertTrue(call.flows("caller"), call.call_id)
            self.assertTrue(call.flows("callee"), call.call_id)
            self.assertEqual(call.count("caller"), list(range(call.seq - COUNT + 1, call.seq + 1)))
            self.assertEqual(call.count("callee"), list(range(call.seq - COUNT + 1, call.seq + 1)))
        # the standby follows them (foreign), ports bound on the VIP it does not hold
        self.assertTrue(wait_until(
            lambda: session_ids(standby.cli("list sessions foreign")) == ids), standby.log())
        self.assertEqual(standby.cli("list sessions own"), "No own sessions on this media relay.\n")
        self.assertNotIn("ports not bound yet", standby.log())
        self.assertEqual(self.redis_keys(1), ids)

        # the active one dies; keepalived moves the VIP
        active.kill()
        self.lan.move_vip(self)
        for call in calls:
            self.assertTrue(call.flows("caller"), (call.call_id, standby.log()[-3000:]))
            self.assertTrue(call.flows("callee"), call.call_id)
            self.assertEqual(call.count("caller"), list(range(call.seq - COUNT + 1, call.seq + 1)))
            self.assertEqual(call.count("callee"), list(range(call.seq - COUNT + 1, call.seq + 1)))

        # keepalived's notify_master: omnirtp-ctl active
        self.assertEqual(standby.cli("active"), "Ok, all calls set to 'owned (active)'\n")
        self.assertEqual(session_ids(standby.cli("list sessions own")), ids)
        self.assertEqual(standby.cli("list sessions foreign"),
                         "No foreign sessions on this media relay.\n")
        self.assertTrue(wait_until(lambda: self.redis_keys(2) == ids and not self.redis_keys(1)))
        for call in calls:
            self.assertEqual(call.count("caller"), list(range(call.seq - COUNT + 1, call.seq + 1)))
            self.assertEqual(call.count("callee"), list(range(call.seq - COUNT + 1, call.seq + 1)))
        # the SIP proxy's next requests, to the VIP as before, reach the standby
        for call in calls:
            query = self.ng.request({"command": "query", "call-id": call.call_id})
            self.assertEqual(query["result"], "ok", query)
            self.assertEqual(sorted(query["tags"]), ["callee", "caller"])
            deleted = self.ng.request({"command": "delete", "call-id": call.call_id})
            self.assertEqual(deleted["result"], "ok", deleted)
        self.assertTrue(wait_until(lambda: self.redis_keys(2) == []))
        self.assertEqual(standby.cli("list sessions all"), "No sessions on this media relay.\n")


class PlannedSwitchTests(LanTestCase):
    """standby on the active host, then the VIP moves (both hosts live)."""

    def switch(self, switchover):
        # the old active host binds the VIP it no longer holds, when it
        # follows the calls again from the new owner's database
        self.lan.sh("active", "sysctl -qw net.ipv4.ip_nonlocal_bind=1")
        active = NodeDaemon(self, self.lan, "active", own_db=1, follow_db=2)
        standby = NodeDaemon(self, self.lan, "standby", own_db=2, follow_db=1,
                             extra=["--active-switchover"] if switchover else [])
        calls = self.calls(3)
        for call in calls:
            self.assertTrue(call.flows("caller"), call.call_id)
            self.assertTrue(call.flows("callee"), call.call_id)
        ids = sorted(c.call_id for c in calls)
        self.assertTrue(wait_until(
            lambda: session_ids(standby.cli("list sessions foreign")) == ids), standby.log())

        # keepalived's notify_backup on the active host
        self.assertEqual(active.cli("standby"), "Ok, all calls set to 'foreign (standby)'\n")
        self.assertEqual(active.cli("list sessions own"), "No own sessions on this media relay.\n")
        self.assertEqual(session_ids(active.cli("list sessions foreign")), ids)
        for call in calls:  # still relayed by it while it holds the VIP
            self.assertEqual(call.count("caller"), list(range(call.seq - COUNT + 1, call.seq + 1)))
        self.assertEqual(self.redis_keys(1), ids)
        self.lan.move_vip(self)
        return active, standby, calls, ids

    def check_taken(self, active, standby, calls, ids):
        self.assertTrue(wait_until(lambda: session_ids(standby.cli("list sessions own")) == ids),
                        standby.log()[-3000:])
        self.assertTrue(wait_until(lambda: self.redis_keys(2) == ids and not self.redis_keys(1)))
        for call in calls:
            self.assertTrue(call.flows("caller"), (call.call_id, standby.log()[-3000:]))
            self.assertTrue(call.flows("callee"), call.call_id)
            self.assertEqual(call.count("caller"), list(range(call.seq - COUNT + 1, call.seq + 1)))
            self.assertEqual(call.count("callee"), list(range(call.seq - COUNT + 1, call.seq + 1)))
        # the old active host follows them from their new owner's database
        self.assertTrue(wait_until(lambda: active.cli("list sessions foreign").count(
            "redis_keyspace:2 | foreign:yes") == len(ids)), active.log()[-3000:])
        for call in calls:
            query = self.ng.request({"command": "query", "call-id": call.call_id})
            self.assertEqual(query["result"], "ok", query)
            deleted = self.ng.request({"command": "delete", "call-id": call.call_id})
            self.assertEqual(deleted["result"], "ok", deleted)
        self.assertTrue(wait_until(lambda: self.redis_keys(2) == []))
        self.assertTrue(wait_until(lambda: active.cli("list sessions all")
                                   == "No sessions on this media relay.\n"))

    def test_standbyThenActive(self):
        active, standby, calls, ids = self.switch(switchover=False)
        # keepalived's notify_master on the new active host
        self.assertEqual(standby.cli("active"), "Ok, all calls set to 'owned (active)'\n")
        self.check_taken(active, standby, calls, ids)

    def test_standbyThenActiveSwitchover(self):
        active, standby, calls, ids = self.switch(switchover=True)
        # no active: the first media of two calls takes them over, the SIP
        # proxy's re-INVITE the third
        for call in calls[:2]:
            self.assertTrue(call.flows("caller"), (call.call_id, standby.log()[-3000:]))
        reinvite = calls[2]
        offer = self.ng.request({"command": "offer", "call-id": reinvite.call_id,
                                 "from-tag": "caller", "sdp": reinvite.sdp("caller")})
        self.assertEqual(offer["result"], "ok", offer)
        self.check_taken(active, standby, calls, ids)
        log = standby.log()
        self.assertEqual(log.count("taken over: media for it (active-switchover)"), 2, log)
        self.assertEqual(log.count("taken over: signalling for it (active-switchover)"), 1, log)
