"""Optimizer and learning-rate schedule.

API (stable):

    build_optimizer(model, lr, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8) -> torch.optim.AdamW
        Biases and norm weights (1-D parameters) get no weight decay.
    lr_multiplier(step, total_steps, warmup_steps, min_lr_ratio=0.0) -> float
        Linear warmup from 0 over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` at
        ``total_steps``. ``step`` counts optimizer steps already taken (0 = the first step).
    build_lr_scheduler(optimizer, total_steps, warmup_steps, min_lr_ratio=0.0) -> LambdaLR
    warmup_steps_for(total_steps, warmup_steps=None, warmup_ratio=0.0) -> int
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch.optim.lr_scheduler import LambdaLR


def build_optimizer(
    model: Any,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0) -> float:
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps_for(total_steps: int, warmup_steps: Optional[int] = None, warmup_ratio: float = 0.0) -> int:
    if warmup_steps is not None:
        return int(warmup_steps)
    return int(math.ceil(warmup_ratio * total_steps))


def build_lr_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                       min_lr_ratio: float = 0.0) -> LambdaLR:
    return LambdaLR(optimizer, lambda s: lr_multiplier(s, total_steps, warmup_steps, min_lr_ratio))
