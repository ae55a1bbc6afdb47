"""Build IFT data (paper §3.2): reference solutions divided into "Step n: " steps that end with
the boxed final answer, without altering any information of the original solution.

Launch (from the repository root):

    psr run ift_build --config tiny/ift_build output_dir=/tmp/ift            # rules mode, 200 GSM8k items
    psr run ift_build --config qwen2_5_math_7b/ift_build output_dir=/data/ift \
        teacher.base_url=http://127.0.0.1:8000/v1 teacher.model=Qwen2.5-72B-Instruct
    psr run --nproc_per_node 4 ift_build --config qwen2_5_math_7b/ift_build output_dir=/data/ift
    python recipes/ift_build.py --config configs/tiny/ift_build.yaml output_dir=/tmp/ift
    tune run recipes/ift_build.py --config configs/tiny/ift_build.yaml output_dir=/tmp/ift

Modes (``mode=``):
    rules    GSM8k-style solutions: one step per line, ``<<..>>`` calculator annotations removed,
             the ``#### x`` line / gold answer becomes the final step's ``\\boxed{x}``; prose (MATH,
             NuminaMath) solutions are cut at sentence / line ends outside math. See psr/ift.py.
    teacher  the Figure 3 prompt through ``teacher`` (any Generator ``_component_``: a local model
             via psr.generation.factory.make_generator, or an OpenAI-compatible endpoint via
             psr.generation.http.HttpGenerator). An answer is accepted only when it parses into
             "Step n:" steps that, whitespace aside, reproduce the original solution (exact
             rules, including how a boxed answer may be added to a GSM8k solution, in psr/ift.py).

Both modes check every record with the same validator; rejected ones go to rejects.jsonl with
the reason (psr.ift.REJECT_REASONS) and a detail.

Outputs (in ``output_dir``):
    ift.jsonl       {id, question, steps, answer, answer_appended}: the IFT records, in input order
    rejects.jsonl   {id, question, reason, detail, output}
    summary.json    counts: input, accepted, rejected by reason, answers appended
    work/           per-rank append-only files (ift.rank<r>.jsonl, rejects.rank<r>.jsonl)

Resumable: every record is appended (and flushed) as soon as it is decided; a restarted run
skips the ids already in work/ (or in the merged files) and rank 0 rewrites the merged files.
``manifest.json`` records the settings and the input file's identity (psr/outputs.py): a re-run
with other ones is refused with the keys that differ (``overwrite=true`` replaces the dir).
With torchrun each rank takes the questions whose id hashes to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING
from tqdm import tqdm

from psr import distributed as D
from psr import outputs as O
from psr.config import ConfigError, instantiate, recipe_main
from psr.data.jsonl import DataError, JsonlAppender, iter_jsonl, read_jsonl_tolerant, write_jsonl
from psr.data.paths import resolve_data_path
from psr.generation.base import SamplingParams
from psr.ift import (
    check_split,
    check_teacher_output,
    reference_solution,
    rules_segment,
)
from psr.prompts import chat, ift_split_prompt
from psr.seeds import stable_hash, stable_seed


@dataclass
class IftBuildConfig(O.RunKeys):
    output_dir: str = MISSING
    # rules | teacher (see the module docstring).
    mode: str = "rules"
    # Input jsonl (required, no default: the paper's source is NuminaMath-CoT, written by
    # `python -m psr.data.numina IN OUT`): absolute, or relative to the data dir: data_dir when
    # set, else $PSR_DATA_DIR, else ../shared/data (a relative data dir is taken from the repository root).
    input: str = MISSING
    data_dir: Optional[str] = None
    # Field names in the input records.
    id_key: str = "id"
    question_key: str = "problem"
    solution_key: str = "solution"
    # Gold final answer (used when the solution has no \\boxed answer, e.g. GSM8k); "" = none.
    answer_key: str = "answer"
    # Only the first `limit` input records (null = all).
    limit: Optional[int] = None
    # rules mode: auto | gsm8k (lines) | math (sentences); pieces shorter than min_step_chars
    # (non-space characters) are merged into the next one (math format only).
    rules_format: str = "auto"
    min_step_chars: int = 30
    # Remove GSM8k <<a*b=c>> calculator annotations before splitting (and before sending the
    # solution to the teacher); the steps must then reproduce the solution without them.
    strip_calculator_annotations: bool = True
    # teacher mode: a Generator _component_ (make_generator or HttpGenerator, see configs).
    teacher: Any = field(default_factory=dict)
    teacher_temperature: float = 0.0
    teacher_top_p: float = 1.0
    teacher_max_new_tokens: int = 2048
    # Records per teacher generate call (and per flush).
    batch_size: int = 64
    seed: int = 0


def validate(cfg) -> None:
    if cfg.mode not in ("rules", "teacher"):
        raise ConfigError(f"mode must be rules or teacher, got {cfg.mode!r}")
    if cfg.rules_format not in ("auto", "gsm8k", "math"):
        raise ConfigError(f"rules_format must be auto, gsm8k or math, got {cfg.rules_format!r}")
    if cfg.mode == "teacher" and not (cfg.teacher and "_component_" in cfg.teacher):
        raise ConfigError("mode=teacher needs a `teacher` block with a _component_ (a Generator)")
    O.check_output_dir(cfg.output_dir)
    O.check_positive(cfg, "batch_size", "teacher_max_new_tokens")
    O.check_positive(cfg, "limit", allow_none=True)
    O.check_non_negative(cfg, "min_step_chars")
    O.check_temperature(cfg, "teacher_temperature")
    O.check_probability(cfg, "teacher_top_p", open_low=True)
    O.check_input_file(resolve_data_path(cfg.input, cfg.data_dir, key="input"), "input")


def load_items(cfg) -> list[dict]:
    """The input records as {id, question, solution, answer}; bad records name file:line."""
    path = resolve_data_path(cfg.input, cfg.data_dir, key="input")
    keys = [cfg.id_key, cfg.question_key, cfg.solution_key]
    items, seen = [], {}
    for line, rec in iter_jsonl(path, required=keys):
        if cfg.limit is not None and len(items) >= cfg.limit:
            break
        for k in (cfg.question_key, cfg.solution_key):
            if not isinstance(rec[k], str) or not rec[k].strip():
                raise DataError(f"{path}:{line}: field {k!r} must be a non-empty string")
        qid = str(rec[cfg.id_key])
        if qid in seen:
            raise DataError(f"{path}:{line}: duplicate id {qid!r} (first at line {seen[qid]})")
        seen[qid] = line
        answer = rec.get(cfg.answer_key) if cfg.answer_key else None
        items.append({
            "id": qid, "question": rec[cfg.question_key], "solution": rec[cfg.solution_key],
            "answer": None if answer is None else str(answer),
        })
    return items


def _gold(item: dict, hash_answer: Optional[str]) -> Optional[str]:
    return hash_answer if hash_answer is not None else item["answer"]


def _accepted(item: dict, steps: list[str], answer_appended: bool) -> dict:
    return {"id": item["id"], "question": item["question"], "steps": steps, "answer": item["answer"],
            "answer_appended": answer_appended}


def _rejected(item: dict, reason: str, detail: str, output: str = "") -> dict:
    return {"id": item["id"], "question": item["question"], "reason": reason, "detail": detail, "output": output}


def rules_records(cfg, chunk: list[dict]) -> list[tuple[bool, dict]]:
    out = []
    for it in chunk:
        ref, hash_answer = reference_solution(it["solution"], cfg.strip_calculator_annotations)
        steps = rules_segment(ref, cfg.rules_format, cfg.min_step_chars)
        chk = check_split(steps, ref, _gold(it, hash_answer))
        if chk.ok:
            out.append((True, _accepted(it, chk.steps, chk.answer_appended)))
        else:
            out.append((False, _rejected(it, chk.reason, chk.detail, "\n".join(steps))))
    return out


def teacher_records(cfg, teacher, chunk: list[dict]) -> list[tuple[bool, dict]]:
    params = SamplingParams(
        n=1, temperature=cfg.teacher_temperature, top_p=cfg.teacher_top_p, max_new_tokens=cfg.teacher_max_new_tokens
    )
    refs = [reference_solution(it["solution"], cfg.strip_calculator_annotations) for it in chunk]
    prompts = [chat(teacher.tokenizer, ift_split_prompt(it["question"], ref)) for it, (ref, _) in zip(chunk, refs)]
    seeds = [stable_seed(cfg.seed, it["id"]) for it in chunk]
    outs = teacher.generate(prompts, params, seeds=seeds)
    res = []
    for it, (ref, hash_answer), comps in zip(chunk, refs, outs):
        c = comps[0]
        chk = check_teacher_output(c.text, ref, _gold(it, hash_answer), c.finish_reason)
        if chk.ok:
            res.append((True, _accepted(it, chk.steps, chk.answer_appended)))
        else:
            res.append((False, _rejected(it, chk.reason, chk.detail, c.text)))
    return res


def _read_all(out: Path, stem: str) -> dict[str, dict]:
    recs: dict[str, dict] = {}
    for p in [out / f"{stem}.jsonl", *sorted((out / "work").glob(f"{stem}.rank*.jsonl"))]:
        for r in read_jsonl_tolerant(p):
            recs[str(r["id"])] = r
    return recs


def main(cfg) -> dict:
    validate(cfg)
    D.init_distributed()
    rank, world = D.get_rank(), D.get_world_size()
    out = Path(cfg.output_dir)
    rules = cfg.mode == "rules"
    O.claim_output_dir(
        "ift_build", cfg, inputs={"input": resolve_data_path(cfg.input, cfg.data_dir, key="input")},
        ignore={"input", "batch_size"} | ({"teacher", "teacher_temperature", "teacher_top_p", "teacher_max_new_tokens"}
                                          if rules else {"rules_format", "min_step_chars"}),
        data_dirs={"data_dir": cfg.data_dir} if cfg.data_dir else None,
        saved="every record decided so far (work/)")
    (out / "work").mkdir(parents=True, exist_ok=True)
    items = load_items(cfg)
    D.barrier()
    done = set(_read_all(out, "ift")) | set(_read_all(out, "rejects"))
    todo = [it for it in items if it["id"] not in done and stable_hash("shard", it["id"]) % world == rank]
    D.barrier()  # every rank has read what is done before any rank appends
    teacher = instantiate(cfg.teacher) if cfg.mode == "teacher" and todo else None
    bar = tqdm(total=len(todo), desc=f"ift_build ({cfg.mode})", disable=not D.is_rank0(), dynamic_ncols=True)
    with JsonlAppender(out / "work" / f"ift.rank{rank}.jsonl") as ok_w, \
            JsonlAppender(out / "work" / f"rejects.rank{rank}.jsonl") as bad_w:
        for k in range(0, len(todo), cfg.batch_size):
            chunk = todo[k : k + cfg.batch_size]
            res = rules_records(cfg, chunk) if teacher is None else teacher_records(cfg, teacher, chunk)
            for ok, rec in res:
                (ok_w if ok else bad_w).write(rec)
            bar.update(len(chunk))
    bar.close()
    if teacher is not None:
        teacher.close()
    D.barrier()
    summary: dict[str, Any] = {}
    if D.is_rank0():
        order = [it["id"] for it in items]
        acc, rej = _read_all(out, "ift"), _read_all(out, "rejects")
        write_jsonl(out / "ift.jsonl", (acc[i] for i in order if i in acc))
        write_jsonl(out / "rejects.jsonl", (rej[i] for i in order if i in rej and i not in acc))
        for p in (out / "work").glob("*.rank*.jsonl"):
            p.unlink()
        reasons: dict[str, int] = {}
        for i in order:
            if i in rej and i not in acc:
                reasons[rej[i]["reason"]] = reasons.get(rej[i]["reason"], 0) + 1
        n_acc = sum(i in acc for i in order)
        summary = {
            "mode": cfg.mode,
            "input": str(resolve_data_path(cfg.input, cfg.data_dir, key="input")),
            "n_input": len(items),
            "n_accepted": n_acc,
            "n_rejected": sum(reasons.values()),
            "rejected_by_reason": reasons,
            "n_answer_appended": sum(bool(acc[i].get("answer_appended")) for i in order if i in acc),
            "mean_steps": (sum(len(acc[i]["steps"]) for i in order if i in acc) / n_acc) if n_acc else None,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        D.print0(json.dumps(summary))
        O.finish("ift_build", f"{n_acc} of {len(items)} records accepted ({summary['n_rejected']} rejected) -> "
                              f"{out / 'ift.jsonl'}, {out / 'rejects.jsonl'}, {out / 'summary.json'}")
    D.barrier()
    D.destroy()
    return summary


if __name__ == "__main__":
    recipe_main(IftBuildConfig, main)
