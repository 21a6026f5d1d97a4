"""The validated configuration: a frozen ``Config`` and its value parsers.

``Config`` has one attribute per rtpengine option (``port-min`` ->
``config.port_min``), generated from :data:`omnirtp.config.options.OPTIONS`,
except:

* ``interfaces`` (tuple of :class:`InterfaceSpec`) replaces the raw
  ``interface`` strings;
* every ``listen-*`` option is a tuple of ``(host, port)``; ``PORT`` alone
  means all IPv4 addresses (host ``"0.0.0.0"``); hostnames are resolved once;
* ``config-file``/``config-section`` are the file actually read (None when
  none) and the section;
* ``unimplemented``: names of the options that were set (to a value other
  than the default) but that omnirtp does not act on yet, each once; the
  service logs one warning per name at startup;
* ``warnings``: other sentences for the startup log (unknown keys, the
  ``interfaces`` alias, ``table`` asking for kernel forwarding, ...).

Options that rtpengine leaves unset by default are ``None`` here.  Tests
build a ``Config(...)`` directly with keyword arguments; only
:func:`build_config` validates.
"""

import dataclasses
import ipaddress
import re
import socket

from omnirtp.errors import ConfigError
from omnirtp.config.options import (
    BY_NAME, COMMAND_LINE_ONLY, FLAG, FLOAT, INT, LIST, OPTIONS)

# rtpengine's literal startup errors
E_NO_INTERFACE = "Missing option --interface"
E_NO_LISTENER = ("Missing option --listen-tcp, --listen-udp, --listen-ng, "
                 "--listen-tcp-ng, --listen-http, or --listen-https")
E_BAD_INTERFACE = "Invalid interface specification"

LISTENERS = ("listen-tcp", "listen-udp", "listen-ng", "listen-tcp-ng",
             "listen-http", "listen-https")
ADDRESS_LISTS = LISTENERS + ("listen-cli",)

ALL_IPV4 = "0.0.0.0"

ENDPOINT_LEARNING = ("delayed", "immediate", "off", "heuristic")
RECORDING_FORMATS = ("raw", "eth")
RECORDING_METHODS = ("pcap", "proc")
LOG_FACILITIES = (
    "auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr", "mail", "news",
    "syslog", "user", "uucp", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7")

_REDIS = re.compile(r"^(?:[^@]*@)?(?:\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+):\d+/\d+$")
_UPPER_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_IFACE_NAME = re.compile(r"^[^\s/!]+$")


@dataclasses.dataclass(frozen=True)
class InterfaceSpec:
    """One ``--interface``: logical ``name``, local ``address`` (an IP
    literal, IPv4 or IPv6, no brackets) and the ``advertised`` address put
    into SDP (None: the local address is advertised)."""

    name: str
    address: str
    advertised: str | None = None

    def __str__(self):
        text = "{}/{}".format(self.name, self.address)
        if self.advertised is not None:
            text += "!" + self.advertised
        return text


def _config_fields():
    fields = []
    for option in OPTIONS:
        if option.name in COMMAND_LINE_ONLY or option.name == "interface":
            continue
        default = option.default
        if option.kind == LIST:
            default = tuple(default)
        fields.append((option.attr, object, dataclasses.field(default=default)))
    fields.extend([
        ("interfaces", tuple, dataclasses.field(default=())),
        ("config_file", object, dataclasses.field(default=None)),
        ("config_section", str, dataclasses.field(default="rtpengine")),
        ("unimplemented", tuple, dataclasses.field(default=())),
        ("warnings", tuple, dataclasses.field(default=())),
    ])
    return fields


Config = dataclasses.make_dataclass(
    "Config", _config_fields(), frozen=True)
Config.__module__ = __name__
Config.__doc__ = __doc__


def resolve_host(host):
    """Resolve ``host`` once; return the first address (IPv4 preferred)."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return infos[0][4][0]


def _is_ip(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_bool(raw, where):
    if raw is True or raw is False:
        return raw
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise ConfigError("{}: must be true or false (or 1 or 0)".format(where))


def parse_int(raw, where):
    try:
        return int(raw.strip(), 10)
    except ValueError:
        raise ConfigError("{}: must be an integer".format(where))


def parse_float(raw, where):
    try:
        return float(raw.strip())
    except ValueError:
        raise ConfigError("{}: must be a number".format(where))


def _address(text, resolve):
    """``text`` -> IP literal, or ValueError with the reason."""
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        if _is_ip(inner) and ":" in inner:
            return inner
        raise ValueError("{!r} is not an IPv6 address".format(text))
    if _is_ip(text):
        return text
    try:
        return resolve(text)
    except (OSError, UnicodeError) as e:
        raise ValueError("cannot resolve {!r} ({})".format(text, e))


def parse_address(text, where, resolve=resolve_host):
    """``ADDR`` -> an IP literal: IPv4, IPv6 (brackets removed) or a
    hostname resolved once."""
    try:
        return _address(text, resolve)
    except ValueError as e:
        raise ConfigError("{}: {}".format(where, e))


class InterfaceAlias:
    """``ALIAS=NAME`` (the current rtpengine): ``ALIAS`` is another name of
    the logical interface ``NAME``, given before it; see :func:`expand_aliases`."""

    def __init__(self, alias, target):
        self.alias = alias
        self.target = target


def expand_aliases(items, where):
    """:class:`InterfaceSpec` and :class:`InterfaceAlias` items -> specs
    only: an alias repeats each address of the interface it names, under
    its own name (so ``direction=ALIAS`` picks the same addresses)."""
    out = []
    for item in items:
        if isinstance(item, InterfaceAlias):
            same = [s for s in out if s.name == item.target]
            if not same:
                raise ConfigError("{}: {}: '{}={}': no interface named {!r} before it".format(
                    where, E_BAD_INTERFACE, item.alias, item.target, item.target))
            out.extend(InterfaceSpec(item.alias, s.address, s.advertised) for s in same)
        else:
            out.append(item)
    return tuple(out)


def parse_interface(text, where, resolve=resolve_host, variables=None):
    """``[NAME/]ADDR[!ADVERTISED]`` -> :class:`InterfaceSpec`; ``ALIAS=NAME``
    -> :class:`InterfaceAlias`.

    ``variables``: for an address written as a bare upper-case name that is
    a defined variable (``PRIVATE_IP``, as in the seed deployment's
    rtpengine.conf), the variable's value is used.
    """
    def fail(reason):
        raise ConfigError("{}: {}: '{}': {}".format(where, E_BAD_INTERFACE, text, reason))

    spec = text.strip()
    name = "default"
    if "=" in spec and "/" not in spec:
        alias, target = (part.strip() for part in spec.split("=", 1))
        for part in (alias, target):
            if not part or not _IFACE_NAME.match(part) or "=" in part:
                fail("bad interface name {!r}".format(part))
        return InterfaceAlias(alias, target)
    if "/" in spec:
        name, spec = spec.split("/", 1)
        if not _IFACE_NAME.match(name):
            fail("bad interface name {!r}".format(name))
    advertised = None
    if "!" in spec:
        spec, advertised = spec.split("!", 1)
        if not advertised:
            fail("empty advertised address")
    if not spec:
        fail("no address")

    def address(part):
        if variables and _UPPER_NAME.match(part) and part in variables:
            part = variables[part]
        try:
            return _address(part, resolve)
        except ValueError as e:
            fail(str(e))

    local = address(spec)
    if advertised is not None:
        advertised = address(advertised)
    return InterfaceSpec(name, local, advertised)


def parse_network(text):
    """``ADDRESS`` or ``ADDRESS/PREFIX`` (IPv4 or IPv6, brackets allowed)
    -> ``ipaddress`` network.  Host bits are cleared (``10.1.2.3/8`` is
    ``10.0.0.0/8``).  Raises ``ValueError`` with a sentence."""
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError("{!r}: unbalanced '['".format(text))
        text = text[1:close] + text[close + 1:]
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            "{!r} is not an IPv4 or IPv6 address or ADDRESS/PREFIX network".format(text)
        ) from None


def parse_listen(text, where, resolve=resolve_host):
    """``[HOST:]PORT`` / ``[IPv6]:PORT`` -> ``(host, port)``."""
    text = text.strip()

    def fail(reason):
        raise ConfigError("{}: '{}': {}".format(where, text, reason))

    if text.isdigit():
        host, port = ALL_IPV4, text
    elif text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1:close + 2] != ":":
            fail("expected [IPv6]:PORT")
        host, port = text[:close + 1], text[close + 2:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        fail("expected [ADDRESS:]PORT")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        fail("port must be a number from 0 to 65535")
    try:
        host = _address(host, resolve)
    except ValueError as e:
        fail(str(e))
    return (host, int(port))


def _convert(option, raw, where):
    if option.kind == FLAG:
        return parse_bool(raw, where)
    if option.kind == INT:
        return parse_int(raw, where)
    if option.kind == FLOAT:
        return parse_float(raw, where)
    if option.kind == LIST:
        return tuple(raw)
    return raw


def timer_value(name, value):
    """A timer option's value as the daemon takes it, from the config file
    or the CLI's ``set``: rtpengine replaces a ``timeout``,
    ``silent-timeout`` or ``offer-timeout`` of 0 or less by its default,
    and a negative ``final-timeout`` (none) by 0."""
    if name in ("timeout", "silent-timeout", "offer-timeout") and value <= 0:
        return BY_NAME[name].default
    if name == "final-timeout" and value < 0:
        return 0
    return value


def build_config(values, config_file=None, config_section="rtpengine",
                 warnings=(), resolve=resolve_host, variables=None):
    """Validate merged option values into a :class:`Config`.

    ``values`` maps option names to ``(raw, where)``: ``raw`` is a str, a
    tuple of str (list options) or True (a flag on the command line);
    ``where`` names the value in error messages ("FILE: [section] key =
    value" or "command line: --key=value").  Raises ``ConfigError``.
    """
    by_name = {o.name: o for o in OPTIONS}
    warnings = list(warnings)
    kwargs = {}
    unimplemented = []
    where_of = {}
    for name, (raw, where) in values.items():
        option = by_name[name]
        value = _convert(option, raw, where)
        where_of[name] = where
        if name == "interface":
            continue
        if not option.implemented and value != option.default:
            unimplemented.append(name)
        if name in ADDRESS_LISTS:
            value = tuple(parse_listen(v, where, resolve) for v in value)
        kwargs[option.attr] = value

    def get(name):
        option = by_name[name]
        return kwargs.get(option.attr, option.default)

    def check(name, ok, rule):
        if not ok:
            raise ConfigError("{}: {}".format(where_of[name], rule))

    # interfaces
    specs = values.get("interface", ((), None))
    if not specs[0]:
        raise ConfigError(E_NO_INTERFACE)
    kwargs["interfaces"] = expand_aliases(tuple(
        parse_interface(s, specs[1], resolve, variables) for s in specs[0]), specs[1])

    if not any(get(name) for name in LISTENERS):
        raise ConfigError(E_NO_LISTENER)
    if get("listen-https") and not get("https-cert"):
        # rtpengine 10.5's words; it refuses to start too
        raise ConfigError("{}: HTTPS/WSS listener requested, but no certificate given "
                          "(https-cert)".format(where_of["listen-https"]))

    # media ports
    port_min, port_max = get("port-min"), get("port-max")
    for name in ("port-min", "port-max"):
        if name in where_of:
            check(name, 1 <= get(name) <= 65535, "must be from 1 to 65535")
    if port_min > port_max:
        where = where_of.get("port-min") or where_of["port-max"]
        raise ConfigError("{}: port-min ({}) must not be above port-max ({})".format(
            where, port_min, port_max))
    first_rtp = port_min + (port_min & 1)
    if first_rtp + 1 > port_max:
        where = where_of.get("port-min") or where_of["port-max"]
        raise ConfigError(
            "{}: port range {}-{} holds no even RTP port with its RTCP port "
            "(RTP port even, RTCP = RTP + 1)".format(where, port_min, port_max))
    if port_min & 1:
        warnings.append(
            "{}: port-min is odd; the first RTP/RTCP pair is {}/{}".format(
                where_of["port-min"], first_rtp, first_rtp + 1))

    for name in ("timeout", "silent-timeout", "offer-timeout", "final-timeout"):
        kwargs[by_name[name].attr] = timer_value(name, get(name))
    if get("max-sessions") < 0:
        kwargs["max_sessions"] = -1
    if "delete-delay" in where_of:
        check("delete-delay", get("delete-delay") >= 0, "must be 0 or more")
    if "num-threads" in where_of:
        check("num-threads", get("num-threads") >= 0, "must be 0 or more")
    if "log-level" in where_of:
        check("log-level", 0 <= get("log-level") <= 7, "must be from 0 to 7")
    for name in ("tos", "control-tos"):
        if get(name) is not None:
            check(name, 0 <= get(name) <= 255, "must be from 0 to 255")
    if "control-timeout" in where_of:
        check("control-timeout", get("control-timeout") > 0, "must be above 0")
    if "dtls-mtu" in where_of:
        check("dtls-mtu", get("dtls-mtu") >= 576, "must be 576 or more")

    # enumerations
    if "endpoint-learning" in where_of:
        kwargs["endpoint_learning"] = get("endpoint-learning").lower()
        check("endpoint-learning", get("endpoint-learning") in ENDPOINT_LEARNING,
              "must be one of " + ", ".join(ENDPOINT_LEARNING))
    if "recording-format" in where_of:
        check("recording-format", get("recording-format") in RECORDING_FORMATS,
              "must be one of " + ", ".join(RECORDING_FORMATS))
    if "recording-method" in where_of:
        check("recording-method", get("recording-method") in RECORDING_METHODS,
              "must be one of " + ", ".join(RECORDING_METHODS))
    for name in ("log-facility", "log-facility-cdr", "log-facility-rtcp",
                 "log-facility-dtmf"):
        if name in where_of:
            check(name, get(name) in LOG_FACILITIES,
                  "must be one of " + " ".join(LOG_FACILITIES))
    for name in ("redis", "redis-write"):
        if get(name) is not None:
            check(name, _REDIS.match(get(name)), "must be [PASSWORD@]HOST:PORT/DB")
    if get("redis-subscribe") is not None:
        check("redis-subscribe", _REDIS.match(get("redis-subscribe") + "/0")
              or _REDIS.match(get("redis-subscribe")), "must be [PASSWORD@]HOST:PORT[/DB]")
    if get("subscribe-keyspace"):
        from omnirtp.state.keyspace import parse_keyspaces
        try:
            parse_keyspaces(get("subscribe-keyspace"))
        except ValueError as e:
            raise ConfigError("{}: {}".format(where_of["subscribe-keyspace"], e))
        if not (get("redis") or get("redis-write")):
            warnings.append("subscribe-keyspace is ignored without redis")
    if get("active-switchover") and not (get("redis") or get("redis-write")):
        warnings.append("active-switchover is ignored without redis")

    if get("control-allow"):
        nets = []
        for text in get("control-allow"):
            try:
                nets.append(str(parse_network(text)))
            except ValueError as e:
                raise ConfigError("{}: {}".format(where_of["control-allow"], e))
        kwargs["control_allow"] = tuple(nets)

    kwargs["config_file"] = config_file
    kwargs["config_section"] = config_section
    kwargs["unimplemented"] = tuple(unimplemented)
    kwargs["warnings"] = tuple(warnings)
    return Config(**kwargs)
