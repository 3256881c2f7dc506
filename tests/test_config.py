"""Config merging: defaults < YAML < command line, with one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autolearn.config import Config, MathDataConfig, load_config, save_config
from autolearn.errors import UserError
from train_fp8_grpo import default_config, parse_args

ROOT = Path(__file__).resolve().parents[1]


def resolve(argv: list[str]) -> Config:
    return load_config(default_config(), parse_args(argv))


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_when_nothing_given() -> None:
    config = resolve([])
    assert config.model.name == "embedded:smollm2-135m"
    assert isinstance(config.dataset, MathDataConfig)
    assert config.rewards["correctness"] == 1.0


def test_yaml_overrides_defaults_and_cli_overrides_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "model: {name: org/yaml-model, lora_rank: 8}\n"
        "training: {learning_rate: 5e-6, max_steps: 7}\n"
        "dataset: {max_samples: 30}\n",
    )
    config = resolve(["--config", path, "--max_steps", "3", "--model", "org/cli-model"])
    assert config.model.name == "org/cli-model"  # CLI beats YAML
    assert config.model.lora_rank == 8  # YAML beats default
    assert config.training.max_steps == 3
    assert config.training.learning_rate == pytest.approx(5e-6)  # "5e-6" is a YAML string
    assert config.dataset.max_samples == 30
    assert config.training.num_generations == 4  # default survives


def test_spec_flags_exist() -> None:
    config = resolve(
        ["--model", "unsloth/Qwen3-4B", "--dataset", "openai/gsm8k", "--max_samples", "500"]
    )
    assert (config.model.name, config.dataset.name, config.dataset.max_samples) == (
        "unsloth/Qwen3-4B",
        "openai/gsm8k",
        500,
    )


def test_precision_flag_sets_fp8_and_dtype() -> None:
    assert resolve(["--precision", "fp8"]).model.load_in_fp8 is True
    bf16 = resolve(["--precision", "bf16"]).model
    assert (bf16.load_in_fp8, bf16.dtype) == (False, "bfloat16")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: {nmae: x}\n", "unknown key 'model.nmae'; valid keys in 'model': name,"),
        ("modle: {name: x}\n", "unknown key 'modle'"),
        ("training: {max_steps: many}\n", "training.max_steps: expected an integer, got 'many'"),
        ("model: {load_in_fp8: 'yes'}\n", "model.load_in_fp8: expected true or false"),
        ("training: {learning_rate: fast}\n", "training.learning_rate: expected a number"),
        ("rewards: {correctness: high}\n", "rewards.correctness: expected a number"),
        ("model: [1, 2]\n", "model: expected a mapping"),
        ("training: {num_generations: 1}\n", "num_generations must be at least 2"),
        ("model: {backend: jax}\n", "model.backend must be one of"),
        ("rewards: {}\n", "rewards section is empty"),
    ],
)
def test_bad_settings_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        resolve(["--config", write(tmp_path, text)])


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not valid YAML"):
        resolve(["--config", write(tmp_path, "model: {name: [unclosed\n")])
    with pytest.raises(UserError, match="config file not found"):
        resolve(["--config", str(tmp_path / "nope.yaml")])


def test_saved_config_reloads_to_the_same_values(tmp_path: Path) -> None:
    config = resolve(["--max_steps", "9"])
    saved = save_config(config, tmp_path / "run" / "config.yaml")
    again = resolve(["--config", str(saved)])
    assert again.to_dict() == config.to_dict()


def test_shipped_configs_are_valid() -> None:
    for name in ("config.yaml", "examples/cpu_demo.yaml"):
        resolve(["--config", str(ROOT / name)])


def run_script(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "train_fp8_grpo.py"), *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_script_prints_one_line_and_exits_2_on_bad_key(tmp_path: Path) -> None:
    result = run_script("--config", write(tmp_path, "training: {max_stepz: 3}\n"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: unknown key 'training.max_stepz'")
    assert "Traceback" not in result.stderr


def test_script_reports_unreachable_hub_model_in_one_line(tmp_path: Path) -> None:
    result = run_script(
        "--model", "unsloth/Qwen3-4B", "--dataset", "openai/gsm8k", "--max_samples", "500",
        "--output_dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "openai/gsm8k" in lines[0] or "unsloth/Qwen3-4B" in lines[0]
    assert "Traceback" not in result.stderr


def test_help_is_instant() -> None:
    result = run_script("--help")
    assert result.returncode == 0
    assert "--max_samples" in result.stdout
    # No heavy library may be imported to print the help text.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, runpy; sys.argv=['x','--help']\n"
            "try: runpy.run_path('train_fp8_grpo.py', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "print(sorted(m for m in ('torch','trl','transformers','datasets') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert probe.stdout.strip().endswith("[]"), probe.stdout
