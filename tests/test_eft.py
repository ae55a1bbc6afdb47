"""psr.eft: step-level MCTS, pair selection, the double-judging filters, EFT records, split."""

import math

import pytest

from psr.eft import (
    MCTSConfig,
    Tree,
    classify_pair,
    eft_records,
    judge_pairs,
    judge_prompts,
    score_last,
    search_trees,
    select_pairs,
    split_by_question,
    tree_record,
)
from psr.generation.base import Completion, SamplingParams
from psr.prompts import parse_judge_prompt
from psr.steps import parse_steps
from psr.testing import LengthPRM, ScriptedTeacher

LONG = "a much longer step number {l}"  # 27 chars: LengthPRM 27/47
SHORT = "short{l}"  # 6 chars: LengthPRM 6/26


class ScriptedPolicy:
    """Deterministic policy: for step l it answers `script(l, prev_steps)` (a list of texts, one
    per sample, cycled to n). Records every call."""

    name, version, tokenizer = "scripted-policy", "test", None

    def __init__(self, script):
        self.script = script
        self.calls = []

    def generate(self, prompts, params, stops=None, seeds=None):
        self.calls.append({"prompts": list(prompts), "n": params.n, "stops": stops, "seeds": seeds})
        out = []
        for p in prompts:
            prev = parse_steps(p[p.index("Problem: "):])
            l = len(prev) + 1
            texts = self.script(l, prev)
            comps = []
            for j in range(params.n):
                t = texts[j % len(texts)]
                fin = "eos" if "\\boxed" in t else "stop"
                comps.append(Completion(text=f"Step {l}: {t}", n_tokens=3, finish_reason=fin))
            out.append(comps)
        return out

    def close(self):
        pass


def two_candidates(l, prev):
    # a duplicate and an empty sample are dropped: 2 children per expansion
    return [SHORT.format(l=l), LONG.format(l=l), SHORT.format(l=l), ""]


def test_uct_selection_expands_the_nodes_worked_out_by_hand():
    pol = ScriptedPolicy(two_candidates)
    cfg = MCTSConfig(num_iterations=3, simulation_depth=0, expand_width=4, exploration_constant=1.0)
    (t1, t2) = search_trees(pol, LengthPRM(), [("q1", "Q one?"), ("q2", "Q two?")], cfg)
    # One expansion call per iteration, both questions batched in it, n = expand_width.
    assert len(pol.calls) == 3
    assert all(len(c["prompts"]) == 2 and c["n"] == 4 for c in pol.calls)
    assert pol.calls[0]["stops"] == [["Step 2:"], ["Step 2:"]]
    # Iteration 1 expands the root; 2 asks for the long child (higher Q, same visits);
    # 3: root N=4, short1: 6/26 + sqrt(ln 4 / 1) = 1.408 > long1: mean(27/47, 6/26, 27/47) + sqrt(ln 4 / 3) = 1.139.
    expanded = [tuple(parse_steps(c["prompts"][0][c["prompts"][0].index("Problem: "):])) for c in pol.calls]
    assert expanded == [(), (LONG.format(l=1),), (SHORT.format(l=1),)]
    assert len(t1.nodes) == 7 and sum(n.expanded for n in t1.nodes) == 3
    root = t1.nodes[0]
    assert root.visits == 6
    assert math.isclose(root.total, 3 * (27 / 47 + 6 / 26))
    assert [n.steps for n in t1.nodes] == [n.steps for n in t2.nodes]
    # Seeds differ per question and per node, and are the same on a rerun.
    assert len(set(pol.calls[0]["seeds"])) == 2
    pol2 = ScriptedPolicy(two_candidates)
    search_trees(pol2, LengthPRM(), [("q1", "Q one?"), ("q2", "Q two?")], cfg)
    assert [c["seeds"] for c in pol2.calls] == [c["seeds"] for c in pol.calls]


def test_rollouts_are_batched_and_the_value_is_the_min_over_the_trail():
    pol = ScriptedPolicy(two_candidates)
    cfg = MCTSConfig(num_iterations=1, simulation_depth=2, expand_width=4)
    (t,) = search_trees(pol, LengthPRM(), [("q", "Q?")], cfg)
    # expansion (n=4), then 2 rollout depths over both children (n=1 each)
    assert [(len(c["prompts"]), c["n"]) for c in pol.calls] == [(1, 4), (2, 1), (2, 1)]
    # rollouts always take the first sample: SHORT, so every trail's min is 6/26
    short1, long1 = t.nodes[1], t.nodes[2]
    assert short1.value0 == pytest.approx(6 / 26) and long1.value0 == pytest.approx(6 / 26)
    assert long1.prm == pytest.approx(27 / 47)
    cfg_mean = MCTSConfig(num_iterations=1, simulation_depth=2, expand_width=4, rollout_value="mean")
    (t,) = search_trees(ScriptedPolicy(two_candidates), LengthPRM(), [("q", "Q?")], cfg_mean)
    assert t.nodes[2].value0 == pytest.approx((27 / 47 + 2 * 6 / 26) / 3)


def test_terminal_answers_end_the_tree_early():
    pol = ScriptedPolicy(lambda l, prev: ["so \\boxed{4}", "thus \\boxed{5}."])
    cfg = MCTSConfig(num_iterations=10, simulation_depth=3, expand_width=2)
    (t,) = search_trees(pol, LengthPRM(), [("q", "Q?")], cfg)
    assert len(pol.calls) == 1  # no rollouts from terminal children, and nothing left to expand
    assert t.iterations == 1 and all(n.terminal for n in t.nodes[1:])


def test_max_depth_and_dead_ends_are_terminal():
    pol = ScriptedPolicy(lambda l, prev: ["" if l == 2 else LONG.format(l=l)])
    cfg = MCTSConfig(num_iterations=5, simulation_depth=0, expand_width=1, max_depth=3)
    (t,) = search_trees(pol, LengthPRM(), [("q", "Q?")], cfg)
    # step 1 is fine; every step-2 sample is empty, so node 1 becomes a dead end
    assert len(t.nodes) == 2 and t.nodes[1].terminal and t.exhausted()
    pol = ScriptedPolicy(lambda l, prev: [LONG.format(l=l)])
    (t,) = search_trees(pol, LengthPRM(), [("q", "Q?")], MCTSConfig(num_iterations=9, simulation_depth=0,
                                                                   expand_width=1, max_depth=3))
    assert [n.depth for n in t.nodes] == [0, 1, 2, 3] and t.nodes[3].terminal and len(pol.calls) == 3


def _tree_with(prm_sets, visits):
    """A tree whose root has children; node k (1-based) of `prm_sets` is a parent of siblings with
    those P(+) values."""
    t = Tree("q", "Q?")
    root = t.nodes[0]
    root.expanded = True
    for k, (probs, v) in enumerate(zip(prm_sets, visits)):
        parent = t.add(root, f"parent {k}", "stop", 10)
        parent.visits = v
        parent.expanded = True
        for i, p in enumerate(probs):
            ch = t.add(parent, f"cand {k}.{i}", "stop", 10)
            ch.prm = p
    return t


def test_select_pairs_margin_cap_and_order():
    t = _tree_with([[0.9, 0.2, 0.5], [0.6, 0.55], [0.4], [0.8, 0.1, 0.8, 0.1]], visits=[3, 9, 1, 5])
    pairs, counts = select_pairs(t, pair_margin=0.3, max_pairs_per_question=1)
    # root has 4 children (P+ 1.0 each: gap 0), parent 1 gap 0.05, parent 2 a single child
    assert counts == {"too_few_candidates": 1, "small_gap": 2, "over_cap": 1}
    # parents 0 (gap 0.7, 3 visits) and 3 (gap 0.7, 5 visits) pass; the more visited is kept
    assert len(pairs) == 1
    p = pairs[0]
    assert (p["best"], p["worst"], p["prev_steps"], p["step"]) == ("cand 3.0", "cand 3.1", ["parent 3"], 2)
    assert p["gap"] == pytest.approx(0.7) and p["n_candidates"] == 4
    pairs, counts = select_pairs(t, pair_margin=0.3, max_pairs_per_question=0)
    assert [p["best"] for p in pairs] == ["cand 3.0", "cand 0.0"] and counts["over_cap"] == 0
    rec = tree_record(t, pairs, counts)
    assert rec["n_sibling_sets"] == 4 and rec["n_expanded"] == 5  # root, parents 0, 1, 3 (2 has one child)


@pytest.mark.parametrize(
    "v_ab, v_ba, status",
    [("A", "B", "kept"), ("B", "A", "prm_disagree"), ("A", "A", "inconsistent"), ("B", "B", "inconsistent"),
     (None, "B", "unparseable"), ("A", None, "unparseable"), (None, None, "unparseable")],
)
def test_classify_pair(v_ab, v_ba, status):
    assert classify_pair(v_ab, v_ba) == status


class TableTeacher:
    """Answers each judge prompt from a table {(best body, order): text}."""

    name, version, tokenizer = "table-teacher", "test", None

    def __init__(self, table):
        self.table = table
        self.prompts = []

    def generate(self, prompts, params, stops=None, seeds=None):
        self.prompts += prompts
        out = []
        for p in prompts:
            a = parse_judge_prompt(p)[1]
            key = next(k for k in self.table if a == f"Step 2: {k[0]}" and k[1] == "ab"
                       or a != f"Step 2: {k[0]}" and k[1] == "ba" and f"Step 2: {k[0]}" in p)
            out.append([Completion(self.table[key], 5, "eos")])
        return out


def _pair(i):
    return {"pair_id": f"q/n{i}", "prev_steps": ["x = 1."], "step": 2, "best": f"good {i}", "worst": f"bad {i}",
            "best_prm": 0.9, "worst_prm": 0.1, "gap": 0.8, "n_candidates": 2, "parent_visits": 1}


def test_double_judging_keeps_exactly_the_consistent_prm_agreeing_pairs():
    verdicts = {0: ("A", "B"), 1: ("A", "A"), 2: ("B", "A"), 3: (None, "B"), 4: ("B", "B"), 5: ("A", "B")}
    table = {}
    for i, (ab, ba) in verdicts.items():
        table[(f"good {i}", "ab")] = f"explanation ab {i}" + (f" [[{ab}]]" if ab else "")
        table[(f"good {i}", "ba")] = f"explanation ba {i}" + (f" [[{ba}]]" if ba else "")
    teacher = TableTeacher(table)
    recs = [{"id": "q", "question": "What is x + 1?", "pairs": [_pair(i) for i in range(6)]}]
    (judged,) = judge_pairs(teacher, recs, SamplingParams(), seed=0)
    assert len(teacher.prompts) == 12  # every pair twice, in one call
    assert [p["status"] for p in judged["pairs"]] == [
        "kept", "inconsistent", "prm_disagree", "unparseable", "inconsistent", "kept"]
    both = eft_records(judged, emit_both_orders=True)
    assert [r["id"] for r in both] == ["q/n0/ab", "q/n0/ba", "q/n5/ab", "q/n5/ba"]
    r0, r1 = both[0], both[1]
    assert (r0["step_a"], r0["step_b"], r0["label"], r0["judgment"]) == (
        "Step 2: good 0", "Step 2: bad 0", "A", "explanation ab 0 [[A]]")
    assert (r1["step_a"], r1["step_b"], r1["label"], r1["judgment"]) == (
        "Step 2: bad 0", "Step 2: good 0", "B", "explanation ba 0 [[B]]")
    assert r0["prev_steps"] == ["x = 1."] and r0["question"] == "What is x + 1?"
    one = eft_records(judged, emit_both_orders=False)
    assert len(one) == 2 and {r["id"].rsplit("/", 1)[0] for r in one} == {"q/n0", "q/n5"}
    # each record carries the judgment and verdict of the order it shows
    by_id = {r["id"]: r for r in both}
    assert all(r == by_id[r["id"]] for r in one)


def _kept_pairs(n):
    pairs = []
    for i in range(n):
        p = _pair(i)
        p.update(status="kept", judgments={"ab": f"ab {i} [[A]]", "ba": f"ba {i} [[B]]"},
                 verdicts={"ab": "A", "ba": "B"})
        pairs.append(p)
    return {"id": "q", "question": "What is x + 1?", "pairs": pairs}


def test_default_is_one_record_per_kept_pair_in_a_seeded_order():
    judged = _kept_pairs(200)
    default = eft_records(judged)
    assert len(default) == 200 and default == eft_records(judged, emit_both_orders=False, seed=0)
    assert [r["id"].rsplit("/", 1)[0] for r in default] == [f"q/n{i}" for i in range(200)]
    assert default == eft_records(judged)  # reproducible
    orders = [r["id"].rsplit("/", 1)[1] for r in default]
    assert [r["label"] for r in default] == ["A" if o == "ab" else "B" for o in orders]
    assert 80 <= orders.count("ab") <= 120  # about half each way
    for r in default:  # the best step is where the label says
        good = r["step_a"] if r["label"] == "A" else r["step_b"]
        assert good.startswith("Step 2: good")
    other = eft_records(judged, seed=1)
    assert [r["id"] for r in other] != [r["id"] for r in default]
    assert {r["id"].rsplit("/", 1)[0] for r in other} == {r["id"].rsplit("/", 1)[0] for r in default}
    assert len(eft_records(judged, emit_both_orders=True)) == 400


def test_pairs_that_were_not_kept_give_no_records():
    judged = _kept_pairs(3)
    judged["pairs"][1]["status"] = "inconsistent"
    assert [r["id"].rsplit("/", 1)[0] for r in eft_records(judged)] == ["q/n0", "q/n2"]


def test_judge_prompts_show_the_best_first_in_ab():
    prompts = judge_prompts(None, "Q?", _pair(0))
    assert "Assistant A’s Next Reasoning Step]\nStep 2: good 0\n" in prompts["ab"]
    assert "Assistant A’s Next Reasoning Step]\nStep 2: bad 0\n" in prompts["ba"]
    assert "Q?\nStep 1: x = 1.\n[The Start" in prompts["ab"]


@pytest.mark.parametrize("mode, status", [("prm", "kept"), ("anti_prm", "prm_disagree"),
                                          ("always_a", "inconsistent"), ("none", "unparseable")])
def test_scripted_teacher_modes(mode, status):
    recs = [{"id": "q", "question": "Q?", "pairs": [_pair(0)]}]  # LengthPRM: "good 0" == "bad 0" + 1 char
    recs[0]["pairs"][0]["best"] = "good and long 0"
    (judged,) = judge_pairs(ScriptedTeacher(mode), recs, SamplingParams())
    assert judged["pairs"][0]["status"] == status


def test_split_by_question_exact_sizes_without_overlap():
    by_q = [(f"q{i}", [{"id": f"q{i}/{j}", "q": f"q{i}"} for j in range(2 + i % 2)]) for i in range(10)]
    train, test, dropped = split_by_question(by_q, test_size=5, train_size=None, seed=0)
    assert len(test) == 5 and len(train) + len(test) + dropped == 25
    assert not {r["q"] for r in train} & {r["q"] for r in test}
    train2, test2, _ = split_by_question(list(reversed(by_q)), test_size=5, train_size=None, seed=0)
    assert test2 == test  # the split depends on ids and seed, not input order
    train3, test3, dropped3 = split_by_question(by_q, test_size=0, train_size=7, seed=0)
    assert (len(train3), len(test3), dropped3) == (7, 0, 18)


def test_score_last_checks_the_prm():
    prm = LengthPRM(scale=10)
    assert score_last(prm, [("q", ["abc", "0123456789"])]) == [0.5]

    class Bad:
        def score_steps(self, q, steps):
            return [1.5] * len(steps)

    with pytest.raises(ValueError, match="not a probability"):
        score_last(Bad(), [("q", ["a"])])

    class Short:
        def score_steps(self, q, steps):
            return [0.5]

    with pytest.raises(ValueError, match="1 scores for 2 steps"):
        score_last(Short(), [("q", ["a", "b"])])


def test_mcts_config_rejects_bad_values():
    with pytest.raises(ValueError, match="rollout_value"):
        MCTSConfig(rollout_value="max")
    with pytest.raises(ValueError, match="simulation_depth"):
        MCTSConfig(simulation_depth=-1)


def test_malformed_and_duplicate_candidates_are_dropped():
    # a sample that runs into another "Step n:" header is malformed; "  short1 " folds to "short1"
    pol = ScriptedPolicy(lambda l, prev: ["short1", "  short1 ", "oops Step 1: again", LONG.format(l=l)])
    (t,) = search_trees(pol, LengthPRM(), [("q", "Q?")], MCTSConfig(num_iterations=1, simulation_depth=0,
                                                                   expand_width=4))
    assert [n.steps[-1] for n in t.nodes[1:]] == ["short1", LONG.format(l=1)]


def test_search_scores_with_a_real_prm_scorer_through_score_batch(tiny_model_dir):
    prm_mod = pytest.importorskip("psr.prm")
    prm = prm_mod.PRMScorer(tiny_model_dir, step_tag="\n")  # random tiny model: "\n" is one token there
    pol = ScriptedPolicy(two_candidates)
    (t,) = search_trees(pol, prm, [("q", "What is 1 + 1?")], MCTSConfig(num_iterations=2, simulation_depth=1,
                                                                       expand_width=4))
    # per iteration: one batch for the new children, one for the rollout steps
    assert prm.calls == 4 and len(t.nodes) == 5
    for n in t.nodes[1:]:
        assert 0.0 < n.prm < 1.0
        assert n.prm == pytest.approx(prm.score_steps("What is 1 + 1?", list(n.steps))[-1], abs=1e-5)
