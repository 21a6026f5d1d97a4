"""Random alphanumeric tokens (ICE ufrag/pwd, candidate foundations) from os.urandom.

Bytes of ``os.urandom`` instead of one ``SystemRandom.choice`` (itself a
few ``os.urandom`` calls) per character, taken from a block of
:data:`BLOCK` bytes drawn at once (a call's media make two tokens each:
one ``getrandom`` per about 25 plain calls instead of 4 per call); a
forked child draws a block of its own.  Each byte below 248 (= 4 x 62)
maps to one of the 62 characters, so every character is equally likely;
bytes 248-255 are dropped and more are drawn if too few are left.
"""

import os

#: bytes drawn from os.urandom at once for :func:`random_bytes`
BLOCK = 4096
_block = b""
_taken = 0


def random_bytes(n):
    """``n`` bytes of ``os.urandom``, from the current block (each byte
    handed out once), a new block drawn when it runs out."""
    global _block, _taken
    start = _taken
    end = start + n
    if end > len(_block):
        _block = os.urandom(max(BLOCK, n))
        start, end = 0, n
    _taken = end
    return _block[start:end]


def _forget_block():
    global _block, _taken
    _block, _taken = b"", 0


if hasattr(os, "register_at_fork"):
    # a child must not hand out the bytes its parent hands out too
    os.register_at_fork(after_in_child=_forget_block)

ALPHANUMERIC = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_TABLE = bytes(ALPHANUMERIC.encode("ascii")[b % 62] for b in range(248)) + bytes(8)
_DROP = bytes(range(248, 256))


def token(length, urandom=random_bytes):
    """``length`` characters drawn uniformly from :data:`ALPHANUMERIC`."""
    out = urandom(length + 4).translate(_TABLE, _DROP)
    while len(out) < length:
        out += urandom(length).translate(_TABLE, _DROP)
    return out[:length].decode("ascii")
