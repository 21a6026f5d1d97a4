"""bench/rtpgen.c, the soak's RTP load generator, builds warning-free and
round-trips packets through a plain UDP echo on 127.0.0.1 (not a benchmark:
no rate or timing is asserted)."""

import importlib.util
import os
import select
import socket
import struct
import time

from twisted.trial import unittest

import omnirtp

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(omnirtp.__file__))),
                     "bench")


def _load_rtpgen():
    spec = importlib.util.spec_from_file_location(
        "omnirtp_bench_rtpgen", os.path.join(BENCH, "rtpgen.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RtpgenTests(unittest.TestCase):
    def setUp(self):
        self.rtpgen = _load_rtpgen()
        # -Wall -Wextra -Werror: a warning fails the build
        self.generator = self.rtpgen.Generator(self.rtpgen.build(self.mktemp()))
        self.addCleanup(self.generator.kill)
        self.echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.echo.close)
        self.echo.bind(("127.0.0.1", 0))

    def _echo_for(self, seconds):
        """Send back every datagram for ``seconds``; the datagrams seen."""
        seen = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if select.select([self.echo], [], [], 0.01)[0]:
                data, source = self.echo.recvfrom(2048)
                seen.append((data, source))
                self.echo.sendto(data, source)
        return seen

    def test_echoRoundTrip(self):
        """A party sending to an echo gets back every packet it sent (its
        own SSRC is its peer's here); the packets are RTP with consecutive
        sequence numbers and timestamps 160 apart; a stray datagram is
        counted as foreign; a command for an unknown party is an error."""
        gen = self.generator
        port = gen.open(1, peer=1)
        gen.send(1, self.echo.getsockname()[1])
        seen = self._echo_for(0.4)
        gen.stop(1)
        self.echo.sendto(b"not rtp", ("127.0.0.1", port))
        seen += self._echo_for(0.2)
        gen.send(99, 4000)
        result = gen.quit()

        self.assertGreater(len(seen), 3)
        self.assertEqual({source for _, source in seen}, {("127.0.0.1", port)})
        headers = [struct.unpack("!BBHII", data[:12]) for data, _ in seen]
        self.assertEqual({len(data) for data, _ in seen}, {172})
        self.assertEqual({(h[0], h[1], h[4]) for h in headers}, {(0x80, 0, 0x5a000001)})
        for before, after in zip(headers, headers[1:]):
            self.assertEqual((after[2] - before[2]) & 0xFFFF, 1)
            self.assertEqual((after[3] - before[3]) & 0xFFFFFFFF, 160)

        sent, send_errors, missed, received, foreign, drops = result["parties"][1]
        self.assertEqual(sent, len(seen))
        self.assertEqual(received, sent)
        self.assertEqual((send_errors, foreign, drops), (0, 1, 0))
        self.assertEqual((result["sent"], result["received"]), (sent, received))
        self.assertEqual(gen.errors, ["no open party 99"])

    def test_peerFilter(self):
        """Two parties sending to each other count only their peer's SSRC:
        a packet echoed back with the party's own SSRC is foreign."""
        gen = self.generator
        port_a = gen.open(1, peer=2)
        port_b = gen.open(2, peer=1)
        gen.send(1, port_b)
        gen.send(2, self.echo.getsockname()[1])
        seen = self._echo_for(0.3)
        gen.stop(1)
        gen.stop(2)
        self._echo_for(0.1)
        gen.close(1)
        gen.close(2)
        result = gen.quit()

        self.assertNotEqual(port_a, port_b)
        self.assertEqual({source for _, source in seen}, {("127.0.0.1", port_b)})
        a, b = result["parties"][1], result["parties"][2]
        self.assertGreater(a[0], 0)
        self.assertEqual(b[3], a[0])  # b received all a sent
        self.assertEqual(b[4], len(seen))  # its own packets, echoed, are foreign
        self.assertEqual(a[3] + a[4], 0)  # a got nothing
