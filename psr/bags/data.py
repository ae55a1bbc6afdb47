r"""Initial data of the bags world, in the arith world's schemas and files.

IFT, M0 and benchmark records are the arith writers' (:mod:`psr.arith.data`; they only read
``id``, ``question``, ``steps``, ``solution``, ``answer`` and ``n_ops``). EFT records pair a correct
step with a wrong one after a reference prefix, both A/B orders, each with its checker-decided
judgment (:mod:`psr.bags.teacher`). Wrong steps come from two sources:

* templated kinds (:mod:`psr.bags.candidates`), and
* the policy's own sampled wrong steps (:func:`sampled_eft_records`, the ``eft-sample`` command):
  M0 or an early M1 continues reference prefixes at a temperature, the checker keeps the wrong
  samples -- the errors the judge must catch, as the paper's EFT comes from the policy's tree search.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from psr.arith.data import benchmark_records, ift_records, m0_records
from psr.bags.candidates import correct_step, random_wrong_step
from psr.bags.problems import BagsRanges, Problem, make_splits
from psr.bags.teacher import judge_explanation
from psr.data.jsonl import write_jsonl
from psr.steps import format_step


def pair_records(problem: Problem, l: int, good: str, bad: str, kind: str, rng: random.Random, rid: str) -> list[dict]:
    """Both A/B orders of (``good``, ``bad``) as step ``l`` after the reference prefix."""
    prev = list(problem.steps[: l - 1])
    g, b = format_step(l, good).strip(), format_step(l, bad).strip()
    out = []
    for order in ("ab", "ba"):
        a_, b_ = (g, b) if order == "ab" else (b, g)
        verdict, text = judge_explanation(problem, prev, a_, b_, rng)
        if verdict != ("A" if order == "ab" else "B"):
            raise AssertionError(f"{problem.id} step {l}: checker verdict {verdict} for {order} ({kind}: {bad!r})")
        out.append({"id": f"{rid}/{order}", "question": problem.question, "prev_steps": prev, "step_a": a_,
                    "step_b": b_, "judgment": text, "label": verdict, "kind": kind})
    return out


def eft_records(problems: Iterable[Problem], seed: int, pairs_per_problem: int = 1) -> list[dict]:
    """Templated EFT: ``pairs_per_problem`` random step positions of each problem."""
    out = []
    for p in problems:
        rng = random.Random(f"bags-eft:{seed}:{p.id}")
        n = p.n_pairs + 1
        for l in sorted(rng.sample(range(1, n + 1), min(pairs_per_problem, n))):
            kind, bad = random_wrong_step(p, l, rng)
            out += pair_records(p, l, correct_step(p, l, rng), bad, kind, rng, f"{p.id}/s{l}/{kind}")
    return out


def sampled_eft_records(samples: Iterable[Mapping], problems: Iterable[Problem], seed: int,
                        per_problem: int = 2) -> list[dict]:
    """EFT from the policy's own wrong steps: ``samples`` are ``{id, step, body, correct}`` records
    (a sampled body for step ``step`` after the reference prefix, judged by the checker); for each
    problem up to ``per_problem`` distinct wrong bodies (at different steps first), each against a
    correct step."""
    by_id = {p.id: p for p in problems}
    wrong: dict[str, list[tuple[int, str]]] = {}
    for s in samples:
        if not s["correct"] and s["body"].strip():
            lst = wrong.setdefault(s["id"], [])
            if (int(s["step"]), s["body"]) not in lst:
                lst.append((int(s["step"]), s["body"]))
    out = []
    for pid in sorted(wrong):
        p = by_id[pid]
        rng = random.Random(f"bags-eft-sampled:{seed}:{pid}")
        cands = wrong[pid]
        rng.shuffle(cands)
        cands.sort(key=lambda c: c[0])  # stable: one per step before a second at the same step
        picked, seen_steps = [], set()
        for l, body in cands:
            if l not in seen_steps:
                picked.append((l, body))
                seen_steps.add(l)
        picked += [c for c in cands if c not in picked]
        for n, (l, body) in enumerate(picked[:per_problem]):
            out += pair_records(p, l, correct_step(p, l, rng), body, "sampled", rng, f"{pid}/s{l}/sampled{n}")
    return out


def write_initial_data(out_dir: str | os.PathLike, n_train: int = 3000, n_test: int = 300, seed: int = 0,
                       train_pairs: Sequence[int] = (1, 3), test_pairs: Sequence[int] = (1, 5),
                       eft_pairs_per_problem: int = 1, n_eft_train_problems: Optional[int] = None,
                       ranges: BagsRanges | Mapping | None = None) -> dict[str, Path]:
    """Write ``problems_{train,test}.jsonl``, ``ift_train.jsonl``, ``m0_train.jsonl``,
    ``eft_train.jsonl`` (templated, from the first ``n_eft_train_problems`` training problems),
    ``eft_test.jsonl`` (templated, from the test split) and ``benchmark_test.jsonl``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, test = make_splits(n_train, n_test, seed, tuple(train_pairs), tuple(test_pairs), BagsRanges.of(ranges))
    eft_src = train if n_eft_train_problems is None else train[:n_eft_train_problems]
    files = {
        "problems_train": [p.to_dict() for p in train],
        "problems_test": [p.to_dict() for p in test],
        "ift_train": ift_records(train),
        "m0_train": m0_records(train),
        "eft_train": eft_records(eft_src, seed, eft_pairs_per_problem),
        "eft_test": eft_records(test, seed + 1, eft_pairs_per_problem),
        "benchmark_test": benchmark_records(test),
    }
    paths = {}
    for name, recs in files.items():
        paths[name] = out / f"{name}.jsonl"
        write_jsonl(paths[name], recs)
    return paths

