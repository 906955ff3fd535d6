"""Steering on the embedded SmolLM2: a CAA vector toward " San Francisco" and the two seed
tutorials (" happy"), unsteered and steered from one batched generate call; then the
paper's evaluation of two methods at one strength on a few prompts.

    python examples/steering.py
"""


import tracer
from recipes import lens, steering
from tracer.interventions import Intervention

model = tracer.load()
tok = model.tokenizer
prompts = ["Once upon a time there was", "My favourite place to visit is"]

# 1. " happy"'s token embedding added to every layer's MLP output at every step
happy = tracer.sites.module(model).get_input_embeddings().weight[tok(" happy")["input_ids"][0]].detach()
ivs = [Intervention("add", f"mlp_out.{layer}", params={"vector": happy, "alpha": 0.3})
       for layer in range(model.config.num_hidden_layers)]
out = tracer.generation.generate(model, prompts, ivs, max_new_tokens=25, min_new_tokens=25)
for p, a, b in zip(prompts, out.plain, out.steered):
    print(f"{p!r}\n  plain:   {a!r}\n  happy:   {b!r}")

# 2. a mean-difference (CAA) vector toward "San Francisco" at layer 8, saved as safetensors + JSON
pos, neg = lens.contrast_texts("San Francisco")
vector = steering.caa_vector(model, pos, neg, layer=8)
folder = steering.save_vector("results/sf_vector", model, vector, layer=8, alpha=8.0)
spec = tracer.files.load(folder, model)
out = tracer.generation.generate(model, prompts, spec.ordered(model), max_new_tokens=25, min_new_tokens=25)
for p, b in zip(prompts, out.steered):
    print(f"{p!r}\n  SF vector: {b!r}")

# 3. the paper's evaluation: two methods, one strength, five prompts
table = steering.sweep(model, ["steering", "logit"], [0.5], layer=8, length=20,
                       texts=steering.prompts()[:5], out="results/steering_example", progress=False)
for r in table.rows:
    print(f"{r['method']:10s} success={r['success']:.2f} coherence={r['coherence']:.3f} "
          f"perplexity={r['perplexity']:.1f}")
print("table and plot in results/steering_example/")
