"""Small models built from scratch: a byte-level BPE tokenizer trained on a corpus (no downloads)
with a Qwen-style chat template, and a random qwen2- or llama-style causal LM, saved together as
an HF model directory that transformers (and vLLM) load.

Production code, not a test double: the arith world builds its real models with
:func:`train_bpe_tokenizer` and :func:`build_tiny_model` (psr.arith.tokenizer, psr.arith.model,
trained from there), and the recipes' tiny-model switch builds its smoke-run model with
:func:`build_tiny_model_dir` (whose ``manifest.json`` names this module as the writer). Test-only
wrappers (``build_tiny_llama_dir``, ``tiny_generator``) live in :mod:`psr.testing`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> list[str]:
    from psr import prompts

    lines = [prompts.IFT_SPLIT_PROMPT, prompts.REASONING_PROMPT, prompts.JUDGE_PROMPT]
    for n in range(1, 21):
        lines.append(f"Step {n}: We compute {n} + {n} = {2 * n}, so the answer is \\boxed{{{2 * n}}}.")
    lines.append("0123456789 + - * / = ( ) [ ] { } \\frac \\sqrt \\boxed [[A]] [[B]] $ % . , ; : ? !")
    lines.append("Assistant A is better because its step is correct. Assistant B is better.")
    return lines


def train_bpe_tokenizer(corpus: list[str], vocab_size: int, pre_tokenizer: Any = None):
    """A byte-level BPE trained on ``corpus`` (deterministic), wrapped as PreTrainedTokenizerFast
    with the tiny models' conventions: EOS ``<|im_end|>`` (the end of a chat turn), padding
    ``<|endoftext|>``, left padding, :data:`CHAT_TEMPLATE`. ``pre_tokenizer``: a ``tokenizers``
    pre-tokenizer (default: plain byte-level)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer if pre_tokenizer is not None else pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def build_tiny_tokenizer(vocab_size: int = 512, corpus: Optional[list[str]] = None):
    """The tiny models' tokenizer: :func:`train_bpe_tokenizer` on a built-in corpus."""
    return train_bpe_tokenizer(corpus or _corpus(), vocab_size)


def build_tiny_model(
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: Optional[int] = None,
    max_position_embeddings: int = 2048,
    seed: int = 0,
    eos_token_id: Optional[int] = None,
    pad_token_id: Optional[int] = None,
    arch: str = "qwen2",
):
    """A random causal LM (fp32), deterministic for a given seed: ``Qwen2ForCausalLM`` by default,
    ``LlamaForCausalLM`` with ``arch="llama"``.

    Why llama exists: transformers 5 loads the tokenizer of a ``model_type: qwen2`` dir as
    ``Qwen2Tokenizer``, which *replaces* the saved pre-tokenizer with Qwen2's regex. A tokenizer
    with its own pre-tokenizer (the arith one) only survives ``AutoTokenizer.from_pretrained``
    (and so vLLM, and every user's loader) in a llama dir, which keeps ``tokenizer.json`` as is."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    archs = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}
    if arch not in archs:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(archs)}")
    config_cls, model_cls = archs[arch]
    cfg = config_cls(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        torch_dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(cfg)
    return model.eval()


def build_tiny_model_dir(path: str | os.PathLike, seed: int = 0, overwrite: bool = False, **model_kwargs) -> Path:
    """Write a tiny tokenizer + random model as an HF model dir at ``path``; returns the path.

    The dir records what wrote it (``manifest.json``, psr.outputs.claim_model_dir): a finished
    tiny dir with the same seed and shape is reused as is; a non-empty dir this function did not
    write (a real model, say) is refused with a ConfigError -- never overwritten -- unless
    ``overwrite``.
    """
    from psr.outputs import claim_model_dir, finish_model_dir

    path = Path(path)
    identity = {"seed": seed, **{k: v for k, v in sorted(model_kwargs.items())}}
    if claim_model_dir(path, WRITER, identity, overwrite=overwrite):
        return path
    from transformers import GenerationConfig

    tok = build_tiny_tokenizer()
    model = build_tiny_model(
        vocab_size=len(tok),
        seed=seed,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **model_kwargs,
    )
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=False
    )
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    finish_model_dir(path, WRITER, identity)
    return path


WRITER = "psr.models.tiny"
