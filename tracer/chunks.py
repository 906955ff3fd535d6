"""A data set's plans run in chunks: many prompt pairs' plans (one shape: ``plan.merge``)
merged into chunks whose reference rows fit a memory budget, each chunk one ``execute.run``
(one NDIF request remotely), with one progress bar over the pairs and chunk-level resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from . import execute
from .files import remove_dead_temps
from .plan import Group, merge, unmerge
from .resume import load_npz, plan_key, save_npz
from .sites import dims_of


CHUNK_BYTES = 512 * 2 ** 20  # what the reference states of one chunk of a data set may hold


def chunk_rows(model: Any, width: int) -> int:
    """Reference rows per chunk of a data set: a chunk's reference run keeps every layer's
    residual stream of its rows for the cells (``tracer.reuse``), bounded by ``CHUNK_BYTES``."""
    dims = dims_of(model.config)
    per_row = max(1, width) * (dims.n_layers + 1) * dims.hidden * 4
    return max(2, CHUNK_BYTES // per_row)


def run_plans(model: Any, plans: Sequence[Sequence[Group]], max_batch: Optional[int] = None,
              progress: Any = True, desc: str = "pairs", remote: Optional[bool] = None,
              max_chunk_rows: Optional[int] = None, resume_dir: Optional[str] = None,
              timeout: Optional[float] = None, exact_reuse: Optional[bool] = None) -> list[list[list[torch.Tensor]]]:
    """A data set's plans (one per prompt pair, all of one shape: ``plan.merge``) run as
    chunks of merged plans; returns, per plan, what ``run`` returns for it.

    Each chunk holds as many plans as ``max_chunk_rows`` reference rows allow (default
    ``chunk_rows``: memory-bounded), runs as one ``run`` (exact reuse computes each pair's
    cells from its own reference rows; remotely: one request per chunk), and one progress
    bar counts the pairs.  With ``resume_dir`` each finished chunk is saved there under a
    hash of its content, so an interrupted run resumes at the chunk it was in (and inside
    it at its finished batches); the files go once every chunk is done."""
    if not plans:
        return []
    if len(plans) == 1:
        return [execute.run(model, plans[0], max_batch=max_batch, progress=progress, desc=desc,
                    remote=remote, resume_dir=resume_dir, timeout=timeout, exact_reuse=exact_reuse)]
    width = max(len(r) for p in plans for r in p[0].rows)
    budget = max_chunk_rows or chunk_rows(model, width)
    chunks, chunk, rows = [], [], 0
    for i, p in enumerate(plans):
        n = len(p[0].rows)
        if chunk and rows + n > budget:
            chunks.append(chunk)
            chunk, rows = [], 0
        chunk.append(i)
        rows += n
    chunks.append(chunk)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plans), desc=desc, unit="pair")
    folder = None if resume_dir is None else Path(resume_dir)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(folder)
    out: list = []
    saved = []
    try:
        for chunk in chunks:
            done = len(out)

            def step(d: float, total: int, _: str, done: int = done, size: int = len(chunk)) -> None:
                at = done + size * d / max(total, 1)
                if bar is not None:
                    bar.n = int(at)
                    bar.refresh()
                elif callable(progress):
                    progress(at, len(plans), desc)

            merged, counts = merge([plans[i] for i in chunk])
            key = plan_key(model, merged)
            path = None if folder is None else folder / f"chunk-{key}.npz"
            results = _load_chunk(path, key, len(merged))
            if results is None:
                results = execute.run(model, merged, max_batch=max_batch, progress=step if progress else False,
                              desc=desc, remote=remote, timeout=timeout, exact_reuse=exact_reuse,
                              resume_dir=None if folder is None else str(folder / "batches"))
                if path is not None:
                    arrays = {f"{k}.n": np.array(len(vs)) for k, vs in enumerate(results)}
                    arrays.update({f"{k}.{j}": v.numpy() for k, vs in enumerate(results)
                                   for j, v in enumerate(vs)})
                    save_npz(path, arrays, key)
            if path is not None:
                saved.append(path)
            step(1, 1, desc)
            out.extend(unmerge(results, counts))
    finally:
        if bar is not None:
            bar.close()
    for path in saved:  # every chunk is done: nothing to resume
        path.unlink(missing_ok=True)
    if folder is not None:
        for sub in (folder / "batches", folder):
            try:
                sub.rmdir()
            except OSError:
                pass
    return out


def _load_chunk(path: Optional[Path], key: str, n_groups: int) -> Optional[list]:
    """A chunk an earlier, interrupted run finished, or None (missing, or not usable: it is
    computed again)."""
    if path is None or not path.is_file():
        return None
    saved = load_npz(path, key, "chunk")
    try:
        return None if saved is None else [
            [torch.from_numpy(saved[f"{k}.{j}"]) for j in range(int(saved[f"{k}.n"]))]
            for k in range(n_groups)]
    except (KeyError, ValueError):
        path.unlink(missing_ok=True)
        return None
