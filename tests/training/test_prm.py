"""PRM: tag placement, the +/- loss, token checks, PRMScorer, and the TRL / PRM800K loaders."""

import json
import math

import pytest
import torch

from psr.data.jsonl import DataError
from psr.data.prm800k import PRMStats, load_prm800k, load_prm_data, load_trl_stepwise
from psr.prm import PRMScorer, collate_prm, encode_steps, prm_token_ids, prob_good, tag_pair_logits
from psr.prompts import chat, reasoning_prompt
from psr.testing import tiny_prm_records
from psr.training.prm import prm_loss


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from psr.models.hf import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def test_prm_loss_is_the_two_way_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    good = torch.tensor([True, False, True])
    # log(1+e^-2) + log(1+e^2) + log 2
    want = math.log1p(math.exp(-2)) + math.log1p(math.exp(2)) + math.log(2)
    assert prm_loss(logits, good).item() == pytest.approx(want, abs=1e-6)
    assert want == pytest.approx(0.126928 + 2.126928 + 0.693147, abs=1e-5)
    assert prob_good(logits).tolist() == pytest.approx([0.880797, 0.880797, 0.5], abs=1e-6)


def test_labels_sit_exactly_on_the_step_tag_positions(tok):
    ids = prm_token_ids(tok, "#")
    steps = ["We compute 2 + 3 = 5.", "Step 2: Then 5 + 1 = 6.", "So the answer is \\boxed{6}."]
    enc = encode_steps(tok, ids, "What is 2 + 3 + 1?", steps, [True, False, True])
    # the tag token appears exactly at the recorded positions and nowhere else
    assert [i for i, t in enumerate(enc.input_ids) if t == ids.tag_id] == enc.tag_positions
    assert len(enc.tag_positions) == 3 and enc.labels == [True, False, True]
    text = tok.decode(enc.input_ids)
    assert text == (chat(tok, reasoning_prompt("What is 2 + 3 + 1?")) + "Step 1: We compute 2 + 3 = 5.\n#"
                    "Step 2: Then 5 + 1 = 6.\n#Step 3: So the answer is \\boxed{6}.\n#")
    b = collate_prm([enc, encode_steps(tok, ids, "q?", steps[:1], [False])], tok.pad_token_id)
    assert b["tag_mask"][0].nonzero().squeeze(-1).tolist() == enc.tag_positions
    assert b["good"][0][b["tag_mask"][0]].tolist() == [True, False, True]
    assert b["good"][1][b["tag_mask"][1]].tolist() == [False] and b["n_units"] == 4
    assert not b["good"][~b["tag_mask"]].any()


def test_loss_reads_only_the_tag_positions(tok, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    ids = prm_token_ids(tok, "#")
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    enc = encode_steps(tok, ids, "What is 1 + 1?", ["1 + 1 = 2.", "So \\boxed{2}."], [True, True])
    b = collate_prm([enc], tok.pad_token_id)
    with torch.no_grad():
        lg, good = tag_pair_logits(model, b, ids)
        full = model(input_ids=b["input_ids"]).logits[0]
    want = full[enc.tag_positions][:, [ids.good_id, ids.bad_id]]
    torch.testing.assert_close(lg, want, atol=1e-5, rtol=0)
    assert good.tolist() == [True, True]


def test_tag_and_label_tokens_must_be_single_tokens(tok):
    with pytest.raises(ValueError, match=r"step_tag=' ки' must be a single token"):
        prm_token_ids(tok, " ки")
    with pytest.raises(ValueError, match=r"good_token='Step 1' must be a single token"):
        prm_token_ids(tok, "#", good_token="Step 1")
    with pytest.raises(ValueError, match="three different tokens"):
        prm_token_ids(tok, "+")


def test_overlong_examples_keep_leading_steps_or_drop(tok):
    ids = prm_token_ids(tok, "#")
    steps = ["We compute 2 + 3 = 5."] * 6
    full = encode_steps(tok, ids, "q?", steps, [True] * 6)
    cut = encode_steps(tok, ids, "q?", steps, [True] * 6, max_seq_len=len(full) - 3)
    assert cut.truncated and len(cut.tag_positions) == 5 and len(cut.labels) == 5
    assert cut.input_ids == full.input_ids[: len(cut)]
    assert encode_steps(tok, ids, "q?", steps, [True] * 6, max_seq_len=len(full) - 3, overlong="drop") is None


def test_scorer_returns_one_probability_per_step_batch_independent(tmp_path, tiny_model_dir, tok):
    import shutil

    from psr.eft import score_last

    d = tmp_path / "prm"
    shutil.copytree(tiny_model_dir, d)
    (d / "prm_config.json").write_text(json.dumps({"step_tag": "#", "good_token": "+", "bad_token": "-"}))
    sc = PRMScorer(d, batch_size=8)
    steps = ["We compute 2 + 3 = 5.", "Then 5 + 1 = 6.", "So the answer is \\boxed{6}."]
    p = sc.score_steps("What is 2 + 3 + 1?", steps)
    assert len(p) == 3 and all(0.0 <= x <= 1.0 for x in p)
    assert sc.score_steps("q", []) == []
    items = [("What is 2 + 3 + 1?", steps), ("What is 7?", steps[:1]), ("What is 2 + 3 + 1?", steps[:2])]
    batch = sc.score_batch(items)
    assert [len(x) for x in batch] == [3, 1, 2]
    assert batch[0] == pytest.approx(p, abs=1e-5)
    assert batch[2] == pytest.approx(p[:2], abs=1e-5)  # causal: a prefix scores the same
    assert score_last(sc, items) == pytest.approx([p[2], batch[1][0], p[1]], abs=1e-5)


# ----------------------------------------------------------------------------- loaders


def _step(completions, chosen=None, human=None):
    return {"completions": completions, "human_completion": human, "chosen_completion": chosen}


def _c(text, rating):
    return {"text": text, "rating": rating, "flagged": False}


def _rec(steps, finish="solution"):
    return {"labeler": "l", "timestamp": "t", "generation": 1, "is_quality_control_question": False,
            "is_initial_screening_question": False,
            "question": {"problem": "What is 1 + 1?", "ground_truth_answer": "2"},
            "label": {"steps": steps, "total_time": 1, "finish_reason": finish}}


def _write(path, recs):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs))
    return path


PRM800K_SAMPLE = [
    # 1: chosen completions +1, 0, then the labeler stops at a -1 (no chosen completion)
    _rec([_step([_c("a1", 1)], chosen=0), _step([_c("a2", 0), _c("a2'", 1)], chosen=0),
          _step([_c("a3 ok", 1), _c("a3 bad", -1)])], finish="found_error"),
    # 2: a human completion replaces a step, then a chosen +1
    _rec([_step([_c("b1", -1)], human={"text": "b1 human", "rating": None}), _step([_c("b2", 1)], chosen=0)]),
    # 3: a chosen -1 ends the example even though steps follow
    _rec([_step([_c("c1", -1)], chosen=0), _step([_c("c2", 1)], chosen=0)]),
    # 4: neutral first step, unrated second
    _rec([_step([_c("d1", 0)], chosen=0), _step([_c("d2", None)], chosen=0)]),
    # 5: nothing labelled
    _rec([_step(None)], finish="give_up"),
]


def test_prm800k_loader_maps_ratings_as_documented(tmp_path):
    p = _write(tmp_path / "phase2_train.jsonl", PRM800K_SAMPLE)
    st = PRMStats()
    ex = load_prm800k(p, "positive", st)
    assert [(e.steps, e.labels) for e in ex] == [
        (["a1", "a2", "a3 bad"], [True, True, False]),
        (["b1 human", "b2"], [True, True]),
        (["c1"], [False]),
        (["d1"], [True]),
    ]
    assert (st.records, st.examples, st.skipped_empty, st.neutral) == (5, 4, 1, 2)
    assert all(e.question == "What is 1 + 1?" for e in ex) and ex[0].where == f"{p}:1"
    neg = load_prm800k(p, "negative")
    assert [(e.steps, e.labels) for e in neg][0] == (["a1", "a2"], [True, False])  # ends at the first bad
    assert [(e.steps, e.labels) for e in neg][3] == (["d1"], [False])
    drop = load_prm800k(p, "drop")
    assert [(e.steps, e.labels) for e in drop] == [(["a1"], [True]), (["b1 human", "b2"], [True, True]), (["c1"], [False])]
    assert [e.steps for e in load_prm_data(p)] == [e.steps for e in ex]  # auto-detects the format


@pytest.mark.parametrize("bad,msg", [
    (_rec([_step([_c("x", 2)], chosen=0)]), "rating must be -1, 0, 1 or null, got 2"),
    (_rec([_step([_c("x", 1)], chosen=3)]), "chosen_completion=3 is not an index"),
    ({"question": {"problem": "q"}}, "missing label.steps"),
    (_rec([_step([{"rating": 1}], chosen=0)]), "has no text"),
    ("{broken", "not valid JSON"),
])
def test_bad_prm800k_records_name_file_and_line(tmp_path, bad, msg):
    p = _write(tmp_path / "phase1.jsonl", [PRM800K_SAMPLE[0], bad])
    with pytest.raises(DataError) as e:
        load_prm800k(p)
    assert f"{p}:2" in str(e.value) and msg in str(e.value)


def test_trl_stepwise_loader_and_its_errors(tmp_path):
    p = _write(tmp_path / "trl.jsonl", tiny_prm_records(4))
    ex = load_trl_stepwise(p)
    assert [e.labels for e in ex] == [[True, True], [True, False], [True, True], [True, False]]
    assert load_prm_data(p)[1].steps == ex[1].steps
    for bad, msg in [({"prompt": "q", "completions": ["a", "b"], "labels": [True]}, "one label per completion"),
                     ({"prompt": "q", "completions": ["a", " "], "labels": [True, True]}, "completions[1] (step 2) is empty"),
                     ({"prompt": "q", "completions": ["a"], "labels": ["yes"]}, "labels[0] must be a bool"),
                     ({"prompt": "q", "labels": [True]}, "missing field 'completions'")]:
        _write(p, [tiny_prm_records(1)[0], bad])
        with pytest.raises(DataError) as e:
            load_trl_stepwise(p)
        assert f"{p}:2" in str(e.value) and msg in str(e.value), str(e.value)
