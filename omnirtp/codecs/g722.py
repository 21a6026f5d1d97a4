"""G.722 (ITU-T G.722, 64 kbit/s mode; RTP: RFC 3551 4.5.2) through one of
two backends, both built on the same public-domain ADPCM/QMF code and
bit-identical (docs/codecs.md has the measurements):

1. libspandsp (Debian 12: libspandsp2, which rtpengine itself depends on),
   called with ``ctypes``;
2. the PyPI ``g722`` package (module ``G722``, a C extension: sippy's
   libg722), for systems without libspandsp (``pip install omnirtp[g722]``).

The SDP clock rate is 8000 (a historical error kept by RFC 3551), the
audio 16 kHz: one byte per 16 kHz sample pair, so a 20 ms packet is 160
bytes and advances the timestamp by 160.  Both backends also run the codec
at 8 kHz (the low sub-band only: no QMF), which the transcoder uses to meet
G.711 without a resampler.
"""

import ctypes
from array import array

from twisted.plugin import IPlugin
from zope.interface import implementer

from omnirtp.codecs._native import Missing, load
from omnirtp.interfaces import ICodec, ICodecFactory

#: spandsp's g722 option: 8 kHz PCM (the low band only)
G722_SAMPLE_RATE_8000 = 1
BITRATE = 64000
RATES = (16000, 8000)


class _Spandsp:
    name = "libspandsp"

    def __init__(self):
        lib = load("spandsp", ["libspandsp.so.2"],
                   ["g722_encode_init", "g722_encode", "g722_encode_free",
                    "g722_decode_init", "g722_decode", "g722_decode_free"])
        c_void_p, c_int, c_char_p = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        for f in (lib.g722_encode_init, lib.g722_decode_init):
            f.restype = c_void_p
            f.argtypes = [c_void_p, c_int, c_int]
        for f in (lib.g722_encode, lib.g722_decode):
            f.restype = c_int
            f.argtypes = [c_void_p, c_char_p, c_char_p, c_int]
        for f in (lib.g722_encode_free, lib.g722_decode_free):
            f.restype = c_int
            f.argtypes = [c_void_p]
        self.lib = lib

    def codec(self, rate):
        return SpandspG722(self.lib, rate)


class _PyPI:
    name = "g722 (PyPI)"

    def __init__(self):
        try:
            import G722
        except ImportError as e:
            raise Missing("the g722 package is not installed (%s)" % (e,))
        self.cls = G722.G722

    def codec(self, rate):
        return PyPIG722(self.cls, rate)


@implementer(ICodec)
class SpandspG722:
    def __init__(self, lib, rate):
        self._lib = lib
        self.sample_rate = rate
        options = G722_SAMPLE_RATE_8000 if rate == 8000 else 0
        self._enc = lib.g722_encode_init(None, BITRATE, options)
        self._dec = lib.g722_decode_init(None, BITRATE, options)
        if not self._enc or not self._dec:
            self.close()
            raise ValueError("g722 init failed")
        self._encode = lib.g722_encode
        self._decode = lib.g722_decode
        self._pcm = ctypes.create_string_buffer(0)
        self._code = ctypes.create_string_buffer(0)
        # samples per payload byte
        self._ratio = 2 if rate == 16000 else 1

    def decode(self, payload):
        need = 2 * self._ratio * len(payload)
        if len(self._pcm) < need:
            self._pcm = ctypes.create_string_buffer(need)
        n = self._decode(self._dec, self._pcm, payload, len(payload))
        return self._pcm.raw[:2 * n]

    def encode(self, pcm):
        n = len(pcm) >> 1
        need = n // self._ratio + 1
        if len(self._code) < need:
            self._code = ctypes.create_string_buffer(need)
        m = self._encode(self._enc, self._code, pcm, n)
        return self._code.raw[:m]

    def conceal(self, samples, next_payload=None):
        return bytes(2 * samples)

    def close(self):
        if self._enc:
            self._lib.g722_encode_free(self._enc)
            self._enc = None
        if self._dec:
            self._lib.g722_decode_free(self._dec)
            self._dec = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


@implementer(ICodec)
class PyPIG722:
    def __init__(self, cls, rate):
        self.sample_rate = rate
        self._enc = cls(rate, BITRATE)
        self._dec = cls(rate, BITRATE)

    def decode(self, payload):
        return self._dec.decode(payload).tobytes()

    def encode(self, pcm):
        return self._enc.encode(array("h", pcm[:len(pcm) & ~1]))

    def conceal(self, samples, next_payload=None):
        return bytes(2 * samples)


@implementer(IPlugin, ICodecFactory)
class G722Factory:
    """g722/8000 (audio 16 kHz), static payload type 9."""

    encoding = "g722"
    clock_rate = 8000
    channels = 1
    sample_rate = 16000
    sample_rates = RATES
    payload_type = 9
    ptime = 20
    default_fmtp = ""
    #: the backends in order of preference
    backends = (_Spandsp, _PyPI)

    def __init__(self):
        self._backend = None
        self._reason = None

    def __repr__(self):
        return "<G722Factory %s>" % (self._backend.name if self._backend else "-")

    def backend(self):
        """The first backend that loads, or raise :class:`Missing`."""
        if self._backend is None:
            reasons = []
            for backend in self.backends:
                try:
                    self._backend = backend()
                    break
                except Missing as e:
                    reasons.append(str(e))
            else:
                raise Missing("; ".join(reasons))
        return self._backend

    def available(self):
        try:
            self.backend()
        except Missing as e:
            return str(e)
        return None

    def build(self, fmtp="", sample_rate=None):
        if sample_rate is None:
            sample_rate = self.sample_rate
        if sample_rate not in RATES:
            raise ValueError("G.722 cannot run at %r Hz" % (sample_rate,))
        return self.backend().codec(sample_rate)

    def samples(self, payload):
        return len(payload)


g722 = G722Factory()
