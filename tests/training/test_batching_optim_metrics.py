"""Batch plan (independent of the number of processes), LR schedule, metric logger."""

import math

import pytest

from psr.training.batching import global_batches, grad_accum_steps, rank_micro_batches
from psr.training.metrics import MetricLogger, read_metrics
from psr.training.optim import lr_multiplier, warmup_steps_for


def test_global_batches_are_full_disjoint_and_reshuffled_per_epoch():
    lengths = [10 + (i * 37) % 90 for i in range(103)]
    b0 = global_batches(list(range(103)), lengths, 8, seed=3, epoch=0)
    assert len(b0) == 12 and all(len(b) == 8 for b in b0)  # 103 // 8, the tail of 7 dropped
    flat = [i for b in b0 for i in b]
    assert len(set(flat)) == 96
    assert global_batches(list(range(103)), lengths, 8, 3, 0) == b0
    assert global_batches(list(range(103)), lengths, 8, 3, 1) != b0


def test_length_grouping_reduces_padding():
    lengths = [(i * 7919) % 500 + 1 for i in range(256)]
    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    grouped = global_batches(list(range(256)), lengths, 8, 0, 0, length_grouped=True)
    plain = global_batches(list(range(256)), lengths, 8, 0, 0, length_grouped=False)
    assert padding(grouped) < padding(plain) / 4


@pytest.mark.parametrize("world, micro", [(1, 2), (2, 2), (2, 1), (4, 1), (1, 8)])
def test_rank_micro_batches_partition_the_global_batch(world, micro):
    lengths = list(range(100, 0, -1))
    batch = [5, 17, 3, 44, 60, 2, 9, 71]
    parts = [rank_micro_batches(batch, lengths, world, r, micro) for r in range(world)]
    accum = 8 // (world * micro)
    assert all(len(p) == accum and all(len(m) == micro for m in p) for p in parts)
    assert sorted(i for p in parts for m in p for i in m) == sorted(batch)


def test_grad_accum_must_divide():
    assert grad_accum_steps(32, 4, 2) == 4
    with pytest.raises(ValueError, match="batch_size=32 must be a positive multiple of micro_batch_size"):
        grad_accum_steps(32, 3, 2)


def test_warmup_then_cosine_to_min_ratio():
    assert [lr_multiplier(s, 10, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(4, 10, 4) == pytest.approx(1.0)
    assert lr_multiplier(7, 10, 4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(10, 10, 4, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert warmup_steps_for(100, None, 0.03) == 3 and warmup_steps_for(100, 7, 0.5) == 7


def test_metric_logger_jsonl_and_resume_truncation(tmp_path):
    log = MetricLogger(tmp_path, ["jsonl"])
    for s in range(1, 6):
        log.log({"loss": 1.0 / s}, s)
    log.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    log = MetricLogger(tmp_path, ["jsonl"], resume_step=3)  # a run resumed from step 3
    log.log({"loss": 9.0}, 4)
    log.close()
    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4] and recs[-1]["loss"] == 9.0
    with pytest.raises(ValueError, match="unknown metric backend"):
        MetricLogger(tmp_path, ["wandb"])
