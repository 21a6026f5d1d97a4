"""omnirtp.sdp._fastsdp: the SDP parse's line pass in C gives what model.py's gives."""

import os

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.sdp import model
from omnirtp.test import corpus

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


def _parsed(data):
    """What ``SessionDescription.parse(data)`` gives, as plain values."""
    sd = model.SessionDescription.parse(data)
    parts = [sd.session] + sd.media
    return (
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
        with_c = _outcome(_parsed, data)
        split = model._fast_split
        model._fast_split = None
        try:
            without = _outcome(_parsed, data)
        finally:
            model._fast_split = split
        self.assertEqual(with_c, without, ascii(data))

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
