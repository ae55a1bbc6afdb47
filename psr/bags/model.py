r"""Tokenizer and model dir of the bags world: the arith world's builders
(:func:`psr.arith.tokenizer.build_arith_tokenizer`: digits one per token, BPE across words, the
tiny models' chat template; :func:`psr.arith.model.build_model_dir`) fit to bags texts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def tokenizer_corpus(n_problems: int = 400, seed: int = 12345) -> list[str]:
    """Chat-wrapped policy, judge and free-form texts of a split no run uses (``"tokenizer"``)."""
    from psr.arith.tokenizer import role_texts
    from psr.bags.data import eft_records
    from psr.bags.problems import generate_problems

    problems = generate_problems(n_problems, seed, "tokenizer", 1, 6)
    return role_texts(problems, eft_records(problems, seed))


def build_bags_tokenizer(vocab_size: int = 2048, seed: int = 12345):
    from psr.arith.tokenizer import build_arith_tokenizer

    return build_arith_tokenizer(vocab_size, corpus=tokenizer_corpus(seed=seed))


def build_model_dir(path: str | os.PathLike, cfg=None, overwrite: bool = False) -> Path:
    """The bags tokenizer + a freshly initialised model (``cfg``: an ArithModelConfig; None: the
    defaults of configs/arith/model.yaml's dataclass) as an HF dir."""
    from psr.arith.model import ArithModelConfig
    from psr.arith.model import build_model_dir as arith_build

    cfg = cfg or ArithModelConfig()
    path = Path(path)
    if not overwrite and (path / "config.json").exists() and (path / "model.safetensors").exists():
        return path
    return arith_build(path, cfg, overwrite=overwrite, tokenizer=build_bags_tokenizer(cfg.vocab_size, cfg.tokenizer_seed))
