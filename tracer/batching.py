"""Pack many patches into few forward passes.

A run is a list of ``Group``s.  A group is a few token rows that belong together (an
intervention applied to its prompts), the patches among those rows (copy a site's values from
one row to another, or add a tensor), and what to read out: log-probabilities of chosen tokens
at chosen positions counted from the end.  Groups are packed into batches of at most
``max_batch`` rows; each batch is one trace in which every site is visited once, in execution
order, with a single vectorized gather/scatter for all of its patches.

This module runs on the client; what runs inside the trace is in ``tracer.patches``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from .patches import SitePatches, apply_patches, read_logprobs
from .sites import Site, site as resolve_site


@dataclass(frozen=True)
class Copy:
    """Copy ``site`` values of row ``src_row`` at ``src_pos`` into row ``dst_row`` at ``dst_pos``.

    Rows are indices within the group; positions are unpadded token positions.  ``heads``
    (head sites only) picks the heads copied; ``None`` copies all of them.
    """

    site: str
    dst_row: int
    src_row: int
    dst_pos: tuple
    src_pos: tuple
    heads: Optional[tuple] = None


@dataclass(frozen=True)
class Add:
    """Add ``value`` (shape ``(len(pos), *site_shape)``) to row ``row`` at ``pos``."""

    site: str
    row: int
    pos: tuple
    value: torch.Tensor = field(compare=False)


@dataclass
class Group:
    """Rows that run together: token ids per row, patches among them, and readouts.

    ``reads[r]`` lists ``(offset, token)`` pairs: the log-probability of ``token`` predicted
    at position ``len(row) + offset`` (offset < 0; ``-1`` is the last token's prediction).
    """

    rows: list
    patches: list = field(default_factory=list)
    reads: list = field(default_factory=list)
    key: Any = None


# -- client side -------------------------------------------------------------------------

def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad token id (0 when it has none)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def encode(tokenizer: Any, texts: Sequence[str]) -> dict:
    """Texts as one left-padded batch (see ``build_inputs``)."""
    return build_inputs([tokenizer(t)["input_ids"] for t in texts], pad_id(tokenizer))


def build_inputs(rows: Sequence[Sequence[int]], pad_id: int) -> dict:
    """Left-padded ``input_ids``, ``attention_mask`` and mask-derived ``position_ids``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r):] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


def compile_batch(model: Any, groups: Sequence[Group]) -> tuple[dict, list[SitePatches], dict]:
    """Inputs, per-site index tensors in execution order, and readout indices for one batch."""
    rows, offsets = [], []
    for g in groups:
        offsets.append(len(rows))
        rows.extend(g.rows)
    inputs = build_inputs(rows, pad_id(model.tokenizer))
    width = inputs["input_ids"].shape[1]
    pad = [width - len(r) for r in rows]

    by_site: dict[str, dict[str, list]] = {}
    for g, base in zip(groups, offsets):
        for p in g.patches:
            acc = by_site.setdefault(p.site, {"cd": [], "cs": [], "heads": [], "ar": [], "ap": [], "av": []})
            if isinstance(p, Copy):
                if len(p.dst_pos) != len(p.src_pos):
                    raise ValueError(f"copy at {p.site}: {len(p.dst_pos)} destination positions "
                                     f"but {len(p.src_pos)} source positions")
                d, s = base + p.dst_row, base + p.src_row
                for dp, sp in zip(p.dst_pos, p.src_pos):
                    acc["cd"].append((d, dp + pad[d]))
                    acc["cs"].append((s, sp + pad[s]))
                    acc["heads"].append(p.heads)
            else:
                r = base + p.row
                for j, pos in enumerate(p.pos):
                    acc["ar"].append(r)
                    acc["ap"].append(pos + pad[r])
                    acc["av"].append(p.value[j])

    compiled = []
    for name, acc in by_site.items():
        s = resolve_site(model, name)
        sp = SitePatches(s)
        if acc["cd"]:
            sp.copy_dst, sp.copy_src = _copy_index(s, acc)
        if acc["ar"]:
            sp.add_idx = (torch.tensor(acc["ar"]), torch.tensor(acc["ap"]))
            sp.add_val = torch.stack(acc["av"])
        compiled.append(sp)
    compiled.sort(key=lambda sp: sp.site.order)

    k = max((len(r) for g in groups for r in g.reads), default=0)
    read_row, read_off, read_tok, read_mask = [], [], [], []
    for g, base in zip(groups, offsets):
        for i in range(len(g.rows)):
            reads = list(g.reads[i]) if i < len(g.reads) else []
            read_mask.append([1.0] * len(reads) + [0.0] * (k - len(reads)))
            reads += [(-1, 0)] * (k - len(reads))
            read_row.append([base + i] * k)
            read_off.append([o for o, _ in reads])
            read_tok.append([t for _, t in reads])
    keep = -min((o for row in read_off for o in row), default=-1)
    readout = {
        "rows": torch.tensor(read_row, dtype=torch.long).reshape(len(rows), k),
        "pos": (torch.tensor(read_off, dtype=torch.long).reshape(len(rows), k) + keep),
        "tokens": torch.tensor(read_tok, dtype=torch.long).reshape(len(rows), k),
        "mask": torch.tensor(read_mask).reshape(len(rows), k),
        "keep": keep,
    }
    return inputs, compiled, readout


def _copy_index(s: Site, acc: dict) -> tuple[tuple, tuple]:
    """Flatten copies to (row, pos[, head]) index tuples; head sites expand to their heads."""
    n_heads = s.n_heads
    if n_heads is None:
        if any(h is not None for h in acc["heads"]):
            raise ValueError(f"site {s.name} has no heads")
        d = torch.tensor(acc["cd"]).T
        c = torch.tensor(acc["cs"]).T
        return (d[0], d[1]), (c[0], c[1])
    dst, src = [], []
    for (dr, dp), (sr, sp), heads in zip(acc["cd"], acc["cs"], acc["heads"]):
        for h in (range(n_heads) if heads is None else heads):
            if not 0 <= h < n_heads:
                raise IndexError(f"head {h} out of range at site {s.name}: valid heads are "
                                 f"0..{n_heads - 1}")
            dst.append((dr, dp, h))
            src.append((sr, sp, h))
    d, c = torch.tensor(dst).T, torch.tensor(src).T
    return (d[0], d[1], d[2]), (c[0], c[1], c[2])


def default_max_batch(model: Any, seq_len: int, keep: int = 1, fraction: float = 0.4) -> int:
    """Rows per batch that fit in ``fraction`` of free memory (GPU if the model is on one)."""
    cfg = model.config
    param = next(model._module.parameters())
    bytes_per = param.element_size() if param.device.type != "meta" else 4
    hidden = cfg.hidden_size
    inter = getattr(cfg, "intermediate_size", None) or 4 * hidden
    heads = cfg.num_attention_heads
    per_token = hidden * 16 + inter * 4 + heads * seq_len * 2
    per_row = seq_len * per_token * bytes_per + keep * cfg.vocab_size * 4 * 3
    if param.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(param.device)
    else:
        free = _available_ram()
    return int(max(1, min(8192, free * fraction // max(per_row, 1))))


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")) if hasattr(os, "sysconf") else 2 ** 31


def pack(groups: Sequence[Group], max_batch: int) -> Iterator[list[int]]:
    """Indices of groups per batch, in order, each batch at most ``max_batch`` rows.

    A group larger than ``max_batch`` runs alone.
    """
    batch, size = [], 0
    for i, g in enumerate(groups):
        n = len(g.rows)
        if batch and size + n > max_batch:
            yield batch
            batch, size = [], 0
        batch.append(i)
        size += n
    if batch:
        yield batch


# -- running -----------------------------------------------------------------------------

REMOTE_MAX_BATCH = 1024  # rows per batch on the server when max_batch is not given


def run(model: Any, groups: Sequence[Group], max_batch: Optional[int] = None,
        progress: bool = True, desc: str = "batches", remote: bool = False,
        max_request_rows: Optional[int] = None, resume_dir: Optional[str] = None) -> list[np.ndarray]:
    """Run every group; returns, per group, its log-probabilities ``(rows, K)`` (NaN where a
    row reads fewer than K tokens).

    Locally each batch is one trace (a progress bar counts them).  With ``remote=True`` all
    batches run as traces inside one ``model.session(remote=True)``: one request to NDIF.
    A sweep too large for one request is split with ``max_request_rows`` into as few
    requests as that allows; each finished request's results are saved under ``resume_dir``
    (default ``$INTERLACE_CACHE/remote``), so a failure keeps them and a rerun resumes.
    """
    from tqdm.auto import tqdm

    if not groups:
        return []
    if max_batch is None:
        if remote:
            max_batch = REMOTE_MAX_BATCH
        else:
            seq = max(len(r) for g in groups for r in g.rows)
            keep = max((-o for g in groups for r in g.reads for o, _ in r), default=1)
            max_batch = default_max_batch(model, seq, keep)
    batches = list(pack(groups, max_batch))
    compiled = [compile_batch(model, [groups[i] for i in batch]) for batch in batches]
    if remote:
        outputs = _run_requests(model, compiled, max_request_rows, resume_dir, progress, desc)
    else:
        outputs = []
        for inputs, patches, readout in tqdm(compiled, desc=desc, disable=not progress or len(compiled) < 2):
            with torch.no_grad():
                with model.trace(inputs, logits_to_keep=readout["keep"], use_cache=False):
                    apply_patches(patches)
                    lp = read_logprobs(model.output.logits, readout).save()
            outputs.append(lp)
    results: list[Optional[np.ndarray]] = [None] * len(groups)
    for batch, (_, _, readout), lp in zip(batches, compiled, outputs):
        lp = lp.detach().float().cpu().numpy() if isinstance(lp, torch.Tensor) else np.array(lp)
        lp[readout["mask"].numpy() == 0] = np.nan
        start = 0
        for i in batch:
            results[i] = lp[start:start + len(groups[i].rows)]
            start += len(groups[i].rows)
    return results


def _requests(compiled: list, max_rows: Optional[int]) -> list[list[int]]:
    """Batch indices per request: consecutive batches up to ``max_rows`` rows each."""
    chunks, chunk, rows = [], [], 0
    for i, (inputs, _, _) in enumerate(compiled):
        n = inputs["input_ids"].shape[0]
        if chunk and max_rows is not None and rows + n > max_rows:
            chunks.append(chunk)
            chunk, rows = [], 0
        chunk.append(i)
        rows += n
    return chunks + [chunk] if chunk else chunks


def _request_key(model: Any, part: list) -> str:
    """A content hash of one request: the model and every tensor and site it carries."""
    import hashlib

    digest = hashlib.sha256()
    try:
        digest.update(model._remoteable_model_key().encode())
    except Exception:  # noqa: BLE001 - a model without a remote key: its name will do
        digest.update(str(getattr(model, "repo_id", "")).encode())
    for inputs, patches, readout in part:
        tensors = [inputs[k] for k in sorted(inputs)] + [readout[k] for k in ("rows", "pos", "tokens")]
        for sp in patches:
            digest.update(sp.site.name.encode())
            tensors += [t for group in (sp.copy_dst, sp.copy_src, sp.add_idx) if group for t in group]
            if sp.add_val is not None:
                tensors.append(sp.add_val)
        for t in tensors:
            digest.update(str(tuple(t.shape)).encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def _run_requests(model: Any, compiled: list, max_rows: Optional[int], resume_dir: Optional[str],
                  progress: bool, desc: str) -> list:
    from pathlib import Path

    from tqdm.auto import tqdm

    from . import remote as remote_mod
    from .models import cache_dir

    folder = Path(resume_dir) if resume_dir else cache_dir() / "remote"
    chunks = _requests(compiled, max_rows)
    if len(chunks) == 1:  # one request: nothing to resume
        return remote_mod.run_remote(_session, model, compiled)
    outputs: list = [None] * len(compiled)
    paths = [folder / f"{_request_key(model, [compiled[i] for i in chunk])}.npz" for chunk in chunks]
    for n, (chunk, path) in enumerate(tqdm(list(zip(chunks, paths)), desc=f"{desc} (requests)",
                                           disable=not progress)):
        part = [compiled[i] for i in chunk]
        if path.is_file():  # finished by an earlier run: resume
            with np.load(path) as saved:
                for j, i in enumerate(chunk):
                    outputs[i] = saved[str(j)]
            continue
        try:
            got = remote_mod.run_remote(_session, model, part)
        except remote_mod.RemoteError as error:
            if n == 0:
                raise
            raise remote_mod.RemoteError(f"request {n + 1} of {len(chunks)} failed; the {n} finished "
                                         f"request(s) are saved in {folder} and a rerun resumes "
                                         f"from there. {error}") from error
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {str(j): lp.detach().float().cpu().numpy() for j, lp in enumerate(got)}
        np.savez(path, **arrays)
        for j, i in enumerate(chunk):
            outputs[i] = arrays[str(j)]
    for path in paths:  # the sweep is complete: its partial results are no longer needed
        path.unlink(missing_ok=True)
    return outputs


def _session(model: Any, compiled: list) -> list:
    """All batches as traces of one remote session (one request)."""
    import nnsight

    with torch.no_grad():
        with model.session(remote=True):
            outputs = nnsight.save([])
            for inputs, patches, readout in compiled:
                with model.trace(inputs, logits_to_keep=readout["keep"], use_cache=False):
                    apply_patches(patches)
                    lp = read_logprobs(model.output.logits, readout).save()
                outputs.append(lp)
    return list(outputs)
