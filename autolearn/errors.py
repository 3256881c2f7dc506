"""User-facing errors: one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM (timeout, SLURM, docker stop)

T = TypeVar("T")


class UserError(Exception):
    """A problem with the user's input (config, paths, data, model names, environment).

    Entry scripts catch it and print ``error: <message>`` as a single line on stderr.
    """

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NothingToDoError(Exception):
    """The command has nothing left to do (``--resume`` of a finished run): a note, exit 0."""


class Aborted(KeyboardInterrupt):
    """A second interrupt signal: stop at once, with the exit code that signal calls for."""

    def __init__(self, exit_code: int = EXIT_INTERRUPTED) -> None:
        super().__init__()
        self.exit_code = exit_code


def one_line(message: str) -> str:
    """Collapse whitespace so an error message fits on one terminal line."""
    return " ".join(str(message).split())


def run_main(main: Callable[[], T]) -> Callable[[], T]:
    """Wrap a script's ``main``: ``UserError``, Ctrl-C and "nothing to do" end with one line, not a traceback."""

    @wraps(main)
    def wrapper() -> T:
        try:
            return main()
        except UserError as exc:
            sys.stderr.write(f"error: {one_line(str(exc))}\n")
            raise SystemExit(exc.exit_code) from None
        except NothingToDoError as exc:
            sys.stderr.write(f"{one_line(str(exc))}\n")
            raise SystemExit(0) from None
        except KeyboardInterrupt as exc:
            logging.getLogger("autolearn").warning("interrupted")
            raise SystemExit(getattr(exc, "exit_code", EXIT_INTERRUPTED)) from None

    return wrapper
