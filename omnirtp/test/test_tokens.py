"""omnirtp.tokens: random alphanumeric tokens."""

from twisted.trial.unittest import SynchronousTestCase

from omnirtp import tokens


class TokenTests(SynchronousTestCase):

    def test_length_and_alphabet(self):
        for length in (1, 8, 16, 24, 26, 100):
            t = tokens.token(length)
            self.assertEqual(len(t), length)
            self.assertTrue(set(t) <= set(tokens.ALPHANUMERIC), t)

    def test_byte_mapping(self):
        """Byte b < 248 gives character b % 62; bytes 248-255 are skipped."""
        self.assertEqual(tokens.token(4, urandom=lambda n: bytes([0, 61, 62, 247] + [0] * (n - 4))),
                         "a9a9")
        self.assertEqual(tokens.token(3, urandom=lambda n: bytes([248, 255, 1, 63, 124] + [0] * (n - 5))),
                         "bba")

    def test_draws_again_when_too_many_dropped(self):
        draws = [bytes([250] * 6), bytes([2, 3])]
        self.assertEqual(tokens.token(2, urandom=lambda n: draws.pop(0)), "cd")
        self.assertEqual(draws, [])

    def test_distinct(self):
        self.assertEqual(len({tokens.token(24) for _ in range(50)}), 50)
