"""pyvene's MLP toy model: ``MLPConfig``, ``MLPModel``, ``MLPForClassification`` and
``create_mlp_classifier``, with pyvene 0.1.8's module layout and parameter names (a state
dict moves between the two unchanged) and its component table.

pyvene's DAS and IIT tutorials train these on ``inputs_embeds`` of shape ``(batch, 1,
h_dim)``: each block is ``dropout(act(ff1(x)))``, the classifier a linear ``score`` on the
last block's output.  Components are module paths (``mlp.h.0.act.output``): the model has
no transformer site table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import ModelOutput

from .create import tokenizer_from
from .mapping import INPUT, OUTPUT, register_modules


class MLPConfig(PretrainedConfig):
    """pyvene's ``MLPConfig`` (same fields and defaults)."""

    model_type = "mlp"

    def __init__(self, include_emb: bool = False, vocab_size: int = 50_257,
                 max_position_embeddings: int = 512, n_layer: int = 2, h_dim: int = 512,
                 num_classes: int = 2, activation_function: str = "gelu", pdrop: float = 0.3,
                 problem_type: str = "single_label_classification", include_bias: bool = True,
                 squeeze_output: bool = True, **kwargs: Any):
        keep_fields(self, locals())
        super().__init__(**kwargs)


def keep_fields(config: PretrainedConfig, given: dict) -> None:
    """A toy config's own arguments as its fields (pyvene sets them before the base class)."""
    for name, value in given.items():
        if name not in ("self", "kwargs", "__class__"):
            setattr(config, name, value)


@dataclass
class MLPModelOutput(ModelOutput):
    """The last block's output and, when asked, every block's input."""

    last_hidden_state: Optional[torch.FloatTensor] = None
    hidden_states: Optional[tuple] = None


class MLPBlock(nn.Module):
    """``dropout(act(ff1(x)))``."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.ff1 = nn.Linear(config.h_dim, config.h_dim, bias=config.include_bias)
        self.act = ACT2FN[config.activation_function]
        self.dropout = nn.Dropout(config.pdrop)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """One block."""
        return self.dropout(self.act(self.ff1(hidden_states)))


class MLPModel(PreTrainedModel):
    """pyvene's ``MLPModel``: optional token and position embeddings, then ``n_layer`` blocks."""

    config_class = MLPConfig

    def __init__(self, config: MLPConfig):
        super().__init__(config)
        self.config = config
        self.h_dim = config.h_dim
        if config.include_emb:
            self.wte = nn.Embedding(config.vocab_size, self.h_dim)
            self.wpe = nn.Embedding(config.max_position_embeddings, self.h_dim)
        self.dropout = nn.Dropout(config.pdrop)
        self.h = nn.ModuleList([MLPBlock(config) for _ in range(config.n_layer)])
        self.post_init()

    def forward(self, input_ids: Optional[torch.LongTensor] = None,
                position_ids: Optional[torch.LongTensor] = None,
                inputs_embeds: Optional[torch.FloatTensor] = None,
                output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None) -> Any:
        """The blocks over ``inputs_embeds`` (or embedded ``input_ids``)."""
        hidden = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        if position_ids is not None:
            hidden = hidden + self.wpe(position_ids)
        hidden = self.dropout(hidden)
        seen: Optional[tuple] = () if output_hidden_states else None
        for block in self.h:
            if seen is not None:
                seen = seen + (hidden,)
            hidden = block(hidden)
        if seen is not None:
            seen = seen + (hidden,)
        if not return_dict:
            return tuple(v for v in (hidden, seen) if v is not None)
        return MLPModelOutput(last_hidden_state=hidden, hidden_states=seen)


def pack_output(loss: Any, logits: torch.Tensor, out: Any, return_dict: Optional[bool],
                output_class: type) -> Any:
    """A toy model's result as pyvene returns it: ``(loss?, logits, *rest of the body's
    tuple)``, or ``output_class`` with ``return_dict``."""
    if not return_dict:
        rest = (logits,) + tuple(out[1:])
        return rest if loss is None else (loss,) + rest
    return output_class(loss=loss, logits=logits, hidden_states=out.hidden_states)


def classification_loss(config: Any, logits: torch.Tensor, labels: torch.Tensor,
                        n_classes: int) -> torch.Tensor:
    """transformers' sequence-classification loss by ``config.problem_type`` (regression,
    single- or multi-label), inferred from the labels when unset, as pyvene's toy models do."""
    if config.problem_type is None:
        if n_classes == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        squeeze = n_classes == 1
        return nn.functional.mse_loss(logits.squeeze() if squeeze else logits,
                                      labels.squeeze() if squeeze else labels)
    if config.problem_type == "single_label_classification":
        return nn.functional.cross_entropy(logits.view(-1, n_classes), labels.view(-1))
    return nn.functional.binary_cross_entropy_with_logits(logits, labels)


class MLPForClassification(PreTrainedModel):
    """pyvene's ``MLPForClassification``: ``MLPModel`` and a linear ``score`` head."""

    config_class = MLPConfig

    def __init__(self, config: MLPConfig):
        super().__init__(config)
        self.num_classes = config.num_classes
        self.squeeze_output = config.squeeze_output
        self.mlp = MLPModel(config)
        self.score = nn.Linear(config.h_dim, self.num_classes, bias=config.include_bias)
        self.post_init()

    def forward(self, input_ids: Optional[torch.LongTensor] = None,
                position_ids: Optional[torch.LongTensor] = None,
                inputs_embeds: Optional[torch.FloatTensor] = None,
                labels: Optional[torch.LongTensor] = None,
                output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None) -> Any:
        """Class logits (squeezed over the length-1 position axis unless told not to)."""
        out = self.mlp(input_ids, position_ids, inputs_embeds, output_hidden_states, return_dict)
        logits = self.score(out[0])
        if self.squeeze_output:
            logits = logits.squeeze(1)
        loss = None if labels is None else classification_loss(self.config, logits, labels,
                                                                self.num_classes)
        return pack_output(loss, logits, out, return_dict, SequenceClassifierOutput)


def create_mlp_classifier(config: MLPConfig, tokenizer_name: Optional[str] = None,
                          cache_dir: Optional[str] = None) -> tuple:
    """pyvene's ``create_mlp_classifier``: ``(config, tokenizer or None, model)`` with
    random weights."""
    tokenizer = None
    if tokenizer_name is not None:
        tokenizer = tokenizer_from(tokenizer_name, cache_dir)
    return config, tokenizer, MLPForClassification(config=config)


# pyvene's component table: module path (``%s`` the layer) and hook
_COMPONENTS = {"block_input": ("h[%s]", INPUT), "block_output": ("h[%s]", OUTPUT),
               "mlp_activation": ("h[%s].act", OUTPUT)}
register_modules(MLPModel, _COMPONENTS, {k: ("h_dim",) for k in _COMPONENTS})
register_modules(MLPForClassification, {k: (f"mlp.{p}", hook) for k, (p, hook) in _COMPONENTS.items()},
                 {k: ("h_dim",) for k in _COMPONENTS})
