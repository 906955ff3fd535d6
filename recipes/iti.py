"""Inference-time intervention (Li et al. 2023): probe every head, shift the best ones.

1. Collect every head's output (``head_out``) at the last token of labelled statements, all
   layers in the same batched forward passes.
2. Train one logistic probe per (layer, head) on the train split (all probes at once, as one
   vectorized model) and rank heads by validation accuracy.
3. For the top K heads, direction = the mass-mean shift (mean of true minus mean of false
   activations; or the probe's weight with ``direction="probe"``), unit length, scaled by
   alpha x the standard deviation of the activations along it.
4. The result is an ``InterventionSet`` (one ``add`` at ``head_out.L`` per layer, on its
   chosen heads, at every position the model processes: every generated token), saved as
   ``config.json`` + ``tensors.safetensors`` and shareable on the hub.

Splits keep a statement and its false twin together.  Evaluation on the test split: how
often the model gives the true statement a higher log-probability than its false twin,
with and without the intervention, and the cross-entropy / KL cost on neutral text.

    python -m recipes.iti fit --model smollm2 --top-k 16 --alpha 15 --out iti/
    python -m recipes.iti generate --intervention iti/ --prompt "Is the Earth flat?"
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

import tracer
from tracer import checks, execute
from tracer.interventions import Intervention
from tracer.metrics import Probe, cross_entropy, fit_probe, kl, mean_difference, token_logprobs
from tracer.plan import Activations, Distribution, Group, Logprobs
from tracer.files import InterventionSet, atomic, model_info
from tracer.locations import looks_local
from recipes.cli import HelpFormatter, guarded, load_model, parse_layers, setup, shared
from recipes.results import ITIResult

DATA = Path(__file__).with_name("data") / "true_false.json"
NEUTRAL = Path(__file__).with_name("data") / "neutral.json"


@dataclass
class Statements:
    """Labelled statements with a pair id (a statement and its twin share one)."""

    text: list
    label: np.ndarray
    pair: np.ndarray

    def subset(self, mask: np.ndarray) -> "Statements":
        idx = np.nonzero(mask)[0]
        return Statements([self.text[i] for i in idx], self.label[idx], self.pair[idx])


def load_statements(data: Union[None, str, Path] = None, statement: str = "statement",
                    label: str = "label") -> Statements:
    """The shipped true/false pairs, or any JSON/CSV file or hub dataset with a statement and a
    label column (loaded with ``datasets``)."""
    import datasets

    if data is None or Path(data) == DATA:
        ds = datasets.load_dataset("json", data_files=str(DATA), split="train")
        text, lab, pair = [], [], []
        for row in ds:
            text += [row["true"], row["false"]]
            lab += [1, 0]
            pair += [row["id"], row["id"]]
        return Statements(text, np.array(lab), np.array(pair))
    path = Path(data)
    if not path.exists() and looks_local(data):
        raise ValueError(f"no such data file: {path} (a .json, .jsonl or .csv file, or a hub dataset id)")
    if path.exists():
        kind = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}.get(path.suffix)
        if kind is None:
            raise ValueError(f"data file {path} must be .json, .jsonl or .csv")
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    else:
        ds = datasets.load_dataset(str(data), split="train")
    missing = [c for c in (statement, label) if c not in ds.column_names]
    if missing:
        raise ValueError(f"data {data} has no column(s) {missing}; its columns are {ds.column_names}")
    labels = np.array([int(bool(v)) if not isinstance(v, str) else int(v.lower() in ("1", "true", "yes"))
                       for v in ds[label]])
    pair = np.array(ds["pair"]) if "pair" in ds.column_names else np.arange(len(labels))
    return Statements(list(ds[statement]), labels, pair)


def split(data: Statements, seed: int = 0, val: float = 0.2, test: float = 0.2) -> dict[str, Statements]:
    """Train / val / test by pair id, so twins never straddle splits."""
    pairs = np.unique(data.pair)
    rng = np.random.default_rng(seed)
    rng.shuffle(pairs)
    n_test, n_val = int(round(len(pairs) * test)), int(round(len(pairs) * val))
    parts = {"test": pairs[:n_test], "val": pairs[n_test:n_test + n_val], "train": pairs[n_test + n_val:]}
    return {k: data.subset(np.isin(data.pair, v)) for k, v in parts.items()}


def _rows(model: Any, texts: Sequence[str]) -> list[list[int]]:
    rows = [list(model.tokenizer(t)["input_ids"]) for t in texts]
    empty = [t for t, r in zip(texts, rows) if not r]
    if empty:
        raise ValueError(f"texts {empty[:3]} have no tokens")
    return rows


def head_activations(model: Any, texts: Sequence[str], batch_size: int = 128,
                     remote: Optional[bool] = None, progress: bool = False) -> torch.Tensor:
    """Every head's output at each text's last token: ``(N, layers, heads, head_dim)``.

    One plan: ``batch_size`` texts per forward pass; with ``remote=True`` one NDIF request.
    """
    n_layers = tracer.sites.dims_of(model.config).n_layers
    reads = [Activations(f"head_out.{layer}", 0, (-1,)) for layer in range(n_layers)]
    groups = [Group([row], [], reads) for row in _rows(model, texts)]
    results = execute.run(model, groups, max_batch=batch_size, remote=remote, progress=progress,
                          desc="ITI: head activations")
    return torch.stack([torch.cat(r) for r in results])


def directions(x: torch.Tensor, y: np.ndarray, probes: Probe, kind: str = "mass_mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Unit direction per (layer, head) and the activations' std along it: ``(L,H,d)``, ``(L,H)``."""
    y = torch.as_tensor(y, dtype=torch.bool)
    if kind == "mass_mean":
        d = mean_difference(x[y], x[~y])
    elif kind == "probe":
        d = probes.direction()  # the probe's weight in raw activation space
    else:
        raise ValueError(f"unknown direction {kind!r}; valid: mass_mean, probe")
    d = d / (d.norm(dim=-1, keepdim=True) + 1e-12)
    spread = torch.einsum("nlhd,lhd->nlh", x, d).std(0)
    return d, spread


TOP_KS = (4, 8, 16, 32)                    # tried when top_k is not given
ALPHAS = (0.0, 1.0, 2.5, 5.0, 10.0, 15.0)  # tried when alpha is not given; 0 = no shift


def fit(model: Any, data: Union[None, str, Path, Statements] = None, top_k: Optional[int] = None,
        alpha: Optional[float] = None, direction: str = "mass_mean", seed: int = 0,
        model_name: Optional[str] = None, remote: Optional[bool] = None,
        layers: Optional[Sequence[int]] = None, progress: bool = False) -> tuple[InterventionSet, dict]:
    """Fit ITI on labelled statements: returns the intervention and a report
    (probe accuracies, chosen heads, splits).  ``layers`` limits the heads that may be
    steered to those layers (every head is still probed).

    ``top_k`` / ``alpha`` not given are chosen on the validation split (``TOP_KS`` x
    ``ALPHAS``, all candidates scored in one plan): the pair that most often prefers the true
    statement of a validation pair, ties to the weaker shift.  Alpha 0 is a candidate, so the
    default never does worse than the model on validation; ``report["selection"]`` lists
    every candidate's score."""
    dims = tracer.sites.dims_of(model.config)
    allowed = list(range(dims.n_layers)) if layers is None else sorted(set(layers))
    for layer in allowed:
        checks.integer("layers", layer, 0, dims.n_layers - 1)
    n_probes = len(allowed) * dims.n_heads
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= n_probes):
        raise ValueError(f"top_k must be between 1 and {n_probes} (layers x heads); got {top_k}")
    if alpha is not None:
        checks.finite("alpha", alpha)
    statements = data if isinstance(data, Statements) else load_statements(data)
    if len(statements.text) < 10 or len(set(statements.label.tolist())) < 2:
        raise ValueError(f"ITI needs true and false statements to fit probes: got "
                         f"{len(statements.text)} statements with labels {sorted(set(statements.label.tolist()))}")
    parts = split(statements, seed=seed)
    every = head_activations(model, [t for v in parts.values() for t in v.text], remote=remote,
                             progress=progress)
    acts, start = {}, 0
    for k, v in parts.items():
        acts[k], start = every[start:start + len(v.text)], start + len(v.text)
    probes = fit_probe(acts["train"], parts["train"].label, seed=seed)  # one per (layer, head)
    val_acc = probes.accuracy(acts["val"], parts["val"].label)
    test_acc = probes.accuracy(acts["test"], parts["test"].label)
    n_layers, n_heads = val_acc.shape
    steerable = np.isin(np.arange(n_layers), allowed)[:, None]
    ranked = np.argsort(-np.where(steerable, val_acc, -np.inf), axis=None, kind="stable")
    dirs, spread = directions(acts["train"], parts["train"].label, probes, direction)

    def build(k: int, a: float) -> tuple[list, InterventionSet]:
        chosen = sorted((int(i) // n_heads, int(i) % n_heads) for i in ranked[:k])
        by_layer: dict[int, list[int]] = {}
        for layer, head in chosen:
            by_layer.setdefault(layer, []).append(head)
        interventions = []
        for layer, heads in by_layer.items():
            shift = torch.stack([a * spread[layer, h] * dirs[layer, h] for h in heads])
            interventions.append(Intervention("add", f"head_out.{layer}", None, heads,
                                              {"vector": shift, "alpha": 1.0}))
        meta = {"method": "iti", "model": model_name, "top_k": k, "alpha": a,
                "direction": direction, "seed": seed,
                "heads": [{"layer": l, "head": h, "val_acc": float(val_acc[l, h])} for l, h in chosen]}
        return chosen, InterventionSet(interventions, model_info(model), meta)

    selection = None
    if top_k is None or alpha is None:
        ks = [top_k] if top_k is not None else [k for k in TOP_KS if k <= n_probes] or [n_probes]
        alphas = [alpha] if alpha is not None else list(ALPHAS)
        cands = [(k, a) for a in alphas for k in ks]
        # a zero shift is the model itself, whatever K: scored once, as no intervention
        keys = list(dict.fromkeys(None if a == 0 else (k, a) for k, a in cands))
        got = dict(zip(keys, preference(model, parts["val"],
                                        [None if key is None else build(*key)[1] for key in keys],
                                        remote=remote, progress=progress)))
        scores = [got[None if a == 0 else (k, a)] for k, a in cands]
        selection = [{"top_k": k, "alpha": a, "val_prefers_true": sc} for (k, a), sc in zip(cands, scores)]
        # the best; ties go to the weaker shift (smaller alpha, then fewer heads)
        best = max(range(len(cands)), key=lambda i: (scores[i], -cands[i][1], -cands[i][0]))
        top_k, alpha = cands[best]
    chosen, spec = build(top_k, alpha)
    if selection is not None:
        spec.meta["selected_on_validation"] = True
    report = {"val_acc": val_acc, "test_acc": test_acc, "chosen": chosen, "splits": parts,
              "selection": selection, "top_k": top_k, "alpha": alpha}
    return spec, report


def run(model: Any, data: Union[None, str, Path, Statements] = None, top_k: Optional[int] = None,
        alpha: Optional[float] = None, direction: str = "mass_mean", seed: int = 0,
        model_name: Optional[str] = None, remote: Optional[bool] = None,
        layers: Optional[Sequence[int]] = None, progress: bool = False) -> ITIResult:
    """``fit`` then ``evaluate`` on the held-out test split, as one ``ITIResult``
    (``save(dir)``: the intervention folder, eval.json/.npz, probe_accuracy.png)."""
    spec, report = fit(model, data, top_k, alpha, direction, seed, model_name, remote=remote, layers=layers,
                       progress=progress)
    return ITIResult(spec, report, evaluate(model, spec, report["splits"]["test"], remote=remote),
                     model_name or tracer.models.display_name(model))


def _pairs(statements: Statements) -> tuple[dict, dict, list]:
    """Row of each pair's true and false statement, and the pairs that have both."""
    truth = {int(p): i for i, (p, l) in enumerate(zip(statements.pair, statements.label)) if l == 1}
    lie = {int(p): i for i, (p, l) in enumerate(zip(statements.pair, statements.label)) if l == 0}
    pairs = sorted(set(truth) & set(lie))
    if not pairs:
        raise ValueError("the split has no (true, false) pairs to compare")
    return truth, lie, pairs


def preference(model: Any, statements: Statements, specs: Sequence[Optional[InterventionSet]],
               remote: Optional[bool] = None, progress: bool = False) -> list[float]:
    """For each spec (None: the model as is), how often the true statement of a (true, false)
    pair gets the higher log-probability; all specs in one plan."""
    truth, lie, pairs = _pairs(statements)
    groups = [g for s in specs for g in _scored(model, statements.text, s, "tokens")]
    results = execute.run(model, groups, max_batch=64, remote=remote, progress=progress,
                          desc="ITI: scoring candidates")
    n, out = len(statements.text), []
    for j in range(len(specs)):
        lp = [float(r[0].sum()) for r in results[j * n:(j + 1) * n]]
        out.append(float(np.mean([lp[truth[p]] > lp[lie[p]] for p in pairs])))
    return out


def _scored(model: Any, texts: Sequence[str], spec: Optional[InterventionSet],
            read: str) -> list[Group]:
    """One group per text, ``spec`` applied at every position; ``read`` = "tokens" (log p of
    each next token) or "dist" (the whole next-token distribution)."""
    ivs = spec.ordered(model) if spec is not None else []
    groups = []
    for row in _rows(model, texts):
        positions = tuple(range(len(row) - 1))
        rd = (Logprobs(0, positions, tuple(row[1:])) if read == "tokens"
              else Distribution(0, positions))
        groups.append(Group([row], ivs, [rd], key=tuple(row)))
    return groups


def statement_logprobs(model: Any, texts: Sequence[str], spec: Optional[InterventionSet] = None,
                       batch_size: int = 64, remote: Optional[bool] = None) -> np.ndarray:
    """Sum of each text's token log-probabilities (after its first token), optionally with
    ``spec`` applied at every position."""
    results = execute.run(model, _scored(model, texts, spec, "tokens"), max_batch=batch_size,
                          remote=remote, progress=False)
    return np.array([float(r[0].sum()) for r in results])


def neutral_cost(model: Any, spec: InterventionSet, texts: Optional[Sequence[str]] = None,
                 remote: Optional[bool] = None) -> dict:
    """Mean next-token cross-entropy on neutral text without and with ``spec``, and the mean
    KL(original || intervened) over positions (one plan, one request remotely)."""
    texts = texts or json.loads(NEUTRAL.read_text())
    plain, steered = _scored(model, texts, None, "dist"), _scored(model, texts, spec, "dist")
    results = execute.run(model, plain + steered, remote=remote, progress=False)
    p = torch.cat([r[0] for r in results[:len(texts)]])
    q = torch.cat([r[0] for r in results[len(texts):]])
    nxt = torch.tensor([t for g in plain for t in g.rows[0][1:]])
    ce = [cross_entropy(token_logprobs(lp, nxt).tolist()) for lp in (p, q)]
    return {"ce_without": ce[0], "ce_with": ce[1], "kl": float(kl(p, q).mean())}


def evaluate(model: Any, spec: InterventionSet, test: Statements, remote: Optional[bool] = None) -> dict:
    """True-vs-false preference on held-out pairs with and without ``spec``, and the cost on
    neutral text."""
    without, with_ = preference(model, test, [None, spec], remote=remote)
    report = {"pairs": len(_pairs(test)[2]), "prefers_true_without": without, "prefers_true_with": with_}
    report.update(neutral_cost(model, spec, remote=remote))
    return report


def generate(model: Any, prompts: Union[str, Sequence[str]], spec: InterventionSet,
             max_new_tokens: int = 40, remote: Optional[bool] = None) -> tuple[list[str], list[str]]:
    """Greedy unsteered and steered continuations of each prompt, in one batched call
    (one request with ``remote=True``)."""
    out = tracer.generation.generate(model, prompts, spec.ordered(model), max_new_tokens,
                                     remote=remote)
    return out.plain, out.steered


def _table(report: dict) -> str:
    return "\n".join([
        f"{'':<22}{'without':>10}{'with ITI':>10}",
        f"{'prefers true (test)':<22}{report['prefers_true_without']:>10.3f}{report['prefers_true_with']:>10.3f}",
        f"{'CE on neutral text':<22}{report['ce_without']:>10.3f}{report['ce_with']:>10.3f}",
        f"{'KL on neutral text':<22}{'':>10}{report['kl']:>10.4f}",
        f"({report['pairs']} held-out pairs)"])


@guarded
def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m recipes.iti") -> int:
    """``python -m recipes.iti fit ...`` / ``python -m recipes.iti generate ...``"""
    fmt = HelpFormatter
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0], formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="probe every head, build and save the intervention", formatter_class=fmt)
    f.add_argument("--data", default=None, help="JSON/CSV file or hub dataset (default: the shipped pairs)")
    f.add_argument("--statement-column", default="statement", help="the data's text column")
    f.add_argument("--label-column", default="label", help="the data's 0/1 truth column")
    f.add_argument("--top-k", type=int, default=None,
                   help=f"heads steered (best validation probes); default: chosen on the validation "
                        f"split from {list(TOP_KS)}")
    f.add_argument("--alpha", type=float, default=None,
                   help=f"strength, in standard deviations of each head's activations along its "
                        f"direction; default: chosen on the validation split from {list(ALPHAS)}")
    f.add_argument("--direction", default="mass_mean", choices=["mass_mean", "probe"],
                   help="mass_mean: mean true minus mean false (the ITI paper's best); probe: the probe's weight")
    f.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                   help="also upload the folder to this Hugging Face repo")
    shared(f, out="iti", layers="layers whose heads may be steered (all are probed)",
           out_help="output folder (config.json + tensors.safetensors, probe_accuracy.png, eval.json)",
           seed_help="seed of the train/validation/test split and the probes")
    g = sub.add_parser("generate", help="unsteered and steered answers to a prompt", formatter_class=fmt)
    g.add_argument("--intervention", required=True, help="a folder or a hub repo id")
    g.add_argument("--prompt", nargs="+", required=True, help="one or more prompts")
    g.add_argument("--max-new-tokens", type=int, default=40, help="tokens generated per prompt")
    shared(g, out=None, out_required=False, model=None,
           out_help="also write generations.json into this folder",
           model_help="default: the model the intervention was fitted on")
    args = parser.parse_args(argv)

    if args.command == "fit":
        model = setup(args)
        data = None if args.data is None else load_statements(args.data, args.statement_column, args.label_column)
        result = run(model, data, args.top_k, args.alpha, args.direction, args.seed, args.model,
                     remote=args.remote,
                     layers=parse_layers(args.layers, tracer.sites.dims_of(model.config).n_layers),
                     progress=True)
        spec, report = result.spec, result.report
        written = result.save(args.out)
        summary = result.to_dict()
        if report["selection"]:
            print("chosen on the validation split (share of pairs preferring the true statement):")
            for row in report["selection"]:
                mark = " <-" if (row["top_k"], row["alpha"]) == (report["top_k"], report["alpha"]) else ""
                print(f"  K={row['top_k']:<3} alpha={row['alpha']:<5g} {row['val_prefers_true']:.3f}{mark}")
        print(f"top-{report['top_k']} heads (layer, head), alpha {report['alpha']:g}: {report['chosen']}")
        if report["alpha"] == 0:
            print("no shift improved the validation preference, so alpha 0 was chosen: the saved "
                  "intervention changes nothing (pass --alpha to force one)")
        print(f"best validation probe accuracy {summary['best_val_acc']:.3f}; chosen heads' mean "
              f"test accuracy {summary['mean_test_acc_of_chosen']:.3f}")
        print(_table(result.evaluation))
        print("wrote " + ", ".join(str(p) for p in written.values()))
        if args.push_to_hub:
            print("pushed:", spec.push_to_hub(args.push_to_hub))
        return 0

    setup(args, load=False)
    spec = tracer.files.load(args.intervention)
    args.model = args.model or spec.meta.get("model") or "smollm2"
    model = load_model(args)
    spec.check(model)
    plain, steered = generate(model, args.prompt, spec, args.max_new_tokens, remote=args.remote)
    for prompt, a, b in zip(args.prompt, plain, steered):
        print(f"prompt:   {prompt}\nwithout:  {a.strip()}\nwith ITI: {b.strip()}\n")
    if args.out:
        path = Path(args.out) / "generations.json"
        with atomic(path) as tmp:
            tmp.write_text(json.dumps([{"prompt": p, "without": a, "with_iti": b}
                                       for p, a, b in zip(args.prompt, plain, steered)], indent=2))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
