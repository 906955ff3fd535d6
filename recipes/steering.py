"""Steering during generation, and interpretability methods judged by intervention.

Reproduces the evaluation of "Towards Unifying Interpretability and Control: Evaluation via
Intervention" (interp_interv) on any supported model, offline on the embedded SmolLM2:
each method (``recipes.lens``) encodes the residual stream at one layer, raises the feature
of a target phrase by ``alpha``, decodes, and the model generates; outputs are judged for
intervention success, coherence and perplexity.

    python -m recipes.steering --method steering --intervention-phrase "San Francisco" \\
        --alpha 0.5 --layer-idx 8 --generation-length 30
    python -m recipes.steering eval --out results/steering

Generation itself is ``tracer.generation.generate``: unsteered and steered continuations of
all prompts in one batched ``generate`` (see that module for the per-step rule).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

import tracer
from tracer import checks, execute
from tracer.files import atomic, writable_dir, writable_file
from tracer.interventions import Intervention
from tracer.metrics import mean_difference, perplexity
from tracer.plan import Group, Logprobs
from tracer.files import InterventionSet, model_info

from . import lens
from .cli import guarded

METHODS = ("logit", "tuned", "sae", "steering", "probing")
PROMPT_TEMPLATE = "Talk about {phrase}. "


def prompts() -> list[str]:
    """The 50 open-ended prompts the project ships (``recipes/data/steering.json``)."""
    return json.loads((lens.DATA / "steering.json").read_text())["prompts"]


def caa_vector(model: Any, positive: Sequence[str], negative: Sequence[str], layer: int) -> torch.Tensor:
    """Mean difference of the stream after ``layer`` at the last token (CAA / ActAdd)."""
    x = lens.mean_last(model, list(positive) + list(negative), layer)  # one plan, one request
    return mean_difference(x[:len(positive)], x[len(positive):])


def save_vector(folder: str | Path, model: Any, vector: torch.Tensor, layer: int,
                alpha: float = 1.0, meta: Optional[dict] = None) -> Path:
    """A steering vector as an InterventionSet folder (config.json + tensors.safetensors)."""
    iv = Intervention("add", f"resid_post.{layer}", params={"vector": vector.float(), "alpha": float(alpha)})
    return InterventionSet([iv], model_info(model), meta or {}).save(folder)


def make_method(model: Any, method: str, layer: int, phrase: str, sae_path: Optional[str] = None,
                progress: bool = False) -> lens.Method:
    """Build (train where needed) one method at ``layer`` for ``phrase``."""
    if method == "logit":
        return lens.LogitLens(model, layer)
    if method == "tuned":
        return lens.TunedLens.train(model, layer, progress=progress)
    if method == "sae":
        return lens.SAE.load(sae_path, layer) if sae_path else lens.SAE.train(model, layer, progress=progress)
    if method == "steering":
        return lens.SteeringVector.fit(model, phrase, layer)
    if method == "probing":
        return lens.Probe.fit(model, phrase, layer)[0]
    raise ValueError(f"unknown method {method!r}; valid methods are {', '.join(METHODS)}")


def run(model: Any, method: Optional[str], phrase: str = "San Francisco", alpha: float = 0.5,
        layer: int = 8, length: int = 30, texts: Optional[Sequence[str]] = None,
        test_clean: bool = False, test_bottleneck: bool = False, prompting: bool = False,
        built: Optional[lens.Method] = None, batch_size: int = 25) -> list[dict]:
    """Generate over the prompt set; one record per prompt with the output text."""
    checks.text("the intervention phrase", phrase)
    checks.finite("alpha", alpha)
    checks.integer("the generation length", length, low=1)
    n_layers = tracer.sites.dims_of(model.config).n_layers
    if not test_clean and not prompting:
        checks.integer("the layer", layer, 0, n_layers - 1)
    texts = checks.texts("prompts", list(texts or prompts()))
    if prompting:
        texts = [PROMPT_TEMPLATE.format(phrase=phrase) + t for t in texts]
    ivs: list = []
    if not (test_clean or prompting):
        m = built or make_method(model, method, layer, phrase)
        ivs = [m.bottleneck()] if test_bottleneck else [m.steer(model, phrase, alpha)]
    records = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i:i + batch_size]
        # fixed-length outputs, as in the paper (an instruct model may otherwise stop at once)
        out = tracer.generation.generate(model, chunk, ivs, length, compare=False, where="all",
                                         min_new_tokens=length)
        records += [{"prompt": p, "output": o} for p, o in zip(chunk, out.steered)]
    return records


# -- judging ------------------------------------------------------------------------

def keyword_success(text: str, phrase: str) -> float:
    """1 when the phrase (or any of its words of 4+ letters) appears, else 0."""
    checks.text("the intervention phrase", phrase)
    low = text.lower()
    words = [w for w in phrase.lower().split() if len(w) >= 4]
    return float(phrase.lower() in low or any(w in low for w in words))


def continuation_logprobs(model: Any, records: Sequence[dict], batch_size: int = 25,
                          remote: Optional[bool] = None) -> list[list[float]]:
    """Per-token log-probs of each output given its prompt, under the unsteered model (one
    plan; the prompt and output are tokenized apart, as they were generated)."""
    tok = model.tokenizer
    groups = []
    for r in records:
        prompt = list(tok(r["prompt"])["input_ids"])
        output = list(tok(r["output"], add_special_tokens=False)["input_ids"])
        positions = tuple(range(len(prompt) - 1, len(prompt) + len(output) - 1))
        groups.append(Group([prompt + output], [], [Logprobs(0, positions, tuple(output))]))
    results = execute.run(model, groups, max_batch=batch_size, remote=remote, progress=False)
    return [r[0].tolist() for r in results]


def fluency(logprobs: Sequence[float]) -> float:
    """Default offline coherence judge: mean token probability of the output under the model,
    in [0, 1] (1 = the model finds every token certain)."""
    return float(sum(math.exp(x) for x in logprobs) / len(logprobs)) if logprobs else 0.0


def evaluate(model: Any, records: Sequence[dict], phrase: str,
             success: Callable[[str, str], float] = keyword_success,
             coherence: Optional[Callable[[str, Sequence[float]], float]] = None) -> dict:
    """Intervention success, coherence and perplexity (under the unsteered model) of outputs.

    ``success(text, phrase)`` and ``coherence(text, logprobs)`` are pluggable judges (an LLM
    judge, a classifier); the defaults run offline.
    """
    lps = continuation_logprobs(model, records)
    succ = [success(r["output"], phrase) for r in records]
    coh = [coherence(r["output"], lp) if coherence else fluency(lp) for r, lp in zip(records, lps)]
    every = [x for lp in lps for x in lp]
    return {"success": sum(succ) / len(succ), "coherence": sum(coh) / len(coh),
            "perplexity": perplexity(every) if every else float("nan"), "n": len(records)}


def sweep(model: Any, methods: Sequence[str], alphas: Sequence[float], phrase: str = "San Francisco",
          layer: int = 8, length: int = 30, texts: Optional[Sequence[str]] = None,
          out: Optional[str | Path] = None, progress: bool = True) -> list[dict]:
    """Every method x alpha (plus the clean and prompting baselines): a table, written as
    CSV + JSON, and a success-vs-perplexity plot, when ``out`` is given."""
    from tqdm.auto import tqdm

    rows = []
    jobs = [("clean", None), ("prompting", None)] + [(m, a) for m in methods for a in alphas]
    built: dict = {}
    for name, alpha in tqdm(jobs, desc="steering eval", disable=not progress):
        if name in ("clean", "prompting"):
            recs = run(model, None, phrase, 0.0, layer, length, texts, test_clean=name == "clean",
                       prompting=name == "prompting")
        else:
            built.setdefault(name, make_method(model, name, layer, phrase))
            recs = run(model, name, phrase, alpha, layer, length, texts, built=built[name])
        rows.append({"method": name, "alpha": alpha, **evaluate(model, recs, phrase),
                     "example": recs[0]["output"]})
    if out is not None:
        write_table(rows, out)
    return rows


def write_table(rows: Sequence[dict], out: str | Path) -> Path:
    """``table.csv``, ``table.json`` and ``success_vs_perplexity.png`` under ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = ["method", "alpha", "success", "coherence", "perplexity", "n", "example"]
    with atomic(out / "table.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows([{k: r.get(k) for k in keys} for r in rows])
    with atomic(out / "table.json") as tmp:
        tmp.write_text(json.dumps(list(rows), indent=2))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["method"] for r in rows):
        pts = [r for r in rows if r["method"] == name]
        ax.plot([r["perplexity"] for r in pts], [r["success"] for r in pts], "o-", label=name)
        for r in pts:
            if r["alpha"] is not None:
                ax.annotate(f"{r['alpha']:g}", (r["perplexity"], r["success"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("perplexity under the unsteered model")
    ax.set_ylabel("intervention success")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic(out / "success_vs_perplexity.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return out


# -- command line --------------------------------------------------------------------

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2", help="model name or path (default: embedded SmolLM2)")
    p.add_argument("--intervention-phrase", default="San Francisco")
    p.add_argument("--layer-idx", type=int, default=8)
    p.add_argument("--generation-length", type=int, default=30)
    p.add_argument("--device", default=None)
    p.add_argument("--remote", action="store_true",
                   help="run on NDIF (host: INTERLACE_NDIF_HOST or nnsight's config)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")


def _load(a: argparse.Namespace) -> Any:
    if a.remote:
        execute.configure()
        return tracer.load(a.model, remote=True)
    return tracer.load(a.model, device=a.device)


@guarded
def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m recipes.steering [--method ...]`` or ``python -m recipes.steering eval ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["eval"]:
        p = argparse.ArgumentParser(prog="python -m recipes.steering eval",
                                    description="success / coherence / perplexity per method x alpha")
        _common(p)
        p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
        p.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 1.0])
        p.add_argument("--out", default="results/steering")
        a = p.parse_args(argv[1:])
        writable_dir(a.out)
        model = _load(a)
        texts = prompts()[: a.limit] if a.limit else None
        rows = sweep(model, a.methods, a.alphas, a.intervention_phrase, a.layer_idx,
                     a.generation_length, texts, a.out)
        for r in rows:
            print(f"{r['method']:10s} alpha={r['alpha']!s:5s} success={r['success']:.2f} "
                  f"coherence={r['coherence']:.3f} perplexity={r['perplexity']:.1f}")
        print(f"wrote {a.out}/table.csv, table.json, success_vs_perplexity.png")
        return 0
    p = argparse.ArgumentParser(prog="python -m recipes.steering", description=__doc__.split("\n\n")[0])
    _common(p)
    p.add_argument("--method", choices=METHODS, default="steering")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="strength, in units of the layer's median stream norm")
    p.add_argument("--test-clean", action="store_true", help="no method, no intervention")
    p.add_argument("--test-bottleneck", action="store_true", help="x -> decode(encode(x)), no intervention")
    p.add_argument("--prompting", action="store_true", help="ask for the phrase in the prompt instead")
    p.add_argument("--sae-path", help="a SAELens-format folder to use instead of training an SAE")
    p.add_argument("--out", help="write the outputs and their scores as JSON here")
    a = p.parse_args(argv)
    if a.out:
        writable_file(a.out)
    model = _load(a)
    texts = prompts()[: a.limit] if a.limit else None
    built = None if a.test_clean or a.prompting else make_method(
        model, a.method, a.layer_idx, a.intervention_phrase, a.sae_path, progress=True)
    recs = run(model, a.method, a.intervention_phrase, a.alpha, a.layer_idx, a.generation_length,
               texts, a.test_clean, a.test_bottleneck, a.prompting, built)
    for r in recs[:5]:
        print(f"{r['prompt']!r} -> {r['output']!r}")
    scores = evaluate(model, recs, a.intervention_phrase)
    print(json.dumps(scores))
    if a.out:
        with atomic(a.out) as tmp:
            tmp.write_text(json.dumps({"args": vars(a), "scores": scores, "outputs": recs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
