"""Step-search throughput: the native backend against a naive transformers baseline.

    python bench/search_throughput.py                       # ~4M-param qwen2 built here, CPU
    python bench/search_throughput.py --device cuda --questions 16
    python bench/search_throughput.py --device cuda --shape smollm2 --questions 8
    python bench/search_throughput.py --model_dir /tmp/smollm2-135m-instruct --questions 8

The same search (``psr.search.run_search``: w=6 candidates per step, both judge orders = 30 judge
calls per round, fixed ``max_iterations``), the same model and the same questions run with

(a) ``native``: ``psr.generation.native.NativeGenerator`` — every round is two generate calls
    carrying all in-flight questions (KV cache, continuous batching, shared prefill of the w
    samples of a prompt);
(b) ``naive``: transformers ``model.generate`` called once per prompt *and sample* (batch 1, no
    batching, no prefix sharing), stop strings through ``stop_strings=``.

Each backend runs in its own child process, so its peak memory (max RSS on CPU, max allocated
on CUDA) is its own. Both use the dtype the native backend resolves for the model. Printed per
backend: candidate steps/s, judge calls/s, generated tokens/s, wall time, peak memory. The last
line is ``ratio=<native tokens/s ÷ naive tokens/s>`` (goal >= 4).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


class NaiveHFGenerator:
    """The baseline: ``model.generate`` once per (prompt, sample), batch size 1."""

    name = "naive-hf"

    def __init__(self, model_dir: str, device: str, dtype):
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.version = f"transformers {transformers.__version__} generate, batch 1"
        self.eos = self.tokenizer.eos_token_id
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos

    def generate(self, prompts, params, stops=None, seeds=None):
        from psr.generation.base import Completion

        torch = self.torch
        out = []
        for i, prompt in enumerate(prompts):
            stop = list(params.stop) + (list(stops[i]) if stops is not None else [])
            ids = self.tokenizer(prompt, return_tensors="pt").input_ids.to(self.device)
            comps = []
            for j in range(params.n):
                torch.manual_seed((seeds[i] if seeds is not None else 0) * 1000 + j)
                kw = dict(max_new_tokens=params.max_new_tokens, eos_token_id=self.eos, pad_token_id=self.pad,
                          attention_mask=torch.ones_like(ids))
                if params.temperature > 0:
                    kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
                else:
                    kw.update(do_sample=False)
                if stop:
                    kw.update(stop_strings=stop, tokenizer=self.tokenizer)
                with torch.no_grad():
                    seq = self.model.generate(ids, **kw)[0, ids.shape[1]:].tolist()
                n_tokens = len(seq)
                reason = "length"
                if seq and seq[-1] == self.eos:
                    reason = "eos"
                    seq = seq[:-1]
                text = self.tokenizer.decode(seq, skip_special_tokens=True)
                cuts = [text.find(s) for s in stop if s in text]
                if cuts:
                    text, reason = text[: min(cuts)], "stop"
                comps.append(Completion(text=text, n_tokens=n_tokens, finish_reason=reason))
            out.append(comps)
        return out

    def close(self):
        pass


SHAPES = {
    # ~4.1M parameters with the 512-token tiny vocabulary
    "4m": dict(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=1024),
    # SmolLM2-135M's transformer shape (hidden 576, 30 layers, 9/3 heads, MLP 1536), random weights,
    # tiny vocabulary: ~106M parameters; a throughput stand-in when the real weights are not at hand
    "smollm2": dict(hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536),
}


def build_bench_model(path: Path, shape: str = "4m") -> Path:
    """A random qwen2 of the given shape with the tiny BPE tokenizer."""
    from psr.models.tiny import build_tiny_model_dir

    return build_tiny_model_dir(path, seed=0, **SHAPES[shape])


def load_questions(n: int) -> list[dict]:
    data = Path(os.environ.get("PSR_DATA_DIR", REPO.parent / "shared" / "data")) / "gsm8k" / "test.jsonl"
    if data.exists():
        with data.open() as f:
            recs = [json.loads(line) for _, line in zip(range(n), f)]
        return [{"id": r["id"], "problem": r["problem"]} for r in recs]
    return [{"id": f"q{i}", "problem": f"Sam has {3 + i} apples and buys {2 + i} more. How many apples?"} for i in range(n)]


def run_one(args) -> dict:
    """The child process: one backend, one search, metrics as JSON."""
    import torch

    from psr.generation.native import NativeGenerator
    from psr.search import SearchConfig, run_search, summarize

    cfg = SearchConfig(width=args.width, temperature=0.5, top_p=0.95, judge_orders=2,
                       max_iterations=args.iterations, max_steps=args.iterations,
                       max_new_tokens_step=args.step_tokens, max_new_tokens_judge=args.judge_tokens,
                       questions_in_flight=args.questions, seed=0)
    questions = load_questions(args.questions)
    native = NativeGenerator(args.model_dir, device=args.device, dtype=args.dtype, cpu_threads=args.cpu_threads)
    if args.only == "native":
        gen = native
    else:
        dtype = native.dtype
        del native
        gen = NaiveHFGenerator(args.model_dir, args.device, dtype)
    cuda = torch.device(args.device).type == "cuda" if args.device != "auto" else torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    results = list(run_search(gen, questions, cfg))
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    s = summarize(results)["totals"]
    n_params = sum(p.numel() for p in gen.model.parameters())
    return {
        "backend": gen.name,
        "version": gen.version,
        "dtype": str(next(gen.model.parameters()).dtype),
        "device": str(next(gen.model.parameters()).device),
        "params": n_params,
        "wall_s": wall,
        "candidates": s["candidates"],
        "judge_calls": s["judge_calls"],
        "tokens": s["tokens_generated"],
        "iterations": s["iterations"],
        "candidate_steps_per_s": s["candidates"] / wall,
        "judge_calls_per_s": s["judge_calls"] / wall,
        "tokens_per_s": s["tokens_generated"] / wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model_dir", default=None, help="HF model dir (default: build a ~4M qwen2 in a temp dir)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="4m", help="shape of the model built when no --model_dir")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--questions", type=int, default=4, help="questions, all in flight together")
    ap.add_argument("--width", type=int, default=6)
    ap.add_argument("--iterations", type=int, default=1, help="sample-and-judge rounds per question")
    ap.add_argument("--step_tokens", type=int, default=32)
    ap.add_argument("--judge_tokens", type=int, default=16)
    ap.add_argument("--cpu_threads", default="auto",
                    help="native backend's torch threads on CPU: auto (1 below hidden 512) or a number; "
                         "the naive baseline uses torch's default")
    ap.add_argument("--only", choices=["native", "naive"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        print(json.dumps(run_one(args)))
        return
    tmp = None
    if args.model_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="psr_bench_")
        args.model_dir = str(build_bench_model(Path(tmp.name) / "model", args.shape))
    res = {}
    for which in ("native", "naive"):
        cmd = [sys.executable, __file__, "--only", which, "--model_dir", args.model_dir, "--device", args.device,
               "--dtype", args.dtype, "--questions", str(args.questions), "--width", str(args.width),
               "--iterations", str(args.iterations), "--step_tokens", str(args.step_tokens),
               "--judge_tokens", str(args.judge_tokens), "--cpu_threads", str(args.cpu_threads)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{which} run failed:\n{r.stderr[-4000:]}")
        res[which] = json.loads(r.stdout.strip().splitlines()[-1])
    n = res["native"]
    print(f"model: {args.model_dir} ({n['params'] / 1e6:.1f}M params, {n['dtype']}, {n['device']}); "
          f"{args.questions} questions in flight, w={args.width}, judge_orders=2, {args.iterations} iterations, "
          f"{args.step_tokens}/{args.judge_tokens} max new tokens (step/judge)")
    for which in ("native", "naive"):
        r = res[which]
        mem = f"peak RSS {r['peak_rss_mib']:.0f} MiB" + (
            f", peak CUDA {r['peak_cuda_mib']:.0f} MiB" if r["peak_cuda_mib"] is not None else "")
        print(f"{which:>6} ({r['version']}): {r['candidate_steps_per_s']:8.1f} candidate steps/s  "
              f"{r['judge_calls_per_s']:8.1f} judge calls/s  {r['tokens_per_s']:9.1f} tokens/s  "
              f"[{r['candidates']} candidates, {r['judge_calls']} judge calls, {r['tokens']} tokens, "
              f"{r['iterations']} iterations in {r['wall_s']:.1f} s; {mem}]")
    for k in ("candidate_steps_per_s", "judge_calls_per_s"):
        print(f"{k} ratio: {res['native'][k] / res['naive'][k]:.2f}")
    if tmp is not None:
        tmp.cleanup()
    print(f"ratio={res['native']['tokens_per_s'] / res['naive']['tokens_per_s']:.3f}")


if __name__ == "__main__":
    main()
