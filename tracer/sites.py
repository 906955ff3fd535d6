"""Normalized site names -> the tensor inside a trace, sliced by rows, positions and heads.

A site is a name such as ``"resid_post.5"`` or ``"head_q.3"``.  One small table per
architecture family says which module holds it and whether it is that module's input or
output; head sites are 4-D views ``(batch, seq, heads, head_dim)`` into the real projection
tensor, so GPT-2's fused ``c_attn`` and GPT-NeoX's interleaved ``query_key_value`` read
and write like Llama's separate ``q_proj``/``k_proj``/``v_proj``.

Writes are in place on the model's own tensor.  That is what makes ``resid_mid`` work: it
is the input of the second norm, and the decoder layer keeps the same tensor as its
residual, so an in-place edit reaches both.

This module runs inside traces (locally and on NDIF), so it imports only torch.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch

from .checks import SiteError, integers, selected_positions, selected_rows

Positions = Union[None, int, Sequence[int], torch.Tensor]
Heads = Union[None, int, Sequence[int]]
Rows = Union[None, int, Sequence[int]]

from .families import (ALIASES, FAMILIES, _RAW_STAGE,  # noqa: F401
                       dims_of, family_for, family_of, from_transformer_lens, moe_layers)
from .site_names import (HEAD_SITES, LAYER_SITES, MODEL_SITES, MOE_SITES,  # noqa: F401
                         OTHER_LAYER_SITES, PATTERN_SITES, RESULT_SITES, SITE_NAMES, _STAGE,
                         _check_layer, _is_raw_path, _parse, split_call)


def module(model: Any) -> torch.nn.Module:
    """The torch module under an nnsight wrapper (or the module itself)."""
    found = _module_of(model)
    if found is None:
        raise TypeError(f"{type(model).__name__} is neither an nnsight model nor a torch module")
    return found


def config(model: Any) -> Any:
    """The transformers config of a wrapped model (raises AttributeError when it has none)."""
    return model.config if hasattr(model, "config") else module(model).config


def envoy(model: Any, path: str) -> Any:
    """Walk a dotted module path (``model.layers.3.mlp``) down the nnsight envoy tree."""
    node = model
    walked = []
    for part in path.split("."):
        try:
            node = node[int(part)] if part.isdigit() else getattr(node, part)
        except (AttributeError, IndexError, TypeError):
            children = [n for n, _ in _module_of(node).named_children()] if _module_of(node) is not None else []
            where = ".".join(walked) or "the model"
            raise SiteError(f"module path {path!r}: {where} has no child {part!r}; "
                             f"its children are {children}") from None
        walked.append(part)
    return node


def _module_of(node: Any) -> Optional[torch.nn.Module]:
    found = getattr(node, "_module", node)
    return found if isinstance(found, torch.nn.Module) else None


class Site:
    """One normalized site of one model, readable and writable inside any trace.

    ``read``/``write``/``edit`` select ``rows`` (of the current invoke's batch), token
    ``positions`` (an int, a list, or a per-row LongTensor of shape ``(rows, P)``; negative
    counts from the end) and, for head sites, ``heads``.  A selection keeps its axes:
    ``(rows, P, d)`` for stream sites and ``(rows, P, heads, head_dim)`` for head sites.
    """

    def __init__(self, model: Any, name: str, layer: Optional[int] = None):
        self.model = model
        self.raw_path: Optional[str] = None
        self.call: Optional[int] = None
        self.alias: Optional[str] = None
        self.flat = False
        name = _resolve_alias(model, name, layer, self)
        if _is_raw_path(name):
            self._init_raw(name)
            return
        cfg = config(model)
        self.family = family_for(cfg, _module_of(model))
        self.dims = dims_of(cfg)
        kind, layer = _parse(name, layer)
        if kind in LAYER_SITES + OTHER_LAYER_SITES:
            layer = _check_layer(kind, layer, self.dims.n_layers)
        elif layer is not None:
            raise SiteError(f"site {kind!r} takes no layer (got {layer}); layer sites are "
                             f"{', '.join(LAYER_SITES)}")
        if kind == "resid_mid" and self.dims.parallel_residual:
            raise SiteError("resid_mid does not exist in this GPT-NeoX model: it uses a "
                             "parallel residual (attention and MLP both read resid_pre); "
                             "use resid_pre, attn_out, mlp_out or resid_post")
        self.kind = kind
        self.layer = layer
        self.module_path, self.port = self._locate()
        if kind == "router":
            _check_router(self)
        if kind in PATTERN_SITES:
            _check_eager(self)

    def _init_raw(self, name: str) -> None:
        plain, self.call = split_call(name)
        path, port = plain.rsplit(".", 1)
        path = path.replace("[", ".").replace("]", "")
        envoy(self.model, path)  # fail now, with the valid children, not inside the trace
        self.kind, self.layer, self.family, self.dims = name, None, None, None
        self.raw_path, self.module_path, self.port = name, path, port
        try:
            self.family = family_for(config(self.model), _module_of(self.model))
            self.dims = dims_of(config(self.model))
        except (AttributeError, ValueError):
            pass  # any torch module: raw paths only
        if self.call is not None and self.family is not None:
            raise SiteError(f"site {name!r}: a call index (.i{self.call}) is for modules run "
                            f"several times in one pass (recurrent cells); a transformer's "
                            f"modules run once, so name the site without it")

    @property
    def name(self) -> str:
        """The name that resolves back to this site: ``kind.layer``, ``kind``, a flat head
        site's pyvene alias (``query_output.3``) or a module path."""
        if self.alias:
            return self.alias
        if self.raw_path:
            return self.raw_path
        return self.kind if self.layer is None else f"{self.kind}.{self.layer}"

    @property
    def n_heads(self) -> Optional[int]:
        """Heads addressable at this site (key/value heads for head_k/head_v), else None."""
        if self.flat or self.raw_path:
            return None
        if self.kind in ("head_k", "head_v"):
            return self.dims.n_kv_heads
        if self.kind in ("head_q", "head_out", "head_result") + PATTERN_SITES:
            return self.dims.n_heads
        return None

    @property
    def order(self) -> tuple:
        """Sort key following the model's execution order."""
        if self.kind == "embed":
            return (-1, 0)
        if self.kind == "final":
            return (self.dims.n_layers, 0)
        if self.kind == "logits":
            return (self.dims.n_layers, 1)
        if self.raw_path:
            return self._raw_order()
        return (self.layer, _STAGE[self.kind])

    def _raw_order(self) -> tuple:
        """A raw path's order: that of the named site on the same module; inside a layer, the
        layer and the module's place in it; in a model without a transformers config (any
        torch module), module registration order."""
        if self.family is None:  # a recurrent cell's calls come step by step
            names = [n for n, _ in module(self.model).named_modules()]
            path = self.module_path if self.module_path in names else ""
            return (self.call or 0, names.index(path), 0 if self.port == "input" else 1)
        for name in valid_sites(self.model):
            other = Site(self.model, name)
            if (other.module_path, other.port) == (self.module_path, self.port):
                return other.order
        f, port_step = self.family, (0.0 if self.port == "input" else 0.05)
        for layer in range(self.dims.n_layers):
            prefix = f"{f.layers}.{layer}"
            if self.module_path == prefix:
                return (layer, -1 if self.port == "input" else len(_STAGE))
            if not self.module_path.startswith(prefix + "."):
                continue
            inner = self.module_path[len(prefix) + 1:]
            best, stage = "", 0.2  # modules before attention (the input norm)
            for field, value in _RAW_STAGE.items():
                path = getattr(f, field, None)
                if path and (inner == path or inner.startswith(path + ".")) and len(path) > len(best):
                    best, stage = path, value
            return (layer, stage + port_step + (0.01 if inner != best and best else 0.0))
        raise SiteError(f"raw module path {self.raw_path!r} is outside the layers and is not a "
                         f"known site of this model, so its execution order is unknown; apply "
                         f"it in its own invoke")

    def _locate(self) -> tuple[str, str]:
        f, k = self.family, self.kind
        if k == "embed":
            return f.embed, "output"
        if k == "final":
            return f.final_norm, "output"
        if k == "logits":
            if f.lm_head is None:
                raise SiteError("this model has no LM head (a base model such as GPT2Model), so "
                                "it has no 'logits' site; read 'final' instead")
            return f.lm_head, "output"
        layer = f"{f.layers}.{self.layer}"
        table = {
            "resid_pre": (layer, "input"),
            "resid_post": (layer, "output"),
            "resid_mid": (f"{layer}.{f.mid_norm}", "input"),
            "attn_out": (f"{layer}.{f.attn}", "output"),
            "mlp_out": (f"{layer}.{f.mlp}", "output"),
            "head_out": (f"{layer}.{f.o_proj}", "input"),
            "router": (f"{layer}.{f.router}", "output"),
            "attn_pattern": (f"{layer}.{f.attn}", "pattern"),
            "attn_scores": (f"{layer}.{f.attn}", "scores"),
            "head_result": (f"{layer}.{f.o_proj}", "input"),
        }
        if k in table:
            return table[k]
        proj = f.qkv or {"head_q": f.q_proj, "head_k": f.k_proj, "head_v": f.v_proj}[k]
        return f"{layer}.{proj}", "output"

    def __repr__(self) -> str:
        return f"Site({self.name!r})"

    # -- inside a trace ----------------------------------------------------------------

    def tensor(self) -> torch.Tensor:
        """The site's full tensor in the current invoke: ``(b, s, d)`` or ``(b, s, H, dh)``.

        For head sites it is a view into the model's tensor, so in-place writes land there.
        """
        if self.kind == "router":
            return self._router_logits()
        if self.kind in PATTERN_SITES:
            return self._pattern()
        if self.kind == "head_result":
            return self._result()
        return self.view(self.raw())

    def raw(self) -> torch.Tensor:
        """The module's own tensor the site lives in (the one autograd sees: gradients are
        read there, then ``view``-ed)."""
        node = envoy(self.model, self.module_path)
        # a site with a call (.i3) is read at the occurrence the trace is pinned to: the
        # caller loops ``for _ in tracer.iter[3]`` around it (execute.forward does)
        value = node.output if self.port == "output" else node.input
        return value[0] if isinstance(value, (tuple, list)) else value

    def view(self, value: torch.Tensor) -> torch.Tensor:
        """The site's part of its module's tensor (or of a gradient of that tensor)."""
        if self.raw_path or self.kind not in HEAD_SITES:
            return value
        d = self.dims
        heads = d.n_heads if self.kind in ("head_q", "head_out") else d.n_kv_heads
        if self.kind == "head_out" or self.family.qkv is None:
            return value.unflatten(-1, (heads, d.head_dim))
        i = ("head_q", "head_k", "head_v").index(self.kind)
        if self.family.qkv_layout == "blocks":  # [q | k | v]; k and v n_kv_heads wide
            q, kv = d.n_heads * d.head_dim, d.n_kv_heads * d.head_dim
            start, width = ((0, q), (q, kv), (q + kv, kv))[i]
            return value[..., start:start + width].unflatten(-1, (heads, d.head_dim))
        per_head = value.unflatten(-1, (d.n_heads, 3 * d.head_dim))
        return per_head[..., i * d.head_dim:(i + 1) * d.head_dim]

    def _result(self) -> torch.Tensor:
        """Each head's output through its slice of the output projection (bias left out, as
        TransformerLens's hook_result): (batch, seq, heads, hidden); summed over heads, plus
        the bias, it is the projection's output."""
        d = self.dims
        z = self.raw().unflatten(-1, (d.n_heads, d.head_dim))
        proj = envoy(self.model, self.module_path)
        weight = proj.weight
        # nn.Linear keeps (out, in); GPT-2's Conv1D keeps (in, out)
        per_head = (weight.T if isinstance(_module_of(proj), torch.nn.Linear) else weight)
        per_head = per_head.reshape(d.n_heads, d.head_dim, -1).to(z.dtype)
        return torch.einsum("bshd,hdm->bshm", z, per_head)

    def _pattern(self) -> torch.Tensor:
        """The softmax inside the layer's eager attention function, as (batch, query, heads,
        key): a view, so writes change what the values are averaged with.  ``attn_scores``
        is that softmax's input (the masked scores), also a view."""
        where, _, op = self.family.pattern.partition(":")
        attn = envoy(self.model, f"{self.module_path}.{where}" if where else self.module_path)
        calls = [n for n in attn.source.names if n.startswith(op)]
        inner = getattr(attn.source, calls[-1]).source
        ops = [n for n in inner.names if "softmax" in n]
        if len(ops) != 1:
            raise SiteError(f"site {self.name}: the {self.family.name} family's eager attention "
                            f"has {len(ops)} softmax calls, so its pattern is not one tensor")
        op = getattr(inner, ops[0])
        if self.kind == "attn_scores":
            return op.input.transpose(1, 2)
        return op.output.transpose(1, 2)

    def _router_logits(self) -> torch.Tensor:
        """The router's (tokens, experts) logits as (batch, seq, experts) of this invoke."""
        mlp = envoy(self.model, f"{self.family.layers}.{self.layer}.{self.family.mlp}")
        # the block's input comes before the router in the forward pass: read it first
        shape = mlp.input.shape
        flat = envoy(self.model, self.module_path).output[0]
        if flat.shape[0] != shape[0] * shape[1]:
            # nnsight splits only dim-0 batches between invokes; the router flattens tokens
            raise SiteError(f"site {self.name} can be read only in a trace with one invoke (the "
                            f"router flattens batch and tokens, which nnsight cannot split "
                            f"between invokes)")
        return flat.unflatten(0, (shape[0], shape[1]))

    @property
    def width(self) -> Optional[int]:
        """The last dimension of a selection (head_dim for head sites), None for raw paths."""
        if self.dims is None or self.raw_path:
            return None
        if self.kind in HEAD_SITES:
            if self.flat:
                return self.dims.head_dim * (self.dims.n_kv_heads if self.kind in ("head_k", "head_v")
                                             else self.dims.n_heads)
            return self.dims.head_dim
        if self.kind == "router":
            return self.dims.n_experts
        if self.kind in PATTERN_SITES:
            return None  # as many keys as the input has tokens
        return config(self.model).vocab_size if self.kind == "logits" else self.dims.hidden

    def read(self, positions: Positions = None, heads: Heads = None, rows: Rows = None) -> torch.Tensor:
        """The selected values (a copy when anything is selected, else the tensor itself);
        a flat head site gives ``(rows, P, heads * head_dim)``."""
        x = self.tensor()
        index = self._index(x, positions, heads, rows)
        got = x if index is None else x[index]
        return got.flatten(-2) if self.flat else got

    def write(self, value: Any, positions: Positions = None, heads: Heads = None,
              rows: Rows = None) -> None:
        """Overwrite the selection in place with ``value`` (broadcast to the selection)."""
        x = self.tensor()
        if self.flat:
            value = torch.as_tensor(value).unflatten(-1, x.shape[-2:])
        self._put(x, self._index(x, positions, heads, rows), value)

    def edit(self, fn: Callable[[torch.Tensor], torch.Tensor], positions: Positions = None,
             heads: Heads = None, rows: Rows = None) -> torch.Tensor:
        """Replace the selection ``x`` with ``fn(x)``; returns the new values."""
        x = self.tensor()
        index = self._index(x, positions, heads, rows)
        # a clone keeps autograd valid when fn's graph needs x and x is then written in place
        sel = x if index is None else x[index]
        if index is None and torch.is_grad_enabled():
            sel = sel.clone()
        if self.flat:
            new = fn(sel.flatten(-2))
            self._put(x, index, new.unflatten(-1, x.shape[-2:]))
            return new
        new = fn(sel)
        self._put(x, index, new)
        return new

    def _put(self, x: torch.Tensor, index: Optional[tuple], value: Any) -> None:
        if self.kind == "head_result":
            raise SiteError(f"site {self.name} is read-only: each head's result is computed from "
                            f"head_out.{self.layer} and the output projection, so a write would "
                            f"change nothing; edit head_out.{self.layer} (its input) instead")
        if self.kind == "router":
            raise SiteError(f"site {self.name} is read-only: the router picks its experts from "
                            f"the logits inside its own module, so a write would change nothing; "
                            f"to change the routing, edit resid_mid.{self.layer} (the MLP's input)")
        target = x.shape if index is None else x[index].shape
        if not (isinstance(value, torch.Tensor) and value.dtype == x.dtype and value.device == x.device):
            value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
        fits = value.shape == target  # the common case, without broadcast_shapes' cost per step
        if not fits:
            try:
                fits = torch.broadcast_shapes(value.shape, target) == target
            except RuntimeError:
                fits = False
        if not fits:
            raise SiteError(f"value of shape {tuple(value.shape)} does not fit the selection "
                             f"{tuple(target)} of site {self.name} (rows, positions"
                             f"{', heads, head_dim' if self.n_heads else ', hidden'})")
        if index is None:
            x.copy_(value.expand(target))
        else:
            x[index] = value.expand(target)

    def _index(self, x: torch.Tensor, positions: Positions, heads: Heads, rows: Rows):
        """An advanced index selecting (rows, positions[, heads]) of x, or None for all of it."""
        if positions is None and heads is None and rows is None:
            return None
        if x.dim() < 3:  # (batch, d): a recurrent cell's state, a classifier's features
            if positions is not None or heads is not None:
                raise SiteError(f"site {self.name} is {tuple(x.shape)}: it has no positions or "
                                f"heads to select, only rows")
            return (torch.tensor(selected_rows(rows, x.shape[0], self.name, SiteError),
                                 device=x.device),)
        batch, seq = x.shape[0], x.shape[1]
        row_idx = selected_rows(rows, batch, self.name, SiteError)
        device = x.device
        pos = selected_positions(positions, seq, len(row_idx), self.name, SiteError)
        r = torch.tensor(row_idx, device=device)[:, None]
        p = pos.to(device) if pos is not None else torch.arange(seq, device=device)[None, :]
        r, p = torch.broadcast_tensors(r, p)
        if heads is None or self.n_heads is None:
            if heads is not None:
                raise SiteError(f"site {self.name} has no heads; head sites are "
                                 f"{', '.join(HEAD_SITES)}")
            return (r, p)
        h = torch.tensor(_heads(heads, self), device=device)
        return (r[:, :, None], p[:, :, None], h[None, None, :])


def _check_router(site: Site) -> None:
    """Only mixture-of-experts layers have a router; the error names the layers that do."""
    if site.family.router is None:
        raise SiteError(f"site {site.name}: the {site.family.name} family has no mixture-of-experts "
                        f"router; router sites exist in {', '.join(n for n, f in FAMILIES.items() if f.router)}")
    routed = moe_layers(module(site.model), config(site.model))
    if site.layer not in routed:
        raise SiteError(f"site {site.name}: layer {site.layer} has a dense MLP, no router; the "
                        f"layers with a router are {routed}")


def _check_eager(site: Site) -> None:
    """The pattern exists only inside eager attention: one error saying how to switch."""
    if site.family.pattern is None:
        raise SiteError(f"site {site.name}: the {site.family.name} family's attention softmax also "
                        f"spans its learned sink logits, so there is no pattern over the keys "
                        f"alone; read head_q/head_k instead")
    impl = getattr(config(site.model), "_attn_implementation", None)
    if impl not in (None, "eager"):
        raise SiteError(f"site {site.name} is the softmax inside eager attention, and this model "
                        f"runs {impl!r} attention; switch it first (same numbers, slower): "
                        f"tracer.sites.module(model).set_attn_implementation('eager')")


def _resolve_alias(model: Any, name: str, layer: Optional[int], site: "Site") -> str:
    """An alias (``lay.3``, ``block_output.3``, ``mlp_activation.3``) as a site name or a
    module path; sets ``site.flat``/``site.alias`` for flat head components."""
    if not isinstance(name, str):
        raise SiteError(f"a site name must be a string such as 'resid_post.3', got {name!r}")
    name = from_transformer_lens(name) or name
    kind, dot, rest = name.partition(".")
    if kind not in ALIASES or (dot and not rest.lstrip("-").isdigit()):
        return name
    if layer is None and not dot:
        raise SiteError(f"site {kind!r} needs a layer, e.g. '{kind}.0'")
    layer = int(rest) if dot else layer
    target = ALIASES[kind]
    if target[0] != "module":
        site.flat = target[1]
        if site.flat:
            site.alias = f"{kind}.{_check_layer(kind, layer, dims_of(config(model)).n_layers)}"
        return f"{target[0]}.{layer}"
    fam = family_for(config(model), _module_of(model))
    layer = _check_layer(kind, layer, dims_of(config(model)).n_layers)
    if getattr(fam, target[1]) is None:
        raise SiteError(f"{kind!r} does not exist in the {fam.name} family: its MLP is a mixture "
                        f"of experts whose projections and activation are one fused module; "
                        f"use mlp_input, mlp_out or router")
    return f"{fam.layers}.{layer}.{getattr(fam, target[1])}.{target[2]}"


def _heads(heads: Heads, site: Site) -> list[int]:
    n = site.n_heads
    heads = integers(f"heads at site {site.name}", heads, SiteError)
    for h in heads:
        if not -n <= h < n:
            what = ("key/value heads (grouped-query attention)"
                    if site.kind in ("head_k", "head_v") and site.dims.n_kv_heads != site.dims.n_heads
                    else "heads")
            raise SiteError(f"head {h} out of range at site {site.name}: this model has {n} "
                             f"{what}, valid heads are 0..{n - 1}")
    return [h % n for h in heads]


def site(model: Any, name: str, layer: Optional[int] = None) -> Site:
    """Resolve a site name (``"head_out.3"``, or ``"head_out", layer=3``, or a module path
    such as ``"model.layers.15.mlp.output"``) on a loaded model."""
    return Site(model, name, layer)


def valid_sites(model: Any) -> list[str]:
    """Every normalized site name of a model, in execution order."""
    dims = dims_of(config(model))
    routed = set(moe_layers(module(model), config(model)))
    names = ["embed"]
    for layer in range(dims.n_layers):
        names += [f"{k}.{layer}" for k in LAYER_SITES
                  if not (k == "resid_mid" and dims.parallel_residual)]
        if layer in routed:
            names.insert(len(names) - 2, f"router.{layer}")
    has_head = family_for(config(model), _module_of(model)).lm_head is not None
    return names + ["final"] + (["logits"] if has_head else [])  # a base model has no logits
