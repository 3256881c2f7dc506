"""Converting between naming styles."""


def camel_to_snake(name):
    """``camelCase`` or ``CamelCase`` to ``snake_case``."""
    out = []
    for char in name:
        if char.isupper():
            out.append("_")
            out.append(char.lower())
        else:
            out.append(char)
    return "".join(out)


def snake_to_camel(name):
    """``snake_case`` to ``camelCase``."""
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)
