"""A model dir written by the sharded save (several safetensors files + index) loads in vLLM as it
is, and generates exactly what the same weights in one file generate (greedy, fp32).

Run: ``pytest -m vllm tests/generation/test_vllm_sharded_dir.py`` (``.ci/vllm.sh`` runs it)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.vllm

from fakes import build_varied_model_dir, require_vllm  # noqa: E402

require_vllm()

from psr.generation.base import SamplingParams  # noqa: E402
from psr.models.hf import load_model_for_training, load_tokenizer, save_model_dir  # noqa: E402

PROMPTS = ["What is 2 + 3?", "Compute 12 * 7.", "Solve for x: 3x + 4 = 19."]


def greedy(model_dir) -> list[str]:
    from psr.generation.vllm_backend import VLLMGenerator

    gen = VLLMGenerator(str(model_dir), dtype="float32", enforce_eager=True, kv_cache_gib=0.25, max_model_len=512)
    try:
        out = gen.generate(PROMPTS, SamplingParams(n=1, temperature=0.0, max_new_tokens=16))
    finally:
        gen.close()
    return [c[0].text for c in out]


def test_sharded_save_loads_in_vllm_with_the_same_greedy_text(tmp_path):
    src = build_varied_model_dir(tmp_path / "src")
    model = load_model_for_training(src)
    sharded = save_model_dir(model, load_tokenizer(src), tmp_path / "sharded", max_shard_size="20KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 3
    one_file, many_files = greedy(src), greedy(sharded)
    assert many_files == one_file and any(one_file)
