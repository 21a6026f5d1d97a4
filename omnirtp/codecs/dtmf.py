"""In-band DTMF detection with libspandsp's detector (Debian 12:
libspandsp2, through ``ctypes``), for a transcoded leg whose sender has no
telephone-event while its receiver has: the digits in the decoded audio
become RFC 4733 events (see ``omnirtp.codecs.transcode``).  8 kHz PCM."""

import ctypes

from omnirtp.codecs._native import Library

#: the detector's digits as RFC 4733 event codes
EVENTS = {ord(c): i for i, c in enumerate("0123456789*#ABCD")}

_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int)

def _prototypes(lib):
    """Set the prototypes of libspandsp's functions."""
    lib.dtmf_rx_init.restype = ctypes.c_void_p
    lib.dtmf_rx_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.dtmf_rx_set_realtime_callback.restype = None
    lib.dtmf_rx_set_realtime_callback.argtypes = [ctypes.c_void_p, _CALLBACK,
                                                  ctypes.c_void_p]
    lib.dtmf_rx.restype = ctypes.c_int
    lib.dtmf_rx.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.dtmf_rx_free.restype = ctypes.c_int
    lib.dtmf_rx_free.argtypes = [ctypes.c_void_p]


#: the loaded libspandsp (``library()``), or :class:`Missing` with the reason
library = Library("spandsp", ["libspandsp.so.2"],
                  ["dtmf_rx_init", "dtmf_rx_set_realtime_callback", "dtmf_rx",
                   "dtmf_rx_free"], _prototypes)


class DtmfDetector:
    """One stream's detector.  :meth:`process` takes 8 kHz s16le PCM and
    returns what happened in it: a list of RFC 4733 event codes (a digit
    started) and None (the digit ended), usually empty."""

    def __init__(self):
        lib = library()
        self._lib = lib
        self._events = []
        self._callback = _CALLBACK(self._report)  # kept alive with us
        self._state = lib.dtmf_rx_init(None, None, None)
        if not self._state:
            raise ValueError("dtmf_rx_init failed")
        lib.dtmf_rx_set_realtime_callback(self._state, self._callback, None)
        self._rx = lib.dtmf_rx

    def _report(self, user_data, code, level, delay):
        if code:
            event = EVENTS.get(code)
            if event is not None:
                self._events.append(event)
        else:
            self._events.append(None)

    def process(self, pcm):
        events = self._events
        if events:
            events = self._events = []
        self._rx(self._state, pcm, len(pcm) >> 1)
        return events

    def close(self):
        if self._state:
            self._lib.dtmf_rx_free(self._state)
            self._state = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
