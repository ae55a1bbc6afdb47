"""Final-answer extraction: boxed (nested braces), GSM8k ####, "the answer is", bare answers,
last number, and the benchmark-aware variants (numeric, multiple choice)."""

import pytest

from psr.data.benchmarks import answer_type_of
from psr.grader import choice_letter, extract_answer, last_boxed


@pytest.mark.parametrize("text,expected", [
    ("so $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("first \\boxed{1} then \\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}"),  # the last box
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not close the box
    ("\\fbox{42}", "42"),
    ("$\\framebox{204}$ minutes", "204"),
    ("hence \\boxed 7 is it", "7"),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
])
def test_last_boxed_content_with_nested_braces(text, expected):
    assert extract_answer(text) == expected


def test_unbalanced_last_box_falls_back_to_an_earlier_complete_box():
    assert last_boxed("\\boxed{3} and then \\boxed{4") == "3"


@pytest.mark.parametrize("text,expected", [
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
    ("so she pays 1,234 dollars\n#### 1,234", "1234"),
    ("Thus the answer is 42.", "42"),
    ("The answer is $\\frac{3}{4}$. Done", "\\frac{3}{4}"),
    ("Final Answer: The final answer is $28 \\%$. I hope it is correct.", "28 \\%"),
    ("blah\nThe final answer is (B)", "(B)"),
    ("Answer: 17", "17"),
])
def test_marker_phrases(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("3/4", "3/4"), ("$\\frac{1}{2}$", "\\frac{1}{2}"), ("x = 3", "x = 3"), ("(A)", "(A)"), ("  -7. ", "-7"),
])
def test_short_bare_answer_is_the_text_itself(text, expected):
    assert extract_answer(text) == expected


def test_long_unmarked_text_gives_its_last_number():
    text = "We add the apples and the pears together, which gives 12 fruits; then we remove 5 and get 7 left"
    assert extract_answer(text) == "7"
    assert extract_answer("Costs went up by 1,500 dollars over the year in total sum") == "1500"


def test_no_answer_at_all_is_none():
    assert extract_answer("I do not know how to solve this problem at all sorry") is None
    assert extract_answer(None) is None
    assert extract_answer("") is None


def test_numeric_benchmark_reduces_a_worded_answer_to_its_number():
    assert extract_answer("so \\boxed{18 \\text{ dollars}}", answer_type_of("gsm8k")) == "18"
    assert extract_answer("so \\boxed{18 \\text{ dollars}}") == "18 \\text{ dollars}"
    assert extract_answer("\\boxed{2^{10}}", answer_type_of("aime24")) == "2^{10}"
    assert extract_answer("\\boxed{18 apples each day}", answer_type_of("gsm8k")) == "18"
    # a sentence after "the answer is" is reduced to its number (any benchmark)
    assert extract_answer("The answer is 18 dollars per day.") == "18"
    assert extract_answer("Final Answer: The volume of $ABCD$ is 120. I hope it is correct.") == "120"
    assert extract_answer("The final answer is that $x$ equals $\\frac{1}{2}$ here") == "\\frac{1}{2}"


def test_choice_benchmark_gives_the_option_letter():
    assert extract_answer("so \\boxed{(C)}", answer_type_of("gaokao2023en")) == "C"
    assert extract_answer("The answer is B: 12", answer_type_of("gaokao2023en")) == "B"
    assert extract_answer("\\boxed{\\text{D}}", answer_type_of("gaokao2023en")) == "D"
    # not a letter: the math answer is kept
    assert extract_answer("\\boxed{\\frac{3}{10}}", answer_type_of("gaokao2023en")) == "\\frac{3}{10}"


def test_the_grader_takes_an_answer_type_not_a_benchmark_name():
    from psr.grader import ANSWER_TYPES, grade, grade_many

    assert ANSWER_TYPES == ("math", "numeric", "choice_or_math")
    assert extract_answer("so \\boxed{18 \\text{ dollars}}", "numeric") == "18"
    assert extract_answer("so \\boxed{(C)}", "choice_or_math") == "C"
    assert extract_answer("so \\boxed{(C)}", None) == extract_answer("so \\boxed{(C)}", "math") == "(C)"
    # a benchmark name is refused in the caller's process, before any worker grades it
    with pytest.raises(ValueError, match=r"answer_type must be one of .*got 'gsm8k'.*answer_type_of"):
        extract_answer("\\boxed{1}", "gsm8k")
    with pytest.raises(ValueError, match="got 'gsm8k'"):
        grade("\\boxed{1}", "1", "gsm8k")
    with pytest.raises(ValueError, match="got 'aime24'"):
        grade_many([("\\boxed{1}", "1"), ("\\boxed{1}", "1", "aime24")])
    with pytest.raises(ValueError, match="got 'math500'"):
        grade_many([("\\boxed{1}", "1")], answer_type="math500")


@pytest.mark.parametrize("ans,letter", [
    ("C", "C"), ("(C)", "C"), ("C.", "C"), ("C: 12", "C"), ("\\text{(B)}", "B"), ("c", "C"),
    ("Cat", None), ("12", None), (None, None),
])
def test_choice_letter(ans, letter):
    assert choice_letter(ans) == letter


def test_extraction_is_linear_on_a_megabyte_of_braces():
    import time

    def run(n: int) -> float:
        t0 = time.perf_counter()
        assert extract_answer("\\boxed{" + "{" * (5 * n // 2)) is None  # never closed, no number
        assert extract_answer("\\boxed{" + "{" * n + "7" + "}" * n + "}") == "{" * n + "7" + "}" * n
        return time.perf_counter() - t0

    small, big = run(20_000), run(200_000)
    # 10x the input: ~10x the time when linear, ~100x when quadratic; the bound scales with the
    # machine's current speed (the small run) instead of assuming an idle machine
    assert big < max(30 * small, 10.0)


def test_adjacent_boxes_form_one_answer_list():
    assert extract_answer("the roots are $\\boxed{3}$ and $\\boxed{-4}$") == "3, -4"
    assert extract_answer("first \\boxed{1}. Much later, after more work, we get \\boxed{7}") == "7"


def test_a_final_answer_line_after_the_last_box_wins():
    text = "Step one gives \\boxed{120}. Then more. Final Answer: The final answer is $9,240$. I hope it is correct."
    assert extract_answer(text) == "9,240"
    assert extract_answer("The answer is \\boxed{5}.") == "5"


def test_set_membership_prefix_and_sentence_answers():
    assert extract_answer("Final Answer: We need 7 more marbles for the jar, 12 in all.") == "12"
    assert extract_answer("Final Answer: The smallest $k$ is 12.") == "12"


def test_boxes_joined_by_quad_and_text_and_are_one_list():
    assert extract_answer("so \\[ \\boxed{-5} \\quad \\text{and} \\quad \\boxed{2}. \\]") == "-5, 2"


@pytest.mark.parametrize("text,expected", [
    ("$\\frac{2}{5}.$", "\\frac{2}{5}"), ("$\\frac{2}{5},$", "\\frac{2}{5}"), ("$(3,4).$", "(3,4)"),
    ("$7, 8, 9, ...$", "7, 8, 9, ..."),  # an ellipsis is kept
])
def test_sentence_punctuation_inside_math_is_dropped(text, expected):
    assert extract_answer(text) == expected


def test_last_number_is_a_whole_token():
    assert extract_answer("the code we were given is AZYUK2A and nothing else here") is None
    assert extract_answer("the rope is 5cm long after cutting it twice in the end") == "5"
