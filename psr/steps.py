r"""Solutions in "Step n: " form: parsing, formatting and the one-next-step stop rule.

Conventions used everywhere in psr:

* A solution is ``format_steps(steps)``: ``"Step 1: <body>\nStep 2: <body>\n..."``; the last
  step holds the final answer in ``\boxed{}``.
* To generate step ``l`` (1-based) the policy sees ``chat(Figure 4 prompt) + format_steps(prev)``
  and writes ``"Step l: <body>"``; generation stops *before* ``"Step {l+1}:"`` (the stop string
  of :func:`next_step_stop`) or at end of sequence. :func:`next_step_body` turns that raw text
  into the step body.
* A candidate shown to the judge, and a chosen/rejected step in DPO data, is
  ``format_step(l, body)``.
"""

from __future__ import annotations

import re

from psr.boxes import has_boxed

# "Step 12:" at the start of the text or after whitespace; tolerant of "Step  3 :".
_HEADER_RE = re.compile(r"(?:(?<=\s)|^)Step[ \t]+(\d+)[ \t]*:", re.IGNORECASE)


def parse_steps(text: str) -> list[str]:
    """The step bodies of ``text`` in order of appearance.

    Text before the first "Step n:" header is not a step. Bodies are stripped of surrounding
    whitespace (internal newlines are kept); an empty body is returned as ``""`` so callers
    can reject it with a precise message.
    """
    headers = list(_HEADER_RE.finditer(text))
    bodies = []
    for k, m in enumerate(headers):
        end = headers[k + 1].start() if k + 1 < len(headers) else len(text)
        bodies.append(text[m.end() : end].strip())
    return bodies


def format_step(n: int, body: str) -> str:
    """One step as it appears in a solution: ``"Step n: body\n"``."""
    if n < 1:
        raise ValueError(f"step numbers start at 1, got {n}")
    return f"Step {n}: {body.strip()}\n"


def as_candidate(step: str, l: int) -> str:
    """A candidate step ``l`` as shown to the judge: ``"Step l: body"`` (no trailing newline).

    Text that already starts with a ``Step n:`` header is kept as is (stripped).
    """
    text = step.strip()
    if _HEADER_RE.match(text):
        return text
    return format_step(l, text).rstrip("\n")


def format_steps(steps: list[str], start: int = 1) -> str:
    """Steps numbered from ``start``, one per line (``""`` for no steps)."""
    return "".join(format_step(start + k, s) for k, s in enumerate(steps))


def next_step_stop(l: int) -> list[str]:
    """Stop strings for generating exactly step ``l``: stop before ``"Step {l+1}:"``.

    End of sequence (the tokenizer's EOS / chat end token) is the other stop and is handled by
    the generation backend.
    """
    if l < 1:
        raise ValueError(f"step numbers start at 1, got {l}")
    return [f"Step {l + 1}:"]


def cut_at_next_step(text: str, l: int) -> str:
    """``text`` up to (not including) the first header of a later step than ``l``.

    Backends already stop at :func:`next_step_stop`; this also catches spacing variants
    ("Step  3 :") and a model that skips a number.
    """
    for m in _HEADER_RE.finditer(text):
        if int(m.group(1)) > l:
            return text[: m.start()]
    return text


def next_step_body(generated: str, l: int) -> str:
    """The body of step ``l`` from what the policy generated after the previous steps.

    Drops a leading ``"Step l:"`` header (the model normally writes it), cuts before any later
    step, and strips whitespace. Returns ``""`` for an empty candidate.
    """
    text = cut_at_next_step(generated, l)
    m = _HEADER_RE.match(text.lstrip())
    if m and int(m.group(1)) == l:
        text = text.lstrip()[m.end() :]
    return text.strip()


def final_answer_reached(step: str) -> bool:
    r"""True when ``step`` contains a complete ``\boxed{...}`` (or ``\fbox{...}``; see
    :mod:`psr.boxes` for what counts)."""
    return has_boxed(step)
