"""GRPO steps on a GPU: the project's backends against plain TRL, same settings, same card.

Each case runs in its own subprocess (no compiled kernels, allocator state or patched
modules leak from one case to the next) on a random-weight model of a real shape, built once
on the GPU and saved, so that the project's real loading code reads it like any checkpoint:

    1 trl_bf16            plain TRL + PEFT in BF16 (the baseline; none of our backend code)
    2 tf_fp8              our transformers backend, FP8 base weights
    3 tf_fp8_vllm         our transformers backend, FP8, TRL's colocated vLLM
    4 unsloth_bf16        Unsloth BF16
    5 unsloth_fp8         Unsloth FP8
    6 unsloth_bf16_vllm   Unsloth BF16 + fast_inference (vLLM)
    7 unsloth_fp8_vllm    Unsloth FP8 + fast_inference: the default GPU configuration

Cases 6 and 7 run with Unsloth's standby unless ``UNSLOTH_VLLM_STANDBY=0`` is set (the pipeline
keeps a value set); the report's header and ``results.json``'s ``environment`` say which, and
which ``UNSLOTH_VLLM_MERGED_ROLLOUT`` (Unsloth's folding of the LoRA into 16-bit weights for
rollouts, which it does by itself for BF16 and cannot do for FP8).

Cases 2-7 go through ``autolearn.pipeline.run_training`` (backend choice, loading, TRL
config, training, saving). Every case uses the same GRPO settings, stated explicitly since
Unsloth changes TRL's defaults: one prompt x ``--num-generations`` completions of exactly
``--max-completion-length`` tokens a step, LoRA r=16, ``gradient_accumulation_steps=1``,
``loss_type=dapo``, ``beta=0``, ``mask_truncated_completions=False``. A random model never
emits EOS, so the reward scores content (the share of letters in the completion): it varies
within a group, and the loss and gradients are real.

Per case: peak memory of the training side (``max_memory_allocated`` minus vLLM's share,
which is measured on its own), seconds per step after warm-up split into generation, scoring
and training, rollout tokens/s, the last step's loss, grad norm and reward, and (cases 2-7,
from the run's own metrics.jsonl) the median split of the rollout into the engine's generate
call, weight sync, LoRA merge/load, sleep/wake and the rest (autolearn/rollout_clock.py).
It writes ``results.json``, ``results.md`` and ``cases.log`` to ``--out``.

    python bench/gpu_grpo.py --out "$OUT"                        # all cases, Qwen3-1.7B shape
    python bench/gpu_grpo.py --cases 6,7 --shape 8b --num-generations 32
    python bench/gpu_grpo.py --dry-run                           # the plan, no GPU needed
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from autolearn.gpu_memory import (  # noqa: E402  (after the sys.path line above)
    GIB,
    DeviceMemoryPoller,
    cuda_tensor_bytes,
    vllm_share_bytes,
)
from bench import memory_history  # noqa: E402

logger = logging.getLogger("bench.gpu_grpo")


# --------------------------------------------------------------------------- cases and shapes


@dataclass(frozen=True)
class Case:
    """One way of running GRPO."""

    number: int
    name: str
    title: str
    backend: str  # trl (plain baseline) | transformers | unsloth
    fp8: bool
    vllm: bool


CASES = [
    Case(1, "trl_bf16", "plain TRL + PEFT, BF16", "trl", False, False),
    Case(2, "tf_fp8", "transformers backend, FP8", "transformers", True, False),
    Case(3, "tf_fp8_vllm", "transformers backend, FP8 + TRL vLLM", "transformers", True, True),
    Case(4, "unsloth_bf16", "Unsloth BF16", "unsloth", False, False),
    Case(5, "unsloth_fp8", "Unsloth FP8", "unsloth", True, False),
    Case(6, "unsloth_bf16_vllm", "Unsloth BF16 + vLLM", "unsloth", False, True),
    Case(7, "unsloth_fp8_vllm", "Unsloth FP8 + vLLM, default", "unsloth", True, True),
]
CASES_BY_KEY = {c.name: c for c in CASES} | {str(c.number): c for c in CASES}

# Qwen3 shapes (hidden, intermediate, layers, heads, kv heads, head dim, tied embeddings),
# and Llama-3.2-3B's (see LLAMA_SHAPES). "tiny" lets the whole script run on a CPU as a check
# of its own logic.
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        tie_word_embeddings=True,
    ),
    "1.7b": dict(
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=True,
    ),
    "8b": dict(
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=False,
    ),
    "3b": dict(
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=True,
    ),
    "14b": dict(
        hidden_size=5120,
        intermediate_size=17408,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=False,
    ),
}

LLAMA_SHAPES = {"3b"}  # built as LlamaForCausalLM; the others as Qwen3ForCausalLM


@dataclass(frozen=True)
class Settings:
    """The GRPO settings every case shares."""

    shape: str = "1.7b"
    num_generations: int = 8
    max_completion_length: int = 256
    steps: int = 4
    warmup_steps: int = 1
    lora_rank: int = 16
    lora_alpha: int = 32
    learning_rate: float = 1e-5
    loss_type: str = "dapo"
    beta: float = 0.0
    mask_truncated_completions: bool = False
    gradient_accumulation_steps: int = 1
    temperature: float = 1.0
    gpu_memory_utilization: float = 0.6
    max_seq_length: int = 1024
    seed: int = 42


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# --------------------------------------------------------------------------- reward and data


def letter_fraction(
    prompts: Sequence[Any], completions: Sequence[Any], **_: Any
) -> list[float | None]:
    """Share of ASCII letters in each completion: varies within a group even for random text."""
    from autolearn.completions import completion_texts

    texts = completion_texts(completions)
    return [sum(ch.isascii() and ch.isalpha() for ch in t) / max(len(t), 1) for t in texts]


REWARDS: dict[str, Callable[..., list[float | None]]] = {"letter_fraction": letter_fraction}


def prompt_dataset(rows: int = 64) -> Any:
    """Short chat prompts, one per step."""
    from datasets import Dataset

    topics = ["rivers", "prime numbers", "bread", "comets", "chess", "rain", "bridges", "owls"]
    return Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": f"Write about {topics[i % len(topics)]}."}]}
            for i in range(rows)
        ]
    )


# --------------------------------------------------------------------------- measurements


def synchronize() -> None:
    """Wait for queued GPU work, so host clocks time it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


@dataclass
class PhasePeaks:
    """Which phase of which step raised torch's peak allocation, and by how much.

    The phases: ``between`` (before a step, counted as that step's: for step 1 the time from
    the trainer's construction, else the previous step's logging), ``rollout`` (from the step's
    start to the end of TRL's ``_generate_and_score_completions``: generation and rewards, and
    the old log-probabilities where TRL computes them there, with importance-sampling
    correction on) and ``training`` (the rest of the step: the loss's forward and backward, the
    optimizer). At the end of each, the run's peak so far (``torch.cuda.max_memory_allocated``)
    is recorded; a phase that raised it is where the memory went. The counters are only read,
    never reset: the library's ``gpu_train_peak_gib`` reads them too. ``last_peak`` starts at
    the peak when training begins (:func:`instrument`).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    last_peak: int = 0

    def close(self, phase: str) -> None:
        """End ``phase`` of the current step: the run's peak so far, and what it rose by."""
        import torch

        if not torch.cuda.is_available():
            return
        peak = torch.cuda.max_memory_allocated()
        self.rows.append(
            {
                "step": self.step,
                "phase": phase,
                "run_peak_gib": round(peak / GIB, 3),
                "raised_gib": round((peak - self.last_peak) / GIB, 3),
            }
        )
        self.last_peak = peak

    def raises(self, at_least_gib: float = 0.01) -> list[dict[str, Any]]:
        """The phases that raised the run's peak by at least ``at_least_gib``, in order."""
        return [row for row in self.rows if row["raised_gib"] >= at_least_gib]


@dataclass
class Recorder:
    """What one case measured, filled in by the hooks below."""

    step_spans: list[tuple[float, float]] = field(default_factory=list)
    generate_calls: list[tuple[float, float]] = field(default_factory=list)
    rollout_calls: list[tuple[float, float]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    trainer_args: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    poller: DeviceMemoryPoller | None = None
    phases: PhasePeaks = field(default_factory=PhasePeaks)
    memory_history_step: int = 0  # record torch's allocation history in this step (0: none)
    recording: bool = False
    memory_history: dict[str, Any] = field(default_factory=dict)


RECORDER = Recorder()


def stop_memory_history() -> None:
    """Stop the allocation history the recorded step began, and keep its summary.

    Called at that step's end, or when the case fails inside it (an OOM there is what the
    history is most wanted for).
    """
    RECORDER.recording = False
    RECORDER.memory_history = {"step": RECORDER.phases.step, **memory_history.stop_recording()}


def timed_method(
    cls: type,
    name: str,
    sink: list[tuple[float, float]],
    then: Callable[[], None] | None = None,
) -> None:
    """Wrap ``cls.name`` so that each call's start and duration land in ``sink``.

    ``then``, if given, runs after each call (after its timing).
    """
    original = getattr(cls, name, None)
    if original is None or getattr(original, "_bench_timed", False):
        return

    @functools.wraps(original)
    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        synchronize()
        start = time.perf_counter()
        result = original(self, *args, **kwargs)
        synchronize()
        sink.append((start, time.perf_counter() - start))
        if then is not None:
            then()
        return result

    timed._bench_timed = True  # type: ignore[attr-defined]
    setattr(cls, name, timed)


ARG_NAMES = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_generations",
    "max_completion_length",
    "loss_type",
    "beta",
    "mask_truncated_completions",
    "epsilon",
    "epsilon_high",
    "scale_rewards",
    "learning_rate",
    "gradient_checkpointing",
    "use_vllm",
    "vllm_mode",
    "vllm_gpu_memory_utilization",
    "temperature",
)


def make_step_callback() -> Any:
    """A TrainerCallback that times whole optimisation steps and keeps every log."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time of each step, with the GPU drained at both ends."""

        _start = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            RECORDER.trainer_args = {k: _plain(getattr(args, k, None)) for k in ARG_NAMES}

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            synchronize()
            RECORDER.phases.step = state.global_step + 1
            RECORDER.phases.close("between")
            if RECORDER.memory_history_step == RECORDER.phases.step:
                memory_history.start_recording()
                RECORDER.recording = True
            self._start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            synchronize()
            RECORDER.step_spans.append((self._start, time.perf_counter()))
            RECORDER.phases.close("training")
            if RECORDER.recording:
                stop_memory_history()

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if logs:
                RECORDER.logs.append({"step": state.global_step, **_plain_dict(logs)})

    return StepTimer()


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def _plain_dict(logs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in logs.items() if isinstance(v, (int, float, str, bool))}


def record_after_load(model: Any) -> None:
    """Memory right after the model (and Unsloth's vLLM engine) loaded."""
    import torch

    RECORDER.times["load_s"] = time.perf_counter() - RECORDER.times["t0"]
    if not torch.cuda.is_available():
        return
    synchronize()
    RECORDER.memory["weights_after_load_gib"] = cuda_tensor_bytes(model) / GIB
    RECORDER.memory["after_load_allocated_gib"] = torch.cuda.memory_allocated() / GIB


def instrument(trainer: Any) -> None:
    """Hook a constructed trainer: step timer, generation timers, memory baseline."""
    import torch

    cls = type(trainer)
    timed_method(cls, "_generate", RECORDER.generate_calls)
    timed_method(
        cls,
        "_generate_and_score_completions",
        RECORDER.rollout_calls,
        then=lambda: RECORDER.phases.close("rollout"),
    )
    trainer.add_callback(make_step_callback())
    RECORDER.times["init_done"] = time.perf_counter()
    if torch.cuda.is_available():
        synchronize()
        model = trainer.accelerator.unwrap_model(trainer.model)
        RECORDER.memory["weights_gib"] = cuda_tensor_bytes(model) / GIB
        RECORDER.memory["after_init_allocated_gib"] = torch.cuda.memory_allocated() / GIB
        free, total = torch.cuda.mem_get_info()
        RECORDER.memory["after_init_device_used_gib"] = (total - free) / GIB
        torch.cuda.reset_peak_memory_stats()
        RECORDER.phases.last_peak = torch.cuda.max_memory_allocated()
        # Started only now: a CUDA context made before vLLM's engine starts changes how it forks.
        RECORDER.poller = DeviceMemoryPoller().start()


# --------------------------------------------------------------------------- running one case


def run_plain_trl(settings: Settings, model_dir: Path, output_dir: Path) -> None:
    """Case 1: the textbook TRL + PEFT GRPO run, with none of the project's backend code."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    cuda = torch.cuda.is_available()
    model = cast(Any, AutoModelForCausalLM).from_pretrained(
        str(model_dir), dtype=torch.bfloat16 if cuda else torch.float32
    )
    if cuda:
        model.to("cuda")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    record_after_load(model)
    args = GRPOConfig(
        output_dir=str(output_dir),
        num_generations=settings.num_generations,
        per_device_train_batch_size=settings.num_generations,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        max_completion_length=settings.max_completion_length,
        max_steps=settings.steps,
        learning_rate=settings.learning_rate,
        loss_type=settings.loss_type,
        beta=settings.beta,
        mask_truncated_completions=settings.mask_truncated_completions,
        scale_rewards="group",
        temperature=settings.temperature,
        top_p=1.0,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=settings.seed,
        bf16=cuda,
        use_cpu=not cuda,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        task_type="CAUSAL_LM",
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[letter_fraction],
        args=args,
        train_dataset=prompt_dataset(),
        processing_class=tokenizer,
        peft_config=lora,
    )
    instrument(trainer)
    trainer.train()


def pipeline_config(case: Case, settings: Settings, model_dir: Path, output_dir: Path) -> Any:
    """The project config for cases 2-7."""
    from autolearn.config import Config, ModelConfig, TrainingConfig, validate

    config = Config(
        model=ModelConfig(
            name=str(model_dir),
            backend=case.backend,
            load_in_fp8=case.fp8,
            dtype="auto",
            max_seq_length=settings.max_seq_length,
            lora_rank=settings.lora_rank,
            lora_alpha=settings.lora_alpha,
            lora_dropout=0.0,
            lora_target_modules=list(LORA_TARGETS),
            gpu_memory_utilization=settings.gpu_memory_utilization,
            fast_inference=case.vllm,
            gradient_checkpointing=True,
        ),
        training=TrainingConfig(
            output_dir=str(output_dir),
            num_generations=settings.num_generations,
            learning_rate=settings.learning_rate,
            max_steps=settings.steps,
            per_device_train_batch_size=settings.num_generations,
            gradient_accumulation_steps=settings.gradient_accumulation_steps,
            max_completion_length=settings.max_completion_length,
            temperature=settings.temperature,
            top_p=1.0,
            beta=settings.beta,
            loss_type=settings.loss_type,
            mask_truncated_completions=settings.mask_truncated_completions,
            scale_rewards="group",
            logging_steps=1,
            save_steps=10_000,
            report_to="none",
            seed=settings.seed,
        ),
        rewards={"letter_fraction": 1.0},
    )
    validate(config)
    return config


def run_pipeline(
    case: Case,
    settings: Settings,
    model_dir: Path,
    output_dir: Path,
    *,
    save: bool = True,
    config: Any = None,
    dataset: Any = None,
    force_budget: bool = False,
) -> None:
    """Cases 2-7: the project's own flow, with measuring hooks around loading and training.

    ``config`` and ``dataset`` replace :func:`pipeline_config`'s and :func:`prompt_dataset`'s;
    ``force_budget`` plans a ``gpu_memory_gb`` below the estimate anyway (``run_training``'s).
    """
    import autolearn.trainer as trainer_module
    from autolearn import pipeline

    load = pipeline.load_training_model
    prepare = trainer_module.prepare_trainer

    def measured_load(*args: Any, **kwargs: Any) -> Any:
        tm = load(*args, **kwargs)
        record_after_load(tm.model)
        return tm

    def measured_prepare(trainer: Any, tm: Any) -> None:
        prepare(trainer, tm)
        instrument(trainer)

    def no_save(trainer: Any, tm: Any, output_dir: Path) -> Path:
        logger.info("case %s skips saving the adapter and merged model", case.name)
        return output_dir

    pipeline.load_training_model = measured_load
    trainer_module.prepare_trainer = measured_prepare
    if not save:
        trainer_module.save_final_model = no_save
    if config is None:
        config = pipeline_config(case, settings, model_dir, output_dir)
    pipeline.run_training(
        config,
        prompt_dataset() if dataset is None else dataset,
        REWARDS,
        force_budget=force_budget,
    )


def run_case(
    case: Case,
    settings: Settings,
    model_dir: Path,
    output_dir: Path,
    *,
    save: bool = True,
    config: Any = None,
    dataset: Any = None,
    force_budget: bool = False,
) -> dict[str, Any]:
    """Run one case in this process and summarise it (``config``, ``dataset``,
    ``force_budget``: see run_pipeline)."""
    RECORDER.times["t0"] = time.perf_counter()
    error = ""
    try:
        if case.backend == "trl":
            run_plain_trl(settings, model_dir, output_dir)
        else:
            run_pipeline(
                case,
                settings,
                model_dir,
                output_dir,
                save=save,
                config=config,
                dataset=dataset,
                force_budget=force_budget,
            )
    except Exception as exc:  # a broken case is a result too; the other cases still run
        logger.exception("case %s failed", case.name)
        error = f"{type(exc).__name__}: {exc}"[:500]
    if RECORDER.recording:  # the recorded step failed before its end
        stop_memory_history()
    RECORDER.times["end"] = time.perf_counter()
    summary = summarise(case, settings, error)
    summary["rollout_split"] = rollout_split(output_dir / "metrics.jsonl", settings.warmup_steps)
    summary["merged_ok"] = (output_dir / "merged" / "config.json").is_file()
    summary["saved"] = save
    return summary


def _in_span(calls: list[tuple[float, float]], span: tuple[float, float]) -> float:
    return sum(d for s, d in calls if span[0] <= s < span[1])


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


SPLIT_PARTS = ("generate", "weight_sync", "lora_merge", "lora_load", "sleep_wake", "other")


def rollout_split(metrics: Path, warmup_steps: int) -> dict[str, float]:
    """Medians over the steps after warm-up of the run's own rollout timings in metrics.jsonl:
    ``rollout_seconds`` and, with vLLM, its split (``rollout/<part>_seconds``,
    autolearn/rollout_clock.py). Empty for a run that wrote none (plain TRL, a failed run)."""
    from autolearn.trainer import read_metrics

    rows = [r for r in read_metrics(metrics) if "rollout_seconds" in r]
    rows = [r for r in rows if r.get("step", 0) > warmup_steps]
    keys = ["rollout_seconds"] + [f"rollout/{part}_seconds" for part in SPLIT_PARTS]
    split = {}
    for key in keys:
        median = _median([float(r[key]) for r in rows if r.get(key) is not None])
        if median is not None:
            split[key] = round(median, 3)
    return split


def split_text(split: dict[str, float] | None) -> str:
    """``gen 1.21 / sync 0.00 / ... of 1.40`` for a table cell (—: not measured)."""
    if not split or "rollout/generate_seconds" not in split:
        return "—"
    short = {"generate": "gen", "weight_sync": "sync", "lora_merge": "merge",
             "lora_load": "lora", "sleep_wake": "sleep/wake", "other": "other"}  # fmt: skip
    parts = [
        f"{short[part]} {split[f'rollout/{part}_seconds']:.2f}"
        for part in SPLIT_PARTS
        if f"rollout/{part}_seconds" in split
    ]
    return " / ".join(parts) + f" of {split.get('rollout_seconds', 0.0):.2f}"


def summarise(case: Case, settings: Settings, error: str) -> dict[str, Any]:
    """Turn the recorder's raw numbers into the table's columns."""
    import torch

    rec = RECORDER
    spans = rec.step_spans
    measured = spans[settings.warmup_steps :] if len(spans) > settings.warmup_steps else []
    step_s = [end - start for start, end in measured]
    gen_s = [_in_span(rec.generate_calls, span) for span in measured]
    rollout_s = [_in_span(rec.rollout_calls, span) for span in measured]
    train_logs = [row for row in rec.logs if "loss" in row]
    last = train_logs[-1] if train_logs else {}
    args = rec.trainer_args  # what the trainer really used (Unsloth may change the batch)
    completions = int(args.get("per_device_train_batch_size") or settings.num_generations) * int(
        args.get("gradient_accumulation_steps") or settings.gradient_accumulation_steps
    )
    lengths = [row.get("completions/mean_length") for row in train_logs[settings.warmup_steps :]]
    mean_length = _median([float(x) for x in lengths if x is not None])
    gen_median = _median(gen_s)
    memory = dict(rec.memory)
    if torch.cuda.is_available():
        memory["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / GIB
        memory["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
        if rec.poller is not None:
            memory["device_peak_used_gib"] = rec.poller.stop() / GIB
        start = memory.get("after_init_allocated_gib", 0.0) * GIB
        share = vllm_share_bytes(
            int(start), int(memory.get("weights_gib", 0.0) * GIB), vllm=case.vllm
        )
        memory["vllm_share_gib"] = share / GIB
        memory["train_peak_gib"] = memory["peak_allocated_gib"] - memory["vllm_share_gib"]
    last_end = spans[-1][1] if spans else rec.times["end"]
    return {
        "case": case.number,
        "name": case.name,
        "title": case.title,
        "error": error,
        "steps_done": len(spans),
        "load_s": rec.times.get("load_s"),
        "init_s": rec.times.get("init_done", rec.times["t0"]) - rec.times["t0"],
        "first_step_s": (spans[0][1] - spans[0][0]) if spans else None,
        "step_s": _median(step_s),
        "step_s_all": step_s,
        "generate_s": gen_median,
        "score_s": _median([r - g for r, g in zip(rollout_s, gen_s, strict=True)]),
        "train_s": _median([s - r for s, r in zip(step_s, rollout_s, strict=True)]),
        "completions_per_step": completions,
        "mean_completion_length": mean_length,
        "rollout_tok_s": mean_length * completions / gen_median
        if mean_length and gen_median
        else None,
        "save_s": rec.times["end"] - last_end if spans and not error else None,
        "loss": last.get("loss"),
        "grad_norm": last.get("grad_norm"),
        "reward": last.get("reward"),
        "reward_std": last.get("reward_std"),
        "clipped_ratio": last.get("completions/clipped_ratio"),
        # How far the trainer's log-probabilities are from the vLLM sampler's (vLLM cases).
        "is_ratio_min": last.get("sampling/importance_sampling_ratio/min"),
        "is_ratio_mean": last.get("sampling/importance_sampling_ratio/mean"),
        "logp_diff_mean": last.get("sampling/sampling_logp_difference/mean"),
        "logp_diff_max": last.get("sampling/sampling_logp_difference/max"),
        "grad_norms": [row.get("grad_norm") for row in train_logs],
        "memory": memory,
        "peak_raised_in": rec.phases.raises(),
        "memory_history": rec.memory_history,
        "trainer_args": rec.trainer_args,
    }


# --------------------------------------------------------------------------- model building


def model_config(shape: str, tokenizer: Any, vocab_size: int | None = None) -> Any:
    """The transformers config of a random-weight model of ``shape`` (Qwen3, or Llama for 3B).

    ``vocab_size`` (at least the tokenizer's; default: the tokenizer's) gives the real
    model's embedding and ``lm_head`` sizes while the tokenizer stays the embedded one.
    """
    from transformers import LlamaConfig, Qwen3Config

    config_class = LlamaConfig if shape in LLAMA_SHAPES else Qwen3Config
    return config_class(
        vocab_size=max(vocab_size or 0, len(tokenizer)),
        max_position_embeddings=40960,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="bfloat16",
        **SHAPES[shape],
    )


def build_model(
    shape: str, tokenizer_dir: Path, target: Path, vocab_size: int | None = None
) -> dict[str, float]:
    """Save a random-weight model of ``shape`` (see :func:`model_config`); returns its timings.

    On a GPU the weights are made there in BF16 (``torch.device`` and the default dtype), so
    initialising them is a few normal_ calls on the device; what is left is writing the
    checkpoint (29.5 GB at 14B), which the timings show apart.
    """
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM, Qwen3ForCausalLM

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = model_config(shape, tokenizer, vocab_size)
    model_class = LlamaForCausalLM if shape in LLAMA_SHAPES else Qwen3ForCausalLM
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):  # a 1.7B model takes over 40 s to build on the CPU
            model = model_class(config)
    finally:
        torch.set_default_dtype(previous)
    synchronize()
    built = time.perf_counter()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    timings = {
        "build_s": round(built - started, 1),
        "save_s": round(time.perf_counter() - built, 1),
    }
    params = sum(p.numel() for p in model.parameters())
    logger.info(
        "built %s: %.2f B parameters in %s (%.1f s on %s, %.1f s to save)",
        shape, params / 1e9, target, timings["build_s"], device, timings["save_s"],
    )  # fmt: skip
    return timings


# --------------------------------------------------------------------------- the driver


def child_environment() -> dict[str, str]:
    """Offline, quiet, and what vLLM needs without FlashInfer."""
    env = dict(os.environ)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "VLLM_USE_FLASHINFER_SAMPLER": "0",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (os.environ.get("PYTHONPATH", ""), str(ROOT)) if p
            ),
        }
    )
    return env


def run_child(
    argv: list[str], log_path: Path, timeout_s: float, workdir: Path, script: Path | None = None
) -> int | None:
    """Run ``script`` (default: this one) in a subprocess, appending its output to ``log_path``."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str((script or Path(__file__)).resolve()), *argv]
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n===== {' '.join(argv)}\n")
        log.flush()
        try:
            process = subprocess.run(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,  # Unsloth writes unsloth_compiled_cache/ here
                env=child_environment(),
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            log.write(f"\n===== timed out after {timeout_s:.0f} s\n")
            return None
    return process.returncode


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The shared settings, from the command line."""
    return Settings(
        shape=args.shape,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        steps=args.steps,
        warmup_steps=args.warmup_steps,
        gpu_memory_utilization=args.gpu_memory_utilization,
    )


def case_timeouts(spec: str) -> dict[str, float]:
    """``7=250,unsloth_bf16=180`` as ``{case name: seconds}``."""
    timeouts = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        key, _, seconds = part.partition("=")
        (case,) = select_cases(key)
        timeouts[case.name] = float(seconds)
    return timeouts


def select_cases(spec: str) -> list[Case]:
    """``all`` or a comma-separated list of case numbers or names."""
    if spec == "all":
        return list(CASES)
    chosen = []
    for key in (part.strip() for part in spec.split(",") if part.strip()):
        if key not in CASES_BY_KEY:
            names = ", ".join(f"{c.number}={c.name}" for c in CASES)
            raise SystemExit(f"unknown case {key!r}; cases: {names}")
        chosen.append(CASES_BY_KEY[key])
    return chosen


# Unsloth's switches the cases inherit, and what unset means: the pipeline turns standby on;
# Unsloth picks merged-weight rollouts itself where they apply (16-bit weights, one GPU).
UNSLOTH_SWITCHES = {
    "UNSLOTH_VLLM_STANDBY": "unset (on)",
    "UNSLOTH_VLLM_MERGED_ROLLOUT": "unset (auto)",
}


def environment_report() -> dict[str, Any]:
    """Card, driver and library versions (imports what is installed)."""
    from importlib.metadata import PackageNotFoundError, version

    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "python": platform.python_version(),
    }
    for name in (
        "torch",
        "transformers",
        "trl",
        "peft",
        "accelerate",
        "unsloth",
        "unsloth_zoo",
        "vllm",
        "torchao",
    ):
        try:
            report[name] = version(name)
        except PackageNotFoundError:
            report[name] = None
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        report["gpu"] = smi.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        report["gpu"] = None
    import torch

    report["cuda"] = torch.version.cuda
    for name in UNSLOTH_SWITCHES:
        report[name.lower()] = os.environ.get(name)
    return report


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def results_table(results: list[dict[str, Any]], baseline: dict[str, Any] | None) -> str:
    """Markdown table of the cases, ratios against plain TRL where it ran."""
    head = (
        "| # | case | train peak GiB | x TRL | vLLM share GiB | weights GiB | s/step | x TRL "
        "| gen s | score s | train s | rollout tok/s | first step s | loss | grad norm | reward "
        "| IS ratio mean | rollout split s (median) | note |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    base_mem = (baseline or {}).get("memory", {}).get("train_peak_gib")
    base_step = (baseline or {}).get("step_s")
    lines = []
    for r in results:
        mem = r.get("memory", {})
        peak = mem.get("train_peak_gib")
        mem_ratio = peak / base_mem if peak and base_mem else None
        step_ratio = r["step_s"] / base_step if r.get("step_s") and base_step else None
        note = r.get("error") or ("" if r.get("merged_ok") or r["case"] == 1 else "no merged model")
        lines.append(
            f"| {r['case']} | {r['title']} | {_fmt(peak)} | {_fmt(mem_ratio)} | "
            f"{_fmt(mem.get('vllm_share_gib'))} | {_fmt(mem.get('weights_gib'))} | "
            f"{_fmt(r.get('step_s'))} | {_fmt(step_ratio, 3)} | {_fmt(r.get('generate_s'))} | "
            f"{_fmt(r.get('score_s'))} | {_fmt(r.get('train_s'))} | {_fmt(r.get('rollout_tok_s'), 0)} | "
            f"{_fmt(r.get('first_step_s'), 1)} | {_fmt(r.get('loss'), 4)} | "
            f"{_fmt(r.get('grad_norm'), 4)} | {_fmt(r.get('reward'), 3)} | "
            f"{_fmt(r.get('is_ratio_mean'), 3)} | {split_text(r.get('rollout_split'))} | "
            f"{note.replace('|', '/')[:120]} |"
        )
    return head + "\n".join(lines) + "\n"


def write_report(
    out: Path, settings: Settings, env: dict[str, Any], results: list[dict[str, Any]]
) -> str:
    """Write results.json and results.md; return the markdown."""
    baseline = next((r for r in results if r["case"] == 1 and r.get("step_s")), None)
    table = results_table(results, baseline)
    header = (
        f"GRPO on {env.get('gpu')} | torch {env.get('torch')} (CUDA {env.get('cuda')}) | "
        f"transformers {env.get('transformers')} | trl {env.get('trl')} | peft {env.get('peft')} | "
        f"unsloth {env.get('unsloth')} | vllm {env.get('vllm')} | {env.get('date')}\n\n"
        f"Qwen3-{settings.shape} shape, random weights, {settings.num_generations} completions x "
        f"{settings.max_completion_length} tokens a step, LoRA r={settings.lora_rank}, "
        f"{settings.steps} steps ({settings.warmup_steps} warm-up, median of the rest). "
        + ", ".join(
            f"{name}={env.get(name.lower()) or unset}" for name, unset in UNSLOTH_SWITCHES.items()
        )
        + ".\n\n"
    )
    markdown = header + table
    (out / "results.md").write_text(markdown, encoding="utf-8")
    payload = {"settings": asdict(settings), "environment": env, "results": results}
    (out / "results.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return markdown


def drive(args: argparse.Namespace) -> int:
    """Build the model if needed, run each case in a subprocess, write the report."""
    settings = settings_from_args(args)
    cases = select_cases(args.cases)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir)
    model_dir = work / "models" / settings.shape
    log_path = out / "cases.log"
    if args.dry_run:
        logger.info("plan: %s on %s, settings %s", [c.name for c in cases], model_dir, settings)
        return 0
    common = ["--shape", settings.shape, "--workdir", str(work)]
    if not (model_dir / "config.json").is_file():
        code = run_child(
            ["--build-model", "--tokenizer", str(args.tokenizer), *common],
            log_path,
            args.case_timeout,
            work,
        )
        if code != 0:
            logger.error("building the %s model failed; see %s", settings.shape, log_path)
            return 1
    saving = select_cases(args.save_cases)
    timeouts = case_timeouts(args.case_timeouts)
    results = []
    for case in cases:
        result_path = work / f"{case.name}.json"
        result_path.unlink(missing_ok=True)
        started = time.perf_counter()
        code = run_child(
            [
                "--run-case",
                case.name,
                "--result",
                str(result_path),
                *common,
                *settings_argv(settings),
                *([] if case in saving else ["--no-save"]),
            ],
            log_path,
            timeouts.get(case.name, args.case_timeout),
            work,
        )
        if result_path.is_file():
            result = json.loads(result_path.read_text())
        else:
            why = "timed out" if code is None else f"exit code {code}"
            result = {
                "case": case.number,
                "name": case.name,
                "title": case.title,
                "error": why,
                "memory": {},
            }
            result["step_s"] = None
        result["wall_s"] = time.perf_counter() - started
        results.append(result)
        logger.info(
            "case %d %s: %.0f s, s/step %s, train peak %s GiB %s",
            case.number,
            case.name,
            result["wall_s"],
            _fmt(result.get("step_s")),
            _fmt(result.get("memory", {}).get("train_peak_gib")),
            result.get("error") or "",
        )
        write_report(out, settings, environment_report(), results)  # partial results survive a kill
    if args.include_earlier:
        results = sorted(results + earlier_results(work, cases), key=lambda r: r["case"])
    print(write_report(out, settings, environment_report(), results))
    return 0


def earlier_results(work: Path, ran: list[Case]) -> list[dict[str, Any]]:
    """Results that earlier runs on this machine left in ``work`` for the cases not run now."""
    found = []
    for case in CASES:
        path = work / f"{case.name}.json"
        if case not in ran and path.is_file():
            result = json.loads(path.read_text())
            result["earlier_run"] = True
            found.append(result)
    return found


def settings_argv(settings: Settings) -> list[str]:
    """The command-line flags that reproduce ``settings`` in a child."""
    return [
        "--num-generations",
        str(settings.num_generations),
        "--max-completion-length",
        str(settings.max_completion_length),
        "--steps",
        str(settings.steps),
        "--warmup-steps",
        str(settings.warmup_steps),
        "--gpu-memory-utilization",
        str(settings.gpu_memory_utilization),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cases", default="all", help="all, or numbers/names: 1,7 or trl_bf16,unsloth_fp8"
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1.7b")
    parser.add_argument(
        "--num-generations", type=int, default=8, help="completions per step (one prompt)"
    )
    parser.add_argument("--max-completion-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per case")
    parser.add_argument("--warmup-steps", type=int, default=1, help="steps left out of the timing")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.6, help="vLLM's share")
    parser.add_argument("--case-timeout", type=float, default=300, help="seconds per case")
    parser.add_argument("--out", default=os.environ.get("OUT") or "outputs/gpu_bench")
    parser.add_argument("--workdir", default="/tmp/gpu_bench", help="models, runs, compile caches")
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer dir (default: the embedded one)"
    )
    parser.add_argument(
        "--include-earlier",
        action="store_true",
        help="also report the results earlier runs left in --workdir for the other cases",
    )
    parser.add_argument(
        "--save-cases",
        default="all",
        help="cases that save the adapter and merged model at the end (all, or numbers/names)",
    )
    parser.add_argument(
        "--case-timeouts", default="", help="per-case overrides of --case-timeout: 7=250,6=180"
    )
    parser.add_argument("--no-save", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--build-model", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run-case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps <= args.warmup_steps:
        parser.error("--steps must exceed --warmup-steps")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: the driver, or one of its child roles."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    work = Path(args.workdir)
    model_dir = work / "models" / args.shape
    if args.build_model:
        build_model(args.shape, Path(args.tokenizer), model_dir)
        return 0
    if args.run_case:
        case = CASES_BY_KEY[args.run_case]
        settings = settings_from_args(args)
        output_dir = work / "runs" / case.name
        shutil.rmtree(output_dir, ignore_errors=True)  # a re-run starts afresh
        summary = run_case(case, settings, model_dir, output_dir, save=not args.no_save)
        Path(args.result).write_text(json.dumps(summary, indent=2), encoding="utf-8")
        return 0 if not summary["error"] else 1
    if args.tokenizer is None:
        from autolearn.embedded import embedded_tokenizer_dir

        args.tokenizer = str(embedded_tokenizer_dir())
    return drive(args)


if __name__ == "__main__":
    raise SystemExit(main())
