"""DTLS-SRTP (RFC 5763, 5764, 8842) as a pure endpoint: bytes in, bytes out.

No sockets and no global reactor.  A :class:`DtlsEndpoint` is fed the DTLS
datagrams its socket receives (``datagram(data, source)``, RFC 7983 first
byte 20-63), sends through the ``send(data)`` callable it was given, reads
time from the ``IReactorTime`` it was given, and when the handshake is done
and the peer's certificate matches the ``a=fingerprint`` of its SDP, calls
``on_keys(srtp_in, srtp_out)`` once with two crypto dicts::

    {"suite": "AES_CM_128_HMAC_SHA1_80" | "AES_CM_128_HMAC_SHA1_32"
              | "AEAD_AES_128_GCM",
     "key": "<base64 (with padding) of master key || master salt>"}

``srtp_in`` unprotects what the peer sends (the peer's write key),
``srtp_out`` protects what we send (our write key).  On any failure it calls
``on_failure(reason)`` once and never ``on_keys``.

What rtpengine 10.5 does, and we follow (asked on loopback):

- the certificate is made at start: EC prime256v1 unless
  ``dtls-cert-cipher=RSA`` (then ``dtls-rsa-key-size`` bits, 2048), signed
  with SHA-256 unless ``dtls-signature=SHA-1``; ``dtls-signature`` changes
  the certificate's signature, not the ``a=fingerprint`` hash;
- ``a=fingerprint`` uses the hash of the peer's (first) ``a=fingerprint``,
  even against the ``DTLS-fingerprint`` flag; else the one that flag names
  (SHA-1, SHA-224, SHA-256, SHA-384, SHA-512); else sha-256
  (:func:`fingerprint_hash`);
- its offers always say ``a=setup:actpass`` (also with ``DTLS=passive``);
  answering, it is ``active`` to actpass and passive offers and
  ``passive`` to active ones (``DTLS=active`` answers the same);
  ``DTLS=passive`` (or ``dtls-passive``) makes it answer ``passive`` except
  to a passive offer; an offer with no a=setup, or holdconn or an unknown
  word, gets no DTLS attributes (no a=setup, no a=fingerprint) in the
  answer; there is no ``a=tls-id`` in 10.5;
- it prefers the use_srtp profiles AEAD_AES_256_GCM, AEAD_AES_128_GCM,
  AES128_CM_SHA1_80, AES128_CM_SHA1_32, in that order (as a DTLS server).
  We offer the same list without AEAD_AES_256_GCM, which the crypto dict
  shape does not name.

rtpengine 10.5 has no option for a certificate from files;
:meth:`Certificate.load` exists for when one is wanted.  Our certificate
is valid from a day before start for a year (rtpengine's for 30 days, and
it renews it; we do not).

Retransmission (RFC 6347 4.2.4): a flight we sent is retransmitted after
1 s, the time doubling up to 60 s, on the reactor's clock.  When the timer
fires, OpenSSL is asked first (``DTLSv1_handle_timeout``: it rebuilds the
flight with new record numbers if its own timer, on the wall clock, has run
out, which is the case whenever the reactor keeps real time); if it does
not (a reactor clock that is not the wall clock: tests on a ``Clock``), the
datagrams of the flight are sent again as they were.  Such a copy repeats
the record numbers, so a peer that had the first copy drops it as a replay;
the peer's own timer then resends its flight.  After the handshake, a peer
that retransmits its last flight did not get our final one: that one is
sent again (at most once per initial timeout).

Bad input never raises out of :meth:`DtlsEndpoint.datagram`: datagrams that
are not DTLS records, or carry a malformed clear-text handshake message or
one the peer's role never sends, are dropped as ``garbage`` (OpenSSL would
end the handshake on them); before the handshake ends at
most ``RATE_BURST`` datagrams (refilled ``RATE_PER_SECOND`` per second) reach
OpenSSL, the rest are dropped as ``rate-limited``; a handshake that OpenSSL
refuses (a clear-text fatal alert included), a fingerprint mismatch or
``handshake_timeout`` seconds without a verified peer end the endpoint
(``failed``), after which every datagram is dropped as ``after-close``.
rtpengine itself, refusing our fingerprint, sends no alert: our side then
ends by the timeout.
"""

import base64
import datetime
import hashlib

from OpenSSL import SSL, crypto
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from twisted.logger import Logger

from omnirtp.media import _dtls_compat as compat

# -- roles (a=setup, RFC 4145 / 5763 / 8842) -------------------------------------

ACTPASS = "actpass"
ACTIVE = "active"
PASSIVE = "passive"
HOLDCONN = "holdconn"

#: DTLS roles: the client sends the ClientHello (a=setup:active)
CLIENT = "client"
SERVER = "server"


def role_of(setup):
    """Our DTLS role when we say ``a=setup:<setup>`` (active or passive); None otherwise."""
    return {ACTIVE: CLIENT, PASSIVE: SERVER}.get(_setup_word(setup))


def offer_setup():
    """What rtpengine 10.5 offers: always actpass (with ``DTLS=passive`` too)."""
    return ACTPASS


def answer_setup(remote_setup, passive=False):
    """Our ``a=setup`` answering an offer that said ``remote_setup``.

    As rtpengine 10.5 answers: actpass -> active (passive when ``passive``,
    i.e. ``DTLS=passive`` or ``dtls-passive``), active -> passive,
    passive -> active (even when ``passive``: both cannot listen).  None when
    the offer had no a=setup or holdconn/another word: rtpengine then puts no
    DTLS attributes in its answer.
    """
    setup = _setup_word(remote_setup)
    if setup == ACTPASS:
        return PASSIVE if passive else ACTIVE
    if setup == ACTIVE:
        return PASSIVE
    if setup == PASSIVE:
        return ACTIVE
    return None


def role_from_answer(remote_setup, passive=False):
    """Our role after we offered actpass and the answer said ``remote_setup``.

    active -> we are the server, passive -> the client.  An answer must not
    say actpass (RFC 5763 5); if one does we take the client role (the server
    one with ``passive``).  None for no a=setup or holdconn.
    """
    setup = _setup_word(remote_setup)
    if setup == ACTIVE:
        return SERVER
    if setup == PASSIVE:
        return CLIENT
    if setup == ACTPASS:
        return SERVER if passive else CLIENT
    return None


def negotiate_role(remote_setup, we_offered, passive=False):
    """Our DTLS role from the peer's a=setup and our place in the exchange.

    ``we_offered`` True: the peer's SDP was the answer to our actpass offer;
    False: the peer's SDP was the offer and we answer it.
    """
    if we_offered:
        return role_from_answer(remote_setup, passive)
    return role_of(answer_setup(remote_setup, passive))


def _setup_word(value):
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value.strip().lower()


# -- fingerprints (RFC 4572 / 8122) ----------------------------------------------

#: SDP hash names rtpengine 10.5 writes and accepts, to hashlib names
HASHES = {
    "sha-1": "sha1",
    "sha-224": "sha224",
    "sha-256": "sha256",
    "sha-384": "sha384",
    "sha-512": "sha512",
}
DEFAULT_HASH = "sha-256"


def hash_name(value):
    """The SDP spelling (``sha-256``) of a hash named ``SHA-256``, ``sha256``, ``SHA256``...

    Raises ValueError for a hash rtpengine does not offer (md5, md2, ...).
    """
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    word = value.strip().lower()
    if word.startswith("sha") and not word.startswith("sha-"):
        word = "sha-" + word[3:]
    if word not in HASHES:
        raise ValueError("unsupported fingerprint hash %r" % (value,))
    return word


def fingerprint(certificate, hash="sha-256"):
    """The ``a=fingerprint`` value of a certificate: ``"sha-256 AB:CD:..."``.

    ``certificate``: a :class:`Certificate`, a ``cryptography`` certificate
    or its DER bytes.  ``hash``: any spelling :func:`hash_name` accepts.
    """
    name = hash_name(hash)
    return "%s %s" % (name, _hex(hashlib.new(HASHES[name], _der(certificate)).digest()))


def fingerprint_hash(remote_fingerprints=None, flag=None):
    """The hash of our ``a=fingerprint``, as rtpengine 10.5 picks it.

    The peer's (the first of its a=fingerprint values) wins, also over the
    ``DTLS-fingerprint`` flag; without one the flag's, else sha-256.
    """
    if remote_fingerprints:
        first = remote_fingerprints if isinstance(remote_fingerprints, (str, bytes)) \
            else remote_fingerprints[0]
        return hash_name(_text(first).split()[0])
    if flag:
        return hash_name(flag)
    return DEFAULT_HASH


def parse_fingerprint(value):
    """``"sha-256 AB:CD:..."`` (an a=fingerprint value) -> ``("sha-256", digest bytes)``.

    Raises ValueError with a sentence if it is not one.
    """
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        # "a=fingerprint" with no value (found by make fuzz: AttributeError)
        raise ValueError("a=fingerprint needs a hash name and a value: %r" % (value,))
    parts = value.split()
    if len(parts) != 2:
        raise ValueError("a=fingerprint needs a hash name and a value: %r" % (value,))
    name = hash_name(parts[0])
    try:
        digest = bytes.fromhex(parts[1].replace(":", ""))
    except ValueError:
        raise ValueError("a=fingerprint value is not hex: %r" % (parts[1],)) from None
    size = hashlib.new(HASHES[name]).digest_size
    if len(digest) != size:
        raise ValueError("a=fingerprint %s needs %d bytes, got %d" % (name, size, len(digest)))
    return name, digest


def fingerprint_matches(certificate, fingerprints):
    """True if the certificate matches one of the parsed ``(name, digest)`` pairs."""
    der = _der(certificate)
    for name, digest in fingerprints:
        if hashlib.new(HASHES[name], der).digest() == digest:
            return True
    return False


def _hex(digest):
    return ":".join("%02X" % b for b in digest)


def _der(certificate):
    if isinstance(certificate, bytes):
        return certificate
    if isinstance(certificate, Certificate):
        return certificate.der
    return certificate.public_bytes(serialization.Encoding.DER)


def _parse_fingerprints(value):
    """None, one a=fingerprint value (str/tuple) or a list of them -> list of pairs or None."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        return [parse_fingerprint(value)]
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], (str, bytes)) \
            and isinstance(value[1], (str, bytes)) and not _is_fingerprint_text(value[0]):
        return [parse_fingerprint("%s %s" % tuple(_text(v) for v in value))]
    pairs = [pair for v in value for pair in _parse_fingerprints(v)]
    if not pairs:
        raise ValueError("no a=fingerprint given")
    return pairs


def _is_fingerprint_text(value):
    return len(_text(value).split()) == 2


def _text(value):
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


# -- the certificate ---------------------------------------------------------------

#: ``dtls-cert-cipher`` values
CERT_EC = "prime256v1"
CERT_RSA = "RSA"
#: ``dtls-signature`` values to cryptography hashes
SIGNATURES = {"sha-256": hashes.SHA256, "sha-1": hashes.SHA1}


class Certificate:
    """Our DTLS certificate and its private key (``cryptography`` objects)."""

    def __init__(self, certificate, key):
        self.certificate = certificate
        self.key = key
        self.der = certificate.public_bytes(serialization.Encoding.DER)

    @classmethod
    def generate(cls, cipher=CERT_EC, rsa_key_size=2048, signature="SHA-256",
                 common_name="omnirtp", now=None):
        """A fresh self-signed certificate, as the ``dtls-cert-cipher``,
        ``dtls-rsa-key-size`` and ``dtls-signature`` options say.

        ``cipher``: ``prime256v1`` (default, what browsers make) or ``RSA``;
        ``signature``: ``SHA-256`` (default) or ``SHA-1``.  ValueError for
        anything else.
        """
        key = cls._make_key(cipher, rsa_key_size)
        sig = hash_name(signature)
        if sig not in SIGNATURES:
            raise ValueError("unsupported dtls-signature %r (SHA-256 or SHA-1)" % (signature,))
        now = now or datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (x509.CertificateBuilder()
                   .subject_name(name).issuer_name(name)
                   .public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=365)))
        cert = compat.sign_certificate(builder, key, SIGNATURES[sig]())
        return cls(cert, key)

    @staticmethod
    def _make_key(cipher, rsa_key_size):
        word = (cipher or CERT_EC).strip()
        if word.lower() in ("prime256v1", "ec", "ecdsa"):
            return ec.generate_private_key(ec.SECP256R1())
        if word.lower() == "rsa":
            if int(rsa_key_size) < 1024:
                raise ValueError("dtls-rsa-key-size %r is too small" % (rsa_key_size,))
            return rsa.generate_private_key(public_exponent=65537, key_size=int(rsa_key_size))
        raise ValueError("unsupported dtls-cert-cipher %r (prime256v1 or RSA)" % (cipher,))

    @classmethod
    def from_config(cls, config):
        """The certificate a daemon with this ``Config`` makes at start."""
        return cls.generate(cipher=getattr(config, "dtls_cert_cipher", None) or CERT_EC,
                            rsa_key_size=getattr(config, "dtls_rsa_key_size", None) or 2048,
                            signature=getattr(config, "dtls_signature", None) or "SHA-256")

    @classmethod
    def load(cls, cert_path, key_path=None):
        """Load a PEM certificate and its PEM private key (in ``key_path``, or the same file)."""
        with open(cert_path, "rb") as f:
            cert_pem = f.read()
        key_pem = cert_pem
        if key_path is not None:
            with open(key_path, "rb") as f:
                key_pem = f.read()
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
                key.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
            raise ValueError("the private key in %s does not belong to the certificate in %s"
                             % (key_path or cert_path, cert_path))
        return cls(cert, key)

    def pem(self):
        """(certificate PEM, unencrypted PKCS#8 key PEM), e.g. for openssl's command line."""
        return (self.certificate.public_bytes(serialization.Encoding.PEM),
                self.key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))

    def fingerprint(self, hash=DEFAULT_HASH):
        """Our ``a=fingerprint`` value, ``"sha-256 AB:CD:..."``."""
        return fingerprint(self.der, hash)


# -- SRTP profiles (RFC 5764 4.1.2, RFC 7714 14.2) ---------------------------------

class Profile:
    """A use_srtp profile: OpenSSL's name, the crypto dict's suite, key and salt lengths."""

    __slots__ = ("openssl_name", "suite", "key_length", "salt_length")

    def __init__(self, openssl_name, suite, key_length, salt_length):
        self.openssl_name = openssl_name
        self.suite = suite
        self.key_length = key_length
        self.salt_length = salt_length

    @property
    def export_length(self):
        """Bytes of EXTRACTOR-dtls_srtp: both sides' key and salt."""
        return 2 * (self.key_length + self.salt_length)

    def __repr__(self):
        return "<Profile %s>" % (self.suite,)


PROFILES = (
    Profile(b"SRTP_AEAD_AES_128_GCM", "AEAD_AES_128_GCM", 16, 12),
    Profile(b"SRTP_AES128_CM_SHA1_80", "AES_CM_128_HMAC_SHA1_80", 16, 14),
    Profile(b"SRTP_AES128_CM_SHA1_32", "AES_CM_128_HMAC_SHA1_32", 16, 14),
)
PROFILE_BY_NAME = {p.openssl_name: p for p in PROFILES}
PROFILE_BY_SUITE = {p.suite: p for p in PROFILES}

_supported = None


def supported_profiles():
    """The profiles of :data:`PROFILES` that OpenSSL and libsrtp both have here, in our order."""
    global _supported
    if _supported is None:
        _supported = tuple(p for p in PROFILES if _openssl_has(p) and _libsrtp_has(p))
    return _supported


def _openssl_has(profile):
    try:
        SSL.Context(SSL.DTLS_METHOD).set_tlsext_use_srtp(profile.openssl_name)
    except SSL.Error:
        return False
    return True


_LIBSRTP_PROFILE = {
    "AEAD_AES_128_GCM": "SRTP_PROFILE_AEAD_AES_128_GCM",
    "AES_CM_128_HMAC_SHA1_80": "SRTP_PROFILE_AES128_CM_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32": "SRTP_PROFILE_AES128_CM_SHA1_32",
}


def _libsrtp_has(profile):
    try:
        import pylibsrtp
    except ImportError:  # pragma: no cover - both supported version sets have it
        return True     # the DTLS side does not need it; the SRTP step reports it
    number = getattr(pylibsrtp.Policy, _LIBSRTP_PROFILE[profile.suite], None)
    if number is None:
        return False
    try:
        pylibsrtp.Session(pylibsrtp.Policy(
            key=bytes(profile.key_length + profile.salt_length),
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=number))
    except pylibsrtp.Error:
        return False
    return True


def split_keying_material(material, profile, role):
    """RFC 5764 4.2: client key | server key | client salt | server salt -> (srtp_in, srtp_out).

    ``srtp_out`` is our write key (the client's when ``role`` is client),
    ``srtp_in`` the peer's; both as crypto dicts.
    """
    k, s = profile.key_length, profile.salt_length
    if len(material) != 2 * (k + s):
        raise ValueError("keying material for %s needs %d bytes, got %d"
                         % (profile.suite, 2 * (k + s), len(material)))
    client = material[0:k] + material[2 * k:2 * k + s]
    server = material[k:2 * k] + material[2 * k + s:2 * k + 2 * s]
    mine, theirs = (client, server) if role == CLIENT else (server, client)
    return crypto_dict(profile.suite, theirs), crypto_dict(profile.suite, mine)


def crypto_dict(suite, master):
    """The contract's crypto dict for a suite and master key || salt."""
    return {"suite": suite, "key": base64.b64encode(master).decode("ascii")}


# -- the endpoint ------------------------------------------------------------------

#: endpoint states
NEW = "new"
HANDSHAKING = "handshaking"
VERIFYING = "verifying"      # handshake done, waiting for the remote a=fingerprint
CONNECTED = "connected"
FAILED = "failed"
CLOSED = "closed"

DEFAULT_MTU = 1200
MIN_MTU = 576
INITIAL_TIMEOUT = 1.0
MAX_TIMEOUT = 60.0
HANDSHAKE_TIMEOUT = 60.0
RATE_BURST = 32
RATE_PER_SECOND = 16.0

DTLS1_2_VERSION = 0xFEFD
EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"

_HEADER_SIZE = 13   # type, version (2), epoch (2), sequence number (6), length (2)
CT_CHANGE_CIPHER_SPEC = 20
CT_ALERT = 21
CT_HANDSHAKE = 22
CT_APPLICATION_DATA = 23

# counter names
C_RECEIVED = "received"
C_SENT = "sent"
C_GARBAGE = "garbage"
C_RATE_LIMITED = "rate-limited"
C_RETRANSMITS = "retransmits"
C_PEER_RETRANSMITS = "peer-retransmits"
C_APPLICATION_DATA = "application-data"
C_AFTER_CLOSE = "after-close"
C_ERRORS = "errors"
COUNTERS = (C_RECEIVED, C_SENT, C_GARBAGE, C_RATE_LIMITED, C_RETRANSMITS,
            C_PEER_RETRANSMITS, C_APPLICATION_DATA, C_AFTER_CLOSE, C_ERRORS)

# failure reasons (on_failure's argument starts with one of these)
R_MISMATCH = "fingerprint mismatch"
R_TIMEOUT = "handshake timed out"
R_NO_PROFILE = "no SRTP profile negotiated"
R_HANDSHAKE = "handshake failed"
R_CLOSED = "closed"


def dtls_records(data):
    """The content types of the DTLS records in a datagram; None if it is not a run of records."""
    types = []
    offset, size = 0, len(data)
    while offset < size:
        if size - offset < _HEADER_SIZE:
            return None
        ctype = data[offset]
        if ctype < CT_CHANGE_CIPHER_SPEC or ctype > CT_APPLICATION_DATA or data[offset + 1] != 0xFE:
            return None
        length = (data[offset + 11] << 8) | data[offset + 12]
        offset += _HEADER_SIZE + length
        if offset > size:
            return None
        types.append(ctype)
    return types or None


#: handshake message types (RFC 6347 4.3.2) each side may send in the clear
# client_hello, certificate, certificate_verify, client_key_exchange
_FROM_CLIENT = frozenset((1, 11, 15, 16))
# hello_request, server_hello, hello_verify_request, new_session_ticket, certificate,
# server_key_exchange, certificate_request, server_hello_done
_FROM_SERVER = frozenset((0, 2, 3, 4, 11, 12, 13, 14))


def plausible_handshake(data, from_types):
    """False if ``data`` (a run of records) cannot be part of the peer's handshake.

    That is: a clear-text handshake message that is malformed or of a type
    the peer's role never sends, clear-text application data, a
    ChangeCipherSpec other than 1, an epoch above 1.  OpenSSL ends the
    handshake on the first of these; this keeps one forged datagram from
    doing that.  Encrypted records (epoch 1) cannot be looked into and pass,
    and a well-formed message with false contents still ends the handshake,
    as DTLS says it must (ICE lets only the authorised address reach us).
    """
    offset, size = 0, len(data)
    while offset < size:
        length = (data[offset + 11] << 8) | data[offset + 12]
        body = offset + _HEADER_SIZE
        end = body + length
        ctype, epoch = data[offset], (data[offset + 3] << 8) | data[offset + 4]
        if epoch > 1:
            return False
        if epoch == 0 and ctype == CT_APPLICATION_DATA:
            return False
        if epoch == 0 and ctype == CT_CHANGE_CIPHER_SPEC and data[body:end] != b"\x01":
            return False
        if epoch == 0 and ctype == CT_HANDSHAKE:
            while body < end:
                if end - body < 12 or data[body] not in from_types:
                    return False
                total = int.from_bytes(data[body + 1:body + 4], "big")
                frag_offset = int.from_bytes(data[body + 6:body + 9], "big")
                frag_length = int.from_bytes(data[body + 9:body + 12], "big")
                body += 12 + frag_length
                if frag_offset + frag_length > total or body > end or \
                        (frag_length == 0 and total != 0):
                    return False
        offset = end
    return True


def make_context(certificate, profiles=None, ciphers=None, verify=None):
    """An ``SSL.Context`` for DTLS-SRTP with our certificate.

    Peer certificates are requested (as server) and required both ways; they
    are self-signed, so ``verify(conn, x509, depth)`` (True: accept) decides,
    by fingerprint.
    """
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_TICKET)
    ctx.set_max_proto_version(DTLS1_2_VERSION)
    compat.use_certificate(ctx, certificate.certificate, certificate.key)
    ctx.check_privatekey()
    if ciphers:
        ctx.set_cipher_list(ciphers.encode("ascii") if isinstance(ciphers, str) else ciphers)
    profiles = supported_profiles() if profiles is None else profiles
    ctx.set_tlsext_use_srtp(b":".join(_profile(p).openssl_name for p in profiles))

    def callback(conn, x509cert, errno, depth, ok):
        if verify is None:
            return True
        return bool(verify(conn, x509cert, depth))

    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, callback)
    return ctx


def _verify_endpoint(conn, x509cert, errno, depth, ok):
    """The verify callback of a shared context: asks the connection's endpoint."""
    endpoint = conn.get_app_data()
    if endpoint is None:
        return False
    return bool(endpoint._verify(conn, x509cert, depth))


#: shared contexts held per certificate (a daemon has one certificate; a few
#: profile/cipher combinations at most)
_SHARED_MAX = 8


def shared_context(certificate, profiles=None, ciphers=None):
    """The ``SSL.Context`` all endpoints with ``certificate``, ``profiles``
    and ``ciphers`` share.

    Building a context (loading the certificate and key into OpenSSL) costs
    far more than the connection made from it, so it is made once.  The
    verify callback finds its endpoint through the connection's app data
    (:class:`DtlsEndpoint` sets it); the session cache is off, so no
    connection can resume another's session (a fresh context per endpoint
    never could either).
    """
    key = (tuple(profiles) if profiles is not None else None, ciphers)
    cache = certificate.__dict__.setdefault("_contexts", {})
    ctx = cache.get(key)
    if ctx is None:
        ctx = make_context(certificate, profiles, ciphers)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_endpoint)
        if len(cache) >= _SHARED_MAX:
            cache.clear()
        cache[key] = ctx
    return ctx


def _profile(p):
    if isinstance(p, Profile):
        return p
    if isinstance(p, str) and p in PROFILE_BY_SUITE:
        return PROFILE_BY_SUITE[p]
    name = p.encode("ascii") if isinstance(p, str) else p
    if name in PROFILE_BY_NAME:
        return PROFILE_BY_NAME[name]
    raise ValueError("unknown SRTP profile %r" % (p,))


class DtlsEndpoint:
    """One DTLS-SRTP association on one media socket (RFC 5764), driven from outside.

    ``role``: ``"client"`` (a=setup:active; sends the ClientHello on
    :meth:`start`) or ``"server"`` (a=setup:passive; answers the peer's).
    ``certificate``: our :class:`Certificate`.  ``remote_fingerprint``: the
    peer's ``a=fingerprint`` value(s) (``"sha-256 AB:.."``, a ``(hash,
    value)`` pair or a list), or None until :meth:`set_remote_fingerprint`
    (keys are held back until it matches).  ``send(data)``: sends one
    datagram to the peer.  ``clock``: an ``IReactorTime``.
    """

    log = Logger()

    def __init__(self, role, certificate, remote_fingerprint, send, on_keys, on_failure,
                 clock, mtu=DEFAULT_MTU, profiles=None, ciphers=None,
                 handshake_timeout=HANDSHAKE_TIMEOUT, initial_timeout=INITIAL_TIMEOUT,
                 max_timeout=MAX_TIMEOUT):
        if role not in (CLIENT, SERVER):
            raise ValueError("DTLS role must be %r or %r, not %r" % (CLIENT, SERVER, role))
        if int(mtu) < MIN_MTU:
            raise ValueError("DTLS MTU must be %d or more, not %r" % (MIN_MTU, mtu))
        self.role = role
        self.certificate = certificate
        self._fingerprints = _parse_fingerprints(remote_fingerprint)
        self._send = send
        self._on_keys = on_keys
        self._on_failure = on_failure
        self.clock = clock
        self.mtu = int(mtu)
        self.handshake_timeout = handshake_timeout
        self.initial_timeout = initial_timeout
        self.max_timeout = max_timeout

        self.state = NEW
        self.failure = None          # reason, once failed
        self.profile = None          # the negotiated Profile
        self.srtp_in = None          # the crypto dicts, once the peer is verified
        self.srtp_out = None
        self._keys = None            # (srtp_in, srtp_out) while the peer is not verified yet
        self.peer_certificate = None  # DER of the peer's certificate, once seen
        self.remote_verified = False
        self._counters = dict.fromkeys(COUNTERS, 0)

        self._conn = SSL.Connection(shared_context(certificate, profiles, ciphers))
        self._conn.set_app_data(self)
        if role == CLIENT:
            self._conn.set_connect_state()
        else:
            self._conn.set_accept_state()
        self._conn.set_ciphertext_mtu(self.mtu)
        self._peer_sends = _FROM_SERVER if role == CLIENT else _FROM_CLIENT
        self._flight = []            # the datagrams of the last flight we sent
        self._final_flight = []      # ours, if we sent the handshake's last flight
        self._last_final_resend = None
        self._interval = initial_timeout
        self._retransmit_call = None
        self._giveup_call = None
        self._tokens = float(RATE_BURST)
        self._tokens_at = None

    # -- driving it --------------------------------------------------------------

    def start(self):
        """Begin: the client sends its ClientHello; the server waits for one.  Idempotent."""
        if self.state != NEW:
            return
        self.state = HANDSHAKING
        self._giveup_call = self.clock.callLater(self.handshake_timeout, self._give_up)
        if self.role == CLIENT:
            self._handshake()

    def datagram(self, data, source=None):
        """One datagram from the peer (its first byte 20-63).  Never raises."""
        try:
            self._datagram(data)
        except Exception:  # a bug here or in a callback: counted, logged once, never raised
            self._counters[C_ERRORS] += 1
            if not self._logged:
                self._logged = True
                self.log.failure("DTLS endpoint ({role}, {state}) failed on a datagram",
                                 role=self.role, state=self.state)

    def set_remote_fingerprint(self, remote_fingerprint):
        """The peer's a=fingerprint arrived (or changed) after we were made.

        If the handshake already ended, the peer's certificate is checked now.
        """
        self._fingerprints = _parse_fingerprints(remote_fingerprint)
        if self.state == VERIFYING:
            self._check_peer()

    def close(self, notify=True):
        """Stop: cancel the timers and, if connected and ``notify``, tell the
        peer (close_notify)."""
        if self.state in (FAILED, CLOSED):
            return
        was = self.state
        self.state = CLOSED
        self._cancel_timers()
        if notify and was in (CONNECTED, VERIFYING):
            try:
                self._conn.shutdown()
            except SSL.Error:
                pass
            self._send_all(self._drain())

    def counters(self):
        """Plain-data counters (the keys of :data:`COUNTERS`)."""
        return dict(self._counters)

    # -- inside --------------------------------------------------------------------

    def _datagram(self, data):
        counters = self._counters
        counters[C_RECEIVED] += 1
        if self.state in (FAILED, CLOSED):
            counters[C_AFTER_CLOSE] += 1
            return
        types = dtls_records(data)
        if types is None:
            counters[C_GARBAGE] += 1
            return
        if self.state == NEW:
            self.start()
        if self.state in (CONNECTED, VERIFYING):
            self._after_handshake(data, types)
            return
        if not plausible_handshake(data, self._peer_sends):
            counters[C_GARBAGE] += 1
            return
        if not self._take_token():
            counters[C_RATE_LIMITED] += 1
            return
        self._conn.bio_write(data)
        self._handshake()

    def _take_token(self):
        now = self.clock.seconds()
        if self._tokens_at is not None:
            self._tokens = min(float(RATE_BURST),
                               self._tokens + (now - self._tokens_at) * RATE_PER_SECOND)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _handshake(self):
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            done = False
        except SSL.Error as e:
            self._send_all(self._drain())      # the alert OpenSSL wrote, if any
            if self.failure is None:
                self._fail(self._mismatch_reason or "%s: %s" % (R_HANDSHAKE, _reason(e)))
            return
        else:
            done = True
        out = self._drain()
        if out:
            self._flight = out
            self._send_all(out)
        if done:
            self._final_flight = out
            self._handshake_done()
        elif out:
            self._interval = self.initial_timeout
            self._arm_retransmit()

    _mismatch_reason = None
    _logged = False

    def _verify(self, conn, x509cert, depth):
        if depth != 0:
            return True
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, x509cert)
        self.peer_certificate = der
        if self._fingerprints is not None and not fingerprint_matches(der, self._fingerprints):
            self._mismatch_reason = R_MISMATCH
            return False
        return True

    def _handshake_done(self):
        self._cancel_retransmit()
        name = compat.selected_srtp_profile(self._conn)
        profile = PROFILE_BY_NAME.get(name) if name else None
        if profile is None:
            self._fail(R_NO_PROFILE)
            return
        self.profile = profile
        material = self._conn.export_keying_material(EXPORTER_LABEL, profile.export_length)
        self._keys = split_keying_material(material, profile, self.role)
        if self.peer_certificate is None:
            peer = self._conn.get_peer_certificate()
            if peer is not None:
                self.peer_certificate = crypto.dump_certificate(crypto.FILETYPE_ASN1, peer)
        self.state = VERIFYING
        self._check_peer()

    def _check_peer(self):
        if self._fingerprints is None:
            return          # held until set_remote_fingerprint
        keys, self._keys = self._keys, None
        if self.peer_certificate is None or \
                not fingerprint_matches(self.peer_certificate, self._fingerprints):
            self._fail(R_MISMATCH)
            return
        self.remote_verified = True
        self.srtp_in, self.srtp_out = keys
        self.state = CONNECTED
        self._cancel_timers()
        self._on_keys(self.srtp_in, self.srtp_out)

    def _after_handshake(self, data, types):
        counters = self._counters
        if CT_HANDSHAKE in types or CT_CHANGE_CIPHER_SPEC in types:
            # the peer sends its last flight again: it did not get our final one
            counters[C_PEER_RETRANSMITS] += 1
            now = self.clock.seconds()
            if self._final_flight and (self._last_final_resend is None or
                                       now - self._last_final_resend >= self.initial_timeout):
                self._last_final_resend = now
                self._send_all(self._final_flight)
            return
        if CT_ALERT in types:
            self._conn.bio_write(data)
            try:
                self._conn.recv(65536)
            except SSL.ZeroReturnError:
                self._peer_closed()
                return
            except SSL.WantReadError:
                return
            except SSL.Error:
                counters[C_ERRORS] += 1
                return
        counters[C_APPLICATION_DATA] += 1

    def _peer_closed(self):
        was = self.state
        self.state = CLOSED
        self._cancel_timers()
        if was == VERIFYING:
            self.failure = R_CLOSED
            self._on_failure(R_CLOSED)

    def _drain(self):
        """The records OpenSSL wrote, packed into datagrams of at most ``mtu`` bytes."""
        chunks = []
        while True:
            try:
                chunks.append(self._conn.bio_read(65536))
            except SSL.WantReadError:
                break
        if not chunks:
            return []
        data = b"".join(chunks)
        datagrams = []
        current = b""
        offset = 0
        while offset < len(data):
            if len(data) - offset < _HEADER_SIZE:
                end = len(data)
            else:
                end = min(len(data), offset + _HEADER_SIZE +
                          ((data[offset + 11] << 8) | data[offset + 12]))
            record = data[offset:end]
            offset = end
            if current and len(current) + len(record) > self.mtu:
                datagrams.append(current)
                current = b""
            current += record
        if current:
            datagrams.append(current)
        return datagrams

    def _send_all(self, datagrams):
        for d in datagrams:
            self._counters[C_SENT] += 1
            self._send(d)

    def _arm_retransmit(self):
        self._cancel_retransmit()
        self._retransmit_call = self.clock.callLater(self._interval, self._retransmit)

    def _retransmit(self):
        self._retransmit_call = None
        if self.state != HANDSHAKING:
            return
        self._counters[C_RETRANSMITS] += 1
        try:
            rebuilt = compat.handle_timeout(self._conn)
        except SSL.Error:
            rebuilt = False
        out = self._drain() if rebuilt else []
        if out:
            self._flight = out
        self._send_all(self._flight)
        self._interval = min(self._interval * 2, self.max_timeout)
        self._arm_retransmit()

    def _give_up(self):
        self._giveup_call = None
        if self.state == HANDSHAKING:
            self._fail(R_TIMEOUT)
        elif self.state == VERIFYING:
            self._fail("%s: no a=fingerprint to check the peer against" % (R_TIMEOUT,))

    def _cancel_retransmit(self):
        if self._retransmit_call is not None:
            if self._retransmit_call.active():
                self._retransmit_call.cancel()
            self._retransmit_call = None

    def _cancel_timers(self):
        self._cancel_retransmit()
        if self._giveup_call is not None:
            if self._giveup_call.active():
                self._giveup_call.cancel()
            self._giveup_call = None

    def _fail(self, reason):
        if self.state in (FAILED, CLOSED):
            return
        self.state = FAILED
        self.failure = reason
        self._cancel_timers()
        self._on_failure(reason)


def _reason(error):
    """A one-line reason from an SSL.Error (OpenSSL's error queue) or another exception."""
    args = getattr(error, "args", ())
    if args and isinstance(args[0], list) and args[0]:
        try:
            return "; ".join(str(e[2]) for e in args[0])
        except (TypeError, IndexError):
            pass
    return str(error) or error.__class__.__name__
