"""Runner that executes inside the sandbox; `autolearn.sandbox` starts it, the trainer never imports it.

It is launched as ``python -I -S -B -c <BOOTSTRAP> JOB_FD [VERDICT_FD]``; the bootstrap reads
``marshal.dumps((code of this module, job dict))`` from JOB_FD and executes this module with
``__name__ == "__sandbox__"`` and the job in the global ``JOB`` (the host compiles it once, so the
sandbox does not recompile it on every run). Only builtin modules are imported, to keep start-up
at a few milliseconds. The runner applies the resource limits to itself and then either replaces
itself with bash (shell jobs) or runs the candidate program followed by each test unit.

Verdicts leave through VERDICT_FD, a pipe only this process holds, and are written exclusively by
an audit hook (`sys.addaudithook`), which cannot be removed. The hook keeps the per-run MAC key in
its closure, so nothing the candidate can reach by ordinary means holds the key. It writes a line
only when the runner's own frame (an identity check) announces it, right after that frame executed
exactly the code object the hook handed out. It also refuses the introspection a candidate would
need to find the key or read the tests: frames, trace/profile hooks, `gc` walks, new audit hooks,
raw-memory modules, native modules from writable places, and the code of test-defined functions.
The hook never looks a name up in builtins or module globals (the candidate can rebind them),
and candidate code runs off the main thread, so it cannot install a signal handler, which would
be handed whatever frame it interrupts (possibly one of the hook's).
The threat model, including what this does not stop, is in the `autolearn.sandbox` docstring.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it would slow down every sandbox start
    from collections.abc import Callable
    from typing import Any

    Emit = Callable[[bytes, int, str], None]
    Hook = Callable[[str, tuple], None]

_MSG_LIMIT = 400  # characters of exception detail forwarded to the host
_INTERNAL_ERROR_EXIT = 70
_CALLER_DEPTH = 2  # from a protocol handler: handler <- guard <- caller of the event
_BLOCKED_EVENTS = frozenset(
    (
        "sys.settrace",
        "sys.setprofile",
        "sys._current_frames",
        "sys._current_exceptions",
        "sys.addaudithook",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "ctypes.dlsym",
        "ctypes.dlsym/handle",
        "ctypes.call_function",
        "ctypes.cdata",
        "ctypes.string_at",
        "ctypes.wstring_at",
    )
)
_FRAME_ATTRS = frozenset(
    ("tb_frame", "f_code", "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code")
)
_FUNCTION_ATTRS = frozenset(("__code__", "__defaults__", "__kwdefaults__"))
_RAW_MEMORY_MODULES = frozenset(("ctypes", "_ctypes", "_cffi_backend", "cffi"))


def _apply_limits(limits: tuple) -> None:
    """Set rlimits on this process (children inherit them); a negative soft limit is skipped."""
    import resource

    names = ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC")
    for name, (wanted_soft, wanted_hard) in zip(names, limits, strict=True):
        if wanted_soft < 0:
            continue
        which = getattr(resource, name)
        _, current_hard = resource.getrlimit(which)
        hard = wanted_hard
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
        resource.setrlimit(which, (min(wanted_soft, hard), hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _exec_shell(job: dict) -> None:
    """Write the script to the private scratch path and replace this process with bash."""
    import posix

    path = job["script_path"]
    fd = posix.open(path, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC, 0o700)
    data = job["script"].encode("utf-8", "surrogateescape")
    while data:
        data = data[posix.write(fd, data) :]
    posix.close(fd)
    posix.execv(job["shell"], [job["shell"], path])


def _compile_all(job: dict) -> tuple:
    """(code | None, error name, line, detail) for the program and each unit, in order."""
    sources = (job.pop("program"), *job.pop("tests"))
    entries: list[tuple] = []
    for index, source in enumerate(sources):
        filename = "<program>" if index == 0 else f"<test {index}>"
        try:
            entries.append((compile(source, filename, "exec", dont_inherit=True), "", 0, ""))
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
            lineno = getattr(exc, "lineno", None)
            detail = getattr(exc, "msg", None) or str(exc)
            entries.append((None, type(exc).__name__, lineno if type(lineno) is int else 0, detail))
    return tuple(entries)


def _make_emitter(key: bytes, verdict_fd: int) -> Emit:
    """emit(kind, index, payload): write one sequence-numbered, MAC-tagged verdict line."""
    import _blake2
    import posix

    write, blake2b = posix.write, _blake2.blake2b
    sequence = [0]

    def emit(kind: bytes, index: int, payload: str) -> None:
        hexed = payload.encode("utf-8", "backslashreplace").hex().encode("ascii")
        body = b"%d %s %d %s" % (sequence[0], kind, index, hexed)
        tag = blake2b(body, key=key, digest_size=16).hexdigest().encode("ascii")
        sequence[0] += 1
        try:  # noqa: SIM105 - contextlib would be one more import in every sandbox
            write(verdict_fd, body + b" " + tag + b"\n")
        except OSError:  # the candidate closed or replaced the channel: it loses the credit
            pass

    return emit


def _failure_payload(
    args: tuple,
    *,
    len_: Callable = len,
    type_: type = type,
    str_: type = str,
    int_: type = int,
    limit: int = _MSG_LIMIT,
) -> str:
    """'name|line|detail' from the runner's (name, detail, line), trusting exact types only.

    Called from the hook, so the builtins it needs are bound as defaults at definition time.
    """
    name, detail, lineno = args if len_(args) == 3 else ("?", "", 0)
    name = name if type_(name) is str_ else "?"
    detail = detail if type_(detail) is str_ else ""
    lineno = lineno if type_(lineno) is int_ else 0
    return f"{name}|{lineno}|{detail}"[:limit]


def _make_caller_check(frame: object) -> Callable[[], bool]:
    """called_by_runner(): whether the event being handled was raised by the runner frame.

    Call it only from a protocol handler (see `_CALLER_DEPTH`). The policy lets its
    ``sys._getframe`` through only when that returns the runner frame and raises ValueError
    otherwise, so no other frame ever leaves the hook.
    """
    getframe, depth, value_error = sys._getframe, _CALLER_DEPTH + 1, ValueError

    def called_by_runner() -> bool:
        try:
            return getframe(depth) is frame
        except value_error:
            return False

    return called_by_runner


def _make_protocol(
    entries: tuple, frame: object, emit: Emit, shared: list
) -> tuple[Hook, Callable[[tuple], None]]:
    """(on_private, on_exec): the state machine that turns the runner's announcements into lines.

    Entry 0 is the program, entry k the k-th unit; verdict indices are entry - 1 (-1 = setup).
    `shared[0]` receives the tests namespace, which the access policy protects.
    """
    import posix

    # Hook code must never look a name up in builtins or module globals: the candidate can
    # rebind those, and code it slips into the hook would run with the hook's frames in reach.
    getpid, limit, called_by_runner = posix.getpid, _MSG_LIMIT, _make_caller_check(frame)
    owner_pid = getpid()
    len_, type_, list_type, dict_type, failure_payload = len, type, list, dict, _failure_payload

    # index of the entry handed out (-1: none yet), its phase, and whether tampering was seen
    state: list = [-1, "idle", False]

    def tamper(reason: str) -> None:
        if not state[2]:
            state[2] = True
            emit(b"T", -1, reason)

    def hand_out(args: tuple) -> None:
        slot: Any = args[0] if len_(args) > 0 else None
        if type_(slot) is not list_type or state[1] != "idle" or state[0] + 1 >= len_(entries):
            tamper("unexpected request for the next unit")
            return
        if state[0] >= 0 and shared[0] is None and len_(args) > 1 and type_(args[1]) is dict_type:
            shared[0] = args[1]
        state[0] += 1
        if state[0] == 0:
            emit(b"A", -1, "")  # armed: from here on candidate code may run
        code, name, lineno, detail = entries[state[0]]
        if code is None:
            emit(b"F", state[0] - 1, f"{name}|{lineno}|{detail}"[:limit])
            return
        slot.append(code)
        state[1] = "handed"

    def conclude(event: str, args: tuple) -> None:
        if event == "autolearn.pass":
            if state[1] != "running":
                tamper("pass announced for code that did not run")
                return
            emit(b"P", state[0] - 1, "")
        elif state[1] == "idle":
            tamper("failure announced without a unit")
            return
        else:
            emit(b"F", state[0] - 1, failure_payload(args))
        state[1] = "idle"

    def on_private(event: str, args: tuple) -> None:
        if getpid() != owner_pid:  # a forked copy of the runner never speaks for the run
            return
        if not called_by_runner():
            tamper(f"{event} raised outside the runner")
        elif state[2]:
            return
        elif event == "autolearn.next":
            hand_out(args)
        elif event in ("autolearn.pass", "autolearn.fail"):
            conclude(event, args)
        elif event == "autolearn.end":
            emit(b"E", state[0], "")

    def on_exec(args: tuple) -> None:
        if getpid() != owner_pid or not called_by_runner():
            return
        if state[1] != "handed" or len_(args) < 1 or args[0] is not entries[state[0]][0]:
            tamper("runner executed unexpected code")
            return
        state[1] = "running"

    return on_private, on_exec


def _make_policy(frame: object, shared: list) -> Hook:
    """refuse(event, args): raise for introspection and native-code events of the candidate."""
    harness_globals = frame.f_globals  # type: ignore[attr-defined]
    blocked, frame_attrs = _BLOCKED_EVENTS, _FRAME_ATTRS
    function_attrs, raw_modules = _FUNCTION_ATTRS, _RAW_MEMORY_MODULES
    function_type, str_type, len_, type_ = type(_make_policy), str, len, type
    attribute_error, import_error, value_error, runtime_error = (
        AttributeError,
        ImportError,
        ValueError,
        RuntimeError,
    )
    # extension modules load only from the interpreter's read-only library directories
    # (and site-packages when the host opted in); a module built in /tmp cannot be loaded
    native_dirs = tuple(d.rstrip("/") + "/" for d in sys.path if d)

    def refuse_attribute(args: tuple) -> None:
        if len_(args) < 2 or type_(args[1]) is not str_type:
            return
        name, target = args[1], args[0]
        if name in frame_attrs:
            raise attribute_error(f"{name} is not available in the sandbox")
        if name in function_attrs and type_(target) is function_type:
            owner = target.__globals__
            if owner is shared[0] or owner is harness_globals:
                raise attribute_error(f"{name} of test functions is not available")

    def refuse_import(args: tuple) -> None:
        name: Any = args[0] if len_(args) > 0 else None
        path: Any = args[1] if len_(args) > 1 else None
        if type_(name) is not str_type:
            raise import_error("module name must be a str")
        root = name.partition(".")[0]
        if root in raw_modules or root.startswith("_test"):
            raise import_error(f"module {name} is not available in the sandbox")
        if path is not None and (
            type_(path) is not str_type
            or not path.startswith(native_dirs)
            or "/../" in path
            or "/./" in path
        ):
            raise import_error(f"extension module {name} may not be loaded from {path}")

    def refuse(event: str, args: tuple) -> None:
        if event in blocked or event.startswith("sys.monitoring"):
            raise runtime_error(f"{event} is disabled in the sandbox")
        if event == "sys._getframe":  # ValueError: what namedtuple, typing and enum tolerate
            if len_(args) > 0 and args[0] is frame:
                return  # the hook's own caller check; the runner frame holds nothing secret
            raise value_error("call stack is not available in the sandbox")
        if event in ("object.__getattr__", "object.__setattr__"):
            refuse_attribute(args)
        elif event == "import":
            refuse_import(args)

    return refuse


def _make_guard(key: bytes, verdict_fd: int, entries: tuple, frame: object) -> Hook:
    """The audit hook that owns the verdict channel; see the module docstring."""
    shared: list = [None]
    refuse = _make_policy(frame, shared)
    on_private, on_exec = _make_protocol(entries, frame, _make_emitter(key, verdict_fd), shared)

    # There is no "inside the hook" exemption: candidate code can run nested in the hook
    # (finalizers run by the garbage collector) and meets the same policy there.
    def guard(event: str, args: tuple) -> None:
        refuse(event, args)
        if event == "exec":
            on_exec(args)
        elif event.startswith("autolearn."):
            on_private(event, args)

    return guard


def _prepare(job: dict, verdict_fd: int) -> tuple:
    """Compile everything; return (arm, pristine builtins, unit count).

    ``arm(frame)`` installs the guard bound to the runner frame. The MAC key leaves `job` here and
    afterwards lives only in the hook's closure.
    """
    import builtins
    import types  # noqa: F401 - importing it needs frame access, which the guard then refuses

    boxed = [job.pop("key"), _compile_all(job)]

    def arm(frame: object) -> None:
        sys.addaudithook(_make_guard(boxed.pop(0), verdict_fd, boxed.pop(0), frame))

    return arm, tuple(builtins.__dict__.items()), len(boxed[1]) - 1


def _describe(exc: BaseException) -> tuple:
    """(exception name, detail, line in the unit) as exact str/int; never raises."""
    name, detail, lineno = "?", "", 0
    try:  # noqa: SIM105 - candidate objects can raise anything; no contextlib in the sandbox
        name = "".join([type(exc).__name__])
    except BaseException:
        pass
    try:
        text = exc.args[0] if type(exc) is SyntaxError else str(exc)
        detail = "".join([text])[:_MSG_LIMIT]
    except BaseException:
        pass
    try:
        if isinstance(exc, SyntaxError) and type(exc.lineno) is int:
            lineno = exc.lineno
        else:
            tb = exc.__traceback__
            if tb is not None and tb.tb_next is not None:
                lineno = tb.tb_next.tb_lineno  # the unit's own frame sits right under the runner
    except BaseException:
        lineno = 0
    return name, detail, lineno if type(lineno) is int else 0


def _run(
    box: list,
    module_globals: dict,
    pristine: tuple,
    unit_count: int,
    *,
    _exec: Callable[..., None] = exec,
    _audit: Callable[..., None] = sys.audit,
    _dict: type[dict] = dict,
    _base: type[BaseException] = BaseException,
    _describe: Callable[[BaseException], tuple] = _describe,
    _range: type[range] = range,
    _getframe: Callable[[], object] = sys._getframe,
) -> bool:
    """Run the program, then each unit; return whether everything completed.

    This frame is the only one whose announcements the guard accepts. Everything it uses is a
    local bound before candidate code runs, because the candidate can rebind globals and builtins.
    """
    box.pop()(_getframe())
    slot: list = []
    _audit("autolearn.next", slot)
    if not slot:
        _audit("autolearn.end")
        return False
    try:
        _exec(slot.pop(), module_globals)
    except _base as exc:
        name, detail, lineno = _describe(exc)
        del exc
        _audit("autolearn.fail", name, detail, lineno)
        _audit("autolearn.end")
        return False
    _audit("autolearn.pass")
    all_ok = True
    tests_ns = _dict(module_globals)
    for _ in _range(unit_count):
        _audit("autolearn.next", slot, tests_ns)
        if not slot:
            all_ok = False
            continue
        tests_ns["__builtins__"] = _dict(pristine)
        try:
            _exec(slot.pop(), tests_ns)
        except _base as exc:
            name, detail, lineno = _describe(exc)
            del exc
            all_ok = False
            _audit("autolearn.fail", name, detail, lineno)
            continue
        _audit("autolearn.pass")
    _audit("autolearn.end")
    return all_ok


def _run_job(job: dict, verdict_fd: int) -> None:
    """Run one job in this process and exit; never returns."""
    import posix

    _apply_limits(job["limits"])
    if job["mode"] == "shell":
        _exec_shell(job)
    posix.set_inheritable(verdict_fd, False)
    sys.path.extend(job["path"])
    sys.argv[:] = ["solution"]
    module = type(sys)("solution")
    sys.modules["solution"] = module
    arm, pristine, unit_count = _prepare(job, verdict_fd)
    del job
    stdout, stderr = sys.stdout, sys.stderr
    ok = _run_in_worker_thread(arm, module.__dict__, pristine, unit_count)
    for stream in (stdout, stderr):
        try:  # noqa: SIM105 - a candidate may have closed the stream
            stream.flush()
        except BaseException:
            pass
    posix._exit(0 if ok else 1)


def _run_in_worker_thread(arm: Callable, module_globals: dict, pristine: tuple, count: int) -> bool:
    """Run `_run` in a second thread while this (main) thread only waits.

    Python signal handlers run only in the main thread and receive the frame they interrupt,
    which could be one of the hook's. Off the main thread the candidate cannot install any
    (``signal.signal`` raises ValueError there), and the main thread runs no candidate code.
    """
    import _thread

    result = [False]
    finished = _thread.allocate_lock()
    finished.acquire()

    def work() -> None:
        try:
            result[0] = _run([arm], module_globals, pristine, count)
        finally:
            finished.release()

    _thread.start_new_thread(work, ())
    finished.acquire()
    return result[0]


# --------------------------------------------------------------------------- zygote
# A zygote is PID 1 of a long-lived bubblewrap sandbox. For each job it forks a child that runs
# the job exactly like a fresh runner would; afterwards it kills every other process in the
# sandbox (kill(-1) from PID 1 reaches all of them, setsid or not), reaps them and wipes the
# writable directories, so no job sees anything of the previous one. As PID 1 it cannot be
# signalled from inside its namespace. It never sees a job's key: the child reads the job from
# the job pipe itself.

_WRITABLE_DIRS = ("/tmp", "/dev/shm")
_WORKDIR = "/tmp/work"


def _zygote_main(control_fd: int) -> None:
    """Serve jobs sent over the control socket until the host closes it."""
    import _blake2  # noqa: F401 - loaded once here instead of in every child
    import marshal
    import posix
    import resource  # noqa: F401
    import socket
    import types  # noqa: F401

    control = socket.socket(fileno=control_fd)
    _wipe_writable_dirs()
    control.send(b"Z")
    while True:
        message, fds, _, _ = socket.recv_fds(control, 16, 4)
        if not message:
            posix._exit(0)
        status, cpu_s = _fork_job(fds)
        _kill_all_but_me()
        _wipe_writable_dirs()
        control.send(b"D" + marshal.dumps((status, cpu_s)))


def _fork_job(fds: list) -> tuple:
    """Fork a child that runs the job whose pipes are `fds`; return (wait status, CPU s)."""
    import posix

    pid = posix.fork()
    if pid == 0:
        try:
            _job_child(fds)
        finally:
            posix._exit(_INTERNAL_ERROR_EXIT)
    for fd in fds:
        posix.close(fd)
    _, status, usage = posix.wait4(pid, 0)
    return status, usage.ru_utime + usage.ru_stime


def _job_child(fds: list) -> None:
    """In the forked child: wire the job's pipes to 0/1/2, drop every other fd, run the job."""
    import marshal
    import posix

    if len(fds) != 4:
        raise ValueError("a job needs four pipes")
    job_fd, out_fd, err_fd, verdict_fd = fds
    null = posix.open("/dev/null", posix.O_RDONLY)
    posix.dup2(null, 0)
    posix.dup2(out_fd, 1)
    posix.dup2(err_fd, 2)
    keep = sorted((job_fd, verdict_fd))
    posix.closerange(3, keep[0])
    posix.closerange(keep[0] + 1, keep[1])
    posix.closerange(keep[1] + 1, 1 << 20)
    posix.chdir(_WORKDIR)
    chunks = []
    while chunk := posix.read(job_fd, 1 << 20):
        chunks.append(chunk)
    posix.close(job_fd)
    _run_job(marshal.loads(b"".join(chunks)), verdict_fd)


def _kill_all_but_me() -> None:
    """SIGKILL and reap every process in the namespace except PID 1 (this zygote)."""
    import posix

    while True:
        try:
            posix.kill(-1, 9)
        except ProcessLookupError:
            return
        try:  # orphans were reparented to PID 1, so all of them are our children now
            while True:
                posix.waitpid(-1, 0)
        except ChildProcessError:
            pass


def _wipe_writable_dirs() -> None:
    """Empty /tmp and /dev/shm and recreate the working directory.

    Bind mounts inside them (a Python installation that lives under the host's /tmp, bound
    read-only again) are on another device: they and the directories holding them stay.
    """
    import posix

    for directory in _WRITABLE_DIRS:
        _wipe_tree(directory, posix.stat(directory).st_dev)
    posix.mkdir(_WORKDIR, 0o755)


def _wipe_tree(directory: str, device: int) -> None:
    """Remove everything under `directory` that lives on `device` (the scratch tmpfs)."""
    import posix

    try:
        entries = list(posix.scandir(directory))
    except PermissionError:  # a candidate may have chmod 000'd it
        posix.chmod(directory, 0o700)
        entries = list(posix.scandir(directory))
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            posix.unlink(entry.path)
        elif entry.stat(follow_symlinks=False).st_dev == device:
            _wipe_tree(entry.path, device)
            try:  # noqa: SIM105 - the harness keeps its imports to the bare minimum
                posix.rmdir(entry.path)
            except OSError:  # it holds a bind mount
                pass


def _entry(job: dict) -> None:
    """Dispatch on the job the bootstrap handed over: a zygote, or a single run."""
    if job["mode"] == "zygote":
        _zygote_main(int(sys.argv[2]))
    else:
        _run_job(job, int(sys.argv[2]) if len(sys.argv) > 2 else -1)


if __name__ == "__sandbox__":
    try:
        _entry(globals().pop("JOB"))
    except BaseException as _exc:
        import posix

        posix.write(2, f"sandbox harness error: {_exc!r}\n".encode())
        posix._exit(_INTERNAL_ERROR_EXIT)
