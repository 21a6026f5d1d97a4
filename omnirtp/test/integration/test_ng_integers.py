"""Bencode integers in ng requests: Debian's rtpengine 10.5 beside omnirtp.

rtpengine reads an integer with ``strtoll``: it takes a ``+`` and blanks
and clamps values beyond 64 bits to the bound.  omnirtp decodes bencode
strictly (``omnirtp/control/bencode.py``; docs/compat.md lists this as a
deliberate difference).  The same raw datagrams go to both daemons; the
rtpengine test pins what 10.5 does, so a change there shows up here.
"""

import socket

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test.integration.peers import (
    free_port, free_port_range, start_omnirtp, start_rtpengine)

PONG = b"d6:result4:ponge"
REFUSED = b"d6:result5:error12:error-reason35:Could not decode bencode dictionarye"

# an integer as the value of an extra key of a ping -> what each daemon answers
CASES = [
    (b"i9223372036854775807e", PONG, PONG),
    (b"i-9223372036854775808e", PONG, PONG),
    (b"i+1e", PONG, REFUSED),
    (b"i 5e", PONG, REFUSED),
    (b"i9223372036854775808e", PONG, REFUSED),
    (b"i99999999999999999999e", PONG, REFUSED),
    (b"i-99999999999999999999e", PONG, REFUSED),
    # beyond Python's int-from-str digit limit (4300): once no reply at all
    (b"i" + b"7" * 5000 + b"e", PONG, REFUSED),
    (b"i01e", REFUSED, REFUSED),
    (b"i+e", REFUSED, REFUSED),
]


class IntegerTests(SynchronousTestCase):

    def ask_all(self, proxy, which):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5.0)
        answers, expected = [], []
        for number, (value, rtpengine, omnirtp) in enumerate(CASES):
            cookie = b"int%d" % (number,)
            sock.sendto(cookie + b" d7:command4:ping1:x" + value + b"e",
                        ("127.0.0.1", proxy.ng.server[1]))
            reply = sock.recvfrom(65536)[0]
            answers.append((value, reply))
            expected.append((value, cookie + b" " + (rtpengine if which == "rtpengine"
                                                      else omnirtp)))
        self.assertEqual(answers, expected)
        # and the daemon still answers
        self.assertTrue(proxy.ng.ping())

    def test_rtpengine(self):
        port_min, port_max = free_port_range(10)
        self.ask_all(start_rtpengine(self, free_port(), port_min, port_max), "rtpengine")

    def test_omnirtp(self):
        port_min, port_max = free_port_range(10)
        self.ask_all(start_omnirtp(self, free_port(), port_min, port_max), "omnirtp")
