"""End-to-end GRPO runs of train_code_grpo.py and train_bench_grpo.py on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

TINY_RUN = ("--max_completion_length", "24", "--num_generations", "2", "--batch_size", "2")


def run_script(script: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def metrics_rows(output_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def logged_steps(output_dir: Path) -> list[dict[str, float]]:
    return [r for r in metrics_rows(output_dir) if "reward" in r]


def test_code_training_on_a_humaneval_subset_then_eval_on_its_heldout_part(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "code"
    result = run_script(
        "train_code_grpo.py",
        "--model", str(tiny_model_dir),
        "--dataset", "humaneval",
        "--max_samples", "4",
        "--eval_fraction", "0.25",
        "--eval_steps", "2",
        "--max_steps", "2",
        "--output_dir", str(out),
        *TINY_RUN,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "contaminated" in result.stderr  # training on HumanEval says so
    assert (
        f"41 problems held out of training; score them afterwards with: python eval_code.py --model {out}/merged --heldout_from {out}"
        in result.stderr
    )
    steps = logged_steps(out)
    assert len(steps) == 2
    for name in ("test_pass", "execution", "syntax", "lint", "complexity"):
        assert f"rewards/{name}/mean" in steps[-1]
    assert (out / "merged" / "config.json").is_file()
    assert (out / "reward_curve.png").is_file()
    # held-out pass@1 through the sandbox at step 0 and at the end, on the 41 held-out problems
    evals = [r for r in metrics_rows(out) if "eval/pass@1" in r]
    assert [(r["step"], r["eval/prompts"]) for r in evals] == [(0, 41), (2, 41)]
    assert json.loads((out / "best.json").read_text())["metric"] == "eval/pass@1"

    # eval_code.py finds the 41 held-out problems from the run's config.yaml alone and scores
    # only them from a samples file that covers every problem (canonical solutions: pass@1 = 1).
    from autolearn.code_data import build_code_splits, load_humaneval

    splits = build_code_splits("humaneval", max_samples=4, eval_fraction=0.25, seed=42)
    held = set(splits.heldout_task_ids)
    assert len(held) == 41 and not held & set(splits.train["task_id"])
    samples = tmp_path / "heldout_samples.jsonl"
    samples.write_text(
        "".join(
            json.dumps({"task_id": p.task_id, "completion": p.reference_solution}) + "\n"
            for p in load_humaneval()
        )
    )
    scored = run_script(
        "eval_code.py", "--heldout_from", str(out), "--samples", str(samples),
        "--k", "1", "--output", str(tmp_path / "eval" / "results.jsonl"),
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-3000:]
    summary = json.loads((tmp_path / "eval" / "results.summary.json").read_text())
    assert summary["benchmark"] == "humaneval"
    assert summary["problems"] == 41 and summary["pass@1"] == 1.0
    assert summary["heldout_from"] == str(out)
    rows = [
        json.loads(line) for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()
    ]
    assert {r["task_id"] for r in rows} == held


@pytest.mark.parametrize(
    ("benchmark", "extra", "components"),
    [
        ("terminal", (), ("terminal_format", "terminal_safety", "terminal_execution")),
        (
            "swe-lite",
            ("--data_file", str(ROOT / "examples" / "swe_sample.jsonl")),
            ("swe_format", "swe_similarity", "swe_files"),
        ),
    ],
)
def test_bench_training_on_bundled_fixtures(
    tiny_model_dir: Path,
    tmp_path: Path,
    benchmark: str,
    extra: tuple[str, ...],
    components: tuple[str, ...],
) -> None:
    out = tmp_path / benchmark
    result = run_script(
        "train_bench_grpo.py",
        "--benchmark", benchmark,
        *extra,
        "--model", str(tiny_model_dir),
        "--max_samples", "4",
        "--eval_fraction", "0.5",
        "--eval_steps", "1",
        "--max_steps", "2",
        "--output_dir", str(out),
        *TINY_RUN,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    steps = logged_steps(out)
    assert len(steps) == 2
    for name in components:
        assert f"rewards/{name}/mean" in steps[-1]
    evals = [r for r in metrics_rows(out) if "eval/reward" in r]
    assert [(r["step"], r["eval/prompts"]) for r in evals] == [(0, 2), (1, 2), (2, 2)]
    assert all(f"eval/{name}" in evals[0] for name in components)
    saved = (out / "config.yaml").read_text()
    assert f"name: {benchmark}" in saved and components[0] in saved


def test_bench_rejects_a_reward_of_the_other_benchmark(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("rewards: {swe_format: 1.0}\n")
    result = run_script("train_bench_grpo.py", "--benchmark", "terminal", "--config", str(config))
    assert result.returncode == 2
    assert "does not apply to terminal" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
