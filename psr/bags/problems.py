r"""Seeded "bags" word problems: pair items whose weights add up to a target, name the one left over.

A problem lists ``2k + 1`` distinct item weights (positive integers) and a target ``T``; the items
split uniquely into ``k`` pairs that each add up to ``T`` plus one item left over (its partner
``T - L`` is not among the items). The question asks for the weight of the item left over::

    Mia packs gift bags that must each weigh exactly 50 grams. Her items weigh 13, 37, 22, 19,
    28, 8 and 42 grams. Each bag holds two items, and one item is left over. How many grams does
    the item left over weigh?

Reference steps: step ``j`` (``j = 1..k``) takes the first item of the list not yet packed (and
not the one left over) and its partner, ``"Bag j: 13 + 37 = 50 grams."``; step ``k + 1`` names the
item left over, ``"Only 19 is left. The answer is \boxed{19}."``.

Why this world (docs/bags.md): *producing* a step means finding, among the items left, the
partner ``T - x`` of ``x`` -- a subtraction done "in the head" and a search of the list, where a
near miss (an item one or ten away from the partner, deliberately placed there as a distractor)
is an easy slip and samples spread over the items near it. *Checking* a step is one addition of
two numbers written on the page and a comparison with ``T``, plus a look at the list of items left.

Everything is deterministic from ``(split, seed, index)``: problem ``i`` of a split is drawn from
``random.Random(f"bags:{split}:{seed}:{i}")``.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence


@dataclass(frozen=True)
class BagsRanges:
    """How large the numbers get (inclusive): the target ``T`` and the smallest item weight."""

    target: tuple[int, int] = (30, 70)
    min_item: int = 2
    # probability that the item left over sits one or ten away from some item's partner (a
    # distractor a careless step pairs with that item)
    p_near_leftover: float = 0.8
    # > 0: every pair's smaller item lies within this distance below T / 2, so the items crowd
    # together and near misses of a partner are common (0: anywhere from min_item up)
    window: int = 0

    @classmethod
    def of(cls, value) -> "BagsRanges":
        if value is None:
            return cls()
        if isinstance(value, BagsRanges):
            return value
        m = dict(value)
        unknown = sorted(set(m) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown bags range key(s) {unknown} (known: {sorted(cls.__dataclass_fields__)})")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in m.items()})


# (name, possessive)
NAMES = [("Tom", "His"), ("Anna", "Her"), ("Ben", "His"), ("Mia", "Her"), ("Leo", "His"), ("Sara", "Her"),
         ("Omar", "His"), ("Lena", "Her"), ("Raj", "His"), ("Emma", "Her"), ("Kofi", "His"), ("Yuki", "Her")]
# what is packed: (container, items sentence, unit)
DOMAINS = [
    ("gift bags", "items weigh", "grams"),
    ("boxes", "parcels weigh", "kg"),
    ("crates", "melons weigh", "kg"),
    ("baskets", "bags of fruit weigh", "pounds"),
    ("envelopes", "coupons are worth", "dollars"),
]
Q_HEAD = ["{Name} packs {container} that must each hold exactly {T} {unit}.",
          "{Name} fills {container}, and each one must hold exactly {T} {unit}."]
Q_ITEMS = "{Poss} {what} {items} {unit}."
Q_RULE = ["Each one holds two of them, and one is left over.", "Two go into each, and one is left over."]
Q_FINAL = ["How many {unit} is the one left over?", "What is the one left over, in {unit}?"]
S_PAIR = "Bag {j}: {a} + {b} = {T} {unit}."
S_LAST = "Only {L} is left. The answer is \\boxed{{{L}}}."


def pair_text(j: int, a, b, total, unit: str) -> str:
    """A pair step's body as the reference writes it: ``"Bag 2: 22 + 28 = 50 grams."``."""
    return S_PAIR.format(j=j, a=a, b=b, T=total, unit=unit)


def last_text(leftover) -> str:
    r"""The final step's body: ``"Only 19 is left. The answer is \boxed{19}."``."""
    return S_LAST.format(L=leftover)


def list_text(values: Sequence[int]) -> str:
    vals = [str(v) for v in values]
    return vals[0] if len(vals) == 1 else ", ".join(vals[:-1]) + " and " + vals[-1]


@dataclass
class Problem:
    id: str
    question: str
    steps: list[str]  # reference step bodies
    answer: int  # the item left over
    items: list[int]  # the weights in the order the question lists them
    target: int
    pairs: list[list[int]]  # the reference pairs, in step order
    solution: str  # free-form text for M0 (no step headers), ending with \boxed{answer}
    n_pairs: int
    ctx: dict = field(default_factory=dict, repr=False)

    @property
    def n_ops(self) -> int:
        """The difficulty count the reports group by (the arith world's name): the number of pairs."""
        return self.n_pairs

    @property
    def partner(self) -> dict[int, int]:
        return {a: b for a, b in self.pairs} | {b: a for a, b in self.pairs}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["world"] = "bags"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Problem":
        d = {k: v for k, v in d.items() if k != "world"}
        return cls(**d)


def _draw(rng: random.Random, k: int, R: BagsRanges) -> Optional[tuple[int, list[int], list[list[int]], int]]:
    T = rng.randint(*R.target)
    lo, hi = R.min_item, T - R.min_item
    if R.window:
        lo, hi = max(lo, T // 2 - R.window), min(hi, T - (T // 2 - R.window))
    halves = [x for x in range(lo, hi + 1) if 2 * x < T]  # the smaller item of a pair
    if len(halves) < k + 1:
        return None
    small = rng.sample(halves, k)
    pairs = [[x, T - x] for x in small]
    used = {v for p in pairs for v in p}
    # the item left over: not a pair value, its partner absent, not T/2
    cands = [v for v in range(R.min_item, T - R.min_item + 1) if v not in used and T - v not in used and 2 * v != T]
    near = sorted({p + d for v in used for p in (T - v,) for d in (-10, -1, 1, 10)} & set(cands))
    if not cands:
        return None
    leftover = rng.choice(near) if near and rng.random() < R.p_near_leftover else rng.choice(cands)
    items = list(used) + [leftover]
    rng.shuffle(items)
    for p in pairs:
        rng.shuffle(p)
    # reference order: the first item in the list not packed yet (skipping the leftover) and its partner
    partner = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    order, done = [], set()
    for v in items:
        if v == leftover or v in done:
            continue
        order.append([v, partner[v]])
        done |= {v, partner[v]}
    return T, items, order, leftover


def generate_problem(rng: random.Random, k: int, pid: str, ranges: BagsRanges = BagsRanges()) -> Problem:
    """One problem with ``k`` pairs drawn from ``rng``."""
    if k < 1:
        raise ValueError(f"need at least one pair, got {k}")
    for _ in range(1000):
        drawn = _draw(rng, k, ranges)
        if drawn is not None:
            break
    else:
        raise ValueError(f"cannot draw {k} pairs within {ranges}")
    T, items, pairs, leftover = drawn
    name, poss = rng.choice(NAMES)
    container, what, unit = rng.choice(DOMAINS)
    ctx = dict(Name=name, Poss=poss, container=container, what=what, unit=unit)
    question = " ".join([
        rng.choice(Q_HEAD).format(T=T, **ctx),
        Q_ITEMS.format(items=list_text(items), **ctx),
        rng.choice(Q_RULE),
        rng.choice(Q_FINAL).format(**ctx),
    ])
    steps = [pair_text(j, a, b, T, unit) for j, (a, b) in enumerate(pairs, 1)] + [last_text(leftover)]
    solution = " ".join([f"{a} + {b} = {T}." for a, b in pairs] + [f"{leftover} is left. The answer is \\boxed{{{leftover}}}."])
    return Problem(pid, question, steps, leftover, items, T, [list(p) for p in pairs], solution, k, ctx)


def generate_problems(n: int, seed: int, split: str = "train", min_pairs: int = 2, max_pairs: int = 4,
                      ranges: BagsRanges = BagsRanges()) -> list[Problem]:
    """``n`` problems of ``split``; problem ``i`` has ``min_pairs + i % (max_pairs - min_pairs + 1)``
    pairs and id ``bags-{split}-{seed}-{i}``."""
    if not 1 <= min_pairs <= max_pairs:
        raise ValueError(f"need 1 <= min_pairs <= max_pairs, got {min_pairs}, {max_pairs}")
    span = max_pairs - min_pairs + 1
    return [generate_problem(random.Random(f"bags:{split}:{seed}:{i}"), min_pairs + i % span, f"bags-{split}-{seed}-{i}",
                             ranges) for i in range(n)]


def load_problems(path) -> list[Problem]:
    """Problems written by :func:`psr.bags.data.write_initial_data` (``problems_*.jsonl``)."""
    from psr.data.jsonl import read_jsonl

    return [Problem.from_dict(r) for r in read_jsonl(path, required=("id", "question", "items", "target"))]


def make_splits(n_train: int, n_test: int, seed: int = 0, train_pairs=(1, 3), test_pairs=(1, 5),
                ranges: BagsRanges = BagsRanges()) -> tuple[list[Problem], list[Problem]]:
    """Train and test problems from disjoint streams; test questions that also occur in train are
    dropped; ``test_pairs[1]`` must exceed ``train_pairs[1]`` (longer held-out problems)."""
    from psr.arith.problems import dedup_questions

    if test_pairs[1] <= train_pairs[1]:
        raise ValueError(f"test_pairs {list(test_pairs)} must reach beyond train_pairs {list(train_pairs)}")
    train = dedup_questions(generate_problems(n_train, seed, "train", *train_pairs, ranges=ranges), set())
    test = dedup_questions(generate_problems(n_test, seed, "test", *test_pairs, ranges=ranges), {p.question for p in train})
    return train, test
