"""Steering during generation equals the same edit made by a plain hook during
``transformers`` generation (greedy, same tokens out), for each step rule."""

import pytest
import torch

import tracer
from tracer.interventions import Intervention
from tracer.testing import ARCHS

from hooks import _get, locate

PROMPTS = ["Once upon a time there was", "The cat sat"]
N = 6


def hooked_generate(model, arch, kind, layer, vector, alpha, where, steps=(0, None), positions=None):
    """Plain transformers generate with a forward hook adding alpha*vector (left-padded batch)."""
    module = tracer.sites.module(model)
    path, port, view = locate(arch, kind, layer, module.config)
    calls = {"n": 0}
    start, stop = steps

    def edit(t):
        step = calls["n"]
        calls["n"] += 1
        if step < start or (stop is not None and step >= stop):
            return
        if step == 0 and where in ("all", "prompt"):
            if positions is None:
                view(t)[:] += alpha * vector
            else:
                view(t)[:, positions] += alpha * vector
        elif step > 0 and where in ("all", "generated"):
            view(t)[:] += alpha * vector

    return generate_with_hook(model, path, port, edit)


def generate_with_hook(model, path, port, edit):
    """Plain transformers greedy generate of PROMPTS (left-padded) with ``edit`` called on the
    module's input ("in") or output at every step."""
    module = tracer.sites.module(model)
    target = _get(module, path)
    if port == "in":
        handle = target.register_forward_pre_hook(lambda m, a: edit(a[0]))
    else:
        handle = target.register_forward_hook(lambda m, a, o: edit(o[0] if isinstance(o, tuple) else o))
    tok = model.tokenizer
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    try:
        with torch.no_grad():
            return module.generate(**enc, max_new_tokens=N, min_new_tokens=N, do_sample=False,
                                   pad_token_id=tok.pad_token_id)
    finally:
        handle.remove()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("where", ["all", "prompt", "generated"])
def test_steering_equals_hooked_generate(tiny_models, arch, where):
    model = tiny_models[arch]
    torch.manual_seed(1)
    vector = torch.randn(64)
    iv = Intervention("add", "resid_post.0", params={"vector": vector, "alpha": 4.0})
    got = tracer.generation.generate(model, PROMPTS, [iv], N, where=where, min_new_tokens=N)
    want = hooked_generate(model, arch, "resid_post", 0, vector, 4.0, where)
    assert torch.equal(got.steered_tokens, want)
    plain = hooked_generate(model, arch, "resid_post", 0, vector, 0.0, where)
    assert torch.equal(got.plain_tokens, plain)
    assert not torch.equal(got.steered_tokens, got.plain_tokens)  # the edit did something


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_step_window_and_prompt_positions(tiny_models, arch):
    model = tiny_models[arch]
    torch.manual_seed(2)
    vector = torch.randn(64)
    iv = Intervention("add", "mlp_out.1", positions=[-1], params={"vector": vector, "alpha": 6.0})
    got = tracer.generation.generate(model, PROMPTS, [iv], N, steps=(0, 3), min_new_tokens=N)
    want = hooked_generate(model, arch, "mlp_out", 1, vector, 6.0, "all", steps=(0, 3),
                           positions=[-1])
    assert torch.equal(got.steered_tokens, want)


def test_head_site_and_texts(tiny_models):
    model = tiny_models["llama"]
    iv = Intervention("scale", "head_out.1", heads=[0, 2], params={"factor": 0.0})
    got = tracer.generation.generate(model, PROMPTS[0], [iv], N, min_new_tokens=N)
    assert len(got.steered) == len(got.plain) == 1
    assert got.steered_tokens.shape == (1, got.prompt_length + N)


def test_bad_where(tiny_models):
    with pytest.raises(ValueError, match="valid values are all, prompt, generated"):
        tracer.generation.generate(tiny_models["llama"], "The cat", [], 2, where="new")


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_zeroing_during_generation_equals_a_hooked_generate(tiny_models, arch):
    """Zero ablation of two heads' outputs at every step, against a hook on the output
    projection's input during plain transformers generate."""
    model = tiny_models[arch]
    module = tracer.sites.module(model)
    iv = Intervention("zero", "head_out.1", heads=[0, 3])
    got = tracer.generation.generate(model, PROMPTS, [iv], N, min_new_tokens=N)
    path, port, view = locate(arch, "head_out", 1, module.config)

    def zero(t):
        view(t)[:, :, [0, 3]] = 0
    want = generate_with_hook(model, path, port, zero)
    assert torch.equal(got.steered_tokens, want)
