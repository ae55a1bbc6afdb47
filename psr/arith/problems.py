r"""Seeded multi-step arithmetic word problems with reference solutions in "Step n: " form.

A problem is a chain of ``n_ops`` integer operations on one running quantity ("what Anna has"):

* it starts either from a given amount (``"Anna has 17 marbles."``) or from a product of two
  given numbers (``"Anna has 4 bags with 12 marbles in each."`` -- that product is operation 1);
* every further operation combines the running value with one new given number: add, subtract,
  multiply or divide (exact integer division only);
* the question asks for the final value.

Reference step ``k`` performs operation ``k`` and states its result as one equation
``"x op y = r"`` (ASCII operators ``+ - * /``); the last step ends with ``The answer is
\boxed{answer}.``. All intermediate values are positive integers up to ``NumberRanges.max_value`` (99 by
default), distinct from each
other and from the given numbers, so that every intermediate value identifies one step (see
:mod:`psr.arith.checker`).

Everything is deterministic from ``(split, seed, index)``: problem ``i`` of a split is drawn from
``psr.seeds.keyed_rng("arith", split, seed, i)``, i.e. ``random.Random(f"arith:{split}:{seed}:{i}")``
(string seeds are hashed with SHA-512 by Python, so they do not depend on ``PYTHONHASHSEED``).
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from psr.data.jsonl import read_jsonl
from psr.seeds import keyed_rng

OPS = ("+", "-", "*", "/")
MAX_VALUE = 999  # the largest max_value a preset uses (the "hard" one)


@dataclass(frozen=True)
class NumberRanges:
    """How large the numbers of a problem get (inclusive ranges): the difficulty knob besides
    the number of operations. The defaults are the ``easy`` preset (every value below 100):
    measured, a ~4M model trained from scratch learns these far faster than 3-digit ones (see
    :data:`PRESETS`)."""

    start: tuple[int, int] = (2, 20)  # a plain starting amount
    groups: tuple[int, int] = (2, 5)  # number of containers in a "groups" start
    per_group: tuple[int, int] = (2, 9)  # items per container
    add: tuple[int, int] = (2, 9)  # amount added / removed
    mul: tuple[int, int] = (2, 3)  # multiplier
    div: tuple[int, int] = (2, 3)  # divisor (exact division only)
    max_value: int = 99  # no intermediate value exceeds this
    p_groups: float = 0.5  # probability of a "groups" start

    @classmethod
    def from_mapping(cls, m) -> "NumberRanges":
        """From a mapping of fields, or ``{"preset": name, ...overrides}``."""
        m = dict(m)
        base = asdict(PRESETS[m.pop("preset")]) if "preset" in m else {}
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(m) - names)
        if unknown:
            raise ValueError(f"unknown number range key(s) {unknown} (known: {sorted(names)} and 'preset')")
        base.update({k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in m.items()})
        return cls(**base)

    @classmethod
    def of(cls, value) -> "NumberRanges":
        """``value`` as NumberRanges: None gives the defaults, a mapping :meth:`from_mapping`."""
        if value is None:
            return cls()
        return value if isinstance(value, NumberRanges) else cls.from_mapping(value)


# Measured on one GPU (greedy accuracy on held-out problems / judge accuracy on a held-out EFT
# set, after SFT on IFT + EFT from scratch, llama ~3.7M, hidden 256, batches of 32, lr 2e-3):
#   small (1-3 operations, tested on 1-3):  1,500 steps 57% / 82%;  3,000 steps 75% / 84%
#   easy  (same):                           1,500 steps 32% / 73%
# (Earlier measurements of easy/hard, 0-14% / 50-66%, were made with qwen2 model dirs whose
# tokenizer lost its pre-tokenizer on load -- see psr.arith.model -- and do not stand.)
# The arith pipeline uses "small".
PRESETS = {
    "easy": NumberRanges(),
    "small": NumberRanges(start=(2, 9), groups=(2, 4), per_group=(2, 5), add=(1, 9), mul=(2, 2), div=(2, 2), max_value=40),
    "medium": NumberRanges(start=(5, 40), groups=(2, 6), per_group=(3, 12), add=(2, 20), mul=(2, 3), div=(2, 4), max_value=199),
    "hard": NumberRanges(start=(5, 60), groups=(2, 9), per_group=(3, 15), add=(2, 40), mul=(2, 4), div=(2, 6), max_value=999),
}
DEFAULT_RANGES = NumberRanges()

# (name, subject pronoun, possessive, reflexive, object pronoun)
NAMES = [
    ("Tom", "he", "his", "himself", "him"),
    ("Anna", "she", "her", "herself", "her"),
    ("Ben", "he", "his", "himself", "him"),
    ("Mia", "she", "her", "herself", "her"),
    ("Leo", "he", "his", "himself", "him"),
    ("Sara", "she", "her", "herself", "her"),
    ("Omar", "he", "his", "himself", "him"),
    ("Lena", "she", "her", "herself", "her"),
    ("Raj", "he", "his", "himself", "him"),
    ("Emma", "she", "her", "herself", "her"),
    ("Kofi", "he", "his", "himself", "him"),
    ("Yuki", "she", "her", "herself", "her"),
]
FRIENDS = ["Max", "Zoe", "Ivan", "Nora", "Sam", "Lily", "Paul", "Ada"]

# unit (plural), container for the "groups" start, verbs that add, verbs that remove
DOMAINS = [
    dict(unit="apples", container="boxes", add=["picks", "buys"], sub=["eats", "sells"]),
    dict(unit="marbles", container="bags", add=["wins", "finds"], sub=["loses", "gives away"]),
    dict(unit="dollars", container="envelopes", add=["earns", "saves"], sub=["spends", "pays"]),
    dict(unit="stickers", container="sheets", add=["gets", "buys"], sub=["uses", "trades away"]),
    dict(unit="liters of water", container="tanks", add=["pours in", "collects"], sub=["uses", "drains"]),
    dict(unit="cookies", container="trays", add=["bakes", "buys"], sub=["eats", "sells"]),
    dict(unit="coins", container="jars", add=["finds", "earns"], sub=["spends", "loses"]),
    dict(unit="km", container="days", add=["runs", "cycles"], sub=["walks back", "drives back"]),
    dict(unit="pencils", container="packs", add=["buys", "receives"], sub=["breaks", "lends out"]),
    dict(unit="cards", container="decks", add=["collects", "buys"], sub=["trades away", "loses"]),
]

# Question sentences. Slots: {Name} {pron} {Pron} {poss} {refl} {obj} {unit} {container} {verb} {n} {a} {b} {friend}
Q_START = ["{Name} has {a} {unit}.", "{Name} starts with {a} {unit}.", "At first, {Name} has {a} {unit}."]
Q_GROUPS = [
    "{Name} has {a} {container} with {b} {unit} in each.",
    "{Name} has {a} {container}, and each one holds {b} {unit}.",
]
Q_OP = {
    "+": ["Then {pron} {verb} {n} more {unit}.", "{Pron} {verb} another {n} {unit}.", "{friend} gives {obj} {n} {unit}."],
    "-": ["Then {pron} {verb} {n} {unit}.", "{Pron} {verb} {n} of {poss} {unit}.", "{Pron} gives {n} {unit} to {friend}."],
    "*": ["Then the amount of {unit} {pron} has becomes {n} times as large.", "Next, {pron} ends up with {n} times as many {unit} as before."],
    "/": [
        "{Pron} splits {poss} {unit} equally into {n} groups and keeps one group.",
        "{Pron} shares {poss} {unit} equally among {n} people, including {refl}, and keeps one share.",
    ],
}
Q_FINAL = ["How many {unit} does {Name} have now?", "How many {unit} does {Name} have in the end?"]

# Step bodies. {eq} is "x op y = r"; each template states exactly one equation.
S_GROUPS = [
    "{Name} has {a} {container} with {b} {unit} each, so {pron} has {eq} {unit}.",
    "There are {eq} {unit} in the {container}.",
    "The {container} hold {eq} {unit} in total.",
]
S_OP = {
    "+": ["{Name} gets {n} more, so {pron} has {eq} {unit}.", "Adding {n} gives {eq} {unit}.", "Now {Name} has {eq} {unit}."],
    "-": ["{Name} has {eq} {unit} left.", "Taking away {n} leaves {eq} {unit}.", "After that, {Name} has {eq} {unit}."],
    "*": ["{Name} now has {eq} {unit}.", "Multiplying by {n} gives {eq} {unit}.", "The amount grows to {eq} {unit}."],
    "/": ["Each share is {eq} {unit}, so {Name} keeps that many.", "Dividing by {n} gives {eq} {unit}.", "{Name} keeps {eq} {unit}."],
}
S_FINAL = [" The answer is \\boxed{{{r}}}.", " So the answer is \\boxed{{{r}}}.", " The final answer is \\boxed{{{r}}}."]

# Free-form sentences for M0's training text (no "Step n:" headers).
F_OP = {
    "g": ["First, {eq}.", "{Name} starts with {eq} {unit}."],
    "+": ["Then {eq}.", "With {n} more that is {eq}."],
    "-": ["Then {eq}.", "Without those {n} it is {eq}."],
    "*": ["Then {eq}.", "That becomes {eq}."],
    "/": ["Then {eq}.", "One share is {eq}."],
}


@dataclass(frozen=True)
class Operation:
    """One step of the chain: ``x op y = result``; ``kind`` is ``"g"`` (groups: ``a * b`` of two
    given numbers) or the operator."""

    kind: str
    x: int
    op: str
    y: int
    result: int


@dataclass
class Problem:
    id: str
    question: str
    steps: list[str]  # reference step bodies (no "Step n:" header)
    answer: int
    operations: list[Operation]
    givens: list[int]  # the numbers stated in the question, in order
    solution: str  # free-form text (no step headers), ending with \boxed{answer}
    n_ops: int
    # rendering context (used to word wrong/alternative steps like the reference)
    ctx: dict = field(default_factory=dict, repr=False)

    @property
    def values(self) -> list[int]:
        """The intermediate values, one per operation; the last one is the answer."""
        return [o.result for o in self.operations]

    def to_dict(self) -> dict:
        """A JSON-able dict (see :meth:`from_dict`)."""
        d = asdict(self)
        d["operations"] = [asdict(o) for o in self.operations]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Problem":
        d = dict(d)
        d["operations"] = [Operation(**o) for o in d["operations"]]
        return cls(**d)


def eq_text(x, op: str, y, r) -> str:
    """The equation as steps write it: ``"3 * 12 = 36"``."""
    return f"{x} {op} {y} = {r}"


def apply_op(x: int, op: str, y: int) -> Optional[int]:
    """Integer result of ``x op y``; ``None`` for a non-exact division or division by zero."""
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op == "/":
        return x // y if y and x % y == 0 else None
    raise ValueError(f"unknown operator {op!r}")


def render_step(ctx: dict, operation: Operation, template: int, eq: str, final: Optional[str] = None) -> str:
    """A step body for ``operation`` with template number ``template`` (mod the number of
    templates), showing ``eq`` as its equation; ``final`` (the boxed value as text) appends the
    answer sentence."""
    if operation.kind == "g":
        tmpls = S_GROUPS
        slots = dict(ctx, a=operation.x, b=operation.y)
    else:
        tmpls = S_OP[operation.op]
        slots = dict(ctx, n=operation.y)
    body = tmpls[template % len(tmpls)].format(eq=eq, **slots)
    if final is not None:
        body += S_FINAL[template % len(S_FINAL)].format(r=final)
    return body


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _draw_chain(rng: random.Random, n_ops: int, R: NumberRanges) -> Optional[tuple[list[Operation], list[int]]]:
    """One chain of operations satisfying the module's constraints, or None (caller retries)."""
    ops: list[Operation] = []
    givens: list[int] = []
    top = R.max_value
    if rng.random() < R.p_groups:
        a, b = rng.randint(*R.groups), rng.randint(*R.per_group)
        if a * b > top:
            return None
        ops.append(Operation("g", a, "*", b, a * b))
        givens += [a, b]
        v = a * b
    else:
        v = rng.randint(*R.start)
        givens.append(v)
    while len(ops) < n_ops:
        choices = []
        lo_add, hi_add = R.add
        if v + lo_add <= top:
            choices.append("+")
        if v - lo_add >= 2:
            choices.append("-")
        if v * R.mul[0] <= top:
            choices.append("*")
        divisors = [d for d in range(R.div[0], R.div[1] + 1) if d > 1 and v % d == 0 and v // d >= 2]
        if divisors:
            choices.append("/")
        if not choices:
            return None
        op = rng.choice(choices)
        if op == "+":
            n = rng.randint(lo_add, min(hi_add, top - v))
        elif op == "-":
            n = rng.randint(lo_add, min(hi_add, v - 2))
        elif op == "*":
            n = rng.randint(R.mul[0], min(R.mul[1], top // v))
        else:
            n = rng.choice(divisors)
        r = apply_op(v, op, n)
        ops.append(Operation(op, v, op, n, r))
        givens.append(n)
        v = r
    results = [o.result for o in ops]
    # every intermediate value names one step: distinct, and not a given number
    if len(set(results)) != len(results) or set(results) & set(givens):
        return None
    if len(set(givens)) != len(givens):
        return None
    return ops, givens


def generate_problem(rng: random.Random, n_ops: int, pid: str, ranges: NumberRanges = DEFAULT_RANGES,
                     step_wordings: int = 3) -> Problem:
    """One problem with exactly ``n_ops`` operations drawn from ``rng``. ``step_wordings``: how
    many of the templates a step may be worded with (1: one fixed wording per kind of operation;
    kept in ``ctx["wordings"]`` so that :mod:`psr.arith.candidates` words alternatives alike)."""
    if not 1 <= step_wordings <= 3:
        raise ValueError(f"step_wordings must be 1, 2 or 3, got {step_wordings}")
    if n_ops < 1:
        raise ValueError(f"n_ops must be >= 1, got {n_ops}")
    for _ in range(1000):
        drawn = _draw_chain(rng, n_ops, ranges)
        if drawn is not None:
            break
    else:  # pragma: no cover - the constraints are loose enough
        raise ValueError(f"could not draw a chain of {n_ops} operations within {ranges}")
    ops, givens = drawn
    name, pron, poss, refl, obj = rng.choice(NAMES)
    dom = rng.choice(DOMAINS)
    friend = rng.choice(FRIENDS)
    ctx = dict(Name=name, pron=pron, Pron=_cap(pron), poss=poss, refl=refl, obj=obj, unit=dom["unit"],
               container=dom["container"], friend=friend, wordings=step_wordings)
    sentences = []
    steps = []
    free = []
    for k, o in enumerate(ops):
        if o.kind == "g":
            sentences.append(rng.choice(Q_GROUPS).format(a=o.x, b=o.y, **ctx))
        else:
            if k == 0:
                sentences.append(rng.choice(Q_START).format(a=o.x, **ctx))
            verb = rng.choice(dom["add"] if o.op == "+" else dom["sub"])
            sentences.append(rng.choice(Q_OP[o.op]).format(n=o.y, verb=verb, **ctx))
        last = k == len(ops) - 1
        eq = eq_text(o.x, o.op, o.y, o.result)
        steps.append(render_step(ctx, o, rng.randrange(step_wordings), eq, str(o.result) if last else None))
        ftmpl = "First, {eq}." if k == 0 and o.kind != "g" else rng.choice(F_OP[o.kind])
        free.append(ftmpl.format(eq=eq, n=o.y, **ctx))
    sentences.append(rng.choice(Q_FINAL).format(**ctx))
    answer = ops[-1].result
    free.append(f"The answer is \\boxed{{{answer}}}.")
    return Problem(
        id=pid,
        question=" ".join(sentences),
        steps=steps,
        answer=answer,
        operations=ops,
        givens=givens,
        solution=" ".join(free),
        n_ops=n_ops,
        ctx=ctx,
    )


def generate_problems(
    n: int, seed: int, split: str = "train", min_ops: int = 2, max_ops: int = 4,
    ranges: NumberRanges = DEFAULT_RANGES, step_wordings: int = 3, ops_weights: Optional[Sequence[float]] = None,
) -> list[Problem]:
    """``n`` problems of ``split`` from ``seed``; problem ``i`` has ``min_ops + i % (max_ops -
    min_ops + 1)`` operations (an even spread of difficulties) and id ``arith-{split}-{seed}-{i}``.
    ``ops_weights`` (one weight per operation count min_ops..max_ops) instead draws each problem's
    count with those relative weights, from a stream of its own (the problem text still comes from
    ``arith:{split}:{seed}:{i}``). Duplicated questions are not removed here (see :func:`make_splits`)."""
    if not 1 <= min_ops <= max_ops:
        raise ValueError(f"need 1 <= min_ops <= max_ops, got {min_ops}, {max_ops}")
    counts = list(range(min_ops, max_ops + 1))
    if ops_weights is not None:
        ops_weights = [float(x) for x in ops_weights]
        if len(ops_weights) != len(counts) or min(ops_weights) < 0 or sum(ops_weights) <= 0:
            raise ValueError(f"ops_weights must be {len(counts)} non-negative weights (one per operation count "
                             f"{min_ops}..{max_ops}) with a positive sum, got {ops_weights}")
    out = []
    for i in range(n):
        rng = keyed_rng("arith", split, seed, i)
        if ops_weights is None:
            k = counts[i % len(counts)]
        else:
            k = keyed_rng("arith-ops", split, seed, i).choices(counts, ops_weights)[0]
        out.append(generate_problem(rng, k, f"arith-{split}-{seed}-{i}", ranges, step_wordings))
    return out


def make_splits(
    n_train: int,
    n_test: int,
    seed: int = 0,
    train_ops: tuple[int, int] = (2, 4),
    test_ops: tuple[int, int] = (2, 6),
    ranges: NumberRanges = DEFAULT_RANGES,
    step_wordings: int = 3,
    train_ops_weights: Optional[Sequence[float]] = None,
) -> tuple[list[Problem], list[Problem]]:
    """Train and test problems from disjoint random streams (split names differ), with duplicate
    questions dropped inside each split and every test question that also occurs in train dropped
    (so the test split has no question in common with train; its size can fall short of
    ``n_test`` by those drops, which the caller sees in ``len``). ``test_ops[1]`` must exceed
    ``train_ops[1]``: the test split has longer problems than any training problem. ``ranges``
(the same for both splits) sets how large the numbers get, ``step_wordings`` how many wordings
a step may take (see :func:`generate_problem`), ``train_ops_weights`` how often each operation
count occurs in train (see :func:`generate_problems`; None: evenly)."""
    if test_ops[1] <= train_ops[1]:
        raise ValueError(f"test_ops {test_ops} must reach beyond train_ops {train_ops}")
    train = dedup_questions(generate_problems(n_train, seed, "train", *train_ops, ranges=ranges, step_wordings=step_wordings,
                                                ops_weights=train_ops_weights), set())
    seen = {p.question for p in train}
    test = dedup_questions(generate_problems(n_test, seed, "test", *test_ops, ranges=ranges, step_wordings=step_wordings), seen)
    assert not seen & {p.question for p in test}
    return train, test


def dedup_questions(problems: list[Problem], seen: set[str]) -> list[Problem]:
    """``problems`` without repeated questions and without those in ``seen``, in order."""
    seen = set(seen)
    out = []
    for p in problems:
        if p.question not in seen:
            seen.add(p.question)
            out.append(p)
    return out


def load_problems(path: str | os.PathLike) -> list[Problem]:
    """Problems written by :func:`psr.arith.data.write_initial_data` (``problems_*.jsonl``)."""
    return [Problem.from_dict(r) for r in read_jsonl(path, required=("id", "question", "operations"))]
