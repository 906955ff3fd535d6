"""pyvene's GRU toy models: ``GRUConfig``, ``GRUModel``, ``GRUForClassification``,
``GRULMHeadModel`` and ``create_gru`` / ``create_gru_lm`` / ``create_gru_classifier``, with
pyvene 0.1.8's module layout and parameter names and its component table.

A cell runs once per time step, so its components are read and written per step: pyvene's
``"t"`` unit (``unit_locations={"base": 3}`` is the cell's fourth call).  In nnsight terms
the site is the module's output at one occurrence, ``gru.cells.0.output.i3``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput, SequenceClassifierOutput
from transformers.utils import ModelOutput

from .create import tokenizer_from
from .mapping import INPUT, OUTPUT, register_modules
from .mlp import classification_loss, keep_fields, pack_output


class GRUConfig(PretrainedConfig):
    """pyvene's ``GRUConfig`` (same fields and defaults)."""

    model_type = "gru"

    def __init__(self, include_emb: bool = False, vocab_size: int = 50_257,
                 max_position_embeddings: int = 512, n_layer: int = 2, h_dim: int = 512,
                 n_labels: int = 2, include_bias: bool = True, pdrop: float = 0.3,
                 problem_type: str = "single_label_classification",
                 initializer_range: float = 0.02, **kwargs: Any):
        keep_fields(self, locals())
        super().__init__(**kwargs)


class GRUCell(nn.Module):
    """One GRU step: reset, update and new gates from ``x2h(x)`` and ``h2h(h)``."""

    def __init__(self, config: GRUConfig):
        super().__init__()
        self.h_dim = config.h_dim
        self.include_bias = config.include_bias
        self.x2h = nn.Linear(self.h_dim, 3 * self.h_dim, bias=self.include_bias)
        self.h2h = nn.Linear(self.h_dim, 3 * self.h_dim, bias=self.include_bias)
        self.reset_act = nn.Sigmoid()
        self.update_act = nn.Sigmoid()
        self.new_act = nn.Tanh()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in ``±1/sqrt(h_dim)``, as pyvene (and torch's GRU) initialise."""
        bound = 1.0 / self.h_dim ** 0.5
        for w in self.parameters():
            w.data.uniform_(-bound, bound)

    def forward(self, current_states: torch.Tensor,
                hidden_states: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The next hidden state."""
        if hidden_states is None:
            hidden_states = current_states.new_zeros(current_states.size(0), self.h_dim)
        x_reset, x_upd, x_new = self.x2h(current_states).chunk(3, 1)
        h_reset, h_upd, h_new = self.h2h(hidden_states).chunk(3, 1)
        reset = self.reset_act(x_reset + h_reset)
        update = self.update_act(x_upd + h_upd)
        new = self.new_act(x_new + reset * h_new)
        return update * hidden_states + (1 - update) * new


@dataclass
class GRUModelOutput(ModelOutput):
    """Every step's last-layer state and the final step's."""

    last_hidden_state: Optional[torch.FloatTensor] = None
    hidden_states: Optional[torch.FloatTensor] = None


class GRUPreTrainedModel(PreTrainedModel):
    """Initialises embeddings from ``initializer_range`` (the cells initialise themselves)."""

    config_class = GRUConfig

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()


class GRUModel(GRUPreTrainedModel):
    """pyvene's ``GRUModel``: ``n_layer`` stacked cells run step by step over the sequence."""

    def __init__(self, config: GRUConfig):
        super().__init__(config)
        self.config = config
        self.h_dim = config.h_dim
        self.include_bias = config.include_bias
        self.n_layer = config.n_layer
        if config.include_emb:
            self.wte = nn.Embedding(config.vocab_size, self.h_dim)
            self.wpe = nn.Embedding(config.max_position_embeddings, self.h_dim)
        self.cells = nn.ModuleList([GRUCell(self.config) for _ in range(self.n_layer)])
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.wte

    def set_input_embeddings(self, new_embeddings: nn.Module) -> None:
        self.wte = new_embeddings

    def forward(self, input_ids: Optional[torch.LongTensor] = None,
                position_ids: Optional[torch.LongTensor] = None,
                inputs_embeds: Optional[torch.FloatTensor] = None,
                hidden_states: Optional[torch.FloatTensor] = None,
                output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None) -> Any:
        """``(every step's last-layer state (batch, T, h_dim), the last one)``; pyvene calls
        the cells step by step, layer by layer (the order its ``"t"`` unit counts)."""
        embeds = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        if position_ids is not None:
            embeds = embeds + self.wpe(position_ids)
        batch, steps = embeds.shape[0], embeds.shape[1]
        h0 = embeds.new_zeros(self.n_layer, batch, self.h_dim) if hidden_states is None else hidden_states
        state = [h0[layer] for layer in range(self.n_layer)]
        outputs = []
        current = None
        for t in range(steps):
            for layer, cell in enumerate(self.cells):
                below = embeds[:, t, :] if layer == 0 else state[layer - 1]
                current = cell(below, state[layer])
                state[layer] = current
            outputs.append(current)
        every = torch.stack(outputs, dim=1)
        if not return_dict:
            return tuple(v for v in (every, current) if v is not None)
        return GRUModelOutput(hidden_states=every, last_hidden_state=current)


class GRUForClassification(GRUPreTrainedModel):
    """pyvene's ``GRUForClassification``: the last (unpadded) step's state through ``score``."""

    def __init__(self, config: GRUConfig):
        super().__init__(config)
        self.n_labels = config.n_labels
        self.gru = GRUModel(config)
        self.score = nn.Linear(config.h_dim, self.n_labels, bias=False)

    def forward(self, input_ids: Optional[torch.LongTensor] = None,
                position_ids: Optional[torch.LongTensor] = None,
                inputs_embeds: Optional[torch.FloatTensor] = None,
                attention_mask: Optional[torch.FloatTensor] = None,
                labels: Optional[torch.LongTensor] = None,
                output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None) -> Any:
        """Label logits from each row's last step (by ``attention_mask``, else the last)."""
        # pyvene passes its arguments positionally, so GRUModel always starts from a zero
        # state and returns a tuple unless return_dict: the same here, said by keyword
        out = self.gru(input_ids, position_ids, inputs_embeds, return_dict=return_dict)
        every = out[0]
        batch, steps = every.shape[0], every.shape[1]
        if attention_mask is None:
            last = torch.full((batch,), steps - 1, dtype=torch.long, device=every.device)
        else:
            last = attention_mask.sum(dim=-1).long() - 1
        logits = self.score(every[torch.arange(batch, device=every.device), last])
        loss = None if labels is None else classification_loss(self.config, logits, labels,
                                                                self.n_labels)
        return pack_output(loss, logits, out, return_dict, SequenceClassifierOutput)


class GRULMHeadModel(GRUPreTrainedModel):
    """pyvene's ``GRULMHeadModel``: every step's state through ``lm_head``."""

    _tied_weights_keys = ["lm_head.weight"]

    def __init__(self, config: GRUConfig):
        super().__init__(config)
        self.n_labels = config.n_labels
        self.gru = GRUModel(config)
        self.lm_head = nn.Linear(config.h_dim, config.vocab_size, bias=False)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def forward(self, input_ids: Optional[torch.LongTensor] = None,
                position_ids: Optional[torch.LongTensor] = None,
                inputs_embeds: Optional[torch.FloatTensor] = None,
                labels: Optional[torch.LongTensor] = None,
                output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None) -> Any:
        """Next-token logits at every step (and the shifted LM loss with ``labels``)."""
        out = self.gru(input_ids, position_ids, inputs_embeds, return_dict=return_dict)
        logits = self.lm_head(out[0])
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            loss = nn.functional.cross_entropy(logits[..., :-1, :].reshape(-1, logits.size(-1)),
                                               labels[..., 1:].reshape(-1))
        return pack_output(loss, logits, out, return_dict, CausalLMOutput)


def _create(kind: type, config: GRUConfig, tokenizer_name: Optional[str],
            cache_dir: Optional[str]) -> tuple:
    tokenizer = None if tokenizer_name is None else tokenizer_from(tokenizer_name, cache_dir)
    return config, tokenizer, kind(config=config)


def create_gru(config: GRUConfig, tokenizer_name: Optional[str] = None,
               cache_dir: Optional[str] = None) -> tuple:
    """pyvene's ``create_gru``: ``(config, tokenizer or None, GRUModel)`` (pyvene 0.1.8's
    own fails on an import of ``models.gru``)."""
    return _create(GRUModel, config, tokenizer_name, cache_dir)


def create_gru_lm(config: GRUConfig, tokenizer_name: Optional[str] = None,
                  cache_dir: Optional[str] = None) -> tuple:
    """pyvene's ``create_gru_lm``: ``(config, tokenizer or None, GRULMHeadModel)`` (pyvene
    0.1.8's own fails on an import of ``models.gru``)."""
    return _create(GRULMHeadModel, config, tokenizer_name, cache_dir)


def create_gru_classifier(config: GRUConfig, tokenizer_name: Optional[str] = None,
                          cache_dir: Optional[str] = None) -> tuple:
    """pyvene's ``create_gru_classifier``: ``(config, tokenizer or None, GRUForClassification)``."""
    return _create(GRUForClassification, config, tokenizer_name, cache_dir)


# pyvene's component table
_COMPONENTS = {
    "cell_input": ("cells[%s]", INPUT), "cell_output": ("cells[%s]", OUTPUT),
    "reset_gate_input": ("cells[%s].reset_act", INPUT),
    "update_gate_input": ("cells[%s].update_act", INPUT),
    "new_gate_input": ("cells[%s].new_act", INPUT),
    "reset_gate_output": ("cells[%s].reset_act", OUTPUT),
    "update_gate_output": ("cells[%s].update_act", OUTPUT),
    "new_gate_output": ("cells[%s].new_act", OUTPUT),
    "x2h_output": ("cells[%s].x2h", OUTPUT), "h2h_output": ("cells[%s].h2h", OUTPUT),
}
# pyvene's thirds of x2h/h2h (reset, update, new): listed so that naming one says what to use
_COMPONENTS.update({f"{gate}_{proj}_output": (f"cells[%s].{proj}", OUTPUT, ("split_three", k))
                    for proj in ("x2h", "h2h") for k, gate in enumerate(("reset", "update", "new"))})
_DIMS = {k: ("h_dim*3",) if k in ("x2h_output", "h2h_output") else ("h_dim",) for k in _COMPONENTS}
register_modules(GRUModel, _COMPONENTS, _DIMS)
for _cls in (GRUForClassification, GRULMHeadModel):
    register_modules(_cls, {k: (f"gru.{v[0]}",) + v[1:] for k, v in _COMPONENTS.items()}, _DIMS)
