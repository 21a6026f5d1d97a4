"""Resampling PCM between 8, 16 and 48 kHz (any rates, in fact) with
libsoxr, the SoX resampler library (Debian 12: libsoxr0; PyPI's ``soxr``
wraps the same library and needs NumPy; this module calls it through
``ctypes`` on bytes).

A :class:`Resampler` is one stream's state: s16le mono in, s16le mono out,
minimum-phase filter (SOXR_MINIMUM_PHASE) so the latency is short (about
100 output samples) and, once primed, every input block of ``n`` samples
gives exactly ``n * out_rate / in_rate`` samples out: no packet is held
back.  The linear-phase default of libsoxr delays by about 1000 samples
and hands out its output in bursts.  Measured and chosen in docs/codecs.md.
"""

import ctypes

from omnirtp.codecs._native import Library, Missing

#: soxr_datatype_t: interleaved signed 16-bit
SOXR_INT16_I = 3
#: quality recipes (soxr.h): medium, high (20-bit)
SOXR_MQ = 2
SOXR_HQ = 4
#: quality flag: minimum phase response
SOXR_MINIMUM_PHASE = 0x30


class _IoSpec(ctypes.Structure):
    _fields_ = [("itype", ctypes.c_int), ("otype", ctypes.c_int), ("scale", ctypes.c_double),
                ("e", ctypes.c_void_p), ("flags", ctypes.c_ulong)]


class _QualitySpec(ctypes.Structure):
    _fields_ = [("precision", ctypes.c_double), ("phase_response", ctypes.c_double),
                ("passband_end", ctypes.c_double), ("stopband_begin", ctypes.c_double),
                ("e", ctypes.c_void_p), ("flags", ctypes.c_ulong)]


def _prototypes(lib):
    """Set the prototypes of libsoxr's functions."""
    size_p = ctypes.POINTER(ctypes.c_size_t)
    lib.soxr_io_spec.restype = _IoSpec
    lib.soxr_io_spec.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.soxr_quality_spec.restype = _QualitySpec
    lib.soxr_quality_spec.argtypes = [ctypes.c_ulong, ctypes.c_ulong]
    lib.soxr_create.restype = ctypes.c_void_p
    lib.soxr_create.argtypes = [ctypes.c_double, ctypes.c_double, ctypes.c_uint,
                                ctypes.POINTER(ctypes.c_char_p),
                                ctypes.POINTER(_IoSpec), ctypes.POINTER(_QualitySpec),
                                ctypes.c_void_p]
    lib.soxr_process.restype = ctypes.c_char_p
    lib.soxr_process.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                 size_p, ctypes.c_char_p, ctypes.c_size_t, size_p]
    lib.soxr_delete.restype = None
    lib.soxr_delete.argtypes = [ctypes.c_void_p]
    lib.soxr_version.restype = ctypes.c_char_p
    lib.soxr_version.argtypes = []


#: the loaded libsoxr (``library()``), or :class:`Missing` with the reason
library = Library("soxr", ["libsoxr.so.0"],
                  ["soxr_create", "soxr_process", "soxr_delete", "soxr_io_spec",
                   "soxr_quality_spec", "soxr_version"], _prototypes)


def available():
    """None if resampling works here, else why not."""
    try:
        library()
    except Missing as e:
        return str(e)
    return None


def version():
    """libsoxr's version string, e.g. ``'libsoxr-0.1.3'``."""
    return library().soxr_version().decode("ascii", "replace")


class Resampler:
    """One stream's resampler from ``in_rate`` to ``out_rate`` (Hz), s16le
    mono.  ``block`` is the input samples per call the caller expects
    (a packet's worth, 20 ms by default): the resampler is primed with
    silence on creation so that from the first call on each block of that
    size gives the whole matching output block (the filter's latency,
    about 100 output samples, is silence at the start).  ``quality`` is a
    soxr recipe (:data:`SOXR_MQ`, :data:`SOXR_HQ`, ...)."""

    __slots__ = ("in_rate", "out_rate", "_lib", "_soxr", "_process", "_out", "_olen",
                 "_idone", "_odone", "_idone_p", "_odone_p", "__weakref__")

    def __init__(self, in_rate, out_rate, block=None, quality=SOXR_HQ):
        lib = library()
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        if block is None:
            block = self.in_rate // 50
        io = lib.soxr_io_spec(SOXR_INT16_I, SOXR_INT16_I)
        q = lib.soxr_quality_spec(quality, SOXR_MINIMUM_PHASE)
        error = ctypes.c_char_p()
        soxr = lib.soxr_create(float(in_rate), float(out_rate), 1, ctypes.byref(error),
                               ctypes.byref(io), ctypes.byref(q), None)
        if not soxr:
            raise ValueError("soxr_create %d -> %d: %s" % (
                in_rate, out_rate, (error.value or b"failed").decode("ascii", "replace")))
        self._lib = lib
        self._soxr = soxr
        self._process = lib.soxr_process
        self._idone = ctypes.c_size_t()
        self._odone = ctypes.c_size_t()
        self._idone_p = ctypes.byref(self._idone)
        self._odone_p = ctypes.byref(self._odone)
        self._olen = 0
        self._out = None
        self._grow(4 * block * self.out_rate // self.in_rate + 64)
        # prime: silence until the filter hands out whole blocks
        zeros = bytes(2 * block)
        expected = block * self.out_rate // self.in_rate
        for _ in range(8):
            if len(self.process(zeros)) >= expected:
                break

    def _grow(self, samples):
        self._olen = samples
        self._out = ctypes.create_string_buffer(2 * samples)

    def process(self, pcm):
        """Resample a block of s16le samples; returns what the filter has
        ready (s16le bytes)."""
        n = len(pcm) >> 1
        need = n * self.out_rate // self.in_rate + 64
        if need > self._olen:
            self._grow(need)
        error = self._process(self._soxr, pcm, n, self._idone_p, self._out, self._olen,
                              self._odone_p)
        if error is not None:
            return b""
        return self._out.raw[:2 * self._odone.value]

    def close(self):
        soxr = self._soxr
        if soxr:
            self._soxr = None
            self._lib.soxr_delete(soxr)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
