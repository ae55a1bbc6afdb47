"""The question source of the real families (issue 18.2): required in ift_build, eft_build and the
7B/72B pipelines (never a silent GSM8k fallback); the iterations' questions are a seeded shuffle,
disjoint from every IFT/EFT question, counted in data/questions_summary.json."""

import json
import sys
from pathlib import Path

import pytest

from fakes import run_cmd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _pipeline(tmp_path, seed, pool=12, out="run"):
    from psr.config import load_config
    from recipes.pipeline import Pipeline, PipelineConfig

    qs = tmp_path / "numina.jsonl"
    qs.write_text("".join(json.dumps({"id": f"n{i}", "problem": f"What is {i} + {i}?", "solution": "s"}) + "\n"
                          for i in range(pool)))
    cfg = load_config(PipelineConfig, str(REPO / "configs/qwen2_5_math_7b/pipeline.yaml"),
                      [f"output_dir={tmp_path / out}", "base_model=/m/q", f"questions={qs}", f"seed={seed}",
                       "questions_per_iteration=[2,3,1]", "iterations=3"])
    p = Pipeline(cfg)
    calls = {}

    def fake_run(stage, recipe, spec, overrides, resume_key=None):
        calls[stage] = [str(o) for o in spec.overrides] + list(overrides)
        d = p.stages / stage
        d.mkdir(parents=True, exist_ok=True)
        if stage == "ift":  # IFT used n0 (accepted) and n1 (rejected); whitespace differs from the pool
            (d / "ift.jsonl").write_text(json.dumps({"id": "n0", "question": "What is 0 +  0?"}) + "\n")
            (d / "rejects.jsonl").write_text(json.dumps({"id": "n1", "question": "What is 1 + 1?"}) + "\n")
        if stage == "eft":  # EFT kept a pair on n2 and searched n3 without a kept pair
            (d / "eft_train.jsonl").write_text(json.dumps({"id": "n2", "question": "What is 2 + 2?"}) + "\n")
            (d / "eft_test.jsonl").write_text("")
            (d / "work").mkdir()
            (d / "work" / "trees.rank0.jsonl").write_text(
                "".join(json.dumps({"id": f"n{i}", "question": f"What is {i} + {i}?"}) + "\n" for i in (2, 3)))
        p.mark(stage, 0.0)

    p.run_recipe = fake_run
    return p, calls


def _iteration_ids(p, n=3):
    return [[json.loads(line)["id"] for line in (p.data / f"iter{i}_questions.jsonl").open()] for i in range(1, n + 1)]


def test_iteration_questions_are_a_seeded_shuffle_disjoint_from_ift_and_eft(tmp_path):
    p, calls = _pipeline(tmp_path, seed=0)
    p.stage_data()
    assert calls["ift"][0] == f"input={tmp_path / 'numina.jsonl'}" and calls["eft"][0] == f"input={tmp_path / 'numina.jsonl'}"
    ids = _iteration_ids(p)
    assert [len(x) for x in ids] == [2, 3, 1]
    flat = [i for x in ids for i in x]
    assert len(set(flat)) == 6 and not set(flat) & {"n0", "n1", "n2", "n3"}  # disjoint from IFT/EFT and each other
    s = json.loads((p.data / "questions_summary.json").read_text())
    assert (s["pool"], s["excluded_overlap"], s["available"], s["sampled"], s["sft_questions"]) == (12, 4, 8, 6, 4)
    assert s["per_iteration"] == [2, 3, 1] and s["seed"] == 0
    # the same seed draws the same questions; another seed another order
    p2, _ = _pipeline(tmp_path, seed=0, out="again")
    p2.stage_data()
    assert _iteration_ids(p2) == ids
    p3, _ = _pipeline(tmp_path, seed=1, out="other")
    p3.stage_data()
    assert _iteration_ids(p3) != ids


def test_too_few_questions_left_after_ift_and_eft_is_a_config_error(tmp_path):
    from psr.config import ConfigError

    p, _ = _pipeline(tmp_path, seed=0, pool=9)  # 9 - 4 used = 5 < 6 needed
    with pytest.raises(ConfigError, match=r"^questions: .*only 5 of 9 .*questions_per_iteration needs 6"):
        p.stage_data()
    assert not p.done("data")


@pytest.mark.parametrize("family", ["qwen2_5_math_7b", "qwen2_5_math_72b"])
def test_big_family_pipelines_refuse_to_run_without_a_question_source(tmp_path, family):
    def run(*extra):
        return run_cmd([sys.executable, "-m", "psr.cli", "run", "pipeline", "--config", f"{family}/pipeline",
                        f"output_dir={tmp_path / 'run'}", *extra], 120, cwd=REPO)

    p = run()
    assert p.returncode == 2 and "questions" in p.stderr and "required" in p.stderr and "gsm8k" not in p.stderr
    p = run("questions=/data/numina.jsonl", "eft.overrides=[]")
    assert p.returncode == 2 and "eft.overrides: input is not set (eft_build's question source" in p.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("recipe", ["ift_build", "eft_build"])
@pytest.mark.parametrize("family", ["qwen2_5_math_7b", "qwen2_5_math_72b"])
def test_ift_and_eft_build_name_the_missing_input(recipe, family, tmp_path):
    from psr.config import ConfigError, load_config
    from fakes import load_recipe

    mod = load_recipe(recipe)
    schema = mod.IftBuildConfig if recipe == "ift_build" else mod.EftBuildConfig
    over = [f"output_dir={tmp_path}", "teacher.base_url=http://127.0.0.1:1/v1", "teacher.model=m",
            "policy.model_dir=/m", "prm.model_dir=/p"][: 3 if recipe == "ift_build" else 5]
    with pytest.raises(ConfigError, match=r"required key\(s\) not set: input"):
        load_config(schema, f"{family}/{recipe}", over)
    assert load_config(schema, f"{family}/{recipe}", over + ["input=/q.jsonl"]).input == "/q.jsonl"
    if recipe == "eft_build":
        assert schema().emit_both_orders is False  # one record per kept pair by default (issue 18.5)


def _stage_calls(tmp_path, *overrides):
    from psr.config import load_config
    from recipes.pipeline import Pipeline, PipelineConfig

    qs = tmp_path / "numina.jsonl"
    qs.write_text("".join(json.dumps({"id": f"n{i}", "problem": f"p{i}"}) + "\n" for i in range(10)))
    cfg = load_config(PipelineConfig, str(REPO / "configs/qwen2_5_math_7b/pipeline.yaml"),
                      [f"output_dir={tmp_path / 'run'}", "base_model=/m/q7", f"questions={qs}",
                       "questions_per_iteration=[1,1,1]", "iterations=1", "eval_tts=false", *overrides])
    p = Pipeline(cfg)
    calls = {}

    def fake_run(stage, recipe, spec, overrides, resume_key=None):
        calls[stage] = (str(spec.config), list(overrides) + [str(o) for o in spec.overrides])
        (p.stages / stage).mkdir(parents=True, exist_ok=True)
        if recipe == "step_search":
            (p.stages / stage / "pairs.jsonl").write_text(json.dumps({"chosen": "a", "rejected": "b"}) + "\n")
        p.mark(stage, 0.0)

    p.run_recipe = fake_run
    p.stage_data()
    p.stage_train()
    p.stage_eval()
    return p, calls


def test_the_7b_pipeline_trains_the_papers_one_72b_prm_by_default(tmp_path):
    p, calls = _stage_calls(tmp_path)
    assert calls["prm"][0] == "qwen2_5_math_72b/prm_train"
    assert calls["prm"][1] == ["model_dir=/models/Qwen2.5-72B", "data=prm800k/phase2_train.jsonl"]
    assert f"prm.model_dir={p.stages / 'prm' / 'final'}" in calls["eft"][1]


def test_an_existing_prm_dir_skips_the_prm_stage(tmp_path):
    prm = tmp_path / "prm72"
    prm.mkdir()
    (prm / "config.json").write_text("{}")
    p, calls = _stage_calls(tmp_path, f"prm_model={prm}")
    assert "prm" not in calls and f"prm.model_dir={prm}" in calls["eft"][1]


def test_one_eft_set_reused_skips_prm_and_eft_and_feeds_m1_and_the_judge_evals(tmp_path):
    eft = tmp_path / "psr_72b_eft"
    eft.mkdir()
    (eft / "eft_train.jsonl").write_text(json.dumps({"id": "e", "question": "p1"}) + "\n")
    (eft / "eft_test.jsonl").write_text("")
    p, calls = _stage_calls(tmp_path, f"eft_dir={eft}")
    assert "prm" not in calls and "eft" not in calls
    assert f"eft_data={eft / 'eft_train.jsonl'}" in calls["m1"][1]
    assert f"eft_test={eft / 'eft_test.jsonl'}" in calls["judge_M1"][1]
    summary = json.loads((p.data / "questions_summary.json").read_text())
    assert summary["excluded_overlap"] == 1  # p1, an EFT question of the reused set, is not asked again
    assert "n1" not in [json.loads(l)["id"] for l in (p.data / "iter1_questions.jsonl").open()]


@pytest.mark.parametrize("key,message", [("eft_dir", "eft_dir: {} has no eft_train.jsonl"),
                                         ("prm_model", "prm_model: {} has no config.json")])
def test_a_reused_prm_or_eft_dir_must_hold_its_files(tmp_path, key, message):
    r = run_cmd([sys.executable, "-m", "psr.cli", "run", "pipeline", "--config", "qwen2_5_math_7b/pipeline",
                 f"output_dir={tmp_path / 'run'}", "questions=/q.jsonl", f"{key}={tmp_path}"], 120, cwd=REPO)
    assert r.returncode == 2 and message.format(tmp_path) in r.stderr
