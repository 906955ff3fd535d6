"""A full head sweep on an NDIF server: requests sent, bytes up and down, time vs local.

Runs recipes.interchange (every head of every layer, the seed's Winograd pair) once locally
and once with ``remote=True`` against the server, checks both give the same numbers, and
prints the request count (from nnsight's remote backend), the serialized request size, the
result size, and both times.  Needs a running server serving MODEL_DIR; with the local one
(``make test-remote`` shows how it is started):

    ip netns exec ndiflab .venv/bin/python benchmarks/remote.py MODEL_DIR [--host http://127.0.0.1:8001]
"""

from __future__ import annotations

import argparse
import time

import nnsight
import numpy as np

import tracer
from nnsight.intervention.backends import remote as backend
from recipes import interchange

SENTS = ["Paul tried to call George but he wasn't successful . Who wasn't successful ?",
         "Paul tried to call George but he wasn't available . Who wasn't available ?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model folder the server has deployed")
    parser.add_argument("--host", default=None)
    parser.add_argument("--rep", default="qry")
    args = parser.parse_args()
    tracer.execute.configure(args.host)
    nnsight.CONFIG.APP.REMOTE_LOGGING = False

    sent, received = [], []
    serialize, finalize = backend.RemoteBackend._serialize, backend.RemoteBackend.finalize

    def counting_serialize(self, tracer_):
        blob = serialize(self, tracer_)
        sent.append(len(blob))
        return blob

    def counting_finalize(self, content):
        received.append(len(content))
        return finalize(self, content)

    backend.RemoteBackend._serialize = counting_serialize
    backend.RemoteBackend.finalize = counting_finalize

    config = interchange.InterchangeInterventionConfig(sents=SENTS, conts=["Paul", "George"])
    local = interchange.InterchangeIntervention(tracer.load(args.model), config)
    remote = interchange.InterchangeIntervention(tracer.load(args.model, remote=True), config)
    run = dict(targets=["successful", "available"], rep_types=[args.rep], heads="each", progress=False)
    local.run(**{**run, "layers": [0]})  # warm-up
    start = time.perf_counter()
    want = local.run(**run)
    t_local = time.perf_counter() - start
    start = time.perf_counter()
    got = remote.run(**run, remote=True)
    t_remote = time.perf_counter() - start
    diff = max(float(np.abs(got[k] - want[k]).max()) for k in want)
    assert diff < 1e-5, diff
    swaps = (len(want) - 1) * want["interv_layer_0"].shape[-1]
    print(f"model={args.model} rep={args.rep} swaps={swaps} (max |remote-local| = {diff:.1e})")
    print(f"requests sent        {len(sent)}")
    print(f"bytes up             {sum(sent):,}")
    print(f"bytes down           {sum(received):,}")
    print(f"local                {t_local:8.2f} s")
    print(f"remote (local NDIF)  {t_remote:8.2f} s  {t_remote / t_local:.2f}x local")


if __name__ == "__main__":
    main()
