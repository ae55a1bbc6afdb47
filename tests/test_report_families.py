"""psr/report.py for every family (issue 18.6): a source=recipes pipeline's outputs (several
benchmarks, no arith data dir) render Tables 1-5 with the average, the M_{i+1}-M_i deltas, judge
accuracy, step statistics and TTS, and report.json has the arith report's shape. The stage outputs
are written with eval's own summary functions (recipes/eval.py), in the exact format eval writes."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fakes import load_recipe

# per model: {benchmark: (correct of n, steps per item, tokens per step)}
GREEDY = {0: {"gsm8k": (4, 10, 3, 20.0), "math500": (2, 8, 5, 30.0)},
          1: {"gsm8k": (6, 10, 4, 18.0), "math500": (3, 8, 6, 28.0)},
          2: {"gsm8k": (7, 10, 4, 16.0), "math500": (5, 8, 6, 26.0)}}
JUDGE = {0: (5, 10, 2), 1: (7, 10, 0), 2: (8, 10, 1)}  # correct, n, unparseable
TTS = {1: {"gsm8k": (7, 10), "math500": (4, 8)}, 2: {"gsm8k": (8, 10), "math500": (6, 8)}}


def _items(correct, n, steps=0, step_tokens=0.0):
    return [{"id": f"i{i}", "correct": i < correct, "n_steps": steps, "mean_step_tokens": step_tokens, "n_tokens": 50}
            for i in range(n)]


def _write(stage_dir: Path, mode: str, per: dict, eval_mod) -> dict:
    stage_dir.mkdir(parents=True, exist_ok=True)
    cfg = OmegaConf.create({"mode": mode, "model_dir": "/m", "prompt": "cot", "eft_test": "/e/eft_test.jsonl"})
    return eval_mod.write_summary(cfg, stage_dir, per, {"backend": "hf"})


@pytest.fixture
def recipes_run(tmp_path):
    ev = load_recipe("eval")
    st = tmp_path / "stages"
    for k, benches in GREEDY.items():
        per = {}
        for b, (c, n, s, t) in benches.items():
            recs = _items(c, n, s, t)
            (st / f"eval_M{k}" / b).mkdir(parents=True)
            (st / f"eval_M{k}" / b / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
            per[b] = ev.summarize_benchmark(recs)
        _write(st / f"eval_M{k}", "greedy", per, ev)
        c, n, u = JUDGE[k]
        _write(st / f"judge_M{k}", "judge", {"judge": {"n": n, "correct": c, "accuracy": 100.0 * c / n, "unparseable": u}}, ev)
    for k, benches in TTS.items():
        _write(st / f"tts_M{k}", "tts", {b: ev.summarize_benchmark(_items(c, n, 3, 10.0)) for b, (c, n) in benches.items()}, ev)
    (st / "search_1").mkdir()
    (st / "search_1" / "summary.json").write_text(json.dumps({"questions_written": 4, "rollbacks": 1}))
    (st / "search_1" / "pairs.jsonl").write_text(json.dumps({"chosen": "a", "rejected": "b"}) + "\n")
    return tmp_path


def test_recipes_pipeline_report_has_every_benchmark_the_average_and_deltas(recipes_run):
    from psr.report import write_report

    md = write_report(recipes_run, 1, plots=False).read_text()
    data = json.loads((recipes_run / "report.json").read_text())
    ms = {m["model"]: m for m in data["models"]}
    assert list(ms) == ["M0", "M1", "M2"]
    # accuracy: the benchmark average, percent; per-benchmark figures beside
    assert ms["M0"]["accuracy"] == pytest.approx((40.0 + 25.0) / 2)
    assert ms["M2"]["benchmarks"]["math500"]["accuracy"] == pytest.approx(62.5)
    assert ms["M2"]["n"] == 18
    # Table 2: M_{i+1} - M_i, average and per benchmark
    assert ms["M0"]["delta"] is None
    assert ms["M1"]["delta"] == pytest.approx((60.0 + 37.5) / 2 - 32.5)
    assert ms["M2"]["benchmarks"]["gsm8k"]["delta"] == pytest.approx(10.0)
    # Table 3, Tables 4/7, TTS
    assert [ms[m]["judge_accuracy"] for m in ms] == [50.0, 70.0, 80.0] and ms["M0"]["judge_unparseable"] == 2
    assert ms["M1"]["mean_steps"] == pytest.approx(5.0) and ms["M1"]["mean_step_tokens"] == pytest.approx(23.0)
    assert ms["M0"]["tts_accuracy"] is None and ms["M2"]["tts_accuracy"] == pytest.approx((80.0 + 75.0) / 2)
    assert ms["M1"]["tts_benchmarks"]["math500"]["accuracy"] == pytest.approx(50.0)
    assert ms["M1"]["accuracy_by_ops"] == {}  # no arith data dir: no per-operation columns
    # report.md: every benchmark, the average, the deltas
    assert "| model | n | gsm8k | math500 | average |" in md
    assert "| M0 | 18 | 40.0 | 25.0 | 32.5 |" in md
    assert "| M1 - M0 | +20.0 | +12.5 | +16.2 |" in md
    assert "| M2 - M1 | +10.0 | +25.0 | +17.5 |" in md
    assert "| M1 | 10 | 70.0 | 0 |" in md and "| M0 | 10 | 50.0 | 2 |" in md  # Table 3
    assert "| M2 | 18 | 70.0 | 80.0 | 62.5 | 75.0 | 66.2 | 77.5 |" in md  # TTS per benchmark + average
    assert "| M1 | 4.00 | 18.0 | 6.00 | 28.0 | 5.00 | 23.0 |" in md


def test_a_report_of_missing_stages_renders_dashes_not_errors(tmp_path):
    from psr.report import write_report

    (tmp_path / "stages").mkdir()
    md = write_report(tmp_path, 2, plots=False).read_text()
    data = json.loads((tmp_path / "report.json").read_text())
    assert [m["accuracy"] for m in data["models"]] == [None] * 4 and "| M3 | - | average |" not in md
    assert "| M1 - M0 | - |" in md


def test_pipeline_report_stage_of_a_recipes_family_writes_md_and_json(recipes_run, monkeypatch):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from psr.config import load_config
    from recipes.pipeline import Pipeline, PipelineConfig

    cfg = load_config(PipelineConfig, "smollm2_135m/pipeline", [f"output_dir={recipes_run}", "base_model=/m",
                                                                "questions=/q.jsonl", "iterations=1"])
    md = Pipeline(cfg).stage_report().read_text()
    assert "| M2 - M1 | +10.0 | +25.0 | +17.5 |" in md and "Pair quality needs a step checker" in md
    assert json.loads((recipes_run / "report.json").read_text())["models"][2]["accuracy"] == pytest.approx(66.25)
