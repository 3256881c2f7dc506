"""Splitting text into words."""

import re

WORD = re.compile(r"[A-Za-z0-9]+")


def words(text):
    """Return the words of ``text`` in order."""
    return WORD.findall(text)
