"""Command line of the arith world.

    python -m psr.arith data --out /tmp/arith_data [--n-train 2000 --n-test 300 --seed 0]
    python -m psr.arith model-dir --out /tmp/arith_init [--config configs/arith/model.yaml]
    python -m psr.arith stats [--config configs/arith/model.yaml]   # token lengths, parameter count
    python -m psr.arith headroom --model M --problems problems_test.jsonl --greedy items.jsonl --out DIR
        # how many of M's greedy failures have a correct candidate among w samples (psr.arith.headroom)
"""

from __future__ import annotations

import argparse
import json


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m psr.arith", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="write problems, IFT, EFT (train + held-out test) and M0 jsonl files")
    d.add_argument("--out", required=True)
    d.add_argument("--n-train", type=int, default=2000)
    d.add_argument("--n-test", type=int, default=300)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--eft-pairs-per-problem", type=int, default=1)
    m = sub.add_parser("model-dir", help="write the tokenizer + a freshly initialised model as an HF dir")
    m.add_argument("--out", required=True)
    m.add_argument("--config", default=None, help="model yaml (default: the built-in ArithModelConfig)")
    m.add_argument("--overwrite", action="store_true")
    s = sub.add_parser("stats", help="token lengths of typical records and the parameter count")
    s.add_argument("--config", default=None)
    s.add_argument("--n", type=int, default=300)
    h = sub.add_parser("headroom", help="sample w candidates at the first wrong step of each greedy failure; count the correct ones")
    h.add_argument("--model", required=True, help="HF model dir")
    h.add_argument("--problems", required=True, help="problems jsonl (e.g. <pipeline data>/problems_test.jsonl)")
    h.add_argument("--greedy", required=True, help="the eval recipe's greedy records of the model on those problems")
    h.add_argument("--out", required=True)
    h.add_argument("--width", type=int, default=6)
    h.add_argument("--temperature", type=float, default=0.5)
    h.add_argument("--top-p", type=float, default=0.95)
    h.add_argument("--max-new-tokens", type=int, default=32)
    h.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.cmd == "headroom":
        from psr.arith.headroom import write_headroom

        s = write_headroom(args.model, args.problems, args.greedy, args.out, args.width, args.temperature, args.top_p,
                           args.max_new_tokens, args.seed)
        print(f"{s['with_correct']} of {s['failures']} greedy failures have a correct candidate among {s['width']} "
              f"at their first wrong step (mean {s['mean_correct']} correct); {args.out}/headroom.json")
        return

    from psr.arith.model import build_model_dir, load_model_config, n_params

    if args.cmd == "data":
        from psr.arith.data import write_initial_data

        paths = write_initial_data(args.out, args.n_train, args.n_test, args.seed,
                                   eft_pairs_per_problem=args.eft_pairs_per_problem)
        for name, p in paths.items():
            print(f"{name}: {p} ({sum(1 for _ in open(p))} records)")
    elif args.cmd == "model-dir":
        cfg = load_model_config(args.config)
        print(build_model_dir(args.out, cfg, overwrite=args.overwrite), f"({n_params(cfg):,} parameters)")
    else:
        from psr.arith.tokenizer import build_arith_tokenizer, token_lengths

        cfg = load_model_config(args.config)
        tok = build_arith_tokenizer(cfg.vocab_size, seed=cfg.tokenizer_seed)
        print(f"parameters: {n_params(cfg):,}  vocab: {len(tok)}")
        print(json.dumps(token_lengths(tok, args.n), indent=1))


if __name__ == "__main__":
    main()
