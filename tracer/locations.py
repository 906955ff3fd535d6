"""Is a name a local path or a Hugging Face hub id?  One rule for models, folders and data.

A name that looks local is never sent to the hub, so a typo is "no such folder" at once
instead of network retries and a message about the hub: it starts with ``/``, ``./``,
``../`` or ``~``, ends with ``/``, has a file suffix (``.csv``, ``.json``, ``.gguf``, ...),
or its parent folder exists here (``results/missing``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

FILE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".gguf", ".safetensors", ".npz", ".txt", ".parquet")


def looks_local(name: Union[str, Path]) -> bool:
    """Whether ``name`` names a local path (existing or not) rather than a hub id."""
    if isinstance(name, Path):
        return True
    text = str(name)
    if text in (".", "..") or text.startswith(("/", "./", "../", "~")) or text.endswith("/"):
        return True
    path = Path(text).expanduser()
    if path.suffix.lower() in FILE_SUFFIXES:
        return True
    parent = path.parent
    return str(parent) not in ("", ".") and parent.is_dir()


def in_hub_cache(repo_id: str, filename: str = "config.json") -> bool:
    """Whether the local Hugging Face cache holds ``filename`` of ``repo_id`` (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # noqa: BLE001 - a name the hub would reject is not cached either
        return False
    return isinstance(found, str)
