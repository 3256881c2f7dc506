"""Fuzz: every reward returns a number in its range (or None) for random, hostile and binary
completions, and never raises.

The pure rewards (math, syntax/lint/complexity, SWE, terminal format and static safety) see a
few thousand completions each; the rewards that run code in the sandbox see a small sample of
the same generator, so the file stays at seconds on two cores.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

import bench_rewards
import code_rewards
import rewards
from autolearn.benchmarks import SWE_SAMPLE_FILE, TERMINAL_TASKS_DIR, read_swe_file
from autolearn.sandbox import Limits

pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning", "ignore::DeprecationWarning")

SEED = 1313
MANY = 3000
FEW = 12

FRAGMENTS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<answer>42</answer>",
    "\\boxed{",
    "}",
    "\\boxed{\\frac{1}{2}}",
    "####",
    "#### 7",
    "The answer is",
    "1 + 1 = 3",
    "12 * 7 = 84",
    "9" * 400,
    "-0",
    "1e308",
    "nan",
    "inf",
    "$",
    "%",
    "1/0 = 2",
    "(((((",
    ")))))",
    "```python\n",
    "```bash\n",
    "```diff\n",
    "```\n",
    "\n",
    "\t",
    " ",
    "\x00",
    "\ufffd",
    "\ud800",
    "def f(:\n",
    "def f():\n    return 1\n",
    "import os\nos._exit(0)\n",
    "    pass\n",
    "while True: pass\n",
    "raise SystemExit\n",
    "--- a/textkit/slug.py\n+++ b/textkit/slug.py\n",
    "@@ -1,3 +1,3 @@\n",
    "-x\n+y\n",
    "diff --git a/x b/x\n",
    "GIT binary patch\nliteral 0\n",
    "--- /dev/null\n+++ b/../../etc\n",
    '--- "a/\\777"\n',
    "<command>",
    "</command>",
    "rm -rf /",
    "bash <<< $(echo x | base64 -d)",
    "$((",
    "${",
    "${IFS}",
    "$'\\x72'",
    "`",
    "'",
    '"',
    "<<EOF\n",
    "EOF\n",
    "|",
    "&",
    ";",
    ":(){ :|:& };:",
    "find / -exec rm {} \\;",
    "kill -9 $((0-1))",
    "python3 -c 'x'",
    "__ALSUB0__",
    "__ALUNRES__",
    "é" * 50,
    "😀" * 20,
    "\r\n",
    "\\",
    "\\\\x",
]


def _random_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.25:  # printable noise
        return "".join(
            rng.choice("abcxyz0123456789 +-*/=()<>{}$#@!\n\t'\"`\\|&;")
            for _ in range(rng.randint(0, 300))
        )
    if kind < 0.4:  # binary data, as a tokenizer might decode it
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400)))
        return data.decode("utf-8", "surrogateescape" if rng.random() < 0.5 else "replace")
    if kind < 0.5:  # random code points, including surrogates and controls
        return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 60)))
    pieces = rng.choices(FRAGMENTS, k=rng.randint(1, 25))
    return "".join(pieces)


def _completion(rng: random.Random) -> Any:
    text = _random_text(rng)
    shape = rng.random()
    if shape < 0.8:
        return text
    if shape < 0.9:
        return [{"role": "assistant", "content": text}]
    blocks = [{"type": "text", "text": text}, {"type": "image"}, "junk"]
    content = rng.choice([None, "", blocks])
    return [{"role": "assistant", "content": content}, {"role": "user", "content": text}]


def completions(count: int, seed: int = SEED) -> list[Any]:
    rng = random.Random(seed)
    return [_completion(rng) for _ in range(count)]


def assert_in_range(values: Sequence[float | None], count: int, high: float = 1.0) -> None:
    assert len(values) == count
    for value in values:
        if value is None:
            continue
        assert isinstance(value, int | float) and not isinstance(value, bool), value
        assert math.isfinite(value) and -1e-9 <= value <= high + 1e-9, value


def run_reward(
    reward: Callable[..., Sequence[float | None]], texts: list[Any], **columns: Any
) -> list[float | None]:
    size = len(texts)
    broadcast = {k: [v] * size if not isinstance(v, list) else v for k, v in columns.items()}
    return list(reward(["Tom has 12 apples and buys 7 more."] * size, texts, **broadcast))


# --------------------------------------------------------------------------- math


@pytest.mark.parametrize("name", sorted(rewards.REWARDS))
def test_math_rewards_survive_fuzz(name: str) -> None:
    texts = completions(MANY)
    gold = ["#### 19", "19", "-3.5", "1/2", "", "\\frac{1}{2}", "nan"]
    answers = [gold[i % len(gold)] for i in range(len(texts))]
    high = sum(rewards.DEFAULT_WEIGHTS.values()) if name == "combined" else 1.0
    for gate in (True, False):
        values = rewards.REWARDS[name](["q"] * len(texts), texts, answer=answers, gate=gate)
        assert_in_range(values, len(texts), high)


# --------------------------------------------------------------------------- code

CODE_COLUMNS = {
    "code_prompt": "def add(a, b):\n",
    "entry_point": "add",
    "test_code": "assert add(1, 2) == 3\nassert add(0, 0) == 0\n",
}
FUZZ_LIMITS = Limits(timeout_s=2.0)
CODE_REWARDS = code_rewards.build_rewards(FUZZ_LIMITS)


@pytest.mark.parametrize("name", ["syntax", "complexity", "lint"])
def test_static_code_rewards_survive_fuzz(name: str) -> None:
    texts = completions(MANY if name != "lint" else 400, seed=SEED + 1)
    columns = {"code_prompt": CODE_COLUMNS["code_prompt"], "entry_point": "add"}
    assert_in_range(run_reward(CODE_REWARDS[name], texts, **columns), len(texts))


def test_type_safety_survives_fuzz() -> None:
    texts = completions(40, seed=SEED + 2)
    columns = {"code_prompt": CODE_COLUMNS["code_prompt"], "entry_point": "add"}
    assert_in_range(run_reward(CODE_REWARDS["type_safety"], texts, **columns), len(texts))


@pytest.mark.parametrize("name", ["test_pass", "execution", "performance", "lint"])
def test_sandboxed_code_rewards_survive_fuzz(name: str) -> None:
    texts = [*completions(FEW, seed=SEED + 3), "    return a + b\n"]  # the last one passes
    columns = {**CODE_COLUMNS, "reference_solution": "def add(a, b):\n    return a + b\n"}
    values = run_reward(CODE_REWARDS[name], texts, **columns)
    assert_in_range(values, len(texts))
    if name in ("test_pass", "execution"):
        assert values[-1] == 1.0  # positive control


# --------------------------------------------------------------------------- SWE and terminal

SWE_ROWS = read_swe_file(SWE_SAMPLE_FILE)


@pytest.mark.parametrize("name", ["swe_format", "swe_similarity", "swe_files"])
def test_swe_rewards_survive_fuzz(name: str) -> None:
    texts = completions(MANY, seed=SEED + 4)
    patches = [SWE_ROWS[i % len(SWE_ROWS)]["patch"] for i in range(len(texts))]
    values = run_reward(bench_rewards.REWARDS[name], texts, patch=patches)
    assert_in_range(values, len(texts))
    gold = run_reward(
        bench_rewards.REWARDS[name], [f"```diff\n{p}```" for p in patches[:6]], patch=patches[:6]
    )
    assert gold == [1.0] * 6  # positive control


def test_terminal_format_and_static_safety_survive_fuzz() -> None:
    texts = completions(MANY, seed=SEED + 5)
    assert_in_range(run_reward(bench_rewards.terminal_format, texts), len(texts))
    values = run_reward(bench_rewards.terminal_safety, texts, gate=False)
    assert_in_range(values, len(texts))


def test_sandboxed_terminal_rewards_survive_fuzz() -> None:
    task = str(TERMINAL_TASKS_DIR / "count-log-errors")
    solution = (TERMINAL_TASKS_DIR / "count-log-errors" / "solution.sh").read_text()
    rng = random.Random(SEED + 6)
    texts = [f"```bash\n{_random_text(rng)}\n```" for _ in range(FEW)] + [f"```bash\n{solution}```"]
    for name in ("terminal_safety", "terminal_execution"):
        values = run_reward(bench_rewards.REWARDS[name], texts, task_dir=task)
        assert_in_range(values, len(texts))
        assert values[-1] == 1.0, name  # positive control
