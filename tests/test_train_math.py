"""End-to-end GRPO runs of the real script on a tiny model (CPU, offline)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def train_command(model_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "train_fp8_grpo.py"),
        "--model",
        str(model_dir),
        "--dataset",
        str(ROOT / "examples" / "math_sample.jsonl"),
        "--max_samples",
        "16",
        "--output_dir",
        str(output_dir),
        "--max_completion_length",
        "16",
        "--num_generations",
        "2",
        "--batch_size",
        "2",
        *extra,
    ]


def run(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env
    )


def test_grpo_run_writes_metrics_plot_and_a_loadable_merged_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = run(train_command(tiny_model_dir, out, "--max_steps", "3", "--learning_rate", "1e-3"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 3/3  reward" in result.stdout + result.stderr

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(0 < r["rollout_seconds"] < r["step_seconds"] for r in steps)
    for name in ("correctness", "xml_format", "format", "reasoning"):
        assert f"rewards/{name}/mean" in steps[0]
    assert (out / "reward_curve.png").stat().st_size > 5000
    assert "max_steps: 3" in (out / "config.yaml").read_text()
    assert (out / "adapter" / "adapter_config.json").is_file()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    tokenizer = AutoTokenizer.from_pretrained(out / "merged")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    inputs = tokenizer("What is 2 + 2?", return_tensors="pt")
    generated: Any = cast(Any, merged).generate(**inputs, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 5

    # --resume continues from the last checkpoint (save_steps defaults to 50, so the final one).
    resumed = run(train_command(tiny_model_dir, out, "--max_steps", "4", "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2, 3, 4]


def test_resume_without_checkpoint_is_an_error_before_loading(tmp_path: Path) -> None:
    never_loaded = Path("someone/never-loaded")
    result = run(train_command(never_loaded, tmp_path / "fresh", "--max_steps", "1", "--resume"))
    assert result.returncode == 2
    assert "no checkpoint-N directory" in result.stderr
    assert "never-loaded" not in result.stderr


def test_ctrl_c_saves_a_checkpoint_and_stops(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        train_command(tiny_model_dir, out, "--max_steps", "200"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 240
    seen = ""
    for line in process.stdout:
        seen += line
        if "step 1/200" in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=240)
    seen += rest
    assert process.returncode == 130, seen[-3000:]
    checkpoints = list(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "adapter_model.safetensors").is_file()
    assert f"checkpoint kept in {checkpoints[0]} (continue with --resume)" in seen
    assert not (out / "merged").exists()
