"""omnirtp.service: composition without binding anything."""

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.config.model import Config, InterfaceSpec
from omnirtp.media.engine import EmbeddedEngine
from omnirtp.service import build, startup_warnings, summary


def config(**kw):
    values = dict(interfaces=(InterfaceSpec("priv", "127.0.0.1", None),
                              InterfaceSpec("pub", "127.0.0.2", "203.0.113.1")),
                  listen_ng=(("127.0.0.1", 22222),))
    values.update(kw)
    return Config(**values)


class BuildTests(SynchronousTestCase):

    def test_embeddedEngineByDefault(self):
        """num-threads 0: media in the control process, wired to the registry."""
        top = build(config(), MemoryReactorClock())
        self.assertIsInstance(top.engine, EmbeddedEngine)
        self.assertIs(top.registry.engine, top.engine)
        self.assertIs(top.dispatcher.registry, top.registry)

    def test_oneDtlsCertificate(self):
        """build() makes the daemon's DTLS certificate once, as the config
        says (prime256v1 by default), and the negotiator writes its
        fingerprint."""
        from omnirtp.media.dtls import Certificate
        top = build(config(), MemoryReactorClock())
        cert = top.dispatcher.negotiator.certificate
        self.assertIsInstance(cert, Certificate)
        self.assertIs(top.dispatcher.negotiator.certificate, cert)
        self.assertEqual(cert.key.curve.name, "secp256r1")
        # the engine terminates DTLS with the certificate the SDP names
        self.assertIs(top.engine.certificate, cert)
        self.assertIs(top.certificate, cert)

    def test_dtlsCertificateMadeOnceForTheEngine(self):
        """One DTLS certificate per daemon: the engine (embedded or the
        worker pool, which hands it to its workers) has the one ``build``
        exposes as ``top.certificate``."""
        from omnirtp.media.dtls import Certificate
        from omnirtp.media.pool import WorkerPool

        top = build(config(), MemoryReactorClock())
        self.assertIsInstance(top.certificate, Certificate)
        self.assertIs(top.engine.certificate, top.certificate)
        self.assertTrue(top.certificate.fingerprint().startswith("sha-256 "))
        pooled = build(config(num_threads=2), MemoryReactorClock())
        self.assertIsInstance(pooled.engine, WorkerPool)
        self.assertIs(pooled.engine.certificate, pooled.certificate)
        self.assertNotEqual(pooled.certificate.der, top.certificate.der)

    def test_poolHandsCallsOverLazily(self):
        """The daemon's worker pool parks new plain calls until media
        arrives (omnirtp.media.park): rtpengine has no option for it."""
        pooled = build(config(num_threads=2), MemoryReactorClock())
        self.assertTrue(pooled.engine.lazy)

    def test_buildEngineTakesTheCertificate(self):
        from omnirtp.call.negotiate import Interfaces
        from omnirtp.media.dtls import Certificate
        from omnirtp.service import build_engine

        cert = Certificate.generate()
        c = config()
        engine, _service = build_engine(c, MemoryReactorClock(), Interfaces(c.interfaces), cert)
        self.assertIs(engine.certificate, cert)
        engine.close()

    def test_summary(self):
        """The start-up line names listeners, interfaces, ports and media mode."""
        text = summary(config(num_threads=3, max_sessions=1000))
        self.assertIn("ng on 127.0.0.1:22222", text)
        self.assertIn("priv/127.0.0.1, pub/127.0.0.2!203.0.113.1", text)
        self.assertIn("ports 30000-40000", text)
        self.assertIn("3 media worker processes", text)
        self.assertIn("max-sessions 1000", text)

    def test_accessListShared(self):
        """One AccessList from control-allow serves the ng listeners and the
        statistics."""
        top = build(config(control_allow=("10.0.0.0/8",)), MemoryReactorClock())
        self.assertIs(top.dispatcher.access, top.access)
        self.assertEqual([str(n) for n in top.access.networks],
                         ["127.0.0.0/8", "::1/128", "10.0.0.0/8"])
        ng_service = [s for s in top if hasattr(s, "protocol_factory")][0]
        self.assertIs(ng_service.protocol_factory().access, top.access)
        self.assertIn("ng on 127.0.0.1:22222 (from loopback, 10.0.0.0/8)",
                      summary(config(control_allow=("10.0.0.0/8",))))

    def test_warnsWhenNgIsOpenButNothingAllowed(self):
        """listen-ng beyond loopback and no control-allow: a warning."""
        c = config(listen_ng=(("0.0.0.0", 22222), ("127.0.0.1", 22223), ("::1", 2)))
        self.assertEqual(startup_warnings(c), [
            "listen-ng 0.0.0.0:22222 is reachable from other hosts, but control-allow "
            "names no network: only loopback sources are answered"])
        self.assertEqual(startup_warnings(config(listen_ng=(("0.0.0.0", 22222),),
                                                 control_allow=("10.0.0.0/8",))), [])
        self.assertEqual(startup_warnings(config()), [])

    def test_startupWarnings(self):
        """Config warnings come first, then one line per unimplemented option."""
        c = config(warnings=("w1",), unimplemented=("redis",))
        self.assertEqual(startup_warnings(c),
                         ["w1", "option 'redis' is not implemented by omnirtp yet; ignored"])


class _RecordingPort:
    """What _NGService asks of a UDP port: reading paused and resumed."""

    def __init__(self):
        self.events = []

    def stopReading(self):
        self.events.append("stop")

    def startReading(self):
        self.events.append("start")

    def stopListening(self):
        self.events.append("close")


class _GateReactor:
    """A Clock that binds UDP ports as _RecordingPort."""

    def __init__(self):
        from twisted.internet.task import Clock
        self.clock = Clock()
        self.callLater = self.clock.callLater
        self.seconds = self.clock.seconds
        self.ports = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        p = _RecordingPort()
        self.ports.append((interface, port, p))
        return p


class NGGateTests(SynchronousTestCase):
    """With media workers, ng is bound at start but read only once the
    workers answer (or a bounded wait passed): Kamailio's first offers
    wait in the socket queue instead of failing."""

    def service(self, ready, timeout=30.0):
        from omnirtp.service import _NGService
        reactor = _GateReactor()
        svc = _NGService(reactor, (("127.0.0.1", 22222), ("127.0.0.2", 22223)),
                         object, ready=ready, ready_timeout=timeout)
        return reactor, svc

    def test_embeddedReadsAtOnce(self):
        reactor, svc = self.service(None)
        svc.startService()
        self.assertEqual([p.events for _, _, p in reactor.ports], [[], []])
        self.assertTrue(svc.reading)

    def test_readsWhenWorkersAnswer(self):
        from twisted.internet.defer import Deferred
        d = Deferred()
        reactor, svc = self.service(lambda: d)
        svc.startService()
        self.assertEqual([p.events for _, _, p in reactor.ports], [["stop"], ["stop"]])
        self.assertFalse(svc.reading)
        d.callback([101, 102])
        self.assertEqual([p.events for _, _, p in reactor.ports],
                         [["stop", "start"], ["stop", "start"]])
        self.assertTrue(svc.reading)
        # the bounded wait was cancelled: nothing left on the clock
        self.assertEqual(reactor.clock.getDelayedCalls(), [])

    def test_readsAfterTimeout(self):
        from twisted.internet.defer import Deferred
        d = Deferred()
        reactor, svc = self.service(lambda: d, timeout=5.0)
        svc.startService()
        reactor.clock.advance(4.9)
        self.assertFalse(svc.reading)
        reactor.clock.advance(0.2)
        self.assertTrue(svc.reading)
        self.assertEqual(reactor.ports[0][2].events, ["stop", "start"])
        d.callback(None)  # late answer: no second startReading
        self.assertEqual(reactor.ports[0][2].events, ["stop", "start"])

    def test_readsWhenWorkersFail(self):
        from twisted.internet.defer import fail
        from omnirtp.media.pool import WorkerUnavailable
        reactor, svc = self.service(lambda: fail(WorkerUnavailable("gone")))
        svc.startService()
        self.assertTrue(svc.reading)
        self.assertEqual(reactor.ports[1][2].events, ["stop", "start"])
        self.assertEqual(reactor.clock.getDelayedCalls(), [])

    def test_stopBeforeReady(self):
        from twisted.internet.defer import Deferred
        d = Deferred()
        reactor, svc = self.service(lambda: d)
        svc.startService()
        svc.stopService()
        self.assertEqual(reactor.clock.getDelayedCalls(), [])
        d.callback(None)
        self.assertEqual(reactor.ports[0][2].events, ["stop", "close"])

    def test_buildGatesOnThePool(self):
        """build() gives the ng service the pool's whenReady."""
        from omnirtp.service import _NGService
        top = build(config(num_threads=2), MemoryReactorClock())
        ng = [s for s in top if isinstance(s, _NGService)][0]
        self.assertEqual(ng.ready, top.engine.whenReady)
        self.assertEqual(ng.ready_timeout, top.engine.start_timeout)
        embedded = build(config(), MemoryReactorClock())
        ng = [s for s in embedded if isinstance(s, _NGService)][0]
        self.assertIsNone(ng.ready)


class StateTests(SynchronousTestCase):
    """redis / redis-write / no-redis-required as rtpengine reads them."""

    def test_noRedisNoStore(self):
        top = build(config(), MemoryReactorClock())
        self.assertIsNone(top.state)
        self.assertIsNone(top.registry.store)

    def test_unreachableIsFatal(self):
        import socket
        from omnirtp.errors import ConfigError
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        e = self.assertRaises(ConfigError, build, config(redis="127.0.0.1:%d/2" % port),
                              MemoryReactorClock())
        self.assertIn("redis 127.0.0.1:%d/2 is unreachable" % port, str(e))
        top = build(config(redis="127.0.0.1:%d/2" % port, no_redis_required=True),
                    MemoryReactorClock())
        self.assertIs(top.registry.store, top.state.write_store)
        self.assertIs(top.state.read_store, top.state.write_store)
        self.assertEqual(top.state.read_store.address.db, 2)

    def test_followerWithRedisAlone(self):
        """With ``redis`` the follower is there for ksadd / standby even
        without ``subscribe-keyspace``; it knows our own database (written
        to: ``redis-write``), follows from ``redis``'s server, and
        ``active-switchover`` reaches it and the ng Dispatcher."""
        top = build(config(redis="127.0.0.1:1/1", redis_write="127.0.0.1:2/5",
                           no_redis_required=True), MemoryReactorClock())
        follower = top.state.follower
        self.assertEqual(follower.listed(), [])
        self.assertEqual(str(follower.own_address), "127.0.0.1:2/5")
        self.assertEqual(follower.address.port, 1)
        self.assertFalse(follower.switchover)
        self.assertIs(top.dispatcher.follower, follower)
        self.assertIs(top.operations.follower, follower)
        top = build(config(redis="127.0.0.1:1/1", subscribe_keyspace=("3;4",),
                           active_switchover=True, no_redis_required=True),
                    MemoryReactorClock())
        self.assertEqual(top.state.follower.listed(), [3, 4])
        self.assertTrue(top.state.follower.switchover)
        self.assertEqual(top.state.follower.own_address.db, 1)

    def test_redisWrite(self):
        """Restored from ``redis``, written to ``redis-write``."""
        top = build(config(redis="127.0.0.1:1/1", redis_write="pw@127.0.0.1:2/5",
                           no_redis_required=True, redis_expires=77,
                           redis_cmd_timeout=250, redis_disable_time=3),
                    MemoryReactorClock())
        read, write = top.state.read_store, top.state.write_store
        self.assertEqual((read.address.port, read.address.db), (1, 1))
        self.assertEqual((write.address.port, write.address.db, write.address.password),
                         (2, 5, "pw"))
        self.assertIs(top.registry.store, write)
        self.assertEqual((write.expires, write.cmd_timeout, write.disable_time), (77, 0.25, 3.0))


class FreezeTests(SynchronousTestCase):
    """The real daemon (its log routed at start) freezes what start-up
    made once the reactor runs; a service built for tests does not."""

    def start(self, logging):
        import gc

        from twisted.internet.task import Clock

        import omnirtp.logging
        from omnirtp.service import _RegistryService

        frozen = []
        self.patch(gc, "freeze", lambda: frozen.append(True))
        self.patch(omnirtp.logging, "install", lambda levels, **kw: None)

        class Registry:
            clock = Clock()

            def start(self):
                pass

        registry = Registry()
        _RegistryService(registry, logging=logging).startService()
        self.assertEqual(frozen, [])  # not before the reactor runs
        registry.clock.advance(0)
        return frozen

    def test_daemon(self):
        self.assertEqual(self.start({"log_stderr": False}), [True])

    def test_not_in_tests(self):
        self.assertEqual(self.start(None), [])


class FastRelayMissingTests(SynchronousTestCase):
    """A daemon whose C media loop is not built says so once at start."""

    def start(self, missing):
        from twisted.internet.task import Clock
        from twisted.logger import Logger

        from omnirtp.media import relay
        from omnirtp.service import _RegistryService

        seen = []
        self.patch(relay, "FAST_MISSING", missing)
        self.patch(_RegistryService, "log", Logger(observer=seen.append))

        class Registry:
            clock = Clock()

            def start(self):
                pass
        _RegistryService(Registry()).startService()
        return [e["text"] for e in seen if "text" in e]

    def test_missing(self):
        self.assertEqual(self.start("omnirtp.media._fastrelay is not built (x)"),
                         ["omnirtp.media._fastrelay is not built (x)"])

    def test_built(self):
        self.assertEqual(self.start(None), [])


class EngineDebugLineTests(SynchronousTestCase):
    """num-threads = 0: once the daemon's logging is installed, the
    embedded engine makes its allocate's debug line only while the filters
    would let it through (``log_debug``), and follows every change of the
    levels, as a media worker's engine follows its own."""

    def test_followsLevels(self):
        from twisted.logger import LogPublisher

        import omnirtp.logging as olog
        from omnirtp.service import _RegistryService

        self.addCleanup(setattr, olog, "_installed", olog._installed)
        publisher = LogPublisher()
        publisher.addObserver(lambda event: None)
        real = olog.install
        self.patch(olog, "install", lambda levels, **kw: real(levels, publisher=publisher))
        top = build(config(), MemoryReactorClock(), log_level=6)
        engine = top.engine
        # the engine's logger, on this test's publisher
        engine.log = olog.Logger(namespace="omnirtp.media.engine.EmbeddedEngine",
                                 observer=publisher)
        [svc] = [s for s in top if isinstance(s, _RegistryService)]
        self.assertTrue(engine.log_debug)  # not installed yet: as before
        svc.startService()
        self.addCleanup(svc.stopService)
        self.assertFalse(engine.log_debug)
        svc.levels.set(7, "core")
        self.assertTrue(engine.log_debug)
        svc.levels.shift(-1)
        self.assertFalse(engine.log_debug)
        svc.levels.set(7)
        self.assertTrue(engine.log_debug)
