"""From model completion to scored Python: extraction, assembly, test units, execution and analysis.

The code rewards (``code_rewards.py``) and the code evaluation share this module:

* :func:`extract_code` finds the code in a completion (last fenced Python block, or bare code).
* :func:`assemble_program` joins it with the problem's code prompt: a HumanEval-style body is
  appended to the prompt's signature; a completion that defines the entry point itself is used
  alone, after the prompt's imports and helper definitions.
* :func:`split_test_units` cuts a test script into independent units (one per assert, HumanEval's
  ``check(candidate)`` included) so that the sandbox can give partial credit.
* :func:`run_programs` runs candidates through the sandbox with an LRU cache, so the rewards that
  need an execution (``test_pass``, ``execution``, ``performance``) share one run per completion.
  :func:`driver_for` makes the verdicts isolated: the tests run in a process of their own with
  the trusted prompt code, and call the candidate's functions through plain data only.
* :func:`lint_scores`, :func:`complexity_scores` and :func:`type_scores` analyse code without
  running it: one ``ruff`` process per batch, radon in-process, one in-process mypy run per batch.

Static findings count only on the lines the model wrote, not on lines copied from the prompt.
"""

from __future__ import annotations

import ast
import builtins
import copy
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Generic, TypeVar

from autolearn.cli import plural
from autolearn.errors import UserError
from autolearn.sandbox import Driver, ExecResult, Limits, PythonJob, run_python_batch

logger = logging.getLogger(__name__)

PYTHON_FENCE_TAGS = frozenset({"python", "python3", "py"})
# An opening fence (anywhere) with an optional language tag; the block ends at the next line that
# starts with a fence, or at the end of the text (a completion cut off by max_completion_length
# still yields its code).
FENCE_RE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.M | re.S)
THINK_CLOSE = "</think>"
THINK_OPEN = "<think>"

LINT_RULES = ("E", "W", "F", "B", "SIM", "C4", "PL")
LINT_IGNORED = (
    "B905",
    "E402",
    "E501",
    "PLC0415",
    "PLR2004",
    "PLR0911",
    "PLR0912",
    "PLR0913",
    "PLR0915",
)
LINT_PENALTY_PER_FINDING = 0.1
TYPE_PENALTY_PER_ERROR = 0.25
RANK_SCORES = {"A": 1.0, "B": 0.8, "C": 0.6, "D": 0.4, "E": 0.2, "F": 0.0}
ANALYSIS_TIMEOUT_S = 120.0
CACHE_SIZE = 4096

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


# --------------------------------------------------------------------------- extraction


def strip_reasoning(text: str) -> str:
    """Drop ``<think>`` reasoning: keep what follows the last ``</think>``, cut an unclosed one."""
    if THINK_CLOSE in text:
        text = text.rsplit(THINK_CLOSE, 1)[1]
    if THINK_OPEN in text:
        text = text.split(THINK_OPEN, 1)[0]
    return text


def extract_code(text: str) -> str | None:
    """Return the code of a completion, or ``None`` when it holds none.

    The last ```` ```python ```` block wins (an untagged block counts when no tagged one exists);
    without any fence the whole text is taken as bare code. A completion whose only fences are
    for other languages (```` ```bash ````) holds no Python code. Indentation is kept, since a
    HumanEval-style continuation is an indented function body.
    """
    text = strip_reasoning(text)
    blocks = [(m.group(1).lower(), m.group(2)) for m in FENCE_RE.finditer(text)]
    if blocks:
        tagged = [body for tag, body in blocks if tag in PYTHON_FENCE_TAGS]
        untagged = [body for tag, body in blocks if not tag]
        chosen = tagged or untagged
        code = chosen[-1] if chosen else ""
    else:
        code = text
    code = _strip_blank_edges(code)
    return code or None


def _strip_blank_edges(code: str) -> str:
    """Remove leading blank lines and trailing whitespace, keeping the first line's indentation."""
    lines = code.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines).rstrip() + "\n" if lines else ""


def prompt_code(prompt: str) -> str:
    """The code a prompt shows: its last fenced Python block, or the prompt itself if it parses."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in FENCE_RE.finditer(prompt)]
    python_blocks = [body for tag, body in blocks if tag in PYTHON_FENCE_TAGS or not tag]
    if python_blocks:
        return python_blocks[-1]
    return prompt if prompt.strip() and parses(prompt) else ""


# --------------------------------------------------------------------------- assembly


@dataclass(frozen=True)
class Candidate:
    """A completion turned into a program.

    ``program`` is ``None`` when the completion holds no code. ``first_model_line`` is the
    1-based line where the model's own code starts, so that analysis can skip prompt lines.
    ``prelude`` is the trusted code the tests may use (the problem's code prompt) and
    ``entry_point`` the function under test; both come from the dataset, never the model.
    """

    program: str | None
    parses: bool
    first_model_line: int = 1
    prelude: str = ""
    entry_point: str | None = None

    @property
    def runnable(self) -> bool:
        """True when there is code that parses, i.e. something worth executing or analysing."""
        return self.program is not None and self.parses


@lru_cache(maxsize=CACHE_SIZE)
def parses(code: str) -> bool:
    """True when ``code`` compiles: valid syntax, and no ``return`` outside a function and such.

    Compiling runs nothing; it catches errors that ``ast.parse`` lets through.
    """
    try:
        compile(code, "<candidate>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


@lru_cache(maxsize=CACHE_SIZE)
def _parse_or_none(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def _top_level_def_re(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"^(?:async[ \t]+)?def[ \t]+{re.escape(name)}\b|^class[ \t]+{re.escape(name)}\b", re.M
    )


def defines(code: str, name: str) -> bool:
    """True when ``code`` defines ``name`` at top level (a def or class), even if it won't parse."""
    return _top_level_def_re(name).search(code) is not None


def _top_level_def_names(code: str) -> list[str]:
    pattern = r"^(?:async[ \t]+)?def[ \t]+(\w+)|^class[ \t]+(\w+)"
    return [func or cls for func, cls in re.findall(pattern, code, re.M)]


def prompt_prelude(code_prompt: str, code: str, entry_point: str | None) -> str:
    """What a standalone completion keeps from the prompt: imports and helper definitions.

    The entry point's own stub is left out, and so is any helper that the completion redefines.
    A prompt that does not parse gives its import lines only.
    """
    code_lines = {line.strip() for line in code.splitlines()}
    tree = _parse_or_none(code_prompt)
    if tree is None:
        lines = [ln for ln in code_prompt.splitlines() if re.match(r"(?:from|import)\s", ln)]
        lines = [ln for ln in lines if ln.strip() not in code_lines]
        return "\n".join(lines) + "\n\n\n" if lines else ""
    imports: list[str] = []
    helpers: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            statement = ast.get_source_segment(code_prompt, node) or ast.unparse(node)
            if statement.strip() not in code_lines:  # a repeated import would be a lint finding
                imports.append(statement)
        elif (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.name != entry_point
            and not defines(code, node.name)
        ):
            helpers.append(_segment_with_decorators(code_prompt, node))
    blocks = ["\n".join(imports)] if imports else []
    blocks.extend(helpers)
    return "\n\n\n".join(blocks) + "\n\n\n" if blocks else ""


def _segment_with_decorators(source: str, node: ast.stmt) -> str:
    lines = source.splitlines()
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return "\n".join(lines[start - 1 : node.end_lineno])


def assemble_program(code: str, code_prompt: str, entry_point: str | None) -> tuple[str, int]:
    """Join a completion's code with the problem's code prompt; return (program, first model line).

    * No code prompt: the code alone.
    * The code defines the entry point (or, without an entry point, a function the prompt
      defines): the prompt's imports and helpers, then the code.
    * Otherwise the code continues the prompt (HumanEval style: signature + docstring in the
      prompt, body in the completion). A body that lost its indentation is re-indented.
    """
    if not code_prompt.strip():
        return code, 1
    targets = [entry_point] if entry_point else _top_level_def_names(code_prompt)
    if not targets or any(defines(code, name) for name in targets):
        prelude = prompt_prelude(code_prompt, code, entry_point)
        return prelude + code, _line_count(prelude) + 1
    head = code_prompt if code_prompt.endswith("\n") else code_prompt + "\n"
    joined = head + code
    if not parses(joined) and code[:1] not in (" ", "\t"):
        indented = head + "".join(f"    {ln}" if ln.strip() else ln for ln in code.splitlines(True))
        if parses(indented):
            joined = indented
    return joined, _line_count(head) + 1


def _line_count(text: str) -> int:
    return text.count("\n") + (0 if not text or text.endswith("\n") else 1)


def prepare_candidate(
    completion: str, code_prompt: str = "", entry_point: str | None = None
) -> Candidate:
    """Turn one completion's text into a :class:`Candidate` program."""
    code = extract_code(completion)
    prelude = trusted_prelude(code_prompt)
    if code is None:
        return Candidate(program=None, parses=False, prelude=prelude, entry_point=entry_point)
    program, first_line = assemble_program(code, code_prompt, entry_point)
    return Candidate(
        program=program,
        parses=parses(program),
        first_model_line=first_line,
        prelude=prelude,
        entry_point=entry_point,
    )


def trusted_prelude(code_prompt: str) -> str:
    """The part of a problem's code prompt that an isolated test driver runs: all of it when it
    parses, else its import lines."""
    if not code_prompt.strip() or parses(code_prompt):
        return code_prompt
    lines = [ln for ln in code_prompt.splitlines() if re.match(r"(?:from|import)\s", ln)]
    return "\n".join(lines) + "\n" if lines else ""


# --------------------------------------------------------------------------- isolated verdicts


def _is_stub(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A function the candidate is meant to write: its body is only a docstring, pass or ``...``."""
    for stmt in node.body:
        if isinstance(stmt, ast.Pass):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring or ``...``
        return False
    return True


def _bound_names(tree: ast.AST) -> set[str]:
    """Every name the code binds anywhere (assignments, definitions, parameters, imports...)."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
            bound.add(node.name)
    return bound


def _prelude_bindings(prelude: str) -> tuple[set[str], set[str]]:
    """(names the prelude really provides, names it defines as classes); stubs provide nothing."""
    tree = _parse_or_none(prelude)
    if tree is None:
        return set(), set()
    provided: set[str] = set()
    classes: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if not _is_stub(node):
                provided.add(node.name)
        elif isinstance(node, ast.ClassDef):
            classes.add(node.name)
            provided.add(node.name)
        else:
            provided |= _bound_names(node)
    return provided, classes


@lru_cache(maxsize=1024)
def driver_for(test_code: str, prelude: str = "", entry_point: str | None = None) -> Driver | None:
    """How to run ``test_code`` with isolated verdicts, or ``None`` for the in-process mode.

    The stand-ins are the entry point and every name the tests use but neither they, the
    prelude's real definitions nor the builtins bind. Decided from trusted text only, so a
    completion cannot choose the mode: the in-process mode is for tests that treat a candidate
    name as an object (an attribute of it, or a class the prompt declares) or do not parse.
    """
    tree = _parse_or_none(test_code)
    if tree is None:
        return None
    loaded = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }
    provided, classes = _prelude_bindings(prelude)
    calls = loaded - _bound_names(tree) - provided - _BUILTIN_NAMES
    if entry_point:
        calls.add(entry_point)
    as_objects = {
        n.value.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
    }
    if calls & (classes | as_objects):
        return None
    return Driver(prelude=prelude, calls=tuple(sorted(calls)))


_BUILTIN_NAMES = frozenset(dir(builtins))


# --------------------------------------------------------------------------- test units


def _is_trivial_assert(node: ast.stmt) -> bool:
    """``assert True, "..."``: HumanEval's debugging markers, which every program would pass."""
    return (
        isinstance(node, ast.Assert)
        and isinstance(node.test, ast.Constant)
        and bool(node.test.value)
    )


def _contains_check(node: ast.AST) -> bool:
    """True when a statement asserts or raises, outside nested function and class bodies."""
    if isinstance(node, ast.Assert | ast.Raise):
        return not _is_trivial_assert(node) if isinstance(node, ast.Assert) else True
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
        return False
    return any(_contains_check(child) for child in ast.iter_child_nodes(node))


def _checker_call_name(
    node: ast.stmt, checkers: dict[str, ast.FunctionDef | ast.AsyncFunctionDef]
) -> str | None:
    """The name of the checker that a top-level ``check(candidate)`` statement calls, if any."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        if isinstance(func, ast.Name) and func.id in checkers:
            return func.id
    return None


def _units_from_body(
    body: Sequence[ast.stmt], is_check: Callable[[ast.stmt], bool]
) -> list[list[ast.stmt]]:
    """Cut statements into units: each checking statement with all the setup statements before it.

    Setup statements after the last check join the last unit, so every statement runs somewhere.
    Trivial ``assert True`` statements are dropped.
    """
    units: list[list[ast.stmt]] = []
    setup: list[ast.stmt] = []
    setup_in_last_unit = 0
    for stmt in body:
        if _is_trivial_assert(stmt):
            continue
        if is_check(stmt):
            units.append([*setup, stmt])
            setup_in_last_unit = len(setup)
        else:
            setup.append(stmt)
    if units:
        units[-1].extend(setup[setup_in_last_unit:])
    return units


def _without_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    first = body[0] if body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return body[1:]
    return body


def _source(nodes: Sequence[ast.stmt]) -> str:
    return "\n".join(ast.unparse(node) for node in nodes) + "\n"


@lru_cache(maxsize=1024)
def split_test_units(test_code: str) -> tuple[str, ...]:
    """Cut a test script into independent units for partial credit; each unit is full source.

    * Every top-level statement that asserts or raises (an ``assert``, or a loop or block holding
      one) is a unit, preceded by the setup statements (imports, helpers, constants) before it.
    * A top-level call of a checker function (HumanEval's ``check(candidate)``) becomes one unit
      per checking statement of the checker's body: the checker is redefined with its setup
      statements and that one statement, then called exactly as the script calls it.
    * ``assert True`` markers are dropped; statements after the last check join the last unit.
    * A script that does not parse, or checks nothing, is a single unit.
    """
    tree = _parse_or_none(test_code)
    if tree is None:
        return (test_code,) if test_code.strip() else ()
    checkers = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(_contains_check(stmt) for stmt in node.body)
    }

    def is_check(node: ast.stmt) -> bool:
        return _checker_call_name(node, checkers) is not None or _contains_check(node)

    units: list[str] = []
    for statements in _units_from_body(tree.body, is_check):
        check = next(s for s in reversed(statements) if is_check(s))
        name = _checker_call_name(check, checkers)
        if name is None:
            units.append(_source(statements))
        else:
            units.extend(_checker_units(statements, checkers[name], check))
    if not units:
        return (test_code,) if test_code.strip() else ()
    return tuple(units)


def _checker_units(
    statements: list[ast.stmt], checker: ast.FunctionDef | ast.AsyncFunctionDef, call: ast.stmt
) -> list[str]:
    """Expand a top-level checker call into one unit per checking statement of the checker's body.

    Each unit redefines the checker with its setup and that one statement, right where the
    script called it; the surrounding top-level statements stay in place.
    """
    body_units = _units_from_body(_without_docstring(checker.body), _contains_check)
    at = next(i for i in range(len(statements) - 1, -1, -1) if statements[i] is call)
    # the checker's full definition is setup too (helpers may call it); the reduced one replaces it
    before = [s for s in statements[:at] if s is not checker]
    after = statements[at:]
    if not body_units:
        return [_source([*before, checker, *after])]
    units = []
    for checker_body in body_units:
        reduced = copy.copy(checker)
        reduced.body = checker_body
        units.append(_source([*before, reduced, *after]))
    return units


# --------------------------------------------------------------------------- caches


class LRUCache(Generic[K, V]):
    """A small thread-safe least-recently-used map."""

    def __init__(self, maxsize: int = CACHE_SIZE) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value for ``key`` (marking it recently used), or ``None``."""
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: K, value: V) -> None:
        """Store ``value``, evicting the least recently used entry when full."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


_EXEC_CACHE: LRUCache[str, ExecResult] = LRUCache(maxsize=2048)
_LINT_CACHE: LRUCache[tuple[str, int], float] = LRUCache()
_COMPLEXITY_CACHE: LRUCache[tuple[str, int], float] = LRUCache()
_TYPE_CACHE: LRUCache[tuple[str, int], float] = LRUCache()


def clear_caches() -> None:
    """Forget all cached executions and analyses (benchmarks use this to measure cold batches)."""
    for cache in (_EXEC_CACHE, _LINT_CACHE, _COMPLEXITY_CACHE, _TYPE_CACHE):
        cache.clear()
    split_test_units.cache_clear()
    _parse_or_none.cache_clear()
    parses.cache_clear()


def _job_key(job: PythonJob) -> str:
    digest = hashlib.sha256()
    for part in (job.program, *job.tests, repr(job.limits), repr(job.driver)):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


# --------------------------------------------------------------------------- execution


def run_programs(
    programs: Sequence[str | None],
    tests: Sequence[Sequence[str]],
    limits: Limits | None = None,
    drivers: Sequence[Driver | None] | None = None,
) -> list[ExecResult | None]:
    """Run each program with its test units in the sandbox, reusing cached results.

    ``None`` programs are skipped (result ``None``). ``drivers`` (one per program, see
    :func:`driver_for`) make the verdicts isolated. All misses go to the sandbox in one
    parallel batch; identical (program, tests, limits, driver) jobs run once.
    """
    results: list[ExecResult | None] = [None] * len(programs)
    missing: dict[str, tuple[PythonJob, list[int]]] = {}
    driver_list = list(drivers) if drivers is not None else [None] * len(programs)
    for index, (program, units, driver) in enumerate(
        zip(programs, tests, driver_list, strict=True)
    ):
        if program is None:
            continue
        job = PythonJob(program=program, tests=tuple(units), limits=limits, driver=driver)
        key = _job_key(job)
        cached = _EXEC_CACHE.get(key)
        if cached is not None:
            results[index] = cached
        else:
            missing.setdefault(key, (job, []))[1].append(index)
    if missing:
        keys = list(missing)
        fresh = run_python_batch([missing[key][0] for key in keys])
        for key, result in zip(keys, fresh, strict=True):
            _EXEC_CACHE.put(key, result)
            for index in missing[key][1]:
                results[index] = result
    return results


def run_candidates(
    candidates: Sequence[Candidate], test_codes: Sequence[str | None], limits: Limits | None = None
) -> list[ExecResult | None]:
    """Run each runnable candidate against its test script (split into units); else ``None``.

    The verdicts are isolated wherever :func:`driver_for` allows it (``ExecResult.verdict``).
    """
    programs = [c.program if c.runnable else None for c in candidates]
    units = [split_test_units(t) if t else () for t in test_codes]
    drivers = [
        driver_for(t, c.prelude, c.entry_point) if t else None
        for c, t in zip(candidates, test_codes, strict=True)
    ]
    return run_programs(programs, units, limits, drivers)


# --------------------------------------------------------------------------- static analysis


def _scored_with_cache(
    candidates: Sequence[Candidate],
    cache: LRUCache[tuple[str, int], float],
    compute: Callable[[list[tuple[str, int]]], list[float]],
    tool: str,
) -> list[float | None]:
    """Score runnable candidates (0.0 for the rest), computing only the uncached unique programs.

    If the tool itself fails (not the code it checks), the affected scores are ``None`` and a
    warning is logged, so that one bad batch does not stop a training run.
    """
    keys = [
        (c.program, c.first_model_line) if c.runnable and c.program else None for c in candidates
    ]
    known: dict[tuple[str, int], float | None] = {}
    for key in keys:
        if key is not None and key not in known:
            known[key] = cache.get(key)
    todo = [key for key, value in known.items() if value is None]
    if todo:
        try:
            fresh = compute(todo)
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
            logger.warning(
                "%s failed on a batch of %s (scored None): %s",
                tool,
                plural(len(todo), "program"),
                exc,
            )
        else:
            for key, score in zip(todo, fresh, strict=True):
                cache.put(key, score)
                known[key] = score
    return [0.0 if key is None else known[key] for key in keys]


def ruff_binary() -> str:
    """Path of the ``ruff`` executable of this environment."""
    beside = Path(sys.executable).with_name("ruff")
    if beside.is_file():
        return str(beside)
    try:
        from ruff.__main__ import find_ruff_bin

        return str(find_ruff_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("ruff")
        if found:
            return found
    raise UserError("the lint reward needs ruff: pip install ruff (see requirements.txt)")


def _write_snippets(directory: Path, programs: Sequence[str]) -> list[Path]:
    paths = []
    for index, program in enumerate(programs):
        path = directory / f"snippet_{index}.py"
        path.write_text(program, encoding="utf-8")
        paths.append(path)
    return paths


def _count_by_file(
    locations: list[tuple[str, int]], paths: list[Path], first_lines: list[int]
) -> list[int]:
    """Findings per snippet, counting only those at or after the snippet's first model line."""
    index_of = {path.name: i for i, path in enumerate(paths)}
    counts = [0] * len(paths)
    for filename, line in locations:
        index = index_of.get(Path(filename).name)
        if index is not None and line >= first_lines[index]:
            counts[index] += 1
    return counts


def _ruff_findings(programs: list[tuple[str, int]]) -> list[int]:
    with tempfile.TemporaryDirectory(prefix="autolearn-ruff-") as tmp:
        paths = _write_snippets(Path(tmp), [p for p, _ in programs])
        command = [
            ruff_binary(), "check", "--isolated", "--no-cache", "--exit-zero",
            "--output-format", "json", "--target-version", "py311", "--line-length", "100",
            "--select", ",".join(LINT_RULES), "--ignore", ",".join(LINT_IGNORED), tmp,
        ]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=ANALYSIS_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"ruff failed ({done.returncode}): {done.stderr.strip()[:500]}")
        findings = json.loads(done.stdout or "[]")
    locations = [(f["filename"], int((f.get("location") or {}).get("row", 0))) for f in findings]
    return _count_by_file(locations, paths, [line for _, line in programs])


def lint_scores(candidates: Sequence[Candidate]) -> list[float | None]:
    """Ruff score per candidate: 1.0 minus 0.1 per finding on the model's lines, floored at 0.

    One ``ruff check`` process covers the whole batch. Code that is missing or does not parse
    scores 0.0.
    """

    def compute(todo: list[tuple[str, int]]) -> list[float]:
        return [max(0.0, 1.0 - LINT_PENALTY_PER_FINDING * n) for n in _ruff_findings(todo)]

    return _scored_with_cache(candidates, _LINT_CACHE, compute, "ruff")


def _worst_complexity(program: str, first_line: int) -> int | None:
    """Highest cyclomatic complexity among the functions that hold model-written lines."""
    from radon.complexity import cc_visit
    from radon.visitors import ComplexityVisitor

    blocks = []
    pending = list(cc_visit(program))
    while pending:
        block = pending.pop()
        pending.extend(getattr(block, "methods", []))
        pending.extend(getattr(block, "closures", []))
        if not hasattr(block, "methods") and block.endline >= first_line:
            blocks.append(block.complexity)
    if blocks:
        return max(blocks)
    return int(ComplexityVisitor.from_code(program).complexity) if first_line <= 1 else None


def complexity_score(program: str, first_line: int = 1) -> float:
    """radon rank of the most complex model-written function mapped to A=1.0 ... F=0.0."""
    from radon.complexity import cc_rank

    try:
        worst = _worst_complexity(program, first_line)
    except (SyntaxError, ValueError, RecursionError):
        return 0.0
    return 1.0 if worst is None else RANK_SCORES[cc_rank(worst)]


def complexity_scores(candidates: Sequence[Candidate]) -> list[float | None]:
    """:func:`complexity_score` per candidate (radon in-process); 0.0 for missing or broken code."""
    return _scored_with_cache(
        candidates,
        _COMPLEXITY_CACHE,
        lambda todo: [complexity_score(p, line) for p, line in todo],
        "radon",
    )


_MYPY_LOCK = threading.Lock()
MYPY_ERROR_RE = re.compile(r"^(?P<file>[^:\n]+\.py):(?P<line>\d+):(?:\d+:)? error:", re.M)


def mypy_cache_dir() -> Path:
    """Where mypy keeps its incremental cache (typeshed stays parsed across batches)."""
    return Path(tempfile.gettempdir()) / "autolearn-mypy-cache"


def _mypy_errors(programs: list[tuple[str, int]]) -> list[int]:
    from mypy import api

    with tempfile.TemporaryDirectory(prefix="autolearn-mypy-") as tmp:
        paths = _write_snippets(Path(tmp), [p for p, _ in programs])
        args = [
            "--config-file", "", "--cache-dir", str(mypy_cache_dir()),
            "--ignore-missing-imports", "--follow-imports", "silent", "--check-untyped-defs",
            "--no-error-summary", "--show-error-codes", "--no-pretty", "--hide-error-context",
            "--no-color-output", "--soft-error-limit", "-1", *map(str, paths),
        ]  # fmt: skip
        with _MYPY_LOCK:
            stdout, stderr, status = api.run(args)
    if status not in (0, 1):
        raise RuntimeError(f"mypy failed ({status}): {(stderr or stdout).strip()[:500]}")
    locations = [(m["file"], int(m["line"])) for m in MYPY_ERROR_RE.finditer(stdout)]
    return _count_by_file(locations, paths, [line for _, line in programs])


def type_scores(candidates: Sequence[Candidate]) -> list[float | None]:
    """mypy score per candidate: 1.0 minus 0.25 per error on the model's lines, floored at 0.

    One in-process ``mypy.api.run`` covers the batch (each snippet is its own module).
    """

    def compute(todo: list[tuple[str, int]]) -> list[float]:
        return [max(0.0, 1.0 - TYPE_PENALTY_PER_ERROR * n) for n in _mypy_errors(todo)]

    return _scored_with_cache(candidates, _TYPE_CACHE, compute, "mypy")


def warm_up_analysis(type_check: bool = True) -> None:
    """Prime the analysers before training: ruff's binary, radon's import and mypy's disk cache.

    The first mypy run parses the standard library stubs (about 1.5 s on 2 cores); later runs
    reuse the cache, so calling this at start-up keeps that cost out of the first GRPO step.
    """
    warm = [Candidate(program="def ready(x: int) -> int:\n    return x\n", parses=True)]
    lint_scores(warm)
    complexity_scores(warm)
    if type_check:
        type_scores(warm)
