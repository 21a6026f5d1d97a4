"""IPv6 media on ::1 and IPv4 <-> IPv6 bridging, side by side with rtpengine 10.5.

Each test starts Debian's rtpengine and omnirtp (twistd, from this checkout)
with the same interfaces, sends both the same offer and answer, and checks
for each that the SDP towards each party has the expected address family
and that RTP really flows both ways between a party on 127.0.0.1 and a
party on ::1 (or two on ::1), from the address and port advertised to the
receiver.  The expectations were checked against 10.5: the rtpengine half of
every test runs the live daemon.

These tests need a usable ::1.  When the host has none, each test runs
itself again (a child trial) inside a network namespace it creates with
``ip netns`` (whose loopback has ::1); it fails, never skips, when that is
impossible too.
"""

import functools
import os
import socket
import subprocess
import sys
import uuid

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from omnirtp.test.integration.peers import (
    LOOPBACK, ROOT, find_program, free_port, free_port_range)
from omnirtp.test.integration.reference import omnirtp_daemon, rtpengine_daemon
from omnirtp.test.integration.test_paths import Parties, port_of

V6 = "::1"
#: set in the environment of the child trial that runs inside the namespace
IN_NETNS = "OMNIRTP_TEST_IPV6_NETNS"


def ipv6_loopback_usable():
    """True if a UDP datagram sent to ::1 arrives there."""
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError:
        return False
    try:
        s.settimeout(2)
        s.bind((V6, 0))
        s.sendto(b"ping", s.getsockname()[:2])
        return s.recv(16) == b"ping"
    except OSError:
        return False
    finally:
        s.close()


def needs_ipv6(method):
    """Run the test here when ::1 works, else in a new network namespace."""
    @functools.wraps(method)
    def wrapper(self):
        if ipv6_loopback_usable():
            return method(self)
        return run_in_namespace(self)
    return wrapper


def run_in_namespace(test):
    """Run ``test`` (by its id) in a child trial inside a network namespace
    made for it, with its loopback up; fail with the child's output unless
    the child passed that one test."""
    if os.environ.get(IN_NETNS):
        test.fail("::1 is not usable, not even in the network namespace %s"
                  % os.environ[IN_NETNS])
    try:
        ip = find_program("ip")
    except SkipTest:
        test.fail("::1 is not usable and `ip` is not installed (Debian package iproute2; "
                  "`make test` installs it)")
    name = "omnirtp-v6-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    made = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True)
    if made.returncode:
        test.fail("::1 is not usable and `ip netns add %s` failed (it needs root): %s"
                  % (name, made.stderr.strip()))
    test.addCleanup(subprocess.run, [ip, "netns", "delete", name], capture_output=True)
    subprocess.run([ip, "-n", name, "link", "set", "lo", "up"], check=True)
    env = dict(os.environ)
    env[IN_NETNS] = name
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    child = subprocess.run(
        [ip, "netns", "exec", name, sys.executable, "-m", "twisted.trial",
         "--temp-directory", os.path.abspath(test.mktemp()), test.id()],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = child.stdout + child.stderr
    if child.returncode or "PASSED (successes=1)" not in output:
        test.fail("in network namespace %s: %s" % (name, output[-4000:]))


def sdp(port, address):
    """A one-stream audio SDP that receives RTP and RTCP on ``port``."""
    family = "IP6" if ":" in address else "IP4"
    return ("v=0\r\no=u 1 1 IN %s %s\r\ns=-\r\nc=IN %s %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0 8\r\na=rtcp:%d\r\n"
            % (family, address, family, address, port, port))


def connection(sdp_text):
    """``(family, address)`` of the session's c= line."""
    for line in sdp_text.split("\r\n"):
        if line.startswith("c=IN "):
            family, address = line[5:].split()
            return family, address
    raise AssertionError("no c= line in %r" % (sdp_text,))


class FamilyTests(SynchronousTestCase):
    """Which family faces each party, and media between the families."""

    maxDiff = None

    def start(self, kind, interfaces):
        port_min, port_max = free_port_range(100)
        if kind == "rtpengine":
            daemon = rtpengine_daemon(free_port(), port_min, port_max, interfaces,
                                      binary=find_program("rtpengine"))
        else:
            daemon = omnirtp_daemon(free_port(), port_min, port_max, interfaces, root=ROOT)
        self.addCleanup(daemon.stop)
        return daemon.start()

    def call(self, kind, interfaces, caller, flags):
        """A call from a party on ``caller`` (an address): the offer carries
        ``flags``, the callee answers from an address of the family it was
        offered.  Returns what was seen."""
        daemon = self.start(kind, interfaces)
        offer = dict(flags, command="offer", **{"call-id": "v6", "from-tag": "ft"})
        parties = Parties(self, "A", A=caller)
        offer["sdp"] = sdp(parties.port("A"), caller)
        offered = daemon.request(offer)
        self.assertEqual(offered["result"], "ok", (kind, offered))
        to_b = connection(offered["sdp"])
        callee = V6 if to_b[0] == "IP6" else LOOPBACK
        parties_b = Parties(self, "B", B=callee)
        answered = daemon.request({"command": "answer", "call-id": "v6", "from-tag": "ft",
                                   "to-tag": "tt", "sdp": sdp(parties_b.port("B"), callee)})
        self.assertEqual(answered["result"], "ok", (kind, answered))
        to_a = connection(answered["sdp"])
        parties.socks.update(parties_b.socks)
        a_dest = (to_a[1], port_of(answered["sdp"]))
        b_dest = (to_b[1], port_of(offered["sdp"]))
        media = parties.probe([("A", a_dest), ("B", b_dest), ("A", a_dest), ("B", b_dest)],
                              {a_dest: "to_a", b_dest: "to_b"})
        return {"to A": to_a, "to B": to_b, "media": media}

    def check(self, interfaces, caller, flags, to_a, to_b):
        both_ways = {"A->to_a": [("B", "to_b"), ("B", "to_b")],
                     "B->to_b": [("A", "to_a"), ("A", "to_a")]}
        expected = {"to A": to_a, "to B": to_b, "media": both_ways}
        for kind in ("rtpengine", "omnirtp"):
            self.assertEqual(self.call(kind, interfaces, caller, flags), expected, kind)

    @needs_ipv6
    def test_ipv6Call(self):
        """Both parties and the only interface on ::1."""
        self.check((V6,), V6, {}, ("IP6", V6), ("IP6", V6))

    @needs_ipv6
    def test_directionV4ToV6(self):
        """Interfaces ``v4`` (127.0.0.1) and ``v6`` (::1), direction
        [v4, v6]: an IPv4 caller reaches an IPv6 callee."""
        self.check(("v4/" + LOOPBACK, "v6/" + V6), LOOPBACK, {"direction": ["v4", "v6"]},
                   ("IP4", LOOPBACK), ("IP6", V6))

    @needs_ipv6
    def test_directionV6ToV4(self):
        """Direction [v6, v4]: an IPv6 caller reaches an IPv4 callee."""
        self.check(("v4/" + LOOPBACK, "v6/" + V6), V6, {"direction": ["v6", "v4"]},
                   ("IP6", V6), ("IP4", LOOPBACK))

    @needs_ipv6
    def test_addressFamilyOnDualStackInterface(self):
        """One interface with both addresses: ``address family`` IP6 turns an
        IPv4 caller's offer to IPv6 for the callee; the caller stays on IPv4."""
        self.check((LOOPBACK, V6), LOOPBACK, {"address family": "IP6"},
                   ("IP4", LOOPBACK), ("IP6", V6))

    @needs_ipv6
    def test_addressFamilyIP4OnDualStackInterface(self):
        """``address family`` IP4 for an IPv6 caller: the callee gets IPv4."""
        self.check((LOOPBACK, V6), V6, {"address family": "IP4"},
                   ("IP6", V6), ("IP4", LOOPBACK))

    @needs_ipv6
    def test_addressFamilyPicksInterface(self):
        """Interfaces v4 and v6, no direction: ``address family`` IP6 takes
        the interface that has IPv6 for the callee."""
        self.check(("v4/" + LOOPBACK, "v6/" + V6), LOOPBACK, {"address family": "IP6"},
                   ("IP4", LOOPBACK), ("IP6", V6))

    @needs_ipv6
    def test_ipv6CallerWithoutDirection(self):
        """Interfaces v4 (the default) and v6, no direction, an IPv6 caller:
        both sides are faced in IPv6."""
        self.check(("v4/" + LOOPBACK, "v6/" + V6), V6, {}, ("IP6", V6), ("IP6", V6))

    @needs_ipv6
    def test_callerKeepsItsFamilyAgainstDirection(self):
        """Direction [v4, v4] with an IPv6 caller: the callee gets the named
        IPv4 interface, the caller is still faced in IPv6."""
        self.check(("v4/" + LOOPBACK, "v6/" + V6), V6, {"direction": ["v4", "v4"]},
                   ("IP6", V6), ("IP4", LOOPBACK))
