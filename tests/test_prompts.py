import re

import pytest

from psr import prompts


def test_templates_are_the_papers_word_for_word(paper_prompts_md):
    # paper_prompts_md (conftest): skips without ../shared/paper, fails under PSR_REQUIRE_DATA=1
    fig3, fig4, fig5 = re.findall(r"```\n(.*?)\n```", paper_prompts_md.read_text(encoding="utf-8"), re.S)
    assert prompts.IFT_SPLIT_PROMPT == fig3
    assert prompts.REASONING_PROMPT == fig4
    assert prompts.JUDGE_PROMPT == fig5


def test_judge_prompt_slots_and_typographic_apostrophes():
    assert prompts.slots(prompts.JUDGE_PROMPT) == ["Question and Partial Reasoning Steps", "Step A", "Step B"]
    assert "assistant A’s answer" in prompts.JUDGE_PROMPT  # U+2019 as in the paper
    assert prompts.JUDGE_PROMPT.endswith("[The End of Assistant B’s Next Reasoning Step]")


def test_judge_prompt_fills_question_previous_steps_and_candidates():
    p = prompts.judge_prompt("What is 2+3*4?", ["3*4 = 12."], "Step 2: 2+12 = 14.", "Step 2: 2+12 = 15.")
    assert "[Question and Intermediate Reasoning Steps Provided]\nWhat is 2+3*4?\nStep 1: 3*4 = 12.\n[The Start of Assistant A’s" in p
    assert "Next Reasoning Step]\nStep 2: 2+12 = 14.\n[The End of Assistant A’s" in p
    assert "Next Reasoning Step]\nStep 2: 2+12 = 15.\n[The End of Assistant B’s" in p
    assert "{Step A}" not in p


def test_judge_prompt_shows_bare_and_headed_candidates_the_same_way():
    bare = prompts.judge_prompt("Q", ["a"], "b = 2", "  c = 3 ")
    headed = prompts.judge_prompt("Q", ["a"], "Step 2: b = 2", "Step 2: c = 3\n")
    assert bare == headed
    assert "Next Reasoning Step]\nStep 2: c = 3\n[The End of Assistant B’s" in bare


def test_judge_context_at_step_one_is_the_question_alone():
    assert prompts.judge_context("  Q?  ", []) == "Q?"


def test_slot_text_inside_a_value_is_not_substituted_again():
    p = prompts.judge_prompt("Is {Step B} a slot?", [], "a", "b")
    assert "Is {Step B} a slot?" in p


def test_fill_rejects_missing_and_unknown_slots():
    with pytest.raises(KeyError, match="problem"):
        prompts.fill(prompts.REASONING_PROMPT, {})
    with pytest.raises(ValueError, match="problm"):
        prompts.fill(prompts.REASONING_PROMPT, {"problem": "x", "problm": "y"})


def test_reasoning_and_split_prompts():
    assert prompts.reasoning_prompt("1+1?").endswith("Put your final answer in boxed.\nProblem: 1+1?")
    s = prompts.ift_split_prompt("Q", "S")
    assert "[The Start of Question Provided]\nQ\n[The End of Question Provided]" in s
    assert "[The Start of Solution Provided]\nS\n[The End of Solution Provided]" in s


def test_chat_uses_the_template_or_plain_text(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert prompts.chat(tok, "hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    tok.chat_template = None
    assert prompts.chat(tok, "hi") == "hi\n"
    assert prompts.chat(None, "hi") == "hi\n"


@pytest.mark.parametrize("prev", [[], ["3*4 = 12.", "A second\nline."]])
def test_parse_judge_prompt_reads_back_exactly_what_judge_prompt_filled_in(prev):
    q, a, b = "What is 2+3*4? (answer in [[brackets]])", "Step 9: 2+12 = 14.", "2+12 = 15,\nso {Step A}."
    p = prompts.judge_prompt(q, prev, a, b)
    context, step_a, step_b = prompts.parse_judge_prompt(p)
    l = len(prev) + 1
    assert context == prompts.judge_context(q, prev)
    assert (step_a, step_b) == ("Step 9: 2+12 = 14.", f"Step {l}: 2+12 = 15,\nso {{Step A}}.")
    assert prompts.parse_judge_context(context) == (q, prev)
    # chat-wrapped (what the judge model is sent): the same slots
    assert prompts.parse_judge_prompt("<|im_start|>user\n" + p + "<|im_end|>\n<|im_start|>assistant\n") == (
        context, step_a, step_b)


def test_parse_inverts_fill_for_every_figure():
    values = {
        prompts.IFT_SPLIT_PROMPT: {"question": "Q\nwith lines", "solution": "S #### 4"},
        prompts.REASONING_PROMPT: {"problem": "1+1?\nTwo lines."},
        prompts.JUDGE_PROMPT: {"Question and Partial Reasoning Steps": "Q", "Step A": "Step 1: a", "Step B": ""},
    }
    for template, v in values.items():
        assert prompts.parse(template, prompts.fill(template, v)) == v
    assert prompts.parse_ift_split_prompt(prompts.ift_split_prompt("Q?", "x = 1\ny = 2")) == ("Q?", "x = 1\ny = 2")


def test_parse_judge_context_splits_the_question_from_the_previous_steps():
    assert prompts.parse_judge_context("Q?") == ("Q?", [])
    assert prompts.parse_judge_context("Q?\nStep 1: a\nStep 2: b\nc") == ("Q?", ["a", "b\nc"])


def test_text_that_is_not_a_filled_figure_5_prompt_is_a_clear_error():
    with pytest.raises(ValueError, match=r"not a filled Figure 5 \(judge\) prompt: the template text "
                                         r"'Please act as an impartial judge.*' is missing in 'Step 1: hi'"):
        prompts.parse_judge_prompt("Step 1: hi")
    no_b = prompts.judge_prompt("Q", [], "a", "b").split("[The Start of Assistant B")[0]
    with pytest.raises(ValueError, match=r"'\[The End of Assistant A’s Next Reasoning Step\]\\n\[The Start of.*' "
                                         r"is missing after the text before it"):
        prompts.parse_judge_prompt(no_b)
    with pytest.raises(ValueError, match="Figure 5"):  # a Figure 3 prompt is not a Figure 5 one
        prompts.parse_judge_prompt(prompts.ift_split_prompt("Q", "S"))
    with pytest.raises(ValueError, match=r"not a filled Figure 3 \(split\) prompt"):
        prompts.parse_ift_split_prompt(prompts.judge_prompt("Q", [], "a", "b"))
