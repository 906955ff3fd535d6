"""The seed's causal-abstraction tutorial end to end: DAS finds a + b in a trained MLP."""

import nnsight
import torch

import tracer
from recipes import das


def test_das_finds_a_plus_b_and_controls_fail(tmp_path):
    net, acc = das.train_mlp()
    assert acc == 1.0
    found = das.das(net, layer=0, dim=16, variable="a+b")
    assert found["iia"] >= 0.9
    assert found["log"][-1]["loss"] < found["log"][0]["loss"]
    untrained = das.das(net, layer=0, dim=16, variable="a+b", train=False)
    wrong = das.das(net, layer=0, dim=16, variable="b+c")
    assert untrained["iia"] < 0.3 and wrong["iia"] < 0.3

    # a trained rotation saved and loaded gives identical outputs
    found["model"].save(tmp_path / "rot")
    again = tracer.IntervenableModel.load(tmp_path / "rot", nnsight.NNsight(net))
    batch = das.pairs(64, "a+b", seed=9)
    with torch.no_grad():
        _, a = found["model"](batch["base"], batch["sources"])
        _, b = again(batch["base"], batch["sources"])
    assert torch.equal(a, b)
    assert sorted(p.name for p in (tmp_path / "rot").iterdir()) == ["config.json", "tensors.safetensors"]


def test_pairs_are_the_causal_models_interchanges():
    """The data is pv.CausalModel's: the label is the program run with v from the source,
    and equals the arithmetic (a' + b' + c for a + b; a + b' + c' for the control)."""
    for variable, want in (("a+b", lambda b, s: s[:, 0] + s[:, 1] + b[:, 2]),
                           ("b+c", lambda b, s: b[:, 0] + s[:, 1] + s[:, 2])):
        d = das.pairs(200, variable, seed=4)
        digits = lambda x: x.view(-1, 3, das.DIGITS).argmax(-1)  # noqa: E731
        assert torch.equal(d["labels"], want(digits(d["base"]), digits(d["sources"][0])))
        assert torch.equal(d["labels"], das.pairs(200, variable, seed=4)["labels"])  # seeded
    model = das.program("a+b")
    assert model.inputs == ["a", "b", "c"] and model.outputs == ["y"]
