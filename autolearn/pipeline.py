"""The training flow every training script shares, from resolved config to saved model.

0. (the script, after :func:`start_run`) build the dataset, so that bad data fails before a
   model loads;
1. check the batch arithmetic and the output folder (checkpoints of an earlier run, or none
   to resume from);
2. pick the backend, importing Unsloth first when it is chosen;
3. load the model with LoRA;
4. drop prompts longer than ``max_prompt_length`` tokens;
5. run GRPO and save.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autolearn.config import Config, load_config
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
) -> Path:
    """Train on ``dataset`` (with a chat ``prompt`` column) with GRPO as ``config`` says."""
    from autolearn.data import drop_long_prompts
    from autolearn.trainer import (
        check_batch_shape,
        check_reward_kwargs,
        checkpoint_to_resume,
        train,
    )

    check_reward_kwargs(config, registry)
    check_batch_shape(config)
    checkpoint_to_resume(Path(config.training.output_dir), resume=resume)
    backend = choose_backend(config)
    tm = load_training_model(config.model, backend, seed=config.training.seed)
    dataset = drop_long_prompts(dataset, tm.tokenizer, config.training.max_prompt_length)
    return train(config, tm, dataset, registry, resume=resume)
