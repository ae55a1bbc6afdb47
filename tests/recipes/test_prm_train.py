"""prm_train end to end on a tiny random model (CPU, fp32)."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from psr.config import ConfigError, load_config
from psr.data.jsonl import DataError, write_jsonl
from psr.models.tiny import build_tiny_model_dir
from psr.prm import PRMScorer
from psr.testing import tiny_prm_records
from psr.training.loop import SimulatedKill
from psr.training.metrics import read_metrics
from fakes import load_recipe, run_cmd

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "prm_train.py"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("prm_assets")
    model = build_tiny_model_dir(d / "model", seed=0)
    data = d / "prm.jsonl"
    write_jsonl(data, tiny_prm_records(32, seed=0))
    return model, data


def _args(assets, out, **kw):
    model, data = assets
    base = dict(model_dir=str(model), data=str(data), output_dir=str(out), device="cpu", dtype="float32",
                batch_size=8, micro_batch_size=8, lr=2e-3, warmup_steps=2, min_lr_ratio=0.1, step_tag="'#'",
                length_grouped=False, max_seq_len=512, progress_bar=False, seed=0)
    base.update(kw)
    return [f"{k}={v}" for k, v in base.items()]


def _cfg(mod, assets, out, **kw):
    return load_config(mod.PrmTrainConfig, None, _args(assets, out, **kw))


def test_loss_drops_over_20_steps_and_the_saved_prm_scores_steps(assets, tmp_path):
    from transformers import AutoModelForCausalLM

    mod = load_recipe("prm_train")
    # lr 5e-3: the random model leaves its "predict the base rate" plateau around step 11.
    res = mod.main(_cfg(mod, assets, tmp_path / "run", max_steps=20, epochs=5, lr=5e-3))
    assert res.steps == 20
    first, last = res.losses[0], res.losses[-1]
    assert 0.55 < first < 0.85  # ~log 2 for a random model on 2 candidate tokens
    assert last < first - 0.3, res.losses
    logged = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["loss"] for r in logged] == pytest.approx(res.losses)
    assert logged[-1]["accuracy"] >= 0.9 and all("tokens_per_second" in r for r in logged)
    final = tmp_path / "run" / "final"
    assert json.loads((final / "prm_config.json").read_text())["step_tag"] == "#"
    loaded = AutoModelForCausalLM.from_pretrained(str(final)).eval()
    x = torch.tensor([[5, 17, 99, 3, 250, 7, 42]])
    with torch.no_grad():
        torch.testing.assert_close(res.model.eval()(input_ids=x).logits, loaded(input_ids=x).logits, rtol=0, atol=1e-5)
    # The trained PRM separates good from bad steps of the training distribution.
    sc = PRMScorer(final)
    good = sc.score_steps("What is 3 + 4 + 5?", ["We compute 3 + 4 = 7.", "Then 7 + 5 = 12."])
    bad = sc.score_steps("What is 3 + 4 + 5?", ["We compute 3 + 4 = 7.", "I guess 7 + 5 is 13, maybe."])
    assert len(good) == 2 and good[1] > 0.7 and bad[1] < 0.3
    s = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert (s["examples"], s["positive"], s["negative"], s["truncated"], s["dropped"]) == (32, 48, 16, 0, 0)


def test_kill_and_resume_reproduces_uninterrupted_losses(assets, tmp_path, monkeypatch):
    mod = load_recipe("prm_train")
    kw = dict(max_steps=6, epochs=2, save_every_n_steps=2)
    full = mod.main(_cfg(mod, assets, tmp_path / "full", **kw))
    monkeypatch.setenv("PSR_FAULT_AFTER_STEP", "3")
    with pytest.raises(SimulatedKill):
        mod.main(_cfg(mod, assets, tmp_path / "cut", **kw))
    monkeypatch.delenv("PSR_FAULT_AFTER_STEP")
    resumed = mod.main(_cfg(mod, assets, tmp_path / "cut", resume_from_checkpoint=True, **kw))
    assert resumed.losses == full.losses[2:]
    assert [r["loss"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl")] == full.losses


def test_bad_data_and_bad_tokens_fail_before_training(assets, tmp_path):
    mod = load_recipe("prm_train")
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, tiny_prm_records(2) + [{"prompt": "q", "completions": ["a"], "labels": [True, False]}])
    with pytest.raises(DataError, match=r"bad\.jsonl:3: 'labels' must be a list with one label per completion"):
        mod.main(_cfg(mod, assets, tmp_path / "o", data=str(bad)))
    with pytest.raises(ConfigError, match=r"step_tag=' ки' must be a single token"):
        mod.main(_cfg(mod, assets, tmp_path / "o", step_tag="' ки'"))
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_two_processes_match_one_process_at_the_same_global_batch(assets, tmp_path):
    args = [a for a in _args(assets, "X", max_steps=3, micro_batch_size=4, save_every_n_steps=100)
            if not a.startswith("output_dir=")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(RECIPE), *args, f"output_dir={tmp_path / 'two'}"]
    r = run_cmd(cmd, 900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    mod = load_recipe("prm_train")
    one = mod.main(load_config(mod.PrmTrainConfig, None, args + [f"output_dir={tmp_path / 'one'}"]))
    two = [rec["loss"] for rec in read_metrics(tmp_path / "two" / "metrics.jsonl")]
    # mean over all tags of the global batch: equal up to fp32 summation order
    assert two == pytest.approx(one.losses, rel=1e-4, abs=1e-5)
