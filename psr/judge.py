r"""The judge role: verdict parsing and the pairwise tournament of paper Eq. 1-5.

For the ``w`` candidates ``S_l`` of step ``l`` the model judges pairs with the Figure 5 prompt.
``O(s_i, s_j) = 1`` when ``s_i`` wins a comparison against ``s_j``, and
``score_i = sum_{j != i} O(s_i, s_j)`` (Eq. 2). The best candidate (Eq. 3) is kept (Eq. 5), the
best and the worst (Eq. 4) form a preference pair, and when ``max(score) == min(score)`` the
search rolls back (``rollback``).

Choices where the paper is silent (all deterministic, see the docstrings):

* ``judge_orders=2`` (default): every unordered pair is judged twice, once in each A/B order, so
  position bias cancels; at ``w=6`` that is 30 judge calls per step and scores range 0..10.
  ``judge_orders=1``: one call per pair (15 at ``w=6``), the A position alternating between the
  two candidates so that no index is always shown first.
* Identical candidates (equal after whitespace folding) are not sent to the judge: the
  comparison is a tie, no win for either side.
* An empty candidate loses to a non-empty one without a judge call; two empty ones tie.
* An unparseable verdict is no win for either side and is counted.
* Ties for best/worst go to the lowest candidate index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Mapping, Optional, Sequence

Verdict = Literal["A", "B"]
_VERDICT_RE = re.compile(r"\[\[\s*([AB])\s*\]\]")


def parse_verdict(text: str) -> Optional[Verdict]:
    """``"A"`` or ``"B"`` from the last ``[[A]]``/``[[B]]`` in ``text``; ``None`` when there is none."""
    found = _VERDICT_RE.findall(text or "")
    return found[-1] if found else None  # type: ignore[return-value]


def comparisons(w: int, judge_orders: int = 2) -> list[tuple[int, int]]:
    """The ordered comparisons ``(a, b)`` (candidate ``a`` shown as A, ``b`` as B) of a full round.

    ``judge_orders=2``: all ``w*(w-1)`` ordered pairs. ``judge_orders=1``: each unordered pair
    once; pair ``(i, j)`` with ``i < j`` is shown as ``(i, j)`` when ``i + j`` is odd and as
    ``(j, i)`` otherwise.
    """
    if judge_orders not in (1, 2):
        raise ValueError(f"judge_orders must be 1 or 2, got {judge_orders}")
    if w < 2:
        raise ValueError(f"the tournament needs at least 2 candidates, got w={w}")
    out = []
    for i in range(w):
        for j in range(i + 1, w):
            if judge_orders == 2:
                out += [(i, j), (j, i)]
            else:
                out.append((i, j) if (i + j) % 2 else (j, i))
    return out


def _norm(s: str) -> str:
    return " ".join(s.split())


@dataclass
class JudgePlan:
    """Which comparisons need a judge call and which are decided without one."""

    calls: list[tuple[int, int]]
    decided: dict[tuple[int, int], Optional[Verdict]] = field(default_factory=dict)
    n_identical: int = 0
    n_empty: int = 0


def plan_comparisons(candidates: Sequence[str], judge_orders: int = 2) -> JudgePlan:
    """Split a round's comparisons into judge calls and pre-decided outcomes (identical and
    empty candidates, see the module docstring)."""
    plan = JudgePlan(calls=[])
    normed = [_norm(c) for c in candidates]
    for a, b in comparisons(len(candidates), judge_orders):
        if normed[a] == normed[b]:
            plan.decided[(a, b)] = None
            plan.n_identical += 1
        elif not normed[a] or not normed[b]:
            plan.decided[(a, b)] = "B" if not normed[a] else "A"
            plan.n_empty += 1
        else:
            plan.calls.append((a, b))
    return plan


@dataclass
class TournamentResult:
    scores: list[int]
    best: int
    worst: int
    rollback: bool
    n_decided: int  # comparisons that gave a win to one side
    n_undecided: int  # ties: unparseable verdicts, identical candidates, two empty candidates
    n_unparseable: int  # judge outputs with no [[A]]/[[B]]


def tournament(
    w: int, outcomes: Mapping[tuple[int, int], Optional[Verdict]], judge_orders: int = 2
) -> TournamentResult:
    """Scores (Eq. 2), best/worst (Eq. 3-4) and the rollback signal from the outcome of every
    comparison of :func:`comparisons` ``(w, judge_orders)``.

    ``outcomes[(a, b)]`` is the verdict of the comparison showing ``a`` as A and ``b`` as B, or
    ``None`` for no win (unparseable or tie). A missing comparison is an error: every one of the
    round must be accounted for.
    """
    scores = [0] * w
    n_decided = n_undecided = 0
    for a, b in comparisons(w, judge_orders):
        if (a, b) not in outcomes:
            raise KeyError(f"no outcome for comparison (A={a}, B={b})")
        v = outcomes[(a, b)]
        if v == "A":
            scores[a] += 1
        elif v == "B":
            scores[b] += 1
        elif v is None:
            n_undecided += 1
            continue
        else:
            raise ValueError(f"verdict must be 'A', 'B' or None, got {v!r}")
        n_decided += 1
    hi, lo = max(scores), min(scores)
    return TournamentResult(
        scores=scores,
        best=scores.index(hi),
        worst=scores.index(lo),
        rollback=hi == lo,
        n_decided=n_decided,
        n_undecided=n_undecided,
        n_unparseable=0,
    )


def judge_round(
    candidates: Sequence[str],
    judge_outputs: Mapping[tuple[int, int], str],
    judge_orders: int = 2,
    plan: Optional[JudgePlan] = None,
) -> TournamentResult:
    """The tournament for one step from the judge's raw outputs for ``plan.calls``."""
    plan = plan or plan_comparisons(candidates, judge_orders)
    outcomes: dict[tuple[int, int], Optional[Verdict]] = dict(plan.decided)
    n_unparseable = 0
    for key in plan.calls:
        v = parse_verdict(judge_outputs[key])
        n_unparseable += v is None
        outcomes[key] = v
    res = tournament(len(candidates), outcomes, judge_orders)
    res.n_unparseable = n_unparseable
    return res
