"""GPU smoke tests, skipped without CUDA: FP8 layers on tensor cores, the FP8 backend end to end.

Run them on a GPU machine with ``pytest -q tests/gpu``; ``bench/gpu_grpo.py`` measures the
same paths at full size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from autolearn.models import package_available

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

needs_fp8_cores = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="needs FP8 tensor cores (compute capability >= 8.9)",
)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


@needs_fp8_cores
@pytest.mark.parametrize("fp8_compute", [False, True])
@pytest.mark.parametrize("rows", [8, 37, 512])
def test_fp8_linear_matches_bf16_and_gives_input_gradients(rows: int, fp8_compute: bool) -> None:
    from autolearn.fp8 import Fp8Linear, _scaled_mm_supported

    torch.manual_seed(rows)
    linear = nn.Linear(1024, 768, bias=False, device="cuda", dtype=torch.bfloat16)
    linear.requires_grad_(False)
    layer = Fp8Linear(linear, fp8_compute=fp8_compute)
    assert layer.weight_fp8.dtype == torch.float8_e4m3fn
    assert layer.weight_fp8.nbytes * 2 == linear.weight.nbytes  # half the bytes of bf16

    x = torch.randn(rows, 1024, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    assert _scaled_mm_supported(x, layer.weight_fp8)  # the tensor-core path takes any row count
    y = layer(x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    reference = x.detach().double() @ linear.weight.double().t()
    # Weights in e4m3; with fp8_compute the activations too.
    assert relative_error(y, reference) < (0.08 if fp8_compute else 0.05)
    if not fp8_compute:  # what a vLLM engine holding layer.weight computes
        assert relative_error(y, x.detach() @ layer.weight.t()) < 1e-2

    grad_out = torch.randn_like(y)
    y.backward(grad_out)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    expected = grad_out.double() @ layer.weight.double()
    assert relative_error(x.grad, expected) < 1e-2  # bf16 matmul with the dequantized weight


def train_tiny(model_dir: Path, output_dir: Path, **model_settings: object) -> Path:
    from autolearn.config import Config, ModelConfig, TrainingConfig, validate
    from autolearn.pipeline import run_training
    from bench.gpu_grpo import REWARDS, prompt_dataset

    config = Config(
        model=ModelConfig(name=str(model_dir), backend="transformers", **model_settings),  # type: ignore[arg-type]
        training=TrainingConfig(
            output_dir=str(output_dir),
            num_generations=4,
            per_device_train_batch_size=4,
            max_completion_length=16,
            max_steps=2,
            learning_rate=1e-3,
            save_steps=100,
        ),
        rewards={"letter_fraction": 1.0},
    )
    validate(config)
    return run_training(config, prompt_dataset(8), REWARDS)


@needs_fp8_cores
def test_fp8_backend_loads_fp8_layers_on_the_gpu(tiny_model_dir: Path) -> None:
    from autolearn.config import ModelConfig
    from autolearn.fp8 import Fp8Linear
    from autolearn.models import load_training_model

    tm = load_training_model(
        ModelConfig(name=str(tiny_model_dir), backend="transformers", load_in_fp8=True),
        "transformers",
        seed=0,
    )
    assert tm.fp8 and tm.base_path == str(tiny_model_dir)
    bases = [m.get_base_layer() for m in tm.model.modules() if hasattr(m, "get_delta_weight")]
    assert bases and all(isinstance(b, Fp8Linear) for b in bases)
    assert all(b.weight_fp8.is_cuda for b in bases)


@needs_fp8_cores
def test_fp8_backend_trains_and_merges_into_the_16bit_base(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    out = train_tiny(tiny_model_dir, tmp_path / "run", load_in_fp8=True, fast_inference=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 2 and all(r["grad_norm"] > 0 for r in steps)
    # Memory: the training side, and the whole device (at least as much); no vLLM here.
    for r in steps:
        assert 0 < r["gpu_train_peak_gib"] <= r["gpu_device_peak_gib"], r
        assert "gpu_vllm_gib" not in r

    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # gradients reached the adapters

    base = load_file(tiny_model_dir / "model.safetensors")
    merged = load_file(out / "merged" / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    prefix = "base_model.model." + key.removesuffix(".weight")
    a, b = adapter[prefix + ".lora_A.weight"], adapter[prefix + ".lora_B.weight"]
    scaling = 32 / 16  # lora_alpha / lora_rank defaults
    expected = base[key].double() + scaling * (b.double() @ a.double())
    assert relative_error(merged[key], expected) < 1e-5  # merged into the exact base weights


def test_a_memory_budget_caps_torch_and_the_run_stays_inside_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from autolearn.memory_plan import GB

    try:
        out = train_tiny(tiny_model_dir, tmp_path / "run", gpu_memory_gb=3.0, fast_inference=False)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)  # the cap outlives the run in this process
    plan = json.loads((out / "run.json").read_text())["memory_plan"]
    total = torch.cuda.mem_get_info()[1]
    assert plan["device_total"] == total and not plan["standby"]
    assert plan["torch_fraction"] == pytest.approx((3 * GB - 0.5 * GB) / total, abs=1e-4)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    peaks = [r["gpu_device_peak_gib"] for r in rows if "gpu_device_peak_gib" in r]
    assert peaks and max(peaks) * 2**30 <= 3 * GB  # the whole device, every allocator
    check = json.loads((out / "run.json").read_text())["budget_check"]
    assert check["within_budget"] is True and check["budget_gb"] == 3.0
    # the run's own check saw at least what the metrics saw (it goes on through the save)
    assert check["device_peak_gb"] * GB >= max(peaks) * 2**30 - 0.01 * GB  # both rounded


def test_device_growth_counts_a_block_allocation_and_never_goes_below_zero() -> None:
    from autolearn.gpu_memory import device_growth

    torch.cuda.empty_cache()
    with device_growth() as grown:
        block = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    assert grown.nbytes is not None and grown.nbytes >= 256 * 2**20
    with device_growth() as shrunk:
        del block
        torch.cuda.empty_cache()
    # memory given back is no growth (never negative; a neighbour's allocation may show)
    assert shrunk.nbytes is not None and 0 <= shrunk.nbytes < 64 * 2**20


def test_run_training_leaves_no_sampling_thread_when_the_load_fails(
    config_only_model: Path, tmp_path: Path
) -> None:
    import threading

    from autolearn.errors import UserError

    with pytest.raises(UserError, match="could not load model"):
        train_tiny(config_only_model, tmp_path / "run")
    alive = [t for t in threading.enumerate() if t.name == "device-memory-poller"]
    assert not alive  # no sampling thread outlives the failed run


def test_run_memory_reads_its_owners_poller_and_leaves_it_running() -> None:
    from autolearn.gpu_memory import GIB, DeviceMemoryPoller, RunMemory

    poller = DeviceMemoryPoller(device=0)
    poller.peak_used = 200 * GIB  # as if the load had peaked there (set before its thread runs)
    poller.start()
    try:
        memory = RunMemory(poller)
        memory.start(nn.Linear(2, 2).cuda(), vllm=False)
        assert memory.fields()["gpu_device_peak_gib"] >= 200.0
        memory.stop()
        assert memory.fields() == {} and poller._thread.is_alive()  # its owner stops it
    finally:
        poller.stop()
    assert not poller._thread.is_alive()


@pytest.mark.skipif(not package_available("unsloth"), reason="unsloth is not installed")
def test_unsloth_backend_loads_and_steps(tiny_model_dir: Path) -> None:
    # In a subprocess: importing Unsloth patches transformers and TRL for the whole process.
    script = (
        "import torch\n"
        "from autolearn.config import ModelConfig\n"
        "from autolearn.pipeline import choose_backend\n"
        "from autolearn.config import Config\n"
        f"cfg = Config(model=ModelConfig(name={str(tiny_model_dir)!r}, backend='unsloth',"
        " load_in_fp8=False, fast_inference=False))\n"
        "assert choose_backend(cfg) == 'unsloth'\n"
        "from autolearn.models import load_training_model\n"
        "tm = load_training_model(cfg.model, 'unsloth', seed=0)\n"
        "ids = torch.randint(0, 1000, (2, 24), device='cuda')\n"
        "loss = tm.model(input_ids=ids, labels=ids).loss\n"
        "loss.backward()\n"
        "grads = [p.grad for n, p in tm.model.named_parameters() if 'lora_A' in n]\n"
        "assert grads and all(g is not None for g in grads), 'no LoRA gradients'\n"
        "print('UNSLOTH_OK', float(loss))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert "UNSLOTH_OK" in result.stdout, (result.stdout + result.stderr)[-4000:]


@pytest.mark.skipif(not package_available("vllm"), reason="vllm is not installed")
def test_inference_benchmark_batches_with_vllm(tmp_path: Path) -> None:
    """inference.py --mode benchmark: the batched pass runs on vLLM, the single-stream rows stay.

    On the embedded model (real weights, a head size vLLM's kernels take).
    """
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable, "inference.py", "--model", "embedded:smollm2-135m", "--mode", "benchmark",
            "--limit", "16", "--max_new_tokens", "32", "--stream_prompts", "4",
            "--output", str(output), "--no_progress",
        ],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    report = json.loads(output.read_text())
    summary = report["summary"]
    assert summary["engine"] == "vllm" and summary["prompts"] == 16
    assert len(report["answers"]) == 16 and summary["generated_tokens"] > 0
    assert summary["stream_prompts"] == 4 and summary["latency_p50_s"] > 0
    assert 0 < summary["ttft_mean_s"] <= summary["latency_mean_s"]
    # Greedy on both engines: most answers agree with the transformers single-stream ones.
    streamed = [r["response"] for r in report["requests"]]
    batched = [a["response"] for a in report["answers"][:4]]
    assert sum(s[:20] == b[:20] for s, b in zip(streamed, batched, strict=True)) >= 2
