"""Attribution patching vs exact patching on SmolLM2: rank correlations and speed.

For the capital prompts (resid_pre, every layer x position, log P(" Rome")) and one IOI pair
(head_out, head_q and head_k: every layer x head, logit(IO) - logit(S)) it runs the exact
sweep (recipes.interchange.sweep, exact reuse) and the estimates (recipes.attribution: plain
AtP, GradDrop, and on query and key heads the QK fix and AtP* = both), and prints each estimator's Spearman rank correlation with the exact
effects (signed for AtP; magnitudes for both), how many of the exact top-10 cells it ranks in
its top 10, and its time as a ratio to the exact sweep.

    python benchmarks/attribution.py [--model smollm2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tracer
from recipes import attribution, interchange


def _rank(a: np.ndarray, b: np.ndarray) -> float:
    return attribution._spearman(a.ravel(), b.ravel())


def compare(model, label, base, source, answers, site, metric, heads):
    start = time.perf_counter()
    exact = interchange.sweep(model, base, source, answers, site=site, metric=metric,
                              heads="each" if heads else None, progress=False)
    t_exact = time.perf_counter() - start
    shift = exact.values - exact.baselines["base"]
    top = set(np.argsort(-np.abs(shift), axis=None)[:10].tolist())
    print(f"{label}: exact sweep {t_exact:.1f} s, effects {shift.min():+.2f}..{shift.max():+.2f}")
    qk = site in ("head_q", "head_k")
    for method in attribution.METHODS if qk else ("atp", "gradrop"):
        start = time.perf_counter()
        est = attribution.attribute(model, base, source, answers, site=site, metric=metric,
                                    method=method, heads=heads).values
        t = time.perf_counter() - start
        signed = _rank(est, shift) if method in ("atp", "qk") else float("nan")
        mags = _rank(np.abs(est), np.abs(shift))
        hits = len(top & set(np.argsort(-np.abs(est), axis=None)[:10].tolist()))
        print(f"  {method:<8} {t:6.2f} s ({t / t_exact:.2f}x exact)  spearman signed {signed:+.2f}  "
              f"|.| {mags:+.2f}  top-10 overlap {hits}/10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args()
    model = tracer.load(args.model)
    compare(model, "capital, resid_pre", "The capital of Spain is", "The capital of Italy is",
            [" Rome"], "resid_pre", "logprob", False)
    bases, sources, answers = interchange.ioi()
    for site in ("head_out", "head_q", "head_k"):
        compare(model, f"IOI pair 0, {site}", bases[0], sources[0], answers[0], site,
                "logit_diff", True)


if __name__ == "__main__":
    main()
