r"""Candidate next steps of the arith world: plausible wrong steps and re-worded correct ones.

Wrong-step kinds (:data:`WRONG_KINDS`), for step ``l`` of a problem after its reference steps
``1..l-1``; the operation of step ``l`` is ``x op y = r``:

* ``wrong_operation``: another operator on the same numbers, computed correctly
  (``36 + 5 = 41`` → ``36 - 5 = 31``);
* ``off_by_one``: the right equation with the result off by one (``36 + 5 = 42``);
* ``off_by_ten``: a carry slip, the result off by ten (``36 + 5 = 51``);
* ``wrong_quantity``: one operand replaced by another number of the question, computed correctly
  (``36 + 12 = 48`` where 12 belongs to another sentence);
* ``copied_number``: the result copied from an operand or another number of the question instead
  of computed (``36 + 5 = 36``);
* ``early_answer``: the right computation boxed as the final answer before the last step;
* ``repeated_step``: the previous step again;
* ``skipped_operation``: the *following* sentence's operation applied to the running value,
  computed correctly, skipping this step's (``36 + 5 = 41`` → ``36 * 2 = 72``). It is the error
  the arith pipeline's M1 makes on problems longer than its training ones: measured on held-out
  4-operation problems, it skips a middle operation to finish in the three steps it was trained on.

A wrong step is worded with the same templates as the reference (the template picked at random),
and a wrong final step boxes its own (wrong) result. The generator never consults the checker: it
excludes coincidences by itself (a correctly computed wrong result is never one of the
problem's intermediate values; a miscomputed one never equals the true result), so that tests
can verify independently that :mod:`psr.arith.checker` rejects every one of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

from psr.arith.problems import OPS, Operation, Problem, apply_op, eq_text, render_step

WRONG_KINDS = (
    "wrong_operation",
    "off_by_one",
    "off_by_ten",
    "wrong_quantity",
    "copied_number",
    "early_answer",
    "repeated_step",
    "skipped_operation",
)


@dataclass(frozen=True)
class Candidate:
    body: str
    correct: bool
    kind: str  # "reference", "reworded" or one of WRONG_KINDS


def _final(problem: Problem, l: int) -> bool:
    return l == problem.n_ops


def _wording(problem: Problem, rng: random.Random) -> int:
    """A random template number for a step of ``problem`` (3 wordings in files written before
    ``ctx["wordings"]`` existed)."""
    return rng.randrange(problem.ctx.get("wordings", 3))


def correct_step(problem: Problem, l: int, rng: random.Random) -> str:
    """A correct body for step ``l`` (1-based) worded with a random template (may equal the
    reference wording)."""
    o = problem.operations[l - 1]
    eq = eq_text(o.x, o.op, o.y, o.result)
    return render_step(problem.ctx, o, _wording(problem, rng), eq, str(o.result) if _final(problem, l) else None)


def _wrong_operation(problem: Problem, o: Operation, rng: random.Random) -> Optional[tuple[Operation, int]]:
    values = set(problem.values)
    options = []
    for op in OPS:
        if op == o.op:
            continue
        r = apply_op(o.x, op, o.y)
        if r is not None and r > 0 and r not in values:
            options.append((Operation(o.kind if o.kind == "g" else op, o.x, op, o.y, r), r))
    return rng.choice(options) if options else None


def _wrong_quantity(problem: Problem, o: Operation, rng: random.Random) -> Optional[tuple[Operation, int]]:
    values = set(problem.values)
    options = []
    for g in problem.givens:
        for x, y in ((o.x, g), (g, o.y)):
            if (x, y) == (o.x, o.y) or {x, y} == {o.x, o.y}:
                continue
            if o.kind != "g" and x != o.x and y == o.y:
                # replacing the running value by a given: keep only the new-number swap for chains
                continue
            r = apply_op(x, o.op, y)
            if r is not None and r > 0 and r not in values:
                options.append((Operation(o.kind, x, o.op, y, r), r))
    return rng.choice(options) if options else None


def wrong_step(problem: Problem, l: int, kind: str, rng: random.Random) -> Optional[str]:
    """A wrong body for step ``l`` (1-based) of ``kind``, or None when that kind has no instance
    here (e.g. no other operator gives a positive integer)."""
    if kind not in WRONG_KINDS:
        raise ValueError(f"unknown wrong-step kind {kind!r} (kinds: {WRONG_KINDS})")
    o = problem.operations[l - 1]
    if kind == "wrong_operation":
        got = _wrong_operation(problem, o, rng)
        if got is None:
            return None
        shown, claimed = got
    elif kind == "wrong_quantity":
        got = _wrong_quantity(problem, o, rng)
        if got is None:
            return None
        shown, claimed = got
    elif kind in ("off_by_one", "off_by_ten"):
        d = 1 if kind == "off_by_one" else 10
        options = [o.result + d] + ([o.result - d] if o.result - d > 0 else [])
        claimed, shown = rng.choice(options), o
    elif kind == "copied_number":
        options = sorted({o.x, o.y, *problem.givens} - {o.result})
        claimed, shown = rng.choice(options), o
    elif kind == "skipped_operation":
        if o.kind == "g" or _final(problem, l):
            return None
        nxt = problem.operations[l]
        r = apply_op(o.x, nxt.op, nxt.y)
        if r is None or r <= 0 or r in set(problem.values):
            return None
        shown, claimed = Operation(nxt.kind, o.x, nxt.op, nxt.y, r), r
    elif kind == "early_answer":
        if _final(problem, l):
            return None
        eq = eq_text(o.x, o.op, o.y, o.result)
        return render_step(problem.ctx, o, _wording(problem, rng), eq, str(o.result))
    else:  # repeated_step
        if l == 1:
            return None
        return correct_step(problem, l - 1, rng)
    eq = eq_text(shown.x, shown.op, shown.y, claimed)
    return render_step(problem.ctx, shown, _wording(problem, rng), eq, str(claimed) if _final(problem, l) else None)


def wrong_steps(problem: Problem, l: int, rng: random.Random, kinds=WRONG_KINDS) -> list[Candidate]:
    """One wrong candidate for step ``l`` of each kind in ``kinds`` that has an instance."""
    out = []
    for kind in kinds:
        body = wrong_step(problem, l, kind, rng)
        if body is not None:
            out.append(Candidate(body, False, kind))
    return out


def random_wrong_step(problem: Problem, l: int, rng: random.Random) -> Candidate:
    """A wrong candidate of a random kind, each kind equally likely among those with an instance
    here (``off_by_one`` always has one)."""
    kinds = list(WRONG_KINDS)
    rng.shuffle(kinds)
    for kind in kinds:
        body = wrong_step(problem, l, kind, rng)
        if body is not None:
            return Candidate(body, False, kind)
    raise AssertionError("off_by_one always has an instance")  # pragma: no cover
