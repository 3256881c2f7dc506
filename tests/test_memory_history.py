"""CPU checks of bench/memory_history.py on traces written in torch's snapshot format.

The format is ``torch.cuda.memory._snapshot()``'s: ``device_traces``, one list per device, of
entries with ``action`` (``alloc``, ``free_requested``, ``free_completed``, ``oom``, ...),
``addr``, ``size`` and ``frames`` (innermost first). A real trace needs a GPU; the GPU plan
records one (``bench/gpu_memory.py --memory-history``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import memory_history  # noqa: E402
from bench.gpu_grpo import PhasePeaks  # noqa: E402

GIB = 1024**3
TORCH = {"filename": "/site/torch/nn/functional.py", "line": 10, "name": "linear"}
MLP = {
    "filename": "/site/transformers/models/qwen3/modeling_qwen3.py",
    "line": 70,
    "name": "forward",
}
LOSS = {"filename": "/site/unsloth_zoo/fused_losses/fused_linear.py", "line": 1400, "name": "impl"}


def alloc(addr: int, gib: float, *frames: dict[str, Any]) -> dict[str, Any]:
    return {"action": "alloc", "addr": addr, "size": int(gib * GIB), "frames": list(frames)}


def free(addr: int, gib: float, action: str = "free_requested") -> dict[str, Any]:
    return {"action": action, "addr": addr, "size": int(gib * GIB), "frames": []}


def test_the_peak_and_what_was_alive_then_come_from_replaying_the_trace() -> None:
    trace = [
        alloc(1, 1.0, TORCH, MLP),
        alloc(2, 2.0, TORCH, LOSS),
        free(1, 1.0),
        alloc(3, 3.0, MLP),  # the peak: 2 + 3 GiB
        free(3, 3.0),
        alloc(4, 0.5, MLP),
    ]
    summary = memory_history.summarise_snapshot({"device_traces": [trace]})
    assert summary["peak_growth_gib"] == 5.0 and summary["peak_entry"] == 3
    sites = {g["site"]: g for g in summary["alive_at_peak"]}
    assert set(sites) == {
        "models/qwen3/modeling_qwen3.py:70 forward",  # block 3, not the freed block 1
        "unsloth_zoo/fused_losses/fused_linear.py:1400 impl",  # block 2, past torch's frame
    }
    assert sites["models/qwen3/modeling_qwen3.py:70 forward"]["gib"] == 3.0
    assert [g["gib"] for g in summary["alive_at_peak"]] == [3.0, 2.0]  # largest first
    assert summary["truncated"] is False and summary["out_of_memory"] is False


def test_a_block_freed_twice_in_the_trace_is_subtracted_once() -> None:
    # free_requested, then free_completed once the block's other streams are done with it
    trace = [alloc(1, 1.0, MLP), free(1, 1.0), free(1, 1.0, "free_completed"), alloc(2, 0.5, MLP)]
    assert memory_history.replay(trace) == (GIB, 0)


def test_frees_of_blocks_older_than_the_recording_do_not_lower_the_base() -> None:
    # The weights were allocated before recording began: their free is not a growth of -4 GiB.
    trace = [free(99, 4.0), alloc(1, 1.0, MLP), alloc(2, 1.0, MLP)]
    assert memory_history.replay(trace) == (2 * GIB, 2)


def test_blocks_group_by_site_summed_and_capped() -> None:
    blocks = [alloc(i, 0.25, MLP) for i in range(4)] + [alloc(9, 0.5, LOSS), alloc(8, 0.1, TORCH)]
    groups = memory_history.group_by_site(blocks, top=2)
    assert [(g["gib"], g["blocks"], g["largest_gib"]) for g in groups] == [
        (1.0, 4, 0.25),
        (0.5, 1, 0.5),
    ]
    assert memory_history.allocation_site([TORCH]) == memory_history.NO_PYTHON_FRAME
    assert memory_history.allocation_site([]) == memory_history.NO_PYTHON_FRAME  # autograd's thread
    compiled = {"filename": "/tmp/torchinductor_root/ab/cab12.py", "line": 3, "name": "call"}
    assert memory_history.allocation_site([compiled, LOSS]).startswith("unsloth_zoo/")


def test_a_full_trace_is_marked_truncated_and_an_oom_is_reported() -> None:
    trace = [alloc(1, 1.0, MLP), {"action": "oom", "addr": 0, "size": 0, "frames": []}]
    summary = memory_history.summarise_snapshot(
        {"device_traces": [[], trace]}, max_entries=len(trace)
    )
    assert summary["entries"] == 2  # the device that recorded, not the empty one
    assert summary["truncated"] is True and summary["out_of_memory"] is True


def test_an_empty_trace_has_no_peak() -> None:
    summary = memory_history.summarise_snapshot({"device_traces": [[]]})
    assert summary["peak_growth_gib"] == 0.0 and summary["alive_at_peak"] == []


def test_the_phases_that_raised_the_peak_are_the_ones_reported() -> None:
    phases = PhasePeaks()
    phases.rows = [
        {"step": 1, "phase": "between", "run_peak_gib": 20.5, "raised_gib": 0.5},
        {"step": 1, "phase": "rollout", "run_peak_gib": 20.5, "raised_gib": 0.0},
        {"step": 1, "phase": "training", "run_peak_gib": 24.5, "raised_gib": 4.0},
        {"step": 2, "phase": "training", "run_peak_gib": 24.505, "raised_gib": 0.005},
    ]
    assert [(r["step"], r["phase"]) for r in phases.raises()] == [(1, "between"), (1, "training")]


def test_a_case_that_fails_inside_the_recorded_step_still_reports_its_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import autolearn.trainer as trainer_module
    from autolearn import pipeline
    from bench import gpu_grpo

    # run_case hooks these module functions for its own process; give them back afterwards
    monkeypatch.setattr(pipeline, "load_training_model", pipeline.load_training_model)
    monkeypatch.setattr(trainer_module, "prepare_trainer", trainer_module.prepare_trainer)
    monkeypatch.setattr(trainer_module, "save_final_model", trainer_module.save_final_model)
    recorder = gpu_grpo.RECORDER
    monkeypatch.setattr(recorder, "recording", True)
    monkeypatch.setattr(recorder, "memory_history", {})
    monkeypatch.setattr(recorder.phases, "step", 2)
    summary = gpu_grpo.run_case(  # no model there: the case fails at once
        gpu_grpo.CASES_BY_KEY["2"], gpu_grpo.Settings(), tmp_path / "none", tmp_path / "run"
    )
    assert summary["error"]
    assert recorder.recording is False  # stopped on the failure path, not left running
    assert summary["memory_history"] == {"step": 2, "error": "no CUDA device: nothing was recorded"}
