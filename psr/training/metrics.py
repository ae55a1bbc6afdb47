"""Metric logging on rank 0: jsonl on disk (default), stdout, tensorboard (optional).

API (stable):

    logger = MetricLogger(output_dir, backends=("jsonl",), filename="metrics.jsonl",
                          resume_step=None)
    logger.log({"loss": 1.2, "lr": 1e-6, "tokens_per_second": 5000.0}, step=3)
    logger.close()
    read_metrics(path) -> list[dict]      # the records of a metrics.jsonl (step, time, values)

Each jsonl line is ``{"step": s, "time": unix_s, **values}``. On other ranks the logger does
nothing. ``resume_step=k`` (a resumed run) first drops lines with ``step > k`` left by the killed
run, so the file reads as one uninterrupted run. Backends: "jsonl", "stdout", "tensorboard"
(needs the ``tensorboard`` package; writes under <output_dir>/tensorboard).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from psr import distributed as D

BACKENDS = ("jsonl", "stdout", "tensorboard")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    from psr.data.jsonl import read_jsonl_tolerant

    return read_jsonl_tolerant(path)


class MetricLogger:
    def __init__(self, output_dir: str | os.PathLike, backends: Iterable[str] = ("jsonl",),
                 filename: str = "metrics.jsonl", resume_step: Optional[int] = None):
        backends = list(backends)
        bad = [b for b in backends if b not in BACKENDS]
        if bad:
            raise ValueError(f"unknown metric backend(s) {bad}; choose from {list(BACKENDS)}")
        self.enabled = D.is_rank0()
        self.backends = backends
        self.path = Path(output_dir) / filename
        self._f = None
        self._tb = None
        if not self.enabled:
            return
        if "jsonl" in backends:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is not None and self.path.exists():
                kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
                with self.path.open("w", encoding="utf-8") as f:
                    for r in kept:
                        f.write(json.dumps(r) + "\n")
            elif resume_step is None and self.path.exists():
                self.path.unlink()
            self._f = self.path.open("a", encoding="utf-8")
        if "tensorboard" in backends:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))

    def log(self, values: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if hasattr(v, "item") else v) for k, v in values.items()}
        if self._f is not None:
            self._f.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
            self._f.flush()
        if "stdout" in self.backends:
            body = " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in clean.items())
            print(f"step {step}: {body}", flush=True)
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
