"""NDIF settings, and shipping tracer's trace-time code by value.

The server runs traces in its own environment, without Interlace installed.  The modules
whose code runs inside traces (``TRACE_TIME``) are registered with ``nnsight.register`` so
their source travels with each request, and they import only what NDIF allows
(``ALLOWED_IMPORTS``; ``check_imports`` proves it).  Everything else (tokenizers, files,
plotting) stays on the client.

Host and key come from ``INTERLACE_NDIF_HOST`` / ``NDIF_API_KEY`` when set, else from
nnsight's config (``nnsight.CONFIG.API.HOST`` / ``APIKEY``).  The key is never printed.
"""

from __future__ import annotations

import ast
import importlib
import os
from pathlib import Path
from typing import Any, Optional

TRACE_TIME = ("tracer.sites", "tracer.interventions", "tracer.patches", "tracer.intervention_types")
ALLOWED_IMPORTS = frozenset({"torch", "numpy", "math", "collections", "typing", "operator",
                             "einops", "__future__"})


class RemoteError(RuntimeError):
    """A remote run failed: the message says where (client, network, server) and why."""


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
        tree = ast.parse((root / f"{name.rsplit('.', 1)[1]}.py").read_text())
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
    """One clear error for a failed remote run, keeping the server's own message."""
    import nnsight

    host = host or nnsight.CONFIG.API.HOST
    text = str(error).strip() or type(error).__name__
    lowered = text.lower()
    chain, e = [], error
    while e is not None and len(chain) < 10:
        chain.append(type(e).__name__)
        e = e.__cause__ or e.__context__
    network = {"ConnectError", "ConnectionError", "ConnectTimeout", "gaierror", "NewConnectionError",
               "ConnectionRefusedError", "WebSocketAddressException"}
    if isinstance(error, (ConnectionError, OSError)) or network & set(chain) or any(
            p in lowered for p in ("connection refused", "failed to send request",
                                   "name or service not known", "name resolution",
                                   "failed to establish")):
        return RemoteError(f"the NDIF server at {host} is unreachable ({text.splitlines()[0][:300]}); "
                           f"check INTERLACE_NDIF_HOST or nnsight.CONFIG.API.HOST")
    if "timed out" in lowered or isinstance(error, TimeoutError):
        return RemoteError(f"the remote job on {host} timed out: {text[:500]}")
    if "not" in lowered and "model" in lowered and ("found" in lowered or "deployed" in lowered
                                                      or "running" in lowered):
        return RemoteError(f"the NDIF server at {host} does not serve this model: {text[:500]}")
    # the server's traceback ends with the exception that matters
    return RemoteError(f"the remote job on {host} failed: "
                       f"{text if len(text) <= 2000 else '...' + text[-2000:]}")


_CHECKED: set = set()


def check_versions(force: bool = False) -> None:
    """Refuse to run when client and server differ in nnsight, torch or transformers
    (``nnsight.compare()``): remote results would not match local ones."""
    import nnsight

    host = nnsight.CONFIG.API.HOST
    if host in _CHECKED and not force:
        return
    try:
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


def run_remote(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` after checking versions and registering the trace-time modules; failures
    become ``RemoteError``."""
    register()
    try:
        check_versions()
        return fn(*args, **kwargs)
    except RemoteError:
        raise
    except Exception as error:  # noqa: BLE001 - every remote failure gets one clear error
        raise explain(error) from error
