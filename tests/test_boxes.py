r"""psr.boxes: the one brace scanner and the one last_boxed, and the callers that share them."""

import time

import pytest

from psr import boxes
from psr.boxes import box_commands, boxed_spans, find_boxed, has_boxed, last_boxed, matching_braces


def test_matching_braces_skips_escaped_braces_and_leaves_unclosed_out():
    text = r"a{b\{c}d{e{f}"
    assert matching_braces(text, [1, 8]) == {1: 7}  # "{b\{c}" closes at index 6; the "{" at 8 never does
    assert matching_braces(text, [10]) == {10: 13}
    assert matching_braces(text, []) == {}


@pytest.mark.parametrize("text,expected", [
    (r"so $x = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"\boxed{1} then \boxed{2}", "2"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
    (r"\boxed{\{}", r"\{"),  # an escaped brace is text: the box closes at the plain one
    (r"\fbox{42}", "42"),
    (r"$\framebox{204}$", "204"),
    ("\\boxed {x}", "x"),
    ("\\boxed\n{7}", "7"),
    (r"\boxed{ 5 }", "5"),
    (r"\boxed{\boxed{5}}", "5"),  # the inner box is the last one
    (r"\boxed{3} and then \boxed{4", "3"),  # an unclosed box is skipped
    ("hence \\boxed 7 is it", "7"),
    ("hence \\boxed 7$ is it", "7"),
    (r"\boxed{", None),
    ("no box here", None),
    (r"\boxedx{3}", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_spans_contents_and_has_boxed_see_braced_boxes_only():
    text = r"a \boxed{4{1}} b \fbox{5 \text{ apples}} \boxed 6 \boxed{"
    assert find_boxed(text) == ["4{1}", r"5 \text{ apples}"]  # as written, in order
    (s1, c1, e1, end1), (s2, c2, e2, end2) = boxed_spans(text)
    assert text[s1:end1] == r"\boxed{4{1}}" and text[c1:e1] == "4{1}"
    assert text[s2:end2] == r"\fbox{5 \text{ apples}}"
    assert find_boxed(r"\boxed{a \boxed{b}}") == [r"a \boxed{b}", "b"]  # nested boxes are boxes too
    assert has_boxed(r"\boxed {x}") and not has_boxed("\\boxed 6") and not has_boxed(r"\boxed{\frac{1}{2}")
    assert [b for _, _, b in box_commands(r"\boxed 6 \boxed{1}")] == [-1, 15]
    assert len(box_commands(r"\boxed{1}" * 40, last=32)) == 32 and box_commands(r"\boxed{1}", last=0) == []


def test_untrusted_text_is_scanned_in_linear_time():
    text = "\\boxed{" * 20_000
    t = time.perf_counter()
    assert last_boxed(text) is None and find_boxed(text) == [] and not has_boxed(text)
    # one scan per unclosed box (what ift and steps did before) is ~10^9 steps here: minutes
    assert time.perf_counter() - t < 5.0


def test_every_caller_uses_the_shared_functions():
    from psr import grader, ift, steps
    from psr.arith import checker
    from psr.data import numina
    from psr.grader import extract

    assert grader.last_boxed is extract.last_boxed is ift.last_boxed is numina.last_boxed is boxes.last_boxed
    assert checker.find_boxed is boxes.find_boxed and ift.boxed_spans is boxes.boxed_spans
    assert steps.final_answer_reached(r"so \boxed{3}.") and not steps.final_answer_reached(r"\boxed{3")
