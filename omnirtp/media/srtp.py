"""SRTP and SRTCP protect / unprotect as pipeline steps, on pylibsrtp.

The crypto parameters are one plain-data shape everywhere (they cross AMP
as they are)::

    {"suite": "AES_CM_128_HMAC_SHA1_80" | "AES_CM_128_HMAC_SHA1_32"
              | "AEAD_AES_128_GCM",
     "key": "<base64 of master key || master salt>"}

Suite names are RFC 4568's (and rtpengine's); :data:`SUITES` maps them to
pylibsrtp profiles and key lengths, for SDES and DTLS-SRTP alike.

One step owns one libsrtp session: :class:`SrtpUnprotect` for what a socket
receives from its party (the party's key, any SSRC inbound) and
:class:`SrtpProtect` for what a socket sends to its party (the key we gave
it, any SSRC outbound).  A session carries RTP and RTCP of its direction:
the rollover counters, the SRTCP index and the replay window live in it, so
a step is built once per key and kept while the key stays the same.

On the per-packet path a step is one C call.  For RTP of every suite
(AES_CM_128_HMAC_SHA1_80 and _32, AEAD_AES_128_GCM) that is omnirtp's own
SRTP code, ``omnirtp.media._fastsrtp`` (a C extension that keeps each
session's AES and HMAC, or AES-GCM, state from packet to packet; libsrtp
with OpenSSL 3 sets its contexts up again for every packet, see
docs/performance.md); everything else (SRTCP, and RTP where the extension
is not built) is pylibsrtp.  Both give the same bytes, counters and replay
decisions (RFC 3711's 128-packet window, libsrtp's rollover guess); the
unit tests check one against the other.  A packet that fails
(authentication, replay, an unusable packet) raises inside the library;
the step catches it, counts it by cause and returns None (the relay drops
the packet and counts it in its ``errors``).  Nothing is logged per packet.

Resuming after a restart or a takeover (docs/scaling.md): a step tells
what RFC 3711 needs to go on with the same key (:meth:`_SrtpStep.indexes`:
per SSRC, the highest extended RTP index, ROC << 16 | SEQ, that the RTP
session received or protected, and on the protecting side the last SRTCP
index it sent), and a new step with the same key starts from what a
former one told (:meth:`_SrtpStep.resume`).  The RTP indexes are those of
``_fastsrtp`` (read and set in C, nothing added per packet); the SRTCP
index is read from the trailer of each packet protected (RTCP is a few
packets a second, already on the Python path); a resumed SRTCP sender goes
on :data:`SRTCP_LEAP` indexes past the kept one, so that no index is sent
twice.  Where the extension is not built, RTP runs on libsrtp, which
keeps its rollover counters to itself: then only the SRTCP indexes are
kept.
"""

import base64
import binascii
import hashlib

from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from omnirtp.interfaces import IPacketTransform, ITransformFactory

try:
    import pylibsrtp
except ImportError as e:  # pragma: no cover - both supported version sets have it
    pylibsrtp = None
    _MISSING = "pylibsrtp is not installed (%s)" % (e,)
else:
    _MISSING = None

try:
    from omnirtp.media import _fastsrtp
except ImportError as e:
    _fastsrtp = None
    _FAST_MISSING = ("omnirtp.media._fastsrtp is not built (%s): SRTP uses pylibsrtp for "
                     "every suite (build it: python3 setup.py build_ext --inplace, with "
                     "gcc, python3-dev and libssl-dev)" % (e,))
else:
    _FAST_MISSING = None

log = Logger()
_fast_reported = False

#: suite names (RFC 4568 / rtpengine)
AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"
AEAD_AES_128_GCM = "AEAD_AES_128_GCM"

#: keys of a crypto dict
K_SUITE = "suite"
K_KEY = "key"

#: keys of the indexes a step keeps (:meth:`_SrtpStep.indexes`)
I_KEY = "key"
I_RTP = "rtp"
I_RTCP = "rtcp"

#: a resumed SRTCP sender goes on this many indexes past the kept one (the
#: registry writes the index at least every 64 packets, see
#: ``omnirtp.call.model.Media.keep_srtp_index``; the rest covers the
#: packets sent before the write reached the store)
SRTCP_LEAP = 256
#: the SSRCs whose SRTCP index a protecting step keeps (then no new ones)
SRTCP_STREAMS = 32

#: counter names (the keys of :meth:`counters`)
C_AUTH = "auth-failures"
C_REPLAY = "replays"
C_ERRORS = "errors"


class Suite:
    """One SRTP crypto suite: its name, pylibsrtp profile and key lengths."""

    __slots__ = ("name", "profile_name", "key_length", "salt_length")

    def __init__(self, name, profile_name, key_length, salt_length):
        self.name = name
        #: the name of the ``pylibsrtp.Policy`` profile constant
        self.profile_name = profile_name
        self.key_length = key_length
        self.salt_length = salt_length

    @property
    def master_length(self):
        """Bytes of master key || master salt (the decoded ``key``)."""
        return self.key_length + self.salt_length

    @property
    def profile(self):
        """The pylibsrtp profile number."""
        return getattr(pylibsrtp.Policy, self.profile_name)

    def __repr__(self):
        return "<Suite %s>" % (self.name,)


#: the suites we offer, in rtpengine's order of preference
SUITES = {
    s.name: s
    for s in (
        Suite(AEAD_AES_128_GCM, "SRTP_PROFILE_AEAD_AES_128_GCM", 16, 12),
        Suite(AES_CM_128_HMAC_SHA1_80, "SRTP_PROFILE_AES128_CM_SHA1_80", 16, 14),
        Suite(AES_CM_128_HMAC_SHA1_32, "SRTP_PROFILE_AES128_CM_SHA1_32", 16, 14),
    )
}


def unavailable():
    """None if SRTP works here, else a one-line reason."""
    return _MISSING


def fast_unavailable():
    """None if omnirtp's own SRTP code (``_fastsrtp``) serves RTP here,
    else why not (pylibsrtp serves it then)."""
    return _FAST_MISSING


def _report_fast_missing():
    """Log once per process that the C extension is missing."""
    global _fast_reported
    if _FAST_MISSING is not None and not _fast_reported:
        _fast_reported = True
        log.info("SRTP: {reason}", reason=_FAST_MISSING)


def suite_unavailable(name):
    """None if this libsrtp can build suite ``name``, else a one-line reason
    (GCM depends on how the system's libsrtp2 was built)."""
    if _MISSING is not None:
        return _MISSING
    suite = SUITES.get(name)
    if suite is None:
        return "unknown SRTP suite %r" % (name,)
    try:
        pylibsrtp.Session(
            pylibsrtp.Policy(
                b"\0" * suite.master_length,
                pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=suite.profile,
            )
        )
    except (pylibsrtp.Error, AttributeError) as e:
        return "libsrtp cannot do %s (%s)" % (name, e)
    return None


def make_crypto(suite, master):
    """The crypto dict for ``suite`` and the raw ``master`` key || salt."""
    return {K_SUITE: suite, K_KEY: base64.b64encode(master).decode("ascii")}


def parse_crypto(params):
    """``(Suite, master key || salt bytes)`` from a crypto dict, or
    ValueError with a clear text (never quoting the key)."""
    if not isinstance(params, dict):
        raise ValueError("SRTP parameters must be a dict with 'suite' and 'key', got %s"
                         % (type(params).__name__,))
    name = params.get(K_SUITE)
    suite = SUITES.get(name)
    if suite is None:
        raise ValueError("unknown SRTP suite %r (known: %s)" % (name, ", ".join(sorted(SUITES))))
    key = params.get(K_KEY)
    if not isinstance(key, str):
        raise ValueError("SRTP key must be a base64 string")
    try:
        master = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("SRTP key is not valid base64") from None
    if len(master) != suite.master_length:
        raise ValueError(
            "SRTP key for %s must be %d bytes (key and salt), got %d"
            % (suite.name, suite.master_length, len(master))
        )
    return suite, master


def key_tag(params):
    """A short digest of a crypto dict's key: what ties kept indexes to
    the key they were counted under (never the key itself)."""
    return hashlib.sha256(params[K_KEY].encode("ascii")).hexdigest()[:16]


def check_indexes(state):
    """ValueError unless ``state`` is None or the shape
    :meth:`_SrtpStep.indexes` gives."""
    if state is None:
        return
    if not isinstance(state, dict) or not isinstance(state.get(I_KEY), str):
        raise ValueError("SRTP indexes must be a dict with a 'key' digest")
    for name, bits in ((I_RTP, 48), (I_RTCP, 31)):
        kept = state.get(name, {})
        if not isinstance(kept, dict):
            raise ValueError("SRTP %s indexes must be a dict {ssrc: index}" % (name,))
        for ssrc, index in kept.items():
            if (type(ssrc) is not int or type(index) is not int or not 0 <= ssrc < 1 << 32
                    or not 0 <= index < 1 << bits):
                raise ValueError("SRTP %s index %r of SSRC %r is out of range"
                                 % (name, index, ssrc))


def _session(params, ssrc_type, allow_repeat_tx=False):
    suite, master = parse_crypto(params)
    policy = pylibsrtp.Policy(master, ssrc_type, srtp_profile=suite.profile)
    if allow_repeat_tx:
        policy.allow_repeat_tx = True
    return suite, pylibsrtp.Session(policy)


#: pylibsrtp's error texts (libsrtp's srtp_err_status_t) -> our counter
_CAUSES = {
    "authentication failure": C_AUTH,
    "replay check failed (bad index)": C_REPLAY,
    "replay check failed (index too old)": C_REPLAY,
}

#: tag lengths of the suites ``_fastsrtp`` serves (RTP; SRTCP stays on
#: pylibsrtp, whose SRTCP tag is 80 bits for both AES_CM suites)
FAST_TAGS = {AES_CM_128_HMAC_SHA1_80: 10, AES_CM_128_HMAC_SHA1_32: 4, AEAD_AES_128_GCM: 16}

#: ``_fastsrtp`` status -> our counter (anything else: ``errors``)
if _fastsrtp is not None:
    _FAST_CAUSES = {_fastsrtp.AUTH: C_AUTH, _fastsrtp.REPLAY: C_REPLAY, _fastsrtp.OLD: C_REPLAY}
else:
    _FAST_CAUSES = {}


def _fast_session(params, outbound):
    """A ``_fastsrtp.Session`` for ``params``, or None where the extension
    is missing or does not serve the suite."""
    suite, master = parse_crypto(params)
    tag = FAST_TAGS.get(suite.name)
    if tag is None:
        return None
    if _fastsrtp is None:
        _report_fast_missing()
        return None
    return _fastsrtp.Session(master[:suite.key_length], master[suite.key_length:], tag,
                             outbound)


#: the longest datagram the native path hands to libsrtp: pylibsrtp's
#: 1500-byte buffer less the largest SRTCP trailer (a longer one takes the
#: step's ``rtp`` / ``rtcp``, which refuses it as pylibsrtp does)
NATIVE_MAX = 1500 - 148

_native_buffer = None


def native_buffer():
    """The one buffer every native call of this process works in:
    ``(cdata, length, view)``, a cffi ``char[]`` (room for
    ``relay.RECV_SIZE`` bytes and a trailer), a cffi ``int *`` and a
    writable memoryview of the ``char[]``.  One buffer is enough: the
    relay handles one datagram at a time, from its read to its write.
    None where pylibsrtp's cffi binding is not what this module knows."""
    global _native_buffer
    if _native_buffer is None:
        try:
            from pylibsrtp._binding import ffi
            cdata = ffi.new("char[]", 8192 + 256)
            length = ffi.new("int *")
            _native_buffer = (cdata, length, memoryview(ffi.buffer(cdata)))
        except Exception:  # pragma: no cover - a pylibsrtp without a cffi binding
            _native_buffer = False
        else:
            if _fastsrtp is not None:
                # the same memory for omnirtp's own calls (a chain may mix
                # them with libsrtp's)
                _fastsrtp.bind(cdata, length, _native_buffer[2],
                               memoryview(ffi.buffer(length)))
    return _native_buffer or None


def _native(session, name):
    """``(libsrtp function, srtp_t)`` behind ``session.<name>``: what
    pylibsrtp's method calls, for a caller that keeps its own buffer (the
    relay's native path); None if this pylibsrtp is not built that way.
    The step keeps ``session`` alive, so the ``srtp_t`` stays valid."""
    try:
        from pylibsrtp._binding import lib
        return getattr(lib, "srtp_" + name), session._srtp[0]
    except Exception:  # pragma: no cover - both supported versions have them
        return None


class _SrtpStep:
    """Shared counting for both directions; a subclass sets ``_rtp`` and
    ``_rtcp`` to the libsrtp session's bound (un)protect methods, and
    ``native_rtp`` to the libsrtp call behind ``_rtp``.

    ``native_rtp`` is ``(function, srtp_t)`` or None: the relay calls
    ``function(srtp_t, native_buffer()[0], length)`` itself (in place, no
    bytes built, no Python frame), checks the status and counts a failure
    with :meth:`failed_status`.  pylibsrtp's own ``protect`` / ``unprotect``
    make the same call, wrapped in argument checks, an ``int *``
    allocation and two copies."""

    __slots__ = ("suite", "session", "fast", "auth_failures", "replays", "errors", "_rtp",
                 "_rtcp", "native_rtp", "buffer", "tag", "rtcp_sent")

    def __init__(self, suite, session, params):
        self.suite = suite.name
        self.session = session
        #: the digest of the key (:func:`key_tag`), for kept indexes
        self.tag = key_tag(params)
        #: {SSRC bytes: E flag and SRTCP index bytes of its last packet}
        #: (kept by SrtpProtect; the SRTCP received is not followed)
        self.rtcp_sent = {}
        #: the ``_fastsrtp.Session`` doing RTP, or None (pylibsrtp does)
        self.fast = None
        self.auth_failures = 0
        self.replays = 0
        self.errors = 0
        #: the shared native buffer (see :func:`native_buffer`), or None
        self.buffer = native_buffer()

    def _bind(self, params, word):
        """Point the step at its ``word`` ("protect" or "unprotect"): RTP
        through our own SRTP code (:attr:`fast`) when it takes the
        suite, else pylibsrtp's session, which always does RTCP."""
        session = self.session
        self._rtcp = getattr(session, word + "_rtcp")
        fast = self.fast = _fast_session(params, word == "protect")
        if fast is None:
            self._rtp = getattr(session, word)
            self.native_rtp = _native(session, word)
        else:
            self._rtp = getattr(fast, word)
            self.native_rtp = ((getattr(_fastsrtp, word + "_into"), fast)
                               if self.buffer else None)

    def failed_status(self, status):
        """Count a packet libsrtp refused with ``status`` (its
        ``srtp_err_status_t``, or a ``_fastsrtp`` status when
        :attr:`fast` is set) as :meth:`rtp` would have."""
        if self.fast is not None:
            cause = _FAST_CAUSES.get(status)
            if cause is C_AUTH:
                self.auth_failures += 1
            elif cause is C_REPLAY:
                self.replays += 1
            else:
                self.errors += 1
            return
        try:
            text = pylibsrtp.ERRORS[status]
        except (AttributeError, IndexError, TypeError):
            text = None
        self._failed(pylibsrtp.Error(text) if text else None)

    def _failed(self, error):
        """Count a failed packet by its cause (off the common path)."""
        cause = None
        if isinstance(error, pylibsrtp.Error) and error.args:
            cause = _CAUSES.get(error.args[0])
        elif _fastsrtp is not None and isinstance(error, _fastsrtp.Error) and error.args:
            cause = _FAST_CAUSES.get(error.args[0])
        if cause is C_AUTH:
            self.auth_failures += 1
        elif cause is C_REPLAY:
            self.replays += 1
        else:
            self.errors += 1

    def rtp(self, data):
        try:
            return self._rtp(data)
        except Exception as e:  # pylibsrtp.Error, ValueError (too long)
            self._failed(e)
            return None

    def rtcp(self, data):
        try:
            return self._rtcp(data)
        except Exception as e:
            self._failed(e)
            return None

    def counters(self):
        return {C_AUTH: self.auth_failures, C_REPLAY: self.replays, C_ERRORS: self.errors}

    def indexes(self):
        """What a new step with the same key needs to go on from here
        (plain data, off the packet path), or None when there is nothing:
        ``{"key": key_tag, "rtp": {ssrc: ROC << 16 | SEQ}, "rtcp": {ssrc:
        SRTCP index}}`` (each of ``rtp`` / ``rtcp`` only when not empty)."""
        fast = self.fast
        rtp = fast.indexes() if fast is not None else None
        rtcp = self._rtcp_indexes() if self.rtcp_sent else None
        if not rtp and not rtcp:
            return None
        out = {I_KEY: self.tag}
        if rtp:
            out[I_RTP] = rtp
        if rtcp:
            out[I_RTCP] = rtcp
        return out

    def _rtcp_indexes(self):
        return None

    def resume(self, state):
        """Go on from ``state`` (what :meth:`indexes` of a step with the
        same key gave; None: nothing kept): True if it was applied, False
        if it was counted under another key.  ValueError for a bad shape."""
        check_indexes(state)
        if state is None or state[I_KEY] != self.tag:
            return False
        fast = self.fast
        if fast is not None:
            for ssrc, index in state.get(I_RTP, {}).items():
                fast.resume(ssrc, index)
        self._resume_rtcp(state.get(I_RTCP, {}))
        return True

    def _resume_rtcp(self, kept):
        pass

    def __repr__(self):
        return "<%s %s>" % (self.name, self.suite)


@implementer(IPacketTransform)
class SrtpUnprotect(_SrtpStep):
    """SRTP/SRTCP -> RTP/RTCP with the key of the party a socket receives
    from.  Counts ``auth-failures`` (wrong key, tampered packet),
    ``replays`` (a repeated or too old index) and ``errors`` (anything else
    libsrtp refuses: too short, too long)."""

    name = "srtp-unprotect"

    def __init__(self, params):
        suite, session = _session(params, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        _SrtpStep.__init__(self, suite, session, params)
        self._bind(params, "unprotect")


@implementer(IPacketTransform)
class SrtpProtect(_SrtpStep):
    """RTP/RTCP -> SRTP/SRTCP with the key we gave the party a socket sends
    to.  A datagram repeated by the network is protected again as it was
    (``allow_repeat_tx``) rather than dropped: it carries the same index and
    the same plaintext, so no keystream is reused for other data.  Counts
    ``errors`` (a packet libsrtp refuses, e.g. too long).  Keeps the SRTCP
    index of each SSRC's last packet (its trailer, as sent)."""

    name = "srtp-protect"

    def __init__(self, params):
        suite, session = _session(params, pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                  allow_repeat_tx=True)
        _SrtpStep.__init__(self, suite, session, params)
        self._bind(params, "protect")
        # where the index is: before the 80-bit tag (AES-CM), last (AEAD)
        self._trailer = slice(-4, None) if suite.name == AEAD_AES_128_GCM else slice(-14, -10)

    def rtcp(self, data):
        try:
            out = self._rtcp(data)
        except Exception as e:
            self._failed(e)
            return None
        sent = self.rtcp_sent
        ssrc = data[4:8]
        if ssrc in sent or len(sent) < SRTCP_STREAMS:
            sent[ssrc] = out[self._trailer]
        return out

    def _rtcp_indexes(self):
        return {int.from_bytes(ssrc, "big"): int.from_bytes(index, "big") & 0x7fffffff
                for ssrc, index in self.rtcp_sent.items()}

    def _resume_rtcp(self, kept):
        # libsrtp numbers a stream's SRTCP itself, from 1: protect (and
        # drop) as many empty receiver reports as it takes to get past the
        # kept index
        for ssrc, index in kept.items():
            ssrc_bytes = ssrc.to_bytes(4, "big")
            start = self.rtcp_sent.get(ssrc_bytes)
            done = 0 if start is None else int.from_bytes(start, "big") & 0x7fffffff
            target = min(index + SRTCP_LEAP, 0x7fffffff)
            if done >= target:
                continue
            report = b"\x80\xc9\x00\x01" + ssrc_bytes
            protect = self._rtcp
            out = None
            for _ in range(target - done):
                out = protect(report)
            self.rtcp_sent[ssrc_bytes] = out[self._trailer]


@implementer(IPlugin, ITransformFactory)
class SrtpFactory:
    """The ``ITransformFactory`` of kind ``"srtp"``: ``inbound`` builds
    :class:`SrtpUnprotect`, ``outbound`` :class:`SrtpProtect`, both from a
    crypto dict.  The plugin instance is ``omnirtp.plugins.srtp.srtp``."""

    kind = "srtp"

    def available(self):
        return unavailable()

    def check(self, params):
        if _MISSING is not None:
            raise ValueError(_MISSING)
        parse_crypto(params)

    def inbound(self, params):
        return SrtpUnprotect(params)

    def outbound(self, params):
        return SrtpProtect(params)
