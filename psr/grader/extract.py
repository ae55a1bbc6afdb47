"""Final-answer extraction from a model response (pure string work, linear time, no evaluation).

Order (the first that applies wins):
  1. the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces handled; ``\\boxed 5`` too).
     Boxes in a row are one answer list: ``\\boxed{2} and \\boxed{3}`` is ``2, 3``. What may stand
     between them: spaces, ``$``, commas, ``\\quad``, "and"/"or", a lone variable's ``x =``
     (kept: ``x = \\boxed{2} or x = \\boxed{3}`` is ``x = 2, x = 3``) and a part label
     (``(a) \\boxed{5} (b) \\boxed{7}`` is ``(a) 5, (b) 7``, which the matcher compares in order);
  2. GSM8k ``#### x``;
  3. the last "final answer is ..." / "the answer is ..." / "answer: ...";
  4. a short bare answer (no sentence around it): the text itself;
  5. the last number in the text.
Multiple-choice benchmarks then reduce the answer to its option letter where one is visible.
"""

from __future__ import annotations

import re

from psr.boxes import box_commands, last_boxed, matching_braces
from psr.grader.normalize import WORD_NUMBERS, normalize, parse_number

__all__ = ["extract_answer", "last_boxed", "choice_letter", "ANSWER_TYPES", "check_answer_type"]

# What a benchmark's answers are (eval/benchmarks.yaml maps each benchmark to one of these):
#   math           any LaTeX answer (symbolic equivalence)
#   numeric        a number: extraction reduces the answer to a number (gsm8k, aime, amc)
#   choice_or_math an option letter where the answer is one (A-E), else math
ANSWER_TYPES = ("math", "numeric", "choice_or_math")

_HASH_RE = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS_RE = re.compile(
    r"(?:final\s+answer\s*(?:is|:)|the\s+answer\s+is|answer\s*:|answer\s*(?=\$|\\\(|\\\[)|答案是)\s*:?\s*",
    re.IGNORECASE,
)
# numbers: optional sign, digits with optional thousands commas, decimals, a/b fractions
# what may separate boxes of one answer list: spaces, $, commas, \quad, "and"/"or" (plain or \text)
_BOX_GAP = r"(?:\s|\$|,|;|\\quad|\\qquad|\\,|\\ |\\\[|\\\]|\\\(|\\\)|\band\b|\bor\b|\\text\{\s*(?:and|or)\s*\})*"
_NUMBER_RE = re.compile(r"(?<![A-Za-z\d.])(?:-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|-?\.\d+)")
_CHOICE_RE = re.compile(
    r"^\(?\s*([A-E])\s*\)?(?:[.:)\s]|$)|^\\text\{\s*\(?([A-E])\)?\s*\}|^\\textbf\{\s*\(?([A-E])\)?\s*\}"
)
_CHOICE_IN_TEXT_RE = re.compile(r"(?:\(([A-E])\)|\b(?:option|choice|answer)\s*(?:is\s*)?:?\s*\(?([A-E])\b\)?)")
_SENTENCE_WORD_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")


def _clean_tail(ans: str) -> str:
    """Cut a line-level answer to the answer itself ("$5$. I hope it is correct." -> "5")."""
    ans = ans.strip()
    ans = re.split(r"\.\s+I hope it is correct|\n", ans, maxsplit=1)[0].strip()
    ans = ans.strip()
    if ans.startswith("$") and ans.count("$") >= 2:
        end = ans.index("$", 1)
        ans = ans[1:end]
    elif ans.startswith("\\(") and "\\)" in ans:
        ans = ans[2 : ans.index("\\)")]
    elif ans.startswith("\\[") and "\\]" in ans:
        ans = ans[2 : ans.index("\\]")]
    ans = re.sub(r"(?<![.\\])\s*[.,;]$", "", ans.strip()).strip()
    return ans.strip("$ ").strip()


def _is_bare(text: str) -> bool:
    """True for a short answer with no sentence around it ("3/4", "x = 3", "(A)", "\\frac{1}{2}")."""
    t = text.strip()
    if not t or len(t) > 80 or "\n" in t:
        return False
    t = re.sub(r"\\text\{[^{}]*\}|\\mathrm\{[^{}]*\}|\\mbox\{[^{}]*\}|\\(?:begin|end)\{[^{}]*\}", " ", t)
    words = [w for w in _SENTENCE_WORD_RE.findall(t) if w.lower() not in WORD_NUMBERS]
    if len(words) <= 1:
        return True
    # a short text answer ("Navin from Mauritius"): a few words, no digits, no sentence punctuation
    return len(words) <= 3 and len(t) <= 40 and not re.search(r"[\d.!?;:]", t)


def choice_letter(ans: str | None) -> str | None:
    """The option letter of an answer such as "C", "(C)", "C.", "\\text{(C)}", "C: 12"; else None."""
    if ans is None:
        return None
    a = ans.strip().strip("$").strip()
    m = _CHOICE_RE.match(a)
    if m:
        return next(g for g in m.groups() if g)
    if len(a) == 1 and a.upper() in "ABCDE" and a.isalpha():
        return a.upper()
    return None


def check_answer_type(answer_type: str | None) -> str:
    """``answer_type`` (None = ``math``) checked against :data:`ANSWER_TYPES`; ValueError otherwise
    (a benchmark name is not an answer type: :func:`psr.data.benchmarks.answer_type_of` maps one)."""
    if answer_type is None:
        return "math"
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"answer_type must be one of {ANSWER_TYPES} (or None for math), got {answer_type!r}; "
                         "a benchmark's answer type is psr.data.benchmarks.answer_type_of(name)")
    return answer_type


def extract_answer(text: str | None, answer_type: str | None = None) -> str | None:
    """The final answer in ``text`` (see the module docstring), or None when there is none.

    ``answer_type`` (one of :data:`ANSWER_TYPES`; None = ``math``) selects number-only extraction
    (``numeric``: gsm8k, aime, amc) or option-letter extraction (``choice_or_math``: a letter if
    the answer is one, else the math answer). eval/benchmarks.yaml gives each benchmark's type.
    """
    atype = check_answer_type(answer_type)
    if not isinstance(text, str):
        return None
    ans = _extract_generic(text)
    if atype == "numeric" and ans is not None:
        norm = normalize(ans) if len(ans) <= 200 else ans  # bounded work in the caller's process
        if len(ans) > 200:
            nums = _NUMBER_RE.findall(ans[-2000:])
            ans = nums[-1].replace(",", "") if nums else ans
        elif parse_number(norm) is not None:
            ans = norm  # "18 \\text{ dollars}" -> "18", "1,234" -> "1234"
        elif not re.search(r"\\(?:frac|sqrt|cdot|times|pi|binom)|\^|[+*/=]|\d\s*-", norm):
            nums = _NUMBER_RE.findall(ans)  # "18 apples per day" -> "18"; "2^{10}" stays symbolic
            if nums:
                ans = nums[-1].replace(",", "")
    if atype == "choice_or_math":
        letter = choice_letter(ans)
        if letter is not None:
            return letter
    return ans


MAX_BOXES = 32  # only the last boxes of a response are read (bounded work on hostile text)


def box_spans(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, content)`` of the outermost complete ``\\boxed{...}`` groups among the last
    ``MAX_BOXES`` box commands of ``text``, in order (a box inside a box is part of the outer one)."""
    cmds = box_commands(text, last=MAX_BOXES)
    closes = matching_braces(text, [j for _, _, j in cmds if j >= 0])
    spans: list[tuple[int, int, str]] = []
    for start, _, j in cmds:
        if spans and start < spans[-1][1]:
            continue  # nested in the previous box
        if j in closes:
            spans.append((start, closes[j], text[j + 1 : closes[j] - 1].strip()))
    return spans


_PART_SEQS = (tuple("abcdefgh"), ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii"),
              ("I", "II", "III", "IV", "V", "VI", "VII", "VIII"))
_LABEL_NAME = r"[a-h]|viii|vii|vi|iv|v|iii|ii|i|VIII|VII|VI|IV|V|III|II|I"
# "(b)", "b)", "Part (b):", "**(b)**", "\\textbf{(b)}" before a box
_PART_LABEL = (r"(?:\*\*|\\text(?:bf)?\{)?\s*(?:[Pp]art\s*)?(?:\((?P<lab>" + _LABEL_NAME + r")\)|(?P<lab2>"
               + _LABEL_NAME + r")\))\s*\}?\s*:?\s*(?:\*\*)?\s*:?")
_VAR_EQ = (r"(?P<var>[a-zA-Z](?:_\{?[a-zA-Z0-9]{1,3}\}?)?|\\[a-zA-Z]{2,12}(?:_\{?[a-zA-Z0-9]{1,3}\}?)?)"
           r"\s*=\s*(?:\$|\\\(|\\\[|\s)*")
_GAP_RE = re.compile(_BOX_GAP + r"(?:" + _PART_LABEL + _BOX_GAP + r")?(?:" + _VAR_EQ + r")?")
_LEAD_RE = re.compile(r"(?:" + _PART_LABEL + r")?(?:\s|\$|\\\(|\\\[)*(?:" + _VAR_EQ + r")?$")


def _balanced(s: str) -> bool:
    depth = 0
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def _label_var(m: re.Match | None) -> tuple[str | None, str | None]:
    if m is None:
        return None, None
    return m.group("lab") or m.group("lab2"), m.group("var")


def _run_marks(text: str, spans: list[tuple[int, int, str]]) -> list[tuple[str | None, str | None]]:
    """(label, var) written before each box of the final run of ``spans`` (boxes with only
    separators, a part label or ``x =`` between them), last box first; the run is that long."""
    marks = []
    start = spans[-1][0]
    for prev in reversed(spans[:-1]):
        gap = text[prev[1] : start]
        m = _GAP_RE.fullmatch(gap) if len(gap) <= 60 else None
        if m is None:
            break
        marked = m.group("var") or m.group("lab") or m.group("lab2")
        if marked and not (_balanced(prev[2]) and _balanced(spans[-1][2])):
            break  # "x = \\boxed{(1} or x = \\boxed{2)}": no answer list
        marks.append(_label_var(m))
        start = prev[0]
    return marks


def boxed_run_length(text: str, spans: list[tuple[int, int, str]] | None = None) -> int:
    """How many boxes the final answer list of ``text`` is made of (0 without a box)."""
    spans = box_spans(text) if spans is None else spans
    return len(_run_marks(text, spans)) + 1 if spans else 0


def _boxed_run(text: str) -> str | None:
    """The last boxed answer; several boxes in a row (``\\boxed{1}, \\boxed{2}``) are one answer
    list ``1, 2`` (see the module docstring for what may stand between them)."""
    spans = box_spans(text)
    if not spans:
        return last_boxed(text)
    marks = _run_marks(text, spans)
    run = spans[len(spans) - len(marks) - 1 :]
    if len(run) == 1:
        return run[0][2]
    lead = _LEAD_RE.search(text[max(0, run[0][0] - 40) : run[0][0]])
    marks.append(_label_var(lead))
    marks.reverse()
    labels = [lab for lab, _ in marks]
    seq = None
    if any(labels[1:]):
        for cand in _PART_SEQS:
            if len(run) <= len(cand) and all(lab in (None, cand[k]) for k, lab in enumerate(labels)):
                seq = cand
                break
    items = []
    for k, ((_, _, content), (_, var)) in enumerate(zip(run, marks)):
        item = f"{var} = {content}" if var else content
        items.append(f"({seq[k]}) {item}" if seq else item)
    return ", ".join(items)


def _extract_generic(text: str) -> str | None:
    last_marker = None
    for last_marker in _ANSWER_IS_RE.finditer(text):
        pass
    if "\\boxed" in text or "\\fbox" in text or "\\framebox" in text:
        box_at = max(text.rfind("\\boxed"), text.rfind("\\fbox"), text.rfind("\\framebox"))
        # a "final answer is ..." written after the last box is the final word
        if last_marker is None or last_marker.start() < box_at:
            boxed = _boxed_run(text)
            if boxed is not None:
                return boxed
    if "####" in text:
        hashes = _HASH_RE.findall(text)
        if hashes and hashes[-1].strip():
            return _clean_tail(hashes[-1]).replace(",", "") or None
    tail = last_marker
    if tail is not None:
        ans = _clean_tail(text[tail.end() :])
        if ans and not _is_bare(ans):
            # "Final Answer: The volume of $ABCD$ is 120." -> the last math span, else last number
            spans = list(re.finditer(r"\$([^$]+)\$", ans))
            nums = list(_NUMBER_RE.finditer(ans))
            if nums and (not spans or nums[-1].start() > spans[-1].end()):
                ans = nums[-1].group(0).replace(",", "")
            elif spans:
                ans = spans[-1].group(1).strip()
        if ans:
            return ans
    if _is_bare(text):
        t = text.strip()
        if t.startswith("$") and t.endswith("$"):
            t = t.strip("$")
        elif t.startswith("\\(") and t.endswith("\\)") or t.startswith("\\[") and t.endswith("\\]"):
            t = t[2:-2]
        t = re.sub(r"(?<![.\\])\s*[.,;]$", "", t.strip()).strip()
        return t or None
    nums = _NUMBER_RE.findall(text[-20000:])
    return nums[-1].replace(",", "") if nums else None
