"""Build EFT data (paper §3.2): tree search over a policy, the PRM's P("+") picks the best and
worst candidate step of a layer, a teacher judges each pair twice (A/B swapped) with the Figure 5
prompt, and only pairs whose two verdicts agree with each other and with the PRM are kept.

Launch (from the repository root):

    psr run eft_build --config tiny/eft_build output_dir=/tmp/eft       # tiny policy + test doubles
    psr run eft_build --config qwen2_5_math_7b/eft_build output_dir=/data/eft \
        policy.model_dir=/models/Qwen2.5-Math-7B-Instruct prm.model_dir=/ckpt/prm \
        teacher.base_url=https://api.openai.com/v1 teacher.model=o1
    psr run --nproc_per_node 8 eft_build --config qwen2_5_math_7b/eft_build output_dir=/data/eft ...
    python recipes/eft_build.py --config configs/tiny/eft_build.yaml output_dir=/tmp/eft
    tune run recipes/eft_build.py --config configs/tiny/eft_build.yaml output_dir=/tmp/eft

Components (each a ``_component_`` block, built only when its stage has work left):
    policy   a Generator to search with (psr.generation.factory.make_generator, ...)
    prm      anything with ``score_steps(question, steps) -> list[float]`` (P("+") per step):
             the prm_train model, or an exact checker where a world has one (psr/arith)
    teacher  a Generator that judges (a local model, or psr.generation.http.HttpGenerator)

Stages (the MCTS, pair rules and filters are documented in psr/eft.py):
    1. search   per question: step-level MCTS (the ``mcts`` block, psr.eft.MCTSConfig:
                mcts.num_iterations, mcts.simulation_depth, mcts.temperature, mcts.expand_width, ...),
                best/worst pairs with gap > pair_margin
                -> work/trees.rank<r>.jsonl
    2. judge    both orders of every pair through the teacher; status kept / unparseable /
                inconsistent / prm_disagree                  -> work/judged.rank<r>.jsonl
    3. split    rank 0: EFT records of the kept pairs (one per pair, seeded A/B order; both
                orders with emit_both_orders=true),
                split by question into test (test_size records) and train (train_size, null = all)

Outputs (in ``output_dir``):
    eft_train.jsonl, eft_test.jsonl   {id, question, prev_steps, step_a, step_b, judgment, label}
    summary.json                      search sizes, and how many pairs each filter removed

Resumable: each question's tree and each question's judgments are appended (and flushed) as
soon as they are done; a restarted run skips the question ids already in work/ and redoes
only stage 3 (cheap). ``manifest.json`` records the settings and the identity of the input file
and of the component model dirs (psr/outputs.py): a re-run with other ones is refused with the
keys that differ (``overwrite=true`` replaces the dir). ``tiny=true`` (configs/tiny) makes a policy
block without a ``_component_`` a random tiny model (psr.testing.tiny_generator) built only under
output_dir (default output_dir/tiny_model); an existing model dir is used read-only. Trees use per-node seeds, so a resumed search rebuilds the same trees.
With torchrun each rank searches and judges the questions whose id hashes to it.
"""

from __future__ import annotations

import gc
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import MISSING, OmegaConf
from tqdm import tqdm

from psr import distributed as D
from psr import outputs as O
from psr.config import ConfigError, instantiate, recipe_main, settings
from psr.data.jsonl import DataError, JsonlAppender, iter_jsonl, read_jsonl_tolerant, write_jsonl
from psr.data.paths import resolve_data_path
from psr.eft import (
    JUDGE_REMOVALS,
    PAIR_REMOVALS,
    MCTSConfig,
    eft_records,
    judge_pairs,
    search_trees,
    select_pairs,
    split_by_question,
    tree_record,
)
from psr.generation.base import SamplingParams
from psr.seeds import stable_hash


@dataclass
class EftBuildConfig(O.RunKeys):
    output_dir: str = MISSING
    # Questions jsonl (required, no default: the question source is a choice, e.g. NuminaMath-CoT
    # written by `python -m psr.data.numina IN OUT`): absolute, or relative to the data dir
    # (data_dir when set, else $PSR_DATA_DIR, else ../shared/data, taken from the repository root).
    input: str = MISSING
    data_dir: Optional[str] = None
    id_key: str = "id"
    question_key: str = "problem"
    # Only the first `limit` questions (null = all).
    limit: Optional[int] = None
    # The three components (see the module docstring).
    policy: Any = field(default_factory=dict)
    # true (configs/tiny, tests): a policy block without a _component_ is a random tiny model
    # (psr.testing.tiny_generator) built at its model_dir, by default output_dir/tiny_model; the block's
    # other keys (backend, device, dtype) go to it. A model_dir that exists is used read-only.
    tiny: bool = False
    prm: Any = field(default_factory=dict)
    teacher: Any = field(default_factory=dict)
    # The MCTS (paper: simulation_depth=3, num_iterations=100, T=0.7, top_p=0.95): psr.eft.MCTSConfig
    # with its defaults -- mcts.num_iterations, mcts.simulation_depth, mcts.temperature, mcts.top_p,
    # mcts.expand_width (candidate next steps per expansion, before dedup), mcts.exploration_constant
    # (UCT c in Q + c * sqrt(ln N_parent / N_child)), mcts.rollout_value (how a new child's value
    # combines its P("+") with its rollout's: min | mean | last), mcts.max_depth (a solution stops
    # at this many steps), mcts.max_new_tokens (tokens per generated step), mcts.questions_in_flight
    # (questions whose trees advance together; the policy batch is this x expand_width).
    # mcts.seed follows `seed`.
    mcts: MCTSConfig = field(default_factory=lambda: MCTSConfig(seed="${seed}"))  # type: ignore[arg-type]
    # --- pairs ---
    # A sibling set gives a pair when P+(best) - P+(worst) > pair_margin.
    pair_margin: float = 0.3
    # At most this many pairs per question, most-visited contexts first (0 = all).
    max_pairs_per_question: int = 4
    # --- teacher ---
    judge_temperature: float = 0.0
    judge_top_p: float = 1.0
    judge_max_new_tokens: int = 1024
    # Pairs per teacher generate call (each pair is two prompts).
    judge_batch_pairs: int = 64
    # false (default, the paper's counts): one record per kept pair, its A/B order drawn with the
    # seed (labels balanced in expectation); true: both orders of each pair (twice the records).
    emit_both_orders: bool = False
    # --- split (paper: 4,167 train / 500 test records) ---
    # EFT records in the test split (whole questions; a question's surplus records are dropped).
    test_size: int = 500
    # EFT records in the train split (null = all remaining).
    train_size: Optional[int] = None
    # Keep every node of each tree in work/trees.*.jsonl (for inspection).
    save_trees: bool = False
    # torch CPU threads for this run (null = torch's default); 1 is fastest for tiny models on a
    # small shared CPU. Restored when the recipe returns.
    cpu_threads: Optional[int] = None
    seed: int = 0


TINY_POLICY = "psr.testing.tiny_generator"


def _fill_tiny_policy(cfg) -> None:
    """tiny=true: the policy block's _component_ (unset) is TINY_POLICY, its model_dir (unset)
    output_dir/tiny_model."""
    if not cfg.tiny:
        return
    if not cfg.policy or "_component_" not in cfg.policy:
        OmegaConf.update(cfg, "policy._component_", TINY_POLICY, force_add=True)
    if cfg.policy["_component_"] == TINY_POLICY and not cfg.policy.get("model_dir"):
        OmegaConf.update(cfg, "policy.model_dir", str(Path(cfg.output_dir) / "tiny_model"), force_add=True)


def validate(cfg) -> None:
    _fill_tiny_policy(cfg)
    for key in ("policy", "prm", "teacher"):
        node = cfg[key]
        if not (node and "_component_" in node):
            raise ConfigError(f"`{key}` needs a _component_ block (see recipes/eft_build.py)")
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError(f"limit must be >= 1 or null, got {cfg.limit}")
    if cfg.test_size < 0 or (cfg.train_size is not None and cfg.train_size < 0):
        raise ConfigError("test_size and train_size must be >= 0")
    if cfg.pair_margin < 0:
        raise ConfigError(f"pair_margin must be >= 0, got {cfg.pair_margin}")
    O.check_output_dir(cfg.output_dir)
    O.check_positive(cfg, *(f"mcts.{k}" for k in ("num_iterations", "simulation_depth", "expand_width", "max_depth",
                                                    "max_new_tokens", "questions_in_flight")),
                     "judge_batch_pairs", "judge_max_new_tokens")
    O.check_non_negative(cfg, "max_pairs_per_question", "mcts.exploration_constant")
    O.check_temperature(cfg, "mcts.temperature", "judge_temperature")
    O.check_probability(cfg, "mcts.top_p", "judge_top_p", open_low=True)


def check_inputs(cfg) -> None:
    """The input file and the component model dirs, before anything is loaded or written. A
    model dir under output_dir is this run's own (psr.testing.tiny_generator builds it there); any
    other is an input: it must be a model dir, and it is only read."""
    O.check_input_file(resolve_data_path(cfg.input, cfg.data_dir, key="input"), "input")
    for key, path in component_model_dirs(cfg).items():
        if _in_output(cfg, path):
            continue
        if cfg[key.split(".")[0]]["_component_"] == TINY_POLICY and not Path(path).exists():
            raise ConfigError(f"{key}={path}: does not exist; {TINY_POLICY} builds a tiny model only "
                              "under output_dir (e.g. ${output_dir}/tiny_model), an existing dir is used read-only")
        O.check_model_dir(path, key)
    mcts_config(cfg)


def component_model_dirs(cfg) -> dict[str, str]:
    """``{"policy.model_dir": path, ...}`` for each component block with a local model dir."""
    out = {}
    for key in ("policy", "prm", "teacher"):
        node = cfg[key]
        if node and node.get("model_dir"):
            out[f"{key}.model_dir"] = str(node["model_dir"])
    return out


def _in_output(cfg, path: str) -> bool:
    return Path(cfg.output_dir).resolve() in Path(path).resolve().parents


def mcts_config(cfg) -> MCTSConfig:
    return settings(MCTSConfig, cfg.mcts, "mcts")


def load_questions(cfg) -> list[tuple[str, str]]:
    path = resolve_data_path(cfg.input, cfg.data_dir, key="input")
    out, seen = [], {}
    for line, rec in iter_jsonl(path, required=[cfg.id_key, cfg.question_key]):
        if cfg.limit is not None and len(out) >= cfg.limit:
            break
        q = rec[cfg.question_key]
        if not isinstance(q, str) or not q.strip():
            raise DataError(f"{path}:{line}: field {cfg.question_key!r} must be a non-empty string")
        qid = str(rec[cfg.id_key])
        if qid in seen:
            raise DataError(f"{path}:{line}: duplicate id {qid!r} (first at line {seen[qid]})")
        seen[qid] = line
        out.append((qid, q))
    return out


def _read(work: Path, stem: str) -> dict[str, dict]:
    recs: dict[str, dict] = {}
    for p in sorted(work.glob(f"{stem}.rank*.jsonl")):
        for r in read_jsonl_tolerant(p):
            recs[str(r["id"])] = r
    return recs


def _finished_stages(questions: list[tuple[str, str]], work: Path) -> set[str]:
    """The component keys of the stages with nothing left to do: {"policy", "prm"} when every
    question's tree is written, + {"teacher"} when every question is judged too."""
    if not work.is_dir():
        return set()
    ids = [qid for qid, _ in questions]
    trees = _read(work, "trees")
    if not all(q in trees for q in ids):
        return set()
    judged = _read(work, "judged")
    return {"policy", "prm"} | ({"teacher"} if all(q in judged for q in ids) else set())


def _mine(qid: str, rank: int, world: int) -> bool:
    return stable_hash("shard", qid) % world == rank


def _close(*objs: Any) -> None:
    for obj in objs:
        if obj is not None and hasattr(obj, "close"):
            obj.close()


def _release_memory() -> None:
    """After a stage's components went out of scope: free their memory before the next loads."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def search_stage(cfg, questions: list[tuple[str, str]], work: Path) -> None:
    rank, world = D.get_rank(), D.get_world_size()
    done = set(_read(work, "trees"))
    todo = [(qid, q) for qid, q in questions if qid not in done and _mine(qid, rank, world)]
    D.barrier()  # every rank has read what is done before any rank appends
    if not todo:
        return
    mcts = mcts_config(cfg)
    policy = instantiate(cfg.policy)
    prm = instantiate(cfg.prm)
    bar = tqdm(total=len(todo), desc="eft_build search", disable=not D.is_rank0(), dynamic_ncols=True)
    with JsonlAppender(work / f"trees.rank{rank}.jsonl") as w:
        for k in range(0, len(todo), cfg.mcts.questions_in_flight):
            chunk = todo[k : k + cfg.mcts.questions_in_flight]
            for tree in search_trees(policy, prm, chunk, mcts):
                pairs, counts = select_pairs(tree, cfg.pair_margin, cfg.max_pairs_per_question)
                w.write(tree_record(tree, pairs, counts, cfg.save_trees))
            bar.update(len(chunk))
    bar.close()
    _close(policy, prm)


def judge_stage(cfg, questions: list[tuple[str, str]], work: Path) -> None:
    rank, world = D.get_rank(), D.get_world_size()
    trees = _read(work, "trees")
    done = set(_read(work, "judged"))
    todo = [trees[qid] for qid, _ in questions if qid in trees and qid not in done and _mine(qid, rank, world)]
    D.barrier()
    if not todo:
        return
    teacher = instantiate(cfg.teacher)
    params = SamplingParams(
        n=1, temperature=cfg.judge_temperature, top_p=cfg.judge_top_p, max_new_tokens=cfg.judge_max_new_tokens
    )
    bar = tqdm(total=len(todo), desc="eft_build judge", disable=not D.is_rank0(), dynamic_ncols=True)
    with JsonlAppender(work / f"judged.rank{rank}.jsonl") as w:
        k = 0
        while k < len(todo):
            chunk, n_pairs = [], 0
            while k < len(todo) and (not chunk or n_pairs + len(todo[k]["pairs"]) <= cfg.judge_batch_pairs):
                chunk.append(todo[k])
                n_pairs += len(todo[k]["pairs"])
                k += 1
            for rec in judge_pairs(teacher, chunk, params, cfg.seed):
                w.write(rec)
            bar.update(len(chunk))
    bar.close()
    _close(teacher)


def finalize(cfg, questions: list[tuple[str, str]], out: Path, work: Path) -> dict:
    trees, judged = _read(work, "trees"), _read(work, "judged")
    order = [qid for qid, _ in questions]
    removed = Counter({k: 0 for k in PAIR_REMOVALS + JUDGE_REMOVALS})
    sizes = Counter()
    for qid in order:
        t = trees.get(qid)
        if t is None:
            continue
        sizes["trees"] += 1
        for k in ("n_nodes", "n_expanded", "n_sibling_sets"):
            sizes[k] += t[k]
        sizes["pairs_selected"] += len(t["pairs"])
        removed.update(t["removed"])
    by_question = []
    for qid in order:
        j = judged.get(qid)
        if j is None:
            continue
        sizes["questions_judged"] += 1
        for p in j["pairs"]:
            sizes["pairs_judged"] += 1
            if p["status"] == "kept":
                sizes["pairs_kept"] += 1
            else:
                removed[p["status"]] += 1
        recs = eft_records(j, cfg.emit_both_orders, cfg.seed)
        if recs:
            by_question.append((qid, recs))
    train, test, dropped = split_by_question(by_question, cfg.test_size, cfg.train_size, cfg.seed)
    write_jsonl(out / "eft_train.jsonl", train)
    write_jsonl(out / "eft_test.jsonl", test)
    summary = {
        "n_questions": len(questions),
        "search": {k: sizes[k] for k in ("trees", "n_nodes", "n_expanded", "n_sibling_sets", "pairs_selected")},
        "pairs": {
            "sibling_sets": sizes["n_sibling_sets"] + removed["too_few_candidates"],
            "selected": sizes["pairs_selected"],
            "judged": sizes["pairs_judged"],
            "kept": sizes["pairs_kept"],
        },
        "removed": {k: removed[k] for k in PAIR_REMOVALS + JUDGE_REMOVALS},
        "records": {
            "train": len(train),
            "test": len(test),
            "dropped_by_split": dropped,
            "labels_train": dict(Counter(r["label"] for r in train)),
            "labels_test": dict(Counter(r["label"] for r in test)),
        },
        "emit_both_orders": cfg.emit_both_orders,
        "components": {k: cfg[k]["_component_"] for k in ("policy", "prm", "teacher")},
        "mcts": {k: getattr(mcts_config(cfg), k) for k in MCTSConfig.__dataclass_fields__},
        "pair_margin": cfg.pair_margin,
        "max_pairs_per_question": cfg.max_pairs_per_question,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(cfg) -> dict:
    validate(cfg)
    threads = torch.get_num_threads()
    if cfg.cpu_threads:
        torch.set_num_threads(int(cfg.cpu_threads))
    try:
        return _main(cfg)
    finally:
        torch.set_num_threads(threads)


def _main(cfg) -> dict:
    D.init_distributed()
    out = Path(cfg.output_dir)
    check_inputs(cfg)
    questions = load_questions(cfg)
    work = out / "work"
    # A stage whose work is all written cannot change the results any more: its components are
    # neither built nor compared with the manifest (a re-run may name another policy once every
    # tree is searched, or another teacher once every question is judged).
    done_stages = _finished_stages(questions, work)
    dirs = {k: p for k, p in component_model_dirs(cfg).items() if k.split(".")[0] not in done_stages}
    O.claim_output_dir(
        "eft_build", cfg, models={k: p for k, p in dirs.items() if not _in_output(cfg, p)},
        inputs={"input": resolve_data_path(cfg.input, cfg.data_dir, key="input")},
        ignore={"input", *component_model_dirs(cfg), "judge_batch_pairs", *done_stages},
        data_dirs={"data_dir": cfg.data_dir} if cfg.data_dir else None,
        extra={k: ("built in output_dir" if _in_output(cfg, p) else "model dir") for k, p in dirs.items()},
        saved="every finished tree and judged question (work/)")
    work.mkdir(parents=True, exist_ok=True)
    D.barrier()
    search_stage(cfg, questions, work)
    _release_memory()
    D.barrier()
    judge_stage(cfg, questions, work)
    _release_memory()
    D.barrier()
    summary: dict = {}
    if D.is_rank0():
        summary = finalize(cfg, questions, out, work)
        D.print0(json.dumps({"pairs": summary["pairs"], "removed": summary["removed"], "records": summary["records"]}))
        O.finish("eft_build", f"{summary['pairs']['kept']} of {summary['pairs']['judged']} judged pairs kept -> "
                              f"{summary['records']['train']} train / {summary['records']['test']} test EFT records in "
                              f"{out / 'eft_train.jsonl'}, {out / 'eft_test.jsonl'}, {out / 'summary.json'}")
    D.barrier()
    D.destroy()
    return summary


if __name__ == "__main__":
    recipe_main(EftBuildConfig, main)
