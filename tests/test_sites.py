"""Every site of every family reads what a plain forward hook sees (fp32, 1e-5)."""

import nnsight
import pytest
import torch

import tracer
from tracer.interventions import Intervention
from tracer.sites import LAYER_SITES
from tracer.testing import ARCHS, MOE_ARCHS

from helpers import encode
from hooks import capture

PROMPTS = ["The capital of France is Paris and", "Once upon a time there was a dog"]


def _cases(arch):
    kinds = [k for k in LAYER_SITES if not (arch == "gpt_neox" and k == "resid_mid")]
    return [("embed", None), ("final", None), ("logits", None)] + [
        (k, layer) for k in kinds for layer in (0, 1)]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_site_matches_a_plain_hook(tiny_models, arch):
    model = tiny_models[arch]
    inputs = encode(model, PROMPTS)
    cases = _cases(arch)
    sites = sorted((tracer.site(model, k, layer=l) for k, l in cases), key=lambda s: s.order)
    with torch.no_grad(), model.trace(inputs):
        values = nnsight.save([s.read() for s in sites])
    assert len(values) == len(cases)
    for s, got in zip(sites, values):
        want = capture(tracer.sites.module(model), arch, s.kind, s.layer, inputs)
        assert got.shape == want.shape, s.name
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=s.name)


@pytest.mark.parametrize("arch", ARCHS)
def test_selection_by_rows_positions_and_heads(tiny_models, arch):
    model = tiny_models[arch]
    inputs = encode(model, PROMPTS)
    q = tracer.site(model, "head_k.1")
    r = tracer.site(model, "resid_post.1")
    per_row = torch.tensor([[0, 2], [3, -1]])
    with torch.no_grad(), model.trace(inputs):
        heads = q.read(positions=[1, -1], heads=[1, 0]).save()
        rows = r.read(positions=per_row).save()
        one = r.read(positions=2, rows=[1]).save()
    k_full = capture(tracer.sites.module(model), arch, "head_k", 1, inputs)
    r_full = capture(tracer.sites.module(model), arch, "resid_post", 1, inputs)
    torch.testing.assert_close(heads, k_full[:, [1, -1]][:, :, [1, 0]], rtol=0, atol=1e-5)
    torch.testing.assert_close(rows[0], r_full[0, [0, 2]], rtol=0, atol=1e-5)
    torch.testing.assert_close(rows[1], r_full[1, [3, -1]], rtol=0, atol=1e-5)
    torch.testing.assert_close(one, r_full[1:2, 2:3], rtol=0, atol=1e-5)


def test_raw_module_path_site(tiny_models):
    model = tiny_models["llama"]
    inputs = encode(model, PROMPTS)
    raw = tracer.site(model, "model.layers[1].mlp.output")
    with torch.no_grad(), model.trace(inputs):
        got = raw.read().save()
    torch.testing.assert_close(got, capture(tracer.sites.module(model), "llama", "mlp_out", 1, inputs),
                               rtol=0, atol=1e-5)


def test_sites_work_inside_generate(tiny_models):
    """A site write inside the user's own generate loop edits every step."""
    model = tiny_models["llama"]
    s = tracer.site(model, "resid_post.1")
    with torch.no_grad(), model.generate("The cat sat", max_new_tokens=3, min_new_tokens=3,
                                             do_sample=False) as tr:
        shapes = nnsight.save([])
        for _ in tr.iter[0:3]:
            shapes.append(tuple(s.read(positions=[-1]).shape))
            tracer.interventions.zero(s, positions=[-1])
    assert shapes == [(1, 1, 64)] * 3


def test_valid_sites_lists_every_name(tiny_models):
    names = tracer.valid_sites(tiny_models["llama"])
    assert names[0] == "embed" and names[-2:] == ["final", "logits"]
    assert "head_v.1" in names and "resid_mid.0" in names
    assert "resid_mid.0" not in tracer.valid_sites(tiny_models["gpt_neox"])


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_raw_path_inside_a_layer_takes_its_place_in_the_layer(tiny_models, arch):
    """The MLP activation (not a named site; pyvene's ``mlp_activation``) edited in one pass
    with named sites before and after it, in whatever order they are given."""
    model = tiny_models[arch]
    act = tracer.site(model, "mlp_activation.0")
    path = {"gpt2": "transformer.h.0.mlp.act", "gpt_neox": "gpt_neox.layers.0.mlp.act"}.get(
        arch, "model.layers.0.mlp.act_fn")
    assert act.name == f"{path}.output" and act.order > tracer.site(model, "resid_pre.0").order
    assert act.order < tracer.site(model, "mlp_out.0").order
    vector = torch.randn(64, generator=torch.Generator().manual_seed(0))
    group = tracer.plan.Group([model.tokenizer(PROMPTS[0])["input_ids"]],
                              [Intervention("add", "mlp_out.0", params={"vector": vector}),
                               Intervention("scale", f"{path}.output", params={"factor": 0.5}),
                               Intervention("zero", "resid_pre.0", positions=[0])],
                              [tracer.plan.Distribution(0, (-1,))])
    got = tracer.execute.run(model, [group], progress=False)[0][0]
    module = tracer.sites.module(model)
    hooks = [module.get_submodule(path).register_forward_hook(lambda m, a, o: o * 0.5)]
    mlp = module.get_submodule(path.rsplit(".", 1)[0])
    hooks.append(mlp.register_forward_hook(lambda m, a, o: o + vector))
    layer = module.get_submodule(path.rsplit(".", 2)[0])

    def zero_first(m, args, kwargs):
        (args[0] if args else kwargs["hidden_states"])[:, 0] = 0
    hooks.append(layer.register_forward_pre_hook(zero_first, with_kwargs=True))
    try:
        with torch.no_grad():
            ids = torch.tensor([model.tokenizer(PROMPTS[0])["input_ids"]])
            want = module(ids).logits[0, -1:].log_softmax(-1)
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", MOE_ARCHS)
def test_router_logits_match_a_plain_hook_and_are_read_only(tiny_models, arch):
    """Router logits, (batch, seq, experts), on every mixture-of-experts layer; qwen3_moe's
    tiny model has a dense layer 1, which has no router."""
    model = tiny_models[arch]
    inputs = encode(model, PROMPTS)
    layers = tracer.sites.moe_layers(tracer.sites.module(model), model.config)
    assert layers == ([0] if arch == "qwen3_moe" else [0, 1])
    assert [n for n in tracer.valid_sites(model) if n.startswith("router")] == [f"router.{l}" for l in layers]
    sites = [tracer.site(model, f"router.{l}") for l in layers]
    with torch.no_grad(), model.trace(inputs):
        got = nnsight.save([s.read() for s in sites])
    b, s = inputs["input_ids"].shape
    for layer, value in zip(layers, got):
        want = capture(tracer.sites.module(model), arch, "router", layer, inputs)
        torch.testing.assert_close(value, want.unflatten(0, (b, s)), rtol=0, atol=1e-5)
    with pytest.raises(tracer.sites.SiteError, match="read-only"):
        with torch.no_grad(), model.trace(inputs):
            tracer.interventions.zero(sites[0])
    if arch == "qwen3_moe":
        with pytest.raises(tracer.sites.SiteError, match="dense MLP"):
            tracer.site(model, "router.1")
    with pytest.raises(tracer.sites.SiteError, match="no mixture-of-experts"):
        tracer.site(tiny_models["llama"], "router.0")
