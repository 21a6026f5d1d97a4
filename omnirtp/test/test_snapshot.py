"""omnirtp.state.snapshot: every call the corpus makes survives encode ->
decode unchanged, and a restored call answers as the original would."""

import json

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from omnirtp.call import negotiate
from omnirtp.call.model import Call, Media, Monologue
from omnirtp.state import snapshot
from omnirtp.state.snapshot import SnapshotError
from omnirtp.test import corpus
from omnirtp.test.fakes import ControlStack


def _request(stack, test, errors=False):
    """``request(msg)``: the reply; with ``errors`` an NGError (the corpus's
    error cases) is returned instead of failing the test."""
    from omnirtp.errors import NGError

    def request(msg):
        d = stack.dispatch(dict(msg))
        if errors:
            results = []
            d.addBoth(results.append)
            test.assertEqual(len(results), 1, "the request did not finish")
            if isinstance(results[0], Failure):
                results[0].trap(NGError)
                return results[0].value
            return results[0]
        return test.successResultOf(d)
    return request


def _plain(v):
    """True for values compared with == (no model objects inside)."""
    if v is None or isinstance(v, (bool, int, float, str, bytes)):
        return True
    if isinstance(v, (tuple, list, frozenset)):
        return all(_plain(x) for x in v)
    return False


class RoundTripTests(SynchronousTestCase):

    def assertRoundTrip(self, stack, where):
        for call_id, call in stack.registry.calls.items():
            blob = snapshot.encode(call)
            self.assertIsInstance(blob, bytes)
            again = snapshot.decode(blob, stack.interfaces)
            self.assertEqual(snapshot.to_data(again), snapshot.to_data(call),
                             "%s: %s" % (where, call_id))
            self.assertEqual(snapshot.encode(again), blob, where)
            for (ml, m), (ml2, m2) in zip(call.all_medias(), again.all_medias()):
                # the daemon's own Interface objects, not copies
                self.assertIs(m2.interface, m.interface)
                for name in Media.__slots__:
                    a, b = getattr(m, name), getattr(m2, name)
                    if _plain(a):
                        self.assertEqual(b, a, "%s %s media %s" % (where, call_id, name))
                # what the model shares stays shared
                if m.codecs is not None and m.codecs.supp_anchor is not None:
                    self.assertIn(m2.codecs.supp_anchor, m2.codecs.codecs)
                    self.assertIs(m2.codecs.codecs[m.codecs.codecs.index(m.codecs.supp_anchor)],
                                  m2.codecs.supp_anchor)
                if m.codecs_out is not None and m.codecs_out is m.codecs_planned:
                    self.assertIs(m2.codecs_out, m2.codecs_planned)
            for ml, ml2 in zip(call.monologues, again.monologues):
                if ml.peer is None:
                    self.assertIsNone(ml2.peer)
                else:
                    self.assertIs(ml2.peer, again.monologues[call.monologues.index(ml.peer)])
        return len(stack.registry.calls)

    def test_everyCorpusCase(self):
        """After every step of every side-by-side case (plain, forks,
        re-INVITEs, SDES with MKI, ICE, DTLS, WebRTC flag flows, errors),
        each call's snapshot decodes to an equal call."""
        calls = 0
        for case in corpus.CASES:
            stack = ControlStack()
            request = _request(stack, self, errors=True)
            for step, msg in enumerate(case.requests):
                request(msg)
                calls += self.assertRoundTrip(stack, "%s step %d" % (case.name, step))
        self.assertGreater(calls, 100)

    def test_heldSectionKeptAsText(self):
        """The m= section a plain call keeps for a later codec operation is
        a KeptSection (text, no parsed lines), written by its text and read
        back as one."""
        from omnirtp.sdp.model import KeptSection
        stack = ControlStack()
        _request(stack, self)(corpus.CASES_BY_NAME["plain_offer_answer"].requests[0])
        call = next(iter(stack.registry.calls.values()))
        media = call.monologues[0].medias[0]
        self.assertIs(type(media.codec_source), KeptSection)
        again = snapshot.decode(snapshot.encode(call), stack.interfaces)
        kept = again.monologues[0].medias[0].codec_source
        self.assertIs(type(kept), KeptSection)
        self.assertEqual((kept.text, kept.index), (media.codec_source.text,
                                                   media.codec_source.index))

    def test_answerFromRestoredOffer(self):
        """A call restored from its snapshot after the offer takes the answer
        as the original does: the same reply and the same engine sockets."""
        for name in ("plain_offer_answer", "seed_offer_answer", "sdes_avp_to_savp",
                     "kamailio_sip_calls_browser", "kamailio_browser_calls_sip"):
            case = corpus.CASES_BY_NAME[name]
            # the restored daemon has the DTLS certificate the offer's
            # fingerprint names (a restart must keep it: issue 10)
            original = ControlStack()
            restored = ControlStack(certificate=original.negotiator.certificate)
            # and the same ICE foundations (random per interface at start)
            for name, ifaces in original.interfaces.by_name.items():
                for a, b in zip(ifaces, restored.interfaces.by_name[name]):
                    b.ice_foundation = a.ice_foundation
            offer, answer = case.requests[0], case.requests[1]
            _request(original, self)(offer)
            call_id = offer["call-id"]
            blob = snapshot.encode(original.registry.get(call_id))
            # the restored daemon holds the same ports (what RedisStore's
            # restart will ask the engine for)
            restored.registry.calls[call_id] = snapshot.decode(blob, restored.interfaces)
            held = original.engine.held[call_id]
            restored.engine.held[call_id] = list(held)
            restored.engine.free = [p for p in restored.engine.free
                                    if p not in {port for _, port in held}]
            # our ICE credentials towards a party are made when an SDP to
            # it first carries ICE (here: the answer to a browser's offer),
            # so each daemon draws its own; the same draws on both sides
            self.patch(negotiate, "new_ice_credentials", _counted_credentials())
            want = _request(original, self)(answer)
            self.patch(negotiate, "new_ice_credentials", _counted_credentials())
            got = _request(restored, self)(answer)
            self.assertEqual(got, want, name)
            self.assertEqual(restored.engine.configured, original.engine.configured, name)


def _counted_credentials():
    """A stand-in for new_ice_credentials that draws the same sequence of
    valid credentials each time it is made."""
    drawn = iter(range(1000))

    def credentials():
        n = next(drawn)
        return "ufrag%03d" % n, "password%016dxx" % n

    return credentials


class BadBlobTests(SynchronousTestCase):

    def setUp(self):
        self.stack = ControlStack()
        _request(self.stack, self)(corpus.CASES_BY_NAME["plain_offer_answer"].requests[0])
        self.call = next(iter(self.stack.registry.calls.values()))
        self.data = snapshot.to_data(self.call)

    def decode(self, data):
        return snapshot.decode(json.dumps(data).encode(), self.stack.interfaces)

    def monologue(self, i=0):
        return self.data["call"]["a"]["monologues"]["l"][i]["a"]

    def test_notJson(self):
        self.assertRaises(SnapshotError, snapshot.decode, b"\xff{", self.stack.interfaces)

    def test_version(self):
        self.data["v"] = 99
        self.assertRaises(SnapshotError, self.decode, self.data)

    def test_unknownInterface(self):
        blob = snapshot.encode(self.call)
        from omnirtp.call.negotiate import Interfaces
        from omnirtp.config.model import InterfaceSpec
        other = Interfaces([InterfaceSpec("public", "127.0.0.1", None)])
        e = self.assertRaises(SnapshotError, snapshot.decode, blob, other)
        self.assertIn("interface default/127.0.0.1 is not configured here", str(e))

    def test_noArbitraryClass(self):
        self.data["call"]["a"]["metadata"] = {"id": 999, "o": "Popen", "a": {"args": "true"}}
        e = self.assertRaises(SnapshotError, self.decode, self.data)
        self.assertIn("unknown class 'Popen'", str(e))

    def test_badMonologueReference(self):
        self.monologue()["peer"] = {"ref": 7777}
        self.assertRaises(SnapshotError, self.decode, self.data)

    def test_olderBlobTakesDefaults(self):
        """A blob written before a field existed decodes with that field's
        default (as a freshly made Media has it)."""
        del self.monologue()["medias"]["l"][0]["a"]["transcoding"]
        call = self.decode(self.data)
        self.assertIs(call.monologues[0].medias[0].transcoding, False)

    def test_unknownMediaField(self):
        self.monologue()["medias"]["l"][0]["a"]["nonsense"] = 1
        self.assertRaises(SnapshotError, self.decode, self.data)

    def test_truncated(self):
        blob = snapshot.encode(self.call)
        self.assertRaises(SnapshotError, snapshot.decode, blob[:len(blob) // 2],
                          self.stack.interfaces)
        del self.data["call"]
        self.assertRaises(SnapshotError, self.decode, self.data)
        self.setUp()
        self.monologue()["medias"]["l"][0]["a"]["index"] = {"what": 1}
        self.assertRaises(SnapshotError, self.decode, self.data)

    def test_unkeepableValue(self):
        """A field holding something the snapshot cannot rebuild fails at
        encode time instead of being dropped."""
        self.call.metadata = object()
        self.assertRaises(TypeError, snapshot.encode, self.call)
        other = Call("x", 0)
        ml = Monologue("t", 0)
        ml.peer = Monologue("stranger", 0)
        other.monologues = [ml]
        snapshot.encode(other)  # a monologue outside call.monologues is kept too

    def test_badHeldSection(self):
        """A held SDP section (the codec work keeps the party's m= section
        unparsed) that does not parse is a SnapshotError."""
        blob = snapshot.encode(self.call)
        self.assertIn(b'"sec":', blob)
        broken = blob.replace(b'"sec":"m=', b'"sec":"x=', 1)
        self.assertRaises(SnapshotError, snapshot.decode, broken, self.stack.interfaces)


class PersistTests(SynchronousTestCase):
    """With a state store, every signalling request leaves the call's
    snapshot in it; a call's end removes it; without one nothing is
    encoded at all."""

    def setUp(self):
        from omnirtp.state.store import MemoryStore
        self.stack = ControlStack()
        self.store = MemoryStore()
        self.stack.registry.store = self.store
        self.request = _request(self.stack, self, errors=True)

    def kept(self, call_id):
        blob = self.store.calls.get(call_id)
        return None if blob is None else snapshot.decode(blob, self.stack.interfaces)

    def test_offerAnswerDelete(self):
        offer, answer = corpus.CASES_BY_NAME["plain_offer_answer"].requests[:2]
        self.request(offer)
        call_id = offer["call-id"]
        kept = self.kept(call_id)
        self.assertEqual([ml.tag for ml in kept.monologues],
                         [ml.tag for ml in self.stack.registry.get(call_id).monologues])
        self.assertFalse(kept.answered)
        self.request(answer)
        self.assertEqual(self.store.calls[call_id],
                         snapshot.encode(self.stack.registry.get(call_id)))
        self.assertTrue(self.kept(call_id).answered)
        self.request({"command": "delete", "call-id": call_id, "from-tag": offer["from-tag"]})
        # rtpengine's delete-delay keeps the call for 30 s: still kept
        self.assertIn(call_id, self.store.calls)
        self.stack.clock.advance(31)
        self.stack.registry.sweep()
        self.assertNotIn(call_id, self.store.calls)
        self.assertIsNone(self.stack.registry.get(call_id))

    def test_queryWritesNothing(self):
        offer = corpus.CASES_BY_NAME["plain_offer_answer"].requests[0]
        self.request(offer)
        self.store.calls.clear()
        self.request({"command": "query", "call-id": offer["call-id"]})
        self.request({"command": "ping"})
        self.assertEqual(self.store.calls, {})

    def test_failedFirstOfferLeavesNothing(self):
        self.request({"command": "offer", "call-id": "bad", "from-tag": "a",
                      "sdp": "v=0\r\nnonsense\r\n"})
        self.assertNotIn("bad", self.store.calls)
        self.assertIsNone(self.stack.registry.get("bad"))

    def test_unkeepableCallGoesOn(self):
        offer, answer = corpus.CASES_BY_NAME["plain_offer_answer"].requests[:2]
        self.request(offer)
        self.stack.registry.get(offer["call-id"]).metadata = object()
        reply = self.request(answer)
        self.assertEqual(reply["result"], "ok")
        self.assertEqual(self.stack.registry.persist_errors, 1)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_noStoreNoWork(self):
        from unittest import mock
        self.stack.registry.store = None
        with mock.patch.object(snapshot, "encode") as encode:
            self.request(corpus.CASES_BY_NAME["plain_offer_answer"].requests[0])
        encode.assert_not_called()
