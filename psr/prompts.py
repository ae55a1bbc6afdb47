"""The paper's three prompts (Figures 3, 4, 5), verbatim, and chat formatting.

The template texts are word for word those of ``shared/paper/prompts.md`` (the paper's figures
with the PDF's hard wraps joined). Slots keep the paper's names, e.g. ``{Step A}``; fill them with
the ``*_prompt`` builders below, which substitute every slot in one pass, so text inside a
question that happens to look like a slot is never substituted again. The inverse, reading the
slot values back out of a filled prompt (what scripted teachers and the arith checker-teacher do),
is :func:`parse` and its per-figure forms (:func:`parse_judge_prompt`, :func:`parse_judge_context`,
:func:`parse_ift_split_prompt`), built from the same template constants.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Mapping

# Figure 3: sent to a teacher to divide a given solution into "Step n: " steps (IFT data).
IFT_SPLIT_PROMPT = """There is a math problem and its corresponding solution. Please divide the given solution into individual steps logically. Use "Step n: " before each step to distinguish between different steps, where n is a positive integer starting from 1, representing the current step number. Only divide the steps without altering any information in the original solution. Please output only the divided solution steps in the format mentioned above, and do not include any additional information. Do not omit the final answer that is placed in boxed.
[The Start of Question Provided]
{question}
[The End of Question Provided]
[The Start of Solution Provided]
{solution}
[The End of Solution Provided]"""

# Figure 4: the policy role, step-by-step reasoning.
REASONING_PROMPT = """Let's think step by step and solve the following math problem. Use "Step n: " before each step to distinguish between different steps, where n is a positive integer starting from 1, representing the current step number. Put your final answer in boxed.
Problem: {problem}"""

# Figure 5: the judge role, step-wise pairwise LLM-as-a-Judge.
JUDGE_PROMPT = """Please act as an impartial judge and evaluate the quality of two next reasoning steps provided by two AI assistants to the question and partial reasoning steps displayed below. Your evaluation should consider correctness and helpfulness. You will be given assistant A’s answer, and assistant B’s answer. Your job is to evaluate which assistant’s answer is better. You should compare the two responses and provide a detailed explanation. Avoid any position biases and ensure that the order in which the responses were presented does not influence your decision. Do not allow the length of the responses to influence your evaluation. Do not favor certain names of the assistants. Be as objective as possible. After providing your explanation, output your final verdict by strictly following this format: "[[A]]" if assistant A is better, and "[[B]]" if assistant B is better.
[Question and Intermediate Reasoning Steps Provided]
{Question and Partial Reasoning Steps}
[The Start of Assistant A’s Next Reasoning Step]
{Step A}
[The End of Assistant A’s Next Reasoning Step]
[The Start of Assistant B’s Next Reasoning Step]
{Step B}
[The End of Assistant B’s Next Reasoning Step]"""

_SLOT_RE = re.compile(r"\{([A-Za-z][A-Za-z ]*)\}")


def slots(template: str) -> list[str]:
    """The slot names of a template, in order of appearance."""
    return _SLOT_RE.findall(template)


def fill(template: str, values: Mapping[str, str]) -> str:
    """Substitute every ``{slot}`` of ``template`` in a single pass.

    Raises KeyError naming a slot that ``values`` lacks, and ValueError for a value that is
    not a slot of the template (a misspelt key would otherwise be silently ignored).
    """
    names = set(slots(template))
    extra = set(values) - names
    if extra:
        raise ValueError(f"not a slot of this template: {sorted(extra)} (slots: {sorted(names)})")
    missing = names - set(values)
    if missing:
        raise KeyError(f"missing slot value(s): {sorted(missing)}")
    return _SLOT_RE.sub(lambda m: str(values[m.group(1)]), template)


def ift_split_prompt(question: str, solution: str) -> str:
    """Figure 3 with its slots filled."""
    return fill(IFT_SPLIT_PROMPT, {"question": question, "solution": solution})


def reasoning_prompt(problem: str) -> str:
    """Figure 4 with its slot filled."""
    return fill(REASONING_PROMPT, {"problem": problem})


def judge_context(question: str, prev_steps: list[str]) -> str:
    """The ``{Question and Partial Reasoning Steps}`` slot: the question, then the previous
    steps in "Step n: " form (nothing after the question at step 1)."""
    from psr.steps import format_steps

    prev = format_steps(prev_steps).rstrip("\n")
    return question.strip() + ("\n" + prev if prev else "")


def judge_prompt(question: str, prev_steps: list[str], step_a: str, step_b: str) -> str:
    """Figure 5 for one comparison of two candidate next steps.

    Candidates are shown as ``"Step l: body"`` (``l = len(prev_steps) + 1``): a candidate given
    as a bare body gets the header, one that already starts with a ``Step n:`` header is shown
    as is, so records storing either form give the judge the same text.
    """
    from psr.steps import as_candidate

    l = len(prev_steps) + 1
    return fill(
        JUDGE_PROMPT,
        {
            "Question and Partial Reasoning Steps": judge_context(question, prev_steps),
            "Step A": as_candidate(step_a, l),
            "Step B": as_candidate(step_b, l),
        },
    )


# ----------------------------------------------------------------------------- parsing


@lru_cache(maxsize=None)
def _template_re(template: str) -> tuple[re.Pattern, tuple[str, ...], tuple[str, ...]]:
    """(pattern, literal pieces, slot names) of a template: the literal text between slots
    escaped, each slot a lazy group (a slot at the very end takes the rest of the text)."""
    parts = _SLOT_RE.split(template)  # [text, slot, text, slot, ..., text]
    texts, names = tuple(parts[0::2]), tuple(parts[1::2])
    pattern = re.escape(texts[0])
    for k, lit in enumerate(texts[1:]):
        pattern += ("(.*)" if k == len(names) - 1 and not lit else "(.*?)") + re.escape(lit)
    return re.compile(pattern, re.DOTALL), texts, names


def _show(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse(template: str, text: str, what: str = "filled prompt") -> dict[str, str]:
    """The slot values of ``template`` as filled into ``text``: the inverse of :func:`fill`,
    ``parse(t, fill(t, v)) == v``. ``text`` may hold more around the filled template (a chat
    wrapper); the template's own text must appear whole. A value is read up to the first
    occurrence of the template text that follows its slot, so a value that itself contains that
    text (e.g. a step quoting "[The End of Assistant A’s Next Reasoning Step]") is cut there.

    Raises ValueError naming ``what`` and the first piece of the template missing from ``text``.
    """
    pattern, texts, names = _template_re(template)
    m = pattern.search(text)
    if m is None:
        pos = 0
        for lit in texts:
            i = text.find(lit, pos)
            if i < 0:
                where = " after the text before it" if pos else ""
                raise ValueError(f"not a {what}: the template text {_show(lit.strip())} is missing{where} "
                                 f"in {_show(text)}")
            pos = i + len(lit)
        raise ValueError(f"not a {what}: {_show(text)}")
    return dict(zip(names, m.groups()))


def parse_judge_prompt(text: str) -> tuple[str, str, str]:
    """``(context, step_a, step_b)`` of a Figure 5 prompt (chat-wrapped or not), the exact slot
    texts :func:`judge_prompt` filled in: ``context`` as :func:`judge_context` wrote it, the two
    candidates as shown (``"Step l: body"``). ValueError when ``text`` is not a filled Figure 5
    prompt."""
    v = parse(JUDGE_PROMPT, text, "filled Figure 5 (judge) prompt")
    return v["Question and Partial Reasoning Steps"], v["Step A"], v["Step B"]


_FIRST_STEP_RE = re.compile(r"(?:^|\n)Step\s+1\s*:")


def parse_judge_context(context: str) -> tuple[str, list[str]]:
    """``(question, prev_steps)`` from the ``{Question and Partial Reasoning Steps}`` slot: the
    question is the text before the first ``Step 1:`` header (stripped), the previous steps are
    the bodies parsed from there on (none when there is no such header)."""
    from psr.steps import parse_steps

    m = _FIRST_STEP_RE.search(context)
    if m is None:
        return context.strip(), []
    return context[: m.start()].strip(), parse_steps(context[m.start():])


def parse_ift_split_prompt(text: str) -> tuple[str, str]:
    """``(question, solution)`` of a Figure 3 prompt (chat-wrapped or not). ValueError when
    ``text`` is not a filled Figure 3 prompt."""
    v = parse(IFT_SPLIT_PROMPT, text, "filled Figure 3 (split) prompt")
    return v["question"], v["solution"]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat(tokenizer: Any, user_text: str) -> str:
    """The text a model sees for one user turn, ending where the assistant's answer starts.

    Uses the tokenizer's chat template (``add_generation_prompt=True``); a tokenizer without one
    (or ``tokenizer=None``) gets the plain text followed by a newline.
    """
    if tokenizer is not None and has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
        )
    return user_text + "\n"
