#!/usr/bin/env python
"""Train a model on math word problems with GRPO (FP8 on capable GPUs).

Examples:
    python train_fp8_grpo.py --config config.yaml
    python train_fp8_grpo.py --model unsloth/Qwen3-4B --dataset openai/gsm8k --max_samples 500
    python train_fp8_grpo.py --config examples/cpu_demo.yaml        # CPU demo, embedded model
    python train_fp8_grpo.py --dataset rg:basic_arithmetic --eval_steps 20  # reasoning-gym task
"""

from __future__ import annotations

import argparse

from autolearn.config import Config, MathDataConfig, training_parser
from autolearn.errors import run_main

DEFAULT_REWARDS = {"correctness": 1.0, "xml_format": 0.3, "format": 0.2, "reasoning": 0.1}


def default_config() -> Config:
    """Built-in defaults for math training (the YAML file and flags override them)."""
    return Config(dataset=MathDataConfig(), rewards=dict(DEFAULT_REWARDS))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    description = "GRPO training on GSM8K-style math problems, with the rewards of rewards.py."
    parser = training_parser(
        description,
        default_config(),
        help_overrides={
            "--dataset": "hub name, local .jsonl/.json/.parquet file, or rg:NAME (a reasoning-gym "
            "generator, e.g. rg:basic_arithmetic)"
        },
    )
    parser.add_argument(
        "--eval_fraction",
        dest="dataset.eval_fraction",
        type=float,
        metavar="F",
        help="share of problems held out for evaluation, e.g. 0.1",
    )
    return parser.parse_args(argv)


@run_main
def main() -> None:
    """Resolve the config, build the math dataset, and train."""
    args = parse_args()
    from autolearn.pipeline import run_training, start_run

    config = start_run(default_config(), args)

    from autolearn.data import build_math_splits
    from autolearn.heldout import HeldOut, require_heldout

    t = config.training
    dataset, held = build_math_splits(
        config.dataset, seed=t.seed, eval_prompts=t.eval_max_prompts, evaluate=t.eval_steps > 0
    )
    heldout = HeldOut("math", held) if held is not None else None
    require_heldout(
        t.eval_steps, heldout, "set dataset.eval_fraction (--eval_fraction) or dataset.eval_name"
    )

    import rewards

    run_training(config, dataset, rewards.REWARDS, resume=args.resume, heldout=heldout)


if __name__ == "__main__":
    main()
