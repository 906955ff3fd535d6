"""A pyvene-style front end on nnsight: ``IntervenableModel(config, model)``.

pyvene's examples run with ``import pyvene as pv`` replaced by ``import tracer as pv``
(model-loading helpers aside: weights come from ``tracer.load`` here).  A config names
components the pyvene way (``{"layer": 3, "component": "mlp_output"}``) or as a module path
(``"model.layers[3].mlp.output"``); both become Interlace sites.  Every call is nnsight
traces: the sources' values are read in one trace, the base is run with the interventions
in another, so it works on any model nnsight can wrap (a plain ``nn.Module`` too).  With
``remote=True`` a call runs as one NDIF session (one request); training and ``generate``
run locally (``tracer.generation.generate`` steers remotely).

Unit locations follow pyvene: ``{"sources->base": 4}``, ``{"sources->base": (src, base)}``
with each side an int, a list of positions, ``[batch][positions]`` or
``[intervention][batch][positions]``; ``{"base": ...}`` when there is no source.  For
``"h.pos"`` units each intervention's side is ``[heads_locations, position_locations]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import nnsight
import torch
from torch import nn

from . import intervention_types as it
from .intervention_types import BaseIntervention, LambdaIntervention, Unit
from .sites import HEAD_SITES, SITE_NAMES, Site, _module_of, dims_of, family_of

# pyvene component -> (our site kind, merge heads into one vector)
COMPONENTS = {
    "block_input": ("resid_pre", False), "block_output": ("resid_post", False),
    "mlp_output": ("mlp_out", False), "attention_output": ("attn_out", False),
    "attention_value_output": ("head_out", True), "head_attention_value_output": ("head_out", False),
    "query_output": ("head_q", True), "key_output": ("head_k", True), "value_output": ("head_v", True),
    "head_query_output": ("head_q", False), "head_key_output": ("head_k", False),
    "head_value_output": ("head_v", False),
}
_MODULE_COMPONENTS = {"mlp_input": ("mlp", "input"), "mlp_activation": ("down", "input")}
_DOWN = {"gpt2": "mlp.c_proj", "gpt_neox": "mlp.dense_4h_to_h"}
UNITS = ("pos", "h", "h.pos")
FORMAT = "interlace.intervenable"
VERSION = 1


@dataclass
class RepresentationConfig:
    """Where one intervention goes (pyvene's ``RepresentationConfig``)."""

    layer: Optional[int] = None
    component: str = "block_output"
    unit: str = "pos"
    max_number_of_units: int = 1
    low_rank_dimension: Optional[int] = None
    intervention_type: Any = None
    intervention: Any = None
    subspace_partition: Any = None
    source_representation: Any = None
    name: Optional[str] = None


IntervenableRepresentationConfig = RepresentationConfig


@dataclass
class IntervenableConfig:
    """A list of representations and the intervention type(s) they use."""

    representations: Any = field(default_factory=list)
    intervention_types: Any = None
    intervenable_representations: Any = None
    intervenable_interventions_type: Any = None

    def __post_init__(self) -> None:
        if self.intervenable_representations is not None:
            self.representations = self.intervenable_representations
        if self.intervenable_interventions_type is not None:
            self.intervention_types = self.intervenable_interventions_type
        if isinstance(self.representations, (RepresentationConfig, dict)):
            self.representations = [self.representations]


def _representations(config: Any) -> list[RepresentationConfig]:
    """Every accepted config form as a list of RepresentationConfig."""
    if isinstance(config, IntervenableConfig):
        reps, types = list(config.representations), config.intervention_types
    elif isinstance(config, (dict, RepresentationConfig)):
        reps, types = [config], None
    elif isinstance(config, (list, tuple)):
        reps, types = list(config), None
    else:
        raise TypeError(f"config must be a dict, a list of dicts, a RepresentationConfig or an "
                        f"IntervenableConfig, not {type(config).__name__}")
    out = []
    for i, rep in enumerate(reps):
        if isinstance(rep, dict):
            known = set(RepresentationConfig.__dataclass_fields__)
            unknown = set(rep) - known
            if unknown:
                raise ValueError(f"representation {i}: unknown keys {sorted(unknown)}; valid keys "
                                 f"are {sorted(known)}")
            rep = RepresentationConfig(**rep)
        elif isinstance(rep, (list, tuple)):
            rep = RepresentationConfig(*rep)
        if rep.intervention is None and rep.intervention_type is None and types is not None:
            rep.intervention_type = types[i] if isinstance(types, (list, tuple)) else types
        out.append(rep)
    return out


def _wrap(model: Any, tokenizer: Any = None) -> Any:
    """An nnsight wrapper around ``model`` (kept as is when it already is one)."""
    from nnsight.intervention.envoy import Envoy

    if isinstance(model, Envoy):
        return model
    if hasattr(model, "config") and hasattr(model, "generate"):
        from nnsight.modeling.transformers import TransformersModel

        if tokenizer is None:
            try:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(model.config._name_or_path,
                                                          local_files_only=True)
            except Exception:  # noqa: BLE001 - no local tokenizer: forward works, generate won't
                tokenizer = None
        if tokenizer is not None:
            return TransformersModel(model, tokenizer=tokenizer)
    return nnsight.NNsight(model)


class IntervenableModel(nn.Module):
    """A model with interventions mounted at named components; an ``nn.Module`` whose
    parameters are the interventions' (the model's own stay frozen for training)."""

    def __init__(self, config: Any = None, model: Any = None, tokenizer: Any = None,
                 intervenable_config: Any = None, remote: bool = False):
        super().__init__()
        config = config if config is not None else intervenable_config
        if config is None or model is None:
            raise TypeError("IntervenableModel needs a config and a model")
        self.model = _wrap(model, tokenizer)
        self.remote = remote
        self.representations = _representations(config)
        self.interventions = nn.ModuleDict()
        # config order; ``_exec`` is the model's execution order, which nnsight requires
        self._units = [self._bind(i, rep) for i, rep in enumerate(self.representations)]
        self._exec = sorted(range(len(self._units)), key=lambda k: self._units[k]["order"])
        self.keys = [u["key"] for u in self._units]

    # -- config -> sites ----------------------------------------------------------------

    def _bind(self, i: int, rep: RepresentationConfig) -> dict:
        if rep.unit not in UNITS:
            raise ValueError(f"representation {i}: unknown unit {rep.unit!r}; valid units are "
                             f"{', '.join(UNITS)}")
        site_name, flat = self._site_name(i, rep)
        s = Site(self.model, site_name)
        has_heads = s.n_heads is not None and not flat
        if rep.unit in ("h", "h.pos") and not has_heads:
            heads_components = [k for k, (kind, f) in COMPONENTS.items() if kind in HEAD_SITES and not f]
            raise ValueError(f"representation {i}: unit {rep.unit!r} needs a head component, "
                             f"and {rep.component!r} has no heads; head components are "
                             f"{', '.join(heads_components)}")
        width = self._width(s, flat)
        intervention = self._make(i, rep, width)
        key = rep.name or f"layer_{rep.layer}_comp_{rep.component}_unit_{rep.unit}_nunit_{rep.max_number_of_units}#{i}"
        self.interventions[key.replace(".", "_")] = intervention
        skip_from = None
        if isinstance(intervention, it.SkipIntervention):
            if s.raw_path is not None and s.port == "output":
                skip_from = s.module_path
            elif s.kind == "resid_post":
                skip_from = f"{s.family.layers}.{s.layer}"
            else:
                raise ValueError(f"representation {i}: SkipIntervention needs a block_output or a "
                                 f"module '.output' component, not {rep.component!r}")
        return {"key": key.replace(".", "_"), "site": s.name, "flat": flat, "heads": has_heads,
                "unit": rep.unit, "order": s.order, "skip_from": skip_from}

    def _site_name(self, i: int, rep: RepresentationConfig) -> tuple[str, bool]:
        comp = rep.component
        if comp.endswith((".output", ".input")) and comp.split(".")[0] not in SITE_NAMES:
            path, port = comp.rsplit(".", 1)
            return path.replace("[", ".").replace("]", "") + "." + port, False
        try:
            family = family_of(self.model.config if hasattr(self.model, "config") else
                               _module_of(self.model).config)
        except AttributeError:
            raise ValueError(f"representation {i}: this model has no transformers config, so "
                             f"components must be module paths ending in .output or .input "
                             f"(got {comp!r})") from None
        if rep.layer is None:
            if comp in SITE_NAMES and comp not in ("embed", "final", "logits"):
                raise ValueError(f"representation {i}: component {comp!r} needs a layer")
            if comp in ("embed", "final", "logits"):
                return comp, False
        if comp in COMPONENTS:
            kind, flat = COMPONENTS[comp]
            return f"{kind}.{rep.layer}", flat
        if comp in SITE_NAMES:
            return f"{comp}.{rep.layer}", False
        if comp in _MODULE_COMPONENTS:
            which, port = _MODULE_COMPONENTS[comp]
            sub = family.mlp if which == "mlp" else _DOWN.get(family.name, "mlp.down_proj")
            return f"{family.layers}.{rep.layer}.{sub}.{port}", False
        valid = list(COMPONENTS) + list(_MODULE_COMPONENTS) + list(SITE_NAMES)
        raise ValueError(f"representation {i}: unknown component {comp!r}; valid components are "
                         f"{', '.join(valid)}, or a module path such as "
                         f"'model.layers[0].mlp.output'")

    def _width(self, s: Site, flat: bool) -> Optional[int]:
        if s.dims is None:
            return None
        if s.kind in HEAD_SITES:
            return s.dims.head_dim * (s.n_heads if flat else 1)
        return s.width

    def _make(self, i: int, rep: RepresentationConfig, width: Optional[int]) -> BaseIntervention:
        given = rep.intervention if rep.intervention is not None else rep.intervention_type
        if given is None:
            raise ValueError(f"representation {i}: no intervention; set 'intervention' (a class, "
                             f"an instance or a function) or 'intervention_type'")
        if isinstance(given, BaseIntervention):
            iv = given
        elif isinstance(given, type) and issubclass(given, BaseIntervention):
            kwargs: dict = {}
            if rep.low_rank_dimension is not None:
                kwargs["low_rank_dimension"] = rep.low_rank_dimension
            if rep.source_representation is not None:
                kwargs["source_representation"] = rep.source_representation
            if given.trainable and width is None:
                raise ValueError(f"representation {i}: {given.__name__} needs the site's width; "
                                 f"build it yourself (e.g. {given.__name__}(embed_dim=...))")
            iv = given(embed_dim=width, **kwargs) if given.trainable else given(width, **kwargs)
        elif callable(given):
            iv = LambdaIntervention(given, width, source_representation=rep.source_representation)
        else:
            raise ValueError(f"representation {i}: intervention {given!r} is not an intervention "
                             f"class, instance or function; classes are {', '.join(it.CLASSES)}")
        if iv.embed_dim is not None and width is not None and iv.embed_dim != width:
            raise ValueError(f"representation {i}: {type(iv).__name__} has embed_dim {iv.embed_dim} "
                             f"but {rep.component} is {width} wide")
        return iv

    # -- locations ----------------------------------------------------------------------

    def _locations(self, unit_locations: Any, batch: int, has_sources: bool) -> list[tuple]:
        """Per unit (in config order): (source positions, base positions, heads)."""
        n = len(self._units)
        if unit_locations is None:
            return [(None, None, None)] * n
        if not isinstance(unit_locations, dict):
            raise ValueError(f"unit_locations must be a dict such as {{'sources->base': 4}} or "
                             f"{{'base': 4}}, not {type(unit_locations).__name__}")
        unknown = set(unit_locations) - {"sources->base", "base"}
        if unknown:
            raise ValueError(f"unit_locations keys must be 'sources->base' or 'base', not "
                             f"{sorted(unknown)}")
        if "sources->base" in unit_locations:
            value = unit_locations["sources->base"]
            src, base = value if isinstance(value, tuple) and len(value) == 2 else (value, value)
        else:
            src, base = None, unit_locations["base"]
        def per_unit(value: Any, k: int) -> Any:
            # several interventions: a list with one location per intervention (depth >= 3)
            if n > 1 and isinstance(value, (list, tuple)) and len(value) == n and _depth(value) >= 3:
                return value[k]
            return value

        out = []
        for k, unit in enumerate(self._units):
            b_pos, heads = self._side(per_unit(base, k), 0, 1, unit, batch)
            s_pos, _ = (self._side(per_unit(src, k), 0, 1, unit, batch) if src is not None
                        else (b_pos, None))
            out.append((s_pos, b_pos, heads))
        return out

    def _side(self, value: Any, k: int, n: int, unit: dict, batch: int) -> tuple:
        depth = _depth
        if unit["unit"] == "h.pos":
            if depth(value) == 4:
                value = value[k]
            if depth(value) != 3 or len(value) != 2:
                raise ValueError("h.pos unit locations must be [heads[batch][units], "
                                 "positions[batch][units]] per intervention")
            heads = self._shared(value[0], "heads")
            return self._positions(value[1], batch), heads
        if isinstance(value, int):
            value = [value]
        d = depth(value)
        if d == 3:
            if len(value) != n:
                raise ValueError(f"unit locations list {len(value)} interventions but the config "
                                 f"has {n}")
            value = value[k]
        elif d == 1 and unit["unit"] == "pos":
            value = [list(value)] * batch
        if unit["unit"] == "h":
            rows = value if depth(value) == 2 else [value]
            return None, self._shared(rows, "heads")
        return self._positions(value if depth(value) == 2 else [value] * batch, batch), None

    @staticmethod
    def _shared(rows: Sequence, what: str) -> list:
        first = list(rows[0])
        if any(list(r) != first for r in rows):
            raise ValueError(f"every batch row must use the same {what} ({list(rows)})")
        return first

    @staticmethod
    def _positions(rows: Sequence, batch: int) -> Any:
        rows = [list(r) for r in rows]
        if len(rows) not in (1, batch):
            raise ValueError(f"unit locations give {len(rows)} rows but the batch has {batch}")
        if len({len(r) for r in rows}) != 1:
            raise ValueError("every batch row must have the same number of units")
        if all(r == rows[0] for r in rows):
            return rows[0]
        return torch.tensor(rows, dtype=torch.long)

    # -- running --------------------------------------------------------------------------

    def _trace(self, inputs: Any) -> Any:
        if isinstance(inputs, dict) or hasattr(inputs, "keys"):
            return self.model.trace(**dict(inputs))
        return self.model.trace(inputs)

    @staticmethod
    def _batch(inputs: Any) -> int:
        if isinstance(inputs, dict) or hasattr(inputs, "keys"):
            first = next(iter(dict(inputs).values()))
            return int(first.shape[0])
        return int(inputs.shape[0])

    def _is_lm(self) -> bool:
        return hasattr(self.model, "config") or hasattr(_module_of(self.model), "config")

    def _constant_sources(self, source_representations: Any) -> list:
        """``source_representations`` as one value per unit (config order; None if absent)."""
        n = len(self._units)
        reps = source_representations
        if reps is None:
            return [None] * n
        if isinstance(reps, dict):
            values: list = [None] * n
            for key, v in reps.items():
                if key not in self.keys:
                    raise ValueError(f"source_representations key {key!r} is not an "
                                     f"intervention; keys are {self.keys}")
                values[self.keys.index(key)] = v
            return values
        if isinstance(reps, (list, tuple)):
            if len(reps) != n:
                raise ValueError(f"{len(reps)} source_representations for {n} interventions")
            return list(reps)
        return [reps] * n

    def _source_reads(self, sources: Optional[list], locs: list) -> list[tuple]:
        """``(source index, [(unit, site, positions, heads)])``: what to read from each source
        input, in execution order (one trace per source input)."""
        if not sources:
            return []
        n = len(self._units)
        if len(sources) not in (1, n):
            raise ValueError(f"{len(sources)} sources for {n} interventions: give one shared "
                             f"source or one per intervention")
        lm = self._is_lm()
        groups: dict[int, list] = {}
        for k in self._exec:
            unit = self._units[k]
            if unit["skip_from"] is None and getattr(self.interventions[unit["key"]], "needs_source", True):
                groups.setdefault(0 if len(sources) == 1 else k, []).append(
                    (k, unit["site"], locs[k][0] if lm else None, locs[k][2] if unit["heads"] else None))
        return list(groups.items())

    def _sources(self, sources: Optional[list], locs: list, source_representations: Any) -> list:
        """The source values of each unit (config order), read in one trace per source input."""
        values = self._constant_sources(source_representations)
        if source_representations is not None:
            return values
        for src_index, members in self._source_reads(sources, locs):
            with torch.no_grad(), self._trace(sources[src_index]):
                got = nnsight.save([])
                for k, name, pos, heads in members:
                    got.append(Site(self.model, name).read(pos, heads).save())
            for (k, _, _, _), v in zip(members, got):
                values[k] = v
        return values

    def _bound(self, locs: list, values: list, subspaces: Any) -> list[Unit]:
        """One ``Unit`` per representation, in config order."""
        n = len(self._units)
        bound = []
        for k, unit in enumerate(self._units):
            sub = subspaces
            if isinstance(subspaces, (list, tuple)) and subspaces and isinstance(subspaces[0], (list, tuple)):
                sub = subspaces[k] if len(subspaces) == n else subspaces[0]
                if sub and isinstance(sub[0], (list, tuple)):
                    sub = self._shared(sub, "subspaces")
            pos = locs[k][1] if self._is_lm() else None
            bound.append(Unit(unit["site"], self.interventions[unit["key"]], pos,
                              locs[k][2] if unit["heads"] else None, values[k], sub,
                              unit["flat"], unit["skip_from"]))
        return bound

    def forward(self, base: Any, sources: Optional[list] = None, unit_locations: Any = None,
                source_representations: Any = None, subspaces: Any = None,
                output_original_output: bool = False, return_dict: Optional[bool] = None,
                labels: Any = None) -> tuple:
        """``(original or None, intervened)`` model outputs; with Collect interventions the
        first item is ``(original or None, [collected values])``."""
        if sources is not None and not isinstance(sources, (list, tuple)):
            sources = [sources]
        batch = self._batch(base)
        locs = self._locations(unit_locations, batch, bool(sources))
        if self.remote:
            return self._forward_remote(base, sources, locs, source_representations, subspaces,
                                        output_original_output)
        values = self._sources(sources, locs, source_representations)
        bound = self._bound(locs, values, subspaces)
        self._check_sources(bound)
        units = [bound[k] for k in self._exec]
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        original = None
        if output_original_output:
            with torch.no_grad(), self._trace(base):
                original = self._output()
        with torch.set_grad_enabled(grad), self._trace(base):
            collected = nnsight.save([])
            for u in units:
                seen = u.apply(self.model)
                if isinstance(u.intervention, it.CollectIntervention):
                    collected.append(seen.save())
            out = self._output()
        if collected:
            return (original, collected), out
        return original, out

    def _forward_remote(self, base: Any, sources: Optional[list], locs: list,
                        source_representations: Any, subspaces: Any, original: bool) -> tuple:
        """The same runs as one NDIF session (one request): source traces, then the base.

        Only trace-time objects (``Unit``, the intervention classes, ``Site``) enter the
        session body, so the server needs nothing but what ``tracer.remote.register`` ships.
        """
        from transformers.modeling_outputs import CausalLMOutputWithPast

        from . import remote as remote_mod

        if any(p.requires_grad for p in self.parameters()) and torch.is_grad_enabled():
            raise ValueError("training runs locally; evaluate remotely under torch.no_grad()")
        if not self._is_lm():
            raise ValueError("remote runs need a language model served by NDIF")
        bound = self._bound(locs, self._constant_sources(source_representations), subspaces)
        reads = [] if source_representations is not None else [
            (dict(sources[i]), members) for i, members in self._source_reads(sources, locs)]
        ordered = [bound[k] for k in self._exec]
        model, inputs = self.model, dict(base)

        def go() -> tuple:
            with torch.no_grad(), model.session(remote=True):
                for src, members in reads:
                    with model.trace(**src):
                        got = nnsight.save([])
                        for k, name, pos, heads in members:
                            got.append(Site(model, name).read(pos, heads).save())
                    for (k, _, _, _), value in zip(members, got):
                        bound[k].source = value
                first = nnsight.save([])
                if original:
                    with model.trace(**inputs):
                        first.append(Site(model, "final").tensor().save())
                        first.append(model.output.logits.save())
                with model.trace(**inputs):
                    collected = nnsight.save([])
                    for u in ordered:
                        seen = u.apply(model)
                        if isinstance(u.intervention, it.CollectIntervention):
                            collected.append(seen.save())
                    hidden = Site(model, "final").tensor().save()
                    logits = model.output.logits.save()
            return list(first), list(collected), hidden, logits

        first, collected, hidden, logits = remote_mod.run_remote(go)
        out = CausalLMOutputWithPast(logits=logits)
        out["last_hidden_state"] = hidden
        orig = None
        if first:
            orig = CausalLMOutputWithPast(logits=first[1])
            orig["last_hidden_state"] = first[0]
        if collected:
            return (orig, collected), out
        return orig, out

    def _check_sources(self, units: list[Unit]) -> None:
        for u in units:
            iv = u.intervention
            if getattr(iv, "needs_source", True) and u.source is None and u.skip_from is None \
                    and getattr(iv, "source_representation", None) is None \
                    and not isinstance(iv, LambdaIntervention):
                raise ValueError(f"{type(iv).__name__} at {u.site} needs a source: pass sources=[...] "
                                 f"with unit_locations, or source_representations=")

    def _output(self) -> Any:
        """The model's output, saved; for language models with ``last_hidden_state`` too."""
        if self._is_lm() and hasattr(_module_of(self.model), "lm_head"):
            hidden = Site(self.model, "final").tensor().save()
            out = self.model.output.save()
            out["last_hidden_state"] = hidden
            return out
        return self.model.output.save()

    def generate(self, base: Any, sources: Optional[list] = None, unit_locations: Any = None,
                 source_representations: Any = None, intervene_on_prompt: bool = False,
                 subspaces: Any = None, max_length: Optional[int] = None,
                 max_new_tokens: Optional[int] = None, output_original_output: bool = True,
                 **kwargs: Any) -> tuple:
        """``(original tokens, intervened tokens)`` from one batched ``generate``.

        As in pyvene, interventions apply to the generated tokens (each step's new
        position); with ``intervene_on_prompt=True`` also to the prompt at the base unit
        locations (see ``tracer.generation`` for the per-step rule).
        """
        from . import generation

        if self.remote:
            raise ValueError("IntervenableModel.generate runs locally; for steering on NDIF use "
                             "tracer.generation.generate(model, prompts, interventions, remote=True)")
        if not hasattr(self.model, "generate") or not hasattr(self.model, "tokenizer"):
            raise ValueError("generate needs a language model wrapped with a tokenizer: pass "
                             "tokenizer= to IntervenableModel, or an nnsight TransformersModel")
        if sources is not None and not isinstance(sources, (list, tuple)):
            sources = [sources]
        prompt = dict(base) if hasattr(base, "keys") else base
        batch = self._batch(prompt) if not isinstance(prompt, (str, list)) else (1 if isinstance(prompt, str) else len(prompt))
        width = prompt["input_ids"].shape[1] if isinstance(prompt, dict) else None
        if max_new_tokens is None:
            if max_length is None:
                raise ValueError("give max_new_tokens or max_length")
            max_new_tokens = max_length - (width or 0)
        locs = self._locations(unit_locations, batch, bool(sources))
        values = self._sources(sources, locs, source_representations)
        units = self._bound(locs, values, subspaces)
        self._check_sources(units)
        out = generation.generate(self.model, prompt, units, max_new_tokens,
                                  where="all" if intervene_on_prompt else "generated",
                                  compare=output_original_output, **kwargs)
        return out.plain_tokens, out.steered_tokens

    # -- training -----------------------------------------------------------------------

    def disable_model_gradients(self) -> None:
        """Freeze the wrapped model (its parameters are not this module's)."""
        for p in _module_of(self.model).parameters():
            p.requires_grad_(False)

    def count_parameters(self) -> int:
        """Trainable intervention parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def set_temperature(self, value: float) -> None:
        """Set the mask temperature of every Boundless DAS intervention."""
        for iv in self.interventions.values():
            if hasattr(iv, "set_temperature"):
                iv.set_temperature(value)

    def train_alignment(self, train_dataloader: Iterable, compute_loss: Callable,
                        compute_metrics: Optional[Callable] = None,
                        inputs_collator: Optional[Callable] = None, epochs: int = 1,
                        lr: float = 1e-3, temperature_schedule: Optional[tuple] = None,
                        progress: bool = True, log: Optional[list] = None) -> list[dict]:
        """Train the interventions (the model frozen) with Adam; returns the loss log.

        Each batch (after ``inputs_collator``) is a dict with ``base``, optional ``sources``,
        ``unit_locations``, ``subspaces`` and ``labels``; ``compute_loss(outputs, labels)``
        gets the intervened outputs.  ``temperature_schedule=(start, end)`` anneals the
        Boundless DAS temperature over all steps.
        """
        from tqdm.auto import tqdm

        self.disable_model_gradients()
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("no trainable interventions: use a RotatedSpace, LowRankRotatedSpace, "
                             "BoundlessRotatedSpace or Autoencoder intervention")
        optimizer = torch.optim.Adam(params, lr=lr)
        batches = list(train_dataloader)
        total = epochs * len(batches)
        log = [] if log is None else log
        bar = tqdm(total=total, desc="train_alignment", disable=not progress)
        self.train()
        step = 0
        for epoch in range(epochs):
            for batch in batches:
                if temperature_schedule is not None:
                    t0, t1 = temperature_schedule
                    self.set_temperature(t0 + (t1 - t0) * step / max(1, total - 1))
                batch = inputs_collator(batch) if inputs_collator else batch
                _, out = self(batch["base"], batch.get("sources"), batch.get("unit_locations"),
                              subspaces=batch.get("subspaces"))
                loss = compute_loss(out, batch["labels"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                entry = {"epoch": epoch, "step": step, "loss": float(loss.detach())}
                if compute_metrics is not None:
                    with torch.no_grad():
                        entry.update(compute_metrics([out], [batch["labels"]]))
                log.append(entry)
                bar.set_postfix(loss=f"{entry['loss']:.4f}")
                bar.update(1)
                step += 1
        bar.close()
        self.eval()
        return log

    def eval_alignment(self, eval_dataloader: Iterable, compute_metrics: Callable,
                       inputs_collator: Optional[Callable] = None, progress: bool = True) -> dict:
        """``compute_metrics(outputs_list, labels_list)`` over every batch, without grad
        (interchange intervention accuracy for the usual metric, ``iia``)."""
        from tqdm.auto import tqdm

        outs, labels = [], []
        with torch.no_grad():
            for batch in tqdm(list(eval_dataloader), desc="eval_alignment", disable=not progress):
                batch = inputs_collator(batch) if inputs_collator else batch
                _, out = self(batch["base"], batch.get("sources"), batch.get("unit_locations"),
                              subspaces=batch.get("subspaces"))
                outs.append(out)
                labels.append(batch["labels"])
        return compute_metrics(outs, labels)

    # -- files --------------------------------------------------------------------------

    def save(self, save_directory: Union[str, Path], save_to_hf_hub: bool = False,
             hf_repo_name: Optional[str] = None) -> Path:
        """``config.json`` + ``tensors.safetensors`` (no pickle); functions cannot be saved."""
        from .spec import model_info, write_folder

        tensors, entries = {}, []
        for index, unit in enumerate(self._units):
            iv = self.interventions[unit["key"]]
            if isinstance(iv, LambdaIntervention):
                raise ValueError(f"intervention {unit['key']} is a Python function; only the "
                                 f"classes ({', '.join(it.CLASSES)}) can be saved")
            rep = self.representations[index]
            for name, value in iv.state_dict().items():
                tensors[f"{unit['key']}.{name}"] = value
            entries.append({"key": unit["key"], "class": type(iv).__name__,
                            "init": {k: v for k, v in iv.init_args().items()},
                            "layer": rep.layer, "component": rep.component, "unit": rep.unit,
                            "max_number_of_units": rep.max_number_of_units,
                            "state": sorted(iv.state_dict())})
        info = model_info(self.model) if self._is_lm() else {}
        folder = write_folder(save_directory, {"format": FORMAT, "version": VERSION, "model": info,
                                               "interventions": entries}, tensors)
        if save_to_hf_hub:
            self.push_to_hub(hf_repo_name or Path(save_directory).name)
        return folder

    def push_to_hub(self, repo_id: str, private: Optional[bool] = None, token: Optional[str] = None) -> str:
        """Upload the saved folder to a hub model repo; returns the commit URL."""
        from .spec import push_folder

        return push_folder(self.save, repo_id, private, token)

    @classmethod
    def load(cls, load_directory: Union[str, Path], model: Any,
             tokenizer: Any = None) -> "IntervenableModel":
        """From a folder or hub repo saved by ``save``, or an Interlace ``InterventionSet``
        folder (``tracer.spec``: its add/zero interventions become classes here)."""
        from .spec import SpecError, locate_folder, read_folder
        from . import spec as spec_mod

        folder = locate_folder(load_directory)
        config, tensors = read_folder(folder, (FORMAT, spec_mod.FORMAT),
                                      {FORMAT: VERSION, spec_mod.FORMAT: spec_mod.VERSION})
        if config["format"] == spec_mod.FORMAT:
            return cls._from_spec(spec_mod.InterventionSet.load(folder, None), model, tokenizer)
        reps = []
        for i, entry in enumerate(config.get("interventions", [])):
            try:
                klass = it.CLASSES[entry["class"]]
            except KeyError:
                raise SpecError(f"intervention {i} in {folder}: unknown class "
                                f"{entry.get('class')!r}; known classes are {', '.join(it.CLASSES)}") from None
            init = dict(entry.get("init", {}))
            iv = klass(**init)
            state = {}
            for name in entry.get("state", []):
                key = f"{entry['key']}.{name}"
                if key not in tensors:
                    raise SpecError(f"intervention {i} in {folder}: tensor {key!r} is missing")
                state[name] = tensors[key]
            if "source_representation" in state:
                iv.source_representation = state["source_representation"]
            try:
                iv.load_state_dict(state)
            except RuntimeError as error:
                raise SpecError(f"intervention {i} in {folder} does not fit its class: "
                                f"{str(error).splitlines()[0]}") from None
            reps.append(RepresentationConfig(entry.get("layer"), entry["component"], entry.get("unit", "pos"),
                                             entry.get("max_number_of_units", 1), intervention=iv,
                                             name=entry["key"]))
        pv = cls(reps, model, tokenizer=tokenizer)
        if pv._is_lm() and config.get("model"):
            want, have = config["model"], model_info_safe(pv.model)
            for key in ("hidden_size", "num_layers", "num_heads", "head_dim"):
                if want.get(key) is not None and want[key] != have.get(key):
                    raise SpecError(f"these interventions were made for a model with {key}="
                                    f"{want[key]}; this model has {key}={have.get(key)}")
        return pv

    @classmethod
    def _from_spec(cls, spec: Any, model: Any, tokenizer: Any) -> "IntervenableModel":
        reps = []
        for iv in spec.interventions:
            if iv.kind == "add":
                vector = iv.params["vector"] * float(iv.params.get("alpha", 1.0))
                made = it.AdditionIntervention(None, source_representation=vector)
            elif iv.kind == "zero":
                made = it.ZeroIntervention()
            else:
                raise ValueError(f"an InterventionSet {iv.kind!r} intervention has no pyvene class; "
                                 f"apply it with tracer.spec instead")
            if iv.positions is not None:
                raise ValueError("IntervenableModel.load takes InterventionSets without stored "
                                 "positions (positions come from unit_locations here)")
            kind, _, layer = iv.site.partition(".")
            unit = "h" if iv.heads is not None else "pos"
            if iv.heads is not None:
                made = _HeadsIntervention(made, list(iv.heads), dims_of(_module_of(model).config).head_dim)
                unit = "pos"
                kind = {"head_out": "attention_value_output", "head_q": "query_output",
                        "head_k": "key_output", "head_v": "value_output"}[kind]
            reps.append(RepresentationConfig(int(layer) if layer else None, kind, unit, intervention=made))
        return cls(reps, model, tokenizer=tokenizer)


class _HeadsIntervention(BaseIntervention):
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


def _depth(v: Any) -> int:
    """Nesting depth of a location list, along first elements."""
    d = 0
    while isinstance(v, (list, tuple)) and v:
        v, d = v[0], d + 1
    return d


def model_info_safe(model: Any) -> dict:
    from .spec import model_info

    try:
        return model_info(model)
    except AttributeError:
        return {}
