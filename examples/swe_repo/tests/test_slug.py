from textkit.slug import slugify


def test_lowercases_words():
    assert slugify("Hello") == "hello"


def test_replaces_space_with_separator():
    assert slugify("hello world") == "hello-world"


def test_strips_accents():
    assert slugify("café") == "cafe"
