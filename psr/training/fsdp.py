"""Model setup for training: device, dtype, activation checkpointing and FSDP2 sharding.

API (stable):

    setup = setup_model(model_dir, device="auto", dtype="float32", activation_checkpointing=False,
                        master_weights_fp32=True, reshard_after_forward=True, cpu_offload=False,
                        hybrid_shard=False)
        -> ModelSetup(model, tokenizer, device, compute_dtype, sharded, world_size)
    with setup.autocast():            # bf16 compute where FSDP2 mixed precision does not apply
        out = setup.model(input_ids=..., attention_mask=...)
    clip_grad_norm(setup.model, max_norm) -> float    # global norm over all shards
    psr.models.hf.save_model_dir(setup.model, ...)    # collective when sharded; see there

No rank ever holds the whole model. The model is built on the meta device from ``config.json``
(no memory, no random init), activation checkpointing is switched on, and under torchrun
(``WORLD_SIZE`` > 1) ``torch.distributed.fsdp.fully_shard`` wraps each decoder block, then the root
(embeddings, final norm, head). Only then is memory allocated, each rank for its own shards, and
filled from the dir's safetensors, each rank reading only its own rows of each tensor
(psr.models.hf.load_weights_). Rotary ``inv_freq`` and other non-persistent buffers are recomputed;
tied embeddings stay one parameter.

Why per-rank slice reads and not rank 0 reading and broadcasting
(``set_model_state_dict(full_state_dict=True, broadcast_from_rank0=True)``): a broadcast needs the
full state dict in rank 0's host memory (144 GB for the 72B model in bf16, 288 GB in fp32, on a node
whose other 7 ranks load at the same time) and sends every byte through one process; slice reads
need no more than one tensor's slice per rank beyond the shards themselves, every rank reads in
parallel from the memory-mapped files, and the bytes read over all ranks are one copy of the
checkpoint. bench/fsdp_memory.py measures the peaks.

gloo on CPU, nccl on GPU (psr.distributed.init_distributed). With a single process there is nothing
to shard across (a 1-rank mesh would need a process group just for itself), so the plain module is
trained on the same meta-build + load path: the code above it (loss scaling, grad clipping,
checkpoint state dicts via torch.distributed.checkpoint.state_dict) is the same in both cases.

Memory keys (psr.training.loop.TrainConfig documents each; ``python -m psr.plan`` estimates them):
``reshard_after_forward`` (free a block's gathered parameters after forward: one block's full
parameters live at a time), ``cpu_offload`` (FSDP2 CPUOffloadPolicy: shards, gradients and optimizer
state in host memory), ``hybrid_shard`` (2-D mesh: replicate across nodes, shard within a node; needs
whole nodes), ``activation_checkpointing``. A launch whose nodes disagree on ``--nproc_per_node`` is
refused with one line (check_launch).

Precision. ``dtype`` is the compute dtype. ``bfloat16`` with ``master_weights_fp32=True`` (default)
keeps fp32 parameters and optimizer state and computes in bf16: FSDP2's MixedPrecisionPolicy
(param bf16, gradient reduction fp32) when sharded, ``torch.autocast`` otherwise. This matters at
the paper's learning rates (1e-6 updates vanish in bf16 weights). ``master_weights_fp32=False``
stores the parameters themselves in bf16 (torchtune's full_finetune behaviour; half the memory).
``dtype="auto"`` is bf16 on a CUDA device that supports it, else float32.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist

from psr import distributed as D
from psr.config import ConfigError
from psr.models.hf import build_meta_model, decoder_layers, load_model_config, load_tokenizer, materialize_, torch_dtype


@dataclass
class ModelSetup:
    model: Any
    tokenizer: Any
    device: torch.device
    compute_dtype: torch.dtype
    sharded: bool
    world_size: int
    use_autocast: bool = False

    def autocast(self):
        """bf16 autocast when the compute dtype is not carried by the parameters or FSDP2."""
        if self.use_autocast:
            return torch.autocast(device_type=self.device.type, dtype=self.compute_dtype)
        return contextlib.nullcontext()


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    dt = torch_dtype(dtype)
    if dt == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("dtype=bfloat16: this CUDA device does not support bf16 (use dtype=float32)")
    if dt == torch.float16:
        raise ValueError("dtype=float16 is not supported for training (no loss scaling); use bfloat16 or float32")
    return dt


def check_launch(hybrid_shard: bool = False) -> None:
    """Refuse an inconsistent torchrun launch before any work (one line naming the settings):
    nodes with different ``--nproc_per_node`` (WORLD_SIZE != nodes × LOCAL_WORLD_SIZE), or
    ``hybrid_shard`` on a world that is not whole nodes."""
    env = {k: os.environ.get(k) for k in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE")}
    if not env["WORLD_SIZE"] or int(env["WORLD_SIZE"]) <= 1:
        return
    world = int(env["WORLD_SIZE"])
    local = int(env["LOCAL_WORLD_SIZE"] or world)
    nodes = int(env["GROUP_WORLD_SIZE"] or 1)
    if env["GROUP_WORLD_SIZE"] and nodes * local != world:
        raise ConfigError(
            f"inconsistent launch: WORLD_SIZE={world} but GROUP_WORLD_SIZE={nodes} nodes x "
            f"LOCAL_WORLD_SIZE={local} = {nodes * local} (start every node with the same --nproc_per_node)")
    if hybrid_shard and world % local:
        raise ConfigError(f"hybrid_shard=true needs whole nodes: WORLD_SIZE={world} is not a multiple of "
                          f"LOCAL_WORLD_SIZE={local}")


def _mesh(dev: torch.device, world: int, hybrid_shard: bool):
    """1-D mesh over every rank, or with ``hybrid_shard`` a 2-D (replicate across nodes, shard
    within a node) mesh: FSDP2 then does HSDP."""
    from torch.distributed.device_mesh import init_device_mesh

    if not hybrid_shard:
        return init_device_mesh(dev.type, (world,))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return init_device_mesh(dev.type, (world // local, local), mesh_dim_names=("replicate", "shard"))


def setup_model(
    model_dir: str,
    device: str = "auto",
    dtype: str = "float32",
    activation_checkpointing: bool = False,
    master_weights_fp32: bool = True,
    reshard_after_forward: bool = True,
    cpu_offload: bool = False,
    hybrid_shard: bool = False,
) -> ModelSetup:
    """Build ``model_dir``'s model for training on this rank without ever holding it whole (see
    module docstring). Joins the process group first when launched by torchrun."""
    check_launch(hybrid_shard)
    config = load_model_config(model_dir)  # before any collective: a bad dir fails on every rank alike
    tok = load_tokenizer(model_dir)
    dev = D.default_device(device)
    D.init_distributed(dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    world = D.get_world_size()
    if cpu_offload and dev.type == "cpu" and world > 1:
        raise ConfigError("cpu_offload=true needs a GPU (FSDP2's CPUOffloadPolicy moves shards between host and "
                          "accelerator); on device=cpu the parameters already live in host memory")
    compute = resolve_dtype(dtype, dev)
    param_dtype = torch.float32 if (master_weights_fp32 or compute == torch.float32) else compute
    model = build_meta_model(config, dtype=param_dtype)
    if activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    sharded = world > 1
    use_autocast = False
    init_device = dev
    if sharded:
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        kw: dict[str, Any] = {"mesh": _mesh(dev, world, hybrid_shard), "reshard_after_forward": reshard_after_forward}
        if compute != param_dtype:
            kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)
        if cpu_offload:
            kw["offload_policy"] = CPUOffloadPolicy()
            init_device = torch.device("cpu")
        for layer in decoder_layers(model):
            fully_shard(layer, **kw)
        fully_shard(model, **kw)
    else:
        use_autocast = compute != param_dtype
    materialize_(model, model_dir, init_device, buffer_device=dev)
    model.train()
    return ModelSetup(model, tok, dev, compute, sharded, world, use_autocast)


def clip_grad_norm(model: Any, max_norm: Optional[float]) -> float:
    """Clip gradients to a global norm ``max_norm`` (no clipping when None/<= 0, the norm is still
    returned). Works on plain and FSDP2 (DTensor) parameters."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    limit = float(max_norm) if max_norm and max_norm > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, limit)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (identity with one process)."""
    if D.is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
