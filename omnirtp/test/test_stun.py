"""Tests for omnirtp.media.stun: aioice's codec with our framing checks, on both aioice versions."""

from struct import pack, unpack_from

from aioice import stun as aioice_stun
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.media import stun

# RFC 5769 2.1: sample request (short-term credentials, password below)
RFC5769_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
# RFC 5769 2.2: sample IPv4 response
RFC5769_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
TID = bytes(range(12))


def attributes_of(data):
    """[(type, value bytes)] of a message, walked by hand (independent of the code under test)."""
    out = []
    pos = 20
    while pos < len(data):
        atype, alen = unpack_from("!HH", data, pos)
        out.append((atype, data[pos + 4 : pos + 4 + alen]))
        pos += 4 + alen + (-alen & 3)
    return out


def with_length(data, length):
    return data[:2] + pack("!H", length) + data[4:]


class DecodeTests(SynchronousTestCase):
    def test_rfc5769_request(self):
        decoded = stun.decode(RFC5769_REQUEST)
        message = decoded.message
        self.assertEqual(message.message_method, stun.Method.BINDING)
        self.assertEqual(message.message_class, stun.Class.REQUEST)
        self.assertEqual(message.transaction_id, bytes.fromhex("b7e7a701bc34d686fa87dfae"))
        self.assertEqual(message.attributes["USERNAME"], "evtj:h6vY")
        self.assertEqual(message.attributes["PRIORITY"], 0x6E0001FF)
        self.assertEqual(message.attributes["ICE-CONTROLLED"], 0x932FF9B151263B36)
        self.assertEqual((decoded.unknown, decoded.integrity, decoded.fingerprint), ((), True, True))
        self.assertTrue(stun.integrity_ok(message, RFC5769_REQUEST, RFC5769_PASSWORD))
        self.assertFalse(stun.integrity_ok(message, RFC5769_REQUEST, b"VOkJxbRl1RmTxUk/WvJxBx"))

    def test_rfc5769_response(self):
        decoded = stun.decode(RFC5769_RESPONSE)
        self.assertEqual(decoded.message.message_class, stun.Class.RESPONSE)
        self.assertEqual(decoded.message.attributes["XOR-MAPPED-ADDRESS"], ("192.0.2.1", 32853))
        self.assertTrue(stun.integrity_ok(decoded.message, RFC5769_RESPONSE, RFC5769_PASSWORD))

    def test_integrity_missing(self):
        data = stun.encode(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, TID, {"USERNAME": "a:b"}))
        decoded = stun.decode(data)
        self.assertEqual((decoded.integrity, decoded.fingerprint), (False, True))
        self.assertFalse(stun.integrity_ok(decoded.message, data, b"key"))

    def test_no_fingerprint(self):
        data = bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, TID, {"USERNAME": "a:b"}))
        decoded = stun.decode(data)
        self.assertEqual((decoded.integrity, decoded.fingerprint), (False, False))

    def assertMalformed(self, data, reason, exception=stun.StunError):
        e = self.assertRaises(exception, stun.decode, data)
        self.assertEqual(str(e), reason)

    def test_short(self):
        self.assertMalformed(RFC5769_REQUEST[:19], "STUN message shorter than its 20-byte header")
        self.assertMalformed(b"", "STUN message shorter than its 20-byte header")

    def test_top_bits(self):
        self.assertMalformed(b"\x40" + RFC5769_REQUEST[1:], "not a STUN message (top bits set)")

    def test_cookie(self):
        self.assertMalformed(RFC5769_REQUEST[:4] + b"\x21\x12\xa4\x43" + RFC5769_REQUEST[8:], "STUN message without the magic cookie")

    def test_length_mismatch(self):
        self.assertMalformed(RFC5769_REQUEST + b"\x00" * 4, "STUN message length 88 does not match the datagram (112 bytes)")
        self.assertMalformed(RFC5769_REQUEST[:-4], "STUN message length 88 does not match the datagram (104 bytes)")
        self.assertMalformed(with_length(RFC5769_REQUEST, 87), "STUN message length 87 does not match the datagram (108 bytes)")

    def test_attribute_overrun(self):
        # PRIORITY claims 200 bytes
        data = bytearray(RFC5769_REQUEST)
        data[40:44] = pack("!HH", 0x0024, 200)
        self.assertMalformed(bytes(data), "STUN attribute 0x0024 overruns the message")

    def test_bad_fingerprint(self):
        self.assertMalformed(RFC5769_REQUEST[:-1] + b"\xd0", "STUN FINGERPRINT does not match", stun.BadFingerprint)

    def test_attribute_after_fingerprint(self):
        data = stun.encode(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, TID, {"USERNAME": "a:b"}))
        data = with_length(data, len(data) - 20 + 8) + pack("!HHI", 0x0024, 4, 1)
        self.assertMalformed(data, "STUN attribute after FINGERPRINT")

    def test_bad_integrity_length(self):
        data = bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, TID))
        data = with_length(data, 12) + pack("!HH", 0x0008, 8) + bytes(8)
        self.assertMalformed(data, "STUN MESSAGE-INTEGRITY of length 8")

    def test_unknown_method(self):
        data = bytearray(RFC5769_REQUEST[:20])
        data[0:4] = pack("!HH", 0x0FFF & 0x3EEF, 0)
        e = self.assertRaises(stun.StunError, stun.decode, bytes(data))
        self.assertTrue(str(e).startswith("STUN message not decodable: "), str(e))

    def test_bad_attribute_value(self):
        # PRIORITY of 2 bytes (+2 padding): aioice's unpack fails
        data = bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, TID))
        data = with_length(data, 8) + pack("!HHH", 0x0024, 2, 7) + b"\x00\x00"
        self.assertRaises(stun.StunError, stun.decode, data)
        # XOR-MAPPED-ADDRESS with family 3
        data = with_length(data[:20], 12) + pack("!HHBBH", 0x0020, 8, 0, 3, 1) + bytes(4)
        self.assertRaises(stun.StunError, stun.decode, data)
        # USERNAME that is not UTF-8
        data = with_length(data[:20], 8) + pack("!HH", 0x0006, 4) + b"\xff\xfe\xfd\xfc"
        self.assertRaises(stun.StunError, stun.decode, data)

    def test_unknown_attributes(self):
        data = bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, TID))
        body = (
            pack("!HH", 0x0777, 4) + bytes(4)  # unknown, comprehension-required
            + pack("!HH", 0x8777, 4) + bytes(4)  # unknown, optional
            + pack("!HH", 0x0019, 4) + bytes(4)  # REQUESTED-TRANSPORT: TURN, not ours
            + pack("!HH", 0x0777, 0)  # repeated: listed once
        )
        decoded = stun.decode(with_length(data, len(body)) + body)
        self.assertEqual(decoded.unknown, (0x0777, 0x0019))

    def test_after_integrity_ignored(self):
        # USE-CANDIDATE after MESSAGE-INTEGRITY is not authenticated: dropped on both aioice versions
        message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, TID, {"USERNAME": "a:b"})
        message.add_message_integrity(b"key")
        data = bytes(message)[:-8]  # without aioice's FINGERPRINT
        data = with_length(data, len(data) - 20 + 4) + pack("!HH", 0x0025, 0)
        data = stun._seal(data, None)
        decoded = stun.decode(data)
        self.assertNotIn("USE-CANDIDATE", decoded.message.attributes)
        self.assertTrue(stun.integrity_ok(decoded.message, data, b"key"))
        self.assertEqual(decoded.unknown, ())

    def test_repeated_after_integrity(self):
        message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, TID, {"USERNAME": "a:b"})
        message.add_message_integrity(b"key")
        data = bytes(message)[:-8]
        data = with_length(data, len(data) - 20 + 12) + pack("!HH", 0x0006, 8) + b"evil:bad"
        self.assertMalformed(stun._seal(data, None), "STUN attribute 0x0006 repeated after MESSAGE-INTEGRITY")

    def test_is_stun(self):
        self.assertTrue(stun.is_stun(RFC5769_REQUEST))
        self.assertFalse(stun.is_stun(RFC5769_REQUEST[:19]))
        self.assertFalse(stun.is_stun(b"\x80" + RFC5769_REQUEST[1:]))


class EncodeTests(SynchronousTestCase):
    def test_request(self):
        data = stun.binding_request(TID, {"USERNAME": "r:l", "PRIORITY": 1862270975, "ICE-CONTROLLING": 5, "USE-CANDIDATE": None}, b"pwd")
        types = [t for t, _ in attributes_of(data)]
        self.assertEqual(types, [0x0006, 0x0024, 0x802A, 0x0025, 0x0008, 0x8028])
        # aioice itself reads it, and verifies integrity and fingerprint
        message = aioice_stun.parse_message(data)
        self.assertEqual(message.attributes["USERNAME"], "r:l")
        self.assertEqual(message.attributes["ICE-CONTROLLING"], 5)
        decoded = stun.decode(data)
        self.assertTrue(stun.integrity_ok(decoded.message, data, b"pwd"))
        self.assertFalse(stun.integrity_ok(decoded.message, data, b"pwe"))

    def test_success(self):
        request = stun.decode(RFC5769_REQUEST).message
        data = stun.binding_success(request, ("192.0.2.1", 32853), RFC5769_PASSWORD)
        self.assertEqual(data[:2], b"\x01\x01")
        self.assertEqual(data[8:20], request.transaction_id)
        attrs = attributes_of(data)
        self.assertEqual([t for t, _ in attrs], [0x0020, 0x0008, 0x8028])
        # the same XOR-MAPPED-ADDRESS bytes as RFC 5769's response (same transaction id)
        self.assertEqual(attrs[0][1], bytes.fromhex("0001a147e112a643"))
        decoded = stun.decode(data)
        self.assertTrue(stun.integrity_ok(decoded.message, data, RFC5769_PASSWORD))

    def test_success_ipv6(self):
        request = stun.decode(RFC5769_REQUEST).message
        data = stun.binding_success(request, ("2001:db8::1", 40000, 0, 0), b"k")
        self.assertEqual(stun.decode(data).message.attributes["XOR-MAPPED-ADDRESS"], ("2001:db8::1", 40000))

    def test_unsigned_errors(self):
        request = stun.decode(RFC5769_REQUEST).message
        for code, reason in ((400, "Bad Request"), (401, "Unauthorized")):
            data = stun.error_response(request, code)
            attrs = attributes_of(data)
            self.assertEqual([t for t, _ in attrs], [0x0009, 0x8028])
            self.assertEqual(attrs[0][1], pack("!HBB", 0, code // 100, code % 100) + reason.encode())
            self.assertEqual(data[:2], b"\x01\x11")
            self.assertEqual(stun.decode(data).message.attributes["ERROR-CODE"], (code, reason))

    def test_420(self):
        request = stun.decode(RFC5769_REQUEST).message
        data = stun.error_response(request, 420, b"pwd", (0x0777, 0x0019, 0x0031))
        attrs = attributes_of(data)
        self.assertEqual([t for t, _ in attrs], [0x0009, 0x000A, 0x0008, 0x8028])
        self.assertEqual(attrs[1][1], bytes.fromhex("077700190031"))
        decoded = stun.decode(data)
        self.assertEqual(decoded.message.attributes["ERROR-CODE"], (420, "Unknown Attribute"))
        self.assertTrue(stun.integrity_ok(decoded.message, data, b"pwd"))
        # aioice verifies our FINGERPRINT too
        self.assertEqual(aioice_stun.parse_message(data).attributes["ERROR-CODE"], (420, "Unknown Attribute"))

    def test_487(self):
        request = stun.decode(RFC5769_REQUEST).message
        data = stun.error_response(request, 487, b"pwd")
        decoded = stun.decode(data)
        self.assertEqual(decoded.message.attributes["ERROR-CODE"], (487, "Role Conflict"))
        self.assertTrue(stun.integrity_ok(decoded.message, data, b"pwd"))
