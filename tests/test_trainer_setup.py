"""Trainer setup without training: reward resolution, batch arithmetic, log lines and plots."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import rewards
from autolearn.config import Config, TrainingConfig
from autolearn.errors import UserError
from autolearn.trainer import (
    build_rewards,
    check_batch_shape,
    format_log_line,
    plot_rewards,
    resolve_reward,
)


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "my_rewards.py").write_text(
        "def short(prompts, completions, **kw):\n"
        "    return [1.0 if len(str(c)) < 10 else 0.0 for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rewards"
    sys.modules.pop("my_rewards", None)


def test_built_in_and_custom_rewards_resolve(custom_module: str) -> None:
    assert resolve_reward("correctness", rewards.REWARDS) is rewards.REWARDS["correctness"]
    short = resolve_reward(f"{custom_module}:short", rewards.REWARDS)
    assert short([], ["ok", "far too long for it"]) == [1.0, 0.0]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("corectness", "unknown reward 'corectness'; built-in rewards: correctness,"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("rewards:nope", "module 'rewards' has no function 'nope'"),
        (":f", "must look like module:function"),
    ],
)
def test_bad_reward_names_are_clear_errors(name: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        resolve_reward(name, rewards.REWARDS)


def test_reward_kwargs_are_bound_and_checked() -> None:
    config = Config(
        rewards={"reasoning": 0.5, "correctness": 1.0},
        reward_kwargs={"reasoning": {"min_words": 1, "max_words": 3}},
    )
    functions, weights = build_rewards(config, rewards.REWARDS)
    assert weights == [0.5, 1.0]
    assert functions[0].__name__ == "reasoning"  # TRL logs under this name
    assert functions[0]([], ["two words"]) == [1.0]
    config.reward_kwargs = {"format": {"x": 1}}
    with pytest.raises(UserError, match="reward_kwargs names reward"):
        build_rewards(config, rewards.REWARDS)


def test_reward_gates_are_logged_once_at_start(caplog: pytest.LogCaptureFixture) -> None:
    config = Config(
        rewards={"correctness": 1.0, "format": 0.2, "reasoning": 0.1, "xml_format": 0.3},
        reward_kwargs={"reasoning": {"gate": False}},
    )
    with caplog.at_level("INFO", logger="autolearn.trainer"):
        functions, _ = build_rewards(config, rewards.REWARDS)
    gate_lines = [r.getMessage() for r in caplog.records if "reward gate" in r.getMessage()]
    assert len(gate_lines) == 1
    assert gate_lines[0].startswith("reward gate on for format:")  # reasoning's gate is off
    filler = " ".join(f"w{i}" for i in range(30)) + " The answer is 5."
    assert functions[2](["q"], [filler], answer=["7"]) == [1.0]  # the ungated reasoning


@pytest.mark.parametrize(
    ("processes", "batch", "accumulation", "generations", "prompts"),
    [(1, 4, 1, 4, 1), (2, 4, 1, 4, 2), (1, 2, 4, 8, 1), (4, 8, 2, 8, 8)],
)
def test_batch_shape_gives_prompts_per_step(
    processes: int, batch: int, accumulation: int, generations: int, prompts: int
) -> None:
    config = Config(
        training=TrainingConfig(
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            num_generations=generations,
        )
    )
    assert check_batch_shape(config, processes) == prompts


def test_batch_that_does_not_divide_names_the_numbers() -> None:
    config = Config(training=TrainingConfig(per_device_train_batch_size=3, num_generations=4))
    with pytest.raises(
        UserError, match="3 completions per step, which is not a multiple of num_generations 4"
    ):
        check_batch_shape(config, 1)


def test_log_line_and_plot(tmp_path: Path) -> None:
    logs = {
        "reward": 0.5,
        "rewards/correctness/mean": 0.25,
        "rewards/xml_format/mean": 0.75,
        "loss": 0.01,
    }
    line = format_log_line(logs, 3, 10)
    assert line.startswith("step 3/10  reward 0.500  (correctness 0.250, xml_format 0.750)")
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, **logs}) + "\n" for s in (1, 2, 3)))
    png = plot_rewards(metrics, tmp_path / "curve.png")
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"
    assert plot_rewards(tmp_path / "none.jsonl", tmp_path / "x.png") is None
