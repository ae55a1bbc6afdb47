"""Grader throughput and agreement: psr.grader.grade_many vs math-verify's parse+verify loop.

    python bench/grader.py                       # 40 golds per benchmark, 2 workers
    python bench/grader.py --per-bench 100 --workers 4 --data-dir ../shared/data

Items: real gold answers from ../shared/data (every benchmark in eval/benchmarks.yaml) with
made-up responses, each labelled: the gold in a boxed solution (right), the gold written
differently (right: thousands commas, x = ..., units, \\dfrac, decimals for fractions, spacing,
"The final answer is ...", GSM8k ####), and a perturbed gold (wrong). Both graders see the same
items in one run, after a warm-up; prints items/s and agreement with the labels of each and ends
with ``ratio=<ours items/s ÷ math-verify items/s>``.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psr.data.benchmarks import list_benchmarks, load_benchmark  # noqa: E402

FILLER = ("We set up the equations from the problem statement and simplify step by step. "
          "Substituting the known values and checking the constraints gives the result.")


def _int_like(g: str) -> int | None:
    return int(g) if re.fullmatch(r"-?\d+", g) else None


def right_variants(g: str, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, response) pairs that are correct for gold ``g``."""
    out = [("boxed", f"{FILLER}\nTherefore the answer is $\\boxed{{{g}}}$.")]
    n = _int_like(g)
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", g)
    if n is not None:
        alts = [f"#### {n}", f"{FILLER} The answer is {n}.", f"\\boxed{{x = {n}}}", f"\\boxed{{{n}.0}}",
                f"{FILLER} The final answer is ${n}$. I hope it is correct."]
        if abs(n) >= 1000:
            alts.append(f"\\boxed{{{n:,}}}")
        if n > 0:
            alts.append(f"\\boxed{{{n} \\text{{ units}}}}")
            alts.append(f"\\boxed{{\\frac{{{2 * n}}}{{2}}}}")
        out.append(("reformatted", rng.choice(alts)))
    elif m:
        sign, a, b = m.group(1), int(m.group(2)), int(m.group(3))
        if b:
            val = Fraction(a, b) * (-1 if sign else 1)
            alts = [f"\\boxed{{{sign}\\dfrac{{{a}}}{{{b}}}}}", f"\\boxed{{{sign}{a}/{b}}}",
                    f"\\boxed{{{float(val):.6f}}}", f"\\boxed{{{sign}\\frac{{{2 * a}}}{{{2 * b}}}}}"]
            out.append(("reformatted", rng.choice(alts)))
    else:
        alts = [g.replace("\\frac", "\\dfrac"), re.sub(r",\s*", ", ", g), re.sub(r"([+\-=])", r" \1 ", g)]
        alts = [a for a in alts if a != g] or [f" {g} "]
        out.append(("reformatted", f"{FILLER} The final answer is ${rng.choice(alts)}$. I hope it is correct."))
    return out


def wrong_variant(g: str, rng: random.Random) -> str | None:
    n = _int_like(g)
    if n is not None:
        w = str(n + rng.choice([1, -1, 10, 2 * n + 3]))
    else:
        digits = [i for i, c in enumerate(g) if c.isdigit()]
        if not digits:
            return None
        i = rng.choice(digits)
        w = g[:i] + str((int(g[i]) + rng.randint(1, 8)) % 10) + g[i + 1:]
        if w == g:
            return None
    return f"{FILLER}\nTherefore the answer is $\\boxed{{{w}}}$."


def build_items(per_bench: int, data_dir: str | None, seed: int):
    rng = random.Random(seed)
    items = []  # (benchmark, kind, response, gold, label)
    for name in list_benchmarks():
        golds = load_benchmark(name, data_dir=data_dir)
        for it in rng.sample(golds, min(per_bench, len(golds))):
            g = it["answer"]
            for kind, resp in right_variants(g, rng):
                items.append((name, kind, resp, g, True))
            w = wrong_variant(g, rng)
            if w is not None:
                items.append((name, "wrong", w, g, False))
    rng.shuffle(items)
    return items


def run_math_verify(items) -> list[bool]:
    from math_verify import parse, verify

    out = []
    for _, _, resp, gold, _ in items:
        try:
            out.append(bool(verify(parse("\\boxed{" + gold + "}"), parse(resp))))
        except Exception:
            out.append(False)
    return out


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-bench", type=int, default=40, help="gold answers sampled per benchmark")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout-s", type=float, default=5.0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2, help="alternating timing rounds; best of each")
    args = ap.parse_args(argv)
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    from psr.grader import grade_many

    items = build_items(args.per_bench, args.data_dir, args.seed)
    labels = [it[4] for it in items]
    pairs = [(resp, gold) for _, _, resp, gold, _ in items]
    print(f"items: {len(items)} ({sum(labels)} right, {len(labels) - sum(labels)} wrong) "
          f"from {len(list_benchmarks())} benchmarks")

    from psr.grader import default_pool

    run_math_verify(items[:4])  # warm math-verify's imports
    # The machine is shared: alternate the two graders for --rounds rounds and keep each one's
    # best time. Every round of ours starts fresh workers (no answer cache carried over).
    t_ours = t_mv = float("inf")
    for r in range(args.rounds):
        default_pool().close()
        t0 = time.perf_counter()
        grade_many(pairs[:2], workers=args.workers, timeout_s=args.timeout_s)  # start the workers
        t_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = grade_many(pairs, workers=args.workers, timeout_s=args.timeout_s)
        t_ours = min(t_ours, time.perf_counter() - t0)
        t0 = time.perf_counter()
        mv = run_math_verify(items)
        t_mv = min(t_mv, time.perf_counter() - t0)
        print(f"round {r}: ours {len(items) / t_ours:.1f} items/s (best so far), math-verify "
              f"{len(items) / t_mv:.1f} items/s (best so far)")
    print(f"grader pool start ({args.workers} workers): {t_start:.2f} s (not in the timing)")

    def agree(v):
        return sum(a == b for a, b in zip(v, labels)) / len(labels)

    ips_ours, ips_mv = len(items) / t_ours, len(items) / t_mv
    print(f"psr.grader.grade_many (workers={args.workers}): {ips_ours:8.1f} items/s  agreement {agree(ours):.4f}")
    print(f"math-verify parse+verify loop:          {ips_mv:8.1f} items/s  agreement {agree(mv):.4f}")
    for kind in ("boxed", "reformatted", "wrong"):
        idx = [i for i, it in enumerate(items) if it[1] == kind]
        a = sum(ours[i] == labels[i] for i in idx) / max(1, len(idx))
        b = sum(mv[i] == labels[i] for i in idx) / max(1, len(idx))
        print(f"  {kind:12s} n={len(idx):4d}  ours {a:.4f}  math-verify {b:.4f}")
    dis = [(items[i], ours[i], mv[i]) for i in range(len(items)) if ours[i] != labels[i]]
    for (name, kind, resp, gold, lab), o, m in dis[:8]:
        print(f"  ours wrong: [{name}/{kind}] gold={gold!r} resp=...{resp[-70:]!r} ours={o} mv={m}")
    ratio = ips_ours / ips_mv
    print(f"ratio={ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
