"""textkit: small helpers for cleaning, counting and reshaping text."""

from textkit.case import camel_to_snake, snake_to_camel
from textkit.counting import char_frequency, unique_words, word_count
from textkit.palindrome import is_palindrome
from textkit.slug import slugify
from textkit.wrap import truncate

__all__ = [
    "camel_to_snake",
    "char_frequency",
    "is_palindrome",
    "slugify",
    "snake_to_camel",
    "truncate",
    "unique_words",
    "word_count",
]
