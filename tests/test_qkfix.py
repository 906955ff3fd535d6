"""AtP*'s QK fix equals a plain-PyTorch reference on tiny models of every family: the
metric's gradient at the attention weights (eager attention, retain_grad) times the change of
those weights when a hook patches one query or key head at one position from the source run."""

import copy

import numpy as np
import pytest
import torch

from recipes import attribution
from tracer import testing

from hooks import _get, hooked, locate

BASE, SOURCE = "The capital of Spain is the city of", "The capital of Italy is the city of"


def _weights_hook(ref, arch, layer, box, grad):
    path = locate(arch, "attn_out", layer, ref.config)[0]

    def keep(mod, args, out):
        w = out[1]
        if grad:
            w.retain_grad()
        box.append(w)
    return _get(ref, path).register_forward_hook(keep)


def _reference(model, arch, kind, answer, drop=None):
    """``(layers, positions, heads)``: sum over heads, queries and keys of
    dmetric/dA * (A_patched - A), patching ``kind`` at one head and position at a time."""
    ref = copy.deepcopy(model._module)
    if arch not in testing.MOE_ARCHS:  # float64 (A_patched - A cancels digits); grouped_mm has none
        ref = ref.double()
    ref.requires_grad_(True)  # another test may have frozen the shared model (pyvene's API does)
    ref.config._attn_implementation = "eager"
    tok, cfg = model.tokenizer, ref.config
    b = tok(BASE, return_tensors="pt")["input_ids"]
    s = tok(SOURCE, return_tensors="pt")["input_ids"]
    n = b.shape[1]
    heads = cfg.num_attention_heads if kind == "head_q" else \
        (getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
    out = np.zeros((cfg.num_hidden_layers, n, heads))
    for layer in range(cfg.num_hidden_layers):
        src = []
        with hooked(ref, arch, kind, layer, lambda t: src.append(t.detach().clone())), torch.no_grad():
            ref(s)
        box, handles = [], [_weights_hook(ref, arch, layer, [], False)]
        handles[0].remove()
        handles = [_weights_hook(ref, arch, layer, box, True)]
        if drop is not None:
            for part in ("attn_out", "mlp_out"):
                def kill(m, a, o):
                    (o[0] if isinstance(o, tuple) else o).register_hook(torch.zeros_like)
                handles.append(_get(ref, locate(arch, part, drop, cfg)[0]).register_forward_hook(kill))
        ref.zero_grad(set_to_none=True)
        ref(b).logits[0, -1].log_softmax(-1)[answer].backward()
        for h in handles:
            h.remove()
        weights, g = box[0].detach(), box[0].grad
        for head in range(heads):
            for p in range(n):
                def patch(t, head=head, p=p):
                    t[0, p, head] = src[0][0, p, head]
                new = []
                with hooked(ref, arch, kind, layer, patch), torch.no_grad():
                    h = _weights_hook(ref, arch, layer, new, False)
                    ref(b)
                    h.remove()
                out[layer, p, head] = float((g * (new[0] - weights)).sum())
    return out


@pytest.mark.parametrize("arch", testing.ARCHS)
@pytest.mark.parametrize("kind", ["head_q", "head_k"])
def test_qk_fix_equals_plain_reference(tiny_models, arch, kind):
    model = tiny_models[arch]
    answer = model.tokenizer(" Madrid", add_special_tokens=False)["input_ids"][0]
    want = _reference(model, arch, kind, answer)
    per_position = attribution.attribute(model, BASE, SOURCE, [" Madrid"], site=kind, method="qk")
    per_head = attribution.attribute(model, BASE, SOURCE, [" Madrid"], site=kind, method="qk", heads=True)
    # our side runs the model in fp32: errors scale with the largest estimate
    scale = np.abs(want).max()
    np.testing.assert_allclose(per_position.values, want.sum(2), rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(per_head.values, want.sum(1), rtol=1e-4, atol=1e-4 * scale)


def test_atp_star_is_gradrop_over_qk_fixed_estimates(tiny_models):
    model = tiny_models["llama"]
    answer = model.tokenizer(" Madrid", add_special_tokens=False)["input_ids"][0]
    n_layers = model.config.num_hidden_layers
    drops = [_reference(model, "llama", "head_k", answer, drop=d).sum(2) for d in range(n_layers)]
    want = np.abs(np.stack(drops)).sum(0) / (n_layers - 1)
    got = attribution.attribute(model, BASE, SOURCE, [" Madrid"], site="head_k", method="atp*")
    np.testing.assert_allclose(got.values, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # away from query and key sites the QK fix changes nothing
    plain = attribution.attribute(model, BASE, SOURCE, [" Madrid"], site="head_v", method="atp")
    fixed = attribution.attribute(model, BASE, SOURCE, [" Madrid"], site="head_v", method="qk")
    np.testing.assert_array_equal(plain.values, fixed.values)
