"""Run configuration: built-in defaults < YAML file < command-line flags.

A config is a tree of dataclasses (:class:`Config` with ``model``, ``training``,
``dataset`` and ``rewards`` sections). Each training script supplies its own dataset
section class and its own defaults; everything else is shared. Values are validated as
they are merged: an unknown key names the valid ones, a wrong type names the expected one.
:func:`validate` then checks names against what TRL and transformers accept and numbers
against their ranges, before any model loads. All raise :class:`~autolearn.errors.UserError`,
which the scripts print as one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autolearn.errors import UserError

BACKENDS = ("auto", "unsloth", "transformers")
DTYPES = ("auto", "bfloat16", "float16", "float32")
PRECISIONS = ("fp8", "bf16", "fp32")
VLLM_MODES = ("colocate", "server")

# The values TRL 1.14's GRPOConfig accepts for these settings.
LOSS_TYPES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo")
SCALE_REWARDS = ("group", "batch", "none")

# The names transformers 5.17 accepts (SchedulerType, OptimizerNames, reporting
# integrations). They are copied rather than imported: importing transformers here would
# slow down --help and come before Unsloth, which must be imported first. A test compares
# them with the installed transformers.
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)
OPTIMIZERS = (
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_torch_xla",
    "adamw_torch_npu_fused",
    "adafactor",
    "adamw_anyprecision",
    "adamw_torch_4bit",
    "adamw_torch_8bit",
    "ademamix",
    "sgd",
    "adagrad",
    "adamw_bnb_8bit",
    "adamw_8bit",
    "ademamix_8bit",
    "lion_8bit",
    "lion_32bit",
    "paged_adamw_32bit",
    "paged_adamw_8bit",
    "paged_ademamix_32bit",
    "paged_ademamix_8bit",
    "paged_lion_32bit",
    "paged_lion_8bit",
    "rmsprop",
    "rmsprop_bnb",
    "rmsprop_bnb_8bit",
    "rmsprop_bnb_32bit",
    "galore_adamw",
    "galore_adamw_8bit",
    "galore_adafactor",
    "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise",
    "galore_adafactor_layerwise",
    "lomo",
    "adalomo",
    "grokadamw",
    "schedule_free_radam",
    "schedule_free_adamw",
    "schedule_free_sgd",
    "apollo_adamw",
    "apollo_adamw_layerwise",
    "stable_adamw",
)
REPORT_TO = (
    "none",
    "all",
    "azure_ml",
    "comet_ml",
    "mlflow",
    "neptune",
    "tensorboard",
    "trackio",
    "wandb",
    "codecarbon",
    "clearml",
    "dagshub",
    "flyte",
    "dvclive",
    "swanlab",
    "kubeflow",
)


@dataclass
class ModelConfig:
    """Which model to train and how to load it."""

    name: str = "embedded:smollm2-135m"
    backend: str = "auto"  # auto | unsloth | transformers
    load_in_fp8: bool = True  # FP8 base weights on capable GPUs; ignored (with a notice) on CPU
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32 (weights that are not FP8)
    max_seq_length: int = 1024
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    gpu_memory_utilization: float = 0.6  # vLLM's share of the GPU when fast_inference is on
    # The whole run within this many GB (10^9 bytes) of GPU memory: null = no budget. It
    # replaces gpu_memory_utilization with a planned split and turns Unsloth's standby off.
    gpu_memory_gb: float | None = None
    fast_inference: bool = True  # vLLM rollouts (Unsloth colocated, or TRL's colocate mode)
    gradient_checkpointing: bool = True


@dataclass
class TrainingConfig:
    """GRPO and optimiser settings; names follow TRL's ``GRPOConfig`` where one exists."""

    output_dir: str = "outputs"
    num_generations: int = 4
    learning_rate: float = 5.0e-5  # for LoRA; 5e-6 moved nothing in 40 steps (README)
    max_steps: int = 100  # GRPO steps to train for (at least 1)
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_prompt_length: int = 512
    max_completion_length: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.0
    loss_type: str = "dapo"
    mask_truncated_completions: bool = False
    scale_rewards: str = "group"
    warmup_ratio: float = 0.0
    lr_scheduler_type: str = "constant"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    report_to: str = "none"
    seed: int = 42
    log_completions: bool = False
    vllm_mode: str = "colocate"  # TRL's vLLM mode for the transformers backend: colocate | server
    vllm_server_host: str = "127.0.0.1"  # with vllm_mode: server (`trl vllm-serve`)
    vllm_server_port: int = 8000
    ddp_timeout: int = 600  # seconds a process waits for the others before giving up
    # TRL's reweighting by trainer/vLLM log-prob ratio: off, as measured (README, "Defaults")
    vllm_importance_sampling_correction: bool = False
    eval_steps: int = 0  # held-out evaluation at step 0, every N steps and at the end (0 = off)
    eval_num_samples: int = (
        1  # completions per held-out prompt: 1 = greedy, more = sampled (pass@k)
    )
    eval_max_prompts: int = 64  # at most this many held-out prompts per evaluation


@dataclass
class MathDataConfig:
    """GSM8K-style math word problems (``question`` and ``answer`` columns)."""

    name: str = "examples/math_sample.jsonl"
    subset: str = "main"
    split: str = "train"
    max_samples: int = 0  # 0 = all (rg: generators: 1000 problems)
    prompt_style: str = "one_shot"  # one_shot | zero_shot
    eval_fraction: float = (
        0.0  # share of problems held out for evaluation (seeded by training.seed)
    )
    eval_name: str = ""  # a separate held-out file instead (question/answer columns)
    rg_options: dict[str, Any] = field(default_factory=dict)  # rg:NAME generator config


@dataclass
class CodeDataConfig:
    """Code problems with tests: HumanEval, MBPP, a custom JSON file, or a local file."""

    name: str = "humaneval"  # humaneval | mbpp | mbpp-sanitized | custom | path to a file
    split: str = ""  # "" = the dataset's usual training split
    max_samples: int = 0  # 0 = all
    test_file: str = "examples/custom_tests.json"  # problems file for name: custom
    eval_fraction: float = 0.0  # share of problems held out of training (reported in the log)


@dataclass
class BenchDataConfig:
    """SWE-bench or Terminal-Bench tasks."""

    name: str = "terminal"  # swe-lite | swe-verified | terminal
    data_file: str = ""  # local SWE-bench .jsonl/.parquet instead of the hub
    repos_dir: str = (
        ""  # local clones: adds the touched files to prompts, checks that patches apply
    )
    tasks_dir: str = ""  # Terminal-Bench task folders ("" = the bundled examples/terminal_tasks)
    max_samples: int = 0  # 0 = all
    eval_fraction: float = 0.0  # share of tasks held out for evaluation (seeded by training.seed)


@dataclass
class Config:
    """The whole run configuration of one training script."""

    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    dataset: Any = field(default_factory=MathDataConfig)
    rewards: dict[str, float] = field(default_factory=dict)
    reward_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of every setting (what gets saved next to the run)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- merging


def _coerce_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise UserError(f"{where}: expected true or false, got {value!r}")


def _coerce_int(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise UserError(f"{where}: expected an integer, got {value!r}")


def _coerce_float(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads "5e-6" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    raise UserError(f"{where}: expected a number, got {value!r}")


def _coerce_str(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    raise UserError(f"{where}: expected a string, got {value!r}")


_SCALARS: dict[Any, Any] = {
    bool: _coerce_bool,
    int: _coerce_int,
    float: _coerce_float,
    str: _coerce_str,
}


def _coerce_list(value: Any, tp: Any, where: str) -> list[Any]:
    (item_tp,) = typing.get_args(tp)
    if not isinstance(value, list):
        raise UserError(f"{where}: expected a list, got {value!r}")
    return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]


def _coerce_dict(value: Any, tp: Any, where: str) -> dict[Any, Any]:
    key_tp, item_tp = typing.get_args(tp)
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: expected a mapping, got {value!r}")
    return {
        _coerce(k, key_tp, where): _coerce(v, item_tp, f"{where}.{k}") for k, v in value.items()
    }


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``, converting only lossless cases."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):  # ``X | None``: null, or an X
        (inner,) = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return None if value is None else _coerce(value, inner, where)
    if tp in _SCALARS:
        return _SCALARS[tp](value, where)
    if origin is list:
        return _coerce_list(value, tp, where)
    if origin is dict:
        return _coerce_dict(value, tp, where)
    raise TypeError(f"unsupported annotation {tp!r} at {where}")


def merge_section(section: Any, values: Mapping[str, Any], where: str) -> None:
    """Overwrite fields of the dataclass ``section`` with ``values``, validating each one."""
    if not isinstance(values, Mapping):
        raise UserError(f"{where}: expected a mapping of settings, got {values!r}")
    hints = typing.get_type_hints(type(section))
    valid = [f.name for f in dataclasses.fields(section)]
    for key, value in values.items():
        if key not in valid:
            raise UserError(
                f"unknown key '{where}.{key}'; valid keys in '{where}': {', '.join(valid)}"
            )
        setattr(section, key, _coerce(value, hints[key], f"{where}.{key}"))


def merge(config: Config, values: Mapping[str, Any], source: str) -> None:
    """Merge a nested mapping (from YAML or the command line) into ``config``."""
    if not isinstance(values, Mapping):
        raise UserError(f"{source}: the top level must be a mapping of sections")
    sections = [f.name for f in dataclasses.fields(config)]
    for name, value in values.items():
        if name not in sections:
            raise UserError(
                f"unknown key '{name}' in {source}; valid sections: {', '.join(sections)}"
            )
        if name == "rewards":
            config.rewards = _coerce(value or {}, dict[str, float], "rewards")
        elif name == "reward_kwargs":
            config.reward_kwargs = _coerce(value or {}, dict[str, dict[str, Any]], "reward_kwargs")
        else:
            merge_section(getattr(config, name), value or {}, name)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file, with one-line errors for a missing or malformed file."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"config file {p} is a directory; give the YAML file in it")
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    from autolearn.jsonl import read_text

    text = read_text(p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise UserError(f"{p} is not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: the top level must be a mapping of sections")
    return data


def validate(config: Config) -> None:
    """Check the settings before any model loads; a bad one is a one-line :class:`UserError`.

    Names are checked against the values TRL and transformers accept, numbers against
    their ranges, and GRPO's own rules (groups of at least two, some reward) are enforced.
    """
    _validate_model(config.model)
    _validate_training(config.training)
    _validate_dataset(config.dataset)
    if not config.rewards:
        raise UserError("the rewards section is empty: name at least one reward with its weight")


def _validate_model(m: ModelConfig) -> None:
    _check_choice("model.backend", m.backend, BACKENDS)
    _check_choice("model.dtype", m.dtype, DTYPES)
    _check_at_least_one("model", m, ("lora_rank", "max_seq_length"))
    if not 0.0 < m.gpu_memory_utilization <= 1.0:
        raise UserError(
            f"model.gpu_memory_utilization must be in (0, 1], got {m.gpu_memory_utilization}"
        )
    if m.gpu_memory_gb is not None and not m.gpu_memory_gb > 0:
        raise UserError(
            f"model.gpu_memory_gb must be a positive number of GB (or null), got {m.gpu_memory_gb}"
        )


def _validate_training(t: TrainingConfig) -> None:
    if t.max_steps < 1:
        raise UserError(f"training.max_steps must be at least 1, got {t.max_steps}")
    if t.num_generations < 2:
        raise UserError(
            "training.num_generations must be at least 2: GRPO compares completions within a group"
        )
    _check_at_least_one(
        "training",
        t,
        (
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "max_prompt_length",
            "max_completion_length",
            "logging_steps",
            "save_steps",
        ),
    )
    for key in ("learning_rate", "temperature", "max_grad_norm"):
        if not getattr(t, key) > 0:
            raise UserError(f"training.{key} must be positive, got {getattr(t, key)}")
    for key in ("beta", "weight_decay", "save_total_limit"):
        if not getattr(t, key) >= 0:
            raise UserError(f"training.{key} must be at least 0, got {getattr(t, key)}")
    if not 1 <= t.vllm_server_port <= 65535:
        raise UserError(f"training.vllm_server_port must be in 1-65535, got {t.vllm_server_port}")
    _check_at_least_one("training", t, ("ddp_timeout", "eval_num_samples", "eval_max_prompts"))
    if t.eval_steps < 0:
        raise UserError(f"training.eval_steps must be 0 (off) or more, got {t.eval_steps}")
    if not 0.0 < t.top_p <= 1.0:
        raise UserError(f"training.top_p must be in (0, 1], got {t.top_p}")
    if not 0.0 <= t.warmup_ratio < 1.0:
        raise UserError(f"training.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    _check_choice("training.loss_type", t.loss_type, LOSS_TYPES)
    _check_choice("training.scale_rewards", t.scale_rewards, SCALE_REWARDS)
    _check_choice("training.vllm_mode", t.vllm_mode, VLLM_MODES)
    _check_choice("training.lr_scheduler_type", t.lr_scheduler_type, LR_SCHEDULERS)
    _check_choice("training.optim", t.optim, OPTIMIZERS)
    _check_choice("training.report_to", t.report_to, REPORT_TO)


def _validate_dataset(d: Any) -> None:
    """Counts and shares of any script's dataset section (the fields it has)."""
    max_samples = getattr(d, "max_samples", 0)
    if max_samples < 0:
        raise UserError(f"dataset.max_samples must be 0 (all rows) or more, got {max_samples}")
    eval_fraction = getattr(d, "eval_fraction", 0.0)
    if not 0.0 <= eval_fraction < 1.0:
        raise UserError(f"dataset.eval_fraction must be in [0, 1), got {eval_fraction}")


def _check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UserError(f"{key} must be one of {', '.join(choices)}, got {value!r}")


def _check_at_least_one(where: str, section: Any, keys: Sequence[str]) -> None:
    for key in keys:
        value = getattr(section, key)
        if value < 1:
            raise UserError(f"{where}.{key} must be at least 1, got {value}")


# --------------------------------------------------------------------------- command line

# Flags every training script accepts: (flag, config path, type, help).
COMMON_FLAGS: list[tuple[str, str, type, str]] = [
    ("--model", "model.name", str, "model: hub name, local dir, or embedded:smollm2-135m"),
    ("--backend", "model.backend", str, "auto | unsloth | transformers"),
    ("--output_dir", "training.output_dir", str, "where checkpoints, metrics and the model go"),
    ("--max_steps", "training.max_steps", int, "number of GRPO steps"),
    ("--num_generations", "training.num_generations", int, "completions per prompt"),
    ("--learning_rate", "training.learning_rate", float, "optimiser learning rate"),
    (
        "--batch_size",
        "training.per_device_train_batch_size",
        int,
        "completions per device per step",
    ),
    ("--max_completion_length", "training.max_completion_length", int, "tokens per completion"),
    (
        "--gpu_memory_gb",
        "model.gpu_memory_gb",
        float,
        "keep the whole run (training and vLLM) within this many GB of GPU memory; the split is "
        "planned before loading, and a budget too small for the model is an error",
    ),
    ("--seed", "training.seed", int, "random seed"),
    ("--report_to", "training.report_to", str, "none | wandb | tensorboard"),
    ("--dataset", "dataset.name", str, "dataset name or local file"),
    ("--max_samples", "dataset.max_samples", int, "use at most this many rows (0 = all)"),
    (
        "--eval_steps",
        "training.eval_steps",
        int,
        "evaluate on the held-out split at step 0, every N steps and at the end (0 = off)",
    ),
]


def training_parser(
    description: str,
    defaults: Config,
    help_overrides: Mapping[str, str] | None = None,
) -> argparse.ArgumentParser:
    """A parser with the flags every training script shares (see :data:`COMMON_FLAGS`).

    ``--help`` shows each flag's default from ``defaults``, the script's built-in config
    (flags themselves default to ``None``, so that an absent flag leaves the YAML value).
    ``help_overrides`` replaces the help text of shared flags, by flag, where a script
    gives one a narrower meaning.
    """
    from autolearn.cli import defaults_formatter, flatten

    overrides = help_overrides or {}
    unknown = set(overrides) - {flag for flag, *_ in COMMON_FLAGS}
    if unknown:
        raise ValueError(f"help_overrides names flags that are not shared: {sorted(unknown)}")
    parser = argparse.ArgumentParser(
        description=description, formatter_class=defaults_formatter(flatten(defaults.to_dict()))
    )
    parser.add_argument("--config", help="YAML config file (default: built-in defaults)")
    for flag, dest, tp, text in COMMON_FLAGS:
        metavar = flag.lstrip("-").upper()
        parser.add_argument(
            flag, dest=dest, type=tp, default=None, metavar=metavar, help=overrides.get(flag, text)
        )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="fp8 (FP8 base weights on capable GPUs), bf16, or fp32 (default: model.load_in_fp8 "
        "and model.dtype decide)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in the output dir",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, as a nested mapping (unset flags omitted)."""
    tree: dict[str, Any] = {}
    for dotted, value in vars(args).items():
        if "." in dotted and value is not None:
            _set_path(tree, dotted, value)
    precision = getattr(args, "precision", None)
    if precision is not None:
        _set_path(tree, "model.load_in_fp8", precision == "fp8")
        _set_path(
            tree, "model.dtype", {"fp8": "auto", "bf16": "bfloat16", "fp32": "float32"}[precision]
        )
    return tree


def load_config(
    defaults: Config,
    args: argparse.Namespace,
    finalize: Callable[[Config], None] | None = None,
) -> Config:
    """Resolve the run's config: ``defaults``, then the YAML file, then command-line flags.

    ``finalize`` may fill in settings that depend on others (before validation).
    """
    config = defaults
    if args.config:
        merge(config, read_yaml(args.config), str(args.config))
    merge(config, cli_overrides(args), "command-line flags")
    if finalize is not None:
        finalize(config)
    validate(config)
    absolute_data_paths(config.dataset)
    return config


# Dataset settings that are always paths, and the endings of a dataset name that is a file.
DATA_PATH_FIELDS = ("test_file", "data_file", "repos_dir", "tasks_dir")
DATA_FILE_ENDINGS = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")


def absolute_data_paths(dataset: Any) -> None:
    """Make the dataset section's file and folder paths absolute, against the working directory.

    The saved ``config.yaml`` then names the same files from anywhere (``eval_code.py
    --heldout_from RUN_DIR`` reads it back). Hub names and built-in names are left as they are.
    """
    from autolearn.paths import absolute

    for key in DATA_PATH_FIELDS:
        if isinstance(getattr(dataset, key, None), str):
            setattr(dataset, key, absolute(getattr(dataset, key)))
    name = getattr(dataset, "name", "")
    if isinstance(name, str) and (name.lower().endswith(DATA_FILE_ENDINGS) or Path(name).is_file()):
        dataset.name = absolute(name)


def save_config(config: Config, path: str | Path, header: str = "") -> Path:
    """Write the resolved config as YAML (same layout as the input files).

    ``header`` goes first, as ``#`` comments, so that the file still loads with ``--config``.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    p.write_text(comments + yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    return p


def parse_reward_spec(spec: str) -> tuple[str, str] | None:
    """Split a custom reward ``module:function`` into its parts; ``None`` for built-in names."""
    if ":" not in spec:
        return None
    module, _, function = spec.partition(":")
    if not module or not function:
        raise UserError(f"custom reward '{spec}' must look like module:function")
    return module, function
