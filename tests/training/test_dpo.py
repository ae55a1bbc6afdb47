"""Step DPO: the loss (closed form, torchtune cross-check), mask correctness, left-padded
batching against unpadded forwards, the pair loader and the reference-cache key."""

import json
import math

import pytest
import torch

from psr.data.jsonl import DataError
from psr.data.pairs import PairStats, load_pairs
from psr.prompts import chat, reasoning_prompt
from psr.steps import format_step, format_steps
from psr.training.dpo import (
    TokenizeStats,
    collate_pairs,
    compute_reference_logps,
    dpo_loss,
    forward_logps,
    load_or_compute_reference,
    model_fingerprint,
    reference_cache_key,
    response_logps,
    tokenize_pairs,
)


def test_dpo_loss_equals_closed_form_on_hand_made_logps():
    pc = torch.tensor([-1.0, -5.0])
    pr = torch.tensor([-3.0, -2.0])
    rc = torch.tensor([-2.0, -4.0])
    rr = torch.tensor([-2.0, -4.0])
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta=0.1)
    # pair 0: A = 0.1*(-1+2) = 0.1, B = 0.1*(-3+2) = -0.1, L = -log sigmoid(0.2) = log(1+e^-0.2)
    # pair 1: A = 0.1*(-5+4) = -0.1, B = 0.1*(-2+4) = 0.2, L = log(1+e^0.3)
    assert cr.tolist() == pytest.approx([0.1, -0.1])
    assert rj.tolist() == pytest.approx([-0.1, 0.2])
    assert losses[0].item() == pytest.approx(0.5981388693, abs=1e-6)
    assert losses[1].item() == pytest.approx(math.log(1 + math.exp(0.3)), abs=1e-6)
    assert losses[1].item() == pytest.approx(0.8543552444, abs=1e-6)
    # beta scales the margin: beta=0.5 on pair 0 -> log(1+e^-1)
    l5, _, _ = dpo_loss(pc[:1], pr[:1], rc[:1], rr[:1], beta=0.5)
    assert l5.item() == pytest.approx(0.3132616875, abs=1e-6)
    # at the reference, the loss is log 2 whatever beta
    l0, _, _ = dpo_loss(rc, rr, rc, rr, beta=0.3)
    assert l0.tolist() == pytest.approx([math.log(2)] * 2)


def test_dpo_loss_matches_torchtune_dpoloss():
    from torchtune.rlhf.loss import DPOLoss

    g = torch.Generator().manual_seed(0)
    vals = [torch.randn(16, generator=g) * 3 - 20 for _ in range(4)]
    for beta, ls in [(0.1, 0.0), (0.3, 0.1)]:
        ours, oc, orj = dpo_loss(*vals, beta=beta, label_smoothing=ls)
        tt, tc, trj = DPOLoss(beta=beta, label_smoothing=ls)(*vals)
        assert torch.allclose(ours, tt, atol=1e-6)
        assert torch.allclose(oc, tc, atol=1e-6) and torch.allclose(orj, trj, atol=1e-6)


def test_dpo_loss_gradient_pushes_chosen_up_rejected_down():
    pc = torch.tensor([-4.0], requires_grad=True)
    pr = torch.tensor([-4.0], requires_grad=True)
    loss, _, _ = dpo_loss(pc, pr, torch.tensor([-4.0]), torch.tensor([-4.0]), beta=0.1)
    loss.sum().backward()
    assert pc.grad.item() == pytest.approx(-0.05)  # -beta * sigmoid(-0) = -0.05
    assert pr.grad.item() == pytest.approx(0.05)


def test_response_logps_ignores_logits_outside_the_mask():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 11, generator=g)
    targets = torch.randint(0, 11, (2, 6), generator=g)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1]], dtype=torch.float)
    base = response_logps(logits, targets, mask)
    poked = logits.clone()
    poked[0, :3] += 100 * torch.randn(3, 11, generator=g)  # prompt positions
    poked[1, :4] = -1e4
    assert torch.equal(response_logps(poked, targets, mask), base)
    # and the value is the plain sum of log-softmax at the response positions
    lp = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert base[0].item() == pytest.approx(lp[0, 3:].sum().item(), abs=1e-5)
    assert base[1].item() == pytest.approx(lp[1, 4:].sum().item(), abs=1e-5)
    # changing a response-position logit does change it
    poked[0, 4, targets[0, 4]] += 1.0
    assert response_logps(poked, targets, mask)[0] > base[0]


def _write_pairs(path, n=6, psr_fields=True):
    recs = []
    for i in range(n):
        prev = [f"We compute {i} + {i} = {2 * i}."] * (i % 3)
        l = len(prev) + 1
        rec = {"id": f"q{i}/step{l}", "chosen": format_step(l, f"So the answer is \\boxed{{{2 * i}}}."),
               "rejected": format_step(l, f"We compute {i} + 1 = {i + 2}.")}
        if psr_fields:
            rec.update(question=f"What is {i} + {i}?", prev_steps=prev, step=l)
        else:
            rec.update(prompt=f"What is {i} + {i}?", initial_reason_steps=format_steps(prev))
        recs.append(rec)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


def test_pair_loader_reads_both_field_conventions_to_the_same_prompt(tmp_path, tiny_model_dir):
    from psr.models.hf import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _write_pairs(a)
    _write_pairs(b, psr_fields=False)
    pa, pb = load_pairs(a), load_pairs(b)
    assert len(pa) == len(pb) == 6
    for x, y in zip(pa, pb):
        assert x.policy_prompt(tok) == y.policy_prompt(tok)
        assert (x.chosen, x.rejected) == (y.chosen, y.rejected)
    p = pa[2]
    assert p.step == 3 and p.id == "q2/step3"
    assert p.policy_prompt(tok) == chat(tok, reasoning_prompt("What is 2 + 2?")) + \
        "Step 1: We compute 2 + 2 = 4.\nStep 2: We compute 2 + 2 = 4.\n"


@pytest.mark.parametrize("line,msg", [
    ('{"question": "q", "prev_steps": [], "chosen": "Step 1: a\\n"}', "needs fields"),
    ('{"question": "q", "prev_steps": ["ok", " "], "chosen": "a", "rejected": "b"}', "prev_steps[1] (step 2) is empty"),
    ('{"question": "q", "prev_steps": [], "chosen": "", "rejected": "b"}', "'chosen' is empty"),
    ('{"question": "q", "prev_steps": "x", "chosen": "a", "rejected": "b"}', "list of strings"),
    ('{"prompt": "q", "initial_reason_steps": "", "chosen": 3, "rejected": "b"}', "must be a string"),
    ("not json", "not valid JSON"),
])
def test_bad_pair_records_name_file_and_line(tmp_path, line, msg):
    p = tmp_path / "pairs.jsonl"
    p.write_text('{"question": "q", "prev_steps": [], "chosen": "a", "rejected": "b"}\n' + line + "\n")
    with pytest.raises(DataError) as e:
        load_pairs(p)
    assert f"{p}:2" in str(e.value) and msg in str(e.value)


def test_identical_pairs_are_dropped_and_counted(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text('{"question": "q", "prev_steps": [], "chosen": "Step 1: a\\n", "rejected": "Step 1: a"}\n'
                 '{"question": "q", "prev_steps": [], "chosen": "Step 1: a\\n", "rejected": "Step 1: b\\n"}\n')
    st = PairStats()
    assert len(load_pairs(p, st)) == 1
    assert (st.records, st.pairs, st.identical_dropped) == (2, 1, 1)


def test_tokenized_pairs_put_loss_exactly_on_the_step_tokens(tmp_path, tiny_model_dir):
    from psr.models.hf import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    path = tmp_path / "p.jsonl"
    _write_pairs(path)
    pairs = load_pairs(path)
    ex = tokenize_pairs(tok, pairs, max_seq_len=4096)
    batch = collate_pairs(ex[:3], tok.pad_token_id)
    B = 3
    for i in range(B):
        for row, text, ids in ((i, pairs[i].chosen, ex[i].chosen_ids), (B + i, pairs[i].rejected, ex[i].rejected_ids)):
            sel = batch["targets"][row][batch["mask"][row].bool()].tolist()
            assert sel == ids
            # exactly "Step l: body\n", nothing appended; a final step without its newline
            shown = text.rstrip("\n") if "boxed" in text else text
            assert tok.decode(sel) == shown
            full = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
            assert tok.decode(full) == pairs[i].policy_prompt(tok) + shown
    assert batch["logits_to_keep"] == batch["mask"].shape[1] + 1


def test_a_final_step_is_trained_as_the_policy_wrote_it_without_the_newline(tmp_path, tiny_model_dir):
    # the search stores "Step l: body\n" for every step, but a step with the final \boxed{} ended
    # the chain at EOS: its newline was never generated (SFT responses end "...}." + EOS too)
    from psr.models.hf import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    path = tmp_path / "p.jsonl"
    recs = [{"question": "2 + 3 + 4?", "prev_steps": ["2 + 3 = 5."], "chosen": format_step(2, "5 + 4 = 9. \\boxed{9}."),
             "rejected": format_step(2, "5 + 4 = 8. \\boxed{8}.")},
            {"question": "2 + 3 + 4?", "prev_steps": [], "chosen": format_step(1, "2 + 3 = 5."),
             "rejected": format_step(1, "2 + 3 = 6.")}]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    pairs = load_pairs(path)
    final, middle = tokenize_pairs(tok, pairs, max_seq_len=4096)
    assert tok.decode(final.chosen_ids) == "Step 2: 5 + 4 = 9. \\boxed{9}."
    assert tok.decode(final.rejected_ids) == "Step 2: 5 + 4 = 8. \\boxed{8}."
    assert tok.decode(middle.chosen_ids) == "Step 1: 2 + 3 = 5.\n"  # a middle step keeps its newline
    with_eos = tokenize_pairs(tok, pairs, max_seq_len=4096, eos_after_final_step=True)
    assert with_eos[0].chosen_ids == final.chosen_ids + [tok.eos_token_id]
    assert with_eos[1].chosen_ids == middle.chosen_ids


def test_overlong_pairs_are_dropped_or_truncated_and_counted(tmp_path, tiny_model_dir):
    from psr.models.hf import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    path = tmp_path / "p.jsonl"
    _write_pairs(path)
    pairs = load_pairs(path)
    full = tokenize_pairs(tok, pairs, max_seq_len=4096)
    limit = min(len(t.prompt_ids) for t in full) + 5
    st = TokenizeStats()
    assert tokenize_pairs(tok, pairs, max_seq_len=limit, stats=st) == [] and st.dropped_overlong == 6
    st = TokenizeStats()
    tr = tokenize_pairs(tok, pairs, max_seq_len=limit, overlong="truncate", stats=st)
    assert st.truncated == 6 and len(tr) == 6
    for t in tr:
        assert len(t.prompt_ids) + max(len(t.chosen_ids), len(t.rejected_ids)) <= limit


def test_left_padded_batch_logps_equal_unpadded_forwards(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from psr.models.hf import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    path = tmp_path / "p.jsonl"
    _write_pairs(path)
    ex = tokenize_pairs(tok, load_pairs(path), max_seq_len=4096)
    batch = collate_pairs(ex, tok.pad_token_id)
    with torch.no_grad():
        c, r = forward_logps(model, batch, torch.device("cpu"))
        for i, t in enumerate(ex):
            for resp, got in ((t.chosen_ids, c[i]), (t.rejected_ids, r[i])):
                ids = torch.tensor([t.prompt_ids + resp])
                lp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
                want = lp[len(t.prompt_ids) - 1:].gather(-1, ids[0, len(t.prompt_ids):, None]).sum()
                assert got.item() == pytest.approx(want.item(), abs=2e-4)


def test_reference_cache_key_covers_model_data_and_settings_but_not_beta(tmp_path, tiny_model_dir):
    from psr.models.hf import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    path = tmp_path / "p.jsonl"
    _write_pairs(path)
    ex = tokenize_pairs(tok, load_pairs(path), max_seq_len=4096)
    fp = model_fingerprint(tiny_model_dir)
    s = {"dtype": "float32", "device": "cpu"}
    k = reference_cache_key(fp, ex, s)
    assert k == reference_cache_key(model_fingerprint(tiny_model_dir), ex, dict(s))
    assert k != reference_cache_key(fp, ex[:-1], s)
    ex2 = tokenize_pairs(tok, load_pairs(path), max_seq_len=4096, eos_after_final_step=True)
    assert k != reference_cache_key(fp, ex2, s)
    assert k != reference_cache_key(fp, ex, {**s, "dtype": "bfloat16"})
    assert k != reference_cache_key({**fp, "config.json": "other"}, ex, s)
    with pytest.raises(ValueError, match="beta"):
        reference_cache_key(fp, ex, {**s, "beta": 0.1})


def test_reference_logps_are_cached_and_reused(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from psr.models.hf import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).train()
    path = tmp_path / "p.jsonl"
    _write_pairs(path)
    ex = tokenize_pairs(tok, load_pairs(path), max_seq_len=4096)
    calls = []

    def compute():
        calls.append(1)
        return compute_reference_logps(model, ex, 4, tok.pad_token_id, torch.device("cpu"))

    a, reused = load_or_compute_reference(tmp_path / "cache", "k1", compute, len(ex))
    assert not reused and len(calls) == 1 and a.shape == (6, 2) and model.training
    b, reused = load_or_compute_reference(tmp_path / "cache", "k1", compute, len(ex))
    assert reused and len(calls) == 1 and torch.equal(a, b)
    _, reused = load_or_compute_reference(tmp_path / "cache", "k2", compute, len(ex))
    assert not reused and len(calls) == 2
    assert (a < 0).all()
