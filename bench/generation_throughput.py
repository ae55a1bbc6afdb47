"""Generation throughput: the native backend vs transformers ``generate``, in one run.

    python bench/generation_throughput.py                      # defaults below (~1-2 min on 2 cores)
    python bench/generation_throughput.py --prompts 64 --n 6 --new-tokens 64 --prompt-tokens 128 \
        --hidden 256 --layers 6 --dtype auto --naive-prompts 16

Workload (DESIGN §6): a random qwen2-style model (~4M parameters by default, built in a temp
dir), ``--prompts`` distinct prompts of ``--prompt-tokens`` tokens, ``--n`` samples each
(temperature 1, top_p 1), ``--new-tokens`` new tokens. Baselines measured in the same run:
  * naive:   ``model.generate`` once per prompt (``num_return_sequences=n``), fp32 — what a
             search loop that sends one prompt at a time gets (on ``--naive-prompts`` prompts);
  * hf-batch: one ``model.generate`` call with all prompts x n sequences, left padded, in the
             native run's dtype and in fp32.
Prints tok/s for each (generated tokens, EOS included) by wall clock and by process CPU time
(``cpu``: less sensitive to other load on a shared machine; it sums all torch threads) and ends
with ``ratio=<native / naive>`` (wall clock).

Old vs new native code (``--baseline-native``): the current NativeGenerator against another
version of psr/generation/native.py (a file path or a git revision), on the same model and
prompts, runs interleaved (baseline, current, baseline, ...) ``--repeats`` times, best of each;
ends with ``ratio=<current / baseline>`` (tokens / wall-clock seconds summed over the stages)::

    python bench/generation_throughput.py --baseline-native 14c740b --workload arith --cpu-threads 1

``--workload arith``: the arith world's stages on its model (psr.arith.build_model_dir: llama,
hidden 256, 4 layers, random weights unless ``--model-dir``) and its questions
(psr.arith.problems): *policy* (64 questions, n=6, T=0.5, top_p=0.95, stop "Step 2:", 48 new
tokens), *judge* (16 questions x 30 ordered pairs of 6 candidate steps = 480 judge prompts, n=1,
T=0.5, top_p=0.95, 48 new tokens) and *eval* (128 questions, greedy, 128 new tokens). With
random weights nothing stops early and the sampling distributions are flat (a trained model's
are peaked); ``--model-dir`` takes a trained model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_workload_args, build_workload_model, load_line, random_prompt_texts  # noqa: E402


def count_generated(out: torch.Tensor, prompt_len: int, eos: int) -> int:
    gen = out[:, prompt_len:]
    total = 0
    for row in gen.tolist():
        total += row.index(eos) + 1 if eos in row else len(row)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workload_args(ap, dtype_default="auto")  # --dtype: native backend's, auto | float32 | bfloat16
    ap.add_argument("--naive-prompts", type=int, default=16, help="prompts timed for the naive baseline")
    ap.add_argument("--max-batch-size", type=int, default=512)
    ap.add_argument("--skip-hf-batch", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--shared-head", type=int, default=0,
                    help="judge-like prompts: the first this many of --prompt-tokens tokens are the same in "
                         "every prompt (shared-prefix prefill)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--baseline-native", default=None,
                    help="compare with this version of psr/generation/native.py: a file or a git revision")
    ap.add_argument("--workload", choices=("uniform", "arith"), default="uniform",
                    help="with --baseline-native: the random-token workload above, or the arith stages")
    ap.add_argument("--model-dir", default=None, help="with --baseline-native: an existing model dir")
    ap.add_argument("--repeats", type=int, default=2, help="with --baseline-native: interleaved runs, best kept")
    ap.add_argument("--cpu-threads", default="auto", help="NativeGenerator cpu_threads (auto | N)")
    args = ap.parse_args()
    if args.baseline_native:
        return compare_native(args)

    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    from psr.generation import SamplingParams
    from psr.generation.native import NativeGenerator

    d = build_workload_model(args, "psr_bench_gen_")
    gen = NativeGenerator(str(d), device=args.device, dtype=args.dtype, max_batch_size=args.max_batch_size)
    tok = gen.tokenizer
    n_params = sum(p.numel() for p in gen.model.parameters())
    print(f"model: qwen2 hidden={args.hidden} layers={args.layers} params={n_params / 1e6:.2f}M; "
          f"torch threads={torch.get_num_threads()}; native dtype={gen.dtype}")

    # Texts that re-encode to exactly prompt-tokens tokens are not guaranteed with BPE; use the
    # decoded strings for the native backend and their re-encoding for the baselines, so every
    # engine sees the same token ids.
    prompts = random_prompt_texts(tok, args.prompts, args.prompt_tokens, shared_head=args.shared_head)
    enc = [tok(p)["input_ids"] for p in prompts]
    params = SamplingParams(n=args.n, temperature=1.0, top_p=1.0, max_new_tokens=args.new_tokens)
    eos = tok.eos_token_id
    print(f"workload: {args.prompts} prompts (~{sum(map(len, enc)) / len(enc):.0f} tokens) x n={args.n} "
          f"x {args.new_tokens} new tokens, temperature 1")

    # warm-up
    gen.generate(prompts[:2], SamplingParams(n=2, temperature=1.0, max_new_tokens=4), seeds=[0, 1])

    gen.stats.clear()
    t, c = time.perf_counter(), time.process_time()
    out = gen.generate(prompts, params, seeds=list(range(len(prompts))))
    dt, dc = time.perf_counter() - t, time.process_time() - c
    ntok = sum(c.n_tokens for cs in out for c in cs)
    native = ntok / dt
    print(f"native ({gen.dtype}, {gen.device}): {ntok} tokens in {dt:.2f}s = {native:,.0f} tok/s "
          f"(cpu {ntok / dc:,.0f} tok/cpu-s); prefills={gen.stats['prefill_prompts']} "
          f"forward calls={gen.stats['forward_calls']} compactions={gen.stats['compactions']} "
          f"prefill tokens={gen.stats['prefill_tokens']} (shared {gen.stats['shared_prefix_tokens']})")

    def hf_generate(model, rows, n):
        L = max(map(len, rows))
        ids = torch.full((len(rows), L), tok.pad_token_id)
        mask = torch.zeros((len(rows), L), dtype=torch.long)
        for r, x in enumerate(rows):
            ids[r, L - len(x):] = torch.tensor(x)
            mask[r, L - len(x):] = 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        with torch.inference_mode():
            o = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                               top_k=0, max_new_tokens=args.new_tokens, num_return_sequences=n,
                               pad_token_id=tok.pad_token_id)
        return count_generated(o, L, eos)

    results = {}
    if not args.skip_hf_batch:
        dtypes = [torch.float32] + ([gen.dtype] if gen.dtype != torch.float32 else [])
        for dt_ in dtypes:
            m = AutoModelForCausalLM.from_pretrained(str(d), dtype=dt_).to(gen.device).eval()
            torch.manual_seed(0)
            t, c = time.perf_counter(), time.process_time()
            ntok = hf_generate(m, enc, args.n)
            el, ec = time.perf_counter() - t, time.process_time() - c
            results[f"hf-batch {dt_}"] = ntok / el
            print(f"hf-batch ({dt_}, {len(enc) * args.n} sequences in one generate): {ntok} tokens in {el:.2f}s "
                  f"= {ntok / el:,.0f} tok/s (cpu {ntok / ec:,.0f} tok/cpu-s)")

    m = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32).to(gen.device).eval()
    torch.manual_seed(0)
    k = min(args.naive_prompts, len(enc))
    t, c = time.perf_counter(), time.process_time()
    ntok = sum(hf_generate(m, [x], args.n) for x in enc[:k])
    el, ec = time.perf_counter() - t, time.process_time() - c
    naive = ntok / el
    print(f"naive (fp32, generate once per prompt, {k} prompts): {ntok} tokens in {el:.2f}s = {naive:,.0f} tok/s "
          f"(cpu {ntok / ec:,.0f} tok/cpu-s)")
    for name, v in results.items():
        print(f"native / {name} = {native / v:.2f}")
    print(load_line())
    print(f"ratio={native / naive:.2f}")


def load_native_version(spec: str):
    """psr.generation.native as of a file path or a git revision, as a separate module.

    For a git revision, the engine's other parts (sampling.py, kv_cache.py, split out of
    native.py) are taken from the same revision where it has them, so that the whole engine is
    the old one; a file path brings only that file (its imports resolve to this checkout)."""
    import importlib.util
    import subprocess
    import tempfile

    def load(name: str, path: Path):
        mod_spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = mod  # dataclasses look their module up
        mod_spec.loader.exec_module(mod)
        return mod

    path = Path(spec)
    if path.is_file():
        return load("psr_native_baseline", path)
    root = Path(__file__).resolve().parent.parent
    src = subprocess.run(["git", "show", f"{spec}:psr/generation/native.py"], check=True,
                         capture_output=True, text=True, cwd=root).stdout
    tmp = Path(tempfile.mkdtemp(prefix="psr_native_"))
    for part in ("sampling", "kv_cache"):
        got = subprocess.run(["git", "show", f"{spec}:psr/generation/{part}.py"], capture_output=True, text=True,
                             cwd=root)
        if got.returncode == 0:  # the revision has this part: use its version
            name = f"psr_native_baseline_{part}"
            (tmp / f"{name}.py").write_text(got.stdout)
            load(name, tmp / f"{name}.py")
            src = src.replace(f"from psr.generation.{part} import", f"from {name} import")
    (tmp / "native_baseline.py").write_text(src)
    return load("psr_native_baseline", tmp / "native_baseline.py")


def arith_stages(tok, n_policy: int = 64, n_judge: int = 16, n_eval: int = 128):
    """[(name, prompts, SamplingParams, stops)] of the arith pipeline's generation stages."""
    from psr.arith.problems import generate_problems
    from psr.generation import SamplingParams
    from psr.prompts import chat, judge_prompt, reasoning_prompt
    from psr.steps import format_step, format_steps, next_step_stop

    probs = generate_problems(max(n_policy, n_eval, n_judge + 6), seed=7, split="bench")
    policy = [chat(tok, reasoning_prompt(p.question)) + format_steps([]) for p in probs[:n_policy]]
    judge = []
    for i, p in enumerate(probs[:n_judge]):  # step 2 of question i: 6 candidates (its own and others')
        cands = [format_step(2, q.steps[min(1, len(q.steps) - 1)]) for q in probs[i: i + 6]]
        prev = [format_step(1, p.steps[0])]
        judge += [chat(tok, judge_prompt(p.question, prev, cands[a], cands[b]))
                  for a in range(6) for b in range(6) if a != b]
    evals = [chat(tok, reasoning_prompt(p.question)) for p in probs[:n_eval]]
    sampled = dict(temperature=0.5, top_p=0.95, max_new_tokens=48)
    return [
        ("policy", policy, SamplingParams(n=6, **sampled), [next_step_stop(1)] * len(policy)),
        ("judge", judge, SamplingParams(n=1, **sampled), None),
        ("eval", evals, SamplingParams(n=1, temperature=0.0, max_new_tokens=128), None),
    ]


def compare_native(args) -> None:
    import psr.generation.native as current
    from psr.generation import SamplingParams

    baseline = load_native_version(args.baseline_native)
    threads = args.cpu_threads if args.cpu_threads == "auto" else int(args.cpu_threads)
    if args.model_dir:
        d = args.model_dir
    elif args.workload == "arith":
        import tempfile

        from psr.arith.model import build_model_dir

        d = build_model_dir(tempfile.mkdtemp(prefix="psr_bench_arith_"))
    else:
        d = build_workload_model(args, "psr_bench_gen_")
    gens = {name: mod.NativeGenerator(str(d), device=args.device, dtype=args.dtype, max_batch_size=args.max_batch_size,
                                      cpu_threads=threads)
            for name, mod in (("baseline", baseline), ("current", current))}
    tok = gens["current"].tokenizer
    if args.workload == "arith":
        stages = arith_stages(tok)
    else:
        prompts = random_prompt_texts(tok, args.prompts, args.prompt_tokens, shared_head=args.shared_head)
        stages = [("uniform", prompts, SamplingParams(n=args.n, temperature=1.0, top_p=1.0,
                                                      max_new_tokens=args.new_tokens), None)]
    for name, g in gens.items():
        print(f"{name}: dtype={g.dtype} matmul_dtype={getattr(g, 'matmul_dtype', g.dtype)} "
              f"cpu_threads={g.cpu_threads}")
        g.generate(stages[0][1][:2], stages[0][2], seeds=[0, 1])  # warm-up
    best: dict[tuple[str, str], tuple[float, float, int]] = {}
    for r in range(args.repeats):
        for name, g in gens.items():
            for stage, prompts, params, stops in stages:
                t, c = time.perf_counter(), time.process_time()
                out = g.generate(prompts, params, stops=stops, seeds=list(range(len(prompts))))
                dt, dc = time.perf_counter() - t, time.process_time() - c
                ntok = sum(x.n_tokens for cs in out for x in cs)
                print(f"  run {r + 1} {name:8s} {stage:7s}: {ntok} tokens in {dt:.2f}s = {ntok / dt:,.0f} tok/s "
                      f"(cpu {ntok / dc:,.0f} tok/cpu-s); {load_line()}", flush=True)
                old = best.get((name, stage))
                if old is None or dt < old[0]:
                    best[(name, stage)] = (dt, dc, ntok)
    print("best of", args.repeats, "runs:")
    total = {}
    for stage, *_ in stages:
        row = []
        for name in gens:
            dt, dc, ntok = best[(name, stage)]
            row.append(ntok / dt)
            total.setdefault(name, [0.0, 0])
            total[name][0] += dt
            total[name][1] += ntok
            print(f"  {stage:7s} {name:8s}: {ntok / dt:8,.0f} tok/s (cpu {ntok / dc:,.0f} tok/cpu-s)")
        print(f"  {stage:7s} current / baseline = {row[1] / row[0]:.2f}")
    print(load_line())
    rate = {k: v[1] / v[0] for k, v in total.items()}
    print(f"ratio={rate['current'] / rate['baseline']:.2f}")


if __name__ == "__main__":
    main()
