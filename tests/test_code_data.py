"""Code datasets: HumanEval, MBPP (local files, offline hub), custom suites, held-out splits."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import code_rewards
from autolearn import code_data
from autolearn.code_data import (
    CodeProblem,
    build_code_splits,
    load_code_problems,
    parse_custom,
    split_heldout,
)
from autolearn.errors import UserError
from autolearn.sandbox import Limits

EXAMPLE_FILE = Path(__file__).resolve().parents[1] / "examples" / "custom_tests.json"
COLUMNS = ["prompt", "task_id", "test_code", "entry_point", "code_prompt", "reference_solution"]
REWARDS = code_rewards.build_rewards(Limits(timeout_s=10.0))

MBPP_FULL_ROW = {
    "task_id": 11,
    "text": "Write a python function to remove first and last occurrence of a given character "
    "from the string.",
    "code": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n"
    "        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n"
    "            break\r\n    for i in range(len(s) - 1,-1,-1):  \r\n"
    "        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n"
    "            break\r\n    return s ",
    "test_list": [
        'assert remove_Occ("hello","l") == "heo"',
        'assert remove_Occ("abcda","a") == "bcd"',
        'assert remove_Occ("PHP","P") == "H"',
    ],
    "test_setup_code": "",
    "challenge_test_list": [],
}
MBPP_SANITIZED_ROW = {
    "source_file": "Benchmark Questions Verification V2.ipynb",
    "task_id": 2,
    "prompt": "Write a function to find the shared elements from the given two lists.",
    "code": "def similar_elements(test_tup1, test_tup2):\n"
    "  res = tuple(set(test_tup1) & set(test_tup2))\n  return (res) ",
    "test_imports": ["import math"],
    "test_list": [
        "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
        "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))",
    ],
}


def score(
    component: str, problems: list[CodeProblem], completions: list[Any]
) -> list[float | None]:
    """One reward component over problems (columns as the training dataset would pass them)."""
    dataset = code_data.problems_to_dataset(problems)
    columns = {name: dataset[name] for name in COLUMNS if name != "prompt"}
    return REWARDS[component](dataset["prompt"], completions, **columns)


# --------------------------------------------------------------------------- HumanEval


def test_humaneval_has_164_problems_with_runnable_tests() -> None:
    problems = load_code_problems("humaneval")
    assert len(problems) == 164
    first = problems[0]
    assert first.task_id == "HumanEval/0"
    assert first.entry_point == "has_close_elements"
    assert first.test_code.rstrip().endswith("check(has_close_elements)")
    assert first.code_prompt == first.completion_prompt
    assert first.reference_solution is not None and first.reference_solution.startswith(
        first.code_prompt
    )


def test_humaneval_canonical_solutions_pass() -> None:
    problems = load_code_problems("humaneval")[::8][:21]  # a spread of 21 problems
    bodies = [p.reference_solution[len(p.code_prompt) :] for p in problems if p.reference_solution]
    assert score("test_pass", problems, bodies) == [1.0] * len(problems)
    fenced = [
        [{"role": "assistant", "content": f"```python\n{p.reference_solution}```"}]
        for p in problems
    ]
    assert score("test_pass", problems, fenced) == [1.0] * len(problems)


def test_humaneval_dataset_columns_and_contamination_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="autolearn.code_data"):
        dataset = build_code_splits("humaneval", max_samples=5).train
    assert dataset.column_names == COLUMNS
    assert len(dataset) == 5
    messages = dataset[0]["prompt"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "def has_close_elements" in messages[1]["content"]
    assert "contaminated" in caplog.text


# --------------------------------------------------------------------------- held-out split


def test_heldout_split_is_deterministic_disjoint_and_cap_independent() -> None:
    first = build_code_splits("humaneval", eval_fraction=0.1, seed=3)
    again = build_code_splits("humaneval", eval_fraction=0.1, seed=3, max_samples=10)
    other = build_code_splits("humaneval", eval_fraction=0.1, seed=4)
    assert len(first.heldout_task_ids) == 16
    assert first.heldout_task_ids == again.heldout_task_ids != other.heldout_task_ids
    assert len(first.train) == 148 and len(again.train) == 10
    assert not set(first.train["task_id"]) & set(first.heldout_task_ids)


def test_heldout_split_rejects_bad_fraction() -> None:
    problems = load_code_problems("custom")
    with pytest.raises(UserError, match="eval_fraction"):
        split_heldout(problems, 1.0)
    assert split_heldout(problems, 0.0) == (problems, [])


# --------------------------------------------------------------------------- MBPP


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_mbpp_local_file_formats(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"mbpp{suffix}"
    rows = [MBPP_FULL_ROW]
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    [problem] = load_code_problems(str(path))
    assert problem.task_id == "MBPP/11"
    assert problem.entry_point == "remove_Occ"
    assert "\r" not in problem.test_code + (problem.reference_solution or "")
    assert problem.text.count("assert ") == 1  # only the first test is shown
    assert 'remove_Occ("hello","l")' in problem.text
    assert problem.test_code.count("assert ") == 3


def test_mbpp_reference_and_sanitized_rows_pass_their_tests(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(MBPP_FULL_ROW) + "\n")
    sanitized = code_data.mbpp_problem(MBPP_SANITIZED_ROW, "mbpp-sanitized")
    problems = [*load_code_problems(str(path)), sanitized]
    assert problems[1].test_code.startswith("import math\n")
    assert problems[1].entry_point == "similar_elements"
    references = [f"```python\n{p.reference_solution}\n```" for p in problems]
    assert score("test_pass", problems, references) == [1.0, 1.0]


def test_mbpp_hub_offline_is_one_line_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from autolearn import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    try:
        with pytest.raises(UserError) as info:
            load_code_problems("mbpp", split="train")
    finally:
        hub.hub_reachable.cache_clear()
    message = str(info.value)
    assert "\n" not in message
    assert "google-research-datasets/mbpp" in message and "local" in message


# --------------------------------------------------------------------------- custom suites


def test_example_custom_suite_loads_and_every_reference_passes() -> None:
    problems = load_code_problems("custom")
    assert len(problems) >= 10
    assert len({p.task_id for p in problems}) == len(problems)
    assert all(p.reference_solution and p.entry_point for p in problems)
    references = [f"```python\n{p.reference_solution}```" for p in problems]
    assert score("test_pass", problems, references) == [1.0] * len(problems)
    wrong = ["```python\ndef nothing():\n    return None\n```"] * len(problems)
    assert all(s == 0.0 for s in score("test_pass", problems, wrong))


def test_custom_starter_code_allows_continuation() -> None:
    problems = [p for p in load_code_problems("custom", path=EXAMPLE_FILE) if p.code_prompt]
    assert problems
    bodies = [p.reference_solution[len(p.code_prompt) :] for p in problems if p.reference_solution]
    assert score("test_pass", problems, bodies) == [1.0] * len(problems)


GOOD_ENTRY = {
    "task_id": "t/1",
    "prompt": "Write f.",
    "entry_point": "f",
    "tests": ["assert f() == 1"],
}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"problems": []}, "'problems' must be a non-empty list"),
        ({"problemz": [GOOD_ENTRY]}, "unknown top-level key 'problemz'"),
        ([GOOD_ENTRY, "oops"], "problem #1: expected an object"),
        ([{**GOOD_ENTRY, "test": "x"}], "problem #0 ('t/1'): unknown key 'test'"),
        (
            [{k: v for k, v in GOOD_ENTRY.items() if k != "tests"}],
            "problem #0 ('t/1'): missing required key 'tests'",
        ),
        ([{**GOOD_ENTRY, "tests": []}], "'tests' must be a non-empty string or list"),
        ([{**GOOD_ENTRY, "tests": ["assert f( =="]}], "'tests' is not valid Python"),
        ([{**GOOD_ENTRY, "entry_point": "my func"}], "is not a Python name"),
        ([{**GOOD_ENTRY, "prompt": ""}], "'prompt' must be a non-empty string"),
        ([{**GOOD_ENTRY, "reference_solution": 3}], "'reference_solution' must be a string"),
        ([GOOD_ENTRY, GOOD_ENTRY], "problem #1: duplicate task_id 't/1'"),
    ],
)
def test_custom_schema_errors_name_the_entry(data: Any, expected: str) -> None:
    with pytest.raises(UserError) as info:
        parse_custom(data, "suite.json")
    assert expected in str(info.value)
    assert str(info.value).startswith("suite.json")
    assert "\n" not in str(info.value)


def test_custom_file_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"problems": [\n  {"task_id": "a",}\n]}')
    with pytest.raises(UserError, match=r"broken.json: not valid JSON \(line 2"):
        load_code_problems("custom", path=broken)
    with pytest.raises(UserError, match="custom test file not found"):
        load_code_problems("custom", path=tmp_path / "missing.json")
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps([GOOD_ENTRY]))
    assert [p.task_id for p in load_code_problems(str(suite))] == ["t/1"]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("[1, 2]", "row #0 is not an object"),
        ('[{"task_id": 1, "test_list": 5}]', "test_list must be a list of strings"),
        (
            '[{"task_id": 1, "test_list": ["assert f() == 1"]},'
            ' {"task_id": 1, "test_list": ["assert f() == 2"]}]',
            "task id 'MBPP/1' appears twice",
        ),
    ],
)
def test_bad_local_rows_are_one_line_errors(tmp_path: Path, rows: str, expected: str) -> None:
    path = tmp_path / "rows.json"
    path.write_text(rows)
    with pytest.raises(UserError, match=expected):
        load_code_problems(str(path))


def test_corrupt_parquet_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UserError, match=r"rows\.parquet: not a readable Parquet file"):
        load_code_problems(str(path))


def test_mbpp_test_list_may_be_one_string(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(
        json.dumps({"task_id": 1, "test_list": "assert f() == 1", "code": "def f(): return 1"})
        + "\n"
    )
    (problem,) = load_code_problems(str(path))
    assert problem.test_code.strip() == "assert f() == 1"


def test_unknown_dataset_name() -> None:
    with pytest.raises(UserError, match="unknown code dataset 'apps'"):
        load_code_problems("apps")
