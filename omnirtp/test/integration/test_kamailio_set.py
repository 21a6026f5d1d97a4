"""Several omnirtp instances in one Kamailio rtpengine set (issue 10).

The calls of ``test_kamailio`` (20 basic calls, a hold/resume, a CANCEL and
a 486, the same per-call media verdict) go through Kamailio with two
omnirtp daemons in one set::

    modparam("rtpengine", "rtpengine_sock",
             "udp:127.0.0.1:P1 udp:127.0.0.1:P2")

Each daemon has its own ng port and its own half of the media port range.
Kamailio's module picks a node per call (both have weight 1) and sends the
call's later messages (answer, re-INVITEs, delete) to the same node.  The
test asks both daemons for each call: exactly one of them must know it,
and that one is the call's owner.  Beyond every check of ``test_kamailio``
(every call completes, each endpoint gets exactly its peer's RTP from the
address in its SDP, the owner's counters match the capture, no session is
left on either daemon), it checks that both daemons owned some calls and
that every call's media went through ports of its owner's range only.
"""

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test.integration import peers
from omnirtp.test.integration.test_kamailio import (
    UAC, UAS, KamailioCallsMixin, wait_until_serving)


class InstanceSet:
    """Several proxies seen as one by the calls' run: ``ng.request`` sends
    ``query`` and ``list`` to every instance and combines the replies.

    ``owners`` maps each call-id that exactly one instance knew to that
    instance's index; ``ranges[i]`` is instance ``i``'s media port range."""

    def __init__(self, proxies, ranges):
        self.proxies = list(proxies)
        self.ranges = list(ranges)
        self.owners = {}
        self.ng = self

    def request(self, message, timeout=None, tries=None):
        command = message.get("command")
        replies = [proxy.ng.request(message, timeout=timeout, tries=tries)
                   for proxy in self.proxies]
        ok = [i for i, reply in enumerate(replies) if reply.get("result") == "ok"]
        if command == "list":
            if len(ok) != len(replies):
                return replies[min(set(range(len(replies))) - set(ok))]
            return {"result": "ok",
                    "calls": [call for reply in replies for call in reply.get("calls", ())]}
        if command != "query":
            raise ValueError("InstanceSet passes on query and list only, not %r" % (command,))
        call_id = message["call-id"]
        if len(ok) == 1:
            self.owners[call_id] = ok[0]
            return replies[ok[0]]
        if ok:
            return {"result": "error",
                    "error-reason": "call %s known to instances %s" % (call_id, ok)}
        answers = {(reply.get("result"), reply.get("error-reason")) for reply in replies}
        if len(answers) == 1:
            return replies[0]
        return {"result": "error",
                "error-reason": "instances disagree on %s: %r" % (call_id, replies)}


def stream_ports(reply):
    """The local ports a query reply lists for the call's streams."""
    ports = set()
    for tag in reply["tags"].values():
        for media in tag.get("medias", ()):
            for stream in media.get("streams", ()):
                ports.add(stream["local port"])
    return ports


class OmnirtpKamailioSetTests(KamailioCallsMixin, SynchronousTestCase):
    """Two omnirtp daemons (num-threads = 0) in one Kamailio set."""

    INSTANCES = 2

    def start_proxy(self, ng_port, port_min, port_max, extra_args):
        return peers.start_omnirtp(self, ng_port, port_min, port_max, extra_args)

    def start_proxies(self, ng_ports, port_min, port_max, extra_args):
        size = (port_max - port_min + 1) // len(ng_ports)
        ranges = [(port_min + i * size, port_min + (i + 1) * size - 1)
                  for i in range(len(ng_ports))]
        proxies = [self.start_proxy(ng_port, first, last, extra_args)
                   for ng_port, (first, last) in zip(ng_ports, ranges)]
        for proxy in proxies:
            wait_until_serving(self, proxy)
        sock = " ".join("udp:%s:%d" % (peers.LOOPBACK, port) for port in ng_ports)
        return InstanceSet(proxies, ranges), '"%s"' % (sock,)

    def check_calls(self, mode):
        seen = KamailioCallsMixin.check_calls(self, mode)
        run, calls = seen["run"], seen["calls"]
        instances = run.proxy
        owner = {call: instances.owners.get(run.call_ids[call]) for call in calls}
        self.assertEqual([call for call, index in owner.items() if index is None], [],
                         "calls no single instance knew while up")
        per_instance = [sorted(call for call in calls if owner[call] == index)
                        for index in range(self.INSTANCES)]
        for index, owned in enumerate(per_instance):
            self.assertTrue(owned, "instance %d handled none of the %d calls (calls per "
                            "instance: %s)" % (index, len(calls),
                                               [len(o) for o in per_instance]))

        for call, flow in sorted(calls.items()):
            if not self.FLOWS[flow]:
                continue
            first, last = instances.ranges[owner[call]]
            ports = {run.by_key[(call, side)].port for side in (UAC, UAS)}
            # the media the capture saw between the call's endpoints and any
            # proxy port: all of it on ports of the call's owner
            used = {d[3] for d in seen["datagrams"] if d[1] in ports} | \
                {d[1] for d in seen["datagrams"] if d[3] in ports}
            listed = stream_ports(run.queries[call])
            self.assertTrue(used, "call %d: no media captured" % (call,))
            self.assertEqual(sorted(p for p in used | listed if not first <= p <= last), [],
                             "call %d (instance %d, ports %d-%d): media ports outside its "
                             "owner's range" % (call, owner[call], first, last))
        return seen


class InstanceSetTests(SynchronousTestCase):
    """InstanceSet on made-up replies (no daemons)."""

    def test_owners(self):
        """InstanceSet's owner bookkeeping on made-up replies (no daemons):
        one instance knowing a call makes it the owner; two is an error;
        none passes on the common error."""

        class FakeNG:
            def __init__(self, known):
                self.known = known
                self.ng = self

            def request(self, message, timeout=None, tries=None):
                if message["command"] == "list":
                    return {"result": "ok", "calls": sorted(self.known)}
                if message["call-id"] in self.known:
                    return {"result": "ok", "tags": {}}
                return {"result": "error", "error-reason": "Unknown call-id"}

        instances = InstanceSet([FakeNG({"a", "both"}), FakeNG({"b", "both"})],
                                [(100, 199), (200, 299)])
        self.assertEqual(instances.ng.request({"command": "query", "call-id": "b"}),
                         {"result": "ok", "tags": {}})
        self.assertEqual(instances.ng.request({"command": "query", "call-id": "a"})["result"],
                         "ok")
        self.assertEqual(instances.owners, {"a": 0, "b": 1})
        self.assertEqual(instances.ng.request({"command": "query", "call-id": "both"}),
                         {"result": "error",
                          "error-reason": "call both known to instances [0, 1]"})
        self.assertEqual(instances.ng.request({"command": "query", "call-id": "x"}),
                         {"result": "error", "error-reason": "Unknown call-id"})
        self.assertEqual(instances.ng.request({"command": "list"}),
                         {"result": "ok", "calls": ["a", "both", "b", "both"]})
        self.assertEqual(instances.owners, {"a": 0, "b": 1})
