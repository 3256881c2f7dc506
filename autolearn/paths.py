"""Paths a user gives: output files checked before the work that fills them, and dataset
paths stored absolute so that a saved run can be read back from any directory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from autolearn.errors import UserError


def check_output_files(paths: Sequence[Path], flag: str = "--output") -> None:
    """Make sure each of ``paths`` can be written, before any model loads or work starts.

    Creates the missing parent folders (the results would need them anyway) and writes, then
    removes, a probe file beside each; an existing file must be a writable file. Any problem
    is one :class:`UserError` naming ``flag``.
    """
    for path in paths:
        if path.is_dir():
            raise UserError(f"{flag} {path} is a directory; give a file name")
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise UserError(f"{flag} {path} cannot be written: {blocking} is a file, not a folder")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{flag} {path} cannot be written: {_reason(exc)}") from None
        try:
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".probe-"):
                pass
        except OSError as exc:
            raise UserError(
                f"{flag} {path} cannot be written: no file can be created in {path.parent} "
                f"({exc.strerror or exc})"
            ) from None
        if path.exists() and not os.access(path, os.W_OK):
            raise UserError(f"{flag} {path} cannot be written: the file is read-only")


def _reason(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def write_failure(path: Path, exc: OSError, flag: str = "--output") -> UserError:
    """The one-line error for results that could not be written at the end of a run."""
    return UserError(f"{flag} {path} could not be written: {_reason(exc)}")


def absolute(path: str) -> str:
    """``path`` made absolute against the working directory (``~`` expanded); "" stays ""."""
    return str(Path(path).expanduser().absolute()) if path else path


def resolve_saved_path(path: str, run_dir: Path, saved_output_dir: str, what: str) -> Path:
    """A path read from a run's saved ``config.yaml``, resolved the way that run saw it.

    New runs save absolute paths. An older run saved the path as typed, relative to the
    directory it was started from. That directory is recovered from ``run_dir`` and the
    run's own relative ``training.output_dir`` (``/work/outputs/code`` saved as
    ``outputs/code`` was started in ``/work``); else the run directory and the current
    directory are tried. Not finding it is a :class:`UserError` that says where it looked.
    """
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        if not candidate.exists():
            raise UserError(f"{what} {candidate} (from the run's config.yaml) does not exist")
        return candidate
    tried = [base / candidate for base in _launch_dirs(run_dir, saved_output_dir)]
    for place in tried:
        if place.exists():
            return place
    raise UserError(
        f"{what} {path} (from the run's config.yaml) is relative, and not found at "
        f"{' or '.join(str(p) for p in tried)}; run from the directory the training ran in"
    )


def _launch_dirs(run_dir: Path, saved_output_dir: str) -> list[Path]:
    """Where an old run may have been started: from its output_dir, else run dir and here."""
    run = run_dir.resolve()
    bases: list[Path] = []
    saved = Path(saved_output_dir) if saved_output_dir else None
    if saved is not None and not saved.is_absolute() and ".." not in saved.parts:
        parts = saved.parts
        if parts and run.parts[-len(parts) :] == parts:
            bases.append(Path(*run.parts[: len(run.parts) - len(parts)]))
    for base in (run, Path.cwd()):
        if base not in bases:
            bases.append(base)
    return bases
