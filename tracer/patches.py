"""The trace-time half of batching: apply compiled patches, read log-probabilities.

Runs inside traces, locally and on NDIF (shipped by value), so it imports only torch and
``tracer.sites``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .sites import Site


class SitePatches:
    """All patches at one site in one batch, as index tensors (padded positions)."""

    def __init__(self, site: Site, copy_dst: Optional[tuple] = None, copy_src: Optional[tuple] = None,
                 add_idx: Optional[tuple] = None, add_val: Optional[torch.Tensor] = None):
        self.site, self.copy_dst, self.copy_src = site, copy_dst, copy_src
        self.add_idx, self.add_val = add_idx, add_val


def apply_patches(compiled: Sequence[SitePatches]) -> None:
    """Apply every site's additions, then its copies, visiting sites in execution order."""
    for sp in compiled:
        x = sp.site.tensor()
        if sp.add_idx is not None:
            idx = tuple(i.to(x.device) for i in sp.add_idx)
            x[idx] = x[idx] + sp.add_val.to(device=x.device, dtype=x.dtype)
        if sp.copy_dst is not None:
            dst = tuple(i.to(x.device) for i in sp.copy_dst)
            src = tuple(i.to(x.device) for i in sp.copy_src)
            x[dst] = x[src]


def read_logprobs(logits: torch.Tensor, readout: dict) -> torch.Tensor:
    """Log-probabilities ``(rows, K)`` of the readout tokens from the kept logits."""
    dev = logits.device
    rows, pos = readout["rows"].to(dev), readout["pos"].to(dev)
    picked = logits[rows, pos].float().log_softmax(-1)
    return picked.gather(-1, readout["tokens"].to(dev)[..., None])[..., 0]
