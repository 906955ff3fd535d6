"""What steering costs over plain generation: steered ``tracer.generation.generate`` time /
plain ``transformers`` ``generate`` time, same prompts, same number of new tokens (greedy),
both in this process.  Also checks that the steered tokens equal a plain-hook steered
``generate``.

    python benchmarks/steering.py [--model smollm2] [--device cpu] [--tokens 30] [--batch 8]
                                  [--layers middle|all]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import tracer  # noqa: E402
from common import parser  # noqa: E402
from site_overhead import best_of  # noqa: E402
from tracer.interventions import Intervention  # noqa: E402

PROMPTS = ["Once upon a time there was", "The weather today is", "My favourite food is",
           "Tell me about the ocean.", "The best way to learn is", "In the city of",
           "Write a poem about trees.", "Yesterday I went to"]


def main() -> None:
    p = parser(__doc__, repeats=3)
    p.add_argument("--tokens", type=int, default=30)
    p.add_argument("--layers", choices=["middle", "all"], default="middle",
                   help="steer the middle layer's residual stream, or every layer's")
    a = p.parse_args()
    torch.set_grad_enabled(False)
    model = tracer.load(a.model, device=a.device)
    module, tok = tracer.sites.module(model), model.tokenizer
    prompts = (PROMPTS * 8)[: a.batch]
    n_layers = model.config.num_hidden_layers
    layers = [n_layers // 2] if a.layers == "middle" else list(range(n_layers))
    torch.manual_seed(0)
    vector = torch.randn(model.config.hidden_size) * (2 if a.layers == "middle" else 0.1)
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True).to(module.device)
    kw = dict(max_new_tokens=a.tokens, min_new_tokens=a.tokens, do_sample=False,
              pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    targets = [module.model.layers[layer] for layer in layers]

    def hooked():
        hs = [t.register_forward_hook(lambda m, i, o: o + vector.to(o.device, o.dtype)) for t in targets]
        try:
            return module.generate(**enc, **kw)
        finally:
            for h in hs:
                h.remove()

    ivs = [Intervention("add", f"resid_post.{layer}", params={"vector": vector}) for layer in layers]
    steered = lambda: tracer.generation.generate(model, prompts, ivs, a.tokens, compare=False,  # noqa: E731
                                                 min_new_tokens=a.tokens, progress=False).steered_tokens
    same = torch.equal(steered().cpu(), hooked().cpu())
    t_plain = best_of(lambda: module.generate(**enc, **kw), a.repeats)
    t_hook = best_of(hooked, a.repeats)
    t_ours = best_of(steered, a.repeats)
    both = lambda: tracer.generation.generate(model, prompts, ivs, a.tokens,  # noqa: E731
                                              min_new_tokens=a.tokens, progress=False)
    t_both = best_of(both, a.repeats)
    print(f"{model.config.model_type}, {module.device}, batch {a.batch}, {a.tokens} new tokens, "
          f"steering resid_post at {a.layers} layer(s) ({len(layers)}); steered tokens equal the plain "
          f"hook's: {same}")
    print(f"plain transformers generate          {t_plain:7.3f} s  1.00x")
    print(f"plain hook steered generate          {t_hook:7.3f} s  {t_hook / t_plain:.2f}x")
    print(f"tracer.generation steered            {t_ours:7.3f} s  {t_ours / t_plain:.2f}x")
    print(f"tracer.generation steered + unsteered {t_both:6.3f} s  {t_both / t_plain:.2f}x "
          f"(twice the rows, one call)")


if __name__ == "__main__":
    main()
