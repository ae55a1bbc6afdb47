r"""Templated candidate steps of the bags world: correct ones and the slips a careless step makes.

For step ``l`` after the reference steps ``1..l-1`` (pair steps are ``l <= k``, the answer step is
``l = k + 1``); ``x`` is the first item left and ``p = T - x`` its partner:

* ``near_miss``: ``x`` with the item left closest to ``p`` (not ``p``), written ``= T``
  (what a policy that misjudges ``T - x`` by a little writes: it copies the target);
* ``near_miss_sum``: the same pair with its true sum (``= s``, not the target);
* ``not_an_item``: ``x`` with ``p ± 1`` or ``p ± 10`` that is no item, written ``= T``;
* ``packed``: ``x`` with an item packed by an earlier step, written ``= T``;
* ``leftover``: the item left over with the item closest to its missing partner, written ``= T``;
* ``early_answer``: the answer step before every pair is made;
* ``wrong_answer`` (answer step only): another item boxed as the answer.

Every kind is wrong by construction (tests check the checker agrees); correct candidates pair any
two partners left, in either order.
"""

from __future__ import annotations

import random
from typing import Optional

from psr.bags.problems import Problem, last_text, pair_text

PAIR_KINDS = ("near_miss", "near_miss_sum", "not_an_item", "packed", "leftover", "early_answer")
ANSWER_KINDS = ("wrong_answer",)


def left_after(problem: Problem, l: int) -> list[int]:
    """Items left before reference step ``l`` (1-based)."""
    packed = {v for p in problem.pairs[: l - 1] for v in p}
    return [v for v in problem.items if v not in packed]


def correct_step(problem: Problem, l: int, rng: random.Random) -> str:
    """A correct body for step ``l``: any pair left (either order), or the answer."""
    if l > problem.n_pairs:
        return last_text(problem.answer)
    pairs = problem.pairs[l - 1:]
    a, b = list(rng.choice(pairs))
    if rng.random() < 0.5:
        a, b = b, a
    return pair_text(l, a, b, problem.target, problem.ctx.get("unit", "grams"))


def _closest(values, to: int, rng: random.Random) -> Optional[int]:
    if not values:
        return None
    d = min(abs(v - to) for v in values)
    return rng.choice(sorted(v for v in values if abs(v - to) == d))


def wrong_step(problem: Problem, l: int, kind: str, rng: random.Random) -> Optional[str]:
    """A wrong body of ``kind`` for step ``l``, or None when the kind has no instance there."""
    T, unit, L = problem.target, problem.ctx.get("unit", "grams"), problem.answer
    left = left_after(problem, l)
    if l > problem.n_pairs:
        if kind != "wrong_answer":
            return None
        return last_text(rng.choice([v for v in problem.items if v != L]))
    if kind == "wrong_answer":
        return None
    x, p = problem.pairs[l - 1]
    if kind == "early_answer":
        return last_text(L)
    if kind in ("near_miss", "near_miss_sum"):
        y = _closest([v for v in left if v not in (x, p)], p, rng)
        if y is None:
            return None
        return pair_text(l, x, y, T if kind == "near_miss" else x + y, unit)
    if kind == "not_an_item":
        opts = [p + d for d in (-10, -1, 1, 10) if p + d > 0 and p + d not in problem.items]
        return pair_text(l, x, rng.choice(opts), T, unit) if opts else None
    if kind == "packed":
        done = [v for v in problem.items if v not in left]
        return pair_text(l, x, rng.choice(done), T, unit) if done else None
    if kind == "leftover":
        y = _closest([v for v in left if v != L], T - L, rng)
        return pair_text(l, L, y, T, unit) if y is not None else None
    raise ValueError(f"unknown wrong-step kind {kind!r} (kinds: {PAIR_KINDS + ANSWER_KINDS})")


def random_wrong_step(problem: Problem, l: int, rng: random.Random, weights: Optional[dict] = None) -> tuple[str, str]:
    """``(kind, body)`` of a random wrong step for ``l`` (``weights``: relative weight per kind;
    default: near misses twice as often as the others)."""
    kinds = list(ANSWER_KINDS if l > problem.n_pairs else PAIR_KINDS)
    w = weights or {"near_miss": 2.0, "near_miss_sum": 1.0}
    for _ in range(50):
        kind = rng.choices(kinds, [float(w.get(k, 1.0)) for k in kinds])[0]
        body = wrong_step(problem, l, kind, rng)
        if body is not None:
            return kind, body
    return "early_answer", last_text(problem.answer)  # pragma: no cover - always possible for pairs
