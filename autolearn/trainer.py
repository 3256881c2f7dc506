"""GRPO trainer setup shared by the training scripts: rewards, TRL config, callbacks, saving.

The scripts call :func:`train` with a resolved :class:`~autolearn.config.Config`, a
dataset and a reward registry; everything about TRL lives here. Outputs in
``training.output_dir``:

    config.yaml         the resolved config of the run
    metrics.jsonl       one JSON line per logging step (loss, reward, each reward component,
                        the wall time of the step and, on a GPU, peak memory so far)
    reward_curve.png    reward per step, total and per component (at every save and the end)
    checkpoint-N/       resumable checkpoints every ``save_steps`` (and on Ctrl-C)
    adapter/            the final LoRA adapter and tokenizer
    merged/             the LoRA merged into the base weights, loadable with plain transformers
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from autolearn.config import Config, parse_reward_spec, save_config
from autolearn.errors import EXIT_INTERRUPTED, UserError
from autolearn.models import (
    TrainingModel,
    cuda_available,
    merge_adapter_into_base,
    prepare_trainer,
    world_size,
)

logger = logging.getLogger(__name__)

RewardFn = Callable[..., Sequence[float | None]]


# --------------------------------------------------------------------------- rewards


def resolve_reward(name: str, registry: Mapping[str, RewardFn]) -> RewardFn:
    """A built-in reward from ``registry``, or a custom ``module:function``."""
    custom = parse_reward_spec(name)
    if custom is None:
        if name not in registry:
            raise UserError(f"unknown reward '{name}'; built-in rewards: {', '.join(registry)}")
        return registry[name]
    module_name, function_name = custom
    if os.getcwd() not in sys.path:  # a reward module next to the user's config, as documented
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(
            f"custom reward '{name}': cannot import module '{module_name}' ({exc})"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UserError(
            f"custom reward '{name}': module '{module_name}' has no function '{function_name}'"
        )
    return function


def bind_reward_kwargs(function: RewardFn, kwargs: Mapping[str, Any], name: str) -> RewardFn:
    """Fix keyword settings of a reward (e.g. the length window of ``reasoning``).

    The wrapper keeps the reward's ``__name__``, which TRL uses to log it.
    """
    if not kwargs:
        return function
    parameters = inspect.signature(function).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = [k for k in kwargs if k not in parameters]
    if unknown and not accepts_any:
        raise UserError(
            f"reward_kwargs.{name}: reward '{name}' takes no setting(s) {', '.join(unknown)}; "
            f"it takes {', '.join(p for p in parameters if p not in ('prompts', 'completions', 'kwargs'))}"
        )
    bound = functools.partial(function, **kwargs)
    return functools.update_wrapper(bound, function)


def build_rewards(
    config: Config, registry: Mapping[str, RewardFn]
) -> tuple[list[RewardFn], list[float]]:
    """The reward functions and their weights, in config order, for TRL's ``reward_weights``."""
    unknown_kwargs = [k for k in config.reward_kwargs if k not in config.rewards]
    if unknown_kwargs:
        raise UserError(
            f"reward_kwargs names reward(s) not in rewards: {', '.join(unknown_kwargs)}"
        )
    functions: list[RewardFn] = []
    weights: list[float] = []
    for name, weight in config.rewards.items():
        function = resolve_reward(name, registry)
        functions.append(bind_reward_kwargs(function, config.reward_kwargs.get(name, {}), name))
        weights.append(float(weight))
    _log_reward_gates(config, functions)
    return functions, weights


def _log_reward_gates(config: Config, functions: Sequence[RewardFn]) -> None:
    """Say once at start which shaping rewards pay only with the task's core signal."""
    notes: dict[str, list[str]] = {}
    for name, function in zip(config.rewards, functions, strict=True):
        note = getattr(function, "gate_note", None)
        if note and config.reward_kwargs.get(name, {}).get("gate", True) is not False:
            notes.setdefault(note, []).append(name)
    for note, names in notes.items():
        logger.info("reward gate on for %s: %s", ", ".join(names), note)


# --------------------------------------------------------------------------- batch arithmetic


def check_batch_shape(config: Config, processes: int | None = None) -> int:
    """Reject batch settings TRL cannot split into whole groups; return prompts per step.

    TRL generates ``processes * per_device_train_batch_size * gradient_accumulation_steps``
    completions per optimisation step, in groups of ``num_generations`` per prompt.
    """
    t = config.training
    processes = processes or world_size()
    completions = processes * t.per_device_train_batch_size * t.gradient_accumulation_steps
    if completions % t.num_generations:
        raise UserError(
            f"{processes} process(es) x per_device_train_batch_size {t.per_device_train_batch_size} x "
            f"gradient_accumulation_steps {t.gradient_accumulation_steps} = {completions} completions "
            f"per step, which is not a multiple of num_generations {t.num_generations}; change "
            "per_device_train_batch_size (--batch_size) or num_generations so that it divides"
        )
    return completions // t.num_generations


# --------------------------------------------------------------------------- TRL config


def grpo_config(config: Config, tm: TrainingModel, weights: list[float]) -> Any:
    """Build TRL's ``GRPOConfig`` from our config and what the backend loaded."""
    from trl import GRPOConfig

    t, m = config.training, config.model
    cuda = cuda_available()
    half = cuda and m.dtype != "float32"
    kwargs: dict[str, Any] = {
        "output_dir": t.output_dir,
        "num_generations": t.num_generations,
        "learning_rate": t.learning_rate,
        "max_steps": t.max_steps if t.max_steps > 0 else -1,
        "num_train_epochs": t.num_train_epochs,
        "per_device_train_batch_size": t.per_device_train_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "max_completion_length": t.max_completion_length,
        "temperature": t.temperature,
        "top_p": t.top_p,
        "beta": t.beta,
        "loss_type": t.loss_type,
        "mask_truncated_completions": t.mask_truncated_completions,
        "scale_rewards": t.scale_rewards,
        "warmup_steps": t.warmup_ratio,  # transformers 5 reads a float < 1 as a ratio
        "lr_scheduler_type": t.lr_scheduler_type,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "optim": t.optim,
        "logging_steps": t.logging_steps,
        "save_strategy": "steps",
        "save_steps": t.save_steps,
        "save_total_limit": t.save_total_limit,
        "report_to": [] if t.report_to in ("none", "") else [t.report_to],
        "seed": t.seed,
        "log_completions": t.log_completions,
        "reward_weights": weights,
        "bf16": half and m.dtype != "float16",
        "fp16": half and m.dtype == "float16",
        "use_cpu": not cuda,
        "gradient_checkpointing": m.gradient_checkpointing and tm.backend == "transformers",
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "remove_unused_columns": False,
        "ddp_find_unused_parameters": False,  # LoRA uses every adapter weight in each step
        "ddp_timeout": t.ddp_timeout,  # a crashed rank stops the others after this many seconds
        "disable_tqdm": False,
    }
    if tm.vllm:
        kwargs["use_vllm"] = True
        if tm.backend == "transformers":
            kwargs["vllm_mode"] = t.vllm_mode
            if t.vllm_mode == "server":  # generation on a `trl vllm-serve` process of its own
                kwargs["vllm_server_host"] = t.vllm_server_host
                kwargs["vllm_server_port"] = t.vllm_server_port
            else:
                kwargs["vllm_gpu_memory_utilization"] = m.gpu_memory_utilization
    try:
        return GRPOConfig(**kwargs)
    except ValueError as exc:  # e.g. an unknown optim or lr_scheduler_type
        raise UserError(f"invalid training setting: {' '.join(str(exc).split())}") from None


# --------------------------------------------------------------------------- callbacks


def format_log_line(logs: Mapping[str, Any], step: int, max_steps: int) -> str:
    """One human line per logging step: reward, its components, loss."""
    parts = [f"step {step}/{max_steps}"]
    if "reward" in logs:
        parts.append(f"reward {logs['reward']:.3f}")
    components = {
        key.split("/")[1]: value
        for key, value in logs.items()
        if key.startswith("rewards/") and key.endswith("/mean")
    }
    if components:
        parts.append("(" + ", ".join(f"{k} {v:.3f}" for k, v in components.items()) + ")")
    for key in ("loss", "grad_norm", "completions/mean_length"):
        if key in logs and isinstance(logs[key], (int, float)):
            parts.append(f"{key.split('/')[-1]} {logs[key]:.4g}")
    return "  ".join(parts)


class RolloutClock:
    """Seconds the trainer spent generating completions (vLLM or ``generate``) since the last read."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def attach(self, trainer: Any) -> None:
        """Time every call of the trainer's generation method (TRL's private ``_generate``)."""
        generate = getattr(trainer, "_generate", None)
        if generate is None:  # another TRL version: the metric is simply left out
            logger.debug("GRPOTrainer has no _generate; rollout time is not recorded")
            return

        @functools.wraps(generate)
        def timed_generate(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return generate(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        trainer._generate = timed_generate

    def take(self) -> float:
        """The seconds accumulated since the last call, resetting the count."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def make_callbacks(
    output_dir: Path, interrupt: InterruptFlag, rollouts: RolloutClock | None = None
) -> list[Any]:
    """Our callbacks: progress bar with reward, metrics file, reward plot, Ctrl-C handling."""
    from transformers.trainer_callback import ProgressCallback, TrainerCallback

    class RewardProgressCallback(ProgressCallback):
        """TRL's progress bar, with the latest reward in it and one readable line per log."""

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if not state.is_world_process_zero or self.training_bar is None or not logs:
                return
            if "reward" in logs:
                self.training_bar.set_postfix(reward=f"{logs['reward']:.3f}", refresh=False)
                self.training_bar.write(format_log_line(logs, state.global_step, state.max_steps))

    class MetricsCallback(TrainerCallback):
        """Append every log to ``metrics.jsonl`` and redraw the reward curve at each save."""

        step_started = 0.0
        step_seconds: float | None = None
        rollout_seconds: float | None = None

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.step_started = time.perf_counter()

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if state.is_world_process_zero and logs:
                record = {"step": state.global_step, **_jsonable(logs)}
                if self.step_seconds is not None and "reward" in logs:
                    record["step_seconds"] = round(self.step_seconds, 3)
                    if self.rollout_seconds is not None:
                        record["rollout_seconds"] = round(self.rollout_seconds, 3)
                    if (peak := gpu_peak_gib()) is not None:
                        record["gpu_peak_gib"] = peak
                with (output_dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                plot_rewards(output_dir / "metrics.jsonl", output_dir / "reward_curve.png")

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.step_seconds = time.perf_counter() - self.step_started
            self.rollout_seconds = rollouts.take() if rollouts is not None else None
            if agree_on_interrupt(interrupt.requested, args.device):
                interrupt.requested = True  # also on processes that did not see the signal
                control.should_save = True
                control.should_training_stop = True

    return [RewardProgressCallback(), MetricsCallback()]


def gpu_peak_gib() -> float | None:
    """Peak memory allocated by torch on this process's GPU so far, or ``None`` without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def _jsonable(logs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in logs.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
    return out


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl`` (missing file: no rows)."""
    if not path.is_file():
        return []
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def plot_rewards(metrics_path: Path, png_path: Path) -> Path | None:
    """Draw the total reward and each reward component against the step."""
    rows = [r for r in read_metrics(metrics_path) if r.get("reward") is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["reward"] for r in rows], label="reward (weighted sum)", linewidth=2.2)
    components = sorted(
        {k for r in rows for k in r if k.startswith("rewards/") and k.endswith("/mean")}
    )
    for key in components:
        values = [r.get(key, math.nan) for r in rows]
        ax.plot(steps, values, label=key.split("/")[1], linewidth=1, alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_title("GRPO reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


# --------------------------------------------------------------------------- Ctrl-C


@dataclass
class InterruptFlag:
    """Set by the first Ctrl-C; training then saves a checkpoint and stops after the step."""

    requested: bool = False


class GracefulInterrupt:
    """First Ctrl-C: finish the step, checkpoint, stop. Second Ctrl-C: stop at once."""

    def __init__(self) -> None:
        self.flag = InterruptFlag()
        self._previous: Any = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.flag.requested:
            raise KeyboardInterrupt
        self.flag.requested = True
        logger.warning(
            "Ctrl-C: saving a checkpoint after this step, then stopping (Ctrl-C again to abort)"
        )

    def __enter__(self) -> InterruptFlag:
        self._previous = signal.signal(signal.SIGINT, self._handler)
        return self.flag

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


def agree_on_interrupt(requested: bool, device: Any) -> bool:
    """Whether any process saw Ctrl-C, so that every process stops after the same step.

    Under ``torch.distributed`` this is one all-reduce of a single number (on ``device``,
    which NCCL needs to be this process's GPU); a lone process decides by itself.
    """
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return requested
    flag = torch.tensor([int(requested)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


# --------------------------------------------------------------------------- train and save


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` directory in ``output_dir``, if any."""
    from transformers.trainer_utils import get_last_checkpoint

    if not output_dir.is_dir():
        return None
    return get_last_checkpoint(str(output_dir))


def checkpoint_to_resume(output_dir: Path, *, resume: bool) -> str | None:
    """The checkpoint the run continues from: the newest one with ``resume``, none otherwise.

    A fresh run into a folder with an earlier run's checkpoints is refused: checkpoint
    rotation (``save_total_limit``) would delete the new run's checkpoints first, and
    ``--resume`` would later pick the old run's newest one.
    """
    checkpoint = last_checkpoint(output_dir)
    if resume and checkpoint is None:
        raise UserError(f"--resume: no checkpoint-N directory in {output_dir}")
    if not resume and checkpoint is not None:
        raise UserError(
            f"{output_dir} already holds checkpoints of an earlier run: pass --resume to "
            "continue it, or choose another --output_dir"
        )
    return checkpoint


def checkpoint_step(checkpoint: str | Path) -> int:
    """The global step a ``checkpoint-N`` directory was saved at (its N)."""
    return int(Path(checkpoint).name.rpartition("-")[2])


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop the rows of ``metrics.jsonl`` logged after ``last_step``.

    A run that died after its last checkpoint logged steps that the resumed run logs again.
    """
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # blank, or torn by the crash
            continue
        if row.get("step", 0) <= last_step:
            kept.append(line + "\n")
    path.write_text("".join(kept), encoding="utf-8")


def train(
    config: Config,
    tm: TrainingModel,
    dataset: Any,
    registry: Mapping[str, RewardFn],
    *,
    resume: bool = False,
) -> Path:
    """Run GRPO and save the adapter and the merged model; returns the output directory."""
    from trl import GRPOTrainer

    output_dir = Path(config.training.output_dir)
    resume_from = checkpoint_to_resume(output_dir, resume=resume)
    functions, weights = build_rewards(config, registry)
    args = grpo_config(config, tm, weights)
    trainer = GRPOTrainer(
        model=tm.model,
        reward_funcs=list[Any](functions),
        args=args,
        train_dataset=dataset,
        processing_class=tm.tokenizer,
    )
    prepare_trainer(trainer, tm)
    rollouts = RolloutClock()
    rollouts.attach(trainer)
    primary = trainer.is_world_process_zero()
    if primary:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / "config.yaml")
        if resume_from is None:
            (output_dir / "metrics.jsonl").unlink(missing_ok=True)
        else:
            trim_metrics(output_dir / "metrics.jsonl", checkpoint_step(resume_from))
    from transformers.trainer_callback import ProgressCallback

    with GracefulInterrupt() as interrupt:
        trainer.remove_callback(ProgressCallback)
        for callback in make_callbacks(output_dir, interrupt, rollouts):
            trainer.add_callback(callback)
        log_run_header(config, tm, dataset, weights)
        trainer.train(resume_from_checkpoint=resume_from)
    if primary:
        plot_rewards(output_dir / "metrics.jsonl", output_dir / "reward_curve.png")
    step = trainer.state.global_step
    if interrupt.requested and step < trainer.state.max_steps:
        logger.warning(
            "stopped early at step %d; checkpoint kept in %s (continue with --resume)",
            step,
            output_dir / f"checkpoint-{step}",
        )
        raise SystemExit(EXIT_INTERRUPTED)
    if interrupt.requested:
        logger.info("Ctrl-C came during the last step; the run is complete, saving it as usual")
    save_final_model(trainer, tm, output_dir)
    return output_dir


def log_run_header(config: Config, tm: TrainingModel, dataset: Any, weights: list[float]) -> None:
    """Say what is about to happen, in a few lines."""
    t = config.training
    prompts_per_step = check_batch_shape(config)
    device = "cuda" if cuda_available() else "cpu"
    logger.info(
        "model %s | backend %s | %s on %s | rollouts via %s",
        config.model.name,
        tm.backend,
        weight_precision(tm),
        device,
        "vLLM" if tm.vllm else "transformers generate",
    )
    logger.info(
        "dataset %s: %d prompts | %d prompts x %d generations per step (%d process(es) x "
        "batch %d x accumulation %d) | %s steps",
        config.dataset.name,
        len(dataset),
        prompts_per_step,
        t.num_generations,
        world_size(),
        t.per_device_train_batch_size,
        t.gradient_accumulation_steps,
        t.max_steps if t.max_steps > 0 else f"{t.num_train_epochs} epoch(s) of",
    )
    logger.info(
        "rewards: %s",
        ", ".join(
            f"{name} x{weight:g}" for name, weight in zip(config.rewards, weights, strict=True)
        ),
    )


def weight_precision(tm: TrainingModel) -> str:
    """The precision of the loaded base weights, e.g. ``bfloat16``, or ``fp8``."""
    if tm.fp8:
        return "fp8"
    return str(getattr(tm.model, "dtype", "unknown")).removeprefix("torch.")


def save_final_model(trainer: Any, tm: TrainingModel, output_dir: Path) -> Path:
    """Save the LoRA adapter to ``adapter/`` and the merged model to ``merged/``, with the tokenizer.

    Every process calls this (gathering sharded FSDP weights is collective); only the main
    process writes. FP8 and sharded runs merge the adapter into the 16-bit base checkpoint
    re-read from disk, not into the weights held by the trainer.
    """
    adapter_dir, merged_dir = output_dir / "adapter", output_dir / "merged"
    trainer.save_model(str(adapter_dir))
    if trainer.is_world_process_zero():
        tm.tokenizer.save_pretrained(adapter_dir)
        sharded = "FSDP" in str(trainer.accelerator.distributed_type)
        if tm.fp8 or sharded:
            merge_adapter_into_base(tm, adapter_dir, merged_dir)
        elif tm.backend == "unsloth":
            trainer.model.save_pretrained_merged(
                str(merged_dir), tm.tokenizer, save_method="merged_16bit"
            )
        else:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(merged_dir)
            tm.tokenizer.save_pretrained(merged_dir)
        logger.info(
            "saved the LoRA adapter to %s and the merged model to %s", adapter_dir, merged_dir
        )
    trainer.accelerator.wait_for_everyone()
    return merged_dir


def setup_logging(verbose: bool = False) -> None:
    """Console logging for the scripts: our messages at INFO, libraries' at WARNING, rank 0 only."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    main_process = int(os.environ.get("RANK", "0")) == 0
    level = (logging.DEBUG if verbose else logging.INFO) if main_process else logging.ERROR
    logging.getLogger("autolearn").setLevel(level)
    if not main_process:  # one console voice under accelerate launch: rank 0's
        for noisy in ("transformers", "trl", "datasets", "accelerate"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
