"""Run safety: output folders with old checkpoints, resuming, Ctrl-C and SIGTERM, bad TRL settings."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import rewards
from autolearn.config import Config, MathDataConfig, ModelConfig, TrainingConfig
from autolearn.data import build_math_dataset
from autolearn.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, UserError
from autolearn.models import TrainingModel
from autolearn.pipeline import run_training
from autolearn.rundir import check_run_dir, checkpoint_to_resume, read_run_record, trim_metrics
from autolearn.trainer import agree_on_interrupt, grpo_config, weight_precision

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "math_sample.jsonl"


# --------------------------------------------------------------------------- output folder


def test_fresh_run_over_old_checkpoints_and_resume_without_one_are_refused(
    tmp_path: Path,
) -> None:
    assert checkpoint_to_resume(tmp_path / "new", resume=False) is None
    (tmp_path / "metrics.jsonl").write_text("")  # a run that never saved may be started over
    assert checkpoint_to_resume(tmp_path, resume=False) is None
    with pytest.raises(UserError, match="no checkpoint-N directory in"):
        checkpoint_to_resume(tmp_path, resume=True)
    for step in (3, 12):
        (tmp_path / f"checkpoint-{step}").mkdir()
    with pytest.raises(
        UserError,
        match="already holds checkpoints of an earlier run: pass --resume to continue it, "
        "or choose another --output_dir",
    ):
        checkpoint_to_resume(tmp_path, resume=False)
    assert checkpoint_to_resume(tmp_path, resume=True) == str(tmp_path / "checkpoint-12")


def test_script_refuses_old_checkpoints_before_reading_data_or_loading_a_model(
    tmp_path: Path,
) -> None:
    check_run_dir(tmp_path, resume=False, max_steps=5, claim=True)  # an earlier run's folder
    (tmp_path / "checkpoint-5").mkdir()
    command = [
        sys.executable, str(ROOT / "train_fp8_grpo.py"),
        "--model", "someone/never-loaded",
        "--dataset", str(tmp_path / "never-read.jsonl"),
        "--output_dir", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert "already holds checkpoints of an earlier run" in result.stderr
    assert "never-read" not in result.stderr and "never-loaded" not in result.stderr


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "reward": s / 10} for s in (1, 2, 3, 4)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "rew')
    trim_metrics(metrics, 2)
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2]
    trim_metrics(tmp_path / "missing.jsonl", 2)  # nothing to trim
    assert not (tmp_path / "missing.jsonl").exists()


# --------------------------------------------------------------------------- settings, header


def cpu_model(tm_fp8: bool = False) -> TrainingModel:
    return TrainingModel(None, None, "transformers", fp8=tm_fp8, vllm=False)


def test_a_setting_trl_rejects_is_a_one_line_error(tmp_path: Path) -> None:
    config = Config(training=TrainingConfig(output_dir=str(tmp_path), optim="adamw_bogus"))
    with pytest.raises(UserError) as caught:
        grpo_config(config, cpu_model(), [1.0])
    message = str(caught.value)
    assert message.startswith("invalid training setting: adamw_bogus is not a valid")
    assert "\n" not in message


def test_fp8_base_weights_are_reported_as_fp8() -> None:
    assert weight_precision(cpu_model(tm_fp8=True)) == "fp8"


# --------------------------------------------------------------------------- Ctrl-C across processes

AGREE = """
import signal
import torch.distributed as dist
from autolearn.trainer import agree_on_interrupt
dist.init_process_group("gloo")
rank = dist.get_rank()
print(agree_on_interrupt(signal.SIGTERM if rank == 1 else 0, "cpu"), agree_on_interrupt(0, "cpu"))
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_processes_agree_to_stop_when_any_one_saw_a_stop_signal() -> None:
    assert agree_on_interrupt(signal.SIGINT, "cpu") == signal.SIGINT
    assert agree_on_interrupt(0, "cpu") == 0
    port = str(free_port())
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", AGREE],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "RANK": str(rank),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
            },
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in processes]
    # Rank 0 stops too, for the same signal (so with the same exit code); the next step agrees on none.
    assert outputs == ["15 0", "15 0"]


# --------------------------------------------------------------------------- real runs, in process


def signal_during_step(step: int, signum: int | None = signal.SIGINT) -> Callable[..., list[float]]:
    """A zero reward that interrupts its own process (Ctrl-C, or a crash) during ``step``."""

    def trigger(prompts: Sequence[Any], completions: Sequence[Any], **kw: Any) -> list[float]:
        if kw["trainer_state"].global_step + 1 == step:
            if signum is None:
                raise RuntimeError("the run dies here")
            os.kill(os.getpid(), signum)
        return [0.0] * len(completions)

    return trigger


def tiny_config(
    model_dir: Path, output_dir: Path, dtype: str = "float32", **training: Any
) -> Config:
    return Config(
        model=ModelConfig(
            name=str(model_dir),
            backend="transformers",
            load_in_fp8=False,
            dtype=dtype,
            gradient_checkpointing=False,
        ),
        training=TrainingConfig(
            output_dir=str(output_dir),
            num_generations=2,
            per_device_train_batch_size=2,
            max_completion_length=8,
            learning_rate=1e-3,
            **training,
        ),
        dataset=MathDataConfig(name=str(SAMPLE)),
        rewards={"correctness": 1.0, "trigger": 0.0},
    )


def train_tiny(
    config: Config, trigger: Callable[..., list[float]], *, resume: bool = False
) -> Path:
    registry = {"correctness": rewards.REWARDS["correctness"], "trigger": trigger}
    dataset = build_math_dataset(str(SAMPLE), max_samples=8)
    return run_training(config, dataset, registry, resume=resume)


def reward_steps(output_dir: Path) -> list[int]:
    """The step of every row of metrics.jsonl (each row must be a step with its reward)."""
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("reward" in r for r in rows), rows
    return [r["step"] for r in rows]


@pytest.mark.slow
def test_ctrl_c_in_the_last_step_finishes_the_run_and_the_header_names_the_dtype(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="autolearn")
    handler = signal.getsignal(signal.SIGINT)
    config = tiny_config(tiny_model_dir, tmp_path, max_steps=2, dtype="bfloat16")
    train_tiny(config, signal_during_step(2))
    assert "bfloat16 on cpu" in caplog.text
    assert "Ctrl-C came during the last step" in caplog.text
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "merged" / "config.json").is_file()
    assert signal.getsignal(signal.SIGINT) is handler


@pytest.mark.slow
def test_ctrl_c_names_the_checkpoint_it_saved_and_resume_continues_without_duplicates(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A run that logs step 3 and then dies keeps only checkpoint-2 (save_steps 2).
    config = tiny_config(tiny_model_dir, tmp_path, max_steps=5, save_steps=2)
    with pytest.raises(RuntimeError, match="the run dies here"):
        train_tiny(config, signal_during_step(4, None))
    assert reward_steps(tmp_path) == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
    record = read_run_record(tmp_path)
    assert record is not None and record["status"] == "died in step 4 (RuntimeError)"

    # Resumed, it logs step 3 once more and is stopped by Ctrl-C during step 4.
    with pytest.raises(SystemExit) as stopped:
        train_tiny(config, signal_during_step(4), resume=True)
    assert stopped.value.code == EXIT_INTERRUPTED
    assert reward_steps(tmp_path) == [1, 2, 3, 4]
    assert f"checkpoint kept in {tmp_path / 'checkpoint-4'}" in caplog.text
    assert (tmp_path / "checkpoint-4" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "merged").exists()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_143_and_resume_logs_each_step_once(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handler = signal.getsignal(signal.SIGTERM)
    config = tiny_config(tiny_model_dir, tmp_path, max_steps=4)
    with pytest.raises(SystemExit) as stopped:
        train_tiny(config, signal_during_step(2, signal.SIGTERM))
    assert stopped.value.code == EXIT_TERMINATED
    assert "SIGTERM: saving a checkpoint after this step" in caplog.text
    assert f"checkpoint kept in {tmp_path / 'checkpoint-2'}" in caplog.text
    assert (tmp_path / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert signal.getsignal(signal.SIGTERM) is handler
    # TRL's end-of-run summary (also logged when stopped early) is no row of metrics.jsonl.
    assert reward_steps(tmp_path) == [1, 2]
    record = read_run_record(tmp_path)
    assert record is not None and record["status"] == "stopped at step 2 by SIGTERM"
    assert record["summary"]["step"] == 2 and "train_runtime" in record["summary"]

    train_tiny(config, signal_during_step(0), resume=True)
    assert reward_steps(tmp_path) == [1, 2, 3, 4]
    record = read_run_record(tmp_path)
    assert record is not None and record["status"] == "finished at step 4"
    assert [s["resumed_from"] for s in record["sessions"]] == [None, "checkpoint-2"]
    assert (tmp_path / "merged" / "config.json").is_file()
