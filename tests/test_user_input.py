"""Bad input a new user gives the scripts: each is one `error:` line (exit 2), a setting that
would be ignored is refused, and what a run saves can be read back from anywhere (issue 15).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rewards
import train_bench_grpo
import train_code_grpo
import train_fp8_grpo
from autolearn.benchmarks import SWE_SAMPLE_FILE, load_benchmark, load_swe_bench
from autolearn.chat import load_benchmark_prompts
from autolearn.cli import plural
from autolearn.code_data import load_local
from autolearn.config import Config, load_config
from autolearn.data import build_math_dataset
from autolearn.errors import UserError
from autolearn.evaluation import heldout_benchmark, pass_at_k_table
from autolearn.trainer import build_rewards, check_reward_kwargs

ROOT = Path(__file__).resolve().parents[1]
LATIN1 = b"caf\xe9"  # "café" in Latin-1: not UTF-8


def run(
    script: str, *args: str, cwd: Path = ROOT, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def assert_one_error_line(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no traceback, no datasets ERROR lines
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]


def math_config(*argv: str) -> Config:
    return load_config(train_fp8_grpo.default_config(), train_fp8_grpo.parse_args(list(argv)))


# --------------------------------------------------------------------------- counts (item 5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max_steps", "0"], "training.max_steps must be at least 1, got 0"),
        (["--max_steps", "-3"], "training.max_steps must be at least 1, got -3"),
        (["--max_samples", "-5"], "dataset.max_samples must be 0 (all rows) or more, got -5"),
        (["--num_generations", "0"], "training.num_generations must be at least 2"),
        (["--batch_size", "-1"], "per_device_train_batch_size must be at least 1"),
        (["--max_completion_length", "0"], "max_completion_length must be at least 1"),
    ],
)
def test_impossible_counts_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        math_config(*argv)


def test_impossible_counts_in_yaml_and_the_code_script(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("training: {save_total_limit: -1}\n")
    with pytest.raises(UserError, match=re.escape("training.save_total_limit must be at least 0")):
        math_config("--config", str(path))
    args = train_code_grpo.parse_args(["--eval_fraction", "1.5"])
    with pytest.raises(UserError, match=r"dataset.eval_fraction must be in \[0, 1\)"):
        load_config(train_code_grpo.default_config(), args)
    assert math_config("--max_steps", "1", "--max_samples", "0").training.max_steps == 1


def test_max_steps_zero_is_one_line_before_anything_loads() -> None:
    assert_one_error_line(
        run("train_fp8_grpo.py", "--max_steps", "0"), "training.max_steps must be at least 1"
    )


# --------------------------------------------------------------------------- files (items 6, 7)


def test_a_config_that_is_not_utf8_or_is_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"model: {name: " + LATIN1 + b"}\n")
    assert_one_error_line(run("train_fp8_grpo.py", "--config", str(path)), "is not UTF-8 text")
    assert_one_error_line(
        run("train_fp8_grpo.py", "--config", str(tmp_path)), f"{tmp_path} is a directory"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty.jsonl: the file holds no dataset rows"),
        (b"\n\n", "empty.jsonl: the file holds no dataset rows"),
        (b'{"question": "q", "answer": "#### 1"}\n{"question": \n', "line 2 is not valid JSON"),
        (b'{"question": "q", "answer": "#### 1"}\n["x"]\n', "line 2 is not a JSON object"),
        (
            b'{"question": "q", "answer": "1"}\n{"question": "' + LATIN1 + b'"}\n',
            "line 2 is not UTF-8",
        ),
        (
            b'{"question": "q", "answer": "1"}\n\n{"question": "r"}\n',
            "line 3 has an empty answer",
        ),
    ],
)
def test_math_jsonl_errors_name_the_file_and_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(message)) as error:
        build_math_dataset(str(path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_malformed_math_file_is_one_line_from_the_script(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n{"question": \n')
    done = run("train_fp8_grpo.py", "--dataset", str(path), "--max_steps", "1")
    assert_one_error_line(done, f"{path}: line 2 is not valid JSON")
    assert "row 1" not in done.stderr and "DatasetGenerationError" not in done.stderr


def test_math_json_and_parquet_files_name_the_item(tmp_path: Path) -> None:
    listed = tmp_path / "d.json"
    listed.write_text(json.dumps([{"question": "q", "answer": "1"}, "not a row"]))
    with pytest.raises(UserError, match=re.escape("d.json: item 2 is not an object")):
        build_math_dataset(str(listed))
    listed.write_bytes(b'[{"question": "' + LATIN1 + b'", "answer": "1"}]')
    with pytest.raises(
        UserError, match=re.escape("d.json: cannot read it: line 1 is not UTF-8 text")
    ):
        build_math_dataset(str(listed))
    import datasets

    table = tmp_path / "d.parquet"
    datasets.Dataset.from_dict({"question": ["q", "r"], "answer": ["#### 1", ""]}).to_parquet(
        str(table)
    )
    with pytest.raises(UserError, match=re.escape("d.parquet: row 2 has an empty answer")):
        build_math_dataset(str(table))
    assert len(build_math_dataset(str(ROOT / "examples" / "math_sample.jsonl"))) == 75  # control


def test_code_and_prompt_files_that_are_not_utf8(tmp_path: Path) -> None:
    suite = tmp_path / "suite.json"
    suite.write_bytes(b'[{"task_id": "' + LATIN1 + b'"}]')
    with pytest.raises(
        UserError, match=re.escape("suite.json: cannot read it: line 1 is not UTF-8")
    ):
        load_local(suite)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b'{"prompt": "' + LATIN1 + b'"}\n')
    with pytest.raises(
        UserError, match=re.escape("prompts.jsonl: cannot read it: line 1 is not UTF-8")
    ):
        load_benchmark_prompts(prompts)
    swe = tmp_path / "swe.jsonl"
    swe.write_bytes(b'{"instance_id": "' + LATIN1 + b'"}\n')
    with pytest.raises(
        UserError, match=re.escape("swe.jsonl: cannot read it: line 1 is not UTF-8")
    ):
        load_swe_bench(str(swe))


# --------------------------------------------------------------------------- ignored settings (item 8)


def test_a_misspelt_reward_setting_is_refused_with_the_valid_names() -> None:
    config = Config(rewards={"reasoning": 0.1}, reward_kwargs={"reasoning": {"min_wordz": 3}})
    with pytest.raises(
        UserError,
        match=re.escape(
            "reasoning' has no setting min_wordz; its settings are min_words, max_words"
        ),
    ):
        check_reward_kwargs(config, rewards.REWARDS)
    config.reward_kwargs = {"reasoning": {"min_words": 1, "max_words": 3}}  # the control
    functions, _ = build_rewards(config, rewards.REWARDS)
    assert functions[0](None, ["two words"]) == [1.0]
    config = Config(rewards={"combined": 1.0}, reward_kwargs={"combined": {"weights": {}}})
    assert build_rewards(config, rewards.REWARDS)[0][0](None, ["x"]) == [0.0]
    config = Config(rewards={"correctness": 1.0}, reward_kwargs={"correctness": {"answer": "4"}})
    with pytest.raises(
        UserError, match=re.escape("'correctness' has no setting answer; it takes no settings")
    ):
        check_reward_kwargs(config, rewards.REWARDS)


def test_custom_rewards_declare_settings_as_keyword_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_settings_rewards.py").write_text(
        "def loose(prompts, completions, **kwargs):\n    return [1.0 for _ in completions]\n\n"
        "def strict(prompts, completions, *, limit=10, **kwargs):\n"
        "    return [1.0 if len(c) < limit else 0.0 for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loose = Config(
        rewards={"my_settings_rewards:loose": 1.0},
        reward_kwargs={"my_settings_rewards:loose": {"limit": 3}},
    )
    with pytest.raises(UserError, match=r"takes no settings .*keyword-only"):
        build_rewards(loose, rewards.REWARDS)
    strict = Config(
        rewards={"my_settings_rewards:strict": 1.0},
        reward_kwargs={"my_settings_rewards:strict": {"limit": 3}},
    )
    assert build_rewards(strict, rewards.REWARDS)[0][0](None, ["ab", "abcd"]) == [1.0, 0.0]


def test_a_misspelt_reward_setting_fails_before_the_model_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "dataset: {name: examples/math_sample.jsonl, max_samples: 4}\n"
        "training: {max_steps: 1, output_dir: " + str(tmp_path / "out") + "}\n"
        "reward_kwargs: {reasoning: {min_wordz: 3}}\n"
    )
    done = run("train_fp8_grpo.py", "--config", str(path))
    assert done.returncode == 2 and "has no setting min_wordz" in done.stderr.splitlines()[-1]
    assert "loading" not in done.stderr.lower()  # no model was loaded
    assert not (tmp_path / "out" / "config.yaml").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--benchmark", "swe-lite", "--dataset", "terminal"], "--benchmark swe-lite and --dataset terminal disagree"),
        (["--benchmark", "terminal", "--data_file", "x.jsonl"], "--data_file is for SWE-bench, not terminal"),
        (["--benchmark", "terminal", "--repos_dir", "."], "--repos_dir is for SWE-bench, not terminal"),
        (["--benchmark", "swe-lite", "--tasks_dir", "."], "--tasks_dir is for Terminal-Bench, not swe-lite"),
    ],
)  # fmt: skip
def test_bench_settings_that_would_be_ignored_are_errors(argv: list[str], message: str) -> None:
    assert_one_error_line(run("train_bench_grpo.py", *argv, "--max_steps", "1"), message)


def test_benchmark_and_dataset_may_agree() -> None:
    args = train_bench_grpo.parse_args(["--benchmark", "swe-lite", "--dataset", "swe-lite"])
    assert getattr(args, "dataset.name") == "swe-lite"
    assert getattr(train_bench_grpo.parse_args(["--benchmark", "swe-lite"]), "dataset.name") == (
        "swe-lite"
    )


def test_math_answers_that_are_not_numbers_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "words.jsonl"
    path.write_text(
        '{"question": "1+1?", "answer": "#### 2"}\n{"question": "2?", "answer": "#### two"}\n'
        '{"question": "3?", "answer": "three"}\n'
    )
    with caplog.at_level(logging.WARNING, logger="autolearn.data"):
        build_math_dataset(str(path))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "answers that are not numbers: 2 of 3 (first: line 2, 'two')" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="autolearn.data"):
        build_math_dataset(str(ROOT / "examples" / "math_sample.jsonl"))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]  # the control


# --------------------------------------------------------------------------- saved paths (item 9)


def test_saved_dataset_paths_are_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "suite.json").write_text("[]")
    monkeypatch.chdir(tmp_path)
    args = train_code_grpo.parse_args(["--dataset", "custom", "--test_file", "suite.json"])
    config = load_config(train_code_grpo.default_config(), args)
    assert config.dataset.test_file == str(tmp_path / "suite.json")
    assert config.dataset.name == "custom"  # a built-in name stays as it is
    math = math_config("--dataset", "data/m.jsonl")
    assert math.dataset.name == str(tmp_path / "data" / "m.jsonl")
    assert math_config("--dataset", "openai/gsm8k").dataset.name == "openai/gsm8k"


def test_heldout_from_an_old_run_with_relative_paths_works_from_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    suite = (ROOT / "examples" / "custom_tests.json").read_text()
    (project / "data" / "suite.json").write_text(suite)
    run_dir = project / "outputs" / "code"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(
        "training: {output_dir: outputs/code, seed: 7}\n"
        "dataset: {name: custom, test_file: data/suite.json, eval_fraction: 0.3}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    kind, problems = heldout_benchmark(run_dir)
    assert kind == "custom" and len(problems) == 4
    (project / "data" / "suite.json").unlink()
    with pytest.raises(
        UserError, match=r"test_file data/suite.json .* is relative, and not found at"
    ):
        heldout_benchmark(run_dir)


def test_heldout_from_another_directory_end_to_end(tmp_path: Path) -> None:
    suite = tmp_path / "suite.json"
    suite.write_text((ROOT / "examples" / "custom_tests.json").read_text())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    args = train_code_grpo.parse_args(
        ["--dataset", "custom", "--test_file", "suite.json", "--eval_fraction", "0.3"]
    )
    import os

    here = Path.cwd()
    os.chdir(tmp_path)
    try:
        config = load_config(train_code_grpo.default_config(), args)
    finally:
        os.chdir(here)
    from autolearn.config import save_config

    save_config(config, run_dir / "config.yaml")
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "custom/nothing", "completion": ""}) + "\n")
    _, held = heldout_benchmark(run_dir)
    samples.write_text(
        "".join(json.dumps({"task_id": p.task_id, "completion": "pass"}) + "\n" for p in held)
    )
    out = tmp_path / "res.jsonl"
    done = run(
        "eval_code.py", "--heldout_from", str(run_dir), "--samples", str(samples),
        "--output", str(out), "--no_progress", cwd=Path("/"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == len(held)


# --------------------------------------------------------------------------- outputs (item 3)


def test_eval_output_that_cannot_be_written_fails_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    done = run("eval_code.py", "--benchmark", "custom", "--output", str(blocker / "r.jsonl"))
    assert_one_error_line(done, f"{blocker} is a file, not a folder")
    assert blocker.read_text() == "mine"
    done = run("eval_code.py", "--benchmark", "custom", "--output", str(tmp_path))
    assert_one_error_line(done, "is a directory; give a file name")


def test_inference_output_that_cannot_be_written_fails_before_the_model_loads(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    done = run(
        "inference.py", "--mode", "benchmark", "--model", "./no/such/model",
        "--output", str(blocker / "b.json"),
    )  # fmt: skip
    assert_one_error_line(done, f"{blocker} is a file, not a folder")  # not "model not found"


def test_a_failed_write_at_the_end_still_prints_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import eval_code
    from autolearn import evaluation

    def disk_full(path: Path, scored: object) -> None:
        raise OSError(28, "No space left on device", str(path))

    samples = tmp_path / "s.jsonl"
    problems = evaluation.load_benchmark("custom")
    samples.write_text(
        "".join(
            json.dumps({"task_id": p.task_id, "completion": p.reference_solution}) + "\n"
            for p in problems[:2]
        )
    )
    out = tmp_path / "r.jsonl"
    monkeypatch.setattr(evaluation, "write_results", disk_full)  # the disk fills up at the end
    monkeypatch.setattr(
        sys, "argv", ["eval_code.py", "--benchmark", "custom", "--samples", str(samples),
                      "--output", str(out), "--no_progress"],
    )  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        eval_code.main()
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert "pass@1" in captured.out and "1.000" in captured.out  # the results are shown
    assert captured.err.strip().splitlines()[-1] == (
        f"error: --output {out} could not be written: No space left on device ({out})"
    )


# --------------------------------------------------------------------------- terminal source (item 13)


def test_terminal_without_tasks_dir_says_it_uses_the_bundled_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="autolearn.benchmarks"):
        dataset = load_benchmark("terminal", max_samples=25)
    messages = [r.getMessage() for r in caplog.records]
    assert len(dataset) == 6
    assert any("--max_samples 25: there are only 6 Terminal-Bench tasks" in m for m in messages)
    assert any("loaded 6 Terminal-Bench tasks" in m and "bundled examples" in m for m in messages)


# --------------------------------------------------------------------------- help (item 14)


def help_entries(help_text: str) -> dict[str, str]:
    """``--flag`` -> its help text, one line, from an argparse ``--help``."""
    entries: dict[str, str] = {}
    options = help_text.split("options:", 1)[1]
    for block in ("\n" + options).split("\n  -")[1:]:
        names, _, text = block.partition(" ")
        entries[names.split(",")[-1].strip() if "," in names else "-" + names] = " ".join(
            text.split()
        )
    return entries


@pytest.mark.parametrize("script", ["eval_code.py", "inference.py"])
def test_help_shows_each_default_once_and_every_flag_has_help(script: str) -> None:
    done = run(script, "--help")
    assert done.returncode == 0
    entries = help_entries(done.stdout)
    assert "(default: None)" not in " ".join(entries.values())
    for flag, text in entries.items():
        assert text.count("default") <= 1, f"{flag}: {text}"
    named = ["--max_new_tokens", "--backend", "--seed", "--limit", "--output"]
    named += ["--benchmark"] if script == "eval_code.py" else ["--mode", "--dtype"]
    for flag in named:
        assert len(entries[flag].split()) > 3, f"{flag} has no help: {entries[flag]!r}"
    assert "(default: 512)" in entries["--max_new_tokens"]


@pytest.mark.parametrize(
    ("module", "script"),
    [(train_fp8_grpo, "train_fp8_grpo.py"), (train_code_grpo, "train_code_grpo.py"),
     (train_bench_grpo, "train_bench_grpo.py")],
)  # fmt: skip
def test_training_help_shows_the_config_defaults(module: object, script: str) -> None:
    defaults = module.default_config()  # type: ignore[attr-defined]
    text = " ".join(run(script, "--help").stdout.split())
    assert f"number of GRPO steps (default: {defaults.training.max_steps})" in text
    assert f"(default: {defaults.training.output_dir})" in text
    assert f"tokens per completion (default: {defaults.training.max_completion_length})" in text
    assert "(default: None)" not in text


def test_readme_documents_limit_and_max_new_tokens() -> None:
    readme = (ROOT / "README.md").read_text()
    for flag in ("--limit", "--max_new_tokens", "--stream_prompts", "--backend"):
        assert flag in readme


# --------------------------------------------------------------------------- logs (item 15)


def test_plural() -> None:
    assert [plural(n, "prompt") for n in (0, 1, 2)] == ["0 prompts", "1 prompt", "2 prompts"]
    assert plural(1, "process", "processes") == "1 process"
    assert plural(3, "process", "processes") == "3 processes"


def test_pass_at_k_skip_message_tells_all_from_some() -> None:
    all_short = pass_at_k_table({"a": (4, 1), "b": (4, 0)}, [1, 10]).skipped[10]
    assert all_short.endswith("and every problem has 4 samples")
    some_short = pass_at_k_table({"a": (4, 1), "b": (12, 0), "c": (4, 0)}, [10]).skipped[10]
    assert some_short.endswith("and 2 problems of 3 have only 4")


def test_missing_clones_are_one_warning_with_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="autolearn.benchmarks"):
        dataset = load_swe_bench(str(SWE_SAMPLE_FILE), repos_dir=tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert (
        f"no clone under {tmp_path} for {len(dataset)} instances of {len(dataset)}" in warnings[0]
    )


def test_naming() -> None:
    from autolearn.cli import naming

    assert naming("column", ["answer"]) == "column answer"
    assert naming("column", ["question", "answer"]) == "columns question, answer"
