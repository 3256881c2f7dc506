"""CPU checks of bench/gpu_vllm_fp8.py: its dry run, its bound arithmetic and the FP8 checkpoints it writes.

The GPU measurement itself needs vLLM and an H200; these make sure the one GPU call does not die
on a typo, a wrong tensor name or a bad scale shape.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import gpu_vllm_fp8 as fp8bench  # noqa: E402


def run_bench(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_vllm_fp8.py"), *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
    )


def test_dry_run_plans_writes_checkpoints_and_report(tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = run_bench("--dry-run", "--export", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "checkpoint_checks.json").read_text()) == {
        "static": [],
        "block": [],
        "bf16": [],
    }
    payload = json.loads((out / "results.json").read_text())
    # the most important comparison first: BF16 and the default at both shapes
    assert payload["plan"][:4] == ["14b_bf16", "14b_ptpc", "8b_bf16", "8b_ptpc"]
    assert all(r["error"] == "dry run" for r in payload["results"])
    assert payload["rows"] == []  # nothing measured, nothing invented
    markdown = (out / "results.md").read_text()
    assert "bandwidth not measured" in markdown
    assert "Fp8PtpcOnlineLinearMethod" in markdown
    assert "past --budget" in (out / "plan.md").read_text()


def test_bad_option_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    result = run_bench("--dry-run", "--options", "bf16,fp9", "--export", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown option")
    assert result.stderr.strip().count("\n") == 0


def test_order_puts_bf16_and_default_first_whatever_the_order_given() -> None:
    cases = fp8bench.plan_cases(["14b", "8b"], ["fp8_tensor", "ptpc", "bf16"], [32, 8])
    assert [c.key for c in cases] == [
        "14b_bf16",
        "14b_ptpc",
        "8b_bf16",
        "8b_ptpc",
        "14b_fp8_tensor",
        "8b_fp8_tensor",
    ]
    assert cases[0].batches == (32, 8)


def test_parameter_counts_match_a_real_qwen3_of_the_8b_shape() -> None:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**fp8bench.qwen3_config("8b"))
    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    sizes = fp8bench.shape_sizes("8b")
    assert sizes.linear_params + sizes.lm_head_params + sizes.embed_params + sizes.norm_params == (
        total
    )
    assert 8.1e9 < total < 8.3e9  # Qwen3-8B has 8.19 B parameters


def test_bound_arithmetic() -> None:
    bf16 = fp8bench.step_weight_bytes("8b", fp8bench.OPTIONS["bf16"])
    ptpc = fp8bench.step_weight_bytes("8b", fp8bench.OPTIONS["ptpc"])
    sizes = fp8bench.shape_sizes("8b")
    # BF16: 2 B for every weight but the embedding (a gather of a few rows)
    assert bf16 == 2 * (sizes.linear_params + sizes.lm_head_params + sizes.norm_params)
    # FP8: the linears halve, lm_head and norms stay 16-bit, per-channel scales add 4 B a row
    rows = sum(out for out, _ in sizes.linear_shapes)
    assert ptpc == bf16 - sizes.linear_params + 4 * rows
    lengths = fp8bench.Lengths(prompt=256, completion=256)
    bound = fp8bench.decode_bound(bf16, sizes.kv_bytes_per_token, 32, lengths, 4.0e12)
    assert bound.steps_per_s == pytest.approx(4.0e12 / bf16)
    assert bound.tok_s == pytest.approx(32 * 4.0e12 / bf16)
    # 36 layers x (K + V) x 8 heads x 128 x 2 B, at a mean context of 384 tokens
    assert bound.kv_bytes_per_step == 32 * 384 * 36 * 2 * 8 * 128 * 2
    assert bound.tok_s_with_kv < bound.tok_s


def test_fp8_checkpoint_names_are_the_transformers_names(tmp_path: Path) -> None:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    target = fp8bench.write_checkpoint("tiny", "block", tmp_path / "block", vocab=512)
    index = json.loads((target / "model.safetensors.index.json").read_text())
    config = Qwen3Config(**json.loads((target / "config.json").read_text()))
    with torch.device("meta"):
        expected = set(Qwen3ForCausalLM(config).state_dict())
    weights = {k for k in index["weight_map"] if k.endswith(".weight")}
    assert weights == expected - {"lm_head.weight"}  # the tiny shape ties lm_head to embed_tokens
    scales = {k for k in index["weight_map"] if k.endswith("weight_scale_inv")}
    assert len(scales) == 7 * 2  # seven linears in each of two layers
    assert fp8bench.check_checkpoint(target, "block") == []


def test_quantized_blocks_dequantize_to_the_weight() -> None:
    weight = torch.randn(200, 300) * 0.02  # not a multiple of the block: edge blocks are partial
    q = fp8bench.quantize_tensor(weight, "block")
    assert q["weight"].dtype == torch.float8_e4m3fn
    assert q["weight_scale_inv"].shape == (2, 3)
    scale = q["weight_scale_inv"].repeat_interleave(128, 0).repeat_interleave(128, 1)
    restored = q["weight"].float() * scale[:200, :300]
    assert torch.allclose(restored, weight, rtol=0.07, atol=1e-4)
    static = fp8bench.quantize_tensor(weight, "static")
    restored = static["weight"].float() * static["weight_scale"]
    assert static["weight_scale"].dim() == 0 and static["input_scale"].dim() == 0
    assert torch.allclose(restored, weight, rtol=0.07, atol=1e-4)


def test_check_checkpoint_finds_a_wrong_scale_shape(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    target = fp8bench.write_checkpoint("tiny", "block", tmp_path / "block", vocab=512)
    first = sorted(target.glob("*.safetensors"))[0]
    tensors = load_file(str(first))
    key = next(k for k in tensors if k.endswith("weight_scale_inv"))
    tensors[key] = torch.ones(3, 3)  # the tiny shape has one block per linear: (1, 1)
    save_file(tensors, str(first), {"format": "pt"})
    problems = fp8bench.check_checkpoint(target, "block")
    assert problems and key in problems[0]


def test_kernels_are_read_from_vllms_selection_lines() -> None:
    log = (
        "(EngineCore pid=1) INFO 12-01 [__init__.py:565] Selected CutlassFP8ScaledMMLinearKernel "
        "for Fp8PtpcOnlineLinearMethod\n"
        "INFO Selected CutlassFP8ScaledMMLinearKernel for Fp8PtpcOnlineLinearMethod\n"
    )
    assert fp8bench.kernels_from_log(log) == [
        "Fp8PtpcOnlineLinearMethod / CutlassFP8ScaledMMLinearKernel"
    ]


def test_report_ratios_and_bound_from_engine_bytes(tmp_path: Path) -> None:
    """The table's arithmetic on hand-written engine records (the report code, not a measurement)."""
    args = fp8bench.parse_args(["--shapes", "8b", "--options", "bf16,ptpc", "--batches", "32"])
    lengths = fp8bench.Lengths()
    record = {"tok_s": 1000.0, "decode_tok_s": 1100.0, "batch": 32}
    results = [
        {
            "shape": "8b",
            "option": "bf16",
            "batches": {"32": record},
            "param_bytes": {"roles": {"per_step": 15e9, "lm_head": 1e9}},
        },
        {
            "shape": "8b",
            "option": "ptpc",
            "batches": {"32": dict(record, decode_tok_s=1650.0)},
        },
    ]
    cases = fp8bench.plan_cases(["8b"], ["bf16", "ptpc"], [32])
    fp8bench.write_report(
        tmp_path,
        args=args,
        lengths=lengths,
        environment={},
        bandwidth={"copy_bytes_per_s": 4.0e12, "read_bytes_per_s": 3.0e12},
        results=results,
        cases=cases,
    )
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    bf16, ptpc = rows
    assert bf16["weight_bytes_source"] == "engine" and bf16["weight_bytes_per_step"] == 16e9
    assert bf16["bound"]["tok_s"] == pytest.approx(32 * 4.0e12 / 16e9)
    assert ptpc["weight_bytes_source"] == "analytic"
    assert "| 8b | ptpc | 32 | 1000 | 1650 | 1.50 |" in (tmp_path / "results.md").read_text()


def test_the_cause_of_a_failed_engine_is_its_last_error_line() -> None:
    log = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "RuntimeError: Engine core initialization failed. See root cause above.\n"
        "(EngineCore pid=7) ValueError: FP8 PTPC online quant requires a kernel\n"
    )
    assert fp8bench.last_error_line(log) == "ValueError: FP8 PTPC online quant requires a kernel"
    assert fp8bench.last_error_line("INFO all fine\n") == ""


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is not None, reason="checks the run without vLLM"
)
def test_a_failed_engine_does_not_stop_the_run(tmp_path: Path) -> None:
    """The real driver on a machine without vLLM: each case fails, is recorded, the run goes on."""
    out, work = tmp_path / "export", tmp_path / "work"
    result = run_bench(
        "--shapes", "tiny", "--options", "fp8_static,bf16", "--batches", "2",
        "--min-case-s", "0", "--budget", "150", "--export", str(out), "--workdir", str(work),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((out / "results.json").read_text())
    assert [(r["shape"], r["option"]) for r in payload["results"]] == [
        ("tiny", "bf16"),
        ("tiny", "fp8_static"),
    ]
    for r in payload["results"]:
        assert "exit code 1" in r["error"] and "vllm" in r["error"], r["error"]
    assert payload["rows"] == [] and payload["bandwidth"] == {}  # no GPU: no numbers
    assert not (work / "ckpt" / "tiny_fp8_static").exists()  # written for the case, then removed
    assert "wrote tiny static checkpoint" in (out / "tiny_fp8_static.log").read_text()


def test_an_engine_stopped_after_measuring_everything_is_not_called_a_timeout() -> None:
    assert fp8bench.engine_failure(None, []) == (
        "stopped at its time limit after every batch was measured"
    )
    assert fp8bench.engine_failure(None, [128]) == "timed out; not measured: batches [128]"
    assert fp8bench.engine_failure(1, []) == "exit code 1"
    assert fp8bench.engine_failure(-9, [8, 32]) == "exit code -9; not measured: batches [8, 32]"
