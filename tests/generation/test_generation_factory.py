"""make_generator: backend names, the auto rule, and a clear error when vLLM is missing."""

from __future__ import annotations

import importlib.util

import pytest

from psr.generation import SamplingParams, make_generator
from psr.generation import factory
from psr.generation.native import NativeGenerator


def test_native_backend_by_name(tiny_model_dir):
    g = make_generator("native", str(tiny_model_dir), device="cpu", dtype="float32", max_batch_size=8)
    assert isinstance(g, NativeGenerator) and g.name == "native" and g.max_batch_size == 8
    (c,), = g.generate(["Step 1:"], SamplingParams(max_new_tokens=3))
    assert c.n_tokens == 3 or c.finish_reason == "eos"


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match=r"unknown generation backend 'vlm'.*native"):
        make_generator("vlm", "/nonexistent")


def test_auto_picks_native_without_vllm(monkeypatch):
    monkeypatch.setattr(factory, "vllm_available", lambda: False)
    assert factory.resolve_backend("auto") == "native"
    monkeypatch.setattr(factory, "vllm_available", lambda: True)
    assert factory.resolve_backend("auto") == "vllm"
    assert factory.resolve_backend("native") == "native"


def test_vllm_backend_without_vllm_installed_says_so(monkeypatch):
    monkeypatch.setattr(factory, "vllm_available", lambda: False)
    with pytest.raises(ImportError, match="needs the vllm package.*backend=native"):
        make_generator("vllm", "/nonexistent")


def test_vllm_available_reflects_the_environment():
    assert factory.vllm_available() == (importlib.util.find_spec("vllm") is not None)
