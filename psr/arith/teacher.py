r"""Templated judge explanations and a checker-backed teacher for the Figure 5 prompt.

:func:`judge_explanation` decides a comparison with the exact checker and writes a short
explanation naming what the correct step computes and what is wrong with the other one, ending in
``[[A]]`` or ``[[B]]``, e.g.::

    Assistant A computes 3 * 12 = 36 correctly, while Assistant B's 3 * 12 = 35 is wrong: 3 * 12 is 36. [[A]]

When both steps are correct or both are wrong there is no verdict (``None``): EFT pairs always
hold one correct and one wrong step, and eft_build's filters drop undecided pairs.

:class:`ArithTeacher` is a :class:`psr.generation.base.Generator` that answers Figure 5 prompts
(plain or chat-wrapped) with those explanations: the templated teacher of the arith pipeline's
EFT stage (the checker standing in for the paper's teacher model).
"""

from __future__ import annotations

import random
import re
import zlib
from typing import Any, Iterable, Optional, Sequence

from psr.arith.checker import ArithOracle, StepCheck, check_step_detail, strip_header
from psr.arith.problems import Problem
from psr.generation.base import Completion, SamplingParams
from psr.steps import parse_steps

_GOOD = [
    "Assistant {X} computes {eq} correctly",
    "Assistant {X} correctly finds {eq}",
    "The step of Assistant {X}, {eq}, is right",
]
_GOOD_BOXED = [
    "Assistant {X} gives the correct final answer {ans}",
    "Assistant {X} correctly states the answer {ans}",
]
_BAD = {
    "arithmetic": ["Assistant {Y}'s {eq} is wrong: it should be {true}", "Assistant {Y} makes a calculation error in {eq}, which should give {true}"],
    "unknown_operand": ["Assistant {Y} uses {n}, which is not a number from the problem or the previous steps", "Assistant {Y}'s {eq} uses the wrong number {n}"],
    "wrong_quantity": ["Assistant {Y}'s {eq} is not a quantity the problem needs", "Assistant {Y} computes {eq}, which uses the wrong operation or quantity"],
    "wrong_answer": ["Assistant {Y} gives the wrong answer {n}", "Assistant {Y}'s final answer {n} is wrong"],
    "answer_not_derived": ["Assistant {Y} states the answer {n} without computing it", "Assistant {Y} jumps to the answer {n} without the needed calculation"],
    "unparseable_answer": ["Assistant {Y}'s final answer is not a single number", "Assistant {Y} does not give a clear final answer"],
    "no_progress": ["Assistant {Y}'s step does not compute anything new", "Assistant {Y} makes no progress"],
    "empty": ["Assistant {Y} gives no step", "Assistant {Y}'s step is empty"],
}
_JOIN = ["{good}, while {bad}. [[{X}]]", "{good}. {bad}. [[{X}]]", "{bad}, but {good_lc}. [[{X}]]"]


def _lc(s: str) -> str:
    return s if s.startswith("Assistant") else s[:1].lower() + s[1:]


def explain(winner: str, good: StepCheck, bad: StepCheck, rng: random.Random) -> str:
    """The explanation text for ``winner`` ("A"/"B") whose step got verdict ``good`` against a
    step with verdict ``bad``."""
    loser = "B" if winner == "A" else "A"
    if good.equation and (good.new_values or not good.boxed):
        g = rng.choice(_GOOD).format(X=winner, eq=good.equation)
    else:
        g = rng.choice(_GOOD_BOXED).format(X=winner, ans=good.boxed)
    b = rng.choice(_BAD[bad.reason]).format(Y=loser, eq=bad.equation, true=bad.true_value, n=bad.number)
    return rng.choice(_JOIN).format(good=g, good_lc=_lc(g), bad=b, X=winner)


def judge_explanation(
    problem: Problem, prev_steps: Sequence[str], step_a: str, step_b: str, rng: Optional[random.Random] = None
) -> tuple[Optional[str], str]:
    """``(verdict, text)`` for one comparison decided by the checker; ``verdict`` is None (and
    the text has no ``[[.]]``) when both steps are correct or both wrong. Without ``rng`` the
    wording is picked by a hash of the inputs (deterministic)."""
    if rng is None:
        key = "\x1f".join([problem.question, *prev_steps, step_a, step_b])
        rng = random.Random(zlib.crc32(key.encode()))
    ca = check_step_detail(problem, prev_steps, step_a)
    cb = check_step_detail(problem, prev_steps, step_b)
    if ca.correct and not cb.correct:
        return "A", explain("A", ca, cb, rng)
    if cb.correct and not ca.correct:
        return "B", explain("B", cb, ca, rng)
    if ca.correct:
        return None, "Both steps are correct."
    return None, "Both steps are wrong."


_CTX_RE = re.compile(r"\[Question and Intermediate Reasoning Steps Provided\]\n(.*?)\n\[The Start of Assistant A", re.S)
_A_RE = re.compile(r"\[The Start of Assistant A’s Next Reasoning Step\]\n(.*?)\n\[The End of Assistant A", re.S)
_B_RE = re.compile(r"\[The Start of Assistant B’s Next Reasoning Step\]\n(.*?)\n\[The End of Assistant B", re.S)
_FIRST_STEP_RE = re.compile(r"(?:^|\n)Step\s+1\s*:")


def parse_judge_prompt(prompt: str) -> Optional[tuple[str, list[str], str, str]]:
    """``(question, prev_steps, step_a, step_b)`` from a Figure 5 prompt (chat-wrapped or not),
    or None when it is not one."""
    ctx, a, b = _CTX_RE.search(prompt), _A_RE.search(prompt), _B_RE.search(prompt)
    if not (ctx and a and b):
        return None
    context = ctx.group(1)
    m = _FIRST_STEP_RE.search(context)
    question = context[: m.start()] if m else context
    prev = parse_steps(context[m.start():]) if m else []
    return question.strip(), prev, a.group(1).strip(), b.group(1).strip()


class ArithTeacher:
    """A Generator answering Figure 5 prompts with :func:`judge_explanation` (not a model).

    Prompts whose question is not one of ``problems`` (or that are not Figure 5 prompts) get a
    text without a verdict. Every one of the ``n`` samples is the same text; ``seeds`` pick the
    wording (without seeds: a hash of the prompt)."""

    name = "arith-teacher"
    version = "checker-templates-1"
    tokenizer = None

    def __init__(self, problems: Optional[Iterable[Problem]] = None, problems_file: Any = None):
        """Problems as for :class:`ArithOracle` (objects and/or ``problems_*.jsonl`` paths)."""
        self.oracle = ArithOracle(problems, problems_file)
        self.n_prompts = 0

    def judge(self, prompt: str, seed: Optional[int] = None) -> str:
        parsed = parse_judge_prompt(prompt)
        if parsed is None:
            return "This is not a comparison of two steps."
        question, prev, step_a, step_b = parsed
        problem = self.oracle.by_question.get(" ".join(question.split()))
        if problem is None:
            return "I do not know this problem."
        rng = random.Random(seed) if seed is not None else None
        return judge_explanation(problem, prev, strip_header(step_a), strip_header(step_b), rng)[1]

    def generate(self, prompts, params: SamplingParams, stops=None, seeds=None) -> list[list[Completion]]:
        self.n_prompts += len(prompts)
        out = []
        for i, p in enumerate(prompts):
            text = self.judge(p, None if seeds is None else seeds[i])
            out.append([Completion(text=text, n_tokens=len(text.split()) + 1, finish_reason="eos")] * params.n)
        return out

    def close(self) -> None:
        pass
