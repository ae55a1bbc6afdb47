"""Random tiny models as test doubles (see :mod:`psr.models.tiny` for the builders themselves)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from psr.generation.base import Generator


def tiny_generator(model_dir: str, backend: str = "native", seed: int = 0, **kwargs: Any) -> Generator:
    """A random tiny model (built at ``model_dir`` if missing, see psr.models.tiny) behind
    ``make_generator`` — the policy of ``configs/tiny``."""
    from psr.generation.factory import make_generator
    from psr.models.tiny import build_tiny_model_dir

    build_tiny_model_dir(model_dir, seed=seed)
    return make_generator(backend, str(model_dir), **kwargs)


def build_tiny_llama_dir(path: str | os.PathLike, seed: int = 0, hidden_size: int = 64, num_layers: int = 2) -> Path:
    """A random LlamaForCausalLM (SmolLM2's architecture, tied head) + the tiny tokenizer."""
    from psr.models.tiny import build_tiny_model_dir

    return build_tiny_model_dir(path, seed=seed, hidden_size=hidden_size, num_layers=num_layers, arch="llama")
