"""Write the questions of the bundled bank (``questions.jsonl``): generated arithmetic, unit conversions
and word problems with computed answers, and hand-written general-knowledge multiple choice.

Every question here is written by this project (no dataset is copied), and the output is the same on
every run: the generator is seeded. Usage::

    python bank/make_questions.py > bank/questions.jsonl
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from fractions import Fraction

SEED = 20261201

# (question, correct answer, three wrong answers); the order of the choices is shuffled per question
FACTS: list[tuple[str, str, tuple[str, str, str]]] = [
    ("Which planet is closest to the Sun?", "Mercury", ("Venus", "Mars", "Earth")),
    ("Which planet is the largest in the Solar System?", "Jupiter", ("Saturn", "Neptune", "Earth")),
    ("Which planet is known as the Red Planet?", "Mars", ("Venus", "Jupiter", "Mercury")),
    ("What is the chemical symbol for water?", "H2O", ("CO2", "O2", "NaCl")),
    ("What is the chemical symbol for gold?", "Au", ("Ag", "Gd", "Go")),
    ("What gas do plants take in from the air for photosynthesis?", "Carbon dioxide", ("Oxygen", "Nitrogen", "Helium")),
    ("What is the boiling point of water at sea level in degrees Celsius?", "100", ("90", "50", "212")),
    ("What is the freezing point of water in degrees Celsius?", "0", ("32", "-10", "100")),
    ("How many legs does a spider have?", "Eight", ("Six", "Ten", "Four")),
    ("How many legs does an insect have?", "Six", ("Eight", "Four", "Ten")),
    ("Which organ pumps blood through the human body?", "The heart", ("The lungs", "The liver", "The kidneys")),
    ("Which is the largest ocean on Earth?", "The Pacific Ocean", ("The Atlantic Ocean", "The Indian Ocean", "The Arctic Ocean")),
    ("What is the capital of France?", "Paris", ("Lyon", "Marseille", "Nice")),
    ("What is the capital of Japan?", "Tokyo", ("Osaka", "Kyoto", "Hiroshima")),
    ("What is the capital of Italy?", "Rome", ("Milan", "Venice", "Naples")),
    ("What is the capital of Canada?", "Ottawa", ("Toronto", "Vancouver", "Montreal")),
    ("What is the capital of Australia?", "Canberra", ("Sydney", "Melbourne", "Perth")),
    ("What is the capital of Egypt?", "Cairo", ("Alexandria", "Luxor", "Giza")),
    ("On which continent is Kenya?", "Africa", ("Asia", "South America", "Europe")),
    ("On which continent is Brazil?", "South America", ("Africa", "North America", "Asia")),
    ("How many days are in a leap year?", "366", ("365", "364", "360")),
    ("How many continents are there on Earth by the usual count?", "Seven", ("Five", "Six", "Eight")),
    ("Which metal is liquid at room temperature?", "Mercury", ("Iron", "Aluminium", "Copper")),
    ("What is the hardest natural material?", "Diamond", ("Granite", "Quartz", "Iron")),
    ("Which animal is the largest mammal?", "The blue whale", ("The African elephant", "The giraffe", "The hippopotamus")),
    ("What do bees collect from flowers to make honey?", "Nectar", ("Pollen only", "Water", "Leaves")),
    ("Which colour do you get by mixing blue and yellow paint?", "Green", ("Purple", "Orange", "Brown")),
    ("How many sides does a hexagon have?", "Six", ("Five", "Seven", "Eight")),
    ("How many sides does a triangle have?", "Three", ("Four", "Two", "Five")),
    ("What is the square root of 81?", "9", ("8", "7", "81")),
    ("Which instrument measures temperature?", "A thermometer", ("A barometer", "A speedometer", "A compass")),
    ("Which force pulls objects toward the Earth?", "Gravity", ("Magnetism", "Friction", "Tension")),
    ("What is the main gas in the air we breathe?", "Nitrogen", ("Oxygen", "Carbon dioxide", "Hydrogen")),
    ("Which part of the plant takes up water from the soil?", "The roots", ("The leaves", "The flowers", "The fruit")),
    ("What is the opposite of 'ancient'?", "Modern", ("Old", "Antique", "Historic")),
    ("Which word is a synonym of 'happy'?", "Joyful", ("Sad", "Angry", "Tired")),
    ("Which month has the fewest days?", "February", ("April", "June", "November")),
    ("How many hours are in a day?", "24", ("12", "20", "48")),
    ("Which star is at the centre of the Solar System?", "The Sun", ("Sirius", "Polaris", "Alpha Centauri")),
    ("What do you call a baby cat?", "A kitten", ("A puppy", "A cub", "A calf")),
]

# (unit asked for, unit given, factor: how many of the first are in one of the second)
CONVERSIONS: list[tuple[str, str, int]] = [
    ("centimetres", "metres", 100),
    ("metres", "kilometres", 1000),
    ("millimetres", "centimetres", 10),
    ("grams", "kilograms", 1000),
    ("millilitres", "litres", 1000),
    ("minutes", "hours", 60),
    ("seconds", "minutes", 60),
    ("hours", "days", 24),
    ("days", "weeks", 7),
    ("months", "years", 12),
    ("inches", "feet", 12),
    ("eggs", "dozens of eggs", 12),
]

WORD_PROBLEMS: list[tuple[str, str]] = [
    ("A baker makes {a} loaves of bread each day. How many loaves does the baker make in {b} days?", "a*b"),
    ("Sam has {a} marbles and gives away {c} of them. How many marbles does Sam have left?", "a-c"),
    ("A box holds {a} pencils. How many pencils are in {b} boxes?", "a*b"),
    ("Ana reads {a} pages a day. How many pages does she read in {b} days?", "a*b"),
    ("A class has {a} pupils and {b} more join. How many pupils are in the class now?", "a+b"),
    ("{a} apples are shared equally among {b} children. How many apples does each child get?", "a/b"),
    ("A train travels {a} kilometres an hour for {b} hours. How far does it travel, in kilometres?", "a*b"),
    ("Tom saves {a} dollars a week. How many dollars has he saved after {b} weeks?", "a*b"),
]


def _record(id: str, question: str, answer: str, task: str, source: str, choices: list[str] | None = None) -> dict[str, object]:
    record: dict[str, object] = {"id": id, "question": question, "answer": answer, "task": task, "source": source}
    if choices is not None:
        record["choices"] = choices
    return record


def arithmetic(rng: random.Random, count: int) -> Iterator[dict[str, object]]:
    """Sums, differences and products of small whole numbers (task ``numeric``)."""
    for i in range(count):
        op = ("+", "-", "*")[i % 3]
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        if op == "-" and b > a:
            a, b = b, a
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        shown = {"+": "plus", "-": "minus", "*": "times"}[op]
        yield _record(f"arith-{i:03d}", f"What is {a} {shown} {b}?", str(value), "numeric", "arithmetic")


def conversions(rng: random.Random, count: int) -> Iterator[dict[str, object]]:
    """How many of one unit are in an amount of another (task ``numeric``), amounts in halves."""
    for i in range(count):
        small, large, factor = CONVERSIONS[i % len(CONVERSIONS)]
        amount = Fraction(rng.randint(2, 19), 2)
        shown = f"{float(amount):g}"
        value = amount * factor
        answer = str(value.numerator) if value.denominator == 1 else f"{float(value):g}"
        yield _record(f"units-{i:03d}", f"How many {small} are in {shown} {large}?", answer, "numeric", "unit-conversion")


def word_problems(rng: random.Random, count: int) -> Iterator[dict[str, object]]:
    """One-step word problems with whole-number answers (task ``math``)."""
    for i in range(count):
        template, formula = WORD_PROBLEMS[i % len(WORD_PROBLEMS)]
        b = rng.randint(2, 9)
        a = b * rng.randint(2, 12) if formula == "a/b" else rng.randint(3, 30)
        c = rng.randint(1, a - 1)
        value = {"a*b": a * b, "a-c": a - c, "a+b": a + b, "a/b": a // b}[formula]
        yield _record(f"word-{i:03d}", template.format(a=a, b=b, c=c), str(value), "math", "word-problems")


def facts(rng: random.Random) -> Iterator[dict[str, object]]:
    """General-knowledge multiple choice (task ``multiple_choice``), choices in a seeded order."""
    for i, (question, right, wrong) in enumerate(FACTS):
        choices = [right, *wrong]
        rng.shuffle(choices)
        letter = "ABCD"[choices.index(right)]
        yield _record(f"fact-{i:03d}", question, letter, "multiple_choice", "general-knowledge", choices)


def main() -> None:
    """Print every question as one JSON line."""
    rng = random.Random(SEED)
    for generated in (arithmetic(rng, 30), conversions(rng, 24), word_problems(rng, 16), facts(rng)):
        for record in generated:
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
