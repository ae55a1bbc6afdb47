r"""Judge explanations of the bags world, and a checker-backed teacher for the Figure 5 prompt.

A judgment *checks* the two candidate steps instead of producing the next step itself: it states
the target, then for each assistant adds the two numbers its step pairs and compares the sum with
the target -- or, for an answer, subtracts it from the target and looks the result up among the
items (the item left over is the one whose partner is missing)::

    Need 50. Assistant A: 13 + 36 = 49, not 50. Wrong. Assistant B: 13 + 37 = 50. Correct.
    So Assistant B is better. [[B]]
    Need 50. Assistant A: 50 - 19 = 31, which is not an item, so 19 is left over. Correct.
    Assistant B: 50 - 22 = 28, which is an item, so 22 is not left over. Wrong. So Assistant A is better. [[A]]

That is the world's generation-verification gap: the policy must find ``T - x`` among the items
(a subtraction in the head and a search), the judge does one operation on numbers on the page.
Clauses (the checker's verdict decides; the wording follows what the judge can see):

* a pair whose true sum is not the target: ``"a + b = s, not T. Wrong."``;
* a pair that adds up to the target but is written with another result: ``"a + b = T, not c. Wrong."``;
* a pair with a number that is no item or an item packed by an earlier step:
  ``"a + b = T, but x is not an item / packed already. Wrong."``;
* a correct pair: ``"a + b = T. Correct."``;
* an answer ``x``: ``"T - x = y, which is (not) an item, so x is (not) left over."``, or ``"the
  answer x is not an item"``, or ``"..., but not every bag is packed yet"`` (an early answer).

Design 1 (measured, docs/bags.md) led with the list of items left (``"Need 50. Left: 13, 22, 28."``);
at 281 SFT steps the judge copied that list from the candidate it read first and judged at chance.

No verdict (``None``) when both steps are correct or both wrong.
"""

from __future__ import annotations

import random
import zlib
from typing import Any, Iterable, Optional, Sequence

from psr.arith.checker import strip_header
from psr.arith.teacher import CheckerJudged, parse_judge_prompt
from psr.bags.checker import StepCheck, analyze_step, items_left
from psr.bags.problems import Problem, list_text
from psr.generation.base import Completion, SamplingParams

_VERDICT = ["So Assistant {W} is better. [[{W}]]", "Assistant {W}'s step is the correct one. [[{W}]]"]


def lead(problem: Problem) -> str:
    """``"Need 50."``: the target, the one number every check compares with."""
    return f"Need {problem.target}."


def clause(who: str, problem: Problem, left: Sequence[int], check: StepCheck) -> str:
    """The sentence assessing assistant ``who``'s step from its checker verdict (module docstring)."""
    T = problem.target
    head = f"Assistant {who}:"
    if check.a is not None and check.reason in ("ok", "arithmetic", "not_left", "wrong_sum"):
        s = f"{check.a} + {check.b} = "
        if check.true_sum != str(T):
            pair = f"{s}{check.true_sum}, not {T}. Wrong."
        elif check.reason == "arithmetic":
            pair = f"{s}{T}, not {check.number}. Wrong."
        elif check.reason == "not_left":
            pair = f"{s}{T}, but {check.number} is {'not an item' if int(check.number) not in problem.items else 'packed already'}. Wrong."
        elif check.boxed:
            pair = f"{s}{T}, and only {problem.answer} is left then. Correct."
        else:
            pair = f"{s}{T}. Correct."
        return f"{head} {pair}"
    if check.correct or check.reason in ("wrong_answer", "early_answer"):
        x = problem.answer if check.correct else int(check.number)
        if x not in problem.items:
            return f"{head} the answer {x} is not an item. Wrong."
        y = T - x
        if y in problem.items:
            return f"{head} {T} - {x} = {y}, which is an item, so {x} is not left over. Wrong."
        if check.reason == "early_answer":
            return f"{head} {T} - {x} = {y}, which is not an item, but not every bag is packed yet. Wrong."
        return f"{head} {T} - {x} = {y}, which is not an item, so {x} is left over. Correct."
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


class BagsTeacher:
    """A Generator answering Figure 5 prompts of bags problems with :func:`judge_explanation`."""

    name = "bags-teacher"
    version = "checker-templates-1"
    tokenizer = None

    def __init__(self, problems: Optional[Iterable[Problem]] = None, problems_file: Any = None, style: str = "check"):
        from psr.bags.data import load_problems

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

    def generate(self, prompts, params: SamplingParams, stops=None, seeds=None) -> list[list[Completion]]:
        out = []
        for i, p in enumerate(prompts):
            text = self.judge(p, None if seeds is None else seeds[i])
            out.append([Completion(text=text, n_tokens=len(text.split()) + 1, finish_reason="eos")] * params.n)
        return out

    def close(self) -> None:
        pass


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
