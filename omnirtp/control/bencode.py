"""Bencode as rtpengine's ng protocol uses it.

``encode`` writes dictionaries in insertion order (rtpengine does not sort
its output and Kamailio does not sort its requests).  ``decode`` returns
``bytes`` for every string, dictionary keys included.

The decoder is iterative: nesting is tracked on an explicit stack and capped
at :data:`MAX_DEPTH`, so hostile input (tens of thousands of ``l``) is
refused with :class:`BencodeError` instead of exhausting Python's recursion
limit.  (rtpengine 10.5 itself decodes recursively and crashes on such
input; Kamailio never nests deeper than three levels.)

Leniency, as in rtpengine 10.5: dictionary keys may come in any order;
a duplicate key replaces the earlier value; containers still open when the
data ends are closed as if their ``e`` had been sent (only between items:
a dictionary key without its value is still an error).

``encode`` and ``decode_text_prefix`` hand the common cases to the C
extension :mod:`omnirtp.control._fastbencode` when it is built; it answers
only what it can answer byte for byte as the Python code here does and
leaves the rest (anything unusual, every error) to it, so results and error
texts do not depend on whether it is there (``omnirtp.test.test_bencode``
runs both on the same inputs).

Integers are strict, unlike rtpengine 10.5 (which reads them with
``strtoll``: a ``+``, blanks, ``-0``, ``-01`` pass, and values beyond 64
bits are clamped to the nearest bound): an optional ``-``, digits without a
leading zero, and a value from :data:`INT_MIN` to :data:`INT_MAX`, both
when decoding and when encoding.
"""

MAX_DEPTH = 64
"""Deepest nesting of lists/dictionaries ``decode`` accepts."""

INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1
"""The integers bencode carries here: 64-bit signed, rtpengine's ``long long``."""

_INT_DIGITS = len(str(INT_MAX))  # 19: no more digits are read into an int

_MAX_LENGTH_DIGITS = 20
_DIGITS = frozenset(b"0123456789")

_INT, _LIST, _DICT, _END = ord("i"), ord("l"), ord("d"), ord("e")
_NON_STRING = frozenset((_INT, _LIST, _DICT))

_NO_KEY = object()


try:
    from omnirtp.control import _fastbencode as _c
except ImportError:  # not built: the Python code below does everything
    _c = None


class BencodeError(ValueError):
    """The data is not valid bencode; the message says what and where."""


def encode(obj):
    """Return the bencoding of ``obj`` as bytes (see :func:`encode_py`;
    the C extension encodes what it can, the same bytes)."""
    if _c is not None:
        data = _c.encode(obj)
        if data is not None:
            return data
    return encode_py(obj)


def encode_py(obj):
    """Return the bencoding of ``obj`` as bytes.

    ``str`` is encoded as UTF-8 with ``surrogateescape`` (so strings that
    came from :func:`decode` + surrogateescape round-trip byte-exactly),
    ``bytes``/``bytearray``/``memoryview`` as they are, ``bool`` and ``int``
    as integers (ValueError outside :data:`INT_MIN`..:data:`INT_MAX`),
    ``list``/``tuple`` as lists and ``dict`` as a dictionary whose keys
    (``str`` or ``bytes``) keep their insertion order.

    One Python call per container (none per value: str and int values of
    dictionaries and lists are written in the container's own loop); the
    encodings of str dictionary keys, of short str values and of small
    ints are remembered (:data:`_KEYS`, :data:`_VALUES`, bounded), as a
    reply's words ("ok", "IPv4", "RTP", its addresses) come back in every
    reply.  Structures nested deeper than :data:`_DEEP` levels go to
    :func:`_encode_stack` (an explicit stack, no recursion).
    """
    out = []
    try:
        _put(obj, out.append, 0)
    except _TooDeep:
        return _encode_stack(obj)
    return b"".join(out)


#: containers nested deeper than this are encoded by _encode_stack
_DEEP = 32

#: short str value -> its encoding, and int -> its encoding (bounded)
_VALUES = {}
_INTS = {}
_VALUES_MAX = 4096
_VALUE_CHARS = 48


class _TooDeep(Exception):
    pass


def _text(value):
    """The encoding of str ``value`` (remembered when short)."""
    data = value.encode("utf-8", "surrogateescape")
    encoded = b"%d:%s" % (len(data), data)
    if len(value) <= _VALUE_CHARS and len(_VALUES) < _VALUES_MAX:
        _VALUES[value] = encoded
    return encoded


def _integer(value):
    """The encoding of int ``value`` (exact int; remembered when small)."""
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError(
            "integer %d is outside bencode's 64-bit signed range" % (value,))
    encoded = b"i%de" % value
    if -1 <= value <= 65535 and len(_INTS) < _VALUES_MAX:
        _INTS[value] = encoded
    return encoded


def _put(value, append, depth):
    t = type(value)
    if t is dict:
        if depth >= _DEEP:
            raise _TooDeep()
        append(b"d")
        keys, values, ints = _KEYS, _VALUES, _INTS
        for key, item in value.items():
            k = keys.get(key) if type(key) is str else None
            append(k if k is not None else _key(key))
            t = type(item)
            if t is str:
                e = values.get(item)
                append(e if e is not None else _text(item))
            elif t is int:
                e = ints.get(item)
                append(e if e is not None else _integer(item))
            else:
                _put(item, append, depth + 1)
        append(b"e")
    elif t is list or t is tuple:
        if depth >= _DEEP:
            raise _TooDeep()
        append(b"l")
        values, ints = _VALUES, _INTS
        for item in value:
            t = type(item)
            if t is str:
                e = values.get(item)
                append(e if e is not None else _text(item))
            elif t is int:
                e = ints.get(item)
                append(e if e is not None else _integer(item))
            else:
                _put(item, append, depth + 1)
        append(b"e")
    elif t is str:
        e = _VALUES.get(value)
        append(e if e is not None else _text(value))
    elif t is int:
        e = _INTS.get(value)
        append(e if e is not None else _integer(value))
    else:
        kind = _KINDS.get(t)
        if kind is None:
            kind = _kind_of(value)
        if kind == _K_STR:
            data = str.encode(value, "utf-8", "surrogateescape")
            append(b"%d:%s" % (len(data), data))
        elif kind == _K_BYTES:
            data = bytes(value)
            append(b"%d:%s" % (len(data), data))
        elif kind == _K_INT:
            append(_integer(int(value)))
        elif kind == _K_LIST:
            _put(list(value), append, depth)
        else:
            _put(dict(value), append, depth)


def _encode_stack(obj):
    """:func:`encode` for deep structures: one loop over an explicit stack
    of open containers, no Python call per value or container."""
    out = []
    append = out.append
    stack = []
    kinds = _KINDS
    keys = _KEYS
    items, in_dict = iter((obj,)), False
    while True:
        for value in items:
            if in_dict:
                key, value = value
                k = keys.get(key) if type(key) is str else None
                append(k if k is not None else _key(key))
            t = type(value)
            if t is str:
                data = value.encode("utf-8", "surrogateescape")
                append(b"%d:%s" % (len(data), data))
                continue
            kind = kinds.get(t)
            if kind is None:
                kind = _kind_of(value)
            if kind == _K_STR:
                data = str.encode(value, "utf-8", "surrogateescape")
                append(b"%d:%s" % (len(data), data))
            elif kind == _K_DICT:
                append(b"d")
                stack.append((items, in_dict))
                items, in_dict = iter(value.items()), True
                break
            elif kind == _K_LIST:
                append(b"l")
                stack.append((items, in_dict))
                items, in_dict = iter(value), False
                break
            elif kind == _K_BYTES:
                data = bytes(value)
                append(b"%d:%s" % (len(data), data))
            else:
                if not INT_MIN <= value <= INT_MAX:
                    raise ValueError(
                        "integer %d is outside bencode's 64-bit signed range" % (value,))
                append(b"i%de" % int(value))
        else:
            if not stack:
                return b"".join(out)
            append(b"e")
            items, in_dict = stack.pop()


_K_STR, _K_BYTES, _K_INT, _K_LIST, _K_DICT = range(5)
_KINDS = {str: _K_STR, bytes: _K_BYTES, bytearray: _K_BYTES, memoryview: _K_BYTES,
          int: _K_INT, bool: _K_INT, list: _K_LIST, tuple: _K_LIST, dict: _K_DICT}

#: str dictionary key -> its encoding ("6:result"); replies use few keys
_KEYS = {}
_KEYS_MAX = 1024


def _key(key):
    """The encoding of a dictionary key (remembered for exact str keys)."""
    if isinstance(key, str):
        data = str.encode(key, "utf-8", "surrogateescape")
    elif isinstance(key, (bytes, bytearray)):
        data = bytes(key)
    else:
        raise TypeError(
            "bencode dictionary keys must be str or bytes, not %s" % (type(key).__name__,)
        )
    data = b"%d:%s" % (len(data), data)
    if type(key) is str and len(_KEYS) < _KEYS_MAX:
        _KEYS[key] = data
    return data


def _kind_of(value):
    """The kind of a value whose exact type is not in ``_KINDS`` (subclasses)."""
    if isinstance(value, str):
        return _K_STR
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _K_BYTES
    if isinstance(value, int):
        return _K_INT
    if isinstance(value, (list, tuple)):
        return _K_LIST
    if isinstance(value, dict):
        return _K_DICT
    raise TypeError("cannot bencode a value of type %s" % (type(value).__name__,))


def decode(data):
    """Decode one bencoded value that fills all of ``data``.

    Raises :class:`BencodeError` on a bad token, an integer with a sign
    other than ``-``, leading zeros, ``-0`` or a value outside 64-bit
    signed, a string running past the end, bytes left after the value,
    nesting deeper than :data:`MAX_DEPTH` or a non-string key.
    """
    value, end = decode_prefix(data)
    if end != len(data):
        raise BencodeError(
            "trailing data after the bencoded value at offset %d (%d bytes)"
            % (end, len(data) - end)
        )
    return value


def decode_prefix(data, start=0, close_at_end=True):
    """Decode the bencoded value starting at ``data[start]``.

    Returns ``(value, end)`` where ``end`` is the offset just past the
    value; whatever follows is left alone (rtpengine ignores bytes after
    the request dictionary).  With ``close_at_end`` false, running out of
    data inside a container is an error (for stream framing: wait for
    more) instead of closing it.
    """
    data = bytes(data)
    n = len(data)
    pos = start
    # stack of open containers; for a dict the pending key sits in keys
    stack = []
    keys = []
    while True:
        if pos >= n:
            if not stack:
                raise BencodeError("no bencoded value at offset %d (end of data)" % pos)
            if keys[-1] is not _NO_KEY:
                raise BencodeError(
                    "dictionary key %r has no value (end of data at offset %d)"
                    % (keys[-1], pos)
                )
            if not close_at_end:
                raise BencodeError(
                    "%d container(s) not closed at end of data (offset %d)"
                    % (len(stack), pos)
                )
            # lenient: the end of the data closes the innermost container
            value = stack.pop()
            keys.pop()
            if not stack:
                return value, n
            _store(stack[-1], keys, value)
            continue
        c = data[pos]
        top_is_dict = bool(stack) and type(stack[-1]) is dict
        if top_is_dict and keys[-1] is _NO_KEY and c in _NON_STRING:
            raise BencodeError(
                "dictionary key at offset %d is not a string (starts with %r)"
                % (pos, bytes((c,)))
            )
        if c == _LIST or c == _DICT:
            if len(stack) >= MAX_DEPTH:
                raise BencodeError(
                    "nesting deeper than %d levels at offset %d" % (MAX_DEPTH, pos)
                )
            stack.append([] if c == _LIST else {})
            keys.append(_NO_KEY)
            pos += 1
            continue
        if c == _END:
            if not stack:
                raise BencodeError("unexpected 'e' at offset %d" % pos)
            if keys[-1] is not _NO_KEY:
                raise BencodeError(
                    "dictionary key %r has no value (container ends at offset %d)"
                    % (keys[-1], pos)
                )
            value = stack.pop()
            keys.pop()
            pos += 1
        elif c == _INT:
            value, pos = _decode_int(data, pos)
        elif c in _DIGITS:
            value, pos = _decode_string(data, pos, n)
        else:
            raise BencodeError("invalid token %r at offset %d" % (bytes((c,)), pos))
        if not stack:
            return value, pos
        _store(stack[-1], keys, value)


class NotFast(Exception):
    """:func:`decode_text_prefix` met something its fast path leaves to
    :func:`decode_prefix` (which then gives the value or the error)."""


#: containers nested deeper than this go the general way
_FAST_DEPTH = 16


def decode_text_prefix(data):
    """:func:`decode_text_prefix_py`, by the C extension when it is built
    (which takes exactly what the Python fast path takes)."""
    if _c is not None:
        result = _c.decode_text_prefix(data)
        if result is not None:
            return result
        if type(data) is bytes:
            raise NotFast()
    return decode_text_prefix_py(data)


def decode_text_prefix_py(data):
    """``(value, end)`` as :func:`decode_prefix` gives them, but with every
    string (dictionary keys included) decoded as UTF-8 with
    ``surrogateescape``: the form ng requests are handled in.

    A fast path for well-formed input (canonical lengths and integers,
    closed containers, at most 16 levels, no duplicate keys): a string is
    sliced and decoded in one step, no stack of pending keys.  Whatever it
    does not take (raising :class:`NotFast`), the caller decodes with
    :func:`decode_prefix`, which gives the same value or the error.
    """
    try:
        return _fast(bytes(data), 0, 0)
    except (IndexError, ValueError):
        raise NotFast()


def _fast_length(data, pos):
    colon = data.find(b":", pos, pos + _MAX_LENGTH_DIGITS + 1)
    text = data[pos:colon]
    if colon < 0 or not text.isdigit() or (text[0] == 48 and len(text) > 1):
        raise NotFast()
    end = colon + 1 + int(text)
    if end > len(data):
        raise NotFast()
    return colon + 1, end


def _fast(data, pos, depth):
    c = data[pos]
    if 48 <= c <= 57:
        begin, end = _fast_length(data, pos)
        return data[begin:end].decode("utf-8", "surrogateescape"), end
    if c == _DICT:
        if depth >= _FAST_DEPTH:
            raise NotFast()
        out = {}
        pos += 1
        find = data.find
        n = len(data)
        # keys and string values are read in this loop (no call per string)
        while data[pos] != _END:
            colon = find(b":", pos, pos + _MAX_LENGTH_DIGITS + 1)
            text = data[pos:colon]
            if colon < 0 or not text.isdigit() or (text[0] == 48 and len(text) > 1):
                raise NotFast()
            pos = colon + 1 + int(text)
            if pos > n:
                raise NotFast()
            key = data[colon + 1:pos].decode("utf-8", "surrogateescape")
            if key in out:
                raise NotFast()
            c = data[pos]
            if 48 <= c <= 57:
                colon = find(b":", pos, pos + _MAX_LENGTH_DIGITS + 1)
                text = data[pos:colon]
                if colon < 0 or not text.isdigit() or (text[0] == 48 and len(text) > 1):
                    raise NotFast()
                pos = colon + 1 + int(text)
                if pos > n:
                    raise NotFast()
                out[key] = data[colon + 1:pos].decode("utf-8", "surrogateescape")
            else:
                out[key], pos = _fast(data, pos, depth + 1)
        return out, pos + 1
    if c == _LIST:
        if depth >= _FAST_DEPTH:
            raise NotFast()
        out = []
        pos += 1
        while data[pos] != _END:
            value, pos = _fast(data, pos, depth + 1)
            out.append(value)
        return out, pos + 1
    if c == _INT:
        end = data.index(b"e", pos + 1)
        text = data[pos + 1:end]
        digits = text[1:] if text[:1] == b"-" else text
        if not digits.isdigit() or len(digits) > _INT_DIGITS or \
                (digits[0] == 48 and (len(digits) > 1 or text[:1] == b"-")):
            raise NotFast()
        value = int(text)
        if not INT_MIN <= value <= INT_MAX:
            raise NotFast()
        return value, end + 1
    raise NotFast()


def _store(top, keys, value):
    if type(top) is list:
        top.append(value)
    elif keys[-1] is _NO_KEY:
        keys[-1] = value
    else:
        top[keys[-1]] = value
        keys[-1] = _NO_KEY


def _decode_int(data, pos):
    end = data.find(b"e", pos + 1)
    if end < 0:
        raise BencodeError("integer at offset %d has no terminating 'e'" % pos)
    text = data[pos + 1:end]
    digits = text[1:] if text[:1] == b"-" else text
    if not digits or not digits.isdigit() or not digits.isascii():
        raise BencodeError("invalid integer %r at offset %d" % (text, pos))
    if digits[:1] == b"0" and (len(digits) > 1 or text[:1] == b"-"):
        raise BencodeError(
            "integer %r at offset %d has a leading zero or is -0" % (text, pos)
        )
    value = int(text) if len(digits) <= _INT_DIGITS else None
    if value is None or not INT_MIN <= value <= INT_MAX:
        raise BencodeError(
            "integer %r at offset %d is outside the 64-bit signed range"
            % (text if len(text) <= 40 else text[:40] + b"...", pos)
        )
    return value, end + 1


def _decode_string(data, pos, n):
    colon = data.find(b":", pos, pos + _MAX_LENGTH_DIGITS + 1)
    if colon < 0:
        raise BencodeError("string length at offset %d has no ':'" % pos)
    text = data[pos:colon]
    if not text.isdigit() or not text.isascii():
        raise BencodeError("invalid string length %r at offset %d" % (text, pos))
    if text[:1] == b"0" and len(text) > 1:
        raise BencodeError(
            "string length %r at offset %d has a leading zero" % (text, pos)
        )
    length = int(text)
    begin = colon + 1
    if begin + length > n:
        raise BencodeError(
            "string of length %d at offset %d runs past the end of data "
            "(%d bytes left)" % (length, pos, n - begin)
        )
    return data[begin:begin + length], begin + length
