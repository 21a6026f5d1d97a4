"""Tests for omnirtp.media.kernel (nftables rules as data) and the media
engine's use of an IForwarder.  No kernel here: the libnftables context is
a fake that records batches; test_kernel_netns runs the real thing."""

import json
import random

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from omnirtp.config.model import Config  # noqa: F401  (the attribute names used below)
from omnirtp.errors import ConfigError
from omnirtp.interfaces import IForwarder
from omnirtp.media import kernel
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.kernel import (
    KernelUnavailable, NftError, NftForwarder, Stream, add_commands, diff_commands, names,
    offloadable, parse_counters, remove_commands, replace_commands, setup_commands)
from omnirtp.service import build_forwarder
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor

T = "omnirtp-0"
S1 = Stream(("10.0.0.1", 30000), ("10.0.0.2", 4000), ("10.0.0.1", 30002), ("10.0.1.2", 5000))
S2 = Stream(("10.0.0.1", 30002), ("10.0.1.2", 5000), ("10.0.0.1", 30000), ("10.0.0.2", 4000))
S6 = Stream(("2001:db8::1", 30000), ("2001:db8::2", 4000), ("2001:db8::1", 30002),
            ("2001:db8:1::2", 5000))


def cmd(verb, kind, **fields):
    body = {"family": "inet", "table": T}
    body.update(fields)
    return {verb: {kind: body}}


class RuleTests(SynchronousTestCase):
    maxDiff = None

    def test_names(self):
        self.assertEqual(names(("10.0.0.1", 30000)),
                         ("s-10.0.0.1-30000", "o-10.0.0.1-30000", "c-10.0.0.1-30000"))
        self.assertEqual(names(("2001:db8::1", 7))[0], "s-2001_db8__1-7")
        self.assertEqual(kernel.table_name(3), "omnirtp-3")

    def test_add_ipv4(self):
        """A stream: a counter, the rewrite of the destination (matched on
        the learned source, untracked) and of the source, then the map
        elements that send packets there."""
        ip = lambda f: {"payload": {"protocol": "ip", "field": f}}  # noqa: E731
        udp = lambda f: {"payload": {"protocol": "udp", "field": f}}  # noqa: E731
        self.assertEqual(add_commands(T, S1), [
            cmd("add", "counter", name="c-10.0.0.1-30000"),
            cmd("add", "chain", name="s-10.0.0.1-30000"),
            cmd("add", "chain", name="o-10.0.0.1-30000"),
            cmd("add", "rule", chain="s-10.0.0.1-30000", expr=[
                {"match": {"op": "==", "left": ip("saddr"), "right": "10.0.0.2"}},
                {"match": {"op": "==", "left": udp("sport"), "right": 4000}},
                {"mangle": {"key": ip("daddr"), "value": "10.0.1.2"}},
                {"mangle": {"key": udp("dport"), "value": 5000}},
                {"counter": "c-10.0.0.1-30000"}, {"notrack": None}, {"accept": None}]),
            cmd("add", "rule", chain="o-10.0.0.1-30000", expr=[
                {"mangle": {"key": ip("saddr"), "value": "10.0.0.1"}},
                {"mangle": {"key": udp("sport"), "value": 30002}},
                {"accept": None}]),
            cmd("add", "element", name="in4", elem=[
                [{"concat": ["10.0.0.1", 30000]}, {"jump": {"target": "s-10.0.0.1-30000"}}]]),
            cmd("add", "element", name="out4", elem=[
                [{"concat": ["10.0.0.2", 4000, "10.0.1.2", 5000]},
                 {"jump": {"target": "o-10.0.0.1-30000"}}]]),
        ])

    def test_add_ipv6(self):
        cmds = add_commands(T, S6)
        rule = cmds[3]["add"]["rule"]["expr"]
        self.assertEqual(rule[0]["match"]["left"], {"payload": {"protocol": "ip6", "field": "saddr"}})
        self.assertEqual(rule[2]["mangle"], {"key": {"payload": {"protocol": "ip6", "field": "daddr"}},
                                             "value": "2001:db8:1::2"})
        self.assertEqual([c["add"]["element"]["name"] for c in cmds[5:]], ["in6", "out6"])

    def test_remove(self):
        """Elements first (nothing jumps any more), then the chains; the
        counter stays for a last read."""
        self.assertEqual(remove_commands(T, S1), [
            {"delete": add_commands(T, S1)[5]["add"]},
            {"delete": add_commands(T, S1)[6]["add"]},
            cmd("flush", "chain", name="s-10.0.0.1-30000"),
            cmd("delete", "chain", name="s-10.0.0.1-30000"),
            cmd("flush", "chain", name="o-10.0.0.1-30000"),
            cmd("delete", "chain", name="o-10.0.0.1-30000"),
        ])

    def test_replace_keeps_counter(self):
        moved = S1._replace(source=("10.0.0.9", 4100))
        cmds = replace_commands(T, S1, moved)
        self.assertEqual(cmds[:4], [
            {"delete": add_commands(T, S1)[5]["add"]},
            {"delete": add_commands(T, S1)[6]["add"]},
            cmd("flush", "chain", name="s-10.0.0.1-30000"),
            cmd("flush", "chain", name="o-10.0.0.1-30000")])
        self.assertEqual(cmds[4:], add_commands(T, moved)[3:])
        self.assertNotIn("counter", json.dumps([c for c in cmds if "delete" in c]))

    def test_diff(self):
        self.assertEqual(diff_commands(T, {}, {}), ([], []))
        self.assertEqual(diff_commands(T, {}, {S1.local: S1}), (add_commands(T, S1), []))
        self.assertEqual(diff_commands(T, {S1.local: S1}, {S1.local: S1}), ([], []))
        self.assertEqual(diff_commands(T, {S1.local: S1, S2.local: S2}, {S1.local: S1}),
                         (remove_commands(T, S2), [S2.local]))
        moved = S2._replace(dest=("10.0.0.3", 4002))
        self.assertEqual(diff_commands(T, {S2.local: S2}, {S2.local: moved}),
                         (replace_commands(T, S2, moved), []))

    def test_offloadable(self):
        self.assertTrue(offloadable(S1))
        self.assertTrue(offloadable(S6))
        self.assertFalse(offloadable(S1._replace(dest=("2001:db8::5", 5000))))  # 4 -> 6
        self.assertFalse(offloadable(S1._replace(local=("0.0.0.0", 30000))))
        self.assertFalse(offloadable(S1._replace(source=("10.0.0.2", 0))))

    def test_setup(self):
        """Our table: four maps and three base chains, one lookup rule per
        family each; nothing outside the table."""
        cmds = setup_commands(T)
        self.assertEqual(cmds[0], {"add": {"table": {"family": "inet", "name": T}}})
        for c in cmds[1:]:
            (body,) = c["add"].values()
            self.assertEqual((body["family"], body["table"]), ("inet", T))
        chains = [c["add"]["chain"] for c in cmds if "chain" in c["add"]]
        self.assertEqual([(c["name"], c["hook"], c["prio"]) for c in chains],
                         [("pre", "prerouting", -300), ("post", "postrouting", 300),
                          ("in", "input", -300)])
        maps = [c["add"]["map"] for c in cmds if "map" in c["add"]]
        self.assertEqual([(m["name"], m["type"]) for m in maps], [
            ("in4", ["ipv4_addr", "inet_service"]),
            ("out4", ["ipv4_addr", "inet_service", "ipv4_addr", "inet_service"]),
            ("in6", ["ipv6_addr", "inet_service"]),
            ("out6", ["ipv6_addr", "inet_service", "ipv6_addr", "inet_service"])])
        self.assertEqual(len([c for c in cmds if "rule" in c["add"]]), 6)

    def test_parse_counters(self):
        out = json.dumps({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"counter": {"family": "inet", "name": "c-10.0.0.1-30000", "table": T,
                         "handle": 3, "packets": 7, "bytes": 420}},
            {"counter": {"family": "inet", "name": "c-x", "table": "other", "packets": 1,
                         "bytes": 1}}]})
        self.assertEqual(parse_counters(out, T), {"c-10.0.0.1-30000": (7, 420)})
        self.assertEqual(parse_counters("", T), {})


class FakeNft:
    """Records batches; ``counts`` (name -> (packets, bytes)) is what a
    counter list returns; ``fail`` makes the next run raise."""

    def __init__(self):
        self.batches = []
        self.counts = {}
        self.fail = None

    def run(self, text):
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise NftError(error)
        doc = json.loads(text)["nftables"]
        if doc and "list" in doc[0]:
            return json.dumps({"nftables": [
                {"counter": {"family": "inet", "table": T, "name": n, "packets": p, "bytes": b}}
                for n, (p, b) in self.counts.items()]})
        self.batches.append(doc)
        return ""


class ForwarderTests(SynchronousTestCase):
    def setUp(self):
        self.nft = FakeNft()
        self.fw = NftForwarder(0, nft=self.nft, proc=self.mktemp())

    def test_verify(self):
        self.assertTrue(verifyObject(IForwarder, self.fw))

    def test_negative_table(self):
        self.assertRaises(ValueError, NftForwarder, -1)

    def test_start_replaces_table(self):
        """Start: whatever our table held is deleted (a crash's rules), and
        it is made again, in one batch."""
        self.fw.start()
        self.assertEqual(self.nft.batches, [kernel.drop_commands(T) + setup_commands(T)])
        self.assertEqual(kernel.drop_commands(T)[1], {"delete": {"table": {"family": "inet",
                                                                          "name": T}}})

    def test_start_refused(self):
        self.nft.fail = "Operation not permitted"
        e = self.assertRaises(KernelUnavailable, self.fw.start)
        self.assertEqual(str(e), "nftables refused our table omnirtp-0: Operation not permitted")

    def test_offload_batches_per_call(self):
        self.fw.start()
        self.fw.offload("c1", [S1, S2, S1._replace(local=("10.0.0.1", 30004),
                                                   dest=("2001:db8::1", 1))])
        self.assertEqual(self.nft.batches[1], add_commands(T, S1) + add_commands(T, S2))
        self.assertEqual(self.fw.offloaded("c1"), {S1.local: S1, S2.local: S2})
        self.fw.offload("c1", [S1, S2])
        self.assertEqual(len(self.nft.batches), 2)  # nothing changed: no batch

    def test_counters_cumulative(self):
        """A stream's counter survives its removal (read before the counter
        goes), and a later offload of the same socket adds to it."""
        self.fw.start()
        self.fw.offload("c1", [S1, S2])
        self.nft.counts = {"c-10.0.0.1-30000": (5, 500), "c-10.0.0.1-30002": (3, 300)}
        self.assertEqual(self.fw.counters(), {S1.local: (5, 500), S2.local: (3, 300)})
        self.fw.offload("c1", [S1])
        self.assertEqual(self.nft.batches[-2], remove_commands(T, S2))
        self.assertEqual(self.nft.batches[-1], kernel.forget_commands(T, S2.local))
        self.nft.counts = {"c-10.0.0.1-30000": (6, 600)}
        self.assertEqual(self.fw.counters(), {S1.local: (6, 600), S2.local: (3, 300)})
        self.fw.offload("c1", [S1, S2])
        self.nft.counts = {"c-10.0.0.1-30000": (6, 600), "c-10.0.0.1-30002": (2, 200)}
        self.assertEqual(self.fw.counters(), {S1.local: (6, 600), S2.local: (5, 500)})
        self.fw.offload("c1", [])
        self.assertEqual(self.fw.offloaded(), {})
        self.fw.forget(S1.local)
        self.assertEqual(self.fw.counters(), {S2.local: (5, 500)})

    def test_stop_deletes_table(self):
        self.fw.start()
        self.fw.offload("c1", [S1])
        self.fw.stop()
        self.assertEqual(self.nft.batches[-1], kernel.drop_commands(T))
        self.assertEqual(self.fw.offloaded(), {})


HOST = "10.0.0.1"
A = ("10.0.0.2", 4000)
B = ("10.0.1.2", 5000)
RTP = b"\x80\x00\x00\x01" + b"\x00" * 8 + b"x" * 20


class EngineTests(SynchronousTestCase):
    """The engine hands a call's plain, confirmed streams to its forwarder."""

    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(500.0)
        self.net = FakeNetwork()
        self.nft = FakeNft()
        self.fw = NftForwarder(0, nft=self.nft, proc=self.mktemp())
        self.fw.start()
        self.engine = EmbeddedEngine(self.reactor, {HOST: (30000, 30009)}, bind=self.net.bind,
                                     rng=random.Random(4), forwarder=self.fw)
        self.addCleanup(self.engine.close)

    def call(self, **extra):
        a, b = self.successResultOf(self.engine.allocate("c1", HOST, 2))
        entries = [
            {"local": (HOST, a), "peer": (HOST, b), "endpoint": A, "learning": "immediate"},
            {"local": (HOST, a + 1), "peer": (HOST, b + 1), "endpoint": (A[0], A[1] + 1),
             "learning": "immediate"},
            {"local": (HOST, b), "peer": (HOST, a), "endpoint": B, "learning": "immediate"},
            {"local": (HOST, b + 1), "peer": (HOST, a + 1), "endpoint": (B[0], B[1] + 1),
             "learning": "immediate"}]
        for entry in entries:
            entry.update(reset=True, **extra)
        self.successResultOf(self.engine.configure("c1", entries))
        return a, b

    def confirm(self, a, b):
        self.net.inject((HOST, a), RTP, A)
        self.net.inject((HOST, b), RTP, B)
        self.net.pump(self.reactor)

    def test_offload_after_both_confirmed(self):
        """Nothing is offloaded before both parties of a pair are confirmed;
        the next tick after that offloads both directions of RTP (RTCP
        has seen no packet: not confirmed, stays in userspace)."""
        a, b = self.call()
        self.reactor.advance(1.0)
        self.assertEqual(self.fw.offloaded(), {})
        self.net.inject((HOST, a), RTP, A)
        self.net.pump(self.reactor)
        self.reactor.advance(1.0)
        self.assertEqual(self.fw.offloaded(), {})
        self.net.inject((HOST, b), RTP, B)
        self.net.pump(self.reactor)
        self.reactor.advance(1.0)
        self.assertEqual(self.fw.offloaded("c1"), {
            (HOST, a): Stream((HOST, a), A, (HOST, b), B),
            (HOST, b): Stream((HOST, b), B, (HOST, a), A)})

    def test_counters_merged(self):
        """stats and totals add the kernel's packets to the socket's own;
        a kernel counter that moved is a packet for the media timeout."""
        a, b = self.call()
        self.confirm(a, b)
        self.reactor.advance(1.0)
        name = names((HOST, a))[2]
        self.nft.counts = {name: (10, 400)}
        self.reactor.advance(5.0)
        stats = self.successResultOf(self.engine.stats("c1"))["c1"][(HOST, a)]
        self.assertEqual((stats["packets"], stats["bytes"], stats["kernel"], stats["last_packet"]),
                         (11, 400 + len(RTP), {"packets": 10, "bytes": 400}, 506.0))
        totals = self.successResultOf(self.engine.totals())
        self.assertEqual(totals["packets"], 12)
        self.successResultOf(self.engine.release("c1"))
        self.assertEqual(self.fw.offloaded(), {})
        self.assertEqual(self.successResultOf(self.engine.totals())["packets"], 12)
        self.assertEqual(self.fw.counters(), {})

    def test_srtp_leaves_kernel(self):
        """A re-INVITE to SRTP: the configuration takes the streams out of
        the kernel at once (the pipeline needs userspace)."""
        a, b = self.call()
        self.confirm(a, b)
        self.reactor.advance(1.0)
        self.assertEqual(len(self.fw.offloaded()), 2)
        crypto = {"suite": "AES_CM_128_HMAC_SHA1_80",
                  "key": "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"}
        self.successResultOf(self.engine.configure("c1", [
            {"local": (HOST, a), "peer": (HOST, b), "endpoint": A, "srtp_in": crypto}]))
        # only what A sends needs SRTP undone; B's RTP to A is still plain
        self.assertEqual(set(self.fw.offloaded()), {(HOST, b)})
        self.successResultOf(self.engine.configure("c1", [
            {"local": (HOST, a), "peer": (HOST, b), "endpoint": A, "srtp_out": crypto}]))
        self.assertEqual(self.fw.offloaded(), {})

    def test_refused_batch_keeps_userspace(self):
        a, b = self.call()
        self.confirm(a, b)
        self.nft.fail = "No buffer space available"
        self.reactor.advance(1.0)
        self.assertEqual(self.fw.offloaded(), {})
        self.reactor.advance(1.0)  # tried again
        self.assertEqual(len(self.fw.offloaded()), 2)
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class _Config:
    def __init__(self, table, no_fallback=False, num_threads=0):
        self.table, self.no_fallback, self.num_threads = table, no_fallback, num_threads


class BuildTests(SynchronousTestCase):
    def test_off(self):
        self.assertIsNone(build_forwarder(_Config(-1), make=self.fail))

    def test_started(self):
        made = []

        def make(number):
            made.append(NftForwarder(number, nft=FakeNft(), proc=self.mktemp()))
            return made[-1]

        self.assertIs(build_forwarder(_Config(2), make=make), made[0])
        self.assertEqual(made[0].table, "omnirtp-2")
        self.assertEqual(len(made[0]._nft.batches), 1)

    def refuse(self, number):
        fw = NftForwarder(number, nft=FakeNft(), proc=self.mktemp())
        fw._nft.fail = "Operation not permitted"
        return fw

    def test_fallback(self):
        self.assertIsNone(build_forwarder(_Config(0), make=self.refuse))

    def test_no_fallback(self):
        e = self.assertRaises(ConfigError, build_forwarder, _Config(0, True), self.refuse)
        self.assertEqual(str(e), "table = 0: nftables refused our table omnirtp-0: Operation "
                                 "not permitted, and no-fallback is set")

    def test_workers(self):
        self.assertIsNone(build_forwarder(_Config(0, num_threads=2), make=self.fail))
        e = self.assertRaises(ConfigError, build_forwarder, _Config(0, True, 2), self.fail)
        self.assertIn("num-threads = 0", str(e))
