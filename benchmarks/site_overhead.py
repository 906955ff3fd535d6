"""What a site edit inside an nnsight trace costs over the same edit by a plain hook.

Runs both in one process on the same model and input, checks they give the same logits,
and prints each time as a ratio to the plain forward without any edit.

    python benchmarks/site_overhead.py [--model smollm2] [--device cpu] [--repeats 20]
"""

from __future__ import annotations

import time
from typing import Callable

import torch

import tracer
from common import parser
from tracer import interventions as iv


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Fastest wall time of ``repeats`` calls (after one warm-up), in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    args = parser(__doc__, repeats=20).parse_args()

    model = tracer.load(args.model, device=args.device)
    module = tracer.sites.module(model)
    device = next(module.parameters()).device
    prompt = "The capital of France is a city that many people visit every year because"
    ids = model.tokenizer([prompt] * args.batch, return_tensors="pt").to(device)
    layer = model.config.num_hidden_layers // 2
    site = tracer.site(model, "head_out", layer=layer)
    n_heads = site.dims.n_heads

    def plain() -> torch.Tensor:
        with torch.no_grad():
            return module(**ids).logits

    def hooked() -> torch.Tensor:
        target = tracer.sites.module(model).get_submodule(site.module_path)

        def pre(mod, args):
            args[0].unflatten(-1, (n_heads, -1))[:, -1, 0] = 0

        handle = target.register_forward_pre_hook(pre)
        try:
            with torch.no_grad():
                return module(**ids).logits
        finally:
            handle.remove()

    def traced() -> torch.Tensor:
        with torch.no_grad(), model.trace(dict(ids)):
            iv.zero(site, positions=[-1], heads=[0])
            out = model.output.logits.save()
        return out

    torch.testing.assert_close(traced(), hooked(), rtol=0, atol=1e-5)
    base = best_of(plain, args.repeats)
    t_hook = best_of(hooked, args.repeats)
    t_trace = best_of(traced, args.repeats)
    print(f"model={args.model} device={device} batch={args.batch} tokens={ids['input_ids'].shape[1]}")
    print(f"plain forward          {base * 1e3:8.2f} ms  1.00x")
    print(f"plain hook edit        {t_hook * 1e3:8.2f} ms  {t_hook / base:.2f}x")
    print(f"tracer site edit       {t_trace * 1e3:8.2f} ms  {t_trace / base:.2f}x "
          f"({t_trace / t_hook:.2f}x the hook)")


if __name__ == "__main__":
    main()
