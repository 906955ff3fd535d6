"""One way to run: a plan as batched local traces, or as one NDIF session.

``run(model, groups)`` packs a plan (``tracer.plan``) into batches that fit in memory and
runs each as one trace; with ``remote=True`` all of them run as traces inside one
``model.session(remote=True)``: one request.  A plan too large for one request is split with
``max_request_rows``; each finished request's results are saved (atomically) under
``resume_dir`` so a failure keeps them and a rerun resumes.  ``call(fn)`` runs any other
remote trace (generation) the same way: registration, version check, clear errors.

The server runs traces in its own environment, without Interlace installed.  The modules
whose code runs inside traces (``TRACE_TIME``) are registered with ``nnsight.register`` so
their source travels with each request, and they import only what NDIF allows
(``ALLOWED_IMPORTS``; ``check_imports`` proves it).  Host and key come from
``INTERLACE_NDIF_HOST`` / ``NDIF_API_KEY`` when set, else from nnsight's config
(``nnsight.CONFIG.API.HOST`` / ``APIKEY``).  The key is never printed.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from .patches import Batch, run_batch
from .plan import Activations, Group, compile_batch, default_max_batch, distinct, pack, split_results
from . import costs, reuse
from .errors import RemoteError, RemoteTransient
from .resume import requests_of, resumable, steps, ticking
from .selfcheck import ensure_checked
from .tokens import check_length


TRACE_TIME = ("tracer.checks", "tracer.families", "tracer.site_names", "tracer.sites",
              "tracer.interventions", "tracer.patches", "tracer.gradients", "tracer.graph",
              "tracer.pyvene.interventions")
ALLOWED_IMPORTS = frozenset({"torch", "numpy", "math", "collections", "typing", "operator",
                             "einops", "__future__"})


def configure(host: Optional[str] = None, api_key: Optional[str] = None) -> str:
    """Point nnsight at an NDIF host (argument, ``INTERLACE_NDIF_HOST``, or nnsight's config)
    and API key (argument or ``NDIF_API_KEY``); returns the host."""
    import nnsight

    host = host or os.environ.get("INTERLACE_NDIF_HOST") or nnsight.CONFIG.API.HOST
    key = api_key or os.environ.get("NDIF_API_KEY")
    nnsight.CONFIG.API.HOST = host
    if key:
        nnsight.CONFIG.API.APIKEY = key
    return host


def register() -> None:
    """Ship the trace-time modules by value with every remote request."""
    import nnsight

    for name in TRACE_TIME:
        nnsight.register(importlib.import_module(name))


def check_imports() -> dict[str, list[str]]:
    """Imports of each trace-time module outside ``ALLOWED_IMPORTS`` and the trace-time
    modules themselves (parsed from source, so lazy imports inside functions count too)."""
    bad: dict[str, list[str]] = {}
    root = Path(__file__).resolve().parent
    own = {name.rsplit(".", 1)[1] for name in TRACE_TIME}
    for name in TRACE_TIME:
        tree = ast.parse((root.parent / (name.replace(".", "/") + ".py")).read_text())
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: must be another trace-time module
                    if (node.module or "").split(".")[0] not in own:
                        found.append("." * node.level + (node.module or ""))
                    continue
                found.append(node.module or "")
        bad[name] = [m for m in found if m and m.split(".")[0] not in ALLOWED_IMPORTS
                     and not m.startswith(".")] + [m for m in found if m.startswith(".")]
    return {k: v for k, v in bad.items() if v}


def explain(error: BaseException, host: Optional[str] = None) -> RemoteError:
    """One clear error for a failed remote run, naming where it failed (network, server
    state, the job itself) and keeping the server's own message."""
    import nnsight

    host = host or nnsight.CONFIG.API.HOST
    text = str(error).strip() or type(error).__name__
    lowered = text.lower()
    first = text.splitlines()[0][:300]
    chain, e = [], error
    while e is not None and len(chain) < 10:
        chain.append(type(e).__name__)
        e = e.__cause__ or e.__context__
    if any(p in lowered for p in ("reconnecting", "502 bad gateway", "503 service", "temporarily unavailable",
                                  "try again later")):
        return RemoteTransient(f"the NDIF server at {host} is in a passing state ({first}); "
                               f"retry in a moment")
    dropped = {"ConnectionResetError", "RemoteDisconnected", "ConnectionClosed", "ConnectionClosedError",
               "IncompleteRead", "ChunkedEncodingError", "BrokenPipeError"}
    if dropped & set(chain) or any(p in lowered for p in ("connection reset", "connection closed",
                                                          "connection aborted", "broken pipe")):
        return RemoteError(f"the connection to the NDIF server at {host} dropped while the job ran "
                           f"({first}): a network error; run it again")
    network = {"ConnectError", "ConnectionError", "ConnectTimeout", "gaierror", "NewConnectionError",
               "ConnectionRefusedError", "WebSocketAddressException"}
    if isinstance(error, (ConnectionError, OSError)) or network & set(chain) or any(
            p in lowered for p in ("connection refused", "failed to send request",
                                   "name or service not known", "name resolution",
                                   "failed to establish")):
        return RemoteError(f"the NDIF server at {host} is unreachable ({first}); "
                           f"check INTERLACE_NDIF_HOST or nnsight.CONFIG.API.HOST")
    if "timed out" in lowered or isinstance(error, TimeoutError):
        return RemoteError(f"the remote job on {host} timed out: {text[:500]}")
    if "could not deploy" in lowered or ("not" in lowered and "model" in lowered and (
            "found" in lowered or "deployed" in lowered or "running" in lowered)):
        # the server's own headline, without its internal traceback
        return RemoteError(f"the NDIF server at {host} does not serve this model; it serves: "
                           f"{', '.join(served_models()) or 'no model it would list'} "
                           f"(the server said: {first.split('. ')[0]})")
    # the server's traceback ends with the exception that matters
    return RemoteError(f"the remote job on {host} failed: "
                       f"{text if len(text) <= 2000 else '...' + text[-2000:]}")


def served_models() -> list[str]:
    """The repo ids the NDIF server lists as deployed (empty when it lists none)."""
    import nnsight

    try:
        deployments = nnsight.status(raw=True).get("deployments", {})
    except Exception:  # noqa: BLE001 - a listing is a courtesy in an error message
        return []
    import re

    names = set()
    for key, value in deployments.items():
        named = value.get("repo_id") if isinstance(value, dict) else None
        found = re.search(r'"repo_id":\s*"([^"]+)"', str(named or (value or {}).get("model_key") or key))
        names.add(named or (found.group(1) if found else str(key)))
    return sorted(names)


_CHECKED: set = set()


def check_versions(force: bool = False) -> None:
    """Refuse to run when client and server differ in nnsight, torch or transformers
    (``nnsight.compare()``): remote results would not match local ones."""
    import nnsight

    host = nnsight.CONFIG.API.HOST
    if host in _CHECKED and not force:
        return
    try:
        # nnsight keeps the first server's answer for the whole process: ask this host anew
        nnsight.ndif.get_remote_env(force_refresh=True)
        comparison = nnsight.compare()
    except Exception as error:  # noqa: BLE001 - an unreachable server, said clearly
        raise explain(error, host) from error
    bad = comparison.critical_mismatches
    if bad:
        listed = ", ".join(f"{name} {v['local']} here vs {v['remote']} on the server"
                           for name, v in sorted(bad.items()))
        raise RemoteError(f"client and server versions differ ({listed}); install the server's "
                          f"versions locally (nnsight must match exactly)")
    _CHECKED.add(host)


RETRIES = 3  # tries for a passing server state, with backoff 1, 2, 4 s


def timeout_seconds(timeout: Optional[float] = None) -> Optional[float]:
    """The client-side time limit for one request: ``timeout``, else
    ``INTERLACE_NDIF_TIMEOUT``, else none."""
    if timeout is None and os.environ.get("INTERLACE_NDIF_TIMEOUT"):
        try:
            timeout = float(os.environ["INTERLACE_NDIF_TIMEOUT"])
        except ValueError:
            raise ValueError(f"INTERLACE_NDIF_TIMEOUT must be a number of seconds, got "
                             f"{os.environ['INTERLACE_NDIF_TIMEOUT']!r}") from None
    if timeout is not None and not timeout > 0:
        raise ValueError(f"the remote timeout must be a positive number of seconds, got {timeout}")
    return timeout


def call(fn: Any, *args: Any, timeout: Optional[float] = None, **kwargs: Any) -> Any:
    """Call ``fn`` (a remote trace or session) after checking versions and registering the
    trace-time modules.  Failures become ``RemoteError``; a passing server state is retried
    ``RETRIES`` times with backoff; with ``timeout`` (or ``INTERLACE_NDIF_TIMEOUT``) a
    request that has not answered in that many seconds is given up with a clear error."""
    import time

    limit = timeout_seconds(timeout)
    register()
    for attempt in range(RETRIES + 1):
        try:
            return _bounded(_checked, (fn, args, kwargs), {}, limit)
        except RemoteTransient:
            if attempt == RETRIES:
                raise
        except RemoteError:
            raise
        except Exception as error:  # noqa: BLE001 - every remote failure gets one clear error
            explained = explain(error)
            if not isinstance(explained, RemoteTransient) or attempt == RETRIES:
                raise explained from error
        time.sleep(2 ** attempt)
    raise AssertionError("unreachable")


def _checked(fn: Any, args: tuple, kwargs: dict) -> Any:
    check_versions()
    return fn(*args, **kwargs)


def _bounded(fn: Any, args: tuple, kwargs: dict, limit: Optional[float]) -> Any:
    """``fn(*args, **kwargs)``, given up after ``limit`` seconds (the request may still
    finish on the server; its result is then dropped)."""
    if limit is None:
        return fn(*args, **kwargs)
    import nnsight
    import threading

    box: dict = {}

    def work() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = error

    thread = threading.Thread(target=work, daemon=True, name="interlace-remote")
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise RemoteError(f"the NDIF server at {nnsight.CONFIG.API.HOST} gave no answer within "
                          f"{limit:g} s (timeout=, INTERLACE_NDIF_TIMEOUT); finished requests are kept")
    if "error" in box:
        raise box["error"]
    return box["value"]


def is_remote(model: Any) -> bool:
    """Whether ``model`` was loaded for NDIF (its weights are on the meta device)."""
    from .sites import module

    try:
        return next(module(model).parameters()).device.type == "meta"
    except (StopIteration, TypeError):
        return False


@contextlib.contextmanager
def frozen(model: Any) -> Any:
    """Inside: the model's own parameters do not require grad, so a backward pass in a
    trace computes gradients of activations only (a remote model's are frozen already)."""
    from .sites import module

    params = [p for p in module(model).parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


# -- one trace with records ----------------------------------------------------------------

def forward(model: Any, inputs: Any, records: Sequence[Any], collect: Sequence[int] = (),
            remote: bool = False, grad: bool = False) -> tuple[list, Any, Any]:
    """One forward pass of ``inputs`` with ``records`` applied in order (execution order is
    the caller's): returns (the values records ``collect`` replaced, the model output or
    logits, the final hidden state or None).  Locally or as one remote request; with
    ``grad`` the graph reaches trainable records."""
    import nnsight

    from .sites import Site, config, family_for, module, split_call

    try:
        lm = family_for(config(model), module(model)).lm_head is not None
    except (AttributeError, ValueError):
        lm = False  # a base model, a module-only model (pyvene's MLP, GRU), any torch module
    wanted = set(collect)
    calls = [split_call(r.site)[1] for r in records]
    ensure_checked(model)
    if lm and isinstance(inputs, dict) and "input_ids" in inputs:
        check_length(config(model), int(inputs["input_ids"].shape[-1]), "the input")

    def go() -> tuple:
        kwargs = {"remote": True} if remote else {}
        hidden = None
        with torch.set_grad_enabled(grad):
            with (model.trace(**dict(inputs), **kwargs) if isinstance(inputs, dict)
                  else model.trace(inputs, **kwargs)) as tracer:
                seen = nnsight.save([])
                for i, record in enumerate(records):
                    if calls[i] is None:
                        got = record.apply(model)
                    else:  # a recurrent cell's call: pin the trace to that occurrence
                        for _ in tracer.iter[calls[i]]:
                            got = record.apply(model)
                    if i in wanted:
                        seen.append(got)
                if lm:
                    hidden = Site(model, "final").tensor().save()
                    out = model.output.logits.save()
                else:
                    out = model.output.save()
        return list(seen), out, hidden

    return call(go) if remote else go()


# -- plans ---------------------------------------------------------------------------------

REMOTE_MAX_BATCH = 1024  # rows per batch on the server when max_batch is not given


def run(model: Any, groups: Sequence[Group], max_batch: Optional[int] = None,
        progress: Any = True, desc: str = "batches", remote: Optional[bool] = None,
        max_request_rows: Optional[int] = None, resume_dir: Optional[str] = None,
        timeout: Optional[float] = None, exact_reuse: Optional[bool] = None) -> list[list[torch.Tensor]]:
    """Run a plan; returns, per group, its readouts' values (float32 CPU tensors) in the
    group's order.

    Locally each batch is one trace (a progress bar counts them; ``progress`` may be a
    callable ``(done, total, desc)`` instead, as ``resume.steps`` says).  With ``remote=True`` every
    batch is a trace of one ``model.session(remote=True)``: one request to NDIF, or as few as
    ``max_request_rows`` allows, resumable from ``resume_dir`` (default
    ``$INTERLACE_CACHE/remote``).  Locally, ``resume_dir`` keeps each finished batch there
    until the plan completes, so an interrupted run (Ctrl-C, a killed process) resumes.
    ``remote=None`` runs remotely exactly when the model was loaded for NDIF
    (``tracer.load(..., remote=True)``: its weights are on meta); ``timeout`` bounds each
    request (default ``INTERLACE_NDIF_TIMEOUT``).  A plan of a reference group and patched
    copies of it can compute only what each patch can change (``tracer.reuse``): with
    ``exact_reuse=None`` (the default) locally when that is predicted to be faster than
    computing every group in full (``tracer.costs``: the model's trace, layer and token
    costs, measured once per process), and remotely always; ``True``: whenever the plan
    allows; ``False``: never.  A group repeated in the plan (same rows, edits of pure kinds
    and readouts: ``plan.distinct``) runs once.
    """
    if not groups:
        return []
    ensure_checked(model)
    check_length(model.config, max(len(r) for g in groups for r in g.rows), "the longest row of the plan")
    unique, where = distinct(groups)
    got = _run(model, unique, max_batch, progress, desc, remote, max_request_rows, resume_dir,
               timeout, exact_reuse)
    return got if len(unique) == len(groups) else [list(got[i]) for i in where]  # copies share


def _run(model: Any, groups: Sequence[Group], max_batch: Optional[int], progress: Any, desc: str,
         remote: Optional[bool], max_request_rows: Optional[int], resume_dir: Optional[str],
         timeout: Optional[float], exact_reuse: Optional[bool]) -> list[list[torch.Tensor]]:
    """``run`` on a plan without repeated groups."""
    remote = is_remote(model) if remote is None else remote
    if max_batch is None:
        if remote:
            max_batch = REMOTE_MAX_BATCH
        else:
            seq = max(len(r) for g in groups for r in g.rows)
            # logits kept per row: positions read through the unembedding (all, when None)
            reads = sum(len(g.rows[rd.row]) if rd.positions is None else len(rd.positions)
                        for g in groups for rd in g.reads if not isinstance(rd, Activations))
            keep = max(1, min(seq, reads // max(1, sum(len(g.rows) for g in groups))))
            max_batch = default_max_batch(model, seq, keep)
    shared = reuse.plan(model, groups) if exact_reuse is not False else None
    measured = costs.measure(model) if shared is not None and not remote else None
    if shared is not None and remote:
        # one session: the reference run's states stay on the server for the cells
        compiled = reuse.compile_plan(model, shared, max_batch) if max_request_rows is None else None
        if compiled is not None:
            ref_out, outputs = call(reuse.session, model, compiled.ref,
                                    [b for _, b, _ in compiled.cells], timeout=timeout)
            return reuse.results(shared, compiled, ref_out, outputs)
    elif shared is not None and (exact_reuse or reuse.worth_it(model, shared, max_batch, measured)):
        def each(work: list, compute: Any) -> list:
            if resume_dir is not None:
                return resumable(model, work, [[i] for i in range(len(work))], compute,
                                  Path(resume_dir), progress, desc, "batch")
            it = steps(work, desc, progress)
            return [compute([b], it.within)[0] for b in it]
        got = reuse.run(model, shared, max_batch, lambda b, within: _trace(model, b, within), each,
                        measured)
        if got is not None:
            return got
    batches = list(pack(groups, max_batch))
    compiled = [compile_batch(model, [groups[i] for i in batch]) for batch in batches]
    work = [b for b, _ in compiled]
    if remote:
        outputs = _run_requests(model, work, max_request_rows, resume_dir, progress, desc, timeout)
    elif resume_dir is not None:  # an interrupted local run resumes from its finished batches
        outputs = resumable(model, work, [[i] for i in range(len(work))],
                             lambda part, within: [_trace(model, b, within) for b in part],
                             Path(resume_dir), progress, desc, "batch")
    else:
        it = steps(work, desc, progress)
        outputs = [_trace(model, b, it.within) for b in it]
    results: list = [None] * len(groups)
    for batch, (_, layout), flat in zip(batches, compiled, outputs):
        flat = [torch.as_tensor(t).detach().float().cpu() for t in flat]
        for i, values in zip(batch, split_results(layout, flat)):
            results[i] = values
    return results


def _trace(model: Any, batch: Batch, within: Optional[Callable[[float], None]] = None) -> list:
    """One batch as one local trace; ``within(fraction)`` hears of each layer it finishes."""
    import nnsight

    cache = {} if batch.cache is None else {reuse.cache_argument(model): batch.cache}
    with torch.no_grad(), _layer_ticks(model, batch, within):
        with model.trace(batch.inputs, logits_to_keep=batch.keep, use_cache=bool(cache), **cache):
            out = nnsight.save(run_batch(model, batch))
    return list(out)


@contextlib.contextmanager
def _layer_ticks(model: Any, batch: Batch, within: Optional[Callable[[float], None]]) -> Any:
    """Report the share of the batch's layers run so far (a progress bar that moves inside a
    batch, at no cost to the batch plan)."""
    from .sites import config, family_of, module

    if within is None:
        yield
        return
    try:
        layers = list(module(model).get_submodule(family_of(config(model)).layers))
    except (AttributeError, ValueError):
        yield  # not a decoder stack we know: progress per batch only
        return
    skipped = len(batch.skip_from[0]) if batch.skip_from else 0
    todo, seen = max(1, len(layers) - skipped), [0]

    def tick() -> None:
        seen[0] += 1
        within(seen[0] / todo)
    with ticking(layers[skipped:], tick):
        yield


def _session(model: Any, work: list) -> list:
    """All batches as traces of one remote session (one request)."""
    import nnsight

    with torch.no_grad():
        with model.session(remote=True):
            outputs = nnsight.save([])
            for batch in work:
                with model.trace(batch.inputs, logits_to_keep=batch.keep, use_cache=False):
                    outputs.append(nnsight.save(run_batch(model, batch)))
    return [list(o) for o in outputs]


def _run_requests(model: Any, work: list, max_rows: Optional[int], resume_dir: Optional[str],
                  progress: bool, desc: str, timeout: Optional[float] = None) -> list:
    from .models import cache_dir

    chunks = requests_of(work, max_rows)
    if len(chunks) == 1:  # one request: nothing to resume
        return call(_session, model, work, timeout=timeout)
    folder = Path(resume_dir) if resume_dir else cache_dir() / "remote"
    return resumable(model, work, chunks, lambda part, _: call(_session, model, part, timeout=timeout),
                      folder, progress, f"{desc} (requests)", "request")
