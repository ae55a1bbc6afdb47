"""Trustworthy outputs in the real recipes (issue 17): a re-run with another model or other
settings never mixes into an output dir, failed items are not "done", every recipe validates
before work (one line, exit 2, nothing written), malformed JSONL names file:line everywhere,
training re-runs continue their checkpoint, Ctrl-C is one line and exit 130."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakes import load_recipe
from psr.config import ConfigError, load_config
from psr.data.jsonl import DataError

REPO = Path(__file__).resolve().parents[2]


def cli(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "psr.cli", "run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def inproc(recipe, schema, config, overrides):
    import torch

    mod = load_recipe(recipe)
    cfg = load_config(getattr(mod, schema), config, overrides)
    threads = torch.get_num_threads()
    try:
        return mod.main(cfg)
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- 17.1 eval


def test_eval_refuses_another_model_or_settings_into_the_same_dir(tmp_path, data_dir, tiny_model_dir):
    out = tmp_path / "ev"
    base = ["eval", "--config", "tiny/eval", f"output_dir={out}", "benchmarks=[gsm8k]", f"data_dir={data_dir}"]
    r = cli(*base, "limit=2")
    assert r.returncode == 0, r.stderr[-2000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("eval: greedy accuracy") and str(out / "summary.json") in last
    items = (out / "gsm8k" / "items.jsonl").read_text()
    summary = (out / "summary.json").read_text()

    other = cli(*base, "limit=2", f"model_dir={tiny_model_dir}")  # another model
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert "model_dir" in other.stderr and "overwrite=true" in other.stderr
    shorter = cli(*base, "limit=2", "max_new_tokens=8")  # same model, other settings
    assert shorter.returncode == 2 and "max_new_tokens: 32 -> 8" in shorter.stderr
    assert (out / "gsm8k" / "items.jsonl").read_text() == items and (out / "summary.json").read_text() == summary

    more = cli(*base, "limit=3")  # a growing limit continues the same run
    assert more.returncode == 0, more.stderr[-2000:]
    assert read(out / "gsm8k" / "items.jsonl")[:2] == [json.loads(x) for x in items.splitlines()]

    replaced = cli(*base, "limit=2", f"model_dir={tiny_model_dir}", "overwrite=true")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["model_dir"] == str(tiny_model_dir) and s["benchmarks"]["gsm8k"]["n"] == 2
    assert not (out / "tiny_model").exists()  # the old run's files are gone


# --------------------------------------------------------------------------- 17.2 failed items


# step_search: a failed question fails the run and is retried by the next one —
# tests/recipes/test_step_search.py::test_a_failing_question_is_recorded_fails_the_run_and_is_retried_by_the_next


# --------------------------------------------------------------------------- 17.3 validation


@pytest.mark.parametrize("bad, key", [
    ("batch_size=-4", "batch_size"), ("batch_size=0", "batch_size"), ("max_new_tokens=0", "max_new_tokens"),
    ("top_p=1.5", "top_p"), ("temperature=-1", "temperature"),
])
def test_eval_bad_counts_and_probabilities_stop_before_anything(tmp_path, bad, key):
    out = tmp_path / "o"
    with pytest.raises(ConfigError, match=key):
        inproc("eval", "EvalConfig", "tiny/eval", [f"output_dir={out}", bad])
    assert not out.exists()


def test_eval_tts_width_zero_and_empty_benchmark_file_and_file_output_dir(tmp_path):
    with pytest.raises(ConfigError, match="tts.width"):
        inproc("eval", "EvalConfig", "tiny/eval", [f"output_dir={tmp_path / 'a'}", "mode=tts", "tts.width=0"])
    (tmp_path / "data" / "mini").mkdir(parents=True)
    (tmp_path / "data" / "mini" / "test.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="mini.*empty"):
        inproc("eval", "EvalConfig", "tiny/eval", [f"output_dir={tmp_path / 'b'}", "benchmarks=[mini]",
                                                   f"data_dir={tmp_path / 'data'}"])
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        inproc("eval", "EvalConfig", "tiny/eval", [f"output_dir={tmp_path / 'f'}"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("bad, key", [("search.temperature=-1", "search.temperature"), ("search.top_p=1.5", "search.top_p"),
                                      ("search.width=0", "search.width"),
                                      ("search.questions_in_flight=0", "search.questions_in_flight")])
def test_step_search_bad_settings_stop_before_anything(tmp_path, bad, key):
    with pytest.raises(ConfigError, match=key):
        inproc("step_search", "StepSearchConfig", "tiny/step_search", [f"output_dir={tmp_path / 'o'}", bad])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("recipe", ["step_dpo", "eft_ift_sft", "prm_train"])
def test_training_recipes_missing_model_dir_is_one_line_exit_2_nothing_written(tmp_path, recipe):
    out = tmp_path / "o"
    r = cli(recipe, "--config", f"tiny/{recipe}", f"output_dir={out}", f"model_dir={tmp_path / 'nope'}", timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: model_dir={tmp_path / 'nope'}: no config.json there: no such directory (an HF model dir is expected)"]
    assert not out.exists() and not (tmp_path / "nope").exists()


def test_epochs_zero_names_epochs(tmp_path):
    with pytest.raises(ConfigError, match="epochs: must be an integer >= 1, got 0"):
        inproc("step_dpo", "StepDpoConfig", "tiny/step_dpo", [f"output_dir={tmp_path / 'o'}", "epochs=0"])


# --------------------------------------------------------------------------- malformed JSONL everywhere


def _bad_jsonl(path: Path, good: dict) -> Path:
    path.write_text('{"id": "x", "problem": "unterminated\n' + json.dumps(good) + "\n")
    return path


def test_a_malformed_line_is_an_error_naming_file_and_line_in_every_recipe(tmp_path, tiny_model_dir):
    q = {"id": "a", "problem": "What is 2 + 2?", "solution": "2 + 2 = 4\n#### 4", "answer": "4"}
    cases = [
        ("step_search", "StepSearchConfig", "tiny/step_search", "questions"),
        ("eval", "EvalConfig", "tiny/eval", "eft_test"),
        ("step_dpo", "StepDpoConfig", "tiny/step_dpo", "pairs"),
        ("eft_ift_sft", "EftIftSftConfig", "tiny/eft_ift_sft", "ift_data"),
        ("prm_train", "PrmTrainConfig", "tiny/prm_train", "data"),
        ("ift_build", "IftBuildConfig", "tiny/ift_build", "input"),
        ("eft_build", "EftBuildConfig", "tiny/eft_build", "input"),
    ]
    for recipe, schema, config, key in cases:
        f = _bad_jsonl(tmp_path / f"{recipe}.jsonl", q)
        extra = ["mode=judge"] if recipe == "eval" else []
        if recipe in ("step_search", "eval", "step_dpo", "eft_ift_sft", "prm_train"):
            extra.append(f"model_dir={tiny_model_dir}")
        with pytest.raises(DataError) as e:
            inproc(recipe, schema, config, [f"output_dir={tmp_path / recipe}", f"{key}={f}", *extra])
        assert f"{f}:1: not valid JSON" in str(e.value) and "at at" not in str(e.value), recipe


def test_skip_bad_lines_opts_into_skipping(tmp_path):
    f = tmp_path / "in.jsonl"
    rows = [{"id": f"q{i}", "problem": "p", "solution": f"{i} + 1 = {i + 1}\n#### {i + 1}", "answer": str(i + 1)}
            for i in range(3)]
    f.write_text(json.dumps(rows[0]) + "\n{not json\n" + "".join(json.dumps(r) + "\n" for r in rows[1:]))
    s = inproc("ift_build", "IftBuildConfig", "tiny/ift_build", [f"output_dir={tmp_path / 'o'}", f"input={f}",
                                                                 "skip_bad_lines=true"])
    assert s["n_input"] == 3 and [r["id"] for r in read(tmp_path / "o" / "ift.jsonl")] == ["q0", "q1", "q2"]


# --------------------------------------------------------------------------- training re-runs


def test_a_plain_training_rerun_continues_its_checkpoint_and_another_run_is_refused(tmp_path, monkeypatch):
    from psr.training.loop import SimulatedKill
    from psr.training.metrics import read_metrics

    out = tmp_path / "sft"
    args = [f"output_dir={out}", "progress_bar=false", "epochs=1", "save_every_n_steps=2"]
    full = inproc("eft_ift_sft", "EftIftSftConfig", "tiny/eft_ift_sft", [f"output_dir={tmp_path / 'ref'}", *args[1:]])
    monkeypatch.setenv("PSR_FAULT_AFTER_STEP", "4")
    with pytest.raises(SimulatedKill):
        inproc("eft_ift_sft", "EftIftSftConfig", "tiny/eft_ift_sft", args)
    monkeypatch.delenv("PSR_FAULT_AFTER_STEP")
    resumed = inproc("eft_ift_sft", "EftIftSftConfig", "tiny/eft_ift_sft", args)  # no resume_from_checkpoint
    assert resumed.steps == full.steps and len(resumed.losses) == full.steps - 4
    assert resumed.losses == pytest.approx(full.losses[4:], rel=1e-5)
    assert [m["step"] for m in read_metrics(out / "metrics.jsonl")] == list(range(1, full.steps + 1))
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match=r"lr: 0.003 -> 0.01"):
        inproc("eft_ift_sft", "EftIftSftConfig", "tiny/eft_ift_sft", [*args, "lr=0.01"])
    assert (out / "metrics.jsonl").read_text() == before


# --------------------------------------------------------------------------- 17.4 Ctrl-C


def test_ctrl_c_in_step_search_is_one_line_exit_130_and_the_command_resumes(tmp_path):
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "psr.cli", "run", "step_search", "--config", "tiny/step_search", f"output_dir={out}",
           "questions=builtin:200", "search.questions_in_flight=1", "search.max_iterations=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shard = out / "shards" / "rank0.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (shard.exists() and shard.read_text().count("\n") >= 1):
        time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: saved in {out}: every finished question (shards/rank<r>.jsonl); "
                           "resume with the same command: psr run step_search")
    assert "questions=builtin:200" in last
    assert len(read(shard)) >= 1


def test_eval_tts_failed_items_are_not_graded_as_wrong_and_are_retried(tmp_path, monkeypatch, data_dir):
    import types

    import psr.search
    from psr.outputs import RunFailed

    broken = {"on": True}

    def fake_tts_solve(gen, questions, cfg):
        outs = []
        for q in questions:
            fail = broken["on"] and q["id"].endswith("-1")
            res = types.SimpleNamespace(status="error" if fail else "ok", error="search raised" if fail else None)
            outs.append(types.SimpleNamespace(result=res, response="" if fail else r"Step 1: \boxed{72}", n_tokens=3))
        return outs

    monkeypatch.setattr(psr.search, "tts_solve", fake_tts_solve)
    out = tmp_path / "tts"
    args = [f"output_dir={out}", "mode=tts", "benchmarks=[gsm8k]", "limit=2", f"data_dir={data_dir}"]
    with pytest.raises(RunFailed, match=r"eval: 1 items failed and are not counted \(reasons in .*gsm8k/failures.jsonl"):
        inproc("eval", "EvalConfig", "tiny/eval", args)
    assert [r["id"] for r in read(out / "gsm8k" / "items.jsonl")] == ["gsm8k-test-0"]
    assert read(out / "gsm8k" / "failures.jsonl") == [{"id": "gsm8k-test-1", "status": "error", "error": "search raised"}]
    s = json.loads((out / "summary.json").read_text())["benchmarks"]["gsm8k"]
    assert s["n"] == 1 and s["failed"] == 1
    broken["on"] = False
    s = inproc("eval", "EvalConfig", "tiny/eval", args)["benchmarks"]["gsm8k"]
    assert s["n"] == 2 and s["failed"] == 0
    assert [r["id"] for r in read(out / "gsm8k" / "items.jsonl")] == ["gsm8k-test-0", "gsm8k-test-1"]
