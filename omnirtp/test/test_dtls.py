"""Tests for omnirtp.media.dtls: two of our DTLS-SRTP endpoints talking through memory."""

import base64
import datetime
import hashlib
import os
import struct
import tempfile

import pylibsrtp
import OpenSSL
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from omnirtp.media import _dtls_compat as compat
from omnirtp.media import dtls
from omnirtp.media.dtls import CLIENT, SERVER, Certificate, DtlsEndpoint

_certs = {}
SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def cert(name):
    """One EC certificate per name for the whole module (making them is the slow part)."""
    if name not in _certs:
        _certs[name] = Certificate.generate()
    return _certs[name]


SUITE_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
}


def srtp_session(crypto, outbound):
    ssrc = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(policy=pylibsrtp.Policy(
        key=base64.b64decode(crypto["key"]), ssrc_type=ssrc,
        srtp_profile=SUITE_PROFILES[crypto["suite"]]))


def rtp_packet(seq, ssrc=0x11223344, payload=b"\xd5" * 160):
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + payload


def rtcp_sender_report(ssrc=0x11223344):
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 1, 2, 3, 4, 5)


def record(ctype, body, epoch=0, seq=5):
    """A DTLS 1.2 record."""
    return (bytes([ctype, 0xFE, 0xFD]) + epoch.to_bytes(2, "big") + seq.to_bytes(6, "big")
            + len(body).to_bytes(2, "big") + body)


DEFAULT = object()


class Link:
    """A client and a server endpoint joined by two queues, on one Clock.

    ``drop`` holds (direction, index) pairs: the index-th datagram sent in
    that direction ("c2s" or "s2c", counting from 0) is lost.
    """

    def __init__(self, client_kw=None, server_kw=None, drop=(), client_cert="a",
                 server_cert="b", client_sees=DEFAULT, server_sees=DEFAULT):
        self.clock = Clock()
        self.drop = set(drop)
        self.queues = {"c2s": [], "s2c": []}
        self.sent = {"c2s": [], "s2c": []}
        self.keys = {CLIENT: [], SERVER: []}
        self.failures = {CLIENT: [], SERVER: []}
        if client_sees is DEFAULT:
            client_sees = cert(server_cert).fingerprint()
        if server_sees is DEFAULT:
            server_sees = cert(client_cert).fingerprint()
        self.client = self._endpoint(CLIENT, client_cert, client_sees, "c2s", client_kw)
        self.server = self._endpoint(SERVER, server_cert, server_sees, "s2c", server_kw)

    def _endpoint(self, role, mine, remote, direction, kw):
        def send(data):
            self.sent[direction].append(data)
            if (direction, len(self.sent[direction]) - 1) not in self.drop:
                self.queues[direction].append(data)

        return DtlsEndpoint(
            role, cert(mine), remote, send,
            lambda srtp_in, srtp_out: self.keys[role].append((srtp_in, srtp_out)),
            self.failures[role].append, self.clock, **(kw or {}))

    def run(self, start=True):
        """Start both and deliver what is queued until nothing moves."""
        if start:
            self.client.start()
            self.server.start()
        for _ in range(100):
            if not self.queues["c2s"] and not self.queues["s2c"]:
                return
            while self.queues["c2s"]:
                self.server.datagram(self.queues["c2s"].pop(0), ("127.0.0.1", 1000))
            while self.queues["s2c"]:
                self.client.datagram(self.queues["s2c"].pop(0), ("127.0.0.1", 2000))
        raise AssertionError("the endpoints never went quiet")

    def advance(self, seconds):
        self.clock.advance(seconds)
        self.run(start=False)


class RoleTests(SynchronousTestCase):
    """a=setup -> role, as rtpengine 10.5 answered on loopback."""

    def test_answer_setup(self):
        self.assertEqual(dtls.answer_setup("actpass"), "active")
        self.assertEqual(dtls.answer_setup("active"), "passive")
        self.assertEqual(dtls.answer_setup("passive"), "active")
        self.assertIsNone(dtls.answer_setup(None))
        self.assertIsNone(dtls.answer_setup("holdconn"))
        self.assertIsNone(dtls.answer_setup("bogus"))
        self.assertEqual(dtls.answer_setup(b" ACTPASS "), "active")

    def test_answer_setup_passive(self):
        """DTLS=passive / dtls-passive: passive, except to a passive offer."""
        self.assertEqual(dtls.answer_setup("actpass", passive=True), "passive")
        self.assertEqual(dtls.answer_setup("active", passive=True), "passive")
        self.assertEqual(dtls.answer_setup("passive", passive=True), "active")

    def test_offer_setup(self):
        self.assertEqual(dtls.offer_setup(), "actpass")

    def test_role_of(self):
        self.assertEqual(dtls.role_of("active"), CLIENT)
        self.assertEqual(dtls.role_of("passive"), SERVER)
        self.assertIsNone(dtls.role_of("actpass"))
        self.assertIsNone(dtls.role_of(None))

    def test_role_from_answer(self):
        self.assertEqual(dtls.role_from_answer("active"), SERVER)
        self.assertEqual(dtls.role_from_answer("passive"), CLIENT)
        self.assertEqual(dtls.role_from_answer("actpass"), CLIENT)
        self.assertEqual(dtls.role_from_answer("actpass", passive=True), SERVER)
        self.assertIsNone(dtls.role_from_answer("holdconn"))
        self.assertIsNone(dtls.role_from_answer(None))

    def test_negotiate_role(self):
        # a browser's actpass offer: we answer active and are the client
        self.assertEqual(dtls.negotiate_role("actpass", we_offered=False), CLIENT)
        self.assertEqual(dtls.negotiate_role("actpass", we_offered=False, passive=True), SERVER)
        self.assertEqual(dtls.negotiate_role("active", we_offered=False), SERVER)
        self.assertEqual(dtls.negotiate_role("passive", we_offered=False), CLIENT)
        # we offered actpass; the browser answered active: we are the server
        self.assertEqual(dtls.negotiate_role("active", we_offered=True), SERVER)
        self.assertEqual(dtls.negotiate_role("passive", we_offered=True), CLIENT)
        self.assertIsNone(dtls.negotiate_role(None, we_offered=False))


class FingerprintTests(SynchronousTestCase):

    def test_sha256_default(self):
        c = cert("a")
        digest = hashlib.sha256(c.der).digest()
        expected = "sha-256 " + ":".join("%02X" % b for b in digest)
        self.assertEqual(c.fingerprint(), expected)
        self.assertEqual(dtls.fingerprint(c), expected)
        self.assertEqual(dtls.fingerprint(c.der), expected)
        self.assertEqual(dtls.fingerprint(c.certificate), expected)
        self.assertEqual(len(expected), len("sha-256 ") + 32 * 3 - 1)

    def test_other_hashes(self):
        c = cert("a")
        for spelling, name, algo in [("SHA-1", "sha-1", "sha1"), ("sha-224", "sha-224", "sha224"),
                                     ("SHA384", "sha-384", "sha384"),
                                     ("sha512", "sha-512", "sha512")]:
            value = dtls.fingerprint(c, spelling)
            self.assertEqual(value, name + " " + ":".join(
                "%02X" % b for b in hashlib.new(algo, c.der).digest()))
            self.assertEqual(dtls.parse_fingerprint(value),
                             (name, hashlib.new(algo, c.der).digest()))

    def test_fingerprint_hash(self):
        """The peer's hash wins over DTLS-fingerprint (rtpengine 10.5); then the flag; sha-256."""
        sha1 = cert("a").fingerprint("sha-1")
        self.assertEqual(dtls.fingerprint_hash(), "sha-256")
        self.assertEqual(dtls.fingerprint_hash(None, "SHA-384"), "sha-384")
        self.assertEqual(dtls.fingerprint_hash(sha1, "SHA-512"), "sha-1")
        self.assertEqual(dtls.fingerprint_hash([sha1, cert("a").fingerprint()]), "sha-1")
        self.assertEqual(dtls.fingerprint_hash([], "sha-224"), "sha-224")

    def test_hash_name(self):
        self.assertEqual(dtls.hash_name("SHA-256"), "sha-256")
        self.assertEqual(dtls.hash_name(b"sha1"), "sha-1")
        for bad in ("md5", "md2", "sha-3", ""):
            self.assertRaises(ValueError, dtls.hash_name, bad)

    def test_parse_errors(self):
        e = self.assertRaises(ValueError, dtls.parse_fingerprint, "sha-256")
        self.assertEqual(str(e), "a=fingerprint needs a hash name and a value: 'sha-256'")
        e = self.assertRaises(ValueError, dtls.parse_fingerprint, "sha-1 AA:BB")
        self.assertEqual(str(e), "a=fingerprint sha-1 needs 20 bytes, got 2")
        e = self.assertRaises(ValueError, dtls.parse_fingerprint, "sha-1 ZZ:BB")
        self.assertEqual(str(e), "a=fingerprint value is not hex: 'ZZ:BB'")
        e = self.assertRaises(ValueError, dtls.parse_fingerprint, "md5 AA:BB")
        self.assertEqual(str(e), "unsupported fingerprint hash 'md5'")

    def test_lowercase_value_matches(self):
        c = cert("a")
        pairs = [dtls.parse_fingerprint(c.fingerprint().lower())]
        self.assertTrue(dtls.fingerprint_matches(c.der, pairs))
        self.assertFalse(dtls.fingerprint_matches(cert("b").der, pairs))


def validity(certificate, end):
    """not_valid_before/after as an aware datetime (``*_utc`` from cryptography 42 on)."""
    aware = getattr(certificate, "not_valid_%s_utc" % end, None)
    if aware is not None:
        return aware
    return getattr(certificate, "not_valid_" + end).replace(tzinfo=datetime.timezone.utc)


class CertificateTests(SynchronousTestCase):

    def test_default_is_ec_p256_sha256_self_signed(self):
        now = datetime.datetime(2026, 12, 3, 9, 0, tzinfo=datetime.timezone.utc)
        c = Certificate.generate(now=now)
        key = c.certificate.public_key()
        self.assertIsInstance(key, ec.EllipticCurvePublicKey)
        self.assertEqual(key.curve.name, "secp256r1")
        self.assertIsInstance(c.certificate.signature_hash_algorithm, hashes.SHA256)
        self.assertEqual(c.certificate.subject, c.certificate.issuer)
        self.assertEqual(c.certificate.subject.rfc4514_string(), "CN=omnirtp")
        self.assertEqual(validity(c.certificate, "before"), now - datetime.timedelta(days=1))
        self.assertEqual(validity(c.certificate, "after"), now + datetime.timedelta(days=365))
        key.verify(c.certificate.signature, c.certificate.tbs_certificate_bytes,
                   ec.ECDSA(hashes.SHA256()))

    def test_rsa_and_sha1(self):
        c = Certificate.generate(cipher="RSA", rsa_key_size=2048, signature="SHA-1")
        self.assertIsInstance(c.certificate.public_key(), rsa.RSAPublicKey)
        self.assertEqual(c.certificate.public_key().key_size, 2048)
        self.assertIsInstance(c.certificate.signature_hash_algorithm, hashes.SHA1)

    def test_bad_options(self):
        e = self.assertRaises(ValueError, Certificate.generate, cipher="DSA")
        self.assertEqual(str(e), "unsupported dtls-cert-cipher 'DSA' (prime256v1 or RSA)")
        e = self.assertRaises(ValueError, Certificate.generate, signature="SHA-512")
        self.assertEqual(str(e), "unsupported dtls-signature 'SHA-512' (SHA-256 or SHA-1)")
        self.assertRaises(ValueError, Certificate.generate, signature="MD5")

    def test_from_config(self):
        from omnirtp.config import load
        config = load({"config-file": ("none", "cli"), "interface": (["127.0.0.1"], "cli"),
                       "listen-ng": (["127.0.0.1:2223"], "cli"),
                       "dtls-signature": ("SHA-1", "cli")}, environ={})
        c = Certificate.from_config(config)
        self.assertIsInstance(c.certificate.public_key(), ec.EllipticCurvePublicKey)
        self.assertIsInstance(c.certificate.signature_hash_algorithm, hashes.SHA1)

    def test_load_roundtrip(self):
        c = cert("a")
        cert_pem, key_pem = c.pem()
        d = tempfile.mkdtemp()
        self.addCleanup(lambda: [os.unlink(os.path.join(d, n)) for n in os.listdir(d)]
                        and os.rmdir(d))
        with open(os.path.join(d, "cert.pem"), "wb") as f:
            f.write(cert_pem)
        with open(os.path.join(d, "key.pem"), "wb") as f:
            f.write(key_pem)
        with open(os.path.join(d, "both.pem"), "wb") as f:
            f.write(cert_pem + key_pem)
        loaded = Certificate.load(os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"))
        self.assertEqual(loaded.fingerprint(), c.fingerprint())
        self.assertEqual(Certificate.load(os.path.join(d, "both.pem")).der, c.der)
        with open(os.path.join(d, "other.pem"), "wb") as f:
            f.write(cert("b").pem()[1])
        e = self.assertRaises(ValueError, Certificate.load, os.path.join(d, "cert.pem"),
                              os.path.join(d, "other.pem"))
        self.assertIn("does not belong to the certificate", str(e))


class KeyingMaterialTests(SynchronousTestCase):
    """RFC 5764 4.2: client key | server key | client salt | server salt."""

    def test_aes_cm(self):
        material = bytes(range(60))
        profile = dtls.PROFILE_BY_SUITE["AES_CM_128_HMAC_SHA1_80"]
        client_in, client_out = dtls.split_keying_material(material, profile, CLIENT)
        client_master = bytes(range(0, 16)) + bytes(range(32, 46))
        server_master = bytes(range(16, 32)) + bytes(range(46, 60))
        self.assertEqual(client_out, {"suite": "AES_CM_128_HMAC_SHA1_80",
                                      "key": base64.b64encode(client_master).decode()})
        self.assertEqual(client_in, {"suite": "AES_CM_128_HMAC_SHA1_80",
                                     "key": base64.b64encode(server_master).decode()})
        server_in, server_out = dtls.split_keying_material(material, profile, SERVER)
        self.assertEqual((server_in, server_out), (client_out, client_in))

    def test_aead_gcm(self):
        material = bytes(range(56))
        profile = dtls.PROFILE_BY_SUITE["AEAD_AES_128_GCM"]
        srtp_in, srtp_out = dtls.split_keying_material(material, profile, CLIENT)
        self.assertEqual(base64.b64decode(srtp_out["key"]),
                         bytes(range(0, 16)) + bytes(range(32, 44)))
        self.assertEqual(base64.b64decode(srtp_in["key"]),
                         bytes(range(16, 32)) + bytes(range(44, 56)))
        self.assertEqual(srtp_in["suite"], "AEAD_AES_128_GCM")

    def test_wrong_length(self):
        e = self.assertRaises(ValueError, dtls.split_keying_material, bytes(59),
                              dtls.PROFILE_BY_SUITE["AES_CM_128_HMAC_SHA1_32"], CLIENT)
        self.assertEqual(
            str(e), "keying material for AES_CM_128_HMAC_SHA1_32 needs 60 bytes, got 59")


class HandshakeTests(SynchronousTestCase):

    def assertKeysCross(self, link):
        self.assertEqual(len(link.keys[CLIENT]), 1)
        self.assertEqual(len(link.keys[SERVER]), 1)
        client_in, client_out = link.keys[CLIENT][0]
        server_in, server_out = link.keys[SERVER][0]
        self.assertEqual(client_out, server_in)
        self.assertEqual(client_in, server_out)
        self.assertNotEqual(client_in, client_out)
        self.assertEqual((link.failures[CLIENT], link.failures[SERVER]), ([], []))
        self.assertEqual((link.client.state, link.server.state), (dtls.CONNECTED, dtls.CONNECTED))
        self.assertEqual(link.clock.getDelayedCalls(), [])
        return client_in, client_out

    def test_supported_profiles(self):
        """OpenSSL and libsrtp have all three on both version sets."""
        self.assertEqual([p.suite for p in dtls.supported_profiles()],
                         ["AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"])

    def test_default_picks_aead_gcm(self):
        link = Link()
        link.run()
        client_in, client_out = self.assertKeysCross(link)
        self.assertEqual(client_out["suite"], "AEAD_AES_128_GCM")
        self.assertEqual(len(base64.b64decode(client_out["key"])), 28)
        self.assertEqual(link.client.profile.suite, "AEAD_AES_128_GCM")
        self.assertTrue(link.client.remote_verified)
        self.assertTrue(link.server.remote_verified)
        self.assertEqual(link.client.peer_certificate, cert("b").der)
        self.assertEqual(link.server.peer_certificate, cert("a").der)
        # one datagram per flight, nothing retransmitted
        self.assertEqual([len(link.sent["c2s"]), len(link.sent["s2c"])], [2, 2])
        self.assertEqual(link.client.counters(), {
            "received": 2, "sent": 2, "garbage": 0, "rate-limited": 0, "retransmits": 0,
            "peer-retransmits": 0, "application-data": 0, "after-close": 0, "errors": 0})

    def test_each_profile_keys_work(self):
        """Each profile: keys match; what one side protects, the other unprotects (RTP, RTCP)."""
        for suite in ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM"):
            link = Link(client_kw={"profiles": [suite]}, server_kw={"profiles": [suite]})
            link.run()
            client_in, client_out = self.assertKeysCross(link)
            self.assertEqual(client_out["suite"], suite)
            server_in, server_out = link.keys[SERVER][0]
            for sender_key, receiver_key in ((client_out, server_in), (server_out, client_in)):
                protect = srtp_session(sender_key, outbound=True)
                unprotect = srtp_session(receiver_key, outbound=False)
                for seq in (1, 2, 3):
                    plain = rtp_packet(seq)
                    protected = protect.protect(plain)
                    self.assertNotEqual(protected[12:], plain[12:])
                    self.assertEqual(unprotect.unprotect(protected), plain)
                rtcp = rtcp_sender_report()
                self.assertEqual(unprotect.unprotect_rtcp(protect.protect_rtcp(rtcp)), rtcp)
            # the wrong half does not decrypt
            wrong = srtp_session(client_out, outbound=False)
            protected = srtp_session(server_out, outbound=True).protect(rtp_packet(9))
            self.assertRaises(pylibsrtp.Error, wrong.unprotect, protected)

    def test_server_preference_wins(self):
        link = Link(client_kw={"profiles": ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]},
                    server_kw={"profiles": ["AES_CM_128_HMAC_SHA1_32", "AES_CM_128_HMAC_SHA1_80"]})
        link.run()
        self.assertEqual(self.assertKeysCross(link)[0]["suite"], "AES_CM_128_HMAC_SHA1_32")

    def test_no_common_profile(self):
        link = Link(client_kw={"profiles": ["AES_CM_128_HMAC_SHA1_80"]},
                    server_kw={"profiles": ["AES_CM_128_HMAC_SHA1_32"]})
        link.run()
        # OpenSSL's server goes on without use_srtp; the client then refuses
        self.assertEqual(link.keys, {CLIENT: [], SERVER: []})
        self.assertEqual(link.failures, {CLIENT: [dtls.R_NO_PROFILE], SERVER: [dtls.R_NO_PROFILE]})
        self.assertEqual((link.client.state, link.server.state), (dtls.FAILED, dtls.FAILED))

    def test_rsa_certificate(self):
        _certs.setdefault("rsa", Certificate.generate(cipher="RSA"))
        link = Link(server_cert="rsa")
        link.run()
        self.assertKeysCross(link)

    def test_ciphers(self):
        """dtls-ciphers: an OpenSSL cipher list for the DTLS handshake itself."""
        link = Link(client_kw={"ciphers": "ECDHE-ECDSA-AES128-SHA"},
                    server_kw={"ciphers": "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-GCM-SHA384"})
        link.run()
        self.assertKeysCross(link)
        self.assertEqual(link.client._conn.get_cipher_name(), "ECDHE-ECDSA-AES128-SHA")
        link = Link(client_kw={"ciphers": "ECDHE-ECDSA-AES128-SHA"},
                    server_kw={"ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384"})
        link.run()
        self.assertEqual(link.keys, {CLIENT: [], SERVER: []})
        self.assertEqual(link.failures[SERVER], ["handshake failed: no shared cipher"])

    def test_sha1_and_several_fingerprints(self):
        link = Link(client_sees=[cert("c").fingerprint(), cert("b").fingerprint("sha-1")],
                    server_sees=("sha-512", cert("a").fingerprint("sha-512").split()[1]))
        link.run()
        self.assertKeysCross(link)

    def test_start_is_idempotent_and_server_starts_on_datagram(self):
        link = Link()
        link.client.start()
        link.client.start()
        self.assertEqual(len(link.sent["c2s"]), 1)
        self.assertEqual(link.server.state, dtls.NEW)
        link.run(start=False)
        self.assertKeysCross(link)

    def test_bad_arguments(self):
        clock = Clock()
        e = self.assertRaises(ValueError, DtlsEndpoint, "both", cert("a"), None, print, print,
                              print, clock)
        self.assertEqual(str(e), "DTLS role must be 'client' or 'server', not 'both'")
        e = self.assertRaises(ValueError, DtlsEndpoint, CLIENT, cert("a"), None, print, print,
                              print, clock, mtu=500)
        self.assertEqual(str(e), "DTLS MTU must be 576 or more, not 500")
        self.assertRaises(ValueError, DtlsEndpoint, CLIENT, cert("a"), "md5 AA", print, print,
                          print, clock)
        self.assertRaises(ValueError, DtlsEndpoint, CLIENT, cert("a"), None, print, print,
                          print, clock, profiles=["SRTP_NULL_SHA1_80"])

    def test_close_sends_close_notify(self):
        link = Link()
        link.run()
        self.assertKeysCross(link)
        link.client.close()
        self.assertEqual(link.client.state, dtls.CLOSED)
        self.assertEqual(len(link.sent["c2s"]), 3)
        self.assertEqual(link.sent["c2s"][2][0], dtls.CT_ALERT)
        link.run(start=False)
        self.assertEqual(link.server.state, dtls.CLOSED)
        self.assertEqual(link.failures, {CLIENT: [], SERVER: []})
        link.client.close()
        self.assertEqual(len(link.sent["c2s"]), 3)

    def test_close_without_notify(self):
        """A daemon shutting down (its calls relayed on after a restart)
        ends the session without telling the peer."""
        link = Link()
        link.run()
        self.assertKeysCross(link)
        link.client.close(notify=False)
        self.assertEqual(link.client.state, dtls.CLOSED)
        self.assertEqual(len(link.sent["c2s"]), 2)  # the handshake's flights only
        link.run(start=False)
        self.assertEqual(link.server.state, dtls.CONNECTED)


class VerificationTests(SynchronousTestCase):

    def test_server_sees_wrong_fingerprint(self):
        link = Link(server_sees=cert("c").fingerprint())
        link.run()
        self.assertEqual(link.keys, {CLIENT: [], SERVER: []})
        self.assertEqual(link.failures[SERVER], [dtls.R_MISMATCH])
        self.assertEqual(link.server.failure, dtls.R_MISMATCH)
        # the server told the client (OpenSSL's alert for a refused certificate)
        self.assertEqual(link.failures[CLIENT], ["handshake failed: tlsv1 alert unknown ca"])
        self.assertIsNone(link.server.srtp_in)
        self.assertIsNone(link.server.srtp_out)
        self.assertEqual(link.clock.getDelayedCalls(), [])

    def test_client_sees_wrong_fingerprint(self):
        link = Link(client_sees=cert("c").fingerprint())
        link.run()
        self.assertEqual(link.keys, {CLIENT: [], SERVER: []})
        self.assertEqual(link.failures[CLIENT], [dtls.R_MISMATCH])
        self.assertEqual(link.failures[SERVER], ["handshake failed: tlsv1 alert unknown ca"])
        self.assertEqual(link.clock.getDelayedCalls(), [])

    def test_fingerprint_given_later(self):
        link = Link(server_sees=None)
        link.run()
        self.assertEqual(link.server.state, dtls.VERIFYING)
        self.assertEqual(link.keys[SERVER], [])
        self.assertIsNone(link.server.srtp_in)
        self.assertEqual(len(link.keys[CLIENT]), 1)
        link.server.set_remote_fingerprint(cert("a").fingerprint("sha-1"))
        self.assertEqual(link.server.state, dtls.CONNECTED)
        self.assertEqual(link.keys[SERVER][0], tuple(reversed(link.keys[CLIENT][0])))
        self.assertEqual(link.clock.getDelayedCalls(), [])

    def test_wrong_fingerprint_given_later(self):
        link = Link(server_sees=None)
        link.run()
        link.server.set_remote_fingerprint(cert("c").fingerprint())
        self.assertEqual(link.server.state, dtls.FAILED)
        self.assertEqual(link.failures[SERVER], [dtls.R_MISMATCH])
        self.assertEqual(link.keys[SERVER], [])
        self.assertIsNone(link.server.srtp_in)

    def test_no_fingerprint_ever(self):
        link = Link(server_sees=None)
        link.run()
        link.clock.advance(dtls.HANDSHAKE_TIMEOUT)
        self.assertEqual(link.failures[SERVER],
                         ["handshake timed out: no a=fingerprint to check the peer against"])
        self.assertEqual(link.keys[SERVER], [])

    def test_records_after_failure_are_counted(self):
        link = Link(server_sees=cert("c").fingerprint())
        link.run()
        before = len(link.sent["s2c"])
        for data in (link.sent["c2s"][0], b"\x16garbage", record(22, b"x" * 20)):
            link.server.datagram(data, None)
        self.assertEqual(link.server.counters()["after-close"], 3)
        self.assertEqual(len(link.sent["s2c"]), before)
        self.assertEqual(link.failures[SERVER], [dtls.R_MISMATCH])


class RetransmissionTests(SynchronousTestCase):

    def test_lost_client_hello(self):
        link = Link(drop={("c2s", 0)})
        link.run()
        self.assertEqual(link.sent["s2c"], [])
        link.advance(0.999)
        self.assertEqual(len(link.sent["c2s"]), 1)
        link.advance(0.001)
        self.assertEqual(link.client.counters()["retransmits"], 1)
        self.assertEqual(link.client.state, dtls.CONNECTED)
        self.assertEqual(link.server.state, dtls.CONNECTED)
        self.assertEqual(link.keys[CLIENT][0], tuple(reversed(link.keys[SERVER][0])))
        self.assertEqual(link.clock.getDelayedCalls(), [])

    def test_lost_server_flight(self):
        link = Link(drop={("s2c", 0)})
        link.run()
        link.advance(1.0)   # both timers run out: the client's ClientHello and the server's flight
        self.assertEqual(link.server.counters()["retransmits"], 1)
        self.assertEqual((link.client.state, link.server.state), (dtls.CONNECTED, dtls.CONNECTED))
        self.assertEqual(link.keys[CLIENT][0], tuple(reversed(link.keys[SERVER][0])))

    def test_lost_client_second_flight(self):
        link = Link(drop={("c2s", 1)})
        link.run()
        self.assertEqual(link.server.state, dtls.HANDSHAKING)
        link.advance(1.0)
        self.assertEqual(link.client.counters()["retransmits"], 1)
        self.assertEqual((link.client.state, link.server.state), (dtls.CONNECTED, dtls.CONNECTED))
        self.assertEqual(link.keys[CLIENT][0], tuple(reversed(link.keys[SERVER][0])))

    def test_lost_final_flight(self):
        """The server is done; the client's retransmission makes it send its last flight again."""
        link = Link(drop={("s2c", 1)})
        link.run()
        self.assertEqual(link.server.state, dtls.CONNECTED)
        self.assertEqual(link.client.state, dtls.HANDSHAKING)
        link.advance(1.0)
        self.assertEqual(link.client.counters()["retransmits"], 1)
        self.assertEqual(link.server.counters()["peer-retransmits"], 1)
        self.assertEqual(link.sent["s2c"][2], link.sent["s2c"][1])
        self.assertEqual(link.client.state, dtls.CONNECTED)
        self.assertEqual(link.keys[CLIENT][0], tuple(reversed(link.keys[SERVER][0])))
        self.assertEqual(link.clock.getDelayedCalls(), [])

    def test_schedule_doubles_to_60s_then_gives_up(self):
        link = Link(client_kw={"handshake_timeout": 300.0},
                    drop={("c2s", n) for n in range(50)})
        link.run()
        times = [0]
        for second in range(1, 301):
            count = len(link.sent["c2s"])
            link.advance(1.0)
            if len(link.sent["c2s"]) != count:
                self.assertEqual(len(link.sent["c2s"]), count + 1)
                times.append(second)
        self.assertEqual(times, [0, 1, 3, 7, 15, 31, 63, 123, 183, 243])
        self.assertEqual(link.failures[CLIENT], [dtls.R_TIMEOUT])
        self.assertEqual(link.client.counters()["retransmits"], 9)
        self.assertEqual(link.clock.getDelayedCalls(), [])

    def test_default_handshake_timeout(self):
        link = Link(drop={("c2s", n) for n in range(50)})
        link.run()
        for _ in range(59):
            link.advance(1.0)
        self.assertEqual(link.client.state, dtls.HANDSHAKING)
        link.advance(1.0)
        self.assertEqual(link.failures[CLIENT], ["handshake timed out"])
        self.assertEqual(len(link.sent["c2s"]), 6)   # at 0, 1, 3, 7, 15, 31 s
        # the server, started at the same time, never heard anything
        self.assertEqual(link.failures[SERVER], ["handshake timed out"])
        self.assertEqual(link.clock.getDelayedCalls(), [])


class MtuTests(SynchronousTestCase):

    def test_small_mtu_splits_flights(self):
        link = Link(client_kw={"mtu": 576}, server_kw={"mtu": 576})
        link.run()
        self.assertEqual(len(link.keys[CLIENT]), 1)
        sizes = [len(d) for d in link.sent["c2s"] + link.sent["s2c"]]
        self.assertLessEqual(max(sizes), 576)
        # the server's first flight (certificate and all, about 680 bytes) needs two datagrams
        self.assertEqual(len(link.sent["s2c"]), 3)

    def test_records_packed_up_to_mtu(self):
        link = Link(client_kw={"mtu": 1200}, server_kw={"mtu": 1200})
        link.run()
        # the server's first flight: several records in one datagram
        flight = link.sent["s2c"][0]
        self.assertGreater(len(flight), 576)
        self.assertLessEqual(len(flight), 1200)
        self.assertGreater(len(dtls.dtls_records(flight)), 1)


class BadInputTests(SynchronousTestCase):

    def test_dtls_records(self):
        self.assertEqual(dtls.dtls_records(record(22, b"abc") + record(20, b"\x01")), [22, 20])
        for bad in (b"", b"\x16", b"\x16\xfe\xfd" + bytes(9), record(22, b"abc")[:-1],
                    record(22, b"abc") + b"\x00", b"\x18" + record(22, b"abc")[1:],
                    b"\x16\x03\x03" + record(22, b"abc")[3:]):
            self.assertIsNone(dtls.dtls_records(bad), bad)

    def test_garbage_is_counted_and_the_handshake_goes_on(self):
        link = Link()
        link.client.start()
        garbage = [
            b"", b"\x14", os.urandom(200), b"\x16\xfe\xfd" + bytes(20),      # no records
            record(22, os.urandom(40)),                                    # bad handshake header
            record(22, bytes([1]) + (100).to_bytes(3, "big") + bytes(5)    # truncated fragment
                   + (50).to_bytes(3, "big") + bytes(8)),
            record(22, bytes([1]) + (100).to_bytes(3, "big") + bytes(8)),  # empty fragment
            record(22, bytes([2]) + bytes(11)),               # a server_hello, to the server
            record(23, os.urandom(30)),                       # clear-text application data
            record(20, b"\x02"),                              # a bad ChangeCipherSpec
            record(22, os.urandom(40), epoch=7),              # an epoch not yet possible
        ]
        for data in garbage:
            link.server.datagram(data, None)
        self.assertEqual(link.server.counters()["garbage"], len(garbage))
        self.assertEqual(link.sent["s2c"], [])
        link.run(start=False)
        self.assertEqual(len(link.keys[SERVER]), 1)
        self.assertEqual(link.server.counters()["garbage"], len(garbage))

    def test_garbage_to_the_client(self):
        link = Link()
        link.client.start()
        link.client.datagram(record(22, bytes([1]) + bytes(11)), None)  # a client_hello
        link.client.datagram(os.urandom(100), None)
        self.assertEqual(link.client.counters()["garbage"], 2)
        link.run(start=False)
        self.assertEqual(len(link.keys[CLIENT]), 1)

    def test_handshake_flood_is_rate_limited(self):
        link = Link()
        link.client.start()
        hello = link.queues["c2s"].pop(0)
        for _ in range(201):
            link.server.datagram(hello, None)
        counters = link.server.counters()
        self.assertEqual(counters["received"], 201)
        self.assertEqual(counters["rate-limited"], 201 - dtls.RATE_BURST)
        self.assertEqual(len(link.sent["s2c"]), 1)   # the copies were replays: no new flight
        link.clock.advance(0.5)                        # 8 tokens back
        for _ in range(10):
            link.server.datagram(hello, None)
        self.assertEqual(link.server.counters()["rate-limited"], 201 - dtls.RATE_BURST + 2)
        # the client's real second flight, at the same instant, finds no token either
        link.run(start=False)
        self.assertEqual(link.server.counters()["rate-limited"], 201 - dtls.RATE_BURST + 3)
        self.assertEqual(link.keys, {CLIENT: [], SERVER: []})
        # a second later there are tokens again, and the client retransmits
        link.advance(1.0)
        self.assertEqual(link.client.counters()["retransmits"], 1)
        self.assertEqual(len(link.keys[SERVER]), 1)
        self.assertEqual(len(link.keys[CLIENT]), 1)

    def test_after_handshake(self):
        link = Link()
        link.run()
        sent = len(link.sent["s2c"])
        link.server.datagram(record(23, os.urandom(40), epoch=1), None)
        self.assertEqual(link.server.counters()["application-data"], 1)
        # a replayed handshake flight: our final flight again, at most once a second
        link.server.datagram(link.sent["c2s"][1], None)
        link.server.datagram(link.sent["c2s"][1], None)
        self.assertEqual(link.server.counters()["peer-retransmits"], 2)
        self.assertEqual(len(link.sent["s2c"]), sent + 1)
        link.clock.advance(1.0)
        link.server.datagram(link.sent["c2s"][1], None)
        self.assertEqual(len(link.sent["s2c"]), sent + 2)
        # the client sent the last flight of nothing: it has nothing to repeat
        link.client.datagram(link.sent["s2c"][0], None)
        self.assertEqual(link.client.counters()["peer-retransmits"], 1)
        self.assertEqual(len(link.sent["c2s"]), 2)
        # a forged alert in clear text after the handshake does not end it
        link.server.datagram(record(21, b"\x02\x28"), None)
        self.assertEqual(link.server.state, dtls.CONNECTED)
        self.assertEqual(len(link.keys[SERVER]), 1)

    def test_callback_error_never_escapes(self):
        clock = Clock()
        sent = []

        def boom(srtp_in, srtp_out):
            raise ZeroDivisionError("engine bug")

        client = DtlsEndpoint(CLIENT, cert("a"), cert("b").fingerprint(), sent.append, boom,
                              print, clock)
        server = DtlsEndpoint(SERVER, cert("b"), cert("a").fingerprint(), sent.append,
                              lambda i, o: None, print, clock)
        client.start()
        server.datagram(sent.pop(0), None)
        client.datagram(sent.pop(0), None)
        server.datagram(sent.pop(0), None)
        client.datagram(sent.pop(0), None)   # completes: on_keys raises
        self.assertEqual(client.counters()["errors"], 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class CompatTests(SynchronousTestCase):
    """Both paths of _dtls_compat, each where the installed pyOpenSSL has it."""

    def connected_pair(self):
        link = Link(client_kw={"profiles": ["AES_CM_128_HMAC_SHA1_32"]},
                    server_kw={"profiles": ["AES_CM_128_HMAC_SHA1_32"]})
        link.run()
        return link

    def test_selected_profile_binding_path(self):
        link = self.connected_pair()
        self.assertEqual(compat._selected_profile_lib(link.client._conn), b"SRTP_AES128_CM_SHA1_32")
        self.assertEqual(compat.selected_srtp_profile(link.server._conn), b"SRTP_AES128_CM_SHA1_32")
        fresh = SSL.Connection(SSL.Context(SSL.DTLS_METHOD))
        self.assertIsNone(compat._selected_profile_lib(fresh))

    def test_selected_profile_method_path(self):
        if not compat.HAVE_SELECTED_PROFILE:
            raise SkipTest("pyOpenSSL %s has no get_selected_srtp_profile (the binding path "
                           "is tested)" % (OpenSSL.__version__,))
        link = self.connected_pair()
        self.assertEqual(compat._selected_profile_method(link.client._conn),
                         b"SRTP_AES128_CM_SHA1_32")
        self.assertIsNone(compat._selected_profile_method(
            SSL.Connection(SSL.Context(SSL.DTLS_METHOD))))

    def test_handle_timeout_binding_path(self):
        # no flight sent, no timer: nothing to retransmit
        conn = SSL.Connection(SSL.Context(SSL.DTLS_METHOD))
        self.assertIs(compat._handle_timeout_lib(conn), False)
        self.assertIs(compat.handle_timeout(conn), False)

    def test_handle_timeout_method_path(self):
        if not compat.HAVE_HANDLE_TIMEOUT:
            raise SkipTest("pyOpenSSL %s has no DTLSv1_handle_timeout (the binding path is "
                           "tested)" % (OpenSSL.__version__,))
        conn = SSL.Connection(SSL.Context(SSL.DTLS_METHOD))
        self.assertIs(compat._handle_timeout_method(conn), False)

    def test_sha1_signature_both_paths(self):
        c = cert("a")
        resigned = compat._resign_pyopenssl(c.certificate, c.key, "sha1")
        self.assertIsInstance(resigned.signature_hash_algorithm, hashes.SHA1)
        self.assertEqual(resigned.public_key().public_bytes(*SPKI),
                         c.certificate.public_key().public_bytes(*SPKI))
        self.assertEqual(resigned.subject, c.certificate.subject)
        builder = (x509.CertificateBuilder().subject_name(c.certificate.subject)
                   .issuer_name(c.certificate.subject).public_key(c.key.public_key())
                   .serial_number(7).not_valid_before(validity(c.certificate, "before"))
                   .not_valid_after(validity(c.certificate, "after")))
        signed = compat.sign_certificate(builder, c.key, hashes.SHA1())
        self.assertIsInstance(signed.signature_hash_algorithm, hashes.SHA1)
        signed = compat.sign_certificate(builder, c.key, hashes.SHA256())
        self.assertIsInstance(signed.signature_hash_algorithm, hashes.SHA256)

    def test_use_certificate_both_paths(self):
        c = cert("a")
        for use in (compat._use_certificate_pyopenssl, compat.use_certificate):
            ctx = SSL.Context(SSL.DTLS_METHOD)
            use(ctx, c.certificate, c.key)
            ctx.check_privatekey()

    def test_flags_match_the_installed_pyopenssl(self):
        self.assertEqual(compat.HAVE_SELECTED_PROFILE,
                         hasattr(SSL.Connection, "get_selected_srtp_profile"))
        self.assertEqual(compat.HAVE_HANDLE_TIMEOUT,
                         hasattr(SSL.Connection, "DTLSv1_handle_timeout"))
