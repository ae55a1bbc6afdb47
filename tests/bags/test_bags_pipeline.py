"""The pipeline's source=bags hook: its stages and commands (print mode: nothing runs), the data
stage's files, and the checker-judged generator picked by a problems file's world."""

import shlex
import sys
from pathlib import Path

from psr.data.jsonl import read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def test_print_commands_lists_the_bags_stages(tmp_path):
    import subprocess

    p = subprocess.run([sys.executable, "-m", "psr.cli", "run", "pipeline", "--config", "bags/pipeline",
                        f"output_dir={tmp_path / 'run'}", "iterations=1", "print_commands=true"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    stages = [l[2:].split()[0] for l in lines if l.startswith("# ") and not l.startswith("# in process")]
    assert stages == ["data", "m0", "eft_sample", "m1", "search_1", "dpo_1", "eval_M0", "judge_M0", "eval_M1",
                      "judge_M1", "headroom_M1", "diagnose_M1", "eval_M2", "judge_M2", "headroom_M2", "report"]
    cmd = {s: shlex.split(lines[lines.index(f"# {s}") + 1]) for s in stages if s != "data"}
    run = tmp_path / "run"
    assert cmd["eft_sample"][1:4] == ["-m", "psr.bags", "eft-sample"] and "--skip=2000" in cmd["eft_sample"]
    assert f"eft_data=[{run / 'data' / 'eft_train.jsonl'},{run / 'stages' / 'eft_sample' / 'eft_sampled.jsonl'}]" in cmd["m1"]
    assert cmd["headroom_M1"][1:4] == ["-m", "psr.bags", "headroom"]
    assert cmd["diagnose_M1"][1:4] == ["-m", "psr.bags", "diagnose"]
    assert str(run / "stages" / "eval_M1" / "arith" / "items.jsonl") in cmd["diagnose_M1"]
    assert "bags/step_search" in cmd["search_1"] and "beta=1.0" in cmd["dpo_1"]
    assert not run.exists()


def test_data_stage_writes_the_arith_file_set(tmp_path):
    from psr.bags.pipeline import write_pipeline_data

    w = {"n_train": 30, "n_test": 20, "train_ops": [1, 2], "test_ops": [1, 3], "n_eft_train_problems": 10}
    write_pipeline_data(tmp_path, w, 0, [4, 6], [2, 3], {"hidden_size": 32, "num_layers": 1, "intermediate_size": 64})
    for name in ("problems_train", "problems_test", "ift_train", "eft_train", "eft_test", "m0_text", "iter1_questions",
                 "iter2_problems"):
        assert (tmp_path / f"{name}.jsonl").is_file(), name
    assert len(read_jsonl(tmp_path / "iter2_questions.jsonl")) == 6
    it = read_jsonl(tmp_path / "iter1_problems.jsonl")
    assert {r["n_pairs"] for r in it} <= {2, 3} and all(r["world"] == "bags" for r in it)
    test_q = {r["question"] for r in read_jsonl(tmp_path / "problems_test.jsonl")}
    assert not test_q & {r["question"] for r in it}
    assert len(read_jsonl(tmp_path / "eft_train.jsonl")) == 20 and len(read_jsonl(tmp_path / "arith" / "test.jsonl")) == 20
    assert (tmp_path / "init_model" / "config.json").is_file()


def test_checker_judged_picks_the_world_of_the_problems_file(tmp_path):
    from psr.arith import CheckerJudged
    from psr.bags.problems import generate_problems
    from psr.bags.teacher import BagsCheckerJudged, checker_judged
    from psr.generation.base import SamplingParams

    class Policy:
        name, version, tokenizer = "p", "1", None

    f = tmp_path / "p.jsonl"
    probs = generate_problems(3, 0, "x", 1, 2)
    write_jsonl(f, [p.to_dict() for p in probs])
    gen = checker_judged(Policy(), str(f))
    assert isinstance(gen, BagsCheckerJudged)
    from psr import prompts

    p = probs[0]
    prompt = prompts.judge_prompt(p.question, [], "Step 1: " + p.steps[0], "Step 1: Bag 1: 1 + 2 = 3 grams.")
    out = gen.generate([prompt], SamplingParams(n=1))
    assert out[0][0].text.endswith("[[A]]")
    from psr.arith.problems import generate_problems as arith_problems

    g = tmp_path / "a.jsonl"
    write_jsonl(g, [q.to_dict() for q in arith_problems(2, 0, "x", 1, 2)])
    assert type(checker_judged(Policy(), str(g))) is CheckerJudged
