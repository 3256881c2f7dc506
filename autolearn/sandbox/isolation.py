"""Isolation levels: detecting what the machine supports, and the argv, paths and seccomp
filter of each level (bubblewrap, unshare namespaces, bare rlimits)."""

from __future__ import annotations

import errno
import functools
import logging
import os
import platform
import shutil
import struct
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from autolearn.errors import UserError
from autolearn.sandbox.limits import _CGROUPS, _MIB, Limits

logger = logging.getLogger(__name__)


ISOLATION_ENV = "AUTOLEARN_SANDBOX_ISOLATION"


SITE_PACKAGES_ENV = "AUTOLEARN_SANDBOX_SITE_PACKAGES"


ISOLATION_LEVELS = ("rlimits", "namespaces", "bwrap")  # weakest first


_HIDDEN_DIRS = ("/root", "/home", "/run")


_SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def isolation_level() -> str:
    """Strongest isolation this machine supports: "bwrap", "namespaces" or "rlimits" (cached)."""
    with _LOCKS.detect:
        if "level" not in _DETECTED:
            _DETECTED["level"] = _detect_level()
        return _DETECTED["level"]


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
    from autolearn.sandbox.process import _execute  # the runner needs this module's argv

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
