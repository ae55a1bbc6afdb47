"""Equivalence rules of answers_match / grade (each rule with cases that must pass and cases
that must fail). Everything here goes through the public, worker-isolated API."""

import pytest

from psr.data.benchmarks import answer_type_of
from psr.grader import answers_match, grade, grade_many

T, F = True, False

RULES = {
    "normalised_string": [
        ("\\dfrac{3}{4}", "\\frac34", T), ("\\left( 1, 2 \\right)", "(1,2)", T), ("3.", "3", T),
        ("\\text{Evelyn}", "Evelyn", T), ("\\textbf{yes}", "Yes", T), ("\\frac{2}{3}", "\\frac{3}{2}", F),
    ],
    "numeric_rel_tol_1e-4": [
        ("0.5", "\\frac{1}{2}", T), ("5.0001", "5", T), ("5.01", "5", F), ("0.333", "\\frac{1}{3}", F),
        ("-\\frac{1}{2}", "-0.5", T), (".5", "0.5", T), ("+3", "3", T), ("-3", "3", F), ("1/2", "\\frac12", T),
        ("3\\sqrt{2}", "4.2426", T), ("1.41", "\\sqrt{2}", F),
    ],
    "leading_zeros": [("25", "025", T), ("025", "25", T), ("250", "025", F)],
    "percent_x100": [
        ("30\\%", "0.3", T), ("0.3", "30\\%", T), ("28 percent", "28\\%", T), ("28 pct", "28\\%", T), ("28", "28\\%", T),
        ("30", "0.3", F), ("28", "0.28", F),
    ],
    "multiple_choice": [
        ("C", "C", T), ("(C)", "C", T), ("\\text{(C)}", "C", T), ("C: 12", "C", T), ("B", "C", F), ("12", "C", F),
    ],
    "word_numbers": [("five", "5", T), ("twenty-one", "21", T), ("two", "3", F)],
    "thousands_separators": [
        ("1,000", "1000", T), ("7,425,000", "7425000", T), ("1\\,234", "1234", T), ("14{,}916", "14916", T),
        ("1,001", "1000", F), ("12,\\! 345,\\! 678", "12345678", T), ("12, 345", "12345", F),
        # a decimal comma is read as such only against a decimal point ("5,15" stays a list)
        ("2500,75", "2500.75", T), ("0,125", "0.125", T), ("15, 5", "5,15", T), ("1,234", "1.234", F),
    ],
    "units_and_text": [
        ("5\\text{ cm}", "5", T), ("18 \\text{ dollars}", "18", T), ("\\$5.00", "5", T), ("\\$1,000", "1000", T),
        ("6 \\text{ cm}", "5", F),
    ],
    "degrees": [("90^\\circ", "90", T), ("45^{\\circ}", "45", T), ("45°", "45", T), ("46^\\circ", "45", F)],
    "scientific_notation": [
        ("4.4\\times10^{7}", "4.4e7", T), ("1e-3", "0.001", T), ("1.5 \\times 10^{3}", "1500", T), ("10^{5}", "100000", T),
        ("4.5\\times10^{7}", "4.4e7", F),
    ],
    "mixed_numbers": [("3\\frac{1}{2}", "3.5", T), ("1\\frac{1}{3}", "\\frac43", T), ("2\\frac{1}{4}", "0.5", F),
                      ("5 2/3", "\\frac{17}{3}", T), ("5 2/3", "52/3", F), ("-5 2/3", "-\\frac{17}{3}", T)],
    "intervals": [
        ("[1,2)", "[1,2)", T), ("[1,2)", "[1,2]", F), ("(0,9)", "[0,9)", F),
        ("(-\\infty, 3) \\cup (5, \\infty)", "(-\\infty,3)\\cup(5,\\infty)", T), ("(0,1)\\cup(2,3)", "(0,1)\\cup[2,3]", F),
        ("x \\le 3", "(-\\infty,3]", T), ("x<3", "(-\\infty,3]", F), ("1<x\\leq 2", "(1,2]", T),
    ],
    "sets_and_lists": [
        ("\\{2,1\\}", "\\{1,2\\}", T), ("\\{1,2\\}", "\\{1,3\\}", F), ("2, 3", "3, 2", T),
        ("12,13", "12\\text{ and }13", T), ("(1,1),(3,2)", "(3,2),(1,1)", T), ("\\emptyset", "\\varnothing", T),
        ("1,2", "1,2,3", F), ("3, 8, and 11", "3, 8, \\text{ and } 11", T), ("3, 8, and 11", "3, 9, and 11", F), ("x \\in [-3, 5)", "[-3,5)", T), ("t \\in (0, 1)", "[0,1)", F),
    ],
    "tuples": [("(1,2,3)", "(1,2,3)", T), ("(1,2,3)", "(1,3,2)", F), ("(2,3)", "(3,2)", F),
               ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", T)],
    "matrices": [
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", T),
        ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "(1,2)", T),
        ("\\begin{pmatrix}1&2\\end{pmatrix}", "\\begin{pmatrix}2&1\\end{pmatrix}", F),
        ("\\begin{pmatrix} 0.5 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} \\frac12 \\\\ 2 \\end{pmatrix}", T),
    ],
    "equations": [
        ("x=3", "3", T), ("3", "x = 3", T), ("k=\\frac{1}{2}", "0.5", T), ("y = -x + 3", "-x+3", T),
        ("x=4", "3", F), ("y=2x+1", "y=2x+1", T),
        # two equations are compared whole: same line, different spelling
        ("y=-\\frac{1}{2}x+\\frac{3}{4}", "2x+4y-3=0", T), ("x + y - z + 2 = 0", "5x - 7y + 11z + 4 = 0", F),
        ("x = z", "x = y", F), ("x^2+y^2=1", "x^2+y^2=4", F),
    ],
    "symbolic": [
        ("\\sqrt{8}", "2\\sqrt{2}", T), ("x^2+2x+1", "(x+1)^2", T), ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", T),
        ("\\pi/2", "\\frac{\\pi}{2}", T), ("2x+1", "2x+2", F), ("\\sin(\\pi/6)", "\\frac12", T), ("a^2-b^2", "(a-b)(a+b)", T),
        ("2\\sqrt{3}", "\\sqrt{13}", F),
        ("\\frac{10\\sqrt{10.5}}{27}", "\\frac{5\\sqrt{42}}{27}", T),  # equal closed forms sympy cannot simplify
        ("-\\infty", "\\infty", F), ("\\infty", "\\infty", T),
        ("\\frac{x}{7}+\\frac{2}{7}", "\\frac{x+2}{7}", T), ("x+1", "x+2n+1", F),
    ],
}

CASES = [(rule, p, g, want) for rule, cases in RULES.items() for p, g, want in cases]


@pytest.fixture(scope="module")
def verdicts():
    """All rule cases graded in one batch (one worker): {(pred, gold): verdict}."""
    got = grade_many([(p, g) for _, p, g, _ in CASES], workers=1, timeout_s=20)
    return {(p, g): v for (_, p, g, _), v in zip(CASES, got)}


@pytest.mark.parametrize("rule,pred,gold,want", CASES, ids=[f"{r}:{p}|{g}" for r, p, g, _ in CASES])
def test_rule(verdicts, rule, pred, gold, want):
    assert verdicts[(pred, gold)] is want


def test_answers_match_is_the_answer_level_api():
    assert answers_match("\\frac{1}{2}", "0.5") is True
    assert answers_match("The answer is 0.5", "0.5") is False  # a solution is not an answer
    assert grade("The answer is 0.5", "0.5") is True
    assert answers_match(None, "1") is False and answers_match("1", "") is False


def test_empty_gold_never_matches():
    assert grade("\\boxed{}", "") is False
    assert grade("", "") is False


def test_gold_given_as_a_full_solution_uses_its_boxed_answer():
    gold = "Thus $x-p=\\boxed{2-2p}$."
    assert grade("The answer is $2-2p$.", gold) is True
    assert grade("The answer is $2+2p$.", gold) is False


def test_unboxed_latex_solution_gets_a_math_verify_second_opinion():
    resp = "Adding the two equations gives $2x = 9$, so we conclude with $x = \\frac{9}{2}$ as required"
    assert grade(resp, "4.5") is True
    assert grade(resp, "5") is False


def test_short_unmarked_texts():
    assert grade("Navin from Mauritius", "\\text{Navin from Mauritius}") is True
    assert grade("It is 12", "12") is True and grade("It is 12", "13") is False
    assert grade("$\\frac{1+\\sqrt{5}}{2}$", "2") is False  # no digit is read out of an expression


def test_benchmark_aware_grading():
    assert grade("She earns 18 dollars.\n#### 18", "18", answer_type_of("gsm8k")) is True
    assert grade("The answer is \\boxed{025}.", "25", answer_type_of("aime24")) is True
    assert grade("So the answer is \\boxed{C}", "C", answer_type_of("gaokao2023en")) is True
    assert grade("So the answer is (B)", "C", answer_type_of("gaokao2023en")) is False
