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

from typing import Any, Optional

import torch
from torch import nn

from ..interventions import Intervention, Source
from ..sites import ALIASES, HEAD_SITES, SITE_NAMES, Site, config as model_config
from . import interventions as it
from . import mapping, routing, steps
from .config import (UNITS, PerRow, RepresentationConfig, locations, mode_of, per_row,
                     representations, shift_positions, subspaces_of)
from .outputs import IntervenableModelOutput, lm_loss
from .interventions import BaseIntervention, LambdaIntervention
from .storage import Storage
from .wrapping import wrap
from .training import Training


def _rows_of(value: Any, start: int, stop: int, batch: int) -> Any:
    """Rows ``start:stop`` of a model output of the whole batch: its tensors with a batch
    axis sliced, inside tuples and ``ModelOutput``s (a classifier's logits and states)."""
    if isinstance(value, torch.Tensor):
        return value[start:stop] if value.dim() and value.shape[0] == batch else value
    if isinstance(value, tuple) and not hasattr(value, "keys"):
        return tuple(_rows_of(v, start, stop, batch) for v in value)
    if hasattr(value, "keys") and hasattr(value, "__dataclass_fields__"):
        return type(value)(**{k: _rows_of(v, start, stop, batch) for k, v in value.items()})
    return value


class IntervenableModel(Training, Storage, nn.Module):
    """A model with interventions mounted at named components; an ``nn.Module`` whose
    parameters are the interventions' (the model's own stay frozen for training)."""

    def __init__(self, config: Any = None, model: Any = None, tokenizer: Any = None,
                 intervenable_config: Any = None, remote: bool = False, position_ids: str = "mask"):
        """``position_ids``: ``"mask"`` (default) keeps each left-padded row at the positions
        it has alone (from its attention mask); ``"plain"`` numbers every row 0..width-1,
        pads included, as pyvene 0.1.8's plain forward does (GPT-2 then shifts a padded
        row's positions; models that derive positions from the mask do not care)."""
        super().__init__()
        config = config if config is not None else intervenable_config
        if config is None or model is None:
            raise TypeError("IntervenableModel needs a config and a model")
        if position_ids not in ("mask", "plain"):
            raise ValueError(f"position_ids must be 'mask' or 'plain', not {position_ids!r}")
        self.position_ids = position_ids
        self.model = wrap(model, tokenizer)
        mapping.register_mapping(self.model)  # pyvene's tables for a model type with no row
        self.remote = remote
        self.mode = mode_of(config)
        routing.check_model_type(self.model, getattr(config, "model_type", None))
        self.representations = representations(config)
        self.interventions = nn.ModuleDict()
        self._links: dict = {}  # intervention_link_key -> the one intervention module linked units share
        # config order; ``_exec`` is the model's execution order, which nnsight requires (a
        # stable sort: units at one site keep config order, which serial chains rely on)
        self._units = [self._bind(i, rep) for i, rep in enumerate(self.representations)]
        self._exec = sorted(range(len(self._units)), key=lambda k: self._units[k]["order"])
        self.keys = [u["key"] for u in self._units]
        self._group = routing.groups_of(self.representations)

    # -- config -> sites ----------------------------------------------------------------

    def _bind(self, i: int, rep: RepresentationConfig) -> dict:
        if rep.unit not in UNITS:
            raise ValueError(f"representation {i}: unknown unit {rep.unit!r}; valid units are "
                             f"{', '.join(UNITS)}")
        s = Site(self.model, self._site_name(i, rep))
        has_heads = s.n_heads is not None
        if rep.unit in ("h", "h.pos") and not has_heads:
            heads_components = [k for k, v in ALIASES.items() if v[0] in HEAD_SITES and not v[1]]
            raise ValueError(f"representation {i}: unit {rep.unit!r} needs a head component, "
                             f"and {rep.component!r} has no heads; head components are "
                             f"{', '.join(heads_components)}")
        link = rep.intervention_link_key
        if link is not None and link in self._links:  # linked: one module, one set of weights
            intervention = self._links[link]
        else:
            width = s.width if s.width is not None else mapping.component_width(self.model, rep.component)
            intervention = self._make(i, rep, width)
            if link is not None:
                self._links[link] = intervention
        key = rep.name or f"layer_{rep.layer}_comp_{rep.component}_unit_{rep.unit}_nunit_{rep.max_number_of_units}#{i}"
        self.interventions[key.replace(".", "_")] = intervention
        skip_from = None
        if isinstance(intervention, it.SkipIntervention):
            if s.raw_path is not None and s.port == "output":
                skip_from = f"{s.module_path}.input"
            elif s.kind == "resid_post":
                skip_from = f"resid_pre.{s.layer}"
            else:
                raise ValueError(f"representation {i}: SkipIntervention needs a block_output or a "
                                 f"module '.output' component, not {rep.component!r}")
        return {"key": key.replace(".", "_"), "site": s.name, "heads": has_heads,
                "unit": rep.unit, "order": s.order, "skip_from": skip_from}

    def _site_name(self, i: int, rep: RepresentationConfig) -> str:
        """The site (or alias, or module path) a representation names."""
        comp = rep.component
        if comp.endswith((".output", ".input")) and comp.split(".")[0] not in SITE_NAMES + tuple(ALIASES):
            path, port = comp.rsplit(".", 1)
            return path.replace("[", ".").replace("]", "") + "." + port
        by_table = mapping.module_component(self.model, comp, rep.layer)
        if by_table is not None:  # a module-only model (pyvene's MLP, GRU): its table's path
            return by_table
        try:
            model_config(self.model)
        except AttributeError:
            raise ValueError(f"representation {i}: this model has no transformers config, so "
                             f"components must be module paths ending in .output or .input "
                             f"(got {comp!r})") from None
        if comp in ("embed", "final", "logits"):
            return comp
        if comp in SITE_NAMES or comp in ALIASES:
            return f"{comp}.{0 if rep.layer is None else rep.layer}"  # pyvene: layer 0 by default
        valid = list(ALIASES) + list(SITE_NAMES)
        raise ValueError(f"representation {i}: unknown component {comp!r}; valid components are "
                         f"{', '.join(valid)}, or a module path such as "
                         f"'model.layers[0].mlp.output'")

    def _make(self, i: int, rep: RepresentationConfig, width: Optional[int]) -> BaseIntervention:
        given = rep.intervention if rep.intervention is not None else rep.intervention_type
        units = int(rep.max_number_of_units or 1)
        if given is None:
            raise ValueError(f"representation {i}: no intervention; set 'intervention' (a class, "
                             f"an instance or a function) or 'intervention_type'")
        if isinstance(given, BaseIntervention):
            iv = given
        elif isinstance(given, type) and issubclass(given, BaseIntervention):
            try:
                iv = it.build(given, width, units, low_rank_dimension=rep.low_rank_dimension,
                              latent_dim=rep.latent_dim, source_representation=rep.source_representation)
            except ValueError as error:
                raise ValueError(f"representation {i}: {error}") from None
        elif callable(given):
            iv = LambdaIntervention(given, width, source_representation=rep.source_representation)
        else:
            raise ValueError(f"representation {i}: intervention {given!r} is not an intervention "
                             f"class, instance or function; classes are {', '.join(it.CLASSES)}")
        if iv.embed_dim is not None and width is not None and iv.embed_dim not in (width, width * units):
            raise ValueError(f"representation {i}: {type(iv).__name__} has embed_dim {iv.embed_dim} "
                             f"but {rep.component} is {width} wide"
                             + (f" ({width * units} for its {units} units)" if units > 1 else ""))
        return iv

    # -- running --------------------------------------------------------------------------

    @staticmethod
    def _batch(inputs: Any) -> int:
        if isinstance(inputs, dict) or hasattr(inputs, "keys"):
            first = next(iter(dict(inputs).values()))
            return int(first.shape[0])
        return int(inputs.shape[0])

    def _is_lm(self) -> bool:
        try:
            model_config(self.model)
            return True
        except AttributeError:
            return False

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

    def _reads(self) -> list[bool]:
        """Per unit, whether it takes a source (Skip reads its own site; sourceless kinds none)."""
        return [u["skip_from"] is None and getattr(self.interventions[u["key"]], "needs_source", True)
                for u in self._units]

    def _subspaces(self, subspaces: Any, k: int, shared: bool = False) -> Any:
        """Representation k's subspace dims (``config.subspaces_of``); ``shared``: one list
        for every row (what generate takes)."""
        sub = subspaces_of(subspaces, k, len(self._units), self.representations[k].subspace_partition)
        if shared and isinstance(sub, PerRow):
            raise ValueError("generate needs the same subspaces in every batch row")
        return sub

    def _bound(self, plan: list, source_representations: Any, subspaces: Any,
               layout: dict) -> list[list[Intervention]]:
        """Per representation (config order), its ``Intervention`` records on its destination
        rows of the combined batch (one, or one per head list when heads differ between
        rows); sources are other rows of the same batch."""
        constants = self._constant_sources(source_representations)
        lm = self._is_lm()
        bound = []
        for k, unit in enumerate(self._units):
            if plan[k] is None:
                bound.append([])
                continue
            src, dst, loc = plan[k]
            d = 0 if dst is None else layout["source_block"][dst]
            dst_rows = layout["rows"][d]
            pos = shift_positions(loc[1], layout["pads"][d], len(dst_rows)) if lm else None
            if unit["skip_from"] is not None:
                source = Source(site=unit["skip_from"])
            elif src is not None:
                b = layout["source_block"][src]
                rows = layout["rows"][b]
                rows = rows * len(dst_rows) if len(rows) == 1 else rows
                if len(rows) != len(dst_rows):
                    raise ValueError(f"source {src} has {len(rows)} rows but the "
                                     f"{'base' if dst is None else f'source {dst}'} has {len(dst_rows)}")
                src_pos = shift_positions(loc[0], layout["pads"][b], len(rows)) if lm else None
                source = Source(row=rows, positions=src_pos)
            else:
                source = constants[k]
            heads = loc[2] if unit["heads"] else None
            sub = self._subspaces(subspaces, k)
            record = Intervention(self.interventions[unit["key"]], unit["site"], pos,
                                  None if isinstance(heads, PerRow) else heads, rows=dst_rows, source=source,
                                  subspaces=None if isinstance(sub, PerRow) else sub)
            rowwise = [(v, name) for v, name in ((heads, "heads"), (sub, "subspaces")) if isinstance(v, PerRow)]
            if rowwise and isinstance(record.kind, it.CollectIntervention):
                raise ValueError("CollectIntervention needs the same heads and subspaces in every batch row")
            if len(rowwise) > 1:
                raise ValueError("give either heads or subspaces per batch row, not both")
            bound.append(per_row(record, *rowwise[0]) if rowwise else [record])
        return bound

    def forward(self, base: Any, sources: Optional[list] = None, unit_locations: Any = None,
                source_representations: Any = None, subspaces: Any = None,
                output_original_output: bool = True, return_dict: Optional[bool] = None,
                labels: Any = None, use_cache: Optional[bool] = None,
                intervention_additional_kwargs: Optional[dict] = None) -> Any:
        """``(original, intervened)`` model outputs; with Collect interventions the first item
        is ``(original, [collected values])``.  The original is computed by default, as
        pyvene's README uses it (pyvene 0.1.8 itself returns None unless
        ``output_original_output=True``); pass False to skip it.

        One forward pass: the base rows, the sources' rows and (with
        ``output_original_output``) an untouched copy of the base run side by side in one
        batch (left-padded to a common width, with position ids that keep each row's own
        positions); locally, or as one NDIF request with ``remote=True``.
        """
        from .. import execute

        if sources is not None and not isinstance(sources, (list, tuple)):
            sources = [sources]
        plan = routing.plan(self.mode, self._units, self._reads(), self._group, sources, unit_locations,
                            self._batch(base), source_representations is not None)
        used = sorted({b for p in plan if p is not None for b in p[:2] if b is not None})
        blocks = [base] + [sources[b] for b in used] + ([base] if output_original_output else [])
        inputs, layout = self._combine(blocks)
        layout["source_block"] = {b: 1 + j for j, b in enumerate(used)}
        bound = self._bound(plan, source_representations, subspaces, layout)
        bound = [[self._with_kwargs(r, intervention_additional_kwargs) for r in rs] for rs in bound]
        self._check_sources([r for rs in bound for r in rs])
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        if self.remote and grad:
            raise ValueError("training runs locally; evaluate remotely under torch.no_grad()")
        if self.remote and not self._is_lm():
            raise ValueError("remote runs need a language model served by NDIF")
        pairs = [(k, r) for k in self._exec for r in bound[k]]
        if any(u["unit"] == "t" for u in self._units):
            pairs = self._at_steps(pairs, inputs)
        owner = [k for k, _ in pairs]
        ordered = [r for _, r in pairs]
        if self.remote:
            ordered = [u.replace(kind=it.shippable(u.kind)) for u in ordered]
        collect = [i for i, u in enumerate(ordered) if isinstance(it.unwrapped(u.kind), it.CollectIntervention)]
        seen, out, hidden = execute.forward(self.model, inputs, ordered, collect,
                                            remote=self.remote, grad=grad)
        # pyvene returns values collected on "h.pos" units as (batch, heads, positions, dim)
        seen = [v.transpose(1, 2) if self._units[owner[i]]["unit"] == "h.pos" and v.dim() == 4 else v
                for i, v in zip(collect, seen)]
        intervened = self._output(out, hidden, layout, 0)
        original = self._output(out, hidden, layout, len(blocks) - 1) if output_original_output else None
        if labels is not None:  # as pyvene: the model's loss on the intervened run
            if hidden is None:
                raise ValueError("labels= needs a language model (its loss is on the logits)")
            intervened["loss"] = lm_loss(intervened.logits, torch.as_tensor(labels))
        # use_cache: accepted for pyvene's signature; a call is one pass and keeps no cache
        if return_dict:
            return IntervenableModelOutput(original_outputs=original, intervened_outputs=intervened,
                                           collected_activations=list(seen) if collect else None)
        if collect:
            return (original, list(seen)), intervened
        return original, intervened

    def _at_steps(self, pairs: list, inputs: Any) -> list:
        """``"t"`` units' records as one record per time step (``steps``), their sources'
        values read in a pass of their own first; every record then in call order."""
        from .. import execute

        if self.mode != "parallel":
            raise ValueError("'t' units run in parallel mode (a serial chain would need a pass "
                             "per source and step)")
        stepped = [(k, r) for k, r in pairs if self._units[k]["unit"] == "t"]
        records = [r for _, r in stepped]
        keys, collects = steps.reads(records)
        values: dict = {}
        if collects:
            order = sorted(range(len(collects)), key=lambda i: Site(self.model, collects[i].site).order)
            got, _, _ = execute.forward(self.model, inputs, [collects[i] for i in order],
                                        range(len(collects)))
            values = {keys[i]: v for i, v in zip(order, got)}
        out = [(k, r) for k, r in pairs if self._units[k]["unit"] != "t"]
        out += [(stepped[j][0], w) for j, w in steps.writes(records, values)]
        return sorted(out, key=lambda pair: Site(self.model, pair[1].site).order)

    def _combine(self, blocks: list) -> tuple[Any, dict]:
        """Inputs as one batch: rows of each block, left-padded to a common width for
        language models, each block keeping its own position ids."""
        rows, start = [], 0
        for b in blocks:
            n = self._batch(b)
            rows.append(list(range(start, start + n)))
            start += n
        if not all(isinstance(b, dict) or hasattr(b, "keys") for b in blocks):
            return torch.cat([torch.as_tensor(b) for b in blocks]), {"rows": rows, "pads": [0] * len(blocks)}
        dicts = [dict(b) for b in blocks]
        if not all("input_ids" in d for d in dicts):  # inputs_embeds (pyvene's toy models)
            keys = set(dicts[0])
            if any(set(d) != keys for d in dicts):
                raise ValueError(f"the base and the sources must give the same inputs "
                                 f"(got {[sorted(d) for d in dicts]})")
            try:
                inputs = {k: torch.cat([torch.as_tensor(d[k]) for d in dicts]) for k in keys}
            except RuntimeError as error:
                raise ValueError(f"the base and the sources must have the same number of steps "
                                 f"when given as inputs_embeds ({str(error).splitlines()[0]})") from None
            return inputs, {"rows": rows, "pads": [0] * len(blocks)}
        widths = [int(d["input_ids"].shape[1]) for d in dicts]
        width = max(widths)
        out: dict = {"input_ids": [], "attention_mask": []}
        plain = self.position_ids == "plain"
        if plain or len(set(widths)) > 1 or any("position_ids" in d for d in dicts):
            out["position_ids"] = []
        pad_id = getattr(getattr(self.model, "tokenizer", None), "pad_token_id", None) or 0
        for d, w in zip(dicts, widths):
            ids = d["input_ids"]
            k = width - w
            out["input_ids"].append(torch.nn.functional.pad(ids, (k, 0), value=pad_id))
            mask = d.get("attention_mask", torch.ones_like(ids))
            out["attention_mask"].append(torch.nn.functional.pad(mask, (k, 0), value=0))
            if "position_ids" in out:
                own = torch.arange(w).expand(ids.shape[0], w) if plain else (mask.cumsum(-1) - 1).clamp(min=0)
                pos = d.get("position_ids", own)
                out["position_ids"].append(torch.nn.functional.pad(pos, (k, 0), value=0))
        inputs = {key: torch.cat(v) for key, v in out.items()}
        return inputs, {"rows": rows, "pads": [width - w for w in widths]}

    def _output(self, out: Any, hidden: Any, layout: dict, block: int) -> Any:
        """One block's slice of the batch output, in the caller's own width."""
        rows, pad = layout["rows"][block], layout["pads"][block]
        if hidden is None:
            from transformers.utils import ModelOutput

            if isinstance(out, ModelOutput) and "last_hidden_state" in out:  # a base model
                from transformers.modeling_outputs import BaseModelOutputWithPast

                return BaseModelOutputWithPast(last_hidden_state=out["last_hidden_state"][rows[0]:rows[-1] + 1, pad:])
            return _rows_of(out, rows[0], rows[-1] + 1, layout["rows"][-1][-1] + 1)
        from transformers.modeling_outputs import CausalLMOutputWithPast

        result = CausalLMOutputWithPast(logits=out[rows[0]:rows[-1] + 1, pad:])
        result["last_hidden_state"] = hidden[rows[0]:rows[-1] + 1, pad:]
        return result

    def _generation_records(self, locs: list, sources: Optional[list], source_representations: Any,
                            subspaces: Any, batch: int) -> list[Intervention]:
        """Records for ``generate``: the sources' values are read first (one plan), then
        applied as tensors at every generation step."""
        from .. import execute
        from ..plan import Activations, Group

        values = self._constant_sources(source_representations)
        blocks = routing.source_blocks(self._reads(), self._group, sources) \
            if source_representations is None else [None] * len(values)
        if routing.SKIPPED in blocks:
            raise ValueError("generate needs a source for every intervention group that reads one")
        reading = [k for k, b in enumerate(blocks) if b is not None]
        groups = []  # one group per (unit, source row), all read in one plan
        for k in reading:
            src = dict(sources[blocks[k]])
            ids, mask = src["input_ids"], src.get("attention_mask", torch.ones_like(src["input_ids"]))
            for r in range(ids.shape[0]):
                pad = int((mask[r] == 0).long().cumprod(0).sum())
                pos = locs[k][0][r].tolist() if isinstance(locs[k][0], torch.Tensor) else locs[k][0]
                pos = None if pos is None else tuple(p - pad if p >= 0 else p for p in pos)
                groups.append(Group([ids[r, pad:].tolist()], [],
                                    [Activations(self._units[k]["site"], 0, pos)], key=k))
        if any(isinstance(loc[2], PerRow) for loc in locs):
            raise ValueError("generate needs the same heads in every batch row; give per-row "
                             "heads to forward, or one head list to generate")
        got = execute.run(self.model, groups, progress=False) if groups else []
        for k in reading:
            value = torch.stack([r[0] for g, r in zip(groups, got) if g.key == k])
            heads = locs[k][2] if self._units[k]["heads"] else None
            values[k] = value[:, :, heads] if heads is not None else value
        return [Intervention(self.interventions[u["key"]], u["site"], locs[k][1],
                             locs[k][2] if u["heads"] else None,
                             source=Source(site=u["skip_from"]) if u["skip_from"] else values[k],
                             subspaces=self._subspaces(subspaces, k, shared=True))
                for k, u in enumerate(self._units)]

    @staticmethod
    def _with_kwargs(record: Intervention, extra: Optional[dict]) -> Intervention:
        """pyvene's ``intervention_additional_kwargs``: passed to every intervention call
        (Lambda functions take only base and source, as in pyvene)."""
        if not extra or isinstance(record.kind, LambdaIntervention):
            return record
        return record.replace(kind=it.WithKwargs(record.kind, extra))

    @staticmethod
    def _generation_steps(intervene_on_prompt: bool, unit_locations: Any) -> str:
        """pyvene's rule: on the prompt only at its unit locations; with no locations every
        prompt position and then every new token; without ``intervene_on_prompt`` the new
        tokens only."""
        if not intervene_on_prompt:
            return "generated"
        return "all" if unit_locations is None else "prompt"

    def _check_sources(self, units: list[Intervention]) -> None:
        for u in units:
            iv = u.kind
            if getattr(iv, "needs_source", True) and u.source is None \
                    and getattr(iv, "source_representation", None) is None \
                    and not isinstance(iv, LambdaIntervention):
                raise ValueError(f"{type(iv).__name__} at {u.site} needs a source: pass sources=[...] "
                                 f"with unit_locations, or source_representations=")

    def generate(self, base: Any, sources: Optional[list] = None, unit_locations: Any = None,
                 source_representations: Any = None, intervene_on_prompt: bool = False,
                 subspaces: Any = None, max_length: Optional[int] = None,
                 max_new_tokens: Optional[int] = None, output_original_output: bool = True,
                 intervention_additional_kwargs: Optional[dict] = None, **kwargs: Any) -> tuple:
        """``(original tokens, intervened tokens)`` from one batched ``generate``.

        As in pyvene, interventions apply to the generated tokens (each step's new position),
        or with ``intervene_on_prompt=True`` to the prompt at the base unit locations, or,
        without unit locations, to every prompt position and every new token (see
        ``tracer.generation`` for the per-step rule).
        """
        from .. import generation

        if self.remote:
            raise ValueError("IntervenableModel.generate runs locally; for steering on NDIF use "
                             "tracer.generation.generate(model, prompts, interventions, remote=True)")
        if not hasattr(self.model, "generate") or not hasattr(self.model, "tokenizer"):
            raise ValueError("generate needs a language model wrapped with a tokenizer: pass "
                             "tokenizer= to IntervenableModel, or an nnsight TransformersModel")
        if self.mode != "parallel":
            raise ValueError("generate applies parallel interventions; serial chains of sources run "
                             "in forward (mode='serial')")
        if sources is not None and not isinstance(sources, (list, tuple)):
            sources = [sources]
        prompt = dict(base) if hasattr(base, "keys") else base
        batch = self._batch(prompt) if not isinstance(prompt, (str, list)) else (1 if isinstance(prompt, str) else len(prompt))
        width = prompt["input_ids"].shape[1] if isinstance(prompt, dict) else None
        if max_new_tokens is None:
            if max_length is None:
                raise ValueError("give max_new_tokens or max_length")
            max_new_tokens = max_length - (width or 0)
        locs = locations(self._units, unit_locations, batch)
        units = self._generation_records(locs, sources, source_representations, subspaces, batch)
        units = [self._with_kwargs(u, intervention_additional_kwargs) for u in units]
        self._check_sources(units)
        out = generation.generate(self.model, prompt, units, max_new_tokens,
                                  where=self._generation_steps(intervene_on_prompt, unit_locations),
                                  compare=output_original_output, **kwargs)
        return out.plain_tokens, out.steered_tokens
