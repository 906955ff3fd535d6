"""Interventions: pure tensor functions, and the same applied at a site inside a trace.

Each pure function maps the selected values ``x`` (``(rows, P, d)`` or
``(rows, P, heads, head_dim)``) to their replacement.  The site helpers (``interchange``,
``add``, ...) call ``site.edit`` with them, so they work inside any ``model.trace`` or
``model.generate`` block, the user's own included.  ``Intervention`` bundles one of them
with its site and selection as plain data.

Trace-time module: imports only torch and ``tracer.sites``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from .checks import finite, indices, integers
from .sites import Heads, Positions, Rows, Site, SiteError, site as resolve_site


# -- pure functions ---------------------------------------------------------------------

def interchange_values(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Base values replaced by the source's (broadcast to the selection)."""
    return source.to(x.dtype).expand_as(x)


def add_values(x: torch.Tensor, vector: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """``x + alpha * vector``."""
    one = isinstance(alpha, (int, float)) and alpha == 1.0  # a tensor alpha is multiplied
    return x + (vector.to(x.dtype) if one else alpha * vector.to(x.dtype))


def zero_values(x: torch.Tensor) -> torch.Tensor:
    """All zeros."""
    return torch.zeros_like(x)


def mean_values(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Every selected value replaced by a given mean (mean ablation)."""
    return mean.to(x.dtype).expand_as(x)


def scale_values(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``factor * x``."""
    return x * factor


def project_out_values(x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``x`` with its component along ``direction`` removed (the direction need not be unit)."""
    d = direction.to(x.dtype)
    d = d / d.norm(dim=-1, keepdim=True)
    return x - (x * d).sum(-1, keepdim=True) * d


def affine_values(x: torch.Tensor, matrix: torch.Tensor, bias: Any = 0.0) -> torch.Tensor:
    """``x @ matrix + bias`` (a linear bottleneck such as a lens's decode(encode(x)))."""
    out = x @ matrix.to(x.dtype)
    return out + (bias.to(x.dtype) if isinstance(bias, torch.Tensor) else bias)


def sae_values(x: torch.Tensor, w_enc: torch.Tensor, b_enc: torch.Tensor, w_dec: torch.Tensor,
               b_dec: torch.Tensor) -> torch.Tensor:
    """A ReLU sparse autoencoder's reconstruction of ``x`` (the SAE bottleneck)."""
    z = torch.relu((x - b_dec.to(x.dtype)) @ w_enc.to(x.dtype) + b_enc.to(x.dtype))
    return z @ w_dec.to(x.dtype) + b_dec.to(x.dtype)


# -- applied at a site, inside a trace --------------------------------------------------

def _given(site: Site, what: str, value: Any, direction: bool = False) -> Any:
    """A value a site function applies, refused before it touches the model when it has NaN
    or infinity, is a zero direction, or its last axis is not the site's width."""
    finite(f"{what} at site {site.name}", value)
    if isinstance(value, torch.Tensor) and value.dim():
        width = site.width
        if width is not None and value.shape[-1] != width:
            raise SiteError(f"{what} of shape {tuple(value.shape)} does not fit site {site.name}, "
                            f"whose values are {width} wide (a selection is (rows, positions"
                            f"{', heads' if site.n_heads else ''}, {width}))")
        if direction and not bool((value.norm(dim=-1) > 0).all()):
            raise SiteError(f"{what} at site {site.name} is zero, so there is nothing to project out")
    return value


def interchange(site: Site, source: torch.Tensor, positions: Positions = None,
                heads: Heads = None, rows: Rows = None) -> torch.Tensor:
    """Patch the base's values at the selection with ``source`` (activation patching).

    ``source`` is a tensor of the selection's shape: read at the same site in another
    invoke of this trace (pass it over with ``tracer.barrier``) or saved from an earlier run.
    """
    _given(site, "source", source)
    return site.edit(lambda x: interchange_values(x, source), positions, heads, rows)


def add(site: Site, vector: torch.Tensor, alpha: float = 1.0, positions: Positions = None,
        heads: Heads = None, rows: Rows = None) -> torch.Tensor:
    """Add ``alpha * vector`` at the selection (steering)."""
    _given(site, "vector", vector)
    _given(site, "alpha", alpha)
    return site.edit(lambda x: add_values(x, vector, alpha), positions, heads, rows)


def zero(site: Site, positions: Positions = None, heads: Heads = None,
         rows: Rows = None) -> torch.Tensor:
    """Zero the selection (zero ablation)."""
    return site.edit(zero_values, positions, heads, rows)


def mean(site: Site, mean_vector: torch.Tensor, positions: Positions = None,
         heads: Heads = None, rows: Rows = None) -> torch.Tensor:
    """Replace the selection with ``mean_vector`` (mean ablation)."""
    _given(site, "mean vector", mean_vector)
    return site.edit(lambda x: mean_values(x, mean_vector), positions, heads, rows)


def scale(site: Site, factor: float, positions: Positions = None, heads: Heads = None,
          rows: Rows = None) -> torch.Tensor:
    """Multiply the selection by ``factor``."""
    _given(site, "factor", factor)
    return site.edit(lambda x: scale_values(x, factor), positions, heads, rows)


def project_out(site: Site, direction: torch.Tensor, positions: Positions = None,
                heads: Heads = None, rows: Rows = None) -> torch.Tensor:
    """Remove the component along ``direction`` from the selection."""
    _given(site, "direction", direction, direction=True)
    return site.edit(lambda x: project_out_values(x, direction), positions, heads, rows)


def subspace(x: torch.Tensor, new: torch.Tensor, dims: Any) -> torch.Tensor:
    """``x`` with only the last-axis ``dims`` taken from ``new`` (all of ``new`` when None)."""
    new = new.to(x.dtype).expand_as(x)
    if dims is None:
        return new
    idx = torch.as_tensor(list(dims), dtype=torch.long, device=x.device)
    bad = (idx >= x.shape[-1]) | (idx < -x.shape[-1])
    if bool(bad.any()):
        raise IndexError(f"subspace dims {[int(i) for i in idx[bad]]} out of range for width "
                         f"{x.shape[-1]}")
    out = x.clone()
    out[..., idx] = new[..., idx]
    return out


# kind -> (pure function, names of its tensor/number parameters)
KINDS: dict[str, tuple[Callable[..., torch.Tensor], tuple[str, ...]]] = {
    "interchange": (interchange_values, ("source",)),
    "add": (add_values, ("vector", "alpha")),
    "zero": (zero_values, ()),
    "mean": (mean_values, ("mean",)),
    "scale": (scale_values, ("factor",)),
    "project_out": (project_out_values, ("direction",)),
    "affine": (affine_values, ("matrix", "bias")),
    "sae": (sae_values, ("w_enc", "b_enc", "w_dec", "b_dec")),
}
_OPTIONAL = ("alpha", "bias")


class Source:
    """Where an intervention's source values come from in the same pass: ``site`` (default:
    the intervention's own site) of ``row`` (an int, or one row per edited row; default: the
    rows edited) at ``positions`` (default: the positions edited).  In a plan, ``row`` counts
    within the group."""

    def __init__(self, row: Optional[int] = None, positions: Any = None, site: Optional[str] = None):
        self.row, self.positions, self.site = row, positions, site

    def __repr__(self) -> str:
        return f"Source(row={self.row!r}, positions={self.positions!r}, site={self.site!r})"


class Intervention:
    """One intervention as data, the only one in Interlace.

    ``kind`` names a pure function above (``"add"``, ``"interchange"``, ...) or is a module
    ``(base, source, subspaces) -> new`` (the pyvene-style classes, trainable ones
    included).  ``site`` is a site name or alias; ``positions``, ``heads`` and ``rows``
    select what it edits; ``params`` are the function's tensors and numbers; ``source`` is a
    tensor, or a ``Source`` (another row, position or site of the same pass); ``subspaces``
    limits the edit to those dimensions of the last axis (of the rotated space, for
    rotated modules).  ``apply(model)`` runs it inside the current trace: a forward, a
    generation step, a plan's batch, a remote request.
    """

    def __init__(self, kind: Any, site: str, positions: Any = None, heads: Any = None,
                 params: Any = None, *, rows: Any = None, source: Any = None, subspaces: Any = None):
        params = dict(params or {})
        if isinstance(kind, str):
            if kind not in KINDS:
                raise ValueError(f"unknown intervention kind {kind!r}; valid kinds are "
                                 f"{', '.join(KINDS)}, or a module")
            _, names = KINDS[kind]
            unknown = set(params) - set(names)
            if unknown:
                raise ValueError(f"intervention {kind!r} takes parameters {list(names)}, "
                                 f"not {sorted(unknown)}")
            if kind == "interchange" and "source" in params:
                source = params.pop("source")
        elif not callable(kind):
            raise ValueError(f"intervention kind {kind!r} is neither a kind name ({', '.join(KINDS)}) "
                             f"nor a module")
        name = kind if isinstance(kind, str) else type(kind).__name__
        for key, value in params.items():
            finite(f"intervention {name!r} at {site}: parameter {key!r}", value)
        if isinstance(source, torch.Tensor):
            finite(f"intervention {name!r} at {site}: source", source)
        if kind == "project_out" and isinstance(params.get("direction"), torch.Tensor) \
                and not bool((params["direction"].norm(dim=-1) > 0).all()):
            raise ValueError(f"intervention 'project_out' at {site}: the direction is zero, so "
                             f"there is nothing to project out")
        if subspaces is not None:
            subspaces = indices(f"intervention {name!r} at {site}: subspaces",
                                       subspaces, 1 << 62, "dimensions")
        if heads is not None:
            heads = integers(f"intervention {name!r} at {site}: heads", heads)
        if isinstance(positions, (list, tuple)) and positions and not isinstance(positions[0], (list, tuple)):
            positions = integers(f"intervention {name!r} at {site}: positions", positions)
        elif isinstance(positions, (bool, int)):
            integers(f"intervention {name!r} at {site}: positions", positions)
        elif isinstance(positions, torch.Tensor) and (positions.dtype == torch.bool or positions.is_floating_point()):
            raise ValueError(f"intervention {name!r} at {site}: positions must be integers, got a "
                             f"{positions.dtype} tensor")
        self.kind, self.site, self.positions, self.heads, self.params = kind, site, positions, heads, params
        self.rows, self.source, self.subspaces = rows, source, subspaces

    def check(self) -> "Intervention":
        """Refuse a function kind that lacks a parameter it needs (what a loader calls before
        anything runs); returns the record."""
        if isinstance(self.kind, str):
            _, names = KINDS[self.kind]
            missing = [n for n in names if n not in self.params and n not in _OPTIONAL and n != "source"]
            if missing:
                raise ValueError(f"intervention {self.kind!r} at {self.site} needs {missing}")
        return self

    @property
    def module(self) -> Any:
        """The module of a module intervention, else None."""
        return None if isinstance(self.kind, str) else self.kind

    def __repr__(self) -> str:
        kind = self.kind if isinstance(self.kind, str) else type(self.kind).__name__
        return (f"Intervention({kind!r}, {self.site!r}, positions={self.positions!r}, "
                f"heads={self.heads!r}, params={sorted(self.params)})")

    def replace(self, **changes: Any) -> "Intervention":
        """A copy with some fields changed (``positions=None`` = every position)."""
        fields = {"kind": self.kind, "site": self.site, "positions": self.positions,
                  "heads": self.heads, "params": self.params, "rows": self.rows,
                  "source": self.source, "subspaces": self.subspaces, **changes}
        return Intervention(fields.pop("kind"), fields.pop("site"), fields.pop("positions"),
                            fields.pop("heads"), fields.pop("params"), **fields)

    def with_positions(self, positions: Any) -> "Intervention":
        """The same intervention at other positions (None = every position)."""
        return self.replace(positions=positions)

    def function(self, **params: Any) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        """``(x, source) -> new x`` for this intervention, subspaces included."""
        if not isinstance(self.kind, str):
            module, subspaces = self.kind, self.subspaces
            code = getattr(type(module).forward, "__code__", None)
            # custom pyvene-style modules may define forward(base, source) only
            if code is not None and code.co_argcount < 4 and not code.co_flags & 0x04:
                if subspaces is not None:
                    raise ValueError(f"{type(module).__name__}.forward takes no subspaces")
                return lambda x, source: module(x, source)
            return lambda x, source: module(x, source, subspaces)
        fn, names = KINDS[self.kind]
        given = {**self.params, **params}
        missing = [n for n in names if n not in given and n not in _OPTIONAL and n != "source"]
        if missing:
            raise ValueError(f"intervention {self.kind!r} at {self.site} needs {missing}")
        dims = self.subspaces
        if self.kind == "interchange":
            return lambda x, source: subspace(x, fn(x, _needed(source, self)), dims)
        return lambda x, source: subspace(x, fn(x, **given), dims) if dims is not None else fn(x, **given)

    def apply(self, model: Any, rows: Rows = None, positions: Any = "stored", source: Any = None,
              site: Any = None, **params: Any) -> torch.Tensor:
        """Apply at the site inside the current trace; returns the values it replaced.

        ``rows``/``positions``/``source`` override the stored ones; ``params`` add to or
        override stored parameters; ``site`` is this record's site already resolved (a
        generation loop resolves each once, not at every step).
        """
        s = resolve_site(model, self.site) if site is None else site
        rows = self.rows if rows is None else rows
        positions = self.positions if isinstance(positions, str) and positions == "stored" else positions
        source = self.source if source is None else source
        if isinstance(source, Source):
            src_site = s if source.site is None else resolve_site(model, source.site)
            src_rows = rows if source.row is None else (
                [source.row] if isinstance(source.row, int) else list(source.row))
            src_pos = positions if source.positions is None else source.positions
            source = src_site.read(src_pos, self.heads if src_site.n_heads else None, src_rows)
        fn = self.function(**params)
        seen = []

        def edit(x: torch.Tensor) -> torch.Tensor:
            seen.append(x)
            try:
                return fn(x, source)
            except RuntimeError as error:  # torch's shape errors, said in this site's terms
                given = {k: tuple(v.shape) for k, v in {**self.params, **params, "source": source}.items()
                         if isinstance(v, torch.Tensor)}
                raise SiteError(f"intervention {self!r}: {given} do not fit the selection "
                                f"{tuple(x.shape)} at {s.name} ({str(error).splitlines()[0]})") from None

        s.edit(edit, positions, self.heads, rows)
        return seen[0]


def _needed(source: Any, iv: Intervention) -> torch.Tensor:
    if source is None:
        raise ValueError(f"intervention 'interchange' at {iv.site} needs a source: a tensor, or "
                         f"Source(row=...) for another row of the same batch")
    return source


def apply_at_step(model: Any, step: int, at_prompt: Any, at_new: Any, start: int = 0,
                  stop: Any = None, sites: Optional[dict] = None) -> None:
    """Apply interventions inside a ``tracer.iter`` generation loop, for generation ``step``.

    Step 0 runs the whole (left-padded) prompt: ``at_prompt`` is applied there, with its own
    positions.  Step k >= 1 runs one token, the k-th generated one: ``at_new`` is applied to
    it.  Steps outside ``[start, stop)`` are left alone.  ``sites`` (a dict made before the
    loop) keeps each site resolved once for all steps.
    """
    if step < start or (stop is not None and step >= stop):
        return
    for iv in (at_prompt if step == 0 else at_new):
        if sites is None:
            iv.apply(model)
            continue
        if iv.site not in sites:
            sites[iv.site] = resolve_site(model, iv.site)
        iv.apply(model, site=sites[iv.site])
