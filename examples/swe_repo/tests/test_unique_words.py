from textkit.counting import unique_words
from textkit.tokenize import words


def test_words_in_order():
    assert words("one two, three") == ["one", "two", "three"]


def test_unique_words_of_distinct_words():
    assert unique_words("red green blue") == {"red", "green", "blue"}
