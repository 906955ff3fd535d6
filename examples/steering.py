"""Steering on the embedded SmolLM2: a CAA vector toward " San Francisco" and the two seed
tutorials (" happy"), unsteered and steered from one batched generate call; then the
paper's evaluation of two methods at one strength on a few prompts.  The output shows each
prompt's continuation without and with steering, then success (share of outputs naming the
phrase), coherence and perplexity per method.  The seed's " happy" addition is small (0.3 x
one token embedding against SmolLM2's residual stream), so it changes the first story and
leaves the second as it was; at this strength on a 135M model the steered continuations
change but rarely name the phrase (success 0).

    python examples/steering.py [--eval-prompts 5] [--new-tokens 25]
"""

import argparse


import tracer
from recipes import lens, steering
from tracer.interventions import Intervention

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--eval-prompts", type=int, default=5, help="prompts in the evaluation (section 3)")
parser.add_argument("--new-tokens", type=int, default=25, help="tokens generated per prompt")
args = parser.parse_args()
model = tracer.load()
tok = model.tokenizer
prompts = ["Once upon a time there was", "My favourite place to visit is"]

# 1. " happy"'s token embedding added to every layer's MLP output at every step
happy = tracer.sites.module(model).get_input_embeddings().weight[tok(" happy")["input_ids"][0]].detach()
ivs = [Intervention("add", f"mlp_out.{layer}", params={"vector": happy, "alpha": 0.3})
       for layer in range(model.config.num_hidden_layers)]
out = tracer.generation.generate(model, prompts, ivs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
for p, a, b in zip(prompts, out.plain, out.steered):
    print(f"{p!r}\n  plain:   {a!r}\n  happy:   {b!r}")

# 2. a mean-difference (CAA) vector toward "San Francisco" at layer 8, saved as safetensors + JSON
pos, neg = lens.contrast_texts("San Francisco")
vector = steering.caa_vector(model, pos, neg, layer=8)
folder = steering.save_vector("results/sf_vector", model, vector, layer=8, alpha=8.0)
spec = tracer.files.load(folder, model)
out = tracer.generation.generate(model, prompts, spec.ordered(model), max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
for p, b in zip(prompts, out.steered):
    print(f"{p!r}\n  SF vector: {b!r}")

# 3. the paper's evaluation: two methods, one strength, five prompts
table = steering.sweep(model, ["steering", "logit"], [0.5], layer=8, length=args.new_tokens,
                       texts=steering.prompts()[:args.eval_prompts], out="results/steering_example", progress=False)
for r in table.rows:
    print(f"{r['method']:10s} success={r['success']:.2f} coherence={r['coherence']:.3f} "
          f"perplexity={r['perplexity']:.1f}")
print("table and plot in results/steering_example/")
