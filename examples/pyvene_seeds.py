"""The pyvene seed examples on the embedded SmolLM2, with ``import tracer as pv`` instead of
``import pyvene as pv`` (weights come from ``tracer.load``: nothing is downloaded).

    python examples/pyvene_seeds.py
"""

import tempfile

import torch
import torch.nn as nn

import tracer as pv

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
    prompt, source_representations=emb_happy * 0.3, max_length=40)
print("plain:  ", tokenizer.decode(unintervened_story[0], skip_special_tokens=True))
print("happy:  ", tokenizer.decode(intervened_story[0], skip_special_tokens=True))

# 5. Generation with a source example: " Happy"'s MLP outputs (x 0.1) added at every layer.
def pv_patcher(b, s): return b + s * 0.1

pv_story = pv.IntervenableModel([{
    "layer": l, "component": "mlp_output", "intervention": pv_patcher,
} for l in range(model.config.num_hidden_layers)], model=model)
_, intervened_story = pv_story.generate(
    prompt, tokenizer(" Happy", return_tensors="pt"), unit_locations={"sources->base": 0}, max_length=40)
print("source: ", tokenizer.decode(intervened_story[0], skip_special_tokens=True))

# 6. Save and load (config.json + tensors.safetensors, no pickle).
with tempfile.TemporaryDirectory() as folder:
    pv_smol.save(folder)
    loaded = pv.IntervenableModel.load(folder, model)
    print("reloaded interventions:", loaded.keys)
