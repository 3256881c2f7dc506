"""Helpers shared by the reward modules: TRL hands completions over as strings or chat messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Completion = str | Sequence[dict[str, Any]]


def completion_text(completion: Completion) -> str:
    """Return the text of one completion.

    TRL passes a plain string for standard datasets and a list of chat messages
    (``[{"role": "assistant", "content": "..."}]``) for conversational ones; for the
    latter the assistant turns are joined.
    """
    if isinstance(completion, str):
        return completion
    parts: list[str] = []
    for message in completion:
        content = message.get("content") or ""
        if isinstance(content, list):  # multimodal-style content blocks
            content = "".join(block.get("text", "") for block in content if isinstance(block, dict))
        if message.get("role", "assistant") == "assistant":
            parts.append(str(content))
    return "\n".join(parts)


def prompt_text(prompt: Completion) -> str:
    """Return the text of a prompt: the string itself, or the last user message of a chat."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    return str(users[-1]) if users else ""


def completion_texts(completions: Sequence[Completion]) -> list[str]:
    """Vectorised :func:`completion_text`."""
    return [completion_text(c) for c in completions]
