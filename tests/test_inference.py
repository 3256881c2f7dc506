"""inference.py: the REPL driven in a real pseudo-terminal, benchmark mode, errors, statistics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from autolearn.chat import (
    Answer,
    BenchmarkPrompt,
    Measurement,
    load_benchmark_prompts,
    percentile,
    summarize_batched,
    summarize_stream,
)
from autolearn.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "inference.py")


def script_env(home: Path) -> dict[str, str]:
    """The environment for the script: offline, and a private HOME for the readline history."""
    env = dict(os.environ)
    env.update(HOME=str(home), HF_HUB_OFFLINE="1", TERM="xterm", PYTHONUNBUFFERED="1")
    return env


def spawn_repl(model_dir: Path, home: Path) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        [SCRIPT, "--model", str(model_dir), "--mode", "interactive", "--seed", "0"],
        cwd=str(ROOT),
        env=script_env(home),
        encoding="utf-8",
        timeout=90,
        dimensions=(40, 200),
    )
    child.expect_exact("you> ")
    return child


def test_repl_streams_interrupts_resets_and_exits(tiny_model_dir: Path, tmp_path: Path) -> None:
    child = spawn_repl(tiny_model_dir, tmp_path)
    try:
        child.sendline("/help")
        child.expect_exact("/system TEXT")
        child.expect_exact("you> ")

        # A short reply streams back and the prompt returns.
        child.sendline("/max 12")
        child.expect_exact("at most 12 new tokens")
        child.expect_exact("you> ")
        child.sendline("Hello there")
        child.expect_exact("model> ")
        child.expect(r"\S")  # some streamed text
        child.expect_exact("you> ")

        # A very long reply: Ctrl-C stops it, the program lives on and prompts again.
        child.sendline("/max 100000")
        child.expect_exact("you> ")
        child.sendline("Tell me a very long story")
        child.expect_exact("model> ")
        child.expect(r"\S+\s+\S+")  # text is arriving
        started = time.monotonic()
        child.sendintr()
        child.expect_exact("[interrupted]", timeout=20)
        child.expect_exact("you> ")
        assert time.monotonic() - started < 20
        assert child.isalive()

        # Settings commands validate their argument.
        child.sendline("/temp hot")
        child.expect_exact("/temp needs a number")
        child.sendline("/temp 0")
        child.expect_exact("temperature 0 (greedy)")
        child.sendline("/system Answer in one word.")
        child.expect_exact("system prompt set")
        child.sendline("/nope")
        child.expect_exact("unknown command /nope")

        child.sendline("/reset")
        child.expect_exact("conversation cleared")
        child.expect_exact("you> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert (tmp_path / ".cache" / "autolearn" / "chat_history").is_file()  # readline history


def test_repl_ctrl_c_at_prompt_and_ctrl_d_exit(tiny_model_dir: Path, tmp_path: Path) -> None:
    child = spawn_repl(tiny_model_dir, tmp_path)
    try:
        child.send("half a line")
        # Wait for readline's echo: CPython notices a SIGINT at the prompt only while it waits
        # for input, so a Ctrl-C racing the processing of typed keys would wait for a new key.
        child.expect_exact("half a line")
        child.sendintr()  # discards the line, like a shell
        child.expect_exact("you> ")
        assert child.isalive()
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_benchmark_mode_prints_table_and_writes_json(tiny_model_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable, SCRIPT, "--model", str(tiny_model_dir), "--mode", "benchmark",
            "--limit", "3", "--max_new_tokens", "8", "--output", str(output), "--no_progress",
        ],
        cwd=ROOT, env=script_env(tmp_path), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for row in ("accuracy", "latency p50", "latency p95", "time to first token", "tokens/s"):
        assert row in done.stdout
    assert "peak memory" in done.stdout
    report = json.loads(output.read_text())
    summary = report["summary"]
    assert summary["prompts"] == 3 and summary["graded"] == 3
    assert summary["engine"] == "transformers"  # no vLLM here
    assert 0.0 <= summary["accuracy"] <= 1.0
    assert summary["stream_prompts"] == 3  # fewer prompts than --stream_prompts' 8
    assert summary["latency_p50_s"] <= summary["latency_p95_s"]
    assert 0 < summary["ttft_mean_s"] <= summary["latency_mean_s"]
    assert 0 < summary["generated_tokens"] <= 3 * 8 + 3  # re-tokenized replies may differ a bit
    assert summary["tokens_per_s"] > 0 and summary["stream_tokens_per_s"] > 0
    assert summary["peak_memory_mb"] > 0
    assert summary["memory_kind"] == "process_rss" and summary["model"] == str(tiny_model_dir)
    assert len(report["requests"]) == 3 and len(report["answers"]) == 3
    assert report["requests"][0]["label"].startswith("Mia has 8 pencils")
    assert all(r["correct"] in (True, False) for r in report["answers"])
    # Greedy decoding: the batched pass answers as the single-stream pass did.
    assert [a["response"] for a in report["answers"]] == [r["response"] for r in report["requests"]]


def test_benchmark_without_single_stream_pass(tiny_model_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable, SCRIPT, "--model", str(tiny_model_dir), "--mode", "benchmark",
            "--limit", "3", "--max_new_tokens", "4", "--stream_prompts", "0", "--batch_size", "2",
            "--backend", "transformers", "--output", str(output), "--no_progress",
        ],
        cwd=ROOT, env=script_env(tmp_path), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "not measured" in done.stdout and "batches of 2" in done.stdout
    report = json.loads(output.read_text())
    assert report["requests"] == [] and len(report["answers"]) == 3
    assert report["summary"]["latency_mean_s"] is None and report["summary"]["batch_size"] == 2


def test_batched_answers_keep_prompt_order_across_batches(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autolearn.chat import ChatSettings, run_batched, transformers_generator

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():  # sharper logits: answers that depend on the prompt, no near-ties
        for parameter in model.parameters():
            parameter.mul_(20.0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = load_benchmark_prompts(limit=5)
    settings = ChatSettings(temperature=0.0, max_new_tokens=6)

    def answers(batch_size: int) -> list[str]:
        generate = transformers_generator(
            model, tokenizer, settings, batch_size=batch_size, seed=0, progress=False
        )
        found, seconds = run_batched(generate, tokenizer, prompts)
        assert seconds > 0 and [a.label for a in found] == [p.label for p in prompts]
        assert all(a.correct in (True, False) for a in found)  # the bundled prompts have answers
        return [a.response for a in found]

    one_by_one = answers(1)
    assert answers(2) == one_by_one  # 3 batches (2, 2, 1), answers in prompt order
    assert len(set(one_by_one)) > 1  # the prompts differ, so their answers do


def test_benchmark_prompts_without_answers(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Say hi."}\n{"prompt": [{"role": "user", "content": "Hi?"}]}\n')
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable, SCRIPT, "--model", str(tiny_model_dir), "--mode", "benchmark",
            "--prompts", str(prompts), "--max_new_tokens", "4", "--warmup", "0",
            "--output", str(output), "--no_progress",
        ],
        cwd=ROOT, env=script_env(tmp_path), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "n/a (no answers)" in done.stdout
    assert json.loads(output.read_text())["summary"]["accuracy"] is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "./no/such/model"], "error: model path not found: ./no/such/model"),
        (["--mode", "benchmark", "--prompts", "missing.jsonl"], "error: prompts file not found"),
        (["--max_new_tokens", "0"], "error: --max_new_tokens must be at least 1"),
        (["--temperature", "nan"], "error: --temperature must be a number >= 0"),
        (["--mode", "benchmark", "--limit", "0"], "error: --limit must be at least 1"),
        (["--mode", "benchmark", "--batch_size", "0"], "error: --batch_size must be at least 1"),
        (["--mode", "benchmark", "--stream_prompts", "-1"], "error: --stream_prompts must be at"),
        (["--mode", "benchmark", "--backend", "vllm"], "error: --backend vllm needs the vllm"),
    ],
)
def test_bad_input_gives_one_error_line(extra: list[str], message: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, SCRIPT, *extra],
        cwd=ROOT, env=script_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().startswith(message)
    assert len(done.stderr.strip().splitlines()) == 1  # no log noise, no traceback


def test_a_model_without_chat_template_is_one_error_line(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    base = tmp_path / "base-model"
    shutil.copytree(tiny_model_dir, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, SCRIPT, "--model", str(base), "--mode", "benchmark", "--limit", "1"],
        cwd=ROOT, env=script_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {base} has no chat template; inference.py talks to chat (instruct) models"
    )


def test_percentile_interpolates_like_numpy() -> None:
    import numpy as np

    values = [0.3, 0.1, 0.9, 0.5, 0.2, 1.7, 0.4]
    for q in (0, 5, 50, 90, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([2.0], 95) == 2.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summaries_aggregate_requests_and_answers() -> None:
    rows = [
        Measurement("a", "the answer is 4", latency_s=1.0, ttft_s=0.1, new_tokens=10),
        Measurement("b", "5", latency_s=3.0, ttft_s=0.3, new_tokens=30),
        Measurement("c", "hi", latency_s=2.0, ttft_s=0.2, new_tokens=20),
    ]
    stream = summarize_stream(rows)
    assert stream["stream_prompts"] == 3
    assert stream["latency_mean_s"] == pytest.approx(2.0)
    assert stream["latency_p50_s"] == pytest.approx(2.0)
    assert stream["latency_p95_s"] == pytest.approx(2.9)
    assert stream["ttft_mean_s"] == pytest.approx(0.2)
    assert stream["stream_tokens_per_s"] == pytest.approx(60 / 6.0)
    assert summarize_stream([])["latency_mean_s"] is None  # --stream_prompts 0
    answers = [
        Answer("a", "4", new_tokens=10, answer="4", correct=True),
        Answer("b", "5", new_tokens=30, answer="6", correct=False),
        Answer("c", "hi", new_tokens=20),
    ]
    batched = summarize_batched(answers, seconds=2.0)
    assert batched["accuracy"] == 0.5 and batched["graded"] == 2 and batched["prompts"] == 3
    assert batched["tokens_per_s"] == pytest.approx(30.0)


def test_default_prompts_are_the_bundled_math_problems() -> None:
    prompts = load_benchmark_prompts(limit=2)
    assert len(prompts) == 2
    first = prompts[0]
    assert isinstance(first, BenchmarkPrompt)
    assert first.answer is not None and first.answer.endswith("#### 13")
    assert first.messages[0]["role"] == "system" and first.messages[-1]["role"] == "user"


def test_malformed_prompt_rows_are_user_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok?"}\n{"text": "no prompt key"}\n')
    with pytest.raises(UserError, match="line 2 needs a 'question'"):
        load_benchmark_prompts(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "ok?"}\n\n{"question": \n')
    with pytest.raises(UserError, match="line 3 is not valid JSON"):
        load_benchmark_prompts(broken)
    empty_chat = tmp_path / "empty_chat.jsonl"
    empty_chat.write_text('{"prompt": []}\n')
    with pytest.raises(UserError, match=r"line 1 needs .*non-empty list of chat messages"):
        load_benchmark_prompts(empty_chat)


def test_long_conversations_are_trimmed_oldest_first(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from autolearn.chat import trim_history

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    system = {"role": "system", "content": "Be brief."}
    turns = []
    for index in range(6):
        turns.append({"role": "user", "content": f"question {index} " + "word " * 40})
        turns.append({"role": "assistant", "content": f"answer {index} " + "word " * 40})
    messages = [system, *turns, {"role": "user", "content": "last question"}]
    trimmed = trim_history(tokenizer, messages, budget=200, keep_system=True)
    assert trimmed[0] == system and trimmed[-1]["content"] == "last question"
    assert 1 < len(trimmed) < len(messages)
    assert trimmed[1]["role"] == "user"  # whole exchanges are dropped
    kept = [m["content"].split()[1] for m in trimmed[1:-1]]
    assert kept == sorted(kept)  # the newest exchanges survive, in order
    assert trimmed[-2]["content"].startswith("answer 5")
    assert trim_history(tokenizer, messages, budget=10**6, keep_system=True) == messages


def test_backend_selection(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autolearn import models
    from autolearn.evaluation import choose_backend

    assert choose_backend("auto", str(tiny_model_dir)) == "transformers"  # this machine: no vLLM
    with pytest.raises(UserError, match="--backend vllm needs the vllm package and a CUDA GPU"):
        choose_backend("vllm")
    # What a GPU machine with vLLM would choose (only the two probes of the machine are set).
    monkeypatch.setattr(models, "cuda_available", lambda: True)
    monkeypatch.setattr(models, "package_available", lambda name: name == "vllm")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x"}))
    assert choose_backend("auto", str(tiny_model_dir)) == "vllm"
    assert choose_backend("transformers", str(tiny_model_dir)) == "transformers"
    assert choose_backend("auto", str(adapter)) == "transformers"  # vLLM loads merged models
    with pytest.raises(UserError, match="is a LoRA adapter: vLLM needs a merged model"):
        choose_backend("vllm", str(adapter))
