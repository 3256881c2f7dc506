"""Math dataset building from local files, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autolearn.data import build_math_dataset, drop_long_prompts, load_rows
from autolearn.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "math_sample.jsonl"


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_bundled_sample_builds_chat_prompts() -> None:
    dataset = build_math_dataset(str(SAMPLE), max_samples=10)
    assert len(dataset) == 10
    prompt = dataset[0]["prompt"]
    assert prompt[0]["role"] == "system" and "<answer>" in prompt[0]["content"]
    assert prompt[-1]["role"] == "user"
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]  # one-shot
    assert "####" in dataset[0]["answer"]


def test_zero_shot_style_and_bad_style() -> None:
    dataset = build_math_dataset(str(SAMPLE), max_samples=2, prompt_style="zero_shot")
    assert [m["role"] for m in dataset[0]["prompt"]] == ["system", "user"]
    with pytest.raises(UserError, match="prompt_style"):
        build_math_dataset(str(SAMPLE), max_samples=2, prompt_style="few")


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_other_local_formats(tmp_path: Path, suffix: str) -> None:
    import datasets

    rows = {
        "question": ["What is 1 + 1?", "What is 2 + 2?"],
        "answer": ["1 + 1 = 2 #### 2", "#### 4"],
    }
    path = tmp_path / f"d{suffix}"
    table = datasets.Dataset.from_dict(rows)
    if suffix == ".json":
        table.to_json(str(path))
    else:
        table.to_parquet(str(path))
    assert len(build_math_dataset(str(path))) == 2


def test_empty_missing_and_malformed_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError):
        build_math_dataset(str(empty))
    with pytest.raises(UserError, match="dataset file not found"):
        build_math_dataset(str(tmp_path / "nope.jsonl"))
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"q": "x", "a": "1"}])
    with pytest.raises(UserError, match="lacks column"):
        build_math_dataset(wrong)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "x", "answer": \n')
    with pytest.raises(UserError, match=r"broken\.jsonl: line 1 is not valid JSON"):
        build_math_dataset(str(broken))
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"question": "x", "answer": " "}])
    with pytest.raises(UserError, match="empty answer"):
        build_math_dataset(blank)


def test_offline_hub_dataset_is_one_clear_error() -> None:
    with pytest.raises(UserError, match="openai/gsm8k"):
        load_rows("openai/gsm8k", subset="main")


def test_long_prompts_are_dropped(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [
        {"question": "What is 1 + 1?", "answer": "#### 2"},
        {"question": "word " * 400, "answer": "#### 1"},
    ]
    dataset = build_math_dataset(write_jsonl(Path(tiny_model_dir).parent / "m.jsonl", rows))
    kept = drop_long_prompts(dataset, tokenizer, max_prompt_length=200)
    assert len(kept) == 1 and kept[0]["answer"] == "#### 2"
    with pytest.raises(UserError, match="every prompt is longer"):
        drop_long_prompts(dataset, tokenizer, max_prompt_length=5)
