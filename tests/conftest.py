"""Shared fixtures: a tiny random-weight model with the embedded model's tokenizer, the same
model without its weights, and a stand-in for the GPU's device-wide memory sampler."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Never let a test wait on the network: hub access must fail fast and clearly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_tiny_model(target: Path) -> Path:
    """Save a 2-layer Llama with random weights and the embedded tokenizer into ``target``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from autolearn.embedded import embedded_tokenizer_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a tiny random Llama (about 3 M parameters) that loads like any checkpoint."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def config_only_model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model's config.json and tokenizer without its weights: loading it would fail."""
    target = tmp_path / "no-weights"
    target.mkdir()
    for path in tiny_model_dir.iterdir():
        if path.suffix != ".safetensors":
            shutil.copy(path, target / path.name)
    return target


class StandInSampler:
    """Stands in for ``run_training``'s device-wide sampler, which needs a GPU: a set peak, and
    a record of which device it was asked for, whether the model had loaded yet, and stops."""

    def __init__(self) -> None:
        self.peak_used = 0
        self.device: int | None = None
        self.started_before_load: bool | None = None
        self.stops = 0

    def stop(self) -> int:
        self.stops += 1
        return self.peak_used


@pytest.fixture
def device_sampler(monkeypatch: pytest.MonkeyPatch) -> StandInSampler:
    """``autolearn.pipeline``'s sampler replaced by a :class:`StandInSampler` for one test."""
    from autolearn import pipeline

    sampler = StandInSampler()
    loads: list[str] = []
    load = pipeline.load_training_model

    def start(device: int) -> StandInSampler:
        sampler.device, sampler.started_before_load = device, not loads
        return sampler

    def noted_load(*args: Any, **kwargs: Any) -> Any:
        loads.append("load")
        return load(*args, **kwargs)

    monkeypatch.setattr(pipeline, "start_device_poller", start)
    monkeypatch.setattr(pipeline, "load_training_model", noted_load)
    return sampler
