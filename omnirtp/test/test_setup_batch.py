"""A new call's allocate and configure in one engine call (issue 13).

With media workers every engine call is an AMP round trip, so the
negotiator gives a call that holds no ports yet placeholder ports,
builds its configuration and SDP plan with them and hands both the
allocation and the configuration to ``engine.allocate_configure``; the
real ports then replace the placeholders.  These tests run the same
requests against an engine with that method and one without, and compare
the SDP and what each engine was told.
"""

import re

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.errors import PortsExhausted
from omnirtp.media import amp as commands
from omnirtp.media.dtls import Certificate
from omnirtp.test.corpus import (
    KAMAILIO_SIP_TO_BROWSER, SIP_ANSWER, SIP_OFFER, SIP_OFFER_AUDIO_VIDEO,
    SIP_OFFER_VIDEO_REJECTED, WEBRTC_ANSWER)
from omnirtp.test.fakes import ControlStack
from omnirtp.test.kamailio import kamailio_dict
from omnirtp.test.test_registry import CountingEngine

PLAIN = "replace-origin replace-session-connection"

#: SDP lines whose values are random per request (keys, ICE credentials)
RANDOM = re.compile(r"^(a=crypto:\d+ \S+ inline:|a=ice-ufrag:|a=ice-pwd:|o=)(.*)$", re.M)


class BatchingEngine(CountingEngine):
    """CountingEngine with allocate_configure (as the worker pool has it):
    the worker's own helper over allocate + configure; counts the calls."""

    def __init__(self, *args, **kw):
        CountingEngine.__init__(self, *args, **kw)
        self.calls = []

    def allocate(self, call_id, address, count):
        self.calls.append("allocate")
        return CountingEngine.allocate(self, call_id, address, count)

    def configure(self, call_id, sockets):
        self.calls.append("configure")
        return CountingEngine.configure(self, call_id, sockets)

    def allocate_configure(self, call_id, groups, sockets):
        self.calls.append("allocate_configure")
        mark = len(self.calls)
        d = defer.maybeDeferred(commands.allocate_configure, self, call_id, groups, sockets)
        # the helper's own allocate/configure are the worker's, not round trips
        del self.calls[mark:]
        return d


#: an ICE candidate's foundation (random per interface)
FOUNDATION = re.compile(r"^a=candidate:\S+ ", re.M)


def scrub(sdp):
    return FOUNDATION.sub("a=candidate:* ", RANDOM.sub(lambda m: m.group(1) + "*", sdp))


def scrub_entry(entry):
    entry = dict(entry)
    for key in ("srtp_in", "srtp_out"):
        if entry.get(key):
            entry[key] = dict(entry[key], key="*")
    if entry.get("ice"):
        entry["ice"] = dict(entry["ice"], ufrag="*", pwd="*")
    return entry


class BatchedOfferTests(SynchronousTestCase):

    def stacks(self):
        certificate = Certificate.generate()
        plain = ControlStack(certificate=certificate)
        batched = ControlStack(certificate=certificate)
        batched.engine = BatchingEngine(batched.clock, pairs=10)
        batched.registry.engine = batched.negotiator.engine = batched.engine
        batched.dispatch.engine = batched.engine
        return plain, batched

    def run_both(self, requests):
        """Each request through both stacks: the replies must be the same
        but for random values; returns the batched stack."""
        plain, batched = self.stacks()
        for request in requests:
            got = [self.successResultOf(s.dispatch(dict(request))) for s in (plain, batched)]
            self.assertEqual(*[{k: scrub(v) if k == "sdp" else v for k, v in r.items()}
                               for r in got])
        self.assertEqual(
            {k: scrub_entry(v) for k, v in plain.engine.configured.items()},
            {k: scrub_entry(v) for k, v in batched.engine.configured.items()})
        self.assertEqual(plain.engine.held, batched.engine.held)
        return batched

    def test_plain_call(self):
        batched = self.run_both([
            kamailio_dict(PLAIN, "offer", "c1", "ft", sdp=SIP_OFFER, received_from="192.0.2.10"),
            kamailio_dict(PLAIN, "answer", "c1", "ft", "tt", sdp=SIP_ANSWER,
                          received_from="198.51.100.20")])
        # the offer: one engine call instead of allocate + configure
        self.assertEqual(batched.engine.calls, ["allocate_configure", "configure"])

    def test_sip_phone_calls_browser(self):
        """The seed's Kamailio flags: ICE candidates, a=rtcp and the
        engine's ICE/DTLS entries carry the real ports."""
        offer_flags, answer_flags = KAMAILIO_SIP_TO_BROWSER
        batched = self.run_both([
            kamailio_dict(offer_flags, "offer", "c1", "ft", sdp=SIP_OFFER,
                          received_from="192.0.2.10"),
            kamailio_dict(answer_flags, "answer", "c1", "ft", "tt", sdp=WEBRTC_ANSWER,
                          received_from="198.51.100.20")])
        self.assertEqual(batched.engine.calls, ["allocate_configure", "configure"])
        self.assertTrue(all(port > 0 for _address, port in batched.engine.configured))

    def test_two_media_and_a_rejected_one(self):
        for offer in (SIP_OFFER_AUDIO_VIDEO, SIP_OFFER_VIDEO_REJECTED):
            self.run_both([kamailio_dict("ICE=force " + PLAIN, "offer", "c1", "ft", sdp=offer,
                                         received_from="192.0.2.10")])

    def test_reinvite_allocates_first(self):
        """A call that holds ports already goes the usual way (allocate,
        then configure), so a failed re-INVITE changes nothing first."""
        batched = self.run_both([
            kamailio_dict(PLAIN, "offer", "c1", "ft", sdp=SIP_OFFER, received_from="192.0.2.10"),
            kamailio_dict(PLAIN, "offer", "c1", "ft", sdp=SIP_OFFER_AUDIO_VIDEO,
                          received_from="192.0.2.10")])
        self.assertEqual(batched.engine.calls, ["allocate_configure", "allocate", "configure"])

    def test_failure_leaves_no_ports(self):
        """Out of ports: the same error reply, no call, no port held."""
        plain, batched = self.stacks()
        for stack in (plain, batched):
            stack.engine.free = stack.engine.free[:1]  # one pair: the offer needs two
        request = kamailio_dict(PLAIN, "offer", "c1", "ft", sdp=SIP_OFFER,
                                received_from="192.0.2.10")
        for stack in (plain, batched):
            f = self.failureResultOf(stack.dispatch(dict(request)), PortsExhausted)
            self.assertEqual(f.value.reason, PortsExhausted().reason)
            self.assertEqual((stack.registry.calls, stack.engine.held), ({}, {}))
            self.assertEqual(len(stack.engine.free), 1)
