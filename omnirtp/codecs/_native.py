"""Loading the C libraries the codecs use (libopus, libspandsp, libsoxr)
through ``ctypes``: the shared libraries of Debian 12's libopus0,
libspandsp2 and libsoxr0 (or any other system's), so the same code runs on
Debian's Python and a virtualenv, with no binding package in between.

Nothing here runs per packet; a library that is missing or too old gives
a one-line reason (see ``ICodecFactory.available``)."""

import ctypes
import ctypes.util


class Missing(Exception):
    """A C library or one of its symbols is not there."""


def load(name, sonames, symbols):
    """``ctypes.CDLL`` of the first of ``sonames`` (then what
    ``ctypes.util.find_library(name)`` finds) that loads and has every
    one of ``symbols``; raise :class:`Missing` with the reason."""
    candidates = list(sonames)
    found = ctypes.util.find_library(name)
    if found and found not in candidates:
        candidates.append(found)
    reasons = []
    for soname in candidates:
        try:
            lib = ctypes.CDLL(soname)
        except OSError as e:
            reasons.append(str(e))
            continue
        lacking = [s for s in symbols if not hasattr(lib, s)]
        if lacking:
            reasons.append("%s lacks %s" % (soname, ", ".join(lacking)))
            continue
        return lib
    raise Missing("lib%s not found (%s)" % (name, "; ".join(reasons) or "no candidates"))


class Library:
    """A C library loaded on first call: ``library()`` returns the
    ``ctypes.CDLL`` (``load(name, sonames, symbols)``, then ``setup(lib)``
    sets its prototypes), or raises :class:`Missing` with the same reason
    on every call once loading failed.  ``lib`` is None until loaded."""

    def __init__(self, name, sonames, symbols, setup):
        self.name = name
        self.sonames = sonames
        self.symbols = symbols
        self.setup = setup
        self.lib = None
        self.reason = None

    def __call__(self):
        if self.lib is None and self.reason is None:
            try:
                lib = load(self.name, self.sonames, self.symbols)
            except Missing as e:
                self.reason = str(e)
            else:
                self.setup(lib)
                self.lib = lib
        if self.lib is None:
            raise Missing(self.reason)
        return self.lib


def parse_fmtp(fmtp):
    """``"a=1; b=x"`` -> ``{"a": "1", "b": "x"}`` (names lower-case,
    parameters without ``=`` and empty ones ignored)."""
    params = {}
    if not fmtp:
        return params
    for part in str(fmtp).split(";"):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if sep and name:
            params[name] = value.strip()
    return params


def fmtp_int(params, name, default=None):
    """An integer fmtp parameter, ``default`` if absent or not a number."""
    try:
        return int(params[name])
    except (KeyError, ValueError):
        return default
