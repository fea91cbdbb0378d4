"""Where a model, tokenizer or config named by the user lives: a local path, or a hub name that is
already in the local Hugging Face cache. Never the network.

Every command checks this before loading anything, so a typo or a model that was
never downloaded fails at once with what to do, instead of a hub error about repo
ids, or retries against a network that training nodes often do not have.
"""

from __future__ import annotations

import re
from pathlib import Path

from .config import ConfigError
from .staging import path_problem

# Hugging Face repo ids: "name" or "owner/name" (letters, digits, '-', '_', '.'; at most 96 characters)
REPO_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


def hub_cache() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return HF_HUB_CACHE


def local_path(name: str, what: str) -> str:
    """`name` as a local file or directory: itself when it exists, else its snapshot in the HF cache.

    `what` names the thing for messages ("tokenizer", "--vision", "LM"). Raises ConfigError
    saying which path is missing, or which hub name to download and where it would go.
    """
    name = str(name)
    problem = path_problem(name) or ("is blank" if not name.strip() else None)
    if problem:
        raise ConfigError(f"{what} {name[:80]!r}: not a usable path or hub name (it {problem})")
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if not REPO_ID.match(name) or name.endswith((".json", ".gguf", ".safetensors")):
        raise ConfigError(f"{what} {name}: no such file or directory")
    cached = _cached_snapshot(name)
    if cached:
        return cached
    raise ConfigError(
        f"{what} {name!r}: no such file or directory, and no hub model {name!r} in the local Hugging Face cache "
        f"({hub_cache()}). lmm-toolkit never downloads: fetch it first on a machine with network, e.g. "
        f"`hf download {name}` (or `huggingface-cli download {name}`) with the same HF_HOME/HF_HUB_CACHE, "
        "or give a local directory.")


def _cached_snapshot(repo_id: str) -> str | None:
    """The cached snapshot directory of `repo_id` (any revision the cache's `main` ref points to), or None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None

