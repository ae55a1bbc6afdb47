"""Command line of the bags world.

    python -m psr.bags data --out DIR [--n-train 3000 --n-test 300 --seed 0]
    python -m psr.bags model-dir --out DIR [--config configs/bags/model.yaml]
    python -m psr.bags diagnose --model M --problems problems_test.jsonl --out DIR   # (a) headroom, (b) gap
    python -m psr.bags headroom --model M --problems P --greedy G --out DIR         # as psr.arith's, bags checker
    python -m psr.bags eft-sample --model M0 --problems problems_train.jsonl --out DIR   # EFT from M0's wrong steps
"""

from __future__ import annotations

import argparse
import json


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m psr.bags", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="problems, IFT, EFT (train + held-out test) and M0 jsonl files")
    d.add_argument("--out", required=True)
    d.add_argument("--n-train", type=int, default=3000)
    d.add_argument("--n-test", type=int, default=300)
    d.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("model-dir", help="the bags tokenizer + a freshly initialised model as an HF dir")
    m.add_argument("--out", required=True)
    m.add_argument("--config", default="configs/bags/model.yaml")
    g = sub.add_parser("diagnose", help="the pre-registered diagnostics (a) headroom and (b) gap (psr.bags.diagnostics)")
    g.add_argument("--model", required=True)
    g.add_argument("--problems", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--limit", type=int, default=None)
    g.add_argument("--greedy", default=None, help="the eval recipe's greedy records of the model (default: generated)")
    g.add_argument("--seed", type=int, default=0)
    h = sub.add_parser("headroom", help="as python -m psr.arith headroom, with the bags checker")
    for a in ("--model", "--problems", "--greedy", "--out"):
        h.add_argument(a, required=True)
    h.add_argument("--width", type=int, default=6)
    h.add_argument("--temperature", type=float, default=0.5)
    h.add_argument("--top-p", type=float, default=0.95)
    h.add_argument("--max-new-tokens", type=int, default=32)
    h.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("eft-sample", help="EFT records from a model's own sampled wrong steps (psr.bags.pipeline)")
    for a in ("--model", "--problems", "--out"):
        e.add_argument(a, required=True)
    e.add_argument("--n", type=int, default=4)
    e.add_argument("--temperature", type=float, default=1.0)
    e.add_argument("--per-problem", type=int, default=2)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--skip", type=int, default=0, help="leave out the first SKIP problems (e.g. those of templated EFT)")
    e.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)

    if args.cmd == "data":
        from psr.bags.data import write_initial_data

        for name, p in write_initial_data(args.out, args.n_train, args.n_test, args.seed).items():
            print(f"{name}: {p} ({sum(1 for _ in open(p))} records)")
    elif args.cmd == "model-dir":
        from psr.arith.model import load_model_config, n_params
        from psr.bags.model import build_model_dir

        cfg = load_model_config(args.config)
        print(build_model_dir(args.out, cfg), f"({n_params(cfg):,} parameters)")
    elif args.cmd == "diagnose":
        from psr.bags.diagnostics import write_diagnostics

        s = write_diagnostics(args.model, args.problems, args.out, args.limit, args.greedy, seed=args.seed)
        a, b = s["a_headroom"], s["b_gap"]
        print(f"greedy accuracy {s['greedy_accuracy']}%; (a) headroom {a['with_correct']}/{a['failures']} = "
              f"{a['share_with_correct']}% (target {a['target']}%); (b) judge accuracy {b['judge_accuracy']}% on "
              f"{b['pairs']} pairs of own candidates (target {b['target']}%) vs greedy step accuracy "
              f"{b['greedy_step_accuracy_on_those']}% on those states; {args.out}/diagnostics.json")
    elif args.cmd == "headroom":
        from psr.arith.headroom import headroom
        from psr.bags import checker as C
        from psr.bags.problems import load_problems
        from psr.data.jsonl import read_jsonl, write_jsonl
        from psr.generation.native import NativeGenerator
        from pathlib import Path

        problems = load_problems(args.problems)
        greedy = read_jsonl(args.greedy, required=("id", "prompt", "response", "correct"))
        gen = NativeGenerator(args.model, device="cpu", cpu_threads=1)
        try:
            s, rows = headroom(gen, problems, greedy, args.width, args.temperature, args.top_p, args.max_new_tokens,
                               args.seed, checker=C)
        finally:
            gen.close()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "items.jsonl", rows)
        (out / "headroom.json").write_text(json.dumps(s, indent=1) + "\n")
        print(f"{s['with_correct']} of {s['failures']} greedy failures have a correct candidate among {s['width']}")
    else:
        from psr.bags.pipeline import eft_sample

        print(json.dumps(eft_sample(args.model, args.problems, args.out, args.n, args.temperature, args.seed,
                                    args.per_problem, skip=args.skip, limit=args.limit)))


if __name__ == "__main__":
    main()
