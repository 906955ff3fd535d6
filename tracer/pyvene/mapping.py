"""pyvene's way of adding a model type: ``pv.type_to_module_mapping[ModelClass] = {...}``
(and ``pv.type_to_dimension_mapping``), read into a row of Interlace's site table.

pyvene's tutorial gives, for a model class it does not know, each component's module path
(``"h[%s].mlp"``, ``%s`` the layer) and hook (input or output).  ``row_from_mapping`` turns
that into a ``Family`` (the layers, attention, MLP, attention-output projection and q/k/v
modules from the table; the embeddings, final norm, LM head and the norm before the MLP
found on the model), and ``register_mapping`` installs it once ``tracer.check_model``'s
checks pass on a tiny copy of the config.  Only model types without a built-in row use it.

A table without attention (pyvene's toy MLP and GRU, or a user's own recurrent or
feed-forward model) makes no row: the model is marked module-only (``families.MODULE_ONLY``)
and ``module_component`` reads each component as the module path the table gives.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from torch import nn

from ..families import FAMILIES, MODULE_ONLY, Family
from ..selfcheck import ModelCheckError, check_row
from ..sites import config, module

type_to_module_mapping: dict = {}     # model class -> {component: (path with %s, hook, *splits)}
type_to_dimension_mapping: dict = {}  # model class -> {component: (config expression, ...)}

INPUT = "register_forward_pre_hook"  # pyvene's CONST_INPUT_HOOK
OUTPUT = "register_forward_hook"     # pyvene's CONST_OUTPUT_HOOK


def register_modules(cls: type, modules: dict, dims: dict) -> None:
    """Install pyvene's tables for a model class (what pyvene's model cards do); a class
    whose table has no attention is module-only from here on."""
    type_to_module_mapping[cls] = modules
    type_to_dimension_mapping[cls] = dims
    kind = getattr(getattr(cls, "config_class", None), "model_type", None)
    if kind and not _is_transformer(modules):
        MODULE_ONLY.add(kind)


def table_of(top: nn.Module, tables: Optional[dict] = None) -> Optional[dict]:
    """pyvene's module table (or another of its tables, ``tables``) for ``top``'s class: its
    own class first, then a base class."""
    tables = type_to_module_mapping if tables is None else tables
    exact = tables.get(type(top))
    if exact is not None:
        return exact
    return next((t for cls, t in tables.items() if isinstance(cls, type) and isinstance(top, cls)), None)


def _is_transformer(table: dict) -> bool:
    return "attention_output" in table or "attention_value_output" in table


def component_width(model: Any, component: str) -> Optional[int]:
    """A module-only model's component width from pyvene's dimension table (``"h_dim"``,
    ``"h_dim*3"``: config fields and integers joined by ``*`` and ``/``); None if unknown."""
    try:
        top, cfg = module(model), config(model)
    except (AttributeError, TypeError):
        return None
    table = table_of(top, type_to_dimension_mapping)
    entry = None if table is None else table.get(component)
    if not entry:
        return None
    expr = entry[0] if isinstance(entry, (tuple, list)) else entry
    value: Optional[float] = None
    for op, term in re.findall(r"([*/]?)\s*([A-Za-z_][A-Za-z0-9_]*|\d+)", str(expr)):
        number = int(term) if term.isdigit() else getattr(cfg, term, None)
        if not isinstance(number, int):
            return None
        value = number if value is None else value * number if op == "*" else value / number
    return None if value is None else int(value)


def _check_hook(component: str, entry: tuple, name: str) -> None:
    if len(entry) < 2 or entry[1] not in (INPUT, OUTPUT):
        raise ValueError(f"type_to_module_mapping[{component!r}] for {name} must give a hook, "
                         f"pv.CONST_INPUT_HOOK or pv.CONST_OUTPUT_HOOK, after the path "
                         f"(got {entry!r})")


def module_component(model: Any, component: str, layer: Optional[int]) -> Optional[str]:
    """The module path (``mlp.h.0.act.output``) pyvene's table gives ``component`` at
    ``layer`` on a module-only model; None when no table names the model's class."""
    try:
        top = module(model)
    except TypeError:
        return None
    table = table_of(top)
    if table is None or _is_transformer(table):
        return None
    entry = _entry(table, component)
    name = type(top).__name__
    if entry is None:
        raise ValueError(f"unknown component {component!r} for {name}; its components are "
                         f"{', '.join(sorted(table))}")
    if len(entry) > 2:
        raise ValueError(f"component {component!r} of {name} is a split of a module's output "
                         f"(pyvene's {entry[2]!r}), which Interlace does not read; use the whole "
                         f"output ({entry[0]!r}) with subspaces instead")
    _check_hook(component, entry, name)
    path = entry[0] % (0 if layer is None else layer) if "%s" in entry[0] else entry[0]
    port = "input" if entry[1] == INPUT else "output"
    path = path.replace("[", ".").replace("]", "")
    try:
        top.get_submodule(path)
    except AttributeError:
        raise ValueError(f"component {component!r} at layer {layer}: {name} has no module "
                         f"{path!r}") from None
    return f"{path}.{port}"


def _entry(table: dict, component: str) -> Optional[tuple]:
    value = table.get(component)
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,)
    return tuple(value)


def _name_of(top: nn.Module, target: Optional[nn.Module]) -> Optional[str]:
    if target is None:
        return None
    for name, mod in top.named_modules():
        if mod is target:
            return name
    return None


def row_from_mapping(table: dict, top: nn.Module, kind: str) -> Family:
    """A site-table row for the torch module ``top`` from pyvene's module table."""
    block = _entry(table, "block_output")
    if block is None or "[%s]" not in block[0]:
        raise ValueError("type_to_module_mapping needs 'block_output' as a path with the layer "
                         "as %s, e.g. ('h[%s]', pv.CONST_OUTPUT_HOOK)")
    layers = block[0].split("[%s]")[0]
    prefix = block[0] + "."

    def rel(component: str, port: Optional[str] = None) -> Optional[str]:
        entry = _entry(table, component)
        if entry is None:
            return None
        if not entry[0].startswith(prefix):
            raise ValueError(f"type_to_module_mapping[{component!r}] = {entry[0]!r} is not inside "
                             f"the layer {block[0]!r}")
        if port == "input" and (len(entry) < 2 or entry[1] != INPUT):
            raise ValueError(f"type_to_module_mapping[{component!r}] must hook the module's input")
        return entry[0][len(prefix):].replace("[", ".").replace("]", "")

    missing = [c for c in ("attention_output", "mlp_output") if _entry(table, c) is None]
    if missing:
        raise ValueError(f"type_to_module_mapping lacks {', '.join(missing)}")
    o_proj = rel("attention_value_output", "input") or rel("head_attention_value_output", "input")
    if o_proj is None:
        raise ValueError("type_to_module_mapping needs 'attention_value_output' (the input of the "
                         "attention's output projection)")
    q, k, v = (rel(c) for c in ("query_output", "key_output", "value_output"))
    qkv = layout = None
    if q is not None and q == k == v:  # one fused module split three ways (GPT-2's c_attn)
        qkv, layout, q, k, v = q, "blocks", None, None, None
    layer0 = top.get_submodule(layers.replace("[", ".").replace("]", "") + ".0")
    norms = [n for n, m in layer0.named_children() if "norm" in n.lower() or n.lower().startswith("ln")]
    if len(norms) < 2:
        raise ValueError(f"could not find the norm before the MLP in {type(layer0).__name__} "
                         f"(its children are {[n for n, _ in layer0.named_children()]})")
    mlp = rel("mlp_output")
    linears = [(n, m) for n, m in layer0.get_submodule(mlp).named_children() if isinstance(m, nn.Linear)]
    hidden = top.get_input_embeddings().weight.shape[-1]
    ins = [n for n, m in linears if m.in_features == hidden]
    outs = [n for n, m in linears if m.out_features == hidden]
    finals = [n for n, m in top.named_modules() if not n.startswith(layers)
              and (n.endswith(("ln_f", "norm", "final_layer_norm", "norm_f")))]
    if not finals:
        raise ValueError("could not find the final norm (a module named ln_f, norm or "
                         "final_layer_norm outside the layers)")
    head = top.get_output_embeddings() if hasattr(top, "get_output_embeddings") else None
    return Family(
        name=kind, layers=layers, embed=_name_of(top, top.get_input_embeddings()), final_norm=finals[-1],
        lm_head=_name_of(top, head), attn=rel("attention_output"), mlp=mlp, o_proj=o_proj,
        mid_norm=norms[1], q_proj=q, k_proj=k, v_proj=v, qkv=qkv, qkv_layout=layout,
        mlp_in=f"{mlp}.{ins[0]}" if ins else None, mlp_act=rel("mlp_activation"),
        mlp_down=f"{mlp}.{outs[-1]}" if outs else None)


def register_mapping(model: Any) -> Optional[Family]:
    """Install the row pyvene's tables give ``model``'s class when its model type has no
    built-in row; checked first (``tracer.selfcheck.check_row``); returns it (None when the
    tables do not name the class, or name one without attention: that model is marked
    module-only)."""
    try:
        top, cfg = module(model), config(model)
    except AttributeError:
        return None
    kind = getattr(cfg, "model_type", None)
    table = table_of(top)
    if table is None or kind in FAMILIES:
        return None
    if not _is_transformer(table):
        for component in table:
            _check_hook(component, _entry(table, component), type(top).__name__)
        MODULE_ONLY.add(str(kind))
        return None
    row = row_from_mapping(table, top, str(kind))
    report = check_row(cfg, row)
    if not report.ok:
        raise ModelCheckError(f"the type_to_module_mapping given for {type(top).__name__} does not "
                              f"fit the model:\n{report}")
    FAMILIES[str(kind)] = row
    return row
