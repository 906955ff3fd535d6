"""The nnsight wrapper the front end puts around a model it is given (what ``IntervenableModel``
and its ``load`` both need)."""

from __future__ import annotations

from typing import Any

import nnsight
from nnsight.intervention.envoy import Envoy
from nnsight.modeling.transformers import TransformersModel


def wrap(model: Any, tokenizer: Any = None) -> Any:
    """An nnsight wrapper around ``model`` (kept as is when it already is one)."""
    if isinstance(model, Envoy):
        return model
    if hasattr(model, "config") and hasattr(model, "generate"):
        if tokenizer is None:
            try:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(model.config._name_or_path,
                                                          local_files_only=True)
            except Exception:  # noqa: BLE001 - no local tokenizer: forward works, generate won't
                tokenizer = None
        if tokenizer is not None:
            return TransformersModel(model, tokenizer=tokenizer)
    return nnsight.NNsight(model)
