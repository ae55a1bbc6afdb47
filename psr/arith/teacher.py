r"""Templated judge explanations and a checker-backed teacher for the Figure 5 prompt.

:func:`judge_explanation` decides a comparison with the exact checker and writes a short
explanation that assesses assistant A's step, then assistant B's (what each computes, and why a
wrong one is wrong), then names the better one, ending in ``[[A]]`` or ``[[B]]``, e.g.::

    Assistant A: 3 * 12 = 36 is correct. Assistant B: 3 * 12 = 35 is wrong, since 3 * 12 = 36. So Assistant A is better. [[A]]

The verdict comes last on purpose: a small judge decides after re-doing each step's arithmetic
in the text, rather than committing to a name in its first token (measured: with a
verdict-first wording a ~4M model stayed at chance judge accuracy).

Three styles (``style``):

* ``"assess"``: the two clauses and the verdict, as above;
* ``"derive"``: first works out the step that should come next -- the question's numbers in
  order, those the previous steps used, the next one and its equation -- then the two clauses
  and the verdict::

    The question gives 3, 12, 5, 9, 4. Used: 3, 12, 5. Next: 9, so 41 - 9 = 32. Assistant A: 41 - 9 = 32 is correct. Assistant B: 41 / 4 = 10 is wrong, since 41 / 4 = 10.25. So Assistant A is better. [[A]]

  A judge trained on it solves the step itself before it compares, the way the paper's teacher
  (GPT-4o) reasons about the problem before it names the better step, and the number lists are
  a scratchpad for the part a small model gets wrong: which sentence comes next. Measured in the
  arith pipeline: the assess-style judge fell from 92% on first steps to 61% on third steps,
  and M1 itself skips a middle operation on problems longer than its training ones.
* ``"worked"``: ``derive`` with the next equation worked out on the units digit first
  (:func:`worked`), ``Next: 9. 11 - 9 = 2, so 41 - 9 = 32.``: the judge re-does the
  arithmetic by a route the policy's step does not take, so that its errors are not the
  policy's own (where the policy hesitates between ``10 + 7 = 17`` and ``= 19``, a judge that
  computes the same way hesitates alike). Measured (docs/arith.md, 4-operation-weighted world): where
  M1's candidates differed only in arithmetic, 20 right-over-wrong against 8 inverted (derive:
  16 against 13), judge accuracy 88.7%, but M1 solved 60.6% instead of 68.2%. Its judgments are
  up to 81 tokens (88 with 4-operation training problems): give the judge 96 (search
  ``max_new_tokens_judge``, eval ``judge_max_new_tokens`` and ``tts.max_new_tokens_judge``); the
  pipeline stops with an error naming the key when a budget is shorter than its EFT judgments.

When both steps are correct or both are wrong there is no verdict (``None``): EFT pairs always
hold one correct and one wrong step, and eft_build's filters drop undecided pairs.

:class:`ArithTeacher` is a :class:`psr.generation.base.Generator` that answers Figure 5 prompts
(plain or chat-wrapped) with those explanations: the templated teacher of the arith pipeline's
EFT stage (the checker standing in for the paper's teacher model). :class:`CheckerJudged` puts it
in the judge's seat of a self-rewarding search, as a diagnostic upper bound.
"""

from __future__ import annotations

import random
from typing import Any, Iterable, Optional, Sequence

from psr.arith.checker import ArithOracle, StepCheck, analyze_step, derived_values, strip_header
from psr.arith.problems import Problem, eq_text
from psr.generation.base import Completion, SamplingParams
from psr.prompts import parse_judge_context
from psr.prompts import parse_judge_prompt as parse_fig5
from psr.seeds import crc32_seed

# One clause per assistant, A first, then the verdict: the explanation checks each step before it
# names the better one, so a small judge can decide *after* re-doing the arithmetic.
_OK = [
    "Assistant {X}: {eq} is correct.",
    "Assistant {X} computes {eq}, which is correct.",
]
_OK_BOXED = [
    "Assistant {X}: the final answer {ans} is correct.",
    "Assistant {X} gives the final answer {ans}, which is correct.",
]
_WRONG = {
    "arithmetic": ["Assistant {X}: {eq} is wrong, since {lhs} = {true}.", "Assistant {X} computes {eq}, which is wrong: {lhs} = {true}."],
    "unknown_operand": ["Assistant {X}: {eq} uses {n}, which is neither given nor computed yet.", "Assistant {X} computes {eq} with the wrong number {n}."],
    "wrong_quantity": ["Assistant {X}: {eq} is not a quantity the problem needs.", "Assistant {X} computes {eq}, which uses the wrong operation or number."],
    "wrong_answer": ["Assistant {X}: the answer {n} is wrong.", "Assistant {X} gives {n} as the final answer, which is wrong."],
    "wrong_answer_eq": ["Assistant {X}: {eq} is right, but {n} is not the final answer.", "Assistant {X} computes {eq}, but {n} is not the final answer yet."],
    "answer_not_derived": ["Assistant {X}: the answer {n} is not computed yet.", "Assistant {X} states the answer {n} without computing it."],
    "unparseable_answer": ["Assistant {X}: the final answer is not a single number.", "Assistant {X} does not give a clear final answer."],
    "no_progress": ["Assistant {X}: the step does not compute anything new.", "Assistant {X} makes no progress."],
    "empty": ["Assistant {X} gives no step.", "Assistant {X}: the step is empty."],
}
_VERDICT = ["So Assistant {W} is better. [[{W}]]", "Assistant {W}'s step is the correct one. [[{W}]]", "[[{W}]]"]
STYLES = ("assess", "derive", "worked")


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown judge explanation style {style!r} (styles: {', '.join(STYLES)})")


def clause(who: str, check: StepCheck, rng: random.Random) -> str:
    """The sentence assessing assistant ``who``'s step from its checker verdict."""
    if check.correct:
        if check.equation and (check.new_values or not check.boxed):
            return rng.choice(_OK).format(X=who, eq=check.equation)
        return rng.choice(_OK_BOXED).format(X=who, ans=check.boxed)
    reason = check.reason
    if reason == "wrong_answer" and check.equation:
        reason = "wrong_answer_eq"
    lhs = check.equation.split("=")[0].strip() if check.equation else None
    return rng.choice(_WRONG[reason]).format(X=who, eq=check.equation, lhs=lhs, true=check.true_value, n=check.number)


def next_operation(problem: Problem, derived) -> Optional[int]:
    """The index of the first operation of ``problem`` whose result is not among the ``derived``
    values (the step that should come next), or None when every one is derived (only the answer
    is left)."""
    return next((j for j, o in enumerate(problem.operations) if o.result not in derived), None)


def _nums(values) -> str:
    return ", ".join(str(v) for v in values)


def worked(x: int, op: str, y: int, r) -> str:
    """``x op y = r`` worked out on the units digit first when ``x`` has two digits and ``y`` one,
    e.g. ``"1 + 4 = 5, so 21 + 4 = 25"``, ``"12 - 5 = 7, so 32 - 5 = 27"`` (borrowing),
    ``"10 * 2 = 20, 7 * 2 = 14, so 17 * 2 = 34"``; otherwise (and for division) the equation."""
    eq = eq_text(x, op, y, r)
    if not (10 <= x <= 99 and 0 <= y <= 9) or op == "/":
        return eq
    u = x % 10
    if op == "+":
        return f"{u} + {y} = {u + y}, so {eq}"
    if op == "-":
        b = u if u >= y else u + 10
        return f"{b} - {y} = {b - y}, so {eq}"
    return f"{x - u} * {y} = {(x - u) * y}, {u} * {y} = {u * y}, so {eq}"


def derivation(problem: Problem, derived, work: bool = False) -> str:
    """The ``derive`` style's lead: the question's numbers in order, those the correct previous
    steps have used, the next one and the step it gives, e.g. ``"The question gives 3, 12, 5, 9.
    Used: 3, 12. Next: 5, so 36 + 5 = 41."`` (every operation takes the next number of the
    question: the first one two, ``x op y`` with the running value ``x`` after that). ``work``
    (the ``worked`` style): the equation is worked out digit by digit (:func:`worked`), e.g.
    ``"Next: 5. 6 + 5 = 11, so 36 + 5 = 41."``."""
    j = next_operation(problem, derived)
    head = f"The question gives {_nums(problem.givens)}."
    if j is None:
        return f"{head} Used: all. The answer is {problem.answer}."
    o = problem.operations[j]
    eq = worked(o.x, o.op, o.y, o.result) if work else eq_text(o.x, o.op, o.y, o.result)
    so = ". " if work else ", so "
    tail = ", the final answer." if j == len(problem.operations) - 1 else "."
    if j == 0:
        return f"{head} Used: none. Next: {o.x} and {o.y}{so}{eq}{tail}"
    return f"{head} Used: {_nums(problem.givens[: j + 1])}. Next: {o.y}{so}{eq}{tail}"


def explain(check_a: StepCheck, check_b: StepCheck, rng: random.Random, lead: str = "") -> tuple[Optional[str], str]:
    """``(verdict, text)``: ``lead`` (if any), a clause for A, a clause for B, then the verdict
    when exactly one of the two steps is correct (else no ``[[.]]``)."""
    text = (lead + " " if lead else "") + clause("A", check_a, rng) + " " + clause("B", check_b, rng)
    if check_a.correct == check_b.correct:
        return None, text + (" Both steps are correct." if check_a.correct else " Both steps are wrong.")
    winner = "A" if check_a.correct else "B"
    return winner, text + " " + rng.choice(_VERDICT).format(W=winner)


def judge_explanation(
    problem: Problem, prev_steps: Sequence[str], step_a: str, step_b: str, rng: Optional[random.Random] = None,
    style: str = "assess",
) -> tuple[Optional[str], str]:
    """``(verdict, text)`` for one comparison decided by the checker; ``verdict`` is None (and
    the text has no ``[[.]]``) when both steps are correct or both wrong. Without ``rng`` the
    wording is picked by a hash of the inputs (deterministic). ``style``: one of :data:`STYLES`
    (module docstring)."""
    _check_style(style)
    if rng is None:
        key = "\x1f".join([problem.question, *prev_steps, step_a, step_b])
        rng = random.Random(crc32_seed(key))
    derived = derived_values(problem, prev_steps)
    ca = analyze_step(problem, derived, step_a)
    cb = analyze_step(problem, derived, step_b)
    return explain(ca, cb, rng, "" if style == "assess" else derivation(problem, derived, work=style == "worked"))


def parse_judge_prompt(prompt: str) -> Optional[tuple[str, list[str], str, str]]:
    """``(question, prev_steps, step_a, step_b)`` from a Figure 5 prompt (chat-wrapped or not),
    or None when it is not one (read with :func:`psr.prompts.parse_judge_prompt`)."""
    try:
        context, a, b = parse_fig5(prompt)
    except ValueError:
        return None
    question, prev = parse_judge_context(context)
    return question, prev, a.strip(), b.strip()


class JudgeTextGenerator:
    """The Generator side of a scripted teacher: each prompt's ``n`` samples are the one text of
    ``self.judge(prompt, seed)`` (``n_prompts`` counts the prompts answered)."""

    n_prompts = 0

    def judge(self, prompt: str, seed: Optional[int] = None) -> str:
        raise NotImplementedError

    def generate(self, prompts, params: SamplingParams, stops=None, seeds=None) -> list[list[Completion]]:
        self.n_prompts += len(prompts)
        out = []
        for i, p in enumerate(prompts):
            text = self.judge(p, None if seeds is None else seeds[i])
            out.append([Completion(text=text, n_tokens=len(text.split()) + 1, finish_reason="eos")] * params.n)
        return out

    def close(self) -> None:
        pass


class ArithTeacher(JudgeTextGenerator):
    """A Generator answering Figure 5 prompts with :func:`judge_explanation` (not a model).

    Prompts whose question is not one of ``problems`` (or that are not Figure 5 prompts) get a
    text without a verdict. Every one of the ``n`` samples is the same text; ``seeds`` pick the
    wording (without seeds: a hash of the prompt)."""

    name = "arith-teacher"
    version = "checker-templates-1"
    tokenizer = None

    def __init__(self, problems: Optional[Iterable[Problem]] = None, problems_file: Any = None, style: str = "assess"):
        """Problems as for :class:`ArithOracle` (objects and/or ``problems_*.jsonl`` paths);
        ``style`` as for :func:`judge_explanation`."""
        _check_style(style)
        self.oracle = ArithOracle(problems, problems_file)
        self.style = style

    def judge(self, prompt: str, seed: Optional[int] = None) -> str:
        parsed = parse_judge_prompt(prompt)
        if parsed is None:
            return "This is not a comparison of two steps."
        question, prev, step_a, step_b = parsed
        problem = self.oracle.by_question.get(" ".join(question.split()))
        if problem is None:
            return "I do not know this problem."
        rng = random.Random(seed) if seed is not None else None
        return judge_explanation(problem, prev, strip_header(step_a), strip_header(step_b), rng, self.style)[1]


class CheckerJudged:
    """A Generator that answers Figure 5 prompts with :class:`ArithTeacher` (the exact checker)
    and everything else with ``policy`` -- the self-rewarding loop with a perfect judge.

    A diagnostic, never the paper's method: step_search's ``checker_judge_problems`` uses it to
    measure what the loop's search + DPO can do when the judge is not the limit (the pairs are
    then right whenever the candidates differ in correctness)."""

    def __init__(self, policy: Any, problems: Optional[Iterable[Problem]] = None, problems_file: Any = None):
        self.policy = policy
        self.teacher = ArithTeacher(problems, problems_file)
        self.tokenizer = policy.tokenizer
        self.name = f"{policy.name}+arith-checker-judge"
        self.version = f"{policy.version}; {ArithTeacher.version}"

    def generate(self, prompts, params: SamplingParams, stops=None, seeds=None) -> list[list[Completion]]:
        judge = [i for i, p in enumerate(prompts) if parse_judge_prompt(p) is not None]
        is_judge = set(judge)
        policy = [i for i in range(len(prompts)) if i not in is_judge]
        out: list[Optional[list[Completion]]] = [None] * len(prompts)
        for idx, gen in ((judge, self.teacher), (policy, self.policy)):
            if not idx:
                continue
            got = gen.generate([prompts[i] for i in idx], params,
                               None if stops is None else [stops[i] for i in idx],
                               None if seeds is None else [seeds[i] for i in idx])
            for i, c in zip(idx, got):
                out[i] = c
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.policy.close()
