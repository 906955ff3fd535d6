"""pyvene's configuration surface against pyvene 0.1.8 itself (beside tests/test_pyvene_parity.py):
IntervenableConfig in pyvene's positional and keyword forms, its VanillaIntervention default,
add_intervention, model_type, group_key (sources per group), intervention_link_key (one module
shared) and serial mode (source_0 -> source_1 -> base); logits equal to 1e-5 in fp32."""

import warnings

import pytest
import torch

import tracer as ours
from tracer import testing

from helpers import peer_pyvene

real = peer_pyvene()

ATOL = 1e-5


@pytest.fixture(scope="module")
def prompts():
    tok = testing.tokenizer()
    enc = lambda texts: tok(texts, return_tensors="pt", padding=True)  # noqa: E731
    return (enc(["The capital of Spain is", "The capital of Italy is"]),
            enc(["The capital of France is", "The capital of Rome is"]),
            enc(["The capital of Paris is", "The capital of Madrid is"]))


@pytest.fixture(scope="module")
def model():
    return testing.tiny("gpt2")


def _both(model, make_config, call):
    """``call(lib, intervenable)`` on pyvene and on ours, each with ``make_config(lib)``."""
    out = []
    for lib, m in ((real, ours.sites.module(model)), (ours, model)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm = lib.IntervenableModel(make_config(lib), model=m)
            with torch.no_grad():
                out.append(call(lib, pm))
    return out


def _close(got, want):
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=ATOL)


@pytest.mark.parametrize("form", ["positional", "keyword", "list", "dict", "namedtuple-like"])
def test_config_forms_and_the_vanilla_default_equal_pyvene(model, prompts, form):
    base, source, _ = prompts

    def config(lib):
        reps = {"positional": lambda: [lib.RepresentationConfig(1, "block_output", "pos", 1)],
                "keyword": lambda: [lib.RepresentationConfig(layer=1, component="block_output")],
                "list": lambda: [[1, "block_output", "pos", 1]],
                "dict": lambda: [{"layer": 1, "component": "block_output"}],
                "namedtuple-like": lambda: lib.RepresentationConfig(1, "mlp_output")}[form]()
        if form == "positional":
            return lib.IntervenableConfig(reps, lib.VanillaIntervention, "parallel")
        return lib.IntervenableConfig(representations=reps)  # no type: VanillaIntervention

    want, got = _both(model, config, lambda lib, pm: pm(base, [source], {"sources->base": 3})[1].logits)
    _close(got, want)
    assert (got - ours.sites.module(model)(**base).logits).abs().max() > 1e-4  # the patch did something


def test_representation_config_fields_are_pyvenes_in_order():
    fields = list(ours.RepresentationConfig.__dataclass_fields__)
    assert fields[:len(real.RepresentationConfig._fields)] == list(real.RepresentationConfig._fields)
    rep = ours.RepresentationConfig(*real.RepresentationConfig(2, "mlp_output", "pos", 3, 8, None, None,
                                                               [[0, 4]], 1, "k"))
    assert (rep.layer, rep.max_number_of_units, rep.low_rank_dimension, rep.subspace_partition,
            rep.group_key, rep.intervention_link_key) == (2, 3, 8, [[0, 4]], 1, "k")
    assert rep._asdict()["component"] == "mlp_output"


def test_add_intervention_equals_pyvene(model, prompts):
    base, source, other = prompts

    def config(lib):
        cfg = lib.IntervenableConfig([{"layer": 0, "component": "block_output",
                                       "intervention_type": lib.VanillaIntervention}])
        cfg.add_intervention({"layer": 1, "component": "mlp_output",
                              "intervention_type": lib.AdditionIntervention})
        return cfg

    want, got = _both(model, config, lambda lib, pm: pm(base, [source, other],
                                                        {"sources->base": 2})[1].logits)
    _close(got, want)
    with pytest.raises(ValueError, match="needs an intervention_type"):
        ours.IntervenableConfig([{"layer": 0}]).add_intervention({"layer": 1})


def test_model_type_is_accepted_and_checked(model, prompts):
    module = ours.sites.module(model)
    base, source, _ = prompts
    for model_type in (type(module), "gpt2"):
        pm = ours.IntervenableModel(ours.IntervenableConfig([{"layer": 0}], model_type=model_type), model)
        assert pm(base, [source], {"sources->base": 1})[1].logits.shape[0] == 2
    llama = type(ours.sites.module(testing.tiny("llama")))
    with pytest.raises(ValueError, match="model_type is LlamaForCausalLM but the model is GPT2LMHeadModel"):
        ours.IntervenableModel(ours.IntervenableConfig([{"layer": 0}], model_type=llama), model)
    with pytest.raises(ValueError, match="model_type is 'llama' but the model is 'gpt2'"):
        ours.IntervenableModel(ours.IntervenableConfig([{"layer": 0}], model_type="llama"), model)
    with pytest.raises(ValueError, match="mode must be 'parallel' or 'serial'"):
        ours.IntervenableConfig([{"layer": 0}], mode="chained")


def test_group_keys_share_a_source_as_pyvene(model, prompts):
    """pyvene's path-patching tutorial: the interventions of one group read one source."""
    base, source, other = prompts

    def config(lib):
        return lib.IntervenableConfig([
            {"layer": 0, "component": "block_output", "group_key": 0},
            {"layer": 1, "component": "attention_output", "group_key": 0},
            {"layer": 1, "component": "mlp_output", "group_key": 1}], lib.VanillaIntervention)

    want, got = _both(model, config, lambda lib, pm: pm(base, [source, other],
                                                        {"sources->base": 4})[1].logits)
    _close(got, want)
    # a None source skips its group (pyvene's rule): equal to a config without that group
    want, got = _both(model, config, lambda lib, pm: pm(base, [None, other], {"sources->base": 4})[1].logits)
    _close(got, want)
    with pytest.raises(ValueError, match="3 sources for 2 intervention groups"):
        ours.IntervenableModel(config(ours), model)(base, [source, other, other], {"sources->base": 4})
    bad = ours.IntervenableConfig([{"layer": 0, "group_key": 1}, {"layer": 1, "group_key": 0}])
    with pytest.raises(ValueError, match="group keys must ascend"):
        ours.IntervenableModel(bad, model)


def test_linked_interventions_share_one_module_as_pyvene(model, prompts):
    """Two representations with one intervention_link_key: one module, one set of weights
    (pyvene counts its parameters once), each reading its own source at one site.  pyvene
    also hands a linked unit the previous linked unit's output as its base ("hot
    activations"); at one site and position that is the edited value we read too, so the
    numbers agree; across different sites pyvene's base would be another layer's value,
    which we do not copy: each unit reads its own site."""
    base, source, other = prompts

    def config(lib):
        return lib.IntervenableConfig([
            {"layer": 1, "component": "block_output", "intervention_link_key": "rot",
             "low_rank_dimension": 4},
            {"layer": 1, "component": "block_output", "intervention_link_key": "rot",
             "low_rank_dimension": 4}], lib.LowRankRotatedSpaceIntervention)

    peer = real.IntervenableModel(config(real), model=ours.sites.module(model))
    pm = ours.IntervenableModel(config(ours), model)
    theirs, mine = (list(m.interventions.values()) for m in (peer, pm))
    assert theirs[0] is theirs[1] and mine[0] is mine[1]
    mine[0].load_state_dict({k: v for k, v in theirs[0].state_dict().items()
                             if k not in ("embed_dim", "interchange_dim")})
    trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    assert trainable == peer.count_parameters() == 64 * 4  # one 64 x 4 rotation, not two
    with torch.no_grad():
        want = peer(base, [source, other], {"sources->base": 3})[1].logits
        got = pm(base, [source, other], {"sources->base": 3})[1].logits
    _close(got, want)
    assert (got - ours.sites.module(model)(**base).logits).abs().max() > 1e-4


@pytest.mark.parametrize("layers", [(0, 1), (1, 0), (1, 1)])
def test_serial_sources_chain_as_pyvene(model, prompts, layers):
    """mode='serial': source_0's value goes into source_1's run, whose (changed) value goes
    into the base; layers in either order and at one site."""
    base, source, other = prompts

    def config(lib):
        return lib.IntervenableConfig([{"layer": layers[0], "component": "block_output"},
                                       {"layer": layers[1], "component": "block_output"}],
                                      lib.VanillaIntervention, mode="serial")

    locs = {"source_0->source_1": 2, "source_1->base": 3}
    want, got = _both(model, config, lambda lib, pm: pm(base, [source, other], locs)[1].logits)
    _close(got, want)
    locs = {"source_0->source_1": (1, 2), "source_1->base": ([[[2], [2]]], [[[4], [4]]])}
    want, got = _both(model, config, lambda lib, pm: pm(base, [source, other], locs)[1].logits)
    _close(got, want)
    pm = ours.IntervenableModel(config(ours), model)
    with pytest.raises(ValueError, match="serial mode's unit_locations are a dict with the keys "
                                         "source_0->source_1, source_1->base"):
        pm(base, [source, other], {"sources->base": 3})
    with pytest.raises(ValueError, match="serial mode needs one source per intervention group"):
        pm(base, [source], locs)


@pytest.mark.parametrize("locs", [[2, 4], (1, 4), [1, 2, 3]])
def test_a_two_int_list_is_source_then_base_as_pyvene(model, prompts, locs):
    base, source, _ = prompts

    def config(lib):
        return lib.IntervenableConfig([{"layer": 0, "component": "block_output"}])

    want, got = _both(model, config, lambda lib, pm: pm(base, [source], {"sources->base": locs})[1].logits)
    _close(got, want)


def _subspace_config(lib):
    return lib.IntervenableConfig([{"layer": 1, "component": "block_output"}], lib.VanillaIntervention)


@pytest.mark.parametrize("subspaces", [2, [1, 3], [[[0, 2], [0, 2]]]])
def test_subspaces_as_an_int_a_list_or_per_row_equal_pyvene(model, prompts, subspaces):
    """pyvene broadcasts an int or a list of dims to every row and intervention."""
    base, source, _ = prompts
    want, got = _both(model, _subspace_config, lambda lib, pm: pm(base, [source], {"sources->base": 3},
                                                                  subspaces=subspaces)[1].logits)
    _close(got, want)


def test_subspaces_that_differ_between_rows(model, prompts):
    """One list of dims per row, different rows different dims: each row here equals pyvene
    run with that row's dims for every row.  pyvene 0.1.8 itself gets this case wrong in a
    model's forward: its fancy indexing over (rows, units, dims) applies the union of the
    rows' dims ([0, 1, 5, 7]) to every row (called directly on a 2-d tensor it is right;
    test_intervention_objects_called_as_pyvene checks that)."""
    base, source, _ = prompts
    got = _both(model, _subspace_config, lambda lib, pm: pm(base, [source], {"sources->base": 3},
                                                            subspaces=[[[0, 1], [5, 7]]])[1].logits)[1]
    for row, dims in enumerate(([0, 1], [5, 7])):
        want = _both(model, _subspace_config, lambda lib, pm: pm(base, [source], {"sources->base": 3},
                                                                 subspaces=[[dims, dims]])[1].logits)[0]
        _close(got[row], want[row])
    union = _both(model, _subspace_config, lambda lib, pm: pm(base, [source], {"sources->base": 3},
                                                              subspaces=[[[0, 1], [5, 7]]])[1].logits)[0]
    assert (union[0] - got[0]).abs().max() > 1e-4  # pyvene's union differs from row 0's own dims


def _calls(lib):
    b = torch.arange(12.).reshape(2, 6)
    s = -torch.arange(12.).reshape(2, 6) - 1
    return [
        (lambda: lib.VanillaIntervention(embed_dim=2), dict(base=b, source=s)),
        (lambda: lib.VanillaIntervention(embed_dim=6), dict(base=b, source=s, subspaces=[[1, 3]] * 2)),
        (lambda: lib.VanillaIntervention(embed_dim=6), dict(base=b, source=s, subspaces=[[1, 3], [0, 5]])),
        (lambda: lib.AdditionIntervention(embed_dim=2), dict(base=b, source=s)),
        (lambda: lib.SubtractionIntervention(embed_dim=6), dict(base=b, source=s)),
        (lambda: lib.ZeroIntervention(embed_dim=6), dict(base=b)),
        (lambda: lib.VanillaIntervention(embed_dim=6), dict(base=b, source=s[0])),  # broadcast source
    ]


@pytest.mark.parametrize("case", range(7))
def test_intervention_objects_called_as_pyvene(case):
    """An intervention called directly, with keywords: embed_dim limits the edit to the first
    embed_dim dims, subspaces per example, a source broadcast over rows."""
    outs = []
    for lib in (real, ours):
        make, kw = _calls(lib)[case]
        outs.append(make()(**{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}))
    _close(outs[1], outs[0])


@pytest.mark.parametrize("kind", ["RotatedSpaceIntervention", "BoundlessRotatedSpaceIntervention",
                                  "LowRankRotatedSpaceIntervention"])
def test_rotations_promote_integer_rows_as_pyvene(kind):
    base, source = torch.arange(12).reshape(2, 6), -torch.arange(12).reshape(2, 6)
    extra = {"low_rank_dimension": 2} if kind.startswith("LowRank") else {}
    torch.manual_seed(0)
    theirs = getattr(real, kind)(embed_dim=6, **extra)
    mine = getattr(ours, kind)(embed_dim=6, **extra)
    mine.load_state_dict({k: v for k, v in theirs.state_dict().items()
                          if k not in ("embed_dim", "interchange_dim")}, strict=False)
    want, got = theirs(base.clone(), source.clone()), mine(base.clone(), source.clone())
    assert got.dtype == want.dtype == torch.int64
    assert torch.equal(got, want) and got.abs().sum() > 0


def test_location_helpers_equal_pyvenes():
    assert ours.GET_LOC((3, 4), batch_size=2) == real.GET_LOC((3, 4), batch_size=2)
    assert ours.get_list_depth([[[1]], 2]) == real.get_list_depth([[[1]], 2]) == 3
    enc = testing.tokenizer()(["a b", "c d"], return_tensors="pt")
    assert ours.get_batch_size(enc) == real.get_batch_size(enc) == 2
    x = torch.linspace(-2, 12, 29)
    _close(ours.sigmoid_boundary(x, 1.0, 9.0, 0.5), real.sigmoid_boundary(x, 1.0, 9.0, 0.5))
    _close(ours.harmonic_sigmoid_boundary(x, 1.0, 9.0, 0.5), real.harmonic_sigmoid_boundary(x, 1.0, 9.0, 0.5))
    m = torch.rand(5, 5)
    _close(ours.closeness_to_permutation_loss(m), real.closeness_to_permutation_loss(m))
    gpt2 = ours.sites.module(testing.tiny("gpt2"))
    gpt2.config.architectures = ["GPT2LMHeadModel"]  # pyvene dispatches on it
    h = torch.randn(1, 2, gpt2.config.n_embd)
    _close(ours.embed_to_distrib(gpt2, h, log=True), real.embed_to_distrib(gpt2.transformer, h, log=True))
    with pytest.raises(ValueError, match="'h.pos' unit locations only"):
        ours.GET_LOC((1, 2), unit="pos")


def _scaled_class(lib):
    class Scaled(lib.SourcelessIntervention):
        """base * factor, the factor given per call (intervention_additional_kwargs)."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)

        def forward(self, base, source=None, subspaces=None, factor=1.0, **kwargs):
            return base * factor
    return Scaled


def test_intervention_additional_kwargs_reach_the_intervention_as_pyvene(model, prompts):
    base, _, _ = prompts
    want, got = _both(model, lambda lib: lib.IntervenableConfig(
        [{"layer": 1, "component": "mlp_output", "intervention": _scaled_class(lib)(embed_dim=64)}]),
        lambda lib, pm: pm(base, unit_locations={"base": 2},
                           intervention_additional_kwargs={"factor": 3.0})[1].logits)
    _close(got, want)
    plain = ours.IntervenableModel([{"layer": 1, "component": "mlp_output",
                                     "intervention": _scaled_class(ours)(embed_dim=64)}], model)
    assert (plain(base, unit_locations={"base": 2})[1].logits - got).abs().max() > 1e-4


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generate_on_the_prompt_without_unit_locations_as_pyvene(arch):
    """intervene_on_prompt=True and no unit locations: pyvene edits every prompt position and
    then every new token."""
    tiny = testing.tiny(arch)
    base = tiny.tokenizer("The capital of Spain is", return_tensors="pt")
    vec = torch.randn(tiny.config.hidden_size, generator=torch.Generator().manual_seed(0)) * 5
    outs = []
    for lib, m in ((real, ours.sites.module(tiny)), (ours, tiny)):
        pm = lib.IntervenableModel({"layer": 0, "component": "block_output",
                                    "intervention_type": lib.AdditionIntervention}, model=m)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, steered = pm.generate(base, source_representations=vec, intervene_on_prompt=True, max_length=14)
        outs.append(getattr(steered, "sequences", steered)[0].tolist()[:14])
    assert outs[1] == outs[0]


def test_create_helpers_take_a_config_as_pyvenes(tmp_path):
    """create_llama(config=...) and create_gpt2_lm(config=...) build the model from the
    config with random weights; the tokenizer still comes from name (a local folder here)."""
    testing.tokenizer().save_pretrained(tmp_path)
    for create, arch, cls in ((ours.create_llama, "llama", "LlamaForCausalLM"),
                              (ours.create_gpt2_lm, "gpt2", "GPT2LMHeadModel")):
        cfg = testing.tiny_config(arch)
        config, tok, made = create(name=str(tmp_path), config=cfg)
        assert type(made).__name__ == cls and config is cfg and tok("a b")["input_ids"]
        assert sum(p.numel() for p in made.parameters()) == \
            sum(p.numel() for p in ours.sites.module(testing.tiny(arch)).parameters())
    with pytest.raises(ours.pyvene.CreateError, match="could not load the tokenizer"):
        ours.create_llama(name=str(tmp_path / "missing"), config=testing.tiny_config("llama"),
                          local_files_only=True)
    # pyvene's create_olmo(config=...) calls AutoModelForCausalLM(config), which fails; here
    # it builds the model, as the other helpers given a config do
    import transformers as T

    olmo = T.OlmoConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, vocab_size=512)
    with pytest.raises(Exception):
        real.create_olmo(name=str(tmp_path), config=olmo)
    assert type(ours.create_olmo(name=str(tmp_path), config=olmo)[2]).__name__ == "OlmoForCausalLM"
    assert type(ours.create_gemma(name=str(tmp_path), config=T.GemmaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, vocab_size=512))[2]).__name__ == "GemmaForCausalLM"


HEAD_COMPONENTS = {"head_query_output": "head_q", "head_key_output": "head_k",
                   "head_value_output": "head_v", "head_attention_value_output": "head_out"}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("component", list(HEAD_COMPONENTS))
def test_collected_heads_in_pyvenes_axis_order(arch, component, prompts):
    """CollectIntervention on an h.pos unit returns (batch, heads, positions, head_dim), as
    pyvene does: equal to pyvene for one head, and to a plain hook's values for two.  With
    two heads pyvene 0.1.8 itself returns (batch, 2, 2, head_dim / 2): it regroups the
    gathered heads by the number of heads instead of by the head width."""
    from hooks import capture

    tiny = testing.tiny(arch)
    base = prompts[0]
    one = [[[[1]] * 2, [[0, 2, 4]] * 2]]
    two = [[[[0, 1]] * 2, [[1, 3]] * 2]]
    got = {}
    for name, locs in (("one", one), ("two", two)):
        out = []
        for lib, m in ((real, ours.sites.module(tiny)), (ours, tiny)):
            pm = lib.IntervenableModel({"layer": 1, "component": component, "unit": "h.pos",
                                        "intervention_type": lib.CollectIntervention}, model=m)
            with torch.no_grad():
                (_, collected), _ = pm(base, unit_locations={"base": locs})
            out.append(collected[0])
        got[name] = out
    _close(got["one"][1], got["one"][0])
    assert got["one"][1].shape == (2, 1, 3, 16)
    assert got["two"][0].shape == (2, 2, 2, 8)  # pyvene's own regrouping (see above)
    values = capture(ours.sites.module(tiny), arch, HEAD_COMPONENTS[component], 1, dict(base))
    want = values[:, [1, 3]][:, :, [0, 1]].transpose(1, 2)  # (batch, heads, positions, dim)
    _close(got["two"][1], want)


def _gpt_neo():
    import transformers as T
    from nnsight.modeling.transformers import TransformersModel

    cfg = T.GPTNeoConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                         attention_types=[[["global", "local"], 1]], window_size=4,
                         max_position_embeddings=256, vocab_size=512, bos_token_id=0, eos_token_id=0,
                         pad_token_id=0)
    torch.manual_seed(0)
    hf = T.GPTNeoForCausalLM(cfg).eval()
    return hf, TransformersModel(hf, tokenizer=testing.tokenizer())


def _neo_table():
    """GPT-Neo's components as pyvene's new-model tutorial writes them.  (pyvene 0.1.8's own
    GPT-Neo table names h[%s].attn.q_proj, which transformers 5 keeps at
    h[%s].attn.attention.q_proj: with it pyvene itself fails on GPT-Neo.)"""
    from pyvene.models.constants import CONST_INPUT_HOOK as IN, CONST_OUTPUT_HOOK as OUT

    h, a = "transformer.h[%s]", "transformer.h[%s].attn.attention"
    return {"block_input": (h, IN), "block_output": (h, OUT), "mlp_activation": (f"{h}.mlp.act", OUT),
            "mlp_output": (f"{h}.mlp", OUT), "mlp_input": (f"{h}.mlp", IN),
            "attention_value_output": (f"{a}.out_proj", IN), "attention_output": (f"{h}.attn", OUT),
            "attention_input": (f"{h}.attn", IN), "query_output": (f"{a}.q_proj", OUT),
            "key_output": (f"{a}.k_proj", OUT), "value_output": (f"{a}.v_proj", OUT)}


@pytest.fixture
def neo_tables(monkeypatch):
    import transformers as T

    from tracer.families import FAMILIES

    table = _neo_table()
    # GPT-Neo has a built-in row: without it here, the tutorial's tables make one, and the
    # built-in row comes back after the test
    monkeypatch.delitem(FAMILIES, "gpt_neo")
    monkeypatch.setitem(ours.type_to_module_mapping, T.GPTNeoForCausalLM, table)
    monkeypatch.setitem(real.type_to_module_mapping, T.GPTNeoForCausalLM, table)
    yield


def _neo_equals_pyvene(prompts, component):
    """GPT-Neo's ``component`` at layer 1 patched from the source: ours equals pyvene (which
    has the tutorial's tables) and changes the logits."""
    hf, model = _gpt_neo()
    base, source, _ = prompts
    outs = []
    for lib, m in ((real, hf), (ours, model)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm = lib.IntervenableModel({"layer": 1, "component": component}, model=m)
            with torch.no_grad():
                outs.append(pm(base, [source], {"sources->base": 3})[1].logits)
    _close(outs[1], outs[0])
    assert (outs[1] - hf(**base).logits).abs().max() > 1e-4


@pytest.mark.parametrize("component", ["block_input", "block_output", "mlp_input", "mlp_activation",
                                       "mlp_output", "attention_input", "attention_output",
                                       "attention_value_output", "query_output", "value_output"])
def test_a_new_model_type_from_pyvenes_tables_equals_pyvene(neo_tables, prompts, component):
    """pyvene's 'add a new model type' tutorial: tables for a class Interlace has no row for
    (GPT-Neo) become a site-table row, checked by tracer.check_model's checks, and every
    component then equals pyvene with the same tables."""
    _neo_equals_pyvene(prompts, component)


@pytest.mark.parametrize("component", ["block_input", "mlp_activation", "attention_output",
                                       "attention_value_output", "query_output", "value_output"])
def test_the_built_in_gpt_neo_row_equals_pyvene_with_the_tutorials_tables(monkeypatch, prompts, component):
    """pyvene's generation tutorial uses TinyStories-33M, a GPT-Neo: Interlace's own row
    (no tables given to it) equals pyvene given the tutorial's tables."""
    import transformers as T

    monkeypatch.setitem(real.type_to_module_mapping, T.GPTNeoForCausalLM, _neo_table())
    _neo_equals_pyvene(prompts, component)


def test_a_wrong_table_is_one_clear_error(monkeypatch):
    import transformers as T

    from tracer.families import FAMILIES
    from tracer.selfcheck import ModelCheckError

    monkeypatch.delitem(FAMILIES, "gpt_neo")  # the built-in row aside: the table is used
    hf, model = _gpt_neo()
    wrong = dict(_neo_table(), mlp_output=("transformer.h[%s].attn", "register_forward_hook"))
    monkeypatch.setitem(ours.type_to_module_mapping, T.GPTNeoForCausalLM, wrong)
    with pytest.raises(ModelCheckError, match="does not fit the model"):
        ours.IntervenableModel({"layer": 0}, model=model)
    assert "gpt_neo" not in FAMILIES
    monkeypatch.setitem(ours.type_to_module_mapping, T.GPTNeoForCausalLM, {"block_output": ("h", "x")})
    with pytest.raises(ValueError, match="must give a hook"):
        ours.IntervenableModel({"layer": 0}, model=model)


@pytest.mark.parametrize("component", ["mlp_input", "mlp_activation", "attention_input", "block_output"])
def test_components_of_a_model_without_an_lm_head_equal_pyvene(prompts, component):
    """pyvene's create_gpt2 gives GPT2Model (no LM head): its module components (mlp_input,
    the activation, attention_input) equal pyvene's; they used to fail here on the missing
    logits site."""
    import transformers as T

    cfg = testing.tiny_config("gpt2")
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    base_model = T.GPT2Model(cfg).eval()
    base, source, _ = prompts
    outs = []
    for lib in (real, ours):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm = lib.IntervenableModel({"layer": 1, "component": component}, model=base_model)
            with torch.no_grad():
                outs.append(pm(base, [source], {"sources->base": 3})[1].last_hidden_state)
    _close(outs[1], outs[0])
    assert (outs[1] - base_model(**base).last_hidden_state).abs().max() > 1e-4


def test_pyvenes_attention_weight_hook_never_fires_on_transformers_5(prompts):
    """pyvene's attention_weight hooks GPT-2's attn_dropout module, which transformers 5's
    attention no longer calls: pyvene returns the unchanged output (ours is the attn_pattern
    site, tested in test_attention_pattern.py)."""
    import transformers as T

    cfg = testing.tiny_config("gpt2")
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = T.GPT2LMHeadModel(cfg).eval()
    base, _, _ = prompts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = real.IntervenableModel({"layer": 1, "component": "attention_weight", "unit": "h.pos",
                                     "intervention_type": real.ZeroIntervention}, model=hf)
        with torch.no_grad():
            theirs = pm(base, unit_locations={"base": ([[[1]] * 2], [[[3]] * 2])})[1].logits
            plain = hf(**base).logits
    mine = ours.IntervenableModel({"layer": 1, "component": "attention_weight", "unit": "h.pos",
                                   "intervention_type": ours.ZeroIntervention}, model=hf)
    with torch.no_grad():
        changed = mine(base, unit_locations={"base": [[[1]] * 2, [[3]] * 2]})[1].logits
    _close(theirs, plain)
    assert (changed - plain).abs().max() > 1e-4
