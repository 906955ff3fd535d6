"""Every recipe's pictures carry the labels of what was run: the layers, heads, positions or
roles asked for (subsets included, over data sets too), checked on the figure as written,
and each figure passes tests/picture_probe.py's readability checks (nothing cut, labels
present, colours that vary with the values).  The examples test does the same on the
embedded model; tests/test_remote.py checks a remote sweep's labels."""

import numpy as np
import pytest

from picture_probe import recording
from recipes import attribution, circuits, das, dataset, interchange, iti, plotting
from recipes.paths import path_patch


@pytest.fixture
def drawn(monkeypatch):
    """The readability report of every figure written while the test runs."""
    seen = []
    monkeypatch.setattr(plotting, "_write", recording(seen, plotting._write))
    return seen


def _readable(reports):
    assert reports
    for r in reports:
        assert not r["problems"], r


def _positions(model, text):
    """Position labels as the pictures write them: index and token."""
    return [f"{i}:{model.tokenizer.decode([t])}" for i, t in enumerate(model.tokenizer(text)["input_ids"])]


def test_interchange_layer_and_head_subsets(tiny_models, drawn, tmp_path):
    model = tiny_models["llama"]
    res = interchange.interchange(model, ["The cat sat on the mat", "The dog sat on the mat"], ["mat", "rug"],
                                  ["cat", "dog"], ["qry", "lay"], heads=[0, 2], layers=[1], progress=False)
    res.save(tmp_path)
    _readable(drawn)
    qry, lay = drawn  # rep types in order
    assert qry["rows"] == ["1"] and qry["cols"] == ["0", "2"]
    assert lay["rows"] == ["1"] and lay["cols"] == ["all"]


def test_sweep_positions_and_layers_over_a_data_set(tiny_models, drawn, tmp_path):
    model = tiny_models["llama"]
    base, source = "The capital of Spain is", "The capital of Italy is"
    res = interchange.sweep(model, base, source, [" Rome", " Madrid"], site="resid_pre", layers=[1],
                            metric="logit_diff", progress=False)
    res.plot(tmp_path / "one.png")
    assert drawn[-1]["rows"] == ["1"] and drawn[-1]["cols"] == _positions(model, base)
    items = dataset.ioi(limit=2)
    res = interchange.sweep(model, data=items, site="resid_pre", layers=[0], metric="logit_diff",
                            progress=False)
    res.plot(tmp_path / "roles.png")
    assert drawn[-1]["rows"] == ["0"] and drawn[-1]["cols"] == ["IO", "S1", "S2", "END"]
    heads = interchange.sweep(model, base, source, [" Rome"], site="head_out", heads=[1, 3], layers=[0, 1],
                              progress=False)
    heads.plot(tmp_path / "heads.png")
    assert drawn[-1]["rows"] == ["0", "1"] and drawn[-1]["cols"] == ["1", "3"]
    _readable(drawn)


def test_causal_trace_and_attribution_layers(tiny_models, drawn, tmp_path):
    model = tiny_models["gpt2"]
    prompt = "The Eiffel Tower is in the city of"
    res = interchange.causal_trace(model, prompt, "Eiffel Tower", " Paris", layers=[1], samples=2,
                                   noise=0.5, progress=False)
    res.plot(tmp_path / "trace.png")
    assert drawn[-1]["rows"] == ["1"] and drawn[-1]["cols"] == list(res.labels["position"])
    est = attribution.attribute(model, "The capital of Spain is", "The capital of Italy is", [" Rome"],
                                layers=[0], progress=False)
    est.plot(tmp_path / "atp.png")
    assert drawn[-1]["rows"] == ["0"] and drawn[-1]["cols"] == _positions(model, "The capital of Spain is")
    _readable(drawn)


def test_path_patching_layers(tiny_models, drawn, tmp_path):
    model = tiny_models["llama"]
    res = path_patch(model, ["When Mary and John went, John gave it to"], ["When Mary and John went, Anna gave it to"],
                     [[" Mary", " John"]], receivers=["final"], layers=[1], progress=False)
    res.plot(tmp_path / "paths.png")
    _readable(drawn)
    assert drawn[-1]["rows"] == ["1"] and drawn[-1]["cols"] == [str(h) for h in range(4)]


def test_circuit_graph_and_faithfulness_curve(tiny_models, drawn, tmp_path):
    model = tiny_models["llama"]
    items = [{"base": "The capital of France is", "source": "The capital of Italy is", "answers": [" Paris", " Rome"]},
             {"base": "The cat sat on the mat and", "source": "The dog sat on the mat and", "answers": [" the", " a"]}]
    scores = circuits.discover(model, items, progress=False)
    scores.top(10).plot(tmp_path / "circuit.png")
    assert drawn[-1]["rows"] == ["input", "layer 0", "layer 1", "logits"]
    assert drawn[-1]["cols"] == ["h0", "h1", "h2", "h3", "MLP"]
    curve = circuits.faithfulness_curve(model, scores, items, sizes=[0, 10, 50], progress=False)
    curve.save(tmp_path)
    _readable(drawn)


def test_iti_probe_picture_marks_the_steered_heads(tiny_models, drawn, tmp_path):
    model = tiny_models["llama"]
    data = iti.load_statements()
    small = iti.Statements(data.text[:80], data.label[:80], data.pair[:80])
    res = iti.run(model, small, top_k=3, alpha=2.0, layers=[1])
    res.save(tmp_path)
    _readable(drawn)
    picture = drawn[-1]
    assert picture["rows"] == ["0", "1"] and picture["cols"] == ["0", "1", "2", "3"]
    assert picture["marks"] == 3 and "balanced accuracy" in picture["colorbar"]


def test_das_rows_are_the_layers_run(drawn, tmp_path):
    res = das.search(layers=[1], dim=4, epochs=1)
    res.plot(tmp_path)
    _readable(drawn)
    assert drawn[-1]["rows"] == ["layer 1"]
    assert drawn[-1]["cols"] == ["DAS a+b", "untrained rotation a+b", "DAS b+c (wrong variable)"]


def test_a_constant_picture_is_flagged_and_a_varying_one_is_not(drawn, tmp_path):
    """The probe can fail: one value everywhere draws one colour, which it accepts, and a
    varying grid forced to one colour is flagged."""
    plotting.heatmap(np.full((3, 3), 0.2), range(3), range(3), tmp_path / "flat.png", title="flat", cbar="x")
    assert not drawn[-1]["problems"]
    plotting.heatmap(np.arange(9.0).reshape(3, 3), range(3), range(3), tmp_path / "v.png", title="v", cbar="x",
                     scale="unit")  # 0..8 on a 0..1 scale: nearly all one colour
    assert any("colours" in p or "colour" in p for p in drawn[-1]["problems"]), drawn[-1]
