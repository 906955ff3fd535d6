"""Site names: the kinds of site, their order inside a layer, and parsing a name into
(kind, layer) with one clear error for a name that does not exist.

Trace-time module (``tracer.sites`` resolves names with it, locally and on NDIF): it imports
only the package's checks and family tables.
"""

from __future__ import annotations

from typing import Optional

from .checks import SiteError, integer
from .families import ALIASES

LAYER_SITES = ("resid_pre", "head_q", "head_k", "head_v", "head_out", "attn_out",
               "resid_mid", "mlp_out", "resid_post")
MOE_SITES = ("router",)  # layer sites of mixture-of-experts layers only
# the attention scores (the softmax's input, masked) and probabilities, (batch, query, heads,
# key), inside eager attention only, so they are not among the sites a sweep or check visits
PATTERN_SITES = ("attn_scores", "attn_pattern")
# each head's share of the attention output (batch, seq, heads, hidden): computed from
# head_out and the output projection's weight, so it can be read but not written
RESULT_SITES = ("head_result",)
MODEL_SITES = ("embed", "final", "logits")
OTHER_LAYER_SITES = MOE_SITES + PATTERN_SITES + RESULT_SITES
SITE_NAMES = ("embed",) + LAYER_SITES + OTHER_LAYER_SITES + ("final", "logits")
HEAD_SITES = ("head_q", "head_k", "head_v", "head_out")


# Execution order inside one layer; nnsight 0.8 only serves values in the order the model
# computes them, so several sites touched in one invoke must be visited in this order.
_STAGE = {name: i for i, name in enumerate(LAYER_SITES)}
_STAGE["router"] = _STAGE["resid_mid"] + 0.5
_STAGE["attn_scores"] = _STAGE["head_v"] + 0.4  # after q, k and v, before the heads' output
_STAGE["attn_pattern"] = _STAGE["head_v"] + 0.5
_STAGE["head_result"] = _STAGE["head_out"] + 0.5


def split_call(name: str) -> tuple[str, Optional[int]]:
    """``gru.cells.0.output.i3`` -> (``gru.cells.0.output``, 3): a module's output at its
    fourth call in one forward pass (nnsight's occurrence suffix; recurrent cells)."""
    head, _, last = name.rpartition(".")
    if head.endswith((".output", ".input")) and last[:1] == "i" and last[1:].isdigit():
        return head, int(last[1:])
    return name, None


def _is_raw_path(name: str) -> bool:
    """``model.layers[3].mlp.output``-style module paths (not a normalized site name),
    optionally at one call (``.i3``)."""
    head, _, port = split_call(name)[0].rpartition(".")
    first = name.split(".")[0]
    return bool(head) and port in ("output", "input") and first not in SITE_NAMES \
        and first not in ALIASES


def _parse(name: str, layer: Optional[int]) -> tuple[str, Optional[int]]:
    if not isinstance(name, str):
        raise SiteError(f"a site name must be a string such as 'resid_post.3', got {name!r}")
    if layer is not None:
        layer = integer(f"the layer of site {name!r}", layer, error=SiteError)
    kind, dot, rest = name.partition(".")
    if kind not in SITE_NAMES:
        raise SiteError(f"unknown site {name!r}; valid sites are {', '.join(SITE_NAMES)} "
                         f"(layer sites as 'name.layer', e.g. 'resid_post.3'), their aliases "
                         f"{', '.join(ALIASES)}, TransformerLens hook names (blocks.3.hook_resid_post, "
                         f"blocks.3.attn.hook_z, ...), or a module path ending in .output or .input")
    if dot:
        if not rest.lstrip("-").isdigit():
            raise SiteError(f"site {name!r}: the part after the dot must be a layer number")
        if layer is not None and int(rest) != layer:
            raise SiteError(f"site {name!r} names layer {rest} but layer={layer} was given")
        layer = int(rest)
    if kind in LAYER_SITES + OTHER_LAYER_SITES and layer is None:
        raise SiteError(f"site {kind!r} needs a layer, e.g. '{kind}.0'")
    return kind, layer


def _check_layer(kind: str, layer: int, n_layers: int) -> int:
    layer = integer(f"the layer of site {kind!r}", layer, error=SiteError)
    if not -n_layers <= layer < n_layers:
        raise SiteError(f"layer {layer} out of range for site {kind!r}: the model has "
                         f"{n_layers} layers, valid layers are 0..{n_layers - 1} "
                         f"(or -{n_layers}..-1)")
    return layer % n_layers
