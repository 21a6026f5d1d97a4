"""G.711 (ITU-T G.711): PCMU (mu-law) and PCMA (A-law), pure Python, with
libspandsp's encoder where it is installed.

No ``audioop`` (removed in Python 3.13).  Both directions are table
lookups done by C code: decoding runs ``bytes.translate`` twice (a table
for the low and one for the high byte of each 16-bit sample) and
interleaves the halves with slice assignment; encoding maps each 16-bit
sample through a 65536-entry table (``operator.itemgetter(*samples)``
applied to the table: about twice as fast as ``map`` over
``table.__getitem__``).  The tables are computed once, at import, from the segment
and mantissa definitions of G.711 (section 3 and tables 1a/2a):

* mu-law works on a 14-bit magnitude with a bias of 33 (132 at 16-bit
  scale), 8 segments of 16 steps, every bit inverted on the line;
* A-law works on a 13-bit magnitude, segment 0 and 1 share one step size,
  the even bits are inverted on the line (XOR 0x55).

The 16-bit PCM value of a code is the centre of its decision interval
scaled by 4 (mu-law) or 8 (A-law), as the usual reference tables give it:
mu-law 0x00 -> -32124, 0x80 -> 32124, 0xFF -> 0; A-law 0x55 -> -8,
0xD5 -> 8, 0xAA -> 32256.

Encoding in Python still costs a tuple of 160 items per 20 ms packet (about
25 µs here), so the codec a stream gets (:meth:`G711Factory.build`) encodes
with libspandsp's ``g711_encode`` through ``ctypes`` when libspandsp
(Debian 12: libspandsp2, already used for G.722 and DTMF) loads: about
6 µs, and bit-identical to the tables here for every 16-bit sample (the
tests compare all 65536).  Without it the tables do the work.  Decoding
stays in Python (two ``bytes.translate``: as fast as the ctypes call).
"""

import ctypes
import sys
from array import array
from operator import itemgetter

from twisted.plugin import IPlugin
from zope.interface import implementer

from omnirtp.codecs._native import Library, Missing
from omnirtp.interfaces import ICodec, ICodecFactory

#: largest 16-bit magnitude mu-law represents before clipping (G.711: 8158
#: at 14-bit scale, times 4, plus the part the 14-bit scale drops)
_ULAW_CLIP = 32635
_ULAW_BIAS = 0x84


def ulaw_to_linear(code):
    """The 16-bit value of mu-law ``code`` (0-255)."""
    v = ~code & 0xFF
    seg = (v >> 4) & 7
    mag = ((((v & 0x0F) << 3) + _ULAW_BIAS) << seg) - _ULAW_BIAS
    return -mag if v & 0x80 else mag


def linear_to_ulaw(sample):
    """The mu-law code (0-255) of 16-bit ``sample`` (-32768..32767)."""
    if sample < 0:
        sign = 0x80
        mag = -sample
    else:
        sign = 0
        mag = sample
    if mag > _ULAW_CLIP:
        mag = _ULAW_CLIP
    mag += _ULAW_BIAS
    seg = mag.bit_length() - 8  # mag >= 132: 0..7
    return (sign | (seg << 4) | ((mag >> (seg + 3)) & 0x0F)) ^ 0xFF


def alaw_to_linear(code):
    """The 16-bit value of A-law ``code`` (0-255)."""
    v = code ^ 0x55
    seg = (v >> 4) & 7
    mag = (v & 0x0F) << 4
    if seg == 0:
        mag += 8
    else:
        mag = (mag + 0x108) << (seg - 1)
    return mag if v & 0x80 else -mag


def linear_to_alaw(sample):
    """The A-law code (0-255) of 16-bit ``sample`` (-32768..32767)."""
    if sample >= 0:
        sign = 0x80
        mag = sample >> 3
    else:
        sign = 0
        mag = (~sample) >> 3  # -sample - 1: A-law has no negative zero
    seg = mag.bit_length() - 5
    if seg < 1:
        seg = 0
        mant = (mag >> 1) & 0x0F
    else:
        mant = (mag >> seg) & 0x0F
    return (sign | (seg << 4) | mant) ^ 0x55


def _decode_tables(to_linear):
    lo = bytearray(256)
    hi = bytearray(256)
    for code in range(256):
        value = to_linear(code) & 0xFFFF
        lo[code] = value & 0xFF
        hi[code] = value >> 8
    return bytes(lo), bytes(hi)


def _runs(to_code, low, high):
    """``to_code(s)`` for every ``s`` from ``low`` to ``high`` as bytes.
    The code of a sample changes monotonically with its magnitude (a code
    once left never comes back), so the range is a few hundred runs of one
    code each: their ends are found by bisection, not by calling
    ``to_code`` 32768 times."""
    out = []
    s = low
    while s <= high:
        code = to_code(s)
        a, b = s, high
        while a < b:
            m = (a + b + 1) >> 1
            if to_code(m) == code:
                a = m
            else:
                b = m - 1
        out.append(bytes((code,)) * (a - s + 1))
        s = a + 1
    return b"".join(out)


def _encode_table(to_code):
    # indexed by the sample read as unsigned 16-bit: 0..32767, then -32768..-1
    return _runs(to_code, 0, 0x7FFF) + _runs(to_code, -0x8000, -1)


_BIG_ENDIAN = sys.byteorder == "big"


def _decoder(lo, hi):
    translate = bytes.translate

    def decode(payload):
        n = len(payload)
        out = bytearray(2 * n)
        out[0::2] = translate(payload, lo)
        out[1::2] = translate(payload, hi)
        return bytes(out)

    return decode


def _encoder(table):
    getitem = table.__getitem__

    def encode(pcm):
        n = len(pcm) & ~1
        if _BIG_ENDIAN:  # pragma: no cover - the tables are little-endian
            samples = array("H", pcm[:n])
            samples.byteswap()
        else:
            samples = memoryview(pcm)[:n].cast("B").cast("H")
        if n > 2:
            return bytes(itemgetter(*samples)(table))
        return bytes(map(getitem, samples))

    return encode


ULAW_DECODE = _decode_tables(ulaw_to_linear)
ALAW_DECODE = _decode_tables(alaw_to_linear)
ULAW_ENCODE = _encode_table(linear_to_ulaw)
ALAW_ENCODE = _encode_table(linear_to_alaw)

#: PCMU payload (bytes) -> PCM s16le
ulaw_decode = _decoder(*ULAW_DECODE)
#: PCMA payload (bytes) -> PCM s16le
alaw_decode = _decoder(*ALAW_DECODE)
#: PCM s16le -> PCMU payload (an odd trailing byte is ignored)
ulaw_encode = _encoder(ULAW_ENCODE)
#: PCM s16le -> PCMA payload
alaw_encode = _encoder(ALAW_ENCODE)

#: spandsp's g711 modes
G711_ALAW = 0
G711_ULAW = 1


def _prototypes(lib):
    """Set the prototypes of libspandsp's G.711 functions."""
    lib.g711_init.restype = ctypes.c_void_p
    lib.g711_init.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.g711_encode.restype = ctypes.c_int
    lib.g711_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]


#: libspandsp for G.711 encoding (``library()``), or :class:`Missing`
library = Library("spandsp", ["libspandsp.so.2"], ["g711_init", "g711_encode"], _prototypes)


class NativeEncoder:
    """``encode(pcm)`` with libspandsp: PCM s16le -> G.711 payload of
    ``law`` (:data:`G711_ULAW` or :data:`G711_ALAW`); an odd trailing
    byte is ignored.  Its state says only which law; one serves every
    stream of a process (the output buffer is reused: a process encodes
    one packet at a time)."""

    __slots__ = ("_state", "_encode", "_buf", "_size")

    def __init__(self, law):
        lib = library()
        self._state = lib.g711_init(None, law)
        if not self._state:
            raise Missing("g711_init failed")
        self._encode = lib.g711_encode
        self._size = 0
        self._buf = None
        self._grow(960)

    def _grow(self, size):
        self._size = size
        self._buf = ctypes.create_string_buffer(size)

    def __call__(self, pcm):
        n = len(pcm) >> 1
        if n > self._size:
            self._grow(n)
        buf = self._buf
        return buf[:self._encode(self._state, buf, bytes(pcm), n)]


@implementer(ICodec)
class G711Codec:
    """One stream's G.711 codec: stateless, so one object per stream is
    only for symmetry with the codecs that keep state."""

    __slots__ = ("decode", "encode")

    sample_rate = 8000

    def __init__(self, decode, encode):
        self.decode = decode
        self.encode = encode

    def conceal(self, samples, next_payload=None):
        """G.711 has no concealment of its own (G.711 Appendix I is an
        optional extra): a lost stretch is silence."""
        return bytes(2 * samples)


@implementer(IPlugin, ICodecFactory)
class G711Factory:
    """PCMU or PCMA: 8000 Hz, mono, one byte per sample, no fmtp."""

    clock_rate = 8000
    sample_rate = 8000
    sample_rates = (8000,)
    channels = 1
    ptime = 20
    default_fmtp = ""

    def __init__(self, encoding, payload_type, decode, encode, law):
        self.encoding = encoding
        self.payload_type = payload_type
        self._decode = decode
        self._encode = encode
        self._law = law
        self._codec = None

    def __repr__(self):
        return "<G711Factory %s>" % (self.encoding,)

    def available(self):
        return None

    def build(self, fmtp="", sample_rate=None):
        if sample_rate not in (None, 8000):
            raise ValueError("G.711 runs at 8000 Hz only")
        return self.codec()

    def codec(self):
        """The codec every stream shares: libspandsp's encoder if it
        loads (decided once), else the tables'."""
        if self._codec is None:
            try:
                encode = NativeEncoder(self._law)
            except Missing:
                encode = self._encode
            self._codec = G711Codec(self._decode, encode)
        return self._codec

    def samples(self, payload):
        return len(payload)


pcmu = G711Factory("pcmu", 0, ulaw_decode, ulaw_encode, G711_ULAW)
pcma = G711Factory("pcma", 8, alaw_decode, alaw_encode, G711_ALAW)
