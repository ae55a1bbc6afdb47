"""IFT/EFT schemas, SFT encoding, the response-only loss mask, mixture and collation."""

import json

import pytest
import torch
import torch.nn.functional as F

from psr.data.jsonl import DataError
from psr.data.schemas import load_eft, load_ift
from psr.models.tiny import build_tiny_tokenizer
from psr.training.forward import labeled_logits
from psr.training.losses import sft_loss, token_logps
from psr.training.sft_data import collate_sft, encode_example, mixture_indices

GOOD_IFT = {"id": "a", "question": "What is 1+1?", "steps": ["Add.", "1 + 1 = 2, \\boxed{2}."]}
GOOD_EFT = {"id": "e", "question": "What is 1+1?", "prev_steps": [], "step_a": "1 + 1 = 2", "step_b": "Step 1: 1 + 1 = 3",
            "judgment": "A is right. [[A]]", "label": "A"}


def _write(tmp_path, name, recs):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs))
    return p


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def test_valid_records_load_and_headed_steps_are_normalised(tmp_path):
    ift = load_ift(_write(tmp_path, "i.jsonl", [GOOD_IFT, {**GOOD_IFT, "id": 2, "steps": ["Step 1: Add.", "Step 2: \\boxed{2}"]}]))
    assert ift[1]["steps"] == ["Add.", "\\boxed{2}"]
    eft = load_eft(_write(tmp_path, "e.jsonl", [GOOD_EFT]))
    assert eft[0]["label"] == "A" and eft[0]["prev_steps"] == []


@pytest.mark.parametrize(
    "rec, msg",
    [
        ({"id": 1, "question": "q"}, r"i\.jsonl:2: missing field\(s\) \['steps'\]"),
        ({**GOOD_IFT, "steps": []}, r"i\.jsonl:2: field 'steps' is an empty list"),
        ({**GOOD_IFT, "steps": ["ok", ""]}, r"i\.jsonl:2: steps\[1\] \(step 2\) is empty"),
        ({**GOOD_IFT, "steps": ["no answer"]}, r"i\.jsonl:2: the last step has no \\boxed"),
        ({**GOOD_IFT, "question": "  "}, r"i\.jsonl:2: field 'question' is empty"),
        ({**GOOD_IFT, "steps": "Step 1: x"}, r"i\.jsonl:2: field 'steps' must be a list"),
        ("[1, 2]", r"i\.jsonl:2: expected a JSON object"),
        ("{oops", r"i\.jsonl:2: not valid JSON"),
    ],
)
def test_bad_ift_lines_are_named_by_file_and_line(tmp_path, rec, msg):
    with pytest.raises(DataError, match=msg):
        load_ift(_write(tmp_path, "i.jsonl", [GOOD_IFT, rec]))


@pytest.mark.parametrize(
    "change, msg",
    [
        ({"label": "C"}, r"e\.jsonl:1: field 'label' must be \"A\" or \"B\""),
        ({"judgment": "no verdict"}, r"e\.jsonl:1: 'judgment' does not end in a \[\[A\]\]/\[\[B\]\] verdict"),
        ({"judgment": "B wins [[B]]"}, r"e\.jsonl:1: 'judgment' verdict \[\[B\]\] disagrees with label 'A'"),
        ({"prev_steps": ["x", " "]}, r"e\.jsonl:1: prev_steps\[1\] \(step 2\) is empty"),
        ({"step_b": ""}, r"e\.jsonl:1: field 'step_b' is empty"),
    ],
)
def test_bad_eft_records_are_named_by_file_and_line(tmp_path, change, msg):
    with pytest.raises(DataError, match=msg):
        load_eft(_write(tmp_path, "e.jsonl", [{**GOOD_EFT, **change}]))


def test_loss_mask_covers_response_tokens_and_eos_only(tok):
    ex, status = encode_example(tok, "PROMPT text here\n", "Step 1: 2 + 2 = 4", max_seq_len=100)
    p = tok("PROMPT text here\n", add_special_tokens=False)["input_ids"]
    r = tok("Step 1: 2 + 2 = 4", add_special_tokens=False)["input_ids"]
    assert status == "ok"
    assert ex.input_ids == p + r + [tok.eos_token_id]
    assert ex.labels == [-100] * len(p) + r + [tok.eos_token_id]


def test_overlong_truncate_keeps_prompt_and_cuts_response_drop_removes(tok):
    p = tok("PROMPT text here\n", add_special_tokens=False)["input_ids"]
    ex, status = encode_example(tok, "PROMPT text here\n", "Step 1: 2 + 2 = 4", max_seq_len=len(p) + 2)
    assert status == "truncated" and len(ex.input_ids) == len(p) + 2 and ex.input_ids[: len(p)] == p
    assert sum(l != -100 for l in ex.labels) == 2
    assert encode_example(tok, "PROMPT text here\n", "Step 1: 2 + 2 = 4", len(p) + 2, "drop") == (None, "dropped")
    assert encode_example(tok, "PROMPT text here\n", "x", len(p), "truncate") == (None, "dropped")


def test_sft_loss_equals_masked_cross_entropy_and_ignores_prompt_logits(tok):
    from psr.models.tiny import build_tiny_model

    model = build_tiny_model(vocab_size=len(tok), seed=1)
    exs = [encode_example(tok, "a prompt\n", "Step 1: x = 3", 64)[0], encode_example(tok, "a much longer prompt here\n", "ok", 64)[0]]
    batch = collate_sft(exs, tok.pad_token_id)
    assert batch["n_units"] == sum(sum(l != -100 for l in e.labels) for e in exs)
    with torch.no_grad():
        logits, targets = labeled_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        loss_sum, n = sft_loss(logits, targets)
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # reference: shift by one, mask everything that is not a response token
    ref_targets = batch["labels"][:, 1:]
    ref = F.cross_entropy(full[:, :-1].reshape(-1, full.shape[-1]), ref_targets.reshape(-1), ignore_index=-100, reduction="sum")
    assert n == batch["n_units"]
    torch.testing.assert_close(loss_sum, ref, rtol=1e-5, atol=1e-5)
    assert logits.shape[1] < full.shape[1]  # no head over positions that predict prompt tokens only
    # changing the logits at prompt positions does not change the loss
    noisy = full.clone()
    prompt_pos = batch["labels"][:, 1:] == -100
    noisy[:, :-1][prompt_pos] += 100 * torch.randn_like(noisy[:, :-1][prompt_pos])
    ref2 = F.cross_entropy(noisy[:, :-1].reshape(-1, full.shape[-1]), ref_targets.reshape(-1), ignore_index=-100, reduction="sum")
    torch.testing.assert_close(ref2, ref)
    lp = token_logps(logits, targets)
    torch.testing.assert_close(-lp.sum(), loss_sum, rtol=1e-5, atol=1e-5)


def test_mixture_fraction_sets_the_share_of_eft_examples():
    sources = ["ift"] * 30 + ["eft"] * 4
    assert mixture_indices(sources, 0, 0, None) == list(range(34))
    idx = mixture_indices(sources, 0, 0, 0.25)  # 30 IFT -> 10 EFT, cycling through the 4 available
    assert len(idx) == 40 and sum(sources[i] == "eft" for i in idx) == 10
    assert sorted(set(i for i in idx if i >= 30)) == [30, 31, 32, 33]
    assert mixture_indices(sources, 1, 0, 0.25) != idx  # re-drawn per epoch
    assert mixture_indices(sources, 0, 0, 0.25) == idx  # deterministic
    assert mixture_indices(sources, 0, 0, 1.0) == [30, 31, 32, 33]
    assert mixture_indices(sources, 0, 0, 0.0) == list(range(30))
    with pytest.raises(ValueError, match="eft_fraction"):
        mixture_indices(sources, 0, 0, 1.5)


def test_text_records_use_no_chat_template_and_mask_the_prompt(tmp_path, tok):
    from psr.data.schemas import load_text
    from psr.training.sft_data import build_sft_examples

    recs = load_text(_write(tmp_path, "t.jsonl", [{"id": 1, "prompt": "What is 2+2?\n", "response": "4"},
                                                  {"id": 2, "prompt": "", "response": "free text"}]))
    exs, stats = build_sft_examples(tok, [], [], 64, text=recs)
    assert stats == {"ift": 0, "eft": 0, "text": 2, "truncated": 0, "dropped": 0}
    p = tok("What is 2+2?\n", add_special_tokens=False)["input_ids"]
    assert exs[0].input_ids[: len(p)] == p and "<|im_start|>" not in tok.decode(exs[0].input_ids)
    assert tok.decode([t for t in exs[0].labels if t != -100]) == "4<|im_end|>"
    assert all(l != -100 for l in exs[1].labels)  # empty prompt: every token is response
    with pytest.raises(DataError, match=r"t\.jsonl:1: field 'response' is empty"):
        load_text(_write(tmp_path, "t.jsonl", [{"id": 1, "prompt": "q", "response": ""}]))
