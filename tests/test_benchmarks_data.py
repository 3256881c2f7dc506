"""Benchmark data: the bundled SWE-bench and Terminal-Bench fixtures, loaders, error lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from autolearn.benchmarks import (
    FIXTURE_BASE_COMMIT,
    FIXTURE_REPO,
    SWE_SAMPLE_FILE,
    TERMINAL_TASKS_DIR,
    find_repo,
    load_benchmark,
    load_swe_bench,
    load_terminal_bench,
    materialize_fixture_repo,
    patch_applies,
    read_swe_file,
    read_terminal_tasks,
    run_terminal_task,
)
from autolearn.errors import UserError
from autolearn.shell_safety import find_dangers
from bench_rewards import Reward, terminal_execution


def score(reward: Reward, completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """Call a reward the way TRL does: one prompt per completion, columns as keywords."""
    return reward(["prompt"] * len(completions), completions, **columns)


OFFICIAL_COLUMNS = {
    "instance_id",
    "repo",
    "base_commit",
    "patch",
    "test_patch",
    "problem_statement",
    "hints_text",
    "FAIL_TO_PASS",
    "PASS_TO_PASS",
    "version",
    "environment_setup_commit",
}
ROWS = read_swe_file(SWE_SAMPLE_FILE)
TASKS = read_terminal_tasks(TERMINAL_TASKS_DIR)


@pytest.fixture(scope="module")
def repos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repos")
    materialize_fixture_repo(root)
    return root


def git(repo: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args], input=stdin, capture_output=True, text=True, check=False
    )


def run_pytest(repo: Path, test_ids: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *test_ids],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
    )


# --------------------------------------------------------------------------- SWE fixture


def test_fixture_repo_commit_is_deterministic(repos_dir: Path, tmp_path: Path) -> None:
    clone = find_repo(repos_dir, FIXTURE_REPO)
    assert clone is not None
    assert git(clone, "rev-parse", "HEAD").stdout.strip() == FIXTURE_BASE_COMMIT
    assert git(clone, "rev-parse", "base^{commit}").stdout.strip() == FIXTURE_BASE_COMMIT
    second = materialize_fixture_repo(tmp_path)
    assert git(second, "rev-parse", "HEAD").stdout.strip() == FIXTURE_BASE_COMMIT
    assert materialize_fixture_repo(tmp_path) == second  # idempotent


def test_swe_sample_has_the_official_schema() -> None:
    assert len(ROWS) >= 5
    assert len({row["instance_id"] for row in ROWS}) == len(ROWS)
    for row in ROWS:
        assert set(row) >= OFFICIAL_COLUMNS
        assert all(isinstance(row[key], str) for key in OFFICIAL_COLUMNS)
        assert row["repo"] == FIXTURE_REPO and row["base_commit"] == FIXTURE_BASE_COMMIT
        assert row["environment_setup_commit"] == FIXTURE_BASE_COMMIT
        assert json.loads(row["FAIL_TO_PASS"]) and json.loads(row["PASS_TO_PASS"])
    assert any(len(json.loads(r["FAIL_TO_PASS"])) > 1 for r in ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r["instance_id"] for r in ROWS])
def test_gold_patch_applies_and_fixes_the_failing_tests(
    row: dict[str, str], repos_dir: Path, tmp_path: Path
) -> None:
    clone = find_repo(repos_dir, row["repo"])
    assert clone is not None
    assert patch_applies(clone, row["base_commit"], row["patch"])
    work = tmp_path / "work"
    assert git(clone, "worktree", "add", "--detach", str(work), row["base_commit"]).returncode == 0
    try:
        assert git(work, "apply", "--check", stdin=row["patch"]).returncode == 0
        assert git(work, "apply", stdin=row["test_patch"]).returncode == 0
        fail_to_pass = json.loads(row["FAIL_TO_PASS"])
        pass_to_pass = json.loads(row["PASS_TO_PASS"])
        before = run_pytest(work, fail_to_pass + pass_to_pass)
        assert before.returncode == 1, before.stdout
        assert f"{len(fail_to_pass)} failed, {len(pass_to_pass)} passed" in before.stdout
        assert git(work, "apply", stdin=row["patch"]).returncode == 0
        after = run_pytest(work, fail_to_pass + pass_to_pass)
        assert after.returncode == 0, after.stdout
        assert f"{len(fail_to_pass) + len(pass_to_pass)} passed" in after.stdout
    finally:
        git(clone, "worktree", "remove", "--force", str(work))


def test_load_swe_bench_from_the_bundled_file() -> None:
    dataset = load_swe_bench(str(SWE_SAMPLE_FILE), max_samples=3)
    assert len(dataset) == 3
    assert OFFICIAL_COLUMNS | {"prompt", "repos_dir"} <= set(dataset.column_names)
    row = dataset[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert "unified diff" in row["prompt"][0]["content"]
    assert row["problem_statement"].strip() in row["prompt"][1]["content"]
    assert "Repository: autolearn/textkit" in row["prompt"][1]["content"]
    assert "[start of" not in row["prompt"][1]["content"]
    assert row["repos_dir"] == ""


def test_repos_dir_adds_touched_files_at_base_commit(repos_dir: Path) -> None:
    dataset = load_swe_bench(str(SWE_SAMPLE_FILE), repos_dir=repos_dir)
    by_id = {row["instance_id"]: row for row in dataset}
    two_files = by_id["autolearn__textkit-6"]["prompt"][1]["content"]
    assert "[start of textkit/tokenize.py]" in two_files
    assert "[start of textkit/counting.py]" in two_files
    assert 'WORD = re.compile(r"[A-Za-z0-9]+")' in two_files  # the buggy base version
    assert by_id["autolearn__textkit-6"]["repos_dir"] == str(repos_dir.resolve())


def test_repos_dir_without_the_clone_still_loads(tmp_path: Path) -> None:
    dataset = load_swe_bench(str(SWE_SAMPLE_FILE), repos_dir=tmp_path, max_samples=1)
    assert "[start of" not in dataset[0]["prompt"][1]["content"]


def test_local_parquet_and_json_files(tmp_path: Path) -> None:
    from datasets import Dataset

    parquet = tmp_path / "swe.parquet"
    Dataset.from_list(ROWS).to_parquet(str(parquet))
    assert len(load_swe_bench(str(parquet))) == len(ROWS)
    as_json = tmp_path / "swe.json"
    lists = [dict(row, FAIL_TO_PASS=json.loads(row["FAIL_TO_PASS"])) for row in ROWS]
    as_json.write_text(json.dumps(lists))
    loaded = load_swe_bench(str(as_json))
    assert loaded[0]["FAIL_TO_PASS"] == ROWS[0]["FAIL_TO_PASS"]  # lists become JSON strings


def write_jsonl(path: Path, rows: list[object]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "SWE-bench file not found"),
        ("", "no SWE-bench instances"),
        ("{not json}\n", "line 1 is not valid JSON"),
        ('["a list"]\n', "line 1 is not a JSON object"),
        (json.dumps({k: v for k, v in ROWS[0].items() if k != "patch"}), "missing or empty"),
        (json.dumps(dict(ROWS[0], patch="fix slugify")), "not a valid unified diff"),
        (json.dumps(dict(ROWS[0], version=1.0)), "'version' must be a string"),
    ],
)
def test_swe_file_errors_are_one_clear_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message) as error:
        load_swe_bench(str(path))
    assert "\n" not in str(error.value)


def test_other_swe_loader_errors(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="unsupported format"):
        load_swe_bench(str(tmp_path / "data.csv"))
    with pytest.raises(UserError, match="unknown SWE-bench source"):
        load_swe_bench("swe-full")
    with pytest.raises(UserError, match="--max_samples must be at least 1"):
        load_swe_bench(str(SWE_SAMPLE_FILE), max_samples=0)
    with pytest.raises(UserError, match="--repos_dir not found"):
        load_swe_bench(str(SWE_SAMPLE_FILE), repos_dir=tmp_path / "missing")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        load_swe_bench(str(tmp_path / "bad.parquet"))


def test_hub_offline_ends_in_one_clear_line() -> None:
    # conftest.py sets HF_HUB_OFFLINE=1 before datasets is imported
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(UserError, match="dataset 'princeton-nlp/SWE-bench_Lite'") as error:
        load_benchmark("swe-lite", max_samples=2)
    assert "\n" not in str(error.value)
    assert "pass a local path" in str(error.value)


def test_load_benchmark_dispatch(tmp_path: Path) -> None:
    swe = load_benchmark("swe-verified", data_file=SWE_SAMPLE_FILE, max_samples=2)
    assert len(swe) == 2 and "patch" in swe.column_names
    terminal = load_benchmark("terminal", max_samples=2)
    assert len(terminal) == 2 and "task_dir" in terminal.column_names
    with pytest.raises(UserError, match="unknown benchmark 'mmlu'"):
        load_benchmark("mmlu")


# --------------------------------------------------------------------------- Terminal fixture


def test_terminal_tasks_load_with_plain_columns() -> None:
    dataset = load_terminal_bench()
    assert len(dataset) == len(TASKS) >= 5
    assert set(dataset.column_names) == {
        "prompt",
        "task_id",
        "task_dir",
        "instruction",
        "difficulty",
        "max_test_timeout_sec",
        "max_agent_timeout_sec",
    }
    for row in dataset:
        assert Path(row["task_dir"]).is_absolute() and Path(row["task_dir"]).is_dir()
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert "```bash" in row["prompt"][1]["content"]
        assert row["instruction"] in row["prompt"][1]["content"]
        assert isinstance(row["max_test_timeout_sec"], float)
    counting = next(row for row in dataset if row["task_id"] == "count-log-errors")
    assert "app.log" in counting["prompt"][1]["content"]
    assert len(load_terminal_bench(max_samples=1)) == 1
    single = load_terminal_bench(TERMINAL_TASKS_DIR / "greeting-script")
    assert single["task_id"] == ["greeting-script"]


def test_every_task_has_checks_and_a_safe_solution() -> None:
    for task in TASKS:
        assert task.pytest_files or task.run_tests_script, task.task_id
        assert task.solution is not None, task.task_id
        assert find_dangers(task.solution) == [], task.task_id
    assert any(not task.pytest_files and task.run_tests_script for task in TASKS)
    assert any(task.environment_dir is None for task in TASKS)


def solution_answer(task_id: str) -> str:
    solution = next(task.solution for task in TASKS if task.task_id == task_id)
    return f"I will solve it like this:\n```bash\n{solution}\n```"


def test_every_solution_scores_one_and_empty_or_wrong_answers_score_less() -> None:
    folders = [str(task.task_dir) for task in TASKS]
    solutions = [solution_answer(task.task_id) for task in TASKS]
    assert score(terminal_execution, solutions, task_dir=folders) == [1.0] * len(TASKS)
    empty = score(terminal_execution, ["```bash\ntrue\n```"] * len(TASKS), task_dir=folders)
    assert all(score is not None and score < 1.0 for score in empty)
    wrong = [
        "```bash\necho 5 > error_count.txt\n```",
        "```bash\necho 972.50 > total.txt\n```",
        "```bash\nfind data -size +1k > large_files.txt\n```",
        "```bash\nprintf '#!/bin/bash\\necho \"Hello, world!\"\\n' > greet.sh\nchmod +x greet.sh\n```",
        "```bash\nsed -i 's/true/false/' config.json\n```",
        "```bash\nmkdir -p sorted/txt && mv inbox/*.txt sorted/txt/\n```",
    ]
    ids = [task.task_id for task in TASKS]
    assert ids == sorted(ids)
    order = [
        "count-log-errors",
        "csv-region-report",
        "find-large-files",
        "greeting-script",
        "json-config-update",
        "organize-by-extension",
    ]
    assert ids == order
    scores = score(terminal_execution, wrong, task_dir=folders)
    # find-large-files has a run-tests.sh: its exit status is its one check (no partial credit)
    partial = [s for task_id, s in zip(ids, scores, strict=True) if task_id != "find-large-files"]
    assert all(score is not None and 0.0 < score < 1.0 for score in partial), scores
    assert scores[ids.index("find-large-files")] == 0.0


def test_run_terminal_task_reports_checks() -> None:
    folder = TERMINAL_TASKS_DIR / "organize-by-extension"
    run = run_terminal_task(folder, "mkdir -p sorted/log && mv inbox/server.log sorted/log/")
    assert (run.checks_passed, run.checks_total) == (1, 6)
    assert run.reward == pytest.approx(1 / 6)
    assert run.commands_status == "passed"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, r"no task folders with a task\.yaml"),
        ({"task.yaml": "instruction: [unclosed"}, "invalid YAML"),
        ({"task.yaml": ""}, "expected a mapping"),
        ({"task.yaml": "- a list"}, "expected a mapping"),
        ({"task.yaml": "difficulty: easy"}, "'instruction' must be a non-empty string"),
        ({"task.yaml": "instruction: do it"}, "'difficulty' must be a non-empty string"),
        (
            {"task.yaml": "instruction: x\ndifficulty: easy\nmax_test_timeout_sec: soon"},
            "'max_test_timeout_sec' must be a positive number",
        ),
        ({"task.yaml": "instruction: x\ndifficulty: easy", "tests": "file"}, "expected a folder"),
    ],
)
def test_bad_task_folders_give_one_clear_line(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    task = tmp_path / "task"
    task.mkdir()
    for name, text in files.items():
        (task / name).write_text(text)
    with pytest.raises(UserError, match=message) as error:
        load_terminal_bench(task)
    assert "\n" not in str(error.value)


def test_missing_or_empty_tasks_dir(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="Terminal-Bench tasks directory not found"):
        load_terminal_bench(tmp_path / "missing")
    with pytest.raises(UserError, match=r"no task folders with a task\.yaml"):
        load_terminal_bench(tmp_path)
    with pytest.raises(UserError, match="--max_samples must be at least 1"):
        load_terminal_bench(max_samples=0)
