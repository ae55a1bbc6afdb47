"""The arith model: config (a dataclass, also ``configs/arith/model.yaml``) and an HF model dir
holding the arith tokenizer and a freshly initialised causal LM (trained from scratch by the
pipeline). The default architecture is llama, not qwen2: transformers 5 swaps the pre-tokenizer of a
qwen2 dir's tokenizer for Qwen2's regex on load, which would undo the arith tokenizer's long prompt
tokens (measured: 347 instead of 71 tokens per IFT record, 865 instead of 96 per EFT record)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Optional


@dataclass
class ArithModelConfig:
    vocab_size: int = 2048  # BPE vocabulary of the arith tokenizer (incl. 3 special tokens)
    tokenizer_seed: int = 12345  # seed of the tokenizer's training corpus
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 512
    seed: int = 0  # weight initialisation
    arch: str = "llama"  # llama | qwen2 (qwen2 dirs lose the tokenizer's pre-tokenizer on load)

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], where: str = "model config") -> "ArithModelConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(m) - names)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown} (known: {sorted(names)})")
        return cls(**dict(m))


def load_model_config(path: Optional[str | os.PathLike] = None, **overrides: Any) -> ArithModelConfig:
    """The config of ``path`` (a yaml mapping; None: the defaults) with ``overrides`` applied;
    an unknown key is an error naming the key and the file."""
    data: dict = {}
    if path is not None:
        import yaml

        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
    data.update(overrides)
    return ArithModelConfig.from_mapping(data, str(path) if path else "overrides")


def n_params(cfg: ArithModelConfig) -> int:
    """Parameter count of the model ``cfg`` describes (tied embeddings)."""
    h, i, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    kv = h // cfg.num_heads * cfg.num_kv_heads
    bias = cfg.arch == "qwen2"  # qwen2 has q/k/v biases, llama none
    attn = h * h + 2 * h * kv + h * h + bias * (h + 2 * kv)  # q, k, v, o
    mlp = 3 * h * i
    return cfg.vocab_size * h + L * (attn + mlp + 2 * h) + h


def build_model_dir(
    path: str | os.PathLike, cfg: Optional[ArithModelConfig] = None, overwrite: bool = False, tokenizer: Any = None
) -> Path:
    """Write the arith tokenizer and a randomly initialised model (fp32 safetensors) as an HF model
    dir at ``path``; a complete existing dir is reused unless ``overwrite``. ``tokenizer``: an
    already built :func:`build_arith_tokenizer` (its size must be ``cfg.vocab_size``). Returns the
    path."""
    from transformers import GenerationConfig

    from psr.arith.tokenizer import build_arith_tokenizer
    from psr.models.tiny import build_tiny_model

    cfg = cfg or ArithModelConfig()
    path = Path(path)
    if not overwrite and (path / "config.json").exists() and (path / "model.safetensors").exists():
        return path
    tok = tokenizer if tokenizer is not None else build_arith_tokenizer(cfg.vocab_size, seed=cfg.tokenizer_seed)
    if len(tok) != cfg.vocab_size:
        raise ValueError(f"tokenizer has {len(tok)} tokens, the model config says vocab_size={cfg.vocab_size}")
    model = build_tiny_model(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        num_kv_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        seed=cfg.seed,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        arch=cfg.arch,
    )
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=False)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    (path / "arith_model_config.json").write_text(__import__("json").dumps(asdict(cfg), indent=1))
    return path
