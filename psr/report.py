"""The pipeline's report: tables shaped like the paper's Tables 1 (every benchmark and their
average), 2 (M_{i+1} - M_i), 3, 4/7 and 5, the search statistics per iteration, pair quality (when
a step checker is available) and PNG plots. Works for every family: the arith world (one local
benchmark, per-operation-count accuracy from data/<bench>/test.jsonl when it exists) and
``source: recipes`` pipelines (the eval config's benchmarks).

report.json has one entry per model in ``models``: ``model``, ``accuracy`` (percent: the average
over the benchmarks, as eval's ``average_accuracy``; with one benchmark, its accuracy),
``delta`` (accuracy minus the previous model's), ``judge_accuracy``, ``tts_accuracy``,
``mean_steps`` / ``mean_step_tokens`` (means over the benchmarks), and ``benchmarks`` /
``tts_benchmarks``: ``{name: {n, accuracy, delta, mean_steps, mean_step_tokens}}``.

Reads what the stages wrote under a pipeline ``output_dir``::

    stages/eval_M<k>/summary.json, stages/eval_M<k>/<bench>/items.jsonl   greedy accuracy, steps
    stages/judge_M<k>/summary.json                                        judge accuracy
    stages/tts_M<k>/summary.json                                          test-time scaling
    stages/headroom_M<k>/headroom.json                                    the loop's headroom (arith)
    stages/search_<i>/summary.json, stages/search_<i>/pairs.jsonl         search statistics
    timings.json                                                          seconds per stage

A ``method: srlm`` pipeline (the SRLM baseline) writes the same files: its ``search_<i>`` is
srlm_search (pairs of whole solutions; pair quality then checks whole solutions) and its
``judge_M<k>`` is eval ``mode=score``. :func:`compare` (``python -m psr.report compare <psr run>
<srlm run> [--out FILE]``) puts two runs' report.json side by side in one markdown table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

from psr.data.jsonl import read_jsonl, read_jsonl_tolerant

# pair_checker(iteration, pair_record) -> (chosen_correct, rejected_correct) or None when unknown
PairChecker = Callable[[int, dict], Optional[tuple[bool, bool]]]


def _json(p: Path) -> dict:
    return json.loads(p.read_text()) if p.exists() else {}


def _fmt(x: Any, nd: int = 1) -> str:
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _benches(summary: dict) -> dict:
    return {name: v for name, v in (summary.get("benchmarks") or {}).items() if isinstance(v, dict)}


def _mean(xs: list) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _average(summary: dict, per: dict) -> Optional[float]:
    avg = summary.get("average_accuracy")
    return avg if avg is not None else _mean([v.get("accuracy") for v in per.values()])


def _by_ops(out: Path, st: Path, k: int, names: list[str]) -> dict:
    """arith: greedy accuracy per operation count, from the local benchmark's ``meta.n_ops``
    (empty when the benchmark is not a local file with that field, e.g. source=recipes)."""
    by_ops: dict[str, list[int]] = {}
    for name in names:
        test = out / "data" / name / "test.jsonl"
        if not test.exists():
            continue
        meta = {str(r["id"]): (r.get("meta") or {}).get("n_ops") for r in read_jsonl(test)}
        for r in read_jsonl_tolerant(st / f"eval_M{k}" / name / "items.jsonl"):
            ops = meta.get(str(r["id"]))
            if ops is not None:
                by_ops.setdefault(str(ops), [0, 0])
                by_ops[str(ops)][0] += int(r["correct"])
                by_ops[str(ops)][1] += 1
    return {o: 100.0 * c / n for o, (c, n) in sorted(by_ops.items(), key=lambda kv: int(kv[0]))}


def _per_bench(per: dict) -> dict:
    return {name: {"n": v.get("n"), "accuracy": v.get("accuracy"), "mean_steps": v.get("mean_steps"),
                   "mean_step_tokens": v.get("mean_step_tokens")} for name, v in per.items()}


def _delta(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


def collect(out: Path, iterations: int, pair_checker: Optional[PairChecker] = None) -> dict:
    """Every number the report shows, as one dict (also written to report.json)."""
    st = out / "stages"
    models = []
    for k in range(iterations + 2):
        gs = _json(st / f"eval_M{k}" / "summary.json")
        g = _benches(gs)
        j = _benches(_json(st / f"judge_M{k}" / "summary.json")).get("judge", {})
        ts = _json(st / f"tts_M{k}" / "summary.json")
        t = _benches(ts)
        ns = [v.get("n") for v in g.values() if v.get("n") is not None]
        tn = [v.get("n") for v in t.values() if v.get("n") is not None]
        models.append({
            "model": f"M{k}", "n": sum(ns) if ns else None, "accuracy": _average(gs, g),
            "mean_steps": _mean([v.get("mean_steps") for v in g.values()]),
            "mean_step_tokens": _mean([v.get("mean_step_tokens") for v in g.values()]),
            "judge_accuracy": j.get("accuracy"), "judge_n": j.get("n"), "judge_unparseable": j.get("unparseable"),
            "tts_accuracy": _average(ts, t) if t else None, "tts_n": sum(tn) if tn else None,
            "benchmarks": _per_bench(g), "tts_benchmarks": _per_bench(t),
            "accuracy_by_ops": _by_ops(out, st, k, list(g)),
            "headroom": _json(st / f"headroom_M{k}" / "headroom.json") or None,
        })
    for prev, m in zip([None] + models[:-1], models):  # Table 2: M_{i+1} - M_i
        m["delta"] = _delta(m["accuracy"], prev["accuracy"]) if prev else None
        for name, b in m["benchmarks"].items():
            b["delta"] = _delta(b["accuracy"], (prev["benchmarks"].get(name) or {}).get("accuracy")) if prev else None
    searches = []
    for i in range(1, iterations + 1):
        s = _json(st / f"search_{i}" / "summary.json")
        pairs = read_jsonl_tolerant(st / f"search_{i}" / "pairs.jsonl")
        q = {"iteration": i, "model": f"M{i}", "questions": s.get("questions_written"), "pairs": len(pairs),
             "rollbacks": s.get("rollbacks"), "unparseable": s.get("unparseable_verdicts"),
             "judge_calls": s.get("judge_calls"), "tokens": s.get("tokens_generated"),
             "wall_s": s.get("wall_time_s")}
        if pair_checker is not None and pairs:
            verdicts = [pair_checker(i, p) for p in pairs]
            known = [v for v in verdicts if v is not None]
            if known:
                share = lambda f: 100.0 * sum(1 for c, r in known if f(c, r)) / len(known)  # noqa: E731
                q["pair_quality"] = share(lambda c, r: c and not r)
                q["inverted"] = share(lambda c, r: r and not c)
                q["both_correct"] = share(lambda c, r: c and r)
                q["both_wrong"] = share(lambda c, r: not c and not r)
                q["chosen_correct"] = share(lambda c, r: c)
                q["rejected_correct"] = share(lambda c, r: r)
        if s.get("method") == "srlm":  # srlm_search: scores instead of verdicts, no rollback
            q["unparseable"] = s.get("unparseable_scores")
        searches.append(q)
    return {"models": models, "searches": searches, "timings": _json(out / "timings.json")}


def _plots(out: Path, data: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = data["models"]
    xs = list(range(len(ms)))
    labels = [m["model"] for m in ms]
    files = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, lab in (("accuracy", "greedy accuracy"), ("tts_accuracy", "test-time scaling"), ("judge_accuracy", "judge accuracy")):
        ys = [m[key] for m in ms]
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lab)
    ax.set_xticks(xs, labels)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy per iteration (held-out split)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=100)
    plt.close(fig)
    files.append("accuracy.png")
    fig, ax1 = plt.subplots(figsize=(6, 4))
    ax2 = ax1.twinx()
    s = [(x, m["mean_steps"], m["mean_step_tokens"]) for x, m in zip(xs, ms) if m["mean_steps"] is not None]
    if s:
        ax1.plot([p[0] for p in s], [p[1] for p in s], marker="o", color="tab:blue", label="steps")
        ax2.plot([p[0] for p in s], [p[2] for p in s], marker="s", color="tab:orange", label="tokens per step")
    ax1.set_xticks(xs, labels)
    ax1.set_ylabel("mean step count", color="tab:blue")
    ax2.set_ylabel("mean step length (tokens)", color="tab:orange")
    ax1.set_title("Step count and length per iteration")
    fig.tight_layout()
    fig.savefig(out / "steps.png", dpi=100)
    plt.close(fig)
    files.append("steps.png")
    return files


def render(data: dict, plots: list[str]) -> str:
    ms, ss = data["models"], data["searches"]
    ops = sorted({o for m in ms for o in m["accuracy_by_ops"]}, key=int)
    benches = list(dict.fromkeys(b for m in ms for b in m["benchmarks"]))
    tts_benches = list(dict.fromkeys(b for m in ms for b in m["tts_benchmarks"]))
    srlm = data.get("method") == "srlm"
    lines = ["# SRLM baseline (Yuan et al. 2024): pipeline report" if srlm else
             "# Process-based Self-Rewarding: pipeline report", ""]
    if data.get("judge"):
        lines += [f"**Judge of the iterations: {data['judge']}**, not the model itself.", ""]
    bcol = lambda m, b, key="accuracy": _fmt((m["benchmarks"].get(b) or {}).get(key))  # noqa: E731
    lines += ["## Accuracy (Table 1 shape): greedy, every benchmark and their average", "",
              "| model | n | " + "".join(f"{b} | " for b in benches) + "average | " + " | ".join(f"{o} ops" for o in ops)
              + (" |" if ops else ""),
              "|---|---|" + "---|" * len(benches) + "---|" + "---|" * len(ops)]
    for m in ms:
        lines.append(f"| {m['model']} | {_fmt(m['n'])} | " + "".join(f"{bcol(m, b)} | " for b in benches)
                     + f"{_fmt(m['accuracy'])} | " + " | ".join(_fmt(m["accuracy_by_ops"].get(o)) for o in ops)
                     + (" |" if ops else ""))
    sign = lambda x: "-" if x is None else f"{x:+.1f}"  # noqa: E731
    lines += ["", "## Improvement per iteration (Table 2 shape): M_{i+1} - M_i, accuracy points", "",
              "| step | " + "".join(f"{b} | " for b in benches) + "average |",
              "|---|" + "---|" * len(benches) + "---|"]
    for prev, m in zip(ms, ms[1:]):
        lines.append(f"| {m['model']} - {prev['model']} | "
                     + "".join(f"{sign((m['benchmarks'].get(b) or {}).get('delta'))} | " for b in benches)
                     + f"{sign(m['delta'])} |")
    lines += ["", "## Judge accuracy on the held-out EFT set (Table 3 shape)" + (
        ": whole solutions scored with Yuan et al.'s prompt, verdict correct when the score is >= the threshold"
        if srlm else ""), "",
              "| model | n | judge accuracy | unparseable |", "|---|---|---|---|"]
    for m in ms:
        lines.append(f"| {m['model']} | {_fmt(m['judge_n'])} | {_fmt(m['judge_accuracy'])} | {_fmt(m['judge_unparseable'])} |")
    lines += ["", "## Step count and step length (Tables 4/7 shape): greedy responses", "",
              "| model | " + "".join(f"{b} steps | {b} tokens/step | " for b in benches)
              + "mean steps | mean step length (tokens) |",
              "|---|" + "---|---|" * len(benches) + "---|---|"]
    for m in ms:
        cells = "".join(f"{_fmt((m['benchmarks'].get(b) or {}).get('mean_steps'), 2)} | "
                        f"{_fmt((m['benchmarks'].get(b) or {}).get('mean_step_tokens'), 1)} | " for b in benches)
        lines.append(f"| {m['model']} | {cells}{_fmt(m['mean_steps'], 2)} | {_fmt(m['mean_step_tokens'], 1)} |")
    lines += ["", "## Test-time scaling (Table 5 shape): best step by the model's own judgments", "",
              "| model | n | " + "".join(f"{b} greedy | {b} TTS | " for b in tts_benches) + "greedy (average) | TTS (average) |",
              "|---|---|" + "---|---|" * len(tts_benches) + "---|---|"]
    for m in ms:
        if m["tts_accuracy"] is not None:
            cells = "".join(f"{bcol(m, b)} | {_fmt((m['tts_benchmarks'].get(b) or {}).get('accuracy'))} | " for b in tts_benches)
            lines.append(f"| {m['model']} | {_fmt(m['tts_n'])} | {cells}{_fmt(m['accuracy'])} | {_fmt(m['tts_accuracy'])} |")
    hr = [m for m in ms if m.get("headroom")]
    if hr:
        h0 = hr[0]["headroom"]
        lines += ["", "## Headroom: what the search can pick from", "",
                  f"Greedy failures on the held-out split whose first wrong step (by the checker) has a correct candidate "
                  f"among w = {h0['width']} samples at T = {h0['temperature']}, top_p = {h0['top_p']}, after the model's "
                  "own previous steps. Only these can become a (correct, wrong) pair where greedy goes wrong; the rest "
                  "need DPO on other questions to generalise.", "",
                  "| model | greedy failures | with a correct candidate | mean correct candidates | "
                  + " | ".join(f"{o} ops" for o in ops) + (" |" if ops else ""),
                  "|---|---|---|---|" + "---|" * len(ops)]
        for m in hr:
            h, by = m["headroom"], m["headroom"].get("by_ops", {})
            cells = [f"{by[o]['with_correct']}/{by[o]['failures']}" if o in by else "-" for o in ops]
            lines.append(f"| {m['model']} | {h['failures']} | {h['with_correct']} | {_fmt(h['mean_correct'], 2)} | "
                         + " | ".join(cells) + (" |" if ops else ""))
    lines += ["", "## Preference data per iteration (PPD(M_i))", "",
              f"| iteration | model | questions | pairs | rollbacks | unparseable {'scores' if srlm else 'verdicts'} | pair quality | "
              "inverted | both correct | both wrong |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s in ss:
        lines.append(f"| {s['iteration']} | {s['model']} | {_fmt(s['questions'])} | {_fmt(s['pairs'])} | {_fmt(s['rollbacks'])} | "
                     f"{_fmt(s['unparseable'])} | {_fmt(s.get('pair_quality'))} | {_fmt(s.get('inverted'))} | "
                     f"{_fmt(s.get('both_correct'))} | {_fmt(s.get('both_wrong'))} |")
    if srlm and any(s.get("pair_quality") is not None for s in ss):
        lines += ["", "By the exact checker (used only to measure, never inside the loop), % of pairs of whole solutions: "
                  "pair quality = chosen solution correct (every step, and the gold answer boxed) and rejected wrong; "
                  "inverted = chosen wrong and rejected correct. DPO can only help where pair quality exceeds inverted.", ""]
    elif any(s.get("pair_quality") is not None for s in ss):
        lines += ["", "By the exact checker (used only to measure, never inside the loop), % of pairs: pair quality = chosen "
                  "step correct and rejected wrong; inverted = chosen wrong and rejected correct; both wrong is mostly "
                  "steps after an already wrong step. DPO can only help where pair quality exceeds inverted.", ""]
    else:
        lines += ["", "Pair quality needs a step checker (the arith world); none here.", ""]
    t = data["timings"]
    if t:
        lines += ["## Time per stage (s)", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in t.items()]
        lines.append(f"| **total** | {round(sum(t.values()), 1)} |")
        lines.append("")
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(out: str | Path, iterations: int, pair_checker: Optional[PairChecker] = None, plots: bool = True,
                 judge: Optional[str] = None, method: str = "psr") -> Path:
    """Write report.md, report.json and the plots into ``out``; returns report.md's path.
    ``judge``: who judged the iterations' candidates when it was not the model itself (shown
    at the top of the report). ``method``: the pipeline's method (psr or srlm, in report.json)."""
    out = Path(out)
    data = collect(out, iterations, pair_checker)
    data["method"] = method
    if judge:
        data["judge"] = judge
    (out / "report.json").write_text(json.dumps(data, indent=1))
    files = _plots(out, data) if plots else []
    path = out / "report.md"
    path.write_text(render(data, files))
    return path


# --------------------------------------------------------------------------- two runs side by side


def compare(run_a: str | Path, run_b: str | Path) -> str:
    """One markdown table of two pipeline runs' report.json (e.g. method=psr and method=srlm on the
    same questions): greedy accuracy, judge accuracy and test-time scaling per model, then per
    iteration the pairs and the tokens generated by the search (policy + judge) and the pair
    quality when a checker measured it. A run without report.json is an error naming the file."""
    runs = []
    for d in (Path(run_a), Path(run_b)):
        p = d / "report.json"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no report.json (run the pipeline, or its report stage, first)")
        runs.append((d, json.loads(p.read_text())))
    names = [r.get("method") or d.name for d, r in runs]
    if names[0] == names[1]:
        names = [f"{n} ({d.name})" for n, (d, _) in zip(names, runs)]
    lines = ["| model | " + " | ".join(f"{n} accuracy | {n} judge accuracy | {n} TTS" for n in names) + " |",
             "|---|" + "---|---|---|" * len(runs)]
    by_model = [{m["model"]: m for m in r["models"]} for _, r in runs]
    order = list(dict.fromkeys(m for bm in by_model for m in bm))
    for name in order:
        cells = []
        for bm in by_model:
            m = bm.get(name) or {}
            cells.append(f"{_fmt(m.get('accuracy'))} | {_fmt(m.get('judge_accuracy'))} | {_fmt(m.get('tts_accuracy'))}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| iteration | " + " | ".join(f"{n} questions | {n} pairs | {n} tokens generated | {n} pair quality"
                                                  for n in names) + " |",
              "|---|" + "---|---|---|---|" * len(runs)]
    by_it = [{s["iteration"]: s for s in r["searches"]} for _, r in runs]
    for it in sorted({i for b in by_it for i in b}):
        cells = []
        for b in by_it:
            s = b.get(it) or {}
            cells.append(f"{_fmt(s.get('questions'))} | {_fmt(s.get('pairs'))} | {_fmt(s.get('tokens'))} | "
                         f"{_fmt(s.get('pair_quality'))}")
        lines.append(f"| {it} (M{it}) | " + " | ".join(cells) + " |")
    head = [f"runs: {names[0]} = {runs[0][0]}, {names[1]} = {runs[1][0]}", ""]
    methods = {r.get("method") for _, r in runs}
    if "srlm" in methods and len(methods) > 1:
        lines += ["", "Judge accuracy is each method's own judge on its own held-out judge data: psr, pairwise verdicts "
                  "between a correct and a wrong next step (eval mode=judge); srlm, whole solutions scored with Yuan et "
                  "al.'s prompt, right when the score is on the correct side of the threshold (eval mode=score). Pair "
                  "quality: % of pairs whose chosen side is correct and rejected side wrong by the exact checker (psr: "
                  "steps; srlm: whole solutions)."]
    return "\n".join(head + lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m psr.report", description="pipeline reports")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="two runs' report.json side by side (markdown)")
    c.add_argument("run_a", help="a pipeline output_dir (e.g. method=psr)")
    c.add_argument("run_b", help="another pipeline output_dir (e.g. method=srlm)")
    c.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args(argv)
    try:
        text = compare(args.run_a, args.run_b)
    except FileNotFoundError as e:
        import sys

        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
