"""What a local trace costs on the model at hand, measured once per process.

Three quantities, in seconds, from three small runs (about 0.2 s on a 135M model on 2
CPU cores):

- ``per_trace``: what one nnsight trace adds to a plain forward (capture, setup, output);
- ``per_layer``: one decoder layer's pass over its weights for a single token;
- ``per_token_layer``: one more token through one layer.

``batch_seconds`` predicts a batch's time from them; ``tracer.reuse`` uses it to lay out its
batches and to choose between exact reuse and the full recomputation.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from .sites import config, dims_of, module

WIDTH = 64   # tokens of the calibration batch
ROWS = 1     # its rows


@dataclass(frozen=True)
class Costs:
    per_trace: float
    per_layer: float
    per_token_layer: float

    def batch_seconds(self, layers: int, tokens: int) -> float:
        """A trace that runs ``layers`` layers over ``tokens`` tokens (rows x columns)."""
        return self.per_trace + layers * (self.per_layer + tokens * self.per_token_layer)


_MEASURED: "weakref.WeakKeyDictionary[torch.nn.Module, Costs]" = weakref.WeakKeyDictionary()


def _best(run: Any, cuda: bool, repeat: int = 2) -> float:
    """The fastest of ``repeat`` runs (the least disturbed by other work)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(model: Any) -> Costs:
    """The model's ``Costs``, measured on its first call in this process (then remembered)."""
    torch_module = module(model)
    if torch_module in _MEASURED:  # weak keys: a model freed is forgotten, not mistaken for another
        return _MEASURED[torch_module]
    device = next(torch_module.parameters()).device
    n_layers = max(1, dims_of(config(model)).n_layers)
    vocab = int(getattr(config(model), "vocab_size", 2) or 2)
    one = torch.ones((1, 1), dtype=torch.long, device=device)
    many = torch.randint(0, vocab, (ROWS, WIDTH), device=device)

    def plain(ids: torch.Tensor) -> None:
        with torch.no_grad():
            torch_module(input_ids=ids, logits_to_keep=1, use_cache=False)

    def traced(ids: torch.Tensor) -> None:
        import nnsight

        with torch.no_grad(), model.trace({"input_ids": ids}, logits_to_keep=1, use_cache=False):
            nnsight.save(model.output.logits)

    traced(one)  # the first trace of a process pays one-off costs
    cuda = device.type == "cuda"
    # one-token runs are short and noisy: the best of more
    small, large = _best(lambda: plain(one), cuda, 4), _best(lambda: plain(many), cuda)
    nn_small = _best(lambda: traced(one), cuda, 4)
    per_layer = small / n_layers
    per_token_layer = max(0.0, large - small) / (n_layers * (ROWS * WIDTH - 1))
    costs = Costs(max(0.0, nn_small - small), per_layer, max(per_token_layer, 1e-9))
    _MEASURED[torch_module] = costs
    return costs
