"""The attention pattern site (``attn_pattern.L``, pyvene's ``attention_weight``): the
softmax inside eager attention, read and written per query position and head, against the
model's own ``output_attentions`` and a plain-PyTorch reference that edits the softmax of
that one layer's attention by a hook pair around it, on every family (fp32, 1e-5)."""

import contextlib

import pytest
import torch

import tracer
from tracer import testing
from tracer.sites import SiteError

from helpers import encode

ARCHS = [a for a in testing.ARCHS if a != "gpt_oss"]  # its softmax spans sink logits too
LAYER = 1
# Gemma 2 in eager attention: any nnsight trace differs from the plain forward by up to 6e-5
# on these logits (measured with no edit at all), so it is compared at 2e-4
ATOL = {"gemma2": 2e-4}


def _eager(arch):
    model = testing.tiny(arch)
    tracer.sites.module(model).set_attn_implementation("eager")
    return model


@contextlib.contextmanager
def _softmax_inside(attn_module, call):
    """Inside ``attn_module``'s forward only, ``torch.nn.functional.softmax(x, ...)`` is
    ``call(softmax, x, ...)``."""
    real = torch.nn.functional.softmax
    inside = []

    def patched(*args, **kwargs):
        return call(real, *args, **kwargs) if inside else real(*args, **kwargs)
    handles = [attn_module.register_forward_pre_hook(lambda m, a: inside.append(1)),
               attn_module.register_forward_hook(lambda m, a, o: inside.clear())]
    torch.nn.functional.softmax = patched
    try:
        yield
    finally:
        torch.nn.functional.softmax = real
        for h in handles:
            h.remove()


def _softmax_edit(attn_module, edit):
    """Inside ``attn_module``'s forward only, softmax returns ``edit(probabilities)``."""
    return _softmax_inside(attn_module, lambda real, *a, **k: edit(real(*a, **k)))


def _softmax_input_edit(attn_module, edit, seen):
    """Inside ``attn_module``'s forward only, softmax receives ``edit(scores)``; the scores
    it was given are appended to ``seen``."""
    def call(real, x, *args, **kwargs):
        seen.append(x.detach().clone())
        return real(edit(x), *args, **kwargs)
    return _softmax_inside(attn_module, call)


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_pattern_reads_and_writes_like_plain_pytorch(arch):
    model = _eager(arch)
    top = tracer.sites.module(model)
    inputs = encode(model, ["The capital of France is Paris", "The capital of Italy is Rome"])
    site = tracer.site(model, f"attn_pattern.{LAYER}")
    with torch.no_grad():
        want = top(**inputs, output_attentions=True).attentions[LAYER]
        with model.trace(**inputs):
            got = site.read().save()
    torch.testing.assert_close(got.transpose(1, 2), want, rtol=0, atol=1e-5)
    heads = [0, site.n_heads - 1]

    def flat(p):  # the last query attends to the first key only, at two heads
        p = p.clone()
        p[:, heads, -1] = 0
        p[:, heads, -1, 0] = 1
        return p
    attn = top.get_submodule(f"{site.family.layers}.{LAYER}.{site.family.attn}")
    with torch.no_grad(), _softmax_edit(attn, flat):
        ref = top(**inputs).logits
    with torch.no_grad(), model.trace(**inputs):
        site.edit(lambda x: torch.zeros_like(x).index_fill_(-1, torch.tensor([0]), 1.0),
                  positions=[-1], heads=heads)
        out = model.lm_head.output.save()
    torch.testing.assert_close(out, ref, rtol=0, atol=ATOL.get(arch, 1e-5))
    assert (out - top(**inputs).logits).abs().max() > 1e-3


def test_attention_pattern_needs_eager_attention_and_says_how():
    model = testing.tiny("llama")
    tracer.sites.module(model).set_attn_implementation("sdpa")
    with pytest.raises(SiteError, match="set_attn_implementation\\('eager'\\)"):
        tracer.site(model, "attn_pattern.0")
    with pytest.raises(SiteError, match="sink"):
        tracer.site(_eager("gpt_oss"), "attn_pattern.0")


def test_pyvene_attention_weight_component_is_the_pattern():
    """pyvene's attention_weight (its own hook never fires on transformers 5: GPT-2's
    attention no longer calls attn_dropout): the pattern at head 1, query 3 zeroed."""
    model = _eager("gpt2")
    inputs = encode(model, ["The capital of France is Paris"])
    pm = tracer.IntervenableModel({"layer": LAYER, "component": "attention_weight", "unit": "h.pos",
                                   "intervention_type": tracer.ZeroIntervention}, model=model)
    with torch.no_grad():
        got = pm(inputs, unit_locations={"base": [[[1]], [[3]]]})[1].logits

    def zero(p):
        p = p.clone()
        p[:, 1, 3] = 0
        return p
    top = tracer.sites.module(model)
    with torch.no_grad(), _softmax_edit(top.transformer.h[LAYER].attn, zero):
        want = top(**inputs).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_scores_read_and_write_like_plain_pytorch(arch):
    """``attn_scores.L`` (TransformerLens's hook_attn_scores) is the softmax's input, masked:
    read, then an edit that scales two heads' scores at the last query, against a plain
    forward whose softmax sees the same edit."""
    model = _eager(arch)
    top = tracer.sites.module(model)
    inputs = encode(model, ["The capital of France is Paris", "The capital of Italy is Rome"])
    site = tracer.site(model, f"blocks.{LAYER}.attn.hook_attn_scores")
    assert site.kind == "attn_scores"
    heads = [0, site.n_heads - 1]

    def scale(s):  # (batch, heads, query, key) inside the model
        s = s.clone()
        s[:, heads, -1] = s[:, heads, -1] * 3.0
        return s
    attn = top.get_submodule(f"{site.family.layers}.{LAYER}.{site.family.attn}")
    seen = []
    with torch.no_grad(), _softmax_input_edit(attn, scale, seen):
        ref = top(**inputs).logits
    with torch.no_grad(), model.trace(**inputs):
        scores = site.read().clone().save()  # the read is a view, which the edit changes
        site.edit(lambda x: x * 3.0, positions=[-1], heads=heads)
        out = model.lm_head.output.save()
    want = seen[0].transpose(1, 2)
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(scores))  # the mask is part of the scores
    torch.testing.assert_close(scores[finite], want[finite], rtol=0, atol=1e-5)
    torch.testing.assert_close(out, ref, rtol=0, atol=ATOL.get(arch, 1e-5))
    assert (out - top(**inputs).logits).abs().max() > 1e-4


@pytest.mark.parametrize("arch", testing.ARCHS)
def test_head_result_is_each_heads_share_of_the_output_projection(arch):
    """``head_result.L`` (hook_result): per head, head_out through its slice of the output
    projection's weight; against a plain pre-hook on that projection (its input per head
    times the weight's columns), summing with the bias to the projection's output; and
    read-only, with the site to edit named."""
    model = testing.tiny(arch)
    top = tracer.sites.module(model)
    inputs = encode(model, ["The capital of France is Paris", "The capital of Italy is Rome"])
    site = tracer.site(model, f"blocks.{LAYER}.attn.hook_result")
    proj = top.get_submodule(site.module_path)
    got_in, got_out = [], []
    handles = [proj.register_forward_pre_hook(lambda m, a: got_in.append(a[0].detach().clone())),
               proj.register_forward_hook(lambda m, a, o: got_out.append(o.detach().clone()))]
    try:
        with torch.no_grad():
            top(**inputs)
    finally:
        for h in handles:
            h.remove()
    d = site.dims
    z = got_in[0].unflatten(-1, (d.n_heads, d.head_dim))
    weight = proj.weight if isinstance(proj, torch.nn.Linear) else proj.weight.T  # (out, in)
    want = torch.stack([z[:, :, h] @ weight[:, h * d.head_dim:(h + 1) * d.head_dim].T
                        for h in range(d.n_heads)], dim=2)
    with torch.no_grad(), model.trace(**inputs):
        got = site.read().save()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    bias = getattr(proj, "bias", None)
    total = got.sum(2) + (0 if bias is None else bias)
    torch.testing.assert_close(total, got_out[0], rtol=0, atol=1e-5)
    with pytest.raises(SiteError, match=f"read-only.*edit head_out.{LAYER}"):
        with torch.no_grad(), model.trace(**inputs):
            site.write(0.0)
