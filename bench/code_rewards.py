"""Benchmark the code rewards: how fast is a GRPO batch of 64 completions scored, per component?

The batch is built from HumanEval: for each of ``--problems`` problems, ``--per-problem``
completions cycling through four kinds, so that a batch looks like GRPO groups of mixed quality:

* the canonical body as a plain continuation (correct),
* the whole canonical function in a fenced chat answer (correct),
* a body that returns ``None`` (runs, fails the tests),
* a body with a syntax error (does not compile).

Every completion carries a unique comment, so each repeat scores new programs, as in training.
All seven components run, in the order TRL calls them, with cleared caches for every repeat;
mypy's disk cache of the standard library is warmed once first, as it is after a training run's
first step (``--cold-mypy`` starts without it). The reference solutions (for ``performance``)
run in the sandbox too. Prints a table and writes JSON.

    python bench/code_rewards.py --out bench/code_rewards.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import code_rewards
from autolearn import code_exec
from autolearn.code_data import CodeProblem, load_humaneval
from autolearn.sandbox import Limits, isolation_level

COMPONENT_ORDER = tuple(code_rewards.REWARDS)  # the order TRL calls them in
KINDS = ("continuation", "fenced", "wrong", "broken")


@dataclass(frozen=True)
class Batch:
    """Completions and the dataset columns TRL would pass with them."""

    prompts: list[str]
    completions: list[str]
    columns: dict[str, list[Any]]
    kinds: list[str]


def make_completion(problem: CodeProblem, kind: str, nonce: str) -> str:
    """One completion of the given kind for a HumanEval problem.

    The nonce comment makes every completion of every repeat a new program, as in training,
    so that neither the sandbox nor mypy's disk cache can reuse an earlier result.
    """
    stub = problem.code_prompt
    body = (problem.reference_solution or "")[len(stub) :]
    note = f"# attempt {nonce}\n"
    if kind == "continuation":
        return f"    {note}{body}"
    if kind == "fenced":
        return f"Here is the function:\n\n```python\n{note}{stub}{body}```\n"
    if kind == "wrong":
        return f"    {note}    return None\n"
    if kind == "endless":
        return f"    {note}    while True:\n        pass\n"
    return f"    {note}    return (\n"


def make_batch(problem_count: int, per_problem: int, repeat: int = 0, endless: int = 0) -> Batch:
    """A batch of ``problem_count * per_problem`` completions over the first HumanEval problems.

    The first ``endless`` "wrong" completions loop forever instead (they cost a sandbox timeout).
    """
    problems = load_humaneval()[:problem_count]
    prompts: list[str] = []
    completions: list[str] = []
    kinds: list[str] = []
    columns: dict[str, list[Any]] = {
        "test_code": [],
        "entry_point": [],
        "code_prompt": [],
        "reference_solution": [],
    }
    for problem in problems:
        for index in range(per_problem):
            kind = KINDS[index % len(KINDS)]
            if kind == "wrong" and kinds.count("endless") < endless:
                kind = "endless"
            prompts.append(problem.completion_prompt)
            completions.append(make_completion(problem, kind, f"{repeat}-{len(completions)}"))
            kinds.append(kind)
            columns["test_code"].append(problem.test_code)
            columns["entry_point"].append(problem.entry_point)
            columns["code_prompt"].append(problem.code_prompt)
            columns["reference_solution"].append(problem.reference_solution)
    return Batch(prompts, completions, columns, kinds)


def time_components(
    batch: Batch, rewards: dict[str, Any]
) -> tuple[dict[str, float], dict[str, list[Any]]]:
    """Seconds per component (called in TRL's order, sharing caches) and the scores."""
    seconds: dict[str, float] = {}
    scores: dict[str, list[Any]] = {}
    for name in COMPONENT_ORDER:
        start = time.perf_counter()
        scores[name] = rewards[name](batch.prompts, batch.completions, **batch.columns)
        seconds[name] = time.perf_counter() - start
    return seconds, scores


def time_in_process_test_pass(batch: Batch, rewards: dict[str, Any]) -> float:
    """Seconds of test_pass on fresh caches with the in-process fallback forced for every row."""
    code_exec.clear_caches()
    real = code_exec.driver_for
    code_exec.driver_for = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        rewards["test_pass"](batch.prompts, batch.completions, **batch.columns)
        return time.perf_counter() - start
    finally:
        code_exec.driver_for = real
        code_exec.clear_caches()


def mean_by_kind(batch: Batch, scores: dict[str, list[Any]]) -> dict[str, dict[str, float | None]]:
    """Average score of each component for each completion kind (a sanity check of the batch)."""
    table: dict[str, dict[str, float | None]] = {}
    for kind in (*KINDS, "endless"):
        picked = [i for i, k in enumerate(batch.kinds) if k == kind]
        if not picked:
            continue
        row: dict[str, float | None] = {}
        for name, values in scores.items():
            present = [values[i] for i in picked if values[i] is not None]
            row[name] = round(statistics.fmean(present), 3) if present else None
        table[kind] = row
    return table


def versions() -> dict[str, str]:
    """Versions of the tools the rewards use."""
    from importlib.metadata import version

    found = {"python": platform.python_version()}
    for package in ("ruff", "radon", "mypy", "trl"):
        try:
            found[package] = version(package)
        except Exception:  # a missing package is reported, not fatal
            found[package] = "missing"
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark and return its report."""
    load_at_start = os.getloadavg()
    batch = make_batch(args.problems, args.per_problem, repeat=-1)
    rewards = code_rewards.build_rewards(Limits(timeout_s=args.timeout))
    if args.cold_mypy:
        shutil.rmtree(code_exec.mypy_cache_dir(), ignore_errors=True)
    else:  # typeshed parsed once, as after a training run's first step
        rewards["type_safety"](batch.prompts, batch.completions, **batch.columns)
    runs = []
    in_process_test_pass = []
    scores: dict[str, list[Any]] = {}
    for repeat in range(args.repeats):
        batch = make_batch(args.problems, args.per_problem, repeat, args.endless)
        code_exec.clear_caches()
        seconds, scores = time_components(batch, rewards)
        runs.append(seconds)
        if args.compare_in_process:  # the same batch once more, verdicts in one process
            in_process_test_pass.append(time_in_process_test_pass(batch, rewards))
    median = {name: statistics.median(r[name] for r in runs) for name in COMPONENT_ORDER}
    ran = [r for r in _last_results(batch, args.timeout) if r is not None]
    total = statistics.median(sum(r.values()) for r in runs)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {_cpu_count()} CPU cores, {platform.platform()}",
        "isolation": isolation_level(),
        "isolated_share": round(sum(r.verdict == "isolated" for r in ran) / max(1, len(ran)), 4),
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
        "versions": versions(),
        "batch": {
            "completions": len(batch.completions),
            "problems": args.problems,
            "kinds": list(KINDS),
            "endless": args.endless,
            "timeout_s": args.timeout,
        },
        "repeats": args.repeats,
        "seconds_median": {k: round(v, 4) for k, v in median.items()},
        "total_seconds_median": round(total, 4),
        "completions_per_second": round(len(batch.completions) / total, 2),
        "runs": [{k: round(v, 4) for k, v in r.items()} for r in runs],
        "in_process_test_pass_seconds_median": round(statistics.median(in_process_test_pass), 4)
        if in_process_test_pass
        else None,
        "mean_score_by_kind": mean_by_kind(batch, scores),
    }


def _last_results(batch: Batch, timeout_s: float) -> list[Any]:
    """The sandbox results of the last batch's completions (from the execution cache)."""
    candidates = code_rewards.prepare_batch(batch.prompts, batch.completions, batch.columns)
    tests = batch.columns["test_code"]
    return code_exec.run_candidates(candidates, tests, Limits(timeout_s=timeout_s))


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    total = report["total_seconds_median"]
    lines = [
        f"code rewards: {report['batch']['completions']} completions, "
        f"median of {report['repeats']}, isolation={report['isolation']}, "
        f"isolated verdicts {report['isolated_share']:.0%}, load average "
        f"{report['load_average']['start'][0]:.1f} -> {report['load_average']['end'][0]:.1f}",
        f"{'component':<12} {'seconds':>8} {'share':>7}",
    ]
    for name, seconds in report["seconds_median"].items():
        lines.append(f"{name:<12} {seconds:>8.3f} {seconds / total:>7.1%}")
    lines.append(
        f"{'total':<12} {total:>8.3f}   -> {report['completions_per_second']} completions/s"
    )
    if report["in_process_test_pass_seconds_median"] is not None:
        lines.append(
            f"test_pass with in-process verdicts instead, same batches: "
            f"{report['in_process_test_pass_seconds_median']:.3f} s"
        )
    lines.append("mean score by completion kind:")
    for kind, row in report["mean_score_by_kind"].items():
        cells = " ".join(f"{k}={'-' if v is None else v}" for k, v in row.items())
        lines.append(f"  {kind:<13} {cells}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=16, help="HumanEval problems in the batch")
    parser.add_argument("--per-problem", type=int, default=4, help="completions per problem")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    parser.add_argument("--timeout", type=float, default=3.0, help="sandbox timeout per run (s)")
    parser.add_argument(
        "--endless", type=int, default=0, help="make this many wrong completions loop forever"
    )
    parser.add_argument("--cold-mypy", action="store_true", help="start without mypy's disk cache")
    parser.add_argument(
        "--compare-in-process",
        action="store_true",
        help="also time test_pass with in-process verdicts on each batch",
    )
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    report = run(args)
    print(format_table(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
