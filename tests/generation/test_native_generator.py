"""The native torch Generator: greedy parity with transformers ``generate``, left padding,
stop strings, shared prefill, per-sequence seeded sampling, limits and input errors."""

from __future__ import annotations

import pytest
import torch

from psr.generation import Completion, Generator, SamplingParams
from psr.generation.native import NativeGenerator
from psr.generation.sampling import sample_tokens, sequence_keys, stream_uniforms
from psr.models.tiny import build_tiny_model_dir

PROMPTS = [
    "Step 1: We compute",
    "a",
    "Problem: what is 2 + 2? Let's think step by step and show the work. Step 1:",
    "Assistant A is better because",
    "0123456789 + - * / = ( ) [ ] { } \\frac \\sqrt \\boxed [[A]] [[B]] $ % . , ; : ? ! and then",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny models gain nothing from threads; on a loaded 2-core machine the reference
    ``generate`` calls run several times slower with two spinning threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random qwen2 whose weights are re-drawn with a larger scale, so that greedy
    output varies from token to token instead of repeating one token (a stronger test of
    positions and padding)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = build_tiny_model_dir(tmp_path_factory.mktemp("tiny_base"))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    out = tmp_path_factory.mktemp("tiny_sharp")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def gen(model_dir):
    return NativeGenerator(model_dir, device="cpu", dtype="float32", return_token_ids=True)


@pytest.fixture(scope="module")
def hf(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def hf_greedy(hf, tok, prompts, max_new_tokens, eos_ids):
    """transformers ``generate`` greedy on the prompts batched with left padding: token ids per
    prompt up to and including the first EOS."""
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = hf.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos_ids,
                          pad_token_id=tok.pad_token_id)
    res = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        cut = next((k + 1 for k, t in enumerate(row) if t in eos_ids), len(row))
        res.append(row[:cut])
    return res


def test_native_generator_satisfies_protocol(gen):
    assert isinstance(gen, Generator)
    assert gen.name == "native" and "transformers" in gen.version
    assert gen.dtype == torch.float32


def test_greedy_equals_transformers_generate_alone_and_left_padded(gen, hf):
    tok = gen.tokenizer
    lens = [len(tok(p)["input_ids"]) for p in PROMPTS]
    assert len(set(lens)) == len(lens) and min(lens) == 1  # really different lengths
    eos = gen.eos_ids
    ours = gen.generate(PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=24))
    alone = [hf_greedy(hf, tok, [p], 24, eos)[0] for p in PROMPTS]
    batched = hf_greedy(hf, tok, PROMPTS, 24, eos)
    assert batched == alone  # the reference itself is consistent
    for (c,), ref in zip(ours, alone):
        assert c.extra["token_ids"] == ref
        assert c.n_tokens == len(ref) == 24 and c.finish_reason == "length"
        assert c.text == tok.decode(ref, skip_special_tokens=True)
    # the outputs are not degenerate (a repeated token would hide position errors)
    assert all(len(set(c.extra["token_ids"])) > 8 for (c,) in ours)


def test_greedy_stops_at_eos_like_transformers(model_dir, hf):
    """Make a token that greedy emits mid-way the EOS: both engines stop there, EOS counted."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    free = hf_greedy(hf, tok, PROMPTS[:3], 16, [tok.eos_token_id])
    eos_tok = free[0][5]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.generation_config.eos_token_id = eos_tok
    g = NativeGenerator(model=model, tokenizer=tok, device="cpu", return_token_ids=True)
    assert eos_tok in g.eos_ids and tok.eos_token_id in g.eos_ids
    ours = g.generate(PROMPTS[:3], SamplingParams(temperature=0.0, max_new_tokens=16))
    ref = hf_greedy(hf, tok, PROMPTS[:3], 16, g.eos_ids)
    for (c,), r, f in zip(ours, ref, free):
        assert c.extra["token_ids"] == r
        if eos_tok in f:
            k = f.index(eos_tok)
            assert c.finish_reason == "eos" and c.n_tokens == k + 1
            assert c.text == tok.decode(f[:k], skip_special_tokens=True)
        else:
            assert c.finish_reason == "length"
    assert ours[0][0].finish_reason == "eos" and ours[0][0].n_tokens == 6


def test_stop_strings_cut_before_earliest_occurrence(gen):
    tok = gen.tokenizer
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=40)
    seeds = [11, 12, 13, 14, 15]
    free = gen.generate(PROMPTS, params, seeds=seeds)
    stops, expected = [], []
    for cs in free:
        ids = cs[0].extra["token_ids"]
        text = cs[0].text
        # a 3-character printable ASCII substring from the middle of sample 0
        k = next(k for k in range(8, len(text) - 3) if all(32 <= ord(ch) < 127 for ch in text[k:k + 3]))
        stop = text[k:k + 3]
        stops.append([stop, "\x00never"])
        per_sample = []
        for c in cs:
            t, ids = c.text, c.extra["token_ids"]
            if stop in t:
                n = next(n for n in range(1, len(ids) + 1) if stop in tok.decode(ids[:n], skip_special_tokens=True))
                per_sample.append((t[: t.index(stop)], n, "stop"))
            else:
                per_sample.append((t, c.n_tokens, c.finish_reason))
        expected.append(per_sample)
    got = gen.generate(PROMPTS, params, stops=stops, seeds=seeds)
    assert [[(c.text, c.n_tokens, c.finish_reason) for c in cs] for cs in got] == expected
    assert all(cs[0].finish_reason == "stop" for cs in got)
    for cs, (stop, _) in zip(got, stops):
        assert all(stop not in c.text for c in cs)
    # params.stop applies to every prompt, on top of stops[i]; a stop at the very start → ""
    first = free[0][0].text[:1]
    got2 = gen.generate(PROMPTS[:1], SamplingParams(n=1, temperature=1.0, max_new_tokens=40, stop=(first,)),
                        stops=[["zzzz"]], seeds=seeds[:1])
    assert got2[0][0].text == "" and got2[0][0].finish_reason == "stop"


def test_samples_of_a_prompt_share_one_prefill(gen):
    gen.stats.clear()
    out = gen.generate([PROMPTS[0], PROMPTS[2], PROMPTS[0]], SamplingParams(n=4, temperature=1.0, max_new_tokens=8),
                       seeds=[1, 2, 3])
    assert gen.stats["prefill_prompts"] == 2  # two unique prompt texts, 12 sequences
    assert [len(cs) for cs in out] == [4, 4, 4]
    assert len({c.text for c in out[0]}) == 4  # the 4 samples differ
    assert [c.text for c in out[0]] != [c.text for c in out[2]]  # same prompt, other seed


def test_finished_sequences_leave_the_batch(model_dir, gen):
    """With compact_fraction=0 each sequence is decoded once per token after its first (which
    comes from the prefill) and never after it finished: decode rows == sum(n_tokens - 1).
    With the default lazy compaction finished rows are bounded by the fraction."""
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=30, stop=("e", "1"))
    eager = NativeGenerator(model_dir, device="cpu", dtype="float32", compact_fraction=0.0)
    out = eager.generate(PROMPTS, params, seeds=list(range(5)))
    lens = [c.n_tokens for cs in out for c in cs]
    assert min(lens) < 10 and max(lens) > 12  # they really finish at different times
    assert eager.stats["decode_rows"] == sum(n - 1 for n in lens)
    assert eager.stats["generated_tokens"] == sum(lens)
    assert eager.stats["compactions"] > 3
    gen.stats.clear()
    assert gen.generate(PROMPTS, params, seeds=list(range(5))) == [
        [c for c in cs] for cs in gen.generate(PROMPTS, params, seeds=list(range(5)))]
    lazy_rows = gen.stats["decode_rows"] / 2
    useful = sum(n - 1 for n in lens)
    assert useful <= lazy_rows <= useful / (1 - gen.compact_fraction) + len(lens)


def test_shared_prefix_is_prefilled_once_and_greedy_still_matches_transformers(model_dir, hf):
    """Judge-like prompts: a long common head, then different tails of different lengths."""
    g = NativeGenerator(model_dir, device="cpu", dtype="float32", return_token_ids=True)
    tok = g.tokenizer
    head = "Please act as an impartial judge and evaluate the quality of two next reasoning steps. "
    tails = ["Step A: 1 + 1 = 2", "Step A: 2 + 2 = 4 so the answer is 4.", "[[B]]", "Assistant B is better"]
    other = "Step 1: We compute 3 + 3"
    prompts = [head + t for t in tails] + [other]
    full = [tok(p)["input_ids"] for p in prompts]
    common = next(k for k in range(len(full[0])) if any(f[k] != full[0][k] for f in full[1:4]))
    assert common >= 16
    ours = g.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=12))
    assert g.stats["shared_prefix_tokens"] == 3 * common
    assert g.stats["prefill_tokens"] == sum(map(len, full)) - 3 * common
    alone = [hf_greedy(hf, tok, [p], 12, g.eos_ids)[0] for p in prompts]
    assert [c.extra["token_ids"] for (c,) in ours] == alone
    # sampling: the same samples with and without prefix sharing
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=12)
    off = NativeGenerator(model_dir, device="cpu", dtype="float32", share_prefix_min_tokens=0)
    a = g.generate(prompts, params, seeds=[1, 2, 3, 4, 5])
    b = off.generate(prompts, params, seeds=[1, 2, 3, 4, 5])
    assert [[c.text for c in cs] for cs in a] == [[c.text for c in cs] for cs in b]
    assert off.stats["shared_prefix_tokens"] == 0


def test_same_seed_same_samples_alone_or_batched(gen, model_dir):
    params = SamplingParams(n=3, temperature=0.9, top_p=0.95, max_new_tokens=20)
    stops = [["Step"], [], ["."], [], ["]]"]]
    seeds = [5, 6, 7, 8, 9]
    a = gen.generate(PROMPTS, params, stops=stops, seeds=seeds)
    b = gen.generate(PROMPTS, params, stops=stops, seeds=seeds)
    assert a == b
    alone = gen.generate([PROMPTS[2]], params, stops=[stops[2]], seeds=[7])
    assert alone[0] == a[2]
    # other companions, other position, and a small batch that admits prompts into a running
    # batch (continuous batching with left-padded cache merges)
    small = NativeGenerator(model_dir, device="cpu", dtype="float32", max_batch_size=4, admit_fraction=0.25,
                            return_token_ids=True)
    order = [4, 2, 0, 3, 1]
    c = small.generate([PROMPTS[i] for i in order], params, stops=[stops[i] for i in order],
                       seeds=[seeds[i] for i in order])
    assert [cs for cs in c] == [a[i] for i in order]
    assert small.stats["prefill_prompts"] >= 5 and small.stats["forward_calls"] > gen.stats["forward_calls"] / 10
    other = gen.generate(PROMPTS, params, stops=stops, seeds=[5, 6, 70, 8, 9])
    assert other[2] != a[2] and other[0] == a[0]


def test_token_budget_limits_the_batch_and_keeps_results(gen, model_dir):
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=12)
    ref = gen.generate(PROMPTS, params, seeds=[1, 2, 3, 4, 5])
    tight = NativeGenerator(model_dir, device="cpu", dtype="float32", max_batch_tokens=240, kv_grow=3,
                            return_token_ids=True)
    assert tight.generate(PROMPTS, params, seeds=[1, 2, 3, 4, 5]) == ref
    assert tight.stats["prefill_prompts"] == 5


def test_tiny_top_p_is_greedy(gen):
    greedy = gen.generate(PROMPTS, SamplingParams(n=1, temperature=0.0, max_new_tokens=16))
    nucleus = gen.generate(PROMPTS, SamplingParams(n=2, temperature=1.5, top_p=1e-6, max_new_tokens=16),
                           seeds=[1, 2, 3, 4, 5])
    for (g,), cs in zip(greedy, nucleus):
        assert [c.text for c in cs] == [g.text, g.text]


def test_greedy_n_samples_are_computed_once(gen):
    gen.stats.clear()
    out = gen.generate(PROMPTS[:2], SamplingParams(n=3, temperature=0.0, max_new_tokens=5))
    assert [len(cs) for cs in out] == [3, 3]
    assert all(c == cs[0] for cs in out for c in cs)
    assert all(len({id(c) for c in cs}) == 3 for cs in out)  # copies, not one shared object
    assert gen.stats["generated_tokens"] == 10


def test_max_new_tokens_respected(gen):
    out = gen.generate(PROMPTS, SamplingParams(n=2, temperature=1.0, max_new_tokens=7), seeds=[0] * 5)
    for cs in out:
        for c in cs:
            assert c.n_tokens <= 7 and len(c.extra["token_ids"]) == c.n_tokens
            assert c.finish_reason in ("length", "eos")
            if c.finish_reason == "length":
                assert c.n_tokens == 7


def test_empty_prompt_list_and_bad_inputs(gen):
    p = SamplingParams(n=1, max_new_tokens=4)
    assert gen.generate([], p) == []
    with pytest.raises(ValueError, match="stops has 1 entries for 2 prompts"):
        gen.generate(["a", "b"], p, stops=[["x"]])
    with pytest.raises(ValueError, match="seeds has 3 entries"):
        gen.generate(["a", "b"], p, seeds=[1, 2, 3])
    with pytest.raises(TypeError, match=r"prompts\[1\] must be a str"):
        gen.generate(["a", 3], p)
    with pytest.raises(ValueError, match=r"prompts\[0\] encodes to no tokens"):
        gen.generate([""], p)
    with pytest.raises(TypeError, match="list of strings"):
        gen.generate(["a"], p, stops=["x"])
    with pytest.raises(TypeError, match="not a bare str"):
        gen.generate("ab", p)
    with pytest.raises(TypeError, match="SamplingParams"):
        gen.generate(["a"], {"n": 1})
    with pytest.raises(ValueError, match="n must be >= 1"):
        SamplingParams(n=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="dtype must be"):
        NativeGenerator(model=gen.model, tokenizer=gen.tokenizer, dtype="float8")
    with pytest.raises(ValueError, match="max_batch_size"):
        NativeGenerator(model=gen.model, tokenizer=gen.tokenizer, max_batch_size=0)


def test_bf16_runs_and_mostly_agrees_with_fp32(model_dir, gen):
    g16 = NativeGenerator(model_dir, device="cpu", dtype="bfloat16", return_token_ids=True)
    assert g16.dtype == torch.bfloat16 and next(g16.model.parameters()).dtype == torch.bfloat16
    p = SamplingParams(temperature=0.0, max_new_tokens=8)
    a = gen.generate(PROMPTS, p)
    b = g16.generate(PROMPTS, p)
    first_tokens_equal = sum(x[0].extra["token_ids"][0] == y[0].extra["token_ids"][0] for x, y in zip(a, b))
    assert first_tokens_equal >= 3


def test_sampling_streams_are_per_sequence_and_counter_based():
    keys = sequence_keys([1, 1, 2], [0, 1, 0])
    assert len(set(keys.tolist())) == 3
    import numpy as np

    u1 = stream_uniforms(keys, np.array([0, 0, 0]))
    u2 = stream_uniforms(keys[:1], np.array([0]))
    assert u1[0] == u2[0] and ((0 <= u1) & (u1 < 1)).all()
    assert stream_uniforms(keys[:1], np.array([1]))[0] != u1[0]
    # inverse-CDF sampling: u below the first token's mass picks token 0, above picks token 1
    logits = torch.log(torch.tensor([[0.25, 0.75], [0.25, 0.75]]))
    tok = sample_tokens(logits, 1.0, 1.0, torch.tensor([0.2, 0.3], dtype=torch.float64))
    assert tok.tolist() == [0, 1]
    # top_p keeps the smallest most-likely set reaching p: only token 1 here
    tok = sample_tokens(logits, 1.0, 0.7, torch.tensor([0.0, 0.999], dtype=torch.float64))
    assert tok.tolist() == [1, 1]
    # an empirical check of the distribution
    u = torch.rand(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = sample_tokens(torch.log(torch.tensor([[0.1, 0.2, 0.7]])).expand(20000, 3), 1.0, 1.0, u)
    freq = torch.bincount(t, minlength=3).double() / 20000
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64), atol=0.015)


def test_closed_generator_refuses_to_generate(model_dir):
    g = NativeGenerator(model_dir, device="cpu", dtype="float32")
    g.close()
    with pytest.raises(RuntimeError, match="closed"):
        g.generate(["a"], SamplingParams(max_new_tokens=2))


def test_completion_fields(gen):
    (c,), = gen.generate(["Hello"], SamplingParams(temperature=0.0, max_new_tokens=3))
    assert isinstance(c, Completion) and c.n_tokens == 3 and isinstance(c.text, str)


@pytest.mark.gpu
def test_greedy_on_cuda_matches_transformers_on_cuda(model_dir):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from transformers import AutoModelForCausalLM

    g = NativeGenerator(model_dir, device="cuda", dtype="float32", return_token_ids=True)
    assert g.attn_implementation == "sdpa"
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).cuda().eval()
    tok = g.tokenizer
    ours = g.generate(PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=16))
    for p, (c,) in zip(PROMPTS, ours):
        enc = tok([p], return_tensors="pt").to("cuda")
        with torch.inference_mode():
            out = hf.generate(**enc, do_sample=False, max_new_tokens=16, eos_token_id=g.eos_ids,
                              pad_token_id=tok.pad_token_id)
        ref = out[0, enc["input_ids"].shape[1]:].tolist()
        assert c.extra["token_ids"] == ref[: len(c.extra["token_ids"])] and len(ref) == c.n_tokens
    # seeded sampling is reproducible on the GPU too
    p = SamplingParams(n=3, temperature=1.0, max_new_tokens=16)
    assert g.generate(PROMPTS, p, seeds=[1, 2, 3, 4, 5]) == g.generate(PROMPTS, p, seeds=[1, 2, 3, 4, 5])


def test_cpu_threads_apply_during_generation_only(model_dir, monkeypatch):
    import os

    cores = os.cpu_count() or 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert NativeGenerator(model_dir, device="cpu", dtype="float32").cpu_threads == cores  # tiny model, one process
    # an explicit OMP_NUM_THREADS caps it: two processes started with OMP_NUM_THREADS=1 on two
    # cores must not each spin two threads (measured: step search 10-20x slower)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert NativeGenerator(model_dir, device="cpu", dtype="float32").cpu_threads == 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores + 4))
    assert NativeGenerator(model_dir, device="cpu", dtype="float32").cpu_threads == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "x")  # not a number: ignored
    assert NativeGenerator(model_dir, device="cpu", dtype="float32").cpu_threads == cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores))  # one torchrun rank per core: one thread each
    g = NativeGenerator(model_dir, device="cpu", dtype="float32")
    assert g.cpu_threads == 1
    seen = []
    fwd = g._forward
    g._forward = lambda *a, **k: (seen.append(torch.get_num_threads()), fwd(*a, **k))[1]
    torch.set_num_threads(2)
    try:
        g.generate(["a"], SamplingParams(max_new_tokens=2))
        assert set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert NativeGenerator(model=g.model, tokenizer=g.tokenizer, cpu_threads=None).cpu_threads is None
    with pytest.raises(ValueError, match="cpu_threads"):
        NativeGenerator(model=g.model, tokenizer=g.tokenizer, cpu_threads=0)


def test_top_p_from_top_k_picks_the_same_tokens_as_a_full_sort():
    """The nucleus is searched among the top-16 tokens first; rows whose nucleus is larger, and
    rows with ties across the 16th place, fall back to the full stable sort: same tokens."""
    g = torch.Generator().manual_seed(0)
    V = 300
    logits = torch.randn(64, V, generator=g) * 6  # peaked rows: nucleus within the top 16
    logits[:8] = torch.randn(8, V, generator=g) * 0.1  # flat rows: nucleus far beyond 16
    logits[8:12] = 0.0  # all tokens tied
    logits[12, :40] = 50.0  # 40 tied top tokens straddle the 16th place
    u = torch.rand(64, dtype=torch.float64, generator=g)
    for temperature, top_p in ((0.5, 0.95), (1.0, 0.9), (1.0, 1e-6), (2.0, 0.999)):
        fast = sample_tokens(logits, temperature, top_p, u)
        full = sample_tokens(logits, temperature, top_p, u, top_k_first=V)
        assert fast.tolist() == full.tolist()
    # a tie at the top with a tiny top_p: the lowest token id wins, as in a stable sort
    assert sample_tokens(logits[8:13], 1.0, 1e-6, u[8:13]).tolist() == [0, 0, 0, 0, 0]


def test_bf16_matmuls_keep_the_model_fp32_and_follow_weight_updates(model_dir, gen):
    """matmul_dtype="bfloat16": the linear layers run in bf16 only while generating; the shared
    model is left unpatched (fp32 parameters, fp32 outputs) and a weight changed in place between
    calls is re-copied."""
    mixed = NativeGenerator(model=gen.model, tokenizer=gen.tokenizer, device="cpu", dtype="float32",
                            matmul_dtype="bfloat16", return_token_ids=True)
    assert mixed.dtype == torch.float32 and mixed.matmul_dtype == torch.bfloat16
    p = SamplingParams(temperature=0.0, max_new_tokens=8)
    a = gen.generate(PROMPTS, p)
    b = mixed.generate(PROMPTS, p)
    assert sum(x[0].extra["token_ids"][0] == y[0].extra["token_ids"][0] for x, y in zip(a, b)) >= 3
    assert b != a  # bf16 rounding really was in effect (the sharp tiny model amplifies it)
    assert all("forward" not in m.__dict__ for m in gen.model.modules())
    assert gen.generate(PROMPTS, p) == a  # the fp32 generator on the same model is unaffected
    lm = gen.model.get_output_embeddings()
    with torch.no_grad():
        saved = lm.weight.clone()
        lm.weight.mul_(-1.0)  # in place: the bf16 copy must follow
        flipped = mixed.generate(PROMPTS, p)
        ref = gen.generate(PROMPTS, p)
        lm.weight.copy_(saved)
    assert flipped != b
    assert sum(x[0].extra["token_ids"][0] == y[0].extra["token_ids"][0] for x, y in zip(flipped, ref)) >= 3
    assert mixed.generate(PROMPTS, p) == b


def test_auto_matmul_dtype_is_bf16_only_for_auto_fp32_on_a_bf16_cpu(model_dir, gen, monkeypatch):
    from psr.generation import native

    monkeypatch.setattr(native, "_cpu_has_native_bf16", lambda: True)
    auto = NativeGenerator(model_dir, device="cpu")  # hidden < 512: fp32 activations
    assert auto.dtype == torch.float32 and auto.matmul_dtype == torch.bfloat16
    assert NativeGenerator(model_dir, device="cpu", dtype="float32").matmul_dtype == torch.float32
    assert NativeGenerator(model=gen.model, tokenizer=gen.tokenizer).matmul_dtype == torch.float32
    monkeypatch.setattr(native, "_cpu_has_native_bf16", lambda: False)
    assert NativeGenerator(model_dir, device="cpu").matmul_dtype == torch.float32
