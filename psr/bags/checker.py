r"""The exact step checker of the bags world (the oracle standing in for the PRM).

Model output is untrusted text: equations and ``\boxed{}`` are found with the arith checker's
parsers (:func:`psr.arith.checker.find_equations`, :func:`~psr.arith.checker.find_boxed`), never
``eval``.

*Items left* before a step: the problem's items minus those packed by the previous steps that
were themselves correct (a wrong step packs nothing).

A step is **correct** iff

1. every equation in it is ``a + b = c`` with ``a + b == c`` (reason ``arithmetic`` otherwise;
   an equation with another operator or more operands is ``not_a_pair``);
2. ``a`` and ``b`` are two different items left (``not_left``: an item already packed, the same
   item twice, or a number that is no item);
3. ``c`` is the target (``wrong_sum``);
4. it makes progress: at least one pair, or a ``\boxed{}`` answer; every ``\boxed{}`` must hold the
   item left over (``wrong_answer``), and only that item may be left when it is stated
   (``early_answer``: pairs are still to be made); no equation and no answer is ``no_progress``.

Item weights are distinct and each has at most one partner ``T - x``, so a correct pair is always
one of the problem's pairs, and every correct step is on the way to the unique answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable, Optional, Sequence

from psr.arith.checker import boxed_value, find_equations, prm_labels, strip_header
from psr.boxes import find_boxed
from psr.bags.problems import Problem

REASONS = ("ok", "empty", "arithmetic", "not_a_pair", "not_left", "wrong_sum", "unparseable_answer", "wrong_answer",
           "early_answer", "no_progress")


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"


@dataclass
class StepCheck:
    correct: bool
    reason: str
    equation: Optional[str] = None  # the equation the verdict is about
    a: Optional[str] = None  # its two operands and the true sum (a pair equation)
    b: Optional[str] = None
    true_sum: Optional[str] = None
    number: Optional[str] = None  # the offending number (not left, wrong answer)
    packed: list[int] = field(default_factory=list)  # items this step packs
    boxed: Optional[str] = None


def items_left(problem: Problem, prev_steps: Sequence[str]) -> list[int]:
    """The items not packed by the correct steps among ``prev_steps``, in the question's order."""
    left = list(problem.items)
    for s in prev_steps:
        c = analyze_step(problem, left, s)
        if c.correct:
            left = [v for v in left if v not in c.packed]
    return left


def analyze_step(problem: Problem, left: Iterable[int], step: str) -> StepCheck:
    """The verdict on ``step`` (a body, or "Step n:" text) with the items ``left``."""
    body = strip_header(step)
    if not body:
        return StepCheck(False, "empty")
    left_now = {Fraction(v) for v in left}
    packed: list[int] = []
    last_eq, first = None, {}
    for eq in find_equations(body):
        last_eq = eq.text
        if eq.ops != ["+"] or len(eq.operands) != 2:
            return StepCheck(False, "not_a_pair", eq.text)
        a, b = eq.operands
        info = dict(a=_fmt(a), b=_fmt(b), true_sum=_fmt(a + b))
        if a + b != eq.claimed:
            return StepCheck(False, "arithmetic", eq.text, number=_fmt(eq.claimed), **info)
        for x in (a, b):
            if x not in left_now:
                return StepCheck(False, "not_left", eq.text, number=_fmt(x), **info)
        if a == b:
            return StepCheck(False, "not_left", eq.text, number=_fmt(a), **info)
        if eq.claimed != problem.target:
            return StepCheck(False, "wrong_sum", eq.text, number=_fmt(eq.claimed), **info)
        left_now -= {a, b}
        packed += [int(a), int(b)]
        first = first or dict(info, equation=eq.text)
    boxes = find_boxed(body)
    for content in boxes:
        v = boxed_value(content)
        if v is None:
            return StepCheck(False, "unparseable_answer", last_eq, number=content.strip())
        if v != problem.answer:
            return StepCheck(False, "wrong_answer", last_eq, number=_fmt(v))
        if left_now != {Fraction(problem.answer)}:
            return StepCheck(False, "early_answer", last_eq, number=_fmt(v))
    if not packed and not boxes:
        return StepCheck(False, "no_progress", last_eq)
    first = first or {"equation": last_eq}
    return StepCheck(True, "ok", packed=packed, boxed=str(problem.answer) if boxes else None, **first)


def check_step_detail(problem: Problem, prev_steps: Sequence[str], step: str) -> StepCheck:
    return analyze_step(problem, items_left(problem, prev_steps), step)


def check_step(problem: Problem, prev_steps: Sequence[str], step: str) -> bool:
    return check_step_detail(problem, prev_steps, step).correct


def check_steps(problem: Problem, steps: Sequence[str]) -> list[StepCheck]:
    """Each step's verdict given the steps before it."""
    out, left = [], list(problem.items)
    for s in steps:
        c = analyze_step(problem, left, s)
        if c.correct:
            left = [v for v in left if v not in c.packed]
        out.append(c)
    return out


def score_steps(problem: Problem, steps: Sequence[str]) -> list[float]:
    """PRM-style labels: 1.0 up to the first wrong step, 0.0 from it on."""
    return prm_labels(check_steps(problem, steps))


def check_solution(problem: Problem, solution: str | Sequence[str]) -> bool:
    from psr.arith.checker import final_answer

    text = solution if isinstance(solution, str) else "\n".join(solution)
    return final_answer(text) == problem.answer
