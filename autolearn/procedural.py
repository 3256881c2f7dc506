"""Procedural offline tasks from reasoning-gym: ``--dataset rg:NAME`` for any of its generators.

reasoning-gym generates unlimited, seeded problems (arithmetic, countdown, word problems,
puzzles) and verifies answers with each generator's own ``score_answer``. A row built here
carries, beside the chat ``prompt``:

``question`` / ``answer``
    the generator's text and reference answer (so the math rewards read it as usual);
``rg_task`` / ``rg_entry``
    the generator's name and its whole entry as JSON (question, answer, metadata), which
    :func:`score_answers` hands back to the generator to score a completion.

Item ``i`` of a generator seeded ``s`` depends only on ``s + i``, so the training rows use
seeds ``seed .. seed + n - 1`` and the held-out rows the seeds after them: the two splits share
no seed. Held-out questions that happen to equal a training question (or an earlier held-out
one) are skipped, and further seeds are drawn until the held-out set has the size asked for.

Some generators score by evaluating the answer text (sympy's ``parse_expr``, which calls
``eval``). The scorer is therefore shown only answers that cannot be code: no call, attribute
access, subscript, power or shift (see :func:`inert_answer`); any other answer scores 0.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from autolearn.data import math_prompt
from autolearn.errors import UserError, one_line

logger = logging.getLogger(__name__)

PREFIX = "rg:"
DEFAULT_TRAIN_SIZE = 1000
MAX_ANSWER_CHARS = 4000
HELDOUT_DRAWS = 20  # problems drawn per held-out problem asked for, at most

RG_SYSTEM_PROMPT = (
    "You are a careful problem solver. Think through the problem step by step inside "
    "<think> </think> tags, then give only the final answer inside <answer> </answer> tags."
)

# What makes Python text do more than combine literals and names with operators: a call
# or subscript after a name, number or bracket; attribute access; powers and shifts (an
# unbounded amount of work); string literals, escapes, braces and statement separators.
_CODE_LIKE = re.compile(r"[\w)\]]\s*[(\[]|\.\s*[^\W\d]|\*\*|<<|>>|['\"`\\{};@]|:=|\blambda\b")


def is_procedural(name: str) -> bool:
    """Whether a dataset name asks for a reasoning-gym generator (``rg:NAME``)."""
    return name.startswith(PREFIX)


def _reasoning_gym() -> Any:
    try:
        import reasoning_gym
    except ImportError:
        raise UserError(
            "rg: datasets need reasoning-gym: pip install reasoning-gym==0.1.25 "
            "(it is in requirements.txt and requirements-gpu.txt)"
        ) from None
    return reasoning_gym


def generator_names() -> list[str]:
    """Every generator reasoning-gym offers, sorted."""
    return sorted(_reasoning_gym().factory.DATASETS)


def generator_name(dataset_name: str) -> str:
    """The generator of ``rg:NAME``; an unknown name is one error listing the available ones."""
    name = dataset_name.removeprefix(PREFIX).strip()
    names = generator_names()
    if name not in names:
        raise UserError(f"unknown reasoning-gym generator {name!r}; available: {', '.join(names)}")
    return name


def create_generator(name: str, options: Mapping[str, Any], *, seed: int, size: int) -> Any:
    """A reasoning-gym dataset object, with the config ``options`` checked as one-line errors."""
    rg = _reasoning_gym()
    try:
        return rg.create_dataset(name, **dict(options), seed=seed, size=size)
    except (TypeError, ValueError, AssertionError) as exc:
        raise UserError(
            f"dataset.rg_options for {name}: {one_line(str(exc)) or type(exc).__name__}"
        ) from None


def rg_prompt(question: str, style: str) -> list[dict[str, str]]:
    """The chat messages for one generated problem (the math one-shot turn when asked)."""
    return math_prompt(question, style, system=RG_SYSTEM_PROMPT)


def _rows(
    name: str, options: Mapping[str, Any], seed: int, size: int, style: str
) -> list[dict[str, Any]]:
    generator = create_generator(name, options, seed=seed, size=size)
    rows = []
    for index in range(size):
        entry = generator[index]
        rows.append(
            {
                "prompt": rg_prompt(str(entry["question"]), style),
                "question": str(entry["question"]),
                "answer": str(entry["answer"]),
                "rg_task": name,
                "rg_entry": json.dumps(
                    {
                        "question": entry["question"],
                        "answer": entry["answer"],
                        "metadata": entry.get("metadata", {}),
                    },
                    default=str,
                ),
            }
        )
    return rows


def build_procedural_splits(
    dataset_name: str,
    *,
    train_size: int,
    eval_size: int,
    seed: int,
    options: Mapping[str, Any] | None = None,
    prompt_style: str = "one_shot",
) -> tuple[Any, Any | None]:
    """Training and held-out ``datasets.Dataset`` of ``rg:NAME``, from disjoint seeds.

    ``train_size`` rows from seeds ``seed ..``, then ``eval_size`` (0: none) distinct held-out
    rows from the seeds after them: questions that also occur in training, or twice, are
    skipped and more are drawn (see :func:`heldout_rows`).
    """
    from datasets import Dataset

    name = generator_name(dataset_name)
    train_size = train_size if train_size > 0 else DEFAULT_TRAIN_SIZE
    train = _rows(name, options or {}, seed, train_size, prompt_style)
    if eval_size <= 0:
        return Dataset.from_list(train), None
    seen = {row["question"] for row in train}
    held, drawn = heldout_rows(
        name, options or {}, seed + train_size, eval_size, style=prompt_style, seen=seen
    )
    logger.info(
        "rg:%s: %d training problems (seeds %d-%d), %d held out (seeds %d-%d%s)",
        name,
        len(train),
        seed,
        seed + train_size - 1,
        len(held),
        seed + train_size,
        seed + train_size + drawn - 1,
        f"; {drawn - len(held)} repeats of a training or held-out question skipped"
        if drawn > len(held)
        else "",
    )
    if not held:
        raise UserError(f"rg:{name}: every held-out problem also occurs in training")
    if len(held) < eval_size:
        logger.warning(
            "rg:%s: only %d distinct held-out problems in %d draws (asked for %d): the task "
            "has few distinct problems at these rg_options",
            name,
            len(held),
            drawn,
            eval_size,
        )
    return Dataset.from_list(train), Dataset.from_list(held)


def heldout_rows(
    name: str,
    options: Mapping[str, Any],
    first_seed: int,
    size: int,
    *,
    style: str,
    seen: set[str],
) -> tuple[list[dict[str, Any]], int]:
    """Up to ``size`` rows whose questions are not in ``seen`` nor repeated, and the draws made.

    Rows are drawn in chunks of ``size`` from seeds ``first_seed ..``; small tasks (two
    one-digit terms) repeat questions often, so at most ``HELDOUT_DRAWS`` times ``size``
    problems are drawn.
    """
    held: list[dict[str, Any]] = []
    questions = set(seen)
    drawn = 0
    while len(held) < size and drawn < HELDOUT_DRAWS * size:
        chunk = _rows(name, options, first_seed + drawn, size, style)
        for row in chunk:
            drawn += 1
            if row["question"] not in questions:
                questions.add(row["question"])
                held.append(row)
                if len(held) == size:
                    break
    return held, drawn


# --------------------------------------------------------------------------- scoring


def inert_answer(text: str) -> bool:
    """Whether ``text`` is safe to hand to a scorer that may ``eval`` it.

    Literals and names combined with arithmetic and comparison operators, and brackets for
    grouping, cannot run anything; calls, attribute access, subscripts, powers, shifts and
    string literals are refused.
    """
    return len(text) <= MAX_ANSWER_CHARS and _CODE_LIKE.search(text) is None


@functools.lru_cache(maxsize=64)
def _scorer(name: str) -> Any:
    """A generator instance whose ``score_answer`` scores entries of that task."""
    return create_generator(name, {}, seed=0, size=1)


def score_answer(task: str, entry_json: str, answer: str | None) -> float:
    """The generator's score in [0, 1] for ``answer`` (``None``: no answer given) on ``entry``."""
    if answer is None or not inert_answer(answer):
        return 0.0
    entry = json.loads(entry_json)
    try:
        score = float(_scorer(task).score_answer(answer, entry))
    except Exception:  # a generator's scorer may raise on odd text; that answer is wrong
        return 0.0
    return min(1.0, max(0.0, score)) if math.isfinite(score) else 0.0


def score_answers(
    tasks: Sequence[str | None], entries: Sequence[str | None], answers: Sequence[str | None]
) -> list[float | None]:
    """Scores for a batch; ``None`` where a row is not a reasoning-gym row."""
    return [
        score_answer(task, entry, answer) if task and entry else None
        for task, entry, answer in zip(tasks, entries, answers, strict=True)
    ]
