"""Two training processes on CPU (gloo) under accelerate launch; only rank 0 writes outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def launch_command(*argv: str) -> list[str]:
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "examples" / "accelerate" / "cpu_2proc.yaml"),
        *argv,
    ]  # fmt: skip


# Two 16-token completions of one prompt per process and step: the smallest valid batch.
TINY_BATCH = ("--max_completion_length", "16", "--num_generations", "2", "--batch_size", "2")


def worker_pid(launcher_pid: int, rank: int) -> int:
    """The process id of the launcher's worker of ``rank`` (Linux /proc)."""
    children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
    for pid in children:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no worker of rank {rank} among {children}")


def launch_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def accelerate_launch(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        launch_command(*argv),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=launch_env(),
    )


def test_two_processes_train_and_only_rank_zero_writes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ddp"
    result = accelerate_launch(
        str(ROOT / "train_fp8_grpo.py"),
        "--model", str(tiny_model_dir),
        "--dataset", str(ROOT / "examples" / "math_sample.jsonl"),
        "--max_samples", "8",
        "--max_steps", "2",
        *TINY_BATCH,
        "--output_dir", str(out),
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    # The effective batch counts both processes: 2 x 2 completions = 2 prompts x 2 generations.
    assert "2 prompts x 2 generations per step (2 processes" in log
    assert log.count("autolearn.trainer: model ") == 1  # one console voice
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2]  # written once, not per rank
    assert (out / "merged" / "config.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter", "checkpoint-2", "config.yaml", "merged", "metrics.jsonl", "reward_curve.png",
        "run.json",
    ]  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_seen_by_one_process_stops_both_after_the_same_step(
    tiny_model_dir: Path, tmp_path: Path, signum: int
) -> None:
    out = tmp_path / "stopped"
    command = launch_command(
        str(ROOT / "train_fp8_grpo.py"),
        "--model", str(tiny_model_dir),
        "--dataset", str(ROOT / "examples" / "math_sample.jsonl"),
        "--max_samples", "8",
        "--max_steps", "200",
        *TINY_BATCH,
        "--output_dir", str(out),
    )  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=launch_env(),
    )
    assert process.stdout is not None
    seen = ""
    try:
        for line in process.stdout:
            seen += line
            if "step 1/200" in line:
                break
        # Only rank 1 sees the signal; rank 0 must stop after the same step (else it waits).
        os.kill(worker_pid(process.pid, rank=1), signum)
        seen += process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:  # the launcher stops its workers (SIGKILL after 30 s)
            process.terminate()
            process.wait(timeout=60)
    checkpoints = list(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1, seen[-3000:]
    step = int(checkpoints[0].name.split("-")[1])
    assert (checkpoints[0] / "adapter_model.safetensors").is_file()
    assert f"stopped early at step {step}; checkpoint kept in {checkpoints[0]}" in seen
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == list(range(1, step + 1))
    assert not (out / "merged").exists()


@pytest.mark.parametrize(
    ("script", "data"),
    [
        ("train_code_grpo.py", ("--dataset", "humaneval")),
        ("train_bench_grpo.py", ("--benchmark", "terminal")),
    ],
)
def test_code_and_bench_scripts_run_under_two_processes(
    tiny_model_dir: Path, tmp_path: Path, script: str, data: tuple[str, str]
) -> None:
    out = tmp_path / "run"
    result = accelerate_launch(
        str(ROOT / script),
        *data,
        "--model", str(tiny_model_dir),
        "--max_samples", "4",
        "--max_steps", "2",
        *TINY_BATCH,
        "--output_dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2]
    assert (out / "merged" / "config.json").is_file()


def test_batch_that_does_not_split_into_groups_fails_before_loading(tmp_path: Path) -> None:
    result = accelerate_launch(
        str(ROOT / "train_fp8_grpo.py"),
        "--model", "someone/never-loaded",
        "--dataset", str(ROOT / "examples" / "math_sample.jsonl"),
        "--num_generations", "3",
        "--batch_size", "2",
        "--output_dir", str(tmp_path / "bad"),
    )  # fmt: skip
    assert result.returncode != 0
    assert "2 processes x per_device_train_batch_size 2" in result.stderr
    assert "not a multiple of num_generations 3" in result.stderr
    assert "never-loaded" not in result.stderr  # rejected before any model was looked up
