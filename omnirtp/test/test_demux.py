"""Tests for omnirtp.media.demux (RFC 7983) and RelaySocket.send."""

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from omnirtp.interfaces import IDatagramHandler
from omnirtp.media.demux import DTLS, OTHER, STUN, Demux, classify
from omnirtp.media.relay import RelaySocket
from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor

HOST = "127.0.0.1"
SOCK = (HOST, 30000)
PEER_SOCK = (HOST, 30002)
PARTY = ("10.0.0.1", 5000)

#: a STUN binding request header (type 0x0001, length 0, magic cookie, id)
STUN_REQUEST = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"\x01" * 12
#: the start of a DTLS 1.2 handshake record (content type 22)
DTLS_RECORD = b"\x16\xfe\xfd" + b"\x00" * 10


@implementer(IDatagramHandler)
class Recorder:
    def __init__(self, fail=False):
        self.got = []
        self.fail = fail

    def datagram(self, data, source):
        self.got.append((data, source))
        if self.fail:
            raise ValueError("handler bug")


class ClassifyTests(SynchronousTestCase):
    def test_ranges(self):
        """First byte 0-3 is STUN, 20-63 DTLS, anything else (and nothing) other."""
        expected = {0: STUN, 3: STUN, 4: OTHER, 19: OTHER, 20: DTLS, 63: DTLS, 64: OTHER,
                    127: OTHER, 128: OTHER, 255: OTHER}
        self.assertEqual({b: classify(bytes([b, 0])) for b in expected}, expected)
        self.assertIs(classify(b""), OTHER)


class DemuxTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryUDPReactor()
        self.net = FakeNetwork()
        self.relay = RelaySocket(self.reactor, self.net.bind(*SOCK), SOCK)
        self.peer = RelaySocket(self.reactor, self.net.bind(*PEER_SOCK), PEER_SOCK)
        self.relay.start()
        self.relay.configure(peer=self.peer, endpoint=PARTY)
        self.peer.configure(peer=self.relay, endpoint=("10.0.0.2", 6000))
        self.stun, self.dtls = Recorder(), Recorder()
        self.demux = Demux(stun=self.stun, dtls=self.dtls).attach(self.relay)

    def deliver(self, data, src=PARTY):
        self.net.inject(SOCK, data, src)
        self.net.pump(self.reactor)

    def test_routes(self):
        """STUN and DTLS reach their handlers with the source; RTP is relayed as before."""
        self.assertIs(self.relay.other, self.demux)
        other_src = ("10.0.0.9", 7000)
        self.deliver(STUN_REQUEST, other_src)
        self.deliver(DTLS_RECORD)
        self.deliver(b"\x80\x00\x00\x01" + b"\x00" * 20)
        self.assertEqual(self.stun.got, [(STUN_REQUEST, other_src)])
        self.assertEqual(self.dtls.got, [(DTLS_RECORD, PARTY)])
        self.assertEqual(self.demux.counters(), {"stun": 1, "dtls": 1, "failures": 0})
        self.assertEqual((self.relay.junk, self.relay.errors, self.relay.packets), (0, 0, 1))
        self.assertEqual(len(self.net.sent_to(("10.0.0.2", 6000))), 1)
        self.assertTrue(verifyObject(IDatagramHandler, self.stun))

    def test_other_is_junk(self):
        """A datagram in neither range, an empty one, or one whose handler is
        not set is junk on the socket."""
        self.demux.dtls = None
        for data in (b"\x40\x00\x00\x00", b"", DTLS_RECORD):
            self.deliver(data)
        self.assertEqual((self.relay.junk, self.relay.errors), (3, 3))
        self.assertEqual(self.stun.got, [])

    def test_handler_failure_counted_logged_once(self):
        """A handler that raises: counted each time, logged only once."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.demux.stun = Recorder(fail=True)
        self.deliver(STUN_REQUEST)
        self.deliver(STUN_REQUEST)
        self.assertEqual(self.demux.failures, 2)
        self.assertEqual(self.relay.errors, 2)
        failures = [e for e in events if e.get("log_failure") is not None]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0]["local"], SOCK)
        self.flushLoggedErrors(ValueError)

    def test_send(self):
        """send() leaves from the socket to any address; send_endpoint() to
        the current endpoint; a failed send is False and counted."""
        self.assertTrue(self.relay.send(b"\x01\x01reply", ("10.0.0.9", 7000)))
        self.assertTrue(self.relay.send_endpoint(DTLS_RECORD))
        self.assertEqual(self.net.sent_to(("10.0.0.9", 7000)), [(b"\x01\x01reply", SOCK)])
        self.assertEqual(self.net.sent_to(PARTY), [(DTLS_RECORD, SOCK)])
        self.net.bound[SOCK].send_error = 101
        self.assertFalse(self.relay.send(b"x", PARTY))
        self.relay.configure(peer=self.peer, endpoint=None, reset=True)
        self.assertFalse(self.relay.send_endpoint(b"x"))
        self.assertEqual(self.relay.errors, 2)
