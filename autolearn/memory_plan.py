"""Plan a training run's GPU memory inside a budget (``model.gpu_memory_gb``), before loading.

The planner reads only the model's ``config.json`` (no weights) and the run's settings, and
estimates, in GB (10^9 bytes):

- **weights**: BF16 2 bytes a parameter; FP8 1 byte for each decoder linear weight plus one
  fp32 scale per output row, with embeddings, ``lm_head`` and norms kept in 16 bits;
- **LoRA + optimizer**: the adapters in fp32 with their gradients and AdamW's two moments
  (16 bytes a parameter);
- **activations** of the loss's forward and backward at these lengths: with gradient
  checkpointing one saved hidden state per layer plus one layer's working set (Unsloth's
  checkpointing offloads the saved hidden states to the CPU, so only a couple stay), without
  it every layer's working set; plus the **log-probability tensors** (rows x completion x vocab),
  which dominate for 150k vocabularies. TRL 1.14 computes them from full 16-bit logits of the
  whole per-device batch; Unsloth computes them from the hidden states in chunks (fp32), so only
  about one row's logits and their gradient are alive;
- **vLLM**: the KV cache for one step's rollouts (2 x layers x kv heads x head dim x 2 bytes x
  sequences x (prompt + completion), with 25% for block rounding), its profiling activations
  and CUDA graphs, and its own 16-bit weight copy where it does not share the trainer's (TRL's
  colocate mode; Unsloth's engine loads the weights once and the trainer uses them). Under
  Unsloth the reservation is at least what Unsloth's own estimate of vLLM needs to keep
  ``max_seq_length`` (:func:`unsloth_reservation_floor`), and vLLM fills the rest with cache;
- **overhead**: the CUDA context and library workspaces (0.5 GB) and 5% for fragmentation.

The split it plans:

- vLLM asks for its part through ``gpu_memory_utilization``. vLLM 0.24 reserves
  ``utilization x total`` for its own weights, activations, CUDA graphs and KV cache, and
  refuses to start unless that much is free (``vllm/v1/worker/utils.py: request_memory``).
  TRL passes the value straight to vLLM, so it is vLLM's part over the device's total; Unsloth
  multiplies the value by the memory free when it loads (``unsloth_zoo.vllm_utils``'s
  ``approximate_vllm_memory_usage``), so for Unsloth it is vLLM's part over the free memory.
- Unsloth's standby (``UNSLOTH_VLLM_STANDBY=1``) replaces any ``gpu_memory_utilization`` with
  a fixed share of the card (0.88 on an H200) and frees and re-maps the KV cache around every
  rollout, so under a budget the pipeline turns standby off: the budget is then one plain split
  that vLLM honours, at the cost of standby's reuse of the KV cache's memory during training.
- Unsloth is told how many sequences vLLM decodes at once (``max_num_seqs``): one step's
  rollouts, which the KV cache is sized for. Left to itself it picks that number from its own
  estimate of the cache, which counts FP8 weights high: under a 40 GB budget at 14B it chose 8
  for 32 completions, so the rollouts ran in four waves, at 914 tokens/s against 2077 with
  standby (docs/PERFORMANCE.md).
- torch is capped with ``torch.cuda.set_per_process_memory_fraction`` at the budget less the
  CUDA context over the device's total. vLLM runs in the training process (in-process engine),
  so its tensors count against the same cap.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from autolearn.errors import UserError

logger = logging.getLogger(__name__)

GB = 10**9
CUDA_CONTEXT_BYTES = int(0.5 * GB)  # CUDA context, cuBLAS and NCCL workspaces (outside torch)
FRAGMENTATION = 0.05  # the caching allocator's slack, as a share of what it holds
KV_HEADROOM = 1.25  # vLLM rounds the cache to blocks and needs some slack to schedule
LORA_BYTES_PER_PARAM = 16  # fp32 weight + fp32 gradient + AdamW's two fp32 moments
VLLM_PROFILE_TOKENS = 4096  # Unsloth's max_num_batched_tokens on small cards (the profile run)
VLLM_GRAPHS = 172  # CUDA graphs Unsloth's vLLM captures (its own estimate, unsloth_zoo)
ENGINES = ("none", "unsloth", "trl")  # who runs vLLM: nobody, Unsloth (shared weights), TRL


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer that decide its memory."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qk_norm: bool = False  # Qwen3 normalises queries and keys (two head_dim norms a layer)
    fp8_checkpoint: bool = False  # config.json's quantization_config says FP8 (pre-quantized)

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """The shape of a transformers config (a multimodal one's ``text_config``)."""
        c = getattr(config, "text_config", None) or config
        heads = int(c.num_attention_heads)
        return cls(
            hidden=int(c.hidden_size),
            intermediate=int(c.intermediate_size),
            layers=int(c.num_hidden_layers),
            heads=heads,
            kv_heads=int(getattr(c, "num_key_value_heads", None) or heads),
            head_dim=int(getattr(c, "head_dim", None) or c.hidden_size // heads),
            vocab=int(c.vocab_size),
            tied=bool(getattr(config, "tie_word_embeddings", False)),
            qk_norm=str(getattr(c, "model_type", "")).startswith("qwen3"),
            fp8_checkpoint=_quant_method(config) in ("fp8", "fbgemm_fp8"),
        )

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each decoder linear layer, by its usual module name."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def decoder_linear_params(self) -> int:
        """Parameters of all decoder linear weights (what FP8 stores in one byte)."""
        return self.layers * sum(a * b for a, b in self.linear_shapes().values())

    def decoder_linear_rows(self) -> int:
        """Output rows of all decoder linear weights (one FP8 scale each)."""
        return self.layers * sum(out for _, out in self.linear_shapes().values())

    def norm_params(self) -> int:
        """The RMSNorm weights: two a layer (and Qwen3's query/key norms), and the final one."""
        return self.layers * (2 * self.hidden + 2 * self.head_dim * self.qk_norm) + self.hidden

    def sixteen_bit_params(self) -> int:
        """Embeddings, ``lm_head`` (unless tied) and norms: kept in 16 bits under FP8."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.norm_params()

    def params(self) -> int:
        """All parameters."""
        return self.decoder_linear_params() + self.sixteen_bit_params()

    def lora_params(self, rank: int, targets: Sequence[str]) -> int:
        """LoRA parameters of rank ``rank`` on the ``targets`` modules of every layer."""
        shapes = self.linear_shapes()
        return self.layers * sum(
            rank * (a + b) for name, (a, b) in shapes.items() if name in targets
        )

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """KV cache bytes per token over all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


@dataclass(frozen=True)
class Workload:
    """The run's settings that decide its memory."""

    precision: str  # fp8 | bf16 | fp32 (the base weights)
    lora_rank: int
    lora_targets: tuple[str, ...]
    rollout_sequences: int  # completions generated at once per device (vLLM's batch)
    train_rows: int  # sequences in one forward/backward (the per-device batch)
    prompt_length: int
    completion_length: int
    gradient_checkpointing: bool
    engine: str  # none | unsloth | trl (see ENGINES)
    backend: str = "transformers"  # unsloth | transformers (how the loss is computed)
    max_seq_length: int = 1024  # model.max_seq_length: vLLM's max_model_len under Unsloth


@dataclass(frozen=True)
class Estimate:
    """Bytes each part of a run needs on the GPU."""

    weights: int
    lora_optimizer: int
    activations: int
    logprobs: int
    vllm_weights: int  # vLLM's own copy (0 when it shares the trainer's)
    vllm_cache: int
    vllm_runtime: int  # vLLM's profiling activations and CUDA graphs
    overhead: int

    @property
    def total(self) -> int:
        """Everything together."""
        return sum(asdict(self).values())

    def vllm_part(self, shape_weights: int, engine: str) -> int:
        """What vLLM reserves: its weights (Unsloth's are the shared ones), cache and runtime."""
        if engine == "none":
            return 0
        weights = shape_weights if engine == "unsloth" else self.vllm_weights
        return weights + self.vllm_cache + self.vllm_runtime

    def summary(self) -> str:
        """``weights 8.2, LoRA+optimizer 0.2, ...`` in GB (parts that are zero left out)."""
        parts = [
            ("weights", self.weights + self.vllm_weights),
            ("LoRA+optimizer", self.lora_optimizer),
            ("activations", self.activations + self.logprobs),
            ("vLLM cache", self.vllm_cache + self.vllm_runtime),
            ("overhead", self.overhead),
        ]
        return ", ".join(f"{name} {gb(value)}" for name, value in parts if value)


def _quant_method(config: Any) -> str:
    """``quantization_config.quant_method`` of a transformers config ('' without one)."""
    quant = getattr(config, "quantization_config", None)
    if isinstance(quant, Mapping):
        return str(quant.get("quant_method", ""))
    return str(getattr(quant, "quant_method", "") or "")


def gb(value: int | float) -> str:
    """Bytes as GB with one decimal."""
    return f"{value / GB:.1f}"


def weight_bytes(shape: ModelShape, precision: str) -> int:
    """Bytes of the base weights in ``precision`` (fp8 keeps embeddings and norms in 16 bits)."""
    if precision == "fp8":
        return (
            shape.decoder_linear_params()
            + 4 * shape.decoder_linear_rows()
            + 2 * shape.sixteen_bit_params()
        )
    return shape.params() * (4 if precision == "fp32" else 2)


def activation_bytes(shape: ModelShape, w: Workload) -> int:
    """The loss's forward and backward activations, without the log-probabilities."""
    tokens = w.train_rows * (w.prompt_length + w.completion_length)
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    # One layer's tensors kept for backward: norms' inputs, q/k/v, attention output, the MLP's
    # gate, up and their product, all in 16 bits.
    per_layer = tokens * 2 * (4 * shape.hidden + q + 2 * kv + q + 3 * shape.intermediate)
    if w.gradient_checkpointing:
        saved = 2 if w.backend == "unsloth" else shape.layers  # Unsloth offloads them
        return saved * tokens * shape.hidden * 2 + 2 * per_layer
    return shape.layers * per_layer


def logprob_bytes(shape: ModelShape, w: Workload) -> int:
    """The logits and log-softmax tensors of the loss (rows x completion x vocab)."""
    row = (w.completion_length + 1) * shape.vocab
    if w.backend == "unsloth":
        return row * 8  # one row's fp32 logits and their gradient, chunk by chunk
    # TRL: the 16-bit logits and their temperature-scaled copy for every row, plus one row's
    # fp32 log-softmax at a time (selective_log_softmax loops over rows for 16-bit logits).
    return w.train_rows * row * 4 + row * 4


def cuda_graph_bytes(shape: ModelShape) -> int:
    """vLLM's CUDA graphs, as Unsloth estimates them: 0.15 to 1 GiB."""
    return min(max(VLLM_GRAPHS * shape.hidden * shape.layers * 4, int(0.15 * 2**30)), 2**30)


def vllm_runtime_bytes(shape: ModelShape, w: Workload) -> int:
    """vLLM's profiling activations (a batch of prefill tokens, sampler logits) and CUDA graphs."""
    if w.engine == "none":
        return 0
    prefill = VLLM_PROFILE_TOKENS * 2 * (3 * shape.hidden + 2 * shape.intermediate)
    sampler = max(w.rollout_sequences, 16) * shape.vocab * 4 * 2
    return prefill + sampler + cuda_graph_bytes(shape)


def unsloth_reservation_floor(shape: ModelShape, w: Workload) -> int:
    """The least vLLM reservation under which Unsloth keeps ``max_seq_length``.

    Before it starts vLLM, Unsloth estimates vLLM's needs itself (``unsloth_zoo.vllm_utils``'s
    ``approximate_vllm_memory_usage``): the linear weights at its 8-bit factor (1.25 bytes)
    for FP8, pre-quantized or quantized online (the loader makes Unsloth count the online case
    so: ``autolearn.models._unsloth_counts_fp8_weights``), else at 16 bits; LoRA in fp16; CUDA
    graphs (0.15 to 1 GiB). If what is left of the reservation holds fewer than
    ``max_seq_length`` tokens of KV cache, Unsloth shortens ``max_seq_length`` to fit, and vLLM
    then rejects the rollouts' prompts.
    """
    linear_bytes = 1.25 if shape.fp8_checkpoint or w.precision == "fp8" else 2
    weights = linear_bytes * shape.decoder_linear_params() + 2 * shape.sixteen_bit_params()
    lora = 2 * shape.lora_params(w.lora_rank, w.lora_targets)
    one_sequence = shape.kv_bytes_per_token() * w.max_seq_length / 0.95
    return int(weights + lora + cuda_graph_bytes(shape) + one_sequence) + 1


def estimate(shape: ModelShape, w: Workload) -> Estimate:
    """Every part's bytes for this model and workload."""
    if w.engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {w.engine!r}")
    if w.engine == "unsloth" and w.backend != "unsloth":
        raise ValueError("Unsloth's vLLM engine needs the unsloth backend")
    vllm = w.engine != "none"
    sequence = w.prompt_length + w.completion_length
    parts = Estimate(
        weights=weight_bytes(shape, w.precision),
        lora_optimizer=shape.lora_params(w.lora_rank, w.lora_targets) * LORA_BYTES_PER_PARAM,
        activations=activation_bytes(shape, w),
        logprobs=logprob_bytes(shape, w),
        vllm_weights=weight_bytes(shape, "bf16") if w.engine == "trl" else 0,
        vllm_cache=int(shape.kv_bytes_per_token() * w.rollout_sequences * sequence * KV_HEADROOM)
        if vllm
        else 0,
        vllm_runtime=vllm_runtime_bytes(shape, w),
        overhead=0,
    )
    if w.engine == "unsloth":  # vLLM fills whatever the reservation leaves with cache
        reserved = parts.vllm_part(parts.weights, "unsloth")
        shortfall = unsloth_reservation_floor(shape, w) - reserved
        if shortfall > 0:
            parts = replace(parts, vllm_cache=parts.vllm_cache + shortfall)
    overhead = CUDA_CONTEXT_BYTES + int(FRAGMENTATION * parts.total)
    return replace(parts, overhead=overhead)


@dataclass(frozen=True)
class MemoryPlan:
    """A budget's split between vLLM and the training side, with the estimate behind it."""

    budget_gb: float
    model: str
    precision: str
    engine: str
    estimate: Estimate
    device_total: int | None  # bytes on the device (None: planned without a GPU)
    device_free: int | None
    vllm_bytes: int  # what vLLM is asked to reserve
    gpu_memory_utilization: float | None  # the value handed to Unsloth or TRL (None: no vLLM)
    torch_fraction: float | None  # torch.cuda.set_per_process_memory_fraction's argument
    standby: bool  # Unsloth's standby stays on (always False under a budget)
    # the sequences Unsloth's vLLM decodes at once: one step's rollouts (None: not Unsloth's)
    vllm_max_num_seqs: int | None = None
    forced: bool = False  # the estimate exceeded the budget and it was planned anyway

    def lines(self) -> list[str]:
        """The run header's lines."""
        e = self.estimate
        lines = [
            f"memory budget {self.budget_gb:g} GB for {self.model} in {self.precision}: "
            f"estimate {gb(e.total)} GB",
            f"  weights {gb(e.weights)} | LoRA+optimizer {gb(e.lora_optimizer)} | "
            f"activations {gb(e.activations)} + log-probs {gb(e.logprobs)} | "
            f"overhead {gb(e.overhead)}",
        ]
        if self.engine != "none":
            own = f"own weights {gb(e.vllm_weights)} | " if e.vllm_weights else ""
            util = self.gpu_memory_utilization
            lines.append(
                f"  vLLM ({self.engine}): {own}KV cache {gb(e.vllm_cache)} | runtime "
                f"{gb(e.vllm_runtime)} -> reserves {gb(self.vllm_bytes)} GB"
                + (f", gpu_memory_utilization {util:.4f}" if util is not None else "")
                + (f", max_num_seqs {self.vllm_max_num_seqs}" if self.vllm_max_num_seqs else "")
                + ", standby off"
            )
        if self.torch_fraction is not None and self.device_total:
            lines.append(
                f"  torch capped at {self.torch_fraction:.4f} of the "
                f"{gb(self.device_total)} GB device"
            )
        else:
            lines.append("  no GPU here: the plan is not applied")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """For ``run.json``: the plan, with the estimate's parts in GB."""
        record = asdict(self)
        record["estimate_gb"] = {k: round(v / GB, 3) for k, v in asdict(self.estimate).items()}
        record["estimate_gb"]["total"] = round(self.estimate.total / GB, 3)
        del record["estimate"]
        return record

    def holds(self, device_peak: int) -> bool:
        """Whether a device-wide peak (bytes) stayed inside the budget."""
        return device_peak <= self.budget_gb * GB

    def check_peak(self, device_peak: int) -> dict[str, Any]:
        """For ``run.json``'s ``budget_check``: a run's device-wide peak (bytes) against the budget."""
        return {
            "device_peak_gb": round(device_peak / GB, 2),
            "budget_gb": self.budget_gb,
            "within_budget": self.holds(device_peak),
        }

    def over_budget_message(self, device_peak: int) -> str | None:
        """The warning for a run whose device-wide peak went over the budget (None if inside)."""
        if self.holds(device_peak):
            return None
        peak, estimate = device_peak / GB, gb(self.estimate.total)
        why = (
            f"planned below its estimate of {estimate} GB, forced"
            if self.forced
            else f"the plan's estimate was {estimate} GB"
        )
        return (
            f"the device-wide peak, {peak:.2f} GB, went {peak - self.budget_gb:.2f} GB over "
            f"gpu_memory_gb {self.budget_gb:g} ({why}); torch was capped, so what grew past the "
            "plan is outside the cap: the CUDA context, vLLM's graphs, library workspaces"
            f"{self.neighbours_note()}. A {self.budget_gb:g} GB card could run out: train in "
            "smaller micro-batches (per_device_train_batch_size) to bring the peak down"
        )

    def neighbours_note(self) -> str:
        """What else held the device when the run was planned, where more than a context's worth."""
        if self.device_total is None or self.device_free is None:
            return ""
        in_use = self.device_total - self.device_free
        if in_use <= 2 * CUDA_CONTEXT_BYTES:
            return ""
        return (
            f", or other processes: {gb(in_use)} GB of the device was in use when the run was "
            "planned, and the device-wide figure counts every process"
        )


def plan_split(
    budget_gb: float,
    model: str,
    shape: ModelShape,
    workload: Workload,
    *,
    device_total: int | None,
    device_free: int | None = None,
    force: bool = False,
) -> MemoryPlan:
    """Check that the budget holds the estimate and split it; a budget that cannot is a UserError.

    ``device_total``/``device_free`` are the GPU's (``torch.cuda.mem_get_info``), or ``None``
    to plan without one (the check only). ``force`` (benchmarks that test the estimate) plans a
    budget below the estimate with a warning instead of refusing it.
    """
    budget = int(budget_gb * GB)
    parts = estimate(shape, workload)
    what = f"{model} in {workload.precision}"
    if parts.total > budget:
        refusal = (
            f"gpu_memory_gb {budget_gb:g} cannot hold {what}: needs about {gb(parts.total)} GB "
            f"({parts.summary()})" + micro_batch_hint(shape, workload, budget)
        )
        if not force:
            raise UserError(refusal)
        logger.warning("%s; planned anyway (forced)", refusal)
    if device_total is not None and budget > device_total:
        raise UserError(
            f"gpu_memory_gb {budget_gb:g} is more than this GPU has ({gb(device_total)} GB)"
        )
    vllm_bytes = parts.vllm_part(parts.weights, workload.engine)
    util: float | None = None
    fraction: float | None = None
    if device_total is not None:
        # (a forced budget below the CUDA context still gets a valid, tiny cap)
        fraction = max(round((budget - CUDA_CONTEXT_BYTES) / device_total, 4), 0.0001)
        if workload.engine != "none":
            util = vllm_utilization(vllm_bytes, workload.engine, device_total, device_free)
    return MemoryPlan(
        budget_gb=budget_gb,
        model=model,
        precision=workload.precision,
        engine=workload.engine,
        estimate=parts,
        device_total=device_total,
        device_free=device_free,
        vllm_bytes=vllm_bytes,
        gpu_memory_utilization=util,
        torch_fraction=fraction,
        standby=False,
        vllm_max_num_seqs=workload.rollout_sequences if workload.engine == "unsloth" else None,
        forced=parts.total > budget,
    )


def micro_batch_hint(shape: ModelShape, workload: Workload, budget: int) -> str:
    """``; per_device_train_batch_size 2 with ...`` where smaller micro-batches would fit.

    The same completions a step in smaller forward/backward passes: TRL generates
    ``per_device_train_batch_size x gradient_accumulation_steps`` completions a step, so the
    largest smaller batch that divides that count is suggested ('' if none fits).
    """
    completions = workload.rollout_sequences
    for rows in range(workload.train_rows - 1, 0, -1):
        if completions % rows:
            continue
        needed = estimate(shape, replace(workload, train_rows=rows)).total
        if needed <= budget:
            return (
                f"; per_device_train_batch_size {rows} with gradient_accumulation_steps "
                f"{completions // rows} (the same {completions} completions a step) would need "
                f"about {gb(needed)} GB"
            )
    return ""


def vllm_utilization(
    vllm_bytes: int, engine: str, device_total: int, device_free: int | None
) -> float:
    """The ``gpu_memory_utilization`` that makes vLLM reserve ``vllm_bytes``.

    TRL hands the value to vLLM, which reserves ``value x total``; Unsloth first multiplies it
    by the memory free at load time and hands vLLM that share of the total.
    """
    base = device_free if engine == "unsloth" and device_free else device_total
    return min(round(vllm_bytes / base, 4), 1.0)


def workload_for(config: Any, *, engine: str, backend: str) -> Workload:
    """The :class:`Workload` of a resolved :class:`~autolearn.config.Config`."""
    m, t = config.model, config.training
    precision = "fp8" if m.load_in_fp8 else ("fp32" if m.dtype == "float32" else "bf16")
    return Workload(
        precision=precision,
        lora_rank=m.lora_rank,
        lora_targets=tuple(m.lora_target_modules),
        rollout_sequences=t.per_device_train_batch_size * t.gradient_accumulation_steps,
        train_rows=t.per_device_train_batch_size,
        prompt_length=t.max_prompt_length,
        completion_length=t.max_completion_length,
        gradient_checkpointing=m.gradient_checkpointing,
        engine=engine,
        backend=backend,
        max_seq_length=m.max_seq_length,
    )


def shape_of(config_json: Mapping[str, Any] | Any) -> ModelShape:
    """A :class:`ModelShape` from a transformers config or a ``config.json`` mapping."""
    if isinstance(config_json, Mapping):
        from types import SimpleNamespace

        text = config_json.get("text_config")
        ns = SimpleNamespace(**config_json)
        if isinstance(text, Mapping):
            ns.text_config = SimpleNamespace(**text)
        return ModelShape.from_config(ns)
    return ModelShape.from_config(config_json)
