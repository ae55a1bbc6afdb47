r"""``\boxed{}`` answers in text: the one brace scanner and the one ``last_boxed`` of psr.

Pure string work in linear time (model text is untrusted: a response may open 20,000 boxes and
close none), no imports beyond ``re``, so the grader, the step format (:mod:`psr.steps`), the IFT
split check (:mod:`psr.ift`), the arith checker and the benchmark loaders all read boxes the same
way:

* a box command is ``\boxed``, ``\fbox`` or ``\framebox``; whitespace may stand between it and
  its ``{`` (``\boxed {x}``);
* its argument runs to the matching ``}``; braces nest, and escaped braces ``\{ \}`` are text,
  not grouping (``\boxed{\{1, 2\}}`` holds ``\{1, 2\}``); a box whose ``{`` is never matched is
  not a box (an earlier complete box is then the last one);
* a box inside a box is a box of its own: in ``\boxed{\boxed{5}}`` the last box is the inner one;
* :func:`last_boxed` also reads the brace-less ``\boxed 5`` (the grader's reading: up to the next
  whitespace or ``$``); the span functions and :func:`has_boxed` see only braced boxes, which is
  what the step format calls a final answer.
"""

from __future__ import annotations

import re
from typing import Optional

__all__ = ["BOX_RE", "matching_braces", "box_commands", "boxed_spans", "find_boxed", "has_boxed", "last_boxed"]

BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)\b")
_BRACE_RE = re.compile(r"(?<!\\)[{}]")  # an unescaped brace


def matching_braces(text: str, opens: list[int]) -> dict[int, int]:
    """For each ``{`` position in ``opens`` (sorted), the index *after* its matching ``}``
    (escaped ``\\{ \\}`` do not count); unclosed ones are absent. One pass over the braces for
    all of them, so many unclosed boxes cost linear time, not one scan each."""
    if not opens:
        return {}
    want, out, stack = set(opens), {}, []
    for m in _BRACE_RE.finditer(text, opens[0]):
        i = m.start()
        if text[i] == "{":
            stack.append(i)
        elif stack:
            o = stack.pop()
            if o in want:
                out[o] = i + 1
                if len(out) == len(want):
                    break
    return out


def box_commands(text: str, last: Optional[int] = None) -> list[tuple[int, int, int]]:
    """``(start, end, brace)`` of each box command in ``text`` (of the last ``last`` ones when
    given), in order: where the command starts and ends, and the index of the ``{`` that opens its
    argument (after optional whitespace), or -1 when none follows (``\\boxed 5``)."""
    matches = list(BOX_RE.finditer(text))
    if last is not None:
        matches = matches[-last:] if last > 0 else []
    out = []
    for m in matches:
        j = m.end()
        while j < len(text) and text[j].isspace():
            j += 1
        out.append((m.start(), m.end(), j if j < len(text) and text[j] == "{" else -1))
    return out


def boxed_spans(text: str) -> list[tuple[int, int, int, int]]:
    r"""``(start, content_start, content_end, end)`` of every complete braced box, in order of
    their commands (nested boxes included): ``text[content_start:content_end]`` is the argument
    as written, ``text[start:end]`` the whole ``\boxed{...}``."""
    cmds = box_commands(text)
    closes = matching_braces(text, sorted({b for _, _, b in cmds if b >= 0}))
    return [(s, b + 1, closes[b] - 1, closes[b]) for s, _, b in cmds if b >= 0 and b in closes]


def find_boxed(text: str) -> list[str]:
    r"""The argument of every complete braced box (nested braces allowed), as written, in order."""
    return [text[cs:ce] for _, cs, ce, _ in boxed_spans(text)]


def has_boxed(text: str) -> bool:
    r"""True when ``text`` holds a complete braced box (``\boxed{...}``, ``\fbox{...}``)."""
    return bool(boxed_spans(text))


def last_boxed(text: str) -> Optional[str]:
    r"""The argument of the last box of ``text``, stripped: the last complete ``\boxed{...}`` /
    ``\fbox{...}`` / ``\framebox{...}``, or a brace-less ``\boxed 5`` (up to whitespace or ``$``);
    a box that never closes is skipped for an earlier one. None when there is no box."""
    cmds = box_commands(text)
    closes = matching_braces(text, sorted({b for _, _, b in cmds if b >= 0}))
    for _, end, b in reversed(cmds):
        if b >= 0:
            if b in closes:
                return text[b + 1 : closes[b] - 1].strip()
            continue  # unbalanced: try an earlier box
        j = end
        while j < len(text) and text[j].isspace():
            j += 1
        if j > end:  # "\boxed 5": up to whitespace or $
            k = j
            while k < len(text) and not text[k].isspace() and text[k] != "$":
                k += 1
            if k > j:
                return text[j:k].strip()
    return None
