"""recipes/step_search.py end to end on a tiny real model (native backend, CPU): output schema,
same seed -> byte-identical output, SIGKILL + resume == uninterrupted, 2 torchrun ranks -> the
union of the shards without duplicates, bad inputs skipped, the tiny config as shipped."""

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from fakes import build_verdict_model_dir, load_recipe, run_cmd

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "step_search.py"
CONFIG = REPO / "configs" / "tiny" / "step_search.yaml"
N_QUESTIONS = 6
OVERRIDES = [
    f"questions=builtin:{N_QUESTIONS}",
    "search.width=2",
    "search.max_iterations=3",
    "search.max_steps=3",
    "search.max_new_tokens_step=10",
    "search.max_new_tokens_judge=8",
    "search.questions_in_flight=2",
    "seed=3",
]
PAIR_KEYS = {
    "id", "question_id", "question", "prev_steps", "step", "chosen", "rejected", "chosen_score",
    "rejected_score", "scores", "iteration", "attempt", "prompt", "initial_reason_steps",
}


def run_inprocess(model_dir, out, extra=()):
    from psr.config import load_config

    import torch

    mod = load_recipe("step_search")
    cfg = load_config(mod.StepSearchConfig, CONFIG, [*OVERRIDES, f"model_dir={model_dir}", f"output_dir={out}", *extra])
    threads = torch.get_num_threads()
    try:
        return mod.main(cfg)
    finally:  # the tiny config sets cpu_threads=1; leave the test process as it was
        torch.set_num_threads(threads)


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_verdict_model_dir(tmp_path_factory.mktemp("verdict_model") / "model")


@pytest.fixture(scope="module")
def reference(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    summary = run_inprocess(model_dir, out)
    return out, summary


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_outputs_have_the_documented_schema_and_consistent_counts(reference):
    out, summary = reference
    pairs, trace = read(out / "pairs.jsonl"), read(out / "trace.jsonl")
    assert [t["id"] for t in trace] == [f"builtin-{i}" for i in range(N_QUESTIONS)]
    assert len(pairs) > 0, "the verdict model should give decisive rounds"
    for p in pairs:
        assert set(p) == PAIR_KEYS
        assert p["chosen"].startswith(f"Step {p['step']}: ") and p["rejected"].startswith(f"Step {p['step']}: ")
        assert p["chosen_score"] > p["rejected_score"] and len(p["scores"]) == 2
        assert len(p["prev_steps"]) == p["step"] - 1
        assert p["initial_reason_steps"] == "".join(f"Step {k + 1}: {s}\n" for k, s in enumerate(p["prev_steps"]))
    assert len({p["id"] for p in pairs}) == len(pairs)
    for t in trace:
        assert t["status"] == "ok" and t["stop_reason"] in ("final_answer", "eos", "max_steps", "max_iterations")
        assert t["stats"]["iterations"] == len(t["rounds"]) <= 3
        assert t["stats"]["judge_calls"] <= 2 * len(t["rounds"])
        assert t["n_pairs"] == sum(p["question_id"] == t["id"] for p in pairs)
        for rd in t["rounds"]:
            assert len(rd["candidates"]) == 2 and len(rd["comparisons"]) == 2
            assert rd["action"] in ("keep", "rollback", "resample_step1")
            assert (rd["action"] == "keep") == (max(rd["scores"]) > min(rd["scores"]))
    assert summary["pairs"] == len(pairs) and summary["questions_written"] == N_QUESTIONS
    assert summary["rollbacks"] == sum(t["stats"]["rollbacks"] for t in trace)
    assert summary["tokens_generated"] == sum(t["stats"]["tokens_generated"] for t in trace) > 0
    assert summary["backend"] == ["native"] and summary["backend_version"][0].startswith("psr-native")
    assert json.loads((out / "summary.json").read_text())["pairs"] == len(pairs)
    assert "| pairs |" in (out / "summary.md").read_text()


def test_same_seed_gives_byte_identical_output_and_another_seed_does_not(reference, model_dir, tmp_path):
    ref, _ = reference
    # limit=4 with 2 questions in flight runs exactly the reference's first two groups
    run_inprocess(model_dir, tmp_path / "again", ["limit=4"])
    ids = {f"builtin-{i}" for i in range(4)}
    ref_trace = [l for l in (ref / "trace.jsonl").read_text().splitlines(True) if json.loads(l)["id"] in ids]
    ref_pairs = [l for l in (ref / "pairs.jsonl").read_text().splitlines(True) if json.loads(l)["question_id"] in ids]
    assert len(ref_trace) == 4
    assert (tmp_path / "again" / "trace.jsonl").read_text() == "".join(ref_trace)
    assert (tmp_path / "again" / "pairs.jsonl").read_text() == "".join(ref_pairs)
    run_inprocess(model_dir, tmp_path / "seed9", ["seed=9", "limit=2"])
    assert read(tmp_path / "seed9" / "trace.jsonl")[0]["rounds"] != read(ref / "trace.jsonl")[0]["rounds"]


def test_rerun_on_a_finished_output_dir_searches_nothing_and_keeps_the_output(reference, model_dir, tmp_path):
    ref, _ = reference
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    summary = run_inprocess(model_dir, out)
    assert summary["this_run"]["questions_searched"] == 0
    assert (out / "pairs.jsonl").read_bytes() == (ref / "pairs.jsonl").read_bytes()


# A child that runs a recipe as __main__ and SIGKILLs itself right after its rank-0 shard holds
# PSR_TEST_SIGKILL_AFTER complete records plus the torn first half of another line. The kill lands
# at the same point however busy the machine is; polling the shard from the test and killing
# from outside raced the child (on a loaded machine it wrote several records, or all of them,
# between two polls).
SIGKILL_CHILD = r"""
import os, runpy, signal, sys
from psr.data.jsonl import JsonlAppender
after = int(os.environ["PSR_TEST_SIGKILL_AFTER"])
write = JsonlAppender.write
written = []
def write_then_die(self, rec):
    write(self, rec)
    if self.path.name == "rank0.jsonl" and self.path.parent.name == "shards":
        written.append(rec["id"])
        if len(written) == after:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write('{"id": "torn-by-the-kill", "status": "o')
            os.kill(os.getpid(), signal.SIGKILL)
JsonlAppender.write = write_then_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_sigkill_mid_run_then_resume_equals_the_uninterrupted_run(reference, model_dir, tmp_path):
    ref, _ = reference
    out = tmp_path / "killed"
    written = 3  # mid-run and mid-group: questions_in_flight=2, so builtin-2's group is half written
    cmd = [sys.executable, "-c", SIGKILL_CHILD, str(RECIPE), "--config", str(CONFIG), *OVERRIDES,
           f"model_dir={model_dir}", f"output_dir={out}"]
    r = run_cmd(cmd, 300, env={**env(), "PSR_TEST_SIGKILL_AFTER": str(written)})
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    shard = (out / "shards" / "rank0.jsonl").read_text()
    assert shard.count("\n") == written and shard.endswith('"status": "o')  # + a torn last line
    assert not (out / "pairs.jsonl").exists()
    summary = run_inprocess(model_dir, out)
    assert summary["this_run"]["questions_searched"] == N_QUESTIONS - written
    for name in ("pairs.jsonl", "trace.jsonl"):
        assert (out / name).read_bytes() == (ref / name).read_bytes()


def test_two_torchrun_ranks_write_disjoint_shards_whose_union_is_every_question(reference, model_dir, tmp_path):
    ref, _ = reference
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(RECIPE),
           "--config", str(CONFIG), *OVERRIDES, f"model_dir={model_dir}", f"output_dir={out}"]
    r = run_cmd(cmd, 900, env=env())
    assert r.returncode == 0, r.stderr[-3000:]
    s0 = {x["id"] for x in read(out / "shards" / "rank0.jsonl")}
    s1 = {x["id"] for x in read(out / "shards" / "rank1.jsonl")}
    assert s0 and s1 and not (s0 & s1)
    assert s0 | s1 == {f"builtin-{i}" for i in range(N_QUESTIONS)}
    trace, pairs = read(out / "trace.jsonl"), read(out / "pairs.jsonl")
    assert [t["id"] for t in trace] == [f"builtin-{i}" for i in range(N_QUESTIONS)]
    assert len({p["id"] for p in pairs}) == len(pairs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["questions_written"] == N_QUESTIONS
    # per-prompt seeds: each question's search is the same as in the 1-process run
    assert trace == read(ref / "trace.jsonl")


def test_bad_input_lines_are_an_error_or_skipped_and_reported(model_dir, tmp_path):
    from psr.data.jsonl import DataError

    q = tmp_path / "q.jsonl"
    q.write_text(
        '{"id": "a", "problem": "What is 2 + 2?"}\n'
        "{not json\n"
        '{"id": "b"}\n'
        '{"id": "a", "problem": "duplicate id"}\n'
        '{"id": 7, "question": "What is 3 + 4?", "answer": "7"}\n'
    )
    # a malformed line is an error naming file:line, before anything is searched
    with pytest.raises(DataError, match=rf"{q}:2: not valid JSON .*skip_bad_lines=true skips such lines"):
        run_inprocess(model_dir, tmp_path / "strict", [f"questions={q}"])
    assert not (tmp_path / "strict" / "trace.jsonl").exists()
    # skip_bad_lines=true: it is skipped and reported with the records that have no text or a duplicate id
    summary = run_inprocess(model_dir, tmp_path / "o", [f"questions={q}", "skip_bad_lines=true"])
    assert [t["id"] for t in read(tmp_path / "o" / "trace.jsonl")] == ["a", "7"]
    assert [(s["where"].rsplit(":", 1)[1], s["reason"].split(" ")[0]) for s in summary["skipped_inputs"]] == [
        ("2", "not"), ("3", "no"), ("4", "duplicate")]
    assert read(tmp_path / "o" / "trace.jsonl")[1]["meta"] == {"answer": "7"}


def test_config_errors_name_the_key(model_dir, tmp_path):
    from psr.config import ConfigError

    with pytest.raises(ConfigError, match="judge_orders"):
        run_inprocess(model_dir, tmp_path / "x", ["search.judge_orders=3"])
    with pytest.raises(ConfigError, match="model_dir"):
        run_inprocess(tmp_path / "nope", tmp_path / "y")
    r = run_cmd([sys.executable, str(RECIPE), "--config", str(CONFIG), f"output_dir={tmp_path / 'z'}", "widht=3"],
                300, env=env())
    assert r.returncode == 2 and "widht" in r.stderr


def test_tiny_config_runs_with_only_output_dir(tmp_path):
    r = run_cmd([sys.executable, str(RECIPE), "--config", str(CONFIG), f"output_dir={tmp_path}"], 600, env=env())
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["questions_written"] == 4 and summary["search"]["questions_failed"] == 0
    assert (tmp_path / "tiny_model" / "config.json").exists() and (tmp_path / "pairs.jsonl").exists()


def test_hub_dataset_with_field_mapping(model_dir, tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return [{"uid": "u1", "query": "What is 5 + 5?"}, {"query": "What is 1 + 1?"}, {"uid": "u3", "query": ""}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    summary = run_inprocess(model_dir, tmp_path / "hub", ["hub_dataset=org/math", "hub_split=test",
                                                            "id_field=uid", "question_field=query"])
    assert calls == [("org/math", None, "test")]
    trace = read(tmp_path / "hub" / "trace.jsonl")
    assert [(t["id"], t["question"]) for t in trace] == [("u1", "What is 5 + 5?"), ("org/math-test-1", "What is 1 + 1?")]
    assert [s["where"] for s in summary["skipped_inputs"]] == ["org/math[test]#2"]


def test_tts_mode_writes_the_chain_of_best_steps_without_rollbacks(model_dir, tmp_path):
    summary = run_inprocess(model_dir, tmp_path / "tts", ["search.mode=tts", "limit=2"])
    trace = read(tmp_path / "tts" / "trace.jsonl")
    assert summary["rollbacks"] == 0 and len(trace) == 2
    for t in trace:
        assert {rd["action"] for rd in t["rounds"]} <= {"keep", "keep_tie"}
        assert len(t["steps"]) == len(t["rounds"]) == 3  # max_steps = max_iterations = 3, no rollbacks
        assert t["solution"] == "".join(f"Step {k + 1}: {s}\n" for k, s in enumerate(t["steps"]))


def test_a_failing_question_is_recorded_fails_the_run_and_is_retried_by_the_next(model_dir, tmp_path, monkeypatch,
                                                                                 capsys):
    """With a scripted generator in place of the model: the question whose prompts make the
    backend raise becomes an error record (listed in failures.jsonl, the run fails naming the
    count), the others are unaffected; retry_failed=false keeps the error record, a plain re-run
    retries only that question, and the merged output then has one ok record per id."""
    import psr.generation.factory as factory
    from psr.outputs import RunFailed
    from fakes import ScriptedGenerator, prefer

    def policy(req):
        return [f"{req.question[:12]} step {req.step}", rf"so \boxed{{{req.step}}}"]

    broken = {"on": True}
    gen = ScriptedGenerator(policy, prefer({r"so \boxed{1}": 1}), fail_on=lambda p: broken["on"] and "bags with 3" in p)
    monkeypatch.setattr(factory, "make_generator", lambda *a, **k: gen)
    out = tmp_path / "o"
    args = ["questions=builtin:3", "limit=3"]
    with pytest.raises(RunFailed) as e:
        run_inprocess(model_dir, out, args)
    assert f"1 of 3 questions failed (reasons in {out / 'failures.jsonl'})" in str(e.value)
    assert "2 pairs from 2 of 3 questions" in capsys.readouterr().out  # the end line agrees with the summary
    s1 = e.value.summary
    trace = read(out / "trace.jsonl")
    assert [t["status"] for t in trace] == ["ok", "error", "ok"] and "scripted failure" in trace[1]["error"]
    assert read(out / "failures.jsonl") == [{"id": "builtin-1", "error": trace[1]["error"]}]
    assert s1["search"]["failed_ids"] == ["builtin-1"] and s1["pairs"] == 2
    assert [p["chosen"] for p in read(out / "pairs.jsonl")] == ["Step 1: so \\boxed{1}\n"] * 2
    # retry_failed=false keeps the error record (and the run still fails)
    with pytest.raises(RunFailed) as e:
        run_inprocess(model_dir, out, args + ["retry_failed=false"])
    assert e.value.summary["this_run"]["questions_searched"] == 0
    # the same command again retries that question only
    broken["on"] = False
    s3 = run_inprocess(model_dir, out, args)
    assert s3["this_run"]["questions_searched"] == 1 and s3["search"]["questions_failed"] == 0
    assert [t["status"] for t in read(out / "trace.jsonl")] == ["ok"] * 3 and s3["pairs"] == 3
    assert read(out / "failures.jsonl") == []
