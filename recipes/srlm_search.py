r"""srlm_search: the SRLM baseline's preference data (Yuan et al. 2024; the paper's Tables 1-2
baseline). The model samples N whole solutions per question, scores each one itself with Yuan et
al.'s additive 5-point prompt, and the highest- vs lowest-scoring solution becomes a DPO pair that
recipes/step_dpo.py trains on unchanged (a whole response is one "step" after the question).

Launch::

    python recipes/srlm_search.py --config configs/tiny/srlm_search.yaml output_dir=/tmp/srlm
    psr run srlm_search --config tiny/srlm_search output_dir=/tmp/srlm
    psr run --nproc_per_node 2 srlm_search --config tiny/srlm_search output_dir=/tmp/srlm
    psr run srlm_search --config arith/srlm_search model_dir=<M_i> questions=<iter_i questions.jsonl> \\
        output_dir=/tmp/srlm_i
    PYTHONPATH=. tune run recipes/srlm_search.py --config configs/tiny/srlm_search.yaml output_dir=/tmp/srlm
    # then DPO on whole responses, the same trainer as PSRLM:
    psr run step_dpo --config arith/step_dpo model_dir=<M_i> pairs=/tmp/srlm_i/pairs.jsonl output_dir=<M_i+1>

Settings: the round's own (num_samples, score_samples, temperature, max_new_tokens_solution, ...)
are the ``search`` block, psr.srlm.SRLMConfig with its defaults (``search.num_samples=4``).
``tiny=true`` (configs/tiny) builds a random tiny model under output_dir when ``model_dir`` is unset.

The method (psr/srlm.py has the rules with their edge cases): policy prompt = chat(Figure 4 with
the question), ``search.num_samples`` solutions (N=4 in Yuan et al.); each non-empty solution scored
``search.score_samples`` times (K=3 in Yuan et al.) with the scoring prompt of
``shared/paper/srlm_judge_prompt.md`` verbatim; a solution's score is the mean of its parsed
``Score: n`` values (an unparseable score is missing and counted); pair = highest vs lowest
(lowest index on ties); no pair when every score is equal, fewer than two solutions got a score, or
the two texts are the same.

Sampling defaults are the paper's PSRLM search settings (T=0.5, top_p=0.95), not Yuan et al.'s
(T=0.7, top_p=0.9), so that both methods sample their policy the same way; the scoring prompts
are sampled at the same temperature (``search.judge_temperature`` to change it) -- K samples at T=0
would all be the same score.

How the paper initialised SRLM's M1 (§3-4, and where it is silent, the choice made here)
------------------------------------------------------------------------------------------
What the paper says: M0 is the base model; PSRLM's M1 is M0 after SFT on "EFT + IFT" (28,889
IFT + 4,179 EFT samples, 3 epochs, lr 1e-6, batch 32). For SRLM it says only that "the
initialization with different EFT data lead[s] to different M1 fiducial performance in the two
methods" (§5.1, which is why Table 2 reports M1->M4 deltas) and that "for all solution-scoring
judgment strategy experiments, we use the same prompt template of Yuan et al. (2024)" (§4). So
SRLM's M1 is also an SFT of M0 on IFT + EFT, with the *same* IFT data and an EFT set of
solution-scoring judgments in Yuan et al.'s format instead of the step-wise pairwise ones; SRLM's
iterations then use the same question counts (400/800/1,200 from NuminaMath train).

Where the paper is silent (how SRLM's EFT data was made, its size, the SFT settings of the SRLM
M1, N, K and the sampling temperatures), this project chooses:

* EFT for SRLM: the scoring prompt above filled with a question and a whole solution, the target
  a short justification ending in ``Score: n``; solutions and labels from the same sources as
  PSRLM's EFT (the same questions; the PSRLM PRM / teacher, or the exact checker in the arith
  world, deciding correctness: a correct solution gets the high score, a wrong one a low score),
  about as many records as PSRLM's EFT so the two M1s see the same number of judge examples;
* the same IFT records, the same SFT recipe and settings (eft_ift_sft: 3 epochs, lr 1e-6,
  batch 32), from the same M0;
* N=4 and K=3 as Yuan et al.; T=0.5 / top_p 0.95 as PSRLM's search (above; psr.srlm.SRLMConfig's
  defaults, the recipe's ``search`` block);
* step_dpo with the same β, lr and epochs as the PSRLM iterations.

``psr.srlm.templated_scoring_records`` writes such EFT records (TEXT records for eft_ift_sft's
``text_data``) from solutions with a known correctness label; choosing those solutions and the
pipeline's ``method: srlm`` wiring are outside this recipe.

Input: ``questions`` -- a jsonl with ``id`` and ``problem`` (or ``question``) per line (a relative
path is looked up as given, then under ``data_dir`` / ``$PSR_DATA_DIR`` / ``../shared/data``);
``builtin:N`` for N generated arithmetic questions; or a hub dataset with ``hub_dataset=...``.

Output (``output_dir``):

* ``pairs.jsonl`` -- one pair per question that has one (the step_dpo input, Step-DPO fields):
  ``id`` (``<question id>/srlm``), ``question_id``, ``prompt`` (the question),
  ``initial_reason_steps`` (``""``), ``chosen`` / ``rejected`` (the whole solutions as
  generated), ``chosen_score``, ``rejected_score``, ``scores`` (every solution's mean score, null
  = unscored), ``method`` (``"srlm"``).
* ``trace.jsonl`` -- one record per question: every solution with its K scores and mean, the
  pair's indices or ``no_pair_reason``, raw judge text of unparseable scores, statistics.
* ``summary.json`` / ``summary.md`` -- pairs, questions without a pair and why, unparseable
  scores, the histogram of solution scores, tokens generated (policy + judge: the budget to
  compare with step_search's), wall time, backend name and version, failed and skipped questions.
* ``failures.jsonl`` -- the ids and errors of failed questions (empty when none failed).
* ``manifest.json`` -- what made the output dir (psr/outputs.py): the result-changing settings,
  the scoring prompt's hash, the model's and the questions file's identity. A re-run with other
  settings is refused naming the keys that differ (``overwrite=true`` replaces the dir).
* ``shards/rank<r>.jsonl`` -- the per-rank working files (one line per finished question).

Sharding, resume and failures work as in recipes/step_search.py: rank ``r`` of ``W`` takes
questions ``r, r+W, ...``; finished ids are skipped on a re-run; a group of ``search.questions_in_flight``
questions that is not completely written is recomputed whole (same batches, same seeds, so the
resumed output is byte-identical); rank 0 merges the shards in input order. A failed question is
kept as a ``status: error`` record, listed in ``failures.jsonl``, and the run exits with status 1
after writing everything else; the same command retries it (``retry_failed=false`` keeps it). A
malformed input line is an error naming file:line (``skip_bad_lines=true`` skips it); a record
without an id or text, or with a duplicate id, is skipped and listed in the summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf

from psr import distributed as psr_dist
from psr import outputs as O
from psr.config import ConfigError, recipe_main, settings
from psr.data.jsonl import DataError, JsonlAppender, json_error, malformed, read_jsonl_tolerant, write_jsonl
from psr.data.paths import resolve_data_path
from psr.search import Question
from psr.srlm import SRLM_JUDGE_PROMPT, SRLMConfig, SRLMResult, run_srlm, summarize

log = logging.getLogger("srlm_search")


@dataclass
class SrlmSearchConfig(O.RunKeys):
    output_dir: str = MISSING
    # HF model dir of the policy/judge model (an input: read-only). Unset with tiny=true: a random
    # tiny model is built at output_dir/tiny_model.
    model_dir: Optional[str] = None
    # true: build a random tiny model under output_dir when model_dir is unset (tests, smoke runs,
    # configs/tiny); a model_dir given is used read-only.
    tiny: bool = False
    # Questions: jsonl path (id + problem/question), or "builtin:N" (N generated arithmetic questions).
    questions: Optional[str] = None
    # Where relative question paths are looked up when not found as given (default: $PSR_DATA_DIR or ../shared/data).
    data_dir: Optional[str] = None
    # A hub dataset instead of `questions` (datasets.load_dataset(hub_dataset, hub_config, split=hub_split)).
    hub_dataset: Optional[str] = None
    hub_config: Optional[str] = None
    hub_split: str = "train"
    # Field names of the input records; question_field None = "problem", else "question".
    id_field: str = "id"
    question_field: Optional[str] = None
    # Only the first `limit` questions (after dropping bad lines), None = all.
    limit: Optional[int] = None
    # Generation backend: native | vllm | auto (psr.generation.factory's measured rule); device/dtype as make_generator.
    backend: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    # Extra keyword arguments for the backend (e.g. max_batch_size, gpu_memory_utilization).
    backend_kwargs: Any = field(default_factory=dict)
    # The SRLM round (Yuan et al.: N=4 solutions, K=3 scores each; sampling as PSRLM's search):
    # psr.srlm.SRLMConfig, whose defaults are the only ones (search.num_samples, search.score_samples,
    # search.temperature, search.top_p, search.judge_temperature / judge_top_p (null: as the
    # policy's), search.max_new_tokens_solution, search.max_new_tokens_judge,
    # search.questions_in_flight, search.trace_judge_text). search.seed follows `seed`.
    search: SRLMConfig = field(default_factory=lambda: SRLMConfig(seed="${seed}"))  # type: ignore[arg-type]
    # Seed of the round's sampling (search.seed) and of a tiny model.
    seed: int = 0
    # Retry questions recorded as errors by an earlier run (false: keep their error records).
    retry_failed: bool = True
    # torch CPU threads per process (None: torch's default).
    cpu_threads: Optional[int] = None
    # Seconds rank 0 waits for the other ranks to finish before merging (None = forever).
    merge_timeout_s: Optional[float] = None


# --------------------------------------------------------------------------- inputs


def _resolve_questions_path(cfg) -> Path:
    """The questions file (psr.data.paths: as given, else under data_dir / $PSR_DATA_DIR /
    ../shared/data); a missing one is an error naming the key and where it looked."""
    return resolve_data_path(cfg.questions, cfg.data_dir, key="questions")


def builtin_questions(n: int) -> list[dict]:
    """``n`` small arithmetic word problems (deterministic; the same as step_search's builtin)."""
    out = []
    for i in range(n):
        a, b, c = 3 + 7 * i % 17, 2 + 5 * i % 11, 2 + i % 4
        out.append(
            {
                "id": f"builtin-{i}",
                "problem": f"Sam has {a} apples and buys {b} bags with {c} apples each. How many apples does Sam have?",
                "answer": str(a + b * c),
            }
        )
    return out


def load_questions(cfg) -> tuple[list[Question], list[dict]]:
    """(questions in input order, skipped inputs as {where, reason})."""
    qfield = cfg.question_field
    skipped: list[dict] = []
    raw: list[tuple[str, Any]] = []  # (where, record)
    if cfg.hub_dataset:
        import datasets

        ds = datasets.load_dataset(cfg.hub_dataset, cfg.hub_config, split=cfg.hub_split)
        src = f"{cfg.hub_dataset}[{cfg.hub_split}]"
        for i, rec in enumerate(ds):
            rec = dict(rec)
            rec.setdefault(cfg.id_field, f"{cfg.hub_dataset}-{cfg.hub_split}-{i}")
            raw.append((f"{src}#{i}", rec))
    elif cfg.questions is None:
        raise ConfigError("questions: required (a jsonl path or builtin:N), or set hub_dataset=<name>")
    elif str(cfg.questions).startswith("builtin:"):
        try:
            n = int(str(cfg.questions).split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"questions={cfg.questions!r}: expected builtin:<number>") from None
        raw = [(f"builtin#{i}", r) for i, r in enumerate(builtin_questions(n))]
    else:
        path = _resolve_questions_path(cfg)
        for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                rec = None
                reason = f"not valid JSON ({json_error(e)})"
            else:
                reason = "" if isinstance(rec, dict) else f"expected a JSON object, got {type(rec).__name__}"
            if reason:  # an error naming file:line, unless skip_bad_lines (then reported and skipped)
                malformed(f"{path}:{n}", reason)
                skipped.append({"where": f"{path}:{n}", "reason": reason})
                continue
            raw.append((f"{path}:{n}", rec))
    questions: list[Question] = []
    seen: set[str] = set()
    for where, rec in raw:
        qid = rec.get(cfg.id_field)
        text = rec.get(qfield) if qfield else rec.get("problem", rec.get("question"))
        if qid is None or not isinstance(text, str) or not text.strip():
            reason = f"missing {cfg.id_field!r}" if qid is None else f"no non-empty {qfield or 'problem/question'!r} text"
            skipped.append({"where": where, "reason": reason})
            log.warning("skipping %s: %s", where, reason)
            continue
        qid = str(qid)
        if qid in seen:
            skipped.append({"where": where, "reason": f"duplicate id {qid!r}"})
            log.warning("skipping %s: duplicate id %r", where, qid)
            continue
        seen.add(qid)
        meta = {k: v for k, v in rec.items() if k not in (cfg.id_field, qfield, "problem", "question")}
        meta = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, type(None)))}
        questions.append(Question(id=qid, text=text, meta=meta))
    if not questions:
        first = "; ".join(f"{x['where']}: {x['reason']}" for x in skipped[:3])
        raise DataError(f"no usable questions in {cfg.questions or cfg.hub_dataset}" + (f" ({first})" if first else ""))
    if cfg.limit is not None:
        questions = questions[: cfg.limit]
    return questions, skipped


# --------------------------------------------------------------------------- helpers


def srlm_config(cfg) -> SRLMConfig:
    return settings(SRLMConfig, cfg.search, "search")


def validate(cfg) -> SRLMConfig:
    """Every setting and input, before anything is loaded or written (one-line errors)."""
    O.check_output_dir(cfg.output_dir)
    O.check_positive(cfg, *(f"search.{k}" for k in ("num_samples", "score_samples", "max_new_tokens_solution",
                                                      "max_new_tokens_judge", "questions_in_flight")))
    O.check_positive(cfg, "limit", allow_none=True)
    O.check_temperature(cfg, "search.temperature", "search.judge_temperature")
    O.check_probability(cfg, "search.top_p", "search.judge_top_p", open_low=True)
    scfg = srlm_config(cfg)
    if cfg.backend not in ("native", "vllm", "auto"):
        raise ConfigError(f"backend must be native, vllm or auto, got {cfg.backend!r}")
    if not cfg.model_dir and not cfg.tiny:
        raise ConfigError("model_dir: required (or tiny=true to build a random tiny model)")
    if cfg.model_dir:
        O.check_model_dir(cfg.model_dir)
    if cfg.hub_dataset is None:
        if cfg.questions is None:
            raise ConfigError("questions: required (a jsonl path or builtin:N), or set hub_dataset=<name>")
        if not str(cfg.questions).startswith("builtin:"):
            O.check_input_file(_resolve_questions_path(cfg), "questions")
    return scfg


def check_context(cfg, model_dir: str, tok: Any, questions: list[Question]) -> None:
    """Refuse settings whose longest scoring prompt cannot fit the model: chat(scoring prompt with
    the longest question) + ``max_new_tokens_solution`` (the solution inside it) +
    ``max_new_tokens_judge`` must be within ``max_position_embeddings`` of ``model_dir``'s
    config.json. Yuan et al.'s prompt is ~800 tokens for a tokenizer that never saw it (the arith
    world's BPE, 512 positions): without this check the model would silently score garbage.
    Run before the generator is built (an engine start is not spent on settings that cannot work)."""
    path = Path(model_dir) / "config.json"
    if tok is None or not questions or not path.is_file():
        return
    from psr.prompts import chat
    from psr.srlm import srlm_judge_prompt

    limit = json.loads(path.read_text()).get("max_position_embeddings")
    if not isinstance(limit, int):
        return
    q = max(questions, key=lambda x: len(x.text)).text

    def n_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    prompt = n_tokens(chat(tok, srlm_judge_prompt(q, "")))  # the policy prompt is shorter
    sol, jud = cfg.search.max_new_tokens_solution, cfg.search.max_new_tokens_judge
    judge = prompt + sol + jud
    if judge > limit:
        raise ConfigError(
            f"the scoring prompt with the longest question is {prompt} tokens; + search.max_new_tokens_solution={sol} + "
            f"search.max_new_tokens_judge={jud} = {judge} > max_position_embeddings={limit} of {path}: lower those keys "
            f"or use a model whose context (and tokenizer) fits Yuan et al.'s prompt")


def _shard_records(shard_dir: Path) -> list[dict]:
    recs = []
    for p in sorted(shard_dir.glob("rank*.jsonl")):
        recs += read_jsonl_tolerant(p)
    return recs


def _done_ids(recs: list[dict], retry_failed: bool) -> set[str]:
    return {r["id"] for r in recs if r.get("status") == "ok" or not retry_failed}


def _prepare_model(cfg, out: Path) -> str:
    if cfg.model_dir:
        return cfg.model_dir
    path = out / "tiny_model"
    if psr_dist.is_rank0():
        from psr.models.tiny import build_tiny_model_dir

        build_tiny_model_dir(path, seed=cfg.seed)
    psr_dist.barrier()
    return str(path)


def _run_token() -> str:
    token = uuid.uuid4().hex if psr_dist.is_rank0() else ""
    return psr_dist.all_gather_objects(token)[0]


# --------------------------------------------------------------------------- main


def main(cfg) -> dict | None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    scfg = validate(cfg)
    if cfg.cpu_threads:
        import torch

        torch.set_num_threads(int(cfg.cpu_threads))
    out = Path(cfg.output_dir)
    device = psr_dist.default_device(cfg.device)
    psr_dist.init_distributed(device)
    rank, world = psr_dist.get_rank(), psr_dist.get_world_size()
    tiny = not cfg.model_dir  # validate: then tiny=true, the model is built in output_dir
    qfile = None
    if cfg.hub_dataset is None and not str(cfg.questions).startswith("builtin:"):
        qfile = _resolve_questions_path(cfg)
    O.claim_output_dir(
        "srlm_search", cfg, models={} if tiny else {"model_dir": cfg.model_dir}, inputs={"questions": qfile},
        ignore={"model_dir", "tiny", "questions"}, data_dirs={"data_dir": cfg.data_dir} if cfg.data_dir else None,
        extra={"model": f"tiny (seed {cfg.seed}), built in output_dir" if tiny else "model_dir",
               "questions": cfg.questions if qfile is None else "file",
               "judge_prompt_sha256": hashlib.sha256(SRLM_JUDGE_PROMPT.encode()).hexdigest()[:16]})
    questions, skipped = load_questions(cfg)
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    token = _run_token()
    model_dir = _prepare_model(cfg, out)
    mine = psr_dist.shard(questions, rank, world)

    if (Path(model_dir) / "config.json").is_file():  # every rank, all questions: the same verdict everywhere
        from psr.models.hf import load_tokenizer

        check_context(cfg, model_dir, load_tokenizer(model_dir), questions)
    appender = JsonlAppender(shard_dir / f"rank{rank}.jsonl")  # trims a torn last line
    psr_dist.barrier()
    done = _done_ids(_shard_records(shard_dir), cfg.retry_failed)
    todo = [q for q in mine if q.id not in done]
    psr_dist.print0(
        f"srlm_search: {len(questions)} questions ({len(skipped)} skipped inputs), world {world}, "
        f"rank 0 has {len(mine)} ({len(mine) - len(todo)} already done), N={scfg.num_samples}, K={scfg.score_samples}"
    )

    backend_name, backend_version, n_failed, tokens_now = "", "", 0, 0
    if todo:
        from psr.generation.factory import make_generator

        gen = make_generator(cfg.backend, model_dir, device=cfg.device, dtype=cfg.dtype,
                             expected_tokens=scfg.token_budget(len(todo)), stage="search",
                             **OmegaConf.to_container(cfg.backend_kwargs, resolve=True))
        backend_name, backend_version = gen.name, gen.version
        bar = None
        if psr_dist.is_rank0():
            from tqdm import tqdm

            bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="questions", file=sys.stderr)
        try:
            for r in run_srlm(gen, mine, scfg, skip_ids=done):
                rec = r.trace_record()
                pair = r.pair_record()
                rec["pairs"] = [pair] if pair is not None else []
                appender.write(rec)
                tokens_now += int(r.stats.get("tokens_generated", 0))
                if r.status != "ok":
                    n_failed += 1
                    log.error("question %s failed and is skipped: %s", r.id, r.error)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            gen.close()
    appender.close()
    (shard_dir / f"rank{rank}.done.json").write_text(
        json.dumps({"token": token, "backend": backend_name, "backend_version": backend_version,
                    "wall_time_s": time.time() - t0, "tokens_generated": tokens_now,
                    "questions_run": len(todo), "failed": n_failed})
    )
    summary = None
    if psr_dist.is_rank0():
        metas = _wait_for_ranks(shard_dir, world, token, cfg.merge_timeout_s)
        summary = merge(cfg, out, questions, skipped, metas, time.time() - t0)
    # No collective here: ranks finish at different times; rank 0 waited on the done-markers.
    psr_dist.destroy()
    if summary is not None:
        sr = summary["srlm"]
        line = (f"{summary['pairs']} pairs from {sr['questions_ok']} of {len(questions)} questions "
                f"(no pair: {sr['no_pair_reasons']}) -> {out / 'pairs.jsonl'}, {out / 'trace.jsonl'}, "
                f"{out / 'summary.md'}")
        O.finish("srlm_search", line)
        if sr["questions_failed"]:
            err = O.RunFailed(f"srlm_search: {sr['questions_failed']} of {len(questions)} questions failed (reasons "
                              f"in {out / 'failures.jsonl'}); everything else is written; the same command retries them")
            err.summary = summary  # type: ignore[attr-defined]
            raise err
    elif n_failed:
        raise O.RunFailed(f"srlm_search: {n_failed} questions of rank {rank} failed (see rank 0's failures.jsonl)")
    return summary


def _wait_for_ranks(shard_dir: Path, world: int, token: str, timeout: Optional[float]) -> list[dict]:
    """Every rank's done marker of this run (file-based: no collective that could time out)."""
    start = time.time()
    while True:
        metas = []
        for r in range(world):
            p = shard_dir / f"rank{r}.done.json"
            try:
                m = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                break
            if m.get("token") != token:
                break
            metas.append(m)
        if len(metas) == world:
            return metas
        if timeout is not None and time.time() - start > timeout:
            raise RuntimeError(f"rank 0 waited {timeout}s for the other ranks' markers in {shard_dir}")
        time.sleep(0.5)


def merge(cfg, out: Path, questions: list[Question], skipped: list[dict], metas: list[dict], wall: float) -> dict:
    """Merge the shard files into pairs.jsonl, trace.jsonl and the summary (input order, one
    record per id: an ok record wins over an error record of an earlier attempt)."""
    by_id: dict[str, dict] = {}
    for rec in _shard_records(out / "shards"):
        prev = by_id.get(rec["id"])
        if prev is None or (prev.get("status") != "ok" and rec.get("status") == "ok"):
            by_id[rec["id"]] = rec
    ordered = [by_id[q.id] for q in questions if q.id in by_id]
    pairs = [p for rec in ordered for p in rec.get("pairs", [])]
    write_jsonl(out / "pairs.jsonl", pairs)
    write_jsonl(out / "trace.jsonl", ({k: v for k, v in rec.items() if k != "pairs"} for rec in ordered))
    write_jsonl(out / "failures.jsonl", ({"id": rec["id"], "error": rec.get("error")} for rec in ordered
                                         if rec.get("status") != "ok"))
    srlm = summarize(SRLMResult.from_trace(rec) for rec in ordered)
    backends = sorted({(m["backend"], m["backend_version"]) for m in metas if m.get("backend")})
    tokens_now = sum(m.get("tokens_generated", 0) for m in metas)
    t = srlm["totals"]
    summary = {
        "method": "srlm",
        "model_dir": cfg.model_dir or "tiny",
        "backend": [b[0] for b in backends] or None,
        "backend_version": [b[1] for b in backends] or None,
        "world_size": len(metas),
        "questions_input": len(questions),
        "questions_written": len(ordered),
        "questions_missing": len(questions) - len(ordered),
        "skipped_inputs": skipped,
        "pairs": len(pairs),
        "pairs_per_question": len(pairs) / len(ordered) if ordered else 0.0,
        "no_pair_reasons": srlm["no_pair_reasons"],
        "judge_calls": t["judge_calls"],
        "unparseable_scores": t["unparseable_scores"],
        "unscored_responses": t["unscored_responses"],
        "empty_responses": t["empty_responses"],
        "tokens_generated": t["tokens_generated"],
        "wall_time_s": wall,
        "this_run": {
            "questions_searched": sum(m.get("questions_run", 0) for m in metas),
            "tokens_generated": tokens_now,
            "tokens_per_s": tokens_now / wall if wall > 0 else 0.0,
        },
        "srlm": srlm,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    (out / "summary.md").write_text(_markdown(summary))
    return summary


def _markdown(s: dict) -> str:
    t = s["srlm"]["totals"]
    rows = [
        ("questions written / input", f"{s['questions_written']} / {s['questions_input']}"),
        ("failed questions", f"{s['srlm']['questions_failed']} {s['srlm']['failed_ids'][:10]}"),
        ("skipped input lines", str(len(s["skipped_inputs"]))),
        ("pairs", str(s["pairs"])),
        ("questions without a pair (why)", json.dumps(s["no_pair_reasons"])),
        ("solutions (empty)", f"{t['responses']} ({t['empty_responses']})"),
        ("judge calls (unparseable scores)", f"{t['judge_calls']} ({t['unparseable_scores']})"),
        ("unscored solutions", str(t["unscored_responses"])),
        ("solution scores (histogram)", json.dumps(s["srlm"]["solution_score_hist"])),
        ("tokens generated (policy + judge)", f"{t['tokens_generated']} ({t['tokens_policy']} + {t['tokens_judge']})"),
        ("wall time (this run)", f"{s['wall_time_s']:.1f} s"),
        ("backend", f"{s['backend']} {s['backend_version']}"),
    ]
    lines = ["# srlm_search summary", "", f"model: {s['model_dir']}", "",
             "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    recipe_main(SrlmSearchConfig, main)
