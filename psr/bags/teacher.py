r"""Judge explanations of the bags world, and a checker-backed teacher for the Figure 5 prompt.

A judgment *checks* the two candidate steps instead of producing the next step itself: it states
the target, then for each assistant adds the two numbers its step pairs and compares the sum with
the target -- or, for an answer, subtracts it from the target and looks the result up among the
items (the item left over is the one whose partner is missing)::

    Need 50. Assistant A: 13 + 36: 3 + 6 = 9, 1 + 3 = 4, so 49, not 50. Wrong. Assistant B: 13 + 37:
    3 + 7 = 10, 1 + 3 + 1 = 5, so 50. Correct. So Assistant B is better. [[B]]
    Need 50. Assistant A: 50 - 19: 10 - 9 = 1, 5 - 1 - 1 = 3, so 31, which is not an item, so 19 is
    left over. Correct. Assistant B: 50 - 22: 0 - 2 ... so 28, which is an item, so 22 is not left over.
    Wrong. So Assistant A is better. [[A]]

Each sum or difference is worked out digit by digit (:func:`worked_sum`, :func:`worked_difference`):
one-digit facts and a carry, which a ~1M model learns far sooner than whole two-digit sums.

That is the world's generation-verification gap: the policy must find ``T - x`` among the items
(a subtraction in the head and a search), the judge does one operation on numbers on the page.
Clauses (the checker's verdict decides; the wording follows what the judge can see):

* a pair whose true sum is not the target: ``"a + b: ..., so s, not T. Wrong."``;
* a pair that adds up to the target but is written with another result: ``"a + b: ..., so T, but
  the step says c. Wrong."``;
* a pair with a number that is no item or an item packed by an earlier step:
  ``"a + b: ..., so T, but x is not an item / packed already. Wrong."``;
* a correct pair: ``"a + b: ..., so T. Correct."``;
* an answer ``x``: ``"T - x: ..., so y, which is (not) an item, so x is (not) left over."``, or
  ``"the answer x is not an item"``, or ``"..., but not every bag is packed yet"`` (an early answer).

Design 2 (measured, docs/bags.md) wrote each sum whole (``13 + 36 = 49, not 50``): after 714 SFT
steps M1 copied the step's claimed result instead (``20 + 45 = 64``) and judged 49% of near misses
right. Design 1 led with the list of items left (``"Need 50. Left: 13, 22, 28."``);
at 281 SFT steps the judge copied that list from the candidate it read first and judged at chance.

No verdict (``None``) when both steps are correct or both wrong.
"""

from __future__ import annotations

import random
import zlib
from typing import Any, Iterable, Optional, Sequence

from psr.arith.checker import strip_header
from psr.arith.teacher import CheckerJudged, JudgeTextGenerator, parse_judge_prompt
from psr.bags.checker import StepCheck, analyze_step, items_left
from psr.bags.problems import Problem, list_text

_VERDICT = ["So Assistant {W} is better. [[{W}]]", "Assistant {W}'s step is the correct one. [[{W}]]"]


def worked_sum(a: int, b: int) -> str:
    """``a + b`` added digit by digit: ``"37 + 28: 7 + 8 = 15, 3 + 2 + 1 = 6, so 65"`` (a one-digit
    number has tens digit 0); other numbers (over 99, negative): ``"a + b = s"``."""
    if not (0 <= a <= 99 and 0 <= b <= 99):
        return f"{a} + {b} = {a + b}"
    u = a % 10 + b % 10
    carry = " + 1" if u >= 10 else ""
    return f"{a} + {b}: {a % 10} + {b % 10} = {u}, {a // 10} + {b // 10}{carry} = {a // 10 + b // 10 + (u >= 10)}, so {a + b}"


def worked_difference(t: int, x: int) -> str:
    """``t - x`` digit by digit with borrowing: ``"50 - 19: 10 - 9 = 1, 5 - 1 - 1 = 3, so 31"``;
    other numbers: ``"t - x = d"``."""
    if not (0 <= x <= t <= 99):
        return f"{t} - {x} = {t - x}"
    tu, xu = t % 10, x % 10
    borrow = tu < xu
    units = f"{tu + 10 * borrow} - {xu} = {tu + 10 * borrow - xu}"
    tens = f"{t // 10} - {x // 10}{' - 1' if borrow else ''} = {t // 10 - x // 10 - borrow}"
    return f"{t} - {x}: {units}, {tens}, so {t - x}"


def _int(x: str) -> int | None:
    return int(x) if x is not None and x.lstrip("-").isdigit() else None


def lead(problem: Problem) -> str:
    """``"Need 50."``: the target, the one number every check compares with."""
    return f"Need {problem.target}."


def clause(who: str, problem: Problem, left: Sequence[int], check: StepCheck) -> str:
    """The sentence assessing assistant ``who``'s step from its checker verdict (module docstring)."""
    T = problem.target
    head = f"Assistant {who}:"
    if check.a is not None and check.reason in ("ok", "arithmetic", "not_left", "wrong_sum"):
        a, b = _int(check.a), _int(check.b)
        s = (worked_sum(a, b) if a is not None and b is not None else f"{check.a} + {check.b} = {check.true_sum}")
        if check.true_sum != str(T):
            pair = f"{s}, not {T}. Wrong."
        elif check.reason == "arithmetic":
            pair = f"{s}, but the step says {check.number}. Wrong."
        elif check.reason == "not_left":
            pair = f"{s}, but {check.number} is {'not an item' if _int(check.number) not in problem.items else 'packed already'}. Wrong."
        elif check.boxed:
            pair = f"{s}, and only {problem.answer} is left then. Correct."
        else:
            pair = f"{s}. Correct."
        return f"{head} {pair}"
    if check.correct or check.reason in ("wrong_answer", "early_answer"):
        x = problem.answer if check.correct else int(check.number)
        if x not in problem.items:
            return f"{head} the answer {x} is not an item. Wrong."
        y, d = T - x, worked_difference(T, x)
        if y in problem.items:
            return f"{head} {d}, which is an item, so {x} is not left over. Wrong."
        if check.reason == "early_answer":
            return f"{head} {d}, which is not an item, but not every bag is packed yet. Wrong."
        return f"{head} {d}, which is not an item, so {x} is left over. Correct."
    if check.reason == "not_a_pair":
        return f"{head} {check.equation} does not add two items. Wrong."
    if check.reason == "unparseable_answer":
        return f"{head} the answer is not one number. Wrong."
    if check.reason == "empty":
        return f"{head} no step. Wrong."
    return f"{head} no pair and no answer. Wrong."


def judge_explanation(problem: Problem, prev_steps: Sequence[str], step_a: str, step_b: str,
                      rng: Optional[random.Random] = None) -> tuple[Optional[str], str]:
    """``(verdict, text)`` for one comparison decided by the checker (verdict None when both are
    correct or both wrong; the text then has no ``[[.]]``)."""
    if rng is None:
        rng = random.Random(zlib.crc32("\x1f".join([problem.question, *prev_steps, step_a, step_b]).encode()))
    left = items_left(problem, prev_steps)
    ca, cb = analyze_step(problem, left, step_a), analyze_step(problem, left, step_b)
    text = " ".join([lead(problem), clause("A", problem, left, ca), clause("B", problem, left, cb)])
    if ca.correct == cb.correct:
        return None, text + (" Both are correct." if ca.correct else " Both are wrong.")
    w = "A" if ca.correct else "B"
    return w, text + " " + rng.choice(_VERDICT).format(W=w)


class BagsTeacher(JudgeTextGenerator):
    """A Generator answering Figure 5 prompts of bags problems with :func:`judge_explanation`."""

    name = "bags-teacher"
    version = "checker-templates-1"
    tokenizer = None

    def __init__(self, problems: Optional[Iterable[Problem]] = None, problems_file: Any = None, style: str = "check"):
        from psr.bags.problems import load_problems

        probs = list(problems or [])
        for f in ([problems_file] if isinstance(problems_file, str) else list(problems_file or [])):
            probs += load_problems(f)
        if not probs:
            raise ValueError("BagsTeacher needs problems (problems=... or problems_file=...)")
        self.by_question = {" ".join(p.question.split()): p for p in probs}

    def judge(self, prompt: str, seed: Optional[int] = None) -> str:
        parsed = parse_judge_prompt(prompt)
        if parsed is None:
            return "This is not a comparison of two steps."
        question, prev, a, b = parsed
        problem = self.by_question.get(" ".join(question.split()))
        if problem is None:
            return "I do not know this problem."
        return judge_explanation(problem, prev, strip_header(a), strip_header(b),
                                 random.Random(seed) if seed is not None else None)[1]


class BagsCheckerJudged(CheckerJudged):
    """:class:`psr.arith.teacher.CheckerJudged` with the bags checker in the judge's seat (a
    diagnostic upper bound, never the paper's method)."""

    def __init__(self, policy: Any, problems: Optional[Iterable[Problem]] = None, problems_file: Any = None):
        self.policy = policy
        self.teacher = BagsTeacher(problems, problems_file)
        self.tokenizer = policy.tokenizer
        self.name = f"{policy.name}+bags-checker-judge"
        self.version = f"{policy.version}; {BagsTeacher.version}"


def checker_judged(policy: Any, problems_file: str) -> Any:
    """The checker-judged generator for a problems jsonl of either embedded world: bags records
    carry ``"world": "bags"`` (:meth:`psr.bags.problems.Problem.to_dict`), arith ones do not."""
    from psr.data.jsonl import read_jsonl

    first = next(iter(read_jsonl(problems_file)), {})
    if first.get("world") == "bags":
        return BagsCheckerJudged(policy, problems_file=problems_file)
    return CheckerJudged(policy, problems_file=problems_file)
