"""Eval throughput: greedy answers and judge-mode verdicts with the native backend, vLLM and a
naive transformers baseline, in one run.

    python bench/eval_throughput.py                          # ~4M-param qwen2 built here, CPU
    python bench/eval_throughput.py --backends native,vllm --items 256 --max_new_tokens 256 --repeats 2
    python bench/eval_throughput.py --device cuda --shape smollm2 --items 256

The generation of recipes/eval.py on the same model and the same questions (the first ``--items``
GSM8K test questions from $PSR_DATA_DIR or ../shared/data, else made-up ones):

* greedy: the paper's prompt (``chat(reasoning_prompt(problem))``), temperature 0, one sample,
  ``--max_new_tokens``, ``--batch_size`` items per generate call (the recipe's chunks);
* judge: ``--items`` judge prompts (``chat(judge_prompt(question, prev_steps, step_a, step_b))``,
  one previous step, two made-up candidate steps), temperature 0, ``--judge_tokens``, verdicts
  parsed with ``psr.judge.parse_verdict``.

Grading (math-verify) is left out: it costs the same whatever generated the text. Backends:
``native`` (NativeGenerator), ``vllm`` (VLLMGenerator, prefix caching; dtype "auto" = vLLM's rule
as in the recipes, ``--vllm_dtype`` to force one; included by default when vLLM is importable),
``naive`` (``model.generate`` once per prompt, batch 1). Each runs in its own child process
(``--rounds`` > 1: again, interleaved; best round kept): build (``start``), a short warm-up, then
greedy + judge ``--repeats`` times (best kept). Printed per backend: items/s and tokens/s per
mode, judge calls/s, start time, peak memory, how many greedy answers are identical to native's
(exact only when both run in the same dtype), and the break-even token count against native.
The last line is ``ratio=<native tokens/s ÷ vllm tokens/s>`` over both modes when vLLM ran
(above 1: native is faster), else ``ratio=<native tokens/s ÷ naive tokens/s>``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_backend_args, break_even_text, load_line, load_questions, measure, memory_text, open_backend,
    print_ratios, reset_peak, run_bench,
)


def judge_records(items: list[dict]) -> list[dict]:
    """One EFT-style comparison per question: a first step, then two candidate second steps."""
    return [{"question": it["problem"], "prev_steps": ["Read the numbers in the question."],
             "step_a": f"Add them: {i} + {i + 2} = {2 * i + 2}.", "step_b": f"Multiply them: {i} * 3 = {3 * i}."}
            for i, it in enumerate(items)]


def run_one(args) -> dict:
    from psr.generation import SamplingParams
    from psr.judge import parse_verdict
    from psr.prompts import chat, judge_prompt, reasoning_prompt

    items = load_questions(args.items)
    gen, start = open_backend(args)
    tok = gen.tokenizer
    greedy_prompts = [chat(tok, reasoning_prompt(it["problem"])) for it in items]
    judge_prompts = [chat(tok, judge_prompt(r["question"], r["prev_steps"], r["step_a"], r["step_b"]))
                     for r in judge_records(items)]
    gen.generate(greedy_prompts[:2], SamplingParams(temperature=0.0, max_new_tokens=4))
    reset_peak(args.device)

    def phase(prompts, max_new):
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new)
        t0 = time.perf_counter()
        outs = []
        for k in range(0, len(prompts), args.batch_size):
            outs += [o[0] for o in gen.generate(prompts[k:k + args.batch_size], params)]
        return outs, time.perf_counter() - t0

    def once():
        g, gw = phase(greedy_prompts, args.max_new_tokens)
        j, jw = phase(judge_prompts, args.judge_tokens)
        gt, jt = sum(c.n_tokens for c in g), sum(c.n_tokens for c in j)
        return {"greedy_wall_s": gw, "greedy_tokens": gt, "greedy_items_per_s": len(g) / gw,
                "greedy_tokens_per_s": gt / gw, "judge_wall_s": jw, "judge_tokens": jt,
                "judge_calls_per_s": len(j) / jw, "judge_tokens_per_s": jt / jw,
                "judge_parsed": sum(parse_verdict(c.text) is not None for c in j),
                "wall_s": gw + jw, "tokens": gt + jt, "tokens_per_s": (gt + jt) / (gw + jw),
                "greedy_digests": [hashlib.sha1(c.text.encode()).hexdigest()[:12] for c in g]}

    return measure(args, gen, start, once)


def print_report(args, res: dict) -> None:
    from psr.generation.factory import eval_token_budget

    budget = eval_token_budget(args.items, args.max_new_tokens) + eval_token_budget(args.items, args.judge_tokens)
    print(f"model: {args.model_dir}; device {args.device}; {args.items} items, batch {args.batch_size}, "
          f"greedy {args.max_new_tokens} / judge {args.judge_tokens} max new tokens (token budget "
          f"{budget:,}); best of {args.repeats} x {args.rounds} "
          f"round(s); {load_line()}")
    nat = res.get("native")
    for which, r in res.items():
        extra = ""
        if nat is not None and which != "native":
            same = sum(a == b for a, b in zip(r["greedy_digests"], nat["greedy_digests"]))
            extra = f"; greedy answers identical to native's: {same}/{len(nat['greedy_digests'])}"
            if which == "vllm":
                extra += "; " + break_even_text(nat, r)
        print(f"{which:>6} ({r['version']}, {r['dtype']}): greedy {r['greedy_items_per_s']:7.1f} items/s "
              f"{r['greedy_tokens_per_s']:9.1f} tokens/s | judge {r['judge_calls_per_s']:7.1f} calls/s "
              f"{r['judge_tokens_per_s']:9.1f} tokens/s ({r['judge_parsed']} verdicts parsed) | both "
              f"{r['tokens_per_s']:9.1f} tokens/s  [{r['tokens']} tokens in {r['wall_s']:.2f} s; start "
              f"{r['start_s']:.1f} s; {memory_text(r)}; rounds tok/s {[round(x) for x in r['rounds']]}{extra}]")
    print_ratios(res, ("greedy_tokens_per_s", "judge_calls_per_s"), " (greedy + judge)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_backend_args(ap, "greedy + judge passes per child after start-up (best kept)")
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--batch_size", type=int, default=64, help="items per generate call (eval's batch_size)")
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--judge_tokens", type=int, default=32)
    run_bench(__file__, ap.parse_args(), run_one, print_report)


if __name__ == "__main__":
    main()
