"""Odd input that once crashed a reward or a loader: each now scores or fails in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from autolearn.benchmarks import load_swe_bench, load_terminal_bench
from autolearn.completions import completion_text
from autolearn.data import build_math_dataset
from autolearn.diffs import DiffError, parse_patch
from autolearn.errors import UserError
from bench_rewards import REWARDS

BAD_QUOTED_PATH = '--- "a/\\x"\n+++ "b/\\x"\n@@ -1 +1 @@\n-a\n+b\n'


def test_a_badly_quoted_diff_path_is_a_diff_error_and_scores_zero() -> None:
    with pytest.raises(DiffError, match="badly quoted path"):
        parse_patch(BAD_QUOTED_PATH)
    gold = "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n"
    completion = f"```diff\n{BAD_QUOTED_PATH}```"
    for name in ("swe_format", "swe_similarity", "swe_files"):
        scores = REWARDS[name]([""], [completion], patch=[gold], repo_dir=[None])
        assert scores == [0.0], name


def test_task_yaml_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    task = tmp_path / "task"
    task.mkdir()
    (task / "task.yaml").write_bytes(b"instruction: caf\xe9\ndifficulty: easy\n")
    with pytest.raises(UserError, match=r"task\.yaml: cannot read it"):
        load_terminal_bench(task)


def test_a_nan_timeout_in_task_yaml_is_refused_at_load(tmp_path: Path) -> None:
    task = tmp_path / "task"
    task.mkdir()
    (task / "task.yaml").write_text(
        "instruction: x\ndifficulty: easy\nmax_agent_timeout_sec: .nan\n"
    )
    with pytest.raises(UserError, match="'max_agent_timeout_sec' must be a positive number"):
        load_terminal_bench(task)


def test_swe_json_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(b'[{"instance_id": "caf\xe9"}]')
    with pytest.raises(UserError, match=r"data\.json: cannot read it"):
        load_swe_bench(str(path))


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ('{"question": "q", "answer": null}', "answer"),
        ('{"question": null, "answer": "1"}', "question"),
    ],
)
def test_null_question_or_answer_is_refused(tmp_path: Path, row: str, column: str) -> None:
    path = tmp_path / "math.jsonl"
    path.write_text(row + "\n")
    with pytest.raises(UserError, match=f"line 1 has an empty {column}"):
        build_math_dataset(str(path))


def test_a_message_without_content_is_empty_text() -> None:
    assert completion_text([{"role": "assistant", "content": None}]) == ""
