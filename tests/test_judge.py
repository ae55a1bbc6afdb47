import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psr.judge import comparisons, judge_round, parse_verdict, plan_comparisons, tournament


@pytest.mark.parametrize(
    "text, verdict",
    [
        ("A is right. [[A]]", "A"),
        ("[[A]] at first, but on reflection [[B]]", "B"),
        ("final: [[ B ]]", "B"),
        ("[A] or [[C]]", None),
        ("", None),
        (None, None),
        ("Assistant A is better", None),
    ],
)
def test_parse_verdict_last_marker_wins(text, verdict):
    assert parse_verdict(text) == verdict


def test_comparisons_both_orders_and_one_order():
    assert len(comparisons(6, 2)) == 30
    assert set(comparisons(3, 2)) == {(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)}
    one = comparisons(6, 1)
    assert len(one) == 15
    assert {frozenset(c) for c in one} == {frozenset(p) for p in itertools.combinations(range(6), 2)}
    # the A position alternates: every candidate is shown first in some comparison
    assert {a for a, _ in one} == set(range(6))
    with pytest.raises(ValueError):
        comparisons(6, 3)
    with pytest.raises(ValueError):
        comparisons(1, 2)


def test_tournament_hand_worked_case():
    # w=3, both orders. 0 beats 1 twice, 0 vs 2 split, 2 beats 1 twice
    outcomes = {(0, 1): "A", (1, 0): "B", (0, 2): "A", (2, 0): "A", (1, 2): "B", (2, 1): "A"}
    r = tournament(3, outcomes, 2)
    assert r.scores == [3, 0, 3]
    assert (r.best, r.worst, r.rollback) == (0, 1, False)  # tie for best -> lowest index
    assert (r.n_decided, r.n_undecided) == (6, 0)


def test_tournament_rollback_when_all_scores_equal():
    # a cycle: 0>1, 1>2, 2>0 in one order
    outcomes = {c: "A" for c in comparisons(3, 1)}
    r = tournament(3, outcomes, 1)
    assert r.scores == [1, 1, 1] and r.rollback
    assert tournament(2, {(0, 1): None, (1, 0): None}).rollback


def test_tournament_requires_every_comparison():
    with pytest.raises(KeyError, match="A=1, B=0"):
        tournament(2, {(0, 1): "A"}, 2)
    with pytest.raises(ValueError):
        tournament(2, {(0, 1): "A", (1, 0): "C"}, 2)


def test_identical_and_empty_candidates_are_decided_without_a_call():
    cands = ["x = 1", "x  =  1", "", "y = 2"]
    plan = plan_comparisons(cands, 2)
    assert plan.n_identical == 2 and plan.n_empty == 6
    assert set(plan.calls) == {(0, 3), (3, 0), (1, 3), (3, 1)}
    assert plan.decided[(0, 1)] is None and plan.decided[(2, 3)] == "B" and plan.decided[(3, 2)] == "A"
    outputs = {k: "[[A]]" if k[0] == 3 else "[[B]]" for k in plan.calls}  # 3 always wins
    r = judge_round(cands, outputs, 2, plan)
    assert r.scores == [2, 2, 0, 6]  # 0 and 1 each beat the empty one in both orders
    assert (r.best, r.worst, r.rollback) == (3, 2, False)


def test_unparseable_verdicts_count_and_give_no_win():
    cands = ["a", "b"]
    r = judge_round(cands, {(0, 1): "I cannot decide", (1, 0): "[[A]]"}, 2)
    assert r.scores == [0, 1] and r.n_unparseable == 1 and r.n_undecided == 1 and r.n_decided == 1


verdicts = st.sampled_from(["A", "B", None])


@st.composite
def rounds(draw):
    w = draw(st.integers(2, 7))
    orders = draw(st.sampled_from([1, 2]))
    outcomes = {c: draw(verdicts) for c in comparisons(w, orders)}
    return w, orders, outcomes


@settings(max_examples=300, deadline=None)
@given(rounds())
def test_tournament_properties(rnd):
    w, orders, outcomes = rnd
    r = tournament(w, outcomes, orders)
    assert sum(r.scores) == r.n_decided == sum(v is not None for v in outcomes.values())
    assert r.scores[r.best] == max(r.scores) and r.scores[r.worst] == min(r.scores)
    assert r.rollback == (len(set(r.scores)) == 1)
    assert r.best == r.scores.index(max(r.scores))


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 7), st.data())
def test_swapping_ab_of_every_judgment_leaves_scores_unchanged(w, data):
    # judge_orders=2: comparison (a, b) with verdict v is the same judgment as (b, a) with v flipped
    outcomes = {c: data.draw(verdicts) for c in comparisons(w, 2)}
    flip = {"A": "B", "B": "A", None: None}
    swapped = {(b, a): flip[v] for (a, b), v in outcomes.items()}
    assert tournament(w, swapped, 2).scores == tournament(w, outcomes, 2).scores
