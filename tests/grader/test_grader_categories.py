"""Answer categories found missing against labelled cases of public grader suites: several boxed
answers against a gold that lists them, decimal commas, and unordered collections of tuples.
Each case has its exact verdict; the wrong ones (a wrong set, a missing or extra element,
``1,000`` vs ``1``) are as much the spec as the right ones. Graded through the public API."""

import time

import pytest

from psr.grader import extract_answer, grade, grade_many

T, F = True, False

LONG = "We work through this part carefully, set up the equation, simplify and check the result. "

CATEGORIES = {
    # (a) a response with several boxes (roots, parts) against a gold that lists the answers
    "several_boxes_roots": [
        ("The roots are $x = \\boxed{2}$ or $x = \\boxed{3}$.", "2, 3", T),
        ("x = \\boxed{3} or x = \\boxed{2}", "x=2 \\text{ or } x=3", T),  # roots: any order
        ("So $x_1 = \\boxed{2}$, $x_2 = \\boxed{3}$.", "2, 3", T),
        ("So $x_1 = \\boxed{2}$, $x_2 = \\boxed{3}$.", "x_1 = 2, x_2 = 3", T),
        ("\\boxed{2}, \\boxed{3}", "x=2 or x=3", T),
        ("\\boxed{2, 3}", "x = 2 \\text{ or } x = 3", T),
        ("The first root is \\boxed{2}. " + LONG + "The second root is \\boxed{-3}.", "2, -3", T),
        ("\\boxed{2}", "2, 3", F),  # a missing root
        ("x = \\boxed{2} or x = \\boxed{4}", "2, 3", F),  # a wrong set
        ("\\boxed{2}, \\boxed{3}, \\boxed{4}", "2, 3", F),  # an extra root
        ("First \\boxed{2}. " + LONG + "Then \\boxed{3}. " + LONG + "Also \\boxed{4}.", "2, 3", F),  # an extra box
        ("x = \\boxed{(1} or x = \\boxed{2)}", "(1, 2)", F),  # halves of a tuple are no answers
        ("The first root is \\boxed{2}. " + LONG + "The other is \\boxed{3}.", "(2, 3)", F),  # a tuple is one answer
        ("a = \\boxed{2}, b = \\boxed{3}", "a = 2, b = 3", T),
        ("a = \\boxed{3}, b = \\boxed{2}", "a = 2, b = 3", F),  # the names are kept
    ],
    "several_boxes_parts_in_order": [
        ("(a) \\boxed{5}\n(b) \\boxed{7}", "(a) 5, (b) 7", T),
        ("(a) \\boxed{7}\n(b) \\boxed{5}", "(a) 5, (b) 7", F),
        ("**Part (a):** " + LONG + "so \\boxed{5}.\n\n**Part (b):** " + LONG + "so \\boxed{7}.", "(a) 5 (b) 7", T),
        ("**Part (a):** " + LONG + "so \\boxed{7}.\n\n**Part (b):** " + LONG + "so \\boxed{5}.", "(a) 5 (b) 7", F),
        ("\\boxed{5}, \\boxed{7}", "\\text{(a) } 5, \\text{(b) } 7", T),
        ("\\boxed{7}, \\boxed{5}", "\\text{(a) } 5, \\text{(b) } 7", F),
        ("\\boxed{5} and \\boxed{7}", "a) 5; b) 7", T),
        ("\\boxed{5}, \\boxed{7}", "(i) 5 (ii) 7", T),
        ("\\boxed{5}, \\boxed{7}", "(I) 5 (II) 7", T),
        ("\\boxed{5}, \\boxed{7}", "Part (a): 5, Part (b): 7", T),
        ("(a) \\boxed{x = 5} (b) \\boxed{\\frac{1}{2}}", "(a) 5 (b) 0.5", T),
        ("\\boxed{(a) 5, (b) 7}", "(a) 5 (b) 7", T),
        ("\\boxed{(a) 7, (b) 5}", "(a) 5 (b) 7", F),
        # labelled parts in the response are in order against a plain list too
        ("(a) \\boxed{5} (b) \\boxed{7}", "5, 7", T),
        ("(a) \\boxed{7} (b) \\boxed{5}", "5, 7", F),
        ("\\boxed{5}", "(a) 5 (b) 7", F),  # a missing part
        ("(a) \\boxed{5} (b) \\boxed{7} (c) \\boxed{9}", "(a) 5 (b) 7", F),  # an extra part
        ("\\boxed{\\{7, 5\\}}", "(a) 5 (b) 7", F),  # a set written in another order
        ("\\boxed{f(b), 3}", "(a) f(b) (b) 3", T),  # f(b) is no label
        ("\\boxed{3, f(b)}", "(a) f(b) (b) 3", F),
    ],
    # (b) a comma as the decimal separator; one comma before exactly three digits is thousands
    "decimal_comma": [
        ("\\boxed{2,74}", "2.74", T), ("\\boxed{2,74}", "\\frac{137}{50}", T), ("\\boxed{0,5}", "\\frac12", T),
        ("\\boxed{-0,5}", "-\\frac{1}{2}", T), ("\\boxed{1,5}", "\\frac32", T), ("\\boxed{12,5\\%}", "12.5\\%", T),
        ("\\boxed{2{,}74}", "2.74", T), ("\\boxed{0{,}125}", "\\frac18", T), ("\\boxed{2,74 \\text{ m}}", "2.74", T),
        ("Soucis : 2,74 $ a..", "2.74", T),
        ("\\boxed{2,75}", "2.74", F), ("\\boxed{2{,}74}", "274", F), ("\\boxed{1{,}5}", "15", F),
        # against a whole number a comma is never a decimal: 19133.5 would pass 19133 by tolerance
        ("\\boxed{19133,5}", "19133", F), ("\\boxed{3,0}", "3", F), ("\\boxed{1,2}", "1", F),
        ("It costs 2,75", "2.74", F),
    ],
    "thousands_comma": [
        ("\\boxed{1,000}", "1000", T), ("\\boxed{1,500}", "1500", T), ("\\boxed{1{,}000}", "1000", T),
        ("\\boxed{\\$115,000}", "115000", T), ("\\boxed{115000}", "\\$115,000", T),
        ("\\boxed{1,000}", "1", F), ("\\boxed{1,000}", "1.000", F), ("\\boxed{1,500}", "1.5", F),
        ("\\boxed{1{,}000}", "1", F), ("\\boxed{\\$115, 000}", "\\$115,000", F),
    ],
    "comma_lists_stay_lists": [
        ("\\boxed{1,2}", "1, 2", T), ("\\boxed{2,1}", "1,2", T), ("\\boxed{1,2}", "\\{1,2\\}", T),
        ("\\boxed{93,27}", "27,93", T), ("\\boxed{1,3}", "1,2", F), ("\\boxed{1,2}", "1,2,3", F),
    ],
    # (c) unordered collections of tuples
    "tuple_collections": [
        ("\\boxed{(1,2),(3,4)}", "(3,4),(1,2)", T), ("\\boxed{(1,2),(3,4)}", "\\{(3,4),(1,2)\\}", T),
        ("\\boxed{\\{(3,4),(1,2)\\}}", "(1,2),(3,4)", T),
        ("\\boxed{(1,2) \\text{ and } (3,4)}", "(3, 4)\\text{ or }(1, 2)", T),
        ("\\boxed{(1,2) \\quad (3,4)}", "(3,4),(1,2)", T), ("\\boxed{\\{(1,2);(3,4)\\}}", "\\{(3,4),(1,2)\\}", T),
        ("\\boxed{(1,2)}, \\boxed{(3,4)}", "(3,4),(1,2)", T), ("\\boxed{(1,2)}", "\\{(1,2)\\}", T),
        ("\\boxed{\\{(1,2)\\}}", "(1,2)", T),
        ("\\boxed{(5,3),(3,5),(-3,-5),(-5,-3)}", "(-5,-3), (-3,-5), (3,5), (5,3)", T),
        ("\\boxed{(\\frac{1}{2}, 3), (2, \\sqrt{2})}", "(2,\\sqrt2),(0.5,3)", T),
        ("\\boxed{(1,2,3),(4,5,6)}", "\\{(4,5,6),(1,2,3)\\}", T),
        ("\\boxed{(1,2) \\quad (3,5)}", "(3,4),(1,2)", F),  # a wrong tuple
        ("\\boxed{\\{(1,2);(3,5)\\}}", "\\{(3,4),(1,2)\\}", F),
        ("\\boxed{(2,1),(4,3)}", "(1,2),(3,4)", F),  # tuples themselves are ordered
        ("\\boxed{(1,2)}", "(1,2),(3,4)", F),  # a missing tuple
        ("\\boxed{(1,2),(3,4),(5,6)}", "\\{(1,2),(3,4)\\}", F),  # an extra tuple
        ("\\boxed{(1,2),(1,2)}", "(1,2),(3,4)", F),  # a repeated tuple is not the other one
        ("\\boxed{(1,2,3,4)}", "(1,2),(3,4)", F),
        ("\\boxed{(2,1)}", "\\{(1,2)\\}", F),
        ("\\boxed{(2,\\sqrt{3}),(\\frac{1}{2}, 3)}", "(2,\\sqrt2),(0.5,3)", F),
    ],
}

CASES = [(cat, r, g, want) for cat, cases in CATEGORIES.items() for r, g, want in cases]


@pytest.fixture(scope="module")
def verdicts():
    got = grade_many([(r, g) for _, r, g, _ in CASES], workers=1, timeout_s=20)
    return {(r, g): v for (_, r, g, _), v in zip(CASES, got)}


@pytest.mark.parametrize("cat,resp,gold,want", CASES, ids=[f"{c}:{r[:40]}|{g}" for c, r, g, _ in CASES])
def test_category(verdicts, cat, resp, gold, want):
    assert verdicts[(resp, gold)] is want


@pytest.mark.parametrize("text,expected", [
    ("x = \\boxed{2} or x = \\boxed{3}", "x = 2, x = 3"),
    ("$x=\\boxed{2}$ and $x=\\boxed{3}$", "x = 2, x = 3"),
    ("(a) \\boxed{5}\n(b) \\boxed{7}", "(a) 5, (b) 7"),
    ("**Part (a):** \\boxed{5}\n\n**Part (b):** \\boxed{7}", "(a) 5, (b) 7"),
    ("\\textbf{(i)} \\boxed{5}, \\textbf{(ii)} \\boxed{7}", "(i) 5, (ii) 7"),
    ("a) \\boxed{1}; b) \\boxed{2}; c) \\boxed{3}", "(a) 1, (b) 2, (c) 3"),
    ("so \\boxed{5} (c) \\boxed{7}", "5, 7"),  # labels out of sequence: a plain list
    ("\\boxed{2} = \\boxed{2}", "2"),  # an equation between boxes is no list
    ("x = \\boxed{(1} or x = \\boxed{2)}", "2)"),
    ("\\boxed{\\boxed{5}}", "\\boxed{5}"),  # a box inside a box is part of it, not a second answer
])
def test_several_boxes_extract_as_one_list(text, expected):
    assert extract_answer(text) == expected


def test_a_box_inside_a_box_is_one_answer():
    assert grade("\\boxed{\\boxed{5}}", "5") is True
    assert grade("\\boxed{\\boxed{5}}", "6") is False


def test_many_unclosed_boxes_are_linear_not_quadratic():
    text = "\\boxed{" * 32 + "{" * 1_000_000  # was 13 s: every box scanned the megabyte again
    t0 = time.perf_counter()
    assert extract_answer(text) is None
    assert time.perf_counter() - t0 < 5
    assert grade_many([(text, "1, 2"), ("\\boxed{1}, \\boxed{2}", "1, 2")], workers=1, timeout_s=20) == [False, True]


def test_hostile_lists_and_labels_are_wrong_within_the_timeout(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    cases = [
        (f"(a) \\boxed{{{payload}}} (b) \\boxed{{2}}", "(a) 1 (b) 2"),
        (f"x = \\boxed{{{payload}}} or x = \\boxed{{2}}", "1, 2"),
        (f"\\boxed{{1}}. {LONG} \\boxed{{{payload}}}", "1, 2"),
        ("\\boxed{(a)" + "(b)" * 100_000 + "}", "(a) 1 (b) 2"),
        ("(a) \\boxed{1} (b) " * 50_000, "(a) 1 (b) 1"),
        ("\\boxed{" + "(1,2)" * 100_000 + "}", "(1,2),(1,2)"),
        ("\\boxed{" + "1,5" * 100_000 + "}", "1.5"),
    ]
    t0 = time.perf_counter()
    got = grade_many(cases + [("(a) \\boxed{1} (b) \\boxed{2}", "(a) 1 (b) 2")], workers=1, timeout_s=5)
    assert got == [False] * len(cases) + [True]
    assert time.perf_counter() - t0 < 5 * len(cases) + 10
    assert not marker.exists()
