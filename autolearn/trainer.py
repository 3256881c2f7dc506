"""GRPO trainer setup shared by the training scripts: rewards, TRL config, callbacks, saving.

The scripts call :func:`train` with a resolved :class:`~autolearn.config.Config`, a
dataset and a reward registry; everything about TRL lives here. Outputs in
``training.output_dir`` (the folder rules are in :mod:`autolearn.rundir`):

    run.json            what the run resolved (backend, precision, rollout engine) beside what
                        was asked, its sessions, status and TRL's end-of-run summary
    config.yaml         the merged config of the run
    metrics.jsonl       one JSON line per logged step (loss, reward, each reward component,
                        the wall time of the step and of its rollout, with vLLM the
                        rollout's split (autolearn.rollout_clock) and, on a GPU, memory:
                        training side, vLLM's share and the device-wide peak)
    reward_curve.png    reward per step, total and per component (at every save and the end),
                        above the held-out scores when the run evaluates (autolearn.heldout)
    best/, best.json    the adapter that scored best on the held-out prompts, its step and score
    checkpoint-N/       resumable checkpoints every ``save_steps`` (and on Ctrl-C or SIGTERM)
    adapter/            the final LoRA adapter and tokenizer
    merged/             the LoRA merged into the base weights, loadable with plain transformers
"""

from __future__ import annotations

import contextlib
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

from autolearn.cli import naming, plural
from autolearn.config import Config, parse_reward_spec, save_config
from autolearn.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Aborted, UserError
from autolearn.gpu_memory import DevicePeak, RunMemory, device_growth
from autolearn.heldout import HeldOut, build_evaluator, draw_heldout, is_eval_row
from autolearn.heldout import make_callback as make_heldout_callback
from autolearn.memory_plan import MemoryPlan
from autolearn.models import (
    TrainingModel,
    cuda_available,
    main_process,
    merge_adapter_into_base,
    prepare_trainer,
    world_size,
)
from autolearn.rollout_clock import RolloutClock
from autolearn.rundir import (
    checkpoint_step,
    checkpoint_to_resume,
    file_sha256,
    finished_at,
    trim_metrics,
    update_run_record,
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


def reward_settings(function: RewardFn) -> list[str]:
    """The settings a reward takes: its keyword-only parameters (those after ``*``).

    Positional parameters are what TRL passes (prompts, completions, dataset columns such as
    ``answer``), and ``**kwargs`` takes the other columns; neither is a setting.
    """
    parameters = inspect.signature(function).parameters.values()
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


def bind_reward_kwargs(function: RewardFn, kwargs: Mapping[str, Any], name: str) -> RewardFn:
    """Fix keyword settings of a reward (e.g. the length window of ``reasoning``).

    A name that is not one of :func:`reward_settings` is an error listing the valid ones, even
    when the reward takes ``**kwargs`` (it would silently ignore a misspelt setting). The
    wrapper keeps the reward's ``__name__``, which TRL uses to log it.
    """
    if not kwargs:
        return function
    settings = reward_settings(function)
    unknown = [k for k in kwargs if k not in settings]
    if unknown:
        takes = (
            f"its settings are {', '.join(settings)}"
            if settings
            else "it takes no settings (a custom reward declares them as keyword-only "
            "parameters, after *)"
        )
        raise UserError(
            f"reward_kwargs.{name}: reward '{name}' has no setting {', '.join(unknown)}; {takes}"
        )
    bound = functools.partial(function, **kwargs)
    return functools.update_wrapper(bound, function)


def check_reward_kwargs(config: Config, registry: Mapping[str, RewardFn]) -> None:
    """Check ``reward_kwargs`` before a model loads: they must name rewards in use, and settings
    the rewards have. Custom rewards (``module:function``) are checked when they are imported,
    after the backend, since their module may import transformers before Unsloth.
    """
    unknown_kwargs = [k for k in config.reward_kwargs if k not in config.rewards]
    if unknown_kwargs:
        raise UserError(f"reward_kwargs names {naming('reward', unknown_kwargs)}, not in rewards")
    for name, kwargs in config.reward_kwargs.items():
        if name in registry:
            bind_reward_kwargs(registry[name], kwargs, name)


def build_rewards(
    config: Config, registry: Mapping[str, RewardFn]
) -> tuple[list[RewardFn], list[float]]:
    """The reward functions and their weights, in config order, for TRL's ``reward_weights``."""
    check_reward_kwargs(config, registry)
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
            f"{plural(processes, 'process', 'processes')} x per_device_train_batch_size {t.per_device_train_batch_size} x "
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
        "max_steps": t.max_steps,
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
        "disable_tqdm": not sys.stderr.isatty(),  # a redirected log gets one line per step
    }
    if tm.vllm:
        kwargs["use_vllm"] = True
        kwargs["vllm_importance_sampling_correction"] = t.vllm_importance_sampling_correction
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


def make_callbacks(
    output_dir: Path,
    interrupt: InterruptFlag,
    rollouts: RolloutClock | None = None,
    memory: RunMemory | None = None,
    *,
    interactive: bool = True,
) -> list[Any]:
    """Our callbacks: progress (a bar, or log lines), metrics file, reward plot, signals."""
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

    class RewardLogCallback(TrainerCallback):
        """The same line per log as a log record, for output that is not a terminal."""

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if state.is_world_process_zero and logs and "reward" in logs:
                logger.info("%s", format_log_line(logs, state.global_step, state.max_steps))

    class MetricsCallback(TrainerCallback):
        """Append each step's log to ``metrics.jsonl``; redraw the reward curve at each save."""

        step_started = 0.0
        step_seconds: float | None = None

        def __init__(self) -> None:
            super().__init__()
            self.rollout_fields: dict[str, float] = {}  # the last step's rollout_* timings

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.step_started = time.perf_counter()

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if not state.is_world_process_zero or not logs:
                return
            if is_run_summary(logs):  # not a step: it would repeat the last step's number
                update_run_record(
                    output_dir, summary={"step": state.global_step, **_jsonable(logs)}
                )
                return
            record = {"step": state.global_step, **_jsonable(logs)}
            if self.step_seconds is not None and "reward" in logs:
                record["step_seconds"] = round(self.step_seconds, 3)
                record.update(self.rollout_fields)
                if memory is not None:
                    record.update(memory.fields())
            with (output_dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                plot_rewards(output_dir / "metrics.jsonl", output_dir / "reward_curve.png")

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.step_seconds = time.perf_counter() - self.step_started
            self.rollout_fields = rollouts.take() if rollouts is not None else {}
            agreed = agree_on_interrupt(interrupt.signum, args.device)
            if agreed:
                interrupt.signum = agreed  # also on processes that did not see the signal
                control.should_save = True
                control.should_training_stop = True

    progress = RewardProgressCallback() if interactive else RewardLogCallback()
    return [progress, MetricsCallback()]


def is_run_summary(logs: Mapping[str, Any]) -> bool:
    """Whether a log is the trainer's end-of-run summary (runtime, samples/s, mean loss)."""
    return "train_runtime" in logs


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


# --------------------------------------------------------------------------- plot

PlotPanel = Callable[[Any, list[dict[str, Any]]], None]  # (matplotlib Axes, metrics rows)


def smoothing_window(points: int) -> int:
    """Steps averaged by the smoothed lines: about the square root of the steps, 1 for few."""
    return 1 if points < 5 else min(50, round(math.sqrt(points)))


def moving_average(values: Sequence[float | None], window: int) -> list[float]:
    """Trailing mean over ``window`` values; missing ones (``None``, NaN) are left out."""
    out = []
    for end in range(1, len(values) + 1):
        chunk = [
            v for v in values[max(0, end - window) : end] if v is not None and math.isfinite(v)
        ]
        out.append(sum(chunk) / len(chunk) if chunk else math.nan)
    return out


def draw_reward_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Total reward and each component per step: faint raw values under a moving average."""
    from matplotlib.ticker import MaxNLocator

    steps = [r["step"] for r in rows]
    window = smoothing_window(len(rows))
    components = sorted(
        {k for r in rows for k in r if k.startswith("rewards/") and k.endswith("/mean")}
    )
    series = [("reward (weighted sum)", "reward", 2.2)]
    series += [(key.split("/")[1], key, 1.2) for key in components]
    for index, (label, key, width) in enumerate(series):
        values = [r.get(key) for r in rows]
        color = f"C{index}"
        if window > 1:
            raw = [math.nan if v is None else v for v in values]
            ax.plot(steps, raw, color=color, linewidth=0.8, alpha=0.25)
        ax.plot(steps, moving_average(values, window), color=color, linewidth=width, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    smoothed = f" (mean of the last {window} steps; faint: each step)" if window > 1 else ""
    ax.set_title("GRPO reward" + smoothed)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_rewards(metrics_path: Path, png_path: Path) -> Path | None:
    """Draw the plot's panels (one function each, see :data:`PlotPanel`) from ``metrics.jsonl``:
    the rewards, and the held-out scores when the run evaluates."""
    every_row = read_metrics(metrics_path)
    rows = [r for r in every_row if r.get("reward") is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[PlotPanel, list[dict[str, Any]]]] = [(draw_reward_panel, rows)]
    if eval_rows := [r for r in every_row if is_eval_row(r)]:
        panels.append((draw_heldout, eval_rows))
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 4.5 * len(panels)), squeeze=False)
    for ax, (panel, panel_rows) in zip(axes[:, 0], panels, strict=True):
        panel(ax, panel_rows)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


# --------------------------------------------------------------------------- Ctrl-C and SIGTERM

STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


def exit_code_for(signum: int) -> int:
    """The exit status a stopped run ends with: 130 after Ctrl-C, 143 after SIGTERM."""
    return EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED


@dataclass
class InterruptFlag:
    """The first stop signal seen (0: none); training then saves and stops after the step."""

    signum: int = 0

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.signum != 0

    @property
    def name(self) -> str:
        """How the user asked: ``Ctrl-C`` or ``SIGTERM``."""
        return STOP_SIGNALS.get(signal.Signals(self.signum), "a signal") if self.signum else ""


class GracefulInterrupt:
    """First Ctrl-C or SIGTERM: finish the step, checkpoint, stop. A second one: stop at once.

    SIGTERM is what ``timeout``, SLURM and ``docker stop`` send before they kill.
    """

    def __init__(self) -> None:
        self.flag = InterruptFlag()
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.flag.requested:
            raise Aborted(exit_code_for(signum))
        self.flag.signum = signum
        name = self.flag.name
        logger.warning(
            "%s: saving a checkpoint after this step, then stopping (%s again to abort)",
            name,
            name,
        )

    def __enter__(self) -> InterruptFlag:
        self._previous = {s: signal.signal(s, self._handler) for s in STOP_SIGNALS}
        return self.flag

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def agree_on_interrupt(signum: int, device: Any) -> int:
    """The stop signal any process saw (0: none), so that every process stops after the same step.

    Under ``torch.distributed`` this is one all-reduce of a single number (on ``device``,
    which NCCL needs to be this process's GPU); a lone process decides by itself.
    """
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return signum
    flag = torch.tensor([signum], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


# --------------------------------------------------------------------------- train and save


def keep_model_card_out(trainer: Any) -> None:
    """Stop TRL from writing its model card, ``README.md``, into the run folder.

    ``GRPOTrainer._save_checkpoint`` calls ``create_model_card``, which writes
    ``output_dir/README.md`` at every checkpoint, over whatever README is there. A run never
    pushes to the hub; PEFT still writes its own card into each checkpoint and ``adapter/``.
    """
    trainer.create_model_card = lambda *args, **kwargs: None


def rollout_engine(tm: TrainingModel, config: Config) -> str:
    """What generates the completions: vLLM (and whose) or transformers' ``generate``."""
    t = config.training
    if not tm.vllm:
        return "transformers generate"
    if tm.backend == "unsloth":
        return "vllm (unsloth, colocated)"
    if t.vllm_mode == "server":
        return f"vllm (trl server {t.vllm_server_host}:{t.vllm_server_port})"
    return "vllm (trl colocate)"


def resolved_settings(config: Config, tm: TrainingModel, args: Any) -> dict[str, Any]:
    """What the run resolved on this machine, for ``run.json`` and the config's header."""
    return {
        "backend": tm.backend,
        "device": "cuda" if cuda_available() else "cpu",
        "processes": world_size(),
        "weights": weight_precision(tm),
        "compute_dtype": "bfloat16" if args.bf16 else "float16" if args.fp16 else "float32",
        "rollouts": rollout_engine(tm, config),
    }


def asked_settings(config: Config) -> dict[str, Any]:
    """The settings that ``resolved_settings`` resolves, as the config asked for them."""
    m = config.model
    return {
        "backend": m.backend,
        "load_in_fp8": m.load_in_fp8,
        "dtype": m.dtype,
        "fast_inference": m.fast_inference,
    }


def record_run_start(
    config: Config,
    tm: TrainingModel,
    args: Any,
    output_dir: Path,
    memory_plan: MemoryPlan | None = None,
) -> None:
    """Write ``config.yaml`` and record what was asked and what was resolved in ``run.json``.

    A memory budget's plan is recorded as ``memory_plan`` (``null`` without a budget, and then
    so is an earlier session's ``budget_check``, which this session does not make).
    """
    resolved = resolved_settings(config, tm, args)
    header = (
        "The config of this run: built-in defaults < your YAML < your flags.\n"
        f"Resolved here: backend {resolved['backend']}, {resolved['weights']} weights on "
        f"{resolved['device']},\nrollouts via {resolved['rollouts']} (more in run.json)."
    )
    save_config(config, output_dir / "config.yaml", header=header)
    budget: dict[str, Any] = {"memory_plan": None, "budget_check": None}
    if memory_plan is not None:  # budget_check: kept for pipeline.report_peak_against_budget
        budget = {"memory_plan": memory_plan.to_dict()}
    update_run_record(
        output_dir,
        status="training",
        config_sha256=file_sha256(output_dir / "config.yaml"),
        asked=asked_settings(config),
        resolved=resolved,
        **budget,
    )


def train(
    config: Config,
    tm: TrainingModel,
    dataset: Any,
    registry: Mapping[str, RewardFn],
    *,
    resume: bool = False,
    heldout: HeldOut | None = None,
    memory_plan: MemoryPlan | None = None,
    device_poller: DevicePeak | None = None,
) -> Path:
    """Run GRPO and save the adapter and the merged model; returns the output directory.

    With ``training.eval_steps`` and a ``heldout`` set, the run is evaluated on it as it goes.
    ``memory_plan`` (a ``model.gpu_memory_gb`` budget's) goes in the header and ``run.json``.
    ``device_poller``: the caller's device-wide sampler, running since before the model loaded
    (the caller stops it), read for the metrics' ``gpu_device_peak_gib``; without one the
    metrics have none.
    """
    from trl import GRPOTrainer

    output_dir = Path(config.training.output_dir)
    resume_from = checkpoint_to_resume(output_dir, resume=resume)
    functions, weights = build_rewards(config, registry)
    args = grpo_config(config, tm, weights)
    with device_growth() as growth:
        trainer = GRPOTrainer(
            model=tm.model,
            reward_funcs=list[Any](functions),
            args=args,
            train_dataset=dataset,
            processing_class=tm.tokenizer,
        )
    trl_colocate = (
        tm.vllm and tm.backend == "transformers" and config.training.vllm_mode == "colocate"
    )
    if trl_colocate and growth.nbytes is not None:
        tm.vllm_device_bytes = growth.nbytes  # TRL starts vLLM in here
    prepare_trainer(trainer, tm)
    keep_model_card_out(trainer)
    rollouts = RolloutClock()
    rollouts.attach(trainer)
    primary = trainer.is_world_process_zero()
    if primary:
        record_run_start(config, tm, args, output_dir, memory_plan)
        if resume_from is None:
            (output_dir / "metrics.jsonl").unlink(missing_ok=True)
        else:
            trim_metrics(output_dir / "metrics.jsonl", checkpoint_step(resume_from))
    if resume_from is not None and finished_at(resume_from, config.training.max_steps):
        return save_unsaved_final_model(trainer, tm, output_dir, resume_from)
    log_run_header(config, tm, dataset, weights, memory_plan)
    extra = []
    if heldout is not None and config.training.eval_steps > 0:
        evaluator = build_evaluator(
            heldout, config, reward_functions=functions, reward_weights=weights
        )
        extra.append(make_heldout_callback(evaluator, trainer, tm))
    interrupt = run_grpo(
        trainer,
        tm,
        output_dir,
        resume_from,
        rollouts,
        extra_callbacks=extra,
        device_poller=device_poller,
    )
    if primary:
        plot_rewards(output_dir / "metrics.jsonl", output_dir / "reward_curve.png")
    step = trainer.state.global_step
    if interrupt.requested and step < trainer.state.max_steps:
        logger.warning(
            "stopped early at step %d; checkpoint kept in %s (continue with --resume)",
            step,
            output_dir / f"checkpoint-{step}",
        )
        if primary:
            update_run_record(output_dir, status=f"stopped at step {step} by {interrupt.name}")
        raise SystemExit(exit_code_for(interrupt.signum))
    if interrupt.requested:
        logger.info(
            "%s came during the last step; the run is complete, saving it as usual",
            interrupt.name,
        )
    save_final_model(trainer, tm, output_dir)
    if primary:
        update_run_record(output_dir, status=f"finished at step {step}")
    return output_dir


def run_grpo(
    trainer: Any,
    tm: TrainingModel,
    output_dir: Path,
    resume_from: str | None,
    rollouts: RolloutClock,
    *,
    extra_callbacks: Sequence[Any] = (),
    device_poller: DevicePeak | None = None,
) -> InterruptFlag:
    """Train with our callbacks, Ctrl-C/SIGTERM handling and memory figures; returns the flag.

    ``extra_callbacks`` (held-out evaluation) run after ours in each event, so a step's time
    and the stop decision are settled before they start. ``device_poller``: see :func:`train`.
    """
    primary = trainer.is_world_process_zero()
    interactive = not trainer.args.disable_tqdm
    memory = RunMemory(device_poller)
    with GracefulInterrupt() as interrupt, progress_output(interactive):
        remove_progress_callbacks(trainer)
        for callback in make_callbacks(
            output_dir, interrupt, rollouts, memory, interactive=interactive
        ):
            trainer.add_callback(callback)
        for callback in extra_callbacks:
            trainer.add_callback(callback)
        memory.start(trainer.model, vllm=tm.vllm, vllm_device=tm.vllm_device_bytes)
        try:
            trainer.train(resume_from_checkpoint=resume_from)
        except BaseException as exc:  # a crash or a second Ctrl-C: say so in run.json
            if primary:
                step = trainer.state.global_step
                update_run_record(
                    output_dir, status=f"died in step {step + 1} ({type(exc).__name__})"
                )
            raise
        finally:
            memory.stop()
    return interrupt


def save_unsaved_final_model(
    trainer: Any, tm: TrainingModel, output_dir: Path, checkpoint: str
) -> Path:
    """Save ``adapter/`` and ``merged/`` from the last checkpoint of a run whose final save
    did not finish, without training another step."""
    step = checkpoint_step(checkpoint)
    logger.info(
        "the run is already at step %d, but its final model was not saved: saving it from %s",
        step,
        checkpoint,
    )
    trainer._load_from_checkpoint(checkpoint)
    save_final_model(trainer, tm, output_dir)
    if trainer.is_world_process_zero():
        update_run_record(output_dir, status=f"finished at step {step}")
    return output_dir


def remove_progress_callbacks(trainer: Any) -> None:
    """Drop the trainer's own progress output; :func:`make_callbacks` brings ours."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)


def progress_output(interactive: bool) -> Any:
    """While the bar is drawn, route console log lines through tqdm so none lands on the bar."""
    if not interactive:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def log_run_header(
    config: Config,
    tm: TrainingModel,
    dataset: Any,
    weights: list[float],
    memory_plan: MemoryPlan | None = None,
) -> None:
    """Say what is about to happen, in a few lines (with a memory budget's plan, if any)."""
    t = config.training
    prompts_per_step = check_batch_shape(config)
    device = "cuda" if cuda_available() else "cpu"
    logger.info(
        "model %s | backend %s | %s on %s | rollouts via %s",
        config.model.name,
        tm.backend,
        weight_precision(tm),
        device,
        rollout_engine(tm, config),
    )
    logger.info(
        "dataset %s: %s | %s x %d generations per step (%s x batch %d x accumulation %d) | %s",
        config.dataset.name,
        plural(len(dataset), "prompt"),
        plural(prompts_per_step, "prompt"),
        t.num_generations,
        plural(world_size(), "process", "processes"),
        t.per_device_train_batch_size,
        t.gradient_accumulation_steps,
        plural(t.max_steps, "step"),
    )
    logger.info(
        "rewards: %s",
        ", ".join(
            f"{name} x{weight:g}" for name, weight in zip(config.rewards, weights, strict=True)
        ),
    )
    for line in memory_plan.lines() if memory_plan is not None else []:
        logger.info("%s", line)


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
    primary = main_process()
    if not sys.stderr.isatty():  # a redirected log: no progress bars from datasets, the hub
        # or weight loading (transformers reads the hub's setting), set before they import
        for variable in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(variable, "1")
    level = (logging.DEBUG if verbose else logging.INFO) if primary else logging.ERROR
    logging.getLogger("autolearn").setLevel(level)
    if not primary:  # one console voice under accelerate launch: rank 0's
        for noisy in ("transformers", "trl", "datasets", "accelerate"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
