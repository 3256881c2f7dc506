"""Frozen FP8 base weights for LoRA training with the transformers backend.

torchao's dynamic FP8 linear has no backward (``aten::_scaled_mm`` has no derivative), yet
LoRA training needs gradients to flow *through* the frozen base matmul to reach earlier
layers. :class:`Fp8Linear` stores the weight as ``float8_e4m3fn`` with one scale per output
row (half the bytes of bf16) and defines its own backward, which multiplies by the
dequantized weight.

By default the forward multiplies by the dequantized weight too ("FP8 storage, 16-bit
compute"): the training log-probabilities then match those of a vLLM engine that holds the
same dequantized weights. With ``fp8_compute=True`` the forward quantizes the activations
per row as well and runs on the FP8 tensor cores (``torch._scaled_mm``). On an H100 that was
no faster for a 1.7B model, and it made the trainer's and vLLM's log-probabilities disagree
so much that TRL's importance-sampling mask dropped most sequences (grad norm 0.01-0.36
against 0.88; docs/PERFORMANCE.md).

PEFT's LoRA layers call ``self.base_layer(x)``, so swapping their ``base_layer`` for an
:class:`Fp8Linear` keeps the adapters untouched. PEFT's own ``merge_adapter`` cannot write
into an FP8 weight, so :func:`merged_fp8_weights` computes the merged weights itself; TRL's
colocated vLLM receives them through :func:`install_vllm_weight_sync`.
:func:`dequantize_linears` swaps back to ordinary ``nn.Linear`` layers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max


def quantize_rowwise(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 weight and float32 scale per output row, so that ``weight ≈ fp8 * scale``."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    return (w / scale).to(FP8_DTYPE), scale


def _scaled_mm_supported(x: torch.Tensor, weight_fp8: torch.Tensor) -> bool:
    if not (x.is_cuda and hasattr(torch, "_scaled_mm")):
        return False
    if torch.cuda.get_device_capability(x.device) < (8, 9):
        return False
    out_features, in_features = weight_fp8.shape
    # cuBLASLt/CUTLASS need K and N divisible by 16; the row-wise kernel writes bf16 only.
    return in_features % 16 == 0 and out_features % 16 == 0 and x.dtype == torch.bfloat16


def _fp8_forward(x2d: torch.Tensor, weight_fp8: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x2d @ dequant(weight).T`` on FP8 tensor cores, activations scaled per row."""
    x_scale = x2d.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    x_fp8 = (x2d.float() / x_scale).to(FP8_DTYPE)
    return torch._scaled_mm(
        x_fp8,
        weight_fp8.t(),
        scale_a=x_scale,
        scale_b=scale.t(),  # (1, out): contiguous already, since one dimension is 1
        out_dtype=x2d.dtype,
    )


class _Fp8LinearFunction(torch.autograd.Function):
    """``y = x W^T`` with W frozen in FP8; the backward gives only ``dL/dx = dL/dy · W``."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight_fp8: torch.Tensor,
        scale: torch.Tensor,
        fp8_compute: bool,
    ) -> torch.Tensor:
        ctx.save_for_backward(weight_fp8, scale)
        x2d = x.reshape(-1, x.shape[-1])
        if fp8_compute and _scaled_mm_supported(x2d, weight_fp8):
            y = _fp8_forward(x2d, weight_fp8, scale)
        else:
            y = x2d @ dequantize(weight_fp8, scale, x.dtype).t()
        return y.reshape(*x.shape[:-1], weight_fp8.shape[0])

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        weight_fp8, scale = ctx.saved_tensors
        grad_x = grad_out @ dequantize(weight_fp8, scale, grad_out.dtype)
        return grad_x, None, None, None


def dequantize(weight_fp8: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The weight back in ``dtype``: the one formula the forward, backward and vLLM sync share.

    Every forward and backward pass of every layer makes this copy, so it is made with one
    temporary of the layer's size (no float32 ones); rounding the row scales to bf16 costs
    at most 2^-9 relative, far below FP8's own error. float16 cannot hold small scales, so
    it goes through float32.
    """
    if dtype in (torch.bfloat16, torch.float32):
        return weight_fp8.to(dtype).mul_(scale.to(dtype))
    return (weight_fp8.to(torch.float32) * scale).to(dtype)


class Fp8Linear(nn.Module):
    """A frozen linear layer whose weight is stored in FP8 with per-row scales."""

    weight_fp8: torch.Tensor
    weight_scale: torch.Tensor

    def __init__(
        self,
        linear: nn.Linear,
        device: torch.device | str | None = None,
        *,
        fp8_compute: bool = False,
    ) -> None:
        super().__init__()
        self.fp8_compute = fp8_compute  # FP8 tensor-core forward instead of a dequantized one
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.compute_dtype = linear.weight.dtype
        weight = linear.weight.detach()
        if device is not None:
            weight = weight.to(device)
        weight_fp8, scale = quantize_rowwise(weight)
        self.register_buffer("weight_fp8", weight_fp8)
        self.register_buffer("weight_scale", scale)
        self.bias: nn.Parameter | None = None
        if linear.bias is not None:
            bias = linear.bias.detach().to(weight.device).clone()
            self.bias = nn.Parameter(bias, requires_grad=False)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight, a fresh tensor (for code that inspects ``.weight``).

        Writing into it changes nothing: PEFT's ``merge`` is a no-op on this layer, which is
        why :func:`merged_fp8_weights` exists.
        """
        return dequantize(self.weight_fp8, self.weight_scale, self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer."""
        y = _Fp8LinearFunction.apply(x, self.weight_fp8, self.weight_scale, self.fp8_compute)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    def to_linear(self) -> nn.Linear:
        """An ordinary ``nn.Linear`` with the dequantized weight."""
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight_fp8.device,
            dtype=self.compute_dtype,
        )
        with torch.no_grad():
            linear.weight.copy_(self.weight)
            if self.bias is not None and linear.bias is not None:
                linear.bias.copy_(self.bias)
        linear.requires_grad_(False)
        return linear

    def extra_repr(self) -> str:
        """Shape and storage, for ``print(model)``."""
        compute = "fp8" if self.fp8_compute else str(self.compute_dtype).removeprefix("torch.")
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"fp8=e4m3 row-scaled, compute={compute}"
        )


def _is_frozen_linear(module: nn.Module) -> bool:
    return type(module) is nn.Linear and not module.weight.requires_grad


def quantize_frozen_linears(
    model: nn.Module,
    *,
    skip: tuple[str, ...] = ("lm_head",),
    device: torch.device | str | None = None,
    fp8_compute: bool = False,
) -> int:
    """Store every frozen ``nn.Linear`` (LoRA base layers included) in FP8; returns the count.

    Embeddings and the layers named in ``skip`` keep their precision. With ``device`` set,
    each layer is moved there one at a time as it is quantized, so a model loaded on the CPU
    never has all its 16-bit weights on the GPU at once.
    """
    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if any(part in full for part in skip) or not _is_frozen_linear(child):
                continue
            setattr(module, child_name, Fp8Linear(child, device=device, fp8_compute=fp8_compute))
            count += 1
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return count


def dequantize_linears(model: nn.Module) -> int:
    """Turn every :class:`Fp8Linear` back into ``nn.Linear``; returns the count."""
    count = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, Fp8Linear):
                setattr(module, child_name, child.to_linear())
                count += 1
    return count


def checkpoint_name(peft_module_name: str) -> str:
    """The name a PEFT-wrapped module has in the base checkpoint (``base_model.model.`` gone)."""
    return peft_module_name.removeprefix("base_model.model.").replace(".base_layer", "")


@torch.no_grad()
def merged_fp8_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(checkpoint name, weight)`` for each LoRA layer over an :class:`Fp8Linear`.

    The weight is the dequantized base plus the active adapters' deltas, in the layer's
    compute dtype: what ``merge_adapter`` would have written, had the base been 16-bit.
    """
    from peft.tuners.lora import Linear as LoraLinear

    for name, module in model.named_modules():
        if not isinstance(module, LoraLinear):
            continue
        base = module.get_base_layer()
        if not isinstance(base, Fp8Linear):
            continue
        weight = base.weight
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                weight += module.get_delta_weight(adapter).to(weight.dtype)
        yield checkpoint_name(name) + ".weight", weight
        if base.bias is not None:
            yield checkpoint_name(name) + ".bias", base.bias


def install_vllm_weight_sync(trainer: Any) -> bool:
    """Make TRL's weight push to its colocated vLLM include the FP8 base layers.

    TRL merges the adapters and sends ``model.named_parameters()``; an FP8 base weight is a
    buffer that PEFT cannot merge into, so vLLM would keep generating with the weights it
    loaded at the start. This adds the merged FP8 layers to what TRL sends. Returns whether
    there was a vLLM engine to hook.
    """
    generation = getattr(trainer, "vllm_generation", None)
    if generation is None or not hasattr(generation, "_iter_named_params"):
        return False
    original = generation._iter_named_params
    model = trainer.accelerator.unwrap_model(trainer.model)

    def iter_named_params() -> Iterator[tuple[str, torch.Tensor]]:
        yield from original()
        for name, weight in merged_fp8_weights(model):
            yield generation._fix_param_name_to_vllm(name), weight

    generation._iter_named_params = iter_named_params
    logger.info("vLLM weight sync includes the merged FP8 base layers")
    return True
