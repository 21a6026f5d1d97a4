"""The pyOpenSSL differences DTLS-SRTP needs, in one place.

Debian 12 ships pyOpenSSL 23.0 (cryptography 38); the venv has the current
PyPI release.  Both have ``DTLS_METHOD``, ``Context.set_tlsext_use_srtp``,
memory BIOs, ``export_keying_material`` and ``set_ciphertext_mtu``.  What
23.0 lacks, and how it is reached there:

``Connection.get_selected_srtp_profile``
    missing in 23.0; the cffi binding underneath has
    ``SSL_get_selected_srtp_profile`` (:func:`_selected_profile_lib`).
``Connection.DTLSv1_handle_timeout``
    missing in 23.0; the binding has ``DTLSv1_handle_timeout``
    (:func:`_handle_timeout_lib`).  ``DTLSv1_get_timeout`` exists in neither
    23.0 nor the binding, which is one reason the endpoint runs its own
    retransmission timer on the reactor it is given (see
    :mod:`omnirtp.media.dtls`).

Each function has both paths as separate functions, so that the tests can
run the binding path under the venv as well.
"""

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

#: the installed pyOpenSSL has the method (PyPI) or not (Debian 12)
HAVE_SELECTED_PROFILE = hasattr(SSL.Connection, "get_selected_srtp_profile")
HAVE_HANDLE_TIMEOUT = hasattr(SSL.Connection, "DTLSv1_handle_timeout")


def _selected_profile_method(conn):
    return conn.get_selected_srtp_profile() or None


def _selected_profile_lib(conn):
    profile = _lib.SSL_get_selected_srtp_profile(conn._ssl)
    if profile == _ffi.NULL:
        return None
    return _ffi.string(profile.name) or None


def selected_srtp_profile(conn):
    """The negotiated use_srtp profile name (bytes, e.g. b"SRTP_AES128_CM_SHA1_80"), or None."""
    if HAVE_SELECTED_PROFILE:
        return _selected_profile_method(conn)
    return _selected_profile_lib(conn)


def _handle_timeout_method(conn):
    return bool(conn.DTLSv1_handle_timeout())


def _handle_timeout_lib(conn):
    # 1: OpenSSL's own timer had expired and the flight is written to the
    # BIO again; 0: not expired (or no timer); negative: an error, which
    # leaves the connection as it was (the handshake reports it later).
    return _lib.DTLSv1_handle_timeout(conn._ssl) > 0


def handle_timeout(conn):
    """Let OpenSSL retransmit its last flight if its own timer has expired.

    True if it did (new records are in the memory BIO), False if its timer
    had not expired yet.  OpenSSL measures that on the wall clock, not on
    the reactor's.
    """
    if HAVE_HANDLE_TIMEOUT:
        return _handle_timeout_method(conn)
    return _handle_timeout_lib(conn)


def _use_certificate_cryptography(ctx, certificate, key):
    ctx.use_certificate(certificate)
    ctx.use_privatekey(key)


def _use_certificate_pyopenssl(ctx, certificate, key):
    from OpenSSL import crypto
    ctx.use_certificate(crypto.X509.from_cryptography(certificate))
    ctx.use_privatekey(crypto.PKey.from_cryptography_key(key))


def use_certificate(ctx, certificate, key):
    """Give the context our ``cryptography`` certificate and key.

    pyOpenSSL 24.3 and later take them as they are (and deprecate its own
    X509/PKey there); 23.0 takes only its own objects.
    """
    try:
        _use_certificate_cryptography(ctx, certificate, key)
    except TypeError:
        _use_certificate_pyopenssl(ctx, certificate, key)


def sign_certificate(builder, key, hash_algorithm):
    """``builder.sign(key, hash_algorithm)``, also for SHA-1.

    cryptography 38 signs with SHA-1; recent releases refuse to
    (UnsupportedAlgorithm).  rtpengine's ``dtls-signature=SHA-1`` still asks
    for it, so there the certificate is signed with SHA-256 first and signed
    again with SHA-1 through pyOpenSSL's (deprecated) ``X509.sign``.
    """
    import warnings
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes
    sha1 = isinstance(hash_algorithm, hashes.SHA1)
    try:
        with warnings.catch_warnings():
            if sha1:    # asked for by the operator; cryptography 38 warns about it
                warnings.simplefilter("ignore")
            return builder.sign(key, hash_algorithm)
    except UnsupportedAlgorithm:
        if not sha1:
            raise
    return _resign_pyopenssl(builder.sign(key, hashes.SHA256()), key, "sha1")


def _resign_pyopenssl(certificate, key, digest):
    import warnings
    from OpenSSL import crypto
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        x509 = crypto.X509.from_cryptography(certificate)
        x509.sign(crypto.PKey.from_cryptography_key(key), digest)
        return x509.to_cryptography()
