"""Talk to a model, or benchmark it.

    python inference.py --model ./outputs/merged --mode interactive
    python inference.py --model ./outputs/merged --mode benchmark
    python inference.py --model embedded:smollm2-135m --mode benchmark --prompts my.jsonl

--model takes a merged model dir, a LoRA adapter dir (loaded on its base), a hub name or the
embedded default. Interactive mode streams replies; Ctrl-C stops a reply, Ctrl-D leaves.
Benchmark mode prints a table (accuracy, latency, time to first token, tokens/s, peak
memory) and writes it, with every response, to --output.
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
    parser = argparse.ArgumentParser(
        description="Chat with a model (streaming REPL) or benchmark its answers and speed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default="embedded:smollm2-135m",
        help="merged model dir, LoRA adapter dir, hub name, or embedded:smollm2-135m",
    )
    parser.add_argument("--mode", default="interactive", choices=["interactive", "benchmark"])
    parser.add_argument("--system", default=None, help="system prompt (interactive mode)")
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sampling temperature (default: 0.7 interactive, 0 = greedy in benchmark mode)",
    )
    parser.add_argument("--max_new_tokens", type=int, default=512)
    parser.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="benchmark prompts, JSON lines with 'question' or 'prompt' and optional 'answer' "
        "(default: examples/math_sample.jsonl)",
    )
    parser.add_argument("--limit", type=int, default=None, help="benchmark the first N prompts")
    parser.add_argument(
        "--prompt_style",
        default="one_shot",
        choices=["one_shot", "zero_shot"],
        help="how 'question' rows are asked (as in training)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed requests first")
    parser.add_argument(
        "--output",
        default="outputs/benchmark/inference_benchmark.json",
        help="benchmark results (JSON)",
    )
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"]
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Reject impossible values with one line naming the flag."""
    if args.max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature is not None and not (
        math.isfinite(args.temperature) and args.temperature >= 0
    ):
        raise UserError(f"--temperature must be a number >= 0, got {args.temperature}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")


@run_main
def main() -> None:
    """Load the model and run the chosen mode."""
    args = build_parser().parse_args()
    from autolearn import chat
    from autolearn.trainer import setup_logging

    setup_logging(args.verbose)
    check_args(args)
    prompts = None
    if args.mode == "benchmark":  # read the prompts before the (slower) model load
        prompts = chat.load_benchmark_prompts(
            args.prompts, prompt_style=args.prompt_style, limit=args.limit
        )
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
        run_benchmark_mode(model, tokenizer, settings, prompts, args)


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
) -> None:
    """Run the benchmark, print its table and save the JSON report."""
    from rich.console import Console

    from autolearn.chat import benchmark_table, run_benchmark, write_report

    report = run_benchmark(
        model, tokenizer, prompts, settings, warmup=args.warmup, progress=not args.no_progress
    )
    report.summary.update(
        model=args.model,
        temperature=settings.temperature,
        max_new_tokens=settings.max_new_tokens,
        device=str(getattr(model, "device", "cpu")),
    )
    output = Path(args.output)
    write_report(output, report)
    Console().print(benchmark_table(report.summary, f"benchmark of {args.model}"))
    logger.info("results: %s", output)


if __name__ == "__main__":
    main()
