"""Folders pyvene saved (``config.json`` + ``intkey_*.bin``): read with
``torch.load(weights_only=True)``, which refuses anything but tensors and containers, and
never outside the folder.  ``read_pyvene`` gives every intervention's fields, class and
state (``IntervenableModel.load`` builds any class from them); ``from_pyvene`` turns the
plain-tensor ones (Addition, Subtraction, Zero) into an ``InterventionSet``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

import torch

from ..files import CONFIG, InterventionSet, SpecError, _inside, model_info
from ..interventions import Intervention
from ..sites import ALIASES, site as resolve_site
from . import interventions as it


PYVENE_FIELDS = ("layer", "component", "unit", "max_number_of_units", "low_rank_dimension",
                 "intervention_type", "intervention", "subspace_partition", "group_key",
                 "intervention_link_key", "moe_key", "source_representation",
                 "hidden_source_representation", "latent_dim")  # pyvene's RepresentationConfig


def read_pyvene(folder: Union[str, Path]) -> list[dict]:
    """The interventions of a folder pyvene saved (``config.json`` + ``intkey_*.bin``): per
    intervention its representation fields, class name, interchange dim and state (tensors
    read with ``torch.load(weights_only=True)``, which refuses anything but tensors; only the
    folder's own files are read)."""
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG).read_text())
        reprs = config["representations"]
        types = config["intervention_types"]
        keys = config.get("sorted_keys") or []
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise SpecError(f"{folder} is not a pyvene intervention folder ({error!r})") from None
    if not isinstance(reprs, list) or not isinstance(types, list) or len(reprs) != len(types):
        raise SpecError(f"{folder}/config.json: 'representations' and 'intervention_types' must be "
                        f"lists of the same length")
    dims = config.get("intervention_dimensions") or [None] * len(reprs)
    out = []
    for i, (rep, type_str) in enumerate(zip(reprs, types)):
        fields = dict(zip(PYVENE_FIELDS, rep)) if isinstance(rep, list) else dict(rep)
        if not isinstance(fields.get("component"), str):
            raise SpecError(f"{folder}/config.json: representation {i} names no component")
        cls = str(type_str).rsplit(".", 1)[-1].strip("'>")
        key = keys[i] if i < len(keys) else None
        path = _inside(folder, f"intkey_{key}.bin") if key else None
        if path is None or not path.is_file():
            found = sorted(folder.glob("intkey_*.bin"))
            path = found[i] if len(found) == len(reprs) else None
        state = None
        if path is not None:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # noqa: BLE001 - anything but plain tensors is refused here
                raise SpecError(f"{path} is not a plain-tensor pyvene file ({error})") from None
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise SpecError(f"{path} is not a state dict of tensors")
        out.append({"fields": fields, "class": cls, "state": state,
                    "interchange_dim": dims[i] if i < len(dims) else None, "file": path})
    return out


def restore(iv: Any, item: dict, where: str) -> Any:
    """Put a folder item's interchange dim, constant source and trained weights into the
    intervention ``iv`` built for it; one ``SpecError`` naming ``where`` when they do not fit."""
    state = {k: v for k, v in (item["state"] or {}).items() if k not in ("embed_dim", "interchange_dim")}
    source = state.pop("source_representation", None)
    try:
        if item["interchange_dim"] is not None:
            iv.set_interchange_dim(item["interchange_dim"])
        if source is not None:
            iv.source_representation = source.float()
        if iv.trainable:
            iv.load_state_dict(state)
        elif state:
            raise ValueError(f"unexpected tensors {sorted(state)}")
    except (RuntimeError, ValueError, TypeError) as error:
        raise SpecError(f"{item['file'] or where}: pyvene's {item['class']} does not fit "
                        f"{where} ({str(error).splitlines()[0]})") from None
    return iv


def klass_of(item: dict, folder: Any, i: int) -> type:
    """The class here of a folder item, or one ``SpecError`` listing those that load."""
    klass = it.CLASSES.get(item["class"])
    if klass is None:
        raise SpecError(f"{folder}: intervention {i} is pyvene's {item['class']}, which has no "
                        f"class here; classes that load are {', '.join(it.CLASSES)}")
    return klass


def from_pyvene(folder: Union[str, Path], model: Any) -> InterventionSet:
    """A pyvene saved-intervention folder as an ``InterventionSet``: plain tensors (Addition /
    Subtraction with a constant source, Zero) as Interlace's own kinds, every other class
    here (Vanilla, the rotations, the autoencoder...) as that class with its dims and
    weights; a class that has none is one ``SpecError``."""
    interventions = []
    for i, item in enumerate(read_pyvene(folder)):
        f = item["fields"]
        layer, component, cls = f.get("layer"), f["component"], item["class"]
        if component in ALIASES:
            site = resolve_site(model, f"{component}.{layer}")
        elif component.endswith((".output", ".input")):
            site = resolve_site(model, component)
        else:
            raise SpecError(f"pyvene component {component!r} has no Interlace site; known "
                            f"components are {', '.join(ALIASES)} or module paths")
        vector = (item["state"] or {}).get("source_representation")
        if "Zero" in cls:
            interventions.append(Intervention("zero", site.name))
        elif ("Addition" in cls or "Subtraction" in cls) and isinstance(vector, torch.Tensor):
            vector = -vector if "Subtraction" in cls else vector
            interventions.append(Intervention("add", site.name, None, None, {"vector": vector.float()}))
        else:
            klass = klass_of(item, folder, i)
            iv = it.build(klass, site.width, int(f.get("max_number_of_units") or 1),
                          low_rank_dimension=f.get("low_rank_dimension"), latent_dim=f.get("latent_dim"))
            interventions.append(Intervention(restore(iv, item, f"layer {layer} {component}"), site.name))
    spec = InterventionSet(interventions, model_info(model), {"source": "pyvene", "folder": str(folder)})
    spec.check(model)
    return spec
