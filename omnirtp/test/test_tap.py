"""Tests for omnirtp.tap: the twistd subcommand's options and entry point."""

import io
import os
import subprocess
import sys

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from omnirtp import __version__, tap
from omnirtp.config import InterfaceSpec
from omnirtp.config.options import FLAG, FLOAT, INT, LIST, OPTIONS

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(HERE, "fixtures", "config")

BASE = ["--config-file=none", "-i", "127.0.0.1", "-n", "2223"]

# a valid value per option, for options whose rules need more than a number
SAMPLE_VALUES = {
    "config-file": "none", "config-section": "rtpengine", "interface": "10.0.0.1",
    "log-level": "5", "tos": "46", "control-tos": "46", "dtls-mtu": "1400",
    "endpoint-learning": "off", "recording-format": "eth", "recording-method": "proc",
    "log-facility": "local1", "log-facility-cdr": "local2",
    "log-facility-rtcp": "local3", "log-facility-dtmf": "local4",
    "redis": "10.0.0.9:6379/1", "redis-write": "pw@10.0.0.9:6379/2",
    "port-min": "30010", "port-max": "30020", "num-threads": "2", "table": "-1",
    "delete-delay": "5", "control-allow": "10.0.0.0/8",
    "subscribe-keyspace": "2;3", "redis-subscribe": "10.0.0.9:6379",
}


def sampleValue(option):
    if option.name in SAMPLE_VALUES:
        return SAMPLE_VALUES[option.name]
    if option.name.startswith("listen-"):
        return "127.0.0.1:2300"
    if option.kind == INT:
        return "7"
    if option.kind == FLOAT:
        return "0.5"
    return "x"


def fakeResolve(host):
    raise OSError("no DNS in unit tests")


class Options(tap.Options):
    """tap.Options with no environment, no default files and no DNS."""

    environ = {}
    defaultConfigFiles = ()
    resolve = staticmethod(fakeResolve)


def parse(args, environ=None, defaultFiles=None):
    options = Options()
    if environ is not None:
        options.environ = environ
    if defaultFiles is not None:
        options.defaultConfigFiles = defaultFiles
    options.parseOptions(args)
    return options


class OptionsTests(SynchronousTestCase):
    def test_longOptions(self):
        config = parse([
            "--config-file=none", "--interface=int/10.0.0.1",
            "--interface", "ext/10.0.0.2!203.0.113.2", "--listen-ng=127.0.0.1:2223",
            "--port-min=20000", "--port-max=20100", "--timeout=10",
            "--silent-timeout=20", "--final-timeout=30", "--offer-timeout=40",
            "--delete-delay=0", "--log-level=7", "--num-threads=2",
            "--max-sessions=100", "--foreground", "--tos=184"]).config
        self.assertEqual(config.interfaces, (InterfaceSpec("int", "10.0.0.1"),
                                             InterfaceSpec("ext", "10.0.0.2", "203.0.113.2")))
        self.assertEqual(
            (config.listen_ng, config.port_min, config.port_max, config.timeout,
             config.silent_timeout, config.final_timeout, config.offer_timeout,
             config.delete_delay, config.log_level, config.num_threads,
             config.max_sessions, config.foreground, config.tos, config.unimplemented),
            ((("127.0.0.1", 2223),), 20000, 20100, 10, 20, 30, 40, 0, 7, 2, 100, True,
             184, ()))

    def test_shortOptions(self):
        config = parse(["-i", "10.0.0.1", "-n", "2223", "-m", "20000", "-M", "20100",
                        "-o", "10", "-s", "20", "-a", "30", "-d", "5", "-L", "3", "-f",
                        "-E", "-T", "46", "-t", "-1", "--config-file=none"]).config
        self.assertEqual(
            (config.port_min, config.port_max, config.timeout, config.silent_timeout,
             config.final_timeout, config.delete_delay, config.log_level,
             config.foreground, config.log_stderr, config.tos, config.table),
            (20000, 20100, 10, 20, 30, 5, 3, True, True, 46, -1))

    def test_everyOptionAccepted(self):
        """Each rtpengine option parses in its long form and, where it has one,
        its short form; unimplemented ones are named once."""
        for option in OPTIONS:
            if option.name == "codecs":
                continue
            forms = ["--" + option.name]
            if option.short:
                forms.append("-" + option.short)
            for form in forms:
                if option.kind == FLAG:
                    args = [form]
                else:
                    args = [form, sampleValue(option)]
                if option.kind == LIST:
                    args += args
                if option.name == "listen-https":
                    args += ["--https-cert", "/etc/omnirtp/cert.pem"]
                options = parse(BASE + args)
                expected = () if option.implemented else (option.name,)
                self.assertEqual(options.config.unimplemented, expected, args)

    def test_unknownOption(self):
        e = self.assertRaises(usage.UsageError, parse, BASE + ["--no-such-thing"])
        self.assertEqual(str(e), "option --no-such-thing not recognized")
        self.assertRaises(usage.UsageError, parse, BASE + ["-Z"])

    def test_flagTakesNoValue(self):
        self.assertRaises(usage.UsageError, parse, BASE + ["--foreground=yes"])

    def test_missingValue(self):
        self.assertRaises(usage.UsageError, parse, ["--port-min"])

    def test_validationIsUsageError(self):
        e = self.assertRaises(usage.UsageError, parse, BASE + ["--port-min=40001"])
        self.assertEqual(str(e), "command line: --port-min=40001: port-min (40001) must "
                                 "not be above port-max (40000)")
        e = self.assertRaises(usage.UsageError, parse, BASE + ["-L", "x"])
        self.assertEqual(str(e), "command line: --log-level=x: must be an integer")
        e = self.assertRaises(usage.UsageError, parse, ["--config-file=none", "-n", "1"])
        self.assertEqual(str(e), "Missing option --interface")
        e = self.assertRaises(usage.UsageError, parse, ["--config-file=none", "-i", "1.2.3.4"])
        self.assertEqual(str(e), "Missing option --listen-tcp, --listen-udp, --listen-ng, "
                                 "--listen-tcp-ng, --listen-http, or --listen-https")

    def test_lastValueWins(self):
        self.assertEqual(parse(BASE + ["-o", "5", "--timeout=6"]).config.timeout, 6)

    def test_fileAndCommandLine(self):
        path = os.path.join(FIXTURES, "vars", "omnirtp.conf")
        options = parse(["--config-file", path, "--port-max=20500",
                         "--interface=cli/10.9.9.9"])
        config = options.config
        self.assertEqual(config.interfaces, (InterfaceSpec("cli", "10.9.9.9"),))
        self.assertEqual((config.port_min, config.port_max, config.config_file),
                         (20000, 20500, path))
        self.assertIs(options["config"], config)

    def test_seedFiles(self):
        """The seed's docker-compose command line over its rtpengine.conf
        (mounted as the default /etc/rtpengine/rtpengine.conf), with
        PRIVATE_IP from the environment and PUBLIC_IP from .env."""
        with open(os.path.join(FIXTURES, "seed", "compose-command.txt")) as f:
            args = f.read().split()
        seedConf = os.path.join(FIXTURES, "seed", "rtpengine.conf")
        config = parse(args, environ={"PRIVATE_IP": "172.20.0.10"},
                       defaultFiles=("/nonexistent/omnirtp.conf", seedConf)).config
        self.assertEqual(config.interfaces, (
            InterfaceSpec("PRIVATE_IP", "172.20.0.10"),
            InterfaceSpec("PUBLIC_IP", "203.0.113.1", "203.0.113.1")))
        self.assertEqual(
            (config.listen_ng, config.port_min, config.port_max, config.log_level,
             config.foreground, config.num_threads, config.config_file),
            ((("0.0.0.0", 22222),), 30000, 40000, 6, True, 4, seedConf))

    def test_seedCommandLineAlone(self):
        with open(os.path.join(FIXTURES, "seed", "compose-command.txt")) as f:
            args = f.read().split()
        config = parse(["--config-file=none"] + args,
                       environ={"PRIVATE_IP": "10.0.0.1", "PUBLIC_IP": "203.0.113.5"}).config
        self.assertEqual(config.interfaces, (
            InterfaceSpec("PRIVATE_IP", "10.0.0.1"),
            InterfaceSpec("PUBLIC_IP", "203.0.113.5", "203.0.113.5")))
        e = self.assertRaises(usage.UsageError, parse, ["--config-file=none"] + args,
                              environ={"PRIVATE_IP": "10.0.0.1"})
        self.assertEqual(str(e), "command line: --interface: undefined variable "
                                 "PUBLIC_IP (not in the environment)")

    def test_unimplementedNamedOnce(self):
        options = parse(BASE + ["--listen-udp=9900", "-u", "9901", "--redis-num-threads=5",
                                "--redis-num-threads=6", "--sip-source"])
        self.assertEqual(options.config.unimplemented,
                         ("listen-udp", "redis-num-threads", "sip-source"))
        self.assertEqual(tap.describe_warnings(options.config), [
            "option 'listen-udp' is not implemented by omnirtp yet; ignored",
            "option 'redis-num-threads' is not implemented by omnirtp yet; ignored",
            "option 'sip-source' is not implemented by omnirtp yet; ignored",
            "listen-ng 0.0.0.0:2223 is reachable from other hosts, but control-allow names "
            "no network: only loopback sources are answered"])

    def test_twistdPidfileAndOurs(self):
        """twistd's --pidfile goes before 'omnirtp'; -p/--pidfile after it is
        rtpengine's option, parsed by ours."""
        from twisted.scripts.twistd import ServerOptions

        self.patch(tap.Options, "environ", {})
        self.patch(tap.Options, "defaultConfigFiles", ())
        server = ServerOptions()
        server.parseOptions(["-n", "--pidfile=", "omnirtp", "-p", "/run/omnirtp.pid"] + BASE)
        self.assertEqual(server["pidfile"], "")
        self.assertEqual(server.subCommand, "omnirtp")
        self.assertEqual(server.subOptions.config.pidfile, "/run/omnirtp.pid")
        self.assertEqual(server.subOptions.config.unimplemented, ("pidfile",))

    def test_usageErrorUnderTwistdExits1(self):
        """Under twistd, a usage error is printed and exits 1 (twistd 22.4
        itself would exit 0)."""
        from twisted.scripts.twistd import ServerOptions

        stderr = io.StringIO()
        self.patch(tap.Options, "environ", {})
        self.patch(tap.Options, "defaultConfigFiles", ())
        self.patch(tap.Options, "stderr", stderr)
        server = ServerOptions()
        e = self.assertRaises(SystemExit, server.parseOptions,
                              ["omnirtp", "--config-file=none", "--interfacez=1"])
        self.assertEqual(e.code, 1)
        self.assertEqual(stderr.getvalue(),
                         "twistd omnirtp: option --interfacez not recognized\n"
                         "Run 'twistd omnirtp --help' for the options.\n")
        stderr.truncate(0)
        stderr.seek(0)
        e = self.assertRaises(SystemExit, server.parseOptions,
                              ["omnirtp", "--config-file=none", "-n", "1"])
        self.assertEqual(stderr.getvalue().splitlines()[0],
                         "twistd omnirtp: Missing option --interface")

    def test_version(self):
        options = Options()
        options.stdout = io.StringIO()
        e = self.assertRaises(SystemExit, options.parseOptions, ["-v"])
        self.assertEqual(e.code, 0)
        self.assertEqual(options.stdout.getvalue(), "omnirtp {}\n".format(__version__))
        options = Options()
        options.stdout = io.StringIO()
        self.assertRaises(SystemExit, options.parseOptions, ["--version"])
        self.assertEqual(options.stdout.getvalue(), "omnirtp {}\n".format(__version__))

    def test_codecs(self):
        options = Options()
        options.stderr = io.StringIO()
        e = self.assertRaises(SystemExit, options.parseOptions, ["--codecs"])
        self.assertEqual(e.code, 1)
        self.assertEqual(options.stderr.getvalue(),
                         "omnirtp: --codecs is not implemented yet\n")

    def test_configTestOK(self):
        options = Options()
        options.stdout = io.StringIO()
        e = self.assertRaises(SystemExit, options.parseOptions,
                              BASE + ["--config-test", "-t", "0", "--sip-source"])
        self.assertEqual(e.code, 0)
        # -t 0 is kernel forwarding now (checked when the daemon starts)
        self.assertEqual(options.stdout.getvalue(), (
            "warning: option 'sip-source' is not implemented by omnirtp yet; ignored\n"
            "warning: listen-ng 0.0.0.0:2223 is reachable from other hosts, but control-allow "
            "names no network: only loopback sources are answered\n"
            "omnirtp: configuration OK (no config file)\n"))

    def test_configTestError(self):
        options = Options()
        options.stdout, options.stderr = io.StringIO(), io.StringIO()
        e = self.assertRaises(SystemExit, options.parseOptions,
                              BASE + ["--config-test", "--tos=256"])
        self.assertEqual(e.code, 1)
        self.assertEqual(options.stderr.getvalue(), "omnirtp: configuration error: "
                         "command line: --tos=256: must be from 0 to 255\n")
        self.assertEqual(options.stdout.getvalue(), "")


class MakeServiceTests(SynchronousTestCase):
    def test_delegates(self):
        """makeService hands the Config to omnirtp.service.makeService,
        with a reload callable (SIGHUP) that loads the same command line
        again."""
        import omnirtp.service
        calls = []
        self.patch(omnirtp.service, "makeService",
                   lambda config, reactor=None, reload=None:
                   calls.append((config, reactor, reload)) or "svc")
        options = parse(BASE)
        reactor = object()
        self.assertEqual(tap.makeService(options, reactor), "svc")
        [(config, got_reactor, reload)] = calls
        self.assertEqual((config, got_reactor), (options.config, reactor))
        self.assertEqual(reload(), options.config)
        self.assertIsNot(reload(), options.config)


class TwistdSubprocessTests(SynchronousTestCase):
    """``twistd omnirtp --config-test`` as an operator runs it."""

    def twistd(self, *args):
        env = dict(os.environ, PYTHONPATH=ROOT)
        env.pop("PRIVATE_IP", None)
        code = ("import sys; from twisted.scripts.twistd import run; "
                "sys.argv[0] = 'twistd'; run()")
        return subprocess.run([sys.executable, "-c", code] + list(args), cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60)

    def test_ok(self):
        result = self.twistd("omnirtp", "--config-test", "--config-file",
                             os.path.join(ROOT, "etc", "omnirtp.conf"))
        self.assertEqual((result.returncode, result.stdout.splitlines()[-1]),
                         (0, "omnirtp: configuration OK ({})".format(
                             os.path.join(ROOT, "etc", "omnirtp.conf"))))

    def test_error(self):
        result = self.twistd("omnirtp", "--config-test", "--config-file=none",
                             "-i", "127.0.0.1", "--port-min=0", "-n", "2223")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.strip().splitlines()[-1],
                         "omnirtp: configuration error: command line: --port-min=0: "
                         "must be from 1 to 65535")

    def test_unknownOption(self):
        result = self.twistd("omnirtp", "--config-file=none", "--bogus-option")
        self.assertEqual(result.returncode, 1)
        self.assertIn("twistd omnirtp: option --bogus-option not recognized",
                      result.stderr)

    def test_invalidConfigWithoutConfigTest(self):
        result = self.twistd("omnirtp", "--config-file=none", "-i", "127.0.0.1")
        self.assertEqual(result.returncode, 1)
        self.assertIn("twistd omnirtp: Missing option --listen-tcp", result.stderr)


class UpstreamOptionsTests(SynchronousTestCase):
    """The current upstream rtpengine's options and config file syntax
    (options.UPSTREAM_OPTIONS): accepted, acted on where omnirtp can, else
    named once."""

    CONF = os.path.join(FIXTURES, "upstream", "rtpengine.conf")

    def test_upstreamConfigFile(self):
        options = parse(["--config-file", self.CONF])
        config = options.config
        self.assertEqual(config.interfaces, (
            InterfaceSpec("pub1", "127.0.0.1"),
            InterfaceSpec("pub", "127.0.0.1"),
            InterfaceSpec("priv", "127.0.0.2", "192.0.2.10"),
            InterfaceSpec("ICE", "127.0.0.3"),
            InterfaceSpec("virt", "127.0.0.2", "192.0.2.10")))
        self.assertEqual((config.http_idle_timeout, config.mos, config.measure_rtp),
                         (20, ("CQ", "G.107.2"), True))
        self.assertEqual(config.unimplemented, (
            "log-name", "measure-rtp", "mos", "ssrc-reporting", "rtcp-interval",
            "nftables-chain", "nftables-base-chain", "nftables-family", "poller-size",
            "max-recv-iters", "timer-accuracy", "codec-num-threads", "redis-format",
            "audio-player", "moh-max-duration", "moh-prevent-double-hold",
            "dtmf-no-log-injects", "templates", "transcode-config", "ng-client-timeout",
            "ng-client-retries", "preload-media-files", "vsc-start-rec"))
        warnings = tap.describe_warnings(config)
        for name in config.unimplemented:
            self.assertEqual(
                warnings.count("option '%s' is not implemented by omnirtp yet; ignored" % name),
                1, name)
        self.assertEqual([w for w in warnings if "not implemented" not in w], [
            "%s: [interface-ICE-1] port-min: per-interface port ranges are not supported; "
            "port-min/port-max apply" % self.CONF,
            "%s: [interface-ICE-1] port-max: per-interface port ranges are not supported; "
            "port-min/port-max apply" % self.CONF])

    def test_configTestStarts(self):
        """--config-test with the upstream file: OK, exit 0."""
        options = Options()
        options.stdout = io.StringIO()
        e = self.assertRaises(SystemExit, options.parseOptions,
                              ["--config-file", self.CONF, "--config-test"])
        self.assertEqual(e.code, 0)
        self.assertTrue(options.stdout.getvalue().endswith(
            "omnirtp: configuration OK (%s)\n" % self.CONF), options.stdout.getvalue())

    def test_upstreamCommandLine(self):
        config = parse(BASE[:1] + [
            "-i", "pub1/127.0.0.1", "-i", "pub=pub1", "-i", "rr:1/127.0.0.2",
            "-n", "2223", "--measure-rtp", "--mos=CQ", "--mos=LQ", "--io-uring",
            "--nftables-family=inet", "--http-idle-timeout=5",
            "--codec-chain-runners=2"]).config
        self.assertEqual([(i.name, i.address) for i in config.interfaces],
                         [("pub1", "127.0.0.1"), ("pub", "127.0.0.1"), ("rr:1", "127.0.0.2")])
        self.assertEqual(config.mos, ("CQ", "LQ"))
        # direction=pub uses the alias's addresses; direction=rr the BASE:SUFFIX one
        from omnirtp.call.negotiate import Interfaces
        interfaces = Interfaces(config.interfaces)
        self.assertEqual([interfaces.resolve(n) for n in ("pub", "rr", "rr:1", "pub1")],
                         ["pub", "rr:1", "rr:1", "pub1"])
        self.assertEqual(interfaces.pick("pub").address, "127.0.0.1")
        self.assertEqual(config.unimplemented, (
            "measure-rtp", "mos", "io-uring", "nftables-family", "codec-chain-runners"))

    def test_aliasBeforeItsInterface(self):
        e = self.assertRaises(usage.UsageError, parse,
                              BASE[:1] + ["-i", "pub=pub1", "-i", "pub1/127.0.0.1", "-n", "1"])
        self.assertIn("'pub=pub1': no interface named 'pub1' before it", str(e))

    def test_interfaceSectionNeedsAddress(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[rtpengine]\ninterfaces-config = if\nlisten-ng = 2223\n"
                    "[if-a]\nadvertised = 192.0.2.1\n")
        e = self.assertRaises(usage.UsageError, parse, ["--config-file", path])
        self.assertIn("[if-a]: an interface section needs 'address' or 'alias'", str(e))
