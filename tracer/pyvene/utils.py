"""The helpers pyvene 0.1.8 exports at top level (``pyvene.models.basic_utils``), with its
semantics: unit-location builders (``GET_LOC``, ``get_list_depth``, ``get_batch_size``),
the boundary masks of boundless DAS, seeding, parameter counting and pretty-printing of
a distribution over the vocabulary.  (pyvene's ``get_type_from_string``, which imports any
module a string names, is left out on purpose.)"""

from __future__ import annotations

import random
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

lsm = nn.LogSoftmax(dim=2)
sm = nn.Softmax(dim=2)


def GET_LOC(LOC: Any, unit: str = "h.pos", batch_size: int = 1) -> list:  # noqa: N802 - pyvene's name
    """``(head, position)`` as pyvene's nested ``h.pos`` unit location for ``batch_size`` rows."""
    if unit != "h.pos":
        raise ValueError(f"GET_LOC builds 'h.pos' unit locations only (as pyvene's), not {unit!r}")
    return [[[[LOC[0]]] * batch_size, [[LOC[1]]] * batch_size]]


def get_list_depth(lst: Any) -> int:
    """The nesting depth of a list (0 for anything else)."""
    if isinstance(lst, list):
        return 1 + max((get_list_depth(item) for item in lst), default=0)
    return 0


def get_batch_size(model_input: Any) -> int:
    """The batch size of a tensor or of a dict of tensors (its first entry)."""
    if isinstance(model_input, torch.Tensor):
        return int(model_input.shape[0])
    for value in dict(model_input).values():
        return int(value.shape[0])
    raise ValueError("get_batch_size: the input holds no tensor")


def set_seed(seed: int) -> None:
    """Seed python's, numpy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def sigmoid_boundary(_input: torch.Tensor, boundary_x: Any, boundary_y: Any, temperature: Any) -> torch.Tensor:
    """A soft mask, 1 between the boundaries and 0 outside, sharpened by ``temperature``."""
    return torch.sigmoid((_input - boundary_x) / temperature) * torch.sigmoid((boundary_y - _input) / temperature)


def harmonic_sigmoid_boundary(_input: torch.Tensor, boundary_x: Any, boundary_y: Any,
                              temperature: Any) -> torch.Tensor:
    """pyvene's harmonic variant of ``sigmoid_boundary``."""
    inside = (_input > boundary_x) & (_input < boundary_y)
    harmonic = (0.5 * (torch.abs(_input - boundary_x) ** (-1) + torch.abs(_input - boundary_y) ** (-1))) ** (-1)
    return ((_input <= boundary_x) * torch.sigmoid((_input - boundary_x) / temperature)
            + (_input >= boundary_y) * torch.sigmoid((boundary_y - _input) / temperature)
            + inside * torch.sigmoid(harmonic / temperature))


def count_parameters(model: nn.Module) -> int:
    """Parameters that require gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def random_permutation_matrix(n: int) -> torch.Tensor:
    """An ``n x n`` permutation matrix (torch's generator)."""
    return torch.eye(n)[torch.randperm(n)]


def closeness_to_permutation_loss(rotation: torch.Tensor) -> torch.Tensor:
    """How far a matrix is from a permutation (0 for one)."""
    row = torch.abs(rotation.sum(dim=1) - 1.0).mean()
    col = torch.abs(rotation.sum(dim=0) - 1.0).mean()
    return 0.5 * (row + col) + (rotation * (1 - rotation)).mean()


def embed_to_distrib(model: Any, embed: torch.Tensor, log: bool = False, logits: bool = False) -> torch.Tensor:
    """Hidden states read out through the model's unembedding: a distribution over the
    vocabulary (softmax over the last axis of a 3-d input, as pyvene's), its log, or the
    logits.  pyvene does it for GPT-2 only; any model with (tied or own) output embeddings
    works here."""
    inner = getattr(model, "_module", model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if head is None:
        head = inner.get_input_embeddings()
    with torch.no_grad():
        vocab = torch.matmul(embed, head.weight.t())
        if logits:
            return vocab
        return lsm(vocab) if log else sm(vocab)


def format_token(tokenizer: Any, tok: Any) -> str:
    """A token as text with spaces shown as ``_`` and newlines escaped."""
    return tokenizer.decode(tok).replace(" ", "_").replace("\n", "\\n")


def top_vals(tokenizer: Any, res: torch.Tensor, n: int = 10, return_results: bool = False) -> Optional[list]:
    """The ``n`` largest values of a distribution over the vocabulary: printed, or returned
    as ``(token, value)`` pairs."""
    values, indices = torch.topk(res, n)
    out = [(format_token(tokenizer, int(i)), float(v)) for v, i in zip(values, indices)]
    if return_results:
        return out
    for tok, value in out:
        print(f"{tok:<20} {value}")
    return None
