"""What was alive at the peak of one training step: torch's allocation history, summarised.

``bench/gpu_memory.py --memory-history STEP`` records torch's CUDA allocation history
(``torch.cuda.memory._record_memory_history``, Python stacks) for one GRPO step and summarises
it here, in the case's own process, so that only a small JSON comes back from the GPU machine:

- the trace is replayed (``alloc`` adds a block, ``free_requested`` or ``free_completed``
  removes it, whichever comes first), which gives torch's allocation over the step, counted
  from where it stood when the recording began;
- at the highest point, the blocks then alive are grouped by where they were allocated: the
  innermost frame outside torch's own package and outside generated code (torch.compile's
  inductor files, Triton), i.e. a line of Unsloth, transformers, PEFT, TRL or this project, so
  that each group names the code that asked for the memory. Blocks with no such frame are one
  group, :data:`NO_PYTHON_FRAME`: torch records Python frames of the allocating thread only,
  and autograd's backward runs most C++ nodes on its own thread.

The replay counts the sizes requested, while ``torch.cuda.max_memory_allocated`` counts the
allocator's rounded blocks, so the growth reads slightly below torch's figure.

Blocks allocated before the recording began (the weights, vLLM's KV cache) are not in the
trace; a free of one of them is ignored, so the growth is counted against a fixed base and is
an upper bound where the step freed such blocks. A trace as long as ``max_entries`` has lost
its oldest entries: the summary says so (``truncated``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from autolearn.gpu_memory import GIB

MAX_ENTRIES = 3_000_000
FREES = ("free_requested", "free_completed")
NO_PYTHON_FRAME = "(no Python frame outside torch: C++ autograd or generated code)"
GENERATED = ("/torch/", "torchinductor", "/triton/")


def start_recording(max_entries: int = MAX_ENTRIES) -> None:
    """Begin recording every CUDA allocation and free, with its Python stack."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.memory._record_memory_history(
            enabled="all", context="alloc", stacks="python", max_entries=max_entries
        )


def stop_recording(top: int = 25, max_entries: int = MAX_ENTRIES) -> dict[str, Any]:
    """Stop recording and summarise what it saw (:func:`summarise_snapshot`)."""
    import torch

    if not torch.cuda.is_available():
        return {"error": "no CUDA device: nothing was recorded"}
    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    return summarise_snapshot(snapshot, top=top, max_entries=max_entries)


def allocation_site(frames: Sequence[Mapping[str, Any]]) -> str:
    """``file:line function`` of the innermost frame outside torch and generated code."""
    for frame in frames:
        filename = str(frame.get("filename", ""))
        if filename.startswith("<") or any(part in filename for part in GENERATED):
            continue
        short = "/".join(filename.split("/")[-3:])
        return f"{short}:{frame.get('line', '?')} {frame.get('name', '?')}"
    return NO_PYTHON_FRAME


def apply_entry(live: dict[int, Mapping[str, Any]], entry: Mapping[str, Any]) -> int:
    """Apply one trace entry to the live blocks (address -> its ``alloc`` entry).

    Returns the bytes it added (an ``alloc``) or removed (the first free of a block seen
    allocated); 0 for anything else.
    """
    action = entry.get("action")
    if action == "alloc":
        live[entry["addr"]] = entry
        return int(entry["size"])
    if action in FREES:
        freed = live.pop(entry["addr"], None)
        return -int(freed["size"]) if freed is not None else 0
    return 0


def replay(trace: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """The peak growth in bytes over the trace, and the index of the entry that reached it."""
    live: dict[int, Mapping[str, Any]] = {}
    current = peak = 0
    peak_at = -1
    for index, entry in enumerate(trace):
        current += apply_entry(live, entry)
        if current > peak:
            peak, peak_at = current, index
    return peak, peak_at


def alive_at(trace: Sequence[Mapping[str, Any]], index: int) -> list[Mapping[str, Any]]:
    """The ``alloc`` entries still alive just after ``trace[index]``."""
    live: dict[int, Mapping[str, Any]] = {}
    for entry in trace[: index + 1]:
        apply_entry(live, entry)
    return list(live.values())


def group_by_site(blocks: Iterable[Mapping[str, Any]], top: int) -> list[dict[str, Any]]:
    """Blocks summed by allocation site, largest first, the first ``top`` of them."""
    sizes: dict[str, list[int]] = {}
    for block in blocks:
        sizes.setdefault(allocation_site(block.get("frames", [])), []).append(block["size"])
    largest_first = sorted(sizes.items(), key=lambda item: sum(item[1]), reverse=True)
    return [
        {
            "site": site,
            "gib": round(sum(each) / GIB, 4),
            "blocks": len(each),
            "largest_gib": round(max(each) / GIB, 4),
        }
        for site, each in largest_first[:top]
    ]


def longest_trace(snapshot: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The trace of the device that recorded the most (one GPU per case here)."""
    traces: list[list[Mapping[str, Any]]] = list(snapshot.get("device_traces") or [[]])
    return max(traces, key=len)


def summarise_snapshot(
    snapshot: Mapping[str, Any], *, top: int = 25, max_entries: int = MAX_ENTRIES
) -> dict[str, Any]:
    """The peak growth, the entry that reached it, and what was alive then, by site."""
    trace = longest_trace(snapshot)
    peak, peak_at = replay(trace)
    blocks = alive_at(trace, peak_at) if peak_at >= 0 else []
    return {
        "entries": len(trace),
        "truncated": len(trace) >= max_entries,
        "out_of_memory": any(e.get("action") == "oom" for e in trace),
        "peak_growth_gib": round(peak / GIB, 4),
        "peak_entry": peak_at,
        "alive_at_peak": group_by_site(blocks, top),
    }
