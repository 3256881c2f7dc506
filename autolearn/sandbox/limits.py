"""Resource limits of a run: the `Limits` dataclass, the rlimits the runner applies to itself,
and the per-run cgroups that bound tasks for the whole sandbox."""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from autolearn.errors import UserError

logger = logging.getLogger(__name__)


_MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    timeout_s: float = 3.0
    memory_mb: int = 1024
    cpu_s: float | None = None
    file_size_mb: int = 32
    # a shell run's work dir: a tmpfs of this size inside bubblewrap, copied back afterwards
    workdir_mb: int = 256
    open_files: int = 256
    max_pids: int = 64
    output_bytes: int = 32_768

    def __post_init__(self) -> None:
        """Reject limits that cannot describe a run."""
        positive = {
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "file_size_mb": self.file_size_mb,
            "workdir_mb": self.workdir_mb,
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
class RunCgroup:
    """The cgroup directories of one sandbox: one per hierarchy (cgroup v1), or one (v2)."""

    paths: tuple[Path, ...]

    def set_limits(self, max_tasks: int, memory_bytes: int) -> None:
        """Write the task bound and, where a memory controller is joined, the memory bound."""
        for path in self.paths:
            _write_if_present(path / "pids.max", str(max_tasks))
            _write_if_present(path / "memory.max", str(memory_bytes))  # v2
            _write_if_present(path / "memory.swap.max", "0")
            _write_if_present(path / "memory.limit_in_bytes", str(memory_bytes))  # v1
            _write_if_present(path / "memory.memsw.limit_in_bytes", str(memory_bytes))

    def oom_kills(self) -> int:
        """How many tasks the kernel's OOM killer has killed in this cgroup so far."""
        total = 0
        for path in self.paths:
            for name in ("memory.events", "memory.oom_control"):
                for line in _read_text(path / name).splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and value.strip().isdigit():
                        total += int(value)
        return total

    @property
    def bounds_memory(self) -> bool:
        """Whether a memory controller is among the joined cgroups."""
        return any(
            (p / "memory.max").exists() or (p / "memory.limit_in_bytes").exists()
            for p in self.paths
        )


def _write_if_present(path: Path, value: str) -> None:
    if path.exists():
        try:
            path.write_text(value)
        except OSError as exc:
            logger.debug("cannot write %s: %s", path, exc)


class _Cgroups:
    """Per-run cgroups for the pids and memory controllers, under parents made for this process.

    Each controller's hierarchy gets a parent cgroup ``autolearn-sandbox-<pid>`` beside this
    process's own cgroup. With cgroup v2 both controllers live in one hierarchy and so one
    directory; with v1 a run joins one directory per hierarchy.
    """

    CONTROLLERS = ("pids", "memory")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parents: dict[str, Path] | None = None
        self._counter = 0

    def parents(self) -> dict[str, Path]:
        """Controller -> parent cgroup of this process's runs, created on first use."""
        with self._lock:
            if self._parents is None:
                self._parents = {}
                if os.environ.get("AUTOLEARN_SANDBOX_CGROUP", "1") != "0":
                    self._parents = self._create_parents()
            return self._parents

    def parent(self) -> Path | None:
        """The pids parent, or None when no pids cgroup is writable."""
        return self.parents().get("pids")

    def reset_lock(self) -> None:
        """Give a forked child a lock of its own."""
        self._lock = threading.Lock()

    def create(self, max_tasks: int, memory_bytes: int) -> RunCgroup | None:
        """Fresh cgroups bounding tasks and memory, or None when no cgroup is writable."""
        parents = self.parents()
        if not parents:
            return None
        with self._lock:
            self._counter += 1
            name = f"run-{os.getpid()}-{self._counter}"  # forked children share the counter
        paths: list[Path] = []
        for parent in dict.fromkeys(parents.values()):
            path = parent / name
            try:
                path.mkdir()
            except OSError as exc:
                logger.debug("cannot create sandbox cgroup %s: %s", path, exc)
                continue
            paths.append(path)
        if not paths:
            return None
        run = RunCgroup(tuple(paths))
        run.set_limits(max_tasks, memory_bytes)
        return run

    def destroy(self, run: RunCgroup | Path) -> None:
        """SIGKILL every task in the run's cgroups until they are empty, then remove them."""
        for path in run.paths if isinstance(run, RunCgroup) else (run,):
            self._destroy_one(path)

    def _destroy_one(self, path: Path) -> None:
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

    def _create_parents(self) -> dict[str, Path]:
        parents: dict[str, Path] = {}
        for controller in self.CONTROLLERS:
            base = _own_cgroup(controller)
            if base is None:
                continue
            known = next((p for p in parents.values() if p.parent == base), None)
            if known is not None:  # cgroup v2: the same hierarchy serves both controllers
                if _enable(known, controller):
                    parents[controller] = known
                continue
            parent = self._create_parent(base, controller)
            if parent is not None:
                parents[controller] = parent
        return parents

    def _create_parent(self, base: Path, controller: str) -> Path | None:
        _remove_stale_parents(base)
        parent = base / f"autolearn-sandbox-{os.getpid()}"
        try:
            parent.mkdir(exist_ok=True)
        except OSError as exc:
            logger.debug("no writable %s cgroup under %s: %s", controller, base, exc)
            return None
        if not _enable(parent, controller):
            _remove_quietly(parent)
            return None
        atexit.register(_remove_empty_cgroups, parent)
        return parent


_LIMIT_FILES = {"pids": ("pids.max",), "memory": ("memory.max", "memory.limit_in_bytes")}


def _enable(parent: Path, controller: str) -> bool:
    """Make `controller` available to children of `parent`; whether a child then has it."""
    try:
        subtree = parent / "cgroup.subtree_control"
        if subtree.exists():  # cgroup v2: children need the controller enabled here
            subtree.write_text(f"+{controller}")
        probe = parent / f"probe-{controller}"
        probe.mkdir(exist_ok=True)
        ok = any((probe / name).exists() for name in _LIMIT_FILES[controller])
        probe.rmdir()
    except OSError as exc:
        logger.debug("cannot enable %s under %s: %s", controller, parent, exc)
        return False
    return ok


def _own_cgroup(controller: str) -> Path | None:
    """Directory of this process's cgroup in a hierarchy that has `controller`."""
    try:
        membership = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in membership:
        hierarchy, _, rest = line.partition(":")
        controllers, _, cgpath = rest.partition(":")
        v2 = hierarchy == "0" and controllers == ""
        if not v2 and controller not in controllers.split(","):
            continue
        for mount in mounts:
            fields = mount.split()
            if " - " not in mount:
                continue
            fstype = mount.split(" - ", 1)[1].split()
            if v2 and fstype[0] != "cgroup2":
                continue
            if not v2 and (fstype[0] != "cgroup" or controller not in fstype[2].split(",")):
                continue
            root, mountpoint = fields[3], fields[4]
            relative = os.path.relpath(cgpath, root) if cgpath.startswith(root) else None
            if relative is None or relative.startswith(".."):
                continue
            base = Path(mountpoint) / relative if relative != "." else Path(mountpoint)
            if v2 and controller not in _read_text(base / "cgroup.controllers").split():
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


_CGROUPS = _Cgroups()


_MEMORY_HEADROOM_MB = 64  # the sandbox's own processes (bwrap, zygote, driver) besides the job


def sandbox_memory_bytes(limits: Limits) -> int:
    """The memory cgroup bound of one sandbox: ``memory_mb`` plus the supervisors' share.

    Pages in the sandbox's tmpfs mounts count too, so this also bounds what a job keeps there.
    """
    return (limits.memory_mb + _MEMORY_HEADROOM_MB) * _MIB


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
