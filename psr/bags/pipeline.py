r"""The bags world's stages of ``recipes/pipeline.py`` (``source: bags``): the data stage, and the
``eft_sample`` stage that builds EFT from M0's own sampled wrong steps.

The pipeline calls :func:`write_pipeline_data` instead of the arith data stage; it writes the same
files (``problems_{train,test}.jsonl``, ``ift_train.jsonl``, ``eft_{train,test}.jsonl``,
``iter<i>_{problems,questions}.jsonl``, ``arith/test.jsonl`` -- the held-out split as the eval
recipe's local benchmark, under the arith name the pipeline's eval stages use -- ``m0_text.jsonl``,
``init_model/``), so every later stage runs unchanged.

``eft_sample`` (after ``m0``): M0 continues the free-form reference solution of each EFT problem
at a random pair position, ``n`` samples at temperature ``T``; each sampled sentence is read as a
step (its ``a + b = c`` equation, or its boxed answer), worded as a step, and judged by the
checker; the wrong ones become EFT pairs against a correct step (:func:`psr.bags.data.sampled_eft_records`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping

from psr.arith.checker import boxed_value, find_equations
from psr.boxes import find_boxed
from psr.bags.problems import BagsRanges, Problem, generate_problems, last_text, pair_text
from psr.data.jsonl import read_jsonl, write_jsonl

# world keys of configs/bags/pipeline.yaml: psr.bags.data.write_initial_data arguments, where
# train_ops / test_ops (the pipeline's names, also in its schema defaults) are the pair counts
WORLD_KEYS = ("n_train", "n_test", "train_ops", "test_ops", "eft_pairs_per_problem", "n_eft_train_problems", "ranges")


def write_pipeline_data(data: Path, world: Mapping[str, Any], seed: int, questions_per_iteration, iteration_ops,
                        model: Mapping[str, Any]) -> dict[str, Path]:
    """The data stage of ``source: bags`` (module docstring). ``iteration_ops``: [min, max] pairs
    of the iterations' questions (None: ``world.train_pairs``)."""
    from psr.arith.model import load_model_config
    from psr.arith.problems import dedup_questions
    from psr.bags.data import write_initial_data
    from psr.bags.model import build_model_dir

    unknown = sorted(set(world) - set(WORLD_KEYS))
    if unknown:
        raise ValueError(f"world: unknown key(s) {unknown} for source=bags (known: {list(WORLD_KEYS)})")
    world = dict(world)
    for ops, pairs in (("train_ops", "train_pairs"), ("test_ops", "test_pairs")):
        if ops in world:
            world[pairs] = world.pop(ops)
    paths = write_initial_data(data, seed=seed, **world)
    old = {r["question"] for name in ("problems_test", "problems_train") for r in read_jsonl(paths[name])}
    ranges = BagsRanges.of(world.get("ranges"))
    lo, hi = iteration_ops or world.get("train_pairs", (1, 3))
    for i, n in enumerate(questions_per_iteration, 1):
        fresh = dedup_questions(generate_problems(int(n) * 2, seed, f"iter{i}", int(lo), int(hi), ranges), old)[: int(n)]
        write_jsonl(data / f"iter{i}_problems.jsonl", [p.to_dict() for p in fresh])
        write_jsonl(data / f"iter{i}_questions.jsonl", [{"id": p.id, "problem": p.question} for p in fresh])
    (data / "arith").mkdir(exist_ok=True)
    write_jsonl(data / "arith" / "test.jsonl", read_jsonl(paths["benchmark_test"]))
    write_jsonl(data / "m0_text.jsonl", [{"id": r["id"], "prompt": r["question"] + "\n", "response": r["solution"]}
                                         for r in read_jsonl(paths["m0_train"])])
    model = dict(model)
    model.setdefault("vocab_size", 1024)  # the bags corpus has fewer distinct pieces than arith's 2048
    build_model_dir(data / "init_model", load_model_config(None, **model))
    return paths


def sentence_to_step(problem: Problem, l: int, sentence: str) -> str | None:
    """A free-form sentence of M0 as the body of step ``l``: its first ``a + b = c`` equation as a
    pair step, else its boxed answer as the answer step; None when it has neither."""
    eqs = find_equations(sentence)
    unit = problem.ctx.get("unit", "grams")
    if eqs:
        e = eqs[0]
        if len(e.operands) == 2 and e.ops == ["+"] and all(x.denominator == 1 for x in (*e.operands, e.claimed)):
            return pair_text(l, int(e.operands[0]), int(e.operands[1]), int(e.claimed), unit)
        return None
    boxes = find_boxed(sentence)
    v = boxed_value(boxes[0]) if boxes else None
    return last_text(int(v)) if v is not None and v.denominator == 1 else None


def first_sentence(text: str) -> str:
    """``text`` up to its first sentence end (``". "``, ``".\n"`` or a final ``"."``)."""
    t = text.lstrip()
    for k, ch in enumerate(t):
        if ch == "." and (k + 1 == len(t) or t[k + 1] in " \n"):
            return t[: k + 1]
    return t


def eft_sample(model_dir: str | Path, problems_file: str | Path, out: str | Path, n: int = 4,
               temperature: float = 1.0, seed: int = 0, per_problem: int = 2, max_new_tokens: int = 24,
               skip: int = 0, limit: int | None = None) -> dict:
    """The ``eft_sample`` stage: writes ``out/samples.jsonl`` (every sample, judged) and
    ``out/eft_sampled.jsonl`` (EFT records of the wrong ones) for problems ``skip .. skip+limit``
    of ``problems_file``; returns counts."""
    from psr.bags import checker as C
    from psr.bags.data import sampled_eft_records
    from psr.bags.problems import load_problems
    from psr.generation.base import SamplingParams
    from psr.generation.native import NativeGenerator
    from psr.seeds import derive_seed

    problems = load_problems(problems_file)[skip:]
    problems = problems[:limit] if limit is not None else problems
    jobs = []
    for p in problems:
        l = random.Random(f"bags-eft-sample:{seed}:{p.id}").randint(1, p.n_pairs + 1)
        prefix = " ".join(f"{a} + {b} = {p.target}." for a, b in p.pairs[: l - 1])
        jobs.append((p, l, p.question + "\n" + (prefix + " " if prefix else "")))
    gen = NativeGenerator(str(model_dir), device="cpu", cpu_threads=1)
    try:
        outs = gen.generate([j[2] for j in jobs], SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new_tokens),
                            seeds=[derive_seed(seed, p.id, "eft-sample") for p, _, _ in jobs])
    finally:
        gen.close()
    samples = []
    for (p, l, _), comps in zip(jobs, outs):
        for c in comps:
            body = sentence_to_step(p, l, first_sentence(c.text))
            if body is None:
                continue
            ok = C.check_step(p, list(p.steps[: l - 1]), body)
            samples.append({"id": p.id, "step": l, "text": c.text, "body": body, "correct": ok,
                            "reason": C.check_step_detail(p, list(p.steps[: l - 1]), body).reason})
    recs = sampled_eft_records(samples, problems, seed, per_problem)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "samples.jsonl", samples)
    write_jsonl(out / "eft_sampled.jsonl", recs)
    counts = {"problems": len(problems), "samples": len(samples), "wrong": sum(not s["correct"] for s in samples),
              "records": len(recs)}
    reasons: dict[str, int] = {}
    for s in samples:
        reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
    counts["reasons"] = reasons
    return counts


def pair_checker(data: Path, iterations: int):
    """The report's pair checker for source=bags: ``check(i, pair) -> (chosen correct, rejected
    correct)`` by the bags checker on iteration ``i``'s problems (None for an unknown question)."""
    from psr.bags import checker as C
    from psr.bags.problems import load_problems
    from psr.steps import next_step_body

    by_q = {}
    for i in range(1, iterations + 1):
        for p in load_problems(Path(data) / f"iter{i}_problems.jsonl"):
            by_q[(i, p.question)] = p

    def check(i: int, pair: dict):
        prob = by_q.get((i, pair["question"]))
        if prob is None:
            return None
        l, left = pair["step"], C.items_left(prob, list(pair["prev_steps"]))
        return (C.analyze_step(prob, left, next_step_body(pair["chosen"], l)).correct,
                C.analyze_step(prob, left, next_step_body(pair["rejected"], l)).correct)

    return check


def diagnostics_section(d: Mapping[str, Any]) -> list[str]:
    """report.md lines for M1's pre-registered diagnostics (``diagnostics.json`` of
    :mod:`psr.bags.diagnostics`)."""
    a, b = d["a_headroom"], d["b_gap"]
    h = b.get("at_first_wrong_steps", {})
    ok = lambda x: "met" if x else "missed"  # noqa: E731
    return [
        "", "## Pre-registered diagnostics of M1 (psr.bags.diagnostics)", "",
        "| diagnostic | measured | target | |", "|---|---|---|---|",
        f"| (a) headroom: greedy failures with a correct candidate among {a['width']} at the first wrong step "
        f"| {a['with_correct']} / {a['failures']} = {a['share_with_correct']}% | >= {a['target']}% | {ok(a['pass'])} |",
        f"| (b) gap: judge accuracy on {b['pairs']} (correct, wrong) pairs of M1's own candidates, both orders "
        f"| {b['judge_accuracy']}% (both orders right {b['both_orders_right']}%) | >= {b['target']}% | {ok(b['pass'])} |",
        f"| M1's greedy step accuracy on those {b['states_with_pairs']} states (of {b['states']}) "
        f"| {b['greedy_step_accuracy_on_those']}% | | |",
        f"| judge accuracy at the first wrong step of greedy failures | {h.get('judge_accuracy')}% on {h.get('pairs')} pairs | | |",
        "",
    ]


def add_diagnostics_to_report(out: Path, diagnostics_file: Path) -> bool:
    """Append :func:`diagnostics_section` to ``out/report.md`` and put the summary under
    ``diagnostics_M1`` in ``out/report.json``; False when the file is absent."""
    import json

    if not Path(diagnostics_file).is_file():
        return False
    d = json.loads(Path(diagnostics_file).read_text())
    md = Path(out) / "report.md"
    md.write_text(md.read_text().rstrip("\n") + "\n" + "\n".join(diagnostics_section(d)))
    rj = Path(out) / "report.json"
    data = json.loads(rj.read_text())
    data["diagnostics_M1"] = d
    rj.write_text(json.dumps(data, indent=1))
    return True
