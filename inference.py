"""Talk to a model, or benchmark it.

    python inference.py --model ./outputs/merged --mode interactive
    python inference.py --model ./outputs/merged --mode benchmark
    python inference.py --model embedded:smollm2-135m --mode benchmark --prompts my.jsonl

--model takes a merged model dir, a LoRA adapter dir (loaded on its base), a hub name or the
embedded default. Interactive mode streams replies; Ctrl-C stops a reply, Ctrl-D leaves.
Benchmark mode makes two passes: the first --stream_prompts prompts one at a time through
the streaming path (latency, time to first token), then every prompt in batches, with vLLM
when it is installed on a GPU (else transformers; --backend picks), for accuracy and
throughput. It prints a table and writes it, with every response, to --output.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolearn.errors import UserError, run_main

if TYPE_CHECKING:
    from autolearn.chat import BenchmarkPrompt, ChatSettings

logger = logging.getLogger("autolearn.inference")


def build_parser() -> argparse.ArgumentParser:
    """The command line of inference.py."""
    from autolearn.cli import defaults_formatter

    parser = argparse.ArgumentParser(
        description="Chat with a model (streaming REPL) or benchmark its answers and speed.",
        formatter_class=defaults_formatter(),
    )
    parser.add_argument(
        "--model",
        default="embedded:smollm2-135m",
        help="merged model dir, LoRA adapter dir, hub name, or embedded:smollm2-135m",
    )
    parser.add_argument(
        "--mode",
        default="interactive",
        choices=["interactive", "benchmark"],
        help="interactive: a streaming chat REPL; benchmark: time and grade a prompt set",
    )
    parser.add_argument("--system", help="system prompt (interactive mode)")
    parser.add_argument(
        "--temperature",
        type=float,
        help="sampling temperature (default: 0.7 interactive, 0 = greedy in benchmark mode)",
    )
    parser.add_argument(
        "--max_new_tokens", type=int, default=512, help="most tokens generated per reply"
    )
    parser.add_argument(
        "--prompts",
        metavar="FILE",
        help="benchmark prompts: .jsonl, .json (a list) or .parquet rows with 'question' or "
        "'prompt' and optional 'answer' (default: examples/math_sample.jsonl)",
    )
    parser.add_argument("--limit", type=int, help="benchmark the first N prompts")
    parser.add_argument(
        "--prompt_style",
        default="one_shot",
        choices=["one_shot", "zero_shot"],
        help="how 'question' rows are asked (as in training)",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "transformers", "vllm"],
        help="engine of the batched benchmark pass (auto: vLLM if installed and a GPU is "
        "present, else transformers)",
    )
    parser.add_argument(
        "--batch_size", type=int, default=8, help="prompts per generate call (transformers)"
    )
    parser.add_argument(
        "--stream_prompts",
        type=int,
        default=8,
        help="prompts timed one at a time for latency and time to first token (0: none)",
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed requests before the single-stream pass"
    )
    parser.add_argument(
        "--output",
        default="outputs/benchmark/inference_benchmark.json",
        help="benchmark results (JSON)",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bfloat16", "float16", "float32"],
        help="weight dtype (auto: bfloat16 on a GPU that has it, float16 on older GPUs, "
        "float32 on the CPU)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Reject impossible values with one line naming the flag."""
    if args.max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature is not None and not (
        math.isfinite(args.temperature) and args.temperature >= 0
    ):
        raise UserError(f"--temperature must be a number >= 0, got {args.temperature}")
    for flag, value, least in (
        ("--limit", args.limit, 1),
        ("--batch_size", args.batch_size, 1),
        ("--stream_prompts", args.stream_prompts, 0),
        ("--warmup", args.warmup, 0),
    ):
        if value is not None and value < least:
            raise UserError(f"{flag} must be at least {least}, got {value}")


@run_main
def main() -> None:
    """Load the model and run the chosen mode."""
    args = build_parser().parse_args()
    from autolearn import chat
    from autolearn.trainer import setup_logging

    setup_logging(args.verbose)
    check_args(args)
    prompts = None
    engine = ""
    if args.mode == "benchmark":  # read the prompts and check --output before the model load
        prompts = chat.load_benchmark_prompts(
            args.prompts, prompt_style=args.prompt_style, limit=args.limit
        )
        from autolearn.evaluation import choose_backend
        from autolearn.paths import check_output_files

        check_output_files([Path(args.output)])
        engine = choose_backend(args.backend, args.model)
    from autolearn.models import load_inference_model, resolve_model_path

    resolve_model_path(args.model)  # a bad name fails here, before anything is logged
    from transformers import set_seed

    set_seed(args.seed)
    logger.info("loading %s", args.model)
    model, tokenizer = load_inference_model(args.model, dtype=args.dtype)
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"{args.model} has no chat template; inference.py talks to chat (instruct) models"
        )
    default_temperature = 0.7 if args.mode == "interactive" else 0.0
    settings = chat.ChatSettings(
        temperature=default_temperature if args.temperature is None else args.temperature,
        max_new_tokens=args.max_new_tokens,
        system=args.system,
    )
    if prompts is None:
        run_interactive(model, tokenizer, settings)
    else:
        run_benchmark_mode(model, tokenizer, settings, prompts, args, engine=engine)


def run_interactive(model: Any, tokenizer: Any, settings: ChatSettings) -> None:
    """The REPL, with readline editing and history when the input is a terminal."""
    from autolearn.chat import ChatRepl, enable_line_editing

    save_history = enable_line_editing() if sys.stdin.isatty() else None
    try:
        ChatRepl(model, tokenizer, settings).run()
    finally:
        if save_history is not None:
            save_history()


def run_benchmark_mode(
    model: Any,
    tokenizer: Any,
    settings: ChatSettings,
    prompts: list[BenchmarkPrompt],
    args: argparse.Namespace,
    *,
    engine: str,
) -> None:
    """Run the benchmark, print its table, then save the JSON report."""
    from rich.console import Console

    from autolearn.chat import BenchmarkOptions, benchmark_table, run_benchmark, write_report
    from autolearn.paths import write_failure

    options = BenchmarkOptions(
        engine=engine,
        model_name=args.model,
        stream_prompts=args.stream_prompts,
        batch_size=args.batch_size,
        warmup=args.warmup,
        seed=args.seed,
        progress=not args.no_progress,
    )
    device = str(getattr(model, "device", "cpu"))
    report = run_benchmark(model, tokenizer, prompts, settings, options)
    report.summary.update(
        model=args.model,
        temperature=settings.temperature,
        max_new_tokens=settings.max_new_tokens,
        device=device,
    )
    Console().print(benchmark_table(report.summary, f"benchmark of {args.model}"))
    output = Path(args.output)
    try:  # after the table: a failed write loses no result
        write_report(output, report)
    except OSError as exc:
        raise write_failure(output, exc) from None
    logger.info("results: %s", output)


if __name__ == "__main__":
    main()
