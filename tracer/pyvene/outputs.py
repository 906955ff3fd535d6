"""What a front-end call returns beyond the model's output: pyvene's ``return_dict`` output
and the causal LM loss of ``labels=``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """transformers' causal LM loss: next-token cross-entropy, labels -100 ignored."""
    labels = labels.to(logits.device)
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels have shape {tuple(labels.shape)}; the base input is "
                         f"{tuple(logits.shape[:2])}")
    return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                       ignore_index=-100)


class IntervenableModelOutput(dict):
    """pyvene's ``return_dict=True`` output: ``original_outputs``, ``intervened_outputs``,
    ``collected_activations`` (as attributes and keys)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None
