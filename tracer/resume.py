"""Plans split into chunks that survive interruption: each finished chunk (local batches or
remote requests) is saved, atomically, under a key hashed from its content, and a rerun reads
it back instead of computing it again."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .errors import RemoteError
from .plan import digest_group


def requests_of(work: list, max_rows: Optional[int]) -> list[list[int]]:
    """Batch indices per request: consecutive batches up to ``max_rows`` rows each."""
    chunks, chunk, rows = [], [], 0
    for i, batch in enumerate(work):
        if chunk and max_rows is not None and rows + batch.n_rows > max_rows:
            chunks.append(chunk)
            chunk, rows = [], 0
        chunk.append(i)
        rows += batch.n_rows
    return chunks + [chunk] if chunk else chunks


def request_key(model: Any, part: list) -> str:
    """A content hash of one request: the model and every index and tensor it carries."""
    digest = hashlib.sha256()
    try:
        digest.update(model._remoteable_model_key().encode())
    except Exception:  # noqa: BLE001 - a model without a remote key: its name will do
        digest.update(str(getattr(model, "repo_id", "")).encode())
    # a suffix pass (tracer.branch) carries its edits in the prefix pass it continues
    part = [p for batch in part for p in ((batch.prefix, batch) if batch.prefix is not None else (batch,))]
    for batch in part:
        tensors = [batch.inputs[k] for k in sorted(batch.inputs)]
        tensors += [t for idx in (batch.token_idx, batch.dist_idx) if idx for t in idx]
        for spec in (batch.skip_from, batch.cache_from, batch.branch_from):  # reuse: what a batch starts from
            digest.update(repr([x for x in spec or () if not isinstance(x, torch.Tensor)]).encode())
            tensors += [x for x in spec or () if isinstance(x, torch.Tensor)]
        for o in batch.ops:
            digest.update(o.site.name.encode())
            for group in (o.copy_dst, o.copy_src, o.add_idx, o.read_idx, o.set_idx):
                tensors += list(group or ())
            for value in (o.add_val, o.set_val):
                if value is not None:
                    tensors.append(value)
            if o.set_from is not None:
                digest.update(str(o.set_from[0]).encode())
                tensors += [t for t in o.set_from[1:] if t is not None]
            for record, rows, positions in o.records:
                digest.update(repr((record, rows)).encode())
                tensors += [t for t in (positions, *record.params.values()) if isinstance(t, torch.Tensor)]
        for t in tensors:
            digest.update(str(tuple(t.shape)).encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def plan_key(model: Any, groups: list) -> str:
    """A content hash of a plan (rows, interventions, readouts) on ``model``: the name of a
    finished chunk's saved results."""
    digest = hashlib.sha256()
    try:
        digest.update(model._remoteable_model_key().encode())
    except Exception:  # noqa: BLE001 - a model without a remote key: its name will do
        digest.update(str(getattr(model, "repo_id", "")).encode())
    for g in groups:
        digest_group(digest, g)
    return digest.hexdigest()[:24]


def _checksum(arrays: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def save_npz(path: Path, arrays: dict, key: str) -> None:
    """Write ``arrays`` to ``path`` atomically (temp file + rename), with the plan's ``key``
    and a checksum of the arrays, which ``load_npz`` verifies."""
    from .files import atomic

    arrays = {**arrays, "_key": np.array(key), "_sha256": np.array(_checksum(arrays))}
    with atomic(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_npz(path: Path, key: str, what: str) -> Optional[dict]:
    """The arrays an earlier run saved at ``path`` for the plan ``key``; None (with a warning
    naming the file, which is removed so the work is done again) when the file is truncated,
    corrupt, edited, or another plan's."""
    import warnings
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
        if str(arrays.pop("_key", "")) != key:
            raise ValueError("it was written for another plan")
        if str(arrays.pop("_sha256", "")) != _checksum(arrays):
            raise ValueError("its contents do not match their checksum")
        return arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        warnings.warn(f"the saved {what} {path} is not usable ({error}); it is discarded and "
                      f"computed again", stacklevel=3)
        path.unlink(missing_ok=True)
        return None



class Steps:
    """Iterate ``items`` with one progress report: a tqdm bar (``progress=True``; drawn only
    once a run lasts over a second, so quick runs print nothing), none (``False``), or
    ``progress(done, total, desc)`` called before each item and once at the end (a callable:
    a web app's progress bar).  ``within(fraction)`` moves the report inside the current
    item (a batch's layers), so a bar needs no extra batches to move."""

    def __init__(self, items: list, desc: str, progress: Any, unit: str = "batch"):
        self.items, self.desc, self.done, self.at = list(items), desc, 0, 0.0
        self.callback = progress if callable(progress) else None
        self.bar = None
        if progress is True and self.items:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(self.items), desc=desc, unit=unit, delay=1.0,
                            bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]")

    def _report(self, at: float) -> None:
        at = min(float(len(self.items)), at)
        if self.bar is not None and at > self.at:
            self.bar.update(at - self.at)
        elif self.callback is not None and at > self.at:
            self.callback(at, len(self.items), self.desc)
        self.at = max(self.at, at)

    def within(self, fraction: float) -> None:
        """The current item is ``fraction`` (0..1) done."""
        self._report(self.done + min(1.0, max(0.0, fraction)))

    def __iter__(self) -> Any:
        try:
            for i, item in enumerate(self.items):
                self.done = i
                if self.callback is not None and i == 0:
                    self.callback(0, len(self.items), self.desc)
                yield item
                self._report(i + 1)
        finally:
            if self.bar is not None:
                self.bar.close()


@contextlib.contextmanager
def ticking(modules: Sequence[torch.nn.Module], tick: Callable[[], None]) -> Any:
    """``tick()`` after each forward call of each of ``modules`` (plain forward hooks, removed
    on exit): progress reported from inside a forward pass or a generation."""
    def hook(*_: Any) -> None:  # a hook's return value would replace the output: none
        tick()
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def steps(items: list, desc: str, progress: Any, unit: str = "batch") -> Steps:
    """``Steps(items, desc, progress)``: the items, reported as they are done."""
    return Steps(items, desc, progress, unit)


def resumable(model: Any, work: list, chunks: list, compute: Any, folder: Path, progress: bool,
               desc: str, unit: str) -> list:
    """Each chunk of batches computed once: a chunk finished by an earlier, interrupted run
    is read back from ``folder``; each newly finished one is saved there (atomically) before
    the next starts; all are removed when the plan completes.  ``compute(part, within)``
    may report progress inside its part through ``within(fraction)``."""
    from .files import remove_dead_temps

    remove_dead_temps(folder)  # writes cut short by a killed run
    outputs: list = [None] * len(work)
    keys = [request_key(model, [work[i] for i in chunk]) for chunk in chunks]
    paths = [folder / f"{key}.npz" for key in keys]
    it = steps(list(zip(chunks, paths, keys)), desc, progress, unit)
    for n, (chunk, path, key) in enumerate(it):
        saved = load_npz(path, key, f"result of a {unit}") if path.is_file() else None
        if saved is not None:  # finished by an earlier run: resume
            try:
                for j, i in enumerate(chunk):
                    outputs[i] = [saved[f"{j}.{k}"] for k in range(int(saved[f"{j}.n"]))]
                continue
            except (KeyError, ValueError):
                pass  # a checked file of another layout: computed again below
        try:
            got = compute([work[i] for i in chunk], it.within)
        except RemoteError as error:
            if n == 0:
                raise
            raise RemoteError(f"{unit} {n + 1} of {len(chunks)} failed; the {n} finished "
                              f"{unit}(s) are saved in {folder} and a rerun resumes from "
                              f"there. {error}") from error
        arrays = {}
        for j, (i, flat) in enumerate(zip(chunk, got)):
            values = [torch.as_tensor(t).detach().float().cpu().numpy() for t in flat]
            arrays[f"{j}.n"] = np.array(len(values))
            arrays.update({f"{j}.{k}": v for k, v in enumerate(values)})
            outputs[i] = values
        save_npz(path, arrays, key)
    for path in paths:  # the plan is complete: its partial results are no longer needed
        path.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # other plans' results are still there
    return outputs
