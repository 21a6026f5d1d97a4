"""Tests for omnirtp.media.kernel (nftables rules as data) and the media
engine's use of an IForwarder.  No kernel here: the libnftables context is
a fake that records batches; test_kernel_netns runs the real thing."""

import errno
import json
import os
import random
import struct

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from omnirtp.errors import ConfigError
from omnirtp.interfaces import IForwarder
from omnirtp.media import kernel, nfnetlink
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.kernel import (
    KernelUnavailable, NftError, NftForwarder, Stream, add_commands, elements, keys,
    offloadable, plan, remove_commands, setup_commands, stop_commands)
from omnirtp.media.nfnetlink import NetlinkError, key_bytes
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
        Y=10.0.1.2:5000: each lookup keyed by what the ones before wrote,
        L's port in the packet until the last."""
        self.assertEqual(elements(S1), [
            ("daddr4", ("10.0.0.2", 4000, "10.0.0.1", 30000), "10.0.1.2"),
            ("sport4", ("10.0.0.2", 4000, "10.0.1.2", 30000), 30002),
            ("saddr4", ("10.0.0.2", 30002, "10.0.1.2", 30000), "10.0.0.1"),
            ("dport4", ("10.0.0.1", 30002, "10.0.1.2", 30000), 5000)])
        self.assertEqual([name for name, _k, _v in elements(S6)],
                         ["daddr6", "sport6", "saddr6", "dport6"])
        self.assertEqual(keys(S1), [(n, k) for n, k, _v in elements(S1)])
        self.assertEqual(kernel.counted_key(S1), key_bytes(elements(S1)[3][1]))

    def test_add_first_lookup_last(self):
        """Added in one batch, the first lookup's element last."""
        self.assertEqual(add_commands(T, S1), [
            element("add", "dport4", ("10.0.0.1", 30002, "10.0.1.2", 30000), 5000),
            element("add", "saddr4", ("10.0.0.2", 30002, "10.0.1.2", 30000), "10.0.0.1"),
            element("add", "sport4", ("10.0.0.2", 4000, "10.0.1.2", 30000), 30002),
            element("add", "daddr4", ("10.0.0.2", 4000, "10.0.0.1", 30000), "10.0.1.2")])

    def test_remove_in_two_steps(self):
        """Out: the first lookup's element (packets go to the socket again,
        the counter stops), then, once the counter is read, the rest."""
        self.assertEqual(stop_commands(T, S1), [
            element("delete", "daddr4", ("10.0.0.2", 4000, "10.0.0.1", 30000), "10.0.1.2")])
        self.assertEqual(remove_commands(T, S1), [
            element("delete", "sport4", ("10.0.0.2", 4000, "10.0.1.2", 30000), 30002),
            element("delete", "saddr4", ("10.0.0.2", 30002, "10.0.1.2", 30000), "10.0.0.1"),
            element("delete", "dport4", ("10.0.0.1", 30002, "10.0.1.2", 30000), 5000)])

    def test_plan(self):
        self.assertEqual(plan({}, {}, {}), ([], [], []))
        self.assertEqual(plan({}, {S1.local: S1, S2.local: S2}, {}), ([], [S1, S2], []))
        owners = {k: S1.local for k in keys(S1)}
        self.assertEqual(plan({S1.local: S1}, {S1.local: S1}, owners), ([], [], []))
        self.assertEqual(plan({S1.local: S1}, {}, owners), ([S1], [], []))
        moved = S1._replace(source=("10.0.0.9", 4100))
        self.assertEqual(plan({S1.local: S1}, {S1.local: moved}, owners), ([S1], [moved], []))

    def test_same_parties_in_two_calls(self):
        """The same two parties in two calls (one address pair each way,
        our sockets differ): no key in common, both go to the kernel."""
        other = Stream(("10.0.0.1", 30010), S1.source, ("10.0.0.1", 30012), S1.dest)
        back = Stream(("10.0.0.1", 30012), S1.dest, ("10.0.0.1", 30010), S1.source)
        self.assertFalse(set(keys(other)) & set(keys(S1)))
        self.assertEqual(plan({}, {S1.local: S1, S2.local: S2, other.local: other,
                                   back.local: back}, {}), ([], [S1, S2, other, back], []))
        # and a Y port in common (once the second lookup's key)
        self.assertFalse(set(keys(other._replace(dest=("10.0.9.9", 5000)))) & set(keys(S1)))

    def test_plan_refuses_shared_keys(self):
        """A stream whose lookups another stream (of any call) already
        answers stays in userspace: here the same party sends from one port
        to two of our sockets with one port number on two addresses, and
        both go to the same Y address."""
        other = Stream(("10.0.5.1", 30000), ("10.0.0.2", 4000), ("10.0.5.1", 30002),
                       ("10.0.1.2", 7000))
        self.assertEqual(keys(other)[1], keys(S1)[1])  # sport4: X, Y's address, L's port
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
        """Our table: eight maps (the dport ones counted) and three base
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
            ("daddr4", "ipv4_addr", False), ("sport4", "inet_service", False),
            ("saddr4", "ipv4_addr", False), ("dport4", "inet_service", True)])
        self.assertEqual(maps[0]["type"], v4)
        self.assertEqual([m["name"] for m in maps[4:]], ["daddr6", "sport6", "saddr6", "dport6"])
        rules = [c["add"]["rule"] for c in cmds if "rule" in c["add"]]
        self.assertEqual([r["chain"] for r in rules], ["pre", "pre", "post", "post", "in", "in"])
        pre4 = rules[0]["expr"]
        self.assertEqual([list(e)[0] for e in pre4], ["match", "mangle", "notrack", "accept"])
        self.assertEqual(pre4[1]["mangle"]["key"], {"payload": {"protocol": "ip",
                                                                "field": "daddr"}})
        self.assertEqual(pre4[1]["mangle"]["value"]["map"]["data"], "@daddr4")
        post4 = rules[2]["expr"]
        self.assertEqual([list(e)[0] for e in post4], ["match", "mangle", "mangle", "mangle",
                                                        "accept"])
        self.assertEqual([(m["mangle"]["key"]["payload"]["field"],
                           m["mangle"]["value"]["map"]["data"]) for m in post4[1:4]],
                         [("sport", "@sport4"), ("saddr", "@saddr4"), ("dport", "@dport4")])
        self.assertEqual(rules[4]["expr"], post4)  # in: the same, for a Y on this host
        self.assertEqual(rules[3]["expr"][2]["mangle"]["key"],
                         {"payload": {"protocol": "ip6", "field": "saddr"}})


def nla(kind, payload, nested=False):
    """A netlink attribute as the kernel writes it (padded to 4 bytes)."""
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind | (0x8000 if nested else 0)) + payload \
        + b"\0" * (-size & 3)


def nlmsg(kind, seq, payload, flags=0):
    return struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload


def element_attr(key, packets, octets, listed=False):
    """One counted element of a dump: its key and its counter (as one
    expression, or in an expression list)."""
    counter = nla(1, b"counter\0") + nla(2, nla(1, struct.pack(">Q", octets))
                                         + nla(2, struct.pack(">Q", packets)), True)
    expr = nla(11, nla(1, counter, True), True) if listed else nla(7, counter, True)
    return nla(1, nla(1, nla(1, key), True) + nla(2, nla(1, b"\x0a\0\0\x01"), True)
               + expr, True)


class NetlinkTests(SynchronousTestCase):
    """omnirtp.media.nfnetlink: GETSETELEM requests and their answers as
    bytes (the netns test reads a real kernel's)."""

    def test_key_bytes(self):
        self.assertEqual(key_bytes(("10.0.0.2", 4000, "10.0.0.1", 5000)),
                         bytes([10, 0, 0, 2, 0x0f, 0xa0, 0, 0, 10, 0, 0, 1, 0x13, 0x88, 0, 0]))
        v6 = key_bytes(("2001:db8::2", 1, "2001:db8::1", 2))
        self.assertEqual((len(v6), v6[:2], v6[16:20], v6[36:]),
                         (40, b"\x20\x01", b"\0\x01\0\0", b"\0\x02\0\0"))

    def test_dump_request(self):
        msg = nfnetlink.request(7, "omnirtp-0", "daddr4")
        size, kind, flags, seq, pid = struct.unpack_from("=IHHII", msg)
        self.assertEqual((size, kind, flags, seq, pid),
                         (len(msg), (10 << 8) | 13, 0x1 | 0x300, 7, 0))
        self.assertEqual(msg[16:20], b"\x01\0\0\0")  # NFPROTO_INET, version 0
        self.assertEqual(msg[20:], nla(1, b"omnirtp-0\0") + nla(2, b"daddr4\0"))

    def test_get_request(self):
        keys = [b"k" * 16, b"j" * 16]
        msg = nfnetlink.request(8, "omnirtp-0", "daddr4", keys)
        self.assertEqual(struct.unpack_from("=IHHII", msg)[2], 0x1 | 0x4)  # request, ack
        elems = b"".join(nla(1, nla(1, nla(1, k), True), True) for k in keys)
        self.assertEqual(msg[20:], nla(1, b"omnirtp-0\0") + nla(2, b"daddr4\0")
                         + nla(3, elems, True))

    def answer(self, seq, *elements):
        body = b"\x01\0\0\0" + nla(1, b"omnirtp-0\0") + nla(2, b"daddr4\0") \
            + nla(3, b"".join(elements), True)
        return nlmsg((10 << 8) | 12, seq, body, flags=0x2)

    def test_parse_dump(self):
        """Each element's key and counter; the dump ends with NLMSG_DONE;
        another request's messages are skipped."""
        k1, k2, k3 = b"a" * 16, b"b" * 40, b"c" * 16
        found = {}
        data = (self.answer(3, element_attr(k1, 7, 420), element_attr(k2, 12345678901, 9, True))
                + self.answer(2, element_attr(k3, 1, 1)))
        self.assertFalse(nfnetlink.parse(data, found, 3))
        self.assertEqual(found, {k1: (7, 420), k2: (12345678901, 9)})
        no_counter = nla(1, nla(1, nla(1, k3), True), True)
        self.assertTrue(nfnetlink.parse(self.answer(3, no_counter)
                                        + nlmsg(3, 3, b"\0\0\0\0"), found, 3))
        self.assertEqual(len(found), 2)

    def test_parse_ack_and_error(self):
        """A lookup ends with its acknowledgement (error 0); an error
        raises NetlinkError with the kernel's errno."""
        found = {}
        ack = nlmsg(2, 4, struct.pack("=i", 0) + bytes(16))
        self.assertTrue(nfnetlink.parse(self.answer(4, element_attr(b"a" * 16, 1, 2)) + ack,
                                        found, 4))
        self.assertEqual(found, {b"a" * 16: (1, 2)})
        e = self.assertRaises(NetlinkError, nfnetlink.parse,
                              nlmsg(2, 5, struct.pack("=i", -errno.ENOENT) + bytes(16)), {}, 5)
        self.assertEqual((e.errno, str(e)), (errno.ENOENT, "netlink: No such file or directory"))
        # a stale error of an earlier request is not this one's
        self.assertFalse(nfnetlink.parse(
            nlmsg(2, 4, struct.pack("=i", -errno.ENOENT) + bytes(16)), {}, 5))

    def test_parse_truncated(self):
        """Garbage and truncated attributes end the parse, never raise."""
        good = self.answer(1, element_attr(b"a" * 16, 1, 2))
        for cut in range(0, len(good), 7):
            nfnetlink.parse(good[:cut], {}, 1)
        nfnetlink.parse(struct.pack("=IHHII", 2, 0, 0, 1, 0) + b"xx", {}, 1)


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
    the kernel's counters hold, read as a ``CounterReader`` reads them
    (``dump``, ``get``); ``fail`` makes the next batch raise."""

    def __init__(self, table=T):
        self.table = table
        self.batches = []
        self.counts = {}
        self.fail = None
        #: the counter reads: "list MAP" (a dump of a map) or "get MAP" (a lookup)
        self.reads = []
        #: ``list tables inet`` shows these
        self.tables = []
        #: what ``list chains inet`` shows
        self.chains = ""

    def run(self, text, text_output=False):
        if text == "list tables inet":
            return "".join("table inet %s\n" % name for name in self.tables)
        if text == "list chains inet":
            assert text_output
            return self.chains
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise NftError(error)
        self.batches.append(json.loads(text)["nftables"])
        return ""

    def dump(self, table, name):
        assert table == self.table
        self.reads.append("list " + name)
        return {key_bytes(k): ip_counts(k, v) for k, v in self.counts.items()
                if (":" in k[0]) == name.endswith("6")}

    def get(self, table, name, wanted):
        assert table == self.table
        self.reads.append("get " + name)
        by_bytes = {key_bytes(k): k for k in self.counts}
        out = {}
        for item in wanted:
            if item not in by_bytes:
                raise NetlinkError(errno.ENOENT)
            out[item] = ip_counts(by_bytes[item], self.counts[by_bytes[item]])
        return out


def counted(stream):
    """The key of a stream's counted element (dport)."""
    return elements(stream)[3][1]


class ForwarderTests(SynchronousTestCase):
    def setUp(self):
        self.nft = FakeNft()
        self.fw = NftForwarder(0, nft=self.nft, proc=proc(self), reader=self.nft)

    def test_verify(self):
        self.assertTrue(verifyObject(IForwarder, self.fw))

    def test_negative_table(self):
        self.assertRaises(ValueError, NftForwarder, -1)

    def test_start_replaces_table(self):
        """Start: whatever our table held is deleted (a crash's rules), then
        it is made again."""
        self.fw.start()
        self.assertEqual(self.nft.batches, [kernel.drop_commands(T),
                                            setup_commands(T, kernel.owner_chain())])
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
        other = Stream(("10.0.5.1", 30000), ("10.0.0.2", 4000), ("10.0.5.1", 30002),
                       ("10.0.1.2", 7000))  # S1's X, L's port, Y's address
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
        self.nft.counts = {counted(S1): (5, 500), counted(S2): (3, 300)}
        self.assertEqual(self.fw.counters(), {S1.local: (5, 500), S2.local: (3, 300)})
        self.fw.offload("c1", [S1])
        self.assertEqual(self.nft.batches[-2:], [stop_commands(T, S2), remove_commands(T, S2)])
        self.nft.counts = {counted(S1): (6, 600)}
        self.assertEqual(self.fw.counters(), {S1.local: (6, 600), S2.local: (3, 300)})
        self.fw.offload("c1", [S1, S2])
        self.nft.counts = {counted(S1): (6, 600), counted(S2): (2, 200)}
        self.assertEqual(self.fw.counters(), {S1.local: (6, 600), S2.local: (5, 500)})
        # a party that moved: out and in again; the count goes on
        moved = S1._replace(source=("10.0.0.9", 4100))
        self.fw.offload("c1", [moved, S2])
        self.assertEqual(self.nft.batches[-2:], [
            stop_commands(T, S1), remove_commands(T, S1) + add_commands(T, moved)])
        self.nft.counts = {counted(moved): (1, 100), counted(S2): (2, 200)}
        self.assertEqual(self.fw.counters(), {S1.local: (7, 700), S2.local: (5, 500)})
        self.fw.offload("c1", [])
        self.assertEqual(self.fw.offloaded(), {})
        self.fw.forget(S1.local)
        self.assertEqual(self.fw.counters(), {S2.local: (5, 500)})

    def test_offload_calls_one_batch(self):
        """Several calls (the tick): one batch; a stream whose keys an
        earlier call of the same batch takes stays in userspace."""
        self.fw.start()
        other = Stream(("10.0.5.1", 30000), ("10.0.0.2", 4000), ("10.0.5.1", 30002),
                       ("10.0.1.2", 7000))  # S1's X, L's port, Y's address
        S3 = Stream(("10.0.0.1", 30020), ("10.0.0.3", 4000), ("10.0.0.1", 30022),
                    ("10.0.1.3", 5000))
        self.assertEqual(self.fw.offload_calls({"c1": [S1, S2], "c2": [other], "c3": [S3]}), {})
        self.assertEqual(self.nft.batches[2:], [
            add_commands(T, S1) + add_commands(T, S2) + add_commands(T, S3)])
        self.assertEqual((self.fw.offloaded("c2"), self.fw.refused), ({}, 1))
        # c1 leaves and c3 changes: one stop batch, one read, one batch
        moved = S3._replace(source=("10.0.0.9", 4100))
        self.nft.counts = {counted(S1): (1, 10), counted(S2): (2, 20), counted(S3): (3, 30)}
        self.assertEqual(self.fw.offload_calls({"c1": [], "c3": [moved]}), {})
        self.assertEqual(self.nft.batches[3:], [
            stop_commands(T, S1) + stop_commands(T, S2) + stop_commands(T, S3),
            remove_commands(T, S1) + remove_commands(T, S2) + remove_commands(T, S3)
            + add_commands(T, moved)])
        self.assertEqual(self.nft.reads, ["get dport4"])
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
        """A query reads its call's counted elements only (a lookup); a
        stream that leaves has its own element read; a full read dumps the
        maps that hold streams."""
        self.fw.start()
        self.fw.offload("c1", [S1])
        self.fw.offload("c2", [S2])
        self.nft.counts = {counted(S1): (5, 500), counted(S2): (3, 300)}
        self.assertEqual(self.fw.counters(locals=[S1.local, ("10.0.0.1", 30001)]),
                         {S1.local: (5, 500)})
        self.assertEqual(self.nft.reads, ["get dport4"])
        self.assertEqual(self.fw.counters(fresh=False), {S1.local: (5, 500), S2.local: (0, 0)})
        self.assertEqual(self.fw.counters(), {S1.local: (5, 500), S2.local: (3, 300)})
        self.assertEqual(self.nft.reads, ["get dport4", "list dport4"])  # no IPv6 stream
        self.nft.counts[counted(S1)] = (7, 700)
        self.fw.offload("c1", [])
        self.assertEqual(self.nft.reads, ["get dport4", "list dport4", "get dport4"])
        self.assertEqual(self.fw.counters(fresh=False), {S1.local: (7, 700), S2.local: (3, 300)})
        self.assertEqual(self.fw.counters(locals=[S1.local]), {S1.local: (7, 700)})
        self.assertEqual(len(self.nft.reads), 3)  # S1 is not in the kernel: no read
        self.fw.offload("c3", [S6])
        self.nft.counts[counted(S6)] = (1, 100)
        self.fw.counters()
        self.assertEqual(self.nft.reads[3:], ["list dport4", "list dport6"])
        self.assertEqual(self.fw.counters(locals=[S6.local, S2.local]),
                         {S6.local: (1, 100), S2.local: (3, 300)})
        self.assertEqual(self.nft.reads[5:], ["get dport4", "get dport6"])

    def test_payload_counts(self):
        """The kernel counts IP packets; userspace (and rtpengine) UDP
        payloads: the headers come off (keys as the kernel holds them)."""
        v4, v6 = key_bytes(counted(S1)), key_bytes(counted(S6))
        self.assertEqual((len(v4), len(v6)), (16, 40))
        self.assertEqual(kernel.payload_counts({
            v4: (3, 3 * (28 + 172)), v6: (2, 2 * (48 + 160)), b"\0" * 16: (0, 0)}), {
            v4: (3, 3 * 172), v6: (2, 2 * 160), b"\0" * 16: (0, 0)})

    def test_missing_element_lists_the_map(self):
        """An element gone from the kernel fails the lookup: the maps are
        dumped instead (what is not there counts as nothing new)."""
        self.fw.start()
        self.fw.offload("c1", [S1, S2])
        self.nft.counts = {counted(S1): (5, 500)}
        self.assertEqual(self.fw.counters(locals=[S1.local, S2.local]),
                         {S1.local: (5, 500), S2.local: (0, 0)})
        self.assertEqual(self.nft.reads, ["get dport4", "list dport4"])

    def test_read_refused(self):
        """A read the kernel refuses is an NftError (the engine logs it)."""
        self.fw.start()
        self.fw.offload("c1", [S1])

        def refuse(table, name):
            raise NetlinkError(errno.EPERM)

        self.nft.dump = refuse
        e = self.assertRaises(NftError, self.fw.counters)
        self.assertEqual(str(e), "netlink: Operation not permitted")

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


class _ForwardingEngine(SynchronousTestCase):
    """An engine on a fake network whose forwarder is an NftForwarder over a
    FakeNft, on a memory reactor's clock."""

    #: the engine's port range on HOST
    ports = (30000, 30009)

    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.reactor.advance(500.0)
        self.net = FakeNetwork()
        self.nft = FakeNft()
        self.fw = NftForwarder(0, nft=self.nft, proc=proc(self), reader=self.nft)
        self.fw.start()
        self.forwarder_started()
        self.engine = EmbeddedEngine(self.reactor, {HOST: self.ports}, bind=self.net.bind,
                                     rng=random.Random(4), forwarder=self.fw)
        self.addCleanup(self.engine.close)

    def forwarder_started(self):
        """Called with the forwarder started, before the engine is made."""


class EngineTests(_ForwardingEngine):
    """The engine hands a call's plain, confirmed streams to its forwarder."""

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
        self.nft.counts = {counted(Stream((HOST, a), A, (HOST, b), B)): (10, 400)}
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


class EngineTimingTests(_ForwardingEngine):
    """When the engine looks at its calls and reads the kernel's counters
    (the reactor's clock): offload checks only for calls whose sockets saw
    packets, counter reads only when something needs them."""

    ports = (30000, 30039)

    def forwarder_started(self):
        self.checked = []
        offload_calls = self.fw.offload_calls

        def spy(calls):
            self.checked.append(sorted(calls))
            return offload_calls(calls)

        self.fw.offload_calls = spy

    def call(self, call_id, n):
        a, b = self.successResultOf(self.engine.allocate(call_id, HOST, 2))
        pa, pb = ("10.0.0.%d" % (10 + n), 4000), ("10.0.1.%d" % (10 + n), 5000)
        self.successResultOf(self.engine.configure(call_id, [
            {"local": (HOST, a), "peer": (HOST, b), "endpoint": pa, "learning": "immediate"},
            {"local": (HOST, b), "peer": (HOST, a), "endpoint": pb, "learning": "immediate"}]))
        return Stream((HOST, a), pa, (HOST, b), pb), Stream((HOST, b), pb, (HOST, a), pa)

    def send(self, stream, count=1):
        for _ in range(count):
            self.net.inject(stream.local, RTP, stream.source)
        self.net.pump(self.reactor)

    def offloaded_calls(self):
        one, two = self.call("c1", 1), self.call("c2", 2)
        for stream in one + two:
            self.send(stream)
        self.reactor.advance(1.0)
        self.assertEqual(len(self.fw.offloaded()), 4)
        # the kernel's elements, their counters at zero
        self.nft.counts = {counted(stream): (0, 0) for stream in one + two}
        return one, two

    def test_checks_calls_that_saw_packets(self):
        """A tick hands over only the calls whose sockets saw packets since
        the tick before; a call in the kernel (or silent) costs nothing."""
        one, two = self.call("c1", 1), self.call("c2", 2)
        self.assertEqual(self.checked, [["c1"], ["c2"]])  # each configuration
        self.reactor.advance(3.0)
        self.assertEqual(self.checked, [["c1"], ["c2"]])
        self.send(one[0])
        self.reactor.advance(1.0)
        self.assertEqual(self.checked[2:], [["c1"]])  # one party: nothing to offload yet
        self.send(one[1])
        self.reactor.advance(1.0)
        self.assertEqual(self.checked[3:], [["c1"]])
        self.assertEqual(set(self.fw.offloaded()), {one[0].local, one[1].local})
        self.reactor.advance(5.0)  # c1 in the kernel, c2 silent
        self.assertEqual(self.checked[4:], [])
        self.send(two[0])
        self.send(two[1])
        self.reactor.advance(1.0)
        self.assertEqual(self.checked[4:], [["c2"]])
        self.assertEqual(len(self.fw.offloaded()), 4)
        self.send(one[0])  # a stray packet in userspace: looked at again
        self.reactor.advance(1.0)
        self.assertEqual(self.checked[5:], [["c1"]])
        self.assertEqual(len(self.fw.offloaded()), 4)

    def test_refused_call_checked_again(self):
        """A call the kernel refused is checked at the next tick without
        new packets."""
        one = self.call("c1", 1)
        self.send(one[0])
        self.send(one[1])
        self.nft.fail = "No buffer space available"
        self.reactor.advance(1.0)
        self.assertEqual(self.fw.offloaded(), {})
        self.reactor.advance(1.0)
        self.assertEqual(self.checked, [["c1"], ["c1"], ["c1"]])  # configure, ticks
        self.assertEqual(len(self.fw.offloaded()), 2)
        self.reactor.advance(1.0)
        self.assertEqual(len(self.checked), 3)
        # a configuration the kernel refused: the next tick tries again
        self.nft.fail = "Device or resource busy"
        self.successResultOf(self.engine.configure("c1", [
            {"local": one[0].local, "peer": one[1].local, "endpoint": one[0].source,
             "learning": "immediate", "reset": True}]))
        self.assertEqual(len(self.fw.offloaded()), 2)  # still in the kernel
        self.reactor.advance(1.0)
        self.assertEqual((len(self.checked), self.fw.offloaded()), (5, {}))
        self.reactor.advance(1.0)
        self.assertEqual(len(self.checked), 5)
        self.send(one[0])  # confirmed again
        self.reactor.advance(1.0)
        self.assertEqual(len(self.checked), 6)
        self.assertEqual(len(self.fw.offloaded()), 2)

    def test_counters_read_on_demand(self):
        """No tick reads counters but one every KERNEL_REFRESH seconds (a
        dump of the map); a call's stats read its elements; totals read
        everything unless they did less than KERNEL_CACHE ago."""
        from omnirtp.media.engine import KERNEL_CACHE, KERNEL_REFRESH

        self.offloaded_calls()
        self.assertEqual(self.nft.reads, ["list dport4"])  # the first tick's
        del self.nft.reads[:]
        self.reactor.advance(KERNEL_REFRESH - 1)
        self.assertEqual(self.nft.reads, [])
        self.reactor.advance(1.0)
        self.assertEqual(self.nft.reads, ["list dport4"])
        self.reactor.advance(KERNEL_REFRESH - 1)
        self.assertEqual(self.nft.reads, ["list dport4"])
        self.successResultOf(self.engine.stats(None))  # as last read
        self.assertEqual(self.nft.reads, ["list dport4"])
        self.successResultOf(self.engine.stats("c1"))
        self.assertEqual(self.nft.reads, ["list dport4", "get dport4"])
        del self.nft.reads[:]
        self.successResultOf(self.engine.totals())
        self.assertEqual(self.nft.reads, ["list dport4"])
        self.reactor.advance(KERNEL_CACHE / 2)
        self.successResultOf(self.engine.totals())
        self.assertEqual(self.nft.reads, ["list dport4"])
        self.reactor.advance(KERNEL_CACHE / 2)
        self.successResultOf(self.engine.totals())
        self.assertEqual(self.nft.reads, ["list dport4"] * 2)
        # totals' read counts as the refresh: the next is KERNEL_REFRESH later
        self.reactor.advance(KERNEL_REFRESH - 1)
        self.assertEqual(len(self.nft.reads), 2)
        self.reactor.advance(1.0)
        self.assertEqual(len(self.nft.reads), 3)

    def test_kernel_traffic_stamps_last_packet(self):
        """A counter that moved between two reads stamps its socket's
        ``last_packet`` with the time of the read that saw it move."""
        from omnirtp.media.engine import KERNEL_REFRESH

        one, two = self.offloaded_calls()
        start = self.reactor.seconds()
        self.nft.counts[counted(one[0])] = (10, 400)
        self.reactor.advance(KERNEL_REFRESH)
        stats = self.successResultOf(self.engine.stats(None))
        self.assertEqual(stats["c1"][one[0].local]["last_packet"], start + KERNEL_REFRESH)
        self.assertEqual(stats["c2"][two[0].local]["last_packet"], start - 1.0)
        self.assertEqual(stats["c1"][one[0].local]["kernel"], {"packets": 10, "bytes": 400})
        # between refreshes, all calls' stats are as last read ...
        self.nft.counts[counted(one[0])] = (15, 600)
        self.reactor.advance(2.0)
        stats = self.successResultOf(self.engine.stats(None))
        self.assertEqual(stats["c1"][one[0].local]["kernel"], {"packets": 10, "bytes": 400})
        self.assertEqual(stats["c1"][one[0].local]["last_packet"], start + KERNEL_REFRESH)
        # ... and one call's are read now
        stats = self.successResultOf(self.engine.stats("c1"))
        self.assertEqual(stats["c1"][one[0].local]["kernel"], {"packets": 15, "bytes": 600})
        self.assertEqual(stats["c1"][one[0].local]["last_packet"], start + KERNEL_REFRESH + 2)
        self.successResultOf(self.engine.stats("c1"))  # nothing moved: no stamp
        self.reactor.advance(1.0)
        stats = self.successResultOf(self.engine.stats("c1"))
        self.assertEqual(stats["c1"][one[0].local]["last_packet"], start + KERNEL_REFRESH + 2)


class _Config:
    def __init__(self, table, no_fallback=False, num_threads=0):
        self.table, self.no_fallback, self.num_threads = table, no_fallback, num_threads


class BuildTests(SynchronousTestCase):
    def test_off(self):
        self.assertIsNone(build_forwarder(_Config(-1), make=self.fail, drop_orphans=list))

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


def fake_proc(test, processes, zombies=()):
    """A /proc with ``{pid: start time}`` processes (``zombies``: ended,
    not reaped yet)."""
    root = test.mktemp()
    for pid, start in processes.items():
        os.makedirs(os.path.join(root, str(pid)))
        fields = ["Z" if pid in zombies else "S"] + ["0"] * 18 + [str(start)] + ["0"] * 10
        with open(os.path.join(root, str(pid), "stat"), "w") as f:
            f.write("%d (twistd (x)) %s\n" % (pid, " ".join(fields)))
    return root


CHAINS = """table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
	}
}
table inet omnirtp-0 {
	chain owner-100-5000 {
	}
	chain pre {
		type filter hook prerouting priority raw; policy accept;
	}
}
table inet omnirtp-0-w1 {
	chain owner-101-6000 {
	}
}
table inet omnirtp-1 {
	chain owner-102-7000 {
	}
}
table inet omnirtp-2 {
	chain pre {
	}
}
table inet other {
	chain owner-103-8000 {
	}
}
"""


class OrphanTests(SynchronousTestCase):
    """``table = -1`` deletes the tables whose omnirtp process is gone."""

    def test_owner_chain(self):
        """Our table names its owner: pid and start time."""
        root = fake_proc(self, {42: 777})
        self.assertEqual(kernel.owner_chain(42, root), "owner-42-777")
        self.assertEqual(kernel.process_start(43, root), None)
        start = kernel.process_start(os.getpid())
        self.assertEqual(kernel.owner_chain(), "owner-%d-%d" % (os.getpid(), start))
        cmds = setup_commands(T, "owner-42-777")
        self.assertEqual(cmds[1], {"add": {"chain": {"family": "inet", "table": T,
                                                     "name": "owner-42-777"}}})
        self.assertEqual(cmds[:1] + cmds[2:], setup_commands(T))

    def test_orphans(self):
        """Gone: no such pid (omnirtp-0-w1), or the pid is another
        process's now (omnirtp-0: another start time); omnirtp-1's owner
        lives; omnirtp-2 names no owner, ``other`` is not ours."""
        self.assertEqual(kernel.parse_owners(CHAINS), {
            "filter": None, "omnirtp-0": "owner-100-5000", "omnirtp-0-w1": "owner-101-6000",
            "omnirtp-1": "owner-102-7000", "omnirtp-2": None, "other": "owner-103-8000"})
        root = fake_proc(self, {100: 5001, 102: 7000})
        self.assertEqual(kernel.orphans(CHAINS, root), ["omnirtp-0", "omnirtp-0-w1"])
        # a killed worker nobody reaped yet (its parent was killed too) is gone
        root = fake_proc(self, {100: 5000, 101: 6000, 102: 7000}, zombies={101})
        self.assertEqual(kernel.orphans(CHAINS, root), ["omnirtp-0-w1"])
        self.assertEqual(kernel.orphans("", root), [])

    def test_drop_orphans(self):
        nft = FakeNft()
        nft.chains = CHAINS
        root = fake_proc(self, {102: 7000})
        self.assertEqual(kernel.drop_orphans(nft, root), ["omnirtp-0", "omnirtp-0-w1"])
        self.assertEqual(nft.batches, [kernel.drop_commands("omnirtp-0")
                                       + kernel.drop_commands("omnirtp-0-w1")])
        nft = FakeNft()
        nft.chains = CHAINS
        self.assertEqual(kernel.drop_orphans(
            nft, fake_proc(self, {100: 5000, 101: 6000, 102: 7000})), [])
        self.assertEqual(nft.batches, [])

    def test_table_off_drops_orphans(self):
        """build_forwarder with table = -1: the cleanup, one log line when it
        deleted something; nothing without libnftables or privileges."""
        from twisted.logger import globalLogPublisher

        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        self.assertIsNone(build_forwarder(_Config(-1), make=self.fail,
                                          drop_orphans=lambda: ["omnirtp-0"]))
        texts = [e.get("log_format", "") for e in seen if "tables" in e]
        self.assertEqual(len(texts), 1)
        self.assertIn("deleted the nftables tables", texts[0])
        del seen[:]
        for error in (KernelUnavailable("libnftables is not installed"),
                      NftError("Operation not permitted")):
            def refuse(error=error):
                raise error
            self.assertIsNone(build_forwarder(_Config(-1), make=self.fail, drop_orphans=refuse))
        self.assertEqual([e for e in seen if "tables" in e], [])


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
            + kernel.drop_commands("omnirtp-0-w1"), setup_commands(T, kernel.owner_chain())])

    def test_worker_start_drops_its_own(self):
        nft = FakeNft("omnirtp-0-w1")
        nft.tables = ["omnirtp-0-w0", "omnirtp-0-w1"]
        fw = NftForwarder(0, nft=nft, proc=proc(self), worker=1)
        fw.start()
        self.assertEqual(fw.table, "omnirtp-0-w1")
        self.assertEqual(nft.batches, [kernel.drop_commands("omnirtp-0-w1"),
                                       setup_commands("omnirtp-0-w1", kernel.owner_chain())])
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
