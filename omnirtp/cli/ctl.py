"""omnirtp-ctl: rtpengine-ctl's client for omnirtp's (or rtpengine's) CLI.

Usage, as Debian's ``rtpengine-ctl``::

    omnirtp-ctl [-ip ADDRESS[:PORT]] [-port PORT] [--config-file FILE] COMMAND...

It connects over TCP (default 127.0.0.1:9900, or ``listen-cli`` from the
config file), sends the command as one line, prints the reply and exits 0.
The commands are the daemon's (``omnirtp-ctl help``); these words of the
seed deployment's instructions are also understood and sent as the
rtpengine command shown:

=================  =========================
``list``           ``list sessions all``
``list ID``        ``list sessions ID``
``query``          ``list totals``
``query ID``       ``list sessions ID``
``delete ID``      ``terminate ID``
=================  =========================

(``list`` followed by one of rtpengine's own ``list`` words, such as
``list numsessions``, is sent unchanged.)
"""

import configparser
import os
import socket
import sys

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9900
CONFIG_FILES = ("/etc/omnirtp/omnirtp.conf", "/etc/rtpengine/rtpengine.conf")
TIMEOUT = 10.0

#: rtpengine's ``list`` words (10.5), kept as they are
LIST_WORDS = frozenset((
    "help", "numsessions", "sessions", "totals", "counters", "maxopenfiles",
    "maxsessions", "maxcpu", "maxload", "maxbw", "timeout", "silenttimeout",
    "offertimeout", "finaltimeout", "loglevels", "loglevel", "redisallowederrors",
    "redisdisabletime", "redisconnecttimeout", "rediscmdtimeout", "controltos",
    "deletedelay", "interfaces", "jsonstats", "transcoders",
))

USAGE = """\
usage: omnirtp-ctl [-ip ADDRESS[:PORT]] [-port PORT] [--config-file FILE] COMMAND...

  list numsessions | sessions all|own|foreign|CALL-ID | totals | jsonstats
       maxsessions | timeout | silenttimeout | offertimeout | finaltimeout
       deletedelay | interfaces | loglevels | loglevel [SUBSYSTEM] | transcoders
       maxopenfiles | redisallowederrors
  get ...                      the same as list
  terminate all | own | CALL-ID
                               end calls now
  terminate foreign            drop every foreign call (deleted from its owner's redis too)
  call CALL-ID info | terminate | debug [on|off] | tag TAG info
                               one call: details, end it, debug logging, one tag's details
  debug CALL-ID [on|off]       log the call's events at debug level
  set maxsessions N | loglevel [SUBSYSTEM] N | maxopenfiles N | redisallowederrors N
  active                       every foreign call becomes ours (keepalived notify_master)
  standby                      every own call becomes foreign, kept in our redis
                               database for the instance that takes it (notify_backup)
  ksadd N | ksrm N             follow redis database N's calls / stop, dropping them
  kslist                       the databases followed (subscribe-keyspace, ksadd)
  help                         the daemon's own list of commands

  list | list CALL-ID | query | query CALL-ID | delete CALL-ID
                               the seed deployment's words (see omnirtp.cli.ctl)

Default address: listen-cli from the config file (/etc/omnirtp/omnirtp.conf,
else /etc/rtpengine/rtpengine.conf), else 127.0.0.1:9900.
"""


class UsageError(Exception):
    pass


def translate(words):
    """The seed's words -> rtpengine's command line (a str)."""
    if not words:
        return ""
    verb, rest = words[0], words[1:]
    if verb == "list":
        if not rest:
            return "list sessions all"
        if rest[0] not in LIST_WORDS:
            return "list sessions " + " ".join(rest)
    elif verb == "query":
        return "list sessions " + " ".join(rest) if rest else "list totals"
    elif verb == "delete" and rest:
        return "terminate " + " ".join(rest)
    return " ".join(words)


def _listen_cli_from(path):
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            parser.read_file(f)
    except (OSError, configparser.Error):
        return None
    for section in ("rtpengine",):
        if parser.has_option(section, "listen-cli"):
            value = parser.get(section, "listen-cli").split(";")[0].strip()
            return value or None
    return None


def _split(address):
    """``HOST``, ``HOST:PORT``, ``[V6]:PORT``, ``PORT`` -> (host or None, port or None)."""
    if address.isdigit():
        return None, int(address)
    if address.startswith("["):
        host, _, tail = address[1:].partition("]")
        return host, (int(tail[1:]) if tail.startswith(":") and tail[1:].isdigit() else None)
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, (int(port) if port.isdigit() else None)
    return address, None


def parse_args(argv, config_files=CONFIG_FILES):
    """``(host, port, line)`` from the command line; raises UsageError."""
    ip = port = config = None
    args = list(argv)
    while args and args[0].startswith("-") and args[0] != "-":
        arg = args.pop(0)
        name, eq, value = arg.lstrip("-").partition("=")
        if name in ("h", "help"):
            raise UsageError("")
        if name not in ("ip", "port", "config-file"):
            raise UsageError("unknown option " + arg)
        if not eq:
            if not args:
                raise UsageError("option %s needs a value" % arg)
            value = args.pop(0)
        if name == "ip":
            ip = value
        elif name == "port":
            if not value.isdigit():
                raise UsageError("-port needs a number")
            port = int(value)
        else:
            config = value
    line = translate(args)
    if not line.strip():
        raise UsageError("")
    host, ip_port = (None, None)
    if ip is not None:
        host, ip_port = _split(ip)
    if host is None or (port is None and ip_port is None):
        for path in ([config] if config else config_files):
            listen = _listen_cli_from(path) if path and os.path.isfile(path) else None
            if listen:
                c_host, c_port = _split(listen)
                host = host or c_host
                if port is None and ip_port is None:
                    port = c_port
                break
    port = port if port is not None else ip_port
    host = host or DEFAULT_HOST
    if host in ("0.0.0.0", ""):
        host = DEFAULT_HOST
    elif host == "::":
        host = "::1"
    port = DEFAULT_PORT if port is None else port
    if not 0 < port <= 65535:
        raise UsageError("port %d is out of range" % port)
    return host, port, line


def request(host, port, line, timeout=TIMEOUT):
    """Send one command line, return the whole reply (bytes)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(line.encode("utf-8", "surrogateescape") + b"\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def main(argv=None, stdout=None, stderr=None):
    argv = sys.argv[1:] if argv is None else argv
    stdout = stdout or sys.stdout.buffer
    stderr = stderr or sys.stderr
    try:
        host, port, line = parse_args(argv)
    except UsageError as e:
        if str(e):
            stderr.write("omnirtp-ctl: %s\n" % e)
        stderr.write(USAGE)
        return 0 if argv and argv[0] in ("-h", "--help", "-help") else 1
    try:
        reply = request(host, port, line)
    except OSError as e:
        stderr.write("omnirtp-ctl: cannot talk to %s port %d: %s\n" % (host, port, e))
        return 1
    stdout.write(reply)
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
