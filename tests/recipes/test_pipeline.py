"""The iteration pipeline: config validation (fast) and the whole loop on the smoke config (slow)."""

import json
import sys
from pathlib import Path

import pytest

from fakes import run_cmd

REPO = Path(__file__).resolve().parents[2]


def _run(args, timeout=600):
    return run_cmd([sys.executable, "-m", "psr.cli", "run", "pipeline", *args], timeout, cwd=REPO)


def test_pipeline_configs_validate_and_bad_keys_are_named(tmp_path):
    p = _run(["--config", "arith/pipeline", f"output_dir={tmp_path}", "iterations=4"])
    assert p.returncode == 2 and "questions_per_iteration has 3 entries" in p.stderr
    p = _run(["--config", "arith/pipeline", f"output_dir={tmp_path}", "iteration=2"])
    assert p.returncode == 2 and "unknown key 'iteration'" in p.stderr
    p = _run(["--config", "arith/pipeline", f"output_dir={tmp_path}", "iteration_ops=[3,2]"])
    assert p.returncode == 2 and "iteration_ops must be [min, max]" in p.stderr
    p = _run(["--config", "arith/pipeline", f"output_dir={tmp_path}", "~m0.config"])
    assert p.returncode == 2


def test_data_stage_writes_every_iterations_questions_in_the_worlds_number_ranges(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO))
    from omegaconf import OmegaConf

    import psr.arith
    from psr.arith import load_problems
    from recipes.pipeline import Pipeline, PipelineConfig

    real = psr.arith.generate_problems

    def with_eft_questions(n, seed, split, *args, **kw):  # half of iteration 1's draw repeats EFT problems
        if split != "iter1":
            return real(n, seed, split, *args, **kw)
        return real(n // 2, seed, "eft", *args, **kw) + real(n, seed, split, *args, **kw)[n // 2:]

    monkeypatch.setattr(psr.arith, "generate_problems", with_eft_questions)

    cfg = OmegaConf.merge(OmegaConf.structured(PipelineConfig), {
        "output_dir": str(tmp_path), "iterations": 1, "questions_per_iteration": [5, 7], "iteration_ops": [2, 3],
        "world": {"n_train": 30, "n_test": 10, "train_ops": [1, 2], "test_ops": [1, 4], "eft_ops": [2, 3],
                  "n_eft_train_problems": 200, "ranges": {"start": [2, 5], "add": [1, 3], "mul": [2, 2], "div": [2, 2], "max_value": 30}},
        "model": {"hidden_size": 32, "num_layers": 1, "intermediate_size": 64}})
    Pipeline(cfg).stage_data()
    data = tmp_path / "data"
    # iteration 2's questions exist although iterations=1: a later run with iterations=2 needs them
    for i, n in ((1, 5), (2, 7)):
        probs = load_problems(data / f"iter{i}_problems.jsonl")
        assert len(probs) == n and all(2 <= p.n_ops <= 3 for p in probs)  # iteration_ops, not train_ops
        assert all(max(p.values) <= 30 for p in probs)  # the world's ranges, not the defaults (99)
        assert all(o.y <= 3 for p in probs for o in p.operations if o.op in "+-")
    test_q = {json.loads(line)["problem"] for line in (data / "arith" / "test.jsonl").open()}
    iter_q = {json.loads(line)["problem"] for line in (data / "iter1_questions.jsonl").open()}
    eft_q = {p.question for p in load_problems(data / "problems_eft.jsonl")}
    assert len(eft_q) > 5 and not test_q & iter_q and not eft_q & iter_q  # new to the judge's data too

    # judge budgets shorter than the world's EFT judgments stop the run before any training,
    # whether the data stage is new or done
    from psr.config import ConfigError

    p = Pipeline(cfg)
    p.check_judge_budgets()  # the configs' 80 tokens hold these judgments
    cfg.search.overrides = ["search.max_new_tokens_judge=20"]
    with pytest.raises(ConfigError, match=r"search: search.max_new_tokens_judge=20 is shorter than the longest EFT judgment "
                                          r"of .*data \((\d+) tokens \+ EOS.*add search.max_new_tokens_judge=\d+ to search.overrides"):
        p.stage_data()
    cfg.search.overrides = []
    cfg.eval.overrides = ["tts.max_new_tokens_judge=20"]
    with pytest.raises(ConfigError, match=r"eval: tts.max_new_tokens_judge=20 is shorter"):
        p.check_judge_budgets()
    cfg.eval.overrides = ["judge_max_new_tokens=20"]
    with pytest.raises(ConfigError, match=r"eval: judge_max_new_tokens=20 is shorter"):
        p.check_judge_budgets()


def test_headroom_samples_like_the_iterations_search_config_and_its_overrides(tmp_path):
    sys.path.insert(0, str(REPO))
    from omegaconf import OmegaConf

    from recipes.pipeline import Pipeline, PipelineConfig

    cfg = OmegaConf.merge(OmegaConf.structured(PipelineConfig), {"output_dir": str(tmp_path)})
    assert Pipeline(cfg).search_sampling() == {"width": 6, "temperature": 0.5, "top_p": 0.95, "max_new_tokens": 32}
    cfg.search.overrides = ["search.width=3", "search.temperature=0.8"]
    assert Pipeline(cfg).search_sampling() == {"width": 3, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 32}


@pytest.mark.slow
def test_smoke_pipeline_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "run"
    p = _run(["--config", "arith/pipeline_smoke", f"output_dir={out}"], timeout=2400)  # ~6 min on 2 busy cores
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    stages = {f.stem for f in (out / "stages").glob("*.done")}
    assert stages >= {"data", "m0", "m1", "search_1", "dpo_1", "eval_M0", "eval_M1", "eval_M2",
                      "judge_M0", "judge_M1", "judge_M2", "tts_M1", "tts_M2", "headroom_M1", "headroom_M2"}
    report = (out / "report.md").read_text()
    assert "## Accuracy (Table 1 shape)" in report and "| M2 |" in report
    assert "## Headroom" in report and "among w = 3 samples" in report  # the smoke search's width
    data = json.loads((out / "report.json").read_text())
    assert [m["model"] for m in data["models"]] == ["M0", "M1", "M2"]
    assert all(m["n"] == 24 or m["n"] is None for m in data["models"])
    # a second run skips every finished stage
    timings = (out / "timings.json").read_text()
    p = _run(["--config", "arith/pipeline_smoke", f"output_dir={out}"])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert json.loads((out / "timings.json").read_text())["m0"] == json.loads(timings)["m0"]


def test_recipes_source_wires_ift_prm_eft_into_m1_and_slices_new_questions(tmp_path, monkeypatch):
    """source=recipes (the real families): the stage commands and their inputs, with every recipe
    replaced by a recorder that writes the files the next stage reads."""
    sys.path.insert(0, str(REPO))
    from omegaconf import OmegaConf

    from psr.config import load_config
    from recipes.pipeline import Pipeline, PipelineConfig

    qs = tmp_path / "questions.jsonl"
    qs.write_text("".join(json.dumps({"id": f"g{i}", "problem": f"q{i}?"}) + "\n" for i in range(10)))
    cfg = load_config(PipelineConfig, str(REPO / "configs/smollm2_135m/pipeline.yaml"),
                      [f"output_dir={tmp_path / 'run'}", "base_model=/m/smol", "questions=questions.jsonl",
                       f"data_dir={tmp_path}",  # a relative questions path is looked up there
                       "questions_offset=2", "questions_per_iteration=[3,4,1]", "iterations=2", "eval_tts=false"])
    p = Pipeline(cfg)
    calls = []

    def fake_run(stage, recipe, spec, overrides, resume_key=None):
        if p.done(stage):
            return
        calls.append((stage, recipe, str(spec.config), [o for o in overrides]))
        out = p.stages / stage
        out.mkdir(parents=True, exist_ok=True)
        if recipe == "step_search":
            (out / "pairs.jsonl").write_text(json.dumps({"chosen": "a", "rejected": "b"}) + "\n")
        p.mark(stage, 0.0)

    monkeypatch.setattr(p, "run_recipe", fake_run)
    p.stage_data()
    p.stage_train()
    p.stage_eval()
    got = {c[0]: c for c in calls}
    assert [c[0] for c in calls][:5] == ["ift", "prm", "eft", "m1", "search_1"]
    assert got["eft"][3] == ["policy.model_dir=/m/smol", f"prm.model_dir={p.stages / 'prm' / 'final'}"]
    assert got["m1"][3] == ["model_dir=/m/smol", f"ift_data={p.stages / 'ift' / 'ift.jsonl'}",
                            f"eft_data={p.stages / 'eft' / 'eft_train.jsonl'}"]
    assert got["dpo_2"][3][0] == f"model_dir={p.stages / 'dpo_1' / 'final'}"
    assert got["eval_M0"][3] == ["model_dir=/m/smol", "mode=greedy"]  # the eval config's benchmarks (gsm8k)
    assert got["judge_M3"][3][-1] == f"eft_test={p.stages / 'eft' / 'eft_test.jsonl'}"
    assert "m0" not in got and not any(c[0].startswith("tts") for c in calls)
    # iteration questions: a seeded shuffle of those after the offset, disjoint across iterations
    ids = [[json.loads(line)["id"] for line in (p.data / f"iter{i}_questions.jsonl").open()] for i in (1, 2)]
    assert [len(x) for x in ids] == [3, 4] and len(set(ids[0] + ids[1])) == 7
    assert set(ids[0] + ids[1]) <= {f"g{i}" for i in range(2, 10)}
    assert ids[0] + ids[1] != [f"g{i}" for i in range(2, 9)]  # shuffled, not the file's order
    # the prm override interpolates base_model
    assert OmegaConf.to_container(cfg.prm, resolve=True)["overrides"][0] == "model_dir=/m/smol"


def test_checker_judge_diagnostic_hands_the_iterations_problems_to_step_search(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO))
    from psr.config import load_config
    from psr.report import write_report
    from recipes.pipeline import Pipeline, PipelineConfig

    cfg = load_config(PipelineConfig, str(REPO / "configs/arith/pipeline_smoke.yaml"),
                      [f"output_dir={tmp_path / 'run'}", "checker_judge=true"])
    p = Pipeline(cfg)
    calls = {}

    def fake_run(stage, recipe, spec, overrides, resume_key=None):
        calls[stage] = list(overrides)
        (p.stages / stage).mkdir(parents=True, exist_ok=True)
        if recipe == "step_search":
            (p.stages / stage / "pairs.jsonl").write_text(json.dumps({"chosen": "a", "rejected": "b"}) + "\n")
        p.mark(stage, 0.0)

    monkeypatch.setattr(p, "run_recipe", fake_run)
    p.stage_data()
    p.stage_train()
    problems = p.data / "iter1_problems.jsonl"
    assert calls["search_1"][-1] == f"checker_judge_problems={problems}" and problems.exists()
    assert not any(o.startswith("checker_judge_problems=") for o in calls["m1"] + calls["dpo_1"])
    (tmp_path / "r").mkdir()
    md = write_report(tmp_path / "r", 0, plots=False, judge="the exact checker").read_text()
    assert "**Judge of the iterations: the exact checker**" in md
    assert "Judge of the iterations" not in write_report(tmp_path / "r", 0, plots=False).read_text()
    r = _run(["--config", "smollm2_135m/pipeline", f"output_dir={tmp_path}", "base_model=/m", "checker_judge=true"])
    assert r.returncode == 2 and "checker_judge: needs source=arith" in r.stderr


def test_recipes_source_needs_its_keys_and_enough_questions(tmp_path):
    p = _run(["--config", "smollm2_135m/pipeline", f"output_dir={tmp_path}", "questions=gsm8k/train.jsonl"])
    assert p.returncode == 2 and "base_model: required with source=recipes" in p.stderr
    p = _run(["--config", "arith/pipeline", f"output_dir={tmp_path}", "source=hub"])
    assert p.returncode == 2 and "source must be arith or recipes" in p.stderr


def test_every_family_has_a_pipeline_config_of_the_same_shape():
    sys.path.insert(0, str(REPO))
    from psr.config import load_config
    from recipes.pipeline import PipelineConfig

    for fam, source in (("arith", "arith"), ("smollm2_135m", "recipes"), ("qwen2_5_math_7b", "recipes"),
                        ("qwen2_5_math_72b", "recipes")):
        cfg = load_config(PipelineConfig, f"{fam}/pipeline", ["output_dir=/tmp/x", "base_model=/m", "questions=/q.jsonl"])
        assert cfg.source == source and cfg.iterations == 3 and len(cfg.questions_per_iteration) == 3
        stages = ["sft", "search", "dpo", "eval"] + (["m0"] if source == "arith" else ["ift", "prm", "eft"])
        for key in stages:  # every stage config exists and names its family (the PRM: the paper's one 72B PRM)
            own = "qwen2_5_math_72b" if key == "prm" and fam.startswith("qwen") else fam
            assert str(cfg[key].config).startswith(f"{own}/") and (REPO / "configs" / f"{cfg[key].config}.yaml").exists()
    cfg = load_config(PipelineConfig, "qwen2_5_math_7b/pipeline", ["output_dir=/x", "questions=/q.jsonl"])
    assert cfg.questions_per_iteration == [400, 800, 1200]
