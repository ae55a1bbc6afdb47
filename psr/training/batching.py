"""Global-batch planning shared by all training recipes.

API (stable):

    global_batches(indices, lengths, batch_size, seed, epoch, length_grouped=True,
                   group_factor=16) -> list[list[int]]
        One epoch's optimizer steps: lists of exactly ``batch_size`` example indices (the
        incomplete tail is dropped; it is a different tail each epoch because the order is
        reshuffled with ``seed`` and ``epoch``). ``length_grouped``: shuffle, cut into mega-batches
        of ``batch_size * group_factor`` examples, sort each by length, cut into global batches and
        shuffle those — similar lengths share a step, so micro-batches carry little padding.
    rank_micro_batches(batch, lengths, world_size, rank, micro_batch_size) -> list[list[int]]
        This rank's micro-batches of one global batch: the batch sorted by length (longest first),
        cut into ``world_size * accum`` micro-batches, micro-batch j going to rank j % world_size.
        Every rank gets ``accum = batch_size / (world_size * micro_batch_size)`` micro-batches.
    grad_accum_steps(batch_size, micro_batch_size, world_size) -> int   (ValueError if it does not divide)

The plan depends only on (data, seed, epoch, batch_size), never on the number of processes, so a
run on 1 process and on N processes sees the same global batches; and a resumed run skips the
first ``k`` batches of the epoch it stopped in.
"""

from __future__ import annotations

from typing import Sequence

import torch

from psr.seeds import epoch_seed


def grad_accum_steps(batch_size: int, micro_batch_size: int, world_size: int) -> int:
    per_step = micro_batch_size * world_size
    if batch_size <= 0 or micro_batch_size <= 0 or batch_size % per_step:
        raise ValueError(
            f"batch_size={batch_size} must be a positive multiple of micro_batch_size * world_size "
            f"= {micro_batch_size} * {world_size} = {per_step}"
        )
    return batch_size // per_step


def _perm(n: int, seed: int, epoch: int, salt: int = 0) -> list[int]:
    g = torch.Generator()
    g.manual_seed(epoch_seed(seed, epoch, stride=7919, salt=salt))
    return torch.randperm(n, generator=g).tolist()


def global_batches(indices: Sequence[int], lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                   length_grouped: bool = True, group_factor: int = 16) -> list[list[int]]:
    order = [indices[i] for i in _perm(len(indices), seed, epoch)]
    if length_grouped:
        mega = batch_size * max(1, group_factor)
        grouped: list[int] = []
        for s in range(0, len(order), mega):
            chunk = order[s : s + mega]
            grouped += sorted(chunk, key=lambda i: -lengths[i])  # stable: ties keep shuffled order
        order = grouped
    batches = [order[s : s + batch_size] for s in range(0, len(order) - batch_size + 1, batch_size)]
    if length_grouped:
        batches = [batches[i] for i in _perm(len(batches), seed, epoch, salt=1)]
    return batches


def rank_micro_batches(batch: Sequence[int], lengths: Sequence[int], world_size: int, rank: int,
                       micro_batch_size: int) -> list[list[int]]:
    accum = grad_accum_steps(len(batch), micro_batch_size, world_size)
    ordered = sorted(batch, key=lambda i: -lengths[i])
    micro = [ordered[s : s + micro_batch_size] for s in range(0, len(ordered), micro_batch_size)]
    mine = micro[rank::world_size]
    assert len(mine) == accum
    return mine
