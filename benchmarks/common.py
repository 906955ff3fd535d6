"""What the benchmark scripts share: their command-line options."""

from __future__ import annotations

import argparse


def parser(doc: str, repeats: int) -> argparse.ArgumentParser:
    """``--model``, ``--device``, ``--batch`` and ``--repeats``, described by ``doc``'s first line."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=repeats)
    return p
