"""omnirtp.control._fastbencode.flags_fields: Flags.from_request's fields
for the usual request in C give what flags.py's Python gives, or leave the
request to it."""

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.control import flags
from omnirtp.control.flags import Flags
from omnirtp.test import corpus
from omnirtp.test.test_fasttree import _same, assert_no_leak

_fast = flags._fast_fields


def _python(request):
    """from_request without the C step."""
    saved = flags._fast_fields
    flags._fast_fields = None
    try:
        return Flags.from_request(request)
    finally:
        flags._fast_fields = saved


#: values put in place of a key's own: the usual shapes and every odd one
ODD_VALUES = [
    "x", "", " x", "x ", "X", "a,b", "a_b", "caf\xe9", "a b", "\tx", "x\x1c", "\udcff",
    b"x", 5, -1, True, None, 1.5, {}, {"x": "y"},
    [], ["x"], ["X"], ["a b"], [" a"], ["a "], ["a,b"], [""], ["a_b"], ["caf\xe9"],
    ["x", "y"], ["x", 1], ["x", b"y"], ["x", ["y"]], ["x", {"y": 1}], ["IP4", "192.0.2.1"],
    ["IP4", "192.0.2.1", "x"], ["IP4"], ["x\u2028"], ["\u00a0x"], ("x", "y"),
]


def _variants(request):
    """``request`` and variants of it: each key's value replaced by each
    odd value, keys dropped, an unknown key added, a dict subclass, a key
    that is not a str."""
    yield request
    for key in list(request):
        if key == "sdp":
            continue
        for value in ODD_VALUES:
            variant = dict(request)
            variant[key] = value
            yield variant
        variant = dict(request)
        del variant[key]
        yield variant
    yield dict(request, nonsense="1")
    yield dict(request, flags=["trust-address"])
    yield dict(request, **{"T.38": ["decode"]})  # an ignored key
    yield dict(request, **{"received from": ["IP6", "2001:db8::1"], "rtcp-mux": ["Demux"]})

    class Request(dict):
        pass
    yield Request(request)
    variant = dict(request)
    variant[1] = "x"
    yield variant


class FastFlagsTests(SynchronousTestCase):

    def setUp(self):
        if _fast is None:
            raise self.skipTest("omnirtp.control._fastbencode is not built (make ext)")
        self.taken = self.left = 0

    def compare(self, request):
        made = _python(request)
        fields = _fast(request)
        if fields is None:
            self.left += 1
        else:
            self.taken += 1
            _same(fields, vars(made), "fields of %r" % (request,))
            self.assertIs(fields["raw"], request)
        fast = Flags.from_request(request)
        _same(vars(fast), vars(made), "Flags of %r" % (request,))
        self.assertEqual(fast, made)

    def requests(self):
        out = []
        for case in corpus.CASES:
            for request in case.requests:
                out.append(corpus.prepare(request, "t-" + case.name))
        for make in (corpus.offer, corpus.answer):
            out.append(make(corpus.SIP_OFFER))
        out.append(corpus.delete())
        out.append(corpus.seed_offer())
        out.append(corpus.seed_answer())
        out.append(corpus.webrtc_offer())
        out.append(corpus.webrtc_answer())
        return out

    def test_corpus(self):
        """Every request of every corpus case, as it is: most are C's; the
        ones with flag words, codecs, directions ... are Python's."""
        for request in self.requests():
            self.compare(request)
        self.assertGreater(self.taken, 50)
        self.assertGreater(self.left, 50)

    def test_variants(self):
        """Each corpus request with each key's value changed in every odd
        way: C takes only what it gives exactly as the Python does."""
        seen = set()
        for request in self.requests():
            shape = tuple(sorted(request))
            if shape in seen:
                continue
            seen.add(shape)
            for variant in _variants(request):
                self.compare(variant)
        self.assertGreater(self.taken, 200)
        self.assertGreater(self.left, 1000)

    def test_benchmarkCycle(self):
        """The requests of bench/setup.py's cycles (Kamailio 5.6's keys) are C's."""
        plain = {"supports": ["load limit"], "sdp": corpus.SIP_OFFER,
                 "replace": ["origin", "session-connection"], "call-id": "c1",
                 "received-from": ["IP4", "192.0.2.10"], "from-tag": "ft1",
                 "command": "offer"}
        webrtc = dict(plain, ICE="force", **{"transport-protocol": "RTP/SAVPF"})
        delete = {"supports": ["load limit"], "call-id": "c1",
                  "received-from": ["IP4", "192.0.2.10"], "from-tag": "ft1",
                  "command": "delete"}
        for request in (plain, webrtc, delete, dict(plain, command="answer", **{"to-tag": "t"})):
            self.assertIsNotNone(_fast(request), request)
            self.compare(request)
        f = Flags.from_request(webrtc)
        self.assertEqual((f.ice, f.transport_protocol, f.received_from, f.supports, f.replace),
                         ("force", "RTP/SAVPF", ("IP4", "192.0.2.10"), {"load limit"},
                          {"origin", "session-connection"}))

    def test_leftAlone(self):
        """What C leaves: flag words, unknown keys, odd values, other types."""
        for request in ({"flags": ["trust-address"]}, {"nonsense": 1}, {"call-id": 5},
                        {"replace": "origin"}, {"replace": ["Origin"]},
                        {"supports": ["a,b"]}, {"ICE": "Force"}, {"ICE": ["force"]},
                        {"received-from": ["IP4"]}, {"direction": ["pub"]}, {1: "x"}):
            self.assertIsNone(_fast(request), request)
        for other in (None, [], "x", dict):
            self.assertIsNone(_fast(other))

    def test_freshContainers(self):
        """Each request gets its own sets and unknown list."""
        a = Flags.from_request({"replace": ["origin"]})
        b = Flags.from_request({"replace": ["origin"]})
        for name in ("replace", "rtcp_mux", "flags", "supports", "sdes", "osrtp", "unknown"):
            self.assertIsNot(getattr(a, name), getattr(b, name), name)
        a.replace.add("mine")
        self.assertEqual(b.replace, {"origin"})

    def test_noLeak(self):
        """Repeated calls through every exit leave no allocated block or
        reference behind."""
        requests = []
        for request in self.requests()[:40]:
            requests.extend(list(_variants(request))[:60])

        def once():
            for request in requests:
                _fast(request)
        assert_no_leak(self, [flags._DEFAULTS, flags._FAST_KINDS] + requests, once, 5, 50)

    def test_setupChecked(self):
        from omnirtp.control import _fastbencode
        self.assertRaises(TypeError, _fastbencode.flags_setup, {}, {"x": (0, 1)}, ())
        self.assertRaises(ValueError, _fastbencode.flags_setup, {}, {"x": (9, "y")}, ())
        self.assertRaises(TypeError, _fastbencode.flags_setup, {}, {}, (1,))
        self.assertRaises(TypeError, _fastbencode.flags_setup, [], {}, ())
