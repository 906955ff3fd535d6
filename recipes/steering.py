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
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

import tracer
from tracer import checks, execute
from tracer.files import atomic, writable_dir
from tracer.interventions import Intervention
from tracer.metrics import mean_difference, perplexity
from tracer.plan import Group, Logprobs
from tracer.files import InterventionSet, model_info

from . import lens
from .cli import HelpFormatter, guarded, load_model, normalize, setup, shared
from .results import SteeringRun, SteeringTable

METHODS = ("logit", "tuned", "sae", "steering", "probing")
PROMPT_TEMPLATE = "Talk about {phrase}. "


OUTPUTS = "outputs.json"  # what steer --out DIR writes and eval reads


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
                progress: bool = False, path: Optional[str] = None) -> lens.Method:
    """Build (train where needed) one method at ``layer`` for ``phrase``, or load it from
    ``path`` (a folder ``save_method`` wrote, or a SAELens folder): trained once, reused."""
    path = path or sae_path
    if path:
        built = lens.load_method(path, model, layer)
        if built.name != method:
            raise ValueError(f"{path} holds a {built.name!r} method, not {method!r}")
        if built.layer != layer:
            raise ValueError(f"{path} was made at layer {built.layer}, not --layer-idx {layer}")
        return built
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
        built: Optional[lens.Method] = None, batch_size: int = 25, progress: bool = False) -> list[dict]:
    """Generate over the prompt set; one record per prompt with the output text (a progress
    bar over the batches of ``batch_size`` prompts when ``progress``)."""
    from tqdm.auto import tqdm

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
    for i in tqdm(range(0, len(texts), batch_size), desc=f"steer: generating {len(texts)} outputs",
                  unit="batch", disable=not progress):
        chunk = texts[i:i + batch_size]
        # fixed-length outputs, as in the paper (an instruct model may otherwise stop at once)
        out = tracer.generation.generate(model, chunk, ivs, length, compare=False, where="all",
                                         min_new_tokens=length)
        records += [{"prompt": p, "output": o} for p, o in zip(chunk, out.steered)]
    return records


def steer(model: Any, method: Optional[str], phrase: str = "San Francisco", alpha: float = 0.5,
          layer: int = 8, length: int = 30, texts: Optional[Sequence[str]] = None,
          test_clean: bool = False, test_bottleneck: bool = False, prompting: bool = False,
          built: Optional[lens.Method] = None, args: Optional[dict] = None,
          progress: bool = False) -> SteeringRun:
    """One steering run judged: the outputs of ``run`` and their ``evaluate`` scores as a
    ``SteeringRun`` (``save(dir)`` writes outputs.json, which ``interlace eval`` rescores)."""
    records = run(model, method, phrase, alpha, layer, length, texts, test_clean, test_bottleneck,
                  prompting, built, progress=progress)
    settings = {"method": method, "intervention_phrase": phrase, "alpha": alpha, "layer_idx": layer,
                "generation_length": length, "test_clean": test_clean,
                "test_bottleneck": test_bottleneck, "prompting": prompting, **(args or {})}
    return SteeringRun(settings, evaluate(model, records, phrase), records)


# -- judging ------------------------------------------------------------------------

def keyword_match(text: str, phrase: str) -> Optional[str]:
    """What of the phrase ``text`` contains as whole words, case-insensitively: the phrase
    itself, else the first of its words found; None when neither appears."""
    import re

    checks.text("the intervention phrase", phrase)
    for candidate in [phrase.strip()] + phrase.split():
        if re.search(r"(?<!\w)" + re.escape(candidate) + r"(?!\w)", text, flags=re.IGNORECASE):
            return candidate
    return None


def keyword_success(text: str, phrase: str) -> float:
    """1 when the phrase or any of its words appears (whole words, any case) in an output
    that is not degenerate (" San San San ..." names the phrase but is no success), else 0."""
    return float(keyword_match(text, phrase) is not None and not degenerate(text))


def degenerate(text: str) -> bool:
    """A degenerate output: four words or more, one word making up half of them or more
    (" San San San ...", "wis wis wis")."""
    words = [w.strip(".,;:!?\"'").lower() for w in text.split()]
    words = [w for w in words if w]
    return len(words) >= 4 and max(words.count(w) for w in set(words)) * 2 >= len(words)


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
    if not records:
        raise ValueError("no outputs to evaluate")
    lps = continuation_logprobs(model, records)
    succ = [success(r["output"], phrase) for r in records]
    coh = [coherence(r["output"], lp) if coherence else fluency(lp) for r, lp in zip(records, lps)]
    every = [x for lp in lps for x in lp]
    matched = [keyword_match(r["output"], phrase) for r in records]
    return {"success": sum(succ) / len(succ), "coherence": sum(coh) / len(coh),
            "perplexity": perplexity(every) if every else float("nan"), "n": len(records),
            # which part of the phrase the default judge found, and the outputs that repeat one word
            "matched_phrase": sum(m == phrase.strip() for m in matched),
            "matched_word": sum(m is not None and m != phrase.strip() for m in matched),
            "degenerate": sum(degenerate(r["output"]) for r in records)}


def sweep(model: Any, methods: Sequence[str], alphas: Sequence[float], phrase: str = "San Francisco",
          layer: int = 8, length: int = 30, texts: Optional[Sequence[str]] = None,
          out: Optional[str | Path] = None, progress: bool = True) -> SteeringTable:
    """Every method x alpha (plus the clean and prompting baselines): a ``SteeringTable``
    (``.rows``; ``save(dir)``: CSV + JSON and a success-vs-perplexity plot), saved into
    ``out`` when given.  Each method is built (trained, with its own progress bar) once for
    all alphas.  With ``out``, every finished row is kept in ``out/.partial.json`` as it
    comes, so an interrupted run resumes from the rows it finished (same settings only)."""
    from tqdm.auto import tqdm

    name = tracer.models.display_name(model)
    settings = {"model": name, "phrase": phrase, "layer": layer, "length": length,
                "texts": list(texts) if texts is not None else None}
    partial = None if out is None else writable_dir(out) / ".partial.json"
    done = _finished_rows(partial, settings)
    rows = []
    jobs = [("clean", None), ("prompting", None)] + [(m, a) for m in methods for a in alphas]
    built: dict = {}
    for method, alpha in tqdm(jobs, desc="steering eval", disable=not progress):
        if (method, alpha) in done:
            rows.append(done[(method, alpha)])
            continue
        if method in ("clean", "prompting"):
            recs = run(model, None, phrase, 0.0, layer, length, texts, test_clean=method == "clean",
                       prompting=method == "prompting")
        else:
            if method not in built:  # trained once per method (setdefault would retrain per alpha)
                built[method] = make_method(model, method, layer, phrase, progress=progress)
            recs = run(model, method, phrase, alpha, layer, length, texts, built=built[method])
        rows.append({"method": method, "alpha": alpha, **evaluate(model, recs, phrase),
                     "example": recs[0]["output"]})
        if partial is not None:
            with atomic(partial) as tmp:
                tmp.write_text(json.dumps({"settings": settings, "rows": rows}))
    table = SteeringTable(rows, f"{name}: steering toward {phrase!r} at layer {layer}")
    if out is not None:
        table.save(out)
        partial.unlink(missing_ok=True)  # complete: nothing to resume
    return table


def _finished_rows(partial: Optional[Path], settings: dict) -> dict:
    """The rows an interrupted run with the same settings finished, by (method, alpha)."""
    if partial is None or not partial.is_file():
        return {}
    try:
        saved = json.loads(partial.read_text())
        if saved.get("settings") != settings:
            return {}
        return {(r["method"], r["alpha"]): r for r in saved["rows"]}
    except (ValueError, KeyError, TypeError):
        return {}  # a damaged partial file: start over


# -- command line --------------------------------------------------------------------

def save_method(built: lens.Method, folder: str | Path, model: Any) -> Path:
    """Save a trained method for ``--method-path`` (the logit lens has nothing to save)."""
    if isinstance(built, lens.SAE):
        return built.save(folder)
    if isinstance(built, (lens.TunedLens, lens.SteeringVector, lens.Probe)):
        return built.save(folder, model)
    raise ValueError(f"the {built.name!r} method has nothing to save (it is not trained)")


def _common(p: argparse.ArgumentParser, out: Optional[str], out_help: str) -> None:
    """The steering steps' options (one layer each: ``--layer-idx``, seed 002's name) and the
    shared ones."""
    p.add_argument("--intervention-phrase", default="San Francisco", help="the feature to raise")
    p.add_argument("--layer-idx", type=int, default=8, help="layer whose output stream is steered")
    p.add_argument("--generation-length", type=int, default=30, help="new tokens per prompt")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts (default: all 50)")
    shared(p, out=out, out_help=out_help)


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=HelpFormatter)


def _seed_inputs(p: argparse.ArgumentParser, method: Optional[str] = None, run: bool = False) -> None:
    """The options seed 002 passes to every script (its steering_vector.py, probing.py and
    eval_outputs.py take multitoken_generation.py's inputs): accepted, and checked where the
    step uses them."""
    g = p.add_argument_group("seed 002's shared inputs")
    g.add_argument("--method", choices=METHODS, default=method,
                   help="the method of the run (fitting: must be this step's)" if method else
                        "the run's method: checked against the outputs' own")
    g.add_argument("--alpha", type=float, default=None,
                   help="the run's strength: fitting does not use it; scoring checks it against the outputs'")
    if run:
        g.add_argument("--layer-idx", type=int, default=None, help="the run's layer: checked against the outputs'")
        g.add_argument("--generation-length", type=int, default=None,
                       help="the run's new tokens per prompt: checked against the outputs'")
        for flag in ("--test-clean", "--test-bottleneck", "--prompting"):
            g.add_argument(flag, action="store_true", help=f"the run's {flag}: checked against the outputs'")


SEED_CHECKED = ("method", "alpha", "layer_idx", "generation_length", "test_clean", "test_bottleneck",
                "prompting")


def _check_run(a: argparse.Namespace, run_args: dict, path: Path) -> None:
    """Seed 002's inputs given to ``eval`` must be those the outputs were generated with."""
    for key in SEED_CHECKED:
        given = getattr(a, key, None)
        if given is None or given is False:
            continue
        if key in run_args and run_args[key] != given:
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"{path} holds outputs generated with {flag} {run_args[key]!r}, not {given!r}: "
                             f"score the outputs of the run these options describe")


def _fit(argv: Sequence[str], prog: str, kind: str) -> int:
    """``vector`` / ``probe``: fit on the shipped contrast texts and save the folder."""
    p = _parser(prog, f"fit a {'steering vector (CAA: mean difference)' if kind == 'steering' else 'probe'} "
                      f"for the phrase at one layer and save it (use it with steer --method-path)")
    _common(p, None, "folder to write (config.json + tensors.safetensors)")
    _seed_inputs(p, method=kind)
    a = p.parse_args(argv)
    if a.method != kind:
        raise ValueError(f"--method {a.method}: this step fits the {kind!r} method; use "
                         f"{'probe' if kind == 'probing' else 'steering-vector'} for {a.method!r}"
                         if a.method in ("steering", "probing") else
                         f"--method {a.method}: this step fits the {kind!r} method (the lenses and "
                         f"SAEs are built by steer itself)")
    model = setup(a)
    if kind == "steering":
        built, extra = lens.SteeringVector.fit(model, a.intervention_phrase, a.layer_idx), ""
        built.save(a.out, model)
    else:
        built, acc = lens.Probe.fit(model, a.intervention_phrase, a.layer_idx)
        built.save(a.out, model, {"phrase": a.intervention_phrase, "heldout_balanced_accuracy": acc})
        extra = f"; held-out balanced accuracy {acc:.3f} (chance 0.5)"
    print(f"wrote {a.out} ({kind} at layer {a.layer_idx} for {a.intervention_phrase!r}{extra})")
    return 0


def _score(argv: Sequence[str], prog: str) -> int:
    """``score``: judge the outputs a ``steer --out`` run saved, without generating again."""
    p = _parser(prog, "score saved outputs (a steer --out JSON) for success, coherence and "
                      "perplexity without regenerating")
    p.add_argument("outputs", nargs="?", default="results/steer",
                   help="the folder steer --out wrote (or its outputs.json); default: steer's own "
                        "default folder, so seed 002's eval_outputs.py inputs work as given")
    p.add_argument("--intervention-phrase", default=None, help="default: the run's phrase")
    _seed_inputs(p, run=True)
    shared(p, out=None, model=None, out_help="folder for scores.json (default: beside the outputs)",
           model_help="default: the model the outputs were generated with", out_required=False)
    a = p.parse_args(argv)
    if a.out is None:
        a.out = str(Path(a.outputs) if Path(a.outputs).suffix != ".json" else Path(a.outputs).parent)
    setup(a, load=False)
    path = Path(a.outputs) / OUTPUTS if Path(a.outputs).is_dir() else Path(a.outputs)
    try:
        saved = json.loads(path.read_text())
        records, run_args = saved["outputs"], saved.get("args", {})
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{a.outputs} is not a steer --out folder ({OUTPUTS} with 'outputs'): {error}") from None
    bad = [i for i, r in enumerate(records if isinstance(records, list) else [None])
           if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("prompt", "output"))]
    if not records or bad or not isinstance(run_args, dict):
        raise ValueError(f"{path}: 'outputs' must be a non-empty list of records with a 'prompt' and "
                         f"an 'output' string (as steer --out writes); record(s) {bad[:5]} are not")
    _check_run(a, run_args, path)
    a.model = a.model or run_args.get("model") or "smollm2"
    phrase = a.intervention_phrase or run_args.get("intervention_phrase") or "San Francisco"
    scores = evaluate(load_model(a), records, phrase)
    print(json.dumps(scores))
    with atomic(Path(a.out) / "scores.json") as tmp:
        tmp.write_text(json.dumps({"outputs_file": str(path), "phrase": phrase, "scores": scores}, indent=2))
    print(f"wrote {Path(a.out) / 'scores.json'}")
    return 0


def _eval(argv: Sequence[str], prog: str) -> int:
    p = _parser(prog, "success / coherence / perplexity per method x alpha")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods compared")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                   help="strengths, in units of the layer's median stream norm")
    _common(p, "results/steering", "output folder (table.csv, table.json, success_vs_perplexity.png)")
    a = p.parse_args(argv)
    model = setup(a)
    texts = prompts()[: a.limit] if a.limit else None
    rows = sweep(model, a.methods, a.alphas, a.intervention_phrase, a.layer_idx,
                 a.generation_length, texts, a.out).rows
    for r in rows:
        print(f"{r['method']:10s} alpha={r['alpha']!s:5s} success={r['success']:.2f} "
              f"coherence={r['coherence']:.3f} perplexity={r['perplexity']:.1f}")
    print(f"wrote {a.out}/table.csv, table.json, success_vs_perplexity.png")
    return 0


@guarded
def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m recipes.steering") -> int:
    """``python -m recipes.steering [--method ...]``, or its steps ``eval`` (every method x
    alpha), ``vector`` / ``probe`` (fit and save), ``score`` (judge saved outputs)."""
    argv = normalize(list(sys.argv[1:] if argv is None else argv))  # seed 002's spellings too
    # under interlace each step has its own name already ("interlace steering-vector")
    name = (lambda step: prog) if prog.startswith("interlace") else (lambda step: f"{prog} {step}")
    steps = {"eval": lambda rest: _eval(rest, name("eval")),
             "vector": lambda rest: _fit(rest, name("vector"), "steering"),
             "probe": lambda rest: _fit(rest, name("probe"), "probing"),
             "score": lambda rest: _score(rest, name("score"))}
    if argv[:1] and argv[0] in steps:
        return steps[argv[0]](argv[1:])
    p = _parser(prog, __doc__.split("\n\n")[0])
    p.add_argument("--method", choices=METHODS, default="steering", help="interpretability method")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="strength, in units of the layer's median stream norm (seed 002's raw "
                        "alpha is in the method's feature units; see --alpha-units)")
    p.add_argument("--alpha-units", choices=["norm", "raw"], default="norm",
                   help="norm: alpha x median stream norm along the unit feature direction; raw: "
                        "alpha x the feature's own direction (decode(e_f) - decode(0)), as seed 002")
    p.add_argument("--test-clean", action="store_true", help="no method, no intervention")
    p.add_argument("--test-bottleneck", action="store_true", help="x -> decode(encode(x)), no intervention")
    p.add_argument("--prompting", action="store_true", help="ask for the phrase in the prompt instead")
    p.add_argument("--method-path", "--sae-path", dest="method_path", default=None,
                   help="a saved method to use instead of training one: a folder --save-method "
                        "(or vector / probe) wrote, or a SAELens SAE folder")
    p.add_argument("--save-method", default=None, help="save the trained method to this folder")
    _common(p, "results/steer", f"output folder: {OUTPUTS} (the run's options, outputs and scores; "
                                "interlace eval scores it again)")
    a = p.parse_args(argv)
    if a.save_method:
        writable_dir(a.save_method)
    if a.method_path and (Path(a.method_path) / "sae_weights.safetensors").is_file():
        lens.SAE.load(a.method_path, a.layer_idx)  # a bad SAE folder is refused before the model loads
    model = setup(a)
    texts = prompts()[: a.limit] if a.limit else None
    built = None if a.test_clean or a.prompting else make_method(
        model, a.method, a.layer_idx, a.intervention_phrase, progress=True, path=a.method_path)
    if built is not None and a.save_method:
        print(f"saved the {built.name} method to {save_method(built, a.save_method, model)}")
    alpha = a.alpha
    if built is not None and a.alpha_units == "raw":  # the same edit, in our units
        alpha = a.alpha * float(built.direction(model, a.intervention_phrase).float().norm()) / \
            float(lens.stream_norm(model, a.layer_idx))
    result = steer(model, a.method, a.intervention_phrase, alpha, a.layer_idx, a.generation_length,
                   texts, a.test_clean, a.test_bottleneck, a.prompting, built, args=vars(a),
                   progress=True)
    for r in result.outputs[:5]:
        print(f"{r['prompt']!r} -> {r['output']!r}")
    print(json.dumps(result.scores))
    print(f"wrote {result.save(a.out)['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
