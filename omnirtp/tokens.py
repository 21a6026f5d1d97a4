"""Random alphanumeric tokens (ICE ufrag/pwd, candidate foundations) from os.urandom.

One ``os.urandom`` call per token instead of one ``SystemRandom.choice``
(itself a few ``os.urandom`` calls) per character.  Each byte below 248
(= 4 x 62) maps to one of the 62 characters, so every character is equally
likely; bytes 248-255 are dropped and more are drawn if too few are left.
"""

import os

ALPHANUMERIC = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_TABLE = bytes(ALPHANUMERIC.encode("ascii")[b % 62] for b in range(248)) + bytes(8)
_DROP = bytes(range(248, 256))


def token(length, urandom=os.urandom):
    """``length`` characters drawn uniformly from :data:`ALPHANUMERIC`."""
    out = urandom(length + 4).translate(_TABLE, _DROP)
    while len(out) < length:
        out += urandom(length).translate(_TABLE, _DROP)
    return out[:length].decode("ascii")
