"""EmbeddedEngine with the transcoding keys of CODEC-CONTRACT, configured
by hand (codecs_send / codecs_recv / transcode), on fake sockets."""

import struct

from omnirtp.codecs import g711
from omnirtp.codecs.opus import opus
from omnirtp.codecs.transcode import Transcoder
from omnirtp.test.test_codecs import frames, pack, tone, tone_fit, unpack
from omnirtp.test.test_engine import A, B, HOST, EngineTestBase
from omnirtp.test.test_transcode import OPUS, PCMA, PCMU, TE8, TE48, header, rtp


class TranscodeEngineTests(EngineTestBase):
    def wire(self, a_send, a_recv, b_send, b_recv, a_transcode=True, b_transcode=True,
             call_id="c1", ports=None, a_ptime=False, b_ptime=False):
        """Configure a two-party call: the socket facing A (port a) has
        A's lists, the one facing B (port b) B's."""
        if ports is None:
            ports = self.value(self.engine.allocate(call_id, HOST, 2))
        a, b = ports

        def entry(local, peer, endpoint, send, recv, transcode, ptime):
            e = {"local": (HOST, local), "peer": (HOST, peer), "endpoint": endpoint,
                 "codecs_send": send, "codecs_recv": recv}
            if transcode:
                e["transcode"] = True
            if ptime is not False:
                e["ptime"] = ptime
            return e

        self.value(self.engine.configure(call_id, [
            entry(a, b, A, a_send, a_recv, a_transcode, a_ptime),
            entry(a + 1, b + 1, (A[0], A[1] + 1), a_send, a_recv, a_transcode, a_ptime),
            entry(b, a, B, b_send, b_recv, b_transcode, b_ptime),
            entry(b + 1, a + 1, (B[0], B[1] + 1), b_send, b_recv, b_transcode, b_ptime),
        ]))
        return a, b

    def send(self, local, packets, source):
        for p in packets:
            self.net.inject((HOST, local), p, source)
        self.net.pump(self.reactor)

    def test_pcmu_to_pcma_both_ways(self):
        """A speaks PCMU only, B PCMA only: each gets its own codec, with
        exactly G.711's conversion."""
        a, b = self.wire([PCMU], [PCMU], [PCMA], [PCMA])
        payload = g711.ulaw_encode(pack(tone(440, 8000, 160, 10000)))
        self.send(a, [rtp(1, 0, payload, pt=0)], A)
        got = self.net.sent_to(B)
        self.assertEqual(len(got), 1)
        data, source = got[0]
        self.assertEqual(source, (HOST, b))
        self.assertEqual(header(data)["pt"], 8)
        self.assertEqual(data[12:], g711.alaw_encode(g711.ulaw_decode(payload)))
        back = g711.alaw_encode(pack(tone(1000, 8000, 160, 10000)))
        self.send(b, [rtp(9, 0, back, pt=8)], B)
        data, source = self.net.sent_to(A)[0]
        self.assertEqual((header(data)["pt"], source), (0, (HOST, a)))
        self.assertEqual(data[12:], g711.ulaw_encode(g711.alaw_decode(back)))
        stats = self.value(self.engine.stats("c1"))["c1"]
        self.assertEqual(stats[(HOST, a)]["transforms"]["transcode"]["transcoded"], 1)
        self.assertEqual(stats[(HOST, b)]["transforms"]["transcode"]["transcoded"], 1)

    def test_transcoders(self):
        """``transcoders()`` (``list transcoders``): per chain the
        transcoders now and what they decoded in the last whole second
        (the engine's one-second tick; nothing shown for a second without
        packets); a chain stays with 0 once its calls are gone."""
        self.assertEqual(self.value(self.engine.transcoders()), {})
        a, b = self.wire([PCMU], [PCMU], [PCMA], [PCMA])
        self.wire([PCMU], [PCMU], [PCMA], [PCMA], call_id="c2")
        forward, backward = "PCMU/8000 -> PCMA/8000", "PCMA/8000 -> PCMU/8000"
        self.assertEqual(self.value(self.engine.transcoders()),
                         {forward: (2, None), backward: (2, None)})
        payload = g711.ulaw_encode(pack(tone(440, 8000, 160, 10000)))
        self.send(a, [rtp(1, 0, payload, pt=0), rtp(2, 160, payload, pt=0)], A)
        self.assertEqual(self.value(self.engine.transcoders())[forward], (2, None))
        self.reactor.advance(1)  # that second: 2 packets of 160 octets, 160 samples each
        self.send(a, [rtp(3, 320, payload, pt=0)], A)
        self.assertEqual(self.value(self.engine.transcoders())[forward], (2, (2, 320, 320)))
        self.reactor.advance(1)  # the third one
        self.assertEqual(self.value(self.engine.transcoders())[forward], (2, (1, 160, 160)))
        self.reactor.advance(1)  # nothing
        self.assertEqual(self.value(self.engine.transcoders()),
                         {forward: (2, None), backward: (2, None)})
        self.send(a, [rtp(4, 480, payload, pt=0)], A)
        self.reactor.advance(1)
        self.value(self.engine.release("c1"))
        self.value(self.engine.release("c2"))
        # no transcoder left: no tick, no figures
        self.assertEqual(self.value(self.engine.transcoders()),
                         {forward: (0, None), backward: (0, None)})
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_pcmu_to_opus(self):
        """A (PCMU, telephone-event/8000) <-> B (Opus, telephone-event/48000):
        the tone arrives as Opus at B, DTMF as B's event type."""
        a, b = self.wire([PCMU, TE8], [PCMU, TE8], [OPUS, TE48], [OPUS, TE48])
        reference = tone(440, 8000, 8000, 12000)
        packets = [rtp(100 + i, 160 * i, g711.ulaw_encode(f))
                   for i, f in enumerate(frames(pack(reference), 160))]
        packets.append(rtp(150, 8000, b"\x03\x0a\x00\xa0", pt=101, marker=True))
        self.send(a, packets, A)
        got = [d for d, _ in self.net.sent_to(B)]
        self.assertEqual(len(got), 51)
        self.assertEqual({header(d)["pt"] for d in got[:50]}, {111})
        self.assertEqual(header(got[50])["pt"], 110)
        self.assertEqual(got[50][12:], b"\x03\x0a\x03\xc0")
        decoder = opus.build("", 8000)
        pcm = unpack(b"".join(decoder.decode(d[12:]) for d in got[:50]))
        value, level = tone_fit(pcm[1600:], 440, 8000)
        self.assertGreaterEqual(value, 20.0)

    def test_ptime_each_way(self):
        """A takes 20 ms, B 40 ms (the ``ptime`` of the entries facing
        them): A's 20 ms PCMU reaches B as 40 ms PCMA (one packet per two,
        timestamps 320 apart), B's 40 ms PCMA reaches A as two 20 ms PCMU
        packets each, at once; the sequence numbers run on by one."""
        a, b = self.wire([PCMU], [PCMU], [PCMA], [PCMA], a_ptime=20, b_ptime=40)
        pcm = pack(tone(440, 8000, 1600, 10000))
        self.send(a, [rtp(1 + i, 160 * i, g711.ulaw_encode(f))
                      for i, f in enumerate(frames(pcm, 160))], A)
        got = [d for d, _ in self.net.sent_to(B)]
        self.assertEqual([len(d) - 12 for d in got], [320] * 5)
        heads = [header(d) for d in got]
        self.assertEqual([h["ts"] - heads[0]["ts"] for h in heads], [0, 320, 640, 960, 1280])
        self.assertEqual([h["seq"] - heads[0]["seq"] for h in heads], [0, 1, 2, 3, 4])
        self.assertEqual(b"".join(d[12:] for d in got),
                         g711.alaw_encode(g711.ulaw_decode(g711.ulaw_encode(pcm))))
        self.send(b, [rtp(7 + i, 320 * i, g711.alaw_encode(f), pt=8)
                      for i, f in enumerate(frames(pcm, 320))], B)
        got = [d for d, _ in self.net.sent_to(A)]
        self.assertEqual([len(d) - 12 for d in got], [160] * 10)
        heads = [header(d) for d in got]
        self.assertEqual([h["ts"] - heads[0]["ts"] for h in heads], [160 * i for i in range(10)])
        stats = self.value(self.engine.stats("c1"))["c1"]
        self.assertEqual((stats[(HOST, a)]["errors"], stats[(HOST, b)]["errors"]), (0, 0))

    def test_ptime_change_keeps_the_step(self):
        """A new ptime for the same lists keeps the running step (its
        SSRC and sequence go on) and packetises at the new one; an entry
        without the key leaves it; None: the sender's packets again."""
        a, b = self.wire([PCMU], [PCMU], [PCMA], [PCMA], b_ptime=40)
        step = self.engine.transcoder((HOST, a))
        self.assertEqual(step.ptime, 40)
        self.wire([PCMU], [PCMU], [PCMA], [PCMA], ports=(a, b), b_ptime=60)
        self.assertIs(self.engine.transcoder((HOST, a)), step)
        self.assertEqual(step.ptime, 60)
        self.wire([PCMU], [PCMU], [PCMA], [PCMA], ports=(a, b))
        self.assertEqual(step.ptime, 60)
        self.wire([PCMU], [PCMU], [PCMA], [PCMA], ports=(a, b), b_ptime=None)
        self.assertIs(self.engine.transcoder((HOST, a)), step)
        self.assertIsNone(step.ptime)
        self.assertIsNone(self.engine.transcoder((HOST, b)).ptime)
        self.failureResultOf(self.engine.configure("c1", [
            {"local": (HOST, b), "peer": (HOST, a), "endpoint": B, "ptime": "20"}]), ValueError)

    def test_step_kept_rebuilt_removed(self):
        """The same lists keep the running step; other lists rebuild it;
        an entry without transcode removes it (plain relaying again)."""
        a, b = self.wire([PCMU], [PCMU], [PCMA], [PCMA])
        step = self.engine.transcoder((HOST, a))
        self.assertIsInstance(step, Transcoder)
        self.wire([PCMU], [PCMU], [PCMA], [PCMA], ports=(a, b))
        self.assertIs(self.engine.transcoder((HOST, a)), step)
        self.wire([PCMU], [PCMU], [PCMA, PCMU], [PCMA, PCMU], ports=(a, b))
        self.assertIsNot(self.engine.transcoder((HOST, a)), step)
        self.wire([PCMU], [PCMU], [PCMU], [PCMU], a_transcode=False, b_transcode=False,
                  ports=(a, b))
        self.assertIsNone(self.engine.transcoder((HOST, a)))
        self.assertIsNone(self.engine.socket((HOST, a)).pipeline)
        plain = rtp(1, 0, bytes(160))
        self.send(a, [plain], A)
        self.assertEqual(self.net.sent_to(B), [(plain, (HOST, b))])

    def test_plain_codec_state_is_the_shared_empty_one(self):
        """A socket that neither has nor is given codec lists, ptime,
        transcode or repacketise gets the one shared empty codec state from
        _plan_codecs (no dict made), which configure keeps as none at all;
        lists make a state of its own, and dropping them all leaves none."""
        from omnirtp.media.engine import _NO_CODECS
        a, b = self.value(self.engine.allocate("c1", HOST, 2))
        relay = self.engine.socket((HOST, a))
        self.assertIs(self.engine._plan_codecs(relay, {"local": (HOST, a)}), _NO_CODECS)
        self.assertIs(self.engine._plan_codecs(relay, {"local": (HOST, a), "transcode": False,
                                                       "repacketise": None}), _NO_CODECS)
        self.value(self.engine.configure("c1", [
            {"local": (HOST, a), "peer": (HOST, b), "endpoint": A},
            {"local": (HOST, b), "peer": (HOST, a), "endpoint": B}]))
        states = self.engine._codec_state
        self.assertEqual(states, {})
        self.wire([PCMU], [PCMU], [PCMA], [PCMA], ports=(a, b))
        self.assertTrue(states[(HOST, a)]["transcode"])
        self.assertIsNot(self.engine._plan_codecs(relay, {"local": (HOST, a)}), _NO_CODECS)
        self.wire(None, None, None, None, a_transcode=False, b_transcode=False,
                  ports=(a, b))
        self.assertEqual(states, {})
        self.assertIsNone(self.engine.transcoder((HOST, a)))

    def test_rtcp_not_passed(self):
        """RTCP of a transcoded leg is not passed: dropped, counted."""
        a, b = self.wire([PCMU], [PCMU], [PCMA], [PCMA])
        self.send(a + 1, [b"\x81\xc9\x00\x07" + bytes(28)], (A[0], A[1] + 1))
        self.assertEqual(self.net.sent_to((B[0], B[1] + 1)), [])
        stats = self.value(self.engine.stats("c1"))["c1"]
        self.assertEqual(stats[(HOST, a + 1)]["transforms"],
                         {"transcode-rtcp": {"rtcp-dropped": 1}})
        self.assertEqual(stats[(HOST, a + 1)]["errors"], 1)

    def test_bad_lists_change_nothing(self):
        """A bad codecs_send fails the whole call with ValueError."""
        a, b = self.wire([PCMU], [PCMU], [PCMA], [PCMA])
        step = self.engine.transcoder((HOST, a))
        f = self.failureResultOf(self.engine.configure("c1", [
            {"local": (HOST, a), "peer": (HOST, b), "endpoint": A, "transcode": True,
             "codecs_send": [PCMA]},
            {"local": (HOST, b), "peer": (HOST, a), "endpoint": B, "transcode": True,
             "codecs_send": [{"pt": 300, "encoding": "pcma", "clock_rate": 8000}]},
        ]), ValueError)
        self.assertEqual(str(f.value), "codecs_send of 127.0.0.1:%d: payload type must be"
                                       " 0-127, got 300" % (b,))
        self.assertIs(self.engine.transcoder((HOST, a)), step)

    def test_release_forgets(self):
        a, b = self.wire([PCMU], [PCMU], [PCMA], [PCMA])
        self.value(self.engine.release("c1"))
        self.assertIsNone(self.engine.transcoder((HOST, a)))
        self.assertEqual(self.engine._codec_state, {})

    def test_garbage_counted_not_raised(self):
        a, b = self.wire([PCMU, OPUS], [PCMU], [OPUS], [OPUS])
        self.send(a, [rtp(1, 0, b"\xfb\x00", pt=111), rtp(2, 160, bytes(10), pt=77),
                      b"\x80\x00\x00\x03" + bytes(8)], A)
        stats = self.value(self.engine.stats("c1"))["c1"][(HOST, a)]
        self.assertEqual(stats["errors"], 2)
        counters = stats["transforms"]["transcode"]
        self.assertEqual((counters["unknown-pt"], counters["passed"], counters["corrupt"],
                          counters["transcoded"]), (1, 1, 1, 0))

    def test_sender_reports_generated(self):
        """Every 5 s each transcoded stream gets an SR towards the party it
        goes to, from the RTCP socket facing that party, with a report
        block about what that party sends; nothing before media flows."""
        import struct as _struct
        a, b = self.wire([PCMU], [PCMU], [PCMA], [PCMA])
        self.reactor.advance(5)
        self.assertEqual(self.net.sent_to((B[0], B[1] + 1)), [])
        self.send(a, [rtp(1 + i, 160 * i, bytes(160)) for i in range(4)], A)
        self.send(b, [rtp(50, 0, bytes(160), pt=8, ssrc=0xB0B0B0B0),
                      rtp(52, 320, bytes(160), pt=8, ssrc=0xB0B0B0B0)], B)
        self.reactor.advance(5)
        to_b = self.net.sent_to((B[0], B[1] + 1))
        self.assertEqual(len(to_b), 1)
        data, source = to_b[0]
        self.assertEqual(source, (HOST, b + 1))
        fields = _struct.unpack(">BBHIIIIII", data[:28])
        step = self.engine.transcoder((HOST, a))
        self.assertEqual((fields[0], fields[1], fields[2], fields[3], fields[7], fields[8]),
                         (0x81, 200, 12, step.ssrc, 4, 640))
        self.assertEqual(_struct.unpack(">IIIIII", data[28:]),
                         (0xB0B0B0B0, (85 << 24) | 1, 52, 0, 0, 0))
        to_a = self.net.sent_to((A[0], A[1] + 1))
        self.assertEqual(len(to_a), 1)
        self.assertEqual(_struct.unpack(">I", to_a[0][0][4:8])[0],
                         self.engine.transcoder((HOST, b)).ssrc)
        self.value(self.engine.release("c1"))
        self.assertIsNone(self.engine._rtcp_timer)

    def test_sender_reports_follow_rtcp_mux(self):
        """B multiplexes RTCP (A's RTCP socket sends to B's RTP socket):
        the SR for B goes out of B's RTP socket to B's RTP address."""
        a, b = self.value(self.engine.allocate("c1", HOST, 2))
        fmts = {a: [PCMU], b: [PCMA]}
        entries = []
        for local, peer, endpoint in ((a, b, A), (a + 1, b, (A[0], A[1] + 1)), (b, a, B),
                                      (b + 1, a + 1, B)):
            entries.append({"local": (HOST, local), "peer": (HOST, peer), "endpoint": endpoint,
                            "transcode": True, "codecs_send": fmts[local & ~1],
                            "codecs_recv": fmts[local & ~1]})
        entries[2]["rtcp_peer"] = (HOST, a + 1)
        self.value(self.engine.configure("c1", entries))
        self.send(a, [rtp(1, 0, bytes(160))], A)
        self.reactor.advance(5)
        rtcp = [(d, s) for d, s in self.net.sent_to(B) if d[1] == 200]
        self.assertEqual([s for _, s in rtcp], [(HOST, b)])

    def test_with_srtp_both_sides(self, ptime=None):
        """X sends SRTP PCMU, Y gets SRTP PCMA: unprotect (X's key), then
        transcode, then protect (Y's key); the generated SR goes out as
        SRTCP with Y's key too."""
        import struct as _struct

        from omnirtp.media.srtp import AES_CM_128_HMAC_SHA1_80, make_crypto
        from omnirtp.test.test_srtp import master, peer

        suite = AES_CM_128_HMAC_SHA1_80
        key_x, key_y = master(suite, 1), master(suite, 2)
        ports = self.value(self.engine.allocate("c1", HOST, 2))
        a, b = ports
        self.value(self.engine.configure("c1", [
            {"local": (HOST, a), "peer": (HOST, b), "endpoint": A, "transcode": True,
             "codecs_send": [PCMU], "codecs_recv": [PCMU],
             "srtp_in": make_crypto(suite, key_x)},
            {"local": (HOST, b), "peer": (HOST, a), "endpoint": B, "transcode": True,
             "codecs_send": [PCMA], "codecs_recv": [PCMA],
             "srtp_out": make_crypto(suite, key_y)},
            {"local": (HOST, b + 1), "peer": (HOST, a + 1), "endpoint": (B[0], B[1] + 1),
             "srtp_out": make_crypto(suite, key_y)},
            {"local": (HOST, a + 1), "peer": (HOST, b + 1), "endpoint": (A[0], A[1] + 1)},
        ]))
        if ptime:
            self.value(self.engine.configure("c1", [
                {"local": (HOST, b), "peer": (HOST, a), "endpoint": B, "transcode": True,
                 "srtp_out": make_crypto(suite, key_y), "ptime": 20}]))
        sender = peer(suite, key_x, outbound=True)
        if ptime:
            # 40 ms in, 20 ms to Y: two packets, each protected with Y's key
            payload = g711.ulaw_encode(pack(tone(440, 8000, 320, 10000)))
            self.send(a, [sender.protect(rtp(1, 0, payload))], A)
            receiver = peer(suite, key_y, outbound=False)
            plain = [receiver.unprotect(d) for d, _ in self.net.sent_to(B)]
            self.assertEqual([len(p) - 12 for p in plain], [160, 160])
            self.assertEqual(b"".join(p[12:] for p in plain),
                             g711.alaw_encode(g711.ulaw_decode(payload)))
            return
        payload = g711.ulaw_encode(pack(tone(440, 8000, 160, 10000)))
        self.send(a, [sender.protect(rtp(1, 0, payload))], A)
        got = self.net.sent_to(B)
        self.assertEqual(len(got), 1)
        receiver = peer(suite, key_y, outbound=False)
        plain = receiver.unprotect(got[0][0])
        self.assertEqual(header(plain)["pt"], 8)
        self.assertEqual(plain[12:], g711.alaw_encode(g711.ulaw_decode(payload)))
        self.reactor.advance(5)
        (srtcp, _source), = self.net.sent_to((B[0], B[1] + 1))
        report = receiver.unprotect_rtcp(srtcp)
        self.assertEqual(_struct.unpack(">BBHI", report[:8]),
                         (0x80, 200, 6, self.engine.transcoder((HOST, a)).ssrc))

    def test_with_srtp_and_ptime(self):
        """Repacketised (40 ms in, 20 ms out to Y): each packet the
        transcoder gives runs Y's SRTP protect."""
        self.test_with_srtp_both_sides(ptime=20)

    def test_repacketise_without_transcoding(self):
        """A plain call whose callee's entry says ``repacketise`` 40 (the
        ng ptime): A's 20 ms PCMU reaches B as 40 ms packets of the same
        bytes, B's packets reach A as they were sent (A's socket keeps
        no step: the plain path); without the key again, no step."""
        a, b = self.value(self.engine.allocate("c1", HOST, 2))

        def configure(repacketise):
            extra = {} if repacketise is None else {"repacketise": repacketise}
            self.value(self.engine.configure("c1", [
                {"local": (HOST, a), "peer": (HOST, b), "endpoint": A},
                {"local": (HOST, b), "peer": (HOST, a), "endpoint": B, **extra}]))

        configure(40)
        self.assertEqual(self.engine.transcoder((HOST, a)).name, "repacketise")
        self.assertIsNone(self.engine.socket((HOST, b)).pipeline)
        packets = [rtp(1 + i, 160 * i, bytes([i]) * 160) for i in range(4)]
        self.send(a, packets, A)
        got = [d for d, _ in self.net.sent_to(B)]
        self.assertEqual([(header(d)["ts"], d[12:]) for d in got],
                         [(0, bytes([0]) * 160 + bytes([1]) * 160),
                          (320, bytes([2]) * 160 + bytes([3]) * 160)])
        self.send(b, packets[:1], B)
        self.assertEqual(self.net.sent_to(A), [(packets[0], (HOST, a))])
        configure(None)
        self.assertIsNone(self.engine.transcoder((HOST, a)))
        self.assertIsNone(self.engine.socket((HOST, a)).pipeline)
