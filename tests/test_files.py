"""Interventions as data: round trips, bad folders, the hub (mocked), pyvene folders."""

import json
import shutil
from pathlib import Path

import pytest
import torch

import tracer
from tracer.interventions import Intervention
from tracer.files import InterventionSet, SpecError, model_info
from tracer.pyvene.folders import from_pyvene

from helpers import encode

# the same pass twice (saved and reloaded values): equal up to float reordering
ATOL = 1e-6
from hooks import edited_logits

PROMPTS = ["The capital of France is Paris and", "Once upon a time there was a dog"]


def _spec(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return InterventionSet([
        Intervention("add", "head_out.1", None, [0, 2], {"vector": torch.randn(2, 16, generator=g), "alpha": 1.5}),
        Intervention("project_out", "resid_post.0", [1, -1], None, {"direction": torch.randn(64, generator=g)}),
        Intervention("scale", "mlp_out.1", [2], None, {"factor": 0.5}),
    ], model_info(model), {"note": "test"})


def _logits(model, spec, inputs):
    with torch.no_grad(), model.trace(inputs):
        if spec is not None:
            spec.apply(model)
        out = model.output.logits.save()
    return out


def test_round_trip_is_bit_identical(tiny_models, tmp_path):
    model = tiny_models["llama"]
    spec = _spec(model)
    spec.save(tmp_path / "iv")
    loaded = tracer.files.load(tmp_path / "iv", model)
    assert loaded.meta == {"note": "test"} and loaded.model == model_info(model)
    for a, b in zip(spec.interventions, loaded.interventions):
        assert (a.kind, a.site, a.heads) == (b.kind, b.site, b.heads)
        assert list(a.positions or []) == list(b.positions or [])
        for k, v in a.params.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, b.params[k])
            else:
                assert v == b.params[k]
    inputs = encode(model, PROMPTS, 6)
    torch.testing.assert_close(_logits(model, spec, inputs), _logits(model, loaded, inputs), rtol=0, atol=ATOL)
    assert not torch.allclose(_logits(model, None, inputs), _logits(model, loaded, inputs))
    # a folder of the previous format version (1) reads the same
    config = json.loads((tmp_path / "iv" / "config.json").read_text())
    (tmp_path / "iv" / "config.json").write_text(json.dumps({**config, "version": 1}))
    old = tracer.files.load(tmp_path / "iv", model)
    torch.testing.assert_close(_logits(model, spec, inputs), _logits(model, old, inputs), rtol=0, atol=ATOL)
    assert not [p for p in (tmp_path / "iv").iterdir() if p.name.startswith(".")]  # no temp files


def test_spec_equals_plain_hook_edit(tiny_models):
    model = tiny_models["llama"]
    v = torch.randn(2, 16)
    spec = InterventionSet([Intervention("add", "head_out.1", None, [0, 2], {"vector": v})])
    inputs = encode(model, PROMPTS, 6)

    def edit(t):  # t: (b, s, heads, head_dim) view of o_proj's input
        t[:, :, [0, 2]] += v

    want = edited_logits(tracer.sites.module(model), "llama", "head_out", 1, inputs, edit)
    torch.testing.assert_close(_logits(model, spec, inputs), want, rtol=0, atol=1e-5)


def test_spec_applies_during_generation_like_a_plain_hook(tiny_models):
    model = tiny_models["llama"]
    from recipes.iti import generate

    v = torch.randn(2, 16) * 3
    spec = InterventionSet([Intervention("add", "head_out.1", None, [1, 3], {"vector": v})])
    plain, steered = generate(model, ["The cat sat"], spec, max_new_tokens=6)
    module, tok = tracer.sites.module(model), model.tokenizer

    def pre(mod, args):
        args[0].unflatten(-1, (4, 16))[:, :, [1, 3]] += v

    handle = module.model.layers[1].self_attn.o_proj.register_forward_pre_hook(pre)
    ids = tok("The cat sat", return_tensors="pt")
    try:
        with torch.no_grad():
            out = module.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    finally:
        handle.remove()
    with torch.no_grad():
        clean = module.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    n = ids["input_ids"].shape[1]
    assert steered[0] == tok.decode(out[0, n:], skip_special_tokens=True)
    assert plain[0] == tok.decode(clean[0, n:], skip_special_tokens=True)


def test_malformed_json(tiny_models, tmp_path):
    _spec(tiny_models["llama"]).save(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "interlace.interventions", "vers')
    with pytest.raises(SpecError, match="is not valid JSON .* corrupt or truncated"):
        tracer.files.load(tmp_path)


def test_truncated_tensors(tiny_models, tmp_path):
    _spec(tiny_models["llama"]).save(tmp_path)
    data = (tmp_path / "tensors.safetensors").read_bytes()
    (tmp_path / "tensors.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SpecError, match="tensors.safetensors is truncated or corrupt"):
        tracer.files.load(tmp_path)


def test_unknown_kind_and_missing_tensor(tiny_models, tmp_path):
    _spec(tiny_models["llama"]).save(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["interventions"][2]["kind"] = "explode"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SpecError, match="intervention 2 .* unknown kind 'explode'; valid kinds are interchange"):
        tracer.files.load(tmp_path)
    cfg["interventions"][2]["kind"] = "scale"
    cfg["interventions"][0]["params"]["vector"]["tensor"] = "9.nothing"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SpecError, match="tensor '9.nothing' is missing"):
        tracer.files.load(tmp_path)


def test_foreign_and_future_files(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(SpecError, match="is not an Interlace intervention file"):
        tracer.files.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "interlace.interventions", "version": 99}))
    with pytest.raises(SpecError, match="version 99; this Interlace reads versions up to 3"):
        tracer.files.load(tmp_path)
    with pytest.raises(SpecError, match="no such intervention folder"):
        tracer.files.load(tmp_path / "missing")


def test_mismatched_model_is_refused_before_anything_is_applied(tiny_models, tmp_path):
    llama, gpt2 = tiny_models["llama"], tiny_models["gpt2"]
    spec = InterventionSet([Intervention("zero", "mlp_out.0"),
                            Intervention("add", "resid_post.1", None, None, {"vector": torch.ones(32)})])
    spec.save(tmp_path)
    with pytest.raises(SpecError, match=r"vector has shape \(32,\) but the site's last dimension is 64"):
        tracer.files.load(tmp_path, llama)
    heads = InterventionSet([Intervention("add", "head_k.0", None, [3], {"vector": torch.ones(16)})])
    with pytest.raises(SpecError, match=r"heads \[3\] out of range at head_k.0 \(valid 0..1\)"):
        heads.check(llama)
    other = _spec(gpt2)
    other.model["num_kv_heads"] = 4
    with pytest.raises(SpecError, match="made for a model with num_kv_heads=4; this model has num_kv_heads=2"):
        other.check(llama)


def test_push_and_load_through_a_mocked_hub(tiny_models, tmp_path, monkeypatch):
    import huggingface_hub

    hub = tmp_path / "hub"
    calls = []

    def create_repo(self, repo_id, private=None, exist_ok=False, **kw):
        calls.append(("create", repo_id))
        (hub / repo_id).mkdir(parents=True, exist_ok=True)

    def upload_folder(self, folder_path, repo_id, commit_message=None, **kw):
        calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        shutil.copytree(folder_path, hub / repo_id, dirs_exist_ok=True)
        return f"https://huggingface.co/{repo_id}/commit/abc"

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        calls.append(("download", repo_id, tuple(allow_patterns)))
        if not (hub / repo_id).exists():
            raise huggingface_hub.errors.RepositoryNotFoundError(f"404 {repo_id}")
        return str(hub / repo_id)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    model = tiny_models["llama"]
    spec = _spec(model)
    url = spec.push_to_hub("someone/iti-llama")
    assert url.endswith("/commit/abc")
    assert calls[1] == ("upload", "someone/iti-llama", ["config.json", "tensors.safetensors"])
    loaded = tracer.files.load("someone/iti-llama", model)
    assert calls[-1] == ("download", "someone/iti-llama", ("config.json", "tensors.safetensors"))
    inputs = encode(model, PROMPTS, 6)
    torch.testing.assert_close(_logits(model, spec, inputs), _logits(model, loaded, inputs), rtol=0, atol=ATOL)
    with pytest.raises(SpecError, match="could not fetch interventions 'someone/nothing'"):
        tracer.files.load("someone/nothing")


def _pyvene_folder(path, layer, component, cls, vector):
    """A folder in pyvene's saved layout (config.json + intkey_*.bin), written by hand."""
    path.mkdir(parents=True, exist_ok=True)
    key = f"layer_{layer}_comp_{component}_unit_pos_nunit_1#0"
    config = {"model_type": "LlamaForCausalLM", "representations": [
        [layer, component, "pos", 1, None, None, None, None, None, None, None, None, True]],
        "intervention_types": [f"<class 'pyvene.models.interventions.{cls}'>"],
        "sorted_keys": [key], "intervention_dimensions": [None], "intervention_constant_sources": [True]}
    (path / "config.json").write_text(json.dumps(config))
    torch.save({"source_representation": vector}, path / f"intkey_{key}.bin")


def test_pyvene_folders_with_plain_tensors(tiny_models, tmp_path):
    model = tiny_models["llama"]
    v = torch.randn(64)
    _pyvene_folder(tmp_path / "add", 1, "mlp_output", "AdditionIntervention", v)
    spec = from_pyvene(tmp_path / "add", model)
    assert spec.interventions[0].site == "mlp_out.1"
    inputs = encode(model, PROMPTS, 6)

    def edit(t):
        t += v

    want = edited_logits(tracer.sites.module(model), "llama", "mlp_out", 1, inputs, edit)
    torch.testing.assert_close(_logits(model, spec, inputs), want, rtol=0, atol=1e-5)
    _pyvene_folder(tmp_path / "rot", 0, "block_output", "RotatedSpaceIntervention", v)
    with pytest.raises(SpecError, match="RotatedSpaceIntervention does not fit layer 0 block_output"):
        from_pyvene(tmp_path / "rot", model)  # a rotation folder without its weights
    _pyvene_folder(tmp_path / "noisy", 0, "block_output", "NoiseIntervention", v)
    with pytest.raises(SpecError, match="NoiseIntervention, which has no class here"):
        from_pyvene(tmp_path / "noisy", model)
    with pytest.raises(SpecError, match="looks like a pyvene folder"):
        tracer.files.load(tmp_path / "add")
    # a raw module path as pyvene's ITI examples use, e.g. model.layers[1].self_attn.o_proj.input
    _pyvene_folder(tmp_path / "raw", 1, "model.layers[1].self_attn.o_proj.input", "AdditionIntervention", v)
    raw = from_pyvene(tmp_path / "raw", model)
    want = edited_logits(tracer.sites.module(model), "llama", "head_out", 1, inputs, lambda t: t.add_(v.view(4, 16)))
    torch.testing.assert_close(_logits(model, raw, inputs), want, rtol=0, atol=1e-5)


def test_a_save_cut_between_its_files_never_loads_mixed(tiny_models, tmp_path, monkeypatch):
    """A save over an existing folder killed after its tensors and before its config: the
    folder is refused (its config records the old tensors' checksum), not loaded half old,
    half new; the next save removes the killed one's temporaries and loads whole."""
    from pathlib import Path

    model = tiny_models["llama"]
    folder = tmp_path / "f"
    old = tracer.files.InterventionSet([Intervention("add", "resid_post.0", None, None, {"vector": torch.ones(64)})])
    new = tracer.files.InterventionSet([Intervention("add", "resid_post.1", None, None, {"vector": torch.full((64,), 2.0)})])
    old.save(folder)
    real = Path.write_text

    def killed(self, *args, **kwargs):
        if self.name.startswith(".config.json"):
            raise KeyboardInterrupt  # the process dies while the config is written
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Path, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        new.save(folder)
    monkeypatch.undo()
    with pytest.raises(SpecError, match="is not the file config.json was saved with"):
        tracer.files.load(folder, model)
    dead = folder / ".tensors.safetensors.999999999.tmp.safetensors"  # a killed process's
    dead.write_bytes(b"partial")
    new.save(folder)
    assert not dead.exists()
    loaded = tracer.files.load(folder, model)
    assert loaded.interventions[0].site == "resid_post.1"
    assert torch.equal(loaded.interventions[0].params["vector"], torch.full((64,), 2.0))


def test_a_folder_whose_files_link_elsewhere_is_refused(tiny_models, tmp_path):
    outside = tmp_path / "outside"
    tracer.files.InterventionSet([Intervention("zero", "resid_post.0")]).save(outside)
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "config.json").symlink_to(outside / "config.json")
    (folder / "tensors.safetensors").symlink_to(outside / "tensors.safetensors")
    with pytest.raises(SpecError, match="points outside the folder"):
        tracer.files.load(folder, tiny_models["llama"])
