"""Every intervention at every site of every family changes the logits exactly as the
same edit done by a plain forward hook (fp32, 1e-5)."""

import pytest
import torch

import tracer
from tracer import interventions as iv
from tracer.sites import LAYER_SITES
from tracer.testing import ARCHS

from helpers import encode
from hooks import capture, edited_logits

BASE = ["The capital of France is Paris and", "Once upon a time there was a dog"]
SOURCE = ["The capital of Italy is Rome and the", "The cat sat on the mat in the sun"]
POSITIONS = [1, -1]
KINDS = ["interchange", "add", "zero", "mean", "scale", "project_out"]


def _site_kinds(arch):
    return ["embed", "final", "logits"] + [
        k for k in LAYER_SITES if not (arch == "gpt_neox" and k == "resid_mid")]


def _norm_follows(arch, site_kind):
    """An RMS norm right after the site divides out a scale (up to its epsilon): the final
    norm after the last residual, per-head q/k norms (Qwen 3, Gemma 3), post-norms on the
    sublayer outputs (Gemma 2/3, OLMo 2)."""
    return (site_kind == "resid_post"
            or (site_kind in ("head_q", "head_k") and arch in ("qwen3", "qwen3_moe", "gemma3"))
            or (site_kind in ("attn_out", "mlp_out") and arch in ("gemma2", "gemma3", "olmo2")))


def _reference(kind, x, params):
    """The edit written out by hand, on the selected values x."""
    if kind == "interchange":
        return params["source"].clone()
    if kind == "add":
        return x + params["alpha"] * params["vector"]
    if kind == "zero":
        return x * 0
    if kind == "mean":
        return params["mean"].expand_as(x).clone()
    if kind == "scale":
        return x * params["factor"]
    d = params["direction"] / params["direction"].norm()
    return x - (x @ d)[..., None] * d


def _hook_edit(kind, params, heads):
    def edit(t):
        n = t.shape[1]
        pos = [p % n for p in POSITIONS]
        sel = t[:, pos] if heads is None else t[:, pos][:, :, heads]
        new = _reference(kind, sel, params)
        for j, p in enumerate(pos):
            if heads is None:
                t[:, p] = new[:, j]
            else:
                for k, h in enumerate(heads):
                    t[:, p, h] = new[:, j, k]
    return edit


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ARCHS)
def test_intervention_matches_plain_hook(tiny_models, arch, kind):
    model = tiny_models[arch]
    base, source = encode(model, BASE, 6), encode(model, SOURCE, 6)
    gen = torch.Generator().manual_seed(1)
    for site_kind in _site_kinds(arch):
        layer = None if site_kind in ("embed", "final", "logits") else 1
        s = tracer.site(model, site_kind, layer=layer)
        heads = [1, 0] if s.n_heads else None
        width = s.dims.head_dim if s.n_heads else (512 if site_kind == "logits" else 64)
        src_full = capture(tracer.sites.module(model), arch, site_kind, layer, source)
        src = src_full[:, POSITIONS] if heads is None else src_full[:, POSITIONS][:, :, heads]
        params = {
            "interchange": {"source": src},
            "add": {"vector": torch.randn(width, generator=gen), "alpha": 0.5},
            "zero": {},
            "mean": {"mean": torch.randn(width, generator=gen)},
            "scale": {"factor": 3.0},
            "project_out": {"direction": torch.randn(width, generator=gen)},
        }[kind]
        with torch.no_grad(), model.trace(base):
            intervention = tracer.Intervention(kind, s.name, POSITIONS, heads, params)
            intervention.apply(model)
            got = model.output.logits.save()
        want = edited_logits(tracer.sites.module(model), arch, site_kind, layer, base,
                             _hook_edit(kind, params, heads))
        clean = tracer.sites.module(model)(**base).logits.detach()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=f"{kind} at {s.name}")
        if not (kind == "scale" and _norm_follows(arch, site_kind)):
            assert not torch.allclose(want, clean, atol=1e-6), f"{kind} at {s.name} had no effect"


@pytest.mark.parametrize("arch", ARCHS)
def test_interchange_across_invokes(tiny_models, arch):
    """Source read in one invoke, patched into the base in another (tracer.barrier)."""
    model = tiny_models[arch]
    base, source = encode(model, BASE[:1], 6), encode(model, SOURCE[:1], 6)
    for name, heads in [("resid_post.0", None), ("head_v.1", [1]), ("head_out.0", [0, 2]),
                        ("attn_out.1", None)]:
        s = tracer.site(model, name)
        with torch.no_grad(), model.trace() as tr:
            barrier = tr.barrier(2)
            with tr.invoke(source):
                src = s.read(positions=POSITIONS, heads=heads)
                barrier()
            with tr.invoke(base):
                barrier()
                iv.interchange(s, src, positions=POSITIONS, heads=heads)
                got = model.output.logits.save()
        src_full = capture(tracer.sites.module(model), arch, s.kind, s.layer, source)
        src_ref = src_full[:, POSITIONS] if heads is None else src_full[:, POSITIONS][:, :, heads]
        want = edited_logits(tracer.sites.module(model), arch, s.kind, s.layer, base,
                             _hook_edit("interchange", {"source": src_ref}, heads))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=name)


def test_interchange_from_a_saved_tensor(tiny_models):
    model = tiny_models["qwen2"]
    base, source = encode(model, BASE[:1], 6), encode(model, SOURCE[:1], 6)
    s = tracer.site(model, "head_q.1")
    with torch.no_grad(), model.trace(source):
        saved = s.read(positions=[-1], heads=[3]).save()
    with torch.no_grad(), model.trace(base):
        iv.interchange(s, saved, positions=[-1], heads=[3])
        got = model.output.logits.save()
    want = edited_logits(tracer.sites.module(model), "qwen2", "head_q", 1, base,
                         lambda t: t[:, -1, 3].copy_(saved[:, 0, 0]))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_resid_mid_edit_reaches_the_residual(tiny_models, arch):
    """Zeroing resid_mid leaves resid_post = mlp_out at that position: the edit reached
    both the MLP's input and the residual the layer adds it to."""
    model = tiny_models[arch]
    inputs = encode(model, BASE, 6)
    mid, mlp, post = (tracer.site(model, f"{k}.1") for k in ("resid_mid", "mlp_out", "resid_post"))
    with torch.no_grad(), model.trace(inputs):
        iv.zero(mid, positions=[2])
        m = mlp.read(positions=[2]).save()
        p = post.read(positions=[2]).save()
    if arch == "gemma2":  # Gemma 2 norms the MLP output before adding it
        norm = tracer.sites.module(model).model.layers[1].post_feedforward_layernorm
        m = norm(m)
    torch.testing.assert_close(p, m, rtol=0, atol=1e-5)


def test_pure_functions():
    x = torch.randn(2, 3, 8)
    d = torch.randn(8)
    out = iv.project_out_values(x, d)
    assert torch.allclose(out @ (d / d.norm()), torch.zeros(2, 3), atol=1e-5)
    assert torch.equal(iv.zero_values(x), torch.zeros_like(x))
    assert torch.allclose(iv.add_values(x, d, 2.0), x + 2 * d)
    assert torch.allclose(iv.scale_values(x, -1.0), -x)
    assert torch.equal(iv.mean_values(x, d), d.expand_as(x))
