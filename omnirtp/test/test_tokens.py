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


class RandomBytesTests(SynchronousTestCase):

    def setUp(self):
        self.draws = []

        def urandom(n):
            self.draws.append(n)
            return bytes(range(len(self.draws), len(self.draws) + n))

        self.patch(tokens.os, "urandom", urandom)
        self.patch(tokens, "BLOCK", 16)
        self.patch(tokens, "_block", b"")
        self.patch(tokens, "_taken", 0)

    def test_one_draw_per_block(self):
        """Bytes come from one os.urandom block, each handed out once; a
        new block is drawn when the rest is too short."""
        self.assertEqual(tokens.random_bytes(10), bytes(range(1, 11)))
        self.assertEqual(tokens.random_bytes(6), bytes(range(11, 17)))
        self.assertEqual(self.draws, [16])
        self.assertEqual(tokens.random_bytes(4), bytes(range(2, 6)))
        self.assertEqual(self.draws, [16, 16])
        self.assertEqual(tokens.random_bytes(40), bytes(range(3, 43)))  # more than a block
        self.assertEqual(self.draws, [16, 16, 40])

    def test_child_draws_its_own(self):
        """After a fork the child forgets its parent's block."""
        tokens.random_bytes(4)
        tokens._forget_block()
        self.assertEqual(tokens.random_bytes(4), bytes(range(2, 6)))
        self.assertEqual(self.draws, [16, 16])

    def test_tokens_use_it(self):
        """Two tokens of 4 (8 bytes each, 4 spare) from one block."""
        self.assertEqual(tokens.token(4) + tokens.token(4), "bcdejklm")
        self.assertEqual(self.draws, [16])
