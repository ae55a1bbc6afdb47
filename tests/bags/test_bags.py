"""The bags world: problems, checker verdicts, candidates, judgments, data shapes, tokenizer."""

import random

import pytest

from psr.bags import checker as C
from psr.bags.candidates import ANSWER_KINDS, PAIR_KINDS, correct_step, wrong_step
from psr.bags.data import eft_records, sampled_eft_records, write_initial_data
from psr.bags.problems import load_problems
from psr.bags.pipeline import first_sentence, sentence_to_step
from psr.bags.problems import Problem, generate_problems, make_splits
from psr.bags.teacher import judge_explanation


def hand() -> Problem:
    """Target 50; pairs (13, 37), (22, 28); 19 left over (its partner 31 is absent)."""
    return Problem(id="h", question="q", steps=["Bag 1: 13 + 37 = 50 grams.", "Bag 2: 22 + 28 = 50 grams.",
                                                "Only 19 is left. The answer is \\boxed{19}."],
                   answer=19, items=[13, 22, 37, 19, 28], target=50, pairs=[[13, 37], [22, 28]], solution="",
                   n_pairs=2, ctx={"unit": "grams"})


def test_problems_are_deterministic_and_well_formed():
    a = generate_problems(60, 3, "train", 1, 4)
    b = generate_problems(60, 3, "train", 1, 4)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    assert a[0].question != generate_problems(1, 4, "train", 1, 4)[0].question
    for p in a:
        assert len(p.items) == 2 * p.n_pairs + 1 == len(set(p.items))
        assert sorted([v for q in p.pairs for v in q] + [p.answer]) == sorted(p.items)
        assert all(x + y == p.target for x, y in p.pairs)
        assert p.target - p.answer not in p.items
        assert all(c.correct for c in C.check_steps(p, p.steps)), p.steps
        assert C.check_solution(p, "\n".join(p.steps)) and f"\\boxed{{{p.answer}}}" in p.solution
        assert Problem.from_dict(p.to_dict()) == p


def test_splits_keep_longer_held_out_problems_apart():
    train, test = make_splits(50, 50, 0, (1, 3), (1, 5))
    assert max(p.n_pairs for p in train) == 3 and max(p.n_pairs for p in test) == 5
    assert not {p.question for p in train} & {p.question for p in test}
    with pytest.raises(ValueError, match="must reach beyond"):
        make_splits(5, 5, 0, (1, 3), (1, 3))


@pytest.mark.parametrize("step,reason", [
    ("Bag 1: 13 + 37 = 50 grams.", "ok"),
    ("Step 1: Bag 1: 37 + 13 = 50 grams.", "ok"),
    ("Bag 1: 22 + 28 = 50 grams.", "ok"),  # any pair left is correct
    ("Bag 1: 13 + 36 = 50 grams.", "arithmetic"),  # a near miss written with the target
    ("Bag 1: 13 + 38 = 51 grams.", "not_left"),  # 38 is no item
    ("Bag 1: 13 + 28 = 41 grams.", "wrong_sum"),
    ("Bag 1: 13 + 13 = 26 grams.", "not_left"),
    ("Bag 1: 13 * 2 = 26.", "not_a_pair"),
    ("Only 19 is left. The answer is \\boxed{19}.", "early_answer"),
    ("The answer is \\boxed{22}.", "wrong_answer"),
    ("The answer is \\boxed{x + 1}.", "unparseable_answer"),
    ("Let us think.", "no_progress"),
    ("", "empty"),
])
def test_checker_verdicts_on_the_first_step(step, reason):
    c = C.check_step_detail(hand(), [], step)
    assert c.reason == reason and c.correct == (reason == "ok")


def test_checker_tracks_items_left_through_correct_steps_only():
    p = hand()
    assert C.items_left(p, ["Bag 1: 13 + 37 = 50 grams."]) == [22, 19, 28]
    assert C.items_left(p, ["Bag 1: 13 + 36 = 50 grams."]) == p.items  # a wrong step packs nothing
    assert C.check_step_detail(p, ["Bag 1: 13 + 37 = 50 grams."], "Bag 2: 37 + 13 = 50.").reason == "not_left"
    prev = p.steps[:2]
    assert C.check_step(p, prev, "Only 19 is left. The answer is \\boxed{19}.")
    assert C.check_step_detail(p, prev, "The answer is \\boxed{22}.").reason == "wrong_answer"
    assert C.score_steps(p, ["Bag 1: 13 + 37 = 50.", "Bag 2: 22 + 27 = 50.", p.steps[2]]) == [1.0, 0.0, 0.0]


def test_every_templated_wrong_kind_is_rejected_and_correct_steps_accepted():
    rng = random.Random(0)
    seen = set()
    for p in generate_problems(80, 1, "train", 1, 4):
        for l in range(1, p.n_pairs + 2):
            prev = p.steps[: l - 1]
            assert C.check_step(p, prev, correct_step(p, l, rng))
            for kind in PAIR_KINDS + ANSWER_KINDS:
                body = wrong_step(p, l, kind, rng)
                if body is not None:
                    seen.add(kind)
                    assert not C.check_step(p, prev, body), (kind, body)
    assert seen == set(PAIR_KINDS + ANSWER_KINDS)


def test_judgment_checks_by_adding_and_ends_in_the_checker_verdict():
    p = hand()
    v, text = judge_explanation(p, [], "Step 1: Bag 1: 13 + 36 = 50 grams.", "Step 1: Bag 1: 13 + 37 = 50 grams.",
                                random.Random(0))
    assert v == "B" and text.startswith("Need 50. Assistant A: 13 + 36: 3 + 6 = 9, 1 + 3 = 4, so 49, not 50. Wrong. "
                                        "Assistant B: 13 + 37: 3 + 7 = 10, 1 + 3 + 1 = 5, so 50. Correct.")
    assert text.endswith("[[B]]")
    v, text = judge_explanation(p, ["Bag 1: 13 + 37 = 50 grams."], "Bag 2: 22 + 37 = 59.", "Bag 2: 28 + 22 = 50.")
    assert v == "B" and "22 + 37: 2 + 7 = 9, 2 + 3 = 5, so 59, not 50. Wrong." in text
    v, text = judge_explanation(p, ["Bag 1: 13 + 37 = 50 grams."], "Bag 2: 13 + 37 = 50.", "Bag 2: 28 + 22 = 50.")
    assert v == "B" and "so 50, but 13 is packed already. Wrong." in text
    v, text = judge_explanation(p, [], "Bag 1: 13 + 38 = 50.", "Bag 1: 28 + 22 = 50.")
    assert v == "B" and "so 51, not 50. Wrong." in text
    # answers are checked by subtracting from the target and looking the result up among the items
    prev = p.steps[:2]
    v, text = judge_explanation(p, prev, "The answer is \\boxed{22}.", "Only 19 is left. The answer is \\boxed{19}.")
    assert v == "B" and "Assistant A: 50 - 22: 10 - 2 = 8, 5 - 2 - 1 = 2, so 28, which is an item, so 22 is not left over. Wrong." in text
    assert "Assistant B: 50 - 19: 10 - 9 = 1, 5 - 1 - 1 = 3, so 31, which is not an item, so 19 is left over. Correct." in text
    v, text = judge_explanation(p, [], "The answer is \\boxed{19}.", "Bag 1: 22 + 28 = 50.")
    assert v == "B" and "which is not an item, but not every bag is packed yet. Wrong." in text
    v, text = judge_explanation(p, [], "Bag 1: 13 + 37 = 50.", "Bag 1: 22 + 28 = 50.")
    assert v is None and "[[" not in text and text.endswith("Both are correct.")


def test_worked_sums_and_differences_are_exact():
    from psr.bags.teacher import worked_difference, worked_sum

    assert worked_sum(37, 28) == "37 + 28: 7 + 8 = 15, 3 + 2 + 1 = 6, so 65"
    assert worked_sum(5, 38) == "5 + 38: 5 + 8 = 13, 0 + 3 + 1 = 4, so 43"
    assert worked_sum(150, 2) == "150 + 2 = 152"
    assert worked_difference(50, 19) == "50 - 19: 10 - 9 = 1, 5 - 1 - 1 = 3, so 31"
    assert worked_difference(39, 5) == "39 - 5: 9 - 5 = 4, 3 - 0 = 3, so 34"
    for a in range(0, 100, 7):
        for b in range(0, 100, 3):
            assert worked_sum(a, b).endswith(f"so {a + b}")
            assert int(worked_sum(a, b).split(", so ")[0].split(" = ")[-1]) == (a // 10 + b // 10 + (a % 10 + b % 10 >= 10))
            if b <= a:
                assert worked_difference(a, b).endswith(f"so {a - b}")


def test_data_files_and_eft_records(tmp_path):
    paths = write_initial_data(tmp_path, n_train=40, n_test=20, seed=0)
    probs = load_problems(paths["problems_train"])
    assert len(probs) == 40
    eft = [r for r in __import__("psr.data.jsonl", fromlist=["read_jsonl"]).read_jsonl(paths["eft_train"])]
    assert len(eft) == 80 and {r["label"] for r in eft} == {"A", "B"}
    assert all(r["judgment"].endswith(f"[[{r['label']}]]") for r in eft)
    assert set(eft[0]) >= {"id", "question", "prev_steps", "step_a", "step_b", "judgment", "label"}
    assert eft_records(probs[:5], 0) == eft_records(probs[:5], 0)


def test_sampled_eft_records_use_the_policys_wrong_steps():
    p = hand()
    samples = [{"id": "h", "step": 1, "body": "Bag 1: 13 + 36 = 50 grams.", "correct": False},
               {"id": "h", "step": 1, "body": "Bag 1: 13 + 37 = 50 grams.", "correct": True},
               {"id": "h", "step": 2, "body": "Bag 2: 22 + 27 = 50 grams.", "correct": False}]
    recs = sampled_eft_records(samples, [p], 0, per_problem=2)
    assert len(recs) == 4 and {r["kind"] for r in recs} == {"sampled"}
    wrong = {r["step_a"] if r["label"] == "B" else r["step_b"] for r in recs}
    assert wrong == {"Step 1: Bag 1: 13 + 36 = 50 grams.", "Step 2: Bag 2: 22 + 27 = 50 grams."}


def test_free_form_sentences_become_steps():
    p = hand()
    assert first_sentence(" 22 + 27 = 50. 19 is left.") == "22 + 27 = 50."
    assert sentence_to_step(p, 2, "22 + 27 = 50.") == "Bag 2: 22 + 27 = 50 grams."
    assert sentence_to_step(p, 3, "19 is left. The answer is \\boxed{19}.") == "Only 19 is left. The answer is \\boxed{19}."
    assert sentence_to_step(p, 1, "Hello there.") is None


def test_tokenizer_round_trip_and_digits_split():
    from psr.bags.model import build_bags_tokenizer

    tok = build_bags_tokenizer(1024)
    text = "Need 50. Left: 13, 22. Assistant A: 13 + 37 = 50 and both are left. Correct. [[A]]"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert "37" not in tok.convert_ids_to_tokens(ids)
