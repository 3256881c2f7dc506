#!/usr/bin/env python
"""Multi-GPU scaling: the math training script under ``accelerate launch`` with 1 and 2 GPUs.

Builds a random-weight Qwen3-1.7B-shaped model (the GPU machine has no hub access), then
runs ``train_fp8_grpo.py`` unchanged under ``examples/accelerate/ddp.yaml`` with one and two
processes, and once under ``fsdp2.yaml``, with equal per-GPU settings. Reads each run's
``metrics.jsonl`` (written by rank 0) and prints samples/s per GPU, the scaling efficiency
and peak memory per GPU.

    python bench/gpu_ddp.py --tokenizer DIR --out DIR [--steps 4] [--skip-fsdp]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def launch(
    config_file: str, processes: int, model: Path, out: Path, *, steps: int, timeout: float
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
    times = [r["step_seconds"] for r in steps_rows[1:]] or [r["step_seconds"] for r in steps_rows]
    step_s = statistics.median(times) if times else None
    per_gpu = 8 / step_s if step_s else None  # each process generates 8 completions a step
    return {
        "config": config_file,
        "processes": processes,
        "rc": rc,
        "wall_s": round(time.perf_counter() - started, 1),
        "steps_logged": len(steps_rows),
        "step_seconds_median": step_s,
        "samples_per_s_per_gpu": round(per_gpu, 3) if per_gpu else None,
        "samples_per_s_total": round(per_gpu * processes, 3) if per_gpu else None,
        "gpu_peak_gib_rank0": max((r.get("gpu_peak_gib") or 0 for r in steps_rows), default=None),
        "loss_last": steps_rows[-1].get("loss") if steps_rows else None,
        "log_tail": tail if rc != 0 else "",
    }


def main() -> None:
    """Build the model, run the cases, print and save the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=150)
    parser.add_argument("--skip-fsdp", action="store_true")
    parser.add_argument("--model", type=Path, default=Path("/tmp/qwen3-1.7b-random"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.gpu_grpo import build_model

    model = args.model
    if not (model / "config.json").is_file():
        build_model("1.7b", args.tokenizer, model)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    cases = [("ddp.yaml", 1), ("ddp.yaml", 2)] + ([] if args.skip_fsdp else [("fsdp2.yaml", 2)])
    results = []
    for config_file, processes in cases:
        out = Path(f"/tmp/gpu_ddp/{config_file.split('.')[0]}-{processes}")
        results.append(
            launch(config_file, processes, model, out, steps=args.steps, timeout=args.timeout)
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
