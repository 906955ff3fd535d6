"""pyvene's toy models (``MLPConfig``/``create_mlp_classifier``, ``GRUConfig``/
``create_gru*``) and the ``"t"`` unit, against pyvene 0.1.8 itself and against plain
forward hooks written here.  Float tolerance 1e-6: the models are tiny fp32 and both sides
run the same kernels in the same order.

pyvene 0.1.8 fails on parts of this, asserted below rather than copied: ``create_gru`` and
``create_gru_lm`` import a module ``models.gru`` that does not exist; its ``"t"`` unit fails
on any batch of more than one row, and on one row it writes at every step (zeros where the
step was not asked for), so ``{"base": 3}`` with a ZeroIntervention zeroes every step.  Its
numbers are compared where its rule is right (every step named).
"""

import warnings

import pytest
import torch

import tracer as ours

from helpers import peer_pyvene

real = peer_pyvene()
from pyvene.models.mlp.modelings_mlp import MLPConfig as RealMLPConfig  # noqa: E402  (pyvene keeps it there)

ATOL = 1e-6
H = 6


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _mlp(lib, config_class, **fields):
    torch.manual_seed(0)
    cfg = config_class(h_dim=3, n_layer=1, pdrop=0.0, num_classes=5, include_bias=False,
                       squeeze_output=False, **fields)
    return _quiet(lib.create_mlp_classifier, cfg)[2].eval()


def _gru(lib, n_layer=2):
    torch.manual_seed(0)
    return _quiet(lib.create_gru_classifier, lib.GRUConfig(h_dim=H, n_layer=n_layer, pdrop=0.0))[2].eval()


def test_the_toy_models_build_the_same_weights_and_outputs_as_pyvene():
    """Same seed, same parameters (names, shapes, values) and the same forward, for the MLP
    classifier and the GRU classifier; the GRU LM and base model from pyvene's classes
    (its create_gru / create_gru_lm fail) equal ours with pyvene's weights."""
    x = torch.rand(4, 3, H)
    for make, inputs in ((lambda lib, c: _mlp(lib, c), {"inputs_embeds": torch.rand(4, 1, 3)}),
                         (lambda lib, c: _gru(lib), {"inputs_embeds": x})):
        theirs, mine = make(real, RealMLPConfig), make(ours, ours.MLPConfig)
        a, b = theirs.state_dict(), mine.state_dict()
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
        with torch.no_grad():
            assert torch.allclose(theirs(**inputs)[0], mine(**inputs)[0], atol=ATOL)
    from pyvene.models.gru.modelings_gru import GRULMHeadModel, GRUModel

    for theirs_class, create in ((GRULMHeadModel, ours.create_gru_lm), (GRUModel, ours.create_gru)):
        with pytest.raises(ModuleNotFoundError):  # pyvene 0.1.8's own helper
            getattr(real, create.__name__)(real.GRUConfig(h_dim=H))
        cfg = dict(h_dim=H, n_layer=2, pdrop=0.0, vocab_size=11)
        theirs = theirs_class(real.GRUConfig(**cfg)).eval()
        mine = create(ours.GRUConfig(**cfg))[2].eval()
        mine.load_state_dict(theirs.state_dict())
        with torch.no_grad():
            assert torch.allclose(theirs(inputs_embeds=x)[0], mine(inputs_embeds=x)[0], atol=ATOL)


def _mlp_config(lib, model, link, trainable=False, part=None):
    extra = {"low_rank_dimension": 2} if trainable else {}
    part = part or ([[1, 3], [0, 1]] if link else [[0, 1], [1, 3]])
    reps = [lib.RepresentationConfig(0, "mlp_activation", "pos", 1, subspace_partition=part,
                                     intervention_link_key=0 if link else None, **extra)
            for _ in range(2)]
    kind = lib.LowRankRotatedSpaceIntervention if trainable else lib.VanillaIntervention
    return lib.IntervenableConfig(model_type=type(model), representations=reps, intervention_types=kind)


def _w1_act_run(model, base, act=None):
    """pyvene's test helper, by a forward hook on the activation: the MLP's activation
    (read, or replaced by ``act``) and the logits."""
    box = []

    def hook(module, args, out):
        box.append(out.clone())
        return act if act is not None else out

    handle = model.mlp.h[0].act.register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = model(**base)[0]
    finally:
        handle.remove()
    return box[0], logits


@pytest.mark.parametrize("link", [True, False])
@pytest.mark.parametrize("subspaces", [[0, 0], [0, 1]])
def test_mlp_subspace_interventions_equal_pyvene_and_hooks(link, subspaces):
    """pyvene's InterventionWithMLPTestCase: two Vanilla interventions on mlp_activation with
    subspace partitions, linked (one module) or not, on 10 rows of inputs_embeds."""
    b_s = 10
    torch.manual_seed(1)
    base, s1, s2 = ({"inputs_embeds": torch.rand(b_s, 1, 3)} for _ in range(3))
    outs = []
    for lib, cls in ((real, RealMLPConfig), (ours, ours.MLPConfig)):
        model = _mlp(lib, cls)
        pm = _quiet(lib.IntervenableModel, _mlp_config(lib, model, link), model)
        with torch.no_grad():
            _, out = pm(base, [s1, s2], {"sources->base": ([[[0]] * b_s] * 2, [[[0]] * b_s] * 2)},
                        subspaces=[[[subspaces[0]]] * b_s, [[subspaces[1]]] * b_s])
        outs.append(out[0])
    assert torch.allclose(outs[0], outs[1], atol=ATOL)
    # the hand-written reference: the activation's partitions taken from each source
    model = _mlp(ours, ours.MLPConfig)
    act = _w1_act_run(model, base)[0]
    parts = [[1, 2], [0]] if link else [[0], [1, 2]]
    for src, sub in zip((s1, s2), subspaces):
        act[..., parts[sub]] = _w1_act_run(model, src)[0][..., parts[sub]]
    assert torch.allclose(outs[1], _w1_act_run(model, base, act)[1], atol=ATOL)


def test_mlp_trainable_subspaces_train_as_in_pyvene():
    """pyvene's negative case: two unlinked low-rank rotations on the partitions [0, 1) and
    [1, 2) of the rotated space; the logits equal pyvene's with its weights copied, and the
    gradient reaches both rotations."""
    b_s = 6
    torch.manual_seed(2)
    base, s1, s2 = ({"inputs_embeds": torch.rand(b_s, 1, 3)} for _ in range(3))
    locs = {"sources->base": ([[[0]] * b_s] * 2, [[[0]] * b_s] * 2)}
    models = {}
    for lib, cls in ((real, RealMLPConfig), (ours, ours.MLPConfig)):
        model = _mlp(lib, cls)
        models[lib] = _quiet(lib.IntervenableModel, _mlp_config(lib, model, False, trainable=True,
                                                                part=[[0, 1], [1, 2]]), model)
    theirs, mine = models[real], models[ours]
    for a, b in zip(theirs.interventions.values(), mine.interventions.values()):
        b.load_state_dict({k: v for k, v in a.state_dict().items()
                           if k not in ("embed_dim", "interchange_dim")})  # pyvene's buffers
    outs = []
    for pm in (theirs, mine):
        _, out = pm(base, [s1, s2], locs, subspaces=[[[0]] * b_s, [[1]] * b_s])
        out[0].sum().backward()
        outs.append(out[0])
    assert torch.allclose(outs[0], outs[1], atol=ATOL)
    for iv in mine.interventions.values():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in iv.parameters())


def _hooked_gru(model, x, edit):
    """Logits of a GRU classifier with ``edit(step, layer, output)`` applied to every cell
    call by plain forward hooks (counting each cell's calls)."""
    calls, handles = {}, []
    for layer, cell in enumerate(model.gru.cells):
        def hook(module, args, out, layer=layer):
            step = calls.get(layer, 0)
            calls[layer] = step + 1
            return edit(step, layer, out)
        handles.append(cell.register_forward_hook(hook))
    try:
        with torch.no_grad():
            return model(inputs_embeds=x)[0]
    finally:
        for h in handles:
            h.remove()


def _cache(model, x):
    seen = {}

    def keep(step, layer, out):
        seen[(step, layer)] = out.clone()
        return out
    _hooked_gru(model, x, keep)
    return seen


def test_t_unit_zero_at_one_step_equals_hooks_where_pyvene_zeroes_every_step():
    """pyvene's recurrent tutorial (a ZeroIntervention on cell_output at step 3): here step 3
    alone, as hooks; pyvene 0.1.8 zeroes every step (shown), and fails on two rows."""
    x = torch.rand(3, 5, H)
    model = _gru(ours)
    pm = ours.IntervenableModel({"component": "cell_output", "unit": "t",
                                 "intervention_type": ours.ZeroIntervention}, model=model)
    with torch.no_grad():
        got = pm(base={"inputs_embeds": x}, unit_locations={"base": 3})[1][0]
    zero_at = lambda steps: lambda t, l, out: torch.zeros_like(out) if (l == 0 and t in steps) else out  # noqa: E731
    assert torch.allclose(got, _hooked_gru(model, x, zero_at({3})), atol=ATOL)
    assert (got - _hooked_gru(model, x, lambda t, l, o: o)).abs().max() > 1e-3

    theirs = _gru(real)
    pv_model = _quiet(real.IntervenableModel, {"component": "cell_output", "unit": "t",
                                               "intervention_type": real.ZeroIntervention}, model=theirs)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        pv_model(base={"inputs_embeds": x}, unit_locations={"base": 3})
    with torch.no_grad():
        one = pv_model(base={"inputs_embeds": x[:1]}, unit_locations={"base": 3})[1][0]
    assert torch.allclose(one, _hooked_gru(model, x[:1], zero_at(set(range(5)))), atol=ATOL)
    # where pyvene's rule is right (every step named) the two agree
    with torch.no_grad():
        mine = pm(base={"inputs_embeds": x[:1]}, unit_locations={"base": [[0, 1, 2, 3, 4]]})[1][0]
    assert torch.allclose(mine, one, atol=ATOL)


def test_t_unit_interchange_across_steps_equals_hooks_and_pyvene_on_every_step():
    """A source step into another base step (6 -> 3 in pyvene's tutorial), per-row steps
    and several steps per row (a row's k-th base step takes its k-th source step), at the
    second layer's cell; pyvene agrees when every step is swapped in order."""
    x, s = torch.rand(3, 5, H), torch.rand(3, 5, H)
    model = _gru(ours)
    src = _cache(model, s)
    pm = ours.IntervenableModel({"layer": 1, "component": "cell_output", "unit": "t",
                                 "intervention_type": ours.VanillaIntervention}, model=model)
    run = lambda loc: pm(base={"inputs_embeds": x}, sources=[{"inputs_embeds": s}], unit_locations={"sources->base": loc})[1][0]  # noqa: E731
    with torch.no_grad():
        got = run((4, 2))
        rows = run(([[0, 3], [1, 2], [4, 4]], [[1, 2], [2, 0], [3, 1]]))

    def swap(pairs):
        def edit(t, layer, out):
            if layer != 1:
                return out
            out = out.clone()
            for r, row in enumerate(pairs):
                for a, b in row:
                    if b == t:
                        out[r] = src[(a, 1)][r]
            return out
        return edit
    assert torch.allclose(got, _hooked_gru(model, x, swap([[(4, 2)]] * 3)), atol=ATOL)
    want = _hooked_gru(model, x, swap([[(0, 1), (3, 2)], [(1, 2), (2, 0)], [(4, 3), (4, 1)]]))
    assert torch.allclose(rows, want, atol=ATOL)
    assert (got - rows).abs().max() > 1e-4

    theirs = _gru(real)
    pv_model = _quiet(real.IntervenableModel, {"layer": 1, "component": "cell_output", "unit": "t",
                                               "intervention_type": real.VanillaIntervention}, model=theirs)
    every = [[list(range(5))]]  # pyvene's form: [intervention][row][steps]
    with torch.no_grad():
        one = pv_model(base={"inputs_embeds": x[:1]}, sources=[{"inputs_embeds": s[:1]}],
                       unit_locations={"sources->base": (every, every)})[1][0]
        mine = pm(base={"inputs_embeds": x[:1]}, sources=[{"inputs_embeds": s[:1]}],
                  unit_locations={"sources->base": (every, every)})[1][0]
    assert torch.allclose(mine, one, atol=ATOL)


@pytest.mark.parametrize("component,module,port", [("reset_gate_output", "reset_act", "output"),
                                                   ("new_gate_input", "new_act", "input"),
                                                   ("x2h_output", "x2h", "output")])
def test_gru_gate_components_at_a_step_equal_hooks(component, module, port):
    """The cell's gates (pyvene's component names) at step 2 of layer 0, scaled by an
    additive constant source, against a hook on the gate module's third call."""
    x = torch.rand(2, 4, H)
    model = _gru(ours)
    width = 3 * H if component == "x2h_output" else H
    shift = torch.linspace(-1, 1, width)
    pm = ours.IntervenableModel({"layer": 0, "component": component, "unit": "t",
                                 "intervention_type": ours.AdditionIntervention}, model=model)
    with torch.no_grad():
        got = pm(base={"inputs_embeds": x}, unit_locations={"base": 2}, source_representations=shift)[1][0]
    target = getattr(model.gru.cells[0], module)
    calls = []

    def hook(mod, args, out=None):
        calls.append(1)
        if len(calls) != 3:
            return None
        return (args[0] + shift,) if port == "input" else out + shift
    handle = (target.register_forward_pre_hook(hook) if port == "input"
              else target.register_forward_hook(hook))
    try:
        with torch.no_grad():
            want = model(inputs_embeds=x)[0]
    finally:
        handle.remove()
    assert torch.allclose(got, want, atol=ATOL)
    assert (got - model(inputs_embeds=x)[0]).abs().max() > 1e-4


def test_toy_model_errors_are_one_clear_line():
    model = _gru(ours)
    with pytest.raises(ValueError, match="split of a module's output"):
        ours.IntervenableModel({"component": "reset_x2h_output", "unit": "t"}, model=model)
    with pytest.raises(ValueError, match="its components are"):
        ours.IntervenableModel({"component": "block_output", "unit": "t"}, model=model)
    pm = ours.IntervenableModel({"component": "cell_output", "unit": "t",
                                 "intervention_type": ours.ZeroIntervention}, model=model)
    with pytest.raises(ValueError, match="count from 0"):
        pm(base={"inputs_embeds": torch.rand(1, 3, H)}, unit_locations={"base": -1})
