"""Metrics, once: log-probabilities, continuation probability, logit difference, KL,
cross-entropy and perplexity, the interchange effect score, one logistic-probe trainer and
one mean-difference vector.

Client side (torch and numpy on tensors the engine returned); nothing here runs in a trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log p(tokens)`` under ``logits`` (``(..., vocab)`` and ``(...)``), in float32."""
    lp = logits.float().log_softmax(-1)
    return lp.gather(-1, tokens.to(lp.device).long()[..., None])[..., 0]


def continuation_prob(logprobs: Sequence[float]) -> float:
    """exp(mean token log-probability): the seed's probability of a continuation."""
    values = np.asarray(list(logprobs), dtype=float)
    if values.size == 0:
        raise ValueError("a continuation needs at least one token")
    return float(np.exp(values.mean()))


def logit_diff(logprobs: np.ndarray) -> np.ndarray:
    """First answer's log-probability minus the second's, over the last axis."""
    logprobs = np.asarray(logprobs)
    if logprobs.shape[-1] < 2:
        raise ValueError("a logit difference needs two answers")
    return logprobs[..., 0] - logprobs[..., 1]


def kl(p_logprobs: torch.Tensor, q_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last axis, from log-probabilities."""
    p = p_logprobs.float()
    return (p.exp() * (p - q_logprobs.float())).sum(-1)


def cross_entropy(logprobs: Sequence[float]) -> float:
    """Mean negative log-probability of the observed tokens."""
    values = np.asarray(list(logprobs), dtype=float)
    if values.size == 0:
        raise ValueError("cross-entropy needs at least one token")
    return float(-values.mean())


def perplexity(logprobs: Sequence[float]) -> float:
    """exp(cross-entropy) of the observed tokens."""
    return math.exp(cross_entropy(logprobs))


def effect_scores(original: np.ndarray, intervened: np.ndarray) -> np.ndarray:
    """Mean over prompts of the total-variation distance between normalized continuation
    probabilities; ``original`` (C, S, 1), ``intervened`` (C, S, H) -> (H,)."""
    p0 = original / original.sum(axis=0, keepdims=True)
    p1 = intervened / intervened.sum(axis=0, keepdims=True)
    return 0.5 * np.abs(p1 - p0).sum(axis=0).mean(axis=0)


def standard_error(per_prompt: np.ndarray) -> np.ndarray:
    """The standard error of the mean over axis 0 (prompts); needs two prompts or more."""
    x = np.asarray(per_prompt, dtype=float)
    if x.shape[0] < 2:
        raise ValueError("a standard error needs at least two prompts")
    return x.std(axis=0, ddof=1) / math.sqrt(x.shape[0])


def bootstrap_interval(per_prompt: np.ndarray, samples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A percentile bootstrap interval of the mean over axis 0 (prompts), per cell: the
    prompts resampled with replacement ``samples`` times from ``numpy``'s generator seeded
    with ``seed`` (the same seed, the same interval)."""
    x = np.asarray(per_prompt, dtype=float)
    n = x.shape[0]
    if n < 2:
        raise ValueError("a bootstrap interval needs at least two prompts")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=samples)     # (samples, n)
    means = (counts @ x.reshape(n, -1)) / n                             # (samples, cells)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return low.reshape(x.shape[1:]), high.reshape(x.shape[1:])


def normalized_effect(patched: np.ndarray, clean: np.ndarray, corrupted: np.ndarray) -> np.ndarray:
    """``(patched - corrupted) / (clean - corrupted)``: 0 = the corrupted run's metric,
    1 = the clean run's (the patching literature's normalized logit difference)."""
    return (np.asarray(patched, float) - corrupted) / (np.asarray(clean, float) - corrupted)


def mean_difference(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean of ``positive`` minus mean of ``negative`` over the first axis (CAA, mass-mean)."""
    if len(positive) == 0 or len(negative) == 0:
        raise ValueError("a mean difference needs examples on both sides")
    return positive.float().mean(0) - negative.float().mean(0)


@dataclass
class Probe:
    """Logistic probes on standardized features: ``logit = ((x - mean) / std) . w + b``.

    ``w`` has the features' shape after the example axis (one probe per leading index,
    e.g. ``(layers, heads, d)``), ``b`` that shape without the last axis.
    """

    w: torch.Tensor
    b: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, *probes)`` logits."""
        return (((x.float() - self.mean) / self.std) * self.w).sum(-1) + self.b

    def accuracy(self, x: torch.Tensor, y: Any, balanced: bool = False) -> np.ndarray:
        """Accuracy of every probe (balanced: mean of the two classes' recalls)."""
        pred = (self.logits(x) > 0).numpy()
        y = np.asarray(y).astype(bool)
        if not balanced:
            return (pred == y.reshape((-1,) + (1,) * (pred.ndim - 1))).mean(0)
        return 0.5 * (pred[y].mean(0) + (~pred[~y]).mean(0))

    def direction(self) -> torch.Tensor:
        """The probes' weights in the raw feature space (``w / std``)."""
        return self.w / self.std


def fit_probe(x: torch.Tensor, y: Any, steps: int = 300, lr: float = 0.05, l2: float = 1e-3,
              balanced: bool = False, seed: int = 0) -> Probe:
    """Logistic-regression probes, one per index of ``x``'s middle axes, trained together
    (Adam on standardized features, L2 ``l2 * |w|^2 / N``).  ``x`` is ``(N, ..., d)``;
    ``balanced`` weights the classes equally."""
    y = torch.as_tensor(np.asarray(y), dtype=torch.float32)
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"probe data: {x.shape[0]} examples but {y.shape[0]} labels")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("probe features contain NaN or inf")
    torch.manual_seed(seed)
    x = x.float()
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    target = y.reshape((-1,) + (1,) * (z.dim() - 2)).expand(z.shape[:-1])
    w = torch.zeros(z.shape[1:], requires_grad=True)
    b = torch.zeros(z.shape[1:-1], requires_grad=True)
    pos_weight = None
    if balanced:
        pos_weight = (y == 0).sum() / (y == 1).sum().clamp(min=1)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        logits = (z * w).sum(-1) + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
        loss = loss + l2 * (w ** 2).sum() / len(y)
        loss.backward()
        opt.step()
    return Probe(w.detach(), b.detach(), mean, std)
