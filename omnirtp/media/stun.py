"""STUN for ICE on the media sockets: decoding with checks, encoding, one compat point.

The message codec is aioice's (``aioice.stun``: ``Message``, ``parse_message``,
``message_integrity``, ``message_fingerprint``), which exists in Debian 12's
python3-aioice 0.8 and in the current PyPI release (0.13).  What this module adds:

- :func:`decode` checks the framing aioice leaves alone (the magic cookie, the
  top two bits, a body length that is a multiple of 4 and matches the
  datagram, every attribute inside the message, FINGERPRINT last and correct)
  and lists the comprehension-required attributes we do not understand, so
  the agent can answer 420 with UNKNOWN-ATTRIBUTES (RFC 5389 7.3.1);
- attributes after MESSAGE-INTEGRITY (other than FINGERPRINT) are ignored as
  RFC 5389 15.4 says, on both aioice versions (0.8 keeps them, 0.13 drops them);
- :func:`integrity_ok` is the single place where the two aioice versions
  differ for us: 0.13 verifies MESSAGE-INTEGRITY with
  ``Message.check_message_integrity(key)``, 0.8 only through
  ``parse_message(data, integrity_key=key)`` (raising ``ValueError``);
- encoders for the messages an ICE agent sends (requests, success and error
  responses), with MESSAGE-INTEGRITY and FINGERPRINT where RFC 8445 wants them.
  ``Message.add_fingerprint`` is 0.13 only, so FINGERPRINT without integrity
  is added here with ``message_fingerprint`` (present in both).

Nothing here raises anything but :class:`StunError` (a ``ValueError``) for bad
input; STUN is not on the per-packet media path (a few checks per second).
"""

from struct import error as StructError
from struct import pack, unpack_from

from aioice import stun as _stun

Message = _stun.Message
Method = _stun.Method
Class = _stun.Class
COOKIE = _stun.COOKIE
HEADER_LENGTH = _stun.HEADER_LENGTH

# attribute types (RFC 5389 18.2, RFC 8445 16.1)
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
REALM = 0x0014
NONCE = 0x0015
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
FINGERPRINT = 0x8028

#: comprehension-required attributes (type < 0x8000) that we understand; any
#: other one in a request is answered with 420 (the same set on both aioice
#: versions, whatever their attribute tables hold)
KNOWN_REQUIRED = frozenset(
    (
        MAPPED_ADDRESS,
        USERNAME,
        MESSAGE_INTEGRITY,
        ERROR_CODE,
        UNKNOWN_ATTRIBUTES,
        REALM,
        NONCE,
        XOR_MAPPED_ADDRESS,
        PRIORITY,
        USE_CANDIDATE,
    )
)

#: reason phrases (RFC 5389 15.6, RFC 8445 16.2)
REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    420: "Unknown Attribute",
    487: "Role Conflict",
}


class StunError(ValueError):
    """A datagram that is not a well-formed STUN message."""


class BadFingerprint(StunError):
    """A STUN message whose FINGERPRINT does not match its contents."""


def is_stun(data):
    """True if ``data`` looks like STUN: at least a header, top two bits 0,
    the magic cookie (RFC 5389 6).  Cheap; no parsing."""
    return len(data) >= HEADER_LENGTH and not data[0] & 0xC0 and data[4:8] == b"\x21\x12\xa4\x42"


class Decoded:
    """A decoded message and what :func:`decode` learnt about its framing."""

    __slots__ = ("message", "unknown", "integrity", "fingerprint")

    def __init__(self, message, unknown, integrity, fingerprint):
        #: the ``aioice.stun.Message``
        self.message = message
        #: comprehension-required attribute types we do not understand (tuple)
        self.unknown = unknown
        #: MESSAGE-INTEGRITY is present
        self.integrity = integrity
        #: FINGERPRINT is present (and correct, or decode would have raised)
        self.fingerprint = fingerprint


def decode(data):
    """Decode one STUN message; return a :class:`Decoded`.

    Raises :class:`BadFingerprint` when FINGERPRINT is present and wrong, and
    :class:`StunError` for every other malformation (including an unknown
    method, which aioice cannot represent).  MESSAGE-INTEGRITY is not checked
    here (the key depends on the message): see :func:`integrity_ok`.
    """
    n = len(data)
    if n < HEADER_LENGTH:
        raise StunError("STUN message shorter than its 20-byte header")
    mtype, length, cookie = unpack_from("!HHI", data)
    if mtype & 0xC000:
        raise StunError("not a STUN message (top bits set)")
    if cookie != COOKIE:
        raise StunError("STUN message without the magic cookie")
    if length & 3 or n != HEADER_LENGTH + length:
        raise StunError("STUN message length %d does not match the datagram (%d bytes)" % (length, n))
    pos = HEADER_LENGTH
    unknown = []
    early = set()
    late = set()
    integrity = fingerprint = False
    while pos < n:  # pos and n are 4-aligned: an attribute header always fits
        if fingerprint:
            raise StunError("STUN attribute after FINGERPRINT")
        atype, alen = unpack_from("!HH", data, pos)
        end = pos + 4 + alen
        if end + (-alen & 3) > n:
            raise StunError("STUN attribute 0x%04x overruns the message" % atype)
        if atype == FINGERPRINT:
            if alen != 4:
                raise StunError("STUN FINGERPRINT of length %d" % alen)
            if unpack_from("!I", data, pos + 4)[0] != _stun.message_fingerprint(data[:pos]):
                raise BadFingerprint("STUN FINGERPRINT does not match")
            fingerprint = True
        elif integrity:
            late.add(atype)
        elif atype == MESSAGE_INTEGRITY:
            if alen != 20:
                raise StunError("STUN MESSAGE-INTEGRITY of length %d" % alen)
            integrity = True
        else:
            early.add(atype)
            if atype < 0x8000 and atype not in KNOWN_REQUIRED and atype not in unknown:
                unknown.append(atype)
        pos = end + (-alen & 3)
    try:
        message = _stun.parse_message(data)
    except (ValueError, StructError, KeyError, IndexError) as e:
        raise StunError("STUN message not decodable: %s" % (e,)) from None
    # RFC 5389 15.4: ignore what follows MESSAGE-INTEGRITY (except
    # FINGERPRINT); aioice 0.8 keeps it, 0.13 drops it.
    for atype in late:
        if atype in early:
            raise StunError("STUN attribute 0x%04x repeated after MESSAGE-INTEGRITY" % atype)
        entry = _stun.ATTRIBUTES_BY_TYPE.get(atype)
        if entry is not None:
            message.attributes.pop(entry[1], None)
    return Decoded(message, tuple(unknown), integrity, fingerprint)


# --- the one place where aioice 0.8 and 0.13 differ for us ----------------
_check_method = getattr(Message, "check_message_integrity", None)


def integrity_ok(message, data, key):
    """True if ``message`` (decoded from ``data``) carries a MESSAGE-INTEGRITY
    made with ``key`` (bytes: the ICE password, RFC 5389 15.4 short-term)."""
    if "MESSAGE-INTEGRITY" not in message.attributes:
        return False
    if _check_method is not None:  # aioice >= 0.9
        return bool(_check_method(message, key))
    try:  # aioice 0.8: parse_message verifies the HMAC when given the key
        _stun.parse_message(data, integrity_key=key)
    except ValueError:
        return False
    return True


# --- encoding --------------------------------------------------------------
def _append(data, atype, value):
    """``data`` (a whole message) with one more attribute; body length fixed."""
    pad = -len(value) & 3
    body = len(data) - HEADER_LENGTH + 4 + len(value) + pad
    return data[:2] + pack("!H", body) + data[4:] + pack("!HH", atype, len(value)) + value + bytes(pad)


def _seal(data, key):
    """Append MESSAGE-INTEGRITY (when ``key``) and FINGERPRINT."""
    if key is not None:
        data = _append(data, MESSAGE_INTEGRITY, _stun.message_integrity(data, key))
    return _append(data, FINGERPRINT, pack("!I", _stun.message_fingerprint(data)))


def encode(message, key=None):
    """Bytes of ``message`` with MESSAGE-INTEGRITY (if ``key``) and FINGERPRINT."""
    return _seal(bytes(message), key)


def binding_request(transaction_id, attributes, key):
    """A Binding request: ``attributes`` (aioice names) then MESSAGE-INTEGRITY
    with ``key`` and FINGERPRINT."""
    return encode(Message(Method.BINDING, Class.REQUEST, transaction_id, dict(attributes)), key)


def binding_success(request, address, key):
    """The success response to ``request`` from ``address``: XOR-MAPPED-ADDRESS,
    MESSAGE-INTEGRITY (``key``: our password) and FINGERPRINT."""
    message = Message(Method.BINDING, Class.RESPONSE, request.transaction_id)
    message.attributes["XOR-MAPPED-ADDRESS"] = (address[0], address[1])
    return encode(message, key)


def error_response(request, code, key=None, unknown=()):
    """An error response to ``request``.  400 and 401 go unsigned (RFC 5389
    10.1.2: the request was not authenticated): pass ``key=None``.  420 lists
    ``unknown`` in UNKNOWN-ATTRIBUTES."""
    message = Message(request.message_method, Class.ERROR, request.transaction_id)
    message.attributes["ERROR-CODE"] = (code, REASONS.get(code, "Error"))
    data = bytes(message)
    if unknown:
        data = _append(data, UNKNOWN_ATTRIBUTES, b"".join(pack("!H", t) for t in unknown))
    return _seal(data, key)
