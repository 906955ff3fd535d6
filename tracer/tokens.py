"""Token positions: where a word sits in a prompt, and where that lands after left padding.

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
