"""Do two checkouts answer the same?  The SDP model and the offer/answer path, side by side.

    .venv/bin/python bench/same_output.py --before CHECKOUT [--root CHECKOUT]
                                          [--sdp 3000] [--ng 1500] [--combos 4000]

For work that must not change behaviour (speed passes over the SDP model,
the rewrite and the negotiator).  One set of inputs is made here:

* SDP documents: ``--sdp`` drawn from each of the fuzz target's strategies
  (``omnirtp.test.fuzz``: mutated and whole documents, derandomised), the
  SDP fixtures, the corpus's bodies and 2000 made from a list of awkward
  lines (rtcp-fb:* forms, bad rtpmaps, ICE, DTLS, SDES with and without MKI,
  directions with values, media-level c= lines; CRLF or LF);
* ng datagram sequences: ``--ng`` from the ng fuzz target's strategy, and
  its fixtures;
* the side-by-side corpus's cases (their requests);
* ``--combos`` offer/answer(/re-offer/answer/reverse offer) sequences of the
  awkward SDP with random ng keys (flags, ICE, transport-protocol, rtcp-mux,
  SDES, DTLS, codec, ptime, replace, direction, address family, media
  address, ICE-lite, DTLS-fingerprint).

Each checkout then runs them in a child process with ``os.urandom`` made
deterministic, one byte stream (ICE credentials, SDES keys and foundations
come out the same when the code draws the same bytes in the same order,
in calls of any size) for the checkout's own ``omnirtp`` code; a call from
anywhere else gets real bytes and is named on stderr (Twisted's plugin
cache write, which names its temporary file with 16 random bytes in a
checkout whose ``dropin.cache`` is missing or stale, shifted every later
SDES key of that checkout once).  It records: per SDP document
the parse (every line's kind, value, ending, number and attribute split;
each part's attributes), the section questions (rtcp, rtcp-mux, rtpmaps,
fmtp, direction, ICE, connection, kept text), ``inspect`` and every error
text, then four requests with it on an ``NGStack``; every reply of every ng
sequence, corpus case and combination; and the ``repr`` of every engine
``configure`` (each socket entry with its keys in order).  The daemon's
certificate is made by OpenSSL, so ``a=fingerprint`` values are replaced by
``FP`` (their hash name stays).  Then the first 300 ng sequences, the
corpus's cases and the combinations again with ``num-threads = 2``
(:class:`PoolStack`: a ``WorkerPool`` whose two workers are in memory, without
the lazy hand-off: every call in a worker from its offer on, as before),
each reply with the text and level of the log lines it brought, the
workers' ``configure`` entries, and each command of a call whose worker
dies before it answers, does not answer in time, refuses the request
(``NGError``) or fails with an error the engine did not expect, with the
next request after it.  Then the same sequences, cases and combinations
once more with the lazy hand-off where the checkout has it (``WorkerPool(lazy=True)``,
:func:`lazy_outputs`; a checkout without it runs them as before): our port
numbers masked (a parked call's ports come from the control process's own
pool), the workers' allocate debug lines left out, and after each
combination one datagram into each socket of each call (hands parked calls
to their workers) before its delete, whose reply has the counters; stderr
says how many calls were parked and handed over.  It prints the number of outputs that
differ (and the first few), and exits 1 if any does.  A minute or two on
a quiet box, mostly making the inputs.
"""

import argparse
import inspect
import os
import re
import pickle
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SESSION_ATTRS = [
    "a=group:BUNDLE 0 1", "a=ice-lite", "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    "a=sendonly", "a=recvonly", "a=inactive", "a=sendrecv", "a=sendrecv:x",
    "a=fingerprint:sha-256 AB:CD", "a=setup:actpass", "a=rtpengine:fuzz", "a=rtpengine:other",
    "a=msid-semantic: WMS", "a=tool:x", "a=ice-options:trickle",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
    "b=AS:64", "a=", "a=x:y:z"]
MEDIA_ATTRS = [
    "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=rtpmap:96 opus/48000/2",
    "a=rtpmap:96 OPUS/48000", "a=rtpmap:97 foo", "a=rtpmap:97", "a=rtpmap",
    "a=rtpmap:101 telephone-event/8000", "a=rtpmap:101  telephone-event/8000",
    "a=rtpmap:18 G729/8000", "a=rtpmap:9 G722/8000/1", "a=rtpmap:111 opus/48000/2",
    "a=fmtp:101 0-16", "a=fmtp:101 0-15", "a=fmtp:96 minptime=10", "a=fmtp", "a=fmtp:",
    "a=fmtp:18 annexb=no", "a=rtcp-fb:* nack", "a=rtcp-fb:*", "a=rtcp-fb:*nack",
    "a=rtcp-fb:96 nack pli", "a=rtcp-fb:96 goog-remb", "a=rtcp-fb:0 nack", "a=rtcp-fb",
    "a=mid:0", "a=mid:audio", "a=mid", "a=sendonly", "a=recvonly", "a=inactive", "a=sendrecv",
    "a=sendonly:1", "a=rtcp:9", "a=rtcp:5001 IN IP4 192.0.2.9", "a=rtcp", "a=rtcp:", "a=rtcp-mux", "a=ptime:20",
    "a=ptime:30", "a=maxptime:40", "a=ice-ufrag:Yk3d", "a=ice-pwd:Pq0wR4mZc7nLs2vT8kJx1hBf",
    "a=ice-options:trickle",
    "a=candidate:1467250027 1 udp 2122260223 198.51.100.7 53871 typ host generation 0",
    "a=candidate:1467250027 2 udp 2122260222 198.51.100.7 53872 typ host", "a=candidate:bad",
    "a=end-of-candidates",
    "a=fingerprint:sha-256 7A:1C:44:0B:93:5E:D2:6F:08:AA:31:C9:5D:E4:72:19:B6:0F:8E:23:DD:"
    "41:9A:57:C0:3E:6B:F1:28:84:A5:0D",
    "a=setup:active", "a=setup:passive", "a=setup:actpass", "a=tls-id:abc",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
    "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj",
    "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
    "a=ssrc:2712458374 cname:x", "a=msid:- 2f1a",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level", "a=rtpengine:fuzz",
    "c=IN IP4 198.51.100.3", "c=IN IP4 0.0.0.0", "c=IN IP6 2001:db8::1", "b=AS:30", "i=info",
    "a=x-foo"]
PROTOS = ["RTP/AVP", "RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF", "RTP/AVPF",
          "udp/tls/rtp/savpf", "UDP"]
FORMATS = ["0", "8", "9", "18", "96", "97", "101", "111", "13"]
FLAG_WORDS = ["trickle-ICE", "original-sendrecv", "no-rtcp-attribute", "full-rtcp-attribute",
              "loop-protect", "strict-source", "media-handover", "asymmetric",
              "SIP-source-address", "single-codec", "reuse-codecs", "always-transcode",
              "codec-strip-PCMA", "codec-mask-all", "codec-offer-opus", "codec-except-PCMU",
              "port-latching"]


def awkward_sdp(rng):
    lines = ["v=0", "o=- %d 1 IN IP4 192.0.2.%d" % (rng.randrange(10 ** 9), rng.randrange(1, 250)),
             "s=-"]
    if rng.random() < 0.8:
        lines.append(rng.choice(["c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0", "c=IN IP6 2001:db8::5"]))
    lines.append("t=0 0")
    lines += rng.sample(SESSION_ATTRS, rng.randrange(0, 4))
    for i in range(rng.choice([1, 1, 1, 2, 3])):
        port = rng.choice([49170 + 2 * i, 9, 0, 30000]) if rng.random() < 0.3 else 49170 + 2 * i
        lines.append("m=%s %d %s %s" % (rng.choice(["audio", "audio", "video"]), port,
                                        rng.choice(PROTOS),
                                        " ".join(rng.sample(FORMATS, rng.randrange(1, 5)))))
        lines += rng.sample(MEDIA_ATTRS, rng.randrange(0, 14))
    eol = rng.choice(["\r\n"] * 8 + ["\n"])
    return eol.join(lines) + eol


def awkward_keys(rng):
    req = {}
    words = rng.sample(FLAG_WORDS, rng.randrange(0, 4))
    if words:
        req["flags"] = words
    choices = [
        (0.3, "ICE", lambda: rng.choice(["force", "remove", "default", "optional"])),
        (0.3, "transport-protocol", lambda: rng.choice(PROTOS[:5])),
        (0.2, "rtcp-mux", lambda: rng.sample(["offer", "require", "demux", "accept", "reject"],
                                             rng.randrange(1, 3))),
        (0.2, "SDES", lambda: rng.sample(["off", "no-AES_CM_128_HMAC_SHA1_32",
                                          "only-AES_CM_128_HMAC_SHA1_80", "pad", "lifetime",
                                          "unencrypted_srtp", "bogus"], rng.randrange(1, 3))),
        (0.15, "DTLS", lambda: rng.choice(["off", "passive", "active"])),
        (0.15, "codec", lambda: {rng.choice(["strip", "mask", "offer", "except", "transcode"]):
                                 rng.sample(["PCMA", "PCMU", "opus", "all", "G722",
                                             "telephone-event"], rng.randrange(1, 3))}),
        (0.1, "ptime", lambda: rng.choice([20, 30])),
        (0.1, "replace", lambda: ["origin", "session-connection"]),
        (0.1, "direction", lambda: rng.choice([["internal", "external"], ["default"]])),
        (0.1, "address family", lambda: rng.choice(["IP4", "IP6"])),
        (0.1, "media address", lambda: "203.0.113.4"),
        (0.1, "ICE-lite", lambda: rng.choice(["forward", "backward", "both"])),
        (0.1, "DTLS-fingerprint", lambda: rng.choice(["sha-1", "sha-512", "bogus"])),
    ]
    for chance, key, value in choices:
        if rng.random() < chance:
            req[key] = value()
    return req


def make_inputs(args):
    import glob

    from hypothesis import HealthCheck, Phase, given, settings

    from omnirtp.test import corpus, fuzz

    out = {"sdp": [], "ng": [], "cases": [], "combos": []}

    def collect(strategy, into, n):
        @settings(max_examples=n, database=None, derandomize=True, deadline=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate])
        @given(strategy)
        def draw(x):
            into.append(x)
        draw()

    collect(fuzz.sdp_inputs, out["sdp"], args.sdp)
    collect(fuzz.sdp_documents(), out["sdp"], args.sdp)
    collect(fuzz.TARGETS["ng"][1], out["ng"], args.ng)
    fixtures = os.path.join(ROOT, "omnirtp", "test", "fixtures")
    for path in sorted(glob.glob(os.path.join(fixtures, "sdp", "*")) +
                       glob.glob(os.path.join(fixtures, "fuzz", "sdp", "*"))):
        with open(path, "rb") as f:
            out["sdp"].append(f.read())
    for name in sorted(dir(corpus)):
        value = getattr(corpus, name)
        if name.isupper() and isinstance(value, str) and value.startswith("v=0"):
            out["sdp"].append(value.encode())
    for path in sorted(glob.glob(os.path.join(fixtures, "fuzz", "ng", "*"))):
        with open(path, "rb") as f:
            out["ng"].append(f.read())
    out["cases"] = [(case.name, case.requests) for case in corpus.CASES]
    rng = random.Random(7)
    for k in range(args.combos):
        call_id = "c%d" % (k % 3)
        offer = dict({"command": "offer", "call-id": call_id, "from-tag": "ft",
                      "sdp": awkward_sdp(rng)}, **awkward_keys(rng))
        answer = dict({"command": "answer", "call-id": call_id, "from-tag": "ft", "to-tag": "tt",
                       "sdp": awkward_sdp(rng)}, **awkward_keys(rng))
        seq = [offer, answer]
        if rng.random() < 0.5:
            seq.append(dict(offer, sdp=awkward_sdp(rng), **awkward_keys(rng)))
            if rng.random() < 0.5:
                seq.append(dict(answer, sdp=awkward_sdp(rng)))
        if rng.random() < 0.3:
            seq.append({"command": "offer", "call-id": call_id, "from-tag": "tt", "to-tag": "ft",
                        "sdp": awkward_sdp(rng)})
        out["combos"].append(seq)
    out["sdp"] += [awkward_sdp(rng).encode() for _ in range(2000)]
    return out


def child(root, inputs, output):
    """Run the inputs on ``root``'s omnirtp; pickle the outputs."""
    import re

    # one deterministic byte stream: urandom(n) is its next n bytes, so
    # drawing a and b bytes gives what drawing a + b gives (a checkout
    # that draws an offer's SDES keys at once, not one call per key, gets
    # the same key bytes)
    deterministic = random.Random(12345)
    stream = [b""]
    # (only the checkout's own code: anything else drawing from the stream
    # shifts every later key of one checkout, e.g. twisted.plugin.getPlugins
    # rewriting omnirtp/plugins/dropin.cache, missing in a fresh checkout or
    # older than a plugin module, through FilePath.temporarySibling)
    ours = os.path.join(os.path.abspath(root), "omnirtp") + os.sep
    real_urandom = os.urandom
    outside = {}

    def urandom(n):
        code = sys._getframe(1).f_code
        if not code.co_filename.startswith(ours):
            where = "%s (%s)" % (code.co_filename, code.co_name)
            outside[where] = outside.get(where, 0) + 1
            return real_urandom(n)
        have = stream[0]
        while len(have) < n:
            have += deterministic.randbytes(4096)
        stream[0] = have[n:]
        return have[:n]
    os.urandom = urandom
    sys.path.insert(0, os.path.abspath(root))
    import warnings
    warnings.simplefilter("ignore")
    from omnirtp import errors
    from omnirtp.media.engine import EmbeddedEngine
    from omnirtp.sdp.model import SessionDescription, inspect
    from omnirtp.test import fuzz

    assert fuzz.__file__.startswith(os.path.abspath(root)), fuzz.__file__
    with open(inputs, "rb") as f:
        data = pickle.load(f)
    configured = []
    configure = EmbeddedEngine.configure

    def recording_configure(self, call_id, sockets, *args, **kwargs):
        configured.append(repr(sockets))
        return configure(self, call_id, sockets, *args, **kwargs)

    EmbeddedEngine.configure = recording_configure
    # (a checkout whose control plane calls the plain-value configure_now)
    configure_now = getattr(EmbeddedEngine, "configure_now", None)
    if configure_now is not None:
        def recording_configure_now(self, call_id, sockets, *args, **kwargs):
            configured.append(repr(sockets))
            return configure_now(self, call_id, sockets, *args, **kwargs)
        EmbeddedEngine.configure_now = recording_configure_now
    fingerprint = re.compile(r"a=fingerprint:(\S+) [0-9A-F:]+")

    def norm(reply):
        return fingerprint.sub(r"a=fingerprint:\1 FP", repr(reply))

    out = []
    for i, doc in enumerate(data["sdp"]):
        try:
            sd = SessionDescription.parse(doc)
            rec = [sd.to_bytes() == doc, str(sd)]
            for part in [sd.session] + sd.media:
                rec.append((part.attributes(), [(ln.kind, ln.value, ln.eol, ln.number, ln.attribute)
                                                for ln in part.lines]))
            for m in sd.media:
                try:
                    rec.append((m.rtcp, m.rtcp_mux, m.rtpmaps(), m.fmtp(101), m.payload_types,
                                m.direction, m.has_ice, m.connection, m.kept().text,
                                sd.direction(m), sd.connection(m)))
                except errors.SDPError as e:
                    rec.append(("error", str(e)))
            try:
                rec.append((sd.session.origin, sd.loop_protect_id, sd.has_ice,
                            sd.session.direction))
            except errors.SDPError as e:
                rec.append(("error", str(e)))
            try:
                rec.append(repr(inspect(sd)))
            except errors.SDPError as e:
                rec.append(("inspect error", type(e).__name__, str(e)))
        except errors.SDPError as e:
            rec = ["parse error", type(e).__name__, str(e)]
        out.append(("sdp", i, repr(rec)))
        stack = fuzz.NGStack(pairs=8)
        sdp = doc.decode("utf-8", "surrogateescape")
        for command, keys in (("offer", {}), ("answer", {"to-tag": "tt"}),
                              ("offer", {"to-tag": "tt", "ICE": "force",
                                         "transport-protocol": "RTP/SAVPF"}),
                              ("answer", {"to-tag": "tt", "flags": ["trickle-ICE"]})):
            request = dict({"command": command, "call-id": "sdp", "from-tag": "ft", "sdp": sdp},
                           **keys)
            out.append(("sdp ng", i, norm(stack.request(request))))
    for i, sequence in enumerate(data["ng"]):
        stack = fuzz.NGStack(pairs=12, max_sessions=6)
        stack.establish()
        written = stack.transport.written
        for datagram in fuzz.unframe(sequence):
            if isinstance(datagram, bytes):
                n = len(written)
                stack.proto.datagramReceived(datagram, fuzz.NG_ADDR)
                out.append(("ng", i, norm([w[0] for w in written[n:]])))
            stack.reactor.advance(1)
    for name, requests in data["cases"]:
        stack = fuzz.NGStack(pairs=20)
        for request in requests:
            out.append(("case", name, norm(stack.request(request))))
    for i, sequence in enumerate(data["combos"]):
        if i % 50 == 0:
            stack = fuzz.NGStack(pairs=40)
        for request in sequence:
            out.append(("combination", i, norm(stack.request(request))))
        stack.request({"command": "delete", "call-id": sequence[0]["call-id"], "from-tag": "ft"})
    out.append(("configure", 0, configured))
    del configured[:]
    pool_outputs(data, out, norm, configured)
    out.append(("pool configure", 0, configured))
    # (what the workers are configured with during the lazy pass is not
    # recorded: the list keeps what it held before it)
    kept = list(configured)
    lazy_outputs(data, out, norm)
    configured[:] = kept
    with open(output, "wb") as f:
        pickle.dump(out, f)
    for where, calls in sorted(outside.items()):
        print("%s: os.urandom from outside omnirtp (real bytes, not the stream): %s, %d call(s)"
              % (root, where, calls), file=sys.stderr)


class PoolStack:
    """``num-threads = 2``: the control plane of :class:`omnirtp.test.fuzz.NGStack`
    over a :class:`omnirtp.media.pool.WorkerPool` whose two workers are
    in memory (a ``WorkerProtocol`` and its ``WorkerChannel`` over an
    ``EmbeddedEngine`` on the stack's fake network each, test_pool's
    ``FakeProcess``; the pipes' bytes moved by :meth:`pump`, the pool's
    gathered writes by the clock)."""

    def __init__(self, pairs=20, max_sessions=-1, delete_delay=30, lazy=False):
        from twisted.internet.testing import FakeDatagramTransport

        from omnirtp.call.negotiate import Interfaces, Negotiator
        from omnirtp.call.registry import CallRegistry, Timeouts
        from omnirtp.config.model import InterfaceSpec
        from omnirtp.control.commands import Dispatcher
        from omnirtp.control.ng import NGProtocol
        from omnirtp.media.engine import EmbeddedEngine
        from omnirtp.media.pool import WorkerPool
        from omnirtp.media.worker import parse_slice
        from omnirtp.test import fuzz
        from omnirtp.test.test_pool import FakeProcess
        from omnirtp.test.fakes import FakeNetwork, MemoryUDPReactor

        if fuzz.NGStack._certificate is None:
            fuzz.NGStack(pairs=1)
        certificate = fuzz.NGStack._certificate
        self.reactor = reactor = MemoryUDPReactor()
        reactor.advance(1700000000)
        self.net = net = FakeNetwork()
        self.processes = processes = []

        class Process(FakeProcess):
            """test_pool's in-memory worker process, over an embedded
            engine on the stack's fake network; a signal ends it."""

            def __init__(self, proto, args):
                slices = dict(parse_slice(a) for i, a in enumerate(args)
                              if i and args[i - 1] == "--slice")
                engine = EmbeddedEngine(reactor, slices, bind=net.bind,
                                        rng=random.Random(len(processes) + 1),
                                        certificate=certificate)
                FakeProcess.__init__(self, reactor, proto, args, 1000 + len(processes), engine)

            def signalProcess(self, signal):
                if not self.ended:
                    self.end(signal=9)

        def spawnProcess(proto, executable, args=(), env={}, path=None, uid=None, gid=None,
                         usePTY=0, childFDs=None):
            process = Process(proto, list(args))
            processes.append(process)
            proto.makeConnection(process)
            return process

        reactor.spawnProcess = spawnProcess
        more = {}
        if lazy and "lazy" in inspect.signature(WorkerPool).parameters:
            # the lazy hand-off (a checkout that has it): parked calls'
            # sockets bound on the same fake network
            more = {"lazy": True, "bind": net.bind}
        self.pool = WorkerPool(reactor, {"127.0.0.1": (30000, 30000 + 4 * pairs - 1)}, 2,
                               executable="python3", certificate=certificate, **more)
        self.registry = CallRegistry(self.pool, reactor,
                                     Timeouts(timeout=60, delete_delay=delete_delay),
                                     max_sessions=max_sessions)
        negotiator = Negotiator(self.registry,
                                Interfaces([InterfaceSpec("default", "127.0.0.1", None)]),
                                instance_id="fuzz", certificate=certificate)
        self.dispatch = Dispatcher(self.registry, negotiator, delete_delay=delete_delay)
        self.proto = NGProtocol(self.dispatch, reactor)
        self.transport = FakeDatagramTransport()
        self.proto.makeConnection(self.transport)
        self.pool.startService()
        self.pump()
        self._cookies = 0

    def pump(self):
        """Move what the pool and the workers wrote until nothing moves."""
        self.reactor.advance(0)
        while any([p.pump() for p in list(self.processes)]):
            self.reactor.advance(0)

    def send(self, request, pump=True):
        from omnirtp.control import bencode

        self._cookies += 1
        cookie = b"p%d" % self._cookies
        before = len(self.transport.written)
        self.proto.datagramReceived(cookie + b" " + bencode.encode(request), ("127.0.0.1", 5060))
        if pump:
            self.pump()
        return cookie, before

    def reply(self, cookie, before):
        from omnirtp.control import bencode
        from omnirtp.test.fuzz import _str

        written = self.transport.written[before:]
        replies = [_str(bencode.decode(data[len(cookie) + 1:])) for data, _addr in written
                   if data.startswith(cookie + b" ")]
        return replies

    def request(self, request):
        return self.reply(*self.send(request))


def replay_ng(data, out, label, make_stack, norm, taken):
    """The first 300 ng sequences, each on a new ``make_stack()``: every
    datagram's replies (``norm``-ed) and the log lines it brought
    (``taken()``), one second between datagrams."""
    from omnirtp.test import fuzz

    for i, sequence in enumerate(data["ng"][:300]):
        stack = make_stack()
        taken()
        for datagram in fuzz.unframe(sequence):
            if isinstance(datagram, bytes):
                n = len(stack.transport.written)
                stack.proto.datagramReceived(datagram, fuzz.NG_ADDR)
                stack.pump()
                out.append((label, i, norm([w[0] for w in stack.transport.written[n:]]),
                            taken()))
            stack.reactor.advance(1)
            stack.pump()


def pool_outputs(data, out, norm, configured):
    """The ng sequences, the corpus's cases and the combinations again
    with ``num-threads = 2`` (:class:`PoolStack`), each reply with the
    log lines it brought; then a worker that dies, hangs or refuses
    during each command."""
    from twisted.logger import formatEvent, globalLogBeginner, globalLogPublisher

    logs = []

    def observe(event):
        text = formatEvent(event)
        logs.append((event.get("log_level").name if event.get("log_level") else None, text))

    # (no start-up buffer printing the workers' failures on stderr)
    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)
    globalLogPublisher.addObserver(observe)

    def taken():
        got = list(logs)
        del logs[:]
        return got

    try:
        replay_ng(data, out, "pool ng", lambda: PoolStack(pairs=12, max_sessions=6), norm,
                  taken)
        for name, requests in data["cases"]:
            stack = PoolStack(pairs=20)
            taken()
            for request in requests:
                out.append(("pool case", name, norm(stack.request(request)), taken()))
        for i, sequence in enumerate(data["combos"]):
            if i % 50 == 0:
                stack = PoolStack(pairs=40)
                taken()
            for request in sequence:
                out.append(("pool combination", i, norm(stack.request(request)), taken()))
            out.append(("pool combination delete", i, norm(stack.request(
                {"command": "delete", "call-id": sequence[0]["call-id"], "from-tag": "ft"})),
                taken()))
        for name, replies in pool_failures(data):
            out.append(("pool failure", name, norm(replies), taken()))
    finally:
        globalLogPublisher.removeObserver(observe)


#: our media ports in PoolStack replies and logs (30000 up; a party's
#: 30000 in the awkward SDP is masked on both sides alike)
OUR_PORTS = r"\b30[01][0-9][0-9]\b"
#: the workers' engine's debug line of each allocate: with the lazy
#: hand-off it comes at the hand-off (or never), not at the offer
ALLOCATED = "allocated "


#: what lazy_outputs sends into our sockets, from where
RTP_PACKET = bytes([0x80, 0, 0, 1]) + b"\x00" * 8 + b"\xff" * 20
MEDIA_SOURCE = ("192.0.2.99", 7000)


def lazy_outputs(data, out, norm):
    """The ng sequences, the corpus's cases and the combinations of
    :func:`pool_outputs` once more, with the lazy hand-off where the
    checkout has it (``WorkerPool(lazy=True)``; a checkout without it runs
    them as before): each reply and the log lines it brought, with our
    port numbers replaced by ``PORT`` (a parked call's ports come from the
    control process's own pool, not the worker's: other numbers) and the
    workers' allocate debug lines left out."""
    import re

    from twisted.logger import formatEvent, globalLogBeginner, globalLogPublisher

    ports = re.compile(OUR_PORTS)
    logs = []

    def observe(event):
        text = formatEvent(event)
        if text.startswith(ALLOCATED) and " port pairs on " in text:
            return
        logs.append((event.get("log_level").name if event.get("log_level") else None, text))

    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)
    globalLogPublisher.addObserver(observe)

    def taken():
        got = ports.sub("PORT", repr(logs))
        del logs[:]
        return got

    def blind(reply):
        return ports.sub("PORT", norm(reply))

    counts = {}
    stacks = []

    def PoolStack(**kwargs):
        stack = PoolStack_(**kwargs)
        stacks.append(stack)
        return stack

    try:
        replay_ng(data, out, "lazy ng", lambda: PoolStack(pairs=12, max_sessions=6, lazy=True),
                  blind, taken)
        for name, requests in data["cases"]:
            stack = PoolStack(pairs=20, lazy=True)
            taken()
            for request in requests:
                out.append(("lazy case", name, blind(stack.request(request)), taken()))
        for i, sequence in enumerate(data["combos"]):
            if i % 50 == 0:
                stack = PoolStack(pairs=40, lazy=True)
                taken()
            for request in sequence:
                out.append(("lazy combination", i, blind(stack.request(request)), taken()))
            # media: one datagram into each socket of each call (a parked
            # call's first hands it to its worker), then the delete
            # reports what was relayed.  One at a time, by call-id, each
            # call's sockets in their order (the engine's stats: RTP, RTCP
            # of each pair as allocated), everything delivered before the
            # next: what a datagram does depends on what its call's other
            # sockets learnt before, so the order must not follow the port
            # numbers, which differ
            d = stack.pool.stats()
            stack.pump()
            for call_id, sockets in sorted(d.result.items()):
                for key in sockets:
                    if key in stack.net.bound:
                        stack.net.inject(key, RTP_PACKET, MEDIA_SOURCE)
                        stack.net.pump(stack.reactor)
                        stack.pump()
                        stack.net.pump(stack.reactor)
            out.append(("lazy combination media", i, taken()))
            out.append(("lazy combination delete", i, blind(stack.request(
                {"command": "delete", "call-id": sequence[0]["call-id"], "from-tag": "ft"})),
                taken()))
    finally:
        globalLogPublisher.removeObserver(observe)
    for stack in stacks:
        for key, n in getattr(stack.pool, "park_counts", {}).items():
            counts[key] = counts.get(key, 0) + n
    # (on stderr: what the lazy pass exercised, not compared)
    print("lazy pass: %d stacks, parked calls: %s" % (len(stacks), counts or "none (no lazy "
                                                       "hand-off in this checkout)"),
          file=sys.stderr)


PoolStack_ = PoolStack


def pool_failures(data):
    """(name, replies) of commands whose worker dies before it answers,
    does not answer in time, refuses the configuration or fails with an
    error the engine did not expect."""
    from omnirtp.errors import NGError

    offer = {"command": "offer", "call-id": "f1", "from-tag": "ft",
             "sdp": "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
                           "t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"}
    answer = dict(offer, command="answer", **{"to-tag": "tt"})
    delete = {"command": "delete", "call-id": "f1", "from-tag": "ft"}

    def worker_of(stack, call_id):
        slot = stack.pool._routes.get(call_id)
        return None if slot is None else slot.process.transport

    for step in ("offer", "answer", "delete"):
        for how in ("dies", "hangs", "refuses", "fails"):
            stack = PoolStack(pairs=10)
            requests = {"offer": [offer], "answer": [offer, answer],
                        "delete": [offer, answer, delete]}[step]
            replies = [stack.request(r) for r in requests[:-1]]
            last = requests[-1]
            if step == "offer":
                targets = stack.processes
            else:
                targets = [worker_of(stack, "f1")]
            for process in targets:
                if process is None:
                    continue
                engine = process.engine
                if how == "refuses":
                    def refuse(*args, **kwargs):
                        raise NGError("refused by the test")
                    engine._configure = engine._release = refuse
                    engine.stats_now = refuse
                elif how == "fails":
                    def fail(*args, **kwargs):
                        raise ValueError("a bug in the test's engine")
                    engine._configure = engine._release = fail
                    engine.stats_now = fail
            cookie, before = stack.send(last, pump=False)
            if how == "dies":
                stack.reactor.advance(0)
                for process in targets:
                    if process is not None:
                        process.end(signal=9)
                stack.pump()
            elif how == "hangs":
                stack.reactor.advance(0)
                for process in targets:
                    if process is not None:
                        del process.to_worker[:]
                stack.reactor.advance(stack.pool.request_timeout + 1)
                stack.pump()
            else:
                stack.pump()
            replies.append(stack.reply(cookie, before))
            # and the next command of the call, after it
            replies.append(stack.request(dict(offer, **{"from-tag": "ft2"})))
            yield "%s %s" % (step, how), replies


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", required=True, help="the checkout to compare with")
    p.add_argument("--root", default=ROOT)
    p.add_argument("--sdp", type=int, default=3000)
    p.add_argument("--ng", type=int, default=1500)
    p.add_argument("--combos", type=int, default=4000)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--without-media-keys", action="store_true",
                   help="also compare with the query/delete trees' per-stream SSRC and "
                        "media codec taken out (what a stream that received media shows): "
                        "how many outputs differ by more than those")
    args = p.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    sys.path.insert(0, ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = os.path.join(tmp, "inputs")
        with open(inputs, "wb") as f:
            pickle.dump(make_inputs(args), f)
        outputs = []
        for root in (args.before, args.root):
            path = os.path.join(tmp, "out%d" % len(outputs))
            subprocess.run([sys.executable, os.path.abspath(__file__), "--before", args.before,
                            "--child", root, inputs, path], check=True)
            with open(path, "rb") as f:
                outputs.append(pickle.load(f))
    before, after = outputs
    differ = [(a, b) for a, b in zip(before, after) if a != b]
    if len(before) != len(after):
        print("%d outputs before, %d after" % (len(before), len(after)))
    for a, b in differ[:3]:
        print("differs: %s %s\n  before: %s\n  after:  %s" % (a[0], a[1], str(a[2])[:2000],
                                                              str(b[2])[:2000]))
    print("%d outputs, %d differ" % (len(before), len(differ)))
    if args.without_media_keys:
        more = [(a, b) for a, b in differ
                if _without_media_keys(a) != _without_media_keys(b)]
        for a, b in more[:3]:
            import difflib
            import pprint
            print("differs by more: %s %s" % (a[0], a[1]))
            print("\n".join(list(difflib.unified_diff(
                pprint.pformat(_without_media_keys(a[2])).splitlines(),
                pprint.pformat(_without_media_keys(b[2])).splitlines(), lineterm=""))[:40]))
        print("%d differ with the per-stream SSRC and media codec taken out" % len(more))
        return 1 if more or len(before) != len(after) else 0
    return 1 if differ or len(before) != len(after) else 0


#: the per-stream SSRC (right after a stream's stats and crypto suite) and the media codec
#: (right after its protocol) in a reply's repr
_STREAM_SSRC = re.compile(r"('stats': \{[^{}]*\}(?:, 'crypto suite': '[^']*')?), 'SSRC': \d+")
_MEDIA_CODEC = re.compile(r"('protocol': '[^']*'), 'codec': '[^']*'")


def _without_media_keys(value):
    """``value`` (outputs: replies as text, or their parts) with each
    stream's ``SSRC`` and each media's ``codec`` taken out."""
    if isinstance(value, str):
        return _MEDIA_CODEC.sub(r"\1", _STREAM_SSRC.sub(r"\1", value))
    if isinstance(value, dict):
        drop = ()
        if "local port" in value and "stats" in value:
            drop = ("SSRC",)
        elif "index" in value and "streams" in value:
            drop = ("codec",)
        return {k: _without_media_keys(v) for k, v in value.items() if k not in drop}
    if isinstance(value, (list, tuple)):
        return type(value)(_without_media_keys(v) for v in value)
    return value


if __name__ == "__main__":
    sys.exit(main())
