"""HF model directories in and out of training.

API (stable; used by every training recipe):

    load_tokenizer(model_dir) -> PreTrainedTokenizerBase
        The dir's tokenizer; a missing pad token falls back to EOS (named in the log).
    load_model_for_training(model_dir, dtype="float32") -> PreTrainedModel
        ``AutoModelForCausalLM`` on CPU with parameters in ``dtype`` (float32 = master weights;
        bf16 compute is added later by psr.training.fsdp). Any causal-LM architecture transformers
        knows works; tested with Qwen2/Qwen2.5 and Llama-family (SmolLM2) configs.
    save_model_dir(model, tokenizer, out_dir, dtype=None, state_dict=None) -> Path
        Write config.json, *.safetensors (sharded with an index for big models), generation_config
        and the tokenizer files so that ``AutoModelForCausalLM.from_pretrained`` and vLLM load the
        dir directly. ``state_dict`` is the *full* state dict (psr.training.fsdp.full_state_dict
        gathers it from an FSDP2 model); only rank 0 calls this. ``dtype`` casts floating tensors
        and sets the config's dtype. Writes into a temp dir and renames it into place, so a
        killed save never leaves a half-written model dir under the final name.
    build_tiny_llama_dir(path, seed=0) -> Path
        A random Llama-family (LlamaForCausalLM) model dir with the tiny tokenizer, for tests.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` / ``"bf16"`` / ``"float32"`` ... → ``torch.dtype``."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (use one of {sorted(_DTYPES)})") from None


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_tokenizer(model_dir: str | os.PathLike):
    from transformers import AutoTokenizer

    _quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model_for_training(model_dir: str | os.PathLike, dtype: str | torch.dtype = "float32"):
    """The causal LM of ``model_dir`` on CPU, parameters in ``dtype``, in train mode, no KV cache."""
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    path = Path(model_dir)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: not an HF model dir (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype(dtype))
    model.config.use_cache = False
    model.train()
    return model


def decoder_layers(model: Any) -> list:
    """The transformer blocks of an HF causal LM (``model.model.layers`` for Qwen2/Llama)."""
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None) or getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: cannot find its decoder layers (model.model.layers)")
    return list(layers)


def save_model_dir(
    model: Any,
    tokenizer: Any,
    out_dir: str | os.PathLike,
    dtype: Optional[str | torch.dtype] = None,
    state_dict: Optional[dict[str, torch.Tensor]] = None,
    max_shard_size: str = "5GB",
) -> Path:
    """Write an HF model dir (see module docstring). Call on rank 0 only."""
    _quiet_transformers()
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    sd = state_dict if state_dict is not None else model.state_dict()
    sd = {k: v.detach().to("cpu") for k, v in sd.items()}
    if dtype is not None:
        dt = torch_dtype(dtype)
        # one cast per shared tensor: tied weights (embedding / LM head) must stay one tensor, or
        # save_pretrained writes both copies
        cast: dict = {}

        def _cast(v: torch.Tensor) -> torch.Tensor:
            if not v.is_floating_point():
                return v
            key = (v.data_ptr(), tuple(v.shape), v.stride())
            if key not in cast:
                cast[key] = v.to(dt)
            return cast[key]

        sd = {k: _cast(v) for k, v in sd.items()}
    else:
        dt = next(iter(v for v in sd.values() if v.is_floating_point())).dtype
    config = model.config
    attr = "dtype" if "dtype" in config.to_dict() or not hasattr(config, "torch_dtype") else "torch_dtype"
    old_dtype = getattr(config, attr, None)
    setattr(config, attr, dt)
    use_cache = getattr(config, "use_cache", None)
    config.use_cache = True  # inference default for the saved dir
    try:
        model.save_pretrained(str(tmp), state_dict=sd, max_shard_size=max_shard_size)
    finally:
        setattr(config, attr, old_dtype)
        if use_cache is not None:
            config.use_cache = use_cache
    # save_pretrained records the module's parameter dtype; record the dtype actually written
    cfg_path = tmp / "config.json"
    cfg_json = json.loads(cfg_path.read_text())
    name = str(dt).replace("torch.", "")
    cfg_json["dtype"] = name
    if "torch_dtype" in cfg_json:
        cfg_json["torch_dtype"] = name
    cfg_path.write_text(json.dumps(cfg_json, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    if not (tmp / "generation_config.json").exists():
        from transformers import GenerationConfig

        GenerationConfig(eos_token_id=getattr(tokenizer, "eos_token_id", None),
                         pad_token_id=getattr(tokenizer, "pad_token_id", None)).save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def build_tiny_llama_dir(path: str | os.PathLike, seed: int = 0, hidden_size: int = 64, num_layers: int = 2) -> Path:
    """A random LlamaForCausalLM (SmolLM2's architecture, tied head) + the tiny tokenizer."""
    from psr.models.tiny import build_tiny_model_dir

    return build_tiny_model_dir(path, seed=seed, hidden_size=hidden_size, num_layers=num_layers, arch="llama")
