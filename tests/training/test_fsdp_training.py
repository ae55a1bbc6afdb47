"""Training on the sharded model (2 gloo processes): activation checkpointing and
reshard_after_forward=false take exactly the step plain FSDP2 takes; bf16 mixed precision computes
in bf16 on fp32 master shards; a run killed after step 2 on 2 processes resumes on 1 process (DCP
reshards) with the losses of an uninterrupted run."""

import json
import os
import sys
from pathlib import Path

import pytest

from psr.models.tiny import build_tiny_model_dir
from fakes import run_cmd

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "assets" / "fsdp_train_worker.py"


def launch(nproc: int, *args, fault: int | None = None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if fault is not None:
        env["PSR_FAULT_AFTER_STEP"] = str(fault)
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
           if nproc > 1 else [sys.executable])
    return run_cmd(cmd + [WORKER, *args], timeout_s=900, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("m") / "tiny", seed=5)


def test_sharded_variants_take_the_same_step(tmp_path, model_dir):
    p = launch(2, "variants", tmp_path, model_dir)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp_path / "variants.json").read_text())
    ref = res["fp32"]
    assert ref["local_fraction"] == pytest.approx(0.5, abs=0.01)  # each rank holds half
    for name in ("checkpointing", "no_reshard"):
        assert res[name]["loss"] == pytest.approx(ref["loss"], rel=1e-6)
        assert res[name]["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-5)
        assert res[name]["checksum"] == pytest.approx(ref["checksum"], rel=1e-6)
    bf16 = res["bf16"]
    assert bf16["logits_dtype"] == "torch.bfloat16" and ref["logits_dtype"] == "torch.float32"
    assert bf16["param_dtypes"] == ["torch.float32"]  # fp32 master shards under bf16 compute
    assert bf16["loss"] == pytest.approx(ref["loss"], abs=0.05) and bf16["loss"] != ref["loss"]
    assert bf16["checksum"] == pytest.approx(ref["checksum"], rel=1e-3)


def test_killed_two_process_run_resumes_on_one_process(tmp_path, model_dir):
    full = tmp_path / "full"
    full.mkdir()
    p = launch(1, "train", full, model_dir)
    assert p.returncode == 0, p.stderr[-3000:]
    want = json.loads((full / "losses.json").read_text())
    assert len(want) == 4
    run = tmp_path / "run"
    run.mkdir()
    p = launch(2, "train", run, model_dir, fault=2)
    assert p.returncode != 0 and "PSR_FAULT_AFTER_STEP=2" in p.stderr
    assert (run / "resume_state" / "recipe_state.pt").exists() and not (run / "losses.json").exists()
    p = launch(1, "train", run, model_dir)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads((run / "losses.json").read_text())
    assert got == pytest.approx(want[2:], rel=1e-5)
