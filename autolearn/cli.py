"""Command-line helpers shared by the scripts: ``--help`` that shows each default once, and
count words for log lines.

The training scripts leave their flags' argparse defaults at ``None`` (so that a flag the
user did not give does not override the YAML file); their ``--help`` reads the defaults from
the script's built-in :class:`~autolearn.config.Config` instead, so there is one source of truth.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any


def plural(count: int, word: str, plural_word: str | None = None) -> str:
    """``"1 prompt"``, ``"2 prompts"``, ``"0 prompts"`` (``plural_word`` for irregular words)."""
    return f"{count} {word if count == 1 else (plural_word or word + 's')}"


def naming(word: str, names: Sequence[str], plural_word: str | None = None) -> str:
    """``"column answer"``, ``"columns question, answer"``: a noun and the names it counts."""
    noun = word if len(names) == 1 else (plural_word or word + "s")
    return f"{noun} {', '.join(names)}"


def _shown(value: Any) -> str | None:
    """How a default reads in ``--help``, or ``None`` when there is nothing worth showing."""
    if value is None or value == "" or value is False or value is argparse.SUPPRESS:
        return None
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or None
    return str(value)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to a flag's help, once.

    Nothing is added when the help text already speaks of its default, or when there is no
    meaningful default (``None``, ``""``, a ``store_true`` flag). ``config_defaults`` maps a
    flag's dotted destination (``training.max_steps``) to the config value it falls back to.
    """

    def __init__(
        self, *args: Any, config_defaults: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.config_defaults = config_defaults or {}

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or not action.option_strings:
            return text
        value = self.config_defaults.get(action.dest, action.default)
        shown = _shown(value)
        if shown is None:
            return text
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


def defaults_formatter(config_defaults: Mapping[str, Any] | None = None) -> Any:
    """A ``formatter_class`` for :class:`argparse.ArgumentParser` (see :class:`DefaultsHelpFormatter`)."""

    def formatter(prog: str) -> DefaultsHelpFormatter:
        return DefaultsHelpFormatter(prog, config_defaults=config_defaults)

    return formatter


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"max_steps": 3}}`` -> ``{"training.max_steps": 3}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and all(isinstance(k, str) for k in value):
            flat.update(flatten(value, f"{dotted}."))
        flat[dotted] = value
    return flat
