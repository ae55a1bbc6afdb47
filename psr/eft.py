r"""EFT data (paper §3.2): PRM-scored tree search over a policy, best/worst step pairs, teacher
judgments in both A/B orders, and the two filters.

Step-level MCTS (:func:`search_trees`)
--------------------------------------
The paper runs "MCTS on a policy model" (simulation_depth=3, num_iterations=100, T=0.7,
top_p=0.95) and pairs the best and worst candidate of a layer by the PRM's P("+"). It gives no
further detail; this is the design used here.

* A **node** is a partial solution: the question plus step bodies ``steps[0..d-1]``. The root has
  no steps. A node's children are the distinct candidates for step ``d+1`` (a *sibling set*:
  they share question and previous steps, exactly what the Figure 5 prompt shows the judge).
* **Prior value**: every node gets the PRM's P("+") of its own last step,
  ``prm.score_steps(question, steps)[-1]``.
* One **iteration** per tree: *selection* from the root by UCT,
  ``Q(c) + exploration_constant * sqrt(ln N(parent) / N(c))`` with ``Q = W/N``, down to a node
  that is not expanded; *expansion* samples ``expand_width`` candidate next steps (``n`` samples
  of one prompt, T=``temperature``, top_p), empty, duplicate (whitespace-folded) and malformed
  candidates (a body holding another "Step n:" header) dropped; *simulation* from every new child that is not terminal: up to ``simulation_depth``
  further steps sampled one at a time (n=1), each scored by the PRM; the child's value is
  ``rollout_value`` (``min`` by default: a chain is as good as its weakest step; ``mean``,
  ``last``) over its own P("+") and the rollout's; *backup* adds each child's value to the child
  and all its ancestors (``N += 1, W += v``).
* A node is **terminal** when its step holds a ``\boxed{}`` answer, the policy ended the text
  (EOS), or it has ``max_depth`` steps; a selected terminal node backs up its first value again.
  A node whose expansion gave no usable candidate becomes terminal. A tree stops after
  ``num_iterations`` iterations or when every path ends in a terminal node.
* **Batching**: the trees of ``questions_in_flight`` questions advance in lockstep; each
  iteration is one policy ``generate`` call for all expansions (n=``expand_width``) and
  ``simulation_depth`` calls for all rollouts (n=1), plus the PRM calls. Every prompt carries a
  seed derived from (``seed``, question id, node id, purpose), so a tree does not depend on which
  other questions share a call (as far as the Generator honours seeds) — a resumed run rebuilds
  the same trees.

Pairs (:func:`select_pairs`)
----------------------------
For every expanded node with at least two children, the children with the highest and the
lowest P("+") (ties: the earlier sample) form a candidate pair when ``best - worst > pair_margin``.
Pairs are ranked by the parent's visit count (the contexts the search believed in most), then
depth, and at most ``max_pairs_per_question`` are kept (0: all). Counted removals:
``too_few_candidates`` (sibling sets of size < 2), ``small_gap``, ``over_cap``.

Teacher judgments and filters (:func:`judge_pairs`, :func:`classify_pair`)
--------------------------------------------------------------------------
Each pair is judged twice with the Figure 5 prompt: order ``ab`` shows the PRM's best as A,
order ``ba`` shows it as B. A pair is kept only when both verdicts parse, agree with each other
(they name the same candidate) and agree with the PRM (that candidate is the PRM's best).
Removals are counted in that order: ``unparseable``, ``inconsistent``, ``prm_disagree``.

EFT records (:func:`eft_records`)
---------------------------------
``{id, question, prev_steps, step_a, step_b, judgment, label}`` with steps shown as
``"Step l: body"``, ``judgment`` the teacher's full text for that order (ending in its
verdict), ``label`` its verdict. By default (``emit_both_orders=False``) each kept pair gives
**one** record, as in the paper's counts (4,679 kept pairs -> 4,179 train + 500 test EFT
records, so EFT keeps its weight against IFT): its A/B order is chosen by a hash of ``(seed,
pair id)`` -- reproducible, about half the labels A and half B, with the teacher's judgment for
that order. ``emit_both_orders=True`` writes both orders of every kept pair (each with its own
judgment): perfectly balanced labels, twice the records.

Test doubles for a trained PRM, a teacher and a policy (``LengthPRM``, ``ScriptedTeacher``,
``tiny_generator``, used by tests and ``configs/tiny/eft_build.yaml``) live in :mod:`psr.testing`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence

from psr.generation.base import Generator, SamplingParams
from psr.seeds import stable_hash, stable_seed
from psr.judge import parse_verdict
from psr.prompts import chat, judge_prompt, reasoning_prompt
from psr.steps import (
    final_answer_reached,
    format_step,
    format_steps,
    next_step_body,
    next_step_stop,
    parse_steps,
)


class StepScorer(Protocol):
    """A PRM: P("+") for every step of ``steps`` given the question and the steps before it."""

    def score_steps(self, question: str, steps: Sequence[str]) -> list[float]: ...


def _fold(s: str) -> str:
    return " ".join(s.split())


def policy_prompt(tokenizer: Any, question: str, prev_steps: Sequence[str]) -> str:
    """Figure 4 for ``question`` followed by the previous steps (the policy writes the next one)."""
    return chat(tokenizer, reasoning_prompt(question)) + format_steps(list(prev_steps))


def score_last(prm: Any, items: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
    """P("+") of the last step of each ``(question, steps)``: the PRM's ``score_batch`` when it
    has one (a list of per-step score lists), else ``score_steps`` per item."""
    if not items:
        return []
    if hasattr(prm, "score_batch"):
        scores = prm.score_batch([(q, list(s)) for q, s in items])
    else:
        scores = [prm.score_steps(q, list(s)) for q, s in items]
    out = []
    for (q, s), sc in zip(items, scores):
        if len(sc) != len(s):
            raise ValueError(f"PRM returned {len(sc)} scores for {len(s)} steps")
        v = float(sc[-1])
        if not 0.0 <= v <= 1.0 or math.isnan(v):
            raise ValueError(f"PRM score {v} is not a probability in [0, 1]")
        out.append(v)
    return out


# ----------------------------------------------------------------------------- the tree


@dataclass
class Node:
    id: int
    parent: Optional[int]
    steps: tuple
    prm: float = 1.0  # P("+") of the last step (the root has none: 1.0)
    value0: Optional[float] = None  # the value of its own evaluation (prior + rollout)
    visits: int = 0
    total: float = 0.0
    children: list = field(default_factory=list)
    expanded: bool = False
    terminal: bool = False
    finish_reason: str = ""

    @property
    def depth(self) -> int:
        return len(self.steps)

    @property
    def q(self) -> float:
        return self.total / self.visits if self.visits else 0.0

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "parent": self.parent,
            "step": self.steps[-1] if self.steps else None,
            "prm": self.prm,
            "visits": self.visits,
            "q": self.q,
            "terminal": self.terminal,
        }


@dataclass
class MCTSConfig:
    num_iterations: int = 100
    simulation_depth: int = 3
    temperature: float = 0.7
    top_p: float = 0.95
    expand_width: int = 4
    exploration_constant: float = 1.0
    rollout_value: str = "min"
    max_depth: int = 12
    max_new_tokens: int = 256
    questions_in_flight: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rollout_value not in ("min", "mean", "last"):
            raise ValueError(f"rollout_value must be min, mean or last, got {self.rollout_value!r}")
        if self.num_iterations < 1 or self.expand_width < 1 or self.max_depth < 1:
            raise ValueError("num_iterations, expand_width and max_depth must be >= 1")
        if self.simulation_depth < 0:
            raise ValueError(f"simulation_depth must be >= 0, got {self.simulation_depth}")

    @classmethod
    def from_mapping(cls, m: Any) -> "MCTSConfig":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: m[k] for k in names if k in m})


class Tree:
    def __init__(self, qid: str, question: str):
        self.qid = qid
        self.question = question
        self.nodes: list[Node] = [Node(id=0, parent=None, steps=())]
        self.iterations = 0

    def add(self, parent: Node, body: str, finish_reason: str, max_depth: int) -> Node:
        steps = parent.steps + (body,)
        node = Node(id=len(self.nodes), parent=parent.id, steps=steps, finish_reason=finish_reason)
        node.terminal = final_answer_reached(body) or finish_reason == "eos" or len(steps) >= max_depth
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def exhausted(self, node: Optional[Node] = None) -> bool:
        node = node or self.nodes[0]
        if node.terminal:
            return True
        if not node.expanded:
            return False
        return all(self.exhausted(self.nodes[c]) for c in node.children)

    def select(self, c: float) -> Node:
        node = self.nodes[0]
        while node.expanded and not node.terminal:
            kids = [self.nodes[k] for k in node.children if not self.exhausted(self.nodes[k])]
            if not kids:
                kids = [self.nodes[k] for k in node.children]
            ln = math.log(max(1, node.visits))

            def uct(ch: Node) -> float:
                if ch.visits == 0:
                    return math.inf
                return ch.q + c * math.sqrt(ln / ch.visits)

            node = max(kids, key=uct)  # ties: the earlier child
        return node

    def backup(self, node: Node, value: float) -> None:
        cur: Optional[Node] = node
        while cur is not None:
            cur.visits += 1
            cur.total += value
            cur = self.nodes[cur.parent] if cur.parent is not None else None


def _aggregate(values: Sequence[float], how: str) -> float:
    if how == "min":
        return min(values)
    if how == "mean":
        return sum(values) / len(values)
    return values[-1]


def _seed(cfg: MCTSConfig, *parts: Any) -> int:
    return stable_seed(cfg.seed, *parts)


def search_trees(
    policy: Generator, prm: Any, questions: Sequence[tuple[str, str]], cfg: MCTSConfig
) -> list[Tree]:
    """Step-level MCTS (module docstring) for ``questions`` = ``[(id, question), ...]``, all
    trees advancing together. Returns the trees."""
    tok = policy.tokenizer
    trees = [Tree(qid, q) for qid, q in questions]
    expand_params = SamplingParams(
        n=cfg.expand_width, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens
    )
    roll_params = SamplingParams(n=1, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    for _ in range(cfg.num_iterations):
        leaves: list[tuple[Tree, Node]] = []
        for t in trees:
            if t.exhausted():
                continue
            t.iterations += 1
            leaf = t.select(cfg.exploration_constant)
            if leaf.terminal:
                t.backup(leaf, leaf.value0 if leaf.value0 is not None else leaf.prm)
            else:
                leaves.append((t, leaf))
        if not leaves:
            if all(t.exhausted() for t in trees):
                break
            continue
        # Expansion: one call for every selected leaf of every tree.
        outs = policy.generate(
            [policy_prompt(tok, t.question, leaf.steps) for t, leaf in leaves],
            expand_params,
            stops=[next_step_stop(leaf.depth + 1) for _, leaf in leaves],
            seeds=[_seed(cfg, t.qid, leaf.id, "expand") for t, leaf in leaves],
        )
        new: list[tuple[Tree, Node]] = []
        for (t, leaf), comps in zip(leaves, outs):
            leaf.expanded = True
            seen = set()
            for c in comps:
                body = next_step_body(c.text, leaf.depth + 1)
                key = _fold(body)
                if not key or key in seen or parse_steps(body):
                    continue  # empty, duplicate, or malformed (holds another "Step n:" header)
                seen.add(key)
                new.append((t, t.add(leaf, body, c.finish_reason, cfg.max_depth)))
            if not leaf.children:  # nothing usable: a dead end
                leaf.terminal = True
                t.backup(leaf, leaf.value0 if leaf.value0 is not None else leaf.prm)
        for (t, node), p in zip(new, score_last(prm, [(t.question, n.steps) for t, n in new])):
            node.prm = p
        # Simulation: rollouts from every new non-terminal child, all batched per depth.
        trail = {id(n): [n.prm] for _, n in new}
        active = [(t, n, n.steps) for t, n in new if not n.terminal]
        for d in range(cfg.simulation_depth):
            if not active:
                break
            outs = policy.generate(
                [policy_prompt(tok, t.question, steps) for t, _, steps in active],
                roll_params,
                stops=[next_step_stop(len(steps) + 1) for _, _, steps in active],
                seeds=[_seed(cfg, t.qid, n.id, "rollout", d) for t, n, _ in active],
            )
            stepped = []
            for (t, n, steps), comps in zip(active, outs):
                c = comps[0]
                body = next_step_body(c.text, len(steps) + 1)
                if not _fold(body) or parse_steps(body):
                    continue  # the rollout produced nothing usable: it ends here
                stepped.append((t, n, steps + (body,), c.finish_reason))
            scores = score_last(prm, [(t.question, s) for t, _, s, _ in stepped])
            active = []
            for (t, n, s, fin), p in zip(stepped, scores):
                trail[id(n)].append(p)
                done = final_answer_reached(s[-1]) or fin == "eos" or len(s) >= cfg.max_depth
                if not done:
                    active.append((t, n, s))
        for t, n in new:
            n.value0 = _aggregate(trail[id(n)], cfg.rollout_value)
            t.backup(n, n.value0)
    return trees


# ----------------------------------------------------------------------------- pairs


PAIR_REMOVALS = ("too_few_candidates", "small_gap", "over_cap")
JUDGE_REMOVALS = ("unparseable", "inconsistent", "prm_disagree")


def select_pairs(tree: Tree, pair_margin: float, max_pairs_per_question: int = 0) -> tuple[list[dict], dict]:
    """Best/worst pairs of the tree's sibling sets and the removal counts (module docstring)."""
    counts = {k: 0 for k in PAIR_REMOVALS}
    found = []
    for node in tree.nodes:
        if not node.expanded:
            continue
        kids = [tree.nodes[k] for k in node.children]
        if len(kids) < 2:
            counts["too_few_candidates"] += 1
            continue
        best = max(kids, key=lambda k: k.prm)  # first maximum
        worst = min(kids, key=lambda k: k.prm)
        gap = best.prm - worst.prm
        if not gap > pair_margin:
            counts["small_gap"] += 1
            continue
        found.append((node, best, worst, gap, len(kids)))
    found.sort(key=lambda x: (-x[0].visits, x[0].depth, x[0].id))
    if max_pairs_per_question and len(found) > max_pairs_per_question:
        counts["over_cap"] = len(found) - max_pairs_per_question
        found = found[:max_pairs_per_question]
    pairs = [
        {
            "pair_id": f"{tree.qid}/n{node.id}",
            "prev_steps": list(node.steps),
            "step": node.depth + 1,
            "best": best.steps[-1],
            "worst": worst.steps[-1],
            "best_prm": best.prm,
            "worst_prm": worst.prm,
            "gap": gap,
            "n_candidates": n,
            "parent_visits": node.visits,
        }
        for node, best, worst, gap, n in found
    ]
    return pairs, counts


def tree_record(tree: Tree, pairs: list[dict], counts: dict, save_nodes: bool = False) -> dict:
    rec = {
        "id": tree.qid,
        "question": tree.question,
        "iterations": tree.iterations,
        "n_nodes": len(tree.nodes),
        "n_expanded": sum(n.expanded for n in tree.nodes),
        "n_sibling_sets": sum(n.expanded and len(n.children) >= 2 for n in tree.nodes),
        "removed": counts,
        "pairs": pairs,
    }
    if save_nodes:
        rec["nodes"] = [n.to_dict() for n in tree.nodes]
    return rec


# ----------------------------------------------------------------------------- judging


def judge_prompts(tokenizer: Any, question: str, pair: dict) -> dict[str, str]:
    """The two Figure 5 prompts of a pair: ``ab`` shows the PRM's best as A, ``ba`` as B."""
    l = pair["step"]
    best, worst = format_step(l, pair["best"]), format_step(l, pair["worst"])
    prev = pair["prev_steps"]
    return {
        "ab": chat(tokenizer, judge_prompt(question, prev, best, worst)),
        "ba": chat(tokenizer, judge_prompt(question, prev, worst, best)),
    }


def classify_pair(v_ab: Optional[str], v_ba: Optional[str]) -> str:
    """``kept`` or the filter that removes the pair, from its two verdicts (``ab``: best shown as A)."""
    if v_ab is None or v_ba is None:
        return "unparseable"
    choice_ab = "best" if v_ab == "A" else "worst"
    choice_ba = "best" if v_ba == "B" else "worst"
    if choice_ab != choice_ba:
        return "inconsistent"
    if choice_ab != "best":
        return "prm_disagree"
    return "kept"


def judge_pairs(
    teacher: Generator, tree_recs: Sequence[dict], params: SamplingParams, seed: int = 0
) -> list[dict]:
    """Both-order judgments of every pair of ``tree_recs`` in one teacher call; returns one
    judged record per tree record: ``{id, question, pairs: [pair + judgments/verdicts/status]}``."""
    prompts, seeds, where = [], [], []
    for r, rec in enumerate(tree_recs):
        for p, pair in enumerate(rec["pairs"]):
            for order, text in judge_prompts(teacher.tokenizer, rec["question"], pair).items():
                prompts.append(text)
                seeds.append(stable_seed(seed, pair["pair_id"], order))
                where.append((r, p, order))
    outs = teacher.generate(prompts, params, seeds=seeds) if prompts else []
    judged = [
        {"id": rec["id"], "question": rec["question"], "pairs": [dict(p, judgments={}, verdicts={}) for p in rec["pairs"]]}
        for rec in tree_recs
    ]
    for (r, p, order), comps in zip(where, outs):
        pair = judged[r]["pairs"][p]
        text = comps[0].text
        pair["judgments"][order] = text
        pair["verdicts"][order] = parse_verdict(text)
    for rec in judged:
        for pair in rec["pairs"]:
            pair["status"] = classify_pair(pair["verdicts"]["ab"], pair["verdicts"]["ba"])
    return judged


def eft_records(judged_rec: dict, emit_both_orders: bool = False, seed: int = 0) -> list[dict]:
    """EFT records of the kept pairs of one judged question: one per pair in a seeded A/B order
    (default), or both orders with ``emit_both_orders=True`` (module docstring)."""
    out = []
    for pair in judged_rec["pairs"]:
        if pair["status"] != "kept":
            continue
        l = pair["step"]
        best, worst = format_step(l, pair["best"]).strip(), format_step(l, pair["worst"]).strip()
        orders = ["ab", "ba"]
        if not emit_both_orders:
            orders = [orders[stable_hash(seed, pair["pair_id"], "order") % 2]]
        for order in orders:
            a, b = (best, worst) if order == "ab" else (worst, best)
            out.append(
                {
                    "id": f"{pair['pair_id']}/{order}",
                    "question": judged_rec["question"],
                    "prev_steps": list(pair["prev_steps"]),
                    "step_a": a,
                    "step_b": b,
                    "judgment": pair["judgments"][order],
                    "label": pair["verdicts"][order],
                }
            )
    return out


def split_by_question(
    records_by_question: Sequence[tuple[str, list[dict]]], test_size: int, train_size: Optional[int], seed: int = 0
) -> tuple[list[dict], list[dict], int]:
    """Train/test split with no question in both: questions in a seeded hash order go to test
    until it holds ``test_size`` records (the last one's surplus records are dropped, not moved
    to train); the rest go to train, capped at ``train_size`` (None: all). Returns
    ``(train, test, n_dropped)``."""
    order = sorted(records_by_question, key=lambda x: (stable_hash(seed, "split", x[0]), x[0]))
    train: list[dict] = []
    test: list[dict] = []
    dropped = 0
    for qid, recs in order:
        if len(test) < test_size:
            room = test_size - len(test)
            test += recs[:room]
            dropped += max(0, len(recs) - room)
        else:
            train += recs
    if train_size is not None and len(train) > train_size:
        dropped += len(train) - train_size
        train = train[:train_size]
    return train, test, dropped
