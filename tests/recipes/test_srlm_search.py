"""recipes/srlm_search.py end to end: with a scripted generator in place of the model (exact
pairs, trace and summary; step_dpo's pair loader reads the output and sees the prompt the policy
was sampled with; resume after a torn shard is byte-identical; a settings change is refused; a
failing question is recorded and retried on request), and the tiny config as shipped on a real
tiny model."""

import json
import os
import sys
from pathlib import Path

import pytest

from fakes import load_recipe, run_cmd
from srlm_fakes import ScoringGenerator

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "srlm_search.py"
CONFIG = REPO / "configs" / "tiny" / "srlm_search.yaml"

QUESTIONS = [
    {"id": "q0", "problem": "What is 2 + 2?", "answer": "4"},
    {"id": "q1", "problem": "What is 3 + 3?", "answer": "6"},
    {"id": "q2", "problem": "What is 1 + 5?", "answer": "6"},
    {"id": "q3", "problem": "What is 4 + 4?", "answer": "8"},
    {"id": "q4", "problem": "What is 9 + 1?", "answer": "10"},
]


def solve(question, n):
    a, b = [int(x) for x in question[len("What is "):-1].split(" + ")]
    right = f"Step 1: {a} + {b} = {a + b}.\nStep 2: So the answer is \\boxed{{{a + b}}}."
    wrong = f"Step 1: {a} + {b} = {a + b + 1}.\nStep 2: So the answer is \\boxed{{{a + b + 1}}}."
    if a == 3:  # every solution the same: all scores equal, no pair
        return [right] * n
    return [wrong, right, "Step 1: I am not sure."][:n] + [right] * max(0, n - 3)


def judge(question, response, k):
    a, b = [int(x) for x in question[len("What is "):-1].split(" + ")]
    if f"boxed{{{a + b}}}" in response:
        return "Correct and well organised. Score: 5"
    if "not sure" in response:
        return ["Incomplete. Score: 2", "garbled"][k % 2]
    return "Wrong sum. Score: 1"


MODEL = {}


@pytest.fixture(autouse=True)
def _model(tiny_model_dir):
    MODEL["dir"] = tiny_model_dir  # a real HF dir for the input checks; the scripted generator ignores it


def run(tmp_path, out, extra=(), gen=None, monkeypatch=None):
    import psr.generation.factory as factory
    from psr.config import load_config

    qfile = tmp_path / "questions.jsonl"
    if not qfile.exists():
        qfile.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    gen = gen or ScoringGenerator(solve, judge)
    monkeypatch.setattr(factory, "make_generator", lambda *a, **k: gen)
    mod = load_recipe("srlm_search")
    cfg = load_config(mod.SrlmSearchConfig, CONFIG, [f"questions={qfile}", f"model_dir={MODEL['dir']}", f"output_dir={out}",
                                                      "search.num_samples=3", "search.score_samples=2", "search.questions_in_flight=2",
                                                      "cpu_threads=null", *extra])
    return mod.main(cfg), gen


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_pairs_trace_and_summary_are_exact(tmp_path, monkeypatch):
    out = tmp_path / "o"
    summary, gen = run(tmp_path, out, monkeypatch=monkeypatch)
    assert [c["kind"] for c in gen.calls] == ["policy", "judge"] * 3  # groups of 2, 2, 1 questions
    pairs = read(out / "pairs.jsonl")
    assert [p["id"] for p in pairs] == ["q0/srlm", "q2/srlm", "q3/srlm", "q4/srlm"]
    p = pairs[0]
    assert p == {
        "id": "q0/srlm", "question_id": "q0", "prompt": "What is 2 + 2?", "initial_reason_steps": "",
        "chosen": "Step 1: 2 + 2 = 4.\nStep 2: So the answer is \\boxed{4}.",
        "rejected": "Step 1: 2 + 2 = 5.\nStep 2: So the answer is \\boxed{5}.",
        "chosen_score": 5.0, "rejected_score": 1.0, "scores": [1.0, 5.0, 2.0], "method": "srlm"}
    trace = read(out / "trace.jsonl")
    assert [t["id"] for t in trace] == ["q0", "q1", "q2", "q3", "q4"]
    assert trace[1]["no_pair_reason"] == "all_scores_equal" and trace[1]["chosen"] is None
    assert trace[0]["responses"][2]["scores"] == [2.0, None] and trace[0]["responses"][2]["judge_text"] == ["garbled"]
    assert trace[0]["meta"] == {"answer": "4"}
    assert summary["pairs"] == 4 and summary["questions_written"] == 5 and summary["method"] == "srlm"
    assert summary["no_pair_reasons"] == {"fewer_than_two_scored": 0, "all_scores_equal": 1, "identical_texts": 0}
    assert summary["judge_calls"] == 30 and summary["unparseable_scores"] == 4 and summary["unscored_responses"] == 0
    assert summary["tokens_generated"] == sum(t["stats"]["tokens_generated"] for t in trace) > 0
    assert summary["backend"] == ["scripted-srlm"]
    assert json.loads((out / "summary.json").read_text())["pairs"] == 4
    assert "| pairs | 4 |" in (out / "summary.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"] == "srlm_search" and manifest["settings"]["search.num_samples"] == 3
    assert set(manifest["inputs"]) == {"questions"} and set(manifest["models"]) == {"model_dir"}
    assert (out / "failures.jsonl").read_text() == ""


def test_step_dpo_pair_loader_reads_the_output_with_the_sampling_prompt(tmp_path, monkeypatch, tiny_model_dir):
    from psr.data.pairs import PairStats, load_pairs
    from psr.models.hf import load_tokenizer
    from psr.prompts import chat, reasoning_prompt
    from psr.training.dpo import tokenize_pairs

    out = tmp_path / "o"
    _, gen = run(tmp_path, out, monkeypatch=monkeypatch)
    stats = PairStats()
    pairs = load_pairs(out / "pairs.jsonl", stats)
    assert stats.records == 4 and stats.pairs == 4 and stats.fields == {"step_dpo": 4}
    p = pairs[0]
    assert (p.id, p.question, p.prefix, p.step, p.prev_steps) == ("q0/srlm", "What is 2 + 2?", "", None, None)
    assert p.chosen.endswith("\\boxed{4}.") and p.rejected.endswith("\\boxed{5}.")
    # the DPO prompt is exactly the prompt the solutions were sampled from
    assert p.policy_prompt(None) == gen.calls[0]["prompts"][0] == chat(None, reasoning_prompt("What is 2 + 2?"))
    tok = load_tokenizer(tiny_model_dir)
    ex = tokenize_pairs(tok, pairs, max_seq_len=4096)
    assert len(ex) == 4
    assert ex[0].prompt_ids == list(tok(chat(tok, reasoning_prompt("What is 2 + 2?")), add_special_tokens=False)["input_ids"])
    assert ex[0].chosen_ids == list(tok(p.chosen, add_special_tokens=False)["input_ids"])


def test_step_dpo_trains_on_the_output_unchanged(tmp_path, monkeypatch, tiny_model_dir):
    """DPO on whole responses with the unmodified step_dpo recipe: 4 SRLM pairs, 5 steps."""
    import math

    from psr.config import load_config

    out = tmp_path / "o"
    run(tmp_path, out, monkeypatch=monkeypatch)
    dpo = load_recipe("step_dpo")
    args = dict(model_dir=str(tiny_model_dir), pairs=str(out / "pairs.jsonl"), output_dir=str(tmp_path / "dpo"),
                device="cpu", dtype="float32", batch_size=4, micro_batch_size=4, lr=3e-3, warmup_steps=1,
                beta=0.1, max_seq_len=512, progress_bar=False, seed=0, max_steps=5, epochs=5)
    res = dpo.main(load_config(dpo.StepDpoConfig, None, [f"{k}={v}" for k, v in args.items()]))
    assert res.summary["pairs"] == 4 and res.steps == 5
    assert res.losses[0] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference before any update
    assert res.losses[-1] < res.losses[0]
    assert (tmp_path / "dpo" / "final" / "config.json").exists()


def test_rerun_and_resume_after_a_torn_shard_are_byte_identical(tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    run(tmp_path, ref, monkeypatch=monkeypatch)
    again, gen = run(tmp_path, ref, monkeypatch=monkeypatch)
    assert again["this_run"]["questions_searched"] == 0 and gen.calls == []
    # a run killed after question q2 (group 2 half written) with a torn last line
    out = tmp_path / "killed"
    run(tmp_path, out, monkeypatch=monkeypatch)
    shard = out / "shards" / "rank0.jsonl"
    lines = shard.read_text().splitlines(True)
    shard.write_text("".join(lines[:3]) + lines[3][:40])
    for name in ("pairs.jsonl", "trace.jsonl", "summary.json"):
        (out / name).unlink()
    resumed, gen = run(tmp_path, out, monkeypatch=monkeypatch)
    assert resumed["this_run"]["questions_searched"] == 2  # q3, q4 (group 2 recomputed whole)
    assert len(gen.calls[0]["prompts"]) == 2  # the same batch as the uninterrupted run
    for name in ("pairs.jsonl", "trace.jsonl"):
        assert (out / name).read_bytes() == (ref / name).read_bytes()


def test_other_settings_in_the_same_output_dir_are_refused_naming_the_key(tmp_path, monkeypatch):
    from psr.config import ConfigError

    out = tmp_path / "o"
    run(tmp_path, out, monkeypatch=monkeypatch)
    with pytest.raises(ConfigError, match=r"num_samples: 3 -> 4"):
        run(tmp_path, out, ["search.num_samples=4"], monkeypatch=monkeypatch)
    with pytest.raises(ConfigError, match="seed: 0 -> 1"):
        run(tmp_path, out, ["seed=1"], monkeypatch=monkeypatch)
    # another limit is not a settings change
    summary, _ = run(tmp_path, out, ["limit=5"], monkeypatch=monkeypatch)
    assert summary["this_run"]["questions_searched"] == 0
    # overwrite=true replaces the dir
    summary, _ = run(tmp_path, out, ["search.num_samples=2", "overwrite=true"], monkeypatch=monkeypatch)
    assert summary["this_run"]["questions_searched"] == 5
    assert json.loads((out / "manifest.json").read_text())["settings"]["search.num_samples"] == 2


def test_config_errors_name_the_key(tmp_path, monkeypatch):
    from psr.config import ConfigError

    with pytest.raises(ConfigError, match="num_samples"):
        run(tmp_path, tmp_path / "a", ["search.num_samples=1"], monkeypatch=monkeypatch)
    with pytest.raises(ConfigError, match="questions"):
        run(tmp_path, tmp_path / "b", ["questions=null"], monkeypatch=monkeypatch)
    with pytest.raises(ConfigError, match="backend"):
        run(tmp_path, tmp_path / "c", ["backend=hf"], monkeypatch=monkeypatch)


def test_a_failing_question_is_recorded_the_run_fails_and_a_rerun_retries_it(tmp_path, monkeypatch):
    from psr.outputs import RunFailed

    broken = {"on": True}
    gen = ScoringGenerator(solve, judge, fail_on=lambda p: broken["on"] and "1 + 5" in p)
    out = tmp_path / "o"
    with pytest.raises(RunFailed, match=r"1 of 5 questions failed") as e:
        run(tmp_path, out, gen=gen, monkeypatch=monkeypatch)
    s1 = e.value.summary
    trace = read(out / "trace.jsonl")
    assert [t["status"] for t in trace] == ["ok", "ok", "error", "ok", "ok"] and "scripted failure" in trace[2]["error"]
    assert s1["srlm"]["failed_ids"] == ["q2"] and s1["pairs"] == 3
    assert [f["id"] for f in read(out / "failures.jsonl")] == ["q2"]
    # group (q2, q3) failed as a batch, then q2 failed alone and q3 ran alone (policy + judge)
    assert len(gen.calls) == 2 + (1 + 1 + 2) + 2
    with pytest.raises(RunFailed):  # retry_failed=false keeps the error record: nothing is searched
        run(tmp_path, out, ["retry_failed=false"], gen=gen, monkeypatch=monkeypatch)
    assert len(gen.calls) == 8
    broken["on"] = False
    s3, _ = run(tmp_path, out, gen=gen, monkeypatch=monkeypatch)
    assert s3["this_run"]["questions_searched"] == 1 and s3["srlm"]["questions_failed"] == 0 and s3["pairs"] == 4
    assert [t["status"] for t in read(out / "trace.jsonl")] == ["ok"] * 5
    assert (out / "failures.jsonl").read_text() == ""


def test_malformed_input_lines_are_errors_unless_skipped(tmp_path, monkeypatch):
    from psr.data.jsonl import DataError

    (tmp_path / "questions.jsonl").write_text('{"id": "a", "problem": "What is 2 + 2?"}\n{not json\n'
                                              '{"id": "b"}\n{"id": "a", "problem": "What is 9 + 1?"}\n')
    with pytest.raises(DataError, match=r"questions\.jsonl:2: not valid JSON"):
        run(tmp_path, tmp_path / "o", monkeypatch=monkeypatch)
    summary, _ = run(tmp_path, tmp_path / "p", ["skip_bad_lines=true"], monkeypatch=monkeypatch)
    assert [t["id"] for t in read(tmp_path / "p" / "trace.jsonl")] == ["a"]
    assert [(x["where"].rsplit(":", 1)[1], x["reason"].split(" ")[0]) for x in summary["skipped_inputs"]] == [
        ("2", "not"), ("3", "no"), ("4", "duplicate")]


def test_settings_that_overflow_the_models_context_are_refused(tmp_path, tiny_model_dir):
    """Yuan et al.'s prompt is ~1,000 tokens for the tiny model's tokenizer (2,048 positions)."""
    from psr.config import ConfigError, load_config

    import torch

    mod = load_recipe("srlm_search")
    cfg = load_config(mod.SrlmSearchConfig, CONFIG, [f"model_dir={tiny_model_dir}", f"output_dir={tmp_path / 'o'}",
                                                      "questions=builtin:2", "search.max_new_tokens_solution=1100"])
    threads = torch.get_num_threads()
    try:
        with pytest.raises(ConfigError, match=r"search.max_new_tokens_solution=1100 \+ search.max_new_tokens_judge=8 = \d+ > "
                                              r"max_position_embeddings=2048"):
            mod.main(cfg)
    finally:
        torch.set_num_threads(threads)
    assert not (tmp_path / "o" / "shards" / "rank0.jsonl").exists()  # refused before any work


def test_tiny_config_runs_with_only_output_dir(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = run_cmd([sys.executable, str(RECIPE), "--config", str(CONFIG), f"output_dir={tmp_path}"], 600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["questions_written"] == 4 and s["srlm"]["questions_failed"] == 0
    assert s["judge_calls"] == 4 * 3 * 2 - 2 * s["empty_responses"]
    assert s["backend"] == ["native"] and (tmp_path / "pairs.jsonl").exists()
    bad = run_cmd([sys.executable, str(RECIPE), "--config", str(CONFIG), f"output_dir={tmp_path / 'x'}",
                   "num_sampels=3"], 300, env=env)
    assert bad.returncode == 2 and "num_sampels" in bad.stderr


@pytest.mark.slow  # two recipe runs in subprocesses, one with 2 torchrun ranks: ~80 s on 2 busy cores
def test_two_torchrun_ranks_give_the_one_process_output(tmp_path, tiny_model_dir):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    common = ["--config", str(CONFIG), f"model_dir={tiny_model_dir}", "questions=builtin:5"]
    one = run_cmd([sys.executable, str(RECIPE), *common, f"output_dir={tmp_path / 'one'}"], 600, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_cmd([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   str(RECIPE), *common, f"output_dir={tmp_path / 'two'}"], 900, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    s0 = {x["id"] for x in read(tmp_path / "two" / "shards" / "rank0.jsonl")}
    s1 = {x["id"] for x in read(tmp_path / "two" / "shards" / "rank1.jsonl")}
    assert s0 == {"builtin-0", "builtin-2", "builtin-4"} and s1 == {"builtin-1", "builtin-3"}
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["questions_written"] == 5
    # per-prompt seeds: each question's round is the same as in the 1-process run
    assert read(tmp_path / "two" / "trace.jsonl") == read(tmp_path / "one" / "trace.jsonl")
    assert (tmp_path / "two" / "pairs.jsonl").read_text() == (tmp_path / "one" / "pairs.jsonl").read_text()
