"""Our DtlsEndpoint against OpenSSL's own command line over real UDP on 127.0.0.1.

``openssl s_server`` / ``s_client -dtls1_2 -use_srtp ...`` is the other end,
with a certificate we make and write to files.  Each side prints the
``EXTRACTOR-dtls_srtp`` keying material it exported (``-keymatexport``); the
test splits it by RFC 5764 4.2 and checks it against the crypto dicts our
endpoint delivered, and checks that our endpoint verified OpenSSL's
certificate against its fingerprint.
"""

import base64
import os
import re
import shutil
import tempfile

from twisted.internet import defer, protocol, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from omnirtp.media import dtls
from omnirtp.media.dtls import CLIENT, SERVER, Certificate, DtlsEndpoint
from omnirtp.test.integration.peers import find_program, free_port

HOST = "127.0.0.1"
LABEL = "EXTRACTOR-dtls_srtp"
MATERIAL = re.compile(r"Keying material: ([0-9A-F]+)")
PROFILE_LINE = re.compile(r"SRTP Extension negotiated, profile=(\S+)")


class OpenSSLProcess(protocol.ProcessProtocol):
    """Collects an openssl process's output; ``wait_for(regex)`` fires with the first match."""

    def __init__(self):
        self.output = ""
        self.ended = defer.Deferred()
        self._waiters = []

    def outReceived(self, data):
        self.output += data.decode("utf-8", "replace")
        for regex, d in list(self._waiters):
            m = regex.search(self.output)
            if m:
                self._waiters.remove((regex, d))
                d.callback(m)

    errReceived = outReceived

    def wait_for(self, regex, timeout=10.0):
        m = regex.search(self.output)
        if m:
            return defer.succeed(m)
        d = defer.Deferred()
        self._waiters.append((regex, d))

        def expire():
            if (regex, d) in self._waiters:
                self._waiters.remove((regex, d))
                d.errback(AssertionError("openssl printed no %r within %.0fs:\n%s"
                                         % (regex.pattern, timeout, self.output[-3000:])))
        call = reactor.callLater(timeout, expire)
        d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d

    def processEnded(self, reason):
        self.ended.callback(None)


class Socket(DatagramProtocol):
    """Our side's UDP socket: hands datagrams to the endpoint, sends to the peer it learns."""

    def __init__(self):
        self.endpoint = None
        self.peer = None
        self.sent = []
        self.lose = set()    # indexes of our datagrams that are "lost" (never sent)

    def datagramReceived(self, data, addr):
        if self.peer is None:
            self.peer = addr
        if self.endpoint is not None:
            self.endpoint.datagram(data, addr)

    def send(self, data):
        self.sent.append(data)
        if len(self.sent) - 1 not in self.lose:
            self.transport.write(data, self.peer)


class OpenSSLInteropTests(TestCase):
    timeout = 30

    def setUp(self):
        self.openssl = find_program("openssl")
        self.dir = tempfile.mkdtemp(prefix="omnirtp-dtls-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.ours = Certificate.generate()
        self.theirs = Certificate.generate()
        cert_pem, key_pem = self.theirs.pem()
        self.cert_file = os.path.join(self.dir, "cert.pem")
        self.key_file = os.path.join(self.dir, "key.pem")
        with open(self.cert_file, "wb") as f:
            f.write(cert_pem)
        with open(self.key_file, "wb") as f:
            f.write(key_pem)
        self.socket = Socket()
        port = reactor.listenUDP(0, self.socket, interface=HOST)
        self.addCleanup(port.stopListening)
        self.keys = defer.Deferred()
        self.failures = []

    def spawn(self, args):
        proc = OpenSSLProcess()
        argv = [self.openssl] + args + [
            "-dtls1_2", "-cert", self.cert_file, "-key", self.key_file,
            "-use_srtp", "SRTP_AES128_CM_SHA1_80",
            "-keymatexport", LABEL, "-keymatexportlen", "60"]
        transport = reactor.spawnProcess(proc, self.openssl, argv, env={"PATH": "/usr/bin:/bin"})

        def stop():
            if transport.pid is not None:
                transport.signalProcess("KILL")
            return proc.ended
        self.addCleanup(stop)
        return proc

    def endpoint(self, role, remote_fingerprint=None):
        def on_failure(reason):
            self.failures.append(reason)
            if not self.keys.called:
                self.keys.errback(AssertionError("DTLS failed: %s" % (reason,)))

        ep = DtlsEndpoint(role, self.ours, remote_fingerprint or self.theirs.fingerprint(),
                          self.socket.send,
                          lambda srtp_in, srtp_out: self.keys.callback((srtp_in, srtp_out)),
                          on_failure, reactor)
        self.socket.endpoint = ep
        self.addCleanup(ep.close)
        return ep

    def check(self, ep, proc, material_match, srtp_in, srtp_out):
        material = bytes.fromhex(material_match.group(1))
        self.assertEqual(len(material), 60)
        client = material[0:16] + material[32:46]
        server = material[16:32] + material[46:60]
        mine, theirs = (client, server) if ep.role == CLIENT else (server, client)
        self.assertEqual(srtp_out, {"suite": "AES_CM_128_HMAC_SHA1_80",
                                    "key": base64.b64encode(mine).decode()})
        self.assertEqual(srtp_in, {"suite": "AES_CM_128_HMAC_SHA1_80",
                                   "key": base64.b64encode(theirs).decode()})
        self.assertEqual(PROFILE_LINE.search(proc.output).group(1), "SRTP_AES128_CM_SHA1_80")
        self.assertTrue(ep.remote_verified)
        self.assertEqual(ep.peer_certificate, self.theirs.der)
        self.assertEqual(ep.state, dtls.CONNECTED)
        self.assertEqual(self.failures, [])
        self.assertEqual(ep.counters()["garbage"], 0)
        self.assertEqual(ep.counters()["errors"], 0)

    @defer.inlineCallbacks
    def test_we_are_client_openssl_s_server(self):
        port = free_port()
        proc = self.spawn(["s_server", "-accept", "%s:%d" % (HOST, port), "-Verify", "1"])
        yield proc.wait_for(re.compile(r"^ACCEPT", re.M))
        self.socket.peer = (HOST, port)
        ep = self.endpoint(CLIENT)
        ep.start()
        srtp_in, srtp_out = yield self.keys
        material = yield proc.wait_for(MATERIAL)
        self.check(ep, proc, material, srtp_in, srtp_out)
        # s_server asked for our certificate and got the one we advertise
        self.assertIn("verify error:num=18:self-signed certificate", proc.output)

    @defer.inlineCallbacks
    def test_we_are_server_openssl_s_client(self):
        ep = self.endpoint(SERVER)
        ep.start()
        port = self.socket.transport.getHost().port
        proc = self.spawn(["s_client", "-connect", "%s:%d" % (HOST, port)])
        srtp_in, srtp_out = yield self.keys
        material = yield proc.wait_for(MATERIAL)
        self.check(ep, proc, material, srtp_in, srtp_out)

    @defer.inlineCallbacks
    def test_openssl_with_another_certificate_is_refused(self):
        """s_client's certificate is not the one our a=fingerprint names: no keys."""
        ep = self.endpoint(SERVER, Certificate.generate().fingerprint())
        ep.start()
        port = self.socket.transport.getHost().port
        proc = self.spawn(["s_client", "-connect", "%s:%d" % (HOST, port)])
        yield self.assertFailure(self.keys, AssertionError)
        self.assertEqual(self.failures, [dtls.R_MISMATCH])
        self.assertIsNone(ep.srtp_in)
        yield proc.wait_for(re.compile(r"SSL alert number 48"))   # unknown_ca, from us

    @defer.inlineCallbacks
    def test_lost_client_hello_rebuilt_by_openssl(self):
        """On the real reactor our timer finds OpenSSL's own expired: it rebuilds the flight.

        The ClientHello goes out again about a second later with the next
        record sequence number (a copy of the lost datagram would repeat 0).
        """
        port = free_port()
        proc = self.spawn(["s_server", "-accept", "%s:%d" % (HOST, port), "-Verify", "1"])
        yield proc.wait_for(re.compile(r"^ACCEPT", re.M))
        self.socket.peer = (HOST, port)
        self.socket.lose.add(0)
        ep = self.endpoint(CLIENT)
        ep.start()
        srtp_in, srtp_out = yield self.keys
        material = yield proc.wait_for(MATERIAL)
        self.check(ep, proc, material, srtp_in, srtp_out)
        self.assertEqual(ep.counters()["retransmits"], 1)
        first, again = self.socket.sent[0], self.socket.sent[1]
        self.assertEqual((first[0], first[13], again[0], again[13]), (22, 1, 22, 1))  # ClientHello
        self.assertEqual((first[5:11], again[5:11]), (bytes(6), bytes(5) + b"\x01"))
