"""Every recipe returns a Result of the same shape: to_dict() is plain JSON, save(dir) writes
the data and the pictures into a folder (checked writable first), plot(dir) the pictures."""

import json

import numpy as np
import pytest

from recipes import das, interchange, iti, results, steering


def _check(result, tmp_path, data, pictures):
    """to_dict is JSON with the recipe's fields; save and plot write what they say."""
    assert isinstance(result, results.Result)
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
    written = result.save(tmp_path / "saved")
    names = sorted(p.name for p in (tmp_path / "saved").iterdir() if not p.name.startswith("."))
    assert set(data) | set(pictures) <= set(names), names
    assert all(p.exists() for p in written.values())
    json_file = next(p for k, p in written.items() if k == "json")
    assert json.loads(json_file.read_text()) == result.to_dict()
    plotted = result.plot(tmp_path / "pictures")
    assert sorted(p.name for p in plotted.values()) == sorted(pictures)
    assert all(p.stat().st_size > 1000 for p in plotted.values())
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="a_file"):  # refused before anything is written
        result.save(tmp_path / "a_file")


def test_interchange_result(tiny_models, tmp_path):
    res = interchange.interchange(tiny_models["llama"], ["The capital of France is", "The capital of Italy is"],
                                  ["Paris", "Rome"], ["France", "Italy"], ["lay", "val"], heads="each",
                                  together=True, progress=False)
    assert set(res.outputs) == {"lay", "val", "lay+val"} and res.columns["val"] == [0, 1, 2, 3]
    assert res.to_dict()["results"]["val"]["effect"] == res.effects["val"].tolist()
    _check(res, tmp_path, ["results.json", "results.npz"],
           ["heatmap_lay.png", "heatmap_val.png", "heatmap_lay+val.png"])


def test_sweep_result(tiny_models, tmp_path):
    res = interchange.sweep(tiny_models["llama"], "The capital of France is", "The capital of Italy is",
                            ["Paris"], progress=False)
    _check(res, tmp_path, ["sweep.json", "sweep.npz"], ["sweep.png", "sweep_normalized.png"])
    assert np.allclose(np.load(tmp_path / "saved" / "sweep.npz")["values"], res.values)


def test_steering_results(tiny_models, tmp_path):
    model = tiny_models["llama"]
    run = steering.steer(model, "logit", "Paris", 0.5, layer=1, length=3, texts=steering.prompts()[:2])
    assert len(run.outputs) == 2 and {"success", "coherence", "perplexity"} <= set(run.scores)
    _check(run, tmp_path / "run", ["outputs.json"], [])
    table = steering.sweep(model, ["logit"], [0.5], "Paris", layer=1, length=3,
                           texts=steering.prompts()[:2], progress=False)
    assert [r["method"] for r in table.rows] == ["clean", "prompting", "logit"]
    _check(table, tmp_path / "table", ["table.json", "table.csv"], ["success_vs_perplexity.png"])


def test_iti_result(tiny_models, tmp_path):
    res = iti.run(tiny_models["llama"], top_k=2, alpha=3.0, model_name="tiny llama", layers=[1])
    assert all(layer == 1 for layer, _ in res.to_dict()["chosen"])
    _check(res, tmp_path, ["eval.json", "eval.npz", "config.json", "tensors.safetensors"],
           ["probe_accuracy.png"])


def test_das_result(tmp_path):
    res = das.search([0], dim=16, epochs=1)
    assert set(res.iia["layer 0"]) == {"DAS a+b", "untrained rotation a+b", "DAS b+c (wrong variable)"}
    _check(res, tmp_path, ["das.json"], ["das.png"])
