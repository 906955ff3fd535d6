"""The independent reference: plain PyTorch forward hooks on the raw transformers module.

Written from the transformers source of each family, without importing tracer.sites, so a
mistake in tracer's site table shows up as a mismatch here.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch


def _get(module: torch.nn.Module, path: str) -> torch.nn.Module:
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def locate(arch: str, kind: str, layer: int | None, cfg) -> tuple[str, str, Callable, Callable]:
    """(module path, 'out'|'in', view: tensor -> site view, for head sites 4-D)."""
    H = cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    kv = getattr(cfg, "num_key_value_heads", None) or H
    plain = lambda t: t  # noqa: E731
    if arch == "gpt2":
        L = f"transformer.h.{layer}"
        E = cfg.hidden_size
        split = {
            "head_q": lambda t: t[..., 0:E].unflatten(-1, (H, hd)),
            "head_k": lambda t: t[..., E:2 * E].unflatten(-1, (H, hd)),
            "head_v": lambda t: t[..., 2 * E:3 * E].unflatten(-1, (H, hd)),
        }
        table = {
            "embed": ("transformer.wte", "out", plain),
            "resid_pre": (L, "in", plain),
            "resid_mid": (f"{L}.ln_2", "in", plain),
            "resid_post": (L, "out", plain),
            "attn_out": (f"{L}.attn", "out", plain),
            "mlp_out": (f"{L}.mlp", "out", plain),
            "head_out": (f"{L}.attn.c_proj", "in", lambda t: t.unflatten(-1, (H, hd))),
            "final": ("transformer.ln_f", "out", plain),
            "logits": ("lm_head", "out", plain),
        }
        if kind in split:
            return (f"{L}.attn.c_attn", "out", split[kind])
        return table[kind]
    if arch == "gpt_neo":  # GPTNeoBlock: ln_1, attn (GPTNeoAttention -> attention), ln_2, mlp
        L = f"transformer.h.{layer}"
        A = f"{L}.attn.attention"
        heads = lambda t: t.unflatten(-1, (H, hd))  # noqa: E731
        table = {
            "embed": ("transformer.wte", "out", plain),
            "resid_pre": (L, "in", plain),
            "resid_mid": (f"{L}.ln_2", "in", plain),
            "resid_post": (L, "out", plain),
            "attn_out": (f"{L}.attn", "out", plain),
            "mlp_out": (f"{L}.mlp", "out", plain),
            "head_q": (f"{A}.q_proj", "out", heads),
            "head_k": (f"{A}.k_proj", "out", heads),
            "head_v": (f"{A}.v_proj", "out", heads),
            "head_out": (f"{A}.out_proj", "in", heads),
            "final": ("transformer.ln_f", "out", plain),
            "logits": ("lm_head", "out", plain),
        }
        return table[kind]
    if arch == "gpt_neox":
        L = f"gpt_neox.layers.{layer}"
        i = {"head_q": 0, "head_k": 1, "head_v": 2}.get(kind)
        table = {
            "embed": ("gpt_neox.embed_in", "out", plain),
            "resid_pre": (L, "in", plain),
            "resid_mid": (f"{L}.post_attention_layernorm", "in", plain),
            "resid_post": (L, "out", plain),
            "attn_out": (f"{L}.attention", "out", plain),
            "mlp_out": (f"{L}.mlp", "out", plain),
            "head_out": (f"{L}.attention.dense", "in", lambda t: t.unflatten(-1, (H, hd))),
            "final": ("gpt_neox.final_layer_norm", "out", plain),
            "logits": ("lm_head", "out", plain),
        }
        if i is not None:
            return (f"{L}.attention.query_key_value", "out",
                    lambda t: t.unflatten(-1, (H, 3 * hd))[..., i * hd:(i + 1) * hd])
        return table[kind]
    L = f"model.layers.{layer}"
    # Gemma 2/3 norm the attention output before the residual add; OLMo 2 has no pre-norms
    mid = {"gemma2": "pre_feedforward_layernorm", "gemma3": "pre_feedforward_layernorm",
           "olmo2": "mlp"}.get(arch, "post_attention_layernorm")
    table = {
        "embed": ("model.embed_tokens", "out", plain),
        "resid_pre": (L, "in", plain),
        "resid_mid": (f"{L}.{mid}", "in", plain),
        "resid_post": (L, "out", plain),
        "attn_out": (f"{L}.self_attn", "out", plain),
        "mlp_out": (f"{L}.mlp", "out", plain),
        "head_q": (f"{L}.self_attn.q_proj", "out", lambda t: t.unflatten(-1, (H, hd))),
        "head_k": (f"{L}.self_attn.k_proj", "out", lambda t: t.unflatten(-1, (kv, hd))),
        "head_v": (f"{L}.self_attn.v_proj", "out", lambda t: t.unflatten(-1, (kv, hd))),
        "head_out": (f"{L}.self_attn.o_proj", "in", lambda t: t.unflatten(-1, (H, hd))),
        "final": ("model.norm", "out", plain),
        "logits": ("lm_head", "out", plain),
        # (tokens, experts): the caller unflattens it; gpt-oss names its router "router"
        "router": (f"{L}.mlp.{'router' if arch == 'gpt_oss' else 'gate'}", "out", plain),
    }
    if arch == "phi3":  # fused qkv_proj: [q (H*hd) | k (kv*hd) | v (kv*hd)]
        q, k = H * hd, kv * hd
        split = {"head_q": lambda t: t[..., :q].unflatten(-1, (H, hd)),
                 "head_k": lambda t: t[..., q:q + k].unflatten(-1, (kv, hd)),
                 "head_v": lambda t: t[..., q + k:].unflatten(-1, (kv, hd))}
        if kind in split:
            return (f"{L}.self_attn.qkv_proj", "out", split[kind])
    if arch == "olmo2" and kind in ("head_q", "head_k"):  # the norms over all heads come first
        norm, heads = ("q_norm", H) if kind == "head_q" else ("k_norm", kv)
        return (f"{L}.self_attn.{norm}", "out", lambda t: t.unflatten(-1, (heads, hd)))
    return table[kind]


@contextmanager
def hooked(module: torch.nn.Module, arch: str, kind: str, layer: int | None,
           fn: Callable[[torch.Tensor], None]):
    """Call ``fn(view)`` on the site's tensor during the forward; fn may edit it in place."""
    path, port, view = locate(arch, kind, layer, module.config)
    target = _get(module, path)

    def pre(mod, args):
        fn(view(args[0]))

    def post(mod, args, out):
        fn(view(out[0] if isinstance(out, tuple) else out))

    handle = target.register_forward_pre_hook(pre) if port == "in" else target.register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()


def capture(module: torch.nn.Module, arch: str, kind: str, layer: int | None,
            inputs: dict) -> torch.Tensor:
    """The site's value in a plain forward, captured by a hook (cloned)."""
    box = []
    with hooked(module, arch, kind, layer, lambda t: box.append(t.detach().clone())), torch.no_grad():
        module(**inputs)
    return box[0]


def edited_logits(module: torch.nn.Module, arch: str, kind: str, layer: int | None,
                  inputs: dict, edit: Callable[[torch.Tensor], None]) -> torch.Tensor:
    """Logits of a plain forward in which a hook edits the site in place."""
    with hooked(module, arch, kind, layer, edit), torch.no_grad():
        return module(**inputs).logits
