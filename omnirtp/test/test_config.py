"""Tests for omnirtp.config: ini reading, ${VAR}/.env, validation."""

import dataclasses
import os

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.config import Config, InterfaceSpec, load
from omnirtp.config.ini import parse_config, parse_dotenv, substitute
from omnirtp.config.model import (
    E_NO_INTERFACE, E_NO_LISTENER, build_config, parse_interface, parse_listen)
from omnirtp.config.options import (
    UPSTREAM_OPTIONS,
    BY_NAME, BY_SHORT, COMMAND_LINE_ONLY, OPTIONS, OWN_OPTIONS)
from omnirtp.errors import ConfigError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "config")
SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "etc", "omnirtp.conf")

HOSTS = {"localhost": "127.0.0.1", "media.example": "192.0.2.7"}


def fakeResolve(host):
    try:
        return HOSTS[host]
    except KeyError:
        raise OSError("unknown host")


MINIMAL = {"interface": (("127.0.0.1",), "command line: --interface"),
           "listen-ng": (("2223",), "command line: --listen-ng")}


def build(extra=None, **kw):
    values = dict(MINIMAL)
    values.update(extra or {})
    return build_config(values, resolve=fakeResolve, **kw)


class OptionTableTests(SynchronousTestCase):
    def test_everyRtpengineOption(self):
        """The table holds rtpengine 10.5's 140 options (help/version aside),
        the 81 the current upstream rtpengine added, and omnirtp's own
        (control-allow, control-timeout), with unique names and short letters."""
        self.assertEqual(OWN_OPTIONS, frozenset({"control-allow", "control-timeout"}))
        upstream = {o.name for o in UPSTREAM_OPTIONS}
        self.assertEqual(len(upstream), 81)
        self.assertEqual(len([o for o in OPTIONS if o.name not in OWN_OPTIONS | upstream]), 140)
        self.assertEqual(len(BY_NAME), 223)
        for name in ("measure-rtp", "interfaces-config", "nftables-chain", "log-name",
                     "io-uring", "ng-client-timeout", "http-idle-timeout"):
            self.assertIn(name, upstream)
        self.assertEqual([o.short for o in UPSTREAM_OPTIONS if o.short], [])
        for name in ("interface", "listen-ng", "port-min", "port-max", "timeout",
                     "silent-timeout", "final-timeout", "offer-timeout",
                     "delete-delay", "log-level", "num-threads", "max-sessions",
                     "foreground", "pidfile", "config-file", "config-section",
                     "janus-secret", "mqtt-publish-scope", "log-level-dtx"):
            self.assertIn(name, BY_NAME)
        self.assertEqual(
            {s: BY_SHORT[s].name for s in "inmMLfospatFE"},
            {"i": "interface", "n": "listen-ng", "m": "port-min", "M": "port-max",
             "L": "log-level", "f": "foreground", "o": "timeout",
             "s": "silent-timeout", "p": "pidfile", "a": "final-timeout",
             "t": "table", "F": "no-fallback", "E": "log-stderr"})

    def test_configHasEveryOption(self):
        """Every option but --codecs is a Config field named with '_' for
        '-'; interface becomes interfaces."""
        fields = {f.name for f in dataclasses.fields(Config)}
        for option in OPTIONS:
            if option.name in ("codecs", "interface"):
                self.assertNotIn(option.attr, fields)
            else:
                self.assertIn(option.attr, fields)
        self.assertIn("interfaces", fields)

    def test_defaults(self):
        config = Config()
        self.assertEqual(
            (config.port_min, config.port_max, config.timeout, config.silent_timeout,
             config.offer_timeout, config.final_timeout, config.delete_delay,
             config.log_level, config.max_sessions, config.num_threads, config.table,
             config.interfaces, config.listen_ng, config.tos),
            (30000, 40000, 60, 3600, 3600, 0, 30, 6, -1, 0, -1, (), (), None))

    def test_frozen(self):
        config = Config()
        self.assertRaises(dataclasses.FrozenInstanceError,
                          setattr, config, "port_min", 2)

    def test_sampleDocumentsEveryOption(self):
        """etc/omnirtp.conf mentions every file option."""
        with open(SAMPLE) as f:
            text = f.read()
        for option in OPTIONS:
            if option.name not in COMMAND_LINE_ONLY:
                self.assertTrue("\n# {} =".format(option.name) in text
                                or "\n{} =".format(option.name) in text, option.name)


class DotenvTests(SynchronousTestCase):
    def test_syntax(self):
        data = (b"# comment\n\nA=1\nexport B = \"two words\"\nC='x#y'\n"
                b"D=plain # trailing\nE=\n")
        self.assertEqual(parse_dotenv(data, ".env"),
                         {"A": "1", "B": "two words", "C": "x#y", "D": "plain", "E": ""})

    def test_badLine(self):
        e = self.assertRaises(ConfigError, parse_dotenv, b"A=1\nnot a pair\n", "/x/.env")
        self.assertEqual(str(e), "/x/.env:2: expected NAME=VALUE, got 'not a pair'")

    def test_unterminatedQuote(self):
        e = self.assertRaises(ConfigError, parse_dotenv, b'A="open\n', "/x/.env")
        self.assertEqual(str(e), "/x/.env:1: unterminated quote in the value of A")


class SubstituteTests(SynchronousTestCase):
    def test_forms(self):
        self.assertEqual(
            substitute("${A}-$A-$$A-$-x$", {"A": "1"}, {}, "w"), "1-1-$A-$-x$")

    def test_environmentWinsOverDotenv(self):
        self.assertEqual(substitute("$A $B", {"A": "env"}, {"A": "file", "B": "b"}, "w"),
                         "env b")

    def test_undefined(self):
        e = self.assertRaises(ConfigError, substitute, "x${NOPE}", {}, {},
                              "/e/x.conf: [rtpengine] interface = x${NOPE}", "/e/.env")
        self.assertEqual(
            str(e), "/e/x.conf: [rtpengine] interface = x${NOPE}: undefined variable "
                    "NOPE (not in the environment or /e/.env)")

    def test_undefinedNoDotenv(self):
        e = self.assertRaises(ConfigError, substitute, "$NOPE", {}, {},
                              "command line: --interface")
        self.assertEqual(str(e), "command line: --interface: undefined variable NOPE "
                                 "(not in the environment)")

    def test_unterminated(self):
        e = self.assertRaises(ConfigError, substitute, "${A", {"A": "1"}, {}, "w")
        self.assertEqual(str(e), "w: unterminated or invalid ${...} in '${A'")


class ParseConfigTests(SynchronousTestCase):
    def parse(self, text, section="rtpengine", environ=None):
        return parse_config(text.encode("utf-8"), "/e/x.conf", section, environ or {})

    def test_values(self):
        parsed = self.parse(
            "# comment\n; also a comment\n[rtpengine]\ninterface = a/1.2.3.4 ; b/::1 \n"
            "  port-min = 30000   \nforeground = true\n[other]\nport-min = 1\n")
        self.assertEqual(parsed.values, {
            "interface": (("a/1.2.3.4", "b/::1"),
                          "/e/x.conf: [rtpengine] interface = a/1.2.3.4;b/::1"),
            "port-min": ("30000", "/e/x.conf: [rtpengine] port-min = 30000"),
            "foreground": ("true", "/e/x.conf: [rtpengine] foreground = true")})
        self.assertEqual(parsed.warnings, [])

    def test_otherSection(self):
        parsed = self.parse("[rtpengine]\ntimeout = 1\n[test]\ntimeout = 2\n", "test")
        self.assertEqual(parsed.values["timeout"][0], "2")

    def test_missingSection(self):
        e = self.assertRaises(ConfigError, self.parse, "[other]\ntimeout = 1\n")
        self.assertEqual(str(e), "/e/x.conf: no section [rtpengine]")

    def test_emptyFile(self):
        e = self.assertRaises(ConfigError, self.parse, "")
        self.assertEqual(str(e), "/e/x.conf: no section [rtpengine]")

    def test_headerless(self):
        """Keys before any header are read as the selected section."""
        parsed = self.parse("timeout = 5\n", "mine")
        self.assertEqual(parsed.values["timeout"][0], "5")
        self.assertEqual(parsed.warnings, [
            "/e/x.conf: keys before any [section] header are read as [mine]"])

    def test_unparsable(self):
        e = self.assertRaises(ConfigError, self.parse, "[rtpengine]\njust words\n")
        self.assertTrue(str(e).startswith("/e/x.conf: cannot parse: "), str(e))

    def test_unknownKeys(self):
        parsed = self.parse("[rtpengine]\nport_min = 1\nportmax = 2\nfrobnicate = 3\n"
                            "config-file = x\nTimeout = 4\n")
        self.assertEqual(parsed.values, {})
        self.assertEqual(parsed.warnings, [
            "/e/x.conf: [rtpengine] port_min: unknown option 'port_min' ignored; "
            "did you mean 'port-min'?",
            "/e/x.conf: [rtpengine] portmax: unknown option 'portmax' ignored; "
            "did you mean 'port-max'?",
            "/e/x.conf: [rtpengine] frobnicate: unknown option 'frobnicate' ignored",
            "/e/x.conf: [rtpengine] config-file: 'config-file' only works on the "
            "command line; ignored",
            "/e/x.conf: [rtpengine] Timeout: unknown option 'Timeout' ignored; "
            "did you mean 'timeout'?"])

    def test_interfacesAlias(self):
        parsed = self.parse("[rtpengine]\ninterfaces = 10.0.0.1;10.0.0.2\n")
        self.assertEqual(parsed.values["interface"][0], ("10.0.0.1", "10.0.0.2"))
        self.assertEqual(parsed.warnings, [
            "/e/x.conf: [rtpengine] interfaces: 'interfaces' is not an rtpengine key "
            "(rtpengine ignores it and then fails with 'Missing option --interface'); "
            "read as 'interface'"])

    def test_interfacesAliasWithInterface(self):
        parsed = self.parse("[rtpengine]\ninterfaces = 10.0.0.1\ninterface = 10.0.0.2\n")
        self.assertEqual(parsed.values["interface"][0], ("10.0.0.2",))
        self.assertEqual(parsed.warnings, [
            "/e/x.conf: [rtpengine] interfaces: 'interfaces' is not an rtpengine key "
            "and 'interface' is also set; 'interfaces' ignored"])

    def test_nearMissOfAlias(self):
        parsed = self.parse("[rtpengine]\ninterfacess = 10.0.0.1\n")
        self.assertEqual(parsed.warnings, [
            "/e/x.conf: [rtpengine] interfacess: unknown option 'interfacess' "
            "ignored; did you mean 'interface'?"])

    def test_variables(self):
        parsed = self.parse("[rtpengine]\nrecording-dir = /x/${A}/$B\n", environ={"A": "a", "B": "b"})
        self.assertEqual(parsed.values["recording-dir"][0], "/x/a/b")

    def test_undefinedVariable(self):
        e = self.assertRaises(ConfigError, self.parse, "[rtpengine]\ninterface = $IP\n")
        self.assertEqual(str(e), "/e/x.conf: [rtpengine] interface = $IP: undefined "
                                 "variable IP (not in the environment)")

    def test_notUtf8(self):
        e = self.assertRaises(ConfigError, parse_config, b"[rtpengine]\nx = \xff\n",
                              "/e/x.conf", "rtpengine", {})
        self.assertTrue(str(e).startswith("/e/x.conf: not UTF-8 text"), str(e))


class InterfaceTests(SynchronousTestCase):
    def parse(self, text, variables=None):
        return parse_interface(text, "W", fakeResolve, variables)

    def test_forms(self):
        self.assertEqual(self.parse("10.0.0.1"), InterfaceSpec("default", "10.0.0.1", None))
        self.assertEqual(self.parse("int/10.0.0.1"), InterfaceSpec("int", "10.0.0.1", None))
        self.assertEqual(self.parse("ext/10.0.0.1!203.0.113.1"),
                         InterfaceSpec("ext", "10.0.0.1", "203.0.113.1"))
        self.assertEqual(self.parse("2001:db8::1"), InterfaceSpec("default", "2001:db8::1"))
        self.assertEqual(self.parse("v6/[2001:db8::1]![2001:db8::2]"),
                         InterfaceSpec("v6", "2001:db8::1", "2001:db8::2"))
        self.assertEqual(self.parse("media.example!localhost"),
                         InterfaceSpec("default", "192.0.2.7", "127.0.0.1"))
        self.assertEqual(str(self.parse("ext/10.0.0.1!203.0.113.1")),
                         "ext/10.0.0.1!203.0.113.1")

    def test_bareVariable(self):
        self.assertEqual(self.parse("PRIVATE_IP!PUBLIC_IP",
                                    {"PRIVATE_IP": "10.0.0.1", "PUBLIC_IP": "203.0.113.1"}),
                         InterfaceSpec("default", "10.0.0.1", "203.0.113.1"))

    def test_errors(self):
        cases = {
            "nohost.invalid": "cannot resolve 'nohost.invalid' (unknown host)",
            "a b/1.2.3.4": "bad interface name 'a b'",
            "x/": "no address",
            "1.2.3.4!": "empty advertised address",
            "[1.2.3.4]": "'[1.2.3.4]' is not an IPv6 address",
            "PRIVATE_IP": "cannot resolve 'PRIVATE_IP' (unknown host)",
        }
        for text, reason in cases.items():
            e = self.assertRaises(ConfigError, self.parse, text)
            self.assertEqual(str(e), "W: Invalid interface specification: '{}': {}".format(
                text, reason))


class ListenTests(SynchronousTestCase):
    def test_forms(self):
        self.assertEqual(parse_listen("22222", "W"), ("0.0.0.0", 22222))
        self.assertEqual(parse_listen("127.0.0.1:2223", "W"), ("127.0.0.1", 2223))
        self.assertEqual(parse_listen("[::1]:2223", "W"), ("::1", 2223))
        self.assertEqual(parse_listen("localhost:0", "W", fakeResolve), ("127.0.0.1", 0))

    def test_errors(self):
        cases = {
            "::1:2223": "expected [ADDRESS:]PORT",
            "[::1]2223": "expected [IPv6]:PORT",
            "1.2.3.4:70000": "port must be a number from 0 to 65535",
            "1.2.3.4:x": "port must be a number from 0 to 65535",
            "nohost.invalid:1": "cannot resolve 'nohost.invalid' (unknown host)",
        }
        for text, reason in cases.items():
            e = self.assertRaises(ConfigError, parse_listen, text, "W", fakeResolve)
            self.assertEqual(str(e), "W: '{}': {}".format(text, reason))


class BuildConfigTests(SynchronousTestCase):
    def assertError(self, extra, message, base=None):
        values = dict(MINIMAL if base is None else base)
        values.update(extra)
        e = self.assertRaises(ConfigError, build_config, values, resolve=fakeResolve)
        self.assertEqual(str(e), message)

    def test_minimal(self):
        config = build()
        self.assertEqual(config.interfaces, (InterfaceSpec("default", "127.0.0.1"),))
        self.assertEqual(config.listen_ng, (("0.0.0.0", 2223),))
        self.assertEqual((config.unimplemented, config.warnings), ((), ()))

    def test_types(self):
        config = build({
            "port-min": ("2000", "w"), "foreground": ("true", "w"),
            "log-stderr": (True, "w"), "max-load": ("1.5", "w"),
            "endpoint-learning": ("Delayed", "w"), "tos": ("184", "w"),
            "listen-cli": (("[::1]:9900",), "w"),
        })
        self.assertEqual(
            (config.port_min, config.foreground, config.log_stderr, config.max_load,
             config.endpoint_learning, config.tos, config.listen_cli),
            (2000, True, True, 1.5, "delayed", 184, (("::1", 9900),)))

    def test_noInterface(self):
        self.assertError({"interface": ((), "w")}, E_NO_INTERFACE)
        self.assertEqual(E_NO_INTERFACE, "Missing option --interface")

    def test_noListener(self):
        self.assertError({"listen-ng": ((), "w"), "listen-cli": (("9900",), "w")},
                         E_NO_LISTENER)
        self.assertEqual(E_NO_LISTENER, "Missing option --listen-tcp, --listen-udp, "
                         "--listen-ng, --listen-tcp-ng, --listen-http, or --listen-https")

    def test_otherListenerIsEnough(self):
        config = build({"listen-ng": ((), "w"), "listen-http": (("8080",), "w")})
        self.assertEqual(config.listen_http, (("0.0.0.0", 8080),))

    def test_syntaxErrors(self):
        self.assertError({"timeout": ("abc", "F: [rtpengine] timeout = abc")},
                         "F: [rtpengine] timeout = abc: must be an integer")
        self.assertError({"max-load": ("x", "F: [rtpengine] max-load = x")},
                         "F: [rtpengine] max-load = x: must be a number")
        self.assertError({"foreground": ("yes", "F: [rtpengine] foreground = yes")},
                         "F: [rtpengine] foreground = yes: must be true or false (or 1 or 0)")

    def test_booleans(self):
        for raw, value in (("true", True), ("1", True), ("false", False), ("0", False)):
            self.assertIs(build({"sip-source": (raw, "w")}).sip_source, value)
        for raw in ("yes", "no", "True", "on", ""):
            self.assertRaises(ConfigError, build, {"sip-source": (raw, "w")})

    def test_portRules(self):
        self.assertError({"port-min": ("40001", "F: port-min = 40001")},
                         "F: port-min = 40001: port-min (40001) must not be above "
                         "port-max (40000)")
        self.assertError({"port-min": ("0", "F: port-min = 0")},
                         "F: port-min = 0: must be from 1 to 65535")
        self.assertError({"port-max": ("70000", "F: port-max = 70000")},
                         "F: port-max = 70000: must be from 1 to 65535")
        self.assertError({"port-min": ("3001", "A"), "port-max": ("3001", "B")},
                         "A: port range 3001-3001 holds no even RTP port with its RTCP "
                         "port (RTP port even, RTCP = RTP + 1)")

    def test_controlTimeout(self):
        self.assertEqual(build().control_timeout, 10.0)
        self.assertEqual(build({"control-timeout": ("2.5", "w")}).control_timeout, 2.5)

    def test_oddPortMin(self):
        config = build({"port-min": ("30001", "F: port-min = 30001")})
        self.assertEqual(config.port_min, 30001)
        self.assertEqual(config.warnings, (
            "F: port-min = 30001: port-min is odd; the first RTP/RTCP pair is 30002/30003",))

    def test_rangeRules(self):
        cases = [
            ("delete-delay", "-1", "must be 0 or more"),
            ("num-threads", "-1", "must be 0 or more"),
            ("log-level", "8", "must be from 0 to 7"),
            ("log-level", "-1", "must be from 0 to 7"),
            ("tos", "256", "must be from 0 to 255"),
            ("tos", "-1", "must be from 0 to 255"),
            ("control-tos", "300", "must be from 0 to 255"),
            ("dtls-mtu", "100", "must be 576 or more"),
            ("control-timeout", "0", "must be above 0"),
            ("recording-format", "pcap", "must be one of raw, eth"),
            ("recording-method", "all", "must be one of pcap, proc"),
            ("endpoint-learning", "never",
             "must be one of delayed, immediate, off, heuristic"),
            ("log-facility", "nope", "must be one of auth authpriv cron daemon ftp "
             "kern lpr mail news syslog user uucp local0 local1 local2 local3 local4 "
             "local5 local6 local7"),
            ("redis", "localhost", "must be [PASSWORD@]HOST:PORT/DB"),
        ]
        for name, raw, rule in cases:
            where = "F: [rtpengine] {} = {}".format(name, raw)
            self.assertError({name: (raw, where)}, "{}: {}".format(where, rule))

    def test_accepted(self):
        config = build({"log-level": ("0", "w"), "tos": ("0", "w"),
                        "delete-delay": ("0", "w"), "recording-format": ("eth", "w"),
                        "redis": ("pw@10.0.0.1:6379/2", "w"),
                        "log-facility": ("local3", "w")})
        self.assertEqual((config.log_level, config.tos, config.delete_delay,
                          config.recording_format),
                         (0, 0, 0, "eth"))

    def test_normalisedLikeRtpengine(self):
        config = build({"timeout": ("0", "w"), "silent-timeout": ("-1", "w"),
                        "offer-timeout": ("0", "w"), "final-timeout": ("-5", "w"),
                        "max-sessions": ("-7", "w")})
        self.assertEqual((config.timeout, config.silent_timeout, config.offer_timeout,
                          config.final_timeout, config.max_sessions),
                         (60, 3600, 3600, 0, -1))

    def test_httpsNeedsCertificate(self):
        """listen-https without https-cert: rtpengine 10.5's refusal."""
        self.assertError({"listen-https": (("127.0.0.1:9443",), "w")},
                         "w: HTTPS/WSS listener requested, but no certificate given "
                         "(https-cert)")
        config = build({"listen-https": (("127.0.0.1:9443",), "w"),
                        "https-cert": ("/e/cert.pem", "w2")})
        self.assertEqual(config.listen_https, (("127.0.0.1", 9443),))
        self.assertEqual(config.unimplemented, ())

    def test_unimplemented(self):
        config = build({"homer": ("127.0.0.1:9060", "w"), "no-fallback": ("true", "w"),
                        "dtls-passive": ("false", "w"), "redis-expires": ("86400", "w"),
                        "listen-udp": (("9900",), "w")})
        self.assertEqual(config.unimplemented, ("homer", "listen-udp"))
        self.assertEqual(config.homer, "127.0.0.1:9060")

    def test_activeSwitchover(self):
        """active-switchover is implemented (omnirtp.state.keyspace); it
        needs redis, as subscribe-keyspace does."""
        config = build({"active-switchover": ("true", "w"),
                        "redis": ("10.0.0.1:6379/2", "w")})
        self.assertEqual((config.active_switchover, config.unimplemented, config.warnings),
                         (True, (), ()))
        config = build({"active-switchover": ("true", "w")})
        self.assertEqual(config.warnings, ("active-switchover is ignored without redis",))

    def test_table(self):
        """table = N is kernel forwarding now (omnirtp.media.kernel): no warning."""
        config = build({"table": ("0", "F: [rtpengine] table = 0"),
                        "no-fallback": ("true", "w")})
        self.assertEqual((config.table, config.no_fallback, config.warnings), (0, True, ()))
        self.assertEqual(build({"table": ("-1", "w")}).table, -1)


class LoadTests(SynchronousTestCase):
    def write(self, text, name="omnirtp.conf", dotenv=None):
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        if dotenv is not None:
            with open(os.path.join(directory, ".env"), "w") as f:
                f.write(dotenv)
        return path

    def cli(self, **values):
        return {k.replace("_", "-"): (v, "command line: --" + k.replace("_", "-"))
                for k, v in values.items()}

    def test_noFile(self):
        config = load(self.cli(config_file="none", interface=("1.2.3.4",),
                               listen_ng=("2223",)),
                      environ={}, default_files=(self.write("[rtpengine]\ntimeout = 5\n"),))
        self.assertEqual((config.config_file, config.timeout), (None, 60))

    def test_defaultFiles(self):
        """The first existing default file is read; none existing is fine."""
        first = self.write("[rtpengine]\ninterface = 1.2.3.4\nlisten-ng = 1\n")
        missing = os.path.join(os.path.dirname(first), "missing.conf")
        config = load({}, environ={}, default_files=(missing, first))
        self.assertEqual(config.config_file, first)
        config = load(self.cli(interface=("1.2.3.4",), listen_ng=("2223",)), environ={},
                      default_files=(missing,))
        self.assertIsNone(config.config_file)

    def test_explicitMissingFile(self):
        e = self.assertRaises(ConfigError, load, self.cli(config_file="/nonexistent/x.conf"),
                              environ={}, default_files=())
        self.assertEqual(str(e), "/nonexistent/x.conf: cannot read: No such file or directory")

    def test_sectionMissing(self):
        path = self.write("[rtpengine]\ninterface = 1.2.3.4\n")
        e = self.assertRaises(ConfigError, load,
                              self.cli(config_file=path, config_section="other"),
                              environ={}, default_files=())
        self.assertEqual(str(e), "{}: no section [other]".format(path))

    def test_commandLineOverridesFile(self):
        path = self.write("[rtpengine]\ninterface = 1.2.3.4;5.6.7.8\nlisten-ng = 1\n"
                          "timeout = 5\nport-min = 2000\n")
        config = load(self.cli(config_file=path, interface=("9.9.9.9",), timeout="7"),
                      environ={}, default_files=())
        self.assertEqual(config.interfaces, (InterfaceSpec("default", "9.9.9.9"),))
        self.assertEqual((config.timeout, config.port_min, config.listen_ng),
                         (7, 2000, (("0.0.0.0", 1),)))

    def test_fileErrorNamesFileAndKey(self):
        path = self.write("[rtpengine]\ninterface = 1.2.3.4\nlisten-ng = 1\n"
                          "port-min = 40001\n")
        e = self.assertRaises(ConfigError, load, self.cli(config_file=path),
                              environ={}, default_files=())
        self.assertEqual(str(e), "{}: [rtpengine] port-min = 40001: port-min (40001) "
                                 "must not be above port-max (40000)".format(path))

    def test_varsFixture(self):
        """${VAR}/$VAR from .env next to the file; the environment wins."""
        path = os.path.join(FIXTURES, "vars", "omnirtp.conf")
        config = load(self.cli(config_file=path), environ={"PUBLIC_IP": "192.0.2.1"},
                      default_files=())
        self.assertEqual(config.interfaces, (
            InterfaceSpec("internal", "10.1.2.3"),
            InterfaceSpec("external", "10.1.2.3", "192.0.2.1")))
        self.assertEqual(config.listen_ng, (("127.0.0.1", 22222),))
        self.assertEqual((config.port_min, config.port_max, config.recording_dir),
                         (20000, 20999, "/var/spool/$dir"))
        self.assertEqual(config.unimplemented, ())

    def test_varsFixtureSection(self):
        path = os.path.join(FIXTURES, "vars", "omnirtp.conf")
        config = load(self.cli(config_file=path, config_section="rtpengine-testing"),
                      environ={}, default_files=())
        self.assertEqual((config.interfaces[0].address, config.log_level,
                          config.config_section),
                         ("127.0.0.2", 7, "rtpengine-testing"))

    def test_undefinedVariableInFile(self):
        path = self.write("[rtpengine]\ninterface = ${NOPE}\nlisten-ng = 1\n", dotenv="A=1\n")
        e = self.assertRaises(ConfigError, load, self.cli(config_file=path), environ={},
                              default_files=())
        dotenv = os.path.join(os.path.dirname(os.path.abspath(path)), ".env")
        self.assertEqual(str(e), "{}: [rtpengine] interface = ${{NOPE}}: undefined variable "
                                 "NOPE (not in the environment or {})".format(path, dotenv))

    def test_commandLineVariables(self):
        path = self.write("[rtpengine]\nlisten-ng = 1\n", dotenv="IP=10.0.0.5\n")
        config = load(self.cli(config_file=path, interface=("x/${IP}",)), environ={},
                      default_files=())
        self.assertEqual(config.interfaces, (InterfaceSpec("x", "10.0.0.5"),))

    def test_badDotenv(self):
        path = self.write("[rtpengine]\n", dotenv="oops\n")
        e = self.assertRaises(ConfigError, load, self.cli(config_file=path), environ={},
                              default_files=())
        self.assertIn(".env:1: expected NAME=VALUE, got 'oops'", str(e))

    def test_seedFixture(self):
        """The seed deployment's rtpengine.conf (no section header,
        `interfaces`, bare variable names) loads with its .env."""
        path = os.path.join(FIXTURES, "seed", "rtpengine.conf")
        config = load(self.cli(config_file=path), environ={}, default_files=())
        self.assertEqual(config.interfaces, (InterfaceSpec("default", "172.20.0.10"),
                                             InterfaceSpec("default", "203.0.113.1")))
        self.assertEqual(config.listen_ng, (("0.0.0.0", 22222),))
        self.assertEqual(
            (config.port_min, config.port_max, config.timeout, config.log_level,
             config.num_threads, config.unimplemented),
            (30000, 40000, 60, 6, 4, ()))
        self.assertEqual(len(config.warnings), 2)
        self.assertIn("keys before any [section] header", config.warnings[0])
        self.assertIn("'interfaces' is not an rtpengine key", config.warnings[1])

    def test_sample(self):
        """etc/omnirtp.conf loads cleanly with what its header promises."""
        config = load(self.cli(config_file=SAMPLE), environ={}, default_files=())
        self.assertEqual(config.interfaces, (InterfaceSpec("default", "127.0.0.1"),))
        self.assertEqual(config.listen_ng, (("127.0.0.1", 22222),))
        # the operator's listeners: loopback only, one port for both
        self.assertEqual((config.listen_cli, config.listen_http, config.listen_https),
                         ((("127.0.0.1", 9900),), (("127.0.0.1", 9900),), ()))
        self.assertEqual((config.port_min, config.port_max, config.num_threads,
                          config.log_level, config.warnings, config.unimplemented),
                         (30000, 40000, 0, 6, (), ()))
