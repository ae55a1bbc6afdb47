r"""The exact step checker of the arith world (the oracle standing in for the paper's PRM).

Model output is untrusted text: numbers and equations are found with regular expressions and
evaluated with :class:`fractions.Fraction` by a tiny precedence parser -- nothing is ever passed to
``eval``.

Definitions
-----------
*Numbers*: ``12``, ``1,200`` (comma thousands groups), ``12.5``, optionally written ``$12``.
*Equation*: ``x1 op x2 [op x3 ...] = r`` with ``op`` one of ``+ - − * × x · / ÷`` (usual
precedence, at most 9 operands, no parentheses -- an expression the parser does not take whole,
e.g. ``(3 + 4) * 2 = 14``, is not an equation at all, never a part of it); the text after ``r``
(units etc.) is ignored.
*Known numbers* before a step: the numbers stated in the question (``problem.givens``) plus the
values *derived* by the previous steps that were themselves correct (a wrong previous step
establishes nothing).

A step (its body; a leading ``"Step n:"`` header is ignored) is **correct** iff

1. every equation in it is arithmetically right (exactly, as fractions);
2. every number on the left side of each equation is known (given, derived earlier, or derived
   by an earlier equation of the same step);
3. the result of each equation is either already derived (a restatement) or one of the problem's
   intermediate values (``problem.values``) -- a quantity the problem needs; and
4. the step makes progress: it derives at least one new intermediate value, or it states a
   ``\boxed{}`` answer; every ``\boxed{}`` in it must hold a single number equal to the gold answer,
   and the answer must already be derived (by this step or an earlier one).

The reasons a step fails, in the order checked: ``empty``, ``arithmetic``, ``unknown_operand``,
``wrong_quantity`` (a correct computation of a number the problem does not need: wrong operation,
wrong quantity), ``unparseable_answer``, ``wrong_answer``, ``answer_not_derived``, ``no_progress``
(no new value and no answer, e.g. no equation at all).

Problem values are distinct positive integers different from the given numbers (see
:mod:`psr.arith.problems`). A wrong computation can still hit an intermediate value by
coincidence; the checker then accepts it (the number is right). The wrong-step generator avoids
such coincidences.

A *solution* is correct when its last ``\boxed{}`` holds the gold answer
(:func:`check_solution`); :func:`score_steps` gives PRM-style per-step labels (1.0 up to the
first wrong step, 0.0 from there on).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable, Optional, Sequence

from psr.arith.problems import Problem, load_problems
from psr.boxes import find_boxed

_NUM = r"\$?(?:\d{1,3}(?:,\d{3}){1,10}|\d{1,30})(?:\.\d{1,30})?"
_OP = r"(?:[-+*/×·÷−–]|(?<=[\d\s])[xX](?=[\s\d$]))"
_EQ_RE = re.compile(
    rf"(?<![\d.,$])(?<![-+*/×·÷−–=])(?<![-+*/×·÷−–=]\s)(?P<lhs>{_NUM}(?:\s*{_OP}\s*{_NUM}){{1,8}})\s*=\s*(?P<rhs>[-−]?\s*{_NUM})"
)
_NUM_RE = re.compile(_NUM)
_TOKEN_RE = re.compile(rf"\s*(?:(?P<num>{_NUM})|(?P<op>{_OP}))")
_HEADER_RE = re.compile(r"^\s*Step\s+\d+\s*:", re.IGNORECASE)
_TEXT_RE = re.compile(r"\\(?:text|mathrm|textbf)\s*\{([^{}]*)\}")
_OP_NORMAL = {"×": "*", "x": "*", "X": "*", "·": "*", "÷": "/", "−": "-", "–": "-"}


def parse_number(text: str) -> Fraction:
    """``"1,200"`` → 1200, ``"$12"`` → 12, ``"12.5"`` → 25/2 (a leading ``-``/``−`` negates)."""
    t = text.strip().replace("−", "-")
    neg = t.startswith("-")
    t = t.lstrip("-").strip().lstrip("$").replace(",", "")
    value = Fraction(t)
    return -value if neg else value


@dataclass
class Equation:
    text: str  # as written, e.g. "3 * 12 = 36"
    operands: list[Fraction]
    ops: list[str]  # normalised to + - * /
    claimed: Fraction
    value: Optional[Fraction]  # the true value of the left side (None: division by zero)

    @property
    def correct(self) -> bool:
        return self.value is not None and self.value == self.claimed


def _evaluate(operands: list[Fraction], ops: list[str]) -> Optional[Fraction]:
    """Left side with usual precedence (* and / before + and -), exactly; None on x / 0."""
    terms = [operands[0]]
    term_ops: list[str] = []
    for op, x in zip(ops, operands[1:]):
        if op == "*":
            terms[-1] = terms[-1] * x
        elif op == "/":
            if x == 0:
                return None
            terms[-1] = terms[-1] / x
        else:
            term_ops.append(op)
            terms.append(x)
    total = terms[0]
    for op, x in zip(term_ops, terms[1:]):
        total = total + x if op == "+" else total - x
    return total


def find_equations(text: str) -> list[Equation]:
    """Every ``x op y ... = r`` in ``text``, in order."""
    out = []
    for m in _EQ_RE.finditer(text):
        operands, ops = [], []
        for t in _TOKEN_RE.finditer(m.group("lhs")):
            if t.group("num") is not None:
                operands.append(parse_number(t.group("num")))
            else:
                ops.append(_OP_NORMAL.get(t.group("op"), t.group("op")))
        claimed = parse_number(m.group("rhs"))
        out.append(Equation(" ".join(m.group(0).split()), operands, ops, claimed, _evaluate(operands, ops)))
    return out


def boxed_value(content: str) -> Optional[Fraction]:
    r"""The single number in a ``\boxed{}`` content (``41``, ``$1,200``, ``41 \text{ apples}``);
    None when it holds no number, several, or an operator."""
    inner = _TEXT_RE.sub(lambda m: " " + m.group(1) + " ", content).replace("$", " ")
    nums = _NUM_RE.findall(inner)
    if len(nums) != 1 or re.search(r"[-+*/×÷=^]", inner.replace("−", "-")):
        return None
    return parse_number(nums[0])


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"


@dataclass
class StepCheck:
    """The checker's verdict on one step, with what an explanation needs."""

    correct: bool
    reason: str  # "ok" or a failure reason (module docstring)
    equation: Optional[str] = None  # the equation the verdict is about
    true_value: Optional[str] = None  # for "arithmetic": what the left side really is
    number: Optional[str] = None  # the offending number (unknown operand, result, boxed value)
    new_values: list[int] = field(default_factory=list)
    boxed: Optional[str] = None


def strip_header(step: str) -> str:
    return _HEADER_RE.sub("", step, count=1).strip()


def _as_int_set(values: Iterable) -> set[Fraction]:
    return {Fraction(v) for v in values}


def analyze_step(problem: Problem, derived: Iterable, step: str) -> StepCheck:
    """Check one step given the values already ``derived`` by correct previous steps."""
    body = strip_header(step)
    if not body:
        return StepCheck(False, "empty")
    known = _as_int_set(problem.givens) | _as_int_set(derived)
    derived_now = _as_int_set(derived)
    needed = _as_int_set(problem.values)
    new_values: list[int] = []
    main_eq = None
    for eq in find_equations(body):
        if not eq.correct:
            true = None if eq.value is None else _fmt(eq.value)
            return StepCheck(False, "arithmetic", eq.text, true, _fmt(eq.claimed))
        for x in eq.operands:
            if x not in known:
                return StepCheck(False, "unknown_operand", eq.text, number=_fmt(x))
        r = eq.claimed
        if r in derived_now:
            main_eq = main_eq or eq.text
            continue
        if r not in needed:
            return StepCheck(False, "wrong_quantity", eq.text, number=_fmt(r))
        derived_now.add(r)
        known.add(r)
        new_values.append(int(r))
        main_eq = eq.text
    boxes = find_boxed(body)
    for content in boxes:
        v = boxed_value(content)
        if v is None:
            return StepCheck(False, "unparseable_answer", main_eq, number=content.strip())
        if v != problem.answer:
            return StepCheck(False, "wrong_answer", main_eq, number=_fmt(v))
        if v not in derived_now:
            return StepCheck(False, "answer_not_derived", main_eq, number=_fmt(v))
    if not new_values and not boxes:
        return StepCheck(False, "no_progress", main_eq)
    return StepCheck(
        True, "ok", main_eq, new_values=new_values, boxed=str(problem.answer) if boxes else None
    )


def derived_values(problem: Problem, prev_steps: Sequence[str]) -> set[int]:
    """Values established by the correct steps among ``prev_steps`` (checked in order)."""
    derived: set[int] = set()
    for s in prev_steps:
        c = analyze_step(problem, derived, s)
        if c.correct:
            derived.update(c.new_values)
    return derived


def check_step_detail(problem: Problem, prev_steps: Sequence[str], step: str) -> StepCheck:
    """The verdict on ``step`` as the next step after ``prev_steps`` (bodies or "Step n:" text)."""
    return analyze_step(problem, derived_values(problem, prev_steps), step)


def check_step(problem: Problem, prev_steps: Sequence[str], step: str) -> bool:
    """True when ``step`` is a correct next step after ``prev_steps`` (module docstring)."""
    return check_step_detail(problem, prev_steps, step).correct


def check_steps(problem: Problem, steps: Sequence[str]) -> list[StepCheck]:
    """Each step's verdict given the steps before it."""
    out, derived = [], set()
    for s in steps:
        c = analyze_step(problem, derived, s)
        if c.correct:
            derived.update(c.new_values)
        out.append(c)
    return out


def prm_labels(checks: Iterable[Any]) -> list[float]:
    """PRM-style labels of step verdicts (anything with ``.correct``): 1.0 for each step up to the
    first wrong one, 0.0 from it on."""
    out, ok = [], True
    for c in checks:
        ok = ok and c.correct
        out.append(1.0 if ok else 0.0)
    return out


def score_steps(problem: Problem, steps: Sequence[str]) -> list[float]:
    """PRM-style labels: 1.0 for each step up to the first wrong one, 0.0 from it on."""
    return prm_labels(check_steps(problem, steps))


def final_answer(text: str) -> Optional[Fraction]:
    r"""The number in the last ``\boxed{}`` of ``text`` (None if absent or not one number)."""
    boxes = find_boxed(text)
    return boxed_value(boxes[-1]) if boxes else None


def check_solution(problem: Problem, solution: str | Sequence[str]) -> bool:
    r"""Whole-solution check: the last ``\boxed{}`` (of the text, or of the steps joined) holds the
    gold answer."""
    text = solution if isinstance(solution, str) else "\n".join(solution)
    return final_answer(text) == problem.answer


def _qkey(question: str) -> str:
    return " ".join(question.split())


class ArithOracle:
    """The checker addressed by question text, for recipes that only see questions: exposes the
    PRM interface ``score_steps(question, steps) -> list[float]`` used by eft_build."""

    name = "arith-checker"

    def __init__(self, problems: Optional[Iterable[Problem]] = None, problems_file: Any = None):
        """From ``problems``, and/or from ``problems_file`` (a path or a list of paths of
        ``problems_*.jsonl`` written by :func:`psr.arith.data.write_initial_data`) -- the form a
        config's ``_component_: psr.arith.ArithOracle`` block uses."""
        self.by_question: dict[str, Problem] = {}
        for p in _gather(problems, problems_file):
            self.by_question.setdefault(_qkey(p.question), p)
        if not self.by_question:
            raise ValueError("ArithOracle needs problems (problems=... or problems_file=...)")

    def problem(self, question: str) -> Problem:
        try:
            return self.by_question[_qkey(question)]
        except KeyError:
            raise KeyError(f"not an arith problem known to this oracle: {question[:80]!r}") from None

    def find_problem(self, text: str) -> Optional[Problem]:
        """The problem whose question starts ``text`` (longest match), or None."""
        key = _qkey(text)
        best = None
        for q, p in self.by_question.items():
            if key.startswith(q) and (best is None or len(q) > len(_qkey(best.question))):
                best = p
        return best

    def check_step(self, question: str, prev_steps: Sequence[str], step: str) -> bool:
        return check_step(self.problem(question), prev_steps, step)

    def check_step_detail(self, question: str, prev_steps: Sequence[str], step: str) -> StepCheck:
        return check_step_detail(self.problem(question), prev_steps, step)

    def score_steps(self, question: str, steps: Sequence[str]) -> list[float]:
        return score_steps(self.problem(question), steps)

    def check_solution(self, question: str, solution: str | Sequence[str]) -> bool:
        return check_solution(self.problem(question), solution)

    def close(self) -> None:
        pass


def _gather(problems: Optional[Iterable[Problem]], problems_file: Any) -> list[Problem]:
    out = list(problems or [])
    if problems_file:
        files = [problems_file] if isinstance(problems_file, (str, os.PathLike)) else list(problems_file)
        for f in files:
            out += load_problems(f)
    return out
