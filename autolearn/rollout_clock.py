"""Where a GRPO step's rollout time goes: the engine's generate call and everything around it.

TRL's ``GRPOTrainer._generate`` makes one step's completions. With vLLM it also pushes the
new weights to the engine, loads the LoRA adapter (Unsloth's shared-weight engine), and wakes
the engine up and puts it back to sleep (vLLM's sleep mode, which Unsloth's standby turns on).
:class:`RolloutClock` times ``_generate`` and, inside it, those calls on the live objects
(TRL 1.14's ``VLLMGeneration`` and its ``vllm.LLM``, as patched by Unsloth 2026.10.9):

- ``rollout/generate_seconds``: ``LLM.generate`` / ``LLM.chat``, i.e. prefill and decode;
- ``rollout/weight_sync_seconds``: ``VLLMGeneration.sync_weights`` (TRL's push, our merged FP8
  layers with it; an early return under Unsloth's shared weights), or an older TRL's
  ``_move_model_to_vllm``;
- ``rollout/lora_merge_seconds``: PEFT's ``merge_adapter`` / ``unmerge_adapter`` around TRL's push;
- ``rollout/lora_load_seconds``: Unsloth's ``load_lora`` of the live adapter before each generate;
- ``rollout/sleep_wake_seconds``: ``LLM.sleep`` / ``LLM.wake_up``;
- ``rollout/other_seconds``: the rest of ``_generate`` (tokenizing, decoding the text).

Each part is exclusive (a wake-up inside ``sync_weights`` counts as sleep/wake only), so the
parts add up to ``rollout_seconds``. On a GPU each engine call starts and ends with
``torch.cuda.synchronize``, so queued work is charged to the call that queued it (a handful
of waits a step, on work the rollout waits for anyway). Calls outside a rollout (the held-out
evaluation uses the same engine) are not counted; with TRL's own vLLM the evaluation pushes
the weights itself, so the step after it shows no weight sync. A method that is not there (no vLLM, a
renamed API) is left alone and its field is not written; a run without vLLM gets
``rollout_seconds`` only.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

ROOT_PART = "other"


@dataclass
class _Frame:
    part: str
    started: float
    inner: float = 0.0  # seconds of nested timed calls, not this part's own


class RolloutClock:
    """Seconds of generation per step, and their split across the engine's calls."""

    def __init__(self) -> None:
        self.seconds = 0.0  # in _generate since the last take()
        self.parts: dict[str, float] = {}  # each part's own seconds since the last take()
        self._stack: list[_Frame] = []  # the timed calls under way, outermost first
        self._sync: Callable[[], None] | None = None

    # ------------------------------------------------------------------ wrapping

    def attach(self, trainer: Any) -> list[str]:
        """Time the trainer's ``_generate`` and the engine calls inside it; returns what it
        wrapped (nothing for a trainer it is already timing).

        Call it once the trainer is built (TRL starts vLLM, or takes Unsloth's engine, in its
        constructor).
        """
        if not self._wrap(trainer, "_generate", ROOT_PART):
            logger.debug("no _generate to time (another TRL, or timed already)")
            return []
        timed = ["_generate"]
        generation = getattr(trainer, "vllm_generation", None)
        engines = [getattr(generation, "llm", None), getattr(trainer, "llm", None)]
        targets: list[tuple[Any, str, str]] = [
            (trainer, "_move_model_to_vllm", "weight_sync"),  # TRL before VLLMGeneration
            (generation, "sync_weights", "weight_sync"),
            (generation, "_unsloth_load_lora", "lora_load"),
            (getattr(generation, "model", None), "merge_adapter", "lora_merge"),
            (getattr(generation, "model", None), "unmerge_adapter", "lora_merge"),
            (getattr(generation, "vllm_client", None), "generate", "generate"),  # server mode
        ]
        for engine in {id(e): e for e in engines if e is not None}.values():
            targets += [(engine, name, "generate") for name in ("generate", "chat")]
            targets += [(engine, name, "sleep_wake") for name in ("sleep", "wake_up")]
        for owner, name, part in targets:
            if owner is not None and self._wrap(owner, name, part):
                timed.append(f"{type(owner).__name__}.{name}")
        if len(timed) > 1:
            self._sync = _cuda_synchronize()
            logger.info("rollout time split over: %s", ", ".join(timed[1:]))
        return timed

    def _wrap(self, owner: Any, name: str, part: str) -> bool:
        """Replace ``owner.name`` (a bound method) by a timed one on this object only."""
        method = getattr(owner, name, None)
        if not callable(method) or getattr(method, "_rollout_part", None):
            return False

        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self._stack and part != ROOT_PART:
                return method(*args, **kwargs)  # outside a rollout: the held-out evaluation
            self._enter(part)
            try:
                return method(*args, **kwargs)
            finally:
                self._leave()

        timed._rollout_part = part  # type: ignore[attr-defined]
        try:
            setattr(owner, name, timed)
        except (AttributeError, TypeError):  # a slotted or frozen object: leave it untimed
            logger.debug("cannot time %s.%s", type(owner).__name__, name)
            return False
        if part != ROOT_PART:
            self.parts.setdefault(part, 0.0)
        return True

    def _enter(self, part: str) -> None:
        if part != ROOT_PART and self._sync is not None:
            self._sync()  # the GPU work queued before this call is not its time
        self._stack.append(_Frame(part, time.perf_counter()))

    def _leave(self) -> None:
        frame = self._stack[-1]
        try:
            if frame.part != ROOT_PART and self._sync is not None:
                self._sync()  # nor is this call's queued work the next one's
        finally:  # a failed sync must not leave the frame open (later calls would count)
            self._stack.pop()
        elapsed = time.perf_counter() - frame.started
        own = elapsed - frame.inner
        if self._stack:
            self._stack[-1].inner += elapsed
        else:
            self.seconds += elapsed
        if frame.part == ROOT_PART:
            self.parts[ROOT_PART] = self.parts.get(ROOT_PART, 0.0) + own
        else:
            self.parts[frame.part] += own

    # ------------------------------------------------------------------ reading

    @property
    def split(self) -> bool:
        """Whether any engine call is timed (vLLM is in use and its methods were found)."""
        return any(part != ROOT_PART for part in self.parts)

    def take(self) -> dict[str, float]:
        """This step's fields for ``metrics.jsonl`` since the last call, resetting the counts:
        ``rollout_seconds`` and, where the engine is timed, one ``rollout/<part>_seconds`` each."""
        fields = {"rollout_seconds": round(self.seconds, 3)}
        if self.split:
            for part, seconds in self.parts.items():
                fields[f"rollout/{part}_seconds"] = round(seconds, 3)
            fields.setdefault(f"rollout/{ROOT_PART}_seconds", 0.0)
        self.seconds = 0.0
        self.parts = {part: 0.0 for part in self.parts}
        return fields


def _cuda_synchronize() -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` where CUDA is in use, so host clocks time the GPU's work."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    return torch.cuda.synchronize if torch.cuda.is_available() else None
