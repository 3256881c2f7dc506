"""`ExecResult` and how a run's raw outcome and proven verdicts become a status and message."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from autolearn.sandbox.limits import Limits
from autolearn.sandbox.process import _HARNESS_INTERNAL_ERROR, _OUTPUT_KILL_FACTOR, _Outcome
from autolearn.sandbox.protocol import _Verdicts

STATUSES = ("passed", "failed", "timeout", "memory", "crashed", "output_limit", "error")


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one sandboxed run; verdict fields come only from the authenticated channel."""

    status: str
    tests_total: int
    tests_passed: int
    setup_ok: bool
    exit_code: int | None
    duration_s: float
    stdout: str
    stderr: str
    isolation: str
    message: str = ""
    # Python runs: "isolated" (the tests ran apart from the program) or "in_process"; shell: ""
    verdict: str = "in_process"

    @property
    def passed(self) -> bool:
        """True iff the setup and every test unit were proven complete."""
        return self.status == "passed"

    @property
    def fraction(self) -> float:
        """Share of proven test units; 0.0 without setup, setup_ok as 1.0/0.0 without tests."""
        if not self.setup_ok:
            return 0.0
        if self.tests_total == 0:
            return 1.0
        return self.tests_passed / self.tests_total


def _result(
    outcome: _Outcome,
    *,
    status: str,
    message: str,
    tests_total: int,
    tests_passed: int,
    setup_ok: bool,
    isolation: str,
    verdict: str = "in_process",
) -> ExecResult:
    """ExecResult from the verdict fields plus what every run reports (exit, time, output)."""
    return ExecResult(
        status=status,
        tests_total=tests_total,
        tests_passed=tests_passed,
        setup_ok=setup_ok,
        exit_code=_exit_code(outcome),
        duration_s=round(outcome.duration_s, 4),
        stdout=_text(outcome.stdout_tail),
        stderr=_text(outcome.stderr_tail),
        isolation=isolation,
        message=message,
        verdict=verdict,
    )


def _python_status(
    outcome: _Outcome,
    verdicts: _Verdicts,
    tests: tuple[str, ...],
    program: str,
    limits: Limits,
) -> tuple[str, str]:
    """(status, message) of a Python run. Only authenticated verdicts can make it "passed"."""
    where = _current_step(verdicts, len(tests))
    if verdicts.tamper:
        return "failed", f"verdict channel tampered with ({verdicts.tamper}); no credit"
    if verdicts.setup_ok and verdicts.passed == len(tests):
        return "passed", ""
    return _killed_status(outcome, limits, where) or _unfinished_status(
        outcome, verdicts, tests, program, limits
    )


def _unfinished_status(
    outcome: _Outcome,
    verdicts: _Verdicts,
    tests: tuple[str, ...],
    program: str,
    limits: Limits,
) -> tuple[str, str]:
    """Status of a run that ended by itself without proving every unit."""
    where = _current_step(verdicts, len(tests))
    if not verdicts.armed:  # nothing the candidate wrote ran yet: an infrastructure problem
        detail = _text(outcome.stderr_tail).strip().splitlines()[-1:] or ["no output"]
        return "error", f"sandbox runner failed before the program ran: {detail[0]}"
    failure = _first_failure(verdicts, tests, program)
    if failure and failure[0] == "MemoryError":
        return "memory", failure[1]
    if failure:
        return "failed", failure[1]
    return _exit_status(outcome, limits, where)


def _killed_status(outcome: _Outcome, limits: Limits, where: str) -> tuple[str, str] | None:
    """Status when the host stopped the run (spawn failure, wall clock, output flood)."""
    if outcome.spawn_error:
        return "error", outcome.spawn_error
    if outcome.timed_out:
        return "timeout", f"timed out after {limits.timeout_s:g} s (wall clock) {where}".strip()
    if outcome.output_killed:
        limit = _OUTPUT_KILL_FACTOR * limits.output_bytes
        return "output_limit", f"{outcome.output_killed} exceeded {limit} bytes {where}".strip()
    return None


def _exit_status(outcome: _Outcome, limits: Limits, where: str) -> tuple[str, str]:
    """Status from how the process ended when no verdict explains it."""
    if outcome.oom_killed:
        limit = f"memory limit ({limits.memory_mb} MiB for the whole sandbox)"
        return "memory", f"{limit} reached {where}".strip()
    signal_name = _death_signal(outcome)
    if _cpu_exhausted(outcome, limits, signal_name):
        return "timeout", f"CPU time limit ({limits.cpu_seconds} s) reached {where}".strip()
    if signal_name:
        return "crashed", f"killed by {signal_name} {where}".strip()
    return "failed", f"process exited with code {_exit_code(outcome)} {where}".strip()


def _current_step(verdicts: _Verdicts, total: int) -> str:
    if not verdicts.setup_ok:
        return "while running the program"
    if verdicts.reported >= total:
        return "after the last test"
    return f"in test {verdicts.reported + 1}"


def _first_failure(
    verdicts: _Verdicts, tests: tuple[str, ...], program: str
) -> tuple[str, str] | None:
    if verdicts.setup_failure:
        name, lineno, detail = verdicts.setup_failure
        line = _source_line(program, lineno)
        where = f" (line {lineno}: {line})" if line else ""
        return name, _join(f"{name} in program{where}", detail)
    if not verdicts.failures:
        return None
    index = min(verdicts.failures)
    name, lineno, detail = verdicts.failures[index]
    line = _source_line(tests[index], lineno) or tests[index].strip().splitlines()[0][:200]
    return name, _join(f"{name} in test {index + 1}: {line}", detail)


def _join(head: str, detail: str) -> str:
    return f"{head} ({detail})" if detail else head


def _source_line(source: str, lineno: int) -> str:
    lines = source.splitlines()
    if 1 <= lineno <= len(lines):
        return lines[lineno - 1].strip()[:200]
    return ""


def _death_signal(outcome: _Outcome) -> str:
    code = _exit_code(outcome)
    if code is None or code <= 128 or code > 128 + 64:
        return ""
    try:
        return signal.Signals(code - 128).name
    except ValueError:
        return f"signal {code - 128}"


def _cpu_exhausted(outcome: _Outcome, limits: Limits, signal_name: str) -> bool:
    if signal_name == "SIGXCPU":
        return True
    return signal_name == "SIGKILL" and outcome.cpu_s >= limits.cpu_seconds - 0.05


def _exit_code(outcome: _Outcome) -> int | None:
    code = outcome.returncode
    if code is None:
        return None
    return 128 - code if code < 0 else code


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _shell_result(outcome: _Outcome, limits: Limits, level: str, note: str = "") -> ExecResult:
    status, message = _killed_status(outcome, limits, "") or _shell_status(outcome, limits)
    if note:
        message = f"{message}; {note}" if message else note
    return _result(
        outcome,
        status=status,
        message=message,
        tests_total=0,
        tests_passed=0,
        setup_ok=status == "passed",
        isolation=level,
        verdict="",
    )


def _shell_status(outcome: _Outcome, limits: Limits) -> tuple[str, str]:
    stderr = _text(outcome.stderr_tail)
    if outcome.returncode == _HARNESS_INTERNAL_ERROR and "sandbox harness error" in stderr:
        return "error", stderr.strip().splitlines()[-1]
    if outcome.returncode == 0:
        return "passed", ""
    status, message = _exit_status(outcome, limits, "")
    if status == "failed":
        message = f"exit code {_exit_code(outcome)}"
    return status, message
