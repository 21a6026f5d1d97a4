"""Our IceAgent against aioice's own ICE agent (``aioice.Connection``) over real UDP on 127.0.0.1.

aioice runs on an asyncio event loop in a thread of its own; our agent runs on
Twisted's reactor behind a plain DatagramProtocol that plays the pipeline's
RFC 7983 demultiplexer (first byte 0-3: STUN to the agent, the rest: media).
On 127.0.0.1 and on ::1.  Each test reaches a selected pair on both sides, then exchanges one datagram
each way, sending ours only to the address the agent authorised.
"""

import asyncio
import threading

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from omnirtp.media.ice import COMPLETED, IceAgent, new_credentials

try:
    import aioice
    import aioice.ice
except ImportError:  # pragma: no cover - setup.cfg installs it
    aioice = None

HOST = "127.0.0.1"


class AsyncioThread:
    """An asyncio loop in a daemon thread; coroutines run there, results come
    back to the reactor as Deferreds."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="aioice-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine):
        d = defer.Deferred()

        def done(future):
            if future.cancelled():
                reactor.callFromThread(d.errback, defer.CancelledError())
            elif future.exception() is not None:
                reactor.callFromThread(d.errback, future.exception())
            else:
                reactor.callFromThread(d.callback, future.result())

        asyncio.run_coroutine_threadsafe(coroutine, self.loop).add_done_callback(done)
        return d

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


class MediaSocket(DatagramProtocol):
    """One media socket: STUN to the agent, anything else recorded as media."""

    def __init__(self):
        self.agent = None
        self.media = []
        self.media_waiter = None

    def datagramReceived(self, data, source):
        if data and data[0] < 4:
            self.agent.datagram(data, source)
            return
        self.media.append((data, source))
        if self.media_waiter is not None:
            waiter, self.media_waiter = self.media_waiter, None
            waiter.callback((data, source))

    def send(self, data, address):
        self.transport.write(data, address)


def with_timeout(d, seconds, what):
    call = reactor.callLater(seconds, lambda: d.cancel())

    def cleanup(result):
        if call.active():
            call.cancel()
        return result

    def explain(failure):
        failure.trap(defer.CancelledError)
        raise AssertionError("timed out waiting for %s" % what)

    return d.addBoth(cleanup).addErrback(explain)


class AioiceInteropTests(TestCase):
    timeout = 30
    HOST = HOST

    def setUp(self):
        if aioice is None:
            self.fail("aioice is not installed (setup.cfg lists it)")
        # aioice leaves 127.0.0.1 out of its host candidates: offer only that
        self.patch(aioice.ice, "get_host_addresses", lambda use_ipv4=True, use_ipv6=True: [self.HOST])
        self.asyncio = AsyncioThread()
        self.addCleanup(self.asyncio.stop)
        self.socket = MediaSocket()
        self.port = reactor.listenUDP(0, self.socket, interface=self.HOST)
        self.addCleanup(self.port.stopListening)
        self.address = (self.HOST, self.port.getHost().port)

    @defer.inlineCallbacks
    def connect(self, aioice_controlling, lite=False):
        """Run both agents until each has selected a pair; return (our agent, aioice connection)."""
        ufrag, pwd = new_credentials()
        selected = defer.Deferred()

        def on_selected(address):
            if not selected.called:
                selected.callback(address)

        agent = IceAgent(
            reactor,
            self.socket.send,
            on_selected,
            ufrag,
            pwd,
            controlling=not aioice_controlling,
            lite=lite,
            local_address=self.address,
        )
        self.socket.agent = agent
        self.addCleanup(agent.stop)

        async def make():
            ipv6 = ":" in self.HOST
            conn = aioice.Connection(ice_controlling=aioice_controlling, components=1, use_ipv4=not ipv6, use_ipv6=ipv6)
            await conn.gather_candidates()
            return conn

        conn = yield self.asyncio.run(make())
        self.addCleanup(lambda: self.asyncio.run(conn.close()))
        [candidate] = conn.local_candidates
        self.assertEqual(candidate.host, self.HOST)

        # signalling, both ways: credentials and candidates
        agent.set_remote_credentials(conn.local_username, conn.local_password)
        self.assertTrue(agent.add_remote_candidate(candidate.to_sdp()) or lite)
        ours = "1 1 udp %d %s %d typ host" % (agent.local_priority, self.address[0], self.address[1])

        async def answer():
            conn.remote_username = ufrag
            conn.remote_password = pwd
            conn.remote_is_lite = lite
            await conn.add_remote_candidate(aioice.Candidate.from_sdp(ours))
            await conn.add_remote_candidate(None)
            await conn.connect()

        agent.start()
        connected = with_timeout(self.asyncio.run(answer()), 20, "aioice's connect()")
        address = yield with_timeout(selected, 20, "our agent's selection")
        yield connected
        self.assertEqual(address, (self.HOST, candidate.port))
        self.assertEqual(agent.selected, address)
        self.assertEqual(agent.state, COMPLETED)
        self.assertTrue(agent.authorised(address))
        return agent, conn

    @defer.inlineCallbacks
    def exchange(self, agent, conn):
        """One datagram each way over the selected pair."""
        waiter = self.socket.media_waiter = defer.Deferred()
        yield self.asyncio.run(conn.send(b"\x80from aioice"))
        data, source = yield with_timeout(waiter, 10, "aioice's datagram")
        self.assertEqual(data, b"\x80from aioice")
        self.assertTrue(agent.authorised(source))
        self.assertEqual(source, agent.selected)
        self.socket.send(b"\x80from omnirtp", agent.selected)
        got = yield with_timeout(self.asyncio.run(asyncio.wait_for(conn.recv(), 10)), 15, "our datagram at aioice")
        self.assertEqual(got, b"\x80from omnirtp")
        counters = agent.counters()
        for key in ("malformed", "bad-integrity", "bad-fingerprint", "unauthorised", "internal-errors", "stray"):
            self.assertEqual(counters[key], 0, key)
        self.assertGreaterEqual(counters["answered"], 1)

    @defer.inlineCallbacks
    def test_aioice_controlling(self):
        """As towards a browser that offered: we are controlled, aioice nominates."""
        agent, conn = yield self.connect(aioice_controlling=True)
        self.assertFalse(agent.controlling)
        self.assertGreaterEqual(agent.counters()["responses"], 1)
        yield self.exchange(agent, conn)

    @defer.inlineCallbacks
    def test_omnirtp_controlling(self):
        """As with ICE=force on our offer: we control and nominate."""
        agent, conn = yield self.connect(aioice_controlling=False)
        self.assertTrue(agent.controlling)
        yield self.exchange(agent, conn)

    @defer.inlineCallbacks
    def test_omnirtp_lite(self):
        """ICE-lite: we only answer; aioice checks and nominates."""
        agent, conn = yield self.connect(aioice_controlling=True, lite=True)
        self.assertEqual(agent.counters()["checks"], 0)
        yield self.exchange(agent, conn)


class AioiceInteropIPv6Tests(AioiceInteropTests):
    """The same on ::1."""

    HOST = "::1"
