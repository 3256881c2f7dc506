"""The rollout clock (autolearn/rollout_clock.py): how a GRPO step's rollout time is split.

vLLM needs a GPU, so the engine here is a CPU stand-in with vLLM's method names that sleeps
for known times. What runs for real: TRL 1.14's own ``VLLMGeneration.sync_weights`` and
``generate`` (colocate mode, sleep mode on) with PEFT's real ``merge_adapter`` on a tiny LoRA
model, so a TRL release that stops calling the names the clock wraps fails here. The
transformers backend without vLLM (no split fields at all) is checked end to end in
tests/test_train_math.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from autolearn.rollout_clock import RolloutClock

GENERATE_S, SLEEP_WAKE_S = 0.08, 0.02


class CPUEngine:
    """vLLM's ``LLM`` methods that TRL calls in colocate mode, each taking a known time."""

    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.calls: list[str] = []
        model = SimpleNamespace(
            load_weights=lambda weights: self.loaded.extend(n for n, _ in weights)
        )
        runner = SimpleNamespace(model=model)
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner))
        )

    def generate(self, prompts: list[Any], sampling_params: Any = None, **_: Any) -> list[Any]:
        self.calls.append("generate")
        time.sleep(GENERATE_S)
        n = getattr(sampling_params, "n", 1)
        return [
            SimpleNamespace(
                prompt_token_ids=p["prompt_token_ids"],
                outputs=[SimpleNamespace(token_ids=[1, 2, 3], logprobs=None) for _ in range(n)],
            )
            for p in prompts
        ]

    def sleep(self, level: int = 1) -> None:
        self.calls.append(f"sleep({level})")
        time.sleep(SLEEP_WAKE_S)

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.calls.append(f"wake_up({tags})")
        time.sleep(SLEEP_WAKE_S)

    def reset_prefix_cache(self) -> None:
        self.calls.append("reset_prefix_cache")


class SamplingParams(SimpleNamespace):
    """vllm.SamplingParams's keyword constructor (vLLM is not installed here)."""


@pytest.fixture
def trl_generation(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, CPUEngine]:
    """TRL's real VLLMGeneration in colocate + sleep mode on a tiny LoRA model, engine stubbed."""
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.generation import vllm_generation

    engine = CPUEngine()

    class WithCPUEngine(vllm_generation.VLLMGeneration):
        def _init_vllm(self) -> None:  # TRL starts vllm.LLM here; hand it the stand-in
            self.llm = engine
            self._llm_weights_sleeping = self.enable_sleep_mode

    monkeypatch.setattr(vllm_generation, "SamplingParams", SamplingParams, raising=False)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    generation = WithCPUEngine(
        model=model,
        accelerator=Accelerator(cpu=True),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        mode="colocate",
        enable_sleep_mode=True,
        max_completion_length=3,
    )
    return generation, engine


class Trainer:
    """GRPOTrainer's rollout as TRL 1.14's ``_generate_single_turn`` makes it (vLLM branch)."""

    def __init__(self, generation: Any) -> None:
        self.vllm_generation = generation

    def _generate(self, prompts: list[list[int]]) -> Any:
        self.vllm_generation.sync_weights()
        time.sleep(0.01)  # tokenizing, decoding: the rest of _generate
        return self.vllm_generation.generate(prompts=prompts, images=None, num_generations=2)


def test_trl_colocate_rollout_splits_into_its_engine_calls(trl_generation: Any) -> None:
    generation, engine = trl_generation
    trainer = Trainer(generation)
    clock = RolloutClock()
    timed = clock.attach(trainer)
    assert {"WithCPUEngine.sync_weights", "CPUEngine.generate", "CPUEngine.sleep",
            "CPUEngine.wake_up"} <= set(timed)  # fmt: skip
    assert any(name.endswith(".merge_adapter") for name in timed)  # PEFT's, on the live model

    _, completions, _, _ = trainer._generate([[5, 6, 7]])
    fields = clock.take()

    assert completions and all(c == [1, 2, 3] for c in completions)  # results pass through
    # TRL's path with sleep mode: wake the weights, push them, wake the cache, generate, sleep
    assert engine.calls == ["wake_up(['weights'])", "reset_prefix_cache", "wake_up(['kv_cache'])",
                            "generate", "sleep(2)"]  # fmt: skip
    assert engine.loaded and not any("lora" in name for name in engine.loaded)  # merged weights
    parts = {k: v for k, v in fields.items() if k.startswith("rollout/")}
    assert set(parts) == {
        "rollout/generate_seconds",
        "rollout/weight_sync_seconds",
        "rollout/lora_merge_seconds",
        "rollout/sleep_wake_seconds",
        "rollout/lora_load_seconds",
        "rollout/other_seconds",
    } - {"rollout/lora_load_seconds"}  # fmt: skip  (no Unsloth load_lora on TRL's own engine)
    assert parts["rollout/generate_seconds"] == pytest.approx(GENERATE_S, abs=0.03)
    assert parts["rollout/sleep_wake_seconds"] == pytest.approx(3 * SLEEP_WAKE_S, abs=0.03)
    assert parts["rollout/lora_merge_seconds"] > 0
    assert parts["rollout/other_seconds"] >= 0.01
    # exclusive parts: the wake-up inside sync_weights is not weight sync too
    assert sum(parts.values()) == pytest.approx(fields["rollout_seconds"], abs=0.005)
    assert fields["rollout_seconds"] >= GENERATE_S + 3 * SLEEP_WAKE_S + 0.01

    # the next step starts from zero, and an engine call outside a rollout is not counted
    generation.sync_weights()
    engine.generate([{"prompt_token_ids": [1]}])
    assert clock.take() == {"rollout_seconds": 0.0, **{k: 0.0 for k in parts}}


def test_an_override_that_restores_the_attribute_keeps_the_timer() -> None:
    """Unsloth's VLLMGeneration.generate swaps ``llm.generate`` on the instance for one call
    (adding the LoRA request) and puts back what it found; the timer must survive that."""
    engine = CPUEngine()
    load_lora = SimpleNamespace(calls=0)

    def unsloth_load_lora(name: str, load_tensors: bool = False) -> str:
        load_lora.calls += 1
        time.sleep(0.03)
        return f"lora:{name}"

    generation = SimpleNamespace(llm=engine, _unsloth_load_lora=unsloth_load_lora)
    trainer = SimpleNamespace(vllm_generation=generation)

    def rollout() -> Any:
        found = engine.generate  # getattr, as Unsloth does
        lora = generation._unsloth_load_lora  # read at each call, as Unsloth does

        def with_lora(*args: Any, **kwargs: Any) -> Any:
            kwargs["lora_request"] = lora("vllm_gen_lora", load_tensors=True)
            return found(*args, **kwargs)

        engine.generate = with_lora  # type: ignore[method-assign]
        try:
            return engine.generate([{"prompt_token_ids": [1]}])
        finally:
            engine.generate = found  # type: ignore[method-assign]

    trainer._generate = rollout
    clock = RolloutClock()
    clock.attach(trainer)
    for _ in range(2):
        trainer._generate()
    fields = clock.take()
    assert load_lora.calls == 2
    assert fields["rollout/generate_seconds"] == pytest.approx(2 * GENERATE_S, abs=0.04)
    assert fields["rollout/lora_load_seconds"] == pytest.approx(0.06, abs=0.03)
    assert fields["rollout/sleep_wake_seconds"] == 0.0  # wrapped, never called: a measured 0
    assert getattr(engine.generate, "_rollout_part", None) == "generate"  # still timed


def test_without_an_engine_only_the_rollout_is_timed_and_a_failure_still_counts() -> None:
    class Plain:
        """transformers' generate path: no vllm_generation, no llm."""

        def _generate(self, fail: bool = False) -> str:
            time.sleep(0.02)
            if fail:
                raise RuntimeError("out of memory")
            return "done"

    trainer = Plain()
    clock = RolloutClock()
    assert clock.attach(trainer) == ["_generate"]
    assert trainer._generate() == "done"
    with pytest.raises(RuntimeError, match="out of memory"):
        trainer._generate(fail=True)
    fields = clock.take()
    assert set(fields) == {"rollout_seconds"}
    assert fields["rollout_seconds"] == pytest.approx(0.04, abs=0.02)
    assert clock.attach(trainer) == [] and trainer._generate() == "done"  # not wrapped twice
    assert clock.take()["rollout_seconds"] == pytest.approx(0.02, abs=0.015)


def test_renamed_or_unsettable_methods_are_left_alone() -> None:
    class Slotted:
        __slots__ = ()

        def generate(self) -> str:
            return "untimed"

    engine = Slotted()  # its methods cannot be replaced on the instance
    trainer = SimpleNamespace(_generate=engine.generate,
                              vllm_generation=SimpleNamespace(llm=engine))  # fmt: skip
    clock = RolloutClock()
    assert clock.attach(trainer) == ["_generate"]
    assert trainer._generate() == "untimed"
    assert set(clock.take()) == {"rollout_seconds"}
    assert RolloutClock().attach(SimpleNamespace()) == []  # no _generate: nothing, no error
