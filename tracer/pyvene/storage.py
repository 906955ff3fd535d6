"""Saving and loading an ``IntervenableModel`` (the ``Storage`` half of it): the one folder
format of ``tracer.files``, hub pushes, ``InterventionSet`` folders and folders pyvene saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from ..files import InterventionSet, SpecError, locate_folder, model_info, push_folder
from ..interventions import Intervention
from ..sites import Site
from . import interventions as it
from .config import RepresentationConfig
from .folders import klass_of, read_pyvene, restore
from .wrapping import wrap


class Storage:
    """The files half of ``IntervenableModel`` (it needs ``self.model``, ``self._units``,
    ``self.representations`` and ``self.interventions``)."""

    def save(self, save_directory: Union[str, Path], save_to_hf_hub: bool = False,
             hf_repo_name: Optional[str] = None) -> Path:
        """An ``InterventionSet`` folder (``tracer.files``: ``config.json`` +
        ``tensors.safetensors``, no pickle) with each representation's pyvene fields in its
        meta; Python functions cannot be saved."""
        records, meta = [], []
        for unit, rep in zip(self._units, self.representations):
            records.append(Intervention(self.interventions[unit["key"]], unit["site"]))
            meta.append({"key": unit["key"], "layer": rep.layer, "component": rep.component,
                         "unit": rep.unit, "max_number_of_units": rep.max_number_of_units})
        folder = InterventionSet(records, model_info(self.model), {"pyvene": meta}).save(save_directory)
        if save_to_hf_hub:
            try:
                self.push_to_hub(hf_repo_name or Path(save_directory).name)
            except Exception as error:  # noqa: BLE001 - offline, no token, refused: one clear error
                raise OSError(f"saved to {folder}, but the upload to the Hugging Face hub failed "
                              f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                              f"the folder is kept: push it later with push_to_hub") from None
        return folder

    def push_to_hub(self, repo_id: str, private: Optional[bool] = None, token: Optional[str] = None) -> str:
        """Upload the saved folder to a hub model repo; returns the commit URL."""
        return push_folder(self.save, repo_id, private, token)

    @classmethod
    def load(cls, load_directory: Union[str, Path], model: Any,
             tokenizer: Any = None) -> Any:
        """From a folder or hub repo written by ``save`` (either format version), any
        ``InterventionSet`` folder (its add/zero interventions become classes here), or a
        folder pyvene saved (any class here: tensors read with ``weights_only=True``)."""
        import json

        wrapped = wrap(model, tokenizer)
        folder = locate_folder(load_directory)
        try:
            head = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            head = {}
        if isinstance(head, dict) and "intervention_types" in head and "representations" in head:
            return cls._from_pyvene(folder, wrapped, tokenizer)  # pyvene's own
        spec = InterventionSet.load(folder, wrapped)
        fields = spec.meta.get("pyvene")
        if not fields:
            return cls._from_spec(spec, wrapped, tokenizer)
        if not isinstance(fields, list) or len(fields) != len(spec.interventions) or \
                not all(isinstance(f, dict) and f.get("component") and f.get("key") for f in fields):
            raise SpecError(f"{locate_folder(load_directory)}: its meta 'pyvene' must list one "
                            f"representation (with a 'component' and its 'key') per intervention")
        kinds = [i for i, iv in enumerate(spec.interventions) if iv.module is None]
        if kinds:
            raise SpecError(f"{locate_folder(load_directory)}: intervention(s) {kinds} are function "
                            f"kinds ({spec.interventions[kinds[0]].kind!r}); a front-end folder holds "
                            f"intervention classes: load it with tracer.files.load instead")
        reps = [RepresentationConfig(f.get("layer"), f["component"], f.get("unit", "pos"),
                                     f.get("max_number_of_units", 1), intervention=iv.kind,
                                     name=f.get("key"))
                for f, iv in zip(fields, spec.interventions)]
        return cls(reps, wrapped, tokenizer=tokenizer)

    @classmethod
    def _from_pyvene(cls, folder: Path, model: Any, tokenizer: Any) -> Any:
        """A folder pyvene's ``save`` wrote: its representations, classes, interchange dims,
        constant sources and trained weights."""
        items = read_pyvene(folder)
        reps = []
        for i, item in enumerate(items):
            f = item["fields"]
            reps.append(RepresentationConfig(
                f.get("layer"), f["component"], f.get("unit") or "pos", f.get("max_number_of_units") or 1,
                low_rank_dimension=f.get("low_rank_dimension"), intervention_type=klass_of(item, folder, i),
                subspace_partition=f.get("subspace_partition"), latent_dim=f.get("latent_dim")))
        made = cls(reps, model, tokenizer=tokenizer)
        for unit, item, rep in zip(made._units, items, reps):
            restore(made.interventions[unit["key"]], item, f"layer {rep.layer} {rep.component}")
        return made

    @classmethod
    def _from_spec(cls, spec: Any, model: Any, tokenizer: Any) -> Any:
        reps = []
        for iv in spec.interventions:
            if iv.kind == "add":
                vector = iv.params["vector"] * float(iv.params.get("alpha", 1.0))
                made = it.AdditionIntervention(None, source_representation=vector)
            elif iv.kind == "zero":
                made = it.ZeroIntervention()
            else:
                raise ValueError(f"an InterventionSet {iv.kind!r} intervention has no pyvene class; "
                                 f"apply it with tracer.files.InterventionSet.apply instead")
            if iv.positions is not None:
                raise ValueError("IntervenableModel.load takes InterventionSets without stored "
                                 "positions (positions come from unit_locations here)")
            kind, _, layer = iv.site.partition(".")
            unit = "h" if iv.heads is not None else "pos"
            if iv.heads is not None:
                made = it.HeadsIntervention(made, list(iv.heads), Site(model, iv.site).dims.head_dim)
                unit = "pos"
                kind = {"head_out": "attention_value_output", "head_q": "query_output",
                        "head_k": "key_output", "head_v": "value_output"}[kind]
            reps.append(RepresentationConfig(int(layer) if layer else None, kind, unit, intervention=made))
        return cls(reps, model, tokenizer=tokenizer)
