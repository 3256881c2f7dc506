"""Hostile programs against autolearn.sandbox: each is judged not passed, the host stays unchanged,
nothing keeps running and the next run still works. Runs at the strongest level (bubblewrap in CI).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autolearn import sandbox as sb
from autolearn.sandbox.workdir import _STREAM_END as STREAM_END

pytestmark = pytest.mark.skipif(
    sb.isolation_level() != "bwrap", reason="hostile programs need the bubblewrap level"
)

TESTS = ("assert add(1, 2) == 3", "assert add(2, 2) == 4")
WRONG = "def add(a, b):\n    return a - b\n"
RIGHT = "def add(a, b):\n    return a + b\n"
FAST = sb.Limits(timeout_s=1.0)


def leftover_processes(marker: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line carries `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


class Host:
    """Things a hostile program must not be able to change or reach."""

    def __init__(self, root: Path) -> None:
        self.marker = "SBXMARK" + os.urandom(6).hex()
        self.canary = root / "canary.txt"
        self.canary.write_text("intact")
        self.leak = root / "leak.txt"
        self.secret = "secret-" + self.marker
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        """Stop the TCP server."""
        self._stop.set()
        self._thread.join()
        self.server.close()

    def assert_unchanged(self) -> None:
        """Canary intact, no secret on disk, no connection, no leftover process."""
        assert self.canary.read_text() == "intact"
        assert not self.leak.exists()
        assert self.connections == 0
        deadline = time.monotonic() + 2
        while leftover_processes(self.marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftover_processes(self.marker) == []


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    # /var/tmp, not /tmp: the sandbox has a private /tmp, so a canary there would be invisible
    root = Path(tempfile.mkdtemp(prefix="sandbox-host-", dir="/var/tmp"))
    os.environ["SANDBOX_TEST_SECRET"] = "placeholder"
    host = Host(root)
    os.environ["SANDBOX_TEST_SECRET"] = host.secret
    try:
        yield host
    finally:
        host.close()
        del os.environ["SANDBOX_TEST_SECRET"]
        shutil.rmtree(root)


def hostile_programs(host: Host) -> dict[str, tuple[str, set[str]]]:
    """name -> (program, acceptable statuses). Each defines at most a wrong `add`."""
    m = host.marker
    sleeper = f"exec -a {m} sleep 1000"
    return {
        "loop_ignoring_signals": (
            f"import signal, subprocess\n# {m}\n"
            "ignored = (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGXCPU)\n"
            "for s in ignored:\n"
            "    try:\n        signal.signal(s, signal.SIG_IGN)\n"
            "    except ValueError:  # the program does not run in the main thread\n"
            "        pass\n"
            "signal.pthread_sigmask(signal.SIG_BLOCK, ignored)\n"
            f"subprocess.Popen(['bash', '-c', \"trap '' TERM INT ALRM XCPU; exec -a {m} "
            'bash -c \'trap \\"\\" TERM INT ALRM XCPU; while :; do :; done\'"])\n'
            "while True:\n    pass\n",
            {"timeout"},
        ),
        "sleep_forever": (f"import time\n# {m}\ntime.sleep(10**6)\n", {"timeout"}),
        "memory_bomb": ("x = bytearray(6 * 2**30)\n", {"memory"}),
        "fork_bomb": (
            f"import os\n# {m}\nwhile True:\n    try:\n        os.fork()\n"
            "    except OSError:\n        pass\n",
            {"timeout"},
        ),
        "outliving_children": (
            "import subprocess\nfor _ in range(3):\n"
            "    subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
            f"    subprocess.Popen(['bash', '-c', 'trap \"\" TERM HUP; {sleeper}'],"
            " start_new_session=True)\n" + WRONG,
            {"failed"},
        ),
        "huge_output": (
            "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
            {"output_limit"},
        ),
        "fill_disk": (
            "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'0' * 2**20)\n    i += 1\n",
            {"failed"},
        ),
        "fill_tmp": (
            "i = 0\nwhile True:\n    open(f'/tmp/f{i}', 'wb').write(b'0' * 2**20)\n    i += 1\n",
            {"failed"},
        ),
        "write_canary": (f"open({str(host.canary)!r}, 'w').write('pwned')\n" + WRONG, {"failed"}),
        "delete_canary": (f"import os\nos.remove({str(host.canary)!r})\n" + WRONG, {"failed"}),
        "leak_secret": (
            f"import os\nopen({str(host.leak)!r}, 'w')"
            ".write(os.environ.get('SANDBOX_TEST_SECRET', 'none'))\n" + WRONG,
            {"failed"},
        ),
        "tcp_connect": (
            f"import socket\nsocket.create_connection(('127.0.0.1', {host.port}), timeout=1)\n"
            + WRONG,
            {"failed"},
        ),
        "kill_parent": (
            "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + WRONG,
            {"failed"},
        ),
    }


HOSTILE_NAMES = [
    "loop_ignoring_signals",
    "sleep_forever",
    "memory_bomb",
    "fork_bomb",
    "outliving_children",
    "huge_output",
    "fill_disk",
    "fill_tmp",
    "write_canary",
    "delete_canary",
    "leak_secret",
    "tcp_connect",
    "kill_parent",
]


@pytest.fixture(params=["reused_sandbox", "fresh_sandbox"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Python runs use a reused (zygote) sandbox by default; also check one sandbox per run."""
    monkeypatch.setenv(sb.ZYGOTE_ENV, "1" if request.param == "reused_sandbox" else "0")
    return str(request.param)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_program_fails_and_host_is_unchanged(host: Host, name: str, engine: str) -> None:
    program, statuses = hostile_programs(host)[name]
    result = sb.run_python(program, TESTS, limits=FAST)
    assert not result.passed
    assert result.tests_passed == 0
    assert result.status in statuses, result
    assert result.isolation == "bwrap"
    assert result.duration_s < FAST.timeout_s + 1.5
    host.assert_unchanged()
    follow_up = sb.run_python(RIGHT, TESTS)
    assert follow_up.passed, follow_up


def test_memory_bomb_fails_fast() -> None:
    result = sb.run_python("x = bytearray(8 * 2**30)\n", TESTS)
    assert result.status == "memory"
    assert result.duration_s < 1.5
    assert "MemoryError" in result.message


def test_secret_and_host_environment_do_not_leak(host: Host) -> None:
    result = sb.run_python(
        "import os\nprint(sorted(os.environ))\n"
        "print(os.environ.get('SANDBOX_TEST_SECRET'), os.environ['HOME'], os.getcwd())\n"
    )
    assert result.passed
    assert host.secret not in result.stdout
    assert "None /tmp/work /tmp/work" in result.stdout


def test_output_is_capped_to_the_tail() -> None:
    limits = sb.Limits(output_bytes=1000)
    result = sb.run_python("print('a' * 5000 + 'END')", limits=limits)
    assert result.passed
    assert len(result.stdout) <= 1000
    assert result.stdout.endswith("END\n")


def test_process_count_is_bounded_even_as_root() -> None:
    if sb.limits._CGROUPS.parent() is None:
        pytest.skip("no writable pids cgroup on this machine")
    program = (
        "import threading, time\nstarted = 0\ntry:\n    for _ in range(500):\n"
        "        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
        "        started += 1\nexcept RuntimeError:\n    pass\nprint(started)\n"
    )
    result = sb.run_python(program, limits=sb.Limits(max_pids=20))
    assert result.passed, result
    assert 10 <= int(result.stdout) < 20


def test_helper_processes_cannot_ptrace_the_runner() -> None:
    probe = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "rc = libc.ptrace(16, os.getppid(), 0, 0)\nprint(rc, ctypes.get_errno())\n"
    )
    program = (
        "import subprocess, sys, os\n"
        f"out = subprocess.run([sys.executable, '-I', '-c', {probe!r}],"
        " capture_output=True, text=True)\n"
        "print(out.stdout.strip(), os.path.exists('/proc/self'))\n"
    )
    result = sb.run_python(program)
    assert result.passed, result
    assert result.stdout.split() == ["-1", "1", "False"]  # EPERM, and no /proc at all


# --------------------------------------------------------------------------- verdict tampering

TAMPERING = {
    "sys_exit_in_program": "import sys\nsys.exit(0)\n",
    "os_exit_in_function": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "system_exit_in_function": "def add(a, b):\n    raise SystemExit(0)\n",
    "atexit_exit_0": WRONG + "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "excepthook_exit_0": WRONG + "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n",
    "settrace_jumps_over_asserts": WRONG
    + "import sys\n"
    + "def jump(frame, event, arg):\n"
    + "    if event == 'line':\n"
    + "        try:\n            frame.f_lineno += 1\n        except Exception:\n            pass\n"
    + "    return jump\n"
    + "try:\n    sys.settrace(lambda f, e, a: jump)\nexcept RuntimeError:\n    pass\n",
    "close_all_fds": WRONG + "import os\nos.closerange(0, 4096)\n",
    "print_passed": WRONG + "print('PASSED')\nprint('2 passed, 0 failed')\n",
    "forge_audit_events": WRONG
    + "import sys\nfor event in ('autolearn.next', 'autolearn.pass', 'autolearn.end'):\n"
    + "    try:\n        sys.audit(event, [])\n    except Exception:\n        pass\n",
    "write_fake_verdicts": WRONG
    + "import os\nfor fd in range(3, 256):\n    try:\n"
    + "        os.write(fd, b'0 A -1  00\\n1 P -1  00\\n2 P 0  00\\n3 P 1  00\\n')\n"
    + "    except OSError:\n        pass\n",
    "monkeypatch_write_and_builtins": WRONG
    + "import os, builtins, sys\n"
    + "os.write = lambda fd, data: len(data)\n"
    + "builtins.exec = lambda *a, **k: None\n"
    + "builtins.AssertionError = type('Nope', (Exception,), {})\n"
    + "sys.audit = lambda *a: None\n",
    "fork_and_continue_in_child": "import os\ndef add(a, b):\n    if os.fork() == 0:\n"
    "        return a + b\n    os.wait()\n    return a - b\n",
    # Would pass if it worked: any `emit` closure it reaches through frames, the garbage
    # collector or a C-callable finalizer announces every unit, then the run exits 0.
    "steal_key_through_frames_and_gc": WRONG
    + "import functools, gc, operator, os, sys\n"
    + "def forge(emit):\n"
    + "    for unit in (-1, 0, 1):\n        emit(b'P', unit, '')\n"
    + "    emit(b'E', 2, '')\n    os._exit(0)\n"
    + "def hunt():\n    seen = []\n"
    + "    for grab in (lambda: sys._getframe(1).f_back.f_locals.values(), gc.get_objects,\n"
    + "                 lambda: [f.f_locals for f in sys._current_frames().values()]):\n"
    + "        try:\n            seen.extend(grab())\n        except Exception:\n            pass\n"
    + "    for value in seen:\n"
    + "        for cell in getattr(value, '__closure__', None) or ():\n"
    + "            try:\n                inner = cell.cell_contents\n"
    + "            except ValueError:\n                continue\n"
    + "            if getattr(inner, '__name__', '') == 'emit':\n                forge(inner)\n"
    + "class Finalizer:\n    def __del__(self):\n"
    + "        list(map(operator.call, [functools.partial(hunt)]))\n"
    + "Finalizer()\ngc.collect()\nhunt()\n",
    "read_expected_values_from_the_test": "import sys\n"
    "def add(a, b):\n"
    "    caller = sys._getframe(1)\n"
    "    return [c for c in caller.f_code.co_consts if isinstance(c, int)][-1]\n",
    "builtins_swapped_to_run_inside_the_hook": WRONG
    + "import builtins, os, sys\n"
    + "def spy(real):\n"
    + "    def wrapper(*args):\n"
    + "        try:\n"
    + "            frame = sys._getframe(1)\n"
    + "            while frame is not None:\n"
    + "                emit = frame.f_locals.get('emit')\n"
    + "                if emit is not None:\n"
    + "                    for unit in (0, 1):\n"
    + "                        emit(b'P', unit, '')\n"
    + "                    emit(b'E', 2, '')\n"
    + "                    os._exit(0)\n"
    + "                frame = frame.f_back\n"
    + "        except Exception:\n"
    + "            pass\n"
    + "        return real(*args)\n"
    + "    return wrapper\n"
    + "for name in ('len', 'type', 'RuntimeError', 'ValueError', 'AttributeError', 'str'):\n"
    + "    setattr(builtins, name, spy(getattr(builtins, name)))\n",
    "signal_handler_reads_hook_frames": WRONG
    + "import os, signal, sys\n"
    + "def handler(signum, frame):\n"
    + "    while frame is not None:\n"
    + "        for value in list(frame.f_locals.values()):\n"
    + "            for cell in getattr(value, '__closure__', None) or ():\n"
    + "                emit = getattr(cell.cell_contents, '__name__', '') == 'emit'\n"
    + "                if emit:\n"
    + "                    for unit in (-1, 0, 1):\n"
    + "                        cell.cell_contents(b'P', unit, '')\n"
    + "                    os._exit(0)\n"
    + "        frame = frame.f_back\n"
    + "signal.signal(signal.SIGALRM, handler)\n"
    + "signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)\n"
    + "for _ in range(10**5):\n"
    + "    __import__('math')\n",
    "native_code": WRONG
    + "try:\n    import ctypes\nexcept ImportError:\n    pass\nelse:\n"
    + "    ctypes.memmove(id(1), id(2), 8)\n",
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_verdict_tampering_earns_nothing(name: str) -> None:
    result = sb.run_python(TAMPERING[name], TESTS, limits=FAST)
    assert not result.passed, result
    assert result.tests_passed == 0, result
    assert result.fraction == 0.0


def test_candidate_code_cannot_install_signal_handlers() -> None:
    result = sb.run_python(TAMPERING["signal_handler_reads_hook_frames"], TESTS)
    assert result.message.startswith("ValueError in program"), result
    assert "signal only works in main thread" in result.message


def test_forged_channel_is_reported_as_tampering() -> None:
    result = sb.run_python(RIGHT + TAMPERING["write_fake_verdicts"].replace(WRONG, ""), TESTS)
    assert result.status == "failed"
    assert "tampered" in result.message
    assert not result.setup_ok


def test_native_extension_built_in_the_sandbox_cannot_be_loaded() -> None:
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    program = (
        "import subprocess, sys, sysconfig\n"
        "open('m.c', 'w').write('#include <Python.h>\\n'\n"
        "    'static struct PyModuleDef d = {PyModuleDef_HEAD_INIT, \"m\", 0, -1, 0};\\n'\n"
        "    'PyMODINIT_FUNC PyInit_m(void) { return PyModule_Create(&d); }\\n')\n"
        "include = '-I' + sysconfig.get_paths()['include']\n"
        "subprocess.run(['gcc', '-shared', '-fPIC', include, 'm.c', '-o', 'm.so'], check=True)\n"
        "sys.path.insert(0, '.')\nimport m\n"
    )
    result = sb.run_python(program, limits=sb.Limits(timeout_s=20))
    assert result.status == "failed"
    assert "ImportError" in result.message and "may not be loaded" in result.message


# --------------------------------------------------------------------------- the capped work dir


def _disk_usage(path: Path) -> int:
    """Bytes of disk the tree under `path` uses (allocated blocks, links not followed)."""
    return sum(p.lstat().st_blocks * 512 for p in [path, *path.rglob("*")])


def test_shell_run_cannot_write_more_than_the_work_dir_cap_to_the_host(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    limits = sb.Limits(timeout_s=60, workdir_mb=128, file_size_mb=100)
    free_before = shutil.disk_usage(tmp_path).free
    flood = "for i in 1 2 3 4 5 6 7 8 9 10; do head -c 64M /dev/zero > f$i; done; echo done"
    result = sb.run_shell(flood, work, limits=limits)
    used = _disk_usage(work)
    assert used <= (129 << 20), used  # 640 MiB written inside; the cap kept (and file metadata)
    assert shutil.disk_usage(tmp_path).free >= free_before - (160 << 20)
    assert "reached its 128 MiB cap" in result.message, result
    assert result.stdout == "done\n"  # the loop ran to the end; its writes failed (ENOSPC)
    assert (work / "f1").stat().st_size == 64 << 20  # positive control: what fits came back
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    control = sb.run_shell("head -c 100M /dev/zero > big", fresh, limits=limits)
    assert control.passed and control.message == "", control  # under the cap: no note
    assert (fresh / "big").stat().st_size == 100 << 20


def test_background_writers_stop_with_the_run_and_their_output_comes_back(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    writer = "while :; do echo x >> late.txt; done"
    script = f"setsid sh -c '{writer}' & (sh -c '{writer}' &) ; sleep 0.3; echo started"
    result = sb.run_shell(script, work, limits=sb.Limits(timeout_s=10))
    assert result.passed and result.stdout == "started\n", result  # the control: it ran
    size = (work / "late.txt").stat().st_size
    assert size > 0  # the writers ran, and what they wrote came back
    time.sleep(0.5)
    assert (work / "late.txt").stat().st_size == size  # nothing writes to the host folder now


def test_symlink_left_by_a_run_does_not_let_the_next_copy_back_write_outside(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = outside / "canary.txt"
    canary.write_text("intact")
    work = tmp_path / "work"
    work.mkdir()
    first = sb.run_shell(f"ln -s {outside} esc && ln -s {canary} file_link", work)
    assert first.passed, first
    assert os.readlink(work / "esc") == str(outside)  # links come back as links
    second = sb.run_shell(
        "echo pwned > file_link; echo pwned > esc/canary.txt;"
        "rm esc file_link; mkdir esc; echo pwned > esc/canary.txt; echo pwned > file_link",
        work,
    )
    assert canary.read_text() == "intact"
    assert sorted(p.name for p in outside.iterdir()) == ["canary.txt"]
    assert (work / "esc" / "canary.txt").read_text() == "pwned\n"  # the control: it ran
    assert not (work / "file_link").is_symlink(), second


def test_forged_work_dir_stream_cannot_write_outside_or_past_the_cap(tmp_path: Path) -> None:
    import io
    import tarfile

    from autolearn.sandbox.workdir import copy_back

    outside = tmp_path / "outside"
    outside.mkdir()
    canary = outside / "canary.txt"
    canary.write_text("intact")
    work = tmp_path / "work"
    work.mkdir()
    buffer = io.BytesIO()
    buffer.write(b"E-")
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size, info.mode = kind, link, len(data), 0o6777
            tar.addfile(info, io.BytesIO(data))

        add("esc", tarfile.SYMTYPE, link=str(outside))
        add("esc/canary.txt", tarfile.REGTYPE, b"pwned")
        add("rel", tarfile.SYMTYPE, link="../outside")
        add("rel/canary.txt", tarfile.REGTYPE, b"pwned")
        add("../outside/canary.txt", tarfile.REGTYPE, b"pwned")
        add(str(canary), tarfile.REGTYPE, b"pwned")
        add("hard", tarfile.LNKTYPE, link=str(canary))
        add("fifo", tarfile.FIFOTYPE)
        add("ok.txt", tarfile.REGTYPE, b"fine")
        for index in range(400):  # one entry per 4 KiB of the cap: 1 MiB allows 256
            add(f"many/{index}", tarfile.REGTYPE)
        add("/".join(["d"] * 100) + "/deep.txt", tarfile.REGTYPE, b"too deep")
    buffer.write(STREAM_END)
    back = copy_back(buffer, work, cap_mb=1)
    assert canary.read_text() == "intact"
    assert sorted(p.name for p in outside.iterdir()) == ["canary.txt"]
    assert not (work / "hard").exists() and not (work / "fifo").exists()
    assert (work / "ok.txt").read_text() == "fine"  # positive control
    assert (work / "ok.txt").stat().st_mode & 0o7777 == 0o755  # no setuid, no group/other write
    assert back.refused == 4 and back.dropped > 0, back  # "..", hard link, fifo, too deep
    assert _disk_usage(work) <= (1 << 20)


def test_the_runner_and_the_host_agree_on_the_stream_end_marker() -> None:
    import ast

    harness = ast.parse((Path(sb.__file__).parent / "_harness.py").read_text())  # sandbox-only
    values = [
        ast.literal_eval(node.value)
        for node in harness.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "_STREAM_END"
    ]
    assert values == [STREAM_END]


def test_a_stream_cut_short_leaves_the_work_dir_as_it_was(tmp_path: Path) -> None:
    import io
    import tarfile

    from autolearn.sandbox.workdir import copy_back

    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("the user's file")
    buffer = io.BytesIO()
    buffer.write(b"E-")
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for index in range(50):
            info = tarfile.TarInfo(f"f{index}")
            info.size = 1000
            tar.addfile(info, io.BytesIO(b"x" * 1000))
    whole = buffer.getvalue() + STREAM_END
    cut = copy_back(io.BytesIO(whole[: len(whole) // 3]), work, cap_mb=1)
    assert not cut.arrived and cut.incomplete and "broke off" in cut.message
    assert [p.name for p in work.iterdir()] == ["mine.txt"]  # nothing removed, nothing added
    back = copy_back(io.BytesIO(whole), work, cap_mb=1)  # the control: a whole stream replaces it
    assert back.arrived and not back.incomplete
    assert sorted(p.name for p in work.iterdir()) == sorted(f"f{i}" for i in range(50))


def test_a_file_dated_past_2242_does_not_cut_the_copy_back(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result = sb.run_shell("for n in a b c d e; do echo $n > $n; done; touch -d @9999999999 b", work)
    assert result.passed, result
    assert sorted(p.name for p in work.iterdir()) == ["a", "b", "c", "d", "e"], result
