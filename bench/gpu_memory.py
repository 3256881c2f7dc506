"""Emulate the product spec's VRAM table on one big GPU with ``model.gpu_memory_gb``.

Each case is a model shape, a precision and a budget (``8b:fp8:16``): a random-weight model
of the real shape (real vocabulary size, the embedded tokenizer) is built once on the GPU and
saved, then trained for ``--steps`` GRPO steps through the project's pipeline
(``autolearn.pipeline.run_training``) with the budget set: Unsloth FP8 + vLLM for fp8 and
Unsloth BF16 + vLLM for bf16, LoRA r=16, one prompt of about 256 tokens x 8 completions of
512 tokens a step. Each case runs in its own subprocess (``bench/gpu_grpo.py``'s driver, whose
measurements it reuses), so a crash or an OOM ends that case only.

Per case it records: fits / OOM / refused by the planner / over budget / timed out, the
device-wide peak (``cudaMemGetInfo`` polled every 50 ms from just before the model loads to
the end, every allocator, by this script's own poller), the metrics' own memory fields (the
library's device-wide peak, sampled from the same point, as ``device_peak_metrics_gb``, with a
warning when the two differ by more than 0.1 GB), s/step (median after warm-up),
rollout tok/s and the median split of the rollout (the engine's generate call, weight sync,
LoRA, sleep/wake, the rest: metrics.jsonl's ``rollout/*``), and the plan the run made. The
driver's planner estimate comes from the same Config the case trains with
(:func:`case_config` through ``autolearn.memory_plan.workload_for``); ``estimate_drift_gb``
says how far the run's own plan was from it (0 unless they drifted apart). "fits" means all
steps ran and the device-wide peak stayed within the budget. The first case of each model
also records how long building its checkpoint took (making the weights, saving them).

Cases run cheapest first (the spec's table, FP8 before BF16 of each model); every model is
built once and shared by its precisions, and removed after its last case (the disk holds one
14B model at a time). A case is skipped when a case of the same model already failed at a
budget at least as large in the same or a cheaper precision. ``--bisect`` looks for the
smallest budget of each model/precision in ``--bisect-runs`` runs, starting from the case's
budget and then the measured peak. Results (``results.json``, ``results.md``, ``cases.log``)
are rewritten to ``--export`` after every case. Each case also says which phase of which step
(rollout or training) raised torch's peak allocation; ``--memory-history STEP`` records torch's
allocation history for one step and lists what was alive at its peak, by the line of code that
allocated it (``bench/memory_history.py``).

    python bench/gpu_memory.py --export "$OUT"                          # the spec's table
    python bench/gpu_memory.py --cases 1.7b:fp8:5,8b:bf16:24 --budget-override --export "$OUT"
    python bench/gpu_memory.py --cases 8b:fp8:16 --bisect --budget-override --export "$OUT"
    python bench/gpu_memory.py --cases 14b:fp8:24 --micro-batch 2 --export "$OUT"  # 2 a pass
    python bench/gpu_memory.py --cases 14b:fp8:40 --memory-history 2 --export "$OUT"  # who holds it
    python bench/gpu_memory.py --cases 14b:fp8:24 --build-only          # the 14B model only, kept
    python bench/gpu_memory.py --dry-run                                # the planner's estimates
    python bench/gpu_memory.py --smoke --tokenizer DIR --export /tmp/x  # CPU check of the logic
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import gpu_grpo  # noqa: E402  (after the sys.path line above)
from bench.gpu_grpo import (  # noqa: E402
    Case,
    Settings,
    _fmt,
    environment_report,
    run_child,
    split_text,
)

logger = logging.getLogger("bench.gpu_memory")

# The spec's rows: our shape, the real vocabulary, the name, and the spec's budgets (GB).
MODELS: dict[str, dict[str, Any]] = {
    "tiny": {"shape": "tiny", "vocab": None, "title": "tiny (CPU check)", "bf16": 2, "fp8": 2},
    "1.7b": {"shape": "1.7b", "vocab": 151936, "title": "Qwen3-1.7B", "bf16": 8, "fp8": 5},
    "3b": {"shape": "3b", "vocab": 128256, "title": "Llama-3.2-3B", "bf16": 12, "fp8": 8},
    "8b": {"shape": "8b", "vocab": 151936, "title": "Qwen3-8B", "bf16": 24, "fp8": 16},
    "14b": {"shape": "14b", "vocab": 151936, "title": "Qwen3-14B", "bf16": 40, "fp8": 24},
}
SPEC_ORDER = ["1.7b", "3b", "8b", "14b"]
PRECISIONS = ("fp8", "bf16")  # cheaper first
FAILED = ("OOM", "refused", "over budget")  # a larger budget might do; a smaller one would not
OOM_MARKERS = (
    "out of memory",
    "outofmemoryerror",
    "no available memory for the cache blocks",
    "less than desired gpu memory utilization",
    "bad_alloc",
    "cudaerrormemoryallocation",
)


@dataclass(frozen=True)
class MemCase:
    """One cell: a model, a precision and a budget in GB."""

    model: str
    precision: str
    budget_gb: float

    @property
    def key(self) -> str:
        """``8b:fp8:16``."""
        return f"{self.model}:{self.precision}:{self.budget_gb:g}"


@dataclass(frozen=True)
class CaseWorkload:
    """What every case trains (the issue's workload)."""

    num_generations: int = 8
    prompt_tokens: int = 256
    completion_tokens: int = 512
    steps: int = 5
    warmup_steps: int = 1
    lora_rank: int = 16
    backend: str = "unsloth"  # transformers for the CPU check
    vllm: bool = True
    micro_batch: int = 0  # completions in one forward/backward (0: all of a step's at once)
    memory_history_step: int = 0  # record torch's allocation history in this step (0: none)

    @property
    def train_rows(self) -> int:
        """Completions in one forward/backward; the rest of a step's come by accumulation."""
        return self.micro_batch or self.num_generations


def parse_cases(spec: str) -> list[MemCase]:
    """``spec`` (the spec's table), or ``1.7b:fp8:5,8b:bf16`` (a missing budget: the spec's)."""
    if spec == "spec":
        return [MemCase(m, p, float(MODELS[m][p])) for m in SPEC_ORDER for p in PRECISIONS]
    cases = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        model, _, rest = part.partition(":")
        precision, _, budget = rest.partition(":")
        if model not in MODELS or precision not in PRECISIONS:
            raise SystemExit(
                f"bad case {part!r}: MODEL:PRECISION[:GB] with MODEL in {', '.join(MODELS)} "
                f"and PRECISION fp8 or bf16"
            )
        try:
            gb = float(budget) if budget else float(MODELS[model][precision])
        except ValueError:
            raise SystemExit(f"bad budget in case {part!r}: {budget!r}") from None
        cases.append(MemCase(model, precision, gb))
    return cases


def cheapest_first(cases: list[MemCase]) -> list[MemCase]:
    """Models in size order, each model's cases together (one build), FP8 first, small budgets first."""
    order = list(MODELS)
    return sorted(
        cases, key=lambda c: (order.index(c.model), PRECISIONS.index(c.precision), c.budget_gb)
    )


def doomed_by(case: MemCase, failures: list[MemCase]) -> MemCase | None:
    """A failed case that rules this one out: same model, budget at least as large, and the
    same precision or FP8 (which needs less than BF16)."""
    for failed in failures:
        cheaper_or_same = failed.precision in (case.precision, "fp8")
        if failed.model == case.model and failed.budget_gb >= case.budget_gb and cheaper_or_same:
            return failed
    return None


def next_bisect_budget(
    tried: list[tuple[float, bool, float | None]], step_gb: float = 0.5
) -> float | None:
    """The next budget to try from ``(budget, fits, device peak GB)`` tries, or None when done.

    After a fit, try just above its measured peak (rounded up to ``step_gb``) if that is
    lower; after a failure, halfway to the smallest fit, or 1.5x the largest failure.
    Stops when the bracket is within ``step_gb``.
    """
    fits = [b for b, ok, _ in tried if ok]
    fails = [b for b, ok, _ in tried if not ok]
    hi = min(fits) if fits else None
    lo = max((b for b in fails if hi is None or b < hi), default=None)
    if hi is not None:
        peak = next((p for b, ok, p in tried if ok and b == hi), None)
        floor = lo if lo is not None else 0.0
        if peak is not None:
            candidate = math.ceil(peak / step_gb) * step_gb
            if floor < candidate < hi - step_gb / 2 and candidate not in [b for b, _, _ in tried]:
                return candidate
        if lo is None or hi - lo <= step_gb:
            return None
        return round(((lo + hi) / 2) / step_gb) * step_gb or None
    return math.ceil(max(fails) * 1.5 / step_gb) * step_gb


# --------------------------------------------------------------------------- the child


def long_prompts(tokenizer: Any, tokens: int, rows: int = 32) -> Any:
    """Chat prompts of at most ``tokens`` tokens as the pipeline counts them, close to it."""
    from datasets import Dataset

    from autolearn.data import prompt_token_length

    words = ["river", "stone", "bread", "comet", "chess", "rain", "bridge", "owl", "maple"]

    def prompt(row: int) -> list[dict[str, str]]:
        count = tokens
        while True:
            text = " ".join(words[(row + j) % len(words)] for j in range(count))
            chat = [{"role": "user", "content": f"Story {row}: {text}"}]
            excess = prompt_token_length(tokenizer, chat) - tokens
            if excess <= 0 or count <= 1:
                return chat
            count = max(count - excess, 1)

    return Dataset.from_list([{"prompt": prompt(i)} for i in range(rows)])


def case_settings(model: str, w: CaseWorkload) -> Settings:
    """gpu_grpo's settings for this workload."""
    return Settings(
        shape=MODELS[model]["shape"],
        num_generations=w.num_generations,
        max_completion_length=w.completion_tokens,
        steps=w.steps,
        warmup_steps=w.warmup_steps,
        lora_rank=w.lora_rank,
        max_seq_length=w.prompt_tokens + w.completion_tokens + 64,
    )


def pipeline_case(precision: str, w: CaseWorkload) -> Case:
    """gpu_grpo's case for this precision and backend."""
    fp8 = precision == "fp8"
    name = f"{w.backend}_{precision}" + ("_vllm" if w.vllm else "")
    return Case(0, name, name, w.backend, fp8, w.vllm)


def case_config(case: MemCase, w: CaseWorkload, model_dir: Path, output_dir: Path) -> Any:
    """The project Config a case trains with: gpu_grpo's, with the budget and prompt length.

    The driver's planner estimate is computed from this same Config (:func:`estimate_gb`).
    """
    settings = case_settings(case.model, w)
    config = gpu_grpo.pipeline_config(
        pipeline_case(case.precision, w), settings, model_dir, output_dir
    )
    config.model.gpu_memory_gb = case.budget_gb
    config.training.max_prompt_length = w.prompt_tokens
    # The same completions a step, in micro-batches of train_rows (TRL's generation batch is
    # per_device_train_batch_size x gradient_accumulation_steps).
    config.training.per_device_train_batch_size = w.train_rows
    config.training.gradient_accumulation_steps = w.num_generations // w.train_rows
    return config


def read_json(path: Path) -> Any:
    """A JSON file, or None if it is missing or broken."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def last_memory_row(metrics: Path) -> dict[str, Any]:
    """The gpu_* fields of the last metrics.jsonl row that has them."""
    from autolearn.trainer import read_metrics

    rows = [{k: v for k, v in r.items() if k.startswith("gpu_")} for r in read_metrics(metrics)]
    return next((fields for fields in reversed(rows) if fields), {})


def run_one(
    case: MemCase, w: CaseWorkload, model_dir: Path, output_dir: Path, force: bool
) -> dict[str, Any]:
    """Train one case in this process; the summary gpu_grpo writes, plus the budget's figures."""
    import torch

    from autolearn import pipeline
    from autolearn.gpu_memory import GIB, DeviceMemoryPoller
    from autolearn.models import load_tokenizer

    # This script's own poller, from the same point as the library's (metrics.jsonl's
    # gpu_device_peak_gib): an independent check of that figure (check_device_peak).
    poller: list[DeviceMemoryPoller] = []
    load = pipeline.load_training_model

    def load_with_poller(*args: Any, **kwargs: Any) -> Any:
        if torch.cuda.is_available():  # after the planner, which made the CUDA context
            poller.append(DeviceMemoryPoller().start())
        return load(*args, **kwargs)

    pipeline.load_training_model = load_with_poller
    gpu_grpo.RECORDER.memory_history_step = w.memory_history_step
    settings = case_settings(case.model, w)
    pcase = pipeline_case(case.precision, w)
    config = case_config(case, w, model_dir, output_dir)
    pipeline.choose_backend(config)  # Unsloth (standby off: a budget is set) before transformers
    dataset = long_prompts(load_tokenizer(str(model_dir)), w.prompt_tokens)
    summary = gpu_grpo.run_case(
        pcase,
        settings,
        model_dir,
        output_dir,
        save=False,
        config=config,
        dataset=dataset,
        force_budget=force,
    )
    peak = poller[0].stop() if poller else None
    run = read_json(output_dir / "run.json") or {}
    summary.update(
        case=case.key,
        model=case.model,
        precision=case.precision,
        budget_gb=case.budget_gb,
        device_peak_gb=peak / 1e9 if peak is not None else None,
        device_peak_gib=peak / GIB if peak is not None else None,
        plan=run.get("memory_plan"),
        metrics_memory=last_memory_row(output_dir / "metrics.jsonl"),
    )
    check_device_peak(summary)
    summary["status"] = case_status(summary, w.steps, log_tail=summary.get("error") or "")
    return summary


def check_device_peak(result: dict[str, Any], tolerance_gb: float = 0.1) -> None:
    """Put the library's device-wide peak beside this script's own, and warn if they differ.

    The library's is the last metrics row's ``gpu_device_peak_gib``, recorded in GB as
    ``device_peak_metrics_gb``; both sample from just before the load. A case that failed is
    not compared: its last row predates the failure.
    """
    from autolearn.gpu_memory import GIB

    gib = (result.get("metrics_memory") or {}).get("gpu_device_peak_gib")
    result["device_peak_metrics_gb"] = gib * GIB / 1e9 if gib is not None else None
    ours, theirs = result.get("device_peak_gb"), result["device_peak_metrics_gb"]
    if result.get("error") or ours is None or theirs is None:
        return
    if abs(ours - theirs) > tolerance_gb:
        logger.warning(
            "%s: metrics.jsonl's device-wide peak %.2f GB, the benchmark's own %.2f GB",
            result.get("case"), theirs, ours,
        )  # fmt: skip


def case_status(result: dict[str, Any], steps: int, log_tail: str = "") -> str:
    """fits | over budget | OOM | refused | timed out | error."""
    error = str(result.get("error") or "")
    text = f"{error}\n{log_tail}".lower()
    if "cannot hold" in error and "UserError" in error:
        return "refused"
    if "timed out" in error:
        return "timed out"
    if any(marker in text for marker in OOM_MARKERS):
        return "OOM"
    if error or (result.get("steps_done") or 0) < steps:
        return "error"
    peak = result.get("device_peak_gb")
    if peak is not None and peak > float(result["budget_gb"]):
        return "over budget"
    return "fits"


# --------------------------------------------------------------------------- the driver


def shape_of_case(model: str, tokenizer: Any) -> Any:
    """The planner's ModelShape of a model row: the transformers config the build saves."""
    from autolearn.memory_plan import ModelShape

    row = MODELS[model]
    return ModelShape.from_config(gpu_grpo.model_config(row["shape"], tokenizer, row["vocab"]))


def estimate_gb(case: MemCase, w: CaseWorkload, tokenizer: Any) -> float:
    """The planner's estimate for a case in GB, as the pipeline computes it on the GPU.

    The workload comes from the case's own Config (:func:`case_config`) through
    ``autolearn.memory_plan.workload_for``, with the rollout engine the GPU machine resolves
    (vLLM installed there); only the model's shape is taken from the build's config instead
    of the saved ``config.json``, so that ``--dry-run`` needs no model.
    """
    from autolearn.memory_plan import GB, estimate, workload_for
    from autolearn.pipeline import vllm_engine

    config = case_config(case, w, Path("/not-read") / case.model, Path("/not-written"))
    engine = vllm_engine(config, w.backend, vllm_usable=w.vllm)
    workload = workload_for(config, engine=engine, backend=w.backend)
    return estimate(shape_of_case(case.model, tokenizer), workload).total / GB


class Driver:
    """Runs the cases one subprocess each and keeps the report current."""

    def __init__(self, args: argparse.Namespace, workload: CaseWorkload) -> None:
        self.args = args
        self.w = workload
        self.work = Path(args.workdir)
        self.export = Path(args.export)
        self.export.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = self.export / "cases.log"
        self.results: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.env = environment_report()
        from autolearn.models import load_tokenizer

        self.tokenizer = load_tokenizer(args.tokenizer)
        self.builds: dict[str, dict[str, float]] = {}  # build timings, for the model's first case

    def model_dir(self, model: str) -> Path:
        """Where a model row's random-weight checkpoint lives."""
        return self.work / "models" / model

    def remove_model(self, model: str) -> None:
        """Delete a model's checkpoint and any half-written build of it (up to 29.5 GB at 14B)."""
        shutil.rmtree(self.model_dir(model), ignore_errors=True)
        shutil.rmtree(partial_build_dir(self.model_dir(model)), ignore_errors=True)

    def remaining_s(self) -> float:
        """Seconds left of ``--time-budget``."""
        return self.args.time_budget - (time.monotonic() - self.started)

    def build(self, model: str) -> bool:
        """Build the model row's checkpoint unless it is there."""
        target = self.model_dir(model)
        if (target / "config.json").is_file():
            return True
        shutil.rmtree(target, ignore_errors=True)
        argv = ["--build", model, "--tokenizer", self.args.tokenizer, "--workdir", str(self.work)]
        started = time.perf_counter()
        code = run_child(
            argv,
            self.log,
            min(self.args.case_timeout, self.remaining_s()),
            self.work,
            Path(__file__),
        )
        if code != 0 or not (target / "config.json").is_file():
            logger.error("building %s failed (exit %s); see %s", model, code, self.log)
            self.remove_model(model)  # a build killed at its timeout leaves its partial folder
            return False
        timings = read_json(build_record(self.work, model)) or {}
        self.builds[model] = {**timings, "build_wall_s": round(time.perf_counter() - started, 1)}
        return True

    def run(self, case: MemCase) -> dict[str, Any]:
        """One case in a subprocess; its result (or why there is none)."""
        result_path = self.work / f"result-{case.key.replace(':', '_')}.json"
        result_path.unlink(missing_ok=True)
        estimate = estimate_gb(case, self.w, self.tokenizer)
        base = {
            "case": case.key,
            "model": case.model,
            "title": MODELS[case.model]["title"],
            "precision": case.precision,
            "budget_gb": case.budget_gb,
            "estimate_gb": round(estimate, 2),
            "planner": "accepts" if estimate <= case.budget_gb else "refuses",
        }
        if not self.build(case.model):
            return {**base, "status": "error", "error": "model build failed"}
        timeout = min(self.args.case_timeout, self.remaining_s())
        offset = self.log.stat().st_size if self.log.is_file() else 0
        started = time.perf_counter()
        argv = [
            "--run-case", case.key,
            "--result", str(result_path),
            "--workdir", str(self.work),
            *workload_argv(self.w),
            *(["--budget-override"] if self.args.budget_override else []),
        ]  # fmt: skip
        code = run_child(argv, self.log, timeout, self.work, Path(__file__))
        wall = time.perf_counter() - started
        tail = self.log.read_text(encoding="utf-8", errors="replace")[offset:][-20000:]
        result = read_json(result_path)
        if result is None:
            why = "timed out" if code is None else f"exit code {code} without a result"
            result = {"error": why, "steps_done": 0}
        result = {**result, **base, "wall_s": round(wall, 1)}
        result["status"] = case_status(result, self.w.steps, log_tail=tail if code else "")
        if case.model in self.builds:  # the model was built for this case
            result["model_build"] = self.builds.pop(case.model)
        check_estimate(result)
        return result

    def record(self, result: dict[str, Any]) -> None:
        """Keep a result and rewrite the report."""
        self.results.append(result)
        logger.info(
            "%s: %s, device peak %s GB, s/step %s, %.0f s",
            result["case"],
            result["status"],
            _fmt(result.get("device_peak_gb")),
            _fmt(result.get("step_s")),
            result.get("wall_s") or 0,
        )
        try:
            write_report(self.export, self.w, self.env, self.results)
        except Exception:  # the report must never end the run: the JSON lines stay in the log
            logger.exception(
                "writing the report failed; result: %s", json.dumps(result, default=str)
            )

    def out_of_time(self, case: MemCase) -> bool:
        """Whether too little of ``--time-budget`` is left to start a case."""
        if self.remaining_s() >= self.args.min_case_s:
            return False
        self.record({**asdict(case), "case": case.key, "title": MODELS[case.model]["title"],
                     "status": "not run (time budget)"})  # fmt: skip
        return True

    def build_only(self, cases: list[MemCase]) -> int:
        """Build the cases' models and keep them, for a later call on the same machine."""
        code = 0
        for model in dict.fromkeys(case.model for case in cases):
            if not self.build(model):
                code = 1
                break
            logger.info("%s is in %s: %s", model, self.model_dir(model), self.builds.get(model))
        # the timings of the models built so far, even when a later build failed
        (self.work / "builds.json").write_text(json.dumps(self.builds), encoding="utf-8")
        shutil.copy(self.work / "builds.json", self.export / "builds.json")
        return code

    def drive(self, cases: list[MemCase]) -> int:
        """All cases (or their bisections), cheapest first; partial results after each."""
        failures: list[MemCase] = []
        for index, case in enumerate(cases):
            if self.out_of_time(case):
                continue
            ruled_out = doomed_by(case, failures) if not self.args.bisect else None
            if ruled_out is not None:
                self.record({**asdict(case), "case": case.key, "title": MODELS[case.model]["title"],
                             "status": f"skipped ({ruled_out.key} failed)"})  # fmt: skip
                continue
            if self.args.bisect:
                self.bisect(case)
            else:
                result = self.run(case)
                self.record(result)
                if result["status"] in FAILED:
                    failures.append(case)
            later = [c.model for c in cases[index + 1 :]]
            if case.model not in later and not self.args.keep_models:
                self.remove_model(case.model)
        print(write_report(self.export, self.w, self.env, self.results))
        return 0

    def bisect(self, case: MemCase) -> None:
        """Smallest budget of the case's model and precision, in a few runs."""
        tried: list[tuple[float, bool, float | None]] = []
        budget: float | None = case.budget_gb
        while budget is not None and len(tried) < self.args.bisect_runs:
            if self.remaining_s() < self.args.min_case_s:
                break
            result = self.run(replace(case, budget_gb=budget))
            result["bisect_of"] = case.key
            self.record(result)
            ok = result["status"] == "fits"
            tried.append((budget, ok, result.get("device_peak_gb")))
            budget = next_bisect_budget(tried)


def partial_build_dir(target: Path) -> Path:
    """Where a model is built before it is renamed to ``target`` (so a killed build is no model)."""
    return target.with_name(f".{target.name}.partial")


def build_record(work: Path, model: str) -> Path:
    """Where a build child leaves its timings."""
    return work / "models" / f"{model}.build.json"


def check_estimate(result: dict[str, Any]) -> None:
    """Record how far the driver's estimate is from the plan the run itself made (run.json).

    Both come from the case's Config through the planner; a difference means the two drifted
    apart (a setting the driver does not see), and the table's estimate column is then wrong.
    """
    planned = ((result.get("plan") or {}).get("estimate_gb") or {}).get("total")
    if planned is None or result.get("estimate_gb") is None:
        return
    drift = round(float(planned) - float(result["estimate_gb"]), 2)
    result["estimate_drift_gb"] = drift
    if abs(drift) > 0.05:
        logger.warning(
            "%s: the run planned %.2f GB, the driver estimated %.2f GB",
            result["case"], planned, result["estimate_gb"],
        )  # fmt: skip


def workload_argv(w: CaseWorkload) -> list[str]:
    """Flags that give a child the same workload."""
    return [
        "--num-generations", str(w.num_generations),
        "--prompt-tokens", str(w.prompt_tokens),
        "--completion-tokens", str(w.completion_tokens),
        "--steps", str(w.steps),
        "--warmup-steps", str(w.warmup_steps),
        "--backend", w.backend,
        "--micro-batch", str(w.micro_batch),
        "--memory-history", str(w.memory_history_step),
        *([] if w.vllm else ["--no-vllm"]),
    ]  # fmt: skip


def results_table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per case."""
    head = (
        "| model | precision | budget GB | planner estimate GB | status | device peak GB "
        "| s/step | steps | rollout tok/s | rollout split s (median) | vLLM GiB (metrics) "
        "| gpu_memory_utilization | torch cap | note |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        plan = r.get("plan") or {}
        mem = r.get("metrics_memory") or {}
        note = (r.get("error") or "").replace("|", "/").replace("\n", " ")[:100]
        if r.get("bisect_of"):
            note = f"bisect of {r['bisect_of']}. {note}"
        rows.append(
            f"| {r.get('title', r.get('model'))} | {r.get('precision')} | "
            f"{r.get('budget_gb'):g} | {_fmt(r.get('estimate_gb'), 1)} | {r.get('status')} | "
            f"{_fmt(r.get('device_peak_gb'))} | {_fmt(r.get('step_s'))} | "
            f"{_fmt(r.get('steps_done'))} | {_fmt(r.get('rollout_tok_s'), 0)} | "
            f"{split_text(r.get('rollout_split'))} | {_fmt(mem.get('gpu_vllm_gib'))} | "
            f"{_fmt(plan.get('gpu_memory_utilization'), 4)} | {_fmt(plan.get('torch_fraction'), 4)} "
            f"| {note} |"
        )
    return head + "\n".join(rows) + "\n"


def smallest_fits(results: list[dict[str, Any]]) -> str:
    """Per model and precision: the smallest budget that fitted and the largest that did not."""
    lines = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        if r.get("budget_gb") is not None and r.get("precision"):
            groups.setdefault((r["model"], r["precision"]), []).append(r)
    for (model, precision), rows in groups.items():
        fits = [r["budget_gb"] for r in rows if r.get("status") == "fits"]
        fails = [r["budget_gb"] for r in rows if r.get("status") in ("OOM", "over budget")]
        spec = MODELS[model].get(precision)
        peaks = [r["device_peak_gb"] for r in rows if r.get("status") == "fits"]
        peaks = [p for p in peaks if p is not None]
        lines.append(
            f"- {MODELS[model]['title']} {precision} (spec {spec} GB): smallest fit "
            f"{_fmt(min(fits) if fits else None, 1)} GB"
            + (f" (peak {statistics.median(peaks):.2f} GB)" if peaks else "")
            + f", largest that did not fit {_fmt(max(fails) if fails else None, 1)} GB"
        )
    return "\n".join(lines) + "\n"


def peak_raises_text(results: list[dict[str, Any]]) -> str:
    """One line per case: the phases of its steps that raised torch's peak allocation."""
    lines = []
    for r in results:
        raises = r.get("peak_raised_in") or []
        if raises:
            parts = [f"step {x['step']} {x['phase']} +{x['raised_gib']:.2f}" for x in raises]
            lines.append(
                f"- {r['case']}: torch's peak allocation rose in (GiB) " + ", ".join(parts) + "\n"
            )
    return "".join(lines)


def memory_history_text(results: list[dict[str, Any]], top: int = 12) -> str:
    """What was alive at the peak of each recorded step, by allocation site."""
    sections = []
    for r in results:
        history = r.get("memory_history") or {}
        if not history.get("alive_at_peak"):
            continue
        rows = "".join(
            f"| {g['site']} | {g['gib']:.3f} | {g['blocks']} | {g['largest_gib']:.3f} |\n"
            for g in history["alive_at_peak"][:top]
        )
        flags = ", truncated" if history.get("truncated") else ""
        sections.append(
            f"\n{r['case']}, step {history.get('step')}: torch's allocation grew by at most "
            f"{history['peak_growth_gib']:.2f} GiB ({history['entries']} trace entries{flags}); "
            "alive at that peak:\n\n| allocated at | GiB | blocks | largest GiB |\n"
            "|---|---|---|---|\n" + rows
        )
    return "".join(sections)


def write_report(
    out: Path, w: CaseWorkload, env: dict[str, Any], results: list[dict[str, Any]]
) -> str:
    """results.json and results.md in ``out`` (flat); returns the markdown."""
    header = (
        f"GPU memory budgets on {env.get('gpu')} | torch {env.get('torch')} (CUDA "
        f"{env.get('cuda')}) | transformers {env.get('transformers')} | trl {env.get('trl')} | "
        f"unsloth {env.get('unsloth')} | vllm {env.get('vllm')} | {env.get('date')}\n\n"
        f"Random-weight models of the real shapes and vocabularies, {w.backend}"
        f"{' + vLLM' if w.vllm else ''}, LoRA r={w.lora_rank}, one prompt of about "
        f"{w.prompt_tokens} tokens x {w.num_generations} completions of {w.completion_tokens} "
        f"tokens a step"
        + (f" in micro-batches of {w.train_rows}" if w.train_rows < w.num_generations else "")
        + f", {w.steps} steps (s/step: median after {w.warmup_steps} warm-up). "
        "Budget and peaks in GB (10^9 bytes); the device-wide peak is cudaMemGetInfo polled "
        "from just before the model loads.\n\n"
    )
    builds = [
        f"- built {r['model']} for {r['case']}: {_fmt(b.get('build_s'), 1)} s to make the weights, "
        f"{_fmt(b.get('save_s'), 1)} s to save them, {_fmt(b.get('build_wall_s'), 1)} s in all\n"
        for r in results
        if (b := r.get("model_build"))
    ]
    markdown = (
        header
        + results_table(results)
        + "\n"
        + smallest_fits(results)
        + "".join(builds)
        + peak_raises_text(results)
        + memory_history_text(results)
    )
    (out / "results.md").write_text(markdown, encoding="utf-8")
    payload = {"workload": asdict(w), "environment": env, "results": results}
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return markdown


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cases", default="spec", help="spec (the whole table) or 1.7b:fp8:5,8b:bf16:24"
    )
    parser.add_argument(
        "--budget-override",
        action="store_true",
        help="run a case even where the planner refuses its budget (torch still capped at it), "
        "to test the estimate; the planner's verdict is recorded either way",
    )
    parser.add_argument(
        "--bisect", action="store_true", help="smallest budget per case's model/precision"
    )
    parser.add_argument("--bisect-runs", type=int, default=3, help="runs per bisection")
    parser.add_argument("--case-timeout", type=float, default=300, help="seconds per case")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=570,
        help="seconds for the whole call; no case starts late",
    )
    parser.add_argument(
        "--min-case-s", type=float, default=90, help="start no case with less than this left"
    )
    parser.add_argument("--export", default=os.environ.get("OUT") or "outputs/gpu_memory")
    parser.add_argument("--workdir", default="/tmp/gpu_memory", help="models, runs, caches")
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer dir (default: the embedded one)"
    )
    parser.add_argument("--keep-models", action="store_true", help="keep built models in --workdir")
    parser.add_argument(
        "--build-only",
        action="store_true",
        help="build the cases' models into --workdir and stop (needs only torch and "
        "transformers: it can run before the wheels are installed); a later call runs them",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the cases and estimates")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CPU check of this script: the tiny shape, transformers backend, short lengths",
    )
    parser.add_argument("--num-generations", type=int, default=CaseWorkload.num_generations)
    parser.add_argument("--prompt-tokens", type=int, default=CaseWorkload.prompt_tokens)
    parser.add_argument("--completion-tokens", type=int, default=CaseWorkload.completion_tokens)
    parser.add_argument("--steps", type=int, default=CaseWorkload.steps)
    parser.add_argument("--warmup-steps", type=int, default=CaseWorkload.warmup_steps)
    parser.add_argument(
        "--backend", default=CaseWorkload.backend, choices=["unsloth", "transformers"]
    )
    parser.add_argument("--no-vllm", action="store_true", help="generate with transformers")
    parser.add_argument(
        "--micro-batch",
        type=int,
        default=CaseWorkload.micro_batch,
        help="completions per forward/backward, the rest by gradient accumulation (0: all)",
    )
    parser.add_argument(
        "--memory-history",
        type=int,
        default=CaseWorkload.memory_history_step,
        metavar="STEP",
        help="record torch's allocation history in step STEP and report what was alive at its "
        "peak, by the code that allocated it (bench/memory_history.py; 0: off)",
    )
    parser.add_argument("--build", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run-case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.cases = "tiny:fp8:2,tiny:bf16:2,tiny:bf16:0.05" if args.cases == "spec" else args.cases
        args.backend, args.no_vllm = "transformers", True
        args.num_generations, args.prompt_tokens, args.completion_tokens = 2, 48, 8
        args.steps, args.warmup_steps = 2, 1
    if args.steps <= args.warmup_steps:
        parser.error("--steps must exceed --warmup-steps")
    if args.micro_batch < 0 or (args.micro_batch and args.num_generations % args.micro_batch):
        parser.error("--micro-batch must divide --num-generations")
    if not 0 <= args.memory_history <= args.steps:
        parser.error("--memory-history must be a step of the run (1 to --steps), or 0")
    return args


def workload_from(args: argparse.Namespace) -> CaseWorkload:
    """The workload the flags give."""
    return CaseWorkload(
        num_generations=args.num_generations,
        prompt_tokens=args.prompt_tokens,
        completion_tokens=args.completion_tokens,
        steps=args.steps,
        warmup_steps=args.warmup_steps,
        backend=args.backend,
        vllm=not args.no_vllm,
        micro_batch=args.micro_batch,
        memory_history_step=args.memory_history,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: the driver, or one of its child roles (build a model, run a case)."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    work = Path(args.workdir)
    w = workload_from(args)
    if args.build:
        row = MODELS[args.build]
        target = work / "models" / args.build
        partial = partial_build_dir(target)  # a build killed midway is no model
        shutil.rmtree(partial, ignore_errors=True)
        timings = gpu_grpo.build_model(row["shape"], Path(args.tokenizer), partial,
                                       vocab_size=row["vocab"])  # fmt: skip
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        build_record(work, args.build).write_text(json.dumps(timings), encoding="utf-8")
        return 0
    if args.run_case:
        (case,) = parse_cases(args.run_case)
        output_dir = work / "runs" / case.key.replace(":", "_")
        shutil.rmtree(output_dir, ignore_errors=True)
        summary = run_one(case, w, work / "models" / case.model, output_dir, args.budget_override)
        Path(args.result).write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        return 0 if summary["status"] in ("fits", "over budget") else 1
    if args.tokenizer is None:
        from autolearn.embedded import embedded_tokenizer_dir

        args.tokenizer = str(embedded_tokenizer_dir())
    cases = cheapest_first(parse_cases(args.cases))
    if args.dry_run:
        from autolearn.models import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
        for case in cases:
            logger.info("%s: planner estimate %.1f GB", case.key, estimate_gb(case, w, tokenizer))
        return 0
    driver = Driver(args, w)
    return driver.build_only(cases) if args.build_only else driver.drive(cases)


if __name__ == "__main__":
    raise SystemExit(main())
