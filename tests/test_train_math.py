"""End-to-end GRPO runs of the real script on a tiny model (CPU, offline)."""

from __future__ import annotations

import json
import os
import re
import shutil
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
    out.mkdir()
    (out / "README.md").write_text("my notes on this run")  # not a name a run writes
    result = run(train_command(tiny_model_dir, out, "--max_steps", "3", "--learning_rate", "1e-3"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 3/3  reward" in result.stdout + result.stderr
    # Output that is not a terminal gets no progress bars (datasets, weight loading, training).
    assert "it/s]" not in result.stderr and "%|" not in result.stderr, result.stderr[-3000:]
    assert (out / "README.md").read_text() == "my notes on this run"  # no TRL model card

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = rows  # one row per step; TRL's end-of-run summary goes to run.json
    assert [r["step"] for r in steps] == [1, 2, 3]
    record = json.loads((out / "run.json").read_text())
    assert record["summary"]["step"] == 3 and "train_runtime" in record["summary"]
    assert record["asked"] == {
        "backend": "auto", "load_in_fp8": True, "dtype": "auto", "fast_inference": True,
    }  # fmt: skip
    assert record["resolved"] == {
        "backend": "transformers", "device": "cpu", "processes": 1, "weights": "float32",
        "compute_dtype": "float32", "rollouts": "transformers generate",
    }  # fmt: skip
    assert record["status"] == "finished at step 3"
    assert all(0 < r["rollout_seconds"] < r["step_seconds"] for r in steps)
    assert not [k for r in steps for k in r if k.startswith("rollout/")]  # no engine, no split
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

    # The saved config names what was resolved in comments and loads as a --config file.
    saved = (out / "config.yaml").read_text()
    assert "# Resolved here: backend transformers, float32 weights on cpu" in saved
    from autolearn.config import read_yaml

    assert read_yaml(out / "config.yaml")["training"]["max_steps"] == 3

    # --resume of the finished run: nothing to do, nothing written.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    done = run(train_command(tiny_model_dir, out, "--max_steps", "3", "--resume"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{out} is already at step 3 of 3; nothing to do" in done.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before

    # --resume continues from the last checkpoint (save_steps defaults to 50, so the final one).
    resumed = run(train_command(tiny_model_dir, out, "--max_steps", "4", "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]

    # A run at its last step whose final save did not finish saves it, without another step.
    shutil.rmtree(out / "merged")
    saved_again = run(train_command(tiny_model_dir, out, "--max_steps", "4", "--resume"))
    assert saved_again.returncode == 0, saved_again.stderr[-3000:]
    assert "already at step 4, but its final model was not saved" in saved_again.stderr
    assert "step 5/" not in saved_again.stderr and not (out / "checkpoint-5").exists()
    assert (out / "merged" / "config.json").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4


def test_resume_without_checkpoint_is_an_error_before_loading(tmp_path: Path) -> None:
    never_loaded = Path("someone/never-loaded")
    result = run(train_command(never_loaded, tmp_path / "fresh", "--max_steps", "1", "--resume"))
    assert result.returncode == 2
    assert "no checkpoint-N directory" in result.stderr
    assert "never-loaded" not in result.stderr


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_and_stops(
    tiny_model_dir: Path, tmp_path: Path, signum: int, exit_code: int
) -> None:
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
    process.send_signal(signum)
    rest, _ = process.communicate(timeout=240)
    seen += rest
    assert process.returncode == exit_code, seen[-3000:]
    name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    # The message is a log line of its own, not glued to a progress bar.
    assert re.search(rf"^\S+ WARNING autolearn.trainer: {name}: saving a checkpoint", seen, re.M)
    checkpoints = list(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "adapter_model.safetensors").is_file()
    assert f"checkpoint kept in {checkpoints[0]} (continue with --resume)" in seen
    assert not (out / "merged").exists()


def test_on_a_terminal_the_ctrl_c_message_is_not_glued_to_the_progress_bar(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import fcntl
    import pty
    import struct
    import termios

    out = tmp_path / "tty"
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # bar width
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    process = subprocess.Popen(
        train_command(tiny_model_dir, out, "--max_steps", "200"),
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        cwd=ROOT,
        env=env,
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 240
    signalled = False
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process ended and closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        # Once the bar is drawn again after step 1's line (with the reward in it).
        step_done = re.search(rb"step 1/200[^\n]*\n.*reward=", seen, re.S) is not None
        if not signalled and (step_done or time.monotonic() > deadline):
            process.send_signal(signal.SIGINT)
            signalled = True
    os.close(leader)
    process.wait(timeout=240)
    text = seen.decode(errors="replace")
    assert process.returncode == 130, text[-3000:]
    assert "it/s]" in text or "s/it]" in text  # a terminal does get the bar
    at = text.index("WARNING autolearn.trainer: Ctrl-C: saving a checkpoint")
    line_start = max(text.rfind("\r", 0, at), text.rfind("\n", 0, at))
    assert re.fullmatch(r"\d\d:\d\d:\d\d ", text[line_start + 1 : at]), text[at - 300 : at + 80]
