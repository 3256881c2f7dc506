from textkit.counting import char_frequency, word_count


def test_counts_simple_sentence():
    assert word_count("the quick brown fox") == 4


def test_char_frequency_ignores_spaces():
    assert char_frequency("a b a") == {"a": 2, "b": 1}
