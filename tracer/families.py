"""Architecture facts, one row per family, and the other names sites go by.

``FAMILIES`` says where each site lives in each supported architecture (module paths from the
top model, the MLP's projections and activation, the final norm's gain convention);
``ALIASES`` maps the seed's rep types and pyvene's components to sites.  ``tracer.sites``
resolves names through both.

Trace-time module (shipped to NDIF by value): imports nothing but ``typing``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional


class Family(NamedTuple):
    """Where each site lives in one architecture family (module paths from the top model)."""

    name: str
    layers: str
    embed: str
    final_norm: str
    lm_head: str
    attn: str
    mlp: str
    o_proj: str
    mid_norm: str
    q_proj: Optional[str] = None
    k_proj: Optional[str] = None
    v_proj: Optional[str] = None
    qkv: Optional[str] = None
    # "blocks": [q | k | v] each heads*dim wide (GPT-2); "interleaved": per head [q k v] (NeoX)
    qkv_layout: Optional[str] = None
    mlp_in: str = "mlp.up_proj"        # the MLP's first projection(s) (gated: up and gate)
    mlp_act: str = "mlp.act_fn"        # the activation function module
    mlp_down: str = "mlp.down_proj"    # the down projection (its input: the MLP's hidden state)
    norm_offset: float = 0.0           # RMSNorm gain is (offset + weight): Gemma stores w - 1


_LLAMA = dict(layers="model.layers", embed="model.embed_tokens", final_norm="model.norm",
              lm_head="lm_head", attn="self_attn", mlp="mlp", o_proj="self_attn.o_proj",
              mid_norm="post_attention_layernorm", q_proj="self_attn.q_proj",
              k_proj="self_attn.k_proj", v_proj="self_attn.v_proj")

FAMILIES = {
    "llama": Family("llama", **_LLAMA),
    "mistral": Family("mistral", **_LLAMA),
    "qwen2": Family("qwen2", **_LLAMA),
    # Gemma 2 norms the attention output before adding it, so the residual between
    # attention and MLP is the input of pre_feedforward_layernorm.
    "gemma2": Family("gemma2", **{**_LLAMA, "mid_norm": "pre_feedforward_layernorm",
                                  "norm_offset": 1.0}),
    "gpt2": Family("gpt2", layers="transformer.h", embed="transformer.wte",
                   final_norm="transformer.ln_f", lm_head="lm_head", attn="attn", mlp="mlp",
                   o_proj="attn.c_proj", mid_norm="ln_2", qkv="attn.c_attn",
                   qkv_layout="blocks", mlp_in="mlp.c_fc", mlp_act="mlp.act",
                   mlp_down="mlp.c_proj"),
    "gpt_neox": Family("gpt_neox", layers="gpt_neox.layers", embed="gpt_neox.embed_in",
                       final_norm="gpt_neox.final_layer_norm", lm_head="lm_head",
                       attn="attention", mlp="mlp", o_proj="attention.dense",
                       mid_norm="post_attention_layernorm", qkv="attention.query_key_value",
                       qkv_layout="interleaved", mlp_in="mlp.dense_h_to_4h", mlp_act="mlp.act",
                       mlp_down="mlp.dense_4h_to_h"),
}

# Other names for sites: the seed's rep types and pyvene's components.  A value is
# (site kind, flat) for a named site, flat meaning the heads merged into one vector per
# position (pyvene's "pos" unit on a head component), or ("module", family field, port) for
# a module that is not a named site.
ALIASES: dict[str, tuple] = {
    "lay": ("resid_post", False), "qry": ("head_q", False), "key": ("head_k", False),
    "val": ("head_v", False), "out": ("head_out", False),
    "block_input": ("resid_pre", False), "block_output": ("resid_post", False),
    "mlp_output": ("mlp_out", False), "attention_output": ("attn_out", False),
    "attention_value_output": ("head_out", True), "head_attention_value_output": ("head_out", False),
    "query_output": ("head_q", True), "key_output": ("head_k", True),
    "value_output": ("head_v", True), "head_query_output": ("head_q", False),
    "head_key_output": ("head_k", False), "head_value_output": ("head_v", False),
    "mlp_input": ("module", "mlp", "input"), "mlp_activation": ("module", "mlp_act", "output"),
    "attention_input": ("module", "attn", "input"),
}
# Within-layer order of modules that are not named sites (raw paths), between the stages above.
_RAW_STAGE = {"attn": 0.5, "q_proj": 0.9, "k_proj": 1.9, "v_proj": 2.9, "qkv": 0.9,
              "o_proj": 3.9, "mid_norm": 5.9, "mlp": 6.1, "mlp_in": 6.2, "mlp_act": 6.4,
              "mlp_down": 6.6}


class Dims(NamedTuple):
    """The shapes a site check needs, read from the model config outside any trace."""

    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    parallel_residual: bool = False


def family_of(config: Any) -> Family:
    """The site table for a transformers config, or an error naming the supported families."""
    kind = getattr(config, "model_type", None)
    if kind not in FAMILIES:
        raise ValueError(f"unsupported architecture {kind!r}: supported model types are "
                         f"{', '.join(sorted(FAMILIES))}")
    return FAMILIES[kind]


def dims_of(config: Any) -> Dims:
    """Layer count, widths and head counts of a transformers config."""
    n_heads = config.num_attention_heads
    hidden = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or hidden // n_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    parallel = config.model_type == "gpt_neox" and bool(getattr(config, "use_parallel_residual", True))
    return Dims(config.num_hidden_layers, hidden, n_heads, n_kv, head_dim, parallel)
