"""omnirtp.sdp.crypto: a=crypto (RFC 4568) parse, format, choice and errors."""

import base64

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.sdp import crypto
from omnirtp.sdp.crypto import Crypto, CryptoError, KeyParams

KEY30 = bytes(range(30))
B64_30 = base64.b64encode(KEY30).decode()          # 40 chars, no padding needed
KEY28 = bytes(range(100, 128))
B64_28 = base64.b64encode(KEY28).decode()          # 40 chars with "=" padding
KEY44 = bytes(range(44))


class ParseTests(SynchronousTestCase):

    def test_minimal(self):
        c = crypto.parse("1 AES_CM_128_HMAC_SHA1_80 inline:" + B64_30)
        self.assertEqual(c, Crypto(1, "AES_CM_128_HMAC_SHA1_80", (KeyParams(KEY30),)))
        self.assertEqual(c.key, KEY30)

    def test_lifetimeAndParams(self):
        c = crypto.parse("7 AES_CM_128_HMAC_SHA1_32 inline:%s|2^20 KDR=0 WSH=64" % B64_30)
        self.assertEqual(c.tag, 7)
        self.assertEqual(c.keys, (KeyParams(KEY30, "2^20"),))
        self.assertEqual(c.params, ("KDR=0", "WSH=64"))
        self.assertIsNone(c.unusable())

    def test_decimalLifetime(self):
        c = crypto.parse("1 AES_CM_128_HMAC_SHA1_80 inline:%s|1048576" % B64_30)
        self.assertEqual(c.keys[0].lifetime, "1048576")

    def test_mki(self):
        c = crypto.parse("1 AES_CM_128_HMAC_SHA1_80 inline:%s|2^20|1:4" % B64_30)
        self.assertEqual(c.keys, (KeyParams(KEY30, "2^20", (1, 4)),))
        self.assertEqual(c.unusable(), "MKI is not supported")
        c = crypto.parse("1 AES_CM_128_HMAC_SHA1_80 inline:%s|7:2" % B64_30)
        self.assertEqual(c.keys, (KeyParams(KEY30, None, (7, 2)),))

    def test_severalKeyParams(self):
        c = crypto.parse("2 AES_CM_128_HMAC_SHA1_80 inline:%s|2^20|1:4;inline:%s|2^20|2:4"
                         % (B64_30, base64.b64encode(KEY30[::-1]).decode()))
        self.assertEqual(len(c.keys), 2)
        self.assertEqual(c.keys[1], KeyParams(KEY30[::-1], "2^20", (2, 4)))

    def test_paddedAndUnpaddedBase64(self):
        """rtpengine writes keys without '=' padding; both forms parse."""
        padded = crypto.parse("1 AEAD_AES_128_GCM inline:" + B64_28)
        unpadded = crypto.parse("1 AEAD_AES_128_GCM inline:" + B64_28.rstrip("="))
        self.assertTrue(B64_28.endswith("="))
        self.assertEqual(padded.key, KEY28)
        self.assertEqual(unpadded.key, KEY28)

    def test_suiteCaseNormalised(self):
        c = crypto.parse("1 aes_cm_128_hmac_sha1_80 inline:" + B64_30)
        self.assertEqual(c.suite, "AES_CM_128_HMAC_SHA1_80")

    def test_everyRtpengineSuiteParses(self):
        for suite in crypto.SUITES.values():
            key = bytes(suite.length)
            c = crypto.parse("1 %s inline:%s" % (suite.name, base64.b64encode(key).decode()))
            self.assertEqual((c.suite, c.key), (suite.name, key))

    def test_errors(self):
        """Every malformed value is a CryptoError with its reason."""
        cases = {
            None: "empty a=crypto attribute",
            "": "a=crypto needs a tag, a crypto suite and key parameters",
            "1 AES_CM_128_HMAC_SHA1_80": "a=crypto needs a tag, a crypto suite and key parameters",
            "x AES_CM_128_HMAC_SHA1_80 inline:" + B64_30: "invalid crypto tag 'x'",
            "1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + B64_30:
                "invalid crypto tag '1234567890'",
            "1 FOO_SUITE inline:" + B64_30: "unknown crypto suite",
            "1 AES_CM_128_HMAC_SHA1_80 uri:" + B64_30:
                "invalid key parameter method (only inline: is known)",
            "1 AES_CM_128_HMAC_SHA1_80 " + B64_30:
                "invalid key parameter method (only inline: is known)",
            "1 AES_CM_128_HMAC_SHA1_80 inline:short": "invalid key parameter length",
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!" + B64_30[4:]:
                "invalid key parameter: key is not base64",
            "1 AES_CM_128_HMAC_SHA1_80 inline:A" + B64_30:
                "invalid key parameter: key is not base64",
            "1 AEAD_AES_128_GCM inline:" + B64_30: "invalid key parameter length",
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s|2^20|1:4|x" % B64_30:
                "invalid key parameter: too many '|' fields",
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s|2^x" % B64_30:
                "invalid key parameter: bad lifetime '2^x'",
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s|2^20|2^20" % B64_30:
                "invalid key parameter: bad lifetime '2^20'",
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s|1:4|2^20" % B64_30:
                "invalid key parameter: bad lifetime '2^20'",
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s|1:4|2:4" % B64_30:
                "invalid key parameter: two MKI fields",
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s|1:0" % B64_30:
                "invalid key parameter: bad MKI '1:0'",
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s|1:129" % B64_30:
                "invalid key parameter: bad MKI '1:129'",
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s|a:4" % B64_30:
                "invalid key parameter: bad MKI 'a:4'",
        }
        for value, reason in cases.items():
            with self.assertRaises(CryptoError) as ctx:
                crypto.parse(value)
            self.assertEqual(str(ctx.exception), reason, value)


class FormatTests(SynchronousTestCase):

    def test_roundTrip(self):
        for value in (
            "1 AES_CM_128_HMAC_SHA1_80 inline:" + B64_30,
            "3 AES_CM_128_HMAC_SHA1_32 inline:%s|2^31 UNENCRYPTED_SRTCP" % B64_30,
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s|2^20|1:4;inline:%s|2^20|2:4"
            % (B64_30, B64_30),
            "12 AEAD_AES_256_GCM inline:" + base64.b64encode(KEY44).decode().rstrip("="),
        ):
            self.assertEqual(crypto.parse(value).format(), value)
            self.assertEqual(str(crypto.parse(value)), value)

    def test_unpaddedUnlessAsked(self):
        c = crypto.parse("1 AEAD_AES_128_GCM inline:" + B64_28)
        self.assertEqual(c.format(), "1 AEAD_AES_128_GCM inline:" + B64_28.rstrip("="))
        self.assertEqual(c.format(pad=True), "1 AEAD_AES_128_GCM inline:" + B64_28)

    def test_withoutLifetime(self):
        c = crypto.parse("3 AES_CM_128_HMAC_SHA1_32 inline:%s|2^31 WSH=64" % B64_30)
        self.assertEqual(c.format(lifetime=False),
                         "3 AES_CM_128_HMAC_SHA1_32 inline:%s WSH=64" % B64_30)

    def test_generateSameAsConstructed(self):
        """generate's line (made without the frozen dataclasses' __init__)
        equals, hashes, prints and stays frozen as the constructed one."""
        import dataclasses
        for suite in crypto.SUPPORTED:
            g = crypto.generate(7, suite, random=lambda n: b"\x05" * n)
            made = Crypto(7, suite, (KeyParams(b"\x05" * crypto.SUITES[suite].length),))
            self.assertEqual(g, made)
            self.assertEqual(hash(g), hash(made))
            self.assertEqual(repr(g), repr(made))
            self.assertEqual(g.format(), made.format())
            self.assertEqual(vars(g), vars(made))
            self.assertEqual(vars(g.keys[0]), vars(made.keys[0]))
            self.assertRaises(dataclasses.FrozenInstanceError, setattr, g, "tag", 1)
            self.assertRaises(dataclasses.FrozenInstanceError, setattr, g.keys[0], "mki", 1)

    def test_generate(self):
        c = crypto.generate(2, "AES_CM_128_HMAC_SHA1_80", random=lambda n: b"\x01" * n)
        self.assertEqual(c.format(), "2 AES_CM_128_HMAC_SHA1_80 inline:" +
                         base64.b64encode(b"\x01" * 30).decode())
        g = crypto.generate(1, "AEAD_AES_128_GCM")
        self.assertEqual(len(g.key), 28)
        self.assertNotEqual(g.key, crypto.generate(1, "AEAD_AES_128_GCM").key)

    def test_generateMany(self):
        """generate_many: the lines generate makes one after the other
        (tags counting on), their keys the bytes those calls would take
        from a stream, drawn in one call; nothing drawn for no suite."""
        stream = bytes(range(256))
        calls = []

        def drawn(n):
            at = sum(calls)
            calls.append(n)
            return stream[at:at + n]
        suites = list(crypto.SUPPORTED)
        many = crypto.generate_many(4, suites, random=drawn)
        self.assertEqual(calls, [28 + 30 + 30])
        calls[:] = []
        one_by_one = [crypto.generate(5 + i, suite, random=drawn)
                      for i, suite in enumerate(suites)]
        self.assertEqual(calls, [28, 30, 30])
        self.assertEqual(many, one_by_one)
        self.assertEqual([repr(c) for c in many], [repr(c) for c in one_by_one])
        self.assertEqual([vars(c) for c in many], [vars(c) for c in one_by_one])
        self.assertEqual([c.tag for c in many], [5, 6, 7])
        calls[:] = []
        self.assertEqual(crypto.generate_many(3, [], random=drawn), [])
        self.assertEqual(calls, [])
        real = crypto.generate_many(0, suites)
        self.assertEqual([len(c.key) for c in real], [28, 30, 30])
        self.assertEqual(len({c.key for c in real}), 3)


class DictTests(SynchronousTestCase):

    def test_toDict(self):
        c = crypto.parse("1 AES_CM_128_HMAC_SHA1_80 inline:%s|2^20" % B64_30)
        self.assertEqual(c.to_dict(), {"suite": "AES_CM_128_HMAC_SHA1_80", "key": B64_30})
        c = crypto.parse("1 AEAD_AES_128_GCM inline:" + B64_28.rstrip("="))
        self.assertEqual(c.to_dict(), {"suite": "AEAD_AES_128_GCM", "key": B64_28})

    def test_unusableLinesRefuseDict(self):
        b64_44 = base64.b64encode(KEY44).decode()
        cases = {
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s|1:4" % B64_30: "MKI is not supported",
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s;inline:%s" % (B64_30, B64_30):
                "several key parameters are not supported",
            "1 AEAD_AES_256_GCM inline:" + b64_44:
                "crypto suite AEAD_AES_256_GCM is not supported",
            "1 F8_128_HMAC_SHA1_80 inline:" + B64_30:
                "crypto suite F8_128_HMAC_SHA1_80 is not supported",
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s UNENCRYPTED_SRTP" % B64_30:
                "session parameter UNENCRYPTED_SRTP is not supported",
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s UNENCRYPTED_SRTCP" % B64_30:
                "session parameter UNENCRYPTED_SRTCP is not supported",
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s UNAUTHENTICATED_SRTP" % B64_30:
                "session parameter UNAUTHENTICATED_SRTP is not supported",
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s KDR=24" % B64_30:
                "session parameter KDR=24 is not supported",
        }
        for value, reason in cases.items():
            c = crypto.parse(value)
            self.assertEqual(c.unusable(), reason)
            with self.assertRaises(CryptoError) as ctx:
                c.to_dict()
            self.assertEqual(str(ctx.exception), reason)


class ChoiceTests(SynchronousTestCase):

    def test_offerSuites(self):
        self.assertEqual(crypto.offer_suites(), list(crypto.SUPPORTED))
        self.assertEqual(crypto.SUPPORTED, ("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80",
                                            "AES_CM_128_HMAC_SHA1_32"))
        self.assertEqual(crypto.offer_suites(["off"]), [])
        self.assertEqual(crypto.offer_suites(["no-AEAD_AES_128_GCM"]),
                         ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"])
        self.assertEqual(crypto.offer_suites(["only-AES_CM_128_HMAC_SHA1_32"]),
                         ["AES_CM_128_HMAC_SHA1_32"])
        self.assertEqual(crypto.offer_suites(["only-aes_cm_128_hmac_sha1_32",
                                              "only-AEAD_AES_128_GCM"]),
                         ["AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_32"])
        self.assertEqual(crypto.offer_suites(["only-F8_128_HMAC_SHA1_80"]), [])
        # rtpengine's other SDES options change nothing here
        self.assertEqual(crypto.offer_suites(["pad", "no-NULL_HMAC_SHA1_80"]),
                         list(crypto.SUPPORTED))

    def test_choose(self):
        lines = [crypto.parse(v) for v in (
            "1 AES_CM_128_HMAC_SHA1_80 inline:%s|1:4" % B64_30,
            "2 F8_128_HMAC_SHA1_80 inline:" + B64_30,
            "3 AES_CM_128_HMAC_SHA1_32 inline:" + B64_30,
            "4 AES_CM_128_HMAC_SHA1_80 inline:" + B64_30,
        )]
        passed = []
        chosen = crypto.choose(lines, log=lambda c, why: passed.append((c.tag, why)))
        self.assertEqual(chosen.tag, 3)
        self.assertEqual(passed, [(1, "MKI is not supported"),
                                  (2, "crypto suite F8_128_HMAC_SHA1_80 is not supported")])
        self.assertEqual(crypto.choose(lines, ["no-AES_CM_128_HMAC_SHA1_32"]).tag, 4)
        self.assertEqual(crypto.choose(lines, ["only-AES_CM_128_HMAC_SHA1_80"]).tag, 4)
        self.assertIsNone(crypto.choose(lines[:2]))
        self.assertIsNone(crypto.choose([]))

    def test_allowed(self):
        self.assertTrue(crypto.allowed("AES_CM_128_HMAC_SHA1_80", ["off"]))
        self.assertFalse(crypto.allowed("AES_CM_128_HMAC_SHA1_80",
                                        ["no-AES_CM_128_HMAC_SHA1_80"]))
        self.assertFalse(crypto.allowed("AES_CM_128_HMAC_SHA1_80",
                                        ["only-AES_CM_128_HMAC_SHA1_32"]))


class RenderTests(SynchronousTestCase):

    def test_options(self):
        c = crypto.parse("1 AEAD_AES_128_GCM inline:" + B64_28)
        bare = B64_28.rstrip("=")
        self.assertEqual(crypto.render(c), "1 AEAD_AES_128_GCM inline:" + bare)
        self.assertEqual(crypto.render(c, ["pad"]), "1 AEAD_AES_128_GCM inline:" + B64_28)
        self.assertEqual(crypto.render(c, ["lifetime"]),
                         "1 AEAD_AES_128_GCM inline:%s|2^31" % bare)
        given = crypto.parse("1 AES_CM_128_HMAC_SHA1_80 inline:%s|2^20" % B64_30)
        self.assertEqual(crypto.render(given, ["lifetime"]), given.format())

    def test_ignoredOptions(self):
        self.assertEqual(crypto.ignored_options(
            ["off", "no-X", "only-Y", "pad", "lifetime", "nonew", "static", "prefer",
             "order:AES_CM_128_HMAC_SHA1_80", "offerer_pref:X", "unencrypted_srtcp",
             "UNAUTHENTICATED_SRTP", "bogus"]),
            (["unencrypted_srtcp", "UNAUTHENTICATED_SRTP"], ["bogus"]))
