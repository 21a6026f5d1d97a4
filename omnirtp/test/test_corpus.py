"""The side-by-side corpus as data: partial cases and malformed datagrams."""

from twisted.trial.unittest import SynchronousTestCase

from omnirtp.test import corpus


class NeedsLinesTests(SynchronousTestCase):

    def test_seedComparedWithoutDtlsLines(self):
        """The seed's offer is compared today without exactly its
        a=setup/a=fingerprint lines (after the SDES suite differences); the
        answer and the delete whole."""
        case = corpus.CASES_BY_NAME["seed_offer_answer"]
        want = corpus.load_expected(case.name)
        full = case.expected_for_omnirtp(want)
        today = case.expected_today(want)
        removed = [line for line in full[0]["sdp"] if line not in today[0]["sdp"]]
        self.assertEqual(removed, ["a=setup:actpass", "a=fingerprint:sha-256 {FINGERPRINT1}"])
        self.assertEqual(today[1:], want[1:])
        self.assertIn("a=crypto:1 AEAD_AES_128_GCM inline:{KEY1}", today[0]["sdp"])
        self.assertIn("a=ice-ufrag:{UFRAG1}", today[0]["sdp"])

    def test_missingLineIsAnError(self):
        """A needs_lines prefix that rtpengine's reply lacks is a corpus
        error, not a silent no-op."""
        case = corpus.Case("x", [], needs="srtp", needs_lines={0: ("a=crypto:",)})
        self.assertRaises(ValueError, case.expected_today,
                          [{"result": "ok", "sdp": ["v=0", "a=sendrecv"]}])

    def test_wholeCasesUnchanged(self):
        case = corpus.CASES_BY_NAME["plain_offer_answer"]
        want = corpus.load_expected(case.name)
        self.assertEqual(case.expected_today(want), want)


class BadInputTests(SynchronousTestCase):

    def test_wellFormedTable(self):
        """Unique names, every datagram fits UDP with its cookie, every
        stated difference names an existing case rtpengine is asked and has
        a reason; the cases that crash 10.5 are stated differences."""
        names = [b.name for b in corpus.BAD_INPUT]
        self.assertEqual(len(names), len(set(names)))
        for case in corpus.BAD_INPUT:
            # the side-by-side cookie is sbs<pid>_<name>; pids stay below 2**22
            cookie = "sbs%d_%s " % (2 ** 22, case.name)
            self.assertLessEqual(len(cookie) + len(case.payload), 65507, case.name)
            if case.like:
                self.assertIn(case.like, corpus.BAD_INPUT_BY_NAME)
                self.assertFalse(corpus.BAD_INPUT_BY_NAME[case.like].rtpengine_crashes)
                self.assertTrue(case.reason, case.name)
            if case.rtpengine_crashes:
                self.assertTrue(case.like, case.name)
