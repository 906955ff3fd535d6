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
    # How a layer adds its sublayers to the residual stream (what check_model verifies):
    # "pre" (x + attn, then + mlp), "post" (x + post_attn(attn), then + post_mlp(mlp)),
    # "parallel" (x + attn + mlp, both reading x)
    residual: str = "pre"
    post_attn: Optional[str] = None    # "post": the norms applied to attn_out and mlp_out
    post_mlp: Optional[str] = None
    router: Optional[str] = None       # mixture of experts: the router, whose output[0] is
                                       # the logits (tokens, experts); mlp_out is the sparse block
    # attn_pattern: "submodule:op" of attn whose (last) call computes the softmax over the
    # keys (eager attention); None where the softmax spans more than the keys
    pattern: Optional[str] = ":attention_interface"
    layer_tuple: bool = False          # a decoder layer returns (hidden, ...), not a tensor
    # the norm between the residual stream and the query/key/value projections (None: they
    # read the stream itself), and the linear projections where head_q/head_k are norms
    # after them (OLMo 2): what a circuit's head receivers run on their own inputs
    attn_norm: Optional[str] = "input_layernorm"
    linear_qk: Optional[tuple] = None


_LLAMA = dict(layers="model.layers", embed="model.embed_tokens", final_norm="model.norm",
              lm_head="lm_head", attn="self_attn", mlp="mlp", o_proj="self_attn.o_proj",
              mid_norm="post_attention_layernorm", q_proj="self_attn.q_proj",
              k_proj="self_attn.k_proj", v_proj="self_attn.v_proj")

_GEMMA = {**_LLAMA, "mid_norm": "pre_feedforward_layernorm", "norm_offset": 1.0,
          "residual": "post", "post_attn": "post_attention_layernorm",
          "post_mlp": "post_feedforward_layernorm"}
# Mixture of experts: the experts are one fused module (3-D weights), so the MLP has no
# projection or activation modules of its own; per-expert outputs are not modules either.
_MOE = {**_LLAMA, "mlp_in": None, "mlp_act": None, "mlp_down": None}

FAMILIES = {
    "llama": Family("llama", **_LLAMA),
    "mistral": Family("mistral", **_LLAMA),
    "qwen2": Family("qwen2", **_LLAMA),
    # Qwen 3: RMS norms on each query and key head after the projection; head_q/head_k are
    # the projections' outputs (before the norm and RoPE), as for Llama.
    "qwen3": Family("qwen3", **_LLAMA),
    "qwen3_moe": Family("qwen3_moe", **{**_MOE, "router": "mlp.gate"}),
    # Gemma 2 and 3 norm the attention and MLP outputs before adding them, so the residual
    # between attention and MLP is the input of pre_feedforward_layernorm.
    "gemma2": Family("gemma2", **_GEMMA),
    "gemma3_text": Family("gemma3_text", **_GEMMA),
    # Phi-3: one fused qkv_proj ([q | k | v], k and v n_kv_heads wide) and gate_up_proj.
    "phi3": Family("phi3", **{**_LLAMA, "q_proj": None, "k_proj": None, "v_proj": None,
                              "qkv": "self_attn.qkv_proj", "qkv_layout": "blocks",
                              "mlp_in": "mlp.gate_up_proj", "mlp_act": "mlp.activation_fn"}),
    # OLMo 2: no pre-norms; the q/k norms span all heads, so head_q/head_k are the norms'
    # outputs (an edit before them would leak into every head through the norm).
    "olmo2": Family("olmo2", **{**_GEMMA, "mid_norm": "mlp", "norm_offset": 0.0,
                                "q_proj": "self_attn.q_norm", "k_proj": "self_attn.k_norm",
                                "attn_norm": None,
                                "linear_qk": ("self_attn.q_proj", "self_attn.k_proj")}),
    "mixtral": Family("mixtral", **{**_MOE, "router": "mlp.gate"}),
    # gpt-oss: the MLP returns (output, router scores); mlp_out is the output.
    # (its attention's softmax also spans a learned sink column, so it has no attn_pattern)
    "gpt_oss": Family("gpt_oss", **{**_MOE, "router": "mlp.router", "pattern": None}),
    "gpt2": Family("gpt2", layers="transformer.h", embed="transformer.wte",
                   final_norm="transformer.ln_f", lm_head="lm_head", attn="attn", mlp="mlp",
                   o_proj="attn.c_proj", mid_norm="ln_2", qkv="attn.c_attn",
                   qkv_layout="blocks", mlp_in="mlp.c_fc", mlp_act="mlp.act",
                   mlp_down="mlp.c_proj", attn_norm="ln_1"),
    # GPT-Neo (TinyStories, pyvene's generation tutorial): GPT-2's layout with separate
    # q/k/v projections inside attn.attention, unscaled attention, local layers with a window
    "gpt_neo": Family("gpt_neo", layers="transformer.h", embed="transformer.wte",
                      final_norm="transformer.ln_f", lm_head="lm_head", attn="attn", mlp="mlp",
                      o_proj="attn.attention.out_proj", mid_norm="ln_2",
                      q_proj="attn.attention.q_proj", k_proj="attn.attention.k_proj",
                      v_proj="attn.attention.v_proj", mlp_in="mlp.c_fc", mlp_act="mlp.act",
                      mlp_down="mlp.c_proj", pattern="attention:self__attn", layer_tuple=True,
                      attn_norm="ln_1"),
    "gpt_neox": Family("gpt_neox", layers="gpt_neox.layers", embed="gpt_neox.embed_in",
                       final_norm="gpt_neox.final_layer_norm", lm_head="lm_head",
                       attn="attention", mlp="mlp", o_proj="attention.dense",
                       mid_norm="post_attention_layernorm", qkv="attention.query_key_value",
                       qkv_layout="interleaved", mlp_in="mlp.dense_h_to_4h", mlp_act="mlp.act",
                       mlp_down="mlp.dense_4h_to_h", residual="parallel"),
}

# Model types with no row: their components are module paths only (pyvene's toy MLP and
# GRU, and any model whose pyvene table has no attention); tracer.pyvene.mapping adds them.
MODULE_ONLY: set = set()

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
    "attention_weight": ("attn_pattern", False),
}
# TransformerLens hook names of a block (``blocks.L.<hook>``) and the site kind each is.
TRANSFORMER_LENS = {"hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid",
                    "hook_resid_post": "resid_post", "hook_attn_out": "attn_out",
                    "hook_mlp_out": "mlp_out", "attn.hook_q": "head_q", "attn.hook_k": "head_k",
                    "attn.hook_v": "head_v", "attn.hook_z": "head_out", "attn.hook_pattern": "attn_pattern",
                    "attn.hook_attn_scores": "attn_scores", "attn.hook_result": "head_result"}


def from_transformer_lens(name: str) -> Optional[str]:
    """``blocks.5.attn.hook_z`` -> ``head_out.5``; None for any other name."""
    head, _, rest = name.partition(".")
    layer, _, hook = rest.partition(".")
    if head != "blocks" or not layer.isdigit() or hook not in TRANSFORMER_LENS:
        return None
    return f"{TRANSFORMER_LENS[hook]}.{layer}"


# Within-layer order of modules that are not named sites (raw paths), between the stages above.
_RAW_STAGE = {"attn": 0.5, "q_proj": 0.9, "k_proj": 1.9, "v_proj": 2.9, "qkv": 0.9,
              "o_proj": 3.9, "mid_norm": 5.9, "mlp": 6.1, "router": 6.15, "mlp_in": 6.2,
              "mlp_act": 6.4, "mlp_down": 6.6}


class Dims(NamedTuple):
    """The shapes a site check needs, read from the model config outside any trace."""

    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    parallel_residual: bool = False
    n_experts: int = 0


def family_of(config: Any) -> Family:
    """The site table for a transformers config, or an error naming the supported families."""
    kind = getattr(config, "model_type", None)
    if kind not in FAMILIES:
        raise ValueError(f"unsupported architecture {kind!r}: supported model types are "
                         f"{', '.join(sorted(FAMILIES))} (tracer.check_model(model) offers a "
                         f"known row to a model laid out like Llama, GPT-2 or GPT-NeoX)")
    return FAMILIES[kind]


def family_for(config: Any, root: Any) -> Family:
    """The site table for a model whose torch module is ``root``: a base model without its
    LM head (``GPT2Model``, ``LlamaModel``: pyvene's ``create_gpt2``) has the decoder's
    modules at its top, so the table's paths lose their first part and it has no logits."""
    fam = family_of(config)
    top, _, rest = fam.layers.partition(".")
    if root is None or not rest or top in root._modules or rest.split(".")[0] not in root._modules:
        return fam
    strip = lambda path: path.split(".", 1)[1] if path.startswith(top + ".") else path  # noqa: E731
    return fam._replace(layers=strip(fam.layers), embed=strip(fam.embed),
                   final_norm=strip(fam.final_norm), lm_head=None)


def dims_of(config: Any) -> Dims:
    """Layer count, widths and head counts of a transformers config."""
    n_heads = config.num_attention_heads
    hidden = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or hidden // n_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    parallel = config.model_type == "gpt_neox" and bool(getattr(config, "use_parallel_residual", True))
    experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None) or 0
    return Dims(config.num_hidden_layers, hidden, n_heads, n_kv, head_dim, parallel, int(experts))


def moe_layers(top: Any, config: Any) -> list[int]:
    """The layers of a torch module ``top`` whose MLP is a mixture of experts with a router
    (empty for dense families; Qwen3-MoE's ``mlp_only_layers`` are dense)."""
    fam = family_of(config)
    if fam.router is None:
        return []
    found = []
    for layer in range(dims_of(config).n_layers):
        try:
            top.get_submodule(f"{fam.layers}.{layer}.{fam.router}")
        except AttributeError:
            continue
        found.append(layer)
    return found
