"""Learning benchmark on a GPU: does held-out accuracy rise, in FP8 as in BF16?

The embedded SmolLM2-135M-Instruct (real weights) trains with GRPO on an easy reasoning-gym
arithmetic task through the project's own pipeline, with held-out evaluation (greedy, on
problems from seeds the run never trains on) at step 0, every ``--eval-steps`` and at the
end. Runs (each in its own process, together on the one GPU; vLLM gets a small
``gpu_memory_utilization`` each and Unsloth's standby is off, since standby raises vLLM's
share to most of the card):

    fp8_is_off_sN   Unsloth FP8 + vLLM, TRL's vLLM importance-sampling correction off: the
                    default GPU path (the correction's default was chosen from this benchmark)
    fp8_is_on_sN    the same with the correction on (TRL's default; logs sampling/*)
    bf16_sN         Unsloth BF16 + vLLM, correction on (as measured on 2026-12-02)
    hf_bf16         plain TRL + PEFT with HF ``generate`` (our transformers backend, BF16,
                    no vLLM), a few minutes only: the step-time ratio

A run starts once the one before it has sized its vLLM KV cache (vLLM measures device-wide
memory while it profiles, so another process allocating its cache at that moment leaves it
none: "No available memory for the cache blocks"). Each run stops at ``--steps`` or at its
time budget, counted from the first run's start (a Ctrl-C: the step finishes, a final
evaluation runs, a checkpoint is saved; killed 90 s later), so one call ends within
``--budget`` + 90 s, under the device's 10 minutes.
The driver writes ``results.json``, ``results.md`` and ``heldout_accuracy.png`` (every run's
held-out curve) to ``--out``, and each run's folder (metrics.jsonl, reward_curve.png) under
``--out/runs``. Results from runs of earlier calls in the same ``--out`` are kept and
summarised together.

    python bench/gpu_learning.py --out /tmp/gl --export "$OUT" --runs fp8_is_off_s1,fp8_is_off_s2,bf16_s1,bf16_s2
    python bench/gpu_learning.py --out /tmp/gl --export "$OUT" --runs fp8_is_on_s1,fp8_is_on_s2,hf_bf16
    python bench/gpu_learning.py --smoke --model DIR --out /tmp/smoke   # CPU: tiny, 2 steps
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

logger = logging.getLogger("bench.gpu_learning")

# The recipe that learned on the CPU (bench/cpu_grpo.py, docs/PERFORMANCE.md); the H200 runs of
# 2026-12-01 used rg:chain_sum (two terms, 1-2 digits), correctness 1.0 + xml_format 0.3 at 1.0.
from bench.cpu_grpo import EASY_OPTIONS as TASK_OPTIONS  # noqa: E402
from bench.cpu_grpo import EASY_TASK as TASK  # noqa: E402
from bench.cpu_grpo import REWARDS, TEMPERATURE  # noqa: E402

DEFAULT_FP8 = "fp8_is_off"  # the default GPU path: FP8, the importance-sampling correction off
VLLM_GROUPS = ("fp8_is_off", "fp8_is_on", "bf16")


@dataclass(frozen=True)
class Run:
    """One training run of the benchmark."""

    name: str
    backend: str  # unsloth | transformers
    fp8: bool
    vllm: bool
    is_correction: bool
    seed: int
    budget_s: float  # wall-clock budget of the whole child (load + train + evaluations)


def all_runs(budget_s: float, hf_budget_s: float) -> dict[str, Run]:
    """Every run the benchmark knows, by name."""
    runs = []
    for seed in (1, 2):
        runs += [
            Run(f"fp8_is_on_s{seed}", "unsloth", True, True, True, seed, budget_s),
            Run(f"fp8_is_off_s{seed}", "unsloth", True, True, False, seed, budget_s),
            Run(f"bf16_s{seed}", "unsloth", False, True, True, seed, budget_s),
        ]
    runs.append(Run("hf_bf16", "transformers", False, False, False, 1, hf_budget_s))
    return {run.name: run for run in runs}


@dataclass(frozen=True)
class Settings:
    """What every run shares."""

    model: str = "embedded:smollm2-135m"
    steps: int = 100
    eval_steps: int = 10
    eval_prompts: int = 200  # one problem is half a point: differences of a few points show
    train_problems: int = 2000
    num_generations: int = 8
    prompts_per_step: int = 4
    max_completion_length: int = 160
    learning_rate: float = 1e-4  # measured on the H200, 2026-12-02 (docs/PERFORMANCE.md)
    lora_rank: int = 16
    gpu_memory_utilization: float = 0.2
    max_seq_length: int = 768
    task: str = TASK
    task_options: dict[str, Any] = field(default_factory=lambda: dict(TASK_OPTIONS))
    rewards: dict[str, float] = field(default_factory=lambda: dict(REWARDS))
    temperature: float = TEMPERATURE


def run_config(run: Run, settings: Settings, output_dir: Path) -> Any:
    """The project config of one run (stated in full: Unsloth changes TRL's defaults)."""
    from autolearn.config import Config, MathDataConfig, ModelConfig, TrainingConfig

    return Config(
        model=ModelConfig(
            name=settings.model,
            backend=run.backend,
            load_in_fp8=run.fp8,
            dtype="auto",  # bfloat16 on the GPU (the FP8 runs keep their norms etc. in it)
            max_seq_length=settings.max_seq_length,
            lora_rank=settings.lora_rank,
            lora_alpha=2 * settings.lora_rank,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            fast_inference=run.vllm,
            gradient_checkpointing=False,
        ),
        training=TrainingConfig(
            output_dir=str(output_dir),
            num_generations=settings.num_generations,
            per_device_train_batch_size=settings.num_generations * settings.prompts_per_step,
            gradient_accumulation_steps=1,
            learning_rate=settings.learning_rate,
            max_steps=settings.steps,
            max_completion_length=settings.max_completion_length,
            temperature=settings.temperature,
            beta=0.0,
            loss_type="dapo",
            mask_truncated_completions=False,
            logging_steps=1,
            save_steps=10_000,
            seed=run.seed,
            vllm_importance_sampling_correction=run.is_correction,
            eval_steps=settings.eval_steps,
            eval_max_prompts=settings.eval_prompts,
        ),
        dataset=MathDataConfig(
            name=settings.task,
            max_samples=settings.train_problems,
            rg_options=dict(settings.task_options),
        ),
        rewards=dict(settings.rewards),
    )


def child(run: Run, settings: Settings, output_dir: Path) -> None:
    """Train one run (in this process) through the project's pipeline."""
    if run.backend == "unsloth":
        os.environ["UNSLOTH_VLLM_STANDBY"] = "0"  # standby would take most of the card
    import rewards
    from autolearn.data import build_math_splits
    from autolearn.heldout import HeldOut
    from autolearn.pipeline import run_training
    from autolearn.trainer import setup_logging

    setup_logging()
    config = run_config(run, settings, output_dir)
    t = config.training
    train, held = build_math_splits(
        config.dataset, seed=t.seed, eval_prompts=t.eval_max_prompts, evaluate=True
    )
    # beside the run's own files (run.json is the toolkit's record of the run)
    (output_dir / "bench_run.json").write_text(json.dumps({"run": asdict(run), **asdict(settings)}))
    run_training(config, train, rewards.REWARDS, heldout=HeldOut("math", held))


# --------------------------------------------------------------------------- the driver


def launch(run: Run, settings: Settings, out: Path, *, smoke: bool) -> subprocess.Popen[bytes]:
    """Start one run's process, with its own working dir and vLLM cache (no shared writes)."""
    from bench.gpu_grpo import child_environment

    run_dir = out / "runs" / run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    env = child_environment()
    env["VLLM_CACHE_ROOT"] = str(Path("/tmp/vllm_cache") / run.name)
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", run.name]
    argv += ["--out", str(out), "--settings", json.dumps(asdict(settings))]
    argv += ["--budget", str(run.budget_s)] + (["--smoke"] if smoke else [])
    log = (run_dir / "run.log").open("ab")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=run_dir, env=env)
    return process


CACHE_SIZED = re.compile(rb"Available KV cache memory|No available memory for the cache blocks")


def wait_until_cache_sized(
    log: Path, process: subprocess.Popen[bytes], *, timeout: float, poll_s: float = 1.0
) -> bool:
    """Wait until a run's vLLM engine has sized its KV cache (its log says so) or it exited.

    False if neither happened within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return True
        if log.is_file() and CACHE_SIZED.search(log.read_bytes()):
            return True
        time.sleep(poll_s)
    return False


def supervise(
    processes: dict[str, subprocess.Popen[bytes]], runs: dict[str, Run], started: float
) -> dict[str, Any]:
    """Wait for the runs; Ctrl-C one at its budget (it saves and evaluates), kill it 90 s later.

    Every budget counts from ``started`` (the first run's start).
    """
    interrupted: dict[str, float] = {}
    codes: dict[str, Any] = {}
    while len(codes) < len(processes):
        now = time.monotonic()
        for name, process in processes.items():
            if name in codes:
                continue
            code = process.poll()
            if code is not None:
                codes[name] = code
            elif name not in interrupted and now - started > runs[name].budget_s:
                process.send_signal(signal.SIGINT)
                interrupted[name] = now
            elif name in interrupted and now - interrupted[name] > 90:
                process.kill()
                codes[name] = "killed"
        time.sleep(2)
    return {
        name: {"exit": code, "stopped_at_budget": name in interrupted}
        for name, code in codes.items()
    }


def summarise_run(run_dir: Path) -> dict[str, Any] | None:
    """Held-out accuracy at the start and the end, step time and eval share of one run."""
    from autolearn.trainer import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl")
    if not rows:
        return None
    steps = [r for r in rows if r.get("reward") is not None]
    evals = [r for r in rows if "eval/accuracy" in r]
    record_file = run_dir / "run.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    train_rows = [r for r in [*rows, record.get("summary") or {}] if "train_runtime" in r]
    step_times = [r["step_seconds"] for r in steps[2:] if r.get("step_seconds")]
    rollout = [r["rollout_seconds"] for r in steps[2:] if r.get("rollout_seconds")]
    eval_seconds = sum(r["eval/seconds"] for r in evals)
    loop_seconds = sum(r.get("step_seconds") or 0 for r in steps) + eval_seconds
    run_seconds = train_rows[-1]["train_runtime"] if train_rows else loop_seconds
    sampling = {
        key: round(statistics.fmean(r[key] for r in steps if r.get(key) is not None), 4)
        for key in sorted({k for r in steps for k in r if k.startswith("sampling/")})
        if any(r.get(key) is not None for r in steps)
    }
    return {
        "steps": len(steps),
        "heldout_accuracy": [[r["step"], r["eval/accuracy"]] for r in evals],
        "heldout_format": [[r["step"], r["eval/format"]] for r in evals],
        "accuracy_start": evals[0]["eval/accuracy"] if evals else None,
        "accuracy_end": evals[-1]["eval/accuracy"] if evals else None,
        "accuracy_best": max(
            ([r["eval/accuracy"], r["step"]] for r in evals), key=lambda p: p[0], default=None
        ),
        "accuracy_gain_points": round(
            100 * (evals[-1]["eval/accuracy"] - evals[0]["eval/accuracy"]), 1
        )
        if evals
        else None,
        "train_correctness_first10": _mean(steps[:10], "rewards/correctness/mean"),
        "train_correctness_last10": _mean(steps[-10:], "rewards/correctness/mean"),
        "first_step_s": steps[0].get("step_seconds") if steps else None,
        "median_step_s": round(statistics.median(step_times), 3) if step_times else None,
        "median_rollout_s": round(statistics.median(rollout), 3) if rollout else None,
        "eval_seconds": round(eval_seconds, 1),
        "train_runtime_s": round(run_seconds, 1),
        "eval_share": round(eval_seconds / run_seconds, 3) if run_seconds else None,
        # what evaluating added to the run: its time over the run's time without it
        "eval_added": round(eval_seconds / (run_seconds - eval_seconds), 3)
        if run_seconds > eval_seconds
        else None,
        "sampling_means": sampling,
    }


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.fmean(values), 4) if values else None


def group_of(name: str) -> str:
    """``fp8_is_on_s2`` -> ``fp8_is_on``."""
    return name.rsplit("_s", 1)[0] if name[-1].isdigit() and "_s" in name else name


def compare(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per configuration: seeds' end accuracy (mean, min, max), gain, step time; the goals."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for name, result in results.items():
        if result.get("accuracy_end") is not None:
            groups.setdefault(group_of(name), []).append(result)
    table: dict[str, Any] = {}
    for group, members in sorted(groups.items()):
        ends = [m["accuracy_end"] for m in members]
        gains = [m["accuracy_gain_points"] for m in members]
        steps = [m["median_step_s"] for m in members if m["median_step_s"]]
        shares = [m["eval_share"] for m in members if m["eval_share"] is not None]
        added = [m["eval_added"] for m in members if m.get("eval_added") is not None]
        table[group] = {
            "seeds": len(members),
            "accuracy_end_mean": round(statistics.fmean(ends), 4),
            "accuracy_end_range": [min(ends), max(ends)],
            "gain_points_mean": round(statistics.fmean(gains), 1),
            "median_step_s": round(statistics.fmean(steps), 3) if steps else None,
            "eval_share_max": max(shares) if shares else None,
            "eval_added_max": max(added) if added else None,
        }
    goals: dict[str, Any] = {}
    fp8 = DEFAULT_FP8
    if fp8 in table:
        goals["fp8_gain_at_least_25_points"] = table[fp8]["gain_points_mean"] >= 25
    if fp8 in table and "bf16" in table:
        low, high = table["bf16"]["accuracy_end_range"]
        goals["fp8_within_bf16_seed_spread"] = all(
            low - 0.02 <= e <= high + 0.02
            for e in [results[n]["accuracy_end"] for n in results if group_of(n) == fp8]
        )
    added = [
        t["eval_added_max"]
        for g, t in table.items()
        if g in VLLM_GROUPS and t["eval_added_max"] is not None
    ]
    if added:  # the vLLM runs: the default path (hf_bf16 evaluates through HF generate)
        goals["eval_adds_at_most_15_percent"] = max(added) <= 0.15
    if "hf_bf16" in table and "bf16" in table and table["hf_bf16"]["median_step_s"]:
        goals["step_time_ratio_unsloth_vllm_bf16_over_hf_generate"] = round(
            (table["bf16"]["median_step_s"] or math.nan) / table["hf_bf16"]["median_step_s"], 3
        )
    return {"by_config": table, "goals": goals}


def plot_curves(results: dict[str, dict[str, Any]], png: Path, title: str) -> None:
    """Every run's held-out accuracy against the step, one colour per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colours = {
        "fp8_is_on": "tab:red",
        "fp8_is_off": "tab:orange",
        "bf16": "tab:blue",
        "hf_bf16": "tab:gray",
    }
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, result in sorted(results.items()):
        points = result.get("heldout_accuracy") or []
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=name, color=colours.get(group_of(name)))
    ax.set_xlabel("step")
    ax.set_ylabel("held-out accuracy (greedy)")
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def results_markdown(summary: dict[str, Any]) -> str:
    """A table per run and per configuration, for docs/PERFORMANCE.md."""
    lines = [
        "| run | steps | held-out acc start -> end | best (at step) | median s/step | "
        "eval added | sampling logp diff mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in sorted(summary["runs"].items()):
        diff = r.get("sampling_means", {}).get("sampling/sampling_logp_difference/mean")
        best = r.get("accuracy_best") or [None, None]
        lines.append(
            f"| {name} | {r['steps']} | {r['accuracy_start']} -> {r['accuracy_end']} | "
            f"{best[0]} ({best[1]}) | {r['median_step_s']} | {r.get('eval_added')} | {diff} |"
        )
    lines += [
        "",
        "| config | seeds | end acc mean [min, max] | gain (points) | s/step |",
        "|---|---|---|---|---|",
    ]
    for group, g in summary["comparison"]["by_config"].items():
        lines.append(
            f"| {group} | {g['seeds']} | {g['accuracy_end_mean']} {g['accuracy_end_range']} | "
            f"{g['gain_points_mean']} | {g['median_step_s']} |"
        )
    lines += ["", "Goals: " + json.dumps(summary["comparison"]["goals"])]
    return "\n".join(lines) + "\n"


SMALL_FILES = (
    "metrics.jsonl",
    "reward_curve.png",
    "run.log",
    "config.yaml",
    "best.json",
    "run.json",
    "bench_run.json",
)


def export_small_files(out: Path, target: Path) -> None:
    """Copy the results and each run's small files (no weights) to ``target``."""
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "results.md", "heldout_accuracy.png"):
        shutil.copy2(out / name, target / name)
    for run_dir in sorted((out / "runs").glob("*")):
        for name in SMALL_FILES:
            if (run_dir / name).is_file():
                (target / "runs" / run_dir.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(run_dir / name, target / "runs" / run_dir.name / name)


def drive(args: argparse.Namespace) -> int:
    """Start the asked runs at once, wait, summarise every run found under ``--out``."""
    settings = settings_from_args(args)
    runs = all_runs(args.budget, args.hf_budget)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in runs]
    if unknown:
        sys.stderr.write(f"error: unknown run(s) {', '.join(unknown)}; known: {', '.join(runs)}\n")
        return 2
    chosen = {n: runs[n] for n in names}
    if args.smoke:
        chosen = {  # CPU: the transformers backend, and no time budget to speak of
            n: replace(r, backend="transformers", fp8=False, vllm=False, budget_s=3600)
            for n, r in chosen.items()
        }
    args.out.mkdir(parents=True, exist_ok=True)
    from autolearn.models import resolve_model_path

    resolve_model_path(settings.model)  # converts the embedded GGUF once, before the runs race
    for name in chosen:  # a fresh run folder for every run started now
        subprocess.run(["rm", "-rf", str(args.out / "runs" / name)], check=False)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    previous: str | None = None
    first_start = time.monotonic()  # every budget counts from here, whatever the waits took
    for name, run in chosen.items():
        if previous is not None and chosen[previous].vllm and args.stagger > 0:
            process = processes[previous]
            log = args.out / "runs" / previous / "run.log"
            if not wait_until_cache_sized(log, process, timeout=args.stagger):
                logger.warning(
                    "%s: no KV cache line within %.0f s; starting %s", previous, args.stagger, name
                )
        processes[name] = launch(run, settings, args.out, smoke=args.smoke)
        previous = name
    exits = supervise(processes, chosen, first_start)
    results = {}
    for run_dir in sorted((args.out / "runs").glob("*")):
        summary = summarise_run(run_dir)
        if summary is not None:
            results[run_dir.name] = summary
    from bench.gpu_grpo import environment_report

    summary = {
        "task": settings.task,
        "task_options": settings.task_options,
        "settings": asdict(settings),
        "this_call": exits,
        "environment": environment_report(),
        "runs": results,
        "comparison": compare(results),
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    (args.out / "results.md").write_text(results_markdown(summary))
    options = ", ".join(f"{k} {v}" for k, v in settings.task_options.items())
    title = f"SmolLM2-135M, GRPO on {settings.task} ({options})"
    plot_curves(results, args.out / "heldout_accuracy.png", title)
    if args.export:
        export_small_files(args.out, args.export)
    sys.stdout.write(results_markdown(summary))
    return 0 if all(e["exit"] in (0, 130) for e in exits.values()) else 1


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The shared settings; ``--smoke`` shrinks them to a CPU check of the plumbing."""
    if args.settings:
        return Settings(**json.loads(args.settings))
    settings = Settings(
        steps=args.steps,
        eval_steps=args.eval_steps,
        eval_prompts=args.eval_prompts,
        learning_rate=args.learning_rate,
        gpu_memory_utilization=args.gpu_memory_utilization,
        task=args.task,
        task_options=json.loads(args.task_options),
        rewards=json.loads(args.rewards),
        temperature=args.temperature,
    )
    if args.model:
        settings = replace(settings, model=args.model)
    if args.smoke:
        settings = replace(
            settings, steps=2, eval_steps=1, eval_prompts=2, train_problems=8,
            num_generations=2, prompts_per_step=1, max_completion_length=8,
        )  # fmt: skip
    return settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_gpu_learning")
    parser.add_argument("--runs", default="fp8_is_off_s1,fp8_is_off_s2,bf16_s1,bf16_s2")
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--eval-steps", type=int, default=Settings.eval_steps)
    parser.add_argument("--eval-prompts", type=int, default=Settings.eval_prompts)
    parser.add_argument("--learning-rate", type=float, default=Settings.learning_rate)
    parser.add_argument(
        "--gpu-memory-utilization", type=float, default=Settings.gpu_memory_utilization
    )
    parser.add_argument(
        "--budget", type=float, default=450, help="seconds per vLLM run, from the first start"
    )
    parser.add_argument(
        "--hf-budget", type=float, default=240, help="seconds for hf_bf16, from the first start"
    )
    parser.add_argument("--model", default="", help="model (default: the embedded one)")
    parser.add_argument("--task", default=TASK, help="an rg:NAME dataset")
    parser.add_argument("--task-options", default=json.dumps(TASK_OPTIONS), help="rg_options, JSON")
    parser.add_argument("--rewards", default=json.dumps(REWARDS), help="reward weights, JSON")
    parser.add_argument(
        "--temperature", type=float, default=TEMPERATURE, help="rollout temperature"
    )
    parser.add_argument(
        "--stagger",
        type=float,
        default=180.0,
        help="at most this many seconds waiting for the previous vLLM run to size its KV cache",
    )
    parser.add_argument(
        "--export", type=Path, default=None, help="also copy results and small run files here"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CPU plumbing check: tiny settings, transformers backend",
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Drive the runs, or (``--child``) be one of them."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.child:
        run = all_runs(args.budget, args.budget)[args.child]
        if args.smoke:  # CPU: the transformers backend, no vLLM
            run = replace(run, backend="transformers", fp8=False, vllm=False)
        child(run, settings_from_args(args), args.out / "runs" / run.name)
        return 0
    return drive(args)


if __name__ == "__main__":
    raise SystemExit(main())
