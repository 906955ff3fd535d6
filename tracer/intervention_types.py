"""pyvene-style intervention classes: ``forward(base, source, subspaces) -> new base``.

Each is an ``nn.Module`` taking the selected base values and the matching source values
(both ``(..., embed_dim)``) and returning the replacement.  ``subspaces`` (a list of
dimension indices) limits the edit to those dimensions (of the rotated space for the
rotated ones).  The trainable ones (``RotatedSpaceIntervention``,
``LowRankRotatedSpaceIntervention``, ``BoundlessRotatedSpaceIntervention``,
``AutoencoderIntervention``) learn their parameters through an nnsight trace while the model
stays frozen.  ``Unit`` binds one of them to a site and a selection, inside a trace.

Trace-time module: imports only torch and ``tracer.sites``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from .sites import site as resolve_site


def _dims(subspaces: Any, n: int, device: Any) -> Optional[torch.Tensor]:
    if subspaces is None:
        return None
    return torch.as_tensor(list(subspaces), dtype=torch.long, device=device) % n


def _mix(base: torch.Tensor, source: torch.Tensor, dims: Optional[torch.Tensor]) -> torch.Tensor:
    """``base`` with the dims ``dims`` (all when None) taken from ``source``."""
    source = source.to(base.dtype).expand_as(base)
    if dims is None:
        return source
    out = base.clone()
    out[..., dims] = source[..., dims]
    return out


class BaseIntervention(nn.Module):
    """Common state: ``embed_dim``, an optional constant ``source_representation`` and
    whether a source is needed at all."""

    needs_source = True
    trainable = False

    def __init__(self, embed_dim: Optional[int] = None, source_representation: Any = None,
                 **kwargs: Any):
        super().__init__()
        self.embed_dim = embed_dim
        self.kwargs = dict(kwargs)
        rep = None if source_representation is None else torch.as_tensor(source_representation).detach()
        self.register_buffer("source_representation", rep)

    def init_args(self) -> dict:
        """The constructor arguments that rebuild this intervention (saved as JSON)."""
        return {"embed_dim": self.embed_dim, **self.kwargs}

    def source_of(self, source: Optional[torch.Tensor]) -> torch.Tensor:
        if source is not None:
            return source
        if self.source_representation is None:
            raise ValueError(f"{type(self).__name__} needs a source: pass sources, or "
                             f"source_representations, or give it a source_representation")
        return self.source_representation


class VanillaIntervention(BaseIntervention):
    """Interchange: the base's values (or its ``subspaces`` dims) replaced by the source's."""

    def forward(self, base: torch.Tensor, source: Optional[torch.Tensor] = None,
                subspaces: Any = None) -> torch.Tensor:
        return _mix(base, self.source_of(source), _dims(subspaces, base.shape[-1], base.device))


class AdditionIntervention(BaseIntervention):
    """``base + source`` (on ``subspaces`` dims only, when given)."""

    def forward(self, base, source=None, subspaces=None):
        src = self.source_of(source).to(base.dtype)
        dims = _dims(subspaces, base.shape[-1], base.device)
        if dims is None:
            return base + src
        out = base.clone()
        out[..., dims] = out[..., dims] + src.expand_as(base)[..., dims]
        return out


class SubtractionIntervention(BaseIntervention):
    """``base - source``."""

    def forward(self, base, source=None, subspaces=None):
        src = self.source_of(source).to(base.dtype)
        dims = _dims(subspaces, base.shape[-1], base.device)
        if dims is None:
            return base - src
        out = base.clone()
        out[..., dims] = out[..., dims] - src.expand_as(base)[..., dims]
        return out


class ZeroIntervention(BaseIntervention):
    """Zeros (on ``subspaces`` dims only, when given)."""

    needs_source = False

    def forward(self, base, source=None, subspaces=None):
        return _mix(base, torch.zeros((), dtype=base.dtype, device=base.device),
                    _dims(subspaces, base.shape[-1], base.device))


class CollectIntervention(BaseIntervention):
    """Leaves the base alone; the front end returns the values it saw."""

    needs_source = False

    def forward(self, base, source=None, subspaces=None):
        return base


class SkipIntervention(BaseIntervention):
    """The component's output replaced by its input: the block (or module) is skipped.

    The front end passes the module's input as ``source``.
    """

    def forward(self, base, source=None, subspaces=None):
        return _mix(base, self.source_of(source), _dims(subspaces, base.shape[-1], base.device))


class LambdaIntervention(BaseIntervention):
    """A plain function ``(base, source) -> tensor`` as an intervention."""

    def __init__(self, fn: Callable, embed_dim: Optional[int] = None, **kwargs: Any):
        super().__init__(embed_dim, **kwargs)
        self.fn = fn
        self.needs_source = True

    def forward(self, base, source=None, subspaces=None):
        if source is None and self.source_representation is not None:
            source = self.source_representation
        return self.fn(base, source)


# -- trainable ------------------------------------------------------------------------

def _orthogonal(n: int, k: int) -> nn.Module:
    """An ``n x k`` matrix with orthonormal columns, kept so by parametrization."""
    layer = nn.Linear(n, k, bias=False)
    nn.init.orthogonal_(layer.weight)
    return nn.utils.parametrizations.orthogonal(layer)


class _Rotation(BaseIntervention):
    """A trainable intervention built on ``rotate_layer`` (orthonormal columns)."""

    trainable = True

    @property
    def rotation(self) -> torch.Tensor:
        """``(embed_dim, k)`` with orthonormal columns: rotated = x @ rotation."""
        return self.rotate_layer.weight.T


class RotatedSpaceIntervention(_Rotation):
    """Distributed alignment search: rotate, interchange the first ``interchange_dim``
    rotated dims (or ``subspaces``), rotate back.  ``R`` is orthogonal."""

    def __init__(self, embed_dim: int, interchange_dim: Optional[int] = None, **kwargs: Any):
        super().__init__(embed_dim, interchange_dim=interchange_dim, **kwargs)
        self.interchange_dim = interchange_dim if interchange_dim is not None else embed_dim
        self.rotate_layer = _orthogonal(embed_dim, embed_dim)

    def forward(self, base, source=None, subspaces=None):
        r = self.rotation.to(base.dtype)
        rb, rs = base @ r, self.source_of(source).to(base.dtype) @ r
        dims = _dims(subspaces, base.shape[-1], base.device)
        if dims is None:
            dims = torch.arange(self.interchange_dim, device=base.device)
        mixed = _mix(rb, rs.expand_as(rb), dims)
        return mixed @ r.T


class LowRankRotatedSpaceIntervention(_Rotation):
    """Interchange inside a learned ``low_rank_dimension``-dim subspace (orthonormal basis
    ``B``): ``base + (source - base) @ B @ B.T``."""

    def __init__(self, embed_dim: int, low_rank_dimension: int = 1, **kwargs: Any):
        super().__init__(embed_dim, low_rank_dimension=low_rank_dimension, **kwargs)
        self.rotate_layer = _orthogonal(embed_dim, low_rank_dimension)

    def forward(self, base, source=None, subspaces=None):
        b = self.rotation.to(base.dtype)
        if subspaces is not None:
            b = b[:, _dims(subspaces, b.shape[1], base.device)]
        diff = (self.source_of(source).to(base.dtype) - base) @ b
        return base + diff @ b.T


class BoundlessRotatedSpaceIntervention(_Rotation):
    """Boundless DAS: rotate, then mix base and source by a learned soft mask over the rotated
    dims (``sigmoid((boundary * n - i) / temperature)``), rotate back.  Lower the
    temperature during training (``set_temperature``) to harden the mask."""

    def __init__(self, embed_dim: int, init_boundary: float = 0.5, **kwargs: Any):
        super().__init__(embed_dim, init_boundary=init_boundary, **kwargs)
        self.rotate_layer = _orthogonal(embed_dim, embed_dim)
        self.intervention_boundaries = nn.Parameter(torch.tensor([float(init_boundary)]))
        self.register_buffer("temperature", torch.tensor(50.0))
        self.register_buffer("positions", torch.arange(embed_dim, dtype=torch.float32))

    def set_temperature(self, value: float) -> None:
        self.temperature.fill_(float(value))

    def mask(self) -> torch.Tensor:
        """The soft interchange mask over rotated dims, in [0, 1]."""
        boundary = self.intervention_boundaries.clamp(1e-3, 1.0) * self.embed_dim
        return torch.sigmoid((boundary - self.positions) / self.temperature)

    def forward(self, base, source=None, subspaces=None):
        r = self.rotation.to(base.dtype)
        rb, rs = base @ r, self.source_of(source).to(base.dtype) @ r
        m = self.mask().to(base.dtype)
        return ((1 - m) * rb + m * rs) @ r.T


class AutoencoderIntervention(BaseIntervention):
    """Interchange in the latent space of a small autoencoder: the first ``interchange_dim``
    latents (or ``subspaces``) come from the source.  The reconstruction error of the base is
    kept (``base + dec(z_mixed) - dec(z_base)``), so an empty interchange is the identity."""

    trainable = True

    def __init__(self, embed_dim: int, latent_dim: int = 16, interchange_dim: int = 1, **kwargs: Any):
        super().__init__(embed_dim, latent_dim=latent_dim, interchange_dim=interchange_dim, **kwargs)
        self.interchange_dim = interchange_dim
        self.encoder = nn.Sequential(nn.Linear(embed_dim, latent_dim), nn.ReLU())
        self.decoder = nn.Linear(latent_dim, embed_dim)

    def forward(self, base, source=None, subspaces=None):
        zb = self.encoder(base)
        zs = self.encoder(self.source_of(source).to(base.dtype)).expand_as(zb)
        dims = _dims(subspaces, zb.shape[-1], base.device)
        if dims is None:
            dims = torch.arange(self.interchange_dim, device=base.device)
        return base + self.decoder(_mix(zb, zs, dims)) - self.decoder(zb)


CLASSES = {cls.__name__: cls for cls in (
    VanillaIntervention, AdditionIntervention, SubtractionIntervention, ZeroIntervention,
    CollectIntervention, SkipIntervention, RotatedSpaceIntervention,
    LowRankRotatedSpaceIntervention, BoundlessRotatedSpaceIntervention, AutoencoderIntervention)}


# -- bound to a site, applied inside a trace -------------------------------------------

class Unit:
    """One intervention bound to a site and a selection; ``apply(model)`` runs it inside
    the current trace.  ``flat`` merges the heads of a head site into one vector per position
    (pyvene's ``"pos"`` unit on a head component)."""

    def __init__(self, site: str, intervention: Any, positions: Any = None, heads: Any = None,
                 source: Optional[torch.Tensor] = None, subspaces: Optional[Sequence[int]] = None,
                 flat: bool = False, skip_from: Optional[str] = None):
        self.site, self.intervention, self.positions, self.heads = site, intervention, positions, heads
        self.source, self.subspaces, self.flat, self.skip_from = source, subspaces, flat, skip_from

    def with_positions(self, positions: Any) -> "Unit":
        return Unit(self.site, self.intervention, positions, self.heads, self.source,
                    self.subspaces, self.flat, self.skip_from)

    def apply(self, model: Any, rows: Any = None) -> torch.Tensor:
        """Edit the site; returns the base values the intervention saw (before editing)."""
        source = self.source
        if self.skip_from is not None:  # the module's input, a raw-path site
            source = resolve_site(model, f"{self.skip_from}.input").read(self.positions)
        s = resolve_site(model, self.site)
        seen = []

        def fn(x: torch.Tensor) -> torch.Tensor:
            seen.append(x)
            shape = x.shape
            if self.flat and x.dim() == 4:
                x = x.flatten(-2)
            src = source
            if src is not None and self.flat and src.dim() == 4:
                src = src.flatten(-2)
            new = self.intervention(x, src, self.subspaces)
            return new.reshape(shape) if new.shape != shape and new.numel() == x.numel() else new

        s.edit(fn, self.positions, self.heads, rows)
        return seen[0]
