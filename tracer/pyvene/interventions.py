"""pyvene-style intervention classes: ``forward(base, source, subspaces) -> new base``.

Each is an ``nn.Module`` taking the selected base values and the matching source values
(both ``(..., embed_dim)``) and returning the replacement.  ``subspaces`` (a list of
dimension indices) limits the edit to those dimensions (of the rotated space for the
rotated ones).  The trainable ones (``RotatedSpaceIntervention``,
``LowRankRotatedSpaceIntervention``, ``BoundlessRotatedSpaceIntervention``,
``AutoencoderIntervention``) learn their parameters through an nnsight trace while the model
stays frozen.  Each is the ``kind`` of a ``tracer.interventions.Intervention`` record,
which binds it to a site and a selection inside a trace.

Trace-time module: imports only torch and ``tracer.interventions``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from ..interventions import subspace


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


class TrainableIntervention(BaseIntervention):
    """Base for custom trainable interventions (pyvene's name): define ``__init__`` (calling
    ``super().__init__(embed_dim=..., **kwargs)``) and ``forward(base, source)`` or
    ``forward(base, source, subspaces)``; its parameters train with ``train_alignment``."""

    trainable = True


class DistributedRepresentationIntervention(BaseIntervention):
    """pyvene's marker for interventions in a learned, distributed space (mix it in)."""

    is_repr_distributed = True


class SourcelessIntervention(BaseIntervention):
    """Base for custom interventions that need no source (pyvene's name)."""

    needs_source = False


class VanillaIntervention(BaseIntervention):
    """Interchange: the base's values (or its ``subspaces`` dims) replaced by the source's."""

    def forward(self, base: torch.Tensor, source: Optional[torch.Tensor] = None,
                subspaces: Any = None) -> torch.Tensor:
        return subspace(base, self.source_of(source), subspaces)


class AdditionIntervention(BaseIntervention):
    """``base + source`` (on ``subspaces`` dims only, when given)."""

    def forward(self, base, source=None, subspaces=None):
        return subspace(base, base + self.source_of(source).to(base.dtype), subspaces)


class SubtractionIntervention(BaseIntervention):
    """``base - source``."""

    def forward(self, base, source=None, subspaces=None):
        return subspace(base, base - self.source_of(source).to(base.dtype), subspaces)


class ZeroIntervention(BaseIntervention):
    """Zeros (on ``subspaces`` dims only, when given)."""

    needs_source = False

    def forward(self, base, source=None, subspaces=None):
        return subspace(base, torch.zeros((), dtype=base.dtype, device=base.device), subspaces)


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
        return subspace(base, self.source_of(source), subspaces)


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
        dims = subspaces
        if dims is None:
            dims = torch.arange(self.interchange_dim, device=base.device)
        mixed = subspace(rb, rs.expand_as(rb), dims)
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
            b = b[:, subspaces]
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
        dims = subspaces
        if dims is None:
            dims = torch.arange(self.interchange_dim, device=base.device)
        return base + self.decoder(subspace(zb, zs, dims)) - self.decoder(zb)


class HeadsIntervention(BaseIntervention):
    """Apply ``inner`` to the chosen heads of a flattened head component (head-wise
    InterventionSets, e.g. ITI, loaded into the front end)."""

    needs_source = False

    def __init__(self, inner: BaseIntervention, heads: list, head_dim: int):
        super().__init__(None)
        self.inner, self.heads, self.head_dim = inner, heads, head_dim

    def forward(self, base, source=None, subspaces=None):
        per_head = base.unflatten(-1, (-1, self.head_dim))
        out = per_head.clone()
        idx = torch.tensor(self.heads, device=base.device)
        out[..., idx, :] = self.inner(per_head[..., idx, :], None)
        return out.flatten(-2)


def rebuild(klass: type, init: dict, state: dict, plain: bool = False) -> BaseIntervention:
    """An intervention rebuilt from its class, constructor arguments and state (what a folder
    stores).  ``plain`` drops the parametrizations of the trainable rotations, keeping their
    current weights: torch cannot serialize parametrized modules, so that is the copy NDIF
    receives."""
    from torch.nn.utils import parametrize

    module = klass(**init)
    if "source_representation" in state:  # a buffer that is None until given
        module.source_representation = state["source_representation"]
    module.load_state_dict(state)
    if plain:
        for m in list(module.modules()):
            if parametrize.is_parametrized(m):
                for name in list(m.parametrizations.keys()):
                    parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return module


def shippable(intervention: Any) -> Any:
    """The intervention as NDIF can receive it (trainable rotations as plain copies)."""
    from torch.nn.utils import parametrize

    if not any(parametrize.is_parametrized(m) for m in intervention.modules()):
        return intervention
    return rebuild(type(intervention), intervention.init_args(), intervention.state_dict(),
                      plain=True).eval()


CLASSES = {cls.__name__: cls for cls in (
    VanillaIntervention, AdditionIntervention, SubtractionIntervention, ZeroIntervention,
    CollectIntervention, SkipIntervention, RotatedSpaceIntervention,
    LowRankRotatedSpaceIntervention, BoundlessRotatedSpaceIntervention, AutoencoderIntervention)}
