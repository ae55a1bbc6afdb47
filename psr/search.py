r"""Process-based self-rewarding step search (paper §3.3, Eq. 1-5) and its test-time-scaling use
(§5.2, Table 5), independent of any model backend: it talks to a
:class:`psr.generation.base.Generator` and never touches tensors.

The loop, per question
----------------------
The question keeps a chain of accepted steps ``s_1..s_{l-1}`` (their bodies) and, aligned with
it, the preference pair produced when each step was accepted. One **iteration** is one
sample-and-judge round for one step of one question:

1. *sample*: ``w`` (``width``) candidates for step ``l = len(chain) + 1`` from the policy prompt
   ``chat(tok, reasoning_prompt(q)) + format_steps(chain)``, stopping before ``"Step {l+1}:"``
   (:func:`psr.steps.next_step_stop`) or at EOS; each candidate body is
   :func:`psr.steps.next_step_body` of the generated text;
2. *judge*: the comparisons of :func:`psr.judge.plan_comparisons` (``judge_orders`` 2: both A/B
   orders, 1: one order) go to the judge with the Figure 5 prompt
   (``chat(tok, judge_prompt(q, chain, format_step(l, a), format_step(l, b)))``); identical
   candidates tie and an empty candidate loses without a call; an unparseable verdict is no win
   for either side (counted). Scores are Eq. 2, best/worst Eq. 3-4 (ties to the lowest index);
3. *decide*:

   * ``max(score) > min(score)``: keep the best step (Eq. 5) and record the pair
     ``(best, worst)``;
   * ``max(score) == min(score)`` (every candidate equally good: all verdicts unparseable, all
     candidates identical, a position-biased judge under ``judge_orders=2``, ...): **roll back**
     — drop ``s_{l-1}`` and its pair, so the next iteration samples step ``l-1`` again.
     At ``l = 1`` there is nothing to drop: the next iteration samples step 1 again with new
     seeds (counted as a rollback and as ``resamples_step1``). In ``mode=tts`` rollbacks are
     off by default (``rollback_on_tie``): a tie keeps the lowest-index candidate, because six
     identical candidates are consensus, not a reason to throw away the previous step.
     ``rollback_on_identical=False`` applies that reading in pairs mode too, for that case only:
     when all w candidates are the same text the step is kept without a pair (counted as
     ``consensus_keeps``), while ties between different candidates still roll back. The paper
     does not say what identical candidates mean; a small model sampled at T=0.5 produces them in
     most rounds, and rolling back on each one throws away the pairs already found before it.

Rollbacks count as iterations (each is a full sample-and-judge round). The question stops when

* the kept step contains a complete ``\boxed{}`` (``final_answer``), or the best candidate ended
  with EOS (``eos``: the model finished its solution),
* every candidate is empty and rollbacks are off (``empty_step``: nothing is kept; in pairs mode
  an all-empty round is a tie and rolls back, never a consensus step),
* the chain has ``max_steps`` steps (``max_steps``),
* it has used ``max_iterations`` iterations (``max_iterations``; the paper uses 20).

The result's pairs are those of the steps in the final chain (a dropped step's pair is gone); a
question stopped by a limit still keeps the pairs of its accepted steps.

Batching and determinism
------------------------
Questions run in **fixed groups** of ``questions_in_flight`` consecutive questions (by position in
the list given to :func:`run_search`). Within a group every round makes exactly two Generator
calls: one carrying the candidate prompts of every unfinished question (``n = w`` each), then one
carrying every judge prompt of every unfinished question. Every prompt gets its own seed, derived
from ``(seed, question id, step, attempt[, comparison])`` by :func:`psr.seeds.derive_seed`, so a question's
samples do not depend on its neighbours as far as the backend is batch-invariant; and because
groups are fixed, a resumed run (which recomputes any group that is not completely written and
skips the ids already written) sends the backend exactly the same batches as an uninterrupted one,
so even a backend whose numerics depend on batch shape gives byte-identical output.

If a batched Generator call raises, the group is rerun one question at a time; a question that
still fails gets ``status="error"`` (logged by the caller) and the others are unaffected.

Statistics (per question in ``QuestionResult.stats``, summed by :func:`summarize`): ``iterations``,
``pairs``, ``rollbacks``, ``resamples_step1``, ``pairs_dropped``, ``candidates``,
``empty_candidates``, ``duplicate_candidates``, ``identical_comparisons``, ``empty_comparisons``,
``judge_calls``, ``unparseable_verdicts``, ``tokens_policy``, ``tokens_judge``,
``tokens_generated`` (policy + judge); per question also ``solution_tokens`` (the accepted
steps' own tokens: the length of the tts answer).

Entry points: :func:`run_search` (pairs and traces, used by ``recipes/step_search.py``),
:func:`tts_solve` (answers, used by the eval recipe), :func:`pair_records` / :func:`trace_record`
(the jsonl schemas), :func:`summarize`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from psr.generation.base import Completion, Generator, SamplingParams
from psr.judge import JudgePlan, judge_round, parse_verdict, plan_comparisons
from psr.prompts import chat, judge_prompt, reasoning_prompt
from psr.seeds import derive_seed
from psr.steps import final_answer_reached, format_step, format_steps, next_step_body, next_step_stop

log = logging.getLogger(__name__)

MODES = ("pairs", "tts")
STAT_KEYS = (
    "iterations",
    "pairs",
    "rollbacks",
    "resamples_step1",
    "pairs_dropped",
    "consensus_keeps",
    "candidates",
    "empty_candidates",
    "duplicate_candidates",
    "identical_comparisons",
    "empty_comparisons",
    "judge_calls",
    "unparseable_verdicts",
    "tokens_policy",
    "tokens_judge",
    "tokens_generated",
)


@dataclass
class SearchConfig:
    """Settings of the search (the paper's: width 6, T=0.5, top_p 0.95, 20 iterations).

    The one place these defaults live: step_search's ``search`` block, eval's ``tts`` block and
    the pipeline read them from here (psr.config nests this dataclass in the recipes' schemas).
    """

    width: int = 6  # w: candidates sampled per step
    temperature: float = 0.5  # candidate sampling temperature
    top_p: float = 0.95
    judge_temperature: Optional[float] = None  # None: same as temperature
    judge_top_p: Optional[float] = None  # None: same as top_p
    judge_orders: int = 2  # 2: every pair judged in both A/B orders; 1: one order
    max_iterations: int = 20  # sample-and-judge rounds per question, rollbacks included
    max_steps: int = 20  # longest chain of accepted steps
    max_new_tokens_step: int = 512  # tokens per candidate step
    max_new_tokens_judge: int = 512  # tokens per judgment (the verdict must fit)
    questions_in_flight: int = 32  # questions per fixed group (one Generator call per phase)
    seed: int = 0  # the recipes set it to their top-level seed (${seed})
    mode: str = "pairs"  # "pairs" (preference data) or "tts" (test-time scaling answers)
    rollback_on_tie: Optional[bool] = None  # None: True for pairs, False for tts
    rollback_on_identical: bool = True  # False: w identical candidates keep the step (no pair)
    trace_judge_text: bool = False  # keep every raw judge output in the trace (else only unparseable ones)

    def __post_init__(self) -> None:
        if self.width < 2:
            raise ValueError(f"width must be >= 2 (the tournament compares candidates), got {self.width}")
        if self.judge_orders not in (1, 2):
            raise ValueError(f"judge_orders must be 1 or 2, got {self.judge_orders}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for k in ("max_iterations", "max_steps", "max_new_tokens_step", "max_new_tokens_judge", "questions_in_flight"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")

    @property
    def rollback(self) -> bool:
        return self.mode == "pairs" if self.rollback_on_tie is None else bool(self.rollback_on_tie)

    @classmethod
    def from_mapping(cls, m: Any) -> "SearchConfig":
        """A SearchConfig from a SearchConfig, a dict or an omegaconf config (other keys ignored)."""
        from psr.config import dataclass_from_mapping

        return dataclass_from_mapping(cls, m)

    def policy_params(self) -> SamplingParams:
        return SamplingParams(
            n=self.width, temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens_step
        )

    def token_budget(self, questions: int) -> int:
        """The most tokens a search over ``questions`` questions generates with these settings
        (:func:`psr.generation.factory.search_token_budget`: what backend=auto is given)."""
        from psr.generation.factory import search_token_budget

        return search_token_budget(questions, width=self.width, judge_orders=self.judge_orders,
                                   max_iterations=self.max_iterations, max_new_tokens_step=self.max_new_tokens_step,
                                   max_new_tokens_judge=self.max_new_tokens_judge)

    def judge_params(self) -> SamplingParams:
        t = self.temperature if self.judge_temperature is None else self.judge_temperature
        p = self.top_p if self.judge_top_p is None else self.judge_top_p
        return SamplingParams(n=1, temperature=t, top_p=p, max_new_tokens=self.max_new_tokens_judge)


@dataclass
class Question:
    id: str
    text: str
    meta: dict = field(default_factory=dict)  # other input fields (e.g. the gold answer), carried to the trace


def as_question(q: Any, index: int) -> Question:
    """A :class:`Question` from a Question, a dict (``id`` + ``problem``/``question``) or a bare
    string (id = its index)."""
    if isinstance(q, Question):
        return q
    if isinstance(q, str):
        return Question(id=str(index), text=q)
    if isinstance(q, Mapping):
        text = q.get("problem", q.get("question"))
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"question #{index}: needs a non-empty 'problem' or 'question' string")
        qid = q.get("id", index)
        meta = {k: v for k, v in q.items() if k not in ("id", "problem", "question")}
        return Question(id=str(qid), text=text, meta=meta)
    raise TypeError(f"question #{index}: expected str, dict or Question, got {type(q).__name__}")


@dataclass
class QuestionResult:
    id: str
    question: str
    status: str = "ok"  # "ok" or "error"
    stop_reason: str = ""  # final_answer | eos | max_steps | max_iterations | error
    steps: list[str] = field(default_factory=list)  # the accepted chain (bodies)
    pairs: list[dict] = field(default_factory=list)  # pair records of the accepted chain
    rounds: list[dict] = field(default_factory=list)  # trace: one entry per iteration
    stats: dict = field(default_factory=dict)
    error: Optional[str] = None
    meta: dict = field(default_factory=dict)

    @property
    def solution(self) -> str:
        """The chain of best steps in "Step n: " form (the tts answer)."""
        return format_steps(self.steps)


class _State:
    """One question in flight."""

    def __init__(self, q: Question, cfg: SearchConfig, tokenizer: Any):
        self.q = q
        self.cfg = cfg
        self.tok = tokenizer
        self.steps: list[str] = []
        self.step_tokens: list[int] = []  # n_tokens of each accepted step's completion
        self.pairs: list[Optional[dict]] = []
        self.attempts: Counter = Counter()
        self.rounds: list[dict] = []
        self.stats: Counter = Counter({k: 0 for k in STAT_KEYS})
        self.done = False
        self.stop_reason = ""
        self.error: Optional[str] = None
        self._prefix: Optional[str] = None
        # the round in progress
        self.l = 0
        self.attempt = 0
        self.completions: list[Completion] = []
        self.bodies: list[str] = []
        self.plan: Optional[JudgePlan] = None

    # -- phase 1 -----------------------------------------------------------------------------
    def policy_request(self) -> tuple[str, list[str], int]:
        if self._prefix is None:
            self._prefix = chat(self.tok, reasoning_prompt(self.q.text))
        self.l = len(self.steps) + 1
        self.attempt = self.attempts[self.l]
        self.attempts[self.l] += 1
        seed = derive_seed(self.cfg.seed, self.q.id, "policy", self.l, self.attempt)
        return self._prefix + format_steps(self.steps), next_step_stop(self.l), seed

    def take_candidates(self, completions: Sequence[Completion]) -> None:
        if len(completions) != self.cfg.width:
            raise RuntimeError(f"generator returned {len(completions)} candidates, expected {self.cfg.width}")
        self.completions = list(completions)
        self.bodies = [next_step_body(c.text, self.l) for c in completions]
        self.stats["candidates"] += len(self.bodies)
        self.stats["empty_candidates"] += sum(1 for b in self.bodies if not b.strip())
        seen: set[str] = set()
        for b in self.bodies:
            key = " ".join(b.split())
            self.stats["duplicate_candidates"] += key in seen
            seen.add(key)
        self.stats["tokens_policy"] += sum(int(c.n_tokens) for c in completions)
        self.plan = plan_comparisons(self.bodies, self.cfg.judge_orders)

    # -- phase 2 -----------------------------------------------------------------------------
    def judge_requests(self) -> list[tuple[tuple[int, int], str, int]]:
        assert self.plan is not None
        shown = [format_step(self.l, b) for b in self.bodies]
        out = []
        for a, b in self.plan.calls:
            prompt = chat(self.tok, judge_prompt(self.q.text, self.steps, shown[a], shown[b]))
            seed = derive_seed(self.cfg.seed, self.q.id, "judge", self.l, self.attempt, a, b)
            out.append(((a, b), prompt, seed))
        return out

    def take_verdicts(self, outputs: Mapping[tuple[int, int], Completion]) -> None:
        assert self.plan is not None
        cfg, plan, l = self.cfg, self.plan, self.l
        texts = {k: c.text for k, c in outputs.items()}
        res = judge_round(self.bodies, texts, cfg.judge_orders, plan)
        self.stats["iterations"] += 1
        self.stats["judge_calls"] += len(plan.calls)
        self.stats["unparseable_verdicts"] += res.n_unparseable
        self.stats["identical_comparisons"] += plan.n_identical
        self.stats["empty_comparisons"] += plan.n_empty
        self.stats["tokens_judge"] += sum(int(c.n_tokens) for c in outputs.values())

        comparisons = []
        for key in sorted(set(plan.calls) | set(plan.decided)):
            if key in plan.decided:
                src = "identical" if plan.decided[key] is None else "empty"
                comparisons.append({"a": key[0], "b": key[1], "verdict": plan.decided[key], "source": src})
            else:
                v = parse_verdict(texts[key])
                entry = {"a": key[0], "b": key[1], "verdict": v, "source": "judge"}
                if v is None or cfg.trace_judge_text:
                    entry["text"] = texts[key]
                comparisons.append(entry)
        rnd: dict[str, Any] = {
            "iteration": self.stats["iterations"],
            "step": l,
            "attempt": self.attempt,
            "candidates": [
                {"body": b, "finish_reason": c.finish_reason, "n_tokens": int(c.n_tokens)}
                for b, c in zip(self.bodies, self.completions)
            ],
            "comparisons": comparisons,
            "scores": list(res.scores),
            "best": res.best,
            "worst": res.worst,
        }
        tie = res.rollback
        # w copies of one non-empty step; w empty candidates are no step at all (a tie: roll back)
        consensus = (tie and not cfg.rollback_on_identical and len(set(self.bodies)) == 1
                     and bool(self.bodies[0].strip()))
        if consensus:
            self.stats["consensus_keeps"] += 1
        if tie and cfg.rollback and not consensus:
            self.stats["rollbacks"] += 1
            if l == 1:
                self.stats["resamples_step1"] += 1
                rnd["action"] = "resample_step1"
            else:
                rnd["action"] = "rollback"
                rnd["dropped_step"] = self.steps.pop()
                self.step_tokens.pop()
                if self.pairs.pop() is not None:
                    self.stats["pairs_dropped"] += 1
        elif not self.bodies[res.best].strip():
            # every candidate empty and no rollback (mode=tts): nothing to keep, the chain ends
            rnd["action"] = "stop_empty"
            self._stop("empty_step")
        else:
            best = self.bodies[res.best]
            self.steps.append(best)
            self.step_tokens.append(int(self.completions[res.best].n_tokens))
            pair = None
            if not tie:
                pair = {
                    "step": l,
                    "prev_steps": list(self.steps[:-1]),
                    "chosen": format_step(l, best),
                    "rejected": format_step(l, self.bodies[res.worst]),
                    "chosen_score": res.scores[res.best],
                    "rejected_score": res.scores[res.worst],
                    "scores": list(res.scores),
                    "iteration": self.stats["iterations"],
                    "attempt": self.attempt,
                }
            self.pairs.append(pair)
            rnd["action"] = "keep" if not tie else ("keep_consensus" if consensus else "keep_tie")
            if final_answer_reached(best):
                self._stop("final_answer")
            elif self.completions[res.best].finish_reason == "eos":
                self._stop("eos")
            elif len(self.steps) >= cfg.max_steps:
                self._stop("max_steps")
        self.rounds.append(rnd)
        if not self.done and self.stats["iterations"] >= cfg.max_iterations:
            self._stop("max_iterations")
        self.plan = None

    def _stop(self, reason: str) -> None:
        self.done = True
        self.stop_reason = reason

    def fail(self, exc: BaseException) -> None:
        self.done = True
        self.stop_reason = "error"
        self.error = f"{type(exc).__name__}: {exc}"

    def result(self) -> QuestionResult:
        stats = dict(self.stats)
        stats["tokens_generated"] = stats["tokens_policy"] + stats["tokens_judge"]
        pairs = []
        if self.error is None:
            for p in self.pairs:
                if p is None:
                    continue
                pairs.append(
                    {
                        "id": f"{self.q.id}/step{p['step']}",
                        "question_id": self.q.id,
                        "question": self.q.text,
                        **p,
                        # Step-DPO field names
                        "prompt": self.q.text,
                        "initial_reason_steps": format_steps(p["prev_steps"]),
                    }
                )
        stats["pairs"] = len(pairs)
        stats["solution_tokens"] = sum(self.step_tokens)
        return QuestionResult(
            id=self.q.id,
            question=self.q.text,
            status="ok" if self.error is None else "error",
            stop_reason=self.stop_reason,
            steps=list(self.steps),
            pairs=pairs,
            rounds=self.rounds,
            stats=stats,
            error=self.error,
            meta=dict(self.q.meta),
        )


def search_group(generator: Generator, questions: Sequence[Question], cfg: SearchConfig) -> list[QuestionResult]:
    """Run the search for one group of questions together until all are finished.

    Each round makes one Generator call with every unfinished question's candidate prompt, then
    one with all their judge prompts. An exception raised by the Generator propagates (see
    :func:`search_group_safe`); one raised while handling a single question's text marks only
    that question as failed.
    """
    tok = getattr(generator, "tokenizer", None)
    states = [_State(q, cfg, tok) for q in questions]
    policy_params, judge_params = cfg.policy_params(), cfg.judge_params()
    while True:
        active = [s for s in states if not s.done]
        if not active:
            break
        # phase 1: candidates for every active question, one call
        reqs, owners = [], []
        for s in active:
            try:
                reqs.append(s.policy_request())
                owners.append(s)
            except Exception as e:  # noqa: BLE001 - one bad question must not stop the group
                s.fail(e)
        if not owners:
            continue
        outs = generator.generate(
            [r[0] for r in reqs], policy_params, stops=[r[1] for r in reqs], seeds=[r[2] for r in reqs]
        )
        if len(outs) != len(reqs):
            raise RuntimeError(f"generator returned {len(outs)} results for {len(reqs)} prompts")
        judging = []
        for s, out in zip(owners, outs):
            try:
                s.take_candidates(out)
                judging.append(s)
            except Exception as e:  # noqa: BLE001
                s.fail(e)
        # phase 2: every judge prompt of every active question, one call
        jreqs: list[tuple[_State, tuple[int, int], str, int]] = []
        ready = []
        for s in judging:
            try:
                jreqs += [(s, key, p, seed) for key, p, seed in s.judge_requests()]
                ready.append(s)
            except Exception as e:  # noqa: BLE001
                s.fail(e)
        outputs: dict[int, dict[tuple[int, int], Completion]] = {id(s): {} for s in ready}
        if jreqs:
            jouts = generator.generate(
                [r[2] for r in jreqs], judge_params, stops=[[] for _ in jreqs], seeds=[r[3] for r in jreqs]
            )
            if len(jouts) != len(jreqs):
                raise RuntimeError(f"generator returned {len(jouts)} results for {len(jreqs)} judge prompts")
            for (s, key, _, _), out in zip(jreqs, jouts):
                if not out:
                    raise RuntimeError("generator returned no completion for a judge prompt")
                outputs[id(s)][key] = out[0]
        for s in ready:
            try:
                s.take_verdicts(outputs[id(s)])
            except Exception as e:  # noqa: BLE001
                s.fail(e)
    return [s.result() for s in states]


def search_group_safe(generator: Generator, questions: Sequence[Question], cfg: SearchConfig) -> list[QuestionResult]:
    """:func:`search_group`, falling back to one question at a time when a batched Generator call
    raises; a question that fails on its own gets an error result."""
    try:
        return search_group(generator, questions, cfg)
    except Exception as e:  # noqa: BLE001
        if len(questions) == 1:
            log.warning("question %s failed: %s: %s", questions[0].id, type(e).__name__, e)
            s = _State(questions[0], cfg, None)
            s.fail(e)
            return [s.result()]
        log.warning("a batched call failed (%s: %s); rerunning the group one question at a time", type(e).__name__, e)
        out = []
        for q in questions:
            out += search_group_safe(generator, [q], cfg)
        return out


def run_search(
    generator: Generator,
    questions: Iterable[Any],
    cfg: Any = None,
    skip_ids: Iterable[str] = (),
    on_group: Optional[Callable[[list[QuestionResult]], None]] = None,
) -> Iterator[QuestionResult]:
    """Search every question, yielding results in input order, group by group.

    ``questions``: Questions, dicts (``id`` + ``problem``/``question``) or strings. ``cfg``: a
    SearchConfig or a mapping of its keys. Groups whose ids are all in ``skip_ids`` are skipped;
    a group with some ids done is recomputed whole (same batches as an uninterrupted run) and only
    its other ids are yielded. ``on_group`` is called with each finished group's results.
    """
    cfg = SearchConfig.from_mapping(cfg)
    yield from run_in_groups(lambda group: search_group_safe(generator, group, cfg), questions,
                             cfg.questions_in_flight, skip_ids, on_group)


def run_in_groups(run_group: Callable[[list[Question]], list[Any]], questions: Iterable[Any], group_size: int,
                  skip_ids: Iterable[str] = (), on_group: Optional[Callable[[list[Any]], None]] = None) -> Iterator[Any]:
    """``run_group`` over fixed groups of ``group_size`` questions, results yielded in input order:
    a group whose ids are all in ``skip_ids`` is skipped, a partly done one is recomputed whole (the
    batches of an uninterrupted run) and only its other ids are yielded; ``on_group`` sees each
    finished group's results. Shared by the step search and the SRLM baseline (psr.srlm)."""
    qs = [as_question(q, i) for i, q in enumerate(questions)]
    skip = {str(i) for i in skip_ids}
    for g in range(0, len(qs), group_size):
        group = qs[g : g + group_size]
        if all(q.id in skip for q in group):
            continue
        results = run_group(group)
        if on_group is not None:
            on_group(results)
        for r in results:
            if r.id not in skip:
                yield r


def tts_search(generator: Generator, questions: Iterable[Any], cfg: Any = None) -> list[QuestionResult]:
    """Test-time scaling (paper §5.2): the search with ``mode="tts"``; full results with stats."""
    cfg = SearchConfig.from_mapping(cfg)
    if cfg.mode != "tts":
        cfg = dataclasses.replace(cfg, mode="tts")
    return list(run_search(generator, questions, cfg))


class TTSAnswer(str):
    """A test-time-scaling answer: the solution text itself (a ``str``), plus ``response`` (the
    same text), ``n_tokens`` (generated tokens of the accepted steps, i.e. the response length),
    ``tokens_generated`` (everything the search generated for it, judge calls included) and
    ``result`` (the full :class:`QuestionResult`)."""

    response: str
    n_tokens: int
    tokens_generated: int
    result: QuestionResult

    @classmethod
    def of(cls, r: QuestionResult) -> "TTSAnswer":
        text = r.solution if r.status == "ok" else ""
        a = cls(text)
        a.response = text
        a.n_tokens = int(r.stats.get("solution_tokens", 0))
        a.tokens_generated = int(r.stats.get("tokens_generated", 0))
        a.result = r
        return a


def tts_solve(generator: Generator, questions: Iterable[Any], cfg: Any = None) -> list[TTSAnswer]:
    """Test-time-scaling answers, one per question in order: the chain of best steps in
    ``"Step n: "`` form (``""`` for a question that failed), as :class:`TTSAnswer` strings
    (also carrying ``.response``, ``.n_tokens``, ``.tokens_generated``, ``.result``).
    Paper setting: width 6, temperature 0.5, best step by the model's own pairwise judgments."""
    return [TTSAnswer.of(r) for r in tts_search(generator, questions, cfg)]


def pair_records(result: QuestionResult) -> list[dict]:
    """The step_dpo input records of one question (``pairs.jsonl``)."""
    return list(result.pairs)


def trace_record(result: QuestionResult) -> dict:
    """The trace record of one question (``trace.jsonl``): every candidate, comparison, score and
    rollback, the final chain and the statistics."""
    return {
        "id": result.id,
        "question": result.question,
        "status": result.status,
        "stop_reason": result.stop_reason,
        "error": result.error,
        "steps": result.steps,
        "solution": result.solution,
        "n_pairs": len(result.pairs),
        "stats": result.stats,
        "rounds": result.rounds,
        "meta": result.meta,
    }


def result_from_record(rec: Mapping[str, Any], pairs: Sequence[dict] = ()) -> QuestionResult:
    """Inverse of :func:`trace_record` (+ the question's pairs)."""
    return QuestionResult(
        id=rec["id"],
        question=rec["question"],
        status=rec["status"],
        stop_reason=rec["stop_reason"],
        steps=list(rec["steps"]),
        pairs=list(pairs),
        rounds=list(rec["rounds"]),
        stats=dict(rec["stats"]),
        error=rec.get("error"),
        meta=dict(rec.get("meta") or {}),
    )


def summary_head(results: Sequence[Any], stat_keys: Sequence[str]) -> tuple[list, dict]:
    """(the ok results, the fields a run summary starts with): question counts, failed ids, and the
    totals and per-question means of ``stat_keys`` over the ok questions (``r.stats``). Shared by
    the step search and the SRLM round (psr.srlm)."""
    ok = [r for r in results if r.status == "ok"]
    totals = Counter({k: 0 for k in stat_keys})
    for r in ok:
        totals.update({k: int(r.stats.get(k, 0)) for k in stat_keys})
    n = len(ok)
    return ok, {
        "questions": len(results),
        "questions_ok": n,
        "questions_failed": len(results) - n,
        "failed_ids": [r.id for r in results if r.status != "ok"],
        "totals": dict(totals),
        "per_question_mean": {k: (totals[k] / n if n else 0.0) for k in stat_keys},
    }


def summarize(results: Iterable[QuestionResult]) -> dict:
    """Totals and per-question means of the statistics, stop reasons, failed ids."""
    results = list(results)
    ok, head = summary_head(results, STAT_KEYS)
    n = len(ok)
    pairs_hist = Counter(len(r.pairs) for r in ok)
    return {
        **head,
        "pairs_per_question_hist": {str(k): v for k, v in sorted(pairs_hist.items())},
        "stop_reasons": dict(sorted(Counter(r.stop_reason for r in results).items())),
        "final_answer_rate": (sum(r.stop_reason == "final_answer" for r in ok) / n if n else 0.0),
    }
