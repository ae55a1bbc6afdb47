"""Metric logging on rank 0: ``metric_logger`` is a ``_component_``; metrics.jsonl by default.

API (stable):

    JsonlLogger(log_dir, filename="metrics.jsonl", resume_step=None)   # the default metric_logger
    MultiLogger(loggers=[...])                 # several loggers at once (each a _component_ block)
    logger = build_metric_logger(node, output_dir, resume_step=None)   # what the training loop does
    logger.log_dict({"loss": 1.2, "lr": 1e-6}, step=3); logger.log("loss", 1.2, step=3)
    logger.log_config(cfg); logger.close()
    memory_stats(device) -> {"peak_memory_rss": GiB, + on CUDA peak_memory_active/_alloc/_reserved}
    read_metrics(path) -> list[dict]      # the records of a metrics.jsonl (step, time, values)
    MetricLogger(output_dir, backends=("jsonl",), resume_step=None)    # the same by backend names

Every logger has torchtune's metric-logger interface (``log(name, data, step)``,
``log_dict(payload, step)``, ``log_config(config)``, ``close()``), so torchtune's loggers plug in
unchanged, e.g. on the command line::

    metric_logger._component_=torchtune.training.metric_logging.WandBLogger metric_logger.project=psr
    metric_logger._component_=torchtune.training.metric_logging.TensorBoardLogger metric_logger.log_dir=/tmp/tb
    metric_logger._component_=torchtune.training.metric_logging.StdoutLogger
    metric_logger._component_=torchtune.training.metric_logging.MLFlowLogger

(WandB needs ``wandb``, TensorBoard ``tensorboard``, MLflow ``mlflow``; ``WANDB_MODE=offline``
writes the run under ``WANDB_DIR`` or ``log_dir`` without a network.) Only rank 0 builds and calls
the logger; the other ranks get one that does nothing. A JsonlLogger block without ``log_dir``
writes to the run's output_dir, and on a resumed run (``resume_step=k``) it first drops the lines
with ``step > k`` left by the killed run, so the file reads as one uninterrupted run; a fresh run
replaces the file. Each jsonl line is ``{"step": s, "time": unix_s, **values}``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from psr import distributed as D

BACKENDS = ("jsonl", "stdout", "tensorboard")
DEFAULT_COMPONENT = "psr.training.metrics.JsonlLogger"
_GIB = 1024 ** 3


def read_metrics(path: str | os.PathLike) -> list[dict]:
    from psr.data.jsonl import read_jsonl_tolerant

    return read_jsonl_tolerant(path)


def _plain(v: Any) -> Any:
    return float(v) if hasattr(v, "item") else v


class JsonlLogger:
    """One JSON line per logging step in ``<log_dir>/<filename>`` (flushed per line)."""

    def __init__(self, log_dir: str | os.PathLike, filename: str = "metrics.jsonl",
                 resume_step: Optional[int] = None):
        self.path = Path(log_dir) / filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            with self.path.open("w", encoding="utf-8") as f:
                for r in kept:
                    f.write(json.dumps(r) + "\n")
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._f = self.path.open("a", encoding="utf-8")

    def log(self, name: str, data: Any, step: int) -> None:
        self.log_dict({name: data}, step)

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        if self._f is None:
            raise RuntimeError(f"{self.path}: logger already closed")
        clean = {k: _plain(v) for k, v in payload.items()}
        self._f.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        self._f.flush()

    def log_config(self, config: Any) -> None:
        """Nothing: the run's settings are in its manifest.json (psr.outputs)."""

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class MultiLogger:
    """Several loggers behind one: each call goes to every one of them, in order."""

    def __init__(self, loggers: Iterable[Any]):
        self.loggers = list(loggers)

    @property
    def path(self) -> Optional[Path]:
        """The first metrics.jsonl among the loggers (None if none writes one)."""
        return next((p for p in (getattr(lg, "path", None) for lg in self.loggers) if p is not None), None)

    def log(self, name: str, data: Any, step: int) -> None:
        for lg in self.loggers:
            lg.log(name, data, step)

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        for lg in self.loggers:
            lg.log_dict(payload, step)

    def log_config(self, config: Any) -> None:
        for lg in self.loggers:
            if hasattr(lg, "log_config"):
                lg.log_config(config)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


class NullLogger:
    """What ranks other than 0 get."""

    path = None

    def log(self, name: str, data: Any, step: int) -> None:
        pass

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        pass

    def log_config(self, config: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _components(node: Any, key: str):
    """Every ``(dotted_key, dict)`` with a ``_component_`` in ``node`` (nested blocks included)."""
    if isinstance(node, dict):
        if "_component_" in node:
            yield key, node
        for k, v in node.items():
            yield from _components(v, f"{key}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _components(v, f"{key}[{i}]")


def check_metric_logger(node: Any, key: str = "metric_logger") -> dict:
    """The ``metric_logger`` block as a plain dict, each ``_component_`` in it importable; a
    ConfigError naming the key otherwise (run before training starts)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    from psr.config import _locate
    from psr.errors import ConfigError

    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict) or not isinstance(node.get("_component_"), str):
        raise ConfigError(f"{key}: expected a block with a _component_ (e.g. {{_component_: {DEFAULT_COMPONENT}}}), "
                          f"got {node!r}")
    for where, block in _components(node, key):
        try:
            _locate(str(block["_component_"]))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    return node


def build_metric_logger(node: Any, output_dir: str | os.PathLike, resume_step: Optional[int] = None,
                        key: str = "metric_logger") -> Any:
    """The run's metric logger from its ``_component_`` block (rank 0; a NullLogger elsewhere).
    Every JsonlLogger in the block gets ``resume_step``, and ``log_dir=output_dir`` when unset."""
    from psr.config import _locate, instantiate
    from psr.errors import ConfigError

    node = check_metric_logger(node, key)
    if not D.is_rank0():
        return NullLogger()
    for _, block in _components(node, key):
        target = _locate(str(block["_component_"]))
        if isinstance(target, type) and issubclass(target, JsonlLogger):
            block.setdefault("log_dir", str(output_dir))
            block["resume_step"] = resume_step
    try:
        return instantiate(node)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None
    except (TypeError, ImportError) as e:  # a wrong keyword, a package not installed
        raise ConfigError(f"{key}: cannot build {node['_component_']}: {e}") from None


def memory_stats(device: Any = None, reset: bool = True) -> dict[str, float]:
    """Peak memory in GiB, named as torchtune's recipes log it: ``peak_memory_rss`` (this
    process's peak resident set since it started), and for a CUDA ``device`` the CUDA caching
    allocator's ``peak_memory_active`` / ``peak_memory_alloc`` / ``peak_memory_reserved`` since
    the last call (``reset=True`` restarts the CUDA peaks, so each logging step reports its own)."""
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    out = {"peak_memory_rss": rss / (_GIB if sys.platform == "darwin" else 1024 ** 2)}
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        dev = torch.device(device)
        out["peak_memory_active"] = torch.cuda.memory_stats(dev).get("active_bytes.all.peak", 0) / _GIB
        out["peak_memory_alloc"] = torch.cuda.max_memory_allocated(dev) / _GIB
        out["peak_memory_reserved"] = torch.cuda.max_memory_reserved(dev) / _GIB
        if reset:
            torch.cuda.reset_peak_memory_stats(dev)
    return out


class MetricLogger:
    """The built-in loggers by name: any of ``jsonl`` (JsonlLogger), ``stdout``, ``tensorboard``
    (needs ``tensorboard``; writes under <output_dir>/tensorboard). ``log(values, step)``."""

    def __init__(self, output_dir: str | os.PathLike, backends: Iterable[str] = ("jsonl",),
                 filename: str = "metrics.jsonl", resume_step: Optional[int] = None):
        backends = list(backends)
        bad = [b for b in backends if b not in BACKENDS]
        if bad:
            raise ValueError(f"unknown metric backend(s) {bad}; choose from {list(BACKENDS)}")
        self.enabled = D.is_rank0()
        self.backends = backends
        self.path = Path(output_dir) / filename
        self._jsonl: Optional[JsonlLogger] = None
        self._tb = None
        if not self.enabled:
            return
        if "jsonl" in backends:
            self._jsonl = JsonlLogger(output_dir, filename, resume_step=resume_step)
        if "tensorboard" in backends:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))

    def log(self, values: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        clean = {k: _plain(v) for k, v in values.items()}
        if self._jsonl is not None:
            self._jsonl.log_dict(clean, step)
        if "stdout" in self.backends:
            body = " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in clean.items())
            print(f"step {step}: {body}", flush=True)
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
