"""The verdict channel seen from the host: MAC-checked, sequence-numbered lines replayed
through the runner's state machine."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field


@dataclass
class _Verdicts:
    """What the authenticated channel proved."""

    armed: bool = False
    setup_ok: bool = False
    setup_failure: tuple[str, int, str] | None = None
    passed: int = 0
    failures: dict[int, tuple[str, int, str]] = field(default_factory=dict)
    reported: int = 0  # units with a verdict (passed or failed)
    ended: bool = False
    tamper: str = ""
    in_process_needed: bool = False  # an isolated driver met a call that needs in-process mode


def _parse_verdicts(data: bytes, key: bytes, total: int) -> _Verdicts:
    """Check every line's MAC and sequence number and replay the runner's state machine."""
    verdicts = _Verdicts()
    lines = data.split(b"\n")
    for seq, line in enumerate(lines[:-1]):  # the runner ends every line; a tail is torn
        problem = _apply_line(verdicts, line, seq, key, total)
        if problem:
            verdicts.tamper = verdicts.tamper or problem
            break
    if lines[-1] and not verdicts.tamper:
        verdicts.tamper = "unterminated verdict line"
    return verdicts


def _apply_line(verdicts: _Verdicts, line: bytes, seq: int, key: bytes, total: int) -> str:
    parts = line.split(b" ")
    if len(parts) != 5:
        return "malformed verdict line"
    body = b" ".join(parts[:4])
    expected = hashlib.blake2b(body, key=key, digest_size=16).hexdigest().encode("ascii")
    if not hmac.compare_digest(expected, parts[4]):
        return "verdict line with a bad MAC"
    try:
        number, index = int(parts[0]), int(parts[2])
        payload = bytes.fromhex(parts[3].decode("ascii")).decode("utf-8", "replace")
    except ValueError:
        return "malformed verdict line"
    if number != seq:
        return "verdict lines out of sequence"
    return _advance(verdicts, parts[1], index, payload, total)


def _advance(  # noqa: PLR0911 - one return per event kind
    verdicts: _Verdicts, kind: bytes, index: int, payload: str, total: int
) -> str:
    """Apply one authenticated event; return a problem description if it breaks the protocol."""
    if kind in (b"T", b"A"):
        return _advance_marker(verdicts, kind, payload)
    if not verdicts.armed or verdicts.ended:
        return "verdict outside the run"
    if kind == b"E":
        verdicts.ended = True
        return ""
    if kind == b"I":
        verdicts.in_process_needed = True
        return ""
    if kind not in (b"P", b"F"):
        return "unknown verdict kind"
    if index == -1:
        return _advance_setup(verdicts, kind, payload)
    return _advance_unit(verdicts, kind, index, payload, total)


def _advance_marker(verdicts: _Verdicts, kind: bytes, payload: str) -> str:
    """T: the runner saw tampering; A: the runner is about to run candidate code."""
    if kind == b"T":
        verdicts.tamper = payload or "tampering detected by the runner"
        return ""
    problem = "runner armed twice" if verdicts.armed else ""
    verdicts.armed = True
    return problem


def _advance_setup(verdicts: _Verdicts, kind: bytes, payload: str) -> str:
    if verdicts.setup_ok or verdicts.setup_failure:
        return "setup reported twice"
    if kind == b"P":
        verdicts.setup_ok = True
    else:
        verdicts.setup_failure = _split_failure(payload)
    return ""


def _advance_unit(verdicts: _Verdicts, kind: bytes, index: int, payload: str, total: int) -> str:
    if not verdicts.setup_ok or index != verdicts.reported or index >= total:
        return "unit verdict out of order"
    verdicts.reported += 1
    if kind == b"P":
        verdicts.passed += 1
    else:
        verdicts.failures[index] = _split_failure(payload)
    return ""


def _split_failure(payload: str) -> tuple[str, int, str]:
    name, _, rest = payload.partition("|")
    lineno, _, detail = rest.partition("|")
    return name, int(lineno) if lineno.lstrip("-").isdigit() else 0, detail
