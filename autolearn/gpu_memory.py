"""GPU memory of a training run, split into the training side and the rest of the device.

``torch.cuda.max_memory_allocated`` alone misleads when vLLM runs in the training process
(Unsloth's ``fast_inference``, TRL's colocate mode): vLLM's KV cache is allocated through
torch too, and Unsloth raises vLLM's share of the GPU to most of it. So, as
``bench/gpu_grpo.py`` measures it:

- **vLLM's share** is what torch had allocated when training began, minus the bytes of the
  model's own weights (which vLLM shares with the trainer under Unsloth);
- **the training side** is torch's peak allocation during training minus vLLM's share: the
  weights, LoRA, optimiser state, activations and log-probabilities, i.e. what a card needs
  without vLLM's standby cache;
- **the device-wide peak** is the most memory in use on the whole GPU (``cudaMemGetInfo``,
  every process and allocator), sampled by a thread.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

GIB = 1024**3


def plain_tensors(tensor: Any) -> list[Any]:
    """The ordinary tensors holding a tensor's data (a torchao FP8 tensor holds several)."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = tensor.__tensor_flatten__()
        return [t for name in names for t in plain_tensors(getattr(tensor, name))]
    return [tensor]


def cuda_tensor_bytes(model: Any) -> int:
    """Bytes of the distinct GPU storages behind a model's parameters and buffers."""
    seen: set[int] = set()
    total = 0
    for outer in itertools.chain(model.parameters(), model.buffers()):
        try:
            inner = plain_tensors(outer)
        except (AttributeError, RuntimeError):
            inner = [outer]
        for tensor in inner:
            if not tensor.is_cuda:
                continue
            try:
                storage = tensor.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
            except RuntimeError:  # a storage Python cannot see into: count the tensor itself
                key, size = id(tensor), tensor.numel() * tensor.element_size()
            if key not in seen:
                seen.add(key)
                total += size
    return total


def vllm_share_bytes(allocated_at_start: int, weight_bytes: int, *, vllm: bool) -> int:
    """vLLM's part of torch's allocations when training begins (0 without an in-process vLLM)."""
    return max(allocated_at_start - weight_bytes, 0) if vllm else 0


class DeviceMemoryPoller:
    """Samples the whole device's used memory (``cudaMemGetInfo``) in a thread."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_used = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import torch

        while not self._stop.is_set():
            free, total = torch.cuda.mem_get_info()
            self.peak_used = max(self.peak_used, total - free)
            time.sleep(self.interval_s)

    def start(self) -> DeviceMemoryPoller:
        """Start sampling."""
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop sampling; returns the peak in bytes."""
        self._stop.set()
        self._thread.join(timeout=1)
        return self.peak_used


def memory_fields(
    peak_allocated: int, vllm_share: int, device_peak: int | None, *, vllm: bool
) -> dict[str, float]:
    """The ``metrics.jsonl`` fields, in GiB: training side, vLLM's share, device-wide peak."""
    fields = {"gpu_train_peak_gib": round(max(peak_allocated - vllm_share, 0) / GIB, 3)}
    if vllm:
        fields["gpu_vllm_gib"] = round(vllm_share / GIB, 3)
    if device_peak is not None:
        fields["gpu_device_peak_gib"] = round(device_peak / GIB, 3)
    return fields


class RunMemory:
    """The GPU memory figures of one training run (nothing on a machine without CUDA)."""

    def __init__(self) -> None:
        self.vllm = False
        self.vllm_share = 0
        self.poller: DeviceMemoryPoller | None = None

    def start(self, model: Any, *, vllm: bool) -> None:
        """Take the baseline when training begins (vLLM's engine is up by then)."""
        import torch

        if not torch.cuda.is_available():
            return
        torch.cuda.synchronize()
        self.vllm = vllm
        self.vllm_share = vllm_share_bytes(
            torch.cuda.memory_allocated(), cuda_tensor_bytes(model), vllm=vllm
        )
        torch.cuda.reset_peak_memory_stats()
        self.poller = DeviceMemoryPoller().start()

    def fields(self) -> dict[str, float]:
        """The figures so far, for one metrics row (empty without CUDA)."""
        import torch

        if self.poller is None:
            return {}
        return memory_fields(
            torch.cuda.max_memory_allocated(),
            self.vllm_share,
            self.poller.peak_used,
            vllm=self.vllm,
        )

    def stop(self) -> None:
        """Stop the sampling thread."""
        if self.poller is not None:
            self.poller.stop()
            self.poller = None
