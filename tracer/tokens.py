"""Tokens: where a word sits in a prompt, left-padded batches, continuation ids.

Runs on the client (it needs the tokenizer), never inside a trace.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


def find(tokenizer: Any, prompt: str, word: str, occurrence: int = -1) -> list[int]:
    """Positions of the tokens that cover ``word`` in ``prompt`` (unpadded).

    ``occurrence`` picks which match when the word occurs several times (default: the last).
    A word missing from the prompt raises ``ValueError`` naming both.
    """
    starts = []
    at = prompt.find(word)
    while at >= 0 and word:
        starts.append(at)
        at = prompt.find(word, at + 1)
    if not starts:
        raise ValueError(f"target {word!r} does not occur in the prompt {prompt!r}")
    try:
        start = starts[occurrence]
    except IndexError:
        raise ValueError(f"target {word!r} occurs {len(starts)} times in {prompt!r}; "
                         f"occurrence {occurrence} does not exist") from None
    end = start + len(word)
    offsets = tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    found = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
    if not found:
        raise ValueError(f"target {word!r} covers no token of {prompt!r}")
    return found


def pad_offsets(attention_mask: torch.Tensor) -> list[int]:
    """How many pad tokens each left-padded row starts with."""
    return [int(n) for n in (attention_mask == 0).long().cumprod(dim=1).sum(dim=1)]


def padded_positions(positions: Sequence[Sequence[int]], lengths: Sequence[int],
                     padded_length: int) -> torch.Tensor:
    """Per-row unpadded positions -> positions in a left-padded batch, as a (rows, P) tensor.

    Rows must ask for the same number of positions.
    """
    sizes = {len(p) for p in positions}
    if len(sizes) != 1:
        raise ValueError(f"every row needs the same number of positions; got sizes {sorted(sizes)}")
    shift = [padded_length - n for n in lengths]
    return torch.tensor([[p + s if p >= 0 else p + padded_length for p in row]
                         for row, s in zip(positions, shift)], dtype=torch.long)


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad token id (0 when it has none)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def build_inputs(rows: Sequence[Sequence[int]], pad: int) -> dict:
    """Left-padded ``input_ids``, ``attention_mask`` and mask-derived ``position_ids``.

    Position ids count real tokens only, so a padded row computes what it would alone.
    """
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every row needs at least one token")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r):] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


def encode(tokenizer: Any, texts: Sequence[str]) -> dict:
    """Texts as one left-padded batch (see ``build_inputs``)."""
    return build_inputs([tokenizer(t)["input_ids"] for t in texts], pad_id(tokenizer))


def continuation_ids(tokenizer: Any, prompt: str, cont: str) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt`` and of ``" " + cont`` scored after it (no merge across them)."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    cont_ids = tokenizer(" " + cont.lstrip(), add_special_tokens=False)["input_ids"]
    return list(prompt_ids), list(cont_ids)
