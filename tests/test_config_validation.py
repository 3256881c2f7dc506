"""validate(): names and ranges are checked before any model loads, in one-line errors."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from autolearn.config import (
    DTYPES,
    LOSS_TYPES,
    LR_SCHEDULERS,
    OPTIMIZERS,
    REPORT_TO,
    SCALE_REWARDS,
    VLLM_MODES,
    Config,
    load_config,
)
from autolearn.errors import UserError
from train_fp8_grpo import default_config, parse_args

ROOT = Path(__file__).resolve().parents[1]


def resolve(tmp_path: Path, yaml_text: str) -> Config:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    return load_config(default_config(), parse_args(["--config", str(path)]))


@pytest.mark.parametrize(
    ("yaml_text", "key", "bad", "choices"),
    [
        ("training: {loss_type: ppo}", "training.loss_type", "ppo", LOSS_TYPES),
        ("training: {scale_rewards: std}", "training.scale_rewards", "std", SCALE_REWARDS),
        ("training: {vllm_mode: remote}", "training.vllm_mode", "remote", VLLM_MODES),
        (
            "training: {lr_scheduler_type: cosine_decay}",
            "training.lr_scheduler_type",
            "cosine_decay",
            LR_SCHEDULERS,
        ),
        ("training: {optim: adam}", "training.optim", "adam", OPTIMIZERS),
        ("training: {report_to: 'wandb,mlflow'}", "training.report_to", "wandb,mlflow", REPORT_TO),
        ("model: {dtype: fp16}", "model.dtype", "fp16", DTYPES),
    ],
)
def test_a_bad_name_is_one_line_with_the_valid_ones(
    tmp_path: Path, yaml_text: str, key: str, bad: str, choices: Sequence[str]
) -> None:
    with pytest.raises(UserError) as caught:
        resolve(tmp_path, yaml_text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{key} must be one of ")
    assert message.endswith(f"got {bad!r}")
    assert all(choice in message for choice in choices)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("training: {gradient_accumulation_steps: 0}", "gradient_accumulation_steps must be at least 1, got 0"),
        ("training: {logging_steps: 0}", "training.logging_steps must be at least 1, got 0"),
        ("training: {save_steps: 0}", "training.save_steps must be at least 1, got 0"),
        ("training: {max_completion_length: 0}", "max_completion_length must be at least 1, got 0"),
        ("model: {lora_rank: 0}", "model.lora_rank must be at least 1, got 0"),
        ("training: {warmup_ratio: 1.0}", "training.warmup_ratio must be in [0, 1), got 1.0"),
        ("training: {warmup_ratio: -0.1}", "training.warmup_ratio must be in [0, 1), got -0.1"),
        ("training: {top_p: 0}", "training.top_p must be in (0, 1], got 0.0"),
        ("training: {learning_rate: 0}", "training.learning_rate must be positive, got 0.0"),
        ("model: {gpu_memory_utilization: 1.5}", "gpu_memory_utilization must be in (0, 1], got 1.5"),
    ],
)  # fmt: skip
def test_a_number_out_of_range_names_key_value_and_range(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        resolve(tmp_path, yaml_text)


def test_every_accepted_value_passes(tmp_path: Path) -> None:
    for key, choices in (
        ("loss_type", LOSS_TYPES),
        ("scale_rewards", SCALE_REWARDS),
        ("vllm_mode", VLLM_MODES),
        ("lr_scheduler_type", LR_SCHEDULERS),
        ("optim", OPTIMIZERS),
        ("report_to", REPORT_TO),
    ):
        for value in choices:
            assert (
                getattr(resolve(tmp_path, f"training: {{{key}: {value}}}").training, key) == value
            )
    for dtype in DTYPES:
        assert resolve(tmp_path, f"model: {{dtype: {dtype}}}").model.dtype == dtype
    assert resolve(tmp_path, "training: {warmup_ratio: 0.1}").training.warmup_ratio == 0.1


def test_trl_accepts_exactly_these_loss_types_and_these_modes() -> None:
    from trl import GRPOConfig

    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(GRPOConfig)}
    supported = re.search(r"Supported values are (.*?)\.", helps["loss_type"])
    assert supported is not None
    assert set(re.findall(r"'(\w+)'", supported.group(1))) == set(LOSS_TYPES)
    for field_name, values in (("scale_rewards", SCALE_REWARDS), ("vllm_mode", VLLM_MODES)):
        assert all(re.search(rf"\b{value}'", helps[field_name]) for value in values), field_name


def test_transformers_accepts_exactly_these_names() -> None:
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert set(LR_SCHEDULERS) == {s.value for s in SchedulerType}
    assert set(OPTIMIZERS) == {o.value for o in OptimizerNames}
    assert set(REPORT_TO) == {"none", "all", *INTEGRATION_TO_CALLBACK}


def test_the_script_exits_2_with_one_line_before_loading_a_model(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("training: {loss_type: ppo}\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "train_fp8_grpo.py"), "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: training.loss_type must be one of ")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
