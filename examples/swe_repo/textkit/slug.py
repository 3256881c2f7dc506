"""URL slugs."""

import unicodedata


def slugify(text, sep="-"):
    """Turn ``text`` into a lowercase ASCII slug such as ``hello-world``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    chars = []
    for char in ascii_text.lower():
        if char.isalnum():
            chars.append(char)
        else:
            chars.append(sep)
    return "".join(chars)
