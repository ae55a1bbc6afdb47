"""psr/srlm.py: the SRLM baseline's scoring prompt, score parsing, pairing rule and one round
over a scripted generator (exact calls, seeds, statistics)."""

import re

import pytest

from psr.generation.base import Completion
from psr.prompts import chat, reasoning_prompt
from psr.seeds import derive_seed
from psr.srlm import (
    SRLM_JUDGE_MARK,
    SRLM_JUDGE_PROMPT,
    SRLMConfig,
    choose_pair,
    mean_score,
    parse_score,
    run_srlm,
    srlm_judge_prompt,
    summarize,
)
from srlm_fakes import ScoringGenerator


def test_judge_prompt_is_yuan_et_al_figure_2_word_for_word(paper_prompts_md):
    md = (paper_prompts_md.parent / "srlm_judge_prompt.md").read_text(encoding="utf-8")
    (template,) = re.findall(r"```text\n(.*?)\n```", md, re.S)
    assert SRLM_JUDGE_PROMPT == template


def test_judge_prompt_fills_question_and_whole_solution_once():
    p = srlm_judge_prompt("What is {response}?\n", "Step 1: 2 + 2 = 4.\nStep 2: \\boxed{4}\n")
    assert "User: What is {response}?\n<response>Step 1: 2 + 2 = 4.\nStep 2: \\boxed{4}</response>\n" in p
    assert p.startswith(SRLM_JUDGE_MARK)
    assert p.endswith("we'll systematically attribute points based on the outlined criteria.")


@pytest.mark.parametrize(
    "text, score",
    [
        ("The response is correct and clear. Score: 5", 5.0),
        ("Score: 0", 0.0),
        ("Score:3", 3.0),
        ("**Score:** 4", 4.0),
        ("Score: **2**", 2.0),
        ("Score: 4/5", 4.0),
        ("Score: 4.", 4.0),
        ("Score: 3.5 points", 3.5),
        ("First I thought Score: 2, but on reflection Score: 4", 4.0),
        ("Total Score: 1", 1.0),
    ],
)
def test_parse_score_reads_the_last_score_in_range(text, score):
    assert parse_score(text) == score


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I would give it four points.",
        "Score: four",
        "score: 3",  # not the requested format
        "Score: 6",  # above the 5-point scale
        "Score: 45",  # not "4" followed by garbage
        "Score: 4.55555",
        "Score: 4points",
        "Score: -1",
        "Score:\n4",
        "Score: <total points>",
        "Score: __import__('os').system('echo hi')",
        "Score: 1e1",
        "UnderScore: 3",
        None,
        42,
    ],
)
def test_parse_score_counts_anything_else_as_missing(text):
    assert parse_score(text) is None


def test_mean_score_skips_missing_scores():
    assert mean_score([4.0, None, 2.0]) == 3.0
    assert mean_score([None, None]) is None
    assert mean_score([]) is None


def test_choose_pair_highest_against_lowest_ties_to_lowest_index():
    c = choose_pair([3.0, 5.0, 1.0, 5.0, 1.0])
    assert (c.chosen, c.rejected, c.reason) == (1, 2, None)
    c = choose_pair([None, 2.0, None, 4.5])
    assert (c.chosen, c.rejected, c.reason) == (3, 1, None)


def test_choose_pair_gives_no_pair_when_scores_cannot_separate():
    assert choose_pair([4.0, 4.0, 4.0, 4.0]).reason == "all_scores_equal"
    assert choose_pair([4.0, None, 4.0]).reason == "all_scores_equal"
    assert choose_pair([None, 3.0, None]).reason == "fewer_than_two_scored"
    assert choose_pair([None, None]).reason == "fewer_than_two_scored"
    c = choose_pair([5.0, 1.0], ["Step 1: \\boxed{4}\n", "  Step 1: \\boxed{4}"])
    assert (c.chosen, c.rejected, c.reason) == (None, None, "identical_texts")


def test_config_rejects_bad_settings_naming_them():
    with pytest.raises(ValueError, match="num_samples"):
        SRLMConfig(num_samples=1)
    with pytest.raises(ValueError, match="score_samples"):
        SRLMConfig(score_samples=0)
    with pytest.raises(ValueError, match="top_p"):
        SRLMConfig(top_p=0.0)
    assert SRLMConfig(num_samples=4, score_samples=3, max_new_tokens_solution=100,
                      max_new_tokens_judge=10).token_budget(5) == 5 * (4 * 100 + 12 * 10)


SOLUTIONS = {
    "What is 2 + 2?": ["Step 1: 2 + 2 = 4.\nStep 2: \\boxed{4}", "Step 1: \\boxed{5}", "", "Step 1: \\boxed{4}"],
    "What is 3 + 3?": ["Step 1: \\boxed{6}", "Step 1: \\boxed{6}", "Step 1: \\boxed{7}", "Step 1: \\boxed{8}"],
}


def judge(question, response, k):
    """Scores by content; sample k of the K scoring samples of one solution."""
    if "boxed{5}" in response:
        return ["Wrong. Score: 1", "Score: 2", "no idea"][k]
    if "boxed{4}" in response and "Step 2" in response:
        return "Correct and complete. Score: 5"
    if "boxed{4}" in response:
        return ["Score: 4", "Score: 5", "Score: 3"][k]
    return "Score: 3"  # every 3 + 3 solution looks the same to this judge


def test_one_round_batches_seeds_and_counts_exactly():
    gen = ScoringGenerator(lambda q, n: SOLUTIONS[q], judge)
    cfg = SRLMConfig(num_samples=4, score_samples=3, temperature=0.7, top_p=0.9, judge_temperature=0.2,
                     max_new_tokens_solution=64, max_new_tokens_judge=16, questions_in_flight=8, seed=5)
    res = list(run_srlm(gen, [{"id": "q1", "problem": "What is 2 + 2?", "answer": "4"},
                              {"id": "q2", "problem": "What is 3 + 3?"}], cfg))
    # two calls for the group: every policy prompt, then every non-empty solution's scoring prompt
    assert [c["kind"] for c in gen.calls] == ["policy", "judge"]
    pol, jud = gen.calls
    assert pol["prompts"] == [chat(None, reasoning_prompt("What is 2 + 2?")), chat(None, reasoning_prompt("What is 3 + 3?"))]
    assert (pol["params"].n, pol["params"].temperature, pol["params"].top_p, pol["params"].max_new_tokens) == (4, 0.7, 0.9, 64)
    assert pol["stops"] == [(), ()]
    assert pol["seeds"] == [derive_seed(5, "q1", "srlm_policy"), derive_seed(5, "q2", "srlm_policy")]
    assert len(jud["prompts"]) == 7  # the empty solution is not scored
    assert jud["prompts"][0] == chat(None, srlm_judge_prompt("What is 2 + 2?", SOLUTIONS["What is 2 + 2?"][0]))
    assert (jud["params"].n, jud["params"].temperature, jud["params"].top_p, jud["params"].max_new_tokens) == (3, 0.2, 0.9, 16)
    assert jud["seeds"][:3] == [derive_seed(5, "q1", "srlm_judge", i) for i in (0, 1, 3)]

    r1, r2 = res
    assert [x["scores"] for x in r1.responses] == [[5.0, 5.0, 5.0], [1.0, 2.0, None], [], [4.0, 5.0, 3.0]]
    assert [x["score"] for x in r1.responses] == [5.0, 1.5, None, 4.0]
    assert r1.responses[1]["judge_text"] == ["no idea"]  # unparseable outputs are kept in the trace
    assert (r1.chosen, r1.rejected, r1.no_pair_reason) == (0, 1, None)
    assert r1.stats == {"responses": 4, "empty_responses": 1, "judge_calls": 9, "unparseable_scores": 1,
                        "unscored_responses": 0, "pairs": 1,
                        "tokens_policy": sum(len(s.split()) + 1 for s in SOLUTIONS["What is 2 + 2?"]),
                        "tokens_judge": r1.stats["tokens_judge"],
                        "tokens_generated": r1.stats["tokens_policy"] + r1.stats["tokens_judge"]}
    assert r1.pair_record() == {
        "id": "q1/srlm", "question_id": "q1", "prompt": "What is 2 + 2?", "initial_reason_steps": "",
        "chosen": "Step 1: 2 + 2 = 4.\nStep 2: \\boxed{4}", "rejected": "Step 1: \\boxed{5}",
        "chosen_score": 5.0, "rejected_score": 1.5, "scores": [5.0, 1.5, None, 4.0], "method": "srlm"}
    assert r1.meta == {"answer": "4"}
    assert (r2.chosen, r2.no_pair_reason, r2.pair_record()) == (None, "all_scores_equal", None)

    s = summarize(res)
    assert s["totals"]["pairs"] == 1 and s["totals"]["judge_calls"] == 21 and s["totals"]["unparseable_scores"] == 1
    assert s["no_pair_reasons"] == {"fewer_than_two_scored": 0, "all_scores_equal": 1, "identical_texts": 0}
    assert s["solution_score_hist"] == {"1.5": 1, "3": 4, "4": 1, "5": 1}
    assert s["unparseable_score_rate"] == pytest.approx(1 / 21)


def test_a_failing_batch_is_rerun_per_question_and_only_the_bad_one_fails():
    gen = ScoringGenerator(lambda q, n: SOLUTIONS[q], judge, fail_on=lambda p: "3 + 3" in p)
    cfg = SRLMConfig(num_samples=4, score_samples=3, questions_in_flight=2)
    r1, r2 = run_srlm(gen, [{"id": "a", "problem": "What is 2 + 2?"}, {"id": "b", "problem": "What is 3 + 3?"}], cfg)
    assert (r1.status, r1.chosen, r1.rejected) == ("ok", 0, 1)
    assert r2.status == "error" and "scripted failure" in r2.error and r2.pair_record() is None
    assert summarize([r1, r2])["failed_ids"] == ["b"]


def test_a_generator_returning_the_wrong_number_of_samples_fails_the_question():
    gen = ScoringGenerator(lambda q, n: SOLUTIONS[q][:2], judge)
    (r,) = run_srlm(gen, [{"id": "a", "problem": "What is 2 + 2?"}], SRLMConfig(num_samples=4))
    assert r.status == "error" and "asked for 4" in r.error


def test_completions_are_used_as_returned():
    sols = [Completion("Step 1: \\boxed{4}", 7, "eos"), Completion("Step 1: \\boxed{5}", 9, "length")]
    gen = ScoringGenerator(lambda q, n: sols, judge)
    (r,) = run_srlm(gen, ["What is 2 + 2?"], SRLMConfig(num_samples=2, score_samples=3))
    assert [(x["n_tokens"], x["finish_reason"]) for x in r.responses] == [(7, "eos"), (9, "length")]
    assert r.stats["tokens_policy"] == 16 and (r.chosen, r.rejected) == (0, 1)


def test_scoring_eft_records_are_text_records_whose_score_parses_back(tmp_path):
    from psr.data.jsonl import write_jsonl
    from psr.data.schemas import load_text
    from psr.srlm import CORRECT_JUSTIFICATION, templated_scoring_records

    items = [{"id": "a", "question": "What is 2 + 2?", "solution": "Step 1: \\boxed{4}", "correct": True},
             {"id": "b", "question": "What is 2 + 2?", "solution": "Step 1: \\boxed{5}", "correct": False}]
    recs = templated_scoring_records(None, items)
    assert [r["id"] for r in recs] == ["srlm_eft/a", "srlm_eft/b"]
    assert recs[0]["prompt"] == chat(None, srlm_judge_prompt("What is 2 + 2?", "Step 1: \\boxed{4}"))
    assert recs[0]["response"] == CORRECT_JUSTIFICATION + "\nScore: 5"
    assert [parse_score(r["response"]) for r in recs] == [5.0, 2.0] == [float(r["score"]) for r in recs]
    write_jsonl(tmp_path / "t.jsonl", recs)
    assert [r["id"] for r in load_text(tmp_path / "t.jsonl")] == ["srlm_eft/a", "srlm_eft/b"]


def test_scoring_eft_records_reject_bad_items():
    from psr.srlm import scoring_judgment, templated_scoring_records

    with pytest.raises(ValueError, match="item 0: field 'correct'"):
        templated_scoring_records(None, [{"id": "a", "question": "q", "solution": "s", "correct": "yes"}])
    with pytest.raises(ValueError, match="item 0: missing field 'solution'"):
        templated_scoring_records(None, [{"id": "a", "question": "q", "correct": True}])
    with pytest.raises(ValueError, match="empty solution"):
        templated_scoring_records(None, [{"id": "a", "question": "q", "solution": " ", "correct": True}])
    with pytest.raises(ValueError, match="score must be an integer"):
        scoring_judgment(6, "x")
    with pytest.raises(ValueError, match="justification is empty"):
        scoring_judgment(3, "  ")
    # a justification that mentions another score still ends with the one given
    assert parse_score(scoring_judgment(3, "At first glance Score: 5, but step 2 is wrong.")) == 3.0
