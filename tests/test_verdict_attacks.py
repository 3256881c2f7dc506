"""Attacks on code verdicts and on the sandbox host, from issue 12's red-team findings.

Every verdict attack goes through the real reward (`code_rewards.test_pass`) with a deliberately
wrong solution: it must score 0, while the correct solution beside it scores 1 (the positive
control), and both runs must say ``verdict == "isolated"``. Each attack is written so that it
would pass if it worked. The host checks run through `autolearn.sandbox` directly and bound
every bomb (memory, disk, processes, time); canaries live in temp dirs the tests make.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from autolearn import code_exec
from autolearn import sandbox as sb
from code_rewards import REWARDS

pytestmark = pytest.mark.skipif(
    sb.isolation_level() != "bwrap", reason="the attacks need the bubblewrap level"
)

ENTRY = "scale"
PROMPT = 'def scale(x: float) -> float:\n    """Return 2.5 times x."""\n'
RIGHT = "def scale(x):\n    return 2.5 * x\n"
WRONG = "def scale(x):\n    return x\n"
EXACT_TESTS = (
    "def check(candidate):\n    assert candidate(2) == 5.0\n    assert candidate(4) == 10.0\n"
)
CLOSE_TESTS = (
    "def check(candidate):\n"
    "    assert abs(candidate(2) - 5.0) < 1e-6\n"
    "    assert abs(candidate(4) - 10.0) < 1e-6\n"
)
TYPE_TESTS = (
    "def check(candidate):\n"
    "    assert type(candidate(2)) is float and candidate(2) == 5.0\n"
    "    assert isinstance(candidate(4), float) and candidate(4) == 10.0\n"
)
ISCLOSE_TESTS = (
    "import math\n\n"
    "def check(candidate):\n"
    "    assert math.isclose(candidate(2), 5.0)\n"
    "    assert math.isclose(candidate(4), 10.0)\n"
)


def score_test_pass(program: str, tests: str) -> tuple[float | None, code_exec.Candidate]:
    """test_pass of one completion (a whole program) for the `scale` problem, and its run."""
    test_code = f"{tests}\n\ncheck({ENTRY})\n"
    columns = {"code_prompt": [PROMPT], "test_code": [test_code], "entry_point": [ENTRY]}
    completion = f"```python\n{program}```"
    score = REWARDS["test_pass"]([PROMPT], [completion], **columns)[0]
    candidate = code_exec.prepare_candidate(completion, PROMPT, ENTRY)
    return score, candidate


def verdict_of(program: str, tests: str) -> str:
    """The verdict mode of the run `test_pass` made (served from the execution cache)."""
    _, candidate = score_test_pass(program, tests)
    result = code_exec.run_candidates([candidate], [f"{tests}\n\ncheck({ENTRY})\n"])[0]
    assert result is not None
    return result.verdict


ALWAYS_EQUAL = WRONG.replace("return x", "return Anything()") + (
    "class Anything:\n"
    "    def __eq__(self, other):\n        return True\n"
    "    def __ne__(self, other):\n        return False\n"
    "    __hash__ = object.__hash__\n"
)
SELF_RETURNING = WRONG.replace("return x", "return Absorber()") + (
    "class Absorber:\n"
    "    def _me(self, *args):\n        return self\n"
    "    __sub__ = __rsub__ = __add__ = __abs__ = __neg__ = __mul__ = _me\n"
    "    def __lt__(self, other):\n        return True\n"
    "    __le__ = __gt__ = __ge__ = __eq__ = __lt__\n"
    "    def __bool__(self):\n        return True\n"
    "    __hash__ = object.__hash__\n"
)
FLOAT_SUBCLASS = WRONG.replace("return x", "return Liar(x)") + (
    "class Liar(float):\n"
    "    def __eq__(self, other):\n        return True\n"
    "    __hash__ = float.__hash__\n"
)
SHADOWED_BUILTINS = (
    WRONG
    + "def abs(value):\n    return 0\n"
    + "def type(value):\n    return float\n"
    + "def isinstance(value, kind):\n    return True\n"
)
REPLACED_ISCLOSE = WRONG + "import math\nmath.isclose = lambda *args, **kwargs: True\n"
POISONED_SYS_MODULES = (
    WRONG
    + "import sys, types\n"
    + "fake = types.ModuleType('math')\n"
    + "fake.isclose = lambda *args, **kwargs: True\n"
    + "sys.modules['math'] = fake\n"
)
# Reads the expected value out of whatever frame called the function, or out of any code object
# the garbage collector can see: with the tests in its process this returns the right answer.
FRAME_WALKER = (
    "import gc, sys\n"
    "def _expected_from(code, x):\n"
    "    numbers = [c for c in code.co_consts if type(c) in (int, float) and c not in (x, 1e-06)]\n"
    "    return numbers[0] if numbers else None\n"
    "def scale(x):\n"
    "    try:\n"
    "        frame = sys._getframe(1)\n"
    "        while frame is not None:\n"
    "            found = _expected_from(frame.f_code, x)\n"
    "            if found is not None:\n"
    "                return float(found)\n"
    "            frame = frame.f_back\n"
    "    except Exception:\n"
    "        pass\n"
    "    try:\n"
    "        for obj in gc.get_objects():\n"
    "            code = getattr(obj, '__code__', None)\n"
    "            if code is not None and code.co_filename.startswith('<test'):\n"
    "                found = _expected_from(code, x)\n"
    "                if found is not None:\n"
    "                    return float(found)\n"
    "    except Exception:\n"
    "        pass\n"
    "    return x\n"
)
# Forges the verdict stream: looks for the runner's `emit` closure through frames, the garbage
# collector and a finalizer made of C callables (functools.partial, map, operator.call, which
# an innermost-Python-frame caller check does not see), announces every unit passed and exits.
VERDICT_FORGER = WRONG + (
    "import functools, gc, operator, os, sys\n"
    "def _forge(emit):\n"
    "    for unit in (-1, 0, 1):\n"
    "        emit(b'P', unit, '')\n"
    "    emit(b'E', 2, '')\n"
    "    os._exit(0)\n"
    "def _hunt():\n"
    "    seen = []\n"
    "    try:\n"
    "        frame = sys._getframe(0)\n"
    "        while frame is not None:\n"
    "            seen.extend(frame.f_locals.values())\n"
    "            frame = frame.f_back\n"
    "    except Exception:\n"
    "        pass\n"
    "    try:\n"
    "        seen.extend(gc.get_objects())\n"
    "    except Exception:\n"
    "        pass\n"
    "    for value in seen:\n"
    "        for cell in getattr(value, '__closure__', None) or ():\n"
    "            try:\n"
    "                inner = cell.cell_contents\n"
    "            except ValueError:\n"
    "                continue\n"
    "            if getattr(inner, '__name__', '') == 'emit':\n"
    "                _forge(inner)\n"
    "class _Finalizer:\n"
    "    def __del__(self):\n"
    "        list(map(operator.call, [functools.partial(_hunt)]))\n"
    "_Finalizer()\n"
    "gc.collect()\n"
    "_hunt()\n"
)

ATTACKS = {
    "always_equal_object": (ALWAYS_EQUAL, EXACT_TESTS),
    "self_returning_operators": (SELF_RETURNING, CLOSE_TESTS),
    "float_subclass_vs_isinstance": (FLOAT_SUBCLASS, TYPE_TESTS),
    "shadowed_abs": (SHADOWED_BUILTINS, CLOSE_TESTS),
    "shadowed_type_and_isinstance": (SHADOWED_BUILTINS + ALWAYS_EQUAL, TYPE_TESTS),
    "replaced_math_isclose": (REPLACED_ISCLOSE, ISCLOSE_TESTS),
    "poisoned_sys_modules": (POISONED_SYS_MODULES, ISCLOSE_TESTS),
    "frame_and_gc_walker": (FRAME_WALKER, EXACT_TESTS),
    "verdict_forgery_by_finalizer": (VERDICT_FORGER, EXACT_TESTS),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_verdict_attack_scores_zero_and_the_correct_program_full(name: str) -> None:
    attack, tests = ATTACKS[name]
    assert score_test_pass(RIGHT, tests)[0] == 1.0  # positive control: the same tests, honest code
    assert score_test_pass(attack, tests)[0] == 0.0
    assert verdict_of(RIGHT, tests) == verdict_of(attack, tests) == "isolated"


def test_exceptions_cross_by_name_so_raises_tests_work() -> None:
    tests = (
        "def check(candidate):\n"
        "    try:\n        candidate(-1)\n    except ValueError:\n        pass\n"
        "    else:\n        raise AssertionError('no ValueError')\n"
        "    assert candidate(2) == 5.0\n"
    )
    right = (
        "def scale(x):\n    if x < 0:\n        raise ValueError('negative')\n    return 2.5 * x\n"
    )
    always_raises = "def scale(x):\n    raise ValueError('always')\n"
    assert score_test_pass(right, tests)[0] == 1.0
    assert score_test_pass(RIGHT, tests)[0] == 0.5  # no exception: that unit fails
    assert score_test_pass(always_raises, tests)[0] == 0.5  # the exception is no answer


def test_mutated_arguments_come_back_for_mutation_checks() -> None:
    tests = "values = [3, 1, 2]\nresult = sort_copy(values)\nassert result == [1, 2, 3]\n"
    tests += "assert values == [3, 1, 2]\n"
    program_sorts_in_place = "def sort_copy(values):\n    values.sort()\n    return values\n"
    program_copies = "def sort_copy(values):\n    return sorted(values)\n"
    for program, expected in ((program_copies, "passed"), (program_sorts_in_place, "failed")):
        driver = code_exec.driver_for(tests, "", "sort_copy")
        assert driver is not None
        result = sb.run_python(program, code_exec.split_test_units(tests), driver=driver)
        assert (result.status, result.verdict) == (expected, "isolated"), result


def test_non_data_arguments_fall_back_to_in_process() -> None:
    tests = "assert apply(lambda v: v + 1, 1) == 2\n"
    driver = code_exec.driver_for(tests, "", "apply")
    assert driver is not None
    result = sb.run_python("def apply(f, x):\n    return f(x)\n", (tests,), driver=driver)
    assert (result.status, result.verdict) == ("passed", "in_process")


def test_humaneval_and_custom_problems_are_judged_isolated() -> None:
    from autolearn import code_data

    problems = code_data.load_humaneval()[:12] + code_data.load_custom("examples/custom_tests.json")
    drivers = [
        code_exec.driver_for(p.test_code, code_exec.trusted_prelude(p.code_prompt), p.entry_point)
        for p in problems
    ]
    assert all(d is not None for d in drivers)
    candidates = [
        code_exec.prepare_candidate(p.reference_solution or "", p.code_prompt, p.entry_point)
        for p in problems
    ]
    results = code_exec.run_candidates(candidates, [p.test_code for p in problems])
    assert [(r.status, r.verdict) for r in results if r] == [("passed", "isolated")] * len(problems)


# --------------------------------------------------------------------------- host checks


@pytest.fixture
def canary_dir() -> Iterator[Path]:
    """A dir of ours with a root-only canary and a world-readable control file."""
    path = Path(tempfile.mkdtemp(prefix="i12-canary-", dir="/var/tmp"))
    path.chmod(0o755)
    (path / "secret").write_text("root-only-canary")
    (path / "secret").chmod(0o600)
    (path / "public").write_text("world-readable")
    (path / "public").chmod(0o644)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="root-only files matter when the trainer is root")
def test_root_only_files_stay_unreadable_in_python_and_shell_runs(canary_dir: Path) -> None:
    assert stat.S_IMODE((canary_dir / "secret").stat().st_mode) == 0o600
    reader = "def read(name):\n    return open(f'{DIR}/{name}').read()\n".replace(
        "{DIR}", str(canary_dir)
    )
    public = sb.run_python(reader, ("assert read('public') == 'world-readable'",))
    secret = sb.run_python(reader, ("assert read('secret') == 'root-only-canary'",))
    assert public.passed, public
    assert not secret.passed and "PermissionError" in secret.message, secret
    work = Path(tempfile.mkdtemp(prefix="i12-shell-", dir="/var/tmp"))
    try:
        shell_public = sb.run_shell(f"cat {canary_dir}/public", work)
        shell_secret = sb.run_shell(f"cat {canary_dir}/secret; cat /etc/shadow", work)
    finally:
        shutil.rmtree(work)
    assert shell_public.passed and "world-readable" in shell_public.stdout
    assert not shell_secret.passed and "root-only-canary" not in shell_secret.stdout
    assert "Permission denied" in shell_secret.stderr


FILL = (
    "import os\n"
    "def fill(directory, limit_mb):\n"
    "    written = 0\n"
    "    chunk = b'x' * (1 << 20)\n"
    "    try:\n"
    "        for part in range(limit_mb // 16):\n"
    "            with open(os.path.join(directory, f'fill-{part}'), 'wb') as handle:\n"
    "                for _ in range(16):\n"
    "                    handle.write(chunk)\n"
    "                    written += 1\n"
    "    except OSError:\n"
    "        pass\n"
    "    return written\n"
)


@pytest.mark.parametrize("directory", ["/home", "/root", "/run", "/proc", "/tmp", "/dev/shm"])
def test_no_writable_mount_takes_more_than_its_cap(directory: str) -> None:
    caps_mb = {"/tmp": 128, "/dev/shm": 128}  # 4 x file_size_mb; the others are read-only
    cap = caps_mb.get(directory, 0)
    tests = (f"written = fill({directory!r}, 210)\nassert written <= {cap}, written",)
    limits = sb.Limits(timeout_s=20, memory_mb=1024)
    result = sb.run_python(FILL, tests, limits=limits, driver=sb.Driver("", ("fill",)))
    assert result.passed, result
    if cap:  # positive control: a job may use its scratch space
        small = (f"assert fill({directory!r}, 32) == 32",)
        ok = sb.run_python(FILL, small, limits=limits, driver=sb.Driver("", ("fill",)))
        assert ok.passed, ok


FORK_HOLDERS = (
    "import os, time\n"
    "def hold(children, mb):\n"
    "    pids = []\n"
    "    for _ in range(children):\n"
    "        pid = os.fork()\n"
    "        if pid == 0:\n"
    "            block = bytearray(mb << 20)\n"
    "            time.sleep(1.0)\n"
    "            os._exit(0 if len(block) else 1)\n"
    "        pids.append(pid)\n"
    "    alive = 0\n"
    "    for pid in pids:\n"
    "        _, status = os.waitpid(pid, 0)\n"
    "        alive += os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0\n"
    "    return alive\n"
)


def test_forked_children_cannot_hold_more_than_memory_mb_together() -> None:
    if "memory" not in sb.limits._CGROUPS.parents():
        pytest.skip("no writable memory cgroup here (the sandbox said so in its log)")
    limits = sb.Limits(timeout_s=15, memory_mb=512)
    driver = sb.Driver("", ("hold",))
    small = sb.run_python(FORK_HOLDERS, ("assert hold(4, 40) == 4",), limits=limits, driver=driver)
    assert small.passed, small  # positive control: 160 MB in four children fit
    big = sb.run_python(FORK_HOLDERS, ("assert hold(4, 400) == 4",), limits=limits, driver=driver)
    assert not big.passed, big  # 1.6 GB in four children under memory_mb=512 does not


RECORDER = (
    "import os\n"
    "def remember(value):\n"
    "    for directory in ('/home', '/root', '/run', '/tmp', '/tmp/work', '/dev/shm'):\n"
    "        try:\n"
    "            with open(os.path.join(directory, 'expected'), 'w') as handle:\n"
    "                handle.write(repr(value))\n"
    "        except OSError:\n"
    "            pass\n"
    "    return recall()\n"
    "def recall():\n"
    "    for directory in ('/home', '/root', '/run', '/tmp', '/tmp/work', '/dev/shm'):\n"
    "        try:\n"
    "            with open(os.path.join(directory, 'expected')) as handle:\n"
    "                return float(handle.read())\n"
    "        except (OSError, ValueError):\n"
    "            pass\n"
    "    return None\n"
)


def test_nothing_a_job_writes_survives_into_the_next_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sb.ZYGOTE_ENV, "1")
    driver = sb.Driver("", ("remember", "recall"))
    jobs = [
        sb.PythonJob(RECORDER, ("assert remember(5.0) == 5.0",), driver=driver),  # control
        sb.PythonJob(RECORDER + "\n", ("assert recall() == 5.0",), driver=driver),
    ]
    first = sb.run_python_batch(jobs[:1], max_workers=1)[0]
    second = sb.run_python_batch(jobs[1:], max_workers=1)[0]  # same worker, reused sandbox
    assert first.passed, first  # within one job the scratch space works
    assert not second.passed, second
