r"""Memory plan: will a recipe config fit its GPUs? Computed from the config and the model's
``config.json`` alone (no weights are read, no GPU is needed).

Launch::

    python -m psr.plan eft_ift_sft --config qwen2_5_math_7b/eft_ift_sft --nnodes 1 --nproc_per_node 8 \
        --gpu_mem_gb 80 --model_dir /models/Qwen2.5-Math-7B
    python -m psr.plan step_dpo --config qwen2_5_math_72b/step_dpo --nnodes 4 --nproc_per_node 8 \
        --gpu_mem_gb 80 --model_config /models/Qwen2.5-Math-72B/config.json micro_batch_size=2
    python -m psr.plan step_search --config qwen2_5_math_72b/step_search --nnodes 4 --nproc_per_node 1 \
        --gpu_mem_gb 80 --model_config .../config.json

``key=value`` overrides work as for the recipe; ``--header`` prints the plan as the comment
block the configs/qwen2_5_math_* headers carry. The model's ``config.json`` comes from
``--model_config``, else ``--model_dir``, else the config's ``model_dir``. Exit status: 0 fits
(or no ``--gpu_mem_gb`` given, or a CPU run: no verdict), 1 does not fit (the message names the
largest term and the key that would shrink it), 2 bad input (one line). ``--gpu_mem_gb`` is in
GiB (2^30 bytes; an "80GB" H100 has 79.6 GiB, ``nvidia-smi``'s MiB / 1024).

Python: ``estimate(model_config, recipe, **settings) -> Plan`` (``estimate_training`` /
``estimate_generation``); ``Plan.terms`` are the per-GPU (per-process on CPU) bytes by name.

Notation
--------
P parameters, H hidden_size, I intermediate_size, L layers, V vocab_size, qd = heads x head_dim,
kvd = kv_heads x head_dim. ``block`` = one decoder layer's parameters, ``root`` = the parameters
outside the layers (embeddings, final norm, the LM head unless tied). Parameter counts follow the
HF modules: q/k/v biases for qwen2 (``attention_bias`` for llama/qwen3, also on o_proj), q/k norms
for qwen3, no biases elsewhere (``mlp_bias`` for llama); tests check them against transformers.
p = parameter bytes (4 with ``master_weights_fp32`` or float32 compute, else the compute dtype's),
c = compute dtype bytes (``dtype``; auto = bf16 on CUDA, fp32 on CPU), W = the ranks a parameter
is sharded over: all N x G ranks, or G (= ``--nproc_per_node``) with ``hybrid_shard`` on more than
one node. Rows R = ``micro_batch_size`` (x 2 for step DPO: chosen and rejected rows of a pair are
one batch), T = ``max_seq_len``: every micro-batch is taken as R x T tokens (padded worst case).

Training terms (per GPU; psr.training.fsdp: FSDP2 ``fully_shard`` per block then the root)
-----------------------------------------------------------------------------------------
* parameters   ``p x P / W``: the sharded master weights.
* gradients    ``p x P / W``: sharded gradients are kept in the parameter dtype.
* optimizer    ``2 p x P / W``: AdamW's exp_avg and exp_avg_sq are ``zeros_like(param)``
  (fp32 with master weights; bf16 moments when ``master_weights_fp32=false`` with bf16).
  With ``cpu_offload`` these three live in host RAM instead (CPUOffloadPolicy; the plan prints
  the host RAM per node: G x their sum) and are 0 on the GPU.
* gathered parameters ``c x (root + 2 blocks)``: FSDP2 all-gathers each block in the compute
  dtype (MixedPrecisionPolicy param_dtype) before its forward/backward; in backward the next
  block is prefetched while one computes (2 blocks). The root is never resharded between forward
  and backward (FSDP2 keeps the root's parameters gathered, they are needed right away), so it is
  counted whole. ``reshard_after_forward=false``: ``c x P`` (every block stays gathered).
* unsharded gradients ``c x (root + block) + r x block``: a block's gradients are produced
  unsharded in c, then cast to fp32 for the reduce-scatter (r = 4 under mixed precision, else 0);
  the root is reduced only at the very end of backward, so the LM head's full gradient lives
  through the whole backward. (The root's own fp32 reduce copy, r x root, comes after the
  activations and logits are freed; it is smaller than them in every config here and not added.)
* activations, per token of a micro-batch (HF llama/qwen2 decoder layer, SDPA memory-efficient
  attention: no T x T attention matrix; what autograd saves):
      layer = 2 (4H + 2cH + 4)       two RMSNorms: the fp32 input, the normalized c tensor, the
                                     c output (the next projections' input), the fp32 rsqrt
            + c qd                   q after RoPE
            + 2c qd  or  2c kvd      k, v as SDPA sees them: repeated to all heads when a padding
                                     mask is passed (R > 1), else grouped (SDPA enable_gqa)
            + c qd                   attention output (= o_proj's input, no copy)
            + 4 heads                SDPA's fp32 log-sum-exp
            + c T  (R > 1)           the padding mask, which SDPA turns into a c bias per layer
            + 4 c I                  gate, SiLU(gate), up, SiLU(gate) x up
            [+ (4 + c)(qd + kvd) + 4 (heads + kv_heads)   qwen3's q/k norms]
      final = 4H + 2cH + 4           the final RMSNorm
  without checkpointing: ``R T (L x layer + final)``; with ``activation_checkpointing``: each
  layer keeps only its input, ``R T (L x cH + layer + final)`` (+ one layer recomputed at a time
  in backward). Activation gradients and kernel workspaces are transient and not counted, nor are
  the tensors all layers share (RoPE cos/sin). tests/test_plan.py checks the
  per-layer count against what autograd saves (saved_tensors_hooks) in fp32 and bf16.
* logits ``R K V x b``: the LM head runs only where a label is predicted (``logits_to_keep``).
  eft_ift_sft: K = T (every position may hold a response token; psr.training.forward), b = 12:
  the fp32 log-softmax saved by cross-entropy, its gradient and the logits' gradient (the bf16
  logits and their fp32 copy of the forward are freed before backward). step_dpo: K = the longest
  step + 1 <= ``DPO_STEP_TOKENS`` + 1 = 513 (step_search's ``max_new_tokens_step``;
  psr.training.dpo), b = 12 (the fp32 copy kept by logsumexp, its gradient and gather's).
  prm_train: K = tag columns only, at most one per ``PRM_TOKENS_PER_STEP`` = 8 tokens per row
  ("Step k: " header, a body, newline, tag), K = min(T, R ceil(T/8)); b = 2c (the c logits and
  the gradient of the 2-column gather; psr.prm.tag_pair_logits).
* One micro-batch per optimizer step (``grad_accum_steps`` = 1; the CLI computes
  batch_size / (micro_batch_size x ranks)): the gradients are None at the forward and fill in as
  backward frees the activations and logits, so the total counts only the larger of "gradients"
  and "activations + logits". With accumulation the gradients of earlier micro-batches are held
  during the next forward and both count. (Measured, one process, fp32, a 55M llama on CPU, the
  second step's RSS high-water mark above parameters + optimizer state: 754 / 405 / 694 / 865 MiB
  for 2x512 / 2x512 checkpointed / 1x1024 / 1x2048 checkpointed; this plan: 733 / 441 / 693 / 872.
  The same model under FSDP2 with 2 gloo processes, 2x512: per-rank peak RSS above a bare
  torch+gloo process 1,461 / 1,484 MiB, of which ~211 MiB is the full model that script built on
  every rank before sharding; this plan: 1,332 MiB.)
* Setup (``values["setup"]``, the sharded load before the first step): the parameter shards +
  one whole tensor in flight (the embedding, ``p x V x H``); a loader that gathers more at once
  (e.g. rank 0 holding the full state dict to broadcast it) peaks higher on that rank.
* The optimizer step (activations freed, blocks resharded): parameters + gradients + optimizer
  state + on CUDA one moment-sized temporary of AdamW's foreach path; the verdict uses it when it
  is the larger peak.
* step_dpo's reference pass (before training; no gradients, no optimizer state yet):
  parameters + gathered + one layer's activations of ``2 x ref_micro_batch_size`` rows + logits
  with b = c + 8. The verdict uses the larger of the two peaks.
* One process (no FSDP; cpu_offload, hybrid_shard, reshard_after_forward ignored): full P terms,
  no gathered/unsharded-gradient terms; under bf16 autocast on fp32 weights, the cast weight
  copies (``c x P``) are cached for the forward and kept for backward.

Fit: total <= gpu_mem - headroom, headroom = ``HEADROOM_FIXED_GIB`` (2 GiB: CUDA context ~0.5-1
GiB, NCCL buffers) + ``HEADROOM_FRACTION`` (5 %) of the GPU for the caching allocator's
fragmentation. On CPU (``device=cpu``) there is no verdict: the terms are per process.

Generation terms (step_search, eval; vLLM, psr.generation.vllm_backend)
----------------------------------------------------------------------
One engine per rank (``--nnodes`` x ``--nproc_per_node`` engines), each on
``tensor_parallel_size`` x ``pipeline_parallel_size`` GPUs (``backend_kwargs``).
* weights ``d x P / (tp pp)`` (d = 2 for bf16/fp16/auto, 4 for float32).
* vLLM's non-KV reserve: the profiling forward's activations
  ``max_num_batched_tokens x (2H + 4I/tp) x d`` (residual + normed hidden, gate/up/act of the
  MLP), the sampler's fp32 logits and probabilities ``max_num_seqs x V x 8``, and 1 GiB for CUDA
  graphs. vLLM's defaults for these two limits differ between versions and GPUs; the plan
  assumes the generous end, 16,384 tokens / 1,024 sequences (about 3-5 GiB here); set
  ``backend_kwargs.max_num_batched_tokens`` / ``max_num_seqs`` to plan with yours.
* KV cache = ``gpu_memory_utilization`` (vLLM's 0.92 unless ``backend_kwargs`` sets it) x GPU
  - weights - reserve, or ``kv_cache_gib`` when given. Per token: ``2 x L x kv_heads x head_dim
  x kv bytes`` per engine; per GPU ``2 x (L/pp) x max(1, kv_heads/tp) x head_dim x kv bytes``
  (vLLM replicates KV heads when tp > kv_heads). Tokens that fit = KV / per-token bytes.
  Fits when the weights and reserve fit and the KV cache holds one ``max_model_len`` sequence
  (vLLM refuses to start otherwise); beyond that the KV size sets how many sequences run at once
  (vLLM queues the rest).
* backend native: the whole model on one device and a KV cache that grows with the batch: usable
  (gpu_mem - headroom) - weights, in tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from psr.search import SearchConfig

GIB = 1 << 30
HEADROOM_FIXED_GIB = 2.0
HEADROOM_FRACTION = 0.05
DPO_STEP_TOKENS = SearchConfig.max_new_tokens_step  # the longest step step_search writes by default
PRM_TOKENS_PER_STEP = 8
LOGIT_BYTES_TRAIN = 12
VLLM_GPU_MEMORY_UTILIZATION = 0.92
VLLM_MAX_NUM_BATCHED_TOKENS = 16384
VLLM_MAX_NUM_SEQS = 1024
VLLM_CUDA_GRAPHS_GIB = 1.0
VLLM_CPU_KV_CACHE_GIB = 1.0
VLLM_BLOCK_TOKENS = 16

TRAIN_RECIPES = {"eft_ift_sft": "sft", "step_dpo": "dpo", "prm_train": "prm"}
GENERATION_RECIPES = ("step_search", "eval")
SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")

_DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2}


class PlanError(ValueError):
    """Bad input to the plan (one line, names the file / key / flag)."""


# ----------------------------------------------------------------------------- model shape


@dataclass(frozen=True)
class ModelShape:
    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool
    max_position_embeddings: Optional[int] = None
    checkpoint_dtype: Optional[str] = None

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def block_params(self) -> int:
        """Parameters of one decoder layer."""
        H, qd, kvd, I = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        attn = H * qd + 2 * H * kvd + qd * H
        if self.qkv_bias:
            attn += qd + 2 * kvd
        if self.o_bias:
            attn += H
        if self.qk_norm:
            attn += 2 * self.head_dim
        mlp = 3 * H * I + ((2 * I + H) if self.mlp_bias else 0)
        return attn + mlp + 2 * H

    @property
    def root_params(self) -> int:
        """Embeddings + final norm (+ LM head when untied)."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def n_params(self) -> int:
        return self.layers * self.block_params + self.root_params


def _int_key(cfg: dict, key: str, where: str) -> int:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise PlanError(f"{where}: {key} must be a positive integer, got {v!r}")
    return v


def model_shape(model_config: dict, where: str = "config.json") -> ModelShape:
    """The shape of a llama/qwen2/qwen3/mistral-style decoder from its HF ``config.json`` dict."""
    if not isinstance(model_config, dict):
        raise PlanError(f"{where}: expected a JSON object")
    mt = model_config.get("model_type")
    if mt not in SUPPORTED_MODEL_TYPES:
        raise PlanError(f"{where}: model_type {mt!r} is not planned (the plan knows the dense decoders "
                        f"{', '.join(SUPPORTED_MODEL_TYPES)})")
    H = _int_key(model_config, "hidden_size", where)
    I = _int_key(model_config, "intermediate_size", where)
    L = _int_key(model_config, "num_hidden_layers", where)
    heads = _int_key(model_config, "num_attention_heads", where)
    V = _int_key(model_config, "vocab_size", where)
    kv = model_config.get("num_key_value_heads") or heads
    if not isinstance(kv, int) or kv <= 0 or heads % kv:
        raise PlanError(f"{where}: num_key_value_heads {kv!r} must divide num_attention_heads {heads}")
    hd = model_config.get("head_dim")
    if hd is None and mt == "qwen3":
        hd = 128  # transformers' Qwen3Config default (not hidden_size / heads)
    if hd is None:
        if H % heads:
            raise PlanError(f"{where}: hidden_size {H} is not a multiple of num_attention_heads {heads} (set head_dim)")
        hd = H // heads
    if not isinstance(hd, int) or hd <= 0:
        raise PlanError(f"{where}: head_dim must be a positive integer, got {hd!r}")
    attn_bias = model_config.get("attention_bias")
    if mt == "qwen2":
        qkv_bias, o_bias = True, False  # Qwen2Attention: q/k/v with bias, o_proj without
    else:
        qkv_bias = o_bias = bool(attn_bias)
    mpe = model_config.get("max_position_embeddings")
    return ModelShape(
        model_type=mt, hidden=H, intermediate=I, layers=L, heads=heads, kv_heads=kv, head_dim=hd, vocab=V,
        tied=bool(model_config.get("tie_word_embeddings", False)), qkv_bias=qkv_bias, o_bias=o_bias,
        mlp_bias=bool(model_config.get("mlp_bias", False)), qk_norm=(mt == "qwen3"),
        max_position_embeddings=mpe if isinstance(mpe, int) and mpe > 0 else None,
        checkpoint_dtype=model_config.get("torch_dtype") or model_config.get("dtype"),
    )


def layer_activation_bytes_per_token(s: ModelShape, c: int, seq_len: int = 0, masked: bool = True) -> int:
    """Bytes autograd keeps per token for one decoder layer (module docstring). ``masked``: the
    micro-batch is padded, so HF passes a mask to SDPA (k/v repeated to all heads, and SDPA keeps
    the mask as a ``[rows, 1, T, T]`` compute-dtype bias: ``c x seq_len`` per token)."""
    norms = 2 * (4 * s.hidden + 2 * c * s.hidden + 4)
    kv_seen = 2 * c * (s.q_dim if (masked and s.kv_heads < s.heads) else s.kv_dim)
    attn = c * s.q_dim + kv_seen + c * s.q_dim + 4 * s.heads + (c * seq_len if masked else 0)
    b = norms + attn + 4 * c * s.intermediate
    if s.qk_norm:  # qwen3: RMSNorm on q and k per head (fp32 input, normalized c, fp32 rsqrt per head)
        b += (4 + c) * (s.q_dim + s.kv_dim) + 4 * (s.heads + s.kv_heads)
    return b


def final_norm_bytes_per_token(s: ModelShape, c: int) -> int:
    return 4 * s.hidden + 2 * c * s.hidden + 4


# ----------------------------------------------------------------------------- the plan


@dataclass
class Term:
    name: str
    bytes: int
    detail: str = ""


@dataclass
class Plan:
    recipe: str
    kind: str  # "train" | "generate"
    shape: ModelShape
    device: str
    nnodes: int
    nproc_per_node: int
    terms: list[Term]
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    gpu_mem_bytes: Optional[int] = None
    headroom_bytes: int = 0
    host_bytes_per_node: Optional[int] = None  # cpu_offload: what lives in host RAM per node
    peak_override: Optional[int] = None  # a larger peak than the terms' sum (optimizer step, reference pass)
    overlap_bytes: int = 0  # what the terms' sum counts twice (gradients vs activations, one micro-batch)
    values: dict = field(default_factory=dict)  # other numbers (activations both ways, KV tokens ...)
    fit_problem: Optional[str] = None  # generation: why it does not fit, when not a sum
    advice_for: dict = field(default_factory=dict)  # term name -> what would shrink it

    @property
    def world(self) -> int:
        return self.nnodes * self.nproc_per_node

    def term(self, name: str) -> int:
        for t in self.terms:
            if t.name == name:
                return t.bytes
        raise KeyError(name)

    @property
    def total(self) -> int:
        s = sum(t.bytes for t in self.terms) - self.overlap_bytes
        return max(s, self.peak_override or 0)

    @property
    def usable(self) -> Optional[int]:
        if self.gpu_mem_bytes is None:
            return None
        return self.gpu_mem_bytes - self.headroom_bytes

    @property
    def fits(self) -> Optional[bool]:
        """None when there is no verdict (CPU, or no GPU memory given)."""
        if self.usable is None or self.device != "cuda":
            return None
        if self.fit_problem is not None:
            return False
        return self.total <= self.usable

    @property
    def largest(self) -> Term:
        return max(self.terms, key=lambda t: t.bytes)

    def verdict(self) -> str:
        f = self.fits
        if f is None:
            return "no verdict (" + ("CPU run: the terms are per process" if self.device != "cuda"
                                     else "pass --gpu_mem_gb for one") + ")"
        if f:
            spare = gib(self.usable - self.total)
            return f"fits: {gib(self.total)} of {gib(self.usable)} usable per GPU ({spare} spare)"
        if self.fit_problem is not None:
            return "does not fit: " + self.fit_problem
        big = self.largest
        return (f"does not fit: needs {gib(self.total)} of {gib(self.usable)} usable per GPU; "
                f"{big.name} {gib(big.bytes)} is the largest term; {self.advice_for.get(big.name, 'more GPUs')}")


def gib(n: Optional[float]) -> str:
    return "-" if n is None else f"{n / GIB:.1f} GiB"


def dtype_bytes(name: str, key: str = "dtype") -> int:
    b = _DTYPE_BYTES.get(str(name).lower())
    if b is None:
        raise PlanError(f"{key}: unknown dtype {name!r} (float32, bfloat16, float16 or auto)")
    return b


def _check_counts(nnodes: int, nproc_per_node: int, gpu_mem_gb: Optional[float]) -> None:
    for name, v in (("--nnodes", nnodes), ("--nproc_per_node", nproc_per_node)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise PlanError(f"{name} must be a whole number >= 1, got {v!r}")
    if gpu_mem_gb is not None and not (isinstance(gpu_mem_gb, (int, float)) and gpu_mem_gb > 0):
        raise PlanError(f"--gpu_mem_gb must be > 0, got {gpu_mem_gb!r}")


def _headroom(gpu_mem_bytes: Optional[int]) -> int:
    if gpu_mem_bytes is None:
        return 0
    return int(HEADROOM_FIXED_GIB * GIB + HEADROOM_FRACTION * gpu_mem_bytes)


def estimate_training(
    model_config: dict | ModelShape,
    *,
    objective: str = "sft",
    micro_batch_size: int = 1,
    max_seq_len: int = 2048,
    dtype: str = "bfloat16",
    master_weights_fp32: bool = True,
    activation_checkpointing: bool = False,
    reshard_after_forward: bool = True,
    cpu_offload: bool = False,
    hybrid_shard: bool = False,
    nnodes: int = 1,
    nproc_per_node: int = 1,
    device: str = "cuda",
    gpu_mem_gb: Optional[float] = None,
    ref_micro_batch_size: Optional[int] = None,
    dpo_step_tokens: int = DPO_STEP_TOKENS,
    grad_accum_steps: int = 1,
    recipe: Optional[str] = None,
    _other_checkpointing: bool = True,
) -> Plan:
    """Per-rank memory of a training step (module docstring).

    ``objective``: sft | dpo | prm (eft_ift_sft, step_dpo, prm_train). ``device``: cuda (a verdict
    against ``gpu_mem_gb``) or cpu (gloo processes: per-process terms, no verdict). ``dtype``:
    float32 | bfloat16 | auto. ``grad_accum_steps``: micro-batches per optimizer step on a rank
    (1: gradients and activations are not held at once). Returns a :class:`Plan`: ``terms``
    (name, bytes), ``total`` (the peak), ``values`` (activations both ways, setup,
    optimizer_step, reference_pass for dpo, ...)."""
    s = model_config if isinstance(model_config, ModelShape) else model_shape(model_config)
    if objective not in ("sft", "dpo", "prm"):
        raise PlanError(f"objective must be sft, dpo or prm, got {objective!r}")
    _check_counts(nnodes, nproc_per_node, gpu_mem_gb)
    for key, v in (("micro_batch_size", micro_batch_size), ("max_seq_len", max_seq_len)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise PlanError(f"{key} must be >= 1, got {v!r}")
    if device not in ("cuda", "cpu"):
        raise PlanError(f"device must be cuda or cpu for a plan, got {device!r}")
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    c = dtype_bytes(dtype)
    if c == 2 and str(dtype).lower() in ("float16", "fp16", "half"):
        raise PlanError("dtype=float16 is not supported for training (use bfloat16 or float32)")
    p = 4 if (master_weights_fp32 or c == 4) else c
    world = nnodes * nproc_per_node
    sharded = world > 1
    notes: list[str] = []
    P, block, root = s.n_params, s.block_params, s.root_params
    if sharded:
        W = nproc_per_node if (hybrid_shard and nnodes > 1) else world
        mesh = (f"2-D mesh: sharded over the {W} GPUs of a node, replicated over {nnodes} nodes" if W != world
                else f"sharded over all {W} ranks")
    else:
        W = 1
        mesh = "one process: no sharding"
        ignored = [k for k, v in (("cpu_offload", cpu_offload), ("hybrid_shard", hybrid_shard)) if v]
        if ignored:
            notes.append(f"{', '.join(ignored)} ignored with one process")
        cpu_offload = False
    shard = -(-P // W)
    pname = {4: "fp32", 2: "bf16"}[p]
    cname = {4: "fp32", 2: "bf16"}[c]
    params_b, grads_b, optim_b = p * shard, p * shard, 2 * p * shard
    host = None
    if cpu_offload:
        host = nproc_per_node * (params_b + grads_b + optim_b)
        params_b = grads_b = optim_b = 0
    where = f"1/{W} shard" if W > 1 else "whole model"
    where += ", in host RAM (cpu_offload)" if cpu_offload else ""
    terms = [
        Term("parameters", params_b, f"{pname}, {where}"),
        Term("gradients", grads_b, f"{pname}, {where}"),
        Term("optimizer state", optim_b, f"AdamW exp_avg + exp_avg_sq, {pname}, {where}"),
    ]
    mixed = c != p
    r = 4 if (sharded and mixed) else 0
    if sharded:
        if reshard_after_forward:
            gathered, gdet = c * (root + 2 * block), f"{cname}: root + 2 blocks (reshard_after_forward)"
        else:
            gathered, gdet = c * P, f"{cname}: every block stays gathered (reshard_after_forward=false)"
        terms.append(Term("gathered parameters", gathered, gdet))
        terms.append(Term("unsharded gradients", c * (root + block) + r * block,
                          f"{cname} root (LM head) + 1 block" + (", + fp32 reduce copy of 1 block" if r else "")))
    elif mixed:
        terms.append(Term("autocast weight copies", c * P, f"{cname} copies of the fp32 weights (one process)"))
    rows = micro_batch_size * (2 if objective == "dpo" else 1)
    T = max_seq_len
    tokens = rows * T
    layer = layer_activation_bytes_per_token(s, c, T, masked=rows > 1)
    final = final_norm_bytes_per_token(s, c)
    act_full = tokens * (s.layers * layer + final)
    act_ckpt = tokens * (s.layers * c * s.hidden + layer + final)
    act = act_ckpt if activation_checkpointing else act_full
    terms.append(Term("activations", act,
                      f"{rows} rows x {T} tokens, "
                      + ("checkpointed" if activation_checkpointing else "no checkpointing")))
    if objective == "sft":
        K, lb, kdet = T, LOGIT_BYTES_TRAIN, "every position"
    elif objective == "dpo":
        K, lb, kdet = min(T, dpo_step_tokens + 1), LOGIT_BYTES_TRAIN, f"last {min(T, dpo_step_tokens + 1)} positions"
    else:
        K = min(T, micro_batch_size * math.ceil(T / PRM_TOKENS_PER_STEP))
        lb, kdet = 2 * c, f"{K} tag columns"
    logits = rows * K * s.vocab * lb
    terms.append(Term("logits", logits, f"{rows} rows x {kdet} x vocab {s.vocab} x {lb} B"))
    plan = Plan(recipe or {"sft": "eft_ift_sft", "dpo": "step_dpo", "prm": "prm_train"}[objective], "train", s,
                device, nnodes, nproc_per_node, terms, notes=notes, host_bytes_per_node=host)
    plan.settings = {"dtype": dtype, "master_weights_fp32": master_weights_fp32,
                     "activation_checkpointing": activation_checkpointing,
                     "reshard_after_forward": reshard_after_forward, "cpu_offload": cpu_offload,
                     "hybrid_shard": hybrid_shard, "micro_batch_size": micro_batch_size, "max_seq_len": max_seq_len,
                     "mesh": mesh, "shard_world": W}
    plan.values = {"activations_checkpointed": act_ckpt, "activations_full": act_full, "rows": rows,
                   "logit_positions": K, "n_params": P, "grad_accum_steps": grad_accum_steps}
    if grad_accum_steps == 1 and grads_b:
        # one micro-batch per optimizer step: the gradients are set to None before the forward and
        # fill in while backward frees the activations and logits, so only the larger is held
        plan.overlap_bytes = min(grads_b, act + logits)
        notes.append(f"one micro-batch per optimizer step: gradients and activations + logits are not held at "
                     f"once (-{gib(plan.overlap_bytes)})")
    # setup (sharded load, before any step): this rank's parameter shards + one full tensor in
    # flight (the largest, the embedding, when a rank reads or receives a whole tensor at a time)
    plan.values["setup"] = (0 if cpu_offload else params_b) + p * s.vocab * s.hidden
    # optimizer step: blocks resharded, activations freed; AdamW's foreach path (CUDA) adds a
    # temporary of one moment's size (sqrt of exp_avg_sq)
    step_peak = params_b + grads_b + optim_b + (p * shard if (device == "cuda" and not cpu_offload) else 0)
    plan.values["optimizer_step"] = step_peak
    if step_peak > plan.total:
        plan.peak_override = step_peak
        notes.append(f"the optimizer step peaks above the forward/backward: {gib(step_peak)}")
    if objective == "dpo":
        ref_rows = 2 * (ref_micro_batch_size or micro_batch_size)
        ref_layer = layer_activation_bytes_per_token(s, c, T, masked=ref_rows > 1)
        ref = (params_b + (terms[3].bytes if sharded else (c * P if mixed else 0))
               + ref_rows * T * (ref_layer + final) + ref_rows * K * s.vocab * (c + 8))
        plan.values["reference_pass"] = ref
        if ref > plan.total:
            plan.peak_override = ref
            notes.append(f"the reference pass ({ref_rows} rows) peaks above training: {gib(ref)}")
    if device == "cuda" and gpu_mem_gb is not None:
        plan.gpu_mem_bytes = int(gpu_mem_gb * GIB)
        plan.headroom_bytes = _headroom(plan.gpu_mem_bytes)
    if _other_checkpointing:  # the total with activation checkpointing flipped
        plan.values["total_other_checkpointing"] = estimate_training(
            s, objective=objective, micro_batch_size=micro_batch_size, max_seq_len=max_seq_len, dtype=dtype,
            master_weights_fp32=master_weights_fp32, activation_checkpointing=not activation_checkpointing,
            reshard_after_forward=reshard_after_forward, cpu_offload=cpu_offload, hybrid_shard=hybrid_shard,
            nnodes=nnodes, nproc_per_node=nproc_per_node, device=device, ref_micro_batch_size=ref_micro_batch_size,
            dpo_step_tokens=dpo_step_tokens, grad_accum_steps=grad_accum_steps, _other_checkpointing=False).total
    more = "more GPUs (--nnodes)"
    if hybrid_shard and nnodes > 1:
        state_help = f"hybrid_shard=false (shard over all {world} GPUs), cpu_offload=true or {more}"
    elif not sharded:
        state_help = "more GPUs (--nproc_per_node / --nnodes)"
    else:
        state_help = f"cpu_offload=true or {more}"
    shrink = (f"micro_batch_size={micro_batch_size // 2}" if micro_batch_size > 1
              else f"max_seq_len={max_seq_len // 2}")
    plan.advice_for = {
        "parameters": state_help, "gradients": state_help, "optimizer state": state_help,
        "gathered parameters": ("reshard_after_forward=true" if not reshard_after_forward
                                else "fixed by the model shape (root + 2 blocks); free the other terms"),
        "unsharded gradients": "fixed by the model shape (LM head + 1 block); free the other terms",
        "autocast weight copies": "more GPUs (--nproc_per_node) to shard the model",
        "activations": (f"activation_checkpointing=true or {shrink}" if not activation_checkpointing else shrink),
        "logits": shrink,
    }
    return plan


def estimate_generation(
    model_config: dict | ModelShape,
    *,
    backend: str = "vllm",
    dtype: str = "auto",
    device: str = "cuda",
    tensor_parallel_size: int = 1,
    pipeline_parallel_size: int = 1,
    gpu_memory_utilization: Optional[float] = None,
    max_model_len: Optional[int] = None,
    kv_cache_dtype: str = "auto",
    kv_cache_gib: Optional[float] = None,
    max_num_batched_tokens: Optional[int] = None,
    max_num_seqs: Optional[int] = None,
    nnodes: int = 1,
    nproc_per_node: int = 1,
    gpu_mem_gb: Optional[float] = None,
    sequences_in_flight: Optional[int] = None,
    recipe: str = "step_search",
) -> Plan:
    """Per-GPU memory of a generation engine (module docstring)."""
    s = model_config if isinstance(model_config, ModelShape) else model_shape(model_config)
    _check_counts(nnodes, nproc_per_node, gpu_mem_gb)
    if backend not in ("vllm", "native"):
        raise PlanError(f"backend must be vllm or native for a plan, got {backend!r}")
    if device not in ("cuda", "cpu"):
        raise PlanError(f"device must be cuda or cpu for a plan, got {device!r}")
    tp, pp = tensor_parallel_size, pipeline_parallel_size
    for key, v in (("backend_kwargs.tensor_parallel_size", tp), ("backend_kwargs.pipeline_parallel_size", pp)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise PlanError(f"{key} must be >= 1, got {v!r}")
    if backend == "native" and tp * pp > 1:
        raise PlanError("backend_kwargs.tensor_parallel_size: the native backend runs on one device (use backend=vllm)")
    if tp > 1 and s.heads % tp:
        raise PlanError(f"backend_kwargs.tensor_parallel_size={tp} does not divide num_attention_heads {s.heads}")
    if dtype == "auto":
        ck = str(s.checkpoint_dtype or "bfloat16").lower()
        d = 4 if (device == "cpu" and ck in ("float32", "fp32")) else 2
    else:
        d = dtype_bytes(dtype)
    kvb = d if kv_cache_dtype in (None, "auto") else (1 if str(kv_cache_dtype).startswith("fp8")
                                                      else dtype_bytes(kv_cache_dtype, "backend_kwargs.kv_cache_dtype"))
    max_len = max_model_len or s.max_position_embeddings
    if not max_len:
        raise PlanError("max_model_len: config.json has no max_position_embeddings; set backend_kwargs.max_model_len")
    P = s.n_params
    gpus = tp * pp
    weights = -(-P * d // gpus)
    kv_engine = 2 * s.layers * s.kv_dim * kvb
    kv_gpu = 2 * -(-s.layers // pp) * max(1, s.kv_heads // tp) * s.head_dim * kvb
    notes: list[str] = []
    gpu_mem_bytes = int(gpu_mem_gb * GIB) if (gpu_mem_gb is not None and device == "cuda") else None
    terms = [Term("weights", weights, f"{'bf16' if d == 2 else 'fp32'}, 1/{gpus} of the model" if gpus > 1
                  else f"{'bf16' if d == 2 else 'fp32'}, whole model")]
    fit_problem = None
    advice: dict[str, str] = {}
    if backend == "vllm":
        nbt = max_num_batched_tokens or VLLM_MAX_NUM_BATCHED_TOKENS
        nseq = max_num_seqs or VLLM_MAX_NUM_SEQS
        reserve = (nbt * (2 * s.hidden + 4 * -(-s.intermediate // tp)) * d + nseq * s.vocab * 8
                   + (int(VLLM_CUDA_GRAPHS_GIB * GIB) if device == "cuda" else 0))
        terms.append(Term("vLLM reserve", reserve,
                          f"activations of {nbt} tokens, sampler of {nseq} sequences"
                          + (", CUDA graphs" if device == "cuda" else "")))
        util = gpu_memory_utilization if gpu_memory_utilization is not None else VLLM_GPU_MEMORY_UTILIZATION
        if not 0 < util <= 1:
            raise PlanError(f"backend_kwargs.gpu_memory_utilization must be in (0, 1], got {util}")
        if kv_cache_gib is not None:
            kv = int(kv_cache_gib * GIB)
            kdet = "kv_cache_gib"
        elif device == "cpu":
            kv = int(VLLM_CPU_KV_CACHE_GIB * GIB)
            kdet = f"{VLLM_CPU_KV_CACHE_GIB} GiB (the CPU default)"
        elif gpu_mem_bytes is not None:
            kv = max(0, int(util * gpu_mem_bytes) - weights - reserve)
            kdet = f"the rest of gpu_memory_utilization {util} x {gib(gpu_mem_bytes)}"
        else:
            kv = 0
            kdet = "unknown without --gpu_mem_gb"
        terms.append(Term("KV cache", kv, kdet))
        headroom = (gpu_mem_bytes - int(util * gpu_mem_bytes)) if gpu_mem_bytes is not None else 0
        tp_fit = next((k for k in (1, 2, 4, 8, 16) if s.heads % k == 0 and gpu_mem_bytes is not None
                       and -(-P * d // (k * pp)) + reserve + max_len * 2 * (s.layers // pp) * max(1, s.kv_heads // k)
                       * s.head_dim * kvb < util * gpu_mem_bytes), None)
        bigger_tp = (f"backend_kwargs.tensor_parallel_size={tp_fit}" if tp_fit and tp_fit > tp
                     else "a larger backend_kwargs.tensor_parallel_size")
        advice = {"weights": bigger_tp, "vLLM reserve": "smaller backend_kwargs.max_num_batched_tokens / max_num_seqs",
                  "KV cache": f"{bigger_tp} or a smaller backend_kwargs.max_model_len"}
        if gpu_mem_bytes is not None:
            avail = int(util * gpu_mem_bytes)
            if weights + reserve + (kv if kv_cache_gib is not None else 0) > avail:
                fit_problem = (f"weights {gib(weights)} + vLLM reserve {gib(reserve)}"
                               + (f" + kv_cache_gib {gib(kv)}" if kv_cache_gib is not None else "")
                               + f" exceed gpu_memory_utilization {util} x {gib(gpu_mem_bytes)} = {gib(avail)}; "
                               + bigger_tp)
            elif kv < max_len * kv_gpu:
                fit_problem = (f"the KV cache {gib(kv)} holds {kv // kv_gpu} tokens, less than one max_model_len "
                               f"{max_len} sequence; {advice['KV cache']}")
    else:
        headroom = _headroom(gpu_mem_bytes)
        if gpu_mem_bytes is not None:
            kv = max(0, gpu_mem_bytes - headroom - weights)
        else:
            kv = 0
        terms.append(Term("KV cache", kv, "what is left of the GPU (native backend, grows with the batch)"))
        advice = {"weights": "backend=vllm with backend_kwargs.tensor_parallel_size", "KV cache": "backend=vllm"}
        if gpu_mem_bytes is not None and weights > gpu_mem_bytes - headroom:
            fit_problem = f"weights {gib(weights)} exceed {gib(gpu_mem_bytes - headroom)} usable; {advice['weights']}"
    kv_tokens = kv // kv_gpu if kv_gpu else 0
    if backend == "vllm":
        kv_tokens = kv_tokens // VLLM_BLOCK_TOKENS * VLLM_BLOCK_TOKENS
    plan = Plan(recipe, "generate", s, device, nnodes, nproc_per_node, terms, notes=notes,
                gpu_mem_bytes=gpu_mem_bytes, headroom_bytes=headroom, fit_problem=fit_problem, advice_for=advice)
    plan.settings = {"backend": backend, "dtype": dtype, "tensor_parallel_size": tp, "pipeline_parallel_size": pp,
                     "max_model_len": max_len, "kv_cache_dtype": kv_cache_dtype,
                     "gpu_memory_utilization": gpu_memory_utilization}
    plan.values = {"n_params": P, "kv_bytes_per_token_engine": kv_engine, "kv_bytes_per_token_gpu": kv_gpu,
                   "kv_tokens": kv_tokens, "max_len_sequences": kv_tokens // max_len,
                   "engines": nnodes * nproc_per_node, "gpus_per_engine": gpus,
                   "gpus_per_node": nproc_per_node * gpus, "sequences_in_flight": sequences_in_flight}
    return plan


def estimate(model_config: dict | ModelShape, recipe: str, **settings: Any) -> Plan:
    """The plan of ``recipe`` (a training or a generation recipe) with its settings as keywords
    (those of :func:`estimate_training` / :func:`estimate_generation`)."""
    if recipe in TRAIN_RECIPES:
        return estimate_training(model_config, objective=TRAIN_RECIPES[recipe], recipe=recipe, **settings)
    if recipe in GENERATION_RECIPES:
        return estimate_generation(model_config, recipe=recipe, **settings)
    raise PlanError(f"no memory plan for recipe {recipe!r} (plans exist for: "
                    f"{', '.join(list(TRAIN_RECIPES) + list(GENERATION_RECIPES))})")


# ----------------------------------------------------------------------------- from a recipe config


def _recipe_schema(recipe: str) -> type:
    from psr.config import RECIPES_DIR

    path = RECIPES_DIR / f"{recipe}.py"
    name = f"_psr_plan_recipe_{recipe}"
    mod = sys.modules.get(name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclass annotations resolve through sys.modules
        spec.loader.exec_module(mod)
    for obj in vars(mod).values():
        if (isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == name
                and obj.__name__.endswith("Config")):
            return obj
    raise PlanError(f"{path}: no recipe config dataclass found")


def load_recipe_config(recipe: str, config: str, overrides: Sequence[str] = ()) -> Any:
    """The recipe's validated config (its schema, the YAML, the overrides); required keys the plan
    does not need (output_dir, model_dir) get a placeholder when unset."""
    from omegaconf import OmegaConf

    from psr.config import ConfigError, load_config, resolve_config_path

    schema = _recipe_schema(recipe)
    try:
        path = resolve_config_path(config)
        raw = OmegaConf.load(path)
    except ConfigError as e:
        raise PlanError(str(e)) from None
    except Exception as e:
        raise PlanError(f"{config}: cannot parse YAML: {e}") from None
    given = {o.split("=", 1)[0] for o in overrides}
    base = OmegaConf.structured(schema)
    extra = []
    for k in OmegaConf.missing_keys(base):
        if k in given:
            continue
        if hasattr(raw, "keys") and k in raw and not OmegaConf.is_missing(raw, k):
            continue
        extra.append(f"{k}=__unset__")
    try:
        return load_config(schema, path, list(overrides) + extra)
    except ConfigError as e:
        raise PlanError(str(e)) from None


def read_model_config(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir() or p.suffix != ".json":  # a model dir (existing or not)
        p = p / "config.json"
    if not p.is_file():
        raise PlanError(f"{p}: no such file (the plan needs the model's config.json: --model_dir DIR or "
                        "--model_config FILE)")
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise PlanError(f"{p}: not valid JSON: {e}") from None


def plan_from_config(recipe: str, config: str, overrides: Sequence[str] = (), *, nnodes: int = 1,
                     nproc_per_node: int = 1, gpu_mem_gb: Optional[float] = None, model_dir: Optional[str] = None,
                     model_config: Optional[str] = None) -> Plan:
    """The plan of a recipe config, as ``python -m psr.plan`` prints it."""
    from omegaconf import OmegaConf

    if recipe.endswith(".py"):
        recipe = Path(recipe).stem
    if recipe not in TRAIN_RECIPES and recipe not in GENERATION_RECIPES:
        raise PlanError(f"no memory plan for recipe {recipe!r} (plans exist for: "
                        f"{', '.join(list(TRAIN_RECIPES) + list(GENERATION_RECIPES))})")
    _check_counts(nnodes, nproc_per_node, gpu_mem_gb)
    cfg = load_recipe_config(recipe, config, overrides)
    src = model_config or model_dir
    if src is None:
        md = cfg.get("model_dir")
        if not md or "__unset__" in str(md) or md == "tiny":
            raise PlanError("no model config.json: pass --model_dir DIR or --model_config FILE "
                            "(the config's model_dir is not set)")
        src = md
    shape = model_shape(read_model_config(src), str(src))
    device = "cpu" if str(cfg.get("device", "auto")) == "cpu" else "cuda"
    if recipe in TRAIN_RECIPES:
        kw = dict(micro_batch_size=cfg.micro_batch_size, max_seq_len=cfg.max_seq_len, dtype=cfg.dtype,
                  master_weights_fp32=cfg.master_weights_fp32, activation_checkpointing=cfg.activation_checkpointing,
                  reshard_after_forward=cfg.reshard_after_forward, cpu_offload=cfg.cpu_offload,
                  hybrid_shard=cfg.hybrid_shard)
        if recipe == "step_dpo":
            kw["ref_micro_batch_size"] = cfg.ref_micro_batch_size
        kw["grad_accum_steps"] = max(1, cfg.batch_size // (cfg.micro_batch_size * nnodes * nproc_per_node))
        plan = estimate(shape, recipe, nnodes=nnodes, nproc_per_node=nproc_per_node, device=device,
                        gpu_mem_gb=gpu_mem_gb, **kw)
    else:
        bk = OmegaConf.to_container(cfg.backend_kwargs, resolve=True) or {}
        if not isinstance(bk, dict):
            raise PlanError("backend_kwargs must be a mapping")
        backend = cfg.backend
        if backend == "auto":  # on a GPU, auto = vLLM (psr.generation.factory); on CPU assume vLLM-cpu
            backend = "vllm"
        if recipe == "step_search":
            q, w, orders = cfg.search.questions_in_flight, cfg.search.width, cfg.search.judge_orders
        elif cfg.mode == "tts":
            q, w, orders = cfg.tts.questions_in_flight, cfg.tts.width, cfg.tts.judge_orders
        else:
            q, w, orders = cfg.batch_size, 1, 0
        in_flight = max(q * w, q * (w * (w - 1) // 2) * orders)
        plan = estimate(
            shape, recipe, backend=backend, dtype=cfg.dtype, device=device,
            tensor_parallel_size=bk.get("tensor_parallel_size", 1),
            pipeline_parallel_size=bk.get("pipeline_parallel_size", 1),
            gpu_memory_utilization=bk.get("gpu_memory_utilization"), max_model_len=bk.get("max_model_len"),
            kv_cache_dtype=bk.get("kv_cache_dtype", "auto"), kv_cache_gib=bk.get("kv_cache_gib"),
            max_num_batched_tokens=bk.get("max_num_batched_tokens"), max_num_seqs=bk.get("max_num_seqs"),
            nnodes=nnodes, nproc_per_node=nproc_per_node, gpu_mem_gb=gpu_mem_gb, sequences_in_flight=in_flight)
    plan.settings["config"] = config
    return plan


# ----------------------------------------------------------------------------- printing


def format_plan(plan: Plan) -> str:
    s = plan.shape
    out = [f"memory plan: {plan.recipe} ({plan.settings.get('config', 'settings given')})",
           f"model: {s.model_type}, {s.n_params / 1e9:.2f} B parameters (hidden {s.hidden}, intermediate "
           f"{s.intermediate}, {s.layers} layers, {s.heads} heads / {s.kv_heads} kv heads x {s.head_dim}, vocab "
           f"{s.vocab}, {'tied' if s.tied else 'untied'} embeddings); block {s.block_params:,}, root {s.root_params:,}"]
    unit = "GPU" if plan.device == "cuda" else "process"
    if plan.kind == "train":
        st = plan.settings
        out.append(f"world: {plan.nnodes} node(s) x {plan.nproc_per_node} = {plan.world} {unit}s, {st['mesh']}")
        out.append(f"settings: dtype {st['dtype']}, master_weights_fp32 {str(st['master_weights_fp32']).lower()}, "
                   f"activation_checkpointing {str(st['activation_checkpointing']).lower()}, reshard_after_forward "
                   f"{str(st['reshard_after_forward']).lower()}, cpu_offload {str(st['cpu_offload']).lower()}, "
                   f"hybrid_shard {str(st['hybrid_shard']).lower()}; micro_batch_size {st['micro_batch_size']} x "
                   f"max_seq_len {st['max_seq_len']}")
    else:
        v, st = plan.values, plan.settings
        out.append(f"engines: {v['engines']} ({plan.nnodes} node(s) x {plan.nproc_per_node}), each on "
                   f"{v['gpus_per_engine']} GPU(s) (tensor_parallel_size {st['tensor_parallel_size']}, "
                   f"pipeline_parallel_size {st['pipeline_parallel_size']}): {v['gpus_per_node']} GPU(s) per node; "
                   f"backend {st['backend']}, max_model_len {st['max_model_len']}")
    width = max(len(t.name) for t in plan.terms) + 2
    out.append(f"per {unit}:")
    for t in plan.terms:
        out.append(f"  {t.name:<{width}}{t.bytes:>18,} B {t.bytes / GIB:>8.2f} GiB   {t.detail}")
    if plan.kind == "train":
        if plan.overlap_bytes:
            ov = -plan.overlap_bytes
            out.append(f"  {'(not held at once)':<{width}}{ov:>18,} B {ov / GIB:>8.2f} GiB"
                       f"   gradients vs activations + logits: one micro-batch per optimizer step")
        if plan.peak_override and plan.peak_override > sum(t.bytes for t in plan.terms) - plan.overlap_bytes:
            out.append(f"  {'(a larger peak)':<{width}}{'':>18}   {'':>8}       see the notes")
        out.append(f"  {'total':<{width}}{plan.total:>18,} B {plan.total / GIB:>8.2f} GiB")
        v = plan.values
        other = "without" if plan.settings["activation_checkpointing"] else "with"
        alt = v["activations_full"] if other == "without" else v["activations_checkpointed"]
        out.append(f"activations {other} checkpointing: {gib(alt)} (total {gib(v['total_other_checkpointing'])})")
        if "reference_pass" in v:
            out.append(f"reference pass (before training): {gib(v['reference_pass'])}")
        out.append(f"optimizer step: {gib(v['optimizer_step'])}; setup (sharded load, one whole tensor in flight): "
                   f"{gib(v['setup'])}")
        if plan.host_bytes_per_node is not None:
            out.append(f"host RAM per node (cpu_offload: {plan.nproc_per_node} ranks' parameters, gradients and "
                       f"optimizer state): {gib(plan.host_bytes_per_node)}")
        elif plan.device == "cpu":
            out.append(f"host RAM per node: {gib(plan.total * plan.nproc_per_node)}")
    else:
        v = plan.values
        if not v["kv_tokens"] and plan.fits is None:
            out.append(f"KV per token: {v['kv_bytes_per_token_engine']:,} B per engine, "
                       f"{v['kv_bytes_per_token_gpu']:,} B "
                       f"per GPU (the cache size depends on the memory given: --gpu_mem_gb)")
        else:
            out.append(f"KV per token: {v['kv_bytes_per_token_engine']:,} B per engine, "
                       f"{v['kv_bytes_per_token_gpu']:,} B "
                       f"per GPU; the KV cache holds {v['kv_tokens']:,} tokens = {v['max_len_sequences']:,} sequences "
                       f"of max_model_len {plan.settings['max_model_len']}"
                       + (f" (the recipe keeps up to {v['sequences_in_flight']:,} sequences in flight; the engine "
                          f"queues what does not fit)" if v.get("sequences_in_flight") else ""))
    for n in plan.notes:
        out.append(f"note: {n}")
    if plan.gpu_mem_bytes is not None and plan.device == "cuda":
        if plan.kind == "train":
            out.append(f"GPU {gib(plan.gpu_mem_bytes)} - headroom {gib(plan.headroom_bytes)} (CUDA context + NCCL "
                       f"{HEADROOM_FIXED_GIB:g} GiB, {HEADROOM_FRACTION:.0%} fragmentation) = "
                       f"{gib(plan.usable)} usable")
        else:
            out.append(f"GPU {gib(plan.gpu_mem_bytes)}; outside the engine's share: {gib(plan.headroom_bytes)}")
    if plan.kind == "generate" and plan.fits:
        out.append(f"fits: weights + reserve + KV cache within the engine's share, "
                   f"{plan.values['max_len_sequences']:,} max_model_len sequences at once")
    else:
        out.append(plan.verdict())
    return "\n".join(out)


def header_comment(plan: Plan, command: str, width: int = 100) -> list[str]:
    """The "Memory plan" comment block of a config header (configs/qwen2_5_math_*): the command,
    the per-GPU terms in GiB and the verdict. tests/test_plan.py checks the committed headers."""
    import textwrap

    parts = []
    for t in plan.terms:
        extra = ""
        if t.name == "activations" and plan.kind == "train":
            ck = plan.settings["activation_checkpointing"]
            alt = plan.values["activations_full" if ck else "activations_checkpointed"]
            extra = f" ({'checkpointed' if ck else 'no checkpointing'}; {alt / GIB:.2f} {'without' if ck else 'with'})"
        if t.name == "weights":
            extra = f" (tensor_parallel_size {plan.settings['tensor_parallel_size']})"
        parts.append(f"{t.name} {t.bytes / GIB:.2f}{extra}")
    if plan.overlap_bytes:
        parts.append(f"-{plan.overlap_bytes / GIB:.2f} (gradients fill in as activations free: one micro-batch "
                     "per step)")
    body = f"per GPU, GiB: {', '.join(parts)}"
    if plan.kind == "train":
        tail = f"total {plan.total / GIB:.1f} of {plan.usable / GIB:.1f} usable ({plan.gpu_mem_bytes / GIB:g} - " \
               f"{plan.headroom_bytes / GIB:.1f} headroom)"
        if plan.host_bytes_per_node is not None:
            tail += f"; host RAM per node {plan.host_bytes_per_node / GIB:.1f}"
    else:
        v = plan.values
        tail = (f"KV {v['kv_tokens']:,} tokens ({v['kv_bytes_per_token_gpu']:,} B/token/GPU) = "
                f"{v['max_len_sequences']:,} sequences of {plan.settings['max_model_len']}")
    verdict = "fits" if plan.fits else ("DOES NOT FIT" if plan.fits is False else "no verdict")
    lines = [f"# Memory plan ({command}):"]
    lines += textwrap.wrap(f"{body}; {tail}: {verdict}", width=width - 4,
                           initial_indent="#   ", subsequent_indent="#   ", break_on_hyphens=False)
    return lines


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (main catches it)
        raise PlanError(message)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = _Parser(prog="python -m psr.plan", description="Per-GPU memory plan of a recipe config (no weights read).")
    ap.add_argument("recipe", help="eft_ift_sft | step_dpo | prm_train | step_search | eval")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    ap.add_argument("--config", required=True, help="family/recipe or a YAML path")
    ap.add_argument("--nnodes", type=int, default=1)
    ap.add_argument("--nproc_per_node", type=int, default=1)
    ap.add_argument("--gpu_mem_gb", type=float, default=None, help="GiB per GPU (e.g. 80 for an H100 80GB)")
    ap.add_argument("--model_dir", default=None, help="model dir whose config.json is read (weights are not)")
    ap.add_argument("--model_config", default=None, help="a config.json to use instead of the model dir's")
    ap.add_argument("--header", action="store_true",
                    help="print the plan as the '# Memory plan' comment block of a config header")
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        args = ap.parse_intermixed_args(argv)
        bad = [o for o in args.overrides if "=" not in o or o.startswith("=")]
        if bad:
            raise PlanError(f"unexpected argument(s) {bad}: overrides are key=value")
        plan = plan_from_config(args.recipe, args.config, args.overrides, nnodes=args.nnodes,
                                nproc_per_node=args.nproc_per_node, gpu_mem_gb=args.gpu_mem_gb,
                                model_dir=args.model_dir, model_config=args.model_config)
    except PlanError as e:
        print(f"psr plan: error: {e}", file=sys.stderr)
        return 2
    if args.header:
        cmd = " ".join(["python -m psr.plan", args.recipe, "--config", args.config, "--nnodes", str(args.nnodes),
                        "--nproc_per_node", str(args.nproc_per_node)]
                       + (["--gpu_mem_gb", f"{args.gpu_mem_gb:g}"] if args.gpu_mem_gb is not None else [])
                       + (["--model_dir", args.model_dir] if args.model_dir else [])
                       + (["--model_config", args.model_config] if args.model_config and not args.model_dir else [])
                       + list(args.overrides))
        print("\n".join(header_comment(plan, cmd)))
    else:
        print(format_plan(plan))
    return 1 if plan.fits is False else 0


if __name__ == "__main__":
    sys.exit(main())
