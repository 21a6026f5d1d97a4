"""Opus (RFC 6716, RTP: RFC 7587) through libopus (Debian 12: libopus0),
called with ``ctypes``.

Why not opuslib: it is itself a thin ``ctypes`` layer over the same
libopus (so it needs the same system library), Debian 12 has no
python3-opuslib, and its last release is from 2018; the few calls the
transcoder needs are bound here directly, with buffers allocated once per
stream.  See docs/codecs.md.

The RTP clock of Opus is always 48000 and its rtpmap always says 2
channels (RFC 7587); the codec itself runs at any of 8, 12, 16, 24 or
48 kHz (libopus resamples internally), so the transcoder builds it at the
rate of the codec on the other side and needs no resampler of its own.
Decoding is to mono (libopus downmixes a stereo stream); encoding is mono
(a mono Opus stream is valid for a receiver that asked for ``stereo=1``).
fmtp parameters of the receiver the encoder follows: ``maxplaybackrate``
(the encoder's maximum bandwidth), ``maxaveragebitrate`` (its bitrate),
``useinbandfec`` (in-band FEC, with an expected loss of
:attr:`OpusFactory.loss_percent`), ``cbr``, ``usedtx``; ``stereo`` and
``sprop-stereo`` change nothing for a mono source; ``ptime`` is the
transcoder's business (frame size).  Without in-band FEC and at 20 kbit/s
or more the encoder runs libopus's "audio" application (CELT) at
complexity 0, else "voip" (SILK, which alone carries FEC) at complexity
5: :meth:`OpusFactory.application`, measured in docs/codecs.md.
"""

import ctypes

from twisted.plugin import IPlugin
from zope.interface import implementer

from omnirtp.codecs._native import Library, Missing, fmtp_int, parse_fmtp
from omnirtp.interfaces import ICodec, ICodecFactory

OPUS_OK = 0
OPUS_APPLICATION_VOIP = 2048
OPUS_APPLICATION_AUDIO = 2049
OPUS_SET_BITRATE = 4002
OPUS_SET_MAX_BANDWIDTH = 4004
OPUS_SET_VBR = 4006
OPUS_SET_COMPLEXITY = 4010
OPUS_SET_INBAND_FEC = 4012
OPUS_SET_PACKET_LOSS_PERC = 4014
OPUS_SET_DTX = 4016
OPUS_BANDWIDTH_NARROWBAND = 1101
OPUS_BANDWIDTH_MEDIUMBAND = 1102
OPUS_BANDWIDTH_WIDEBAND = 1103
OPUS_BANDWIDTH_SUPERWIDEBAND = 1104
OPUS_BANDWIDTH_FULLBAND = 1105

#: the sample rates libopus encodes from and decodes to
RATES = (48000, 24000, 16000, 12000, 8000)
#: largest Opus packet (RFC 6716 3.4: 1275 bytes per frame; 120 ms at most)
MAX_PACKET = 1500
#: most samples one packet decodes to, per 48 kHz (120 ms)
MAX_SAMPLES_48K = 5760

def _prototypes(lib):
    """Set the prototypes of libopus's functions."""
    c_int, c_void_p, c_char_p = ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
    int_p = ctypes.POINTER(c_int)
    lib.opus_encoder_create.restype = c_void_p
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, c_int, c_int, int_p]
    lib.opus_decoder_create.restype = c_void_p
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, c_int, int_p]
    lib.opus_encode.restype = ctypes.c_int32
    lib.opus_encode.argtypes = [c_void_p, c_char_p, c_int, c_char_p, ctypes.c_int32]
    lib.opus_decode.restype = c_int
    lib.opus_decode.argtypes = [c_void_p, c_char_p, ctypes.c_int32, c_char_p, c_int,
                                c_int]
    lib.opus_encoder_destroy.restype = None
    lib.opus_encoder_destroy.argtypes = [c_void_p]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decoder_destroy.argtypes = [c_void_p]
    lib.opus_packet_get_nb_samples.restype = c_int
    lib.opus_packet_get_nb_samples.argtypes = [c_char_p, ctypes.c_int32, ctypes.c_int32]
    lib.opus_get_version_string.restype = c_char_p
    lib.opus_get_version_string.argtypes = []
    lib.opus_repacketizer_create.restype = c_void_p
    lib.opus_repacketizer_create.argtypes = []
    lib.opus_repacketizer_init.restype = c_void_p
    lib.opus_repacketizer_init.argtypes = [c_void_p]
    lib.opus_repacketizer_cat.restype = c_int
    lib.opus_repacketizer_cat.argtypes = [c_void_p, c_char_p, ctypes.c_int32]
    lib.opus_repacketizer_out.restype = ctypes.c_int32
    lib.opus_repacketizer_out.argtypes = [c_void_p, c_char_p, ctypes.c_int32]
    lib.opus_repacketizer_destroy.restype = None
    lib.opus_repacketizer_destroy.argtypes = [c_void_p]
    # opus_encoder_ctl is variadic: (st, request, opus_int32 value)
    lib.opus_encoder_ctl.restype = c_int
    lib.opus_encoder_ctl.argtypes = [c_void_p, c_int, ctypes.c_int32]


#: the loaded libopus (``library()``), or :class:`Missing` with the reason
library = Library("opus", ["libopus.so.0"],
                  ["opus_encoder_create", "opus_encode", "opus_encoder_ctl",
                   "opus_encoder_destroy", "opus_decoder_create", "opus_decode",
                   "opus_decoder_destroy", "opus_packet_get_nb_samples",
                   "opus_get_version_string", "opus_repacketizer_create",
                   "opus_repacketizer_init", "opus_repacketizer_cat",
                   "opus_repacketizer_out", "opus_repacketizer_destroy"], _prototypes)


def version():
    """libopus's version string, e.g. ``'libopus 1.3.1'``."""
    return library().opus_get_version_string().decode("ascii", "replace")


def packet_samples(payload, rate=48000):
    """Samples (per channel, at ``rate``) an Opus packet holds, from its
    TOC byte and frame count (RFC 6716 3.1); 0 for an invalid packet."""
    n = library.lib.opus_packet_get_nb_samples(payload, len(payload), rate)
    return n if n > 0 else 0


def max_bandwidth(rate):
    """The widest Opus bandwidth a receiver playing at ``rate`` Hz uses
    (RFC 7587 6.1 ``maxplaybackrate``)."""
    if rate <= 8000:
        return OPUS_BANDWIDTH_NARROWBAND
    if rate <= 12000:
        return OPUS_BANDWIDTH_MEDIUMBAND
    if rate <= 16000:
        return OPUS_BANDWIDTH_WIDEBAND
    if rate <= 24000:
        return OPUS_BANDWIDTH_SUPERWIDEBAND
    return OPUS_BANDWIDTH_FULLBAND


@implementer(ICodec)
class OpusCodec:
    """One stream's Opus decoder and encoder (each made when first used),
    mono PCM at ``sample_rate``.  ``settings`` are the encoder's
    ``(ctl, value)`` pairs."""

    def __init__(self, lib, sample_rate, settings, application=OPUS_APPLICATION_VOIP):
        self._lib = lib
        self.sample_rate = sample_rate
        self.settings = tuple(settings)
        self.application = application
        self._dec = None
        self._enc = None
        self._rp = None
        self._max = MAX_SAMPLES_48K * sample_rate // 48000
        self._pcm = ctypes.create_string_buffer(2 * self._max)
        self._packet = ctypes.create_string_buffer(MAX_PACKET)
        self._decode = lib.opus_decode
        self._encode = lib.opus_encode

    def _decoder(self):
        error = ctypes.c_int()
        dec = self._lib.opus_decoder_create(self.sample_rate, 1, ctypes.byref(error))
        if not dec or error.value != OPUS_OK:
            raise ValueError("opus_decoder_create: error %d" % error.value)
        self._dec = dec
        return dec

    def _encoder(self):
        lib = self._lib
        error = ctypes.c_int()
        enc = lib.opus_encoder_create(self.sample_rate, 1, self.application,
                                      ctypes.byref(error))
        if not enc or error.value != OPUS_OK:
            raise ValueError("opus_encoder_create: error %d" % error.value)
        for request, value in self.settings:
            lib.opus_encoder_ctl(enc, request, value)
        self._enc = enc
        return enc

    def decode(self, payload):
        if not payload:
            return None  # libopus would conceal 120 ms for it
        dec = self._dec or self._decoder()
        n = self._decode(dec, payload, len(payload), self._pcm, self._max, 0)
        if n < 0:
            return None
        return self._pcm.raw[:2 * n]

    def conceal(self, samples, next_payload=None):
        """FEC from ``next_payload`` (if it carries any, else libopus
        conceals), or PLC; ``samples`` is rounded down to 2.5 ms steps as
        libopus needs."""
        dec = self._dec or self._decoder()
        step = self.sample_rate // 400
        want = min(samples - samples % step, self._max)
        if want <= 0:
            return bytes(2 * samples)
        if next_payload:
            n = self._decode(dec, next_payload, len(next_payload), self._pcm, want, 1)
        else:
            n = self._decode(dec, None, 0, self._pcm, want, 0)
        if n < 0:
            return bytes(2 * samples)
        pcm = self._pcm.raw[:2 * n]
        if n < samples:
            pcm += bytes(2 * (samples - n))
        return pcm

    def encode(self, pcm):
        enc = self._enc or self._encoder()
        samples = len(pcm) >> 1
        n = self._encode(enc, pcm, samples, self._packet, MAX_PACKET)
        if n < 0:
            return self._encode_frames(pcm, samples)
        return self._packet.raw[:n]

    def _encode_frames(self, pcm, samples):
        """A duration libopus does not encode as one frame (30, 50, ...
        ms, up to 120): 10 ms frames joined into one packet (RFC 6716
        3.2.5, code 3) with libopus's repacketizer.  None if it cannot."""
        step = self.sample_rate // 100
        if samples % step or samples > 12 * step:
            return None
        lib = self._lib
        rp = self._rp
        if rp is None:
            rp = self._rp = lib.opus_repacketizer_create()
            if not rp:
                return None
        lib.opus_repacketizer_init(rp)
        enc = self._enc
        frames = []  # the repacketizer points into these until out
        for i in range(0, samples, step):
            n = self._encode(enc, pcm[2 * i:2 * (i + step)], step, self._packet, MAX_PACKET)
            if n < 0:
                return None
            frame = self._packet.raw[:n]
            frames.append(frame)
            if lib.opus_repacketizer_cat(rp, frame, n) != OPUS_OK:
                return None
        n = lib.opus_repacketizer_out(rp, self._packet, MAX_PACKET)
        if n < 0:
            return None
        return self._packet.raw[:n]

    def close(self):
        lib = self._lib
        if self._dec:
            lib.opus_decoder_destroy(self._dec)
            self._dec = None
        if self._enc:
            lib.opus_encoder_destroy(self._enc)
            self._enc = None
        if self._rp:
            lib.opus_repacketizer_destroy(self._rp)
            self._rp = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


@implementer(IPlugin, ICodecFactory)
class OpusFactory:
    """opus/48000/2 (RFC 7587)."""

    encoding = "opus"
    clock_rate = 48000
    channels = 2
    sample_rate = 48000
    sample_rates = RATES
    payload_type = None
    ptime = 20
    default_fmtp = "useinbandfec=1"
    #: encoder defaults: bitrate (bit/s) unless the receiver's
    #: maxaveragebitrate says otherwise, and the loss rate FEC is tuned for
    #: when the receiver asked for useinbandfec=1
    bitrate = 32000
    loss_percent = 10
    #: the encoder's complexity (0-10) when it runs SILK (in-band FEC asked
    #: for, or a bitrate below :attr:`celt_bitrate`): below 5 SILK's tone
    #: SNR falls from 38 to 24 dB (docs/codecs.md)
    complexity = 5
    #: the encoder's complexity when it runs CELT: no FEC asked for and at
    #: least :attr:`celt_bitrate` bit/s, where libopus's "audio" application
    #: codes a narrowband or wideband source with CELT; 0 costs a third of
    #: complexity 5 for the same tone SNR within 4 dB (docs/codecs.md)
    celt_complexity = 0
    celt_bitrate = 20000

    def __repr__(self):
        return "<OpusFactory>"

    def available(self):
        try:
            library()
        except Missing as e:
            return str(e)
        return None

    def _bitrate(self, params):
        maxavg = fmtp_int(params, "maxaveragebitrate")
        if maxavg is not None and 6000 <= maxavg <= 510000:
            return maxavg
        return self.bitrate

    def application(self, fmtp):
        """The libopus application for the receiver's ``fmtp``: "voip"
        (SILK for speech; needed for in-band FEC, which only SILK carries)
        when it asked for ``useinbandfec=1`` or the bitrate is below
        :attr:`celt_bitrate`, else "audio" (CELT at these bitrates: a
        third of SILK's CPU, and a higher tone SNR)."""
        params = parse_fmtp(fmtp)
        if fmtp_int(params, "useinbandfec", 0) == 1 or self._bitrate(params) < self.celt_bitrate:
            return OPUS_APPLICATION_VOIP
        return OPUS_APPLICATION_AUDIO

    def settings(self, fmtp):
        """The encoder's ``(ctl, value)`` pairs for the receiver's ``fmtp``."""
        params = parse_fmtp(fmtp)
        bitrate = self._bitrate(params)
        fec = fmtp_int(params, "useinbandfec", 0) == 1
        complexity = self.complexity
        if self.application(fmtp) == OPUS_APPLICATION_AUDIO:
            complexity = self.celt_complexity
        settings = [(OPUS_SET_BITRATE, bitrate), (OPUS_SET_COMPLEXITY, complexity)]
        playback = fmtp_int(params, "maxplaybackrate")
        if playback is not None and playback > 0:
            settings.append((OPUS_SET_MAX_BANDWIDTH, max_bandwidth(playback)))
        if fec:
            settings += [(OPUS_SET_INBAND_FEC, 1), (OPUS_SET_PACKET_LOSS_PERC, self.loss_percent)]
        if fmtp_int(params, "cbr", 0) == 1:
            settings.append((OPUS_SET_VBR, 0))
        if fmtp_int(params, "usedtx", 0) == 1:
            settings.append((OPUS_SET_DTX, 1))
        return settings

    def build(self, fmtp="", sample_rate=None):
        if sample_rate is None:
            sample_rate = self.sample_rate
        if sample_rate not in RATES:
            raise ValueError("Opus cannot run at %r Hz" % (sample_rate,))
        return OpusCodec(library(), sample_rate, self.settings(fmtp), self.application(fmtp))

    def samples(self, payload):
        if library.lib is None:
            return 0
        return packet_samples(payload, 48000)


opus = OpusFactory()
