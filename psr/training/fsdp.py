"""Model setup for training: device, dtype, activation checkpointing and FSDP2 sharding.

API (stable):

    setup = setup_model(model_dir, device="auto", dtype="float32", activation_checkpointing=False,
                        master_weights_fp32=True)
        -> ModelSetup(model, tokenizer, device, compute_dtype, sharded, world_size)
    with setup.autocast():            # bf16 compute where FSDP2 mixed precision does not apply
        out = setup.model(input_ids=..., attention_mask=...)
    full_state_dict(setup)            # collective; the full (unsharded) state dict on rank 0 ({} elsewhere)
    clip_grad_norm(setup.model, max_norm) -> float    # global norm over all shards

Sharding. Under torchrun (``WORLD_SIZE`` > 1) the model is wrapped with
``torch.distributed.fsdp.fully_shard`` on a 1-D mesh over all ranks, first each decoder block,
then the root (embeddings, final norm, head). gloo on CPU, nccl on GPU
(psr.distributed.init_distributed). With a single process there is nothing to shard across, and
a 1-rank mesh would need a process group just for itself, so the plain module is trained: the code
path above it (loss scaling, grad clipping, checkpoint state dicts via
torch.distributed.checkpoint.state_dict) is the same in both cases.

Precision. ``dtype`` is the compute dtype. ``bfloat16`` with ``master_weights_fp32=True`` (default)
keeps fp32 parameters and optimizer state and computes in bf16: FSDP2's MixedPrecisionPolicy
(param bf16, gradient reduction fp32) when sharded, ``torch.autocast`` otherwise. This matters at
the paper's learning rates (1e-6 updates vanish in bf16 weights). ``master_weights_fp32=False``
stores the parameters themselves in bf16 (torchtune's full_finetune behaviour; half the memory).
``dtype="auto"`` is bf16 on a CUDA device that supports it, else float32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist

from psr import distributed as D
from psr.models.hf import decoder_layers, load_model_for_training, load_tokenizer, torch_dtype


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
    """Load ``model_dir`` for training on this rank (see module docstring). Joins the process
    group first when launched by torchrun."""
    dev = D.default_device(device)
    D.init_distributed(dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    world = D.get_world_size()
    compute = resolve_dtype(dtype, dev)
    param_dtype = torch.float32 if (master_weights_fp32 or compute == torch.float32) else compute
    tok = load_tokenizer(model_dir)
    model = load_model_for_training(model_dir, dtype=param_dtype)
    if activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    sharded = world > 1
    use_autocast = False
    if sharded:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(dev.type, (world,))
        mp = None
        if compute != param_dtype:
            mp = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)
        kw = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
        if mp is not None:
            kw["mp_policy"] = mp
        model.to(dev)
        for layer in decoder_layers(model):
            fully_shard(layer, **kw)
        fully_shard(model, **kw)
    else:
        model.to(dev)
        use_autocast = compute != param_dtype
    model.train()
    return ModelSetup(model, tok, dev, compute, sharded, world, use_autocast)


def full_state_dict(setup: ModelSetup | Any) -> dict[str, torch.Tensor]:
    """The full state dict on CPU on rank 0 (an empty dict on other ranks). Collective when
    sharded: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    model = setup.model if isinstance(setup, ModelSetup) else setup
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd if D.is_rank0() else {}


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
