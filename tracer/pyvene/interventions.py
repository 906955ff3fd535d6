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
    localist = False  # pyvene: a distributed intervention sees its units concatenated

    def __init__(self, embed_dim: Optional[int] = None, source_representation: Any = None,
                 **kwargs: Any):
        super().__init__()
        self.embed_dim = embed_dim
        self.kwargs = dict(kwargs)
        # pyvene: without subspaces, only the first interchange_dim dims are edited, and
        # interchange_dim starts as embed_dim (a 2-wide Vanilla on 6-wide rows swaps 2 dims)
        self.interchange_dim = kwargs.get("interchange_dim", embed_dim)
        rep = None if source_representation is None else torch.as_tensor(source_representation).detach()
        self.register_buffer("source_representation", rep)

    def init_args(self) -> dict:
        """The constructor arguments that rebuild this intervention (saved as JSON)."""
        return {"embed_dim": self.embed_dim, **self.kwargs}

    def set_interchange_dim(self, interchange_dim: Any) -> None:
        """How many (rotated) dims are edited when no subspaces are given (pyvene's
        ``set_interchange_dim``)."""
        self.interchange_dim = int(interchange_dim)
        self.kwargs["interchange_dim"] = self.interchange_dim

    def dims(self, subspaces: Any, width: int) -> Any:
        """The last-axis dims to edit: ``subspaces``, else the first ``interchange_dim``
        (pyvene's ``x[..., :interchange_dim]``), else all (None)."""
        if subspaces is not None or self.interchange_dim is None or int(self.interchange_dim) >= width:
            return subspaces
        return range(int(self.interchange_dim))

    def __call__(self, base: torch.Tensor, source: Any = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        # pyvene's call: intervention(base, source, subspaces=...), subspaces an int, a list
        # of dims or one list per example (rows with different dims run one by one)
        if args:
            kwargs.setdefault("subspaces", args[0])
            args = args[1:]
        sub = kwargs.get("subspaces")
        if isinstance(sub, int) and not isinstance(sub, bool):
            kwargs["subspaces"] = [sub]
        elif isinstance(sub, (list, tuple)) and sub and all(isinstance(x, (list, tuple)) for x in sub):
            rows = [list(x) for x in sub]
            if all(r == rows[0] for r in rows) or base.dim() < 2 or base.shape[0] != len(rows):
                kwargs["subspaces"] = rows[0]
            else:
                per_source = isinstance(source, torch.Tensor) and source.dim() == base.dim() \
                    and source.shape[0] == base.shape[0]
                return torch.cat([self(base[i:i + 1], source[i:i + 1] if per_source else source,
                                       *args, **{**kwargs, "subspaces": r}) for i, r in enumerate(rows)])
        # As pyvene's do_intervention: a distributed intervention whose embed_dim spans all
        # the selected units (max_number_of_units positions, or heads) gets them concatenated,
        # (..., units, d) -> (..., units * d), and its output is split back.
        # (nn.Module.__call__ named, not super(): NDIF rebuilds this class without its cell)
        width = self.embed_dim
        if self.localist or not isinstance(width, int) or base.dim() < 3 or \
                base.shape[-1] == width or base.shape[-2] * base.shape[-1] != width:
            return nn.Module.__call__(self, base, source, *args, **kwargs)
        if isinstance(source, torch.Tensor) and source.dim() >= 2 and source.shape[-2:] == base.shape[-2:]:
            source = source.flatten(-2)
        return nn.Module.__call__(self, base.flatten(-2), source, *args, **kwargs).unflatten(-1, base.shape[-2:])

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


class LocalistRepresentationIntervention(BaseIntervention):
    """pyvene's marker for interventions that act on each unit alone (mix it in): they see
    ``(..., units, d)`` rather than the units concatenated."""

    localist = True


class ConstantSourceIntervention(BaseIntervention):
    """Base for custom interventions whose source is their own ``source_representation``
    (pyvene's name): no source run is read for them."""

    needs_source = False


class SourcelessIntervention(BaseIntervention):
    """Base for custom interventions that need no source (pyvene's name)."""

    needs_source = False


class VanillaIntervention(BaseIntervention):
    """Interchange: the base's values (or its ``subspaces`` dims) replaced by the source's."""

    localist = True

    def forward(self, base: torch.Tensor, source: Optional[torch.Tensor] = None,
                subspaces: Any = None) -> torch.Tensor:
        return subspace(base, self.source_of(source), self.dims(subspaces, base.shape[-1]))


class AdditionIntervention(BaseIntervention):
    """``base + source`` (on ``subspaces`` dims only, when given)."""

    localist = True

    def forward(self, base, source=None, subspaces=None):
        return subspace(base, base + self.source_of(source).to(base.dtype), self.dims(subspaces, base.shape[-1]))


class SubtractionIntervention(BaseIntervention):
    """``base - source``."""

    localist = True

    def forward(self, base, source=None, subspaces=None):
        return subspace(base, base - self.source_of(source).to(base.dtype), self.dims(subspaces, base.shape[-1]))


class ZeroIntervention(BaseIntervention):
    """Zeros (on ``subspaces`` dims only, when given)."""

    localist = True

    needs_source = False

    def forward(self, base, source=None, subspaces=None):
        return subspace(base, torch.zeros((), dtype=base.dtype, device=base.device), self.dims(subspaces, base.shape[-1]))


class CollectIntervention(BaseIntervention):
    """Leaves the base alone; the front end returns the values it saw."""

    localist = True

    needs_source = False

    def forward(self, base, source=None, subspaces=None):
        return base


class SkipIntervention(BaseIntervention):
    """The component's output replaced by its input: the block (or module) is skipped.

    The front end passes the module's input as ``source``.
    """

    localist = True

    def forward(self, base, source=None, subspaces=None):
        return subspace(base, self.source_of(source), subspaces)


class LambdaIntervention(BaseIntervention):
    """A plain function ``(base, source) -> tensor`` as an intervention."""

    localist = True

    def __init__(self, fn: Callable, embed_dim: Optional[int] = None, **kwargs: Any):
        super().__init__(embed_dim, **kwargs)
        self.fn = fn
        self.needs_source = True

    def forward(self, base, source=None, subspaces=None):
        if source is None and self.source_representation is not None:
            source = self.source_representation
        return self.fn(base, source)


# -- trainable ------------------------------------------------------------------------

class RotateLayer(nn.Module):
    """pyvene's rotation layer: ``x @ weight`` with ``weight`` ``(n, k)`` (orthonormal columns
    once parametrized), so a pyvene state dict loads here unchanged."""

    def __init__(self, n: int, k: Optional[int] = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, n if k is None else k))
        nn.init.orthogonal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x.to(self.weight.dtype), self.weight)


def _working_dtype(base: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype a rotation computes in: the base's when it is floating (a bf16 model
    stays bf16), else the weight's (pyvene promotes integer rows, then casts back)."""
    return base.dtype if base.is_floating_point() else weight.dtype


def _orthogonal(n: int, k: Optional[int] = None) -> nn.Module:
    return nn.utils.parametrizations.orthogonal(RotateLayer(n, k))


class _Rotation(BaseIntervention):
    """A trainable intervention built on ``rotate_layer`` (orthonormal columns)."""

    trainable = True

    @property
    def rotation(self) -> torch.Tensor:
        """``(embed_dim, k)`` with orthonormal columns: rotated = x @ rotation."""
        return self.rotate_layer.weight


class RotatedSpaceIntervention(_Rotation):
    """Distributed alignment search: rotate, interchange the first ``interchange_dim``
    rotated dims (or ``subspaces``), rotate back.  ``R`` is orthogonal."""

    def __init__(self, embed_dim: int, interchange_dim: Optional[int] = None, **kwargs: Any):
        super().__init__(embed_dim, interchange_dim=interchange_dim, **kwargs)
        self.interchange_dim = interchange_dim if interchange_dim is not None else embed_dim
        self.rotate_layer = _orthogonal(embed_dim)

    def forward(self, base, source=None, subspaces=None):
        dtype = _working_dtype(base, self.rotation)
        r = self.rotation.to(dtype)
        rb, rs = base.to(dtype) @ r, self.source_of(source).to(dtype) @ r
        mixed = subspace(rb, rs.expand_as(rb), self.dims(subspaces, rb.shape[-1]))
        return (mixed @ r.T).to(base.dtype)


class LowRankRotatedSpaceIntervention(_Rotation):
    """Interchange inside a learned ``low_rank_dimension``-dim subspace (orthonormal basis
    ``B``): ``base + (source - base) @ B @ B.T``."""

    def __init__(self, embed_dim: int, low_rank_dimension: int = 1, **kwargs: Any):
        super().__init__(embed_dim, low_rank_dimension=low_rank_dimension, **kwargs)
        self.rotate_layer = _orthogonal(embed_dim, low_rank_dimension)

    def forward(self, base, source=None, subspaces=None):
        dtype = _working_dtype(base, self.rotation)
        b = self.rotation.to(dtype)
        if subspaces is not None:
            b = b[:, subspaces]
        x = base.to(dtype)
        diff = (self.source_of(source).to(dtype) - x) @ b
        return (x + diff @ b.T).to(base.dtype)


class BoundlessRotatedSpaceIntervention(_Rotation):
    """Boundless DAS: rotate, then mix base and source by a learned soft mask over the rotated
    dims, rotate back.  The mask is pyvene's ``sigmoid(i / T) * sigmoid((b * n - i) / T)``
    for rotated dim ``i``, boundary ``b`` (``intervention_boundaries``) and temperature ``T``:
    lower ``T`` during training (``set_temperature``) to harden it."""

    def __init__(self, embed_dim: int, init_boundary: float = 0.5, **kwargs: Any):
        super().__init__(embed_dim, init_boundary=init_boundary, **kwargs)
        self.rotate_layer = _orthogonal(embed_dim)
        self.intervention_boundaries = nn.Parameter(torch.tensor([float(init_boundary)]))
        self.register_buffer("temperature", torch.tensor(50.0))
        self.register_buffer("intervention_population", torch.arange(embed_dim, dtype=torch.float32))

    def set_temperature(self, value: Any) -> None:
        self.temperature.fill_(float(value))

    def mask(self) -> torch.Tensor:
        """The soft interchange mask over rotated dims, in [0, 1]."""
        boundary = self.intervention_boundaries.clamp(1e-3, 1.0)[0] * self.embed_dim
        i, t = self.intervention_population, self.temperature
        return torch.sigmoid(i / t) * torch.sigmoid((boundary - i) / t)

    def forward(self, base, source=None, subspaces=None):
        dtype = _working_dtype(base, self.rotation)
        r = self.rotation.to(dtype)
        rb, rs = base.to(dtype) @ r, self.source_of(source).to(dtype) @ r
        m = self.mask().to(dtype)
        return (((1 - m) * rb + m * rs) @ r.T).to(base.dtype)


class AutoencoderLayer(nn.Module):
    """pyvene's autoencoder: ``encode(x) = relu(W_e (x - b_d) + b_e)``,
    ``decode(z) = W_d z + b_d``."""

    def __init__(self, input_dim: int, latent_dim: int):
        super().__init__()
        self.input_dim, self.latent_dim = input_dim, latent_dim
        self.encoder = nn.Sequential(nn.Linear(input_dim, latent_dim), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(latent_dim, input_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.to(self.encoder[0].weight.dtype) - self.decoder[0].bias)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)).to(x.dtype)


class AutoencoderIntervention(BaseIntervention):
    """Interchange in the latent space of an autoencoder, as pyvene computes it:
    ``decode(z_base with latents interchange_dim taken from z_source)``.  As in pyvene,
    ``interchange_dim`` is the latent index (or list of indices) interchanged, and its default
    is the index ``embed_dim``; ``subspaces``, when given, name the latents instead."""

    trainable = True

    def __init__(self, embed_dim: int, latent_dim: Optional[int] = None, interchange_dim: Any = None,
                 **kwargs: Any):
        if latent_dim is None:
            raise ValueError("AutoencoderIntervention needs latent_dim (the autoencoder's width), "
                             "as in pyvene")
        super().__init__(embed_dim, latent_dim=latent_dim, interchange_dim=interchange_dim, **kwargs)
        self.autoencoder = AutoencoderLayer(embed_dim, latent_dim)
        self.set_interchange_dim(embed_dim if interchange_dim is None else interchange_dim)

    def set_interchange_dim(self, interchange_dim: Any) -> None:
        """The latent index or indices interchanged (pyvene's ``set_interchange_dim``)."""
        dims = torch.as_tensor(interchange_dim).long()
        latent = self.autoencoder.latent_dim
        if bool(((dims < -latent) | (dims >= latent)).any()):
            raise ValueError(f"AutoencoderIntervention: interchange_dim {dims.tolist()} names latents "
                             f"outside 0-{latent - 1} (latent_dim {latent}; pyvene's default is the "
                             f"index embed_dim); pass interchange_dim= or call set_interchange_dim")
        self.interchange_dim = dims
        self.kwargs["interchange_dim"] = dims.tolist()

    def forward(self, base, source=None, subspaces=None):
        zb = self.autoencoder.encode(base)
        zs = self.autoencoder.encode(self.source_of(source).to(base.dtype)).expand_as(zb)
        dims = self.interchange_dim.to(base.device) if subspaces is None else \
            torch.as_tensor(list(subspaces), device=base.device)
        zb = zb.clone()
        zb[..., dims] = zs[..., dims]
        return self.autoencoder.decode(zb).to(base.dtype)


class HeadsIntervention(BaseIntervention):
    """Apply ``inner`` to the chosen heads of a flattened head component (head-wise
    InterventionSets, e.g. ITI, loaded into the front end)."""

    localist = True

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


class WithKwargs(BaseIntervention):
    """``inner`` called with pyvene's ``intervention_additional_kwargs`` added (its weights
    stay ``inner``'s)."""

    def __init__(self, inner: BaseIntervention, extra: dict):
        super().__init__(getattr(inner, "embed_dim", None))
        self.inner, self.extra = inner, dict(extra)
        self.needs_source = getattr(inner, "needs_source", True)
        self.trainable = getattr(inner, "trainable", False)

    def forward(self, base, source=None, subspaces=None):
        if subspaces is None:
            return self.inner(base, source, **self.extra)
        return self.inner(base, source, subspaces=subspaces, **self.extra)


def unwrapped(intervention: Any) -> Any:
    """The intervention a ``WithKwargs`` wraps (others as they are)."""
    return intervention.inner if isinstance(intervention, WithKwargs) else intervention


def build(klass: type, width: Optional[int], units: int = 1, **kwargs: Any) -> BaseIntervention:
    """A class built for a site ``width`` wide, as pyvene builds a representation's: a
    trainable one spans its ``units`` units concatenated (``embed_dim = units * width``);
    ``kwargs`` (``low_rank_dimension``, ``latent_dim``, ``source_representation``) where given."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if klass.trainable and width is None:
        raise ValueError(f"{klass.__name__} needs the site's width; build it yourself "
                         f"(e.g. {klass.__name__}(embed_dim=...))")
    return klass(embed_dim=width * units, **kwargs) if klass.trainable else klass(width, **kwargs)


def rebuild(klass: type, init: dict, state: dict, plain: bool = False,
            legacy: bool = False) -> BaseIntervention:
    """An intervention rebuilt from its class, constructor arguments and state (what a folder
    stores).  ``plain`` drops the parametrizations of the trainable rotations, keeping their
    current weights: torch cannot serialize parametrized modules, so that is the copy NDIF
    receives.  ``legacy``: the state was saved before format version 3."""
    from torch.nn.utils import parametrize

    module = klass(**init)
    if "source_representation" in state:  # a buffer that is None until given
        module.source_representation = state["source_representation"]
    if legacy and issubclass(klass, _Rotation):
        state = _legacy_rotation(module, state)
    elif legacy and issubclass(klass, AutoencoderIntervention):
        raise ValueError("this AutoencoderIntervention was saved by an Interlace older than "
                         "format version 3, whose autoencoder computed another function than "
                         "pyvene's; train it again")
    module.load_state_dict(state)
    if plain:
        for m in list(module.modules()):
            if parametrize.is_parametrized(m):
                for name in list(m.parametrizations.keys()):
                    parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return module


def _legacy_rotation(module: _Rotation, state: dict) -> dict:
    """A rotation saved before format version 3 (an ``nn.Linear`` weight ``(k, n)``, pyvene's
    transpose) turned into this layout; the rest of its state is returned to load."""
    rot = {k[len("rotate_layer."):]: v for k, v in state.items() if k.startswith("rotate_layer.")}
    rest = {k: v for k, v in state.items() if not k.startswith("rotate_layer.")}
    if "positions" in rest:  # the boundless mask's dims, renamed as pyvene names them
        rest["intervention_population"] = rest.pop("positions")
    k = rot["parametrizations.weight.original"].shape[0]
    old = nn.utils.parametrizations.orthogonal(nn.Linear(module.embed_dim, k, bias=False))
    old.load_state_dict(rot)
    with torch.no_grad():
        module.rotate_layer.weight = old.weight.T.contiguous()
    return {**{f"rotate_layer.{k}": v for k, v in module.rotate_layer.state_dict().items()}, **rest}


def shippable(intervention: Any) -> Any:
    """The intervention as NDIF can receive it (trainable rotations as plain copies)."""
    from torch.nn.utils import parametrize

    if isinstance(intervention, WithKwargs):
        return WithKwargs(shippable(intervention.inner), intervention.extra)
    if not any(parametrize.is_parametrized(m) for m in intervention.modules()):
        return intervention
    return rebuild(type(intervention), intervention.init_args(), intervention.state_dict(),
                      plain=True).eval()


CLASSES = {cls.__name__: cls for cls in (
    VanillaIntervention, AdditionIntervention, SubtractionIntervention, ZeroIntervention,
    CollectIntervention, SkipIntervention, RotatedSpaceIntervention,
    LowRankRotatedSpaceIntervention, BoundlessRotatedSpaceIntervention, AutoencoderIntervention)}
