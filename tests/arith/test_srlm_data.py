"""The SRLM baseline's judge data in the arith world (psr.arith.data.srlm_scoring_items and
write_srlm_scoring_data) and the tokenizer that fits Yuan et al.'s scoring prompt."""

import random

import pytest

from psr.arith.checker import check_solution, check_steps
from psr.arith.data import srlm_scoring_items, write_initial_data, write_srlm_scoring_data, wrong_solution_steps
from psr.arith.problems import make_splits
from psr.data.jsonl import read_jsonl
from psr.srlm import CORRECT_SCORE, SRLM_JUDGE_PROMPT, WRONG_SCORE, parse_score
from psr.steps import parse_steps


def test_wrong_solution_carries_the_slip_through_to_a_wrong_boxed_answer():
    train, _ = make_splits(60, 10, seed=3, train_ops=(3, 3), test_ops=(2, 4))
    carried = 0
    for p in train:
        for l in range(1, p.n_ops + 1):
            steps = wrong_solution_steps(p, l, random.Random(f"{p.id}:{l}"))
            assert steps[: l - 1] == p.steps[: l - 1]  # the reference before the slip
            checks = check_steps(p, steps)
            assert [c.correct for c in checks[: l - 1]] == [True] * (l - 1) and not checks[l - 1].correct
            assert not check_solution(p, steps)  # never a right answer by coincidence
            if len(steps) == p.n_ops and l < p.n_ops:  # carried to the end
                carried += 1
                assert "\\boxed{" in steps[-1]
    assert carried > 40  # most slips before the last step are carried on to the end


def test_scoring_items_are_graded_by_the_checker_and_deterministic():
    _, test = make_splits(10, 80, seed=0, train_ops=(1, 3), test_ops=(1, 5))
    items = srlm_scoring_items(test, seed=1)
    assert items == srlm_scoring_items(test, seed=1) and items != srlm_scoring_items(test, seed=2)
    assert len(items) == 2 * len(test)  # as many as eft_records writes per problem (both orders of one pair)
    by_q = {p.question: p for p in test}
    for it in items:
        p = by_q[it["question"]]
        steps = parse_steps(it["solution"])
        graded = all(c.correct for c in check_steps(p, steps)) and check_solution(p, it["solution"])
        assert it["correct"] is graded
        assert it["correct"] is it["id"].endswith("/correct")
    assert len(srlm_scoring_items(test[:5], seed=1, pairs_per_problem=2)) == 20


def test_write_srlm_scoring_data_uses_the_eft_problems_and_the_scoring_prompt(tmp_path):
    from psr.arith.tokenizer import build_arith_tokenizer

    tok = build_arith_tokenizer()
    write_initial_data(tmp_path, n_train=40, n_test=12, seed=0, n_eft_train_problems=15)
    paths = write_srlm_scoring_data(tmp_path, tok, seed=0, n_eft_train_problems=15)
    train, test = read_jsonl(paths["srlm_eft_train"]), read_jsonl(paths["srlm_eft_test"])
    assert len(train) == 30 and len(test) == 24
    eft_q = [r["question"] for r in read_jsonl(tmp_path / "problems_train.jsonl")[:15]]
    assert sorted({r["prompt"].split("User: ", 1)[1].split("\n<response>")[0] for r in train}) == sorted(set(eft_q))
    for r in train:
        assert r["prompt"].startswith("<|im_start|>user\nReview the user's question")
        assert r["prompt"].endswith("<|im_start|>assistant\n")
        assert parse_score(r["response"]) == r["score"] and r["score"] in (CORRECT_SCORE, WRONG_SCORE)
    assert {r["score"] for r in train} == {CORRECT_SCORE, WRONG_SCORE}
    assert set(test[0]) == {"id", "question", "solution", "correct"}
    # records fit the arith model: the scoring prompt is a few dozen tokens with the arith BPE
    n = [len(tok(r["prompt"] + r["response"], add_special_tokens=False)["input_ids"]) for r in train]
    assert max(n) < 300
    assert len(tok(SRLM_JUDGE_PROMPT, add_special_tokens=False)["input_ids"]) < 60  # was 835 before it was in the corpus
