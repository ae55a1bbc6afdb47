import random
from collections import Counter

import pytest

from psr.arith.candidates import WRONG_KINDS, correct_step, random_wrong_step, wrong_step, wrong_steps
from psr.arith.checker import check_step, check_step_detail, find_equations
from psr.arith.problems import generate_problems

# the checker's reason for each kind of wrong step
EXPECTED_REASON = {
    "wrong_operation": "wrong_quantity",
    "wrong_quantity": "wrong_quantity",
    "off_by_one": "arithmetic",
    "off_by_ten": "arithmetic",
    "copied_number": "arithmetic",
    "early_answer": "wrong_answer",
    "repeated_step": "no_progress",
    "skipped_operation": "wrong_quantity",
}


def test_checker_rejects_every_generated_wrong_step_and_accepts_every_correct_one():
    problems = generate_problems(400, seed=7, min_ops=1, max_ops=6)
    rng = random.Random(0)
    counts, n_correct = Counter(), 0
    for p in problems:
        for l in range(1, p.n_ops + 1):
            prev = p.steps[: l - 1]
            assert check_step(p, prev, p.steps[l - 1]), (p.id, l)
            assert check_step(p, prev, correct_step(p, l, rng)), (p.id, l)
            n_correct += 2
            for cand in wrong_steps(p, l, rng):
                verdict = check_step_detail(p, prev, cand.body)
                assert not verdict.correct, (p.id, l, cand)
                assert verdict.reason == EXPECTED_REASON[cand.kind], (p.id, l, cand, verdict)
                counts[cand.kind] += 1
    assert sum(counts.values()) > 5000 and n_correct > 2500
    assert set(counts) == set(WRONG_KINDS)
    assert min(counts.values()) > 500


def test_wrong_steps_look_like_steps():
    p = generate_problems(20, seed=8, min_ops=3, max_ops=3)[5]
    rng = random.Random(1)
    for l in range(1, 4):
        for cand in wrong_steps(p, l, rng):
            eqs = find_equations(cand.body)
            assert len(eqs) == 1  # one operation, like the reference
            assert ("\\boxed{" in cand.body) == ((l == 3 and cand.kind != "repeated_step") or cand.kind == "early_answer")
    assert wrong_step(p, 3, "early_answer", rng) is None and wrong_step(p, 1, "repeated_step", rng) is None
    final = wrong_step(p, 3, "off_by_one", rng)
    claimed = find_equations(final)[0].claimed
    assert final.endswith(f"\\boxed{{{claimed}}}.")  # a wrong final step boxes its own result
    assert claimed in (p.answer + 1, p.answer - 1)


def test_wrong_step_generation_is_seeded():
    p = generate_problems(3, seed=9)[1]
    a = [wrong_step(p, 1, k, random.Random(5)) for k in WRONG_KINDS]
    b = [wrong_step(p, 1, k, random.Random(5)) for k in WRONG_KINDS]
    assert a == b
    assert random_wrong_step(p, 2, random.Random(3)) == random_wrong_step(p, 2, random.Random(3))
    with pytest.raises(ValueError, match="unknown wrong-step kind"):
        wrong_step(p, 1, "typo", random.Random(0))
