"""Small text statistics."""


def word_count(text: str) -> int:
    """The number of whitespace-separated words in ``text``."""
    return len(text.split(" "))


def longest_word(text: str) -> str:
    """The longest word in ``text`` (the first one on ties); ``""`` for no words."""
    return max(text.split(), key=len, default="")
