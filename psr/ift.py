r"""IFT data (paper §3.2): reference solutions divided into "Step n: " steps, ending with the
boxed final answer, without altering any information of the original solution.

Two ways to divide a solution, both checked by the same validator (:func:`check_split`):

* **rules** (:func:`rules_segment`)
  - ``gsm8k`` (line-structured solutions): one step per non-empty line, ``<<...>>`` calculator
    annotations removed, a ``#### x`` line (or the record's gold ``answer`` when the solution has
    no such line, as in ``../shared/data/gsm8k``) becomes the final answer.
  - ``math`` (the fallback for prose solutions, e.g. MATH / NuminaMath): cut at line breaks and
    sentence ends that lie outside math (``$..$``, ``$$..$$``, ``\[..\]``, ``\(..\)``,
    ``\begin..\end``), so a display-math block stays inside the sentence or line it belongs to;
    pieces shorter than ``min_step_chars`` are merged into the next one, a piece that is only
    display math is merged into the previous one, and the piece holding the last ``\boxed{}``
    absorbs everything after it (so the final step holds the final answer).
  - ``auto``: ``math`` when the solution contains ``\boxed``, otherwise ``gsm8k``.
* **teacher**: the Figure 3 prompt sent to a Generator (a local model, or an OpenAI-compatible
  endpoint, see :mod:`psr.generation.http`); its output is parsed with
  :func:`psr.steps.parse_steps` and validated. The teacher is shown the reference solution
  (:func:`reference_solution`: calculator annotations removed when configured, a ``#### x`` line
  removed — its ``x`` becomes the gold answer). Text before the first "Step 1:" header is not a
  step and is ignored (every character of the solution must be inside the steps anyway).

Validation (:func:`check_split`), whitespace aside (all whitespace is removed before comparing):

1. the headers are ``Step 1: .. Step n:`` in order, no step is empty;
2. the steps joined equal the original solution (``J == O``); or, **only when the original has
   no** ``\boxed{}`` (GSM8k) and a gold answer is known, the teacher may add the answer the
   Figure 3 prompt asks for ("Do not omit the final answer that is placed in boxed") in one of
   two ways and nothing else:
   - append it: ``J == O + S`` where ``S`` holds one ``\boxed{c}`` with ``c`` equal to the gold
     answer and at most ``MAX_ANSWER_WORDING`` other characters (e.g. "The answer is ... .");
   - box it in place: removing one ``\boxed{`` ... ``}`` wrapper from ``J`` gives ``O``, the
     boxed text equal to the gold answer;
3. the final step contains a ``\boxed{}``. When ``J == O`` and the original has no boxed answer,
   ``ANSWER_SUFFIX`` with the gold answer is appended to the final step (this is also how rules
   mode finishes GSM8k solutions); without a gold answer the record is rejected.

Answers are compared as strings after removing whitespace, ``$``, thousands commas and a
trailing period (:func:`same_answer`) — a validator, not a grader: it only has to recognise the
gold answer copied into a box.

Rejection reasons (``REJECT_REASONS``) are written with each rejected record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from psr.boxes import boxed_spans, last_boxed  # noqa: F401  (last_boxed: part of this module's API)
from psr.steps import parse_steps

# The final answer appended to a GSM8k-style solution's last step (rules mode, and teacher
# outputs that reproduce a solution without a boxed answer exactly).
ANSWER_SUFFIX = "The answer is $\\boxed{{{answer}}}$."
# Characters (whitespace excluded) besides the \boxed{..} that an appended answer may use.
MAX_ANSWER_WORDING = 40

REJECT_REASONS = (
    "generation_truncated",  # the teacher hit max_new_tokens
    "no_steps",  # no "Step n:" header in the output
    "bad_numbering",  # headers not Step 1, 2, ..., n
    "empty_step",
    "text_mismatch",  # the joined steps differ from the original solution
    "no_final_answer",  # no \boxed answer in the final step and none can be appended
)

_ANNOTATION_RE = re.compile(r"<<[^<>]*>>")
_HASH_ANSWER_RE = re.compile(r"^\s*####\s*(.*?)\s*$", re.MULTILINE)
_HEADER_RE = re.compile(r"(?:(?<=\s)|^)Step[ \t]+(\d+)[ \t]*:", re.IGNORECASE)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_WS_RE = re.compile(r"\s+")


# ----------------------------------------------------------------------------- helpers


def strip_calculator_annotations(text: str) -> str:
    """GSM8k's ``<<48/2=24>>`` calculator annotations removed."""
    return _ANNOTATION_RE.sub("", text)


def split_hash_answer(solution: str) -> tuple[str, Optional[str]]:
    """``(solution without its "#### x" line, x)``; ``x`` is None when there is no such line."""
    found = _HASH_ANSWER_RE.findall(solution)
    if not found:
        return solution, None
    return _HASH_ANSWER_RE.sub("", solution).rstrip(), found[-1]


def _squash(text: str) -> str:
    return _WS_RE.sub("", text)


def same_answer(a: str, b: str) -> bool:
    """String equality after removing whitespace, ``$``, thousands commas and a trailing period."""

    def norm(s: str) -> str:
        s = _squash(s).replace("$", "")
        s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)
        s = s.replace("{,}", "")
        return s.rstrip(".")

    return norm(a) == norm(b)


# ----------------------------------------------------------------------------- rules mode


def segment_lines(solution: str) -> list[str]:
    """GSM8k style: one step per non-empty line, calculator annotations removed, ``####`` line dropped."""
    body, _ = split_hash_answer(strip_calculator_annotations(solution))
    return [line.strip() for line in body.split("\n") if line.strip()]


_ENV_BEGIN_RE = re.compile(r"\\begin\{([^{}]*)\}")


def _cut_points(text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Candidate cut positions (outside math) and the display-math spans of ``text``."""
    cuts: list[int] = []
    displays: list[tuple[int, int]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith("$$", i):
            j = text.find("$$", i + 2)
            j = n if j < 0 else j + 2
            displays.append((i, j))
            i = j
            continue
        if text.startswith("\\[", i) or text.startswith("\\(", i):
            close = "\\]" if text[i + 1] == "[" else "\\)"
            j = text.find(close, i + 2)
            j = n if j < 0 else j + 2
            if close == "\\]":
                displays.append((i, j))
            i = j
            continue
        m = _ENV_BEGIN_RE.match(text, i)
        if m:
            end_tag = "\\end{" + m.group(1) + "}"
            j = text.find(end_tag, m.end())
            j = n if j < 0 else j + len(end_tag)
            displays.append((i, j))
            i = j
            continue
        if ch == "\\" and i + 1 < n:  # an escaped char such as \$ is not a delimiter
            i += 2
            continue
        if ch == "$":
            j = i + 1
            while j < n and text[j] != "$":
                j += 2 if text[j] == "\\" else 1
            i = min(j + 1, n)
            continue
        if ch == "\n":
            cuts.append(i + 1)
        elif ch in ".!?" and i + 1 < n and text[i + 1] in " \t\n":
            k = i + 1
            while k < n and text[k] in " \t\n":
                k += 1
            if k < n and not text[k].islower():
                cuts.append(i + 1)
        i += 1
    return sorted(set(cuts)), displays


def segment_sentences(solution: str, min_step_chars: int = 30) -> list[str]:
    """MATH style: cut at line breaks and sentence ends outside math (see the module docstring)."""
    text = solution.strip()
    if not text:
        return []
    cuts, displays = _cut_points(text)
    bounds = [0] + [c for c in cuts if 0 < c < len(text)] + [len(text)]
    pieces = [(bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]
    pieces = [(a, b) for a, b in pieces if text[a:b].strip()]

    def only_display(a: int, b: int) -> bool:
        s = text[a:b]
        lead = len(s) - len(s.lstrip())
        start = a + lead
        for da, db in displays:
            if da == start and not text[db:b].strip(" \t\n.,;"):
                return True
        return False

    merged: list[list[int]] = []
    for a, b in pieces:
        if merged and only_display(a, b):
            merged[-1][1] = b
        elif merged and len(_squash(text[merged[-1][0] : merged[-1][1]])) < min_step_chars:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    # A too-short last piece joins the one before it.
    if len(merged) > 1 and len(_squash(text[merged[-1][0] : merged[-1][1]])) < min_step_chars:
        tail = merged.pop()
        merged[-1][1] = tail[1]
    # The piece with the last \boxed absorbs everything after it.
    spans = boxed_spans(text)
    if spans:
        last = spans[-1][0]
        for k, (a, b) in enumerate(merged):
            if a <= last < b:
                merged[k][1] = merged[-1][1]
                del merged[k + 1 :]
                break
    return [text[a:b].strip() for a, b in merged]


def rules_segment(solution: str, fmt: str = "auto", min_step_chars: int = 30) -> list[str]:
    """Step bodies of ``solution`` by rules (``fmt``: auto | gsm8k | math). The final answer of a
    solution without ``\\boxed`` is added by :func:`check_split`."""
    if fmt not in ("auto", "gsm8k", "math"):
        raise ValueError(f"rules format must be auto, gsm8k or math, got {fmt!r}")
    if fmt == "auto":
        fmt = "math" if _BOXED_RE.search(solution) else "gsm8k"
    if fmt == "gsm8k":
        return segment_lines(solution)
    return segment_sentences(strip_calculator_annotations(solution), min_step_chars)


def reference_solution(solution: str, strip_annotations: bool = True) -> tuple[str, Optional[str]]:
    """The text the steps must reproduce, and the answer of a ``####`` line if there is one."""
    text = strip_calculator_annotations(solution) if strip_annotations else solution
    return split_hash_answer(text)


# ----------------------------------------------------------------------------- validation


@dataclass
class SplitCheck:
    ok: bool
    steps: list[str] = field(default_factory=list)
    reason: Optional[str] = None
    detail: str = ""
    answer_appended: bool = False


def _mismatch_detail(joined: str, orig: str) -> str:
    k = 0
    while k < min(len(joined), len(orig)) and joined[k] == orig[k]:
        k += 1
    return (
        f"first difference at non-space char {k}: steps have {joined[max(0, k - 15) : k + 25]!r}, "
        f"original has {orig[max(0, k - 15) : k + 25]!r}"
    )


def check_split(
    steps: Sequence[str], original: str, gold_answer: Optional[str] = None
) -> SplitCheck:
    """Validate step bodies against the original solution (module docstring, rules 2-3)."""
    steps = [s.strip() for s in steps]
    if not steps:
        return SplitCheck(False, reason="no_steps", detail="no steps")
    for k, s in enumerate(steps):
        if not s:
            return SplitCheck(False, reason="empty_step", detail=f"step {k + 1} is empty")
    joined, orig = _squash("".join(steps)), _squash(original)
    orig_has_box = bool(boxed_spans(original))
    if joined == orig:
        if boxed_spans(steps[-1]):
            return SplitCheck(True, steps=steps)
        if orig_has_box:
            return SplitCheck(
                False, reason="no_final_answer", detail="the final step does not hold the \\boxed answer"
            )
        if gold_answer is None or not str(gold_answer).strip():
            return SplitCheck(False, reason="no_final_answer", detail="no \\boxed answer and no gold answer")
        steps = steps[:-1] + [steps[-1] + " " + ANSWER_SUFFIX.format(answer=str(gold_answer).strip())]
        return SplitCheck(True, steps=steps, answer_appended=True)
    if not orig_has_box and gold_answer is not None and str(gold_answer).strip():
        spans = boxed_spans(joined)
        if len(spans) == 1 and boxed_spans(steps[-1]):
            a, ca, cb, b = spans[0]
            content = joined[ca:cb]
            if same_answer(content, str(gold_answer)):
                # appended: J == O + S, S short wording around the box
                if joined.startswith(orig) and a >= len(orig):
                    wording = len(joined) - len(orig) - (b - a)
                    if wording <= MAX_ANSWER_WORDING:
                        return SplitCheck(True, steps=steps)
                # boxed in place
                if joined[:a] + content + joined[b:] == orig:
                    return SplitCheck(True, steps=steps)
    return SplitCheck(False, reason="text_mismatch", detail=_mismatch_detail(joined, orig))


def check_teacher_output(
    text: str, original: str, gold_answer: Optional[str] = None, finish_reason: str = "eos"
) -> SplitCheck:
    """Parse a Figure 3 answer into steps and validate it (module docstring)."""
    if finish_reason == "length":
        return SplitCheck(False, reason="generation_truncated", detail="the output hit max_new_tokens")
    numbers = [int(m.group(1)) for m in _HEADER_RE.finditer(text)]
    if not numbers:
        return SplitCheck(False, reason="no_steps", detail="no 'Step n:' header in the output")
    if numbers != list(range(1, len(numbers) + 1)):
        return SplitCheck(False, reason="bad_numbering", detail=f"step numbers {numbers[:20]}")
    return check_split(parse_steps(text), original, gold_answer)
