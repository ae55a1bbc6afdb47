import pytest

from psr import prompts
from psr.arith.data import eft_records
from psr.arith.model import ArithModelConfig, build_model_dir, load_model_config, n_params
from psr.arith.problems import make_splits
from psr.arith.tokenizer import build_arith_tokenizer, tokenizer_corpus
from psr.steps import format_steps


@pytest.fixture(scope="module")
def tok():
    return build_arith_tokenizer()


@pytest.fixture(scope="module")
def splits():
    return make_splits(200, 200, seed=0)


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_tokenizer_is_deterministic(tok):
    assert build_arith_tokenizer().backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    small = tokenizer_corpus(n_problems=30)
    assert small == tokenizer_corpus(n_problems=30)
    assert build_arith_tokenizer(600, small).get_vocab() == build_arith_tokenizer(600, small).get_vocab()


def test_special_tokens_and_chat_template(tok):
    assert len(tok) == 2048
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    text = prompts.chat(tok, "Hi")
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert ids(tok, text)[0] == 1 and 2 in ids(tok, text)


@pytest.mark.parametrize(
    "text",
    ["Step 1: 3 * 12 = 36 apples.\nStep 2: \\boxed{41}", "  odd   spacing\t\ttabs\n\n", "ünïcödé — “quotes” 😀 ½", "1,234.50 $"],
)
def test_round_trip(tok, text):
    assert tok.decode(ids(tok, text)) == text


def test_digits_are_single_tokens(tok):
    pieces = tok.convert_ids_to_tokens(ids(tok, "9876543210 + 12 = 9876543222"))
    digits = [p for p in pieces if any(c.isdigit() for c in p)]
    assert digits == list("9876543210") + list("12") + list("9876543222")


def test_step_boundaries_tokenize_like_training_text(tok, splits):
    # the policy prompt for step l is a prefix of the training text, ending in "\n": its tokens
    # must be a prefix of the training sequence's tokens
    for p in splits[0][:50]:
        head = prompts.chat(tok, prompts.reasoning_prompt(p.question))
        full = ids(tok, head + format_steps(p.steps))
        for l in range(1, len(p.steps) + 1):
            prefix = ids(tok, head + format_steps(p.steps[: l - 1]))
            assert full[: len(prefix)] == prefix


def test_sequences_are_short(tok, splits):
    train, test = splits

    def ift_len(p):
        return len(ids(tok, prompts.chat(tok, prompts.reasoning_prompt(p.question)) + format_steps(p.steps) + "<|im_end|>"))

    assert len(ids(tok, prompts.JUDGE_PROMPT)) < 40 and len(ids(tok, prompts.REASONING_PROMPT)) < 15
    assert max(ift_len(p) for p in train) <= 130
    assert max(ift_len(p) for p in test) <= 200
    eft = eft_records(train[:100], seed=0) + eft_records(test[:100], seed=0)
    eft_lens = [
        len(ids(tok, prompts.chat(tok, prompts.judge_prompt(r["question"], r["prev_steps"], r["step_a"], r["step_b"]))
                 + r["judgment"] + "<|im_end|>"))
        for r in eft
    ]
    assert max(eft_lens) <= 220


def test_model_dir_loads_with_transformers(tmp_path, tok, splits):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = load_model_config("configs/arith/model.yaml")
    assert cfg == ArithModelConfig()
    assert 1_000_000 <= n_params(cfg) <= 10_000_000
    path = build_model_dir(tmp_path / "m", cfg, tokenizer=tok)
    model = AutoModelForCausalLM.from_pretrained(path)
    built, tok = tok, AutoTokenizer.from_pretrained(path)
    # the loaded tokenizer is the built one (a qwen2 dir would come back with Qwen2's regex:
    # ~5x longer sequences than the model was meant to see)
    p = splits[1][0]
    texts = [prompts.chat(tok, prompts.reasoning_prompt(p.question)) + format_steps(p.steps),
             prompts.chat(tok, prompts.judge_prompt(p.question, p.steps[:1], p.steps[1], p.steps[1]))]
    for text in texts:
        assert ids(tok, text) == ids(built, text)
    assert len(ids(tok, texts[0])) < 200
    assert sum(x.numel() for x in model.parameters()) == n_params(cfg)
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tok) == 2048
    assert model.config.eos_token_id == tok.eos_token_id == 2 and tok.pad_token_id == 0
    enc = tok([prompts.chat(tok, "Tom has 3 apples.")], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], 2048)
    assert build_model_dir(tmp_path / "m", cfg) == path  # reused, not rebuilt
    with pytest.raises(ValueError, match="vocab_size=1000"):
        build_model_dir(tmp_path / "m2", ArithModelConfig(vocab_size=1000), tokenizer=tok)


def test_model_config_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "model.yaml"
    bad.write_text("hidden_size: 64\nhiden_layers: 2\n")
    with pytest.raises(ValueError, match=r"model.yaml: unknown key\(s\) \['hiden_layers'\]"):
        load_model_config(bad)
    assert load_model_config(None, hidden_size=64).hidden_size == 64
