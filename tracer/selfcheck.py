"""Prove a family row right on a tiny random copy of the user's own config.

``check_model(model)`` builds the same architecture with 2 layers and small widths (same
head counts, the same quirks: q/k norms, sliding windows, experts) and checks, on that copy:

- every site reads the tensor a plain PyTorch hook on the row's module sees;
- the residual stream adds up as the row says (``resid_mid = resid_pre + attn_out`` ...,
  ``resid_pre.(l+1) = resid_post.l``, ``final`` is the final norm of the last residual,
  ``logits`` the unembedding of ``final``, ``attn_out`` the output projection of ``head_out``);
- each head site addresses one head: a change to query head h reaches only output head h,
  a change to key/value head j only the output heads that share it (grouped-query attention);
- a write at every writable site reaches the logits at its position and leaves earlier
  positions alone.

A config whose ``model_type`` has no row but whose modules are laid out like Llama, GPT-2 or
GPT-NeoX is offered that row, with a warning, once the check passes.  Models loaded with
``tracer.load`` are checked once per config per process; others on demand.
"""

from __future__ import annotations

import copy
import json
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .families import FAMILIES, MODULE_ONLY, Family, dims_of
from .sites import HEAD_SITES, config, module as module_of, site, valid_sites

# Layouts an unknown model type may share, tried in this order.
LAYOUTS = ("llama", "gpt2", "gpt_neox")
_CHECKED: dict[str, "CheckReport"] = {}
_SEEN: dict[int, Any] = {}  # id(config) -> weak reference: configs already checked
_TOL = 1e-4


class ModelCheckError(ValueError):
    """The site table does not fit this architecture; the message lists what failed."""


@dataclass
class CheckReport:
    """What ``check_model`` verified: the row used, the checks run and the failures."""

    model_type: str
    family: str
    offered: bool = False
    passed: list = field(default_factory=list)
    failed: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        row = f"the {self.family} row" + (" (offered: same module layout)" if self.offered else "")
        head = f"{self.model_type}: {row}: {len(self.passed)} checks passed, {len(self.failed)} failed"
        return "\n".join([head] + [f"  FAILED {f}" for f in self.failed])


def check_model(model: Any, *, force: bool = False) -> CheckReport:
    """Check the site table of ``model``'s architecture on a tiny random copy of its config;
    returns the report, raises ``ModelCheckError`` when a check fails or no row fits.

    Results are kept per config for the process (``force=True`` checks again).
    """
    cfg = config(model)
    key = _key(cfg)
    if key in _CHECKED and not force:
        return _CHECKED[key]
    kind = getattr(cfg, "model_type", None)
    if kind in FAMILIES:
        report = check_row(cfg, FAMILIES[kind])
        if not report.ok:
            raise ModelCheckError(f"the site table does not fit this model:\n{report}")
    else:
        report = _offer_layout(cfg)
    _CHECKED[key] = report
    return report


def ensure_checked(model: Any) -> None:
    """The automatic check run when a model is loaded and by the engine: once per config per
    process (a config object seen before costs one lookup: this runs on every forward of the
    pyvene front end); a model without a transformers config (any torch module) is not
    checked."""
    try:
        cfg = config(model)
    except AttributeError:
        return
    if getattr(cfg, "model_type", None) in MODULE_ONLY:
        return  # module paths only: there is no row to check
    seen = _SEEN.get(id(cfg))
    if seen is not None and seen() is cfg:
        return
    check_model(model)
    _SEEN[id(cfg)] = weakref.ref(cfg)


def _key(cfg: Any) -> str:
    facts = cfg.to_dict()
    for name in ("_name_or_path", "transformers_version", "dtype", "torch_dtype",
                 "quantization_config"):
        facts.pop(name, None)
    return json.dumps(facts, sort_keys=True, default=str)


def _offer_layout(cfg: Any) -> CheckReport:
    kind = getattr(cfg, "model_type", None)
    tried = []
    for name in LAYOUTS:
        row = FAMILIES[name]._replace(name=str(kind))
        try:
            tiny = tiny_copy(cfg)
        except Exception as error:  # noqa: BLE001 - an architecture transformers cannot build
            raise ModelCheckError(f"unsupported architecture {kind!r}: no row in the site table "
                                  f"and transformers cannot build a tiny copy of its config "
                                  f"({type(error).__name__}: {error}); supported model types are "
                                  f"{', '.join(sorted(FAMILIES))}") from None
        missing = _missing_modules(module_of(tiny), row)
        if missing:
            tried.append(f"{name}-like: no {missing[0]}")
            continue
        report = check_row(cfg, row, tiny)
        if report.ok:
            FAMILIES[str(kind)] = row
            report.offered = True
            warnings.warn(f"model type {kind!r} has no row in Interlace's site table; its modules "
                          f"are laid out like {name} and every site check passed on a tiny copy, "
                          f"so the {name} row is used (locally: NDIF servers know only the "
                          f"built-in rows)", stacklevel=3)
            return report
        tried.append(f"{name}-like: {report.failed[0]}")
    raise ModelCheckError(f"unsupported architecture {kind!r}: supported model types are "
                          f"{', '.join(sorted(FAMILIES))}, and it matches no known layout ("
                          + "; ".join(tried) + ")")


def _missing_modules(top: torch.nn.Module, row: Family) -> list[str]:
    names = {n for n, _ in top.named_modules()}
    layer = f"{row.layers}.0"
    paths = [row.embed, row.final_norm, row.lm_head, layer] + [
        f"{layer}.{p}" for p in (row.attn, row.mlp, row.o_proj, row.mid_norm, row.q_proj,
                                 row.k_proj, row.v_proj, row.qkv, row.post_attn, row.post_mlp)
        if p]
    return [p for p in paths if p not in names]


def tiny_copy(cfg: Any, seed: int = 0) -> Any:
    """The same architecture with 2 layers, head_dim 8, hidden 8 x heads (at most 256),
    vocabulary 512 and at most 4 experts, random weights, as an nnsight model (fp32)."""
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoModelForCausalLM

    from .testing import tokenizer

    small = copy.deepcopy(cfg)
    d = dims_of(cfg)
    group = max(1, d.n_heads // max(1, d.n_kv_heads))
    heads = d.n_heads if d.n_heads * 8 <= 256 else max(group, 256 // 8 // group * group)
    kv = max(1, heads // group)
    hidden = heads * 8
    changes: dict[str, Any] = dict(
        num_hidden_layers=2, hidden_size=hidden, num_attention_heads=heads,
        intermediate_size=2 * hidden, vocab_size=512, bos_token_id=0, eos_token_id=0,
        pad_token_id=0)
    if getattr(cfg, "num_key_value_heads", None):
        changes["num_key_value_heads"] = kv
    if getattr(cfg, "head_dim", None):
        changes["head_dim"] = 8
    for name in ("num_local_experts", "num_experts"):
        if getattr(cfg, name, None):
            changes[name] = min(4, getattr(cfg, name))
    if getattr(cfg, "num_experts_per_tok", None):
        changes["num_experts_per_tok"] = min(2, getattr(cfg, "num_experts_per_tok"))
    if getattr(cfg, "moe_intermediate_size", None):
        changes["moe_intermediate_size"] = hidden
    if getattr(cfg, "sliding_window", None):
        changes["sliding_window"] = 4  # the check's 8-token prompt really slides
    types = getattr(cfg, "layer_types", None)
    if types:
        full = [t for t in types if t != types[0]]
        changes["layer_types"] = [types[0], full[0] if full else types[0]]
    if getattr(cfg, "mlp_only_layers", None):
        changes["mlp_only_layers"] = [layer for layer in cfg.mlp_only_layers if layer < 2]
    for name, value in changes.items():
        setattr(small, name, value)
    if hasattr(small, "n_inner"):
        small.n_inner = None
    torch.manual_seed(seed)
    built = AutoModelForCausalLM.from_config(small, dtype=torch.float32).eval()
    return TransformersModel(built, tokenizer=tokenizer())


def check_row(cfg: Any, row: Family, tiny: Optional[Any] = None) -> CheckReport:
    """Run every check of ``row`` on a tiny copy of ``cfg`` (or on ``tiny``) with the row
    installed for the config's model type, then put the table back as it was."""
    kind = getattr(cfg, "model_type", None)
    report = CheckReport(str(kind), row.name)
    tiny = tiny if tiny is not None else tiny_copy(cfg)
    before = FAMILIES.get(str(kind))
    FAMILIES[str(kind)] = row
    try:
        with torch.no_grad():
            for name, fn in (("sites read what plain hooks see", _reads),
                             ("the residual stream adds up", _sums),
                             ("each head site addresses one head", _heads_local),
                             ("writes reach the output", _writes)):
                try:
                    problems = fn(tiny, row)
                except Exception as error:  # noqa: BLE001 - a wrong row fails in many ways
                    problems = [f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"]
                (report.failed if problems else report.passed).extend(
                    [f"{name}: {p}" for p in problems] if problems else [name])
    finally:
        if before is None:
            FAMILIES.pop(str(kind), None)
        else:
            FAMILIES[str(kind)] = before
    return report


_PROMPT = [[5, 17, 33, 2, 90, 41, 7, 250]]


def _inputs() -> dict:
    ids = torch.tensor(_PROMPT)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _read_all(tiny: Any, names: list[str]) -> dict:
    import nnsight

    sites = sorted((site(tiny, n) for n in names), key=lambda s: s.order)
    with tiny.trace(_inputs()):
        values = nnsight.save([s.read() for s in sites])
    return {s.name: v for s, v in zip(sites, values)}


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=_TOL, atol=_TOL))


def _reads(tiny: Any, row: Family) -> list[str]:
    names = valid_sites(tiny)
    got = _read_all(tiny, names)
    top = module_of(tiny)
    seen: dict[str, torch.Tensor] = {}
    handles = []
    resolved = {name: site(tiny, name) for name in names}
    for name in names:
        s = resolved[name]
        target = top.get_submodule(s.module_path)

        def grab(value, name=name):
            seen.setdefault(name, (value[0] if isinstance(value, (tuple, list)) else value).clone())
        if s.port == "input":
            handles.append(target.register_forward_pre_hook(
                lambda m, args, kwargs, grab=grab: grab(args[0] if args else next(iter(kwargs.values()))),
                with_kwargs=True))
        else:
            handles.append(target.register_forward_hook(lambda m, a, out, grab=grab: grab(out)))
    try:
        top(**_inputs())
    finally:
        for h in handles:
            h.remove()
    problems = []
    for name in names:
        value, hooked = got[name], seen.get(name)
        if hooked is None:
            problems.append(f"{name}: its module never ran")
            continue
        if name.startswith("router"):
            hooked = hooked.unflatten(0, value.shape[:2])
        s = resolved[name]
        where = f"{s.module_path}.{s.port}"
        if s.kind in HEAD_SITES and row.qkv_layout == "interleaved" and s.kind != "head_out":
            continue  # NeoX interleaves heads in one tensor: the head-locality check covers it
        if s.kind in HEAD_SITES:
            # a head view reshapes the hooked tensor or one of its [q | k | v] blocks
            flat, width = value.flatten(-2), value.shape[-2] * value.shape[-1]
            if not any(_close(flat, hooked[..., i:i + width])
                       for i in range(0, hooked.shape[-1] - width + 1, 8)):
                problems.append(f"{name}: no slice of {where} equals the head view")
        elif not _close(value, hooked):
            problems.append(f"{name}: differs from a hook on {where}")
    return problems


def _sums(tiny: Any, row: Family) -> list[str]:
    names = valid_sites(tiny)
    v = _read_all(tiny, names)
    top = module_of(tiny)
    d = dims_of(config(tiny))
    residual = "parallel" if d.parallel_residual else ("pre" if row.residual == "parallel" else row.residual)
    problems = []

    def expect(what: str, left: torch.Tensor, right: torch.Tensor) -> None:
        if not _close(left, right):
            err = (left - right).abs().max().item() if left.shape == right.shape else "shape"
            problems.append(f"{what} (max difference {err})")

    for layer in range(d.n_layers):
        L = lambda k: v[f"{k}.{layer}"]  # noqa: E731
        prefix = f"{row.layers}.{layer}"
        attn, mlp = L("attn_out"), L("mlp_out")
        if residual == "post":
            attn = top.get_submodule(f"{prefix}.{row.post_attn}")(attn)
            mlp = top.get_submodule(f"{prefix}.{row.post_mlp}")(mlp)
        if residual == "parallel":
            expect(f"resid_post.{layer} = resid_pre + attn_out + mlp_out", L("resid_post"),
                   L("resid_pre") + attn + mlp)
        else:
            sub = "" if residual == "pre" else "post-normed "
            expect(f"resid_mid.{layer} = resid_pre + {sub}attn_out", L("resid_mid"), L("resid_pre") + attn)
            expect(f"resid_post.{layer} = resid_mid + {sub}mlp_out", L("resid_post"), L("resid_mid") + mlp)
        o_proj = top.get_submodule(f"{prefix}.{row.o_proj}")
        expect(f"attn_out.{layer} = o_proj(head_out)", L("attn_out"), o_proj(L("head_out").flatten(-2)))
        if layer + 1 < d.n_layers:
            expect(f"resid_pre.{layer + 1} = resid_post.{layer}", v[f"resid_pre.{layer + 1}"], L("resid_post"))
    last = v[f"resid_post.{d.n_layers - 1}"]
    expect("final = final norm of the last resid_post", v["final"], top.get_submodule(row.final_norm)(last))
    expect("logits = unembedding of final", v["logits"], top.get_submodule(row.lm_head)(v["final"]))
    return problems


def _run(tiny: Any, name: Optional[str] = None, heads: Optional[list] = None,
         read: Optional[str] = None) -> tuple:
    """Logits and a later site's value, with noise added at ``name``'s last position (no
    edit when ``name`` is None)."""
    import nnsight

    gen = torch.Generator().manual_seed(1)
    box: list = []
    with tiny.trace(_inputs()):
        if name is not None:
            site(tiny, name).edit(lambda x: x + torch.randn(x.shape, generator=gen),
                                  positions=[-1], heads=heads)
        if read is not None:
            box.append(nnsight.save(site(tiny, read).read()))
        box.append(nnsight.save(tiny.output.logits))
    return box[-1], (box[0] if read is not None else None)


def _heads_local(tiny: Any, row: Family) -> list[str]:
    d = dims_of(config(tiny))
    group = d.n_heads // d.n_kv_heads
    problems = []
    _, clean = _run(tiny, read="head_out.0")
    for kind in ("head_q", "head_k", "head_v"):
        n = d.n_heads if kind == "head_q" else d.n_kv_heads
        for h in sorted({0, n // 2, n - 1}):
            _, out = _run(tiny, f"{kind}.0", heads=[h], read="head_out.0")
            changed = ((out - clean).abs() > 1e-6)[0, -1].any(-1).nonzero().flatten().tolist()
            want = [h] if kind == "head_q" else list(range(h * group, (h + 1) * group))
            if changed != want:
                problems.append(f"a change to {kind}.0 head {h} reached output heads {changed}, "
                                f"expected {want}")
    return problems


def _writes(tiny: Any, row: Family) -> list[str]:
    clean, _ = _run(tiny)
    problems = []
    for name in valid_sites(tiny):
        if name.startswith("router"):
            continue  # read-only
        logits, _ = _run(tiny, name)
        if not (logits[0, -1] - clean[0, -1]).abs().max() > 1e-6:
            problems.append(f"a write at {name} did not change the logits")
        if not torch.allclose(logits[0, :-1], clean[0, :-1], atol=1e-6, rtol=0):
            problems.append(f"a write at {name}'s last position changed earlier positions")
    return problems
