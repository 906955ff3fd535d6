"""Tokens: where a word sits in a prompt, left-padded batches, continuation ids.

Runs on the client (it needs the tokenizer), never inside a trace.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch


def find(tokenizer: Any, prompt: str, word: str, occurrence: Optional[int] = None) -> list[int]:
    """Positions of the tokens that cover ``word`` in ``prompt`` (unpadded).

    ``word`` matches whole words only (``he`` does not match inside ``there``).  When it
    occurs several times, ``occurrence`` picks one (0 = the first, -1 = the last); left as
    None, a repeated word is an error that lists where it occurs.  A missing word raises
    ``ValueError`` naming both.
    """
    import re

    for name, value in (("prompt", prompt), ("target word", word)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"the {name} must be a non-empty string, got {value!r}")
    if occurrence is not None and (isinstance(occurrence, bool) or not isinstance(occurrence, int)):
        raise ValueError(f"occurrence must be an integer (0 = first, -1 = last), got {occurrence!r}")
    pattern = (r"(?<!\w)" if word[0].isalnum() else "") + re.escape(word) + \
        (r"(?!\w)" if word[-1].isalnum() else "")
    starts = [m.start() for m in re.finditer(pattern, prompt)]
    if not starts:
        inside = prompt.find(word)
        where = (f" (it occurs only inside a longer word, at character {inside})" if inside >= 0 else "")
        raise ValueError(f"target {word!r} does not occur in the prompt {prompt!r}{where}")
    if occurrence is None:
        if len(starts) > 1:
            raise ValueError(f"target {word!r} occurs {len(starts)} times in {prompt!r} (at characters "
                             f"{', '.join(map(str, starts))}); choose one with occurrence=0..{len(starts) - 1} "
                             f"(or -1 for the last)")
        occurrence = 0
    if not -len(starts) <= occurrence < len(starts):
        raise ValueError(f"target {word!r} occurs {len(starts)} times in {prompt!r}; occurrence "
                         f"{occurrence} does not exist (valid: 0..{len(starts) - 1}, or -1 for the last)")
    start = starts[occurrence]
    return span_tokens(tokenizer, prompt, start, start + len(word), repr(word))


def span_tokens(tokenizer: Any, prompt: str, start: int, end: int, what: str = "the span") -> list[int]:
    """Positions of the tokens of ``prompt`` that overlap characters ``start:end``."""
    offsets = tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    found = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
    if not found:
        raise ValueError(f"target {what} covers no token of {prompt!r}")
    return found


# A role names a place in a prompt: an int (a token index, -1 = the last token), a word or
# span (whole words, as ``find``), (word, occurrence) for a repeated one, or a character
# span ``slice(start, end)`` (what a template's slot fills).
Role = Any


def role_positions(tokenizer: Any, prompt: str, role: Role, name: str = "role") -> list[int]:
    """The token positions (unpadded, ascending) of ``role`` in ``prompt``; an error names
    the role, the prompt and what a role may be."""
    n = len(tokenizer(prompt)["input_ids"])
    if isinstance(role, bool):
        raise ValueError(f"role {name!r}: {role!r} is a boolean, not a token index or a word")
    if isinstance(role, int) or (hasattr(role, "__index__") and not isinstance(role, (str, tuple, slice))):
        i = int(role)
        if not -n <= i < n:
            raise ValueError(f"role {name!r}: token index {i} is out of range for {prompt!r} "
                             f"({n} tokens: valid 0..{n - 1} or -{n}..-1)")
        return [i % n]
    if isinstance(role, slice):
        return span_tokens(tokenizer, prompt, role.start, role.stop, f"role {name!r}")
    if isinstance(role, tuple) and len(role) == 2 and isinstance(role[0], str):
        word, occurrence = role
    elif isinstance(role, str):
        word, occurrence = role, None
    else:
        raise ValueError(f"role {name!r}: {role!r} is not a role; a role is a token index "
                         f"(-1 = last), a word or span of the prompt, or (word, occurrence)")
    try:
        return find(tokenizer, prompt, word, occurrence)
    except ValueError as error:
        raise ValueError(f"role {name!r}: {error}") from None


def fill_template(template: str, fills: dict) -> tuple[str, dict]:
    """A template's prompt and its roles as character spans.

    Slots are ``{NAME}``; the k-th occurrence of a repeated slot is role ``NAME1``,
    ``NAME2``, ... (IOI's S1, S2), a slot that occurs once is role ``NAME``.  ``fills``
    gives each slot's text by ``NAME`` (every occurrence) or by ``NAMEk`` (one occurrence:
    the ABC corruption replaces only S2).  Role ``END`` is the last token."""
    import re

    slots = list(re.finditer(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", template))
    if not slots:
        raise ValueError(f"template {template!r} has no {{SLOT}}")
    counts: dict = {}
    for m in slots:
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    seen: dict = {}
    out, spans, last = [], {}, 0
    length = 0
    for m in slots:
        slot = m.group(1)
        seen[slot] = seen.get(slot, 0) + 1
        role = f"{slot}{seen[slot]}" if counts[slot] > 1 else slot
        text = fills.get(role, fills.get(slot))
        if not isinstance(text, str) or not text:
            raise ValueError(f"template {template!r}: no text for slot {{{slot}}} (role {role}); "
                             f"fills give {sorted(fills)}")
        piece = template[last:m.start()]
        out.append(piece)
        length += len(piece)
        spans[role] = slice(length, length + len(text))
        out.append(text)
        length += len(text)
        last = m.end()
    out.append(template[last:])
    spans.setdefault("END", -1)
    return "".join(out), spans


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


def build_inputs(rows: Sequence[Sequence[int]], pad: int, width: Optional[int] = None) -> dict:
    """Left-padded ``input_ids``, ``attention_mask`` and mask-derived ``position_ids``
    (``width`` columns, default the longest row).

    Position ids count real tokens only, so a padded row computes what it would alone.
    """
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every row needs at least one token")
    width = max(len(r) for r in rows) if width is None else width
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


def paired_ids(tokenizer: Any, base: str, source: str,
               why: str = "they need the same number of tokens to patch position by position"
               ) -> tuple[list[int], list[int]]:
    """Token ids of a base prompt and its source prompt, which must have the same number of
    tokens (patches pair them position by position); ``why`` ends the error."""
    from .checks import text

    b_ids = list(tokenizer(text("base", base))["input_ids"])
    s_ids = list(tokenizer(text("source", source))["input_ids"])
    if len(b_ids) != len(s_ids):
        raise ValueError(f"base {base!r} and source {source!r} have {len(b_ids)} and "
                         f"{len(s_ids)} tokens; {why}")
    return b_ids, s_ids


def continuation_ids(tokenizer: Any, prompt: str, cont: str) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt`` and of ``" " + cont`` scored after it (no merge across them)."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    cont_ids = tokenizer(" " + cont.lstrip(), add_special_tokens=False)["input_ids"]
    return list(prompt_ids), list(cont_ids)


def check_length(model_config: Any, length: int, what: str = "a prompt") -> None:
    """Refuse ``length`` tokens past the model's positions (``max_position_embeddings``):
    GPT-2 would fail on an index, a rotary model would run silently past what it learned."""
    limit = getattr(model_config, "max_position_embeddings", None)
    if isinstance(limit, int) and not isinstance(limit, bool) and length > limit:
        raise ValueError(f"{what} is {length} tokens long, but this model has {limit} positions "
                         f"(max_position_embeddings): shorten it to at most {limit} tokens")

