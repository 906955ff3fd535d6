"""Distributed alignment search (DAS) on the seed's three-number sum task.

    def add_three_numbers(a, b, c):
        var_x = a + b
        return var_x + c

A small MLP is trained here to output a + b + c from one-hot digits (it reads a and b in
its first layer and c in its second).  DAS then learns a rotation of the first hidden
layer whose first ``k`` dims carry the causal variable: swapping
them from a source (a', b', c') into a base (a, b, c) must make the network answer
``a' + b' + c`` (for the variable ``a + b``).  Interchange intervention accuracy (IIA) on
held-out pairs measures the alignment; an untrained rotation and the wrong variable
(``b + c``, counterfactual ``a + b' + c'``) are the controls.

    python -m recipes.das --dim 16
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

import tracer
from tracer import checks
from tracer.files import writable_dir
from recipes.cli import HelpFormatter, check_args, guarded, parse_layers, seed_everything
from recipes.results import DASResult

DIGITS = 10
VARIABLES = ("a+b", "b+c")  # the program's variable, and the control


def program(variable: str = "a+b") -> tracer.CausalModel:
    """The three-number sum as a causal model (pyvene's ``CausalModel``) whose intermediate
    variable ``v`` is ``variable``: ``v = a + b, y = v + c`` (the seed's program), or the
    control ``v = b + c, y = a + v``."""
    if variable not in VARIABLES:
        raise ValueError(f"unknown variable {variable!r}; valid variables are {', '.join(VARIABLES)}")
    digits = list(range(DIGITS))
    first, second = ("a", "b"), ("c",)
    if variable == "b+c":
        first, second = ("b", "c"), ("a",)
    return tracer.CausalModel(
        ["a", "b", "c", "v", "y"],
        {"a": digits, "b": digits, "c": digits, "v": list(range(2 * DIGITS - 1)),
         "y": list(range(3 * (DIGITS - 1) + 1))},
        {"a": [], "b": [], "c": [], "v": list(first), "y": ["v", *second]},
        {"a": lambda: 0, "b": lambda: 0, "c": lambda: 0, "v": lambda x, z: x + z, "y": lambda v, w: v + w})


class SumMLP(nn.Module):
    """Digits (a, b, c) -> logits over the sums 0..27.

    ``layers[0]`` reads the one-hot a and b; ``layers[1]`` reads its output and the one-hot
    c, as the program does (``var_x = a + b`` then ``var_x + c``).  How ``layers[0]``
    encodes (a, b) in its 64 units is learned, not designed: DAS has to find where a + b
    lives in it.
    """

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.layers = nn.ModuleList([
            nn.Sequential(nn.Linear(2 * DIGITS, hidden), nn.ReLU()),
            nn.Sequential(nn.Linear(hidden + DIGITS, hidden), nn.ReLU()),
        ])
        self.head = nn.Linear(hidden, 3 * (DIGITS - 1) + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers[0](x[:, :2 * DIGITS])
        h = self.layers[1](torch.cat([h, x[:, 2 * DIGITS:]], dim=-1))
        return self.head(h)


def one_hot(triples: torch.Tensor) -> torch.Tensor:
    """(n, 3) digits -> (n, 30) inputs."""
    return nn.functional.one_hot(triples, DIGITS).flatten(1).float()


def all_triples() -> torch.Tensor:
    d = torch.arange(DIGITS)
    return torch.cartesian_prod(d, d, d)


def train_mlp(hidden: int = 64, steps: int = 1500, seed: int = 0,
              progress: bool = False) -> tuple[SumMLP, float]:
    """Train the MLP on all 1000 triples (``progress``: a bar over the steps); returns it and
    its accuracy."""
    from tqdm.auto import trange

    torch.manual_seed(seed)
    net = SumMLP(hidden)
    x = all_triples()
    inputs, labels = one_hot(x), x.sum(1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in trange(steps, desc="training the MLP", unit="step", disable=not progress, delay=1.0):
        loss = nn.functional.cross_entropy(net(inputs), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(inputs).argmax(-1) == labels).float().mean())
    return net, acc


def pairs(n: int, variable: str, seed: int) -> dict:
    """``n`` random (base, source) pairs with the counterfactual label for ``variable``:
    the causal model's output with ``v`` taken from the source (``run_interchange``)."""
    model = program(variable)
    state = random.getstate()  # CausalModel samples with Python's random, as pyvene's does
    random.seed(seed)
    try:
        drawn = [(model.sample_input(), model.sample_input()) for _ in range(n)]
    finally:
        random.setstate(state)
    triple = lambda s: [s["a"], s["b"], s["c"]]  # noqa: E731
    base = torch.tensor([triple(b) for b, _ in drawn])
    src = torch.tensor([triple(s) for _, s in drawn])
    labels = torch.tensor([model.run_interchange(b, {"v": s})["y"] for b, s in drawn])
    return {"base": one_hot(base), "sources": [one_hot(src)], "labels": labels}


def batches(d: dict, size: int) -> list[dict]:
    """Split one pair set into batches of ``size``."""
    n = d["labels"].shape[0]
    return [{"base": d["base"][i:i + size], "sources": [d["sources"][0][i:i + size]],
             "labels": d["labels"][i:i + size]} for i in range(0, n, size)]


def iia(outputs: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]) -> dict:
    """Interchange intervention accuracy: the intervened argmax equals the counterfactual."""
    right = sum(int((o.argmax(-1) == y).sum()) for o, y in zip(outputs, labels))
    return {"iia": right / sum(len(y) for y in labels)}


def das(net: nn.Module, layer: int = 0, dim: int = 16, variable: str = "a+b",
        n_train: int = 4096, n_test: int = 1000, epochs: int = 15, lr: float = 1e-2,
        seed: int = 0, train: bool = True, progress: bool = False,
        component: Optional[str] = None) -> dict:
    """Train (or not, for the control) a rotation at ``layers[layer]``'s output; IIA on
    held-out pairs.  Returns ``{"iia", "log", "model"}``."""
    import nnsight

    checks.integer("layer", layer, 0, len(net.layers) - 1)
    hidden = net.layers[layer][0].out_features
    checks.integer("dim (rotated dims interchanged)", dim, 1, hidden)
    if variable not in VARIABLES:
        raise ValueError(f"unknown variable {variable!r}; valid variables are {', '.join(VARIABLES)}")
    torch.manual_seed(seed)
    iv = tracer.RotatedSpaceIntervention(embed_dim=hidden, interchange_dim=dim)
    component = component or f"layers[{layer}].output"
    pvm = tracer.IntervenableModel({"component": component, "intervention": iv},
                                   model=nnsight.NNsight(net))
    loss = lambda out, y: nn.functional.cross_entropy(out, y)  # noqa: E731
    log = []
    if train:
        log = pvm.train_alignment(batches(pairs(n_train, variable, seed + 1), 256), loss, epochs=epochs,
                                  lr=lr, progress=progress)
    result = pvm.eval_alignment(batches(pairs(n_test, variable, seed + 2), 500), iia, progress=progress)
    return {"iia": result["iia"], "log": log, "model": pvm}


def search(layers: Sequence[int] = (0,), dim: int = 16, epochs: int = 15, seed: int = 0,
           progress: bool = False, save_dir: Optional[str] = None) -> DASResult:
    """The tutorial end to end: train the a+b+c MLP, then at each hidden layer DAS for a+b,
    the untrained rotation and DAS for the wrong variable b+c; held-out IIA of each as a
    ``DASResult``.  ``save_dir``: also save each layer's trained a+b rotation there."""
    for layer in layers:
        checks.integer("layer", layer, 0, 1)  # SumMLP's two hidden layers, before any training
    checks.integer("dim (rotated dims interchanged)", dim, 1, 64)
    seed_everything(seed)
    net, acc = train_mlp(seed=seed, progress=progress)
    rows: dict = {}
    for layer in layers:
        for name, kwargs in [("DAS a+b", dict(variable="a+b")),
                             ("untrained rotation a+b", dict(variable="a+b", train=False)),
                             ("DAS b+c (wrong variable)", dict(variable="b+c"))]:
            got = das(net, layer, dim, epochs=epochs, progress=progress, seed=seed, **kwargs)
            rows.setdefault(f"layer {layer}", {})[name] = got["iia"]
            if name == "DAS a+b" and save_dir:
                got["model"].save(Path(save_dir) / f"rotation_layer_{layer}")
    return DASResult(rows, acc, {"layers": list(layers), "dim": dim, "epochs": epochs, "seed": seed})


@guarded
def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m recipes.das") -> int:
    """``python -m recipes.das``: train the MLP, then DAS and its controls; prints IIA."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--layers", nargs="+", default=["0"], metavar="L",
                   help="hidden layers of the MLP to run DAS at (0 holds a + b; 0-1 for both)")
    p.add_argument("--dim", type=int, default=16, help="rotated dims interchanged")
    p.add_argument("--epochs", type=int, default=15, help="training epochs of each rotation")
    p.add_argument("--seed", type=int, default=0, help="seed of the MLP, the rotations and the data")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="also write das.json (IIA per layer and control) and each layer's trained "
                        "a+b rotation (rotation_layer_L/: safetensors + JSON) here")
    args = p.parse_args(argv)
    check_args(args)
    layers = parse_layers(args.layers, 2) or [0, 1]  # SumMLP's two hidden layers
    if args.out:
        writable_dir(args.out, "--out")
    result = search(layers, args.dim, args.epochs, args.seed, progress=True, save_dir=args.out)
    print(f"MLP accuracy on a+b+c: {result.mlp_accuracy:.3f}")
    for layer, row in result.iia.items():
        for name, value in row.items():
            print(f"{layer}  {name:28s} IIA {value:.3f}")
    if args.out:
        print("wrote " + ", ".join(str(p) for p in result.save(args.out).values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
