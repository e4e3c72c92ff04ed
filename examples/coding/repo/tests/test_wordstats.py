import unittest

from wordstats import longest_word, word_count


class WordStatsTest(unittest.TestCase):
    def test_word_count_ignores_extra_whitespace(self):
        self.assertEqual(word_count("  to be\tor  not\nto be "), 6)

    def test_word_count_of_nothing(self):
        self.assertEqual(word_count(""), 0)

    def test_longest_word(self):
        self.assertEqual(longest_word("a quick brown fox"), "quick")


if __name__ == "__main__":
    unittest.main()
