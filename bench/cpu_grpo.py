#!/usr/bin/env python
"""CPU benchmark and learning check: GRPO on the embedded SmolLM2-135M with fixed settings.

It trains through the project's real pipeline (``autolearn.pipeline.run_training``) and
reports, from the run's ``metrics.jsonl``:

* seconds per GRPO step (median after the first step) and peak RSS;
* the learning check: mean reward over the first 5 steps against the last 5, with the
  ``xml_format`` and ``correctness`` rewards, and the reward curve PNG.

Usage:
    python bench/cpu_grpo.py                    # 30 steps, results in outputs/bench_cpu_grpo
    python bench/cpu_grpo.py --steps 10 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autolearn.config import Config, MathDataConfig, ModelConfig, TrainingConfig  # noqa: E402


def bench_config(steps: int, out: Path) -> Config:
    """Fixed settings: 4 completions of up to 64 tokens per step, LoRA r=16, lr 2e-4."""
    return Config(
        model=ModelConfig(
            name="embedded:smollm2-135m",
            backend="transformers",
            load_in_fp8=False,
            gradient_checkpointing=False,
            lora_rank=16,
            lora_alpha=32,
        ),
        training=TrainingConfig(
            output_dir=str(out),
            num_generations=4,
            per_device_train_batch_size=4,
            learning_rate=2e-4,
            max_steps=steps,
            max_completion_length=64,
            temperature=1.0,
            logging_steps=1,
            save_steps=10_000,
            seed=0,
        ),
        dataset=MathDataConfig(name=str(ROOT / "examples" / "math_sample.jsonl")),
        rewards={"xml_format": 1.0, "correctness": 1.0},
    )


def summarise(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Speed, memory and first-5/last-5 reward figures from the metrics rows."""
    steps = [r for r in rows if r.get("reward") is not None]
    times = [r["step_seconds"] for r in steps[1:] if r.get("step_seconds")]
    rewards = [r["reward"] for r in steps]
    head, tail = rewards[:5], rewards[-5:]
    return {
        "steps": len(steps),
        "seconds_per_step_median": round(statistics.median(times), 2) if times else None,
        "first_step_seconds": steps[0].get("step_seconds") if steps else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "reward_first5": round(statistics.mean(head), 4) if head else None,
        "reward_last5": round(statistics.mean(tail), 4) if tail else None,
        "xml_format_first5": _mean(steps[:5], "rewards/xml_format/mean"),
        "xml_format_last5": _mean(steps[-5:], "rewards/xml_format/mean"),
        "correctness_first5": _mean(steps[:5], "rewards/correctness/mean"),
        "correctness_last5": _mean(steps[-5:], "rewards/correctness/mean"),
        "wall_seconds": round(seconds, 1),
    }


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.mean(values), 4) if values else None


def versions() -> dict[str, str]:
    """Versions of what the benchmark ran on."""
    import torch
    import transformers
    import trl

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "cpu_count": str(__import__("os").cpu_count()),
        "machine": platform.machine(),
    }


def main() -> None:
    """Run the benchmark and print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "outputs" / "bench_cpu_grpo",
        help="run folder, replaced at each run",
    )
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)  # a fresh run each time, never a resumed one

    import rewards
    from autolearn.data import build_math_dataset
    from autolearn.pipeline import run_training
    from autolearn.trainer import read_metrics, setup_logging

    setup_logging()
    config = bench_config(args.steps, args.out)
    dataset = build_math_dataset(config.dataset.name)
    started = time.perf_counter()
    run_training(config, dataset, rewards.REWARDS)
    summary = summarise(read_metrics(args.out / "metrics.jsonl"), time.perf_counter() - started)
    summary["versions"] = versions()
    summary["reward_curve"] = str(args.out / "reward_curve.png")
    (args.out / "bench_summary.json").write_text(json.dumps(summary, indent=2))
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
