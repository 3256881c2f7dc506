"""Counting words and characters."""

from collections import Counter

from textkit.tokenize import words


def word_count(text):
    """Number of whitespace-separated words in ``text``."""
    return len(text.split(" "))


def char_frequency(text):
    """Map each non-space character to how often it occurs."""
    return dict(Counter(char for char in text if not char.isspace()))


def unique_words(text):
    """The set of distinct words in ``text``."""
    return set(words(text))
