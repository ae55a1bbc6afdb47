r"""PRM training data: TRL's stepwise-supervision form and PRM800K's raw phase1/phase2 jsonl.

Both load to :class:`PRMExample` ``(id, question, steps, labels)``: ``steps[k]`` is step k+1's
text (a body, or a text already starting with ``Step n:``) and ``labels[k]`` whether it is a good
step (the PRM learns "+" for True, "-" for False).

**TRL stepwise form** (``trl`` ``PRMTrainer``, e.g. ``trl-lib/math_shepherd``): one record per
line with ``prompt`` (the question), ``completions`` (list of step strings) and ``labels`` (list
of bools, or 0/1, one per step). ``id`` optional.

**PRM800K raw** (``prm800k/data/phase{1,2}_{train,test}.jsonl``): ``question.problem`` and
``label.steps``; each step has ``completions`` (list of ``{text, rating}``, rating −1/0/+1 or
null), ``human_completion`` and ``chosen_completion``. One example per record, following the
trajectory the labeler chose:

* ``chosen_completion`` set → that completion, labelled by its rating;
* else ``human_completion`` set → the human-written step, labelled good (+1: the labeler wrote
  it as a correct continuation);
* else (the labeler stopped here) → the first completion rated −1 if any, else the first one,
  labelled by its rating; the example ends after it.

Ratings map +1 → good, −1 → bad, **0 (neutral) by ``neutral``**: ``"positive"`` (default; the
common reading, e.g. Math-Shepherd/OpenR-style binary PRMs trained on PRM800K count an
acceptable-but-unhelpful step as not wrong), ``"negative"``, or ``"drop"`` (the example is cut
before the neutral step). The example also ends after the first bad step (later steps condition on
a wrong one) and before an unrated step (rating null). Records left with no labelled step are
skipped and counted.

Bad records raise :class:`psr.data.jsonl.DataError` naming ``file:line``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from psr.data.jsonl import DataError, iter_jsonl

NEUTRAL_MODES = ("positive", "negative", "drop")


@dataclass
class PRMExample:
    id: str
    question: str
    steps: list[str]
    labels: list[bool]
    where: str = ""


@dataclass
class PRMStats:
    records: int = 0
    examples: int = 0
    skipped_empty: int = 0
    steps: int = 0
    positive: int = 0
    negative: int = 0
    neutral: int = 0  # neutral ratings seen (mapped per ``neutral``)
    extra: dict = field(default_factory=dict)

    def count(self, ex: PRMExample) -> None:
        self.examples += 1
        self.steps += len(ex.labels)
        self.positive += sum(ex.labels)
        self.negative += len(ex.labels) - sum(ex.labels)


def _label(v: Any, where: str, k: int) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise DataError(f"{where}: labels[{k}] must be a bool (or 0/1), got {v!r}")


def trl_example(rec: dict, where: str, index: int = 0) -> PRMExample:
    for key in ("prompt", "completions", "labels"):
        if key not in rec:
            raise DataError(f"{where}: missing field {key!r} (TRL stepwise form: prompt, completions, labels)")
    q, comps, labels = rec["prompt"], rec["completions"], rec["labels"]
    if not isinstance(q, str) or not q.strip():
        raise DataError(f"{where}: field 'prompt' must be a non-empty string")
    if not isinstance(comps, list) or not comps:
        raise DataError(f"{where}: field 'completions' must be a non-empty list of step strings")
    if not isinstance(labels, list) or len(labels) != len(comps):
        raise DataError(f"{where}: 'labels' must be a list with one label per completion ({len(comps)})")
    for k, c in enumerate(comps):
        if not isinstance(c, str) or not c.strip():
            raise DataError(f"{where}: completions[{k}] (step {k + 1}) is empty or not a string")
    return PRMExample(str(rec.get("id", f"prm{index}")), q, list(comps), [_label(v, where, k) for k, v in enumerate(labels)], where)


def load_trl_stepwise(path: str | os.PathLike, stats: Optional[PRMStats] = None) -> list[PRMExample]:
    stats = stats if stats is not None else PRMStats()
    out = []
    for n, rec in iter_jsonl(path):
        stats.records += 1
        ex = trl_example(rec, f"{path}:{n}", stats.records - 1)
        stats.count(ex)
        out.append(ex)
    return out


def _rating(v: Any, where: str, k: int) -> Optional[int]:
    if v is None or (isinstance(v, int) and not isinstance(v, bool) and v in (-1, 0, 1)):
        return v
    raise DataError(f"{where}: label.steps[{k}]: rating must be -1, 0, 1 or null, got {v!r}")


def _completion_text(c: Any, where: str, what: str) -> str:
    text = c.get("text") if isinstance(c, dict) else c
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: {what} has no text")
    return text


def prm800k_example(rec: dict, where: str, neutral: str = "positive", stats: Optional[PRMStats] = None) -> Optional[PRMExample]:
    """One PRM800K raw record → an example (None when no step is labelled); see module docstring."""
    if neutral not in NEUTRAL_MODES:
        raise ValueError(f"neutral must be one of {NEUTRAL_MODES}, got {neutral!r}")
    qd, label = rec.get("question"), rec.get("label")
    if not isinstance(qd, dict) or not isinstance(qd.get("problem"), str):
        raise DataError(f"{where}: missing question.problem (not a PRM800K record?)")
    if not isinstance(label, dict) or not isinstance(label.get("steps"), list):
        raise DataError(f"{where}: missing label.steps (not a PRM800K record?)")
    steps: list[str] = []
    labels: list[bool] = []
    for k, s in enumerate(label["steps"]):
        if not isinstance(s, dict):
            raise DataError(f"{where}: label.steps[{k}] is not an object")
        comps = s.get("completions") or []
        if not isinstance(comps, list):
            raise DataError(f"{where}: label.steps[{k}].completions is not a list")
        chosen, human = s.get("chosen_completion"), s.get("human_completion")
        last = False
        if chosen is not None:
            if not isinstance(chosen, int) or not 0 <= chosen < len(comps):
                raise DataError(f"{where}: label.steps[{k}].chosen_completion={chosen!r} is not an index of its "
                                f"{len(comps)} completions")
            c = comps[chosen]
            text = _completion_text(c, where, f"label.steps[{k}].completions[{chosen}]")
            rating = _rating(c.get("rating") if isinstance(c, dict) else None, where, k)
        elif human is not None:
            text = _completion_text(human, where, f"label.steps[{k}].human_completion")
            rating = 1
        else:
            if not comps:
                break
            ratings = [_rating(c.get("rating") if isinstance(c, dict) else None, where, k) for c in comps]
            j = ratings.index(-1) if -1 in ratings else 0
            text = _completion_text(comps[j], where, f"label.steps[{k}].completions[{j}]")
            rating, last = ratings[j], True
        if rating is None:
            break
        if rating == 0:
            if stats is not None:
                stats.neutral += 1
            if neutral == "drop":
                break
            good = neutral == "positive"
        else:
            good = rating == 1
        steps.append(text)
        labels.append(good)
        if not good or last:
            break
    if not steps:
        return None
    rid = rec.get("id") or f"{qd.get('unique_id') or 'prm800k'}:{where.rsplit(':', 1)[-1]}"
    return PRMExample(str(rid), qd["problem"], steps, labels, where)


def load_prm800k(path: str | os.PathLike, neutral: str = "positive", stats: Optional[PRMStats] = None) -> list[PRMExample]:
    """All examples of a PRM800K raw jsonl (phase1 or phase2)."""
    stats = stats if stats is not None else PRMStats()
    out = []
    for n, rec in iter_jsonl(path):
        stats.records += 1
        ex = prm800k_example(rec, f"{path}:{n}", neutral, stats)
        if ex is None:
            stats.skipped_empty += 1
            continue
        stats.count(ex)
        out.append(ex)
    return out


def load_prm_data(path: str | os.PathLike, fmt: str = "auto", neutral: str = "positive",
                  stats: Optional[PRMStats] = None) -> list[PRMExample]:
    """``fmt``: ``trl`` | ``prm800k`` | ``auto`` (decided by the first record's fields)."""
    if fmt == "auto":
        first = next(iter_jsonl(path), None)
        if first is None:
            raise DataError(f"{path}: no records")
        rec = first[1]
        fmt = "prm800k" if ("label" in rec and "question" in rec) else "trl"
    if fmt == "trl":
        return load_trl_stepwise(path, stats)
    if fmt == "prm800k":
        return load_prm800k(path, neutral, stats)
    raise ValueError(f"data format must be trl, prm800k or auto, got {fmt!r}")
