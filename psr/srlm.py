r"""The SRLM baseline (Yuan et al. 2024, "Self-Rewarding Language Models"): solution-level
self-rewarding, the method the paper's Tables 1-2 compare PSRLM against.

Per question (one **round**, no steps, no rollback):

1. *sample*: ``num_samples`` (N; 4 in Yuan et al.) whole solutions from the policy prompt
   ``chat(tok, reasoning_prompt(q))`` -- the same Figure 4 prompt PSRLM's search and step_dpo use,
   so a pair trains on exactly the context its responses were sampled in. No stop string: a
   solution ends at EOS or ``max_new_tokens_solution``.
2. *score*: every non-empty solution is scored ``score_samples`` (K; 3 in Yuan et al.) times with
   :data:`SRLM_JUDGE_PROMPT` (Yuan et al.'s Figure 2, verbatim from
   ``shared/paper/srlm_judge_prompt.md``; ``{prompt}`` = the question, ``{response}`` = the whole
   solution), sent as ``chat(tok, prompt)``. One prompt per solution with ``n = K``.
3. *score parsing* (:func:`parse_score`): model output is untrusted text; the score is the
   **last** ``Score: <number>`` in it, matched by a strict regex (:data:`SCORE_RE`), never
   evaluated. The number must be in 0..5 (the additive 5-point scale); anything else -- no
   ``Score:``, ``Score: 7``, ``Score: four`` -- is a **missing** score and is counted
   (``unparseable_scores``). A solution's score is the mean of its parsed scores; a solution
   with none is unscored (``unscored_responses``) and takes no part in the pairing.
4. *pairing* (:func:`choose_pair`): among the scored solutions, the highest-scoring one is chosen
   and the lowest-scoring one rejected (ties to the lowest index on both sides). No pair when
   fewer than two solutions are scored, when every score is equal (Yuan et al. drop those
   prompts), or when the chosen and rejected texts are the same after stripping (no preference
   signal; step_dpo would drop it anyway). The reason is recorded (``no_pair_reason``).

Empty solutions (whitespace only) are not scored -- step_dpo rejects an empty response, so they
could never be part of a pair -- and are counted (``empty_responses``).

Pairs are written in the Step-DPO convention of :mod:`psr.data.pairs` with the whole solution
as the single "step" after the question: ``prompt`` (the question), ``initial_reason_steps``
``""``, ``chosen`` / ``rejected`` (the generated solutions verbatim), so ``recipes/step_dpo.py``
trains on them unchanged (DPO on whole responses: the loss covers every response token).

The SRLM M1's judge data (:func:`scoring_eft_record`, :func:`templated_scoring_records`): Yuan et
al. initialise their M1 on EFT examples of this very prompt -- the prompt with a question and a
response, the target a justification ending in ``Score: n``. They go to
``recipes/eft_ift_sft.py`` as TEXT records (``text_data``: ``{id, prompt, response}``, the prompt
already chat-formatted with the model's tokenizer, :mod:`psr.data.schemas`), beside the same IFT
data as PSRLM's M1. :func:`templated_scoring_records` writes them from solutions whose
correctness is known (a PRM, the teacher, or the arith world's checker decided it): 5 points for
a correct solution, 2 for a wrong one, with a short fixed justification; the paper does not say
how its SRLM EFT data was made (recipes/srlm_search.py's docstring lists the choices).

Determinism: every prompt has its own seed (:func:`psr.seeds.derive_seed` of ``(seed, question
id, "srlm_policy")`` and ``(seed, question id, "srlm_judge", i)``), and questions run in fixed
groups of ``questions_in_flight`` (two Generator calls per group: all solutions, then all scoring
prompts), so a resumed run sends the backend the same batches as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from psr.generation.base import Completion, Generator, SamplingParams
from psr.prompts import chat, fill, reasoning_prompt
from psr.search import Question, run_in_groups, summary_head
from psr.seeds import derive_seed

log = logging.getLogger(__name__)

# Yuan et al. (2024), Figure 2: the LLM-as-a-Judge prompt for scoring a whole response. Verbatim
# from shared/paper/srlm_judge_prompt.md; {prompt} = the question, {response} = the whole solution.
SRLM_JUDGE_PROMPT = """Review the user's question and the corresponding response using the additive 5-point scoring system described below. Points are accumulated based on the satisfaction of each criterion:

- Add 1 point if the response is relevant and provides some information related to the user's inquiry, even if it is incomplete or contains some irrelevant content.
- Add another point if the response addresses a substantial portion of the user's question, but does not completely resolve the query or provide a direct answer.
- Award a third point if the response answers the basic elements of the user's question in a useful way, regardless of whether it seems to have been written by an AI Assistant or if it has elements typically found in blogs or search results.
- Grant a fourth point if the response is clearly written from an AI Assistant's perspective, addressing the user's question directly and comprehensively, and is well-organized and helpful, even if there is slight room for improvement in clarity, conciseness or focus.
- Bestow a fifth point for a response that is impeccably tailored to the user's question by an AI Assistant, without extraneous information, reflecting expert knowledge, and demonstrating a high-quality, engaging, and insightful answer.

User: {prompt}
<response>{response}</response>

After examining the user's instruction and the response:

- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Score: <total points>"

Remember to assess from the AI Assistant perspective, utilizing web search knowledge as necessary. To evaluate the response in alignment with this additive scoring model, we'll systematically attribute points based on the outlined criteria."""

# A marker that identifies a scoring prompt (e.g. for scripted generators in tests).
SRLM_JUDGE_MARK = "Review the user's question and the corresponding response using the additive 5-point scoring system"

MAX_SCORE = 5.0
# "Score:" (case-sensitive, not part of a longer word), optional spaces, then a plain decimal
# number (digits, optionally "." digits) that is not followed by more digits, letters or a ".digit".
# Markdown bold ("**Score:** 4", "Score: **4**") is tolerated; "4/5" reads as 4; "score: 4" (lower
# case) and a score on the next line are not the requested format and count as missing.
SCORE_RE = re.compile(r"(?<![A-Za-z])Score:(?:\*\*)?[ \t]{0,3}(?:\*\*)?(\d{1,3}(?:\.\d{1,3})?)(?![\d.]*\d)(?![A-Za-z])")

STAT_KEYS = (
    "responses",
    "empty_responses",
    "judge_calls",
    "unparseable_scores",
    "unscored_responses",
    "pairs",
    "tokens_policy",
    "tokens_judge",
    "tokens_generated",
)
NO_PAIR_REASONS = ("fewer_than_two_scored", "all_scores_equal", "identical_texts")


def srlm_judge_prompt(question: str, response: str) -> str:
    """:data:`SRLM_JUDGE_PROMPT` with ``{prompt}`` = ``question`` and ``{response}`` = the whole
    solution (one-pass substitution: text in the solution that looks like a slot stays as is)."""
    return fill(SRLM_JUDGE_PROMPT, {"prompt": question.strip(), "response": response.strip()})


def parse_score(text: Any) -> Optional[float]:
    """The score of one judge output: the last ``Score: <n>`` with ``0 <= n <= 5``, else None
    (missing). Never evaluates the text."""
    if not isinstance(text, str):
        return None
    matches = SCORE_RE.findall(text)
    if not matches:
        return None
    value = float(matches[-1])
    if not math.isfinite(value) or value < 0 or value > MAX_SCORE:
        return None
    return value


def mean_score(scores: Sequence[Optional[float]]) -> Optional[float]:
    """Mean of the parsed scores (None entries are missing and skipped); None when none parsed."""
    got = [s for s in scores if s is not None]
    return sum(got) / len(got) if got else None


@dataclass(frozen=True)
class PairChoice:
    chosen: Optional[int]  # index of the chosen response, None when no pair
    rejected: Optional[int]
    reason: Optional[str] = None  # one of NO_PAIR_REASONS when there is no pair


def choose_pair(scores: Sequence[Optional[float]], texts: Optional[Sequence[str]] = None) -> PairChoice:
    """Highest- vs lowest-scoring response (ties to the lowest index). ``scores[i]`` None =
    unscored (excluded). No pair (``reason``) with fewer than two scored responses, when every
    score is equal, or when ``texts`` are given and the two texts are equal after stripping."""
    scored = [(i, s) for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return PairChoice(None, None, "fewer_than_two_scored")
    hi = max(s for _, s in scored)
    lo = min(s for _, s in scored)
    if hi == lo:
        return PairChoice(None, None, "all_scores_equal")
    best = next(i for i, s in scored if s == hi)
    worst = next(i for i, s in scored if s == lo)
    if texts is not None and texts[best].strip() == texts[worst].strip():
        return PairChoice(None, None, "identical_texts")
    return PairChoice(best, worst)


@dataclass
class SRLMConfig:
    """Settings of the solution-level self-rewarding round (Yuan et al.: N=4, K=3)."""

    num_samples: int = 4  # N: whole solutions sampled per question
    score_samples: int = 3  # K: scoring prompts sampled per solution (scores averaged)
    temperature: float = 0.5  # solution sampling (the paper's PSRLM search uses T=0.5, top_p=0.95)
    top_p: float = 0.95
    judge_temperature: Optional[float] = None  # None: same as temperature
    judge_top_p: Optional[float] = None  # None: same as top_p
    max_new_tokens_solution: int = 1024
    max_new_tokens_judge: int = 512
    questions_in_flight: int = 16
    seed: int = 0
    trace_judge_text: bool = False  # keep every raw judge output in the trace (else unparseable ones only)

    def __post_init__(self) -> None:
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 (a pair needs two solutions), got {self.num_samples}")
        for k in ("score_samples", "max_new_tokens_solution", "max_new_tokens_judge", "questions_in_flight"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        # SamplingParams validates temperature / top_p
        self.policy_params()
        self.judge_params()

    @classmethod
    def from_mapping(cls, m: Any) -> "SRLMConfig":
        """An SRLMConfig from an SRLMConfig, a dict or an omegaconf config (other keys ignored)."""
        from psr.config import dataclass_from_mapping

        return dataclass_from_mapping(cls, m)

    def policy_params(self) -> SamplingParams:
        return SamplingParams(n=self.num_samples, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens_solution)

    def judge_params(self) -> SamplingParams:
        t = self.temperature if self.judge_temperature is None else self.judge_temperature
        p = self.top_p if self.judge_top_p is None else self.judge_top_p
        return SamplingParams(n=self.score_samples, temperature=t, top_p=p, max_new_tokens=self.max_new_tokens_judge)

    def token_budget(self, questions: int) -> int:
        """The most tokens a run over ``questions`` questions generates (what backend=auto is given)."""
        n = self.num_samples
        return int(questions) * (n * self.max_new_tokens_solution + n * self.score_samples * self.max_new_tokens_judge)


@dataclass
class SRLMResult:
    id: str
    question: str
    status: str = "ok"  # "ok" or "error"
    responses: list[dict] = field(default_factory=list)  # text, n_tokens, finish_reason, scores, score
    chosen: Optional[int] = None
    rejected: Optional[int] = None
    no_pair_reason: Optional[str] = None
    stats: dict = field(default_factory=dict)
    error: Optional[str] = None
    meta: dict = field(default_factory=dict)

    def pair_record(self) -> Optional[dict]:
        """The step_dpo input record (Step-DPO fields, the whole solution as the response), or None."""
        if self.status != "ok" or self.chosen is None:
            return None
        c, r = self.responses[self.chosen], self.responses[self.rejected]
        return {
            "id": f"{self.id}/srlm",
            "question_id": self.id,
            "prompt": self.question,
            "initial_reason_steps": "",
            "chosen": c["text"],
            "rejected": r["text"],
            "chosen_score": c["score"],
            "rejected_score": r["score"],
            "scores": [x["score"] for x in self.responses],
            "method": "srlm",
        }

    def trace_record(self) -> dict:
        return {
            "id": self.id,
            "question": self.question,
            "status": self.status,
            "error": self.error,
            "responses": self.responses,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "no_pair_reason": self.no_pair_reason,
            "stats": self.stats,
            "meta": self.meta,
        }

    @classmethod
    def from_trace(cls, rec: dict) -> "SRLMResult":
        return cls(id=rec["id"], question=rec["question"], status=rec["status"],
                   responses=list(rec.get("responses") or []), chosen=rec.get("chosen"),
                   rejected=rec.get("rejected"), no_pair_reason=rec.get("no_pair_reason"),
                   stats=dict(rec.get("stats") or {}), error=rec.get("error"), meta=dict(rec.get("meta") or {}))


def _error_result(q: Question, exc: BaseException) -> SRLMResult:
    return SRLMResult(id=q.id, question=q.text, status="error", error=f"{type(exc).__name__}: {exc}",
                      stats={k: 0 for k in STAT_KEYS}, meta=dict(q.meta))


def _finish(q: Question, comps: Sequence[Completion], judged: dict[int, Sequence[Completion]],
            cfg: SRLMConfig) -> SRLMResult:
    stats = Counter({k: 0 for k in STAT_KEYS})
    responses = []
    for i, c in enumerate(comps):
        stats["responses"] += 1
        stats["tokens_policy"] += int(c.n_tokens)
        entry = {"text": c.text, "n_tokens": int(c.n_tokens), "finish_reason": c.finish_reason,
                 "scores": [], "score": None}
        if i not in judged:
            stats["empty_responses"] += 1
        else:
            raw = []
            for j in judged[i]:
                stats["judge_calls"] += 1
                stats["tokens_judge"] += int(j.n_tokens)
                s = parse_score(j.text)
                entry["scores"].append(s)
                if s is None:
                    stats["unparseable_scores"] += 1
                if cfg.trace_judge_text or s is None:
                    raw.append(j.text)
            entry["score"] = mean_score(entry["scores"])
            if entry["score"] is None:
                stats["unscored_responses"] += 1
            if raw:
                entry["judge_text"] = raw
        responses.append(entry)
    choice = choose_pair([r["score"] for r in responses], [r["text"] for r in responses])
    stats["pairs"] = int(choice.chosen is not None)
    stats["tokens_generated"] = stats["tokens_policy"] + stats["tokens_judge"]
    return SRLMResult(id=q.id, question=q.text, responses=responses, chosen=choice.chosen,
                      rejected=choice.rejected, no_pair_reason=choice.reason, stats=dict(stats), meta=dict(q.meta))


def srlm_group(generator: Generator, questions: Sequence[Question], cfg: SRLMConfig) -> list[SRLMResult]:
    """One round for a group of questions: one Generator call with every question's policy prompt
    (``n = num_samples``), one with every non-empty solution's scoring prompt (``n = score_samples``).
    An exception raised by the Generator propagates (see :func:`srlm_group_safe`)."""
    tok = getattr(generator, "tokenizer", None)
    prompts = [chat(tok, reasoning_prompt(q.text)) for q in questions]
    seeds = [derive_seed(cfg.seed, q.id, "srlm_policy") for q in questions]
    outs = generator.generate(prompts, cfg.policy_params(), stops=[[] for _ in questions], seeds=seeds)
    if len(outs) != len(questions):
        raise RuntimeError(f"generator returned {len(outs)} results for {len(questions)} prompts")
    jreqs: list[tuple[int, int, str, int]] = []  # (question index, response index, prompt, seed)
    for qi, (q, comps) in enumerate(zip(questions, outs)):
        if len(comps) != cfg.num_samples:
            raise RuntimeError(f"generator returned {len(comps)} solutions for question {q.id!r}, "
                               f"asked for {cfg.num_samples}")
        for ri, c in enumerate(comps):
            if c.text.strip():
                jreqs.append((qi, ri, chat(tok, srlm_judge_prompt(q.text, c.text)),
                              derive_seed(cfg.seed, q.id, "srlm_judge", ri)))
    judged: list[dict[int, Sequence[Completion]]] = [{} for _ in questions]
    if jreqs:
        jouts = generator.generate([r[2] for r in jreqs], cfg.judge_params(), stops=[[] for _ in jreqs],
                                   seeds=[r[3] for r in jreqs])
        if len(jouts) != len(jreqs):
            raise RuntimeError(f"generator returned {len(jouts)} results for {len(jreqs)} scoring prompts")
        for (qi, ri, _, _), out in zip(jreqs, jouts):
            if len(out) != cfg.score_samples:
                raise RuntimeError(f"generator returned {len(out)} scores for one solution, asked for {cfg.score_samples}")
            judged[qi][ri] = out
    results = []
    for q, comps, j in zip(questions, outs, judged):
        try:
            results.append(_finish(q, comps, j, cfg))
        except Exception as e:  # noqa: BLE001 - one bad question must not stop the group
            results.append(_error_result(q, e))
    return results


def srlm_group_safe(generator: Generator, questions: Sequence[Question], cfg: SRLMConfig) -> list[SRLMResult]:
    """:func:`srlm_group`, rerunning one question at a time when a batched call raises; a question
    that fails on its own gets an error result."""
    try:
        return srlm_group(generator, questions, cfg)
    except Exception as e:  # noqa: BLE001
        if len(questions) == 1:
            log.warning("question %s failed: %s: %s", questions[0].id, type(e).__name__, e)
            return [_error_result(questions[0], e)]
        log.warning("a batched call failed (%s: %s); rerunning the group one question at a time", type(e).__name__, e)
        out = []
        for q in questions:
            out += srlm_group_safe(generator, [q], cfg)
        return out


def run_srlm(generator: Generator, questions: Iterable[Any], cfg: Any = None, skip_ids: Iterable[str] = (),
             on_group: Optional[Callable[[list[SRLMResult]], None]] = None) -> Iterator[SRLMResult]:
    """Every question's round, yielded in input order, group by group (fixed groups of
    ``questions_in_flight``; a group whose ids are all in ``skip_ids`` is skipped, a partly done
    one is recomputed whole and only its other ids are yielded)."""
    cfg = SRLMConfig.from_mapping(cfg)
    yield from run_in_groups(lambda group: srlm_group_safe(generator, group, cfg), questions,
                             cfg.questions_in_flight, skip_ids, on_group)


def summarize(results: Iterable[SRLMResult]) -> dict:
    """Totals of the statistics over the ok questions, why questions gave no pair, failed ids, and
    the spread of the solution scores (how often the judge could not tell solutions apart)."""
    ok, head = summary_head(list(results), STAT_KEYS)
    totals = head["totals"]
    scores = Counter()
    for r in ok:
        for x in r.responses:
            if x.get("score") is not None:
                scores[f"{x['score']:g}"] += 1
    return {
        **head,
        "no_pair_reasons": {k: sum(r.no_pair_reason == k for r in ok) for k in NO_PAIR_REASONS},
        "unparseable_score_rate": totals["unparseable_scores"] / totals["judge_calls"] if totals["judge_calls"] else 0.0,
        "solution_score_hist": dict(sorted(scores.items(), key=lambda kv: float(kv[0]))),
    }


# --------------------------------------------------------------------------- the SRLM M1's judge data

CORRECT_SCORE = 5
WRONG_SCORE = 2
CORRECT_JUSTIFICATION = ("The response addresses the question directly, reasons step by step without an error, "
                         "and reaches the correct final answer in the requested boxed form.")
WRONG_JUSTIFICATION = ("The response is relevant and addresses a substantial part of the question, but a step of "
                       "its reasoning is wrong, so its final answer is not correct.")


def scoring_judgment(score: int, justification: str) -> str:
    """The judge's target text: the justification, then ``Score: n`` (which :func:`parse_score`
    reads back as ``n``)."""
    if not isinstance(score, int) or isinstance(score, bool) or not 0 <= score <= MAX_SCORE:
        raise ValueError(f"score must be an integer in 0..{int(MAX_SCORE)}, got {score!r}")
    if not justification.strip():
        raise ValueError("justification is empty")
    return f"{justification.strip()}\nScore: {score}"  # the last "Score:" of the text: parse_score reads n


def scoring_eft_record(tok: Any, id: str, question: str, solution: str, score: int, justification: str) -> dict:
    """One TEXT record for eft_ift_sft (``{id, prompt, response}`` + ``score``): the chat-formatted
    scoring prompt for ``solution`` and its judgment."""
    if not solution.strip():
        raise ValueError(f"{id}: empty solution")
    return {"id": str(id), "prompt": chat(tok, srlm_judge_prompt(question, solution)),
            "response": scoring_judgment(score, justification), "score": score}


def templated_scoring_records(tok: Any, items: Iterable[dict], id_prefix: str = "srlm_eft") -> list[dict]:
    """TEXT records from ``items`` ``{id, question, solution, correct}`` (``correct`` a bool):
    :data:`CORRECT_SCORE` / :data:`WRONG_SCORE` with the fixed justifications. A bad item raises
    ValueError naming its position and field."""
    out = []
    for k, it in enumerate(items):
        for f in ("id", "question", "solution", "correct"):
            if f not in it:
                raise ValueError(f"item {k}: missing field {f!r}")
        if not isinstance(it["correct"], bool):
            raise ValueError(f"item {k}: field 'correct' must be true or false, got {it['correct']!r}")
        ok = it["correct"]
        out.append(scoring_eft_record(tok, f"{id_prefix}/{it['id']}", it["question"], it["solution"],
                                      CORRECT_SCORE if ok else WRONG_SCORE,
                                      CORRECT_JUSTIFICATION if ok else WRONG_JUSTIFICATION))
    return out
