"""The native torch backend: any HF-dir causal LM, batched KV-cache decoding, no extra engine.

This module is the batching engine and :class:`NativeGenerator`; the KV cache, its batch
surgery and the shared-prefix prefill are in :mod:`psr.generation.kv_cache`, sampling and the
per-sequence random streams in :mod:`psr.generation.sampling`, and the argument check that
every backend shares in :func:`psr.generation.base.check_generate_args`.

How one ``generate`` call runs
------------------------------
* Every prompt ``i`` becomes ``params.n`` *sequences* ``(i, j)`` (one per prompt when
  ``temperature == 0``: greedy samples are identical, so the result is copied ``n`` times).
* Prompts with the same text are **prefilled once** (one row of a left-padded prefill batch);
  the row's KV cache is then gathered into one row per sequence, so the ``n`` samples of a
  prompt (and identical prompts) share that prefill. Prompts that share a token prefix of at
  least ``share_prefix_min_tokens`` (the judge prompts of one step share the template head,
  the question and the previous steps) compute that prefix once too: one forward over the
  shared prefixes, then one over each prompt's own tail on top of its prefix's cache.
* Sequences run in one in-flight batch of at most ``max_batch_size`` rows (continuous
  batching): new prompt groups are admitted into the running batch whenever enough rows are
  free, by left-padding the shorter of the two KV caches and concatenating them on the batch
  dimension. Finished rows are dropped from the batch (cache, mask and state compacted, and
  columns that are padding for every remaining row trimmed) once they are
  ``compact_fraction`` of it, and at every admission; until then they ride along unused.
* The KV cache lives in preallocated buffers written in place (transformers' DynamicCache
  copies the whole cache at every step), and on CPU attention uses sdpa's in-kernel GQA
  instead of repeating K/V per head (transformers repeats them whenever a mask is present).
* Left padding: each row has its own attention mask (0 on padding) and its own position ids
  (counted from the row's first real token), so a padded row computes the same function as the
  row alone.
* Stop strings: a sequence stops when its decoded text contains one of ``params.stop +
  stops[i]`` (the text is cut *before* the earliest occurrence) or when it emits an EOS token
  (``generation_config.eos_token_id`` and the tokenizer's EOS); else after ``max_new_tokens``.
  ``Completion.n_tokens`` counts generated tokens up to and including the stop / EOS token.
  Texts are decoded with ``skip_special_tokens=True`` (vLLM's default).

Randomness and reproducibility
------------------------------
Sampling (:mod:`psr.generation.sampling`) is inverse-CDF sampling with one uniform number per
sequence and step, drawn from a counter-based stream (splitmix64 of ``(seeds[i], sample index j, step t)``), never from a global
RNG. So the samples of prompt ``i`` depend only on (prompt ``i``, ``params``, ``stops[i]``,
``seeds[i]``) and the same seed gives the same text, whatever else shares the call.
Caveat: the *logits* are computed in a batch whose size, padding and companions depend on the
call, and float kernels may round differently for different batch shapes (rarely in fp32,
more often in bf16). A sampled token can only change when its uniform lands within that
rounding error of a CDF boundary (or two greedy logits tie within it), so runs are identical
in practice for fp32 and almost always for bf16; the same call repeated on the same machine is
bit-identical (deterministic kernels on CPU; on CUDA set ``torch.use_deterministic_algorithms``
for the same guarantee). Without ``seeds``, seeds are drawn from torch's global RNG (so
``torch.manual_seed`` makes a run reproducible).

dtype
-----
``dtype="auto"`` is bf16 on CUDA. On CPU it is bf16 from ``hidden_size >= cpu_bf16_min_hidden``
(default 512) and fp32 below: bf16 matmuls are ~4x faster for large shapes on these CPUs (DESIGN
§6) but slower for the small ones of small models (decode rows x hidden 256), and bf16 attention
is slower. Measured here (1 thread, CPU time, 8 prompts x n=6, 128-token prompts): hidden 256 /
6 layers fp32 2.2k vs bf16 1.7k tok/s; hidden 576 / 4 layers fp32 0.85k vs bf16 1.0k tok/s.
Pass ``dtype="float32"`` / ``"bfloat16"`` to choose.

``matmul_dtype`` runs only the linear layers in another dtype: with ``"auto"`` (the default), a
model loaded from ``model_dir`` with ``dtype="auto"`` that resolves to fp32 on a CPU with
hardware bf16 (AVX512-BF16 / AMX) gets bf16 matmuls on fp32 activations: the small elementwise
ops, norms, attention and the residual stream stay fp32 (bf16 is slow for those on CPU), the
matmuls (~half of the time) run ~3.5x faster. Measured on the 4M arith model (llama, hidden
256), 1 thread, 2 cores shared with other jobs: greedy eval (128 prompts x 128 tokens) 5.4k ->
8.8k tok/s, judge prompts (480, T=0.5) 1.4k -> 2.1k tok/s. Greedy outputs then differ from
transformers' fp32 ``generate`` where two logits are within bf16 rounding (the arith models are
trained with bf16 matmuls too). An explicit ``dtype="float32"`` (or ``matmul_dtype=None``) is
pure fp32 and token-exact with transformers.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from psr.generation.base import Completion, SamplingParams, check_generate_args
from psr.generation.kv_cache import ATTN_IMPL, first_column, merge_rows, prefill, register_attention, select_rows
from psr.generation.sampling import sample_tokens, sequence_keys, stream_uniforms

def _cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX): there bf16 matmuls
    are ~3.5x faster than fp32 (DESIGN §6; [145, 256] x [256, 768]: 0.15 vs 0.55 ms, 1 thread);
    without it oneDNN emulates bf16 and gains little. Read from /proc/cpuinfo (Linux); False
    elsewhere, so the choice is the same on every run on a machine."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


class _LowPrecisionLinears:
    """Runs the model's ``nn.Linear`` layers in a lower precision (bf16) while everything else
    (embeddings, norms, rotary, attention, residual stream, softmax) stays in the model's dtype:
    inputs are cast to bf16, the matmul accumulates in fp32 inside oneDNN, the output is cast
    back and the bias added in the model's dtype. The bf16 weight copies are made once (and
    again if a weight changed in place, e.g. trained between calls); the modules are patched only
    inside ``with`` (the model object is left as it was), so a model shared with other code or
    another generator is not changed."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        self._copies: dict[int, tuple[int, int, torch.Tensor]] = {}

    def _weight(self, m: torch.nn.Linear) -> torch.Tensor:
        w = m.weight
        key = (w.data_ptr(), w._version)
        c = self._copies.get(id(m))
        if c is None or c[:2] != key:
            c = (*key, w.detach().to(self.dtype))
            self._copies[id(m)] = c
        return c[2]

    def __enter__(self):
        F = torch.nn.functional
        last = self._last = [None, None]  # the last input and its cast: q/k/v (and gate/up) share one

        for m in self.linears:
            w, b = self._weight(m), m.bias

            def forward(x, w=w, b=b):
                if x is last[0]:
                    xl = last[1]
                else:
                    xl = x.to(w.dtype)
                    last[0], last[1] = x, xl
                y = F.linear(xl, w).to(x.dtype)
                return y if b is None else y.add_(b)

            m.forward = forward
        return self

    def __exit__(self, *exc) -> None:
        for m in self.linears:
            m.__dict__.pop("forward", None)
        self._last[:] = [None, None]


def _resolve_dtype(dtype: Any, device: torch.device, hidden_size: int, cpu_bf16_min_hidden: int):
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu":
            return torch.bfloat16 if hidden_size >= cpu_bf16_min_hidden else torch.float32
        return torch.float32
    names = {
        "float32": torch.float32, "fp32": torch.float32,
        "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
        "float16": torch.float16, "fp16": torch.float16,
    }
    if dtype not in names:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(names)}, got {dtype!r}")
    return names[dtype]


@dataclass
class _Seq:
    """One sequence being generated: sample ``sample`` of prompt ``prompt``."""

    prompt: int
    sample: int
    stops: tuple[str, ...]
    key: np.uint64
    ids: list[int] = field(default_factory=list)
    done: Optional[Completion] = None


@dataclass
class _Group:
    """The sequences that share one prefill (same prompt text)."""

    ids: list[int]  # prompt token ids
    seqs: list[_Seq]


class _Batch:
    """The in-flight batch: KV cache, attention mask [B, L], the pending (sampled, not yet
    cached) token and its position per row, the rows' random-stream keys and sequences."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.cache = self.mask = self.nxt = self.pos = None
        self.keys = np.zeros(0, dtype=np.uint64)
        self.seqs: list[_Seq] = []

    @property
    def live(self) -> int:
        """Rows whose sequence is still running."""
        return sum(s.done is None for s in self.seqs)


class NativeGenerator:
    """Batched KV-cache generation with a transformers causal LM (see the module docstring).

    Args:
        model_dir: an HF model directory (config, safetensors, tokenizer files).
        device: "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1", ...
        dtype: "auto" | "float32" | "bfloat16" | "float16" (see the module docstring).
        max_batch_size: most sequences decoded together (rows of the in-flight batch).
        max_batch_tokens: most (rows x KV columns) in flight and most padded tokens per
            prefill forward; bounds KV-cache memory. ``None`` = only ``max_batch_size`` limits;
            ``"auto"`` = 16384 on CPU, ``None`` on CUDA. Measured on CPU (idle 2 cores, 4.1M
            model, 16 questions of step search in flight = ~480 judge prompts): unbounded
            291 tok/s at 5.6 GB peak RSS; 65536: 446 tok/s, 2.2 GB; 16384: 876 tok/s, 0.8 GB;
            8192: 626 tok/s; 4096: 551 tok/s (the huge padded batch is memory-bound on CPU).
        admit_fraction: admit new prompts into a running batch only when at least this share of
            ``max_batch_size`` rows is free (each admission costs a prefill and a cache copy).
        add_special_tokens: passed to the tokenizer when encoding prompts (vLLM's default: True).
        cpu_bf16_min_hidden: with ``dtype="auto"`` on CPU, use bf16 from this hidden size up.
        matmul_dtype: dtype of the linear layers' matmuls when it differs from ``dtype``
            (weights copied once, activations cast around each matmul): "auto" (see the module
            docstring), None = ``dtype``, or "bfloat16" / "float16" / "float32".
        attn_implementation: "auto" = transformers' "sdpa" on CUDA and, on CPU, sdpa with
            in-kernel grouped-query attention (no per-step copy of the KV cache); or any
            transformers attention implementation name ("sdpa", "eager", ...).
        kv_grow: columns of KV-cache room allocated ahead (the buffer grows by at least this).
        return_token_ids: put the generated token ids (stop / EOS token included) into
            ``Completion.extra["token_ids"]``.
        compact_fraction: drop finished rows from the batch once they are this share of it
            (0 = at every step). Each compaction copies the KV cache; until then a finished
            row is still computed (its tokens are discarded).
        share_prefix_min_tokens: prompts sharing a token prefix at least this long (e.g. the
            judge prompts of one step) compute it once; 0 disables prefix sharing.
        cpu_threads: torch intra-op threads while generating on CPU (restored afterwards);
            "auto" = one share of the cores per local process (cores // LOCAL_WORLD_SIZE,
            so 1 under torchrun with one rank per core; at most ``OMP_NUM_THREADS`` when it is
            set) for models with hidden size < 512, else torch's setting; None = torch's
            setting; set 1 on an oversubscribed machine.
            Measured on an idle 2-core machine (bench/search_throughput.py, 4.1M model):
            ratio to the naive baseline 2.15 with 1 thread, 3.78 with 2. Measured on the
            shared 2-core machine under load (~8 busy processes): with 2 threads a test
            on the hidden-64 model ran 9x slower (42.8 s vs 4.7 s), and the 4.9M hidden-256
            bench gave 165 tok/s (357 tok/cpu-s) vs 574 tok/s (2,481 tok/cpu-s) with 1 thread —
            spinning OpenMP threads lose to other processes; run one process per core instead
            (torchrun shards questions over ranks).
        model, tokenizer: an already loaded model and tokenizer instead of ``model_dir``.
    """

    name = "native"

    def __init__(
        self,
        model_dir: Optional[str] = None,
        device: str = "auto",
        dtype: Any = "auto",
        max_batch_size: int = 512,
        max_batch_tokens: Any = "auto",
        admit_fraction: float = 0.25,
        add_special_tokens: bool = True,
        cpu_bf16_min_hidden: int = 512,
        attn_implementation: str = "auto",
        kv_grow: int = 64,
        return_token_ids: bool = False,
        compact_fraction: float = 0.125,
        share_prefix_min_tokens: int = 16,
        cpu_threads: Any = "auto",
        matmul_dtype: Any = "auto",
        *,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from psr.distributed import default_device

        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.device = default_device(device)
        if max_batch_tokens == "auto":
            max_batch_tokens = 16384 if self.device.type == "cpu" else None
        if max_batch_tokens is not None and int(max_batch_tokens) < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, 'auto' or None, got {max_batch_tokens}")
        if not 0 <= admit_fraction <= 1:
            raise ValueError(f"admit_fraction must be in [0, 1], got {admit_fraction}")
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.admit_fraction = admit_fraction
        self.add_special_tokens = add_special_tokens
        self._grow = max(1, int(kv_grow))
        self.return_token_ids = return_token_ids
        if not 0 <= compact_fraction < 1:
            raise ValueError(f"compact_fraction must be in [0, 1), got {compact_fraction}")
        self.compact_fraction = compact_fraction
        self.share_prefix_min_tokens = int(share_prefix_min_tokens or 0)
        if attn_implementation == "auto":
            attn_implementation = "sdpa" if self.device.type == "cuda" else ATTN_IMPL
        if attn_implementation == ATTN_IMPL:
            register_attention()
        self.version = f"psr-native (transformers {transformers.__version__}, torch {torch.__version__})"

        if model is None:
            if model_dir is None:
                raise ValueError("NativeGenerator needs model_dir (or model= and tokenizer=)")
            config = transformers.AutoConfig.from_pretrained(model_dir)
            hidden = getattr(config.get_text_config(decoder=True), "hidden_size", 0) or 0
            self.dtype = _resolve_dtype(dtype, self.device, hidden, cpu_bf16_min_hidden)
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    model_dir, dtype=self.dtype, attn_implementation=attn_implementation)
            except (ValueError, ImportError) as e:  # an architecture without sdpa support
                if attn_implementation != ATTN_IMPL:
                    raise
                warnings.warn(f"{attn_implementation} attention unavailable for {model_dir} ({e}); using the default")
                model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=self.dtype)
                attn_implementation = model.config._attn_implementation
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_dir)
        else:
            if tokenizer is None:
                raise ValueError("NativeGenerator(model=...) needs tokenizer= too")
            self.dtype = next(model.parameters()).dtype if dtype == "auto" else _resolve_dtype(
                dtype, self.device, 0, cpu_bf16_min_hidden)
            model = model.to(dtype=self.dtype)
            model.set_attn_implementation(attn_implementation)
        self.model = model.to(self.device).eval()
        if matmul_dtype == "auto":
            auto_fp32_cpu = (dtype in (None, "auto") and model_dir is not None and self.device.type == "cpu"
                             and self.dtype == torch.float32)
            self.matmul_dtype = torch.bfloat16 if auto_fp32_cpu and _cpu_has_native_bf16() else self.dtype
        elif matmul_dtype in (None, "none"):
            self.matmul_dtype = self.dtype
        else:
            self.matmul_dtype = _resolve_dtype(matmul_dtype, self.device, 0, cpu_bf16_min_hidden)
        self._linears = (_LowPrecisionLinears(self.model, self.matmul_dtype)
                         if self.matmul_dtype != self.dtype else None)
        self.tokenizer = tokenizer
        self.model_dir = model_dir
        self.attn_implementation = attn_implementation
        text_cfg = self.model.config.get_text_config(decoder=True)
        if cpu_threads == "auto":
            share = max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
            if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit() and int(os.environ["OMP_NUM_THREADS"]) >= 1:
                share = min(share, int(os.environ["OMP_NUM_THREADS"]))  # the user's (or torchrun's) limit
            cpu_threads = share if (getattr(text_cfg, "hidden_size", 0) or 0) < 512 else None
        if cpu_threads is not None and int(cpu_threads) < 1:
            raise ValueError(f"cpu_threads must be >= 1, 'auto' or None, got {cpu_threads!r}")
        self.cpu_threads = None if cpu_threads is None or self.device.type != "cpu" else int(cpu_threads)
        self._num_layers = text_cfg.num_hidden_layers
        kinds = set(getattr(text_cfg, "layer_types", None) or ["full_attention"])
        if kinds != {"full_attention"} and not (
            kinds == {"sliding_attention", "full_attention"} and not getattr(text_cfg, "use_sliding_window", True)
        ):
            raise NotImplementedError(
                f"the native backend supports full-attention models only; this one has layer types {sorted(kinds)}"
            )

        eos: set[int] = set()
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for e in (gen_eos, getattr(self.model.config, "eos_token_id", None), tokenizer.eos_token_id):
            if e is None:
                continue
            eos.update([e] if isinstance(e, int) else list(e))
        self.eos_ids = sorted(eos)
        self._eos = torch.tensor(self.eos_ids or [-1], device=self.device)
        self._all_special = set(getattr(tokenizer, "all_special_ids", []) or [])
        # Instrumentation (read by tests and benchmarks; reset freely).
        self.stats: collections.Counter = collections.Counter()

    # ------------------------------------------------------------------ public API

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        stops: Optional[Sequence[Sequence[str]]] = None,
        seeds: Optional[Sequence[int]] = None,
    ) -> list[list[Completion]]:
        if self.model is None:
            raise RuntimeError("this NativeGenerator was closed")
        prompts = check_generate_args(prompts, params, stops, seeds)
        if not prompts:
            return []
        if seeds is None:
            seeds = torch.randint(0, 2**62, (len(prompts),)).tolist()

        greedy = params.temperature == 0
        n_seq = 1 if greedy else params.n
        groups: dict[str, _Group] = {}
        all_seqs: list[_Seq] = []
        for i, p in enumerate(prompts):
            st = tuple(s for s in (*params.stop, *(stops[i] if stops is not None else ())) if s)
            g = groups.get(p)
            if g is None:
                ids = self.tokenizer(p, add_special_tokens=self.add_special_tokens)["input_ids"]
                if len(ids) == 0:
                    raise ValueError(f"prompts[{i}] encodes to no tokens; cannot generate from it")
                g = groups[p] = _Group(ids=list(ids), seqs=[])
            keys = sequence_keys([seeds[i]] * n_seq, range(n_seq))
            for j in range(n_seq):
                s = _Seq(prompt=i, sample=j, stops=st, key=keys[j])
                g.seqs.append(s)
                all_seqs.append(s)

        threads = torch.get_num_threads()
        try:
            if self.cpu_threads is not None:
                torch.set_num_threads(self.cpu_threads)
            with torch.inference_mode(), self._linears or contextlib.nullcontext():
                self._run(list(groups.values()), params)
        finally:
            if self.cpu_threads is not None:
                torch.set_num_threads(threads)

        out: list[list[Completion]] = [[] for _ in prompts]
        for s in all_seqs:
            out[s.prompt].append(s.done)
        if greedy and params.n > 1:
            out = [[Completion(c.text, c.n_tokens, c.finish_reason, dict(c.extra)) for _ in range(params.n)]
                   for (c,) in out]
        return out

    def close(self) -> None:
        """Drop the model (and its memory)."""
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ engine

    def _forward(self, input_ids, attention_mask, position_ids, cache, last_only=True):
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1 if last_only else 0,
        )
        self.stats["forward_calls"] += 1
        return out.logits[:, -1, :], out.past_key_values

    def _prefill(self, groups: list[_Group]):
        """Prefill each group's prompt (:func:`psr.generation.kv_cache.prefill`: a prefix shared
        by several prompts is computed once); returns (cache, mask, last logits, prompt lengths)
        with one row per group."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        cache, mask, logits, lens, shared = prefill(
            self._forward, [g.ids for g in groups], num_layers=self._num_layers, grow=self._grow,
            pad_id=pad, device=self.device, share_prefix_min_tokens=self.share_prefix_min_tokens)
        self.stats["prefill_prompts"] += len(groups)
        self.stats["prefill_tokens"] += int(lens.sum()) - shared
        if shared:
            self.stats["shared_prefix_tokens"] += shared
        return cache, mask, logits, lens

    # -- the loop ----------------------------------------------------------------------

    def _run(self, groups: list[_Group], params: SamplingParams) -> None:
        greedy = params.temperature == 0
        pending = collections.deque(groups)
        max_stop_chars = max((len(x) for g in groups for s in g.seqs for x in s.stops), default=0)
        # Tokens to decode to see a stop string: each character may need up to 4 byte tokens,
        # plus a few tokens of context so that the boundary of the window cannot hide a match.
        self._stop_window = 4 * max_stop_chars + 4

        b = _Batch()  # the in-flight batch; rows whose sequence finished are "dead" until compaction
        B_max = self.max_batch_size
        T_max = self.max_batch_tokens
        admit_at = max(1, math.ceil(self.admit_fraction * B_max))

        while pending or b.live:
            free = B_max - b.live
            if pending and (b.live == 0 or free >= admit_at):
                take = self._take(pending, b, B_max, T_max)
                if take:
                    self._admit(take, b, params, greedy)
                    continue
            # one decode step for every row of the batch
            b.mask = torch.cat([b.mask, b.mask.new_ones((b.mask.shape[0], 1))], dim=1)
            logits, b.cache = self._forward(b.nxt.unsqueeze(1), b.mask, b.pos.unsqueeze(1), b.cache)
            self.stats["decode_steps"] += 1
            self.stats["decode_rows"] += len(b.seqs)
            b.pos = b.pos + 1
            steps = np.array([len(s.ids) for s in b.seqs], dtype=np.int64)
            b.nxt = self._sample(logits, params, greedy, b.keys, steps)
            self._consume(b, params, 0)
            self._maybe_compact(b)

    def _take(self, pending, b, B_max, T_max) -> list[_Group]:
        """The prompt groups to admit now (at least one when the batch is empty)."""
        take: list[_Group] = []
        rows = 0
        L_new = 0
        L_run = b.mask.shape[1] if b.live else 0
        while pending:
            g = pending[0]
            k = len(g.seqs)
            if k > B_max:  # a group larger than the batch: split it
                rest = _Group(g.ids, g.seqs[B_max:])
                g.seqs = g.seqs[:B_max]
                pending.insert(1, rest)
                k = B_max
            L = max(L_new, len(g.ids))
            fits = b.live + rows + k <= B_max and (
                T_max is None
                or ((len(take) + 1) * L <= T_max and (b.live + rows + k) * max(L, L_run) <= T_max)
            )
            if not fits and (take or b.live):
                break
            take.append(pending.popleft())
            rows += k
            L_new = L
        return take

    def _admit(self, take: list[_Group], b: "_Batch", params: SamplingParams, greedy: bool) -> None:
        c_new, m_new, logits, lens = self._prefill(take)
        rep = torch.tensor([r for r, g in enumerate(take) for _ in g.seqs], device=self.device)
        m_new = select_rows(c_new, m_new, rep, self._grow)
        logits = logits.index_select(0, rep)
        new_seqs = [s for g in take for s in g.seqs]
        new_pos = lens.index_select(0, rep)
        new_keys = np.array([s.key for s in new_seqs], dtype=np.uint64)
        tok = self._sample(logits, params, greedy, new_keys, np.zeros(len(new_seqs), dtype=np.int64))
        if b.live:
            keep = [r for r, s in enumerate(b.seqs) if s.done is None]  # dead rows go in the same copy
            keep_t = torch.tensor(keep, device=self.device)
            b.cache, b.mask = merge_rows(b.cache, b.mask, keep_t, c_new, m_new, self._grow)
            b.nxt = torch.cat([b.nxt.index_select(0, keep_t), tok])
            b.pos = torch.cat([b.pos.index_select(0, keep_t), new_pos])
            b.keys = np.concatenate([b.keys[keep], new_keys])
            b.seqs = [b.seqs[r] for r in keep] + new_seqs
        else:
            b.cache, b.mask, b.nxt, b.pos, b.keys, b.seqs = c_new, m_new, tok, new_pos, new_keys, new_seqs
        self._consume(b, params, len(b.seqs) - len(new_seqs))
        self._maybe_compact(b)

    def _maybe_compact(self, b: "_Batch") -> None:
        """Drop finished rows once they are at least ``compact_fraction`` of the batch (a
        compaction copies the KV cache, about the cost of reading it once)."""
        dead = len(b.seqs) - b.live
        if dead == 0:
            return
        if b.live == 0:
            b.clear()
            return
        if dead < self.compact_fraction * len(b.seqs):
            return
        keep = [r for r, s in enumerate(b.seqs) if s.done is None]
        keep_t = torch.tensor(keep, device=self.device)
        start = first_column(b.mask.index_select(0, keep_t))
        b.mask = select_rows(b.cache, b.mask, keep_t, self._grow, start=start)
        b.nxt, b.pos, b.keys = b.nxt.index_select(0, keep_t), b.pos.index_select(0, keep_t), b.keys[keep]
        b.seqs = [b.seqs[r] for r in keep]
        self.stats["compactions"] += 1

    def _sample(self, logits, params, greedy, keys, steps):
        if greedy:
            return logits.argmax(dim=-1)
        u = torch.from_numpy(stream_uniforms(keys, steps))
        return sample_tokens(logits, params.temperature, params.top_p, u)

    def _consume(self, b: "_Batch", params: SamplingParams, new_from: int) -> None:
        """Append the freshly sampled tokens of the live rows from ``new_from`` on (after an
        admission only the admitted rows are fresh), and finish sequences on EOS, a stop string
        or the length limit (they become dead rows)."""
        toks = b.nxt[new_from:].tolist()
        is_eos = torch.isin(b.nxt[new_from:], self._eos).tolist()
        check = []
        n_new = 0
        for r in range(new_from, len(b.seqs)):
            s = b.seqs[r]
            if s.done is not None:
                continue
            n_new += 1
            s.ids.append(toks[r - new_from])
            if is_eos[r - new_from]:
                self._finish(b, s, "eos")
            elif s.stops:
                check.append(s)
            elif len(s.ids) >= params.max_new_tokens:
                self._finish(b, s, "length")
        if check:
            w = self._stop_window
            tails = self.tokenizer.batch_decode([s.ids[-w:] for s in check], skip_special_tokens=True)
            for s, tail in zip(check, tails):
                if any(x in tail for x in s.stops) and self._finish(b, s, "stop"):
                    continue
                if len(s.ids) >= params.max_new_tokens:
                    self._finish(b, s, "length")
        self.stats["generated_tokens"] += n_new

    def _finish(self, b: "_Batch", s: _Seq, reason: str) -> bool:
        c = self._completion(s, reason)
        if c is None:
            return False
        s.done = c
        return True

    def _completion(self, s: _Seq, reason: str) -> Optional[Completion]:
        ids = s.ids[:-1] if reason == "eos" else s.ids
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if reason == "stop":
            cut = min((k for k in (text.find(x) for x in s.stops) if k >= 0), default=-1)
            if cut < 0:  # the window saw a stop that the full decode does not contain
                return None
            text = text[:cut]
        extra = {"token_ids": list(s.ids)} if self.return_token_ids else {}
        return Completion(text=text, n_tokens=len(s.ids), finish_reason=reason, extra=extra)
