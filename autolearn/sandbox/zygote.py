"""The zygote pool: long-lived bubblewrap sandboxes whose PID 1 forks a fresh child per job."""

from __future__ import annotations

import atexit
import contextlib
import logging
import marshal
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from autolearn.sandbox.isolation import (
    _LOCKS,
    _bwrap_argv,
    _sandbox_env,
    _seccomp_pipe,
    _wrapper_argv,
)
from autolearn.sandbox.limits import _CGROUPS, Limits, sandbox_memory_bytes
from autolearn.sandbox.process import (
    _BOOTSTRAP,
    _HARNESS_CODE,
    _Collector,
    _finish_outcome,
    _kill_group,
    _Launch,
    _Outcome,
    _popen,
    _RunPipes,
    frame,
)

logger = logging.getLogger(__name__)


ZYGOTE_ENV = "AUTOLEARN_SANDBOX_ZYGOTE"


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
        self.cgroup = _CGROUPS.create(
            Limits().max_pids + _ZYGOTE_TASKS, sandbox_memory_bytes(Limits())
        )
        self.control, child_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        boot_r, boot_w = os.pipe()
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
            os.close(boot_w)
            self.kill()
            raise
        finally:
            os.close(boot_r)
            child_control.close()
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        self._send_boot(boot_w)
        self._await_ready()

    def _send_boot(self, boot_w: int) -> None:
        """Write the harness to the starting zygote (more than a pipe buffer holds)."""
        payload = memoryview(frame(marshal.dumps((_HARNESS_CODE, {"mode": "zygote"}))))
        deadline = time.monotonic() + _ZYGOTE_START_S
        try:
            while payload:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([], [boot_w], [], remaining)[1]:
                    raise _ZygoteError("sandbox zygote did not read its harness")
                payload = payload[os.write(boot_w, payload[: 1 << 16]) :]
        except OSError as exc:
            self.kill()
            raise _ZygoteError(f"sandbox zygote did not start ({exc})") from exc
        except _ZygoteError:
            self.kill()
            raise
        finally:
            os.close(boot_w)

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
        oom_kills = 0
        if self.cgroup is not None:
            self.cgroup.set_limits(limits.max_pids + _ZYGOTE_TASKS, sandbox_memory_bytes(limits))
            oom_kills = self.cgroup.oom_kills()
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
            if self.cgroup is not None:
                outcome.oom_killed = self.cgroup.oom_kills() > oom_kills
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
