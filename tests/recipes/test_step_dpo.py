"""step_dpo end to end on a tiny random model (CPU, fp32): loss drop, saved dir, reference
cache reuse/invalidation, kill-and-resume, 2-process torchrun parity, bad data."""

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

from psr.config import ConfigError, load_config
from psr.data.jsonl import DataError, write_jsonl
from psr.models.tiny import build_tiny_model_dir
from psr.testing import tiny_pairs
from psr.training.loop import SimulatedKill
from psr.training.metrics import read_metrics
from fakes import load_recipe, run_cmd

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "step_dpo.py"
METRICS = ("loss", "lr", "tokens_per_second", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
           "rewards/margins", "logps/chosen", "logps/rejected")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("dpo_assets")
    model = build_tiny_model_dir(d / "model", seed=0)
    pairs = d / "pairs.jsonl"
    write_jsonl(pairs, tiny_pairs(32, seed=0))
    return model, pairs


def _args(assets, out, **kw):
    model, pairs = assets
    base = dict(model_dir=str(model), pairs=str(pairs), output_dir=str(out), device="cpu", dtype="float32",
                batch_size=4, micro_batch_size=4, lr=3e-3, warmup_steps=2, min_lr_ratio=0.1, beta=0.1,
                max_seq_len=512, progress_bar=False, seed=0)
    base.update(kw)
    return [f"{k}={v}" for k, v in base.items()]


def _cfg(mod, assets, out, **kw):
    return load_config(mod.StepDpoConfig, None, _args(assets, out, **kw))


def test_loss_drops_over_20_steps_saved_dir_reproduces_logits_and_ref_cache_is_reused(assets, tmp_path):
    from transformers import AutoModelForCausalLM

    mod = load_recipe("step_dpo")
    cache = tmp_path / "ref_cache"
    res = mod.main(_cfg(mod, assets, tmp_path / "run", max_steps=20, epochs=3, ref_cache_dir=str(cache)))
    assert res.steps == 20 and res.summary["ref_cache"] == "computed" and res.summary["pairs"] == 32
    # Step 1 is computed before any update: policy == reference, so every pair's loss is log 2.
    assert res.losses[0] == pytest.approx(math.log(2), abs=1e-5)
    assert res.losses[-1] < res.losses[0] - 0.4, res.losses
    logged = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["loss"] for r in logged] == pytest.approx(res.losses)
    for k in METRICS:
        assert all(k in r for r in logged), k
    assert logged[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert logged[-1]["rewards/accuracies"] >= 0.75 and logged[-1]["rewards/margins"] > 0.3
    assert logged[-1]["rewards/chosen"] > logged[-1]["rewards/rejected"]
    final = tmp_path / "run" / "final"
    loaded = AutoModelForCausalLM.from_pretrained(str(final)).eval()
    x = torch.tensor([[5, 17, 99, 3, 250, 7, 42]])
    with torch.no_grad():
        a, b = res.model.eval()(input_ids=x).logits, loaded(input_ids=x).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    key = res.summary["ref_cache_key"]
    assert (cache / f"{key[:32]}.safetensors").exists()

    # Same model + data (β changed: not part of the key): the cache is reused, step 1 is log 2 again.
    again = mod.main(_cfg(mod, assets, tmp_path / "again", max_steps=1, ref_cache_dir=str(cache), beta=0.3))
    assert again.summary["ref_cache"] == "reused" and again.summary["ref_cache_key"] == key
    assert again.losses[0] == pytest.approx(math.log(2), abs=1e-5)
    # Changed data: a different key, recomputed.
    changed = tmp_path / "changed.jsonl"
    recs = tiny_pairs(32, seed=0)
    recs[3]["rejected"] = "Step 1: something else entirely.\n"
    write_jsonl(changed, recs)
    other = mod.main(_cfg(mod, assets, tmp_path / "other", max_steps=1, ref_cache_dir=str(cache), pairs=str(changed)))
    assert other.summary["ref_cache"] == "computed" and other.summary["ref_cache_key"] != key
    assert len(list(cache.glob("*.safetensors"))) == 2


def test_nll_weight_adds_the_chosen_steps_per_token_nll_to_the_dpo_loss(assets, tmp_path):
    from transformers import AutoModelForCausalLM

    from psr.data.pairs import load_pairs
    from psr.models.hf import load_tokenizer
    from psr.training.dpo import collate_pairs, forward_logps, tokenize_pairs

    mod = load_recipe("step_dpo")
    model_dir, pairs = assets
    tok = load_tokenizer(model_dir)
    ex = tokenize_pairs(tok, load_pairs(pairs), max_seq_len=512)  # all 32: step 1 is one batch of them all
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        b = collate_pairs(ex, tok.pad_token_id)
        pc, _ = forward_logps(model, b, torch.device("cpu"))
    per_token = (-pc / torch.tensor([len(t.chosen_ids) for t in ex], dtype=torch.float32)).tolist()
    assert all(x > 0.5 for x in per_token)  # a random model: far from the chosen steps
    res = mod.main(_cfg(mod, assets, tmp_path / "run", max_steps=1, nll_weight=0.5, batch_size=32,
                        micro_batch_size=32))
    logged = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert res.summary["nll_weight"] == 0.5
    assert logged[0]["nll/chosen"] == pytest.approx(sum(per_token) / 32, rel=1e-4)
    assert res.losses[0] == pytest.approx(math.log(2) + 0.5 * sum(per_token) / 32, rel=1e-4)
    with pytest.raises(ConfigError, match="nll_weight"):
        mod.main(_cfg(mod, assets, tmp_path / "bad", nll_weight=-1))


def test_kill_and_resume_reproduces_uninterrupted_losses(assets, tmp_path, monkeypatch):
    mod = load_recipe("step_dpo")
    kw = dict(max_steps=6, epochs=1, save_every_n_steps=2)
    full = mod.main(_cfg(mod, assets, tmp_path / "full", **kw))
    monkeypatch.setenv("PSR_FAULT_AFTER_STEP", "5")  # killed after step 5; last save at step 4
    with pytest.raises(SimulatedKill):
        mod.main(_cfg(mod, assets, tmp_path / "cut", **kw))
    monkeypatch.delenv("PSR_FAULT_AFTER_STEP")
    resumed = mod.main(_cfg(mod, assets, tmp_path / "cut", resume_from_checkpoint=True, **kw))
    assert resumed.summary["ref_cache"] == "reused"  # the reference is M_i, not the resumed weights
    assert resumed.losses == full.losses[4:]  # bitwise
    logged = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["step"] for r in logged] == list(range(1, 7))
    assert [r["loss"] for r in logged] == full.losses


def test_bad_pairs_fail_before_training_naming_file_and_line(assets, tmp_path):
    mod = load_recipe("step_dpo")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(tiny_pairs(1)[0]) + "\n" + json.dumps({"question": "q", "prev_steps": [], "chosen": "a"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: a preference pair needs fields"):
        mod.main(_cfg(mod, assets, tmp_path / "o", pairs=str(bad)))
    assert not (tmp_path / "o" / "metrics.jsonl").exists()
    assert not (tmp_path / "o" / "ref_logps").exists()


def test_fewer_pairs_than_batch_size_fail_or_shrink_the_batch(assets, tmp_path):
    mod = load_recipe("step_dpo")
    few = tmp_path / "few.jsonl"
    write_jsonl(few, tiny_pairs(32, seed=0)[:5])
    with pytest.raises(ConfigError, match="batch_size=16: only 5 usable pairs"):
        mod.main(_cfg(mod, assets, tmp_path / "a", pairs=str(few), batch_size=16, micro_batch_size=2))
    mod.main(_cfg(mod, assets, tmp_path / "b", pairs=str(few), batch_size=16, micro_batch_size=2,
                  shrink_batch_to_pairs=True, epochs=2))
    rows = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]  # one batch of 4 (2 x micro 2) per epoch
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # the policy starts at the reference


@pytest.mark.slow
def test_two_processes_match_one_process_at_the_same_global_batch(assets, tmp_path):
    args = _args(assets, "X", max_steps=3, warmup_steps=1, save_every_n_steps=100, micro_batch_size=2)
    args = [a for a in args if not a.startswith("output_dir=")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(RECIPE), *args, f"output_dir={tmp_path / 'two'}"]
    r = run_cmd(cmd, 900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    mod = load_recipe("step_dpo")
    one = mod.main(load_config(mod.StepDpoConfig, None, args + [f"output_dir={tmp_path / 'one'}"]))
    two = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert len(two) == 3
    # Same global batches (each rank computes half of the reference log-probs and half of each
    # step's pairs); the loss is the mean over the batch's pairs: equal up to fp32 summation order.
    assert [r["loss"] for r in two] == pytest.approx(one.losses, rel=1e-4, abs=1e-5)
    one_m = read_metrics(tmp_path / "one" / "metrics.jsonl")
    for k in ("rewards/margins", "logps/chosen"):
        assert [r[k] for r in two] == pytest.approx([r[k] for r in one_m], rel=1e-4, abs=1e-4)
    s1 = json.loads((tmp_path / "one" / "train_summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert s2["world_size"] == 2 and s1["ref_cache_key"] == s2["ref_cache_key"]


def test_ref_cache_is_recomputed_when_the_model_dir_is_retrained_in_place(assets, tmp_path):
    """The pipeline's case: M_i's dir (a previous stage's ``final``) is trained again into the same
    path, and the next step_dpo shares the reference cache. The stale log-probs must not be
    reused: step 1's loss is log 2 only if the reference is the model being trained."""
    mod = load_recipe("step_dpo")
    cache = tmp_path / "ref_cache"
    stage = tmp_path / "dpo_1"  # the earlier stage whose final dir is the next stage's reference

    def train_stage(lr, overwrite=False):
        mod.main(_cfg(mod, assets, stage, max_steps=1, lr=lr, ref_cache_dir=str(tmp_path / "stage_cache"),
                      overwrite=overwrite))

    def next_stage(name, **kw):
        res = mod.main(_cfg(mod, assets, tmp_path / name, model_dir=str(stage / "final"), max_steps=1,
                            ref_cache_dir=str(cache), **kw))
        return res.summary, res.losses[0]

    train_stage(3e-3)
    s1, loss1 = next_stage("a")
    assert s1["ref_cache"] == "computed" and loss1 == pytest.approx(math.log(2), abs=1e-5)
    s, _ = next_stage("a2")
    assert s["ref_cache"] == "reused" and s["ref_cache_key"] == s1["ref_cache_key"]  # untouched: reused

    train_stage(3e-2, overwrite=True)  # retrained in place: same path, same shapes, new weights
    s2, loss2 = next_stage("b")
    assert s2["ref_cache"] == "computed" and s2["ref_cache_key"] != s1["ref_cache_key"]
    assert loss2 == pytest.approx(math.log(2), abs=1e-5)  # the reference is the new model
    assert len(list(cache.glob("*.safetensors"))) == 2

    # ref_hash_weights: a rewrite the cheap fingerprint (size, mtime, header) cannot see, because
    # the weights were replaced with the same shapes and the files' mtimes put back (as a copy
    # tool preserving times would), is still caught by the content hash.
    s3, _ = next_stage("c", ref_hash_weights=True)
    assert s3["ref_cache"] == "computed"  # its own key: a content fingerprint
    weights = sorted((stage / "final").resolve().glob("*.safetensors"))
    times = {p.name: p.stat().st_mtime_ns for p in weights}
    train_stage(1e-1, overwrite=True)
    for p in sorted((stage / "final").resolve().glob("*.safetensors")):
        os.utime(p, ns=(p.stat().st_atime_ns, times[p.name]))
    s4, loss4 = next_stage("d", ref_hash_weights=True)
    assert s4["ref_cache"] == "computed" and s4["ref_cache_key"] != s3["ref_cache_key"]
    assert loss4 == pytest.approx(math.log(2), abs=1e-5)
