"""The run folder and run outputs: what a run may overwrite, bad output paths, import order,
the reward plot and the GPU memory fields (CPU, before or without a model load)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autolearn.errors import NothingToDoError, UserError
from autolearn.gpu_memory import (
    GIB,
    RunMemory,
    device_growth,
    memory_fields,
    vllm_share_bytes,
)
from autolearn.rundir import check_run_dir, file_sha256, read_run_record, update_run_record
from autolearn.trainer import draw_reward_panel, moving_average, plot_rewards, smoothing_window

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "train_fp8_grpo.py": ("--dataset", str(ROOT / "examples" / "math_sample.jsonl")),
    "train_code_grpo.py": (
        "--dataset", "custom", "--test_file", str(ROOT / "examples" / "custom_tests.json"),
    ),
    "train_bench_grpo.py": ("--benchmark", "terminal"),
}  # fmt: skip


def run_script(
    script: str, *args: str, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    command = [*prefix, sys.executable, str(ROOT / script), *SCRIPTS[script], *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=180)


def assert_one_error_line_before_loading(
    result: subprocess.CompletedProcess[str], text: str
) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert text in lines[0]
    assert "never-loaded" not in result.stderr  # the model was never looked up


# --------------------------------------------------------------------------- whose folder


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_folder_with_files_no_run_wrote_is_refused_and_left_as_it_was(
    tmp_path: Path, script: str
) -> None:
    # The user's commented config and an earlier metrics file, used as --config and --output_dir.
    user_config = "# my settings, with comments\ntraining:\n  max_steps: 2  # short\n"
    (tmp_path / "config.yaml").write_text(user_config)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\n')
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = run_script(
        script,
        "--config", str(tmp_path / "config.yaml"),
        "--model", "someone/never-loaded",
        "--output_dir", str(tmp_path),
    )  # fmt: skip
    assert_one_error_line_before_loading(result, "holds config.yaml, metrics.jsonl, which no run")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_other_files_and_nested_run_folders_stay_untouched_beside_a_run(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("my notes")
    (tmp_path / "code").mkdir()  # e.g. outputs/code inside outputs
    (tmp_path / "code" / "config.yaml").write_text("x: 1")
    assert check_run_dir(tmp_path, resume=False, max_steps=3, claim=True) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "code", "run.json"]
    assert (tmp_path / "README.md").read_text() == "my notes"
    record = read_run_record(tmp_path)
    assert record is not None and record["sessions"][0]["cwd"] == os.getcwd()
    # Once it is a run's folder, a new attempt may start over (no checkpoints yet).
    assert check_run_dir(tmp_path, resume=False, max_steps=3, claim=True) is None


def test_a_config_edited_in_a_run_folder_is_the_users_and_is_refused(tmp_path: Path) -> None:
    check_run_dir(tmp_path, resume=False, max_steps=3, claim=True)
    config = tmp_path / "config.yaml"
    config.write_text("training:\n  max_steps: 3\n")  # as the run writes it: recorded
    update_run_record(tmp_path, config_sha256=file_sha256(config))
    check_run_dir(tmp_path, resume=False, max_steps=3, claim=False)
    config.write_text("# tuned by hand\ntraining:\n  max_steps: 3\n")
    with pytest.raises(UserError, match=r"config\.yaml was edited after the run wrote it"):
        check_run_dir(tmp_path, resume=False, max_steps=3, claim=False)
    assert config.read_text().startswith("# tuned by hand")


def test_a_fresh_run_never_replaces_a_saved_model(tmp_path: Path) -> None:
    check_run_dir(tmp_path, resume=False, max_steps=3, claim=True)
    (tmp_path / "merged").mkdir()
    with pytest.raises(UserError, match=r"holds the saved model of an earlier run \(merged/\)"):
        check_run_dir(tmp_path, resume=False, max_steps=3, claim=True)


def finished_run(folder: Path, step: int, *, saved: bool) -> None:
    check_run_dir(folder, resume=False, max_steps=step, claim=True)
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir()
    if saved:
        for name, file in (("adapter", "adapter_config.json"), ("merged", "config.json")):
            (folder / name).mkdir()
            (folder / name / file).write_text("{}")


def test_resume_of_a_finished_run_has_nothing_to_do_unless_more_steps_are_asked(
    tmp_path: Path,
) -> None:
    finished_run(tmp_path, 3, saved=True)
    record = (tmp_path / "run.json").read_bytes()
    with pytest.raises(NothingToDoError, match="already at step 3 of 3; nothing to do"):
        check_run_dir(tmp_path, resume=True, max_steps=3, claim=True)
    assert (tmp_path / "run.json").read_bytes() == record  # nothing written
    assert check_run_dir(tmp_path, resume=True, max_steps=5, claim=False) == str(
        tmp_path / "checkpoint-3"
    )
    # A run whose final save did not finish is resumed (to save it, see test_train_math).
    unsaved = tmp_path / "unsaved"
    finished_run(unsaved, 3, saved=False)
    assert check_run_dir(unsaved, resume=True, max_steps=3, claim=False) is not None


def test_resume_of_a_finished_run_exits_0_from_the_script_before_loading(tmp_path: Path) -> None:
    finished_run(tmp_path, 3, saved=True)
    result = run_script(
        "train_fp8_grpo.py",
        "--model", "someone/never-loaded", "--max_steps", "3", "--resume",
        "--output_dir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == f"{tmp_path} is already at step 3 of 3; nothing to do " + (
        "(raise --max_steps to train further)"
    )


# --------------------------------------------------------------------------- bad output paths


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("file", "is a file, not a folder"),
        ("under_file", "is a file, not a folder"),
        ("/proc/autolearn-run", "cannot create files in /proc"),
    ],
)
def test_an_output_dir_that_cannot_hold_a_run_is_one_error_line_before_loading(
    tmp_path: Path, where: str, message: str
) -> None:
    (tmp_path / "file").write_text("not a folder")
    output_dir = {"file": tmp_path / "file", "under_file": tmp_path / "file" / "run"}.get(
        where, Path(where)
    )
    result = run_script(
        "train_fp8_grpo.py", "--model", "someone/never-loaded", "--output_dir", str(output_dir)
    )
    assert_one_error_line_before_loading(result, message)


def test_a_read_only_output_dir_is_one_error_line_before_loading(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    args = ("--model", "someone/never-loaded", "--output_dir", str(folder / "run"))
    if os.geteuid() != 0:
        folder.chmod(0o555)
        result = run_script("train_fp8_grpo.py", *args)
        folder.chmod(0o755)
    else:  # root writes through permissions: mount the folder read-only in a namespace
        if shutil.which("unshare") is None:
            pytest.skip("needs unshare to make a read-only mount as root")
        mount = f'mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && exec "$@"'
        result = run_script(
            "train_fp8_grpo.py", *args, prefix=("unshare", "--mount", "sh", "-c", mount, "sh")
        )
    assert_one_error_line_before_loading(
        result, "Read-only file system" if os.geteuid() == 0 else "ermission"
    )
    assert not (folder / "run").exists()
    # Positive control: the same command with a writable folder gets past this check.
    writable = run_script(
        "train_fp8_grpo.py", "--model", "someone/never-loaded", "--output_dir", str(tmp_path / "rw")
    )
    assert "cannot create files" not in writable.stderr and "never-loaded" in writable.stderr


def test_report_to_without_its_package_is_one_error_line_before_loading(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    result = run_script(
        "train_code_grpo.py",
        "--model", "someone/never-loaded", "--report_to", "wandb",
        "--output_dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert_one_error_line_before_loading(result, "--report_to wandb needs the wandb package")


# --------------------------------------------------------------------------- import order

SPY = """
import json, runpy, sys
import autolearn.pipeline as pipeline
if sys.argv[1] == "--control":  # what a regression looks like: transformers imported early
    import transformers
    sys.argv.pop(1)
def at_backend_choice(config):
    print(json.dumps([m for m in ("transformers", "peft", "trl") if m in sys.modules]))
    raise SystemExit(0)
pipeline.choose_backend = at_backend_choice
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize(
    ("script", "control"), [*((s, False) for s in SCRIPTS), ("train_fp8_grpo.py", True)]
)
def test_nothing_imports_transformers_peft_or_trl_before_the_backend_choice(
    tmp_path: Path, script: str, control: bool
) -> None:
    """Unsloth, when chosen, is imported at that point, and must come before all three."""
    command = [sys.executable, "-c", SPY, *(["--control"] if control else [])]
    command += [str(ROOT / script), *SCRIPTS[script], "--output_dir", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    if control:
        assert "transformers" in imported
    else:
        assert imported == []


# --------------------------------------------------------------------------- reward plot


def test_the_reward_plot_smooths_noisy_steps_on_integer_ticks(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert moving_average([1.0, 3.0, None, 5.0], 2) == [1.0, 2.0, 3.0, 5.0]
    assert smoothing_window(3) == 1 and smoothing_window(100) == 10
    rows = [
        {"step": s, "reward": float(s % 2), "rewards/correctness/mean": float(s % 3 == 0)}
        for s in range(1, 37)
    ]
    fig, ax = plt.subplots()
    draw_reward_panel(ax, rows)
    faint = [line for line in ax.get_lines() if line.get_alpha() == 0.25]
    smooth = [
        line
        for line in ax.get_lines()
        if line.get_label() in ("reward (weighted sum)", "correctness")
    ]
    assert len(faint) == 2 and len(smooth) == 2
    raw = [r["reward"] for r in rows]
    assert np.asarray(faint[0].get_ydata()).tolist() == raw  # the values of each step
    assert np.asarray(smooth[0].get_ydata()).tolist() == moving_average(raw, 6)
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 36]
    assert ticks and all(float(t).is_integer() for t in ticks)
    plt.close(fig)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    png = plot_rewards(metrics, tmp_path / "curve.png")
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- GPU memory fields


def test_gpu_memory_splits_the_training_side_from_vllms_share() -> None:
    # 100 GiB allocated when training began, 1 GiB of it the model's weights: vLLM holds 99.
    share = vllm_share_bytes(100 * GIB, 1 * GIB, vllm=True)
    assert share == 99 * GIB and vllm_share_bytes(100 * GIB, 1 * GIB, vllm=False) == 0
    assert memory_fields(104 * GIB, share, 120 * GIB, vllm=True) == {
        "gpu_train_peak_gib": 5.0,
        "gpu_vllm_gib": 99.0,
        "gpu_device_peak_gib": 120.0,
    }
    assert memory_fields(3 * GIB, 0, None, vllm=False) == {"gpu_train_peak_gib": 3.0}


def test_without_cuda_no_memory_fields_and_no_sampling_thread() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the path without CUDA")
    threads = threading.active_count()
    memory = RunMemory()
    memory.start(torch.nn.Linear(2, 2), vllm=True)
    assert threading.active_count() == threads and memory.fields() == {}
    memory.stop()


def test_device_growth_is_none_without_cuda_and_the_block_still_runs() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the path without CUDA")
    ran = False
    with device_growth() as growth:
        ran = True
    assert ran and growth.nbytes is None


def weightless_config(model_dir: Path, output_dir: Path) -> Any:
    from autolearn.config import Config, ModelConfig, TrainingConfig

    return Config(
        model=ModelConfig(name=str(model_dir), backend="transformers", load_in_fp8=False),
        training=TrainingConfig(
            output_dir=str(output_dir), num_generations=2, per_device_train_batch_size=2
        ),
        rewards={"correctness": 1.0},
    )


def test_run_training_samples_from_before_the_load_and_stops_when_the_load_raises(
    config_only_model: Path,
    tmp_path: Path,
    device_sampler: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import rewards
    from autolearn.pipeline import run_training

    monkeypatch.setenv("LOCAL_RANK", "1")  # the second GPU's process samples the second GPU
    config = weightless_config(config_only_model, tmp_path / "run")
    with pytest.raises(UserError, match=r"could not load model .*no-weights"):  # in the load
        run_training(config, [], rewards.REWARDS)
    assert device_sampler.started_before_load is True and device_sampler.device == 1
    assert device_sampler.stops == 1


def test_run_training_starts_no_sampling_when_a_check_fails_before_the_load(
    config_only_model: Path, tmp_path: Path, device_sampler: Any
) -> None:
    import rewards
    from autolearn.pipeline import run_training

    config = weightless_config(config_only_model, tmp_path / "run")
    config.training.num_generations = 3  # 2 completions a step cannot make groups of 3
    with pytest.raises(UserError, match="not a multiple of num_generations 3"):
        run_training(config, [], rewards.REWARDS)
    assert device_sampler.started_before_load is None and device_sampler.stops == 0
