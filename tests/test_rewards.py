"""Tests for the math rewards in rewards.py, on literal completions and the bundled problems."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from typing import Any

import pytest

import rewards
from autolearn.completions import Completion
from autolearn.errors import UserError
from rewards import (
    DEFAULT_WEIGHTS,
    REWARDS,
    combined,
    correctness,
    extract_answer,
    format_reward,
    make_combined_reward,
    make_reasoning_reward,
    normalize_number,
    parse_gold_answer,
    reasoning,
    xml_format,
)

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "math_sample.jsonl"

GOOD = (
    "<think>\nStep 1: Tom has 12 apples.\nStep 2: He buys 7 more, so 12 + 7 = 19.\n</think>\n"
    "<answer>19</answer>"
)


def as_chat(text: str) -> list[dict[str, str]]:
    """A conversational completion as TRL passes it."""
    return [{"role": "assistant", "content": text}]


def load_sample() -> list[dict[str, Any]]:
    with SAMPLE.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# --- registry and signatures ----------------------------------------------------------------


def test_registry_has_exactly_the_builtin_names_and_trl_names() -> None:
    assert set(REWARDS) == {"correctness", "format", "reasoning", "xml_format", "combined"}
    for name, function in REWARDS.items():
        assert function.__name__ == name


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_every_reward_accepts_trl_extras_and_both_completion_forms(name: str) -> None:
    texts = [GOOD, "I think it is 20", ""]
    extras = {
        "answer": ["#### 19"] * 3,
        "question": ["q"] * 3,
        "completion_ids": [[1], [2], [3]],
        "trainer_state": object(),
    }
    as_strings = REWARDS[name](prompts=["p"] * 3, completions=texts, **extras)
    as_chats = REWARDS[name](prompts=["p"] * 3, completions=[as_chat(t) for t in texts], **extras)
    assert as_strings == as_chats
    assert len(as_strings) == 3
    assert all(isinstance(score, float) for score in as_strings)


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_every_reward_returns_empty_list_for_no_completions(name: str) -> None:
    assert REWARDS[name](prompts=[], completions=[], answer=[]) == []


# --- numbers and answer extraction -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("72", 72.0),
        ("72.0", 72.0),
        ("72.", 72.0),
        ("1,250", 1250.0),
        ("$1,250.00", 1250.0),
        ("-7", -7.0),
        ("-$7.50", -7.5),
        ("\u22127", -7.0),
        ("15%", 15.0),
        ("72 apples.", 72.0),
        ("1/2", 0.5),
        ("\\frac{1}{2}", 0.5),
        ("\\boxed{\\frac{3}{4}}", 0.75),
        ("$72$", 72.0),
        ("\\$1{,}250", 1250.0),
        ("**42**", 42.0),
        (".5", 0.5),
    ],
)
def test_normalize_number_reads_common_forms(text: str, value: float) -> None:
    assert normalize_number(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "apples", "12 + 7 = 19", "1,25", "5/0", "about 72"])
def test_normalize_number_rejects_non_numbers(text: str) -> None:
    assert normalize_number(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>7 + 5 = 12</think><answer>12</answer>", "12"),
        ("<answer>3</answer> more text <answer>$1,250.00</answer>", "$1,250.00"),
        ("<answer>9</answer><answer>  </answer>", "9"),
        ("<answer>12 + 7 = 19</answer>", "19"),
        ("<answer>The answer is 72 apples.</answer> 5", "72"),
        ("so \\boxed{\\frac{1}{2}} is it", "1/2"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\text{{42}}}", "42"),
        ("12 + 7 = 19\n#### 19", "19"),
        ("#### Step 1\nShe has 5 apples and 2 pears", "2"),
        ("The answer is 72. I checked it 3 times.", "72"),
        ("Final answer: $8.75", "$8.75"),
        ("the answer is **-7** degrees, not 7", "-7"),
        ("answer: $\\frac{3}{4}$", "3/4"),
        ("She has 12 + 7 = 19 apples.", "19"),
        ("It costs 1,250 dollars in total.", "1,250"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_answer_follows_the_documented_order(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("He has 12 + 7 = 19 apples.\n#### 19", "19"),
        ("#### 1,250", "1,250"),
        ("72", "72"),
        ("  -7 ", "-7"),
        (72, "72"),
        ("a #### 1 then #### 2", "2"),
    ],
)
def test_parse_gold_answer(answer: object, gold: str) -> None:
    assert parse_gold_answer(answer) == gold


# --- correctness ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        ("<answer>$1,250.00</answer>", "The total is 1250.\n#### 1250"),
        ("<answer>1250</answer>", "#### 1,250"),
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("The answer is 72.", "72"),
        ("#### 72", "72.0"),
        ("<answer>5</answer> ... <answer>72</answer>", "72"),
        ("It drops to -7 degrees.", "#### -7"),
        ("So the price went up by 15%.", "15"),
        ("Final answer: 24.04", "#### 24.04"),
        ("<answer>yes</answer>", "Yes"),
    ],
)
def test_correctness_accepts_equivalent_answers(completion: str, gold: str) -> None:
    assert correctness(["q"], [completion], answer=[gold]) == [1.0]


@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        ("<answer>71</answer>", "72"),
        ("<answer>72</answer> and the answer is 5", "5"),  # the tag wins over later phrases
        ("<answer>72</answer><answer>5</answer>", "72"),  # the last tag wins
        ("The answer is 7", "-7"),
        ("", "72"),
        ("no idea", "72"),
        ("<answer>0.15</answer>", "15"),
        ("<answer>72</answer>", ""),
    ],
)
def test_correctness_rejects_wrong_answers(completion: str, gold: str) -> None:
    assert correctness(["q"], [completion], answer=[gold]) == [0.0]


def test_correctness_scores_each_completion_against_its_own_answer() -> None:
    completions: list[Completion] = ["<answer>19</answer>", as_chat("The answer is 20"), "#### 21"]
    answers = ["#### 19", "20", "#### 22"]
    assert correctness(None, completions, answer=answers) == [1.0, 1.0, 0.0]


def test_correctness_without_answer_column_is_a_user_error() -> None:
    with pytest.raises(UserError, match="'answer' column"):
        correctness(["q"], ["<answer>1</answer>"])


@pytest.mark.parametrize("answer", [["1", "2"], [], "1"])
def test_correctness_rejects_answers_of_the_wrong_length(answer: Any) -> None:
    with pytest.raises(ValueError, match="one answer per completion"):
        correctness(["q"], ["<answer>1</answer>"], answer=answer)


# --- format --------------------------------------------------------------------------------


def test_format_gives_full_marks_for_steps_equations_and_final_answer() -> None:
    text = "Step 1: 3 * 4 = 12 eggs.\nStep 2: 12 - 2 = 10 eggs.\nThe answer is 10."
    assert format_reward(None, [text]) == [1.0]


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("", 0.0),
        ("10", 0.0),
        ("<answer>10</answer>", 0.3),  # final answer only
        ("12 + 7 = 19", 0.15),  # one equation
        ("Tom has apples.\nHe buys more.", 0.1),  # two plain lines
        ("1. Add them.\n2. Count them.\n3. Done.", 0.4),  # three lines, two steps
        ("First 3 * 4 = 12.\nThen 12 - 2 = 10.\n#### 10", 1.0),
    ],
)
def test_format_partial_credit(text: str, score: float) -> None:
    assert format_reward(None, [text]) == [pytest.approx(score)]


def test_format_counts_repeated_lines_once() -> None:
    repeated = "Step 1: 1 + 1 = 2\n" * 20
    assert format_reward(None, [repeated]) == [pytest.approx(0.1 + 0.15)]


def test_format_credits_only_equations_whose_arithmetic_holds() -> None:
    assert format_reward(None, ["1 + 1 = 3"]) == [0.0]
    assert format_reward(None, ["1 + 1 = 2"]) == [0.15]  # positive control
    assert format_reward(None, ["3 * 4 = 13 and 12 - 2 = 11"]) == [0.0]
    assert format_reward(None, ["3 x 4 = 12, 10 / 4 = 2.5, 1,000 + 200 = 1,200"]) == [0.3]
    assert format_reward(None, ["Now 2 7 + 5 = 12"]) == [0.15]  # a leading number is skipped
    assert format_reward(None, ["12 \\times 3 = 36 and 4 \\div 2 = 2"]) == [0.3]
    assert format_reward(None, ["10 / 3 = 3.33"]) == [0.15]  # rounded as written
    assert format_reward(None, ["10 / 3 = 3.4"]) == [0.0]  # 3.33 does not round to 3.4


QUESTION = ["Tom has 12 apples and buys 7 more. How many apples does he have?"]
FILLER = (
    "<think>Step 1: Let us think carefully about the problem.\nStep 2: 1 + 1 = 2 and "
    "2 + 2 = 4.\nThen we consider everything again.</think>\nThe answer is 5."
)


def test_format_and_reasoning_pay_nothing_for_filler_with_a_wrong_answer() -> None:
    # gated: a wrong answer earns format only for true equations on the question's numbers
    assert format_reward(QUESTION, [FILLER], answer=["19"]) == [0.0]
    grounded = FILLER.replace("1 + 1 = 2", "12 + 7 = 19")
    assert format_reward(QUESTION, [grounded], answer=["20"]) == [0.15]
    # positive controls: a correct answer, or the gate turned off, pays the structure
    assert format_reward(QUESTION, [FILLER], answer=["5"]) == [1.0]
    assert format_reward(QUESTION, [FILLER], answer=["19"], gate=False) == [1.0]
    filler = " ".join(f"word{i}" for i in range(120)) + " The answer is 5."
    assert reasoning(QUESTION, [filler], answer=["19"]) == [0.0]
    assert reasoning(QUESTION, [filler], answer=["5"]) == [1.0]
    assert reasoning(QUESTION, [filler], answer=["19"], gate=False) == [1.0]


def test_doing_nothing_earns_at_most_a_quarter_of_the_default_math_reward() -> None:
    best_filler = (
        "<think>" + FILLER.replace("1 + 1 = 2", "12 * 1 = 12") + "</think><answer>5</answer>"
    )
    hostile = [FILLER, best_filler, "<think>x</think><answer>0</answer>"]
    total = sum(DEFAULT_WEIGHTS.values())
    for text in hostile:
        [earned] = combined(QUESTION, [text], answer=["19"])
        assert earned <= 0.25 * total, text
    # positive control: the correct answer in the layout earns almost everything
    good = (
        "<think>Tom starts with 12 apples. He buys 7 more: 12 + 7 = 19.</think><answer>19</answer>"
    )
    assert combined(QUESTION, [good], answer=["19"])[0] >= 0.75 * total


def test_the_gate_can_be_turned_off_for_the_whole_combined_reward() -> None:
    reward = make_combined_reward({"format": 1.0, "reasoning": 1.0}, gate=False)
    assert (
        reward(QUESTION, [FILLER], answer=["19"])[0]
        > combined(QUESTION, [FILLER], answer=["19"], weights={"format": 1.0, "reasoning": 1.0})[0]
    )


# --- reasoning -----------------------------------------------------------------------------


def words(count: int) -> str:
    """Distinct words, so that only the length matters."""
    return " ".join(f"w{index}" for index in range(count))


@pytest.mark.parametrize(
    ("count", "score"),
    [
        (0, 0.0),
        (5, 0.5),
        (9, 0.9),
        (10, 1.0),
        (20, 1.0),
        (30, 0.5),
        (39, 0.05),
        (40, 0.0),
        (100, 0.0),
    ],
)
def test_reasoning_window_edges(count: int, score: float) -> None:
    result = reasoning(None, [words(count)], min_words=10, max_words=20)
    assert result == [pytest.approx(score)]


def test_reasoning_defaults_reward_a_normal_explanation() -> None:
    assert reasoning(None, [words(rewards.DEFAULT_MIN_WORDS)]) == [1.0]
    assert reasoning(None, [words(rewards.DEFAULT_MAX_WORDS * 2)]) == [0.0]
    assert reasoning(None, ["   \n "]) == [0.0]


def test_reasoning_punishes_heavy_repetition() -> None:
    looping = "so the answer is 5 " * 10  # 50 words, inside the default window
    assert reasoning(None, [looping]) == [0.0]
    explained = load_sample()[-1]["answer"] + " " + words(rewards.DEFAULT_MIN_WORDS)
    assert reasoning(None, [explained]) == [1.0]


def test_reasoning_factory_fixes_the_window_and_name() -> None:
    reward = make_reasoning_reward(min_words=2, max_words=4)
    assert reward.__name__ == "reasoning"
    assert reward(None, [words(1), words(3), words(6)]) == [0.5, 1.0, 0.5]
    # a dataset column that happens to share the name does not change the window
    assert reward(None, [words(3)], min_words=[100]) == [1.0]


@pytest.mark.parametrize(("low", "high"), [(10, 5), (-1, 5), (0, 0), (2.5, 5), (True, 5)])
def test_reasoning_rejects_impossible_windows(low: int, high: int) -> None:
    with pytest.raises(UserError, match="reasoning reward"):
        make_reasoning_reward(low, high)
    with pytest.raises(UserError, match="reasoning reward"):
        reasoning(None, ["x"], min_words=low, max_words=high)


# --- xml_format ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "<think>12 + 7 = 19</think><answer>19</answer>",
        "\n  <think>\nreason\n</think>\n\n<answer>19</answer>\n",
        GOOD,
    ],
)
def test_xml_format_full_marks_only_for_the_clean_layout(text: str) -> None:
    assert xml_format(None, [text]) == [1.0]


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("", 0.0),
        ("19", 0.0),
        ("<think>still thinking", 0.125),  # unclosed
        ("<answer>19</answer>", 0.35),  # no think block
        ("<think></think><answer></answer>", 0.5),  # empty tags
        ("<think> </think><answer>19</answer>", 0.6),  # whitespace-only think
        ("<answer>19</answer><think>why</think>", 0.7),  # answer before think
        ("Sure! <think>why</think><answer>19</answer>", 0.85),  # text outside
        ("<think>why</think> so: <answer>19</answer>", 0.85),  # text between
        ("<think>why</think><answer>19</answer> Hope this helps", 0.85),  # text after
        ("<think>a<think>b</think></think><answer>19</answer>", 0.35),  # nested think
        ("<think>a <answer>5</answer></think><answer>19</answer>", 0.35),  # answer in think
        ("<think>a <answer>19</answer></think>", 0.7),  # the only answer is inside think
        ("<think>a</think><answer>1</answer>" * 2, 0.0),  # repeated blocks
        ("<think>a</think><answer>19</answer></answer>", 0.475),  # stray closing tag
        ("</think>a<think><answer>19</answer>", 0.6),  # closing before opening
    ],
)
def test_xml_format_partial_credit_and_tag_hacking(text: str, score: float) -> None:
    result = xml_format(None, [text])
    assert result == [pytest.approx(score)]
    assert result[0] < 1.0 or score == 1.0


# --- combined ------------------------------------------------------------------------------


def test_combined_is_the_weighted_sum_of_the_components() -> None:
    texts: list[Completion] = [
        GOOD,
        "<think>hmm</think><answer>18</answer>",
        "",
        as_chat("The answer is 19."),
    ]
    answers = ["#### 19"] * len(texts)
    parts = {
        "correctness": correctness(None, texts, answer=answers),
        "format": format_reward(None, texts, answer=answers),
        "reasoning": reasoning(None, texts, answer=answers),
        "xml_format": xml_format(None, texts),
    }
    expected = [
        sum(DEFAULT_WEIGHTS[name] * parts[name][index] for name in parts)
        for index in range(len(texts))
    ]
    assert combined(None, texts, answer=answers) == pytest.approx(expected)
    assert combined(None, [GOOD], answer=["19"])[0] > combined(None, [texts[1]], answer=["19"])[0]


def test_combined_default_weights_make_correctness_dominate() -> None:
    assert DEFAULT_WEIGHTS["correctness"] > sum(
        weight for name, weight in DEFAULT_WEIGHTS.items() if name != "correctness"
    )


def test_combined_explicit_weights_replace_the_defaults() -> None:
    text = "<think>12 + 7 = 19</think><answer>19</answer>"
    assert combined(None, [text], answer=["19"], weights={"correctness": 2.0}) == [2.0]
    assert combined(None, [text], weights={"xml_format": 0.5}) == [0.5]  # no answer needed
    assert combined(None, [text], answer=["19"], weights={}) == [0.0]
    halves = {"correctness": 0.5, "xml_format": 0.5, "format": 0.0, "reasoning": 0.0}
    assert combined(None, [text, "<answer>19</answer>"], answer=["19", "19"], weights=halves) == [
        pytest.approx(1.0),
        pytest.approx(0.5 + 0.5 * 0.35),
    ]


def test_combined_passes_the_word_window_to_reasoning() -> None:
    only_length = {"reasoning": 1.0}
    assert combined(None, [words(3)], weights=only_length, min_words=2, max_words=4) == [1.0]
    assert combined(None, [words(3)], weights=only_length, min_words=6, max_words=8) == [0.5]


def test_combined_factory_fixes_weights_and_name() -> None:
    reward = make_combined_reward({"correctness": 1.0, "xml_format": 0.25})
    assert reward.__name__ == "combined"
    scores = reward(prompts=["q"] * 2, completions=[GOOD, "<answer>19</answer>"], answer=["19"] * 2)
    assert scores == [pytest.approx(1.25), pytest.approx(1.0 + 0.25 * 0.35)]
    default = make_combined_reward()
    assert default(None, [GOOD], answer=["19"]) == combined(None, [GOOD], answer=["19"])


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"correctnes": 1.0}, "unknown weight 'correctnes'.*valid names: correctness"),
        ({"format": "high"}, "must be a number"),
        ({"format": True}, "must be a number"),
        ({"format": float("nan")}, "must be finite"),
    ],
)
def test_combined_rejects_bad_weights(weights: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        make_combined_reward(weights)
    with pytest.raises(UserError, match=message):
        combined(None, ["x"], answer=["1"], weights=weights)


def test_combined_rejects_answers_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="one answer per completion"):
        combined(None, ["<answer>1</answer>", "2"], answer=["1"])


def test_rewards_are_pure_and_picklable_by_name() -> None:
    texts = [GOOD, "The answer is 19."]
    first = combined(None, texts, answer=["19", "19"])
    assert combined(None, texts, answer=["19", "19"]) == first
    for function in (correctness, format_reward, reasoning, xml_format, combined):
        assert pickle.loads(pickle.dumps(function)) is function


def test_rewards_stay_fast_on_pathological_completions() -> None:
    nasty = [
        "1" * 20_000,
        "1,000," * 4_000,
        "1+1 " * 5_000,
        "\\boxed{" * 3_000,
        "</answer>" + "<answer>" * 5_000,
        "answer is " * 5_000,
        "{" * 20_000,
    ]
    started = time.perf_counter()
    scores = combined(None, nasty, answer=["1"] * len(nasty))
    assert len(scores) == len(nasty)
    assert time.perf_counter() - started < 3.0  # each took seconds when a scan was quadratic


# --- the bundled problems ---------------------------------------------------------------------


def test_sample_problems_are_well_formed() -> None:
    rows = load_sample()
    assert len(rows) >= 64
    assert len({row["question"] for row in rows}) == len(rows)
    for row in rows:
        assert set(row) == {"question", "answer"}
        assert row["question"].strip().endswith("?")
        assert row["answer"].count("####") == 1
        gold = parse_gold_answer(row["answer"])
        assert normalize_number(gold) is not None, row


def test_sample_reasoning_scores_as_correct() -> None:
    rows = load_sample()
    reasoning_texts = [row["answer"] for row in rows]
    golds = [row["answer"] for row in rows]
    assert correctness(None, reasoning_texts, answer=golds) == [1.0] * len(rows)
    bare = [parse_gold_answer(row["answer"]) for row in rows]
    assert correctness(None, reasoning_texts, answer=bare) == [1.0] * len(rows)
    # the reasoning before "####" already ends at the gold number
    without_marker = [text.rsplit("####", 1)[0] for text in reasoning_texts]
    assert sum(correctness(None, without_marker, answer=golds)) >= 0.9 * len(rows)
