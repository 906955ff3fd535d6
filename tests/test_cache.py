"""tracer.cache and TransformerLens hook names: every site equals plain hooks on every family."""

import pytest
import torch

import tracer
from hooks import capture
from helpers import encode
from tracer.testing import ARCHS

PROMPTS = ["The capital of France is Paris", "The cat sat on the mat and"]


def _kinds(model):
    dims = tracer.sites.dims_of(model.config)
    kinds = ["resid_pre", "head_q", "head_k", "head_v", "head_out", "attn_out", "mlp_out", "resid_post"]
    return kinds if dims.parallel_residual else kinds + ["resid_mid"]


@pytest.mark.parametrize("arch", ARCHS)
def test_cache_and_transformer_lens_names_equal_hooks(tiny_models, arch):
    model = tiny_models[arch]
    inputs = encode(model, PROMPTS)
    names = [f"{k}.{layer}" for k in _kinds(model) for layer in (0, 1)] + ["embed", "final", "logits"]
    got = tracer.cache(model, inputs, names)
    module = tracer.sites.module(model)
    for name in names:
        kind, _, layer = name.partition(".")
        want = capture(module, arch, kind, int(layer) if layer else None, inputs)
        assert got[name].shape == want.shape, name
        assert torch.allclose(got[name], want, atol=1e-5), name
    tl = {"resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
          "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out", "head_q": "attn.hook_q",
          "head_k": "attn.hook_k", "head_v": "attn.hook_v", "head_out": "attn.hook_z"}
    lens = tracer.cache(model, inputs, [f"blocks.1.{tl[k]}" for k in _kinds(model)])
    for k in _kinds(model):
        assert torch.equal(lens[f"blocks.1.{tl[k]}"], got[f"{k}.1"]), k


def test_cache_reads_patterns_in_eager_attention_and_says_so(tiny_models):
    model = tiny_models["llama"]
    module = tracer.sites.module(model)
    impl = model.config._attn_implementation
    inputs = encode(model, PROMPTS)
    with pytest.warns(UserWarning, match="eager attention") if impl != "eager" else _nothing():
        got = tracer.cache(model, inputs, ["blocks.1.attn.hook_pattern", "attn_pattern.0"])
    assert model.config._attn_implementation == impl  # switched back
    module.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            want = module(**inputs, output_attentions=True).attentions
    finally:
        module.set_attn_implementation(impl)
    assert torch.allclose(got["blocks.1.attn.hook_pattern"], want[1].transpose(1, 2), atol=1e-6)
    assert torch.allclose(got["attn_pattern.0"], want[0].transpose(1, 2), atol=1e-6)


def test_cache_reads_scores_and_each_heads_result_in_one_pass(tiny_models):
    """TransformerLens's hook_attn_scores and hook_result: the pattern is the scores'
    softmax over the keys, and the heads' results sum to attn_out (Llama has no bias)."""
    model = tiny_models["llama"]
    names = ["blocks.1.attn.hook_attn_scores", "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_result",
             "blocks.1.hook_attn_out"]
    with pytest.warns(UserWarning, match="eager attention") \
            if model.config._attn_implementation != "eager" else _nothing():
        got = tracer.cache(model, encode(model, PROMPTS), names)
    scores, pattern, result, out = (got[n] for n in names)
    torch.testing.assert_close(scores.softmax(-1), pattern, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.sum(2), out, rtol=0, atol=1e-5)


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def test_a_bad_name_fails_before_any_work(tiny_models):
    model = tiny_models["llama"]
    with pytest.raises(tracer.sites.SiteError, match="TransformerLens hook names"):
        tracer.cache(model, PROMPTS, ["blocks.1.hook_nothing"])
    with pytest.raises(tracer.sites.SiteError, match="layer 7 out of range"):
        tracer.cache(model, PROMPTS, ["blocks.7.hook_resid_post"])
