"""The real-client check: Kamailio 5.6 + SIPp calls through the media proxy.

SIPp callers place calls through Kamailio (its ``rtpengine`` module pointed
at the proxy's ng port) to a SIPp callee.  SIPp does the signalling only;
the media comes from this test's own RTP endpoints, one UDP socket per call
and side, whose ports the SIPp injection files put into each call's SDP.
SIPp writes the proxy's address out of every SDP it receives to an events
file (``<exec>``); the test reads it, sends each call's RTP to the proxy
and records what every endpoint receives.  Every RTP packet is unique to
its call, side and phase (SSRC and payload), so the verdict is exact: each
endpoint must receive every packet the other side of its own call sent,
once, from the proxy's address in its SDP, and nothing else (none of its
own, none of another call's).  A proxy that echoes packets back or mixes
calls up fails.

The flows, all in one run per Kamailio route:

* ``basic``: ``CALLS`` calls, both sides talk, caller hangs up;
* ``hold``: one call put on hold by a re-INVITE (``a=sendonly``, the caller
  keeps sending) and resumed (``a=sendrecv``, both talk again);
* ``cancel``: one call CANCELled while it rings (INVITE, 180, CANCEL, 487);
* ``reject``: one call answered 486 after ringing.

The proxy runs with ``--delete-delay=0``, so when everything is over it
must list no call at all: BYE, CANCEL and the failure route each deleted
their session.  Each call is queried while it is up: the CANCELled and the
rejected one while they ring (the offer created them), the others once
their media is complete, whose ``totals`` must count exactly the RTP
datagrams that dumpcap saw going from the call's endpoints into the
proxy's port range.

Two Kamailio routes are exercised: ``rtpengine_manage()`` on every message,
and ``rtpengine_offer()``/``rtpengine_answer()``/``rtpengine_delete()``
(chosen per call by an ``X-RTP-Mode`` header, see the fixture
``kamailio/kamailio.cfg``), each with ``num-threads = 0`` and with the
seed's ``num-threads = 4`` (omnirtp's worker pool).

The omnirtp classes are the test that matters; the rtpengine classes run
the same calls against Debian's rtpengine 10.5 with the same
``--num-threads`` (rtpengine reads 0 as one thread per CPU core), which
proves the harness itself (if only an omnirtp class fails, omnirtp is at
fault).
"""

import collections
import functools
import math
import os
import re
import selectors
import socket
import struct
import time

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test.integration import peers

CALLS = 20            # basic calls per run
PACKETS = 50          # RTP packets each side sends per talk phase (20 ms apart: 1 s)
HOLD_PACKETS = 25     # RTP packets the caller sends while it holds the call
PTIME_MS = 20
CALL_RATE = 10        # basic calls started per second
CONCURRENT = 10       # basic calls up at once at most
PAUSE_MS = 3000       # callers stay this long in each call phase (longer than its media)
RING_MS = 1500        # the CANCELled and the rejected call ring this long
PROXY_PORTS = 200     # size of the proxy's media port range
SIPP_TIMEOUT = 120.0
DRAIN_S = 0.3         # after the last SIPp exits, collect stray datagrams this long

UAC, UAS = "uac", "uas"
OTHER = {UAC: UAS, UAS: UAC}
SIDE_CODE = {UAC: 1, UAS: 2}
PHASE_CODE = {"talk": 1, "hold": 2, "resume": 3, "restarted": 4}

# flow -> its calls' phases: (phase, the caller's event, the callee's event,
# {side: packets that side sends}); the phase starts once both events are in
FLOWS = {
    "basic": [("talk", "answer", "offer", {UAC: PACKETS, UAS: PACKETS})],
    "hold": [("talk", "answer", "offer", {UAC: PACKETS, UAS: PACKETS}),
             ("hold", "hold", "hold", {UAC: HOLD_PACKETS}),
             ("resume", "resume", "resume", {UAC: PACKETS, UAS: PACKETS})],
    "cancel": [],
    "reject": [],
}
# flow -> (caller scenario fixture, calls)
CALLERS = {
    "basic": ("uac.xml", CALLS),
    "hold": ("uac_hold.xml", 1),
    "cancel": ("uac_cancel.xml", 1),
    "reject": ("uac_reject.xml", 1),
}
# the SDP direction each side must see in each event (the proxy passes it on)
DIRECTIONS = {
    (UAS, "offer"): "sendrecv", (UAC, "answer"): "sendrecv",
    (UAS, "hold"): "sendonly", (UAC, "hold"): "recvonly",
    (UAS, "resume"): "sendrecv", (UAC, "resume"): "sendrecv",
}

EVENT = re.compile(
    r"^(uac|uas) (\d+) (\w+) (\d+) (\S+)"
    r"(?: c=IN IP4 ([0-9.]+) m=audio (\d+) a=(\w+))?$")


def expected_sent(flow, flows=FLOWS):
    """``{side: packets}`` that a call of ``flow`` (a key of ``flows``)
    sends in all."""
    total = {UAC: 0, UAS: 0}
    for _, _, _, sends in flows[flow]:
        for side, count in sends.items():
            total[side] += count
    return total


#: the tone each side's RTP carries after the marker (µ-law, 8 kHz)
TONES = {UAC: 440, UAS: 1000}


@functools.lru_cache(maxsize=None)
def _tone_fill(side, seq, count):
    """``count`` µ-law bytes of the side's tone, continuing across packets."""
    start = seq * 8 * PTIME_MS
    step = 2 * math.pi * TONES[side] / 8000
    return bytes(peers._ulaw(int(8000 * math.sin(step * (start + i)))) for i in range(count))


def rtp_packet(call, side, phase, seq):
    """One RTP datagram (PCMU, 20 ms) unique to ``(call, side, phase,
    seq)``: the SSRC names call and side, the payload starts with all four
    and goes on with the side's tone (a recording of the call carries it)."""
    ssrc = 0x4F000000 | (call << 4) | SIDE_CODE[side]
    header = struct.pack("!BBHII", 0x80, (0x80 if seq == 0 else 0),
                         (PHASE_CODE[phase] << 12 | seq) & 0xFFFF,
                         (seq * 8 * PTIME_MS) & 0xFFFFFFFF, ssrc)
    marker = b"omnirtp" + struct.pack("!HBBH", call, SIDE_CODE[side], PHASE_CODE[phase], seq)
    return header + marker + _tone_fill(side, seq, 8 * PTIME_MS - len(marker))


class Endpoint:
    """One side of one call: a UDP socket on 127.0.0.1 that sends a queue of
    RTP packets ``PTIME_MS`` apart to ``dest`` and records what arrives."""

    def __init__(self, sock):
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.key = None          # (call, side) once SIPp has assigned it
        self.dest = None         # the proxy's address from the latest SDP
        self.sources = set()     # every proxy address an SDP gave this side
        self.queue = collections.deque()
        self.next_send = 0.0
        self.sent = []
        self.received = []

    def due(self, now):
        return bool(self.queue) and now >= self.next_send

    def send_one(self, now):
        data = self.queue.popleft()
        self.sock.sendto(data, self.dest)
        self.sent.append(data)
        self.next_send = max(self.next_send + PTIME_MS / 1000.0, now - PTIME_MS / 1000.0)

    def start(self, packets, now):
        if not self.queue:
            self.next_send = now
        self.queue.extend(packets)

    def read(self):
        while True:
            try:
                data, source = self.sock.recvfrom(2048)
            except BlockingIOError:
                return
            self.received.append((data, source))


def media_problems(endpoints, expected):
    """What is wrong with the media the endpoints exchanged, as a list of
    sentences (empty when nothing is).

    ``endpoints`` maps ``(call, side)`` to an object with ``sent`` (the
    datagrams it sent), ``received`` (``(datagram, source)`` pairs) and
    ``sources`` (the proxy addresses the SDP gave that side); ``expected``
    maps ``(call, side)`` to the number of datagrams that side should have
    sent.  Each endpoint must have received every datagram its peer (the
    other side of the same call) sent, exactly once, each from one of its
    ``sources``, and no other datagram."""
    owner = {}
    for key, endpoint in endpoints.items():
        for data in endpoint.sent:
            owner[data] = key
    problems = []
    for key in sorted(endpoints):
        endpoint = endpoints[key]
        call, side = key
        peer = (call, OTHER[side])
        name = "call %d %s" % key
        if len(endpoint.sent) != expected.get(key, 0):
            problems.append("%s sent %d RTP packets, the plan says %d" % (
                name, len(endpoint.sent), expected.get(key, 0)))
        got, duplicates, wrong_source = set(), 0, set()
        own, foreign, unknown = 0, collections.Counter(), 0
        for data, source in endpoint.received:
            who = owner.get(data)
            if who == peer:
                if data in got:
                    duplicates += 1
                got.add(data)
                if source not in endpoint.sources:
                    wrong_source.add(source)
            elif who == key:
                own += 1
            elif who is None:
                unknown += 1
            else:
                foreign["call %d %s" % who] += 1
        peer_sent = len(endpoints[peer].sent) if peer in endpoints else 0
        if len(got) != peer_sent:
            problems.append("%s received %d of the %d RTP packets its peer sent" % (
                name, len(got), peer_sent))
        if duplicates:
            problems.append("%s received %d of its peer's packets twice" % (name, duplicates))
        if wrong_source:
            problems.append("%s received its peer's packets from %s, not from the proxy "
                            "address in its SDP %s" % (name, sorted(wrong_source),
                                                       sorted(endpoint.sources)))
        if own:
            problems.append("%s received %d of its own packets back" % (name, own))
        if foreign:
            problems.append("%s received packets of other calls: %s" % (
                name, ", ".join("%s: %d" % item for item in sorted(foreign.items()))))
        if unknown:
            problems.append("%s received %d datagrams nobody in the test sent" % (
                name, unknown))
    return problems


PROBE_SDP = ("v=0\r\no=probe 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
             "t=0 0\r\nm=audio 9 RTP/AVP 0\r\n")


def wait_until_serving(test, proxy, wait=60.0):
    """Return once the proxy answered an offer (then delete the probe call).

    Kamailio gives the proxy 1 s per try for an offer.  omnirtp answers
    ``ping`` as soon as its ng port is open, but with ``num-threads`` > 0 an
    offer waits until a media worker process is up, which on a loaded
    machine can take seconds more (the first calls would get 503): so the
    calls start only after a probe offer was answered."""
    deadline = time.monotonic() + wait
    message = {"command": "offer", "call-id": "kamailio-test-probe", "from-tag": "probe",
               "sdp": PROBE_SDP}
    while True:
        try:
            reply = proxy.ng.request(message, timeout=2.0, tries=1)
            break
        except peers.NGTimeout:
            if time.monotonic() > deadline:
                raise
    test.assertEqual(reply.get("result"), "ok", reply)
    reply = proxy.ng.request({"command": "delete", "call-id": "kamailio-test-probe",
                              "from-tag": "probe"})
    test.assertEqual(reply.get("result"), "ok", reply)


class Run:
    """The state of one run while the SIPp processes are up: endpoints,
    SIPp's events, the calls' phases and proxy queries."""

    def __init__(self, proxy, events_path, calls, flows=FLOWS):
        self.proxy = proxy
        self.events_path = events_path
        self.calls = calls                    # call -> flow
        self.flows = flows                    # flow -> phases, as FLOWS
        self.endpoints = {}                   # port -> Endpoint
        self.by_key = {}                      # (call, side) -> Endpoint
        self.events = {}                      # (call, side, event) -> match groups
        self.call_ids = {}                    # call -> SIP Call-ID
        self.phase = {call: 0 for call in calls}
        self.queries = {}                     # call -> ng query reply while up
        self.problems = []
        self._offset = 0
        self._partial = b""
        self.selector = selectors.DefaultSelector()

    def close(self):
        self.selector.close()
        for endpoint in self.endpoints.values():
            endpoint.sock.close()

    def bind(self, ports):
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                sock.bind((peers.LOOPBACK, port))
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
            endpoint = Endpoint(sock)
            self.endpoints[port] = endpoint
            self.selector.register(sock, selectors.EVENT_READ, endpoint)

    def assign(self, port, call, side):
        endpoint = self.endpoints.get(port)
        if endpoint is None:
            self.problems.append("SIPp put port %d into call %d's %s SDP: no endpoint "
                                 "there" % (port, call, side))
            return None
        if endpoint.key is None:
            endpoint.key = (call, side)
            self.by_key[(call, side)] = endpoint
        elif endpoint.key != (call, side):
            self.problems.append("port %d serves call %d %s and call %d %s" % (
                (port,) + endpoint.key + (call, side)))
        return endpoint

    def read_events(self, now):
        with open(self.events_path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self.event(line.decode("ascii", "replace").strip(), now)

    def event(self, line, now):
        match = EVENT.match(line)
        if match is None:
            self.problems.append("unreadable SIPp event line %r" % (line,))
            return
        side, call, name, port, call_id, host, media_port, direction = match.groups()
        call, port = int(call), int(port)
        if call not in self.calls:
            self.problems.append("SIPp event for unknown call %d: %r" % (call, line))
            return
        if self.call_ids.setdefault(call, call_id) != call_id:
            self.problems.append("call %d has two Call-IDs: %s, %s" % (
                call, self.call_ids[call], call_id))
        self.events[(call, side, name)] = match.groups()
        endpoint = self.assign(port, call, side)
        if endpoint is not None and host is not None:
            endpoint.dest = (host, int(media_port))
            endpoint.sources.add(endpoint.dest)
            want = DIRECTIONS.get((side, name))
            if direction != want:
                self.problems.append("call %d: the %s's SDP in event %s says a=%s, not a=%s"
                                     % (call, side, name, direction, want))
        if name == "ringing":
            self.query(call)
        self.advance(call, now)

    def mark(self, call, name, now):
        """An event of the test's own (not SIPp's) for both sides of
        ``call``: a phase may wait for it as for SIPp's events."""
        for side in (UAC, UAS):
            self.events[(call, side, name)] = None
        self.advance(call, now)

    def advance(self, call, now):
        """Start the call's next phase once both sides' SIPp saw its SDP."""
        phases = self.flows[self.calls[call]]
        index = self.phase[call]
        if index >= len(phases):
            return
        phase, caller_event, callee_event, sends = phases[index]
        if (call, UAC, caller_event) not in self.events or \
                (call, UAS, callee_event) not in self.events:
            return
        self.phase[call] = index + 1
        for side, count in sends.items():
            endpoint = self.by_key.get((call, side))
            if endpoint is not None:  # else assign() has reported it
                endpoint.start([rtp_packet(call, side, phase, seq) for seq in range(count)],
                               now)

    def query(self, call):
        reply = self.proxy.ng.request({"command": "query", "call-id": self.call_ids[call]})
        self.queries[call] = reply

    def media_complete(self, call):
        """True once both sides sent and received all of the call's media."""
        if self.phase[call] < len(self.flows[self.calls[call]]):
            return False
        want = expected_sent(self.calls[call], self.flows)
        for side in (UAC, UAS):
            endpoint = self.by_key.get((call, side))
            peer = self.by_key.get((call, OTHER[side]))
            if endpoint is None or peer is None:
                return False
            if len(endpoint.sent) < want[side] or len(endpoint.received) < want[OTHER[side]]:
                return False
        return True

    def step(self, now):
        """Read events, send what is due, wait for datagrams up to one tick."""
        self.read_events(now)
        wait = PTIME_MS / 1000.0 / 2
        for endpoint in self.by_key.values():
            if endpoint.queue:
                if endpoint.due(now):
                    endpoint.send_one(now)
                wait = min(wait, max(0.0, endpoint.next_send - now))
        for key, _ in self.selector.select(wait):
            key.data.read()
        for call in self.calls:
            if call not in self.queries and self.flows[self.calls[call]] and \
                    self.media_complete(call):
                self.query(call)


class KamailioCallsMixin:
    """Place the calls of every flow through Kamailio's route and the proxy
    that :meth:`start_proxy` starts with ``NUM_THREADS``; check calls,
    media, the proxy's counters and that no session is left."""

    NUM_THREADS = 0
    INSTANCES = 1         # media proxies in Kamailio's one rtpengine set
    FLOWS = FLOWS         # flow -> its calls' phases
    CALLERS = CALLERS     # flow -> (caller scenario fixture, calls)
    #: more proxy options, and Kamailio defines (RTP_FLAGS: the offer/answer flags)
    PROXY_ARGS = ()
    KAMAILIO_DEFINES = {}

    def start_proxy(self, ng_port, port_min, port_max, extra_args):
        raise NotImplementedError()

    def start_proxies(self, ng_ports, port_min, port_max, extra_args):
        """Start ``INSTANCES`` proxies (one per ng port) sharing the media
        port range; return ``(proxy, NG_SOCK)``: what the run queries
        (``.ng.request``) and Kamailio's ``rtpengine_sock`` value."""
        (ng_port,) = ng_ports
        proxy = self.start_proxy(ng_port, port_min, port_max, extra_args)
        wait_until_serving(self, proxy)
        return proxy, '"udp:%s:%d"' % (peers.LOOPBACK, ng_port)

    def setUp(self):
        for program in ("kamailio", "sipp", "dumpcap"):
            peers.find_program(program)  # skip early, naming what is missing

    def during_calls(self, run, callers, sip_port, now):
        """Called after each step of the run while callers are up (the
        SIPp ``callers`` by flow; Kamailio listens on ``sip_port``)."""

    def proxy_counted(self, flow, ingress):
        """The RTP packets the proxy's ``totals`` must count for a call of
        ``flow`` whose endpoints sent ``ingress`` datagrams into it (the
        capture's count)."""
        return ingress

    def place_calls(self, mode):
        """Run every flow with Kamailio's ``mode`` route; return a dict of what
        was observed (for the assertions)."""
        sip_port, uas_port, *ng_ports = peers.free_ports(2 + self.INSTANCES)
        port_min, port_max = peers.free_port_range(PROXY_PORTS * self.INSTANCES)
        proxy, ng_sock = self.start_proxies(ng_ports, port_min, port_max, [
            "--delete-delay=0", "--num-threads=%d" % (self.NUM_THREADS,)] + list(self.PROXY_ARGS))

        calls, index = {}, 0
        for flow, (_, count) in sorted(self.CALLERS.items()):
            for _ in range(count):
                calls[index] = flow
                index += 1
        total = len(calls)
        # one RTP port per call and side, even, with the odd one above
        # left free (as RTCP's would be); SIPp's own media ports unused.
        # Not in the proxy's range, which it binds only as calls come.
        while True:
            first, last = peers.free_port_range(4 * total)
            if last < port_min or first > port_max:
                break
        uac_ports = {call: first + 2 * call for call in calls}
        uas_ports = [first + 2 * (total + n) for n in range(total)]

        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        events = os.path.join(work, "events")
        open(events, "wb").close()
        run = Run(proxy, events, calls, self.FLOWS)
        self.addCleanup(run.close)
        run.bind(sorted(uac_ports.values()) + uas_ports)

        self.kamailio = peers.start_kamailio(self, sip_port, dict({
            "NG_SOCK": ng_sock,
            "UAS": '"sip:%s:%d"' % (peers.LOOPBACK, uas_port),
            "NODES": str(self.INSTANCES),
        }, **self.KAMAILIO_DEFINES))
        fixtures = os.path.join(peers.FIXTURES, "sipp")
        uas_inf = os.path.join(work, "uas.csv")
        with open(uas_inf, "w") as f:
            f.write("SEQUENTIAL\n" + "".join("%d\n" % port for port in uas_ports))
        uas_xml = peers.render(os.path.join(fixtures, "uas.xml"), work, EVENTS=events,
                               RING_MS=RING_MS)

        sniffer = peers.capture(self, port_min, port_max)
        # SIPp binds its media port and the ports next to it (RTCP, video):
        # a block of four each, outside the kernel's ephemeral range (where
        # free_ports' picks sit among everyone's sockets) and the proxy's
        while True:
            first, last = peers.free_port_range(4 * (1 + len(self.CALLERS)))
            if last < port_min or first > port_max:
                break
        sipp_media = list(range(first, last + 1, 4))
        uas = peers.start_sipp(self, "uas", uas_xml, uas_port, sipp_media[0], calls=total,
                               extra_args=["-inf", uas_inf])
        callers = {}
        sip_ports = peers.free_ports(len(self.CALLERS))
        for n, (flow, (fixture, count)) in enumerate(sorted(self.CALLERS.items())):
            inf = os.path.join(work, "uac-%s.csv" % (flow,))
            with open(inf, "w") as f:
                f.write("SEQUENTIAL\n" + "".join(
                    "%d;%d\n" % (call, uac_ports[call])
                    for call in sorted(calls) if calls[call] == flow))
            xml = peers.render(os.path.join(fixtures, fixture), work, EVENTS=events,
                               PAUSE_MS=PAUSE_MS, RING_MS=RING_MS)
            extra = ["-inf", inf]
            if count > 1:
                extra += ["-r", str(CALL_RATE), "-l", str(CONCURRENT)]
            callers[flow] = peers.start_sipp(
                self, "uac-" + flow, xml, sip_ports[n], sipp_media[1 + n],
                "%s:%d" % (peers.LOOPBACK, sip_port), calls=count, keys={"mode": mode},
                extra_args=extra)

        now = time.monotonic()
        deadline = now + SIPP_TIMEOUT
        while any(caller.running() for caller in callers.values()):
            now = time.monotonic()
            if now > deadline:
                break
            run.step(now)
            self.during_calls(run, callers, sip_port, now)
        # the UAS ends after all calls; when some never reached it, it
        # would wait for its -timeout: stop it soon instead
        uas_deadline = time.monotonic() + (5.0 if now <= deadline else 0.0)
        while uas.running() and time.monotonic() < uas_deadline:
            run.step(time.monotonic())
        drain_end = time.monotonic() + DRAIN_S
        while time.monotonic() < drain_end:
            run.step(time.monotonic())
        run.read_events(time.monotonic())

        results = {}
        for flow, caller in callers.items():
            try:
                code = caller.wait(1.0)
            except peers.PeerFailed:
                code = None
            results[flow] = (code, caller.stats() if code is not None else None, caller)
        try:
            uas_code = uas.wait(1.0)
        except peers.PeerFailed:
            uas_code = None
        datagrams = sniffer.stop()

        listed = proxy.ng.request({"command": "list", "limit": 1000})
        left = {flow: proxy.ng.request({"command": "query", "call-id": run.call_ids[call]})
                for call, flow in calls.items() if flow in ("cancel", "reject")
                and call in run.call_ids}
        return {
            "calls": calls,
            "callers": results,
            "uas": (uas_code, uas.stats() if uas_code is not None else None, uas),
            "run": run,
            "datagrams": datagrams,
            "port_range": (port_min, port_max),
            "listed": listed,
            "left": left,
        }

    def check_calls(self, mode):
        """Place the calls and check them; return what :meth:`place_calls`
        observed (for a subclass's further checks)."""
        seen = self.place_calls(mode)
        calls, run = seen["calls"], seen["run"]
        for flow, (code, stats, caller) in sorted(seen["callers"].items()):
            count = self.CALLERS[flow][1]
            self.assertIsNot(stats, None, "the %s caller did not finish\n%s" % (
                flow, caller.errors()))
            self.assertEqual((code, stats.successful, stats.failed), (0, count, 0),
                             "%s caller: exit code, successful, failed calls\n%s" % (
                                 flow, caller.errors()))
        uas_code, uas_stats, uas = seen["uas"]
        self.assertIsNot(uas_stats, None, "the UAS did not finish\n%s" % (uas.errors(),))
        self.assertEqual((uas_code, uas_stats.successful, uas_stats.failed),
                         (0, len(calls), 0), "UAS: exit code, successful, failed calls\n%s"
                         % (uas.errors(),))
        self.assertEqual(run.problems, [], "SIPp events")
        self.assertEqual(sorted(run.call_ids), sorted(calls), "calls SIPp reported")

        # the media: each endpoint got exactly its peer's packets
        expected = {}
        for call, flow in calls.items():
            for side, count in expected_sent(flow, self.FLOWS).items():
                expected[(call, side)] = count
        self.assertEqual(sorted(run.by_key), sorted(expected), "endpoints SIPp used")
        problems = media_problems(run.by_key, expected)
        if problems:
            self.fail("%d media problems:\n%s" % (len(problems), "\n".join(problems)))

        # each call was there while up; its counters match the capture
        port_min, port_max = seen["port_range"]
        in_range = lambda port: port_min <= port <= port_max  # noqa: E731
        for call, flow in sorted(calls.items()):
            reply = run.queries.get(call)
            self.assertIsNot(reply, None, "call %d (%s) was never queried" % (call, flow))
            self.assertEqual(reply.get("result"), "ok", "query of call %d (%s) while up: %r"
                             % (call, flow, reply))
            if not self.FLOWS[flow]:
                continue
            ports = {run.by_key[(call, side)].port for side in (UAC, UAS)}
            ingress = [d for d in seen["datagrams"] if d[1] in ports and in_range(d[3])]
            egress = [d for d in seen["datagrams"] if in_range(d[1]) and d[3] in ports]
            self.assertEqual((len(ingress), len(egress)),
                             (sum(expected_sent(flow, self.FLOWS).values()),) * 2,
                             "call %d: RTP datagrams into and out of the proxy (capture)"
                             % (call,))
            self.assertEqual(reply["totals"]["RTP"]["packets"],
                             self.proxy_counted(flow, len(ingress)),
                             "call %d: the proxy's RTP packet count vs the capture" % (call,))
            listed_ports = set()
            for tag in reply["tags"].values():
                for media in tag.get("medias", ()):
                    for stream in media.get("streams", ()):
                        listed_ports.add(stream["local port"])
            used = {d[3] for d in ingress} | {d[1] for d in egress}
            self.assertEqual(len({d[3] for d in ingress}), 2,
                             "call %d: one proxy RTP port per side" % (call,))
            self.assertEqual(used - listed_ports, set(),
                             "call %d: captured ports its query does not list" % (call,))

        # nothing is left: BYE, CANCEL and the 486 deleted every session
        self.assertEqual(seen["listed"].get("result"), "ok", seen["listed"])
        self.assertEqual(seen["listed"]["calls"], [], "calls the proxy still lists")
        for flow, reply in sorted(seen["left"].items()):
            self.assertEqual((reply.get("result"), reply.get("error-reason")),
                             ("error", "Unknown call-id"),
                             "the %s call after it ended: %r" % (flow, reply))
        self.assertEqual(sorted(seen["left"]),
                         sorted(set(self.CALLERS) & {"cancel", "reject"}))
        return seen

    def test_rtpengine_manage(self):
        """Every flow with rtpengine_manage() on INVITE, replies, BYE and
        CANCEL: calls complete, each endpoint gets exactly its peer's RTP
        through the proxy, the proxy counts it as the capture does, and no
        session is left."""
        self.check_calls("manage")

    def test_rtpengine_offer_answer_delete(self):
        """The same with rtpengine_offer(), rtpengine_answer() and
        rtpengine_delete()."""
        self.check_calls("explicit")


class RtpengineKamailioTests(KamailioCallsMixin, SynchronousTestCase):
    """The calls against Debian's rtpengine 10.5 with --num-threads=0 (one
    thread per core): proves the harness."""

    def start_proxy(self, ng_port, port_min, port_max, extra_args):
        return peers.start_rtpengine(self, ng_port, port_min, port_max, extra_args)


class RtpengineKamailioThreadsTests(RtpengineKamailioTests):
    """The same with --num-threads=4."""

    NUM_THREADS = 4


class OmnirtpKamailioTests(KamailioCallsMixin, SynchronousTestCase):
    """The calls against omnirtp with num-threads = 0 (relaying in the
    control process)."""

    def start_proxy(self, ng_port, port_min, port_max, extra_args):
        return peers.start_omnirtp(self, ng_port, port_min, port_max, extra_args)


class OmnirtpKamailioRecordingTests(OmnirtpKamailioTests):
    """The same calls with ``record-call`` in Kamailio's offer/answer flags
    and omnirtp recording (``recording-format = eth``): every call leaves a
    pcap and its metadata named after its Call-ID; each call with media
    holds both sides' RTP (tshark lists the two streams, nothing malformed)
    and ``omnirtp-pcap2wav`` makes a stereo WAV of it whose channels carry
    the two sides' tones."""

    KAMAILIO_DEFINES = {"RTP_FLAGS": '"replace-origin replace-session-connection record-call"'}

    def setUp(self):
        OmnirtpKamailioTests.setUp(self)
        peers.find_program("tshark")
        self.spool = os.path.abspath(self.mktemp())
        self.PROXY_ARGS = ["--recording-dir=%s" % self.spool, "--recording-format=eth"]

    def check_calls(self, mode):
        from omnirtp.recording.spool import escape
        from omnirtp.test.integration import test_recording as rec

        seen = OmnirtpKamailioTests.check_calls(self, mode)
        calls, run = seen["calls"], seen["run"]
        listing = {d: sorted(os.listdir(os.path.join(self.spool, d)))
                   for d in ("pcaps", "metadata", "tmp")}
        self.assertEqual(listing["tmp"], [])
        pcaps = {}
        for call in calls:
            prefix = escape(run.call_ids[call]) + "-"
            [name] = [n for n in listing["pcaps"] if n.startswith(prefix)]
            self.assertIn("rtpengine-meta-%s.txt" % name[:-5], listing["metadata"])
            pcaps[call] = os.path.join(self.spool, "pcaps", name)
        self.assertEqual(len(listing["pcaps"]), len(calls))
        # with media: the hold call and two basic calls, all the way through
        checked = [c for c, flow in sorted(calls.items()) if flow == "hold"]
        checked += [c for c, flow in sorted(calls.items()) if flow == "basic"][:2]
        for call in checked:
            sent = expected_sent(calls[call])
            ssrcs = ["0x%08x" % (0x4F000000 | (call << 4) | SIDE_CODE[side]) for side in (UAC, UAS)]
            rec.RecordingTests.check_tshark(self, pcaps[call], sent[UAC] + sent[UAS], ssrcs)
            heard = self.tones(pcaps[call])
            want = sorted(TONES.values())
            self.assertTrue(all(abs(h - w) <= rec.TOLERANCE for h, w in zip(heard, want)),
                            "call %d: tones %r in the recording, played %r" % (call, heard, want))
        return seen

    def tones(self, path):
        """The peak frequencies of the two channels of pcap2wav's WAV, sorted."""
        import array
        import subprocess
        import sys
        import wave

        from omnirtp.test.integration.test_recording import peak_frequency
        out = path + ".wav"
        result = subprocess.run([sys.executable, "-m", "omnirtp.recording.pcap2wav", path, out],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                                env=dict(os.environ, PYTHONPATH=peers.ROOT))
        self.assertEqual(result.returncode, 0, result.stdout)
        with wave.open(out) as w:
            self.assertEqual((w.getnchannels(), w.getframerate()), (2, 8000))
            frames = array.array("h", w.readframes(w.getnframes()))
        if sys.byteorder == "big":
            frames.byteswap()
        left, right = frames[0::2], frames[1::2]
        # the second of talk: both sides' tone (the marker bytes are noise)
        start = next(i for i, v in enumerate(left) if v) + 1600
        return sorted(peak_frequency(list(channel[start:start + 1600]), 8000)
                      for channel in (left, right))


class OmnirtpKamailioWorkersTests(OmnirtpKamailioTests):
    """The same with the seed's num-threads = 4 (the worker pool)."""

    NUM_THREADS = 4


class HarnessTests(SynchronousTestCase):
    """The harness's pure parts: what the call tests' verdicts rest on."""

    def test_pcap_round_trip(self):
        """write_rtp_pcap writes PACKETS RTP datagrams that read_udp_pcap
        reads back with their ports and lengths (12-byte header + 160 bytes
        of PCMU for 20 ms)."""
        path = os.path.join(os.path.abspath(self.mktemp()))
        peers.write_rtp_pcap(path, packets=7, ptime_ms=20, src=("10.1.2.3", 4000),
                             dst=("10.3.2.1", 5000))
        self.assertEqual(peers.read_udp_pcap(path),
                         [("10.1.2.3", 4000, "10.3.2.1", 5000, 172)] * 7)

    def test_read_udp_pcap_rejects_other_files(self):
        """A file that is not libpcap (e.g. pcapng) is refused by name."""
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(b"\x0a\x0d\x0d\x0a" + b"\x00" * 28)
        error = self.assertRaises(ValueError, peers.read_udp_pcap, path)
        self.assertIn("not a libpcap file", str(error))

    def test_ulaw(self):
        """G.711 mu-law codes of silence and of both clipping ends."""
        self.assertEqual([peers._ulaw(s) for s in (0, -1, 32767, -32768)],
                         [0xFF, 0x7F, 0x80, 0x00])

    def test_render_refuses_missing_value(self):
        """A fixture placeholder without a value is an error, not a file
        SIPp would choke on later."""
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        template = os.path.join(peers.FIXTURES, "sipp", "uac.xml")
        self.assertRaises(KeyError, peers.render, template, work, EVENTS="/x/events")
        rendered = peers.render(template, work, EVENTS="/x/events", PAUSE_MS=10)
        with open(rendered) as f:
            text = f.read()
        self.assertIn("' >> /x/events\"/>", text)
        self.assertIn('<pause milliseconds="10"/>', text)

    def test_fixtures_render(self):
        """Every SIPp fixture renders with the values the calls give it."""
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        names = sorted(fixture for fixture, _ in CALLERS.values()) + ["uas.xml"]
        for name in names:
            peers.render(os.path.join(peers.FIXTURES, "sipp", name), work,
                         EVENTS="/x/events", PAUSE_MS=10, RING_MS=10)
        self.assertEqual(sorted(os.listdir(work)), sorted(names))

    def test_event_lines(self):
        """The lines SIPp's <exec> writes: with the SDP's address and
        direction, or without SDP (ringing)."""
        match = EVENT.match("uas 7 hold 31120 1-17735@127.0.0.1 c=IN IP4 127.0.0.1 "
                            "m=audio 10688 a=sendonly")
        self.assertEqual(match.groups(), ("uas", "7", "hold", "31120", "1-17735@127.0.0.1",
                                          "127.0.0.1", "10688", "sendonly"))
        match = EVENT.match("uac 20 ringing 31108 1-17730@127.0.0.1")
        self.assertEqual(match.groups(), ("uac", "20", "ringing", "31108",
                                          "1-17730@127.0.0.1", None, None, None))
        self.assertIsNone(EVENT.match("uac 20 answer 31108 1-1@x c=IN IP4 127.0.0.1"))

    def test_rtp_packets_unique(self):
        """Every (call, side, phase, seq) has its own datagram, a 172-byte
        PCMU packet whose SSRC names call and side."""
        packets = {rtp_packet(call, side, phase, seq)
                   for call in range(23) for side in (UAC, UAS)
                   for phase in PHASE_CODE for seq in range(PACKETS)}
        self.assertEqual(len(packets), 23 * 2 * len(PHASE_CODE) * PACKETS)
        self.assertEqual({len(p) for p in packets}, {172})
        packet = rtp_packet(5, UAS, "resume", 3)
        self.assertEqual(struct.unpack("!BBHII", packet[:12]),
                         (0x80, 0, 0x3003, 3 * 160, 0x4F000052))
        self.assertEqual(packet[12:25], b"omnirtp\x00\x05\x02\x03\x00\x03")

    def test_free_ports_distinct(self):
        """free_ports never hands out the same port twice in one call."""
        ports = peers.free_ports(20)
        self.assertEqual(len(set(ports)), 20)

    def test_udp_bound(self):
        """udp_bound sees a socket bound to the address and port, or to the
        wildcard and the port, and no other; the same without ``ss``
        (from /proc/net/udp).  A socket is looked for up to 5 times, as
        _wait_for polls: a read of /proc/net/udp while other processes
        open and close sockets can miss one."""
        own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(own.close)
        own.bind((peers.LOOPBACK, 0))
        wild = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(wild.close)
        wild.bind(("0.0.0.0", 0))

        def seen(port, address=peers.LOOPBACK):
            return any(peers.udp_bound(port, address) for _ in range(5))

        for _ in ("ss", "/proc/net/udp"):
            self.assertEqual([seen(own.getsockname()[1]), seen(wild.getsockname()[1]),
                              seen(own.getsockname()[1], "127.0.0.2")], [True, True, False])
            self.patch(peers.shutil, "which", lambda *args, **kwargs: None)

    def test_run_tests_summary(self):
        """scripts/run-tests reads trial's closing line into passed/failed
        counts (CI's reader depends on the total it prints)."""
        from importlib.machinery import SourceFileLoader
        from importlib.util import module_from_spec, spec_from_loader
        loader = SourceFileLoader("omnirtp_run_tests",
                                  os.path.join(peers.ROOT, "scripts", "run-tests"))
        module = module_from_spec(spec_from_loader(loader.name, loader))
        loader.exec_module(module)
        self.assertEqual(module.parse_summary(
            "...\nFAILED (skips=1, failures=2, errors=1, successes=10)\n"), (10, 3, 1))
        self.assertEqual(module.parse_summary("PASSED (successes=5)\n"), (5, 0, 0))
        self.assertIsNone(module.parse_summary("Traceback (most recent call last):\n"))
        self.assertNotIn("omnirtp.test.integration.test_kamailio", module.unit_modules())


class Fake:
    """A stand-in endpoint for :func:`media_problems`."""

    def __init__(self, sent, received=(), sources=(("127.0.0.1", 20000),)):
        self.sent = list(sent)
        self.received = list(received)
        self.sources = set(sources)


class MediaProblemsTests(SynchronousTestCase):
    """The media verdict on made-up exchanges: it passes a relaying proxy
    and names every way a proxy can get the media wrong."""

    PROXY = ("127.0.0.1", 20000)

    def exchange(self):
        """Two calls, each side 3 packets, all delivered right."""
        sent = {(call, side): [rtp_packet(call, side, "talk", seq) for seq in range(3)]
                for call in (0, 1) for side in (UAC, UAS)}
        return {key: Fake(packets, [(p, self.PROXY) for p in sent[(key[0], OTHER[key[1]])]])
                for key, packets in sent.items()}

    def expected(self, count=3):
        return {(call, side): count for call in (0, 1) for side in (UAC, UAS)}

    def test_relayed(self):
        """Each side got its peer's packets from the proxy: no problem."""
        self.assertEqual(media_problems(self.exchange(), self.expected()), [])

    def test_echo(self):
        """A proxy that sends packets back to their sender fails."""
        endpoints = self.exchange()
        for endpoint in endpoints.values():
            endpoint.received = [(p, self.PROXY) for p in endpoint.sent]
        problems = media_problems(endpoints, self.expected())
        self.assertIn("call 0 uac received 0 of the 3 RTP packets its peer sent", problems)
        self.assertIn("call 0 uac received 3 of its own packets back", problems)
        self.assertEqual(len(problems), 8)

    def test_calls_mixed_up(self):
        """A proxy that delivers call 1's media to call 0 (and back) fails."""
        endpoints = self.exchange()
        endpoints[(0, UAC)].received, endpoints[(1, UAC)].received = \
            endpoints[(1, UAC)].received, endpoints[(0, UAC)].received
        self.assertEqual(media_problems(endpoints, self.expected()), [
            "call 0 uac received 0 of the 3 RTP packets its peer sent",
            "call 0 uac received packets of other calls: call 1 uas: 3",
            "call 1 uac received 0 of the 3 RTP packets its peer sent",
            "call 1 uac received packets of other calls: call 0 uas: 3",
        ])

    def test_lost_duplicated_unknown(self):
        """A lost, a doubled and a foreign datagram are each named."""
        endpoints = self.exchange()
        received = endpoints[(1, UAS)].received
        endpoints[(1, UAS)].received = received[:2] + [received[0], (b"junk", self.PROXY)]
        self.assertEqual(media_problems(endpoints, self.expected()), [
            "call 1 uas received 2 of the 3 RTP packets its peer sent",
            "call 1 uas received 1 of its peer's packets twice",
            "call 1 uas received 1 datagrams nobody in the test sent",
        ])

    def test_not_through_the_proxy(self):
        """Packets straight from the peer (the proxy rewrote the SDP but did
        not relay) come from the wrong address."""
        endpoints = self.exchange()
        endpoints[(0, UAS)].received = [(p, ("127.0.0.1", 31000))
                                        for p, _ in endpoints[(0, UAS)].received]
        self.assertEqual(media_problems(endpoints, self.expected()), [
            "call 0 uas received its peer's packets from [('127.0.0.1', 31000)], not from "
            "the proxy address in its SDP [('127.0.0.1', 20000)]",
        ])

    def test_plan_not_carried_out(self):
        """A side that sent fewer packets than planned (a phase that never
        started) fails even though its peer got all it sent."""
        endpoints = self.exchange()
        expected = self.expected()
        expected[(1, UAC)] = 5
        self.assertEqual(media_problems(endpoints, expected), [
            "call 1 uac sent 3 RTP packets, the plan says 5",
        ])
