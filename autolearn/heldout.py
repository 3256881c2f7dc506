"""Held-out evaluation during GRPO training: is the model getting better at the task?

A training reward can rise because the model learned the task or because it learned the
reward. Scoring prompts the run never trains on tells the two apart. With
``training.eval_steps`` N > 0 the trainer evaluates a :class:`HeldOut` set at step 0 (the
baseline, before any update), every N steps and after the last step, and:

* appends one row per evaluation to ``metrics.jsonl``, carrying the step: ``eval/accuracy``
  and ``eval/format`` (math: the ``correctness`` reward's verdict, and the share of
  completions in the clean ``<think>``/``<answer>`` layout), ``eval/pass@1`` and ``pass@k``
  (code, run in the sandbox through :mod:`autolearn.evaluation`), or ``eval/reward`` and one
  ``eval/<reward>`` per reward (bench), plus ``eval/seconds``;
* keeps the adapter that scored best in ``best/``, its step and score in ``best.json``;
* ends the run with one line such as ``held-out accuracy 0.03 -> 0.41 (best 0.44 at step 80),
  format 0.10 -> 0.95``.

Completions come from the rollout engine: Unsloth's vLLM engine (``fast_generate`` with the
live LoRA weights), TRL's colocated vLLM (synced to the current weights as TRL does), or
batched ``generate``. Greedy by default; ``eval_num_samples`` > 1 samples at the training
temperature and adds pass@k. A resumed run keeps the earlier rows (``metrics.jsonl`` is
trimmed to the checkpoint first) and does not evaluate a step twice.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolearn.errors import UserError

logger = logging.getLogger(__name__)

KINDS = ("math", "code", "bench")
PRIMARY = {"math": "eval/accuracy", "code": "eval/pass@1", "bench": "eval/reward"}
HF_GENERATE_BATCH = 16
RewardFn = Callable[..., Sequence[float | None]]


@dataclass
class HeldOut:
    """Prompts held out of training and how to score completions of them.

    ``dataset`` has a chat ``prompt`` column plus the columns the rewards read; ``problems``
    maps task ids to :class:`~autolearn.code_data.CodeProblem` for code.
    """

    kind: str
    dataset: Any
    problems: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Reject an unknown kind (a programming error, not a user one)."""
        if self.kind not in KINDS:
            raise ValueError(f"held-out kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def metric(self) -> str:
        """The metric ``best/`` is chosen by."""
        return PRIMARY[self.kind]


def require_heldout(eval_steps: int, heldout: HeldOut | None, how: str) -> None:
    """``eval_steps`` without a held-out split is a one-line error saying how to get one."""
    if eval_steps > 0 and (heldout is None or len(heldout.dataset) == 0):
        raise UserError(f"training.eval_steps {eval_steps} needs held-out problems: {how}")


def split_heldout_rows(rows: Any, eval_fraction: float, seed: int) -> tuple[Any, Any | None]:
    """(train, held-out) of a ``datasets.Dataset``: a seeded random ``eval_fraction`` held out."""
    if eval_fraction <= 0.0:
        return rows, None
    if len(rows) < 2:
        raise UserError("dataset.eval_fraction needs at least 2 rows to hold any out")
    count = min(len(rows) - 1, max(1, round(len(rows) * eval_fraction)))
    parts = rows.train_test_split(test_size=count, seed=seed, shuffle=True)
    logger.info(
        "held out %d of %d problems for evaluation (eval_fraction %g, seed %d)",
        count,
        len(rows),
        eval_fraction,
        seed,
    )
    return parts["train"], parts["test"]


def cap_prompts(dataset: Any, max_prompts: int) -> Any:
    """The first ``max_prompts`` held-out rows (they are already a seeded random choice)."""
    return dataset.select(range(max_prompts)) if len(dataset) > max_prompts else dataset


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class Sampling:
    """How held-out completions are drawn."""

    num_samples: int
    max_new_tokens: int
    temperature: float
    top_p: float

    @property
    def greedy(self) -> bool:
        """One completion per prompt is the greedy one."""
        return self.num_samples == 1


def generate(trainer: Any, tm: Any, prompts: Sequence[Any], sampling: Sampling) -> list[str]:
    """``num_samples`` completions per prompt, grouped by prompt, through the rollout engine."""
    if tm.vllm and tm.backend == "unsloth":
        return _generate_unsloth(tm, prompts, sampling)
    vllm = getattr(trainer, "vllm_generation", None)
    if tm.vllm and getattr(vllm, "llm", None) is not None:
        return _generate_trl_vllm(trainer, prompts, sampling)
    return _generate_hf(trainer, tm.tokenizer, prompts, sampling)


def _vllm_params(sampling: Sampling) -> Any:
    from vllm import SamplingParams

    return SamplingParams(
        n=sampling.num_samples,
        temperature=0.0 if sampling.greedy else sampling.temperature,
        top_p=1.0 if sampling.greedy else sampling.top_p,
        max_tokens=sampling.max_new_tokens,
    )


def _chat_texts(tokenizer: Any, prompts: Sequence[Any]) -> list[str]:
    return [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]


def _generate_unsloth(tm: Any, prompts: Sequence[Any], sampling: Sampling) -> list[str]:
    """Unsloth's colocated vLLM, given the live LoRA weights as Unsloth's GRPO trainer does."""
    lora = tm.model.load_lora("autolearn_heldout_lora", load_tensors=True)
    outputs = tm.model.fast_generate(
        _chat_texts(tm.tokenizer, prompts),
        sampling_params=_vllm_params(sampling),
        lora_request=lora,
        use_tqdm=False,
    )
    return [choice.text for output in outputs for choice in output.outputs]


def _generate_trl_vllm(trainer: Any, prompts: Sequence[Any], sampling: Sampling) -> list[str]:
    """TRL's colocated vLLM engine, first synced to the current weights the way TRL does."""
    vllm = trainer.vllm_generation
    if trainer.state.global_step != getattr(trainer, "_last_loaded_step", None):
        vllm.sync_weights()
        trainer._last_loaded_step = trainer.state.global_step
    tokenizer = trainer.processing_class
    ids = [
        tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True) for p in prompts
    ]
    ids = [i["input_ids"] if hasattr(i, "keys") else i for i in ids]
    outputs = vllm.llm.generate(
        [{"prompt_token_ids": list(i)} for i in ids],
        sampling_params=_vllm_params(sampling),
        use_tqdm=False,
    )
    return [choice.text for output in outputs for choice in output.outputs]


def _generate_hf(
    trainer: Any, tokenizer: Any, prompts: Sequence[Any], sampling: Sampling
) -> list[str]:
    """Batched, left-padded ``generate`` on the training model (LoRA applied), no gradients."""
    import torch

    model = trainer.accelerator.unwrap_model(trainer.model)
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    texts = _chat_texts(tokenizer, prompts)
    options: dict[str, Any] = {"do_sample": False}
    if not sampling.greedy:
        options = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p}
    completions: list[str] = []
    try:
        with torch.no_grad():
            for start in range(0, len(texts), HF_GENERATE_BATCH):
                batch = tokenizer(
                    texts[start : start + HF_GENERATE_BATCH],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                ).to(trainer.accelerator.device)
                output = model.generate(
                    **batch,
                    max_new_tokens=sampling.max_new_tokens,
                    num_return_sequences=sampling.num_samples,
                    pad_token_id=tokenizer.pad_token_id,
                    **options,
                )
                new_tokens = output[:, batch["input_ids"].shape[1] :]
                completions.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return completions


# --------------------------------------------------------------------------- scoring


def _columns(rows: Sequence[Mapping[str, Any]], repeat: int) -> dict[str, list[Any]]:
    """Dataset columns (without the prompt) repeated once per completion, as TRL passes them."""
    names = [k for k in rows[0] if k != "prompt"] if rows else []
    return {name: [row[name] for row in rows for _ in range(repeat)] for name in names}


def _as_chat(texts: Sequence[str]) -> list[list[dict[str, str]]]:
    return [[{"role": "assistant", "content": text}] for text in texts]


def _pass_at_k(verdicts: Sequence[bool], repeat: int) -> dict[str, float]:
    """``eval/pass@1`` and ``eval/pass@n`` from per-completion verdicts grouped by prompt."""
    from autolearn.evaluation import pass_at_k_table

    counts = {
        str(i): (repeat, sum(verdicts[i * repeat : (i + 1) * repeat]))
        for i in range(len(verdicts) // repeat)
    }
    ks = sorted({1, repeat})
    return {f"eval/{k}": round(v, 4) for k, v in pass_at_k_table(counts, ks).named().items()}


def score_math(
    texts: Sequence[str], rows: Sequence[Mapping[str, Any]], repeat: int
) -> dict[str, float]:
    """Accuracy (the ``correctness`` verdict) and the share of clean ``<think>/<answer>`` layouts."""
    import rewards

    columns = _columns(rows, repeat)
    completions = _as_chat(texts)
    correct = [c >= 1.0 for c in rewards.correctness(None, completions, **columns)]
    clean = [x >= 1.0 for x in rewards.xml_format(None, completions)]
    metrics = {
        "eval/accuracy": round(statistics.fmean(correct), 4),
        "eval/format": round(statistics.fmean(clean), 4),
    }
    if repeat > 1:
        metrics.update(_pass_at_k(correct, repeat))
    return metrics


def score_code(
    texts: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    repeat: int,
    problems: Mapping[str, Any],
) -> dict[str, float]:
    """pass@1 (and pass@n when sampling), every program run against its tests in the sandbox."""
    from autolearn.evaluation import Sample, score_samples

    task_ids = [row["task_id"] for row in rows for _ in range(repeat)]
    scored = score_samples(
        [Sample(task, text) for task, text in zip(task_ids, texts, strict=True)],
        problems,
        progress=False,
    )
    return _pass_at_k([s.passed for s in scored], repeat)


def score_with_rewards(
    texts: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    repeat: int,
    functions: Sequence[RewardFn],
    weights: Sequence[float],
) -> dict[str, float]:
    """``eval/<reward>`` (mean) for every reward and ``eval/reward``, their weighted sum."""
    columns = _columns(rows, repeat)
    prompts = [row["prompt"] for row in rows for _ in range(repeat)]
    completions = _as_chat(texts)
    metrics: dict[str, float] = {}
    total = [0.0] * len(texts)
    for function, weight in zip(functions, weights, strict=True):
        scores = list(function(prompts=prompts, completions=completions, **columns))
        values = [s for s in scores if s is not None]
        metrics[f"eval/{function.__name__}"] = round(statistics.fmean(values), 4) if values else 0.0
        total = [t + weight * (s or 0.0) for t, s in zip(total, scores, strict=True)]
    metrics["eval/reward"] = round(statistics.fmean(total), 4)
    return metrics


# --------------------------------------------------------------------------- the evaluator


def is_eval_row(row: Mapping[str, Any]) -> bool:
    """Whether a ``metrics.jsonl`` row is a held-out evaluation (it has ``eval/`` metrics)."""
    return any(k.startswith("eval/") for k in row)


def read_eval_rows(metrics_path: Path) -> list[dict[str, Any]]:
    """The evaluation rows of ``metrics.jsonl``, in file order."""
    from autolearn.trainer import read_metrics

    return [r for r in read_metrics(metrics_path) if is_eval_row(r)]


@dataclass
class Evaluator:
    """Runs the held-out evaluation for one training run and keeps its history."""

    heldout: HeldOut
    output_dir: Path
    sampling: Sampling
    eval_steps: int
    reward_functions: Sequence[RewardFn] = ()
    reward_weights: Sequence[float] = ()
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    train_started: float = 0.0

    @property
    def metrics_path(self) -> Path:
        """Where the rows go: the run's ``metrics.jsonl``."""
        return self.output_dir / "metrics.jsonl"

    def restore(self) -> None:
        """Pick up the rows of an earlier part of this run (after ``--resume``)."""
        self.history = read_eval_rows(self.metrics_path)
        best = self.best()
        best_file = self.output_dir / "best.json"
        if best_file.is_file():
            saved = json.loads(best_file.read_text(encoding="utf-8"))
            if best is None or saved.get("step") != best["step"]:
                # best/ came from a step the resumed run no longer has: drop it, re-earn it
                shutil.rmtree(self.output_dir / "best", ignore_errors=True)
                best_file.unlink()

    def evaluated(self, step: int) -> bool:
        """Whether ``step`` already has a row."""
        return any(row["step"] == step for row in self.history)

    def due(self, step: int, max_steps: int) -> bool:
        """Every ``eval_steps`` steps, and after the last one."""
        return not self.evaluated(step) and (step % self.eval_steps == 0 or step >= max_steps)

    def score(self, texts: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """The held-out metrics of ``texts`` (``num_samples`` per row, grouped by row)."""
        repeat = self.sampling.num_samples
        if self.heldout.kind == "math":
            return score_math(texts, rows, repeat)
        if self.heldout.kind == "code":
            return score_code(texts, rows, repeat, self.heldout.problems)
        return score_with_rewards(texts, rows, repeat, self.reward_functions, self.reward_weights)

    def run(self, trainer: Any, tm: Any, step: int) -> dict[str, Any] | None:
        """Evaluate now (every process takes part); the row on the main process, else ``None``."""
        started = time.perf_counter()
        rows = list(self.heldout.dataset)
        texts = _generate_sharded(trainer, tm, rows, self.sampling)
        primary = trainer.is_world_process_zero()
        metrics = self.score(texts, rows) if primary else None
        metrics = _broadcast(trainer, metrics)
        seconds = time.perf_counter() - started
        self.seconds += seconds
        row: dict[str, Any] = {
            "step": step,
            **metrics,
            "eval/prompts": len(rows),
            "eval/samples": len(texts),
            "eval/seconds": round(seconds, 3),
        }
        improved = self._improves(row)
        self.history.append(row)
        if improved:
            self._keep_best(trainer, row)
        if not primary:
            return None
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        logger.info(
            "held-out at step %d: %s (%.1f s)",
            step,
            ", ".join(f"{k.removeprefix('eval/')} {v:.3f}" for k, v in metrics.items()),
            seconds,
        )
        return row

    def best(self) -> dict[str, Any] | None:
        """The row with the highest main metric (the earliest among equals)."""
        scored = [r for r in self.history if r.get(self.heldout.metric) is not None]
        return max(scored, key=lambda r: (r[self.heldout.metric], -r["step"])) if scored else None

    def _improves(self, row: Mapping[str, Any]) -> bool:
        best = self.best()
        return best is None or row[self.heldout.metric] > best[self.heldout.metric]

    def _keep_best(self, trainer: Any, row: Mapping[str, Any]) -> None:
        """Save the adapter to ``best/`` and its step and score to ``best.json``."""
        best_dir = self.output_dir / "best"
        trainer.save_model(str(best_dir))  # collective under FSDP; the main process writes
        if trainer.is_world_process_zero():
            record = {
                "step": row["step"],
                "metric": self.heldout.metric,
                "score": row[self.heldout.metric],
            }
            (self.output_dir / "best.json").write_text(
                json.dumps(record, indent=2) + "\n", encoding="utf-8"
            )

    def summary_line(self) -> str | None:
        """``held-out accuracy 0.03 -> 0.41 (best 0.44 at step 80)``, or ``None`` before any row."""
        if not self.history:
            return None
        key = self.heldout.metric
        first, last, best = self.history[0], self.history[-1], self.best()
        name = key.removeprefix("eval/")
        line = f"held-out {name} {first[key]:.2f} -> {last[key]:.2f}"
        if best is not None:
            line += f" (best {best[key]:.2f} at step {best['step']})"
        if "eval/format" in first and "eval/format" in last:
            line += f", format {first['eval/format']:.2f} -> {last['eval/format']:.2f}"
        return line

    def time_share(self, wall_seconds: float) -> str:
        """How much of the run the evaluations took, as a phrase for the log."""
        share = self.seconds / wall_seconds if wall_seconds > 0 else math.nan
        return f"evaluation took {self.seconds:.1f} s of {wall_seconds:.1f} s ({share:.0%})"


def _generate_sharded(
    trainer: Any, tm: Any, rows: Sequence[Mapping[str, Any]], sampling: Sampling
) -> list[str]:
    """Each process generates for its share of the prompts; every process gets all texts."""
    world = trainer.accelerator.num_processes
    rank = trainer.accelerator.process_index
    mine = list(range(rank, len(rows), world))
    texts = generate(trainer, tm, [rows[i]["prompt"] for i in mine], sampling) if mine else []
    n = sampling.num_samples
    pairs = [(i, texts[j * n : (j + 1) * n]) for j, i in enumerate(mine)]
    if world > 1:
        from accelerate.utils import gather_object

        pairs = gather_object(pairs)
    return [text for _, group in sorted(pairs, key=lambda p: p[0]) for text in group]


def _broadcast(trainer: Any, metrics: dict[str, float] | None) -> dict[str, float]:
    """The main process's metrics, on every process (so all agree on ``best/``)."""
    if trainer.accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        metrics = broadcast_object_list([metrics], from_process=0)[0]
    assert metrics is not None
    return metrics


def make_callback(evaluator: Evaluator, trainer: Any, tm: Any) -> Any:
    """The trainer callback that runs ``evaluator`` at step 0, every N steps and at the end."""
    from transformers.trainer_callback import TrainerCallback

    class HeldOutCallback(TrainerCallback):
        """Held-out evaluation hooked into the training loop."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            evaluator.train_started = time.perf_counter()
            if state.global_step == 0 and not evaluator.evaluated(0):
                evaluator.run(trainer, tm, 0)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step = state.global_step
            # a run stopped early (Ctrl-C) is evaluated where it stops, like one that ends
            last = state.max_steps if not control.should_training_stop else step
            if evaluator.due(step, last):
                evaluator.run(trainer, tm, step)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            line = evaluator.summary_line()
            if line is not None:
                wall = time.perf_counter() - evaluator.train_started
                logger.info("%s; %s", line, evaluator.time_share(wall))

    return HeldOutCallback()


def build_evaluator(
    heldout: HeldOut,
    config: Any,
    *,
    reward_functions: Sequence[RewardFn] = (),
    reward_weights: Sequence[float] = (),
) -> Evaluator:
    """The evaluator a run's config asks for (``training.eval_*``), history restored."""
    t = config.training
    evaluator = Evaluator(
        heldout=heldout,
        output_dir=Path(t.output_dir),
        sampling=Sampling(
            num_samples=t.eval_num_samples,
            max_new_tokens=t.max_completion_length,
            temperature=t.temperature,
            top_p=t.top_p,
        ),
        eval_steps=t.eval_steps,
        reward_functions=reward_functions,
        reward_weights=reward_weights,
    )
    evaluator.restore()
    return evaluator


# --------------------------------------------------------------------------- plot


def draw_heldout(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Draw every held-out score against the step on ``ax`` (a panel of the reward plot)."""
    from matplotlib.ticker import MaxNLocator

    keys = sorted(
        {
            k
            for r in rows
            for k, v in r.items()
            if k.startswith("eval/")
            and k not in ("eval/seconds", "eval/prompts", "eval/samples")
            and isinstance(v, (int, float))
        }
    )
    if not rows or not keys:
        return
    steps = [r["step"] for r in rows]
    for key in keys:
        ax.plot(steps, [r.get(key, math.nan) for r in rows], marker="o", label=key[5:])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("held-out score")
    ax.set_title("held-out evaluation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
