"""step_search: the model samples each next step, judges its own candidates pairwise (paper §3.3)
and writes step preference pairs for step_dpo; ``search.mode=tts`` writes test-time-scaling answers.

Launch::

    python recipes/step_search.py --config configs/tiny/step_search.yaml output_dir=/tmp/search
    psr run step_search --config tiny/step_search output_dir=/tmp/search
    psr run --nproc_per_node 2 step_search --config tiny/step_search output_dir=/tmp/search
    psr run step_search --config qwen2_5_math_7b/step_search model_dir=/ckpt/M1 \\
        questions=/data/numinamath_400.jsonl output_dir=/runs/it1/search
    PYTHONPATH=. tune run recipes/step_search.py --config configs/tiny/step_search.yaml output_dir=/tmp/search
    psr run step_search --config tiny/step_search output_dir=/tmp/search search.width=4 search.mode=tts

Settings: the search's own (width, temperature, judge_orders, max_new_tokens_step, ...) are the
``search`` block, psr.search.SearchConfig with its defaults (``search.width=4`` on the command
line, or ``search: {width: 4}`` in the YAML; a misspelt key is refused with its name).
``tiny=true`` (configs/tiny) builds a random tiny model under output_dir when ``model_dir`` is
unset; a ``model_dir`` given is always an input, read-only.

Input: ``questions`` — a jsonl with ``id`` and ``problem`` (or ``question``) per line (a relative
path is looked up as given, then under ``data_dir`` / ``$PSR_DATA_DIR`` / ``../shared/data``);
``builtin:N`` for N generated arithmetic questions; or a hub dataset with ``hub_dataset=...``
(``hub_config``, ``hub_split``, ``id_field``, ``question_field``).

Output (``output_dir``):

* ``pairs.jsonl`` — one preference pair per accepted step (the step_dpo input): ``id``
  (``<question id>/step<l>``), ``question_id``, ``question``, ``prev_steps``, ``step``,
  ``chosen``/``rejected`` (``"Step l: body\\n"``), ``chosen_score``, ``rejected_score``,
  ``scores``, and the Step-DPO names ``prompt`` and ``initial_reason_steps``.
* ``trace.jsonl`` — one record per question: every candidate, comparison (verdict and source),
  score, keep/rollback decision, the final chain (``solution``) and the statistics.
* ``summary.json`` / ``summary.md`` — pairs per question, rollbacks, unparseable verdicts,
  tokens generated, wall time, backend name and version, failed and skipped questions.
* ``shards/rank<r>.jsonl`` — the per-rank working files (one line per finished question).

Sharding: rank ``r`` of ``W`` searches questions ``r, r+W, ...`` (distinct ids; a duplicate id in
the input is skipped and reported) and appends each finished question to its own shard file;
rank 0 merges the shards in input order when every rank is done.

Resume: run the same command again. ``manifest.json`` records the settings, the model's identity
and the questions file's (psr/outputs.py); a re-run with other settings is refused with the keys
that differ (``overwrite=true`` replaces the dir). Finished ids (from every shard file) are
skipped; a torn last line is dropped; a group of ``search.questions_in_flight`` questions that is not
completely written is recomputed whole, so with the same world size and settings the resumed
output is byte-identical to an uninterrupted run.

Failures: a question whose search fails is kept as a ``status: error`` record; the run writes
everything else, lists the failed ids and reasons in ``failures.jsonl`` and exits with status 1.
A re-run retries failed questions (``retry_failed=false`` keeps them as they are). A malformed
input line (not JSON) is an error naming file:line (``skip_bad_lines=true`` skips it); a record
without an id or text, or with a duplicate id, is skipped and listed in the summary.
"""

from __future__ import annotations

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
from psr.search import (
    Question,
    SearchConfig,
    pair_records,
    result_from_record,
    run_search,
    summarize,
    trace_record,
)

log = logging.getLogger("step_search")


@dataclass
class StepSearchConfig(O.RunKeys):
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
    # The search (paper §3.3 / §4: w=6, T=0.5, top_p=0.95, 20 iterations): psr.search.SearchConfig,
    # whose defaults are the only ones (search.width, search.temperature, search.top_p,
    # search.judge_temperature / judge_top_p (null: as the policy's), search.judge_orders (2: both
    # A/B orders per pair), search.max_iterations, search.max_steps, search.max_new_tokens_step,
    # search.max_new_tokens_judge, search.questions_in_flight (questions per generate call),
    # search.mode (pairs | tts), search.rollback_on_tie (null: on for pairs, off for tts),
    # search.rollback_on_identical (false: w identical candidates keep the step without a pair),
    # search.trace_judge_text). search.seed follows `seed`.
    search: SearchConfig = field(default_factory=lambda: SearchConfig(seed="${seed}"))  # type: ignore[arg-type]
    # Seed of the search's sampling (search.seed) and of a tiny model.
    seed: int = 0
    # Diagnostic, not the paper's method: an arith or bags problems jsonl (psr.arith, psr.bags) whose
    # exact checker answers the judge prompts instead of the model (psr.arith.CheckerJudged) -- what search +
    # DPO can do with a perfect judge. null: the model judges itself.
    checker_judge_problems: Optional[str] = None
    # Retry questions recorded as errors by an earlier run (false: keep their error records).
    retry_failed: bool = True
    # torch CPU threads per process (None: torch's default). 1 is fastest for tiny models and on a
    # shared machine, where extra threads only contend.
    cpu_threads: Optional[int] = None
    # Seconds rank 0 waits for the other ranks to finish before merging (None = forever).
    merge_timeout_s: Optional[float] = None


# --------------------------------------------------------------------------- inputs


def _resolve_questions_path(cfg) -> Path:
    """The questions file (psr.data.paths: as given, else under data_dir / $PSR_DATA_DIR /
    ../shared/data); a missing one is an error naming the key and where it looked."""
    return resolve_data_path(cfg.questions, cfg.data_dir, key="questions")


def builtin_questions(n: int) -> list[dict]:
    """``n`` small arithmetic word problems (deterministic), for smoke runs without data."""
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
        raise ConfigError("set questions=<jsonl path | builtin:N> or hub_dataset=<name>")
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


def search_config(cfg) -> SearchConfig:
    return settings(SearchConfig, cfg.search, "search")


def _shard_records(shard_dir: Path) -> list[dict]:
    recs = []
    for p in sorted(shard_dir.glob("rank*.jsonl")):
        recs += read_jsonl_tolerant(p)
    return recs


def _done_ids(recs: list[dict], retry_failed: bool) -> set[str]:
    return {r["id"] for r in recs if r.get("status") == "ok" or not retry_failed}


def validate(cfg) -> SearchConfig:
    """Every setting and input, before anything is loaded or written (one-line errors)."""
    O.check_output_dir(cfg.output_dir)
    O.check_positive(cfg, *(f"search.{k}" for k in ("width", "max_iterations", "max_steps", "max_new_tokens_step",
                                                      "max_new_tokens_judge", "questions_in_flight")))
    O.check_positive(cfg, "limit", allow_none=True)
    O.check_temperature(cfg, "search.temperature", "search.judge_temperature")
    O.check_probability(cfg, "search.top_p", "search.judge_top_p", open_low=True)
    scfg = search_config(cfg)
    if cfg.backend not in ("native", "vllm", "auto"):
        raise ConfigError(f"backend must be native, vllm or auto, got {cfg.backend!r}")
    if not cfg.model_dir and not cfg.tiny:
        raise ConfigError("model_dir: required (or tiny=true to build a random tiny model)")
    if cfg.model_dir:
        O.check_model_dir(cfg.model_dir)
    if cfg.hub_dataset is None:
        if cfg.questions is None:
            raise ConfigError("set questions=<jsonl path | builtin:N> or hub_dataset=<name>")
        if not str(cfg.questions).startswith("builtin:"):
            O.check_input_file(_resolve_questions_path(cfg), "questions")
    if cfg.checker_judge_problems:
        O.check_input_file(cfg.checker_judge_problems, "checker_judge_problems")
    return scfg


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
    device = psr_dist.default_device(cfg.device)
    psr_dist.init_distributed(device)
    rank, world = psr_dist.get_rank(), psr_dist.get_world_size()
    out = Path(cfg.output_dir)
    tiny = not cfg.model_dir  # validate: then tiny=true, the model is built in output_dir
    qfile = None
    if cfg.hub_dataset is None and not str(cfg.questions).startswith("builtin:"):
        qfile = _resolve_questions_path(cfg)
    O.claim_output_dir(
        "step_search", cfg, models={} if tiny else {"model_dir": cfg.model_dir},
        inputs={"questions": qfile, "checker_judge_problems": cfg.checker_judge_problems},
        ignore={"model_dir", "tiny", "questions", "checker_judge_problems"},
        data_dirs={"data_dir": cfg.data_dir} if cfg.data_dir else None,
        extra={"model": f"tiny (seed {cfg.seed}), built in output_dir" if tiny else "model_dir",
               "questions": cfg.questions if qfile is None else "file",
               "checker_judge": bool(cfg.checker_judge_problems)},
        saved="every finished question (shards/rank<r>.jsonl)")
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    token = _run_token()

    questions, skipped = load_questions(cfg)
    model_dir = _prepare_model(cfg, out)
    mine = psr_dist.shard(questions, rank, world)

    appender = JsonlAppender(shard_dir / f"rank{rank}.jsonl")  # trims a torn last line
    psr_dist.barrier()
    done = _done_ids(_shard_records(shard_dir), cfg.retry_failed)
    todo = [q for q in mine if q.id not in done]
    psr_dist.print0(
        f"step_search: {len(questions)} questions ({len(skipped)} skipped inputs), world {world}, "
        f"rank 0 has {len(mine)} ({len(mine) - len(todo)} already done), mode={scfg.mode}"
    )

    backend_name, backend_version, n_failed = "", "", 0
    tokens_now = 0
    if todo:
        from psr.generation.factory import make_generator

        # backend=auto picks by this rank's generated-token budget (psr.generation.factory)
        gen = make_generator(cfg.backend, model_dir, device=cfg.device, dtype=cfg.dtype,
                             expected_tokens=scfg.token_budget(len(todo)), stage="search",
                             **OmegaConf.to_container(cfg.backend_kwargs, resolve=True))
        if cfg.checker_judge_problems:
            from psr.bags.teacher import checker_judged

            gen = checker_judged(gen, cfg.checker_judge_problems)  # the file's world: arith or bags
            psr_dist.print0(f"step_search: judge = the exact checker on {cfg.checker_judge_problems} (diagnostic)")
        backend_name, backend_version = gen.name, gen.version
        bar = None
        if psr_dist.is_rank0():
            from tqdm import tqdm

            bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="questions", file=sys.stderr)
        try:
            for r in run_search(gen, mine, scfg, skip_ids=done):
                rec = trace_record(r)
                rec["pairs"] = pair_records(r)
                appender.write(rec)
                tokens_now += int(r.stats.get("tokens_generated", 0))
                if r.status != "ok":
                    n_failed += 1
                    log.error("question %s failed and is skipped: %s", r.id, r.error)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(pairs=len(rec["pairs"]))
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
    # No collective here: ranks finish their shards at different times (hours apart on uneven
    # data), and a barrier would time out; rank 0 waited on the done-markers instead.
    psr_dist.destroy()
    if summary is not None:
        sr = summary["search"]
        n_failed = sr["questions_failed"]
        what = f"{summary['pairs']} pairs" if scfg.mode == "pairs" else "answers"
        line = (f"{what} from {sr['questions_ok']} of {len(questions)} questions "
                f"({summary['pairs_per_question']:.2f} pairs per searched question) -> {out / 'pairs.jsonl'}, "
                f"{out / 'trace.jsonl'}, {out / 'summary.md'}")
        if n_failed:
            O.finish("step_search", line)
            err = O.RunFailed(f"step_search: {n_failed} of {len(questions)} questions failed (reasons in "
                             f"{out / 'failures.jsonl'}); everything else is written; the same command retries them")
            err.summary = summary  # type: ignore[attr-defined]
            raise err
        O.finish("step_search", line)
    elif n_failed:
        raise O.RunFailed(f"step_search: {n_failed} questions of rank {rank} failed (see rank 0's failures.jsonl)")
    return summary


def _wait_for_ranks(shard_dir: Path, world: int, token: str, timeout: Optional[float]) -> list[dict]:
    """Every rank's done marker of this run (file-based, so an unbalanced run cannot hit a
    collective timeout)."""
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
    results = [result_from_record(rec, rec.get("pairs", [])) for rec in ordered]
    search = summarize(results)
    backends = sorted({(m["backend"], m["backend_version"]) for m in metas if m.get("backend")})
    tokens_now = sum(m.get("tokens_generated", 0) for m in metas)
    summary = {
        "mode": cfg.search.mode,
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
        "rollbacks": search["totals"]["rollbacks"],
        "unparseable_verdicts": search["totals"]["unparseable_verdicts"],
        "judge_calls": search["totals"]["judge_calls"],
        "tokens_generated": search["totals"]["tokens_generated"],
        "wall_time_s": wall,
        "this_run": {
            "questions_searched": sum(m.get("questions_run", 0) for m in metas),
            "tokens_generated": tokens_now,
            "tokens_per_s": tokens_now / wall if wall > 0 else 0.0,
        },
        "search": search,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    (out / "summary.md").write_text(_markdown(summary))
    return summary


def _markdown(s: dict) -> str:
    t = s["search"]["totals"]
    rows = [
        ("questions written / input", f"{s['questions_written']} / {s['questions_input']}"),
        ("failed questions", f"{s['search']['questions_failed']} {s['search']['failed_ids'][:10]}"),
        ("skipped input lines", str(len(s["skipped_inputs"]))),
        ("pairs", str(s["pairs"])),
        ("pairs per question", f"{s['pairs_per_question']:.2f}"),
        ("pairs per question (histogram)", json.dumps(s["search"]["pairs_per_question_hist"])),
        ("stop reasons", json.dumps(s["search"]["stop_reasons"])),
        ("iterations", str(t["iterations"])),
        ("rollbacks (of which step-1 resamples)", f"{t['rollbacks']} ({t['resamples_step1']})"),
        ("judge calls", str(t["judge_calls"])),
        ("unparseable verdicts", str(t["unparseable_verdicts"])),
        ("identical / empty comparisons", f"{t['identical_comparisons']} / {t['empty_comparisons']}"),
        ("empty candidates", str(t["empty_candidates"])),
        ("tokens generated (policy + judge)", f"{t['tokens_generated']} ({t['tokens_policy']} + {t['tokens_judge']})"),
        ("wall time (this run)", f"{s['wall_time_s']:.1f} s"),
        ("backend", f"{s['backend']} {s['backend_version']}"),
    ]
    lines = ["# step_search summary", "", f"mode: {s['mode']}, model: {s['model_dir']}", "",
             "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    recipe_main(StepSearchConfig, main)
