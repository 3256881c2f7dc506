"""GPU memory of a training run, split into the training side and the rest of the device.

``torch.cuda.max_memory_allocated`` alone misleads when vLLM runs in the training process
(Unsloth's ``fast_inference``, TRL's colocate mode): vLLM's KV cache is allocated through
torch too, and Unsloth raises vLLM's share of the GPU to most of it. So, as
``bench/gpu_grpo.py`` measures it:

- **vLLM's share** (``gpu_vllm_gib``) is the device memory in use (``cudaMemGetInfo``) just
  after vLLM's engine started minus just before: around Unsloth's ``from_pretrained`` with
  ``fast_inference`` (less the model's own weights, which the trainer shares with vLLM there),
  or around ``GRPOTrainer``'s construction in TRL's colocate mode (vLLM's own weight copy
  included). It counts vLLM's KV cache, CUDA graphs and workspaces wherever they were
  allocated (on the H200 with standby off, torch's allocation after the load less the weights
  matched it: 1.62 GiB both ways for Qwen3-8B in FP8, so the cache was in torch's pool there;
  CUDA graphs and library workspaces are not). Without that measurement (a run resumed through other code) it falls back to torch's
  allocation when training began minus the model's weights, which sees only what vLLM
  allocated through torch;
- **the training side** is torch's peak allocation during training minus the part of vLLM's
  share that torch allocated (torch's allocation at the start less the weights): the
  weights, LoRA, optimiser state, activations and log-probabilities, i.e. what a card needs
  without vLLM's cache;
- **the device-wide peak** (``gpu_device_peak_gib``) is the most memory in use on the whole
  GPU (``cudaMemGetInfo``, every process and allocator), sampled by a thread every 50 ms.
  :func:`autolearn.pipeline.run_training` (every training script) starts the sampling just
  before the model loads, on this rank's GPU, and stops it when the run ends (after the final
  save, or on a crash or a stop). Each metrics row has the peak from the load (vLLM's start,
  its profiling run and CUDA-graph capture included) up to that step; with
  ``model.gpu_memory_gb`` set, the whole run's peak, the save included, is checked against the
  budget at the end (``run.json``'s ``budget_check``).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

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


def device_used_bytes() -> int | None:
    """Memory in use on the current GPU by every process (``cudaMemGetInfo``); None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return int(total - free)


@dataclass
class DeviceGrowth:
    """What :func:`device_growth` measured: ``nbytes`` is None without CUDA (or until the end)."""

    nbytes: int | None = None


@contextlib.contextmanager
def device_growth() -> Iterator[DeviceGrowth]:
    """Measure how much the device memory in use (every process) grew across the block.

    The yielded object's ``nbytes`` is set when the block ends normally: used after minus used
    before, at least 0; it stays None on a machine without CUDA.
    """
    growth = DeviceGrowth()
    before = device_used_bytes()
    yield growth
    after = device_used_bytes()
    if before is not None and after is not None:
        growth.nbytes = max(after - before, 0)


def vllm_share_bytes(allocated_at_start: int, weight_bytes: int, *, vllm: bool) -> int:
    """vLLM's part of torch's allocations when training begins (0 without an in-process vLLM)."""
    return max(allocated_at_start - weight_bytes, 0) if vllm else 0


class DevicePeak(Protocol):
    """What a run needs of its device-wide sampler (:class:`DeviceMemoryPoller`, or a stand-in)."""

    peak_used: int

    def stop(self) -> int:
        """Stop sampling; returns the peak in bytes."""
        ...


class DeviceMemoryPoller:
    """Samples the whole device's used memory (``cudaMemGetInfo``) in a thread.

    ``device``: the GPU to sample. Name it under several GPUs: the sampling thread does not
    inherit the caller's ``torch.cuda.set_device``, so the default is GPU 0.
    """

    def __init__(self, interval_s: float = 0.05, device: int | None = None) -> None:
        self.interval_s = interval_s
        self.device = device
        self.peak_used = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="device-memory-poller", daemon=True)

    def _run(self) -> None:
        import torch

        while not self._stop.is_set():
            free, total = torch.cuda.mem_get_info(self.device)
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


def start_device_poller(device: int | None = None) -> DeviceMemoryPoller | None:
    """A started :class:`DeviceMemoryPoller` of ``device``; None without CUDA (nothing to sample)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return DeviceMemoryPoller(device=device).start()


def memory_fields(
    peak_allocated: int,
    vllm_share: int,
    device_peak: int | None,
    *,
    vllm: bool,
    vllm_device: int | None = None,
) -> dict[str, float]:
    """The ``metrics.jsonl`` fields, in GiB: training side, vLLM's share, device-wide peak.

    ``vllm_share`` is the part of torch's allocations that is vLLM's; ``vllm_device``, when
    measured, vLLM's whole device share (``gpu_vllm_gib`` then reports it).
    """
    fields = {"gpu_train_peak_gib": round(max(peak_allocated - vllm_share, 0) / GIB, 3)}
    if vllm:
        share = vllm_device if vllm_device is not None else vllm_share
        fields["gpu_vllm_gib"] = round(share / GIB, 3)
    if device_peak is not None:
        fields["gpu_device_peak_gib"] = round(device_peak / GIB, 3)
    return fields


class RunMemory:
    """The GPU memory figures of one training run (nothing on a machine without CUDA).

    ``device_poller``: the device-wide sampler the run's owner started before the model loaded
    and will stop (:func:`autolearn.pipeline.run_training`); it is only read here. Without one
    the rows have no ``gpu_device_peak_gib``.
    """

    def __init__(self, device_poller: DevicePeak | None = None) -> None:
        self.vllm = False
        self.vllm_share = 0
        self.vllm_device: int | None = None
        self.started = False
        self.device_poller = device_poller

    def start(self, model: Any, *, vllm: bool, vllm_device: int | None = None) -> None:
        """Take the baseline when training begins (vLLM's engine is up by then).

        ``vllm_device``: vLLM's device share measured around its engine's start, if it was.
        torch's peak is reset here: the training side is this training's.
        """
        import torch

        if not torch.cuda.is_available():
            return
        torch.cuda.synchronize()
        self.vllm = vllm
        self.vllm_device = vllm_device
        self.vllm_share = vllm_share_bytes(
            torch.cuda.memory_allocated(), cuda_tensor_bytes(model), vllm=vllm
        )
        torch.cuda.reset_peak_memory_stats()
        self.started = True

    def fields(self) -> dict[str, float]:
        """The figures so far, for one metrics row (empty without CUDA)."""
        import torch

        if not self.started:
            return {}
        poller = self.device_poller
        return memory_fields(
            torch.cuda.max_memory_allocated(),
            self.vllm_share,
            poller.peak_used if poller is not None else None,
            vllm=self.vllm,
            vllm_device=self.vllm_device,
        )

    def stop(self) -> None:
        """No more figures (training is over); the sampler is its owner's to stop."""
        self.started = False
