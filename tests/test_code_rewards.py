"""Code rewards: extraction, test splitting and every component on real sandbox runs."""

from __future__ import annotations

import time
from typing import Any

import pytest

import code_rewards
from autolearn import code_exec
from autolearn.code_exec import (
    assemble_program,
    extract_code,
    prepare_candidate,
    prompt_code,
    split_test_units,
)
from autolearn.errors import UserError
from autolearn.sandbox import Limits, PythonJob, run_python

# --------------------------------------------------------------------------- a small task

STUB = '''from typing import List


def helper_double(x: int) -> int:
    return 2 * x


def sum_doubled(values: List[int]) -> int:
    """Return the sum of helper_double(v) for v in values."""
'''
TESTS = """

METADATA = {"author": "us"}


def check(candidate):
    import math
    assert candidate([]) == 0
    assert True, "HumanEval-style marker, not a test"
    assert candidate([1]) == 2
    assert candidate([1, 2]) == 6
    assert candidate([-5, 5]) == 0
    assert math.isclose(candidate([10] * 3), 60)


check(sum_doubled)
"""
ENTRY = "sum_doubled"
REFERENCE = STUB + "    return sum(helper_double(v) for v in values)\n"

BODY_CORRECT = "    return sum(helper_double(v) for v in values)\n"
FENCED_CORRECT = """I reuse the helper.

```python
from typing import List


def sum_doubled(values: List[int]) -> int:
    return sum(helper_double(v) for v in values)
```
"""
BODY_WRONG = "    return -1\n"
BODY_PARTIAL = (
    "    return sum(values) * 2 if len(values) < 2 else 0\n"  # passes [] and [1] and [-5, 5]
)
FENCED_BROKEN = "```python\ndef sum_doubled(values):\n    return sum(values\n```"
BODY_TIMEOUT = "    while True:\n        pass\n"
FENCED_IMPORT_ERROR = (
    "```python\nimport no_such_module_xyz\n\ndef sum_doubled(values):\n    return 0\n```"
)
EMPTY = "   \n"
PROSE_ONLY = "I am not sure how to solve this, sorry. ```bash\nls\n```"

CASES = {
    "correct_body": BODY_CORRECT,
    "correct_fenced": FENCED_CORRECT,
    "wrong": BODY_WRONG,
    "partial": BODY_PARTIAL,
    "broken": FENCED_BROKEN,
    "timeout": BODY_TIMEOUT,
    "import_error": FENCED_IMPORT_ERROR,
    "empty": EMPTY,
    "prose": PROSE_ONLY,
}
LIMITS = Limits(timeout_s=2.0)
REWARDS = code_rewards.build_rewards(LIMITS)


def as_chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def score_all(chat: bool) -> dict[str, dict[str, float | None]]:
    """Every component on every case, in one batch (as TRL calls them)."""
    names = list(CASES)
    completions: list[Any] = [as_chat(CASES[n]) if chat else CASES[n] for n in names]
    size = len(names)
    if chat:
        prompts: list[Any] = [
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"```python\n{STUB}```"},
            ]
        ] * size
        columns: dict[str, list[Any]] = {}  # the stub comes from the prompt's code block
    else:
        prompts = [STUB] * size
        columns = {"code_prompt": [STUB] * size}
    columns |= {
        "test_code": [TESTS] * size,
        "entry_point": [ENTRY] * size,
        "reference_solution": [REFERENCE] * size,
    }
    scores: dict[str, dict[str, float | None]] = {n: {} for n in names}
    for component, func in REWARDS.items():
        values = func(prompts, completions, **columns)
        assert len(values) == size
        for name, value in zip(names, values, strict=True):
            scores[name][component] = value
    return scores


@pytest.fixture(scope="module", params=[False, True], ids=["string", "chat"])
def scores(request: pytest.FixtureRequest) -> dict[str, dict[str, float | None]]:
    return score_all(chat=request.param)


# --------------------------------------------------------------------------- components


def test_rewards_dict_and_default_weights() -> None:
    expected = [
        "test_pass",
        "execution",
        "syntax",
        "lint",
        "complexity",
        "type_safety",
        "performance",
    ]
    assert list(code_rewards.REWARDS) == expected
    assert [f.__name__ for f in code_rewards.REWARDS.values()] == expected
    assert code_rewards.DEFAULT_WEIGHTS == {
        "test_pass": 0.5,
        "execution": 0.2,
        "syntax": 0.15,
        "lint": 0.1,
        "complexity": 0.05,
        "type_safety": 0.0,
        "performance": 0.0,
    }


@pytest.mark.parametrize("case", ["correct_body", "correct_fenced"])
def test_correct_code_scores_full_marks(
    scores: dict[str, dict[str, float | None]], case: str
) -> None:
    got = scores[case]
    assert got["test_pass"] == 1.0
    assert got["execution"] == 1.0
    assert got["syntax"] == 1.0
    assert got["lint"] == 1.0
    assert got["complexity"] == 1.0
    assert got["type_safety"] == 1.0
    assert got["performance"] is not None and got["performance"] > 0.3


def test_wrong_code_runs_but_fails_tests(scores: dict[str, dict[str, float | None]]) -> None:
    got = scores["wrong"]
    assert got["test_pass"] == 0.0
    assert got["execution"] == 0.0  # gated: no test passes
    assert got["lint"] == got["complexity"] == got["type_safety"] == 0.0
    assert got["syntax"] == 1.0  # the requested layout is paid ungated
    assert got["performance"] == 0.0


def test_the_gate_can_be_turned_off(scores: dict[str, dict[str, float | None]]) -> None:
    columns = {"code_prompt": [STUB], "test_code": [TESTS], "entry_point": [ENTRY]}
    for name in code_rewards.GATED:
        assert REWARDS[name]([STUB], [BODY_WRONG], **columns) == [0.0]
        assert REWARDS[name]([STUB], [BODY_WRONG], gate=False, **columns) == [1.0]


def test_a_pass_body_earns_at_most_a_quarter_of_the_default_reward() -> None:
    columns = {"code_prompt": [STUB], "test_code": [TESTS], "entry_point": [ENTRY]}
    weighted = code_rewards.make_weighted_reward(limits=LIMITS)
    total = sum(code_rewards.DEFAULT_WEIGHTS.values())
    [nothing] = weighted([STUB], ["    pass\n"], **columns)
    assert nothing is not None and nothing <= 0.25 * total
    [correct] = weighted([STUB], [BODY_CORRECT], **columns)  # positive control
    assert correct == pytest.approx(total)


def test_partially_correct_code_gets_partial_credit(
    scores: dict[str, dict[str, float | None]],
) -> None:
    # 5 real asserts ("assert True" is dropped): [], [1] and [-5, 5] pass
    assert scores["partial"]["test_pass"] == pytest.approx(3 / 5)
    assert scores["partial"]["execution"] == 1.0


def test_non_compiling_code_scores_zero_except_nothing(
    scores: dict[str, dict[str, float | None]],
) -> None:
    assert all(value == 0.0 for value in scores["broken"].values()), scores["broken"]


def test_timeout_scores_zero_on_tests_and_execution(
    scores: dict[str, dict[str, float | None]],
) -> None:
    got = scores["timeout"]
    assert got["test_pass"] == 0.0
    assert got["execution"] == 0.0
    assert got["performance"] == 0.0
    assert got["syntax"] == 1.0


def test_import_error_fails_execution(scores: dict[str, dict[str, float | None]]) -> None:
    got = scores["import_error"]
    assert got["execution"] == 0.0
    assert got["test_pass"] == 0.0
    assert got["syntax"] == 1.0


@pytest.mark.parametrize("case", ["empty", "prose"])
def test_no_code_scores_zero_everywhere(
    scores: dict[str, dict[str, float | None]], case: str
) -> None:
    assert all(value == 0.0 for value in scores[case].values()), scores[case]


def test_rows_without_tests_or_reference_are_not_applicable() -> None:
    completions = ["```python\ndef f():\n    return 1\n```"]
    assert REWARDS["test_pass"](None, completions) == [None]
    assert REWARDS["performance"](None, completions) == [None]
    assert REWARDS["execution"](None, completions) == [1.0]
    assert REWARDS["syntax"](None, completions) == [1.0]


def test_one_sandbox_run_serves_test_pass_execution_and_performance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code_exec.clear_caches()
    jobs_run: list[int] = []
    real_batch = code_exec.run_python_batch

    def counting_batch(jobs: list[PythonJob], **kwargs: Any) -> Any:
        jobs_run.append(len(jobs))
        return real_batch(jobs, **kwargs)

    monkeypatch.setattr(code_exec, "run_python_batch", counting_batch)
    completions = [BODY_CORRECT, BODY_WRONG, BODY_CORRECT + "\n", BODY_WRONG]
    columns = {
        "code_prompt": [STUB] * 4,
        "test_code": [TESTS] * 4,
        "entry_point": [ENTRY] * 4,
        "reference_solution": [REFERENCE] * 4,
    }
    first = REWARDS["test_pass"]([STUB] * 4, completions, **columns)
    REWARDS["execution"]([STUB] * 4, completions, **columns)
    REWARDS["performance"]([STUB] * 4, completions, **columns)
    assert first == [1.0, 0.0, 1.0, 0.0]
    # two distinct programs, run once; the reference assembles to the correct candidate's program
    assert jobs_run == [2]


def test_performance_penalises_slow_code() -> None:
    slow = (
        "    import time\n    time.sleep(0.3)\n    return sum(helper_double(v) for v in values)\n"
    )
    columns = {
        "code_prompt": [STUB],
        "test_code": [TESTS],
        "entry_point": [ENTRY],
        "reference_solution": [REFERENCE],
    }
    rewards = code_rewards.build_rewards(Limits(timeout_s=5.0))
    [score] = rewards["performance"]([STUB], [slow], **columns)
    assert score is not None and score < 0.5


def test_lint_counts_only_the_models_lines() -> None:
    messy_prompt = "import os\nimport sys\n\n\ndef f(x):\n    '''Return x.'''\n"
    clean = prepare_candidate("    return x\n", messy_prompt, "f")
    messy = prepare_candidate(
        "    import json\n    if x == None:\n        return x\n    return x\n", messy_prompt, "f"
    )
    scores = code_exec.lint_scores([clean, messy])
    assert scores[0] == 1.0
    assert scores[1] == pytest.approx(0.8)  # unused import + comparison to None


def test_complexity_prefers_simple_functions() -> None:
    branches = "\n".join(f"    if x == {i}:\n        return {i}" for i in range(12))
    tangled = prepare_candidate(f"def f(x):\n{branches}\n    return -1\n")
    simple = prepare_candidate("def f(x):\n    return x\n")
    assert code_exec.complexity_scores([simple, tangled]) == [1.0, 0.6]


def test_type_safety_counts_mypy_errors() -> None:
    good = prepare_candidate("def f(x: int) -> str:\n    return str(x)\n")
    bad = prepare_candidate("def f(x: int) -> str:\n    return x\n\n\ny: int = f(1)\n")
    assert code_exec.type_scores([good, bad]) == [1.0, 0.5]


def test_weighted_reward_combines_components() -> None:
    combined = code_rewards.make_weighted_reward({"test_pass": 0.5, "syntax": 0.5}, limits=LIMITS)
    values = combined(
        [STUB, STUB],
        [BODY_CORRECT, FENCED_BROKEN],
        code_prompt=[STUB, STUB],
        test_code=[TESTS, TESTS],
        entry_point=[ENTRY, ENTRY],
    )
    assert values == [1.0, 0.0]
    functions, weights = code_rewards.select_rewards()
    assert [f.__name__ for f in functions] == [
        "test_pass",
        "execution",
        "syntax",
        "lint",
        "complexity",
    ]
    assert weights == [0.5, 0.2, 0.15, 0.1, 0.05]
    with pytest.raises(UserError, match="unknown code reward 'speed'"):
        code_rewards.select_rewards({"speed": 1.0})


# --------------------------------------------------------------------------- extraction


def test_extract_takes_the_last_python_block() -> None:
    text = "```python\nx = 1\n```\nbetter:\n```python\nx = 2\n```\n```text\noutput\n```"
    assert extract_code(text) == "x = 2\n"


def test_extract_untagged_block_bare_code_and_unclosed_fence() -> None:
    assert extract_code("Answer:\n```\ny = 3\n```") == "y = 3\n"
    assert extract_code("\n\n    return a + b\n\n") == "    return a + b\n"
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1\n"


def test_extract_skips_reasoning_and_other_languages() -> None:
    assert (
        extract_code("<think>```python\nbad = 1\n```</think>\n```python\ngood = 1\n```")
        == "good = 1\n"
    )
    assert extract_code("<think>still thinking ```python\nx = 1\n```") is None
    assert extract_code("run ```bash\nls\n```") is None
    assert extract_code("") is None


def test_continuation_is_appended_to_the_prompt() -> None:
    program, first_line = assemble_program("    return 1\n", "def f():\n    '''Doc.'''\n", "f")
    assert program == "def f():\n    '''Doc.'''\n    return 1\n"
    assert first_line == 3


def test_unindented_body_is_reindented() -> None:
    program, _ = assemble_program("x = 1\nreturn x\n", "def f():\n    '''Doc.'''\n", "f")
    assert program == "def f():\n    '''Doc.'''\n    x = 1\n    return x\n"


def test_standalone_function_keeps_prompt_imports_and_helpers() -> None:
    candidate = prepare_candidate(FENCED_CORRECT, STUB, ENTRY)
    assert candidate.program is not None
    assert candidate.program.startswith("def helper_double")
    assert candidate.program.count("def sum_doubled") == 1
    assert candidate.program.count("from typing import List") == 1  # the model repeats it
    assert candidate.parses


def test_redefined_helper_is_not_duplicated() -> None:
    code = "def helper_double(x):\n    return x + x\n\n\ndef sum_doubled(values):\n    return 0\n"
    program, _ = assemble_program(code, STUB, ENTRY)
    assert program.count("def helper_double") == 1


def test_prompt_code_from_chat_text_and_plain_stub() -> None:
    assert prompt_code(f"Solve:\n```python\n{STUB}```\nThanks") == STUB
    assert prompt_code(STUB) == STUB
    assert prompt_code("Write a function that adds numbers.") == ""


# --------------------------------------------------------------------------- test units


def test_humaneval_check_is_split_per_assert_with_setup() -> None:
    units = split_test_units(TESTS)
    assert len(units) == 5
    for unit in units:
        assert "METADATA" in unit
        assert "import math" in unit
        assert unit.rstrip().endswith("check(sum_doubled)")
        assert unit.count("assert ") == 1
    assert "candidate([1, 2]) == 6" in units[2]


def test_top_level_asserts_loops_and_trailing_statements() -> None:
    code = (
        "import math\nassert f(1) == 1\nfor i in range(3):\n    assert f(i) == i\n"
        "x = f(2)\nprint(x)\n"
    )
    units = split_test_units(code)
    assert len(units) == 2
    assert units[0].startswith("import math\n") and "for i" not in units[0]
    assert "for i in range(3)" in units[1] and units[1].rstrip().endswith("print(x)")


def test_unparsable_or_assert_free_tests_are_one_unit() -> None:
    assert split_test_units("assert f(1 ==") == ("assert f(1 ==",)
    assert split_test_units("f(1)\n") == ("f(1)\n",)
    assert split_test_units("") == ()


def test_split_units_run_with_partial_credit_in_the_sandbox() -> None:
    program = STUB + BODY_PARTIAL
    result = run_python(program, split_test_units(TESTS), limits=LIMITS)
    assert result.tests_total == 5
    assert result.tests_passed == 3
    assert result.setup_ok


def test_cache_is_fast_for_repeated_batches() -> None:
    columns = {"code_prompt": [STUB], "test_code": [TESTS], "entry_point": [ENTRY]}
    REWARDS["test_pass"]([STUB], [BODY_WRONG], **columns)
    start = time.perf_counter()
    REWARDS["execution"]([STUB], [BODY_WRONG], **columns)
    assert time.perf_counter() - start < 0.05


def test_trainer_gets_run_status_metrics_and_column() -> None:
    metrics: dict[str, float] = {}
    extra: dict[str, list[Any]] = {}
    REWARDS["test_pass"](
        [STUB] * 3,
        [BODY_CORRECT, EMPTY, FENCED_BROKEN],
        code_prompt=[STUB] * 3,
        test_code=[TESTS] * 3,
        entry_point=[ENTRY] * 3,
        log_metric=metrics.__setitem__,
        log_extra=extra.__setitem__,
        trainer_state=None,
        completion_ids=[[1], [2], [3]],
    )
    assert extra["run_status"] == ["passed", "no_code", "syntax_error"]
    assert metrics["code/passed"] == pytest.approx(1 / 3)
    assert metrics["code/timeout"] == 0.0
    assert metrics.pop("code/isolated_share") == 1.0  # the one run had isolated verdicts
    assert set(metrics) == {f"code/{status}" for status in code_rewards.RUN_STATUSES}
    assert sum(metrics.values()) == pytest.approx(1.0)  # every outcome has its share


def test_warm_up_analysis_runs_every_analyser() -> None:
    code_exec.warm_up_analysis()
    assert code_exec.mypy_cache_dir().is_dir()


def test_gate_is_a_reward_setting_of_the_gated_components() -> None:
    from autolearn.trainer import bind_reward_kwargs

    for name in code_rewards.GATED:
        bound = bind_reward_kwargs(code_rewards.REWARDS[name], {"gate": False}, name)
        assert bound.__name__ == name
    with pytest.raises(UserError, match="has no setting gate"):
        bind_reward_kwargs(code_rewards.REWARDS["syntax"], {"gate": False}, "syntax")
