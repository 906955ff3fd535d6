"""The pyvene-style front end against plain forward hooks, on tiny models of every family."""

import pytest
import torch

import tracer as pv
from tracer.files import SpecError
from tracer.testing import ARCHS

from hooks import capture, edited_logits

BASE, SOURCE = "The capital of Spain is", "The capital of Italy is"


def enc(model, text):
    return model.tokenizer(text, return_tensors="pt")


def pair(model):
    b, s = enc(model, BASE), enc(model, SOURCE)
    n = min(b["input_ids"].shape[1], s["input_ids"].shape[1])
    cut = lambda e: {k: v[:, :n] for k, v in e.items()}  # noqa: E731
    return cut(b), cut(s)


@pytest.mark.parametrize("arch", ARCHS)
def test_vanilla_interchange_matches_hooks_and_leaves_earlier_positions(tiny_models, arch):
    model = tiny_models[arch]
    base, source = pair(model)
    pvm = pv.IntervenableModel(pv.IntervenableConfig(
        intervenable_representations=[pv.IntervenableRepresentationConfig(0, "block_output")],
        intervenable_interventions_type=pv.VanillaIntervention), model=model)
    original, intervened = pvm(base, [source], {"sources->base": 3}, output_original_output=True)
    src = capture(pv.sites.module(model), arch, "resid_post", 0, source)

    def edit(t):
        t[:, 3] = src[:, 3]
    want = edited_logits(pv.sites.module(model), arch, "resid_post", 0, base, edit)
    assert torch.allclose(intervened.logits, want, atol=1e-5)
    diff = (original.last_hidden_state - intervened.last_hidden_state).abs().amax(-1)[0]
    # earlier positions are untouched up to float noise: a mixture of experts' grouped
    # kernels sum in an order that depends on the batch (2e-7 seen on qwen3_moe, mixtral)
    assert torch.all(diff[:3] < 1e-5) and diff[3] > 1e-3
    assert original.last_hidden_state.shape == (1, base["input_ids"].shape[1], 64)


CASES = {
    "addition": (pv.AdditionIntervention, lambda t, v: t.add_(v)),
    "subtraction": (pv.SubtractionIntervention, lambda t, v: t.sub_(v)),
    "zero": (pv.ZeroIntervention, lambda t, v: t.zero_()),
    "function": (lambda b, s: b * 0.5 + s, lambda t, v: t.copy_(t * 0.5 + v)),
}


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "gemma2"])
@pytest.mark.parametrize("case", list(CASES))
def test_constant_interventions_match_hooks(tiny_models, arch, case):
    model = tiny_models[arch]
    base, _ = pair(model)
    cls, ref = CASES[case]
    torch.manual_seed(0)
    vector = torch.randn(64)
    pvm = pv.IntervenableModel({"layer": 1, "component": "mlp_output", "intervention": cls}, model=model)
    _, out = pvm(base, unit_locations={"base": [1, 2]}, source_representations=vector)

    def edit(t):
        sel = t[:, [1, 2]]
        ref(sel, vector)
        t[:, [1, 2]] = sel
    want = edited_logits(pv.sites.module(model), arch, "mlp_out", 1, base, edit)
    assert torch.allclose(out.logits, want, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_head_units_match_hooks(tiny_models, arch):
    model = tiny_models[arch]
    base, source = pair(model)
    pvm = pv.IntervenableModel({"layer": 1, "component": "head_attention_value_output",
                                "unit": "h.pos", "intervention": pv.VanillaIntervention}, model=model)
    loc = [[[1, 3]], [[2]]]  # heads 1 and 3 at position 2
    _, out = pvm(base, [source], {"sources->base": (loc, loc)})
    src = capture(pv.sites.module(model), arch, "head_out", 1, source)

    def edit(t):
        t[:, 2, [1, 3]] = src[:, 2, [1, 3]]
    want = edited_logits(pv.sites.module(model), arch, "head_out", 1, base, edit)
    assert torch.allclose(out.logits, want, atol=1e-5)


def test_collect_skip_and_module_path(tiny_models):
    model = tiny_models["llama"]
    base, _ = pair(model)
    pvm = pv.IntervenableModel([{"layer": 0, "component": "block_output", "intervention": pv.CollectIntervention},
                                {"component": "model.layers[1].output", "intervention": pv.SkipIntervention}],
                               model=model)
    (original, collected), out = pvm(base, output_original_output=True)
    assert torch.allclose(collected[0], capture(pv.sites.module(model), "llama", "resid_post", 0, base))
    pre = {}

    def keep(t):
        pre["x"] = t.clone()
    with torch.no_grad():
        edited_logits(pv.sites.module(model), "llama", "resid_pre", 1, base, keep)
    want = edited_logits(pv.sites.module(model), "llama", "resid_post", 1, base, lambda t: t.copy_(pre["x"]))
    assert torch.allclose(out.logits, want, atol=1e-5)
    assert not torch.allclose(original.logits, out.logits)


@pytest.mark.parametrize("cls", [pv.RotatedSpaceIntervention, pv.LowRankRotatedSpaceIntervention,
                                 pv.BoundlessRotatedSpaceIntervention, pv.AutoencoderIntervention])
def test_trainable_match_hooks_and_train_and_round_trip(tiny_models, tmp_path, cls):
    model = tiny_models["qwen2"]
    base, source = pair(model)
    torch.manual_seed(0)
    kwargs = {"low_rank_dimension": 4} if cls is pv.LowRankRotatedSpaceIntervention else \
        {"interchange_dim": 8} if cls is pv.RotatedSpaceIntervention else \
        {"latent_dim": 16, "interchange_dim": [0, 3]} if cls is pv.AutoencoderIntervention else {}
    iv = cls(embed_dim=64, **kwargs)
    pvm = pv.IntervenableModel({"layer": 0, "component": "block_output", "intervention": iv}, model=model)
    last = base["input_ids"].shape[1] - 1  # the prompts differ only there
    locs = {"sources->base": last}
    with torch.no_grad():
        _, out = pvm(base, [source], locs)
    src = capture(pv.sites.module(model), "qwen2", "resid_post", 0, source)

    def edit(t):
        with torch.no_grad():
            t[:, last] = iv(t[:, last].clone(), src[:, last])
    want = edited_logits(pv.sites.module(model), "qwen2", "resid_post", 0, base, edit)
    assert torch.allclose(out.logits, want, atol=1e-5)

    # gradients reach the intervention through the trace, and the model stays frozen
    target = int(out.logits[0, -1].argsort()[-2])
    batch = {"base": base, "sources": [source], "unit_locations": locs, "labels": torch.tensor([target])}
    loss = lambda o, y: torch.nn.functional.cross_entropy(o.logits[:, -1], y)  # noqa: E731
    log = pvm.train_alignment([batch] * 5, loss, epochs=2, lr=5e-2, progress=False)
    assert len(log) == 10 and log[-1]["loss"] < log[0]["loss"]
    assert all(p.grad is None for p in pv.sites.module(model).parameters())

    pvm.save(tmp_path / "iv")
    again = pv.IntervenableModel.load(tmp_path / "iv", model)
    with torch.no_grad():
        _, a = pvm(base, [source], locs)
        _, b = again(base, [source], locs)
    # the same pass with reloaded weights: equal up to float reordering (1e-6)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-6)


def test_generate_matches_generation_module(tiny_models):
    model = tiny_models["llama"]
    prompt = enc(model, "Once upon a time there was")
    vec = torch.randn(64)
    pvm = pv.IntervenableModel([{"layer": l, "component": "mlp_output",
                                 "intervention_type": pv.AdditionIntervention} for l in range(2)], model=model)
    plain, steered = pvm.generate(prompt, source_representations=vec * 3, max_length=14, min_new_tokens=6)
    ivs = [pv.Intervention("add", f"mlp_out.{l}", params={"vector": vec * 3}) for l in range(2)]
    want = pv.generation.generate(model, prompt, ivs, 14 - prompt["input_ids"].shape[1], where="generated",
                                  min_new_tokens=6)
    assert torch.equal(steered, want.steered_tokens) and torch.equal(plain, want.plain_tokens)
    assert steered.shape == (1, 14)


def test_bad_configs(tiny_models):
    model = tiny_models["llama"]
    with pytest.raises(ValueError, match="unknown component 'mlp_outptu'.*valid components are"):
        pv.IntervenableModel({"layer": 0, "component": "mlp_outptu", "intervention": pv.ZeroIntervention}, model=model)
    with pytest.raises(ValueError, match="unit 'h.pos' needs a head component"):
        pv.IntervenableModel({"layer": 0, "component": "mlp_output", "unit": "h.pos",
                              "intervention": pv.ZeroIntervention}, model=model)
    with pytest.raises(ValueError, match="unknown unit"):
        pv.IntervenableModel({"layer": 0, "component": "mlp_output", "unit": "neuron",
                              "intervention": pv.ZeroIntervention}, model=model)
    with pytest.raises(IndexError, match="layer 7 out of range"):
        pv.IntervenableModel({"layer": 7, "component": "mlp_output", "intervention": pv.ZeroIntervention}, model=model)
    with pytest.raises(ValueError, match="has no child 'mlpp'"):
        pv.IntervenableModel({"component": "model.layers[0].mlpp.output", "intervention": pv.ZeroIntervention}, model=model)
    with pytest.raises(ValueError, match="embed_dim 32 but mlp_output is 64 wide"):
        pv.IntervenableModel({"layer": 0, "component": "mlp_output",
                              "intervention": pv.RotatedSpaceIntervention(embed_dim=32)}, model=model)
    pvm = pv.IntervenableModel({"layer": 0, "component": "mlp_output", "intervention": pv.VanillaIntervention}, model=model)
    base, source = pair(model)
    with pytest.raises(IndexError, match="position 40 out of range"):
        pvm(base, [source], {"sources->base": 40})
    with pytest.raises(ValueError, match="needs a source"):
        pvm(base, unit_locations={"base": 1})


def test_load_refuses_foreign_and_corrupt(tiny_models, tmp_path):
    model = tiny_models["llama"]
    (tmp_path / "config.json").write_text('{"format": "something.else"}')
    with pytest.raises(SpecError, match="not an Interlace intervention file"):
        pv.IntervenableModel.load(tmp_path, model)
    pvm = pv.IntervenableModel({"layer": 0, "component": "block_output",
                                "intervention": pv.RotatedSpaceIntervention(embed_dim=64)}, model=model)
    pvm.save(tmp_path / "ok")
    data = (tmp_path / "ok" / "tensors.safetensors").read_bytes()
    (tmp_path / "ok" / "tensors.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SpecError, match="truncated or corrupt"):
        pv.IntervenableModel.load(tmp_path / "ok", model)


def test_load_an_interventionset_folder(tiny_models, tmp_path):
    """An ITI-style head-wise InterventionSet loads into the front end and acts the same."""
    from tracer.interventions import Intervention
    from tracer.files import InterventionSet

    model = tiny_models["llama"]
    g = torch.Generator().manual_seed(3)
    spec = InterventionSet([Intervention("add", "head_out.1", None, [0, 2], {"vector": torch.randn(2, 16, generator=g)}),
                            Intervention("zero", "mlp_out.0")])
    spec.save(tmp_path / "iti")
    pvm = pv.IntervenableModel.load(tmp_path / "iti", model)
    base, _ = pair(model)
    _, out = pvm(base)
    with torch.no_grad(), model.trace(**base):
        spec.apply(model)
        want = model.output.logits.save()
    assert torch.allclose(out.logits, want, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sources_of_another_length_run_in_the_same_batch(tiny_models, arch):
    """A longer source (so the base is left-padded inside the one batch) and a shorter one:
    the same numbers as plain hooks on each prompt alone."""
    model = tiny_models[arch]
    module = pv.sites.module(model)
    base = enc(model, BASE)
    for text in ("Once upon a time there was a happy little dog", "The cat"):
        source = enc(model, text)
        pvm = pv.IntervenableModel({"layer": 1, "component": "block_output",
                                    "intervention": pv.VanillaIntervention}, model=model)
        original, out = pvm(base, [source], {"sources->base": ([[1]], [[2]])},
                            output_original_output=True)
        src = capture(module, arch, "resid_post", 1, source)

        def edit(t):
            t[:, 2] = src[:, 1]
        want = edited_logits(module, arch, "resid_post", 1, base, edit)
        assert out.logits.shape == want.shape
        torch.testing.assert_close(out.logits, want, rtol=0, atol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(original.logits, module(**base).logits, rtol=0, atol=1e-5)


def test_folders_of_the_previous_front_end_format_still_load(tiny_models, tmp_path):
    """``interlace.intervenable`` version 1, as the previous version wrote it."""
    import json

    from safetensors.torch import save_file

    model = tiny_models["llama"]
    base, source = pair(model)
    torch.manual_seed(0)
    # that version kept the rotation as an nn.Linear (weight (k, n)): pyvene's transpose
    old = torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(64, 4, bias=False))
    state = {f"rotate_layer.{k}": v for k, v in old.state_dict().items()}
    iv = pv.LowRankRotatedSpaceIntervention(embed_dim=64, low_rank_dimension=4)
    with torch.no_grad():
        iv.rotate_layer.weight = old.weight.T.contiguous()
    key = "layer_0_comp_block_output_unit_pos_nunit_1#0"
    save_file({f"{key}.{k}": v.contiguous() for k, v in state.items()},
              str(tmp_path / "tensors.safetensors"))
    entry = {"key": key, "class": type(iv).__name__, "init": iv.init_args(), "layer": 0,
             "component": "block_output", "unit": "pos", "max_number_of_units": 1,
             "state": sorted(state)}
    (tmp_path / "config.json").write_text(json.dumps(
        {"format": "interlace.intervenable", "version": 1, "model": {"hidden_size": 64},
         "interventions": [entry]}))
    loaded = pv.IntervenableModel.load(tmp_path, model)
    direct = pv.IntervenableModel({"layer": 0, "component": "block_output", "intervention": iv},
                                  model=model)
    with torch.no_grad():
        _, want = direct(base, [source], {"sources->base": 2})
        _, got = loaded(base, [source], {"sources->base": 2})
    torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=1e-6)
