"""Built-in math rewards for GRPO, in TRL's reward-function form.

Every reward takes ``(prompts, completions, **columns)`` and returns one float per
completion. Completions may be plain strings or chat-message lists; TRL also passes
every dataset column plus extras such as ``trainer_state``, which are accepted and
ignored unless named below. All scores lie in [0, 1] (``combined`` is a weighted sum).

``correctness``
    1.0 when the completion's final answer equals the gold ``answer`` column, else 0.0.
    Rows of a reasoning-gym task (``--dataset rg:NAME``) are scored instead by that
    generator's own ``score_answer`` on the stated answer (the ``<answer>`` content).
    The gold may be a full GSM8K answer ("... #### 72") or a bare one ("72"). The final
    answer is taken from the first of these that exists: the last non-empty
    ``<answer>...</answer>``, the last ``\\boxed{...}``, the last ``#### N``, the last
    "answer is N" / "final answer: N", and finally the last number in the text.
    Numbers compare by value: commas, ``$``, ``%``, units and a trailing period are
    ignored, ``72.0 == 72``, ``1/2 == \\frac{1}{2} == 0.5``, and negatives work. A
    percent sign is dropped, not divided out ("15%" matches the GSM8K gold "15").

``format``
    Partial credit for step-by-step structure: several distinct lines (0.2),
    step markers such as "Step 1", "1." or "First"/"Then" (0.2), arithmetic equations
    like "12 + 7 = 19" whose arithmetic holds (0.3; "1 + 1 = 3" earns nothing), and an
    explicit final answer statement (0.3). Repeated lines and equations count once.
    Gated (see "Gating" below): with a wrong answer only true equations that use a
    number from the question earn their part.

``reasoning``
    Rewards a completion length, in words, inside ``[min_words, max_words]`` (1.0).
    Shorter text ramps up linearly from 0 words (0.0); longer text ramps down to 0.0
    at twice ``max_words``. Heavily repeated text (few distinct word trigrams) is
    scaled down to 0.0. Configure the window with keyword arguments or with
    :func:`make_reasoning_reward`. Gated: 0.0 unless the answer is correct.

``xml_format``
    Rewards exactly one ``<think>...</think>`` followed by exactly one
    ``<answer>...</answer>``. Each of the four tags present exactly once earns 0.125;
    each block well formed (one opening tag before one closing tag) with non-empty
    content earns 0.1; with both blocks well formed, think-before-answer earns 0.15, and
    on top of that nothing but whitespace outside the two blocks earns the last 0.15.
    So only the clean layout scores 1.0: repeated, nested, empty, unclosed or
    out-of-order tags, or text around the blocks, all lose credit.

Gating
    Shaping must not pay for doing nothing: ``format`` and ``reasoning`` pay for properties
    of the work (structure, length), which filler has too, so by default they pay only when
    the task's core signal says the work is real (the answer is correct; for ``format``
    also a true equation on the question's numbers). ``xml_format`` is not gated: the
    ``<think>``/``<answer>`` layout is what the prompt asks for, part of the task, and the
    partial credit a small model needs before any answer is right. With the default
    weights a completion with a wrong answer earns at most 0.3 + 0.2 * 0.3 = 0.36 of 1.6
    (0.225). Pass ``gate=False`` (``reward_kwargs: {format: {gate: false}}``) to pay the
    terms without the gate. Without an ``answer`` column there is no core signal, and the
    terms are paid ungated.

``combined``
    The weighted sum of the four rewards above, with :data:`DEFAULT_WEIGHTS` unless
    ``weights`` is given. A given mapping replaces the defaults entirely: a name it
    leaves out weighs 0 and is not computed. :func:`make_combined_reward` fixes the
    weights (e.g. from the config) in a TRL function named "combined".

The helpers :func:`extract_answer`, :func:`parse_gold_answer`, :func:`normalize_number`
and :func:`answers_match` are public so that evaluation code scores answers the same way.
All of them run in time linear in the completion length, however it is malformed.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autolearn.completions import Completion, completion_texts, prompt_text
from autolearn.errors import UserError

RewardFunction = Callable[..., list[float]]

DEFAULT_MIN_WORDS = 20
DEFAULT_MAX_WORDS = 200

# Correctness dominates: a correct answer with no formatting (1.0) always beats a wrong
# answer with perfect formatting (0.6). The shaping terms give a small model partial
# credit, so that completions in a GRPO group differ even before any answer is right.
DEFAULT_WEIGHTS: dict[str, float] = {
    "correctness": 1.0,
    "xml_format": 0.3,
    "format": 0.2,
    "reasoning": 0.1,
}

# --- numbers ---------------------------------------------------------------------------

_SIGN = r"[-\u2212]"
_INT = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
_DECIMAL = rf"(?:{_INT}(?:\.\d+)?|\.\d+)"
_NUMBER_BODY = rf"{_SIGN}?\$?{_SIGN}?{_DECIMAL}(?:/{_DECIMAL})?"
# A number token in running text; not the tail of a word ("x2") or of another number.
_NUMBER_TOKEN_RE = re.compile(rf"(?<![\w.]){_NUMBER_BODY}")
# A string that is one number, optionally followed by a percent sign and by units.
_CLEAN_NUMBER_RE = re.compile(rf"\s*({_NUMBER_BODY})\s*(?:%|percent\b)?[^\d]*", re.IGNORECASE)

_LATEX_FRACTION_RE = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_WRAPPER_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LATEX_REPLACEMENTS = (
    ("\\$", "$"),
    ("\\%", "%"),
    ("{,}", ","),
    ("\\,", ""),
    ("\\!", ""),
    ("\\ ", " "),
    ("\\(", ""),
    ("\\)", ""),
    ("\\[", ""),
    ("\\]", ""),
    ("\\left", ""),
    ("\\right", ""),
    ("^\\circ", ""),
    ("**", ""),
)


def normalize_number(text: str) -> float | None:
    """Return the value of ``text`` when it is a single number, else ``None``.

    Accepts thousands commas, a ``$`` (before or after the sign), a trailing ``%``, units
    or other words after the number ("72 apples."), simple fractions ("1/2") and the
    LaTeX forms ``\\frac{1}{2}``, ``\\boxed{...}`` and ``$...$``. Text with a second
    number ("12 + 7 = 19") is not a single number and gives ``None``.
    """
    cleaned = _strip_latex(str(text)).strip()
    match = _CLEAN_NUMBER_RE.fullmatch(cleaned)
    if match is None:
        return None
    return _number_value(match.group(1))


def _number_value(token: str) -> float | None:
    """Value of one number token as matched by ``_NUMBER_BODY``."""
    token = token.replace("\u2212", "-").replace("$", "").replace(",", "")
    negative = token.count("-") % 2 == 1
    token = token.replace("-", "")
    numerator, _, denominator = token.partition("/")
    try:
        value = float(numerator)
        if denominator:
            value /= float(denominator)
    except (ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(value):
        return None
    return -value if negative else value


def _strip_latex(text: str) -> str:
    """Reduce the LaTeX a model wraps around a number to plain text."""
    boxed = _last_boxed_content(text)
    if boxed is not None:
        text = boxed
    text = _LATEX_FRACTION_RE.sub(r"\1/\2", text)
    text = _LATEX_WRAPPER_RE.sub(r"\1", text)
    for old, new in _LATEX_REPLACEMENTS:
        text = text.replace(old, new)
    text = text.strip()
    # "$72$" is inline math, not dollars.
    if len(text) > 2 and text.startswith("$") and text.endswith("$"):
        text = text[1:-1]
    return text


def _last_number_token(text: str) -> str | None:
    """The last number written in ``text``, as written."""
    tokens = _NUMBER_TOKEN_RE.findall(_strip_latex_inline(text))
    return tokens[-1] if tokens else None


def _strip_latex_inline(text: str) -> str:
    """Rewrite LaTeX fractions and escapes in running text without unwrapping anything."""
    text = _LATEX_FRACTION_RE.sub(r"\1/\2", text)
    for old, new in _LATEX_REPLACEMENTS:
        text = text.replace(old, new)
    return text


# --- answer extraction -------------------------------------------------------------------

_ANSWER_TAG_RE = re.compile(r"</?answer>")
_HASHES_RE = re.compile(r"####\s*([-\u2212$.\\\d][^\n]*)")
_ANSWER_PHRASE_RE = re.compile(
    r"\banswer\s*(?:(?:is|was|would\s+be|will\s+be|equals)\b|[=:])\s*:?\s*"
    r"(?:approximately|about|exactly|roughly)?[\s*_]*"
    rf"(\\boxed\{{[^\n]*|{_NUMBER_BODY}|\\[dt]?frac\{{[^{{}}]*\}}\{{[^{{}}]*\}}|\$\\[^\n$]*\$)",
    re.IGNORECASE,
)
_BOXED_OPENING = "\\boxed{"
_BRACE_RE = re.compile(r"[{}]")


def _matching_braces(text: str) -> dict[int, int]:
    """Map the index of every closed ``{`` to the index of its ``}``, in one pass."""
    pairs: dict[int, int] = {}
    open_braces: list[int] = []
    for match in _BRACE_RE.finditer(text):
        if match.group(0) == "{":
            open_braces.append(match.start())
        elif open_braces:
            pairs[open_braces.pop()] = match.start()
    return pairs


def _boxed_contents(text: str) -> list[str]:
    """Every closed ``\\boxed{...}`` body in ``text``, nested braces included."""
    if _BOXED_OPENING not in text:
        return []
    pairs = _matching_braces(text)
    contents = []
    for match in re.finditer(re.escape(_BOXED_OPENING), text):
        body_start = match.end()
        close = pairs.get(body_start - 1)
        if close is not None:
            contents.append(text[body_start:close])
    return contents


def _last_boxed_content(text: str) -> str | None:
    """Body of the last closed, non-empty ``\\boxed{...}`` in ``text``."""
    contents = [content for content in _boxed_contents(text) if content.strip()]
    return contents[-1] if contents else None


def _reduce_to_answer(candidate: str) -> str | None:
    """Turn the text found in an answer slot into the answer itself.

    A clean number ("$1,250.00", "72 apples") is kept as written; text with several
    numbers ("12 + 7 = 19") gives its last number; text without numbers is kept as is,
    so non-numeric gold answers can still be compared.
    """
    candidate = candidate.strip()
    if not candidate:
        return None
    if normalize_number(candidate) is not None:
        return candidate
    return _last_number_token(candidate) or candidate


def _answer_tag_contents(text: str) -> list[str]:
    """Bodies of ``<answer>...</answer>`` pairs, each opening tag paired with the next closing.

    Same result as a lazy ``<answer>(.*?)</answer>`` scan, but linear in the text length.
    """
    contents = []
    body_start: int | None = None
    for match in _ANSWER_TAG_RE.finditer(text):
        if match.group(0) == "<answer>":
            body_start = match.end() if body_start is None else body_start
        elif body_start is not None:
            contents.append(text[body_start : match.start()])
            body_start = None
    return contents


def _from_answer_tags(text: str) -> str | None:
    contents = [content for content in _answer_tag_contents(text) if content.strip()]
    return _reduce_to_answer(contents[-1]) if contents else None


def _from_boxed(text: str) -> str | None:
    content = _last_boxed_content(text)
    return _reduce_to_answer(_strip_latex(content)) if content is not None else None


def _from_hashes(text: str) -> str | None:
    matches = _HASHES_RE.findall(text)
    return _reduce_to_answer(matches[-1]) if matches else None


def _from_answer_phrase(text: str) -> str | None:
    matches = _ANSWER_PHRASE_RE.findall(text)
    return _reduce_to_answer(_strip_latex(matches[-1])) if matches else None


_EXPLICIT_EXTRACTORS: tuple[Callable[[str], str | None], ...] = (
    _from_answer_tags,
    _from_boxed,
    _from_hashes,
    _from_answer_phrase,
)


def _explicit_answer(text: str) -> str | None:
    """The answer the text states explicitly (tags, box, ####, "answer is"), if any."""
    for extractor in _EXPLICIT_EXTRACTORS:
        found = extractor(text)
        if found is not None:
            return found
    return None


def extract_answer(text: str) -> str | None:
    """Return the final answer written in ``text``, or ``None`` when there is none.

    Looks, in order, at the last non-empty ``<answer>`` block, the last ``\\boxed{}``,
    the last ``####``, the last "answer is"/"final answer:" phrase, then the last number
    anywhere. The result is the answer as written (e.g. "$1,250.00"); pass it to
    :func:`normalize_number` to get its value.
    """
    return _explicit_answer(text) or _last_number_token(text)


def parse_gold_answer(answer: object) -> str:
    """Return the final answer of a dataset ``answer`` value, as written.

    For a GSM8K answer ("... #### 72") this is the text after the last ``####``; a bare
    answer ("72", or a number) is returned stripped.
    """
    text = str(answer)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    return text.strip()


def _canonical_text(text: str) -> str:
    """Lower-case, single-spaced text without surrounding punctuation, for non-numeric answers."""
    return " ".join(text.lower().split()).strip(" .!*\"'")


def answers_match(predicted: str | None, gold: str) -> bool:
    """Whether an extracted answer equals a gold answer: by value for numbers, else by text."""
    if predicted is None:
        return False
    gold_value = normalize_number(gold)
    if gold_value is None:
        canonical_gold = _canonical_text(gold)
        return bool(canonical_gold) and _canonical_text(predicted) == canonical_gold
    predicted_value = normalize_number(predicted)
    return predicted_value is not None and math.isclose(
        predicted_value, gold_value, rel_tol=1e-6, abs_tol=1e-9
    )


# --- rewards -------------------------------------------------------------------------------


def _gold_answers(answer: Sequence[Any] | None, count: int, reward: str) -> list[str]:
    """Validate the ``answer`` column TRL passed and return its gold answers."""
    if answer is None:
        raise UserError(
            f"the {reward!r} reward needs an 'answer' column in the dataset "
            "(GSM8K form '... #### 72' or a bare '72')"
        )
    if isinstance(answer, str) or len(answer) != count:
        given = "a string" if isinstance(answer, str) else f"{len(answer)} answers"
        raise ValueError(f"{reward}: expected one answer per completion ({count}), got {given}")
    return [parse_gold_answer(value) for value in answer]


def stated_answer(text: str) -> str | None:
    """The answer a completion states, as written: its last non-empty ``<answer>`` block
    (stripped, not reduced to a number), else what :func:`extract_answer` finds."""
    contents = [content.strip() for content in _answer_tag_contents(text) if content.strip()]
    return contents[-1] if contents else extract_answer(text)


def correctness(
    prompts: Sequence[Completion] | None,
    completions: Sequence[Completion],
    answer: Sequence[Any] | None = None,
    rg_task: Sequence[str | None] | None = None,
    rg_entry: Sequence[str | None] | None = None,
    **kwargs: Any,
) -> list[float]:
    """1.0 for each completion whose final answer equals the gold ``answer``, else 0.0.

    A reasoning-gym row (``rg_task`` and ``rg_entry`` columns, see
    :mod:`autolearn.procedural`) is scored by its generator's own ``score_answer`` on the
    stated answer instead, so expressions, lists and words are judged as the task means.
    """
    texts = completion_texts(completions)
    golds = _gold_answers(answer, len(texts), "correctness")
    scores = [
        1.0 if answers_match(extract_answer(text), gold) else 0.0
        for text, gold in zip(texts, golds, strict=True)
    ]
    if rg_task is None or rg_entry is None:
        return scores
    from autolearn.procedural import score_answers

    verdicts = score_answers(rg_task, rg_entry, [stated_answer(text) for text in texts])
    return [
        score if verdict is None else verdict
        for score, verdict in zip(scores, verdicts, strict=True)
    ]


_TAG_RE = re.compile(r"</?(?:think|answer)>")
_STEP_MARKER_RE = re.compile(
    r"^(?:step\s*\d+\b|\d+[.)]\s|[-*\u2022]\s|(?:first|second|third|then|next|finally)\b)",
    re.IGNORECASE,
)
_OPERATOR_SPELLINGS = (
    ("\\times", "*"),
    ("\\cdot", "*"),
    ("\\div", "/"),
    ("\u00d7", "*"),
    ("\u00f7", "/"),
    ("\u2212", "-"),
)
_TIMES_X_RE = re.compile(r"(?<=\d)[ \t]{0,3}[xX][ \t]{0,3}(?=[\d$(])")
# "LEFT = RIGHT": LEFT a bounded run of number/operator characters (validated later), so
# the scan stays linear on long, equation-free lines.
_EQUATION_RE = re.compile(
    r"(?<![\w.,$)])([\d$(][\d.,$ \t()+*/-]{0,80}?)[ \t]{0,3}=[ \t]{0,3}(-?\$?\d[\d,]{0,20}(?:\.\d{1,10})?)"
)
_MAX_EQUATIONS = 200  # equations checked per completion
_EXPRESSION_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant)
_EXPRESSION_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.USub, ast.UAdd)


def _distinct_lines(text: str) -> list[str]:
    """Non-empty lines that carry a letter or digit, each once, tags removed."""
    lines = (line.strip() for line in _TAG_RE.sub("\n", text).splitlines())
    return list(dict.fromkeys(line for line in lines if re.search(r"\w", line)))


@dataclass(frozen=True)
class _Equation:
    text: str  # normalised "LEFT=RIGHT"
    operands: tuple[float, ...]


def _true_equations(text: str) -> list[_Equation]:
    """The distinct equations in ``text`` whose arithmetic holds (``12 + 7 = 19``)."""
    for spelling, operator in _OPERATOR_SPELLINGS:
        text = text.replace(spelling, operator)
    text = _TIMES_X_RE.sub("*", text)
    found: dict[str, _Equation] = {}
    for count, match in enumerate(_EQUATION_RE.finditer(text)):
        if count >= _MAX_EQUATIONS:
            break
        right = _number_value(match.group(2))
        equation = _true_equation(match.group(1), right)
        if equation is not None:
            found.setdefault(equation.text, equation)
    return list(found.values())


def _true_equation(left: str, right: float | None) -> _Equation | None:
    """The equation ``left = right`` if some tail of ``left`` is an arithmetic expression
    (two numbers or more) whose value is ``right`` to the precision ``right`` is written in."""
    if right is None:
        return None
    words = left.split()
    for start in range(len(words)):
        expression = " ".join(words[start:]).replace("$", "")
        expression = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", expression)
        parsed = _arithmetic(expression)
        if parsed is None:
            continue
        value, operands = parsed
        if len(operands) < 2:
            return None
        decimals = len(f"{right}".split(".")[1]) if not float(right).is_integer() else 0
        if abs(value - right) <= 0.5 * 10.0**-decimals + 1e-9 * max(1.0, abs(right)):
            return _Equation(f"{expression}={right}", operands)
        return None
    return None


def _arithmetic(expression: str) -> tuple[float, tuple[float, ...]] | None:
    """Value and number operands of ``+ - * /`` arithmetic; ``None`` for anything else."""
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    operands: list[float] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float) or isinstance(node.value, bool):
                return None
            operands.append(float(node.value))
        elif not isinstance(node, _EXPRESSION_NODES + _EXPRESSION_OPERATORS):
            return None
    try:
        value = _evaluate(tree.body)
    except (ZeroDivisionError, OverflowError, RecursionError):
        return None
    return (value, tuple(operands)) if math.isfinite(value) else None


def _evaluate(node: ast.expr) -> float:
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)  # checked by _arithmetic
        return float(node.value)
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    assert isinstance(node, ast.BinOp)
    left, right = _evaluate(node.left), _evaluate(node.right)
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Mult):
        return left * right
    return left / right


def _question_numbers(prompt: Completion | None) -> set[float]:
    """The values of the numbers in a prompt's question."""
    if prompt is None:
        return set()
    text = _strip_latex_inline(prompt_text(prompt))
    values = (_number_value(token) for token in _NUMBER_TOKEN_RE.findall(text))
    return {abs(value) for value in values if value is not None}


def _format_score(
    text: str, *, gated: bool = False, question: frozenset[float] = frozenset()
) -> float:
    """The ``format`` score; ``gated``: the answer is wrong, so only true equations on the
    question's numbers earn (their 0.3)."""
    equations = _true_equations(text)
    if gated:
        grounded = [e for e in equations if any(abs(o) in question for o in e.operands)]
        return round(0.3 * min(len(grounded), 2) / 2, 6)
    lines = _distinct_lines(text)
    steps = sum(1 for line in lines if _STEP_MARKER_RE.match(line))
    score = 0.2 * min(max(len(lines) - 1, 0), 2) / 2
    score += 0.2 * min(steps, 2) / 2
    score += 0.3 * min(len(equations), 2) / 2
    score += 0.3 if _explicit_answer(text) is not None else 0.0
    return round(score, 6)


def _correct_flags(
    texts: Sequence[str], answer: Sequence[Any] | None, reward: str
) -> list[bool] | None:
    """Which completions answer correctly; ``None`` without an ``answer`` column (no gate)."""
    if answer is None:
        return None
    golds = _gold_answers(answer, len(texts), reward)
    return [answers_match(extract_answer(t), g) for t, g in zip(texts, golds, strict=True)]


def format_reward(
    prompts: Sequence[Completion] | None,
    completions: Sequence[Completion],
    answer: Sequence[Any] | None = None,
    *,
    gate: bool = True,
    **kwargs: Any,
) -> list[float]:
    """Partial credit in [0, 1] for lines, step markers, true equations and a final answer.

    With ``gate`` (the default) and an ``answer`` column, a wrong answer earns only the
    equation part, for true equations that use a number from the question."""
    texts = completion_texts(completions)
    correct = _correct_flags(texts, answer, "format") if gate else None
    if correct is None:
        return [_format_score(text) for text in texts]
    prompt_list = list(prompts) if prompts is not None else [None] * len(texts)
    scores = []
    for text, right, prompt in zip(texts, correct, prompt_list, strict=True):
        question = frozenset(_question_numbers(prompt)) if not right else frozenset()
        scores.append(_format_score(text, gated=not right, question=question))
    return scores


# TRL logs a reward under its __name__; __qualname__ stays so that pickle finds the function.
format_reward.__name__ = "format"


def _check_window(min_words: int, max_words: int) -> None:
    """Reject a word window that cannot work, in one clear line."""
    for value in (min_words, max_words):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"reasoning reward: word limits must be whole numbers, got {value!r}")
    if not 0 <= min_words <= max_words or max_words < 1:
        raise UserError(
            f"reasoning reward: need 0 <= min_words <= max_words and max_words >= 1, "
            f"got min_words={min_words}, max_words={max_words}"
        )


def _length_credit(words: int, min_words: int, max_words: int) -> float:
    if words == 0:
        return 0.0
    if words < min_words:
        return words / min_words
    if words <= max_words:
        return 1.0
    return max(0.0, 1.0 - (words - max_words) / max_words)


def _repetition_factor(words: Sequence[str]) -> float:
    """1.0 for ordinary text, falling to 0.0 when few word trigrams are distinct."""
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    if len(trigrams) < 10:
        return 1.0
    distinct = len(set(trigrams)) / len(trigrams)
    return min(1.0, max(0.0, (distinct - 0.4) / 0.3))


def _reasoning_score(text: str, min_words: int, max_words: int) -> float:
    words = _TAG_RE.sub(" ", text).lower().split()
    return round(_length_credit(len(words), min_words, max_words) * _repetition_factor(words), 6)


def reasoning(
    prompts: Sequence[Completion] | None,
    completions: Sequence[Completion],
    answer: Sequence[Any] | None = None,
    *,
    min_words: int = DEFAULT_MIN_WORDS,
    max_words: int = DEFAULT_MAX_WORDS,
    gate: bool = True,
    **kwargs: Any,
) -> list[float]:
    """1.0 for a length in [min_words, max_words] words, partial credit around it.

    Empty output, output of twice ``max_words`` or more, and heavily repeated output
    score 0.0; so does a wrong answer while ``gate`` is on and an ``answer`` column given.
    """
    _check_window(min_words, max_words)
    texts = completion_texts(completions)
    correct = _correct_flags(texts, answer, "reasoning") if gate else None
    flags = correct if correct is not None else [True] * len(texts)
    return [
        _reasoning_score(text, min_words, max_words) if right else 0.0
        for text, right in zip(texts, flags, strict=True)
    ]


GATE_NOTE = (
    "format and reasoning pay only for a correct answer (format: also for true equations on "
    "the question's numbers); xml_format is paid ungated; turn the gate off with "
    "reward_kwargs: {NAME: {gate: false}}"
)
format_reward.gate_note = GATE_NOTE  # type: ignore[attr-defined]
reasoning.gate_note = GATE_NOTE  # type: ignore[attr-defined]


def make_reasoning_reward(
    min_words: int = DEFAULT_MIN_WORDS, max_words: int = DEFAULT_MAX_WORDS
) -> RewardFunction:
    """Return :func:`reasoning` with its word window fixed, named "reasoning" for TRL."""
    _check_window(min_words, max_words)

    def configured(
        prompts: Sequence[Completion] | None, completions: Sequence[Completion], **kwargs: Any
    ) -> list[float]:
        kwargs.pop("min_words", None)
        kwargs.pop("max_words", None)
        return reasoning(prompts, completions, min_words=min_words, max_words=max_words, **kwargs)

    configured.gate_note = reasoning.gate_note  # type: ignore[attr-defined]

    return _named(configured, "reasoning", reasoning.__doc__)


@dataclass(frozen=True)
class _Block:
    start: int  # index of the opening tag
    end: int  # index just past the closing tag
    content: str


def _filled_block(text: str, tag: str) -> _Block | None:
    """The one non-empty ``<tag>...</tag>`` block in ``text``.

    None unless the opening and the closing tag each occur exactly once, in that order,
    around content that is not just whitespace.
    """
    opening, closing = f"<{tag}>", f"</{tag}>"
    if text.count(opening) != 1 or text.count(closing) != 1:
        return None
    start, close = text.index(opening), text.index(closing)
    content = text[start + len(opening) : close]
    if close < start or not content.strip():
        return None
    return _Block(start, close + len(closing), content)


def _xml_score(text: str) -> float:
    tags = ("<think>", "</think>", "<answer>", "</answer>")
    score = 0.125 * sum(1 for tag in tags if text.count(tag) == 1)
    think, answer = _filled_block(text, "think"), _filled_block(text, "answer")
    score += 0.1 * (think is not None) + 0.1 * (answer is not None)
    if think is None or answer is None or think.end > answer.start:
        return round(score, 6)
    score += 0.15
    outside = text[: think.start] + text[think.end : answer.start] + text[answer.end :]
    if not outside.strip():
        score += 0.15
    return round(score, 6)


def xml_format(
    prompts: Sequence[Completion] | None, completions: Sequence[Completion], **kwargs: Any
) -> list[float]:
    """1.0 only for one non-empty ``<think>`` block followed by one ``<answer>`` block."""
    return [_xml_score(text) for text in completion_texts(completions)]


COMPONENTS: tuple[str, ...] = ("correctness", "format", "reasoning", "xml_format")


def _resolve_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """Check ``weights`` (unknown names, non-numbers) and return them as a plain dict."""
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    resolved: dict[str, float] = {}
    for name, weight in weights.items():
        if name not in COMPONENTS:
            raise UserError(
                f"combined reward: unknown weight {name!r}; valid names: {', '.join(COMPONENTS)}"
            )
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise UserError(f"combined reward: weight {name!r} must be a number, got {weight!r}")
        if not math.isfinite(weight):
            raise UserError(f"combined reward: weight {name!r} must be finite, got {weight!r}")
        resolved[name] = float(weight)
    return resolved


def combined(
    prompts: Sequence[Completion] | None,
    completions: Sequence[Completion],
    answer: Sequence[Any] | None = None,
    *,
    weights: Mapping[str, float] | None = None,
    min_words: int = DEFAULT_MIN_WORDS,
    max_words: int = DEFAULT_MAX_WORDS,
    gate: bool = True,
    **kwargs: Any,
) -> list[float]:
    """Weighted sum of correctness, format, reasoning and xml_format.

    ``weights`` defaults to :data:`DEFAULT_WEIGHTS`; names it leaves out weigh 0 and are
    not computed (so ``answer`` is only needed when correctness has a weight). ``gate``
    is passed to ``format`` and ``reasoning``.
    """
    resolved = _resolve_weights(weights)
    component_scores = {
        "correctness": lambda: correctness(prompts, completions, answer, **kwargs),
        "format": lambda: format_reward(prompts, completions, answer, gate=gate, **kwargs),
        "reasoning": lambda: reasoning(
            prompts,
            completions,
            answer,
            min_words=min_words,
            max_words=max_words,
            gate=gate,
            **kwargs,
        ),
        "xml_format": lambda: xml_format(prompts, completions, **kwargs),
    }
    totals = [0.0] * len(completions)
    for name, weight in resolved.items():
        if weight == 0.0:
            continue
        scores = component_scores[name]()
        totals = [total + weight * score for total, score in zip(totals, scores, strict=True)]
    return [round(total, 6) for total in totals]


def make_combined_reward(
    weights: Mapping[str, float] | None = None,
    *,
    min_words: int = DEFAULT_MIN_WORDS,
    max_words: int = DEFAULT_MAX_WORDS,
    gate: bool = True,
) -> RewardFunction:
    """Return :func:`combined` with fixed weights and word window, named "combined" for TRL."""
    resolved = _resolve_weights(weights)
    _check_window(min_words, max_words)

    def configured(
        prompts: Sequence[Completion] | None,
        completions: Sequence[Completion],
        answer: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        for fixed in ("weights", "min_words", "max_words", "gate"):
            kwargs.pop(fixed, None)
        return combined(
            prompts,
            completions,
            answer,
            weights=resolved,
            min_words=min_words,
            max_words=max_words,
            gate=gate,
            **kwargs,
        )

    return _named(configured, "combined", combined.__doc__)


def _named(function: RewardFunction, name: str, doc: str | None) -> RewardFunction:
    """Give a configured closure the public name TRL logs it under."""
    function.__name__ = name
    function.__qualname__ = name
    function.__doc__ = doc
    return function


combined.gate_note = GATE_NOTE  # type: ignore[attr-defined]

REWARDS: dict[str, RewardFunction] = {
    "correctness": correctness,
    "format": format_reward,
    "reasoning": reasoning,
    "xml_format": xml_format,
    "combined": combined,
}
