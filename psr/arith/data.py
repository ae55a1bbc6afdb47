r"""Initial data of the arith world in the project's schemas (see :mod:`psr.data.schemas`).

* IFT: ``{id, question, steps}`` -- the reference steps (policy role, "Step n:" format).
* EFT: ``{id, question, prev_steps, step_a, step_b, judgment, label}`` -- for a reference prefix
  of ``l-1`` steps, a correct step ``l`` (randomly re-worded) against a plausible wrong one
  (:mod:`psr.arith.candidates`); both A/B orders of every pair, each with its own templated
  judgment (:mod:`psr.arith.teacher`) whose verdict is the label. Steps are shown as
  ``"Step l: body"`` like eft_build writes them.
* M0: ``{id, question, solution}`` -- free-form solutions (no "Step n:" headers) ending in
  ``\boxed{}``, for the short from-scratch training of the base model M0.
* problems: :meth:`Problem.to_dict` records (gold answers, reference steps) for evaluation, and
  the test split in the benchmarks' schema ``{id, problem, answer, solution, meta}``.

:func:`write_initial_data` writes all of them for one seed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from psr.arith.candidates import correct_step, random_wrong_step
from psr.arith.problems import NumberRanges, Problem, dedup_questions, generate_problems, load_problems, make_splits
from psr.arith.teacher import judge_explanation
from psr.data.jsonl import write_jsonl
from psr.seeds import keyed_rng
from psr.steps import format_step, format_steps


def ift_records(problems: Iterable[Problem]) -> list[dict]:
    return [{"id": p.id, "question": p.question, "steps": list(p.steps)} for p in problems]


def m0_records(problems: Iterable[Problem]) -> list[dict]:
    return [{"id": p.id, "question": p.question, "solution": p.solution} for p in problems]


def benchmark_records(problems: Iterable[Problem]) -> list[dict]:
    """The held-out problems in the benchmarks' normalised schema (``eval/benchmarks.yaml``):
    ``{id, problem, answer (str), solution, meta: {n_ops}}``."""
    return [
        {"id": p.id, "problem": p.question, "answer": str(p.answer), "solution": format_steps(p.steps).rstrip("\n"),
         "meta": {"n_ops": p.n_ops}}
        for p in problems
    ]


def eft_pair_records(problem: Problem, l: int, rng: random.Random, both_orders: bool = True,
                     judge_style: str = "assess") -> list[dict]:
    """EFT records of one pair at step ``l`` (1-based): a correct and a wrong candidate after the
    reference steps ``1..l-1``; both orders (ids ``.../ab`` with the correct step as A, ``.../ba``),
    or one order picked by ``rng``. ``judge_style``: the explanations' style
    (:func:`psr.arith.teacher.judge_explanation`)."""
    prev = list(problem.steps[: l - 1])
    good = correct_step(problem, l, rng)
    bad = random_wrong_step(problem, l, rng)
    shown_good, shown_bad = format_step(l, good).strip(), format_step(l, bad.body).strip()
    orders = ["ab", "ba"] if both_orders else [rng.choice(["ab", "ba"])]
    out = []
    for order in orders:
        a, b = (shown_good, shown_bad) if order == "ab" else (shown_bad, shown_good)
        verdict, text = judge_explanation(problem, prev, a, b, rng, judge_style)
        expected = "A" if order == "ab" else "B"
        if verdict != expected:  # the checker must separate every generated pair
            raise AssertionError(f"{problem.id} step {l}: checker verdict {verdict} for {order} ({bad.kind})")
        out.append(
            {
                "id": f"{problem.id}/s{l}/{bad.kind}/{order}",
                "question": problem.question,
                "prev_steps": prev,
                "step_a": a,
                "step_b": b,
                "judgment": text,
                "label": verdict,
            }
        )
    return out


def eft_records(
    problems: Iterable[Problem], seed: int, pairs_per_problem: int = 1, both_orders: bool = True,
    judge_style: str = "assess",
) -> list[dict]:
    """EFT records for ``pairs_per_problem`` distinct random step positions of each problem
    (fewer for problems with fewer steps); deterministic from ``seed`` and the problem ids."""
    out = []
    for p in problems:
        rng = keyed_rng("arith-eft", seed, p.id)
        positions = rng.sample(range(1, p.n_ops + 1), min(pairs_per_problem, p.n_ops))
        for l in sorted(positions):
            out += eft_pair_records(p, l, rng, both_orders, judge_style)
    return out


def write_initial_data(
    out_dir: str | os.PathLike,
    n_train: int = 2000,
    n_test: int = 300,
    seed: int = 0,
    train_ops: Sequence[int] = (2, 4),
    test_ops: Sequence[int] = (2, 6),
    eft_pairs_per_problem: int = 1,
    n_eft_train_problems: int | None = None,
    ranges: NumberRanges | Mapping | None = None,
    step_wordings: int = 3,
    judge_style: str = "assess",
    train_ops_weights: Sequence[float] | None = None,
    eft_ops: Sequence[int] | None = None,
    eft_ops_weights: Sequence[float] | None = None,
) -> dict[str, Path]:
    """Write ``problems_{train,test}.jsonl``, ``ift_train.jsonl``, ``m0_train.jsonl``,
    ``eft_train.jsonl``, ``eft_test.jsonl`` (held out: from the test split) and
    ``benchmark_test.jsonl`` (the test split in the benchmark schema) into ``out_dir``.
    EFT train uses the first ``n_eft_train_problems`` training problems (all by default), or, with
    ``eft_ops`` ([min, max] operations), ``n_eft_train_problems`` (default ``n_train``) problems of
    their own (split ``"eft"``, none of them in the test split; written to ``problems_eft.jsonl``),
    their operation counts spread like ``eft_ops_weights`` (None: evenly). Like the paper's EFT
    data, which comes from a tree search on other questions than the IFT solutions, this lets the
    judge see longer problems more often than the policy's SFT data does; ``eft_ops[1]`` must stay
    below ``test_ops[1]``.
    ``ranges``: a :class:`NumberRanges` or a mapping of its fields (None: the defaults).
    ``step_wordings``: wordings per kind of step (1: one fixed wording; see ``generate_problem``).
    ``judge_style``: how the EFT judgments explain (``"assess"``, ``"derive"`` or ``"worked"``, see
    :mod:`psr.arith.teacher`); the held-out EFT set is written in the same style.
    ``train_ops_weights``: relative frequency of each operation count in the training split
    (None: an even spread; see :func:`psr.arith.problems.generate_problems`).
    Returns the paths by name."""
    if eft_ops is not None and (len(eft_ops) != 2 or int(eft_ops[1]) >= int(test_ops[1])):
        raise ValueError(f"eft_ops {list(eft_ops)} must be [min, max] with max below test_ops' {test_ops[1]} "
                         "(the test split keeps problems longer than any training one)")
    if eft_ops is None and eft_ops_weights is not None:
        raise ValueError("eft_ops_weights needs eft_ops")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranges = NumberRanges.of(ranges)
    train, test = make_splits(n_train, n_test, seed, tuple(train_ops), tuple(test_ops), ranges, step_wordings,
                              train_ops_weights)
    if eft_ops is not None:
        n_eft = n_train if n_eft_train_problems is None else n_eft_train_problems
        eft_src = dedup_questions(
            generate_problems(n_eft, seed, "eft", int(eft_ops[0]), int(eft_ops[1]), ranges, step_wordings, eft_ops_weights),
            {p.question for p in test})
    else:
        eft_src = train if n_eft_train_problems is None else train[:n_eft_train_problems]
    files = {
        "problems_train": [p.to_dict() for p in train],
        "problems_test": [p.to_dict() for p in test],
        "ift_train": ift_records(train),
        "m0_train": m0_records(train),
        "eft_train": eft_records(eft_src, seed, eft_pairs_per_problem, judge_style=judge_style),
        "eft_test": eft_records(test, seed + 1, eft_pairs_per_problem, judge_style=judge_style),
        "benchmark_test": benchmark_records(test),
    }
    if eft_ops is not None:
        files["problems_eft"] = [p.to_dict() for p in eft_src]
    paths = {}
    for name, recs in files.items():
        paths[name] = out / f"{name}.jsonl"
        write_jsonl(paths[name], recs)
    return paths


__all__ = ["benchmark_records", "ift_records", "m0_records", "eft_pair_records", "eft_records", "write_initial_data", "load_problems"]
