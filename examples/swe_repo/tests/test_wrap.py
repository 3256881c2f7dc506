from textkit.wrap import truncate


def test_short_text_is_unchanged():
    assert truncate("hello", 10) == "hello"


def test_text_of_exact_width_is_unchanged():
    assert truncate("hello", 5) == "hello"
