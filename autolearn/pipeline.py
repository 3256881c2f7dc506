"""The training flow every training script shares, from resolved config to saved model.

0. (the script, after :func:`start_run`) build the dataset, so that bad data fails before a
   model loads;
1. check the batch arithmetic and the output folder (checkpoints of an earlier run, or none
   to resume from);
2. pick the backend, importing Unsloth first when it is chosen;
3. load the model with LoRA;
4. drop prompts longer than ``max_prompt_length`` tokens (training and held-out), and cap
   the held-out prompts at ``training.eval_max_prompts``;
5. run GRPO (evaluating on the held-out prompts every ``eval_steps``) and save.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from autolearn.config import Config, load_config
from autolearn.heldout import HeldOut
from autolearn.models import (
    cuda_available,
    load_training_model,
    package_available,
    select_backend,
    world_size,
)

logger = logging.getLogger(__name__)


def start_run(
    defaults: Config, args: Any, finalize: Callable[[Config], None] | None = None
) -> Config:
    """Resolve the run's config from ``defaults``, ``--config`` and the flags; set up logging.

    Also checks the output folder against ``--resume`` now, before the dataset is built.
    """
    config = load_config(defaults, args, finalize)
    from autolearn.trainer import checkpoint_to_resume, setup_logging

    setup_logging(args.verbose)
    checkpoint_to_resume(
        Path(config.training.output_dir), resume=bool(getattr(args, "resume", False))
    )
    return config


def choose_backend(config: Config) -> str:
    """Resolve ``model.backend`` for this machine; imports Unsloth right away if it is chosen.

    Unsloth patches trl and transformers when imported, so it must come before them.
    """
    backend = select_backend(
        config.model.backend,
        cuda=cuda_available(),
        unsloth_installed=package_available("unsloth"),
        processes=world_size(),
    )
    if backend == "unsloth":
        import os

        if config.model.fast_inference:
            os.environ.setdefault("UNSLOTH_VLLM_STANDBY", "1")
        import unsloth  # noqa: F401
    return backend


def run_training(
    config: Config,
    dataset: Any,
    registry: Mapping[str, Callable[..., Any]],
    *,
    resume: bool = False,
    heldout: HeldOut | None = None,
) -> Path:
    """Train on ``dataset`` (with a chat ``prompt`` column) with GRPO as ``config`` says.

    ``heldout`` is scored every ``training.eval_steps`` steps (see :mod:`autolearn.heldout`).
    """
    from autolearn.data import drop_long_prompts
    from autolearn.heldout import cap_prompts
    from autolearn.trainer import check_batch_shape, checkpoint_to_resume, train

    check_batch_shape(config)
    checkpoint_to_resume(Path(config.training.output_dir), resume=resume)
    backend = choose_backend(config)
    tm = load_training_model(config.model, backend, seed=config.training.seed)
    t = config.training
    dataset = drop_long_prompts(dataset, tm.tokenizer, t.max_prompt_length)
    if heldout is not None and t.eval_steps > 0:
        rows = drop_long_prompts(heldout.dataset, tm.tokenizer, t.max_prompt_length)
        heldout = replace(heldout, dataset=cap_prompts(rows, t.eval_max_prompts))
        logger.info(
            "held-out evaluation: %d prompts x %d completion(s) (%s) at step 0, every %d steps "
            "and at the end",
            len(heldout.dataset),
            t.eval_num_samples,
            "greedy" if t.eval_num_samples == 1 else f"sampled at temperature {t.temperature:g}",
            t.eval_steps,
        )
    return train(config, tm, dataset, registry, resume=resume, heldout=heldout)
