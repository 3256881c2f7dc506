"""Held-out evaluation during training, end to end on a tiny model, and its bookkeeping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autolearn.errors import UserError
from autolearn.heldout import Evaluator, HeldOut, Sampling, require_heldout, split_heldout_rows

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def eval_config(tmp_path: Path, max_steps: int) -> Path:
    config = tmp_path / f"eval_{max_steps}.yaml"
    config.write_text(
        "training:\n"
        f"  max_steps: {max_steps}\n"
        "  eval_steps: 1\n"
        "  eval_max_prompts: 3\n"
        "  max_completion_length: 12\n"
        "  num_generations: 2\n"
        "  per_device_train_batch_size: 2\n"
        "  learning_rate: 1.0e-3\n"
        "dataset:\n"
        "  name: rg:basic_arithmetic\n"
        "  max_samples: 8\n"
    )
    return config


@pytest.mark.slow
def test_evaluation_at_steps_0_1_2_writes_rows_best_and_survives_resume(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    common = ("--model", str(tiny_model_dir), "--output_dir", str(out))
    result = run_script("train_fp8_grpo.py", "--config", str(eval_config(tmp_path, 2)), *common)
    assert result.returncode == 0, result.stderr[-3000:]

    evals = [r for r in rows_of(out / "metrics.jsonl") if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 1, 2]
    for row in evals:
        assert 0.0 <= row["eval/accuracy"] <= 1.0 and 0.0 <= row["eval/format"] <= 1.0
        assert row["eval/prompts"] == 3 and row["eval/samples"] == 3 and row["eval/seconds"] > 0
    best = json.loads((out / "best.json").read_text())
    assert best["metric"] == "eval/accuracy" and best["step"] in (0, 1, 2)
    assert (out / "best" / "adapter_config.json").is_file()
    assert "held-out accuracy " in result.stderr and "evaluation took " in result.stderr
    config = (out / "config.yaml").read_text()
    assert "eval_steps: 1" in config and "name: rg:basic_arithmetic" in config

    # Resuming from checkpoint-2 to step 3 keeps rows 0-2 and adds step 3 only.
    resumed = run_script(
        "train_fp8_grpo.py", "--config", str(eval_config(tmp_path, 3)), *common, "--resume"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    evals = [r for r in rows_of(out / "metrics.jsonl") if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 1, 2, 3]


def test_eval_steps_without_a_heldout_split_is_one_error_line_before_loading() -> None:
    result = run_script(
        "train_fp8_grpo.py", "--model", "someone/never-loaded", "--eval_steps", "5", timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: training.eval_steps 5 needs")
    assert "--eval_fraction" in result.stderr and "never-loaded" not in result.stderr


def test_require_heldout_accepts_a_split_and_eval_off() -> None:
    require_heldout(0, None, "unused")  # evaluation off: no split needed
    with pytest.raises(UserError, match="needs held-out problems"):
        require_heldout(3, None, "set dataset.eval_fraction")


def test_heldout_split_is_seeded_and_disjoint() -> None:
    from datasets import Dataset

    rows = Dataset.from_list([{"question": f"q{i}", "answer": str(i)} for i in range(40)])
    train, held = split_heldout_rows(rows, 0.25, seed=7)
    again_train, again_held = split_heldout_rows(rows, 0.25, seed=7)
    _, other = split_heldout_rows(rows, 0.25, seed=8)
    assert held is not None and again_held is not None and other is not None
    assert len(held) == 10 and len(train) == 30
    assert set(held["question"]).isdisjoint(train["question"])
    assert (
        held["question"] == again_held["question"] and train["question"] == again_train["question"]
    )
    assert held["question"] != other["question"]


def make_evaluator(tmp_path: Path) -> Evaluator:
    from datasets import Dataset

    return Evaluator(
        heldout=HeldOut("math", Dataset.from_list([{"prompt": [], "answer": "1"}])),
        output_dir=tmp_path,
        sampling=Sampling(num_samples=1, max_new_tokens=8, temperature=1.0, top_p=1.0),
        eval_steps=4,
    )


def test_schedule_summary_and_best_from_history(tmp_path: Path) -> None:
    evaluator = make_evaluator(tmp_path)
    evaluator.history = [
        {"step": 0, "eval/accuracy": 0.03},
        {"step": 4, "eval/accuracy": 0.44},
        {"step": 8, "eval/accuracy": 0.44},
        {"step": 10, "eval/accuracy": 0.41},
    ]
    assert evaluator.summary_line() == "held-out accuracy 0.03 -> 0.41 (best 0.44 at step 4)"
    evaluator.history[0]["eval/format"], evaluator.history[-1]["eval/format"] = 0.1, 0.95
    assert evaluator.summary_line() == (
        "held-out accuracy 0.03 -> 0.41 (best 0.44 at step 4), format 0.10 -> 0.95"
    )
    assert evaluator.due(12, 20) and not evaluator.due(13, 20) and evaluator.due(13, 13)
    assert not evaluator.due(8, 20)  # already evaluated: a resumed run does not repeat it


def test_restore_drops_a_best_checkpoint_from_a_trimmed_step(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"step": 0, "eval/accuracy": 0.1})
        + "\n"
        + json.dumps({"step": 1, "reward": 0.5})
        + "\n"
    )
    (tmp_path / "best").mkdir()
    (tmp_path / "best.json").write_text(json.dumps({"step": 6, "score": 0.5}))
    evaluator = make_evaluator(tmp_path)
    evaluator.restore()
    assert [r["step"] for r in evaluator.history] == [0]
    assert not (tmp_path / "best").exists() and not (tmp_path / "best.json").exists()

    (tmp_path / "best").mkdir()  # a best/ that matches the kept history stays
    (tmp_path / "best.json").write_text(json.dumps({"step": 0, "score": 0.1}))
    evaluator.restore()
    assert (tmp_path / "best").is_dir()


@pytest.mark.slow
def test_gpu_learning_benchmark_runs_on_cpu_with_tiny_settings(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    result = run_script(
        "bench/gpu_learning.py", "--smoke", "--model", str(tiny_model_dir), "--out", str(out),
        "--runs", "fp8_is_off_s1,hf_bf16", "--export", str(tmp_path / "export"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "results.json").read_text())
    assert set(summary["runs"]) == {"fp8_is_off_s1", "hf_bf16"}
    for run in summary["runs"].values():
        assert [step for step, _ in run["heldout_accuracy"]] == [0, 1, 2]
        assert 0 < run["eval_share"] < 1
    assert (out / "heldout_accuracy.png").stat().st_size > 5000
    assert "| fp8_is_off |" in (out / "results.md").read_text()
    exported = tmp_path / "export"
    assert (exported / "results.json").is_file()
    assert (exported / "runs" / "hf_bf16" / "metrics.jsonl").is_file()
    assert not list(exported.rglob("*.safetensors"))  # no weights come back


def test_gpu_learning_waits_for_the_previous_engine_to_size_its_cache(tmp_path: Path) -> None:
    from bench.gpu_learning import wait_until_cache_sized

    log = tmp_path / "run.log"
    writer = subprocess.Popen(  # a run that logs vLLM's line after a while, then keeps running
        [sys.executable, "-c", "import sys, time; time.sleep(0.5); "
         f"open({str(log)!r}, 'a').write('INFO Available KV cache memory: 11.62 GiB\\n'); "
         "time.sleep(30)"],
    )  # fmt: skip
    try:
        assert wait_until_cache_sized(log, writer, timeout=20, poll_s=0.1)
        assert writer.poll() is None  # it returned on the line, not on the exit
    finally:
        writer.kill()
        writer.wait()

    quiet = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:  # neither the line nor an exit: gives up at the timeout
        assert not wait_until_cache_sized(tmp_path / "none.log", quiet, timeout=0.5, poll_s=0.1)
    finally:
        quiet.kill()
        quiet.wait()

    crashed = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    crashed.wait()  # a run that died before sizing its cache does not hold the others up
    assert wait_until_cache_sized(tmp_path / "none.log", crashed, timeout=20, poll_s=0.1)


def test_gpu_learning_goals_judge_the_default_fp8_path() -> None:
    from bench.gpu_learning import DEFAULT_FP8, compare

    def run(
        start: float, end: float, eval_s: float = 10.0, total_s: float = 200.0
    ) -> dict[str, Any]:
        return {
            "accuracy_start": start, "accuracy_end": end,
            "accuracy_gain_points": round(100 * (end - start), 1), "median_step_s": 1.0,
            "eval_share": eval_s / total_s, "eval_added": eval_s / (total_s - eval_s),
        }  # fmt: skip

    results = {
        f"{DEFAULT_FP8}_s1": run(0.3, 0.6), f"{DEFAULT_FP8}_s2": run(0.3, 0.58),
        "fp8_is_on_s1": run(0.3, 0.35), "bf16_s1": run(0.4, 0.55), "bf16_s2": run(0.4, 0.62),
        "hf_bf16": run(0.4, 0.6, eval_s=120.0, total_s=300.0),
    }  # fmt: skip
    goals = compare(results)["goals"]
    assert goals["fp8_gain_at_least_25_points"] is True  # +30 and +28, not fp8_is_on's +5
    assert goals["fp8_within_bf16_seed_spread"] is True
    assert (
        goals["eval_adds_at_most_15_percent"] is True
    )  # the HF-generate run is not the default path
    results[f"{DEFAULT_FP8}_s2"] = run(0.3, 0.4, eval_s=40.0)
    goals = compare(results)["goals"]
    assert goals["fp8_gain_at_least_25_points"] is False
    assert goals["fp8_within_bf16_seed_spread"] is False
    assert goals["eval_adds_at_most_15_percent"] is False
