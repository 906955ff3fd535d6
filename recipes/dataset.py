"""Data sets of prompt pairs: where researchers keep them, and positions by role.

``pairs(data, ...)`` turns any of these into a list of ``Pair`` (base prompt, source
prompt, answers, roles):

- lists: ``base=[...]`` with ``source=[...]`` (and ``answers``: one list shared by all, or
  one list per pair), or a list of dicts (records) or of ``Pair``;
- a file: ``.json`` (a list of records, or ``{"items": [...]}`` as ``recipes/data/ioi.json``),
  ``.jsonl`` (one record a line) or ``.csv`` (a header row);
- a Hugging Face ``datasets.Dataset`` (its rows are records).

A record names its columns ``base``, ``source`` and ``answers`` (a list, a JSON list in a
CSV cell, or ``a|b``; or several columns: ``answers_col=["io", "s"]``); other names are
given with ``base_col`` etc.  A record may instead hold a template and its fills:
``{"template": "When {IO} and {S} went to the store, {S} gave a drink to", "fills": {"IO":
"Mary", "S": "John"}, "source_fills": {"S2": "Peter"}}`` (or ``template=`` for every row, the
fills read from the slot-named columns and ``source_`` + name columns); its roles are the
template's slots: IO, S1, S2 and END, as in the IOI paper (``tracer.tokens.fill_template``).

**Roles** line prompts of different token lengths up by name: ``roles={"subject":
["France", "Tokyo Tower", ...], "end": -1}``.  A role is a token index (-1 = last), a word or
span (whole words, ``tracer.tokens.find``'s rule), ``(word, occurrence)``, or a
``(base role, source role)`` pair in a list entry when the two prompts differ there
(``[("France", "Italy"), ...]``).  A value that is a list gives one role per pair, anything
else is shared.  ``role_cols={"subject": "subject"}`` reads them from columns (the source's
from ``source_subject`` when the record has it).  A multi-token role is patched as a span;
when its spans in base and source differ in length, the tokens pair from the end (the
seed's alignment rule).  A role missing from a prompt is an error naming the pair.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import tracer
from tracer.tokens import fill_template, role_positions


IOI_FILE = Path(__file__).with_name("data") / "ioi.json"


@dataclass(frozen=True)
class Pair:
    """One base/source prompt pair, its answers and its roles (name -> (base, source))."""

    base: str
    source: str
    answers: tuple = ()
    roles: dict = field(default_factory=dict)


def _read_file(path: Path) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"no such data file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return csv_records(f.read())
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path} line {n} is not JSON: {error}") from None
        return rows
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not JSON: {error}") from None
        data = data.get("items") if isinstance(data, dict) else data
        if not isinstance(data, list):
            raise ValueError(f"{path}: a JSON data set is a list of records or {{\"items\": [...]}}")
        return data
    raise ValueError(f"data file {path} is not .json, .jsonl or .csv")


def csv_records(text: str) -> list[dict]:
    """The rows of a CSV text with a header row, as records."""
    return [dict(r) for r in csv.DictReader(io.StringIO(text, newline=""))]


def records(data: Any) -> list:
    """The rows of ``data`` (a path, a ``datasets.Dataset``, or a list) as a list."""
    if isinstance(data, (str, Path)):
        return _read_file(Path(data))
    if hasattr(data, "column_names") and hasattr(data, "__iter__") and not isinstance(data, (list, tuple)):
        return [dict(r) for r in data]  # a datasets.Dataset: its rows are dicts
    if isinstance(data, (list, tuple)):
        return list(data)
    raise ValueError(f"data must be a file path (.json/.jsonl/.csv), a datasets.Dataset or a "
                     f"list of records; got {type(data).__name__}")


def _answers(value: Any, where: str) -> tuple:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(f"{where}: answers {value!r} is not a JSON list") from None
        else:  # not stripped: an answer's leading space is part of its token
            value = value.split("|")
    if isinstance(value, (int, str)) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{where}: answers must be a non-empty list, got {value!r}")
    return tuple(value)


def _record(rec: Any, i: int, base_col: str, source_col: str, answers_col: Any,
            role_cols: dict, template: Optional[str]) -> Pair:
    where = f"pair {i}"
    if isinstance(rec, Pair):
        return rec
    if isinstance(rec, (list, tuple)) and len(rec) in (2, 3) and all(isinstance(x, str) for x in rec[:2]):
        return Pair(rec[0], rec[1], _answers(rec[2], where) if len(rec) == 3 else ())
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: a record is a dict of columns, a Pair or (base, source[, answers]); "
                         f"got {type(rec).__name__}")
    if isinstance(answers_col, (list, tuple)):
        missing = [c for c in answers_col if c not in rec]
        if missing:
            raise ValueError(f"{where}: no answer column {missing[0]!r}; columns are {sorted(rec)}")
        answers = tuple(rec[c] for c in answers_col)
    else:
        answers = _answers(rec[answers_col], where) if rec.get(answers_col) not in (None, "") else ()
    roles: dict = {}
    tmpl = rec.get("template", template)
    if tmpl:
        fills = rec.get("fills") or {k: v for k, v in rec.items() if isinstance(v, str) and "{" + k + "}" in tmpl}
        src_fills = dict(fills)
        src_fills.update(rec.get("source_fills") or {k[7:]: v for k, v in rec.items()
                                                    if k.startswith("source_") and isinstance(v, str)})
        try:
            base, b_spans = fill_template(tmpl, fills)
            source, s_spans = fill_template(tmpl, src_fills)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        roles = {name: (b_spans[name], s_spans[name]) for name in b_spans}
    else:
        for col in (base_col, source_col):
            if not isinstance(rec.get(col), str) or not rec[col].strip():
                raise ValueError(f"{where}: column {col!r} must hold a prompt; columns are {sorted(rec)}")
        base, source = rec[base_col], rec[source_col]
    for name, col in role_cols.items():
        if col not in rec:
            raise ValueError(f"{where}: no role column {col!r} (role {name!r}); columns are {sorted(rec)}")
        b = _role_value(rec[col])
        roles[name] = (b, _role_value(rec.get(f"source_{col}", rec[col])))
    return Pair(base, source, answers, roles)


def _role_value(value: Any) -> Any:
    """A CSV cell holding an index ("-1") is that index."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def pairs(data: Any = None, base: Optional[Sequence[str]] = None, source: Optional[Sequence[str]] = None,
          answers: Any = None, roles: Optional[dict] = None, base_col: str = "base",
          source_col: str = "source", answers_col: Union[str, Sequence[str]] = "answers",
          role_cols: Optional[dict] = None, template: Optional[str] = None,
          limit: Optional[int] = None) -> list[Pair]:
    """A data set of prompt pairs from ``data`` or from ``base``/``source`` lists (see the
    module docstring); ``answers`` (shared, or one list per pair) and ``roles`` override
    or add to what the records hold; ``limit`` keeps the first pairs."""
    if data is None:
        if base is None or source is None:
            raise ValueError("give data (a file, a datasets.Dataset or records) or base and source prompts")
        bases = [base] if isinstance(base, str) else list(base)
        sources = [source] if isinstance(source, str) else list(source)
        if not bases or len(bases) != len(sources):
            raise ValueError(f"base and source must be prompts in pairs; got {len(bases)} base and "
                             f"{len(sources)} source prompts")
        rows: list = [Pair(b, s) for b, s in zip(bases, sources)]
    else:
        rows = records(data)
    if limit is not None:
        tracer.checks.integer("limit", limit, low=1)
        rows = rows[:limit]
    if not rows:
        raise ValueError("the data set has no pairs")
    out = [_record(r, i, base_col, source_col, answers_col, dict(role_cols or {}), template)
           for i, r in enumerate(rows)]
    if answers is not None:
        per_pair = isinstance(answers, (list, tuple)) and answers and not isinstance(answers[0], (str, int))
        lists = list(answers) if per_pair else [answers] * len(out)
        if len(lists) != len(out):
            raise ValueError(f"{len(lists)} answer lists for {len(out)} pairs")
        out = [Pair(p.base, p.source, _answers(a, f"pair {i}"), p.roles) for i, (p, a) in enumerate(zip(out, lists))]
    for name, value in (roles or {}).items():
        values = value if isinstance(value, list) else [value] * len(out)
        if len(values) != len(out):
            raise ValueError(f"role {name!r} has {len(values)} values for {len(out)} pairs")
        out = [Pair(p.base, p.source, p.answers,
                    {**p.roles, name: v if _paired(v) else (v, v)})
               for p, v in zip(out, values)]
    for i, p in enumerate(out):
        if not p.answers:
            raise ValueError(f"pair {i} has no answers: give answers= or an answers column")
    return out


def _paired(value: Any) -> bool:
    """A (base role, source role) pair, not one (word, occurrence) role."""
    return isinstance(value, tuple) and len(value) == 2 and not (
        isinstance(value[0], str) and isinstance(value[1], int) and not isinstance(value[1], bool))


def role_names(data: Sequence[Pair]) -> list[str]:
    """The roles every pair has, in the first pair's order."""
    names = list(data[0].roles)
    for i, p in enumerate(data):
        missing = [n for n in names if n not in p.roles]
        if missing:
            raise ValueError(f"pair {i} ({p.base!r}) has no role {missing[0]!r}; every pair needs "
                             f"the same roles ({', '.join(names)})")
    return names


def resolve(tokenizer: Any, pair: Pair, i: int = 0) -> dict[str, tuple[tuple, tuple]]:
    """Each role's token positions in (base, source), paired from the end."""
    out = {}
    for name, (b_role, s_role) in pair.roles.items():
        try:
            b = role_positions(tokenizer, pair.base, b_role, name)
            s = role_positions(tokenizer, pair.source, s_role, name)
        except ValueError as error:
            raise ValueError(f"pair {i}: {error}") from None
        n = min(len(b), len(s))
        out[name] = (tuple(b[len(b) - n:]), tuple(s[len(s) - n:]))
    return out


def summary(data: Sequence[Pair]) -> str:
    """'8 prompt pairs, e.g. base ... / source ...' (a title for many prompts)."""
    first = data[0]
    if len(data) == 1:
        return f"base {first.base!r}, source {first.source!r}"
    return f"{len(data)} prompt pairs, e.g. base {first.base!r}, source {first.source!r}"


def ioi(limit: Optional[int] = None) -> list[Pair]:
    """The shipped IOI data set (``recipes/data/ioi.json``, 120 pairs): answers (IO, S),
    roles IO, S1, S2 and END."""
    return pairs(IOI_FILE, answers_col=["io", "s"], limit=limit)
