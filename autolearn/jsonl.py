"""Reading local data files with one-line errors that name the file and the bad line or row.

:func:`read_json_lines` reads JSON lines (optionally gzipped); :func:`read_local_rows` reads
any of the row files the loaders accept (``.jsonl``, ``.json`` holding a list, ``.parquet``)
and says where each row came from ("line 3", "item 3", "row 3"), so that a loader's own
checks can name the place too.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from autolearn.errors import UserError, one_line

ROW_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


def read_json_lines(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line; each line must hold a JSON object."""
    file = Path(path)
    opener = gzip.open if file.name.endswith(".gz") else open
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        with opener(file, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                line = _decoded(raw, file, f"line {number}")
                if line.strip():
                    rows.append((number, parse_json_object(line, file, number)))
    except OSError as exc:
        raise UserError(f"{file}: cannot read it ({one_line(str(exc))})") from None
    return rows


def read_text(path: str | Path) -> str:
    """A whole text file (optionally gzipped) as UTF-8; a bad byte is an error naming its line."""
    file = Path(path)
    opener = gzip.open if file.name.endswith(".gz") else open
    try:
        with opener(file, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UserError(f"{file}: cannot read it ({one_line(str(exc))})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(f"{file}: cannot read it: line {line} is {NOT_UTF8}") from None


NOT_UTF8 = "not UTF-8 text; save the file as UTF-8"


def _decoded(raw: bytes, file: Path, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{file}: cannot read it: {where} is {NOT_UTF8}") from None


def parse_json_object(line: str, file: Path, number: int) -> dict[str, Any]:
    """One JSON-lines row, which must be an object."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{file}: line {number} is not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise UserError(f"{file}: line {number} is not a JSON object")
    return row


def read_json_file(path: str | Path) -> Any:
    """The parsed content of a JSON file (optionally gzipped), with one-line errors."""
    file = Path(path)
    try:
        return json.loads(read_text(file))
    except json.JSONDecodeError as exc:
        raise UserError(f"{file}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def _holds_json_lines(file: Path) -> bool:
    """Whether a ``.json`` file is JSON lines (one object per line) rather than one value."""
    text = read_text(file)
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return exc.msg == "Extra data" and text.lstrip()[:1] == "{"
    return False


def read_parquet_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every row of a Parquet file as a dict, with a one-line error for a bad file."""
    import pyarrow.parquet as pq

    file = Path(path)
    try:
        return list(pq.read_table(file).to_pylist())
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise UserError(f"{file}: not a readable Parquet file ({one_line(str(exc))})") from None


def read_local_rows(path: str | Path, what: str = "rows") -> list[tuple[str, Any]]:
    """``(where, row)`` for each row of a ``.jsonl``/``.json``/``.parquet`` file.

    ``where`` names the row for error messages: "line 3" (JSON lines, counting blank lines),
    "item 3" (the third entry of a JSON list) or "row 3" (Parquet). A file without rows is an
    error naming ``what`` it should hold.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{file}: not found" if not file.exists() else f"{file}: not a file")
    name = file.name.lower()
    rows: list[tuple[str, Any]]
    if name.endswith((".jsonl", ".jsonl.gz")):
        rows = [(f"line {n}", row) for n, row in read_json_lines(file)]
    elif name.endswith(".parquet"):
        rows = [(f"row {n}", row) for n, row in enumerate(read_parquet_rows(file), 1)]
    elif name.endswith(".json") and _holds_json_lines(file):  # as datasets' to_json writes
        rows = [(f"line {n}", row) for n, row in read_json_lines(file)]
    elif name.endswith(".json"):
        data = read_json_file(file)
        if not isinstance(data, list):
            raise UserError(f"{file}: expected a JSON list of {what}, got a {type(data).__name__}")
        rows = [(f"item {n}", row) for n, row in enumerate(data, 1)]
    else:
        raise UserError(f"{file}: unsupported file type; use {', '.join(ROW_SUFFIXES)}")
    if not rows:
        raise UserError(f"{file}: the file holds no {what}")
    return rows
