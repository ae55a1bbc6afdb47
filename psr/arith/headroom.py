r"""How much a self-rewarding iteration *could* fix: the loop's headroom, measured with the checker.

Step search only ever moves probability between candidates the policy samples: the judge picks
one of ``w`` samples, and DPO raises it over the worst. So for each held-out problem the model
gets wrong greedily, this module goes to the first step the exact checker marks wrong, samples
``w`` candidates for that step after the model's own (correct) previous steps -- with the search's
temperature and top_p -- and counts how many of them are correct.

* ``with_correct``: failures where at least one candidate is correct: the ones a perfect judge
  could have turned into a (correct, wrong) pair at the step where greedy goes wrong. A failure
  with no correct candidate can only be fixed by what DPO on *other* questions generalises.
* ``mean_correct``: the mean number of correct candidates per located failure (of ``w``).
* ``unlocated``: failures without a wrong step (e.g. no "Step n:" text at all).

Measured (docs/arith.md): the pipeline's M1 fails 138 of 296 held-out problems and only 15 of them
have a correct candidate among six at T=0.5 (27 at T=1.0): its errors are confident ones.

``python -m psr.arith headroom --model M --problems problems_test.jsonl --greedy items.jsonl
--out DIR`` writes ``DIR/headroom.json`` (the summary, overall and by operation count) and
``DIR/items.jsonl`` (one record per located failure: id, operations, step, the checker's reason for
the greedy step, the candidates and how many are correct).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from psr.arith.checker import check_step_detail, check_steps
from psr.arith.problems import Problem
from psr.data.jsonl import read_jsonl, write_jsonl
from psr.generation.base import SamplingParams
from psr.seeds import derive_seed
from psr.steps import format_steps, next_step_body, next_step_stop, parse_steps


def first_wrong_step(problem: Problem, response: str, checker: Any = None) -> Optional[tuple[list[str], int, str]]:
    """``(steps before it, its 0-based index, the checker's reason)`` for the first step of
    ``response`` the checker marks wrong, or None when every step is correct (or there is none).
    ``checker``: a module with ``check_steps`` and ``check_step_detail`` for another world's
    problems (e.g. :mod:`psr.bags.checker`); None: the arith checker."""
    steps = parse_steps(response)
    for k, c in enumerate((checker.check_steps if checker else check_steps)(problem, steps)):
        if not c.correct:
            return steps[:k], k, str(c.reason)
    return None


def _summary(n_fail: int, rows: Sequence[Mapping[str, Any]], width: int) -> dict:
    located = len(rows)
    with_correct = sum(1 for r in rows if r["n_correct"] > 0)
    return {"failures": n_fail, "located": located, "unlocated": n_fail - located, "with_correct": with_correct,
            "mean_correct": round(sum(r["n_correct"] for r in rows) / located, 3) if located else None, "width": width}


def headroom(generator: Any, problems: Iterable[Problem], greedy: Iterable[Mapping[str, Any]], width: int = 6,
             temperature: float = 0.5, top_p: float = 0.95, max_new_tokens: int = 32,
             seed: int = 0, checker: Any = None) -> tuple[dict, list[dict]]:
    """``(summary, rows)`` for the failed ``greedy`` records (eval records: ``id``, ``prompt``,
    ``response``, ``correct``) of ``problems``, sampling ``width`` candidates per located failure
    from ``generator`` (one call). ``summary`` has the counts of the module docstring overall and
    under ``by_ops`` (str(operation count) -> counts). ``checker``: as for :func:`first_wrong_step`."""
    by_id = {p.id: p for p in problems}
    fails, todo = {}, []
    for r in greedy:
        if r.get("correct"):
            continue
        if r["id"] not in by_id:
            raise ValueError(f"greedy record {r['id']!r} is not one of the problems given")
        p = by_id[r["id"]]
        fails[p.n_ops] = fails.get(p.n_ops, 0) + 1
        hit = first_wrong_step(p, r["response"], checker)
        if hit is not None:
            todo.append((p, r["prompt"], *hit))
    params = SamplingParams(n=width, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    outs = []
    if todo:
        outs = generator.generate([prompt + format_steps(prev) for _, prompt, prev, _, _ in todo], params,
                                  stops=[next_step_stop(k + 1) for *_, k, _ in todo],
                                  seeds=[derive_seed(seed, p.id, "headroom", k + 1) for p, _, _, k, _ in todo])
    rows = []
    for (p, _, prev, k, reason), comps in zip(todo, outs):
        bodies = [next_step_body(c.text, k + 1) for c in comps]
        ok = [bool((checker.check_step_detail if checker else check_step_detail)(p, prev, b).correct) for b in bodies]
        rows.append({"id": p.id, "n_ops": p.n_ops, "step": k + 1, "reason": reason, "n_correct": sum(ok),
                     "candidates": bodies, "correct": ok})
    summary = _summary(sum(fails.values()), rows, width)
    summary["temperature"], summary["top_p"] = temperature, top_p
    summary["by_ops"] = {str(n): _summary(fails[n], [r for r in rows if r["n_ops"] == n], width) for n in sorted(fails)}
    return summary, rows


def write_headroom(model_dir: str | Path, problems_file: str | Path, greedy_file: str | Path, out: str | Path,
                   width: int = 6, temperature: float = 0.5, top_p: float = 0.95, max_new_tokens: int = 32,
                   seed: int = 0, device: str = "cpu") -> dict:
    """Run :func:`headroom` with a native generator of ``model_dir`` and write ``out/headroom.json``
    and ``out/items.jsonl``; returns the summary."""
    from psr.arith.data import load_problems
    from psr.generation.native import NativeGenerator

    problems = load_problems(problems_file)
    greedy = read_jsonl(greedy_file, required=("id", "prompt", "response", "correct"))
    known = {p.id for p in problems}
    stray = next((r["id"] for r in greedy if r["id"] not in known), None)
    if stray is not None:
        raise ValueError(f"{greedy_file}: record {stray!r} is not a problem of {problems_file}")
    gen = NativeGenerator(str(model_dir), device=device)
    try:
        summary, rows = headroom(gen, problems, greedy, width, temperature, top_p, max_new_tokens, seed)
    finally:
        gen.close()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "items.jsonl", rows)
    (out / "headroom.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
