"""Standalone vLLM 0.24 decode speed: FP8 schemes against BF16, and how near each gets to the weight-read bound.

Issue 16, section 2, first part. Each (shape, option) gets one engine in its own child process
(vLLM leaks device memory between engines in one process); every batch size is measured in that
engine. Random-weight Qwen3 models of the 8B and 14B shapes (vocab 151936, untied), no tokenizer
(``skip_tokenizer_init=True``, prompts of random token ids).

Options, and how vLLM 0.24 is asked for them on Hopper (kernels read from vLLM's source and
confirmed from the engine's own ``Selected ... for ...`` log lines, which the report quotes):

    bf16            no quantization                            cuBLAS BF16 GEMM
    ptpc            quantization="fp8_per_channel"             Fp8PtpcOnlineLinearMethod, CUTLASS;
                    (what Unsloth's load_in_fp8=True passes:   per-channel weight scales, per-token
                    today's default GPU path)                  dynamic activation quantization
    fp8_tensor      quantization="fp8" on a BF16 checkpoint    Fp8PerTensorOnlineLinearMethod, CUTLASS;
                                                               per-tensor weight scale, per-token
                                                               dynamic activations (CUTLASS present)
    fp8_block       quantization="fp8_per_block"               Fp8PerBlockOnlineLinearMethod, CUTLASS
                                                               block-scaled GEMM; 128x128 weight
                                                               blocks, 1x128 dynamic activation groups
    fp8_static      an FP8 checkpoint this script writes:      Fp8LinearMethod, CUTLASS; per-tensor
                    quant_method fp8, activation_scheme static weight and static activation scales
    fp8_block_ckpt  an FP8 checkpoint this script writes:      Fp8LinearMethod, CUTLASS block-scaled
                    weight_block_size [128,128], weight_scale_inv
    fp8_marlin      quantization="fp8" with                    MarlinFP8ScaledMMLinearKernel: FP8
                    VLLM_TEST_FORCE_FP8_MARLIN=1               weights, BF16 activations (W8A16)

Weights: ``--weights dummy`` (default) gives vLLM a config.json only and ``load_format="dummy"``:
vLLM fills the weights with random values (its own loader runs the online FP8 quantization on
them), so no 28 GB checkpoint is written or read. Decode speed does not depend on the values.
The two checkpoint options always write a real FP8 checkpoint from random weights, on the GPU,
and delete it after their case. ``--weights checkpoint`` writes a random BF16 checkpoint per shape
for the other options too (it costs disk and time: 16 GB at 8B, 29 GB at 14B).

Per batch (8, 32, 128 sequences by default): a short warm-up, a prefill-only pass (1 token), then
the timed pass (``min_tokens=max_tokens=256``, ``ignore_eos``, temperature 1), each on fresh random
prompts of 256 tokens, prefix caching off. Reported: generated tok/s end to end, decode tok/s
(the timed pass minus the prefill pass), the engine start time, and the weight-read bound:
bytes of weights one decode step reads (from the engine's real parameter dtypes; the embedding
table is a gather of a few rows, so it is left out; lm_head is read whole) over the measured
device bandwidth, times the batch. The bandwidth comes from a 4 GiB device copy (read + write
counted, 2x bytes) and a 4 GiB read-only reduction; the bound uses the larger. A second bound
adds the KV cache each step reads at the mean context length.

    python bench/gpu_vllm_fp8.py --export "$OUT"                     # default plan, GPU
    python bench/gpu_vllm_fp8.py --options bf16,ptpc --shapes 14b --batches 32
    python bench/gpu_vllm_fp8.py --dry-run --export /tmp/plan        # CPU: plan, bounds, checkpoints
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from autolearn.memory_plan import shape_of  # noqa: E402
from bench.gpu_grpo import SHAPES, child_environment, environment_report  # noqa: E402

logger = logging.getLogger("bench.gpu_vllm_fp8")

GIB = 1 << 30
VOCAB_SIZE = 151936  # Qwen3's real vocabulary
BLOCK = 128  # DeepSeek-style weight block edge
FP8_MAX = 448.0  # largest float8_e4m3fn value
# Static activation scale written into the fp8_static checkpoint: not calibrated (the weights
# are random), chosen so that RMS-normalised activations of a few units fit. Speed, not accuracy,
# is measured; a static scale's cost is the same whatever its value.
STATIC_INPUT_AMAX = 8.0
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """One way of running the model's linear layers in vLLM."""

    name: str
    title: str
    quantization: str | None = None  # LLM(quantization=...)
    checkpoint: str = ""  # "" (BF16 / dummy), "static" or "block": an FP8 checkpoint to write
    env: tuple[tuple[str, str], ...] = ()
    fp8_linears: bool = True
    expected_kernel: str = ""


OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        Option("bf16", "BF16", fp8_linears=False, expected_kernel="cuBLAS BF16 (unquantized)"),
        Option(
            "ptpc",
            "FP8 per-channel W, per-token dynamic A (default GPU path)",
            quantization="fp8_per_channel",
            expected_kernel="Fp8PtpcOnlineLinearMethod / CutlassFP8ScaledMMLinearKernel",
        ),
        Option(
            "fp8_tensor",
            "FP8 per-tensor W, dynamic A (quantization=fp8)",
            quantization="fp8",
            expected_kernel="Fp8PerTensorOnlineLinearMethod / CutlassFP8ScaledMMLinearKernel",
        ),
        Option(
            "fp8_block",
            "FP8 128x128 blocks, online (quantization=fp8_per_block)",
            quantization="fp8_per_block",
            expected_kernel="Fp8PerBlockOnlineLinearMethod / CutlassFp8BlockScaledMMKernel",
        ),
        Option(
            "fp8_static",
            "FP8 per-tensor W, static A scales (checkpoint)",
            checkpoint="static",
            expected_kernel="Fp8LinearMethod / CutlassFP8ScaledMMLinearKernel",
        ),
        Option(
            "fp8_block_ckpt",
            "FP8 128x128 blocks (checkpoint, weight_scale_inv)",
            checkpoint="block",
            expected_kernel="Fp8LinearMethod / CutlassFp8BlockScaledMMKernel",
        ),
        Option(
            "fp8_marlin",
            "FP8 weight-only, BF16 A (Marlin, forced)",
            quantization="fp8",
            env=(("VLLM_TEST_FORCE_FP8_MARLIN", "1"),),
            expected_kernel="Fp8PerTensorOnlineLinearMethod / MarlinFP8ScaledMMLinearKernel",
        ),
    )
}
DEFAULT_OPTIONS = "bf16,ptpc,fp8_tensor,fp8_block,fp8_static,fp8_marlin"
DEFAULT_SHAPES = "14b,8b"
DEFAULT_BATCHES = "32,8,128"


@dataclass(frozen=True)
class Lengths:
    """Prompt and completion lengths shared by every case."""

    prompt: int = 256
    completion: int = 256
    warmup_completion: int = 16


@dataclass(frozen=True)
class Case:
    """One engine: a shape and an option, measured at every batch size."""

    shape: str
    option: str
    batches: tuple[int, ...]

    @property
    def key(self) -> str:
        """File-name-safe identifier."""
        return f"{self.shape}_{self.option}"


def plan_cases(shapes: list[str], options: list[str], batches: list[int]) -> list[Case]:
    """Order the engines so the most important comparison runs first.

    BF16 and today's default (ptpc) on every shape first, in the order the shapes were given;
    then each remaining option on every shape.
    """
    first = [o for o in ("bf16", "ptpc") if o in options]
    rest = [o for o in options if o not in first]
    order = [(s, o) for s in shapes for o in first] + [(s, o) for o in rest for s in shapes]
    return [Case(s, o, tuple(batches)) for s, o in order]


# --------------------------------------------------------------------------- bytes and bounds


@dataclass(frozen=True)
class ShapeSizes:
    """Parameter counts of a Qwen3 shape, by role."""

    linear_params: int  # q, k, v, o, gate, up, down over all layers
    lm_head_params: int
    embed_params: int
    norm_params: int
    linear_shapes: tuple[tuple[int, int], ...]  # (out, in) of each linear, all layers
    kv_bytes_per_token: int  # BF16 KV cache, all layers


def shape_sizes(shape: str, vocab: int = VOCAB_SIZE) -> ShapeSizes:
    """A Qwen3 shape's parameters by role, counted by the memory planner's ``ModelShape``."""
    model = shape_of({**SHAPES[shape], "vocab_size": vocab, "model_type": "qwen3"})
    per_layer = tuple((out, inp) for inp, out in model.linear_shapes().values())
    return ShapeSizes(
        linear_params=model.decoder_linear_params(),
        lm_head_params=0 if model.tied else vocab * model.hidden,
        embed_params=vocab * model.hidden,
        norm_params=model.norm_params(),
        linear_shapes=per_layer * model.layers,
        kv_bytes_per_token=model.kv_bytes_per_token(),
    )


def scale_bytes(option: Option, linear_shapes: Iterable[tuple[int, int]]) -> int:
    """Bytes of the FP8 scales one decode step reads (float32)."""
    if not option.fp8_linears:
        return 0
    if option.quantization == "fp8_per_channel":
        return sum(4 * o for o, _ in linear_shapes)
    if option.quantization == "fp8_per_block" or option.checkpoint == "block":
        return sum(4 * -(-o // BLOCK) * -(-k // BLOCK) for o, k in linear_shapes)
    return 4 * sum(1 for _ in linear_shapes)


def step_weight_bytes(shape: str, option: Option, tied_lm_head: bool = False) -> int:
    """Bytes of weights one decode step reads, from the option's dtypes (the analytic count).

    Linear layers: 1 B/param in FP8 (plus their scales), 2 B in BF16. lm_head and norms: BF16,
    read whole. The embedding table is a gather of one row per sequence: left out.
    """
    sizes = shape_sizes(shape)
    linear = sizes.linear_params * (1 if option.fp8_linears else 2)
    lm_head = (sizes.embed_params if tied_lm_head else sizes.lm_head_params) * 2
    return linear + scale_bytes(option, sizes.linear_shapes) + lm_head + sizes.norm_params * 2


@dataclass(frozen=True)
class Bound:
    """The weight-read bound of one batch size."""

    bytes_per_step: int
    kv_bytes_per_step: int
    bandwidth: float  # bytes/s
    steps_per_s: float
    tok_s: float
    tok_s_with_kv: float


def decode_bound(
    weight_bytes: int, kv_bytes_per_token: int, batch: int, lengths: Lengths, bandwidth: float
) -> Bound:
    """Max decode steps/s if a step only read its weights (and, second, its KV cache too)."""
    mean_context = lengths.prompt + lengths.completion / 2
    kv = int(kv_bytes_per_token * batch * mean_context)
    steps = bandwidth / weight_bytes
    return Bound(
        bytes_per_step=weight_bytes,
        kv_bytes_per_step=kv,
        bandwidth=bandwidth,
        steps_per_s=steps,
        tok_s=steps * batch,
        tok_s_with_kv=bandwidth / (weight_bytes + kv) * batch,
    )


# --------------------------------------------------------------------------- model folders


def qwen3_config(shape: str, vocab: int = VOCAB_SIZE) -> dict[str, Any]:
    """config.json of a random Qwen3 model of ``shape``, as transformers writes it."""
    from transformers import Qwen3Config

    config = Qwen3Config(
        vocab_size=vocab,
        max_position_embeddings=40960,
        bos_token_id=151643 if vocab > 151645 else 0,  # Qwen3's ids; 0 in a tiny test vocabulary
        eos_token_id=151645 if vocab > 151645 else 1,
        dtype="bfloat16",
        architectures=["Qwen3ForCausalLM"],
        **SHAPES[shape],
    )
    return config.to_dict()


def write_config_only(shape: str, target: Path, vocab: int = VOCAB_SIZE) -> Path:
    """A model folder with config.json only, for ``load_format="dummy"``."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.json").write_text(json.dumps(qwen3_config(shape, vocab), indent=2))
    return target


def tensor_names(shape: str) -> Iterator[tuple[str, tuple[int, ...], bool]]:
    """(name, shape, is a quantizable linear) of every tensor of a Qwen3 checkpoint, in order."""
    s = SHAPES[shape]
    sizes = shape_sizes(shape, 0)
    h, hd = s["hidden_size"], s["head_dim"]
    yield "model.embed_tokens.weight", (-1, h), False  # -1: the vocabulary, filled in by the writer
    per_layer = dict(zip(LINEARS, sizes.linear_shapes[: len(LINEARS)], strict=True))
    for layer in range(s["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        for norm in ("input_layernorm", "post_attention_layernorm"):
            yield f"{p}.{norm}.weight", (h,), False
        yield f"{p}.self_attn.q_norm.weight", (hd,), False
        yield f"{p}.self_attn.k_norm.weight", (hd,), False
        for name in LINEARS:
            part = "self_attn" if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            yield f"{p}.{part}.{name}.weight", per_layer[name], True
    yield "model.norm.weight", (h,), False
    if not s["tie_word_embeddings"]:
        yield "lm_head.weight", (-1, h), False


def quantize_tensor(weight: Any, scheme: str) -> dict[str, Any]:
    """FP8 weight plus its scales, as vLLM's Fp8LinearMethod reads them from a checkpoint.

    ``static``: per-tensor ``weight_scale`` and ``input_scale`` (0-d float32, as AutoFP8 writes).
    ``block``: ``weight_scale_inv`` of shape (ceil(out/128), ceil(in/128)), DeepSeek-style.
    """
    import torch

    w = weight.float()
    if scheme == "static":
        scale = (w.abs().amax() / FP8_MAX).clamp(min=1e-12)
        q = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        return {
            "weight": q,
            "weight_scale": scale.reshape(()),
            "input_scale": torch.tensor(STATIC_INPUT_AMAX / FP8_MAX, device=w.device),
        }
    if scheme == "block":
        out, inp = w.shape
        rows, cols = -(-out // BLOCK), -(-inp // BLOCK)
        padded = torch.zeros(rows * BLOCK, cols * BLOCK, device=w.device)
        padded[:out, :inp] = w
        blocks = padded.view(rows, BLOCK, cols, BLOCK)
        scale = (blocks.abs().amax(dim=(1, 3)) / FP8_MAX).clamp(min=1e-12)
        q = (blocks / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX)
        q = q.view(rows * BLOCK, cols * BLOCK)[:out, :inp].to(torch.float8_e4m3fn)
        return {"weight": q.contiguous(), "weight_scale_inv": scale}
    raise ValueError(f"unknown FP8 checkpoint scheme {scheme!r}")


def quantization_config(scheme: str) -> dict[str, Any]:
    """The config.json ``quantization_config`` vLLM's Fp8Config reads."""
    if scheme == "static":
        return {"quant_method": "fp8", "activation_scheme": "static"}
    if scheme == "block":
        return {
            "quant_method": "fp8",
            "activation_scheme": "dynamic",
            "weight_block_size": [BLOCK, BLOCK],
        }
    raise ValueError(f"unknown FP8 checkpoint scheme {scheme!r}")


def checkpoint_bytes(shape: str, scheme: str, vocab: int = VOCAB_SIZE) -> int:
    """Approximate size on disk of the checkpoint ``write_checkpoint`` makes."""
    sizes = shape_sizes(shape, vocab)
    linear = sizes.linear_params * (2 if scheme == "bf16" else 1)
    return linear + (sizes.embed_params + sizes.lm_head_params + sizes.norm_params) * 2


def write_checkpoint(
    shape: str,
    scheme: str,
    target: Path,
    *,
    vocab: int = VOCAB_SIZE,
    shard_bytes: int = 4 * GIB,
    seed: int = 0,
) -> Path:
    """Write a random-weight Qwen3 checkpoint (``bf16``, ``static`` or ``block`` FP8), shard by shard.

    Tensors are made on the GPU when there is one. Linear weights are N(0, 0.02), norms 1.
    """
    import torch
    from safetensors.torch import save_file

    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator(device=device).manual_seed(seed)
    target.mkdir(parents=True, exist_ok=True)
    shard: dict[str, Any] = {}
    shard_size = 0
    weight_map: dict[str, str] = {}
    files: list[str] = []

    def flush() -> None:
        nonlocal shard, shard_size
        if not shard:
            return
        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file({k: v.cpu() for k, v in shard.items()}, str(target / name), {"format": "pt"})
        files.append(name)
        weight_map.update(dict.fromkeys(shard, name))
        shard, shard_size = {}, 0

    for name, named_dims, is_linear in tensor_names(shape):
        dims = tuple(vocab if d == -1 else d for d in named_dims)
        if len(dims) == 1:
            tensors = {name: torch.ones(dims, dtype=torch.bfloat16, device=device)}
        else:
            weight = torch.empty(dims, dtype=torch.bfloat16, device=device)
            weight.normal_(0.0, 0.02, generator=generator)
            if is_linear and scheme != "bf16":
                prefix = name.removesuffix(".weight")
                tensors = {f"{prefix}.{k}": v for k, v in quantize_tensor(weight, scheme).items()}
            else:
                tensors = {name: weight}
        for key, tensor in tensors.items():
            shard[key] = tensor
            shard_size += tensor.numel() * tensor.element_size()
        if shard_size >= shard_bytes:
            flush()
    flush()
    total = sum((target / f).stat().st_size for f in files)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (target / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config = qwen3_config(shape, vocab)
    if scheme != "bf16":
        config["quantization_config"] = quantization_config(scheme)
    (target / "config.json").write_text(json.dumps(config, indent=2))
    logger.info("wrote %s %s checkpoint: %.2f GiB in %s", shape, scheme, total / GIB, target)
    return target


# --------------------------------------------------------------------------- GPU measurements


def measure_bandwidth(size_bytes: int = 4 * GIB, repeats: int = 10) -> dict[str, float]:
    """Device memory bandwidth: a copy (read + write, 2x bytes) and a read-only reduction."""
    import torch

    src = torch.empty(size_bytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)

    def timed(fn: Any) -> float:
        fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000 / repeats

    copy_s = timed(lambda: dst.copy_(src))
    read_s = timed(lambda: torch.sum(src, dtype=torch.float32))
    result = {
        "bytes": float(size_bytes),
        "copy_s": copy_s,
        "copy_bytes_per_s": 2 * size_bytes / copy_s,
        "read_s": read_s,
        "read_bytes_per_s": size_bytes / read_s,
    }
    return result  # the child exits right after: its memory goes with it


def param_bytes_by_role(model: Any) -> dict[str, Any]:
    """Bytes of a loaded vLLM model's parameters and buffers, by role and dtype (runs in vLLM's worker)."""
    roles: dict[str, int] = {}
    dtypes: dict[str, int] = {}
    seen: set[int] = set()
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, tensor in tensors:
        if tensor.device.type == "meta" or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        size = tensor.numel() * tensor.element_size()
        if "embed_tokens" in name:
            role = "embedding"
        elif "lm_head" in name:
            role = "lm_head"
        elif "workspace" in name or "rotary_emb" in name or "cos_sin_cache" in name:
            role = "not_read_per_step"
        else:
            role = "per_step"
        roles[role] = roles.get(role, 0) + size
        key = f"{role}:{str(tensor.dtype).removeprefix('torch.')}"
        dtypes[key] = dtypes.get(key, 0) + size
    return {"roles": roles, "dtypes": dtypes}


def random_prompts(batch: int, length: int, seed: int) -> list[Any]:
    """``batch`` prompts of ``length`` random token ids (no tokenizer needed)."""
    import numpy as np
    from vllm.inputs import TokensPrompt

    ids = np.random.default_rng(seed).integers(0, VOCAB_SIZE, size=(batch, length))
    return [TokensPrompt(prompt_token_ids=row.tolist()) for row in ids]


def timed_generate(llm: Any, prompts: list[Any], tokens: int) -> tuple[float, int]:
    """Seconds to generate exactly ``tokens`` per prompt, and the tokens really generated."""
    from vllm import SamplingParams

    params = SamplingParams(
        temperature=1.0,
        top_p=1.0,
        min_tokens=tokens,
        max_tokens=tokens,
        ignore_eos=True,
        detokenize=False,
    )
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    return seconds, sum(len(o.outputs[0].token_ids) for o in outputs)


def engine_kwargs(
    option: Option, model_dir: Path, dummy: bool, batches: Iterable[int], args: argparse.Namespace
) -> dict[str, Any]:
    """``vllm.LLM`` arguments for one engine."""
    compilation: dict[str, Any] = {"cudagraph_capture_sizes": sorted(set(batches))}
    if args.no_compile:
        compilation.update(mode=0, cudagraph_mode="FULL")  # CompilationMode.NONE: graphs only
    kwargs: dict[str, Any] = dict(
        model=str(model_dir),
        skip_tokenizer_init=True,
        dtype="bfloat16",
        load_format="dummy" if dummy else "auto",
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        max_num_seqs=max(batches),
        enforce_eager=False,
        enable_prefix_caching=False,
        compilation_config=compilation,
        seed=0,
        disable_log_stats=True,
    )
    if option.quantization:
        kwargs["quantization"] = option.quantization
    return kwargs


def run_engine(case: Case, model_dir: Path, dummy: bool, args: argparse.Namespace) -> None:
    """Child role: start one engine, measure every batch size, write results as they come."""
    from vllm import LLM

    option = OPTIONS[case.option]
    lengths = Lengths(args.prompt_len, args.completion_len, args.warmup_tokens)
    result_path = Path(args.result)
    result: dict[str, Any] = {"shape": case.shape, "option": case.option, "batches": {}}
    kwargs = engine_kwargs(option, model_dir, dummy, case.batches, args)
    result["engine_kwargs"] = {k: str(v) for k, v in kwargs.items()}
    start = time.perf_counter()
    llm = LLM(**kwargs)
    result["engine_start_s"] = time.perf_counter() - start
    try:
        result["param_bytes"] = llm.apply_model(param_bytes_by_role)[0]
    except Exception as exc:  # the analytic count stands in; the report says which was used
        logger.warning("could not read the engine's parameter dtypes: %s", exc)
        result["param_bytes_error"] = f"{type(exc).__name__}: {exc}"[:300]
    result_path.write_text(json.dumps(result, indent=2))
    for n, batch in enumerate(case.batches):
        seed = 1000 * n
        timed_generate(llm, random_prompts(batch, lengths.prompt, seed), lengths.warmup_completion)
        prefill_s, _ = timed_generate(llm, random_prompts(batch, lengths.prompt, seed + 1), 1)
        full_s, tokens = timed_generate(
            llm, random_prompts(batch, lengths.prompt, seed + 2), lengths.completion
        )
        decode_s = full_s - prefill_s
        result["batches"][str(batch)] = {
            "batch": batch,
            "tokens": tokens,
            "expected_tokens": batch * lengths.completion,
            "full_s": full_s,
            "prefill_s": prefill_s,
            "tok_s": tokens / full_s,
            "decode_tok_s": batch * (lengths.completion - 1) / decode_s if decode_s > 0 else None,
        }
        logger.info("%s batch %d: %.0f tok/s", case.key, batch, tokens / full_s)
        # written after every batch: an engine killed at its timeout keeps what it measured
        result_path.write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------- the driver


def case_environment(option: Option) -> dict[str, str]:
    """The child's environment: offline, no FlashInfer sampler, and the option's own switches."""
    env = child_environment()
    env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # LLM.apply_model pickles the dtype probe
    env.pop("VLLM_TEST_FORCE_FP8_MARLIN", None)
    env.update(dict(option.env))
    return env


def run_child(
    argv: list[str], log_path: Path, timeout_s: float, env: dict[str, str], cwd: Path
) -> int | None:
    """Run this script as a child in its own process group; kill the whole group on timeout.

    vLLM's engine core is a grandchild: killing only the child would leave it holding the GPU.
    """
    command = [sys.executable, str(Path(__file__).resolve()), *argv]
    cwd.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n===== {' '.join(argv)}\n")
        log.flush()
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        try:
            return process.wait(timeout=max(timeout_s, 1.0))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            log.write(f"\n===== timed out after {timeout_s:.0f} s\n")
            return None


def engine_failure(code: int | None, missing: list[int]) -> str:
    """Why an engine's child did not exit 0 (``code`` None: killed at its time limit).

    A child killed after it measured every batch (in its shutdown, say) lost nothing, and says so.
    """
    error = "timed out" if code is None else f"exit code {code}"
    if missing:
        return f"{error}; not measured: batches {missing}"
    if code is None:
        return "stopped at its time limit after every batch was measured"
    return error


def wait_for_free_gpu(share: float, timeout_s: float = 60.0) -> float | None:
    """Wait until ``share`` of the card is free (a finished engine's memory can lag its exit).

    Asks nvidia-smi, so that this process never makes a CUDA context. Returns the free share
    last seen, or None where nvidia-smi is missing.
    """
    deadline = time.perf_counter() + timeout_s
    free = None
    while True:
        try:
            out = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=memory.used,memory.total",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.split("\n")[0]
            used, total = (float(x) for x in out.split(","))
            free = 1 - used / total
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return None
        if free >= share or time.perf_counter() > deadline:
            return free
        time.sleep(2)


ERROR_LINE = re.compile(r"\b(\w+(?:Error|Exception)): (.*)$", re.MULTILINE)


def last_error_line(text: str) -> str:
    """The last ``SomeError: message`` line of a child's log ('' if none), shortened."""
    found = ERROR_LINE.findall(text)
    return f"{found[-1][0]}: {found[-1][1]}"[:300] if found else ""


SELECTED = re.compile(r"Selected (\w+) for (\w+)")


def kernels_from_log(text: str) -> list[str]:
    """The kernels vLLM says it picked (``Selected X for Y`` lines), in order, without repeats."""
    found: list[str] = []
    for kernel, method in SELECTED.findall(text):
        entry = f"{method} / {kernel}"
        if entry not in found:
            found.append(entry)
    return found


@dataclass
class Driver:
    """Runs the planned cases one child at a time, within the budget, writing after each."""

    args: argparse.Namespace
    cases: list[Case]
    lengths: Lengths
    work: Path
    export: Path
    started: float = field(default_factory=time.perf_counter)
    bandwidth: dict[str, float] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        """Seconds of the budget left."""
        return self.args.budget - (time.perf_counter() - self.started)

    def model_dir(self, case: Case) -> tuple[Path, bool]:
        """The model folder for a case (written if needed) and whether vLLM loads dummy weights."""
        option = OPTIONS[case.option]
        if option.checkpoint:
            return self.work / "ckpt" / case.key, False
        if self.args.weights == "checkpoint":
            return self.work / "ckpt" / f"{case.shape}_bf16", False
        return write_config_only(case.shape, self.work / "dummy" / case.shape), True

    def prepare_checkpoint(self, case: Case, target: Path, log: Path) -> str:
        """Write the checkpoint a case needs, in a child on the GPU; '' or why it could not."""
        if (target / "config.json").is_file():
            return ""
        option = OPTIONS[case.option]
        scheme = option.checkpoint or "bf16"
        need = checkpoint_bytes(case.shape, scheme) + 2 * GIB
        free = shutil.disk_usage(self.work).free
        if free < need:
            return f"not enough disk for the {scheme} checkpoint: {free / GIB:.0f} GiB free, {need / GIB:.0f} needed"
        argv = ["--write-checkpoint", scheme, "--shape", case.shape, "--target", str(target)]
        code = run_child(argv, log, self.remaining(), child_environment(), self.work)
        if code != 0 or not (target / "config.json").is_file():
            shutil.rmtree(target, ignore_errors=True)
            return (
                f"writing the {scheme} checkpoint failed ({'timed out' if code is None else code})"
            )
        return ""

    def run_case(self, case: Case) -> dict[str, Any]:
        """One engine in a child: its measurements, or why there are none."""
        option = OPTIONS[case.option]
        log = self.export / f"{case.key}.log"
        began = time.perf_counter()
        model_dir, dummy = self.model_dir(case)
        result: dict[str, Any] = {"shape": case.shape, "option": case.option, "batches": {}}
        error = "" if dummy else self.prepare_checkpoint(case, model_dir, log)
        if not error:
            result_path = self.work / f"{case.key}.json"
            result_path.unlink(missing_ok=True)
            argv = [
                "--run-engine",
                case.option,
                "--shape",
                case.shape,
                "--model-dir",
                str(model_dir),
                "--result",
                str(result_path),
                *passthrough_argv(self.args, case),
            ]
            if dummy:
                argv.append("--dummy")
            free = wait_for_free_gpu(self.args.gpu_memory_utilization + 0.02)
            if free is not None:
                result["gpu_free_share_at_start"] = free
            timeout = min(self.args.case_timeout, max(self.remaining(), 1.0))
            code = run_child(argv, log, timeout, case_environment(option), self.work)
            if result_path.is_file():
                result.update(json.loads(result_path.read_text()))
            if code != 0:
                missing = [b for b in case.batches if str(b) not in result["batches"]]
                error = engine_failure(code, missing)
                cause = last_error_line(log.read_text(errors="replace") if log.is_file() else "")
                if cause:
                    error += f"; {cause}"
        if option.checkpoint:
            shutil.rmtree(model_dir, ignore_errors=True)  # 8-15 GB each: the disk is 64 GB
        result["error"] = error
        result["wall_s"] = time.perf_counter() - began
        result["kernels"] = kernels_from_log(log.read_text()) if log.is_file() else []
        return result

    def measure_bandwidth(self) -> None:
        """Bandwidth, measured in a child so that this process never holds a CUDA context."""
        out = self.work / "bandwidth.json"
        out.unlink(missing_ok=True)
        log = self.export / "bandwidth.log"
        run_child(["--measure-bandwidth", str(out)], log, 120, child_environment(), self.work)
        if out.is_file():
            self.bandwidth = json.loads(out.read_text())

    def run(self) -> int:
        """Bandwidth first, then the cases in plan order until the budget is spent."""
        self.environment = environment_report()
        self.measure_bandwidth()
        self.write()
        for case in self.cases:
            if self.remaining() <= self.args.min_case_s:
                logger.info("budget spent: %s and later cases not started", case.key)
                self.results.append(not_run(case, "not started: budget spent"))
                continue
            result = self.run_case(case)
            self.results.append(result)
            logger.info("%s: %.0f s %s", case.key, result["wall_s"], result["error"])
            self.write()
        print(self.write())
        return 0

    def write(self) -> str:
        """results.json and results.md into --export (flat files); returns the markdown."""
        return write_report(
            self.export,
            args=self.args,
            lengths=self.lengths,
            environment=self.environment,
            bandwidth=self.bandwidth,
            results=self.results,
            cases=self.cases,
        )


def not_run(case: Case, why: str) -> dict[str, Any]:
    """The record of a case that produced no measurement."""
    return {"shape": case.shape, "option": case.option, "batches": {}, "error": why, "kernels": []}


def passthrough_argv(args: argparse.Namespace, case: Case) -> list[str]:
    """The flags a child needs to run ``case`` as the driver was asked to."""
    argv = [
        "--batches",
        ",".join(map(str, case.batches)),
        "--prompt-len",
        str(args.prompt_len),
        "--completion-len",
        str(args.completion_len),
        "--warmup-tokens",
        str(args.warmup_tokens),
        "--gpu-memory-utilization",
        str(args.gpu_memory_utilization),
        "--max-model-len",
        str(args.max_model_len),
    ]
    return argv + (["--no-compile"] if args.no_compile else [])


# --------------------------------------------------------------------------- the report


def bound_bandwidth(bandwidth: dict[str, float]) -> float | None:
    """The bandwidth the bound uses: the larger of the copy and read-only figures."""
    figures = [bandwidth.get("copy_bytes_per_s"), bandwidth.get("read_bytes_per_s")]
    known = [f for f in figures if f]
    return max(known) if known else None


def weight_bytes_of(result: dict[str, Any]) -> tuple[int, str]:
    """Per-step weight bytes: the engine's real dtypes where read, else the analytic count."""
    roles = (result.get("param_bytes") or {}).get("roles")
    if roles:
        return int(roles.get("per_step", 0) + roles.get("lm_head", 0)), "engine"
    option = OPTIONS[result["option"]]
    return step_weight_bytes(result["shape"], option), "analytic"


def case_rows(
    result: dict[str, Any], lengths: Lengths, bandwidth: float | None
) -> list[dict[str, Any]]:
    """One row per batch size of one engine, with the bound filled in where bandwidth is known."""
    weight_bytes, source = weight_bytes_of(result)
    kv = shape_sizes(result["shape"]).kv_bytes_per_token
    rows = []
    for batch_key, m in sorted(result.get("batches", {}).items(), key=lambda kv_: int(kv_[0])):
        row = dict(m, shape=result["shape"], option=result["option"])
        row["weight_bytes_per_step"] = weight_bytes
        row["weight_bytes_source"] = source
        if bandwidth:
            b = decode_bound(weight_bytes, kv, int(batch_key), lengths, bandwidth)
            row["bound"] = asdict(b)
            if m.get("decode_tok_s"):
                row["fraction_of_bound"] = m["decode_tok_s"] / b.tok_s
                row["fraction_of_bound_with_kv"] = m["decode_tok_s"] / b.tok_s_with_kv
        rows.append(row)
    return rows


def _fmt(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def markdown_table(rows: list[dict[str, Any]], results: list[dict[str, Any]]) -> str:
    """Every option's tok/s, its ratio to BF16 at the same shape and batch, and % of its bound."""
    bf16 = {(r["shape"], r["batch"]): r for r in rows if r["option"] == "bf16"}
    starts = {(r["shape"], r["option"]): r.get("engine_start_s") for r in results}
    lines = [
        "| shape | option | seqs | tok/s | decode tok/s | x BF16 (decode) | bound tok/s | "
        "% of bound | % of bound incl. KV | weights GB/step | engine start s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = bf16.get((r["shape"], r["batch"]))
        ratio = (
            r["decode_tok_s"] / base["decode_tok_s"]
            if base and base.get("decode_tok_s") and r.get("decode_tok_s")
            else None
        )
        bound = r.get("bound") or {}
        frac, frac_kv = r.get("fraction_of_bound"), r.get("fraction_of_bound_with_kv")
        lines.append(
            f"| {r['shape']} | {r['option']} | {r['batch']} | {_fmt(r.get('tok_s'))} | "
            f"{_fmt(r.get('decode_tok_s'))} | {_fmt(ratio, 2)} | {_fmt(bound.get('tok_s'))} | "
            f"{_fmt(frac * 100 if frac else None, 0, '%')} | "
            f"{_fmt(frac_kv * 100 if frac_kv else None, 0, '%')} | "
            f"{r['weight_bytes_per_step'] / 1e9:.2f} | "
            f"{_fmt(starts.get((r['shape'], r['option'])), 0)} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    export: Path,
    *,
    args: argparse.Namespace,
    lengths: Lengths,
    environment: dict[str, Any],
    bandwidth: dict[str, float],
    results: list[dict[str, Any]],
    cases: list[Case],
) -> str:
    """Write results.json and results.md; return the markdown."""
    bw = bound_bandwidth(bandwidth)
    rows = [row for r in results for row in case_rows(r, lengths, bw)]
    done = {(r["shape"], r["option"]) for r in results}
    pending = [c.key for c in cases if (c.shape, c.option) not in done]
    bw_line = (
        f"device copy {bandwidth['copy_bytes_per_s'] / 1e12:.2f} TB/s (read + write counted), "
        f"read-only {bandwidth['read_bytes_per_s'] / 1e12:.2f} TB/s; the bound uses "
        f"{bw / 1e12:.2f} TB/s"
        if bw
        else "bandwidth not measured: no bound"
    )
    header = (
        f"# vLLM FP8 options against BF16\n\n"
        f"{environment.get('gpu')} | vllm {environment.get('vllm')} | torch {environment.get('torch')} "
        f"(CUDA {environment.get('cuda')}) | {environment.get('date')}\n\n"
        f"Random-weight Qwen3 shapes ({args.weights} weights), {lengths.prompt}-token random prompts, "
        f"exactly {lengths.completion} generated tokens each, temperature 1, prefix caching off, "
        f"CUDA graphs for {args.batches}, torch.compile {'off' if args.no_compile else 'on'}. "
        f"{bw_line}. Decode tok/s = timed pass minus a prefill-only pass.\n\n"
    )
    notes = [
        "",
        "| shape | option | kernels vLLM selected (its log) | expected from the source "
        "| wall s | error |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        kernels = "; ".join(r.get("kernels") or []) or "—"
        expected = OPTIONS[r["option"]].expected_kernel
        err = (r.get("error") or "").replace("|", "/")[:200]
        notes.append(
            f"| {r['shape']} | {r['option']} | {kernels} | {expected} | "
            f"{_fmt(r.get('wall_s'))} | {err} |"
        )
    if pending:
        notes.append(f"\nNot run yet: {', '.join(pending)}")
    markdown = header + markdown_table(rows, results) + "\n".join(notes) + "\n"
    export.mkdir(parents=True, exist_ok=True)
    (export / "results.md").write_text(markdown, encoding="utf-8")
    payload = {
        "arguments": {k: v for k, v in vars(args).items() if k not in {"result"}},
        "lengths": asdict(lengths),
        "environment": environment,
        "bandwidth": bandwidth,
        "options": {o: asdict(OPTIONS[o]) for o in {c.option for c in cases}},
        "results": results,
        "rows": rows,
        "plan": [c.key for c in cases],
    }
    (export / "results.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return markdown


# --------------------------------------------------------------------------- plan and dry run

# Rough costs on an H200 for the plan printout (seconds): engine start with torch.compile and
# three CUDA-graph sizes (the 1.5B probe took 85-93 s with vLLM's default ~67 sizes on an H100),
# and measurement at a guessed 60% of the weight-read bound.
START_ESTIMATE_S = {"tiny": 30.0, "1.7b": 60.0, "8b": 75.0, "14b": 90.0}
NO_COMPILE_START_ESTIMATE_S = {"tiny": 20.0, "1.7b": 25.0, "8b": 30.0, "14b": 40.0}
NOMINAL_BANDWIDTH = 4.3e12  # the H200 copy figure; used for estimates only, never reported


def estimate_case_s(case: Case, lengths: Lengths, no_compile: bool) -> float:
    """A guess of one engine's wall time: start, checkpoint writing, three passes per batch."""
    table = NO_COMPILE_START_ESTIMATE_S if no_compile else START_ESTIMATE_S
    option = OPTIONS[case.option]
    seconds = table.get(case.shape, 90.0)
    if option.checkpoint:
        seconds += checkpoint_bytes(case.shape, option.checkpoint) / 1e9 * 2.0  # write + read
    weight = step_weight_bytes(case.shape, option)
    kv = shape_sizes(case.shape).kv_bytes_per_token
    for batch in case.batches:
        bound = decode_bound(weight, kv, batch, lengths, NOMINAL_BANDWIDTH)
        steps = lengths.completion + lengths.warmup_completion + 1
        seconds += steps * batch / (0.6 * bound.tok_s_with_kv) + 3.0
    return seconds


def plan_markdown(cases: list[Case], lengths: Lengths, args: argparse.Namespace) -> str:
    """The planned engines with estimated costs, in run order."""
    lines = [
        "| # | case | option | weights read/step GB (analytic) | est. s | cumulative s |",
        "|---|---|---|---|---|---|",
    ]
    total = 0.0
    for n, case in enumerate(cases, 1):
        est = estimate_case_s(case, lengths, args.no_compile)
        total += est
        gb = step_weight_bytes(case.shape, OPTIONS[case.option]) / 1e9
        mark = "" if total <= args.budget else " (past --budget: skipped)"
        lines.append(
            f"| {n} | {case.key} | {OPTIONS[case.option].title} | {gb:.2f} | {est:.0f} | {total:.0f}{mark} |"
        )
    return "\n".join(lines) + "\n"


def check_checkpoint(target: Path, scheme: str) -> list[str]:
    """What is wrong with a written checkpoint (empty: nothing): dtypes, scale shapes, config."""
    from safetensors import safe_open

    problems: list[str] = []
    config = json.loads((target / "config.json").read_text())
    if scheme != "bf16" and config.get("quantization_config") != quantization_config(scheme):
        problems.append(f"config.json quantization_config is {config.get('quantization_config')}")
    index = json.loads((target / "model.safetensors.index.json").read_text())
    for file in sorted(set(index["weight_map"].values())):
        with safe_open(str(target / file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open has keys(), not iteration)
                t = f.get_tensor(key)
                is_linear = any(f".{n}." in key for n in LINEARS)
                if key.endswith(".weight") and is_linear and scheme != "bf16":
                    if str(t.dtype) != "torch.float8_e4m3fn":
                        problems.append(f"{key} is {t.dtype}")
                elif key.endswith(".weight_scale_inv"):
                    weight = f.get_tensor(key.replace("weight_scale_inv", "weight"))
                    want = (-(-weight.shape[0] // BLOCK), -(-weight.shape[1] // BLOCK))
                    if tuple(t.shape) != want:
                        problems.append(f"{key} has shape {tuple(t.shape)}, want {want}")
                elif key.endswith((".weight_scale", ".input_scale")) and t.dim() != 0:
                    problems.append(f"{key} is not a scalar")
                elif key.endswith(".weight") and str(t.dtype) != "torch.bfloat16":
                    problems.append(f"{key} is {t.dtype}")
    return problems


def dry_run(args: argparse.Namespace, cases: list[Case], lengths: Lengths) -> int:
    """Everything but vLLM and the GPU: the plan, the bound arithmetic, tiny checkpoints, the report."""
    export = Path(args.export)
    export.mkdir(parents=True, exist_ok=True)
    plan = plan_markdown(cases, lengths, args)
    logger.info("plan (estimates at a nominal %.1f TB/s):\n%s", NOMINAL_BANDWIDTH / 1e12, plan)
    (export / "plan.md").write_text(plan, encoding="utf-8")
    checks: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="fp8bench-") as tmp:
        for scheme in ("static", "block", "bf16"):
            target = write_checkpoint("tiny", scheme, Path(tmp) / scheme, vocab=512)
            checks[scheme] = check_checkpoint(target, scheme)
    (export / "checkpoint_checks.json").write_text(json.dumps(checks, indent=2))
    results = [not_run(c, "dry run") for c in cases]
    write_report(
        export,
        args=args,
        lengths=lengths,
        environment=environment_report(),
        bandwidth={},
        results=results,
        cases=cases,
    )
    bad = {k: v for k, v in checks.items() if v}
    if bad:
        logger.error("checkpoint problems: %s", bad)
        return 1
    return 0


# --------------------------------------------------------------------------- command line


def _list(spec: str, allowed: Iterable[str], what: str) -> list[str]:
    items = [p.strip() for p in spec.split(",") if p.strip()]
    allowed = list(allowed)
    unknown = [i for i in items if i not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {unknown or spec!r}; choose from {', '.join(allowed)}"
        )
    return items


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``error:`` line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``error: message`` alone and exit 2."""
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line; bad input gets one ``error:`` line and exit 2."""
    parser = OneLineErrorParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"of {', '.join(SHAPES)}")
    parser.add_argument("--options", default=DEFAULT_OPTIONS, help=f"of {', '.join(OPTIONS)}")
    parser.add_argument("--batches", default=DEFAULT_BATCHES, help="sequences per pass")
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--completion-len", type=int, default=256)
    parser.add_argument("--warmup-tokens", type=int, default=16, help="tokens of the warm-up pass")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument(
        "--weights",
        choices=("dummy", "checkpoint"),
        default="dummy",
        help="dummy: vLLM's random weights, no checkpoint; checkpoint: write a BF16 one per shape",
    )
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="skip torch.compile (CUDA graphs only): faster start, slower decode for FP8",
    )
    parser.add_argument("--case-timeout", type=float, default=240, help="seconds per engine")
    parser.add_argument("--budget", type=float, default=540, help="start no case past this (s)")
    parser.add_argument(
        "--min-case-s", type=float, default=120, help="do not start a case with less budget left"
    )
    parser.add_argument("--export", default=os.environ.get("OUT") or "outputs/gpu_vllm_fp8")
    parser.add_argument("--workdir", default="/tmp/gpu_vllm_fp8", help="models and child results")
    parser.add_argument("--dry-run", action="store_true", help="CPU: plan, bounds, checkpoints")
    parser.add_argument("--run-engine", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dummy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--write-checkpoint", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--target", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--measure-bandwidth", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.shape_list = _list(args.shapes, SHAPES, "shape")
        args.option_list = _list(args.options, OPTIONS, "option")
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    try:
        args.batch_list = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if not args.batch_list:
        parser.error("--batches is empty")
    if any(b < 1 for b in args.batch_list) or args.completion_len < 2 or args.prompt_len < 1:
        parser.error("batches and --prompt-len must be >= 1, --completion-len >= 2")
    if args.prompt_len + args.completion_len > args.max_model_len:
        parser.error("--prompt-len + --completion-len exceeds --max-model-len")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: the driver, the dry run, or one of the child roles."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    lengths = Lengths(args.prompt_len, args.completion_len, args.warmup_tokens)
    if args.measure_bandwidth:
        Path(args.measure_bandwidth).write_text(json.dumps(measure_bandwidth(), indent=2))
        return 0
    if args.write_checkpoint:
        write_checkpoint(args.shape, args.write_checkpoint, Path(args.target))
        return 0
    if args.run_engine:
        case = Case(args.shape, args.run_engine, tuple(args.batch_list))
        run_engine(case, Path(args.model_dir), args.dummy, args)
        return 0
    cases = plan_cases(args.shape_list, args.option_list, args.batch_list)
    if args.dry_run:
        return dry_run(args, cases, lengths)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    Path(args.export).mkdir(parents=True, exist_ok=True)
    driver = Driver(args, cases, lengths, work, Path(args.export))
    return driver.run()


if __name__ == "__main__":
    raise SystemExit(main())
