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
