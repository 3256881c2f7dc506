"""reasoning-gym tasks (rg:NAME): loading, disjoint splits, scoring by the generator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import rewards
from autolearn.errors import UserError
from autolearn.procedural import build_procedural_splits, inert_answer, score_answer

ROOT = Path(__file__).resolve().parents[1]


def chat(text: str) -> list[list[dict[str, str]]]:
    return [[{"role": "assistant", "content": text}]]


def test_heldout_set_has_the_size_asked_for_when_questions_repeat() -> None:
    two_terms = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}
    train, held = build_procedural_splits(
        "rg:chain_sum", train_size=500, eval_size=40, seed=0, options=two_terms
    )
    assert held is not None and len(held) == 40 and len(set(held["question"])) == 40
    assert set(held["question"]).isdisjoint(train["question"])


def test_heldout_draws_stop_when_a_task_runs_out_of_distinct_questions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    one_digit = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    train, held = build_procedural_splits(
        "rg:chain_sum", train_size=300, eval_size=200, seed=0, options=one_digit
    )  # 2 x 10 x 10 distinct questions at most, most of them in training
    assert held is not None and 0 < len(held) < 200
    assert len(set(held["question"])) == len(held)
    assert set(held["question"]).isdisjoint(train["question"])
    assert "distinct held-out problems" in caplog.text


@pytest.mark.parametrize("name", ["basic_arithmetic", "chain_sum", "gsm_symbolic", "countdown"])
def test_generators_load_split_disjointly_and_score_their_own_answers(name: str) -> None:
    train, held = build_procedural_splits(f"rg:{name}", train_size=12, eval_size=6, seed=5)
    assert held is not None and len(train) == 12 and len(held) == 6
    assert set(held["question"]).isdisjoint(train["question"])
    train_seeds = {json.loads(e)["metadata"]["source_index"] for e in train["rg_entry"]}
    held_seeds = {json.loads(e)["metadata"]["source_index"] for e in held["rg_entry"]}
    assert train_seeds == set(range(12)) and held_seeds <= set(
        range(6)
    )  # index within each seed range
    row = held[0]
    assert row["prompt"][-1] == {"role": "user", "content": row["question"].strip()}
    right = rewards.correctness(
        None, chat(f"<think>x</think>\n<answer>{row['answer']}</answer>"), [row["answer"]],
        [row["rg_task"]], [row["rg_entry"]],
    )  # fmt: skip
    wrong = rewards.correctness(
        None, chat("<think>x</think>\n<answer>no idea</answer>"), [row["answer"]],
        [row["rg_task"]], [row["rg_entry"]],
    )  # fmt: skip
    assert right == [1.0] and wrong[0] < 1.0


def test_same_seed_gives_the_same_problems_and_another_seed_others() -> None:
    first, _ = build_procedural_splits("rg:basic_arithmetic", train_size=8, eval_size=0, seed=1)
    again, _ = build_procedural_splits("rg:basic_arithmetic", train_size=8, eval_size=0, seed=1)
    other, _ = build_procedural_splits("rg:basic_arithmetic", train_size=8, eval_size=0, seed=2)
    assert first["question"] == again["question"] != other["question"]


def test_countdown_expression_is_scored_by_the_generator_not_by_number_matching() -> None:
    train, _ = build_procedural_splits("rg:countdown", train_size=1, eval_size=0, seed=3)
    row = train[0]
    expression = row["answer"]  # e.g. "94*4 - 61 - 6": its last number is not the target
    completion = chat(f"<think>try</think>\n<answer>{expression}</answer>")
    number_matching = rewards.correctness(None, completion, [row["answer"]])
    by_generator = rewards.correctness(
        None, completion, [row["answer"]], [row["rg_task"]], [row["rg_entry"]]
    )
    assert by_generator == [1.0]
    assert number_matching == [0.0]  # the old path alone would have called it wrong


def test_options_reach_the_generator_and_bad_ones_are_one_line() -> None:
    train, _ = build_procedural_splits(
        "rg:chain_sum",
        train_size=5,
        eval_size=0,
        seed=0,
        options={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
    )
    assert all(json.loads(e)["metadata"]["num_terms"] == 2 for e in train["rg_entry"])
    with pytest.raises(UserError, match="rg_options for chain_sum"):
        build_procedural_splits("rg:chain_sum", train_size=2, eval_size=0, seed=0, options={"x": 1})


def test_code_in_an_answer_never_reaches_a_scorer_that_evaluates_it(tmp_path: Path) -> None:
    # countdown's score_answer passes the answer to sympy's parse_expr, which calls eval.
    train, _ = build_procedural_splits("rg:countdown", train_size=1, eval_size=0, seed=3)
    row = train[0]
    canary = tmp_path / "canary"
    attacks = [
        f"__import__('pathlib').Path('{canary}').touch() or {row['answer']}",
        f"(lambda: 0)() + {row['answer']}",
        f"{row['answer']} + 0*9**9**9",
        "().__class__.__base__",
    ]
    for attack in attacks:
        assert not inert_answer(attack)
        assert score_answer(row["rg_task"], row["rg_entry"], attack) == 0.0
    assert not canary.exists()
    # positive control: the plain expression, with brackets for grouping, still scores
    assert inert_answer(f"({row['answer']})")
    assert score_answer(row["rg_task"], row["rg_entry"], f"({row['answer']})") == 1.0


def test_unknown_generator_is_one_error_line_listing_the_available_ones() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "train_fp8_grpo.py"), "--dataset", "rg:no_such_task",
         "--model", "someone/never-loaded"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: unknown reasoning-gym generator 'no_such_task'; available: ")
    assert "basic_arithmetic" in lines[0] and "countdown" in lines[0]
