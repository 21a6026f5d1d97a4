"""Option ``socket-cpu-affinity``: SO_INCOMING_CPU on a call's media sockets.

rtpengine 10.5 (``--socket-cpu-affinity=N``): 0, the default, sets
nothing; N > 0 gives every socket of a call one value, the calls taking
0, 1, ..., N-1, 0, ... in turn; a negative N means the number of CPU
cores online (sysconf), and an unknown count stops the daemon.  The values
are read back with getsockopt from the real sockets of the engine
(``integration/test_workers.py`` does the same with worker processes).
"""

import select
import socket

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.errors import ConfigError
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.media.relay import SO_INCOMING_CPU
from omnirtp.service import socket_cpu_affinity
from omnirtp.test.fakes import MemoryUDPReactor
from omnirtp.test.integration.peers import free_port_range
from omnirtp.test.test_config import build

HOST = "127.0.0.1"


def incoming_cpu(sock):
    """SO_INCOMING_CPU as the kernel keeps it (-1: never set, no packet yet)."""
    return sock.getsockopt(socket.SOL_SOCKET, SO_INCOMING_CPU)


class EngineTests(SynchronousTestCase):
    """EmbeddedEngine on real loopback sockets."""

    def engine(self, affinity):
        port_min, port_max = free_port_range(40)
        engine = EmbeddedEngine(MemoryUDPReactor(), {HOST: (port_min, port_max)},
                                socket_cpu_affinity=affinity)
        self.addCleanup(engine.close)
        return engine

    def cpus(self, engine, call_id, ports):
        """The SO_INCOMING_CPU of the RTP and RTCP socket of each of
        ``ports`` (a list per port)."""
        return [[incoming_cpu(engine.socket((HOST, p + i))._sock) for i in (0, 1)]
                for p in ports]

    def test_roundRobinPerCall(self):
        """Every socket of a call the same value, the next call the next
        one, back to 0 after N-1; a call's later ports keep its value."""
        engine = self.engine(2)
        a = self.successResultOf(engine.allocate("a", HOST, 2))
        b = self.successResultOf(engine.allocate("b", HOST, 2))
        c = self.successResultOf(engine.allocate("c", HOST, 1))
        more_a = self.successResultOf(engine.allocate("a", HOST, 1))
        self.assertEqual(self.cpus(engine, "a", a + more_a), [[0, 0]] * 3)
        self.assertEqual(self.cpus(engine, "b", b), [[1, 1]] * 2)
        self.assertEqual(self.cpus(engine, "c", c), [[0, 0]])

    def test_companionGetsIt(self):
        """The connected companion a socket makes for its party's traffic
        gets the call's value too."""
        engine = self.engine(3)
        self.successResultOf(engine.allocate("a", HOST, 1))
        [port] = self.successResultOf(engine.allocate("b", HOST, 1))
        relay = engine.socket((HOST, port))
        party = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(party.close)
        party.bind((HOST, 0))
        relay.configure(endpoint=party.getsockname(), reset=True)
        party.sendto(bytes([0x80, 0]) + bytes(10), (HOST, port))
        poller = engine.media_poller()
        for _ in range(100):
            select.select([poller.fileno()], [], [], 0.05)
            poller.doRead()
            if relay._conn is not None:
                break
        self.assertIsNot(relay._conn, None)
        self.assertEqual((relay.cpu, incoming_cpu(relay._conn)), (1, 1))

    def test_offSetsNothing(self):
        """0 (the default): the sockets keep the kernel's -1."""
        engine = self.engine(0)
        a = self.successResultOf(engine.allocate("a", HOST, 1))
        b = self.successResultOf(engine.allocate("b", HOST, 1))
        self.assertEqual(self.cpus(engine, "a", a) + self.cpus(engine, "b", b),
                         [[-1, -1], [-1, -1]])

    def test_valueFreedWithTheCall(self):
        """A released call's value is forgotten (no entry per past call);
        the round goes on from where it was."""
        engine = self.engine(3)
        self.successResultOf(engine.allocate("a", HOST, 1))
        self.successResultOf(engine.release("a"))
        self.assertEqual(engine._call_cpu, {})
        b = self.successResultOf(engine.allocate("b", HOST, 1))
        self.assertEqual(self.cpus(engine, "b", b), [[1, 1]])

    def test_badValue(self):
        for bad in (-1, "2", 1.0):
            self.assertRaises(ValueError, EmbeddedEngine, MemoryUDPReactor(),
                              {HOST: (30000, 30009)}, socket_cpu_affinity=bad)


class OptionTests(SynchronousTestCase):
    """The option's value as the daemon reads it."""

    def config(self, value=None):
        if value is None:
            return build()
        return build({"socket-cpu-affinity": (value, "F: [rtpengine] socket-cpu-affinity")})

    def test_default(self):
        self.assertEqual(socket_cpu_affinity(self.config()), 0)

    def test_positive(self):
        self.assertEqual(socket_cpu_affinity(self.config("8")), 8)
        self.assertEqual(self.config("8").unimplemented, ())

    def test_negativeIsTheCores(self):
        config = self.config("-1")
        self.assertEqual(socket_cpu_affinity(config, cores=lambda: 6), 6)
        e = self.assertRaises(ConfigError, socket_cpu_affinity, config, cores=lambda: -1)
        self.assertEqual(str(e),
                         "Number of CPU cores is unknown, cannot auto-set socket CPU affinity")
