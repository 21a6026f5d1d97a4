"""The option table: every option rtpengine 10.5 and the current upstream
rtpengine accept, as data.

Facts only (name, short letter, value kind, default, whether omnirtp acts on
it); the one-line help texts are ours.  The list was taken from
``rtpengine --help`` of Debian's rtpengine 10.5.3.5 and checked against the
running daemon on loopback (which options take an argument, which are
repeatable / ``;``-lists in the config file).

Kinds:

``flag``
    no argument on the command line; ``true``/``false``/``1``/``0`` in a file.
``int`` / ``float`` / ``str``
    one value; given again, the last one wins.
``list``
    repeatable on the command line; ``;``-separated in a file.  A command
    line list replaces the file's list.

``implemented`` is False for options that are accepted (so that an
operator's rtpengine command line and config start unchanged) but that
omnirtp does not act on yet; each one given is reported once, by name, in
``Config.unimplemented``.
"""

from dataclasses import dataclass

FLAG = "flag"
INT = "int"
FLOAT = "float"
STR = "str"
LIST = "list"

KINDS = (FLAG, INT, FLOAT, STR, LIST)


@dataclass(frozen=True)
class Option:
    """One daemon option."""

    name: str
    short: str | None
    kind: str
    default: object
    implemented: bool
    help: str

    @property
    def attr(self):
        """The ``Config`` attribute name: ``port-min`` -> ``port_min``."""
        return self.name.replace("-", "_")


def _o(name, short, kind, default, implemented, help):
    if kind not in KINDS:
        raise ValueError("bad kind {!r} for option {}".format(kind, name))
    if kind == LIST and default is None:
        default = ()
    if kind == FLAG and default is None:
        default = False
    return Option(name, short, kind, default, implemented, help)


Y = True   # implemented
N = False  # accepted, not implemented yet

_LOG_SUBSYSTEMS = (
    "core", "spandsp", "ffmpeg", "transcoding", "codec", "rtcp", "ice",
    "crypto", "srtp", "internals", "http", "control", "dtx",
)

OPTIONS = (
    # -- configuration itself
    _o("config-file", None, STR, None, Y,
       "ini file to read; 'none' reads no file"),
    _o("config-section", None, STR, "rtpengine", Y,
       "section of the config file to read"),
    # -- logging
    _o("log-level", "L", INT, 6, Y, "syslog-style level 0-7"),
) + tuple(
    _o("log-level-" + s, None, INT, None, Y,
       "log level of the " + s + " subsystem; unset: log-level (internals: off)")
    for s in _LOG_SUBSYSTEMS
) + (
    _o("log-facility", None, STR, None, Y,
       "log to syslog with this facility (daemon, local0, ...); unset: twistd's log"),
    _o("log-facility-cdr", None, STR, None, N, "syslog facility for call records"),
    _o("log-facility-rtcp", None, STR, None, N, "syslog facility for RTCP"),
    _o("log-facility-dtmf", None, STR, None, N, "syslog facility for DTMF events"),
    _o("log-stderr", "E", FLAG, False, Y,
       "log to stderr in rtpengine's line format"),
    _o("split-logs", None, FLAG, False, N, "split multi-line log records"),
    _o("max-log-line-length", None, INT, None, N, "wrap log lines longer than this"),
    _o("no-log-timestamps", None, FLAG, False, Y, "leave timestamps out of stderr logs"),
    _o("log-mark-prefix", None, STR, None, N, "text before sensitive log values"),
    _o("log-mark-suffix", None, STR, None, N, "text after sensitive log values"),
    _o("log-format", None, STR, "default", N, "log line prefix style"),
    _o("log-srtp-keys", None, FLAG, False, N, "write SRTP keys to the log"),
    # -- process
    _o("pidfile", "p", STR, None, N,
       "pid file; with twistd use twistd's own --pidfile before 'omnirtp'"),
    _o("foreground", "f", FLAG, False, Y,
       "accepted; 'twistd -n' is what keeps omnirtp in the foreground"),
    _o("thread-stack", None, INT, None, N, "thread stack size in kB"),
    _o("num-threads", None, INT, 0, Y,
       "media worker processes; 0 relays in the control process"),
    _o("media-num-threads", None, INT, None, N, "media player threads"),
    _o("http-threads", None, INT, None, N, "HTTP worker threads"),
    _o("scheduling", None, STR, None, N, "thread scheduling policy"),
    _o("priority", None, INT, None, N, "thread scheduling priority"),
    _o("idle-scheduling", None, STR, None, N, "idle thread scheduling policy"),
    _o("idle-priority", None, INT, None, N, "idle thread scheduling priority"),
    _o("poller-per-thread", None, FLAG, False, N, "one poller per thread"),
    _o("socket-cpu-affinity", None, INT, 0, Y,
       "SO_INCOMING_CPU of each call's media sockets: 0..N-1 in turn per call; "
       "negative: N = CPU cores; 0: off"),
    # -- kernel forwarding
    _o("table", "t", INT, -1, Y, "kernel forwarding table (nftables table omnirtp-N); -1 = off"),
    _o("no-fallback", "F", FLAG, False, Y, "refuse to start without kernel forwarding"),
    _o("iptables-chain", None, STR, None, N, "iptables chain for firewall rules"),
    # -- media interfaces and ports
    _o("interface", "i", LIST, (), Y, "media address: [NAME/]ADDR[!ADVERTISED]"),
    _o("save-interface-ports", "S", FLAG, False, N,
       "bind on the first usable interface of a family only"),
    _o("port-min", "m", INT, 30000, Y, "lowest media port"),
    _o("port-max", "M", INT, 40000, Y, "highest media port"),
    _o("tos", "T", INT, None, Y, "IP TOS byte of media packets (0-255)"),
    _o("control-tos", None, INT, None, Y, "IP TOS byte of ng replies (0-255)"),
    # -- control listeners
    _o("listen-ng", "n", LIST, (), Y, "ng control over UDP: [ADDR:]PORT"),
    _o("listen-tcp-ng", "N", LIST, (), N, "ng control over TCP: [ADDR:]PORT"),
    _o("listen-cli", "c", LIST, (), Y, "rtpengine-ctl CLI over TCP: [ADDR:]PORT"),
    _o("listen-http", None, LIST, (), Y,
       "HTTP listener (ping, metrics, sessions, stats, cli, ng): [ADDR:]PORT"),
    _o("listen-https", None, LIST, (), Y, "the same over HTTPS: [ADDR:]PORT"),
    _o("listen-tcp", "l", LIST, (), N, "legacy rtpproxy TCP protocol: [ADDR:]PORT"),
    _o("listen-udp", "u", LIST, (), N, "legacy rtpproxy UDP protocol: [ADDR:]PORT"),
    _o("https-cert", None, STR, None, Y, "PEM certificate for HTTPS"),
    _o("https-key", None, STR, None, Y,
       "PEM private key for HTTPS; unset: the key is in https-cert"),
    # -- timers and limits
    _o("timeout", "o", INT, 60, Y, "seconds without media before a call ends"),
    _o("silent-timeout", "s", INT, 3600, Y,
       "seconds without media for held calls"),
    _o("final-timeout", "a", INT, 0, Y, "maximum call duration in seconds; 0 = none"),
    _o("offer-timeout", None, INT, 3600, Y,
       "seconds a call may wait for its answer"),
    _o("delete-delay", "d", INT, 30, Y, "seconds a deleted call lingers"),
    _o("max-sessions", None, INT, -1, Y, "most concurrent calls; -1 = no limit"),
    _o("max-load", None, FLOAT, None, Y,
       "refuse new calls while the 1-minute load average is at or above this"),
    _o("max-cpu", None, FLOAT, None, Y,
       "refuse new calls while the machine's CPU use (percent) is at or above this"),
    _o("max-bandwidth", None, INT, None, Y,
       "refuse new calls while the relay moves this many bytes/s or more"),
    # -- redis
    _o("redis", "r", STR, None, Y, "redis to restore calls from: [PW@]HOST:PORT/DB"),
    _o("redis-write", "w", STR, None, Y, "redis to write calls to: [PW@]HOST:PORT/DB"),
    _o("subscribe-keyspace", "k", LIST, (), Y, "redis keyspaces to follow"),
    _o("redis-num-threads", None, INT, None, N, "redis restore threads"),
    _o("redis-expires", None, INT, 86400, Y, "expiry of redis keys in seconds"),
    _o("no-redis-required", "q", FLAG, False, Y, "start without redis"),
    _o("redis-allowed-errors", None, INT, -1, N, "redis errors before backing off"),
    _o("redis-disable-time", None, INT, 10, Y, "seconds redis stays off after errors"),
    _o("redis-cmd-timeout", None, INT, 0, Y, "redis command timeout in ms"),
    _o("redis-connect-timeout", None, INT, 1000, Y, "redis connect timeout in ms"),
    _o("redis-delete-async", "y", INT, None, N, "delete from redis asynchronously"),
    _o("redis-delete-async-interval", None, INT, None, N,
       "seconds between asynchronous redis deletes"),
    _o("active-switchover", None, FLAG, False, Y,
       "treat call activity as the active/standby signal"),
    # -- callbacks, stats and capture
    _o("b2b-url", "b", STR, None, N, "XMLRPC URL called on timeouts"),
    _o("xmlrpc-format", "x", INT, None, N, "XMLRPC timeout request format"),
    _o("graphite", "g", STR, None, N, "graphite server HOST:PORT"),
    _o("graphite-interval", "G", INT, None, N, "seconds between graphite reports"),
    _o("graphite-prefix", None, STR, None, N, "prefix of graphite lines"),
    _o("graphite-timeout", None, INT, None, N, "graphite socket timeout in seconds"),
    _o("homer", None, STR, None, N, "HEP capture server HOST:PORT"),
    _o("homer-protocol", None, STR, None, N, "HEP transport: udp or tcp"),
    _o("homer-id", None, INT, None, N, "HEP capture id"),
    _o("dtmf-log-dest", None, STR, None, N, "UDP destination for DTMF events"),
    _o("dtmf-log-ng-tcp", None, FLAG, False, N, "send DTMF events over TCP ng"),
    _o("dtmf-no-suppress", None, FLAG, False, N, "keep audio during DTMF events"),
    _o("dtmf-digit-delay", None, INT, None, N, "milliseconds between DTMF digits for triggers"),
    # a list upstream (repeatable: CQ/LQ and the formula); one value in 10.5
    _o("mos", None, LIST, (), N, "MOS options: CQ or LQ, G.107, G.107.2, legacy"),
    # -- recording
    _o("recording-dir", None, STR, None, Y, "spool directory; unset = no recording"),
    _o("recording-method", None, STR, "pcap", Y, "recording method: pcap or proc"),
    _o("recording-format", None, STR, "raw", Y, "pcap link type: raw or eth"),
    # -- media handling
    _o("endpoint-learning", None, STR, "heuristic", Y,
       "source learning: delayed, immediate, off or heuristic"),
    _o("sip-source", None, FLAG, False, N, "prefer the SIP source address to the SDP's"),
    _o("dtls-passive", None, FLAG, False, N, "prefer the passive DTLS role"),
    _o("reject-invalid-sdp", None, FLAG, False, N, "refuse sloppy SDP"),
    _o("jitter-buffer", None, INT, None, N, "jitter buffer size"),
    _o("jb-clock-drift", None, FLAG, False, N, "jitter buffer follows source clock drift"),
    _o("debug-srtp", None, FLAG, False, N, "log SRTP internals"),
    _o("dtls-rsa-key-size", None, INT, 2048, N, "RSA key size of the DTLS certificate"),
    _o("dtls-cert-cipher", None, STR, None, N, "DTLS certificate key type"),
    _o("dtls-mtu", None, INT, 1200, N, "DTLS MTU"),
    _o("dtls-ciphers", None, STR, None, N, "DTLS cipher list"),
    _o("dtls-signature", None, STR, None, N, "DTLS certificate signature hash"),
    _o("software-id", None, STR, None, N, "software name shown to peers"),
    _o("dtx-delay", None, INT, None, N, "milliseconds before DTX handling starts"),
    _o("max-dtx", None, INT, None, N, "longest DTX handling"),
    _o("dtx-buffer", None, INT, None, N, "packets held in the DTX buffer"),
    _o("dtx-lag", None, INT, None, N, "milliseconds held in the DTX buffer"),
    _o("dtx-shift", None, INT, None, N, "milliseconds the DTX buffer shifts after a glitch"),
    _o("dtx-cn-params", None, LIST, (), N, "comfort noise parameters for DTX"),
    _o("amr-dtx", None, STR, None, N, "AMR DTX mechanism: native or CN"),
    _o("silence-detect", None, FLOAT, None, N, "silence threshold in percent"),
    _o("cn-payload", None, LIST, (), N, "comfort noise parameters"),
    _o("codecs", None, FLAG, False, N, "list supported codecs and exit"),
    # -- media files from MySQL
    _o("mysql-host", None, STR, None, N, "MySQL host"),
    _o("mysql-port", None, INT, None, N, "MySQL port"),
    _o("mysql-user", None, STR, None, N, "MySQL user"),
    _o("mysql-pass", None, STR, None, N, "MySQL password"),
    _o("mysql-query", None, STR, None, N, "MySQL query for media files"),
    # -- MQTT
    _o("mqtt-host", None, STR, None, N, "MQTT broker"),
    _o("mqtt-port", None, INT, None, N, "MQTT port"),
    _o("mqtt-id", None, STR, None, N, "MQTT client id"),
    _o("mqtt-keepalive", None, INT, None, N, "MQTT keepalive seconds"),
    _o("mqtt-user", None, STR, None, N, "MQTT user"),
    _o("mqtt-pass", None, STR, None, N, "MQTT password"),
    _o("mqtt-cafile", None, STR, None, N, "MQTT CA file"),
    _o("mqtt-capath", None, STR, None, N, "MQTT CA directory"),
    _o("mqtt-certfile", None, STR, None, N, "MQTT client certificate"),
    _o("mqtt-keyfile", None, STR, None, N, "MQTT client key"),
    _o("mqtt-publish-qos", None, INT, None, N, "MQTT QoS"),
    _o("mqtt-publish-topic", None, STR, None, N, "MQTT topic"),
    _o("mqtt-publish-interval", None, INT, None, N, "milliseconds between MQTT reports"),
    _o("mqtt-publish-scope", None, STR, None, N, "MQTT report scope"),
    # -- janus
    _o("janus-secret", None, STR, None, N, "Janus admin secret"),
    # -- omnirtp's own options (not rtpengine's; see OWN_OPTIONS)
    _o("control-allow", None, LIST, (), Y,
       "networks allowed to use the control listeners besides loopback: ADDR[/PREFIX]"),
    _o("control-timeout", None, FLOAT, 10.0, Y,
       "seconds a CLI/HTTP client has to send a whole command or request"),
)

#: the options the current upstream rtpengine (mr12 and later; checked
#: against its daemon/main.c, lib/auxlib.c and docs/rtpengine.md) has
#: beyond 10.5's.  An operator's newer command line or config file must
#: start omnirtp: each one is accepted and, unless omnirtp acts on it,
#: reported once by name at start-up.
UPSTREAM_OPTIONS = (
    # -- kernel forwarding through nftables (omnirtp has none)
    _o("nftables-chain", None, STR, None, N, "nftables chain for forwarding rules"),
    _o("nftables-base-chain", None, STR, None, N, "nftables base chain to hook into"),
    _o("nftables-append", None, FLAG, False, N, "append the nftables rules"),
    _o("nftables-family", None, STR, None, N, "nftables address families"),
    _o("xtables", None, FLAG, False, N, "use the legacy xtables interface"),
    _o("nftables-start", None, FLAG, False, N, "set up the nftables rules and exit"),
    _o("nftables-stop", None, FLAG, False, N, "remove the nftables rules and exit"),
    _o("nftables-status", None, FLAG, False, N, "check the nftables rules and exit"),
    _o("kernel-num-threads", None, INT, None, N, "kernel forwarding threads"),
    _o("kernel-slots", None, INT, None, N, "slots per kernel poller"),
    _o("kernel-player", None, INT, None, N, "kernel media player streams"),
    _o("kernel-player-media", None, INT, None, N, "kernel media player files"),
    # -- interfaces and signalling
    _o("interfaces-config", None, STR, None, Y,
       "prefix of the config sections that each describe one interface"),
    _o("templates", None, STR, None, N, "config section of signalling templates"),
    _o("control-pmtu", None, STR, None, N, "path MTU discovery on ng sockets: want or dont"),
    _o("ng-client-timeout", None, INT, None, N, "milliseconds before an outgoing ng request is retried"),
    _o("ng-client-retries", None, INT, None, N, "retries of an outgoing ng request"),
    # -- logging
    _o("log-name", None, STR, None, N, "program name in syslog lines"),
    _o("dtmf-no-log-injects", None, FLAG, False, N, "do not log injected DTMF events"),
    # -- threads and polling
    _o("codec-num-threads", None, INT, None, N, "transcoding threads"),
    _o("timer-accuracy", None, INT, None, N, "shortest sleep in microseconds"),
    _o("max-recv-iters", None, INT, None, N, "reads per socket and poller round"),
    _o("poller-size", None, INT, None, N, "events per poller round"),
    _o("io-uring", None, FLAG, False, N, "use io_uring"),
    _o("io-uring-buffers", None, INT, None, N, "io_uring entries per thread"),
    # -- redis
    _o("redis-subscribe", None, STR, None, Y, "redis to subscribe to: [PW@]HOST:PORT[/DB]"),
    _o("redis-resolve-on-reconnect", None, FLAG, False, N, "resolve the redis host again on reconnect"),
    _o("redis-format", None, STR, None, N, "redis storage format: bencode or JSON"),
    _o("redis-tcp-keepalive-time", None, INT, None, N, "TCP keepalive time of redis connections"),
    _o("redis-tcp-keepalive-intvl", None, INT, None, N, "TCP keepalive interval of redis connections"),
    _o("redis-tcp-keepalive-probes", None, INT, None, N, "TCP keepalive probes of redis connections"),
    # -- HEP and recording
    _o("homer-disable-rtcp-stats", None, FLAG, False, N, "send no RTCP statistics to HEP"),
    _o("homer-enable-ng", None, FLAG, False, N, "send ng traffic to HEP"),
    _o("homer-ng-capture-proto", None, INT, None, N, "HEP capture protocol number for ng"),
    _o("record-egress", None, FLAG, False, N, "record what is sent instead of what is received"),
    _o("record-both", None, FLAG, False, N, "record what is received and what is sent"),
    _o("vsc-start-rec", None, STR, None, N, "DTMF code that starts recording"),
    _o("vsc-stop-rec", None, STR, None, N, "DTMF code that stops recording"),
    _o("vsc-start-stop-rec", None, STR, None, N, "DTMF code that toggles recording"),
    _o("vsc-pause-rec", None, STR, None, N, "DTMF code that pauses recording"),
    _o("vsc-pause-resume-rec", None, STR, None, N, "DTMF code that pauses or resumes recording"),
    _o("vsc-start-pause-resume-rec", None, STR, None, N,
       "DTMF code that starts, pauses or resumes recording"),
    # -- HTTP
    _o("http-buf-size", None, INT, None, N, "HTTP send buffer in kB"),
    _o("http-idle-timeout", None, INT, None, Y,
       "seconds an idle HTTP/HTTPS keep-alive connection stays open"),
    # -- media handling, codecs, players
    _o("jb-adaptive", None, FLAG, False, N, "adaptive jitter buffer"),
    _o("jb-adaptive-min", None, INT, None, N, "smallest adaptive jitter buffer in ms"),
    _o("jb-adaptive-max", None, INT, None, N, "largest adaptive jitter buffer in ms"),
    _o("evs-dtx", None, STR, None, N, "EVS DTX mechanism: native or CN"),
    _o("evs-lib-path", None, STR, None, N, "EVS codec library"),
    _o("codec-chain-lib-path", None, STR, None, N, "codec chain library"),
    _o("codec-chain-runners", None, INT, None, N, "codec chain runners per codec"),
    _o("codec-chain-concurrency", None, INT, None, N, "codec chain jobs per runner"),
    _o("codec-chain-async", None, INT, None, N, "codec chain callback threads"),
    _o("codec-chain-nonblock", None, FLAG, False, N, "non-blocking codec chain"),
    _o("codec-chain-interval", None, INT, None, N, "microseconds between codec chain runs"),
    _o("codec-chain-opus-application", None, STR, None, N, "Opus application of the codec chain"),
    _o("codec-chain-opus-complexity", None, INT, None, N, "Opus complexity of the codec chain"),
    _o("transcode-config", None, STR, None, N, "config section of transcoding rules"),
    _o("player-cache", None, FLAG, False, N, "keep media files for playback in memory"),
    _o("preload-media-files", None, LIST, (), N, "media files to load at start"),
    _o("media-files-reload", None, INT, None, N, "seconds between reloads of preloaded files"),
    _o("media-files-expire", None, INT, None, N, "seconds an unused cached file is kept"),
    _o("expiry-timer", None, INT, None, N, "seconds between media cache expiry checks"),
    _o("preload-db-media", None, LIST, (), N, "database media to load at start"),
    _o("db-media-reload", None, INT, None, N, "seconds between reloads of database media"),
    _o("db-media-expire", None, INT, None, N, "seconds unused database media is kept"),
    _o("db-media-cache", None, STR, None, N, "directory caching database media"),
    _o("preload-db-cache", None, LIST, (), N, "database media to cache in files at start"),
    _o("db-cache-reload", None, INT, None, N, "seconds between reloads of the file cache"),
    _o("db-cache-expire", None, INT, None, N, "seconds unused file cache entries are kept"),
    _o("audio-buffer-length", None, INT, None, N, "audio buffer in ms"),
    _o("audio-buffer-delay", None, INT, None, N, "initial audio buffer delay in ms"),
    _o("audio-player", None, STR, None, N, "when the audio player runs"),
    _o("moh-max-duration", None, INT, None, N, "longest music on hold in ms"),
    _o("moh-max-repeats", None, INT, None, N, "repeats of music on hold"),
    _o("moh-attr-name", None, STR, None, N, "SDP attribute added while music on hold plays"),
    _o("moh-prevent-double-hold", None, FLAG, False, N, "no music on hold for both sides at once"),
    # -- statistics
    _o("measure-rtp", None, FLAG, False, N, "measure RTP statistics and VoIP metrics"),
    _o("ssrc-reporting", None, STR, None, N, "SSRC statistics in query/delete: full, inline, global or none"),
    _o("rtcp-interval", None, INT, None, N, "milliseconds between generated RTCP packets"),
    _o("mqtt-tls-alpn", None, STR, None, N, "MQTT TLS ALPN"),
)

OPTIONS = OPTIONS + UPSTREAM_OPTIONS

#: options omnirtp adds to rtpengine's set (docs/compat.md lists them)
OWN_OPTIONS = frozenset({"control-allow", "control-timeout"})

BY_NAME = {o.name: o for o in OPTIONS}
BY_SHORT = {o.short: o for o in OPTIONS if o.short}

# Options that only exist on the command line; they are not config-file keys
# and not Config fields.  (-v/--version and -h/--help are handled by
# omnirtp.tap.Options itself.)
COMMAND_LINE_ONLY = frozenset({"config-file", "config-section", "codecs"})

# Our own additions (not rtpengine's).
CONFIG_TEST = "config-test"

# Config-file keys that are not rtpengine's but that we read, with a
# warning, as the option they name.  ``interfaces`` is what the seed
# deployment's rtpengine.conf says; rtpengine itself ignores the key and
# then refuses to start ("Missing option --interface").
KEY_ALIASES = {"interfaces": "interface"}

assert len(BY_NAME) == len(OPTIONS), "duplicate option name"
assert len(BY_SHORT) == len([o for o in OPTIONS if o.short]), "duplicate short letter"
