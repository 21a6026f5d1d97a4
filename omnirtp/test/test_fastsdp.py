"""omnirtp.sdp._fastsdp: the SDP parse's line pass in C gives what model.py's gives."""

import copy
import gc
import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.sdp import model
from omnirtp.sdp import rewrite as _unused  # noqa: F401 (the module, below)
from omnirtp.test import corpus

rewrite_module = sys.modules["omnirtp.sdp.rewrite"]
HERE = os.path.dirname(os.path.abspath(__file__))
SLOTS = ("kind", "value", "text", "eol", "number", "attribute", "connection")


def _line(line):
    return (type(line),) + tuple(getattr(line, name) for name in SLOTS)


def _passed(result):
    """A line pass's result as plain values (the Line objects' slots), and
    whether the parts share their lines as they should."""
    if result is None:
        return None
    session, sections, scans, ends = result
    return (
        [_line(ln) for ln in session],
        [[_line(ln) for ln in section] for section in sections],
        [(index, direction, [_line(ln) for ln in specials])
         for index, direction, specials in scans],
        ends,
        # a part's specials are lines of that part (the same objects)
        all(any(sp is ln for ln in part) for part, (_i, _d, specials)
            in zip([session] + sections, scans) for sp in specials),
        len(scans) == len(sections) + 1,
    )


def _outcome(function, *args):
    try:
        return ("value", function(*args))
    except Exception as e:
        return ("error", type(e), str(e))


def _vars(part):
    """A part's attributes in their order, its lines as plain values."""
    return [(name, [_line(ln) for ln in value] if name == "lines" else value)
            for name, value in vars(part).items()]


def _parsed(data):
    """What ``SessionDescription.parse(data)`` gives, as plain values."""
    sd = model.SessionDescription.parse(data)
    parts = [sd.session] + sd.media
    return (
        type(sd), [type(part) for part in parts], [_vars(part) for part in parts],
        sd.to_bytes(),
        [[_line(ln) for ln in part.lines] for part in parts],
        [(part._attrs, part.direction, part.connection) for part in parts],
        [(m.index, m.media, m.port, m.port_count, m.proto, m.formats, m._rtcp,
          m.text(), m._span is not None) for m in sd.media],
        [ascii(info) for info in model.inspect(sd)],
    )


def sdp_texts():
    """Every SDP of the corpus module and the fixtures, as str."""
    out = [value for value in vars(corpus).values()
           if isinstance(value, str) and value.startswith("v=")]
    for folder in (os.path.join("fixtures", "sdp"), os.path.join("fixtures", "fuzz", "sdp")):
        path = os.path.join(HERE, folder)
        for name in sorted(os.listdir(path)):
            with open(os.path.join(path, name), "rb") as f:
                out.append(f.read().decode("utf-8", "surrogateescape"))
    return out


def variants(text):
    """``text`` and what the line pass must treat alike: other endings,
    no last ending, blank lines, bad lines, odd characters."""
    lf = text.replace("\r\n", "\n")
    out = [text, lf, text.rstrip("\r\n"), lf.rstrip("\n"), text + "\r\n", lf + "\n",
           text.replace("\r\n", "\r\n\r\n", 2), lf.replace("\n", "\n\n", 3),
           text.replace("\r\n", "\n", 1), text.replace("\r\n", "\r", 1),
           text + "junk\r\n", text + "1=x\r\n", text + "é=x\r\n", text + "a\r\n",
           text + "a=\r\n", text + "a=:\r\n", text + "a=sendonly:\r\n",
           text + "a=x:y:z\r\n", text + "a=rtcp\r\n", text + "a=\udcff\r\n",
           text.replace("v=0", "x=0", 1), "\r\n" + text, "\n" + lf]
    return out


EDGES = ("", "\r\n", "\n", "\r", "\r\n\r\n", "v", "v=", "v=0", "v=0\r\n", "v=0\n", "=0\r\n",
         "v=0\r\nm=audio 1 RTP/AVP 0\r\nm=video 2 RTP/AVP 96\r\n",
         "v=0\r\na=sendonly\r\na=recvonly\r\nm=a 1 x\r\na=inactive\r\na=rtcp:9\r\nc=IN IP4 1.2.3.4",
         "v=0\r\n\r\n\r\nm=a 1 x\r\n\r\n", "a=rtcp:5\nc=IN IP4 1.2.3.4\nm=a 1 x\nc=x\n",
         "v=0\r\ns=\u20ac\r\na=\u20ac:\U0001f600\r\n", "v=0\r\nÉ=1\r\n", "v=0\r\n\t=1\r\n")


def _assert_no_leak(test, once, objects):
    """``once()`` run over and over leaves no allocated block behind, nor
    a reference to any of ``objects``."""
    # (garbage of earlier tests collected first: freed during the runs,
    # it would move the counts)
    gc.collect()
    counts = [sys.getrefcount(o) for o in objects]
    for _ in range(3):
        once()
    before = sys.getallocatedblocks()
    for _ in range(100):
        once()
    after = sys.getallocatedblocks()
    test.assertLess(after - before, 50)
    test.assertEqual([sys.getrefcount(o) for o in objects], counts)


def _offer_with(*lines, session=()):
    """The plain offer with ``lines`` added to its media section and
    ``session`` lines to its session part."""
    head, sep, media = corpus.SIP_OFFER.partition("m=")
    return head + "".join(ln + "\r\n" for ln in session) + sep + media + "".join(
        ln + "\r\n" for ln in lines)


#: texts the C parts must make as parse does, or leave to it
PARTS = (
    _offer_with("c=IN IP4 198.51.100.7"), _offer_with("c=IN IP6 2001:db8::7"),
    _offer_with("c=IN IP4 198.51.100.300"), _offer_with("c=IN IP4 01.2.3.4"),
    _offer_with("c=IN IP5 1.2.3.4"), _offer_with("c=ON IP4 1.2.3.4"), _offer_with("c=IN IP4"),
    _offer_with("c=IN IP4 233.252.0.1/127/2"), _offer_with("c=IN IP4 0.0.0.0"),
    _offer_with("c=IN IP4 192.0.2.1", "c=IN IP4 192.0.2.2"),
    _offer_with("a=rtcp:9 IN IP4 0.0.0.0"), _offer_with("a=rtcp:9"), _offer_with("a=rtcp:x"),
    _offer_with("a=rtcp:70000"), _offer_with("a=rtcp:9 IN IP4 1.2.3"), _offer_with("a=rtcp"),
    _offer_with("a=rtcp:9", "a=rtcp:10"), _offer_with(session=["a=rtcp:x"]),
    _offer_with(session=["c=IN IP4 999.1.1.1"]), _offer_with(session=["o=x 1 2 IN IP4 1.2.3.4"]),
    _offer_with("m=video 0 RTP/AVP 96", "c=IN IP4 192.0.2.99", "a=rtpmap:96 VP8/90000"),
    _offer_with("m=video 9 RTP/AVP 96 97", "m=text 65535 RTP/AVP  98 ", "m=x 1 y"),
    _offer_with("m=video 65536 RTP/AVP 96"), _offer_with("m=video 00009 RTP/AVP 96"),
    _offer_with("m=video 123456 RTP/AVP 96"), _offer_with("m=video 9/2 RTP/AVP 96"),
    _offer_with("m=video \u0663 RTP/AVP 96"), _offer_with("m=video  9 RTP/AVP"),
    _offer_with("m=video 9  RTP/AVP"), _offer_with("m=video 9"), _offer_with("m= 9 RTP/AVP"),
    _offer_with("m=video x RTP/AVP 96"), _offer_with("m=video -1 RTP/AVP 96"),
    _offer_with("m=video 9 RTP/AVP\t96"),
    "v=0\r\nm=audio 1 RTP/AVP 0\r\n", "\r\nv=0\r\n", "s=x\r\nv=0\r\n", "m=a 1 x\r\n",
    "v=0\r\no=a b c d e f\r\no=x\r\n", "v=0\r\no=a b c d e\r\n", "v=0\r\no=a\u2003b c d e f\r\n",
    "v=0\r\no= a  b c\td e\x1cf \r\n", "v=0\r\no=a b c d e f g\r\n",
    "v=0\r\no=a b c d e\xa0f\r\n", "v=0\r\nc=IN IP4 1.2.3.4\r\nc=IN IP4 5.6.7.8\r\n",
    "v=0\nm=audio 1 RTP/AVP 0\nm=video 2 RTP/AVP 0\n", "v=0\nm=audio 1 RTP/AVP 0\nm=video 2 x",
)


class FastMatchesPythonTests(SynchronousTestCase):
    """``_fastsdp.split`` gives what ``model._line_pass`` gives (the same
    Line slots, parts, scans and ending) or None; ``parse`` gives the same
    description or error with and without it.  Needs the extension built
    (``setup.py build_ext --inplace``; scripts/run-tests does it): without
    it these tests fail, they do not skip."""

    def setUp(self):
        from omnirtp.sdp import _fastsdp
        self.assertIs(model._fastsdp, _fastsdp)
        self.assertIs(model._fast_split, _fastsdp.split)
        self.assertIs(model._fast_parts, _fastsdp.parts)
        self.assertIs(model._fast_inspect, _fastsdp.inspect)
        self.parts_taken = self.inspect_taken = self.inspect_left = 0
        # (the many descriptions made here are not left for a later
        # test's collection)
        self.addCleanup(gc.collect)

    def assertSamePass(self, data):
        fast = model._fast_split(data)
        slow = _outcome(model._line_pass, data)
        if fast is None:
            # not taken: what the C pass leaves is what it must leave
            # (other endings, a line model.py judges)
            lines = data.replace("\r\n", "\n").split("\n")
            self.assertTrue(
                slow[0] == "error" or slow[1][3] is None
                or any(ln and not ("a" <= ln[0] <= "z" or "A" <= ln[0] <= "Z")
                       for ln in lines),
                ascii(data))
            return
        self.assertEqual(slow[0], "value", ascii(data))
        self.assertEqual(_passed(fast), _passed(slow[1]), ascii(data))
        self.assertIs(_passed(fast)[4], True)

    def assertSameParse(self, data):
        """The parse with the C parts, with the C line pass alone and
        without either: the same description or error."""
        with_c = _outcome(_parsed, data)
        split, parts = model._fast_split, model._fast_parts
        try:
            model._fast_parts = None
            line_pass = _outcome(_parsed, data)
            model._fast_split = None
            without = _outcome(_parsed, data)
        finally:
            model._fast_split, model._fast_parts = split, parts
        self.assertEqual(with_c, without, ascii(data))
        self.assertEqual(line_pass, without, ascii(data))
        if with_c[0] == "value":
            self.assertSameInspect(model.SessionDescription.parse(data))
        if parts(data) is not None:
            # (taken: then the Python parse has no error to say)
            self.parts_taken += 1
            model._fast_parts = None
            try:
                self.assertEqual(_outcome(model.SessionDescription.parse, data)[0], "value",
                                 ascii(data))
            finally:
                model._fast_parts = parts

    def assertSameInspect(self, sd):
        """``_fastsdp.inspect`` gives what ``model._inspect`` gives (the
        same MediaInfo values, their fields set in the same order) or
        None."""
        fast = model._fast_inspect(sd)
        want = _outcome(model._inspect, sd)
        if fast is None:
            self.inspect_left += 1
            return
        self.inspect_taken += 1
        self.assertEqual(want[0], "value", ascii(want))
        self.assertEqual([(type(i), list(vars(i).items())) for i in fast],
                         [(type(i), list(vars(i).items())) for i in want[1]])
        self.assertEqual(fast, want[1])
        self.assertEqual([hash(i) for i in fast], [hash(i) for i in want[1]])

    def test_inspectVariants(self):
        """Descriptions changed part by part: what the C inspect gives as
        model.py does, or leaves to it (a section without an address,
        values of other types)."""
        texts = [corpus.SIP_OFFER, corpus.SIP_ANSWER] + list(PARTS[:12])
        odd_values = {
            "connection": (None, model.Connection("IP6", "::"), model.Connection("IP4", 5), "x"),
            "port": (0, 1, 65535, True, 2 ** 70, 5.0),
            "_rtcp": (None, model.Rtcp(9), model.Rtcp(9, "IP4", "192.0.2.1"),
                      model.Rtcp(9, "IP4", ""), model.Rtcp("9", "IP4", 5), (9,)),
            "_attrs": ({}, {"ice-ufrag": ["x"]}, {"rtcp-mux": [None]}, [], {5: [1]}),
            "direction": (None, "", "sendonly", 5),
            "formats": ([], ["0", "x", "08", "\u00b2"], ("0",), ["0", 5]),
            "index": (None, "1"), "media": (None,), "proto": (5,), "port_count": (2, None),
        }
        session_values = {
            "connection": (None, model.Connection("IP4", "0.0.0.0"), 5),
            "direction": (None, "", "inactive", 5),
            "_attrs": ({}, {"ice-lite": [None]}, [], {"candidate": ["x"], "ice-pwd": ["y"]}),
        }
        for text in texts:
            try:
                sd = model.SessionDescription.parse(text)
            except model.SDPError:
                continue
            self.assertSameInspect(sd)
            for name, values in session_values.items():
                for value in values:
                    variant = copy.copy(sd)
                    variant.session = copy.copy(sd.session)
                    setattr(variant.session, name, value)
                    self.assertSameInspect(variant)
            for i in range(len(sd.media)):
                for name, values in odd_values.items():
                    for value in values:
                        self.assertSameInspect(_with_part(sd, "media", i, name, value))
            variant = copy.copy(sd)
            variant.media = tuple(sd.media)
            self.assertSameInspect(variant)
        self.assertGreater(self.inspect_taken, 300)
        self.assertGreater(self.inspect_left, 100)

    def test_inspectNoLeak(self):
        """Repeated inspects, taken and left, leave nothing behind."""
        sds = []
        for text in [corpus.SIP_OFFER, corpus.SIP_ANSWER] + list(PARTS):
            try:
                sds.append(model.SessionDescription.parse(text))
            except model.SDPError:
                pass
        odd = copy.copy(sds[0])
        odd.media = [copy.copy(sds[0].media[0])]
        odd.media[0].port = True
        sds.append(odd)

        def once():
            for sd in sds:
                model._fast_inspect(sd)
        _assert_no_leak(self, once, [sds[0], sds[0].media[0], sds[0].session.connection])
        self.assertRaises(TypeError, model._fastsdp.setup_inspect, 5)

    def test_corpusAndFixtures(self):
        texts = sdp_texts()
        self.assertGreater(len(texts), 40)
        taken = 0
        for text in texts:
            for data in variants(text):
                self.assertSamePass(data)
                self.assertSameParse(data)
                taken += model._fast_split(data) is not None
        self.assertGreater(taken, len(texts) * 10)
        self.assertGreater(self.parts_taken, len(texts) * 8)

    def test_edges(self):
        for data in EDGES:
            self.assertSamePass(data)
            self.assertSameParse(data)
            for cut in range(len(data)):
                self.assertSamePass(data[:cut])
                self.assertSameParse(data[:cut])

    def test_cuts(self):
        """Every prefix of a plain offer (the last line cut anywhere)."""
        for text in (corpus.SIP_OFFER, corpus.SIP_OFFER.replace("\r\n", "\n")):
            for cut in range(len(text) + 1):
                self.assertSamePass(text[:cut])
                self.assertSameParse(text[:cut])

    def test_parts(self):
        """Texts with c=, a=rtcp, o= and m= lines of every kind (cached,
        new, bad), each with its variants and prefixes."""
        for text in PARTS:
            for data in variants(text):
                self.assertSamePass(data)
                self.assertSameParse(data)
            for cut in range(0, len(text), 3):
                self.assertSameParse(text[:cut])
        self.assertGreater(self.parts_taken, len(PARTS) * 5)

    def test_partsNotMine(self):
        """What the C parts leave: an SDPError of parse_connection or
        parse_rtcp, a bad first line or o= or m= line, what the line pass
        leaves; setup_parts' arguments."""
        from omnirtp.sdp import _fastsdp
        for data in (_offer_with("c=IN IP4 1.2.3"), _offer_with("a=rtcp:x"),
                     _offer_with("m=video 9/2 RTP/AVP 96"), "s=x\r\nv=0\r\n",
                     "v=0\r\no=a b\r\n", "v=0\rs=-\r"):
            self.assertIsNone(_fastsdp.parts(data), ascii(data))
        self.assertIsNotNone(_fastsdp.parts(corpus.SIP_OFFER))
        self.assertIsNone(_fastsdp.parts(b"v=0\r\n"))
        self.assertRaises(TypeError, _fastsdp.setup_parts, 5)
        self.assertRaises(TypeError, _fastsdp.setup_parts, model.Session, model.MediaSection,
                          {}, 5, model.parse_rtcp, model.SDPError)

    def test_partsNoLeak(self):
        """Repeated parses, taken and left at each exit, leave no allocated
        block or reference behind."""
        texts = [corpus.SIP_OFFER, corpus.SIP_ANSWER] + list(PARTS)

        def once():
            for text in texts:
                model._fast_parts(text)
        _assert_no_leak(self, once, texts + [model.SDPError, model.parse_connection])

    def test_notMine(self):
        """What the C pass leaves to model.py: other endings, a malformed
        line or one whose letter is not ASCII, a str subclass, not a str."""
        for data in ("v=0\r\ns=-\n", "v=0\rs=-\r", "v=0\r\nx\r\n", "v=0\r\n1=x\r\n",
                     "v=0\r\né=x\r\n", "v=0\r\nv\r\n"):
            self.assertIsNone(model._fast_split(data), ascii(data))
        self.assertIsNone(model._fast_split(type("S", (str,), {})("v=0\r\n")))
        self.assertIsNone(model._fast_split(b"v=0\r\n"))
        self.assertIsNotNone(model._fast_split("v=0\r\n"))

    def test_typical(self):
        """The usual offer: its lines and its one media section."""
        session, sections, scans, ends = model._fast_split(corpus.SIP_OFFER)
        self.assertEqual(ends, "\r\n")
        self.assertEqual([ln.text for ln in session],
                         corpus.SIP_OFFER.split("\r\n")[:len(session)])
        self.assertEqual([ln.kind for ln in sections[0]], ["m", "a", "a", "a"])
        self.assertEqual(scans[1][0], {"rtpmap": ["101 telephone-event/8000"],
                                       "fmtp": ["101 0-16"], "ptime": ["20"]})
        self.assertEqual([ln.kind for ln in scans[0][2]], ["c"])
        self.assertEqual([ln.number for ln in session + sections[0]], list(range(1, 10)))

    def test_setupChecks(self):
        from omnirtp.sdp import _fastsdp

        class NoSlots:
            pass

        class NotAllSlots:
            __slots__ = SLOTS[:-1]
            connection = None

        self.assertRaises(TypeError, _fastsdp.setup, NoSlots, model._DIRECTION_SET)
        self.assertRaises(TypeError, _fastsdp.setup, NotAllSlots, model._DIRECTION_SET)
        self.assertRaises(TypeError, _fastsdp.setup, model.Line, set())
        # (the module's Line is still the one set up)
        self.assertIs(type(model._fast_split("v=0\r\n")[0][0]), model.Line)


# -- the rewrite ------------------------------------------------------------

def _rewritten(function, sd, plan):
    try:
        return ("value", function(sd, plan))
    except Exception as e:
        return ("error", type(e), str(e))


def _with_part(whole, parts, i, name, value):
    """A copy of ``whole`` whose list ``parts`` holds a copy of its item
    ``i`` with ``name`` set to ``value``."""
    variant = copy.copy(whole)
    items = list(getattr(whole, parts))
    items[i] = copy.copy(items[i])
    setattr(items[i], name, value)
    setattr(variant, parts, items)
    return variant


def _plan_variants(plan):
    """``plan`` and copies of it with each field changed, in the ways the
    negotiator changes them and in ways it does not (other types), each
    one the C rewrite must write as rewrite.py does or leave to it."""
    from omnirtp.sdp.codecs import CodecOps
    from omnirtp.sdp.rewrite import ICE_REMOVE, IcePlan
    out = [plan]
    session_values = {
        "replace_origin": (False, True, 1, "", None, 2.5),
        "ice_lite": (True, 0, [], [1]),
        "loop_protect": (None, "", "abc123", "\u20ac\udcff", 5, b"x"),
        "keep_zero_address": (False, True, ()),
        "family": ("IP6", "\u20ac", None, b"IP4"),
        "address": ("::1", "", 7),
        "media": ((), None),
    }
    for name, values in session_values.items():
        for value in values:
            out.append(copy.copy(plan))
            setattr(out[-1], name, value)
    out.append(copy.copy(plan))
    out[-1].media = list(plan.media) + [plan.media[0]] if plan.media else []
    ice = IcePlan("ufrag123", "pwd" * 8, ["f1 1 UDP 2130706431 127.0.0.1 30000 typ host",
                                          "f1 2 UDP 2130706430 127.0.0.1 30001 typ host"])
    media_values = {
        "port": (0, 1, 65535, True, 40000.0, None, 2 ** 70, -5),
        "rtcp_port": (None, 0, 30001, "30001", False),
        "rtcp_mux": (True, False, 1, None, 0.0),
        "full_rtcp_attribute": (True, 1, "x", object()),
        "protocol": (None, "", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF", b"RTP/AVP", 5),
        "direction": (None, "sendrecv", "sendonly", "inactive", "", 5),
        "ice": (None, ICE_REMOVE, ice, IcePlan("u", "p", [], True), IcePlan("u", "p", ["c"]),
                IcePlan(5, "p"), IcePlan("u", "p", ("c",)), IcePlan("u", "p", [b"c"]),
                IcePlan("u", "p", [], 2.0), "other", 5),
        "codecs": (CodecOps(), CodecOps(strip=("PCMA",)), CodecOps(mask=("all",)),
                   CodecOps(offer=("x",)), CodecOps(except_=("PCMU",)), None),
        "ptime": (None, 0, 20, 40, 20.0, "20", True),
        "keep_mid": (True, False, 1, {}),
        "keep_zero_address": (True, False),
        "crypto": ([], ["1 AES_CM_128_HMAC_SHA1_80 inline:abc"], ["1 x", "2 y"], (), [5], None),
        "dtls": (None, ("active", "sha-256 AB:CD"), ("actpass", "x", "y"), ("a",), ["a", "b"],
                 ("a", 5)),
        "mid": (None, "", "0", "audio", 0, b"1"),
        "formats": (None, []),
    }
    for i in range(len(plan.media)):
        for name, values in media_values.items():
            for value in values:
                out.append(_with_part(plan, "media", i, name, value))
    return out


def _sd_variants(sd):
    """``sd`` and copies of it with lines the C rewrite must write as
    rewrite.py does, or leave to it."""
    out = [sd]
    lines = [
        model.Line("c", "IN IP4 0.0.0.0"), model.Line("c", "IN IP6 ::"),
        model.Line("c", "IN IP4 192.0.2.1"), model.Line("", ""), model.Line("x", "y"),
        model.Line("a", "sendonly"), model.Line("a", "candidate:1 1 UDP 1 1.2.3.4 5 typ host"),
        model.Line("a", "ice-ufrag:abc"), model.Line("a", "group:BUNDLE 0"),
        model.Line("a", "rtpengine:abc123"), model.Line("a", "crypto:1 x"),
        model.Line("a", "mid:0"), model.Line("a", "mid:1"), model.Line("a", "rtpmap"),
        model.Line("a", "rtpmap:"), model.Line("a", "fmtp:0 x=1"), model.Line("a", "fmtp:0"),
        model.Line("a", "rtcp-fb:* nack"), model.Line("a", "rtcp-fb:*"),
        model.Line("a", "rtcp-fb:0 nack pli"), model.Line("a", "rtcp-fb:96 nack"),
        model.Line("a", "rtpmap:0 NOTPCMU/8000"), model.Line("a", "rtpmap:8 X/1"),
        model.Line("a", "rtpmap:96 opus/48000/2"), model.Line("a", "\u20ac:\udcff"),
        model.Line("a", "rtcp:9"), model.Line("a", "ptime:30"), model.Line("a", "rtcp-mux"),
        model.Line("a", "fingerprint:sha-256 AB"), model.Line("a", "ssrc:1 cname:x"),
    ] + [model.Line("o", value) for value in (
        "a  b c d e f", " a b c d e f", "a\tb c d e f", "a b c", "a b c ", "a b", "",
        "a\xa0b c d e f", "a b c\x1cd e f", "\u20ac b \udcff d", "a b\u2003c d")]
    for line in lines:
        if line.kind == "c":
            model.parse_connection(line)
        for where in ("session", "media"):
            variant = copy.copy(sd)
            if where == "session":
                variant.session = copy.copy(sd.session)
                variant.session.lines = list(sd.session.lines) + [line]
            elif sd.media:
                variant.media = [copy.copy(m) for m in sd.media]
                variant.media[0].lines = list(sd.media[0].lines) + [line]
            else:
                continue
            out.append(variant)
    # a c= line not parsed (no connection), a line of another type
    unparsed = model.Line("c", "IN IP4 192.0.2.9")
    for line in (unparsed, "c=IN IP4 1.2.3.4", None):
        variant = copy.copy(sd)
        variant.session = copy.copy(sd.session)
        variant.session.lines = list(sd.session.lines) + [line]
        out.append(variant)
    for m in sd.media[:1]:
        odd_formats = [("formats", ["0", pt]) for pt in ("08", "96", "\u0663", "\u00b2", "x",
                                                         "18", "10", "34", "35", "0 ", "101")]
        for name, value in odd_formats + [
                            ("formats", ("0",)), ("formats", ["0", 8]), ("formats", []),
                            ("media", "video"), ("media", b"audio"), ("proto", None),
                            ("lines", m.lines[:1]), ("lines", []), ("lines", tuple(m.lines))]:
            variant = copy.copy(sd)
            variant.media = [copy.copy(x) for x in sd.media]
            setattr(variant.media[0], name, value)
            variant.media[0]._rtpmaps = None
            out.append(variant)
    out.append(copy.copy(sd))
    out[-1].media = tuple(sd.media)
    return out


class FastRewriteTests(SynchronousTestCase):
    """``_fastsdp.rewrite`` writes what ``rewrite._rewrite`` writes, or
    leaves the plan to it (None): every description and plan the corpus's
    requests make, with variants of both.  Needs the extension built: the
    tests fail without it."""

    def setUp(self):
        from omnirtp.sdp import _fastsdp
        self.assertIs(rewrite_module._fast_rewrite, _fastsdp.rewrite)
        self.taken = self.left = 0
        self.addCleanup(gc.collect)  # (the stacks' cycles, not a later test's)

    def compare(self, sd, plan):
        fast = rewrite_module._fast_rewrite(sd, plan)
        want = _rewritten(rewrite_module._rewrite, sd, plan)
        if fast is None:
            self.left += 1
            return
        self.taken += 1
        self.assertEqual(want[0], "value", "C wrote %r where Python says %r" % (fast, want))
        self.assertIs(type(fast), str)
        self.assertEqual(fast, want[1])

    def captured(self):
        """(sd, plan) of every rewrite the corpus's requests make."""
        from omnirtp.call import negotiate
        from omnirtp.test.test_commands import embedded_stack
        seen = []
        original = negotiate.rewrite

        def capture(sd, plan):
            seen.append((sd, copy.deepcopy(plan)))
            return original(sd, plan)
        self.patch(negotiate, "rewrite", capture)

        class Stack:
            pass
        stack = Stack()
        embedded_stack(stack, ports=(30000, 31999))
        for case in corpus.CASES:
            for request in case.requests:
                stack.dispatch(corpus.prepare(request, "r-" + case.name)).addBoth(
                    lambda _: None)  # (the replies are not this test's)
            stack.dispatch({"command": "delete", "call-id": "r-%s-c1" % case.name,
                            "from-tag": "ft1"}).addBoth(lambda _: None)
        return seen

    def test_corpus(self):
        """Every rewrite of the corpus, as the negotiator planned it."""
        seen = self.captured()
        self.assertGreater(len(seen), 200)
        for sd, plan in seen:
            self.compare(sd, plan)
        self.assertGreater(self.taken, len(seen) // 2)
        self.assertGreater(self.left, 10)

    def test_variants(self):
        """The corpus's descriptions and plans, changed field by field."""
        seen = self.captured()
        shapes = {}
        for sd, plan in seen:
            # one of each shape (the variants are many)
            key = (str(sd), ascii(plan))
            shapes.setdefault(key, (sd, plan))
        for sd, plan in list(shapes.values())[:60]:
            for variant in _plan_variants(plan):
                self.compare(sd, variant)
            for variant in _sd_variants(sd):
                self.compare(variant, plan)
        self.assertGreater(self.taken, 5000)
        self.assertGreater(self.left, 2000)

    def test_rewrite(self):
        """rewrite() asks C first and writes what C leaves in Python."""
        from omnirtp.sdp.rewrite import MediaPlan, SessionPlan, rewrite
        sd = model.SessionDescription.parse(corpus.SIP_OFFER)
        plan = SessionPlan("IP4", "127.0.0.1", [MediaPlan(port=30000, rtcp_port=30001)],
                           replace_origin=True)
        self.assertIsNotNone(rewrite_module._fast_rewrite(sd, plan))
        text = rewrite(sd, plan)
        self.assertEqual(text, rewrite_module._rewrite(sd, plan))
        plan.media[0].port = 0
        self.assertIsNone(rewrite_module._fast_rewrite(sd, plan))
        self.assertEqual(rewrite(sd, plan), rewrite_module._rewrite(sd, plan))
        plan.media = []
        self.assertRaises(ValueError, rewrite, sd, plan)
        self.patch(rewrite_module, "_fast_rewrite", None)
        plan.media = [MediaPlan(port=30000, rtcp_port=30001)]
        self.assertEqual(rewrite(sd, plan), text)

    def test_notMine(self):
        """What the C rewrite leaves: other classes, arguments, setup's."""
        from omnirtp.sdp import _fastsdp
        from omnirtp.sdp.rewrite import MediaPlan, SessionPlan
        sd = model.SessionDescription.parse(corpus.SIP_OFFER)
        plan = SessionPlan("IP4", "127.0.0.1", [MediaPlan(port=30000)])
        self.assertIsNotNone(_fastsdp.rewrite(sd, plan))

        class OtherPlan(SessionPlan):
            pass
        self.assertIsNone(_fastsdp.rewrite(sd, OtherPlan("IP4", "127.0.0.1", plan.media)))
        self.assertIsNone(_fastsdp.rewrite(plan, sd))
        self.assertIsNone(_fastsdp.rewrite(None, None))
        self.assertRaises(TypeError, _fastsdp.rewrite, sd)
        self.assertRaises(TypeError, _fastsdp.setup_rewrite, 5)

        class NoSlots:
            pass
        args = list(self._setup_args())
        args[0] = NoSlots
        self.assertRaises(TypeError, _fastsdp.setup_rewrite, *args)
        # (the module's setup is still the one made at import)
        self.assertIsNotNone(_fastsdp.rewrite(sd, plan))

    def _setup_args(self):
        r = rewrite_module
        return (model.Line, model.SessionDescription, model.Session, model.MediaSection,
                model.Connection, r.SessionPlan, r.MediaPlan, r.IcePlan, r.CodecOps,
                frozenset(), frozenset(), frozenset(), {})

    def test_noLeak(self):
        """Repeated rewrites, written and left at each exit, leave no
        allocated block or reference behind."""
        seen = self.captured()
        pairs = []
        for sd, plan in seen[:40]:
            pairs.extend((sd, variant) for variant in _plan_variants(plan)[::3])
            pairs.extend((variant, plan) for variant in _sd_variants(sd)[::3])
        sd, plan = seen[0]

        def once():
            for sd, plan in pairs:
                rewrite_module._fast_rewrite(sd, plan)
        _assert_no_leak(self, once, [sd, plan, sd.session.lines[0].text, plan.media[0],
                                     plan.family])
