"""Built-in synthetic arithmetic word problems: training data that needs no download.

Each problem is a short English story (people, items, buying, sharing, groups, prices) whose answer
takes ``difficulty`` arithmetic operations on small numbers; every step of the gold solution states
one operation as ``a op b = c`` and names the quantity it works on, so a step reads on its own (the
Long-Short and step-entropy methods cut and score solutions step by step). Results stay positive
integers and divisions are exact.

Problems are drawn from a seed: the same seed gives the same problems in every process, and problem
``i`` depends only on ``(seed, i)`` and the step range, so a longer list extends a shorter one. A held-out split is just
another seed. Train and eval MUST use different seeds; ``split_seed(seed, "train")``,
``split_seed(seed, "dev")`` and ``split_seed(seed, "eval")`` give disjoint seeds for one experiment seed. Different seeds can
still produce an identical short problem by chance (the space of one-step stories is finite), so
deduplicate by prompt if an exact held-out guarantee matters.
"""
from __future__ import annotations

import random
from typing import Callable, Optional

from longshort.data.problem import Problem


SPLITS = ("train", "eval", "dev")

# (name, subject pronoun, object pronoun, possessive)
_PEOPLE = [
    ("Tom", "he", "him", "his"), ("Mia", "she", "her", "her"), ("Liam", "he", "him", "his"),
    ("Ava", "she", "her", "her"), ("Noah", "he", "him", "his"), ("Emma", "she", "her", "her"),
    ("Ravi", "he", "him", "his"), ("Sofia", "she", "her", "her"), ("Kenji", "he", "him", "his"),
    ("Zara", "she", "her", "her"), ("Omar", "he", "him", "his"), ("Lena", "she", "her", "her"),
]
_FRIENDS = ["Ben", "Chloe", "Diego", "Grace", "Hugo", "Ines", "Jack", "Maya"]
_ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "cards", "shells", "stamps", "eggs"]
_CONTAINERS = [("bags", "bag"), ("boxes", "box"), ("packs", "pack"), ("jars", "jar"), ("crates", "crate")]
_TIMES = {2: "doubles", 3: "triples", 4: "quadruples"}

# An operation maps (rng, story, x) to (question sentence, solution step, new x), or None when it
# cannot apply to x (e.g. no exact divisor); the story dict supplies the names used in templates.
_Op = Callable[[random.Random, dict, int], Optional[tuple[str, str, int]]]


def split_seed(seed: int, split: str) -> int:
    """The generator seed for one split of an experiment seed (``seed >= 0``); distinct splits never
    share a seed, across experiment seeds too.

    ``train`` and ``eval`` take the even and odd numbers (``2 * seed`` and ``2 * seed + 1``, as they
    always did, so earlier runs draw the same problems), and ``dev`` the negative ones: the split on
    which levers and settings are chosen, so the held-out ``eval`` split is touched only for the final
    number.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    if split == "dev":
        return -(seed + 1)
    return seed * 2 + SPLITS.index(split)


def _add(rng: random.Random, s: dict, x: int) -> tuple[str, str, int]:
    n = rng.randint(2, 20)
    question = rng.choice([
        "Then {S} buys {n} more {items}.",
        "{F} gives {o} {n} {items}.",
        "Later {s} finds {n} more {items}.",
    ])
    step = "{N} has {x} {items} and gets {n} more, so {s} has {x} + {n} = {r} {items}."
    return question.format(n=n, **s), step.format(x=x, n=n, r=x + n, **s), x + n


def _subtract(rng: random.Random, s: dict, x: int) -> tuple[str, str, int] | None:
    if x < 2:
        return None
    n = rng.randint(1, min(x - 1, 20))
    question, step = rng.choice([
        ("{S} gives {n} {items} to {F}.", "{N} gives {n} of {x} {items} to {F}"),
        ("{S} loses {n} of them.", "{N} loses {n} of {x} {items}"),
        ("{S} sells {n} of them at the market.", "{N} sells {n} of {x} {items}"),
    ])
    step += ", so {s} has {x} - {n} = {r} {items} left."
    return question.format(n=n, **s), step.format(x=x, n=n, r=x - n, **s), x - n


def _multiply(rng: random.Random, s: dict, x: int) -> tuple[str, str, int] | None:
    if x > 60:
        return None
    k = rng.choice([2, 3]) if x > 25 else rng.choice([2, 3, 4])
    question = rng.choice([
        "Then the number of {items} {s} has " + _TIMES[k] + ".",
        "By the end of the month {s} has {k} times as many {items} as before.",
    ])
    step = "{N} had {x} {items} and ends up with {k} times as many, so {s} has {x} * {k} = {r} {items}."
    return question.format(k=k, **s), step.format(x=x, k=k, r=x * k, **s), x * k


def _divide(rng: random.Random, s: dict, x: int) -> tuple[str, str, int] | None:
    divisors = [k for k in range(2, 7) if x % k == 0]
    if not divisors:
        return None
    k = rng.choice(divisors)
    if rng.random() < 0.5:
        question = "{S} splits the {items} equally into {k} {bags} and keeps one {bag}."
        step = "{N} splits {x} {items} equally into {k} {bags} and keeps one, so {s} has {x} / {k} = {r} {items}."
    else:
        question = "{S} shares the {items} equally among {k} people, {o}self included."
        step = "{N} shares {x} {items} equally among {k} people, so {s} keeps {x} / {k} = {r} {items}."
    return question.format(k=k, **s), step.format(x=x, k=k, r=x // k, **s), x // k


def _sell(rng: random.Random, s: dict, x: int) -> tuple[str, str, int]:
    price = rng.randint(2, 9)
    question = "Finally {s} sells all of {p} {items} for ${price} each."
    step = "{N} sells {x} {items} at ${price} each, so {s} earns {x} * {price} = {r} dollars."
    return question.format(price=price, **s), step.format(x=x, price=price, r=x * price, **s), x * price


_OPS: list[_Op] = [_add, _subtract, _multiply, _divide]


def _story(rng: random.Random) -> dict:
    name, subject, obj, possessive = rng.choice(_PEOPLE)
    bags, bag = rng.choice(_CONTAINERS)
    return {"N": name, "s": subject, "S": subject.capitalize(), "o": obj, "p": possessive,
            "F": rng.choice(_FRIENDS), "items": rng.choice(_ITEMS), "bags": bags, "bag": bag}


def _problem(seed: int, index: int, min_steps: int, max_steps: int) -> Problem:

    rng = random.Random(f"longshort-synthetic:{seed}:{index}")
    steps_wanted = rng.randint(min_steps, max_steps)
    s = _story(rng)
    sentences: list[str] = []
    steps: list[str] = []
    if rng.random() < 0.3:  # open with a multiplication, which is itself the first step
        a, b = rng.randint(2, 6), rng.randint(2, 12)
        x = a * b
        sentences.append("{N} buys {a} {bags} of {items} with {b} {items} in each {bag}.".format(a=a, b=b, **s))
        steps.append("{N} buys {a} {bags} with {b} {items} each, so {s} has {a} * {b} = {r} {items}.".format(
            a=a, b=b, r=x, **s))
    else:
        x = rng.randint(5, 40)
        sentences.append(rng.choice(["{N} has {x} {items}.", "{N} starts the day with {x} {items}.",
                                     "There are {x} {items} in {N}'s collection."]).format(x=x, **s))
    question = "How many {items} does {N} have now?"
    while len(steps) < steps_wanted:
        last = len(steps) == steps_wanted - 1
        if last and rng.random() < 0.25:
            sentence, step, x = _sell(rng, s, x)
            question = "How many dollars does {N} earn?"
        else:
            sentence, step, x = next(r for op in rng.sample(_OPS, len(_OPS)) if (r := op(rng, s, x)))
        sentences.append(sentence)
        steps.append(step)
    sentences.append(question.format(**s))
    answer = str(x)
    return Problem(
        id=f"synthetic-s{seed}-{index:05d}",
        prompt=" ".join(sentences),
        answer=answer,
        meta={"source": "synthetic", "kind": "math", "difficulty": len(steps), "steps": steps,
              "solution": "\n".join(steps) + f"\nThe answer is {answer}."},
    )


def synthetic_problems(n: int, *, min_steps: int = 1, max_steps: int = 3, seed: int = 0) -> list[Problem]:
    """``n`` seeded word problems whose difficulty (number of steps) is drawn from [min_steps, max_steps]."""
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got min_steps={min_steps}, max_steps={max_steps}")
    return [_problem(seed, i, min_steps, max_steps) for i in range(n)]
