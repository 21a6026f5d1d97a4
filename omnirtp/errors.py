"""Errors operators and Kamailio see, with rtpengine's literal texts.

Every ng failure path raises :class:`NGError` with one of the ``E_*`` texts;
only :mod:`omnirtp.control.ng` turns it into ``result: error`` +
``error-reason``.  Texts are rtpengine's, so Kamailio's fail-over logic (it
compares ``Ran out of ports`` and ``Parallel session limit reached``) works.
"""

# ng wire
E_NO_PAYLOAD = "Invalid data (no payload)"
E_BAD_FORMAT = "Invalid NG data format"
E_BENCODE = "Could not decode bencode dictionary"
E_JSON_PARSE = "Failed to parse JSON document"
E_JSON_DICT = "Could not decode JSON dictionary"
E_NO_COMMAND = 'Dictionary contains no key "command"'
E_UNKNOWN_COMMAND = "Unrecognized command"

# offer / answer / delete / query
E_NO_SDP = "No SDP body in message"
E_NO_CALL_ID = "No call-id in message"
E_NO_FROM_TAG = "No from-tag in message"
E_NO_TO_TAG = "No to-tag in message"
E_UNKNOWN_CALL = "Unknown call-id"
# omnirtp's: a change to another instance's call (subscribe-keyspace)
# without active-switchover
E_FOREIGN_CALL = "Call is foreign (another instance owns it; see active-switchover)"
E_SDP_PARSE = "Failed to parse SDP"
E_SDP_INCOMPLETE = "Incomplete SDP specification"
E_SDP_REWRITE = "Error rewriting SDP"
E_NO_PORTS = "Ran out of ports"
E_SESSION_LIMIT = "Parallel session limit reached"
E_NOT_FOUND = "Call-ID not found or tags didn't match"
E_INVALID_LIMIT = "invalid limit, must be >= 0"
E_NO_SUCH_TAG = "From-tag given, but no such tag exists"
E_INTERNAL = "Internal error"
# omnirtp's own (rtpengine 10.5 accepts MKI; pylibsrtp cannot use it)
E_MKI_UNSUPPORTED = "SDES key with MKI (a=crypto ...|<MKI>:<length>) is not supported"


class NGError(Exception):
    """An ng request failed; ``reason`` becomes the reply's ``error-reason``."""

    def __init__(self, reason):
        Exception.__init__(self, reason)
        self.reason = reason


class LoadLimit(NGError):
    """A new call would exceed ``max-sessions``, or is refused under load
    (``max-load``, ``max-cpu``, ``max-bandwidth``: omnirtp.control.load).

    Answered with ``result: load limit`` and ``reason`` as its ``message``
    when the request ``supports`` it, else as a plain error with the
    ``legacy`` text (rtpengine 10.5 answers every load limit so to a client
    that does not name the feature: "Parallel session limit reached").
    """

    def __init__(self, reason=E_SESSION_LIMIT, legacy=None):
        NGError.__init__(self, reason)
        self.legacy = reason if legacy is None else legacy


class PortsExhausted(NGError):
    """No free even/odd port pair is left in an interface's range."""

    def __init__(self, reason=E_NO_PORTS):
        NGError.__init__(self, reason)


class FilesExhausted(PortsExhausted):
    """A port pair could not be bound because the process has no open file
    left (EMFILE/ENFILE): answered as rtpengine answers it, ``Ran out of
    ports``; a media worker pool tries the next worker (see
    :mod:`omnirtp.limits`)."""


class SDPError(ValueError):
    """An SDP body could not be parsed; the message says where and why."""


class ConfigError(ValueError):
    """A configuration value breaks a rule; the message names file, key and rule."""
