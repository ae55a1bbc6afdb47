"""The pipeline's report: tables shaped like the paper's Tables 1, 3, 4 and 5, the search
statistics per iteration, pair quality (when a step checker is available) and PNG plots.

Reads what the stages wrote under a pipeline ``output_dir``::

    stages/eval_M<k>/summary.json, stages/eval_M<k>/<bench>/items.jsonl   greedy accuracy, steps
    stages/judge_M<k>/summary.json                                        judge accuracy
    stages/tts_M<k>/summary.json                                          test-time scaling
    stages/headroom_M<k>/headroom.json                                    the loop's headroom (arith)
    stages/search_<i>/summary.json, stages/search_<i>/pairs.jsonl         search statistics
    timings.json                                                          seconds per stage
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


def _first_bench(summary: dict) -> tuple[Optional[str], dict]:
    b = summary.get("benchmarks") or {}
    for name, v in b.items():
        return name, v
    return None, {}


def collect(out: Path, iterations: int, pair_checker: Optional[PairChecker] = None) -> dict:
    """Every number the report shows, as one dict (also written to report.json)."""
    st = out / "stages"
    models = []
    for k in range(iterations + 2):
        name, g = _first_bench(_json(st / f"eval_M{k}" / "summary.json"))
        j = (_json(st / f"judge_M{k}" / "summary.json").get("benchmarks") or {}).get("judge", {})
        _, t = _first_bench(_json(st / f"tts_M{k}" / "summary.json"))
        by_ops: dict[str, list[int]] = {}
        if name:
            meta = {str(r["id"]): (r.get("meta") or {}).get("n_ops") for r in read_jsonl(out / "data" / name / "test.jsonl")}
            for r in read_jsonl_tolerant(st / f"eval_M{k}" / name / "items.jsonl"):
                ops = meta.get(str(r["id"]))
                if ops is not None:
                    by_ops.setdefault(str(ops), [0, 0])
                    by_ops[str(ops)][0] += int(r["correct"])
                    by_ops[str(ops)][1] += 1
        models.append({
            "model": f"M{k}", "n": g.get("n"), "accuracy": g.get("accuracy"),
            "mean_steps": g.get("mean_steps"), "mean_step_tokens": g.get("mean_step_tokens"),
            "judge_accuracy": j.get("accuracy"), "judge_n": j.get("n"), "judge_unparseable": j.get("unparseable"),
            "tts_accuracy": t.get("accuracy"), "tts_n": t.get("n"),
            "accuracy_by_ops": {o: 100.0 * c / n for o, (c, n) in sorted(by_ops.items(), key=lambda kv: int(kv[0]))},
            "headroom": _json(st / f"headroom_M{k}" / "headroom.json") or None,
        })
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
    lines = ["# Process-based Self-Rewarding: pipeline report", ""]
    if data.get("judge"):
        lines += [f"**Judge of the iterations: {data['judge']}**, not the model itself.", ""]
    lines += ["## Accuracy (Table 1 shape): greedy, held-out split", "",
              "| model | n | accuracy | " + " | ".join(f"{o} ops" for o in ops) + (" |" if ops else ""),
              "|---|---|---|" + "---|" * len(ops)]
    for m in ms:
        lines.append(f"| {m['model']} | {_fmt(m['n'])} | {_fmt(m['accuracy'])} | "
                     + " | ".join(_fmt(m["accuracy_by_ops"].get(o)) for o in ops) + (" |" if ops else ""))
    lines += ["", "## Judge accuracy on the held-out EFT set (Table 3 shape)", "",
              "| model | n | judge accuracy | unparseable |", "|---|---|---|---|"]
    for m in ms:
        lines.append(f"| {m['model']} | {_fmt(m['judge_n'])} | {_fmt(m['judge_accuracy'])} | {_fmt(m['judge_unparseable'])} |")
    lines += ["", "## Step count and step length (Table 4 shape)", "",
              "| model | mean steps | mean step length (tokens) |", "|---|---|---|"]
    for m in ms:
        lines.append(f"| {m['model']} | {_fmt(m['mean_steps'], 2)} | {_fmt(m['mean_step_tokens'], 1)} |")
    lines += ["", "## Test-time scaling (Table 5 shape): best step by the model's own judgments", "",
              "| model | n | greedy | test-time scaling |", "|---|---|---|---|"]
    for m in ms:
        if m["tts_accuracy"] is not None:
            lines.append(f"| {m['model']} | {_fmt(m['tts_n'])} | {_fmt(m['accuracy'])} | {_fmt(m['tts_accuracy'])} |")
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
              "| iteration | model | questions | pairs | rollbacks | unparseable verdicts | pair quality | inverted | both correct | both wrong |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s in ss:
        lines.append(f"| {s['iteration']} | {s['model']} | {_fmt(s['questions'])} | {_fmt(s['pairs'])} | {_fmt(s['rollbacks'])} | "
                     f"{_fmt(s['unparseable'])} | {_fmt(s.get('pair_quality'))} | {_fmt(s.get('inverted'))} | "
                     f"{_fmt(s.get('both_correct'))} | {_fmt(s.get('both_wrong'))} |")
    lines += ["", "By the exact checker (used only to measure, never inside the loop), % of pairs: pair quality = chosen "
              "step correct and rejected wrong; inverted = chosen wrong and rejected correct; both wrong is mostly "
              "steps after an already wrong step. DPO can only help where pair quality exceeds inverted.", ""]
    t = data["timings"]
    if t:
        lines += ["## Time per stage (s)", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in t.items()]
        lines.append(f"| **total** | {round(sum(t.values()), 1)} |")
        lines.append("")
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(out: str | Path, iterations: int, pair_checker: Optional[PairChecker] = None, plots: bool = True,
                 judge: Optional[str] = None) -> Path:
    """Write report.md, report.json and the plots into ``out``; returns report.md's path.
    ``judge``: who judged the iterations' candidates when it was not the model itself (shown
    at the top of the report)."""
    out = Path(out)
    data = collect(out, iterations, pair_checker)
    if judge:
        data["judge"] = judge
    (out / "report.json").write_text(json.dumps(data, indent=1))
    files = _plots(out, data) if plots else []
    path = out / "report.md"
    path.write_text(render(data, files))
    return path
