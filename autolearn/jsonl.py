"""Reading JSON-lines files (optionally gzipped) with one-line errors that name the bad line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from autolearn.errors import UserError, one_line


def read_json_lines(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line; each line must hold a JSON object."""
    file = Path(path)
    opener = gzip.open if file.name.endswith(".gz") else open
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        with opener(file, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    rows.append((number, parse_json_object(line, file, number)))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: cannot read it ({one_line(str(exc))})") from None
    return rows


def parse_json_object(line: str, file: Path, number: int) -> dict[str, Any]:
    """One JSON-lines row, which must be an object."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{file}: line {number} is not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise UserError(f"{file}: line {number} is not a JSON object")
    return row
