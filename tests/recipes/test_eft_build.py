"""The eft_build recipe end to end: tiny random policy, scripted PRM and teacher (test doubles),
exact filter counts, both-order records, split, resume, bad input."""

import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

from psr.config import ConfigError, load_config
from psr.data.schemas import load_eft
from psr.testing import ScriptedTeacher
from fakes import load_recipe, run_cmd

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "eft_build.py"


eft_build = load_recipe("eft_build")


def _run(out, *overrides, config="tiny/eft_build"):
    cfg = load_config(eft_build.EftBuildConfig, config, [f"output_dir={out}", *overrides])
    return eft_build.main(cfg)


def _lines(p):
    return [json.loads(l) for l in Path(p).read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir, tiny_model_dir):
    out = tmp_path_factory.mktemp("eft")
    summary = _run(out, f"data_dir={data_dir}", f"policy.model_dir={tiny_model_dir}")
    return out, summary


def test_tiny_config_counts_match_what_each_filter_should_remove(tiny_run):
    out, summary = tiny_run
    trees = _lines(out / "work" / "trees.rank0.jsonl")
    judged = _lines(out / "work" / "judged.rank0.jsonl")
    assert [t["id"] for t in trees] == [f"gsm8k-train-{i}" for i in range(4)]
    pairs = [p for t in trees for p in t["pairs"]]
    assert len(pairs) > 0 and all(p["gap"] > 0.05 for p in pairs)
    assert all(len(t["pairs"]) <= 3 and t["iterations"] <= 5 for t in trees)
    # The mixed scripted teacher's behaviour per pair is known in advance from the two texts:
    teacher = ScriptedTeacher("mixed")
    expected_status = {"prm": "kept", "anti_prm": "prm_disagree", "always_a": "inconsistent", "none": "unparseable"}
    want = Counter(expected_status[teacher.mode_for(f"Step {p['step']}: {p['best']}", f"Step {p['step']}: {p['worst']}")]
                   for p in pairs)
    got = Counter(p["status"] for j in judged for p in j["pairs"])
    assert got == want
    assert summary["pairs"]["selected"] == summary["pairs"]["judged"] == len(pairs)
    assert summary["pairs"]["kept"] == want["kept"] > 0
    for k in ("unparseable", "inconsistent", "prm_disagree"):
        assert summary["removed"][k] == want[k]
    assert summary["removed"]["over_cap"] == sum(t["removed"]["over_cap"] for t in trees)
    assert summary["pairs"]["sibling_sets"] == sum(t["n_sibling_sets"] + t["removed"]["too_few_candidates"] for t in trees)
    assert json.loads((out / "summary.json").read_text()) == summary


def test_tiny_config_records_both_orders_split_by_question(tiny_run):
    out, summary = tiny_run
    train, test = load_eft(out / "eft_train.jsonl"), load_eft(out / "eft_test.jsonl")  # schema-valid
    recs = train + test
    assert len(test) == 2 and len(recs) == 2 * summary["pairs"]["kept"]
    assert Counter(r["label"] for r in recs) == {"A": summary["pairs"]["kept"], "B": summary["pairs"]["kept"]}
    q = lambda rs: {r["id"].split("/")[0] for r in rs}
    assert not q(train) & q(test)
    by_pair = {}
    for r in recs:
        by_pair.setdefault(r["id"].rsplit("/", 1)[0], []).append(r)
    for pid, (ab, ba) in by_pair.items():
        assert (ab["step_a"], ab["step_b"]) == (ba["step_b"], ba["step_a"])
        assert ab["label"] == "A" and ba["label"] == "B" and ab["judgment"].endswith("[[A]]")
        assert ab["step_a"].startswith(f"Step {len(ab['prev_steps']) + 1}: ")


@pytest.mark.parametrize("mode, removed_key", [("prm", None), ("always_a", "inconsistent"),
                                               ("anti_prm", "prm_disagree"), ("none", "unparseable")])
def test_teacher_modes_on_the_same_trees(tiny_run, tmp_path, data_dir, mode, removed_key):
    src, _ = tiny_run
    (tmp_path / "work").mkdir()
    shutil.copy(src / "work" / "trees.rank0.jsonl", tmp_path / "work")
    # The search is done: a broken policy/prm must not even be built.
    s = _run(tmp_path, f"data_dir={data_dir}", f"teacher.mode={mode}", "policy._component_=psr.nope.Policy",
             "prm._component_=psr.nope.PRM", "emit_both_orders=false", "test_size=0")
    n = s["pairs"]["selected"]
    if removed_key is None:
        assert s["pairs"]["kept"] == n and s["records"]["train"] == n  # one order per pair
        labels = s["records"]["labels_train"]
        assert labels.get("A", 0) + labels.get("B", 0) == n
    else:
        assert s["pairs"]["kept"] == 0 and s["removed"][removed_key] == n and s["records"]["train"] == 0


def test_resume_after_a_killed_run_gives_the_same_output(tiny_run, tmp_path, data_dir, tiny_model_dir):
    full, _ = tiny_run
    # killed during the search: 2 trees written, a torn third line, nothing judged
    (tmp_path / "work").mkdir()
    lines = (full / "work" / "trees.rank0.jsonl").read_text().splitlines()
    (tmp_path / "work" / "trees.rank0.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    _run(tmp_path, f"data_dir={data_dir}", f"policy.model_dir={tiny_model_dir}")
    assert (tmp_path / "work" / "trees.rank0.jsonl").read_text() == (full / "work" / "trees.rank0.jsonl").read_text()
    for name in ("eft_train.jsonl", "eft_test.jsonl"):
        assert (tmp_path / name).read_text() == (full / name).read_text()
    # killed during judging: one question judged
    j = (full / "work" / "judged.rank0.jsonl").read_text().splitlines()
    (tmp_path / "work" / "judged.rank0.jsonl").write_text(j[0] + "\n")
    _run(tmp_path, f"data_dir={data_dir}", "policy._component_=psr.nope.Policy")
    assert (tmp_path / "work" / "judged.rank0.jsonl").read_text() == (full / "work" / "judged.rank0.jsonl").read_text()
    assert (tmp_path / "eft_train.jsonl").read_text() == (full / "eft_train.jsonl").read_text()


def test_bad_input_and_config_errors(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "a", "problem": "1+1?"}\n{"id": "b"}\n')
    with pytest.raises(eft_build.DataError, match=rf"{bad}:2: missing field\(s\) \['problem'\]"):
        _run(tmp_path / "o", f"input={bad}")
    bad.write_text('{"id": "a", "problem": "1+1?"}\n{"id": "a", "problem": "2+2?"}\n')
    with pytest.raises(eft_build.DataError, match=rf"{bad}:2: duplicate id 'a'"):
        _run(tmp_path / "o", f"input={bad}")
    no_prm = tmp_path / "no_prm.yaml"
    no_prm.write_text("input: gsm8k/train.jsonl\n"  # the question source has no default (issue 18.2)
                      "teacher: {_component_: psr.testing.ScriptedTeacher}\n"
                      "policy: {_component_: psr.testing.tiny_generator, model_dir: /nonexistent}\n")
    with pytest.raises(ConfigError, match="`prm` needs a _component_"):
        _run(tmp_path / "o", config=str(no_prm))
    with pytest.raises(ConfigError, match="rollout_value"):
        _run(tmp_path / "o", "mcts.rollout_value=max")
    p = run_cmd([sys.executable, str(RECIPE), "--config", "tiny/eft_build", f"output_dir={tmp_path / 'o'}",
                 "pair_margn=0.1"], 300, cwd=REPO)
    assert p.returncode == 2 and "unknown key 'pair_margn'" in p.stderr


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process(tiny_run, tmp_path, data_dir, tiny_model_dir):
    full, _ = tiny_run
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = run_cmd(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(RECIPE),
         "--config", "tiny/eft_build", f"output_dir={tmp_path}", f"data_dir={data_dir}",
         f"policy.model_dir={tiny_model_dir}"], 900, cwd=REPO, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    for name in ("eft_train.jsonl", "eft_test.jsonl"):
        assert (tmp_path / name).read_text() == (full / name).read_text()


@pytest.mark.parametrize("family", ["tiny", "smollm2_135m", "qwen2_5_math_7b", "qwen2_5_math_72b"])
def test_family_configs_load_and_name_real_components(family, tmp_path):
    from psr.config import _locate

    over = [f"output_dir={tmp_path}"]
    if family != "tiny":
        over += ["policy.model_dir=/m/policy", "prm.model_dir=/m/prm"]
    if family.startswith("qwen"):  # the 7B/72B configs leave the question source to the user
        over += ["teacher.base_url=http://127.0.0.1:8000/v1", "teacher.model=m", "input=/data/numina_questions.jsonl"]
    cfg = load_config(eft_build.EftBuildConfig, f"{family}/eft_build", over)
    eft_build.validate(cfg)
    for key in ("policy", "prm", "teacher"):
        assert callable(_locate(cfg[key]["_component_"]))
    if family.startswith("qwen"):  # the paper's search settings
        assert (cfg.mcts.simulation_depth, cfg.mcts.num_iterations, cfg.mcts.temperature, cfg.mcts.top_p) == (3, 100, 0.7, 0.95)
        assert cfg.test_size == 500 and not cfg.emit_both_orders
    if family == "smollm2_135m":
        assert cfg.teacher.model_dir == "/m/policy"  # the policy model judges in the smoke run
