"""SWE-bench and Terminal-Bench tasks for GRPO: loading, validation, prompts and execution.

Entry points for training scripts (each returns a ``datasets.Dataset`` whose ``prompt``
column is a chat: one system and one user message):

* :func:`load_swe_bench` -- SWE-bench Lite/Verified from the hub, or a local file.
* :func:`load_terminal_bench` -- Terminal-Bench-style task folders.
* :func:`load_benchmark` -- dispatch on ``swe-lite`` / ``swe-verified`` / ``terminal``.

SWE-bench columns
=================

Every official column is kept as a plain string: ``instance_id``, ``repo``,
``base_commit``, ``patch`` (the gold patch the rewards compare with), ``test_patch``,
``problem_statement``, ``hints_text``, ``FAIL_TO_PASS`` and ``PASS_TO_PASS`` (JSON lists
in a string, as on the hub), ``version``, ``environment_setup_commit``, ``created_at``;
plus ``repos_dir`` (the ``--repos_dir`` folder as an absolute path, or ``""``), which
lets ``swe_format`` check that a patch applies.

With ``repos_dir``, the prompt also holds the content, at ``base_commit``, of every file
the gold patch touches (read with ``git show``), as SWE-RL does. The clone of ``owner/name``
is looked up as ``REPOS_DIR/owner__name``, then ``REPOS_DIR/owner/name``, then
``REPOS_DIR/name``.

Terminal-Bench task layout
==========================

Close to Terminal-Bench's own format; the Docker image is replaced by a plain folder::

    TASKS_DIR/<task-id>/
        task.yaml        instruction: str (required), difficulty: str (required),
                         max_test_timeout_sec: number (optional, default 30),
                         max_agent_timeout_sec: number (optional, default 30)
        environment/     optional: the starting files. Every run gets a fresh copy as its
                         working directory (the equivalent of the image's /app).
                         A Dockerfile or docker-compose.yaml in it is not copied.
        tests/           optional: pytest files (test_*.py) and the data they need
        run-tests.sh     optional: a bash check script, used when tests/ has no test_*.py
        solution.sh      optional: reference commands that pass the checks

``TASKS_DIR`` may also be a single task folder. Checks must use paths relative to the
working directory (the sandbox decides where that directory is mounted).

Columns: ``task_id``, ``task_dir`` (absolute path), ``instruction``, ``difficulty``,
``max_test_timeout_sec`` and ``max_agent_timeout_sec`` (floats).

How a terminal answer is executed (:func:`run_terminal_task`)
=============================================================

1. A fresh temporary folder gets ``work/`` (a copy of ``environment/``).
2. The model's commands run in the sandbox with ``work/`` as the working directory.
   That sandbox run ends with every process it started.
3. Only then does a second, separate sandbox run execute the checks, from a fresh read-only
   copy of the task's own files, with ``work/`` as the working directory; the verdict leaves
   through a keyed channel that the programs the checks start cannot reach
   (:mod:`autolearn.terminal_checks` has the details):

   * ``tests/test_*.py``: pytest, with ``-I``, ``--noconftest``, ``-p no:cacheprovider`` and
     our own ini file. The reward is passed test cases / all test cases; a pytest that did not
     exit normally (interrupted, crashed, killed, timed out, nothing collected) passes none.
   * otherwise ``run-tests.sh`` runs under bash with ``TEST_DIR`` (the copy of ``tests/``),
     ``PYTHON`` and ``PYTEST`` (the hardened pytest command) in its environment; its exit
     status is one check (a report it writes could be forged by what it runs, so
     ``JUNIT_XML`` is ``/dev/null``).
   * with neither, the reward is 1.0 when every command exited 0 (tracked with an ERR trap;
     a weak signal by nature, since ``cmd || true`` always "succeeds").

   Checks that pass on the untouched environment (the input is unchanged) earn nothing
   until the commands make some other check pass (``require_progress``): doing nothing
   scores 0.

   Pytest files win over ``run-tests.sh`` because Terminal-Bench's ``run-tests.sh`` mostly
   installs pytest with uv or pip, which an offline sandbox cannot do.

Timeouts are the task's own, capped at 60 s for the commands and 120 s for the checks.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from autolearn.cli import naming, plural
from autolearn.diffs import DiffError, parse_patch
from autolearn.errors import UserError, one_line
from autolearn.jsonl import read_local_rows, read_text
from autolearn.terminal_checks import run_checks

if TYPE_CHECKING:
    from datasets import Dataset

    from autolearn.sandbox.shell_observation import Observation

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
SWE_SAMPLE_FILE = EXAMPLES_DIR / "swe_sample.jsonl"
TERMINAL_TASKS_DIR = EXAMPLES_DIR / "terminal_tasks"
FIXTURE_REPO_SOURCE = EXAMPLES_DIR / "swe_repo"
FIXTURE_REPO = "autolearn/textkit"
# The commit materialize_fixture_repo() creates: same files + fixed identity and date
# + no user or system git config => the same SHA on every machine.
FIXTURE_BASE_COMMIT = "aa047b36cefb05b8398b862660809177deeaca76"
FIXTURE_TAG = "base"

BENCHMARKS = ("swe-lite", "swe-verified", "terminal")
SWE_HUB_DATASETS = {
    "swe-lite": "princeton-nlp/SWE-bench_Lite",
    "swe-verified": "princeton-nlp/SWE-bench_Verified",
}
SWE_REQUIRED = ("instance_id", "repo", "base_commit", "patch", "problem_statement")
SWE_OPTIONAL = (
    "test_patch",
    "hints_text",
    "FAIL_TO_PASS",
    "PASS_TO_PASS",
    "version",
    "environment_setup_commit",
    "created_at",
)
SWE_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
DEFAULT_MAX_FILE_CHARS = 16_000
DEFAULT_TEST_TIMEOUT_S = 30.0
DEFAULT_AGENT_TIMEOUT_S = 30.0
MAX_LISTED_FILES = 40
GIT_TIMEOUT_S = 60.0
ENVIRONMENT_SKIP = ("Dockerfile", "docker-compose.yaml", "docker-compose.yml")

SWE_SYSTEM_PROMPT = (
    "You are an expert software engineer fixing an issue in a code repository. Answer with "
    "one unified diff, as `git diff` prints it, inside a ```diff code block: a '--- a/PATH' "
    "and '+++ b/PATH' header per file (paths relative to the repository root) and '@@' "
    "hunks whose line counts match their content. Change only what the fix needs."
)
TERMINAL_SYSTEM_PROMPT = (
    "You are an expert Linux user working in a bash shell. Complete the task by writing the "
    "shell commands to run, in one ```bash code block. They run non-interactively, in order, "
    "in the task's working directory, without network access; do not use interactive "
    "programs such as editors or pagers."
)


# --------------------------------------------------------------------------- SWE-bench


def load_swe_bench(
    source: str = "swe-lite",
    *,
    max_samples: int | None = None,
    repos_dir: str | Path | None = None,
    max_file_chars: int = DEFAULT_MAX_FILE_CHARS,
) -> Dataset:
    """SWE-bench instances as a training dataset (columns: see the module docstring).

    ``source`` is ``swe-lite`` or ``swe-verified`` (the hub test splits, 300 and 500
    instances) or a path to a .jsonl/.json/.parquet file with the official schema.
    ``max_samples`` keeps the first N instances. ``repos_dir`` adds the touched files'
    content at ``base_commit`` to each prompt.
    """
    from datasets import Dataset

    _check_max_samples(max_samples)
    rows = _read_swe_rows(source)
    if max_samples is not None:
        _warn_if_fewer(len(rows), max_samples, "SWE-bench instances")
        rows = rows[:max_samples]
    repos_root = _existing_dir(repos_dir, "--repos_dir") if repos_dir is not None else None
    if repos_root is not None:
        _warn_missing_clones(rows, repos_root)
    records = [_swe_record(row, repos_root, max_file_chars) for row in rows]
    logger.info("loaded %s from %s", plural(len(records), "SWE-bench instance"), source)
    return Dataset.from_list(records)


def read_swe_file(path: str | Path) -> list[dict[str, str]]:
    """Read and validate a local SWE-bench file; raise :class:`UserError` on bad data."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"SWE-bench file not found: {file}")
    if file.suffix not in SWE_LOCAL_SUFFIXES:
        raise UserError(f"{file}: unsupported format (use {', '.join(SWE_LOCAL_SUFFIXES)})")
    rows = read_local_rows(file, "SWE-bench instances")
    return [_validated_swe_row(row, f"{file}: {where}", strict=True) for where, row in rows]


def _read_swe_rows(source: str) -> list[dict[str, str]]:
    if source in SWE_HUB_DATASETS:
        return _read_swe_hub(SWE_HUB_DATASETS[source])
    if source.endswith(SWE_LOCAL_SUFFIXES) or Path(source).exists():
        return read_swe_file(source)
    raise UserError(
        f"unknown SWE-bench source {source!r}: use {' or '.join(SWE_HUB_DATASETS)} "
        f"or a path to a {'/'.join(SWE_LOCAL_SUFFIXES)} file"
    )


def _read_swe_hub(name: str) -> list[dict[str, str]]:
    """Load a hub test split; keep valid rows (a warning names the skipped ones)."""
    from autolearn.data import load_hub_dataset

    table = load_hub_dataset(name, None, "test")  # offline: the cache, or one clear line at once
    rows, skipped = [], []
    for index, row in enumerate(table):
        try:
            rows.append(_validated_swe_row(dict(row), f"{name} row {index}", strict=False))
        except UserError as exc:
            skipped.append(str(exc))
    if skipped:
        logger.warning("skipped %d hub rows: %s", len(skipped), "; ".join(skipped[:3]))
    if not rows:
        raise UserError(f"{name}: no usable SWE-bench instances")
    return rows


def _validated_swe_row(row: Any, where: str, *, strict: bool) -> dict[str, str]:
    """Check one instance; return it with every official column as a string."""
    if not isinstance(row, Mapping):
        raise UserError(f"{where}: expected an object with the SWE-bench columns")
    missing = [key for key in SWE_REQUIRED if not isinstance(row.get(key), str) or not row[key]]
    if missing:
        raise UserError(f"{where}: missing or empty {naming('column', missing)}")
    where = f"{where} ({row['instance_id']})"
    try:
        parse_patch(row["patch"])
    except DiffError as exc:
        raise UserError(f"{where}: the gold 'patch' is not a valid unified diff: {exc}") from None
    clean = {key: row[key] for key in SWE_REQUIRED}
    for key in SWE_OPTIONAL:
        value = row.get(key)
        if value is None:
            value = ""
        elif isinstance(value, list | tuple):
            value = json.dumps(list(value))
        elif not isinstance(value, str):
            if strict:
                raise UserError(f"{where}: column {key!r} must be a string")
            value = str(value)
        clean[key] = value
    return clean


def _swe_record(
    row: dict[str, str], repos_root: Path | None, max_file_chars: int
) -> dict[str, Any]:
    files: dict[str, str] = {}
    if repos_root is not None:
        files = gold_file_contents(repos_root, row["repo"], row["base_commit"], row["patch"])
        files = {path: _clip(text, max_file_chars) for path, text in files.items()}
    return {
        "prompt": swe_prompt(row["repo"], row["problem_statement"], files),
        **row,
        "repos_dir": str(repos_root) if repos_root is not None else "",
    }


def _warn_missing_clones(rows: Sequence[Mapping[str, str]], repos_root: Path) -> None:
    """One warning for all the instances whose repository has no clone under ``repos_root``."""
    missing = Counter(row["repo"] for row in rows if find_repo(repos_root, row["repo"]) is None)
    if missing:
        logger.warning(
            "no clone under %s for %s of %d (%s): their prompts have no file contents "
            "and their patches are not checked to apply",
            repos_root,
            plural(sum(missing.values()), "instance"),
            len(rows),
            ", ".join(f"{repo} x{count}" for repo, count in missing.most_common(5))
            + (f" and {plural(len(missing) - 5, 'more repository', 'more repositories')}"
               if len(missing) > 5 else ""),
        )  # fmt: skip


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters not shown ...]\n"


def swe_prompt(repo: str, problem_statement: str, files: Mapping[str, str]) -> list[dict[str, str]]:
    """Chat prompt asking for a unified diff that resolves the issue."""
    parts = [f"Repository: {repo}", "", "<issue>", problem_statement.strip(), "</issue>"]
    if files:
        parts += ["", "<code>"]
        for path, text in files.items():
            parts += [f"[start of {path}]", text.rstrip("\n"), f"[end of {path}]"]
        parts.append("</code>")
    parts += [
        "",
        "Write a patch in unified diff format (as `git diff` prints it) that resolves the issue.",
    ]
    return [
        {"role": "system", "content": SWE_SYSTEM_PROMPT},
        {"role": "user", "content": "\n".join(parts)},
    ]


def find_repo(repos_dir: str | Path, repo: str) -> Path | None:
    """The local git clone of ``owner/name`` under ``repos_dir``, or ``None``."""
    owner, _, name = repo.partition("/")
    root = Path(repos_dir)
    for candidate in (root / f"{owner}__{name}", root / owner / name, root / (name or owner)):
        if (candidate / ".git").exists():
            return candidate
    return None


def gold_file_contents(repos_dir: str | Path, repo: str, commit: str, patch: str) -> dict[str, str]:
    """Content at ``commit`` of each file the patch touches (new files are skipped)."""
    clone = find_repo(repos_dir, repo)
    if clone is None:  # load_swe_bench warns once for all such instances
        return {}
    contents = {}
    for section in parse_patch(patch).files:
        if section.old_path is None:
            continue
        text = read_file_at_commit(clone, commit, section.old_path)
        if text is None:
            logger.warning("%s: %s not found at %s", repo, section.old_path, commit[:12])
        else:
            contents[section.old_path] = text
    return contents


def read_file_at_commit(clone: Path, commit: str, path: str) -> str | None:
    """``git show COMMIT:PATH`` as text, or ``None`` if the commit or path is missing."""
    result = _git(clone, "show", f"{commit}:{path}", check=False)
    if result.returncode != 0:
        return None
    return result.stdout.decode("utf-8", "replace")


def has_commit(clone: Path, commit: str) -> bool:
    """True when ``commit`` names a commit in the clone."""
    return _git(clone, "cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode == 0


def patch_applies(clone: Path, commit: str, patch_text: str) -> bool:
    """``git apply --check`` of the patch against the tree of ``commit``.

    The check runs against a throw-away index (``GIT_INDEX_FILE`` + ``read-tree`` +
    ``apply --cached``), which is what a temporary worktree at ``commit`` would see,
    without checking out thousands of files per completion or touching the clone.
    """
    with tempfile.TemporaryDirectory(prefix="autolearn-apply-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        if _git(clone, "read-tree", commit, env=env, check=False).returncode != 0:
            return False
        result = _git(
            clone, "apply", "--check", "--cached", "-", env=env, stdin=patch_text, check=False
        )
        return result.returncode == 0


def _git(
    repo: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, **_GIT_ENV, **(env or {})}
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        input=stdin.encode() if stdin is not None else None,
        capture_output=True,
        env=full_env,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    if check and result.returncode != 0:
        message = one_line(result.stderr.decode("utf-8", "replace"))[:200]
        raise UserError(f"git {args[0]} failed in {repo}: {message}")
    return result


# Deterministic commits: nothing from the user's or system's git config, fixed identity.
_GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "AutoLearn Fixtures",
    "GIT_AUTHOR_EMAIL": "fixtures@autolearn.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00",
    "GIT_COMMITTER_NAME": "AutoLearn Fixtures",
    "GIT_COMMITTER_EMAIL": "fixtures@autolearn.invalid",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00",
    "GIT_TERMINAL_PROMPT": "0",
}
_FIXTURE_IGNORED = ("__pycache__", ".pytest_cache", "*.pyc", ".mypy_cache", ".ruff_cache")


def materialize_fixture_repo(repos_dir: str | Path) -> Path:
    """Turn ``examples/swe_repo`` into a git clone under ``repos_dir`` and return its path.

    The clone lands where :func:`find_repo` looks for ``autolearn/textkit``
    (``REPOS_DIR/autolearn__textkit``) and holds one commit, tagged ``base``, whose SHA is
    :data:`FIXTURE_BASE_COMMIT` on every machine: the files are added without executable
    bits, and the author, committer, dates and config are fixed. Calling it again on an
    existing clone only checks that the commit is there.
    """
    owner, name = FIXTURE_REPO.split("/")
    clone = Path(repos_dir) / f"{owner}__{name}"
    if (clone / ".git").exists():
        if not has_commit(clone, FIXTURE_BASE_COMMIT):
            raise UserError(f"{clone} exists but lacks fixture commit {FIXTURE_BASE_COMMIT}")
        return clone
    shutil.copytree(FIXTURE_REPO_SOURCE, clone, ignore=shutil.ignore_patterns(*_FIXTURE_IGNORED))
    _git(clone, "init", "--quiet", "--initial-branch=main")
    _git(clone, "add", "--all", "--chmod=-x", ".")
    _git(clone, "commit", "--quiet", "--no-verify", "-m", "textkit 0.1.0")
    _git(clone, "tag", FIXTURE_TAG)
    head = _git(clone, "rev-parse", "HEAD").stdout.decode().strip()
    if head != FIXTURE_BASE_COMMIT:
        logger.warning(
            "fixture repo commit is %s, expected %s: examples/swe_repo was modified",
            head,
            FIXTURE_BASE_COMMIT,
        )
    return clone


# --------------------------------------------------------------------------- Terminal-Bench


@dataclass(frozen=True)
class TerminalTask:
    """One validated task folder."""

    task_id: str
    task_dir: Path
    instruction: str
    difficulty: str
    max_test_timeout_sec: float
    max_agent_timeout_sec: float

    @property
    def environment_dir(self) -> Path | None:
        """The starting files, if the task has any."""
        folder = self.task_dir / "environment"
        return folder if folder.is_dir() else None

    @property
    def pytest_files(self) -> list[Path]:
        """The task's pytest files (``tests/test_*.py``)."""
        tests = self.task_dir / "tests"
        return sorted(tests.glob("test_*.py")) if tests.is_dir() else []

    @property
    def run_tests_script(self) -> Path | None:
        """``run-tests.sh`` if present."""
        script = self.task_dir / "run-tests.sh"
        return script if script.is_file() else None

    @property
    def solution(self) -> str | None:
        """The reference commands of ``solution.sh``, if present."""
        script = self.task_dir / "solution.sh"
        return script.read_text(encoding="utf-8") if script.is_file() else None


def load_terminal_bench(
    tasks_dir: str | Path = TERMINAL_TASKS_DIR, *, max_samples: int | None = None
) -> Dataset:
    """Terminal-Bench tasks as a training dataset (columns: see the module docstring).

    ``tasks_dir`` holds one folder per task (sorted by name; ``max_samples`` keeps the
    first N), or is itself a task folder.
    """
    from datasets import Dataset

    _check_max_samples(max_samples)
    tasks = read_terminal_tasks(tasks_dir)
    if max_samples is not None:
        _warn_if_fewer(len(tasks), max_samples, "Terminal-Bench tasks")
        tasks = tasks[:max_samples]
    records = [
        {
            "prompt": terminal_prompt(task),
            "task_id": task.task_id,
            "task_dir": str(task.task_dir),
            "instruction": task.instruction,
            "difficulty": task.difficulty,
            "max_test_timeout_sec": task.max_test_timeout_sec,
            "max_agent_timeout_sec": task.max_agent_timeout_sec,
        }
        for task in tasks
    ]
    bundled = Path(tasks_dir).resolve() == TERMINAL_TASKS_DIR.resolve()
    logger.info(
        "loaded %s from %s%s",
        plural(len(records), "Terminal-Bench task"),
        tasks_dir,
        " (the bundled examples: Terminal-Bench tasks are not on the hub; --tasks_dir DIR "
        "uses your own)"
        if bundled
        else "",
    )
    return Dataset.from_list(records)


def read_terminal_tasks(tasks_dir: str | Path) -> list[TerminalTask]:
    """Read and validate every task folder under ``tasks_dir``."""
    root = _existing_dir(tasks_dir, "Terminal-Bench tasks directory")
    if (root / "task.yaml").is_file():
        return [read_terminal_task(root)]
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    tasks = [read_terminal_task(folder) for folder in folders if (folder / "task.yaml").exists()]
    if not tasks:
        raise UserError(f"{root}: no task folders with a task.yaml")
    return tasks


def read_terminal_task(task_dir: str | Path) -> TerminalTask:
    """Read one task folder; raise :class:`UserError` naming the first problem."""
    folder = Path(task_dir).resolve()
    spec_file = folder / "task.yaml"
    if not spec_file.is_file():
        raise UserError(f"{folder}: missing task.yaml")
    text = read_text(spec_file)
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{spec_file}: invalid YAML ({one_line(str(exc))[:120]})") from None
    if not isinstance(spec, dict):
        raise UserError(f"{spec_file}: expected a mapping with 'instruction' and 'difficulty'")
    for key in ("instruction", "difficulty"):
        if not isinstance(spec.get(key), str) or not spec[key].strip():
            raise UserError(f"{spec_file}: '{key}' must be a non-empty string")
    for name in ("tests", "environment"):
        if (folder / name).exists() and not (folder / name).is_dir():
            raise UserError(f"{folder / name}: expected a folder")
    return TerminalTask(
        task_id=folder.name,
        task_dir=folder,
        instruction=spec["instruction"].strip(),
        difficulty=spec["difficulty"].strip(),
        max_test_timeout_sec=_timeout(
            spec, "max_test_timeout_sec", DEFAULT_TEST_TIMEOUT_S, spec_file
        ),
        max_agent_timeout_sec=_timeout(
            spec, "max_agent_timeout_sec", DEFAULT_AGENT_TIMEOUT_S, spec_file
        ),
    )


def _timeout(spec: Mapping[str, Any], key: str, default: float, spec_file: Path) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise UserError(f"{spec_file}: '{key}' must be a positive number of seconds")
    return float(value)


def terminal_prompt(task: TerminalTask) -> list[dict[str, str]]:
    """Chat prompt asking for shell commands that complete the task."""
    listing = _environment_listing(task.environment_dir)
    files = "\n".join(f"  {entry}" for entry in listing) if listing else "  (empty)"
    user = (
        f"Task:\n{task.instruction}\n\n"
        f"Files in the working directory:\n{files}\n\n"
        "Reply with the commands in one ```bash code block."
    )
    return [
        {"role": "system", "content": TERMINAL_SYSTEM_PROMPT},
        {"role": "user", "content": user},
    ]


def _environment_listing(environment: Path | None) -> list[str]:
    if environment is None:
        return []
    entries = []
    for path in sorted(environment.rglob("*")):
        relative = path.relative_to(environment)
        if relative.parts[0] in ENVIRONMENT_SKIP:
            continue
        entries.append(f"{relative}/" if path.is_dir() else str(relative))
    if len(entries) > MAX_LISTED_FILES:
        hidden = len(entries) - MAX_LISTED_FILES
        entries = [*entries[:MAX_LISTED_FILES], f"... and {hidden} more"]
    return entries


# --------------------------------------------------------------------------- execution


@dataclass(frozen=True)
class TaskRun:
    """Outcome of running a model's commands on a task and checking the end state.

    ``progress``: some check passes that fails on the untouched environment (for a task
    without checks: every command exited 0). ``reward`` is ``checks_passed / checks_total``
    when there is progress (or ``require_progress`` was off), else 0.0.
    """

    reward: float
    checks_passed: int
    checks_total: int
    commands_status: str
    checks_status: str
    message: str = ""
    progress: bool = True


def run_terminal_task(
    task_dir: str | Path,
    commands: str,
    *,
    agent_timeout_s: float | None = None,
    test_timeout_s: float | None = None,
    max_agent_timeout_s: float = 60.0,
    max_test_timeout_s: float = 120.0,
    require_progress: bool = True,
) -> TaskRun:
    """Run ``commands`` in a fresh copy of the task's environment, then check it.

    The caller is responsible for refusing dangerous commands first (see
    :mod:`autolearn.shell_safety`); this function only runs them inside the sandbox.
    Timeouts default to the task's own, capped by the ``max_*`` arguments. Checks that
    already pass on the untouched environment (``sales.csv`` is unchanged) earn nothing
    until some other check passes too, unless ``require_progress`` is off.
    """
    from autolearn.sandbox import Limits, run_shell
    from autolearn.sandbox.workdir import workdir_mb_for

    task = read_terminal_task(task_dir)
    agent_timeout = min(agent_timeout_s or task.max_agent_timeout_sec, max_agent_timeout_s)
    test_timeout = min(test_timeout_s or task.max_test_timeout_sec, max_test_timeout_s)
    with tempfile.TemporaryDirectory(prefix="autolearn-task-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp) / "work"
        _copy_environment(task, work)
        script = _commands_script(commands)
        limits = Limits(timeout_s=agent_timeout, memory_mb=2048, workdir_mb=workdir_mb_for(work))
        first = run_shell(script, work, limits=limits)
        checks = run_checks(task, work, test_timeout)
    if checks is None:
        ok = first.passed
        return TaskRun(float(ok), int(ok), 1, first.status, "none", first.message, ok)
    baseline = _baseline_passes(str(task.task_dir), test_timeout)
    progress = bool(checks.passed - baseline)
    reward = len(checks.passed) / checks.total if checks.total else 0.0
    if require_progress and not progress:
        reward = 0.0
    return TaskRun(
        reward,
        len(checks.passed),
        checks.total,
        first.status,
        checks.status,
        checks.message,
        progress,
    )


def observe_terminal_task(
    task_dir: str | Path, commands: str, *, max_agent_timeout_s: float = 60.0
) -> Observation:
    """Run ``commands`` on a fresh copy of the task's environment where their effects
    outside it are visible (:mod:`autolearn.sandbox.shell_observation`) and report them."""
    from autolearn.sandbox.shell_observation import observe_shell

    task = read_terminal_task(task_dir)
    timeout = min(task.max_agent_timeout_sec, max_agent_timeout_s)
    with tempfile.TemporaryDirectory(prefix="autolearn-task-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp) / "work"
        _copy_environment(task, work)
        return observe_shell(_commands_script(commands), work, timeout_s=timeout)


@functools.lru_cache(maxsize=256)
def _baseline_passes(task_dir: str, timeout_s: float) -> frozenset[str]:
    """The checks that pass on the task's untouched environment (one run per task)."""
    task = read_terminal_task(task_dir)
    with tempfile.TemporaryDirectory(prefix="autolearn-task-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp) / "work"
        _copy_environment(task, work)
        checks = run_checks(task, work, timeout_s)
    return checks.passed if checks is not None else frozenset()


def _copy_environment(task: TerminalTask, work: Path) -> None:
    if task.environment_dir is None:
        work.mkdir()
        return
    shutil.copytree(
        task.environment_dir, work, symlinks=True, ignore=shutil.ignore_patterns(*ENVIRONMENT_SKIP)
    )


def _commands_script(commands: str) -> str:
    """Run the commands like a terminal session (a failure does not stop the rest) while
    remembering whether any command failed: the exit status says so."""
    return (
        "__autolearn_failed=0\n"
        "set -o errtrace\n"
        "trap '__autolearn_failed=1' ERR\n"
        "trap 'exit $(( __autolearn_failed || $? ))' EXIT\n"
        f"{commands}\n"
    )


# --------------------------------------------------------------------------- dispatch


def load_benchmark(
    benchmark: str,
    *,
    max_samples: int | None = None,
    data_file: str | Path | None = None,
    repos_dir: str | Path | None = None,
    tasks_dir: str | Path | None = None,
) -> Dataset:
    """Dataset for ``swe-lite``, ``swe-verified`` or ``terminal``.

    ``data_file`` replaces the hub for the SWE-bench names; ``tasks_dir`` defaults to the
    bundled ``examples/terminal_tasks`` (Terminal-Bench has no hub dataset), and the log says
    so. A source of the other benchmark is an error rather than silently unused.
    """
    check_sources(benchmark, data_file=data_file, repos_dir=repos_dir, tasks_dir=tasks_dir)
    if benchmark in SWE_HUB_DATASETS:
        source = str(data_file) if data_file is not None else benchmark
        return load_swe_bench(source, max_samples=max_samples, repos_dir=repos_dir)
    return load_terminal_bench(tasks_dir or TERMINAL_TASKS_DIR, max_samples=max_samples)


def check_sources(
    benchmark: str,
    *,
    data_file: str | Path | None = None,
    repos_dir: str | Path | None = None,
    tasks_dir: str | Path | None = None,
) -> None:
    """Refuse a source the benchmark would not read (a SWE-bench file for terminal, ...)."""
    family = benchmark_family(benchmark)
    if family == "terminal":
        for flag, value in (("--data_file", data_file), ("--repos_dir", repos_dir)):
            if value is not None:
                raise UserError(
                    f"{flag} is for SWE-bench, not terminal: Terminal-Bench tasks come from "
                    "--tasks_dir DIR (default: the bundled examples/terminal_tasks)"
                )
    elif tasks_dir is not None:
        raise UserError(
            f"--tasks_dir is for Terminal-Bench, not {benchmark}: a local SWE-bench file is "
            "--data_file FILE"
        )


def benchmark_family(benchmark: str) -> str:
    """``swe`` or ``terminal`` (which reward set a benchmark uses)."""
    if benchmark in SWE_HUB_DATASETS:
        return "swe"
    if benchmark == "terminal":
        return "terminal"
    raise UserError(f"unknown benchmark {benchmark!r}: choose one of {', '.join(BENCHMARKS)}")


def _check_max_samples(max_samples: int | None) -> None:
    if max_samples is not None and max_samples < 1:
        raise UserError(f"--max_samples must be at least 1, got {max_samples}")


def _warn_if_fewer(available: int, max_samples: int, what: str) -> None:
    if available < max_samples:
        logger.warning(
            "--max_samples %d: there are only %d %s, and all of them are used",
            max_samples,
            available,
            what,
        )


def _existing_dir(path: str | Path, what: str) -> Path:
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"{what} not found: {folder}")
    return folder


__all__: Sequence[str] = (
    "BENCHMARKS",
    "FIXTURE_BASE_COMMIT",
    "FIXTURE_REPO",
    "SWE_SAMPLE_FILE",
    "TERMINAL_TASKS_DIR",
    "TaskRun",
    "TerminalTask",
    "benchmark_family",
    "find_repo",
    "gold_file_contents",
    "load_benchmark",
    "load_swe_bench",
    "load_terminal_bench",
    "materialize_fixture_repo",
    "observe_terminal_task",
    "patch_applies",
    "read_swe_file",
    "read_terminal_task",
    "read_terminal_tasks",
    "run_terminal_task",
    "swe_prompt",
    "terminal_prompt",
)
