from fractions import Fraction

import pytest

from psr.arith.checker import (
    ArithOracle,
    boxed_value,
    check_solution,
    check_step,
    check_step_detail,
    check_steps,
    find_boxed,
    find_equations,
    parse_number,
    score_steps,
)

REF = [
    "Tom has 3 boxes with 12 apples each, so he has 3 * 12 = 36 apples.",
    "He buys 5 more, so he has 36 + 5 = 41 apples.",
    "After eating 9 he has 41 - 9 = 32 apples.",
    "Each share is 32 / 4 = 8 apples. The answer is \\boxed{8}.",
]


@pytest.mark.parametrize(
    "step",
    [
        REF[0],
        "3*12=36",
        "  3   *   12   =   36   apples  ",
        "Tom has 3 × 12 = 36 apples.",
        "Tom has 3 x 12 = 36 apples.",
        "12 * 3 = 36",  # operands in either order
        "Step 1: 3 * 12 = 36",  # a header is tolerated
        "3 * 12 = 36.0 apples",
        "3 * 12 = 36, then 36 + 5 = 41",  # two correct operations in one step
    ],
)
def test_correct_first_steps(apples, step):
    assert check_step_detail(apples, [], step).reason == "ok"


@pytest.mark.parametrize(
    "step, reason",
    [
        ("3 * 12 = 35 apples", "arithmetic"),
        ("3 * 12 = 37", "arithmetic"),
        ("3 * 12 = 36, so 36 + 5 = 42", "arithmetic"),
        ("3 + 12 = 15", "wrong_quantity"),  # wrong operation
        ("3 * 5 = 15", "wrong_quantity"),  # wrong quantity
        ("3 * 13 = 39", "unknown_operand"),  # a number not in the problem
        ("36 + 5 = 41", "unknown_operand"),  # skips a step: 36 is not derived yet
        ("Tom has 36 apples.", "no_progress"),  # no equation
        ("\\boxed{8}", "answer_not_derived"),
        ("3 * 12 = 36. The answer is \\boxed{36}.", "wrong_answer"),
        ("3 / 0 = 1", "arithmetic"),
        ("__import__('os').system('echo hi') = 36", "no_progress"),
        ("", "empty"),
        ("Step 1:   ", "empty"),
    ],
)
def test_wrong_first_steps(apples, step, reason):
    c = check_step_detail(apples, [], step)
    assert not c.correct and c.reason == reason


def test_verdict_details_name_the_error(apples):
    c = check_step_detail(apples, [], "so he has 3 * 12 = 35 apples")
    assert (c.equation, c.true_value, c.number) == ("3 * 12 = 35", "36", "35")
    c = check_step_detail(apples, [], "3 * 13 = 39")
    assert c.number == "13"


def test_later_steps_depend_on_previous_correct_steps(apples):
    assert check_step(apples, REF[:1], REF[1])
    assert check_step(apples, REF[:3], REF[3])
    assert check_step(apples, REF[:3], "32 ÷ 4 = 8, so the answer is \\boxed{8}")
    assert check_step(apples, REF[:3], "32 / 4 = 8")  # the final value without the box is progress
    assert check_step(apples, REF, "The answer is \\boxed{8}.")  # boxing a derived answer
    assert check_step(apples, REF[:3], "The final answer is \\boxed{ 8 \\text{ apples} }.") is False  # 8 not derived
    assert not check_step(apples, REF[:1], REF[0])  # repeating a step makes no progress
    assert not check_step(apples, REF[:3], "32 / 4 = 8. \\boxed{9}")  # wrong boxed value
    assert not check_step(apples, REF[:3], "32 / 4 = 8. \\boxed{8 + 0}")  # not a single number
    # a wrong previous step establishes nothing: 37 cannot be used afterwards
    assert not check_step(apples, ["3 * 12 = 37"], "37 + 5 = 42")
    assert not check_step(apples, ["3 * 12 = 37"], "36 + 5 = 41")  # 36 was never derived correctly


def test_commas_dollars_and_decimals(money):
    assert check_step(money, [], "She has 40 * $30 = $1,200.")
    assert check_step(money, [], "40 * 30 = 1200")
    assert check_step(money, ["40 * 30 = 1,200"], "1,200 - 200 = 1,000 dollars. The answer is \\boxed{\\$1,000}.")
    assert check_step(money, ["40 * 30 = 1,200"], "$1200 - $200 = $1000.00, so \\boxed{1000}")
    assert not check_step(money, ["40 * 30 = 1,200"], "1,200 - 200 = 1,100")
    assert not check_step(money, [], "40 * 30 = 12,00")  # not a thousands group: 12 then ",00"


def test_number_and_box_parsing():
    assert parse_number("1,200") == 1200
    assert parse_number("$12") == 12
    assert parse_number("12.5") == Fraction(25, 2)
    assert parse_number("−3") == -3
    assert find_boxed("a \\boxed{4{1}} b \\boxed{5 \\text{ apples}} \\boxed{") == ["4{1}", "5 \\text{ apples}"]
    assert boxed_value("5 \\text{ apples}") == 5
    assert boxed_value("$1,200") == 1200
    assert boxed_value("3+4") is None and boxed_value("x") is None and boxed_value("1 2") is None
    eqs = find_equations("2 * 3 + 4 = 10, 10 - 2 * 3 = 4, 7 − 2 = 5, 8 / 0 = 1, (3 + 4) * 2 = 14")
    assert [(e.text, e.correct) for e in eqs] == [
        ("2 * 3 + 4 = 10", True),
        ("10 - 2 * 3 = 4", True),
        ("7 − 2 = 5", True),
        ("8 / 0 = 1", False),
    ]


def test_untrusted_text_is_handled_linearly():
    # inputs that made an earlier version quadratic: they must simply find nothing
    assert find_equations("9 * " * 5000 + "= 3") == []
    assert find_boxed("\\boxed{" * 20000) == []
    assert find_equations("1" * 100000 + " + 1 = 2") == []
    assert len(find_equations("1 + " * 5000 + "1 = 5")) == 0


def test_score_steps_and_whole_solution(apples):
    assert score_steps(apples, REF) == [1.0, 1.0, 1.0, 1.0]
    bad = [REF[0], "36 + 5 = 40", "40 - 9 = 31", "31 / 4 = 7.75. \\boxed{7.75}"]
    assert score_steps(apples, bad) == [1.0, 0.0, 0.0, 0.0]
    assert [c.reason for c in check_steps(apples, bad)] == ["ok", "arithmetic", "unknown_operand", "unknown_operand"]
    assert check_solution(apples, REF)
    assert check_solution(apples, "3*12=36, 36+5=41, 41-9=32, 32/4=8. The answer is \\boxed{8}.")
    assert not check_solution(apples, bad)
    assert not check_solution(apples, "The answer is 8.")  # no box
    assert check_solution(apples, "\\boxed{7} no, \\boxed{8}")  # the last box counts


def test_oracle_addresses_problems_by_question(apples, money):
    oracle = ArithOracle([apples, money])
    assert oracle.score_steps("  " + apples.question.replace(" ", "  ") + "\n", REF[:2]) == [1.0, 1.0]
    assert oracle.check_step(money.question, [], "40 * 30 = 1200")
    assert oracle.find_problem(apples.question + "\nStep 1: 3 * 12 = 36") is apples
    with pytest.raises(KeyError, match="not an arith problem"):
        oracle.score_steps("What is 2 + 2?", ["2 + 2 = 4"])
