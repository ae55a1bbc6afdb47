"""Answer extraction and equivalence for math benchmarks, safe against untrusted model text.

    from psr.grader import extract_answer, answers_match, grade, grade_many
    extract_answer("... so the answer is $\\boxed{\\frac{1}{2}}$.")      # '\\frac{1}{2}'
    grade("... \\boxed{0.5}", "\\frac12")                                # True
    grade_many([(response, gold), ...], workers=4, timeout_s=5.0, answer_type="numeric")

The grader knows answer types (``ANSWER_TYPES``: ``math``, ``numeric``, ``choice_or_math``), not
benchmarks: eval/benchmarks.yaml gives each benchmark its answer type
(``psr.data.benchmarks.answer_type_of("gsm8k")`` is ``numeric``; ``load_benchmark`` puts it on
every item as ``answer_type``).

``extract_answer`` is pure string work and runs in the caller. ``answers_match``, ``grade`` and
``grade_many`` run every check in a worker process under a hard timeout (``psr.grader.pool``):
a timeout or a crash is a wrong answer, never a hang. The rules are in ``psr.grader.equiv``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from psr.grader.extract import ANSWER_TYPES, check_answer_type, choice_letter, extract_answer, last_boxed
from psr.grader.normalize import normalize, parse_number
from psr.grader.pool import MAX_RESPONSE_CHARS, GraderPool, default_pool

__all__ = [
    "extract_answer", "answers_match", "grade", "grade_many", "last_boxed", "choice_letter", "ANSWER_TYPES",
    "normalize", "parse_number", "GraderPool", "default_pool", "DEFAULT_TIMEOUT_S", "MAX_RESPONSE_CHARS",
]

DEFAULT_TIMEOUT_S = 5.0


def answers_match(pred: str | None, gold: str | None, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True when the answer ``pred`` is equivalent to the gold answer ``gold`` (both answers, not
    solutions). Runs in a grader worker under a hard ``timeout_s``."""
    if pred is None or gold is None:
        return False
    return default_pool().run([("match", str(pred), str(gold), None)], timeout_s)[0]


def grade(response: str | None, gold: str | None, answer_type: str | None = None,
          timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True when ``response`` (a full solution or a bare answer) has a final answer equivalent to
    ``gold``. ``answer_type``: one of ``ANSWER_TYPES`` (None = ``math``; ValueError for anything
    else). Runs in a grader worker under a hard ``timeout_s``; an empty gold is never matched."""
    answer_type = check_answer_type(answer_type)
    if response is None or gold is None:
        return False
    return default_pool().run([("grade", str(response), str(gold), answer_type)], timeout_s)[0]


def grade_many(pairs: Iterable[Sequence], workers: int = 2, timeout_s: float = DEFAULT_TIMEOUT_S,
               answer_type: str | None = None) -> list[bool]:
    """Verdicts for ``pairs`` of ``(response, gold)`` or ``(response, gold, answer_type)``, in
    order; a pair's own answer type beats the ``answer_type`` argument (both: one of
    ``ANSWER_TYPES`` or None for ``math``; anything else is a ValueError before any grading).

    ``workers`` processes grade in parallel (the process-wide pool is resized to it); each item
    has a hard ``timeout_s``; a timeout or crash makes that item False and a fresh worker carries on.
    """
    tasks = []
    for p in pairs:
        if len(p) not in (2, 3):
            raise ValueError(f"grade_many: each pair must be (response, gold[, answer_type]), got {len(p)} fields")
        atype = check_answer_type(p[2] if len(p) == 3 else answer_type)
        resp, gold = p[0], p[1]
        tasks.append(("grade", None if resp is None else str(resp), None if gold is None else str(gold), atype))
    if not tasks:
        return []
    return default_pool(workers).run(tasks, timeout_s)
