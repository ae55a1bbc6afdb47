"""make_generator: backend names, the auto rule, and a clear error when vLLM is missing."""

from __future__ import annotations

import sys

import pytest

from psr.generation import SamplingParams, make_generator
from psr.generation import factory
from psr.generation.native import NativeGenerator


def test_native_backend_by_name(tiny_model_dir):
    g = make_generator("native", str(tiny_model_dir), device="cpu", dtype="float32", max_batch_size=8)
    assert isinstance(g, NativeGenerator) and g.name == "native" and g.max_batch_size == 8
    (c,), = g.generate(["Step 1:"], SamplingParams(max_new_tokens=3))
    # greedy: what transformers generates from the same dir
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    enc = g.tokenizer("Step 1:", return_tensors="pt")
    with torch.no_grad():
        ref = hf.generate(**enc, do_sample=False, max_new_tokens=3)[0, enc["input_ids"].shape[1]:].tolist()
    eos = ref[-1] == g.tokenizer.eos_token_id
    assert (c.n_tokens, c.finish_reason) == (len(ref), "eos" if eos else "length")
    assert c.text == g.tokenizer.decode(ref, skip_special_tokens=True)


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match=r"unknown generation backend 'vlm'.*native"):
        make_generator("vlm", "/nonexistent")


def test_auto_picks_native_without_vllm(monkeypatch):
    monkeypatch.setattr(factory, "vllm_available", lambda: False)
    assert factory.resolve_backend("auto", expected_tokens=10**12, device="cuda") == "native"
    assert factory.choose_backend("auto", 10**12, "search", "cuda")[1] == "vllm is not installed"
    assert factory.resolve_backend("native") == "native"
    assert factory.resolve_backend("vllm") == "vllm"  # by name: make_generator then says it is missing


def test_auto_on_gpu_picks_vllm_whatever_the_budget(monkeypatch):
    monkeypatch.setattr(factory, "vllm_available", lambda: True)
    for device in ("cuda", "cuda:1"):
        assert factory.choose_backend("auto", 1, "eval", device) == (
            "vllm", "vllm is installed and the stage runs on a GPU")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert factory.resolve_backend("auto", None, device="auto") == "vllm"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert factory.resolve_backend("auto", None, device="auto") == "native"


@pytest.mark.parametrize("stage", ["search", "eval"])
def test_auto_on_cpu_switches_to_vllm_exactly_at_the_measured_break_even(monkeypatch, stage):
    monkeypatch.setattr(factory, "vllm_available", lambda: True)
    need = factory.CPU_BREAK_EVEN_TOKENS[stage]
    assert 10_000 <= need <= 10_000_000  # a measured number, not a placeholder
    kind, why = factory.choose_backend("auto", need - 1, stage, "cpu")
    assert kind == "native" and f"{need - 1:,} < the measured break-even {need:,} for {stage}" in why
    kind, why = factory.choose_backend("auto", need, stage, "cpu")
    assert kind == "vllm" and f"{need:,} >= the measured break-even {need:,}" in why
    # no budget: the start-up cost is certain, the payoff unknown
    assert factory.choose_backend("auto", None, stage, "cpu")[0] == "native"
    # an unknown stage uses the largest break-even
    top = max(factory.CPU_BREAK_EVEN_TOKENS.values())
    assert factory.resolve_backend("auto", top - 1, "ift_build", "cpu") == "native"
    assert factory.resolve_backend("auto", top, None, "cpu") == "vllm"


def test_the_break_even_constants_are_the_documented_measurements():
    doc = factory.__doc__
    for stage, need in factory.CPU_BREAK_EVEN_TOKENS.items():
        assert f"{stage}: {need:,} tokens" in doc, stage


def test_token_budgets_of_the_stages():
    # the paper's search: 6 candidates x 512 tokens + 30 judge calls x 512 tokens per iteration
    assert factory.search_token_budget(1, width=6, judge_orders=2, max_iterations=20, max_new_tokens_step=512,
                                       max_new_tokens_judge=512) == 20 * (6 * 512 + 30 * 512) == 368_640
    assert factory.search_token_budget(3, width=3, judge_orders=1, max_iterations=2, max_new_tokens_step=16,
                                       max_new_tokens_judge=8) == 3 * 2 * (3 * 16 + 3 * 8)
    assert factory.search_token_budget(0, width=6, judge_orders=2, max_iterations=20, max_new_tokens_step=512,
                                       max_new_tokens_judge=512) == 0
    assert factory.eval_token_budget(500, 2048) == 1_024_000
    # what step_search and eval's tts mode pass: the budget of their SearchConfig
    from psr.search import SearchConfig

    cfg = SearchConfig(width=3, judge_orders=1, max_iterations=2, max_new_tokens_step=16, max_new_tokens_judge=8)
    assert cfg.token_budget(3) == 3 * 2 * (3 * 16 + 3 * 8)


def test_make_generator_logs_the_auto_choice_and_reason(monkeypatch, tiny_model_dir, caplog, capsys):
    import logging

    monkeypatch.setattr(factory, "vllm_available", lambda: True)
    with caplog.at_level(logging.INFO, logger="psr.generation.factory"):
        g = make_generator("auto", str(tiny_model_dir), device="cpu", dtype="float32", expected_tokens=100, stage="eval")
    assert g.name == "native"
    assert "generation backend auto -> native: CPU, token budget 100 < the measured break-even" in caplog.text
    assert "generation backend auto -> native" in capsys.readouterr().out


def test_unknown_backend_is_named_by_choose_backend():
    with pytest.raises(ValueError, match=r"unknown generation backend 'Auto'"):
        factory.choose_backend("Auto", 10)


def test_vllm_backend_without_vllm_installed_says_so(monkeypatch):
    monkeypatch.setattr(factory, "vllm_available", lambda: False)
    with pytest.raises(ImportError, match="needs the vllm package.*backend=native"):
        make_generator("vllm", "/nonexistent")


def _without_vllm_modules(monkeypatch):
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)


def test_vllm_available_finds_an_installed_package_without_importing_it(tmp_path, monkeypatch):
    # a vllm package on the path whose import would fail: found, and never imported (importing the
    # real one takes seconds and starts its plugin machinery)
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text("raise RuntimeError('vllm must not be imported')\n")
    _without_vllm_modules(monkeypatch)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert factory.vllm_available() is True
    assert "vllm" not in sys.modules


def test_vllm_available_is_false_when_vllm_cannot_be_imported(monkeypatch):
    _without_vllm_modules(monkeypatch)
    monkeypatch.setitem(sys.modules, "vllm", None)  # Python's marker for "this import fails"
    assert factory.vllm_available() is False
    # and then auto falls back to native with the reason, and backend=vllm names the fix
    assert factory.choose_backend("auto", 10**12, "search", "cuda") == ("native", "vllm is not installed")
    with pytest.raises(ImportError, match="needs the vllm package.*backend=native"):
        make_generator("vllm", "/nonexistent")


def test_a_stage_where_vllm_never_pays_back_stays_native(monkeypatch):
    monkeypatch.setattr(factory, "vllm_available", lambda: True)
    monkeypatch.setitem(factory.CPU_BREAK_EVEN_TOKENS, "eval", None)
    kind, why = factory.choose_backend("auto", 10**12, "eval", "cpu")
    assert kind == "native" and "no faster per token" in why
    assert factory.resolve_backend("auto", 10**12, "eval", "cuda") == "vllm"
