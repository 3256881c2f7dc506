"""The training flow every training script shares, from resolved config to saved model.

0. :func:`start_run`: resolve the config, check the environment (reporting packages) and the
   output folder (:mod:`autolearn.rundir`), then pick the backend, importing Unsloth before
   anything imports transformers, peft or trl;
1. (the script) build the dataset, so that bad data fails before a model loads;
2. :func:`run_training`: check the batch arithmetic and the output folder once more, and
   plan a ``model.gpu_memory_gb`` budget (:mod:`autolearn.memory_plan`; checked in step 0
   too, so that a budget too small fails before the dataset is built);
3. load the model with LoRA (on a GPU, the device-wide memory is sampled from here on);
4. drop prompts longer than ``max_prompt_length`` tokens (training and held-out), and cap
   the held-out prompts at ``training.eval_max_prompts``;
5. run GRPO (evaluating on the held-out prompts every ``eval_steps``) and save.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from autolearn.cli import plural
from autolearn.config import Config, load_config
from autolearn.errors import UserError
from autolearn.gpu_memory import start_device_poller
from autolearn.heldout import HeldOut
from autolearn.memory_plan import GB, MemoryPlan
from autolearn.models import (
    cuda_available,
    load_training_model,
    local_device,
    main_process,
    package_available,
    select_backend,
    training_checkpoint,
    world_size,
)
from autolearn.rundir import check_run_dir, read_run_record, update_run_record

logger = logging.getLogger(__name__)


def start_run(
    defaults: Config, args: Any, finalize: Callable[[Config], None] | None = None
) -> Config:
    """Resolve the run's config from ``defaults``, ``--config`` and the flags; set up logging.

    Also checks the reporting packages and the output folder now, before the dataset is built, and then picks the backend: Unsloth, when
    chosen, must be imported before transformers, peft and trl, which building the dataset
    and the rewards may import.
    """
    config = load_config(defaults, args, finalize)
    from autolearn.trainer import setup_logging

    setup_logging(args.verbose)
    check_reporting(config.training.report_to)
    check_output_dir(config, resume=bool(getattr(args, "resume", False)), claim=False)
    backend = choose_backend(config)
    plan_memory(config, backend)
    return config


# The package each ``report_to`` integration imports (transformers' integrations).
REPORTING_PACKAGES = {
    "azure_ml": "azureml",
    "comet_ml": "comet_ml",
    "mlflow": "mlflow",
    "neptune": "neptune",
    "tensorboard": "tensorboard",
    "trackio": "trackio",
    "wandb": "wandb",
    "codecarbon": "codecarbon",
    "clearml": "clearml",
    "dagshub": "dagshub",
    "flyte": "flytekit",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
    "kubeflow": "kubeflow",
}


def check_reporting(report_to: str) -> None:
    """Refuse a ``report_to`` integration whose package is not installed (before the load)."""
    package = REPORTING_PACKAGES.get(report_to)
    if package is None or package_available(package):
        return
    if report_to == "tensorboard" and package_available("tensorboardX"):
        return
    raise UserError(
        f"--report_to {report_to} needs the {package} package, which is not installed: "
        f"pip install {package}, or use --report_to none"
    )


def check_output_dir(config: Config, *, resume: bool, claim: bool) -> str | None:
    """Check the output folder for this run (see :func:`autolearn.rundir.check_run_dir`).

    With ``claim``, the main process also takes the folder for the run (writes ``run.json``).
    """
    return check_run_dir(
        Path(config.training.output_dir),
        resume=resume,
        max_steps=config.training.max_steps,
        claim=claim and main_process(),
        writer=main_process(),
    )


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

        set_standby(config, os.environ)
        import unsloth  # noqa: F401
    return backend


def set_standby(config: Config, environ: MutableMapping[str, str]) -> None:
    """Set Unsloth's vLLM standby (``UNSLOTH_VLLM_STANDBY``, read when Unsloth is imported).

    On by default with ``fast_inference`` (a value the user set is kept). Off under a
    ``model.gpu_memory_gb`` budget, whatever was set: standby would replace the planned vLLM
    share with most of the card (autolearn/memory_plan.py says more).
    """
    if config.model.gpu_memory_gb is not None:
        if environ.get("UNSLOTH_VLLM_STANDBY", "0") != "0":
            logger.warning("gpu_memory_gb is set: Unsloth's vLLM standby is turned off")
        environ["UNSLOTH_VLLM_STANDBY"] = "0"
    elif config.model.fast_inference:
        environ.setdefault("UNSLOTH_VLLM_STANDBY", "1")


def vllm_engine(config: Config, backend: str, *, vllm_usable: bool | None = None) -> str:
    """Who runs vLLM in this process: ``unsloth``, ``trl`` (colocate) or ``none``.

    ``vllm_usable`` (default: this machine has CUDA and vLLM) lets a benchmark plan for the
    GPU machine from another one.
    """
    if vllm_usable is None:
        vllm_usable = cuda_available() and package_available("vllm")
    if not (config.model.fast_inference and vllm_usable):
        return "none"
    if backend == "unsloth":
        return "unsloth"
    return "trl" if config.training.vllm_mode == "colocate" else "none"


def plan_memory(config: Config, backend: str, *, force_budget: bool = False) -> MemoryPlan | None:
    """The plan of a ``model.gpu_memory_gb`` budget (None without one), from config.json only.

    A budget that cannot hold the model, or that is more than the GPU has, is a UserError.
    Without a GPU the budget is checked for the precision asked for, but not applied.
    ``force_budget`` (benchmarks that test the estimate, never a user setting) plans a budget
    below the estimate anyway, with a warning (:func:`autolearn.memory_plan.plan_split`).
    """
    budget = config.model.gpu_memory_gb
    if budget is None:
        return None
    from transformers import AutoConfig

    from autolearn.memory_plan import ModelShape, plan_split, workload_for

    path = training_checkpoint(config.model.name)
    try:
        shape = ModelShape.from_config(AutoConfig.from_pretrained(path))
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"cannot plan gpu_memory_gb for {config.model.name}: {exc}") from None
    total = free = None
    if cuda_available():
        import torch

        free, total = torch.cuda.mem_get_info(local_device())
    return plan_split(
        budget,
        config.model.name,
        shape,
        workload_for(config, engine=vllm_engine(config, backend), backend=backend),
        device_total=total,
        device_free=free,
        force=force_budget,
    )


def apply_memory_plan(config: Config, plan: MemoryPlan) -> None:
    """Put the plan in force before the model loads: vLLM's share and torch's cap."""
    if plan.torch_fraction is None:
        logger.warning(
            "no GPU here: gpu_memory_gb %g is checked (estimate %.1f GB) but not applied",
            plan.budget_gb,
            plan.estimate.total / GB,
        )
        return
    import torch

    if plan.gpu_memory_utilization is not None:
        config.model.gpu_memory_utilization = plan.gpu_memory_utilization
    torch.cuda.set_per_process_memory_fraction(plan.torch_fraction, local_device())


def run_training(
    config: Config,
    dataset: Any,
    registry: Mapping[str, Callable[..., Any]],
    *,
    resume: bool = False,
    heldout: HeldOut | None = None,
    force_budget: bool = False,
) -> Path:
    """Train on ``dataset`` (with a chat ``prompt`` column) with GRPO as ``config`` says.

    ``heldout`` is scored every ``training.eval_steps`` steps (see :mod:`autolearn.heldout`).
    ``force_budget``: see :func:`plan_memory` (``bench/gpu_memory.py --budget-override``).
    On a GPU the device-wide peak (``gpu_device_peak_gib``) is sampled from just before the
    model loads until this returns or raises; under a budget it is then checked against it.
    """
    from autolearn.trainer import train

    backend, plan = prepare_training(config, registry, resume=resume, force_budget=force_budget)
    poller = start_device_poller(local_device())  # the load, vLLM's start, training, the save
    try:
        tm = load_training_model(
            config.model,
            backend,
            seed=config.training.seed,
            vllm_max_num_seqs=plan.vllm_max_num_seqs if plan else None,
        )
        dataset, heldout = fit_prompts(config, tm.tokenizer, dataset, heldout)
        return train(
            config,
            tm,
            dataset,
            registry,
            resume=resume,
            heldout=heldout,
            memory_plan=plan,
            device_poller=poller,
        )
    finally:
        if poller is not None:
            poller.stop()
            if plan is not None and main_process():
                report_peak_against_budget(Path(config.training.output_dir), plan, poller.peak_used)


def report_peak_against_budget(output_dir: Path, plan: MemoryPlan, device_peak: int) -> None:
    """Say whether the run stayed inside its ``gpu_memory_gb``: in the log and ``run.json``.

    ``device_peak`` (bytes) is this GPU's: rank 0's under several GPUs. A resumed run with the
    same budget keeps the highest peak of its sessions. It runs on the way out of a crash too,
    so it never raises.
    """
    if device_peak <= 0:  # stopped before its first sample: nothing to say
        return
    try:
        earlier = earlier_peak(read_run_record(output_dir), plan.budget_gb)
    except Exception:  # an unreadable record has no earlier peak to keep
        earlier = 0
    worst = max(device_peak, earlier)
    message = plan.over_budget_message(worst)
    if message is None:
        logger.info("device-wide peak %.2f GB, inside gpu_memory_gb %g", worst / GB, plan.budget_gb)
    else:
        logger.warning(
            ("in an earlier session of this run, " if earlier > device_peak else "") + message
        )
    try:
        update_run_record(output_dir, budget_check=plan.check_peak(worst))
    except Exception as exc:  # called in a finally: never mask the run's own error
        logger.warning("could not record the budget check in run.json: %s", exc)


def earlier_peak(record: Mapping[str, Any] | None, budget_gb: float) -> int:
    """The device-wide peak (bytes) earlier sessions recorded against this budget, else 0."""
    check = (record or {}).get("budget_check")
    if not isinstance(check, Mapping) or check.get("budget_gb") != budget_gb:
        return 0
    peak = check.get("device_peak_gb")
    if not isinstance(peak, int | float) or not math.isfinite(peak) or peak < 0:
        return 0
    return int(peak * GB)


def prepare_training(
    config: Config,
    registry: Mapping[str, Callable[..., Any]],
    *,
    resume: bool,
    force_budget: bool,
) -> tuple[str, MemoryPlan | None]:
    """Check the run before the load, pick the backend and put the memory plan in force.

    Returns the backend and the plan (None without ``model.gpu_memory_gb``).
    """
    from autolearn.trainer import check_batch_shape, check_reward_kwargs

    check_reward_kwargs(config, registry)
    check_batch_shape(config)
    check_reporting(config.training.report_to)
    check_output_dir(config, resume=resume, claim=True)
    backend = choose_backend(config)
    plan = plan_memory(config, backend, force_budget=force_budget)
    if plan is not None:
        apply_memory_plan(config, plan)
    return backend, plan


def fit_prompts(
    config: Config, tokenizer: Any, dataset: Any, heldout: HeldOut | None
) -> tuple[Any, HeldOut | None]:
    """Drop prompts over ``max_prompt_length`` tokens; cap the held-out ones, if used."""
    from autolearn.data import drop_long_prompts
    from autolearn.heldout import cap_prompts

    t = config.training
    dataset = drop_long_prompts(dataset, tokenizer, t.max_prompt_length)
    if heldout is not None and t.eval_steps > 0:
        rows = drop_long_prompts(heldout.dataset, tokenizer, t.max_prompt_length)
        heldout = replace(heldout, dataset=cap_prompts(rows, t.eval_max_prompts))
        logger.info(
            "held-out evaluation: %s x %s (%s) at step 0, every %s and at the end",
            plural(len(heldout.dataset), "prompt"),
            plural(t.eval_num_samples, "completion"),
            "greedy" if t.eval_num_samples == 1 else f"sampled at temperature {t.temperature:g}",
            "step" if t.eval_steps == 1 else f"{t.eval_steps} steps",
        )
    return dataset, heldout
