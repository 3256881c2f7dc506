"""Execution-based code rewards for GRPO: the candidate code really runs against the task's tests.

Every function follows TRL's reward signature ``f(prompts, completions, **columns)`` and returns
one score in [0, 1] per completion (``None`` where a component does not apply to a row, which
TRL leaves out of the sum). Completions may be strings or chat-message lists.

Dataset columns read (TRL passes them as keyword lists, one value per completion):

* ``test_code`` - Python source that raises on failure; it runs after the candidate's code.
* ``entry_point`` - optional name of the function under test.
* ``code_prompt`` - optional code the completion may continue (a HumanEval signature and
  docstring); without it the code is taken from the prompt's last fenced block, or from the
  prompt itself when it is plain Python.
* ``reference_solution`` - optional program solving the task; only ``performance`` uses it.

Components (``REWARDS``; TRL logs each under its function name):

============  =========================================================================
test_pass     fraction of test units that pass (each assert counts on its own); 0 on timeout
execution     1.0 when the code's imports and definitions run without error, timeout or crash
syntax        1.0 when the assembled program is valid Python (it compiles; nothing runs)
lint          1.0 minus 0.1 per ruff finding on the model's lines (one ruff run per batch)
complexity    radon rank of the most complex function: A 1.0, B 0.8 ... F 0.0
type_safety   1.0 minus 0.25 per mypy error on the model's lines (one mypy run per batch)
performance   for code passing every test: 1.0 up to 1.5x the reference's run time, less when
              slower; 0 when tests fail; ``None`` without a reference solution
============  =========================================================================

``test_pass``, ``execution`` and ``performance`` share one sandbox run per completion (cached).
A completion without code scores 0.0 on every component.

Gating: shaping must not pay for doing nothing. ``execution``, ``lint``, ``complexity`` and
``type_safety`` describe the work (it runs, it is tidy), which a ``pass`` body has too, so by
default they pay only when at least one test unit passes (the same cached run as ``test_pass``).
``syntax`` stays ungated: a compiling program in the requested code block is the answer layout
the prompt asks for and the early signal a small model learns from; it is 0.15 of the default
weights, under the 0.25 that doing nothing may earn. ``gate=False`` (``reward_kwargs:
{lint: {gate: false}}``) pays a term without the gate; rows without ``test_code`` have no core
signal and are never gated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autolearn import code_exec
from autolearn.cli import plural
from autolearn.code_exec import Candidate
from autolearn.completions import completion_text, prompt_text
from autolearn.errors import UserError
from autolearn.sandbox import ExecResult, Limits

logger = logging.getLogger(__name__)

RewardFn = Callable[..., list[float | None]]

DEFAULT_WEIGHTS: dict[str, float] = {
    "test_pass": 0.5,
    "execution": 0.2,
    "syntax": 0.15,
    "lint": 0.1,
    "complexity": 0.05,
    "type_safety": 0.0,
    "performance": 0.0,
}
DEFAULT_LIMITS = Limits(timeout_s=3.0, memory_mb=1024)  # ~10x the slowest HumanEval reference
PERFORMANCE_ALLOWANCE = 1.5  # run-time ratio to the reference that still scores 1.0
FAILED_RUN_STATUSES = frozenset({"timeout", "memory", "crashed", "output_limit"})


# --------------------------------------------------------------------------- batch preparation


def _column(columns: Mapping[str, Any], name: str, size: int) -> list[Any]:
    """A dataset column as a list aligned with the completions (``None`` values when absent)."""
    values = columns.get(name)
    if values is None:
        return [None] * size
    values = list(values)
    if len(values) != size:
        raise ValueError(f"column {name!r} has {len(values)} values for {size} completions")
    return values


def prepare_batch(
    prompts: Sequence[Any] | None, completions: Sequence[Any], columns: Mapping[str, Any]
) -> list[Candidate]:
    """Extract and assemble the program of every completion of a batch."""
    size = len(completions)
    prompt_list = list(prompts) if prompts is not None else [None] * size
    code_prompts = _column(columns, "code_prompt", size)
    entry_points = _column(columns, "entry_point", size)
    candidates = []
    for prompt, completion, given_code_prompt, entry_point in zip(
        prompt_list, completions, code_prompts, entry_points, strict=True
    ):
        code_prompt = given_code_prompt
        if code_prompt is None:
            code_prompt = code_exec.prompt_code(prompt_text(prompt)) if prompt is not None else ""
        text = completion_text(completion)
        candidates.append(code_exec.prepare_candidate(text, code_prompt, entry_point or None))
    return candidates


def _tests_of(columns: Mapping[str, Any], size: int) -> list[str | None]:
    return [
        t if isinstance(t, str) and t.strip() else None for t in _column(columns, "test_code", size)
    ]


def _warn_sandbox_errors(results: Sequence[ExecResult | None]) -> None:
    errors = [r for r in results if r is not None and r.status == "error"]
    if errors:
        logger.warning(
            "sandbox could not run %d of %s (scored None): %s",
            len(errors),
            plural(len(results), "program"),
            errors[0].message,
        )


def _run_batch(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    columns: Mapping[str, Any],
    limits: Limits,
) -> tuple[list[Candidate], list[str | None], list[ExecResult | None]]:
    candidates = prepare_batch(prompts, completions, columns)
    tests = _tests_of(columns, len(completions))
    results = code_exec.run_candidates(candidates, tests, limits)
    _warn_sandbox_errors(results)
    return candidates, tests, results


# Every word run_status can give: the two of our own, then every ExecResult status.
RUN_STATUSES = (
    "no_code", "syntax_error", "passed", "failed", "timeout", "memory", "crashed", "output_limit",
    "error",
)  # fmt: skip


def run_status(candidate: Candidate, result: ExecResult | None) -> str:
    """One word per completion for the logs: ``no_code``, ``syntax_error`` or the run's status."""
    if candidate.program is None:
        return "no_code"
    if not candidate.parses or result is None:
        return "syntax_error"
    return result.status


def _report_to_trainer(
    columns: Mapping[str, Any],
    candidates: Sequence[Candidate],
    results: Sequence[ExecResult | None],
) -> None:
    """Hand TRL (which passes ``log_metric`` and ``log_extra``) the batch's run outcomes.

    Metrics ``code/<status>`` give the share of completions per outcome (watch ``code/no_code``
    and ``code/timeout`` for reward hacking), and ``code/isolated_share`` the share of runs whose
    verdicts came from a process apart from the candidate; the completions table gets a
    ``run_status`` column.
    """
    statuses = [run_status(c, r) for c, r in zip(candidates, results, strict=True)]
    log_metric, log_extra = columns.get("log_metric"), columns.get("log_extra")
    if callable(log_metric) and statuses:
        for status in RUN_STATUSES:
            log_metric(f"code/{status}", statuses.count(status) / len(statuses))
        ran = [r for r in results if r is not None and r.status != "error"]
        if ran:
            log_metric("code/isolated_share", sum(r.verdict == "isolated" for r in ran) / len(ran))
    if callable(log_extra):
        log_extra("run_status", statuses)


# --------------------------------------------------------------------------- scoring rules


def score_test_pass(
    candidate: Candidate, tests: str | None, result: ExecResult | None
) -> float | None:
    """Fraction of passing test units; 0.0 for missing code or a run that timed out or crashed."""
    if not candidate.runnable or result is None:
        return 0.0
    if tests is None or result.status == "error":
        return None
    if result.status in FAILED_RUN_STATUSES:
        return 0.0
    return result.fraction


def score_execution(candidate: Candidate, result: ExecResult | None) -> float | None:
    """1.0 when the program part ran to completion and the run did not time out or crash."""
    if not candidate.runnable or result is None:
        return 0.0
    if result.status == "error":
        return None
    if result.status in FAILED_RUN_STATUSES:
        return 0.0
    return 1.0 if result.setup_ok else 0.0


def score_performance(
    candidate: Candidate, result: ExecResult | None, reference: ExecResult | None
) -> float | None:
    """For code passing every test: 1.0 up to 1.5x the reference's run time, then falling as
    ``1.5 * reference / candidate``; 0.0 for code that fails; ``None`` without a usable reference.

    The times include the sandbox's interpreter start-up and vary by some 20% between identical
    runs (hence the 1.5x allowance), so only real slow-downs, such as an exponential algorithm
    or a needless sleep, move the score.
    """
    if not candidate.runnable or result is None:
        return 0.0
    if reference is None or not reference.passed or result.status == "error":
        return None
    if not result.passed:
        return 0.0
    return min(1.0, PERFORMANCE_ALLOWANCE * reference.duration_s / max(result.duration_s, 1e-6))


# --------------------------------------------------------------------------- reward functions


def _named(name: str, func: RewardFn) -> RewardFn:
    func.__name__ = name
    func.__qualname__ = name
    return func


GATE_NOTE = (
    "execution, lint, complexity and type_safety pay only when some test unit passes; "
    "syntax is paid ungated; turn the gate off with reward_kwargs: {NAME: {gate: false}}"
)
GATED = ("execution", "lint", "complexity", "type_safety")


def _apply_gate(
    scores: Sequence[float | None],
    prompts: Sequence[Any],
    completions: Sequence[Any],
    columns: Mapping[str, Any],
    limits: Limits,
    *,
    gate: bool,
) -> list[float | None]:
    """Zero the scores of completions that pass no test unit (unless ``gate`` is off)."""
    if not gate:
        return list(scores)
    tests = _tests_of(columns, len(completions))
    if not any(tests):
        return list(scores)
    candidates, tests, results = _run_batch(prompts, completions, columns, limits)
    gated: list[float | None] = []
    for score, candidate, test, result in zip(scores, candidates, tests, results, strict=True):
        passed = score_test_pass(candidate, test, result)
        gated.append(0.0 if score is not None and passed is not None and passed <= 0 else score)
    return gated


def build_rewards(limits: Limits | None = None) -> dict[str, RewardFn]:
    """The seven reward components, running code under ``limits`` (default ``DEFAULT_LIMITS``).

    Each function is named after its component, which is the name TRL logs it under.
    """
    run_limits = limits or DEFAULT_LIMITS

    def test_pass(
        prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        candidates, tests, results = _run_batch(prompts, completions, columns, run_limits)
        _report_to_trainer(columns, candidates, results)
        return [
            score_test_pass(c, t, r) for c, t, r in zip(candidates, tests, results, strict=True)
        ]

    def execution(
        prompts: Sequence[Any], completions: Sequence[Any], *, gate: bool = True, **columns: Any
    ) -> list[float | None]:
        candidates, _, results = _run_batch(prompts, completions, columns, run_limits)
        scores = [score_execution(c, r) for c, r in zip(candidates, results, strict=True)]
        return _apply_gate(scores, prompts, completions, columns, run_limits, gate=gate)

    def performance(
        prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        candidates, tests, results = _run_batch(prompts, completions, columns, run_limits)
        references = _reference_results(prompts, columns, tests, len(completions), run_limits)
        return [
            score_performance(c, r, ref)
            for c, r, ref in zip(candidates, results, references, strict=True)
        ]

    def syntax(
        prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        return [1.0 if c.runnable else 0.0 for c in prepare_batch(prompts, completions, columns)]

    def lint(
        prompts: Sequence[Any], completions: Sequence[Any], *, gate: bool = True, **columns: Any
    ) -> list[float | None]:
        scores = code_exec.lint_scores(prepare_batch(prompts, completions, columns))
        return _apply_gate(scores, prompts, completions, columns, run_limits, gate=gate)

    def complexity(
        prompts: Sequence[Any], completions: Sequence[Any], *, gate: bool = True, **columns: Any
    ) -> list[float | None]:
        scores = code_exec.complexity_scores(prepare_batch(prompts, completions, columns))
        return _apply_gate(scores, prompts, completions, columns, run_limits, gate=gate)

    def type_safety(
        prompts: Sequence[Any], completions: Sequence[Any], *, gate: bool = True, **columns: Any
    ) -> list[float | None]:
        scores = code_exec.type_scores(prepare_batch(prompts, completions, columns))
        return _apply_gate(scores, prompts, completions, columns, run_limits, gate=gate)

    functions: dict[str, RewardFn] = {
        "test_pass": test_pass,
        "execution": execution,
        "syntax": syntax,
        "lint": lint,
        "complexity": complexity,
        "type_safety": type_safety,
        "performance": performance,
    }
    named = {name: _named(name, func) for name, func in functions.items()}
    for name in GATED:
        named[name].gate_note = GATE_NOTE  # type: ignore[attr-defined]
    return named


def _reference_results(
    prompts: Sequence[Any] | None,
    columns: Mapping[str, Any],
    tests: list[str | None],
    size: int,
    limits: Limits,
) -> list[ExecResult | None]:
    """Run (or fetch from the cache) each row's reference solution against the same tests."""
    references = _column(columns, "reference_solution", size)
    present = [isinstance(r, str) and bool(r.strip()) for r in references]
    if not any(present):
        return [None] * size
    reference_columns = {**columns, "reference_solution": None}
    candidates = prepare_batch(
        prompts,
        [r if ok else "" for r, ok in zip(references, present, strict=True)],
        reference_columns,
    )
    results = code_exec.run_candidates(candidates, tests, limits)
    broken = sum(
        1 for ok, r in zip(present, results, strict=True) if ok and (r is None or not r.passed)
    )
    if broken:
        logger.warning(
            "%s %s own tests; performance is None there",
            plural(broken, "reference solution"),
            "fails its" if broken == 1 else "fail their",
        )
    return [r if ok else None for r, ok in zip(results, present, strict=True)]


REWARDS: dict[str, RewardFn] = build_rewards()


# --------------------------------------------------------------------------- combination


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Validate component weights (names from ``REWARDS``, numeric values); missing ones are 0."""
    unknown = sorted(set(weights) - set(DEFAULT_WEIGHTS))
    if unknown:
        raise UserError(
            f"unknown code reward {unknown[0]!r}; choose from {', '.join(DEFAULT_WEIGHTS)}"
        )
    checked = dict.fromkeys(DEFAULT_WEIGHTS, 0.0)
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"code reward weight {name!r} must be a number, got {value!r}")
        checked[name] = float(value)
    return checked


def select_rewards(
    weights: Mapping[str, float] | None = None,
    *,
    limits: Limits | None = None,
    include_zero: bool = False,
) -> tuple[list[RewardFn], list[float]]:
    """Reward functions and their weights for TRL's ``reward_funcs`` and ``reward_weights``.

    Components with weight 0 are left out unless ``include_zero`` (then they are logged but cost
    their run time: mypy is the slowest).
    """
    checked = check_weights(DEFAULT_WEIGHTS if weights is None else weights)
    functions = REWARDS if limits is None else build_rewards(limits)
    chosen = [name for name, weight in checked.items() if include_zero or weight != 0.0]
    return [functions[name] for name in chosen], [checked[name] for name in chosen]


def make_weighted_reward(
    weights: Mapping[str, float] | None = None, *, limits: Limits | None = None
) -> RewardFn:
    """One reward function: the weighted sum of the components (``None`` components add 0)."""
    functions, function_weights = select_rewards(weights, limits=limits)

    def code_reward(
        prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        totals = [0.0] * len(completions)
        for func, weight in zip(functions, function_weights, strict=True):
            for index, score in enumerate(func(prompts, completions, **columns)):
                if score is not None:
                    totals[index] += weight * score
        return list(totals)

    return code_reward
