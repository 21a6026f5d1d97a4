"""rtpengine's CLI commands: one command line in, the reply text out.

``CliCommands(operations).run(line)`` returns a Deferred firing with the
reply text, in rtpengine 10.5's words and layout (Debian's ``rtpengine-ctl``
prints it unchanged).  The texts were taken from the live rtpengine 10.5
(``--listen-cli``) with calls set up on it; lines for figures that omnirtp
does not have (SSRCs, MOS, graphite intervals, per-second rates beyond what ``statistics``
carries) are left out, not invented, except where rtpengine's own layout
needs a column.  Where omnirtp differs on purpose, docs/compat.md says so.

Commands (``get`` is ``list``)::

    list numsessions | sessions all|own|foreign|<call-id> | totals | counters | jsonstats
         maxopenfiles | redisallowederrors | redisdisabletime | redisconnecttimeout
         rediscmdtimeout | controltos | transcoders
         maxsessions | maxcpu | maxload | maxbw | timeout | silenttimeout | offertimeout | finaltimeout
         deletedelay | interfaces | loglevels | loglevel [<subsystem>]
    terminate all|own|foreign|<call-id>
    debug <call-id> [on|enable|off|disable]
    call <call-id> info | terminate | debug [on|off] | tag <tag> info
    params start | current | diff | revert
    ksadd <db> | ksrm <db> | kslist (the Redis databases followed)
    active (every foreign call becomes ours), standby (every own call foreign)
    set maxsessions <int> | loglevel <int> | loglevel <subsystem> <int> | maxopenfiles <int>
        redisallowederrors <int>
        maxcpu <percent> | maxload <load average> | maxbw <bytes per second>
        redisdisabletime <s> | redisconnecttimeout | rediscmdtimeout <ms> | controltos <0-255>
        timeout | silenttimeout | offertimeout | finaltimeout <uint> | deletedelay <int>
    help, list help, set help
"""

import json
import os
import re

from twisted.internet import defer
from twisted.logger import Logger

from omnirtp.control.operations import SUBSYSTEMS

UNKNOWN = "Unknown or incomplete command::%s\n"
MORE = "More parameters required.\n"

_LEADING_INT = re.compile(r"\s*(-?\d+)")
# a keyspace number as C's strtoul reads it (rtpengine's ksadd / ksrm)
_ULONG = re.compile(r"\s*([-+]?)(\d+)")
ULONG_MAX = 2 ** 64 - 1
_ATOI = re.compile(r"\s*([-+]?\d+)")

LIST_COMMANDS = (
    "numsessions", "sessions", "totals", "counters", "maxopenfiles", "maxsessions", "maxcpu",
    "maxload", "maxbw", "timeout", "silenttimeout", "offertimeout", "finaltimeout", "loglevels",
    "loglevel", "redisallowederrors", "redisdisabletime", "redisconnecttimeout",
    "rediscmdtimeout", "controltos", "deletedelay", "interfaces", "jsonstats", "transcoders",
)
SET_COMMANDS = ("maxopenfiles", "maxsessions", "maxcpu", "maxload", "maxbw", "timeout",
                "silenttimeout", "offertimeout", "finaltimeout", "loglevel",
                "redisallowederrors", "redisdisabletime", "redisconnecttimeout",
                "rediscmdtimeout", "controltos", "deletedelay")
#: ``set maxopenfiles``: rtpengine 10.5 refuses less (a daemon that could
#: not open its sockets would stall)
MIN_OPEN_FILES = 1 << 16
UINT_MAX = 2 ** 32 - 1
INT_MAX = 2 ** 31 - 1
ERANGE = 34
TOP_COMMANDS = ("list", "terminate", "set", "get", "params", "ksadd", "ksrm", "kslist",
                "active", "standby", "debug", "call")
#: ``call <call-id> ...`` and ``call <call-id> tag <tag> ...`` (rtpengine
#: 10.5's tag level also has ``delay`` and ``detect-dtmf``: not here)
CALL_COMMANDS = ("info", "terminate", "debug", "tag")
TAG_COMMANDS = ("info",)
PARAMS_COMMANDS = ("start", "current", "diff", "revert")

# the control-statistics table of ``list totals``: rtpengine's column
# titles and the ng command each one counts
PROXY_COLUMNS = (
    ("Ping", "ping"), ("Offer", "offer"), ("Answer", "answer"), ("Delete", "delete"),
    ("Query", "query"), ("List", "list"), ("StartRec", None), ("StopRec", None),
    ("StartFwd", None), ("StopFwd", None), ("BlkDTMF", None), ("UnblkDTMF", None),
    ("BlkMedia", None), ("UnblkMedia", None), ("PlayMedia", None), ("StopMedia", None),
    ("PlayDTMF", None), ("Stats", "stats"), ("SlnMedia", None), ("UnslnMedia", None),
    ("Pub", None), ("SubReq", None), ("SubAns", None), ("Unsub", None),
)


def _help(names):
    return "Available sub-commands at this level:\n" + "".join("\t%s\n" % n for n in names)


def _int(value, default=0):
    """A statistics figure as int (some are sent as decimal strings)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _num(value):
    """A duration figure as rtpengine prints it (6 decimals)."""
    try:
        return "%.6f" % float(value)
    except (TypeError, ValueError):
        return "0.000000"


def _stat_line(label, value):
    return " %-48s:%s\n" % (label, value)


def _endpoint(ep):
    ep = ep or {}
    return "%15s:%-5d" % (ep.get("address", ""), _int(ep.get("port", 0)))


def session_line(call, foreign=False, keyspace=0):
    """One call in ``list sessions all`` (``keyspace``: the Redis database
    it is kept in)."""
    return ("callid: %60s | deletionmark:%4s | created:%12d | proxy:%s | "
            "redis_keyspace:%d | foreign:%s\n" % (
                call.call_id, "yes" if call.deletion_at is not None else "no",
                int(call.created), _proxy(call), keyspace, "yes" if foreign else "no"))


def _proxy(call):
    source = getattr(call, "created_from", None)
    if isinstance(source, (tuple, list)) and len(source) >= 2:
        return "%s:%s" % (source[0], source[1])
    return source or ""


def _peer_protocol(ml, index):
    """A side that has not answered yet has no protocol of its own; rtpengine
    shows the one offered to it."""
    peer = ml.peer.media(index) if ml.peer is not None else None
    return (peer.protocol if peer is not None else None) or ""


def media_streams(stats, calls):
    """Media streams of current calls (the kernel-only and mixed ones of
    ``statistics`` are taken off for the userspace-only line): the media
    of answered calls (rtpengine 10.5 shows 4 for two answered calls and
    one offered, not 6)."""
    return sum(1 for call in calls if call.answered
               for _, m in call.all_medias() if m.has_ports)


def _tag_type(call, ml):
    if not ml.tagged:
        return "UNKNOWN"
    first = next((m for m in call.monologues if m is ml or m is ml.peer), ml)
    return "FROM_TAG" if first is ml else "TO_TAG"


def session_detail(call, tree, now, default_tos=0, keyspace=0, foreign=False):
    """``list sessions <call-id>``: the call, then per tag its subscriptions,
    media and streams with the engine's counters (``tree`` is the
    Dispatcher's ``call_tree`` of the call)."""
    tos = call.tos if getattr(call, "tos", None) is not None else default_tos
    out = ["\n",
           "callid: %s\n" % call.call_id,
           "deletionmark: %s\n" % ("yes" if call.deletion_at is not None else "no"),
           "created: %d\n" % int(call.created),
           "proxy: %s\n" % _proxy(call),
           "tos: %d\n" % tos,
           "last_signal: %d\n" % int(call.last_signal),
           "redis_keyspace: %d\n" % keyspace,
           "foreign: %s\n" % ("yes" if foreign else "no"),
           "\n"]
    entries = list(tree.get("tags", {}).values())
    for ml, entry in zip(call.monologues, entries):
        out.append(tag_detail(call, ml, entry, now))
    out.append("\n")
    return "".join(out)


def tag_detail(call, ml, entry, now):
    """One tag's lines of ``list sessions <call-id>`` (also ``call <id>
    tag <tag> info``): its subscriptions, media and streams, ``entry``
    being the tag's part of the call's ``call_tree``."""
    out = ["--- Tag '%s', type: %s, label '%s', branch '%s', callduration %.6f\n" % (
        ml.tag or "", _tag_type(call, ml), ml.label or "", ml.via_branch or "",
        now - ml.created)]
    if ml.peer is not None:
        out.append("---     subscribed to '%s'\n" % (ml.peer.tag or ""))
    for other in call.monologues:
        if other.peer is ml:
            out.append("---     subscription of '%s'\n" % (other.tag or ""))
    for media in entry.get("medias", ()):
        index = media.get("index", 0)
        protocol = media.get("protocol") or _peer_protocol(ml, index)
        # the payload type with the most packets ("codec"), as 10.5 names it
        out.append("------ Media #%d (%s over %s) using %s\n" % (
            index, media.get("type", ""), protocol, media.get("codec") or "unknown codec"))
        for stream in media.get("streams", ()):
            stats = stream.get("stats", {})
            flags = stream.get("flags", ())
            if "fallback RTCP" in flags:
                continue  # (an rtcp-mux medium's RTCP stream: 10.5 leaves it out)
            rtcp = " (RTCP)" if "RTCP" in flags else ""
            out.append("-------- Port %15s:%-5d <> %s%s, SSRC %x, %d p, %d b, %d e, %d ts\n" % (
                stream.get("local address", ""), _int(stream.get("local port")),
                _endpoint(stream.get("endpoint")), rtcp, _int(stream.get("SSRC")),
                _int(stats.get("packets")), _int(stats.get("bytes")),
                _int(stats.get("errors")),
                # no packet yet: rtpengine shows the call's last signal
                _int(stream.get("last packet")) or int(call.last_signal)))
    return "".join(out)


def numsessions(stats, families):
    cur = stats.get("currentstatistics", {})
    v4, v6, mixed = families
    return ("Current sessions own: %d\n"
            "Current sessions foreign: %d\n"
            "Current sessions total: %d\n"
            "Current transcoded media: %d\n"
            "Current sessions ipv4 only media: %d\n"
            "Current sessions ipv6 only media: %d\n"
            "Current sessions ip mixed  media: %d\n" % (
                _int(cur.get("sessionsown")), _int(cur.get("sessionsforeign")),
                _int(cur.get("sessionstotal")), _int(cur.get("transcodedmedia")),
                v4, v6, mixed))


def _rates(cur):
    """The nine per-second lines (label, value) of ``list totals`` and
    ``list counters`` from the ``statistics`` reply's current figures."""
    rate = (_int(cur.get("packetrate")), _int(cur.get("byterate")),
            _int(cur.get("errorrate")))
    kernel = (_int(cur.get("packetrate_kernel")), _int(cur.get("byterate_kernel")),
              _int(cur.get("errorrate_kernel")))
    return [("Packets per second (userspace)", rate[0] - kernel[0]),
            ("Bytes per second (userspace)", rate[1] - kernel[1]),
            ("Errors per second (userspace)", rate[2] - kernel[2]),
            ("Packets per second (kernel)", kernel[0]),
            ("Bytes per second (kernel)", kernel[1]),
            ("Errors per second (kernel)", kernel[2]),
            ("Packets per second (total)", rate[0]),
            ("Bytes per second (total)", rate[1]),
            ("Errors per second (total)", rate[2])]


def params_dump(config, settings, start):
    """``params start`` / ``params current``: ``settings`` (the run-time
    ones, ``Operations.settings``) and the rest of ``config``, in rtpengine
    10.5's order, names and formats; options omnirtp does not have are left
    out (10.5 prints homer, graphite, XMLRPC ... here)."""
    s = settings
    lines = ["%s = %d" % (key, s[key]) for key in s if key.startswith("log-level-")]
    lines += ["table = %d" % config.table]
    lines += ["%s = %d" % (key, s[key]) for key in (
        "max-sessions", "timeout", "silent-timeout", "final-timeout", "offer-timeout",
        "delete-delay")]
    lines += ["redis-expires = %d" % (config.redis_expires or 0),
              "tos = %d" % (config.tos or 0), "control-tos = %d" % s["control-tos"],
              "no-fallback = %d" % bool(config.no_fallback),
              "port-min = %d" % config.port_min, "port-max = %d" % config.port_max]
    for key in ("redis", "redis-write"):
        value = getattr(config, key.replace("-", "_"))
        if value:
            lines.append("%s = %s" % (key, value.rsplit("@", 1)[-1]))  # no password
    lines += ["no-redis-required = %d" % bool(config.no_redis_required),
              "num-threads = %d" % config.num_threads]
    lines += ["%s = %d" % (key, s[key]) for key in (
        "redis_allowed_errors", "redis_disable_time", "redis_cmd_timeout",
        "redis_connect_timeout")]
    lines += ["max-cpu = %.1f" % (s["max-cpu"] / 100.0),
              "max-load = %.2f" % (s["max-load"] / 100.0),
              "%s = %d" % ("max-bandwidth" if start else "max-bw", s["max-bw"])]
    lines += ["interface[%d] = %s\\%s " % (i, spec.name, spec.address)
              for i, spec in enumerate(config.interfaces)]
    lines += ["recording-dir = %s" % (config.recording_dir or "(null)"),
              "recording-method = %s" % (config.recording_method or "(null)"),
              "recording-format = %s" % (config.recording_format or "(null)")]
    for key, addresses in (("listen-ng", config.listen_ng), ("listen-cli", config.listen_cli)):
        lines += ["%s = %s" % (key, _listen_address(host, port)) for host, port in addresses]
    return "".join(line + "\n" for line in lines)


def _listen_address(host, port):
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def counters(stats):
    """``list counters``: the per-second rates."""
    return "\nCurrent per-second counters:\n\n" + "".join(
        _stat_line(label, value) for label, value in _rates(stats.get("currentstatistics", {})))


def totals(stats, media_streams):
    """``list totals``: current and total statistics and the per-proxy
    control table, for the figures omnirtp keeps."""
    cur = stats.get("currentstatistics", {})
    tot = stats.get("totalstatistics", {})
    control = stats.get("controlstatistics", {})
    packets, errors, octets = (_int(tot.get("relayedpackets")),
                               _int(tot.get("relayedpacketerrors")),
                               _int(tot.get("relayedbytes")))
    # of those, forwarded by the kernel (table = N)
    kernel = (_int(tot.get("relayedpackets_kernel")), _int(tot.get("relayedpacketerrors_kernel")),
              _int(tot.get("relayedbytes_kernel")))
    media_kernel, media_mixed = _int(cur.get("media_kernel")), _int(cur.get("media_mixed"))
    lines = ["\nStatistics over currently running sessions:\n\n"]
    for label, value in (
            ("Owned sessions", _int(cur.get("sessionsown"))),
            ("Foreign sessions", _int(cur.get("sessionsforeign"))),
            ("Total sessions", _int(cur.get("sessionstotal"))),
            ("Transcoded media", _int(cur.get("transcodedmedia"))),
            *_rates(cur),
            ("Userspace-only media streams", max(0, media_streams - media_kernel - media_mixed)),
            ("Kernel-only media streams", media_kernel),
            ("Mixed kernel/userspace media streams", media_mixed)):
        lines.append(_stat_line(label, value))
    lines.append("\nTotal statistics (does not include current running sessions):\n\n")
    for label, value in (
            ("Uptime of rtpengine", "%d seconds" % _int(tot.get("uptime"))),
            ("Total managed sessions", _int(tot.get("managedsessions"))),
            ("Total rejected sessions", _int(tot.get("rejectedsessions"))),
            ("Total timed-out sessions via TIMEOUT", _int(tot.get("timeoutsessions"))),
            ("Total timed-out sessions via SILENT_TIMEOUT",
             _int(tot.get("silenttimeoutsessions"))),
            ("Total timed-out sessions via FINAL_TIMEOUT",
             _int(tot.get("finaltimeoutsessions"))),
            ("Total timed-out sessions via OFFER_TIMEOUT",
             _int(tot.get("offertimeoutsessions"))),
            ("Total regular terminated sessions", _int(tot.get("regularterminatedsessions"))),
            ("Total forced terminated sessions", _int(tot.get("forcedterminatedsessions"))),
            ("Total relayed packets (userspace)", packets - kernel[0]),
            ("Total relayed packet errors (userspace)", errors - kernel[1]),
            ("Total relayed bytes (userspace)", octets - kernel[2]),
            ("Total relayed packets (kernel)", kernel[0]),
            ("Total relayed packet errors (kernel)", kernel[1]),
            ("Total relayed bytes (kernel)", kernel[2]),
            ("Total relayed packets", packets),
            ("Total relayed packet errors", errors),
            ("Total relayed bytes", octets),
            ("Average call duration", _num(tot.get("avgcallduration")) + " seconds"),
            ("Total calls duration", _num(tot.get("totalcallsduration")) + " seconds")):
        lines.append(_stat_line(label, value))
    proxies = control.get("proxies")
    if isinstance(proxies, list):
        lines.append("\n\nControl statistics:\n\n")
        lines.append("%21s" % "Proxy" + "".join(" | %10s" % t for t, _ in PROXY_COLUMNS)
                     + " \n")
        for proxy in proxies:
            lines.append("%21s" % proxy.get("proxy", "") + "".join(
                " | %10d" % (_int(proxy.get(key + "count")) if key else 0)
                for _, key in PROXY_COLUMNS) + " \n")
    lines.append("\n")
    return "".join(lines)


def interfaces(entries):
    out = []
    for e in entries:
        pct = 100.0 * e["used"] / e["total"] if e["total"] else 0.0
        out.append("Interface '%s' address '%s' (%s)\n" % (e["name"], e["address"], e["family"]))
        out.append(" Port range: %5d - %5d\n" % (e["port_min"], e["port_max"]))
        out.append(" Ports used: %5d / %5d (%5.1f%%)\n" % (e["used"], e["total"], pct))
    return "".join(out)


class CliCommands:
    """Parses one CLI line and answers it from an ``Operations``."""

    log = Logger()

    def __init__(self, operations):
        self.ops = operations

    def run(self, line):
        """The reply text for one command line (a Deferred); never fails:
        an unexpected error becomes a one-line reply and a log entry."""
        d = defer.maybeDeferred(self._run, line)

        def failed(failure):
            self.log.failure("CLI command {line!r} failed", failure, line=line)
            return "Internal error: %s\n" % failure.getErrorMessage()

        return d.addErrback(failed)

    def _run(self, line):
        line = line.strip()
        words = line.split(None, 1)
        if not words:
            return UNKNOWN % line
        verb, rest = words[0], (words[1] if len(words) > 1 else "")
        if verb == "help":
            return _help(TOP_COMMANDS)
        if verb in ("list", "get"):
            return self._list(line, rest)
        if verb == "terminate":
            return self._terminate(rest)
        if verb == "set":
            return self._set(line, rest)
        if verb == "params":
            return self._params(line, rest)
        # as rtpengine, these four take no argument and ignore any
        if verb == "active":
            # every foreign call becomes ours (keepalived's notify_master)
            return self.ops.take_over().addCallback(
                lambda _: "Ok, all calls set to 'owned (active)'\n")
        if verb == "standby":
            # every own call becomes foreign (keepalived's notify_backup)
            return self.ops.standby().addCallback(
                lambda _: "Ok, all calls set to 'foreign (standby)'\n")
        if verb == "kslist":
            return ("\nSubscribed-on keyspaces:\n"
                    + "".join("%d " % db for db in self.ops.keyspaces()) + "\n")
        if verb in ("ksadd", "ksrm"):
            return self._keyspace(verb, rest)
        if verb == "debug":
            return self._debug(rest)
        if verb == "call":
            return self._call(rest)
        return UNKNOWN % line

    # -- debug, call -------------------------------------------------------

    #: ``debug``'s flag words: on (none, ``on``, ``enable``) or off
    _DEBUG_FLAGS = {"": True, "on": True, "enable": True, "off": False, "disable": False}

    def _debug_flag(self, call, flag):
        """Per-call debugging on or off (:data:`_DEBUG_FLAGS`): the call's
        log events pass at debug level whatever the levels
        (``LogLevels.debug_calls``)."""
        on = self._DEBUG_FLAGS.get(flag)
        if on is None:
            return "Invalid on/off flag ('%s') specified\n" % flag
        self.ops.set_call_debug(call, on)
        return "%s debugging for call '%s'\n" % ("Enabled" if on else "Disabled", call.call_id)

    def _debug(self, rest):
        """``debug <call-id> [on|off]``, in rtpengine 10.5's words."""
        words = rest.split(None, 1)
        if not words:
            return "No call ID specified\n"
        call = self.ops.call(words[0])
        flag = words[1] if len(words) > 1 else ""
        if flag not in self._DEBUG_FLAGS:  # (10.5 reads the flag before the call)
            return "Invalid on/off flag ('%s') specified\n" % flag
        if call is None:
            return "Call ID '%s' not found\n" % words[0]
        return self._debug_flag(call, flag)

    def _call(self, rest):
        """``call <call-id> info|terminate|debug [on|off]|tag <tag> ...``
        (an own call), in rtpengine 10.5's words."""
        words = rest.split(None, 1)
        if not words:
            return MORE
        call = self.ops.call(words[0])
        if call is None:
            return "No such call '%s'\n" % words[0]
        rest = words[1] if len(words) > 1 else ""
        words = rest.split(None, 1)
        sub, arg = (words[0], words[1] if len(words) > 1 else "") if words else ("", "")
        ops = self.ops
        if sub == "help":
            return _help(CALL_COMMANDS)
        if sub == "info":
            return ops.call_tree(call).addCallback(
                lambda tree: session_detail(call, tree, ops.clock.seconds(),
                                            ops.config.tos or 0,
                                            ops.redis_keyspace(call.call_id)))
        if sub == "terminate":
            self.log.warn("Call {call_id} terminated by operator", call_id=call.call_id)
            return ops.terminate(call).addCallback(
                lambda _: "\nCall '%s' terminated.\n\n" % call.call_id)
        if sub == "debug":
            return self._debug_flag(call, arg)
        if sub == "tag":
            return self._tag(call, arg)
        return "Unknown or incomplete command::%s\n" % rest

    def _tag(self, call, rest):
        words = rest.split(None, 1)
        if not words:
            return MORE
        ml = call.find(words[0])
        if ml is None:
            return "No such tag '%s'\n" % words[0]
        rest = words[1] if len(words) > 1 else ""
        if rest == "help":
            return _help(TAG_COMMANDS)
        if rest == "info":
            ops = self.ops

            def block(tree):
                entries = list(tree.get("tags", {}).values())
                index = call.monologues.index(ml)
                entry = entries[index] if index < len(entries) else {}
                return tag_detail(call, ml, entry, ops.clock.seconds())
            return ops.call_tree(call).addCallback(block)
        return "Unknown or incomplete command::%s\n" % rest

    # -- ksadd / ksrm --------------------------------------------------------

    def _keyspace(self, verb, rest):
        """``ksadd N`` / ``ksrm N``: N read as C's strtoul reads it (``3x``
        is 3), in rtpengine 10.5's words.  rtpengine takes ``-1`` as 2**64-1;
        omnirtp refuses a negative number as out of range."""
        words = rest.split()
        if not words:
            return MORE
        what = "adding" if verb == "ksadd" else "removing"
        m = _ULONG.match(words[0])
        if m is None:
            return "Fail %s keyspace %s to redis notifications; no digists found\n" % (
                what, words[0])
        db = int(m.group(2))
        if m.group(1) == "-" or db > ULONG_MAX:
            return "Fail %s keyspace %s to redis notifications; errono=34\n" % (
                what, words[0])
        if verb == "ksadd":
            added = self.ops.add_keyspace(db)
            if added is None:
                # rtpengine 10.5 crashes here; omnirtp says why it cannot
                return ("Fail adding keyspace %d to redis notifications; no redis "
                        "configured\n" % db)
            if not added:
                return "Keyspace %d is already among redis notifications.\n" % db
            return "Success adding keyspace %d to redis notifications.\n" % db

        def removed(dropped):
            if dropped is None:
                return "Keyspace %d is not among redis notifications.\n" % db
            return ("Successfully unsubscribed from keyspace %d.\n"
                    "Successfully removed all foreign calls for keyspace %d.\n" % (db, db))
        return self.ops.remove_keyspace(db).addCallback(removed)

    # -- list / get --------------------------------------------------------

    def _list(self, line, rest):
        words = rest.split(None, 1)
        if not words:
            return MORE
        sub, arg = words[0], (words[1] if len(words) > 1 else "")
        ops = self.ops
        if sub == "help":
            return _help(LIST_COMMANDS)
        if sub == "numsessions":
            return ops.statistics().addCallback(numsessions, ops.media_families())
        if sub == "sessions":
            return self._sessions(arg)
        if sub == "totals":
            return ops.statistics().addCallback(
                lambda s: totals(s, media_streams(s, ops.calls())))
        if sub == "counters":
            return ops.statistics().addCallback(counters)
        if sub == "maxopenfiles":
            return _max_open_files()
        if sub == "transcoders":
            return ops.transcoders().addCallback(transcoders)
        if sub in ops.REDIS_OPTIONS:
            return "%d\n" % ops.redis_setting(sub)
        if sub == "controltos":
            return "%d\n" % ops.control_tos
        if sub == "jsonstats":
            return ops.statistics().addCallback(
                lambda s: json.dumps(s, separators=(",", ":")) + "\n")
        if sub == "maxsessions":
            return "Maximum sessions configured on rtpengine: %d\n" % ops.max_sessions
        if sub == "maxcpu":
            return "Maximum CPU usage configured on rtpengine: %.1f\n" % ops.limits.max_cpu
        if sub == "maxload":
            return ("Maximum load average configured on rtpengine: %.2f\n"
                    % ops.limits.max_load)
        if sub == "maxbw":
            return "Maximum bandwidth configured on rtpengine: %d\n" % ops.limits.bw_limit
        timeouts = ops.timeouts()
        for name, key, prefix in (
                ("timeout", "timeout", "TIMEOUT="),
                ("silenttimeout", "silent-timeout", "SILENT_TIMEOUT="),
                ("offertimeout", "offer-timeout", "OFFER_TIMEOUT="),
                ("finaltimeout", "final-timeout", "FINAL_TIMEOUT="),
                ("deletedelay", "delete-delay", "")):
            if sub == name:
                return "%s%d\n" % (prefix, timeouts[key])
        if sub == "interfaces":
            return interfaces(ops.interfaces())
        if sub == "loglevels":
            return "".join("%s - %s\n" % s for s in SUBSYSTEMS)
        if sub == "loglevel":
            levels = ops.levels
            if not arg:
                return "".join("%s = %d\n" % (name, levels.get(name)) for name, _ in SUBSYSTEMS)
            name = arg.split()[0]
            if name in dict(SUBSYSTEMS):
                return "%d\n" % levels.get(name)
            return ""  # rtpengine answers an unknown subsystem with nothing
        return UNKNOWN % line

    def _sessions(self, arg):
        ops = self.ops
        if not arg:
            return MORE
        if arg in ("all", "own", "foreign"):
            own = ops.calls() if arg != "foreign" else []
            foreign = ops.foreign_calls() if arg != "own" else []
            if not own and not foreign:
                return {"all": "No sessions on this media relay.\n",
                        "own": "No own sessions on this media relay.\n",
                        "foreign": "No foreign sessions on this media relay.\n"}[arg]
            return ("".join(session_line(c, keyspace=ops.redis_keyspace(c.call_id))
                            for c in own)
                    + "".join(session_line(c, True, ops.redis_keyspace(c.call_id))
                              for c in foreign))
        call = ops.call(arg)
        foreign = call is None and arg in ops.registry.foreign
        if foreign:
            call = ops.registry.foreign[arg]
        if call is None:
            return "\nCall ID not found (%s).\n\n" % arg
        return ops.call_tree(call).addCallback(
            lambda tree: session_detail(call, tree, ops.clock.seconds(),
                                        ops.config.tos or 0, ops.redis_keyspace(arg),
                                        foreign))

    # -- params --------------------------------------------------------------

    def _params(self, line, rest):
        """``params start|current`` (the settings at start / now, in
        rtpengine 10.5's layout, for the options omnirtp has), ``params
        diff`` (what changed since the start: ``name: start => now``) and
        ``params revert`` (back to the start values; no reply text)."""
        words = rest.split()
        if not words:
            return MORE
        sub = words[0]
        ops = self.ops
        if sub == "help":
            return _help(PARAMS_COMMANDS)
        if sub in ("start", "current"):
            return params_dump(ops.config, ops.initial if sub == "start" else ops.settings(),
                               start=sub == "start")
        if sub == "diff":
            start, now = ops.initial, ops.settings()
            return "".join("%s: %d => %d\n" % (key, start[key], now[key])
                           for key in start if start[key] != now[key])
        if sub == "revert":
            ops.revert()
            self.log.info("settings reverted to their start values by operator")
            return ""
        return UNKNOWN % line

    # -- terminate -----------------------------------------------------------

    def _terminate(self, arg):
        if not arg:
            return MORE
        ops = self.ops
        if arg in ("all", "own"):
            text = ("All calls terminated by operator.\n" if arg == "all"
                    else "All own calls terminated by operator.\n")
            return ops.terminate_all().addCallback(lambda _: text)
        if arg == "foreign":
            # dropped here and deleted from their owners' databases, as rtpengine
            return ops.terminate_foreign().addCallback(
                lambda _: "All foreign calls terminated by operator.\n")
        call = ops.call(arg)
        if call is None:
            return "\nCall Id not found (%s).\n\n" % arg
        return ops.terminate(call).addCallback(
            lambda _: "\nCall Id (%s) successfully terminated by operator.\n\n" % arg)

    # -- set -------------------------------------------------------------------

    def _set(self, line, rest):
        words = rest.split(None, 1)
        if not words:
            return MORE
        sub, arg = words[0], (words[1] if len(words) > 1 else "")
        if sub == "help":
            return _help(SET_COMMANDS)
        if sub == "maxsessions":
            if not arg:
                return MORE
            m = _LEADING_INT.match(arg)
            if m is None:
                return "Fail setting maxsessions to %s; no digists found\n" % arg
            value = int(m.group(1))
            if value < -1:
                return ("Fail setting maxsessions to %d; either positive or -1 values "
                        "allowed\n" % value)
            self.ops.set_max_sessions(value)
            if value == -1:
                return "Success setting maxsessions to -1; disable feature\n"
            return "Success setting maxsessions to %d\n" % value
        if sub == "loglevel":
            return self._set_loglevel(arg)
        if sub == "maxopenfiles":
            return self._set_max_open_files(arg)
        if sub == "redisallowederrors":
            return self._set_redis_allowed_errors(arg)
        if sub in ("maxcpu", "maxload"):
            return self._set_limit(sub, arg)
        if sub == "maxbw":
            return self._set_maxbw(arg)
        if sub in self.ops.REDIS_OPTIONS:
            return self._set_redis(sub, arg)
        if sub == "controltos":
            return self._set_control_tos(arg)
        if sub in ("timeout", "silenttimeout", "offertimeout", "finaltimeout"):
            return self._set_timeout(sub, arg)
        if sub == "deletedelay":
            return self._set_delete_delay(arg)
        return UNKNOWN % line

    def _set_timeout(self, sub, arg):
        """``set timeout|silenttimeout|offertimeout|finaltimeout N``, read
        and answered as rtpengine 10.5 does: N as C's strtoul reads it
        (``5x`` is 5, ``+7`` is 7), refused when there are no digits, when
        it overflows (errno 34) or is above 2**32-1 (a negative number wraps
        there: errno 0); every one of the four is called "timeout" in the
        reply.  A 0 for the first three means their default here, as in
        the config file (rtpengine 10.5 would end every call without media
        at its next second): docs/compat.md."""
        words = arg.split()
        if not words:
            return MORE
        text = words[0]
        value, failed = _strtoul("timeout", text)
        if failed:
            return failed
        if value > UINT_MAX:
            return "Fail setting timeout to %s; errno=0\n" % text
        option = self.ops.TIMER_OPTIONS[sub]
        now = self.ops.set_timer(option, value)
        self.log.info("{option} set to {value} by operator", option=option, value=now)
        return "Success setting timeout to %d\n" % value

    def _set_limit(self, sub, arg):
        """``set maxcpu|maxload X``: X as C's strtod reads it (``2.5x`` is
        2.5), in rtpengine 10.5's words: refused without digits, when it
        is not finite (``inf``, ``nan``: errno 0) or out of a double's
        range (errno 34).  Kept in whole hundredths (``0.019`` is 0.01; below
        0.01 is 0: off); a negative limit refuses every new call, as there."""
        if not arg.strip():
            return MORE
        value, errno = _strtod(arg)
        if value is None:
            return "Fail setting %s to %s; no digists found\n" % (sub, arg)
        if errno or value != value or value in (_INF, -_INF):
            return "Fail setting %s to %s; errno=%d\n" % (sub, arg, errno)
        limits = self.ops.limits
        if sub == "maxcpu":
            limits.set_max_cpu(value)
            self.log.info("max-cpu set to {value} by operator", value=limits.max_cpu)
            return "Success setting maxcpu to %.1f\n" % value
        limits.set_max_load(value)
        self.log.info("max-load set to {value} by operator", value=limits.max_load)
        return "Success setting maxload to %.2f\n" % value

    def _set_maxbw(self, arg):
        """``set maxbw N`` (bytes per second): N as C's strtoull reads it (a
        negative number wraps around 2**64, i.e. no limit), in rtpengine
        10.5's words.  rtpengine 10.5 keeps 100 x N (``list maxbw`` then
        shows it); omnirtp keeps N, as the config file's ``max-bandwidth``
        (docs/compat.md)."""
        if not arg.strip():
            return MORE
        value, failed = _strtoul("maxbw", arg)
        if failed:
            return failed
        self.ops.limits.set_max_bandwidth(value)
        self.log.info("max-bandwidth set to {value} by operator", value=value)
        return "Success setting maxbw to %d\n" % value

    #: ``set redis...``: (the lowest value taken, the words of its refusal)
    _REDIS_MINIMUM = {"redisconnecttimeout": (1, "must be > 0"),
                      "rediscmdtimeout": (0, "must be >= 0"),
                      "redisdisabletime": (0, "must be >= 0")}

    def _set_redis(self, sub, arg):
        """``set redisconnecttimeout|rediscmdtimeout N`` (ms) and ``set
        redisdisabletime N`` (s): N as C's strtol reads it (no digits is 0),
        in rtpengine 10.5's words.  (10.5 also warns that a command timeout
        of 0 needs a Redis reconnect; omnirtp's timeout is per command and
        needs none.)"""
        if not arg.strip():
            return MORE
        value = _strtol(arg)
        option = self.ops.REDIS_OPTIONS[sub][0]
        lowest, rule = self._REDIS_MINIMUM[sub]
        if value < lowest:
            return "Invalid %s value %d, %s\n" % (option, value, rule)
        self.ops.set_redis_setting(sub, value)
        self.log.info("{option} set to {value} by operator", option=option, value=value)
        return "Success setting %s to %d\n" % (option, value)

    def _set_max_open_files(self, arg):
        """``set maxopenfiles N``: the open files limit (soft and hard) of
        the daemon, in rtpengine 10.5's words: N as C's strtoul reads it,
        refused below 65536 and where the kernel refuses it (its errno:
        raising the hard limit needs CAP_SYS_RESOURCE).  With media
        workers, theirs too (``Operations.set_open_files``)."""
        if not arg.strip():
            return MORE
        value, failed = _strtoul("open_files", arg)
        if failed:
            return failed
        if value < MIN_OPEN_FILES:
            return "Fail setting open_files to %d; can't set it under %d\n" % (
                value, MIN_OPEN_FILES)
        try:
            self.ops.set_open_files(value)
        except OSError as e:
            return "Fail setting open_files to %d; errno = %d\n" % (value, e.errno or 0)
        self.log.info("open files limit set to {value} by operator", value=value)
        return "Success setting open_files to %d; cat /proc/%d/limits\n" % (value, os.getpid())

    def _set_redis_allowed_errors(self, arg):
        """``set redisallowederrors N``: N as C's strtol reads it (no digits
        is 0), kept as a C int as 10.5 keeps it (so a number beyond an int
        lists wrapped) and answered with the number read, in its words."""
        if not arg.strip():
            return MORE
        value = _strtol(arg)
        self.ops.set_redis_setting("redisallowederrors", (value + 2 ** 31) % 2 ** 32 - 2 ** 31)
        self.log.info("redis-allowed-errors set to {value} by operator", value=value)
        return "Success setting redis-allowed-errors to %d\n" % value

    def _set_control_tos(self, arg):
        """``set controltos N`` (0-255, strtol): the TOS byte of the ng
        replies from now on.  rtpengine 10.5 answers "Success setting
        redis-connect-timeout to N" here (and crashed on it on loopback);
        omnirtp names what it set."""
        if not arg.strip():
            return MORE
        value = _strtol(arg)
        if not 0 <= value <= 255:
            return "Invalid control-tos value %d, must be between 0 and 255\n" % value
        self.ops.set_control_tos(value)
        self.log.info("control-tos set to {value} by operator", value=value)
        return "Success setting control-tos to %d\n" % value

    def _set_delete_delay(self, arg):
        """``set deletedelay N``: N as C's strtol reads it into an int
        (``-5`` and ``5x`` are taken, ``abc`` and numbers beyond an int are
        not), in rtpengine 10.5's words; 0 or less deletes at once."""
        words = arg.split()
        if not words:
            return MORE
        m = _ATOI.match(words[0])
        if m is None or not -INT_MAX - 1 <= int(m.group(1)) <= INT_MAX:
            return "Invalid delete-delay value\n"
        value = int(m.group(1))
        self.ops.set_timer("delete-delay", value)
        self.log.info("delete-delay set to {value} by operator", value=value)
        return "Success setting delete-delay to %d\n" % value

    def _set_loglevel(self, arg):
        """``set loglevel N`` (every subsystem) or ``set loglevel SUB N``,
        read as rtpengine 10.5 reads them: the number as C's atoi (``3x``
        is 3, ``abc`` is 0), a first word that is no number names a
        subsystem, and an unknown subsystem is answered "Success" but
        changes nothing (logged here)."""
        words = arg.split()
        if not words:
            return MORE
        if words[0][0].isdigit():
            value = _atoi(words[0])
            self.ops.levels.set(value)
            self.log.info("log level set to {new_level} by operator", new_level=value)
            return "Success setting loglevel to %d\n" % value
        if len(words) < 2:
            return MORE
        name, value = words[0], _atoi(words[1])
        try:
            self.ops.levels.set(value, name)
        except KeyError:
            self.log.warn("set loglevel: no log subsystem {name!r}; nothing changed", name=name)
        else:
            self.log.info("log level of {subsystem} set to {new_level} by operator",
                          subsystem=name, new_level=value)
        return "Success setting loglevel to %d\n" % value


LONG_MIN, LONG_MAX = -2 ** 63, 2 ** 63 - 1


def _strtol(text):
    """The number at ``text``'s start as C's strtol reads it: 0 without
    digits, clamped to a long."""
    m = _ATOI.match(text)
    if m is None:
        return 0
    return min(LONG_MAX, max(LONG_MIN, int(m.group(1))))


def transcoders(chains):
    """``list transcoders``: per chain the transcoders now and, when
    something was transcoded in the last whole second, what they took in
    then (``EmbeddedEngine.transcoders``)."""
    if not chains:
        return "No stats entries\n"
    out = []
    for chain, (count, rates) in chains.items():
        out.append("%s: %d transcoders\n" % (chain, count))
        if rates is not None:
            out.append("     %d packets/s\n     %d bytes/s\n     %d samples/s\n" % tuple(rates))
    return "".join(out)


def _max_open_files(resource=None):
    """``list maxopenfiles``: this process's open files limit (soft)."""
    if resource is None:
        import resource
    pid = os.getpid()
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return "Fail getting rtpengine configured limits; cat /proc/%d/limits\n" % pid
    if soft == resource.RLIM_INFINITY:
        return "Maximum open-files configured on rtpengine: infinite; cat /proc/%d/limits\n" % pid
    return "Maximum open-files configured on rtpengine: %d; cat /proc/%d/limits\n" % (soft, pid)


def _strtoul(what, text):
    """``(value, None)``: the number at ``text``'s start as C's strtoul
    (strtoull) reads it, a negative one wrapped around 2**64; or ``(None,
    rtpengine 10.5's reply)`` for ``set WHAT``: no digits, or beyond 2**64-1
    (errno 34)."""
    m = _ULONG.match(text)
    if m is None:
        return None, "Fail setting %s to %s; no digists found\n" % (what, text)
    value = int(m.group(2))
    if value > ULONG_MAX:
        return None, "Fail setting %s to %s; errno=%d\n" % (what, text, ERANGE)
    if m.group(1) == "-" and value:
        value = ULONG_MAX + 1 - value  # the wrap-around
    return value, None


_INF = float("inf")
# a number as C's strtod reads it (decimal, or inf/nan)
_STRTOD = re.compile(r"\s*([-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
                     r"|inf(?:inity)?|nan))", re.IGNORECASE)
_NONZERO = re.compile(r"[1-9]")


def _strtod(text):
    """``(value, errno)`` of the number at ``text``'s start as C's strtod
    reads it; ``(None, 0)`` without one.  errno is ERANGE where strtod
    overflows (an infinite value from digits) or underflows (0 from a
    mantissa with a non-zero digit)."""
    m = _STRTOD.match(text)
    if m is None:
        return None, 0
    number = m.group(1)
    value = float(number)
    digits = number.lower().lstrip("+-")
    if digits[0] in "0123456789.":
        mantissa = digits.split("e")[0]
        if value in (_INF, -_INF) or (value == 0 and _NONZERO.search(mantissa)):
            return value, ERANGE
    return value, 0


def _atoi(text):
    m = _ATOI.match(text)
    return int(m.group(1)) if m else 0
