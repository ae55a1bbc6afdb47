r"""The pre-registered diagnostics of a world (issue 19), measured on a model before any iteration.

* **(a) headroom**: of the model's greedy failures on the held-out split, the share whose first
  wrong step has a correct candidate among ``w`` samples (T, top_p of the search) after the
  model's own correct previous steps -- :func:`psr.arith.headroom.headroom` with this world's
  checker. Target >= 30%.
* **(b) gap**: the model judging pairs of its *own* candidates that the checker separates (one
  correct, one wrong), both A/B orders, against its own greedy step accuracy on the same states.
  States: every step of every held-out problem after the reference prefix (``ref`` states); the
  model samples ``w`` candidates and one greedy step there; up to ``pairs_per_state`` (correct,
  wrong) pairs of distinct texts per state are judged. Also reported on the headroom states (the
  first wrong step of greedy failures: the steps a loop must fix). Target: judge accuracy >= 75%.

Targets were fixed before any model of this world was trained (docs/bags.md); the held-out split,
seeds and widths are the command's defaults.

``python -m psr.bags diagnose --model M --problems problems_test.jsonl --out DIR`` writes
``DIR/diagnostics.json`` (summary), ``DIR/greedy.jsonl``, ``DIR/headroom_items.jsonl`` and
``DIR/gap_items.jsonl``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Sequence

from psr import prompts
from psr.arith.headroom import headroom
from psr.bags import checker as C
from psr.bags.problems import Problem
from psr.data.jsonl import write_jsonl
from psr.generation.base import SamplingParams
from psr.judge import parse_verdict
from psr.seeds import derive_seed
from psr.steps import format_step, format_steps, next_step_body, next_step_stop

TARGETS = {"headroom": 30.0, "judge_accuracy": 75.0}


def policy_prompt(tok: Any, question: str) -> str:
    return prompts.chat(tok, prompts.reasoning_prompt(question))


def greedy_records(gen: Any, problems: Sequence[Problem], max_new_tokens: int = 192) -> list[dict]:
    """The eval recipe's greedy records (``id, prompt, response, correct``) of ``problems``."""
    ps = [policy_prompt(gen.tokenizer, p.question) for p in problems]
    outs = gen.generate(ps, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens))
    return [{"id": p.id, "prompt": pr, "response": o[0].text, "correct": C.check_solution(p, o[0].text),
             "n_ops": p.n_ops} for p, pr, o in zip(problems, ps, outs)]


def judge_pairs(gen: Any, jobs: Sequence[tuple[Problem, list[str], int, str, str]], max_new_tokens: int) -> list[dict]:
    """Judge each ``(problem, prev_steps, l, correct_body, wrong_body)`` in both orders with the
    model; one record per pair with the two verdicts and whether each is right."""
    ps, meta = [], []
    for k, (p, prev, l, good, bad) in enumerate(jobs):
        g, b = format_step(l, good).strip(), format_step(l, bad).strip()
        for order, (a_, b_) in (("ab", (g, b)), ("ba", (b, g))):
            ps.append(prompts.chat(gen.tokenizer, prompts.judge_prompt(p.question, list(prev), a_, b_)))
            meta.append((k, order))
    outs = gen.generate(ps, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)) if ps else []
    rows = [{"id": p.id, "n_ops": p.n_ops, "step": l, "correct_step": good, "wrong_step": bad}
            for p, prev, l, good, bad in jobs]
    for (k, order), o in zip(meta, outs):
        v = parse_verdict(o[0].text)
        rows[k][f"verdict_{order}"] = v
        rows[k][f"right_{order}"] = v == ("A" if order == "ab" else "B")
        rows[k][f"text_{order}"] = o[0].text
    return rows


def _pairs_of(cands: Sequence[str], ok: Sequence[bool], rng: random.Random, n: int) -> list[tuple[str, str]]:
    good = sorted({c for c, o in zip(cands, ok) if o})
    bad = sorted({c for c, o in zip(cands, ok) if not o and c.strip()})
    pairs = [(g, b) for g in good for b in bad]
    rng.shuffle(pairs)
    return pairs[:n]


def _acc(rows: Sequence[dict]) -> dict:
    n = len(rows)
    right = sum(r["right_ab"] + r["right_ba"] for r in rows)
    unparsed = sum((r["verdict_ab"] is None) + (r["verdict_ba"] is None) for r in rows)
    return {"pairs": n, "judge_accuracy": round(100 * right / (2 * n), 1) if n else None,
            "both_orders_right": round(100 * sum(r["right_ab"] and r["right_ba"] for r in rows) / n, 1) if n else None,
            "unparseable": unparsed}


def gap(gen: Any, problems: Sequence[Problem], width: int = 6, temperature: float = 0.5, top_p: float = 0.95,
        seed: int = 0, pairs_per_state: int = 2, max_new_tokens_step: int = 32,
        judge_max_new_tokens: int = 160) -> tuple[dict, list[dict]]:
    """(b) on the reference-prefix states of ``problems`` (module docstring)."""
    states = [(p, list(p.steps[: l - 1]), l) for p in problems for l in range(1, p.n_pairs + 2)]
    ps = [policy_prompt(gen.tokenizer, p.question) + format_steps(prev) for p, prev, _ in states]
    stops = [next_step_stop(l) for _, _, l in states]
    seeds = [derive_seed(seed, p.id, "gap", l) for p, _, l in states]
    greedy = gen.generate(ps, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens_step), stops=stops)
    samples = gen.generate(ps, SamplingParams(n=width, temperature=temperature, top_p=top_p,
                                              max_new_tokens=max_new_tokens_step), stops=stops, seeds=seeds)
    jobs, state_rows = [], []
    for (p, prev, l), g, ss in zip(states, greedy, samples):
        left = C.items_left(p, prev)
        gbody = next_step_body(g[0].text, l)
        bodies = [next_step_body(c.text, l) for c in ss]
        ok = [C.analyze_step(p, left, b).correct for b in bodies]
        g_ok = C.analyze_step(p, left, gbody).correct
        pairs = _pairs_of(bodies, ok, random.Random(derive_seed(seed, p.id, "gap-pairs", l)), pairs_per_state)
        state_rows.append({"id": p.id, "step": l, "greedy_correct": g_ok, "n_correct": sum(ok), "n_pairs": len(pairs)})
        jobs += [(p, prev, l, good, bad) for good, bad in pairs]
    rows = judge_pairs(gen, jobs, judge_max_new_tokens)
    sep = [s for s in state_rows if s["n_pairs"]]
    summary = {
        "states": len(state_rows),
        "greedy_step_accuracy": round(100 * sum(s["greedy_correct"] for s in state_rows) / len(state_rows), 1),
        "states_with_pairs": len(sep),
        "greedy_step_accuracy_on_those": round(100 * sum(s["greedy_correct"] for s in sep) / len(sep), 1) if sep else None,
        "sample_step_accuracy": round(100 * sum(s["n_correct"] for s in state_rows) / (width * len(state_rows)), 1),
        **_acc(rows),
    }
    return summary, rows


def diagnose(gen: Any, problems: Sequence[Problem], width: int = 6, temperature: float = 0.5, top_p: float = 0.95,
             seed: int = 0, max_new_tokens_step: int = 32, judge_max_new_tokens: int = 160,
             greedy: Sequence[dict] | None = None) -> tuple[dict, dict[str, list]]:
    """(a) and (b) of the module docstring; ``greedy``: the model's greedy records (None: generated)."""
    greedy = list(greedy) if greedy is not None else greedy_records(gen, problems)
    acc = round(100 * sum(r["correct"] for r in greedy) / len(greedy), 1)
    hsum, hrows = headroom(gen, problems, greedy, width, temperature, top_p, max_new_tokens_step, seed, checker=C)
    by_id = {p.id: p for p in problems}
    hjobs = []
    for r in hrows:  # the judge at the steps that matter: first wrong step of greedy failures
        p = by_id[r["id"]]
        fail = next(g for g in greedy if g["id"] == r["id"])
        from psr.arith.headroom import first_wrong_step

        prev = first_wrong_step(p, fail["response"], C)[0]
        pairs = _pairs_of(r["candidates"], r["correct"], random.Random(derive_seed(seed, p.id, "hr-pairs")), 2)
        hjobs += [(p, prev, r["step"], good, bad) for good, bad in pairs]
    hjudge = judge_pairs(gen, hjobs, judge_max_new_tokens)
    gsum, grows = gap(gen, problems, width, temperature, top_p, seed, 2, max_new_tokens_step, judge_max_new_tokens)
    share = round(100 * hsum["with_correct"] / hsum["failures"], 1) if hsum["failures"] else None
    summary = {
        "greedy_accuracy": acc,
        "by_ops": {str(n): round(100 * sum(r["correct"] for r in greedy if by_id[r["id"]].n_ops == n)
                                 / max(1, sum(1 for r in greedy if by_id[r["id"]].n_ops == n)), 1)
                   for n in sorted({by_id[r["id"]].n_ops for r in greedy})},
        "a_headroom": {"share_with_correct": share, "target": TARGETS["headroom"],
                       "pass": share is not None and share >= TARGETS["headroom"], **hsum},
        "b_gap": {"target": TARGETS["judge_accuracy"], "pass": (gsum["judge_accuracy"] or 0) >= TARGETS["judge_accuracy"],
                  **gsum, "at_first_wrong_steps": _acc(hjudge)},
        "settings": {"width": width, "temperature": temperature, "top_p": top_p, "seed": seed},
    }
    return summary, {"greedy": greedy, "headroom_items": hrows, "headroom_judge": hjudge, "gap_items": grows}


def write_diagnostics(model_dir: str | Path, problems_file: str | Path, out: str | Path, limit: int | None = None,
                      greedy_file: str | Path | None = None, **kw: Any) -> dict:
    """Run :func:`diagnose` with a native generator of ``model_dir`` on the first ``limit`` problems
    of ``problems_file`` (``greedy_file``: the eval recipe's greedy records of the model, reused
    instead of generating them) and write ``out/diagnostics.json`` and the item files."""
    from psr.bags.problems import load_problems
    from psr.data.jsonl import read_jsonl
    from psr.generation.native import NativeGenerator

    problems = load_problems(problems_file)[:limit]
    if greedy_file is not None:
        ids = {p.id for p in problems}
        kw["greedy"] = [r for r in read_jsonl(greedy_file, required=("id", "prompt", "response", "correct")) if r["id"] in ids]
        if len(kw["greedy"]) != len(problems):
            raise ValueError(f"{greedy_file}: has {len(kw['greedy'])} records of the {len(problems)} problems")
    gen = NativeGenerator(str(model_dir), device="cpu", cpu_threads=1)
    try:
        summary, files = diagnose(gen, problems, **kw)
    finally:
        gen.close()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        write_jsonl(out / f"{name}.jsonl", rows)
    summary["model"] = str(model_dir)
    (out / "diagnostics.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
