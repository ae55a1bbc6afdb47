"""psr.ift: rules segmentation and the Figure 3 split validator."""

import json

import pytest

from psr.generation.base import SamplingParams
from psr.ift import (
    ANSWER_SUFFIX,
    check_split,
    check_teacher_output,
    last_boxed,
    reference_solution,
    rules_segment,
    same_answer,
    segment_sentences,
    strip_calculator_annotations,
)
from psr.prompts import ift_split_prompt
from psr.testing import ScriptedSplitTeacher
from psr.steps import format_steps, parse_steps


def _squash(s):
    return "".join(s.split())


def _grade(steps, gold):
    """psr.grader.grade when the grader is installed, else the boxed string vs gold (commas stripped)."""
    try:
        from psr.data.benchmarks import answer_type_of
        from psr.grader import grade
    except ImportError:
        grade = None
    if grade is not None:
        return bool(grade(format_steps(steps), gold, answer_type_of("gsm8k")))
    return last_boxed(steps[-1]).replace(",", "") == gold.replace(",", "")


def test_rules_mode_on_first_50_gsm8k_train_items_grades_equal_to_gold(data_dir):
    lines = (data_dir / "gsm8k" / "train.jsonl").read_text().splitlines()[:50]
    items = [json.loads(l) for l in lines]
    for it in items:
        ref, hash_answer = reference_solution(it["solution"])
        assert hash_answer is None  # the shared copy keeps the answer in its own field
        chk = check_split(rules_segment(ref), ref, it["answer"])
        assert chk.ok, (it["id"], chk)
        steps = chk.steps
        # one step per non-empty solution line, no calculator annotations left
        assert len(steps) == len([l for l in it["solution"].split("\n") if l.strip()])
        assert not any("<<" in s or ">>" in s for s in steps)
        assert _grade(steps, it["answer"]), it["id"]
        assert not _grade(steps, str(2 * int(it["answer"]) + 7)), it["id"]  # the check can fail
        # nothing else was changed: the steps minus the appended answer are the solution
        suffix = ANSWER_SUFFIX.format(answer=it["answer"])
        assert steps[-1].endswith(suffix)
        body = "".join(steps)[: -len(suffix)]
        assert _squash(body) == _squash(strip_calculator_annotations(it["solution"]))


def test_gsm8k_first_item_exact_steps():
    sol = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
           "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.")
    ref, _ = reference_solution(sol)
    chk = check_split(rules_segment(ref), ref, "72")
    assert chk.ok and chk.answer_appended
    assert chk.steps == [
        "Natalia sold 48/2 = 24 clips in May.",
        "Natalia sold 48+24 = 72 clips altogether in April and May. The answer is $\\boxed{72}$.",
    ]


def test_hash_line_gives_the_answer_and_is_not_a_step():
    sol = "He pays 1000+234 = <<1000+234=1234>>1234 dollars.\n#### 1,234"
    ref, ans = reference_solution(sol)
    assert ans == "1,234" and "####" not in ref
    chk = check_split(rules_segment(ref), ref, ans)
    assert chk.steps == ["He pays 1000+234 = 1234 dollars. The answer is $\\boxed{1,234}$."]


def test_math_style_split_never_cuts_inside_math_and_ends_with_boxed():
    sol = (
        "We have $x = 3.5. Then y$ is fixed by the equation. Substituting gives\n"
        "$$2x + 1 = 8. \\text{ Also } y = 2.$$\n"
        "Therefore the sum of the two roots equals 9. So the answer is $\\boxed{9}$. Done."
    )
    steps = rules_segment(sol)
    assert steps == [
        "We have $x = 3.5. Then y$ is fixed by the equation.",
        "Substituting gives\n$$2x + 1 = 8. \\text{ Also } y = 2.$$",
        "Therefore the sum of the two roots equals 9.",
        "So the answer is $\\boxed{9}$. Done.",
    ]
    assert check_split(steps, sol).ok


def test_short_pieces_are_merged_forward():
    sol = "First. Second sentence is long enough to stand alone here. Thus $\\boxed{2}$."
    assert segment_sentences(sol, min_step_chars=30) == [
        "First. Second sentence is long enough to stand alone here. Thus $\\boxed{2}$."
    ]
    assert segment_sentences(sol, min_step_chars=10) == [
        "First. Second sentence is long enough to stand alone here.",
        "Thus $\\boxed{2}$.",
    ]
    assert segment_sentences(sol, min_step_chars=5)[0] == "First."


ORIG = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."


@pytest.mark.parametrize(
    "output, ok, reason",
    [
        # faithful split, answer appended by the validator
        ("Step 1: Natalia sold 48/2 = 24 clips in May.\nStep 2: Natalia sold 48+24 = 72 clips "
         "altogether in April and May.", True, None),
        # teacher appended the boxed gold answer in a short sentence
        ("Step 1: Natalia sold 48/2 = 24 clips in May.\nStep 2: Natalia sold 48+24 = 72 clips "
         "altogether in April and May. The final answer is $\\boxed{72}$.", True, None),
        # teacher boxed the final number in place
        ("Step 1: Natalia sold 48/2 = 24 clips in May.\nStep 2: Natalia sold 48+24 = \\boxed{72} clips "
         "altogether in April and May.", True, None),
        # altered number
        ("Step 1: Natalia sold 48/2 = 25 clips in May.\nStep 2: Natalia sold 48+24 = 72 clips "
         "altogether in April and May.", False, "text_mismatch"),
        # boxed a wrong answer
        ("Step 1: Natalia sold 48/2 = 24 clips in May.\nStep 2: Natalia sold 48+24 = 72 clips "
         "altogether in April and May. \\boxed{73}", False, "text_mismatch"),
        # appended more than a short answer sentence
        ("Step 1: Natalia sold 48/2 = 24 clips in May.\nStep 2: Natalia sold 48+24 = 72 clips "
         "altogether in April and May. Since she sold clips in both months we add them and get "
         "\\boxed{72}", False, "text_mismatch"),
        # dropped a sentence
        ("Step 1: Natalia sold 48+24 = 72 clips altogether in April and May.", False, "text_mismatch"),
        ("Step 1: Natalia sold 48/2 = 24 clips in May.\nStep 3: Natalia sold 48+24 = 72 clips "
         "altogether in April and May.", False, "bad_numbering"),
        ("Natalia sold 48/2 = 24 clips in May.", False, "no_steps"),
        ("Step 1: Natalia sold 48/2 = 24 clips in May.\nStep 2:\nStep 3: Natalia sold 48+24 = 72 "
         "clips altogether in April and May.", False, "empty_step"),
    ],
)
def test_teacher_output_validation(output, ok, reason):
    chk = check_teacher_output(output, ORIG, "72")
    assert chk.ok is ok and chk.reason == reason, chk
    if ok:
        assert last_boxed(chk.steps[-1]) == "72"


def test_mismatch_detail_points_at_the_change():
    chk = check_teacher_output("Step 1: Natalia sold 48/2 = 25 clips in May. Natalia sold 48+24 = 72 "
                               "clips altogether in April and May.", ORIG, "72")
    assert chk.reason == "text_mismatch"
    assert chk.detail.startswith("first difference at non-space char 17:")
    assert "'taliasold48/2=25clips" in chk.detail and "'taliasold48/2=24clips" in chk.detail


def test_truncated_output_and_missing_answer_are_rejected():
    good = "Step 1: Natalia sold 48/2 = 24 clips in May.\nStep 2: Natalia sold 48+24 = 72 clips altogether in April and May."
    assert check_teacher_output(good, ORIG, "72", finish_reason="length").reason == "generation_truncated"
    assert check_teacher_output(good, ORIG, None).reason == "no_final_answer"
    boxed_orig = "So $x=2$. Hence $\\boxed{2}$. We are done now."
    # the original's boxed answer must end up in the final step
    chk = check_split(["So $x=2$. Hence $\\boxed{2}$.", "We are done now."], boxed_orig)
    assert chk.reason == "no_final_answer"
    assert check_split(["So $x=2$.", "Hence $\\boxed{2}$. We are done now."], boxed_orig).ok


def test_same_answer_normalisation():
    assert same_answer("1,234", "1234") and same_answer("$72$.", "72") and not same_answer("72", "7.2")


def test_scripted_split_teacher_faithful_and_altered():
    sol = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."
    prompt = ift_split_prompt("How many clips?", sol)
    faithful = ScriptedSplitTeacher().generate([prompt], SamplingParams())[0][0].text
    assert parse_steps(faithful)[0] == "Natalia sold 48/2 = 24 clips in May."
    assert check_teacher_output(faithful, sol, "72").ok
    altered = ScriptedSplitTeacher(alter=["Natalia"]).generate([prompt], SamplingParams())[0][0].text
    assert parse_steps(altered)[0] == "Natalia sold 58/2 = 24 clips in May."
    assert check_teacher_output(altered, sol, "72").reason == "text_mismatch"


def test_rules_mode_math_fallback_on_first_50_math500_items(data_dir):
    items = [json.loads(l) for l in (data_dir / "math500" / "test.jsonl").read_text().splitlines()[:50]]
    n_steps = []
    for it in items:
        steps = rules_segment(it["solution"])
        chk = check_split(steps, it["solution"], it["answer"])
        assert chk.ok and not chk.answer_appended, (it["id"], chk)
        assert last_boxed(chk.steps[-1]) == it["answer"], it["id"]
        n_steps.append(len(steps))
    assert min(n_steps) >= 1 and sum(n_steps) / len(n_steps) > 2
