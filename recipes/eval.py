"""Evaluate a model: greedy accuracy on math benchmarks (paper Tables 1, 2; step statistics as in
Tables 4, 7), judge accuracy on an EFT test set (Table 3), or test-time scaling (Table 5).

Launch (from the repository root):

    psr run eval --config tiny/eval output_dir=/tmp/eval                 # tiny random model, smoke run
    psr run eval --config qwen2_5_math_7b/eval model_dir=/ckpt/M2 benchmarks=[gsm8k,math500] \
        limit=200 output_dir=/tmp/eval_m2
    psr run --nproc_per_node 2 eval --config smollm2_135m/eval model_dir=... output_dir=...
    psr run eval --config qwen2_5_math_7b/eval mode=judge eft_test=/data/eft_test.jsonl model_dir=... output_dir=...
    psr run eval --config qwen2_5_math_7b/eval mode=tts model_dir=... output_dir=...
    python recipes/eval.py --config configs/tiny/eval.yaml output_dir=/tmp/eval
    tune run recipes/eval.py --config configs/tiny/eval.yaml output_dir=/tmp/eval

Outputs (in ``output_dir``):
    <benchmark>/items.jsonl   one record per item: id, prompt, response, extracted, gold, correct,
                              n_steps, mean_step_tokens (+ tokens generated)
    judge/items.jsonl         (mode=judge) id, label, verdict, correct, response
    summary.json, summary.md  accuracy per benchmark and their average, mean step count and
                              mean step length in tokens (or judge accuracy)

Re-runs: ``manifest.json`` records the settings, the model's identity and the benchmark files'
(psr/outputs.py). The same command again skips the items already written, so a killed run
continues where it stopped (``limit`` may grow); a re-run with other settings or another model is
refused with the keys that differ (``overwrite=true`` replaces the dir). With ``tiny=true``
(configs/tiny) a random tiny model is built under output_dir (at ``model_dir`` when it lies there,
else at output_dir/tiny_model when ``model_dir`` is unset); a model_dir elsewhere is an input,
read-only. ``mode=tts`` searches with the ``tts`` block: psr.search.SearchConfig and its defaults
(``tts.width=4``, ``tts.max_new_tokens_step=256``, ...). With torchrun every rank evaluates its
own shard of the items (data parallel, each rank with its own generator) and rank 0 merges the
shards and writes the summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf
from tqdm import tqdm

from psr import distributed as D
from psr.config import ConfigError, recipe_main, settings
from psr import outputs as O
from psr.data.jsonl import JsonlAppender, read_jsonl, read_jsonl_tolerant, write_jsonl
from psr.judge import parse_verdict
from psr.prompts import chat, judge_prompt, reasoning_prompt
from psr.search import SearchConfig
from psr.seeds import item_seed
from psr.steps import parse_steps

# The plain chain-of-thought prompt of the Qwen2.5-Math evaluation toolkit ("cot" prompt type).
COT_PROMPT = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


@dataclass
class EvalConfig(O.RunKeys):
    output_dir: str = MISSING
    # HF model dir to evaluate (an input: read-only). Unset with tiny=true: output_dir/tiny_model.
    model_dir: Optional[str] = None
    # true (configs/tiny, tests): build a random tiny model under output_dir (at model_dir when it
    # does not exist and lies under output_dir, else at output_dir/tiny_model when model_dir is
    # unset); an existing model_dir is used as is, read-only.
    tiny: bool = False
    # greedy: benchmarks, one sample per item (temperature 0 by default); judge: verdict accuracy
    # on eft_test (paper Table 3); tts: test-time scaling with the model's own step judgments (Table 5).
    mode: str = "greedy"
    benchmarks: list = field(default_factory=lambda: ["gsm8k", "math500"])
    # Local benchmark files: <data_dir>/<name>/test.jsonl. Unset: $PSR_DATA_DIR, else ../shared/data.
    data_dir: Optional[str] = None
    # At most this many items per benchmark (the first ones); null = all.
    limit: Optional[int] = None
    # psr = the paper's Figure 4 prompt (Step n: ... \boxed{}); cot = the toolkit's plain CoT prompt.
    prompt: str = "psr"
    max_new_tokens: int = 2048
    temperature: float = 0.0
    top_p: float = 1.0
    # Generation backend: native | vllm | auto; device auto|cpu|cuda; dtype auto|float32|bfloat16.
    backend: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    # Extra keyword arguments for the backend (e.g. max_batch_size, gpu_memory_utilization).
    backend_kwargs: Any = field(default_factory=dict)
    # Items per generate call (and per flush of results to disk).
    batch_size: int = 64
    grader_workers: int = 2
    grader_timeout_s: float = 5.0
    # mode=judge: EFT test jsonl (question, prev_steps, step_a, step_b, label).
    eft_test: Optional[str] = None
    judge_max_new_tokens: int = 512
    # mode=tts: the search (paper §5.2: 6 samples per step at T=0.5, best by own judgments),
    # psr.search.SearchConfig with its defaults (tts.width, tts.max_new_tokens_step, ...; tts.mode
    # stays tts); tts.seed follows `seed`.
    tts: SearchConfig = field(default_factory=lambda: SearchConfig(mode="tts", seed="${seed}"))  # type: ignore[arg-type]
    seed: int = 0


def validate(cfg) -> None:
    """Every setting, before anything is loaded or written (one-line ConfigError naming the key)."""
    if not cfg.model_dir:
        if not cfg.tiny:
            raise ConfigError("model_dir: required (or tiny=true to build a random tiny model)")
        cfg.model_dir = str(Path(cfg.output_dir) / "tiny_model")  # tiny=true: built under output_dir
    if cfg.mode not in ("greedy", "judge", "tts"):
        raise ConfigError(f"mode must be greedy, judge or tts, got {cfg.mode!r}")
    if cfg.prompt not in ("psr", "cot"):
        raise ConfigError(f"prompt must be psr or cot, got {cfg.prompt!r}")
    if cfg.mode == "judge" and not cfg.eft_test:
        raise ConfigError("mode=judge needs eft_test=<EFT test jsonl>")
    if cfg.mode != "judge" and not cfg.benchmarks:
        raise ConfigError("benchmarks is empty")
    O.check_output_dir(cfg.output_dir)
    O.check_positive(cfg, "batch_size", "max_new_tokens", "judge_max_new_tokens", "grader_workers")
    O.check_positive(cfg, "limit", allow_none=True)
    O.check_temperature(cfg, "temperature")
    O.check_probability(cfg, "top_p", open_low=True)
    if not cfg.grader_timeout_s > 0:
        raise ConfigError(f"grader_timeout_s: must be > 0, got {cfg.grader_timeout_s}")
    if cfg.mode == "tts":
        O.check_positive(cfg, *(f"tts.{k}" for k in ("width", "judge_orders", "max_iterations", "max_steps",
                                                   "max_new_tokens_step", "max_new_tokens_judge", "questions_in_flight")))
        O.check_temperature(cfg, "tts.temperature", "tts.judge_temperature")
        O.check_probability(cfg, "tts.top_p", "tts.judge_top_p", open_low=True)
        if cfg.tts.mode != "tts":
            raise ConfigError(f"tts.mode: the eval's search answers questions (tts), got {cfg.tts.mode!r}")
        settings(SearchConfig, cfg.tts, "tts")
    if tiny_model_to_build(cfg) is None:
        O.check_model_dir(cfg.model_dir)
    if cfg.mode == "judge":
        O.check_input_file(cfg.eft_test, "eft_test")
    else:
        for name in cfg.benchmarks:
            path = benchmark_file(name, cfg.data_dir)
            if path is not None:
                O.check_input_file(path, f"benchmarks: {name}")


def tiny_model_to_build(cfg) -> Optional[Path]:
    """The tiny model dir this run builds (tiny=true, model_dir missing and under output_dir),
    else None. A missing model_dir outside output_dir is refused: inputs are read-only."""
    if not cfg.tiny:
        return None
    m = Path(cfg.model_dir)
    if (m / "config.json").exists():
        return None
    out = Path(cfg.output_dir).resolve()
    if m.resolve() != out and out in m.resolve().parents:
        return m
    raise ConfigError(f"tiny=true: model_dir={cfg.model_dir} does not exist and is not under output_dir; "
                      "a tiny model is built only under output_dir (e.g. model_dir=${output_dir}/tiny_model), "
                      "an existing model_dir is used read-only")


def benchmark_file(name: str, data_dir: Optional[str]) -> Optional[Path]:
    """The local file a benchmark is read from (None: not resolvable here; load_items says why)."""
    from psr.data.benchmarks import benchmark_spec, list_benchmarks, resolve_data_dir

    if name in list_benchmarks():
        spec = benchmark_spec(name)
        return resolve_data_dir(data_dir) / spec["local"] if spec.get("local") else None
    path = resolve_data_dir(data_dir) / name / "test.jsonl"
    return path if path.exists() else None


def load_items(name: str, data_dir: Optional[str], limit: Optional[int]) -> list[dict]:
    """A defined benchmark (eval/benchmarks.yaml), else a custom one at ``<data_dir>/<name>/test.jsonl``
    in the same normalised schema (id, problem, answer), graded with the general math rules."""
    from psr.data.benchmarks import list_benchmarks, load_benchmark, resolve_data_dir

    if name in list_benchmarks():
        return load_benchmark(name, data_dir=data_dir, limit=limit)
    path = resolve_data_dir(data_dir) / name / "test.jsonl"
    if not path.exists():
        raise ConfigError(f"benchmarks: {name!r} is not defined in eval/benchmarks.yaml ({', '.join(list_benchmarks())}) "
                          f"and there is no custom benchmark file {path}")
    items = read_jsonl(path, required=("id", "problem", "answer"))[:limit]
    return [{**it, "id": str(it["id"]), "answer": str(it["answer"]), "custom": True} for it in items]


def grader_answer_type(name: str, items: list[dict]) -> Optional[str]:
    """The grader's answer type for a benchmark's items (eval/benchmarks.yaml); None (math) for a
    custom benchmark."""
    from psr.data.benchmarks import answer_type_of

    return None if items and items[0].get("custom") else answer_type_of(name)


def build_prompt(tokenizer, problem: str, kind: str) -> str:
    text = reasoning_prompt(problem) if kind == "psr" else COT_PROMPT.format(problem=problem)
    return chat(tokenizer, text)


def step_stats(tokenizer, response: str) -> tuple[int, Optional[float]]:
    """Number of "Step n:" steps in a response and their mean length in tokens."""
    steps = parse_steps(response)
    if not steps:
        return 0, None
    lengths = [len(tokenizer(s, add_special_tokens=False).input_ids) for s in steps]
    return len(steps), sum(lengths) / len(lengths)


def _shard_paths(out: Path, world: int) -> list[Path]:
    return [out / f"items.rank{r}.jsonl" for r in range(world)]


def _records(out: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """(done, failed) records of this output dir (merged file and any rank shards). A failed
    item (``status: error``, e.g. a test-time-scaling search that raised) is not done: a re-run
    evaluates it again."""
    done: dict[str, dict] = {}
    failed: dict[str, dict] = {}
    for p in [out / "items.jsonl", *sorted(out.glob("items.rank*.jsonl"))]:
        for rec in read_jsonl_tolerant(p):
            (failed if rec.get("status") == "error" else done)[str(rec["id"])] = rec
    return done, {k: v for k, v in failed.items() if k not in done}


def _done(out: Path) -> dict[str, dict]:
    return _records(out)[0]


def _merge(out: Path, order: list[str]) -> list[dict]:
    """Rank 0: one items.jsonl in the benchmark's item order (failed items in failures.jsonl);
    shard files removed."""
    done, failed = _records(out)
    merged = [done[i] for i in order if i in done]
    write_jsonl(out / "items.jsonl", merged)
    write_jsonl(out / "failures.jsonl", [failed[i] for i in order if i in failed])
    for p in out.glob("items.rank*.jsonl"):
        p.unlink()
    return merged


def run_items(cfg, gen, items: list[dict], out: Path, desc: str, make_record) -> None:
    """Evaluate this rank's share of ``items`` not yet done, appending records as chunks finish."""
    out.mkdir(parents=True, exist_ok=True)
    D.barrier()
    done = _done(out)
    todo = D.shard([it for it in items if str(it["id"]) not in done])
    D.barrier()  # every rank has read what is done before any rank appends more
    bar = tqdm(total=len(todo), desc=desc, disable=not D.is_rank0(), dynamic_ncols=True)
    with JsonlAppender(out / f"items.rank{D.get_rank()}.jsonl") as w:
        for k in range(0, len(todo), cfg.batch_size):
            chunk = todo[k : k + cfg.batch_size]
            for rec in make_record(gen, chunk):
                w.write(rec)
            bar.update(len(chunk))
    bar.close()
    D.barrier()


def greedy_records(cfg, grader):
    from psr.generation import SamplingParams

    params = SamplingParams(n=1, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)

    def make(gen, chunk, atype):
        prompts = [build_prompt(gen.tokenizer, it["problem"], cfg.prompt) for it in chunk]
        seeds = [item_seed(cfg.seed, it["id"]) for it in chunk]
        outs = gen.generate(prompts, params, seeds=seeds)
        responses = [o[0].text for o in outs]
        return _graded(gen, grader, chunk, prompts, responses, [o[0].n_tokens for o in outs], atype)

    return make


def _graded(gen, grader, chunk, prompts, responses, n_tokens, atype):
    verdicts = grader.grade_many(
        [(r, it["answer"]) for r, it in zip(responses, chunk)], answer_type=atype,
        workers=grader.workers, timeout_s=grader.timeout_s,
    )
    recs = []
    for it, p, r, ok, nt in zip(chunk, prompts, responses, verdicts, n_tokens):
        n_steps, mean_len = step_stats(gen.tokenizer, r)
        recs.append({
            "id": it["id"], "prompt": p, "response": r, "extracted": grader.extract_answer(r, atype),
            "gold": it["answer"], "correct": bool(ok), "n_steps": n_steps, "mean_step_tokens": mean_len,
            "n_tokens": nt,
        })
    return recs


def tts_records(cfg, grader, scfg):
    from psr.search import tts_solve

    def make(gen, chunk, atype):
        questions = [{"id": str(it["id"]), "question": it["problem"]} for it in chunk]
        results = tts_solve(gen, questions, scfg)
        failed = [(it, r) for it, r in zip(chunk, results) if getattr(r.result, "status", "ok") != "ok"]
        ok = [(it, r) for it, r in zip(chunk, results) if getattr(r.result, "status", "ok") == "ok"]
        recs = [{"id": it["id"], "status": "error", "error": r.result.error} for it, r in failed]
        if ok:
            items = [it for it, _ in ok]
            prompts = [build_prompt(gen.tokenizer, it["problem"], "psr") for it in items]
            recs += _graded(gen, grader, items, prompts, [r.response for _, r in ok], [r.n_tokens for _, r in ok], atype)
        return recs

    return make


class _Grader:
    def __init__(self, workers: int, timeout_s: float):
        from psr import grader

        self.workers, self.timeout_s = workers, timeout_s
        self._g = grader

    def extract_answer(self, text, answer_type):
        return self._g.extract_answer(text, answer_type)

    def grade_many(self, pairs, answer_type, workers, timeout_s):
        return self._g.grade_many(pairs, workers=workers, timeout_s=timeout_s, answer_type=answer_type)


def summarize_benchmark(recs: list[dict]) -> dict:
    n = len(recs)
    stepped = [r for r in recs if r["n_steps"]]
    return {
        "n": n,
        "correct": sum(r["correct"] for r in recs),
        "accuracy": 100.0 * sum(r["correct"] for r in recs) / n if n else None,
        "mean_steps": sum(r["n_steps"] for r in stepped) / len(stepped) if stepped else None,
        "mean_step_tokens": sum(r["mean_step_tokens"] for r in stepped) / len(stepped) if stepped else None,
        "mean_response_tokens": sum(r.get("n_tokens", 0) for r in recs) / n if n else None,
    }


def _fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def write_summary(cfg, out: Path, per: dict, extra: dict) -> dict:
    accs = [v["accuracy"] for v in per.values() if v.get("accuracy") is not None]
    summary = {
        "mode": cfg.mode, "model_dir": cfg.model_dir, "prompt": cfg.prompt, **extra,
        "benchmarks": per, "average_accuracy": sum(accs) / len(accs) if accs else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if cfg.mode == "judge":
        j = per["judge"]
        md = ["| set | n | judge accuracy | unparseable |", "|---|---|---|---|",
              f"| {Path(cfg.eft_test).name} | {j['n']} | {_fmt(j['accuracy'])} | {j['unparseable']} |"]
    else:
        md = ["| benchmark | n | accuracy | mean steps | mean step length (tokens) |", "|---|---|---|---|---|"]
        for name, v in per.items():
            md.append(f"| {name} | {v['n']} | {_fmt(v['accuracy'])} | {_fmt(v['mean_steps'])} | {_fmt(v['mean_step_tokens'], 1)} |")
        md.append(f"| **average** | | {_fmt(summary['average_accuracy'])} | | |")
    header = f"# eval: {cfg.model_dir} (mode={cfg.mode}, backend={extra.get('backend')})\n\n"
    (out / "summary.md").write_text(header + "\n".join(md) + "\n")
    return summary


# Keys that only matter in some modes: a re-run in another mode is refused by `mode` itself.
MODE_IRRELEVANT = {
    "greedy": {"judge_max_new_tokens", "tts", "eft_test"},
    "judge": {"benchmarks", "prompt", "max_new_tokens", "temperature", "top_p", "tts"},
    "tts": {"max_new_tokens", "temperature", "top_p", "judge_max_new_tokens", "eft_test", "prompt"},
}


def main(cfg) -> dict:
    validate(cfg)
    device = D.default_device(cfg.device)
    D.init_distributed(device)
    out = Path(cfg.output_dir)
    tiny_model_to_build(cfg)  # refuses a tiny model outside output_dir
    tiny = bool(cfg.tiny) and out.resolve() in Path(cfg.model_dir).resolve().parents  # ours, built here
    if cfg.mode == "judge":
        inputs = {"eft_test": cfg.eft_test}
    else:
        inputs = {f"benchmark {b}": benchmark_file(b, cfg.data_dir) for b in cfg.benchmarks}
    O.claim_output_dir(
        "eval", cfg, models={} if tiny else {"model_dir": cfg.model_dir}, inputs=inputs,
        ignore=MODE_IRRELEVANT[cfg.mode] | {"model_dir", "tiny"},
        data_dirs={"data_dir": cfg.data_dir} if cfg.data_dir else None,
        extra={"model": f"tiny (seed {cfg.seed}), built in output_dir" if tiny else "model_dir"},
        saved="every item evaluated so far (<benchmark>/items*.jsonl)")
    if tiny and not (Path(cfg.model_dir) / "config.json").exists():
        from psr.models.tiny import build_tiny_model_dir

        if D.is_rank0():
            build_tiny_model_dir(cfg.model_dir, seed=cfg.seed)
        D.barrier()

    from psr.generation import make_generator
    from psr.generation.factory import eval_token_budget

    # Load (and validate) all data before the engine starts: bad input fails fast.
    if cfg.mode == "judge":
        tasks = {"judge": read_jsonl(cfg.eft_test, required=("question", "prev_steps", "step_a", "step_b", "label"))}
        for k, rec in enumerate(tasks["judge"]):
            rec.setdefault("id", f"eft-{k}")
            if rec["label"] not in ("A", "B"):
                raise ConfigError(f"{cfg.eft_test}: record {rec['id']}: label must be 'A' or 'B', got {rec['label']!r}")
    else:
        tasks = {b: load_items(b, cfg.data_dir, cfg.limit) for b in cfg.benchmarks}

    t0 = time.time()
    # backend=auto picks by this rank's generated-token budget (psr.generation.factory)
    n_items = -(-sum(map(len, tasks.values())) // D.get_world_size())  # this rank's share, rounded up
    scfg = None
    if cfg.mode == "tts":
        scfg = settings(SearchConfig, cfg.tts, "tts")
        budget = scfg.token_budget(n_items)
    else:
        budget = eval_token_budget(n_items, cfg.judge_max_new_tokens if cfg.mode == "judge" else cfg.max_new_tokens)
    gen = make_generator(cfg.backend, cfg.model_dir, device=str(device), dtype=cfg.dtype, expected_tokens=budget,
                         stage="search" if cfg.mode == "tts" else "eval",
                         **OmegaConf.to_container(cfg.backend_kwargs, resolve=True))
    D.print0(f"eval: backend={gen.name} {gen.version}, mode={cfg.mode}, model={cfg.model_dir}")
    per: dict[str, dict] = {}
    try:
        if cfg.mode == "judge":
            from psr.generation import SamplingParams

            params = SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.judge_max_new_tokens)

            def make_judge(gen, chunk):
                prompts = [chat(gen.tokenizer, judge_prompt(r["question"], list(r["prev_steps"]), r["step_a"], r["step_b"]))
                           for r in chunk]
                outs = gen.generate(prompts, params)
                recs = []
                for r, o in zip(chunk, outs):
                    v = parse_verdict(o[0].text)
                    recs.append({"id": r["id"], "label": r["label"], "verdict": v, "correct": v == r["label"],
                                 "response": o[0].text, "n_tokens": o[0].n_tokens})
                return recs

            run_items(cfg, gen, tasks["judge"], out / "judge", "judge", make_judge)
            if D.is_rank0():
                recs = _merge(out / "judge", [str(r["id"]) for r in tasks["judge"]])
                n = len(recs)
                per["judge"] = {"n": n, "correct": sum(r["correct"] for r in recs),
                                "accuracy": 100.0 * sum(r["correct"] for r in recs) / n if n else None,
                                "unparseable": sum(r["verdict"] is None for r in recs)}
        else:
            grader = _Grader(cfg.grader_workers, cfg.grader_timeout_s)
            make = tts_records(cfg, grader, scfg) if cfg.mode == "tts" else greedy_records(cfg, grader)
            for bench, items in tasks.items():
                atype = grader_answer_type(bench, items)
                run_items(cfg, gen, items, out / bench, bench, lambda g, c, a=atype: make(g, c, a))
                if D.is_rank0():
                    per[bench] = summarize_benchmark(_merge(out / bench, [str(it["id"]) for it in items]))
                    per[bench]["failed"] = len(read_jsonl_tolerant(out / bench / "failures.jsonl"))
    finally:
        gen.close()
    summary = {}
    failure = ""
    if D.is_rank0():
        summary = write_summary(cfg, out, per, {"backend": gen.name, "backend_version": gen.version,
                                                "world_size": D.get_world_size(), "wall_s": round(time.time() - t0, 1)})
        print((out / "summary.md").read_text(), flush=True)
        if cfg.mode == "judge":
            j = per["judge"]
            O.finish("eval", f"judge accuracy {_fmt(j['accuracy'])}% on {j['n']} EFT records "
                             f"({j['unparseable']} unparseable) -> {out / 'summary.json'}, {out / 'judge' / 'items.jsonl'}")
        else:
            each = ", ".join(f"{b} {_fmt(v['accuracy'])}" for b, v in per.items())
            O.finish("eval", f"{cfg.mode} accuracy {_fmt(summary['average_accuracy'])}% (average; {each}) -> "
                             f"{out / 'summary.json'}, {out}/<benchmark>/items.jsonl")
            failed = {b: v["failed"] for b, v in per.items() if v.get("failed")}
            if failed:
                failure = (f"eval: {sum(failed.values())} items failed and are not counted (reasons in "
                           + ", ".join(str(out / b / "failures.jsonl") for b in failed)
                           + "); everything else is written; the same command retries them")
    D.barrier()
    D.destroy()
    if failure:
        raise O.RunFailed(failure)
    return summary


if __name__ == "__main__":
    recipe_main(EvalConfig, main)
