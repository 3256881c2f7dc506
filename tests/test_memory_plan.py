"""The GPU memory budget (``model.gpu_memory_gb``): the planner's numbers on real shapes, the
split it hands to vLLM and torch, Unsloth's standby under a budget, and the one-line refusal
through the real scripts before any weights are read (CPU)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autolearn.config import Config, MathDataConfig, ModelConfig, TrainingConfig, merge
from autolearn.errors import UserError
from autolearn.memory_plan import (
    GB,
    MemoryPlan,
    ModelShape,
    Workload,
    estimate,
    plan_split,
    shape_of,
    unsloth_reservation_floor,
    vllm_utilization,
    weight_bytes,
)
from autolearn.pipeline import set_standby

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# The published config.json values of the models in the spec's table.
QWEN3_8B = {
    "model_type": "qwen3",
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "tie_word_embeddings": False,
}
QWEN3_1_7B = {
    "model_type": "qwen3",
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
}


LLAMA_3B = {
    "model_type": "llama",
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 28,
    "num_attention_heads": 24,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "tie_word_embeddings": True,
}


def workload(**changes: object) -> Workload:
    values: dict[str, object] = {
        "precision": "fp8",
        "lora_rank": 16,
        "lora_targets": TARGETS,
        "rollout_sequences": 8,
        "train_rows": 8,
        "prompt_length": 256,
        "completion_length": 512,
        "gradient_checkpointing": True,
        "engine": "unsloth",
        "backend": "unsloth",
        "max_seq_length": 832,
    }
    values.update(changes)
    return Workload(**values)  # type: ignore[arg-type]


def test_shape_read_by_transformers_autoconfig_gives_qwen3_8b_parameter_count(
    tmp_path: Path,
) -> None:
    from transformers import AutoConfig

    (tmp_path / "config.json").write_text(json.dumps(QWEN3_8B))
    shape = ModelShape.from_config(AutoConfig.from_pretrained(tmp_path))
    assert shape == shape_of(QWEN3_8B)
    assert shape.params() == pytest.approx(8.19e9, rel=0.005)  # Qwen3-8B: 8.2 B parameters
    assert weight_bytes(shape, "bf16") / GB == pytest.approx(16.4, abs=0.05)
    assert shape_of(LLAMA_3B).params() == pytest.approx(3.21e9, rel=0.005)  # tied embeddings


def test_fp8_stores_the_decoder_linears_in_about_half_and_keeps_embeddings_16_bit() -> None:
    shape = shape_of(QWEN3_8B)
    sixteen = 2 * shape.sixteen_bit_params()
    bf16_decoder = weight_bytes(shape, "bf16") - sixteen
    fp8_decoder = weight_bytes(shape, "fp8") - sixteen
    assert fp8_decoder / bf16_decoder == pytest.approx(0.5, abs=0.005)  # 1 byte + row scales
    assert sixteen / GB == pytest.approx(2.49, abs=0.01)  # embed_tokens + lm_head, untied


def test_counts_match_a_real_model_and_peft_lora(tiny_model_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = ModelShape.from_config(AutoConfig.from_pretrained(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert shape.params() == model.num_parameters()
    peft_model = get_peft_model(
        model, LoraConfig(r=8, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert shape.lora_params(8, ("q_proj", "v_proj", "down_proj")) == trainable


def test_kv_cache_and_logprob_parts_follow_the_lengths() -> None:
    shape = shape_of(QWEN3_8B)
    assert shape.kv_bytes_per_token() == 2 * 36 * 8 * 128 * 2
    short, long = (
        workload(engine="trl", backend="transformers"),
        workload(engine="trl", backend="transformers", completion_length=1024),
    )
    assert estimate(shape, long).vllm_cache > estimate(shape, short).vllm_cache
    # TRL keeps the whole batch's 16-bit logits; Unsloth computes them chunk by chunk.
    trl_logprobs = estimate(shape, short).logprobs
    unsloth_logprobs = estimate(shape, workload()).logprobs
    assert trl_logprobs > 3 * unsloth_logprobs
    assert trl_logprobs / GB == pytest.approx(8 * 513 * 151936 * 4 / GB, rel=0.15)
    # Checkpointing keeps one hidden state per layer instead of every layer's tensors.
    no_ckpt = workload(engine="trl", backend="transformers", gradient_checkpointing=False)
    assert estimate(shape, no_ckpt).activations > 5 * estimate(shape, short).activations


def test_trl_colocate_counts_vllm_own_weight_copy_unsloth_shares_it() -> None:
    shape = shape_of(QWEN3_8B)
    trl = estimate(shape, workload(engine="trl", backend="transformers"))
    shared = estimate(shape, workload())
    assert trl.vllm_weights == weight_bytes(shape, "bf16")
    assert shared.vllm_weights == 0


def test_unsloth_reservation_covers_its_own_estimate_of_vllm() -> None:
    shape = shape_of(QWEN3_8B)
    parts = estimate(shape, workload())
    assert parts.vllm_part(parts.weights, "unsloth") >= unsloth_reservation_floor(shape, workload())
    # FP8, online or pre-quantized: Unsloth's 8-bit rate (1.25 bytes a linear weight)
    fp8_floor = unsloth_reservation_floor(shape, workload())
    assert weight_bytes(shape, "fp8") < fp8_floor < weight_bytes(shape, "bf16")
    fp8_repo = shape_of({**QWEN3_8B, "quantization_config": {"quant_method": "fp8"}})
    assert fp8_repo.fp8_checkpoint
    assert unsloth_reservation_floor(fp8_repo, workload(precision="bf16")) == fp8_floor
    # BF16: 16 bits a weight
    assert unsloth_reservation_floor(shape, workload(precision="bf16")) > weight_bytes(
        shape, "bf16"
    )


def test_a_budget_too_small_names_the_estimate_and_its_parts() -> None:
    shape = shape_of(QWEN3_8B)
    with pytest.raises(UserError) as caught:
        plan_split(6, "Qwen3-8B", shape, workload(), device_total=80 * GB, device_free=79 * GB)
    message = str(caught.value)
    assert message.startswith("gpu_memory_gb 6 cannot hold Qwen3-8B in fp8: needs about ")
    for part in ("weights 9.4", "LoRA+optimizer", "activations", "vLLM cache", "overhead"):
        assert part in message
    # a forced plan (the benchmark's --budget-override) goes on and says so
    forced = plan_split(6, "Qwen3-8B", shape, workload(), device_total=80 * GB, force=True)
    assert forced.forced


def h200_plan_of_8b(budget_gb: float, free_gb: float = 149, *, force: bool = False) -> MemoryPlan:
    """The plan of a Qwen3-8B FP8 budget on a 150 GB device with ``free_gb`` of it free."""
    return plan_split(
        budget_gb, "Qwen3-8B", shape_of(QWEN3_8B), workload(),
        device_total=150 * GB, device_free=int(free_gb * GB), force=force,
    )  # fmt: skip


def test_a_runs_peak_is_checked_against_its_budget() -> None:
    plan = h200_plan_of_8b(16)
    inside = plan.check_peak(int(15.98 * GB))  # the 8B FP8 cell on the H200
    assert inside == {"device_peak_gb": 15.98, "budget_gb": 16.0, "within_budget": True}
    assert plan.over_budget_message(int(15.98 * GB)) is None
    over = plan.check_peak(int(16.25 * GB))
    assert over["within_budget"] is False and over["device_peak_gb"] == 16.25
    message = plan.over_budget_message(int(16.25 * GB))
    assert message is not None and message.startswith(
        "the device-wide peak, 16.25 GB, went 0.25 GB over gpu_memory_gb 16 (the plan's estimate "
        "was 15.8 GB); torch was capped, so what grew past the plan is outside the cap: the CUDA "
        "context, vLLM's graphs, library workspaces. A 16 GB card could run out: "
    )
    crowded = h200_plan_of_8b(
        16, free_gb=140
    )  # another process held 10 GB when the run was planned
    assert "other processes: 10.0 GB of the device was in use" in (
        crowded.over_budget_message(int(16.25 * GB)) or ""
    )
    forced = h200_plan_of_8b(6, force=True)
    assert "(planned below its estimate of 15.8 GB, forced)" in (
        forced.over_budget_message(int(6.5 * GB)) or ""
    )


def test_a_refusal_suggests_the_micro_batch_that_would_fit() -> None:
    shape, full = shape_of(QWEN3_1_7B), workload(gradient_checkpointing=True)
    with pytest.raises(UserError) as caught:
        plan_split(5.2, "Qwen3-1.7B", shape, full, device_total=141 * GB)
    message = str(caught.value)
    assert message.endswith(
        "; per_device_train_batch_size 2 with gradient_accumulation_steps 4 "
        "(the same 8 completions a step) would need about 5.1 GB"
    )
    # the suggestion is a plan the planner accepts, and it is the largest such batch
    fitting = workload(train_rows=2)
    assert plan_split(5.2, "Qwen3-1.7B", shape, fitting, device_total=141 * GB).forced is False
    with pytest.raises(UserError):
        plan_split(5.2, "Qwen3-1.7B", shape, workload(train_rows=4), device_total=141 * GB)
    # no hint where even one completion at a time is too much
    with pytest.raises(UserError) as hopeless:
        plan_split(3, "Qwen3-1.7B", shape, full, device_total=141 * GB)
    assert "per_device_train_batch_size" not in str(hopeless.value)


def test_a_budget_larger_than_the_device_is_refused() -> None:
    with pytest.raises(UserError, match="more than this GPU has"):
        plan_split(200, "Qwen3-8B", shape_of(QWEN3_8B), workload(), device_total=141 * GB)


def test_split_vllm_share_and_torch_cap() -> None:
    shape = shape_of(QWEN3_8B)
    total, free = 141 * GB, 140 * GB
    trl = plan_split(
        60, "m", shape, workload(engine="trl", backend="transformers", precision="bf16"),
        device_total=total, device_free=free,
    )  # fmt: skip
    assert trl.gpu_memory_utilization == pytest.approx(trl.vllm_bytes / total, abs=1e-4)
    assert trl.torch_fraction == pytest.approx((60 * GB - 0.5 * GB) / total, abs=1e-4)
    unsloth = plan_split(40, "m", shape, workload(), device_total=total, device_free=free)
    # Unsloth multiplies the value by the free memory before handing vLLM a share of the total
    assert unsloth.gpu_memory_utilization == pytest.approx(unsloth.vllm_bytes / free, abs=1e-4)
    assert not unsloth.standby
    assert unsloth.vllm_bytes < 40 * GB
    # Unsloth's vLLM decodes one step's rollouts at once, the batch its KV cache was sized for;
    # TRL sets its own max_num_seqs from the same batch
    wide = plan_split(40, "m", shape, workload(rollout_sequences=32), device_total=total)
    assert (unsloth.vllm_max_num_seqs, wide.vllm_max_num_seqs) == (8, 32)
    assert trl.vllm_max_num_seqs is None
    assert "max_num_seqs 32" in " ".join(wide.lines())
    assert vllm_utilization(10 * GB, "unsloth", total, free) > vllm_utilization(
        10 * GB, "trl", total, free
    )
    lines = unsloth.lines()
    assert lines[0].startswith("memory budget 40 GB for m in fp8: estimate ")
    assert "standby off" in " ".join(lines) and "torch capped at" in lines[-1]
    record = unsloth.to_dict()
    assert record["estimate_gb"]["total"] == pytest.approx(unsloth.estimate.total / GB, abs=1e-3)
    json.dumps(record)  # run.json can hold it


def test_without_a_gpu_the_plan_checks_but_sets_nothing() -> None:
    plan = plan_split(40, "m", shape_of(QWEN3_8B), workload(engine="none"), device_total=None)
    assert plan.torch_fraction is None and plan.gpu_memory_utilization is None
    assert "no GPU here" in plan.lines()[-1]


def test_standby_is_off_under_a_budget_and_on_by_default() -> None:
    budget = Config(model=ModelConfig(gpu_memory_gb=16))
    environ = {"UNSLOTH_VLLM_STANDBY": "1"}
    set_standby(budget, environ)
    assert environ["UNSLOTH_VLLM_STANDBY"] == "0"
    default: dict[str, str] = {}
    set_standby(Config(), default)
    assert default["UNSLOTH_VLLM_STANDBY"] == "1"
    kept = {"UNSLOTH_VLLM_STANDBY": "0"}
    set_standby(Config(), kept)  # the user's own choice stays without a budget
    assert kept["UNSLOTH_VLLM_STANDBY"] == "0"


def test_vllm_share_measured_on_the_device_replaces_torch_view_in_the_metrics() -> None:
    from autolearn.gpu_memory import GIB, memory_fields

    # torch saw 1 GiB of vLLM's allocations; the device lost 9 GiB when its engine started
    fields = memory_fields(5 * GIB, 1 * GIB, 20 * GIB, vllm=True, vllm_device=9 * GIB)
    assert fields == {
        "gpu_train_peak_gib": 4.0,
        "gpu_vllm_gib": 9.0,
        "gpu_device_peak_gib": 20.0,
    }
    assert memory_fields(5 * GIB, 1 * GIB, None, vllm=True)["gpu_vllm_gib"] == 1.0  # fallback


# --------------------------------------------------------------------------- config and scripts


def test_config_accepts_a_number_or_null_and_rejects_the_rest() -> None:
    config = Config()
    assert config.model.gpu_memory_gb is None
    merge(config, {"model": {"gpu_memory_gb": 16}}, "yaml")
    assert config.model.gpu_memory_gb == 16.0
    merge(config, {"model": {"gpu_memory_gb": None}}, "yaml")
    assert config.model.gpu_memory_gb is None
    with pytest.raises(UserError, match="expected a number"):
        merge(config, {"model": {"gpu_memory_gb": "lots"}}, "yaml")


SCRIPTS = {
    "train_fp8_grpo.py": ("--dataset", str(ROOT / "examples" / "math_sample.jsonl")),
    "train_code_grpo.py": (
        "--dataset", "custom", "--test_file", str(ROOT / "examples" / "custom_tests.json"),
    ),
    "train_bench_grpo.py": ("--benchmark", "terminal"),
}  # fmt: skip


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(ROOT / script), *SCRIPTS[script], *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=180)


def test_the_pipeline_plans_a_refused_budget_only_when_forced(
    config_only_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from autolearn.pipeline import plan_memory

    config = Config(
        model=ModelConfig(name=str(config_only_model), backend="transformers", gpu_memory_gb=0.1)
    )
    with pytest.raises(UserError, match=r"gpu_memory_gb 0\.1 cannot hold "):
        plan_memory(config, "transformers")
    # bench/gpu_memory.py --budget-override: the same budget is planned, with a warning
    plan = plan_memory(config, "transformers", force_budget=True)
    assert plan is not None and plan.forced and plan.budget_gb == 0.1
    assert plan.estimate.total > 0.1 * GB
    assert "planned anyway (forced)" in caplog.text


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_refuses_a_budget_too_small_in_one_line_before_loading(
    script: str, config_only_model: Path, tmp_path: Path
) -> None:
    result = run_script(
        script, "--model", str(config_only_model), "--gpu_memory_gb", "0.1",
        "--output_dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: gpu_memory_gb 0.1 cannot hold ")
    assert "in fp8: needs about " in lines[0] and "overhead 0.5)" in lines[0]
    assert not (tmp_path / "run").exists()  # nothing was started


def test_a_budget_that_fits_goes_on_to_load_the_model(
    config_only_model: Path, tmp_path: Path
) -> None:
    # Positive control for the test above: the same weightless model with a budget that holds
    # it passes the planner and fails only when its weights are read.
    result = run_script(
        "train_fp8_grpo.py", "--model", str(config_only_model), "--gpu_memory_gb", "4",
        "--output_dir", str(tmp_path / "run"), "--max_steps", "1",
    )  # fmt: skip
    assert result.returncode != 0
    assert "cannot hold" not in result.stderr
    assert "no GPU here: gpu_memory_gb 4 is checked" in result.stderr
    assert "safetensors" in result.stderr or "could not load model" in result.stderr


def test_bad_budget_values_are_one_error_line(tmp_path: Path) -> None:
    result = run_script(
        "train_fp8_grpo.py", "--gpu_memory_gb", "0", "--model", "someone/never-loaded",
        "--output_dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: model.gpu_memory_gb must be a positive number of GB (or null), got 0.0"
    )


@pytest.mark.slow
def test_a_run_with_a_budget_prints_the_plan_and_records_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = run_script(
        "train_fp8_grpo.py", "--model", str(tiny_model_dir), "--gpu_memory_gb", "4",
        "--output_dir", str(out), "--max_steps", "1", "--max_samples", "4",
        "--num_generations", "2", "--batch_size", "2", "--max_completion_length", "8",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "memory budget 4 GB for " in result.stderr
    assert "no GPU here: the plan is not applied" in result.stderr
    plan = json.loads((out / "run.json").read_text())["memory_plan"]
    assert plan["budget_gb"] == 4.0 and plan["engine"] == "none"
    assert 0.5 < plan["estimate_gb"]["total"] < 4


def budget_run(model_dir: Path, output_dir: Path) -> Config:
    return Config(
        model=ModelConfig(
            name=str(model_dir), backend="transformers", load_in_fp8=False, gpu_memory_gb=4
        ),
        training=TrainingConfig(
            output_dir=str(output_dir), num_generations=2, per_device_train_batch_size=2,
            max_completion_length=8, max_steps=1,
        ),
        dataset=MathDataConfig(name=str(ROOT / "examples" / "math_sample.jsonl")),
        rewards={"correctness": 1.0},
    )  # fmt: skip


def test_a_budgeted_run_that_went_over_says_so_in_the_log_and_run_json(
    tiny_model_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    device_sampler: Any,
) -> None:
    import rewards
    from autolearn.data import build_math_dataset
    from autolearn.pipeline import run_training

    config = budget_run(tiny_model_dir, tmp_path / "run")
    device_sampler.peak_used = int(4.3 * GB)  # as if the GPU had peaked there
    with caplog.at_level(logging.INFO):
        out = run_training(
            config, build_math_dataset(config.dataset.name, max_samples=4), rewards.REWARDS
        )
    assert device_sampler.started_before_load and device_sampler.stops == 1  # a normal return
    check = json.loads((out / "run.json").read_text())["budget_check"]
    assert check == {"device_peak_gb": 4.3, "budget_gb": 4.0, "within_budget": False}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [m for m in warned if m.startswith("the device-wide peak, 4.30 GB, went 0.30 GB over")]


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_crash_still_gets_its_budget_check_on_the_main_process_only(
    tiny_model_dir: Path,
    tmp_path: Path,
    device_sampler: Any,
    monkeypatch: pytest.MonkeyPatch,
    rank: str,
) -> None:
    import rewards
    from autolearn import trainer
    from autolearn.data import build_math_dataset
    from autolearn.pipeline import run_training

    def peak_then_crash(*args: Any, **kwargs: Any) -> Path:
        device_sampler.peak_used = int(4.3 * GB)  # the peak comes during training
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(trainer, "train", peak_then_crash)
    monkeypatch.setenv("RANK", rank)
    out = tmp_path / "run"
    out.mkdir()  # rank 0 makes the folder; another rank only writes into it
    with pytest.raises(RuntimeError, match="illegal memory access"):  # the run's own error
        config = budget_run(tiny_model_dir, out)
        run_training(
            config, build_math_dataset(config.dataset.name, max_samples=4), rewards.REWARDS
        )
    assert device_sampler.stops == 1
    record = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    if rank == "0":
        assert record["budget_check"] == {
            "device_peak_gb": 4.3, "budget_gb": 4.0, "within_budget": False
        }  # fmt: skip
    else:
        assert "budget_check" not in record


def test_the_budget_check_keeps_the_worst_session_of_a_resumed_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from autolearn.pipeline import report_peak_against_budget
    from autolearn.rundir import read_run_record, update_run_record

    plan = h200_plan_of_8b(16)
    (tmp_path / "fits").mkdir()
    (tmp_path / "resumed").mkdir()
    with caplog.at_level(logging.INFO):
        report_peak_against_budget(tmp_path / "fits", plan, int(15.98 * GB))  # positive control
    assert (read_run_record(tmp_path / "fits") or {})["budget_check"]["within_budget"] is True
    assert "device-wide peak 15.98 GB, inside gpu_memory_gb 16" in caplog.text
    resumed = tmp_path / "resumed"
    report_peak_against_budget(resumed, plan, int(16.25 * GB))  # the first session went over
    report_peak_against_budget(resumed, plan, int(15.5 * GB))  # the resumed one did not
    check = (read_run_record(resumed) or {})["budget_check"]
    assert check == {"device_peak_gb": 16.25, "budget_gb": 16.0, "within_budget": False}
    assert "in an earlier session of this run, the device-wide peak, 16.25 GB" in caplog.text
    # resumed with a larger budget: the earlier peak was against another budget, not kept
    larger = h200_plan_of_8b(20)
    report_peak_against_budget(resumed, larger, int(15.0 * GB))
    check = (read_run_record(resumed) or {})["budget_check"]
    assert check == {"device_peak_gb": 15.0, "budget_gb": 20, "within_budget": True}
    # a malformed earlier check is no peak to keep, and this session's verdict still comes
    update_run_record(resumed, budget_check={"budget_gb": 16, "device_peak_gb": "n/a"})
    caplog.clear()
    report_peak_against_budget(resumed, plan, int(17.0 * GB))
    assert (read_run_record(resumed) or {})["budget_check"]["device_peak_gb"] == 17.0
    assert "the device-wide peak, 17.00 GB, went 1.00 GB over gpu_memory_gb 16" in caplog.text


# --------------------------------------------------------------------------- bench/gpu_memory.py


def test_benchmark_cases_run_cheapest_first_and_a_failure_rules_out_smaller_budgets() -> None:
    from bench.gpu_memory import MemCase, cheapest_first, doomed_by, parse_cases

    spec = parse_cases("spec")
    assert [c.key for c in spec[:3]] == ["1.7b:fp8:5", "1.7b:bf16:8", "3b:fp8:8"]
    assert cheapest_first(parse_cases("14b:bf16,1.7b:bf16:8,1.7b:fp8:6,1.7b:fp8:5")) == [
        MemCase("1.7b", "fp8", 5.0),
        MemCase("1.7b", "fp8", 6.0),
        MemCase("1.7b", "bf16", 8.0),
        MemCase("14b", "bf16", 40.0),
    ]
    oom = [MemCase("8b", "fp8", 16.0)]
    assert doomed_by(MemCase("8b", "bf16", 16.0), oom) == oom[0]  # BF16 needs more than FP8
    assert doomed_by(MemCase("8b", "fp8", 12.0), oom) == oom[0]
    assert doomed_by(MemCase("8b", "bf16", 24.0), oom) is None  # a larger budget may fit
    assert doomed_by(MemCase("14b", "fp8", 16.0), oom) is None
    with pytest.raises(SystemExit, match="bad case"):
        parse_cases("8b:fp4:16")


def test_bisection_tries_the_measured_peak_then_halves_the_bracket() -> None:
    from bench.gpu_memory import next_bisect_budget

    # fits at 16 with a peak of 12.2 GB: try 12.5 next
    assert next_bisect_budget([(16.0, True, 12.2)]) == 12.5
    # 12.5 failed: halfway between 12.5 and 16, on the 0.5 GB grid
    assert next_bisect_budget([(16.0, True, 12.2), (12.5, False, None)]) == 14.0
    # a bracket within 0.5 GB is the answer
    assert next_bisect_budget([(16.0, True, 15.9), (15.5, False, None)]) is None
    # failing at the start: grow by half
    assert next_bisect_budget([(16.0, False, None)]) == 24.0


def test_the_benchmark_puts_the_librarys_device_peak_beside_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from autolearn.gpu_memory import GIB
    from bench.gpu_memory import check_device_peak

    metrics = {"gpu_device_peak_gib": round(15.95e9 / GIB, 3)}  # as metrics.jsonl rounds it
    close = {"case": "8b:fp8:16", "device_peak_gb": 15.98, "metrics_memory": metrics}
    check_device_peak(close)
    assert close["device_peak_metrics_gb"] == pytest.approx(15.95, abs=1e-3)
    assert "device-wide peak" not in caplog.text  # within 0.1 GB: no warning
    apart = {"case": "8b:fp8:16", "device_peak_gb": 15.98,
             "metrics_memory": {"gpu_device_peak_gib": 13.0}}  # fmt: skip
    check_device_peak(apart)
    assert "8b:fp8:16: metrics.jsonl's device-wide peak 13.96 GB, the benchmark's own 15.98" in (
        caplog.text
    )
    cpu: dict[str, Any] = {"case": "tiny:fp8:2", "device_peak_gb": None, "metrics_memory": {}}
    check_device_peak(cpu)  # no GPU: neither figure, no warning
    assert cpu["device_peak_metrics_gb"] is None


def run_memory_bench(*args: str) -> None:
    """Run ``bench/gpu_memory.py`` as a user would, and fail the test if it fails."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_memory.py"), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_memory_benchmark_runs_its_cases_on_cpu_with_the_tiny_shape(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    run_memory_bench(
        "--smoke", "--tokenizer", str(tiny_model_dir), "--export", str(export),
        "--workdir", str(tmp_path / "work"),
    )  # fmt: skip
    results = {r["case"]: r for r in json.loads((export / "results.json").read_text())["results"]}
    assert list(results) == ["tiny:fp8:2", "tiny:bf16:0.05", "tiny:bf16:2"]  # cheapest first
    for key in ("tiny:fp8:2", "tiny:bf16:2"):
        assert results[key]["status"] == "fits", results[key].get("error")
        assert results[key]["steps_done"] == 2 and results[key]["step_s"] > 0
        assert results[key]["plan"]["budget_gb"] == 2.0  # the pipeline's own plan, from run.json
        # the driver's estimate comes from the case's own Config: the run planned the same
        assert results[key]["estimate_drift_gb"] == 0.0
        # transformers' generate: the rollout is timed, but there is no engine to split it
        assert set(results[key]["rollout_split"]) == {"rollout_seconds"}
        assert results[key]["device_peak_metrics_gb"] is None  # no GPU: no device-wide peak
    refused = results["tiny:bf16:0.05"]
    assert refused["status"] == "refused" and refused["planner"] == "refuses"
    report = (export / "results.md").read_text()
    assert "| refused |" in report and "- built tiny for tiny:fp8:2: " in report
    assert sorted(p.name for p in export.iterdir()) == ["cases.log", "results.json", "results.md"]
    assert not (tmp_path / "work" / "models" / "tiny").exists()  # removed after its cases


@pytest.mark.slow
def test_budget_override_trains_a_case_the_planner_refuses(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # The smoke test's refused case, forced: the pipeline plans it (force_budget) and trains.
    export = tmp_path / "export"
    run_memory_bench(
        "--smoke", "--cases", "tiny:bf16:0.05", "--budget-override", "--memory-history", "2",
        "--tokenizer", str(tiny_model_dir), "--export", str(export),
        "--workdir", str(tmp_path / "work"),
    )  # fmt: skip
    (forced,) = json.loads((export / "results.json").read_text())["results"]
    assert forced["planner"] == "refuses" and forced["plan"]["forced"] is True
    assert forced["status"] == "fits" and forced["steps_done"] == 2, forced.get("error")
    # --memory-history reached the case's step 2; without CUDA there is nothing to record
    assert forced["memory_history"] == {"step": 2, "error": "no CUDA device: nothing was recorded"}
    assert forced["peak_raised_in"] == []  # torch's peaks by phase need CUDA too
    assert "planned anyway (forced)" in (export / "cases.log").read_text()


def test_build_only_leaves_the_models_for_a_later_call(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The GPU plan's first call builds the 14B checkpoint this way, before the wheels."""
    work, export = tmp_path / "work", tmp_path / "export"
    run_memory_bench(
        "--cases", "tiny:fp8:2", "--build-only", "--tokenizer", str(tiny_model_dir),
        "--export", str(export), "--workdir", str(work),
    )  # fmt: skip
    models = work / "models"
    assert sorted(p.name for p in models.iterdir()) == ["tiny", "tiny.build.json"]  # no partial
    assert (models / "tiny" / "model.safetensors").is_file()
    assert (models / "tiny" / "tokenizer.json").is_file()
    builds = json.loads((export / "builds.json").read_text())
    assert set(builds["tiny"]) == {"build_s", "save_s", "build_wall_s"}
    assert not (export / "results.json").exists()  # nothing was trained


@pytest.mark.parametrize("model", ["1.7b", "3b", "8b", "14b"])
def test_benchmark_shapes_build_the_models_the_planner_counts(
    model: str, tiny_model_dir: Path
) -> None:
    import torch
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    from bench.gpu_grpo import LLAMA_SHAPES, SHAPES
    from bench.gpu_memory import MODELS, shape_of_case

    row = MODELS[model]
    llama = row["shape"] in LLAMA_SHAPES
    config_class, model_class = (
        (LlamaConfig, LlamaForCausalLM) if llama else (Qwen3Config, Qwen3ForCausalLM)
    )
    config = config_class(vocab_size=row["vocab"], **SHAPES[row["shape"]])
    with torch.device("meta"):  # the real architecture's parameters, without memory
        built = model_class(config)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # the embedded one, 49152 tokens
    assert shape_of_case(model, tokenizer).params() == built.num_parameters()
    published = {"1.7b": 1.72e9, "3b": 3.21e9, "8b": 8.19e9, "14b": 14.77e9}[model]
    assert built.num_parameters() == pytest.approx(published, rel=0.01)


def test_benchmark_estimates_are_the_plans_the_gpu_runs_made(tiny_model_dir: Path) -> None:
    """The driver's estimates (from each case's Config through workload_for) against the
    ``memory_plan`` totals the H200 runs of 2026-12-01 recorded (docs/PERFORMANCE.md)."""
    from transformers import AutoTokenizer

    from bench.gpu_memory import CaseWorkload, MemCase, estimate_gb, parse_args, workload_from

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    recorded = {"1.7b": 5.8, "3b": 7.8, "8b": 15.8, "14b": 25.6}
    for model, planned in recorded.items():
        assert estimate_gb(MemCase(model, "fp8", 24), CaseWorkload(), tokenizer) == pytest.approx(
            planned, abs=0.05
        ), model
    smoke = workload_from(parse_args(["--smoke"]))  # transformers' generate: no vLLM part
    assert estimate_gb(MemCase("tiny", "bf16", 2), smoke, tokenizer) < 1.0
