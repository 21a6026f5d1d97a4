"""Codec negotiation and transcoding in the control plane (issue 7, item 4).

* ``CorpusTests``: every codec case of the side-by-side corpus (names
  ``codec_*`` and ``transcode_*``) run in-process through the ng dispatcher,
  with PCMU, PCMA, G.722 and Opus factories stubbed, against rtpengine
  10.5's stored replies (omnirtp/test/fixtures/corpus/), so the
  negotiation is checked whatever codec libraries this machine has.  The
  side-by-side test runs the same cases against a live omnirtp daemon with
  the codec plugins actually installed.
* ``EngineKeysTests``: what the negotiator tells the media engine per socket
  (``codecs_send``, ``codecs_recv``, ``transcode``; CODEC-CONTRACT.md).
* ``StoreTests``: details of omnirtp.call.codecstore.
"""

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.call import codecstore
from omnirtp.errors import NGError
from omnirtp.test import corpus
from omnirtp.test.fakes import ControlStack, ControlStackTests

STUB = {("pcmu", 8000, 1): object(), ("pcma", 8000, 1): object(),
        ("g722", 8000, 1): object(), ("opus", 48000, 2): object()}
G711 = {k: v for k, v in STUB.items() if k[0] in ("pcmu", "pcma")}

CODEC_CASES = [c for c in corpus.CASES if c.name.startswith(("codec_", "transcode_"))]


def _run(stack, case):
    def request(message):
        result = []
        stack.dispatch(message).addBoth(result.append)
        reply = result[0]
        if hasattr(reply, "check"):
            if reply.check(NGError):
                return {"result": "error", "error-reason": reply.value.reason}
            reply.raiseException()
        return reply
    return corpus.run_case(case, request, "unit")


class CorpusTests(SynchronousTestCase):
    """The corpus's codec cases against 10.5's fixtures, in-process."""

    def check(self, case, codecs):
        stack = ControlStack(codecs=lambda: codecs)
        stack.engine.free = [30000 + 2 * i for i in range(100)]
        want = case.expected_for_omnirtp(corpus.load_expected(case.name))
        self.assertEqual(_run(stack, case), want)

    def test_cases_present(self):
        names = {c.name for c in CODEC_CASES}
        self.assertTrue({"codec_strip_dict", "codec_transcode_pcma", "transcode_opus",
                         "transcode_opus_to_g711", "codec_transcode_reinvite"} <= names)
        self.assertGreaterEqual(len(CODEC_CASES), 35)

    def test_g711_cases_with_g711_only(self):
        """The ``codec_*`` cases name only G.711 (and telephone-event): 10.5's
        replies come out the same when only the G.711 factories are
        available (no Opus or G.722 library on the machine)."""
        for case in CODEC_CASES:
            if case.name.startswith("codec_"):
                self.check(case, G711)

    def test_missing_codec_not_offered(self):
        """Without an Opus factory, ``transcode-opus`` adds nothing (10.5's
        build adds opus/48000/2 at 96 and telephone-event/48000 at 97)."""
        stack = ControlStack(codecs=lambda: G711)
        reply = []
        stack.dispatch({"command": "offer", "call-id": "m1", "from-tag": "ft1",
                        "sdp": corpus.SIP_OFFER, "codec": {"transcode": ["opus"]}}
                       ).addCallback(reply.append)
        m_line = [line for line in reply[0]["sdp"].split("\r\n") if line.startswith("m=")]
        self.assertEqual(m_line, ["m=audio 30002 RTP/AVP 0 8 101"])  # the recipient's pair


def _add_corpus_test(case):
    def test(self):
        self.check(case, STUB)
    test.__doc__ = "corpus case %s (%s)" % (case.name, case.doc or case.reason or "as 10.5")
    setattr(CorpusTests, "test_" + case.name, test)


for _case in CODEC_CASES:
    _add_corpus_test(_case)


class EngineKeysTests(ControlStackTests, SynchronousTestCase):
    """``codecs_send``/``codecs_recv``/``transcode`` per socket entry."""

    negotiator_args = {"codecs": lambda: STUB}

    def offer_answer(self, offer_body, answer_body, _answer=None, **codec):
        self.call(command="offer", call_id="k1", from_tag="ft1", sdp=offer_body, **codec)
        self.call(command="answer", call_id="k1", from_tag="ft1", to_tag="tt1",
                  sdp=answer_body, **(_answer or {}))
        call = self.registry.get("k1")
        caller, callee = call.find("ft1"), call.find("tt1")
        return (self.engine.configured[caller.medias[0].rtp_key],
                self.engine.configured[caller.medias[0].rtcp_key],
                self.engine.configured[callee.medias[0].rtp_key],
                self.engine.configured[callee.medias[0].rtcp_key])

    def test_plain_call_no_codec_keys(self):
        """No codec flags: no codec keys at all (nothing to build or send to
        a worker; the engine keeps the plain fast path)."""
        for entry in self.offer_answer(corpus.SIP_OFFER, corpus.SIP_ANSWER):
            for key in ("transcode", "codecs_send", "codecs_recv"):
                self.assertNotIn(key, entry)

    def test_codec_handling_starts_late(self):
        """A plain offer, then an answer with codec-strip: the formats of
        both parties (kept unparsed until then) are given."""
        a_rtp, a_rtcp, b_rtp, b_rtcp = self.offer_answer(
            corpus.SIP_OFFER, corpus.SIP_ANSWER, _answer={"codec": {"strip": ["PCMA"]}})
        pcmu = {"pt": 0, "encoding": "pcmu", "clock_rate": 8000, "channels": 1, "fmtp": ""}
        te16 = {"pt": 101, "encoding": "telephone-event", "clock_rate": 8000, "channels": 1,
                "fmtp": "0-16"}
        te15 = dict(te16, fmtp="0-15")
        pcma = {"pt": 8, "encoding": "pcma", "clock_rate": 8000, "channels": 1, "fmtp": ""}
        # the caller offered 0 8 101 and was answered 0 101 (the callee's
        # telephone-event fmtp, as 10.5 answers here)
        self.assertEqual(a_rtp["codecs_recv"], [pcmu, pcma, te16])
        self.assertEqual(a_rtp["codecs_send"], [pcmu, te15])
        self.assertEqual(b_rtp["codecs_recv"], [pcmu, te15])
        # the callee sends with the formats of its own answer
        self.assertEqual(b_rtp["codecs_send"], [pcmu, te15])
        self.assertEqual(a_rtcp["codecs_send"], a_rtp["codecs_send"])
        self.assertEqual(b_rtcp["codecs_recv"], b_rtp["codecs_recv"])
        for entry in (a_rtp, a_rtcp, b_rtp, b_rtcp):
            self.assertNotIn("transcode", entry)

    def test_shared_codec_no_transcode(self):
        """Codec flags, but the answer shares the codec: no transcoder."""
        entries = self.offer_answer(corpus.SIP_OFFER, corpus.SIP_ANSWER,
                                    codec={"transcode": ["opus"]})
        for entry in entries:
            self.assertNotIn("transcode", entry)

    def test_transcoded_call(self):
        """Opus answered to a PCMU offer with transcode-opus: both
        directions are transcoded, the formats are those of each m= line."""
        a_rtp, a_rtcp, b_rtp, b_rtcp = self.offer_answer(
            corpus.SIP_OFFER, corpus.SIP_ANSWER_OPUS, codec={"transcode": ["opus"]})
        for entry in (a_rtp, a_rtcp, b_rtp, b_rtcp):
            self.assertIs(entry["transcode"], True)
        opus = {"pt": 96, "encoding": "opus", "clock_rate": 48000, "channels": 2,
                "fmtp": "useinbandfec=1"}
        te = {"pt": 101, "encoding": "telephone-event", "clock_rate": 8000, "channels": 1,
              "fmtp": "0-15"}
        pcmu = {"pt": 0, "encoding": "pcmu", "clock_rate": 8000, "channels": 1, "fmtp": ""}
        self.assertEqual(b_rtp["codecs_recv"], [opus, te])
        self.assertEqual(b_rtp["codecs_send"], [opus, te])
        self.assertEqual(a_rtp["codecs_send"], [pcmu, te])
        self.assertEqual([f["pt"] for f in a_rtp["codecs_recv"]], [0, 8, 101])
        self.assertEqual(b_rtcp["codecs_recv"], b_rtp["codecs_recv"])

    def test_answerer_sends_its_answer(self):
        """The callee was offered PCMU, PCMA, Opus (added) and
        telephone-event and answered PCMA and telephone-event: what it
        sends is its answer's formats, not the offer's.  When it re-INVITEs,
        it sends its new offer's formats until the answer, then the
        answer's (the m= line we gave it)."""
        a_rtp, _, b_rtp, b_rtcp = self.offer_answer(
            corpus.SIP_OFFER, corpus.SIP_ANSWER_PCMA, codec={"transcode": ["opus"]})
        pcma = {"pt": 8, "encoding": "pcma", "clock_rate": 8000, "channels": 1, "fmtp": ""}
        pcmu = dict(pcma, pt=0, encoding="pcmu")
        te15 = {"pt": 101, "encoding": "telephone-event", "clock_rate": 8000, "channels": 1,
                "fmtp": "0-15"}
        self.assertEqual(b_rtp["codecs_send"], [pcma, te15])
        self.assertEqual(b_rtcp["codecs_send"], [pcma, te15])
        self.assertEqual(b_rtp["codecs_recv"], [pcma, te15])
        self.assertNotIn("transcode", b_rtp)
        # the callee re-INVITEs with PCMU only
        reoffer = corpus.SIP_ANSWER_PCMU_ONLY.replace("3344556677 1", "3344556677 2")
        self.call(command="offer", call_id="k1", from_tag="tt1", sdp=reoffer)
        call = self.registry.get("k1")
        callee = call.find("tt1").medias[0]
        self.assertEqual(self.engine.configured[callee.rtp_key]["codecs_send"], [pcmu])
        self.call(command="answer", call_id="k1", from_tag="tt1", to_tag="ft1",
                  sdp=corpus.SIP_OFFER_REINVITE)
        answered = [c.as_dict() for c in callee.codecs_out]
        self.assertEqual(answered[0], pcmu)
        self.assertEqual(self.engine.configured[callee.rtp_key]["codecs_send"], answered)

    def test_offer_before_answer(self):
        """Before the answer the callee's formats are unknown: no
        ``codecs_recv`` towards it; what it may send is what we offered,
        and PCMA (added for it) is transcoded towards the PCMU-only caller
        (early media)."""
        self.call(command="offer", call_id="k2", from_tag="ft1", sdp=corpus.SIP_OFFER_PCMU,
                  codec={"transcode": ["PCMA"]})
        call = self.registry.get("k2")
        b = self.engine.configured[call.monologues[1].medias[0].rtp_key]
        self.assertNotIn("codecs_recv", b)
        self.assertEqual([f["pt"] for f in b["codecs_send"]], [0, 8, 101])
        self.assertIs(b["transcode"], True)
        a = self.engine.configured[call.monologues[0].medias[0].rtp_key]
        self.assertEqual([f["pt"] for f in a["codecs_send"]], [0, 101])
        self.assertEqual(a["codecs_recv"], a["codecs_send"])
        self.assertNotIn("transcode", a)


class StoreTests(SynchronousTestCase):
    """omnirtp.call.codecstore details not visible in the corpus."""

    def test_unavailable_codec_not_added(self):
        store = codecstore.CodecStore()
        orig = codecstore.CodecStore()
        codecstore.transcode(store, ["opus", "G729", "PCMA"], orig, G711)
        self.assertEqual([(c.pt, c.encoding) for c in store], [(8, "PCMA")])

    def test_payload_type_numbers(self):
        """RFC 3551 numbers when free, else from 96 on, skipping taken ones."""
        orig = codecstore.CodecStore([codecstore.PayloadType(96, "H264", 90000)])
        store = codecstore.CodecStore([codecstore.PayloadType(8, "foo", 8000)])
        codecstore.transcode(store, ["PCMA", "opus"], orig, STUB)
        self.assertEqual([(c.pt, c.encoding) for c in store],
                         [(8, "foo"), (97, "PCMA"), (98, "opus")])

    def test_spec_parsing(self):
        pt = codecstore.parse_spec("opus/48000/1/32000//stereo=0", STUB)
        self.assertEqual((pt.encoding, pt.clock_rate, pt.channels, pt.fmtp),
                         ("opus", 48000, 1, "stereo=0"))
        self.assertIsNone(codecstore.parse_spec("opus/abc", STUB))
        self.assertIsNone(codecstore.parse_spec("G729", STUB))
        self.assertEqual(codecstore.parse_spec("telephone-event/48000", {}).fmtp, "0-15")

    def pts(self, store):
        return [(c.pt, c.encoding, c.clock_rate) for c in store]

    def test_handlers(self):
        """PCMU shared: passed through with the telephone-event; Opus, which
        the sink lacks, is transcoded to the sink's first codec."""
        P = codecstore.PayloadType
        receiver = codecstore.CodecStore([
            P(0, "PCMU", 8000, supported=True), P(96, "opus", 48000, 2, supported=True),
            P(101, "telephone-event", 8000, fmtp="0-15", supported=True)])
        sink = codecstore.CodecStore([
            P(8, "PCMA", 8000, supported=True), P(0, "PCMU", 8000, supported=True),
            P(101, "telephone-event", 8000, fmtp="0-16", supported=True)])
        hs = codecstore.handlers(receiver, sink)
        self.assertTrue(hs.transcoding)
        self.assertEqual((hs.by_pt[0].passthrough, hs.by_pt[0].dest.pt, hs.by_pt[0].dtmf),
                         (True, 0, 101))
        self.assertEqual((hs.by_pt[96].passthrough, hs.by_pt[96].dest.pt, hs.by_pt[96].dtmf),
                         (False, 8, 101))
        self.assertTrue(hs.by_pt[101].passthrough)
        self.assertFalse(codecstore.handlers(sink, sink).transcoding)

    def test_transcoding_drops_undecodable(self):
        P = codecstore.PayloadType
        receiver = codecstore.CodecStore([P(18, "G729", 8000), P(96, "opus", 48000, 2,
                                                                 supported=True)])
        sink = codecstore.CodecStore([P(0, "PCMU", 8000, supported=True)])
        self.assertTrue(codecstore.handlers(receiver, sink).transcoding)
        self.assertEqual(self.pts(receiver), [(96, "opus", 48000)])

    def test_tracker_update(self):
        """A touched clock rate gets its telephone-event; an untouched one
        does not; a touched rate without audio loses its own."""
        P = codecstore.PayloadType
        store = codecstore.CodecStore([
            P(0, "PCMU", 8000, supported=True), P(96, "opus", 48000, 2, supported=True),
            P(9, "G722", 8000, supported=True),
            P(101, "telephone-event", 8000, fmtp="0-16", supported=True),
            P(102, "telephone-event", 16000, supported=True)])
        codecstore.tracker_update(store)
        self.assertEqual(len(store), 5)
        store.touched.update((48000, 16000))
        codecstore.tracker_update(store)
        self.assertEqual(self.pts(store), [
            (0, "PCMU", 8000), (96, "opus", 48000), (9, "G722", 8000),
            (97, "telephone-event", 48000), (101, "telephone-event", 8000)])

    def test_populate_reuse(self):
        P = codecstore.PayloadType
        old = codecstore.CodecStore([P(96, "opus", 48000, 2, supported=True),
                                     P(101, "telephone-event", 8000, fmtp="0-15",
                                       supported=True)])
        new = [P(8, "PCMA", 8000, supported=True), P(0, "PCMU", 8000, supported=True),
               P(101, "telephone-event", 8000, fmtp="0-16", supported=True)]
        store = codecstore.populate_reuse(old, new)
        self.assertEqual([(c.pt, c.fmtp) for c in store], [(101, "0-15"), (8, None), (0, None)])
        store = codecstore.populate_reuse(old, new, answer_only=True)
        self.assertEqual([c.pt for c in store], [101])

    def test_strip_all_except(self):
        P = codecstore.PayloadType
        store = codecstore.CodecStore([P(0, "PCMU", 8000, supported=True),
                                       P(9, "G722", 8000, supported=True)])
        codecstore.strip(store, ["all"], ["g722/8000/1"])
        self.assertEqual([c.pt for c in store], [9])
        self.assertEqual(store.touched, {8000})


class SectionKeysTests(SynchronousTestCase):
    """``negotiate._section_keys``: the codec keys of an m= section's
    formats, looked up once per (formats, a=rtpmap values), are those
    ``_codec_key(codec_for(...))`` gives format by format."""

    def section(self, formats, *rtpmaps):
        from omnirtp.sdp.model import SessionDescription
        sdp = ("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
               "m=audio 4000 RTP/AVP %s\r\n" % formats)
        sdp += "".join("a=rtpmap:%s\r\n" % r for r in rtpmaps)
        return SessionDescription.parse(sdp).media[0]

    def expected(self, section):
        from omnirtp.call.negotiate import _codec_key
        from omnirtp.sdp.codecs import codec_for
        rtpmaps = section.rtpmaps()
        return tuple(_codec_key(codec_for(f, rtpmaps)) for f in section.formats)

    def check(self, section):
        from omnirtp.call.negotiate import _section_keys
        keys, key_set = _section_keys(section, tuple(section.formats))
        self.assertEqual(keys, self.expected(section))
        self.assertEqual(key_set, frozenset(keys))
        return keys, key_set

    def test_static_dynamic_and_unknown(self):
        keys, _ = self.check(self.section("0 8 9 96 97 101 18 126",
                                          "96 opus/48000/2", "97 AMR-WB/16000",
                                          "101 telephone-event/8000"))
        self.assertEqual(keys, (("pcmu", 8000), ("pcma", 8000), ("g722", 8000),
                                ("opus", 48000), ("amr-wb", 16000),
                                ("telephone-event", 8000), ("g729", 8000), "126"))

    def test_rtpmap_decides_not_the_formats_alone(self):
        """The same formats with other a=rtpmap values are other keys (the
        cache is keyed by both)."""
        one, _ = self.check(self.section("0 96", "96 opus/48000/2"))
        other, _ = self.check(self.section("0 96", "96 speex/16000"))
        self.assertEqual(one[1], ("opus", 48000))
        self.assertEqual(other[1], ("speex", 16000))
        # an rtpmap for a static type overrides the table; the first of two wins
        keys, _ = self.check(self.section("0 96", "0 L16/16000", "96 iLBC/8000",
                                          "96 opus/48000/2"))
        self.assertEqual(keys, (("l16", 16000), ("ilbc", 8000)))

    def test_same_lists_share_their_keys(self):
        _, first = self.check(self.section("0 8 101", "101 telephone-event/8000"))
        _, again = self.check(self.section("0 8 101", "101 telephone-event/8000"))
        self.assertIs(first, again)
        _, spelled = self.check(self.section("0 8 101", "101 Telephone-Event/8000"))
        self.assertEqual(spelled, first)  # (names match case-insensitively)


class SocketEntriesTests(ControlStackTests, SynchronousTestCase):
    """``Negotiator._sockets``' entries are copies of shared templates: each
    its own dict, in the keys' fixed order, nothing shared changed."""

    def test_entries_are_separate_and_ordered(self):
        from omnirtp.call import negotiate
        from omnirtp.control.flags import Flags
        ids = ("a", "b")
        for call_id in ids:
            self.call(command="offer", call_id=call_id, from_tag="x", sdp=corpus.SIP_OFFER)
            self.call(command="answer", call_id=call_id, from_tag="x", to_tag="y",
                      sdp=corpus.SIP_ANSWER)
        flags = Flags.from_request({"command": "offer"})
        first = self.negotiator._sockets(self.registry.get("a"), flags)
        second = self.negotiator._sockets(self.registry.get("b"), flags)
        templates = {k: (dict(rtp), dict(rtcp))
                     for k, (rtp, rtcp) in negotiate._SOCKET_TEMPLATES.items()}
        self.assertEqual(len(first), 4)
        rtp_keys = ["learning", "strict", "handover", "asymmetric", "reset", "tos", "local",
                    "endpoint", "peer", "rtcp_peer", "ice", "dtls", "srtp_in", "srtp_out"]
        for rtp, rtcp in (first[0:2], first[2:4]):
            self.assertEqual(list(rtp), rtp_keys)
            self.assertEqual(list(rtcp), [k for k in rtp_keys if k != "rtcp_peer"])
            self.assertEqual(rtcp["local"], (rtp["local"][0], rtp["local"][1] + 1))
            self.assertIsNotNone(rtp["endpoint"])
            self.assertIsNotNone(rtp["peer"])
        # the caller's RTP socket sends to the callee's RTP socket and back
        self.assertEqual(first[0]["peer"], first[2]["local"])
        self.assertEqual(first[2]["peer"], first[0]["local"])
        self.assertEqual(len({id(e) for e in first + second}), 8)
        first[0]["peer"] = first[1]["endpoint"] = "changed"
        self.assertNotEqual(second[0]["peer"], "changed")
        self.assertNotEqual(second[1]["endpoint"], "changed")
        self.assertEqual({k: (dict(rtp), dict(rtcp))
                          for k, (rtp, rtcp) in negotiate._SOCKET_TEMPLATES.items()},
                         templates)
        self.assertTrue(all(v is None for rtp, _ in templates.values()
                            for k, v in rtp.items() if k in ("local", "peer", "ice")))
