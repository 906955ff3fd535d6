"""pv.CausalModel against pyvene 0.1.8's: the same program gives the same runs, live paths,
and (one seed, Python's random) the same factual and counterfactual data sets, built the
way pyvene's DAS and IIT tutorials build them."""

import random

import pytest
import torch

import tracer as ours

from helpers import peer_pyvene

real = peer_pyvene()



def _sum_program(lib):
    """pyvene's DAS tutorial: y = (a + b) + c over digits 0..3 (its 'hierarchical equality'
    style program, small enough to enumerate)."""
    variables = ["a", "b", "c", "x", "y"]
    digits = list(range(4))
    values = {"a": digits, "b": digits, "c": digits, "x": list(range(7)), "y": list(range(10))}
    parents = {"a": [], "b": [], "c": [], "x": ["a", "b"], "y": ["x", "c"]}
    functions = {"a": lambda: 0, "b": lambda: 0, "c": lambda: 0, "x": lambda a, b: a + b,
                 "y": lambda x, c: x + c}
    return lib.CausalModel(variables, values, parents, functions)


def _peer():
    return _sum_program(real)


def _same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


def test_structure_runs_and_live_paths_equal_pyvene():
    theirs, mine = _peer(), _sum_program(ours)
    assert (mine.variables, mine.inputs, mine.outputs) == (theirs.variables, theirs.inputs, theirs.outputs)
    assert mine.timesteps == theirs.timesteps
    setting = {"a": 1, "b": 2, "c": 3}
    _same(dict(mine.run_forward(setting)), dict(theirs.run_forward(setting)))
    source = {"a": 3, "b": 3, "c": 0}
    _same(dict(mine.run_interchange(setting, {"x": source})), dict(theirs.run_interchange(setting, {"x": source})))
    assert mine.run_interchange(setting, {"x": source})["y"] == 3 + 3 + 3
    _same(mine.find_live_paths(setting), theirs.find_live_paths(setting))


@pytest.mark.parametrize("balanced", [False, True])
def test_factual_data_sets_equal_pyvene_for_one_seed(balanced):
    out = []
    for m in (_peer(), _sum_program(ours)):
        random.seed(7)
        sampler = m.sample_input_tree_balanced if balanced else m.sample_input
        out.append(m.generate_factual_dataset(50, sampler))
    _same(out[1], out[0])
    assert len({tuple(e["input_ids"].tolist()) for e in out[1]}) > 10


def test_counterfactual_data_sets_equal_pyvene_for_one_seed():
    out = []
    for m in (_peer(), _sum_program(ours)):
        random.seed(3)
        out.append(m.generate_counterfactual_dataset(
            40, lambda iv: 0 if "x" in iv else 1, batch_size=8, sampler=m.sample_input_tree_balanced))
    _same(out[1], out[0])
    ex = out[1][0]
    assert ex["source_input_ids"].shape == (1, 3) and ex["intervention_id"].tolist() == [0]


def test_bad_programs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="variable 'y' has no functions"):
        ours.CausalModel(["a", "y"], {"a": [0], "y": [0]}, {"a": [], "y": ["a"]}, {"a": lambda: 0})
    with pytest.raises(ValueError, match="parents \\['z'\\] that are not variables"):
        ours.CausalModel(["a"], {"a": [0]}, {"a": ["z"]}, {"a": lambda z: 0})
    m = _sum_program(ours)
    with pytest.raises(ValueError, match="intervention_id must be a function"):
        m.generate_counterfactual_dataset(4, None, 2)
    picture = m.print_setting(m.run_forward({"a": 1, "b": 2, "c": 3}), path=tmp_path / "dag.png")
    assert picture.stat().st_size > 1000
