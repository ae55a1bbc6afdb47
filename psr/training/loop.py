"""The training loop shared by the training recipes (eft_ift_sft, step_dpo, prm_train).

API (stable):

    @dataclass class TrainConfig          # the common config keys; a recipe's schema subclasses it
    setup = setup_from_config(cfg)        # psr.training.fsdp.setup_model with the cfg keys
    result = train(cfg, setup, examples, lengths, collate, loss_fn, epoch_indices=None)
        -> TrainResult(losses, steps, final_dir, metrics_path, setup)

* ``examples``: any sequence; ``lengths[i]`` is example i's token count (batch planning, see
  psr.training.batching). ``epoch_indices(epoch) -> list[int]``: the examples of an epoch (e.g. a
  data mixture re-drawn per epoch); default: all of them.
* ``collate(list_of_examples) -> dict``: tensors (moved to the device by the loop) plus two ints,
  ``n_units`` (what the loss is averaged over: response tokens for SFT, pairs for DPO) and
  ``n_tokens`` (non-padding tokens, for tokens/s).
* ``loss_fn(model, batch) -> (loss_sum, metric_sums)``: the loss *summed* over the micro-batch's
  units and a dict of metric sums (tensors or floats, also summed over units). The loop scales each
  micro-batch loss by ``world_size / global_units`` before backward, so one optimizer step minimises
  the mean over all units of the global batch — identical for any split into micro-batches and
  processes (the FSDP2 gradient reduction averages over ranks, hence the ``world_size``).
  Metrics are logged as global sums / global units. It runs under ``setup.autocast()``.

Every ``log_every_n_steps`` steps the loop logs through ``metric_logger`` (a ``_component_``
block, built on rank 0 only: metrics.jsonl by default, or any torchtune metric logger, see
psr.training.metrics): loss, lr, grad_norm, tokens_per_second (global non-padding tokens / step
wall time), tokens_per_second_per_gpu (the same / world size, torchtune's key), tokens
(cumulative), epoch, step_time_s, the loss_fn metrics, and with ``log_peak_memory_stats`` rank 0's
peak memory in GiB (peak_memory_rss; on CUDA also peak_memory_active / _alloc / _reserved since
the previous logging step). A tqdm bar on rank 0 shows step, loss, lr.

Saves: HF model dir ``epoch_<e>`` after each epoch, ``step_<n>`` every ``save_every_n_steps``,
``final`` -> the last one; resume state beside them (psr.training.checkpoint). When the output dir
holds resume state (a re-run the recipe's manifest check let through; ``resume_from_checkpoint``
is implied) the run restores weights, optimizer, scheduler, RNG and its position in the epoch's
batch plan, and continues with exactly the batches and losses an uninterrupted run would have had.

Fault injection for tests: environment variable ``PSR_FAULT_AFTER_STEP=k`` raises
:class:`SimulatedKill` right after step k (after any save due at k), as a kill would.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from omegaconf import MISSING, DictConfig

from psr import distributed as D
from psr.config import ConfigError
from psr.training.batching import global_batches, grad_accum_steps, rank_micro_batches
from psr.models.hf import DEFAULT_MAX_SHARD_SIZE
from psr.training.checkpoint import Checkpointer
from psr.training.fsdp import ModelSetup, all_reduce_sum, clip_grad_norm, setup_model
from psr.training.metrics import DEFAULT_COMPONENT, build_metric_logger, check_metric_logger, memory_stats
from psr.training.optim import build_lr_scheduler, build_optimizer, warmup_steps_for


class SimulatedKill(RuntimeError):
    """Raised by the PSR_FAULT_AFTER_STEP test hook."""


@dataclass
class TrainConfig:
    # Where model dirs (epoch_<e>/, step_<n>/, final), resume_state/ and metrics.jsonl go.
    output_dir: str = MISSING
    # HF model dir to fine-tune (Qwen2/Qwen2.5, Llama-family, ...).
    model_dir: Optional[str] = None
    seed: int = 0
    # auto | cpu | cuda: auto = cuda:<local rank> when available.
    device: str = "auto"
    # Compute dtype: float32 | bfloat16 | auto (bf16 where the device supports it).
    dtype: str = "float32"
    # Keep fp32 parameters + optimizer state under bf16 compute (needed at lr ~1e-6); false = bf16 params.
    master_weights_fp32: bool = True
    # Recompute each decoder block's activations in backward (memory for compute): activations held
    # for backward drop from every layer's intermediates to one hidden state per layer and token.
    activation_checkpointing: bool = False
    # FSDP2: free each block's gathered parameters after its forward and gather them again for
    # backward. true = one block's full parameters live at a time (least memory); false = every
    # block's gathered (compute-dtype) parameters stay from forward to backward (faster, costs a
    # whole unsharded model copy per GPU). Ignored with one process.
    reshard_after_forward: bool = True
    # FSDP2 CPUOffloadPolicy: sharded parameters, gradients and optimizer state live in host memory
    # and the optimizer step runs on the CPU; the GPU holds only the blocks being computed and the
    # activations (the 72B fallback when the shards do not fit; slower). Ignored with one process.
    cpu_offload: bool = False
    # 2-D device mesh for multi-node runs (HSDP): shard within a node (LOCAL_WORLD_SIZE GPUs),
    # replicate across nodes. Parameter, gradient and optimizer memory per GPU is then 1/gpus-per-node
    # of the model instead of 1/all-GPUs, but the big all-gathers stay on the fast intra-node links.
    # false = one flat mesh over every rank (least memory).
    hybrid_shard: bool = False
    # Saved model dirs are split into model-0000k-of-0000N.safetensors files of at most this size
    # (with model.safetensors.index.json), written one tensor at a time without gathering the model.
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE
    epochs: int = 1
    # Stop after this many optimizer steps in total (null = all epochs); also sets the LR schedule length.
    max_steps: Optional[int] = None
    # Global batch: examples per optimizer step over all processes (paper: 32).
    batch_size: int = 32
    # Examples per forward pass per process; grad accumulation = batch_size / (micro_batch_size * world).
    micro_batch_size: int = 4
    lr: float = 1e-5
    weight_decay: float = 0.0
    adam_betas: list = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    # Warmup: warmup_steps if set, else ceil(warmup_ratio * total steps); then cosine decay to min_lr_ratio * lr.
    warmup_steps: Optional[int] = None
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0
    # Gradient clipping to this global norm (null or 0 = no clipping; the norm is still logged).
    max_grad_norm: Optional[float] = 1.0
    # Group examples of similar length into the same step (less padding); false = plain shuffle.
    length_grouped: bool = True
    # Also save an HF model dir (and resume state) every n optimizer steps (null = only per epoch).
    save_every_n_steps: Optional[int] = None
    # dtype of saved model dirs (null = the training parameter dtype), e.g. bfloat16 for vLLM.
    save_dtype: Optional[str] = None
    # Kept for torchtune-style commands: a plain re-run into the same output_dir already continues
    # from <output_dir>/resume_state when it exists (the manifest check refuses a different run);
    # true only adds a line when there is no checkpoint to continue.
    resume_from_checkpoint: bool = False
    # The metric logger (rank 0), a _component_ block: psr.training.metrics.JsonlLogger writes
    # <output_dir>/metrics.jsonl; torchtune's plug in as they are (metric_logger._component_=
    # torchtune.training.metric_logging.WandBLogger | TensorBoardLogger | StdoutLogger |
    # MLFlowLogger | DiskLogger, plus their keys); psr.training.metrics.MultiLogger takes a list.
    metric_logger: Any = field(default_factory=lambda: {"_component_": DEFAULT_COMPONENT})
    log_every_n_steps: int = 1
    # Log rank 0's peak memory (RSS; CUDA allocator peaks where training runs on CUDA) per logging step.
    log_peak_memory_stats: bool = True
    # tqdm progress bar on rank 0.
    progress_bar: bool = True


@dataclass
class TrainResult:
    losses: list[float]
    steps: int
    final_dir: Optional[Path]
    metrics_path: Optional[Path]  # the metrics.jsonl written (None if metric_logger writes none)
    setup: Optional[ModelSetup] = None  # the trained model (still sharded under torchrun)


def setup_from_config(cfg: Any) -> ModelSetup:
    if getattr(cfg, "metric_logger", None) is not None:  # a misspelt _component_ fails before the model loads
        check_metric_logger(cfg.metric_logger)
    return setup_model(
        cfg.model_dir, device=cfg.device, dtype=cfg.dtype,
        activation_checkpointing=cfg.activation_checkpointing,
        master_weights_fp32=cfg.master_weights_fp32,
        reshard_after_forward=cfg.reshard_after_forward, cpu_offload=cfg.cpu_offload,
        hybrid_shard=cfg.hybrid_shard,
    )


def check_batch_config(cfg: Any) -> int:
    """Gradient-accumulation steps for this world size; ConfigError naming the keys otherwise."""
    try:
        return grad_accum_steps(cfg.batch_size, cfg.micro_batch_size, D.get_world_size())
    except ValueError as e:
        raise ConfigError(f"batch_size / micro_batch_size: {e}") from None


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def train(
    cfg: Any,
    setup: ModelSetup,
    examples: Sequence[Any],
    lengths: Sequence[int],
    collate: Callable[[list], dict],
    loss_fn: Callable[[Any, dict], tuple[torch.Tensor, dict]],
    epoch_indices: Optional[Callable[[int], list[int]]] = None,
) -> TrainResult:
    from tqdm import tqdm

    world, rank = D.get_world_size(), D.get_rank()
    check_batch_config(cfg)
    out = Path(cfg.output_dir)
    if D.is_rank0():
        out.mkdir(parents=True, exist_ok=True)
    epoch_indices = epoch_indices or (lambda e: list(range(len(examples))))
    plans = [global_batches(epoch_indices(e), lengths, cfg.batch_size, cfg.seed, e, cfg.length_grouped)
             for e in range(cfg.epochs)]
    total = sum(len(p) for p in plans)
    if cfg.max_steps is not None:
        total = min(total, int(cfg.max_steps))
    if total <= 0:
        raise ConfigError(
            f"no optimizer step to take: {len(examples)} examples < batch_size={cfg.batch_size} (or max_steps=0)"
        )
    model = setup.model
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, tuple(cfg.adam_betas), cfg.adam_eps)
    warmup = warmup_steps_for(total, cfg.warmup_steps, cfg.warmup_ratio)
    scheduler = build_lr_scheduler(optimizer, total, warmup, cfg.min_lr_ratio)
    ckpt = Checkpointer(out, setup, optimizer, scheduler, save_dtype=cfg.save_dtype,
                        max_shard_size=cfg.max_shard_size)

    # A re-run into an output dir whose manifest matches (psr.outputs.claim_output_dir refused any
    # other) continues its checkpoint, with or without resume_from_checkpoint=true; without a
    # checkpoint it starts from step 0 and says so when an earlier attempt left metrics behind.
    step, start_epoch, start_batch = 0, 0, 0
    progress = ckpt.load_resume()
    if progress is None:
        if (out / "metrics.jsonl").exists() or cfg.resume_from_checkpoint:
            D.print0(f"no checkpoint in {ckpt.resume_dir}: starting from step 0"
                     + (" (the earlier attempt's metrics.jsonl is replaced)" if (out / "metrics.jsonl").exists() else ""))
    else:
        step, start_epoch, start_batch = progress["step"], progress["epoch"], progress["batch_in_epoch"]
        D.print0(f"resumed from {ckpt.resume_dir}: step {step}, epoch {start_epoch + 1}, batch {start_batch}")
    logger = build_metric_logger(cfg.metric_logger, out, resume_step=step if progress is not None else None)
    if D.is_rank0() and isinstance(cfg, DictConfig):
        logger.log_config(cfg)
    fault_at = os.environ.get("PSR_FAULT_AFTER_STEP")
    fault_at = int(fault_at) if fault_at else None

    bar = tqdm(total=total, initial=step, disable=not (D.is_rank0() and cfg.progress_bar), desc="train",
               dynamic_ncols=True)
    losses: list[float] = []
    cum_tokens = 0
    last_saved: Optional[str] = None
    optimizer.zero_grad(set_to_none=True)
    done = step >= total
    for epoch in range(start_epoch, cfg.epochs):
        if done:
            break
        plan = plans[epoch]
        for k in range(start_batch if epoch == start_epoch else 0, len(plan)):
            t0 = time.perf_counter()
            micro = rank_micro_batches(plan[k], lengths, world, rank, cfg.micro_batch_size)
            batches = [collate([examples[i] for i in mb]) for mb in micro]
            counts = torch.tensor([float(sum(b["n_units"] for b in batches)),
                                   float(sum(b["n_tokens"] for b in batches))], dtype=torch.float64)
            counts = all_reduce_sum(counts.to(setup.device)).cpu()
            units, tokens = counts[0].item(), counts[1].item()
            scale = world / max(units, 1.0)
            loss_acc = torch.zeros((), dtype=torch.float64)
            metric_acc: dict[str, float] = {}
            for b in batches:
                b = _to_device(b, setup.device)
                with setup.autocast():
                    loss_sum, msums = loss_fn(model, b)
                (loss_sum * scale).backward()
                loss_acc += loss_sum.detach().double().cpu()
                for name, v in (msums or {}).items():
                    metric_acc[name] = metric_acc.get(name, 0.0) + float(v)
            names = sorted(metric_acc)
            red = torch.tensor([loss_acc.item()] + [metric_acc[n] for n in names], dtype=torch.float64)
            red = all_reduce_sum(red.to(setup.device)).cpu()
            loss = red[0].item() / max(units, 1.0)
            grad_norm = clip_grad_norm(model, cfg.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            cum_tokens += int(tokens)
            losses.append(loss)
            dt = time.perf_counter() - t0
            if step % max(1, cfg.log_every_n_steps) == 0 or step == total:
                values = {"loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_second": tokens / dt,
                          "tokens_per_second_per_gpu": tokens / (dt * world),
                          "tokens": cum_tokens, "epoch": epoch + 1, "step_time_s": dt}
                values.update({n: red[1 + j].item() / max(units, 1.0) for j, n in enumerate(names)})
                if cfg.log_peak_memory_stats and D.is_rank0():
                    values.update(memory_stats(setup.device))
                logger.log_dict(values, step)
            bar.update(1)
            bar.set_postfix(step=step, loss=f"{loss:.4f}", lr=f"{lr:.3g}")
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {step}")
            if k + 1 == len(plan):  # end of epoch: the epoch's model dir
                last_saved = f"epoch_{epoch + 1}"
                ckpt.save_model(last_saved)
                ckpt.save_resume({"step": step, "epoch": epoch + 1, "batch_in_epoch": 0})
            elif step >= total or (cfg.save_every_n_steps and step % cfg.save_every_n_steps == 0):
                last_saved = f"step_{step}"
                ckpt.save_model(last_saved)
                ckpt.save_resume({"step": step, "epoch": epoch, "batch_in_epoch": k + 1})
            if fault_at is not None and step == fault_at:
                raise SimulatedKill(f"PSR_FAULT_AFTER_STEP={fault_at}")
            if step >= total:
                done = True
                break
    bar.close()
    logger.close()
    final = ckpt.link_final(last_saved) if last_saved else None
    if final is None and progress is not None and (out / "final").exists():
        final = out / "final"  # an already complete run, re-run: its model stays
    return TrainResult(losses=losses, steps=step, final_dir=final, metrics_path=getattr(logger, "path", None),
                       setup=setup)
