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

from autolearn.config import (
    BenchDataConfig,
    Config,
    TrainingConfig,
    training_parser,
)
from autolearn.errors import run_main


def default_config() -> Config:
    """Built-in defaults; the rewards default to the chosen benchmark's set (see bench_rewards.py)."""
    return Config(
        training=TrainingConfig(output_dir="outputs/bench", max_completion_length=512),
        dataset=BenchDataConfig(),
        rewards={},
    )


def fill_default_rewards(config: Config) -> None:
    """Use the benchmark's reward set, with any weights the config gives, checked by name."""
    from bench_rewards import rewards_for

    functions, weights = rewards_for(config.dataset.name, config.rewards or None)
    config.rewards = {f.__name__: w for f, w in zip(functions, weights, strict=True)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    parser = training_parser(
        "GRPO training on SWE-bench (unified-diff patches) or Terminal-Bench (shell "
        "commands run in the sandbox); rewards from bench_rewards.py."
    )
    parser.add_argument(
        "--benchmark",
        dest="dataset.name",
        choices=("swe-lite", "swe-verified", "terminal"),
        help="which benchmark to train on (default: terminal)",
    )
    parser.add_argument(
        "--data_file", dest="dataset.data_file", metavar="FILE", help="local SWE-bench file"
    )
    parser.add_argument(
        "--repos_dir", dest="dataset.repos_dir", metavar="DIR", help="local repo clones"
    )
    parser.add_argument(
        "--tasks_dir", dest="dataset.tasks_dir", metavar="DIR", help="Terminal-Bench tasks"
    )
    return parser.parse_args(argv)


@run_main
def main() -> None:
    """Resolve the config, load the benchmark's tasks, and train."""
    args = parse_args()
    from autolearn.pipeline import run_training, start_run

    config = start_run(default_config(), args, finalize=fill_default_rewards)

    from autolearn.benchmarks import load_benchmark

    d = config.dataset
    dataset = load_benchmark(
        d.name,
        max_samples=d.max_samples or None,
        data_file=d.data_file or None,
        repos_dir=d.repos_dir or None,
        tasks_dir=d.tasks_dir or None,
    )

    import bench_rewards

    run_training(config, dataset, bench_rewards.REWARDS, resume=args.resume)


if __name__ == "__main__":
    main()
