"""Palindromes."""


def is_palindrome(text):
    """True when ``text`` reads the same forwards and backwards."""
    return text == text[::-1]
