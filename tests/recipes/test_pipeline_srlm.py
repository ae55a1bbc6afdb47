"""The pipeline's method=srlm (the SRLM baseline, recipes/pipeline.py): stage wiring, data,
budgets and validation, and M0's few-shot judge eval, with the recipes replaced by a recorder (fast)."""

import json
import sys
from pathlib import Path

import pytest

from fakes import run_cmd

REPO = Path(__file__).resolve().parents[2]


def _pipeline(tmp_path, monkeypatch, *overrides):
    sys.path.insert(0, str(REPO))
    from psr.config import load_config
    from recipes.pipeline import Pipeline, PipelineConfig

    cfg = load_config(PipelineConfig, str(REPO / "configs/arith/pipeline_smoke.yaml"),
                      [f"output_dir={tmp_path}", *overrides])
    p = Pipeline(cfg)
    calls = {}

    def fake_run(stage, recipe, spec, overrides, resume_key=None):
        calls[stage] = (recipe, str(spec.config), list(overrides))
        (p.stages / stage).mkdir(parents=True, exist_ok=True)
        if recipe in ("step_search", "srlm_search"):
            (p.stages / stage / "pairs.jsonl").write_text(json.dumps({"chosen": "a", "rejected": "b"}) + "\n")
        p.mark(stage, 0.0)

    monkeypatch.setattr(p, "run_recipe", fake_run)
    return p, calls


def test_srlm_runs_srlm_search_on_the_same_questions_and_trains_m1_on_ift_plus_scoring_eft(tmp_path, monkeypatch):
    runs = {}
    for method in ("psr", "srlm"):
        p, calls = _pipeline(tmp_path / method, monkeypatch, f"method={method}", "eval_headroom=false")
        p.stage_data()
        p.stage_train()
        p.stage_eval()
        runs[method] = (p, calls)
    (ps, pc), (ss, sc) = runs["psr"], runs["srlm"]
    # the same data and questions for both methods
    for name in ("ift_train.jsonl", "iter1_questions.jsonl", "m0_text.jsonl", "arith/test.jsonl"):
        assert (ps.data / name).read_text() == (ss.data / name).read_text()
    assert not (ps.data / "srlm_eft_train.jsonl").exists()
    # M1: the same IFT, the scoring EFT instead of the step-wise one
    assert pc["m1"][2][1:] == [f"ift_data={ps.data / 'ift_train.jsonl'}", f"eft_data={ps.data / 'eft_train.jsonl'}"]
    assert sc["m1"][2][1:] == [f"ift_data={ss.data / 'ift_train.jsonl'}", f"text_data={ss.data / 'srlm_eft_train.jsonl'}"]
    # iterations: srlm_search with the same model/questions/seed arguments, then the same step_dpo
    assert pc["search_1"][:2] == ("step_search", "arith/step_search")
    assert sc["search_1"][:2] == ("srlm_search", "arith/srlm_search")
    rel = lambda p, c: [o.replace(str(p.out), "OUT") for o in c]  # noqa: E731
    assert rel(ss, sc["search_1"][2]) == rel(ps, pc["search_1"][2]) == [
        "model_dir=OUT/stages/m1/final", "questions=OUT/data/iter1_questions.jsonl", "seed=1"]
    assert sc["dpo_1"][0] == "step_dpo" and sc["dpo_1"][2][1] == f"pairs={ss.stages / 'search_1' / 'pairs.jsonl'}"
    # judge eval: the scoring judge on held-out graded solutions; greedy/tts evals unchanged
    assert sc["judge_M1"][2][-2:] == ["mode=score", f"score_test={ss.data / 'srlm_eft_test.jsonl'}"]
    assert pc["judge_M1"][2][-2:] == ["mode=judge", f"eft_test={ps.data / 'eft_test.jsonl'}"]
    assert pc["judge_M0"][2][-2:] == ["mode=judge", f"eft_test={ps.data / 'eft_test.jsonl'}"]  # arith: 0-shot
    assert rel(ss, sc["eval_M2"][2]) == rel(ps, pc["eval_M2"][2]) and rel(ss, sc["tts_M1"][2]) == rel(ps, pc["tts_M1"][2])
    # the scoring EFT: as many records as the step-wise EFT (one correct + one wrong solution per EFT problem)
    from psr.data.jsonl import read_jsonl

    eft = read_jsonl(ss.data / "eft_train.jsonl")
    srlm_eft = read_jsonl(ss.data / "srlm_eft_train.jsonl")
    assert len(srlm_eft) == len(eft) == 128 and {r["score"] for r in srlm_eft} == {2, 5}
    assert len(read_jsonl(ss.data / "srlm_eft_test.jsonl")) == len(read_jsonl(ss.data / "eft_test.jsonl"))


def test_srlm_judge_budget_is_checked_against_the_scoring_judgments(tmp_path, monkeypatch):
    from psr.config import ConfigError

    p, _ = _pipeline(tmp_path, monkeypatch, "method=srlm", "srlm.overrides=[search.max_new_tokens_judge=8]")
    with pytest.raises(ConfigError, match=r"srlm: search.max_new_tokens_judge=8 is shorter than the longest EFT judgment .*"
                                          r"add search.max_new_tokens_judge=\d+ to srlm.overrides"):
        p.stage_data()
    assert (p.data / "srlm_eft_train.jsonl").exists()


def test_srlm_pair_checker_grades_whole_solutions(tmp_path, monkeypatch):
    from psr.arith import load_problems
    from psr.steps import format_steps

    p, _ = _pipeline(tmp_path, monkeypatch, "method=srlm")
    p.stage_data()
    prob = load_problems(p.data / "iter1_problems.jsonl")[0]
    good = format_steps(prob.steps)
    bad = good.replace(f"\\boxed{{{prob.answer}}}", f"\\boxed{{{prob.answer + 1}}}")
    check = p.pair_checker()
    assert check(1, {"prompt": prob.question, "chosen": good, "rejected": bad}) == (True, False)
    assert check(1, {"prompt": prob.question, "chosen": bad, "rejected": "no steps"}) == (False, False)
    assert check(1, {"prompt": "another question", "chosen": good, "rejected": bad}) is None


def _run(args, timeout=600):
    return run_cmd([sys.executable, "-m", "psr.cli", "run", "pipeline", *args], timeout, cwd=REPO)


def test_method_is_validated(tmp_path):
    p = _run(["--config", "arith/pipeline", f"output_dir={tmp_path}", "method=dpo"])
    assert p.returncode == 2 and "method must be psr or srlm, got 'dpo'" in p.stderr
    p = _run(["--config", "arith/pipeline", f"output_dir={tmp_path}", "method=srlm", "checker_judge=true"])
    assert p.returncode == 2 and "checker_judge: a diagnostic of method=psr" in p.stderr
    p = _run(["--config", "smollm2_135m/pipeline", f"output_dir={tmp_path}", "base_model=/m", "questions=/q.jsonl",
              "method=srlm"])
    assert p.returncode == 2 and "srlm_eft_data: required with method=srlm and source=recipes" in p.stderr
    p = _run(["--config", "arith/pipeline", f"output_dir={tmp_path}", "method=srlm", "~srlm.config"])
    assert p.returncode == 2
    p = _run(["--config", "bags/pipeline", f"output_dir={tmp_path}", "method=srlm"])
    assert p.returncode == 2 and "method=srlm: runs in the arith world or on real data" in p.stderr


@pytest.mark.parametrize("shots", [3, 0])
def test_recipes_m0_judge_is_evaluated_few_shot_from_the_eft_train_set(tmp_path, monkeypatch, shots):
    sys.path.insert(0, str(REPO))
    from psr.config import load_config
    from recipes.pipeline import Pipeline, PipelineConfig

    eft = tmp_path / "eft"
    eft.mkdir()
    for name in ("eft_train.jsonl", "eft_test.jsonl"):
        (eft / name).write_text("")
    qs = tmp_path / "questions.jsonl"
    qs.write_text("".join(json.dumps({"id": f"g{i}", "problem": f"q{i}?"}) + "\n" for i in range(10)))
    cfg = load_config(PipelineConfig, str(REPO / "configs/smollm2_135m/pipeline.yaml"),
                      [f"output_dir={tmp_path / 'run'}", "base_model=/m/smol", f"questions={qs}", f"eft_dir={eft}",
                       "iterations=1", "eval_tts=false", f"m0_judge_shots={shots}"])
    p = Pipeline(cfg)
    calls = {}

    def fake_run(stage, recipe, spec, overrides, resume_key=None):
        calls[stage] = list(overrides)
        p.mark(stage, 0.0)

    monkeypatch.setattr(p, "run_recipe", fake_run)
    p.stage_eval()
    want = [f"judge_shots=3", f"judge_shots_from={eft / 'eft_train.jsonl'}"] if shots else []
    assert calls["judge_M0"] == ["model_dir=/m/smol", "mode=judge", f"eft_test={eft / 'eft_test.jsonl'}", *want]
    assert not any(o.startswith("judge_shots") for o in calls["judge_M1"] + calls["judge_M2"])


def test_tts_runs_over_the_whole_benchmarks_by_default(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO))
    from omegaconf import OmegaConf

    from psr.config import load_config
    from recipes.pipeline import Pipeline, PipelineConfig

    assert OmegaConf.structured(PipelineConfig).tts_limit is None
    for fam in ("qwen2_5_math_7b", "qwen2_5_math_72b"):
        assert load_config(PipelineConfig, f"{fam}/pipeline", ["output_dir=/x", "questions=/q.jsonl"]).tts_limit is None
    cfg = load_config(PipelineConfig, "qwen2_5_math_7b/pipeline", [f"output_dir={tmp_path}", "questions=/q.jsonl",
                                                                   "iterations=1", "eft_dir=/e"])
    p = Pipeline(cfg)
    calls = {}
    monkeypatch.setattr(p, "run_recipe", lambda stage, recipe, spec, overrides, resume_key=None:
                        calls.__setitem__(stage, list(overrides)))
    p.stage_eval()
    assert calls["tts_M1"] == [f"model_dir={p.model(1)}", "mode=tts"]  # no limit=
    cfg.tts_limit = 7
    p.stage_eval()
    assert calls["tts_M2"][-1] == "limit=7"
