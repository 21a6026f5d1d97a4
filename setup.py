"""Everything but the C extension is declared in setup.cfg.

omnirtp.media._fastsrtp (SRTP for AES_CM_128_HMAC_SHA1_80/_32 with
per-session OpenSSL contexts, see docs/performance.md) links against
OpenSSL's libcrypto (Debian: libssl-dev).  It is optional: where it cannot
be built, omnirtp uses pylibsrtp for every suite and says so once in its
log.  For a source checkout, ``python3 setup.py build_ext --inplace``
builds it next to its source (scripts/run-tests does that).

omnirtp.control._fastbencode (the common cases of the ng protocol's
bencode, see omnirtp/control/bencode.py) needs nothing but Python's
headers; it is optional too: without it bencode.py does all the work.

omnirtp.media._fastrelay (MediaPoller's epoll wait and inline relay of
plain streams, see omnirtp/media/relay.py) needs nothing but Python's
headers and Linux's epoll; optional: without it relay.py does that work.

omnirtp.sdp._fastsdp (the SDP parse, inspect and rewrite for the usual
SDP, see omnirtp/sdp/model.py and rewrite.py) needs nothing but Python's
headers; optional: without it model.py and rewrite.py do that work.

omnirtp.control._fasttree (the statistics tree of one call in the
query/delete reply, see omnirtp/control/commands.py) needs nothing but
Python's headers; optional: without it commands.py does that work.

omnirtp.media._fastpark (the test of a parked call's configure entries,
see omnirtp/media/park.py's checked) needs nothing but Python's headers;
optional: without it park.py does that work.

omnirtp._fastlog (the line of one of omnirtp's log events for twistd's
text observer, see omnirtp/logging.py) needs nothing but Python's headers;
optional: without it logging.py does that work.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "omnirtp.media._fastsrtp",
            sources=["omnirtp/media/_fastsrtp.c"],
            libraries=["crypto"],
            optional=True,
        ),
        Extension(
            "omnirtp.media._fastrelay",
            sources=["omnirtp/media/_fastrelay.c"],
            optional=True,
        ),
        Extension(
            "omnirtp.control._fastbencode",
            sources=["omnirtp/control/_fastbencode.c"],
            optional=True,
        ),
        Extension(
            "omnirtp.sdp._fastsdp",
            sources=["omnirtp/sdp/_fastsdp.c"],
            optional=True,
        ),
        Extension(
            "omnirtp.control._fasttree",
            sources=["omnirtp/control/_fasttree.c"],
            optional=True,
        ),
        Extension(
            "omnirtp.media._fastpark",
            sources=["omnirtp/media/_fastpark.c"],
            optional=True,
        ),
        Extension(
            "omnirtp._fastlog",
            sources=["omnirtp/_fastlog.c"],
            optional=True,
        ),
    ]
)
