"""Writes true_false.json: short factual statements, each with a false twin.

Written for this project from the facts below (no external data set).  Each false twin
changes one word of its true statement, taking the replacement from another fact of the
same kind, so the pair differs only in its truth.  Run: python recipes/data/make_true_false.py
"""

import json
import random
from pathlib import Path

CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
            ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Russia", "Moscow"), ("China", "Beijing"),
            ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Norway", "Oslo"),
            ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
            ("Poland", "Warsaw"), ("Ireland", "Dublin"), ("Canada", "Ottawa"), ("Kenya", "Nairobi"),
            ("Peru", "Lima"), ("Chile", "Santiago"), ("Cuba", "Havana"), ("Thailand", "Bangkok"),
            ("Turkey", "Ankara"), ("Hungary", "Budapest"), ("Belgium", "Brussels"),
            ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"), ("India", "New Delhi"),
            ("Australia", "Canberra"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
            ("South Korea", "Seoul"), ("Vietnam", "Hanoi"), ("Ukraine", "Kyiv"),
            ("the Netherlands", "Amsterdam"), ("Switzerland", "Bern"), ("Colombia", "Bogota"),
            ("Indonesia", "Jakarta"), ("the Philippines", "Manila")]

CONTINENTS = [("Brazil", "South America"), ("Nigeria", "Africa"), ("France", "Europe"),
              ("Japan", "Asia"), ("Canada", "North America"), ("Kenya", "Africa"),
              ("Germany", "Europe"), ("India", "Asia"), ("Argentina", "South America"),
              ("Mexico", "North America"), ("Egypt", "Africa"), ("China", "Asia"),
              ("Italy", "Europe"), ("Peru", "South America"), ("Morocco", "Africa"),
              ("Thailand", "Asia"), ("Norway", "Europe"), ("Chile", "South America"),
              ("Ghana", "Africa"), ("Vietnam", "Asia")]

ANIMALS = [("A dog", "bark"), ("A cat", "meow"), ("A cow", "moo"), ("A duck", "quack"),
           ("A lion", "roar"), ("A sheep", "bleat"), ("A horse", "neigh"), ("A pig", "oink"),
           ("A snake", "hiss"), ("An owl", "hoot"), ("A frog", "croak"), ("A bee", "buzz")]

LEGS = [("A spider", "eight"), ("An ant", "six"), ("A dog", "four"), ("A bird", "two"),
        ("A horse", "four"), ("A beetle", "six"), ("A human", "two"), ("A cat", "four"),
        ("A chicken", "two"), ("A scorpion", "eight"), ("A fly", "six"), ("A cow", "four")]

COLORS = [("The sky on a clear day", "blue"), ("Fresh grass", "green"), ("Snow", "white"),
          ("Coal", "black"), ("A ripe banana", "yellow"), ("A ripe tomato", "red"),
          ("An orange", "orange"), ("Milk", "white"), ("A lemon", "yellow"), ("Blood", "red")]

COUNTS = [("A week", "seven", "days"), ("A year", "twelve", "months"),
          ("A day", "twenty-four", "hours"), ("An hour", "sixty", "minutes"),
          ("A minute", "sixty", "seconds"), ("A triangle", "three", "sides"),
          ("A square", "four", "sides"), ("A hexagon", "six", "sides"),
          ("A dozen", "twelve", "items"), ("A century", "one hundred", "years"),
          ("A decade", "ten", "years"), ("An octagon", "eight", "sides")]

PROPERTIES = [("Fire", "hot"), ("Ice", "cold"), ("Water", "wet"), ("The sun", "bright"),
              ("A feather", "light"), ("Honey", "sweet"), ("Lemon juice", "sour"),
              ("A diamond", "hard"), ("A pillow", "soft"), ("The desert", "dry")]

OPPOSITE = {"hot": "cold", "cold": "hot", "wet": "dry", "bright": "dark", "light": "heavy",
            "sweet": "bitter", "sour": "sweet", "hard": "soft", "soft": "hard", "dry": "wet"}

SCIENCE = [("The Earth orbits the", "Sun", "Moon"), ("Water freezes at zero degrees", "Celsius", "Fahrenheit"),
           ("Plants make food from", "sunlight", "moonlight"), ("Humans breathe in", "oxygen", "helium"),
           ("The largest planet in the solar system is", "Jupiter", "Mercury"),
           ("The closest star to the Earth is the", "Sun", "Moon"),
           ("The chemical symbol for gold is", "Au", "Ag"), ("The chemical symbol for water is", "H2O", "CO2"),
           ("The heart pumps", "blood", "air"), ("Bees make", "honey", "milk"),
           ("Caterpillars turn into", "butterflies", "spiders"), ("Tadpoles grow into", "frogs", "fish"),
           ("The Moon orbits the", "Earth", "Sun"), ("Sound travels slower than", "light", "snails"),
           ("The Pacific is an", "ocean", "island"), ("Mount Everest is a", "mountain", "river"),
           ("The Nile is a", "river", "mountain"), ("The Sahara is a", "desert", "forest"),
           ("Penguins live mostly in the", "Southern Hemisphere", "Northern Hemisphere"),
           ("A thermometer measures", "temperature", "weight")]


def pairs(rng: random.Random) -> list[dict]:
    out = []

    def other(items, value, key=lambda x: x):
        choices = sorted({key(x) for x in items} - {value})
        return rng.choice(choices)

    # (topic, facts, templates): {0} is the subject, {1} the fact the false twin replaces
    table = [("capital", CAPITALS, ["The capital of {0} is {1}.", "{1} is the capital of {0}."]),
             ("continent", CONTINENTS, ["{0} is in {1}."]),
             ("animal", ANIMALS, ["{0} can {1}."]),
             ("legs", LEGS, ["{0} has {1} legs."]),
             ("color", COLORS, ["{0} is {1}."]),
             ("count", COUNTS, ["{0} has {1} {2}."])]
    for topic, facts, templates in table:
        for fact in facts:
            for template in templates:
                wrong = other(facts, fact[1], lambda x: x[1])
                out.append((topic, template.format(*fact), template.format(fact[0], wrong, *fact[2:])))
    for thing, prop in PROPERTIES:
        out.append(("property", f"{thing} is {prop}.", f"{thing} is {OPPOSITE[prop]}."))
    for stem, right, wrong in SCIENCE:
        out.append(("science", f"{stem} {right}.", f"{stem} {wrong}."))
    for a in range(1, 13):
        for b in (2, 3, 5):
            right = a + b
            wrong = right + rng.choice([-2, -1, 1, 2])
            out.append(("arithmetic", f"{a} plus {b} equals {right}.", f"{a} plus {b} equals {wrong}."))
    for a in range(2, 10):
        out.append(("arithmetic", f"{a} times 2 equals {2 * a}.", f"{a} times 2 equals {2 * a + 1}."))
    return [{"id": i, "topic": t, "true": tr, "false": fa} for i, (t, tr, fa) in enumerate(out)]


if __name__ == "__main__":
    data = pairs(random.Random(0))
    path = Path(__file__).with_name("true_false.json")
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {len(data)} pairs to {path}")
