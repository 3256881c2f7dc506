"""Shortening text for display."""


def truncate(text, width, suffix="..."):
    """Shorten ``text`` to at most ``width`` characters, ending with ``suffix`` if cut."""
    if len(text) <= width:
        return text
    return text[:width] + suffix
