#!/usr/bin/env python
"""Train on SWE-bench patches or Terminal-Bench shell tasks with GRPO.

Examples:
    python train_bench_grpo.py --benchmark swe-lite --max_samples 100
    python train_bench_grpo.py --benchmark swe-verified --max_samples 100
    python train_bench_grpo.py --benchmark terminal --max_samples 25
    python train_bench_grpo.py --benchmark swe-lite --data_file examples/swe_sample.jsonl  # offline
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autolearn.benchmarks import BENCHMARKS, SWE_LOCAL_SUFFIXES
from autolearn.config import (
    BenchDataConfig,
    Config,
    TrainingConfig,
    training_parser,
)
from autolearn.errors import UserError, run_main


def default_config() -> Config:
    """Built-in defaults; without a rewards section the benchmark's own set is used."""
    return Config(
        training=TrainingConfig(output_dir="outputs/bench", max_completion_length=512),
        dataset=BenchDataConfig(),
        rewards={},
    )


def check_benchmark(name: str) -> None:
    """Reject an unknown benchmark name, pointing a local SWE-bench file to ``--data_file``."""
    if name in BENCHMARKS:
        return
    if Path(name).suffix in SWE_LOCAL_SUFFIXES:
        raise UserError(
            f"dataset.name {name!r} is a file, not a benchmark: "
            f"use --benchmark swe-lite --data_file {name}"
        )
    raise UserError(f"unknown benchmark {name!r}: choose one of {', '.join(BENCHMARKS)}")


def use_benchmark_rewards(config: Config) -> None:
    """Fill in the benchmark's reward set when the config names none, then check the names.

    A rewards section from the YAML file replaces the defaults, as in the other scripts.
    """
    from bench_rewards import check_reward_names, default_weights

    check_benchmark(config.dataset.name)
    if not config.rewards:
        config.rewards = default_weights(config.dataset.name)
    check_reward_names(config.dataset.name, config.rewards)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    parser = training_parser(
        "GRPO training on SWE-bench (unified-diff patches) or Terminal-Bench (shell "
        "commands run in the sandbox); rewards from bench_rewards.py.",
        default_config(),
        help_overrides={"--dataset": "same as --benchmark (a local SWE-bench file: --data_file)"},
    )
    parser.add_argument(
        "--benchmark",
        dest="benchmark",
        choices=BENCHMARKS,
        help=f"which benchmark to train on (default: {default_config().dataset.name})",
    )
    parser.add_argument(
        "--data_file",
        dest="dataset.data_file",
        metavar="FILE",
        help="local SWE-bench .jsonl, .json or .parquet file (with --benchmark swe-lite)",
    )
    parser.add_argument(
        "--repos_dir", dest="dataset.repos_dir", metavar="DIR", help="local repo clones (SWE-bench)"
    )
    parser.add_argument(
        "--tasks_dir",
        dest="dataset.tasks_dir",
        metavar="DIR",
        help="Terminal-Bench task folders (default: the 6 bundled examples/terminal_tasks)",
    )
    parser.add_argument(
        "--eval_fraction",
        dest="dataset.eval_fraction",
        type=float,
        metavar="F",
        help="share of tasks held out for evaluation, e.g. 0.2",
    )
    args = parser.parse_args(argv)
    merge_benchmark_flag(args)
    return args


def merge_benchmark_flag(args: argparse.Namespace) -> None:
    """``--benchmark`` and ``--dataset`` set the same thing: two different values are an error."""
    benchmark = args.benchmark
    dataset = getattr(args, "dataset.name")
    if benchmark is not None and dataset is not None and benchmark != dataset:
        raise UserError(
            f"--benchmark {benchmark} and --dataset {dataset} disagree: they are the same "
            "setting, give one of them"
        )
    if benchmark is not None:
        setattr(args, "dataset.name", benchmark)


@run_main
def main() -> None:
    """Resolve the config, load the benchmark's tasks, and train."""
    args = parse_args()
    from autolearn.pipeline import run_training, start_run

    config = start_run(default_config(), args, finalize=use_benchmark_rewards)

    from autolearn.benchmarks import load_benchmark

    d = config.dataset
    dataset = load_benchmark(
        d.name,
        max_samples=d.max_samples or None,
        data_file=d.data_file or None,
        repos_dir=d.repos_dir or None,
        tasks_dir=d.tasks_dir or None,
    )

    from autolearn.heldout import HeldOut, require_heldout, split_heldout_rows

    dataset, held = split_heldout_rows(dataset, d.eval_fraction, config.training.seed)
    heldout = HeldOut("bench", held) if held is not None else None
    require_heldout(
        config.training.eval_steps, heldout, "set dataset.eval_fraction (--eval_fraction)"
    )

    import bench_rewards

    run_training(config, dataset, bench_rewards.REWARDS, resume=args.resume, heldout=heldout)


if __name__ == "__main__":
    main()
