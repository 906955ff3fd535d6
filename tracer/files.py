"""Interventions as files: one folder format, ``config.json`` + ``tensors.safetensors``.

An ``InterventionSet`` is a list of ``Intervention`` records plus the shape of the model they
were made for.  Function kinds (``add``, ``affine``...) store their parameters; module kinds
(the pyvene-style classes, trainable ones included) store their class, constructor
arguments and state.  ``tracer.pyvene.IntervenableModel.save`` and the tuned lens write
through the same writer.  Folders of the previous format (``interlace.intervenable``) still
load.  It saves to a folder, loads back (from a folder or a Hugging Face hub repo), and
applies inside any trace: a plain forward, ``model.generate`` (call it inside the
``tracer.iter`` loop), or a remote trace.  Loading never unpickles: JSON and safetensors
only; pyvene's own folders are read by ``tracer.pyvene.folders``.

Everything is checked before anything is applied: a bad folder or a mismatch with the model
raises ``SpecError`` and leaves the model untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .interventions import KINDS, Intervention
from .locations import looks_local
from .sites import Site, config as model_config, dims_of, site as resolve_site

FORMAT = "interlace.interventions"
VERSION = 3  # 3: rotations stored as pyvene stores them (x @ W, W of shape (n, k))
LEGACY = "interlace.intervenable"  # the pyvene front end's own format before version 2
CONFIG, TENSORS = "config.json", "tensors.safetensors"
MAX_CONFIG_BYTES = 16 << 20   # a config is JSON metadata; tensors live in safetensors
MAX_WIDTH = 1 << 16           # no model's hidden size comes near this


class SpecError(ValueError):
    """A saved intervention folder is malformed, foreign, truncated or does not fit the model."""


def model_info(model: Any) -> dict:
    """The shape facts a saved intervention must agree with ({} for a model without a
    transformers config)."""
    try:
        config = model_config(model)
    except AttributeError:
        return {}
    d = dims_of(config)
    return {"model_type": config.model_type, "hidden_size": d.hidden, "num_layers": d.n_layers,
            "num_heads": d.n_heads, "num_kv_heads": d.n_kv_heads, "head_dim": d.head_dim}


def check_fits(want: dict, model: Any) -> None:
    """Refuse ``model`` when its shape differs from the one interventions were made for."""
    info = model_info(model)
    for key in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim"):
        if want.get(key) is not None and info and want[key] != info.get(key):
            raise SpecError(f"these interventions were made for a model with {key}={want[key]}; "
                            f"this model has {key}={info.get(key)}")


@dataclass
class InterventionSet:
    """Interventions that travel together, with the model shape they were made for."""

    interventions: list
    model: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    # -- checking and applying -------------------------------------------------------

    def check(self, model: Any) -> list[Site]:
        """Resolve every site on ``model`` and check every tensor's shape; raises SpecError."""
        check_fits(self.model, model)
        sites = []
        for i, iv in enumerate(self.interventions):
            try:
                s = resolve_site(model, iv.site)
            except (ValueError, IndexError) as error:
                raise SpecError(f"intervention {i} ({iv.kind} at {iv.site}): {error}") from None
            width = s.width
            if iv.heads is not None:
                if s.n_heads is None:
                    raise SpecError(f"intervention {i}: site {s.name} has no heads")
                bad = [h for h in iv.heads if not 0 <= h < s.n_heads]
                if bad:
                    raise SpecError(f"intervention {i}: heads {bad} out of range at {s.name} "
                                    f"(valid 0..{s.n_heads - 1})")
            for name, value in iv.params.items():
                if isinstance(value, torch.Tensor) and width is not None and value.dim() > 0 \
                        and value.shape[-1] != width:
                    raise SpecError(f"intervention {i} ({iv.kind} at {s.name}): {name} has shape "
                                    f"{tuple(value.shape)} but the site's last dimension is {width}")
                if isinstance(value, torch.Tensor) and iv.heads is not None and value.dim() >= 2 \
                        and value.shape[-2] not in (1, len(iv.heads)):
                    raise SpecError(f"intervention {i}: {name} has {value.shape[-2]} rows for "
                                    f"{len(iv.heads)} heads")
            sites.append(s)
        return sites

    def ordered(self, model: Any, positions: Any = "stored") -> list:
        """The interventions in execution order (``positions`` overrides the stored ones).

        Inside a remote trace apply these (``for iv in ivs: iv.apply(model)``): they ship by
        value, while this class, which reads files, stays on the client.
        """
        ivs = sorted(self.interventions, key=lambda iv: resolve_site(model, iv.site).order)
        if not (isinstance(positions, str) and positions == "stored"):
            ivs = [iv.with_positions(positions) for iv in ivs]
        return ivs

    def apply(self, model: Any, rows: Any = None, positions: Any = "stored") -> None:
        """Apply every intervention inside the current trace, in execution order.

        ``positions`` overrides the stored positions of all of them (``None`` = every position).
        """
        for iv in self.ordered(model, positions):
            iv.apply(model, rows=rows)

    # -- files -----------------------------------------------------------------------

    def save(self, folder: Union[str, Path]) -> Path:
        """Write ``config.json`` and ``tensors.safetensors`` into ``folder``."""
        from .pyvene.interventions import CLASSES

        tensors, entries = {}, []
        for i, iv in enumerate(self.interventions):
            entry = {"site": iv.site, "positions": _plain(iv.positions), "heads": _plain(iv.heads),
                     "subspaces": _plain(iv.subspaces)}
            if iv.module is not None:
                cls = type(iv.module).__name__
                if CLASSES.get(cls) is not type(iv.module):
                    raise ValueError(f"intervention {i} is a {cls}; only functions of "
                                     f"{', '.join(KINDS)} and the classes {', '.join(CLASSES)} can "
                                     f"be saved (a Python function cannot)")
                state = iv.module.state_dict()
                tensors.update({f"{i}.{name}": value for name, value in state.items()})
                entry.update({"class": cls, "init": iv.module.init_args(), "state": sorted(state)})
            else:
                params = {}
                for name, value in iv.params.items():
                    if isinstance(value, torch.Tensor):
                        tensors[f"{i}.{name}"] = value.detach().to("cpu").contiguous()
                        params[name] = {"tensor": f"{i}.{name}"}
                    else:
                        params[name] = float(value)
                entry.update({"kind": iv.kind, "params": params})
            entries.append(entry)
        config = {"format": FORMAT, "version": VERSION, "model": self.model, "meta": self.meta,
                  "interventions": entries}
        return write_folder(folder, config, tensors)

    @classmethod
    def load(cls, source: Union[str, Path], model: Any = None, revision: Optional[str] = None) -> "InterventionSet":
        """Load from a folder, or from a hub repo id (``"user/repo"``); checked against
        ``model`` when one is given."""
        folder = locate_folder(source, revision)
        spec = cls._read(folder, model)
        if model is not None:
            spec.check(model)
        return spec

    @classmethod
    def _read(cls, folder: Path, model: Any = None) -> "InterventionSet":
        config, tensors = read_folder(folder, (FORMAT, LEGACY), {FORMAT: VERSION, LEGACY: 1})
        cfg_path = folder / CONFIG
        if not isinstance(config.get("model", {}), dict) or not isinstance(config.get("meta", {}), dict):
            raise SpecError(f"{cfg_path}: 'model' and 'meta' must be JSON objects")
        hidden = None
        if model is not None:  # the model's fit is checked before anything is built
            check_fits(config.get("model", {}), model)
            hidden = model_info(model).get("hidden_size")
        meta = dict(config.get("meta", {}))
        entries = config.get("interventions", [])
        if not isinstance(entries, list):
            raise SpecError(f"{cfg_path}: 'interventions' must be a list")
        if config["format"] == LEGACY:  # the front end's own folders: tensors keyed by name
            meta["pyvene"] = [{k: e.get(k) for k in ("key", "layer", "component", "unit",
                                                     "max_number_of_units")} for e in entries]
        interventions = []
        for i, entry in enumerate(entries):
            try:
                prefix = entry["key"] if config["format"] == LEGACY else str(i)
                interventions.append(_entry(entry, tensors, prefix, cfg_path, i, hidden,
                                            config["version"] if config["format"] == FORMAT else 1))
            except (KeyError, TypeError, AttributeError) as error:
                raise SpecError(f"intervention {i} in {cfg_path} is malformed ({error!r})") from None
            except ValueError as error:
                if isinstance(error, SpecError):
                    raise
                raise SpecError(f"intervention {i} in {cfg_path}: {error}") from None
        return cls(interventions, config.get("model", {}), meta)

    def push_to_hub(self, repo_id: str, private: Optional[bool] = None, token: Optional[str] = None,
                    commit_message: str = "Upload Interlace interventions") -> str:
        """Save to a temporary folder and upload it to a hub model repo; returns the commit URL."""
        return push_folder(self.save, repo_id, private, token, commit_message)


def push_folder(save: Any, repo_id: str, private: Optional[bool] = None, token: Optional[str] = None,
                commit_message: str = "Upload Interlace interventions") -> str:
    """``save(folder)`` into a temporary folder, then upload it to a hub model repo; returns
    the commit URL."""
    import tempfile

    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save(tmp)
        info = api.upload_folder(folder_path=tmp, repo_id=repo_id, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


def write_folder(folder: Union[str, Path], config: dict, tensors: dict) -> Path:
    """Write ``config`` as JSON and ``tensors`` as safetensors into ``folder``, all or
    nothing: each file is renamed into place whole, and the config (written last) records the
    tensors' SHA-256, so a save killed between the two files leaves a folder that
    ``read_folder`` refuses rather than one mixing old and new parts.  Temporaries of killed
    saves are removed first."""
    import hashlib

    from safetensors.torch import save

    folder = Path(folder)
    if folder.is_dir():
        remove_dead_temps(folder)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    data = save(tensors, metadata={"format": str(config.get("format"))})
    with atomic(folder / TENSORS) as tmp:
        tmp.write_bytes(data)
    config = {**config, "tensors_sha256": hashlib.sha256(data).hexdigest()}
    with atomic(folder / CONFIG) as tmp:
        tmp.write_text(json.dumps(config, indent=2))
    return folder


def locate_folder(source: Union[str, Path], revision: Optional[str] = None) -> Path:
    """A local folder, or a hub repo id (``"user/repo"``) downloaded to the hub cache."""
    folder = Path(source).expanduser()
    if folder.exists():
        return folder
    if looks_local(source) or str(source).count("/") != 1:
        raise SpecError(f"no such intervention folder: {folder} (a folder here, or a hub repo id "
                        f"'user/repo')")
    return _download(str(source), revision)


def read_folder(folder: Path, formats: tuple, versions: dict) -> tuple[dict, dict]:
    """(config, tensors) of a saved folder whose format is one of ``formats``; every way a
    folder can be foreign, corrupt or truncated raises ``SpecError``.  Never unpickles."""
    import hashlib

    from safetensors import SafetensorError
    from safetensors.torch import load

    folder = Path(folder)
    cfg_path, t_path = folder / CONFIG, folder / TENSORS
    for name in (CONFIG, TENSORS):
        _inside(folder, name)  # a link out of the folder is refused
    if any(folder.glob("intkey_*.bin")):
        raise SpecError(f"{folder} looks like a pyvene folder: load it with "
                        f"tracer.IntervenableModel.load(folder, model) or "
                        f"tracer.pyvene.folders.from_pyvene(folder, model)")
    if not cfg_path.is_file():
        raise SpecError(f"{folder} has no {CONFIG}")
    if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
        raise SpecError(f"{cfg_path} is {cfg_path.stat().st_size} bytes; an intervention config "
                        f"is at most {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SpecError(f"{cfg_path} is not valid JSON ({error}); the file is corrupt or "
                        f"truncated") from None
    except RecursionError:
        raise SpecError(f"{cfg_path} is nested too deeply to be an intervention config") from None
    if not isinstance(config, dict) or config.get("format") not in formats:
        raise SpecError(f"{cfg_path} is not an Interlace intervention file (its 'format' is "
                        f"{config.get('format') if isinstance(config, dict) else None!r}, "
                        f"expected {' or '.join(repr(f) for f in formats)})")
    top = versions[config["format"]]
    version = config.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= top:
        raise SpecError(f"{cfg_path} has version {config.get('version')!r}; this Interlace "
                        f"reads versions up to {top}")
    try:
        data = t_path.read_bytes() if t_path.is_file() else None
        tensors = load(data) if data is not None else {}
    except (SafetensorError, OSError, ValueError) as error:
        raise SpecError(f"{t_path} is truncated or corrupt ({error})") from None
    want = config.get("tensors_sha256")
    if want is not None and (data is None or hashlib.sha256(data).hexdigest() != want):
        raise SpecError(f"{t_path} is not the file {CONFIG} was saved with (a save was cut "
                        f"short, or the file was replaced): save the folder again")
    return config, tensors


def _entry(entry: dict, tensors: dict, prefix: str, cfg_path: Path, i: int,
           hidden: Optional[int] = None, version: int = VERSION) -> Intervention:
    """One saved entry as an ``Intervention`` record (a module kind is rebuilt from its class,
    constructor arguments and state: no code is read from the folder)."""
    from .pyvene.interventions import CLASSES, rebuild

    def tensor(key: str) -> torch.Tensor:
        if key not in tensors:
            raise SpecError(f"intervention {i} in {cfg_path}: tensor {key!r} is missing from {TENSORS}")
        return tensors[key]

    if "class" in entry:
        klass = CLASSES.get(entry["class"])
        if klass is None:
            raise SpecError(f"intervention {i} in {cfg_path}: unknown class {entry['class']!r}; "
                            f"known classes are {', '.join(CLASSES)}")
        init = dict(entry.get("init", {}))
        for name in ("embed_dim", "low_rank_dimension", "latent_dim", "interchange_dim"):
            value = init.get(name)  # bounded before anything is allocated
            values = value if name == "interchange_dim" and isinstance(value, list) else [value]
            low = 0 if name == "interchange_dim" else 1  # the autoencoder's is a latent index
            if value is not None and not all(not isinstance(v, bool) and isinstance(v, int)
                                             and low <= v <= MAX_WIDTH for v in values):
                raise SpecError(f"intervention {i} in {cfg_path}: {name}={value!r} is not a width "
                                f"between {low} and {MAX_WIDTH}")
        want = init.get("embed_dim")
        if want is not None and hidden is not None and want > 8 * hidden:
            raise SpecError(f"intervention {i} in {cfg_path}: embed_dim {want} does not fit a "
                            f"model {hidden} wide")
        state = {name: tensor(f"{prefix}.{name}") for name in entry.get("state", [])}
        try:
            module = rebuild(klass, init, state, legacy=version < 3)
        except RuntimeError as error:
            raise SpecError(f"intervention {i} in {cfg_path} does not fit its class: "
                            f"{str(error).splitlines()[0]}") from None
        site = entry.get("site") or _component_site(entry)
        return Intervention(module, site, entry.get("positions"), entry.get("heads"),
                            subspaces=entry.get("subspaces"))
    kind = entry["kind"]
    if kind not in KINDS:
        raise SpecError(f"intervention {i} in {cfg_path} has unknown kind {kind!r}; "
                        f"valid kinds are {', '.join(KINDS)}")
    params = {}
    for name, value in entry.get("params", {}).items():
        params[name] = tensor(value.get("tensor")) if isinstance(value, dict) else float(value)
        if isinstance(params[name], torch.Tensor) and params[name].dim() == 0:
            raise SpecError(f"intervention {i} in {cfg_path}: tensor {name!r} is a single number "
                            f"(0-d); it must have the site's width as its last axis (a number "
                            f"is stored as a plain JSON value)")
    return Intervention(kind, entry["site"], entry.get("positions"), entry.get("heads"), params,
                        subspaces=entry.get("subspaces")).check()


def _component_site(entry: dict) -> str:
    """A legacy front-end entry's component and layer as a site name or module path."""
    component = entry["component"]
    if component.endswith((".output", ".input")):
        return component.replace("[", ".").replace("]", "")
    return component if entry.get("layer") is None else f"{component}.{entry['layer']}"


def _inside(folder: Path, name: str) -> Path:
    """``folder / name``, refused when it would leave the folder (``../``, absolute paths,
    links pointing out)."""
    path = (Path(folder) / name)
    root = Path(folder).resolve()
    if not path.resolve().is_relative_to(root):
        raise SpecError(f"{name!r} points outside the folder {folder}; a loader reads only the "
                        f"folder's own files")
    return path


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return list(value)


def _download(repo_id: str, revision: Optional[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=[CONFIG, TENSORS]))
    except Exception as error:  # noqa: BLE001 - one clear error for offline / missing repos
        raise SpecError(f"could not fetch interventions {repo_id!r} from the Hugging Face hub "
                        f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None


def load(source: Union[str, Path], model: Any = None, revision: Optional[str] = None) -> InterventionSet:
    """``InterventionSet.load``: a folder or a hub repo id."""
    return InterventionSet.load(source, model, revision)


# -- writing results -------------------------------------------------------------------------

class atomic:
    """``with atomic(path) as tmp: write(tmp)``: the file appears at ``path`` whole or not at
    all (a temporary file in the same folder, renamed into place on success)."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self.tmp = self.path.with_name(temp_name(self.path.name) + self.path.suffix)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        import os

        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def temp_name(name: str) -> str:
    """A hidden temporary name for ``name`` that carries this process's id, so a later run
    can tell a write cut short by a killed process from one still going on."""
    import os

    return f".{name}.{os.getpid()}.tmp"


def remove_dead_temps(folder: Union[str, Path], name: str = "*") -> None:
    """Remove the temporary files and folders (``temp_name``) in ``folder`` whose process is
    gone: what a killed save, conversion or run left behind."""
    import os
    import shutil

    for tmp in Path(folder).glob(f".{name}.*.tmp*"):
        pid = tmp.name.split(".tmp")[0].rsplit(".", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # someone else's, alive
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def writable_dir(path: Union[str, Path], what: str = "the output folder") -> Path:
    """Make sure results can be written to folder ``path`` (created if missing) before any
    work starts; raises ``ValueError`` naming the problem."""
    import tempfile

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(f"{what} {path} is not writable ({error.strerror or error})") from None
    return path


def writable_file(path: Union[str, Path], what: str = "the output file") -> Path:
    """Make sure a file can be written at ``path`` before any work starts."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give a file name")
    writable_dir(path.parent, f"the folder of {what}")
    return path
