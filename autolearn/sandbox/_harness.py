"""Runner that executes inside the sandbox; `autolearn.sandbox` starts it, the trainer never imports it.

It is launched as ``python -I -S -B -c <BOOTSTRAP> JOB_FD [VERDICT_FD]``; the bootstrap reads
``marshal.dumps((code of this module, job dict))`` from JOB_FD and executes this module with
``__name__ == "__sandbox__"`` and the job in the global ``JOB`` (the host compiles it once, so the
sandbox does not recompile it on every run). Only builtin modules are imported, to keep start-up
at a few milliseconds. The runner applies the resource limits to itself and then either replaces
itself with bash (shell jobs) or runs the candidate program followed by each test unit. A shell
job with a capped work dir (bubblewrap) keeps the runner as bash's unlimited parent instead, to
copy the work dir in and stream it back afterwards (`_run_shell_in_copy`; ``os``, ``ctypes``
and ``select`` are imported there, about 10 ms).

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
_STREAM_END = b"AUTOLEARN-WORKDIR-END\n"  # the copy-back stream's last bytes (workdir.py)
_TAR_OCTAL_MAX = 8**11 - 1  # the largest value an 11-digit ustar octal field holds
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


_WORKDIR_FULL_BYTES = 1 << 20  # less free space than this in the work dir tmpfs: it was full


def _run_shell_in_copy(job: dict, job_fd: int, stream_fd: int) -> None:
    """A shell job whose work dir is a size-capped tmpfs: copy the host's folder in, run bash
    as a child under the limits until it ends or the wall clock runs out, kill every other
    process of the sandbox, then send the folder back through `stream_fd`; never returns.

    The stream is two status bytes ("T" timed out or "E" ended; "F" the work dir was full or
    "-") and then a tar of the folder: directories, regular files and symlinks (as links).
    The host trusts none of it beyond that: it extracts it with its own size cap and filter.
    """
    import posix
    import time

    stage = job["workdir"]
    deadline = time.monotonic() + stage["timeout_s"]
    posix.close(job_fd)
    _make_undumpable()  # the children (same uid) must not reach this process's stream fd
    error = _copy_into(stage["staging"], stage["path"])
    if error:
        detail = f"cannot copy the work dir into its {stage['cap_mb']} MiB tmpfs ({error})"
        raise RuntimeError(detail)
    pid = posix.fork()
    if pid == 0:
        try:
            posix.close(stream_fd)
            _apply_limits(job["limits"])
            _exec_shell(job)
        finally:
            posix._exit(_INTERNAL_ERROR_EXIT)
    status = _wait_until(pid, deadline)
    _kill_all_others()
    full = _nearly_full(stage["path"])
    header = (b"E" if status is not None else b"T") + (b"F" if full else b"-")
    _send_tree(stage["path"], stream_fd, header)
    code = 128 + 9 if status is None else posix.waitstatus_to_exitcode(status)
    posix._exit(128 - code if code < 0 else code)


def _make_undumpable() -> None:
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        raise OSError(ctypes.get_errno(), "cannot make the runner non-dumpable")


def _copy_into(source: str, target: str) -> str:
    """Copy the entries of `source` into the existing directory `target` (its own attributes
    stay): modes and times kept, symlinks as links, special files skipped. An error, or ""."""
    try:
        _copy_entries(source, target)
    except (OSError, RecursionError) as exc:
        return str(exc)[:_MSG_LIMIT]
    return ""


def _copy_entries(source: str, target: str) -> None:
    import os
    import stat

    for entry in os.scandir(source):
        copy = os.path.join(target, entry.name)
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(entry.path), copy)
            continue
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(copy, 0o700)
            _copy_entries(entry.path, copy)
        elif stat.S_ISREG(st.st_mode):
            with open(entry.path, "rb") as src, open(copy, "xb") as dst:
                while os.sendfile(dst.fileno(), src.fileno(), None, 1 << 30):
                    pass
        else:
            continue
        os.chmod(copy, stat.S_IMODE(st.st_mode))
        os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))


def _wait_until(pid: int, deadline: float) -> int | None:
    """The wait status of child `pid`, or None once `deadline` (monotonic) has passed."""
    import posix
    import select
    import time

    try:
        pidfd = posix.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = -1
    while True:
        done, status = posix.waitpid(pid, posix.WNOHANG)
        if done:
            return status
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if pidfd >= 0:
            select.select([pidfd], [], [], left)
        else:
            time.sleep(min(left, 0.01))


def _kill_all_others() -> None:
    """SIGKILL every process of the sandbox but PID 1 and this one (``kill(-1)`` stays in the
    PID namespace), until none is left, reaping our own children on the way."""
    import posix
    import time

    for _ in range(2000):  # killed processes cannot run again; this only waits for the reaping
        try:
            posix.kill(-1, 9)
        except ProcessLookupError:
            return
        try:
            while posix.waitpid(-1, posix.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.0005)


def _nearly_full(path: str) -> bool:
    import posix

    stats = posix.statvfs(path)
    return stats.f_bavail * stats.f_frsize < _WORKDIR_FULL_BYTES or stats.f_favail == 0


def _send_tree(root: str, fd: int, header: bytes) -> None:
    """Write `header` and a tar (ustar, with pax records for long names) of the directories,
    regular files and symlinks under `root` to `fd`; a file that cannot be read is left out."""
    import os
    import stat

    with os.fdopen(fd, "wb", buffering=1 << 16) as stream:
        stream.write(header)
        pending = [""]
        while pending:
            relative = pending.pop()
            try:
                entries = list(os.scandir(os.path.join(root, relative)))
            except OSError:
                continue
            for entry in entries:
                name = os.fsencode(os.path.join(relative, entry.name))
                st = entry.stat(follow_symlinks=False)
                mode, mtime = stat.S_IMODE(st.st_mode), max(0, int(st.st_mtime))
                if stat.S_ISDIR(st.st_mode):
                    stream.write(_tar_header(name + b"/", b"5", mode, mtime))
                    pending.append(os.fsdecode(name))
                elif stat.S_ISLNK(st.st_mode):
                    link = os.fsencode(os.readlink(entry.path))
                    stream.write(_tar_header(name, b"2", mode, mtime, link=link))
                elif stat.S_ISREG(st.st_mode):
                    _send_file(stream, entry.path, name, mode, mtime)
        stream.write(b"\0" * 1024)  # the end-of-archive marker
        stream.write(_STREAM_END)  # the host replaces the folder only when this arrived


def _send_file(stream: Any, path: str, name: bytes, mode: int, mtime: int) -> None:
    import os

    try:
        source = open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW))  # noqa: SIM115
    except OSError:  # e.g. a file its owner made unreadable
        return
    with source:
        size = os.fstat(source.fileno()).st_size
        if size > _TAR_OCTAL_MAX:  # over 8 GiB: no ustar size field holds it
            return
        stream.write(_tar_header(name, b"0", mode, mtime, size=size))
        left = size
        while left:
            chunk = source.read(min(left, 1 << 16)) or b"\0" * min(left, 1 << 16)
            stream.write(chunk)
            left -= len(chunk)
        stream.write(b"\0" * (-size % 512))


def _tar_header(
    name: bytes, kind: bytes, mode: int, mtime: int, *, size: int = 0, link: bytes = b""
) -> bytes:
    """One ustar header block, preceded by a pax header when a name or link needs more room."""
    records = b"".join(
        _pax_record(key, value)
        for key, value in ((b"path", name), (b"linkpath", link))
        if len(value) > 99
    )
    pax = b""
    if records:
        pax = _ustar_block(b"././@PaxHeader", b"x", 0o644, mtime, size=len(records), link=b"")
        pax += records + b"\0" * (-len(records) % 512)
    return pax + _ustar_block(name[:99], kind, mode, mtime, size=size, link=link[:99])


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length += 1
    return b"%d" % length + body


def _ustar_block(
    name: bytes, kind: bytes, mode: int, mtime: int, *, size: int, link: bytes
) -> bytes:
    fields = (
        name.ljust(100, b"\0"),
        b"%07o\0" % mode,
        b"0000000\0" * 2,  # uid, gid
        b"%011o\0" % size,
        b"%011o\0" % min(mtime, _TAR_OCTAL_MAX),  # 12 digits would shift every later field
        b" " * 8,  # the checksum, counted as spaces
        kind,
        link.ljust(100, b"\0"),
        b"ustar\x0000",
    )
    block = b"".join(fields).ljust(512, b"\0")
    checksum = b"%06o\0 " % sum(block)
    return block[:148] + checksum + block[156:]


def _run_job(job: dict, job_fd: int, verdict_fd: int) -> None:
    """Run one job in this process and exit; never returns."""
    import posix

    if "workdir" in job:
        _run_shell_in_copy(job, job_fd, verdict_fd)
    _apply_limits(job["limits"])
    if job["mode"] == "isolated":
        posix.set_inheritable(verdict_fd, False)
        sys.path.extend(job["path"])
        _run_isolated(job, job_fd, verdict_fd)
    posix.close(job_fd)
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
    for stream in (stdout, stderr):  # the candidate may have rebound sys.stdout and sys.stderr
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


# --------------------------------------------------------------------------- plain-data channel
# Isolated verdicts: the driver process runs the trusted prelude and the test units; the names
# the tests call that the candidate provides are stand-ins that send their arguments to the
# candidate process and get back plain data. The encoding below is the only thing that crosses,
# and the driver's decoder accepts nothing but the exact plain types (no marshal or pickle: they
# are not meant for hostile input).

_DATA_DEPTH = 64  # nesting levels a value may have
_DATA_ITEMS = 1 << 20  # scalars and containers in one message
_FRAME_LIMIT = 64 << 20  # bytes of one message


class _NotDataError(Exception):
    """A value that is not plain data (or is too deep or too large to cross)."""


def _encode(value: object) -> bytes:
    """Tagged bytes for a plain-data value; raise `_NotDataError` for anything else."""
    out: list = []
    budget = [_DATA_ITEMS]
    _encode_into(value, out, 0, budget)
    return b"".join(out)


def _encode_into(value: Any, out: list, depth: int, budget: list) -> None:
    budget[0] -= 1
    if budget[0] < 0 or depth > _DATA_DEPTH:
        raise _NotDataError("a value too large or too deeply nested")
    kind = type(value)
    scalar = _encode_scalar(value, kind)
    if scalar is not None:
        out.append(scalar)
        return
    tag = _CONTAINER_TAGS.get(kind)
    if tag is None:
        raise _NotDataError(f"a {_type_name(value)} object")
    if (kind is list or kind is tuple) and len(value) > 8 and _encode_flat(value, kind, out):
        budget[0] -= len(value)
        return
    out.append(b"%s%d:" % (tag, len(value)))
    for item in value.items() if kind is dict else value:
        if kind is dict:
            _encode_into(item[0], out, depth + 1, budget)
            _encode_into(item[1], out, depth + 1, budget)
        else:
            _encode_into(item, out, depth + 1, budget)


def _encode_scalar(value: Any, kind: type) -> bytes | None:  # noqa: PLR0911 - one per type
    """The encoding of None, bool, int, float, complex, str or bytes; None for other types."""
    if value is None:
        return b"N"
    if kind is bool:
        return b"T" if value else b"F"
    if kind is int:
        return b"i%x;" % value if value >= 0 else b"j%x;" % -value
    if kind is float:
        return b"f%s;" % value.hex().encode("ascii")
    if kind is complex:
        return b"c%s;%s;" % (value.real.hex().encode("ascii"), value.imag.hex().encode("ascii"))
    if kind is str:
        data = value.encode("utf-8", "surrogatepass")
        return b"s%d:%s" % (len(data), data)
    if kind is bytes:
        return b"b%d:%s" % (len(value), value)
    return None


def _encode_flat(items: Any, kind: type, out: list) -> bool:
    """A long list or tuple of only ints (64-bit) or only floats as one machine array."""
    import array

    first = type(items[0])
    if (first is not int and first is not float) or not all(type(x) is first for x in items):
        return False
    try:
        packed = array.array("q" if first is int else "d", items).tobytes()
    except OverflowError:  # an int beyond 64 bits: the general path takes it
        return False
    tags = _CONTAINER_TAGS[kind] + (b"q" if first is int else b"d")
    out.append(b"h%s%d:" % (tags, len(items)))
    out.append(packed)
    return True


def _decode_flat(data: bytes, at: int, budget: list) -> tuple:
    import array

    kind, code = data[at : at + 1], data[at + 1 : at + 2]
    colon = data.index(b":", at + 2)
    count_text = data[at + 2 : colon]
    if kind not in (b"l", b"t") or code not in (b"q", b"d") or not count_text.isdigit():
        raise _NotDataError("malformed flat sequence")
    count, start = int(count_text), colon + 1
    if count < 1 or count > budget[0] or start + 8 * count > len(data):
        raise _NotDataError("malformed flat sequence")
    budget[0] -= count
    items = array.array(code.decode("ascii"))
    items.frombytes(data[start : start + 8 * count])
    values = items.tolist()
    return (values if kind == b"l" else tuple(values)), start + 8 * count


_CONTAINER_TAGS: dict[type, bytes] = {
    list: b"l",
    tuple: b"t",
    dict: b"d",
    set: b"e",
    frozenset: b"z",
}
_TAG_CONTAINERS = {tag: kind for kind, tag in _CONTAINER_TAGS.items()}


def _type_name(value: object) -> str:
    try:
        return "".join([type(value).__qualname__])
    except BaseException:
        return "?"


def _decode(data: bytes) -> object:
    """The value `_encode` wrote; raise `_NotDataError` for anything malformed or out of bounds."""
    if type(data) is not bytes or len(data) > _FRAME_LIMIT:
        raise _NotDataError("malformed message")
    try:
        value, end = _decode_at(data, 0, 0, [_DATA_ITEMS])
    except _NotDataError:
        raise
    except Exception as exc:  # ValueError, IndexError, TypeError (unhashable keys), ...
        raise _NotDataError(f"malformed message ({type(exc).__name__})") from None
    if end != len(data):
        raise _NotDataError("malformed message (trailing bytes)")
    return value


def _decode_at(data: bytes, at: int, depth: int, budget: list) -> tuple:
    budget[0] -= 1
    if budget[0] < 0 or depth > _DATA_DEPTH:
        raise _NotDataError("too large or too deeply nested")
    tag = data[at : at + 1]
    at += 1
    if tag in _CONSTANTS:
        return _CONSTANTS[tag], at
    if tag == b"h":
        return _decode_flat(data, at, budget)
    if tag in (b"i", b"j", b"f", b"c"):
        return _decode_number(data, at, tag)
    colon = data.index(b":", at)
    count_text = data[at:colon]
    if not count_text.isdigit():
        raise _NotDataError("malformed length")
    count, at = int(count_text), colon + 1
    if tag in (b"s", b"b"):
        if at + count > len(data):
            raise _NotDataError("truncated message")
        chunk = data[at : at + count]
        return (chunk.decode("utf-8", "surrogatepass") if tag == b"s" else chunk), at + count
    kind = _TAG_CONTAINERS.get(tag)
    if kind is None or count > budget[0]:
        raise _NotDataError("unknown tag or too large")
    items = []
    for _ in range(2 * count if kind is dict else count):
        item, at = _decode_at(data, at, depth + 1, budget)
        items.append(item)
    if kind is dict:
        return dict(zip(items[::2], items[1::2], strict=True)), at
    return (items if kind is list else kind(items)), at


_CONSTANTS = {b"N": None, b"T": True, b"F": False}


def _decode_number(data: bytes, at: int, tag: bytes) -> tuple:
    end = data.index(b";", at)
    text = data[at:end].decode("ascii")
    if tag == b"c":
        imag_end = data.index(b";", end + 1)
        imag = float.fromhex(data[end + 1 : imag_end].decode("ascii"))
        return complex(float.fromhex(text), imag), imag_end + 1
    if tag == b"f":
        return float.fromhex(text), end + 1
    if not text or not all(c in "0123456789abcdef" for c in text):
        raise _NotDataError("malformed integer")
    number = int(text, 16)
    return (number if tag == b"i" else -number), end + 1


def _write_frame(fd: int, payload: bytes) -> None:
    import posix

    data = len(payload).to_bytes(8, "little") + payload
    while data:
        data = data[posix.write(fd, data) :]


def _read_exact(fd: int, size: int) -> bytes | None:
    import posix

    chunks, got = [], 0
    while got < size:
        chunk = posix.read(fd, min(1 << 20, size - got))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, limit: int = _FRAME_LIMIT) -> bytes | None:
    """One length-prefixed message, or None at end of file (or when it would exceed `limit`)."""
    head = _read_exact(fd, 8)
    if head is None:
        return None
    size = int.from_bytes(head, "little")
    return None if size > limit else _read_exact(fd, size)


# --------------------------------------------------------------------------- isolated: candidate


def _serve_candidate(job: dict, calls_fd: int, replies_fd: int) -> None:
    """In the candidate process: run the program as module ``solution``, then answer calls.

    Nothing here is trusted: whatever this process sends, the driver decodes strictly.
    """
    import posix

    sys.argv[:] = ["solution"]
    module = type(sys)("solution")
    sys.modules["solution"] = module
    namespace = module.__dict__
    names = job["names"]
    try:
        code = compile(job.pop("program"), "<program>", "exec", dont_inherit=True)
        exec(code, namespace)
    except BaseException as exc:
        name, detail, lineno = _describe_candidate(exc)
        _write_frame(replies_fd, _encode(("setup", False, name, lineno, detail)))
        posix._exit(1)
    kinds = _kinds(namespace, names)
    _flush_streams()
    _write_frame(replies_fd, _encode(("setup", True, kinds)))
    while True:
        message = _read_frame(calls_fd)
        if message is None:
            posix._exit(0)
        name, at = _decode_at(message, 0, 0, [1])
        arguments = message[at:]
        pair: Any = _decode(arguments)  # [args, kwargs] from the driver
        reply = _answer(namespace, name, pair[0], pair[1], arguments)
        _flush_streams()
        _write_frame(replies_fd, reply)


def _kinds(namespace: dict, names: tuple) -> dict:
    """How each name the tests call is bound: "call", ("value", data) or "missing"."""
    kinds: dict = {}
    for name in names:
        if name not in namespace:
            kinds[name] = "missing"
            continue
        value = namespace[name]
        if callable(value):
            kinds[name] = "call"
            continue
        try:
            _encode(value)
            kinds[name] = ("value", value)
        except _NotDataError:
            kinds[name] = "call"  # the stand-in reports a clear failure when it is used
    return kinds


def _answer(namespace: dict, name: str, args: list, kwargs: dict, arguments: bytes) -> bytes:
    """The encoded reply to one call: ("ok", value, changed arguments or None), ("raise", name,
    message) or ("bad", why). `arguments` is the call's encoding of [args, kwargs]."""
    try:
        function = namespace[name]
    except KeyError:
        return _encode(("raise", "NameError", f"name '{name}' is not defined"))
    try:
        value = function(*args, **kwargs)
    except BaseException as exc:
        raised, detail, _ = _describe_candidate(exc)
        return _encode(("raise", raised, detail))
    try:
        result = _encode(value)
        after = _encode([args, kwargs])
        return b"t3:s2:ok" + result + (b"N" if after == arguments else after)
    except _NotDataError as exc:
        return _encode(("bad", f"{name}() returned {exc.args[0] if exc.args else 'something'}"))
    except BaseException:
        return _encode(("bad", f"{name}() returned something that cannot be encoded"))


def _describe_candidate(exc: BaseException) -> tuple:
    """(exception name, message, line in the program) for the driver; never raises."""
    name, detail, lineno = _describe(exc)
    try:
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "<program>":
                lineno = tb.tb_lineno
            tb = tb.tb_next
    except BaseException:
        pass
    return name, detail, lineno


# --------------------------------------------------------------------------- isolated: driver


class _CandidateGone(BaseException):
    """The candidate process died; the run ends the way it ended."""


class _InProcessNeeded(BaseException):
    """A test passed a value that is not plain data to the candidate."""


class CandidateError(Exception):
    """An exception the candidate raised whose type is not a builtin exception."""


def _run_isolated(job: dict, job_fd: int, verdict_fd: int) -> None:
    """Fork the candidate process, then run the trusted prelude and units here; never returns.

    The job's second frame (MAC key, prelude, tests) is read only after the fork, so the
    candidate's process never holds the key or an expected value.
    """
    import posix

    calls_r, calls_w = posix.pipe()
    replies_r, replies_w = posix.pipe()
    pid = posix.fork()
    if pid == 0:
        try:
            for fd in (job_fd, verdict_fd, calls_w, replies_r):
                posix.close(fd)
            _serve_candidate(job, calls_r, replies_w)
        finally:
            posix._exit(_INTERNAL_ERROR_EXIT)
    for fd in (calls_r, replies_w):
        posix.close(fd)
    job.clear()
    frame = _read_frame(job_fd)
    posix.close(job_fd)
    if frame is None:
        raise ValueError("the isolated job lacks its trusted part")
    import marshal

    trusted = marshal.loads(frame)
    emit = _make_emitter(trusted.pop("key"), verdict_fd)
    channel = _Channel(pid, calls_w, replies_r)
    ok = _drive(trusted, emit, channel)
    channel.close()
    _flush_streams()
    posix._exit(0 if ok else 1)


class _Channel:
    """The driver's end of the call channel to the candidate process."""

    def __init__(self, pid: int, calls_w: int, replies_r: int) -> None:
        self.pid, self.calls_w, self.replies_r = pid, calls_w, replies_r

    def receive(self) -> object:
        """The candidate's next message, decoded; `_CandidateGone` at end of file."""
        message = _read_frame(self.replies_r)
        if message is None:
            raise _CandidateGone
        return _decode(message)

    def call(self, name: str, args: tuple, kwargs: dict) -> object:
        """Send one call and return the decoded reply."""
        try:
            payload = _encode(name) + _encode([list(args), kwargs])
        except _NotDataError:
            raise _InProcessNeeded from None
        try:
            _write_frame(self.calls_w, payload)
        except OSError:
            raise _CandidateGone from None
        return self.receive()

    def close(self) -> None:
        """Close the channel and SIGKILL the candidate without waiting: whoever reaps orphans
        in the sandbox (the zygote, bubblewrap's init, or the host's group kill) reaps it."""
        import posix

        posix.close(self.calls_w)
        posix.close(self.replies_r)
        try:  # noqa: SIM105 - the harness keeps its imports to the bare minimum
            posix.kill(self.pid, 9)
        except OSError:
            pass

    def end_like_candidate(self) -> None:
        """Exit the way the candidate process did (its signal or exit code); never returns."""
        import posix

        posix.close(self.calls_w)
        _, status = posix.waitpid(self.pid, 0)
        if posix.WIFSIGNALED(status):
            import _signal

            signal_number = posix.WTERMSIG(status)
            try:  # noqa: SIM105 - SIGKILL cannot be reset, and needs not be
                _signal.signal(signal_number, _signal.SIG_DFL)
            except (OSError, ValueError):
                pass
            posix.kill(posix.getpid(), signal_number)
        posix._exit(posix.WEXITSTATUS(status) if posix.WIFEXITED(status) else 1)


def _drive(trusted: dict, emit: Emit, channel: _Channel) -> bool:
    """Run the prelude, learn how the candidate binds the called names, then run each unit."""
    namespace: dict = {"__name__": "__driver__"}
    try:
        exec(compile(trusted["prelude"], "<prelude>", "exec", dont_inherit=True), namespace)
    except BaseException as exc:  # the dataset's own code is broken: an "error", no verdict
        import posix

        posix.write(2, f"trusted prelude failed: {type(exc).__name__}: {exc}\n".encode())
        return False
    emit(b"A", -1, "")
    units = [_compile_unit(source, index) for index, source in enumerate(trusted["tests"])]
    try:  # the candidate has been setting up meanwhile
        setup = channel.receive()
    except _CandidateGone:
        emit(b"E", 0, "")
        channel.end_like_candidate()
    except _NotDataError as exc:
        emit(b"F", -1, f"RuntimeError|0|the program sent {exc}"[:_MSG_LIMIT])
        emit(b"E", 0, "")
        return False
    if not _setup_ok(setup, emit):
        emit(b"E", 0, "")
        return False
    _bind_names(namespace, setup[2], channel)  # type: ignore[index]
    all_ok = True
    for index, unit in enumerate(units):
        outcome = _run_unit(unit, namespace)
        if outcome == "gone":
            emit(b"E", index, "")
            channel.end_like_candidate()
        if outcome == "in_process":
            emit(b"I", index, "")
            emit(b"E", index, "")
            return False
        if outcome:
            all_ok = False
            emit(b"F", index, outcome)
        else:
            emit(b"P", index, "")
    emit(b"E", len(units), "")
    return all_ok


def _setup_ok(setup: object, emit: Emit) -> bool:
    """Emit the setup verdict from the candidate's first message; True when the program ran."""
    if type(setup) is tuple and len(setup) == 3 and setup[:2] == ("setup", True):  # noqa: SIM102
        if type(setup[2]) is dict:
            emit(b"P", -1, "")
            return True
    if type(setup) is tuple and len(setup) == 5 and setup[:2] == ("setup", False):
        name, lineno, detail = setup[2:]
        if type(name) is str and type(lineno) is int and type(detail) is str:
            emit(b"F", -1, f"{name}|{lineno}|{detail}"[:_MSG_LIMIT])
            return False
    emit(b"F", -1, "RuntimeError|0|the program sent a malformed setup message")
    return False


def _bind_names(namespace: dict, kinds: dict, channel: _Channel) -> None:
    """Bind each called name: a stand-in for a callable, the value itself for plain data."""
    for name, kind in kinds.items():
        if type(name) is not str:
            continue
        if type(kind) is tuple and len(kind) == 2 and kind[0] == "value":
            namespace[name] = kind[1]
        elif kind == "call":
            namespace[name] = _stand_in(name, channel)
        else:
            namespace.pop(name, None)  # missing: the test meets a NameError, as it would


def _compile_unit(source: str, index: int) -> object:
    """The unit's code object, or its failure payload (a str) when it does not compile."""
    try:
        return compile(source, f"<test {index + 1}>", "exec", dont_inherit=True)
    except BaseException as exc:
        name, detail, lineno = _describe(exc)
        return f"{name}|{lineno}|{detail}"[:_MSG_LIMIT]


def _run_unit(code: object, namespace: dict) -> str:
    """'' when the unit passed, else its failure payload, or "gone" / "in_process"."""
    if type(code) is str:
        return code
    try:
        exec(code, namespace)  # type: ignore[arg-type]
    except _CandidateGone:
        return "gone"
    except _InProcessNeeded:
        return "in_process"
    except BaseException as exc:
        name, detail, lineno = _describe(exc)
        return f"{name}|{lineno}|{detail}"[:_MSG_LIMIT]
    return ""


def _stand_in(name: str, channel: _Channel) -> Callable:
    """A function that forwards a call to the candidate process and returns its plain reply."""

    def stand_in(*args: object, **kwargs: object) -> object:
        try:
            reply = channel.call(name, args, kwargs)
        except _NotDataError as exc:
            raise CandidateError(f"{name}() sent a malformed reply ({exc})") from None
        return _unpack_reply(name, reply, args, kwargs)

    stand_in.__name__ = stand_in.__qualname__ = name
    return stand_in


def _unpack_reply(name: str, reply: object, args: tuple, kwargs: dict) -> object:
    """Return the value, update mutated arguments in place, or raise what the candidate raised."""
    if type(reply) is tuple and len(reply) == 3 and reply[0] == "ok":
        _, value, changed = reply
        if type(changed) is list and len(changed) == 2:
            new_args, new_kwargs = changed
            if type(new_args) is list and len(new_args) == len(args):
                for old, new in zip(args, new_args, strict=True):
                    _sync(old, new)
            if type(new_kwargs) is dict:
                for key, old in kwargs.items():
                    if key in new_kwargs:
                        _sync(old, new_kwargs[key])
        return value
    if type(reply) is tuple and len(reply) == 3 and reply[0] == "raise":
        raise _exception(reply[1], reply[2])
    if type(reply) is tuple and len(reply) == 2 and reply[0] == "bad" and type(reply[1]) is str:
        raise CandidateError(f"{reply[1]}, not plain data")
    raise CandidateError(f"{name}() sent a malformed reply")


def _sync(old: object, new: object) -> None:
    """Make the mutable argument `old` equal to what the call left (`new`), in place."""
    kind = type(old)
    if kind is not type(new) or old == new:
        return
    if kind is list:
        assert isinstance(old, list) and isinstance(new, list)
        old[:] = new
    elif kind is dict:
        assert isinstance(old, dict) and isinstance(new, dict)
        old.clear()
        old.update(new)
    elif kind is set:
        assert isinstance(old, set) and isinstance(new, set)
        old.clear()
        old.update(new)


def _exception(name: object, message: object) -> BaseException:
    """The builtin exception class called `name` (an Exception subclass), else CandidateError."""
    import builtins

    text = message if type(message) is str else ""
    if type(name) is not str:
        return CandidateError(text)
    cls = builtins.__dict__.get(name)
    if type(cls) is type and issubclass(cls, Exception):
        try:
            return cls(text)
        except Exception:  # an exception class whose constructor wants other arguments
            pass
    return CandidateError(f"{name}: {text}" if text else name)


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 - a candidate may have closed the stream
            stream.flush()
        except BaseException:
            pass


# --------------------------------------------------------------------------- zygote
# A zygote is PID 1 of a long-lived bubblewrap sandbox. For each job it forks a child that runs
# the job exactly like a fresh runner would; afterwards it kills every other process in the
# sandbox (kill(-1) from PID 1 reaches all of them, setsid or not), reaps them and wipes the
# writable directories, so no job sees anything of the previous one. As PID 1 it cannot be
# signalled from inside its namespace. It never sees a job's key: the child reads the job from
# the job pipe itself.

_WRITABLE_DIRS = ("/tmp", "/dev/shm")
_WORKDIR = "/tmp/work"


# Standard modules that dataset code imports most (HumanEval: typing in 21 of 164 prompts, then
# math, random, string, copy...); typing alone costs more than the rest of a job's start-up.
_PRELOADED = (
    "typing", "math", "random", "re", "collections", "string", "copy", "hashlib", "itertools",
    "functools", "heapq", "bisect",
)  # fmt: skip


def _zygote_main(control_fd: int) -> None:
    """Serve jobs sent over the control socket until the host closes it."""
    import _blake2  # noqa: F401 - loaded once here instead of in every child
    import marshal
    import posix
    import resource  # noqa: F401
    import socket
    import types  # noqa: F401

    for name in _PRELOADED:  # imported once here, so that no job pays for them again
        __import__(name)
    control = socket.socket(fileno=control_fd)
    _wipe_writable_dirs()
    control.send(b"Z")
    while True:
        message, fds, _, _ = socket.recv_fds(control, 16, 4)
        if not message:
            posix._exit(0)
        status, cpu_s = _fork_job(fds)
        _kill_all_but_me()  # before "D": no leftover process may hold the job's pipes
        control.send(b"D" + marshal.dumps((status, cpu_s)))
        _wipe_writable_dirs()  # before the next job is read from the control socket


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
    sys.modules["random"].seed()  # each job draws its own numbers, not the zygote's sequence
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
    frame = _read_frame(job_fd)
    if frame is None:
        raise ValueError("truncated job")
    _run_job(marshal.loads(frame), job_fd, verdict_fd)


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
    try:  # noqa: SIM105 - the harness keeps its imports to the bare minimum
        posix.mkdir(_WORKDIR, 0o755)
    except FileExistsError:  # made by bubblewrap as root (mode 1777), so it stays
        pass


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


def _entry(job: dict, job_fd: int) -> None:
    """Dispatch on the job the bootstrap handed over: a zygote, or a single run."""
    if job["mode"] == "zygote":
        import posix

        posix.close(job_fd)
        _zygote_main(int(sys.argv[2]))
    else:
        _run_job(job, job_fd, int(sys.argv[2]) if len(sys.argv) > 2 else -1)


if __name__ == "__sandbox__":
    try:
        _entry(globals().pop("JOB"), globals().pop("JOB_FD"))
    except BaseException as _exc:
        import posix

        posix.write(2, f"sandbox harness error: {_exc!r}\n".encode())
        posix._exit(_INTERNAL_ERROR_EXIT)
