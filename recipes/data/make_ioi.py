"""Writes ioi.json: indirect-object identification prompts (Wang et al. 2022 style).

Written for this project: IOI-style templates (the subject S is named twice, the model should
name the indirect object IO) filled with single-token first names.  ``source`` is the ABC
corruption: the second mention of S replaced by a third name C, so base and source have the
same token length.  Each item keeps its template and fills, so its roles are the template's
slots (IO, S1, S2, END: ``recipes.dataset``).  The first eight items are the set this file
held before (examples and tests slice them).  Run: python recipes/data/make_ioi.py
(needs the embedded SmolLM2 to check single-token names and equal lengths).
"""

import json
import random
from pathlib import Path

FIRST = [
    ("When {IO} and {S} went to the store, {S} gave a drink to", "Mary", "John", "Peter"),
    ("When {IO} and {S} went to the park, {S} gave a ball to", "Tom", "James", "Lisa"),
    ("After {IO} and {S} went to the school, {S} gave a book to", "Sarah", "David", "Tom"),
    ("Then, {IO} and {S} had a long argument, and afterwards {S} said to", "Anna", "Paul", "Kate"),
    ("While {IO} and {S} were working at the office, {S} gave a pen to", "Lisa", "Mark", "David"),
    ("When {IO} and {S} got a snack at the cafe, {S} decided to give it to", "Kate", "Peter", "Emma"),
    ("Friends {IO} and {S} found a bone at the beach. {S} gave it to", "Emma", "Jack", "Anna"),
    ("After the lunch, {IO} and {S} went to the garden. {S} gave a flower to", "John", "Mary", "Jack"),
]
TEMPLATES = [
    "When {IO} and {S} went to the store, {S} gave a drink to",
    "When {IO} and {S} went to the park, {S} gave a ball to",
    "After {IO} and {S} went to the school, {S} gave a book to",
    "While {IO} and {S} were working at the office, {S} gave a pen to",
    "When {IO} and {S} arrived at the party, {S} handed a gift to",
    "Then, {IO} and {S} had a long argument. Afterwards {S} said to",
    "After {IO} and {S} went to the market, {S} sold a basket to",
    "When {IO} and {S} visited the museum, {S} showed a painting to",
    "Friends {IO} and {S} found a ring at the beach. {S} gave it to",
    "The teacher asked {IO} and {S} a question, and {S} passed the note to",
]
NAMES = ["Mary", "John", "Tom", "James", "Sarah", "David", "Anna", "Mark", "Paul", "Emma",
         "Jack", "Kate", "Laura", "Mike", "Sam", "Alice", "Bob", "Ryan", "Rachel", "Daniel",
         "Chris", "Peter", "Lisa", "Adam", "Susan", "Kevin", "Linda", "Brian", "Nancy", "Eric"]


def item(template: str, io: str, s: str, c: str) -> dict:
    return {"template": template, "fills": {"IO": io, "S": s}, "source_fills": {"S2": c},
            "base": template.format(IO=io, S=s), "source": template.replace("{S}", s, 1).format(IO=io, S=c),
            "io": " " + io, "s": " " + s, "answers": [" " + io, " " + s]}


def main() -> None:
    import tracer

    tok = tracer.load("smollm2").tokenizer
    single = [n for n in NAMES if len(tok(" " + n, add_special_tokens=False)["input_ids"]) == 1]
    rng = random.Random(0)
    items = [item(*row) for row in FIRST]
    seen = {(it["base"], it["source"]) for it in items}
    while len(items) < 120:
        template = rng.choice(TEMPLATES)
        io, s, c = rng.sample(single, 3)
        it = item(template, io, s, c)
        if (it["base"], it["source"]) in seen:
            continue
        if len(tok(it["base"])["input_ids"]) != len(tok(it["source"])["input_ids"]):
            continue
        seen.add((it["base"], it["source"]))
        items.append(it)
    for it in items:
        assert len(tok(it["base"])["input_ids"]) == len(tok(it["source"])["input_ids"]), it
    out = {"description": (
        "Indirect-object identification prompts (Wang et al. 2022 templates). base: the subject (s) "
        "is repeated and the model should name the indirect object (io); source: the second mention "
        "of the subject replaced by a third name (the ABC corruption), same token length with "
        "SmolLM2's tokenizer. Answers: io (correct) then s, also as the list answers. Each item keeps its template and fills: "
        "its roles are IO, S1, S2 and END. Written by make_ioi.py."), "items": items}
    Path(__file__).with_name("ioi.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {len(items)} items")


if __name__ == "__main__":
    main()
