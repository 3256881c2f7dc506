#!/usr/bin/env python
"""Multi-GPU scaling: the math training script under ``accelerate launch`` with 1 and 2 GPUs.

Builds a random-weight Qwen3-1.7B-shaped model (the GPU machine has no hub access), then
runs ``train_fp8_grpo.py`` unchanged under ``examples/accelerate/ddp.yaml`` with one and two
processes, and once under ``fsdp2.yaml``, with equal per-GPU settings. Reads each run's
``metrics.jsonl`` (written by rank 0) and prints samples/s per GPU, the scaling efficiency
and peak memory per GPU.

    python bench/gpu_ddp.py --tokenizer DIR --out DIR [--steps 10] [--fsdp-steps 5] [--skip-fsdp]

Step times are medians over the steps after ``--warmup-steps``; each is split into rollout
(``rollout_seconds`` in metrics.jsonl: generation) and the rest (scoring, log-probs, backward,
optimizer and the gradient all-reduce).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def launch(
    config_file: str,
    processes: int,
    model: Path,
    out: Path,
    *,
    steps: int,
    warmup: int,
    timeout: float,
) -> dict[str, Any]:
    """Run one training under accelerate launch; return its throughput and memory figures."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "examples" / "accelerate" / config_file),
        "--num_processes", str(processes),
        str(ROOT / "train_fp8_grpo.py"),
        "--model", str(model), "--backend", "transformers", "--precision", "bf16",
        "--dataset", str(ROOT / "examples" / "math_sample.jsonl"),
        "--max_steps", str(steps), "--num_generations", "8", "--batch_size", "8",
        "--max_completion_length", "64", "--output_dir", str(out),
    ]  # fmt: skip
    started = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        rc: int | None = result.returncode
        tail = (result.stdout + result.stderr)[-1500:]
    except subprocess.TimeoutExpired as exc:
        rc, tail = None, str(exc.stderr or "")[-1500:]
    rows = []
    if (out / "metrics.jsonl").is_file():
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps_rows = [r for r in rows if r.get("step_seconds")]
    timed = steps_rows[warmup:] or steps_rows
    step_s = statistics.median(r["step_seconds"] for r in timed) if timed else None
    rollout_s = statistics.median(r.get("rollout_seconds") or 0.0 for r in timed) if timed else None
    per_gpu = 8 / step_s if step_s else None  # each process generates 8 completions a step
    return {
        "config": config_file,
        "processes": processes,
        "rc": rc,
        "wall_s": round(time.perf_counter() - started, 1),
        "steps_logged": len(steps_rows),
        "step_seconds_median": step_s,
        "rollout_seconds_median": rollout_s,
        "rest_seconds_median": round(step_s - rollout_s, 3) if step_s and rollout_s else None,
        "step_seconds_all": [r["step_seconds"] for r in steps_rows],
        "merged_saved": (out / "merged" / "config.json").is_file(),
        "samples_per_s_per_gpu": round(per_gpu, 3) if per_gpu else None,
        "samples_per_s_total": round(per_gpu * processes, 3) if per_gpu else None,
        "gpu_train_peak_gib_rank0": max(
            (r.get("gpu_train_peak_gib") or 0 for r in steps_rows), default=None
        ),
        "loss_last": steps_rows[-1].get("loss") if steps_rows else None,
        "log_tail": tail if rc != 0 else "",
    }


def main() -> None:
    """Build the model, run the cases, print and save the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=10, help="steps per DDP run")
    parser.add_argument("--fsdp-steps", type=int, default=5, help="steps of the FSDP2 run")
    parser.add_argument("--warmup-steps", type=int, default=2, help="steps left out of the medians")
    parser.add_argument("--timeout", type=float, default=200, help="seconds per run")
    parser.add_argument("--skip-fsdp", action="store_true")
    parser.add_argument("--model", type=Path, default=Path("/tmp/qwen3-1.7b-random"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.gpu_grpo import build_model

    model = args.model
    if not (model / "config.json").is_file():
        build_model("1.7b", args.tokenizer, model)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    cases = [("ddp.yaml", 1, args.steps), ("ddp.yaml", 2, args.steps)]
    if not args.skip_fsdp:
        cases.append(("fsdp2.yaml", 2, args.fsdp_steps))
    results = []
    for config_file, processes, steps in cases:
        out = Path(f"/tmp/gpu_ddp/{config_file.split('.')[0]}-{processes}")
        shutil.rmtree(out, ignore_errors=True)
        results.append(
            launch(
                config_file,
                processes,
                model,
                out,
                steps=steps,
                warmup=min(args.warmup_steps, steps - 1),
                timeout=args.timeout,
            )
        )
        sys.stdout.write(json.dumps(results[-1]) + "\n")
        sys.stdout.flush()
    one, two = results[0], results[1]
    if one["samples_per_s_total"] and two["samples_per_s_total"]:
        efficiency = two["samples_per_s_total"] / (2 * one["samples_per_s_total"])
        sys.stdout.write(f"scaling efficiency (2 GPUs vs 2 x 1 GPU): {efficiency:.3f}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_ddp.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
