"""Run a Terminal-Bench task's checks so that the program under test cannot forge the verdict.

The checks run in their own sandbox run after the model's commands ended (see
:func:`autolearn.benchmarks.run_terminal_task`). The tests may start programs the model wrote
(``./greet.sh``), so everything those programs can reach is untrusted. The verdict therefore
leaves through a channel they cannot reach:

* **pytest files** (``tests/test_*.py``): bash ``exec``-s straight into one Python process that
  first makes itself non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``: other processes of the same
  user can no longer open its ``/proc/PID/fd``, ``mem`` or ``environ``, and the sandbox's seccomp
  filter refuses ptrace), then reads a random per-run key from a here-document on fd 3 and
  closes it. Its stdout becomes a private, non-inheritable fd; pytest and every program the
  tests start write to stderr instead. After ``pytest.main`` returns, the process writes one
  line to that private fd: the outcome of every test case and pytest's exit code, with a
  keyed BLAKE2b tag. The host accepts only a line with a valid tag, and only pytest exit codes
  0 (all passed) and 1 (some failed): an interrupted, crashed, killed or timed-out pytest, or
  one that collected nothing, passes no check. There is no report file and no exported path.
* **run-tests.sh** (no pytest files): a bash script's own report file (``$JUNIT_XML``) is
  writable by every program it starts, so only its exit status counts: one check, passed when
  bash exits 0 within the time limit. ``JUNIT_XML`` points to ``/dev/null``.

The checks' files are copied from the pristine task folder into a fresh folder under
``/var/tmp``, which the bubblewrap sandbox mounts read-only (only the working directory and a
private ``/tmp`` are writable there), with ``rootdir`` and our own ini file in it:
``python -I`` keeps the working directory and ``PYTHON*`` variables out, ``--noconftest``
ignores planted ``conftest.py`` files, ``-p no:cacheprovider`` writes no cache.

Residual threats: a test that imports the model's Python code into the pytest process gives
that code the process (and the key); at the weaker ``namespaces``/``rlimits`` isolation levels
the host filesystem (and so the checks folder) is writable by root.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autolearn.benchmarks import TerminalTask

CHANNEL_PREFIX = "AUTOLEARN-CHECKS"
PYTEST_NORMAL_EXITS = (0, 1)  # pytest.ExitCode.OK, TESTS_FAILED
READ_ONLY_ROOT = Path("/var/tmp")
RUN_TESTS_CASE = "run-tests.sh"
_MEMORY_MB = 2048

# Runs inside the sandbox as `python -I -B -c REPORTER CHECKS_DIR TEST_DIR`, fd 3 = the key.
_REPORTER = r"""
import ctypes, hashlib, json, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
    sys.exit("cannot make the check reporter non-dumpable")
key = bytes.fromhex(os.read(3, 256).decode().strip())
os.close(3)
verdicts = os.dup(1)
os.dup2(2, 1)
import pytest

class Recorder:
    def __init__(self):
        self.cases = {}

    def pytest_runtest_logreport(self, report):
        if report.when == "setup" or report.nodeid not in self.cases:
            self.cases[report.nodeid] = "passed"
        if report.failed:
            self.cases[report.nodeid] = "failed"
        elif report.skipped and self.cases[report.nodeid] == "passed":
            self.cases[report.nodeid] = "skipped"

recorder = Recorder()
checks, tests = sys.argv[1], sys.argv[2]
code = pytest.main(
    ["--noconftest", "-p", "no:cacheprovider", "-c", checks + "/pytest.ini",
     "--rootdir", checks, "-q", tests],
    plugins=[recorder],
)
payload = json.dumps({"exit": int(code), "cases": recorder.cases}, sort_keys=True)
tag = hashlib.blake2b(payload.encode(), key=key, digest_size=32).hexdigest()
os.write(verdicts, ("%s %s %s\n" % (PREFIX, tag, payload)).encode())
os._exit(int(code) if 0 <= int(code) < 256 else 3)
"""


@dataclass(frozen=True)
class CheckOutcome:
    """What a check run proved: the passing cases among ``total``, and how the run ended."""

    passed: frozenset[str]
    total: int
    status: str
    message: str = ""


def run_checks(task: TerminalTask, work: Path, timeout_s: float) -> CheckOutcome | None:
    """Run the task's checks with ``work`` as the working directory (``None``: no checks)."""
    from autolearn.sandbox import Limits, run_shell
    from autolearn.sandbox.workdir import workdir_mb_for

    pytest_files = task.pytest_files
    run_tests = task.run_tests_script
    if not pytest_files and run_tests is None:
        return None
    limits = Limits(timeout_s=timeout_s, memory_mb=_MEMORY_MB, workdir_mb=workdir_mb_for(work))
    with _pristine_checks(task, use_run_tests=not pytest_files) as checks:
        if not pytest_files:
            result = run_shell(_run_tests_script(checks), work, limits=limits)
            passed = frozenset({RUN_TESTS_CASE}) if result.passed else frozenset()
            return CheckOutcome(passed, 1, result.status, result.message)
        key = secrets.token_bytes(32)
        result = run_shell(_pytest_script(checks, key), work, limits=limits)
    return _read_verdict(result.stdout, key, result.status, result.message, len(pytest_files))


class _pristine_checks:  # noqa: N801 - used as a context manager, reads like a function
    """A fresh copy of the task's ``tests/`` (and ``run-tests.sh``) under ``/var/tmp``."""

    def __init__(self, task: TerminalTask, *, use_run_tests: bool) -> None:
        self.task = task
        self.use_run_tests = use_run_tests
        self.root: Path | None = None

    def __enter__(self) -> Path:
        base = READ_ONLY_ROOT if READ_ONLY_ROOT.is_dir() else None
        self.root = Path(tempfile.mkdtemp(prefix="autolearn-checks-", dir=base))
        self.root.chmod(0o755)  # the sandbox's user (uid 65534 when the trainer is root) reads it
        tests = self.task.task_dir / "tests"
        if tests.is_dir():
            shutil.copytree(tests, self.root / "tests", symlinks=False)
        else:
            (self.root / "tests").mkdir()
        (self.root / "pytest.ini").write_text("[pytest]\naddopts =\n", encoding="utf-8")
        if self.use_run_tests and self.task.run_tests_script is not None:
            shutil.copyfile(self.task.run_tests_script, self.root / "run-tests.sh")
        for path in [*self.root.rglob("*"), self.root]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        return self.root

    def __exit__(self, *exc: object) -> None:
        if self.root is not None:
            for path in [self.root, *self.root.rglob("*")]:
                if path.is_dir():
                    path.chmod(0o755)
            shutil.rmtree(self.root, ignore_errors=True)


def _pytest_script(checks: Path, key: bytes) -> str:
    """bash: remove this script file (it holds the key), then become the reporter."""
    reporter = _REPORTER.replace("PREFIX", repr(CHANNEL_PREFIX))
    python = shlex.quote(sys.executable)
    return (
        'rm -f -- "$0"\n'
        "exec 3<<'__AUTOLEARN_KEY__'\n"
        f"{key.hex()}\n"
        "__AUTOLEARN_KEY__\n"
        f"exec {python} -I -B -c {shlex.quote(reporter)} "
        f"{shlex.quote(str(checks))} {shlex.quote(str(checks / 'tests'))}\n"
    )


def _run_tests_script(checks: Path) -> str:
    python = shlex.quote(sys.executable)
    pytest_command = (
        f"{python} -I -B -m pytest --noconftest -p no:cacheprovider "
        f"-c {checks}/pytest.ini --rootdir {checks} -q"
    )
    return (
        f"export TEST_DIR={shlex.quote(str(checks / 'tests'))} JUNIT_XML=/dev/null\n"
        f"export PYTHON={python} PYTEST={shlex.quote(pytest_command)}\n"
        f"exec bash {shlex.quote(str(checks / 'run-tests.sh'))}\n"
    )


def _read_verdict(stdout: str, key: bytes, status: str, message: str, files: int) -> CheckOutcome:
    """The one tagged verdict line of a pytest run; no valid line or an abnormal pytest exit
    means no check passed (out of at least one per pytest file)."""
    payload = _tagged_payload(stdout, key)
    if payload is None:
        return CheckOutcome(frozenset(), max(1, files), status, _join("no verdict", message))
    try:
        verdict = json.loads(payload)
        exit_code, cases = int(verdict["exit"]), dict(verdict["cases"])
    except (ValueError, KeyError, TypeError):
        return CheckOutcome(frozenset(), max(1, files), status, "garbled verdict")
    if exit_code not in PYTEST_NORMAL_EXITS or not cases:
        detail = f"pytest exit code {exit_code}"
        return CheckOutcome(frozenset(), max(1, len(cases), files), status, _join(detail, message))
    passed = frozenset(str(name) for name, outcome in cases.items() if outcome == "passed")
    return CheckOutcome(passed, len(cases), status, message)


def _tagged_payload(stdout: str, key: bytes) -> str | None:
    for line in reversed(stdout.splitlines()):
        parts = line.split(" ", 2)
        if len(parts) != 3 or parts[0] != CHANNEL_PREFIX:
            continue
        expected = hashlib.blake2b(parts[2].encode(), key=key, digest_size=32).hexdigest()
        if hmac.compare_digest(expected, parts[1]):
            return parts[2]
    return None


def _join(head: str, detail: str) -> str:
    return f"{head}: {detail}" if detail else head
