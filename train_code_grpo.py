#!/usr/bin/env python
"""Train a model to write code that passes tests, with GRPO and execution-based rewards.

Examples:
    python train_code_grpo.py --model unsloth/Qwen3-1.7B --dataset humaneval
    python train_code_grpo.py --model unsloth/Qwen3-4B --dataset mbpp
    python train_code_grpo.py --config code_config.yaml
    python train_code_grpo.py --dataset custom --test_file examples/custom_tests.json
"""

from __future__ import annotations

import argparse
import logging

from autolearn.cli import plural
from autolearn.config import (
    CodeDataConfig,
    Config,
    TrainingConfig,
    training_parser,
)
from autolearn.errors import run_main

logger = logging.getLogger("autolearn.train_code_grpo")

DEFAULT_REWARDS = {
    "test_pass": 0.5,
    "execution": 0.2,
    "syntax": 0.15,
    "lint": 0.1,
    "complexity": 0.05,
}


def default_config() -> Config:
    """Built-in defaults for code training (the YAML file and flags override them)."""
    return Config(
        training=TrainingConfig(output_dir="outputs/code", max_completion_length=512),
        dataset=CodeDataConfig(),
        rewards=dict(DEFAULT_REWARDS),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    parser = training_parser(
        "GRPO training on code problems, rewarded by running the code against tests "
        "(rewards from code_rewards.py). --dataset: humaneval | mbpp | mbpp-sanitized | custom | FILE",
        default_config(),
    )
    parser.add_argument(
        "--test_file",
        dest="dataset.test_file",
        metavar="FILE",
        help="problems file for --dataset custom",
    )
    parser.add_argument(
        "--eval_fraction",
        dest="dataset.eval_fraction",
        type=float,
        metavar="F",
        help="share of problems held out of training, e.g. 0.2",
    )
    return parser.parse_args(argv)


@run_main
def main() -> None:
    """Resolve the config, build the code dataset, and train."""
    args = parse_args()
    from autolearn.pipeline import run_training, start_run

    config = start_run(default_config(), args)

    from autolearn.code_data import build_code_splits

    d = config.dataset
    splits = build_code_splits(
        d.name,
        path=d.test_file if d.name == "custom" else None,
        split=d.split or None,
        max_samples=d.max_samples or None,
        eval_fraction=d.eval_fraction,
        seed=config.training.seed,
    )
    if splits.heldout_task_ids:
        out = config.training.output_dir
        logger.info(
            "%s held out of training; score them afterwards with: "
            "python eval_code.py --model %s/merged --heldout_from %s",
            plural(len(splits.heldout_task_ids), "problem"),
            out,
            out,
        )

    import code_rewards
    from autolearn.code_exec import warm_up_analysis

    # mypy parses the standard library stubs once; do it now rather than in the first step.
    from autolearn.heldout import HeldOut, require_heldout

    heldout = None
    if splits.heldout:
        problems = {p.task_id: p for p in splits.heldout}
        heldout = HeldOut("code", splits.heldout_dataset(), problems)
    require_heldout(
        config.training.eval_steps, heldout, "set dataset.eval_fraction (--eval_fraction)"
    )
    warm_up_analysis(type_check=config.rewards.get("type_safety", 0.0) > 0)
    run_training(config, splits.train, code_rewards.REWARDS, resume=args.resume, heldout=heldout)


if __name__ == "__main__":
    main()
