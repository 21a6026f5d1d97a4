"""Tests for omnirtp.media.kernel (nftables rules as data) and the media
engine's use of an IForwarder.  No kernel here: the libnftables context is
a fake that records batches; test_kernel_netns runs the real thing."""

import json
import os
import random

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from omnirtp.errors import ConfigError
from omnirtp.interfaces import IForwarder
from omnirtp.media import kernel
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.kernel import (
    KernelUnavailable, NftError, NftForwarder, Stream, add_commands, elements, keys,
    offloadable, parse_counters, plan, remove_commands, setup_commands, stop_commands)
from omnirtp.service import build_forwarder
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor

T = "omnirtp-0"
S1 = Stream(("10.0.0.1", 30000), ("10.0.0.2", 4000), ("10.0.0.1", 30002), ("10.0.1.2", 5000))
S2 = Stream(("10.0.0.1", 30002), ("10.0.1.2", 5000), ("10.0.0.1", 30000), ("10.0.0.2", 4000))
S6 = Stream(("2001:db8::1", 30000), ("2001:db8::2", 4000), ("2001:db8::1", 30002),
            ("2001:db8:1::2", 5000))


def element(verb, name, key, value):
    return {verb: {"element": {"family": "inet", "table": T, "name": name,
                               "elem": [[{"concat": list(key)}, value]]}}}


class RuleTests(SynchronousTestCase):
    maxDiff = None

    def test_elements(self):
        """X=10.0.0.2:4000 -> L=10.0.0.1:30000, out of O=10.0.0.1:30002 to
        Y=10.0.1.2:5000: each lookup keyed by what the one before wrote."""
        self.assertEqual(elements(S1), [
            ("dport4", ("10.0.0.2", 4000, "10.0.0.1", 30000), 5000),
            ("daddr4", ("10.0.0.2", 4000, "10.0.0.1", 5000), "10.0.1.2"),
            ("sport4", ("10.0.0.2", 4000, "10.0.1.2", 5000), 30002),
            ("saddr4", ("10.0.0.2", 30002, "10.0.1.2", 5000), "10.0.0.1")])
        self.assertEqual([name for name, _k, _v in elements(S6)],
                         ["dport6", "daddr6", "sport6", "saddr6"])
        self.assertEqual(keys(S1), [(n, k) for n, k, _v in elements(S1)])

    def test_add_first_lookup_last(self):
        """Added in one batch, the first lookup's element last."""
        self.assertEqual(add_commands(T, S1), [
            element("add", "saddr4", ("10.0.0.2", 30002, "10.0.1.2", 5000), "10.0.0.1"),
            element("add", "sport4", ("10.0.0.2", 4000, "10.0.1.2", 5000), 30002),
            element("add", "daddr4", ("10.0.0.2", 4000, "10.0.0.1", 5000), "10.0.1.2"),
            element("add", "dport4", ("10.0.0.2", 4000, "10.0.0.1", 30000), 5000)])

    def test_remove_in_two_steps(self):
        """Out: the first lookup's element (packets go to the socket again,
        the counter stops), then, once the counter is read, the rest."""
        self.assertEqual(stop_commands(T, S1), [
            element("delete", "dport4", ("10.0.0.2", 4000, "10.0.0.1", 30000), 5000)])
        self.assertEqual(remove_commands(T, S1), [
            element("delete", "daddr4", ("10.0.0.2", 4000, "10.0.0.1", 5000), "10.0.1.2"),
            element("delete", "sport4", ("10.0.0.2", 4000, "10.0.1.2", 5000), 30002),
            element("delete", "saddr4", ("10.0.0.2", 30002, "10.0.1.2", 5000), "10.0.0.1")])

    def test_plan(self):
        self.assertEqual(plan({}, {}, {}), ([], [], []))
        self.assertEqual(plan({}, {S1.local: S1, S2.local: S2}, {}), ([], [S1, S2], []))
        owners = {k: S1.local for k in keys(S1)}
        self.assertEqual(plan({S1.local: S1}, {S1.local: S1}, owners), ([], [], []))
        self.assertEqual(plan({S1.local: S1}, {}, owners), ([S1], [], []))
        moved = S1._replace(source=("10.0.0.9", 4100))
        self.assertEqual(plan({S1.local: S1}, {S1.local: moved}, owners), ([S1], [moved], []))

    def test_plan_refuses_shared_keys(self):
        """A stream whose lookups another stream (of any call) already
        answers stays in userspace: here the same party sends from one port
        to two of our ports whose other sides have the same port."""
        other = Stream(("10.0.0.1", 30010), ("10.0.0.2", 4000), ("10.0.0.1", 30012),
                       ("10.0.9.9", 5000))
        self.assertEqual(keys(other)[1], keys(S1)[1])  # daddr4: X, L's address, Y's port
        owners = {k: S1.local for k in keys(S1)}
        self.assertEqual(plan({}, {other.local: other}, owners), ([], [], [other]))
        self.assertEqual(plan({}, {S1.local: S1, other.local: other}, {}), ([], [S1], [other]))
        # once S1 leaves, its keys are free in the same step
        self.assertEqual(plan({S1.local: S1}, {other.local: other}, owners),
                         ([S1], [other], []))

    def test_offloadable(self):
        self.assertTrue(offloadable(S1))
        self.assertTrue(offloadable(S6))
        self.assertFalse(offloadable(S1._replace(dest=("2001:db8::5", 5000))))  # 4 -> 6
        self.assertFalse(offloadable(S1._replace(local=("0.0.0.0", 30000))))
        self.assertFalse(offloadable(S1._replace(source=("10.0.0.2", 0))))

    def test_setup(self):
        """Our table: eight maps (the daddr ones counted) and three base
        chains with one rule per family; nothing outside the table."""
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
        v4 = ["ipv4_addr", "inet_service", "ipv4_addr", "inet_service"]
        self.assertEqual([(m["name"], m["map"], "stmt" in m) for m in maps[:4]], [
            ("dport4", "inet_service", False), ("daddr4", "ipv4_addr", True),
            ("sport4", "inet_service", False), ("saddr4", "ipv4_addr", False)])
        self.assertEqual(maps[0]["type"], v4)
        self.assertEqual([m["name"] for m in maps[4:]], ["dport6", "daddr6", "sport6", "saddr6"])
        rules = [c["add"]["rule"] for c in cmds if "rule" in c["add"]]
        self.assertEqual([r["chain"] for r in rules], ["pre", "pre", "post", "post", "in", "in"])
        pre4 = rules[0]["expr"]
        self.assertEqual([list(e)[0] for e in pre4], ["match", "mangle", "mangle", "notrack",
                                                       "accept"])
        self.assertEqual(pre4[1]["mangle"]["key"], {"payload": {"protocol": "udp",
                                                                "field": "dport"}})
        self.assertEqual(pre4[1]["mangle"]["value"]["map"]["data"], "@dport4")
        self.assertEqual(pre4[2]["mangle"]["key"], {"payload": {"protocol": "ip",
                                                                "field": "daddr"}})
        self.assertEqual(rules[3]["expr"][2]["mangle"]["key"],
                         {"payload": {"protocol": "ip6", "field": "saddr"}})

    def test_parse_counters(self):
        text = ("table inet omnirtp-0 {\n\tmap daddr4 {\n\t\ttype ipv4_addr . inet_service . "
                "ipv4_addr . inet_service : ipv4_addr\n\t\tcounter\n\t\telements = { "
                "10.0.0.2 . 4000 . 10.0.0.1 . 5000 counter packets 7 bytes 420 : 10.0.1.2,\n"
                "\t\t\t     10.0.1.2 . 5000 . 10.0.0.1 . 4000 counter packets 0 bytes 0 : "
                "10.0.0.2 }\n\t}\n}\n"
                "\t\telements = { 2001:db8::2 . 4000 . 2001:db8::1 . 5000 counter packets "
                "12345678901 bytes 9 : 2001:db8:1::2 }\n")
        self.assertEqual(parse_counters(text), {
            ("10.0.0.2", 4000, "10.0.0.1", 5000): (7, 420),
            ("10.0.1.2", 5000, "10.0.0.1", 4000): (0, 0),
            ("2001:db8::2", 4000, "2001:db8::1", 5000): (12345678901, 9)})
        self.assertEqual(parse_counters(""), {})


def proc(test, ipv4=True, ipv6=True):
    """A /proc/sys tree with the forwarding switches given."""
    root = test.mktemp()
    for path, on in (("net/ipv4/ip_forward", ipv4), ("net/ipv6/conf/all/forwarding", ipv6)):
        os.makedirs(os.path.join(root, os.path.dirname(path)))
        with open(os.path.join(root, path), "w") as f:
            f.write("1\n" if on else "0\n")
    return root


def ip_counts(key, counts):
    """What the kernel's counter shows for ``counts`` (packets, UDP payload
    bytes): it counts IP packets, headers included."""
    packets, octets = counts
    return packets, octets + packets * (48 if ":" in key[0] else 28)


class FakeNft:
    """Records batches; ``counts`` ({daddr key: (packets, bytes)}) is what
    a counter list shows; ``fail`` makes the next batch raise."""

    def __init__(self, table=T):
        self.table = table
        self.batches = []
        self.counts = {}
        self.fail = None
        #: the counter reads: "list MAP" (a whole map) or "get MAP" (elements)
        self.reads = []
        #: ``list tables inet`` shows these
        self.tables = []

    def run(self, text, text_output=False):
        if text.startswith("list map inet %s daddr" % self.table):
            assert text_output
            self.reads.append("list " + text.split()[4])
            return "".join("%s . %d . %s . %d counter packets %d bytes %d : x\n"
                           % (k + ip_counts(k, v)) for k, v in self.counts.items())
        if text.startswith("get element inet %s daddr" % self.table):
            assert text_output
            self.reads.append("get " + text.split()[4])
            wanted = text[text.index("{") + 1:text.rindex("}")].split(",")
            out = []
            for item in wanted:
                x, xp, la, yp = item.strip().split(" . ")
                key = (x, int(xp), la, int(yp))
                if key not in self.counts:
                    raise NftError("Could not process rule: No such file or directory")
                out.append("%s . %d . %s . %d counter packets %d bytes %d : x\n"
                           % (key + ip_counts(key, self.counts[key])))
            return "".join(out)
        if text == "list tables inet":
            return "".join("table inet %s\n" % name for name in self.tables)
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise NftError(error)
        self.batches.append(json.loads(text)["nftables"])
        return ""


def daddr(stream):
    return elements(stream)[1][1]


class ForwarderTests(SynchronousTestCase):
    def setUp(self):
        self.nft = FakeNft()
        self.fw = NftForwarder(0, nft=self.nft, proc=proc(self))

    def test_verify(self):
        self.assertTrue(verifyObject(IForwarder, self.fw))

    def test_negative_table(self):
        self.assertRaises(ValueError, NftForwarder, -1)

    def test_start_replaces_table(self):
        """Start: whatever our table held is deleted (a crash's rules), then
        it is made again."""
        self.fw.start()
        self.assertEqual(self.nft.batches, [kernel.drop_commands(T), setup_commands(T)])
        self.assertEqual(kernel.drop_commands(T)[1], {"delete": {"table": {"family": "inet",
                                                                          "name": T}}})

    def test_start_refused(self):
        self.nft.fail = "Operation not permitted"
        e = self.assertRaises(KernelUnavailable, self.fw.start)
        self.assertEqual(str(e), "nftables refused our table omnirtp-0: Operation not permitted")

    def test_forwarding_off(self):
        """Without IP forwarding: the leftovers are deleted, then refused."""
        fw = NftForwarder(0, nft=self.nft, proc=proc(self, False, False))
        e = self.assertRaises(KernelUnavailable, fw.start)
        self.assertEqual(str(e), "IP forwarding is off (net.ipv4.ip_forward = 0, "
                                 "net.ipv6.conf.all.forwarding = 0)")
        self.assertEqual(self.nft.batches, [kernel.drop_commands(T)])

    def test_family_without_forwarding(self):
        """IPv6 forwarding off: IPv6 streams stay in userspace."""
        fw = NftForwarder(0, nft=self.nft, proc=proc(self, True, False))
        fw.start()
        fw.offload("c1", [S1, S6])
        self.assertEqual(fw.offloaded(), {S1.local: S1})

    def test_offload_batches_per_call(self):
        self.fw.start()
        self.fw.offload("c1", [S1, S2, S1._replace(local=("10.0.0.1", 30004),
                                                   dest=("2001:db8::1", 1))])
        self.assertEqual(self.nft.batches[2], add_commands(T, S1) + add_commands(T, S2))
        self.assertEqual(self.fw.offloaded("c1"), {S1.local: S1, S2.local: S2})
        self.fw.offload("c1", [S1, S2])
        self.assertEqual(len(self.nft.batches), 3)  # nothing changed: no batch

    def test_refused_across_calls(self):
        """Keys held by another call's stream: this one stays in userspace
        (counted), and gets in once they are free."""
        self.fw.start()
        self.fw.offload("c1", [S1])
        other = Stream(("10.0.0.1", 30010), ("10.0.0.2", 4000), ("10.0.0.1", 30012),
                       ("10.0.9.9", 5000))
        self.fw.offload("c2", [other])
        self.assertEqual((self.fw.offloaded("c2"), self.fw.refused), ({}, 1))
        self.fw.offload("c1", [])
        self.fw.offload("c2", [other])
        self.assertEqual(self.fw.offloaded("c2"), {other.local: other})

    def test_batch_refused(self):
        """A refused batch: the call's new streams are not in the kernel
        (userspace relays them) and the error reaches the caller."""
        self.fw.start()
        self.nft.fail = "No buffer space available"
        self.assertRaises(NftError, self.fw.offload, "c1", [S1])
        self.assertEqual(self.fw.offloaded(), {})
        self.fw.offload("c1", [S1])
        self.assertEqual(self.fw.offloaded(), {S1.local: S1})

    def test_counters_cumulative(self):
        """A stream's count survives its removal (read between the two
        steps), and a later offload of the same socket adds to it."""
        self.fw.start()
        self.fw.offload("c1", [S1, S2])
        self.nft.counts = {daddr(S1): (5, 500), daddr(S2): (3, 300)}
        self.assertEqual(self.fw.counters(), {S1.local: (5, 500), S2.local: (3, 300)})
        self.fw.offload("c1", [S1])
        self.assertEqual(self.nft.batches[-2:], [stop_commands(T, S2), remove_commands(T, S2)])
        self.nft.counts = {daddr(S1): (6, 600)}
        self.assertEqual(self.fw.counters(), {S1.local: (6, 600), S2.local: (3, 300)})
        self.fw.offload("c1", [S1, S2])
        self.nft.counts = {daddr(S1): (6, 600), daddr(S2): (2, 200)}
        self.assertEqual(self.fw.counters(), {S1.local: (6, 600), S2.local: (5, 500)})
        # a party that moved: out and in again; the count goes on
        moved = S1._replace(source=("10.0.0.9", 4100))
        self.fw.offload("c1", [moved, S2])
        self.assertEqual(self.nft.batches[-2:], [
            stop_commands(T, S1), remove_commands(T, S1) + add_commands(T, moved)])
        self.nft.counts = {daddr(moved): (1, 100), daddr(S2): (2, 200)}
        self.assertEqual(self.fw.counters(), {S1.local: (7, 700), S2.local: (5, 500)})
        self.fw.offload("c1", [])
        self.assertEqual(self.fw.offloaded(), {})
        self.fw.forget(S1.local)
        self.assertEqual(self.fw.counters(), {S2.local: (5, 500)})

    def test_offload_calls_one_batch(self):
        """Several calls (the tick): one batch; a stream whose keys an
        earlier call of the same batch takes stays in userspace."""
        self.fw.start()
        other = Stream(("10.0.0.1", 30010), ("10.0.0.2", 4000), ("10.0.0.1", 30012),
                       ("10.0.9.9", 5000))  # shares S1's source and Y port
        S3 = Stream(("10.0.0.1", 30020), ("10.0.0.3", 4000), ("10.0.0.1", 30022),
                    ("10.0.1.3", 5000))
        self.assertEqual(self.fw.offload_calls({"c1": [S1, S2], "c2": [other], "c3": [S3]}), {})
        self.assertEqual(self.nft.batches[2:], [
            add_commands(T, S1) + add_commands(T, S2) + add_commands(T, S3)])
        self.assertEqual((self.fw.offloaded("c2"), self.fw.refused), ({}, 1))
        # c1 leaves and c3 changes: one stop batch, one read, one batch
        moved = S3._replace(source=("10.0.0.9", 4100))
        self.nft.counts = {daddr(S1): (1, 10), daddr(S2): (2, 20), daddr(S3): (3, 30)}
        self.assertEqual(self.fw.offload_calls({"c1": [], "c3": [moved]}), {})
        self.assertEqual(self.nft.batches[3:], [
            stop_commands(T, S1) + stop_commands(T, S2) + stop_commands(T, S3),
            remove_commands(T, S1) + remove_commands(T, S2) + remove_commands(T, S3)
            + add_commands(T, moved)])
        self.assertEqual(self.nft.reads, ["get daddr4"])
        self.assertEqual(self.fw.offloaded(), {S3.local: moved})
        self.assertEqual(self.fw.counters(fresh=False),
                         {S1.local: (1, 10), S2.local: (2, 20), S3.local: (3, 30)})

    def test_offload_calls_spoilt_batch(self):
        """A batch the kernel refuses: each call again by itself; only the
        refused one stays out."""
        self.fw.start()

        class Picky(FakeNft):
            def run(self, text, text_output=False):
                if not text_output and "30002" in text and "30000" not in text:
                    raise NftError("File exists")
                return FakeNft.run(self, text, text_output)

        self.fw._nft = Picky()
        S3 = Stream(("10.0.0.1", 30020), ("10.0.0.3", 4000), ("10.0.0.1", 30022),
                    ("10.0.1.3", 5000))
        lonely = S2._replace(out=("10.0.0.1", 30004))
        failed = self.fw.offload_calls({"c1": [lonely], "c3": [S3]})
        self.assertEqual(list(failed), ["c1"])
        self.assertEqual(str(failed["c1"]), "File exists")
        self.assertEqual(self.fw.offloaded(), {S3.local: S3})
        self.assertEqual(self.fw._nft.batches, [add_commands(T, S3)])

    def test_reads_per_element(self):
        """A query reads its call's counted elements only; a stream that
        leaves has its own element read; the tick lists the maps."""
        self.fw.start()
        self.fw.offload("c1", [S1])
        self.fw.offload("c2", [S2])
        self.nft.counts = {daddr(S1): (5, 500), daddr(S2): (3, 300)}
        self.assertEqual(self.fw.counters(call_id="c1"), {S1.local: (5, 500), S2.local: (0, 0)})
        self.assertEqual(self.nft.reads, ["get daddr4"])
        self.assertEqual(self.fw.counters(), {S1.local: (5, 500), S2.local: (3, 300)})
        lists = ["list daddr4", "list daddr6"]
        self.assertEqual(self.nft.reads, ["get daddr4"] + lists)
        self.nft.counts[daddr(S1)] = (7, 700)
        self.fw.offload("c1", [])
        self.assertEqual(self.nft.reads, ["get daddr4"] + lists + ["get daddr4"])
        self.assertEqual(self.fw.counters(fresh=False), {S1.local: (7, 700), S2.local: (3, 300)})
        self.assertEqual(self.fw.counters(call_id="c1"), {S1.local: (7, 700), S2.local: (3, 300)})
        self.assertEqual(len(self.nft.reads), 4)  # c1 has none in the kernel: no read

    def test_payload_counts(self):
        """The kernel counts IP packets; userspace (and rtpengine) UDP
        payloads: the headers come off."""
        self.assertEqual(kernel.payload_counts({
            ("10.0.0.2", 1, "10.0.0.1", 2): (3, 3 * (28 + 172)),
            ("2001:db8::2", 1, "2001:db8::1", 2): (2, 2 * (48 + 160)),
            ("10.0.0.3", 1, "10.0.0.1", 2): (0, 0)}), {
            ("10.0.0.2", 1, "10.0.0.1", 2): (3, 3 * 172),
            ("2001:db8::2", 1, "2001:db8::1", 2): (2, 2 * 160),
            ("10.0.0.3", 1, "10.0.0.1", 2): (0, 0)})

    def test_get_commands(self):
        self.assertEqual(kernel.get_counters_commands(T, [S1, S6, S2]), [
            "get element inet omnirtp-0 daddr4 { 10.0.0.2 . 4000 . 10.0.0.1 . 5000, "
            "10.0.1.2 . 5000 . 10.0.0.1 . 4000 }",
            "get element inet omnirtp-0 daddr6 { 2001:db8::2 . 4000 . 2001:db8::1 . 5000 }"])

    def test_missing_element_lists_the_map(self):
        """An element gone from the kernel fails ``get``: the maps are
        listed instead (what is not there counts as nothing new)."""
        self.fw.start()
        self.fw.offload("c1", [S1, S2])
        self.nft.counts = {daddr(S1): (5, 500)}
        self.assertEqual(self.fw.counters(call_id="c1"), {S1.local: (5, 500), S2.local: (0, 0)})
        self.assertEqual(self.nft.reads, ["get daddr4", "list daddr4", "list daddr6"])

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
        self.fw = NftForwarder(0, nft=self.nft, proc=proc(self))
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
        self.nft.counts = {daddr(Stream((HOST, a), A, (HOST, b), B)): (10, 400)}
        self.reactor.advance(5.0)
        stats = self.successResultOf(self.engine.stats("c1"))["c1"][(HOST, a)]
        self.assertEqual((stats["packets"], stats["bytes"], stats["kernel"], stats["last_packet"]),
                         (11, 400 + len(RTP), {"packets": 10, "bytes": 400}, 506.0))
        totals = self.successResultOf(self.engine.totals())
        self.assertEqual((totals["packets"], totals["kernel_packets"], totals["kernel_bytes"]),
                         (12, 10, 400))
        # RTP offloaded both ways, RTCP silent: both media kernel-only
        self.assertEqual((totals["media_kernel"], totals["media_mixed"]), (2, 0))
        self.successResultOf(self.engine.release("c1"))
        self.assertEqual(self.fw.offloaded(), {})
        totals = self.successResultOf(self.engine.totals())
        self.assertEqual((totals["packets"], totals["kernel_packets"], totals["kernel_bytes"],
                          totals["media_kernel"]), (12, 10, 400, 0))
        self.assertEqual(self.fw.counters(), {})

    def test_media_mixed(self):
        """RTCP that reached userspace but is not offloaded (its peer never
        sent any): the media is mixed."""
        a, b = self.call()
        self.confirm(a, b)
        self.net.inject((HOST, a + 1), b"\x80\xc9\x00\x01" + b"\x00" * 4, (A[0], A[1] + 1))
        self.net.pump(self.reactor)
        self.reactor.advance(1.0)
        totals = self.successResultOf(self.engine.totals())
        self.assertEqual((totals["media_kernel"], totals["media_mixed"]), (1, 1))
        self.assertEqual((totals["kernel_packets"], totals["kernel_bytes"]), (0, 0))

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

    def test_reinvite_leaves_until_confirmed(self):
        """A signalling reset unconfirms the parties: their streams leave
        the kernel with the configuration, and come back once the new
        source is confirmed."""
        a, b = self.call()
        self.confirm(a, b)
        self.reactor.advance(1.0)
        self.assertEqual(len(self.fw.offloaded()), 2)
        moved = ("10.0.0.7", 4002)
        self.successResultOf(self.engine.configure("c1", [
            {"local": (HOST, a), "peer": (HOST, b), "endpoint": moved, "learning": "immediate",
             "reset": True}]))
        self.assertEqual(self.fw.offloaded(), {})
        self.net.inject((HOST, a), RTP, moved)
        self.net.pump(self.reactor)
        self.reactor.advance(1.0)
        self.assertEqual(self.fw.offloaded("c1"), {
            (HOST, a): Stream((HOST, a), moved, (HOST, b), B),
            (HOST, b): Stream((HOST, b), B, (HOST, a), moved)})

    def test_release_retried(self):
        """A release the kernel refused to undo: the sockets close anyway
        and the tick takes the streams out later."""
        a, b = self.call()
        self.confirm(a, b)
        self.reactor.advance(1.0)
        self.nft.fail = "Device or resource busy"
        self.successResultOf(self.engine.release("c1"))
        self.assertEqual(len(self.fw.offloaded()), 2)
        self.reactor.advance(1.0)
        self.assertEqual(self.fw.offloaded(), {})
        self.assertEqual(self.engine._kernel_stale, set())

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
            made.append(NftForwarder(number, nft=FakeNft(), proc=proc(self)))
            return made[-1]

        self.assertIs(build_forwarder(_Config(2), make=make), made[0])
        self.assertEqual(made[0].table, "omnirtp-2")
        self.assertEqual(len(made[0]._nft.batches), 2)

    def refuse(self, number):
        fw = NftForwarder(number, nft=FakeNft(), proc=proc(self))
        fw._nft.fail = "Operation not permitted"
        return fw

    def test_fallback(self):
        self.assertIsNone(build_forwarder(_Config(0), make=self.refuse))

    def test_no_fallback(self):
        e = self.assertRaises(ConfigError, build_forwarder, _Config(0, True), self.refuse)
        self.assertEqual(str(e), "table = 0: nftables refused our table omnirtp-0: Operation "
                                 "not permitted, and no-fallback is set")

    def test_workers_fallback(self):
        """With media workers the control process checks the same way."""
        self.assertIsNone(build_forwarder(_Config(0, num_threads=2), make=self.refuse))
        e = self.assertRaises(ConfigError, build_forwarder, _Config(0, True, 2), self.refuse)
        self.assertEqual(str(e), "table = 0: nftables refused our table omnirtp-0: Operation "
                                 "not permitted, and no-fallback is set")


class WorkerTableTests(SynchronousTestCase):
    """num-threads > 0: each media worker owns ``omnirtp-N-wK``."""

    def test_names(self):
        self.assertEqual((kernel.table_name(3), kernel.table_name(3, 1)),
                         ("omnirtp-3", "omnirtp-3-w1"))
        self.assertEqual([n for n in ("omnirtp-1", "omnirtp-1-w0", "omnirtp-1-w12", "omnirtp-10",
                                      "omnirtp-10-w1", "omnirtp-1-wx", "filter", "omnirtp-1-w1-x")
                          if kernel.ours(n, 1)],
                         ["omnirtp-1", "omnirtp-1-w0", "omnirtp-1-w12"])
        self.assertEqual(kernel.parse_tables("table inet filter\ntable inet omnirtp-0-w1\n"),
                         ["filter", "omnirtp-0-w1"])

    def test_control_start_drops_worker_leftovers(self):
        """The control process's forwarder deletes every table of its
        number (a crashed run with workers), nothing else."""
        nft = FakeNft()
        nft.tables = ["filter", "omnirtp-0-w0", "omnirtp-0-w1", "omnirtp-1-w0", "omnirtp-0"]
        NftForwarder(0, nft=nft, proc=proc(self)).start()
        self.assertEqual(nft.batches, [
            kernel.drop_commands(T) + kernel.drop_commands("omnirtp-0-w0")
            + kernel.drop_commands("omnirtp-0-w1"), setup_commands(T)])

    def test_worker_start_drops_its_own(self):
        nft = FakeNft("omnirtp-0-w1")
        nft.tables = ["omnirtp-0-w0", "omnirtp-0-w1"]
        fw = NftForwarder(0, nft=nft, proc=proc(self), worker=1)
        fw.start()
        self.assertEqual(fw.table, "omnirtp-0-w1")
        self.assertEqual(nft.batches, [kernel.drop_commands("omnirtp-0-w1"),
                                       setup_commands("omnirtp-0-w1")])
        fw.offload("c1", [S1])
        self.assertEqual(nft.batches[-1], add_commands("omnirtp-0-w1", S1))

    def test_worker_build(self):
        from omnirtp.media.worker import build_forwarder as worker_forwarder
        from twisted.logger import Logger

        made = []

        def make(number, worker):
            made.append(NftForwarder(number, nft=FakeNft(), proc=proc(self), worker=worker))
            return made[-1]

        self.assertIsNone(worker_forwarder(-1, 0, Logger(), make=self.fail))
        self.assertEqual(worker_forwarder(2, 1, Logger(), make=make).table, "omnirtp-2-w1")

        def refuse(number, worker):
            fw = make(number, worker)
            fw._nft.fail = "Operation not permitted"
            return fw

        self.assertIsNone(worker_forwarder(2, 1, Logger(), make=refuse))

    def test_pool_passes_table_and_drops_a_dead_workers(self):
        """The pool starts its workers with ``--table``; a worker that died
        (its rules would forward to ports nobody holds) loses its table at
        once, before it is restarted."""
        from omnirtp.media.pool import WorkerPool
        from omnirtp.test.test_pool import FakeProcessReactor

        reactor = FakeProcessReactor()
        dropped = []
        pool = WorkerPool(reactor, {"127.0.0.1": (40000, 40099)}, 2, table=0,
                          drop_table=dropped.append)
        pool.startService()
        reactor.pump()
        self.assertEqual([p.args[-2:] for p in reactor.spawned], [["--table", "0"]] * 2)
        reactor.spawned[1].end(signal=9)
        self.assertEqual(dropped, ["omnirtp-0-w1"])
        reactor.advance(pool.restart_delay)
        self.assertEqual(reactor.spawned[2].args, reactor.spawned[1].args)

        def refused(name):
            raise NftError("Operation not permitted")

        pool._drop_table = refused
        reactor.spawned[0].end(status=1)  # logged, not raised
        self.assertEqual(pool.workers[0]["state"], "down")

    def test_pool_without_table(self):
        from omnirtp.media.pool import WorkerPool
        from omnirtp.test.test_pool import FakeProcessReactor

        reactor = FakeProcessReactor()
        pool = WorkerPool(reactor, {"127.0.0.1": (40000, 40099)}, 1, drop_table=self.fail)
        pool.startService()
        reactor.pump()
        self.assertNotIn("--table", reactor.spawned[0].args)
        reactor.spawned[0].end(signal=9)


class ReportTests(SynchronousTestCase):
    """Kernel figures in ``statistics``, ``list totals`` and ``/metrics``,
    where rtpengine 10.5 shows its kernel module's."""

    STATS = {"currentstatistics": {"media_kernel": 2, "media_mixed": 1, "media_userspace": 3},
             "totalstatistics": {"relayedpackets": 100, "relayedbytes": 9000,
                                 "relayedpacketerrors": 2, "relayedpackets_kernel": 60,
                                 "relayedbytes_kernel": 5000, "relayedpacketerrors_kernel": 0}}

    def test_cli_totals(self):
        from omnirtp.cli.commands import totals

        text = totals(self.STATS, 6)
        for label, value in (("Total relayed packets (userspace)", 40),
                             ("Total relayed bytes (userspace)", 4000),
                             ("Total relayed packet errors (userspace)", 2),
                             ("Total relayed packets (kernel)", 60),
                             ("Total relayed bytes (kernel)", 5000),
                             ("Total relayed packets", 100),
                             ("Userspace-only media streams", 3),
                             ("Kernel-only media streams", 2),
                             ("Mixed kernel/userspace media streams", 1)):
            self.assertIn("\n %-48s:%d\n" % (label, value), text)

    def test_metrics(self):
        from prometheus_client.parser import text_string_to_metric_families
        from omnirtp.http.metrics import render

        found = {}
        for family in text_string_to_metric_families(render(self.STATS, [], 6).decode()):
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        self.assertEqual(
            [found[("rtpengine_packets_total", (("type", t),))] for t in ("userspace", "kernel")],
            [40, 60])
        self.assertEqual(
            [found[("rtpengine_bytes_total", (("type", t),))] for t in ("userspace", "kernel")],
            [4000, 5000])
        self.assertEqual([found[("rtpengine_mediastreams", (("type", t),))]
                          for t in ("userspace", "kernel", "mixed")], [3, 2, 1])
