"""User-facing errors: one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

T = TypeVar("T")


class UserError(Exception):
    """A problem with the user's input (config, paths, data, model names, environment).

    Entry scripts catch it and print ``error: <message>`` as a single line on stderr.
    """

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(message: str) -> str:
    """Collapse whitespace so an error message fits on one terminal line."""
    return " ".join(str(message).split())


def run_main(main: Callable[[], T]) -> Callable[[], T]:
    """Wrap a script's ``main`` so that ``UserError`` and Ctrl-C end with one line, not a traceback."""

    @wraps(main)
    def wrapper() -> T:
        try:
            return main()
        except UserError as exc:
            sys.stderr.write(f"error: {one_line(str(exc))}\n")
            raise SystemExit(exc.exit_code) from None
        except KeyboardInterrupt:
            logging.getLogger("autolearn").warning("interrupted")
            raise SystemExit(EXIT_INTERRUPTED) from None

    return wrapper
