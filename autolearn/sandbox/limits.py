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
