"""Model backends: where a model name points, which backend trains it, and how it is loaded.

Backends:
    ``unsloth``       CUDA only. Unsloth's ``FastLanguageModel`` with FP8 weights
                      (``load_in_fp8``) and, with ``fast_inference``, a colocated vLLM engine
                      that shares the weights (``UNSLOTH_VLLM_STANDBY=1``).
    ``transformers``  transformers + PEFT LoRA. On GPUs with FP8 support the frozen base
                      weights are stored in FP8 (:mod:`autolearn.fp8`); TRL's colocated vLLM
                      does the rollouts when vLLM is installed. This is also the CPU path (fp32).

Model names: ``embedded:smollm2-135m`` (shipped with the toolkit), a local directory (a
full checkpoint, or a LoRA adapter whose base is loaded first), or a hub name.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autolearn.config import ModelConfig
from autolearn.embedded import embedded_checkpoint, fix_tokenizer, is_embedded
from autolearn.errors import UserError
from autolearn.hub import require_hub

logger = logging.getLogger(__name__)

FP8_MIN_CAPABILITY = (8, 9)  # Ada and Hopper have FP8 tensor cores


# --------------------------------------------------------------------------- environment


def cuda_available() -> bool:
    """Whether a CUDA GPU can be used (imports torch)."""
    import torch

    return bool(torch.cuda.is_available())


def fp8_capable() -> bool:
    """Whether the current GPU has FP8 tensor cores (compute capability >= 8.9)."""
    import torch

    return cuda_available() and torch.cuda.get_device_capability() >= FP8_MIN_CAPABILITY


def package_available(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it."""
    return importlib.util.find_spec(name) is not None


def world_size() -> int:
    """Number of training processes (``accelerate launch`` / torchrun set ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def main_process() -> bool:
    """Whether this is the process that writes the run's files (rank 0, or the only one)."""
    return int(os.environ.get("RANK", "0")) == 0


def select_backend(
    requested: str, *, cuda: bool, unsloth_installed: bool, processes: int = 1
) -> str:
    """Pick the training backend.

    ``auto`` means Unsloth when a CUDA GPU is present, Unsloth is installed and a single
    process trains; otherwise transformers. An explicit ``unsloth`` that cannot run is an error.
    """
    if requested == "transformers":
        return "transformers"
    if requested == "unsloth":
        if not cuda:
            raise UserError("backend 'unsloth' needs a CUDA GPU; use --backend transformers on CPU")
        if not unsloth_installed:
            raise UserError(
                "backend 'unsloth' needs the unsloth package: pip install -r requirements-gpu.txt"
            )
        if processes > 1:
            raise UserError(
                f"backend 'unsloth' trains on one GPU only, but {processes} processes were launched; "
                "use --backend transformers under accelerate launch"
            )
        return "unsloth"
    if requested != "auto":
        raise UserError(f"unknown backend '{requested}'; choose auto, unsloth or transformers")
    return "unsloth" if cuda and unsloth_installed and processes == 1 else "transformers"


# --------------------------------------------------------------------------- names and paths


def looks_like_path(name: str) -> bool:
    """A name the user meant as a local path (not a hub id like ``org/model``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def resolve_model_path(name: str) -> str:
    """Turn a model name into something ``from_pretrained`` can load without surprises.

    Embedded names become their converted checkpoint, local paths are checked, and hub
    names are looked up in the local cache first, then (if reachable) on the hub.
    """
    if not name:
        raise UserError("no model given: set model.name in the config or pass --model")
    if is_embedded(name):
        return str(embedded_checkpoint(name))
    if looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise UserError(f"model path not found: {name}")
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise UserError(
                f"{name} holds neither a model (config.json) nor a LoRA adapter (adapter_config.json)"
            )
        return str(path)
    if not _in_hub_cache(name):
        require_hub(f"model '{name}'")
    return name


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def adapter_base(path: str) -> str | None:
    """The base model a LoRA adapter directory was trained on, or ``None`` for a full model."""
    adapter_config = Path(path) / "adapter_config.json"
    if not adapter_config.is_file():
        return None
    base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{adapter_config} names no base_model_name_or_path")
    return str(base)


def torch_dtype(name: str, *, cuda: bool) -> Any:
    """The torch dtype for a config ``dtype`` string.

    ``auto`` is bf16 on a GPU that supports it, fp16 on older GPUs (a T4 has no bf16), and
    fp32 on the CPU.
    """
    import torch

    if name == "auto":
        if not cuda:
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    table = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if name not in table:
        raise UserError(f"model.dtype must be auto, bfloat16, float16 or float32, got {name!r}")
    return table[name]


# --------------------------------------------------------------------------- loading


@dataclass
class TrainingModel:
    """A model ready for GRPO, with what the trainer setup needs to know about it."""

    model: Any
    tokenizer: Any
    backend: str
    fp8: bool
    vllm: bool  # rollouts through vLLM (Unsloth's engine or TRL's)
    base_path: str = ""  # the 16-bit checkpoint the model was loaded from (merging goes there)
    vllm_device_bytes: int | None = None  # device memory vLLM's start took (autolearn.gpu_memory)


def load_tokenizer(path: str) -> Any:
    """Load a tokenizer and make sure it can pad."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_pretrained(path: str, **kwargs: Any) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise UserError(f"could not load model '{path}': {exc}") from None


def training_checkpoint(name: str) -> str:
    """Resolve a model name to train from; a LoRA adapter is refused (train from its base)."""
    path = resolve_model_path(name)
    if adapter_base(path):
        raise UserError(f"{name} is a LoRA adapter; train from its merged model or its base model")
    return path


def load_training_model(
    cfg: ModelConfig, backend: str, *, seed: int, vllm_max_num_seqs: int | None = None
) -> TrainingModel:
    """Load the model named in ``cfg`` with ``backend`` and wrap it with LoRA.

    ``vllm_max_num_seqs``: the sequences Unsloth's vLLM engine decodes at once (a memory plan's
    ``vllm_max_num_seqs``); None lets Unsloth pick it from the memory it finds free.
    """
    path = training_checkpoint(cfg.name)
    if backend == "unsloth":
        return _load_unsloth(cfg, path, seed=seed, vllm_max_num_seqs=vllm_max_num_seqs)
    return _load_transformers(cfg, path)


def _load_unsloth(
    cfg: ModelConfig, path: str, *, seed: int, vllm_max_num_seqs: int | None
) -> TrainingModel:
    from unsloth import FastLanguageModel  # imported (with its environment) by the pipeline

    fast_inference = cfg.fast_inference and package_available("vllm")
    if cfg.fast_inference and not fast_inference:
        logger.warning(
            "fast_inference needs vLLM, which is not installed; generating with transformers"
        )
    from autolearn.gpu_memory import cuda_tensor_bytes, device_growth

    budgeted_fp8 = fast_inference and cfg.load_in_fp8 and cfg.gpu_memory_gb is not None
    estimate = _unsloth_counts_fp8_weights() if budgeted_fp8 else None
    engine_args = (
        {"max_num_seqs": vllm_max_num_seqs} if fast_inference and vllm_max_num_seqs else {}
    )
    with device_growth() as growth, estimate or contextlib.nullcontext():
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=path,
            max_seq_length=cfg.max_seq_length,
            dtype=torch_dtype(cfg.dtype, cuda=True),
            load_in_4bit=False,
            load_in_fp8=cfg.load_in_fp8,
            fast_inference=fast_inference,
            max_lora_rank=cfg.lora_rank,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            **engine_args,
        )
    vllm_bytes = None
    if fast_inference and growth.nbytes is not None:
        # vLLM's start less the weights, which the trainer shares (gpu_memory.py says more)
        vllm_bytes = max(growth.nbytes - cuda_tensor_bytes(model), 0)
    if cfg.load_in_fp8:
        _disable_inductor_autotuning()
    model = FastLanguageModel.get_peft_model(
        model,
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False,
        random_state=seed,
    )
    return TrainingModel(
        model,
        tokenizer,
        "unsloth",
        fp8=cfg.load_in_fp8,
        vllm=fast_inference,
        base_path=path,
        vllm_device_bytes=vllm_bytes,
    )


@contextlib.contextmanager
def _unsloth_counts_fp8_weights() -> Iterator[None]:
    """Make Unsloth's pre-start estimate of vLLM's weights count online FP8 as 8-bit.

    Before starting vLLM, ``unsloth_zoo.vllm_utils.load_vllm`` sizes the KV cache from
    ``vllm_weights_memory_usage``, which counts a 16-bit checkpoint at 16 bits even when
    ``load_in_fp8`` has vLLM quantize it as it loads. Under a tight ``gpu_memory_utilization``
    (a memory budget) that leaves no cache in its estimate, and Unsloth then shortens
    ``max_seq_length`` until vLLM rejects the rollouts' prompts. Its own 8-bit factor is used
    instead, which still over-counts FP8 weights (1.25 bytes a weight against 1 and a scale).
    Only under a budget: without one, standby gives vLLM most of the card and nothing changes.
    """
    try:
        from unsloth_zoo import vllm_utils
    except ImportError:
        yield
        return
    original = vllm_utils.vllm_weights_memory_usage

    def counted_as_8bit(config: Any, load_in_4bit: bool = False, load_in_8bit: bool = False) -> Any:
        return original(config, load_in_4bit=load_in_4bit, load_in_8bit=True)

    vllm_utils.vllm_weights_memory_usage = counted_as_8bit
    try:
        yield
    finally:
        vllm_utils.vllm_weights_memory_usage = original


def _disable_inductor_autotuning() -> None:
    """Turn off inductor's coordinate-descent tuning, which torchao's FP8 config switches on.

    With it on, compiling Unsloth's FP8 decoder layers sat in autotuning for minutes on an
    H100 before the first step; with it off the first step finished (see docs/PERFORMANCE.md).
    """
    import torch._inductor.config as inductor_config

    inductor_config.coordinate_descent_tuning = False
    inductor_config.coordinate_descent_check_all_directions = False


def local_device() -> int:
    """This process's GPU: ``LOCAL_RANK`` under ``accelerate launch``/torchrun, else 0."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def _load_transformers(cfg: ModelConfig, path: str) -> TrainingModel:
    from peft import LoraConfig, get_peft_model

    cuda = cuda_available()
    if cuda:  # under accelerate launch, this process's GPU, before anything lands on GPU 0
        import torch

        torch.cuda.set_device(local_device())
    dtype = torch_dtype(cfg.dtype, cuda=cuda)
    use_fp8 = cfg.load_in_fp8 and _fp8_possible(cuda, dtype)
    model = _load_pretrained(path, dtype=dtype)
    if cuda and not use_fp8:
        model.to("cuda")
    tokenizer = load_tokenizer(path)
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    if use_fp8:
        from autolearn.fp8 import quantize_frozen_linears

        # Quantize layer by layer on the way from the CPU to the GPU, so the 16-bit weights
        # never sit on the GPU all at once: the load peaks near the FP8 size, not the bf16 one.
        count = quantize_frozen_linears(model, device="cuda")
        model.to("cuda")
        logger.info("stored %d frozen base linear layers in FP8", count)
    vllm = cfg.fast_inference and cuda and package_available("vllm")
    return TrainingModel(model, tokenizer, "transformers", fp8=use_fp8, vllm=vllm, base_path=path)


def _fp8_possible(cuda: bool, dtype: Any) -> bool:
    """Whether FP8 base weights can be used here; if not, say why and what is used instead."""
    dtype_name = str(dtype).removeprefix("torch.")
    if not cuda or not fp8_capable():
        where = "a CUDA GPU" if not cuda else "a GPU with compute capability >= 8.9"
        logger.warning("FP8 needs %s; training goes on in %s", where, dtype_name)
        return False
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        # FSDP shards parameters; FP8 weights are buffers, which it neither shards nor can
        # hand to vLLM.
        logger.warning(
            "FP8 base weights do not work under FSDP; training goes on in %s", dtype_name
        )
        return False
    return True


def prepare_trainer(trainer: Any, tm: TrainingModel) -> None:
    """Backend-specific fixes to a constructed ``GRPOTrainer``, before training starts.

    With FP8 base weights and TRL's colocated vLLM, TRL's weight push would skip the FP8
    layers (they are buffers PEFT cannot merge into), so vLLM would keep sampling from the
    initial model; :func:`autolearn.fp8.install_vllm_weight_sync` adds them.
    """
    if tm.backend == "transformers" and tm.fp8 and tm.vllm:
        from autolearn.fp8 import install_vllm_weight_sync

        if not install_vllm_weight_sync(trainer):
            raise UserError(
                "this TRL version offers no hook to send FP8 weights to vLLM, so vLLM would "
                "sample from the untrained model; use --precision bf16 or fast_inference: false"
            )


def merge_adapter_into_base(tm: TrainingModel, adapter_dir: Path, merged_dir: Path) -> Path:
    """Merge a saved LoRA adapter into the 16-bit base checkpoint it was trained on.

    For FP8 training the adapter is merged into the original weights read from
    ``tm.base_path``, not into the FP8-rounded copy on the GPU, the way QLoRA adapters are
    merged. The merge runs on the CPU, so it needs no GPU memory beside the training run.
    """
    from peft import PeftModel

    if not tm.base_path:
        raise UserError("cannot merge: the training model does not name its base checkpoint")
    base = _load_pretrained(tm.base_path, dtype="auto")  # the checkpoint's own dtype
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(merged_dir)
    tm.tokenizer.save_pretrained(merged_dir)
    return merged_dir


def load_inference_model(
    name: str, *, dtype: str = "auto", device: str | None = None
) -> tuple[Any, Any]:
    """Load a model for generation: a merged dir, a LoRA adapter dir, a hub name or an embedded one."""
    path = resolve_model_path(name)
    cuda = cuda_available()
    kwargs = {"dtype": torch_dtype(dtype, cuda=cuda)}
    base = adapter_base(path)
    if base is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(
            _load_pretrained(resolve_model_path(base), **kwargs), path
        )
        model = model.merge_and_unload()
        tokenizer_path = (
            path if (Path(path) / "tokenizer_config.json").is_file() else resolve_model_path(base)
        )
    else:
        model = _load_pretrained(path, **kwargs)
        tokenizer_path = path
    tokenizer = load_tokenizer(tokenizer_path)
    if is_embedded(name):
        fix_tokenizer(tokenizer)
    model.to(device or ("cuda" if cuda else "cpu"))
    model.eval()
    return model, tokenizer
