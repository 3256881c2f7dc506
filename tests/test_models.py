"""Backend selection, model name resolution and the embedded default model."""

from __future__ import annotations

from pathlib import Path

import pytest

from autolearn.errors import UserError
from autolearn.models import load_inference_model, resolve_model_path, select_backend


@pytest.mark.parametrize(
    ("requested", "cuda", "unsloth", "processes", "expected"),
    [
        ("auto", True, True, 1, "unsloth"),
        ("auto", True, False, 1, "transformers"),
        ("auto", False, True, 1, "transformers"),
        ("auto", True, True, 2, "transformers"),
        ("transformers", True, True, 1, "transformers"),
        ("unsloth", True, True, 1, "unsloth"),
    ],
)
def test_backend_selection(
    requested: str, cuda: bool, unsloth: bool, processes: int, expected: str
) -> None:
    assert (
        select_backend(requested, cuda=cuda, unsloth_installed=unsloth, processes=processes)
        == expected
    )


@pytest.mark.parametrize(
    ("cuda", "unsloth", "processes", "message"),
    [
        (False, True, 1, "needs a CUDA GPU"),
        (True, False, 1, "needs the unsloth package"),
        (True, True, 2, "one GPU only, but 2 processes"),
    ],
)
def test_explicit_unsloth_that_cannot_run_is_an_error(
    cuda: bool, unsloth: bool, processes: int, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        select_backend("unsloth", cuda=cuda, unsloth_installed=unsloth, processes=processes)


def test_missing_local_path_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model path not found"):
        resolve_model_path(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="neither a model"):
        resolve_model_path(str(tmp_path))


def test_offline_hub_name_is_one_clear_error() -> None:
    with pytest.raises(UserError, match="not in the Hugging Face cache"):
        resolve_model_path("someone/not-cached-model")


def test_unknown_embedded_name() -> None:
    with pytest.raises(UserError, match="available: embedded:smollm2-135m"):
        resolve_model_path("embedded:gpt-5")


@pytest.mark.slow
def test_embedded_model_loads_and_generates() -> None:
    model, tokenizer = load_inference_model("embedded:smollm2-135m")
    assert tokenizer.eos_token == "<|im_end|>"
    assert (
        model.config.quantization_config is None
        if hasattr(model.config, "quantization_config")
        else True
    )
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "5" in text  # the real instruct model answers this one


@pytest.mark.parametrize(("dtype", "expected"), [("auto", "float32"), ("bfloat16", "bfloat16")])
def test_fp8_without_a_gpu_falls_back_and_says_to_what(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture, dtype: str, expected: str
) -> None:
    from autolearn.config import ModelConfig
    from autolearn.models import load_training_model

    cfg = ModelConfig(name=str(tiny_model_dir), load_in_fp8=True, dtype=dtype)
    with caplog.at_level("WARNING", logger="autolearn.models"):
        tm = load_training_model(cfg, "transformers", seed=0)
    assert not tm.fp8
    assert str(tm.model.dtype) == f"torch.{expected}"
    assert f"FP8 needs a CUDA GPU; training goes on in {expected}" in caplog.text


def test_fp8_with_vllm_but_no_weight_hook_is_refused() -> None:
    from types import SimpleNamespace

    from autolearn.models import TrainingModel, prepare_trainer

    tm = TrainingModel(None, None, "transformers", fp8=True, vllm=True)
    with pytest.raises(UserError, match="no hook to send FP8 weights to vLLM"):
        prepare_trainer(SimpleNamespace(), tm)  # a trainer without TRL's vLLM weight push
