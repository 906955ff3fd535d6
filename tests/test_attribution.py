"""Attribution patching equals a plain-autograd reference (hooks, retain_grad, gradient hooks
for GradDrop) on tiny models, and verifies itself against exact patches."""

import numpy as np
import pytest
import torch

from recipes import attribution

from hooks import _get

BASE, SOURCE = "The capital of Spain is the city of", "The capital of Italy is the city of"


def _reference(model, site_path, port, answer, drop=None):
    """(base values, source values, gradients of log P(answer) at the last position) at
    module ``site_path.L`` for every layer L, with no gradient through layer ``drop``'s
    attention and MLP when given."""
    module, tok = model._module, model.tokenizer
    n_layers = module.config.num_hidden_layers
    b = tok(BASE, return_tensors="pt")["input_ids"]
    s = tok(SOURCE, return_tensors="pt")["input_ids"]

    def run(ids, grad):
        box, handles = [], []
        for layer in range(n_layers):
            target = _get(module, site_path.format(layer))
            if port == "in":
                def pre(m, args, kwargs):
                    x = args[0] if args else kwargs["hidden_states"]
                    if grad:
                        x.retain_grad()
                    box.append(x)
                handles.append(target.register_forward_pre_hook(pre, with_kwargs=True))
            else:
                def post(m, a, out):
                    x = out[0] if isinstance(out, tuple) else out
                    if grad:
                        x.retain_grad()
                    box.append(x)
                handles.append(target.register_forward_hook(post))
        if drop is not None and grad:
            for part in ("self_attn", "mlp"):
                def kill(m, a, out):
                    (out[0] if isinstance(out, tuple) else out).register_hook(torch.zeros_like)
                handles.append(_get(module, f"model.layers.{drop}.{part}").register_forward_hook(kill))
        try:
            with torch.set_grad_enabled(grad):
                logits = module(ids).logits
                if grad:
                    logits[0, -1].log_softmax(-1)[answer].backward()
        finally:
            for h in handles:
                h.remove()
        return box
    src = [x.detach() for x in run(s, False)]
    base = run(b, True)
    module.zero_grad(set_to_none=True)
    return [x.detach() for x in base], src, [x.grad.detach() for x in base]


@pytest.mark.parametrize("site,path,port", [("resid_pre", "model.layers.{}", "in"),
                                            ("mlp_out", "model.layers.{}.mlp", "out")])
def test_atp_and_gradrop_equal_plain_autograd(tiny_models, site, path, port):
    model = tiny_models["llama"]
    answer = model.tokenizer(" Madrid", add_special_tokens=False)["input_ids"][0]
    base, src, grad = _reference(model, path, port, answer)
    want = np.stack([((s - b) * g)[0].sum(-1).numpy() for b, s, g in zip(base, src, grad)])
    got = attribution.attribute(model, BASE, SOURCE, [" Madrid"], site=site)
    np.testing.assert_allclose(got.values, want, rtol=1e-4, atol=1e-6)
    n_layers = model.config.num_hidden_layers
    drops = []
    for d in range(n_layers):
        base, src, grad = _reference(model, path, port, answer, drop=d)
        drops.append(np.stack([((s - b) * g)[0].sum(-1).numpy() for b, s, g in zip(base, src, grad)]))
    want = np.abs(np.stack(drops)).sum(0) / (n_layers - 1)
    got = attribution.attribute(model, BASE, SOURCE, [" Madrid"], site=site, method="gradrop")
    np.testing.assert_allclose(got.values, want, rtol=1e-4, atol=1e-6)


def test_heads_sum_over_positions_and_head_sites_work(tiny_models):
    model = tiny_models["gpt2"]
    per_position = attribution.attribute(model, BASE, SOURCE, [" Madrid"], site="head_out")
    per_head = attribution.attribute(model, BASE, SOURCE, [" Madrid"], site="head_out", heads=True)
    assert per_head.values.shape == (2, 4) and per_position.values.shape[0] == 2
    np.testing.assert_allclose(per_head.values.sum(1), per_position.values.sum(1), rtol=1e-4, atol=1e-6)


def test_verify_patches_cells_exactly_and_warns_on_disagreement(tiny_models, recwarn):
    model = tiny_models["llama"]
    got = attribution.attribute(model, BASE, SOURCE, [" Madrid"], site="resid_pre", verify=4)
    checked = got.meta["verified"]
    assert len(checked["cells"]) == 4 and np.isfinite(checked["exact"]).all()
    for (layer, position), estimate, exact in zip(checked["cells"], checked["estimate"], checked["exact"]):
        assert estimate == pytest.approx(got.values[layer, position])
    # estimates with the wrong sign must be flagged
    real = attribution._passes

    def flipped(*args):
        grads, base, src, attn = real(*args)
        return {k: -v for k, v in grads.items()}, base, src, attn
    attribution._passes = flipped
    try:
        with pytest.warns(UserWarning, match="disagrees with exact patches"):
            attribution.attribute(model, BASE, SOURCE, [" Madrid"], site="resid_pre", verify=4)
    finally:
        attribution._passes = real
    with pytest.raises(ValueError, match="unknown method"):
        attribution.attribute(model, BASE, SOURCE, [" Madrid"], method="atp**")
