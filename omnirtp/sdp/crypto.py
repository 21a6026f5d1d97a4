"""SDES (RFC 4568): the ``a=crypto`` attribute, parsed, written and chosen.

``parse(value)`` takes the text after ``a=crypto:`` and returns a
:class:`Crypto`; ``str(crypto)`` writes it back the way rtpengine 10.5 does
(key and salt in unpadded base64, as 10.5 writes them; padded input is
accepted).  Errors are :class:`CryptoError` whose text is the reason
rtpengine gives in its log line ``Failed to parse a=crypto attribute,
ignoring: <reason>`` where rtpengine has one (``unknown crypto suite``,
``invalid key parameter length``).

Grammar (RFC 4568 section 9.1, the SRTP key method of section 6.1)::

    <tag> <suite> <key-params> [<session-param> ...]
    key-params  = key-param *(";" key-param)
    key-param   = "inline:" <base64 of key||salt> ["|" lifetime] ["|" MKI ":" length]
    lifetime    = decimal | "2^" decimal

:data:`SUITES` lists every suite rtpengine 10.5 knows, in the order it
offers them (learned from 10.5 itself: an RTP/AVP -> RTP/SAVP offer carries
all twelve, tags 1..12 in this order).  :data:`SUPPORTED` are the suites the
media engine can protect and unprotect (the crypto dicts of
docs/WEBRTC-CONTRACT: ``{"suite", "key"}``); only those are offered and
chosen.  MKI is refused: pylibsrtp has no MKI support, so a line carrying one
cannot be used (:meth:`Crypto.unusable` says why).
"""

import base64
import binascii
import os
import re
from dataclasses import dataclass, field


class CryptoError(ValueError):
    """An ``a=crypto`` value that does not parse."""


@dataclass(frozen=True)
class Suite:
    name: str
    key_length: int    # master key, bytes
    salt_length: int   # master salt, bytes

    @property
    def length(self):
        return self.key_length + self.salt_length


#: rtpengine 10.5's suites, in its offer order
SUITES = {s.name: s for s in (
    Suite("AEAD_AES_256_GCM", 32, 12),
    Suite("AEAD_AES_128_GCM", 16, 12),
    Suite("AES_256_CM_HMAC_SHA1_80", 32, 14),
    Suite("AES_256_CM_HMAC_SHA1_32", 32, 14),
    Suite("AES_192_CM_HMAC_SHA1_80", 24, 14),
    Suite("AES_192_CM_HMAC_SHA1_32", 24, 14),
    Suite("AES_CM_128_HMAC_SHA1_80", 16, 14),
    Suite("AES_CM_128_HMAC_SHA1_32", 16, 14),
    Suite("F8_128_HMAC_SHA1_80", 16, 14),
    Suite("F8_128_HMAC_SHA1_32", 16, 14),
    Suite("NULL_HMAC_SHA1_80", 16, 14),
    Suite("NULL_HMAC_SHA1_32", 16, 14),
)}

#: what the media engine implements (WEBRTC-CONTRACT crypto dicts), offer order
SUPPORTED = ("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")

#: session parameters that change the SRTP transform itself: the engine
#: always encrypts and authenticates both RTP and RTCP with KDR 0
UNSUPPORTED_PARAMS = ("UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP",
                      "FEC_KEY")

_TAG = re.compile(r"[0-9]{1,9}\Z")
_DECIMAL = re.compile(r"[0-9]+\Z")
_LIFETIME = re.compile(r"(?:2\^)?[0-9]+\Z")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}\Z")


@dataclass(frozen=True)
class KeyParams:
    """One ``inline:`` key parameter: ``key`` is master key || master salt."""

    key: bytes
    lifetime: str = None     # as written: "2^20" or "1048576"
    mki: tuple = None        # (value, length) as ints

    def format(self, lifetime=True, pad=False):
        text = base64.b64encode(self.key).decode("ascii")
        if not pad:
            text = text.rstrip("=")
        text = "inline:" + text
        if lifetime and self.lifetime is not None:
            text += "|" + self.lifetime
        if self.mki is not None:
            text += "|%d:%d" % self.mki
        return text


@dataclass(frozen=True)
class Crypto:
    """One ``a=crypto`` line."""

    tag: int
    suite: str
    keys: tuple
    params: tuple = field(default=())

    @property
    def key(self):
        """The (first) master key || salt."""
        return self.keys[0].key

    def format(self, lifetime=True, pad=False):
        """The value after ``a=crypto:``; ``lifetime=False`` leaves lifetimes out."""
        parts = ["%d" % self.tag, self.suite,
                 ";".join(k.format(lifetime, pad) for k in self.keys)]
        parts.extend(self.params)
        return " ".join(parts)

    __str__ = format

    def unusable(self):
        """Why the media engine cannot use this line, or None."""
        if any(k.mki is not None for k in self.keys):
            return "MKI is not supported"
        if len(self.keys) > 1:
            return "several key parameters are not supported"
        if self.suite not in SUPPORTED:
            return "crypto suite %s is not supported" % (self.suite,)
        for param in self.params:
            name, _, value = param.partition("=")
            if name in UNSUPPORTED_PARAMS:
                return "session parameter %s is not supported" % (name,)
            if name == "KDR" and value != "0":
                return "session parameter KDR=%s is not supported" % (value,)
        return None

    def to_dict(self):
        """The contract's crypto dict ``{"suite", "key"}`` (base64, padded)."""
        reason = self.unusable()
        if reason:
            raise CryptoError(reason)
        return {"suite": self.suite, "key": base64.b64encode(self.key).decode("ascii")}


def _key_param(text, suite):
    method, colon, info = text.partition(":")
    if not colon or method.lower() != "inline":
        raise CryptoError("invalid key parameter method (only inline: is known)")
    fields = info.split("|")
    if len(fields) > 3:
        raise CryptoError("invalid key parameter: too many '|' fields")
    encoded = fields[0]
    if len(encoded.rstrip("=")) * 3 // 4 != suite.length:
        raise CryptoError("invalid key parameter length")
    if not _BASE64.match(encoded):
        raise CryptoError("invalid key parameter: key is not base64")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("invalid key parameter: key is not base64") from None
    if len(key) != suite.length:
        raise CryptoError("invalid key parameter length")
    lifetime = mki = None
    for extra in fields[1:]:
        if ":" in extra:
            if mki is not None:
                raise CryptoError("invalid key parameter: two MKI fields")
            value, _, length = extra.partition(":")
            if not _DECIMAL.match(value) or not _DECIMAL.match(length) \
                    or not 1 <= int(length) <= 128:
                raise CryptoError("invalid key parameter: bad MKI %r" % (extra,))
            mki = (int(value), int(length))
        else:
            if lifetime is not None or mki is not None:
                raise CryptoError("invalid key parameter: bad lifetime %r" % (extra,))
            if not _LIFETIME.match(extra):
                raise CryptoError("invalid key parameter: bad lifetime %r" % (extra,))
            lifetime = extra
    return KeyParams(key, lifetime, mki)


def parse(value):
    """Parse the value of an ``a=crypto:`` line into a :class:`Crypto`."""
    if value is None:
        raise CryptoError("empty a=crypto attribute")
    fields = value.split()
    if len(fields) < 3:
        raise CryptoError("a=crypto needs a tag, a crypto suite and key parameters")
    tag, suite_name, keys = fields[:3]
    if not _TAG.match(tag):
        raise CryptoError("invalid crypto tag %r" % (tag,))
    suite = SUITES.get(suite_name.upper())
    if suite is None:
        raise CryptoError("unknown crypto suite")
    key_params = tuple(_key_param(k, suite) for k in keys.split(";"))
    return Crypto(int(tag), suite.name, key_params, tuple(fields[3:]))


def generate(tag, suite, random=os.urandom):
    """A new line for ``suite`` with a fresh random key, no lifetime, no MKI."""
    s = SUITES[suite]
    return _line(tag, s.name, random(s.length))


def generate_many(tag, suites, random=os.urandom):
    """``[generate(tag + 1, suites[0]), generate(tag + 2, suites[1]), ...]``
    with the keys from one ``random`` call: the bytes those calls would
    take one after the other, drawn at once (an offer's new lines: one
    ``getrandom`` instead of one per suite).  No call for no suite."""
    found = [SUITES[name] for name in suites]
    if not found:
        return []
    block = random(sum([s.length for s in found]))
    out = []
    at = 0
    for s in found:
        tag += 1
        end = at + s.length
        out.append(_line(tag, s.name, block[at:end]))
        at = end
    return out


def _line(tag, name, key_bytes):
    # (Crypto(tag, name, (KeyParams(key),)) but for the frozen dataclasses'
    # __init__, which sets each field through object.__setattr__: the same
    # values, equality, hash and repr)
    key = _new(KeyParams)
    key.__dict__.update(key=key_bytes, lifetime=None, mki=None)
    crypto = _new(Crypto)
    crypto.__dict__.update(tag=tag, suite=name, keys=(key,), params=())
    return crypto


_new = object.__new__


def offer_suites(sdes=()):
    """The supported suites in offer order, after the ``SDES`` options
    ``no-<suite>`` and ``only-<suite>``; empty with ``off``."""
    options = _options(sdes)
    if options["off"]:
        return []
    suites = [s for s in SUPPORTED if s not in options["no"]]
    if options["only"]:
        suites = [s for s in suites if s in options["only"]]
    return suites


def allowed(suite, sdes=()):
    """True if ``suite`` may be chosen from a peer's lines under ``sdes``
    (``no-``/``only-``; ``off`` does not apply to what a peer offers)."""
    options = _options(sdes)
    suite = suite.upper()
    if suite in options["no"]:
        return False
    return not options["only"] or suite in options["only"]


#: rtpengine 10.5's SDES options that change the SRTP transform: the engine
#: cannot do them, so they are accepted and ignored (with a log line)
TRANSFORM_OPTIONS = frozenset(("unencrypted_srtp", "unencrypted_srtcp", "unauthenticated_srtp",
                               "encrypted_srtp", "encrypted_srtcp", "authenticated_srtp"))
#: options that are about rtpengine's own key handling, without effect here
QUIET_OPTIONS = frozenset(("nonew", "static", "prefer"))


#: what _options answers for no SDES option at all (the usual request):
#: shared, so never changed by its readers
_NO_OPTIONS = {"off": False, "no": frozenset(), "only": frozenset(), "pad": False,
               "lifetime": False, "unsupported": (), "unknown": ()}


def _options(sdes):
    if not sdes:
        return _NO_OPTIONS
    out = {"off": False, "no": set(), "only": set(), "pad": False, "lifetime": False,
           "unsupported": [], "unknown": []}
    for item in sdes:
        word = item.strip()
        low = word.lower()
        if low in ("off", "no", "disable", "disabled"):
            out["off"] = True
        elif low.startswith("no-"):
            out["no"].add(word[3:].upper())
        elif low.startswith("only-"):
            out["only"].add(word[5:].upper())
        elif low in ("pad", "lifetime"):
            out[low] = True
        elif low in TRANSFORM_OPTIONS:
            out["unsupported"].append(word)
        elif low in QUIET_OPTIONS or low.startswith(("order:", "offerer_pref:")):
            pass
        else:
            out["unknown"].append(word)
    return out


def ignored_options(sdes):
    """``(unsupported, unknown)`` SDES options of a request, for its log lines."""
    options = _options(sdes)
    return list(options["unsupported"]), list(options["unknown"])


def render(crypto, sdes=()):
    """The value of our ``a=crypto`` line for ``crypto`` under the request's
    SDES options: ``pad`` keeps base64 padding, ``lifetime`` adds ``|2^31``
    where no lifetime is given (as rtpengine 10.5 does)."""
    options = _options(sdes)
    if options["lifetime"]:
        crypto = Crypto(crypto.tag, crypto.suite,
                        tuple(KeyParams(k.key, k.lifetime or "2^31", k.mki) for k in crypto.keys),
                        crypto.params)
    return crypto.format(pad=options["pad"])


def choose(lines, sdes=(), log=None):
    """The first usable line of a peer's offer, or None.

    ``lines`` are :class:`Crypto` objects in offer order.  ``log(crypto,
    reason)`` is called for each line passed over because the engine cannot
    use it.
    """
    for crypto in lines:
        if not allowed(crypto.suite, sdes):
            continue
        reason = crypto.unusable()
        if reason:
            if log is not None:
                log(crypto, reason)
            continue
        return crypto
    return None


__all__ = ["CryptoError", "Crypto", "KeyParams", "Suite", "SUITES", "SUPPORTED",
           "parse", "generate", "offer_suites", "allowed", "choose", "render",
           "ignored_options"]
