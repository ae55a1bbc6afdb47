import re
from collections import Counter

import pytest

from psr.arith.checker import find_equations
from psr.arith.problems import Problem, generate_problems, make_splits
from psr.steps import final_answer_reached, format_steps, parse_steps


def test_same_seed_same_problems_other_seed_other_problems():
    a = [p.to_dict() for p in generate_problems(50, seed=3)]
    b = [p.to_dict() for p in generate_problems(50, seed=3)]
    c = [p.to_dict() for p in generate_problems(50, seed=4)]
    assert a == b
    assert sum(x["question"] == y["question"] for x, y in zip(a, c)) < 3


def test_splits_are_disjoint_and_test_has_longer_problems():
    train, test = make_splits(1500, 400, seed=0)
    assert len(train) >= 1490 and len(test) >= 390  # only duplicate questions are dropped
    assert not {p.question for p in train} & {p.question for p in test}
    assert len({p.question for p in train}) == len(train)
    assert {p.n_ops for p in train} == {2, 3, 4}
    assert {p.n_ops for p in test} == {2, 3, 4, 5, 6}
    assert max(p.n_ops for p in test) > max(p.n_ops for p in train)
    assert all(p.id.startswith("arith-train-0-") for p in train)
    assert all(p.id.startswith("arith-test-0-") for p in test)


def test_test_ops_must_exceed_train_ops():
    with pytest.raises(ValueError, match="must reach beyond"):
        make_splits(10, 10, train_ops=(2, 4), test_ops=(2, 4))


def test_ops_weights_set_how_often_each_operation_count_occurs():
    even = generate_problems(60, seed=0, min_ops=1, max_ops=3)
    assert [p.n_ops for p in even[:6]] == [1, 2, 3, 1, 2, 3]
    weighted = generate_problems(4000, seed=0, min_ops=1, max_ops=4, ops_weights=[1, 1, 1, 0.2])
    counts = Counter(p.n_ops for p in weighted)
    assert set(counts) == {1, 2, 3, 4}
    assert 0.04 < counts[4] / 4000 < 0.08  # 0.2 / 3.2 = 6.25%
    assert all(0.28 < counts[k] / 4000 < 0.34 for k in (1, 2, 3))
    # a zero weight never occurs; the same seed gives the same problems
    assert {p.n_ops for p in generate_problems(200, seed=0, min_ops=1, max_ops=3, ops_weights=[1, 0, 1])} == {1, 3}
    again = generate_problems(4000, seed=0, min_ops=1, max_ops=4, ops_weights=[1, 1, 1, 0.2])
    assert [p.to_dict() for p in again] == [p.to_dict() for p in weighted]


@pytest.mark.parametrize("weights", [[1, 1], [1, -1, 1], [0, 0, 0]])
def test_bad_ops_weights_are_refused(weights):
    with pytest.raises(ValueError, match="ops_weights must be 3 non-negative weights"):
        generate_problems(5, seed=0, min_ops=1, max_ops=3, ops_weights=weights)


def test_train_ops_weights_leave_the_test_split_alone():
    train, test = make_splits(400, 200, seed=0, train_ops=(1, 4), test_ops=(1, 5), train_ops_weights=[1, 1, 1, 0.1])
    _, test_even = make_splits(400, 200, seed=0, train_ops=(1, 4), test_ops=(1, 5))
    assert [p.question for p in test] == [p.question for p in test_even]
    assert Counter(p.n_ops for p in test)[5] == 40


def test_reference_solution_shape_one_operation_per_step():
    for p in generate_problems(300, seed=1, min_ops=1, max_ops=6):
        assert len(p.steps) == p.n_ops == len(p.operations)
        text = format_steps(p.steps)
        assert parse_steps(text) == p.steps
        assert text.startswith("Step 1: ")
        for k, (body, op) in enumerate(zip(p.steps, p.operations)):
            eqs = find_equations(body)
            assert len(eqs) == 1 and eqs[0].correct
            assert eqs[0].text == f"{op.x} {op.op} {op.y} = {op.result}"
            assert final_answer_reached(body) == (k == p.n_ops - 1)
        assert p.steps[-1].endswith(f"\\boxed{{{p.answer}}}.")
        assert p.answer == p.values[-1]
        # values are distinct positive integers, distinct from the givens; givens appear in the question
        assert len(set(p.values)) == len(p.values) and not set(p.values) & set(p.givens)
        assert all(0 < v <= 999 for v in p.values)
        assert [int(x) for x in re.findall(r"\d+", p.question)] == p.givens
        # free-form solution: same arithmetic, no step headers, boxed answer
        assert "Step" not in p.solution and p.solution.endswith(f"\\boxed{{{p.answer}}}.")
        assert [e.text for e in find_equations(p.solution)] == [e.text for b in p.steps for e in find_equations(b)]


def test_wording_is_varied():
    ps = generate_problems(300, seed=2)
    assert len({p.ctx["unit"] for p in ps}) >= 8
    assert len({p.ctx["Name"] for p in ps}) >= 10
    assert {o.op for p in ps for o in p.operations} == {"+", "-", "*", "/"}
    first_words = {p.steps[1].split()[0] for p in ps}
    assert len(first_words) >= 6


def test_problem_dict_round_trip():
    p = generate_problems(3, seed=5)[2]
    assert Problem.from_dict(p.to_dict()) == p


def test_number_ranges_set_the_size_of_the_numbers():
    from psr.arith.problems import NumberRanges

    small = NumberRanges(start=(5, 9), groups=(2, 3), per_group=(3, 4), add=(2, 5), mul=(2, 2), div=(2, 2), max_value=60)
    ps = generate_problems(200, seed=1, ranges=small)
    assert max(v for p in ps for v in p.values) <= 60
    assert max(p.givens[0] for p in ps) <= 9
    big = generate_problems(200, seed=1, ranges=NumberRanges(max_value=9999, mul=(5, 9), start=(100, 500)))
    assert max(v for p in big for v in p.values) > 999
    for p in big:
        assert len(set(p.values)) == len(p.values) and max(p.values) <= 9999
    assert NumberRanges.from_mapping({"add": [1, 3]}).add == (1, 3)
    with pytest.raises(ValueError, match=r"unknown number range key\(s\) \['ad'\]"):
        NumberRanges.from_mapping({"ad": [1, 3]})


def test_data_does_not_depend_on_the_hash_seed(tmp_path):
    import os
    import subprocess
    import sys

    code = (
        "import hashlib, sys; from psr.arith.data import write_initial_data; "
        "p = write_initial_data(sys.argv[1], 40, 20, 0); "
        "print(hashlib.sha256(b''.join(p[k].read_bytes() for k in sorted(p))).hexdigest())"
    )
    digests = set()
    for h in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=h)
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / h)], env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_presets_and_default_difficulty():
    from psr.arith.problems import PRESETS, NumberRanges

    assert NumberRanges() == PRESETS["easy"]
    assert max(v for p in generate_problems(100, seed=0) for v in p.values) <= 99
    hard = NumberRanges.from_mapping({"preset": "hard", "add": [2, 10]})
    assert hard.max_value == 999 and hard.add == (2, 10)


def test_one_step_wording_makes_every_correct_candidate_the_reference_text():
    import random

    from psr.arith.candidates import correct_step, random_wrong_step
    from psr.arith.problems import PRESETS, make_splits

    train, _ = make_splits(60, 10, 0, (1, 3), (1, 4), PRESETS["small"], step_wordings=1)
    rng = random.Random(0)
    for p in train:
        for l in range(1, p.n_ops + 1):
            assert correct_step(p, l, rng) == p.steps[l - 1]  # no rewording left to tell apart
            assert random_wrong_step(p, l, rng).body != p.steps[l - 1]
    # one sentence frame per kind of operation across all problems: "... gets 7 more, so ..."
    plus = {s.split(" gets ")[1].split(" more")[0] for p in train for s, o in zip(p.steps, p.operations)
            if o.op == "+" and o.kind != "g"}
    assert plus and all(s.isdigit() for s in plus)
    with pytest.raises(ValueError, match="step_wordings"):
        make_splits(5, 5, 0, (1, 2), (1, 3), PRESETS["small"], step_wordings=0)
