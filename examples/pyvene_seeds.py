"""The pyvene seed examples and pyvene's main tutorials on the embedded SmolLM2, with
``import tracer as pv`` instead of ``import pyvene as pv`` (weights come from ``tracer.load``:
nothing is downloaded).  Each section prints one line saying what it shows: the basic
interchange, zero/add/collect, an nn.Module around it, generation (on the generated tokens
and from a source), save/load, seed 001's custom TrainableIntervention, DAS trained with
``train_alignment`` in pyvene's own batch format, boundless DAS, serial interventions
(pyvene's path-patching pattern: source 0 into source 1, then source 1 into the base),
group keys (two interventions sharing one source), a causal model's counterfactual data, and
pyvene's toy models: the MLP classifier (subspace partitions) and the GRU (its "t" unit), and
DAS on a causal model's counterfactual data (the seed's three-number sum).

    python examples/pyvene_seeds.py [--new-tokens 30] [--epochs 3]
"""

import argparse
import tempfile

import torch
import torch.nn as nn

import tracer as pv

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--new-tokens", type=int, default=30, help="tokens generated in sections 4 and 5")
parser.add_argument("--epochs", type=int, default=3, help="DAS training epochs in sections 9 and 16")
args = parser.parse_args()

model = pv.load()  # SmolLM2-135M-Instruct, an nnsight TransformersModel
tokenizer = model.tokenizer

# 1. Wrap and intervene: zero the MLP output of layer 15 (a module path).
pv_model = pv.IntervenableModel({
    "component": "model.layers[15].mlp.output",
    "intervention": pv.ZeroIntervention,
}, model=model)
orig_outputs, intervened_outputs = pv_model(
    tokenizer("The capital of Spain is", return_tensors="pt"), output_original_output=True)
print("zeroing layer 15's MLP changes the logits by",
      f"{(intervened_outputs.logits - orig_outputs.logits).abs().max():.3f}")

# 2. Interchange the 4th token's MLP output at layer 0 from a source run.
pv_smol = pv.IntervenableModel(
    intervenable_config=pv.IntervenableConfig(
        intervenable_representations=[pv.IntervenableRepresentationConfig(0, "mlp_output")],
        intervenable_interventions_type=pv.VanillaIntervention),
    model=model)
original_outputs, intervened_outputs = pv_smol(
    tokenizer("The capital of Spain is", return_tensors="pt"),
    [tokenizer("The capital of Italy is", return_tensors="pt")],
    {"sources->base": 4}, output_original_output=True)
print("per-position change of the last hidden state (only position 4 on):",
      (original_outputs.last_hidden_state - intervened_outputs.last_hidden_state).abs().amax(-1))

# 3. It is an nn.Module: use it inside another model.
class ModelWithIntervenables(nn.Module):
    def __init__(self):
        super().__init__()
        self.pv_smol = pv_smol
        self.relu = nn.ReLU()
        self.fc = nn.Linear(model.config.hidden_size, 1)

    def forward(self, base, sources=None, unit_locations=None, activations_sources=None, subspaces=None):
        _, counterfactual_x = self.pv_smol(base, sources, unit_locations, activations_sources, subspaces)
        return self.fc(self.relu(counterfactual_x.last_hidden_state))

composed = ModelWithIntervenables()
with torch.no_grad():
    print("composed output shape:", tuple(composed(
        tokenizer("The capital of Spain is", return_tensors="pt"),
        [tokenizer("The capital of Italy is", return_tensors="pt")], {"sources->base": 4}).shape))

# 4. Generation: add the " happy" embedding (x 0.3) to every layer's MLP output.
emb_happy = pv.sites.module(model).get_input_embeddings()(torch.tensor(tokenizer(" happy")["input_ids"][0])).detach()
pv_story = pv.IntervenableModel([{
    "layer": l, "component": "mlp_output", "intervention_type": pv.AdditionIntervention,
} for l in range(model.config.num_hidden_layers)], model=model)
prompt = tokenizer("Once upon a time there was", return_tensors="pt")
unintervened_story, intervened_story = pv_story.generate(
    prompt, source_representations=emb_happy * 0.3, max_new_tokens=args.new_tokens)
print("plain:  ", tokenizer.decode(unintervened_story[0], skip_special_tokens=True))
print("happy:  ", tokenizer.decode(intervened_story[0], skip_special_tokens=True))

# 5. Generation with a source example: " Happy"'s MLP outputs (x 0.1) added at every layer.
def pv_patcher(b, s): return b + s * 0.1

pv_story = pv.IntervenableModel([{
    "layer": l, "component": "mlp_output", "intervention": pv_patcher,
} for l in range(model.config.num_hidden_layers)], model=model)
_, intervened_story = pv_story.generate(
    prompt, tokenizer(" Happy", return_tensors="pt"), unit_locations={"sources->base": 0}, max_new_tokens=args.new_tokens)
print("source: ", tokenizer.decode(intervened_story[0], skip_special_tokens=True))
print("  (as in pyvene's tutorial; it repeats one word because SmolLM2's MLP outputs at a first "
      "token are ~60x larger than elsewhere, so the added source swamps the residual stream)")

# 6. Save and load (config.json + tensors.safetensors, no pickle).
with tempfile.TemporaryDirectory() as folder:
    pv_smol.save(folder)
    loaded = pv.IntervenableModel.load(folder, model)
    print("reloaded interventions:", loaded.keys)

# 7. Collect and add on a subspace: read layer 10's residual at the last token, then add a
#    vector to its first 64 dims only.
base = tokenizer("The capital of Spain is", return_tensors="pt")
last = base["input_ids"].shape[1] - 1
collector = pv.IntervenableModel({"layer": 10, "component": "block_output",
                                  "intervention_type": pv.CollectIntervention}, model=model)
(_, collected), _ = collector(base, unit_locations={"base": last})
adder = pv.IntervenableModel({"layer": 10, "component": "block_output",
                              "intervention_type": pv.AdditionIntervention}, model=model)
with torch.no_grad():
    plain_out, added = adder(base, unit_locations={"base": last}, subspaces=[[list(range(64))]],
                             source_representations=torch.ones(model.config.hidden_size) * 4)
print(f"collected a {tuple(collected[0].shape)} activation; adding 4 to 64 of its dims changes the "
      f"top token's logit by {float((added.logits - plain_out.logits)[0, -1].abs().max()):.2f} "
      f"(top token {tokenizer.decode(added.logits[0, -1].argmax())!r})")

# 8. Seed 001's custom intervention: a subclass of pv.TrainableIntervention.
class RotatedSpaceIntervention(pv.TrainableIntervention):
    def __init__(self, embed_dim, **kwargs):
        super().__init__(embed_dim=embed_dim, **kwargs)
        rotate_layer = torch.nn.Linear(embed_dim, embed_dim, bias=False)
        self.rotate_layer = torch.nn.utils.parametrizations.orthogonal(rotate_layer)
        self.interchange_dim = 64

    def forward(self, base, source, subspaces=None):
        rotated_base = self.rotate_layer(base)
        rotated_source = self.rotate_layer(source)
        rotated_base[..., :self.interchange_dim] = rotated_source[..., :self.interchange_dim]
        return torch.matmul(rotated_base, self.rotate_layer.weight)

custom = pv.IntervenableModel({"layer": 8, "component": "block_output",
                               "intervention_type": RotatedSpaceIntervention}, model=model)
with torch.no_grad():
    original, swapped = custom(base, [tokenizer("The capital of Italy is", return_tensors="pt")],
                               {"sources->base": len(tokenizer("The capital of")["input_ids"])})
print("custom rotated interchange of 64 dims at the country token: top token",
      repr(tokenizer.decode(original.logits[0, -1].argmax())), "->",
      repr(tokenizer.decode(swapped.logits[0, -1].argmax())))

# 9. DAS with train_alignment in pyvene's own batch format (input_ids, source_input_ids,
#    source_0->base.0.pos / .1.pos, labels; compute_loss(logits, labels)): a 16-dim rotated
#    subspace at the country token of layer 8 that carries "which capital".
CAPITALS = {"France": " Paris", "Italy": " Rome", "Spain": " Madrid", "Germany": " Berlin",
            "Japan": " Tokyo", "Russia": " Moscow", "Egypt": " Cairo", "Greece": " Athens"}
countries = [c for c in CAPITALS if len(tokenizer(" " + c)["input_ids"]) == 1]
pairs = [(b, s) for b in countries for s in countries if b != s]
ids = lambda c: tokenizer(f"The capital of {c} is", return_tensors="pt")["input_ids"]  # noqa: E731
country = len(tokenizer("The capital of")["input_ids"])  # the country's token position

def pyvene_batch(chunk):
    n = len(chunk)
    return {"input_ids": torch.cat([ids(b) for b, _ in chunk]),
            "source_input_ids": torch.cat([ids(s) for _, s in chunk]),
            "labels": torch.tensor([tokenizer(CAPITALS[s])["input_ids"][0] for _, s in chunk]),
            "source_0->base.0.pos": torch.full((n, 1), country),
            "source_0->base.1.pos": torch.full((n, 1), country)}

data = [pyvene_batch(pairs[i:i + 14]) for i in range(0, len(pairs), 14)]
compute_loss = lambda logits, labels: torch.nn.functional.cross_entropy(logits[:, -1], labels)  # noqa: E731
iia = lambda logits, labels: float((logits[0][:, -1].argmax(-1) == labels[0]).float().mean())  # noqa: E731
for kind in (pv.LowRankRotatedSpaceIntervention, pv.BoundlessRotatedSpaceIntervention):
    torch.manual_seed(0)
    das = pv.IntervenableModel({"layer": 8, "component": "block_output", "low_rank_dimension": 16,
                                "intervention_type": kind}, model=model)
    before = das.eval_alignment(data, iia, None, progress=False)
    das.train_alignment(data, compute_loss, iia, None, epochs=args.epochs, lr=1e-2, progress=False)
    after = das.eval_alignment(data, iia, None, progress=False)
    extra = ""
    if kind is pv.BoundlessRotatedSpaceIntervention:  # 10. boundless DAS learns how many dims
        iv = next(iter(das.interventions.values()))
        extra = f" (mask covers {float(iv.mask().detach().sum()):.0f} of {iv.embed_dim} rotated dims)"
    print(f"{kind.__name__}: interchange accuracy {before:.2f} before training, {after:.2f} after{extra}")

# 11. Serial interventions (pyvene's path patching): layer 4's output at the country token
#     goes from source 0 into source 1's run, and source 1's (changed) layer 12 output into
#     the base.  Equal to doing the two steps by hand.
serial = pv.IntervenableModel(pv.IntervenableConfig(
    [{"layer": 4, "component": "block_output"}, {"layer": 12, "component": "block_output"}],
    pv.VanillaIntervention, mode="serial"), model=model)
b, s0, s1 = (tokenizer(f"The capital of {c} is", return_tensors="pt") for c in ("Spain", "Italy", "France"))
_, chained = serial(b, [s0, s1], {"source_0->source_1": country, "source_1->base": country})
# by hand: source 1 run with source 0's layer 4 value, its layer 12 value collected ...
steps = pv.IntervenableModel(pv.IntervenableConfig(
    [{"layer": 4, "component": "block_output", "intervention_type": pv.VanillaIntervention},
     {"layer": 12, "component": "block_output", "intervention_type": pv.CollectIntervention}]), model=model)
(_, [hidden]), _ = steps(s1, [s0], {"sources->base": country})
# ... then set in the base at layer 12
_, by_hand = pv.IntervenableModel({"layer": 12, "component": "block_output"}, model=model)(
    b, unit_locations={"base": country}, source_representations=hidden.reshape(-1))
print("serial interventions: top token", repr(tokenizer.decode(chained.logits[0, -1].argmax())),
      f"equal to the two steps by hand (max logit difference {(chained.logits - by_hand.logits).abs().max():.1e})")

# 12. Group keys: two interventions in one group read one source (the second group another).
grouped = pv.IntervenableModel(pv.IntervenableConfig([
    {"layer": 2, "component": "attention_output", "group_key": 0},
    {"layer": 2, "component": "mlp_output", "group_key": 0},
    {"layer": 20, "component": "block_output", "group_key": 1}]), model=model)
_, out = grouped(b, [s0, s1], {"sources->base": country})
print("grouped interventions (2 sources for 3 interventions): top token",
      repr(tokenizer.decode(out.logits[0, -1].argmax())))

# 13. A causal model and its counterfactual data, as pyvene's DAS tutorials build them.
import random  # noqa: E402

digits = list(range(4))
program = pv.CausalModel(["a", "b", "c", "x", "y"],
                         {"a": digits, "b": digits, "c": digits, "x": list(range(7)), "y": list(range(10))},
                         {"a": [], "b": [], "c": [], "x": ["a", "b"], "y": ["x", "c"]},
                         {"a": lambda: 0, "b": lambda: 0, "c": lambda: 0, "x": lambda a, b: a + b,
                          "y": lambda x, c: x + c})
random.seed(0)
counterfactual = program.generate_counterfactual_dataset(
    64, lambda iv: 0, batch_size=8, sampler=program.sample_input_tree_balanced)
ex = counterfactual[0]
print(f"causal model: {len(counterfactual)} counterfactual examples; base {ex['input_ids'].tolist()} with "
      f"x from {ex['source_input_ids'][0].tolist()} gives y = {ex['labels'].item():.0f} "
      f"(factual {ex['base_labels'].item():.0f})")

# 14. pyvene's MLP toy model (create_mlp_classifier on inputs_embeds): two interventions on the
#     activation's subspace partitions, each from its own source, equal to editing it by hand.
_, _, mlp = pv.create_mlp_classifier(pv.MLPConfig(h_dim=3, n_layer=1, pdrop=0.0, num_classes=5,
                                                  include_bias=False, squeeze_output=False))
mlp_pv = pv.IntervenableModel(pv.IntervenableConfig(
    [pv.RepresentationConfig(0, "mlp_activation", "pos", 1, subspace_partition=[[0, 1], [1, 3]])
     for _ in range(2)], intervention_types=pv.VanillaIntervention, model_type=type(mlp)), mlp)
rows = 10
mb, m1, m2 = ({"inputs_embeds": torch.rand(rows, 1, 3)} for _ in range(3))
with torch.no_grad():
    _, (mixed, *_) = mlp_pv(mb, [m1, m2], {"sources->base": ([[[0]] * rows] * 2, [[[0]] * rows] * 2)},
                            subspaces=[[[0]] * rows, [[1]] * rows])
    act = lambda x: mlp.mlp.h[0].act(mlp.mlp.h[0].ff1(x["inputs_embeds"]))  # noqa: E731
    by_hand = torch.cat([act(m1)[..., :1], act(m2)[..., 1:]], -1)
    print(f"MLP toy model: dim 0 from source 1 and dims 1-2 from source 2 equal the edit by hand: "
          f"{torch.allclose(mixed, mlp.score(by_hand), atol=1e-6)}")

# 15. pyvene's GRU (create_gru_classifier) and its "t" unit: the cell's output at one time step.
#     pyvene 0.1.8 itself zeroes every step here and fails on batches; this is step 3 alone.
_, _, gru = pv.create_gru_classifier(pv.GRUConfig(h_dim=32, pdrop=0.0))
seq, src = torch.rand(4, 10, 32), torch.rand(4, 10, 32)
zero_t = pv.IntervenableModel({"component": "cell_output", "unit": "t",
                               "intervention_type": pv.ZeroIntervention}, model=gru)
swap_t = pv.IntervenableModel({"component": "cell_output", "unit": "t",
                               "intervention_type": pv.VanillaIntervention}, model=gru)
with torch.no_grad():
    plain_out = gru(inputs_embeds=seq)[0]
    zeroed = zero_t(base={"inputs_embeds": seq}, unit_locations={"base": 3})[1][0]
    swapped = swap_t(base={"inputs_embeds": seq}, sources=[{"inputs_embeds": src}],
                     unit_locations={"sources->base": (6, 3)})[1][0]
print(f"GRU: zeroing step 3 moves the logits by {float((zeroed - plain_out).abs().max()):.4f}; the "
      f"source's step 6 at step 3 by {float((swapped - plain_out).abs().max()):.4f} (4 rows in one call)")

# 16. Causal-model DAS (pyvene's DAS tutorial, on the seed's three-number sum): an MLP trained
#     on the sums, then a rotation of its first layer trained on the causal model's
#     counterfactual pairs (v = a + b taken from the source); recipes.das runs it through
#     pv.IntervenableModel and pv.CausalModel.
from recipes import das as three_sum  # noqa: E402

net, factual = three_sum.train_mlp()
trained = three_sum.das(net, dim=16, epochs=args.epochs)["iia"]
untrained = three_sum.das(net, dim=16, train=False)["iia"]
print(f"causal-model DAS: the MLP sums {factual:.0%} right; interchange accuracy of a+b in 16 "
      f"rotated dims {trained:.2f} after {args.epochs} epochs, {untrained:.2f} untrained")
