"""Starting one sandbox and supervising it: the pipes of a run, the collector that feeds the
job and reads output and verdict lines, the wall clock, and the clean-up of every process."""

from __future__ import annotations

import contextlib
import marshal
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from autolearn.sandbox.isolation import (
    _isolation_argv,
    _job_sys_path,
    _sandbox_env,
    _sandbox_paths,
    _seccomp_pipe,
    _wrapper_argv,
)
from autolearn.sandbox.limits import _CGROUPS, Limits, RunCgroup, _rlimits, sandbox_memory_bytes

_HARNESS_PATH = Path(__file__).with_name("_harness.py")


_HARNESS_CODE = compile(_HARNESS_PATH.read_text(encoding="utf-8"), str(_HARNESS_PATH), "exec")


# Runs in the sandbox: read marshal.dumps((harness code, job)) from argv[1], run the harness.
_BOOTSTRAP = (
    "import sys,posix,marshal\n"
    "f=int(sys.argv[1])\n"
    "def r(n):\n d=[]\n while n:\n  b=posix.read(f,min(n,1<<20))\n  if not b:break\n"
    "  d.append(b);n-=len(b)\n return b''.join(d)\n"
    "c,j=marshal.loads(r(int.from_bytes(r(8),'little')))\n"
    "exec(c,{'__name__':'__sandbox__','JOB':j,'JOB_FD':f})\n"
)


_HARNESS_INTERNAL_ERROR = 70


def frame(payload: bytes) -> bytes:
    """`payload` with the 8-byte length prefix the in-sandbox readers expect."""
    return len(payload).to_bytes(8, "little") + payload


_OUTPUT_KILL_FACTOR = 32  # a stream may produce this many times output_bytes before the kill


_VERDICT_LIMIT = 4 << 20  # bytes of verdict lines accepted before the run counts as tampering


_DRAIN_SECONDS = 0.5  # after the kill, how long leftover pipe writers may keep us waiting


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
    oom_killed: bool = False  # the memory cgroup's OOM killer ended a task of the run


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

    def __init__(
        self, pipes: _RunPipes, job_bytes: bytes, limits: Limits, sink: _Sink | None = None
    ) -> None:
        self.limits = limits
        self.sink = sink
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
        for fd in [*self.buffers, *self._extra_reads()]:
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
        for fd in [*self.buffers, *self._extra_reads()]:
            if fd in self.open_reads:
                self.selector.unregister(fd)
            os.close(fd)
        self.open_reads.clear()
        self.selector.close()

    def _extra_reads(self) -> list[int]:
        fds = [self.verdict_fd] if self.verdict_fd is not None else []
        return fds + ([self.sink.read_fd] if self.sink is not None else [])

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
        if self.sink is not None and fd == self.sink.read_fd:
            self.sink.take(chunk)
            return True
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


class _Sink:
    """Where a stream from the sandbox other than stdout/stderr goes: a file, up to `limit`
    bytes (the rest is read and dropped)."""

    def __init__(self, read_fd: int, write_fd: int, file: IO[bytes], limit: int) -> None:
        self.read_fd, self.write_fd, self.file, self.room = read_fd, write_fd, file, limit

    def take(self, chunk: bytes) -> None:
        """Keep what fits of `chunk`."""
        kept = chunk[: self.room]
        self.file.write(kept)
        self.room -= len(kept)


def _finish_outcome(outcome: _Outcome, state: str, started: float) -> _Outcome:
    outcome.timed_out = state == "timeout"
    outcome.duration_s = time.monotonic() - started
    return outcome


def _execute(
    job: dict,
    limits: Limits,
    level: str,
    *,
    workdir: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    cgroup_ok: bool = True,
    trusted: bytes = b"",
    stream: tuple[IO[bytes], int] | None = None,
) -> _Outcome:
    """Spawn a fresh runner at `level`, feed it `job`, supervise it and clean up everything.

    `trusted` (a `frame`) follows the job on the job pipe: an isolated run's driver reads it
    only after forking the candidate process. `stream` (file, byte limit): a pipe whose write
    end the runner gets in place of the verdict pipe, copied into the file (a shell run's work
    dir coming back); the wall clock then allows `COPY_BACK_GRACE_S` more for it.
    """
    mode = job["mode"]
    host_dir = None if level == "bwrap" else Path(tempfile.mkdtemp(prefix="autolearn-sbx-"))
    pipes = _RunPipes(verdicts=mode != "shell")
    seccomp_fd = _seccomp_pipe() if level == "bwrap" else None
    if seccomp_fd is not None:
        pipes.extra_child_ends.append(seccomp_fd)
    sink = None
    if stream is not None:
        sink = _Sink(*os.pipe(), *stream)
        pipes.extra_child_ends.append(sink.write_fd)
    cgroup = None
    if cgroup_ok:
        cgroup = _CGROUPS.create(
            limits.max_pids + _TASK_OVERHEAD[level], sandbox_memory_bytes(limits)
        )
    try:
        paths = _sandbox_paths(mode, level, host_dir, workdir)
        job = {**job, "limits": _rlimits(limits, level), "path": _job_sys_path()}
        job["script_path"] = paths["script"]
        argv = _wrapper_argv(cgroup, level)
        argv += _isolation_argv(level, mode, limits, seccomp_fd, workdir)
        argv += _runner_argv(pipes, mode)
        if sink is not None:
            argv.append(str(sink.write_fd))
        launch = _Launch(argv, _sandbox_env(paths["home"], paths["tmp"], extra_env), paths["cwd"])
        payload = frame(marshal.dumps((_HARNESS_CODE, job))) + trusted
        return _spawn_and_supervise(launch, pipes, payload, limits, cgroup, sink=sink)
    finally:
        pipes.close_child_ends()
        if cgroup is not None:
            _CGROUPS.destroy(cgroup)
        if host_dir is not None:
            _remove_tree(host_dir)


COPY_BACK_GRACE_S = 10.0  # wall clock beyond timeout_s for copying a work dir in and back


_TASK_OVERHEAD = {"bwrap": 2, "namespaces": 1, "rlimits": 1}  # supervisor tasks inside the cgroup


def _runner_argv(pipes: _RunPipes, mode: str) -> list[str]:
    argv = [sys.executable, "-I", "-S", "-B", "-c", _BOOTSTRAP, str(pipes.job_r)]
    if mode != "shell" and pipes.verdict_w is not None:
        argv.append(str(pipes.verdict_w))
    return argv


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
    launch: _Launch,
    pipes: _RunPipes,
    job_bytes: bytes,
    limits: Limits,
    cgroup: RunCgroup | None,
    *,
    sink: _Sink | None = None,
) -> _Outcome:
    started = time.monotonic()
    deadline = started + limits.timeout_s + (COPY_BACK_GRACE_S if sink is not None else 0.0)
    extra = [pipes.job_r, *([pipes.verdict_w] if pipes.verdict_w is not None else [])]
    try:
        proc = _popen(launch, pipes.stdout_w, pipes.stderr_w, extra + pipes.extra_child_ends)
    except OSError as exc:
        sink_fd = sink.read_fd if sink is not None else None
        for fd in (pipes.job_w, pipes.stdout_r, pipes.stderr_r, pipes.verdict_r, sink_fd):
            if fd is not None:
                os.close(fd)
        return _Outcome(spawn_error=f"cannot start the sandbox: {exc}")
    pipes.close_child_ends()
    collector = _Collector(pipes, job_bytes, limits, sink)
    pidfd = _pidfd_open(proc.pid)
    outcome = _Outcome()
    state = "timeout"
    try:
        state = collector.pump(pidfd, deadline, lambda: _has_exited(proc.pid))
    finally:
        _kill_group(proc.pid)
        if cgroup is not None:
            outcome.oom_killed = cgroup.oom_kills() > 0
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
