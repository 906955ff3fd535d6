"""Edge scores and circuits as data: what ``recipes.circuits`` finds and checks.

``EdgeScores`` holds every edge's score (NPZ + JSON); ``top(k)`` / ``threshold(t)`` choose a
``Circuit``: edges with their scores, saved as ``circuit.json`` (format and version checked)
and drawn as a layered graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from tracer import checks
from tracer.files import atomic, writable_dir
from tracer.graph import Graph

from .plotting import circuit_graph
from .results import Result

FORMAT, VERSION = "interlace-circuit", 1


@dataclass
class EdgeScores(Result):
    """Every edge's score: ``values[i, j]`` for sender ``senders[i]`` and receiver
    ``receivers[j]`` (NaN where no edge joins them), the mean over ``n_pairs`` pairs."""

    values: np.ndarray
    senders: list
    receivers: list
    meta: dict = field(default_factory=dict)
    n_pairs: int = 1
    name = "scores"

    @property
    def valid(self) -> np.ndarray:
        """Where an edge exists."""
        return ~np.isnan(self.values)

    def edges(self) -> list[tuple[str, str, float]]:
        """Every edge as (sender, receiver, score), the largest |score| first."""
        i, j = np.nonzero(self.valid)
        order = np.argsort(-np.abs(self.values[i, j]), kind="stable")
        return [(self.senders[i[k]], self.receivers[j[k]], float(self.values[i[k], j[k]])) for k in order]

    def top(self, k: int) -> "Circuit":
        """The circuit of the ``k`` edges with the largest |score|."""
        every = self.edges()
        checks.integer("the number of edges", k, 0, len(every))
        return Circuit(every[:k], self._circuit_meta(f"top {k}"))

    def threshold(self, t: float) -> "Circuit":
        """The circuit of the edges with |score| >= ``t``."""
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not np.isfinite(t) or t < 0:
            raise ValueError(f"threshold must be a finite number >= 0, got {t!r}")
        return Circuit([e for e in self.edges() if abs(e[2]) >= t], self._circuit_meta(f"|score| >= {t:g}"))

    def _circuit_meta(self, chosen: str) -> dict:
        keep = ("model", "method", "metric", "steps", "n_layers", "n_heads", "n_kv_heads")
        return {**{k: self.meta[k] for k in keep if k in self.meta}, "chosen": chosen,
                "of_edges": int(self.valid.sum())}

    def to_dict(self) -> dict:
        return {"meta": self.meta, "n_pairs": self.n_pairs, "edges": int(self.valid.sum()),
                "senders": self.senders, "receivers": self.receivers,
                "strongest": [list(e) for e in self.edges()[:20]]}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"values": self.values, "senders": np.array(self.senders),
                "receivers": np.array(self.receivers)}

    @classmethod
    def load(cls, path: Union[str, Path]) -> "EdgeScores":
        """Scores saved by ``save`` (``scores.npz`` beside ``scores.json``, or a folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / f"{cls.name}.npz"
        if not path.is_file():
            raise ValueError(f"no such scores file: {path}")
        with np.load(path, allow_pickle=False) as z:
            values, senders, receivers = z["values"], [str(s) for s in z["senders"]], [str(r) for r in z["receivers"]]
        meta, n = {}, 1
        side = path.with_suffix(".json")
        if side.is_file():
            info = json.loads(side.read_text())
            meta, n = info.get("meta", {}), int(info.get("n_pairs", 1))
        if values.shape != (len(senders), len(receivers)):
            raise ValueError(f"{path}: values {values.shape} do not match {len(senders)} senders and "
                             f"{len(receivers)} receivers")
        return cls(values, senders, receivers, meta, n)


def node_of(name: str) -> str:
    """The node a sender or receiver name belongs to (``a3.h1<q>`` -> ``a3.h1``)."""
    return name.split("<", 1)[0]


@dataclass
class Circuit:
    """A set of edges (sender, receiver, score), the largest |score| first, and how they
    were chosen (``meta``)."""

    edges: list
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.edges = [(str(s), str(r), float(v)) for s, r, v in self.edges]

    def __len__(self) -> int:
        return len(self.edges)

    @property
    def nodes(self) -> list[str]:
        """The nodes the edges touch, in first-seen order."""
        out: dict = {}
        for s, r, _ in self.edges:
            out.setdefault(node_of(s), None)
            out.setdefault(node_of(r), None)
        return list(out)

    def mask(self, g: Graph) -> torch.Tensor:
        """The circuit's edges as a (senders, receivers) boolean mask of graph ``g``; an edge
        the graph does not have is an error naming it."""
        s_index = {n: i for i, n in enumerate(g.senders)}
        r_index = {n: i for i, n in enumerate(g.receivers)}
        out = torch.zeros(g.shape, dtype=torch.bool)
        for s, r, _ in self.edges:
            if s not in s_index or r not in r_index or not bool(g.valid[s_index[s], r_index[r]]):
                raise ValueError(f"edge {s} -> {r} is not an edge of this model's graph (senders such "
                                 f"as {g.senders[1]!r}, receivers such as {g.receivers[0]!r}, the "
                                 f"sender before the receiver)")
            out[s_index[s], r_index[r]] = True
        return out

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "meta": self.meta,
                "edges": [{"sender": s, "receiver": r, "score": v} for s, r, v in self.edges]}

    def save(self, folder: Union[str, Path]) -> Path:
        """Write ``folder/circuit.json`` (all or nothing); returns its path."""
        path = writable_dir(folder, "the circuit folder") / "circuit.json"
        with atomic(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, source: Union[str, Path]) -> "Circuit":
        """A circuit saved by ``save`` (its folder, or the ``circuit.json`` file)."""
        path = Path(source)
        if path.is_dir():
            path = path / "circuit.json"
        if not path.is_file():
            raise ValueError(f"no such circuit: {path} (a folder with circuit.json)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not JSON: {error}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a circuit file (format {FORMAT!r})")
        if data.get("version") != VERSION:
            raise ValueError(f"{path}: circuit format version {data.get('version')!r}; this Interlace "
                             f"reads version {VERSION}")
        edges = []
        for i, e in enumerate(data.get("edges", [])):
            try:
                edges.append((e["sender"], e["receiver"], float(e["score"])))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path}: edge {i} is not {{sender, receiver, score}}") from None
        return cls(edges, dict(data.get("meta", {})))

    def plot(self, path: Union[str, Path], title: Optional[str] = None) -> Path:
        """The circuit as a layered graph PNG: input at the top, logits at the bottom, an
        arrow per edge, its width by |score|, red positive, blue negative."""
        m = self.meta
        return circuit_graph(self.edges, int(m.get("n_layers", 0)), int(m.get("n_heads", 0)),
                             int(m.get("n_kv_heads", 0)), path,
                             title or f"circuit: {len(self.edges)} edges ({m.get('chosen', '')}), "
                                      f"{m.get('method', '')} on {m.get('metric', '')}")


