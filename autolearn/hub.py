"""Hugging Face Hub access that fails fast, with one clear line, when the machine is offline.

transformers and datasets retry unreachable hosts for half a minute before raising a
multi-line error. We first try the local cache; if that misses, we check that the hub's
host resolves and accepts a connection within a few seconds before asking the libraries.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

from autolearn.errors import UserError

DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_endpoint() -> str:
    """The hub URL in use (``HF_ENDPOINT`` overrides the default)."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT)


def offline_mode() -> bool:
    """True when the user asked the HF libraries to stay offline."""
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    )


@functools.cache
def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the hub's host can be opened (cached per process)."""
    if offline_mode():
        return False
    url = urlparse(hub_endpoint())
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def require_hub(what: str) -> None:
    """Raise a one-line :class:`UserError` if ``what`` would need the hub and it is unreachable."""
    if not hub_reachable():
        reason = "offline mode is set" if offline_mode() else f"{hub_endpoint()} cannot be reached"
        raise UserError(
            f"{what} is not a local path and is not in the Hugging Face cache, and {reason}; "
            "download it on a connected machine or pass a local path"
        )
