from textkit.case import camel_to_snake, snake_to_camel


def test_camel_to_snake_lower_camel():
    assert camel_to_snake("fooBar") == "foo_bar"


def test_snake_to_camel():
    assert snake_to_camel("foo_bar_baz") == "fooBarBaz"
