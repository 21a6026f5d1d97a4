"""Tests for omnirtp.control.bencode."""

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.control import bencode
from omnirtp.control.bencode import BencodeError, decode, decode_prefix, encode


class EncodeTests(SynchronousTestCase):
    def test_types(self):
        """Each supported Python type has its bencoding."""
        self.assertEqual(encode(b"ab"), b"2:ab")
        self.assertEqual(encode("ab"), b"2:ab")
        self.assertEqual(encode(""), b"0:")
        self.assertEqual(encode(0), b"i0e")
        self.assertEqual(encode(-42), b"i-42e")
        self.assertEqual(encode(True), b"i1e")
        self.assertEqual(encode(False), b"i0e")
        self.assertEqual(encode([1, "a"]), b"li1e1:ae")
        self.assertEqual(encode((1,)), b"li1ee")
        self.assertEqual(encode({}), b"de")
        self.assertEqual(encode(bytearray(b"x")), b"1:x")

    def test_dictKeepsInsertionOrder(self):
        """Keys are written in insertion order, not sorted."""
        self.assertEqual(
            encode({"result": "pong", "a": 1}), b"d6:result4:pong1:ai1ee"
        )

    def test_utf8AndSurrogateEscape(self):
        """str is UTF-8; lone surrogate escapes turn back into raw bytes."""
        self.assertEqual(encode("\u00e9"), b"2:\xc3\xa9")
        raw = b"a\xff\xfeb"
        self.assertEqual(encode(raw.decode("utf-8", "surrogateescape")), b"4:" + raw)

    def test_integerRange(self):
        """Integers are 64-bit signed: the bounds are written, one beyond
        either bound raises ValueError (a reply never carries an integer an
        ng client's strtoll would clamp)."""
        self.assertEqual(encode(2 ** 63 - 1), b"i9223372036854775807e")
        self.assertEqual(encode(-2 ** 63), b"i-9223372036854775808e")
        for bad in (2 ** 63, -2 ** 63 - 1, 10 ** 30, [1, {"n": 2 ** 64}]):
            exc = self.assertRaises(ValueError, encode, bad)
            self.assertIn("outside bencode's 64-bit signed range", str(exc))

    def test_unsupported(self):
        """Floats, None and non-string keys raise TypeError."""
        self.assertRaises(TypeError, encode, 1.5)
        self.assertRaises(TypeError, encode, None)
        self.assertRaises(TypeError, encode, {1: 2})


    def test_rememberedValues(self):
        """Remembered encodings of short strings and small ints give the
        same bytes the second time, and keep bool, int and str apart."""
        value = {"a": ["ok", 1, True, "1", 65535, -1, 70000], "b": ("ok", False, 0)}
        expected = b"d1:al2:oki1ei1e1:1i65535ei-1ei70000ee1:bl2:oki0ei0eee"
        self.assertEqual(encode(value), expected)
        self.assertEqual(encode(value), expected)
        exc = self.assertRaises(ValueError, encode, {"k": [2 ** 63]})
        self.assertIn("outside bencode's 64-bit signed range", str(exc))

    def test_deepNesting(self):
        """Nesting deeper than the recursive encoder goes gives the same
        bytes (the explicit-stack encoder), not RecursionError."""
        depth = 5000
        value = {"x": 1}
        for _ in range(depth):
            value = [value]
        self.assertEqual(encode(value), b"l" * depth + b"d1:xi1ee" + b"e" * depth)

    def test_subclasses(self):
        class S(str):
            pass

        class D(dict):
            pass

        self.assertEqual(encode(D(k=[S("v")])), b"d1:kl1:vee")


class DecodeTests(SynchronousTestCase):
    def test_values(self):
        """Strings decode to bytes, containers to list/dict."""
        self.assertEqual(
            decode(b"d7:command4:ping4:listli1ei-2e0:ee"),
            {b"command": b"ping", b"list": [1, -2, b""]},
        )

    def test_roundTrip(self):
        """encode then decode gives the same structure back (as bytes)."""
        obj = {b"sdp": b"v=0\r\nbin\x00\xff", b"n": [{b"a": 1}, [], {}]}
        self.assertEqual(decode(encode(obj)), obj)

    def test_unsortedAndDuplicateKeys(self):
        """Unsorted keys are fine; a duplicate key's last value wins."""
        self.assertEqual(decode(b"d1:bi1e1:ai2ee"), {b"b": 1, b"a": 2})
        self.assertEqual(list(decode(b"d1:bi1e1:ai2ee")), [b"b", b"a"])
        self.assertEqual(decode(b"d1:ai1e1:ai2ee"), {b"a": 2})

    def test_missingFinalEnd(self):
        """Containers left open at the end of the data are closed."""
        self.assertEqual(decode(b"d7:command4:ping"), {b"command": b"ping"})
        self.assertEqual(
            decode(b"d7:command4:ping1:xl1:a"), {b"command": b"ping", b"x": [b"a"]}
        )
        self.assertEqual(decode(b"d"), {})

    def test_leadingZeros(self):
        """i01e, i-0e, i-01e and 01:x are rejected; i0e and 0: are fine."""
        for bad in (b"i01e", b"i-0e", b"i-01e", b"i00e", b"01:x"):
            self.assertRaises(BencodeError, decode, bad)
        self.assertEqual(decode(b"i0e"), 0)
        self.assertEqual(decode(b"0:"), b"")

    def test_integerSign(self):
        """Only '-' may precede the digits: i+1e, i+0e and blanks are
        refused (rtpengine 10.5's strtoll takes them)."""
        for bad in (b"i+1e", b"i+0e", b"i+01e", b"i 5e", b"i5 e", b"i\t5e", b"i--1e", b"i-+1e"):
            exc = self.assertRaises(BencodeError, decode, bad)
            self.assertEqual(str(exc), "invalid integer %r at offset 0" % (bad[1:-1],))
        self.assertEqual(decode(b"d1:xi-7ee"), {b"x": -7})

    def test_integerRange(self):
        """The 64-bit signed bounds decode; one beyond either bound, and
        longer digit strings (never converted whole), are refused with
        BencodeError (rtpengine 10.5 clamps them to the bound)."""
        self.assertEqual(decode(b"i9223372036854775807e"), 2 ** 63 - 1)
        self.assertEqual(decode(b"i-9223372036854775808e"), -2 ** 63)
        for bad in (b"i9223372036854775808e", b"i-9223372036854775809e",
                    b"i99999999999999999999e", b"i-99999999999999999999e",
                    b"i10000000000000000000e"):
            exc = self.assertRaises(BencodeError, decode, b"d1:x" + bad + b"e")
            self.assertEqual(str(exc), "integer %r at offset 4 is outside the 64-bit "
                                       "signed range" % (bad[1:-1],))
        # far past Python's int-from-str digit limit (4300): still BencodeError
        exc = self.assertRaises(BencodeError, decode, b"i" + b"7" * 100000 + b"e")
        self.assertEqual(str(exc), "integer %r at offset 0 is outside the 64-bit "
                                   "signed range" % (b"7" * 40 + b"...",))

    def assertError(self, data, fragment):
        exc = self.assertRaises(BencodeError, decode, data)
        self.assertIn(fragment, str(exc))
        self.assertIsInstance(exc, ValueError)

    def test_errorMessages(self):
        """Every rejection says what is wrong and where."""
        self.assertError(b"d7:command4:pingx", "invalid token b'x' at offset 16")
        self.assertError(b"ie", "invalid integer b'' at offset 0")
        self.assertError(b"i1x2e", "invalid integer b'1x2' at offset 0")
        self.assertError(b"i12", "no terminating 'e'")
        self.assertError(b"i01e", "leading zero")
        self.assertError(b"i-0e", "leading zero or is -0")
        self.assertError(b"5:abc", "string of length 5 at offset 0 runs past the end")
        self.assertError(b"d7:command4:pin", "runs past the end")
        self.assertError(b"3abc", "has no ':'")
        self.assertError(b"-1:a", "invalid token b'-'")
        self.assertError(b"i1ei2e", "trailing data after the bencoded value at offset 3")
        self.assertError(b"di1ei2ee", "dictionary key at offset 1 is not a string")
        self.assertError(b"dle", "is not a string")
        self.assertError(b"d1:ae", "dictionary key b'a' has no value")
        self.assertError(b"d7:command", "has no value (end of data")
        self.assertError(b"", "no bencoded value at offset 0")
        self.assertError(b"e", "unexpected 'e' at offset 0")

    def test_nestingLimit(self):
        """MAX_DEPTH levels are accepted, one more is refused."""
        depth = bencode.MAX_DEPTH
        ok = b"l" * depth + b"e" * depth
        value = decode(ok)
        for _ in range(depth - 1):
            value = value[0]
        self.assertEqual(value, [])
        exc = self.assertRaises(BencodeError, decode, b"l" + ok + b"e")
        self.assertIn("nesting deeper than %d levels" % depth, str(exc))

    def test_deepNestingNoRecursion(self):
        """50,000 levels of nesting give BencodeError, not RecursionError."""
        for data in (b"l" * 50000 + b"e" * 50000, b"d1:x" * 50000):
            exc = self.assertRaises(BencodeError, decode, data)
            self.assertIn("nesting deeper", str(exc))

    def test_prefix(self):
        """decode_prefix reports where the value ends and ignores the rest."""
        self.assertEqual(decode_prefix(b"d1:ai1eeXYZ"), ({b"a": 1}, 8))
        self.assertEqual(decode_prefix(b"xx4:spam", 2), (b"spam", 8))

    def test_prefixStrictEnd(self):
        """With close_at_end false an unfinished container is an error."""
        exc = self.assertRaises(
            BencodeError, decode_prefix, b"d1:ai1e", 0, False
        )
        self.assertIn("not closed at end of data", str(exc))

    def test_largeString(self):
        """A 64 KB string is decoded in one piece."""
        blob = bytes(range(256)) * 256
        self.assertEqual(decode(b"65536:" + blob), blob)


class DecodeTextPrefixTests(SynchronousTestCase):
    """decode_text_prefix: str values at once, or NotFast for decode_prefix."""

    def test_request(self):
        data = (b"d7:command5:offer3:sdp4:v=0\r8:supportsl10:load limite"
                b"5:counti-12e1:xd1:a0:ee" + b"trailing")
        value, end = bencode.decode_text_prefix(data)
        self.assertEqual(value, {"command": "offer", "sdp": "v=0\r", "supports": ["load limit"],
                                 "count": -12, "x": {"a": ""}})
        self.assertEqual(end, len(data) - len(b"trailing"))

    def test_surrogateescape(self):
        value, _ = bencode.decode_text_prefix(b"d1:k2:\xff\xc3e")
        self.assertEqual(value, {"k": "\udcff\udcc3"})

    def test_left_to_decode_prefix(self):
        for data in (b"d1:ki01ee", b"d1:ki-0ee", b"d01:k1:ve", b"d1:k1:v1:k1:we",
                     b"d1:k1:v", b"di1e1:ve", b"d1:k5:abe", b"d1:ki99999999999999999999ee",
                     b"d1:kxe", b"d" + b"l" * 17 + b"e" * 17 + b"e"):
            self.assertRaises(bencode.NotFast, bencode.decode_text_prefix, data)


class PythonEncodeTests(EncodeTests):
    """EncodeTests with the C extension out of the way: bencode.py alone."""

    def setUp(self):
        self.patch(bencode, "_c", None)


class PythonDecodeTextPrefixTests(DecodeTextPrefixTests):
    """DecodeTextPrefixTests with bencode.py alone."""

    def setUp(self):
        self.patch(bencode, "_c", None)


def _outcome(function, *args):
    """What ``function(*args)`` gives: ("value", ascii of it) or
    ("error", exception type, text)."""
    try:
        return ("value", ascii(function(*args)))
    except Exception as e:
        return ("error", type(e), str(e))


#: inputs at the edges of what the fast decoders take
EDGE_INPUTS = (
    b"", b"e", b"x", b"d", b"l", b"de", b"le", b"dee", b"lee", b"0:", b"00:", b"01:x", b"1:",
    b"1:a", b"1:ab", b"3:\xed\xa0\x80", b"2:\xff\xfe", b"-1:a", b":", b"1", b"12",
    b"i0e", b"i-0e", b"i00e", b"i01e", b"i-01e", b"ie", b"i-e", b"i--1e", b"i+1e", b"i1",
    b"i-", b"i", b"i 1e", b"i1 e", b"i12x", b"i9223372036854775807e",
    b"i9223372036854775808e", b"i-9223372036854775808e", b"i-9223372036854775809e",
    b"i" + b"9" * 19 + b"e", b"i-" + b"9" * 19 + b"e", b"i" + b"1" * 20 + b"e",
    b"i1000000000000000000e", b"i-1000000000000000000e", b"i\xd9\xa1e",
    b"1" * 20 + b":", b"1" * 21 + b":", b"9" * 30 + b":x", b"\xd9\xa1:x",
    b"d1:k1:v1:k1:we", b"d1:ki1ee", b"d1:ki01ee", b"di1e1:ve", b"dle1:ve", b"d1:kle",
    b"d1:kd1:kdeee", b"d1:kxe", b"d1:k5:abe", b"d1:k1:vextra", b"l1:ai1eli-2eedee",
    b"l" * 15 + b"e" * 15, b"l" * 16 + b"e" * 16, b"l" * 17 + b"e" * 17,
    b"d1:k" * 15 + b"de" + b"e" * 15, b"d1:k" * 16 + b"de" + b"e" * 16,
    b"d1:kl" + b"d1:k" * 14 + b"i1e" + b"e" * 14 + b"ee",
    b"d3:\xc3\xa9t1:v2:\xc3e", b"d1:\xff0:1:\xfe0:e",
)


class FastMatchesPythonTests(SynchronousTestCase):
    """omnirtp.control._fastbencode gives what bencode.py gives: the same
    bytes, the same values (types and key order), NotFast and every error
    text where bencode.py gives them.  Needs the extension built
    (``setup.py build_ext --inplace``; scripts/run-tests does it): without
    it these tests fail, they do not skip."""

    def setUp(self):
        from omnirtp.control import _fastbencode
        self.fast = _fastbencode
        self.assertIs(bencode._c, _fastbencode)

    def assertSameDecode(self, data):
        fast = self.fast.decode_text_prefix(data)
        slow = _outcome(bencode.decode_text_prefix_py, data)
        if slow[0] == "error":
            self.assertIs(slow[1], bencode.NotFast, (data, slow))
            self.assertIsNone(fast, data)
        else:
            self.assertEqual(("value", ascii(fast)), slow, data)
        # the wrapper ng.py calls gives the same outcome as bencode.py alone
        self.assertEqual(_outcome(bencode.decode_text_prefix, data), slow, data)

    def assertSameEncode(self, value):
        slow = _outcome(bencode.encode_py, value)
        self.assertEqual(_outcome(bencode.encode, value), slow, ascii(value))
        fast = self.fast.encode(value)
        if fast is not None:
            self.assertEqual(("value", ascii(fast)), slow, ascii(value))

    def ng_payloads(self):
        """The payloads of every ng fixture and of the fuzz fixtures' ng
        datagrams (cookie cut off), and the fixtures' own bytes."""
        import os
        from omnirtp.test import fuzz
        here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
        out = []
        for folder in ("ng", os.path.join("fuzz", "ng"), os.path.join("fuzz", "sdp")):
            for name in sorted(os.listdir(os.path.join(here, folder))):
                with open(os.path.join(here, folder, name), "rb") as f:
                    data = f.read()
                out.append(data)
                out.append(data.partition(b" ")[2])
                for item in fuzz.unframe(data):
                    if isinstance(item, bytes):
                        out.append(item)
                        out.append(item.partition(b" ")[2])
        self.assertGreater(len(out), 40)
        return out

    def test_decodeEdges(self):
        for data in EDGE_INPUTS:
            self.assertSameDecode(data)
            for cut in range(len(data)):
                self.assertSameDecode(data[:cut])

    def test_decodeFixtures(self):
        for data in self.ng_payloads():
            self.assertSameDecode(data)

    def test_decodeNotBytes(self):
        """Other bytes-like input goes to bencode.py (bytes() of it)."""
        self.assertIsNone(self.fast.decode_text_prefix(bytearray(b"1:a")))
        self.assertEqual(bencode.decode_text_prefix(bytearray(b"1:a")), ("a", 3))
        self.assertEqual(bencode.decode_text_prefix(memoryview(b"d1:ai1ee")), ({"a": 1}, 8))

    def test_decodeGenerated(self):
        """Generated, then mutated bencode (the fuzz target's inputs)."""
        from hypothesis import HealthCheck, given, settings
        from omnirtp.test import fuzz

        @settings(max_examples=1500, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(fuzz.bencode_inputs)
        def check(data):
            self.assertSameDecode(data)
        check()

    def test_encodeEdges(self):
        class S(str):
            pass

        class B(bytes):
            pass

        class I(int):
            pass

        values = [
            0, -1, 1, True, False, 2 ** 63 - 1, -2 ** 63, 2 ** 63, -2 ** 63 - 1, 10 ** 40,
            "", "a", "\u00e9", "\U0001f600", "a\udcff", "\udcc3\udca9", "\ud800", "x\udfff",
            b"", b"\x00\xff", bytearray(b"ab"), memoryview(b"mv"), S("s"), B(b"b"), I(5),
            None, 1.5, [], (), {}, [1, [2, [3]]], (1, "a", b"b"),
            {"a": 1, b"b": 2, "\u00e9": 3, "k\udcff": 4}, {1: 2}, {None: 1}, {S("k"): 1},
            {B(b"k"): 1}, {"k": [2 ** 63]}, {"k": {"k": None}}, {"k": "\ud800"},
            {"k": [1, 2, 3, 1.0]}, [[[[[[]]]]]] * 3,
        ]
        deep = {"x": 1}
        for _ in range(200):
            deep = [deep]
        values.append(deep)
        for value in values:
            self.assertSameEncode(value)
        # what C leaves to bencode.py
        for value in ([1.5], {"k": S("v")}, {1: 2}, 2 ** 63, "\ud800", memoryview(b"m"),
                      {B(b"k"): 1}):
            self.assertIsNone(self.fast.encode(value), ascii(value))

    def test_encodeReplies(self):
        """The side-by-side corpus's requests (encoded, then decoded as ng
        does), its bad inputs, and the fixtures' requests inside replies."""
        from omnirtp.test import corpus
        self.assertGreater(len(corpus.CASES), 20)
        for case in corpus.CASES:
            for request in case.requests:
                self.assertSameEncode(request)
                data = bencode.encode(request)
                self.assertSameDecode(data)
                self.assertSameEncode(bencode.decode_text_prefix(data)[0])
        for bad in corpus.BAD_INPUT:
            self.assertSameDecode(bad.payload)
        for data in self.ng_payloads():
            try:
                value, _ = bencode.decode_text_prefix(data)
            except bencode.NotFast:
                continue
            self.assertSameEncode(value)
            self.assertSameEncode({"result": "ok", "sdp": value, "n": [value, 7, -7]})

    def test_encodeGenerated(self):
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        text = st.text(st.characters(blacklist_categories=()), max_size=12)
        scalars = st.one_of(text, st.binary(max_size=12), st.booleans(),
                            st.integers(-2 ** 64, 2 ** 64), st.integers(-300, 70000))
        values = st.recursive(
            scalars,
            lambda inner: st.one_of(
                st.lists(inner, max_size=5),
                st.lists(inner, max_size=5).map(tuple),
                st.dictionaries(st.one_of(text, st.binary(max_size=6)), inner, max_size=5),
            ),
            max_leaves=30,
        )

        @settings(max_examples=1500, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(values)
        def check(value):
            self.assertSameEncode(value)
        check()
