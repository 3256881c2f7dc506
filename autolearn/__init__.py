"""AutoLearn-LLM: the shared plumbing behind the top-level training, evaluation and inference scripts.

Configuration and running:
    config       defaults < YAML < CLI merging, validation, saving the resolved config
    errors       ``UserError`` and the one-line error handler for entry scripts
    pipeline     the training flow every script shares (config, backend, model, data, train)
    trainer      TRL GRPOTrainer setup, metrics, plots, Ctrl-C and SIGTERM, the final merge
    rundir       the run folder: run.json, what a run may overwrite, checkpoints, resuming
    gpu_memory   GPU memory of a run: training side, vLLM's share, device-wide peak

Models:
    models       model backends (unsloth, transformers), name resolution, loading for inference
    fp8          frozen FP8 base weights with a backward pass, for the transformers backend
    embedded     the embedded default model (SmolLM2-135M-Instruct from a GGUF)
    hub          fast, one-line failure when the Hugging Face Hub is unreachable

Data:
    data         math datasets and the shared hub/local loading
    code_data    HumanEval, MBPP and custom code problems
    benchmarks   SWE-bench instances and Terminal-Bench tasks
    jsonl        JSON-lines reading with one-line errors

Execution and scoring:
    sandbox      the isolated execution engine for untrusted code and shell commands
    code_exec    code extraction, test splitting and batched analysis for the code rewards
    diffs        unified-diff parsing for the SWE-bench rewards
    shell_safety dangerous shell command detection for the Terminal-Bench rewards
    completions  turning TRL completions (strings or chat messages) into text

Tools:
    evaluation   pass@k generation and scoring for eval_code.py
    chat         the streaming REPL and benchmark mode of inference.py
"""

__version__ = "0.1.0"
