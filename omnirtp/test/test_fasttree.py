"""omnirtp.control._fasttree: a call's statistics tree in C gives what
commands.py's _call_tree gives, or leaves the call to it."""

import gc
import sys

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.call.model import Media
from omnirtp.control import commands
from omnirtp.control.commands import Dispatcher
from omnirtp.test import corpus
from omnirtp.test.test_commands import embedded_stack

_fast = commands._fast_tree


def _same(a, b, where="tree"):
    """Raise AssertionError unless ``a`` and ``b`` are the same tree object
    for object: the same types everywhere, equal values, dict keys and set
    members in the same order (test_fastflags compares Flags fields so)."""
    if type(a) is not type(b):
        raise AssertionError("%s: %r is not %r" % (where, type(a), type(b)))
    if isinstance(a, dict):
        if list(a) != list(b):
            raise AssertionError("%s: keys %r, not %r" % (where, list(a), list(b)))
        for key in a:
            _same(a[key], b[key], "%s[%r]" % (where, key))
    elif isinstance(a, (set, frozenset)):
        if a != b or list(a) != list(b):
            raise AssertionError("%s: %r, not %r" % (where, a, b))
        for x, y in zip(a, b):
            _same(x, y, where + " member")
    elif isinstance(a, (list, tuple)):
        if len(a) != len(b):
            raise AssertionError("%s: %r, not %r" % (where, a, b))
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, "%s[%d]" % (where, i))
    elif a != b:
        raise AssertionError("%s: %r, not %r" % (where, a, b))


def assert_no_leak(test, objects, once, warm, times):
    """``once()`` called ``times`` times (after ``warm`` times) leaves no
    allocated block behind (fewer than 50: the interpreter's own) and the
    reference counts of ``objects`` as they were.  The collector is run
    first and kept off meanwhile: garbage of earlier tests that it frees
    in the middle would move the counts of shared objects (an interned
    address string) without any leak here."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        counts = [sys.getrefcount(o) for o in objects]
        for _ in range(warm):
            once()
        before = sys.getallocatedblocks()
        for _ in range(times):
            once()
        after = sys.getallocatedblocks()
    finally:
        if enabled:
            gc.enable()
    test.assertLess(after - before, 50)
    test.assertEqual([sys.getrefcount(o) for o in objects], counts)


def _python(call, stats):
    try:
        return ("value", commands._call_tree(call, stats))
    except Exception as e:
        return ("error", type(e), str(e))


def _media_keys(call):
    """Every (address, port) key the tree looks up for ``call``."""
    keys = []
    for ml in call.monologues:
        for m in ml.medias:
            if m.rtp_port is not None:
                keys.append((m.interface.address, m.rtp_port))
                keys.append((m.interface.address, m.rtp_port + 1))
    return keys


def _stats_variants(call):
    """Counters for ``call``'s sockets as the engine gives them, and odd
    ones (other types, missing keys) the C tree must leave to Python."""
    keys = _media_keys(call)
    out = [{}, {("nowhere", 1): {"packets": 1}}]
    full = {}
    for n, key in enumerate(keys):
        full[key] = {"packets": 10 + n, "bytes": 1720 + n, "errors": n % 2,
                     "last_packet": 1700000000.75 + n, "confirmed": n % 3 == 0,
                     "endpoint": ("192.0.2.%d" % n, 4000 + n) if n % 2 else ("2001:db8::1", 9),
                     "transforms": {"srtp": {"auth": n}} if n % 4 == 1 else None,
                     "ice": {"state": "completed", "counters": {"checks": n}, "more": 1}
                     if n % 3 == 1 else {},
                     "rtcp": {"reports": [n]} if n % 2 == 0 else None}
    out.append(full)
    # the same with one counter changed in each way
    odd_values = [
        ("packets", 1.5), ("bytes", True), ("errors", None), ("last_packet", "12"),
        ("last_packet", float("inf")), ("endpoint", ["192.0.2.1", 5]),
        ("endpoint", ("192.0.2.1",)), ("endpoint", (b"192.0.2.1", 5)), ("endpoint", ()),
        ("endpoint", 0), ("confirmed", [1]), ("ice", {"state": "x"}), ("ice", [1]),
        ("transforms", 0), ("rtcp", ""),
        # a stream that received media: the SSRC and codec are Python's
        ("ssrc", 0xB0B0B0B1), ("ssrc", 0), ("rtcp ssrc", 0xFEEDFACE),
        ("payload types", {0: 3}),
    ]
    for n, key in enumerate(keys[:4]):
        for name, value in odd_values:
            variant = dict(full)
            counter = dict(full[key])
            counter[name] = value
            variant[key] = counter
            out.append(variant)
        for name in ("packets", "bytes", "errors", "last_packet", "endpoint", "confirmed"):
            variant = dict(full)
            counter = dict(full[key])
            del counter[name]
            variant[key] = counter
            out.append(variant)
        for counter in ({}, None, 0, [("packets", 1)]):
            variant = dict(full)
            variant[key] = counter
            out.append(variant)
    return out


class Stack:
    """The control plane on an EmbeddedEngine with fake sockets, each
    call's tree compared when the dispatcher asks for it."""

    def __init__(self, test):
        embedded_stack(self, ports=(30000, 31999))
        self.test = test
        original = self.dispatch.call_tree

        def compared(call, stats):
            test.compare(call, stats)
            return original(call, stats)
        self.dispatch.call_tree = compared

    def request(self, request):
        d = self.dispatch(request)
        result = []
        d.addBoth(result.append)
        return result[0] if result else None


class FastTreeTests(SynchronousTestCase):

    if _fast is None:
        skip = "omnirtp.control._fasttree is not built (make ext)"

    def setUp(self):
        self.taken = self.left = self.sdes = 0

    def compare(self, call, stats):
        """The C tree of ``call`` is the Python tree's twin, or None where
        the Python tree takes it (then: any error is Python's)."""
        fast = _fast(call, stats)
        want = _python(call, stats)
        if any(isinstance(m, Media) and m.srtp_in is not None
               for ml in getattr(call, "monologues", ()) for m in ml.medias):
            # SDES in use (the tree's "crypto suite" and "SDES"): Python's
            self.sdes += 1
            self.assertIsNone(fast)
        if fast is None:
            self.left += 1
            return want
        self.taken += 1
        self.assertEqual(want[0], "value", "C gave a tree where Python raises %r" % (want,))
        _same(fast, want[1])
        return want

    def compareAll(self, stack, prefix):
        """Every call of the registry whose id starts with ``prefix``, with
        every stats variant."""
        for call_id, call in list(stack.registry.calls.items()):
            if not call_id.startswith(prefix):
                continue
            for stats in _stats_variants(call):
                self.compare(call, stats)
            self.compare(call, stack.engine.stats_now(call.call_id).get(call.call_id, {}))

    def test_corpus(self):
        """Every corpus case, each call compared after every request (with
        the engine's counters and the variants) and at its delete."""
        stack = Stack(self)
        for case in corpus.CASES:
            for request in case.requests:
                stack.request(corpus.prepare(request, "t-" + case.name))
                self.compareAll(stack, "t-%s-" % case.name)
            stack.request({"command": "query",
                           "call-id": "t-%s-c1" % case.name})
            stack.request({"command": "delete", "call-id": "t-%s-c1" % case.name,
                           "from-tag": "ft1"})
        # most trees are C's; SDES calls and the odd counters are Python's
        self.assertGreater(self.taken, 2000)
        self.assertGreater(self.left, 500)
        self.assertGreater(self.sdes, 10)

    def _plain_call(self, stack, call_id="p"):
        stack.request(corpus.prepare(corpus.offer(corpus.SIP_OFFER), call_id))
        stack.request(corpus.prepare(corpus.answer(corpus.SIP_ANSWER), call_id))
        return stack.registry.calls["%s-c1" % call_id]

    def test_monologueShapes(self):
        """Untagged monologues, aliases, a via-branch, a peer without a tag,
        subscribers, fractional and integer times: the same tree."""
        stack = Stack(self)
        call = self._plain_call(stack)
        a, b = call.monologues
        self.assertIsNotNone(_fast(call, {}))
        a.via_branch = "z9hG4bK1"
        b.aliases = ["x", "y"]
        self.compare(call, {})
        b.tag = ""
        a.tag = None
        self.compare(call, {})
        self.assertEqual(sorted(_fast(call, {})["tags"]), ["<untagged 0>", "<untagged 1>"])
        a.peer = b
        b.peer = a
        self.compare(call, {})
        for created in (0, 5, 1700000000.999999, -1.25, 2 ** 70, 1e30):
            call.created = created
            a.created = created
            call.last_signal = created
            self.compare(call, {})
        for last in (float("nan"), "x", None):
            call.last_signal = last
            self.compare(call, {})
        call.last_signal = 1.0
        m = a.medias[0]
        for direction in (None, "", "sendrecv", "sendonly", "recvonly", "inactive", 5):
            m.direction = direction
            self.compare(call, {})
        m.direction = None
        for mux in (True, False, 1, [], "x"):
            m.mux = mux
            self.compare(call, {})
        for protocol in (None, "", "RTP/SAVP"):
            m.protocol = protocol
            self.compare(call, {})
        for endpoint in (None, (), ("::1", 5), ["192.0.2.1", 5], ("192.0.2.1",), (1, 2)):
            m.rtp_endpoint = endpoint
            self.compare(call, {})
        m.rtp_endpoint = None
        for port in (None, True, 2.0, 40000):
            m.rtp_port = port
            self.compare(call, {})
        m.mux = True
        # two monologues with one tag: the later entry wins, as in Python
        a.tag = b.tag = "same"
        self.compare(call, {})
        self.assertEqual(list(_fast(call, {})["tags"]), ["same"])

    def test_notMine(self):
        """What the C tree leaves: stats of another type, monologues or
        medias not lists, a medium of another class, setup's argument."""
        stack = Stack(self)
        call = self._plain_call(stack)
        self.assertIsNone(_fast(call, None))
        self.assertIsNone(_fast(call, _Mapping()))
        self.assertIsNone(_fast(object(), {}))
        call.monologues = tuple(call.monologues)
        self.assertIsNone(_fast(call, {}))
        call.monologues = list(call.monologues)
        call.monologues[0].medias = tuple(call.monologues[0].medias)
        self.assertIsNone(_fast(call, {}))
        call.monologues[0].medias = list(call.monologues[0].medias)
        self.assertIsNotNone(_fast(call, {}))

        class OtherMedia(Media):
            __slots__ = ()
        m = call.monologues[0].medias[0]
        other = OtherMedia(m.index, m.type, m.interface)
        call.monologues[0].medias[0] = other
        self.assertIsNone(_fast(call, {}))
        self.assertRaises(TypeError, commands._fasttree.setup, 5)
        self.assertRaises(TypeError, _fast, call)

    def test_valueChangesItsDict(self):
        """A counter value whose truth test empties the counters (and so
        frees the values read from them): the C tree does not crash, and
        leaves the call (the endpoint is no tuple)."""
        stack = Stack(self)
        call = self._plain_call(stack)
        key = _media_keys(call)[0]
        stats = {}

        class Emptying:
            def __bool__(self):
                stats.clear()
                return True
        stats[key] = {"packets": 10 ** 30, "bytes": 10 ** 31, "errors": 10 ** 32,
                      "last_packet": 1.5, "confirmed": Emptying(), "endpoint": Emptying(),
                      "transforms": {"x": [1]}, "rtcp": {"y": [2]}}
        self.assertIsNone(_fast(call, stats))
        self.assertEqual(stats, {})

    def test_noExtension(self):
        """Without the extension, Dispatcher.call_tree is the Python tree."""
        stack = Stack(self)
        call = self._plain_call(stack)
        with_c = Dispatcher.call_tree(stack.dispatch, call, {})
        self.patch(commands, "_fast_tree", None)
        _same(Dispatcher.call_tree(stack.dispatch, call, {}), with_c)

    def test_noLeak(self):
        """Repeated trees, taken and left at each of the C tree's exits,
        leave no object behind (allocated blocks and the inputs' counts)."""
        stack = Stack(self)
        call = self._plain_call(stack)
        variants = _stats_variants(call)
        m = call.monologues[0].medias[0]
        objects = [call, m, m.interface.address, m.rtp_port, call.last_signal, variants[2]]

        def once():
            for stats in variants:
                _fast(call, stats)
        assert_no_leak(self, objects, once, 20, 200)


class _Mapping(dict):
    pass
