r"""Step preference pairs (the step_dpo input, paper §3.4): schema and loader.

One jsonl record per pair. Two field conventions are accepted (per record):

* **psr** (written by ``recipes/step_search.py``): ``question`` (str), ``prev_steps`` (list of
  step bodies, may be empty), ``chosen`` / ``rejected`` (``format_step(l, body)`` =
  ``"Step l: body\n"``), optional ``id`` and ``step`` (``l``).
* **Step-DPO** (Lai et al. 2024): ``prompt`` (the question), ``initial_reason_steps`` (the
  previous steps as one string, used verbatim, e.g. ``"Step 1: ...\nStep 2: ...\n"``),
  ``chosen`` / ``rejected``.

When both are present the psr fields win (step_search writes both; they describe the same
prefix). The policy prompt of a pair is ``chat(tok, reasoning_prompt(question)) + prefix``
where ``prefix`` is ``format_steps(prev_steps)`` (psr) or ``initial_reason_steps`` (Step-DPO) —
exactly what the policy saw when it generated the candidates during the search.
``chosen`` / ``rejected`` are used verbatim (the data writer adds the ``Step l:`` header).

Bad records (not JSON, missing fields, non-string or empty chosen/rejected, an empty previous
step) raise :class:`psr.data.jsonl.DataError` naming ``file:line``. Pairs whose chosen and
rejected texts are identical carry no preference signal: they are dropped and counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from psr.data.jsonl import DataError, iter_jsonl
from psr.steps import format_steps

PSR_FIELDS = ("question", "prev_steps", "chosen", "rejected")
STEP_DPO_FIELDS = ("prompt", "initial_reason_steps", "chosen", "rejected")


@dataclass
class PreferencePair:
    """One step preference: at step ``step`` after ``prefix``, ``chosen`` beats ``rejected``."""

    id: str
    question: str
    prefix: str  # the previous steps as text ("" at step 1)
    chosen: str
    rejected: str
    step: Optional[int] = None
    where: str = ""  # "file:line" of the record, for error messages
    prev_steps: Optional[list[str]] = None  # the bodies, when the record gave them

    def policy_prompt(self, tokenizer: Any) -> str:
        """``chat(tok, Figure 4 prompt with the question) + previous steps``."""
        from psr.prompts import chat, reasoning_prompt

        return chat(tokenizer, reasoning_prompt(self.question)) + self.prefix


@dataclass
class PairStats:
    records: int = 0
    pairs: int = 0
    identical_dropped: int = 0
    fields: dict = field(default_factory=dict)  # convention name -> count


def _text(rec: dict, key: str, where: str, allow_empty: bool = False) -> str:
    v = rec[key]
    if not isinstance(v, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(v).__name__}")
    if not allow_empty and not v.strip():
        raise DataError(f"{where}: field {key!r} is empty")
    return v


def pair_from_record(rec: dict, where: str, index: int = 0) -> PreferencePair:
    """A :class:`PreferencePair` from one jsonl record (see module docstring)."""
    if all(k in rec for k in PSR_FIELDS):
        question = _text(rec, "question", where)
        prev = rec["prev_steps"]
        if not isinstance(prev, list) or not all(isinstance(s, str) for s in prev):
            raise DataError(f"{where}: field 'prev_steps' must be a list of strings")
        for k, s in enumerate(prev, 1):
            if not s.strip():
                raise DataError(f"{where}: prev_steps[{k - 1}] (step {k}) is empty")
        prefix = format_steps(prev)
        prev_steps: Optional[list[str]] = list(prev)
    elif all(k in rec for k in STEP_DPO_FIELDS):
        question = _text(rec, "prompt", where)
        prefix = _text(rec, "initial_reason_steps", where, allow_empty=True)
        prev_steps = None
    else:
        have = sorted(rec)
        raise DataError(
            f"{where}: a preference pair needs fields {list(PSR_FIELDS)} or (Step-DPO) "
            f"{list(STEP_DPO_FIELDS)}; the record has {have}"
        )
    chosen = _text(rec, "chosen", where)
    rejected = _text(rec, "rejected", where)
    step = rec.get("step")
    if step is not None and (not isinstance(step, int) or step < 1):
        raise DataError(f"{where}: field 'step' must be a positive integer, got {step!r}")
    if step is None and prev_steps is not None:
        step = len(prev_steps) + 1
    pid = rec.get("id")
    return PreferencePair(
        id=str(pid) if pid is not None else f"pair{index}",
        question=question,
        prefix=prefix,
        chosen=chosen,
        rejected=rejected,
        step=step,
        where=where,
        prev_steps=prev_steps,
    )


def load_pairs(path: str | os.PathLike, stats: Optional[PairStats] = None) -> list[PreferencePair]:
    """All pairs of ``path`` in file order (identical chosen/rejected dropped, counted in ``stats``).

    Raises DataError naming ``file:line`` for the first bad record, before anything is trained.
    """
    stats = stats if stats is not None else PairStats()
    out: list[PreferencePair] = []
    for n, rec in iter_jsonl(path):
        where = f"{path}:{n}"
        stats.records += 1
        pair = pair_from_record(rec, where, index=stats.records - 1)
        conv = "psr" if pair.prev_steps is not None else "step_dpo"
        stats.fields[conv] = stats.fields.get(conv, 0) + 1
        if pair.chosen.strip() == pair.rejected.strip():
            stats.identical_dropped += 1
            continue
        out.append(pair)
    stats.pairs = len(out)
    if not out:
        raise DataError(f"{path}: no usable preference pairs ({stats.records} records, "
                        f"{stats.identical_dropped} with identical chosen/rejected)")
    return out
