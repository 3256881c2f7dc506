"""AutoLearn-LLM: the shared plumbing behind the top-level training, evaluation and inference scripts.

Modules:
    config       defaults < YAML < CLI merging, validation, saving the resolved config
    errors       ``UserError`` and the one-line error handler for entry scripts
    completions  turning TRL completions (strings or chat messages) into text
    models       model backends (unsloth, transformers) and the embedded default model
    data         dataset builders (GSM8K-style math, code, benchmarks)
    trainer      GRPO trainer setup, metrics, plots, checkpoints and the final merge
    sandbox      the isolated execution engine for untrusted code and shell commands
"""

__version__ = "0.1.0"
