"""Dataset builders shared by the training scripts.

Every builder returns a ``datasets.Dataset`` with a conversational ``prompt`` column (a list
of chat messages, which TRL renders with the model's chat template) plus the columns the
rewards read. Rows come from the hub or from a local ``.jsonl``/``.json``/``.parquet`` file.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from autolearn.cli import naming, plural
from autolearn.errors import UserError, one_line
from autolearn.hub import hub_reachable, require_hub
from autolearn.jsonl import read_local_rows

logger = logging.getLogger(__name__)

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}

MATH_SYSTEM_PROMPT = (
    "You are a careful math tutor. Think through the problem step by step inside "
    "<think> </think> tags, then give only the final number inside <answer> </answer> tags."
)
# A worked example shown as a previous chat turn: small models copy its layout far more
# reliably than they follow the instruction alone (see docs/PERFORMANCE.md, learning check).
MATH_ONE_SHOT = (
    {"role": "user", "content": "A box holds 6 pencils. How many pencils are in 4 boxes?"},
    {
        "role": "assistant",
        "content": "<think>\nEach box holds 6 pencils and there are 4 boxes, so 6 * 4 = 24.\n"
        "</think>\n<answer>24</answer>",
    },
)


def is_local_file(name: str) -> bool:
    """Whether a dataset name is a local data file (by its extension)."""
    return Path(name).suffix.lower() in LOCAL_FORMATS


def load_rows(name: str, *, subset: str | None = None, split: str = "train") -> Any:
    """Load a dataset split from a local file or the hub, with one-line errors."""
    return load_rows_and_places(name, subset=subset, split=split)[0]


def load_rows_and_places(
    name: str, *, subset: str | None = None, split: str = "train"
) -> tuple[Any, list[str]]:
    """A dataset split, and where each row came from ("line 3" of a file, "row 2" of the hub).

    Local files are read by :func:`autolearn.jsonl.read_local_rows`, so that an error names
    the file and the line; ``datasets`` loads only from the hub.
    """
    import datasets

    if is_local_file(name):
        rows = local_objects(name)
        try:
            table = datasets.Dataset.from_list([row for _, row in rows])
        except Exception as exc:  # pyarrow: rows that disagree on a column's type
            raise UserError(
                f"{name}: the rows do not share one type per column ({one_line(str(exc))})"
            ) from None
        return table, [where for where, _ in rows]
    if Path(name).exists():
        raise UserError(f"{name}: unsupported dataset file type; use .jsonl, .json or .parquet")
    table = load_hub_dataset(name, subset, split)
    return table, [f"row {i}" for i in range(len(table))]


def local_objects(name: str) -> list[tuple[str, dict[str, Any]]]:
    """``(where, row)`` for each row of a local dataset file; every row must be an object."""
    path = Path(name).expanduser()
    if not path.exists():
        raise UserError(f"dataset file not found: {name}")
    rows = read_local_rows(path, "dataset rows")
    for where, row in rows:
        if not isinstance(row, dict):
            raise UserError(f"{name}: {where} is not an object with named columns")
    return rows


@contextlib.contextmanager
def _libraries_offline() -> Iterator[None]:
    """Make datasets and huggingface_hub read only their cache (no half minute of retries)."""
    import datasets
    import huggingface_hub.constants as hub_constants

    saved = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def load_hub_dataset(name: str, subset: str | None, split: str) -> Any:
    """Load a hub dataset; offline, only the local cache is tried, and a miss is one clear line."""
    import datasets

    online = hub_reachable()
    try:
        if online:
            return datasets.load_dataset(name, subset, split=split)
        with _libraries_offline():
            return datasets.load_dataset(name, subset, split=split)
    except Exception as exc:  # datasets raises many types (ConnectionError, ValueError, ...)
        if not online:
            require_hub(f"dataset '{name}'")
        raise UserError(f"could not load dataset '{name}': {one_line(str(exc))}") from None


def require_columns(rows: Any, columns: Sequence[str], name: str) -> None:
    """Fail with one line if ``rows`` is empty or misses any of ``columns``."""
    if len(rows) == 0:
        raise UserError(f"dataset {name} is empty")
    missing = [c for c in columns if c not in rows.column_names]
    if missing:
        raise UserError(
            f"dataset {name} lacks {naming('column', missing)}; it has {', '.join(rows.column_names)}"
        )


def limit_rows(rows: Any, max_samples: int) -> Any:
    """Keep the first ``max_samples`` rows (all when 0 or negative)."""
    if max_samples and max_samples > 0 and len(rows) > max_samples:
        return rows.select(range(max_samples))
    return rows


def math_prompt(
    question: str, style: str, system: str = MATH_SYSTEM_PROMPT
) -> list[dict[str, str]]:
    """The chat messages for one math question, after ``system`` (and the one-shot turn if asked)."""
    messages = [{"role": "system", "content": system}]
    if style == "one_shot":
        messages.extend(dict(m) for m in MATH_ONE_SHOT)
    elif style != "zero_shot":
        raise UserError(f"dataset.prompt_style must be one_shot or zero_shot, got {style!r}")
    messages.append({"role": "user", "content": question.strip()})
    return messages


def build_math_dataset(
    name: str,
    *,
    subset: str = "main",
    split: str = "train",
    max_samples: int = 0,
    prompt_style: str = "one_shot",
) -> Any:
    """GSM8K-style rows (``question``, ``answer``) as GRPO prompts; keeps ``answer`` for the rewards."""
    rows, places = load_rows_and_places(
        name, subset=None if is_local_file(name) else subset, split=split
    )
    require_columns(rows, ["question", "answer"], name)
    rows = limit_rows(rows, max_samples)
    for column in ("question", "answer"):
        bad = [i for i, value in enumerate(rows[column]) if value is None or not str(value).strip()]
        if bad:
            raise UserError(f"dataset {name}: {places[bad[0]]} has an empty {column}")
    warn_non_numeric_answers(rows["answer"], places, name)
    return rows.map(
        lambda row: {"prompt": math_prompt(str(row["question"]), prompt_style)},
        desc="building prompts",
    )


def warn_non_numeric_answers(answers: Sequence[Any], places: Sequence[str], name: str) -> None:
    """Warn, with a count and the first example, when gold answers are not numbers.

    ``correctness`` compares such answers as text, which the math prompt (asking for a number)
    rarely produces; usually it means a wrong column or a GSM8K answer without its number.
    """
    from rewards import normalize_number, parse_gold_answer

    bad = [
        i for i, value in enumerate(answers) if normalize_number(parse_gold_answer(value)) is None
    ]
    if bad:
        first = bad[0]
        logger.warning(
            "dataset %s: answers that are not numbers: %d of %d (first: %s, %r); "
            "correctness compares them as text, while the prompt asks for a number",
            name,
            len(bad),
            len(answers),
            places[first],
            parse_gold_answer(answers[first]),
        )


def prompt_token_length(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """Number of tokens of a chat prompt as the trainer will render it."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def drop_long_prompts(dataset: Any, tokenizer: Any, max_prompt_length: int) -> Any:
    """Drop rows whose rendered prompt exceeds ``max_prompt_length`` tokens, and say how many.

    TRL 1.14 has no ``max_prompt_length``; cutting a chat prompt mid-way would feed the model
    a broken question, so over-long prompts are dropped rather than truncated.
    """
    if tokenizer is None or max_prompt_length <= 0:
        return dataset
    before = len(dataset)
    dataset = dataset.filter(
        lambda row: prompt_token_length(tokenizer, row["prompt"]) <= max_prompt_length,
        desc="checking prompt lengths",
    )
    dropped = before - len(dataset)
    if dropped:
        logger.warning(
            "dropped %d of %s longer than max_prompt_length=%d tokens",
            dropped,
            plural(before, "prompt"),
            max_prompt_length,
        )
    else:
        logger.info(
            "%s fit in max_prompt_length=%d tokens",
            "the prompt" if before == 1 else f"all {before} prompts",
            max_prompt_length,
        )
    if len(dataset) == 0:
        raise UserError(f"every prompt is longer than max_prompt_length={max_prompt_length} tokens")
    return dataset


def build_math_splits(
    dataset: Any, *, seed: int, eval_prompts: int, evaluate: bool
) -> tuple[Any, Any | None]:
    """(training, held-out) datasets for math GRPO from a ``MathDataConfig``.

    ``rg:NAME`` generates both from disjoint seeds (when ``evaluate``: ``eval_fraction`` of
    the training count held out, or ``eval_prompts`` without it); otherwise the held-out rows
    are ``eval_name``'s file, or a seeded ``eval_fraction`` of the training file. No held-out
    rows: ``None``.
    """
    from autolearn.heldout import split_heldout_rows
    from autolearn.procedural import DEFAULT_TRAIN_SIZE, build_procedural_splits, is_procedural

    d = dataset
    if is_procedural(d.name):
        if d.eval_name:
            raise UserError(
                "rg: datasets generate their own held-out problems; leave dataset.eval_name unset"
            )
        train_size = d.max_samples or DEFAULT_TRAIN_SIZE
        eval_size = max(1, round(train_size * d.eval_fraction)) if d.eval_fraction else eval_prompts
        return build_procedural_splits(
            d.name,
            train_size=train_size,
            eval_size=eval_size if evaluate else 0,
            seed=seed,
            options=d.rg_options,
            prompt_style=d.prompt_style,
        )
    if d.rg_options:
        raise UserError("dataset.rg_options applies only to rg:NAME datasets")
    if d.eval_name and d.eval_fraction:
        raise UserError("set dataset.eval_name or dataset.eval_fraction, not both")
    rows = build_math_dataset(
        d.name, subset=d.subset, split=d.split, max_samples=0, prompt_style=d.prompt_style
    )
    train, held = split_heldout_rows(rows, d.eval_fraction, seed)
    if d.eval_name:
        held = build_math_dataset(
            d.eval_name, subset=d.subset, split=d.split, prompt_style=d.prompt_style
        )
        logger.info("held-out problems: %d from %s", len(held), d.eval_name)
    return limit_rows(train, d.max_samples), held
