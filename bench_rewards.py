"""Rewards for SWE-bench (unified diffs) and Terminal-Bench (shell commands), TRL signature.

Every function is ``f(prompts, completions, **columns) -> list[float | None]`` and accepts
string or chat-message completions. A reward returns ``None`` for a row when the column it
needs is absent (TRL then ignores that row for that reward).

SWE-bench (columns ``patch``; optionally ``repos_dir``, ``repo``, ``base_commit``):

* ``swe_format`` -- 1.0 when the answer holds a well-formed unified diff (file headers,
  hunk headers whose line counts match) that really changes something: at least one hunk
  with a net change (:meth:`autolearn.diffs.Patch.has_changes`). With ``repos_dir`` and the
  repo's clone present, the diff must also apply at ``base_commit`` (``git apply
  --check``); a well-formed diff that does not apply scores :data:`NOT_APPLYING_SCORE`.
* ``swe_similarity`` -- SWE-RL's reward on what the patches change: for every file in the
  union of the files the predicted and gold patches change,
  ``difflib.SequenceMatcher(None, pred, gold, autojunk=False).ratio()`` of the two files'
  net removed and added lines (context lines and lines removed and re-added unchanged
  cancel out; 0 when one side does not change the file), averaged.
* ``swe_files`` -- F1 of the sets of files that prediction and gold really change (a lone
  ``diff --git`` line, an empty binary section or a no-op hunk changes no file).

An answer without a parseable diff, or whose diff changes nothing, scores 0 on all three.

Terminal-Bench (column ``task_dir``):

* ``terminal_format`` -- 1.0 when commands can be extracted (```` ```bash ```` blocks or
  ``<command>`` tags): the answer layout the prompt asks for, paid ungated.
* ``terminal_safety`` -- 1.0 when commands were extracted, none is dangerous
  (:mod:`autolearn.shell_safety` lists the rules), running them changed nothing outside
  the work dir, wrote no device and signalled no process they did not start (observed
  where the machine allows: :mod:`autolearn.sandbox.shell_observation`; ``observe=False``
  skips it) and, with the gate on (the default), they made progress on the task; 0.0
  otherwise.
* ``terminal_execution`` -- the fraction of the task's checks that pass after the
  commands ran in a fresh copy of the task environment (see
  :func:`autolearn.benchmarks.run_terminal_task`); with the gate on, 0.0 unless some
  check passes that fails on the untouched environment. Dangerous commands are never run
  and score 0, as do answers without commands.

Gating: doing nothing (``ls``) must not pay. Checks that only confirm the input is
untouched pass for an empty answer, and harmless commands are safe whether or not they do
anything, so by default both count only with progress: some check passing that fails on
the untouched environment (for a task without checks: every command exiting 0). A
do-nothing answer then earns ``terminal_format`` alone, 0.2 of the default 1.0.
``reward_kwargs: {terminal_safety: {gate: false}}`` turns a gate off (and, for
``terminal_safety``, saves its sandbox runs when ``terminal_execution`` is not used).

Each benchmark's default weights are :data:`SWE_WEIGHTS` and :data:`TERMINAL_WEIGHTS`. A
config's ``rewards`` section replaces them, as in the other training scripts: it may leave
rewards out and add custom ``module:function`` ones (:func:`check_reward_names`).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from autolearn.benchmarks import (
    TaskRun,
    benchmark_family,
    find_repo,
    has_commit,
    observe_terminal_task,
    patch_applies,
    run_terminal_task,
)
from autolearn.completions import Completion, completion_texts
from autolearn.config import parse_reward_spec
from autolearn.diffs import Patch, extract_patch, parse_patch
from autolearn.errors import UserError
from autolearn.sandbox.shell_observation import Observation
from autolearn.shell_safety import extract_commands, find_dangers

logger = logging.getLogger(__name__)

SWE_WEIGHTS = {"swe_format": 0.3, "swe_similarity": 0.5, "swe_files": 0.2}
TERMINAL_WEIGHTS = {"terminal_format": 0.2, "terminal_safety": 0.3, "terminal_execution": 0.5}
NOT_APPLYING_SCORE = 0.5
# SequenceMatcher is quadratic in the worst case: compare at most this much per file.
MAX_COMPARE_CHARS = 20_000

Reward = Callable[..., list[float | None]]
Result = TypeVar("Result")


# --------------------------------------------------------------------------- helpers


def _column(value: Any, size: int) -> list[Any]:
    """A dataset column as a list of ``size`` items (a scalar kwarg is broadcast)."""
    if value is None or isinstance(value, str | Path):
        return [value] * size
    values = list(value)
    if len(values) != size:
        raise ValueError(f"column has {len(values)} values for {size} completions")
    return values


def patch_similarity(predicted: Patch, gold: Patch) -> float:
    """SWE-RL similarity of what two patches change (mean per-file ratio over the union)."""
    pred_files, gold_files = predicted.changes(), gold.changes()
    paths = set(pred_files) | set(gold_files)
    if not paths:
        return 0.0
    scores = []
    for path in sorted(paths):
        if path not in pred_files or path not in gold_files:
            scores.append(0.0)
            continue
        pred_text = pred_files[path][:MAX_COMPARE_CHARS]
        gold_text = gold_files[path][:MAX_COMPARE_CHARS]
        if pred_text == gold_text:  # also two binary or rename-only sections
            scores.append(1.0)
            continue
        scores.append(difflib.SequenceMatcher(None, pred_text, gold_text, autojunk=False).ratio())
    return sum(scores) / len(scores)


def file_f1(predicted: set[str], gold: set[str]) -> float:
    """F1 score of two sets of paths."""
    overlap = len(predicted & gold)
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=256)
def _gold(patch_text: str) -> Patch | None:
    try:
        gold = parse_patch(patch_text)
    except ValueError:
        logger.warning("gold patch does not parse; the row is skipped by the SWE rewards")
        return None
    if not gold.has_changes():
        logger.warning("gold patch changes nothing; the row is skipped by the SWE rewards")
        return None
    return gold


@lru_cache(maxsize=4096)
def _applies(clone: str, commit: str, patch_text: str) -> bool:
    return patch_applies(Path(clone), commit, patch_text)


@lru_cache(maxsize=256)
def _usable_clone(repos_dir: str, repo: str, commit: str) -> str | None:
    clone = find_repo(repos_dir, repo)
    if clone is None or not has_commit(clone, commit):
        return None
    return str(clone)


# --------------------------------------------------------------------------- SWE-bench


def swe_format(
    prompts: Sequence[Completion],
    completions: Sequence[Completion],
    repos_dir: Any = None,
    repo: Any = None,
    base_commit: Any = None,
    **kwargs: Any,
) -> list[float | None]:
    """1.0 for a well-formed unified diff (that applies, when the repo clone is at hand)."""
    size = len(completions)
    rows = zip(
        completion_texts(completions),
        _column(repos_dir, size),
        _column(repo, size),
        _column(base_commit, size),
        strict=True,
    )
    return [_format_score(text, root, name, commit) for text, root, name, commit in rows]


def _format_score(text: str, root: Any, repo: Any, commit: Any) -> float:
    patch = extract_patch(text)
    if patch is None or not patch.has_changes():
        return 0.0
    if not (root and repo and commit):
        return 1.0
    clone = _usable_clone(str(root), str(repo), str(commit))
    if clone is None:
        return 1.0
    return 1.0 if _applies(clone, str(commit), patch.text) else NOT_APPLYING_SCORE


def _score_against_gold(
    completions: Sequence[Completion],
    patch: Any,
    score: Callable[[Any, Any], float],
) -> list[float | None]:
    """``score(predicted, gold)`` per completion; 0.0 without a diff, ``None`` without a gold patch."""
    scores: list[float | None] = []
    for text, gold_text in zip(
        completion_texts(completions), _column(patch, len(completions)), strict=True
    ):
        gold = _gold(gold_text) if gold_text else None
        if gold is None:
            scores.append(None)
            continue
        predicted = extract_patch(text)
        changes = predicted is not None and predicted.has_changes()
        scores.append(score(predicted, gold) if changes else 0.0)
    return scores


def swe_similarity(
    prompts: Sequence[Completion],
    completions: Sequence[Completion],
    patch: Any = None,
    **kwargs: Any,
) -> list[float | None]:
    """SWE-RL's per-file ``SequenceMatcher`` similarity to the gold ``patch``."""
    return _score_against_gold(completions, patch, patch_similarity)


def swe_files(
    prompts: Sequence[Completion],
    completions: Sequence[Completion],
    patch: Any = None,
    **kwargs: Any,
) -> list[float | None]:
    """F1 overlap between the files the answer and the gold ``patch`` touch."""
    return _score_against_gold(
        completions,
        patch,
        lambda predicted, gold: file_f1(predicted.changed_files(), gold.changed_files()),
    )


# --------------------------------------------------------------------------- Terminal-Bench


def terminal_format(
    prompts: Sequence[Completion], completions: Sequence[Completion], **kwargs: Any
) -> list[float | None]:
    """1.0 when shell commands can be extracted from the answer."""
    return [1.0 if extract_commands(text) else 0.0 for text in completion_texts(completions)]


def terminal_safety(
    prompts: Sequence[Completion],
    completions: Sequence[Completion],
    task_dir: Any = None,
    *,
    gate: bool = True,
    observe: bool = True,
    **kwargs: Any,
) -> list[float | None]:
    """1.0 when the extracted commands break none of the safety rules (0.0 if none).

    With a ``task_dir`` column and ``observe`` (the default), commands the static rules let
    through also run where their effects are visible
    (:func:`autolearn.benchmarks.observe_terminal_task`): changing anything outside the work
    dir, writing a device or signalling a process they did not start scores 0.0. With
    ``gate`` (the default), safe commands earn 1.0 only when they made progress on the task
    (:attr:`autolearn.benchmarks.TaskRun.progress`): harmless but useless commands are not
    paid for being harmless."""
    texts = completion_texts(completions)
    scripts = [_script(text) for text in texts]
    folders = _column(task_dir, len(texts))
    safe = [bool(script) and not _dangers(script) for script in scripts]
    jobs = [(s, f) for s, f, ok in zip(scripts, folders, safe, strict=True) if ok and f]
    if observe:
        observed = _in_parallel(_observation, jobs)
        safe = [
            ok and not (folder and observed[(script, folder)].harmful)
            for script, folder, ok in zip(scripts, folders, safe, strict=True)
        ]
        jobs = [(s, f) for s, f, ok in zip(scripts, folders, safe, strict=True) if ok and f]
    if not gate:
        return [1.0 if ok else 0.0 for ok in safe]
    runs = _runs(jobs)
    scores: list[float | None] = []
    for script, folder, ok in zip(scripts, folders, safe, strict=True):
        if not ok:
            scores.append(0.0)
        elif not folder:
            scores.append(1.0)
        else:
            run = runs.get((script, folder))
            scores.append(1.0 if run is not None and run.progress else 0.0)
    return scores


def terminal_execution(
    prompts: Sequence[Completion],
    completions: Sequence[Completion],
    task_dir: Any = None,
    *,
    gate: bool = True,
    **kwargs: Any,
) -> list[float | None]:
    """Fraction of the task's checks passed after running the commands in the sandbox.

    With ``gate`` (the default) checks that pass on the untouched environment earn nothing
    until the commands make some other check pass."""
    jobs = list(
        zip(
            map(_script, completion_texts(completions)),
            _column(task_dir, len(completions)),
            strict=True,
        )
    )
    runs = _runs(
        [(script, folder) for script, folder in jobs if script and folder and not _dangers(script)]
    )
    scores: list[float | None] = []
    for script, folder in jobs:
        if not folder:
            scores.append(None)
        elif not script or _dangers(script):
            scores.append(0.0)
        else:
            run = runs.get((script, folder))
            if run is None:
                scores.append(0.0)
            else:
                scores.append(
                    run.reward
                    if gate or not run.checks_total
                    else run.checks_passed / run.checks_total
                )
    return scores


def _script(text: str) -> str:
    return "\n".join(extract_commands(text))


@lru_cache(maxsize=4096)
def _dangers(script: str) -> tuple[str, ...]:
    """The safety rules the script breaks (cached: safety and execution both ask)."""
    dangers = find_dangers(script)
    if dangers:
        logger.info(
            "not executed (dangerous: %s): %s",
            ", ".join(sorted({d.rule for d in dangers})),
            dangers[0].command[:120],
        )
    return tuple(sorted({d.rule for d in dangers}))


GATE_NOTE = (
    "terminal_safety and terminal_execution pay only when some check passes that fails on the "
    "untouched environment; terminal_format is paid ungated; turn a gate off with "
    "reward_kwargs: {NAME: {gate: false}}"
)
terminal_safety.gate_note = GATE_NOTE  # type: ignore[attr-defined]
terminal_execution.gate_note = GATE_NOTE  # type: ignore[attr-defined]


def _runs(jobs: Sequence[tuple[str, Any]]) -> dict[tuple[str, Any], TaskRun]:
    """Run each distinct (script, task folder) once, in parallel (results are cached)."""
    return _in_parallel(_task_run, jobs)


def _in_parallel(
    function: Callable[[str, str], Result], jobs: Sequence[tuple[str, Any]]
) -> dict[tuple[str, Any], Result]:
    """``function(script, folder)`` for each distinct job, in parallel threads."""
    unique = list(dict.fromkeys((script, str(folder)) for script, folder in jobs))
    if not unique:
        return {}
    workers = max(1, min(len(unique), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = dict(zip(unique, pool.map(lambda job: function(*job), unique), strict=True))
    return {(script, folder): results[(script, str(folder))] for script, folder in jobs}


@lru_cache(maxsize=1024)
def _observation(script: str, folder: str) -> Observation:
    observation = observe_terminal_task(folder, script)
    if observation.harmful:
        logger.info("unsafe when run (%s): %s", "; ".join(observation.reasons()), script[:120])
    return observation


@lru_cache(maxsize=1024)
def _task_run(script: str, folder: str) -> TaskRun:
    run = run_terminal_task(folder, script)
    logger.debug(
        "%s: %d/%d checks, progress %s (commands %s, checks %s)",
        Path(folder).name,
        run.checks_passed,
        run.checks_total,
        run.progress,
        run.commands_status,
        run.checks_status,
    )
    return run


# --------------------------------------------------------------------------- registry

REWARDS: dict[str, Reward] = {
    "swe_format": swe_format,
    "swe_similarity": swe_similarity,
    "swe_files": swe_files,
    "terminal_format": terminal_format,
    "terminal_safety": terminal_safety,
    "terminal_execution": terminal_execution,
}


def default_weights(benchmark: str) -> dict[str, float]:
    """The reward set, with weights, of ``swe-lite``/``swe-verified``/``terminal``."""
    return dict(SWE_WEIGHTS if benchmark_family(benchmark) == "swe" else TERMINAL_WEIGHTS)


def check_reward_names(benchmark: str, names: Iterable[str]) -> None:
    """Reject built-in reward names that are not rewards of ``benchmark``.

    Custom ``module:function`` rewards pass: they are imported with the training run's
    other rewards (:func:`autolearn.trainer.resolve_reward`), as in the other scripts.
    """
    own = default_weights(benchmark)
    for name in names:
        if parse_reward_spec(name) is None and name not in own:
            raise UserError(
                f"reward {name!r} does not apply to {benchmark}: use {', '.join(own)} "
                "or a custom module:function"
            )
