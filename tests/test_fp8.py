"""FP8 frozen base layers on the CPU (dequantized matmul path): values, gradients, merging."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from autolearn.fp8 import (
    Fp8Linear,
    checkpoint_name,
    dequantize_linears,
    merged_fp8_weights,
    quantize_frozen_linears,
    quantize_rowwise,
)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def test_rowwise_quantization_round_trips_within_fp8_precision() -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 96) * torch.logspace(-3, 1, 64).unsqueeze(1)  # rows of any scale
    weight_fp8, scale = quantize_rowwise(weight)
    assert weight_fp8.dtype == torch.float8_e4m3fn and scale.shape == (64, 1)
    restored = weight_fp8.float() * scale
    assert relative_error(restored, weight) < 0.04  # e4m3 keeps 3 mantissa bits


def test_fp8_linear_forward_and_input_gradient_follow_the_dequantized_weight() -> None:
    torch.manual_seed(1)
    linear = nn.Linear(48, 32, bias=True).requires_grad_(False)
    layer = Fp8Linear(linear)
    x = torch.randn(3, 5, 48, requires_grad=True)
    y = layer(x)
    assert y.shape == (3, 5, 32)
    assert relative_error(y, linear(x)) < 0.04
    grad_out = torch.randn_like(y)
    y.backward(grad_out)
    assert x.grad is not None
    expected = grad_out @ layer.weight  # dL/dx uses the dequantized weight
    assert relative_error(x.grad, expected) < 1e-5
    assert not any(p.requires_grad for p in layer.parameters())


def tiny_peft_model() -> nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(2)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"])
    model = get_peft_model(LlamaForCausalLM(config), lora)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # a trained-looking adapter, so merging changes something
            nn.init.normal_(param, std=0.1)
    return model


def test_quantized_model_trains_lora_and_merges_like_a_16bit_base(tmp_path: Path) -> None:
    model = tiny_peft_model()
    reference = {
        checkpoint_name(name): module.get_base_layer().weight + module.get_delta_weight("default")
        for name, module in model.named_modules()
        if hasattr(module, "get_delta_weight")
    }
    frozen = sum(isinstance(m, nn.Linear) and not m.weight.requires_grad for m in model.modules())
    assert quantize_frozen_linears(model) == frozen - 1  # every frozen linear but lm_head

    input_ids = torch.randint(0, 128, (2, 7))
    loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)

    merged = dict(merged_fp8_weights(model))
    assert set(merged) == {name + ".weight" for name in reference}
    for name, weight in reference.items():
        assert relative_error(merged[name + ".weight"], weight) < 0.04

    assert dequantize_linears(model) == frozen - 1
    assert not any(isinstance(m, Fp8Linear) for m in model.modules())
