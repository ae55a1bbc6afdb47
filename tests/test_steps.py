import pytest

from psr.steps import (
    cut_at_next_step,
    final_answer_reached,
    format_step,
    format_steps,
    next_step_body,
    next_step_stop,
    parse_steps,
)


def test_parse_steps_ignores_preamble_and_tolerates_whitespace():
    text = "Let me think.\n\nStep 1:  First, 3*4 = 12.\n\n\nStep  2 :2 + 12 = 14.\nSo \\boxed{14}\n"
    assert parse_steps(text) == ["First, 3*4 = 12.", "2 + 12 = 14.\nSo \\boxed{14}"]


def test_parse_steps_headers_on_one_line_and_no_steps():
    assert parse_steps("Step 1: a Step 2: b") == ["a", "b"]
    assert parse_steps("no steps here") == []
    assert parse_steps("Step 1:\nStep 2: x") == ["", "x"]


def test_parse_steps_does_not_split_inside_words():
    assert parse_steps("Step 1: see Footstep 2: no") == ["see Footstep 2: no"]


def test_format_round_trips_through_parse():
    steps = ["a = 1.", "b = a + 1 = 2.", "The answer is \\boxed{2}."]
    text = format_steps(steps)
    assert text == "Step 1: a = 1.\nStep 2: b = a + 1 = 2.\nStep 3: The answer is \\boxed{2}.\n"
    assert parse_steps(text) == steps
    assert format_steps([]) == ""
    assert format_steps(["x"], start=4) == "Step 4: x\n"


def test_format_step_rejects_step_zero():
    with pytest.raises(ValueError):
        format_step(0, "x")


def test_stop_rule_for_one_next_step():
    assert next_step_stop(1) == ["Step 2:"]
    assert next_step_stop(9) == ["Step 10:"]
    assert cut_at_next_step("Step 3: x = 1. Step 4: y", 3) == "Step 3: x = 1. "
    assert cut_at_next_step("Step 3: x Step  5 : skip", 3) == "Step 3: x "
    assert cut_at_next_step("Step 3: mentions Step 2: earlier", 3) == "Step 3: mentions Step 2: earlier"


def test_next_step_body_strips_own_header_and_later_steps():
    assert next_step_body(" Step 2: 2+12 = 14.\nStep 3: done", 2) == "2+12 = 14."
    assert next_step_body("2+12 = 14.", 2) == "2+12 = 14."
    assert next_step_body("   ", 2) == ""
    assert next_step_body("Step 2:", 2) == ""


@pytest.mark.parametrize(
    "step, reached",
    [
        ("so the answer is \\boxed{14}.", True),
        ("\\boxed{\\frac{1}{2}}", True),
        ("\\fbox{3}", True),
        ("\\boxed {x}", True),
        ("\\boxed{", False),
        ("\\boxed{\\frac{1}{2}", False),
        ("boxed 14", False),
        ("", False),
    ],
)
def test_final_answer_reached(step, reached):
    assert final_answer_reached(step) is reached
