"""psr.search against a scripted fake Generator: the exact pairs, scores and rollbacks of paper
Eq. 1-5 on hand-worked cases, batching of many questions per Generator call, seeds, resume and
error isolation. Scores with judge_orders=2 count both A/B orders (0..2(w-1))."""

import pytest

from psr.search import (
    Question,
    SearchConfig,
    derive_seed,
    pair_records,
    run_search,
    summarize,
    trace_record,
    tts_solve,
)
from fakes import ScriptedGenerator, always, prefer

TIE = "Both steps look equally good."  # no [[A]]/[[B]]: unparseable


def cfg(**kw):
    base = dict(width=3, judge_orders=2, max_iterations=20, max_steps=10, questions_in_flight=8, seed=7)
    base.update(kw)
    return SearchConfig(**base)


def one(gen, q, c):
    res = list(run_search(gen, [q], c))
    assert len(res) == 1
    return res[0]


# --- case A: two steps, no rollback ------------------------------------------------------------
QA = Question("qa", "What is 1 + 2?")
POLICY_A = {
    (QA.text, ()): [["a1 good", "a1 mid", "a1 bad"]],
    (QA.text, ("a1 good",)): [["x", r"so \boxed{3}", "y"]],
}
STRENGTH = {"a1 good": 3, "a1 mid": 2, "a1 bad": 1, r"so \boxed{3}": 5, "x": 1, "y": 1}


def test_two_steps_scores_pairs_and_counts_are_eq2_exact():
    gen = ScriptedGenerator(POLICY_A, prefer(STRENGTH, tie_text=TIE))
    r = one(gen, QA, cfg())
    assert [rd["scores"] for rd in r.rounds] == [[4, 2, 0], [0, 4, 0]]
    assert [(rd["best"], rd["worst"], rd["action"]) for rd in r.rounds] == [(0, 2, "keep"), (1, 0, "keep")]
    assert r.steps == ["a1 good", r"so \boxed{3}"]
    assert r.stop_reason == "final_answer"
    pairs = pair_records(r)
    assert [(p["step"], p["chosen"], p["rejected"], p["prev_steps"]) for p in pairs] == [
        (1, "Step 1: a1 good\n", "Step 1: a1 bad\n", []),
        (2, "Step 2: so \\boxed{3}\n", "Step 2: x\n", ["a1 good"]),
    ]
    assert [(p["chosen_score"], p["rejected_score"]) for p in pairs] == [(4, 0), (4, 0)]
    assert pairs[1]["id"] == "qa/step2" and pairs[1]["question_id"] == "qa"
    # Step-DPO field names
    assert pairs[1]["prompt"] == QA.text and pairs[1]["initial_reason_steps"] == "Step 1: a1 good\n"
    s = r.stats
    assert (s["iterations"], s["pairs"], s["rollbacks"], s["judge_calls"], s["unparseable_verdicts"]) == (2, 2, 0, 12, 2)
    # tokens: fake counts words + 1; 15 + 13 policy, 6*7 + (4*7 + 2*6) judge
    assert (s["tokens_policy"], s["tokens_judge"], s["tokens_generated"]) == (28, 82, 110)


def test_prompts_follow_the_papers_templates_and_stop_before_next_step():
    gen = ScriptedGenerator(POLICY_A, prefer(STRENGTH, tie_text=TIE))
    one(gen, QA, cfg())
    pol, jud, pol2 = gen.calls[0], gen.calls[1], gen.calls[2]
    assert pol["kind"] == "policy" and pol["params"].n == 3 and pol["stops"] == [("Step 2:",)]
    assert pol["prompt" + "s"][0].startswith("Let's think step by step") and pol["prompts"][0].endswith(
        "Problem: What is 1 + 2?\n"
    )
    assert pol2["prompts"][0].endswith("Problem: What is 1 + 2?\nStep 1: a1 good\n") and pol2["stops"] == [("Step 3:",)]
    assert jud["kind"] == "judge" and len(jud["prompts"]) == 6 and jud["params"].n == 1
    assert "[The Start of Assistant A’s Next Reasoning Step]\nStep 1: a1 good\n" in jud["prompts"][0]
    assert (pol["params"].temperature, pol["params"].top_p) == (0.5, 0.95)


# --- case B: rollback at step 2 drops step 1 and its pair ---------------------------------------
QB = Question("qb", "Compute 2 * 3.")
POLICY_B = {
    (QB.text, ()): [["p", "q", "r"], ["m", "n", "o"]],
    (QB.text, ("p",)): [["u", "v", "w"]],
    (QB.text, ("n",)): [["t", r"\boxed{6}", "t"]],
}
STRENGTH_B = {"p": 3, "q": 2, "r": 1, "m": 1, "n": 3, "o": 2, r"\boxed{6}": 5}


def test_tie_at_step2_rolls_back_dropping_step1_and_its_pair():
    gen = ScriptedGenerator(POLICY_B, prefer(STRENGTH_B, tie_text=TIE))
    r = one(gen, QB, cfg())
    assert [rd["action"] for rd in r.rounds] == ["keep", "rollback", "keep", "keep"]
    assert r.rounds[1]["scores"] == [0, 0, 0] and r.rounds[1]["dropped_step"] == "p"
    assert [(rd["step"], rd["attempt"]) for rd in r.rounds] == [(1, 0), (2, 0), (1, 1), (2, 1)]
    assert r.rounds[2]["scores"] == [0, 4, 2] and r.rounds[3]["scores"] == [0, 4, 0]
    assert r.steps == ["n", r"\boxed{6}"]
    assert [(p["chosen"], p["rejected"]) for p in r.pairs] == [
        ("Step 1: n\n", "Step 1: m\n"),
        ("Step 2: \\boxed{6}\n", "Step 2: t\n"),
    ]
    s = r.stats
    assert (s["iterations"], s["rollbacks"], s["pairs_dropped"], s["pairs"]) == (4, 1, 1, 2)
    # 6 + 6 + 6 judge calls, then 4 (the two identical "t" comparisons need no call)
    assert (s["judge_calls"], s["unparseable_verdicts"], s["identical_comparisons"], s["duplicate_candidates"]) == (
        22, 6, 2, 1)
    # the resampled step 1 used a new seed
    step1_seeds = [c["seeds"][0] for c in gen.calls if c["kind"] == "policy" and c["stops"] == [("Step 2:",)]]
    assert step1_seeds == [derive_seed(7, "qb", "policy", 1, 0), derive_seed(7, "qb", "policy", 1, 1)]
    assert step1_seeds[0] != step1_seeds[1]


# --- case C: rollback at step 1 resamples step 1 ------------------------------------------------
QC = Question("qc", "What is 4 - 2?")
POLICY_C = {(QC.text, ()): [["same", " same ", "same"], ["a", r"\boxed{2}", "b"]]}


def test_tie_at_step1_resamples_step1_with_nothing_to_drop():
    gen = ScriptedGenerator(POLICY_C, prefer({"a": 1, "b": 0, r"\boxed{2}": 2}, tie_text=TIE))
    r = one(gen, QC, cfg())
    assert [rd["action"] for rd in r.rounds] == ["resample_step1", "keep"]
    assert r.rounds[0]["scores"] == [0, 0, 0] and "dropped_step" not in r.rounds[0]
    assert r.rounds[1]["scores"] == [2, 4, 0]
    assert [(p["chosen"], p["rejected"]) for p in r.pairs] == [("Step 1: \\boxed{2}\n", "Step 1: b\n")]
    s = r.stats
    assert (s["rollbacks"], s["resamples_step1"], s["iterations"], s["judge_calls"]) == (1, 1, 2, 6)
    assert (s["identical_comparisons"], s["duplicate_candidates"]) == (6, 2)
    assert len([c for c in gen.calls if c["kind"] == "judge"]) == 1  # round 1 needed no judge call


# --- case C2: identical candidates as consensus (rollback_on_identical=False) ---------------------
QC2 = Question("qc2", "What is 2 * 3?")
POLICY_C2 = {
    (QC2.text, ()): [["x = 2", " x = 2 ", "x = 2"]],
    (QC2.text, ("x = 2",)): [["a", r"\boxed{6}", "b"]],
}


def test_identical_candidates_keep_the_step_without_a_pair_when_rollback_on_identical_is_off():
    gen = ScriptedGenerator(POLICY_C2, prefer({"a": 1, "b": 0, r"\boxed{6}": 2}, tie_text=TIE))
    r = one(gen, QC2, cfg(rollback_on_identical=False))
    assert [rd["action"] for rd in r.rounds] == ["keep_consensus", "keep"]
    assert r.steps == ["x = 2", r"\boxed{6}"] and r.stop_reason == "final_answer"
    assert [(p["step"], p["chosen"], p["rejected"]) for p in r.pairs] == [(2, "Step 2: \\boxed{6}\n", "Step 2: b\n")]
    s = r.stats
    assert (s["consensus_keeps"], s["rollbacks"], s["pairs"], s["iterations"]) == (1, 0, 1, 2)
    # the paper's rule (the default) resamples step 1 instead, every time: all attempts identical
    gen = ScriptedGenerator(lambda req: ["x = 2"] * 3, always("no idea"))
    r = one(gen, QC2, cfg(max_iterations=3))
    assert [rd["action"] for rd in r.rounds] == ["resample_step1"] * 3 and r.stats["consensus_keeps"] == 0


def test_a_tie_between_different_candidates_still_rolls_back_when_identical_ones_do_not():
    gen = ScriptedGenerator(lambda req: ["x = 2"] * 3 if req.step == 1 else ["p", "q", "r"], always(TIE))
    r = one(gen, QC2, cfg(rollback_on_identical=False, max_iterations=4))
    assert [rd["action"] for rd in r.rounds] == ["keep_consensus", "rollback", "keep_consensus", "rollback"]
    assert r.rounds[1]["dropped_step"] == "x = 2" and r.pairs == []
    assert (r.stats["consensus_keeps"], r.stats["rollbacks"], r.stats["pairs_dropped"]) == (2, 2, 0)


def test_all_empty_candidates_are_never_kept_as_a_step():
    # seen on a DPO-damaged model: six empty step-2 candidates were kept as a "consensus" step and
    # the next pair's prev_steps held "", which step_dpo rejects
    step2_calls = []

    def policy(req):
        if req.step == 1:
            return ["x = 2"] * 3
        step2_calls.append(req)
        return [""] * 3 if len(step2_calls) == 1 else ["p", r"\boxed{6}", "q"]

    gen = ScriptedGenerator(policy, prefer({"p": 1, "q": 0, r"\boxed{6}": 2}, tie_text=TIE))
    r = one(gen, QC2, cfg(rollback_on_identical=False))
    assert [rd["action"] for rd in r.rounds] == ["keep_consensus", "rollback", "keep_consensus", "keep"]
    assert r.steps == ["x = 2", r"\boxed{6}"] and all(p["prev_steps"] == ["x = 2"] for p in r.pairs)
    assert r.stats["consensus_keeps"] == 2 and r.stats["empty_candidates"] == 3
    # without rollbacks (test-time scaling) the chain ends instead of keeping an empty step
    gen = ScriptedGenerator(lambda req: ["x = 2"] * 3 if req.step == 1 else [""] * 3, always(TIE))
    r = one(gen, QC2, cfg(mode="tts"))
    assert r.steps == ["x = 2"] and r.stop_reason == "empty_step" and r.rounds[-1]["action"] == "stop_empty"


# --- case D: repeated rollbacks up to the iteration limit ----------------------------------------
def alternating_policy(req):
    return ["good", "bad", "bad2"] if req.step == 1 else [f"c{req.step}", f"d{req.step}", f"e{req.step}"]


def step1_only_judge(req):
    if req.step == 1:
        return prefer({"good": 1}, tie_text=TIE)(req)
    return TIE


def test_repeated_rollbacks_stop_at_max_iterations_keeping_surviving_pairs():
    gen = ScriptedGenerator(alternating_policy, step1_only_judge)
    r = one(gen, Question("qd", "Hard one"), cfg(max_iterations=5))
    assert [rd["action"] for rd in r.rounds] == ["keep", "rollback", "keep", "rollback", "keep"]
    assert [rd["step"] for rd in r.rounds] == [1, 2, 1, 2, 1]
    assert [rd["attempt"] for rd in r.rounds] == [0, 0, 1, 1, 2]
    assert r.stop_reason == "max_iterations" and r.steps == ["good"]
    assert [(p["step"], p["chosen"], p["rejected"], p["scores"]) for p in r.pairs] == [
        (1, "Step 1: good\n", "Step 1: bad\n", [4, 0, 0])]
    s = r.stats
    assert (s["iterations"], s["rollbacks"], s["pairs_dropped"], s["pairs"], s["unparseable_verdicts"]) == (5, 2, 2, 1, 2 * 6 + 3 * 2)


def test_all_rounds_tied_uses_every_iteration_on_step1_and_emits_nothing():
    gen = ScriptedGenerator(lambda req: [f"s{req.seed % 97}", "b", "c"], always("no idea"))
    r = one(gen, Question("qe", "?"), cfg(max_iterations=4))
    assert [rd["action"] for rd in r.rounds] == ["resample_step1"] * 4
    assert r.pairs == [] and r.steps == [] and r.stop_reason == "max_iterations"
    assert (r.stats["rollbacks"], r.stats["resamples_step1"], r.stats["unparseable_verdicts"]) == (4, 4, 24)


def test_tts_mode_keeps_ties_and_returns_the_chain_of_best_steps():
    c = cfg(max_iterations=20, max_steps=3)
    gen = ScriptedGenerator(alternating_policy, step1_only_judge)
    answers = tts_solve(gen, ["Hard one"], c)
    assert answers == ["Step 1: good\nStep 2: c2\nStep 3: c3\n"]
    a = answers[0]
    # response length = tokens of the three kept candidates ("Step l: x" -> 3 words + 1)
    assert (a.response, a.n_tokens) == (str(a), 4 + 4 + 4)
    assert a.tokens_generated == a.result.stats["tokens_generated"] > a.n_tokens
    # the same search in pairs mode rolls back on the step-2 tie instead
    gen2 = ScriptedGenerator(alternating_policy, step1_only_judge)
    r = one(gen2, "Hard one", cfg(max_iterations=6, max_steps=3))
    assert r.stats["rollbacks"] == 3 and r.steps == []
    # rollback_on_tie can be forced on in tts
    gen3 = ScriptedGenerator(alternating_policy, step1_only_judge)
    assert tts_solve(gen3, ["Hard one"], cfg(max_iterations=3, rollback_on_tie=True)) == ["Step 1: good\n"]


# --- judge_orders 1 and 2 with a position-biased judge -----------------------------------------
def test_position_bias_cancels_with_two_orders_but_not_with_one():
    w4 = {(QA.text, ()): [["k", "l", "m", r"\boxed{1}"]]}
    r1 = one(ScriptedGenerator(w4, always("[[A]]")), QA, cfg(width=4, judge_orders=1, max_steps=1))
    # one order: (0,1) (2,0) (0,3) (1,2) (3,1) (2,3) shown A-first -> wins [2, 1, 2, 1]
    assert r1.rounds[0]["scores"] == [2, 1, 2, 1] and r1.stats["judge_calls"] == 6
    assert [(p["chosen"], p["rejected"]) for p in r1.pairs] == [("Step 1: k\n", "Step 1: l\n")]
    assert r1.stop_reason == "max_steps" and r1.steps == ["k"]
    w4b = {(QA.text, ()): [["k", "l", "m", r"\boxed{1}"]] * 3}
    r2 = one(ScriptedGenerator(w4b, always("[[A]]")), QA, cfg(width=4, judge_orders=2, max_iterations=3))
    assert r2.rounds[0]["scores"] == [3, 3, 3, 3] and r2.stats["judge_calls"] == 36
    assert r2.pairs == [] and r2.stats["rollbacks"] == 3


def test_judge_orders_1_unparseable_verdicts_are_no_win_and_counted():
    script = {(QA.text, ()): [["k", r"\boxed{1}", "m"]]}
    judge = prefer({r"\boxed{1}": 2, "k": 1, "m": 1}, tie_text="garbage")
    r = one(ScriptedGenerator(script, judge), QA, cfg(judge_orders=1))
    # pairs shown (0,1) (2,0) (1,2): boxed beats k and m; k vs m unparseable
    assert r.rounds[0]["scores"] == [0, 2, 0]
    assert (r.stats["judge_calls"], r.stats["unparseable_verdicts"]) == (3, 1)
    unparsed = [c for c in r.rounds[0]["comparisons"] if c["verdict"] is None]
    assert unparsed == [{"a": 2, "b": 0, "verdict": None, "source": "judge", "text": "garbage"}]


# --- empty candidates and EOS --------------------------------------------------------------------
def test_empty_candidate_loses_without_a_call_and_eos_ends_the_solution():
    script = {(QA.text, ()): [[("", "eos"), ("x", "stop"), ("y", "eos")]]}
    r = one(ScriptedGenerator(script, prefer({"y": 2, "x": 1})), QA, cfg())
    assert r.rounds[0]["scores"] == [0, 2, 4]
    assert [(p["chosen"], p["rejected"]) for p in r.pairs] == [("Step 1: y\n", "Step 1: \n")]
    assert r.stop_reason == "eos" and r.steps == ["y"]
    assert (r.stats["empty_candidates"], r.stats["empty_comparisons"], r.stats["judge_calls"]) == (1, 4, 2)


def test_all_empty_candidates_tie_and_roll_back():
    script = {(QA.text, ()): [["", "", ""], ["", r"\boxed{3}", ""]]}
    r = one(ScriptedGenerator(script, always("[[A]]")), QA, cfg())
    assert [rd["action"] for rd in r.rounds] == ["resample_step1", "keep"]
    assert r.rounds[1]["scores"] == [0, 4, 0] and r.stats["judge_calls"] == 0
    assert r.stats["empty_candidates"] == 5


def test_max_steps_stops_the_chain():
    pol = lambda req: [f"a{req.step}", f"b{req.step}", f"c{req.step}"]  # noqa: E731
    judge = lambda req: "[[A]]" if req.a.startswith("a") else ("[[B]]" if req.b.startswith("a") else TIE)  # noqa: E731
    r = one(ScriptedGenerator(pol, judge), QA, cfg(max_steps=3))
    assert r.steps == ["a1", "a2", "a3"] and r.stop_reason == "max_steps" and len(r.pairs) == 3


# --- batching, seeds, resume, errors --------------------------------------------------------------
def fresh_abc():
    script = {}
    for d in (POLICY_A, POLICY_B, POLICY_C):
        script.update({k: [list(x) for x in v] for k, v in d.items()})
    strength = {**STRENGTH, **STRENGTH_B, "a": 1, "b": 0, r"\boxed{2}": 2}
    return ScriptedGenerator(script, prefer(strength, tie_text=TIE))


def test_questions_in_flight_share_each_generator_call_and_results_match_solo_runs():
    gen = fresh_abc()
    batched = list(run_search(gen, [QA, QB, QC], cfg(questions_in_flight=3)))
    # QB needs 4 rounds: 4 policy calls + 4 judge calls, each carrying every unfinished question
    # (QC's first round has identical candidates: no judge call; QA and QC finish after round 2)
    assert [c["kind"] for c in gen.calls] == ["policy", "judge"] * 4
    assert [len(c["prompts"]) for c in gen.calls] == [3, 6 + 6 + 0, 3, 6 + 6 + 6, 1, 6, 1, 4]
    solo = [one(fresh_abc(), q, cfg()) for q in (QA, QB, QC)]
    assert [trace_record(r) for r in batched] == [trace_record(r) for r in solo]
    assert [pair_records(r) for r in batched] == [pair_records(r) for r in solo]
    # per-prompt seeds depend on (seed, id, step, attempt), not on the batch
    assert gen.calls[0]["seeds"] == [derive_seed(7, q.id, "policy", 1, 0) for q in (QA, QB, QC)]


def test_fixed_groups_and_resume_skip_written_ids_but_recompute_their_group():
    gen = fresh_abc()
    out = list(run_search(gen, [QA, QB, QC], cfg(questions_in_flight=2), skip_ids={"qa"}))
    assert [r.id for r in out] == ["qb", "qc"]
    assert len(gen.calls[0]["prompts"]) == 2  # group [qa, qb] recomputed whole: same batches as before
    gen2 = fresh_abc()
    out2 = list(run_search(gen2, [QA, QB, QC], cfg(questions_in_flight=2), skip_ids={"qa", "qb"}))
    assert [r.id for r in out2] == ["qc"] and len(gen2.calls[0]["prompts"]) == 1  # finished group skipped


def test_a_failing_question_is_isolated_and_reported():
    gen = fresh_abc()
    gen.fail_on = lambda p: "BOOM" in p
    qs = [QA, Question("bad", "BOOM"), QC]
    res = list(run_search(gen, qs, cfg()))
    assert [r.status for r in res] == ["ok", "error", "ok"]
    assert res[1].stop_reason == "error" and "scripted failure" in res[1].error and res[1].pairs == []
    assert [p["chosen"] for p in res[0].pairs] == ["Step 1: a1 good\n", "Step 2: so \\boxed{3}\n"]
    summ = summarize(res)
    assert summ["questions_failed"] == 1 and summ["failed_ids"] == ["bad"] and summ["totals"]["pairs"] == 3


def test_summary_totals_and_questions_from_dicts():
    gen = fresh_abc()
    res = list(run_search(gen, [{"id": "qa", "problem": QA.text, "answer": "3"}, QB, QC], cfg()))
    assert res[0].meta == {"answer": "3"}
    summ = summarize(res)
    t = summ["totals"]
    assert (t["pairs"], t["rollbacks"], t["iterations"], t["judge_calls"]) == (5, 2, 8, 40)
    assert summ["stop_reasons"] == {"final_answer": 3} and summ["pairs_per_question_hist"] == {"1": 1, "2": 2}


def test_config_validation_and_judge_params():
    with pytest.raises(ValueError, match="width"):
        SearchConfig(width=1)
    with pytest.raises(ValueError, match="judge_orders"):
        SearchConfig(judge_orders=3)
    with pytest.raises(ValueError, match="mode"):
        SearchConfig(mode="beam")
    c = SearchConfig.from_mapping({"width": 4, "temperature": 0.7, "unrelated": 1, "max_new_tokens_judge": 9})
    assert (c.width, c.judge_params().temperature, c.judge_params().max_new_tokens, c.judge_params().n) == (4, 0.7, 9, 1)
    assert SearchConfig(judge_temperature=0.0).judge_params().temperature == 0.0
    assert SearchConfig().rollback and not SearchConfig(mode="tts").rollback
    with pytest.raises(ValueError, match="non-empty"):
        list(run_search(fresh_abc(), [{"id": "x", "problem": "  "}], cfg()))


def test_derive_seed_is_stable_and_separates_its_parts():
    assert derive_seed(0, "q", 1, 0) == derive_seed(0, "q", 1, 0)
    assert len({derive_seed(0, "q", 1, 0), derive_seed(0, "q", 1, 1), derive_seed(0, "q", 2, 0), derive_seed(1, "q", 1, 0)}) == 4
    assert 0 <= derive_seed(123, "x") < 2**31
